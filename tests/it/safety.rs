//! Issue 11's storage defects, each driven by the interleaving or the
//! on-disk state that used to lose, move or resurrect acknowledged records.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use ringlog::storage::batch::BatchHeader;
use ringlog::storage::io::{FaultInjector, FaultOperation};
use ringlog::storage::offsets::OffsetLookup;
use ringlog::storage::retention::RetentionPolicy;
use ringlog::storage::{AppendMode, FsyncPolicy, PartitionLog, StorageConfig, StorageError};

use crate::common::{
    append_values, batch_of, close_or_abandon, on_executor, read_all, records_of, segment_files, small_config, values,
    with_faulty_log, with_log,
};

/// Byte position of the batch starting at `offset` in a segment file.
fn position_of(path: &Path, offset: u64) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut position = 0usize;
    while position + 64 <= bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).unwrap();
        if header.base_offset == offset {
            return position as u64;
        }
        assert!(header.batch_bytes > 0 && header.base_offset < offset, "offset {offset} starts no batch");
        position += header.batch_bytes as usize;
    }
    panic!("offset {offset} not found in {}", path.display());
}

fn last_segment(dir: &Path) -> PathBuf {
    dir.join(segment_files(dir).last().unwrap())
}

fn check_errors(dir: &Path, config: &StorageConfig) -> Vec<String> {
    let mut report = ringlog::storage::check::CheckReport::default();
    ringlog::storage::check::check_partition(dir, config, false, &mut report, &|_| {}).unwrap();
    report.errors.into_iter().map(|issue| issue.reason).collect()
}

// Defect 1: admission limits are not applied to data already in the log.
#[test]
fn batches_above_a_lowered_max_batch_bytes_survive_crash_recovery_reads_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let large = StorageConfig { max_batch_bytes: 256 * 1024, segment_bytes: 4 << 20, ..small_config() };
    let written = with_log(dir.path(), large, |log| async move {
        for round in 0..6 {
            // ~20 KB batches: far above the 8 KiB limit the restart uses.
            append_values(&log, &values(&format!("big{round}"), 150), round).await;
        }
        let all = read_all(&log, 0).await;
        log.abandon().await;
        all
    });
    assert_eq!(written.len(), 900);
    let lowered = small_config();
    assert!(std::fs::metadata(last_segment(dir.path())).unwrap().len() > 6 * lowered.max_batch_bytes as u64);
    let (all, report) = with_log(dir.path(), lowered.clone(), |log| async move {
        let all = read_all(&log, 0).await;
        let report = log.recovery_report();
        log.close().await.unwrap();
        (all, report)
    });
    assert_eq!(report.truncated_bytes, 0, "nothing acknowledged is a torn tail");
    assert_eq!(all, written);
    assert!(check_errors(dir.path(), &lowered).is_empty());
    // A replica copies its leader's batches whatever its own admission limit.
    let replica_dir = dir.path().join("replica");
    let big = batch_of(&values("replica", 150), 0);
    let placed = with_log(&replica_dir, lowered, move |log| async move {
        let mut batch = big;
        ringlog::storage::batch::stamp_batch(&mut batch, 0, 3);
        let info = log.append(&mut batch, AppendMode::Replica).await.unwrap();
        log.close().await.unwrap();
        info.next_offset
    });
    assert_eq!(placed, 150);
}

// Defect 2: an out-of-range commit is latched until an explicit reset.
#[test]
fn commit_beyond_a_lost_log_end_stays_out_of_range_after_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig { segment_bytes: 1 << 20, ..small_config() };
    with_log(dir.path(), config.clone(), |log| async move {
        for round in 0..15 {
            append_values(&log, &values(&format!("a{round}"), 10), round).await;
        }
        log.commit_offset("g", 150).await.unwrap();
        log.abandon().await;
    });
    // Lose the log above 100, as a lost disk cache or a bad restore would.
    let segment = last_segment(dir.path());
    let cut = position_of(&segment, 100);
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut).unwrap();
    let lookups = with_log(dir.path(), config.clone(), |log| async move {
        let before = log.committed_offset("g");
        for round in 0..6 {
            append_values(&log, &values(&format!("b{round}"), 10), 100 + round).await;
        }
        assert_eq!(log.snapshot().log_end_offset, 160);
        let after = log.committed_offset("g");
        log.close().await.unwrap();
        (before, after)
    });
    assert!(matches!(lookups.0, OffsetLookup::OutOfRange { committed: 150, .. }), "{:?}", lookups.0);
    assert!(matches!(lookups.1, OffsetLookup::OutOfRange { committed: 150, .. }), "latched: {:?}", lookups.1);
    let (restarted, reset) = with_log(dir.path(), config, |log| async move {
        let restarted = log.committed_offset("g");
        log.commit_offset("g", 100).await.unwrap();
        let reset = log.committed_offset("g");
        log.close().await.unwrap();
        (restarted, reset)
    });
    assert!(matches!(restarted, OffsetLookup::OutOfRange { committed: 150, .. }), "durable: {restarted:?}");
    assert_eq!(reset, OffsetLookup::Valid(100), "an explicit commit is the reset");
}

#[test]
fn commit_beyond_a_truncated_divergent_suffix_is_latched() {
    let dir = tempfile::tempdir().unwrap();
    let lookup = with_log(dir.path(), small_config(), |log| async move {
        for round in 0..15 {
            append_values(&log, &values(&format!("a{round}"), 10), round).await;
        }
        log.commit_offset("g", 150).await.unwrap();
        log.truncate_to(100).await.unwrap();
        for round in 0..6 {
            append_values(&log, &values(&format!("b{round}"), 10), round).await;
        }
        let lookup = log.committed_offset("g");
        log.close().await.unwrap();
        lookup
    });
    assert!(matches!(lookup, OffsetLookup::OutOfRange { committed: 150, .. }), "{lookup:?}");
}

/// A log with one active segment of about `batches` × 8 KB, abandoned.
fn active_segment_of(dir: &Path, batches: usize) -> (StorageConfig, Vec<(u64, String)>) {
    let config = StorageConfig { segment_bytes: 64 << 20, max_batch_bytes: 64 * 1024, ..small_config() };
    let written = with_log(dir, config.clone(), move |log| async move {
        for round in 0..batches {
            append_values(&log, &values(&format!("c{round}"), 60), round as i64).await;
        }
        let all = read_all(&log, 0).await;
        log.abandon().await;
        all
    });
    assert_eq!(segment_files(dir).len(), 1);
    (config, written)
}

// Defect 3: corruption in the active segment is not a torn tail.
#[test]
fn flipped_byte_in_the_active_segment_fences_and_keeps_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (config, written) = active_segment_of(dir.path(), 200);
    let segment = last_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    let valid = ringlog::storage::scan::scan_segment(&bytes, 0, 4096).valid_bytes as usize;
    bytes[valid / 10 + 100] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let snapshot = with_log(dir.path(), config.clone(), |log| async move {
        let snapshot = log.snapshot();
        log.close().await.unwrap();
        snapshot
    });
    let fence = snapshot.fence.expect("corruption before the torn window fences");
    assert!(fence.reason.contains("corruption"), "{}", fence.reason);
    assert!(snapshot.log_end_offset < written.len() as u64 / 5);
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "the bytes stay on disk");
    // Defect 10: the fence survives a restart, and `check` reports it.
    let again = with_log(dir.path(), config.clone(), |log| async move {
        let fence = log.snapshot().fence;
        let refused = append_values_result(&log).await;
        log.close().await.unwrap();
        (fence, refused)
    });
    assert!(again.0.is_some(), "still fenced after a restart");
    assert!(matches!(again.1, Err(StorageError::Fenced { .. })));
    assert!(check_errors(dir.path(), &config).iter().any(|reason| reason.contains("fenced")));
}

async fn append_values_result(log: &PartitionLog) -> Result<u64, StorageError> {
    let mut batch = batch_of(&values("late", 2), 0);
    log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.map(|info| info.base_offset)
}

#[test]
fn torn_write_inside_the_window_is_still_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (config, written) = active_segment_of(dir.path(), 50);
    let segment = last_segment(dir.path());
    let valid = ringlog::storage::scan::scan_segment(&std::fs::read(&segment).unwrap(), 0, 4096).valid_bytes;
    let last = written.last().unwrap().0;
    let last_position = position_of(&segment, last - 59);
    // Tear the last batch: its second half never reached the device.
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&vec![0u8; (valid - last_position) as usize / 2], last_position + (valid - last_position) / 2)
        .unwrap();
    let snapshot = with_log(dir.path(), config, |log| async move {
        let snapshot = log.snapshot();
        log.close().await.unwrap();
        snapshot
    });
    assert!(snapshot.fence.is_none(), "{:?}", snapshot.fence);
    assert_eq!(snapshot.log_end_offset, last - 59);
}

#[test]
fn damaged_consumer_offsets_entry_with_valid_entries_after_it_fences_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    with_log(dir.path(), small_config(), |log| async move {
        append_values(&log, &values("x", 10), 0).await;
        for offset in 0..10 {
            log.commit_offset("group", offset).await.unwrap();
        }
        log.close().await.unwrap();
    });
    let path = dir.path().join(ringlog::storage::offsets::CONSUMER_OFFSETS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[30] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (fence, committed) = with_log(dir.path(), small_config(), |log| async move {
        let result = (log.snapshot().fence, log.committed_offset("group"));
        log.close().await.unwrap();
        result
    });
    assert!(fence.is_some_and(|fence| fence.path == path));
    assert_eq!(committed, OffsetLookup::Valid(9), "commits after the damage are still served");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "bytes kept");
}

/// Many small sealed segments, closed cleanly or abandoned.
fn sealed_segments(dir: &Path, clean: bool) -> Vec<String> {
    with_log(dir, small_config(), move |log| async move {
        for round in 0..400 {
            append_values(&log, &values(&format!("s{round}"), 3), round).await;
        }
        close_or_abandon(log, clean).await;
    });
    let files = segment_files(dir);
    assert!(files.len() > 5, "{files:?}");
    files
}

fn reopened_fence(dir: &Path) -> Option<ringlog::storage::recovery::FenceReport> {
    with_log(dir, small_config(), |log| async move {
        let fence = log.snapshot().fence;
        log.close().await.unwrap();
        fence
    })
}

// Defect 4: the segment chain is verified on the clean path too.
#[test]
fn deleted_middle_segment_fences_after_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let files = sealed_segments(dir.path(), true);
    std::fs::remove_file(dir.path().join(&files[2])).unwrap();
    let fence = reopened_fence(dir.path()).expect("a gap in the chain fences");
    assert!(fence.reason.contains("ends at"), "{}", fence.reason);
}

#[test]
fn deleted_middle_segment_fences_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let files = sealed_segments(dir.path(), false);
    std::fs::remove_file(dir.path().join(&files[1])).unwrap();
    assert!(reopened_fence(dir.path()).is_some());
}

#[test]
fn deleted_active_segment_fences_instead_of_serving_a_shorter_log() {
    let dir = tempfile::tempdir().unwrap();
    let files = sealed_segments(dir.path(), false);
    std::fs::remove_file(dir.path().join(files.last().unwrap())).unwrap();
    let fence = reopened_fence(dir.path()).expect("the recovery point says more was sealed");
    assert!(fence.reason.contains("sealed durably"), "{}", fence.reason);
}

// Defect 7: fsync = interval fsyncs under load that never lets the flusher idle.
#[test]
fn interval_fsync_runs_under_continuous_concurrent_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        fsync: FsyncPolicy::Interval,
        fsync_interval_ms: 10,
        segment_bytes: 64 << 20,
        ..small_config()
    };
    let fsyncs = with_log(dir.path(), config, |log| async move {
        let log = Rc::new(log);
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for appender in 0..4 {
            let log = Rc::clone(&log);
            tasks.push(ringlog::runtime::spawn_local(async move {
                // acks=none: appends never wait for a write, so some write is
                // always in flight and the flusher never goes idle.
                while started.elapsed() < Duration::from_millis(400) {
                    let mut batch = batch_of(&values(&format!("i{appender}"), 20), 0);
                    let placed = log.append_placed(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await;
                    let _placed = placed.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let fsyncs = log.stats().fsyncs;
        log.close().await.unwrap();
        fsyncs
    });
    assert!(fsyncs >= 5, "400 ms of load at a 10 ms interval fsynced only {fsyncs} times");
}

// A damaged batch length in a sealed segment, met by a read that starts at
// an index entry before it: the batch before it lies below the offset asked
// for, so the answer held nothing yet, and the read moved on to the next
// segment and served a silent gap (found by the crash simulation, seed 1806).
#[test]
fn a_damaged_batch_length_fails_the_read_instead_of_skipping_to_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    with_log(dir.path(), small_config(), |log| async move {
        for round in 0..120 {
            append_values(&log, &values(&format!("r{round}"), 3), round).await;
        }
        log.close().await.unwrap();
    });
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3, "{segments:?}");
    // The second batch of the first segment (offset 3): the offset index's
    // first entry, at position 0, is the floor a read of offset 3 starts
    // from, and the clean open's header walk starts at the last entry.
    let victim = dir.path().join(&segments[0]);
    let position = position_of(&victim, 3) as usize;
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[position + 11] ^= 1; // the length grows by 16 MiB, past the file's end
    std::fs::write(&victim, &bytes).unwrap();
    let (answer, fence) = with_log(dir.path(), small_config(), |log| async move {
        let answer = log.read(3, 64 * 1024, None).await.map(|read| (read.batch_count, read.next_offset));
        let fence = log.snapshot().fence;
        log.close().await.ok();
        (answer.map_err(|error| error.to_string()), fence)
    });
    assert!(answer.is_err(), "served {answer:?} from past the damage");
    assert!(fence.is_some_and(|fence| fence.offset <= 3), "the damage fences the partition where it is");
}

// A sealed segment cut short under a running log (a damaged disk, an
// operator's mistake): a read of an offset in the lost part finds no batch
// where the segment says one is. It fails; it used to move on to the next
// segment and answer with its records, a silent gap (SPEC §3: a short
// segment is never a silent gap).
#[test]
fn a_read_in_the_lost_part_of_a_short_segment_fails_instead_of_answering_from_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // No tail cache: the read must go to the file.
    let config = StorageConfig { tail_cache_bytes: 0, ..small_config() };
    let answer = with_log(dir.path(), config, move |log| async move {
        for round in 0..120 {
            append_values(&log, &values(&format!("r{round}"), 3), round).await;
        }
        let segments = segment_files(&path);
        assert!(segments.len() >= 3, "{segments:?}");
        let next_base: u64 = segments[1][..20].parse().unwrap();
        let first = path.join(&segments[0]);
        let half = std::fs::metadata(&first).unwrap().len() / 2;
        std::fs::OpenOptions::new().write(true).open(&first).unwrap().set_len(half).unwrap();
        // The last record of the first segment lies in the half cut away.
        let answer = log.read(next_base - 1, 64 * 1024, None).await;
        log.abandon().await;
        answer.map(|read| records_of(&read.bytes, next_base - 1)).map_err(|error| error.to_string())
    });
    assert!(answer.is_err(), "answered {answer:?} for an offset the segment lost");
}

// Defect 8: retention and truncation are serialised (retention's in-memory
// step by the append gate, its unlinks by the files gate).
#[test]
fn retention_during_a_truncation_waits_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let (end, start) = with_log(dir.path(), small_config(), |log| async move {
        for round in 0..120 {
            append_values(&log, &values(&format!("r{round}"), 3), round).await;
        }
        let log = Rc::new(log);
        let truncating = Rc::clone(&log);
        // The cut lies in the oldest segment, the one retention deletes.
        let truncation = ringlog::runtime::spawn_local(async move { truncating.truncate_to(2).await });
        // Let the truncation run up to its first disk read.
        ringlog::runtime::sleep(Duration::from_millis(1)).await;
        let policy = RetentionPolicy { retention_bytes: 1, retention_ms: 0 };
        let retention = log.apply_retention(policy, 0).await;
        let truncated = truncation.await;
        assert!(retention.is_ok() && truncated.is_ok(), "{retention:?} {truncated:?}");
        let snapshot = log.snapshot();
        log.close().await.unwrap();
        (snapshot.log_end_offset, snapshot.log_start_offset)
    });
    assert!(start <= end);
}

/// Poll `change` up to `polls` times, 300 µs apart, then drop it unless it
/// finished: a caller that stops waiting part-way (a follower's session
/// that ended drops its tasks).
async fn poll_then_drop<T>(change: impl std::future::Future<Output = T>, polls: usize) {
    futures_lite::pin!(change);
    for _ in 0..polls {
        if futures_lite::future::poll_once(change.as_mut()).await.is_some() {
            return;
        }
        ringlog::runtime::sleep(Duration::from_micros(300)).await;
    }
}

// A truncation whose caller stops waiting (a follower's session that ends
// drops its tasks) still runs to its end. Cancelled at one of its awaits,
// it left the truncating flag set (every read empty, the next truncation
// panicking), or the writer and the log end past the cut.
#[test]
fn a_truncation_whose_caller_stops_waiting_runs_to_its_end() {
    for polls in [1, 2, 3, 5, 8, 13, 21] {
        let dir = tempfile::tempdir().unwrap();
        let (written, after) = with_log(dir.path(), small_config(), move |log| async move {
            for round in 0..60 {
                append_values(&log, &values(&format!("c{round}"), 3), round).await;
            }
            let written = read_all(&log, 0).await;
            poll_then_drop(log.truncate_to(9), polls).await;
            // What a new caller (a follower's next session) waits for first.
            log.detached_changes_settled().await;
            assert_eq!(log.snapshot().log_end_offset, 9, "cut after {polls} polls");
            append_values(&log, &values("after", 3), 99).await;
            let after = read_all(&log, 0).await;
            log.close().await.unwrap();
            (written, after)
        });
        assert_eq!(after.len(), 12, "cut after {polls} polls");
        assert_eq!(after[..9], written[..9], "the prefix kept");
        assert!(after[9..].iter().all(|(_, value)| value.starts_with("after-")), "then the new batch");
        let reopened = with_log(dir.path(), small_config(), |log| async move {
            let all = read_all(&log, 0).await;
            log.close().await.unwrap();
            all
        });
        assert_eq!(reopened, after, "recovery finds what was read");
    }
}

// The same for a reset (a follower whose leader's log starts past its
// end): cancelled between its truncation and its roll, the log end stood
// at the new offset over the old, emptied segment.
#[test]
fn a_reset_whose_caller_stops_waiting_runs_to_its_end() {
    for polls in [1, 2, 3, 5, 8, 13, 21] {
        let dir = tempfile::tempdir().unwrap();
        let after = with_log(dir.path(), small_config(), move |log| async move {
            for round in 0..60 {
                append_values(&log, &values(&format!("r{round}"), 3), round).await;
            }
            poll_then_drop(log.reset_to(1000), polls).await;
            log.detached_changes_settled().await;
            let snapshot = log.snapshot();
            assert_eq!((snapshot.log_start_offset, snapshot.log_end_offset), (1000, 1000), "after {polls} polls");
            let appended = append_values(&log, &values("after", 3), 99).await;
            assert_eq!(appended.base_offset, 1000);
            let after = read_all(&log, 1000).await;
            log.close().await.unwrap();
            after
        });
        assert_eq!(after.iter().map(|(offset, _)| *offset).collect::<Vec<_>>(), [1000, 1001, 1002], "{polls} polls");
    }
}

// And for a replica's append (the follower's session ended while it
// waited for buffer room or rolled): cancelled, it left bytes in the
// writer that its segment did not count, and the next append failed.
#[test]
fn a_replica_append_whose_caller_stops_waiting_runs_to_its_end() {
    // About 27 KB: more than the three 8 KiB write buffers, and more than
    // a 16 KiB segment, so the append rolls and waits for room.
    let replica_batch = |base_offset: u64, prefix: &str| {
        let mut batch = batch_of(&values(prefix, 300), 1);
        ringlog::storage::batch::stamp_batch(&mut batch, base_offset, 1);
        bytes::Bytes::from(batch)
    };
    for polls in [1, 2, 3, 5, 8, 13] {
        let dir = tempfile::tempdir().unwrap();
        let all = with_log(dir.path(), small_config(), move |log| async move {
            append_values(&log, &values("first", 3), 0).await;
            poll_then_drop(log.append_replica_placed(replica_batch(3, "big")), polls).await;
            log.detached_changes_settled().await;
            assert_eq!(log.snapshot().log_end_offset, 303, "after {polls} polls");
            let placed = log.append_replica_placed(replica_batch(303, "next")).await.expect("the next append");
            let _durable = log.wait_durable(placed).await.expect("durable");
            let all = read_all(&log, 0).await;
            log.close().await.unwrap();
            all
        });
        let offsets: Vec<u64> = all.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, (0..603).collect::<Vec<u64>>(), "after {polls} polls");
    }
}

// Retention leaves a failed partition alone: its state may not be what its
// disk holds (a truncation that failed half-way trimmed the epoch history
// retention would have stored over the one on disk).
#[test]
fn retention_leaves_a_failed_partition_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (deleted, before, after) = with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        for round in 0..60 {
            append_values(&log, &values(&format!("f{round}"), 3), round).await;
        }
        let before = segment_files(&path);
        faults.fail_after(FaultOperation::Fsync, 0, libc::EIO);
        assert!(append_values_result(&log).await.is_err(), "the failed fdatasync stops the partition");
        assert!(log.snapshot().failure.is_some());
        let policy = RetentionPolicy { retention_bytes: 1, retention_ms: 0 };
        let deleted = log.apply_retention(policy, 0).await;
        let after = segment_files(&path);
        log.abandon().await;
        (deleted.map_err(|error| error.to_string()), before, after)
    });
    assert_eq!(deleted, Ok(Vec::new()), "nothing deleted");
    assert_eq!(
        before.iter().filter(|name| name.ends_with(".log")).count(),
        after.iter().filter(|name| name.ends_with(".log")).count()
    );
}

// Defect 9: a crash inside a truncation neither resurrects later segments nor leaves a hole.
#[test]
fn crash_inside_a_truncation_before_the_cut_resurrects_no_later_segment() {
    let dir = tempfile::tempdir().unwrap();
    let written = with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        for round in 0..120 {
            append_values(&log, &values(&format!("t{round}"), 3), round).await;
        }
        let written = read_all(&log, 0).await;
        faults.fail_after(FaultOperation::Truncate, 0, libc::EIO);
        assert!(log.truncate_to(10).await.is_err(), "the cut fails: the process 'crashes' here");
        log.abandon().await;
        written
    });
    let (fence, all) = with_log(dir.path(), small_config(), |log| async move {
        let fence = log.snapshot().fence;
        let all = read_all(&log, 0).await;
        log.close().await.unwrap();
        (fence, all)
    });
    assert!(fence.is_none(), "{fence:?}");
    // The kept segment may still hold its uncut suffix; nothing past it does.
    assert!(all.len() < written.len() / 2, "later segments came back: {} records", all.len());
    assert_eq!(all[..], written[..all.len()], "a prefix of the log, dense");
}

// Defect 11: a truncation keeps the segment's true maximum timestamp.
#[test]
fn truncation_keeps_the_segments_maximum_timestamp_for_time_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig { segment_bytes: 1 << 20, index_interval_bytes: 64 * 1024, ..small_config() };
    let found = with_log(dir.path(), config, |log| async move {
        // Timestamps rise by 1 per record; the time index gets one entry.
        for round in 0..30 {
            append_values(&log, &values(&format!("m{round}"), 3), 1000 + round * 10).await;
        }
        log.truncate_to(60).await.unwrap();
        // Record 59 (timestamp 1000 + 19*10 + 2) is the newest kept record.
        let found = log.find_offset_by_timestamp(1000 + 19 * 10 + 2).await.unwrap();
        log.close().await.unwrap();
        found
    });
    assert_eq!(found, Some(59));
}

// Defect 5 and 6: a disk-full rollback never lets a batch be acknowledged at
// offsets that hold other data, whatever awaits it lands between.
#[test]
fn disk_full_rollbacks_under_concurrent_appends_never_acknowledge_misplaced_batches() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig { segment_bytes: 1 << 20, ..small_config() };
    let acked = with_faulty_log(dir.path(), config, move |log, faults| async move {
        let log = Rc::new(log);
        let acked = Rc::new(std::cell::RefCell::new(Vec::new()));
        let refused = Rc::new(std::cell::RefCell::new(Vec::new()));
        let epoch = Rc::new(std::cell::Cell::new(1u32));
        let mut tasks = Vec::new();
        for appender in 0..6u32 {
            let (log, acked, epoch) = (Rc::clone(&log), Rc::clone(&acked), Rc::clone(&epoch));
            let refused = Rc::clone(&refused);
            tasks.push(ringlog::runtime::spawn_local(async move {
                for round in 0..60u32 {
                    let batch_values = values(&format!("d{appender}-{round}"), 1 + (round % 3) as usize);
                    let mut batch = batch_of(&batch_values, 0);
                    // A new epoch per append makes most appends await the
                    // epoch store between placing and copying.
                    epoch.set(epoch.get() + 1);
                    let leader_epoch = epoch.get();
                    match log.append(&mut batch, AppendMode::Leader { leader_epoch }).await {
                        Ok(info) => acked.borrow_mut().push((info.base_offset, batch_values)),
                        Err(StorageError::DiskFull { .. }) => refused.borrow_mut().extend(batch_values),
                        Err(StorageError::StorageFailed { .. }) => {}
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
            }));
        }
        for cycle in 0..40 {
            faults.fail_after(FaultOperation::Write, cycle % 3, libc::ENOSPC);
            ringlog::runtime::sleep(Duration::from_millis(4)).await;
            faults.clear(FaultOperation::Write);
            ringlog::runtime::sleep(Duration::from_millis(4)).await;
        }
        for task in tasks {
            task.await;
        }
        let acked = acked.borrow().clone();
        let refused = refused.borrow().clone();
        assert!(log.snapshot().failure.is_none(), "{:?}", log.snapshot().failure);
        log.close().await.unwrap();
        (acked, refused)
    });
    let (acked, refused) = acked;
    assert!(!acked.is_empty());
    let all = with_log(dir.path(), small_config(), |log| async move {
        let all = read_all(&log, 0).await;
        log.close().await.unwrap();
        all
    });
    for (offset, (expected_offset, _)) in all.iter().enumerate() {
        assert_eq!(offset as u64, *expected_offset, "offsets dense");
    }
    for (base_offset, batch_values) in acked {
        for (i, value) in batch_values.iter().enumerate() {
            let at = all.get((base_offset + i as u64) as usize).map(|(_, value)| value);
            assert_eq!(at, Some(value), "acknowledged record at {}", base_offset + i as u64);
        }
    }
    // A batch answered disk_full is not in the log: a retry will not duplicate it.
    let stored: std::collections::HashSet<&String> = all.iter().map(|(_, value)| value).collect();
    for value in &refused {
        assert!(!stored.contains(value), "{value} was refused with disk_full yet is in the log");
    }
}

// Defect 13: a damaged clean-shutdown marker never panics recovery.
#[test]
fn clean_marker_pointing_past_its_own_end_falls_back_to_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    with_log(dir.path(), small_config(), |log| async move {
        append_values(&log, &values("k", 5), 0).await;
        log.close().await.unwrap();
    });
    let marker = ringlog::storage::markers::CleanShutdown {
        active_base_offset: 0,
        active_size_bytes: 10,
        last_batch_position: 4096,
    };
    ringlog::storage::markers::store_clean_shutdown(dir.path(), &marker).unwrap();
    let (end, clean) = with_log(dir.path(), small_config(), |log| async move {
        let result = (log.snapshot().log_end_offset, log.recovery_report().clean);
        log.close().await.unwrap();
        result
    });
    assert_eq!((end, clean), (5, false));
}

// Defect 12: disk full while sealing a segment is disk_full, and the roll resumes.
#[test]
fn disk_full_while_sealing_a_segment_is_reported_and_the_roll_resumes_later() {
    let dir = tempfile::tempdir().unwrap();
    let written = with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        let mut round = 0;
        while log.snapshot().segments == 1 {
            append_values(&log, &values(&format!("e{round}"), 3), round).await;
            round += 1;
        }
        let segments = log.snapshot().segments;
        faults.fail_after(FaultOperation::Metadata, 0, libc::ENOSPC);
        let mut refused = None;
        for attempt in 0..200 {
            if let Err(error) = append_values_result(&log).await {
                refused = Some((attempt, error));
                break;
            }
        }
        let (_, error) = refused.expect("the next roll meets the full disk");
        assert!(matches!(error, StorageError::DiskFull { .. }), "{error}");
        assert!(log.snapshot().failure.is_none(), "disk full is not fail-stop");
        faults.clear(FaultOperation::Metadata);
        append_values(&log, &values("after", 3), 0).await;
        assert!(log.snapshot().segments > segments, "the roll happened once space returned");
        let written = read_all(&log, 0).await;
        log.abandon().await;
        written
    });
    let (fence, all) = with_log(dir.path(), small_config(), |log| async move {
        let result = (log.snapshot().fence, read_all(&log, 0).await);
        log.close().await.unwrap();
        result
    });
    assert!(fence.is_none(), "{fence:?}");
    assert_eq!(all, written);
}

// Defect 12: a failed epoch store leaves no epoch behind in memory.
#[test]
fn failed_epoch_store_leaves_the_epoch_history_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        append_values(&log, &values("one", 2), 0).await;
        faults.fail_after(FaultOperation::Metadata, 0, libc::EIO);
        let mut batch = batch_of(&values("two", 2), 0);
        assert!(log.append(&mut batch, AppendMode::Leader { leader_epoch: 2 }).await.is_err());
        faults.clear(FaultOperation::Metadata);
        assert_eq!(log.epochs().latest_epoch(), Some(1), "epoch 2 never began");
        // Epoch 1 may still append: nothing in the log is from epoch 2.
        append_values(&log, &values("again", 2), 0).await;
        log.close().await.unwrap();
    });
}

// Defect 12: an EIO among the writes settled during a disk-full rollback fail-stops.
#[test]
fn an_eio_beside_a_disk_full_write_fail_stops_instead_of_rolling_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig { segment_bytes: 1 << 20, max_batch_bytes: 64 * 1024, ..small_config() };
    with_faulty_log(dir.path(), config, move |log, faults| async move {
        append_values(&log, &values("ok", 3), 0).await;
        // One batch of three write buffers: its writes are in flight together.
        faults.fail_next(FaultOperation::Write, &[libc::ENOSPC, libc::EIO]);
        let mut batch = batch_of(&values("big", 200), 0);
        let error = log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap_err();
        assert!(matches!(error, StorageError::StorageFailed { .. }), "{error}");
        assert!(log.snapshot().failure.is_some_and(|cause| cause.contains("errno 5")));
        log.abandon().await;
    });
}

// Defect 13: repair drops the producer snapshot that may describe removed batches.
#[test]
fn repair_removes_the_producer_snapshot_with_the_batches_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let files = sealed_segments(dir.path(), true);
    let snapshot = ringlog::storage::producers::ProducerStates::path(dir.path());
    assert!(snapshot.exists());
    let victim = dir.path().join(&files[1]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x04;
    std::fs::write(&victim, &bytes).unwrap();
    let mut report = ringlog::storage::check::CheckReport::default();
    ringlog::storage::check::check_partition(dir.path(), &small_config(), true, &mut report, &|_| {}).unwrap();
    assert!(!report.errors.is_empty());
    assert!(!snapshot.exists(), "repaired: {:?}", report.repaired);
    assert!(reopened_fence(dir.path()).is_none());
}

/// Run `body` on an executor; fail (instead of hanging CI) if it does not
/// finish within `limit`.
fn within<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    limit: Duration,
    body: impl FnOnce() -> Fut + Send + 'static,
) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(on_executor(body));
    });
    receiver.recv_timeout(limit).expect("finished in time (a deadlock otherwise)")
}

// Review finding: close() while a disk-full rollback waits for the gate.
#[test]
fn close_during_a_disk_full_rollback_does_not_deadlock() {
    for round in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        within(Duration::from_secs(20), move || async move {
            let faults = FaultInjector::new();
            let log = Rc::new(PartitionLog::open(&path, small_config(), Some(faults.clone())).await.unwrap());
            append_values(&log, &values("ok", 3), 0).await;
            faults.fail_next(FaultOperation::Write, &[libc::ENOSPC]);
            let appending = Rc::clone(&log);
            let appender = ringlog::runtime::spawn_local(async move { append_values_result(&appending).await });
            ringlog::runtime::sleep(Duration::from_micros(round * 50)).await;
            let _ = log.close().await;
            let _ = appender.await;
        });
        // Whatever the interleaving, the acknowledged records survive.
        let all = with_log(dir.path(), small_config(), |log| async move {
            let all = read_all(&log, 0).await;
            log.close().await.unwrap();
            all
        });
        assert!(all.len() >= 3, "round {round}: {} records", all.len());
    }
}

// Review finding: a crash inside a reset (after the roll, before the old
// segment is removed) leaves an empty first segment; recovery tidies it.
#[test]
fn crash_inside_a_reset_recovers_the_reset_log_instead_of_fencing() {
    let dir = tempfile::tempdir().unwrap();
    with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        append_values(&log, &values("r", 5), 0).await;
        // The truncation to the log start unlinks three files (the kept
        // segment's two indexes and the producer snapshot) and the roll
        // succeeds; removing the old segment fails, as a crash at that
        // moment would leave it.
        faults.fail_after(FaultOperation::Unlink, 3, libc::EIO);
        assert!(log.reset_to(1000).await.is_err());
        log.abandon().await;
    });
    let snapshot = with_log(dir.path(), small_config(), |log| async move {
        let snapshot = log.snapshot();
        log.close().await.unwrap();
        snapshot
    });
    assert!(snapshot.fence.is_none(), "{:?}", snapshot.fence);
    assert_eq!((snapshot.log_start_offset, snapshot.log_end_offset), (1000, 1000));
}

// Review finding: a batch's length is not under its CRC. Damaged so that
// the batch runs far into the segment, every read of it allocated and read
// that much before the CRC failed; the offset index, whose entries sit at
// batch starts, proves such a length wrong without reading.
#[test]
fn a_damaged_batch_length_fences_without_reading_as_far_as_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        segment_bytes: 1 << 20,
        preallocate_bytes: 1 << 20,
        max_batch_bytes: 8 * 1024,
        ..small_config()
    };
    let written = with_log(dir.path(), config.clone(), |log| async move {
        for round in 0..150 {
            append_values(&log, &[format!("{round:04}{}", "v".repeat(1000))], round).await;
        }
        let written = log.snapshot().log_end_offset;
        log.close().await.unwrap();
        written
    });
    assert_eq!(written, 150);
    let segment = last_segment(dir.path());
    let damaged_length: u32 = 150 * 1024;
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, &damaged_length.to_le_bytes(), 8).unwrap();
    let (result, read_bytes) = with_log(dir.path(), config, |log| async move {
        let before = log.stats().segment_read_bytes;
        let result = log.read(0, 1, None).await;
        let read_bytes = log.stats().segment_read_bytes - before;
        log.abandon().await;
        (result, read_bytes)
    });
    let by_the_index =
        matches!(&result, Err(StorageError::Fenced { position: 0, reason, .. }) if reason.contains("offset index"));
    assert!(by_the_index, "{result:?}");
    assert!(read_bytes < u64::from(damaged_length), "read {read_bytes} bytes for a batch that says {damaged_length}");
}

// Review finding: a reset whose roll failed had already moved the log's end
// to the reset offset over the empty segment at the log start. The next
// append landed at position 0 of that segment under the new offsets, and a
// read from the log start fenced the healthy partition.
#[test]
fn a_reset_that_fails_leaves_a_log_that_appends_and_reads_without_fencing() {
    for successes in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let (reset_failed, read) = with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
            append_values(&log, &values("r", 5), 0).await;
            faults.fail_after(FaultOperation::Metadata, successes, libc::ENOSPC);
            let reset = log.reset_to(1000).await;
            faults.clear(FaultOperation::Metadata);
            let mut batch = batch_of(&values("after", 3), 0);
            let appended = log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await;
            let start = log.snapshot().log_start_offset;
            let read = read_all(&log, start).await;
            assert!(log.snapshot().fence.is_none(), "{successes}: {:?}", log.snapshot().fence);
            if let Ok(appended) = appended {
                let offsets: Vec<u64> = read.iter().map(|(offset, _)| *offset).collect();
                let expected: Vec<u64> = (appended.base_offset..appended.next_offset).collect();
                assert!(offsets.ends_with(&expected), "{successes}: appended {expected:?}, read {offsets:?}");
            }
            log.close().await.unwrap();
            (reset.is_err(), read)
        });
        let reopened = with_log(dir.path(), small_config(), |log| async move {
            let snapshot = log.snapshot();
            let read = read_all(&log, snapshot.log_start_offset).await;
            log.close().await.unwrap();
            (snapshot, read)
        });
        assert!(reopened.0.fence.is_none(), "{successes}: {:?}", reopened.0.fence);
        assert_eq!(reopened.1, read, "{successes}: the reopened log reads as before");
        if successes == 0 {
            assert!(reset_failed, "the first metadata write of the reset fails");
        }
    }
}

// Review finding: reads racing a multi-segment truncation read a map and a
// writer that disagree; they must never fence a healthy partition.
#[test]
fn reads_racing_a_truncation_never_fence_a_healthy_partition() {
    for round in 0..10u64 {
        let dir = tempfile::tempdir().unwrap();
        let fence = with_log(dir.path(), small_config(), move |log| async move {
            for batch in 0..300 {
                append_values(&log, &values(&format!("t{batch}"), 3), batch).await;
            }
            let log = Rc::new(log);
            let reading = Rc::clone(&log);
            let reader = ringlog::runtime::spawn_local(async move {
                for attempt in 0..400u64 {
                    let offset = (attempt * 37 + round) % 800;
                    let _ = reading.read(offset, 4096, None).await;
                    ringlog::runtime::sleep(Duration::from_micros(20)).await;
                }
            });
            ringlog::runtime::sleep(Duration::from_micros(round * 100)).await;
            log.truncate_to(10 + round).await.unwrap();
            reader.await;
            let fence = log.snapshot().fence;
            log.close().await.unwrap();
            fence
        });
        assert!(fence.is_none(), "round {round}: {fence:?}");
    }
}

// Defect 10: check compares index files with the log they describe.
#[test]
fn check_reports_an_index_entry_that_names_no_batch() {
    let dir = tempfile::tempdir().unwrap();
    let files = sealed_segments(dir.path(), true);
    assert!(check_errors(dir.path(), &small_config()).is_empty());
    let index = dir.path().join(files[1].replace(".log", ".index"));
    let loaded = ringlog::storage::index::OffsetIndex::from_file_bytes(&std::fs::read(&index).unwrap()).unwrap();
    let mut bytes = loaded.as_bytes().to_vec();
    assert!(bytes.len() >= 16, "the segment has at least two index entries");
    // Move the second entry's position by 8 bytes: still increasing and
    // inside the segment (the shape check passes), but no batch starts there.
    // Written with a valid checksum, as a bug of ours would write it.
    let position = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) + 8;
    bytes[12..16].copy_from_slice(&position.to_le_bytes());
    std::fs::write(&index, ringlog::storage::index::OffsetIndex::from_bytes(bytes).file_bytes()).unwrap();
    let errors = check_errors(dir.path(), &small_config());
    assert!(errors.iter().any(|reason| reason.contains("not a batch start")), "{errors:?}");
}

// Defect 10, second half: index files carry a checksum. This flip keeps the
// time index increasing and inside the segment, so only the checksum sees it.
#[test]
fn a_bit_flip_in_a_sealed_time_index_is_caught_by_its_checksum_and_lookups_stay_right() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    with_log(dir.path(), config.clone(), |log| async move {
        for round in 0..200 {
            append_values(&log, &values(&format!("t{round}"), 3), 1000 + round * 10).await;
        }
        log.close().await.unwrap();
    });
    let first = segment_files(dir.path())[0].clone();
    let time_path = dir.path().join(first.replace(".log", ".timeindex"));
    let mut bytes = std::fs::read(&time_path).unwrap();
    let index = ringlog::storage::index::TimeIndex::from_file_bytes(&bytes).unwrap();
    assert!(index.len() >= 3, "the first segment has a time index to damage");
    let (timestamp_ms, relative) = index.entry(1);
    let (_, next_relative) = index.entry(2);
    assert!(next_relative >= relative + 6, "entries at least two batches apart");
    // Entry 1 now sends a lookup just past its timestamp two batches too far.
    let entry = ringlog::storage::index::TIME_ENTRY_BYTES;
    bytes[entry + 8..entry + 12].copy_from_slice(&(next_relative - 1).to_le_bytes());
    std::fs::write(&time_path, &bytes).unwrap();
    let errors = check_errors(dir.path(), &config);
    assert!(errors.iter().any(|error| error.contains("ChecksumMismatch")), "{errors:?}");
    let target_ms = timestamp_ms + 1;
    let found = with_log(dir.path(), config, move |log| async move {
        let found = log.find_offset_by_timestamp(target_ms).await.unwrap();
        log.close().await.unwrap();
        found
    });
    // Offset 3r + j holds timestamp 1000 + 10r + j.
    let expected = (0..600u64).find(|&offset| 1000 + 10 * (offset / 3) as i64 + (offset % 3) as i64 >= target_ms);
    assert_eq!(found, expected);
}

// Found by the crash simulation's lost unlinks: retention deleting two
// segments, crashed after the first one's files and the second's log were
// unlinked. Directory entries persist in any order, so the first segment's
// unlink may be lost while the second's is not: without a directory fsync
// between segments that left a hole, and a healthy partition fenced.
#[test]
fn a_crash_between_the_unlinks_of_a_retention_never_leaves_a_hole_that_fences() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let deleted = on_executor(move || async move {
        let faults = FaultInjector::with_crash_journal();
        let log = PartitionLog::open(&path, small_config(), Some(faults.clone())).await.unwrap();
        for round in 0..400 {
            append_values(&log, &values(&format!("r{round}"), 3), round).await;
        }
        let files = segment_files(&path);
        assert!(files.len() > 4, "{files:?}");
        // Keep the last two segments' worth: several segments expire at once.
        let policy = RetentionPolicy { retention_bytes: 2 * small_config().segment_bytes, retention_ms: 0 };
        faults.crash_after_unlinks(4);
        assert!(log.apply_retention(policy, 0).await.is_err(), "the crash interrupts the retention");
        log.abandon().await;
        // Of the unlinks no directory fsync covered, the first comes back.
        let restored = faults.restore_lost_unlinks(&mut |index| index == 0).unwrap();
        assert_eq!(restored, 1);
        files
    });
    let fence = reopened_fence(dir.path());
    assert!(fence.is_none(), "{fence:?} (segments before: {deleted:?}, after: {:?})", segment_files(dir.path()));
}

// Nemesis anomaly H: a truncation (a follower cutting a divergent suffix)
// on a full disk answers disk_full and leaves the log as it was, instead of
// fail-stopping the partition until a restart; it succeeds once space is back.
#[test]
fn a_truncation_on_a_full_disk_answers_disk_full_and_succeeds_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        for round in 0..200 {
            append_values(&log, &values(&format!("d{round}"), 3), round).await;
        }
        let before = log.snapshot();
        assert!(before.segments > 2, "the cut removes later segments");
        faults.fail_after(FaultOperation::Metadata, 0, libc::ENOSPC);
        match log.truncate_to(30).await {
            Err(StorageError::DiskFull { .. }) => {}
            other => panic!("expected disk_full, got {other:?}"),
        }
        let after = log.snapshot();
        assert!(after.failure.is_none() && after.fence.is_none(), "{:?} {:?}", after.failure, after.fence);
        assert_eq!((after.log_end_offset, after.segments), (before.log_end_offset, before.segments));
        assert_eq!(read_all(&log, 0).await.len(), 600, "every record still served");
        faults.clear(FaultOperation::Metadata);
        assert_eq!(log.truncate_to(30).await.unwrap(), 30);
        let appended = append_values(&log, &values("after", 2), 1000).await;
        assert_eq!(appended.base_offset, 30);
        log.close().await.unwrap();
    });
    let records = with_log(dir.path(), small_config(), |log| async move {
        let records = read_all(&log, 0).await;
        log.close().await.unwrap();
        records
    });
    assert_eq!(records.len(), 32);
}

async fn append_in_epoch(log: &PartitionLog, epoch: u32, rounds: u64) {
    for round in 0..rounds {
        let mut batch = batch_of(&values(&format!("e{epoch}-{round}"), 3), round as i64);
        let info = log.append(&mut batch, AppendMode::Leader { leader_epoch: epoch }).await.unwrap();
        assert_eq!(info.next_offset - info.base_offset, 3);
    }
}

// Review finding: a truncation's trimmed epoch history must not become
// durable before the later segments are gone. Recovery re-reads only the
// last segment's epochs, so a checkpoint that says less than the segments
// on disk hold moved the start of an epoch (and with it the divergence
// point a returning replica is told).
#[test]
fn a_truncation_that_fails_before_its_unlinks_leaves_the_epoch_history_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (before, epoch_five_start) = with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        append_in_epoch(&log, 3, 60).await;
        let epoch_five_start = log.snapshot().log_end_offset;
        append_in_epoch(&log, 5, 150).await;
        assert!(log.snapshot().segments > 4);
        let before = log.epochs();
        faults.fail_after(FaultOperation::Unlink, 0, libc::EIO);
        assert!(log.truncate_to(epoch_five_start - 9).await.is_err());
        log.abandon().await;
        (before, epoch_five_start)
    });
    let after = with_log(dir.path(), small_config(), |log| async move {
        let epochs = log.epochs();
        log.close().await.unwrap();
        epochs
    });
    assert_eq!(after.end_offset_for(3, u64::MAX), Some((3, epoch_five_start)), "{after:?}");
    assert_eq!(after, before);
}
