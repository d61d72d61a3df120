//! Consumer-group commits of one partition as replication sees them, owned
//! by its shard (no locks). A leader numbers the state of the partition's
//! commit store with a version that moves on every commit, tells each
//! follower when the version has moved past what it was told (the news
//! rides on the follower's multi-partition read), and records the version
//! each follower says it stored durably (its `ReplicaGroupOffsets` call), so
//! a commit is acknowledged once every in-sync follower stored a version at
//! or past it. A follower remembers the latest version announced to it.
//!
//! Versions come from one process-wide counter: every value is used once,
//! so a version a follower stored from another incarnation of the partition
//! (a topic deleted and created again) can never pass for a current one.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::runtime::Notify;

/// The next commit version handed out in this process (0 means "none").
static NEXT_COMMIT_VERSION: AtomicU64 = AtomicU64::new(1);

fn next_commit_version() -> u64 {
    NEXT_COMMIT_VERSION.fetch_add(1, Ordering::Relaxed)
}

/// What the leader knows of one follower's copy of the commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerCommits {
    /// The highest version the follower was told (in a read's answer or a
    /// `ReplicaGroupOffsets` answer) in this term.
    pub announced: u64,
    /// The highest version the follower stored durably, by its own account.
    pub stored: u64,
}

/// Commit replication state of one partition.
#[derive(Debug)]
pub struct CommitReplication {
    version: Cell<u64>,
    followers: RefCell<HashMap<u64, FollowerCommits>>,
    /// Follower: the latest version a leader's read answer announced.
    learned: Cell<u64>,
    /// Fired when `learned` moves.
    pub learned_changed: Notify,
}

impl Default for CommitReplication {
    fn default() -> Self {
        // Fresh, not 0: a follower that stored nothing yet (0) must copy
        // even commits this process did not make (they were on disk).
        CommitReplication {
            version: Cell::new(next_commit_version()),
            followers: RefCell::default(),
            learned: Cell::default(),
            learned_changed: Notify::new(),
        }
    }
}

impl CommitReplication {
    /// The version of the commit store now.
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// The commit store changed (a commit was stored): its new version.
    /// Called with no await between the store and this, so an answer read
    /// at this version holds the commit.
    pub fn bump(&self) -> u64 {
        let version = next_commit_version();
        self.version.set(version);
        version
    }

    /// Leader: `follower` says it stored `stored_version` durably. Capped
    /// at the current version (no claim can pass what exists); never lowered.
    pub fn record_stored(&self, follower: u64, stored_version: u64) {
        let stored = stored_version.min(self.version.get());
        let mut followers = self.followers.borrow_mut();
        let entry = followers.entry(follower).or_default();
        entry.stored = entry.stored.max(stored);
    }

    /// Leader: `follower` was told `version`.
    pub fn announce(&self, follower: u64, version: u64) {
        let mut followers = self.followers.borrow_mut();
        let entry = followers.entry(follower).or_default();
        entry.announced = entry.announced.max(version);
    }

    /// Leader: the version to announce to `follower`, if it was not told it.
    pub fn news_for(&self, follower: u64) -> Option<u64> {
        let announced = self.followers.borrow().get(&follower).map_or(0, |entry| entry.announced);
        let version = self.version.get();
        (version > announced).then_some(version)
    }

    /// Leader: whether every follower in `in_sync` stored `version` or later.
    pub fn stored_by_all(&self, version: u64, in_sync: &[u64]) -> bool {
        let followers = self.followers.borrow();
        in_sync.iter().all(|id| followers.get(id).is_some_and(|entry| entry.stored >= version))
    }

    /// Leader: what is known of `follower`.
    pub fn follower(&self, follower: u64) -> Option<FollowerCommits> {
        self.followers.borrow().get(&follower).copied()
    }

    /// A new leadership term: what followers stored in an earlier one does
    /// not count (between the terms this node may have followed another
    /// leader and copied its commits), so each must acknowledge again.
    pub fn begin_term(&self) {
        self.followers.borrow_mut().clear();
    }

    /// Follower: a read's answer announced `version`.
    pub fn learn(&self, version: u64) {
        if version != 0 && version != self.learned.get() {
            self.learned.set(version);
            self.learned_changed.notify_all();
        }
    }

    /// Follower: the latest version announced.
    pub fn learned(&self) -> u64 {
        self.learned.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_counts_as_stored_only_once_every_in_sync_follower_stored_its_version() {
        let commits = CommitReplication::default();
        let before = commits.version();
        let version = commits.bump();
        assert!(version > before);
        assert!(!commits.stored_by_all(version, &[2, 3]), "nobody copied yet");
        commits.record_stored(2, version);
        assert!(!commits.stored_by_all(version, &[2, 3]), "3 has not");
        commits.record_stored(3, before);
        assert!(!commits.stored_by_all(version, &[2, 3]), "3 stored an older version");
        commits.record_stored(3, version);
        assert!(commits.stored_by_all(version, &[2, 3]));
        assert!(commits.stored_by_all(version, &[]), "alone in the in-sync set");
        // A follower dropped from the in-sync set no longer holds commits.
        let next = commits.bump();
        commits.record_stored(2, next);
        assert!(commits.stored_by_all(next, &[2]) && !commits.stored_by_all(next, &[2, 3]));
    }

    #[test]
    fn a_claim_past_the_current_version_or_from_another_incarnation_acknowledges_nothing_new() {
        let old = CommitReplication::default();
        let stale = old.bump();
        // The topic is deleted and created again: a new incarnation.
        let commits = CommitReplication::default();
        let version = commits.bump();
        commits.record_stored(2, stale);
        assert!(!commits.stored_by_all(version, &[2]), "a version of the old incarnation is older than any new one");
        commits.record_stored(2, u64::MAX);
        assert_eq!(commits.follower(2).unwrap().stored, version, "capped at what exists");
        let later = commits.bump();
        assert!(!commits.stored_by_all(later, &[2]), "the cap did not acknowledge the future");
        commits.record_stored(2, 0);
        assert_eq!(commits.follower(2).unwrap().stored, version, "never lowered");
    }

    #[test]
    fn news_is_announced_once_per_version_and_a_new_term_asks_everyone_again() {
        let commits = CommitReplication::default();
        let first = commits.version();
        assert_eq!(commits.news_for(2), Some(first), "a follower never told anything is told");
        commits.announce(2, first);
        assert_eq!(commits.news_for(2), None);
        let next = commits.bump();
        assert_eq!(commits.news_for(2), Some(next));
        commits.announce(2, next);
        commits.record_stored(2, next);
        assert!(commits.stored_by_all(next, &[2]));
        commits.begin_term();
        assert!(!commits.stored_by_all(next, &[2]), "acknowledgements of an earlier term do not count");
        assert_eq!(commits.news_for(2), Some(next), "and the follower is told again");
    }

    #[test]
    fn a_follower_learns_each_announced_version_and_wakes_its_copier() {
        let commits = CommitReplication::default();
        let notified = commits.learned_changed.notified();
        commits.learn(0);
        assert_eq!(commits.learned(), 0, "0 is no news");
        commits.learn(7);
        assert_eq!(commits.learned(), 7);
        assert!(futures_lite::future::block_on(futures_lite::future::poll_once(notified)).is_some());
    }
}
