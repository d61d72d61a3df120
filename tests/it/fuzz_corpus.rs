//! Seed corpora for the fuzz targets, produced by the real encoders:
//! `cargo test --test it write_fuzz_seed_corpora -- --ignored` rewrites
//! `fuzz/corpus/<target>/seed-*` (kept in the repository, a few KB).

use std::path::Path;

use ringlog::storage::batch::BatchHeader;
use ringlog::storage::epochs::EpochHistory;
use ringlog::storage::fence::{store_fence, FenceReport, FENCE_FILE};
use ringlog::storage::index::{OffsetIndex, TimeIndex};
use ringlog::storage::markers::{encode_clean_shutdown, CleanShutdown};
use ringlog::storage::offsets::{encode_entry, CommittedOffset};
use ringlog::storage::producers::ProducerStates;

/// Targets whose first input byte is a mode (odd: recompute CRCs) get the
/// file twice: as it is (mode 0) and with CRC fix-up (mode 1).
fn seed_with_mode(target: &str, name: &str, bytes: &[u8]) {
    seed(target, name, &[&[0u8][..], bytes].concat());
    seed(target, &format!("{name}-fixcrc"), &[&[1u8][..], bytes].concat());
}

fn seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn header(producer_id: u64, base_sequence: u32, record_count: u32, base_offset: u64) -> BatchHeader {
    BatchHeader {
        base_offset,
        batch_bytes: 100,
        leader_epoch: 1,
        crc: 0,
        magic: 1,
        flags: 0,
        record_count,
        first_timestamp_ms: 0,
        max_timestamp_ms: 0,
        producer_id,
        base_sequence,
    }
}

#[test]
#[ignore = "writes the fuzz seed corpora into the source tree; run by hand"]
fn write_fuzz_seed_corpora() {
    // consumer-offsets.log: one entry; several groups with a latched one;
    // a torn last entry; a flipped byte with valid entries after it.
    let one = encode_entry("group", CommittedOffset::new(42, 1_700_000_000_000));
    seed_with_mode("offsets_load", "one-entry", &one);
    let mut many = Vec::new();
    for (i, group) in ["a", "orders-consumer", "a", "b"].iter().enumerate() {
        many.extend(encode_entry(group, CommittedOffset::new(10 * i as u64, i as i64)));
    }
    many.extend(encode_entry("b", CommittedOffset { offset: 150, commit_ms: 9, out_of_range: true }));
    seed_with_mode("offsets_load", "groups-and-latch", &many);
    let mut torn = many.clone();
    torn.extend(&one[..one.len() / 2]);
    seed_with_mode("offsets_load", "torn-tail", &torn);
    let mut corrupt = many.clone();
    corrupt[30] ^= 0x40;
    seed_with_mode("offsets_load", "corrupt-middle", &corrupt);

    // producer-state.
    seed_with_mode("producer_state_load", "empty", &ProducerStates::new(64).encode());
    let mut states = ProducerStates::new(64);
    for i in 0..7u32 {
        states.apply(&header(7, i * 3, 3, u64::from(i) * 3));
    }
    states.apply(&header(0, 0, 2, 21));
    states.apply(&header(u64::MAX, u32::MAX, 1, 23));
    seed_with_mode("producer_state_load", "producers", &states.encode());

    // leader-epoch-checkpoint.
    seed_with_mode("epoch_checkpoint_load", "empty", &EpochHistory::default().encode());
    let mut history = EpochHistory::default();
    for (epoch, start) in [(1, 0), (3, 100), (4, 250), (9, 251)] {
        history.assign(epoch, start);
    }
    seed_with_mode("epoch_checkpoint_load", "four-epochs", &history.encode());

    // markers_load: selector byte (bit 7: recompute the CRC), then the file.
    let with_selector = |selector: u8, bytes: &[u8]| [&[selector][..], bytes].concat();
    let mut point = b"RLRP".to_vec();
    point.extend_from_slice(&1234u64.to_le_bytes());
    point.extend_from_slice(&crc32fast::hash(&point).to_le_bytes());
    seed("markers_load", "recovery-point", &with_selector(0, &point));
    let marker = CleanShutdown { active_base_offset: 100, active_size_bytes: 4096, last_batch_position: 3996 };
    seed("markers_load", "clean-shutdown", &with_selector(1, &encode_clean_shutdown(&marker)));
    seed("markers_load", "clean-shutdown-fixcrc", &with_selector(0x81, &encode_clean_shutdown(&marker)));
    let dir = tempfile::tempdir().unwrap();
    let report = FenceReport {
        path: "/data/t/0/00000000000000000000.log".into(),
        position: 4096,
        offset: 100,
        reason: "crc mismatch".into(),
    };
    store_fence(dir.path(), &report).unwrap();
    seed("markers_load", "fence", &with_selector(2, &std::fs::read(dir.path().join(FENCE_FILE)).unwrap()));

    // index_load: 4-byte log length, then the index bytes.
    let mut offsets = OffsetIndex::default();
    let mut times = TimeIndex::default();
    for i in 0..8u32 {
        offsets.push(i * 10, i * 4096);
        times.push(1_700_000_000_000 + i64::from(i) * 1000, i * 10);
    }
    let limit = 100_000u32.to_le_bytes();
    seed("index_load", "offset-index", &[&limit[..], &offsets.file_bytes()[..]].concat());
    seed("index_load", "time-index", &[&limit[..], &times.file_bytes()[..]].concat());
    scram_seeds();
}

/// scram_server: mode byte, split byte, client-first then client-final
/// (`fuzz/fuzz_targets/scram_server.rs`).
fn scram_seeds() {
    let first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    let last = b"c=biws,r=rOprNGfwEbeRWgbNEkqO3rfcNHYJY1ZVvWVs7j,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    seed("scram_server", "exchange", &[&[0, first.len() as u8][..], first, last].concat());
    let valid_first =
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    seed("scram_server", "valid-first", &[&[1, 0][..], valid_first].concat());
    let escaped = b"n,,n=us=2Cer,r=abc";
    seed("scram_server", "escaped-name", &[&[0, escaped.len() as u8][..], escaped, b",x=ext"].concat());
}
