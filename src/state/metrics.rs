//! The node's counters and gauges: written by the shards and the network
//! loops, read by `admin` (which renders them for Prometheus).

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use super::latency::{Histogram, LATENCY_BUCKETS_US};

/// Shared by all shards: open connections, for `limits.max_connections`.
#[derive(Debug, Default)]
pub struct ConnectionCount {
    pub(crate) open: AtomicUsize,
    /// Connections closed because their TLS handshake failed or timed out
    /// (a plaintext client on a TLS port, an untrusted certificate).
    pub tls_handshake_failures: AtomicU64,
    /// Connections closed because their peer took none of their bytes for
    /// `limits.write_stall_timeout_ms`.
    pub write_stalls: AtomicU64,
}

impl ConnectionCount {
    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One partition's gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionGauge {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Log start offset.
    pub log_start_offset: u64,
    /// Log end offset.
    pub log_end_offset: u64,
    /// High watermark.
    pub high_watermark: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Batch bytes consumers' fetches returned since the partition opened.
    pub fetched_bytes: u64,
    /// Fail-stop or fence reason, if any.
    pub failure: Option<String>,
}

/// Counters of one shard.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Produce requests executed here.
    pub produce_requests: AtomicU64,
    /// Records appended.
    pub produce_records: AtomicU64,
    /// Batch bytes appended.
    pub produce_bytes: AtomicU64,
    /// Fetch requests executed here.
    pub fetch_requests: AtomicU64,
    /// Batch bytes returned by fetches.
    pub fetch_bytes: AtomicU64,
    /// Records consumers advanced by (next offset minus asked offset).
    pub fetch_records: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
    /// Requests forwarded to other shards and not yet answered.
    pub cross_shard_in_flight: AtomicI64,
    /// Requests forwarded to other shards in total.
    pub cross_shard_forwarded: AtomicU64,
    /// Waits for news on a Kafka Fetch's partitions running here.
    pub fetch_watches: AtomicI64,
    /// Rounds those waits made (a look at their partitions, then a wait).
    pub fetch_watch_rounds: AtomicU64,
    /// fdatasyncs of this shard's partitions (published once a second).
    pub fsyncs: AtomicU64,
    /// Bytes reads took from this shard's segment files (published once a second).
    pub segment_read_bytes: AtomicU64,
    /// Reads answered by a read-ahead (published once a second).
    pub read_ahead_hits: AtomicU64,
    /// Rolls that reused a recycled segment file (published once a second).
    pub recycled_segments_reused: AtomicU64,
    /// Produce latency, as seen by the owning shard.
    pub produce_latency: Histogram,
    /// Fetch latency (long polls included).
    pub fetch_latency: Histogram,
    /// fdatasync latency of this shard's files (segments, indexes, offsets).
    pub fsync_latency: Arc<Histogram>,
    /// This shard's partitions, republished once a second.
    pub partitions: ArcSwap<Vec<PartitionGauge>>,
}

/// Metrics of the whole node.
#[derive(Debug)]
pub struct NodeMetrics {
    /// One entry per shard.
    pub shards: Vec<ShardMetrics>,
    /// Open client connections.
    pub connections: Arc<ConnectionCount>,
    /// Kafka requests and error codes.
    pub kafka: super::kafka_metrics::KafkaCounters,
    /// Client authentication outcomes (`[auth]`).
    pub auth: AuthCounters,
}

/// Client authentication outcomes, across listeners and the admin API.
#[derive(Debug, Default)]
pub struct AuthCounters {
    /// Handshakes (or admin API credentials) that failed: wrong password,
    /// unknown user, malformed message.
    pub failures: AtomicU64,
    /// Attempts refused at once by the per-source failure limiter.
    pub rate_limited: AtomicU64,
    /// Handshakes that succeeded.
    pub successes: AtomicU64,
    /// Requests refused because the user's role does not allow them.
    pub not_authorized: AtomicU64,
}

impl NodeMetrics {
    /// Metrics for `shards` shards.
    pub fn new(shards: usize, connections: Arc<ConnectionCount>) -> NodeMetrics {
        NodeMetrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            connections,
            kafka: Default::default(),
            auth: Default::default(),
        }
    }

    /// Every partition's latest gauges.
    pub fn partitions(&self) -> Vec<PartitionGauge> {
        let mut all: Vec<PartitionGauge> =
            self.shards.iter().flat_map(|shard| shard.partitions.load().iter().cloned().collect::<Vec<_>>()).collect();
        all.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        all
    }
}
