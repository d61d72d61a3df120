//! Sparse offset index and time index of one segment.
//!
//! Offset index entry (8 bytes): relative offset u32, byte position u32.
//! Time index entry (12 bytes): max timestamp so far i64, relative offset u32.
//! The active segment keeps its entries in memory; a sealed segment's index
//! files are written once at seal time and read through `memmap2`.
//! Indexes are hints: every lookup is followed by a scan of the log, and the
//! next offset is always derived from the log itself.
//!
//! An index file is its entries followed by a 16-byte trailer: magic
//! (`RLOI` offset index, `RLTI` time index), entry count u32, CRC-32 u32 of
//! the entries and the rest of the trailer, format version u16, zero u16.
//! Without the checksum a flipped bit in a time index entry that still
//! increases would pass every structural check and silently answer a time
//! lookup with the wrong offset (the log scan after an offset lookup would
//! catch a wrong position, but not a wrong timestamp).

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

/// Bytes of one offset index entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes of one time index entry.
pub const TIME_ENTRY_BYTES: usize = 12;
/// Bytes of the trailer that ends every index file.
pub const INDEX_TRAILER_BYTES: usize = 16;
const OFFSET_INDEX_MAGIC: [u8; 4] = *b"RLOI";
const TIME_INDEX_MAGIC: [u8; 4] = *b"RLTI";
const INDEX_FORMAT_VERSION: u16 = 1;

/// Backing bytes of an index: growable in memory, or a read-only map.
#[derive(Debug)]
enum Entries {
    Memory(Vec<u8>),
    /// The whole file; the entries are its first `entries_bytes`.
    Mapped {
        map: Mmap,
        entries_bytes: usize,
    },
}

impl Entries {
    fn bytes(&self) -> &[u8] {
        match self {
            Entries::Memory(bytes) => bytes,
            Entries::Mapped { map, entries_bytes } => &map[..*entries_bytes],
        }
    }

    fn make_memory(&mut self) {
        if let Entries::Mapped { .. } = self {
            *self = Entries::Memory(self.bytes().to_vec());
        }
    }

    /// Keep the first `count` entries of `entry_bytes` each (in memory).
    fn keep_first(&mut self, count: usize, entry_bytes: usize) {
        self.make_memory();
        if let Entries::Memory(bytes) = self {
            bytes.truncate(count * entry_bytes);
        }
    }

    /// Load an index file: mapped, with its trailer checked.
    fn load(path: &Path, magic: [u8; 4], entry_bytes: usize) -> std::io::Result<Result<Entries, IndexDefect>> {
        let Some(map) = map_file(path)? else {
            return Ok(Err(IndexDefect::BadTrailer));
        };
        Ok(entries_in_file(&map, magic, entry_bytes).map(|entries_bytes| Entries::Mapped { map, entries_bytes }))
    }
}

/// The trailer for `entries`.
fn trailer(magic: [u8; 4], entries: &[u8], entry_bytes: usize) -> [u8; INDEX_TRAILER_BYTES] {
    let mut trailer = [0u8; INDEX_TRAILER_BYTES];
    trailer[..4].copy_from_slice(&magic);
    let count = u32::try_from(entries.len() / entry_bytes).expect("an index has fewer than 2^32 entries");
    trailer[4..8].copy_from_slice(&count.to_le_bytes());
    trailer[12..14].copy_from_slice(&INDEX_FORMAT_VERSION.to_le_bytes());
    let crc = trailer_crc(entries, &trailer);
    trailer[8..12].copy_from_slice(&crc.to_le_bytes());
    trailer
}

/// CRC-32 of the entries and every trailer byte but the CRC's own.
fn trailer_crc(entries: &[u8], trailer: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(entries);
    hasher.update(&trailer[..8]);
    hasher.update(&trailer[12..INDEX_TRAILER_BYTES]);
    hasher.finalize()
}

/// The length of the entries in an index file's bytes, once its trailer
/// (magic, count, version, checksum) is verified. Panic-free on any input.
fn entries_in_file(file: &[u8], magic: [u8; 4], entry_bytes: usize) -> Result<usize, IndexDefect> {
    let Some(entries_bytes) = file.len().checked_sub(INDEX_TRAILER_BYTES) else {
        return Err(IndexDefect::BadTrailer);
    };
    let (entries, trailer) = file.split_at(entries_bytes);
    let version = u16::from_le_bytes([trailer[12], trailer[13]]);
    if trailer[..4] != magic || version != INDEX_FORMAT_VERSION || trailer[14..] != [0, 0] {
        return Err(IndexDefect::BadTrailer);
    }
    if entries_bytes % entry_bytes != 0 {
        return Err(IndexDefect::PartialEntry);
    }
    if read_u32(trailer, 4) as usize != entries_bytes / entry_bytes {
        return Err(IndexDefect::BadTrailer);
    }
    if read_u32(trailer, 8) != trailer_crc(entries, trailer) {
        return Err(IndexDefect::ChecksumMismatch);
    }
    Ok(entries_bytes)
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
    /// No trailer, or not one of this kind of index and format version
    /// (files of an earlier format without one are rebuilt like this).
    BadTrailer,
    /// The entries do not match the trailer's checksum.
    ChecksumMismatch,
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

/// What tells the two index files apart: magic, entry size, and which
/// values of an entry must increase and which one the log bounds. The file
/// format, loading and structural checks are shared.
trait IndexFile: Sized {
    const MAGIC: [u8; 4];
    const ENTRY_BYTES: usize;
    fn from_entries(entries: Entries) -> Self;
    fn entries(&self) -> &Entries;
    /// Entry `i` as (its ordering key, the value the log bounds); both
    /// strictly increase along a valid index.
    fn ordered_entry(&self, i: usize) -> (i64, u32);
}

/// Load an index file (mapped, trailer checked), then validate it against
/// `bound`, the end of what its entries may point at.
fn load_index<I: IndexFile>(path: &Path, bound: u64) -> std::io::Result<Result<I, IndexDefect>> {
    let entries = match Entries::load(path, I::MAGIC, I::ENTRY_BYTES)? {
        Ok(entries) => entries,
        Err(defect) => return Ok(Err(defect)),
    };
    let index = I::from_entries(entries);
    Ok(validate_index(&index, bound).map(|()| index))
}

/// The index file's bytes: the entries and their trailer.
fn index_file_bytes<I: IndexFile>(index: &I) -> Vec<u8> {
    let entries = index.entries().bytes();
    [entries, &trailer(I::MAGIC, entries, I::ENTRY_BYTES)[..]].concat()
}

/// An index from a file's bytes, once its trailer is verified.
fn index_from_file_bytes<I: IndexFile>(bytes: &[u8]) -> Result<I, IndexDefect> {
    let entries_bytes = entries_in_file(bytes, I::MAGIC, I::ENTRY_BYTES)?;
    Ok(I::from_entries(Entries::Memory(bytes[..entries_bytes].to_vec())))
}

/// Whole entries, strictly increasing, each below `bound`.
fn validate_index<I: IndexFile>(index: &I, bound: u64) -> Result<(), IndexDefect> {
    let bytes_len = index.entries().bytes().len();
    if bytes_len % I::ENTRY_BYTES != 0 {
        return Err(IndexDefect::PartialEntry);
    }
    let mut previous: Option<(i64, u32)> = None;
    for i in 0..bytes_len / I::ENTRY_BYTES {
        let (key, bounded) = index.ordered_entry(i);
        if let Some((previous_key, previous_bounded)) = previous {
            if key <= previous_key || bounded <= previous_bounded {
                return Err(IndexDefect::NotMonotonic);
            }
        }
        if u64::from(bounded) >= bound {
            return Err(IndexDefect::PastLogEnd);
        }
        previous = Some((key, bounded));
    }
    Ok(())
}

/// How many of `count` entries satisfy `holds`, which holds for a prefix
/// of them (entries increase): a binary search.
fn prefix_length(count: usize, holds: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0usize, count);
    while low < high {
        let middle = (low + high) / 2;
        if holds(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

impl IndexFile for OffsetIndex {
    const MAGIC: [u8; 4] = OFFSET_INDEX_MAGIC;
    const ENTRY_BYTES: usize = OFFSET_ENTRY_BYTES;
    fn from_entries(entries: Entries) -> Self {
        OffsetIndex { entries }
    }
    fn entries(&self) -> &Entries {
        &self.entries
    }
    fn ordered_entry(&self, i: usize) -> (i64, u32) {
        let (relative_offset, position) = self.entry(i);
        (i64::from(relative_offset), position)
    }
}

impl IndexFile for TimeIndex {
    const MAGIC: [u8; 4] = TIME_INDEX_MAGIC;
    const ENTRY_BYTES: usize = TIME_ENTRY_BYTES;
    fn from_entries(entries: Entries) -> Self {
        TimeIndex { entries }
    }
    fn entries(&self) -> &Entries {
        &self.entries
    }
    fn ordered_entry(&self, i: usize) -> (i64, u32) {
        self.entry(i)
    }
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
        let below = prefix_length(self.len(), |i| self.entry(i).0 <= relative_offset);
        (below > 0).then(|| self.entry(below - 1))
    }

    /// Largest entry whose position is <= `position`: the start of a batch
    /// at or before it (positions grow with offsets).
    pub fn floor_by_position(&self, position: u32) -> Option<(u32, u32)> {
        let below = prefix_length(self.len(), |i| self.entry(i).1 <= position);
        (below > 0).then(|| self.entry(below - 1))
    }

    /// Drop entries at or past `position` (truncation of the log).
    pub fn truncate_to_position(&mut self, position: u64) {
        let keep = (0..self.len()).take_while(|&i| u64::from(self.entry(i).1) < position).count();
        self.entries.keep_first(keep, OFFSET_ENTRY_BYTES);
    }

    /// Copy a mapped index into memory so it can grow again.
    pub fn make_memory(&mut self) {
        self.entries.make_memory();
    }

    /// Raw bytes, for writing the index file.
    pub fn as_bytes(&self) -> &[u8] {
        self.entries.bytes()
    }

    /// Load and validate an index file against the segment's valid length.
    pub fn load(path: &Path, log_bytes: u64) -> std::io::Result<Result<OffsetIndex, IndexDefect>> {
        load_index(path, log_bytes)
    }

    /// The index file's bytes: the entries and their trailer.
    pub fn file_bytes(&self) -> Vec<u8> {
        index_file_bytes(self)
    }

    /// An index from a file's bytes, once its trailer is verified (fuzzing
    /// and tests; `load` maps the file instead).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<OffsetIndex, IndexDefect> {
        index_from_file_bytes(bytes)
    }

    /// Check the structural invariants of the index bytes.
    pub fn validate(&self, log_bytes: u64) -> Result<(), IndexDefect> {
        validate_index(self, log_bytes)
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
        let older = prefix_length(self.len(), |i| self.entry(i).0 < timestamp_ms);
        (older > 0).then(|| self.entry(older - 1).1)
    }

    /// Copy a mapped index into memory so it can grow again.
    pub fn make_memory(&mut self) {
        self.entries.make_memory();
    }

    /// Drop entries whose relative offset is >= `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = (0..self.len()).take_while(|&i| self.entry(i).1 < relative_offset).count();
        self.entries.keep_first(keep, TIME_ENTRY_BYTES);
    }

    /// Raw bytes, for writing the index file.
    pub fn as_bytes(&self) -> &[u8] {
        self.entries.bytes()
    }

    /// Load and validate a time index file against the segment's record count.
    pub fn load(path: &Path, next_relative_offset: u64) -> std::io::Result<Result<TimeIndex, IndexDefect>> {
        load_index(path, next_relative_offset)
    }

    /// The index file's bytes: the entries and their trailer.
    pub fn file_bytes(&self) -> Vec<u8> {
        index_file_bytes(self)
    }

    /// An index from a file's bytes, once its trailer is verified (fuzzing
    /// and tests; `load` maps the file instead).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<TimeIndex, IndexDefect> {
        index_from_file_bytes(bytes)
    }

    /// Check the structural invariants of the index bytes.
    pub fn validate(&self, next_relative_offset: u64) -> Result<(), IndexDefect> {
        validate_index(self, next_relative_offset)
    }

    /// Build from raw bytes (fuzzing and tests).
    pub fn from_bytes(bytes: Vec<u8>) -> TimeIndex {
        TimeIndex { entries: Entries::Memory(bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_time_index() -> TimeIndex {
        let mut index = TimeIndex::default();
        index.push(100, 0);
        index.push(200, 10);
        index.push(300, 20);
        index
    }

    #[test]
    fn index_files_round_trip_through_their_trailer() {
        let times = sample_time_index();
        let loaded = TimeIndex::from_file_bytes(&times.file_bytes()).unwrap();
        assert_eq!(loaded.as_bytes(), times.as_bytes());
        let mut offsets = OffsetIndex::default();
        offsets.push(0, 0);
        offsets.push(7, 4096);
        let loaded = OffsetIndex::from_file_bytes(&offsets.file_bytes()).unwrap();
        assert_eq!(loaded.as_bytes(), offsets.as_bytes());
        let empty = OffsetIndex::default().file_bytes();
        assert_eq!(empty.len(), INDEX_TRAILER_BYTES);
        assert!(OffsetIndex::from_file_bytes(&empty).unwrap().is_empty());
    }

    #[test]
    fn a_flipped_bit_that_keeps_the_entries_increasing_fails_the_checksum() {
        let mut file = sample_time_index().file_bytes();
        // Entry 1's relative offset 10 -> 11: still valid structurally.
        file[TIME_ENTRY_BYTES + 8] ^= 1;
        let entries = TimeIndex::from_bytes(file[..3 * TIME_ENTRY_BYTES].to_vec());
        assert_eq!(entries.validate(100), Ok(()));
        assert_eq!(TimeIndex::from_file_bytes(&file).err(), Some(IndexDefect::ChecksumMismatch));
    }

    #[test]
    fn files_without_the_right_trailer_are_rebuilt() {
        let times = sample_time_index();
        // The earlier format: entries only.
        assert_eq!(TimeIndex::from_file_bytes(times.as_bytes()).err(), Some(IndexDefect::BadTrailer));
        assert_eq!(TimeIndex::from_file_bytes(&[]).err(), Some(IndexDefect::BadTrailer));
        // A time index's file is not an offset index's.
        assert_eq!(OffsetIndex::from_file_bytes(&times.file_bytes()).err(), Some(IndexDefect::BadTrailer));
        // A count that disagrees with the length.
        let mut file = times.file_bytes();
        let count_at = file.len() - INDEX_TRAILER_BYTES + 4;
        file[count_at] = 2;
        assert_eq!(TimeIndex::from_file_bytes(&file).err(), Some(IndexDefect::BadTrailer));
    }

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
