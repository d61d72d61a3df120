//! Sparse offset index and time index of one segment.
//!
//! Offset index entry (8 bytes): relative offset u32, byte position u32.
//! Time index entry (12 bytes): max timestamp so far i64, relative offset u32.
//! The active segment keeps its entries in memory; a sealed segment's index
//! files are written once at seal time and read through `memmap2`.
//! Indexes are hints: every lookup is followed by a scan of the log, and the
//! next offset is always derived from the log itself.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

/// Bytes of one offset index entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes of one time index entry.
pub const TIME_ENTRY_BYTES: usize = 12;

/// Backing bytes of an index: growable in memory, or a read-only map.
#[derive(Debug)]
enum Entries {
    Memory(Vec<u8>),
    Mapped(Mmap),
}

impl Entries {
    fn bytes(&self) -> &[u8] {
        match self {
            Entries::Memory(bytes) => bytes,
            Entries::Mapped(map) => map,
        }
    }
}

/// Sparse map from relative offset to byte position.
#[derive(Debug)]
pub struct OffsetIndex {
    entries: Entries,
}

/// Sparse map from timestamp to relative offset.
#[derive(Debug)]
pub struct TimeIndex {
    entries: Entries,
}

/// Why an index file was not usable (it will be rebuilt from the log).
#[derive(Debug, PartialEq, Eq)]
pub enum IndexDefect {
    /// The file length is not a whole number of entries.
    PartialEntry,
    /// Entries are not strictly increasing.
    NotMonotonic,
    /// An entry points at or past the end of the valid log.
    PastLogEnd,
}

impl Default for OffsetIndex {
    fn default() -> Self {
        OffsetIndex { entries: Entries::Memory(Vec::new()) }
    }
}

impl Default for TimeIndex {
    fn default() -> Self {
        TimeIndex { entries: Entries::Memory(Vec::new()) }
    }
}

fn read_u32(bytes: &[u8], position: usize) -> u32 {
    u32::from_le_bytes(bytes[position..position + 4].try_into().expect("4 bytes"))
}

fn read_i64(bytes: &[u8], position: usize) -> i64 {
    i64::from_le_bytes(bytes[position..position + 8].try_into().expect("8 bytes"))
}

fn map_file(path: &Path) -> std::io::Result<Option<Mmap>> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: index files of sealed segments are immutable once written
    // (temp file + rename); nothing in this process or ringlog writes them
    // again, and they are only deleted together with their segment.
    let map = unsafe { Mmap::map(&file)? };
    Ok(Some(map))
}

impl OffsetIndex {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.bytes().len() / OFFSET_ENTRY_BYTES
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i` as (relative offset, position).
    pub fn entry(&self, i: usize) -> (u32, u32) {
        let bytes = self.entries.bytes();
        let start = i * OFFSET_ENTRY_BYTES;
        (read_u32(bytes, start), read_u32(bytes, start + 4))
    }

    /// Append an entry to an in-memory index.
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some((last_offset, last_position)) = self.last() {
            assert!(relative_offset > last_offset && position > last_position, "offset index must increase");
        }
        let Entries::Memory(bytes) = &mut self.entries else {
            panic!("push on a sealed (mapped) offset index");
        };
        bytes.extend_from_slice(&relative_offset.to_le_bytes());
        bytes.extend_from_slice(&position.to_le_bytes());
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<(u32, u32)> {
        let count = self.len();
        (count > 0).then(|| self.entry(count - 1))
    }

    /// Largest entry whose relative offset is <= `relative_offset`.
    pub fn floor(&self, relative_offset: u32) -> Option<(u32, u32)> {
        let count = self.len();
        let (mut low, mut high) = (0usize, count);
        while low < high {
            let middle = (low + high) / 2;
            if self.entry(middle).0 <= relative_offset {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        (low > 0).then(|| self.entry(low - 1))
    }

    /// Largest entry whose position is <= `position`: the start of a batch
    /// at or before it (positions grow with offsets).
    pub fn floor_by_position(&self, position: u32) -> Option<(u32, u32)> {
        let count = self.len();
        let (mut low, mut high) = (0usize, count);
        while low < high {
            let middle = (low + high) / 2;
            if self.entry(middle).1 <= position {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        (low > 0).then(|| self.entry(low - 1))
    }

    /// Drop entries at or past `position` (truncation of the log).
    pub fn truncate_to_position(&mut self, position: u64) {
        let keep = (0..self.len()).take_while(|&i| u64::from(self.entry(i).1) < position).count();
        self.make_memory();
        if let Entries::Memory(bytes) = &mut self.entries {
            bytes.truncate(keep * OFFSET_ENTRY_BYTES);
        }
    }

    /// Copy a mapped index into memory so it can grow again.
    pub fn make_memory(&mut self) {
        if let Entries::Mapped(map) = &self.entries {
            self.entries = Entries::Memory(map.to_vec());
        }
    }

    /// Raw bytes, for writing the index file.
    pub fn as_bytes(&self) -> &[u8] {
        self.entries.bytes()
    }

    /// Load and validate an index file against the segment's valid length.
    pub fn load(path: &Path, log_bytes: u64) -> std::io::Result<Result<OffsetIndex, IndexDefect>> {
        let entries = match map_file(path)? {
            Some(map) => Entries::Mapped(map),
            None => Entries::Memory(Vec::new()),
        };
        let index = OffsetIndex { entries };
        Ok(index.validate(log_bytes).map(|()| index))
    }

    /// Check the structural invariants of the index bytes.
    pub fn validate(&self, log_bytes: u64) -> Result<(), IndexDefect> {
        if self.entries.bytes().len() % OFFSET_ENTRY_BYTES != 0 {
            return Err(IndexDefect::PartialEntry);
        }
        let mut previous: Option<(u32, u32)> = None;
        for i in 0..self.len() {
            let (offset, position) = self.entry(i);
            if let Some((previous_offset, previous_position)) = previous {
                if offset <= previous_offset || position <= previous_position {
                    return Err(IndexDefect::NotMonotonic);
                }
            }
            if u64::from(position) >= log_bytes {
                return Err(IndexDefect::PastLogEnd);
            }
            previous = Some((offset, position));
        }
        Ok(())
    }

    /// Build from raw bytes (fuzzing and tests).
    pub fn from_bytes(bytes: Vec<u8>) -> OffsetIndex {
        OffsetIndex { entries: Entries::Memory(bytes) }
    }
}

impl TimeIndex {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.bytes().len() / TIME_ENTRY_BYTES
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i` as (timestamp, relative offset).
    pub fn entry(&self, i: usize) -> (i64, u32) {
        let bytes = self.entries.bytes();
        let start = i * TIME_ENTRY_BYTES;
        (read_i64(bytes, start), read_u32(bytes, start + 8))
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<(i64, u32)> {
        let count = self.len();
        (count > 0).then(|| self.entry(count - 1))
    }

    /// Append an entry: `timestamp_ms` is the segment's max timestamp so far,
    /// reached by the batch at `relative_offset`.
    pub fn push(&mut self, timestamp_ms: i64, relative_offset: u32) {
        if let Some((last_timestamp, last_offset)) = self.last() {
            assert!(timestamp_ms > last_timestamp && relative_offset > last_offset, "time index must increase");
        }
        let Entries::Memory(bytes) = &mut self.entries else {
            panic!("push on a sealed (mapped) time index");
        };
        bytes.extend_from_slice(&timestamp_ms.to_le_bytes());
        bytes.extend_from_slice(&relative_offset.to_le_bytes());
    }

    /// Relative offset to start scanning from for the first record with
    /// timestamp >= `timestamp_ms`: the last entry whose timestamp is below it.
    /// Every record before that entry's offset is older than `timestamp_ms`.
    pub fn scan_start(&self, timestamp_ms: i64) -> Option<u32> {
        let count = self.len();
        let (mut low, mut high) = (0usize, count);
        while low < high {
            let middle = (low + high) / 2;
            if self.entry(middle).0 < timestamp_ms {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        (low > 0).then(|| self.entry(low - 1).1)
    }

    /// Copy a mapped index into memory so it can grow again.
    pub fn make_memory(&mut self) {
        if let Entries::Mapped(map) = &self.entries {
            self.entries = Entries::Memory(map.to_vec());
        }
    }

    /// Drop entries whose relative offset is >= `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = (0..self.len()).take_while(|&i| self.entry(i).1 < relative_offset).count();
        self.make_memory();
        if let Entries::Memory(bytes) = &mut self.entries {
            bytes.truncate(keep * TIME_ENTRY_BYTES);
        }
    }

    /// Raw bytes, for writing the index file.
    pub fn as_bytes(&self) -> &[u8] {
        self.entries.bytes()
    }

    /// Load and validate a time index file against the segment's record count.
    pub fn load(path: &Path, next_relative_offset: u64) -> std::io::Result<Result<TimeIndex, IndexDefect>> {
        let entries = match map_file(path)? {
            Some(map) => Entries::Mapped(map),
            None => Entries::Memory(Vec::new()),
        };
        let index = TimeIndex { entries };
        Ok(index.validate(next_relative_offset).map(|()| index))
    }

    /// Check the structural invariants of the index bytes.
    pub fn validate(&self, next_relative_offset: u64) -> Result<(), IndexDefect> {
        if self.entries.bytes().len() % TIME_ENTRY_BYTES != 0 {
            return Err(IndexDefect::PartialEntry);
        }
        let mut previous: Option<(i64, u32)> = None;
        for i in 0..self.len() {
            let (timestamp, offset) = self.entry(i);
            if let Some((previous_timestamp, previous_offset)) = previous {
                if timestamp <= previous_timestamp || offset <= previous_offset {
                    return Err(IndexDefect::NotMonotonic);
                }
            }
            if u64::from(offset) >= next_relative_offset {
                return Err(IndexDefect::PastLogEnd);
            }
            previous = Some((timestamp, offset));
        }
        Ok(())
    }

    /// Build from raw bytes (fuzzing and tests).
    pub fn from_bytes(bytes: Vec<u8>) -> TimeIndex {
        TimeIndex { entries: Entries::Memory(bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_finds_largest_entry_not_above_target() {
        let mut index = OffsetIndex::default();
        assert_eq!(index.floor(5), None);
        index.push(0, 0);
        index.push(10, 4096);
        index.push(20, 8192);
        assert_eq!(index.floor(0), Some((0, 0)));
        assert_eq!(index.floor(9), Some((0, 0)));
        assert_eq!(index.floor(10), Some((10, 4096)));
        assert_eq!(index.floor(u32::MAX), Some((20, 8192)));
    }

    #[test]
    fn floor_by_position_finds_the_batch_start_not_past_a_position() {
        let mut index = OffsetIndex::default();
        assert_eq!(index.floor_by_position(5), None);
        index.push(0, 0);
        index.push(10, 4096);
        index.push(20, 8192);
        assert_eq!(index.floor_by_position(0), Some((0, 0)));
        assert_eq!(index.floor_by_position(4095), Some((0, 0)));
        assert_eq!(index.floor_by_position(4096), Some((10, 4096)));
        assert_eq!(index.floor_by_position(u32::MAX), Some((20, 8192)));
    }

    #[test]
    fn time_scan_start_is_last_entry_strictly_older() {
        let mut index = TimeIndex::default();
        index.push(100, 0);
        index.push(200, 10);
        index.push(300, 20);
        assert_eq!(index.scan_start(50), None);
        assert_eq!(index.scan_start(100), None);
        assert_eq!(index.scan_start(101), Some(0));
        assert_eq!(index.scan_start(300), Some(10));
        assert_eq!(index.scan_start(1000), Some(20));
    }

    #[test]
    fn index_pointing_past_log_end_is_rejected() {
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(5, 5000);
        assert_eq!(index.validate(5001), Ok(()));
        assert_eq!(index.validate(5000), Err(IndexDefect::PastLogEnd));
    }

    #[test]
    fn partial_and_unordered_index_bytes_are_rejected() {
        assert_eq!(OffsetIndex::from_bytes(vec![0; 7]).validate(100), Err(IndexDefect::PartialEntry));
        let mut bytes = Vec::new();
        for (offset, position) in [(5u32, 100u32), (3, 200)] {
            bytes.extend_from_slice(&offset.to_le_bytes());
            bytes.extend_from_slice(&position.to_le_bytes());
        }
        assert_eq!(OffsetIndex::from_bytes(bytes).validate(1000), Err(IndexDefect::NotMonotonic));
    }

    #[test]
    fn truncation_drops_entries_at_and_after_the_cut() {
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(10, 4096);
        index.push(20, 8192);
        index.truncate_to_position(8192);
        assert_eq!(index.len(), 2);
        let mut time = TimeIndex::default();
        time.push(1, 0);
        time.push(2, 10);
        time.truncate_to_offset(10);
        assert_eq!(time.len(), 1);
    }
}

/// Adds index entries as batches are appended or scanned, so the active
/// segment and recovery build identical indexes.
#[derive(Debug, Default)]
pub struct SegmentIndexes {
    /// The sparse offset index.
    pub offsets: OffsetIndex,
    /// The time index.
    pub times: TimeIndex,
    /// Largest record timestamp in the segment (None when empty).
    pub max_timestamp_ms: Option<i64>,
    /// Relative offset of the batch holding the largest timestamp.
    max_timestamp_offset: u32,
    interval_bytes: u32,
    bytes_since_offset_entry: u64,
    bytes_since_time_entry: u64,
}

impl SegmentIndexes {
    /// Empty indexes adding an entry every `interval_bytes` of log.
    pub fn new(interval_bytes: u32) -> SegmentIndexes {
        SegmentIndexes { interval_bytes, ..SegmentIndexes::default() }
    }

    /// Wrap indexes loaded from files; the next entry comes after a full interval.
    /// The last time entry is the segment's maximum (see [`SegmentIndexes::finalize`]).
    pub fn loaded(offsets: OffsetIndex, times: TimeIndex, interval_bytes: u32) -> Self {
        let last_time = times.last();
        SegmentIndexes {
            offsets,
            times,
            max_timestamp_ms: last_time.map(|(timestamp, _)| timestamp),
            max_timestamp_offset: last_time.map_or(0, |(_, offset)| offset),
            interval_bytes,
            bytes_since_offset_entry: 0,
            bytes_since_time_entry: 0,
        }
    }

    /// Record a batch at `position` holding relative offsets from `relative_offset`.
    pub fn on_batch(&mut self, relative_offset: u32, position: u32, batch_bytes: u32, max_timestamp_ms: i64) {
        let interval = u64::from(self.interval_bytes);
        if self.offsets.is_empty() || self.bytes_since_offset_entry >= interval {
            self.offsets.push(relative_offset, position);
            self.bytes_since_offset_entry = 0;
        }
        self.bytes_since_offset_entry += u64::from(batch_bytes);
        self.bytes_since_time_entry += u64::from(batch_bytes);
        let raises_max = self.max_timestamp_ms.is_none_or(|current| max_timestamp_ms > current);
        if raises_max {
            self.max_timestamp_ms = Some(max_timestamp_ms);
            self.max_timestamp_offset = relative_offset;
            if self.times.is_empty() || self.bytes_since_time_entry >= interval {
                self.times.push(max_timestamp_ms, relative_offset);
                self.bytes_since_time_entry = 0;
            }
        }
    }
}

impl SegmentIndexes {
    /// Make both indexes growable (the segment becomes active again).
    pub fn make_writable(&mut self) {
        self.offsets.make_memory();
        self.times.make_memory();
    }

    /// Ensure the time index's last entry is the segment's maximum timestamp,
    /// so a loaded index knows the maximum without scanning the log.
    pub fn finalize(&mut self) {
        let Some(max_timestamp_ms) = self.max_timestamp_ms else {
            return;
        };
        let needs_entry = self.times.last().is_none_or(|(timestamp, _)| timestamp < max_timestamp_ms);
        if needs_entry {
            self.times.make_memory();
            self.times.push(max_timestamp_ms, self.max_timestamp_offset);
            self.bytes_since_time_entry = 0;
        }
    }

    /// Raise the maximum timestamp to one found by walking batches the
    /// sparse time index does not describe (after a truncation).
    pub fn raise_max_timestamp(&mut self, max_timestamp_ms: i64, relative_offset: u32) {
        if self.max_timestamp_ms.is_none_or(|current| max_timestamp_ms > current) {
            self.max_timestamp_ms = Some(max_timestamp_ms);
            self.max_timestamp_offset = relative_offset;
        }
    }

    /// Drop entries at or after `relative_offset` / `position` (log truncation).
    /// The maximum timestamp is then at least the last time entry's; the
    /// caller raises it with [`SegmentIndexes::raise_max_timestamp`] from
    /// the batches after that entry.
    pub fn truncate(&mut self, relative_offset: u32, position: u64) {
        self.offsets.truncate_to_position(position);
        self.times.truncate_to_offset(relative_offset);
        let last_time = self.times.last();
        self.max_timestamp_ms = last_time.map(|(timestamp, _)| timestamp);
        self.max_timestamp_offset = last_time.map_or(0, |(_, offset)| offset);
        self.bytes_since_offset_entry = u64::from(self.interval_bytes);
        self.bytes_since_time_entry = u64::from(self.interval_bytes);
    }
}
