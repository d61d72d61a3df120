//! Loading `leader-epoch-checkpoint` from arbitrary bytes never panics and
//! allocates only after the entry count is checked against the file size.
//! A loaded history is exactly the file: epochs and start offsets strictly
//! increase, and encoding it gives back the same bytes (so a CRC-valid but
//! inconsistent file is rejected, never silently shortened). Divergence
//! lookups on it stay inside the history. The first input byte is a mode:
//! odd means "recompute the trailing CRC", so mutations also reach the
//! checks behind the checksum; the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::storage::epochs::{EpochHistory, EPOCH_CHECKPOINT_FILE};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, file)) = input.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if mode & 1 == 1 && file.len() >= 4 {
        let body = file.len() - 4;
        let crc = crc32fast::hash(&file[..body]);
        file[body..].copy_from_slice(&crc.to_le_bytes());
    }
    let data = &file[..];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(EPOCH_CHECKPOINT_FILE), data).unwrap();
    let loaded = EpochHistory::load(dir.path()).expect("load never fails on content");
    assert_eq!(loaded, EpochHistory::decode(data));
    let Some(history) = loaded else {
        return;
    };
    assert_eq!(history.encode(), data, "a loaded checkpoint re-encodes to the same bytes");
    for pair in history.entries().windows(2) {
        assert!(pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1, "history not strictly increasing");
    }
    let log_end = history.entries().last().map_or(0, |&(_, start)| start.saturating_add(10));
    for epoch in [0u32, 1, 2, u32::MAX / 2, u32::MAX] {
        if let Some((found, end)) = history.end_offset_for(epoch, log_end) {
            assert!(found <= epoch);
            assert!(history.entries().iter().any(|&(known, start)| known == found && start <= end));
        }
    }
    let reload = tempfile::tempdir().unwrap();
    history.store(reload.path()).unwrap();
    assert_eq!(EpochHistory::load(reload.path()).unwrap(), Some(history), "store/load round trip");
});
