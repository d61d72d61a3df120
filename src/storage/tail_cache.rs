//! The partition's tail cache: the most recently appended batches, exactly
//! as written (stamped with their offsets and epoch), kept in memory so that
//! followers and consumers reading the tail are served without reading back
//! from disk what was just written with O_DIRECT (which bypasses the page
//! cache). Bounded per partition (`tail_cache_bytes`, one ring buffer) and
//! per shard thread (`tail_cache_budget_bytes`): once the shard's rings use
//! the budget, further partitions cache nothing.
//!
//! Only durable data is served from it (reads stop at the durable end as
//! they do from disk), and every batch in it passed CRC validation at append.
//!
//! It is filled only while someone reads at the tail: a read that reached
//! the durable end, or that the cache served, within the last
//! [`TAIL_READER_WINDOW`]. Copying every appended batch into the ring cost
//! a producing node 10-20 % of its CPU when no one read what it held
//! (bulk loads, consumers far behind, a node without followers); a reader
//! that catches up turns it on again, and the batches appended since are
//! served from memory.

use std::cell::Cell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long after a read at the tail appended batches are still cached:
/// far longer than the long polls of followers and of Kafka consumers
/// (`fetch.max.wait.ms`, 500 ms by default). A poll that waits longer (up
/// to `limits.max_fetch_wait_ms`) reads the batch that ends it from disk,
/// and that read turns the cache on again.
pub const TAIL_READER_WINDOW: Duration = Duration::from_secs(10);

thread_local! {
    static HELD_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Bytes held by the tail caches of the partitions on this thread.
pub fn held_bytes() -> u64 {
    HELD_BYTES.with(Cell::get)
}

fn adjust_held(delta: i64) {
    HELD_BYTES.with(|held| held.set(held.get().saturating_add_signed(delta)));
}

/// Where one cached batch sits in the ring.
#[derive(Debug, Clone, Copy)]
struct Entry {
    base_offset: u64,
    next_offset: u64,
    position: usize,
    length: usize,
}

/// Recent batches of one partition, oldest first, offsets contiguous, in
/// one ring buffer allocated once (the append path allocates nothing per
/// batch: it copies into the ring).
#[derive(Debug, Default)]
pub struct TailCache {
    ring: Vec<u8>,
    entries: VecDeque<Entry>,
    head: usize,
    bytes: u64,
    /// The last read at the tail (see the module comment).
    tail_read_at: Option<Instant>,
}

/// Batches served from the cache.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CachedRead {
    /// Concatenated batches.
    pub bytes: Vec<u8>,
    /// Offset after the last batch.
    pub next_offset: u64,
    /// Number of batches.
    pub batch_count: usize,
}

impl TailCache {
    /// Remember a just-appended batch. The ring (`limit_bytes`) is taken
    /// from the thread's budget (`budget_bytes`) on first use; when the
    /// budget is spent this partition caches nothing. 0 disables caching.
    pub fn push(&mut self, base_offset: u64, next_offset: u64, batch: &[u8], limit_bytes: u64, budget_bytes: u64) {
        assert!(base_offset < next_offset, "a cached batch holds records: {base_offset}..{next_offset}");
        assert!(!batch.is_empty(), "a cached batch holds bytes");
        if self.entries.back().is_some_and(|last| last.next_offset != base_offset) {
            self.clear();
        }
        if self.ring.is_empty() {
            if limit_bytes == 0 || held_bytes() + limit_bytes > budget_bytes {
                return;
            }
            self.ring = vec![0; limit_bytes as usize];
            adjust_held(limit_bytes as i64);
        }
        let capacity = self.ring.len();
        if batch.len() > capacity {
            self.clear();
            return;
        }
        while capacity - (self.bytes as usize) < batch.len() {
            let oldest = self.entries.pop_front().expect("used bytes belong to entries");
            self.bytes -= oldest.length as u64;
        }
        let position = self.head;
        let first = batch.len().min(capacity - position);
        self.ring[position..position + first].copy_from_slice(&batch[..first]);
        self.ring[..batch.len() - first].copy_from_slice(&batch[first..]);
        self.head = (position + batch.len()) % capacity;
        self.entries.push_back(Entry { base_offset, next_offset, position, length: batch.len() });
        self.bytes += batch.len() as u64;
        assert!(self.bytes as usize <= capacity, "the ring holds {} bytes in {capacity}", self.bytes);
    }

    /// Forget every batch (truncation, disk-full rollback); keeps the ring.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.head = 0;
        self.bytes = 0;
    }

    fn copy_out(&self, entry: &Entry, out: &mut Vec<u8>) {
        let first = entry.length.min(self.ring.len() - entry.position);
        out.extend_from_slice(&self.ring[entry.position..entry.position + first]);
        out.extend_from_slice(&self.ring[..entry.length - first]);
    }

    /// Whole batches from the one holding `offset`, below `limit_offset`,
    /// up to about `max_bytes` (at least one batch) — or None when the
    /// cache does not hold `offset`. The entries are chosen first and the
    /// answer allocated once at its size: grown batch by batch, a
    /// multi-megabyte answer was copied again at every doubling.
    pub fn read(&self, offset: u64, max_bytes: usize, limit_offset: u64) -> Option<CachedRead> {
        let first = self.entries.front()?;
        if offset < first.base_offset || offset >= limit_offset {
            return None;
        }
        let start = self.entries.partition_point(|entry| entry.next_offset <= offset);
        let (count, total_bytes) = self.entries_within(start, max_bytes, limit_offset);
        // Nothing cached at or after `offset` below the limit: let the disk path answer.
        if count == 0 {
            return None;
        }
        let mut read = CachedRead { bytes: Vec::with_capacity(total_bytes), next_offset: offset, batch_count: 0 };
        for entry in self.entries.range(start..start + count) {
            // What is served is what was pushed: the first batch holds
            // `offset`, each next one starts where the one before ended.
            let first = read.batch_count == 0;
            let dense = if first { entry.base_offset <= offset } else { entry.base_offset == read.next_offset };
            assert!(dense && offset < entry.next_offset, "tail cache entry {entry:?} does not follow offset {offset}");
            let served_bytes = read.bytes.len();
            self.copy_out(entry, &mut read.bytes);
            assert_eq!(read.bytes.len() - served_bytes, entry.length, "a cached batch comes out whole");
            read.next_offset = entry.next_offset;
            read.batch_count += 1;
        }
        assert_eq!(read.bytes.len(), total_bytes, "the answer is the entries chosen");
        Some(read)
    }

    /// How many entries from `start` a read takes, and their bytes: those
    /// below `limit_offset`, within `max_bytes` after the first.
    fn entries_within(&self, start: usize, max_bytes: usize, limit_offset: u64) -> (usize, usize) {
        let (mut count, mut total_bytes) = (0, 0);
        for entry in self.entries.range(start..) {
            if entry.base_offset >= limit_offset || (count > 0 && total_bytes + entry.length > max_bytes) {
                break;
            }
            count += 1;
            total_bytes += entry.length;
        }
        (count, total_bytes)
    }

    /// A read at the tail happened `now`: batches appended within
    /// [`TAIL_READER_WINDOW`] from now are cached.
    pub fn note_tail_reader(&mut self, now: Instant) {
        self.tail_read_at = Some(now);
    }

    /// Whether a batch appended `now` is worth caching: someone read at the
    /// tail within [`TAIL_READER_WINDOW`].
    pub fn has_tail_reader(&self, now: Instant) -> bool {
        self.tail_read_at.is_some_and(|at| now.saturating_duration_since(at) < TAIL_READER_WINDOW)
    }

    /// True when the cache holds the batch with `offset`.
    pub fn holds(&self, offset: u64) -> bool {
        self.entries.front().is_some_and(|first| first.base_offset <= offset)
            && self.entries.back().is_some_and(|last| offset < last.next_offset)
    }

    /// Bytes of batches held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        adjust_held(-(self.ring.len() as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_whole_batches_below_the_limit_and_stays_bounded() {
        let mut cache = TailCache::default();
        for index in 0..10u64 {
            cache.push(index * 10, index * 10 + 10, &[index as u8; 100], 450, u64::MAX);
        }
        assert_eq!(cache.bytes(), 400, "per-partition bound: four batches fit a 450-byte ring");
        assert!(cache.read(55, 1000, 100).is_none(), "evicted");
        let read = cache.read(67, 250, 100).unwrap();
        assert_eq!((read.next_offset, read.batch_count), (80, 2), "whole batches within max_bytes");
        assert_eq!(read.bytes[..100], [6u8; 100]);
        for index in 6..10u8 {
            let one = cache.read(u64::from(index) * 10, 1, 100).unwrap();
            assert_eq!(one.bytes, [index; 100], "batch {index} comes out whole, wrapped around the ring or not");
        }
        assert!(cache.read(90, 1000, 90).is_none(), "not durable yet");
        assert_eq!(cache.read(85, 1000, 90).unwrap().next_offset, 90);
        cache.push(500, 510, &[1; 10], 450, u64::MAX);
        assert!(cache.read(90, 1000, 1000).is_none(), "a gap clears the cache");
    }

    #[test]
    fn served_batches_are_the_pushed_bytes_in_offset_order() {
        let mut cache = TailCache::default();
        let batches: Vec<Vec<u8>> = (0..5u8).map(|index| vec![index; 30 + usize::from(index)]).collect();
        for (index, batch) in batches.iter().enumerate() {
            let base_offset = index as u64 * 2;
            cache.push(base_offset, base_offset + 2, batch, 1000, u64::MAX);
        }
        let read = cache.read(3, 1000, 10).unwrap();
        assert_eq!((read.next_offset, read.batch_count), (10, 4));
        assert_eq!(read.bytes, batches[1..].concat(), "the bytes pushed, whole and in order");
    }

    #[test]
    fn a_tail_reader_counts_for_the_window_only() {
        let mut cache = TailCache::default();
        let start = Instant::now();
        assert!(!cache.has_tail_reader(start), "no read yet");
        cache.note_tail_reader(start);
        assert!(cache.has_tail_reader(start + TAIL_READER_WINDOW - Duration::from_millis(1)));
        assert!(!cache.has_tail_reader(start + TAIL_READER_WINDOW));
    }

    #[test]
    #[should_panic(expected = "a cached batch holds records")]
    fn a_batch_without_records_fires_the_push_assertion() {
        TailCache::default().push(5, 5, &[1; 10], 1000, u64::MAX);
    }

    #[test]
    #[should_panic(expected = "does not follow offset")]
    fn a_gap_inside_the_cache_fires_the_read_assertion() {
        let mut cache = TailCache::default();
        cache.push(0, 2, &[1; 10], 1000, u64::MAX);
        cache.push(2, 4, &[2; 10], 1000, u64::MAX);
        // Only a bug could leave a gap (push clears the cache on one).
        cache.entries[1].base_offset = 3;
        let _ = cache.read(0, 1000, 10);
    }

    #[test]
    fn the_thread_budget_bounds_all_partitions_together() {
        let before = held_bytes();
        let mut first = TailCache::default();
        let mut second = TailCache::default();
        first.push(0, 1, &[0; 300], 1000, before + 1500);
        second.push(0, 1, &[0; 300], 1000, before + 1500);
        assert_eq!((first.bytes(), second.bytes()), (300, 0), "over budget: nothing new is cached");
        assert_eq!(held_bytes(), before + 1000);
        drop(first);
        assert_eq!(held_bytes(), before);
    }
}
