//! Wake-all notification for tasks on one executor thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting on it. Single-threaded; waiting allocates
/// nothing once the waker list has reached its working capacity.
///
/// Each waiting future owns a slot in the list, so registering, re-polling
/// and dropping a waiter are O(1) and a round of n waiters costs O(n).
/// (Searching the list for a waker that would wake the same task, as this
/// did before, made every registration O(n) and a group-commit round of n
/// waiting appenders O(n²).)
#[derive(Debug, Default)]
pub struct Notify {
    generation: Cell<u64>,
    wakers: RefCell<Slots>,
}

/// Registered wakers; `None` marks a slot whose waiter went away.
#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Notify {
    /// A new notifier with no waiters.
    pub fn new() -> Notify {
        Notify::default()
    }

    /// Wake all current waiters.
    pub fn notify_all(&self) {
        // The generation moves first: a waiter dropped while we wake (a
        // waker may hold the last reference to its task) sees that its slot
        // is gone and leaves the list alone.
        self.generation.set(self.generation.get().wrapping_add(1));
        let mut slots = self.wakers.borrow_mut();
        slots.free.clear();
        for waker in slots.wakers.drain(..).flatten() {
            waker.wake();
        }
    }

    /// A future that completes at the next `notify_all` after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self, generation: self.generation.get(), slot: None }
    }

    /// Wakers registered now (for tests).
    #[cfg(test)]
    fn registered(&self) -> usize {
        self.wakers.borrow().wakers.iter().flatten().count()
    }
}

/// Future returned by [`Notify::notified`].
pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    /// The slot holding this waiter's waker, in `generation`.
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let notify = self.notify;
        if notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut slots = notify.wakers.borrow_mut();
        match self.slot {
            Some(slot) => {
                // Re-polled: refresh the waker only if the task changed.
                let registered = slots.wakers[slot].as_mut().expect("a live waiter keeps its slot");
                if !registered.will_wake(context.waker()) {
                    registered.clone_from(context.waker());
                }
            }
            None => {
                let waker = Some(context.waker().clone());
                let slot = match slots.free.pop() {
                    Some(slot) => {
                        slots.wakers[slot] = waker;
                        slot
                    }
                    None => {
                        slots.wakers.push(waker);
                        slots.wakers.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        // A waiter that goes away before the notification frees its slot;
        // otherwise a task that polls a fresh waiter on every loop (with a
        // timeout, say) would grow the list until the next notify_all.
        let Some(slot) = self.slot else { return };
        if self.notify.generation.get() != self.generation {
            return;
        }
        let mut slots = self.notify.wakers.borrow_mut();
        slots.wakers[slot] = None;
        slots.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll(notified: &mut Notified<'_>, waker: &Waker) -> Poll<()> {
        Pin::new(notified).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_round_registers_each_waiter_once_and_wakes_all() {
        let notify = Notify::new();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut waiters: Vec<_> = (0..1000).map(|_| notify.notified()).collect();
        for _ in 0..3 {
            // Re-polls reuse the waiter's slot instead of searching the list.
            for waiter in &mut waiters {
                assert!(poll(waiter, &waker).is_pending());
            }
        }
        assert_eq!(notify.registered(), 1000);
        notify.notify_all();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1000);
        assert!(waiters.iter_mut().all(|waiter| poll(waiter, &waker).is_ready()));
        drop(waiters);
        assert_eq!(notify.registered(), 0);
    }

    #[test]
    fn a_dropped_waiter_frees_its_slot_for_the_next() {
        let notify = Notify::new();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        for _ in 0..100 {
            let mut waiter = notify.notified();
            assert!(poll(&mut waiter, &waker).is_pending());
        }
        assert_eq!(notify.registered(), 0, "dropped waiters leave nothing behind");
        assert_eq!(notify.wakers.borrow().wakers.len(), 1, "one slot, reused");
        let mut waiter = notify.notified();
        assert!(poll(&mut waiter, &waker).is_pending());
        notify.notify_all();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        assert!(poll(&mut waiter, &waker).is_ready());
    }
}
