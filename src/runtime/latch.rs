//! A flag set once, for good, that wakes every task waiting for it: a
//! shard that stops sets one, so long polls answer with what they have
//! when it notices the stop instead of holding the shutdown until its
//! timeout.

use std::cell::Cell;

use super::Notify;

/// Set once, never cleared; single-threaded, like [`Notify`].
#[derive(Debug, Default)]
pub struct Latch {
    set: Cell<bool>,
    notify: Notify,
}

impl Latch {
    /// Set the latch and wake every task waiting for it (once: later calls
    /// change nothing).
    pub fn set(&self) {
        if !self.set.replace(true) {
            self.notify.notify_all();
        }
    }

    /// Whether the latch is set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Returns once the latch is set: at once if it is already.
    pub async fn wait(&self) {
        // The notification's generation is taken before the check: a
        // `set` after the check still ends the wait.
        let notified = self.notify.notified();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn a_wait_ends_when_the_latch_is_set_and_at_once_after() {
        let latch = Latch::default();
        let mut context = Context::from_waker(Waker::noop());
        let mut waiting = pin!(latch.wait());
        assert_eq!(waiting.as_mut().poll(&mut context), Poll::Pending);
        assert!(!latch.is_set());
        latch.set();
        assert_eq!(waiting.as_mut().poll(&mut context), Poll::Ready(()));
        latch.set();
        assert!(latch.is_set(), "stays set");
        assert_eq!(pin!(latch.wait()).poll(&mut context), Poll::Ready(()));
    }
}
