//! The Kafka wire protocol (SPEC §10): frame length with its limit, the
//! request header, the APIs and versions this node implements, response
//! framing, and the RecordBatch v2 codec (`records`). Message bodies are
//! the `kafka-protocol` crate's, generated from Kafka's own schemas.
//!
//! A frame is `length i32 (big endian) | request header | body`; the
//! header's version depends on the API and its version (flexible versions
//! add tagged fields), which the crate knows.

pub mod records;
mod splice;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use thiserror::Error;

use self::splice::SplicingBuffer;
use crate::protocol::FramePieces;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The APIs this node implements, with their version ranges: exactly what
/// ApiVersions advertises, and nothing outside them is decoded.
pub const SUPPORTED_APIS: [(ApiKey, i16, i16); 19] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    // SASL (KIP-43, KIP-152). SaslHandshake v0 is advertised because
    // librdkafka enables SASL only when the broker lists it, but a v0
    // handshake (SASL bytes outside Kafka framing afterwards) is refused
    // with ILLEGAL_SASL_STATE: every current client sends v1 and
    // SaslAuthenticate.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Why a Kafka frame cannot be served; the connection is closed after it
/// (Kafka's framing has no error reply for a request it cannot read).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KafkaFrameError {
    /// The length prefix is negative or over the limit (checked before allocating).
    #[error("kafka frame of {frame_bytes} bytes is outside 1..={limit_bytes}")]
    FrameSize {
        /// Declared length.
        frame_bytes: i64,
        /// Configured limit.
        limit_bytes: usize,
    },
    /// The request header does not decode.
    #[error("kafka request header does not decode: {0}")]
    BadHeader(String),
    /// An API key this node does not implement.
    #[error("kafka api key {0} is not supported")]
    UnsupportedApi(i16),
    /// A version outside the advertised range (ApiVersions is answered instead).
    #[error("kafka api {api:?} version {version} is not supported")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for.
        version: i16,
    },
    /// The body does not decode at the header's version.
    #[error("kafka {api:?} v{version} body does not decode: {message}")]
    BadBody {
        /// The API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// The decoder's reason.
        message: String,
    },
}

/// The frame length from its prefix, checked against `limit_bytes`.
pub fn frame_length(prefix: [u8; LENGTH_PREFIX_BYTES], limit_bytes: usize) -> Result<usize, KafkaFrameError> {
    let declared = i32::from_be_bytes(prefix);
    usize::try_from(declared)
        .ok()
        .filter(|length| (1..=limit_bytes).contains(length))
        .ok_or(KafkaFrameError::FrameSize { frame_bytes: i64::from(declared), limit_bytes })
}

/// The advertised version range of `api`, if it is implemented.
pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.iter().find(|(key, _, _)| *key == api).map(|(_, min, max)| (*min, *max))
}

/// A request whose header decoded: its API, version, correlation id and
/// the undecoded body.
#[derive(Debug)]
pub struct KafkaRequest {
    /// API.
    pub api: ApiKey,
    /// Header fields (version, correlation id, client id).
    pub header: RequestHeader,
    /// The body after the header.
    pub body: Bytes,
}

/// Decode a frame's header. An ApiVersions request of a version this node
/// does not know is still returned: Kafka clients send their newest
/// ApiVersions first and expect an `UNSUPPORTED_VERSION` answer in v0
/// framing listing what is supported.
pub fn decode_request(frame: Bytes) -> Result<KafkaRequest, KafkaFrameError> {
    if frame.len() < 4 {
        return Err(KafkaFrameError::BadHeader("shorter than api key and version".into()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| KafkaFrameError::UnsupportedApi(key))?;
    let (min, max) = supported_versions(api).ok_or(KafkaFrameError::UnsupportedApi(key))?;
    let in_range = (min..=max).contains(&version);
    if !in_range && api != ApiKey::ApiVersions {
        return Err(KafkaFrameError::UnsupportedVersion { api, version });
    }
    // An unknown ApiVersions version is read with header v1: key, version,
    // correlation id and client id are laid out alike in every header
    // version, and the rest (tagged fields, the body) is not needed for
    // the v0 answer.
    let header_version = match in_range {
        true => api.request_header_version(version),
        false => 1,
    };
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, header_version)
        .map_err(|error| KafkaFrameError::BadHeader(error.to_string()))?;
    Ok(KafkaRequest { api, header: detached(header), body })
}

/// `header` with its client id and tagged fields copied out of the frame.
/// The header outlives the body (a Produce's answer, which needs it, waits
/// for its acks after the records were placed and the body dropped): as
/// slices of the frame, a few bytes kept each pipelined Produce's whole
/// frame, up to 17 MiB, in memory until its acks came.
fn detached(mut header: RequestHeader) -> RequestHeader {
    header.client_id = header.client_id.map(|id| StrBytes::from_string(id.to_string()));
    for value in header.unknown_tagged_fields.values_mut() {
        *value = Bytes::copy_from_slice(value);
    }
    header
}

/// `name` copied out of the frame it was decoded from, for an answer that
/// outlives the frame (see [`detached`]).
pub fn owned_topic_name(name: &TopicName) -> TopicName {
    TopicName(StrBytes::from_string(name.0.to_string()))
}

/// Decode a request body at the header's version.
pub fn decode_body<T: Decodable>(request: &KafkaRequest) -> Result<T, KafkaFrameError> {
    let mut body = request.body.clone();
    let version = request.header.request_api_version;
    let decoded = T::decode(&mut body, version).map_err(|error| KafkaFrameError::BadBody {
        api: request.api,
        version,
        message: error.to_string(),
    })?;
    if !body.is_empty() {
        return Err(KafkaFrameError::BadBody {
            api: request.api,
            version,
            message: format!("{} bytes after the body", body.len()),
        });
    }
    Ok(decoded)
}

/// Why a response could not be encoded (a bug or a value out of the
/// version's range); the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("kafka {api:?} v{version} response does not encode: {message}")]
pub struct EncodeError {
    /// The API.
    pub api: ApiKey,
    /// The version.
    pub version: i16,
    /// The encoder's reason.
    pub message: String,
}

/// A whole response frame (length, header, body) for `request`, encoded at
/// the request's version. ApiVersions answers always use response header
/// v0 (no tagged fields, even at v3: the client cannot know the version it
/// will get back), and an unsupported ApiVersions version is answered in v0.
pub fn encode_response<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<FramePieces, EncodeError> {
    encode_response_splicing(api, version, correlation_id, body, &[])
}

/// Encode `body` like [`encode_response`], leaving the byte strings in
/// `spliced` (a Fetch answer's records) out of the head: each is an insert
/// of the frame, written from where it is (`splice.rs`).
pub fn encode_response_splicing<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
    spliced: &[Bytes],
) -> Result<FramePieces, EncodeError> {
    let header_version = match api {
        ApiKey::ApiVersions => 0,
        api => api.response_header_version(version),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let failed = |error: &dyn std::fmt::Display| EncodeError { api, version, message: error.to_string() };
    // Sized once and encoded in place: a Fetch answer of megabytes grown
    // from a small buffer was copied at every doubling, then copied whole
    // into the frame (together a tenth of a Kafka-consuming node's CPU).
    let frame_bytes = LENGTH_PREFIX_BYTES
        + header.compute_size(header_version).map_err(|error| failed(&error))?
        + body.compute_size(version).map_err(|error| failed(&error))?;
    let spliced_bytes: usize = spliced.iter().map(Bytes::len).sum();
    // A pooled buffer for a large head (the writer gives it back once
    // sent): a fresh one was faulted in page by page.
    let mut head = crate::runtime::buffer_pool::take_empty(frame_bytes.saturating_sub(spliced_bytes));
    head.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut buffer = SplicingBuffer::new(head, spliced);
    header.encode(&mut buffer, header_version).map_err(|error| failed(&error))?;
    body.encode(&mut buffer, version).map_err(|error| failed(&error))?;
    let mut frame = buffer.finish();
    // The codec's own size computation; were it ever short, the head
    // grows and the frame is still right (its length is what was written).
    debug_assert_eq!(frame.len(), frame_bytes, "{api:?} v{version} encoded to the size computed for it");
    // Fetch answers are bounded far below this by `max_bytes`; a frame the
    // length prefix cannot state is refused rather than sent mislabelled.
    let length = i32::try_from(frame.len() - LENGTH_PREFIX_BYTES)
        .map_err(|_| failed(&format_args!("a {} byte response does not fit a frame", frame.len())))?;
    frame.head[..LENGTH_PREFIX_BYTES].copy_from_slice(&length.to_be_bytes());
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsResponse;

    fn request_frame(key: i16, version: i16, correlation_id: i32, rest: &[u8]) -> Bytes {
        let mut frame = Vec::new();
        frame.extend_from_slice(&key.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&correlation_id.to_be_bytes());
        frame.extend_from_slice(rest);
        Bytes::from(frame)
    }

    /// A frame's bytes that say when the last slice of them is dropped.
    struct Watched(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl AsRef<[u8]> for Watched {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_request_header_keeps_nothing_of_its_frame() {
        let freed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Produce v9 (flexible: header v2): client id "client", one tagged field.
        let mut rest = Vec::new();
        rest.extend_from_slice(&6i16.to_be_bytes());
        rest.extend_from_slice(b"client");
        rest.extend_from_slice(&[1, 0, 2, 0xab, 0xcd]);
        rest.extend_from_slice(&[0u8; 64]);
        let frame = request_frame(0, 9, 3, &rest);
        let watched = Bytes::from_owner(Watched(frame.to_vec(), std::sync::Arc::clone(&freed)));
        let mut request = decode_request(watched).unwrap();
        assert_eq!(request.header.client_id.as_deref(), Some("client"));
        assert_eq!(request.header.unknown_tagged_fields.get(&0).map(|value| &value[..]), Some(&[0xab, 0xcd][..]));
        request.body = Bytes::new();
        assert!(freed.load(std::sync::atomic::Ordering::SeqCst), "the header alone does not keep the frame");
        assert_eq!(request.header.client_id.as_deref(), Some("client"), "and still says what it said");
        let freed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let frame = Bytes::from_owner(Watched(b"topic-name".to_vec(), std::sync::Arc::clone(&freed)));
        let name = owned_topic_name(&TopicName(StrBytes::from_utf8(frame).unwrap()));
        assert!(freed.load(std::sync::atomic::Ordering::SeqCst), "an owned name does not keep the frame");
        assert_eq!(&*name.0, "topic-name");
    }

    #[test]
    fn negative_zero_and_oversized_lengths_are_refused() {
        assert!(frame_length((-1i32).to_be_bytes(), 100).is_err());
        assert!(frame_length(0i32.to_be_bytes(), 100).is_err());
        assert!(frame_length(101i32.to_be_bytes(), 100).is_err());
        assert_eq!(frame_length(100i32.to_be_bytes(), 100), Ok(100));
    }

    #[test]
    fn unknown_api_and_unsupported_version_are_refused() {
        // AddPartitionsToTxn (24): transactions are not implemented.
        let frame = request_frame(24, 2, 1, &[0xff, 0xff]);
        assert_eq!(decode_request(frame).unwrap_err(), KafkaFrameError::UnsupportedApi(24));
        let frame = request_frame(0, 99, 1, &[0xff, 0xff]);
        assert!(matches!(decode_request(frame).unwrap_err(), KafkaFrameError::UnsupportedVersion { .. }));
    }

    #[test]
    fn newer_api_versions_request_still_decodes_for_the_v0_answer() {
        // v9 is newer than any we know; the client id (nullable string -1)
        // follows the correlation id.
        let request = decode_request(request_frame(18, 9, 77, &[0xff, 0xff])).unwrap();
        assert_eq!(request.api, ApiKey::ApiVersions);
        assert_eq!(request.header.correlation_id, 77);
    }

    #[test]
    fn api_versions_v3_response_header_has_no_tagged_fields() {
        let body = ApiVersionsResponse::default();
        let frame = encode_response(ApiKey::ApiVersions, 3, 5, &body).unwrap().head;
        // length | correlation id | error code: no tagged-field byte between.
        assert_eq!(&frame[4..8], &5i32.to_be_bytes());
        assert_eq!(&frame[8..10], &0i16.to_be_bytes());
    }

    #[test]
    fn a_large_answer_is_encoded_into_a_pooled_buffer() {
        use crate::runtime::buffer_pool;
        use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
        let records = Bytes::from(vec![7u8; 200_000]);
        let partition = PartitionData::default().with_records(Some(records));
        let topic = FetchableTopicResponse::default().with_partitions(vec![partition]);
        let body = FetchResponse::default().with_responses(vec![topic]);
        // Above the ~200 KB frame, within twice that.
        const POOLED_BYTES: usize = 256 << 10;
        buffer_pool::set_limit_bytes(POOLED_BYTES);
        buffer_pool::give_back(vec![1u8; POOLED_BYTES]);
        let frame = encode_response(ApiKey::Fetch, 12, 9, &body).unwrap().head;
        assert_eq!(frame.capacity(), POOLED_BYTES, "encoded into the pooled buffer");
        let length = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length + 4, frame.len(), "the frame is what was encoded, nothing of the buffer's past");
        assert_eq!(&frame[4..8], &9i32.to_be_bytes());
        // Header v1: correlation id, then an empty tagged-field section.
        let mut encoded = Bytes::copy_from_slice(&frame[9..]);
        let decoded = <FetchResponse as kafka_protocol::protocol::Decodable>::decode(&mut encoded, 12).unwrap();
        assert_eq!(decoded, body, "the records are whole");
        buffer_pool::set_limit_bytes(0);
    }

    #[test]
    fn spliced_records_stay_out_of_the_head_and_the_frame_decodes_whole() {
        use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
        let records: Vec<Bytes> = (0..3u8).map(|index| Bytes::from(vec![index; 100_000])).collect();
        let partitions = records.iter().map(|bytes| PartitionData::default().with_records(Some(bytes.clone())));
        let topic = FetchableTopicResponse::default().with_partitions(partitions.collect());
        let body = FetchResponse::default().with_responses(vec![topic]);
        // The last partition's records are not chosen: copied.
        let frame = encode_response_splicing(ApiKey::Fetch, 12, 3, &body, &records[..2]).unwrap();
        assert_eq!(frame.inserts.len(), 2);
        for ((_, inserted), chosen) in frame.inserts.iter().zip(&records) {
            assert_eq!(inserted.as_ptr(), chosen.as_ptr(), "written from where they are");
        }
        assert!(frame.head.len() < 101_000, "head of {} bytes holds only the unchosen records", frame.head.len());
        let whole: Vec<u8> = frame.pieces().flatten().copied().collect();
        let length = i32::from_be_bytes(whole[..4].try_into().unwrap()) as usize;
        assert_eq!(length + 4, whole.len(), "the length counts the inserts");
        let mut encoded = Bytes::copy_from_slice(&whole[9..]);
        let decoded = <FetchResponse as kafka_protocol::protocol::Decodable>::decode(&mut encoded, 12).unwrap();
        assert_eq!(decoded, body);
    }
}
