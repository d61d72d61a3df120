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
//! Bounded by `limits.buffer_pool_bytes` per thread (their capacity summed);
//! buffers below [`POOLED_BUFFER_MIN_BYTES`] are not pooled (zeroing them
//! costs less than the bookkeeping).

use std::cell::{Cell, RefCell};

use bytes::Bytes;

/// Buffers smaller than this are allocated fresh and not kept.
pub const POOLED_BUFFER_MIN_BYTES: usize = 64 << 10;

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

/// A buffer of exactly `length` bytes that the caller fills whole (from the
/// socket). Its bytes are an earlier request's or zeros: never hand it on
/// before every byte is overwritten.
pub fn take(length: usize) -> Vec<u8> {
    if length < POOLED_BUFFER_MIN_BYTES {
        return vec![0; length];
    }
    let pooled = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let index = pool.iter().rposition(|buffer| buffer.capacity() >= length)?;
        Some(pool.swap_remove(index))
    });
    let Some(mut buffer) = pooled else { return vec![0; length] };
    POOLED_BYTES.with(|pooled| pooled.set(pooled.get() - buffer.capacity()));
    // Initialised up to its old length: only a longer frame zeroes, and
    // only its extension.
    buffer.resize(length, 0);
    assert_eq!(buffer.len(), length, "a pooled frame has the length asked for");
    buffer
}

/// `frame` (filled whole) as shared bytes that return it to the pool of the
/// thread that drops the last of them.
pub fn share(frame: Vec<u8>) -> Bytes {
    if frame.capacity() < POOLED_BUFFER_MIN_BYTES {
        return Bytes::from(frame);
    }
    Bytes::from_owner(PooledFrame(frame))
}

/// Keep `buffer` for a later [`take`] on this thread, if the pool has room.
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

fn keep(pool: &RefCell<Vec<Vec<u8>>>, buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    let limit_bytes = LIMIT_BYTES.with(Cell::get);
    let pooled_bytes = POOLED_BYTES.with(Cell::get);
    if pooled_bytes + capacity > limit_bytes {
        return;
    }
    let Ok(mut pool) = pool.try_borrow_mut() else { return };
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
        // Over the bound, a frame is freed instead of kept.
        let frames: Vec<Bytes> = (0..3).map(|_| share(take(2 * MIN))).collect();
        drop(frames);
        assert_eq!(pooled_bytes(), 4 * MIN);
        set_limit_bytes(0);
        drop(share(longer));
        assert_eq!(pooled_bytes(), 4 * MIN);
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
        give_back(buffer);
        assert_eq!(pooled_bytes(), MIN + 10);
        let again = take(MIN + 5);
        assert_eq!((again.len(), pooled_bytes()), (MIN + 5, 0));
        assert!(again.iter().all(|&byte| byte == 3), "reused, not zeroed");
        give_back(again);
        give_back(take(2 * MIN));
        assert_eq!(pooled_bytes(), MIN + 10, "over the bound: freed");
    }
}
