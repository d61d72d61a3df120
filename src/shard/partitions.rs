//! The partitions one shard owns: only this shard's executor touches them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use super::partition_replication::PartitionReplication;
use super::topics::TopicMeta;
use super::{owner_of, ShardId};
use crate::storage::{PartitionLog, StorageConfig, StorageResult};

/// One owned partition.
pub struct OwnedPartition {
    /// Its number within its topic.
    pub partition: u32,
    /// Its log.
    pub log: PartitionLog,
    /// Settings of its topic.
    pub meta: std::sync::Arc<TopicMeta>,
    /// Follower positions and high watermark.
    pub replication: PartitionReplication,
    /// Batch bytes consumers' fetches returned (the console's consume rate).
    pub fetched_bytes: std::cell::Cell<u64>,
    /// Topics the node had deleted when this partition was opened
    /// (`TopicRegistry::removals`).
    pub opened_at_topic_removals: u64,
}

impl OwnedPartition {
    /// Whether a follower's connection that had seen `topic_removals_seen`
    /// deletions when it authenticated may read and acknowledge this
    /// partition. Not one opened after
    /// a later deletion: it may be another incarnation of a topic the
    /// follower knows under its name, and the follower's offset, from its
    /// copy of the old one, would acknowledge records it does not hold.
    pub fn serves_replica_session(&self, topic_removals_seen: u64) -> bool {
        self.opened_at_topic_removals <= topic_removals_seen
    }
}

/// Partitions owned by one shard, by (topic, partition).
#[derive(Default)]
pub struct ShardPartitions {
    map: RefCell<HashMap<(String, u32), Rc<OwnedPartition>>>,
}

impl ShardPartitions {
    /// The owned partition, if this shard owns it and it is open.
    pub fn get(&self, topic: &str, partition: u32) -> Option<Rc<OwnedPartition>> {
        self.map.borrow().get(&(topic.to_string(), partition)).cloned()
    }

    /// Every owned partition.
    pub fn all(&self) -> Vec<Rc<OwnedPartition>> {
        self.map.borrow().values().cloned().collect()
    }

    /// Open (recovering) this shard's partitions of `meta`.
    pub async fn open_topic(
        &self,
        shard: ShardId,
        shards: usize,
        data_dir: &Path,
        meta: std::sync::Arc<TopicMeta>,
        defaults: &StorageConfig,
        topic_removals: u64,
    ) -> StorageResult<()> {
        let config = meta.storage_config(defaults);
        for partition in (0..meta.partitions).filter(|&partition| owner_of(&meta.name, partition, shards) == shard) {
            if self.get(&meta.name, partition).is_some() {
                continue;
            }
            let dir = TopicMeta::partition_dir(data_dir, &meta.name, partition);
            let faults = super::faults::injector_for(&meta.name, partition);
            let log = PartitionLog::open(&dir, config.clone(), faults).await?;
            let snapshot = log.snapshot();
            let empty = snapshot.log_end_offset == snapshot.log_start_offset;
            let owned = Rc::new(OwnedPartition {
                partition,
                log,
                meta: meta.clone(),
                replication: PartitionReplication::opening(empty),
                fetched_bytes: Default::default(),
                opened_at_topic_removals: topic_removals,
            });
            self.map.borrow_mut().insert((meta.name.clone(), partition), owned);
        }
        Ok(())
    }

    /// Close and forget this shard's partitions of `topic`.
    pub async fn drop_topic(&self, topic: &str) -> StorageResult<()> {
        let removed: Vec<Rc<OwnedPartition>> = {
            let mut map = self.map.borrow_mut();
            let keys: Vec<(String, u32)> = map.keys().filter(|(name, _)| name == topic).cloned().collect();
            keys.iter().filter_map(|key| map.remove(key)).collect()
        };
        for owned in removed {
            owned.log.abandon().await;
        }
        Ok(())
    }

    /// Close every partition cleanly (shutdown); reports the first error.
    pub async fn close_all(&self) -> StorageResult<()> {
        let all: Vec<Rc<OwnedPartition>> = self.map.borrow_mut().drain().map(|(_, owned)| owned).collect();
        let mut first_error = None;
        for owned in all {
            if let Err(error) = owned.log.close().await {
                tracing::error!(target: "ringlog::shard", %error, dir = %owned.log.dir().display(), "close failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::batch::BatchBuilder;
    use crate::storage::AppendMode;

    #[test]
    fn only_a_partition_opened_empty_counts_followers_caught_up_as_of_its_opening() {
        crate::runtime::block_on_executor("partitions-test", || async {
            let dir = tempfile::tempdir().unwrap();
            let meta = TopicMeta::for_tests("t", 1);
            let meta = Arc::new(meta);
            let defaults = StorageConfig::default();
            let partitions = ShardPartitions::default();
            partitions.open_topic(0, 1, dir.path(), Arc::clone(&meta), &defaults, 0).await.unwrap();
            let owned = partitions.get("t", 0).unwrap();
            assert!(owned.replication.empty_since_ms() > 0, "opened empty: nothing a follower lacks");
            let mut builder = BatchBuilder::new();
            builder.push(crate::runtime::clock::wall_ms(), None, b"v", &[]);
            let mut batch = builder.finish().to_vec();
            let durable = owned.log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
            assert_eq!(durable.next_offset, 1);
            owned.log.close().await.unwrap();
            drop(owned);
            partitions.drop_topic("t").await.unwrap();

            partitions.open_topic(0, 1, dir.path(), meta, &defaults, 0).await.unwrap();
            let owned = partitions.get("t", 0).unwrap();
            assert_eq!(owned.log.snapshot().log_end_offset, 1);
            assert_eq!(owned.replication.empty_since_ms(), 0, "opened with a record only a read shows a follower has");
        })
        .unwrap();
    }
}
