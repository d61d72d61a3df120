//! The admin listener with TLS: an accept loop hands each connection to
//! its own handshake task (bounded in time and in number, so a peer that
//! never finishes its handshake neither blocks the others nor piles up
//! tasks), and axum serves the connections whose handshake succeeded.
//! Every handshake takes the listener's configuration at that moment, so
//! a SIGHUP reload applies to the next connection and drops none.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;

use crate::security::listeners::NodeTls;
use crate::security::settings::Listener;
use crate::state::metrics::ConnectionCount;

/// Handshakes running at once on the admin listener; more wait to start.
const MAX_CONCURRENT_HANDSHAKES: usize = 64;

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
    loop {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(target: "ringlog::admin", %error, "accept failed");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        let Some(config) = tls.server(Listener::Admin) else { return };
        let (timeout, ready, connections) = (tls.handshake_timeout, ready.clone(), Arc::clone(&connections));
        tokio::spawn(async move {
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(session)) => {
                    drop(permit);
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
