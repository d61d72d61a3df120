//! Recovering a partition whose only segment holds arbitrary bytes never
//! panics and yields exactly the valid prefix the scanner finds: either the
//! damage is a torn write and the file is cut to the prefix, or it is
//! corruption and the partition is fenced with every byte left in place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::storage::recovery::recover_partition;
use ringlog::storage::scan::{scan_segment, ScanStop};
use ringlog::storage::StorageConfig;

fuzz_target!(|data: &[u8]| {
    let config = StorageConfig { index_interval_bytes: 64, ..StorageConfig::default() };
    let outcome = scan_segment(data, 0, config.index_interval_bytes);
    assert!(outcome.valid_bytes as usize <= data.len());
    // The valid prefix alone scans cleanly to the same end.
    let again = scan_segment(&data[..outcome.valid_bytes as usize], 0, 64);
    assert_eq!(again.stop, ScanStop::EndOfData);
    assert_eq!(again.next_offset, outcome.next_offset);
    assert_eq!(outcome.next_offset, outcome.record_count);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000000.log"), data).unwrap();
    let recovered = recover_partition(dir.path(), &config).expect("recovery of the tail never errors");
    assert_eq!(recovered.log_end_offset, outcome.next_offset);
    let length = std::fs::metadata(dir.path().join("00000000000000000000.log")).unwrap().len();
    if recovered.fence.is_some() {
        assert_eq!(length, data.len() as u64, "a fence keeps the bytes");
        return;
    }
    assert!(length >= outcome.valid_bytes);
    assert!(data[length as usize..].iter().all(|&byte| byte == 0) || length == outcome.valid_bytes);
});
