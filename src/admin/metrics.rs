//! Node metrics rendered in the Prometheus text format. The counters,
//! histograms and gauges themselves live in `state::metrics`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::state::metrics::{Histogram, NodeMetrics, PartitionGauge, ShardMetrics, LATENCY_BUCKETS_US};

/// Render `histogram` as Prometheus `_bucket`/`_sum`/`_count` lines.
fn render_histogram(histogram: &Histogram, out: &mut String, name: &str, labels: &str) {
    let snapshot = histogram.snapshot();
    let mut cumulative = 0;
    for (index, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += snapshot.buckets[index];
        let seconds = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{seconds}\"}} {cumulative}");
    }
    cumulative += snapshot.buckets[LATENCY_BUCKETS_US.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", snapshot.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", snapshot.count);
}

/// A counter's name, help text and reader.
type Counter = (&'static str, &'static str, fn(&ShardMetrics) -> u64);
/// A gauge's name, help text and reader.
type Gauge = (&'static str, &'static str, fn(&ShardMetrics) -> i64);

/// Render the node's counters in the Prometheus text exposition format.
pub fn render(metrics: &NodeMetrics) -> String {
    let mut out = String::new();
    render_shard_counters(metrics, &mut out);
    render_latencies(metrics, &mut out);
    let _ = writeln!(out, "# HELP ringlog_connections Open client connections.\n# TYPE ringlog_connections gauge");
    let _ = writeln!(out, "ringlog_connections {}", metrics.connections.open());
    let _ = writeln!(
        out,
        "# HELP ringlog_tls_handshake_failures_total Connections closed because their TLS handshake failed.\n\
         # TYPE ringlog_tls_handshake_failures_total counter"
    );
    let failures = metrics.connections.tls_handshake_failures.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(out, "ringlog_tls_handshake_failures_total {failures}");
    let _ = writeln!(
        out,
        "# HELP ringlog_write_stalls_total Connections closed because their peer took none of their bytes \
         for limits.write_stall_timeout_ms.\n# TYPE ringlog_write_stalls_total counter"
    );
    let stalls = metrics.connections.write_stalls.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(out, "ringlog_write_stalls_total {stalls}");
    let (pooled, fresh) = crate::runtime::buffer_pool::takes();
    let _ = writeln!(
        out,
        "# HELP ringlog_buffer_pool_takes_total Buffers of 64 KiB and more taken through the shards' \
         buffer pools for requests and answers, over every shard: reused, or allocated fresh when none \
         fitted (limits.buffer_pool_bytes).\n\
         # TYPE ringlog_buffer_pool_takes_total counter"
    );
    let _ = writeln!(out, "ringlog_buffer_pool_takes_total{{source=\"pool\"}} {pooled}");
    let _ = writeln!(out, "ringlog_buffer_pool_takes_total{{source=\"fresh\"}} {fresh}");
    render_partitions(metrics, &mut out);
    render_kafka(metrics, &mut out);
    render_auth(metrics, &mut out);
    out
}

/// Client authentication outcomes (`[auth]`, docs/SECURITY.md).
fn render_auth(metrics: &NodeMetrics, out: &mut String) {
    let auth = &metrics.auth;
    for (name, help, counter) in [
        (
            "ringlog_auth_failures_total",
            "Failed authentications (native handshakes and admin API credentials).",
            &auth.failures,
        ),
        (
            "ringlog_auth_rate_limited_total",
            "Authentication attempts refused by the per-source failure limiter.",
            &auth.rate_limited,
        ),
        ("ringlog_auth_successes_total", "Successful native authentication handshakes.", &auth.successes),
        (
            "ringlog_auth_not_authorized_total",
            "Requests refused because the user's role does not allow them.",
            &auth.not_authorized,
        ),
    ] {
        let _ =
            writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", counter.load(Ordering::Relaxed));
    }
}

/// Kafka requests per API and the error codes answered per API.
fn render_kafka(metrics: &NodeMetrics, out: &mut String) {
    let name =
        |key: i16| kafka_protocol::messages::ApiKey::try_from(key).map_or("unknown".into(), |api| format!("{api:?}"));
    let _ = writeln!(out, "# HELP ringlog_kafka_requests_total Kafka requests per API.");
    let _ = writeln!(out, "# TYPE ringlog_kafka_requests_total counter");
    for (key, count) in metrics.kafka.requests() {
        let _ = writeln!(out, "ringlog_kafka_requests_total{{api=\"{}\"}} {count}", name(key));
    }
    let _ =
        writeln!(out, "# HELP ringlog_kafka_errors_total Kafka error codes answered per API (per topic or partition).");
    let _ = writeln!(out, "# TYPE ringlog_kafka_errors_total counter");
    for (key, code, count) in metrics.kafka.errors() {
        let _ = writeln!(out, "ringlog_kafka_errors_total{{api=\"{}\",code=\"{code}\"}} {count}", name(key));
    }
}

/// Per-shard counters and gauges.
fn render_shard_counters(metrics: &NodeMetrics, out: &mut String) {
    let counters: [Counter; 13] = [
        ("ringlog_produce_requests_total", "Produce requests executed", |m| m.produce_requests.load(Ordering::Relaxed)),
        ("ringlog_produce_records_total", "Records appended", |m| m.produce_records.load(Ordering::Relaxed)),
        ("ringlog_produce_bytes_total", "Batch bytes appended", |m| m.produce_bytes.load(Ordering::Relaxed)),
        ("ringlog_fetch_requests_total", "Fetch requests executed", |m| m.fetch_requests.load(Ordering::Relaxed)),
        ("ringlog_fetch_bytes_total", "Batch bytes fetched", |m| m.fetch_bytes.load(Ordering::Relaxed)),
        ("ringlog_fetch_records_total", "Records consumers advanced by", |m| m.fetch_records.load(Ordering::Relaxed)),
        ("ringlog_request_errors_total", "Requests answered with an error", |m| m.errors.load(Ordering::Relaxed)),
        ("ringlog_cross_shard_forwarded_total", "Requests forwarded to another shard", |m| {
            m.cross_shard_forwarded.load(Ordering::Relaxed)
        }),
        ("ringlog_fsyncs_total", "fdatasync calls on segment files", |m| m.fsyncs.load(Ordering::Relaxed)),
        (
            "ringlog_segment_read_bytes_total",
            "Bytes fetches read from segment files (read amplification: over fetch bytes)",
            |m| m.segment_read_bytes.load(Ordering::Relaxed),
        ),
        ("ringlog_read_ahead_hits_total", "Fetches answered by a disk read started ahead of them", |m| {
            m.read_ahead_hits.load(Ordering::Relaxed)
        }),
        ("ringlog_fetch_watch_rounds_total", "Looks a wait for news on a Kafka Fetch's partitions took", |m| {
            m.fetch_watch_rounds.load(Ordering::Relaxed)
        }),
        (
            "ringlog_recycled_segments_reused_total",
            "Segment rolls that wrote into a file retention kept instead of a new one",
            |m| m.recycled_segments_reused.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        for (shard, metrics) in metrics.shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", read(metrics));
        }
    }
    let gauges: [Gauge; 2] = [
        ("ringlog_cross_shard_in_flight", "Forwarded requests awaiting an answer (queue depth)", |m| {
            m.cross_shard_in_flight.load(Ordering::Relaxed)
        }),
        ("ringlog_fetch_watches", "Waits for news on a Kafka Fetch's partitions running on the shard", |m| {
            m.fetch_watches.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, read) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} gauge");
        for (shard, metrics) in metrics.shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", read(metrics));
        }
    }
}

/// Per-shard latency histograms.
fn render_latencies(metrics: &NodeMetrics, out: &mut String) {
    for (name, help, pick) in [
        ("ringlog_produce_latency_seconds", "Produce latency on the owning shard", 0),
        ("ringlog_fetch_latency_seconds", "Fetch latency on the owning shard", 1),
        ("ringlog_fsync_latency_seconds", "fdatasync latency of the shard's files", 2),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} histogram");
        for (shard, metrics) in metrics.shards.iter().enumerate() {
            let histogram = match pick {
                0 => &metrics.produce_latency,
                1 => &metrics.fetch_latency,
                _ => &*metrics.fsync_latency,
            };
            render_histogram(histogram, out, name, &format!("shard=\"{shard}\""));
        }
    }
}

/// Per-partition gauges from the shards' latest snapshots.
fn render_partitions(metrics: &NodeMetrics, out: &mut String) {
    let partitions = metrics.partitions();
    for (name, help, read) in [
        (
            "ringlog_partition_log_end_offset",
            "Next offset to assign",
            (|p| p.log_end_offset) as fn(&PartitionGauge) -> u64,
        ),
        ("ringlog_partition_log_start_offset", "First offset kept", |p| p.log_start_offset),
        ("ringlog_partition_high_watermark", "End of committed data", |p| p.high_watermark),
        ("ringlog_partition_size_bytes", "Bytes on disk", |p| p.size_bytes),
        ("ringlog_partition_fetched_bytes", "Batch bytes fetched by consumers since the partition opened", |p| {
            p.fetched_bytes
        }),
        ("ringlog_partition_failed", "1 when fail-stopped or fenced", |p| u64::from(p.failure.is_some())),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} gauge");
        for gauge in &partitions {
            let _ =
                writeln!(out, "{name}{{topic=\"{}\",partition=\"{}\"}} {}", gauge.topic, gauge.partition, read(gauge));
        }
    }
}

/// A follower metric: name, help, Prometheus type and reader.
type FollowerMetric = (&'static str, &'static str, &'static str, fn(&crate::state::progress::FollowerProgress) -> f64);

/// Per-follower replication metrics (on the leader).
pub fn render_replication(progress: &crate::state::progress::ReplicationProgress, out: &mut String) {
    let followers = progress.all();
    let gauges: [FollowerMetric; 10] = [
        ("ringlog_follower_lag_records", "Records the follower is behind", "gauge", |p| p.lag_records() as f64),
        ("ringlog_follower_lag_bytes", "Bytes the follower is behind (estimate)", "gauge", |p| p.lag_bytes() as f64),
        ("ringlog_follower_connected", "1 while a replication connection is open", "gauge", |p| {
            f64::from(u8::from(p.is_connected()))
        }),
        ("ringlog_follower_sent_bytes_total", "Compressed bytes sent to the follower", "counter", |p| {
            p.sent_bytes.load(Ordering::Relaxed) as f64
        }),
        ("ringlog_follower_sent_uncompressed_bytes_total", "Bytes sent before compression", "counter", |p| {
            p.sent_uncompressed_bytes.load(Ordering::Relaxed) as f64
        }),
        (
            "ringlog_follower_shared_answer_bytes_total",
            "Uncompressed bytes sent from an answer another follower was sent first",
            "counter",
            |p| p.shared_answer_bytes.load(Ordering::Relaxed) as f64,
        ),
        ("ringlog_follower_compression_ratio", "Uncompressed / compressed bytes sent", "gauge", |p| {
            let sent = p.sent_bytes.load(Ordering::Relaxed).max(1) as f64;
            p.sent_uncompressed_bytes.load(Ordering::Relaxed) as f64 / sent
        }),
        ("ringlog_follower_slow_disconnects_total", "Disconnects for slowness", "counter", |p| {
            p.slow_disconnects.load(Ordering::Relaxed) as f64
        }),
        (
            "ringlog_follower_topic_deletion_disconnects_total",
            "Disconnects because a topic was deleted while the connection was open",
            "counter",
            |p| p.topic_deletion_disconnects.load(Ordering::Relaxed) as f64,
        ),
        ("ringlog_follower_queue_bytes", "Answer bytes queued for the follower, not yet written", "gauge", |p| {
            p.queued_bytes.load(Ordering::Relaxed) as f64
        }),
    ];
    for (name, help, kind, read) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} {kind}");
        for (id, follower) in &followers {
            let _ = writeln!(out, "{name}{{follower=\"{id}\"}} {}", read(follower));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_cumulative_and_rendered() {
        let metrics = NodeMetrics::new(1, Arc::default());
        metrics.shards[0].produce_latency.observe(Duration::from_micros(70));
        metrics.shards[0].produce_latency.observe(Duration::from_secs(5));
        metrics.shards[0].produce_requests.fetch_add(2, Ordering::Relaxed);
        metrics.shards[0].fsync_latency.observe(Duration::from_micros(300));
        metrics.shards[0].recycled_segments_reused.store(3, Ordering::Relaxed);
        let text = render(&metrics);
        assert!(text.contains("ringlog_recycled_segments_reused_total{shard=\"0\"} 3"));
        assert!(text.contains("ringlog_produce_requests_total{shard=\"0\"} 2"));
        assert!(text.contains("ringlog_produce_latency_seconds_bucket{shard=\"0\",le=\"0.0001\"} 1"));
        assert!(text.contains("ringlog_produce_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"} 2"));
        assert!(text.contains("ringlog_produce_latency_seconds_count{shard=\"0\"} 2"));
        assert!(text.contains("ringlog_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.0005\"} 1"));
    }
}
