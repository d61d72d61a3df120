//! Accepting connections, the same for the client, replication and Kafka
//! listeners: stop when the node stops, back off after a failed accept
//! instead of spinning, and count every connection against
//! `limits.max_connections` (a connection beyond it is closed at once).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

use crate::runtime::Latch;
use crate::state::metrics::ConnectionCount;

/// How long a listener pauses after a failed accept (EMFILE and friends).
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// A connection counted in `ConnectionCount`; the count drops with it.
pub struct Admitted {
    connections: Arc<ConnectionCount>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a listener needs to accept: the shard's stop latch and the
/// connection count with its limit.
pub struct AcceptGate<'a> {
    /// Set when the node stops (`ShardContext::stopping`).
    pub stopping: &'a Latch,
    /// Open connections across shards and listeners.
    pub connections: &'a Arc<ConnectionCount>,
    /// `limits.max_connections`.
    pub limit: usize,
}

/// The next connection within the limit, or `None` once the node stops.
pub async fn next_connection(listener: &TcpListener, gate: &AcceptGate<'_>) -> Option<(TcpStream, Admitted)> {
    loop {
        let stream = accept_or_stop(listener, gate.stopping).await?;
        if gate.connections.open.fetch_add(1, Ordering::SeqCst) >= gate.limit {
            gate.connections.open.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(target: "ringlog::net", limit = gate.limit,
                "connection refused: limits.max_connections reached");
            continue;
        }
        return Some((stream, Admitted { connections: Arc::clone(gate.connections) }));
    }
}

/// The next accepted stream, or `None` once the node stops.
async fn accept_or_stop(listener: &TcpListener, stopping: &Latch) -> Option<TcpStream> {
    loop {
        if stopping.is_set() {
            return None;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stopping.wait().await;
            None
        })
        .await;
        match accepted? {
            Ok(stream) => return Some(stream),
            Err(error) => {
                tracing::warn!(target: "ringlog::net", %error, "accept failed");
                crate::runtime::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
}
