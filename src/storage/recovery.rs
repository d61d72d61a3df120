//! Opening a partition directory: clean restarts load indexes and verify the
//! last batch; after a crash every segment past the recovery point is
//! scanned batch by batch, a torn tail is truncated, missing or bad indexes
//! are rebuilt, and the next offset is derived from the log. Corruption
//! before the tail (in a sealed segment) fences the partition instead of
//! truncating acknowledged data. Synchronous: runs before the partition
//! serves anything, off the executor thread.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::batch::{verify_batch, BatchHeader, BATCH_HEADER_BYTES};
use super::config::StorageConfig;
use super::epochs::EpochHistory;
use super::error::{StorageError, StorageResult};
use super::index::{OffsetIndex, SegmentIndexes, TimeIndex};
use super::markers::{load_clean_shutdown, load_recovery_point, remove_clean_shutdown, CleanShutdown};
use super::producers::ProducerStates;
use super::scan::{scan_segment, ScanOutcome, ScanStop};
use super::segment::{parse_segment_name, segment_file, store_indexes, Segment, INDEX_EXTENSION, TIME_INDEX_EXTENSION};

/// Where and why a partition was fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceReport {
    /// Segment file with the corruption.
    pub path: PathBuf,
    /// Byte position of the bad batch.
    pub position: u64,
    /// Offset expected there.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

impl FenceReport {
    /// The error appends get while fenced.
    pub fn to_error(&self) -> StorageError {
        StorageError::Fenced {
            path: self.path.clone(),
            position: self.position,
            offset: self.offset,
            reason: self.reason.clone(),
        }
    }
}

/// What recovery did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// True when the clean-shutdown marker let recovery skip scanning.
    pub clean: bool,
    /// Segments scanned batch by batch.
    pub scanned_segments: u64,
    /// Bytes scanned.
    pub scanned_bytes: u64,
    /// Bytes cut from a torn tail.
    pub truncated_bytes: u64,
    /// Index files rebuilt.
    pub rebuilt_indexes: u64,
    /// Leftover temp files removed.
    pub removed_temp_files: u64,
}

/// A recovered partition, ready for the log to open.
#[derive(Debug)]
pub struct RecoveredPartition {
    /// Segments in offset order; the last one is the active segment.
    pub segments: Vec<Segment>,
    /// Next offset to assign, derived from the log.
    pub log_end_offset: u64,
    /// Leader-epoch history.
    pub epochs: EpochHistory,
    /// Set when corruption before the tail fenced the partition.
    pub fence: Option<FenceReport>,
    /// Idempotent-producer state rebuilt from the log.
    pub producers: ProducerStates,
    /// What recovery did.
    pub report: RecoveryReport,
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |error| StorageError::io(operation, path, error)
}

/// Map a file read-only; an empty file maps to an empty slice.
pub fn map_segment(path: &Path) -> io::Result<Option<Mmap>> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: during recovery no other process writes the directory (we hold
    // DATA/.lock) and this process has not opened the segment for writing yet.
    let map = unsafe { Mmap::map(&file)? };
    // Scans read front to back once: ask for aggressive readahead. Advice is
    // only a hint; failing to give it changes nothing about correctness.
    let _ = map.advise(memmap2::Advice::Sequential);
    let _ = map.advise(memmap2::Advice::WillNeed);
    Ok(Some(map))
}

/// List segment base offsets, removing leftover temp files.
fn list_segments(dir: &Path, report: &mut RecoveryReport) -> StorageResult<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error("list partition dir", dir))? {
        let entry = entry.map_err(io_error("list partition dir", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            std::fs::remove_file(entry.path()).map_err(io_error("remove temp file", &entry.path()))?;
            report.removed_temp_files += 1;
        } else if let Some(base) = parse_segment_name(&name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Recover the partition in `dir` (created if missing).
pub fn recover_partition(dir: &Path, config: &StorageConfig) -> StorageResult<RecoveredPartition> {
    std::fs::create_dir_all(dir).map_err(io_error("create partition dir", dir))?;
    let mut report = RecoveryReport::default();
    let bases = list_segments(dir, &mut report)?;
    let marker = load_clean_shutdown(dir).map_err(io_error("read clean-shutdown marker", dir))?;
    // The marker must be gone before anything is appended: a stale marker
    // would make a later crash look clean.
    remove_clean_shutdown(dir).map_err(io_error("remove clean-shutdown marker", dir))?;
    let mut recovered = None;
    if let Some(marker) = marker {
        recovered = open_clean(dir, config, &bases, &marker, &mut report)?;
        if recovered.is_none() {
            tracing::warn!(target: "ringlog::storage", dir = %dir.display(), "clean-shutdown marker does not match the log; scanning");
        }
    }
    let (segments, fence) = match recovered {
        Some(segments) => (segments, None),
        None => open_after_crash(dir, config, &bases, &mut report)?,
    };
    finish(dir, config, segments, fence, report)
}

fn finish(
    dir: &Path,
    config: &StorageConfig,
    mut segments: Vec<Segment>,
    fence: Option<FenceReport>,
    report: RecoveryReport,
) -> StorageResult<RecoveredPartition> {
    if segments.is_empty() {
        let path = segment_file(dir, 0, "log");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("create segment", &path))?;
        super::io::sync_directory(dir).map_err(io_error("sync partition dir", dir))?;
        segments.push(empty_segment(0));
    }
    let log_end_offset = segments.last().map_or(0, |segment| segment.next_offset);
    let epochs = recover_epochs(dir, &segments, log_end_offset)?;
    let extents: Vec<SegmentExtent> = segments.iter().map(SegmentExtent::of).collect();
    let producers = rebuild_producer_states(dir, &extents, log_end_offset, config.max_producers_per_partition)?;
    Ok(RecoveredPartition { segments, log_end_offset, epochs, fence, producers, report })
}

/// An empty active segment starting at `base_offset`.
pub fn empty_segment(base_offset: u64) -> Segment {
    Segment {
        base_offset,
        next_offset: base_offset,
        size_bytes: 0,
        written_bytes: 0,
        last_batch_position: None,
        indexes: SegmentIndexes::default(),
        sealed: false,
    }
}

fn file_size(path: &Path) -> StorageResult<u64> {
    Ok(std::fs::metadata(path).map_err(io_error("stat segment", path))?.len())
}

/// Clean path: trust sizes from the marker and index files, verify the last batch.
fn open_clean(
    dir: &Path,
    config: &StorageConfig,
    bases: &[u64],
    marker: &CleanShutdown,
    report: &mut RecoveryReport,
) -> StorageResult<Option<Vec<Segment>>> {
    if bases.last() != Some(&marker.active_base_offset) {
        return Ok(None);
    }
    let mut segments = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_file(dir, base, "log");
        let is_active = i + 1 == bases.len();
        let size_bytes = if is_active { marker.active_size_bytes } else { file_size(&path)? };
        let next_offset = if is_active {
            match verify_last_batch(&path, marker)? {
                Some(next) => next,
                None => return Ok(None),
            }
        } else {
            bases[i + 1]
        };
        let indexes = load_or_rebuild_indexes(dir, config, base, size_bytes, next_offset, is_active, report)?;
        let Some(indexes) = indexes else {
            return Ok(None);
        };
        segments.push(Segment {
            base_offset: base,
            next_offset,
            size_bytes,
            written_bytes: size_bytes,
            last_batch_position: (marker.last_batch_position != u64::MAX && is_active)
                .then_some(marker.last_batch_position),
            indexes,
            sealed: !is_active,
        });
    }
    report.clean = true;
    Ok(Some(segments))
}

/// Read and CRC-check the batch the marker names as last; its end is the log end.
fn verify_last_batch(path: &Path, marker: &CleanShutdown) -> StorageResult<Option<u64>> {
    if marker.last_batch_position == u64::MAX {
        return Ok((marker.active_size_bytes == 0).then_some(marker.active_base_offset));
    }
    let Some(map) = map_segment(path).map_err(io_error("map segment", path))? else {
        return Ok(None);
    };
    let start = marker.last_batch_position as usize;
    if start >= map.len() || marker.active_size_bytes as usize > map.len() {
        return Ok(None);
    }
    let Ok(header) = verify_batch(&map[start..marker.active_size_bytes as usize], usize::MAX) else {
        return Ok(None);
    };
    let ends_at_marker = start as u64 + u64::from(header.batch_bytes) == marker.active_size_bytes;
    // Defence in depth: the marker is removed durably before any append, but
    // if a batch follows the recorded end anyway the marker is stale: scan.
    let after = &map[marker.active_size_bytes as usize..];
    let nothing_after = after[..after.len().min(BATCH_HEADER_BYTES)].iter().all(|&byte| byte == 0);
    Ok((ends_at_marker && nothing_after).then_some(header.next_offset()))
}

/// Load a segment's index files; rebuild them by scanning when missing or bad.
/// Returns None when the rebuild scan finds the segment itself damaged.
fn load_or_rebuild_indexes(
    dir: &Path,
    config: &StorageConfig,
    base: u64,
    size_bytes: u64,
    next_offset: u64,
    is_active: bool,
    report: &mut RecoveryReport,
) -> StorageResult<Option<SegmentIndexes>> {
    let index_path = segment_file(dir, base, INDEX_EXTENSION);
    let time_path = segment_file(dir, base, TIME_INDEX_EXTENSION);
    let offsets = load_index(&index_path, |path| OffsetIndex::load(path, size_bytes.max(1)))?;
    let times = load_index(&time_path, |path| TimeIndex::load(path, (next_offset - base).max(1)))?;
    if let (Some(offsets), Some(times)) = (offsets, times) {
        let complete = size_bytes == 0 || !offsets.is_empty();
        if complete {
            let mut indexes = SegmentIndexes::loaded(offsets, times, config.index_interval_bytes);
            if is_active {
                indexes.make_writable();
            }
            return Ok(Some(indexes));
        }
    }
    let path = segment_file(dir, base, "log");
    let map = map_segment(&path).map_err(io_error("map segment", &path))?;
    let bytes = map.as_deref().unwrap_or(&[]);
    let limit = (size_bytes as usize).min(bytes.len());
    let outcome = scan_segment(&bytes[..limit], base, config.index_interval_bytes, config.max_batch_bytes);
    report.scanned_segments += 1;
    report.scanned_bytes += outcome.valid_bytes;
    if outcome.valid_bytes != size_bytes || outcome.next_offset != next_offset {
        return Ok(None);
    }
    let mut indexes = outcome.indexes;
    indexes.finalize();
    if !is_active {
        store_indexes(dir, base, &indexes).map_err(io_error("write index", &index_path))?;
    }
    report.rebuilt_indexes += 1;
    Ok(Some(indexes))
}

fn load_index<T, E>(path: &Path, load: impl FnOnce(&Path) -> io::Result<Result<T, E>>) -> StorageResult<Option<T>> {
    match load(path) {
        Ok(Ok(index)) => Ok(Some(index)),
        Ok(Err(_)) => Ok(None),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StorageError::io("load index", path, error)),
    }
}

/// Crash path: trust sealed segments below the recovery point, scan the rest.
fn open_after_crash(
    dir: &Path,
    config: &StorageConfig,
    bases: &[u64],
    report: &mut RecoveryReport,
) -> StorageResult<(Vec<Segment>, Option<FenceReport>)> {
    let recovery_point = load_recovery_point(dir).map_err(io_error("read recovery point", dir))?;
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let path = segment_file(dir, base, "log");
        let expected_base = segments.last().map(|segment| segment.next_offset);
        if let Some(expected) = expected_base.filter(|&expected| expected != base) {
            let reason = format!("segment starts at {base} but the previous one ends at {expected}");
            return Ok((segments, Some(FenceReport { path, position: 0, offset: expected, reason })));
        }
        let trusted = !is_last && base < recovery_point && bases[i + 1] <= recovery_point;
        if trusted {
            let size_bytes = file_size(&path)?;
            let next_offset = bases[i + 1];
            if let Some(indexes) = load_or_rebuild_indexes(dir, config, base, size_bytes, next_offset, false, report)? {
                segments.push(sealed_segment(base, next_offset, size_bytes, indexes));
                continue;
            }
        }
        match scan_and_fix(dir, config, base, is_last, report)? {
            Ok(segment) => segments.push(segment),
            Err((fence, intact_prefix)) => {
                // Keep the damaged segment's intact prefix readable; nothing
                // after the damage is touched.
                segments.push(intact_prefix);
                return Ok((segments, Some(fence)));
            }
        }
    }
    Ok((segments, None))
}

fn sealed_segment(base: u64, next_offset: u64, size_bytes: u64, indexes: SegmentIndexes) -> Segment {
    Segment {
        base_offset: base,
        next_offset,
        size_bytes,
        written_bytes: size_bytes,
        last_batch_position: None,
        indexes,
        sealed: true,
    }
}

/// Scan one segment. The last segment's invalid tail is truncated; a sealed
/// segment must be valid to its end, or the partition is fenced.
fn scan_and_fix(
    dir: &Path,
    config: &StorageConfig,
    base: u64,
    is_last: bool,
    report: &mut RecoveryReport,
) -> StorageResult<Result<Segment, (FenceReport, Segment)>> {
    let path = segment_file(dir, base, "log");
    let map = map_segment(&path).map_err(io_error("map segment", &path))?;
    let bytes = map.as_deref().unwrap_or(&[]);
    let outcome = scan_segment(bytes, base, config.index_interval_bytes, config.max_batch_bytes);
    report.scanned_segments += 1;
    report.scanned_bytes += outcome.valid_bytes;
    let file_bytes = bytes.len() as u64;
    drop(map);
    let trailing_is_garbage = outcome.valid_bytes < file_bytes && !tail_is_zero(&path, outcome.valid_bytes)?;
    if !is_last && (matches!(outcome.stop, ScanStop::Invalid { .. }) || trailing_is_garbage) {
        let fence = fence_from(&path, &outcome);
        let intact_prefix = Segment {
            base_offset: base,
            next_offset: outcome.next_offset,
            size_bytes: outcome.valid_bytes,
            written_bytes: outcome.valid_bytes,
            last_batch_position: outcome.last_batch_position,
            indexes: outcome.indexes,
            sealed: true,
        };
        return Ok(Err((fence, intact_prefix)));
    }
    if is_last && outcome.valid_bytes < file_bytes {
        if let ScanStop::Invalid { position, reason } = &outcome.stop {
            tracing::warn!(
                target: "ringlog::storage",
                path = %path.display(), position, offset = outcome.next_offset, %reason,
                dropped_bytes = file_bytes - outcome.valid_bytes,
                "torn tail after crash: truncating to the last valid batch"
            );
            report.truncated_bytes += file_bytes - outcome.valid_bytes;
        }
        truncate_file(&path, outcome.valid_bytes)?;
    } else if !is_last && outcome.valid_bytes < file_bytes {
        truncate_file(&path, outcome.valid_bytes)?;
    }
    let mut indexes = outcome.indexes;
    indexes.finalize();
    if !is_last {
        store_indexes(dir, base, &indexes).map_err(io_error("write index", &path))?;
        report.rebuilt_indexes += 1;
    }
    Ok(Ok(Segment {
        base_offset: base,
        next_offset: outcome.next_offset,
        size_bytes: outcome.valid_bytes,
        written_bytes: outcome.valid_bytes,
        last_batch_position: outcome.last_batch_position,
        indexes,
        sealed: !is_last,
    }))
}

fn fence_from(path: &Path, outcome: &ScanOutcome) -> FenceReport {
    let (position, reason) = match &outcome.stop {
        ScanStop::Invalid { position, reason } => (*position, reason.clone()),
        _ => (outcome.valid_bytes, "unexpected bytes after the end of a sealed segment".to_string()),
    };
    FenceReport { path: path.to_path_buf(), position, offset: outcome.next_offset, reason }
}

/// True when every byte of `path` from `position` on is zero.
fn tail_is_zero(path: &Path, position: u64) -> StorageResult<bool> {
    let map = map_segment(path).map_err(io_error("map segment", path))?;
    let bytes = map.as_deref().unwrap_or(&[]);
    Ok(bytes.get(position as usize..).is_none_or(|tail| tail.iter().all(|&byte| byte == 0)))
}

/// Truncate a file to `size` bytes and make it durable. Removing the bytes
/// (not just ignoring them) matters: stale batches past the cut must never
/// line up with new appends and come back after a later crash.
pub fn truncate_file(path: &Path, size: u64) -> StorageResult<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path).map_err(io_error("open for truncate", path))?;
    file.set_len(size).map_err(io_error("truncate", path))?;
    file.sync_all().map_err(io_error("fsync after truncate", path))
}

/// Epochs: the checkpoint merged with the epochs seen in the log's headers.
fn recover_epochs(dir: &Path, segments: &[Segment], log_end_offset: u64) -> StorageResult<EpochHistory> {
    let checkpoint = EpochHistory::load(dir).map_err(io_error("read epoch checkpoint", dir))?;
    // The checkpoint covers sealed segments; the active segment's headers are
    // walked to catch epochs that began after the last checkpoint write. Without
    // a checkpoint every header is walked (64 bytes a batch).
    let walk_from = if checkpoint.is_some() { segments.len().saturating_sub(1) } else { 0 };
    let mut epochs = checkpoint.unwrap_or_default();
    for segment in &segments[walk_from..] {
        let path = segment.log_path(dir);
        let Some(map) = map_segment(&path).map_err(io_error("map segment", &path))? else {
            continue;
        };
        let mut position = 0usize;
        while position + BATCH_HEADER_BYTES <= segment.size_bytes as usize {
            let Ok(header) = BatchHeader::parse(&map[position..]) else {
                break;
            };
            if epochs.latest_epoch().is_none_or(|latest| header.leader_epoch > latest) {
                epochs.assign(header.leader_epoch, header.base_offset);
            }
            position += (header.batch_bytes as usize).max(BATCH_HEADER_BYTES);
        }
    }
    epochs.truncate_from_end(log_end_offset);
    if let Some(first) = segments.first() {
        epochs.truncate_from_start(first.base_offset);
    }
    Ok(epochs)
}

/// Where a segment's valid bytes are, for header walks.
#[derive(Debug, Clone, Copy)]
pub struct SegmentExtent {
    /// Base offset.
    pub base_offset: u64,
    /// Offset after its last record.
    pub next_offset: u64,
    /// Valid bytes.
    pub size_bytes: u64,
}

impl SegmentExtent {
    /// The extent of a segment's current contents.
    pub fn of(segment: &Segment) -> SegmentExtent {
        SegmentExtent {
            base_offset: segment.base_offset,
            next_offset: segment.next_offset,
            size_bytes: segment.size_bytes,
        }
    }
}

/// Producer state as of `log_end_offset`: the snapshot (if it is not ahead
/// of the log) plus every batch header after it.
pub fn rebuild_producer_states(
    dir: &Path,
    segments: &[SegmentExtent],
    log_end_offset: u64,
    max_producers: usize,
) -> StorageResult<ProducerStates> {
    let snapshot =
        ProducerStates::load(dir, log_end_offset, max_producers).map_err(io_error("read producer snapshot", dir))?;
    let mut states = snapshot.unwrap_or_else(|| ProducerStates::new(max_producers));
    let from = states.applied_offset;
    for segment in segments.iter().filter(|segment| segment.next_offset > from) {
        let path = segment_file(dir, segment.base_offset, "log");
        let Some(map) = map_segment(&path).map_err(io_error("map segment", &path))? else { continue };
        let end = (segment.size_bytes as usize).min(map.len());
        let mut position = 0usize;
        while position + BATCH_HEADER_BYTES <= end {
            let Ok(header) = BatchHeader::parse(&map[position..end]) else { break };
            if header.batch_bytes as usize <= BATCH_HEADER_BYTES || header.base_offset >= log_end_offset {
                break;
            }
            if header.base_offset >= from {
                states.apply(&header);
            }
            position += header.batch_bytes as usize;
        }
    }
    states.applied_offset = log_end_offset;
    Ok(states)
}
