//! Replication state of one partition, owned by its shard (no locks): on a
//! leader, each follower's position (its log end: everything below it is
//! durable there) and when it was last caught up; the high watermark; on a
//! follower, the high watermark learned from the leader.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use super::commit_replication::CommitReplication;
use super::sent_answer::{SentAnswer, SentAnswerCache};
use crate::runtime::Notify;

/// What the leader knows of one follower on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerPosition {
    /// The follower's log end at its last fetch.
    pub offset: u64,
    /// When that fetch arrived (`monotonic_ms`).
    pub fetched_ms: u64,
    /// Last time the follower had everything the leader had.
    pub caught_up_ms: u64,
    /// The leader's log end when it answered the previous fetch.
    pub previous_end_offset: u64,
    /// When it answered the previous fetch.
    pub previous_fetch_ms: u64,
}

/// A multi-partition follower read waiting on the leader's shard: a
/// partition with news marks its index dirty and fires `notify`, so the
/// read re-examines only the partitions that changed (a wake-up costs
/// O(1) per waiting read, not O(partitions)).
#[derive(Debug)]
pub struct FetchWake {
    dirty: RefCell<Vec<u32>>,
    flagged: RefCell<Vec<bool>>,
    /// Fired when a partition is marked.
    pub notify: Notify,
}

impl FetchWake {
    /// A wake for a read of `partitions` partitions.
    pub fn new(partitions: usize) -> FetchWake {
        FetchWake { dirty: RefCell::default(), flagged: RefCell::new(vec![false; partitions]), notify: Notify::new() }
    }

    /// Mark the partition at `index` changed; each index is queued once
    /// until drained, so the queue is bounded by the read's size.
    pub fn mark(&self, index: u32) {
        let mut flagged = self.flagged.borrow_mut();
        if let Some(flag) = flagged.get_mut(index as usize) {
            if !*flag {
                *flag = true;
                self.dirty.borrow_mut().push(index);
            }
        }
        drop(flagged);
        self.notify.notify_all();
    }

    /// The indices marked since the last drain.
    pub fn drain(&self) -> Vec<u32> {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        let mut flagged = self.flagged.borrow_mut();
        for &index in &dirty {
            flagged[index as usize] = false;
        }
        dirty
    }
}

/// Replication state of one partition.
#[derive(Debug)]
pub struct PartitionReplication {
    /// See [`PartitionReplication::empty_since_ms`].
    empty_since_ms: u64,
    followers: RefCell<HashMap<u64, FollowerPosition>>,
    high_watermark: Cell<u64>,
    learned_high_watermark: Cell<u64>,
    /// The highest high watermark consumers were shown on this node.
    served_high_watermark: Cell<u64>,
    /// Whether this process has seen a high watermark that covers
    /// everything the cluster ever committed (learned from an established
    /// leader, or reached as one). Until then nothing is shown to consumers:
    /// in memory only, a restart starts below what was shown before.
    established: Cell<bool>,
    /// Follower: the first high watermark an established leader told this
    /// process. Shown only once the local durable end reaches it: below
    /// it, a node that lost or cut its log (a forgotten node starting over,
    /// a reset) would show less than it may have shown before a restart.
    catch_up_offset: Cell<Option<u64>>,
    /// Leader: the durable end when this term began. Every record committed
    /// in an earlier term lies below it (only in-sync replicas are elected,
    /// and they acknowledged only what they had durable).
    term_start_offset: Cell<u64>,
    resynced_generation: Cell<u64>,
    term_epoch: Cell<u32>,
    /// The answer body last sent for this partition, kept for the other followers.
    sent_answer: SentAnswerCache,
    /// Follower reads waiting on this partition: (follower, read, index in it).
    waiters: RefCell<Vec<(u64, Weak<FetchWake>, u32)>>,
    /// Whether a task watches the written end for the waiters.
    watching: Cell<bool>,
    /// Fired whenever a follower position, the high watermark or a
    /// follower's stored commit version moves.
    pub changed: Notify,
    /// Consumer-group commits: their version, and each follower's copy.
    pub commits: CommitReplication,
}

impl PartitionReplication {
    /// The state of a partition this node opens now, `empty` or with
    /// records already in it.
    pub fn opening(empty: bool) -> PartitionReplication {
        // At least 1: 0 means "opened with records", and the clock reads 0
        // in its first millisecond.
        let empty_since_ms = if empty { crate::runtime::clock::monotonic_ms().max(1) } else { 0 };
        PartitionReplication { empty_since_ms, ..PartitionReplication::default() }
    }

    /// The state of a partition this node opened empty at `opened_ms`.
    #[cfg(test)]
    pub fn opened_empty_at(opened_ms: u64) -> PartitionReplication {
        PartitionReplication { empty_since_ms: opened_ms, ..PartitionReplication::default() }
    }
}

impl Default for PartitionReplication {
    fn default() -> Self {
        PartitionReplication {
            // As if opened with records: nobody counts as caught up
            // before a read shows it (`opening` says otherwise).
            empty_since_ms: 0,
            followers: RefCell::default(),
            high_watermark: Cell::default(),
            learned_high_watermark: Cell::default(),
            served_high_watermark: Cell::default(),
            established: Cell::new(false),
            catch_up_offset: Cell::new(None),
            term_start_offset: Cell::default(),
            resynced_generation: Cell::default(),
            term_epoch: Cell::default(),
            sent_answer: SentAnswerCache::default(),
            waiters: RefCell::default(),
            watching: Cell::new(false),
            changed: Notify::default(),
            commits: CommitReplication::default(),
        }
    }
}

impl PartitionReplication {
    /// The answer body another follower was just sent for a read from
    /// `offset`, for `follower` at `now_ms`, if it holds at most
    /// `max_uncompressed_bytes` and `valid` says its batches are still the
    /// log's (see [`SentAnswerCache::give`]).
    pub fn shared_answer(
        &self,
        (follower, now_ms): (u64, u64),
        offset: u64,
        max_uncompressed_bytes: usize,
        valid: impl Fn(&SentAnswer) -> bool,
    ) -> Option<SentAnswer> {
        let followers = self.followers.borrow();
        self.sent_answer.give((follower, now_ms), offset, max_uncompressed_bytes, followers.keys().copied(), valid)
    }

    /// Keep the answer body just built for `follower` at `now_ms` for the
    /// other followers, within `budget_bytes` per shard thread.
    pub fn keep_answer(&self, (follower, now_ms): (u64, u64), answer: SentAnswer, budget_bytes: usize) {
        let followers = self.followers.borrow();
        self.sent_answer.keep((follower, now_ms), answer, followers.keys().copied(), budget_bytes);
    }

    /// Drop a kept answer body older than `sent_answer::KEPT_FOR_MS`.
    pub fn expire_answer(&self, now_ms: u64) {
        self.sent_answer.expire(now_ms);
    }

    /// Register `follower`'s read waiting on this partition at `index`,
    /// replacing that follower's earlier one (a partition is in one read
    /// per follower at a time) and forgetting reads that ended, so the
    /// list stays as short as the follower count. True when no task
    /// watches the written end yet: the caller must start one.
    pub fn register_waiter(&self, follower: u64, wake: &Rc<FetchWake>, index: u32) -> bool {
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|(id, waiting, _)| *id != follower && waiting.strong_count() > 0);
        waiters.push((follower, Rc::downgrade(wake), index));
        !self.watching.replace(true)
    }

    /// A consumer-group commit was stored here: its version, and the
    /// waiting follower reads are told (the version is news for them).
    pub fn note_commit(&self) -> u64 {
        let version = self.commits.bump();
        self.wake_waiters();
        version
    }

    /// Leader: `follower` stored commit version `stored_version` durably;
    /// waiting commits look again.
    pub fn record_commits_stored(&self, follower: u64, stored_version: u64) {
        self.commits.record_stored(follower, stored_version);
        self.changed.notify_all();
    }

    /// Tell every waiting read that this partition changed.
    pub fn wake_waiters(&self) {
        for (_, waiting, index) in self.waiters.borrow().iter() {
            if let Some(wake) = waiting.upgrade() {
                wake.mark(*index);
            }
        }
    }

    /// Whether a read still waits on this partition.
    pub fn has_live_waiters(&self) -> bool {
        self.waiters.borrow().iter().any(|(_, waiting, _)| waiting.strong_count() > 0)
    }

    /// The watching task ended.
    pub fn stop_watching(&self) {
        self.watching.set(false);
    }

    /// When this node opened the partition empty (`monotonic_ms`), or 0
    /// when it opened it with records: a follower counts as caught up as of
    /// then until a read shows it caught up later. A partition opened with
    /// records (at start, or put back after a failed deletion) may hold
    /// records acknowledged without a follower now joining; only a read
    /// shows that follower has them.
    pub fn empty_since_ms(&self) -> u64 {
        self.empty_since_ms
    }

    /// Record a follower's fetch from `offset` while the leader's log ends
    /// at `log_end_offset` (Kafka's rule: caught up now if it has
    /// everything; caught up as of its previous fetch if it has everything
    /// that fetch could have returned).
    ///
    /// A follower's first fetch in a term that finds it behind leaves it
    /// caught up as it counted before that fetch (`empty_since_ms`): the
    /// first fetch of a topic created a moment ago is behind as soon as a
    /// record was produced, and counting it as never caught up dropped
    /// every follower from the in-sync set for the round trip until its
    /// next fetch (and a leader killed then left the cluster leaderless).
    pub fn record_fetch(&self, follower: u64, offset: u64, log_end_offset: u64, now_ms: u64) {
        let mut followers = self.followers.borrow_mut();
        let entry = followers.entry(follower).or_insert(FollowerPosition {
            offset,
            fetched_ms: now_ms,
            caught_up_ms: self.empty_since_ms,
            previous_end_offset: u64::MAX,
            previous_fetch_ms: now_ms,
        });
        entry.offset = offset;
        entry.fetched_ms = now_ms;
        if offset >= log_end_offset {
            entry.caught_up_ms = now_ms;
        } else if offset >= entry.previous_end_offset {
            entry.caught_up_ms = entry.caught_up_ms.max(entry.previous_fetch_ms);
        }
        drop(followers);
        self.changed.notify_all();
    }

    /// Remember what the answer to `follower`'s fetch covered.
    pub fn record_answer(&self, follower: u64, log_end_offset: u64, now_ms: u64) {
        if let Some(entry) = self.followers.borrow_mut().get_mut(&follower) {
            entry.previous_end_offset = log_end_offset;
            entry.previous_fetch_ms = now_ms;
        }
    }

    /// A follower's position, if it has fetched.
    pub fn follower(&self, follower: u64) -> Option<FollowerPosition> {
        self.followers.borrow().get(&follower).copied()
    }

    /// Every follower that has fetched.
    pub fn followers(&self) -> Vec<(u64, FollowerPosition)> {
        self.followers.borrow().iter().map(|(&id, &position)| (id, position)).collect()
    }

    /// Leader: the high watermark over the in-sync set — the minimum of the
    /// leader's durable end and every in-sync follower's position; it never
    /// moves backwards, and a follower that has not fetched yet holds it.
    pub fn advance_leader_high_watermark(&self, durable_end_offset: u64, in_sync: &[u64]) -> u64 {
        let followers = self.followers.borrow();
        let mut candidate = durable_end_offset;
        for id in in_sync {
            match followers.get(id) {
                Some(position) => candidate = candidate.min(position.offset),
                None => candidate = candidate.min(self.high_watermark.get()),
            }
        }
        drop(followers);
        let current = self.high_watermark.get();
        // Never above what the leader itself has durable, never backwards.
        let next = candidate.max(current.min(durable_end_offset));
        assert_high_watermark_step(current, next, durable_end_offset);
        if next != current {
            self.high_watermark.set(next);
            self.changed.notify_all();
            // Followers must learn it (reads on followers, failover).
            self.wake_waiters();
        }
        next
    }

    /// Follower: remember the leader's high watermark. Never lowered: a new
    /// leader may not yet know everything the previous one committed.
    /// `None`: the leader has not established its own yet (a new term whose
    /// high watermark is still below the term's start), so nothing is learned.
    pub fn learn_high_watermark(&self, leader_high_watermark: Option<u64>) {
        let Some(leader_high_watermark) = leader_high_watermark else {
            return;
        };
        if self.catch_up_offset.get().is_none() {
            self.catch_up_offset.set(Some(leader_high_watermark));
        }
        let learned = self.learned_high_watermark.get();
        if leader_high_watermark > learned {
            self.learned_high_watermark.set(leader_high_watermark);
            self.changed.notify_all();
        }
        assert!(self.learned_high_watermark.get() >= learned, "the learned high watermark never falls");
    }

    /// Follower: the high watermark learned from the leader.
    pub fn learned_high_watermark(&self) -> u64 {
        self.learned_high_watermark.get()
    }

    /// Follower: the high watermark learned from an established leader in
    /// this process, `None` before one told it any (then any is news).
    pub fn established_high_watermark(&self) -> Option<u64> {
        self.catch_up_offset.get().map(|_| self.learned_high_watermark.get())
    }

    /// At the first use in a new leadership term: forget follower
    /// positions from any earlier term and start the high watermark from
    /// what this node knew to be committed, as a follower or as an earlier
    /// term's leader (starting from the learned value alone moved it back).
    pub fn begin_term(&self, epoch: u32, durable_end_offset: u64) {
        if self.term_epoch.get() == epoch {
            return;
        }
        self.term_epoch.set(epoch);
        self.term_start_offset.set(durable_end_offset);
        self.followers.borrow_mut().clear();
        self.commits.begin_term();
        let current = self.high_watermark.get();
        let known = self.learned_high_watermark.get().max(current);
        let start = known.min(durable_end_offset);
        assert_high_watermark_step(current, start, durable_end_offset);
        self.high_watermark.set(start);
        self.changed.notify_all();
    }

    /// Recompute the high watermark (beginning a term on the first look in
    /// a new epoch, moving it forward, never back): what `acks=all` waits
    /// for and what a leader tells its followers. Standalone: the
    /// durable end. Leader: the minimum over the in-sync set. Follower: what
    /// the leader last said (or this node knew as an earlier leader), capped
    /// by what this node has durable.
    pub fn advance_high_watermark(
        &self,
        role: crate::state::cluster::Role,
        epoch: u32,
        durable_end_offset: u64,
        in_sync: &[u64],
    ) -> u64 {
        use crate::state::cluster::Role;
        match role {
            Role::Standalone => durable_end_offset,
            Role::Leader => {
                self.begin_term(epoch, durable_end_offset);
                self.advance_leader_high_watermark(durable_end_offset, in_sync)
            }
            // What this node knew committed as a leader stays committed.
            Role::Follower => self.learned_high_watermark().max(self.high_watermark.get()).min(durable_end_offset),
        }
    }

    /// Whether `value`, computed for `role`, covers everything any node has
    /// shown consumers. A leader's does once it reaches the start of its
    /// term (KIP-207's rule for a new leader); a follower's once it learned
    /// one from an established leader in this process and has that much
    /// durable itself.
    fn established(&self, role: crate::state::cluster::Role, value: u64, durable_end_offset: u64) -> bool {
        use crate::state::cluster::Role;
        match role {
            Role::Standalone => true,
            Role::Leader => {
                // A disk-full rollback can lower the durable end below the
                // term's start; what it removed was never committed.
                if value >= self.term_start_offset.get().min(durable_end_offset) {
                    self.established.set(true);
                    return true;
                }
                false
            }
            Role::Follower => {
                let caught_up = self.catch_up_offset.get().is_some_and(|offset| durable_end_offset >= offset);
                if caught_up {
                    self.established.set(true);
                }
                self.established.get()
            }
        }
    }

    /// The high watermark consumers may see on this node in `role`, or
    /// `None` while it is not established: after a restart, or at the start
    /// of a leadership term, the computed value can lie below what another
    /// node (or this one, before a crash) already showed, and showing it
    /// would let a consumer see the high watermark fall.
    pub fn visible_high_watermark(
        &self,
        role: crate::state::cluster::Role,
        epoch: u32,
        durable_end_offset: u64,
        in_sync: &[u64],
    ) -> Option<u64> {
        let visible = self.advance_high_watermark(role, epoch, durable_end_offset, in_sync);
        // A consumer is never shown a record this node does not have durable.
        assert!(visible <= durable_end_offset, "high watermark {visible} past the durable end {durable_end_offset}");
        if !self.established(role, visible, durable_end_offset) {
            return None;
        }
        // Consumers must never see the high watermark fall. The durable end
        // can dip below what was shown for a moment (a reset empties the log
        // before it restarts at the leader's log start, across awaits): show
        // nothing meanwhile rather than less.
        let served = self.served_high_watermark.get();
        if visible < served {
            tracing::debug!(target: "ringlog::replication", served, visible, ?role, "high watermark held back below what was shown");
            return None;
        }
        self.served_high_watermark.set(visible);
        assert!(self.served_high_watermark.get() >= served, "the served high watermark never falls");
        Some(visible)
    }

    /// The highest high watermark consumers were shown on this node.
    pub fn served_high_watermark(&self) -> u64 {
        self.served_high_watermark.get()
    }

    /// The resynchronisation generation this partition has carried out.
    pub fn resynced_generation(&self) -> u64 {
        self.resynced_generation.get()
    }

    /// Record that this partition carried out resynchronisation `generation`.
    pub fn set_resynced_generation(&self, generation: u64) {
        self.resynced_generation.set(generation);
    }

    /// The stored leader high watermark.
    pub fn leader_high_watermark(&self) -> u64 {
        self.high_watermark.get()
    }
}

/// A leader's stored high watermark moves forward, or falls only to the
/// leader's own durable end (a disk-full rollback or a reset lowered it:
/// what it removed was never committed, and consumers are held back by
/// `visible_high_watermark`); it never lies past that durable end.
fn assert_high_watermark_step(current: u64, next: u64, durable_end_offset: u64) {
    assert!(next <= durable_end_offset, "high watermark {next} past the leader's durable end {durable_end_offset}");
    assert!(
        next >= current || next == durable_end_offset,
        "high watermark fell from {current} to {next}, above the durable end {durable_end_offset}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::cluster::Role;

    #[test]
    fn high_watermark_is_the_minimum_over_the_in_sync_set_and_never_moves_back() {
        let state = PartitionReplication::default();
        assert_eq!(state.advance_leader_high_watermark(10, &[]), 10, "alone: the durable end");
        assert_eq!(state.advance_leader_high_watermark(20, &[2]), 10, "follower 2 has not fetched");
        state.record_fetch(2, 15, 20, 1);
        assert_eq!(state.advance_leader_high_watermark(20, &[2]), 15);
        state.record_fetch(3, 12, 20, 1);
        assert_eq!(state.advance_leader_high_watermark(20, &[2, 3]), 15, "never backwards");
        assert_eq!(state.advance_leader_high_watermark(20, &[2]), 15);
        state.record_fetch(2, 20, 20, 2);
        assert_eq!(state.advance_leader_high_watermark(20, &[2]), 20);
    }

    #[test]
    fn a_follower_never_lowers_the_high_watermark_it_serves_when_a_new_leader_knows_less() {
        let state = PartitionReplication::default();
        assert_eq!(state.visible_high_watermark(Role::Follower, 0, 150, &[]), None, "learned nothing yet");
        state.learn_high_watermark(None);
        assert_eq!(state.visible_high_watermark(Role::Follower, 0, 150, &[]), None, "leader not established");
        state.learn_high_watermark(Some(120));
        assert_eq!(state.visible_high_watermark(Role::Follower, 0, 150, &[]), Some(120));
        // A new leader that learned only 90 from the old one starts its term.
        state.learn_high_watermark(Some(90));
        assert_eq!(state.visible_high_watermark(Role::Follower, 0, 150, &[]), Some(120));
        state.learn_high_watermark(Some(140));
        assert_eq!(state.visible_high_watermark(Role::Follower, 0, 150, &[]), Some(140));
    }

    #[test]
    fn a_leader_that_steps_down_and_leads_again_never_lowers_the_high_watermark() {
        let state = PartitionReplication::default();
        state.learn_high_watermark(Some(40));
        assert_eq!(state.visible_high_watermark(Role::Follower, 0, 100, &[]), Some(40));
        assert_eq!(state.visible_high_watermark(Role::Leader, 7, 100, &[]), Some(100), "alone in the ISR");
        // Deposed: it follows a leader that has not told it anything yet.
        assert_eq!(state.visible_high_watermark(Role::Follower, 7, 100, &[]), Some(100));
        // Leads again, with a follower in sync that has not fetched this
        // term: below the term's start (130), so nothing is shown.
        assert_eq!(state.visible_high_watermark(Role::Leader, 9, 130, &[2]), None);
        assert_eq!(state.advance_high_watermark(Role::Leader, 9, 130, &[2]), 100, "acks=all still sees the value");
        state.record_fetch(2, 130, 130, 1);
        assert_eq!(state.visible_high_watermark(Role::Leader, 9, 130, &[2]), Some(130));
    }

    #[test]
    fn a_restarted_leader_shows_no_high_watermark_until_it_reaches_the_start_of_its_term() {
        // Whole cluster killed and restarted: memory holds no high watermark,
        // and the old leader had shown consumers up to 500.
        let state = PartitionReplication::default();
        assert_eq!(state.visible_high_watermark(Role::Leader, 3, 500, &[2, 3]), None);
        assert_eq!(state.advance_high_watermark(Role::Leader, 3, 500, &[2, 3]), 0);
        state.record_fetch(2, 500, 500, 1);
        state.record_fetch(3, 300, 500, 1);
        assert_eq!(state.visible_high_watermark(Role::Leader, 3, 500, &[2, 3]), None, "300 < the term's start");
        state.record_fetch(3, 500, 500, 2);
        assert_eq!(state.visible_high_watermark(Role::Leader, 3, 500, &[2, 3]), Some(500));
        // Once established it stays established, also as a follower.
        assert_eq!(state.visible_high_watermark(Role::Follower, 3, 500, &[]), Some(500));
    }

    #[test]
    fn a_follower_that_starts_over_shows_nothing_until_it_has_what_the_leader_committed() {
        let state = PartitionReplication::default();
        state.learn_high_watermark(Some(500));
        assert_eq!(state.visible_high_watermark(Role::Follower, 2, 20, &[]), None, "20 of 500 copied");
        assert_eq!(state.visible_high_watermark(Role::Follower, 2, 499, &[]), None);
        assert_eq!(state.visible_high_watermark(Role::Follower, 2, 500, &[]), Some(500));
    }

    #[test]
    fn a_durable_end_that_dips_below_what_was_shown_shows_nothing_instead_of_less() {
        let state = PartitionReplication::default();
        state.learn_high_watermark(Some(100));
        assert_eq!(state.visible_high_watermark(Role::Follower, 2, 100, &[]), Some(100));
        // A reset empties the log before it restarts further on.
        assert_eq!(state.visible_high_watermark(Role::Follower, 2, 40, &[]), None);
        state.learn_high_watermark(Some(300));
        assert_eq!(state.visible_high_watermark(Role::Follower, 2, 300, &[]), Some(300));
    }

    #[test]
    fn a_leader_high_watermark_falls_only_to_a_durable_end_that_fell() {
        let state = PartitionReplication::default();
        assert_eq!(state.advance_leader_high_watermark(50, &[]), 50);
        assert_eq!(state.advance_leader_high_watermark(30, &[]), 30, "a rollback lowered the durable end");
        assert_eq!(state.advance_leader_high_watermark(60, &[]), 60);
        assert_high_watermark_step(60, 60, 60);
    }

    #[test]
    #[should_panic(expected = "high watermark fell")]
    fn a_high_watermark_that_falls_above_the_durable_end_fires_the_assertion() {
        assert_high_watermark_step(60, 40, 80);
    }

    #[test]
    #[should_panic(expected = "past the leader's durable end")]
    fn a_high_watermark_past_the_durable_end_fires_the_assertion() {
        assert_high_watermark_step(60, 90, 80);
    }

    #[test]
    fn a_standalone_node_always_shows_its_durable_end() {
        let state = PartitionReplication::default();
        assert_eq!(state.visible_high_watermark(Role::Standalone, 0, 7, &[]), Some(7));
    }

    #[test]
    fn a_change_marks_each_waiting_read_once_and_a_followers_new_read_replaces_its_old_one() {
        let state = PartitionReplication::default();
        let (first, other) = (Rc::new(FetchWake::new(4)), Rc::new(FetchWake::new(2)));
        assert!(state.register_waiter(2, &first, 3), "the first waiter starts the watcher");
        assert!(!state.register_waiter(3, &other, 1), "one watcher per partition");
        state.wake_waiters();
        state.wake_waiters();
        assert_eq!(first.drain(), vec![3], "marked once until drained");
        assert_eq!(other.drain(), vec![1]);
        assert!(first.drain().is_empty());
        // Follower 2's next read replaces its previous one here.
        let next = Rc::new(FetchWake::new(1));
        state.register_waiter(2, &next, 0);
        state.wake_waiters();
        assert!(first.drain().is_empty(), "the replaced read is not woken");
        assert_eq!(next.drain(), vec![0]);
        assert_eq!(state.waiters.borrow().len(), 2, "one entry per follower");
        // A higher high watermark is news for the waiting reads too.
        assert_eq!(state.advance_leader_high_watermark(10, &[]), 10);
        assert_eq!((next.drain(), other.drain()), (vec![0], vec![1]));
        drop((first, next, other));
        assert!(!state.has_live_waiters(), "ended reads do not count");
        state.stop_watching();
        assert!(state.register_waiter(2, &Rc::new(FetchWake::new(1)), 0), "a stopped watcher is started again");
    }

    #[test]
    fn a_commit_is_news_for_the_waiting_reads_and_a_new_term_forgets_what_followers_stored() {
        let state = PartitionReplication::default();
        let read = Rc::new(FetchWake::new(3));
        state.register_waiter(2, &read, 2);
        let version = state.note_commit();
        assert_eq!(read.drain(), vec![2], "the read re-examines the partition");
        assert_eq!(state.commits.news_for(2), Some(version));
        let stored = state.changed.notified();
        state.record_commits_stored(2, version);
        assert!(
            futures_lite::future::block_on(futures_lite::future::poll_once(stored)).is_some(),
            "commits look again"
        );
        assert!(state.commits.stored_by_all(version, &[2]));
        state.begin_term(5, 0);
        assert!(!state.commits.stored_by_all(version, &[2]), "stored in an earlier term");
    }

    #[test]
    fn caught_up_follows_kafkas_rule() {
        let state = PartitionReplication::opened_empty_at(4);
        state.record_fetch(2, 0, 100, 10);
        assert_eq!(state.follower(2).unwrap().caught_up_ms, 4, "behind: caught up as of the opening, no later");
        state.record_answer(2, 100, 11);
        state.record_fetch(2, 100, 150, 20);
        assert_eq!(state.follower(2).unwrap().caught_up_ms, 11, "has what the previous answer could carry");
        state.record_answer(2, 150, 21);
        state.record_fetch(2, 150, 150, 30);
        assert_eq!(state.follower(2).unwrap().caught_up_ms, 30, "has everything");
    }

    #[test]
    fn a_first_fetch_behind_in_a_partition_opened_with_records_proves_nothing() {
        let state = PartitionReplication::opening(false);
        assert_eq!(state.empty_since_ms(), 0);
        state.record_fetch(2, 0, 5, 90_000);
        assert_eq!(state.follower(2).unwrap().caught_up_ms, 0, "only a read shows it has the records");
    }

    #[test]
    fn a_first_fetch_behind_in_a_partition_opened_long_after_the_term_began_is_not_counted_as_never_caught_up() {
        let opened_ms = 60_000;
        let state = PartitionReplication::opened_empty_at(opened_ms);
        state.record_fetch(2, 0, 5, opened_ms + 40);
        let position = state.follower(2).unwrap();
        assert_eq!(position.caught_up_ms, opened_ms, "as it counted before its first fetch");
        state.record_answer(2, 5, opened_ms + 41);
        state.record_fetch(2, 5, 5, opened_ms + 45);
        assert_eq!(state.follower(2).unwrap().caught_up_ms, opened_ms + 45);
    }
}
