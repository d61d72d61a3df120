//! Consumer reads: Fetch (a long poll bounded by the high watermark
//! consumers may see) and ListOffsets.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::protocol::Response;
use crate::replication::high_watermark;
use crate::shard::context::ShardContext;
use crate::shard::mesh::Outcome;
use crate::shard::partitions::OwnedPartition;
use crate::shard::wire_error::storage_error;
use crate::storage::LogSnapshot;

/// How often a waiting read re-checks what another thread may change (the
/// in-sync set, and with it the high watermark).
pub(super) const RECHECK_INTERVAL: Duration = Duration::from_millis(100);

/// What a consumer's Fetch asks for.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerRead {
    /// First offset wanted.
    pub offset: u64,
    /// Soft bound on the batch bytes returned (at least one batch).
    pub max_bytes: u32,
    /// Long-poll bound, capped by `limits.max_fetch_wait_ms`.
    pub max_wait_ms: u32,
}

/// A consumer's read, counted in the shard's metrics.
pub async fn fetch(context: &ShardContext, owned: &OwnedPartition, read: ConsumerRead) -> Outcome {
    let started = Instant::now();
    let offset = read.offset;
    let outcome = read_or_wait(context, owned, read).await;
    let metrics = context.shard_metrics();
    metrics.fetch_requests.fetch_add(1, Ordering::Relaxed);
    if let Ok(Response::Fetch { batches, next_offset, .. }) = &outcome {
        metrics.fetch_bytes.fetch_add(batches.len() as u64, Ordering::Relaxed);
        metrics.fetch_records.fetch_add(next_offset.saturating_sub(offset), Ordering::Relaxed);
        owned.fetched_bytes.set(owned.fetched_bytes.get() + batches.len() as u64);
    }
    metrics.fetch_latency.observe(started.elapsed());
    outcome
}

/// Read batches below the visible high watermark; with `max_wait_ms`, wait
/// for data at `offset` (long poll).
async fn read_or_wait(context: &ShardContext, owned: &OwnedPartition, read: ConsumerRead) -> Outcome {
    let ConsumerRead { offset, max_bytes, max_wait_ms } = read;
    let max_wait = Duration::from_millis(u64::from(max_wait_ms).min(context.config.limits.max_fetch_wait_ms));
    let max_bytes = (max_bytes as usize).clamp(1, context.config.limits.max_frame_bytes - 1024);
    let deadline = Instant::now() + max_wait;
    loop {
        let changed = owned.replication.changed.notified();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(high_watermark) = high_watermark::visible(owned, &context.cluster) else {
            // Not re-established yet: follower fetches (a `changed`) or an
            // in-sync set change on another thread establish it.
            // At the deadline or when the node stops (its latch would end
            // every wait at once: a spin), the `not_ready` refusal, or,
            // established meanwhile, a read.
            if remaining.is_zero() || context.stopping.is_set() {
                high_watermark::for_consumers(owned, &context.cluster)?;
                continue;
            }
            let recheck = crate::runtime::sleep(remaining.min(RECHECK_INTERVAL));
            futures_lite::future::or(futures_lite::future::or(changed, recheck), context.stopping.wait()).await;
            continue;
        };
        let batches = owned.log.read(offset, max_bytes, Some(high_watermark)).await.map_err(storage_error)?;
        let snapshot = owned.log.snapshot();
        let remaining = deadline.saturating_duration_since(Instant::now());
        // A fail-stopped log takes no more appends, and the wait knows it
        // (`waits_for_durability`): it waits out its time like any other.
        // Answered at once, the consumer asked again at once, for as long
        // as the log stayed so. A node that stops answers what it has:
        // shutdown waits for the requests in flight.
        if batches.batch_count > 0 || remaining.is_zero() || context.stopping.is_set() {
            return Ok(Response::Fetch {
                high_watermark,
                log_start_offset: snapshot.log_start_offset,
                next_offset: batches.next_offset,
                batches: batches.bytes,
            });
        }
        let recheck =
            futures_lite::future::or(crate::runtime::sleep(remaining.min(RECHECK_INTERVAL)), context.stopping.wait());
        if !waits_for_durability(&snapshot, offset) {
            futures_lite::future::or(changed, recheck).await;
        } else {
            let woken = futures_lite::future::or(owned.log.wait_durable_past(offset), changed);
            futures_lite::future::or(woken, recheck).await;
        }
    }
}

/// Whether a consumer waiting at `offset` waits for the log's durable end
/// as well as for its replication state. Not once the log is durable past
/// it (only the high watermark holds the read back), and not on a log that
/// fail-stopped: a wait for durability would be ready at once, every round,
/// and spin the shard (starving follower reads, which move the high
/// watermark). A closed log's waits are ready at once too: callers stop
/// first (a read of it fails; a watch counts it as news).
pub(super) fn waits_for_durability(snapshot: &LogSnapshot, offset: u64) -> bool {
    snapshot.durable_end_offset <= offset && snapshot.failure.is_none()
}

/// The partition's bounds and the high watermark consumers may see.
pub fn list_offsets(context: &ShardContext, owned: &OwnedPartition) -> Outcome {
    let snapshot = owned.log.snapshot();
    Ok(Response::ListOffsets {
        log_start_offset: snapshot.log_start_offset,
        log_end_offset: snapshot.log_end_offset,
        high_watermark: high_watermark::for_consumers(owned, &context.cluster)?,
    })
}
