//! Requests (floor 4): take a decoded request on the shard where it arrived,
//! check what must hold before anything runs (a write needs the leader's
//! epoch), send a partition request to the shard that owns it (locally or
//! over the mesh), and execute it there with the storage, shard and
//! replication layers below. The network listeners call [`handle`]; the
//! mesh receiver calls [`handle_forwarded`].

mod fetch;
pub mod kafka;
mod offsets;
mod produce;
mod topics;
mod watch;

use std::rc::Rc;
use std::sync::atomic::Ordering;

pub use produce::{new_producer_id, refuse_kafka_producer_id};
pub use watch::spawn_watch;

use crate::protocol::{ErrorCode, ErrorResponse, Request, Response};
use crate::replication::fetch_many::{self, FetchLimits};
use crate::replication::leader;
use crate::shard::context::{ShardContext, METADATA_SHARD};
use crate::shard::mesh::{KafkaProduce, Outcome, PlacedSignal, ShardRequest};
use crate::shard::topic_admin;
use crate::shard::wire_error::refusal;
use crate::shard::{owner_of, ShardId};

/// Handle a client request that arrived on this shard.
pub async fn handle(context: &Rc<ShardContext>, request: Request) -> Outcome {
    if matches!(
        request,
        Request::CreateTopic { .. }
            | Request::DeleteTopic { .. }
            | Request::CommitOffset { .. }
            | Request::Produce { .. }
    ) {
        context.write_epoch()?;
    }
    match request {
        Request::CreateTopic { .. } | Request::DeleteTopic { .. } if context.shard != METADATA_SHARD => {
            context.mesh.call(METADATA_SHARD, ShardRequest::Client(request)).await
        }
        Request::CreateTopic { name, settings } => {
            topic_admin::apply_create_topic(context, &name, &settings, None).await
        }
        Request::DeleteTopic { name } => topic_admin::apply_delete_topic(context, &name).await,
        Request::ListTopics => Ok(topics::list_topics(context)),
        Request::DescribeTopic { name } => topics::describe_topic(context, &name).await,
        Request::InitProducer => Ok(Response::InitProducer { producer_id: new_producer_id() }),
        Request::TopicConfigs => Ok(topics::topic_configs(context)),
        Request::TopicIncarnations => Ok(topics::topic_incarnations(context)),
        Request::ReplicaHello { .. } | Request::ReplicaAuth { .. } => {
            Err(refusal(ErrorCode::InvalidRequest, "handshake frames are handled by the replication listener"))
        }
        _ => route(context, request).await,
    }
}

/// Handle a follower's request on a replication connection that had seen
/// `topic_removals_seen` topic deletions when it authenticated: its
/// partition requests run on their owners, which serve it no partition
/// opened after a later deletion (`OwnedPartition::serves_replica_session`).
pub async fn handle_replica(context: &Rc<ShardContext>, request: Request, topic_removals_seen: u64) -> Outcome {
    match request {
        Request::ReplicaFetchMany { replica_id, max_wait_ms, max_bytes, partition_max_bytes, partitions } => {
            let limits = FetchLimits { replica_id, max_wait_ms, max_bytes, partition_max_bytes, topic_removals_seen };
            fetch_many::replica_fetch_many(context, limits, partitions).await
        }
        request => match request.partition() {
            Some((topic, partition)) => match owner(context, topic, partition)? {
                owner if owner == context.shard => execute_replica(context, request, topic_removals_seen).await,
                owner => forward(context, owner, ShardRequest::Replica { request, topic_removals_seen }).await,
            },
            None => handle(context, request).await,
        },
    }
}

/// A follower's partition request on the partition's owner (see
/// [`handle_replica`]). The check and `execute`'s own look-up of the
/// partition run in one step, with no await between them: the partition
/// checked is the one served.
async fn execute_replica(context: &Rc<ShardContext>, request: Request, topic_removals_seen: u64) -> Outcome {
    if let Request::ReplicaFetchMany { replica_id, max_wait_ms, max_bytes, partition_max_bytes, partitions } = request {
        let limits = FetchLimits { replica_id, max_wait_ms, max_bytes, partition_max_bytes, topic_removals_seen };
        return fetch_many::serve_replica_fetch_many(context, limits, partitions).await;
    }
    if let Some((topic, partition)) = request.partition() {
        let served = context.partitions.get(topic, partition);
        if served.is_some_and(|owned| !owned.serves_replica_session(topic_removals_seen)) {
            let message = format!("topic {topic} was deleted and created again since this connection opened");
            return Err(refusal(ErrorCode::UnknownTopic, message));
        }
    }
    execute(context, request, None).await
}

/// Execute a request another shard sent to this one (this shard owns it).
pub async fn handle_forwarded(context: &Rc<ShardContext>, request: ShardRequest) -> Outcome {
    match request {
        ShardRequest::Client(request @ (Request::CreateTopic { .. } | Request::DeleteTopic { .. })) => {
            handle(context, request).await
        }
        ShardRequest::Client(request) => execute(context, request, None).await,
        ShardRequest::Replica { request, topic_removals_seen } => {
            execute_replica(context, request, topic_removals_seen).await
        }
        ShardRequest::KafkaProduce(produce) => kafka::produce::on_owner(context, produce).await,
        ShardRequest::Topic(change) => topic_admin::apply_on_this_shard(context, change).await,
    }
}

/// Send a partition request to its owner.
async fn route(context: &Rc<ShardContext>, request: Request) -> Outcome {
    let (topic, partition) = request.partition().ok_or_else(|| refusal(ErrorCode::InvalidRequest, "no partition"))?;
    let owner = owner(context, topic, partition)?;
    if owner == context.shard {
        return execute(context, request, None).await;
    }
    forward(context, owner, ShardRequest::Client(request)).await
}

/// The shard that owns an existing partition.
fn owner(context: &ShardContext, topic: &str, partition: u32) -> Result<ShardId, ErrorResponse> {
    let meta = context.registry.get(topic).ok_or_else(|| refusal(ErrorCode::UnknownTopic, format!("topic {topic}")))?;
    if partition >= meta.partitions {
        return Err(refusal(ErrorCode::UnknownTopic, format!("topic {topic} has no partition {partition}")));
    }
    Ok(owner_of(topic, partition, context.shards))
}

/// Send a partition request to its owner over the mesh, counted.
async fn forward(context: &ShardContext, owner: ShardId, request: ShardRequest) -> Outcome {
    let metrics = context.shard_metrics();
    metrics.cross_shard_forwarded.fetch_add(1, Ordering::Relaxed);
    metrics.cross_shard_in_flight.fetch_add(1, Ordering::Relaxed);
    let outcome = context.mesh.call(owner, request).await;
    metrics.cross_shard_in_flight.fetch_sub(1, Ordering::Relaxed);
    outcome
}

/// A Kafka client's records for one partition, transcoded and produced on
/// the partition's owner; `produce.placed` is dropped once its batch is
/// placed (has its offsets), or as soon as the produce fails before that.
pub async fn produce_kafka(context: Rc<ShardContext>, produce: KafkaProduce) -> Outcome {
    context.write_epoch()?;
    let owner = owner(&context, &produce.topic, produce.partition)?;
    if owner == context.shard {
        return kafka::produce::on_owner(&context, produce).await;
    }
    forward(&context, owner, ShardRequest::KafkaProduce(produce)).await
}

/// Execute a partition request on its owning shard.
async fn execute(context: &Rc<ShardContext>, request: Request, placed: Option<PlacedSignal>) -> Outcome {
    match request {
        Request::Produce { topic, partition, acks, batch } => {
            let batch = produce::ProducedBatch::Client(batch);
            produce::produce(context, &*context.owned(&topic, partition)?, acks, batch, placed).await
        }
        Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms } => {
            let owned = context.owned(&topic, partition)?;
            fetch::fetch(context, &owned, fetch::ConsumerRead { offset, max_bytes, max_wait_ms }).await
        }
        Request::ListOffsets { topic, partition } => fetch::list_offsets(context, &*context.owned(&topic, partition)?),
        Request::CommitOffset { group, topic, partition, offset } => {
            offsets::commit_offset(context, &*context.owned(&topic, partition)?, &group, offset).await
        }
        Request::FetchOffset { group, topic, partition } => {
            Ok(offsets::fetch_offset(&*context.owned(&topic, partition)?, &group))
        }
        Request::FindOffset { topic, partition, timestamp_ms } => {
            offsets::find_offset(context, &*context.owned(&topic, partition)?, timestamp_ms).await
        }
        Request::GroupOffsets { topic, partition } => {
            context.write_epoch()?;
            Ok(offsets::group_offsets(&*context.owned(&topic, partition)?))
        }
        Request::DescribeTopic { name } => Ok(topics::describe_local_partitions(context, &name)),
        Request::ReplicaFetch { replica_id, topic, partition, offset, max_bytes, max_wait_ms } => {
            let owned = context.owned(&topic, partition)?;
            leader::replica_fetch(context, &owned, replica_id, offset, max_bytes, max_wait_ms).await
        }
        Request::ReplicaGroupOffsets { replica_id, topic, partition, stored_version } => {
            leader::replica_group_offsets(context, &*context.owned(&topic, partition)?, replica_id, stored_version)
        }
        Request::EpochEndOffset { topic, partition, epoch } => {
            leader::epoch_end_offset(context, &*context.owned(&topic, partition)?, epoch)
        }
        other => Err(refusal(ErrorCode::InvalidRequest, format!("{:?} is not a partition request", other.api_key()))),
    }
}
