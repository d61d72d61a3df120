//! Requests: the [`Request`] body, its header, encode and decode.

use super::field::{record, Field, INVALID_ACKS};
use super::message::{messages, Message};
use super::types::*;
use super::wire::*;

/// A request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Create a topic.
    CreateTopic {
        /// Topic name.
        name: String,
        /// Settings.
        settings: TopicSettings,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// List topics.
    ListTopics,
    /// Describe a topic's partitions.
    DescribeTopic {
        /// Topic name.
        name: String,
    },
    /// Append a batch.
    Produce {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Acknowledgement level.
        acks: Acks,
        /// Encoded batch (storage batch format).
        batch: Vec<u8>,
    },
    /// Read batches.
    Fetch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// First offset wanted.
        offset: u64,
        /// Soft limit on returned bytes (at least one batch is returned).
        max_bytes: u32,
        /// Long-poll: wait up to this long for data at `offset`.
        max_wait_ms: u32,
    },
    /// Offsets of a partition.
    ListOffsets {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// Commit a consumer-group offset.
    CommitOffset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Next offset the group will consume.
        offset: u64,
    },
    /// Read a consumer-group offset.
    FetchOffset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// Obtain a producer id.
    InitProducer,
    /// First offset with timestamp >= `timestamp_ms`.
    FindOffset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Timestamp.
        timestamp_ms: i64,
    },
    /// A follower's first frame on a replication connection.
    ReplicaHello {
        /// The follower's node id.
        node_id: u64,
    },
    /// HMAC-SHA256(secret, nonce | node id) over the leader's challenge.
    ReplicaAuth {
        /// The proof.
        proof: Vec<u8>,
    },
    /// A follower's read of a partition, from its own log end.
    ReplicaFetch {
        /// The follower's node id (must match the authenticated one).
        replica_id: u64,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The follower's log end: everything before it is durable there.
        offset: u64,
        /// Soft limit on uncompressed bytes.
        max_bytes: u32,
        /// Long-poll bound.
        max_wait_ms: u32,
    },
    /// Where `epoch` ends in the leader's log (divergence check).
    EpochEndOffset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The follower's latest epoch.
        epoch: u32,
    },
    /// Every topic with its settings.
    TopicConfigs,
    /// Every topic's incarnation.
    TopicIncarnations,
    /// Every consumer group's committed offset of a partition.
    GroupOffsets {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// A follower's read of many partitions in one long poll.
    ReplicaFetchMany {
        /// The follower's node id (must match the authenticated one).
        replica_id: u64,
        /// Long-poll bound: answered as soon as any partition has news.
        max_wait_ms: u32,
        /// Soft limit on the answer's uncompressed batch bytes.
        max_bytes: u32,
        /// Soft limit on one partition's uncompressed batch bytes.
        partition_max_bytes: u32,
        /// The partitions, each with the follower's durable end.
        partitions: Vec<ReplicaFetchPartition>,
    },
    /// A follower's copy of a partition's consumer-group commits: the
    /// answer is every group's offset with the commit version it reflects,
    /// and asking acknowledges `stored_version`, the last version whose
    /// answer the follower stored durably (0: none yet).
    ReplicaGroupOffsets {
        /// The follower's node id (must match the authenticated one).
        replica_id: u64,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The commit version the follower has stored durably.
        stored_version: u64,
    },
    /// Start authenticating: the mechanism and its first message.
    SaslStart {
        /// `SCRAM-SHA-256`.
        mechanism: String,
        /// The client-first message.
        message: Vec<u8>,
    },
    /// Continue authenticating: the next message.
    SaslContinue {
        /// The client-final message.
        message: Vec<u8>,
    },
}

// Each request body's layout, in wire order: encode and decode both follow it.
messages!(Request {
    CreateTopic => CreateTopic { name: String = "topic", settings: TopicSettings = () },
    DeleteTopic => DeleteTopic { name: String = "topic" },
    ListTopics => ListTopics (),
    DescribeTopic => DescribeTopic { name: String = "topic" },
    Produce => Produce { topic: String = "topic", partition: u32 = "partition", acks: Acks = "acks"; batch = "batch" },
    Fetch => Fetch {
        topic: String = "topic",
        partition: u32 = "partition",
        offset: u64 = "offset",
        max_bytes: u32 = "max bytes",
        max_wait_ms: u32 = "max wait",
    },
    ListOffsets => ListOffsets { topic: String = "topic", partition: u32 = "partition" },
    CommitOffset => CommitOffset {
        group: String = "group",
        topic: String = "topic",
        partition: u32 = "partition",
        offset: u64 = "offset",
    },
    FetchOffset => FetchOffset { group: String = "group", topic: String = "topic", partition: u32 = "partition" },
    InitProducer => InitProducer (),
    FindOffset => FindOffset { topic: String = "topic", partition: u32 = "partition", timestamp_ms: i64 = "timestamp" },
    ReplicaHello => ReplicaHello { node_id: u64 = "node id" },
    ReplicaAuth => ReplicaAuth { proof: Vec<u8> = "proof" },
    ReplicaFetch => ReplicaFetch {
        replica_id: u64 = "replica id",
        topic: String = "topic",
        partition: u32 = "partition",
        offset: u64 = "offset",
        max_bytes: u32 = "max bytes",
        max_wait_ms: u32 = "max wait",
    },
    EpochEndOffset => EpochEndOffset { topic: String = "topic", partition: u32 = "partition", epoch: u32 = "epoch" },
    TopicConfigs => TopicConfigs (),
    TopicIncarnations => TopicIncarnations (),
    GroupOffsets => GroupOffsets { topic: String = "topic", partition: u32 = "partition" },
    ReplicaFetchMany => ReplicaFetchMany {
        replica_id: u64 = "replica id",
        max_wait_ms: u32 = "max wait",
        max_bytes: u32 = "max bytes",
        partition_max_bytes: u32 = "partition max bytes",
        partitions: Vec<ReplicaFetchPartition> = ("partition count", ()),
    },
    SaslStart => SaslStart { mechanism: String = "mechanism", message: Vec<u8> = "sasl message" },
    SaslContinue => SaslContinue { message: Vec<u8> = "sasl message" },
    ReplicaGroupOffsets => ReplicaGroupOffsets {
        replica_id: u64 = "replica id",
        topic: String = "topic",
        partition: u32 = "partition",
        stored_version: u64 = "stored version",
    },
});

impl Request {
    /// The (topic, partition) this request targets, if it targets one.
    pub fn partition(&self) -> Option<(&str, u32)> {
        match self {
            Request::Produce { topic, partition, .. }
            | Request::Fetch { topic, partition, .. }
            | Request::ListOffsets { topic, partition }
            | Request::CommitOffset { topic, partition, .. }
            | Request::FetchOffset { topic, partition, .. }
            | Request::FindOffset { topic, partition, .. }
            | Request::ReplicaFetch { topic, partition, .. }
            | Request::EpochEndOffset { topic, partition, .. }
            | Request::GroupOffsets { topic, partition }
            | Request::ReplicaGroupOffsets { topic, partition, .. } => Some((topic, *partition)),
            _ => None,
        }
    }
}

/// Header of a decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Operation.
    pub api_key: u16,
    /// Version.
    pub api_version: u16,
    /// Echoed in the response.
    pub correlation_id: u32,
}

record!(RequestHeader {
    api_key: u16 = "api key",
    api_version: u16 = "api version",
    correlation_id: u32 = "correlation id"
});

/// Bytes of a request header after the length prefix.
pub const REQUEST_HEADER_BYTES: usize = RequestHeader::MIN_BYTES;

/// Start a request frame in `out`: a length prefix to fill in, the header.
fn start_request(correlation_id: u32, request: &Request, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let header = RequestHeader { api_key: request.api_key() as u16, api_version: PROTOCOL_VERSION, correlation_id };
    header.encode(&mut Writer::new(out));
    start
}

/// Append a complete request frame to `out`.
pub fn encode_request(correlation_id: u32, request: &Request, out: &mut Vec<u8>) {
    let start = start_request(correlation_id, request, out);
    request.encode_body(&mut Writer::new(out));
    finish_frame(out, start, 0);
}

/// Encode a request like [`encode_request`], but leave a produce's batch out
/// of `out` and return it: `out` then the returned bytes are the same frame,
/// and the batch is written without being copied into it.
pub fn encode_request_split<'a>(correlation_id: u32, request: &'a Request, out: &mut Vec<u8>) -> &'a [u8] {
    let start = start_request(correlation_id, request, out);
    let trailing = request.encode_head(&mut Writer::new(out));
    finish_frame(out, start, trailing.len());
    trailing
}

/// The fields of a produce frame before its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceHead {
    /// Frame header.
    pub header: RequestHeader,
    /// The produce request, its batch still empty.
    pub request: Request,
    /// Where the batch starts in the frame body.
    pub batch_start: usize,
    /// Batch length.
    pub batch_bytes: usize,
}

impl ProduceHead {
    /// The request, with the batch read after the head.
    pub fn into_request(mut self, batch: Vec<u8>) -> (RequestHeader, Request) {
        assert_eq!(batch.len(), self.batch_bytes, "the batch is as long as the frame says");
        *self.request.trailing_mut().expect("a produce has a batch") = batch;
        (self.header, self.request)
    }
}

/// Parse a produce frame's fields up to its batch from the first bytes of
/// the frame body. `Ok(None)` when `head` is not a (current version)
/// produce frame, too short to hold those fields or one of them does not
/// decode (the whole frame's decode then says which); a wrong acks value
/// or `frame_bytes` is an error at once.
pub fn decode_produce_head(head: &[u8], frame_bytes: usize) -> Result<Option<ProduceHead>, ProtocolError> {
    let Ok(header) = decode_request_header(head) else { return Ok(None) };
    if header.api_key != ApiKey::Produce as u16 || header.api_version != PROTOCOL_VERSION {
        return Ok(None);
    }
    let mut reader = Reader::new(&head[REQUEST_HEADER_BYTES..]);
    let (request, trailing) = match Request::decode_head(ApiKey::Produce, &mut reader) {
        Ok(decoded) => decoded,
        Err(error) if error == INVALID_ACKS => return Err(error),
        // The fields may go on past `head`, or be invalid: the whole
        // frame's decode decides (and names the field).
        Err(_) => return Ok(None),
    };
    let trailing = trailing.expect("a produce ends in its batch");
    let batch_start = REQUEST_HEADER_BYTES + reader.position;
    trailing.check_ends_at(batch_start, frame_bytes)?;
    Ok(Some(ProduceHead { header, request, batch_start, batch_bytes: trailing.bytes }))
}

/// Decode a request frame body it owns. A produce's batch (the frame's
/// last field, and nearly all of it) reuses the frame's allocation instead
/// of being copied into a new one.
pub fn decode_request_owned(mut frame: Vec<u8>) -> Result<(RequestHeader, Request), ProtocolError> {
    let Some(head) = decode_produce_head(&frame, frame.len())? else { return decode_request(&frame) };
    frame.drain(..head.batch_start);
    Ok(head.into_request(frame))
}

/// Parse the request header from a frame body (after the length prefix).
/// Works even when the body is not understood, so errors can be answered
/// with the right correlation id.
pub fn decode_request_header(frame: &[u8]) -> Result<RequestHeader, ProtocolError> {
    RequestHeader::decode(&mut Reader::new(frame), ())
}

/// Decode a request frame body (after the length prefix).
pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request), ProtocolError> {
    let header = decode_request_header(frame)?;
    let api_key = ApiKey::from_wire(header.api_key)?;
    if header.api_version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion(header.api_version));
    }
    let mut reader = Reader::new(&frame[REQUEST_HEADER_BYTES..]);
    let request = Request::decode_body(api_key, &mut reader)?;
    reader.finish()?;
    Ok((header, request))
}
