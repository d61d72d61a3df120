//! A shard's background loops: each wakes on a fixed interval, does one
//! bounded pass over the shard's partitions, and ends when the shard stops.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::replication::{high_watermark, leader};
use crate::shard::context::ShardContext;
use crate::shard::partitions::OwnedPartition;
use crate::state::cluster::Role;
use crate::state::metrics::PartitionGauge;
use crate::storage::retention::RetentionPolicy;

/// How often the gauges are republished.
const GAUGES_INTERVAL: Duration = Duration::from_secs(1);
/// How often the consumer groups' session and rebalance timeouts are
/// applied.
const GROUP_TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Republish this shard's partition gauges and fsync count once a second,
/// so readers on other threads see an immutable snapshot.
pub async fn publish_gauges(context: Rc<ShardContext>) {
    loop {
        let partitions = context.partitions.all();
        let gauges = partitions.iter().map(|owned| partition_gauge(&context, owned)).collect();
        let mut totals = crate::storage::LogStats::default();
        for owned in &partitions {
            let stats = owned.log.stats();
            totals.fsyncs += stats.fsyncs;
            totals.segment_read_bytes += stats.segment_read_bytes;
            totals.read_ahead_hits += stats.read_ahead_hits;
            totals.recycled_segments_reused += stats.recycled_segments_reused;
        }
        let metrics = context.shard_metrics();
        metrics.partitions.store(Arc::new(gauges));
        metrics.fsyncs.store(totals.fsyncs, Ordering::Relaxed);
        metrics.segment_read_bytes.store(totals.segment_read_bytes, Ordering::Relaxed);
        metrics.read_ahead_hits.store(totals.read_ahead_hits, Ordering::Relaxed);
        metrics.recycled_segments_reused.store(totals.recycled_segments_reused, Ordering::Relaxed);
        if !context.sleep_unless_stopping(GAUGES_INTERVAL).await {
            break;
        }
    }
}

/// One partition's gauge as `/metrics` and the console show it.
fn partition_gauge(context: &ShardContext, owned: &OwnedPartition) -> PartitionGauge {
    let snapshot = owned.log.snapshot();
    let failure =
        snapshot.failure.clone().or_else(|| snapshot.fence.as_ref().map(|fence| fence.to_error().to_string()));
    PartitionGauge {
        topic: owned.meta.name.clone(),
        partition: owned.partition,
        log_start_offset: snapshot.log_start_offset,
        log_end_offset: snapshot.log_end_offset,
        // What consumers were last shown while it is re-established.
        high_watermark: high_watermark::visible(owned, &context.cluster)
            .unwrap_or_else(|| owned.replication.served_high_watermark()),
        size_bytes: snapshot.size_bytes,
        fetched_bytes: owned.fetched_bytes.get(),
        failure,
    }
}

/// Apply each topic's retention (or the node default) to this shard's
/// partitions every `limits.retention_check_interval_ms`.
pub async fn enforce_retention(context: Rc<ShardContext>) {
    let interval = Duration::from_millis(context.config.limits.retention_check_interval_ms);
    while context.sleep_unless_stopping(interval).await {
        let now_ms = crate::runtime::clock::wall_ms();
        for owned in context.partitions.all() {
            let policy = retention_policy(&context, &owned);
            if policy.retention_bytes == 0 && policy.retention_ms == 0 {
                continue;
            }
            // Never past what the in-sync replicas hold (standalone: the
            // durable end), nor past what consumers here were shown.
            let high_watermark = high_watermark::visible(&owned, &context.cluster)
                .unwrap_or_else(|| owned.replication.served_high_watermark());
            if let Err(error) = owned.log.apply_retention_below(policy, now_ms, high_watermark).await {
                tracing::error!(target: "ringlog::storage", %error, dir = %owned.log.dir().display(), "retention failed");
            }
        }
    }
}

/// Apply the consumer groups' session and rebalance timeouts on this
/// shard every [`GROUP_TIMEOUT_CHECK_INTERVAL`] (a member is dropped at most that
/// much after its session lapsed). A node that may no longer write (it
/// stepped down) dismisses its groups, and one that stops closes them:
/// members parked in JoinGroup or SyncGroup are answered `NOT_COORDINATOR`
/// at once instead of holding their requests until the shutdown timeout.
pub async fn expire_group_sessions(context: Rc<ShardContext>) {
    while context.sleep_unless_stopping(GROUP_TIMEOUT_CHECK_INTERVAL).await {
        if context.groups.is_empty() {
            continue;
        }
        match context.write_epoch() {
            Ok(_) => context.groups.expire(crate::runtime::clock::monotonic_ms()),
            Err(_) => context.groups.dismiss(false),
        }
    }
    context.groups.dismiss(true);
}

/// The topic's retention, each limit falling back to the node default.
fn retention_policy(context: &ShardContext, owned: &OwnedPartition) -> RetentionPolicy {
    let defaults = &context.config.storage;
    let or_default = |topic: u64, default: u64| if topic > 0 { topic } else { default };
    RetentionPolicy {
        retention_bytes: or_default(owned.meta.retention_bytes, defaults.retention_bytes),
        retention_ms: or_default(owned.meta.retention_ms, defaults.retention_ms),
    }
}

/// While this node leads, publish every [`leader::PROGRESS_INTERVAL`] how
/// far each follower is on this shard's partitions (the control thread
/// turns it into ISR decisions); in any role, drop the answer bodies kept
/// for followers that no follower came for.
pub async fn publish_follower_progress(context: Rc<ShardContext>) {
    while context.sleep_unless_stopping(leader::PROGRESS_INTERVAL).await {
        // Whatever the role: a deposed leader's kept bodies go too.
        leader::expire_kept_answers(&context);
        if context.cluster.view().role == Role::Leader {
            leader::publish_follower_progress(&context);
        }
    }
}
