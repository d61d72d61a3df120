//! Latency histograms of atomics, and the per-thread fsync latency hook:
//! a shard registers its histogram once, and every fdatasync issued on
//! that thread (segments, indexes, offsets) is observed into it, without
//! the storage layer knowing about metrics or shards.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 14] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000];

/// A fixed-bucket latency histogram of atomics (written by one shard, read
/// by the metrics endpoint).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A histogram's counts at one moment (`buckets` are per bucket, not cumulative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket; the last one is above every bound.
    pub buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = LATENCY_BUCKETS_US.iter().position(|&bound| micros <= bound).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|index| self.buckets[index].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

thread_local! {
    static FSYNC_LATENCY: RefCell<Option<Arc<Histogram>>> = const { RefCell::new(None) };
}

/// Observe every fdatasync issued on this thread into `histogram`.
pub fn observe_fsyncs_on_this_thread(histogram: Arc<Histogram>) {
    FSYNC_LATENCY.with(|slot| *slot.borrow_mut() = Some(histogram));
}

/// Record one fdatasync's latency (no-op unless a histogram is registered).
pub fn record_fsync(elapsed: Duration) {
    FSYNC_LATENCY.with(|slot| {
        if let Some(histogram) = slot.borrow().as_ref() {
            histogram.observe(elapsed);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsyncs_are_observed_only_on_the_registered_thread() {
        let histogram = Arc::new(Histogram::default());
        record_fsync(Duration::from_micros(10));
        observe_fsyncs_on_this_thread(Arc::clone(&histogram));
        record_fsync(Duration::from_micros(10));
        record_fsync(Duration::from_secs(2));
        std::thread::spawn(|| record_fsync(Duration::from_micros(10))).join().unwrap();
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 2);
        assert_eq!(snapshot.buckets[0], 1);
        assert_eq!(snapshot.buckets[LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(snapshot.sum_us, 2_000_010);
    }
}
