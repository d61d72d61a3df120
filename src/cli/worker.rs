//! Hidden `__append-worker`: appends forever with several concurrent
//! appenders and prints one line per acknowledged batch on stdout:
//! `ack <base_offset> <appender> <sequence> <records>`. Crash tests SIGKILL
//! it and check that every acknowledged batch survived.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use thiserror::Error;

use super::{fail, EXIT_ENVIRONMENT, EXIT_FAILURE, EXIT_OK};
use crate::storage::batch::BatchBuilder;
use crate::storage::{AppendMode, FsyncPolicy, PartitionLog, StorageConfig, StorageError};

/// Why the worker stopped (other than being killed).
#[derive(Debug, Error)]
enum WorkerError {
    /// The partition could not be opened or appended to.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An acknowledgement line could not be written: the crash test
    /// reading it is gone, so nothing more may be acknowledged.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

/// The value of record `record` in batch `sequence` of `appender`.
pub fn worker_value(appender: u32, sequence: u64, record: u32) -> String {
    format!("a{appender}-s{sequence}-r{record}-{}", "p".repeat((sequence % 200) as usize))
}

/// Records in batch `sequence`.
pub fn worker_batch_records(sequence: u64) -> u32 {
    1 + (sequence % 7) as u32
}

/// Run until killed.
pub fn run(dir: &Path, appenders: u32, fsync: &str, segment_bytes: u64) -> ExitCode {
    let policy: FsyncPolicy = match fsync.parse() {
        Ok(policy) => policy,
        Err(message) => return fail(message, super::EXIT_USAGE),
    };
    let config = StorageConfig {
        fsync: policy,
        segment_bytes,
        write_buffer_bytes: 64 * 1024,
        preallocate_bytes: 256 * 1024,
        max_batch_bytes: (segment_bytes as usize).min(StorageConfig::default().max_batch_bytes),
        ..StorageConfig::default()
    };
    let dir = dir.to_path_buf();
    match crate::runtime::block_on_executor("ringlog-worker", move || work(dir, config, appenders)) {
        Ok(Ok(())) => ExitCode::from(EXIT_OK),
        Ok(Err(message)) => fail(message, EXIT_FAILURE),
        Err(error) => fail(error, EXIT_ENVIRONMENT),
    }
}

async fn work(dir: PathBuf, config: StorageConfig, appenders: u32) -> Result<(), WorkerError> {
    let log = PartitionLog::open(&dir, config, None).await?;
    println!("ready {}", log.snapshot().log_end_offset);
    std::io::stdout().flush().map_err(WorkerError::Stdout)?;
    let log = Rc::new(log);
    let mut tasks = Vec::new();
    for appender in 0..appenders {
        let log = Rc::clone(&log);
        tasks.push(crate::runtime::spawn_local(async move { append_forever(&log, appender).await }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

async fn append_forever(log: &PartitionLog, appender: u32) -> Result<(), WorkerError> {
    let mut builder = BatchBuilder::new();
    for sequence in 0u64.. {
        builder.clear();
        let records = worker_batch_records(sequence);
        for record in 0..records {
            builder.push(sequence as i64, None, worker_value(appender, sequence, record).as_bytes(), &[]);
        }
        let mut batch = builder.finish().to_vec();
        let info = log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await?;
        // One write per line so a kill never leaves a half line that parses.
        let line = format!("ack {} {appender} {sequence} {records}\n", info.base_offset);
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(line.as_bytes()).map_err(WorkerError::Stdout)?;
        stdout.flush().map_err(WorkerError::Stdout)?;
    }
    Ok(())
}
