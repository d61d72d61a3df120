//! Durable consumer-group offsets of one partition.
//!
//! `consumer-offsets.log` is an append-only file of checksummed entries:
//! `entry_bytes u32 | crc u32 | group_length u16 | group | offset u64 | commit_ms i64`
//! (CRC over everything after the CRC field). Replay keeps the last entry per
//! group and stops at the first damaged entry (a torn tail, truncated away).
//! When the file grows past `compact_bytes` it is rewritten atomically with
//! one entry per group. A committed offset is never changed by recovery: one
//! beyond the recovered log end is reported as out of range.

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

/// A group's committed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Next offset the group will consume.
    pub offset: u64,
    /// Wall-clock time of the commit.
    pub commit_ms: i64,
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
}

/// Encode one entry.
pub fn encode_entry(group: &str, committed: CommittedOffset) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ENTRY_FIXED_BYTES + group.len());
    bytes.extend_from_slice(&((ENTRY_FIXED_BYTES - 4 + group.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&(group.len() as u16).to_le_bytes());
    bytes.extend_from_slice(group.as_bytes());
    bytes.extend_from_slice(&committed.offset.to_le_bytes());
    bytes.extend_from_slice(&committed.commit_ms.to_le_bytes());
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

fn decode_entry(bytes: &[u8]) -> Option<(String, CommittedOffset, usize)> {
    if bytes.len() < ENTRY_FIXED_BYTES {
        return None;
    }
    let length = read_u32(bytes, 0) as usize + 4;
    if !(ENTRY_FIXED_BYTES..=ENTRY_FIXED_BYTES + MAX_GROUP_BYTES).contains(&length) || length > bytes.len() {
        return None;
    }
    if crc32fast::hash(&bytes[8..length]) != read_u32(bytes, 4) {
        return None;
    }
    let group_length = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    if 10 + group_length + 16 != length {
        return None;
    }
    let group = std::str::from_utf8(&bytes[10..10 + group_length]).ok()?.to_string();
    let offset = read_u64(bytes, 10 + group_length);
    let commit_ms = read_u64(bytes, 18 + group_length) as i64;
    Some((group, CommittedOffset { offset, commit_ms }, length))
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
    /// Open (creating if absent) and replay the offsets file; a torn tail is truncated.
    pub fn open(partition_dir: &Path, compact_bytes: u64) -> io::Result<ConsumerOffsets> {
        let path = partition_dir.join(CONSUMER_OFFSETS_FILE);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let bytes = std::fs::read(&path)?;
        let (committed, valid_bytes) = replay(&bytes);
        if valid_bytes < bytes.len() {
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
            failed: None,
        })
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
            Some(CommittedOffset { offset, .. }) if offset >= log_start_offset && offset <= log_end_offset => {
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
        let mut snapshot = self.committed.clone();
        snapshot.insert(group.to_string(), committed);
        let compact = self.file_bytes > self.compact_bytes;
        let job = if compact {
            let mut bytes = Vec::new();
            for (name, entry) in &snapshot {
                bytes.extend_from_slice(&encode_entry(name, *entry));
            }
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
        outcome: io::Result<CommitDone>,
    ) -> io::Result<()> {
        match outcome {
            Ok(CommitDone::Appended { bytes }) => {
                self.file_bytes += bytes;
            }
            Ok(CommitDone::Rewritten { file, bytes }) => {
                self.file = Arc::new(file);
                self.file_bytes = bytes;
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
    pub fn run(self) -> io::Result<CommitDone> {
        match self {
            CommitJob::Append { file, position, bytes } => {
                file.write_all_at(&bytes, position)?;
                file.sync_data()?;
                Ok(CommitDone::Appended { bytes: bytes.len() as u64 })
            }
            CommitJob::Rewrite { path, bytes } => {
                write_file_atomically(&path, &bytes)?;
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
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
        let mut bytes = encode_entry("a", CommittedOffset { offset: 5, commit_ms: 1 });
        bytes.extend(encode_entry("b", CommittedOffset { offset: 9, commit_ms: 2 }));
        bytes.extend(encode_entry("a", CommittedOffset { offset: 7, commit_ms: 3 }));
        let valid = bytes.len();
        bytes.extend(&encode_entry("a", CommittedOffset { offset: 100, commit_ms: 4 })[..10]);
        let (committed, length) = replay(&bytes);
        assert_eq!(length, valid);
        assert_eq!(committed["a"].offset, 7);
        assert_eq!(committed["b"].offset, 9);
    }

    #[test]
    fn committed_offset_beyond_log_end_is_out_of_range_not_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let mut offsets = ConsumerOffsets::open(dir.path(), 1 << 20).unwrap();
        let committed = CommittedOffset { offset: 50, commit_ms: 0 };
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
            let committed = CommittedOffset { offset: i, commit_ms: 0 };
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

    #[test]
    fn invalid_group_names_are_refused() {
        assert!(validate_group("").is_err());
        assert!(validate_group(&"x".repeat(256)).is_err());
        assert!(validate_group("ok-group").is_ok());
    }
}
