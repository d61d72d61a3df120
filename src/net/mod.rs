//! Networking: the client and replication listeners (`server`), the Kafka
//! listener (`kafka_server`), the Rust
//! client, and the port ownership check. The wire format is `crate::protocol`.

pub mod client;
pub mod kafka_server;
pub mod ports;
pub mod server;
