//! Kafka request frames as the Kafka listener reads them: the length
//! prefix check, the header, and the body of every API it serves, decoded
//! by the `kafka-protocol` crate (vendored with bounded reservations). No
//! input may panic, abort or allocate beyond what the frame can justify.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeGroupsRequest, FetchRequest,
    FindCoordinatorRequest, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
    SaslAuthenticateRequest, SaslHandshakeRequest, SyncGroupRequest,
};
use libfuzzer_sys::fuzz_target;
use ringlog::protocol::kafka::records::{visit_records, DecodeLimits, RecordsError};
use ringlog::protocol::kafka::{decode_body, decode_request, frame_length, KafkaFrameError, KafkaRequest};

fn decode(request: &KafkaRequest) -> Result<(), KafkaFrameError> {
    match request.api {
        ApiKey::ApiVersions => decode_body::<ApiVersionsRequest>(request).map(drop),
        ApiKey::Metadata => decode_body::<MetadataRequest>(request).map(drop),
        ApiKey::Fetch => decode_body::<FetchRequest>(request).map(drop),
        ApiKey::ListOffsets => decode_body::<ListOffsetsRequest>(request).map(drop),
        ApiKey::CreateTopics => decode_body::<CreateTopicsRequest>(request).map(drop),
        ApiKey::DeleteTopics => decode_body::<DeleteTopicsRequest>(request).map(drop),
        ApiKey::InitProducerId => decode_body::<InitProducerIdRequest>(request).map(drop),
        ApiKey::FindCoordinator => decode_body::<FindCoordinatorRequest>(request).map(drop),
        ApiKey::JoinGroup => decode_body::<JoinGroupRequest>(request).map(drop),
        ApiKey::SyncGroup => decode_body::<SyncGroupRequest>(request).map(drop),
        ApiKey::Heartbeat => decode_body::<HeartbeatRequest>(request).map(drop),
        ApiKey::LeaveGroup => decode_body::<LeaveGroupRequest>(request).map(drop),
        ApiKey::ListGroups => decode_body::<ListGroupsRequest>(request).map(drop),
        ApiKey::DescribeGroups => decode_body::<DescribeGroupsRequest>(request).map(drop),
        ApiKey::OffsetCommit => decode_body::<OffsetCommitRequest>(request).map(drop),
        ApiKey::OffsetFetch => decode_body::<OffsetFetchRequest>(request).map(drop),
        ApiKey::SaslHandshake => decode_body::<SaslHandshakeRequest>(request).map(drop),
        ApiKey::SaslAuthenticate => decode_body::<SaslAuthenticateRequest>(request).map(drop),
        ApiKey::Produce => {
            let produce = decode_body::<ProduceRequest>(request)?;
            // The listener hands each partition's records to the batch decoder.
            let limits = DecodeLimits { max_records_bytes: 1 << 20 };
            for partition in produce.topic_data.iter().flat_map(|topic| &topic.partition_data) {
                let records = partition.records.as_deref().unwrap_or_default();
                let _ = visit_records::<RecordsError>(records, limits, |_| Ok(()));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = frame_length(data[..4].try_into().unwrap(), 1 << 20);
    }
    if let Ok(request) = decode_request(Bytes::copy_from_slice(data)) {
        let _ = decode(&request);
    }
});
