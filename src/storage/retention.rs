//! Retention: which sealed segments to delete by total size and by age.
//! Whole segments only, oldest first, never the active segment.

/// Per-topic retention limits (0 = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Keep the partition at or under this many bytes.
    pub retention_bytes: u64,
    /// Delete segments whose newest record is older than this.
    pub retention_ms: u64,
}

/// Pick sealed segments to delete. `sealed` is (base offset, bytes, max
/// timestamp) in offset order; `total_bytes` includes the active segment.
/// Deletion stops at the first segment that must stay, so the log remains
/// contiguous.
pub fn select_expired(
    sealed: &[(u64, u64, Option<i64>)],
    total_bytes: u64,
    policy: RetentionPolicy,
    now_ms: i64,
) -> Vec<u64> {
    let mut remaining_bytes = total_bytes;
    let mut expired = Vec::new();
    for &(base_offset, size_bytes, max_timestamp_ms) in sealed {
        let over_size =
            policy.retention_bytes > 0 && remaining_bytes.saturating_sub(size_bytes) >= policy.retention_bytes;
        // A retention of more than i64::MAX ms (u64::MAX, say, meant as
        // "forever") keeps everything: cast, it was -1, and the threshold
        // lay in the future, so every sealed segment was deleted.
        let retention_ms = i64::try_from(policy.retention_ms).unwrap_or(i64::MAX);
        let too_old =
            policy.retention_ms > 0 && max_timestamp_ms.is_some_and(|max| max < now_ms.saturating_sub(retention_ms));
        let empty_and_old = policy.retention_ms > 0 && max_timestamp_ms.is_none();
        if !(over_size || too_old || empty_and_old) {
            break;
        }
        remaining_bytes -= size_bytes;
        expired.push(base_offset);
    }
    expired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_time_beyond_i64_keeps_every_segment() {
        let sealed = [(0, 100, Some(1_000)), (10, 100, Some(2_000))];
        for retention_ms in [u64::MAX, i64::MAX as u64 + 1, i64::MAX as u64] {
            let policy = RetentionPolicy { retention_bytes: 0, retention_ms };
            assert_eq!(select_expired(&sealed, 300, policy, 1_700_000_000_000), Vec::<u64>::new(), "{retention_ms}");
        }
        let policy = RetentionPolicy { retention_bytes: 0, retention_ms: 1_500 };
        assert_eq!(select_expired(&sealed, 300, policy, 3_000), vec![0], "an ordinary retention still applies");
    }

    #[test]
    fn size_retention_keeps_newest_segments_within_limit() {
        let sealed = [(0, 100, Some(1)), (10, 100, Some(2)), (20, 100, Some(3))];
        let policy = RetentionPolicy { retention_bytes: 250, retention_ms: 0 };
        assert_eq!(select_expired(&sealed, 350, policy, 0), vec![0]);
        let policy = RetentionPolicy { retention_bytes: 50, retention_ms: 0 };
        assert_eq!(select_expired(&sealed, 350, policy, 0), vec![0, 10, 20]);
    }

    #[test]
    fn time_retention_stops_at_first_young_segment() {
        let sealed = [(0, 1, Some(100)), (10, 1, Some(5000)), (20, 1, Some(50))];
        let policy = RetentionPolicy { retention_bytes: 0, retention_ms: 1000 };
        assert_eq!(select_expired(&sealed, 3, policy, 3000), vec![0]);
    }

    #[test]
    fn unlimited_policy_deletes_nothing() {
        let sealed = [(0, 1 << 30, Some(0))];
        assert!(select_expired(&sealed, 2 << 30, RetentionPolicy::default(), i64::MAX).is_empty());
    }
}
