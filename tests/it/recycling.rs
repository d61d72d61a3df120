//! Segment recycling: retention keeps an expired segment's file, zeroed,
//! for the next roll to write into (so no blocks are freed and a `discard`
//! mount sends no discards), and nothing ever reads a recycled file as log.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlog::storage::io::{FaultInjector, FaultOperation};
use ringlog::storage::retention::RetentionPolicy;
use ringlog::storage::{PartitionLog, StorageConfig, StorageError};

use crate::common::{
    append_values, batches_in_own_segments, hand_rolled_config, read_values, recycled_files, segment_files, values,
    with_faulty_log,
};

/// Retention down to one byte: every sealed segment but the newest expires.
const TO_ONE_BYTE: RetentionPolicy = RetentionPolicy { retention_bytes: 1, retention_ms: 0 };

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn recycled_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.free"))
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// Segments 0, 5 and 10 sealed (five records each, "s0".."s2"), 15 active.
async fn three_sealed_segments(log: &PartitionLog) {
    batches_in_own_segments(log, 3, true).await;
    assert_eq!(segment_files(log.dir()).len(), 4);
}

#[test]
fn retention_keeps_an_expired_segment_file_zeroed_for_the_next_roll_to_write_into() {
    let dir = tempfile::tempdir().unwrap();
    let (path, config) = (dir.path().to_path_buf(), hand_rolled_config());
    with_faulty_log(dir.path(), config.clone(), move |log, _faults| async move {
        three_sealed_segments(&log).await;
        let kept_inode = inode(&segment_path(&path, 5));
        assert_eq!(log.apply_retention(TO_ONE_BYTE, 0).await.unwrap(), vec![0, 5]);
        let recycled = recycled_path(&path, 5);
        let bytes = std::fs::read(&recycled).expect("the newest expired segment's file is kept");
        assert!(!bytes.is_empty() && bytes.iter().all(|byte| *byte == 0), "and zeroed");
        assert!(!recycled_path(&path, 0).exists(), "one file is kept (max_recycled_segments = 1), the other freed");
        assert_eq!(segment_files(&path).len(), 2, "segments 10 and 15 are the log");
        append_values(&log, &values("next", 5), 20).await;
        log.roll().await.unwrap();
        assert_eq!(inode(&segment_path(&path, 20)), kept_inode, "the roll wrote into the kept file");
        assert!(!recycled.exists());
        assert_eq!(log.stats().recycled_segments_reused, 1, "counted for /metrics");
        let appended = append_values(&log, &values("reused", 5), 30).await;
        let expected = [values("s2", 5), values("next", 5), values("reused", 5)].concat();
        assert_eq!(read_values(&log, 10).await, expected);
        // A crash: recovery scans the reused file, zeros past its end included.
        log.abandon().await;
        let reopened = PartitionLog::open(&path, config, None).await.unwrap();
        assert_eq!(reopened.snapshot().log_end_offset, appended.next_offset);
        assert_eq!(read_values(&reopened, 10).await, expected);
        reopened.close().await.unwrap();
    });
}

#[test]
fn a_read_in_flight_when_retention_recycles_its_segment_answers_out_of_range_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // No tail cache: the read goes to the segment file.
    let config = StorageConfig { tail_cache_bytes: 0, ..hand_rolled_config() };
    with_faulty_log(dir.path(), config, move |log, faults| async move {
        three_sealed_segments(&log).await;
        let read_delay = Duration::from_secs(2);
        faults.delay_reads_of(&segment_path(&path, 5), read_delay);
        let started = Instant::now();
        let log = Rc::new(log);
        let reader = Rc::clone(&log);
        let read = ringlog::runtime::spawn_local(async move { reader.read(5, 8192, None).await });
        // The read has opened segment 5's file and waits to submit.
        ringlog::runtime::sleep(Duration::from_millis(100)).await;
        assert_eq!(log.apply_retention(TO_ONE_BYTE, 0).await.unwrap(), vec![0, 5]);
        assert!(recycled_path(&path, 5).exists(), "segment 5's file was recycled (zeroed) under the read");
        assert!(started.elapsed() < read_delay, "retention finished before the read reached the file");
        match read.await {
            Err(StorageError::OffsetOutOfRange { offset: 5, log_start_offset: 10, .. }) => {}
            other => panic!("a read of a segment retention took must answer out of range, got {other:?}"),
        }
        assert!(log.snapshot().fence.is_none(), "zeros read from a recycled file are not corruption");
        faults.delay_reads_of(&segment_path(&path, 5), Duration::ZERO);
        assert_eq!(read_values(&log, 10).await, values("s2", 5));
    });
}

#[test]
fn a_recycled_file_a_crash_left_is_deleted_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (path, config) = (dir.path().to_path_buf(), hand_rolled_config());
    with_faulty_log(dir.path(), config.clone(), move |log, _faults| async move {
        three_sealed_segments(&log).await;
        log.apply_retention(TO_ONE_BYTE, 0).await.unwrap();
        assert!(recycled_path(&path, 5).exists());
        log.abandon().await;
        // A crash before the zeroing leaves stale batches in it: never reused.
        let reopened = PartitionLog::open(&path, config, None).await.unwrap();
        assert!(!recycled_path(&path, 5).exists(), "recovery deleted the kept file");
        assert_eq!(reopened.snapshot().log_start_offset, 10);
        reopened.close().await.unwrap();
    });
}

#[test]
fn a_file_system_that_cannot_zero_gets_every_file_freed_and_is_not_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    with_faulty_log(dir.path(), hand_rolled_config(), move |log, faults| async move {
        three_sealed_segments(&log).await;
        // What a file system without FALLOC_FL_ZERO_RANGE answers.
        faults.fail_after(FaultOperation::Preallocate, 0, libc::EOPNOTSUPP);
        assert_eq!(log.apply_retention(TO_ONE_BYTE, 0).await.unwrap(), vec![0, 5]);
        faults.clear(FaultOperation::Preallocate);
        assert!(!recycled_path(&path, 5).exists(), "a file with stale batches is never kept");
        append_values(&log, &values("next", 5), 20).await;
        log.roll().await.unwrap();
        append_values(&log, &values("last", 5), 30).await;
        log.roll().await.unwrap();
        assert_eq!(log.apply_retention(TO_ONE_BYTE, 0).await.unwrap(), vec![10, 15]);
        assert!(!recycled_path(&path, 15).exists(), "zeroing was not tried again (it would succeed now)");
        assert_eq!(read_values(&log, 20).await, values("last", 5));
    });
}

#[test]
fn retention_keeps_at_most_max_recycled_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    with_faulty_log(dir.path(), two_kept_config(), move |log, _faults| async move {
        // Segments 0, 5, 10, 15 sealed, 20 active: 0, 5 and 10 expire.
        batches_in_own_segments(&log, 4, true).await;
        assert_eq!(log.apply_retention(TO_ONE_BYTE, 0).await.unwrap(), vec![0, 5, 10]);
        assert_eq!(recycled_files(&path), ["00000000000000000005.free", "00000000000000000010.free"]);
        append_values(&log, &values("more", 5), 20).await;
        log.roll().await.unwrap();
        assert_eq!(log.apply_retention(TO_ONE_BYTE, 0).await.unwrap(), vec![15]);
        assert_eq!(recycled_files(&path).len(), 2, "the pool never holds more than max_recycled_segments");
        append_values(&log, &values("most", 5), 30).await;
        log.roll().await.unwrap();
        assert_eq!(recycled_files(&path).len(), 1, "a roll takes one");
        append_values(&log, &values("last", 5), 40).await;
        log.roll().await.unwrap();
        assert!(recycled_files(&path).is_empty());
        assert_eq!(read_values(&log, 25).await, [values("most", 5), values("last", 5)].concat());
    });
}

/// Segments 0, 5, 10, 15 sealed and 20 active, then a retention pass
/// (0, 5 and 10 expire; 5 and 10 are to be kept) in which `operation`
/// fails with `errno` after `successes` more succeed.
async fn a_failed_pass(
    log: &PartitionLog,
    faults: &FaultInjector,
    operation: FaultOperation,
    successes: i64,
    errno: i32,
) {
    batches_in_own_segments(log, 4, true).await;
    faults.fail_after(operation, successes, errno);
    assert!(log.apply_retention(TO_ONE_BYTE, 0).await.is_err());
    faults.clear(operation);
}

/// Room for two kept files.
fn two_kept_config() -> StorageConfig {
    StorageConfig { max_recycled_segments: 2, ..hand_rolled_config() }
}

#[test]
fn a_retention_pass_that_fails_after_renaming_unlinks_what_it_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    with_faulty_log(dir.path(), two_kept_config(), move |log, faults| async move {
        // The pass's first metadata check passes; the epoch checkpoint,
        // after 5 and 10 were renamed, finds the disk full.
        a_failed_pass(&log, &faults, FaultOperation::Metadata, 1, libc::ENOSPC).await;
        assert!(recycled_files(&path).is_empty(), "their space is given back, not stranded");
        assert_eq!(log.apply_retention(TO_ONE_BYTE, 0).await.unwrap(), vec![0, 5, 10]);
        assert!(recycled_files(&path).is_empty());
        assert_eq!(segment_files(&path).len(), 2);
    });
}

#[test]
fn a_file_a_failed_pass_could_not_unlink_is_taken_up_by_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    with_faulty_log(dir.path(), two_kept_config(), move |log, faults| async move {
        // Unlinks and renames in order: 0's index, time index, log file and
        // `.free` (none), 5's two indexes and its rename, 10's two indexes;
        // then 10's rename fails, and so does every unlink after it, the
        // renamed file's included.
        a_failed_pass(&log, &faults, FaultOperation::Unlink, 9, libc::EIO).await;
        assert_eq!(recycled_files(&path), ["00000000000000000005.free"], "left by the failed pass");
        assert_eq!(log.apply_retention(TO_ONE_BYTE, 0).await.unwrap(), vec![0, 5, 10]);
        assert_eq!(
            recycled_files(&path),
            ["00000000000000000005.free", "00000000000000000010.free"],
            "zeroed and kept by the next pass, not leaked"
        );
        append_values(&log, &values("more", 5), 20).await;
        log.roll().await.unwrap();
        append_values(&log, &values("most", 5), 30).await;
        log.roll().await.unwrap();
        assert!(recycled_files(&path).is_empty(), "both rolls took one");
        assert_eq!(read_values(&log, 15).await, [values("s3", 5), values("more", 5), values("most", 5)].concat());
    });
}

#[test]
fn with_no_recycled_segments_allowed_retention_frees_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = StorageConfig { max_recycled_segments: 0, ..hand_rolled_config() };
    with_faulty_log(dir.path(), config, move |log, _faults| async move {
        three_sealed_segments(&log).await;
        assert_eq!(log.apply_retention(TO_ONE_BYTE, 0).await.unwrap(), vec![0, 5]);
        assert!(!recycled_path(&path, 0).exists() && !recycled_path(&path, 5).exists());
    });
}

#[test]
fn a_roll_that_finds_the_disk_full_gives_the_kept_file_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    with_faulty_log(dir.path(), hand_rolled_config(), move |log, faults| async move {
        three_sealed_segments(&log).await;
        log.apply_retention(TO_ONE_BYTE, 0).await.unwrap();
        append_values(&log, &values("next", 5), 20).await;
        faults.fail_after(FaultOperation::Metadata, 0, libc::ENOSPC);
        assert!(matches!(log.roll().await, Err(StorageError::DiskFull { .. })));
        faults.clear(FaultOperation::Metadata);
        assert!(!recycled_path(&path, 5).exists(), "a full disk gets the kept file's space back");
        log.roll().await.unwrap();
        append_values(&log, &values("after", 5), 30).await;
        assert_eq!(read_values(&log, 10).await, [values("s2", 5), values("next", 5), values("after", 5)].concat());
    });
}

/// Start a read of offset 10 that opens segment 10's file and then waits
/// 2 s before each step (the read starting at the returned instant);
/// meanwhile a divergent suffix cut takes 10 and 15, and new records up to
/// 10 and a roll there bring segment 10 back in a new file, with more
/// records ("newer") after it.
async fn read_of_ten_while_ten_is_rewritten(
    log: &Rc<PartitionLog>,
    faults: &FaultInjector,
    path: &Path,
) -> (ringlog::runtime::Task<Result<ringlog::storage::ReadBatches, StorageError>>, Instant) {
    faults.delay_reads_of(&segment_path(path, 10), Duration::from_secs(2));
    let started = Instant::now();
    let reader = Rc::clone(log);
    let read = ringlog::runtime::spawn_local(async move { reader.read(10, 8192, None).await });
    ringlog::runtime::sleep(Duration::from_millis(100)).await;
    assert_eq!(log.truncate_to(5).await.unwrap(), 5);
    append_values(log, &values("new", 5), 20).await;
    log.roll().await.unwrap();
    append_values(log, &values("newer", 5), 30).await;
    (read, started)
}

#[test]
fn a_read_in_flight_across_a_truncation_never_serves_the_records_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = StorageConfig { tail_cache_bytes: 0, ..hand_rolled_config() };
    with_faulty_log(dir.path(), config, move |log, faults| async move {
        three_sealed_segments(&log).await;
        let log = Rc::new(log);
        let (read, started) = read_of_ten_while_ten_is_rewritten(&log, &faults, &path).await;
        assert!(started.elapsed() < Duration::from_secs(2), "all of it before the read reached the old file");
        match read.await {
            Err(StorageError::Io { .. }) => {}
            other => panic!("a read of a file a truncation removed must be retried, got {other:?}"),
        }
        faults.delay_reads_of(&segment_path(&path, 10), Duration::ZERO);
        assert_eq!(read_values(&log, 10).await, values("newer", 5), "the cut records are gone");
    });
}

#[test]
fn a_roll_that_fails_after_taking_the_kept_file_leaves_no_segment_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (path, config) = (dir.path().to_path_buf(), hand_rolled_config());
    with_faulty_log(dir.path(), config.clone(), move |log, faults| async move {
        three_sealed_segments(&log).await;
        log.apply_retention(TO_ONE_BYTE, 0).await.unwrap();
        append_values(&log, &values("next", 5), 20).await;
        // The index files are written and the kept file renamed to 20.log;
        // the recovery point then finds the disk full.
        faults.fail_after(FaultOperation::Metadata, 1, libc::ENOSPC);
        assert!(matches!(log.roll().await, Err(StorageError::DiskFull { .. })));
        faults.clear(FaultOperation::Metadata);
        assert!(!segment_path(&path, 20).exists(), "the failed roll's file is gone");
        assert!(!recycled_path(&path, 5).exists());
        // The log goes on in segment 15, past offset 20.
        append_values(&log, &values("after", 5), 30).await;
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, config, None).await.unwrap();
        assert!(reopened.snapshot().fence.is_none(), "no file lies inside segment 15's offsets");
        assert_eq!(read_values(&reopened, 15).await, [values("next", 5), values("after", 5)].concat());
        reopened.close().await.unwrap();
    });
}

/// [`three_sealed_segments`], then the log closed and opened again: no
/// reader is cached, so a read of a sealed segment opens its file.
async fn sealed_and_reopened(
    log: PartitionLog,
    path: &Path,
    config: StorageConfig,
    faults: &Arc<FaultInjector>,
) -> Rc<PartitionLog> {
    three_sealed_segments(&log).await;
    log.close().await.unwrap();
    Rc::new(PartitionLog::open(path, config, Some(Arc::clone(faults))).await.unwrap())
}

#[test]
fn a_file_opened_for_a_read_while_a_truncation_replaced_it_is_never_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = StorageConfig { tail_cache_bytes: 0, ..hand_rolled_config() };
    with_faulty_log(dir.path(), config.clone(), move |log, faults| async move {
        let log = sealed_and_reopened(log, &path, config, &faults).await;
        let (read, started) = read_of_ten_while_ten_is_rewritten(&log, &faults, &path).await;
        // Segment 10 sealed again (its reader cached by the roll).
        log.roll().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "all of it before the open returned");
        assert!(read.await.is_err(), "the log changed under that read");
        faults.delay_reads_of(&segment_path(&path, 10), Duration::ZERO);
        assert_eq!(read_values(&log, 10).await, values("newer", 5), "the old file was not cached for later reads");
    });
}

#[test]
fn a_read_in_flight_when_its_log_is_abandoned_answers_closed_and_serves_nothing_of_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = StorageConfig { tail_cache_bytes: 0, ..hand_rolled_config() };
    with_faulty_log(dir.path(), config.clone(), move |log, faults| async move {
        let log = sealed_and_reopened(log, &path, config, &faults).await;
        let read_delay = Duration::from_secs(2);
        faults.delay_reads_of(&segment_path(&path, 10), read_delay);
        let started = Instant::now();
        let reader = Rc::clone(&log);
        let read = ringlog::runtime::spawn_local(async move { reader.read(10, 8192, None).await });
        ringlog::runtime::sleep(Duration::from_millis(100)).await;
        // A deleted topic's partition: abandoned, and its path free for a
        // new topic of the same name as soon as this returns.
        log.abandon().await;
        assert!(started.elapsed() < read_delay, "abandoned before the read reached the file");
        match read.await {
            Err(StorageError::Closed(_)) => {}
            other => panic!("a read resumed after its log was abandoned must answer closed, got {other:?}"),
        }
    });
}
