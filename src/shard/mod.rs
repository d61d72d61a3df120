//! Thread-per-core data shards: which shard owns a partition, the topic
//! registry shared by all shards, the cross-shard mesh, and the request
//! handler that runs on the owning shard.

pub mod faults;
pub mod handler;
pub mod mesh;
pub mod partition_replication;
pub mod partitions;
pub mod topics;

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
