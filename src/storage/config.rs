//! Storage settings: durability policy, segment and index sizes, limits.

use serde::{Deserialize, Serialize};
use thiserror::Error;

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
    /// Segment files retention keeps per partition, zeroed, for the next
    /// rolls to write into instead of files it frees (0 = free every one).
    pub max_recycled_segments: u32,
    /// Below this share (percent) of free space on the file system,
    /// retention frees every expired file instead of keeping one.
    pub recycle_min_free_percent: u32,
    /// Memory each shard sets aside at start for direct-I/O buffers (write
    /// buffers, segment reads and read-ahead) and registers with io_uring.
    /// A buffer that does not fit in it comes from the heap: fresh pages
    /// to fault in and pin on every I/O, which halved produce and consume
    /// throughput with the 10 MiB the runtime sets aside by default
    /// (docs/BENCHMARKS.md, "Direct-I/O memory").
    pub io_memory_bytes: u64,
}

/// Default direct-I/O memory per shard: what the default write-buffer and
/// read-ahead budgets let one shard hold at once (64 MiB each).
pub const DEFAULT_IO_MEMORY_BYTES: u64 = 128 << 20;
/// The runtime never sets aside less (its allocator needs room for itself).
pub const MIN_IO_MEMORY_BYTES: u64 = 64 << 10;
/// Upper bound on `io_memory_bytes`: the kernel registers no single
/// buffer over 1 GiB with io_uring, and the runtime registers the arena as
/// one (a larger one would run unregistered).
pub const MAX_IO_MEMORY_BYTES: u64 = 1 << 30;

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
            max_recycled_segments: 1,
            recycle_min_free_percent: 5,
            io_memory_bytes: DEFAULT_IO_MEMORY_BYTES,
        }
    }
}

/// Keys read under an older name: (older name, current name). serde reads
/// them from files (`#[serde(alias)]`); the environment loader maps them.
const RENAMED_KEYS: [(&str, &str); 1] = [("write_buffers_max", "max_write_buffers")];

/// The current name of a `[storage]` key that may be spelled the older way.
pub fn current_key_name(key: &str) -> &str {
    RENAMED_KEYS.iter().find(|(older, _)| *older == key).map_or(key, |(_, current)| current)
}

/// The older name of a `[storage]` key, if it was renamed.
pub fn older_key_name(key: &str) -> Option<&'static str> {
    RENAMED_KEYS.iter().find(|(_, current)| *current == key).map(|(older, _)| *older)
}

/// Largest segment: index entries store positions as u32.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;
/// Alignment of every direct write (and of write buffers).
pub const DIRECT_IO_ALIGNMENT: usize = 4096;

/// A storage setting the engine cannot honour: which key, the value it
/// has, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A setting lies outside the range the engine supports.
    #[error("{key} must be in {min}..={max}, got {value}")]
    OutOfRange {
        /// The config key.
        key: &'static str,
        /// Its value.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A buffer size direct I/O cannot use.
    #[error("{key} must be a multiple of {alignment} and at least {min}, got {value}")]
    Unaligned {
        /// The config key.
        key: &'static str,
        /// Its value.
        value: u64,
        /// The alignment every direct write needs.
        alignment: u64,
        /// Smallest accepted value.
        min: u64,
    },
    /// A setting bounded by another setting.
    #[error("{key} must be in {min}..={bound_key}, got {value} ({bound_key} is {bound})")]
    AboveSetting {
        /// The config key.
        key: &'static str,
        /// Its value.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// The key that bounds it.
        bound_key: &'static str,
        /// That key's value.
        bound: u64,
    },
    /// `fsync = "interval"` with no period to fdatasync at.
    #[error("fsync_interval_ms must be > 0 with fsync = interval")]
    NoFsyncInterval,
}

/// `value` of `key` within `min..=max`.
fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::OutOfRange { key, value, min, max })
}

impl StorageConfig {
    /// Check the settings for values the engine cannot honour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("segment_bytes", self.segment_bytes, 4096, MAX_SEGMENT_BYTES)?;
        let alignment = DIRECT_IO_ALIGNMENT as u64;
        let write_buffer_bytes = self.write_buffer_bytes as u64;
        if write_buffer_bytes < alignment * 2 || write_buffer_bytes % alignment != 0 {
            let key = "write_buffer_bytes";
            return Err(ConfigError::Unaligned { key, value: write_buffer_bytes, alignment, min: alignment * 2 });
        }
        check_range("max_write_buffers", self.max_write_buffers as u64, 1, 64)?;
        check_range("read_ahead_depth", u64::from(self.read_ahead_depth), 1, 16)?;
        check_range("max_recycled_segments", u64::from(self.max_recycled_segments), 0, 16)?;
        check_range("recycle_min_free_percent", u64::from(self.recycle_min_free_percent), 0, 100)?;
        check_range("io_memory_bytes", self.io_memory_bytes, MIN_IO_MEMORY_BYTES, MAX_IO_MEMORY_BYTES)?;
        check_range("index_interval_bytes", u64::from(self.index_interval_bytes), 1, u64::from(u32::MAX))?;
        let max_batch_bytes = self.max_batch_bytes as u64;
        if max_batch_bytes < 1024 || max_batch_bytes > self.segment_bytes {
            return Err(ConfigError::AboveSetting {
                key: "max_batch_bytes",
                value: max_batch_bytes,
                min: 1024,
                bound_key: "segment_bytes",
                bound: self.segment_bytes,
            });
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval_ms == 0 {
            return Err(ConfigError::NoFsyncInterval);
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

    #[test]
    fn default_settings_are_valid() {
        assert_eq!(StorageConfig::default().validate(), Ok(()));
    }

    #[test]
    fn each_invalid_setting_is_named_with_its_value_and_what_it_must_be() {
        let cases = [
            (
                StorageConfig { segment_bytes: 100, ..Default::default() },
                "segment_bytes must be in 4096..=4294967295, got 100",
            ),
            (
                StorageConfig { write_buffer_bytes: 5000, ..Default::default() },
                "write_buffer_bytes must be a multiple of 4096 and at least 8192, got 5000",
            ),
            (
                StorageConfig { max_write_buffers: 0, ..Default::default() },
                "max_write_buffers must be in 1..=64, got 0",
            ),
            (
                StorageConfig { read_ahead_depth: 17, ..Default::default() },
                "read_ahead_depth must be in 1..=16, got 17",
            ),
            (
                StorageConfig { max_recycled_segments: 17, ..Default::default() },
                "max_recycled_segments must be in 0..=16, got 17",
            ),
            (
                StorageConfig { recycle_min_free_percent: 101, ..Default::default() },
                "recycle_min_free_percent must be in 0..=100, got 101",
            ),
            (
                StorageConfig { index_interval_bytes: 0, ..Default::default() },
                "index_interval_bytes must be in 1..=4294967295, got 0",
            ),
            (
                StorageConfig { segment_bytes: 8192, max_batch_bytes: 9000, ..Default::default() },
                "max_batch_bytes must be in 1024..=segment_bytes, got 9000 (segment_bytes is 8192)",
            ),
            (
                StorageConfig { io_memory_bytes: 4096, ..Default::default() },
                "io_memory_bytes must be in 65536..=1073741824, got 4096",
            ),
            (
                StorageConfig { fsync: FsyncPolicy::Interval, fsync_interval_ms: 0, ..Default::default() },
                "fsync_interval_ms must be > 0 with fsync = interval",
            ),
        ];
        for (config, message) in cases {
            assert_eq!(config.validate().unwrap_err().to_string(), message);
        }
        let error = StorageConfig { max_write_buffers: 65, ..Default::default() }.validate().unwrap_err();
        assert_eq!(error, ConfigError::OutOfRange { key: "max_write_buffers", value: 65, min: 1, max: 64 });
    }
}
