//! Storage settings: durability policy, segment and index sizes, limits.

use serde::{Deserialize, Serialize};

/// When appended bytes are made durable with fdatasync (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Acknowledge only after fdatasync; concurrent appends share one fsync.
    #[default]
    Always,
    /// Acknowledge after the write reached the file; fdatasync every `fsync_interval_ms`.
    Interval,
    /// Acknowledge after the write reached the file; fdatasync left to the OS.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(FsyncPolicy::Always),
            "interval" => Ok(FsyncPolicy::Interval),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(format!("unknown fsync policy {other:?} (expected always|interval|never)")),
        }
    }
}

/// Per-partition storage settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// Interval between fdatasyncs under `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Roll the active segment when it would grow past this size.
    pub segment_bytes: u64,
    /// Roll the active segment when its first batch is older than this (0 = never).
    pub segment_ms: u64,
    /// Delete oldest sealed segments while the partition is larger than this (0 = unlimited).
    pub retention_bytes: u64,
    /// Delete sealed segments whose newest record is older than this (0 = unlimited).
    pub retention_ms: u64,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u32,
    /// Size of one aligned write buffer of a partition.
    pub write_buffer_bytes: usize,
    /// Write buffers a partition may fill before appends wait for the disk.
    /// `write_buffers_max`, its name before the `max_<what>` convention, is
    /// still read so that older config files load.
    #[serde(alias = "write_buffers_max")]
    pub max_write_buffers: usize,
    /// Space reserved ahead of the write position with fallocate.
    pub preallocate_bytes: u64,
    /// Largest accepted batch, header included.
    pub max_batch_bytes: usize,
    /// Idempotent producers remembered per partition (oldest evicted beyond).
    pub max_producers_per_partition: usize,
    /// Write-buffer memory one shard keeps; beyond it, idle partitions give
    /// their buffers back (keeping only the partial last block).
    pub write_buffer_budget_bytes: u64,
    /// Recent batches each partition keeps in memory for tail reads
    /// (followers, tailing consumers); 0 disables the tail cache.
    pub tail_cache_bytes: u64,
    /// Tail-cache memory one shard keeps over all its partitions.
    pub tail_cache_budget_bytes: u64,
    /// Most bytes a partition reads ahead from disk for a sequential reader
    /// (the next fetch's worth, started when a fetch is answered); 0 disables.
    pub read_ahead_bytes: u64,
    /// Read-ahead memory one shard reserves over all its partitions.
    pub read_ahead_budget_bytes: u64,
    /// Reads of `read_ahead_bytes` a partition keeps going ahead of a
    /// sequential reader, so the disk is busy while an answer is on its way.
    pub read_ahead_depth: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 50,
            segment_bytes: 1 << 30,
            segment_ms: 0,
            retention_bytes: 0,
            retention_ms: 0,
            index_interval_bytes: 4096,
            write_buffer_bytes: 1 << 20,
            max_write_buffers: 4,
            preallocate_bytes: 64 << 20,
            max_batch_bytes: 16 << 20,
            max_producers_per_partition: 10_000,
            write_buffer_budget_bytes: 64 << 20,
            tail_cache_bytes: 4 << 20,
            tail_cache_budget_bytes: 64 << 20,
            read_ahead_bytes: 4 << 20,
            read_ahead_budget_bytes: 64 << 20,
            read_ahead_depth: 2,
        }
    }
}

/// Largest segment: index entries store positions as u32.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;
/// Alignment of every direct write (and of write buffers).
pub const DIRECT_IO_ALIGNMENT: usize = 4096;

impl StorageConfig {
    /// Check the settings for values the engine cannot honour.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 4096 || self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(format!("segment_bytes must be in 4096..={MAX_SEGMENT_BYTES}, got {}", self.segment_bytes));
        }
        if self.write_buffer_bytes < DIRECT_IO_ALIGNMENT * 2 || self.write_buffer_bytes % DIRECT_IO_ALIGNMENT != 0 {
            return Err(format!(
                "write_buffer_bytes must be a multiple of {DIRECT_IO_ALIGNMENT} and at least {}, got {}",
                DIRECT_IO_ALIGNMENT * 2,
                self.write_buffer_bytes
            ));
        }
        if !(1..=64).contains(&self.max_write_buffers) {
            return Err(format!("max_write_buffers must be in 1..=64, got {}", self.max_write_buffers));
        }
        if !(1..=16).contains(&self.read_ahead_depth) {
            return Err(format!("read_ahead_depth must be in 1..=16, got {}", self.read_ahead_depth));
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be > 0".into());
        }
        if self.max_batch_bytes < 1024 || self.max_batch_bytes as u64 > self.segment_bytes {
            return Err(format!("max_batch_bytes must be in 1024..=segment_bytes, got {}", self.max_batch_bytes));
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval_ms == 0 {
            return Err("fsync_interval_ms must be > 0 with fsync = interval".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_write_buffers_loads_under_its_name_and_under_its_older_spelling() {
        let current: StorageConfig = toml::from_str("max_write_buffers = 7").unwrap();
        let older: StorageConfig = toml::from_str("write_buffers_max = 7").unwrap();
        assert_eq!((current.max_write_buffers, older.max_write_buffers), (7, 7));
        assert_eq!(current, older);
        let rendered = toml::to_string(&current).unwrap();
        assert!(rendered.contains("max_write_buffers = 7"), "written under its current name: {rendered}");
    }
}
