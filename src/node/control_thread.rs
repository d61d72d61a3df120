//! The control thread: one OS thread with a tokio current-thread runtime
//! that serves the admin HTTP API and, in cluster mode, runs the etcd
//! membership loop. It never touches partitions; the shards read what it
//! publishes in [`crate::state::cluster::ClusterState`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::http::{router, AdminState};
use crate::admin::tls_listener::TlsListener;
use crate::cluster::membership::ControlPlane;
use crate::security::listeners::NodeTls;
use crate::security::settings::Listener;
use axum::serve::ListenerExt;

use super::NodeError;

/// What the control thread runs beside the admin API: the control plane
/// (cluster) and the users it keeps in step with etcd.
pub(super) struct Control {
    pub(super) plane: Option<Arc<ControlPlane>>,
    pub(super) users: super::users::NodeUsers,
}

/// Start the control thread; returns once the admin listener is bound.
/// The thread ends after `stop` is set, the admin server has drained and
/// the membership loop has resigned and revoked its lease.
pub(super) fn start(
    address: &str,
    state: AdminState,
    control: Control,
    heap_trim_interval_ms: u64,
    tls: Arc<NodeTls>,
    stop: &'static AtomicBool,
) -> Result<std::thread::JoinHandle<()>, NodeError> {
    let listen_error = |source| NodeError::AdminListener { address: address.to_string(), source };
    let listener = std::net::TcpListener::bind(address).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    std::thread::Builder::new()
        .name("ringlog-control".into())
        .spawn(move || run(listener, state, control, heap_trim_interval_ms, tls, stop))
        .map_err(|source| NodeError::Thread { thread: "control", source })
}

/// The control thread's body: the membership loop and the heap trimmer
/// beside the admin server, until `stop`; then the membership loop's
/// resignation is awaited. Without a runtime the node cannot be managed or
/// join its cluster, so it stops.
fn run(
    listener: std::net::TcpListener,
    state: AdminState,
    control: Control,
    heap_trim_interval_ms: u64,
    tls: Arc<NodeTls>,
    stop: &'static AtomicBool,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(target: "ringlog::cluster", %error, "cannot start the control runtime");
            stop.store(true, Ordering::SeqCst);
            return;
        }
    };
    runtime.block_on(async move {
        let membership = control.plane.map(|plane| tokio::spawn(plane.run(stop)));
        let users = tokio::spawn(super::users::follow_etcd_users(control.users, stop));
        let trimmer = (heap_trim_interval_ms > 0).then(|| {
            tokio::spawn(trim_heap(heap_trim_interval_ms, || {
                crate::runtime::memory::release_free_heap();
            }))
        });
        serve_admin(listener, state, tls, stop).await;
        if let Some(trimmer) = trimmer {
            trimmer.abort();
        }
        users.abort();
        if let Some(membership) = membership {
            if let Err(error) = membership.await {
                tracing::error!(target: "ringlog::cluster", %error, "the membership loop failed");
            }
        }
    });
}

/// Hand freed heap pages back to the OS every `interval_ms` (see
/// `runtime::memory`) with `trim`: off the shards, so none ever pays for
/// it, and off this runtime's thread too (tokio's blocking pool), because
/// a trim of a large heap can take long enough to delay the lease
/// keep-alive beside it.
async fn trim_heap(interval_ms: u64, trim: fn()) {
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = tokio::task::spawn_blocking(trim).await {
            tracing::warn!(target: "ringlog::node", %error, "heap trim failed");
        }
    }
}

/// Serve the admin API until `stop`, over TLS when `[tls]` covers the
/// admin listener.
async fn serve_admin(listener: std::net::TcpListener, state: AdminState, tls: Arc<NodeTls>, stop: &'static AtomicBool) {
    let connections = Arc::clone(&state.metrics.connections);
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = async move {
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(target: "ringlog::admin", %error, "cannot use the admin listener");
            return;
        }
    };
    let served = match tls.server(Listener::Admin).is_some() {
        false => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
        true => match TlsListener::start(listener, tls, connections) {
            // tap_io: axum gives the peer address (ConnectInfo) of wrapped listeners.
            Ok(listener) => axum::serve(listener.tap_io(|_| {}), app).with_graceful_shutdown(shutdown).await,
            Err(error) => Err(error),
        },
    };
    if let Err(error) = served {
        tracing::error!(target: "ringlog::admin", %error, "admin server failed");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn a_slow_heap_trim_does_not_delay_the_control_threads_other_tasks() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let delayed = runtime.block_on(async {
            let trimmer = tokio::spawn(super::trim_heap(1, || std::thread::sleep(Duration::from_millis(500))));
            // Let the first trim start, then time a short timer (the lease keep-alive's kind of work).
            tokio::task::yield_now().await;
            let started = Instant::now();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let delayed = started.elapsed();
            trimmer.abort();
            delayed
        });
        assert!(delayed < Duration::from_millis(300), "a 20 ms timer took {delayed:?}");
    }
}
