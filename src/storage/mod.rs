//! The storage engine: checksummed batches in segment files, written with
//! direct I/O through io_uring, recovered after crashes, retained by size
//! and age. A partition's log is owned by one executor thread.

pub mod batch;
pub mod check;
pub mod config;
pub mod epochs;
pub mod error;
pub mod fence;
pub mod index;
pub mod io;
pub mod lock;
pub mod log;
pub mod markers;
pub mod offsets;
pub mod producers;
pub mod recovery;
pub mod retention;
pub mod scan;
pub mod segment;
pub mod tail_cache;
pub mod writer;

pub use config::{ConfigError, FsyncPolicy, StorageConfig};
pub use error::{StorageError, StorageResult};
pub use log::{
    reserved_read_ahead_bytes, AppendMode, AppendedOffsets, Durable, LogSnapshot, LogStats, PartitionLog, Placed,
    ReadBatches,
};
