//! Our thin layer over glommio's executor: spawning, blocking offload,
//! timers and a single-threaded notification primitive. glommio is in
//! maintenance mode; keeping its surface here makes it replaceable.

pub mod buffer_pool;
pub mod clock;
mod gate;
mod latch;
pub mod memory;
mod notify;
pub mod random;

use std::future::Future;
use std::time::Duration;

pub use gate::{Gate, GateGuard};
pub use glommio::Task;
pub use latch::Latch;
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

/// Run `future` to its end even if the caller stops waiting for it (its
/// task cancelled, say, when the session that awaited it ended): a change
/// of several steps (a truncation, a reset, an append with its roll) that
/// was cancelled at one of its awaits left the log half changed. None only
/// when the executor stops first.
pub async fn run_to_completion<T: 'static>(future: impl Future<Output = T> + 'static) -> Option<T> {
    glommio::spawn_local(future).detach().await
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

/// Run a slow blocking closure on a thread of its own, not the executor's
/// one helper thread: unlinking a 1 GiB segment took 0.2 to 3 s on ext4
/// under write load, and every other `run_blocking` of the shard (a roll's
/// index files, say) would queue behind it. For rare, bounded work only:
/// one thread per call. When no thread can be started the closure runs on
/// the helper thread after all (slower for others, but it runs). Fails
/// only when the closure panicked.
pub async fn run_on_own_thread<F, R>(name: &str, function: F) -> std::io::Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (sender, receiver) = async_channel::bounded(1);
    // The closure waits in a slot the thread takes it from, so that a
    // failed spawn (which drops the thread's own closure) leaves it here.
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(function)));
    let thread_slot = std::sync::Arc::clone(&slot);
    let spawned = std::thread::Builder::new().name(name.to_string()).spawn(move || {
        let function = thread_slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(function) = function {
            // The receiver is gone only if the caller's task was dropped.
            let _ = sender.send_blocking(function());
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(target: "ringlog::runtime", %error, name, "cannot start a thread: running on the helper thread");
        let function = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let function =
            function.ok_or_else(|| std::io::Error::other(format!("thread {name} took its work and ended")))?;
        return Ok(run_blocking(function).await);
    }
    receiver
        .recv()
        .await
        .map_err(|_| std::io::Error::other(format!("thread {name} ended without an answer (it panicked)")))
}

/// `future`'s output, or `None` once `limit` passes first (the future is
/// dropped then).
pub async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> Option<T> {
    let timed_out = async {
        sleep(limit).await;
        None
    };
    futures_lite::future::or(async { Some(future.await) }, timed_out).await
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

/// One of several things a task waits for at once (see [`first_of`]).
pub type Wake<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// Wait until the first of `wakes` completes (none: never). Each wake
/// polls all of them (the caller bounds how many; a poll of a notice is a
/// comparison): simpler than a waker per future.
pub async fn first_of(mut wakes: Vec<Wake<'_>>) {
    std::future::poll_fn(|context| match wakes.iter_mut().any(|wake| wake.as_mut().poll(context).is_ready()) {
        true => std::task::Poll::Ready(()),
        false => std::task::Poll::Pending,
    })
    .await;
}

/// Sleep on the executor's timer.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Yield to other tasks on this executor.
pub async fn yield_now() {
    glommio::yield_if_needed().await;
}
