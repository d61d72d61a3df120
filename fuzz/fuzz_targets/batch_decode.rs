//! Batch decoding never panics, and a batch that validates is self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::storage::batch::{validate_batch, BatchIter, RecordIter, BATCH_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = validate_batch(data, 1 << 20) {
        assert_eq!(header.batch_bytes as usize, data.len());
        let records = RecordIter::new(&data[BATCH_HEADER_BYTES..]).map(|record| record.unwrap()).count();
        assert_eq!(records as u32, header.record_count);
        for record in RecordIter::new(&data[BATCH_HEADER_BYTES..]) {
            for (_name, _value) in record.unwrap().headers() {}
        }
    }
    let mut consumed = 0usize;
    for item in BatchIter::new(data, 1 << 20) {
        match item {
            Ok((header, batch)) => {
                assert_eq!(batch.len(), header.batch_bytes as usize);
                consumed += batch.len();
            }
            Err(_) => break,
        }
    }
    assert!(consumed <= data.len());
});
