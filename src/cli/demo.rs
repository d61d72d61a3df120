//! `ringlog storage-demo`: append, read back and close a real partition,
//! printing what the engine did. The quick start's first command until the
//! network node exists.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use super::{fail, EXIT_ENVIRONMENT, EXIT_FAILURE, EXIT_OK};
use crate::storage::batch::BatchBuilder;
use crate::storage::lock::DataDirLock;
use crate::storage::{AppendMode, FsyncPolicy, PartitionLog, StorageConfig, StorageResult};

/// Run the demo.
pub fn run(data_dir: &Path, records: u64, batch: u32, fsync: &str) -> ExitCode {
    let policy: FsyncPolicy = match fsync.parse() {
        Ok(policy) => policy,
        Err(message) => return fail(message, super::EXIT_USAGE),
    };
    let lock = match DataDirLock::acquire(data_dir) {
        Ok(lock) => lock,
        Err(error) => return fail(error, EXIT_FAILURE),
    };
    let dir = data_dir.join("topics").join("demo").join("0");
    let config = StorageConfig { fsync: policy, ..StorageConfig::default() };
    let batch = batch.max(1);
    let result = crate::runtime::block_on_executor("ringlog-demo", move || demo(dir, config, records, batch));
    drop(lock);
    match result {
        Ok(Ok(())) => ExitCode::from(EXIT_OK),
        Ok(Err(message)) => fail(message, EXIT_FAILURE),
        Err(error) => fail(format!("cannot run the storage executor: {error}"), EXIT_ENVIRONMENT),
    }
}

async fn demo(dir: PathBuf, config: StorageConfig, records: u64, batch: u32) -> StorageResult<()> {
    let open_started = Instant::now();
    let log = PartitionLog::open(&dir, config.clone(), None).await?;
    let before = log.snapshot();
    let recovery = log.recovery_report();
    println!(
        "opened {} in {:.1} ms (clean={}, scanned {} bytes): offsets {}..{}",
        dir.display(),
        open_started.elapsed().as_secs_f64() * 1000.0,
        recovery.clean,
        recovery.scanned_bytes,
        before.log_start_offset,
        before.log_end_offset
    );
    let value = vec![b'x'; 1000];
    let mut builder = BatchBuilder::new();
    let started = Instant::now();
    let mut appended = 0u64;
    while appended < records {
        builder.clear();
        let count = u64::from(batch).min(records - appended);
        for _ in 0..count {
            builder.push(crate::runtime::clock::wall_ms(), None, &value, &[]);
        }
        let mut encoded = builder.finish().to_vec();
        let _durable = log.append(&mut encoded, AppendMode::Leader { leader_epoch: 1 }).await?;
        appended += count;
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = log.stats();
    println!(
        "appended {appended} records of 1000 bytes in {seconds:.2} s ({:.0} records/s, {:.1} MB/s) with fsync={:?}: {} fsyncs, {} write rounds",
        appended as f64 / seconds,
        appended as f64 * 1000.0 / seconds / 1e6,
        config.fsync,
        stats.fsyncs,
        stats.write_rounds
    );
    let read_started = Instant::now();
    let mut offset = before.log_end_offset;
    let mut read_records = 0u64;
    loop {
        let batches = log.read(offset, 1 << 20, None).await?;
        if batches.batch_count == 0 {
            break;
        }
        read_records += batches.next_offset - offset;
        offset = batches.next_offset;
    }
    println!("read back {read_records} records (CRC verified) in {:.2} s", read_started.elapsed().as_secs_f64());
    log.close().await?;
    let after = log.snapshot();
    println!(
        "closed cleanly: {} segments, {} bytes, log end {}",
        after.segments, after.size_bytes, after.log_end_offset
    );
    Ok(())
}
