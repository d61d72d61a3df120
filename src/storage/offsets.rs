//! Durable consumer-group offsets of one partition.
//!
//! `consumer-offsets.log` is an append-only file of checksummed entries:
//! `entry_bytes u32 | crc u32 | group_length u16 | group | offset u64 | commit_ms i64 [| flags u8]`
//! (CRC over everything after the CRC field; the flags byte is present only
//! when a flag is set, so files written before it still load). Replay keeps
//! the last entry per group. Commits are written one at a time, each
//! fdatasynced before the next, so a crash can tear only the last entry: a
//! damaged entry with valid ones after it, or more damaged bytes than one
//! entry, is corruption and is reported, never truncated (SPEC §3).
//! When the file grows past `compact_bytes` it is rewritten atomically with
//! one entry per group. A committed offset is never changed by recovery: one
//! beyond the log end after data was lost is *latched* out of range (flag
//! bit 0) durably, so later appends that move the log end past it do not
//! make it valid again (SPEC §2); only a new commit (an explicit reset)
//! clears it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{read_u32, read_u64};
use super::io::write_file_atomically;

/// File name inside a partition directory.
pub const CONSUMER_OFFSETS_FILE: &str = "consumer-offsets.log";
/// Longest group name in bytes.
pub const MAX_GROUP_BYTES: usize = 255;
const ENTRY_FIXED_BYTES: usize = 4 + 4 + 2 + 8 + 8;
/// Longest entry: fixed part, longest group, flags byte.
pub const MAX_ENTRY_BYTES: usize = ENTRY_FIXED_BYTES + MAX_GROUP_BYTES + 1;
const FLAG_OUT_OF_RANGE: u8 = 1;

/// A group's committed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Next offset the group will consume.
    pub offset: u64,
    /// Wall-clock time of the commit.
    pub commit_ms: i64,
    /// Latched out of range: the log lost the records below this offset
    /// after it was committed. Stays set until the group commits again.
    pub out_of_range: bool,
}

impl CommittedOffset {
    /// A fresh commit (clears any latch).
    pub fn new(offset: u64, commit_ms: i64) -> CommittedOffset {
        CommittedOffset { offset, commit_ms, out_of_range: false }
    }
}

/// Damage in the offsets file that a crash cannot explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetsDamage {
    /// Byte position of the first bad entry.
    pub position: u64,
    /// Why it is corruption rather than a torn last entry.
    pub reason: String,
}

/// What a consumer resuming from a committed offset finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetLookup {
    /// The group never committed on this partition.
    None,
    /// The committed offset is inside the log.
    Valid(u64),
    /// The committed offset lies outside the log (data was lost or deleted);
    /// the consumer must choose to reset explicitly.
    OutOfRange {
        /// The stored offset, unchanged.
        committed: u64,
        /// Current log start.
        log_start_offset: u64,
        /// Current log end.
        log_end_offset: u64,
    },
}

/// Consumer offsets of one partition, loaded in memory and appended durably.
#[derive(Debug)]
pub struct ConsumerOffsets {
    path: PathBuf,
    file: Arc<File>,
    committed: HashMap<String, CommittedOffset>,
    file_bytes: u64,
    compact_bytes: u64,
    failed: Option<String>,
    damage: Option<OffsetsDamage>,
}

/// Encode one entry.
pub fn encode_entry(group: &str, committed: CommittedOffset) -> Vec<u8> {
    let flags_bytes = usize::from(committed.out_of_range);
    let mut bytes = Vec::with_capacity(ENTRY_FIXED_BYTES + group.len() + flags_bytes);
    bytes.extend_from_slice(&((ENTRY_FIXED_BYTES - 4 + group.len() + flags_bytes) as u32).to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&(group.len() as u16).to_le_bytes());
    bytes.extend_from_slice(group.as_bytes());
    bytes.extend_from_slice(&committed.offset.to_le_bytes());
    bytes.extend_from_slice(&committed.commit_ms.to_le_bytes());
    if committed.out_of_range {
        bytes.push(FLAG_OUT_OF_RANGE);
    }
    let crc = crc32fast::hash(&bytes[8..]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decode entries until the first damaged one; returns the map and the valid length.
pub fn replay(bytes: &[u8]) -> (HashMap<String, CommittedOffset>, usize) {
    let mut committed = HashMap::new();
    let mut position = 0usize;
    while let Some((group, entry, length)) = decode_entry(&bytes[position..]) {
        committed.insert(group, entry);
        position += length;
    }
    (committed, position)
}

/// Every valid entry, skipping damaged bytes (after corruption, to serve
/// the commits that survive it). O(n) in the file's bytes.
pub fn replay_around_damage(bytes: &[u8]) -> HashMap<String, CommittedOffset> {
    let mut committed = HashMap::new();
    let mut position = 0usize;
    while position < bytes.len() {
        match decode_entry(&bytes[position..]) {
            Some((group, entry, length)) => {
                committed.insert(group, entry);
                position += length;
            }
            None => position += 1,
        }
    }
    committed
}

/// Judge the bytes after a replay's valid prefix: None for a clean end or a
/// torn last entry (safe to truncate), the damage otherwise. Pure.
pub fn judge_damage(bytes: &[u8], valid_bytes: usize) -> Option<OffsetsDamage> {
    let damaged_bytes = bytes.len().checked_sub(valid_bytes).filter(|&damaged| damaged > 0)?;
    let later_entry = (valid_bytes + 1..bytes.len()).find(|&position| decode_entry(&bytes[position..]).is_some());
    let reason = match later_entry {
        Some(position) => format!("a valid entry at {position} follows a damaged one: corruption, not a torn write"),
        None if damaged_bytes > MAX_ENTRY_BYTES => {
            format!("{damaged_bytes} damaged bytes exceed one entry, all a crash can tear: corruption")
        }
        None => return None,
    };
    Some(OffsetsDamage { position: valid_bytes as u64, reason })
}

fn decode_entry(bytes: &[u8]) -> Option<(String, CommittedOffset, usize)> {
    if bytes.len() < ENTRY_FIXED_BYTES {
        return None;
    }
    let length = read_u32(bytes, 0) as usize + 4;
    if !(ENTRY_FIXED_BYTES..=MAX_ENTRY_BYTES).contains(&length) || length > bytes.len() {
        return None;
    }
    if crc32fast::hash(&bytes[8..length]) != read_u32(bytes, 4) {
        return None;
    }
    let group_length = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let flags = match length.checked_sub(10 + group_length + 16)? {
        0 => 0,
        1 => bytes[length - 1],
        _ => return None,
    };
    let group = std::str::from_utf8(&bytes[10..10 + group_length]).ok()?.to_string();
    let offset = read_u64(bytes, 10 + group_length);
    let commit_ms = read_u64(bytes, 18 + group_length) as i64;
    let out_of_range = flags & FLAG_OUT_OF_RANGE != 0;
    Some((group, CommittedOffset { offset, commit_ms, out_of_range }, length))
}

/// Check a group name's length and characters.
pub fn validate_group(group: &str) -> Result<(), String> {
    if group.is_empty() || group.len() > MAX_GROUP_BYTES {
        return Err(format!("group name must be 1..={MAX_GROUP_BYTES} bytes"));
    }
    if group.chars().any(char::is_control) {
        return Err("group name must not contain control characters".into());
    }
    Ok(())
}

impl ConsumerOffsets {
    /// Open (creating if absent) and replay the offsets file; a torn last
    /// entry is truncated, corruption is kept and reported by [`Self::damage`]
    /// (commits are then refused).
    pub fn open(partition_dir: &Path, compact_bytes: u64) -> io::Result<ConsumerOffsets> {
        let path = partition_dir.join(CONSUMER_OFFSETS_FILE);
        let existed = path.exists();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        if !existed {
            // The new entry must survive a crash before the first commit's
            // fdatasync makes its contents durable.
            super::io::sync_directory(partition_dir)?;
        }
        let bytes = std::fs::read(&path)?;
        let (mut committed, valid_bytes) = replay(&bytes);
        let damage = judge_damage(&bytes, valid_bytes);
        if damage.is_some() {
            // Serve the newest commits the file still proves; the damaged
            // entry stays on disk for `check` and repair.
            committed = replay_around_damage(&bytes);
        }
        if let Some(damage) = &damage {
            tracing::error!(target: "ringlog::storage", path = %path.display(), position = damage.position,
                reason = %damage.reason, "consumer offsets file is corrupt; kept as it is");
        } else if valid_bytes < bytes.len() {
            tracing::warn!(
                target: "ringlog::storage",
                path = %path.display(),
                valid_bytes,
                file_bytes = bytes.len(),
                "consumer offsets file has a damaged tail; truncating after the last valid entry"
            );
            file.set_len(valid_bytes as u64)?;
            file.sync_all()?;
        }
        Ok(ConsumerOffsets {
            path,
            file: Arc::new(file),
            committed,
            file_bytes: valid_bytes as u64,
            compact_bytes,
            failed: damage.as_ref().map(|damage| format!("corrupt at position {}: {}", damage.position, damage.reason)),
            damage,
        })
    }

    /// Corruption found when the file was opened.
    pub fn damage(&self) -> Option<&OffsetsDamage> {
        self.damage.as_ref()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Latch `group` in memory only (its durable write follows).
    pub fn latch_in_memory(&mut self, group: &str, latched: CommittedOffset) {
        self.committed.insert(group.to_string(), latched);
    }

    /// Groups whose commit lies beyond `log_end_offset` and is not latched yet.
    pub fn stale_beyond(&self, log_end_offset: u64) -> Vec<(String, CommittedOffset)> {
        let mut stale: Vec<(String, CommittedOffset)> = self
            .committed
            .iter()
            .filter(|(_, committed)| committed.offset > log_end_offset && !committed.out_of_range)
            .map(|(group, committed)| (group.clone(), *committed))
            .collect();
        stale.sort_by(|a, b| a.0.cmp(&b.0));
        stale
    }

    /// The committed offset of `group`, if any.
    pub fn get(&self, group: &str) -> Option<CommittedOffset> {
        self.committed.get(group).copied()
    }

    /// All groups with their committed offsets.
    pub fn groups(&self) -> impl Iterator<Item = (&str, CommittedOffset)> {
        self.committed.iter().map(|(group, committed)| (group.as_str(), *committed))
    }

    /// What a resuming consumer of `group` finds, given the log bounds.
    pub fn lookup(&self, group: &str, log_start_offset: u64, log_end_offset: u64) -> OffsetLookup {
        match self.get(group) {
            None => OffsetLookup::None,
            Some(CommittedOffset { offset, out_of_range: false, .. })
                if offset >= log_start_offset && offset <= log_end_offset =>
            {
                OffsetLookup::Valid(offset)
            }
            Some(CommittedOffset { offset, .. }) => {
                OffsetLookup::OutOfRange { committed: offset, log_start_offset, log_end_offset }
            }
        }
    }

    /// Prepare a durable commit; run the returned job off the executor, then
    /// call [`ConsumerOffsets::finish_commit`]. Split so the caller can hold
    /// no borrow across the blocking write.
    pub fn begin_commit(&mut self, group: &str, committed: CommittedOffset) -> Result<CommitJob, String> {
        if let Some(failure) = &self.failed {
            return Err(format!("consumer offsets store failed earlier: {failure}"));
        }
        validate_group(group)?;
        let compact = self.file_bytes > self.compact_bytes;
        let job = if compact {
            // Encode from a borrow with this commit in place of the group's
            // entry: cloning the whole map per commit cost an allocation per
            // group on every commit, compacting or not.
            let mut bytes = Vec::new();
            for (name, entry) in self.committed.iter().filter(|(name, _)| name.as_str() != group) {
                bytes.extend_from_slice(&encode_entry(name, *entry));
            }
            bytes.extend_from_slice(&encode_entry(group, committed));
            CommitJob::Rewrite { path: self.path.clone(), bytes }
        } else {
            let bytes = encode_entry(group, committed);
            let position = self.file_bytes;
            CommitJob::Append { file: Arc::clone(&self.file), position, bytes }
        };
        Ok(job)
    }

    /// Apply the outcome of a commit job.
    pub fn finish_commit(
        &mut self,
        group: &str,
        committed: CommittedOffset,
        outcome: Result<CommitDone, CommitError>,
    ) -> Result<(), CommitError> {
        match outcome {
            Ok(CommitDone::Appended { bytes }) => {
                self.file_bytes += bytes;
            }
            Ok(CommitDone::Rewritten { file, bytes }) => {
                self.file = Arc::new(file);
                self.file_bytes = bytes;
            }
            Err(error @ CommitError::WriteDiskFull(_)) => {
                // The write never reached an fdatasync: the next commit
                // writes at the same position and covers whatever part of
                // this entry landed. Nothing durable is in doubt, so the
                // store keeps serving (SPEC §4: disk_full, then resume).
                return Err(error);
            }
            Err(error) => {
                // The entry may be half on disk and fsync state is unknown
                // (fsyncgate): refuse further commits instead of retrying.
                self.failed = Some(format!("{}: {error}", self.path.display()));
                return Err(error);
            }
        }
        self.committed.insert(group.to_string(), committed);
        Ok(())
    }
}

/// Why a commit job failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The write found the disk full; no fdatasync ran, nothing is in doubt.
    #[error("disk full writing the entry: {0}")]
    WriteDiskFull(io::Error),
    /// The write failed otherwise.
    #[error("write failed: {0}")]
    Write(io::Error),
    /// The fdatasync (or the atomic rewrite) failed: durability unknown.
    #[error("fdatasync failed: {0}")]
    Sync(io::Error),
}

/// Blocking part of a commit.
pub enum CommitJob {
    /// Append one entry at `position` and fdatasync.
    Append {
        /// The offsets file.
        file: Arc<File>,
        /// Where the entry goes.
        position: u64,
        /// Encoded entry.
        bytes: Vec<u8>,
    },
    /// Rewrite the whole file with one entry per group.
    Rewrite {
        /// The offsets file path.
        path: PathBuf,
        /// Compacted content.
        bytes: Vec<u8>,
    },
}

/// Result of a finished commit job.
pub enum CommitDone {
    /// Bytes appended.
    Appended {
        /// Entry length.
        bytes: u64,
    },
    /// File rewritten; the new handle and its length.
    Rewritten {
        /// Reopened file.
        file: File,
        /// New length.
        bytes: u64,
    },
}

impl CommitJob {
    /// Perform the write and fsync (blocking).
    pub fn run(self) -> Result<CommitDone, CommitError> {
        match self {
            CommitJob::Append { file, position, bytes } => {
                file.write_all_at(&bytes, position).map_err(|error| match super::error::is_disk_full(&error) {
                    true => CommitError::WriteDiskFull(error),
                    false => CommitError::Write(error),
                })?;
                file.sync_data().map_err(CommitError::Sync)?;
                Ok(CommitDone::Appended { bytes: bytes.len() as u64 })
            }
            CommitJob::Rewrite { path, bytes } => {
                // A failed rewrite leaves the old file in place (temp file,
                // rename): with the disk full nothing is in doubt either.
                write_file_atomically(&path, &bytes).map_err(|error| match super::error::is_disk_full(&error) {
                    true => CommitError::WriteDiskFull(error),
                    false => CommitError::Sync(error),
                })?;
                let file = OpenOptions::new().read(true).write(true).open(&path).map_err(CommitError::Write)?;
                Ok(CommitDone::Rewritten { file, bytes: bytes.len() as u64 })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keeps_last_commit_per_group_and_stops_at_damage() {
        let mut bytes = encode_entry("a", CommittedOffset::new(5, 1));
        bytes.extend(encode_entry("b", CommittedOffset::new(9, 2)));
        bytes.extend(encode_entry("a", CommittedOffset::new(7, 3)));
        let valid = bytes.len();
        bytes.extend(&encode_entry("a", CommittedOffset::new(100, 4))[..10]);
        let (committed, length) = replay(&bytes);
        assert_eq!(length, valid);
        assert_eq!(committed["a"].offset, 7);
        assert_eq!(committed["b"].offset, 9);
    }

    #[test]
    fn committed_offset_beyond_log_end_is_out_of_range_not_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let mut offsets = ConsumerOffsets::open(dir.path(), 1 << 20).unwrap();
        let committed = CommittedOffset::new(50, 0);
        let job = offsets.begin_commit("g", committed).unwrap();
        offsets.finish_commit("g", committed, job.run()).unwrap();
        drop(offsets);
        let offsets = ConsumerOffsets::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(offsets.lookup("g", 0, 60), OffsetLookup::Valid(50));
        assert_eq!(
            offsets.lookup("g", 0, 40),
            OffsetLookup::OutOfRange { committed: 50, log_start_offset: 0, log_end_offset: 40 }
        );
        assert_eq!(offsets.get("g").unwrap().offset, 50, "stored offset unchanged");
        assert_eq!(offsets.lookup("other", 0, 40), OffsetLookup::None);
    }

    #[test]
    fn compaction_rewrites_one_entry_per_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut offsets = ConsumerOffsets::open(dir.path(), 200).unwrap();
        for i in 0..50u64 {
            let committed = CommittedOffset::new(i, 0);
            let group = if i % 2 == 0 { "even" } else { "odd" };
            let job = offsets.begin_commit(group, committed).unwrap();
            offsets.finish_commit(group, committed, job.run()).unwrap();
        }
        let length = std::fs::metadata(dir.path().join(CONSUMER_OFFSETS_FILE)).unwrap().len();
        assert!(length < 400, "file was compacted, length {length}");
        let offsets = ConsumerOffsets::open(dir.path(), 200).unwrap();
        assert_eq!(offsets.get("even").unwrap().offset, 48);
        assert_eq!(offsets.get("odd").unwrap().offset, 49);
    }

    fn commit(offsets: &mut ConsumerOffsets, group: &str, committed: CommittedOffset) {
        let job = offsets.begin_commit(group, committed).unwrap();
        offsets.finish_commit(group, committed, job.run()).unwrap();
    }

    #[test]
    fn latched_commit_stays_out_of_range_after_the_log_grows_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut offsets = ConsumerOffsets::open(dir.path(), 1 << 20).unwrap();
        commit(&mut offsets, "g", CommittedOffset::new(150, 0));
        let stale = offsets.stale_beyond(100);
        assert_eq!(stale.len(), 1);
        commit(&mut offsets, "g", CommittedOffset { out_of_range: true, ..stale[0].1 });
        drop(offsets);
        let mut offsets = ConsumerOffsets::open(dir.path(), 1 << 20).unwrap();
        assert!(offsets.stale_beyond(100).is_empty(), "latched once");
        let lookup = offsets.lookup("g", 0, 160);
        assert_eq!(lookup, OffsetLookup::OutOfRange { committed: 150, log_start_offset: 0, log_end_offset: 160 });
        commit(&mut offsets, "g", CommittedOffset::new(100, 1));
        assert_eq!(offsets.lookup("g", 0, 160), OffsetLookup::Valid(100), "an explicit commit clears the latch");
    }

    #[test]
    fn damaged_entry_with_valid_entries_after_it_is_kept_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for i in 0..20 {
            bytes.extend(encode_entry("group", CommittedOffset::new(i, 0)));
        }
        bytes[40] ^= 0x10;
        let path = dir.path().join(CONSUMER_OFFSETS_FILE);
        std::fs::write(&path, &bytes).unwrap();
        let mut offsets = ConsumerOffsets::open(dir.path(), 1 << 20).unwrap();
        assert!(offsets.damage().is_some());
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "bytes kept");
        assert!(offsets.begin_commit("group", CommittedOffset::new(30, 0)).is_err(), "commits refused");
    }

    #[test]
    fn torn_last_entry_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_entry("group", CommittedOffset::new(1, 0));
        let valid = bytes.len();
        bytes.extend(&encode_entry("group", CommittedOffset::new(2, 0))[..12]);
        let path = dir.path().join(CONSUMER_OFFSETS_FILE);
        std::fs::write(&path, &bytes).unwrap();
        let offsets = ConsumerOffsets::open(dir.path(), 1 << 20).unwrap();
        assert!(offsets.damage().is_none());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), valid as u64);
        assert_eq!(offsets.get("group").unwrap().offset, 1);
    }

    #[test]
    fn a_commit_that_finds_the_disk_full_is_disk_full_and_the_store_keeps_serving() {
        // /dev/full answers every write with ENOSPC, before any fdatasync.
        let dir = tempfile::tempdir().unwrap();
        let mut offsets = ConsumerOffsets::open(dir.path(), 1 << 20).unwrap();
        let full = Arc::new(OpenOptions::new().write(true).open("/dev/full").unwrap());
        let committed = CommittedOffset::new(5, 0);
        let job = CommitJob::Append { file: full, position: 0, bytes: encode_entry("g", committed) };
        let outcome = offsets.finish_commit("g", committed, job.run());
        assert!(matches!(outcome, Err(CommitError::WriteDiskFull(_))), "{outcome:?}");
        assert!(offsets.get("g").is_none(), "nothing committed");
        commit(&mut offsets, "g", CommittedOffset::new(6, 0));
        assert_eq!(offsets.get("g").unwrap().offset, 6, "not poisoned: the next commit is stored");
    }

    #[test]
    fn invalid_group_names_are_refused() {
        assert!(validate_group("").is_err());
        assert!(validate_group(&"x".repeat(256)).is_err());
        assert!(validate_group("ok-group").is_ok());
    }
}
