//! The admin listener with TLS: an accept loop hands each connection to
//! its own handshake task, and axum serves the connections whose handshake
//! succeeded. Handshakes are bounded in time, in number and per source
//! address: a connection beyond either bound is closed at once, so peers
//! that open connections and never finish a handshake can neither stall
//! the accept loop nor take every slot from everyone else.
//! Every handshake takes the listener's configuration at that moment, so
//! a SIGHUP reload applies to the next connection and drops none.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;

use crate::security::listeners::NodeTls;
use crate::security::settings::Listener;
use crate::state::metrics::ConnectionCount;

/// Handshakes running at once on the admin listener; a connection beyond
/// it is closed.
const MAX_CONCURRENT_HANDSHAKES: usize = 64;

/// Handshakes one source address may have running at once.
const MAX_HANDSHAKES_PER_SOURCE: usize = 8;

/// Connections whose handshake is done, waiting for axum to take them.
const READY_QUEUE_DEPTH: usize = 64;

/// How long the accept loop pauses after a failed accept (EMFILE and friends).
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// A listener that yields TLS connections to axum.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Start accepting on `listener` (on the current tokio runtime).
    pub fn start(listener: TcpListener, tls: Arc<NodeTls>, connections: Arc<ConnectionCount>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE_DEPTH);
        tokio::spawn(accept_loop(listener, tls, connections, sender));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<NodeTls>,
    connections: Arc<ConnectionCount>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let per_source = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(target: "ringlog::admin", %error, "accept failed");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        let Some(config) = tls.server(Listener::Admin) else { return };
        let Some(slot) = HandshakeSlot::take(&handshakes, &per_source, peer.ip()) else {
            connections.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "ringlog::tls", listener = "admin", %peer, "too many handshakes; closed");
            continue;
        };
        let (timeout, ready, connections) = (tls.handshake_timeout, ready.clone(), Arc::clone(&connections));
        tokio::spawn(async move {
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            let outcome = tokio::time::timeout(timeout, handshake).await;
            drop(slot);
            match outcome {
                Ok(Ok(session)) => {
                    let _ = ready.send((session, peer)).await;
                }
                outcome => {
                    connections.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                    let error =
                        outcome.map_or_else(|_| "timed out".to_string(), |failed| format!("{:?}", failed.err()));
                    tracing::debug!(target: "ringlog::tls", listener = "admin", %peer, %error, "handshake failed");
                }
            }
        });
    }
}

/// Sources with handshakes running, and how many each.
type SourceCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One running handshake, counted globally and for its source address
/// until dropped.
struct HandshakeSlot {
    _permit: OwnedSemaphorePermit,
    per_source: SourceCounts,
    source: IpAddr,
}

impl HandshakeSlot {
    /// A slot for `source`, or `None` when either bound is reached.
    fn take(handshakes: &Arc<Semaphore>, per_source: &SourceCounts, source: IpAddr) -> Option<HandshakeSlot> {
        let permit = Arc::clone(handshakes).try_acquire_owned().ok()?;
        let mut counts = per_source.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(source).or_insert(0);
        if *count >= MAX_HANDSHAKES_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(HandshakeSlot { _permit: permit, per_source: Arc::clone(per_source), source })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut counts = self.per_source.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (it never does while the runtime
            // runs); wait for the server's shutdown instead.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
