//! Read-ahead for sequential disk readers. Segment reads bypass the page
//! cache (O_DIRECT), so nothing reads ahead for a consumer or a catching-up
//! follower: each fetch waited for its own disk read, and between fetches
//! the disk sat idle while the answer crossed the socket. After a read that
//! went to disk, the next read of the same size from where it ended starts
//! at once in the background; the next fetch from there takes its result.
//!
//! One read-ahead per partition, owned by the reader that started it until
//! it is taken or goes stale; bounded by `read_ahead_bytes` per partition
//! and `read_ahead_budget_bytes` per shard thread. Truncation, reset and
//! retention discard it; what it returns is checked again when taken.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::*;

/// A read-ahead nobody took within this long gives way to another reader.
const STALE_AFTER: Duration = Duration::from_millis(1000);

thread_local! {
    /// Bytes reserved by the read-aheads of this executor thread (one shard).
    static RESERVED_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Read-ahead bytes reserved by the partitions of the current thread.
pub fn reserved_read_ahead_bytes() -> u64 {
    RESERVED_BYTES.with(Cell::get)
}

/// Budget held by one read-ahead, given back when it is dropped.
struct Reservation(u64);

impl Reservation {
    fn try_new(bytes: u64, budget_bytes: u64) -> Option<Reservation> {
        RESERVED_BYTES.with(|reserved| {
            let total = reserved.get() + bytes;
            (total <= budget_bytes).then(|| {
                reserved.set(total);
                Reservation(bytes)
            })
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        RESERVED_BYTES.with(|reserved| reserved.set(reserved.get().saturating_sub(self.0)));
    }
}

/// A disk read started ahead of the fetch that will want it.
pub(super) struct ReadAhead {
    offset: u64,
    max_bytes: usize,
    generation: u64,
    started_at: Instant,
    task: Task<StorageResult<ReadBatches>>,
    _reservation: Reservation,
}

impl PartitionLog {
    /// The read-ahead's answer when it starts at `offset`, fits `max_bytes`
    /// and is still valid below the limit; None sends the caller to disk.
    pub(super) async fn take_read_ahead(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: Option<u64>,
    ) -> Option<ReadBatches> {
        let ahead = {
            let mut slot = self.inner.read_ahead.borrow_mut();
            if !slot.as_ref().is_some_and(|ahead| ahead.offset == offset && ahead.max_bytes <= max_bytes) {
                return None;
            }
            slot.take()?
        };
        let generation = ahead.generation;
        let result = ahead.task.await.ok()?;
        let mut state = self.inner.state.borrow_mut();
        let limit_offset = max_offset.unwrap_or(state.durable.offset).min(state.durable.offset);
        let valid = state.generation == generation
            && state.fence.is_none()
            && offset >= state.log_start_offset()
            && result.next_offset <= limit_offset
            && result.batch_count > 0;
        if valid {
            state.stats.read_ahead_hits += 1;
        }
        valid.then_some(result)
    }

    /// Start reading `max_bytes` from `offset` in the background, unless
    /// read-ahead is off, the budget is spent, `offset` is at the durable end
    /// or already in the tail cache, or another reader's read-ahead is fresh.
    pub(super) fn start_read_ahead(&self, offset: u64, max_bytes: usize) {
        let config = &self.inner.config;
        let max_bytes = max_bytes.min(config.read_ahead_bytes as usize);
        if max_bytes == 0 {
            return;
        }
        let generation = {
            let state = self.inner.state.borrow();
            if state.closed || offset >= state.durable.offset || state.tail.holds(offset) {
                return;
            }
            state.generation
        };
        let mut slot = self.inner.read_ahead.borrow_mut();
        if slot.as_ref().is_some_and(|ahead| ahead.started_at.elapsed() < STALE_AFTER) {
            return;
        }
        // Drop the stale one first so its budget counts for the new one.
        *slot = None;
        let Some(reservation) = Reservation::try_new(max_bytes as u64, config.read_ahead_budget_bytes) else {
            return;
        };
        let log = self.clone();
        let task = crate::runtime::spawn_local(async move { log.read_from_disk(offset, max_bytes, None).await });
        *slot = Some(ReadAhead {
            offset,
            max_bytes,
            generation,
            started_at: Instant::now(),
            task,
            _reservation: reservation,
        });
    }

    /// Forget the read-ahead: the log changed under it, or it is closing.
    pub(super) fn discard_read_ahead(&self) {
        self.inner.read_ahead.borrow_mut().take();
    }
}
