//! Kafka OffsetCommit and OffsetFetch over the native consumer-group
//! offsets (the partitions' durable stores that `ringlog consume --group`
//! uses), so a group's position is the same whichever protocol committed
//! it. A commit by a group member is checked against the group's
//! generation at its coordinator first.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{
    ApiKey, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::groups::{call_group, group_error_code, refusal};
use super::{at_most, count_errors, error_code, respond, Access, KafkaOutcome};
use crate::protocol::kafka::{decode_body, KafkaRequest};
use crate::protocol::{CommittedState, Request, Response};
use crate::security::Operation;
use crate::shard::context::ShardContext;
use crate::shard::groups::{GroupAnswer, GroupError, GroupOp};

/// OffsetCommit: every partition's offset stored durably in its own
/// consumer-offset store, after the coordinator accepted the member and
/// generation (or the commit is outside group management: generation -1,
/// no member, no members in the group). A member's commit holds back the
/// group's next generation until it is written ([`GroupOp::CheckCommit`]):
/// checked, then written over several awaits, it could otherwise land
/// after a rebalance gave its partitions to a member that already read
/// the offsets.
pub async fn offset_commit(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: OffsetCommitRequest = decode_body(request)?;
    at_most(body.topics.len(), context.config.limits.max_topics, "OffsetCommit topics")?;
    let partitions = body.topics.iter().map(|topic| topic.partitions.len()).sum::<usize>();
    at_most(partitions, context.config.limits.max_partitions_per_fetch, "OffsetCommit partitions")?;
    let group = body.group_id.0.to_string();
    let mut refused = refusal(context, &group, access);
    let mut token = None;
    if refused.is_none() {
        let op = GroupOp::CheckCommit {
            member_id: body.member_id.to_string(),
            generation: body.generation_id_or_member_epoch,
        };
        match call_group(context, &group, op).await {
            Some(GroupAnswer::Commit(Ok(checked))) => token = checked,
            Some(GroupAnswer::Commit(Err(error))) => refused = Some(group_error_code(error)),
            _ => refused = Some(group_error_code(GroupError::NotCoordinator)),
        }
    }
    let topics = commit_topics(context, &body, &group, refused, access).await;
    if let Some(token) = token {
        // Written or failed, the commit no longer holds the group back.
        call_group(context, &group, GroupOp::CommitDone { token }).await;
    }
    let codes = topics.iter().flat_map(|topic| topic.partitions.iter().map(|partition| partition.error_code));
    count_errors(context, ApiKey::OffsetCommit, codes);
    respond(request, &OffsetCommitResponse::default().with_topics(topics)).map(Some)
}

/// Commit every partition the request names (or answer each `refused`).
async fn commit_topics(
    context: &Rc<ShardContext>,
    body: &OffsetCommitRequest,
    group: &str,
    refused: Option<i16>,
    access: Access<'_>,
) -> Vec<OffsetCommitResponseTopic> {
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let allowed =
            refused.is_some() || access.allows(context, Operation::CommitGroupOffsets { topic: &topic.name.0 });
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let code = match refused {
                Some(code) => code,
                None if !allowed => ResponseError::TopicAuthorizationFailed.code(),
                None => {
                    commit(context, group, &topic.name.0, partition.partition_index, partition.committed_offset).await
                }
            };
            partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(partition.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(OffsetCommitResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions));
    }
    topics
}

/// Commit one partition's offset; the Kafka error code.
async fn commit(context: &Rc<ShardContext>, group: &str, topic: &StrBytes, index: i32, offset: i64) -> i16 {
    let Ok(partition) = u32::try_from(index) else {
        return ResponseError::UnknownTopicOrPartition.code();
    };
    let Ok(offset) = u64::try_from(offset) else {
        return ResponseError::InvalidRequest.code();
    };
    let request = Request::CommitOffset { group: group.to_string(), topic: topic.to_string(), partition, offset };
    match crate::requests::handle(context, request).await {
        Ok(_) => 0,
        Err(error) => error_code(&error),
    }
}

/// OffsetFetch: each named partition's committed offset (-1 when none);
/// with no topics named (v2+), every partition the group committed on.
pub async fn offset_fetch(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: OffsetFetchRequest = decode_body(request)?;
    at_most(body.topics.iter().flatten().count(), context.config.limits.max_topics, "OffsetFetch topics")?;
    let partitions = body.topics.iter().flatten().map(|topic| topic.partition_indexes.len()).sum::<usize>();
    at_most(partitions, context.config.limits.max_partitions_per_fetch, "OffsetFetch partitions")?;
    let group = body.group_id.0.to_string();
    let code = refusal(context, &group, access).unwrap_or(0);
    let wanted: Vec<(String, Option<Vec<i32>>)> = match &body.topics {
        Some(topics) => {
            topics.iter().map(|topic| (topic.name.0.to_string(), Some(topic.partition_indexes.clone()))).collect()
        }
        None => context.registry.snapshot().keys().map(|name| (name.clone(), None)).collect(),
    };
    let mut topics = Vec::new();
    if code == 0 {
        for (name, indexes) in wanted {
            let all = indexes.is_none();
            // Asked for every topic: those the user may not read are left out, uncounted.
            if all && !access.permits(Operation::FetchGroupOffsets { topic: &name }) {
                continue;
            }
            let allowed = all || access.allows(context, Operation::FetchGroupOffsets { topic: &name });
            let indexes = indexes.unwrap_or_else(|| {
                let partitions = context.registry.get(&name).map_or(0, |meta| meta.partitions);
                (0..partitions).filter_map(|index| i32::try_from(index).ok()).collect()
            });
            let mut partitions = Vec::with_capacity(indexes.len());
            for index in indexes {
                let (offset, code) = match allowed {
                    true => committed(context, &group, &name, index).await,
                    false => (-1, ResponseError::TopicAuthorizationFailed.code()),
                };
                if all && offset < 0 {
                    continue;
                }
                partitions.push(
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(StrBytes::default()))
                        .with_error_code(code),
                );
            }
            if !all || !partitions.is_empty() {
                let name = TopicName(StrBytes::from_string(name));
                topics.push(OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions));
            }
        }
    }
    let codes = std::iter::once(code)
        .chain(topics.iter().flat_map(|topic| topic.partitions.iter().map(|partition| partition.error_code)));
    count_errors(context, ApiKey::OffsetFetch, codes);
    respond(request, &OffsetFetchResponse::default().with_error_code(code).with_topics(topics)).map(Some)
}

/// A partition's committed offset and error code. A commit latched out of
/// range (SPEC §2) is answered -1, "no committed offset", so the client's
/// `auto.offset.reset` decides (or, with `none`, the application): never
/// the stale offset, which producers may refill the log past between this
/// answer and the client's Fetch, which would then silently skip or repeat
/// records.
async fn committed(context: &Rc<ShardContext>, group: &str, topic: &str, index: i32) -> (i64, i16) {
    let Ok(partition) = u32::try_from(index) else {
        return (-1, ResponseError::UnknownTopicOrPartition.code());
    };
    let request = Request::FetchOffset { group: group.to_string(), topic: topic.to_string(), partition };
    match crate::requests::handle(context, request).await {
        Ok(Response::FetchOffset(CommittedState::None)) => (-1, 0),
        Ok(Response::FetchOffset(CommittedState::Valid(offset))) => (offset as i64, 0),
        Ok(Response::FetchOffset(CommittedState::OutOfRange { .. })) => (-1, 0),
        Ok(_) => (-1, ResponseError::UnknownServerError.code()),
        Err(error) => (-1, error_code(&error)),
    }
}
