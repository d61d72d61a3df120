//! Index validation and lookups never panic on arbitrary index bytes, and a
//! validated index answers lookups consistently. The same bytes written as
//! a segment's `.index` and `.timeindex` files and loaded through
//! `OffsetIndex::load` / `TimeIndex::load` (the mapped path recovery uses)
//! give the same verdict as validating them in memory, and a loaded index
//! holds exactly the file's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::storage::index::{OffsetIndex, TimeIndex};

fuzz_target!(|data: &[u8]| {
    let (limit_bytes, body) = data.split_at(data.len().min(4));
    let mut limit = [0u8; 4];
    limit[..limit_bytes.len()].copy_from_slice(limit_bytes);
    let log_bytes = u64::from(u32::from_le_bytes(limit)) + 1;

    let offsets = OffsetIndex::from_bytes(body.to_vec());
    let offsets_verdict = offsets.validate(log_bytes);
    if offsets_verdict.is_ok() {
        for target in [0u32, 1, 1000, u32::MAX] {
            if let Some((offset, position)) = offsets.floor(target) {
                assert!(offset <= target);
                assert!(u64::from(position) < log_bytes);
            }
        }
    }
    let times = TimeIndex::from_bytes(body.to_vec());
    let times_verdict = times.validate(log_bytes);
    if times_verdict.is_ok() {
        for timestamp in [i64::MIN, -1, 0, 1, i64::MAX] {
            if let Some(offset) = times.scan_start(timestamp) {
                assert!(u64::from(offset) < log_bytes);
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let offsets_path = dir.path().join("00000000000000000000.index");
    let times_path = dir.path().join("00000000000000000000.timeindex");
    std::fs::write(&offsets_path, body).unwrap();
    std::fs::write(&times_path, body).unwrap();
    match OffsetIndex::load(&offsets_path, log_bytes).expect("load never fails on content") {
        Ok(loaded) => {
            assert!(offsets_verdict.is_ok());
            assert_eq!(loaded.as_bytes(), body);
            assert_eq!(loaded.floor(u32::MAX), offsets.floor(u32::MAX));
        }
        Err(defect) => assert_eq!(Err(defect), offsets_verdict),
    }
    match TimeIndex::load(&times_path, log_bytes).expect("load never fails on content") {
        Ok(loaded) => {
            assert!(times_verdict.is_ok());
            assert_eq!(loaded.as_bytes(), body);
            assert_eq!(loaded.scan_start(i64::MAX), times.scan_start(i64::MAX));
        }
        Err(defect) => assert_eq!(Err(defect), times_verdict),
    }
});
