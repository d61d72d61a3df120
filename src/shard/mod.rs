//! Thread-per-core data shards (floor 2): which shard owns a partition, the
//! partitions it owns, the topic registry shared by all shards, creating and
//! deleting topics on every shard, the cross-shard mesh, and the context
//! every layer above is handed. Requests are executed one floor up
//! (`crate::requests`).

pub mod commit_replication;
pub mod context;
pub mod faults;
pub mod groups;
pub mod mesh;
pub mod partition_replication;
pub mod partitions;
pub mod sent_answer;
pub mod topic_admin;
pub mod topics;
pub mod wire_error;

/// Index of a data shard (one glommio executor).
pub type ShardId = usize;

/// The shard that owns `partition` of `topic`: a stable hash, so ownership
/// does not change across restarts with the same shard count.
pub fn owner_of(topic: &str, partition: u32, shards: usize) -> ShardId {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(topic.as_bytes());
    hasher.update(&partition.to_le_bytes());
    (hasher.finalize() as usize) % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_spreads_partitions() {
        assert_eq!(owner_of("orders", 3, 4), owner_of("orders", 3, 4));
        let mut counts = [0usize; 4];
        for partition in 0..400 {
            counts[owner_of("orders", partition, 4)] += 1;
        }
        assert!(counts.iter().all(|&count| count > 60), "{counts:?}");
        assert_eq!(owner_of("x", 1, 1), 0);
    }
}
