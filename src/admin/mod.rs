//! The control thread's admin HTTP API (spec §7) and Prometheus metrics.

pub mod client;
pub mod http;
pub mod metrics;
