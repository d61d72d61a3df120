//! Kafka requests (SPEC §10): each API decoded with the `kafka-protocol`
//! crate and served by the same functions as the native protocol
//! ([`crate::requests::handle`]), so routing to the owning shard, the
//! leader's epoch check, acks and the consumers' high watermark are the
//! native ones. Records cross between the formats in `transcode`.

mod fetch;
mod groups;
mod offsets;
mod produce;
mod producers;
mod topics;
mod transcode;

use std::rc::Rc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use thiserror::Error;

use crate::protocol::kafka::{
    decode_body, encode_response, EncodeError, KafkaFrameError, KafkaRequest, SUPPORTED_APIS,
};
use crate::protocol::{ErrorCode, ErrorResponse};
use crate::shard::context::ShardContext;
use crate::state::cluster::Role;

/// Why a Kafka connection must be closed instead of answered.
#[derive(Debug, Error)]
pub enum KafkaServeError {
    /// The request could not be read.
    #[error(transparent)]
    Frame(#[from] KafkaFrameError),
    /// The answer could not be written.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A Fetch naming more partitions than `limits.max_partitions_per_fetch`.
    #[error("kafka fetch of {partitions} partitions (limits.max_partitions_per_fetch is {limit})")]
    TooManyPartitions {
        /// Partitions the request names.
        partitions: usize,
        /// The limit.
        limit: usize,
    },
    /// A Produce with acks 0 failed for some partition: there is no answer
    /// to carry the error, so the connection is closed (as Kafka brokers
    /// do), and the client refreshes its metadata instead of sending on
    /// into nothing.
    #[error("kafka produce with acks 0 failed: {0}")]
    UnansweredProduceFailed(String),
}

/// A response frame, or nothing (a Produce with acks 0 is not answered).
pub type KafkaOutcome = Result<Option<Vec<u8>>, KafkaServeError>;

/// Serve one Kafka request that arrived on this shard.
pub async fn handle(context: &Rc<ShardContext>, request: KafkaRequest) -> KafkaOutcome {
    context.metrics.kafka.count_request(request.api as i16);
    match request.api {
        ApiKey::ApiVersions => api_versions(&request).map(Some),
        ApiKey::Metadata => {
            let body: MetadataRequest = decode_body(&request)?;
            let response = metadata(context, &body);
            let codes = response.topics.iter().flat_map(|topic| {
                std::iter::once(topic.error_code).chain(topic.partitions.iter().map(|partition| partition.error_code))
            });
            count_errors(context, ApiKey::Metadata, codes);
            respond(&request, &response).map(Some)
        }
        ApiKey::Produce => produce::produce(context, &request).await,
        ApiKey::Fetch => fetch::fetch(context, &request).await.map(Some),
        ApiKey::ListOffsets => fetch::list_offsets(context, &request).await.map(Some),
        ApiKey::CreateTopics => topics::create_topics(context, &request).await.map(Some),
        ApiKey::DeleteTopics => topics::delete_topics(context, &request).await.map(Some),
        ApiKey::InitProducerId => producers::init_producer_id(context, &request),
        ApiKey::FindCoordinator => groups::find_coordinator(context, &request),
        ApiKey::JoinGroup => groups::join_group(context, &request).await,
        ApiKey::SyncGroup => groups::sync_group(context, &request).await,
        ApiKey::Heartbeat => groups::heartbeat(context, &request).await,
        ApiKey::LeaveGroup => groups::leave_group(context, &request).await,
        ApiKey::ListGroups => groups::list_groups(context, &request).await,
        ApiKey::DescribeGroups => groups::describe_groups(context, &request).await,
        ApiKey::OffsetCommit => offsets::offset_commit(context, &request).await,
        ApiKey::OffsetFetch => offsets::offset_fetch(context, &request).await,
        api => Err(KafkaFrameError::UnsupportedApi(api as i16).into()),
    }
}

/// Count the non-zero error codes of an answer to `api` (`/metrics`).
fn count_errors(context: &ShardContext, api: ApiKey, codes: impl IntoIterator<Item = i16>) {
    for code in codes.into_iter().filter(|code| *code != 0) {
        context.metrics.kafka.count_error(api as i16, code);
    }
}

/// Encode `body` as the answer to `request`.
fn respond<T: Encodable>(request: &KafkaRequest, body: &T) -> Result<Vec<u8>, KafkaServeError> {
    let header = &request.header;
    Ok(encode_response(request.api, header.request_api_version, header.correlation_id, body)?)
}

/// ApiVersions: exactly the table in `SUPPORTED_APIS`. A version newer than
/// ours is answered `UNSUPPORTED_VERSION` in v0, which every client reads,
/// so it can retry with a version from the list.
fn api_versions(request: &KafkaRequest) -> Result<Vec<u8>, KafkaServeError> {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|(api, min, max)| {
            ApiVersion::default().with_api_key(*api as i16).with_min_version(*min).with_max_version(*max)
        })
        .collect();
    let version = request.header.request_api_version;
    let (min, max) = crate::protocol::kafka::supported_versions(ApiKey::ApiVersions).expect("advertised");
    let mut response = ApiVersionsResponse::default().with_api_keys(api_keys);
    if !(min..=max).contains(&version) {
        response.error_code = ResponseError::UnsupportedVersion.code();
        let correlation_id = request.header.correlation_id;
        return Ok(encode_response(ApiKey::ApiVersions, 0, correlation_id, &response)?);
    }
    // Decoded only to refuse a malformed body; nothing in it changes the answer.
    let _: ApiVersionsRequest = decode_body(request)?;
    respond(request, &response)
}

/// This node's broker id: its node id in a cluster, 0 standalone.
fn broker_id(context: &ShardContext) -> i32 {
    context.cluster.view().node_id.map_or(0, |id| id as i32)
}

/// The host and port Kafka clients reach this node at: `cluster.advertise`
/// (its host part) when set, else the `kafka_listen` host.
fn advertised_broker(context: &ShardContext) -> MetadataResponseBroker {
    let listen = &context.config.kafka_listen;
    let (listen_host, port) = listen.rsplit_once(':').unwrap_or((listen.as_str(), "9092"));
    let host = match &context.config.cluster.advertise {
        Some(advertise) => advertise.rsplit_once(':').map_or(advertise.as_str(), |(host, _)| host),
        None => listen_host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker_id(context)))
        .with_host(StrBytes::from_string(host.to_string()))
        .with_port(port.parse().unwrap_or(9092))
}

/// Metadata: this node as the only broker, leading every partition while
/// it may write (standalone or the cluster's leader). A cluster follower
/// answers `LEADER_NOT_AVAILABLE` for the partitions: the other nodes'
/// Kafka addresses are not in the cluster view yet (docs/KAFKA.md).
fn metadata(context: &ShardContext, request: &MetadataRequest) -> MetadataResponse {
    let view = context.cluster.view();
    let leads = matches!(view.role, Role::Standalone | Role::Leader);
    let broker = broker_id(context);
    let registry = context.registry.snapshot();
    let names: Vec<String> = match &request.topics {
        None => registry.keys().cloned().collect(),
        Some(topics) => topics.iter().filter_map(|topic| topic.name.as_ref().map(|name| name.0.to_string())).collect(),
    };
    let topics = names
        .into_iter()
        .map(|name| {
            let topic =
                MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            let Some(meta) = registry.get(&name) else {
                return topic.with_error_code(ResponseError::UnknownTopicOrPartition.code());
            };
            let partitions = (0..meta.partitions)
                .map(|index| {
                    let partition = MetadataResponsePartition::default().with_partition_index(index as i32);
                    match leads {
                        true => partition
                            .with_leader_id(BrokerId(broker))
                            .with_leader_epoch(view.leader_epoch as i32)
                            .with_replica_nodes(vec![BrokerId(broker)])
                            .with_isr_nodes(vec![BrokerId(broker)]),
                        false => partition
                            .with_error_code(ResponseError::LeaderNotAvailable.code())
                            .with_leader_id(BrokerId(-1)),
                    }
                })
                .collect();
            topic.with_partitions(partitions)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(vec![advertised_broker(context)])
        .with_cluster_id(Some(StrBytes::from_static_str("ringlog")))
        .with_controller_id(BrokerId(broker))
        .with_topics(topics)
}

/// The Kafka error code for a ringlog refusal.
pub fn error_code(error: &ErrorResponse) -> i16 {
    let kafka = match error.code {
        ErrorCode::None => return 0,
        ErrorCode::UnknownTopic => ResponseError::UnknownTopicOrPartition,
        ErrorCode::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
        ErrorCode::StorageFailed | ErrorCode::DiskFull => ResponseError::KafkaStorageError,
        ErrorCode::RecordTooLarge => ResponseError::MessageTooLarge,
        // A node shutting down is no longer a leader to write to: the
        // client refreshes its metadata and retries.
        ErrorCode::NotLeader | ErrorCode::ShuttingDown => ResponseError::NotLeaderOrFollower,
        ErrorCode::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
        ErrorCode::InvalidRequest => ResponseError::InvalidRequest,
        ErrorCode::TopicExists => ResponseError::TopicAlreadyExists,
        ErrorCode::UnsupportedVersion | ErrorCode::UnknownApi => ResponseError::UnsupportedVersion,
        ErrorCode::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        ErrorCode::Timeout => ResponseError::RequestTimedOut,
        ErrorCode::NotReady => ResponseError::LeaderNotAvailable,
        ErrorCode::Internal => ResponseError::UnknownServerError,
    };
    kafka.code()
}
