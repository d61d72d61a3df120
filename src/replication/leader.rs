//! The leader's side of replication, on the shard that owns each partition:
//! serving a follower's single-partition read (which is also its
//! acknowledgement), the epoch end offsets followers use to find
//! divergence, the per-shard progress the control thread turns into ISR
//! decisions, and the expiry of answer bodies kept for followers.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::answer_body::{answer_body, ReadFrom};
use super::high_watermark;
use crate::protocol::{ErrorCode, Response};
use crate::runtime::clock::monotonic_ms;
use crate::shard::context::ShardContext;
use crate::shard::mesh::Outcome;
use crate::shard::partitions::OwnedPartition;
use crate::shard::wire_error::{refusal, storage_error};
use crate::storage::ReadBatches;

/// How often each shard publishes its followers' progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

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
    let read = ReadFrom { offset, generation: owned.log.generation() };
    let batches = read_batches_or_wait(context, owned, offset, max_bytes, max_wait_ms).await?;
    let snapshot = owned.log.snapshot();
    owned.replication.record_answer(replica_id, snapshot.log_end_offset, monotonic_ms());
    let progress = context.progress.follower(replica_id);
    let uncompressed_bytes = batches.bytes.len() as u32;
    // Followers read with ReplicaFetchMany; this single-partition read (kept
    // for tools and tests) copies the shared body into its own answer.
    let compressed = answer_body(context, owned, &progress, replica_id, read, batches).body.to_vec();
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
        // A fail-stopped log takes no more appends: its wait returns at
        // once, every round, and would spin the shard.
        let failed = owned.log.snapshot().failure.is_some();
        if batches.batch_count > 0 || remaining.is_zero() || context.write_epoch().is_err() || failed {
            return Ok(batches);
        }
        futures_lite::future::or(owned.log.wait_replica_readable_past(offset), crate::runtime::sleep(remaining)).await;
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

/// A follower's copy of a partition's consumer-group commits. Asking
/// acknowledges `stored_version` (what it stored durably from an earlier
/// answer: waiting commits at or below it are released); the answer is
/// every group's offset and the version they reflect, read together with
/// no await between, so every commit bumped to that version is in it.
pub fn replica_group_offsets(
    context: &ShardContext,
    owned: &OwnedPartition,
    replica_id: u64,
    stored_version: u64,
) -> Outcome {
    context.write_epoch()?;
    // Begin the term first: it forgets acknowledgements of earlier terms,
    // and must not forget this one.
    high_watermark::advance(owned, &context.cluster);
    owned.replication.record_commits_stored(replica_id, stored_version);
    let version = owned.replication.commits.version();
    owned.replication.commits.announce(replica_id, version);
    Ok(Response::ReplicaGroupOffsets { version, groups: owned.log.committed_offsets() })
}

/// Publish how far each known follower is on this shard's partitions (run
/// every [`PROGRESS_INTERVAL`] while leading): the oldest caught-up time (a
/// partition the follower has not fetched in this term counts from when
/// this node opened it empty, as never caught up if it opened with records,
/// and not at all while it holds none), records and estimated bytes
/// behind, the latest fetch.
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

/// Drop the answer bodies kept for followers (`shard/sent_answer.rs`)
/// that no follower came for in time; nothing to walk when none is kept.
pub fn expire_kept_answers(context: &ShardContext) {
    if crate::shard::sent_answer::kept_answer_bytes() == 0 {
        return;
    }
    let now_ms = monotonic_ms();
    for owned in context.partitions.all() {
        owned.replication.expire_answer(now_ms);
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
                    lag.caught_up_ms = lag.caught_up_ms.min(owned.replication.empty_since_ms());
                    lag.records += records;
                    lag.bytes += snapshot.size_bytes;
                }
            }
        }
        lag
    }
}
