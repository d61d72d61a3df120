//! What both directions share: frame constants, errors, API keys, error
//! codes, acks, topic settings and the replica-read partition records.

use thiserror::Error;

use super::layout::{record, Field};

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
    /// Size of `body` once decompressed.
    pub uncompressed_bytes: u32,
    /// Whole batches: an lz4 block, or stored raw (exactly `uncompressed_bytes` long).
    pub body: Vec<u8>,
}

record!(ReplicaFetchedPartition {
    index: u32 = "index",
    error: ErrorCode = "error code",
    high_watermark: Option<u64> = "high watermark",
    log_start_offset: u64 = "log start",
    log_end_offset: u64 = "log end",
    uncompressed_bytes: u32 = "uncompressed bytes",
    body: Vec<u8> = "batches",
});

/// Encoded size of a [`ReplicaFetchedPartition`] without its body.
pub const REPLICA_FETCHED_PARTITION_FIXED_BYTES: usize = ReplicaFetchedPartition::MIN_BYTES;
