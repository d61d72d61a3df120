//! Fault injection into a running node, for tests of the node's own
//! reaction to I/O errors (health, metrics, other partitions unaffected).
//!
//! `RINGLOG_FAULT_INJECT=<topic>/<partition>:<write|fsync|preallocate>:<successes>`
//! makes that partition's `successes + 1`-th such operation fail with EIO
//! (and every one after it). Unset in production; a node that has it set
//! logs a warning at startup.

use std::sync::{Arc, OnceLock};

use crate::storage::io::{FaultInjector, FaultOperation};

/// The environment variable naming the fault.
pub const FAULT_INJECT_VARIABLE: &str = "RINGLOG_FAULT_INJECT";

/// A parsed fault specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Which operation fails.
    pub operation: FaultOperation,
    /// Successful operations before the failures start.
    pub successes: i64,
}

/// Parse `<topic>/<partition>:<operation>:<successes>`.
pub fn parse_fault(spec: &str) -> Result<FaultSpec, String> {
    let invalid =
        || format!("{FAULT_INJECT_VARIABLE}={spec:?}: expected <topic>/<partition>:<write|fsync|preallocate>:<n>");
    let mut parts = spec.rsplitn(3, ':');
    let successes = parts.next().and_then(|n| n.parse().ok()).ok_or_else(invalid)?;
    let operation = match parts.next() {
        Some("write") => FaultOperation::Write,
        Some("fsync") => FaultOperation::Fsync,
        Some("preallocate") => FaultOperation::Preallocate,
        _ => return Err(invalid()),
    };
    let (topic, partition) = parts.next().and_then(|target| target.rsplit_once('/')).ok_or_else(invalid)?;
    let partition = partition.parse().map_err(|_| invalid())?;
    Ok(FaultSpec { topic: topic.to_string(), partition, operation, successes })
}

fn configured() -> Option<&'static FaultSpec> {
    static SPEC: OnceLock<Option<FaultSpec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::env::var(FAULT_INJECT_VARIABLE).ok()?;
        match parse_fault(&text) {
            Ok(spec) => {
                tracing::warn!(target: "ringlog::shard", ?spec, "fault injection is active (test seam)");
                Some(spec)
            }
            Err(message) => {
                tracing::error!(target: "ringlog::shard", %message, "ignoring the fault injection setting");
                None
            }
        }
    })
    .as_ref()
}

/// The injector for `topic`/`partition`, if the environment names it.
pub fn injector_for(topic: &str, partition: u32) -> Option<Arc<FaultInjector>> {
    let spec = configured()?;
    if spec.topic != topic || spec.partition != partition {
        return None;
    }
    let injector = FaultInjector::new();
    injector.fail_after(spec.operation, spec.successes, libc::EIO);
    Some(injector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_and_bad_ones_are_refused() {
        let spec = parse_fault("my/topic/3:fsync:2").unwrap();
        assert_eq!(
            (spec.topic.as_str(), spec.partition, spec.operation, spec.successes),
            ("my/topic", 3, FaultOperation::Fsync, 2)
        );
        assert!(parse_fault("t/0:read:1").is_err());
        assert!(parse_fault("t:fsync:1").is_err());
        assert!(parse_fault("t/0:fsync:x").is_err());
    }
}
