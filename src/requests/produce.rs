//! Produce: check the batch against the limits, append it under the
//! leader's epoch, wait for what `acks` asks (placed, durable here, or
//! durable on every in-sync replica), and check the epoch again before
//! acknowledging, so a leader deposed mid-write does not acknowledge.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::protocol::{Acks, ErrorCode, ErrorResponse, Request, Response};
use crate::replication::acks;
use crate::shard::context::ShardContext;
use crate::shard::mesh::{Outcome, PlacedSignal};
use crate::shard::partitions::OwnedPartition;
use crate::shard::wire_error::{refusal, storage_error};
use crate::storage::batch::{BatchHeader, BuiltBatch, RecordIter, BATCH_HEADER_BYTES};
use crate::storage::producers::KAFKA_PRODUCER_BIT;
use crate::storage::{AppendMode, Durable, Placed, StorageResult};

/// What a produce appends: a native client's encoded batch, which the log
/// checks whole, or one this node built from a Kafka client's records.
pub enum ProducedBatch {
    /// From a native client.
    Client(Vec<u8>),
    /// Transcoded here (`requests/kafka/transcode.rs`).
    Built(BuiltBatch),
}

impl ProducedBatch {
    fn bytes(&self) -> &[u8] {
        match self {
            ProducedBatch::Client(batch) => batch,
            ProducedBatch::Built(batch) => batch.bytes(),
        }
    }

    /// Append under `leader_epoch`, placed (offsets assigned, not durable).
    async fn append(&mut self, owned: &OwnedPartition, leader_epoch: u32) -> StorageResult<Placed> {
        match self {
            ProducedBatch::Client(batch) => owned.log.append_placed(batch, AppendMode::Leader { leader_epoch }).await,
            ProducedBatch::Built(batch) => owned.log.append_built_placed(batch, leader_epoch).await,
        }
    }

    fn into_buffer(self) -> Vec<u8> {
        match self {
            ProducedBatch::Client(batch) => batch,
            ProducedBatch::Built(batch) => batch.into_bytes(),
        }
    }
}

/// Append `batch` to the partition and answer once `acks` is met; `placed`
/// (if any) is dropped as soon as the batch has its offsets.
pub async fn produce(
    context: &ShardContext,
    owned: &OwnedPartition,
    acks: Acks,
    mut batch: ProducedBatch,
    placed: Option<PlacedSignal>,
) -> Outcome {
    check_sizes(context, batch.bytes(), owned.log.config().max_batch_bytes)?;
    let leader_epoch = context.write_epoch()?;
    if acks == Acks::All {
        acks::check_min_in_sync(&context.cluster, &context.config)?;
    }
    let started = Instant::now();
    let batch_bytes = batch.bytes().len() as u64;
    let appended = batch.append(owned, leader_epoch).await;
    drop(placed);
    // Its bytes are in the log's buffers: not held while acks are awaited
    // (a connection may have many produces waiting), and kept for the next
    // request's read.
    crate::runtime::buffer_pool::give_back(batch.into_buffer());
    let info = match acks {
        Acks::None => appended.map(Placed::offsets),
        Acks::Leader | Acks::All => match appended {
            Ok(appended) => owned.log.wait_durable(appended).await.map(Durable::offsets),
            Err(error) => Err(error),
        },
    }
    .map_err(storage_error)?;
    if acks == Acks::All {
        acks::wait_for_replicas(context, owned, info.next_offset).await?;
    }
    context.write_epoch()?;
    let metrics = context.shard_metrics();
    metrics.produce_requests.fetch_add(1, Ordering::Relaxed);
    metrics.produce_records.fetch_add(info.next_offset - info.base_offset, Ordering::Relaxed);
    metrics.produce_bytes.fetch_add(batch_bytes, Ordering::Relaxed);
    metrics.produce_latency.observe(started.elapsed());
    Ok(Response::Produce { base_offset: info.base_offset, next_offset: info.next_offset, duplicate: info.duplicate })
}

/// A native client's batch may not carry a Kafka producer's id (top bit
/// set, `storage::producers::KafkaProducer`): native ids are the node's,
/// and a forged Kafka id at a high epoch would fence that Kafka producer
/// out of the partition. The Kafka listener's own batches do not pass here.
pub fn refuse_kafka_producer_id(request: &Request) -> Result<(), ErrorResponse> {
    let Request::Produce { batch, .. } = request else { return Ok(()) };
    match BatchHeader::parse(batch) {
        Ok(header) if header.producer_id & KAFKA_PRODUCER_BIT != 0 => Err(refusal(
            ErrorCode::InvalidRequest,
            format!("producer id {:#x} is in the Kafka producers' range (top bit set)", header.producer_id),
        )),
        _ => Ok(()),
    }
}

/// `record_too_large` for a batch over the partition's limit or a record
/// value over `limits.max_record_bytes`. Limits apply to new input only:
/// nothing already in the log is checked against them.
fn check_sizes(context: &ShardContext, batch: &[u8], max_batch_bytes: usize) -> Result<(), ErrorResponse> {
    if batch.len() > max_batch_bytes {
        return Err(refusal(
            ErrorCode::RecordTooLarge,
            format!("batch of {} bytes exceeds {max_batch_bytes}", batch.len()),
        ));
    }
    let limit = context.config.limits.max_record_bytes;
    let records = batch.get(BATCH_HEADER_BYTES..).unwrap_or(&[]);
    // A value lies inside the records: when they all fit the limit, so
    // does every value, and the walk (a second walk over a client's
    // records, which the append validates, was 3-4 % of a producing node's
    // CPU) is skipped.
    if records.len() <= limit {
        return Ok(());
    }
    for record in RecordIter::new(records).flatten() {
        if record.value.len() > limit {
            return Err(refusal(
                ErrorCode::RecordTooLarge,
                format!("record value of {} bytes exceeds limits.max_record_bytes = {limit}", record.value.len()),
            ));
        }
    }
    Ok(())
}

/// A fresh random, non-zero producer id (63 bits, unique with overwhelming
/// probability across nodes and restarts, with no state to keep).
pub fn new_producer_id() -> u64 {
    let bytes = crate::runtime::random::random_bytes(8).ok().and_then(|bytes| <[u8; 8]>::try_from(bytes).ok());
    let bytes = bytes.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |t| t.as_nanos());
        (nanos as u64 ^ u64::from(std::process::id()) << 32).to_le_bytes()
    });
    (u64::from_le_bytes(bytes) >> 1).max(1)
}
