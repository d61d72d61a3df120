//! An async mutual-exclusion gate for tasks on one executor thread.
//! Unlike a general semaphore it never allocates per waiter: waiting tasks
//! park on a [`Notify`] whose waker list keeps its capacity.

use std::cell::Cell;

use super::Notify;

/// At most one holder at a time; others wait in `acquire`.
#[derive(Debug, Default)]
pub struct Gate {
    held: Cell<bool>,
    released: Notify,
}

/// Holding this means holding the gate; dropping it releases.
#[derive(Debug)]
pub struct GateGuard<'a> {
    gate: &'a Gate,
}

impl Gate {
    /// A new open gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Wait until the gate is free, then hold it.
    pub async fn acquire(&self) -> GateGuard<'_> {
        loop {
            let released = self.released.notified();
            if !self.held.get() {
                self.held.set(true);
                return GateGuard { gate: self };
            }
            released.await;
        }
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.gate.held.set(false);
        self.gate.released.notify_all();
    }
}
