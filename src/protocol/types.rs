//! What both directions share: frame constants, errors, API keys, error
//! codes, acks, topic settings and the replica-read partition records.

use thiserror::Error;

use super::field::{record, wire_enum, Field};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;
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

wire_enum! {
    /// Operations of the protocol.
    pub enum ApiKey: u16 {
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
        /// Authentication: the first SASL message (SCRAM-SHA-256 client-first);
        /// with `[auth] enabled`, a client connection's first request.
        SaslStart = 19,
        /// Authentication: the next SASL message (SCRAM client-final).
        SaslContinue = 20,
        /// Replication: a follower's copy of a partition's consumer-group
        /// commits; the call also acknowledges the commit version it stored.
        ReplicaGroupOffsets = 21,
        /// Replication: every topic's incarnation (a topic deleted and
        /// created again under its name is another one).
        TopicIncarnations = 22,
    }
}

impl ApiKey {
    /// Whether this is a replication API (served only on the replication listener).
    pub fn is_replication(self) -> bool {
        (ApiKey::ReplicaHello as u16..=ApiKey::ReplicaFetchMany as u16).contains(&(self as u16))
            || self == ApiKey::ReplicaGroupOffsets
            || self == ApiKey::TopicIncarnations
    }

    /// Parse a wire value.
    pub fn from_wire(value: u16) -> Result<ApiKey, ProtocolError> {
        ApiKey::from_known(value).ok_or(ProtocolError::UnknownApi(value))
    }
}

wire_enum! {
    /// Typed error codes on the wire.
    pub enum ErrorCode: u16 {
        /// Success.
        None = 0 => "none",
        /// The topic does not exist.
        UnknownTopic = 1 => "unknown_topic",
        /// The offset is outside the log, or a committed offset is.
        OffsetOutOfRange = 2 => "offset_out_of_range",
        /// The partition is fail-stopped or fenced.
        StorageFailed = 3 => "storage_failed",
        /// No space left on the device.
        DiskFull = 4 => "disk_full",
        /// A record or batch exceeds the limits.
        RecordTooLarge = 5 => "record_too_large",
        /// This node does not lead; the leader's address is in the body.
        NotLeader = 6 => "not_leader",
        /// Fewer in-sync replicas than `min_insync_replicas`.
        NotEnoughReplicas = 7 => "not_enough_replicas",
        /// The request is malformed.
        InvalidRequest = 8 => "invalid_request",
        /// The topic already exists.
        TopicExists = 9 => "topic_exists",
        /// API version not supported.
        UnsupportedVersion = 10 => "unsupported_version",
        /// API key not known.
        UnknownApi = 11 => "unknown_api",
        /// Idempotent producer sequence gap or reordering.
        OutOfOrderSequence = 12 => "out_of_order_sequence",
        /// The node is shutting down.
        ShuttingDown = 13 => "shutting_down",
        /// The request timed out inside the node.
        Timeout = 14 => "timeout",
        /// Any other failure.
        Internal = 15 => "internal",
        /// The high watermark is not re-established yet after a restart or a
        /// leader change (retriable): showing the value the node has would let
        /// a consumer see it fall.
        NotReady = 16 => "not_ready",
        /// The connection must authenticate before this request (`[auth]
        /// enabled`); the connection is closed after this answer.
        AuthenticationRequired = 17 => "authentication_required",
        /// The handshake failed (wrong password, unknown user, malformed
        /// message, or too many failures from this address); the connection
        /// is closed after this answer.
        AuthenticationFailed = 18 => "authentication_failed",
        /// The authenticated user's role does not allow this request.
        NotAuthorized = 19 => "not_authorized",
        /// A Kafka idempotent producer's batch from an epoch older than the
        /// newest the partition has seen from that producer (not retriable:
        /// the producer was superseded).
        ProducerFenced = 20 => "producer_fenced",
    }
}

impl ErrorCode {
    /// Parse a wire value (unknown values read as `Internal`).
    pub fn from_wire(value: u16) -> ErrorCode {
        ErrorCode::from_known(value).unwrap_or(ErrorCode::Internal)
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

wire_enum! {
    /// Acknowledgement level of a produce.
    pub enum Acks: u8 {
        /// Answer after the batch is placed, before it is durable.
        None = 0,
        /// Answer when the leader has it durable under its policy.
        Leader = 1,
        /// Answer when every in-sync replica has it durable.
        All = 2,
    }
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

record!(TopicSettings {
    partitions: u32 = "partitions",
    retention_bytes: u64 = "retention bytes",
    retention_ms: u64 = "retention ms",
    segment_bytes: u64 = "segment bytes",
});

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

record!(ReplicaFetchPartition {
    topic: String = "topic",
    partition: u32 = "partition",
    offset: u64 = "offset",
    high_watermark: Option<u64> = "high watermark",
});

/// Smallest encoding of a [`ReplicaFetchPartition`] (empty topic name).
pub const REPLICA_FETCH_PARTITION_MIN_BYTES: usize = ReplicaFetchPartition::MIN_BYTES;

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
    /// The partition's consumer-group commit version when the follower has
    /// not been told it yet (news: it copies the commits with
    /// `ReplicaGroupOffsets`); 0 when unchanged.
    pub commit_version: u64,
    /// Size of `body` once decompressed.
    pub uncompressed_bytes: u32,
    /// Whole batches: an lz4 block, or stored raw (exactly `uncompressed_bytes` long).
    /// Decoded from an owned frame, a slice of it ([`super::wire::Reader::over_frame`]).
    pub body: bytes::Bytes,
}

record!(ReplicaFetchedPartition {
    index: u32 = "index",
    error: ErrorCode = "error code",
    high_watermark: Option<u64> = "high watermark",
    log_start_offset: u64 = "log start",
    log_end_offset: u64 = "log end",
    commit_version: u64 = "commit version",
    uncompressed_bytes: u32 = "uncompressed bytes",
    body: bytes::Bytes = "batches",
});

/// Encoded size of a [`ReplicaFetchedPartition`] without its body.
pub const REPLICA_FETCHED_PARTITION_FIXED_BYTES: usize = ReplicaFetchedPartition::MIN_BYTES;
