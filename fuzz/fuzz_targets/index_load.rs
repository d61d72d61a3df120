//! Index validation and lookups never panic on arbitrary index bytes, and a
//! validated index answers lookups consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::storage::index::{OffsetIndex, TimeIndex};

fuzz_target!(|data: &[u8]| {
    let (limit_bytes, body) = data.split_at(data.len().min(4));
    let mut limit = [0u8; 4];
    limit[..limit_bytes.len()].copy_from_slice(limit_bytes);
    let log_bytes = u64::from(u32::from_le_bytes(limit)) + 1;

    let offsets = OffsetIndex::from_bytes(body.to_vec());
    if offsets.validate(log_bytes).is_ok() {
        for target in [0u32, 1, 1000, u32::MAX] {
            if let Some((offset, position)) = offsets.floor(target) {
                assert!(offset <= target);
                assert!(u64::from(position) < log_bytes);
            }
        }
    }
    let times = TimeIndex::from_bytes(body.to_vec());
    if times.validate(log_bytes).is_ok() {
        for timestamp in [i64::MIN, -1, 0, 1, i64::MAX] {
            if let Some(offset) = times.scan_start(timestamp) {
                assert!(u64::from(offset) < log_bytes);
            }
        }
    }
});
