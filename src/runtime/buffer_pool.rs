//! Large byte buffers reused per shard thread, so a request's buffer is not
//! zero filled before the socket overwrites it. A new `vec![0; length]` per
//! produce (a megabyte at a time) was 4-9 % of a producing node's CPU
//! samples in `memset` (Kafka frames, native produce batches; a follower's
//! replica answers too), plus the page faults of memory the heap trimmer
//! had handed back.
//!
//! A reader takes a buffer here and fills it whole from the socket before
//! anything looks at it, so a pooled buffer's old bytes are never read.
//! Buffers come back two ways: a native produce's batch is given back once
//! the log has copied it ([`give_back`]); a Kafka frame, or a replica
//! answer on a follower, is handed on as [`bytes::Bytes`] that own it
//! ([`share`]) and returns when the last slice of it is dropped. Either way
//! it joins the pool of the thread where that happens (the partition's
//! owner, for a produce).
//!
//! Buffers a thread builds whole by appending (a Kafka produce's ringlog
//! batch, a Kafka fetch's transcoded records and its response frame) come
//! from here too ([`take_empty`]): the control thread trims the heap every
//! `limits.heap_trim_interval_ms`, so a fresh megabyte was faulted in page
//! by page, and a Kafka consumer's node spent a third of its samples in
//! page faults (`docs/BENCHMARKS.md`, "Kafka answers in pooled buffers").
//!
//! Bounded by `limits.buffer_pool_bytes` per thread (their capacity summed);
//! a buffer given back to a full pool displaces the oldest ones, so the
//! pool follows what the thread serves now. A request gets the smallest
//! pooled buffer that holds it, never one more than twice its size. Fresh
//! buffers are allocated in size classes (eight per power of two) so that
//! requests of nearly the same size fit each other's buffers. Buffers below
//! [`POOLED_BUFFER_MIN_BYTES`] are not pooled (zeroing them costs less than
//! the bookkeeping).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// Buffers smaller than this are allocated fresh and not kept.
pub const POOLED_BUFFER_MIN_BYTES: usize = 64 << 10;

/// Buffers of [`POOLED_BUFFER_MIN_BYTES`] and more handed out from a pool,
/// and allocated because none fitted, over every thread
/// (`ringlog_buffer_pool_takes_total`).
static TAKEN_FROM_POOL: AtomicU64 = AtomicU64::new(0);
static TAKEN_FRESH: AtomicU64 = AtomicU64::new(0);

/// Large buffers handed out so far: (from a pool, allocated fresh).
pub fn takes() -> (u64, u64) {
    (TAKEN_FROM_POOL.load(Ordering::Relaxed), TAKEN_FRESH.load(Ordering::Relaxed))
}

thread_local! {
    /// Buffers ready for reuse, newest last.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Capacity held by `POOL`.
    static POOLED_BYTES: Cell<usize> = const { Cell::new(0) };
    /// This thread's bound (`limits.buffer_pool_bytes`); 0 until the shard
    /// sets it, so a thread that is no shard keeps nothing.
    static LIMIT_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// Set this thread's bound (each shard, at start).
pub fn set_limit_bytes(limit_bytes: usize) {
    LIMIT_BYTES.with(|limit| limit.set(limit_bytes));
}

/// Bytes a buffer being filled from a socket is zeroed ahead of its first
/// read ([`unfilled`]); after that, as many as have arrived (doubling), so
/// what it commits stays within this or twice what arrived.
pub const FIRST_FILL_BYTES: usize = 16 << 10;

/// A buffer for `length` bytes that the caller fills whole from a socket
/// through [`unfilled`] (or [`read_to_length`]): room for all of them, but
/// only what a pooled buffer held already is initialised (its old bytes:
/// never hand it on before every byte is overwritten). A fresh buffer's
/// pages are committed as the bytes arrive (16 KiB before the first, at
/// most twice what arrived after), not when a length prefix announces
/// them: zeroed whole at once, 10 000 connections each sending the prefix
/// of a 17 MiB frame and nothing more committed 170 GB.
pub fn take_unfilled(length: usize) -> Vec<u8> {
    if length < POOLED_BUFFER_MIN_BYTES {
        return vec![0; length];
    }
    let Some(mut buffer) = take_pooled(length) else { return fresh(length) };
    // Pooled memory is committed already; a shorter buffer's extension is
    // zeroed step by step as it is filled.
    buffer.truncate(length);
    buffer
}

/// Where the next socket read into `buffer` (from [`take_unfilled`],
/// `filled` of its `length` bytes read) goes: zeroed ahead of the reads,
/// [`FIRST_FILL_BYTES`] at first and then as much again as arrived, so
/// what is committed follows what arrived (a frame of 1 MiB takes seven
/// steps). Empty once `filled` reaches `length`.
pub fn unfilled(buffer: &mut Vec<u8>, filled: usize, length: usize) -> &mut [u8] {
    assert!(filled <= buffer.len() && buffer.len() <= length, "filled within the initialised part, within the length");
    if filled == buffer.len() && filled < length {
        buffer.resize(length.min(filled + filled.max(FIRST_FILL_BYTES)), 0);
    }
    &mut buffer[filled..]
}

/// Read from `reader` into `buffer` (from [`take_unfilled`], `filled` of
/// its `length` bytes read) until it holds all `length`; a stream that
/// ends first is `UnexpectedEof`.
pub async fn read_to_length(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    buffer: &mut Vec<u8>,
    mut filled: usize,
    length: usize,
) -> std::io::Result<()> {
    use futures_lite::AsyncReadExt;
    while filled < length {
        let read = reader.read(unfilled(buffer, filled, length)).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += read;
    }
    assert_eq!(buffer.len(), length, "filled whole");
    Ok(())
}

/// [`take_unfilled`], zeroed up to `length` (the tests' shorthand).
#[cfg(test)]
fn take(length: usize) -> Vec<u8> {
    let mut buffer = take_unfilled(length);
    buffer.resize(length, 0);
    buffer
}

/// An empty buffer that holds `capacity` bytes before it grows, for a
/// caller that appends every byte it will read (a batch being built): a
/// pooled one when one is large enough, so a megabyte is not allocated
/// (and, once the heap trimmer has handed it back, faulted in page by
/// page) per Kafka produce.
pub fn take_empty(capacity: usize) -> Vec<u8> {
    if capacity < POOLED_BUFFER_MIN_BYTES {
        return Vec::with_capacity(capacity);
    }
    let Some(mut buffer) = take_pooled(capacity) else { return fresh(capacity) };
    buffer.clear();
    buffer
}

/// A fresh, empty buffer of `capacity`'s size class.
fn fresh(capacity: usize) -> Vec<u8> {
    TAKEN_FRESH.fetch_add(1, Ordering::Relaxed);
    Vec::with_capacity(size_class(capacity))
}

/// `bytes` rounded up to a sixteenth of the power of two at or above it:
/// at most an eighth more than asked for, eight sizes per doubling.
fn size_class(bytes: usize) -> usize {
    let step = (bytes.next_power_of_two() / 16).max(1);
    bytes.div_ceil(step).saturating_mul(step)
}

/// The smallest pooled buffer that holds `capacity` bytes, out of the pool;
/// none more than twice that, so a small request does not hold (and its
/// answer budget not undercount) a buffer a large one will need next.
fn take_pooled(capacity: usize) -> Option<Vec<u8>> {
    let fits = |buffer: &Vec<u8>| (capacity..=capacity.saturating_mul(2)).contains(&buffer.capacity());
    let buffer = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (index, _) =
            pool.iter().enumerate().filter(|(_, buffer)| fits(buffer)).min_by_key(|(_, buffer)| buffer.capacity())?;
        // `remove`, not `swap_remove`: the pool stays oldest first.
        Some(pool.remove(index))
    })?;
    POOLED_BYTES.with(|pooled| pooled.set(pooled.get() - buffer.capacity()));
    TAKEN_FROM_POOL.fetch_add(1, Ordering::Relaxed);
    Some(buffer)
}

/// `frame` (filled whole) as shared bytes that return it to the pool of the
/// thread that drops the last of them.
pub fn share(frame: Vec<u8>) -> Bytes {
    if frame.capacity() < POOLED_BUFFER_MIN_BYTES {
        return Bytes::from(frame);
    }
    Bytes::from_owner(PooledFrame(frame))
}

/// Keep `buffer` for a later [`take_unfilled`] or [`take_empty`] on this
/// thread, if the pool has room.
pub fn give_back(buffer: Vec<u8>) {
    if buffer.capacity() < POOLED_BUFFER_MIN_BYTES {
        return;
    }
    // During thread teardown the pool may be gone: the buffer is freed.
    let _ = POOL.try_with(|pool| keep(pool, buffer));
}

/// A frame's buffer owned by its `Bytes`.
struct PooledFrame(Vec<u8>);

impl AsRef<[u8]> for PooledFrame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PooledFrame {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}

/// Keep `buffer` as the newest, freeing the oldest ones it displaces; a
/// buffer larger than the whole bound is freed itself.
fn keep(pool: &RefCell<Vec<Vec<u8>>>, buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    let limit_bytes = LIMIT_BYTES.with(Cell::get);
    if capacity > limit_bytes {
        return;
    }
    let Ok(mut pool) = pool.try_borrow_mut() else { return };
    let mut pooled_bytes = POOLED_BYTES.with(Cell::get);
    // The oldest buffers that must go to make room, freed in one pass.
    let mut displaced = 0;
    while pooled_bytes + capacity > limit_bytes {
        pooled_bytes -= pool[displaced].capacity();
        displaced += 1;
    }
    pool.drain(..displaced);
    pool.push(buffer);
    POOLED_BYTES.with(|pooled| pooled.set(pooled_bytes + capacity));
}

/// Bytes this thread's pool holds.
#[cfg(test)]
fn pooled_bytes() -> usize {
    POOLED_BYTES.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_frame_is_reused_without_zeroing_and_the_pool_stays_bounded() {
        const MIN: usize = POOLED_BUFFER_MIN_BYTES;
        set_limit_bytes(4 * MIN);
        let mut frame = take(2 * MIN);
        frame.fill(7);
        let shared = share(frame);
        let slice = shared.slice(10..20);
        drop(shared);
        assert_eq!(pooled_bytes(), 0, "a slice still holds the frame");
        drop(slice);
        assert_eq!(pooled_bytes(), 2 * MIN);
        let reused = take(MIN + 1);
        assert_eq!((reused.len(), pooled_bytes()), (MIN + 1, 0));
        assert!(reused.iter().all(|&byte| byte == 7), "the old bytes were kept, not zeroed");
        drop(share(reused));
        assert_eq!(pooled_bytes(), 2 * MIN, "the buffer came back at its capacity");
        // A longer frame than any pooled one gets a fresh, zeroed buffer.
        let longer = take(3 * MIN);
        assert!(longer.iter().all(|&byte| byte == 0));
        assert_eq!(pooled_bytes(), 2 * MIN, "the shorter one stays pooled");
        // Over the bound, the newest frames displace the oldest.
        let frames: Vec<Bytes> = (0..3).map(|_| share(take(2 * MIN))).collect();
        drop(frames);
        assert_eq!(pooled_bytes(), 4 * MIN);
        set_limit_bytes(3 * MIN);
        drop(share(longer));
        assert_eq!(pooled_bytes(), 3 * MIN, "the longer frame displaced both others");
        set_limit_bytes(2 * MIN);
        give_back(vec![0; 3 * MIN]);
        assert_eq!(pooled_bytes(), 3 * MIN, "a buffer larger than the bound is freed, displacing nothing");
        set_limit_bytes(0);
        assert_eq!(take(3 * MIN).len(), 3 * MIN);
        assert_eq!(pooled_bytes(), 0);
    }

    #[test]
    fn small_buffers_are_not_pooled() {
        set_limit_bytes(1 << 20);
        drop(share(take(100)));
        give_back(take(100));
        assert_eq!(pooled_bytes(), 0);
    }

    #[test]
    fn a_given_back_buffer_is_taken_again_at_the_length_asked_for() {
        const MIN: usize = POOLED_BUFFER_MIN_BYTES;
        set_limit_bytes(2 * MIN);
        let mut buffer = take(MIN + 10);
        buffer.fill(3);
        let class = buffer.capacity();
        assert_eq!(class, MIN + MIN / 8, "allocated in its size class");
        give_back(buffer);
        assert_eq!(pooled_bytes(), class);
        let again = take(class);
        assert_eq!((again.len(), pooled_bytes()), (class, 0), "a request up to the class fits");
        assert!(again[..MIN + 10].iter().all(|&byte| byte == 3), "reused, not zeroed");
        give_back(again);
        give_back(take(2 * MIN));
        assert_eq!(pooled_bytes(), 2 * MIN, "over the bound: the oldest is freed");
        set_limit_bytes(0);
        give_back(vec![0; MIN]);
        assert_eq!(pooled_bytes(), 2 * MIN);
    }

    #[test]
    fn an_empty_buffer_comes_from_the_pool_without_its_old_bytes() {
        const MIN: usize = POOLED_BUFFER_MIN_BYTES;
        set_limit_bytes(4 * MIN);
        give_back(vec![9; 2 * MIN]);
        let empty = take_empty(MIN + 1);
        assert_eq!((empty.len(), empty.capacity(), pooled_bytes()), (0, 2 * MIN, 0));
        give_back(empty);
        let fresh = take_empty(3 * MIN);
        assert_eq!((fresh.capacity(), pooled_bytes()), (3 * MIN, 2 * MIN), "none large enough: a fresh one");
        assert_eq!(take_empty(100).capacity(), 100, "small ones are not pooled");
        set_limit_bytes(0);
        give_back(fresh);
    }

    #[test]
    fn the_smallest_buffer_within_twice_is_taken_and_the_oldest_displaced() {
        const MIN: usize = POOLED_BUFFER_MIN_BYTES;
        set_limit_bytes(10 * MIN);
        for capacity in [4 * MIN, 2 * MIN, 3 * MIN] {
            give_back(Vec::with_capacity(capacity));
        }
        assert_eq!(take_empty(MIN + MIN / 2).capacity(), 2 * MIN, "the smallest that fits");
        assert_eq!(take_empty(MIN).capacity(), MIN, "none within twice the size: a fresh one");
        give_back(Vec::with_capacity(2 * MIN));
        // Pool, oldest first: 4, 3, 2. Taking the oldest keeps the order.
        assert_eq!(take_empty(3 * MIN + 1).capacity(), 4 * MIN);
        give_back(Vec::with_capacity(6 * MIN));
        assert_eq!(pooled_bytes(), 8 * MIN, "only the oldest (3) displaced");
        assert_eq!(take_empty(2 * MIN).capacity(), 2 * MIN);
        assert_eq!(take_empty(6 * MIN).capacity(), 6 * MIN);
        assert_eq!(pooled_bytes(), 0);
        set_limit_bytes(0);
    }

    #[test]
    fn size_classes_waste_at_most_an_eighth() {
        for bytes in [1, 7, 64 << 10, (64 << 10) + 1, 1 << 20, (1 << 20) + 1, 3 << 20, 8_400_000, usize::MAX / 4] {
            let class = size_class(bytes);
            assert!(class >= bytes && class - bytes <= bytes / 8 + 1, "{bytes} -> {class}");
        }
        assert_eq!(size_class((1 << 20) + 1), (1 << 20) + (1 << 17));
    }
}
