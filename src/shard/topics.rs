//! Topic registry: names, partition counts and per-topic settings, stored
//! as `DATA/topics/<name>/topic.json` and shared by every shard as an
//! immutable snapshot swapped atomically (no lock on the data path).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::storage::io::write_file_atomically;
use crate::storage::StorageConfig;

/// File holding a topic's settings inside its directory.
pub const TOPIC_FILE: &str = "topic.json";

/// A topic's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Name (`[A-Za-z0-9._-]{1,200}`).
    pub name: String,
    /// Partition count, fixed at creation.
    pub partitions: u32,
    /// Retention by size per partition (0 = unlimited).
    pub retention_bytes: u64,
    /// Retention by age (0 = unlimited).
    pub retention_ms: u64,
    /// Segment size (0 = node default).
    pub segment_bytes: u64,
    /// Which topic of this name it is: random at creation on the leader,
    /// the leader's on a follower, so a topic deleted and created again
    /// under its name is a new one to a replica that missed both (0: a
    /// topic created before incarnations, known by its name alone).
    #[serde(default)]
    pub incarnation: u64,
}

/// Check a topic name against the spec's pattern.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    let valid_length = (1..=200).contains(&name.len());
    let valid_chars = name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
    if !valid_length || !valid_chars || name == "." || name == ".." {
        return Err(format!("invalid topic name {name:?}: must match [A-Za-z0-9._-]{{1,200}}"));
    }
    Ok(())
}

impl TopicMeta {
    /// A topic of `partitions` with the node's defaults (tests).
    #[cfg(test)]
    pub fn for_tests(name: &str, partitions: u32) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            partitions,
            retention_bytes: 0,
            retention_ms: 0,
            segment_bytes: 0,
            incarnation: 0,
        }
    }

    /// Directory of the topic.
    pub fn dir(data_dir: &Path, name: &str) -> PathBuf {
        data_dir.join("topics").join(name)
    }

    /// Directory of one partition.
    pub fn partition_dir(data_dir: &Path, name: &str, partition: u32) -> PathBuf {
        Self::dir(data_dir, name).join(partition.to_string())
    }

    /// Storage settings for this topic's partitions.
    pub fn storage_config(&self, defaults: &StorageConfig) -> StorageConfig {
        let mut config = defaults.clone();
        if self.segment_bytes > 0 {
            config.segment_bytes = self.segment_bytes;
            config.max_batch_bytes = config.max_batch_bytes.min(self.segment_bytes as usize);
        }
        config
    }

    /// Validate settings against the node's limits.
    pub fn validate(&self, max_partitions: u32, defaults: &StorageConfig) -> Result<(), String> {
        validate_topic_name(&self.name)?;
        if self.partitions == 0 || self.partitions > max_partitions {
            return Err(format!("partitions must be in 1..={max_partitions}, got {}", self.partitions));
        }
        self.storage_config(defaults).validate().map_err(|error| error.to_string())
    }

    /// Write `topic.json` durably (creating the directory).
    pub fn store(&self, data_dir: &Path) -> std::io::Result<()> {
        let dir = Self::dir(data_dir, &self.name);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_file_atomically(&dir.join(TOPIC_FILE), &json)?;
        crate::storage::io::sync_directory(&data_dir.join("topics"))
    }

    /// Delete the topic's files. The commit point is one atomic rename of
    /// its directory out of `DATA/topics` into `DATA/deleted-topics`
    /// (created at start, so the rename needs no new directory): a crash
    /// before it keeps the whole topic, after it the topic is gone even if
    /// removing its files did not finish (the next start removes the
    /// rest), and a new topic of the same name never finds old files.
    pub fn remove(data_dir: &Path, name: &str) -> Removal {
        let graveyard = graveyard_dir(data_dir);
        let sequence = BURIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_nanos());
        let buried = graveyard.join(format!("{name}.{nanos}.{sequence}"));
        let moved =
            std::fs::create_dir_all(&graveyard).and_then(|()| std::fs::rename(Self::dir(data_dir, name), &buried));
        if let Err(error) = moved {
            return Removal::NotMoved(error);
        }
        let synced = crate::storage::io::sync_directory(&data_dir.join("topics"))
            .and_then(|()| crate::storage::io::sync_directory(&graveyard));
        if let Err(error) = synced {
            return Removal::NotDurable(error);
        }
        if let Err(error) = std::fs::remove_dir_all(&buried) {
            tracing::warn!(target: "ringlog::shard", %error, dir = %buried.display(),
                "deleted topic's files not all removed; the next start removes the rest");
        }
        Removal::Done
    }

    /// Load every topic under `DATA/topics`, first emptying
    /// `DATA/deleted-topics` of what deletions interrupted by a crash left.
    /// A graveyard that cannot be emptied or created is logged, not fatal:
    /// nothing in it is ever read, and a deletion that then cannot move a
    /// topic into it keeps the topic (`Removal::NotMoved`).
    pub fn load_all(data_dir: &Path) -> std::io::Result<Vec<TopicMeta>> {
        prepare_graveyard(data_dir);
        let topics_dir = data_dir.join("topics");
        std::fs::create_dir_all(&topics_dir)?;
        let mut topics = Vec::new();
        for entry in std::fs::read_dir(&topics_dir)? {
            let path = entry?.path().join(TOPIC_FILE);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let meta: TopicMeta = serde_json::from_slice(&bytes)
                        .map_err(|error| std::io::Error::other(format!("{}: {error}", path.display())))?;
                    topics.push(meta);
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }
}

/// Where deleted topics' directories wait for removal: outside
/// `DATA/topics`, so no start and no new topic ever reads their files.
fn graveyard_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("deleted-topics")
}

/// Burials by this process: two deletions of one name within the clock's
/// resolution still get distinct graveyard names.
static BURIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How far [`TopicMeta::remove`] got.
#[derive(Debug)]
#[must_use]
pub enum Removal {
    /// The directory is still in `DATA/topics`: nothing changed on disk.
    NotMoved(std::io::Error),
    /// Moved out, but a directory fsync failed: the deletion may not
    /// survive a crash (never retried: the kernel may have dropped the
    /// change it reported failing).
    NotDurable(std::io::Error),
    /// Gone for good (files left in the graveyard go at the next start).
    Done,
}

/// Empty the graveyard of a previous run, then create it (durably) so a
/// deletion's commit is a single rename.
fn prepare_graveyard(data_dir: &Path) {
    let graveyard = graveyard_dir(data_dir);
    if let Err(error) = std::fs::remove_dir_all(&graveyard) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(target: "ringlog::shard", %error, dir = %graveyard.display(),
                "cannot remove what deleted topics left; their files stay, unread");
        }
    }
    let created = std::fs::create_dir_all(&graveyard).and_then(|()| crate::storage::io::sync_directory(data_dir));
    if let Err(error) = created {
        tracing::warn!(target: "ringlog::shard", %error, dir = %graveyard.display(),
            "cannot create the deleted-topics directory; deletions will be refused until it can be");
    }
}

/// Immutable set of topics.
pub type TopicMap = BTreeMap<String, Arc<TopicMeta>>;

/// The registry every shard reads; only shard 0 writes it.
#[derive(Debug)]
pub struct TopicRegistry {
    current: ArcSwap<TopicMap>,
    /// Topics deleted since the node started: partitions opened after a
    /// deletion are not served to a replication connection that
    /// authenticated before it (`OwnedPartition::serves_replica_session`).
    removals: AtomicU64,
}

impl TopicRegistry {
    /// A registry holding `topics`.
    pub fn new(topics: Vec<TopicMeta>) -> TopicRegistry {
        let map = topics.into_iter().map(|meta| (meta.name.clone(), Arc::new(meta))).collect();
        TopicRegistry { current: ArcSwap::from_pointee(map), removals: AtomicU64::new(0) }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<TopicMap> {
        self.current.load_full()
    }

    /// Look up one topic.
    pub fn get(&self, name: &str) -> Option<Arc<TopicMeta>> {
        self.current.load().get(name).cloned()
    }

    /// Publish a new snapshot with `meta` added (shard 0 only).
    pub fn insert(&self, meta: TopicMeta) {
        let mut map = TopicMap::clone(&self.current.load());
        map.insert(meta.name.clone(), Arc::new(meta));
        self.current.store(Arc::new(map));
    }

    /// Topics deleted so far.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::SeqCst)
    }

    /// Count a deletion that succeeded (shard 0, holding the topic-change
    /// lock): after the topic left this registry and every shard, before
    /// a topic of its name can be created again. A connection that reads
    /// this count has the topic's removal behind it; partitions opened
    /// later carry the new count.
    pub fn count_removal(&self) {
        self.removals.fetch_add(1, Ordering::SeqCst);
    }

    /// Publish a new snapshot without `name` (shard 0 only).
    pub fn remove(&self, name: &str) {
        let mut map = TopicMap::clone(&self.current.load());
        map.remove(name);
        self.current.store(Arc::new(map));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_topic_leaves_nothing_a_new_topic_of_its_name_or_a_restart_could_read() {
        let data = tempfile::tempdir().unwrap();
        let meta = TopicMeta::for_tests("t", 1);
        meta.store(data.path()).unwrap();
        let partition = TopicMeta::partition_dir(data.path(), "t", 0);
        std::fs::create_dir_all(&partition).unwrap();
        std::fs::write(partition.join("00000000000000000000.log"), b"old records").unwrap();
        assert!(matches!(TopicMeta::remove(data.path(), "t"), Removal::Done));
        assert!(!TopicMeta::dir(data.path(), "t").exists());
        assert_eq!(std::fs::read_dir(graveyard_dir(data.path())).unwrap().count(), 0, "its files are removed");
        assert!(TopicMeta::load_all(data.path()).unwrap().is_empty());
        // A crash after the rename left the files: the next start removes them.
        let leftover = graveyard_dir(data.path()).join("t.1");
        std::fs::create_dir_all(leftover.join("0")).unwrap();
        std::fs::write(leftover.join(TOPIC_FILE), b"{}").unwrap();
        assert!(TopicMeta::load_all(data.path()).unwrap().is_empty());
        let left = std::fs::read_dir(graveyard_dir(data.path())).unwrap().count();
        assert_eq!(left, 0, "what a crash left is removed at start");
    }

    #[test]
    fn topic_names_follow_the_spec() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name(&"a".repeat(201)).is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name("..").is_err());
    }

    #[test]
    fn topics_persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let meta = TopicMeta::for_tests("t", 3);
        meta.store(dir.path()).unwrap();
        assert_eq!(TopicMeta::load_all(dir.path()).unwrap(), vec![meta.clone()]);
        let registry = TopicRegistry::new(vec![meta]);
        assert!(registry.get("t").is_some());
        registry.remove("t");
        assert!(registry.get("t").is_none());
    }
}
