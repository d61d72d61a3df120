//! Recovering a partition whose only segment holds arbitrary bytes never
//! panics, never fences (it is the tail), and yields exactly the valid
//! prefix the scanner finds, with the file cut to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::storage::recovery::recover_partition;
use ringlog::storage::scan::{scan_segment, ScanStop};
use ringlog::storage::StorageConfig;

fuzz_target!(|data: &[u8]| {
    let config = StorageConfig { index_interval_bytes: 64, ..StorageConfig::default() };
    let outcome = scan_segment(data, 0, config.index_interval_bytes, config.max_batch_bytes);
    assert!(outcome.valid_bytes as usize <= data.len());
    // The valid prefix alone scans cleanly to the same end.
    let again = scan_segment(&data[..outcome.valid_bytes as usize], 0, 64, config.max_batch_bytes);
    assert_eq!(again.stop, ScanStop::EndOfData);
    assert_eq!(again.next_offset, outcome.next_offset);
    assert_eq!(outcome.next_offset, outcome.record_count);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000000.log"), data).unwrap();
    let recovered = recover_partition(dir.path(), &config).expect("recovery of the tail never errors");
    assert!(recovered.fence.is_none());
    assert_eq!(recovered.log_end_offset, outcome.next_offset);
    let length = std::fs::metadata(dir.path().join("00000000000000000000.log")).unwrap().len();
    assert!(length >= outcome.valid_bytes);
    assert!(data[length as usize..].iter().all(|&byte| byte == 0) || length == outcome.valid_bytes);
});
