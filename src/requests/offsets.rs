//! Consumer-group offsets and offset lookups on one partition.

use crate::protocol::{CommittedState, Response};
use crate::replication::{acks, high_watermark};
use crate::shard::context::ShardContext;
use crate::shard::mesh::Outcome;
use crate::shard::partitions::OwnedPartition;
use crate::shard::wire_error::storage_error;
use crate::storage::offsets::OffsetLookup;

/// Store `group`'s position. The log refuses an offset beyond its end
/// (`offset_out_of_range`), checked under its offsets gate where no
/// truncation interleaves. A leader acknowledges only once every in-sync
/// follower stored the commit too (as `acks=all` does for records): a
/// commit acknowledged by the leader alone was lost with it.
pub async fn commit_offset(context: &ShardContext, owned: &OwnedPartition, group: &str, offset: u64) -> Outcome {
    acks::check_min_in_sync(&context.cluster, &context.config)?;
    owned.log.commit_offset(group, offset).await.map_err(storage_error)?;
    // No await since the store: an answer to a follower read at this
    // version holds the commit.
    let commit_version = owned.replication.note_commit();
    acks::wait_for_commit(context, owned, commit_version).await?;
    // Deposed while the followers copied: not ours to acknowledge.
    context.write_epoch()?;
    Ok(Response::CommitOffset)
}

/// Where `group` is: nothing, a valid offset, or latched out of range (§2).
pub fn fetch_offset(owned: &OwnedPartition, group: &str) -> Response {
    Response::FetchOffset(committed_state(owned.log.committed_offset(group)))
}

/// The first offset whose timestamp is at or after `timestamp_ms`, among
/// the records consumers may read: one at or past the high watermark is
/// "none" (as Kafka's ListOffsets answers). The log searches to its
/// durable end, and in a cluster that holds records no follower has yet; a
/// consumer sent there waits for records a new leader may never have.
/// The watermark is read after the search: it only rises, so the newest
/// value admits every record the search could have found readable.
pub async fn find_offset(context: &ShardContext, owned: &OwnedPartition, timestamp_ms: i64) -> Outcome {
    let offset = owned.log.find_offset_by_timestamp(timestamp_ms).await.map_err(storage_error)?;
    let high_watermark = high_watermark::for_consumers(owned, &context.cluster)?;
    Ok(Response::FindOffset { offset: offset.filter(|&offset| offset < high_watermark) })
}

/// Every group's committed offset (followers mirror them).
pub fn group_offsets(owned: &OwnedPartition) -> Response {
    Response::GroupOffsets(owned.log.committed_offsets())
}

/// Storage's answer to "where is this group?" in wire terms.
fn committed_state(lookup: OffsetLookup) -> CommittedState {
    match lookup {
        OffsetLookup::None => CommittedState::None,
        OffsetLookup::Valid(offset) => CommittedState::Valid(offset),
        OffsetLookup::OutOfRange { committed, log_start_offset, log_end_offset } => {
            CommittedState::OutOfRange { committed, log_start_offset, log_end_offset }
        }
    }
}
