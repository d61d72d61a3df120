//! The answer body a leader last sent one follower for a partition, kept
//! for the others. Followers in step ask for the same range moments apart:
//! each copied the batches out of the tail cache again (15 % of a leader's
//! CPU samples with two followers and incompressible records) and, when
//! lz4 paid, compressed them again. The body is shared bytes, so every
//! follower's answer frame points at the same memory.
//!
//! Bounded per shard thread by `cluster.replica_answer_cache_bytes` (the
//! memory the kept bodies hold, summed): an answer that does not fit is not
//! kept. An answer is dropped once every follower known to the partition
//! was given it, when the next answer replaces it, or [`KEPT_FOR_MS`] after
//! it was kept, so a healthy cluster holds each one only between its
//! followers' reads and a follower that is down pins none for long.

use std::cell::{Cell, RefCell};

use bytes::Bytes;

thread_local! {
    /// Memory the bodies kept by the partitions of this thread (one shard)
    /// hold (their `held_bytes`, summed).
    static KEPT_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// Memory the bodies kept by the partitions of the current thread hold.
pub fn kept_answer_bytes() -> usize {
    KEPT_BYTES.with(Cell::get)
}

/// How long a kept body may be given: followers in step ask for the same
/// range within milliseconds of each other, and one that comes later reads
/// for itself. It also bounds how long a follower that is down, or a
/// partition that fell idle or whose leader was deposed, holds one.
pub const KEPT_FOR_MS: u64 = 1_000;

/// An answer body, what it holds, and the log generation it was read under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentAnswer {
    /// First offset asked for.
    pub offset: u64,
    /// Offset after its last batch.
    pub next_offset: u64,
    /// The log's generation when its batches were read: a cut since (a
    /// truncation, a rollback) may have removed them.
    pub generation: u64,
    /// Bytes of its batches before compression.
    pub uncompressed_bytes: usize,
    /// The body as sent: an lz4 block, or the batches stored raw.
    pub body: Bytes,
    /// Memory the body holds (the allocation it shares, which may be
    /// larger than the body), counted against the budget.
    pub held_bytes: usize,
}

/// A kept answer, when it was kept, and the followers it was given to.
#[derive(Debug)]
struct Kept {
    answer: SentAnswer,
    kept_ms: u64,
    given_to: Vec<u64>,
}

impl Kept {
    /// Kept [`KEPT_FOR_MS`] or longer at `now_ms`: no longer given.
    fn is_expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.kept_ms) >= KEPT_FOR_MS
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        let bytes = self.answer.held_bytes;
        let _ = KEPT_BYTES.try_with(|kept| kept.set(kept.get().saturating_sub(bytes)));
    }
}

/// One partition's last sent answer.
#[derive(Debug, Default)]
pub struct SentAnswerCache {
    kept: RefCell<Option<Kept>>,
}

impl SentAnswerCache {
    /// The answer kept for a read by `follower` from `offset` at `now_ms`,
    /// when one starts there, holds at most `max_uncompressed_bytes`, is
    /// younger than [`KEPT_FOR_MS`], and `valid` says its batches are still
    /// the log's (same generation, log open); a stale one is dropped. Once
    /// every one of `followers` was given it, it is dropped too.
    pub fn give(
        &self,
        (follower, now_ms): (u64, u64),
        offset: u64,
        max_uncompressed_bytes: usize,
        mut followers: impl Iterator<Item = u64>,
        valid: impl Fn(&SentAnswer) -> bool,
    ) -> Option<SentAnswer> {
        let mut kept = self.kept.borrow_mut();
        let entry = kept.as_mut()?;
        if entry.is_expired(now_ms) || !valid(&entry.answer) {
            *kept = None;
            return None;
        }
        if entry.answer.offset != offset || entry.answer.uncompressed_bytes > max_uncompressed_bytes {
            return None;
        }
        if !entry.given_to.contains(&follower) {
            entry.given_to.push(follower);
        }
        let answer = entry.answer.clone();
        if followers.all(|id| entry.given_to.contains(&id)) {
            *kept = None;
        }
        Some(answer)
    }

    /// Keep `answer`, just built for `follower` at `now_ms`, for the other
    /// followers, replacing the one kept before, when this thread's kept
    /// bodies stay within `budget_bytes`; with no other follower, keep
    /// nothing. An empty answer (a long poll that found nothing) changes
    /// nothing.
    pub fn keep(
        &self,
        (follower, now_ms): (u64, u64),
        answer: SentAnswer,
        mut followers: impl Iterator<Item = u64>,
        budget_bytes: usize,
    ) {
        if answer.body.is_empty() {
            return;
        }
        let mut kept = self.kept.borrow_mut();
        *kept = None;
        let bytes = answer.held_bytes;
        if !followers.any(|id| id != follower) || kept_answer_bytes() + bytes > budget_bytes {
            return;
        }
        KEPT_BYTES.with(|held| held.set(held.get() + bytes));
        *kept = Some(Kept { answer, kept_ms: now_ms, given_to: vec![follower] });
    }

    /// Drop the kept answer if it is older than [`KEPT_FOR_MS`] at `now_ms`
    /// (a shard timer calls this: a partition no follower reads again
    /// would hold it, and the budget, for good).
    pub fn expire(&self, now_ms: u64) {
        let mut kept = self.kept.borrow_mut();
        if kept.as_ref().is_some_and(|entry| entry.is_expired(now_ms)) {
            *kept = None;
        }
    }

    /// Whether an answer is kept.
    #[cfg(test)]
    pub fn is_kept(&self) -> bool {
        self.kept.borrow().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(offset: u64, next_offset: u64, body_bytes: usize) -> SentAnswer {
        let body = Bytes::from(vec![7u8; body_bytes]);
        let (uncompressed_bytes, held_bytes) = (body_bytes * 2, body_bytes);
        SentAnswer { offset, next_offset, generation: 1, uncompressed_bytes, body, held_bytes }
    }

    fn give(cache: &SentAnswerCache, follower: u64, offset: u64, max: usize, ids: &[u64]) -> Option<SentAnswer> {
        cache.give((follower, 10), offset, max, ids.iter().copied(), |_| true)
    }

    #[test]
    fn an_answer_goes_to_each_other_follower_and_is_dropped_when_all_had_it() {
        let cache = SentAnswerCache::default();
        let followers = [2, 3, 4];
        cache.keep((2, 0), answer(10, 20, 100), followers.iter().copied(), 1000);
        assert_eq!(kept_answer_bytes(), 100);
        let shared = give(&cache, 3, 10, 200, &followers).expect("kept for follower 3");
        assert_eq!((shared.offset, shared.next_offset, shared.body.len()), (10, 20, 100));
        let again = give(&cache, 3, 10, 200, &followers).expect("still kept for follower 4");
        assert_eq!(again.body.as_ptr(), shared.body.as_ptr(), "the same bytes, not a copy");
        assert!(cache.is_kept());
        give(&cache, 4, 10, 200, &followers).expect("kept for follower 4");
        assert!(!cache.is_kept(), "every follower had it");
        assert_eq!(kept_answer_bytes(), 0);
    }

    #[test]
    fn an_answer_from_another_offset_too_large_stale_or_old_is_not_given() {
        let cache = SentAnswerCache::default();
        let followers = [2, 3];
        cache.keep((2, 0), answer(10, 20, 100), followers.iter().copied(), 1000);
        assert!(give(&cache, 3, 11, 200, &followers).is_none(), "another offset");
        assert!(give(&cache, 3, 10, 199, &followers).is_none(), "more than the read may take");
        assert!(cache.is_kept(), "a mismatch keeps it for a read that fits");
        let cut = |answer: &SentAnswer| answer.generation == 2;
        assert!(cache.give((3, 10), 10, 200, followers.iter().copied(), cut).is_none(), "a cut since");
        assert!(!cache.is_kept(), "a stale answer is dropped");
        cache.keep((2, 0), answer(10, 20, 100), followers.iter().copied(), 1000);
        let late = cache.give((3, KEPT_FOR_MS), 10, 200, followers.iter().copied(), |_| true);
        assert!(late.is_none() && !cache.is_kept(), "too old to give: dropped");
        cache.keep((2, 0), answer(10, 20, 100), followers.iter().copied(), 1000);
        cache.expire(KEPT_FOR_MS - 1);
        assert!(cache.is_kept());
        cache.expire(KEPT_FOR_MS);
        assert!(!cache.is_kept(), "the timer drops what no follower came for");
        assert_eq!(kept_answer_bytes(), 0);
    }

    #[test]
    fn kept_answers_stay_within_the_threads_budget_and_a_lone_follower_keeps_none() {
        let (first, second, third) =
            (SentAnswerCache::default(), SentAnswerCache::default(), SentAnswerCache::default());
        let followers = || [2, 3].into_iter();
        first.keep((2, 0), answer(0, 5, 600), followers(), 1000);
        second.keep((2, 0), answer(0, 5, 600), followers(), 1000);
        assert!(first.is_kept() && !second.is_kept(), "over the budget: not kept");
        assert_eq!(kept_answer_bytes(), 600);
        third.keep((2, 0), answer(0, 5, 100), [2].into_iter(), 1000);
        assert!(!third.is_kept(), "no other follower to give it to");
        first.keep((2, 0), answer(5, 5, 0), followers(), 1000);
        assert!(first.is_kept(), "an empty answer leaves the kept one");
        first.keep((2, 0), answer(5, 9, 300), followers(), 1000);
        assert_eq!(kept_answer_bytes(), 300, "replaced, and the old one's bytes given back");
        let mut big = answer(9, 12, 10);
        big.held_bytes = 800;
        first.keep((2, 0), big, followers(), 1000);
        assert_eq!(kept_answer_bytes(), 800, "the allocation is counted, not the body");
        drop(first);
        assert_eq!(kept_answer_bytes(), 0);
    }
}
