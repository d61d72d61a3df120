//! The node's etcd lease and its keep-alive task. Renewals happen on their
//! own schedule (a third of the TTL), independent of everything else the
//! control thread does. Each successful renewal moves the write deadline
//! forward to `sent + ttl - safety margin`: the lease cannot expire in etcd
//! before `sent + ttl` (etcd restarts the countdown only when it receives
//! the renewal, which is after we sent it), so a leader that stops
//! acknowledging at the deadline has stopped before anyone else can be
//! elected.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::etcd::Etcd;
use crate::runtime::clock::{monotonic_ms, monotonic_ms_at};
use crate::state::cluster::ClusterState;

/// How a lease is doing, shared by the keep-alive task and the membership loop.
#[derive(Debug)]
pub struct LeaseHealth {
    /// The lease id.
    pub lease: i64,
    renewed_ms: AtomicU64,
    lost: AtomicBool,
}

impl LeaseHealth {
    /// A lease just granted (at `granted`).
    pub fn new(lease: i64, granted: Instant) -> Arc<LeaseHealth> {
        Arc::new(LeaseHealth {
            lease,
            renewed_ms: AtomicU64::new(monotonic_ms_at(granted)),
            lost: AtomicBool::new(false),
        })
    }

    /// Whether the lease is known to be gone (expired, revoked, or not
    /// renewed for a whole TTL).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Milliseconds since the last successful renewal was sent.
    pub fn since_renewal_ms(&self) -> u64 {
        monotonic_ms().saturating_sub(self.renewed_ms.load(Ordering::SeqCst))
    }

    fn mark_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }
}

/// The part of the TTL a leader gives up to clock and scheduling slack.
pub fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(300)).min(ttl / 2)
}

/// Renew `health.lease` every `ttl / 3` until it is lost; extend the
/// node's write deadline after each renewal. Runs as its own task.
pub async fn keep_alive(etcd: Etcd, health: Arc<LeaseHealth>, ttl: Duration, state: Arc<ClusterState>) {
    let interval = ttl / 3;
    let margin = safety_margin(ttl);
    let mut stream = None;
    loop {
        let sent = Instant::now();
        match renew_once(&etcd, health.lease, interval, &mut stream).await {
            Renewal::Renewed(granted) => {
                health.renewed_ms.store(monotonic_ms_at(sent), Ordering::SeqCst);
                state.extend_write_deadline(sent + granted.min(ttl).saturating_sub(margin));
            }
            Renewal::Gone => {
                tracing::warn!(target: "ringlog::cluster", lease = health.lease, "etcd says the lease expired or was revoked");
                state.revoke_write_deadline();
                health.mark_lost();
                return;
            }
            Renewal::Failed(reason) => {
                stream = None;
                tracing::warn!(target: "ringlog::cluster", lease = health.lease, %reason,
                    since_renewal_ms = health.since_renewal_ms(), "lease renewal failed; retrying");
            }
        }
        if Duration::from_millis(health.since_renewal_ms()) >= ttl {
            tracing::warn!(target: "ringlog::cluster", lease = health.lease, ttl_ms = ttl.as_millis() as u64,
                "lease not renewed for a whole TTL; it has expired");
            state.revoke_write_deadline();
            health.mark_lost();
            return;
        }
        tokio::time::sleep_until((sent + interval).into()).await;
    }
}

enum Renewal {
    Renewed(Duration),
    Gone,
    Failed(String),
}

type KeepAliveStream = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

async fn renew_once(etcd: &Etcd, lease: i64, bound: Duration, stream: &mut Option<KeepAliveStream>) -> Renewal {
    let attempt = async {
        if stream.is_none() {
            let mut client = etcd.client();
            *stream = Some(client.lease_keep_alive(lease).await.map_err(|error| error.to_string())?);
        }
        let (keeper, responses) = stream.as_mut().expect("just set");
        keeper.keep_alive().await.map_err(|error| error.to_string())?;
        match responses.message().await {
            Ok(Some(response)) if response.ttl() > 0 => Ok(Some(Duration::from_secs(response.ttl() as u64))),
            Ok(Some(_)) => Ok(None),
            Ok(None) => Err("keep-alive stream closed".to_string()),
            Err(error) => Err(error.to_string()),
        }
    };
    match tokio::time::timeout(bound, attempt).await {
        Ok(Ok(Some(granted))) => Renewal::Renewed(granted),
        Ok(Ok(None)) => Renewal::Gone,
        Ok(Err(reason)) => Renewal::Failed(reason),
        Err(_) => Renewal::Failed(format!("no answer within {} ms", bound.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_margin_leaves_most_of_the_ttl() {
        assert_eq!(safety_margin(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(safety_margin(Duration::from_secs(2)), Duration::from_millis(400));
        assert_eq!(safety_margin(Duration::from_millis(400)), Duration::from_millis(200));
    }
}
