//! `ringlog bench produce|consume|e2e`: load generator with HDR latency
//! histograms, live progress on a terminal, and the spec's final `--json` line.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{parse_acks, ServerArgs};
use super::{fail, EXIT_USAGE};
use crate::net::client::{unexpected, Client, ClientError, Connection};
use crate::protocol::{Acks, ErrorCode, ProtocolError, Request, Response, TopicSettings};
use crate::storage::batch::{BatchBuilder, BatchIter, RecordIter, BATCH_HEADER_BYTES};

/// Flags of `ringlog bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// produce, consume or e2e.
    mode: String,
    /// Topic (created if absent).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of a created topic.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Concurrent producers (and consumers for consume/e2e).
    #[arg(long, default_value_t = 4)]
    producers: u32,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// What record values look like (decides how much lz4 compresses the
    /// replication stream): random, text (JSON-like lines) or repeated.
    #[arg(long, value_enum, default_value = "random")]
    payload: super::payload::Payload,
    /// Stop after producing (or consuming) this many value bytes.
    #[arg(long, default_value_t = 1 << 30)]
    total_bytes: u64,
    /// none, leader or all.
    #[arg(long, default_value = "leader")]
    acks: String,
    /// Batches each producer keeps in flight per partition it writes to
    /// (pipelining; a producer of 8 partitions keeps 8 × this), within
    /// --max-in-flight-bytes.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// The most value bytes of batches one producer keeps in flight over
    /// all its partitions (never fewer than --in-flight batches).
    #[arg(long, default_value_t = 32 << 20)]
    max_in_flight_bytes: u64,
    /// Most bytes one consumer fetch asks for.
    #[arg(long, default_value_t = 4 << 20)]
    fetch_bytes: u32,
    /// Print the final JSON line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Shared progress of all workers.
#[derive(Default)]
struct Totals {
    records: AtomicU64,
    bytes: AtomicU64,
}

/// Run `bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    let acks = match parse_acks(&args.acks) {
        Ok(acks) => acks,
        Err(message) => return fail(message, EXIT_USAGE),
    };
    if !["produce", "consume", "e2e"].contains(&args.mode.as_str()) {
        return fail("mode must be produce, consume or e2e", EXIT_USAGE);
    }
    if args.batch == 0 || args.producers == 0 || args.partitions == 0 || args.in_flight == 0 || args.fetch_bytes == 0 {
        return fail(
            "--batch, --producers, --partitions, --in-flight and --fetch-bytes must be at least 1",
            EXIT_USAGE,
        );
    }
    // The load generator uses every core (one runtime thread each): a
    // single-threaded generator, not the node, would set the pace.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(error, super::EXIT_FAILURE),
    };
    match runtime.block_on(bench(args, acks)) {
        Ok(()) => ExitCode::from(super::EXIT_OK),
        Err(error) => fail(error, super::EXIT_FAILURE),
    }
}

/// The batches one producer keeps outstanding: `in_flight` per partition
/// it writes to, and no more than `max_in_flight_bytes` of batches of
/// `batch_bytes` (at least `in_flight`). A window per producer, shared by
/// its partitions, gave each of 8 partitions half a batch in flight: the
/// node's writes to each partition waited on the client, not the disk
/// (BENCHMARKS.md, "One producer over 8 partitions"). Kafka's producers
/// also keep a batch queue per partition, and bound them all together
/// (`buffer.memory`): a producer of 1 000 partitions would otherwise have
/// the node hold 128 requests of its connection at once.
fn produce_window(
    in_flight_per_partition: usize,
    partitions: usize,
    batch_bytes: usize,
    max_in_flight_bytes: u64,
) -> usize {
    let by_partitions = in_flight_per_partition.saturating_mul(partitions.max(1));
    let by_bytes = usize::try_from(max_in_flight_bytes / batch_bytes.max(1) as u64).unwrap_or(usize::MAX);
    by_partitions.min(by_bytes.max(in_flight_per_partition))
}

/// How long a consumer asks again after an empty answer or a retriable
/// error before it gives up on the run.
const FETCH_RETRY_BUDGET: Duration = Duration::from_secs(10);
/// The pause between two such asks.
const FETCH_RETRY_PAUSE: Duration = Duration::from_millis(50);

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_micros() as u64)
}

async fn bench(args: BenchArgs, acks: Acks) -> Result<(), ClientError> {
    let mut client = args.server.client(10_000)?;
    let partitions = ensure_topic(&mut client, &args).await?;
    let address = client.connection().await?.address().to_string();
    let totals = Arc::new(Totals::default());
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let bar = progress_bar(args.total_bytes);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let produce = args.mode != "consume";
    let consume = args.mode != "produce";
    let end_offsets =
        if args.mode == "consume" { high_watermarks(&mut client, &args.topic, partitions).await? } else { Vec::new() };
    for worker in 0..args.producers {
        let owned: Vec<u32> = (worker..partitions).step_by(args.producers as usize).collect();
        if owned.is_empty() {
            continue;
        }
        if produce {
            let context =
                Worker::new(&args, &address, owned.clone(), &totals, &histogram, args.mode == "produce").await?;
            tasks.push(tokio::spawn(
                context.produce(acks, args.total_bytes / u64::from(args.producers.min(partitions))),
            ));
        }
        if consume {
            let context = Worker::new(&args, &address, owned.clone(), &totals, &histogram, true).await?;
            let ends = owned.iter().map(|&partition| end_offsets.get(partition as usize).copied()).collect();
            let budget = args.total_bytes / u64::from(args.producers.min(partitions));
            tasks.push(tokio::spawn(context.consume(ends, budget, args.mode == "e2e")));
        }
    }
    let ticker = {
        let totals = Arc::clone(&totals);
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(totals.bytes.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut outcome = Ok(());
    for task in tasks {
        let finished = task.await.map_err(|error| ClientError::ConnectionLost(error.to_string())).and_then(|done| done);
        if let Err(error) = finished {
            outcome = outcome.and(Err(error));
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    outcome?;
    report(&args, &totals, &histogram.lock().expect("histogram"), started.elapsed());
    Ok(())
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The topic's partitions, creating it first when it does not exist (a
/// producer or consumer user may not create topics, but may bench one).
async fn ensure_topic(client: &mut Client, args: &BenchArgs) -> Result<u32, ClientError> {
    if let Some(partitions) = existing_partitions(client, &args.topic).await? {
        return Ok(partitions);
    }
    let settings = TopicSettings { partitions: args.partitions, ..TopicSettings::default() };
    match client.call(&Request::CreateTopic { name: args.topic.clone(), settings }).await {
        Ok(_) => {}
        Err(error) if error.code() == Some(ErrorCode::TopicExists) => {}
        Err(error) => return Err(error),
    }
    Ok(existing_partitions(client, &args.topic).await?.unwrap_or(args.partitions))
}

async fn existing_partitions(client: &mut Client, topic: &str) -> Result<Option<u32>, ClientError> {
    match client.call(&Request::ListTopics).await? {
        Response::ListTopics(topics) => {
            Ok(topics.into_iter().find(|(name, _)| name == topic).map(|(_, partitions)| partitions))
        }
        other => Err(unexpected(other)),
    }
}

async fn high_watermarks(client: &mut Client, topic: &str, partitions: u32) -> Result<Vec<u64>, ClientError> {
    let mut ends = Vec::new();
    for partition in 0..partitions {
        match client.call(&Request::ListOffsets { topic: topic.into(), partition }).await? {
            Response::ListOffsets { high_watermark, .. } => ends.push(high_watermark),
            other => return Err(unexpected(other)),
        }
    }
    Ok(ends)
}

struct Worker {
    connection: Arc<Connection>,
    topic: String,
    partitions: Vec<u32>,
    record_bytes: usize,
    payload: super::payload::Payload,
    batch: usize,
    in_flight: usize,
    max_in_flight_bytes: u64,
    fetch_bytes: u32,
    totals: Arc<Totals>,
    histogram: Arc<Mutex<Histogram<u64>>>,
    count_totals: bool,
}

impl Worker {
    async fn new(
        args: &BenchArgs,
        address: &str,
        partitions: Vec<u32>,
        totals: &Arc<Totals>,
        histogram: &Arc<Mutex<Histogram<u64>>>,
        count_totals: bool,
    ) -> Result<Worker, ClientError> {
        let tls = args.server.tls.client_tls().map_err(ClientError::Tls)?;
        let connection = Connection::connect_with(address, &tls)
            .await
            .map_err(|error| ClientError::Unreachable { servers: address.into(), last: error.to_string() })?;
        if let Some(credentials) = args.server.credentials.credentials() {
            connection.authenticate(&credentials).await?;
        }
        Ok(Worker {
            connection: Arc::new(connection),
            topic: args.topic.clone(),
            partitions,
            record_bytes: args.record_bytes,
            payload: args.payload,
            batch: args.batch,
            in_flight: args.in_flight,
            max_in_flight_bytes: args.max_in_flight_bytes,
            fetch_bytes: args.fetch_bytes,
            totals: Arc::clone(totals),
            histogram: Arc::clone(histogram),
            count_totals,
        })
    }

    /// Produce `budget` value bytes round robin over this worker's
    /// partitions, keeping `in_flight` batches outstanding per partition.
    /// Each record's key is its send time in microseconds (for e2e latency).
    async fn produce(self, acks: Acks, budget: u64) -> Result<(), ClientError> {
        let batch_bytes = self.batch.saturating_mul(self.record_bytes);
        let window = produce_window(self.in_flight, self.partitions.len(), batch_bytes, self.max_in_flight_bytes);
        let mut builder = BatchBuilder::new();
        let seed = u64::from(self.partitions.first().copied().unwrap_or(0)) + 1;
        let mut values = super::payload::ValuePool::new(self.payload, self.record_bytes, seed);
        let mut outstanding = std::collections::VecDeque::new();
        let mut produced = 0u64;
        let mut next = 0usize;
        while produced < budget || !outstanding.is_empty() {
            if produced < budget && outstanding.len() < window {
                builder.clear();
                let sent_us = now_us();
                for _ in 0..self.batch {
                    builder.push((sent_us / 1000) as i64, Some(&sent_us.to_le_bytes()), values.next_value(), &[]);
                }
                let partition = self.partitions[next % self.partitions.len()];
                next += 1;
                let request =
                    Request::Produce { topic: self.topic.clone(), partition, acks, batch: builder.finish().to_vec() };
                outstanding.push_back((Instant::now(), self.connection.send(&request).await));
                produced += (self.batch * self.record_bytes) as u64;
                continue;
            }
            let (sent, receiver) = outstanding.pop_front().expect("outstanding");
            let response =
                receiver.await.unwrap_or_else(|_| Err(ClientError::ConnectionLost("connection closed".into())))?;
            let Response::Produce { base_offset, next_offset, .. } = response else { return Err(unexpected(response)) };
            if self.count_totals {
                let _ = self.histogram.lock().expect("histogram").record(sent.elapsed().as_micros() as u64);
                let records = next_offset - base_offset;
                self.totals.records.fetch_add(records, Ordering::Relaxed);
                self.totals.bytes.fetch_add(records * self.record_bytes as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Read this worker's partitions from the start: up to `ends` (consume)
    /// or until `budget` value bytes arrived (e2e, long-polling). Each
    /// partition keeps its own fetch in flight, pipelined on the one
    /// connection, so a slow answer for one partition never holds back the
    /// others (lock-step rounds waited for the slowest fetch of each round).
    async fn consume(self, ends: Vec<Option<u64>>, budget: u64, end_to_end: bool) -> Result<(), ClientError> {
        let worker = Arc::new(self);
        let consumed = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for (index, end) in ends.into_iter().enumerate() {
            let (worker, consumed) = (Arc::clone(&worker), Arc::clone(&consumed));
            let partition = worker.partitions[index];
            readers.push(tokio::spawn(async move {
                worker.consume_partition(partition, end, &consumed, budget, end_to_end).await
            }));
        }
        for reader in readers {
            reader.await.map_err(|error| ClientError::ConnectionLost(error.to_string()))??;
        }
        Ok(())
    }

    /// One partition's reader: fetch from offset 0 until `end` (consume),
    /// until the worker's `consumed` reaches `budget` (e2e), or until a
    /// fetch returns nothing new (consume of a partition with no end known).
    async fn consume_partition(
        &self,
        partition: u32,
        end: Option<u64>,
        consumed: &AtomicU64,
        budget: u64,
        end_to_end: bool,
    ) -> Result<(), ClientError> {
        let mut offset = 0u64;
        loop {
            let finished = if end_to_end {
                consumed.load(Ordering::Relaxed) >= budget
            } else {
                end.is_some_and(|end| offset >= end)
            };
            if finished {
                return Ok(());
            }
            let started = Instant::now();
            // Without a known end (e2e, or a partition the listing missed)
            // an empty answer is the end or a long poll that ran out.
            let empty_allowed = end_to_end || end.is_none();
            let fetched = self.fetch(partition, offset, end_to_end, empty_allowed).await;
            let (batches, next_offset) = fetched.map_err(|source| ClientError::During {
                context: format!("fetch of partition {partition} at offset {offset}"),
                source: Box::new(source),
            })?;
            let (records, bytes) = self.account(&batches, offset, end_to_end, started)?;
            if !batches.is_empty() && next_offset <= offset {
                let reason = "a fetch answer with batches that did not move the offset on";
                return Err(ClientError::Protocol(ProtocolError::Invalid(reason)));
            }
            offset = next_offset.max(offset);
            consumed.fetch_add(bytes, Ordering::Relaxed);
            self.totals.records.fetch_add(records, Ordering::Relaxed);
            self.totals.bytes.fetch_add(bytes, Ordering::Relaxed);
            if records == 0 && end.is_none() && !end_to_end {
                return Ok(());
            }
        }
    }

    /// One fetch: its batches and the next offset to ask for. Before a
    /// known end an answer must hold records: an empty one, or a retriable
    /// error, is asked again for up to `FETCH_RETRY_BUDGET` (a partition that
    /// stopped early would have made the run's figure quietly wrong); any
    /// other error ends the run, and the caller names the fetch.
    async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        end_to_end: bool,
        empty_allowed: bool,
    ) -> Result<(Vec<u8>, u64), ClientError> {
        let first_try = Instant::now();
        loop {
            let request = Request::Fetch {
                topic: self.topic.clone(),
                partition,
                offset,
                max_bytes: self.fetch_bytes,
                max_wait_ms: if end_to_end { 100 } else { 0 },
            };
            let answer = self.connection.send(&request).await;
            let answered = answer.await.unwrap_or_else(|_| Err(ClientError::ConnectionLost("reader stopped".into())));
            let last = match answered {
                Ok(Response::Fetch { batches, next_offset, .. }) if !batches.is_empty() || empty_allowed => {
                    return Ok((batches, next_offset))
                }
                Ok(Response::Fetch { .. }) => {
                    ClientError::Protocol(ProtocolError::Invalid("an empty fetch answer before the partition's end"))
                }
                Ok(response) => return Err(unexpected(response)),
                // The connection is shared by the worker's partitions: once
                // lost, asking again on it cannot succeed.
                Err(error) if error.is_retriable() && !matches!(error, ClientError::ConnectionLost(_)) => error,
                Err(error) => return Err(error),
            };
            if first_try.elapsed() >= FETCH_RETRY_BUDGET {
                let elapsed_ms = first_try.elapsed().as_millis() as u64;
                return Err(ClientError::RetriesExhausted { elapsed_ms, last: Box::new(last) });
            }
            tokio::time::sleep(FETCH_RETRY_PAUSE).await;
        }
    }

    /// Verify batches, count records at or after `from`, record latencies.
    fn account(
        &self,
        batches: &[u8],
        from: u64,
        end_to_end: bool,
        started: Instant,
    ) -> Result<(u64, u64), ClientError> {
        let mut records = 0;
        let mut bytes = 0;
        let received_us = now_us();
        for item in BatchIter::new(batches, usize::MAX) {
            let (header, batch) = item?;
            for (index, record) in RecordIter::new(&batch[BATCH_HEADER_BYTES..]).enumerate() {
                let record = record?;
                if header.base_offset + index as u64 >= from {
                    records += 1;
                    bytes += record.value.len() as u64;
                    if end_to_end {
                        if let Some(sent) = record.key.and_then(|key| key.try_into().ok()).map(u64::from_le_bytes) {
                            let _ = self.histogram.lock().expect("histogram").record(received_us.saturating_sub(sent));
                        }
                    }
                }
            }
        }
        if !end_to_end && records > 0 {
            let _ = self.histogram.lock().expect("histogram").record(started.elapsed().as_micros() as u64);
        }
        Ok((records, bytes))
    }
}

fn report(args: &BenchArgs, totals: &Totals, histogram: &Histogram<u64>, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let records = totals.records.load(Ordering::Relaxed);
    let bytes = totals.bytes.load(Ordering::Relaxed);
    let line = serde_json::json!({
        "mode": args.mode,
        "records": records,
        "bytes": bytes,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "mb_per_s": (bytes as f64 / seconds / 1e6 * 10.0).round() / 10.0,
        "records_per_s": (records as f64 / seconds).round(),
        "p50_us": histogram.value_at_quantile(0.5),
        "p99_us": histogram.value_at_quantile(0.99),
        "p999_us": histogram.value_at_quantile(0.999),
        "max_us": histogram.max(),
    });
    if args.json {
        println!("{line}");
    } else {
        println!(
            "{}: {records} records, {bytes} bytes in {seconds:.2} s = {:.1} MB/s, {:.0} records/s; latency p50 {} us, p99 {} us, p99.9 {} us, max {} us",
            args.mode,
            bytes as f64 / seconds / 1e6,
            records as f64 / seconds,
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::produce_window;

    #[test]
    fn a_producer_keeps_its_window_for_each_partition_it_writes_to_within_its_bytes() {
        const MIB: u64 = 1 << 20;
        assert_eq!(produce_window(4, 1, 1 << 20, 32 * MIB), 4);
        assert_eq!(produce_window(4, 8, 1 << 20, 32 * MIB), 32);
        assert_eq!(produce_window(4, 250, 1 << 20, 32 * MIB), 32, "1 000 partitions: the bytes bound it");
        assert_eq!(produce_window(4, 250, 1 << 10, 32 * MIB), 1000, "small batches: the partitions bound it");
        assert_eq!(produce_window(4, 8, 64 << 20, 32 * MIB), 4, "never fewer than one partition's window");
        assert_eq!(produce_window(1, 0, 0, 0), 1, "a producer with no partition or empty batches still sends");
        assert_eq!(produce_window(usize::MAX, 2, 1, u64::MAX), usize::MAX);
    }
}
