//! Allocation accounting: a counting global allocator (enabled per thread)
//! shows that the steady-state append path allocates nothing per batch;
//! the only allocations are per flush round and shared by every batch in it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;

use ringlog::storage::batch::BatchBuilder;
use ringlog::storage::{AppendMode, FsyncPolicy, PartitionLog, StorageConfig};

use crate::common::on_executor;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Counts allocations made on threads that enabled counting.
pub struct CountingAllocator;

// SAFETY: defers to the system allocator; only adds a thread-local counter.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(pointer, layout) }
    }
}

fn counted<T>(work: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
    let result = work();
    COUNTING.with(|counting| counting.set(false));
    (result, ALLOCATIONS.with(Cell::get))
}

async fn append_rounds(log: Rc<PartitionLog>, appenders: u32, batches_per_appender: u32) {
    let mut tasks = Vec::new();
    for appender in 0..appenders {
        let log = Rc::clone(&log);
        tasks.push(ringlog::runtime::spawn_local(async move {
            let mut builder = BatchBuilder::new();
            let value = [b'v'; 1000];
            for _ in 0..batches_per_appender {
                builder.clear();
                for _ in 0..10 {
                    builder.push(appender as i64, None, &value, &[]);
                }
                let batch = builder.finish();
                let _ = log.append(batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await;
    }
}

/// Allocations and write rounds while `appenders` tasks append `per_appender` batches each.
async fn measure(log: &Rc<PartitionLog>, appenders: u32, per_appender: u32) -> (u64, u64) {
    let rounds_before = log.stats().write_rounds;
    ALLOCATIONS.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
    append_rounds(Rc::clone(log), appenders, per_appender).await;
    COUNTING.with(|counting| counting.set(false));
    (ALLOCATIONS.with(Cell::get), log.stats().write_rounds - rounds_before)
}

/// Allocations = rounds x (cost of a round) + batches x (cost of a batch).
/// A lone appender makes one round per batch, which gives the cost of a
/// round plus a batch; 32 appenders share rounds. If a batch cost even one
/// allocation, the shared rounds would cost far more than calibrated.
#[test]
fn steady_state_appends_allocate_nothing_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let ((solo_allocations, solo_rounds), (allocations, rounds)) = on_executor(move || async move {
        let config = StorageConfig { fsync: FsyncPolicy::Always, segment_bytes: 1 << 30, ..StorageConfig::default() };
        let log = Rc::new(PartitionLog::open(&path, config, None).await.unwrap());
        // Warm up: buffers, waker lists and the tail cache reach working size.
        append_rounds(Rc::clone(&log), 32, 20).await;
        let solo = measure(&log, 1, 200).await;
        let shared = measure(&log, 32, 100).await;
        log.close().await.unwrap();
        (solo, shared)
    });
    let batches = 32 * 100;
    let round_cost = solo_allocations as f64 / solo_rounds.max(1) as f64;
    // Spawning this test's 32 tasks costs a few allocations each.
    let harness = 32.0 * 4.0;
    let budget = 1.5 * round_cost * rounds as f64 + harness;
    println!(
        "lone appender: {solo_allocations} allocations in {solo_rounds} rounds ({round_cost:.1} per round+batch); \
         32 appenders: {allocations} allocations for {batches} batches in {rounds} rounds \
         ({:.2} per batch), budget without per-batch cost {budget:.0}",
        allocations as f64 / batches as f64
    );
    assert!(rounds * 2 < batches, "group commit coalesced batches into rounds");
    assert!(
        (allocations as f64) <= budget,
        "{allocations} allocations exceed {budget:.0}: something allocates per batch"
    );
}

#[test]
fn batch_builder_reuse_allocates_nothing_after_warm_up() {
    let mut builder = BatchBuilder::new();
    let value = [7u8; 512];
    for _ in 0..3 {
        builder.clear();
        for _ in 0..100 {
            builder.push(1, Some(b"key"), &value, &[("h", b"v")]);
        }
        builder.finish();
    }
    let (_, allocations) = counted(|| {
        for _ in 0..1000 {
            builder.clear();
            for _ in 0..100 {
                builder.push(1, Some(b"key"), &value, &[("h", b"v")]);
            }
            ringlog::storage::batch::validate_batch(builder.finish(), usize::MAX).unwrap();
        }
    });
    assert_eq!(allocations, 0);
}
