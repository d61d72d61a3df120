//! Shared state (floor 0, docs/ARCHITECTURE.md): what one part of the node
//! publishes for the others, so floors that may not import each other meet
//! here. Imports nothing from the crate.

pub mod cluster;
pub mod kafka_metrics;
pub mod latency;
pub mod metrics;
pub mod progress;
