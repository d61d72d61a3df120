//! Bytes of answers one connection owes its client, bounded by
//! `limits.max_answer_bytes_per_connection`.
//!
//! Counting requests alone did not bound memory: a client that pipelines
//! `max_inflight_requests_per_connection` fetches of up to a frame each and
//! never reads its socket made the node hold 128 × 17 MiB for it, per
//! connection. A native fetch counts from before it runs, at the most its
//! answer may take (its `max_bytes`, or one whole batch of up to
//! `storage.max_batch_bytes` when that is more: a read returns at least
//! one batch), as do topic listings and descriptions (by what they name);
//! every answer counts from when it is encoded until the writer has
//! written it. A request with such an estimate waits, in its own task,
//! until it fits beside what is owed; the reader reads on (a produce
//! behind long polls that hold the budget may be the one to end them)
//! and stops only while the encoded answers pass the bound: the client
//! does not read them. Its own unread answers hold a client back, and
//! nobody else.
//!
//! Requests with an estimate get room in the order they asked for it: a
//! large answer (one whole batch may be more than the bound) fits only when
//! nothing else is owed, and smaller ones admitted past it would keep
//! something owed for as long as the client keeps asking.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use crate::runtime::{Latch, Notify};

/// What one connection owes, shared by its reader, its requests and its
/// writer (one thread).
#[derive(Debug)]
pub(crate) struct AnswerBudget {
    /// Encoded answers the writer has not written yet.
    queued_bytes: Cell<usize>,
    /// Answers not encoded yet, at the most each may take.
    reserved_bytes: Cell<usize>,
    /// Requests waiting for room, first come first served; at most the
    /// connection's requests in flight.
    waiting: RefCell<VecDeque<u64>>,
    /// The ticket the next request to wait takes.
    next_ticket: Cell<u64>,
    limit_bytes: usize,
    /// The writer ended: nothing owed will be written any more.
    writer_gone: Cell<bool>,
    /// Any of the above changed (wakes readers and requests waiting for room).
    changed: Notify,
    /// The writer ended (wakes sends to its channel only).
    writer_ended: Notify,
}

impl AnswerBudget {
    pub(crate) fn new(limit_bytes: usize) -> AnswerBudget {
        AnswerBudget {
            queued_bytes: Cell::new(0),
            reserved_bytes: Cell::new(0),
            waiting: RefCell::new(VecDeque::new()),
            next_ticket: Cell::new(0),
            limit_bytes,
            writer_gone: Cell::new(false),
            changed: Notify::new(),
            writer_ended: Notify::new(),
        }
    }

    /// Encoded answers waiting for the writer.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    /// Wait until an answer of up to `bytes` fits, and reserve it; false
    /// when the writer is gone (the connection is ending). With nothing
    /// owed an answer always fits, however large: a client reading its
    /// answers is never held back by the bound. Answers of known size get
    /// room in the order they asked; one of unknown size (`bytes` 0) waits
    /// for the encoded answers only, behind nobody.
    pub(crate) async fn reserve(&self, bytes: usize) -> bool {
        if bytes == 0 {
            return self.wait_for_encoded_answers().await;
        }
        let turn = Turn::take(self);
        loop {
            if self.writer_gone.get() {
                return false;
            }
            let owed_bytes = self.queued_bytes.get() + self.reserved_bytes.get();
            let fits = owed_bytes == 0 || owed_bytes + bytes <= self.limit_bytes;
            if fits && turn.is_first() {
                self.reserved_bytes.set(self.reserved_bytes.get() + bytes);
                return true;
            }
            self.changed.notified().await;
        }
    }

    /// Wait until the encoded answers leave room; false when the writer is gone.
    async fn wait_for_encoded_answers(&self) -> bool {
        loop {
            if self.writer_gone.get() {
                return false;
            }
            if self.queued_bytes.get() <= self.limit_bytes {
                return true;
            }
            self.changed.notified().await;
        }
    }

    /// [`reserve`](Self::reserve), unless the node starts stopping first
    /// (`stopping` set): None then. A reader waiting for room may wait on a
    /// client that never reads again.
    pub(crate) async fn reserve_or_stop(&self, bytes: usize, stopping: &Latch) -> Option<bool> {
        if stopping.is_set() {
            return None;
        }
        let stopped = async {
            stopping.wait().await;
            None
        };
        futures_lite::future::or(async { Some(self.reserve(bytes).await) }, stopped).await
    }

    /// An answer reserved at `reserved_bytes` is encoded into `bytes`, now
    /// queued for the writer (or dropped: then `written` follows at once).
    pub(crate) fn encoded(&self, reserved_bytes: usize, bytes: usize) {
        debug_assert!(self.reserved_bytes.get() >= reserved_bytes, "released more than was reserved");
        self.reserved_bytes.set(self.reserved_bytes.get().saturating_sub(reserved_bytes));
        self.queued_bytes.set(self.queued_bytes.get() + bytes);
        self.changed.notify_all();
    }

    /// The writer wrote (or gave up on) an answer of `bytes`.
    pub(crate) fn written(&self, bytes: usize) {
        debug_assert!(self.queued_bytes.get() >= bytes, "wrote more than was queued");
        self.queued_bytes.set(self.queued_bytes.get().saturating_sub(bytes));
        self.changed.notify_all();
    }

    /// The writer ended: a reader waiting for room stops waiting.
    pub(crate) fn writer_gone(&self) {
        self.writer_gone.set(true);
        self.changed.notify_all();
        self.writer_ended.notify_all();
    }

    /// Whether the writer has ended.
    pub(crate) fn writer_is_gone(&self) -> bool {
        self.writer_gone.get()
    }

    /// `send` (a send to the writer's channel, true when queued), unless
    /// the writer ends first: false then.
    pub(crate) async fn unless_writer_ended(&self, send: impl std::future::Future<Output = bool>) -> bool {
        let writer_ended = async {
            self.writer_ended().await;
            false
        };
        futures_lite::future::or(send, writer_ended).await
    }

    /// Completes once the writer has ended. A send to its full channel
    /// races this: when the receiver goes, glommio's channel wakes its
    /// blocked senders, but they find it still full and wait again, so a
    /// request answered after the writer ended would wait forever (with
    /// its answer, and shutdown waiting for it).
    pub(crate) async fn writer_ended(&self) {
        while !self.writer_gone.get() {
            self.writer_ended.notified().await;
        }
    }
}

/// One request's place among those waiting for room. Dropped when it got
/// room, or when its request gave up waiting (the node stops): either way
/// the next in line may go.
struct Turn<'budget> {
    budget: &'budget AnswerBudget,
    ticket: u64,
}

impl<'budget> Turn<'budget> {
    fn take(budget: &'budget AnswerBudget) -> Turn<'budget> {
        let ticket = budget.next_ticket.get();
        budget.next_ticket.set(ticket.wrapping_add(1));
        budget.waiting.borrow_mut().push_back(ticket);
        Turn { budget, ticket }
    }

    fn is_first(&self) -> bool {
        self.budget.waiting.borrow().front() == Some(&self.ticket)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut waiting = self.budget.waiting.borrow_mut();
        if let Some(position) = waiting.iter().position(|ticket| *ticket == self.ticket) {
            waiting.remove(position);
        }
        drop(waiting);
        self.budget.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
        futures_lite::future::block_on(futures_lite::future::poll_once(future))
    }

    #[test]
    fn an_answer_waits_for_room_only_while_something_is_owed() {
        let budget = AnswerBudget::new(100);
        assert_eq!(ready(budget.reserve(500)), Some(true), "nothing owed: any answer fits");
        assert_eq!(ready(budget.reserve(1)), None, "over the bound: the reader waits");
        budget.encoded(500, 300);
        assert_eq!(budget.queued_bytes(), 300);
        assert_eq!(ready(budget.reserve(1)), None, "still over while the writer has not written it");
        budget.written(300);
        assert_eq!(ready(budget.reserve(60)), Some(true));
        assert_eq!(ready(budget.reserve(40)), Some(true), "up to the bound");
        assert_eq!(ready(budget.reserve(1)), None);
        assert_eq!(ready(budget.reserve(0)), Some(true), "unknown sizes wait for encoded answers only");
        budget.encoded(0, 150);
        assert_eq!(ready(budget.reserve(0)), None, "encoded answers past the bound hold them back too");
        assert_eq!(ready(budget.writer_ended()), None);
        budget.writer_gone();
        assert_eq!(ready(budget.writer_ended()), Some(()));
        assert_eq!(ready(budget.reserve(1)), Some(false), "no writer: stop waiting");
    }

    #[test]
    fn a_large_answer_is_not_passed_by_smaller_ones_that_ask_after_it() {
        let budget = AnswerBudget::new(100);
        assert_eq!(ready(budget.reserve(60)), Some(true));
        let mut large = Box::pin(budget.reserve(500));
        assert_eq!(ready(large.as_mut()), None, "more than the bound: it waits until nothing is owed");
        assert_eq!(ready(budget.reserve(30)), None, "it fits, but the large answer asked first");
        budget.encoded(60, 60);
        budget.written(60);
        assert_eq!(ready(large.as_mut()), Some(true), "nothing owed any more: the large answer's turn");
        drop(large);
        assert_eq!(ready(budget.reserve(30)), None, "now the large answer is owed");
        budget.encoded(500, 0);
        assert_eq!(ready(budget.reserve(30)), Some(true));
    }

    #[test]
    fn a_request_that_gives_up_waiting_leaves_its_turn_to_the_next() {
        let budget = AnswerBudget::new(100);
        assert_eq!(ready(budget.reserve(90)), Some(true));
        let mut first = Box::pin(budget.reserve(50));
        assert_eq!(ready(first.as_mut()), None);
        let mut second = Box::pin(budget.reserve(10));
        assert_eq!(ready(second.as_mut()), None, "behind the first");
        drop(first);
        assert_eq!(ready(second.as_mut()), Some(true), "the first gave up: the second goes");
    }
}
