//! Security below the network: TLS configurations and streams (and, beside
//! them, authentication and roles). The listeners and clients that use it
//! live in `net`, `admin` and `replication`.

pub mod listeners;
pub mod settings;
pub mod stream;
pub mod tls;
