//! Networking: the native client protocol (and, as it lands, the server and
//! the Rust client).

pub mod client;
pub mod ports;
pub mod protocol;
pub mod server;
