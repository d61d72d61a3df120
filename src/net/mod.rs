//! Networking: the client and replication listeners (`server`), the Rust
//! client, and the port ownership check. The wire format is `crate::protocol`.

pub mod client;
pub mod ports;
pub mod server;
