//! Opening a partition directory: clean restarts load indexes and verify the
//! last batch; after a crash every segment past the recovery point is
//! scanned batch by batch, a torn tail is truncated, missing or bad indexes
//! are rebuilt, and the next offset is derived from the log. Corruption
//! before the tail (in a sealed segment) fences the partition instead of
//! truncating acknowledged data. Synchronous: runs before the partition
//! serves anything, off the executor thread.

use std::fs::File;
use std::io;
use std::path::Path;

use memmap2::Mmap;

use super::batch::{verify_batch, BatchHeader, HeaderWalk, BATCH_HEADER_BYTES, FORMAT_MAX_BATCH_BYTES};
use super::config::StorageConfig;
use super::epochs::EpochHistory;
use super::error::{StorageError, StorageResult};
pub use super::fence::FenceReport;
use super::fence::{load_fence, store_fence};
use super::index::{OffsetIndex, SegmentIndexes, TimeIndex};
use super::markers::{load_clean_shutdown, load_recovery_point, remove_clean_shutdown, CleanShutdown};
use super::producers::ProducerStates;
use super::scan::{judge_tail_before, scan_segment, ScanOutcome, TailJudgement};
use super::segment::{
    parse_segment_name, segment_file, store_indexes, Segment, INDEX_EXTENSION, RECYCLED_EXTENSION, TIME_INDEX_EXTENSION,
};

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
    /// Leftover temp files (and recycled segment files) removed.
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

/// How a mapped segment will be read, for the kernel's read-ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAccess {
    /// Every byte, front to back (a scan after a crash, an index rebuild,
    /// `ringlog check`): read it all ahead.
    Scan,
    /// A few bytes here and there (batch headers, the last batch): read
    /// only the pages touched. With `Scan`'s advice a clean restart read
    /// every partition's whole active segment, up to a gigabyte each, to
    /// look at its headers.
    Headers,
}

/// A segment file mapped read-only, whole, and where its data ends.
pub struct SegmentMap {
    map: Mmap,
    /// End of the file's last data region: past it the file is holes or
    /// unwritten extents, which read as zeros, so no search for non-zero
    /// bytes needs to look there. A recycled segment is a gigabyte of
    /// unwritten extents; a crash recovery that searched them page by page
    /// would read a gigabyte of zeros per partition.
    pub data_end: usize,
}

impl std::ops::Deref for SegmentMap {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

/// Map a file read-only; an empty file maps to nothing. The whole file is
/// mapped (a batch's own zeros may be a hole in a sparse copy), but only
/// its data is read ahead.
pub fn map_segment(path: &Path, access: MapAccess) -> io::Result<Option<SegmentMap>> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    let data_end = data_end(&file)?;
    // SAFETY: during recovery no other process writes the directory (we hold
    // DATA/.lock) and this process has not opened the segment for writing yet.
    let map = unsafe { Mmap::map(&file)? };
    let data_end = usize::try_from(data_end).map_or(map.len(), |end| end.min(map.len()));
    // Advice is only a hint; failing to give it changes nothing about
    // correctness.
    match access {
        MapAccess::Scan => {
            let _ = map.advise(memmap2::Advice::Sequential);
            if data_end > 0 {
                let _ = map.advise_range(memmap2::Advice::WillNeed, 0, data_end);
            }
        }
        MapAccess::Headers => {
            let _ = map.advise(memmap2::Advice::Random);
        }
    }
    Ok(Some(SegmentMap { map, data_end }))
}

/// Most data regions `data_end` walks before it settles for the file's
/// size (a segment is written front to back: one region, or a few).
const MAX_DATA_REGIONS: usize = 1024;

/// End of the file's last data region (`SEEK_DATA`/`SEEK_HOLE`), or its
/// size where the file system cannot tell (it then reports the whole
/// file as data) or the regions are too many to walk.
fn data_end(file: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let file_bytes = file.metadata()?.len();
    let mut position: libc::off_t = 0;
    let mut end = 0u64;
    for _ in 0..MAX_DATA_REGIONS {
        // SAFETY: lseek on a descriptor `file` owns; no memory is passed.
        let data = unsafe { libc::lseek(file.as_raw_fd(), position, libc::SEEK_DATA) };
        if data < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENXIO) => Ok(end),
                _ => Ok(file_bytes),
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(file.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Ok(file_bytes);
        }
        end = (hole as u64).min(file_bytes);
        if end >= file_bytes {
            return Ok(file_bytes);
        }
        position = hole;
    }
    Ok(file_bytes)
}

/// List segment base offsets, removing leftover temp and recycled files.
fn list_segments(dir: &Path, report: &mut RecoveryReport) -> StorageResult<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error("list partition dir", dir))? {
        let entry = entry.map_err(io_error("list partition dir", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // A segment file retention kept for reuse is not part of the log,
        // and a crash may have come before it was zeroed: never reused.
        let recycled = name.strip_suffix(RECYCLED_EXTENSION).is_some_and(|stem| stem.ends_with('.'));
        if name.ends_with(".tmp") || recycled {
            std::fs::remove_file(entry.path()).map_err(io_error("remove temp file", &entry.path()))?;
            report.removed_temp_files += 1;
        } else if let Some(base) = parse_segment_name(&name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// A reset (`PartitionLog::reset_to`) empties the log, rolls to the new
/// start (storing it as the recovery point) and then deletes the empty old
/// segment; a crash in between leaves that empty first segment before the
/// new one. Nothing else leaves an empty segment with another after it (a
/// roll never starts a segment at its own base), so it is removed here.
fn drop_reset_leftover(dir: &Path, bases: &mut Vec<u64>) -> StorageResult<()> {
    let [first, second, ..] = bases[..] else {
        return Ok(());
    };
    let recovery_point = load_recovery_point(dir).map_err(io_error("read recovery point", dir))?;
    if file_size(&segment_file(dir, first, "log"))? != 0 || recovery_point < second {
        return Ok(());
    }
    tracing::warn!(target: "ringlog::storage", dir = %dir.display(), first, second, "removing the empty segment a reset left behind");
    for extension in ["log", INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
        match std::fs::remove_file(segment_file(dir, first, extension)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(StorageError::io("remove segment", dir, error))
            }
            _ => {}
        }
    }
    super::io::sync_directory(dir).map_err(io_error("sync partition dir", dir))?;
    bases.remove(0);
    Ok(())
}

/// Recover the partition in `dir` (created if missing).
pub fn recover_partition(dir: &Path, config: &StorageConfig) -> StorageResult<RecoveredPartition> {
    create_partition_dir(dir)?;
    let mut report = RecoveryReport::default();
    let mut bases = list_segments(dir, &mut report)?;
    drop_reset_leftover(dir, &mut bases)?;
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
    let (segments, found) = match recovered {
        Some(segments) => (segments, None),
        None => open_after_crash(dir, config, &bases, &mut report)?,
    };
    let fence = settle_fence(dir, found)?;
    finish(dir, config, segments, fence, report)
}

/// A fence found now is stored before the partition serves anything; one
/// stored earlier stays until `check --repair` removes it, even when this
/// recovery (a clean restart, say) did not look at the damage again.
fn settle_fence(dir: &Path, found: Option<FenceReport>) -> StorageResult<Option<FenceReport>> {
    let stored = load_fence(dir).map_err(io_error("read fence", dir))?;
    match (stored, found) {
        (Some(stored), _) => Ok(Some(stored)),
        (None, Some(found)) => {
            store_fence(dir, &found).map_err(io_error("store fence", dir))?;
            Ok(Some(found))
        }
        (None, None) => Ok(None),
    }
}

/// Create the partition directory durably: every new directory's entry is
/// fsynced in its parent, so a crash cannot lose a partition whose first
/// records were acknowledged.
fn create_partition_dir(dir: &Path) -> StorageResult<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current.filter(|path| !path.as_os_str().is_empty() && !path.exists()) {
        missing.push(path);
        current = path.parent();
    }
    std::fs::create_dir_all(dir).map_err(io_error("create partition dir", dir))?;
    for created in missing.iter().rev() {
        let parent = created.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
        super::io::sync_directory(parent).map_err(io_error("sync directory", parent))?;
    }
    Ok(())
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
            // The CRC does not cover the last batch's base offset: the
            // header walk must agree on where the log ends.
            let walked = sealed_end_offset(dir, base, size_bytes)?.ok();
            verify_last_batch(&path, marker)?.filter(|&end| size_bytes == 0 || walked == Some(end))
        } else {
            sealed_end_offset(dir, base, size_bytes)?.ok().filter(|&end| end == bases[i + 1])
        };
        // Anything unexpected sends recovery down the crash path, which
        // scans and fences with a report.
        let Some(next_offset) = next_offset else {
            return Ok(None);
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
    let Some(map) = map_segment(path, MapAccess::Headers).map_err(io_error("map segment", path))? else {
        return Ok(None);
    };
    let start = marker.last_batch_position as usize;
    let end = marker.active_size_bytes as usize;
    // The marker passed its CRC but is still input: a start at or past the
    // end would slice out of bounds.
    if start >= end || end > map.len() {
        return Ok(None);
    }
    let Ok(header) = verify_batch(&map[start..end], FORMAT_MAX_BATCH_BYTES) else {
        return Ok(None);
    };
    // The CRC does not cover the base offset: a batch before the segment's
    // base would underflow every relative offset computed from it.
    if header.base_offset < marker.active_base_offset {
        return Ok(None);
    }
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
    let times = load_index(&time_path, |path| TimeIndex::load(path, next_offset.saturating_sub(base).max(1)))?;
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
    let map = map_segment(&path, MapAccess::Scan).map_err(io_error("map segment", &path))?;
    let bytes = map.as_deref().unwrap_or(&[]);
    let limit = (size_bytes as usize).min(bytes.len());
    let outcome = scan_segment(&bytes[..limit], base, config.index_interval_bytes);
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
            if let Some(segment) = open_trusted(dir, config, base, report)? {
                segments.push(segment);
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
    Ok(check_recovery_point(dir, segments, recovery_point))
}

/// Every offset below the recovery point was sealed and made durable: a log
/// that now ends before it lost whole segments (the active one deleted, a
/// segment cut short). Fence instead of serving a shorter log.
fn check_recovery_point(
    dir: &Path,
    segments: Vec<Segment>,
    recovery_point: u64,
) -> (Vec<Segment>, Option<FenceReport>) {
    let log_end_offset = segments.last().map_or(0, |segment| segment.next_offset);
    let Some(reason) = recovery_point_violation(&segments, recovery_point) else {
        return (segments, None);
    };
    let path = segments.last().map_or_else(|| dir.to_path_buf(), |segment| segment.log_path(dir));
    let position = segments.last().map_or(0, |segment| segment.size_bytes);
    (segments, Some(FenceReport { path, position, offset: log_end_offset, reason }))
}

/// The recovery point names the segment that was active when it was last
/// stored (a roll creates that file before storing it), and every offset
/// below it was sealed durably: a log ending before it, or without that
/// segment, lost whole segments.
pub fn recovery_point_violation(segments: &[Segment], recovery_point: u64) -> Option<String> {
    let log_end_offset = segments.last().map_or(0, |segment| segment.next_offset);
    if log_end_offset < recovery_point {
        return Some(format!(
            "the log ends at {log_end_offset} but offsets below {recovery_point} were sealed durably"
        ));
    }
    let has_segment = segments.iter().any(|segment| segment.base_offset == recovery_point);
    if recovery_point > 0 && !has_segment {
        return Some(format!("segment {recovery_point}, active when last sealed durably, is missing"));
    }
    None
}

/// A segment below the recovery point: trusted for its content (reads check
/// every CRC), never for where it ends. None sends it to a full scan.
fn open_trusted(
    dir: &Path,
    config: &StorageConfig,
    base: u64,
    report: &mut RecoveryReport,
) -> StorageResult<Option<Segment>> {
    let size_bytes = file_size(&segment_file(dir, base, "log"))?;
    let Ok(next_offset) = sealed_end_offset(dir, base, size_bytes)? else {
        return Ok(None);
    };
    let indexes = load_or_rebuild_indexes(dir, config, base, size_bytes, next_offset, false, report)?;
    Ok(indexes.map(|indexes| sealed_segment(base, next_offset, size_bytes, indexes)))
}

/// Where a sealed segment's log ends, from its batch headers rather than
/// from the next file's name: the first batch must start at `base`, and a
/// walk from the last offset-index entry must land exactly on the file's
/// end. Reads headers only (CRCs are checked by every read); cheap because
/// the index entry is at most one index interval from the end.
pub fn sealed_end_offset(dir: &Path, base: u64, size_bytes: u64) -> StorageResult<Result<u64, String>> {
    let path = segment_file(dir, base, "log");
    let Some(map) = map_segment(&path, MapAccess::Headers).map_err(io_error("map segment", &path))? else {
        return Ok(Err("sealed segment is empty".into()));
    };
    let bytes = &map[..(size_bytes as usize).min(map.len())];
    let first = match BatchHeader::parse(bytes) {
        Ok(header) if header.base_offset == base => header,
        Ok(header) => return Ok(Err(format!("first batch has offset {} in segment {base}", header.base_offset))),
        Err(error) => return Ok(Err(format!("first batch: {error}"))),
    };
    let index_path = segment_file(dir, base, INDEX_EXTENSION);
    let hint = match OffsetIndex::load(&index_path, size_bytes.max(1)) {
        Ok(Ok(index)) => index.last(),
        _ => None,
    };
    let (position, mut expected) =
        hint.map_or((0, base), |(relative, position)| (position as usize, base + u64::from(relative)));
    let mut next_offset = first.next_offset();
    let mut walk = HeaderWalk::new(bytes, position);
    for step in walk.by_ref() {
        let (position, header) = match step {
            Ok(step) => step,
            Err((position, error)) => return Ok(Err(format!("no valid batch header at position {position}: {error}"))),
        };
        if header.base_offset != expected {
            return Ok(Err(format!("batch at {position} has offset {}, expected {expected}", header.base_offset)));
        }
        next_offset = header.next_offset();
        expected = next_offset;
    }
    if walk.position() != bytes.len() {
        return Ok(Err(format!("the batches end at {}, not at the segment's end {}", walk.position(), bytes.len())));
    }
    Ok(Ok(next_offset))
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

/// Scan one segment. In the last segment a torn write inside the window a
/// crash can tear is truncated; anything else that is not a valid batch,
/// and anything invalid in a sealed segment, fences the partition with the
/// segment's intact prefix kept readable and its bytes untouched.
fn scan_and_fix(
    dir: &Path,
    config: &StorageConfig,
    base: u64,
    is_last: bool,
    report: &mut RecoveryReport,
) -> StorageResult<Result<Segment, (FenceReport, Segment)>> {
    let path = segment_file(dir, base, "log");
    let map = map_segment(&path, MapAccess::Scan).map_err(io_error("map segment", &path))?;
    let bytes = map.as_deref().unwrap_or(&[]);
    let data_end = map.as_ref().map_or(0, |map| map.data_end);
    let outcome = scan_segment(bytes, base, config.index_interval_bytes);
    report.scanned_segments += 1;
    report.scanned_bytes += outcome.valid_bytes;
    let file_bytes = bytes.len() as u64;
    let judgement = judge_tail_before(bytes, &outcome, torn_window_bytes(config, is_last), data_end);
    drop(map);
    match judgement {
        TailJudgement::Corrupt { position, reason } => {
            let fence = FenceReport { path, position, offset: outcome.next_offset, reason };
            return Ok(Err((fence, scanned_segment(base, outcome, true))));
        }
        TailJudgement::Torn { written_end } => {
            let position = outcome.valid_bytes;
            tracing::warn!(
                target: "ringlog::storage",
                path = %path.display(), position, offset = outcome.next_offset,
                dropped_bytes = written_end - position,
                "torn write after a crash: truncating to the last valid batch"
            );
            report.truncated_bytes += written_end - position;
            truncate_file(&path, position)?;
        }
        TailJudgement::Clean if outcome.valid_bytes < file_bytes => truncate_file(&path, outcome.valid_bytes)?,
        TailJudgement::Clean => {}
    }
    let mut segment = scanned_segment(base, outcome, !is_last);
    segment.indexes.finalize();
    if !is_last {
        store_indexes(dir, base, &segment.indexes).map_err(io_error("write index", &path))?;
        report.rebuilt_indexes += 1;
    }
    Ok(Ok(segment))
}

/// What a crash can tear: every buffer the writer may have had in flight
/// plus the tail being rewritten (and, in `judge_tail`, the batch being
/// written). The window is taken from today's settings: a restart with
/// fewer or smaller buffers than the crashed run may fence a torn write,
/// never truncate corruption. A sealed segment was fdatasynced and cut
/// to size before the next one began: nothing in it can be torn.
fn torn_window_bytes(config: &StorageConfig, is_last: bool) -> u64 {
    if !is_last {
        return 0;
    }
    if config.fsync != crate::storage::config::FsyncPolicy::Always {
        // Without an fdatasync per acknowledgement nothing in the active
        // segment is known durable: all of it is the window.
        return u64::MAX;
    }
    (config.max_write_buffers as u64 + 1) * config.write_buffer_bytes as u64
}

fn scanned_segment(base_offset: u64, outcome: ScanOutcome, sealed: bool) -> Segment {
    Segment {
        base_offset,
        next_offset: outcome.next_offset,
        size_bytes: outcome.valid_bytes,
        written_bytes: outcome.valid_bytes,
        last_batch_position: outcome.last_batch_position,
        indexes: outcome.indexes,
        sealed,
    }
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
        let Some(map) = map_segment(&path, MapAccess::Headers).map_err(io_error("map segment", &path))? else {
            continue;
        };
        let end = (segment.size_bytes as usize).min(map.len());
        for (_, header) in HeaderWalk::new(&map[..end], 0).map_while(Result::ok) {
            if epochs.latest_epoch().is_none_or(|latest| header.leader_epoch > latest) {
                epochs.assign(header.leader_epoch, header.base_offset);
            }
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
        let Some(map) = map_segment(&path, MapAccess::Headers).map_err(io_error("map segment", &path))? else {
            continue;
        };
        let end = (segment.size_bytes as usize).min(map.len());
        for (_, header) in HeaderWalk::new(&map[..end], 0).map_while(Result::ok) {
            if header.base_offset >= log_end_offset {
                break;
            }
            if header.base_offset >= from {
                states.apply(&header);
            }
        }
    }
    states.applied_offset = log_end_offset;
    Ok(states)
}
