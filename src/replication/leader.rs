//! The leader's side of replication, on the shard that owns each partition:
//! serving followers' reads (which are also their acknowledgements), the
//! high watermark, `acks=all`, and the per-shard progress the control
//! thread turns into ISR decisions.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::protocol::{ErrorCode, ErrorResponse, Response, TopicSettings};
use crate::runtime::clock::monotonic_ms;
use crate::shard::handler::{storage_error, ShardContext};
use crate::shard::mesh::Outcome;
use crate::shard::partitions::OwnedPartition;
use crate::state::cluster::Role;

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse { code, message: message.into(), leader: None }
}

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
pub(crate) fn encode_answer(batches: Vec<u8>, progress: &crate::state::progress::FollowerProgress) -> Vec<u8> {
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

impl ShardContext {
    /// The partition's high watermark as replication computes it: what
    /// `acks=all` waits for. Standalone: the durable end. Leader: the
    /// minimum over the in-sync set. Follower: what the leader last said,
    /// capped by what this node has durable.
    pub fn high_watermark(&self, owned: &OwnedPartition) -> u64 {
        let durable = owned.log.snapshot().durable_end_offset;
        let view = self.cluster.view();
        owned.replication.high_watermark(view.role, view.leader_epoch, durable, &view.in_sync_followers)
    }

    /// The high watermark consumers may see, `None` until this node knows
    /// one that covers everything shown before (after a restart, or at the
    /// start of a leadership term): see `PartitionReplication::visible_high_watermark`.
    pub fn visible_high_watermark(&self, owned: &OwnedPartition) -> Option<u64> {
        let durable = owned.log.snapshot().durable_end_offset;
        let view = self.cluster.view();
        owned.replication.visible_high_watermark(view.role, view.leader_epoch, durable, &view.in_sync_followers)
    }

    /// `visible_high_watermark`, or the retriable `not_ready` refusal.
    pub fn consumer_high_watermark(&self, owned: &OwnedPartition) -> Result<u64, ErrorResponse> {
        self.visible_high_watermark(owned).ok_or_else(|| {
            error(
                ErrorCode::NotReady,
                "the high watermark is not re-established yet after a restart or a leader change; retry",
            )
        })
    }

    /// `acks=all` precondition: enough in-sync replicas to accept a write.
    pub fn check_min_in_sync(&self) -> Result<(), ErrorResponse> {
        if !self.cluster.is_clustered() {
            return Ok(());
        }
        let view = self.cluster.view();
        let in_sync = 1 + view.in_sync_followers.len();
        let needed = self.config.cluster.min_insync_replicas;
        if in_sync < needed {
            return Err(error(
                ErrorCode::NotEnoughReplicas,
                format!("{in_sync} in-sync replicas, min_insync_replicas is {needed}"),
            ));
        }
        Ok(())
    }

    /// Wait until every in-sync replica has `next_offset` durable (the high
    /// watermark passes it). Fails with `not_enough_replicas` when the set
    /// shrinks below the minimum, `not_leader` when leadership is lost, and
    /// `timeout` after twice `replica_lag_max_ms` (by then a stuck follower
    /// has been dropped from the set, so this only fires if etcd is stuck).
    pub async fn wait_for_replicas(&self, owned: &OwnedPartition, next_offset: u64) -> Result<(), ErrorResponse> {
        if !self.cluster.is_clustered() {
            return Ok(());
        }
        let limit = Duration::from_millis(self.config.cluster.replica_lag_max_ms * 2);
        let started = Instant::now();
        loop {
            let changed = owned.replication.changed.notified();
            self.write_epoch()?;
            self.check_min_in_sync()?;
            if self.high_watermark(owned) >= next_offset {
                return Ok(());
            }
            let remaining = limit.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(error(ErrorCode::Timeout, "in-sync replicas did not acknowledge in time"));
            }
            // Changes of the in-sync set come from another thread: re-check
            // at least every 20 ms as well as on every follower fetch.
            futures_lite::future::or(changed, crate::runtime::sleep(remaining.min(Duration::from_millis(20)))).await;
        }
    }

    /// A follower's read of a partition from `offset` (its log end).
    pub async fn replica_fetch(
        &self,
        owned: &OwnedPartition,
        replica_id: u64,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Outcome {
        let leader_epoch = self.write_epoch()?;
        let snapshot = owned.log.snapshot();
        if offset < snapshot.log_start_offset {
            // Retention deleted what the follower needs next: tell it where
            // the log starts now so it can start over there (a refusal
            // alone left it asking for the same offset forever).
            return Ok(self.empty_replica_answer(owned, &snapshot, leader_epoch));
        }
        if offset > snapshot.log_end_offset {
            return Err(error(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "follower offset {offset} is outside the leader's log [{}, {})",
                    snapshot.log_start_offset, snapshot.log_end_offset
                ),
            ));
        }
        owned.replication.record_fetch(replica_id, offset, snapshot.log_end_offset, monotonic_ms());
        self.high_watermark(owned);
        let max_wait = Duration::from_millis(u64::from(max_wait_ms).min(self.config.limits.max_fetch_wait_ms));
        let max_bytes = (max_bytes as usize).clamp(1, self.config.limits.max_frame_bytes / 2);
        let deadline = Instant::now() + max_wait;
        let batches = loop {
            let batches = owned.log.read_written(offset, max_bytes).await.map_err(storage_error)?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if batches.batch_count > 0 || remaining.is_zero() || self.write_epoch().is_err() {
                break batches;
            }
            futures_lite::future::or(owned.log.wait_written_past(offset), crate::runtime::sleep(remaining)).await;
        };
        let snapshot = owned.log.snapshot();
        owned.replication.record_answer(replica_id, snapshot.log_end_offset, monotonic_ms());
        let progress = self.progress.follower(replica_id);
        let uncompressed_bytes = batches.bytes.len() as u32;
        let key = (offset, batches.next_offset, owned.log.generation());
        let compressed = match owned.replication.cached_answer(key) {
            Some(body) => body,
            None => {
                let body = encode_answer(batches.bytes, &progress);
                if body.len() != uncompressed_bytes as usize {
                    owned.replication.cache_answer(key, &body);
                }
                body
            }
        };
        progress.sent_bytes.fetch_add(compressed.len() as u64, Ordering::Relaxed);
        progress.sent_uncompressed_bytes.fetch_add(u64::from(uncompressed_bytes), Ordering::Relaxed);
        Ok(Response::ReplicaFetch {
            high_watermark: self.visible_high_watermark(owned),
            log_start_offset: snapshot.log_start_offset,
            log_end_offset: snapshot.log_end_offset,
            leader_epoch,
            uncompressed_bytes,
            compressed,
        })
    }

    /// An answer without batches: where the leader's log starts and ends.
    fn empty_replica_answer(
        &self,
        owned: &OwnedPartition,
        snapshot: &crate::storage::LogSnapshot,
        leader_epoch: u32,
    ) -> Response {
        Response::ReplicaFetch {
            high_watermark: self.visible_high_watermark(owned),
            log_start_offset: snapshot.log_start_offset,
            log_end_offset: snapshot.log_end_offset,
            leader_epoch,
            uncompressed_bytes: 0,
            compressed: Vec::new(),
        }
    }

    /// Where `epoch` ends in this leader's log: the largest epoch <= it and
    /// the offset where the next epoch starts (or the log end).
    pub fn epoch_end_offset(&self, owned: &OwnedPartition, epoch: u32) -> Outcome {
        self.write_epoch()?;
        let snapshot = owned.log.snapshot();
        let found = owned.log.epochs().end_offset_for(epoch, snapshot.log_end_offset);
        Ok(Response::EpochEndOffset {
            epoch: found.map(|(epoch, _)| epoch),
            end_offset: found.map_or(snapshot.log_start_offset, |(_, end)| end),
            log_start_offset: snapshot.log_start_offset,
        })
    }

    /// Every topic with its settings (followers mirror them).
    pub fn topic_configs(&self) -> Outcome {
        let topics = self
            .registry
            .snapshot()
            .values()
            .map(|meta| {
                let settings = TopicSettings {
                    partitions: meta.partitions,
                    retention_bytes: meta.retention_bytes,
                    retention_ms: meta.retention_ms,
                    segment_bytes: meta.segment_bytes,
                };
                (meta.name.clone(), settings)
            })
            .collect();
        Ok(Response::TopicConfigs(topics))
    }

    /// Publish, every [`PROGRESS_INTERVAL`], how far each known follower is
    /// on this shard's partitions: the oldest caught-up time (a partition
    /// the follower never fetched counts as never caught up unless it is
    /// empty), records and estimated bytes behind, the latest fetch.
    pub async fn publish_follower_progress(self: Rc<Self>, stopping: Rc<std::cell::Cell<bool>>) {
        while !stopping.get() {
            crate::runtime::sleep(PROGRESS_INTERVAL).await;
            if self.cluster.view().role != Role::Leader {
                continue;
            }
            let now = monotonic_ms();
            let partitions = self.partitions.all();
            for (id, progress) in self.progress.all() {
                let mut caught_up_ms = now;
                let mut fetched_ms = 0;
                let (mut lag_records, mut lag_bytes) = (0u64, 0u64);
                for owned in &partitions {
                    let snapshot = owned.log.snapshot();
                    let records = snapshot.log_end_offset - snapshot.log_start_offset;
                    let bytes_per_record = snapshot.size_bytes / records.max(1);
                    match owned.replication.follower(id) {
                        Some(position) => {
                            caught_up_ms = caught_up_ms.min(position.caught_up_ms);
                            fetched_ms = fetched_ms.max(position.fetched_ms);
                            let behind = snapshot.log_end_offset.saturating_sub(position.offset);
                            lag_records += behind;
                            lag_bytes += behind * bytes_per_record;
                        }
                        None if records == 0 => {}
                        None => {
                            caught_up_ms = caught_up_ms.min(owned.replication.opened_ms());
                            lag_records += records;
                            lag_bytes += snapshot.size_bytes;
                        }
                    }
                }
                progress.caught_up_ms[self.shard].store(caught_up_ms, Ordering::Relaxed);
                progress.fetched_ms[self.shard].store(fetched_ms, Ordering::Relaxed);
                progress.lag_records[self.shard].store(lag_records, Ordering::Relaxed);
                progress.lag_bytes[self.shard].store(lag_bytes, Ordering::Relaxed);
            }
        }
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
