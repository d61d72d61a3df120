//! The native client protocol: length-prefixed binary frames. See
//! `docs/PROTOCOL.md`.
//!
//! ```text
//! request  = frame_bytes u32 | api_key u16 | api_version u16 | correlation_id u32 | body
//! response = frame_bytes u32 | correlation_id u32 | error_code u16 | body
//! ```
//! `frame_bytes` counts the bytes after itself and is checked against the
//! configured maximum before any allocation. Strings are `u16 length | UTF-8`,
//! byte strings `u32 length | bytes`, integers little endian. A response
//! with a non-zero error code has the body `message string | leader string`
//! (the leader's client address for `not_leader`, else empty).

mod request;
mod response;
mod types;
mod wire;

#[cfg(test)]
mod golden_tests;

pub use request::*;
pub use response::*;
pub use types::*;
pub use wire::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn all_requests() -> Vec<Request> {
        vec![
            Request::CreateTopic {
                name: "orders".into(),
                settings: TopicSettings { partitions: 12, retention_bytes: 1 << 30, retention_ms: 0, segment_bytes: 0 },
            },
            Request::DeleteTopic { name: "t".into() },
            Request::ListTopics,
            Request::DescribeTopic { name: "t".into() },
            Request::Produce { topic: "t".into(), partition: 3, acks: Acks::All, batch: vec![1, 2, 3] },
            Request::Fetch { topic: "t".into(), partition: 0, offset: 42, max_bytes: 1 << 20, max_wait_ms: 500 },
            Request::ListOffsets { topic: "t".into(), partition: 9 },
            Request::CommitOffset { group: "g".into(), topic: "t".into(), partition: 1, offset: 7 },
            Request::FetchOffset { group: "g".into(), topic: "t".into(), partition: 1 },
            Request::InitProducer,
            Request::FindOffset { topic: "t".into(), partition: 2, timestamp_ms: -5 },
            Request::ReplicaHello { node_id: 3 },
            Request::ReplicaAuth { proof: vec![7; 32] },
            Request::ReplicaFetch {
                replica_id: 3,
                topic: "t".into(),
                partition: 1,
                offset: 99,
                max_bytes: 1 << 20,
                max_wait_ms: 250,
            },
            Request::EpochEndOffset { topic: "t".into(), partition: 1, epoch: 12 },
            Request::TopicConfigs,
            Request::GroupOffsets { topic: "t".into(), partition: 4 },
            Request::ReplicaFetchMany {
                replica_id: 2,
                max_wait_ms: 500,
                max_bytes: 8 << 20,
                partition_max_bytes: 1 << 20,
                partitions: vec![
                    ReplicaFetchPartition { topic: "t".into(), partition: 0, offset: 5, high_watermark: Some(4) },
                    ReplicaFetchPartition { topic: "u".into(), partition: 9, offset: 0, high_watermark: None },
                ],
            },
        ]
    }

    #[test]
    fn every_request_round_trips() {
        for (i, request) in all_requests().into_iter().enumerate() {
            let mut out = Vec::new();
            encode_request(i as u32, &request, &mut out);
            let length = frame_length(out[..4].try_into().unwrap(), 1 << 20).unwrap();
            assert_eq!(length, out.len() - 4);
            let (header, decoded) = decode_request(&out[4..]).unwrap();
            assert_eq!(header.correlation_id, i as u32);
            assert_eq!(decoded, request);
            assert_eq!(decode_request_owned(out[4..].to_vec()).unwrap(), (header, request.clone()));
            let mut split = Vec::new();
            let body = encode_request_split(i as u32, &request, &mut split);
            split.extend_from_slice(body);
            assert_eq!(split, out, "split encoding puts the same bytes on the wire");
        }
    }

    #[test]
    fn owned_produce_decoding_rejects_what_slice_decoding_rejects() {
        let request = Request::Produce { topic: "t".into(), partition: 1, acks: Acks::All, batch: vec![5; 64] };
        let mut out = Vec::new();
        encode_request(3, &request, &mut out);
        let frame = out[4..].to_vec();
        for cut in [frame.len() - 1, frame.len() - 64, 12] {
            assert_eq!(decode_request_owned(frame[..cut].to_vec()).is_err(), decode_request(&frame[..cut]).is_err());
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert!(decode_request_owned(longer.clone()).is_err() && decode_request(&longer).is_err());
    }

    #[test]
    fn every_response_round_trips() {
        let responses = vec![
            (ApiKey::CreateTopic, Response::CreateTopic),
            (ApiKey::ListTopics, Response::ListTopics(vec![("a".into(), 1), ("b".into(), 7)])),
            (
                ApiKey::DescribeTopic,
                Response::DescribeTopic(vec![
                    PartitionDescription { partition: 1, bytes: 9, high_watermark: Some(4), ..Default::default() },
                    PartitionDescription { partition: 2, high_watermark: None, ..Default::default() },
                ]),
            ),
            (ApiKey::Produce, Response::Produce { base_offset: 5, next_offset: 9, duplicate: true }),
            (
                ApiKey::Fetch,
                Response::Fetch { high_watermark: 10, log_start_offset: 0, next_offset: 8, batches: vec![9; 100] },
            ),
            (ApiKey::ListOffsets, Response::ListOffsets { log_start_offset: 1, log_end_offset: 2, high_watermark: 2 }),
            (
                ApiKey::FetchOffset,
                Response::FetchOffset(CommittedState::OutOfRange {
                    committed: 50,
                    log_start_offset: 0,
                    log_end_offset: 40,
                }),
            ),
            (ApiKey::FetchOffset, Response::FetchOffset(CommittedState::Valid(3))),
            (ApiKey::InitProducer, Response::InitProducer { producer_id: 77 }),
            (ApiKey::FindOffset, Response::FindOffset { offset: None }),
            (ApiKey::FindOffset, Response::FindOffset { offset: Some(4) }),
            (ApiKey::ReplicaHello, Response::ReplicaChallenge { nonce: vec![1; 32] }),
            (ApiKey::ReplicaAuth, Response::ReplicaAuth { leader_id: 1, leader_epoch: 40 }),
            (
                ApiKey::ReplicaFetch,
                Response::ReplicaFetch {
                    high_watermark: Some(5),
                    log_start_offset: 0,
                    log_end_offset: 9,
                    leader_epoch: 40,
                    uncompressed_bytes: 640,
                    compressed: vec![3; 20],
                },
            ),
            (
                ApiKey::ReplicaFetch,
                Response::ReplicaFetch {
                    high_watermark: None,
                    log_start_offset: 0,
                    log_end_offset: 9,
                    leader_epoch: 41,
                    uncompressed_bytes: 0,
                    compressed: Vec::new(),
                },
            ),
            (ApiKey::EpochEndOffset, Response::EpochEndOffset { epoch: Some(7), end_offset: 70, log_start_offset: 2 }),
            (ApiKey::EpochEndOffset, Response::EpochEndOffset { epoch: None, end_offset: 0, log_start_offset: 0 }),
            (
                ApiKey::TopicConfigs,
                Response::TopicConfigs(vec![(
                    "t".into(),
                    TopicSettings { partitions: 3, retention_bytes: 1, retention_ms: 2, segment_bytes: 3 },
                )]),
            ),
            (ApiKey::GroupOffsets, Response::GroupOffsets(vec![("g".into(), 9), ("h".into(), 0)])),
            (
                ApiKey::ReplicaFetchMany,
                Response::ReplicaFetchMany {
                    leader_epoch: 3,
                    leader_shards: 2,
                    partitions: vec![
                        ReplicaFetchedPartition {
                            index: 0,
                            error: ErrorCode::None,
                            high_watermark: Some(9),
                            log_start_offset: 0,
                            log_end_offset: 12,
                            uncompressed_bytes: 30,
                            body: vec![4; 12],
                        },
                        ReplicaFetchedPartition {
                            index: 7,
                            error: ErrorCode::OffsetOutOfRange,
                            high_watermark: None,
                            log_start_offset: 0,
                            log_end_offset: 0,
                            uncompressed_bytes: 0,
                            body: Vec::new(),
                        },
                    ],
                },
            ),
        ];
        for (api_key, response) in responses {
            let mut out = Vec::new();
            encode_response(99, &response, &mut out);
            let mut split = Vec::new();
            let body = encode_response_split(99, response.clone(), &mut split);
            split.extend_from_slice(&body);
            assert_eq!(split, out, "split encoding puts the same bytes on the wire");
            assert_eq!(decode_response_owned(api_key, out[4..].to_vec()), decode_response(api_key, &out[4..]));
            let (correlation_id, decoded) = decode_response(api_key, &out[4..]).unwrap();
            assert_eq!(correlation_id, 99);
            assert_eq!(decoded, Ok(response));
        }
    }

    #[test]
    fn error_responses_carry_code_message_and_leader() {
        let error = ErrorResponse {
            code: ErrorCode::NotLeader,
            message: "not the leader".into(),
            leader: Some("127.0.0.1:7070".into()),
        };
        let mut out = Vec::new();
        encode_error(5, &error, &mut out);
        let (correlation_id, decoded) = decode_response(ApiKey::Produce, &out[4..]).unwrap();
        assert_eq!(correlation_id, 5);
        assert_eq!(decoded, Err(error));
        assert!(ErrorCode::NotLeader.is_retriable());
        assert_eq!(ErrorCode::NotLeader.name(), "not_leader");
    }

    #[test]
    fn a_hostile_partition_count_in_a_multi_partition_fetch_is_an_error_without_a_huge_allocation() {
        let mut request = Vec::new();
        encode_request(
            1,
            &Request::ReplicaFetchMany {
                replica_id: 2,
                max_wait_ms: 0,
                max_bytes: 1,
                partition_max_bytes: 1,
                partitions: Vec::new(),
            },
            &mut request,
        );
        let count_at = request.len() - 4;
        request[count_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_request(&request[4..]), Err(ProtocolError::Truncated("topic")));
        let mut response = Vec::new();
        let answer = Response::ReplicaFetchMany { leader_epoch: 1, leader_shards: 1, partitions: Vec::new() };
        encode_response(1, &answer, &mut response);
        let count_at = response.len() - 4;
        response[count_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_response(ApiKey::ReplicaFetchMany, &response[4..]), Err(ProtocolError::Truncated("index")));
        let mut response = Vec::new();
        let fetched = ReplicaFetchedPartition {
            index: 0,
            error: ErrorCode::Internal,
            high_watermark: Some(0),
            log_start_offset: 0,
            log_end_offset: 0,
            uncompressed_bytes: 0,
            body: Vec::new(),
        };
        let answer = Response::ReplicaFetchMany { leader_epoch: 1, leader_shards: 1, partitions: vec![fetched] };
        encode_response(1, &answer, &mut response);
        let code_at = 4 + RESPONSE_HEADER_BYTES + 4 + 2 + 4 + 4;
        response[code_at..code_at + 2].copy_from_slice(&999u16.to_le_bytes());
        assert_eq!(
            decode_response(ApiKey::ReplicaFetchMany, &response[4..]),
            Err(ProtocolError::Invalid("unknown error code"))
        );
    }

    #[test]
    fn oversized_length_prefix_is_rejected_before_allocation() {
        let prefix = u32::MAX.to_le_bytes();
        assert!(matches!(frame_length(prefix, 16 << 20), Err(ProtocolError::FrameTooLarge { .. })));
        assert!(frame_length(2u32.to_le_bytes(), 16 << 20).is_err());
    }

    #[test]
    fn truncated_and_garbage_frames_are_errors_not_panics() {
        for request in all_requests() {
            let mut out = Vec::new();
            encode_request(1, &request, &mut out);
            for length in 4..out.len() {
                assert!(decode_request(&out[4..length]).is_err(), "{request:?} truncated to {length}");
            }
            out.push(0);
            assert!(decode_request(&out[4..]).is_err(), "trailing byte accepted");
        }
        assert_eq!(decode_request(&[0xff, 0xff, 1, 0, 0, 0, 0, 0]), Err(ProtocolError::UnknownApi(0xffff)));
        assert_eq!(decode_request(&[5, 0, 9, 0, 0, 0, 0, 0]), Err(ProtocolError::UnsupportedVersion(9)));
    }
}
