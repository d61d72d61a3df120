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

use thiserror::Error;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Bytes of a request header after the length prefix.
pub const REQUEST_HEADER_BYTES: usize = 8;
/// Bytes of a response header after the length prefix.
pub const RESPONSE_HEADER_BYTES: usize = 6;
/// The protocol version every frame carries; a peer of another version is
/// answered `unsupported_version`. 2: `ReplicaFetchMany` (key 18), and an
/// unestablished high watermark sent as `u64::MAX` (a version-1 follower
/// would take that for a real one and serve what is not committed).
pub const PROTOCOL_VERSION: u16 = 2;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The length prefix exceeds the limit (checked before allocating).
    #[error("frame of {frame_bytes} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Declared length.
        frame_bytes: u64,
        /// Configured limit.
        limit: usize,
    },
    /// The frame ended before a field did.
    #[error("frame truncated while reading {0}")]
    Truncated(&'static str),
    /// Unknown API key.
    #[error("unknown api key {0}")]
    UnknownApi(u16),
    /// API version not supported.
    #[error("unsupported api version {0}")]
    UnsupportedVersion(u16),
    /// A field has an impossible value.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// Operations of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ApiKey {
    /// Create a topic.
    CreateTopic = 1,
    /// Delete a topic.
    DeleteTopic = 2,
    /// List topics.
    ListTopics = 3,
    /// Per-partition offsets and sizes of a topic.
    DescribeTopic = 4,
    /// Append a batch to a partition.
    Produce = 5,
    /// Read batches from a partition.
    Fetch = 6,
    /// Log start, log end and high watermark of a partition.
    ListOffsets = 7,
    /// Commit a consumer-group offset.
    CommitOffset = 8,
    /// Read a consumer-group offset.
    FetchOffset = 9,
    /// Obtain a producer id for idempotent produce.
    InitProducer = 10,
    /// First offset at or after a timestamp.
    FindOffset = 11,
    /// Replication: a follower introduces itself (replication listener only).
    ReplicaHello = 12,
    /// Replication: the follower's proof of the cluster secret.
    ReplicaAuth = 13,
    /// Replication: read a partition from the leader (the read is the ack
    /// of everything before `offset`).
    ReplicaFetch = 14,
    /// Replication: where a leader epoch ends in the leader's log.
    EpochEndOffset = 15,
    /// Replication: every topic with its settings.
    TopicConfigs = 16,
    /// Replication: every consumer group's committed offset of a partition.
    GroupOffsets = 17,
    /// Replication: read many partitions in one long poll (the read is the
    /// ack of everything before each partition's offset).
    ReplicaFetchMany = 18,
}

impl ApiKey {
    /// Whether this is a replication API (served only on the replication listener).
    pub fn is_replication(self) -> bool {
        (self as u16) >= ApiKey::ReplicaHello as u16
    }
}

impl ApiKey {
    /// Parse a wire value.
    pub fn from_wire(value: u16) -> Result<ApiKey, ProtocolError> {
        Ok(match value {
            1 => ApiKey::CreateTopic,
            2 => ApiKey::DeleteTopic,
            3 => ApiKey::ListTopics,
            4 => ApiKey::DescribeTopic,
            5 => ApiKey::Produce,
            6 => ApiKey::Fetch,
            7 => ApiKey::ListOffsets,
            8 => ApiKey::CommitOffset,
            9 => ApiKey::FetchOffset,
            10 => ApiKey::InitProducer,
            11 => ApiKey::FindOffset,
            12 => ApiKey::ReplicaHello,
            13 => ApiKey::ReplicaAuth,
            14 => ApiKey::ReplicaFetch,
            15 => ApiKey::EpochEndOffset,
            16 => ApiKey::TopicConfigs,
            17 => ApiKey::GroupOffsets,
            18 => ApiKey::ReplicaFetchMany,
            other => return Err(ProtocolError::UnknownApi(other)),
        })
    }
}

/// Typed error codes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Success.
    None = 0,
    /// The topic does not exist.
    UnknownTopic = 1,
    /// The offset is outside the log, or a committed offset is.
    OffsetOutOfRange = 2,
    /// The partition is fail-stopped or fenced.
    StorageFailed = 3,
    /// No space left on the device.
    DiskFull = 4,
    /// A record or batch exceeds the limits.
    RecordTooLarge = 5,
    /// This node does not lead; the leader's address is in the body.
    NotLeader = 6,
    /// Fewer in-sync replicas than `min_insync_replicas`.
    NotEnoughReplicas = 7,
    /// The request is malformed.
    InvalidRequest = 8,
    /// The topic already exists.
    TopicExists = 9,
    /// API version not supported.
    UnsupportedVersion = 10,
    /// API key not known.
    UnknownApi = 11,
    /// Idempotent producer sequence gap or reordering.
    OutOfOrderSequence = 12,
    /// The node is shutting down.
    ShuttingDown = 13,
    /// The request timed out inside the node.
    Timeout = 14,
    /// Any other failure.
    Internal = 15,
    /// The high watermark is not re-established yet after a restart or a
    /// leader change (retriable): showing the value the node has would let
    /// a consumer see it fall.
    NotReady = 16,
}

impl ErrorCode {
    /// Parse a wire value (unknown values read as `Internal`).
    pub fn from_wire(value: u16) -> ErrorCode {
        match value {
            0 => ErrorCode::None,
            1 => ErrorCode::UnknownTopic,
            2 => ErrorCode::OffsetOutOfRange,
            3 => ErrorCode::StorageFailed,
            4 => ErrorCode::DiskFull,
            5 => ErrorCode::RecordTooLarge,
            6 => ErrorCode::NotLeader,
            7 => ErrorCode::NotEnoughReplicas,
            8 => ErrorCode::InvalidRequest,
            9 => ErrorCode::TopicExists,
            10 => ErrorCode::UnsupportedVersion,
            11 => ErrorCode::UnknownApi,
            12 => ErrorCode::OutOfOrderSequence,
            13 => ErrorCode::ShuttingDown,
            14 => ErrorCode::Timeout,
            16 => ErrorCode::NotReady,
            _ => ErrorCode::Internal,
        }
    }

    /// The spec's snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "none",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::DiskFull => "disk_full",
            ErrorCode::RecordTooLarge => "record_too_large",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::NotEnoughReplicas => "not_enough_replicas",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::TopicExists => "topic_exists",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownApi => "unknown_api",
            ErrorCode::OutOfOrderSequence => "out_of_order_sequence",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::NotReady => "not_ready",
        }
    }

    /// Whether a client should retry (possibly against another node).
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::ShuttingDown
                | ErrorCode::Timeout
                | ErrorCode::NotReady
        )
    }
}

/// Acknowledgement level of a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Acks {
    /// Answer after the batch is placed, before it is durable.
    None = 0,
    /// Answer when the leader has it durable under its policy.
    Leader = 1,
    /// Answer when every in-sync replica has it durable.
    All = 2,
}

/// Settings of a new topic (0 = node default / unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopicSettings {
    /// Number of partitions.
    pub partitions: u32,
    /// Retention by size per partition.
    pub retention_bytes: u64,
    /// Retention by age.
    pub retention_ms: u64,
    /// Segment size.
    pub segment_bytes: u64,
}

/// One partition of a [`Request::ReplicaFetchMany`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The follower's durable end: everything before it is durable there.
    pub offset: u64,
    /// The high watermark the follower knows: a higher one is news. `None`
    /// (`u64::MAX` on the wire): it knows none yet, so any established one is.
    pub high_watermark: Option<u64>,
}

/// Smallest encoding of a [`ReplicaFetchPartition`] (empty topic name).
pub const REPLICA_FETCH_PARTITION_MIN_BYTES: usize = 2 + 4 + 8 + 8;

/// One partition of a [`Response::ReplicaFetchMany`]: only partitions with
/// news are answered (data, a higher high watermark, the log start past the
/// offset, or an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchedPartition {
    /// Position of the partition in the request.
    pub index: u32,
    /// `None`, or why this partition cannot be read (the others can).
    pub error: ErrorCode,
    /// The leader's high watermark for the partition; `None` while the
    /// leader has not established it (`u64::MAX` on the wire).
    pub high_watermark: Option<u64>,
    /// Leader's log start.
    pub log_start_offset: u64,
    /// Leader's log end.
    pub log_end_offset: u64,
    /// Size of `body` once decompressed.
    pub uncompressed_bytes: u32,
    /// Whole batches: an lz4 block, or stored raw (exactly `uncompressed_bytes` long).
    pub body: Vec<u8>,
}

/// Encoded size of a [`ReplicaFetchedPartition`] without its body.
pub const REPLICA_FETCHED_PARTITION_FIXED_BYTES: usize = 4 + 2 + 8 + 8 + 8 + 4 + 4;

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
}

impl Request {
    /// The API key of this request.
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::CreateTopic { .. } => ApiKey::CreateTopic,
            Request::DeleteTopic { .. } => ApiKey::DeleteTopic,
            Request::ListTopics => ApiKey::ListTopics,
            Request::DescribeTopic { .. } => ApiKey::DescribeTopic,
            Request::Produce { .. } => ApiKey::Produce,
            Request::Fetch { .. } => ApiKey::Fetch,
            Request::ListOffsets { .. } => ApiKey::ListOffsets,
            Request::CommitOffset { .. } => ApiKey::CommitOffset,
            Request::FetchOffset { .. } => ApiKey::FetchOffset,
            Request::InitProducer => ApiKey::InitProducer,
            Request::FindOffset { .. } => ApiKey::FindOffset,
            Request::ReplicaHello { .. } => ApiKey::ReplicaHello,
            Request::ReplicaAuth { .. } => ApiKey::ReplicaAuth,
            Request::ReplicaFetch { .. } => ApiKey::ReplicaFetch,
            Request::EpochEndOffset { .. } => ApiKey::EpochEndOffset,
            Request::TopicConfigs => ApiKey::TopicConfigs,
            Request::GroupOffsets { .. } => ApiKey::GroupOffsets,
            Request::ReplicaFetchMany { .. } => ApiKey::ReplicaFetchMany,
        }
    }

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
            | Request::GroupOffsets { topic, partition } => Some((topic, *partition)),
            _ => None,
        }
    }
}

/// One partition in a describe answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionDescription {
    /// Partition number.
    pub partition: u32,
    /// First offset in the log.
    pub log_start_offset: u64,
    /// Next offset to assign.
    pub log_end_offset: u64,
    /// End of committed data; `None` while the node has not established
    /// it (after a restart or a leader change; `u64::MAX` on the wire).
    pub high_watermark: Option<u64>,
    /// Segment count.
    pub segments: u32,
    /// Bytes on disk.
    pub bytes: u64,
    /// Latest leader epoch.
    pub leader_epoch: u32,
}

/// State of a consumer group's committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommittedState {
    /// Nothing committed.
    None,
    /// Committed offset inside the log.
    Valid(u64),
    /// Committed offset outside the log: the consumer must reset explicitly.
    OutOfRange {
        /// Stored offset.
        committed: u64,
        /// Log start.
        log_start_offset: u64,
        /// Log end.
        log_end_offset: u64,
    },
}

impl From<crate::storage::offsets::OffsetLookup> for CommittedState {
    fn from(lookup: crate::storage::offsets::OffsetLookup) -> CommittedState {
        use crate::storage::offsets::OffsetLookup;
        match lookup {
            OffsetLookup::None => CommittedState::None,
            OffsetLookup::Valid(offset) => CommittedState::Valid(offset),
            OffsetLookup::OutOfRange { committed, log_start_offset, log_end_offset } => {
                CommittedState::OutOfRange { committed, log_start_offset, log_end_offset }
            }
        }
    }
}

/// A successful response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Topic created.
    CreateTopic,
    /// Topic deleted.
    DeleteTopic,
    /// (name, partitions) of every topic.
    ListTopics(Vec<(String, u32)>),
    /// Per-partition description.
    DescribeTopic(Vec<PartitionDescription>),
    /// Where the batch landed.
    Produce {
        /// First offset.
        base_offset: u64,
        /// Offset after the batch.
        next_offset: u64,
        /// True when the batch was a recognised retry.
        duplicate: bool,
    },
    /// Batches read.
    Fetch {
        /// High watermark when the fetch was answered.
        high_watermark: u64,
        /// Log start offset.
        log_start_offset: u64,
        /// Offset after the returned batches.
        next_offset: u64,
        /// Concatenated batches.
        batches: Vec<u8>,
    },
    /// Partition offsets.
    ListOffsets {
        /// Log start.
        log_start_offset: u64,
        /// Log end.
        log_end_offset: u64,
        /// High watermark.
        high_watermark: u64,
    },
    /// Offset committed.
    CommitOffset,
    /// Committed offset state.
    FetchOffset(CommittedState),
    /// Producer id assigned.
    InitProducer {
        /// The id.
        producer_id: u64,
    },
    /// Offset found (None: no record at or after the timestamp).
    FindOffset {
        /// The offset.
        offset: Option<u64>,
    },
    /// The leader's challenge.
    ReplicaChallenge {
        /// Random bytes the follower must sign.
        nonce: Vec<u8>,
    },
    /// The follower is authenticated.
    ReplicaAuth {
        /// The leader's node id.
        leader_id: u64,
        /// The leader's epoch.
        leader_epoch: u32,
    },
    /// Batches for a follower (lz4-compressed block).
    ReplicaFetch {
        /// The leader's high watermark for the partition; `None` while the
        /// leader has not established it (`u64::MAX` on the wire).
        high_watermark: Option<u64>,
        /// Leader's log start.
        log_start_offset: u64,
        /// Leader's log end.
        log_end_offset: u64,
        /// Leader's current epoch.
        leader_epoch: u32,
        /// Size of `compressed` once decompressed.
        uncompressed_bytes: u32,
        /// lz4 block of concatenated batches.
        compressed: Vec<u8>,
    },
    /// Where an epoch ends on the leader.
    EpochEndOffset {
        /// The largest leader epoch <= the one asked for (None: no such epoch).
        epoch: Option<u32>,
        /// Its end offset (the leader's log end for the current epoch).
        end_offset: u64,
        /// The leader's log start.
        log_start_offset: u64,
    },
    /// Every topic: (name, settings).
    TopicConfigs(Vec<(String, TopicSettings)>),
    /// (group, committed offset) of every group of a partition.
    GroupOffsets(Vec<(String, u64)>),
    /// The partitions of a multi-partition replica fetch that have news.
    ReplicaFetchMany {
        /// Leader's current epoch.
        leader_epoch: u32,
        /// The leader's data shards: the follower sends one request per
        /// leader shard (`owner_of` with this count), so each can wait.
        leader_shards: u16,
        /// Partitions with news, in request order.
        partitions: Vec<ReplicaFetchedPartition>,
    },
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Leader's client address for `not_leader`.
    pub leader: Option<String>,
}

// ---------------------------------------------------------------- encoding

/// Appends little-endian fields to a buffer.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Write into `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Writer<'a> {
        Writer { out }
    }
    fn u8(&mut self, value: u8) {
        self.out.push(value);
    }
    fn u16(&mut self, value: u16) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    fn string(&mut self, value: &str) {
        let length = value.len().min(u16::MAX as usize);
        self.u16(length as u16);
        self.out.extend_from_slice(&value.as_bytes()[..length]);
    }
    fn bytes(&mut self, value: &[u8]) {
        self.u32(value.len() as u32);
        self.out.extend_from_slice(value);
    }
}

/// Reads little-endian fields, bounds-checked.
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// Read from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }
    fn take(&mut self, length: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        let end = self.position.checked_add(length).ok_or(ProtocolError::Truncated(what))?;
        let slice = self.bytes.get(self.position..end).ok_or(ProtocolError::Truncated(what))?;
        self.position = end;
        Ok(slice)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let length = self.u16(what)? as usize;
        let bytes = self.take(length, what)?;
        std::str::from_utf8(bytes).map(str::to_string).map_err(|_| ProtocolError::Invalid("string is not UTF-8"))
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, ProtocolError> {
        let length = self.u32(what)? as usize;
        Ok(self.take(length, what)?.to_vec())
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }
    fn finish(&self) -> Result<(), ProtocolError> {
        if self.position == self.bytes.len() {
            Ok(())
        } else {
            Err(ProtocolError::Invalid("trailing bytes after the body"))
        }
    }
}

/// Length of the frame announced by a 4-byte prefix, checked against `limit`
/// before the caller allocates anything for it.
pub fn frame_length(prefix: [u8; 4], limit: usize) -> Result<usize, ProtocolError> {
    let frame_bytes = u32::from_le_bytes(prefix) as usize;
    if frame_bytes > limit {
        return Err(ProtocolError::FrameTooLarge { frame_bytes: frame_bytes as u64, limit });
    }
    if frame_bytes < REQUEST_HEADER_BYTES.min(RESPONSE_HEADER_BYTES) {
        return Err(ProtocolError::Truncated("frame header"));
    }
    Ok(frame_bytes)
}

fn finish_frame(out: &mut [u8], start: usize) {
    let frame_bytes = (out.len() - start - LENGTH_PREFIX_BYTES) as u32;
    out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&frame_bytes.to_le_bytes());
}

/// Append a complete request frame to `out`.
pub fn encode_request(correlation_id: u32, request: &Request, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut writer = Writer::new(out);
    writer.u16(request.api_key() as u16);
    writer.u16(PROTOCOL_VERSION);
    writer.u32(correlation_id);
    match request {
        Request::CreateTopic { name, settings } => {
            writer.string(name);
            writer.u32(settings.partitions);
            writer.u64(settings.retention_bytes);
            writer.u64(settings.retention_ms);
            writer.u64(settings.segment_bytes);
        }
        Request::DeleteTopic { name } | Request::DescribeTopic { name } => writer.string(name),
        Request::ListTopics | Request::InitProducer => {}
        Request::Produce { topic, partition, acks, batch } => {
            writer.string(topic);
            writer.u32(*partition);
            writer.u8(*acks as u8);
            writer.bytes(batch);
        }
        Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms } => {
            writer.string(topic);
            writer.u32(*partition);
            writer.u64(*offset);
            writer.u32(*max_bytes);
            writer.u32(*max_wait_ms);
        }
        Request::ListOffsets { topic, partition } => {
            writer.string(topic);
            writer.u32(*partition);
        }
        Request::CommitOffset { group, topic, partition, offset } => {
            writer.string(group);
            writer.string(topic);
            writer.u32(*partition);
            writer.u64(*offset);
        }
        Request::FetchOffset { group, topic, partition } => {
            writer.string(group);
            writer.string(topic);
            writer.u32(*partition);
        }
        Request::FindOffset { topic, partition, timestamp_ms } => {
            writer.string(topic);
            writer.u32(*partition);
            writer.u64(*timestamp_ms as u64);
        }
        Request::ReplicaHello { node_id } => writer.u64(*node_id),
        Request::ReplicaAuth { proof } => writer.bytes(proof),
        Request::ReplicaFetch { replica_id, topic, partition, offset, max_bytes, max_wait_ms } => {
            writer.u64(*replica_id);
            writer.string(topic);
            writer.u32(*partition);
            writer.u64(*offset);
            writer.u32(*max_bytes);
            writer.u32(*max_wait_ms);
        }
        Request::EpochEndOffset { topic, partition, epoch } => {
            writer.string(topic);
            writer.u32(*partition);
            writer.u32(*epoch);
        }
        Request::TopicConfigs => {}
        Request::GroupOffsets { topic, partition } => {
            writer.string(topic);
            writer.u32(*partition);
        }
        Request::ReplicaFetchMany { .. } => encode_replica_fetch_many(&mut writer, request),
    }
    finish_frame(out, start);
}

/// Encode a request like [`encode_request`], but leave a produce's batch out
/// of `out` and return it: `out` then the returned bytes are the same frame,
/// and the batch is written without being copied into it.
pub fn encode_request_split<'a>(correlation_id: u32, request: &'a Request, out: &mut Vec<u8>) -> &'a [u8] {
    let Request::Produce { topic, partition, acks, batch } = request else {
        encode_request(correlation_id, request, out);
        return &[];
    };
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut writer = Writer::new(out);
    writer.u16(ApiKey::Produce as u16);
    writer.u16(PROTOCOL_VERSION);
    writer.u32(correlation_id);
    writer.string(topic);
    writer.u32(*partition);
    writer.u8(*acks as u8);
    writer.u32(batch.len() as u32);
    let frame_bytes = (out.len() - start - LENGTH_PREFIX_BYTES + batch.len()) as u32;
    out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&frame_bytes.to_le_bytes());
    batch
}

fn acks_from_wire(value: u8) -> Result<Acks, ProtocolError> {
    match value {
        0 => Ok(Acks::None),
        1 => Ok(Acks::Leader),
        2 => Ok(Acks::All),
        _ => Err(ProtocolError::Invalid("acks must be 0, 1 or 2")),
    }
}

/// The fields of a produce frame before its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceHead {
    /// Frame header.
    pub header: RequestHeader,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Acknowledgement level.
    pub acks: Acks,
    /// Where the batch starts in the frame body.
    pub batch_start: usize,
    /// Batch length.
    pub batch_bytes: usize,
}

/// Parse a produce frame's fields up to its batch from the first bytes of
/// the frame body. `Ok(None)` when `head` is not a (version 1) produce frame
/// or too short to hold those fields; a wrong `frame_bytes` is an error.
pub fn decode_produce_head(head: &[u8], frame_bytes: usize) -> Result<Option<ProduceHead>, ProtocolError> {
    let Ok(header) = decode_request_header(head) else { return Ok(None) };
    if header.api_key != ApiKey::Produce as u16 || header.api_version != PROTOCOL_VERSION {
        return Ok(None);
    }
    let mut reader = Reader::new(&head[REQUEST_HEADER_BYTES..]);
    let fields = (|| -> Result<_, ProtocolError> {
        let topic = reader.string("topic")?;
        let partition = reader.u32("partition")?;
        let acks = reader.u8("acks")?;
        let batch_bytes = reader.u32("batch")? as usize;
        Ok((topic, partition, acks, batch_bytes))
    })();
    let Ok((topic, partition, acks, batch_bytes)) = fields else { return Ok(None) };
    let acks = acks_from_wire(acks)?;
    let batch_start = REQUEST_HEADER_BYTES + reader.position;
    match (batch_start + batch_bytes).cmp(&frame_bytes) {
        std::cmp::Ordering::Greater => Err(ProtocolError::Truncated("batch")),
        std::cmp::Ordering::Less => Err(ProtocolError::Invalid("trailing bytes after the body")),
        std::cmp::Ordering::Equal => Ok(Some(ProduceHead { header, topic, partition, acks, batch_start, batch_bytes })),
    }
}

/// Decode a request frame body it owns. A produce's batch (the frame's
/// last field, and nearly all of it) reuses the frame's allocation instead
/// of being copied into a new one.
pub fn decode_request_owned(mut frame: Vec<u8>) -> Result<(RequestHeader, Request), ProtocolError> {
    let Some(head) = decode_produce_head(&frame, frame.len())? else { return decode_request(&frame) };
    frame.drain(..head.batch_start);
    let request = Request::Produce { topic: head.topic, partition: head.partition, acks: head.acks, batch: frame };
    Ok((head.header, request))
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

/// Parse the request header from a frame body (after the length prefix).
/// Works even when the body is not understood, so errors can be answered
/// with the right correlation id.
pub fn decode_request_header(frame: &[u8]) -> Result<RequestHeader, ProtocolError> {
    let mut reader = Reader::new(frame);
    Ok(RequestHeader {
        api_key: reader.u16("api key")?,
        api_version: reader.u16("api version")?,
        correlation_id: reader.u32("correlation id")?,
    })
}

/// Decode a request frame body (after the length prefix).
pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request), ProtocolError> {
    let header = decode_request_header(frame)?;
    let api_key = ApiKey::from_wire(header.api_key)?;
    if header.api_version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion(header.api_version));
    }
    let mut reader = Reader::new(&frame[REQUEST_HEADER_BYTES..]);
    let request = match api_key {
        ApiKey::CreateTopic => Request::CreateTopic {
            name: reader.string("topic")?,
            settings: TopicSettings {
                partitions: reader.u32("partitions")?,
                retention_bytes: reader.u64("retention bytes")?,
                retention_ms: reader.u64("retention ms")?,
                segment_bytes: reader.u64("segment bytes")?,
            },
        },
        ApiKey::DeleteTopic => Request::DeleteTopic { name: reader.string("topic")? },
        ApiKey::ListTopics => Request::ListTopics,
        ApiKey::DescribeTopic => Request::DescribeTopic { name: reader.string("topic")? },
        ApiKey::Produce => Request::Produce {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            acks: acks_from_wire(reader.u8("acks")?)?,
            batch: reader.bytes("batch")?,
        },
        ApiKey::Fetch => Request::Fetch {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            offset: reader.u64("offset")?,
            max_bytes: reader.u32("max bytes")?,
            max_wait_ms: reader.u32("max wait")?,
        },
        ApiKey::ListOffsets => {
            Request::ListOffsets { topic: reader.string("topic")?, partition: reader.u32("partition")? }
        }
        ApiKey::CommitOffset => Request::CommitOffset {
            group: reader.string("group")?,
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            offset: reader.u64("offset")?,
        },
        ApiKey::FetchOffset => Request::FetchOffset {
            group: reader.string("group")?,
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
        },
        ApiKey::InitProducer => Request::InitProducer,
        ApiKey::FindOffset => Request::FindOffset {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            timestamp_ms: reader.u64("timestamp")? as i64,
        },
        ApiKey::ReplicaHello => Request::ReplicaHello { node_id: reader.u64("node id")? },
        ApiKey::ReplicaAuth => Request::ReplicaAuth { proof: reader.bytes("proof")? },
        ApiKey::ReplicaFetch => Request::ReplicaFetch {
            replica_id: reader.u64("replica id")?,
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            offset: reader.u64("offset")?,
            max_bytes: reader.u32("max bytes")?,
            max_wait_ms: reader.u32("max wait")?,
        },
        ApiKey::EpochEndOffset => Request::EpochEndOffset {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            epoch: reader.u32("epoch")?,
        },
        ApiKey::TopicConfigs => Request::TopicConfigs,
        ApiKey::GroupOffsets => {
            Request::GroupOffsets { topic: reader.string("topic")?, partition: reader.u32("partition")? }
        }
        ApiKey::ReplicaFetchMany => decode_replica_fetch_many(&mut reader)?,
    };
    reader.finish()?;
    Ok((header, request))
}

fn encode_replica_fetch_many(writer: &mut Writer<'_>, request: &Request) {
    let Request::ReplicaFetchMany { replica_id, max_wait_ms, max_bytes, partition_max_bytes, partitions } = request
    else {
        return;
    };
    writer.u64(*replica_id);
    writer.u32(*max_wait_ms);
    writer.u32(*max_bytes);
    writer.u32(*partition_max_bytes);
    writer.u32(partitions.len() as u32);
    for wanted in partitions {
        writer.string(&wanted.topic);
        writer.u32(wanted.partition);
        writer.u64(wanted.offset);
        writer.u64(wanted.high_watermark.unwrap_or(u64::MAX));
    }
}

fn encode_replica_fetched_many(writer: &mut Writer<'_>, response: &Response) {
    let Response::ReplicaFetchMany { leader_epoch, leader_shards, partitions } = response else {
        return;
    };
    writer.u32(*leader_epoch);
    writer.u16(*leader_shards);
    writer.u32(partitions.len() as u32);
    for fetched in partitions {
        writer.u32(fetched.index);
        writer.u16(fetched.error as u16);
        writer.u64(fetched.high_watermark.unwrap_or(u64::MAX));
        writer.u64(fetched.log_start_offset);
        writer.u64(fetched.log_end_offset);
        writer.u32(fetched.uncompressed_bytes);
        writer.bytes(&fetched.body);
    }
}

fn decode_replica_fetch_many(reader: &mut Reader<'_>) -> Result<Request, ProtocolError> {
    let replica_id = reader.u64("replica id")?;
    let max_wait_ms = reader.u32("max wait")?;
    let max_bytes = reader.u32("max bytes")?;
    let partition_max_bytes = reader.u32("partition max bytes")?;
    let count = reader.u32("partition count")? as usize;
    // A hostile count allocates no more than the frame could hold.
    let mut partitions = Vec::with_capacity(count.min(reader.remaining() / REPLICA_FETCH_PARTITION_MIN_BYTES));
    for _ in 0..count {
        partitions.push(ReplicaFetchPartition {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            offset: reader.u64("offset")?,
            high_watermark: Some(reader.u64("high watermark")?).filter(|&offset| offset != u64::MAX),
        });
    }
    Ok(Request::ReplicaFetchMany { replica_id, max_wait_ms, max_bytes, partition_max_bytes, partitions })
}

/// A per-partition error code must be one this side knows: read as
/// `internal`, an unknown one would not re-encode to what was sent.
fn known_error_code(value: u16) -> Result<ErrorCode, ProtocolError> {
    let code = ErrorCode::from_wire(value);
    match code as u16 == value {
        true => Ok(code),
        false => Err(ProtocolError::Invalid("unknown error code")),
    }
}

fn decode_replica_fetched_many(reader: &mut Reader<'_>) -> Result<Response, ProtocolError> {
    let leader_epoch = reader.u32("leader epoch")?;
    let leader_shards = reader.u16("leader shards")?;
    let count = reader.u32("partition count")? as usize;
    let mut partitions = Vec::with_capacity(count.min(reader.remaining() / REPLICA_FETCHED_PARTITION_FIXED_BYTES));
    for _ in 0..count {
        partitions.push(ReplicaFetchedPartition {
            index: reader.u32("index")?,
            error: known_error_code(reader.u16("error code")?)?,
            high_watermark: Some(reader.u64("high watermark")?).filter(|&offset| offset != u64::MAX),
            log_start_offset: reader.u64("log start")?,
            log_end_offset: reader.u64("log end")?,
            uncompressed_bytes: reader.u32("uncompressed bytes")?,
            body: reader.bytes("batches")?,
        });
    }
    Ok(Response::ReplicaFetchMany { leader_epoch, leader_shards, partitions })
}

/// Append a complete success response frame to `out`.
pub fn encode_response(correlation_id: u32, response: &Response, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut writer = Writer::new(out);
    writer.u32(correlation_id);
    writer.u16(ErrorCode::None as u16);
    match response {
        Response::CreateTopic | Response::DeleteTopic | Response::CommitOffset => {}
        Response::ListTopics(topics) => {
            writer.u32(topics.len() as u32);
            for (name, partitions) in topics {
                writer.string(name);
                writer.u32(*partitions);
            }
        }
        Response::DescribeTopic(partitions) => {
            writer.u32(partitions.len() as u32);
            for description in partitions {
                writer.u32(description.partition);
                writer.u64(description.log_start_offset);
                writer.u64(description.log_end_offset);
                writer.u64(description.high_watermark.unwrap_or(u64::MAX));
                writer.u32(description.segments);
                writer.u64(description.bytes);
                writer.u32(description.leader_epoch);
            }
        }
        Response::Produce { base_offset, next_offset, duplicate } => {
            writer.u64(*base_offset);
            writer.u64(*next_offset);
            writer.u8(u8::from(*duplicate));
        }
        Response::Fetch { high_watermark, log_start_offset, next_offset, batches } => {
            writer.u64(*high_watermark);
            writer.u64(*log_start_offset);
            writer.u64(*next_offset);
            writer.bytes(batches);
        }
        Response::ListOffsets { log_start_offset, log_end_offset, high_watermark } => {
            writer.u64(*log_start_offset);
            writer.u64(*log_end_offset);
            writer.u64(*high_watermark);
        }
        Response::FetchOffset(state) => match state {
            CommittedState::None => writer.u8(0),
            CommittedState::Valid(offset) => {
                writer.u8(1);
                writer.u64(*offset);
            }
            CommittedState::OutOfRange { committed, log_start_offset, log_end_offset } => {
                writer.u8(2);
                writer.u64(*committed);
                writer.u64(*log_start_offset);
                writer.u64(*log_end_offset);
            }
        },
        Response::InitProducer { producer_id } => writer.u64(*producer_id),
        Response::FindOffset { offset } => writer.u64(offset.unwrap_or(u64::MAX)),
        Response::ReplicaChallenge { nonce } => writer.bytes(nonce),
        Response::ReplicaAuth { leader_id, leader_epoch } => {
            writer.u64(*leader_id);
            writer.u32(*leader_epoch);
        }
        Response::ReplicaFetch {
            high_watermark,
            log_start_offset,
            log_end_offset,
            leader_epoch,
            uncompressed_bytes,
            compressed,
        } => {
            writer.u64(high_watermark.unwrap_or(u64::MAX));
            writer.u64(*log_start_offset);
            writer.u64(*log_end_offset);
            writer.u32(*leader_epoch);
            writer.u32(*uncompressed_bytes);
            writer.bytes(compressed);
        }
        Response::EpochEndOffset { epoch, end_offset, log_start_offset } => {
            writer.u8(u8::from(epoch.is_some()));
            writer.u32(epoch.unwrap_or(0));
            writer.u64(*end_offset);
            writer.u64(*log_start_offset);
        }
        Response::TopicConfigs(topics) => {
            writer.u32(topics.len() as u32);
            for (name, settings) in topics {
                writer.string(name);
                writer.u32(settings.partitions);
                writer.u64(settings.retention_bytes);
                writer.u64(settings.retention_ms);
                writer.u64(settings.segment_bytes);
            }
        }
        Response::GroupOffsets(groups) => {
            writer.u32(groups.len() as u32);
            for (group, offset) in groups {
                writer.string(group);
                writer.u64(*offset);
            }
        }
        Response::ReplicaFetchMany { .. } => encode_replica_fetched_many(&mut writer, response),
    }
    finish_frame(out, start);
}

/// Encode a success response like [`encode_response`], but leave a fetch's
/// trailing batches out of `out` and return them: the frame header in
/// `out` already counts them, so writing `out` then the returned bytes puts
/// the same frame on the wire without copying the batches (the largest
/// thing the node sends).
pub fn encode_response_split(correlation_id: u32, response: Response, out: &mut Vec<u8>) -> Vec<u8> {
    let start = out.len();
    let (head, body) = match response {
        Response::Fetch { high_watermark, log_start_offset, next_offset, batches } => {
            let head = Response::Fetch { high_watermark, log_start_offset, next_offset, batches: Vec::new() };
            (head, batches)
        }
        Response::ReplicaFetch {
            high_watermark,
            log_start_offset,
            log_end_offset,
            leader_epoch,
            uncompressed_bytes,
            compressed,
        } => {
            let head = Response::ReplicaFetch {
                high_watermark,
                log_start_offset,
                log_end_offset,
                leader_epoch,
                uncompressed_bytes,
                compressed: Vec::new(),
            };
            (head, compressed)
        }
        other => {
            encode_response(correlation_id, &other, out);
            return Vec::new();
        }
    };
    encode_response(correlation_id, &head, out);
    // The body is the last field: patch its length and the frame length.
    let length_at = out.len() - 4;
    out[length_at..].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let frame_bytes = (out.len() - start - LENGTH_PREFIX_BYTES + body.len()) as u32;
    out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&frame_bytes.to_le_bytes());
    body
}

/// Append a complete error response frame to `out`.
pub fn encode_error(correlation_id: u32, error: &ErrorResponse, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut writer = Writer::new(out);
    writer.u32(correlation_id);
    writer.u16(error.code as u16);
    writer.string(&error.message);
    writer.string(error.leader.as_deref().unwrap_or(""));
    finish_frame(out, start);
}

/// Decode a response frame body (after the length prefix) for a request of
/// kind `api_key`. Returns the correlation id and the outcome.
pub fn decode_response(api_key: ApiKey, frame: &[u8]) -> Result<(u32, Result<Response, ErrorResponse>), ProtocolError> {
    let (correlation_id, mut reader) = response_reader(frame)?;
    let code = ErrorCode::from_wire(reader.u16("error code")?);
    if code != ErrorCode::None {
        let message = reader.string("error message")?;
        let leader = reader.string("leader")?;
        reader.finish()?;
        let leader = (!leader.is_empty()).then_some(leader);
        return Ok((correlation_id, Err(ErrorResponse { code, message, leader })));
    }
    let response = decode_success(api_key, &mut reader)?;
    reader.finish()?;
    Ok((correlation_id, Ok(response)))
}

/// Decode a response frame body it owns. A fetch's batches (the frame's last
/// field, and nearly all of it) reuse the frame's allocation instead of
/// being copied out.
pub fn decode_response_owned(
    api_key: ApiKey,
    mut frame: Vec<u8>,
) -> Result<(u32, Result<Response, ErrorResponse>), ProtocolError> {
    if !matches!(api_key, ApiKey::Fetch | ApiKey::ReplicaFetch) {
        return decode_response(api_key, &frame);
    }
    let (correlation_id, mut reader) = response_reader(&frame)?;
    if reader.u16("error code")? != ErrorCode::None as u16 {
        return decode_response(api_key, &frame);
    }
    // Decode the fixed fields with an empty trailing field, then move the
    // real one out of the frame.
    let fixed = match api_key {
        ApiKey::Fetch => 3 * 8,
        _ => 3 * 8 + 2 * 4,
    };
    let start = reader.position + fixed + 4;
    let body_bytes = frame.get(start - 4..start).ok_or(ProtocolError::Truncated("response"))?;
    let length = u32::from_le_bytes(body_bytes.try_into().expect("4 bytes")) as usize;
    if frame.len() - start != length {
        return Err(if frame.len() - start < length {
            ProtocolError::Truncated("batches")
        } else {
            ProtocolError::Invalid("trailing bytes after the body")
        });
    }
    let mut head = frame[..start].to_vec();
    head[start - 4..start].copy_from_slice(&0u32.to_le_bytes());
    let (_, decoded) = decode_response(api_key, &head)?;
    frame.drain(..start);
    let response = match decoded {
        Ok(Response::Fetch { high_watermark, log_start_offset, next_offset, .. }) => {
            Response::Fetch { high_watermark, log_start_offset, next_offset, batches: frame }
        }
        Ok(Response::ReplicaFetch {
            high_watermark,
            log_start_offset,
            log_end_offset,
            leader_epoch,
            uncompressed_bytes,
            ..
        }) => Response::ReplicaFetch {
            high_watermark,
            log_start_offset,
            log_end_offset,
            leader_epoch,
            uncompressed_bytes,
            compressed: frame,
        },
        other => return Ok((correlation_id, other)),
    };
    Ok((correlation_id, Ok(response)))
}

/// Correlation id of a response frame body, and a reader positioned after it.
pub fn response_reader(frame: &[u8]) -> Result<(u32, Reader<'_>), ProtocolError> {
    let mut reader = Reader::new(frame);
    let correlation_id = reader.u32("correlation id")?;
    Ok((correlation_id, reader))
}

fn decode_success(api_key: ApiKey, reader: &mut Reader<'_>) -> Result<Response, ProtocolError> {
    Ok(match api_key {
        ApiKey::CreateTopic => Response::CreateTopic,
        ApiKey::DeleteTopic => Response::DeleteTopic,
        ApiKey::CommitOffset => Response::CommitOffset,
        ApiKey::ListTopics => {
            let count = reader.u32("topic count")?;
            let mut topics = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                topics.push((reader.string("topic")?, reader.u32("partitions")?));
            }
            Response::ListTopics(topics)
        }
        ApiKey::DescribeTopic => {
            let count = reader.u32("partition count")?;
            let mut partitions = Vec::with_capacity(count.min(10_000) as usize);
            for _ in 0..count {
                partitions.push(PartitionDescription {
                    partition: reader.u32("partition")?,
                    log_start_offset: reader.u64("log start")?,
                    log_end_offset: reader.u64("log end")?,
                    high_watermark: Some(reader.u64("high watermark")?).filter(|&offset| offset != u64::MAX),
                    segments: reader.u32("segments")?,
                    bytes: reader.u64("bytes")?,
                    leader_epoch: reader.u32("leader epoch")?,
                });
            }
            Response::DescribeTopic(partitions)
        }
        ApiKey::Produce => Response::Produce {
            base_offset: reader.u64("base offset")?,
            next_offset: reader.u64("next offset")?,
            duplicate: reader.u8("duplicate")? != 0,
        },
        ApiKey::Fetch => Response::Fetch {
            high_watermark: reader.u64("high watermark")?,
            log_start_offset: reader.u64("log start")?,
            next_offset: reader.u64("next offset")?,
            batches: reader.bytes("batches")?,
        },
        ApiKey::ListOffsets => Response::ListOffsets {
            log_start_offset: reader.u64("log start")?,
            log_end_offset: reader.u64("log end")?,
            high_watermark: reader.u64("high watermark")?,
        },
        ApiKey::FetchOffset => Response::FetchOffset(match reader.u8("state")? {
            0 => CommittedState::None,
            1 => CommittedState::Valid(reader.u64("offset")?),
            2 => CommittedState::OutOfRange {
                committed: reader.u64("committed")?,
                log_start_offset: reader.u64("log start")?,
                log_end_offset: reader.u64("log end")?,
            },
            _ => return Err(ProtocolError::Invalid("unknown committed-offset state")),
        }),
        ApiKey::InitProducer => Response::InitProducer { producer_id: reader.u64("producer id")? },
        ApiKey::FindOffset => {
            let offset = reader.u64("offset")?;
            Response::FindOffset { offset: (offset != u64::MAX).then_some(offset) }
        }
        ApiKey::ReplicaHello => Response::ReplicaChallenge { nonce: reader.bytes("nonce")? },
        ApiKey::ReplicaAuth => {
            Response::ReplicaAuth { leader_id: reader.u64("leader id")?, leader_epoch: reader.u32("leader epoch")? }
        }
        ApiKey::ReplicaFetch => Response::ReplicaFetch {
            high_watermark: Some(reader.u64("high watermark")?).filter(|&offset| offset != u64::MAX),
            log_start_offset: reader.u64("log start")?,
            log_end_offset: reader.u64("log end")?,
            leader_epoch: reader.u32("leader epoch")?,
            uncompressed_bytes: reader.u32("uncompressed bytes")?,
            compressed: reader.bytes("compressed batches")?,
        },
        ApiKey::EpochEndOffset => {
            let known = match reader.u8("epoch known")? {
                0 => false,
                1 => true,
                _ => return Err(ProtocolError::Invalid("epoch flag must be 0 or 1")),
            };
            let epoch = reader.u32("epoch")?;
            if !known && epoch != 0 {
                return Err(ProtocolError::Invalid("an unknown epoch must be sent as 0"));
            }
            Response::EpochEndOffset {
                epoch: known.then_some(epoch),
                end_offset: reader.u64("end offset")?,
                log_start_offset: reader.u64("log start")?,
            }
        }
        ApiKey::TopicConfigs => {
            let count = reader.u32("topic count")?;
            let mut topics = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                let name = reader.string("topic")?;
                let settings = TopicSettings {
                    partitions: reader.u32("partitions")?,
                    retention_bytes: reader.u64("retention bytes")?,
                    retention_ms: reader.u64("retention ms")?,
                    segment_bytes: reader.u64("segment bytes")?,
                };
                topics.push((name, settings));
            }
            Response::TopicConfigs(topics)
        }
        ApiKey::ReplicaFetchMany => decode_replica_fetched_many(reader)?,
        ApiKey::GroupOffsets => {
            let count = reader.u32("group count")?;
            let mut groups = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                groups.push((reader.string("group")?, reader.u64("offset")?));
            }
            Response::GroupOffsets(groups)
        }
    })
}

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
