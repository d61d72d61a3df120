//! Kafka CreateTopics and DeleteTopics through the native topic requests
//! (created and deleted on every shard, only by the node that may write).

use std::rc::Rc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use kafka_protocol::messages::ApiKey;

use super::{at_most, count_errors, error_code, respond, Access, KafkaServeError};
use crate::protocol::kafka::{decode_body, KafkaRequest};
use crate::protocol::{ErrorCode, ErrorResponse, FramePieces, Request, TopicSettings};
use crate::security::Operation;
use crate::shard::context::ShardContext;
use crate::shard::topics::validate_topic_name;

/// The Kafka error code for a refused CreateTopics or DeleteTopics: as for
/// any request, except that a node which may not apply it (a follower, or
/// a leader fenced or shutting down) is `NOT_CONTROLLER`, on which admin
/// clients refresh Metadata and send it to the controller it names (the
/// leader).
fn admin_error_code(error: &ErrorResponse) -> i16 {
    match error.code {
        ErrorCode::NotLeader | ErrorCode::ShuttingDown => ResponseError::NotController.code(),
        _ => error_code(error),
    }
}

/// A topic this connection's user may not create or delete (admins only).
fn not_authorized() -> (i16, String) {
    (ResponseError::TopicAuthorizationFailed.code(), "creating and deleting topics needs the admin role".into())
}

/// Kafka's default partition count when a client asks for the broker's (-1).
const DEFAULT_PARTITIONS: u32 = 1;

/// Answer CreateTopics; `validate_only` checks without creating.
pub async fn create_topics(
    context: &Rc<ShardContext>,
    request: &KafkaRequest,
    access: Access<'_>,
) -> Result<FramePieces, KafkaServeError> {
    let body: CreateTopicsRequest = decode_body(request)?;
    at_most(body.topics.len(), context.config.limits.max_topics, "CreateTopics topics")?;
    let mut results = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let outcome = match settings(context, topic) {
            _ if !access.allows(context, Operation::CreateTopic) => Err(not_authorized()),
            Err((code, message)) => Err((code, message)),
            Ok(_) if body.validate_only => Ok(()),
            Ok(settings) => {
                let create = Request::CreateTopic { name: topic.name.0.to_string(), settings };
                crate::requests::handle(context, create)
                    .await
                    .map(|_| ())
                    .map_err(|error| (admin_error_code(&error), error.message))
            }
        };
        results.push(match outcome {
            Ok(()) => result.with_num_partitions(topic.num_partitions.max(1)).with_replication_factor(-1),
            Err((code, message)) => {
                result.with_error_code(code).with_error_message(Some(StrBytes::from_string(message)))
            }
        });
    }
    count_errors(context, ApiKey::CreateTopics, results.iter().map(|result| result.error_code));
    respond(request, &CreateTopicsResponse::default().with_topics(results))
}

/// The native settings of a Kafka topic, or the Kafka error that refuses
/// it. The replication factor is not a topic setting here: every node of
/// a cluster holds every partition.
fn settings(context: &ShardContext, topic: &CreatableTopic) -> Result<TopicSettings, (i16, String)> {
    validate_topic_name(&topic.name.0).map_err(|message| (ResponseError::InvalidTopicException.code(), message))?;
    if !topic.assignments.is_empty() {
        return Err((ResponseError::InvalidRequest.code(), "manual replica assignments are not supported".into()));
    }
    let partitions = match topic.num_partitions {
        -1 => DEFAULT_PARTITIONS,
        count => u32::try_from(count).unwrap_or(0),
    };
    if partitions == 0 || partitions > context.config.limits.max_partitions_per_topic {
        let limit = context.config.limits.max_partitions_per_topic;
        return Err((ResponseError::InvalidPartitions.code(), format!("partitions must be in 1..={limit}")));
    }
    let mut settings = TopicSettings { partitions, retention_bytes: 0, retention_ms: 0, segment_bytes: 0 };
    for config in &topic.configs {
        let value = config.value.as_deref().unwrap_or("-1");
        let target = match &*config.name {
            "retention.bytes" => &mut settings.retention_bytes,
            "retention.ms" => &mut settings.retention_ms,
            "segment.bytes" => &mut settings.segment_bytes,
            other => {
                return Err((ResponseError::InvalidConfig.code(), format!("topic config {other} is not supported")))
            }
        };
        // Kafka's -1 is "unlimited", ringlog's 0.
        *target = match value.parse::<i64>() {
            Ok(-1) => 0,
            Ok(number) if number >= 0 => number as u64,
            _ => {
                return Err((ResponseError::InvalidConfig.code(), format!("{} = {value} is not a size", &*config.name)))
            }
        };
    }
    Ok(settings)
}

/// Answer DeleteTopics (by name; topic ids are not kept).
pub async fn delete_topics(
    context: &Rc<ShardContext>,
    request: &KafkaRequest,
    access: Access<'_>,
) -> Result<FramePieces, KafkaServeError> {
    let body: DeleteTopicsRequest = decode_body(request)?;
    let named = body.topic_names.len() + body.topics.len();
    at_most(named, context.config.limits.max_topics, "DeleteTopics topics")?;
    // v0-5 name topics in `topic_names`, v6 in `topics` (name or id).
    let names: Vec<Option<TopicName>> = match body.topic_names.is_empty() {
        true => body.topics.iter().map(|topic| topic.name.clone()).collect(),
        false => body.topic_names.iter().cloned().map(Some).collect(),
    };
    let mut results = Vec::with_capacity(names.len());
    for name in names {
        let result = DeletableTopicResult::default().with_name(name.clone());
        let Some(name) = name else {
            results.push(result.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        if !access.allows(context, Operation::DeleteTopic) {
            let (code, message) = not_authorized();
            results.push(result.with_error_code(code).with_error_message(Some(StrBytes::from_string(message))));
            continue;
        }
        let delete = Request::DeleteTopic { name: name.0.to_string() };
        results.push(match crate::requests::handle(context, delete).await {
            Ok(_) => result,
            Err(error) => result
                .with_error_code(admin_error_code(&error))
                .with_error_message(Some(StrBytes::from_string(error.message))),
        });
    }
    count_errors(context, ApiKey::DeleteTopics, results.iter().map(|result| result.error_code));
    respond(request, &DeleteTopicsResponse::default().with_responses(results))
}
