//! Kafka requests (SPEC §10): each API decoded with the `kafka-protocol`
//! crate and served by the same functions as the native protocol
//! ([`crate::requests::handle`]), so routing to the owning shard, the
//! leader's epoch check, acks and the consumers' high watermark are the
//! native ones. Records cross between the formats in `transcode`.

mod access;
mod fetch;
mod groups;
mod offsets;
pub mod placements;
pub(super) mod produce;
mod producers;
pub mod sasl;
mod topics;
// Public for `benches/kafka_records.rs`, not an API.
#[doc(hidden)]
pub mod transcode;

pub use access::Access;

use std::rc::Rc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
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
use crate::protocol::{ErrorCode, ErrorResponse, FramePieces};
use crate::shard::context::ShardContext;
use crate::shard::mesh::PlacedSignal;
use crate::state::cluster::{ClusterView, LiveNode, Role};
use placements::Placements;

/// Why a Kafka connection must be closed instead of answered.
#[derive(Debug, Error)]
pub enum KafkaServeError {
    /// The request could not be read.
    #[error(transparent)]
    Frame(#[from] KafkaFrameError),
    /// The answer could not be written.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A request naming more elements (groups, coordinator keys, topics,
    /// partitions, members) than this node holds or serves at once.
    #[error("kafka request with {count} {what} (at most {limit})")]
    TooManyElements {
        /// What the elements are.
        what: &'static str,
        /// How many the request names.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A Fetch or Produce naming more partitions than
    /// `limits.max_partitions_per_fetch` or `max_partitions_per_produce`.
    #[error("kafka {request} of {partitions} partitions (limits.max_partitions_per_{request} is {limit})")]
    TooManyPartitions {
        /// "fetch" or "produce".
        request: &'static str,
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
    /// A request other than ApiVersions and SASL before authentication
    /// (`[auth]` on): closed unanswered, as Kafka brokers do.
    #[error("kafka api key {0} before authentication")]
    NotAuthenticated(i16),
    /// The connection's user was removed since it authenticated.
    #[error("user {0} was removed")]
    UserRemoved(String),
}

/// A response frame, or nothing (a Produce with acks 0 is not answered).
pub type KafkaOutcome = Result<Option<FramePieces>, KafkaServeError>;

/// Serve one Kafka request that arrived on this shard, sent by `access`'s
/// principal (authenticated already: `sasl`). `release` is dropped when
/// the connection may start its next request: a Produce once its batches
/// are placed, anything else when it is done (`net::kafka_server`).
pub async fn handle(
    context: &Rc<ShardContext>,
    request: KafkaRequest,
    access: Access<'_>,
    release: PlacedSignal,
    placements: &Placements,
) -> KafkaOutcome {
    context.metrics.kafka.count_request(request.api as i16);
    if request.api != ApiKey::Produce {
        // Served as if one request at a time: after every batch sent before.
        placements.settle().await;
    }
    match request.api {
        ApiKey::ApiVersions => api_versions(&request).map(Some),
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => sasl::without_authentication(&request),
        ApiKey::Metadata => {
            let mut body: MetadataRequest = decode_body(&request)?;
            if let Some(topics) = &mut body.topics {
                let limit = context.config.limits.max_topics;
                let names: Vec<Option<TopicName>> = topics.iter().map(|topic| topic.name.clone()).collect();
                let distinct = distinct_within(&names, limit, "Metadata topics")?;
                *topics =
                    distinct.into_iter().map(|name| MetadataRequestTopic::default().with_name(name.clone())).collect();
            }
            let response = metadata(context, &body);
            let codes = response.topics.iter().flat_map(|topic| {
                std::iter::once(topic.error_code).chain(topic.partitions.iter().map(|partition| partition.error_code))
            });
            count_errors(context, ApiKey::Metadata, codes);
            respond(&request, &response).map(Some)
        }
        ApiKey::Produce => produce::produce(context, request, access, release, placements).await,
        ApiKey::Fetch => fetch::fetch(context, &request, access).await.map(Some),
        ApiKey::ListOffsets => fetch::list_offsets(context, &request, access).await.map(Some),
        ApiKey::CreateTopics => topics::create_topics(context, &request, access).await.map(Some),
        ApiKey::DeleteTopics => topics::delete_topics(context, &request, access).await.map(Some),
        ApiKey::InitProducerId => producers::init_producer_id(context, &request, access),
        ApiKey::FindCoordinator => groups::find_coordinator(context, &request, access),
        ApiKey::JoinGroup => groups::join_group(context, &request, access).await,
        ApiKey::SyncGroup => groups::sync_group(context, &request, access).await,
        ApiKey::Heartbeat => groups::heartbeat(context, &request, access).await,
        ApiKey::LeaveGroup => groups::leave_group(context, &request, access).await,
        ApiKey::ListGroups => groups::list_groups(context, &request, access).await,
        ApiKey::DescribeGroups => groups::describe_groups(context, &request, access).await,
        ApiKey::OffsetCommit => offsets::offset_commit(context, &request, access).await,
        ApiKey::OffsetFetch => offsets::offset_fetch(context, &request, access).await,
        api => Err(KafkaFrameError::UnsupportedApi(api as i16).into()),
    }
}

/// `items` without repeats, refusing more than `limit` distinct ones: each
/// costs a coordinator call and an answer entry, and an answer repeated
/// for every copy of a name would let a small request ask for gigabytes.
pub fn distinct_within<'a, T: Eq + std::hash::Hash>(
    items: &'a [T],
    limit: usize,
    what: &'static str,
) -> Result<Vec<&'a T>, KafkaServeError> {
    let mut seen = std::collections::HashSet::with_capacity(items.len().min(limit));
    let mut distinct = Vec::new();
    for item in items {
        if seen.insert(item) {
            distinct.push(item);
        }
        if distinct.len() > limit {
            // Refused at the first one past the limit: the set is bounded too.
            return Err(KafkaServeError::TooManyElements { what, count: items.len(), limit });
        }
    }
    Ok(distinct)
}

/// Refuse a request naming more than `limit` elements of a kind before any
/// of them is served: each costs a call to a shard (often a durable write
/// or a disk read) and an answer entry, so a 17 MiB DeleteTopics of 17
/// million empty names asked the node for gigabytes and 17 million calls.
pub fn at_most(count: usize, limit: usize, what: &'static str) -> Result<(), KafkaServeError> {
    match count > limit {
        true => Err(KafkaServeError::TooManyElements { what, count, limit }),
        false => Ok(()),
    }
}

/// Count the non-zero error codes of an answer to `api` (`/metrics`).
fn count_errors(context: &ShardContext, api: ApiKey, codes: impl IntoIterator<Item = i16>) {
    for code in codes.into_iter().filter(|code| *code != 0) {
        context.metrics.kafka.count_error(api as i16, code);
    }
}

/// Encode `body` as the answer to `request`.
fn respond<T: Encodable>(request: &KafkaRequest, body: &T) -> Result<FramePieces, KafkaServeError> {
    let header = &request.header;
    Ok(encode_response(request.api, header.request_api_version, header.correlation_id, body)?)
}

/// ApiVersions: exactly the table in `SUPPORTED_APIS`. A version newer than
/// ours is answered `UNSUPPORTED_VERSION` in v0, which every client reads,
/// so it can retry with a version from the list.
fn api_versions(request: &KafkaRequest) -> Result<FramePieces, KafkaServeError> {
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
fn broker_id(view: &ClusterView) -> i32 {
    view.node_id.map_or(0, |id| id as i32)
}

/// This node as a broker: the Kafka address it registered (the
/// membership's entry for it, else the address it registers:
/// `kafka_listen`'s port with the `cluster.advertise` host), or `None`
/// when it has no Kafka listener.
fn advertised_broker(context: &ShardContext, view: &ClusterView) -> Option<MetadataResponseBroker> {
    let me = broker_id(view);
    let registered = view.members.live.iter().filter(|node| i64::from(me) == node.id as i64).find_map(live_broker);
    registered.or_else(|| address_broker(me, &context.config.kafka_advertised()?))
}

/// A broker at `host:port` (an IPv6 host in brackets).
fn address_broker(id: i32, address: &str) -> Option<MetadataResponseBroker> {
    let (host, port) = address.rsplit_once(':')?;
    Some(broker(id, host, i32::from(port.parse::<u16>().ok()?)))
}

/// The broker that coordinates every group: this node while it may write,
/// else the cluster's leader at its registered Kafka address; `None` when
/// there is none a client could reach (no leader, or one without a Kafka
/// address).
fn coordinator_broker(context: &ShardContext, view: &ClusterView) -> Option<MetadataResponseBroker> {
    if context.write_epoch().is_ok() {
        return advertised_broker(context, view);
    }
    let leader = view.leader_id.filter(|leader| Some(*leader) != view.node_id)?;
    view.members.live.iter().filter(|node| node.id == leader).find_map(live_broker)
}

fn broker(id: i32, host: &str, port: i32) -> MetadataResponseBroker {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(id))
        .with_host(StrBytes::from_string(host.to_string()))
        .with_port(port)
}

/// A live node as a broker: only one with a Kafka address (`host:port`,
/// as it registered it). A node whose `kafka_listen` is empty is left out:
/// no Kafka client could reach it, and librdkafka and kafka-python would
/// keep trying to connect to an address it does not have.
fn live_broker(node: &LiveNode) -> Option<MetadataResponseBroker> {
    address_broker(i32::try_from(node.id).ok()?, node.kafka_address.as_deref()?)
}

/// The brokers Metadata names: standalone, this node; in a cluster, every
/// live node with a Kafka address, and this node itself until it has read
/// the membership from etcd (so a client always knows the one it asked).
fn brokers(context: &ShardContext, view: &ClusterView) -> Vec<MetadataResponseBroker> {
    let mut brokers: Vec<MetadataResponseBroker> = view.members.live.iter().filter_map(live_broker).collect();
    if !brokers.iter().any(|broker| broker.node_id.0 == broker_id(view)) {
        brokers.extend(advertised_broker(context, view));
    }
    brokers
}

/// Who leads every partition (every node holds every partition), with the
/// replicas and the in-sync set, or `None` when Kafka clients have no leader
/// to go to: none elected, or the leader has no Kafka address.
#[derive(Debug)]
struct Placement {
    leader: Option<(BrokerId, i32)>,
    replicas: Vec<BrokerId>,
    in_sync: Vec<BrokerId>,
}

fn placement(view: &ClusterView, brokers: &[MetadataResponseBroker]) -> Placement {
    if view.role == Role::Standalone {
        let me = BrokerId(broker_id(view));
        let leader = Some((me, view.leader_epoch as i32));
        return Placement { leader, replicas: vec![me], in_sync: vec![me] };
    }
    let reachable = |id: u64| brokers.iter().any(|broker| i64::from(broker.node_id.0) == id as i64);
    let epoch = view.members.leader_epoch.and_then(|epoch| i32::try_from(epoch).ok()).unwrap_or(-1);
    let leader = view.leader_id.filter(|id| reachable(*id)).map(|id| (BrokerId(id as i32), epoch));
    let replicas = view.members.replicas.iter();
    Placement {
        leader,
        replicas: replicas.clone().map(|(id, _)| BrokerId(*id as i32)).collect(),
        in_sync: replicas.filter(|(_, in_sync)| *in_sync).map(|(id, _)| BrokerId(*id as i32)).collect(),
    }
}

/// Metadata: the live nodes as brokers and, for every partition, the
/// cluster's leader (standalone: this node), replicas and in-sync set.
/// No leader a Kafka client could reach: `LEADER_NOT_AVAILABLE`, leader -1.
/// The controller (where admin clients send CreateTopics and DeleteTopics)
/// is the leader, which alone may apply them; without one, this node.
fn metadata(context: &ShardContext, request: &MetadataRequest) -> MetadataResponse {
    let view = context.cluster.view();
    let brokers = brokers(context, &view);
    let placement = placement(&view, &brokers);
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
            let partitions = (0..meta.partitions).map(|index| partition_metadata(index, &placement)).collect();
            topic.with_partitions(partitions)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_static_str("ringlog")))
        .with_controller_id(placement.leader.map_or(BrokerId(broker_id(&view)), |(leader, _)| leader))
        .with_topics(topics)
}

fn partition_metadata(index: u32, placement: &Placement) -> MetadataResponsePartition {
    let partition = MetadataResponsePartition::default()
        .with_partition_index(index as i32)
        .with_replica_nodes(placement.replicas.clone())
        .with_isr_nodes(placement.in_sync.clone());
    match placement.leader {
        Some((leader, epoch)) => partition.with_leader_id(leader).with_leader_epoch(epoch),
        None => partition
            .with_error_code(ResponseError::LeaderNotAvailable.code())
            .with_leader_id(BrokerId(-1))
            .with_leader_epoch(-1),
    }
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
        // Kafka answers an idempotent producer's stale epoch so since KIP-588.
        ErrorCode::ProducerFenced => ResponseError::InvalidProducerEpoch,
        ErrorCode::Timeout => ResponseError::RequestTimedOut,
        ErrorCode::NotReady => ResponseError::LeaderNotAvailable,
        ErrorCode::Internal => ResponseError::UnknownServerError,
        ErrorCode::AuthenticationRequired | ErrorCode::AuthenticationFailed => ResponseError::SaslAuthenticationFailed,
        ErrorCode::NotAuthorized => ResponseError::TopicAuthorizationFailed,
    };
    kafka.code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::cluster::Members;

    fn follower_view(live: Vec<LiveNode>) -> ClusterView {
        let mut view = ClusterView::joining();
        view.node_id = Some(2);
        view.leader_id = Some(1);
        view.members = Members { live, replicas: vec![(1, true), (2, true), (3, false)], leader_epoch: Some(4) };
        view
    }

    fn node(id: u64, kafka: Option<&str>) -> LiveNode {
        LiveNode { id, kafka_address: kafka.map(str::to_string) }
    }

    #[test]
    fn a_node_without_a_kafka_address_is_not_a_broker() {
        assert!(live_broker(&node(3, None)).is_none());
        assert!(live_broker(&node(3, Some("no-port"))).is_none());
        let broker = live_broker(&node(3, Some("[::1]:9093"))).unwrap();
        assert_eq!((broker.node_id.0, broker.host.as_str(), broker.port), (3, "::1", 9093));
    }

    #[test]
    fn partitions_name_the_clusters_leader_with_replicas_and_in_sync_set() {
        let view = follower_view(vec![node(1, Some("h1:9092")), node(2, Some("h2:9092"))]);
        let brokers: Vec<_> = view.members.live.iter().filter_map(live_broker).collect();
        let placement = placement(&view, &brokers);
        assert_eq!(placement.leader, Some((BrokerId(1), 4)));
        assert_eq!(placement.replicas, [BrokerId(1), BrokerId(2), BrokerId(3)]);
        assert_eq!(placement.in_sync, [BrokerId(1), BrokerId(2)]);
        let partition = partition_metadata(0, &placement);
        assert_eq!((partition.error_code, partition.leader_id.0, partition.leader_epoch), (0, 1, 4));
    }

    #[test]
    fn a_leader_kafka_clients_cannot_reach_or_none_at_all_is_leader_not_available() {
        let unreachable = follower_view(vec![node(1, None), node(2, Some("h2:9092"))]);
        let mut leaderless = follower_view(vec![node(2, Some("h2:9092"))]);
        leaderless.leader_id = None;
        for view in [unreachable, leaderless] {
            let brokers: Vec<_> = view.members.live.iter().filter_map(live_broker).collect();
            let partition = partition_metadata(0, &placement(&view, &brokers));
            assert_eq!(partition.error_code, ResponseError::LeaderNotAvailable.code());
            assert_eq!((partition.leader_id.0, partition.leader_epoch), (-1, -1));
        }
    }
}
