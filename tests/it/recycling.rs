//! Segment recycling: retention keeps an expired segment's file, zeroed,
//! for the next roll to write into (so no blocks are freed and a `discard`
//! mount sends no discards), and nothing ever reads a recycled file as log.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringlog::storage::io::FaultOperation;
use ringlog::storage::retention::RetentionPolicy;
use ringlog::storage::{PartitionLog, StorageConfig, StorageError};

use crate::common::{
    append_values, batches_in_own_segments, hand_rolled_config, read_values, segment_files, values, with_faulty_log,
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
        faults.delay_reads(read_delay);
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
        faults.delay_reads(Duration::ZERO);
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
fn a_file_that_cannot_be_zeroed_is_freed_instead_of_kept() {
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
        assert_eq!(read_values(&log, 10).await, [values("s2", 5), values("next", 5)].concat());
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
