//! Creating and deleting topics on every shard. The metadata shard decides
//! (validates, stores the topic's settings, updates the registry) and then
//! asks each shard, itself included, to open or drop its own partitions.
//! Callers check first that they may: a client request on the leader, or a
//! follower mirroring its leader's topics.

use std::rc::Rc;

use super::context::ShardContext;
use super::mesh::{Outcome, ShardRequest, TopicChange};
use super::topics::{Removal, TopicMeta};
use super::wire_error::{refusal, storage_error};
use crate::protocol::{ErrorCode, ErrorResponse, Response, TopicSettings};

/// Create a topic on every shard. Serialised with other topic changes: two
/// creations of one name racing past the existence check would both store
/// their settings and both answer success, and racing creations could pass
/// `limits.max_topics` together. `incarnation`: the leader's, when a
/// follower mirrors its topic; None draws a new one.
pub async fn apply_create_topic(
    context: &Rc<ShardContext>,
    name: &str,
    settings: &TopicSettings,
    incarnation: Option<u64>,
) -> Outcome {
    let _serialised = context.topic_changes.acquire().await;
    let meta = TopicMeta {
        name: name.to_string(),
        partitions: settings.partitions.max(1),
        retention_bytes: settings.retention_bytes,
        retention_ms: settings.retention_ms,
        segment_bytes: settings.segment_bytes,
        incarnation: incarnation.unwrap_or_else(new_incarnation),
    };
    meta.validate(context.config.limits.max_partitions_per_topic, &context.config.storage)
        .map_err(|message| refusal(ErrorCode::InvalidRequest, message))?;
    if context.registry.get(name).is_some() {
        return Err(refusal(ErrorCode::TopicExists, format!("topic {name} already exists")));
    }
    if context.registry.snapshot().len() >= context.config.limits.max_topics {
        return Err(refusal(ErrorCode::InvalidRequest, "limits.max_topics reached"));
    }
    let data_dir = context.data_dir().to_path_buf();
    let stored = meta.clone();
    crate::runtime::run_blocking(move || stored.store(&data_dir))
        .await
        .map_err(|failure| refusal(ErrorCode::StorageFailed, format!("cannot store topic {name}: {failure}")))?;
    context.registry.insert(meta);
    let meta = context.registry.get(name).expect("just inserted");
    broadcast(context, TopicChange::Open(meta.clone())).await?;
    tracing::info!(target: "ringlog::shard", topic = name, partitions = meta.partitions, "topic created");
    Ok(Response::CreateTopic)
}

/// Delete a topic on every shard (same rule as [`apply_create_topic`]):
/// forget it (no new request finds it), drop its partitions on every
/// shard (each waits for work in flight on them), then move its directory
/// out of `DATA/topics`. A deletion that cannot move the directory puts
/// the topic back as it was: otherwise it would be gone until the next
/// start brought it back.
pub async fn apply_delete_topic(context: &Rc<ShardContext>, name: &str) -> Outcome {
    let _serialised = context.topic_changes.acquire().await;
    let Some(meta) = context.registry.get(name) else {
        return Err(refusal(ErrorCode::UnknownTopic, format!("topic {name}")));
    };
    context.registry.remove(name);
    if let Err(failure) = broadcast(context, TopicChange::Drop(name.to_string())).await {
        restore(context, meta).await;
        return Err(failure);
    }
    let data_dir = context.data_dir().to_path_buf();
    let topic = name.to_string();
    match crate::runtime::run_blocking(move || TopicMeta::remove(&data_dir, &topic)).await {
        Removal::Done => {}
        Removal::NotMoved(error) => {
            restore(context, meta).await;
            let message = format!("cannot delete topic {name}: {error}; the topic is kept");
            return Err(refusal(ErrorCode::StorageFailed, message));
        }
        Removal::NotDurable(error) => {
            context.registry.count_removal();
            let message = format!("topic {name} deleted, but the deletion may not survive a crash: {error}");
            return Err(refusal(ErrorCode::StorageFailed, message));
        }
    }
    context.registry.count_removal();
    tracing::info!(target: "ringlog::shard", topic = name, "topic deleted");
    Ok(Response::DeleteTopic)
}

/// Put back a topic whose deletion failed before its directory moved:
/// the registry entry, then its partitions on every shard (recovered from
/// disk, as after a crash: they were abandoned, not closed).
async fn restore(context: &Rc<ShardContext>, meta: std::sync::Arc<TopicMeta>) {
    context.registry.insert(TopicMeta::clone(&meta));
    if let Err(failure) = broadcast(context, TopicChange::Open(meta.clone())).await {
        tracing::error!(target: "ringlog::shard", topic = %meta.name, error = %failure.message,
            "a topic whose deletion failed could not be reopened; it reopens at the next start");
    }
}

/// Open or drop this shard's partitions of a topic the metadata shard
/// created or deleted.
pub async fn apply_on_this_shard(context: &ShardContext, change: TopicChange) -> Outcome {
    match change {
        TopicChange::Open(meta) => {
            let defaults = &context.config.storage;
            context
                .partitions
                .open_topic(
                    context.shard,
                    context.shards,
                    context.data_dir(),
                    meta,
                    defaults,
                    context.registry.removals(),
                )
                .await
                .map_err(storage_error)?;
            Ok(Response::CreateTopic)
        }
        TopicChange::Drop(name) => {
            context.partitions.drop_topic(&name).await.map_err(storage_error)?;
            Ok(Response::DeleteTopic)
        }
    }
}

/// Run a topic change on every shard (this one included), first error wins.
async fn broadcast(context: &Rc<ShardContext>, change: TopicChange) -> Result<(), ErrorResponse> {
    let mut first_error = None;
    for shard in 0..context.shards {
        let outcome = if shard == context.shard {
            apply_on_this_shard(context, change.clone()).await
        } else {
            context.mesh.call(shard, ShardRequest::Topic(change.clone())).await
        };
        if let Err(failure) = outcome {
            first_error.get_or_insert(failure);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A new topic's incarnation: random and never 0 (0 names a topic created
/// before incarnations). Eight bytes of /dev/urandom, which never blocks
/// once the system has booted; the wall clock if it cannot be read.
fn new_incarnation() -> u64 {
    let random = crate::runtime::random::random_bytes(8).ok().and_then(|bytes| <[u8; 8]>::try_from(bytes).ok());
    let drawn = random.map_or_else(|| crate::runtime::clock::wall_ms() as u64, u64::from_le_bytes);
    drawn.max(1)
}
