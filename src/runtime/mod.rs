//! Our thin layer over glommio's executor: spawning, blocking offload,
//! timers and a single-threaded notification primitive. glommio is in
//! maintenance mode; keeping its surface here makes it replaceable.

pub mod clock;
mod gate;
pub mod memory;
mod notify;
pub mod random;

use std::future::Future;
use std::time::Duration;

pub use gate::{Gate, GateGuard};
pub use glommio::Task;
pub use notify::{Notified, Notify};

/// Run `future` to completion on a new single executor thread (tests, CLI tools).
pub fn block_on_executor<F, Fut, T>(name: &str, make_future: F) -> std::io::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name(name)
        .spawn(make_future)
        .map_err(|error| std::io::Error::other(format!("cannot start executor: {error}")))?;
    handle.join().map_err(|error| std::io::Error::other(format!("executor failed: {error}")))
}

/// Spawn a task on the current executor.
pub fn spawn_local<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(future)
}

/// Run a blocking closure on the executor's helper thread pool, so that
/// rare synchronous work (small metadata files, directory fsyncs, unlinks)
/// never stalls the executor thread.
pub async fn run_blocking<F, R>(function: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(function).await
}

/// Wait up to `limit` for `task`; whether it finished. A task that did not
/// keeps running: the caller can unblock it (shut its socket down, say)
/// and wait for it again.
pub async fn finished_within<T>(task: &mut Task<T>, limit: Duration) -> bool {
    let finished = async {
        (&mut *task).await;
        true
    };
    let timed_out = async {
        sleep(limit).await;
        false
    };
    futures_lite::future::or(finished, timed_out).await
}

/// Sleep on the executor's timer.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Yield to other tasks on this executor.
pub async fn yield_now() {
    glommio::yield_if_needed().await;
}
