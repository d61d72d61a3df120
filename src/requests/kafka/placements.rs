//! The order of one Kafka connection's produces. Kafka clients rely on a
//! partition's batches landing in the order they were sent on a
//! connection. Only that order matters: batches for different partitions
//! may be placed at the same time, on their owners' cores. So each batch
//! waits for the batch sent before it to the same partition to be placed
//! (a chain per partition), and a Produce lets the connection go on to the
//! next request once the Produce before it is placed: at most two
//! requests' batches are being placed at once per connection, so it holds
//! at most two frames being placed and one read ahead (`docs/KAFKA.md`,
//! "The listener").
//!
//! Any other request waits until every batch sent before it is placed
//! ([`Placements::settle`]), as if the connection served one request at a
//! time, as a Kafka broker does.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Returns (closed) once its batch is placed or its produce has ended:
/// nothing is ever sent on it.
pub type PlacedReceiver = async_channel::Receiver<()>;

/// Entries kept before the ones already placed are dropped (a connection
/// may name many partitions over its life); after a prune, the next waits
/// until the map has doubled, so pruning costs O(1) per batch amortised.
const PRUNE_AT_ENTRIES: usize = 1024;

/// One connection's batches not yet known to be placed.
#[derive(Debug, Default)]
pub struct Placements {
    /// Each partition's latest batch on this connection.
    latest: RefCell<HashMap<(String, i32), PlacedReceiver>>,
    /// The size at which `latest` is pruned next.
    prune_at: Cell<usize>,
    /// The batches of the latest Produce request.
    previous_request: RefCell<Vec<PlacedReceiver>>,
}

impl Placements {
    /// Make `placed` the latest batch of the partition; returns the one
    /// before it, which must be placed first.
    pub fn chain(&self, topic: &str, partition: i32, placed: &PlacedReceiver) -> Option<PlacedReceiver> {
        let mut latest = self.latest.borrow_mut();
        if latest.len() >= self.prune_at.get().max(PRUNE_AT_ENTRIES) {
            latest.retain(|_, placed| !placed.is_closed());
            latest.shrink_to_fit();
            self.prune_at.set(2 * latest.len());
        }
        latest.insert((topic.to_string(), partition), placed.clone())
    }

    /// Record `batches` as the latest Produce request's; returns those of
    /// the request before it.
    pub fn replace_previous_request(&self, batches: Vec<PlacedReceiver>) -> Vec<PlacedReceiver> {
        std::mem::replace(&mut *self.previous_request.borrow_mut(), batches)
    }

    /// Return once every batch chained so far is placed.
    pub async fn settle(&self) {
        // Taken, not drained: the map's room goes too.
        let pending: Vec<PlacedReceiver> = std::mem::take(&mut *self.latest.borrow_mut()).into_values().collect();
        self.prune_at.set(0);
        self.previous_request.borrow_mut().clear();
        wait_all(&pending).await;
    }
}

/// Return once every one of `batches` is placed (or failed first).
pub async fn wait_all(batches: &[PlacedReceiver]) {
    for placed in batches {
        let _ = placed.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn a_batch_waits_only_for_the_batch_before_it_to_the_same_partition() {
        let placements = Placements::default();
        let (first_signal, first) = async_channel::bounded::<()>(1);
        let (other_signal, other) = async_channel::bounded::<()>(1);
        let (_second_signal, second) = async_channel::bounded::<()>(1);
        assert!(placements.chain("t", 0, &first).is_none());
        assert!(placements.chain("t", 1, &other).is_none(), "another partition chains on nothing");
        assert!(placements.chain("u", 0, &other).is_none(), "another topic's partition 0 too");
        let before = placements.chain("t", 0, &second).expect("the first batch of t/0");
        assert!(block_on(poll_once(before.recv())).is_none(), "not placed yet");
        drop(other_signal);
        assert!(block_on(poll_once(before.recv())).is_none(), "another partition's placement does not count");
        drop(first_signal);
        assert!(block_on(poll_once(before.recv())).is_some(), "placed");
    }

    #[test]
    fn settle_waits_for_every_batch_chained_and_forgets_them() {
        let placements = Placements::default();
        let (first_signal, first) = async_channel::bounded::<()>(1);
        let (second_signal, second) = async_channel::bounded::<()>(1);
        placements.chain("t", 0, &first);
        placements.chain("t", 1, &second);
        assert!(placements.replace_previous_request(vec![first.clone(), second.clone()]).is_empty());
        let settle = placements.settle();
        futures_lite::pin!(settle);
        drop(second_signal);
        assert!(block_on(poll_once(&mut settle)).is_none(), "t/0 is not placed yet");
        drop(first_signal);
        assert!(block_on(poll_once(&mut settle)).is_some());
        assert!(placements.latest.borrow().is_empty());
        assert!(placements.replace_previous_request(Vec::new()).is_empty(), "the previous request is settled too");
    }

    #[test]
    fn placed_entries_are_pruned_once_there_are_many() {
        let placements = Placements::default();
        let (_open_signal, open) = async_channel::bounded::<()>(1);
        placements.chain("open", 0, &open);
        for partition in 0..PRUNE_AT_ENTRIES as i32 {
            let (signal, placed) = async_channel::bounded::<()>(1);
            placements.chain("t", partition, &placed);
            drop(signal);
        }
        assert!(placements.latest.borrow().len() <= PRUNE_AT_ENTRIES);
        assert!(placements.latest.borrow().contains_key(&("open".to_string(), 0)), "an unplaced batch is kept");
    }
}
