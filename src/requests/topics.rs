//! Topic queries: the list, each partition's description gathered from every
//! shard, and the settings followers mirror.

use std::rc::Rc;

use crate::protocol::{ErrorCode, PartitionDescription, Request, Response, TopicSettings};
use crate::replication::high_watermark;
use crate::shard::context::ShardContext;
use crate::shard::mesh::{Outcome, ShardRequest};
use crate::shard::partitions::OwnedPartition;
use crate::shard::wire_error::refusal;

/// Every topic with its partition count.
pub fn list_topics(context: &ShardContext) -> Response {
    Response::ListTopics(
        context.registry.snapshot().values().map(|meta| (meta.name.clone(), meta.partitions)).collect(),
    )
}

/// Every partition of `name`, from every shard, in partition order.
pub async fn describe_topic(context: &Rc<ShardContext>, name: &str) -> Outcome {
    if context.registry.get(name).is_none() {
        return Err(refusal(ErrorCode::UnknownTopic, format!("topic {name}")));
    }
    let mut all = Vec::new();
    for shard in 0..context.shards {
        let response = if shard == context.shard {
            describe_local_partitions(context, name)
        } else {
            let request = Request::DescribeTopic { name: name.to_string() };
            context.mesh.call(shard, ShardRequest::Client(request)).await?
        };
        if let Response::DescribeTopic(partitions) = response {
            all.extend(partitions);
        }
    }
    all.sort_by_key(|description| description.partition);
    Ok(Response::DescribeTopic(all))
}

/// This shard's partitions of `name`.
pub fn describe_local_partitions(context: &ShardContext, name: &str) -> Response {
    let owned = context.partitions.all().into_iter().filter(|owned| owned.meta.name == name);
    Response::DescribeTopic(owned.map(|owned| describe(context, &owned)).collect())
}

/// One partition as DescribeTopic shows it.
pub fn describe(context: &ShardContext, owned: &OwnedPartition) -> PartitionDescription {
    let snapshot = owned.log.snapshot();
    PartitionDescription {
        partition: owned.partition,
        log_start_offset: snapshot.log_start_offset,
        log_end_offset: snapshot.log_end_offset,
        high_watermark: high_watermark::visible(owned, &context.cluster),
        segments: snapshot.segments as u32,
        bytes: snapshot.size_bytes,
        leader_epoch: snapshot.leader_epoch.unwrap_or(0),
    }
}

/// Every topic with its settings (followers mirror them).
pub fn topic_configs(context: &ShardContext) -> Response {
    let topics = context
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
    Response::TopicConfigs(topics)
}

/// Every topic's incarnation (followers follow only what matches theirs).
pub fn topic_incarnations(context: &ShardContext) -> Response {
    let topics = context.registry.snapshot().values().map(|meta| (meta.name.clone(), meta.incarnation)).collect();
    Response::TopicIncarnations(topics)
}
