//! Loading `producer-state` from arbitrary bytes never panics, allocates
//! only in proportion to the file (the producer count is not trusted), and
//! a loaded snapshot is CRC-valid, not ahead of the log, and round-trips:
//! encode then load gives the same state. A loaded state answers sequence
//! checks and takes new batches without panicking. The first input byte is
//! a mode: odd means "recompute the trailing CRC", so mutations also reach
//! the parser behind the checksum; the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::storage::batch::BatchHeader;
use ringlog::storage::producers::{ProducerStates, SequenceCheck, PRODUCER_SNAPSHOT_FILE};

const MAX_PRODUCERS: usize = 64;

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
    std::fs::write(dir.path().join(PRODUCER_SNAPSHOT_FILE), data).unwrap();
    let log_end = 1 << 40;
    let loaded = ProducerStates::load(dir.path(), log_end, MAX_PRODUCERS).expect("load never fails on content");
    let decoded = ProducerStates::decode(data, MAX_PRODUCERS);
    assert_eq!(loaded, decoded.clone().filter(|states| states.applied_offset <= log_end));
    let Some(states) = decoded else {
        return;
    };
    let body = &data[..data.len() - 4];
    assert_eq!(crc32fast::hash(body).to_le_bytes(), data[data.len() - 4..], "accepted without a valid CRC");

    let encoded = states.encode();
    assert_eq!(ProducerStates::decode(&encoded, MAX_PRODUCERS).as_ref(), Some(&states), "encode/decode round trip");
    let reload = tempfile::tempdir().unwrap();
    states.store(reload.path()).unwrap();
    let reloaded = ProducerStates::load(reload.path(), u64::MAX, MAX_PRODUCERS).unwrap();
    assert_eq!(reloaded.as_ref(), Some(&states), "store/load round trip");

    // The first stored producer, if any, with arbitrary sequences.
    let producer_id = data.get(16..24).map_or(7, |id| u64::from_le_bytes(id.try_into().unwrap()));
    for (first_sequence, record_count) in [(0u32, 1u32), (u32::MAX, 1), (5, u32::MAX), (u32::MAX, u32::MAX)] {
        if let SequenceCheck::Duplicate(batch) = states.check(producer_id, first_sequence, record_count) {
            assert_eq!((batch.first_sequence, batch.record_count), (first_sequence, record_count));
        }
    }
    // What recovery does next with a loaded snapshot (never ahead of the log).
    let Some(mut states) = loaded else {
        return;
    };
    for producer in [producer_id, producer_id.wrapping_add(1)] {
        states.apply(&BatchHeader {
            base_offset: states.applied_offset,
            batch_bytes: 100,
            leader_epoch: 1,
            crc: 0,
            magic: 1,
            flags: 0,
            record_count: 1,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            producer_id: producer,
            base_sequence: 0,
        });
    }
});
