//! Recovery on real files: clean restarts, torn tails, corruption, indexes,
//! property tests over random crash points, and `ringlog check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use ringlog::storage::recovery::MapAccess;
use ringlog::storage::{PartitionLog, StorageError};

use crate::common::{
    append_values, close_or_abandon, on_executor, read_all, segment_files, small_config, values, with_log,
};

/// Fill a partition with `batches` batches, close it (cleanly or not).
fn fill(path: &Path, batches: usize, clean: bool) -> Vec<(u64, String)> {
    with_log(path, small_config(), move |log| async move {
        for round in 0..batches {
            append_values(&log, &values(&format!("f{round}"), 1 + round % 4), round as i64).await;
        }
        let all = read_all(&log, 0).await;
        close_or_abandon(log, clean).await;
        all
    })
}

fn reopen(
    path: &Path,
) -> (ringlog::storage::recovery::RecoveryReport, ringlog::storage::LogSnapshot, Vec<(u64, String)>) {
    with_log(path, small_config(), move |log| async move {
        let report = log.recovery_report();
        let snapshot = log.snapshot();
        let all = if snapshot.fence.is_none() { read_all(&log, 0).await } else { Vec::new() };
        log.close().await.unwrap();
        (report, snapshot, all)
    })
}

/// Length of the valid log in a segment file, by scanning it.
fn valid_bytes(segment: &Path) -> usize {
    let bytes = std::fs::read(segment).unwrap();
    let name = segment.file_name().unwrap().to_string_lossy().to_string();
    let base = ringlog::storage::segment::parse_segment_name(&name).unwrap();
    ringlog::storage::scan::scan_segment(&bytes, base, 4096).valid_bytes as usize
}

fn last_segment(path: &Path) -> PathBuf {
    path.join(segment_files(path).last().unwrap())
}

/// Fill 300 batches, shut down cleanly or not, reopen, and check that every
/// record is back at its offset; returns how recovery went about it.
fn restart_keeps_every_record(clean: bool) -> ringlog::storage::recovery::RecoveryReport {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 300, clean);
    let (report, snapshot, all) = reopen(dir.path());
    assert_eq!(snapshot.log_end_offset, written.len() as u64);
    assert_eq!(all, written);
    report
}

#[test]
fn clean_restart_skips_the_scan() {
    let report = restart_keeps_every_record(true);
    assert!(report.clean);
    assert_eq!(report.scanned_bytes, 0);
}

#[test]
fn crash_restart_scans_and_derives_next_offset_from_the_log() {
    let report = restart_keeps_every_record(false);
    assert!(!report.clean);
    assert!(report.scanned_bytes > 0);
}

#[test]
fn torn_tail_is_truncated_to_last_valid_batch() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 40, false);
    let segment = last_segment(dir.path());
    let bytes = std::fs::read(&segment).unwrap();
    let valid = valid_bytes(&segment);
    // Cut the last batch in half: keep its first 30 bytes, zero the rest.
    let mut torn = bytes[..valid - 30].to_vec();
    torn.resize(bytes.len(), 0);
    std::fs::write(&segment, &torn).unwrap();
    let (report, snapshot, all) = reopen(dir.path());
    assert!(report.truncated_bytes > 0);
    assert!(snapshot.log_end_offset < written.len() as u64);
    assert_eq!(all, written[..snapshot.log_end_offset as usize].to_vec());
    assert!(snapshot.fence.is_none());
}

#[test]
fn garbage_after_the_tail_is_cut_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 10, false);
    let segment = last_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    let valid = valid_bytes(&segment);
    bytes.resize(bytes.len().max(valid + 100), 0);
    bytes[valid..valid + 100].fill(0xAB);
    std::fs::write(&segment, &bytes).unwrap();
    let (_, snapshot, all) = reopen(dir.path());
    assert_eq!(snapshot.log_end_offset, written.len() as u64);
    assert_eq!(all, written);
    assert_eq!(std::fs::metadata(&segment).unwrap().len() as usize, valid, "garbage removed");
}

#[test]
fn corruption_inside_a_sealed_segment_fences_with_a_precise_report() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300, false);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let sealed = dir.path().join(&files[1]);
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[1000] ^= 0x55;
    std::fs::write(&sealed, &bytes).unwrap();
    // Make recovery scan the damaged segment: forget the recovery point.
    std::fs::remove_file(dir.path().join("recovery-point")).unwrap();
    with_log(dir.path(), small_config(), move |log| async move {
        let fence = log.snapshot().fence.expect("fenced");
        assert_eq!(fence.path, sealed);
        assert!(fence.position <= 1000, "reported at the batch holding byte 1000: {}", fence.position);
        // The intact prefix, up to the damaged batch, is still served.
        let intact = read_all(&log, 0).await;
        assert_eq!(intact.len() as u64, fence.offset);
        assert!(!intact.is_empty());
        let mut batch = crate::common::batch_of(&values("x", 1), 0);
        let result = log.append(&mut batch, ringlog::storage::AppendMode::Leader { leader_epoch: 1 }).await;
        assert!(matches!(result, Err(StorageError::Fenced { .. })), "fenced partition refuses appends");
        log.close().await.unwrap();
    });
    let files_after = segment_files(dir.path());
    assert_eq!(files, files_after, "nothing was truncated silently");
}

#[test]
fn corrupted_batch_is_never_served_even_after_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300, true);
    let files = segment_files(dir.path());
    let sealed = dir.path().join(&files[0]);
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[200] ^= 0x01;
    std::fs::write(&sealed, &bytes).unwrap();
    with_log(dir.path(), small_config(), move |log| async move {
        assert!(log.recovery_report().clean, "clean restart skipped the scan");
        let result = log.read(0, 1 << 16, None).await;
        match result {
            Err(StorageError::Fenced { path, position, .. }) => {
                assert_eq!(path, sealed);
                assert!(position <= 200);
            }
            other => panic!("expected a corruption report, got {other:?}"),
        }
        assert!(log.snapshot().fence.is_some(), "partition reports the corruption");
        log.close().await.unwrap();
    });
}

#[test]
fn missing_short_or_overlong_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 300, true);
    let files = segment_files(dir.path());
    let index = |name: &str, extension: &str| dir.path().join(name.replace(".log", extension));
    std::fs::remove_file(index(&files[0], ".index")).unwrap();
    let short = index(&files[1], ".index");
    let length = std::fs::metadata(&short).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&short).unwrap().set_len(length - 3).unwrap();
    let overlong = index(&files[2], ".index");
    let mut entries = std::fs::read(&overlong).unwrap();
    entries.extend_from_slice(&u32::MAX.to_le_bytes());
    entries.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
    std::fs::write(&overlong, entries).unwrap();
    let (report, snapshot, all) = reopen(dir.path());
    assert!(report.rebuilt_indexes >= 3, "rebuilt {}", report.rebuilt_indexes);
    assert_eq!(snapshot.log_end_offset, written.len() as u64);
    assert_eq!(all, written);
    let (report, _, _) = reopen(dir.path());
    assert_eq!(report.rebuilt_indexes, 0, "rebuilt indexes were stored");
}

#[test]
fn leftover_temp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 5, true);
    std::fs::write(dir.path().join("leader-epoch-checkpoint.tmp"), b"junk").unwrap();
    let (report, _, _) = reopen(dir.path());
    assert_eq!(report.removed_temp_files, 1);
    assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
}

#[test]
fn stale_clean_marker_falls_back_to_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20, true);
    let marker = std::fs::read(dir.path().join("clean-shutdown")).unwrap();
    // Reopen and append more without a clean close, then put the old marker back.
    let written = with_log(dir.path(), small_config(), move |log| async move {
        append_values(&log, &values("more", 3), 0).await;
        let all = read_all(&log, 0).await;
        log.abandon().await;
        all
    });
    std::fs::write(dir.path().join("clean-shutdown"), marker).unwrap();
    let (report, snapshot, all) = reopen(dir.path());
    assert!(!report.clean, "marker no longer matches the log's last batch");
    assert_eq!(snapshot.log_end_offset, written.len() as u64);
    assert_eq!(all, written);
}

fn ringlog_binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringlog")
}

#[test]
fn check_reports_damage_as_json_and_repair_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let partition = dir.path().join("topics").join("t").join("0");
    fill(&partition, 300, true);
    let output = Command::new(ringlog_binary()).args(["check", "--json"]).arg(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["partitions"], 1);
    assert!(report["batches"].as_u64().unwrap() == 300);
    let files = segment_files(&partition);
    let damaged = partition.join(&files[1]);
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[500] ^= 0xFF;
    std::fs::write(&damaged, bytes).unwrap();
    let output = Command::new(ringlog_binary()).args(["check", "--json"]).arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let error = &report["errors"][0];
    assert_eq!(error["path"], damaged.display().to_string());
    assert!(error["position"].as_u64().unwrap() <= 500);
    assert!(error["reason"].as_str().unwrap().contains("sealed segment"));
    let output = Command::new(ringlog_binary()).args(["check", "--repair"]).arg(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let output = Command::new(ringlog_binary()).args(["check", "--json"]).arg(dir.path()).output().unwrap();
    assert!(output.status.success(), "clean after repair: {}", String::from_utf8_lossy(&output.stdout));
    let (_, snapshot, _) = reopen(&partition);
    assert!(snapshot.fence.is_none());
}

#[test]
fn check_on_a_missing_directory_is_one_error_line_and_exit_1() {
    let output = Command::new(ringlog_binary()).args(["check", "/nonexistent/ringlog"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    let output = Command::new(ringlog_binary()).args(["check"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "usage error");
}

/// Damage applied to the tail of the last segment.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Garble(usize, u8),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever happens to the log, recovery keeps exactly the batches that
    /// lie wholly before the damage, with dense offsets. Damage within the
    /// writer's in-flight window of the written end (a torn write) is
    /// truncated; a garbled batch with the log going on past that window is
    /// corruption: fenced, every byte left in place.
    #[test]
    fn recovery_yields_exactly_the_intact_prefix(
        sizes in proptest::collection::vec(1usize..12, 1..40),
        damage_at in 0.0f64..1.0,
        garble in any::<bool>(),
        byte in 1u8..=255,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let sizes_for_log = sizes.clone();
        let (batch_ends, log_end) = on_executor(move || async move {
            let log = PartitionLog::open(&path, ringlog::storage::StorageConfig { segment_bytes: 1 << 30, ..small_config() }, None).await.unwrap();
            let mut ends = Vec::new();
            let mut position = 0u64;
            for (i, &count) in sizes_for_log.iter().enumerate() {
                let batch_values = values(&format!("p{i}"), count);
                let encoded = crate::common::batch_of(&batch_values, 0);
                position += encoded.len() as u64;
                let info = append_values(&log, &batch_values, 0).await;
                ends.push((position, info.next_offset));
            }
            let end = log.snapshot().log_end_offset;
            log.abandon().await;
            (ends, end)
        });
        let segment = last_segment(dir.path());
        let mut bytes = std::fs::read(&segment).unwrap();
        let valid = batch_ends.last().unwrap().0 as usize;
        let mut point = ((valid as f64) * damage_at) as usize;
        // The leader epoch (bytes 12..16 of a header) sits outside the CRC by
        // design, like Kafka's, so the leader can stamp it; move such points
        // onto the CRC field instead.
        let batch_start = batch_ends.iter().map(|&(end, _)| end as usize).take_while(|&end| end <= point).last().unwrap_or(0);
        if garble && (12..16).contains(&(point - batch_start)) {
            point = batch_start + 16;
        }
        let damage = if garble { Damage::Garble(point, byte) } else { Damage::Truncate(point) };
        match damage {
            Damage::Truncate(at) => bytes.truncate(at),
            Damage::Garble(at, value) => bytes[at] ^= value,
        }
        std::fs::write(&segment, &bytes).unwrap();
        let expected_end = batch_ends.iter().take_while(|(end, _)| *end as usize <= point).last().map_or(0, |&(_, offset)| offset);
        // A crash tears at most what the writer had in flight (all its
        // buffers): damage that far before the written end is corruption.
        let window = (small_config().max_write_buffers + 1) * small_config().write_buffer_bytes;
        let written_end = bytes.iter().rposition(|&byte| byte != 0).map_or(0, |last| last + 1);
        let damaged_block = batch_start - batch_start % 4096;
        let beyond_window = written_end.saturating_sub(damaged_block) > window;
        let last_batch_start = batch_ends.len().checked_sub(2).map_or(0, |i| batch_ends[i].0 as usize);
        let (_, snapshot, all) = reopen(dir.path());
        // A garbled batch with whole batches after it was fully written:
        // corruption, inside the torn window or beyond it.
        let _ = beyond_window;
        if garble && point < last_batch_start {
            prop_assert!(snapshot.fence.is_some());
            prop_assert_eq!(snapshot.log_end_offset, expected_end);
            prop_assert_eq!(std::fs::read(&segment).unwrap(), bytes);
            return Ok(());
        }
        prop_assert!(snapshot.fence.is_none());
        prop_assert_eq!(snapshot.log_end_offset, expected_end);
        prop_assert!(expected_end <= log_end);
        prop_assert_eq!(all.len() as u64, expected_end);
        for (index, (offset, _)) in all.iter().enumerate() {
            prop_assert_eq!(*offset, index as u64);
        }
    }
}

/// Whether `dir` is on ext4, which reports unwritten extents as holes.
fn on_ext4(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs writes only into `stats`; `name` is NUL-terminated.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(name.as_ptr(), &mut stats) }, 0);
    stats.f_type == 0xEF53
}

/// `data_bytes` written, then space reserved (unwritten) up to `file_bytes`.
fn written_then_reserved(path: &Path, data_bytes: usize, file_bytes: i64) {
    use std::os::fd::AsRawFd;
    std::fs::write(path, vec![0xAB; data_bytes]).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    // SAFETY: fallocate on a descriptor this function owns.
    assert_eq!(unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, file_bytes) }, 0);
    file.sync_all().unwrap();
}

#[test]
fn recovery_maps_a_segment_only_up_to_its_last_data() {
    let dir = tempfile::tempdir().unwrap();
    let (reserved, written) = (dir.path().join("reserved.log"), dir.path().join("written.log"));
    written_then_reserved(&reserved, 8192, 1 << 20);
    written_then_reserved(&written, 1 << 20, 1 << 20);
    let map = ringlog::storage::recovery::map_segment(&reserved, MapAccess::Scan).unwrap().unwrap();
    assert_eq!(map.len(), 1 << 20, "the whole file is mapped");
    if on_ext4(dir.path()) {
        // A recycled segment is a gigabyte of this: never searched.
        assert_eq!(map.data_end, 8192, "the unwritten megabyte after the data is known zero");
    } else {
        assert!(map.data_end == 8192 || map.data_end == 1 << 20, "{}", map.data_end);
    }
    let whole = ringlog::storage::recovery::map_segment(&written, MapAccess::Scan).unwrap().unwrap();
    assert_eq!((whole.len(), whole.data_end), (1 << 20, 1 << 20), "a fully written file is data to its end");
    assert!(whole.iter().all(|&byte| byte == 0xAB));
    let empty = dir.path().join("empty.log");
    written_then_reserved(&empty, 0, 1 << 20);
    let unwritten = ringlog::storage::recovery::map_segment(&empty, MapAccess::Scan).unwrap().unwrap();
    assert!(!on_ext4(dir.path()) || unwritten.data_end == 0, "only unwritten space: no data");
}

#[test]
fn a_batch_whose_zeros_a_sparse_copy_made_a_hole_survives_a_crash_recovery() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p0");
    let config =
        ringlog::storage::StorageConfig { segment_bytes: 1 << 20, max_batch_bytes: 64 * 1024, ..small_config() };
    let zeros = "\0".repeat(20_000);
    let expected = vec![(0, "first".to_string()), (1, zeros.clone())];
    let written = with_log(&path, config.clone(), move |log| async move {
        append_values(&log, &["first".to_string()], 1).await;
        let appended = append_values(&log, &[zeros], 2).await;
        log.abandon().await;
        appended.next_offset
    });
    assert_eq!(written, 2);
    // What `cp --sparse=always` or a compressing file system does with the
    // zeros at the end of the last batch: a hole.
    let segment = last_segment(&path);
    let end = valid_bytes(&segment) as i64;
    let (hole_start, hole_end) = ((end - 16_000 + 4095) / 4096 * 4096, (end + 4095) / 4096 * 4096);
    let bytes = std::fs::read(&segment).unwrap();
    assert!(bytes[hole_start as usize..hole_end as usize].iter().all(|&byte| byte == 0), "zeros only");
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a descriptor this test owns.
    assert_eq!(unsafe { libc::fallocate(file.as_raw_fd(), mode, hole_start, hole_end - hole_start) }, 0);
    file.sync_all().unwrap();
    // Reading the file above cached its unwritten tail, which ext4 then
    // reports as data: drop it, as after a restart.
    // SAFETY: fadvise on a descriptor this test owns.
    assert_eq!(unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
    let map = ringlog::storage::recovery::map_segment(&segment, MapAccess::Scan).unwrap().unwrap();
    assert!(!on_ext4(dir.path()) || map.data_end < end as usize, "the batch's end is a hole: {}", map.data_end);
    drop(map);
    let records = with_log(&path, config, move |log| async move {
        assert!(!log.recovery_report().clean, "the crash path scans the segment");
        read_all(&log, 0).await
    });
    let lengths: Vec<usize> = records.iter().map(|(_, value)| value.len()).collect();
    assert!(records == expected, "the batch is whole, not cut at its hole: value lengths {lengths:?}");
}

/// (resident, total) pages of the file at `path` in the page cache.
fn resident_pages(path: &Path) -> (usize, usize) {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: a read-only map of a file no one writes while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
    let pages = map.len().div_ceil(4096);
    let mut residency = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `map.len()` bytes and `residency`
    // has a byte for each of its pages.
    let result = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, map.len(), residency.as_mut_ptr()) };
    assert_eq!(result, 0);
    (residency.iter().filter(|&&page| page & 1 == 1).count(), pages)
}

#[test]
fn a_clean_restart_reads_only_the_headers_of_the_active_segment() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p0");
    let config = ringlog::storage::StorageConfig {
        segment_bytes: 64 << 20,
        max_batch_bytes: 1 << 20,
        write_buffer_bytes: 1 << 20,
        ..small_config()
    };
    let reopened_config = config.clone();
    with_log(&path, config, move |log| async move {
        for round in 0..160 {
            // About 100 KB a batch: 16 MB in the active segment.
            append_values(&log, &values(&format!("b{round}"), 1000), round).await;
        }
        log.close().await.unwrap();
    });
    let segment = last_segment(&path);
    let file = std::fs::File::open(&segment).unwrap();
    // SAFETY: fadvise on a descriptor this test owns.
    assert_eq!(unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
    assert!(resident_pages(&segment).0 < 16, "the segment starts out of the page cache");
    let reopened_path = path.clone();
    let clean = on_executor(move || async move {
        let log = PartitionLog::open(&reopened_path, reopened_config, None).await.unwrap();
        let clean = log.recovery_report().clean;
        // Read-ahead the open asked for would be under way by now.
        ringlog::runtime::sleep(std::time::Duration::from_millis(300)).await;
        log.close().await.unwrap();
        clean
    });
    assert!(clean, "the clean path");
    let (resident, total) = resident_pages(&segment);
    assert!(resident * 4 < total, "a clean restart read {resident} of the segment's {total} pages");
}
