//! A segment: one `<base_offset:020>.log` file with its `.index` and
//! `.timeindex` beside it. This file holds the per-segment metadata and the
//! file-name rules; the write path lives in `writer.rs`.

use super::index::SegmentIndexes;
use std::path::{Path, PathBuf};

/// Extension of segment data files.
pub const LOG_EXTENSION: &str = "log";
/// Extension of offset index files.
pub const INDEX_EXTENSION: &str = "index";
/// Extension of time index files.
pub const TIME_INDEX_EXTENSION: &str = "timeindex";

/// Extension of a segment file retention kept for the next roll to reuse
/// (its blocks zeroed, still allocated). Never part of the log: recovery
/// deletes any it finds.
pub const RECYCLED_EXTENSION: &str = "free";

/// Path of a segment file with the given extension.
pub fn segment_file(partition_dir: &Path, base_offset: u64, extension: &str) -> PathBuf {
    partition_dir.join(format!("{base_offset:020}.{extension}"))
}

/// Parse `<base_offset:020>.log` into the base offset.
pub fn parse_segment_name(file_name: &str) -> Option<u64> {
    let stem = file_name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// In-memory state of one segment.
#[derive(Debug)]
pub struct Segment {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset after the last record (base when empty).
    pub next_offset: u64,
    /// Valid bytes (including bytes not yet written for the active segment).
    pub size_bytes: u64,
    /// Bytes known to be in the file and readable.
    pub written_bytes: u64,
    /// Position of the last batch, if any.
    pub last_batch_position: Option<u64>,
    /// Offset and time indexes.
    pub indexes: SegmentIndexes,
    /// Whether the segment is sealed (immutable).
    pub sealed: bool,
}

impl Segment {
    /// Path of this segment's data file.
    pub fn log_path(&self, partition_dir: &Path) -> PathBuf {
        segment_file(partition_dir, self.base_offset, LOG_EXTENSION)
    }

    /// True when the segment holds no records.
    pub fn is_empty(&self) -> bool {
        self.next_offset == self.base_offset
    }

    /// Largest record timestamp, if any records.
    pub fn max_timestamp_ms(&self) -> Option<i64> {
        self.indexes.max_timestamp_ms
    }
}

/// Write the two index files of a sealed segment (atomic, durable).
pub fn store_indexes(partition_dir: &Path, base_offset: u64, indexes: &SegmentIndexes) -> std::io::Result<()> {
    super::io::write_file_atomically(
        &segment_file(partition_dir, base_offset, INDEX_EXTENSION),
        &indexes.offsets.file_bytes(),
    )?;
    super::io::write_file_atomically(
        &segment_file(partition_dir, base_offset, TIME_INDEX_EXTENSION),
        &indexes.times.file_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let path = segment_file(Path::new("/d"), 42, LOG_EXTENSION);
        assert_eq!(path, Path::new("/d/00000000000000000042.log"));
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.index"), None);
    }
}
