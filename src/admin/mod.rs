//! The control thread's admin HTTP API (spec §7), Prometheus metrics and
//! the web console (spec §9).

pub mod client;
pub mod console;
pub mod http;
pub mod metrics;
pub mod overview;
pub mod services;
pub mod tls_listener;
pub mod users;
