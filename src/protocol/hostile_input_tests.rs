//! Hostile input: whatever the bytes, decoding is an error or a value,
//! never a panic or an allocation the frame does not pay for; the owned
//! (zero-copy) paths reject what the slice paths reject.

use super::golden_tests::{request_examples, response_examples};
use super::*;

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
        commit_version: 0,
        uncompressed_bytes: 0,
        body: bytes::Bytes::new(),
    };
    let answer = Response::ReplicaFetchMany { leader_epoch: 1, leader_shards: 1, partitions: vec![fetched] };
    encode_response(1, &answer, &mut response);
    // prefix | header | leader_epoch u32 | leader_shards u16 | count u32 | index u32 | error_code u16
    let code_at = LENGTH_PREFIX_BYTES + RESPONSE_HEADER_BYTES + 4 + 2 + 4 + 4;
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
    for (request, _) in request_examples() {
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

#[test]
fn truncated_and_padded_responses_are_the_same_errors_in_the_owned_shared_and_slice_decoders() {
    let shared = |api_key, bytes: &[u8]| decode_response_shared(api_key, &bytes::Bytes::copy_from_slice(bytes));
    for (api_key, response, _) in response_examples() {
        let mut out = Vec::new();
        encode_response(1, &response, &mut out);
        for length in LENGTH_PREFIX_BYTES..out.len() {
            let slice = decode_response(api_key, &out[LENGTH_PREFIX_BYTES..length]);
            assert!(slice.is_err(), "{response:?} truncated to {length}");
            assert_eq!(decode_response_owned(api_key, out[LENGTH_PREFIX_BYTES..length].to_vec()), slice);
            assert_eq!(shared(api_key, &out[LENGTH_PREFIX_BYTES..length]), slice);
        }
        out.push(0);
        let slice = decode_response(api_key, &out[LENGTH_PREFIX_BYTES..]);
        assert_eq!(slice, Err(ProtocolError::Invalid("trailing bytes after the body")), "{response:?}");
        assert_eq!(decode_response_owned(api_key, out[LENGTH_PREFIX_BYTES..].to_vec()), slice);
        assert_eq!(shared(api_key, &out[LENGTH_PREFIX_BYTES..]), slice);
    }
}

#[test]
fn a_response_read_as_head_and_trailing_bytes_decodes_as_the_whole_frame() {
    let mut split_kinds = 0;
    for (api_key, response, _) in response_examples() {
        let mut out = Vec::new();
        encode_response(1, &response, &mut out);
        let frame = &out[LENGTH_PREFIX_BYTES..];
        let whole = decode_response(api_key, frame);
        // Any prefix holding the head finds where the trailing bytes start;
        // a shorter one finds nothing (the reader then reads the frame whole).
        let start = (0..=frame.len()).find_map(|peek| response_trailing_start(api_key, &frame[..peek], frame.len()));
        let Some(start) = start else {
            use super::message::Message;
            assert!(response.clone().trailing_mut().is_none(), "{response:?} has trailing bytes no prefix finds");
            continue;
        };
        split_kinds += 1;
        for peek in start..=frame.len() {
            assert_eq!(response_trailing_start(api_key, &frame[..peek], frame.len()), Some(start), "{response:?}");
        }
        assert_eq!(decode_response_parts(api_key, &frame[..start], frame[start..].to_vec()), whole, "{response:?}");
        // A trailing part of the wrong length, or a head cut short or too long, is an error.
        let longer = [&frame[start..], &[0]].concat();
        assert!(decode_response_parts(api_key, &frame[..start], longer).is_err(), "{response:?}");
        assert!(decode_response_parts(api_key, &frame[..start - 1], frame[start - 1..].to_vec()).is_err());
        if start < frame.len() {
            let short = frame[start..frame.len() - 1].to_vec();
            assert!(decode_response_parts(api_key, &frame[..start], short).is_err(), "{response:?}");
            assert!(decode_response_parts(api_key, &frame[..start + 1], frame[start + 1..].to_vec()).is_err());
        }
    }
    assert!(split_kinds > 0, "no example response has trailing bytes");
}

#[test]
fn an_error_answer_is_never_split_even_when_its_bytes_read_as_a_fetch_head() {
    // An error frame: correlation id u32 | error code u16 | message length
    // u16 | message | leader length u16 (0). Read as a fetch from byte 6 on,
    // three u64 offsets and the batches' u32 length end at byte 34; the
    // message's bytes 22..26 are that length, which ends the frame.
    let mut message = vec![b'x'; 144];
    message[22..26].copy_from_slice(&120u32.to_le_bytes());
    let message = String::from_utf8(message).expect("text");
    let error = ErrorResponse { code: ErrorCode::NotLeader, message, leader: None };
    let mut out = Vec::new();
    encode_error(1, &error, &mut out);
    let frame = &out[LENGTH_PREFIX_BYTES..];
    assert_eq!(frame.len(), 34 + 120);
    assert_eq!(response_trailing_start(ApiKey::Fetch, frame, frame.len()), None, "an error answer is read whole");
    let mut success = frame.to_vec();
    success[4..6].copy_from_slice(&(ErrorCode::None as u16).to_le_bytes());
    assert_eq!(response_trailing_start(ApiKey::Fetch, &success, frame.len()), Some(34), "the same bytes as a success");
}

#[test]
fn a_truncated_fetch_body_is_named_by_its_field() {
    let response = Response::Fetch { high_watermark: 1, log_start_offset: 0, next_offset: 1, batches: vec![7; 10] };
    let mut out = Vec::new();
    encode_response(1, &response, &mut out);
    out.pop();
    let frame = &out[LENGTH_PREFIX_BYTES..];
    assert_eq!(decode_response(ApiKey::Fetch, frame), Err(ProtocolError::Truncated("batches")));
    assert_eq!(decode_response_owned(ApiKey::Fetch, frame.to_vec()), Err(ProtocolError::Truncated("batches")));
}

#[test]
fn a_produce_head_is_undecided_until_its_fields_arrived_and_must_fit_the_frame() {
    let request = Request::Produce { topic: "topic".into(), partition: 1, acks: Acks::Leader, batch: vec![5; 16] };
    let mut out = Vec::new();
    encode_request(3, &request, &mut out);
    let frame = &out[LENGTH_PREFIX_BYTES..];
    let head = decode_produce_head(frame, frame.len()).unwrap().expect("a whole produce frame has a head");
    assert_eq!((head.batch_start, head.batch_bytes), (frame.len() - 16, 16));
    for length in 0..head.batch_start {
        assert_eq!(decode_produce_head(&frame[..length], frame.len()), Ok(None), "head cut to {length}");
    }
    assert_eq!(
        decode_produce_head(frame, frame.len() + 1),
        Err(ProtocolError::Invalid("trailing bytes after the body"))
    );
    assert_eq!(decode_produce_head(frame, frame.len() - 1), Err(ProtocolError::Truncated("batch")));
    let acks_at = head.batch_start - 4 - 1;
    let mut bad_acks = frame.to_vec();
    bad_acks[acks_at] = 3;
    assert_eq!(decode_produce_head(&bad_acks, frame.len()), Err(ProtocolError::Invalid("acks must be 0, 1 or 2")));
    let mut bad_topic = frame.to_vec();
    bad_topic[REQUEST_HEADER_BYTES + 2] = 0xff;
    assert_eq!(decode_produce_head(&bad_topic, frame.len()), Ok(None), "the whole frame's decode names it");
    assert_eq!(decode_request_owned(bad_topic), Err(ProtocolError::Invalid("string is not UTF-8")));
    let mut fetch = Vec::new();
    encode_request(3, &Request::ListTopics, &mut fetch);
    assert_eq!(decode_produce_head(&fetch[LENGTH_PREFIX_BYTES..], fetch.len() - LENGTH_PREFIX_BYTES), Ok(None));
}

#[test]
fn a_hostile_element_count_reserves_neither_more_than_the_bytes_hold_nor_more_than_the_cap() {
    use super::field::{preallocated_elements, MAX_PREALLOCATED_ELEMENTS};
    // ListTopics in a 64 MiB frame claiming 2^32 - 1 topics of 6 bytes each.
    assert_eq!(preallocated_elements(u32::MAX as usize, 64 << 20, 6), MAX_PREALLOCATED_ELEMENTS);
    assert_eq!(preallocated_elements(u32::MAX as usize, 60, 6), 10, "only what the bytes could hold");
    assert_eq!(preallocated_elements(3, 64 << 20, 6), 3, "an honest count is reserved exactly");
}
