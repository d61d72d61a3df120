//! Request handling on a shard: route each request to the shard that owns
//! its partition (locally or over the mesh) and execute it there.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mesh::{Mesh, Outcome, ShardRequest};
use super::partitions::{OwnedPartition, ShardPartitions};
use super::topics::{TopicMeta, TopicRegistry};
use super::{owner_of, ShardId};
use crate::config::NodeConfig;
use crate::protocol::{Acks, ErrorCode, ErrorResponse, PartitionDescription, Request, Response, TopicSettings};
use crate::replication::fetch_many::FetchLimits;
use crate::state::cluster::{ClusterState, WriteRefusal};
use crate::storage::{AppendMode, Durable, Placed, StorageError};

/// The shard that owns topic metadata (creates and deletes topics).
pub const METADATA_SHARD: ShardId = 0;

/// Everything a shard needs to serve requests.
pub struct ShardContext {
    /// This shard.
    pub shard: ShardId,
    /// Number of data shards.
    pub shards: usize,
    /// Node settings.
    pub config: Arc<NodeConfig>,
    /// Topics, shared by all shards.
    pub registry: Arc<TopicRegistry>,
    /// Partitions this shard owns.
    pub partitions: ShardPartitions,
    /// Channels to the other shards.
    pub mesh: Rc<Mesh>,
    /// Node metrics (this shard writes `metrics.shards[shard]`).
    pub metrics: Arc<crate::state::metrics::NodeMetrics>,
    /// The cluster view the control thread publishes (role, epoch, fencing).
    pub cluster: Arc<ClusterState>,
    /// Followers' progress, written by this shard's slot while leading.
    pub progress: Arc<crate::state::progress::ReplicationProgress>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse { code, message: message.into(), leader: None }
}

/// Map a storage error to its wire code.
pub fn storage_error(failure: StorageError) -> ErrorResponse {
    let code = match &failure {
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::DiskFull { .. } => ErrorCode::DiskFull,
        StorageError::InvalidBatch(_) => ErrorCode::InvalidRequest,
        StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        StorageError::Config(_) | StorageError::InvalidGroup(_) => ErrorCode::InvalidRequest,
        StorageError::Closed(_) => ErrorCode::ShuttingDown,
        _ => ErrorCode::StorageFailed,
    };
    error(code, failure.to_string())
}

impl ShardContext {
    fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// The epoch to write under, or `not_leader` (with the leader's address
    /// when known). Checked before a write and again before its ack, so a
    /// leader whose lease lapsed mid-write does not acknowledge it.
    pub fn write_epoch(&self) -> Result<u32, ErrorResponse> {
        self.cluster.write_epoch().map_err(|refusal| match refusal {
            WriteRefusal::NotLeader(Some(leader)) => ErrorResponse {
                code: ErrorCode::NotLeader,
                message: format!("this node is a follower; the leader is at {leader}"),
                leader: Some(leader),
            },
            WriteRefusal::NotLeader(None) => {
                error(ErrorCode::NotLeader, "this node is a follower and no leader is known")
            }
            WriteRefusal::Fenced => {
                error(ErrorCode::NotLeader, "fenced: this node's etcd lease was not renewed in time; not acknowledging")
            }
        })
    }

    /// Handle a client request that arrived on this shard.
    pub async fn handle(self: &Rc<Self>, request: Request) -> Outcome {
        if matches!(
            request,
            Request::CreateTopic { .. }
                | Request::DeleteTopic { .. }
                | Request::CommitOffset { .. }
                | Request::Produce { .. }
        ) {
            self.write_epoch()?;
        }
        if let Request::ReplicaFetchMany { replica_id, max_wait_ms, max_bytes, partition_max_bytes, partitions } =
            request
        {
            let limits = FetchLimits { replica_id, max_wait_ms, max_bytes, partition_max_bytes };
            return self.replica_fetch_many(limits, partitions).await;
        }
        match &request {
            Request::CreateTopic { .. } | Request::DeleteTopic { .. } if self.shard != METADATA_SHARD => {
                self.mesh.call(METADATA_SHARD, ShardRequest::Client(request)).await
            }
            Request::CreateTopic { name, settings } => self.apply_create_topic(name, settings).await,
            Request::DeleteTopic { name } => self.apply_delete_topic(name).await,
            Request::ListTopics => Ok(Response::ListTopics(
                self.registry.snapshot().values().map(|meta| (meta.name.clone(), meta.partitions)).collect(),
            )),
            Request::DescribeTopic { name } => self.describe_topic(name).await,
            Request::InitProducer => Ok(Response::InitProducer { producer_id: new_producer_id() }),
            Request::TopicConfigs => self.topic_configs(),
            Request::ReplicaHello { .. } | Request::ReplicaAuth { .. } => {
                Err(error(ErrorCode::InvalidRequest, "handshake frames are handled by the replication listener"))
            }
            _ => self.route(request).await,
        }
    }

    /// Send a partition request to its owner.
    async fn route(self: &Rc<Self>, request: Request) -> Outcome {
        let (topic, partition) = request.partition().ok_or_else(|| error(ErrorCode::InvalidRequest, "no partition"))?;
        let meta = self.registry.get(topic).ok_or_else(|| error(ErrorCode::UnknownTopic, format!("topic {topic}")))?;
        if partition >= meta.partitions {
            return Err(error(ErrorCode::UnknownTopic, format!("topic {topic} has no partition {partition}")));
        }
        let owner = owner_of(topic, partition, self.shards);
        if owner == self.shard {
            return self.execute(request).await;
        }
        let metrics = self.shard_metrics();
        metrics.cross_shard_forwarded.fetch_add(1, Ordering::Relaxed);
        metrics.cross_shard_in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = self.mesh.call(owner, ShardRequest::Client(request)).await;
        metrics.cross_shard_in_flight.fetch_sub(1, Ordering::Relaxed);
        outcome
    }

    /// Execute a request forwarded by another shard (this shard owns it).
    pub async fn handle_forwarded(self: &Rc<Self>, request: ShardRequest) -> Outcome {
        match request {
            ShardRequest::Client(request @ (Request::CreateTopic { .. } | Request::DeleteTopic { .. })) => {
                self.handle(request).await
            }
            ShardRequest::Client(request) => self.execute(request).await,
            ShardRequest::OpenTopic(meta) => {
                let defaults = &self.config.storage;
                self.partitions
                    .open_topic(self.shard, self.shards, &self.config.data_dir, meta, defaults)
                    .await
                    .map_err(storage_error)?;
                Ok(Response::CreateTopic)
            }
            ShardRequest::DropTopic(name) => {
                self.partitions.drop_topic(&name).await.map_err(storage_error)?;
                Ok(Response::DeleteTopic)
            }
        }
    }

    /// This shard's counters.
    pub fn shard_metrics(&self) -> &crate::state::metrics::ShardMetrics {
        &self.metrics.shards[self.shard]
    }

    fn owned(&self, topic: &str, partition: u32) -> Result<Rc<OwnedPartition>, ErrorResponse> {
        self.partitions
            .get(topic, partition)
            .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("partition {topic}/{partition} is not open here")))
    }

    /// Execute a partition request on its owning shard.
    async fn execute(self: &Rc<Self>, request: Request) -> Outcome {
        match request {
            Request::Produce { topic, partition, acks, mut batch } => {
                let owned = self.owned(&topic, partition)?;
                self.check_sizes(&batch, owned.log.config().max_batch_bytes)?;
                let mode = AppendMode::Leader { leader_epoch: self.write_epoch()? };
                if acks == Acks::All {
                    self.check_min_in_sync()?;
                }
                let started = Instant::now();
                let batch_bytes = batch.len() as u64;
                let info = match acks {
                    Acks::None => owned.log.append_placed(&mut batch, mode).await.map(Placed::offsets),
                    Acks::Leader | Acks::All => owned.log.append(&mut batch, mode).await.map(Durable::offsets),
                }
                .map_err(storage_error)?;
                if acks == Acks::All {
                    self.wait_for_replicas(&owned, info.next_offset).await?;
                }
                self.write_epoch()?;
                let metrics = self.shard_metrics();
                metrics.produce_requests.fetch_add(1, Ordering::Relaxed);
                metrics.produce_records.fetch_add(info.next_offset - info.base_offset, Ordering::Relaxed);
                metrics.produce_bytes.fetch_add(batch_bytes, Ordering::Relaxed);
                metrics.produce_latency.observe(started.elapsed());
                Ok(Response::Produce {
                    base_offset: info.base_offset,
                    next_offset: info.next_offset,
                    duplicate: info.duplicate,
                })
            }
            Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms } => {
                let owned = self.owned(&topic, partition)?;
                let started = Instant::now();
                let outcome = self.fetch(&owned, offset, max_bytes, max_wait_ms).await;
                let metrics = self.shard_metrics();
                metrics.fetch_requests.fetch_add(1, Ordering::Relaxed);
                if let Ok(Response::Fetch { batches, next_offset, .. }) = &outcome {
                    metrics.fetch_bytes.fetch_add(batches.len() as u64, Ordering::Relaxed);
                    metrics.fetch_records.fetch_add(next_offset.saturating_sub(offset), Ordering::Relaxed);
                    owned.fetched_bytes.set(owned.fetched_bytes.get() + batches.len() as u64);
                }
                metrics.fetch_latency.observe(started.elapsed());
                outcome
            }
            Request::ListOffsets { topic, partition } => {
                let owned = self.owned(&topic, partition)?;
                let snapshot = owned.log.snapshot();
                Ok(Response::ListOffsets {
                    log_start_offset: snapshot.log_start_offset,
                    log_end_offset: snapshot.log_end_offset,
                    high_watermark: self.consumer_high_watermark(&owned)?,
                })
            }
            Request::CommitOffset { group, topic, partition, offset } => {
                let owned = self.owned(&topic, partition)?;
                // The log refuses an offset beyond its end (offset_out_of_range),
                // checked under its offsets gate where no truncation interleaves.
                owned.log.commit_offset(&group, offset).await.map_err(storage_error)?;
                Ok(Response::CommitOffset)
            }
            Request::FetchOffset { group, topic, partition } => {
                let owned = self.owned(&topic, partition)?;
                Ok(Response::FetchOffset(committed_state(owned.log.committed_offset(&group))))
            }
            Request::FindOffset { topic, partition, timestamp_ms } => {
                let owned = self.owned(&topic, partition)?;
                let offset = owned.log.find_offset_by_timestamp(timestamp_ms).await.map_err(storage_error)?;
                Ok(Response::FindOffset { offset })
            }
            Request::DescribeTopic { name } => {
                let mut descriptions = Vec::new();
                for owned in self.partitions.all().into_iter().filter(|owned| owned.meta.name == name) {
                    descriptions.push(describe(self, &owned));
                }
                Ok(Response::DescribeTopic(descriptions))
            }
            Request::ReplicaFetch { replica_id, topic, partition, offset, max_bytes, max_wait_ms } => {
                let owned = self.owned(&topic, partition)?;
                self.replica_fetch(&owned, replica_id, offset, max_bytes, max_wait_ms).await
            }
            Request::ReplicaFetchMany { replica_id, max_wait_ms, max_bytes, partition_max_bytes, partitions } => {
                let limits = FetchLimits { replica_id, max_wait_ms, max_bytes, partition_max_bytes };
                self.serve_replica_fetch_many(limits, partitions).await
            }
            Request::EpochEndOffset { topic, partition, epoch } => {
                let owned = self.owned(&topic, partition)?;
                self.epoch_end_offset(&owned, epoch)
            }
            Request::GroupOffsets { topic, partition } => {
                self.write_epoch()?;
                Ok(Response::GroupOffsets(self.owned(&topic, partition)?.log.committed_offsets()))
            }
            other => Err(error(ErrorCode::InvalidRequest, format!("{:?} is not a partition request", other.api_key()))),
        }
    }

    /// `record_too_large` for a batch over the partition's limit or a record
    /// value over `limits.max_record_bytes`.
    fn check_sizes(&self, batch: &[u8], max_batch_bytes: usize) -> Result<(), ErrorResponse> {
        if batch.len() > max_batch_bytes {
            return Err(error(
                ErrorCode::RecordTooLarge,
                format!("batch of {} bytes exceeds {max_batch_bytes}", batch.len()),
            ));
        }
        let limit = self.config.limits.max_record_bytes;
        let records = batch.get(crate::storage::batch::BATCH_HEADER_BYTES..).unwrap_or(&[]);
        for record in crate::storage::batch::RecordIter::new(records).flatten() {
            if record.value.len() > limit {
                return Err(error(
                    ErrorCode::RecordTooLarge,
                    format!("record value of {} bytes exceeds limits.max_record_bytes = {limit}", record.value.len()),
                ));
            }
        }
        Ok(())
    }

    /// Read batches; with `max_wait_ms`, wait for data at `offset` (long poll).
    async fn fetch(&self, owned: &OwnedPartition, offset: u64, max_bytes: u32, max_wait_ms: u32) -> Outcome {
        let max_wait = Duration::from_millis(u64::from(max_wait_ms).min(self.config.limits.max_fetch_wait_ms));
        let max_bytes = (max_bytes as usize).clamp(1, self.config.limits.max_frame_bytes - 1024);
        let deadline = std::time::Instant::now() + max_wait;
        loop {
            let changed = owned.replication.changed.notified();
            let Some(high_watermark) = self.visible_high_watermark(owned) else {
                // Not re-established yet: follower fetches (a `changed`) or
                // an in-sync set change on another thread establish it.
                let remaining = deadline.saturating_duration_since(std::time::Instant::now());
                if remaining.is_zero() {
                    // The `not_ready` refusal (or, established meanwhile, a read).
                    self.consumer_high_watermark(owned)?;
                    continue;
                }
                futures_lite::future::or(changed, crate::runtime::sleep(remaining.min(Duration::from_millis(100))))
                    .await;
                continue;
            };
            let batches = owned.log.read(offset, max_bytes, Some(high_watermark)).await.map_err(storage_error)?;
            let snapshot = owned.log.snapshot();
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            if batches.batch_count > 0 || remaining.is_zero() {
                return Ok(Response::Fetch {
                    high_watermark,
                    log_start_offset: snapshot.log_start_offset,
                    next_offset: batches.next_offset,
                    batches: batches.bytes,
                });
            }
            // The in-sync set can change on another thread: re-check every 100 ms.
            let recheck = crate::runtime::sleep(remaining.min(Duration::from_millis(100)));
            if snapshot.durable_end_offset > offset {
                // Durable already, only the high watermark holds the read
                // back: waiting for durability would be ready at once and
                // spin the shard (starving follower reads, which is what
                // would move the high watermark).
                futures_lite::future::or(changed, recheck).await;
            } else {
                let woken = futures_lite::future::or(owned.log.wait_durable_past(offset), changed);
                futures_lite::future::or(woken, recheck).await;
            }
        }
    }

    /// Create a topic on every shard (the caller checked it may: a client
    /// request on the leader, or a follower mirroring its leader).
    pub async fn apply_create_topic(self: &Rc<Self>, name: &str, settings: &TopicSettings) -> Outcome {
        let meta = TopicMeta {
            name: name.to_string(),
            partitions: settings.partitions.max(1),
            retention_bytes: settings.retention_bytes,
            retention_ms: settings.retention_ms,
            segment_bytes: settings.segment_bytes,
        };
        meta.validate(self.config.limits.max_partitions_per_topic, &self.config.storage)
            .map_err(|message| error(ErrorCode::InvalidRequest, message))?;
        if self.registry.get(name).is_some() {
            return Err(error(ErrorCode::TopicExists, format!("topic {name} already exists")));
        }
        if self.registry.snapshot().len() >= self.config.limits.max_topics {
            return Err(error(ErrorCode::InvalidRequest, "limits.max_topics reached"));
        }
        let data_dir = self.data_dir();
        let stored = meta.clone();
        crate::runtime::run_blocking(move || stored.store(&data_dir))
            .await
            .map_err(|failure| error(ErrorCode::StorageFailed, format!("cannot store topic {name}: {failure}")))?;
        self.registry.insert(meta.clone());
        let meta = self.registry.get(name).expect("just inserted");
        self.broadcast(|| ShardRequest::OpenTopic(meta.clone())).await?;
        tracing::info!(target: "ringlog::shard", topic = name, partitions = meta.partitions, "topic created");
        Ok(Response::CreateTopic)
    }

    /// Delete a topic on every shard (same rule as [`Self::apply_create_topic`]).
    pub async fn apply_delete_topic(self: &Rc<Self>, name: &str) -> Outcome {
        if self.registry.get(name).is_none() {
            return Err(error(ErrorCode::UnknownTopic, format!("topic {name}")));
        }
        self.registry.remove(name);
        let topic = name.to_string();
        self.broadcast(|| ShardRequest::DropTopic(topic.clone())).await?;
        let dir = TopicMeta::dir(&self.config.data_dir, name);
        crate::runtime::run_blocking(move || std::fs::remove_dir_all(&dir))
            .await
            .map_err(|failure| error(ErrorCode::StorageFailed, format!("cannot delete topic {name}: {failure}")))?;
        tracing::info!(target: "ringlog::shard", topic = name, "topic deleted");
        Ok(Response::DeleteTopic)
    }

    /// Run a request on every shard (this one included), first error wins.
    async fn broadcast(self: &Rc<Self>, make: impl Fn() -> ShardRequest) -> Result<(), ErrorResponse> {
        let mut first_error = None;
        for shard in 0..self.shards {
            let outcome = if shard == self.shard {
                // Boxed: handle_forwarded can lead back here (create → broadcast).
                Box::pin(self.handle_forwarded(make())).await
            } else {
                self.mesh.call(shard, make()).await
            };
            if let Err(failure) = outcome {
                first_error.get_or_insert(failure);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn describe_topic(self: &Rc<Self>, name: &str) -> Outcome {
        if self.registry.get(name).is_none() {
            return Err(error(ErrorCode::UnknownTopic, format!("topic {name}")));
        }
        let mut all = Vec::new();
        for shard in 0..self.shards {
            let request = Request::DescribeTopic { name: name.to_string() };
            let outcome = if shard == self.shard {
                self.execute(request).await
            } else {
                self.mesh.call(shard, ShardRequest::Client(request)).await
            };
            if let Response::DescribeTopic(partitions) = outcome? {
                all.extend(partitions);
            }
        }
        all.sort_by_key(|description| description.partition);
        Ok(Response::DescribeTopic(all))
    }
}

fn describe(context: &ShardContext, owned: &OwnedPartition) -> PartitionDescription {
    let snapshot = owned.log.snapshot();
    let partition = owned.log.dir().file_name().and_then(|name| name.to_str()).and_then(|name| name.parse().ok());
    PartitionDescription {
        partition: partition.unwrap_or(u32::MAX),
        log_start_offset: snapshot.log_start_offset,
        log_end_offset: snapshot.log_end_offset,
        high_watermark: context.visible_high_watermark(owned),
        segments: snapshot.segments as u32,
        bytes: snapshot.size_bytes,
        leader_epoch: snapshot.leader_epoch.unwrap_or(0),
    }
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

/// Republish this shard's partition gauges and fsync count once a second,
/// so readers on other threads see an immutable snapshot.
pub async fn publish_gauges(context: Rc<ShardContext>, stopping: Rc<std::cell::Cell<bool>>) {
    while !stopping.get() {
        let mut gauges = Vec::new();
        let (mut fsyncs, mut segment_read_bytes, mut read_ahead_hits) = (0, 0, 0);
        for owned in context.partitions.all() {
            let snapshot = owned.log.snapshot();
            let stats = owned.log.stats();
            fsyncs += stats.fsyncs;
            segment_read_bytes += stats.segment_read_bytes;
            read_ahead_hits += stats.read_ahead_hits;
            let failure =
                snapshot.failure.clone().or_else(|| snapshot.fence.as_ref().map(|fence| fence.to_error().to_string()));
            gauges.push(crate::state::metrics::PartitionGauge {
                topic: owned.meta.name.clone(),
                partition: describe(&context, &owned).partition,
                log_start_offset: snapshot.log_start_offset,
                log_end_offset: snapshot.log_end_offset,
                // What consumers were last shown while it is re-established.
                high_watermark: context
                    .visible_high_watermark(&owned)
                    .unwrap_or_else(|| owned.replication.served_high_watermark()),
                size_bytes: snapshot.size_bytes,
                fetched_bytes: owned.fetched_bytes.get(),
                failure,
            });
        }
        let metrics = context.shard_metrics();
        metrics.partitions.store(Arc::new(gauges));
        metrics.fsyncs.store(fsyncs, Ordering::Relaxed);
        metrics.segment_read_bytes.store(segment_read_bytes, Ordering::Relaxed);
        metrics.read_ahead_hits.store(read_ahead_hits, Ordering::Relaxed);
        for _ in 0..10 {
            if stopping.get() {
                return;
            }
            crate::runtime::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Apply each topic's retention (or the node default) to this shard's
/// partitions every `limits.retention_check_interval_ms`.
pub async fn enforce_retention(context: Rc<ShardContext>, stopping: Rc<std::cell::Cell<bool>>) {
    let interval = Duration::from_millis(context.config.limits.retention_check_interval_ms);
    let mut last = Instant::now();
    while !stopping.get() {
        crate::runtime::sleep(Duration::from_millis(100)).await;
        if last.elapsed() < interval {
            continue;
        }
        last = Instant::now();
        let defaults = &context.config.storage;
        let now_ms = crate::runtime::clock::wall_ms();
        for owned in context.partitions.all() {
            let policy = crate::storage::retention::RetentionPolicy {
                retention_bytes: if owned.meta.retention_bytes > 0 {
                    owned.meta.retention_bytes
                } else {
                    defaults.retention_bytes
                },
                retention_ms: if owned.meta.retention_ms > 0 { owned.meta.retention_ms } else { defaults.retention_ms },
            };
            if policy.retention_bytes == 0 && policy.retention_ms == 0 {
                continue;
            }
            if let Err(error) = owned.log.apply_retention(policy, now_ms).await {
                tracing::error!(target: "ringlog::storage", %error, dir = %owned.log.dir().display(), "retention failed");
            }
        }
    }
}

/// Storage's answer to "where is this group?" in wire terms.
fn committed_state(lookup: crate::storage::offsets::OffsetLookup) -> crate::protocol::CommittedState {
    use crate::protocol::CommittedState;
    use crate::storage::offsets::OffsetLookup;
    match lookup {
        OffsetLookup::None => CommittedState::None,
        OffsetLookup::Valid(offset) => CommittedState::Valid(offset),
        OffsetLookup::OutOfRange { committed, log_start_offset, log_end_offset } => {
            CommittedState::OutOfRange { committed, log_start_offset, log_end_offset }
        }
    }
}
