//! Per-follower replication progress shared by the leader's shards
//! (writers, one slot each) and the control thread (reader), which turns it
//! into ISR decisions and the nodes view. Atomics only; the follower map is
//! swapped copy-on-write when a follower is first seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// One follower's progress, one slot per shard.
#[derive(Debug)]
pub struct FollowerProgress {
    /// Oldest "caught up" time over the shard's partitions (`monotonic_ms`).
    pub caught_up_ms: Vec<AtomicU64>,
    /// Last fetch seen by the shard.
    pub fetched_ms: Vec<AtomicU64>,
    /// Records behind, summed over the shard's partitions.
    pub lag_records: Vec<AtomicU64>,
    /// Bytes behind (estimated from the leader's segment positions).
    pub lag_bytes: Vec<AtomicU64>,
    /// Open replication connections from this follower.
    pub connections: AtomicI64,
    /// Bytes sent (compressed) and before compression.
    pub sent_bytes: AtomicU64,
    /// Uncompressed bytes sent.
    pub sent_uncompressed_bytes: AtomicU64,
    /// Uncompressed bytes sent from an answer body another follower was
    /// sent first (no read, copy or compression for this follower).
    pub shared_answer_bytes: AtomicU64,
    /// Connections closed by the leader because the follower was too slow.
    pub slow_disconnects: AtomicU64,
    /// Connections closed by the leader because a topic was deleted while
    /// they were open (the follower asks the topics afresh on the next).
    pub topic_deletion_disconnects: AtomicU64,
    /// Answers still to send stored raw: the last lz4 attempt saved too little.
    pub raw_answers_left: AtomicU64,
    /// Answer bytes queued on this follower's connections, not yet written
    /// to its sockets (each connection is bounded by `follower_queue_bytes`).
    pub queued_bytes: AtomicU64,
}

impl FollowerProgress {
    fn new(shards: usize) -> FollowerProgress {
        let slots = || (0..shards).map(|_| AtomicU64::new(0)).collect();
        FollowerProgress {
            caught_up_ms: slots(),
            fetched_ms: slots(),
            lag_records: slots(),
            lag_bytes: slots(),
            connections: AtomicI64::new(0),
            sent_bytes: AtomicU64::new(0),
            sent_uncompressed_bytes: AtomicU64::new(0),
            shared_answer_bytes: AtomicU64::new(0),
            slow_disconnects: AtomicU64::new(0),
            topic_deletion_disconnects: AtomicU64::new(0),
            raw_answers_left: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
        }
    }

    /// The oldest caught-up time over every shard (the follower is only as
    /// caught up as its most lagging partition).
    pub fn caught_up_ms(&self) -> u64 {
        self.caught_up_ms.iter().map(|slot| slot.load(Ordering::Relaxed)).min().unwrap_or(0)
    }

    /// The latest fetch seen by any shard.
    pub fn fetched_ms(&self) -> u64 {
        self.fetched_ms.iter().map(|slot| slot.load(Ordering::Relaxed)).max().unwrap_or(0)
    }

    /// Records behind over every shard.
    pub fn lag_records(&self) -> u64 {
        self.lag_records.iter().map(|slot| slot.load(Ordering::Relaxed)).sum()
    }

    /// Bytes behind over every shard.
    pub fn lag_bytes(&self) -> u64 {
        self.lag_bytes.iter().map(|slot| slot.load(Ordering::Relaxed)).sum()
    }

    /// Whether a replication connection from the follower is open.
    pub fn is_connected(&self) -> bool {
        self.connections.load(Ordering::Relaxed) > 0
    }
}

/// Progress of every follower this node has seen while leading.
#[derive(Debug)]
pub struct ReplicationProgress {
    shards: usize,
    followers: ArcSwap<HashMap<u64, Arc<FollowerProgress>>>,
}

impl ReplicationProgress {
    /// Empty progress for `shards` shards.
    pub fn new(shards: usize) -> Arc<ReplicationProgress> {
        Arc::new(ReplicationProgress { shards, followers: ArcSwap::from_pointee(HashMap::new()) })
    }

    /// The follower's progress, created on first use.
    pub fn follower(&self, id: u64) -> Arc<FollowerProgress> {
        if let Some(progress) = self.followers.load().get(&id) {
            return Arc::clone(progress);
        }
        self.followers.rcu(|followers| {
            let mut followers = HashMap::clone(followers);
            followers.entry(id).or_insert_with(|| Arc::new(FollowerProgress::new(self.shards)));
            followers
        });
        Arc::clone(self.followers.load().get(&id).expect("just inserted"))
    }

    /// The follower's progress, if it was ever seen.
    pub fn get(&self, id: u64) -> Option<Arc<FollowerProgress>> {
        self.followers.load().get(&id).cloned()
    }

    /// Every follower seen.
    pub fn all(&self) -> Vec<(u64, Arc<FollowerProgress>)> {
        let mut all: Vec<_> = self.followers.load().iter().map(|(&id, progress)| (id, Arc::clone(progress))).collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }
}

/// An answer's bytes, counted in its follower's `queued_bytes` from when it
/// is queued until this is dropped: written to the socket, or discarded
/// with a closed connection. Dropping is the only way out, so the gauge
/// cannot drift.
pub struct QueuedAnswer {
    progress: Arc<FollowerProgress>,
    bytes: u64,
}

impl QueuedAnswer {
    /// Count `bytes` as queued for `progress`'s follower.
    pub fn new(progress: Arc<FollowerProgress>, bytes: usize) -> QueuedAnswer {
        progress.queued_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        QueuedAnswer { progress, bytes: bytes as u64 }
    }
}

impl Drop for QueuedAnswer {
    fn drop(&mut self) {
        self.progress.queued_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_answers_are_counted_until_dropped() {
        let progress = ReplicationProgress::new(2);
        let follower = progress.follower(7);
        let first = QueuedAnswer::new(Arc::clone(&follower), 100);
        let second = QueuedAnswer::new(Arc::clone(&follower), 50);
        assert_eq!(follower.queued_bytes.load(Ordering::Relaxed), 150);
        drop(first);
        assert_eq!(follower.queued_bytes.load(Ordering::Relaxed), 50);
        drop(second);
        assert_eq!(follower.queued_bytes.load(Ordering::Relaxed), 0);
    }
}
