//! Frame buffers reused per shard thread, so a large frame is not zero
//! filled before the socket overwrites it. A new `vec![0; length]` per Kafka
//! produce frame (a megabyte at a time) was 8-9 % of a producing node's CPU
//! samples in `memset`, plus the page faults of memory the heap trimmer had
//! handed back.
//!
//! A frame's buffer is taken here by the reader, filled whole from the
//! socket, and handed on as [`bytes::Bytes`] that owns it: when the last
//! slice of the frame is dropped (on whichever shard the request ended, as
//! a produce runs on the partition's owner), the buffer comes back to that
//! thread's pool. Only whole frames are handed on, so a pooled buffer's old
//! bytes are never read: every byte of a frame is the socket's before it
//! is used.
//!
//! Bounded by `limits.frame_pool_bytes` per thread (their capacity summed);
//! frames below [`POOLED_FRAME_MIN_BYTES`] are not pooled (zeroing them
//! costs less than the bookkeeping).

use std::cell::{Cell, RefCell};

use bytes::Bytes;

/// Frames smaller than this are allocated fresh and not kept.
pub const POOLED_FRAME_MIN_BYTES: usize = 64 << 10;

thread_local! {
    /// Buffers ready for reuse, newest last.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Capacity held by `POOL`.
    static POOLED_BYTES: Cell<usize> = const { Cell::new(0) };
    /// This thread's bound (`limits.frame_pool_bytes`); 0 until a listener
    /// sets it, so a thread without one keeps nothing.
    static LIMIT_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// Set this thread's bound (each shard's listener, at start).
pub fn set_limit_bytes(limit_bytes: usize) {
    LIMIT_BYTES.with(|limit| limit.set(limit_bytes));
}

/// A buffer of exactly `length` bytes for a frame the caller fills whole
/// from the socket. Its bytes are a previous frame's or zeros: never hand
/// it on before every byte is overwritten.
pub fn take(length: usize) -> Vec<u8> {
    if length < POOLED_FRAME_MIN_BYTES {
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
    if frame.capacity() < POOLED_FRAME_MIN_BYTES {
        return Bytes::from(frame);
    }
    Bytes::from_owner(PooledFrame(frame))
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
        let buffer = std::mem::take(&mut self.0);
        // During thread teardown the pool may be gone: the buffer is freed.
        let _ = POOL.try_with(|pool| give_back(pool, buffer));
    }
}

fn give_back(pool: &RefCell<Vec<Vec<u8>>>, buffer: Vec<u8>) {
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
        const MIN: usize = POOLED_FRAME_MIN_BYTES;
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
    fn small_frames_are_not_pooled() {
        set_limit_bytes(1 << 20);
        drop(share(take(100)));
        assert_eq!(pooled_bytes(), 0);
    }
}
