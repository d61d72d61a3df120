//! The in-sync replica set, managed by the leader's control thread from
//! the followers' progress the shards publish.
//!
//! Order matters for safety. A follower leaving the set is first written
//! `"0"` in etcd (fenced on the election) and only then dropped from the
//! set the shards count: no acknowledgement ever relies on the smaller set
//! before etcd says a replica is out of sync. A follower joining is first
//! added to the counted set ("pending"), and written `"1"` only once it has
//! caught up *after* that — so every record acknowledged before it was
//! marked in sync is on it.

use std::collections::{BTreeMap, HashMap};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::etcd::{text, ClusterError, Etcd};
use super::keys::Keys;
use super::membership::ControlPlane;
use super::state::monotonic_ms;

/// Followers whose insync key is `"1"` (this node excluded).
pub async fn in_sync_keys(etcd: &Etcd, keys: &Keys, own_id: u64) -> Result<Vec<u64>, ClusterError> {
    Ok(all_insync(etcd, keys)
        .await?
        .into_iter()
        .filter(|&(id, in_sync)| in_sync && id != own_id)
        .map(|(id, _)| id)
        .collect())
}

async fn all_insync(etcd: &Etcd, keys: &Keys) -> Result<BTreeMap<u64, bool>, ClusterError> {
    let mut replicas = BTreeMap::new();
    for kv in etcd.get_prefix(&keys.replicas()).await? {
        if let Some(id) = keys.parse_insync(kv.key()) {
            replicas.insert(id, text(&kv) == "1");
        }
    }
    Ok(replicas)
}

/// The cluster secret: the configured one, else `PREFIX/secret`, created
/// once (random, 32 bytes hex) by whichever node gets there first.
pub async fn ensure_secret(etcd: &Etcd, keys: &Keys, configured: Option<&str>) -> Result<Vec<u8>, ClusterError> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    if let Some(kv) = etcd.get(&keys.secret()).await? {
        return Ok(kv.value().to_vec());
    }
    let random = crate::replication::auth::random_bytes(32).map_err(|source| ClusterError::Io {
        action: "read",
        path: "/dev/urandom".into(),
        source,
    })?;
    let secret: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let create = Txn::new()
        .when([Compare::create_revision(keys.secret(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(keys.secret(), secret, None)]);
    etcd.txn("create cluster secret", create).await?;
    let kv = etcd.get(&keys.secret()).await?.ok_or_else(|| ClusterError::Invalid("cluster secret vanished".into()))?;
    Ok(kv.value().to_vec())
}

impl ControlPlane {
    /// One round of ISR management (leader only). `pending` maps joining
    /// followers to when they were added to the counted set.
    pub async fn manage_in_sync_set(
        &self,
        etcd: &Etcd,
        own_id: u64,
        pending: &mut HashMap<u64, u64>,
    ) -> Result<(), ClusterError> {
        let view = self.state.view();
        let now = monotonic_ms();
        let lag_max = self.config.replica_lag_max_ms;
        // A new leader gives the followers marked in sync time to reconnect
        // (they learn of it within an election poll), but not a whole
        // lag_max: a follower that died with the old leader would hold
        // acks=all that long.
        let reconnect_grace_ms = lag_max.min(self.config.lease_ttl_s * 1000);
        let since_term_ms = now.saturating_sub(view.leader_since_ms);
        let mut counted: Vec<u64> = view.in_sync_followers.clone();
        let replicas = all_insync(etcd, &self.keys).await?;
        for (&id, &in_sync) in replicas.iter().filter(|(&id, _)| id != own_id) {
            let progress = self.progress.get(id);
            let connected = progress.as_ref().is_some_and(|progress| progress.is_connected());
            let caught_up_ms = progress.as_ref().map_or(0, |progress| progress.caught_up_ms());
            // A follower in sync when this term began counts as caught up then.
            let effective_ms = if in_sync { caught_up_ms.max(view.leader_since_ms) } else { caught_up_ms };
            let healthy = connected && effective_ms > 0 && now.saturating_sub(effective_ms) <= lag_max;
            let in_grace = !connected && since_term_ms <= reconnect_grace_ms;
            match (in_sync, healthy || in_grace) {
                (true, true) => {
                    if !counted.contains(&id) {
                        counted.push(id);
                    }
                }
                (true, false) => {
                    let reason = if connected { "lagging" } else { "disconnected" };
                    if self.set_in_sync(id, false).await? {
                        counted.retain(|&other| other != id);
                        tracing::warn!(target: "ringlog::replication", follower = id, reason, lag_max_ms = lag_max,
                            "follower left the in-sync set");
                    }
                }
                (false, _) if healthy => match pending.get(&id) {
                    None => {
                        pending.insert(id, now);
                        if !counted.contains(&id) {
                            counted.push(id);
                        }
                    }
                    Some(&since) if caught_up_ms > since => {
                        if self.set_in_sync(id, true).await? {
                            pending.remove(&id);
                            tracing::info!(target: "ringlog::replication", follower = id, "follower joined the in-sync set");
                        }
                    }
                    Some(_) => {}
                },
                (false, _) => {
                    pending.remove(&id);
                    counted.retain(|&other| other != id);
                }
            }
        }
        // Forgotten replicas (keys deleted) no longer count.
        counted.retain(|id| replicas.contains_key(id));
        pending.retain(|id, _| replicas.contains_key(id));
        counted.sort_unstable();
        if counted != view.in_sync_followers {
            self.state.update(|view| view.in_sync_followers = counted);
        }
        Ok(())
    }
}
