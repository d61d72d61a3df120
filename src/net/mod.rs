//! Networking: the client and replication listeners (`server`), the Kafka
//! listener (`kafka_server`), accepting and counting connections
//! (`accept`), the Rust
//! client, and the port ownership check. The wire format is `crate::protocol`.

pub mod accept;
mod answer_budget;
pub mod authentication;
pub mod client;
mod kafka_frames;
pub mod kafka_server;
pub mod ports;
pub mod server;
