//! The leader's side of replication, on the shard that owns each partition:
//! serving a follower's single-partition read (which is also its
//! acknowledgement), the compressed answer shared with `fetch_many`, the
//! epoch end offsets followers use to find divergence, and the per-shard
//! progress the control thread turns into ISR decisions.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::high_watermark;
use crate::protocol::{ErrorCode, Response};
use crate::runtime::clock::monotonic_ms;
use crate::shard::context::ShardContext;
use crate::shard::mesh::Outcome;
use crate::shard::partitions::OwnedPartition;
use crate::shard::wire_error::{refusal, storage_error};
use crate::state::progress::FollowerProgress;
use crate::storage::ReadBatches;

thread_local! {
    /// Compression scratch space, reused so each answer does not allocate
    /// and zero a worst-case-sized output buffer.
    static COMPRESS_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// lz4-compress `input` into an exactly sized vector.
fn compress(input: &[u8]) -> Vec<u8> {
    COMPRESS_SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let needed = lz4_flex::block::get_maximum_output_size(input.len());
        if scratch.len() < needed {
            scratch.resize(needed, 0);
        }
        match lz4_flex::block::compress_into(input, &mut scratch[..needed]) {
            Ok(length) => scratch[..length].to_vec(),
            // Cannot happen with a worst-case-sized buffer; fall back to the allocating form.
            Err(_) => lz4_flex::block::compress(input),
        }
    })
}

/// After an answer lz4 could not shrink below 7/8 of its size, this many
/// answers to the same follower go stored raw before lz4 is tried again:
/// on data that does not compress (already compressed or encrypted
/// payloads) lz4 only costs CPU on both ends.
const RAW_ANSWERS_AFTER_MISS: u64 = 32;

/// The answer's body: an lz4 block, or the batches themselves ("stored
/// raw", which the follower recognises by the body being exactly
/// `uncompressed_bytes` long: an lz4 block that long is never sent).
pub(crate) fn encode_answer(batches: Vec<u8>, progress: &FollowerProgress) -> Vec<u8> {
    let skip = progress
        .raw_answers_left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
        .is_ok();
    if skip || batches.is_empty() {
        return batches;
    }
    let compressed = compress(&batches);
    if compressed.len() * 8 >= batches.len() * 7 {
        progress.raw_answers_left.store(RAW_ANSWERS_AFTER_MISS, Ordering::Relaxed);
        return batches;
    }
    compressed
}

/// How often each shard publishes its followers' progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// The answer body for `batches` read from `offset`: from the partition's
/// cache when another follower was just sent the same range (one lz4 pass
/// per range, not per follower), else encoded and cached when compressed.
pub(crate) fn answer_body(
    owned: &OwnedPartition,
    progress: &FollowerProgress,
    offset: u64,
    batches: ReadBatches,
) -> Vec<u8> {
    let uncompressed_bytes = batches.bytes.len();
    let key = (offset, batches.next_offset, owned.log.generation());
    if let Some(body) = owned.replication.cached_answer(key) {
        return body;
    }
    let body = encode_answer(batches.bytes, progress);
    if body.len() != uncompressed_bytes {
        owned.replication.cache_answer(key, &body);
    }
    body
}

/// A follower's read of a partition from `offset` (its log end).
pub async fn replica_fetch(
    context: &ShardContext,
    owned: &OwnedPartition,
    replica_id: u64,
    offset: u64,
    max_bytes: u32,
    max_wait_ms: u32,
) -> Outcome {
    let leader_epoch = context.write_epoch()?;
    let snapshot = owned.log.snapshot();
    if offset < snapshot.log_start_offset {
        // Retention deleted what the follower needs next: tell it where the
        // log starts now so it can start over there (a refusal alone left
        // it asking for the same offset forever).
        return Ok(empty_replica_answer(context, owned, &snapshot, leader_epoch));
    }
    if offset > snapshot.log_end_offset {
        return Err(refusal(
            ErrorCode::OffsetOutOfRange,
            format!(
                "follower offset {offset} is outside the leader's log [{}, {})",
                snapshot.log_start_offset, snapshot.log_end_offset
            ),
        ));
    }
    owned.replication.record_fetch(replica_id, offset, snapshot.log_end_offset, monotonic_ms());
    high_watermark::advance(owned, &context.cluster);
    let batches = read_batches_or_wait(context, owned, offset, max_bytes, max_wait_ms).await?;
    let snapshot = owned.log.snapshot();
    owned.replication.record_answer(replica_id, snapshot.log_end_offset, monotonic_ms());
    let progress = context.progress.follower(replica_id);
    let uncompressed_bytes = batches.bytes.len() as u32;
    let compressed = answer_body(owned, &progress, offset, batches);
    progress.sent_bytes.fetch_add(compressed.len() as u64, Ordering::Relaxed);
    progress.sent_uncompressed_bytes.fetch_add(u64::from(uncompressed_bytes), Ordering::Relaxed);
    Ok(Response::ReplicaFetch {
        high_watermark: high_watermark::visible(owned, &context.cluster),
        log_start_offset: snapshot.log_start_offset,
        log_end_offset: snapshot.log_end_offset,
        leader_epoch,
        uncompressed_bytes,
        compressed,
    })
}

/// Written batches from `offset`, waiting up to `max_wait_ms` for some (and
/// no longer once this node stops being the leader).
async fn read_batches_or_wait(
    context: &ShardContext,
    owned: &OwnedPartition,
    offset: u64,
    max_bytes: u32,
    max_wait_ms: u32,
) -> Result<ReadBatches, crate::protocol::ErrorResponse> {
    let max_wait = Duration::from_millis(u64::from(max_wait_ms).min(context.config.limits.max_fetch_wait_ms));
    let max_bytes = (max_bytes as usize).clamp(1, context.config.limits.max_frame_bytes / 2);
    let deadline = Instant::now() + max_wait;
    loop {
        let batches = owned.log.read_written(offset, max_bytes).await.map_err(storage_error)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if batches.batch_count > 0 || remaining.is_zero() || context.write_epoch().is_err() {
            return Ok(batches);
        }
        futures_lite::future::or(owned.log.wait_written_past(offset), crate::runtime::sleep(remaining)).await;
    }
}

/// An answer without batches: where the leader's log starts and ends.
fn empty_replica_answer(
    context: &ShardContext,
    owned: &OwnedPartition,
    snapshot: &crate::storage::LogSnapshot,
    leader_epoch: u32,
) -> Response {
    Response::ReplicaFetch {
        high_watermark: high_watermark::visible(owned, &context.cluster),
        log_start_offset: snapshot.log_start_offset,
        log_end_offset: snapshot.log_end_offset,
        leader_epoch,
        uncompressed_bytes: 0,
        compressed: Vec::new(),
    }
}

/// Where `epoch` ends in this leader's log: the largest epoch <= it and the
/// offset where the next epoch starts (or the log end).
pub fn epoch_end_offset(context: &ShardContext, owned: &OwnedPartition, epoch: u32) -> Outcome {
    context.write_epoch()?;
    let snapshot = owned.log.snapshot();
    let found = owned.log.epochs().end_offset_for(epoch, snapshot.log_end_offset);
    Ok(Response::EpochEndOffset {
        epoch: found.map(|(epoch, _)| epoch),
        end_offset: found.map_or(snapshot.log_start_offset, |(_, end)| end),
        log_start_offset: snapshot.log_start_offset,
    })
}

/// Publish how far each known follower is on this shard's partitions (run
/// every [`PROGRESS_INTERVAL`] while leading): the oldest caught-up time (a
/// partition the follower never fetched counts as never caught up unless it
/// is empty), records and estimated bytes behind, the latest fetch.
pub fn publish_follower_progress(context: &ShardContext) {
    let now = monotonic_ms();
    let partitions = context.partitions.all();
    for (id, progress) in context.progress.all() {
        let lag = FollowerLag::over(&partitions, id, now);
        let shard = context.shard;
        progress.caught_up_ms[shard].store(lag.caught_up_ms, Ordering::Relaxed);
        progress.fetched_ms[shard].store(lag.fetched_ms, Ordering::Relaxed);
        progress.lag_records[shard].store(lag.records, Ordering::Relaxed);
        progress.lag_bytes[shard].store(lag.bytes, Ordering::Relaxed);
    }
}

/// How far one follower is behind over a set of partitions.
struct FollowerLag {
    caught_up_ms: u64,
    fetched_ms: u64,
    records: u64,
    bytes: u64,
}

impl FollowerLag {
    fn over(partitions: &[std::rc::Rc<OwnedPartition>], follower: u64, now_ms: u64) -> FollowerLag {
        let mut lag = FollowerLag { caught_up_ms: now_ms, fetched_ms: 0, records: 0, bytes: 0 };
        for owned in partitions {
            let snapshot = owned.log.snapshot();
            let records = snapshot.log_end_offset - snapshot.log_start_offset;
            let bytes_per_record = snapshot.size_bytes / records.max(1);
            match owned.replication.follower(follower) {
                Some(position) => {
                    lag.caught_up_ms = lag.caught_up_ms.min(position.caught_up_ms);
                    lag.fetched_ms = lag.fetched_ms.max(position.fetched_ms);
                    let behind = snapshot.log_end_offset.saturating_sub(position.offset);
                    lag.records += behind;
                    lag.bytes += behind * bytes_per_record;
                }
                None if records == 0 => {}
                None => {
                    lag.caught_up_ms = lag.caught_up_ms.min(owned.replication.opened_ms());
                    lag.records += records;
                    lag.bytes += snapshot.size_bytes;
                }
            }
        }
        lag
    }
}

#[cfg(test)]
mod tests {
    use super::{compress, encode_answer, RAW_ANSWERS_AFTER_MISS};
    use crate::replication::follower::{decode_fetched, Fetched};
    use crate::state::progress::ReplicationProgress;
    use crate::storage::batch::BatchBuilder;

    fn batches(value: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for index in 0..64 {
            builder.push(0, None, &value(index), &[]);
        }
        builder.finish().to_vec()
    }

    fn noise(seed: usize) -> Vec<u8> {
        let mut x = seed as u64 * 2_654_435_761 + 1;
        (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn decoded(body: &[u8], length: usize) -> (Fetched, Vec<u8>) {
        let mut buffer = Vec::new();
        let fetched = decode_fetched(length as u32, body, 1 << 24, 1 << 24, &mut buffer).unwrap();
        let bytes = match fetched {
            Fetched::Raw => body.to_vec(),
            Fetched::Decompressed(length) => buffer[..length].to_vec(),
        };
        (fetched, bytes)
    }

    #[test]
    fn incompressible_answers_go_raw_for_a_while_then_lz4_is_tried_again() {
        let progress = ReplicationProgress::new(1).follower(2);
        let compressible = batches(|_| vec![b'r'; 1024]);
        let body = encode_answer(compressible.clone(), &progress);
        assert!(body.len() < compressible.len() / 10);
        assert_eq!(
            decoded(&body, compressible.len()),
            (Fetched::Decompressed(compressible.len()), compressible.clone())
        );

        let random = batches(noise);
        let body = encode_answer(random.clone(), &progress);
        assert_eq!(decoded(&body, random.len()), (Fetched::Raw, random.clone()), "random data is stored raw");
        for _ in 0..RAW_ANSWERS_AFTER_MISS {
            let body = encode_answer(compressible.clone(), &progress);
            assert_eq!(decoded(&body, compressible.len()), (Fetched::Raw, compressible.clone()), "lz4 not tried");
        }
        let body = encode_answer(compressible.clone(), &progress);
        assert_eq!(decoded(&body, compressible.len()).0, Fetched::Decompressed(compressible.len()), "tried again");
    }

    #[test]
    fn compression_with_the_reused_scratch_round_trips_any_size() {
        for input in
            [vec![b'r'; 1 << 20], (0..70_000u32).flat_map(|i| i.to_le_bytes()).collect(), vec![7u8; 10], vec![]]
        {
            let compressed = compress(&input);
            assert_eq!(lz4_flex::block::decompress(&compressed, input.len()).unwrap(), input);
        }
    }
}
