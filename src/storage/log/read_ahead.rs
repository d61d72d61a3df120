//! Read-ahead for sequential disk readers. Segment reads bypass the page
//! cache (O_DIRECT), so nothing reads ahead for a consumer or a catching-up
//! follower: each fetch waited for its own disk read, and between fetches
//! the disk sat idle while the answer crossed the socket. After a read that
//! went to disk, reads of the same size from where it ended start at once in
//! the background; the next fetch from there takes the first of them.
//!
//! Each partition keeps a chain of up to `read_ahead_depth` reads going.
//! Where one read ends is known before it runs: reads end at a batch start
//! the offset index names (see `read.rs`), so the next read of the chain
//! starts there without waiting for the previous one. With one read ahead,
//! the disk idled from the moment that read finished until the reader came
//! back for it; with two, the next read is already under way.
//!
//! A chain belongs to the reader that started it until it is taken or goes
//! stale; bounded by `read_ahead_bytes` per read and `read_ahead_budget_bytes`
//! per shard thread. Truncation, reset and retention discard it; what a read
//! returns is checked again when taken. A chain its reader abandoned (a
//! consumer that stopped, or moved to other partitions) would hold its
//! share of the budget, and its read bytes, until someone read that
//! partition again: when the budget is spent, the shard's stale chains are
//! dropped first.

use std::cell::{Cell, RefCell};
use std::rc::Weak;
use std::time::{Duration, Instant};

use super::*;

/// A read-ahead nobody took within this long gives way to another reader.
const STALE_AFTER: Duration = Duration::from_millis(1000);

thread_local! {
    /// Bytes reserved by the read-aheads of this executor thread (one shard).
    static RESERVED_BYTES: Cell<u64> = const { Cell::new(0) };
    /// The logs of this thread that started a chain since the last sweep:
    /// where a spent budget looks for stale chains to drop.
    static CHAIN_HOLDERS: RefCell<Vec<Weak<Inner>>> = const { RefCell::new(Vec::new()) };
}

/// Whether `inner`'s `chain` is stale: nobody started or took a read of it
/// within `STALE_AFTER` (its front read may be older than that while its
/// reader still takes from it, a reader fetching every second or so).
fn is_stale(chain: &VecDeque<ReadAhead>, inner: &Inner) -> bool {
    let last_used_at = chain.front().map(|front| front.started_at).max(inner.read_ahead_taken_at.get());
    last_used_at.is_some_and(|used_at| used_at.elapsed() >= STALE_AFTER)
}

/// Remember that `inner` starts a chain. Logs whose chain ended are
/// forgotten at the same time, so the list holds at most one entry per
/// log of this thread that has a chain.
fn note_chain_holder(inner: &Rc<Inner>) {
    let holder = Rc::downgrade(inner);
    CHAIN_HOLDERS.with(|holders| {
        let mut holders = holders.borrow_mut();
        holders.retain(|other| {
            let has_chain = other
                .upgrade()
                .is_some_and(|other| other.read_ahead.try_borrow().map_or(true, |chain| !chain.is_empty()));
            has_chain && !other.ptr_eq(&holder)
        });
        holders.push(holder);
    });
}

/// Drop every stale chain of this thread but `caller`'s (one nobody
/// started or took a read of within `STALE_AFTER`) and forget the logs
/// that hold no chain any more.
fn drop_stale_chains(caller: &Rc<Inner>) {
    let holders = CHAIN_HOLDERS.with(|holders| std::mem::take(&mut *holders.borrow_mut()));
    let kept: Vec<Weak<Inner>> = holders
        .into_iter()
        .filter(|holder| {
            let Some(inner) = holder.upgrade() else { return false };
            // A chain borrowed right now is in use: not stale.
            let Ok(mut chain) = inner.read_ahead.try_borrow_mut() else { return true };
            if is_stale(&chain, &inner) && !Rc::ptr_eq(&inner, caller) {
                chain.clear();
            }
            !chain.is_empty()
        })
        .collect();
    CHAIN_HOLDERS.with(|holders| holders.borrow_mut().extend(kept));
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
    /// The read-ahead's answer when one starts at `offset`, fits `max_bytes`
    /// and is still valid below the limit; None sends the caller to disk.
    /// Reads of the chain before it (a reader that skipped ahead) are dropped.
    pub(super) async fn take_read_ahead(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: Option<u64>,
    ) -> Option<ReadBatches> {
        let ahead = {
            let mut chain = self.inner.read_ahead.borrow_mut();
            let index = chain.iter().position(|ahead| ahead.offset == offset && ahead.max_bytes <= max_bytes)?;
            chain.drain(..index);
            chain.pop_front()?
        };
        self.inner.read_ahead_taken_at.set(Some(Instant::now()));
        // Keep the chain full while this read is awaited.
        self.extend_read_ahead();
        let generation = ahead.generation;
        let result = ahead.task.await.ok()?;
        let mut state = self.inner.state.borrow_mut();
        let limit_offset = max_offset.unwrap_or(state.durability.mark.offset).min(state.durability.mark.offset);
        let valid = state.durability.generation == generation
            && !state.health.closed
            && state.health.fence.is_none()
            && offset >= state.log_start_offset()
            && result.next_offset <= limit_offset
            && result.batch_count > 0;
        if valid {
            state.stats.read_ahead_hits += 1;
        }
        valid.then_some(result)
    }

    /// Start reading `max_bytes` from `offset` in the background, and on from
    /// there up to `read_ahead_depth` reads, unless read-ahead is off, the
    /// budget is spent, `offset` is at the durable end or already in the
    /// tail cache, or another reader's chain is fresh.
    pub(super) fn start_read_ahead(&self, offset: u64, max_bytes: usize) {
        let max_bytes = max_bytes.min(self.inner.config.read_ahead_bytes as usize);
        if max_bytes == 0 {
            return;
        }
        {
            let mut chain = self.inner.read_ahead.borrow_mut();
            if !chain.is_empty() {
                let fresh = !is_stale(&chain, &self.inner);
                if fresh && chain.iter().any(|ahead| ahead.offset == offset) {
                    // This reader's own chain: it only needs topping up.
                    drop(chain);
                    self.extend_read_ahead();
                    return;
                }
                if fresh {
                    return;
                }
                // Drop the stale chain first so its budget counts for the new one.
                chain.clear();
            }
        }
        if self.spawn_read_ahead(offset, max_bytes) {
            self.extend_read_ahead();
        }
    }

    /// Add reads to the chain, each starting where the previous one will end,
    /// until it holds `read_ahead_depth` reads or the end is not known.
    fn extend_read_ahead(&self) {
        loop {
            let next = {
                let chain = self.inner.read_ahead.borrow();
                let Some(last) = chain.back() else { return };
                if chain.len() >= self.inner.config.read_ahead_depth as usize {
                    return;
                }
                let Some(next_offset) = self.planned_read_end(last.offset, last.max_bytes) else { return };
                (next_offset, last.max_bytes)
            };
            if !self.spawn_read_ahead(next.0, next.1) {
                return;
            }
        }
    }

    /// Where a disk read of `max_bytes` from `offset` will end, when the
    /// offset index bounds it inside one segment and below the durable end:
    /// the same end the read finds (`bounded_read_end`), as an offset.
    fn planned_read_end(&self, offset: u64, max_bytes: usize) -> Option<u64> {
        let location = self.locate(offset, None).ok()??;
        let end_position = self.bounded_read_end(&location, location.start_position, max_bytes)?;
        if end_position >= location.end_position {
            return None;
        }
        let state = self.inner.state.borrow();
        let segment = state.segments.get(&location.base_offset)?;
        let (relative, position) = segment.indexes.offsets.floor_by_position(u32::try_from(end_position).ok()?)?;
        let next_offset = location.base_offset + u64::from(relative);
        (u64::from(position) == end_position && next_offset > offset).then_some(next_offset)
    }

    /// Spawn one background read at the back of the chain; false when it is
    /// not worth it (closed, at the durable end, in the tail cache) or the
    /// shard's budget is spent.
    fn spawn_read_ahead(&self, offset: u64, max_bytes: usize) -> bool {
        let generation = {
            let state = self.inner.state.borrow();
            if state.health.closed || offset >= state.durability.mark.offset || state.tail.holds(offset) {
                return false;
            }
            state.durability.generation
        };
        let budget_bytes = self.inner.config.read_ahead_budget_bytes;
        let reservation = Reservation::try_new(max_bytes as u64, budget_bytes).or_else(|| {
            drop_stale_chains(&self.inner);
            Reservation::try_new(max_bytes as u64, budget_bytes)
        });
        let Some(reservation) = reservation else {
            return false;
        };
        let log = self.clone();
        let task = crate::runtime::spawn_local(async move { log.read_from_disk(offset, max_bytes, None).await });
        if self.inner.read_ahead.borrow().is_empty() {
            note_chain_holder(&self.inner);
        }
        self.inner.read_ahead.borrow_mut().push_back(ReadAhead {
            offset,
            max_bytes,
            generation,
            started_at: Instant::now(),
            task,
            _reservation: reservation,
        });
        true
    }

    /// Forget the read-aheads: the log changed under them, or it is closing.
    pub(super) fn discard_read_ahead(&self) {
        self.inner.read_ahead.borrow_mut().clear();
    }
}
