//! The leader's side of `ReplicaFetchMany`: one long poll covering every
//! partition a follower shard reads from one leader shard (Kafka's
//! multi-partition Fetch). The read is answered as soon as any partition has
//! news — batches past the follower's offset, a high watermark above the one
//! it knows, its offset outside the log, or an error — or when the wait
//! expires, with answers bounded in bytes. Each partition's offset is the
//! follower's durable end, so the read acknowledges it, exactly as a
//! single-partition read does. Waiting costs O(1) per change: a partition
//! that changes marks its index in each waiting read (`FetchWake`), and the
//! read re-examines only the marked ones.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::answer_body::{answer_body, shared_answer, ReadFrom};
use super::high_watermark;
use crate::protocol::{
    ErrorCode, ErrorResponse, ReplicaFetchPartition, ReplicaFetchedPartition, Request, Response,
    REPLICA_FETCHED_PARTITION_FIXED_BYTES,
};
use crate::runtime::clock::monotonic_ms;
use crate::shard::context::ShardContext;
use crate::shard::mesh::{Outcome, ShardRequest};
use crate::shard::partition_replication::FetchWake;
use crate::shard::partitions::OwnedPartition;
use crate::shard::{owner_of, ShardId};

/// Bytes of a frame kept for the response header and the answer's own fields.
const FRAME_RESERVE_BYTES: usize = 1024;

/// What a follower asked, without the partitions.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// The follower's node id.
    pub replica_id: u64,
    /// Long-poll bound.
    pub max_wait_ms: u32,
    /// Soft bound on the answer's batch bytes.
    pub max_bytes: u32,
    /// Soft bound on one partition's batch bytes.
    pub partition_max_bytes: u32,
    /// Topic deletions the follower's connection had seen when it
    /// authenticated (`OwnedPartition::serves_replica_session`).
    pub topic_removals_seen: u64,
}

/// The bytes an answer may still take: batches are admitted while the soft
/// budget lasts (the first always, so a follower progresses past a batch
/// larger than the budget), and nothing is admitted past the frame limit.
struct AnswerBudget {
    batch_bytes_left: usize,
    partition_bytes: usize,
    frame_bytes_left: usize,
    admitted_any: bool,
}

impl AnswerBudget {
    /// How much one partition may read now.
    fn read_bytes(&self) -> usize {
        match self.admitted_any {
            false => self.partition_bytes,
            true => self.partition_bytes.min(self.batch_bytes_left),
        }
    }

    /// Take room for an entry with `body_bytes` (`uncompressed` before lz4).
    fn admit(&mut self, body_bytes: usize, uncompressed: usize) -> bool {
        let entry = REPLICA_FETCHED_PARTITION_FIXED_BYTES + body_bytes;
        let within_budget = body_bytes == 0 || !self.admitted_any || uncompressed <= self.batch_bytes_left;
        if entry > self.frame_bytes_left || !within_budget {
            return false;
        }
        self.frame_bytes_left -= entry;
        if body_bytes > 0 {
            self.batch_bytes_left = self.batch_bytes_left.saturating_sub(uncompressed);
            self.admitted_any = true;
        }
        true
    }
}

fn invalid(message: impl Into<String>) -> ErrorResponse {
    ErrorResponse { code: ErrorCode::InvalidRequest, message: message.into(), leader: None }
}

fn entry(index: u32, error: ErrorCode, snapshot: Option<&crate::storage::LogSnapshot>) -> ReplicaFetchedPartition {
    ReplicaFetchedPartition {
        index,
        error,
        high_watermark: None,
        log_start_offset: snapshot.map_or(0, |snapshot| snapshot.log_start_offset),
        log_end_offset: snapshot.map_or(0, |snapshot| snapshot.log_end_offset),
        commit_version: 0,
        uncompressed_bytes: 0,
        body: bytes::Bytes::new(),
    }
}

/// A follower's multi-partition read arriving on this shard: served by
/// the shard owning its partitions (with its wait); a read spread over
/// several shards is answered at once from each (the answer names the
/// leader's shard count, and the follower then reads per shard).
pub async fn replica_fetch_many(
    context: &Rc<ShardContext>,
    limits: FetchLimits,
    partitions: Vec<ReplicaFetchPartition>,
) -> Outcome {
    context.write_epoch()?;
    let most = context.config.replica_read_partitions();
    if partitions.len() > most {
        return Err(invalid(format!(
            "a replica read of {} partitions exceeds cluster.replica_fetch_max_partitions = {most}",
            partitions.len()
        )));
    }
    let owners: Vec<ShardId> =
        partitions.iter().map(|wanted| owner_of(&wanted.topic, wanted.partition, context.shards)).collect();
    let first = owners.first().copied().unwrap_or(context.shard);
    if owners.iter().all(|&owner| owner == first) {
        return fetch_many_on(context, first, limits, partitions).await;
    }
    let mut merged = Vec::new();
    let (mut leader_epoch, mut used) = (0, 0usize);
    let shares = owners.iter().collect::<std::collections::HashSet<_>>().len() as u32;
    for shard in 0..context.shards {
        let indices: Vec<u32> = (0..owners.len() as u32).filter(|&i| owners[i as usize] == shard).collect();
        if indices.is_empty() {
            continue;
        }
        let subset = indices.iter().map(|&i| partitions[i as usize].clone()).collect();
        let share = FetchLimits { max_wait_ms: 0, max_bytes: (limits.max_bytes / shares).max(1), ..limits };
        let Response::ReplicaFetchMany { leader_epoch: epoch, partitions: answered, .. } =
            fetch_many_on(context, shard, share, subset).await?
        else {
            return Err(invalid("a shard answered a replica read with something else"));
        };
        leader_epoch = epoch;
        for mut fetched in answered {
            // Each shard sends at least one batch: past the first, batches
            // over the whole read's budget wait for the next read.
            let bytes = fetched.uncompressed_bytes as usize;
            if bytes > 0 && used > 0 && used + bytes > limits.max_bytes as usize {
                (fetched.uncompressed_bytes, fetched.body) = (0, bytes::Bytes::new());
            }
            used += fetched.uncompressed_bytes as usize;
            fetched.index = indices[fetched.index as usize];
            merged.push(fetched);
        }
    }
    merged.sort_by_key(|fetched| fetched.index);
    Ok(Response::ReplicaFetchMany { leader_epoch, leader_shards: context.shards as u16, partitions: merged })
}

async fn fetch_many_on(
    context: &Rc<ShardContext>,
    shard: ShardId,
    limits: FetchLimits,
    partitions: Vec<ReplicaFetchPartition>,
) -> Outcome {
    if shard == context.shard {
        return serve_replica_fetch_many(context, limits, partitions).await;
    }
    let FetchLimits { replica_id, max_wait_ms, max_bytes, partition_max_bytes, topic_removals_seen } = limits;
    let request = Request::ReplicaFetchMany { replica_id, max_wait_ms, max_bytes, partition_max_bytes, partitions };
    context.mesh.call(shard, ShardRequest::Replica { request, topic_removals_seen }).await
}

/// Serve a multi-partition read on the shard that owns its partitions.
pub async fn serve_replica_fetch_many(
    context: &ShardContext,
    limits: FetchLimits,
    partitions: Vec<ReplicaFetchPartition>,
) -> Outcome {
    context.write_epoch()?;
    let batch_bytes = (limits.max_bytes as usize).clamp(1, context.config.replica_read_bytes());
    let mut budget = AnswerBudget {
        batch_bytes_left: batch_bytes,
        partition_bytes: (limits.partition_max_bytes as usize).clamp(1, batch_bytes),
        frame_bytes_left: context.config.limits.max_frame_bytes.saturating_sub(FRAME_RESERVE_BYTES),
        admitted_any: false,
    };
    let max_wait = Duration::from_millis(u64::from(limits.max_wait_ms).min(context.config.limits.max_fetch_wait_ms));
    let deadline = Instant::now() + max_wait;
    let wake = Rc::new(FetchWake::new(partitions.len()));
    let owned = acknowledge_and_register(context, &limits, &partitions, &wake);
    let mut answer = Vec::new();
    let mut candidates: Vec<u32> = (0..partitions.len() as u32).collect();
    loop {
        for &index in &candidates {
            let (wanted, owned) = (&partitions[index as usize], owned[index as usize].as_deref());
            if let Some(news) = partition_news(context, limits.replica_id, index, wanted, owned, &mut budget).await {
                answer.push(news);
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if !answer.is_empty() || remaining.is_zero() || context.write_epoch().is_err() {
            break;
        }
        let notified = wake.notify.notified();
        candidates = wake.drain();
        if candidates.is_empty() {
            futures_lite::future::or(notified, crate::runtime::sleep(remaining)).await;
            candidates = wake.drain();
        }
    }
    let now_ms = monotonic_ms();
    for owned in owned.iter().flatten() {
        owned.replication.record_answer(limits.replica_id, owned.log.snapshot().log_end_offset, now_ms);
    }
    answer.sort_by_key(|fetched| fetched.index);
    // A leader deposed while it waited must not answer as one.
    let leader_epoch = context.write_epoch()?;
    Ok(Response::ReplicaFetchMany { leader_epoch, leader_shards: context.shards as u16, partitions: answer })
}

/// Each offset is the follower's durable end: record it (the ack that
/// moves the high watermark), and register the read on each partition.
/// A partition this follower's connection may not read is left out, as
/// one this shard does not have (`OwnedPartition::serves_replica_session`).
fn acknowledge_and_register(
    context: &ShardContext,
    limits: &FetchLimits,
    partitions: &[ReplicaFetchPartition],
    wake: &Rc<FetchWake>,
) -> Vec<Option<Rc<OwnedPartition>>> {
    let (now_ms, replica_id) = (monotonic_ms(), limits.replica_id);
    let owned: Vec<_> = partitions
        .iter()
        .map(|wanted| {
            let owned = context.partitions.get(&wanted.topic, wanted.partition)?;
            owned.serves_replica_session(limits.topic_removals_seen).then_some(owned)
        })
        .collect();
    for (index, (wanted, owned)) in partitions.iter().zip(&owned).enumerate() {
        let Some(owned) = owned else { continue };
        let snapshot = owned.log.snapshot();
        if (snapshot.log_start_offset..=snapshot.log_end_offset).contains(&wanted.offset) {
            owned.replication.record_fetch(replica_id, wanted.offset, snapshot.log_end_offset, now_ms);
        }
        if owned.replication.register_waiter(replica_id, wake, index as u32) {
            // The end as of now, before this read looks at the partition:
            // a write completing before the task first runs still wakes it.
            crate::runtime::spawn_local(watch_written(Rc::clone(owned), ends(owned))).detach();
        }
    }
    owned
}

/// What the follower should hear about one partition, if anything.
async fn partition_news(
    context: &ShardContext,
    replica_id: u64,
    index: u32,
    wanted: &ReplicaFetchPartition,
    owned: Option<&OwnedPartition>,
    budget: &mut AnswerBudget,
) -> Option<ReplicaFetchedPartition> {
    let Some(owned) = owned else {
        // Deleted (or not yet created) here: the follower mirrors topics.
        return budget.admit(0, 0).then(|| entry(index, ErrorCode::UnknownTopic, None));
    };
    let snapshot = owned.log.snapshot();
    let refusal = if snapshot.failure.is_some() || snapshot.fence.is_some() {
        Some(ErrorCode::StorageFailed)
    } else if wanted.offset > snapshot.log_end_offset {
        Some(ErrorCode::OffsetOutOfRange)
    } else {
        None
    };
    if let Some(code) = refusal {
        return budget.admit(0, 0).then(|| entry(index, code, Some(&snapshot)));
    }
    let mut news = entry(index, ErrorCode::None, Some(&snapshot));
    // Unestablished (a new term below its start): followers learn nothing.
    news.high_watermark = high_watermark::visible(owned, &context.cluster);
    // New consumer-group commits: the follower copies them at once.
    news.commit_version = owned.replication.commits.news_for(replica_id).unwrap_or(0);
    if wanted.offset < snapshot.log_start_offset {
        // Behind the log start: the follower starts over there.
        return admit_news(budget, owned, replica_id, news, true);
    }
    // With the budget spent, the batches wait for the next read.
    if owned.log.written_end_offset() > wanted.offset && budget.read_bytes() > 0 {
        match read_for_follower(context, replica_id, owned, wanted.offset, budget).await {
            Ok(Some((uncompressed_bytes, body))) => (news.uncompressed_bytes, news.body) = (uncompressed_bytes, body),
            Ok(None) => {}
            Err(code) => return budget.admit(0, 0).then(|| entry(index, code, Some(&snapshot))),
        }
    }
    let higher = match (news.high_watermark, wanted.high_watermark) {
        (Some(high_watermark), Some(known)) => high_watermark > known,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let has_news = !news.body.is_empty() || higher || news.commit_version != 0;
    admit_news(budget, owned, replica_id, news, has_news)
}

/// `news` if there is any and it fits (an entry with batches was admitted
/// when they were read); a commit version it carries counts as told.
fn admit_news(
    budget: &mut AnswerBudget,
    owned: &OwnedPartition,
    replica_id: u64,
    news: ReplicaFetchedPartition,
    has_news: bool,
) -> Option<ReplicaFetchedPartition> {
    if !has_news || (news.body.is_empty() && !budget.admit(0, 0)) {
        return None;
    }
    owned.replication.commits.announce(replica_id, news.commit_version);
    Some(news)
}

/// Batches from `offset` within the budget: (uncompressed bytes, body),
/// admitted into the budget; None when they do not fit this answer. The
/// body another follower was just sent for `offset` when there is one.
async fn read_for_follower(
    context: &ShardContext,
    replica_id: u64,
    owned: &OwnedPartition,
    offset: u64,
    budget: &mut AnswerBudget,
) -> Result<Option<(u32, Bytes)>, ErrorCode> {
    let progress = context.progress.follower(replica_id);
    let shared = shared_answer(owned, replica_id, offset, budget.read_bytes());
    let is_shared = shared.is_some();
    let answer = match shared {
        Some(answer) => answer,
        None => {
            let read = ReadFrom { offset, generation: owned.log.generation() };
            let batches = owned.log.read_written(offset, budget.read_bytes()).await.map_err(|_| {
                // Whatever the storage failure (closed by a topic deletion, a
                // segment retention just removed), the entry says `storage_failed`:
                // the follower evicts the partition and checks it again, and a
                // code such as `shutting_down` would claim the node is stopping.
                ErrorCode::StorageFailed
            })?;
            if batches.batch_count == 0 {
                return Ok(None);
            }
            answer_body(context, owned, &progress, replica_id, read, batches)
        }
    };
    let (uncompressed, body) = (answer.uncompressed_bytes, answer.body);
    if !budget.admit(body.len(), uncompressed) {
        // Alone in an answer it would not fit a frame: nothing can carry it.
        return match budget.admitted_any || budget.frame_bytes_left < REPLICA_FETCHED_PARTITION_FIXED_BYTES {
            true => Ok(None),
            false => Err(ErrorCode::RecordTooLarge),
        };
    }
    progress.sent_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    progress.sent_uncompressed_bytes.fetch_add(uncompressed as u64, Ordering::Relaxed);
    if is_shared {
        progress.shared_answer_bytes.fetch_add(uncompressed as u64, Ordering::Relaxed);
    }
    Ok(Some((uncompressed as u32, body)))
}

/// The (written, durable) ends of a log.
fn ends(owned: &OwnedPartition) -> (u64, u64) {
    (owned.log.written_end_offset(), owned.log.snapshot().durable_end_offset)
}

/// Wake the reads waiting on `owned` whenever its written or durable end
/// moves, while any waits. Both: a partition without tail-cache room is
/// read from disk, which serves only what is durable, so the write alone
/// finds nothing to send. Ends when no read waits, or when the log fails or
/// closes (its waits then return without progress: waiting again would spin).
async fn watch_written(owned: Rc<OwnedPartition>, mut seen: (u64, u64)) {
    loop {
        let (written, durable) = seen;
        futures_lite::future::or(owned.log.wait_written_past(written), owned.log.wait_durable_past(durable)).await;
        let now = ends(&owned);
        let advanced = now.0 > written || now.1 > durable;
        owned.replication.wake_waiters();
        if !advanced || !owned.replication.has_live_waiters() {
            break;
        }
        seen = now;
    }
    owned.replication.stop_watching();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(batch_bytes: usize, partition_bytes: usize, frame_bytes: usize) -> AnswerBudget {
        AnswerBudget {
            batch_bytes_left: batch_bytes,
            partition_bytes,
            frame_bytes_left: frame_bytes,
            admitted_any: false,
        }
    }

    #[test]
    fn the_first_batch_is_admitted_past_the_budget_and_later_ones_only_within_it() {
        let mut answer = budget(1_000, 600, 1 << 20);
        assert_eq!(answer.read_bytes(), 600, "a partition reads at most its own share");
        assert!(answer.admit(5_000, 5_000), "the first batch always goes: the follower must progress");
        assert_eq!(answer.read_bytes(), 0);
        assert!(!answer.admit(10, 10), "nothing more once the budget is spent");
        assert!(answer.admit(0, 0), "an entry without batches (an error, a high watermark) still goes");

        let mut answer = budget(1_000, 600, 1 << 20);
        assert!(answer.admit(500, 700), "compressed 500 of 700");
        assert_eq!(answer.read_bytes(), 300);
        assert!(answer.admit(300, 300));
        assert!(!answer.admit(1, 1));
    }

    #[test]
    fn nothing_is_admitted_past_the_frame() {
        let fixed = REPLICA_FETCHED_PARTITION_FIXED_BYTES;
        let mut answer = budget(1 << 20, 1 << 20, 2 * fixed + 100);
        assert!(!answer.admit(2 * fixed + 100, 2 * fixed + 100), "a first batch larger than the frame");
        assert!(answer.admit(100, 100));
        assert!(answer.admit(0, 0));
        assert!(!answer.admit(0, 0), "not even an entry without batches");
    }
}
