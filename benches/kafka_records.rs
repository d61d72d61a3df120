//! What storing a Kafka producer's batch costs the node per byte, two
//! ways (issue 14; docs/KAFKA.md, "Records: transcoded into ringlog's
//! batch"):
//!
//! - **transcoded** (what the node does): on produce, the Kafka batch's
//!   CRC-32C and records are checked and its records written into a
//!   ringlog batch (`kafka_to_native`); on a Kafka fetch, each ringlog
//!   batch is written back as a Kafka batch (`native_to_kafka`).
//! - **kept whole** (the alternative): on produce, the same checks (a
//!   broker must not store a batch it has not walked: its record count,
//!   lengths and varints are what every later reader trusts), then the
//!   bytes copied behind a ringlog header and covered by the log's own
//!   checksum (crc32fast), or by Kafka's CRC-32C alone; a Kafka fetch
//!   would send the stored bytes as they are (only the base offset, outside
//!   Kafka's CRC, rewritten), and a native consumer would need the records
//!   transcoded on every read.
//!
//! Two shapes: 1000 records of 1 KiB without key or header (what
//! rdkafka_performance sends in `tools/bench-kafka.sh`), and 10 000 records
//! of 100 bytes with a key and two headers (small records, where the
//! per-record work dominates). Inputs are built in memory; nothing here
//! touches a disk.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringlog::protocol::kafka::records::{visit_records, DecodeLimits, RecordsError};
use ringlog::requests::kafka::transcode::{kafka_to_native, native_to_kafka};
use ringlog::runtime::buffer_pool;
use ringlog::storage::batch::{BatchBuilder, BATCH_HEADER_BYTES};

const LIMITS: DecodeLimits = DecodeLimits { max_records_bytes: 64 << 20 };

/// One shape of producer batch.
struct Shape {
    name: &'static str,
    records: usize,
    value_bytes: usize,
    keyed_with_headers: bool,
}

const SHAPES: [Shape; 2] = [
    Shape { name: "1000x1KiB", records: 1000, value_bytes: 1024, keyed_with_headers: false },
    Shape { name: "10000x100B_key_2_headers", records: 10_000, value_bytes: 100, keyed_with_headers: true },
];

/// The shape as a ringlog batch (what the log holds when transcoded) and
/// as a Kafka RecordBatch v2 with a valid CRC-32C (what a producer sends).
fn batches(shape: &Shape) -> (Vec<u8>, Vec<u8>) {
    let mut builder = BatchBuilder::new();
    let value = vec![b'v'; shape.value_bytes];
    for index in 0..shape.records {
        let key = format!("key-{index:08}");
        let timestamp_ms = 1_700_000_000_000 + index as i64;
        match shape.keyed_with_headers {
            true => builder.push(
                timestamp_ms,
                Some(key.as_bytes()),
                &value,
                &[("trace", b"0123456789abcdef"), ("type", b"order")],
            ),
            false => builder.push(timestamp_ms, None, &value, &[]),
        }
    }
    let native = builder.finish().to_vec();
    let mut kafka = Vec::new();
    native_to_kafka(&native, &mut kafka).expect("a batch just built transcodes");
    (native, kafka)
}

/// Store `kafka` whole: check it as the transcode does, then copy it
/// behind a ringlog header into a pooled buffer, covered by the log's own
/// checksum (crc32fast) when `log_checksum`, else by Kafka's CRC-32C alone
/// (already checked: the cheapest such design, whose recovery and reads
/// would check CRC-32C for these batches).
fn keep_whole(kafka: &[u8], log_checksum: bool) -> Vec<u8> {
    visit_records::<RecordsError>(kafka, LIMITS, |_| Ok(())).expect("a valid batch");
    let mut stored = buffer_pool::take_empty(BATCH_HEADER_BYTES + kafka.len());
    stored.resize(BATCH_HEADER_BYTES, 0);
    stored.extend_from_slice(kafka);
    if log_checksum {
        let checksum = crc32fast::hash(&stored[BATCH_HEADER_BYTES..]);
        stored[..4].copy_from_slice(&checksum.to_be_bytes());
    }
    stored
}

/// Transcode `kafka` into a ringlog batch and give its buffer back.
fn transcode(kafka: &[u8]) {
    buffer_pool::give_back(kafka_to_native(kafka, LIMITS).expect("a valid batch").into_bytes());
}

fn produce(c: &mut Criterion) {
    // The node builds batches in pooled buffers: so do these, else every
    // iteration would fault in fresh pages.
    buffer_pool::set_limit_bytes(256 << 20);
    for shape in &SHAPES {
        let (_, kafka) = batches(shape);
        let mut group = c.benchmark_group(format!("kafka_produce/{}", shape.name));
        group.throughput(Throughput::Bytes(kafka.len() as u64));
        group.bench_function("transcoded", |b| b.iter(|| transcode(&kafka)));
        group.bench_function("kept_whole", |b| b.iter(|| buffer_pool::give_back(keep_whole(&kafka, true))));
        group.bench_function("kept_whole_kafka_checksum", |b| {
            b.iter(|| buffer_pool::give_back(keep_whole(&kafka, false)))
        });
        // The share both ways spend on Kafka's checksum.
        group.bench_function("crc32c", |b| b.iter(|| crc32c::crc32c(&kafka[21..])));
        group.finish();
    }
}

fn fetch(c: &mut Criterion) {
    for shape in &SHAPES {
        let (native, kafka) = batches(shape);
        let mut group = c.benchmark_group(format!("kafka_fetch/{}", shape.name));
        group.throughput(Throughput::Bytes(kafka.len() as u64));
        let mut answer = Vec::with_capacity(2 * kafka.len());
        // What a Kafka consumer costs when the log holds ringlog batches.
        group.bench_function("transcoded", |b| {
            b.iter(|| {
                answer.clear();
                native_to_kafka(&native, &mut answer).expect("valid");
                answer.len()
            })
        });
        // What a native consumer would cost if the log held Kafka batches:
        // the records written into a ringlog batch on every read. An upper
        // bound: this is the produce-side transcode, whose CRC-32C check a
        // read (covered by the log's checksum) could skip; `crc32c` below
        // is that share.
        group.bench_function("kept_whole_read_natively", |b| b.iter(|| transcode(&kafka)));
        group.finish();
    }
}

criterion_group!(benches, produce, fetch);
criterion_main!(benches);
