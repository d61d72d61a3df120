//! The partition's high watermark as the replication layer sees it, from
//! the partition's replication state, its durable end and the cluster view:
//! what `acks=all` waits for, and what consumers and followers are shown.

use crate::protocol::{ErrorCode, ErrorResponse};
use crate::shard::partitions::OwnedPartition;
use crate::shard::wire_error::refusal;
use crate::state::cluster::ClusterState;

/// Recompute the high watermark (what `acks=all` waits for), beginning a
/// leadership term when this is the first look in a new epoch. Standalone:
/// the durable end. Leader: the minimum over the in-sync set. Follower:
/// what the leader last said, capped by what this node has durable.
pub fn advance(owned: &OwnedPartition, cluster: &ClusterState) -> u64 {
    let durable = owned.log.snapshot().durable_end_offset;
    let view = cluster.view();
    owned.replication.advance_high_watermark(view.role, view.leader_epoch, durable, &view.in_sync_followers)
}

/// The high watermark consumers may see, `None` until this node knows one
/// that covers everything shown before (after a restart, or at the start of
/// a leadership term): see `PartitionReplication::visible_high_watermark`.
pub fn visible(owned: &OwnedPartition, cluster: &ClusterState) -> Option<u64> {
    let durable = owned.log.snapshot().durable_end_offset;
    let view = cluster.view();
    owned.replication.visible_high_watermark(view.role, view.leader_epoch, durable, &view.in_sync_followers)
}

/// [`visible`], or the retriable `not_ready` refusal.
pub fn for_consumers(owned: &OwnedPartition, cluster: &ClusterState) -> Result<u64, ErrorResponse> {
    visible(owned, cluster).ok_or_else(|| {
        refusal(
            ErrorCode::NotReady,
            "the high watermark is not re-established yet after a restart or a leader change; retry",
        )
    })
}
