//! Leader-epoch history of a partition: epoch → first offset written under
//! it. Replication uses it to find where a follower's log diverges.
//! Kept durably in `leader-epoch-checkpoint` (checksummed, atomic rewrite).

use std::io;
use std::path::{Path, PathBuf};

use super::batch::{read_u32, read_u64};
use super::io::{read_optional, write_file_atomically};

/// File name of the checkpoint inside a partition directory.
pub const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const MAGIC: &[u8; 4] = b"RLEP";

/// Ordered (epoch, start offset) pairs, both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(u32, u64)>,
}

impl EpochHistory {
    /// All entries.
    pub fn entries(&self) -> &[(u32, u64)] {
        &self.entries
    }

    /// The latest epoch, if any.
    pub fn latest_epoch(&self) -> Option<u32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    /// Record that `epoch` starts at `start_offset`. Ignored when it is not
    /// newer than the latest epoch; a start at or below an existing entry's
    /// start replaces those entries (they never wrote anything).
    pub fn assign(&mut self, epoch: u32, start_offset: u64) -> bool {
        if self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        while self.entries.last().is_some_and(|&(_, start)| start >= start_offset) {
            self.entries.pop();
        }
        self.entries.push((epoch, start_offset));
        true
    }

    /// First offset after the last record written under `epoch` (or under the
    /// largest epoch below it), given the log end: the divergence point a
    /// leader answers a follower with. None when `epoch` precedes all history.
    pub fn end_offset_for(&self, epoch: u32, log_end_offset: u64) -> Option<(u32, u64)> {
        let position = self.entries.iter().rposition(|&(candidate, _)| candidate <= epoch)?;
        let found_epoch = self.entries[position].0;
        let end = self.entries.get(position + 1).map_or(log_end_offset, |&(_, start)| start);
        Some((found_epoch, end))
    }

    /// Forget epochs starting at or after `offset` (log truncated to `offset`).
    pub fn truncate_from_end(&mut self, offset: u64) {
        self.entries.retain(|&(_, start)| start < offset);
    }

    /// Forget epochs entirely below the new log start, keeping the one covering it.
    pub fn truncate_from_start(&mut self, log_start_offset: u64) {
        let covering = self.entries.iter().rposition(|&(_, start)| start <= log_start_offset);
        if let Some(position) = covering {
            self.entries.drain(..position);
            self.entries[0].1 = self.entries[0].1.max(log_start_offset);
        }
    }

    /// Merge transitions found by scanning the log (authoritative for the scanned range).
    pub fn merge_scanned(&mut self, scanned: &[(u32, u64)]) {
        for &(epoch, start) in scanned {
            let known = self.entries.iter().any(|&(existing, _)| existing == epoch);
            if !known {
                self.assign(epoch, start);
            }
        }
    }

    /// Encode as checkpoint bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(12 + self.entries.len() * 12);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for &(epoch, start) in &self.entries {
            bytes.extend_from_slice(&epoch.to_le_bytes());
            bytes.extend_from_slice(&start.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decode checkpoint bytes; None when damaged.
    pub fn decode(bytes: &[u8]) -> Option<EpochHistory> {
        if bytes.len() < 12 || &bytes[..4] != MAGIC {
            return None;
        }
        let body = &bytes[..bytes.len() - 4];
        if crc32fast::hash(body) != read_u32(bytes, bytes.len() - 4) {
            return None;
        }
        let count = read_u32(bytes, 4) as usize;
        if body.len() != 8 + count.checked_mul(12)? {
            return None;
        }
        // Both columns must strictly increase, as `assign` keeps them: a
        // CRC-valid file that breaks this is damage, never "repaired" by
        // `assign` silently dropping the entries it would replace.
        let mut entries: Vec<(u32, u64)> = Vec::with_capacity(count);
        for i in 0..count {
            let start = 8 + i * 12;
            let entry = (read_u32(bytes, start), read_u64(bytes, start + 4));
            if entries.last().is_some_and(|&(epoch, offset)| entry.0 <= epoch || entry.1 <= offset) {
                return None;
            }
            entries.push(entry);
        }
        Some(EpochHistory { entries })
    }

    /// Path of the checkpoint in `partition_dir`.
    pub fn path(partition_dir: &Path) -> PathBuf {
        partition_dir.join(EPOCH_CHECKPOINT_FILE)
    }

    /// Load the checkpoint; Ok(None) when absent or damaged.
    pub fn load(partition_dir: &Path) -> io::Result<Option<EpochHistory>> {
        Ok(read_optional(&Self::path(partition_dir))?.and_then(|bytes| Self::decode(&bytes)))
    }

    /// Write the checkpoint durably.
    pub fn store(&self, partition_dir: &Path) -> io::Result<()> {
        write_file_atomically(&Self::path(partition_dir), &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history built by assigning each (epoch, start offset) in turn.
    fn history_of(epochs: &[(u32, u64)]) -> EpochHistory {
        let mut history = EpochHistory::default();
        for &(epoch, start_offset) in epochs {
            assert!(history.assign(epoch, start_offset), "epoch {epoch} at {start_offset} is news");
        }
        history
    }

    #[test]
    fn divergence_point_is_start_of_next_epoch() {
        let history = history_of(&[(1, 0), (3, 100), (4, 250)]);
        assert_eq!(history.end_offset_for(1, 300), Some((1, 100)));
        assert_eq!(history.end_offset_for(2, 300), Some((1, 100)));
        assert_eq!(history.end_offset_for(4, 300), Some((4, 300)));
        assert_eq!(history.end_offset_for(0, 300), None);
    }

    #[test]
    fn checkpoint_round_trips_and_detects_damage() {
        let history = history_of(&[(2, 10), (5, 77)]);
        let mut bytes = history.encode();
        assert_eq!(EpochHistory::decode(&bytes), Some(history));
        bytes[6] ^= 1;
        assert_eq!(EpochHistory::decode(&bytes), None);
        assert_eq!(EpochHistory::decode(&[]), None);
    }

    #[test]
    fn checkpoint_with_start_offsets_not_increasing_is_damage_not_silently_shortened() {
        // CRC-valid, epochs increasing, but epoch 5 starts below epoch 2:
        // the encoder never writes this, so it is damage, not a history to
        // repair by dropping epoch 2 (found by the epoch_checkpoint_load fuzz target).
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&2u32.to_le_bytes());
        for (epoch, start) in [(2u32, 10u64), (5, 3)] {
            bytes.extend_from_slice(&epoch.to_le_bytes());
            bytes.extend_from_slice(&start.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(EpochHistory::decode(&bytes), None);
    }

    #[test]
    fn truncation_forgets_epochs_past_the_cut() {
        let mut history = history_of(&[(1, 0), (2, 50), (3, 80)]);
        history.truncate_from_end(60);
        assert_eq!(history.entries(), &[(1, 0), (2, 50)]);
        history.truncate_from_start(55);
        assert_eq!(history.entries(), &[(2, 55)]);
    }
}
