//! Index validation and lookups never panic on arbitrary index bytes, and a
//! validated index answers lookups consistently. The same bytes written as
//! a segment's `.index` and `.timeindex` files and loaded through
//! `OffsetIndex::load` / `TimeIndex::load` (the mapped path recovery uses)
//! give the same verdict as checking the trailer and validating in memory,
//! and a loaded index writes back exactly the file's bytes.
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
    // The file path: the trailer is checked first, then the same validation.
    let offsets_file = OffsetIndex::from_file_bytes(body).and_then(|index| index.validate(log_bytes).map(|()| index));
    match OffsetIndex::load(&offsets_path, log_bytes).expect("load never fails on content") {
        Ok(loaded) => {
            let in_memory = offsets_file.expect("the same verdict in memory");
            assert_eq!(loaded.as_bytes(), in_memory.as_bytes());
            assert_eq!(loaded.file_bytes(), body, "the file round-trips");
            assert_eq!(loaded.floor(u32::MAX), in_memory.floor(u32::MAX));
        }
        Err(defect) => assert_eq!(Err(defect), offsets_file.map(|_| ())),
    }
    let times_file = TimeIndex::from_file_bytes(body).and_then(|index| index.validate(log_bytes).map(|()| index));
    match TimeIndex::load(&times_path, log_bytes).expect("load never fails on content") {
        Ok(loaded) => {
            let in_memory = times_file.expect("the same verdict in memory");
            assert_eq!(loaded.as_bytes(), in_memory.as_bytes());
            assert_eq!(loaded.file_bytes(), body, "the file round-trips");
            assert_eq!(loaded.scan_start(i64::MAX), in_memory.scan_start(i64::MAX));
        }
        Err(defect) => assert_eq!(Err(defect), times_file.map(|_| ())),
    }
});
