//! Loading `consumer-offsets.log` from arbitrary bytes never panics, and
//! every commit it serves is proved by a CRC-valid entry. Checked against a
//! reference parser written here from the format in `offsets.rs`:
//! `replay` returns exactly the last commit per group of the CRC-valid
//! prefix; `judge_damage` calls the rest a torn tail only when it is at
//! most one entry long with no valid entry after it; `ConsumerOffsets::open`
//! truncates a torn tail and serves the prefix, or keeps every byte of a
//! corrupt file, refuses commits and serves only entries that pass the CRC;
//! every served commit round-trips through `encode_entry`. The first input
//! byte is a mode: odd means "recompute each entry's CRC along the length
//! chain", so mutations also reach the fields behind the checksum; the rest
//! is the file.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use ringlog::storage::offsets::{
    encode_entry, judge_damage, replay, replay_around_damage, CommittedOffset, ConsumerOffsets, CONSUMER_OFFSETS_FILE,
    MAX_ENTRY_BYTES,
};

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// `entry_bytes u32 | crc u32 | group_length u16 | group | offset u64 | commit_ms i64 [| flags u8]`.
fn reference_entry(bytes: &[u8]) -> Option<(String, CommittedOffset, usize)> {
    if bytes.len() < 8 {
        return None;
    }
    let length = le_u32(bytes, 0) as usize + 4;
    if !(26..=MAX_ENTRY_BYTES).contains(&length) || length > bytes.len() {
        return None;
    }
    if crc32fast::hash(&bytes[8..length]) != le_u32(bytes, 4) {
        return None;
    }
    let group_length = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let fixed = 10 + group_length + 16;
    if length != fixed && length != fixed + 1 {
        return None;
    }
    let group = String::from_utf8(bytes[10..10 + group_length].to_vec()).ok()?;
    let out_of_range = length == fixed + 1 && bytes[fixed] & 1 != 0;
    let offset = le_u64(bytes, 10 + group_length);
    let commit_ms = le_u64(bytes, 18 + group_length) as i64;
    Some((group, CommittedOffset { offset, commit_ms, out_of_range }, length))
}

/// Recompute the CRC of each entry reachable by following the length fields.
fn fix_crcs(bytes: &mut [u8]) {
    let mut position = 0;
    while position + 8 <= bytes.len() {
        let length = le_u32(bytes, position) as usize + 4;
        if !(26..=MAX_ENTRY_BYTES).contains(&length) || position + length > bytes.len() {
            return;
        }
        let crc = crc32fast::hash(&bytes[position + 8..position + length]);
        bytes[position + 4..position + 8].copy_from_slice(&crc.to_le_bytes());
        position += length;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, file)) = input.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut file);
    }
    let data = &file[..];
    let (replayed, valid) = replay(data);
    assert!(valid <= data.len());
    let mut expected = HashMap::new();
    let mut position = 0;
    while position < valid {
        let (group, committed, length) = reference_entry(&data[position..]).expect("replay kept an invalid entry");
        expected.insert(group, committed);
        position += length;
    }
    assert_eq!(position, valid, "replay's prefix ends inside an entry");
    assert!(reference_entry(&data[valid..]).is_none(), "replay stopped before a valid entry");
    assert_eq!(replayed, expected);

    for (group, committed) in &replayed {
        let bytes = encode_entry(group, *committed);
        let (again, length) = replay(&bytes);
        assert_eq!(length, bytes.len());
        assert_eq!(again.len(), 1);
        assert_eq!(again.get(group), Some(committed), "encode then replay changed the commit");
    }

    let damage = judge_damage(data, valid);
    let later_entry = (valid + 1..data.len()).any(|at| reference_entry(&data[at..]).is_some());
    match &damage {
        None => assert!(data.len() - valid <= MAX_ENTRY_BYTES && !later_entry, "corruption judged a torn tail"),
        Some(found) => {
            assert_eq!(found.position, valid as u64);
            assert!(data.len() - valid > MAX_ENTRY_BYTES || later_entry, "a torn tail judged corruption");
        }
    }

    // Served after corruption: the greedy resynchronising walk over entries
    // that pass the reference CRC check, last one per group.
    let around = replay_around_damage(data);
    let mut expected_around = HashMap::new();
    let mut position = 0;
    while position < data.len() {
        match reference_entry(&data[position..]) {
            Some((group, committed, length)) => {
                expected_around.insert(group, committed);
                position += length;
            }
            None => position += 1,
        }
    }
    assert_eq!(around, expected_around);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CONSUMER_OFFSETS_FILE);
    std::fs::write(&path, data).unwrap();
    let mut offsets = ConsumerOffsets::open(dir.path(), 1 << 20).expect("open never fails on content");
    let served: HashMap<String, CommittedOffset> =
        offsets.groups().map(|(group, committed)| (group.to_string(), committed)).collect();
    assert_eq!(offsets.damage(), damage.as_ref());
    if damage.is_some() {
        assert_eq!(std::fs::read(&path).unwrap(), data, "a corrupt file keeps its bytes");
        assert_eq!(served, around);
        assert!(offsets.begin_commit("g", CommittedOffset::new(1, 0)).is_err(), "commits refused after corruption");
    } else {
        assert_eq!(std::fs::metadata(&path).unwrap().len(), valid as u64, "torn tail cut to the valid prefix");
        assert_eq!(served, replayed);
    }
});
