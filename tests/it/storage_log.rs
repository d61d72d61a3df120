//! Partition log behaviour on real files: append/read, rolling, indexes,
//! timestamps, truncation, retention, epochs, consumer offsets, group commit.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ringlog::storage::offsets::OffsetLookup;
use ringlog::storage::retention::RetentionPolicy;
use ringlog::storage::{AppendMode, FsyncPolicy, PartitionLog, StorageConfig, StorageError};

use crate::common::{
    abandon_and_reopen, append_values, batch_of, batches_in_own_segments, close_and_reopen, close_or_abandon,
    hand_rolled_config, on_executor, read_all, read_values, records_of, segment_files, small_config, values,
    with_faulty_log, with_log, with_reopenable_log,
};

#[test]
fn appended_records_read_back_with_dense_offsets_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p0");
    let segments = with_log(&path, small_config(), move |log| async move {
        let mut expected = Vec::new();
        for round in 0..200 {
            let batch = values(&format!("r{round}"), 1 + round % 5);
            let info = append_values(&log, &batch, 1000 + round as i64).await;
            assert_eq!(info.base_offset, expected.len() as u64, "offsets are dense");
            for value in batch {
                expected.push((expected.len() as u64, value));
            }
        }
        assert_eq!(read_all(&log, 0).await, expected);
        assert_eq!(read_all(&log, 123).await, expected[123..].to_vec());
        let snapshot = log.snapshot();
        assert_eq!(snapshot.log_end_offset, expected.len() as u64);
        assert_eq!(snapshot.durable_end_offset, expected.len() as u64);
        log.close().await.unwrap();
        snapshot.segments
    });
    assert!(segments > 3, "small segment_bytes must roll, got {segments} segments");
    let files = segment_files(&dir.path().join("p0"));
    assert_eq!(files.len(), segments);
    assert_eq!(files[0], "00000000000000000000.log");
}

#[test]
fn appends_after_reopen_continue_the_partial_last_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    on_executor(move || async move {
        let config = ringlog::storage::StorageConfig { segment_bytes: 1 << 20, ..small_config() };
        let mut expected = Vec::new();
        for reopen in 0..6 {
            let log = PartitionLog::open(&path, config.clone(), None).await.unwrap();
            // An odd number of bytes per batch keeps the end off block boundaries.
            for round in 0..(3 + reopen) {
                let batch = values(&format!("o{reopen}-{round}"), 1 + round % 3);
                let _ = append_values(&log, &batch, 0).await;
                expected.extend(batch);
            }
            let position = log.snapshot().size_bytes;
            assert_ne!(position % 4096, 0, "test wants an unaligned end");
            close_or_abandon(log, reopen % 2 == 0).await;
        }
        let log = PartitionLog::open(&path, config, None).await.unwrap();
        let values: Vec<String> = read_values(&log, 0).await;
        assert_eq!(values, expected, "every reopen kept the partial block intact");
        log.close().await.unwrap();
    });
}

#[test]
fn read_respects_max_bytes_but_returns_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    with_log(&path, small_config(), move |log| async move {
        for round in 0..10 {
            append_values(&log, &values(&format!("b{round}"), 10), 0).await;
        }
        let one = log.read(0, 1, None).await.unwrap();
        assert_eq!(one.batch_count, 1);
        assert_eq!(one.next_offset, 10);
        let some = log.read(15, 2000, None).await.unwrap();
        assert!(some.batch_count >= 1 && some.bytes.len() <= 2000 + 1000);
        assert_eq!(&some.bytes[0..8], &10u64.to_le_bytes(), "starts with the batch holding offset 15");
        let past_end = log.read(100, 1000, None).await.unwrap();
        assert_eq!(past_end.batch_count, 0);
        assert!(matches!(log.read(101, 1000, None).await, Err(StorageError::OffsetOutOfRange { .. })));
        let limited = log.read(0, 1 << 20, Some(20)).await.unwrap();
        assert_eq!(limited.next_offset, 20, "max_offset bounds the read");
        log.close().await.unwrap();
    });
}

#[test]
fn timestamp_lookup_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    with_reopenable_log(&path, small_config(), move |log, path| async move {
        for round in 0..100i64 {
            // Each batch has 3 records at timestamps 10*round, +1, +2.
            append_values(&log, &values("t", 3), round * 10).await;
        }
        assert_eq!(log.find_offset_by_timestamp(i64::MIN).await.unwrap(), Some(0));
        assert_eq!(log.find_offset_by_timestamp(0).await.unwrap(), Some(0));
        assert_eq!(log.find_offset_by_timestamp(1).await.unwrap(), Some(1));
        assert_eq!(log.find_offset_by_timestamp(3).await.unwrap(), Some(3));
        assert_eq!(log.find_offset_by_timestamp(505).await.unwrap(), Some(153));
        assert_eq!(log.find_offset_by_timestamp(992).await.unwrap(), Some(299));
        assert_eq!(log.find_offset_by_timestamp(993).await.unwrap(), None);
        // Same answers from the sealed, mmapped indexes after reopening.
        let log = close_and_reopen(log, &path, small_config()).await;
        assert_eq!(log.find_offset_by_timestamp(505).await.unwrap(), Some(153));
        assert_eq!(log.find_offset_by_timestamp(3).await.unwrap(), Some(3));
        log.close().await.unwrap();
    });
}

#[test]
fn truncate_removes_records_and_later_segments_then_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    with_reopenable_log(&path, small_config(), move |log, path| async move {
        for round in 0..150 {
            append_values(&log, &values(&format!("x{round}"), 4), 0).await;
        }
        let segments_before = log.snapshot().segments;
        // 4 records per batch: offset 202 is inside the batch starting at 200.
        let end = log.truncate_to(202).await.unwrap();
        assert_eq!(end, 200);
        let snapshot = log.snapshot();
        assert_eq!(snapshot.log_end_offset, 200);
        assert!(snapshot.segments < segments_before);
        let info = append_values(&log, &values("after", 2), 0).await;
        assert_eq!(info.base_offset, 200);
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 202);
        assert!(all[200].1.starts_with("after-00000-"));
        let log = close_and_reopen(log, &path, small_config()).await;
        assert_eq!(read_all(&log, 0).await, all, "truncation is durable");
        log.close().await.unwrap();
    });
}

#[test]
fn truncate_then_crash_never_resurrects_removed_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    with_reopenable_log(&path, small_config(), move |log, path| async move {
        for round in 0..10 {
            append_values(&log, &values(&format!("old{round}"), 2), 0).await;
        }
        log.truncate_to(10).await.unwrap();
        // Same sizes as the removed batches, so stale bytes would line up.
        for round in 5..10 {
            append_values(&log, &values(&format!("new{round}"), 1), 0).await;
        }
        let log = abandon_and_reopen(log, &path, small_config()).await;
        assert_eq!(log.snapshot().log_end_offset, 15);
        let all = read_all(&log, 0).await;
        assert!(all[10..].iter().all(|(_, value)| value.starts_with("new")));
        log.close().await.unwrap();
    });
}

/// What a leader checks before it sends a follower the body another one
/// was sent (`shard/sent_answer.rs`): the batches must still be the log's.
#[test]
fn batches_read_earlier_are_still_held_only_until_a_cut_retention_or_close() {
    let dir = tempfile::tempdir().unwrap();
    with_log(&dir.path().join("p"), small_config(), |log| async move {
        let mut ends = Vec::new();
        for round in 0..300 {
            ends.push(append_values(&log, &values(&format!("k{round}"), 3), round).await.next_offset);
        }
        let generation = log.generation();
        let end = log.snapshot().log_end_offset;
        assert!(log.still_holds(0, 3, generation) && log.still_holds(ends[200], end, generation));
        assert!(!log.still_holds(0, end + 3, generation), "past the written end");
        assert!(!log.still_holds(0, 3, generation + 1), "read under another generation");
        let policy = RetentionPolicy { retention_bytes: 60 * 1024, retention_ms: 0 };
        log.apply_retention(policy, 0).await.unwrap();
        assert!(!log.still_holds(0, 3, generation), "retention passed the offset");
        assert!(log.still_holds(ends[298], end, generation), "retention cuts no generation");
        log.truncate_to(ends[298]).await.unwrap();
        assert!(!log.still_holds(ends[298], ends[298], generation), "a truncation starts a generation");
        let generation = log.generation();
        assert!(log.still_holds(ends[297], ends[298], generation));
        log.close().await.unwrap();
        assert!(!log.still_holds(ends[297], ends[298], generation), "a closed log holds nothing");
    });
}

#[test]
fn retention_deletes_oldest_sealed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let check_path = path.clone();
    with_reopenable_log(&path, small_config(), move |log, path| async move {
        for round in 0..300 {
            append_values(&log, &values(&format!("k{round}"), 3), round).await;
        }
        let before = log.snapshot();
        let policy = RetentionPolicy { retention_bytes: 60 * 1024, retention_ms: 0 };
        let deleted = log.apply_retention(policy, 0).await.unwrap();
        assert!(!deleted.is_empty());
        let after = log.snapshot();
        assert!(after.size_bytes >= 60 * 1024 && after.size_bytes < 60 * 1024 + 16 * 1024, "{}", after.size_bytes);
        assert_eq!(after.segments, before.segments - deleted.len());
        assert_eq!(after.log_end_offset, before.log_end_offset);
        assert!(after.log_start_offset > 0);
        assert!(matches!(log.read(0, 100, None).await, Err(StorageError::OffsetOutOfRange { .. })));
        let kept = read_all(&log, after.log_start_offset).await;
        assert_eq!(kept.len() as u64, after.log_end_offset - after.log_start_offset);
        // Time retention with everything old deletes all sealed segments, never the active one.
        let policy = RetentionPolicy { retention_bytes: 0, retention_ms: 1 };
        log.apply_retention(policy, i64::MAX / 2).await.unwrap();
        let last = log.snapshot();
        assert_eq!(last.segments, 1);
        assert_eq!(last.log_end_offset, before.log_end_offset);
        let log = close_and_reopen(log, &path, small_config()).await;
        assert_eq!(log.snapshot().log_start_offset, last.log_start_offset);
        log.close().await.unwrap();
    });
    assert_eq!(segment_files(&check_path).len(), 1);
}

/// Wait (at most 10 s) until retention has begun its first unlink.
async fn first_unlink_started(faults: &ringlog::storage::io::FaultInjector) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while faults.attempts(ringlog::storage::io::FaultOperation::Unlink) == 0 {
        assert!(std::time::Instant::now() < deadline, "retention never began to unlink");
        ringlog::runtime::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// A retention pass running in a task of its own.
type RetentionTask = ringlog::runtime::Task<Result<Vec<u64>, StorageError>>;

/// Retention down to one byte, in a task of its own; the flag turns true
/// when it has finished.
fn spawn_retention_to_one_byte(log: &Rc<PartitionLog>) -> (RetentionTask, Rc<std::cell::Cell<bool>>) {
    let (log, finished) = (Rc::clone(log), Rc::new(std::cell::Cell::new(false)));
    let flag = Rc::clone(&finished);
    let task = ringlog::runtime::spawn_local(async move {
        let deleted = log.apply_retention(RetentionPolicy { retention_bytes: 1, retention_ms: 0 }, 0).await;
        flag.set(true);
        deleted
    });
    (task, finished)
}

#[test]
fn appends_and_rolls_go_on_while_retention_unlinks_expired_segments() {
    let dir = tempfile::tempdir().unwrap();
    with_faulty_log(dir.path(), hand_rolled_config(), |log, faults| async move {
        // Three segments, rolled by hand so the append below cannot roll.
        batches_in_own_segments(&log, 3, false).await;
        // Six unlinks of a second each: the append and the roll below have
        // five seconds, however slow this machine's fsyncs are today.
        faults.delay_unlinks(std::time::Duration::from_secs(1));
        let log = Rc::new(log);
        let (retention, finished) = spawn_retention_to_one_byte(&log);
        first_unlink_started(&faults).await;
        let appended = append_values(&log, &values("during", 2), 10).await;
        assert!(!finished.get(), "the append waited for retention's unlinks (6 s of them)");
        // A roll writes its index files on the shard's helper thread.
        log.roll().await.unwrap();
        assert!(!finished.get(), "the roll waited for retention's unlinks");
        let deleted = retention.await.unwrap();
        assert_eq!(deleted.len(), 2, "both sealed segments expired");
        let snapshot = log.snapshot();
        assert_eq!((snapshot.log_start_offset, snapshot.log_end_offset), (10, appended.next_offset));
        let kept = read_all(&log, snapshot.log_start_offset).await;
        assert_eq!(kept.last().map(|(_, value)| value.clone()), Some(values("during", 2)[1].clone()));
        log.close().await.unwrap();
    });
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "the expired segments' files are gone, the kept and the rolled stay"
    );
}

#[test]
fn an_epoch_begun_while_retention_unlinks_is_in_the_checkpoint_retention_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    with_faulty_log(dir.path(), hand_rolled_config(), |log, faults| async move {
        batches_in_own_segments(&log, 3, false).await;
        faults.delay_unlinks(std::time::Duration::from_millis(200));
        let log = Rc::new(log);
        let (retention, _) = spawn_retention_to_one_byte(&log);
        first_unlink_started(&faults).await;
        // Retention cloned the history (epoch 1 only) before it unlinked;
        // its store must not land after this one's.
        let mut batch = batch_of(&values("epoch2", 2), 20);
        let placed = log.append(&mut batch, AppendMode::Leader { leader_epoch: 2 }).await.unwrap();
        retention.await.unwrap();
        let stored = ringlog::storage::epochs::EpochHistory::load(&path).unwrap().expect("a checkpoint");
        assert_eq!(stored.entries(), &[(1, 10), (2, placed.base_offset)], "the checkpoint keeps epoch 2");
        log.close().await.unwrap();
    });
}

#[test]
fn close_and_abandon_return_only_once_retention_has_stopped_touching_the_directory() {
    for abandon in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        with_faulty_log(dir.path(), hand_rolled_config(), move |log, faults| async move {
            batches_in_own_segments(&log, 2, true).await;
            faults.delay_unlinks(std::time::Duration::from_millis(200));
            let log = Rc::new(log);
            let (retention, finished) = spawn_retention_to_one_byte(&log);
            first_unlink_started(&faults).await;
            // A deleted topic's directory is renamed away once abandon returns.
            match abandon {
                true => log.abandon().await,
                false => log.close().await.unwrap(),
            }
            assert!(finished.get(), "abandon={abandon} returned while retention still unlinked");
            assert_eq!(
                retention.await.unwrap().len(),
                1,
                "the newer sealed segment keeps the partition at its retention bytes"
            );
        });
    }
}

#[test]
fn segments_a_failed_retention_left_on_disk_are_removed_by_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = hand_rolled_config();
    let path = dir.path().to_path_buf();
    with_faulty_log(dir.path(), config.clone(), move |log, faults| async move {
        batches_in_own_segments(&log, 3, true).await;
        assert_eq!(segment_files(&path).len(), 4);
        let policy = RetentionPolicy { retention_bytes: 1, retention_ms: 0 };
        // The second unlink (the first segment's time index) fails.
        faults.fail_after(ringlog::storage::io::FaultOperation::Unlink, 1, libc::EIO);
        assert!(log.apply_retention(policy, 0).await.is_err());
        faults.clear(ringlog::storage::io::FaultOperation::Unlink);
        let start = log.snapshot().log_start_offset;
        assert_eq!(start, 10, "both expired segments left the log");
        assert_eq!(segment_files(&path).len(), 4, "their files are still there");
        // Nothing newly expired: the pass removes what the failed one left.
        let removed = log.apply_retention(policy, 0).await.unwrap();
        assert_eq!(removed, vec![0, 5]);
        assert_eq!(segment_files(&path).len(), 2, "the kept sealed segment and the active one");
        assert!(log.apply_retention(policy, 0).await.unwrap().is_empty(), "and only once");
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, config, None).await.unwrap();
        assert_eq!(reopened.snapshot().log_start_offset, 10, "no removed segment comes back after a restart");
        reopened.close().await.unwrap();
    });
}

#[test]
fn a_read_far_from_any_index_entry_still_finds_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    // One offset index entry per MiB: a read of offset 100 starts at the
    // segment's first batch and reads its way there in 64 KiB chunks, the
    // last of which cuts a batch that still lies below offset 100.
    let config = StorageConfig {
        segment_bytes: 4 << 20,
        preallocate_bytes: 4 << 20,
        index_interval_bytes: 1 << 20,
        ..small_config()
    };
    with_log(dir.path(), config.clone(), |log| async move {
        let padding = "v".repeat(1000);
        for round in 0..300 {
            append_values(&log, &[format!("{round:04}{padding}")], round).await;
        }
        log.roll().await.unwrap();
        append_values(&log, &values("next", 1), 300).await;
        log.close().await.unwrap();
    });
    // Reopened: nothing in the tail cache or read ahead, every read from disk.
    with_log(dir.path(), config, |log| async move {
        for (offset, max_bytes) in [(100, 1000), (150, 0), (299, 64 * 1024)] {
            let read = log.read(offset, max_bytes, None).await.unwrap();
            let records = records_of(&read.bytes, offset);
            let first = records.first().unwrap_or_else(|| panic!("read({offset}, {max_bytes}) answered empty"));
            assert_eq!(first.0, offset, "read({offset}, {max_bytes})");
            assert!(first.1.starts_with(&format!("{offset:04}")), "read({offset}, {max_bytes}) gave {:.8}", first.1);
        }
        log.close().await.unwrap();
    });
}

#[test]
fn time_based_roll_starts_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let config = StorageConfig { segment_ms: 50, ..small_config() };
    with_log(&path, config, move |log| async move {
        append_values(&log, &values("a", 1), 0).await;
        ringlog::runtime::sleep(std::time::Duration::from_millis(80)).await;
        append_values(&log, &values("b", 1), 0).await;
        assert_eq!(log.snapshot().segments, 2);
        log.close().await.unwrap();
    });
}

#[test]
fn leader_epochs_are_recorded_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    with_reopenable_log(&path, small_config(), move |log, path| async move {
        for (epoch, count) in [(1u32, 3usize), (2, 2), (5, 4)] {
            for _ in 0..count {
                let mut batch = batch_of(&values("e", 2), 0);
                let _ = log.append(&mut batch, AppendMode::Leader { leader_epoch: epoch }).await.unwrap();
            }
        }
        assert_eq!(log.epochs().entries(), &[(1, 0), (2, 6), (5, 10)]);
        assert_eq!(log.epochs().end_offset_for(2, 18), Some((2, 10)));
        let mut stale = batch_of(&values("stale", 1), 0);
        assert!(log.append(&mut stale, AppendMode::Leader { leader_epoch: 4 }).await.is_err(), "older epoch refused");
        let log = abandon_and_reopen(log, &path, small_config()).await;
        assert_eq!(log.epochs().entries(), &[(1, 0), (2, 6), (5, 10)]);
        log.truncate_to(8).await.unwrap();
        assert_eq!(log.epochs().entries(), &[(1, 0), (2, 6)]);
        log.close().await.unwrap();
    });
}

#[test]
fn replica_appends_keep_leader_offsets_and_reject_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    with_log(&path, small_config(), move |log| async move {
        let mut batch = batch_of(&values("r", 3), 0);
        ringlog::storage::batch::stamp_batch(&mut batch, 0, 7);
        let info = log.append(&mut batch, AppendMode::Replica).await.unwrap();
        assert_eq!((info.base_offset, info.next_offset), (0, 3));
        let mut gap = batch_of(&values("g", 1), 0);
        ringlog::storage::batch::stamp_batch(&mut gap, 10, 7);
        assert!(matches!(log.append(&mut gap, AppendMode::Replica).await, Err(StorageError::OffsetOutOfRange { .. })));
        assert_eq!(log.epochs().latest_epoch(), Some(7));
        log.close().await.unwrap();
    });
}

/// A deleted topic's partitions are abandoned, then its directory is
/// renamed away and a new topic of its name may take the path: a commit
/// in flight must finish before `abandon` returns, and nothing of the
/// abandoned log (retention, a commit) may write or unlink there after.
#[test]
fn an_abandoned_log_waits_for_work_in_flight_and_never_touches_its_directory_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let listed = path.clone();
    with_log(&path, small_config(), move |log| async move {
        for round in 0..300 {
            append_values(&log, &values(&format!("k{round}"), 3), round).await;
        }
        assert!(log.snapshot().segments > 2, "sealed segments for retention to find");
        let committed = Rc::new(std::cell::Cell::new(false));
        let (committing, done) = (log.clone(), Rc::clone(&committed));
        let commit = ringlog::runtime::spawn_local(async move {
            committing.commit_offset("in-flight", 5).await.unwrap();
            done.set(true);
        });
        // The commit takes the offsets gate and waits on its write.
        ringlog::runtime::yield_now().await;
        log.abandon().await;
        assert!(committed.get(), "abandon returned while a commit was still writing");
        commit.await;
        let files_before = directory_listing(&listed);
        let everything_old = RetentionPolicy { retention_bytes: 1, retention_ms: 1 };
        assert_eq!(log.apply_retention(everything_old, i64::MAX / 2).await.unwrap(), Vec::<u64>::new());
        assert!(matches!(log.commit_offset("late", 6).await, Err(StorageError::Closed(_))));
        assert_eq!(directory_listing(&listed), files_before, "the abandoned log changed its directory");
    });
}

/// Every file name and size under `dir`.
fn directory_listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().to_string(), entry.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn consumer_offsets_persist_and_report_out_of_range_after_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    with_reopenable_log(&path, small_config(), move |log, path| async move {
        for _ in 0..10 {
            append_values(&log, &values("c", 2), 0).await;
        }
        log.commit_offset("group-a", 12).await.unwrap();
        log.commit_offset("group-b", 20).await.unwrap();
        assert_eq!(log.committed_offset("group-a"), OffsetLookup::Valid(12));
        let log = close_and_reopen(log, &path, small_config()).await;
        assert_eq!(log.committed_offset("group-a"), OffsetLookup::Valid(12));
        assert_eq!(log.committed_offset("nobody"), OffsetLookup::None);
        // Lose data past 10: group-b's committed 20 is now beyond the log end.
        log.truncate_to(10).await.unwrap();
        let log = close_and_reopen(log, &path, small_config()).await;
        assert_eq!(
            log.committed_offset("group-b"),
            OffsetLookup::OutOfRange { committed: 20, log_start_offset: 0, log_end_offset: 10 }
        );
        // Resetting is an explicit commit.
        log.commit_offset("group-b", 10).await.unwrap();
        assert_eq!(log.committed_offset("group-b"), OffsetLookup::Valid(10));
        assert!(log.commit_offset("", 1).await.is_err(), "empty group name refused");
        log.close().await.unwrap();
    });
}

#[test]
fn concurrent_appends_share_fsyncs_under_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let config = StorageConfig { fsync: FsyncPolicy::Always, ..StorageConfig::default() };
    let (appends, fsyncs) = with_log(&path, config, move |log| async move {
        let log = Rc::new(log);
        let before = log.stats().fsyncs;
        let mut tasks = Vec::new();
        for appender in 0..16 {
            let log = Rc::clone(&log);
            tasks.push(ringlog::runtime::spawn_local(async move {
                for round in 0..50 {
                    append_values(&log, &values(&format!("g{appender}-{round}"), 5), 0).await;
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let fsyncs = log.stats().fsyncs - before;
        assert_eq!(log.snapshot().durable_end_offset, 16 * 50 * 5);
        assert_eq!(read_all(&log, 0).await.len(), 16 * 50 * 5);
        log.close().await.unwrap();
        (16 * 50u64, fsyncs)
    });
    assert!(fsyncs > 0);
    assert!(fsyncs * 2 < appends, "16 concurrent appenders should share fsyncs: {fsyncs} fsyncs for {appends} appends");
}

#[test]
fn interval_and_never_policies_acknowledge_after_write_and_sync_later() {
    for policy in [FsyncPolicy::Interval, FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("p");
        let config = StorageConfig { fsync: policy, fsync_interval_ms: 20, ..small_config() };
        let fsyncs = with_log(&path, config, move |log| async move {
            for _ in 0..20 {
                append_values(&log, &values("i", 3), 0).await;
            }
            assert_eq!(log.snapshot().durable_end_offset, 60);
            ringlog::runtime::sleep(std::time::Duration::from_millis(100)).await;
            let fsyncs = log.stats().fsyncs;
            log.close().await.unwrap();
            fsyncs
        });
        match policy {
            FsyncPolicy::Interval => assert!(fsyncs >= 1, "interval policy fsyncs on its timer"),
            _ => assert_eq!(fsyncs, 0, "never policy leaves fsync to the OS until close"),
        }
    }
}

#[test]
fn malformed_batches_are_rejected_without_touching_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    with_log(&path, small_config(), move |log| async move {
        let mut damaged = batch_of(&values("m", 2), 0);
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let result = log.append(&mut damaged, AppendMode::Leader { leader_epoch: 1 }).await;
        assert!(matches!(result, Err(StorageError::InvalidBatch(_))));
        let mut oversized = batch_of(&["z".repeat(9 * 1024)], 0);
        assert!(log.append(&mut oversized, AppendMode::Leader { leader_epoch: 1 }).await.is_err());
        assert_eq!(log.snapshot().log_end_offset, 0);
        append_values(&log, &values("ok", 1), 0).await;
        log.close().await.unwrap();
    });
}

/// A batch this node built (a Kafka client's records, transcoded) is
/// appended without its records being checked again, but under the same
/// size limit and with offsets and epoch stamped like any leader batch.
#[test]
fn a_built_batch_is_stamped_and_read_back_and_its_size_still_limited() {
    let dir = tempfile::tempdir().unwrap();
    with_log(&dir.path().join("p"), small_config(), move |log| async move {
        append_values(&log, &values("client", 3), 0).await;
        let build = |values: &[String]| {
            let mut builder = ringlog::storage::batch::BatchBuilder::new();
            for value in values {
                builder.push(5, Some(b"key"), value.as_bytes(), &[("h", b"v")]);
            }
            builder.into_built()
        };
        let mut built = build(&values("built", 4));
        let placed = log.append_built_placed(&mut built, 7).await.unwrap();
        assert_eq!((placed.base_offset, placed.next_offset), (3, 7));
        let _durable = log.wait_durable(placed).await.unwrap();
        let header = ringlog::storage::batch::BatchHeader::parse(built.bytes()).unwrap();
        assert_eq!((header.base_offset, header.leader_epoch), (3, 7), "stamped in place");
        let mut oversized = build(&["z".repeat(9 * 1024)]);
        let refused = log.append_built_placed(&mut oversized, 7).await;
        assert!(matches!(refused, Err(StorageError::InvalidBatch(_))), "{refused:?}");
        let read = read_values(&log, 3).await;
        assert_eq!(read, values("built", 4), "the built records, and nothing of the refused one");
        assert_eq!(log.snapshot().log_end_offset, 7);
        log.close().await.unwrap();
    });
}

#[test]
fn second_open_of_a_locked_data_dir_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _lock = ringlog::storage::lock::DataDirLock::acquire(dir.path()).unwrap();
    let error = ringlog::storage::lock::DataDirLock::acquire(dir.path()).unwrap_err();
    assert!(error.to_string().contains("locked by another process"), "{error}");
}

fn producer_batch(producer_id: u64, sequence: u32, values: &[String]) -> Vec<u8> {
    let mut builder = ringlog::storage::batch::BatchBuilder::new();
    builder.set_producer(producer_id, sequence);
    for value in values {
        builder.push(0, None, value.as_bytes(), &[]);
    }
    builder.finish().to_vec()
}

#[test]
fn retried_idempotent_batch_is_answered_with_original_offsets_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    on_executor(move || async move {
        let leader = AppendMode::Leader { leader_epoch: 1 };
        let log = PartitionLog::open(&path, small_config(), None).await.unwrap();
        let first = log.append(&mut producer_batch(42, 0, &values("a", 3)), leader).await.unwrap();
        let _ = append_values(&log, &values("other", 2), 0).await;
        let second = log.append(&mut producer_batch(42, 3, &values("b", 2)), leader).await.unwrap();
        assert!(!first.duplicate && !second.duplicate);
        let retry = log.append(&mut producer_batch(42, 0, &values("a", 3)), leader).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!((retry.base_offset, retry.next_offset), (first.base_offset, first.next_offset));
        assert_eq!(log.snapshot().log_end_offset, 7, "the retry wrote nothing");
        let gap = log.append(&mut producer_batch(42, 9, &values("c", 1)), leader).await;
        assert!(matches!(gap, Err(StorageError::OutOfOrderSequence { expected: 5, received: 9, .. })));
        log.close().await.unwrap();

        // Clean restart: state comes from the snapshot.
        let log = PartitionLog::open(&path, small_config(), None).await.unwrap();
        let retry = log.append(&mut producer_batch(42, 3, &values("b", 2)), leader).await.unwrap();
        assert!(retry.duplicate && retry.base_offset == second.base_offset);
        let third = log.append(&mut producer_batch(42, 5, &values("c", 1)), leader).await.unwrap();
        log.abandon().await;

        // Crash restart: state comes from walking the log's batch headers.
        std::fs::remove_file(path.join("producer-state")).ok();
        let log = PartitionLog::open(&path, small_config(), None).await.unwrap();
        let retry = log.append(&mut producer_batch(42, 5, &values("c", 1)), leader).await.unwrap();
        assert!(retry.duplicate && retry.base_offset == third.base_offset);
        // Truncation forgets batches that are gone: the retry is written again.
        log.truncate_to(third.base_offset).await.unwrap();
        let rewritten = log.append(&mut producer_batch(42, 5, &values("c", 1)), leader).await.unwrap();
        assert!(!rewritten.duplicate);
        assert_eq!(rewritten.base_offset, third.base_offset);
        assert_eq!(read_all(&log, 0).await.len() as u64, rewritten.next_offset);
        log.close().await.unwrap();
    });
}

#[test]
fn placed_append_returns_before_durability_and_durable_append_after_it() {
    let dir = tempfile::tempdir().unwrap();
    on_executor(move || async move {
        let leader = AppendMode::Leader { leader_epoch: 1 };
        let log = PartitionLog::open(dir.path(), small_config(), None).await.unwrap();
        let placed = log.append_placed(&mut batch_of(&values("placed", 3), 0), leader).await.unwrap();
        assert_eq!((placed.base_offset, placed.next_offset, placed.duplicate), (0, 3, false));
        assert_eq!(log.snapshot().log_end_offset, 3, "a placed batch is in the log end at once");
        assert_eq!(placed.generation(), log.generation());
        let durable = log.append(&mut batch_of(&values("durable", 2), 0), leader).await.unwrap();
        assert_eq!((durable.base_offset, durable.next_offset), (3, 5));
        assert!(log.snapshot().durable_end_offset >= durable.next_offset, "a durable append waited for it");
        assert_eq!(durable.generation(), log.generation());
        // A retry through the placed path answers only once the original is durable.
        let original = log.append(&mut producer_batch(7, 0, &values("p", 2)), leader).await.unwrap();
        let retry = log.append_placed(&mut producer_batch(7, 0, &values("p", 2)), leader).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.offsets().base_offset, original.offsets().base_offset);
        assert!(log.snapshot().durable_end_offset >= retry.next_offset);
        log.close().await.unwrap();
    });
}

#[test]
fn a_disk_read_smaller_than_the_batch_it_asks_for_still_returns_that_batch() {
    // A small batch, then one larger than a read chunk that the first
    // chunk cuts, with no index entry between them: a read of the large
    // batch with a small max_bytes must still return it (at least one batch).
    let dir = tempfile::tempdir().unwrap();
    on_executor(move || async move {
        let config = StorageConfig {
            tail_cache_bytes: 0,
            read_ahead_bytes: 0,
            segment_bytes: 1 << 20,
            max_batch_bytes: 512 * 1024,
            ..small_config()
        };
        let log = PartitionLog::open(dir.path(), config, None).await.unwrap();
        let small = append_values(&log, &values("small", 1), 0).await;
        let large_value = "x".repeat(100 * 1024);
        let large = append_values(&log, std::slice::from_ref(&large_value), 0).await;
        let read = log.read(large.base_offset, 1000, None).await.unwrap();
        assert_eq!(read.batch_count, 1, "the batch holding the offset comes back whole");
        assert_eq!(records_of(&read.bytes, small.next_offset), [(large.base_offset, large_value)]);
        log.close().await.unwrap();
    });
}

#[test]
fn a_disk_read_and_its_block_padding_stay_within_max_bytes() {
    // The runtime reads from the start of the block a position lies in: an
    // answer gives up what that padding takes, so a read of max_bytes takes
    // a buffer no larger from the shard's direct-I/O arena.
    let dir = tempfile::tempdir().unwrap();
    on_executor(move || async move {
        let config =
            StorageConfig { tail_cache_bytes: 0, read_ahead_bytes: 0, segment_bytes: 1 << 20, ..small_config() };
        let log = PartitionLog::open(dir.path(), config, None).await.unwrap();
        let mut base_offsets = Vec::new();
        for round in 0..40 {
            base_offsets.push(append_values(&log, &[format!("{round:04}").repeat(225)], 0).await.base_offset);
        }
        let batch_bytes = log.read(0, 1, None).await.unwrap().bytes.len();
        let max_bytes = 8192;
        for (index, offset) in base_offsets.iter().enumerate() {
            let head_padding = (index * batch_bytes) % 4096;
            let read = log.read(*offset, max_bytes, None).await.unwrap();
            assert!(read.batch_count >= 1, "at least one batch");
            assert!(
                read.bytes.len() + head_padding <= max_bytes,
                "batch {index}: {} bytes read after {head_padding} bytes of padding",
                read.bytes.len()
            );
            if index + 8 < base_offsets.len() {
                let fits = (max_bytes - head_padding) / batch_bytes;
                assert_eq!(read.batch_count, fits, "batch {index}: every whole batch that fits comes back");
            }
        }
        log.close().await.unwrap();
    });
}

#[test]
fn idle_partitions_over_the_buffer_budget_shrink_and_grow_without_losing_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    on_executor(move || async move {
        // Budget 0: every idle moment gives the buffers back.
        let config = StorageConfig { write_buffer_budget_bytes: 0, segment_bytes: 1 << 20, ..small_config() };
        let log = PartitionLog::open(&path, config.clone(), None).await.unwrap();
        let mut expected = Vec::new();
        for round in 0..60 {
            let batch = values(&format!("s{round}"), 1 + round % 7);
            let _ = append_values(&log, &batch, 0).await;
            expected.extend(batch);
            ringlog::runtime::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert!(ringlog::storage::writer::held_buffer_bytes() <= 2 * 8192, "buffers were given back");
        let read: Vec<String> = read_values(&log, 0).await;
        assert_eq!(read, expected);
        let log = abandon_and_reopen(log, &path, config).await;
        let read: Vec<String> = read_values(&log, 0).await;
        assert_eq!(read, expected, "the partial blocks written after shrinking are intact on disk");
        log.close().await.unwrap();
    });
}

#[test]
fn tail_cache_reads_equal_disk_reads_and_truncation_clears_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (cached_path, disk_path) = (dir.path().join("cached"), dir.path().join("disk"));
    on_executor(move || async move {
        let cached = PartitionLog::open(&cached_path, StorageConfig { tail_cache_bytes: 4096, ..small_config() }, None)
            .await
            .unwrap();
        let disk = PartitionLog::open(&disk_path, StorageConfig { tail_cache_bytes: 0, ..small_config() }, None)
            .await
            .unwrap();
        let mut last_base_offset = 0;
        for round in 0..120 {
            // A reader at the tail before every append: the cache fills only
            // while there is one.
            let end = cached.snapshot().log_end_offset;
            assert_eq!(cached.read(end, 1, None).await.unwrap().batch_count, 0);
            let batch = values(&format!("r{round}"), 1 + round % 4);
            last_base_offset = append_values(&cached, &batch, 1000 + round as i64).await.base_offset;
            append_values(&disk, &batch, 1000 + round as i64).await;
        }
        let end = cached.snapshot().log_end_offset;
        let before = cached.stats().segment_read_bytes;
        assert_eq!(cached.read(last_base_offset, 1, None).await.unwrap().next_offset, end);
        assert_eq!(cached.stats().segment_read_bytes, before, "the cache answered the last batch");
        for offset in (0..end).step_by(7) {
            for max_bytes in [1, 300, 5000] {
                let from_cache = cached.read(offset, max_bytes, None).await.unwrap();
                let from_disk = disk.read(offset, max_bytes, None).await.unwrap();
                assert_eq!(from_cache, from_disk, "offset {offset}, max_bytes {max_bytes}");
            }
        }
        assert_eq!(cached.read(10, 1000, Some(12)).await.unwrap(), disk.read(10, 1000, Some(12)).await.unwrap());
        // After a truncation the cache must not serve the removed records.
        cached.truncate_to(end - 20).await.unwrap();
        disk.truncate_to(end - 20).await.unwrap();
        let batch = values("after", 3);
        append_values(&cached, &batch, 5000).await;
        append_values(&disk, &batch, 5000).await;
        assert_eq!(read_all(&cached, end - 30).await, read_all(&disk, end - 30).await);
        cached.close().await.unwrap();
        disk.close().await.unwrap();
    });
}

#[test]
fn the_tail_cache_fills_only_while_someone_reads_at_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let config = StorageConfig { tail_cache_bytes: 1 << 20, read_ahead_bytes: 0, ..small_config() };
    with_log(&path, config, move |log| async move {
        // Appended with no one reading: nothing is copied into the cache,
        // and reading the batches back goes to the segment file.
        let first = append_values(&log, &values("bulk", 20), 1000).await;
        let before = log.stats().segment_read_bytes;
        let read = log.read(first.base_offset, 1 << 20, None).await.unwrap();
        assert_eq!(read.next_offset, first.next_offset);
        assert_eq!(log.stats().segment_read_bytes - before, read.bytes.len() as u64, "from disk");
        // That read reached the durable end: the reader is at the tail, and
        // what is appended now is served from memory.
        let later = append_values(&log, &values("tailed", 20), 2000).await;
        let before = log.stats().segment_read_bytes;
        let read = log.read(later.base_offset, 1 << 20, None).await.unwrap();
        assert_eq!(read.next_offset, later.next_offset);
        assert_eq!(log.stats().segment_read_bytes, before, "from the tail cache");
        log.close().await.unwrap();
    });
}

#[test]
fn disk_reads_take_exactly_the_whole_batches_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let config = StorageConfig {
        tail_cache_bytes: 0,
        read_ahead_bytes: 0,
        segment_bytes: 1 << 20,
        preallocate_bytes: 1 << 20,
        ..small_config()
    };
    with_log(&path, config, move |log| async move {
        let mut batch_ends = vec![0u64];
        for round in 0..60 {
            let appended = append_values(&log, &values(&format!("r{round}"), 5 + round % 7), 1000).await;
            batch_ends.push(appended.next_offset);
        }
        let end = log.snapshot().log_end_offset;
        // Where each batch starts in the (one) segment: a read's budget
        // includes the block padding the runtime reads before it.
        let everything = log.read(0, 1 << 20, None).await.unwrap();
        let mut positions = std::collections::HashMap::new();
        let mut position = 0;
        for item in ringlog::storage::batch::BatchIter::new(&everything.bytes, usize::MAX) {
            let (header, batch) = item.unwrap();
            positions.insert(header.base_offset, position);
            position += batch.len();
        }
        for max_bytes in [3000, 5000, 7777] {
            let mut offset = 0;
            while offset < end {
                let before = log.stats().segment_read_bytes;
                let read = log.read(offset, max_bytes, None).await.unwrap();
                let read_bytes = log.stats().segment_read_bytes - before;
                assert!(
                    read.batch_count >= 1 && read.bytes.len() <= max_bytes,
                    "offset {offset}, max_bytes {max_bytes}"
                );
                assert_eq!(read_bytes, read.bytes.len() as u64, "read only what was returned (offset {offset})");
                assert!(batch_ends.contains(&read.next_offset), "whole batches only");
                if read.next_offset < end {
                    let next = log.read(read.next_offset, 1, None).await.unwrap();
                    let padding = positions[&offset] % 4096;
                    assert!(
                        read.bytes.len() + next.bytes.len() + padding > max_bytes,
                        "the next batch did not fit (offset {offset}, {padding} bytes of padding)"
                    );
                }
                offset = read.next_offset;
            }
        }
        log.close().await.unwrap();
    });
}

#[test]
fn sequential_disk_reads_are_read_ahead_and_truncation_discards_the_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let (ahead_path, plain_path) = (dir.path().join("ahead"), dir.path().join("plain"));
    on_executor(move || async move {
        let config =
            StorageConfig { tail_cache_bytes: 0, segment_bytes: 1 << 20, preallocate_bytes: 1 << 20, ..small_config() };
        let ahead = PartitionLog::open(&ahead_path, config.clone(), None).await.unwrap();
        let plain =
            PartitionLog::open(&plain_path, StorageConfig { read_ahead_bytes: 0, ..config }, None).await.unwrap();
        for round in 0..80 {
            let batch = values(&format!("r{round}"), 3 + round % 5);
            append_values(&ahead, &batch, 1000).await;
            append_values(&plain, &batch, 1000).await;
        }
        let end = ahead.snapshot().log_end_offset;
        let mut offset = 0;
        let mut reads = 0;
        while offset < end {
            let from_ahead = ahead.read(offset, 3000, None).await.unwrap();
            let from_plain = plain.read(offset, 3000, None).await.unwrap();
            assert_eq!(from_ahead, from_plain, "offset {offset}");
            offset = from_ahead.next_offset;
            reads += 1;
        }
        assert_eq!(ahead.stats().read_ahead_hits, reads - 1, "every read after the first was read ahead");
        assert_eq!(plain.stats().read_ahead_hits, 0, "read_ahead_bytes = 0 disables it");

        // A read-ahead in flight when the log is truncated must not be served.
        let first = ahead.read(0, 3000, None).await.unwrap();
        ahead.truncate_to(first.next_offset).await.unwrap();
        plain.truncate_to(first.next_offset).await.unwrap();
        let replacement = values("replacement", 4);
        append_values(&ahead, &replacement, 2000).await;
        append_values(&plain, &replacement, 2000).await;
        let hits = ahead.stats().read_ahead_hits;
        let after = ahead.read(first.next_offset, 3000, None).await.unwrap();
        assert_eq!(after, plain.read(first.next_offset, 3000, None).await.unwrap());
        assert_eq!(ahead.stats().read_ahead_hits, hits, "the discarded read-ahead answered nothing");
        assert_eq!(read_all(&ahead, 0).await, read_all(&plain, 0).await);
        ahead.close().await.unwrap();
        plain.close().await.unwrap();
    });
}

/// One record whose batch encodes to exactly `batch_bytes` (a key of 0 to 2
/// bytes absorbs the varint steps of the value's length).
fn batch_of_exactly(batch_bytes: usize, fill: u8) -> Vec<u8> {
    for value_bytes in (0..batch_bytes).rev() {
        for key_bytes in 0..3 {
            let mut builder = ringlog::storage::batch::BatchBuilder::new();
            let key = vec![fill; key_bytes];
            builder.push(1000, (key_bytes > 0).then_some(&key[..]), &vec![fill; value_bytes], &[]);
            let batch = builder.finish().to_vec();
            if batch.len() == batch_bytes {
                return batch;
            }
        }
    }
    panic!("no batch of {batch_bytes} bytes");
}

#[test]
fn a_batch_ending_exactly_at_a_write_buffer_end_becomes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    on_executor(move || async move {
        // fsync=always: each append waits until its tail write completed, so
        // a batch that ends exactly at the buffer's end leaves the buffer
        // wholly written before the next append rotates it.
        let config = StorageConfig { segment_bytes: 1 << 20, preallocate_bytes: 1 << 20, ..small_config() };
        let write_buffer_bytes = config.write_buffer_bytes;
        let log = PartitionLog::open(&path, config.clone(), None).await.unwrap();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for round in 0..6u8 {
            let mut batch = batch_of_exactly(write_buffer_bytes, b'a' + round);
            expected.push(batch.clone());
            let info = log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
            assert_eq!(info.base_offset, u64::from(round));
        }
        let mut small = batch_of(&values("after", 3), 1000);
        let info = log.append(&mut small, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
        assert_eq!(info.next_offset, 9);
        let log = close_and_reopen(log, &path, config).await;
        for (round, original) in expected.iter().enumerate() {
            let read = log.read(round as u64, 1, None).await.unwrap();
            assert_eq!((read.batch_count, read.bytes.len()), (1, original.len()), "batch {round}");
            let body = &read.bytes[ringlog::storage::batch::BATCH_HEADER_BYTES..];
            let records: Vec<_> =
                ringlog::storage::batch::RecordIter::new(body).map(|record| record.unwrap()).collect();
            assert_eq!(records.len(), 1);
            let fill = b'a' + round as u8;
            assert!(records[0].value.iter().all(|&byte| byte == fill), "batch {round}'s value intact");
        }
        assert_eq!(log.snapshot().log_end_offset, 9);
        log.close().await.unwrap();
    });
}

#[test]
fn a_sequential_reader_keeps_a_chain_of_read_aheads_going_and_a_skip_ahead_still_hits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain");
    on_executor(move || async move {
        let config = StorageConfig {
            tail_cache_bytes: 0,
            segment_bytes: 1 << 20,
            preallocate_bytes: 1 << 20,
            read_ahead_depth: 3,
            ..small_config()
        };
        let log = PartitionLog::open(&path, config, None).await.unwrap();
        for round in 0..120 {
            append_values(&log, &values(&format!("c{round}"), 2 + round % 4), 1000).await;
        }
        let end = log.snapshot().log_end_offset;
        assert_eq!(ringlog::storage::reserved_read_ahead_bytes(), 0);
        let first = log.read(0, 3000, None).await.unwrap();
        assert_eq!(
            ringlog::storage::reserved_read_ahead_bytes(),
            3 * 3000,
            "three reads go ahead of the reader, each starting where the one before it ends"
        );
        // Skip the first read-ahead: the reader asks for where the second starts.
        let skipped = log.read(first.next_offset, 3000, None).await.unwrap();
        let hits_before = log.stats().read_ahead_hits;
        let mut offset = skipped.next_offset;
        let mut reads = 0;
        let mut collected = Vec::new();
        while offset < end {
            let batches = log.read(offset, 3000, None).await.unwrap();
            collected.extend_from_slice(&batches.bytes);
            offset = batches.next_offset;
            reads += 1;
        }
        assert_eq!(log.stats().read_ahead_hits - hits_before, reads, "every read in the chain was read ahead");
        let mut whole = first.bytes.clone();
        whole.extend_from_slice(&skipped.bytes);
        whole.extend_from_slice(&collected);
        log.close().await.unwrap();
        assert_eq!(ringlog::storage::reserved_read_ahead_bytes(), 0, "closing gives the budget back");
        let plain =
            PartitionLog::open(&path, StorageConfig { read_ahead_bytes: 0, ..small_config() }, None).await.unwrap();
        assert_eq!(records_of(&whole, 0), read_all(&plain, 0).await, "the chain returned every record once, in order");
        plain.close().await.unwrap();
    });
}

#[test]
fn a_truncation_keeps_producers_whose_batches_retention_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    on_executor(move || async move {
        let leader = AppendMode::Leader { leader_epoch: 1 };
        let log = PartitionLog::open(&path, small_config(), None).await.unwrap();
        let original = log.append(&mut producer_batch(42, 0, &values("a", 2)), leader).await.unwrap();
        // Enough to seal segments (each seal stores the producer snapshot).
        for round in 0..300 {
            append_values(&log, &values(&format!("k{round}"), 3), 0).await;
        }
        let policy = RetentionPolicy { retention_bytes: 40 * 1024, retention_ms: 0 };
        log.apply_retention(policy, 0).await.unwrap();
        assert!(log.snapshot().log_start_offset > original.next_offset, "producer 42's batch is deleted");
        let cut = log.snapshot().log_end_offset - 3;
        log.truncate_to(cut).await.unwrap();
        let retry = log.append(&mut producer_batch(42, 0, &values("a", 2)), leader).await.unwrap();
        assert!(retry.duplicate, "the producer is still remembered: its retry is not written again");
        assert_eq!(retry.base_offset, original.base_offset);
        log.close().await.unwrap();
    });
}

#[test]
fn a_replica_wait_for_a_written_batch_the_tail_cache_lacks_ends_when_a_read_can_return_it() {
    // fsync=always on a slow device, no tail cache: the batch is written
    // long before it is durable, and a replica read (which serves written
    // batches only from the cache) has nothing to give until then. A wait
    // that ended at the write let the leader's fetch loop read nothing and
    // wait again, at once, without yielding: the shard spun, and the
    // fdatasync that would end it could not complete.
    let dir = tempfile::tempdir().unwrap();
    on_executor(move || async move {
        let faults = ringlog::storage::io::FaultInjector::new();
        faults.delay_syncs(std::time::Duration::from_secs(1));
        let config = StorageConfig { fsync: FsyncPolicy::Always, tail_cache_bytes: 0, ..small_config() };
        let log = PartitionLog::open(dir.path(), config, Some(faults.clone())).await.unwrap();
        let mut batch = batch_of(&["written first".to_string()], 1);
        let _placed = log.append_placed(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
        log.wait_written_past(0).await;
        assert_eq!(log.read_written(0, 1 << 20).await.unwrap().batch_count, 0, "written, not durable, not cached");
        log.wait_replica_readable_past(0).await;
        assert_eq!(log.read_written(0, 1 << 20).await.unwrap().batch_count, 1, "the wait ended when a read can serve");
        log.close().await.unwrap();
    });
}

#[test]
fn a_replica_wait_on_a_fenced_partition_ends_when_the_batch_is_durable_not_when_it_is_cached() {
    // A fenced partition's reads no longer use the tail cache: a wait that
    // counted a written, cached batch as readable ended at once, and the
    // leader's fetch loop spun again.
    let dir = tempfile::tempdir().unwrap();
    on_executor(move || async move {
        let faults = ringlog::storage::io::FaultInjector::new();
        let config = StorageConfig { fsync: FsyncPolicy::Always, tail_cache_bytes: 1 << 20, ..small_config() };
        let log = PartitionLog::open(dir.path(), config, Some(faults.clone())).await.unwrap();
        // Appended before anyone reads the tail: on disk only, not cached;
        // over 4 KiB, so the next batch's writes start past its first block.
        let long_values: Vec<String> = (0..3).map(|index| format!("{index}{}", "x".repeat(2000))).collect();
        let first = append_values(&log, &long_values, 1).await;
        let segment = std::fs::OpenOptions::new().write(true).open(dir.path().join("00000000000000000000.log"));
        std::os::unix::fs::FileExt::write_at(&segment.unwrap(), b"\xff\xff", 70).unwrap();
        // A reader at the tail, then a batch written long before it is durable.
        assert_eq!(log.read(first.next_offset, 1, None).await.unwrap().batch_count, 0);
        faults.delay_syncs(std::time::Duration::from_secs(1));
        let mut batch = batch_of(&["second".to_string()], 2);
        let _placed = log.append_placed(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
        log.wait_written_past(first.next_offset).await;
        // A read finds the corruption and fences the partition.
        assert!(log.read(first.base_offset, 1 << 20, None).await.is_err());
        assert_eq!(log.read_written(first.next_offset, 1 << 20).await.unwrap().batch_count, 0, "fenced: no cache");
        log.wait_replica_readable_past(first.next_offset).await;
        let read = log.read_written(first.next_offset, 1 << 20).await.unwrap();
        assert_eq!(read.batch_count, 1, "the wait ended when the batch was durable");
        log.close().await.unwrap();
    });
}

#[test]
fn no_two_writes_to_one_block_are_ever_in_flight_together() {
    // Small buffers, small batches and several appenders each waiting for
    // durability: tails of part of a block, buffers filling and rotating
    // while the tail is in flight — the pattern that once let a tail's zero
    // padding land after the full buffer's write of the same block.
    let dir = tempfile::tempdir().unwrap();
    on_executor(move || async move {
        let faults = ringlog::storage::io::FaultInjector::new();
        // A slow device: writes stay in flight while the appenders go on.
        faults.delay_writes(std::time::Duration::from_millis(2));
        let config = StorageConfig {
            fsync: FsyncPolicy::Never,
            tail_cache_bytes: 0,
            segment_bytes: 1 << 20,
            preallocate_bytes: 1 << 20,
            ..small_config()
        };
        let log = Rc::new(PartitionLog::open(dir.path(), config, Some(faults.clone())).await.unwrap());
        let appenders: Vec<_> = (0..4)
            .map(|appender| {
                let log = Rc::clone(&log);
                ringlog::runtime::spawn_local(async move {
                    for round in 0..150 {
                        let size = 50 + (appender * 997 + round * 389) % 1400;
                        let value = format!("a{appender}-r{round}-{}", "x".repeat(size));
                        // Most do not wait for their writes (acks=none, or
                        // pipelined produces): buffers fill while tails fly.
                        let mut batch = batch_of(&[value], round as i64);
                        let leader = AppendMode::Leader { leader_epoch: 1 };
                        match appender {
                            0 => drop(log.append(&mut batch, leader).await.unwrap()),
                            _ => drop(log.append_placed(&mut batch, leader).await.unwrap()),
                        }
                        // Let the flusher take a tail between appends.
                        ringlog::runtime::sleep(std::time::Duration::from_micros(300)).await;
                    }
                })
            })
            .collect();
        for appender in appenders {
            appender.await;
        }
        // The placed ones' last writes: wait until all is written.
        append_values(&log, &values("last", 1), 0).await;
        assert_eq!(faults.overlapping_writes(), 0, "a write was submitted over one still in flight");
        let records = read_all(&log, 0).await;
        assert_eq!(records.len(), 601, "every record reads back");
        log.close().await.unwrap();
    });
}

/// Two logs of 60 records each (20 batches), read from disk only, with
/// chains of `depth` reads and a shard budget of `budget_bytes`.
async fn two_logs_sharing_a_read_ahead_budget(
    dir: &std::path::Path,
    depth: u32,
    budget_bytes: u64,
) -> (PartitionLog, PartitionLog) {
    let config = StorageConfig {
        tail_cache_bytes: 0,
        segment_bytes: 1 << 20,
        preallocate_bytes: 1 << 20,
        read_ahead_depth: depth,
        read_ahead_budget_bytes: budget_bytes,
        ..small_config()
    };
    let first = PartitionLog::open(&dir.join("first"), config.clone(), None).await.unwrap();
    let second = PartitionLog::open(&dir.join("second"), config, None).await.unwrap();
    for round in 0..20 {
        append_values(&first, &values(&format!("f{round}"), 3), 1000).await;
        append_values(&second, &values(&format!("s{round}"), 3), 1000).await;
    }
    (first, second)
}

#[test]
fn a_chain_its_reader_abandoned_gives_its_budget_to_another_partitions_reader() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_path_buf();
    on_executor(move || async move {
        // The shard's budget holds one read-ahead of 3000 bytes.
        let (left, right) = two_logs_sharing_a_read_ahead_budget(&dir, 1, 3000).await;
        // Left's reader reads once and goes away: its read-ahead holds the budget.
        let left_read_at = std::time::Instant::now();
        left.read(0, 3000, None).await.unwrap();
        assert_eq!(ringlog::storage::reserved_read_ahead_bytes(), 3000);
        let first = right.read(0, 3000, None).await.unwrap();
        right.read(first.next_offset, 3000, None).await.unwrap();
        // (Unless this machine took a whole second for two small reads.)
        if left_read_at.elapsed() < Duration::from_millis(900) {
            assert_eq!(right.stats().read_ahead_hits, 0, "no budget while left's read-ahead is fresh");
        }
        // Once stale, left's chain gives way to right's reader.
        ringlog::runtime::sleep(Duration::from_millis(1100)).await;
        let hits_before = right.stats().read_ahead_hits;
        let second = right.read(0, 3000, None).await.unwrap();
        assert_eq!(ringlog::storage::reserved_read_ahead_bytes(), 3000, "right's read-ahead holds the budget now");
        right.read(second.next_offset, 3000, None).await.unwrap();
        assert_eq!(right.stats().read_ahead_hits - hits_before, 1, "right's next read was read ahead");
        assert_eq!(left.stats().read_ahead_hits, 0);
        left.close().await.unwrap();
        right.close().await.unwrap();
        assert_eq!(ringlog::storage::reserved_read_ahead_bytes(), 0);
    });
}

#[test]
fn a_chain_its_reader_still_takes_from_is_not_dropped_for_another_reader() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_path_buf();
    on_executor(move || async move {
        // The shard's budget holds two read-aheads of 3000 bytes: one chain.
        let (slow, other) = two_logs_sharing_a_read_ahead_budget(&dir, 2, 6000).await;
        // A slow reader: a fetch every 0.9 s. After its second, the front
        // of its chain is the read started at its first.
        let mut offset = slow.read(0, 3000, None).await.unwrap().next_offset;
        ringlog::runtime::sleep(Duration::from_millis(900)).await;
        offset = slow.read(offset, 3000, None).await.unwrap().next_offset;
        assert_eq!(slow.stats().read_ahead_hits, 1);
        // Another reader wants budget while that front read is more than
        // a second old, but the slow reader took from its chain 0.2 s ago.
        ringlog::runtime::sleep(Duration::from_millis(200)).await;
        other.read(0, 3000, None).await.unwrap();
        slow.read(offset, 3000, None).await.unwrap();
        assert_eq!(slow.stats().read_ahead_hits, 2, "the slow reader's chain was kept");
        slow.close().await.unwrap();
        other.close().await.unwrap();
    });
}
