//! `acks=all`: a produce is acknowledged once every in-sync replica has it
//! durable, and refused up front when the in-sync set is below
//! `cluster.min_insync_replicas`.

use std::time::{Duration, Instant};

use crate::config::NodeConfig;
use crate::protocol::{ErrorCode, ErrorResponse};
use crate::shard::context::ShardContext;
use crate::shard::partitions::OwnedPartition;
use crate::shard::wire_error::refusal;
use crate::state::cluster::ClusterState;

/// The precondition: enough in-sync replicas to accept a write.
pub fn check_min_in_sync(cluster: &ClusterState, config: &NodeConfig) -> Result<(), ErrorResponse> {
    if !cluster.is_clustered() {
        return Ok(());
    }
    let in_sync = 1 + cluster.view().in_sync_followers.len();
    let needed = config.cluster.min_insync_replicas;
    if in_sync < needed {
        return Err(refusal(
            ErrorCode::NotEnoughReplicas,
            format!("{in_sync} in-sync replicas, min_insync_replicas is {needed}"),
        ));
    }
    Ok(())
}

/// Wait until every in-sync replica has `next_offset` durable (the high
/// watermark passes it). Fails with `not_enough_replicas` when the set
/// shrinks below the minimum, `not_leader` when leadership is lost, and
/// `timeout` after twice `replica_lag_max_ms` (by then a stuck follower has
/// been dropped from the set, so this only fires if etcd is stuck).
pub async fn wait_for_replicas(
    context: &ShardContext,
    owned: &OwnedPartition,
    next_offset: u64,
) -> Result<(), ErrorResponse> {
    if !context.cluster.is_clustered() {
        return Ok(());
    }
    let limit = Duration::from_millis(context.config.cluster.replica_lag_max_ms * 2);
    let started = Instant::now();
    loop {
        let changed = owned.replication.changed.notified();
        context.write_epoch()?;
        check_min_in_sync(&context.cluster, &context.config)?;
        if super::high_watermark::advance(owned, &context.cluster) >= next_offset {
            return Ok(());
        }
        let remaining = limit.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(refusal(ErrorCode::Timeout, "in-sync replicas did not acknowledge in time"));
        }
        // Changes of the in-sync set come from another thread: re-check at
        // least every 20 ms as well as on every follower fetch.
        futures_lite::future::or(changed, crate::runtime::sleep(remaining.min(Duration::from_millis(20)))).await;
    }
}
