//! Storage engine benchmarks: batch encode/decode with CRC, append
//! throughput (fsync=never, and fsync=always under 1/4/16 concurrent
//! appenders), recovery scan speed and index lookup.
//!
//! Data directories go under `RINGLOG_BENCH_DIR` (default: the system temp
//! dir), so the disk being measured is explicit. See docs/BENCHMARKS.md.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringlog::storage::batch::{validate_batch, BatchBuilder};
use ringlog::storage::index::OffsetIndex;
use ringlog::storage::scan::scan_segment;
use ringlog::storage::{AppendMode, FsyncPolicy, PartitionLog, StorageConfig};

const RECORD_BYTES: usize = 1024;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("RINGLOG_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn encoded_batch(records: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    let value = vec![b'r'; RECORD_BYTES];
    for i in 0..records {
        builder.push(i as i64, None, &value, &[]);
    }
    builder.finish().to_vec()
}

fn batch_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    let records = 1000;
    group.throughput(Throughput::Bytes((records * RECORD_BYTES) as u64));
    let value = vec![b'r'; RECORD_BYTES];
    let mut builder = BatchBuilder::new();
    group.bench_function("encode_1000x1KiB_with_crc", |b| {
        b.iter(|| {
            builder.clear();
            for i in 0..records {
                builder.push(i as i64, None, &value, &[]);
            }
            builder.finish().len()
        })
    });
    let batch = encoded_batch(records);
    group.bench_function("validate_1000x1KiB_crc_and_records", |b| {
        b.iter(|| validate_batch(&batch, usize::MAX).unwrap())
    });
    group.finish();
}

/// Append `batches` batches from `appenders` concurrent tasks; returns elapsed time.
fn timed_appends(config: StorageConfig, appenders: usize, batches: u64, records_per_batch: usize) -> Duration {
    let dir = bench_dir();
    let path: PathBuf = dir.path().join("p");
    let elapsed = ringlog::runtime::block_on_executor("bench", move || async move {
        let log = Rc::new(PartitionLog::open(&path, config, None).await.unwrap());
        let template = Rc::new(encoded_batch(records_per_batch));
        let started = Instant::now();
        let mut tasks = Vec::new();
        let per_task = batches.div_ceil(appenders as u64);
        for _ in 0..appenders {
            let log = Rc::clone(&log);
            let template = Rc::clone(&template);
            tasks.push(ringlog::runtime::spawn_local(async move {
                let mut batch = template.to_vec();
                for _ in 0..per_task {
                    let _ = log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let elapsed = started.elapsed();
        log.close().await.unwrap();
        elapsed
    })
    .unwrap();
    drop(dir);
    elapsed
}

fn append_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    let records = 100;
    let batch_bytes = encoded_batch(records).len() as u64;
    group.throughput(Throughput::Bytes(batch_bytes));
    let max_write_buffers = std::env::var("RINGLOG_BENCH_WRITE_BUFFERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(StorageConfig::default().max_write_buffers);
    let never = StorageConfig { fsync: FsyncPolicy::Never, max_write_buffers, ..StorageConfig::default() };
    for appenders in [4usize, 16, 64] {
        group.bench_with_input(BenchmarkId::new("fsync_never_100x1KiB", appenders), &appenders, |b, &appenders| {
            b.iter_custom(|iterations| timed_appends(never.clone(), appenders, iterations, records))
        });
    }
    // fio's reference run keeps 16 x 1 MiB in flight; so does this one.
    let large = 1000;
    group.throughput(Throughput::Bytes(encoded_batch(large).len() as u64));
    group.bench_function("fsync_never_1000x1KiB/16", |b| {
        b.iter_custom(|iterations| timed_appends(never.clone(), 16, iterations, large))
    });
    group.throughput(Throughput::Bytes(batch_bytes));
    let always = StorageConfig { fsync: FsyncPolicy::Always, ..StorageConfig::default() };
    for appenders in [1usize, 4, 16] {
        group.bench_with_input(BenchmarkId::new("fsync_always_100x1KiB", appenders), &appenders, |b, &appenders| {
            b.iter_custom(|iterations| timed_appends(always.clone(), appenders, iterations, records))
        });
    }
    group.finish();
}

fn recovery_scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    let batch = encoded_batch(100);
    let mut segment = Vec::with_capacity(64 << 20);
    let mut offset = 0u64;
    while segment.len() + batch.len() <= 64 << 20 {
        let start = segment.len();
        segment.extend_from_slice(&batch);
        ringlog::storage::batch::stamp_batch(&mut segment[start..], offset, 1);
        offset += 100;
    }
    group.throughput(Throughput::Bytes(segment.len() as u64));
    group.sample_size(10);
    group.bench_function("scan_64MiB_segment_crc_and_continuity", |b| {
        b.iter(|| {
            let outcome = scan_segment(&segment, 0, 4096);
            assert_eq!(outcome.next_offset, offset);
        })
    });
    group.finish();
}

fn index_lookup(c: &mut Criterion) {
    let mut index = OffsetIndex::default();
    for i in 0..262_144u32 {
        index.push(i * 4, i * 4096);
    }
    let mut target = 0u32;
    c.bench_function("index/floor_in_262144_entries", |b| {
        b.iter(|| {
            target = target.wrapping_mul(1_103_515_245).wrapping_add(12345) % (262_144 * 4);
            index.floor(target)
        })
    });
}

criterion_group!(benches, batch_codec, append_throughput, recovery_scan, index_lookup);
criterion_main!(benches);
