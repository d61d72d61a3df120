//! `ringlog check`: offline verification (and optional repair) of a data
//! directory. Reads every segment through mmap, verifies every batch's CRC,
//! offset continuity within and across segments, and the index files.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::StorageConfig;
use super::fence::{load_fence, remove_fence};
use super::index::{IndexDefect, OffsetIndex, TimeIndex};
use super::markers::{load_recovery_point, remove_clean_shutdown, store_recovery_point};
use super::recovery::{map_segment, truncate_file, MapAccess};
use super::scan::{scan_segment, ScanStop};
use super::segment::{
    parse_segment_name, segment_file, store_indexes, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION,
};

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckIssue {
    /// File with the problem.
    pub path: String,
    /// Offset expected at the problem.
    pub offset: u64,
    /// Byte position in the file.
    pub position: u64,
    /// What is wrong.
    pub reason: String,
}

/// Summary printed by `ringlog check --json` (spec §6).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CheckReport {
    /// True when no errors remain.
    pub ok: bool,
    /// Partition directories checked.
    pub partitions: u64,
    /// Segment files checked.
    pub segments: u64,
    /// Valid batches.
    pub batches: u64,
    /// Records in valid batches.
    pub records: u64,
    /// Valid bytes.
    pub bytes: u64,
    /// Problems found (before repair).
    pub errors: Vec<CheckIssue>,
    /// What `--repair` changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

/// Partition directories under `dir`: any directory holding segment files.
pub fn find_partitions(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0u32)];
    while let Some((current, depth)) = stack.pop() {
        let mut has_segments = false;
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            if file_type.is_dir() && depth < 4 {
                stack.push((entry.path(), depth + 1));
            } else if file_type.is_file() && parse_segment_name(&entry.file_name().to_string_lossy()).is_some() {
                has_segments = true;
            }
        }
        if has_segments {
            found.push(current);
        }
    }
    found.sort();
    Ok(found)
}

fn list_bases(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(base) = parse_segment_name(&entry?.file_name().to_string_lossy()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Total bytes of segment files under the partitions (for the progress bar).
pub fn total_segment_bytes(partitions: &[PathBuf]) -> u64 {
    let mut total = 0;
    for partition in partitions {
        for base in list_bases(partition).unwrap_or_default() {
            total += std::fs::metadata(segment_file(partition, base, LOG_EXTENSION)).map_or(0, |meta| meta.len());
        }
    }
    total
}

/// Check (and with `repair`, fix) one partition directory.
pub fn check_partition(
    dir: &Path,
    config: &StorageConfig,
    repair: bool,
    report: &mut CheckReport,
    progress: &dyn Fn(u64),
) -> std::io::Result<()> {
    report.partitions += 1;
    let fenced = check_fence(dir, report)?;
    check_segments(dir, config, repair, report, progress)?;
    check_consumer_offsets(dir, report)?;
    if repair && fenced {
        // The segments were repaired above (or were fine): the stored
        // fence has done its job of keeping the partition closed until now.
        remove_fence(dir)?;
        report.repaired.push(format!("removed the fence of {}", dir.display()));
    }
    Ok(())
}

/// A fence stored by the node is an error until repaired, even when the
/// damage that caused it is no longer visible to a scan.
fn check_fence(dir: &Path, report: &mut CheckReport) -> std::io::Result<bool> {
    let Some(fence) = load_fence(dir)? else {
        return Ok(false);
    };
    report.errors.push(CheckIssue {
        path: fence.path.display().to_string(),
        offset: fence.offset,
        position: fence.position,
        reason: format!("partition fenced: {}", fence.reason),
    });
    Ok(true)
}

/// Corruption in `consumer-offsets.log` (a torn last entry is not an error:
/// the node truncates it). Repair leaves the file to the operator: its
/// surviving entries are what a consumer group resumes from.
fn check_consumer_offsets(dir: &Path, report: &mut CheckReport) -> std::io::Result<()> {
    let path = dir.join(super::offsets::CONSUMER_OFFSETS_FILE);
    let Some(bytes) = super::io::read_optional(&path)? else {
        return Ok(());
    };
    let (_, valid_bytes) = super::offsets::replay(&bytes);
    if let Some(damage) = super::offsets::judge_damage(&bytes, valid_bytes) {
        report.errors.push(CheckIssue {
            path: path.display().to_string(),
            offset: 0,
            position: damage.position,
            reason: damage.reason,
        });
    }
    Ok(())
}

fn check_segments(
    dir: &Path,
    config: &StorageConfig,
    repair: bool,
    report: &mut CheckReport,
    progress: &dyn Fn(u64),
) -> std::io::Result<()> {
    let bases = list_bases(dir)?;
    let mut expected: Option<u64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let path = segment_file(dir, base, LOG_EXTENSION);
        report.segments += 1;
        if let Some(expected_base) = expected.filter(|&expected_base| expected_base != base) {
            let reason = format!("segment starts at {base} but the previous one ends at {expected_base}");
            report.errors.push(CheckIssue {
                path: path.display().to_string(),
                offset: expected_base,
                position: 0,
                reason,
            });
            if repair {
                remove_from(dir, &bases[i..], report)?;
            }
            return Ok(());
        }
        let map = map_segment(&path, MapAccess::Scan)?;
        let bytes = map.as_deref().unwrap_or(&[]);
        let data_end = map.as_ref().map_or(0, |map| map.data_end); // zeros after it, known without looking
        progress(bytes.len() as u64);
        let outcome = scan_segment(bytes, base, config.index_interval_bytes);
        let valid = outcome.valid_bytes as usize;
        let tail_zero = bytes[valid..data_end.max(valid)].iter().all(|&byte| byte == 0);
        let starts = batch_starts(&bytes[..outcome.valid_bytes as usize], base);
        drop(map);
        report.batches += outcome.batch_count;
        report.records += outcome.record_count;
        report.bytes += outcome.valid_bytes;
        let damaged = match &outcome.stop {
            ScanStop::Invalid { position, reason } => Some((*position, reason.clone())),
            _ if !tail_zero => Some((outcome.valid_bytes, "non-zero bytes after the end of the log".into())),
            _ => None,
        };
        if let Some((position, reason)) = damaged {
            let kind = if is_last { "torn or corrupt tail" } else { "corruption in a sealed segment" };
            report.errors.push(CheckIssue {
                path: path.display().to_string(),
                offset: outcome.next_offset,
                position,
                reason: format!("{kind}: {reason}"),
            });
            if repair {
                truncate_file(&path, outcome.valid_bytes).map_err(std::io::Error::other)?;
                report.repaired.push(format!("truncated {} to {} bytes", path.display(), outcome.valid_bytes));
                remove_indexes(dir, base)?;
                remove_from(dir, &bases[i + 1..], report)?;
                store_recovery_point(dir, base)?;
                remove_clean_shutdown(dir)?;
                remove_producer_snapshot(dir, report)?;
            }
            return Ok(());
        }
        if !is_last {
            let log = LogFacts { log_bytes: outcome.valid_bytes, next_offset: outcome.next_offset, starts: &starts };
            check_indexes(dir, base, &log, repair, &outcome.indexes, report)?;
        }
        expected = Some(outcome.next_offset);
    }
    check_recovery_point(dir, &bases, expected, repair, report)
}

/// Offsets below the recovery point were sealed durably, and the segment it
/// names must exist (see `recovery::recovery_point_violation`).
fn check_recovery_point(
    dir: &Path,
    bases: &[u64],
    log_end_offset: Option<u64>,
    repair: bool,
    report: &mut CheckReport,
) -> std::io::Result<()> {
    let recovery_point = load_recovery_point(dir)?;
    let log_end_offset = log_end_offset.unwrap_or(0);
    let missing = recovery_point > 0 && !bases.contains(&recovery_point);
    let reason = if log_end_offset < recovery_point {
        format!("the log ends at {log_end_offset} but offsets below {recovery_point} were sealed durably")
    } else if missing {
        format!("segment {recovery_point}, active when last sealed durably, is missing")
    } else {
        return Ok(());
    };
    report.errors.push(CheckIssue { path: dir.display().to_string(), offset: log_end_offset, position: 0, reason });
    if repair {
        store_recovery_point(dir, bases.last().copied().unwrap_or(0))?;
        report.repaired.push(format!("lowered the recovery point of {} to the log", dir.display()));
    }
    Ok(())
}

/// Every batch of a segment: (position, offset relative to the base, its
/// largest timestamp), in position order. What index entries must match.
fn batch_starts(bytes: &[u8], base: u64) -> Vec<(u32, u32, i64)> {
    super::batch::HeaderWalk::new(bytes, 0)
        .map_while(Result::ok)
        .map(|(position, header)| (position as u32, (header.base_offset - base) as u32, header.max_timestamp_ms))
        .collect()
}

/// What the scan of a segment found, for checking its index files.
struct LogFacts<'a> {
    log_bytes: u64,
    next_offset: u64,
    starts: &'a [(u32, u32, i64)],
}

/// Index files must load, and every entry must name a real batch: an offset
/// entry a batch start with that offset, a time entry a batch with that
/// largest timestamp. The trailer's checksum catches damage to a file; this
/// comparison with the log catches an index that was wrong when written.
fn check_indexes(
    dir: &Path,
    base: u64,
    log: &LogFacts<'_>,
    repair: bool,
    rebuilt: &super::index::SegmentIndexes,
    report: &mut CheckReport,
) -> std::io::Result<()> {
    let index_path = segment_file(dir, base, INDEX_EXTENSION);
    let time_path = segment_file(dir, base, TIME_INDEX_EXTENSION);
    let offset_defect = match OffsetIndex::load(&index_path, log.log_bytes.max(1)) {
        Ok(Ok(index)) => (0..index.len()).map(|i| index.entry(i)).find_map(|(relative, position)| {
            let real = log.starts.binary_search_by_key(&position, |start| start.0).ok().map(|i| log.starts[i].1);
            (real != Some(relative)).then(|| {
                format!("index entry (offset {}, position {position}) is not a batch start", base + u64::from(relative))
            })
        }),
        loaded => describe(loaded),
    };
    let time_defect = match TimeIndex::load(&time_path, log.next_offset.saturating_sub(base).max(1)) {
        Ok(Ok(index)) => (0..index.len()).map(|i| index.entry(i)).find_map(|(timestamp, relative)| {
            let real = log.starts.binary_search_by_key(&relative, |start| start.1).ok().map(|i| log.starts[i].2);
            (real != Some(timestamp)).then(|| {
                format!("time index entry ({timestamp} ms, offset {}) matches no batch", base + u64::from(relative))
            })
        }),
        loaded => describe(loaded),
    };
    for (path, defect) in [(&index_path, offset_defect), (&time_path, time_defect)] {
        if let Some(reason) = defect {
            report.errors.push(CheckIssue { path: path.display().to_string(), offset: base, position: 0, reason });
            if repair {
                let mut indexes = super::index::SegmentIndexes::loaded(
                    OffsetIndex::from_bytes(rebuilt.offsets.as_bytes().to_vec()),
                    TimeIndex::from_bytes(rebuilt.times.as_bytes().to_vec()),
                    1,
                );
                indexes.max_timestamp_ms = rebuilt.max_timestamp_ms;
                store_indexes(dir, base, &indexes)?;
                report.repaired.push(format!("rebuilt indexes of segment {base} in {}", dir.display()));
                return Ok(());
            }
        }
    }
    Ok(())
}

fn describe<T>(loaded: std::io::Result<Result<T, IndexDefect>>) -> Option<String> {
    match loaded {
        Ok(Ok(_)) => None,
        Ok(Err(defect)) => Some(format!("index invalid: {defect:?}")),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some("index file missing".into()),
        Err(error) => Some(format!("index unreadable: {error}")),
    }
}

fn remove_indexes(dir: &Path, base: u64) -> std::io::Result<()> {
    for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
        match std::fs::remove_file(segment_file(dir, base, extension)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

/// The snapshot may describe batches repair just removed; once the log grew
/// past its offset again it would be trusted. Recovery rebuilds it from the
/// batch headers.
fn remove_producer_snapshot(dir: &Path, report: &mut CheckReport) -> std::io::Result<()> {
    let path = super::producers::ProducerStates::path(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => report.repaired.push(format!("removed {} (rebuilt from the log)", path.display())),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        Err(_) => {}
    }
    Ok(())
}

fn remove_from(dir: &Path, bases: &[u64], report: &mut CheckReport) -> std::io::Result<()> {
    for &base in bases {
        let path = segment_file(dir, base, LOG_EXTENSION);
        std::fs::remove_file(&path)?;
        remove_indexes(dir, base)?;
        report.repaired.push(format!("removed {} (after the damage)", path.display()));
    }
    super::io::sync_directory(dir)
}
