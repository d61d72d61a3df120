//! Golden bytes: one example of every request and response, written out
//! field by field as version 2 puts it on the wire (a space between fields,
//! `|` after the length prefix and between repeated entries). The codec
//! must produce exactly these bytes and decode them back: old and new nodes
//! of one protocol version interoperate only while they do.

use super::*;

/// The bytes of a golden literal (spaces and `|` are for the reader).
fn bytes_of(golden: &str) -> Vec<u8> {
    let digits: Vec<u8> = golden.bytes().filter(u8::is_ascii_hexdigit).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits in {golden}");
    let value = |digit: u8| (digit as char).to_digit(16).expect("hex digit") as u8;
    digits.chunks(2).map(|pair| value(pair[0]) << 4 | value(pair[1])).collect()
}

/// One example of every request, with its bytes.
pub(super) fn request_examples() -> Vec<(Request, &'static str)> {
    client_request_examples().into_iter().chain(replication_request_examples()).collect()
}

fn client_request_examples() -> Vec<(Request, &'static str)> {
    vec![
        (
            Request::CreateTopic {
                name: "t".into(),
                settings: TopicSettings { partitions: 3, retention_bytes: 1, retention_ms: 2, segment_bytes: 4 },
            },
            "27000000 | 0100 0200 07000000 0100 74 03000000 0100000000000000 0200000000000000 0400000000000000",
        ),
        (Request::DeleteTopic { name: "t".into() }, "0b000000 | 0200 0200 07000000 0100 74"),
        (Request::ListTopics, "08000000 | 0300 0200 07000000"),
        (Request::DescribeTopic { name: "t".into() }, "0b000000 | 0400 0200 07000000 0100 74"),
        (
            Request::Produce { topic: "t".into(), partition: 3, acks: Acks::All, batch: vec![1, 2, 3] },
            "17000000 | 0500 0200 07000000 0100 74 03000000 02 03000000 010203",
        ),
        (
            Request::Fetch { topic: "t".into(), partition: 1, offset: 42, max_bytes: 4096, max_wait_ms: 500 },
            "1f000000 | 0600 0200 07000000 0100 74 01000000 2a00000000000000 00100000 f4010000",
        ),
        (Request::ListOffsets { topic: "t".into(), partition: 9 }, "0f000000 | 0700 0200 07000000 0100 74 09000000"),
        (
            Request::CommitOffset { group: "g".into(), topic: "t".into(), partition: 1, offset: 7 },
            "1a000000 | 0800 0200 07000000 0100 67 0100 74 01000000 0700000000000000",
        ),
        (
            Request::FetchOffset { group: "g".into(), topic: "t".into(), partition: 1 },
            "12000000 | 0900 0200 07000000 0100 67 0100 74 01000000",
        ),
        (Request::InitProducer, "08000000 | 0a00 0200 07000000"),
        (
            Request::FindOffset { topic: "t".into(), partition: 2, timestamp_ms: -5 },
            "17000000 | 0b00 0200 07000000 0100 74 02000000 fbffffffffffffff",
        ),
        (
            Request::SaslStart { mechanism: "S".into(), message: b"n,,".to_vec() },
            "12000000 | 1300 0200 07000000 0100 53 03000000 6e2c2c",
        ),
        (Request::SaslContinue { message: b"c=".to_vec() }, "0e000000 | 1400 0200 07000000 02000000 633d"),
    ]
}

fn replication_request_examples() -> Vec<(Request, &'static str)> {
    vec![
        (
            Request::ReplicaHello { node_id: 3 },
            "10000000 | 0c00 0200 07000000 0300000000000000",
        ),
        (
            Request::ReplicaAuth { proof: vec![0xaa; 4] },
            "10000000 | 0d00 0200 07000000 04000000 aaaaaaaa",
        ),
        (
            Request::ReplicaFetch { replica_id: 3, topic: "t".into(), partition: 1, offset: 99, max_bytes: 4096, max_wait_ms: 250 },
            "27000000 | 0e00 0200 07000000 0300000000000000 0100 74 01000000 6300000000000000 00100000 fa000000",
        ),
        (
            Request::EpochEndOffset { topic: "t".into(), partition: 1, epoch: 12 },
            "13000000 | 0f00 0200 07000000 0100 74 01000000 0c000000",
        ),
        (
            Request::TopicConfigs,
            "08000000 | 1000 0200 07000000",
        ),
        (
            Request::TopicIncarnations,
            "08000000 | 1600 0200 07000000",
        ),
        (
            Request::GroupOffsets { topic: "t".into(), partition: 4 },
            "0f000000 | 1100 0200 07000000 0100 74 04000000",
        ),
        (
            Request::ReplicaFetchMany { replica_id: 2, max_wait_ms: 500, max_bytes: 8192, partition_max_bytes: 1024, partitions: vec![ReplicaFetchPartition { topic: "t".into(), partition: 0, offset: 5, high_watermark: Some(4) }, ReplicaFetchPartition { topic: "u".into(), partition: 9, offset: 0, high_watermark: None }] },
            "4e000000 | 1200 0200 07000000 0200000000000000 f4010000 00200000 00040000 02000000 | 0100 74 00000000 0500000000000000 0400000000000000 | 0100 75 09000000 0000000000000000 ffffffffffffffff",
        ),
        (
            Request::ReplicaGroupOffsets { replica_id: 2, topic: "t".into(), partition: 4, stored_version: 9 },
            "1f000000 | 1500 0200 07000000 0200000000000000 0100 74 04000000 0900000000000000",
        ),
    ]
}

/// One example of every success response (each state of the enum-like
/// ones), with the API key it answers and its bytes.
pub(super) fn response_examples() -> Vec<(ApiKey, Response, &'static str)> {
    let client = topic_response_examples().into_iter().chain(partition_response_examples());
    client.chain(replication_response_examples()).collect()
}

fn topic_response_examples() -> Vec<(ApiKey, Response, &'static str)> {
    vec![
        (
            ApiKey::CreateTopic,
            Response::CreateTopic,
            "06000000 | 09000000 0000",
        ),
        (
            ApiKey::DeleteTopic,
            Response::DeleteTopic,
            "06000000 | 09000000 0000",
        ),
        (
            ApiKey::ListTopics,
            Response::ListTopics(vec![("a".into(), 1), ("b".into(), 7)]),
            "18000000 | 09000000 0000 02000000 | 0100 61 01000000 | 0100 62 07000000",
        ),
        (
            ApiKey::DescribeTopic,
            Response::DescribeTopic(vec![PartitionDescription { partition: 1, log_start_offset: 2, log_end_offset: 9, high_watermark: Some(4), segments: 1, bytes: 300, leader_epoch: 5 }, PartitionDescription { partition: 2, high_watermark: None, ..Default::default() }]),
            "62000000 | 09000000 0000 02000000 | 01000000 0200000000000000 0900000000000000 0400000000000000 01000000 2c01000000000000 05000000 | 02000000 0000000000000000 0000000000000000 ffffffffffffffff 00000000 0000000000000000 00000000",
        ),
    ]
}

fn partition_response_examples() -> Vec<(ApiKey, Response, &'static str)> {
    vec![
        (
            ApiKey::Produce,
            Response::Produce { base_offset: 5, next_offset: 9, duplicate: true },
            "17000000 | 09000000 0000 0500000000000000 0900000000000000 01",
        ),
        (
            ApiKey::Fetch,
            Response::Fetch { high_watermark: 10, log_start_offset: 1, next_offset: 8, batches: vec![9; 5] },
            "27000000 | 09000000 0000 0a00000000000000 0100000000000000 0800000000000000 05000000 0909090909",
        ),
        (
            ApiKey::ListOffsets,
            Response::ListOffsets { log_start_offset: 1, log_end_offset: 3, high_watermark: 2 },
            "1e000000 | 09000000 0000 0100000000000000 0300000000000000 0200000000000000",
        ),
        (ApiKey::CommitOffset, Response::CommitOffset, "06000000 | 09000000 0000"),
        (ApiKey::FetchOffset, Response::FetchOffset(CommittedState::None), "07000000 | 09000000 0000 00"),
        (
            ApiKey::FetchOffset,
            Response::FetchOffset(CommittedState::Valid(3)),
            "0f000000 | 09000000 0000 01 0300000000000000",
        ),
        (
            ApiKey::FetchOffset,
            Response::FetchOffset(CommittedState::OutOfRange {
                committed: 50,
                log_start_offset: 0,
                log_end_offset: 40,
            }),
            "1f000000 | 09000000 0000 02 3200000000000000 0000000000000000 2800000000000000",
        ),
        (ApiKey::InitProducer, Response::InitProducer { producer_id: 77 }, "0e000000 | 09000000 0000 4d00000000000000"),
        (ApiKey::FindOffset, Response::FindOffset { offset: Some(4) }, "0e000000 | 09000000 0000 0400000000000000"),
        (ApiKey::FindOffset, Response::FindOffset { offset: None }, "0e000000 | 09000000 0000 ffffffffffffffff"),
        (ApiKey::SaslStart, Response::SaslStart { message: b"r=".to_vec() }, "0c000000 | 09000000 0000 02000000 723d"),
        (
            ApiKey::SaslContinue,
            Response::SaslContinue { message: b"v=".to_vec() },
            "0c000000 | 09000000 0000 02000000 763d",
        ),
    ]
}

fn replication_response_examples() -> Vec<(ApiKey, Response, &'static str)> {
    vec![
        (
            ApiKey::ReplicaHello,
            Response::ReplicaChallenge { nonce: vec![1; 4] },
            "0e000000 | 09000000 0000 04000000 01010101",
        ),
        (
            ApiKey::ReplicaAuth,
            Response::ReplicaAuth { leader_id: 1, leader_epoch: 40 },
            "12000000 | 09000000 0000 0100000000000000 28000000",
        ),
        (
            ApiKey::ReplicaFetch,
            Response::ReplicaFetch { high_watermark: Some(5), log_start_offset: 0, log_end_offset: 9, leader_epoch: 40, uncompressed_bytes: 640, compressed: vec![3; 4] },
            "2e000000 | 09000000 0000 0500000000000000 0000000000000000 0900000000000000 28000000 80020000 04000000 03030303",
        ),
        (
            ApiKey::ReplicaFetch,
            Response::ReplicaFetch { high_watermark: None, log_start_offset: 0, log_end_offset: 9, leader_epoch: 41, uncompressed_bytes: 0, compressed: Vec::new() },
            "2a000000 | 09000000 0000 ffffffffffffffff 0000000000000000 0900000000000000 29000000 00000000 00000000",
        ),
        (
            ApiKey::EpochEndOffset,
            Response::EpochEndOffset { epoch: Some(7), end_offset: 70, log_start_offset: 2 },
            "1b000000 | 09000000 0000 01 07000000 4600000000000000 0200000000000000",
        ),
        (
            ApiKey::EpochEndOffset,
            Response::EpochEndOffset { epoch: None, end_offset: 0, log_start_offset: 0 },
            "1b000000 | 09000000 0000 00 00000000 0000000000000000 0000000000000000",
        ),
        (
            ApiKey::TopicConfigs,
            Response::TopicConfigs(vec![("t".into(), TopicSettings { partitions: 3, retention_bytes: 1, retention_ms: 2, segment_bytes: 4 })]),
            "29000000 | 09000000 0000 01000000 | 0100 74 03000000 0100000000000000 0200000000000000 0400000000000000",
        ),
        (
            ApiKey::TopicIncarnations,
            Response::TopicIncarnations(vec![("t".into(), 5)]),
            "15000000 | 09000000 0000 01000000 | 0100 74 0500000000000000",
        ),
        (
            ApiKey::GroupOffsets,
            Response::GroupOffsets(vec![("g".into(), 9), ("h".into(), 0)]),
            "20000000 | 09000000 0000 02000000 | 0100 67 0900000000000000 | 0100 68 0000000000000000",
        ),
        (
            ApiKey::ReplicaFetchMany,
            Response::ReplicaFetchMany { leader_epoch: 3, leader_shards: 2, partitions: vec![ReplicaFetchedPartition { index: 0, error: ErrorCode::None, high_watermark: Some(9), log_start_offset: 0, log_end_offset: 12, commit_version: 5, uncompressed_bytes: 30, body: vec![4; 3].into() }, ReplicaFetchedPartition { index: 7, error: ErrorCode::OffsetOutOfRange, high_watermark: None, log_start_offset: 0, log_end_offset: 0, commit_version: 0, uncompressed_bytes: 0, body: bytes::Bytes::new() }] },
            "6f000000 | 09000000 0000 03000000 0200 02000000 | 00000000 0000 0900000000000000 0000000000000000 0c00000000000000 0500000000000000 1e000000 03000000 040404 | 07000000 0200 ffffffffffffffff 0000000000000000 0000000000000000 0000000000000000 00000000 00000000",
        ),
        (
            ApiKey::ReplicaGroupOffsets,
            Response::ReplicaGroupOffsets { version: 9, groups: vec![("g".into(), 3)] },
            "1d000000 | 09000000 0000 0900000000000000 01000000 | 0100 67 0300000000000000",
        ),
    ]
}

const ERROR_EXAMPLE: &str =
    "26000000 | 05000000 0600 0e00 6e6f7420746865206c6561646572 0e00 3132372e302e302e313a37303730";

#[test]
fn every_request_encodes_to_its_golden_bytes_and_decodes_back() {
    for (request, golden) in request_examples() {
        let expected = bytes_of(golden);
        let mut out = Vec::new();
        encode_request(7, &request, &mut out);
        assert_eq!(out, expected, "{request:?}");
        let mut split = Vec::new();
        let body = encode_request_split(7, &request, &mut split);
        split.extend_from_slice(body);
        assert_eq!(split, expected, "split encoding of {request:?}");
        let header =
            RequestHeader { api_key: request.api_key() as u16, api_version: PROTOCOL_VERSION, correlation_id: 7 };
        assert_eq!(decode_request(&expected[LENGTH_PREFIX_BYTES..]), Ok((header, request.clone())));
        assert_eq!(decode_request_owned(expected[LENGTH_PREFIX_BYTES..].to_vec()), Ok((header, request)));
    }
}

#[test]
fn every_response_encodes_to_its_golden_bytes_and_decodes_back() {
    for (api_key, response, golden) in response_examples() {
        let expected = bytes_of(golden);
        let mut out = Vec::new();
        encode_response(9, &response, &mut out);
        assert_eq!(out, expected, "{response:?}");
        let split = encode_response_split(9, response.clone());
        assert_eq!(split.pieces().collect::<Vec<_>>().concat(), expected, "split encoding of {response:?}");
        assert_eq!(split.len(), expected.len());
        let inserts = split.inserts.len();
        let joined = split.joined_inside();
        assert_eq!(joined.inserts.len(), inserts, "a trailing insert stays apart when the inside is joined");
        assert_eq!(joined.pieces().collect::<Vec<_>>().concat(), expected, "joined encoding of {response:?}");
        assert_eq!(decode_response(api_key, &expected[LENGTH_PREFIX_BYTES..]), Ok((9, Ok(response.clone()))));
        let shared = bytes::Bytes::copy_from_slice(&expected[LENGTH_PREFIX_BYTES..]);
        assert_eq!(decode_response_shared(api_key, &shared), Ok((9, Ok(response.clone()))));
        assert_eq!(decode_response_owned(api_key, expected[LENGTH_PREFIX_BYTES..].to_vec()), Ok((9, Ok(response))));
    }
}

#[test]
fn large_replica_answer_bodies_are_sent_from_where_they_are_and_make_the_same_frame() {
    let partition = |index, body: bytes::Bytes| ReplicaFetchedPartition {
        index,
        error: ErrorCode::None,
        high_watermark: Some(1),
        log_start_offset: 0,
        log_end_offset: 2,
        commit_version: 0,
        uncompressed_bytes: body.len() as u32,
        body,
    };
    let large = bytes::Bytes::from(vec![7u8; SHARED_BYTES_MIN_BYTES]);
    let partitions =
        vec![partition(0, large.clone()), partition(1, bytes::Bytes::from(vec![8u8; 10])), partition(2, large.clone())];
    let response = Response::ReplicaFetchMany { leader_epoch: 1, leader_shards: 2, partitions };
    let mut whole = Vec::new();
    encode_response(3, &response, &mut whole);
    let split = encode_response_split(3, response.clone());
    assert_eq!(split.inserts.len(), 2, "only bodies of SHARED_BYTES_MIN_BYTES or more are left out of the head");
    assert!(split.inserts.iter().all(|(_, body)| body.as_ptr() == large.as_ptr()), "sent from where they are");
    assert_eq!(split.pieces().collect::<Vec<_>>().concat(), whole);
    assert_eq!(split.len(), whole.len());
    // As a TLS connection writes it: the bodies inside the head joined in.
    let joined = split.joined_inside();
    assert!(joined.inserts.is_empty());
    assert_eq!(joined.head, whole);
    assert_eq!(decode_response(ApiKey::ReplicaFetchMany, &whole[LENGTH_PREFIX_BYTES..]), Ok((3, Ok(response))));
}

#[test]
fn replica_answer_batches_decoded_from_a_shared_frame_are_slices_of_it_not_copies() {
    let (api_key, _, golden) =
        response_examples().into_iter().find(|(api_key, _, _)| *api_key == ApiKey::ReplicaFetchMany).unwrap();
    let frame = bytes::Bytes::copy_from_slice(&bytes_of(golden)[LENGTH_PREFIX_BYTES..]);
    let first_body = |decoded: Result<(u32, Result<Response, ErrorResponse>), ProtocolError>| match decoded {
        Ok((_, Ok(Response::ReplicaFetchMany { partitions, .. }))) => partitions[0].body.clone(),
        other => panic!("not a replica answer: {other:?}"),
    };
    let shared = first_body(decode_response_shared(api_key, &frame));
    assert_eq!(&shared[..], &[4, 4, 4]);
    assert!(frame.as_ptr_range().contains(&shared.as_ptr()), "the batches point into the frame");
    assert_eq!(first_body(decode_response(api_key, &frame)), shared);
}

#[test]
fn every_api_key_has_a_golden_request_and_response() {
    let requests: Vec<ApiKey> = request_examples().iter().map(|(request, _)| request.api_key()).collect();
    let responses: Vec<ApiKey> = response_examples().iter().map(|(api_key, _, _)| *api_key).collect();
    for wire in 1..=18 {
        let api_key = ApiKey::from_wire(wire).unwrap();
        assert!(requests.contains(&api_key) && responses.contains(&api_key), "{api_key:?} has no golden example");
    }
}

#[test]
fn an_error_response_encodes_to_its_golden_bytes_and_decodes_back() {
    let error = ErrorResponse {
        code: ErrorCode::NotLeader,
        message: "not the leader".into(),
        leader: Some("127.0.0.1:7070".into()),
    };
    let expected = bytes_of(ERROR_EXAMPLE);
    let mut out = Vec::new();
    encode_error(5, &error, &mut out);
    assert_eq!(out, expected);
    assert_eq!(decode_response(ApiKey::Fetch, &expected[LENGTH_PREFIX_BYTES..]), Ok((5, Err(error.clone()))));
    assert_eq!(decode_response_owned(ApiKey::Fetch, expected[LENGTH_PREFIX_BYTES..].to_vec()), Ok((5, Err(error))));
}

#[test]
fn the_produce_head_ends_where_the_golden_batch_starts() {
    let (request, golden) =
        request_examples().into_iter().find(|(request, _)| request.api_key() == ApiKey::Produce).unwrap();
    let frame = bytes_of(golden);
    let head = decode_produce_head(&frame[LENGTH_PREFIX_BYTES..], frame.len() - LENGTH_PREFIX_BYTES).unwrap().unwrap();
    // header 8 | topic "t" 2 + 1 | partition 4 | acks 1 | batch length 4
    assert_eq!((head.batch_start, head.batch_bytes), (8 + 3 + 4 + 1 + 4, 3));
    assert_eq!(&frame[LENGTH_PREFIX_BYTES + head.batch_start..], [1, 2, 3]);
    assert_eq!(head.into_request(vec![1, 2, 3]).1, request);
}

#[test]
fn fixed_sizes_are_those_of_the_golden_layouts() {
    assert_eq!((LENGTH_PREFIX_BYTES, REQUEST_HEADER_BYTES, RESPONSE_HEADER_BYTES), (4, 8, 6));
    // topic length 2 | partition 4 | offset 8 | high watermark 8
    assert_eq!(REPLICA_FETCH_PARTITION_MIN_BYTES, 22);
    // index 4 | error 2 | high watermark 8 | log start 8 | log end 8 | commit version 8 | uncompressed 4 | body length 4
    assert_eq!(REPLICA_FETCHED_PARTITION_FIXED_BYTES, 46);
}

#[test]
fn api_keys_error_codes_and_acks_keep_their_wire_values_and_names() {
    for value in 1..=22 {
        assert_eq!(ApiKey::from_wire(value).map(|api_key| api_key as u16), Ok(value));
    }
    assert_eq!(ApiKey::from_wire(0), Err(ProtocolError::UnknownApi(0)));
    assert_eq!(ApiKey::from_wire(23), Err(ProtocolError::UnknownApi(23)));
    assert!(ApiKey::ReplicaHello.is_replication() && !ApiKey::FindOffset.is_replication());
    assert!(ApiKey::ReplicaFetchMany.is_replication(), "the last replication key of the first range");
    assert!(ApiKey::ReplicaGroupOffsets.is_replication(), "added after the SASL keys");
    assert!(ApiKey::TopicIncarnations.is_replication());
    assert!(!ApiKey::SaslStart.is_replication() && !ApiKey::SaslContinue.is_replication(), "clients authenticate");
    let names = [
        "none",
        "unknown_topic",
        "offset_out_of_range",
        "storage_failed",
        "disk_full",
        "record_too_large",
        "not_leader",
        "not_enough_replicas",
        "invalid_request",
        "topic_exists",
        "unsupported_version",
        "unknown_api",
        "out_of_order_sequence",
        "shutting_down",
        "timeout",
        "internal",
        "not_ready",
        "authentication_required",
        "authentication_failed",
        "not_authorized",
        "producer_fenced",
    ];
    for (value, name) in names.into_iter().enumerate() {
        let code = ErrorCode::from_wire(value as u16);
        assert_eq!((code as u16, code.name()), (value as u16, name));
    }
    assert_eq!(ErrorCode::from_wire(21), ErrorCode::Internal, "an unknown code reads as internal");
    assert_eq!([Acks::None as u8, Acks::Leader as u8, Acks::All as u8], [0, 1, 2]);
}
