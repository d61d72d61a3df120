//! Fault injection: failed writes and fsyncs fail-stop the partition
//! (never retried, nothing after them acknowledged); disk-full is
//! reported and recoverable.

use std::rc::Rc;

use ringlog::protocol::ErrorCode;
use ringlog::shard::wire_error::storage_error_code as wire_code;
use ringlog::storage::io::FaultOperation;
use ringlog::storage::{AppendMode, PartitionLog, StorageError};

use crate::common::{batch_of, read_all, small_config, values, with_faulty_log, with_log};

async fn try_append(log: &PartitionLog, prefix: &str) -> Result<u64, StorageError> {
    let mut batch = batch_of(&values(prefix, 2), 0);
    log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.map(|info| info.base_offset)
}

#[test]
fn failed_fsync_fail_stops_the_partition_and_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let acked = with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        let mut acked = Vec::new();
        for i in 0..3 {
            acked.push(try_append(&log, &format!("ok{i}")).await.unwrap());
        }
        faults.fail_after(FaultOperation::Fsync, 0, libc::EIO);
        // Several appenders waiting on the failing group commit all see the error.
        let log = Rc::new(log);
        let mut waiting = Vec::new();
        for i in 0..4 {
            let log = Rc::clone(&log);
            waiting.push(ringlog::runtime::spawn_local(async move { try_append(&log, &format!("bad{i}")).await }));
        }
        for task in waiting {
            let error = task.await.unwrap_err();
            assert!(matches!(error, StorageError::StorageFailed { .. }), "{error}");
            assert!(error.to_string().contains("errno 5"), "error names the errno: {error}");
            assert!(error.to_string().contains(".log"), "error names the file: {error}");
        }
        let attempts = faults.attempts(FaultOperation::Fsync);
        faults.clear(FaultOperation::Fsync);
        let later = try_append(&log, "later").await.unwrap_err();
        assert!(matches!(later, StorageError::StorageFailed { .. }), "{later}");
        assert_eq!(wire_code(&later), ErrorCode::StorageFailed);
        assert!(log.snapshot().failure.is_some());
        ringlog::runtime::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(faults.attempts(FaultOperation::Fsync), attempts, "no fsync after the failure");
        log.abandon().await;
        acked
    });
    with_log(dir.path(), small_config(), move |log| async move {
        let all = read_all(&log, 0).await;
        for base in acked {
            assert!(all.iter().any(|(offset, _)| *offset == base), "acknowledged batch {base} survived");
        }
        assert!(all[..6].iter().all(|(_, value)| value.starts_with("ok")));
        log.close().await.unwrap();
    });
}

#[test]
fn failed_write_fail_stops_and_acknowledges_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        try_append(&log, "ok").await.unwrap();
        faults.fail_after(FaultOperation::Write, 0, libc::EIO);
        let error = try_append(&log, "bad").await.unwrap_err();
        assert_eq!(wire_code(&error), ErrorCode::StorageFailed);
        faults.clear(FaultOperation::Write);
        assert_eq!(wire_code(&try_append(&log, "after").await.unwrap_err()), ErrorCode::StorageFailed);
        assert_eq!(log.snapshot().durable_end_offset, 2, "nothing after the failure is acknowledged");
        assert_eq!(read_all(&log, 0).await.len(), 2, "reads still serve the durable prefix");
        log.abandon().await;
    });
}

#[test]
fn disk_full_on_preallocation_fails_cleanly_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        faults.fail_after(FaultOperation::Preallocate, 0, libc::ENOSPC);
        try_append(&log, "first").await.unwrap_err();
        faults.clear(FaultOperation::Preallocate);
        try_append(&log, "first").await.unwrap();
        faults.fail_after(FaultOperation::Preallocate, 0, libc::ENOSPC);
        let mut acked = 2;
        // Appends succeed while preallocated space lasts, then report disk_full.
        let error = loop {
            match try_append(&log, "fill").await {
                Ok(_) => acked += 2,
                Err(error) => break error,
            }
        };
        assert!(matches!(error, StorageError::DiskFull { .. }), "{error}");
        assert_eq!(wire_code(&error), ErrorCode::DiskFull);
        assert!(log.snapshot().failure.is_none(), "disk full is not fail-stop");
        let end = log.snapshot().log_end_offset;
        assert_eq!(end, acked);
        faults.clear(FaultOperation::Preallocate);
        assert_eq!(try_append(&log, "again").await.unwrap(), end, "appends resume at the log end");
        log.close().await.unwrap();
    });
}

#[test]
fn disk_full_during_a_write_rolls_back_only_unacknowledged_batches() {
    let dir = tempfile::tempdir().unwrap();
    with_faulty_log(dir.path(), small_config(), move |log, faults| async move {
        for i in 0..5 {
            try_append(&log, &format!("ok{i}")).await.unwrap();
        }
        faults.fail_after(FaultOperation::Write, 0, libc::ENOSPC);
        let error = try_append(&log, "lost").await.unwrap_err();
        assert!(matches!(error, StorageError::DiskFull { .. }), "{error}");
        assert_eq!(log.snapshot().log_end_offset, 10, "unacknowledged batch rolled back");
        faults.clear(FaultOperation::Write);
        assert_eq!(try_append(&log, "next").await.unwrap(), 10);
        log.abandon().await;
    });
    with_log(dir.path(), small_config(), move |log| async move {
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 12);
        assert!(all.iter().all(|(_, value)| !value.starts_with("lost")));
        assert!(all[10].1.starts_with("next"));
        log.close().await.unwrap();
    });
}
