//! Helpers shared by the integration tests.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringlog::storage::batch::{BatchBuilder, BatchIter, RecordIter, BATCH_HEADER_BYTES};
use ringlog::storage::io::FaultInjector;
use ringlog::storage::{AppendMode, FsyncPolicy, PartitionLog, StorageConfig};

/// Run `make_future` on a fresh glommio executor thread and return its output.
pub fn on_executor<F, Fut, T>(make_future: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    ringlog::runtime::block_on_executor("test", || async move {
        let output = make_future().await;
        // Files dropped without a close (an abandoned log, as a crash
        // leaves it) are closed by the reactor on its next I/O cycle; one
        // more cycle before the executor ends, so thousands of simulated
        // crashes in one process do not run out of descriptors.
        ringlog::runtime::sleep(std::time::Duration::from_millis(1)).await;
        output
    })
    .expect("executor thread completed")
}

/// Open the partition log at `path` on a fresh executor and run `body` with
/// it; `body` closes or abandons the log.
pub fn with_log<T, Fut>(
    path: &Path,
    config: StorageConfig,
    body: impl FnOnce(PartitionLog) -> Fut + Send + 'static,
) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    with_reopenable_log(path, config, move |log, _| body(log))
}

/// As [`with_log`], also handing `body` the path, to reopen the log from.
pub fn with_reopenable_log<T, Fut>(
    path: &Path,
    config: StorageConfig,
    body: impl FnOnce(PartitionLog, PathBuf) -> Fut + Send + 'static,
) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let path = path.to_path_buf();
    on_executor(move || async move { body(PartitionLog::open(&path, config, None).await.unwrap(), path).await })
}

/// As [`with_log`], with a fault injector under the log's I/O that `body`
/// arms to make chosen operations fail.
pub fn with_faulty_log<T, Fut>(
    path: &Path,
    config: StorageConfig,
    body: impl FnOnce(PartitionLog, Arc<FaultInjector>) -> Fut + Send + 'static,
) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (path, faults) = (path.to_path_buf(), FaultInjector::new());
    on_executor(move || async move {
        body(PartitionLog::open(&path, config, Some(Arc::clone(&faults))).await.unwrap(), faults).await
    })
}

/// Small segments and buffers so tests exercise rolling and buffer rotation.
pub fn small_config() -> StorageConfig {
    StorageConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 16 * 1024,
        write_buffer_bytes: 8 * 1024,
        max_write_buffers: 3,
        preallocate_bytes: 16 * 1024,
        index_interval_bytes: 512,
        max_batch_bytes: 8 * 1024,
        ..StorageConfig::default()
    }
}

/// Segments of 1 MiB: only the rolls a test makes by hand happen.
pub fn hand_rolled_config() -> StorageConfig {
    // Retention keeps a file for the next roll however full this machine's disk.
    StorageConfig { segment_bytes: 1 << 20, preallocate_bytes: 1 << 20, recycle_min_free_percent: 0, ..small_config() }
}

/// `rounds` batches of five records, each in a segment of its own: a roll
/// after each (after the last only when `roll_last`).
pub async fn batches_in_own_segments(log: &PartitionLog, rounds: u64, roll_last: bool) {
    for round in 0..rounds {
        append_values(log, &values(&format!("s{round}"), 5), round as i64).await;
        if roll_last || round + 1 < rounds {
            log.roll().await.unwrap();
        }
    }
}

/// Encode a batch of `values` with timestamps starting at `timestamp_ms`.
pub fn batch_of(values: &[String], timestamp_ms: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for (i, value) in values.iter().enumerate() {
        builder.push(timestamp_ms + i as i64, None, value.as_bytes(), &[]);
    }
    builder.finish().to_vec()
}

/// Offsets of a batch the helper appended (already checked durable).
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// First offset.
    pub base_offset: u64,
    /// Offset after the batch.
    pub next_offset: u64,
}

/// Append `values` as one batch under epoch 1; panics unless it is durable.
pub async fn append_values(log: &PartitionLog, values: &[String], timestamp_ms: i64) -> Appended {
    let mut batch = batch_of(values, timestamp_ms);
    let info = log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.expect("append");
    Appended { base_offset: info.base_offset, next_offset: info.next_offset }
}

/// Every (offset, value) from `from` to the durable end.
pub async fn read_all(log: &PartitionLog, from: u64) -> Vec<(u64, String)> {
    let mut output = Vec::new();
    let mut offset = from;
    loop {
        let batches = log.read(offset, 8192, None).await.expect("read");
        if batches.batch_count == 0 {
            return output;
        }
        output.extend(records_of(&batches.bytes, offset));
        offset = batches.next_offset;
    }
}

/// Every value from `from` to the durable end, without offsets.
pub async fn read_values(log: &PartitionLog, from: u64) -> Vec<String> {
    read_all(log, from).await.into_iter().map(|(_, value)| value).collect()
}

/// Shut the log down cleanly (`close`) or as a crash leaves it (`abandon`).
pub async fn close_or_abandon(log: PartitionLog, clean: bool) {
    if clean {
        log.close().await.unwrap();
    } else {
        log.abandon().await;
    }
}

/// Close the log cleanly and open it again from `path`.
pub async fn close_and_reopen(log: PartitionLog, path: &Path, config: StorageConfig) -> PartitionLog {
    log.close().await.unwrap();
    PartitionLog::open(path, config, None).await.unwrap()
}

/// Abandon the log as a crash leaves it and open it again from `path`.
pub async fn abandon_and_reopen(log: PartitionLog, path: &Path, config: StorageConfig) -> PartitionLog {
    log.abandon().await;
    PartitionLog::open(path, config, None).await.unwrap()
}

/// (offset, value) of every record at or after `from` in concatenated batches.
pub fn records_of(batches: &[u8], from: u64) -> Vec<(u64, String)> {
    let mut output = Vec::new();
    for item in BatchIter::new(batches, usize::MAX) {
        let (header, batch) = item.expect("verified batch");
        for (index, record) in RecordIter::new(&batch[BATCH_HEADER_BYTES..]).enumerate() {
            let record_offset = header.base_offset + index as u64;
            if record_offset >= from {
                output.push((record_offset, String::from_utf8(record.unwrap().value.to_vec()).unwrap()));
            }
        }
    }
    output
}

/// Names of the segment files in a partition directory, sorted.
pub fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".log") && name.len() == 24)
        .collect();
    names.sort();
    names
}

/// The recycled segment files (`.free`) in `dir`, sorted.
pub fn recycled_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".free"))
        .collect();
    names.sort();
    names
}

/// `length` printable characters lz4 cannot shrink (xorshift64 from and
/// advancing `state`), for data whose compressed size must stay its size.
pub fn incompressible(state: &mut u64, length: usize) -> String {
    (0..length)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            char::from(b'!' + (*state % 90) as u8)
        })
        .collect()
}

/// `count` distinct values with a prefix.
pub fn values(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:05}-{}", "v".repeat(60 + i * 7 % 60))).collect()
}

/// Assert that a partition stored exactly `expected`, value by value,
/// saying where two long values first differ (`assert_eq!` on values of
/// hundreds of kilobytes prints them whole).
pub fn assert_same_values(partition: usize, stored: &[String], expected: &[String]) {
    assert_eq!(stored.len(), expected.len(), "partition {partition}");
    for (index, (value, expected)) in stored.iter().zip(expected).enumerate() {
        let differs = value.bytes().zip(expected.bytes()).position(|(got, want)| got != want);
        assert!(
            value.len() == expected.len() && differs.is_none(),
            "partition {partition} record {index}: {} bytes, want {}, first difference at {differs:?}",
            value.len(),
            expected.len()
        );
    }
}
