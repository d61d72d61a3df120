//! Typed storage errors, each with the context (path, offset, position)
//! an operator needs to act on it.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::batch::BatchError;
use super::config::ConfigError;

/// Errors of the storage engine.
#[derive(Debug, Error)]
pub enum StorageError {
    /// An I/O operation failed outside the append path.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// File or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The partition is fail-stopped after a write or fsync error (spec §4).
    #[error("storage_failed: partition {partition} is fail-stopped: {cause}")]
    StorageFailed {
        /// Partition directory.
        partition: PathBuf,
        /// The first failure, with file and errno.
        cause: String,
    },
    /// No space left; nothing acknowledged was damaged and appends may succeed later.
    #[error("disk_full: no space left writing {path}")]
    DiskFull {
        /// File that could not grow.
        path: PathBuf,
    },
    /// The partition found corruption it will not repair on its own.
    #[error("partition fenced: corruption in {path} at position {position} (offset {offset}): {reason}")]
    Fenced {
        /// Segment file.
        path: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// Offset expected at that position.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A batch given to append is malformed.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// A read or truncate asked for an offset outside the log.
    #[error("offset_out_of_range: offset {offset} outside [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// Requested offset.
        offset: u64,
        /// First offset in the log.
        log_start_offset: u64,
        /// Next offset to be assigned.
        log_end_offset: u64,
    },
    /// Another process holds the data directory.
    #[error("data directory {path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A setting is out of range.
    #[error("invalid storage config: {0}")]
    Config(#[from] ConfigError),
    /// A consumer-group name is empty, too long or has control characters.
    #[error("invalid consumer group: {0}")]
    InvalidGroup(String),
    /// An idempotent producer skipped or reordered sequence numbers.
    #[error("out_of_order_sequence: producer {producer_id} sent sequence {received}, expected {expected}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: u64,
        /// Sequence the partition expects next.
        expected: u32,
        /// Sequence received.
        received: u32,
    },
    /// A Kafka producer's batch from an epoch older than the partition's
    /// newest for that producer (`storage::producers::KafkaProducer`).
    #[error("producer_fenced: producer {kafka_producer_id} sent epoch {received_epoch}, the log is at epoch {current_epoch}")]
    ProducerFenced {
        /// The Kafka producer id.
        kafka_producer_id: u64,
        /// Its newest epoch in this partition.
        current_epoch: u16,
        /// The epoch of the refused batch.
        received_epoch: u16,
    },
    /// The partition was closed.
    #[error("partition {0} is closed")]
    Closed(PathBuf),
}

impl StorageError {
    /// Wrap an I/O error with its operation and path.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StorageError {
        StorageError::Io { operation, path: path.into(), source }
    }
}

/// Result alias for storage operations.
pub type StorageResult<T> = Result<T, StorageError>;

/// True when the error means the device is out of space.
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
