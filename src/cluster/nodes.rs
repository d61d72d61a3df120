//! The nodes view (`GET /api/nodes`, `ringlog nodes`) and forgetting a
//! replica that is gone for good (`DELETE /api/nodes/{id}`).

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::Serialize;

use super::error::ClusterError;
use super::etcd::{text, Etcd};
use super::keys::{Keys, Registration};
use crate::state::progress::ReplicationProgress;

/// Every known replica (insync keys) with whether it is in sync, and every
/// live node's registration, by id. Keys that do not parse are skipped.
pub async fn read_registry(
    etcd: &Etcd,
    keys: &Keys,
) -> Result<(BTreeMap<u64, bool>, BTreeMap<u64, Registration>), ClusterError> {
    let mut in_sync = BTreeMap::new();
    for kv in etcd.get_prefix(&keys.replicas()).await? {
        if let Some(id) = keys.parse_insync(kv.key()) {
            in_sync.insert(id, text(&kv) == "1");
        }
    }
    let mut registrations = BTreeMap::new();
    for kv in etcd.get_prefix(&keys.nodes()).await? {
        if let (Some(id), Ok(registration)) =
            (keys.parse_node(kv.key()), serde_json::from_slice::<Registration>(kv.value()))
        {
            registrations.insert(id, registration);
        }
    }
    Ok((in_sync, registrations))
}

/// One replica as `GET /api/nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    /// Node id.
    pub id: u64,
    /// `leader` or `follower`.
    pub role: &'static str,
    /// Client address from its registration (null when not registered).
    pub address: Option<String>,
    /// Whether it is alive: registered under a live lease.
    pub connected: bool,
    /// Its insync key is `"1"`.
    pub in_sync: bool,
    /// Records behind the leader.
    pub lag_records: u64,
    /// Bytes behind the leader.
    pub lag_bytes: u64,
}

/// Every known replica (insync keys) merged with live registrations,
/// leader first, then by id. With `progress` (asked on the leader),
/// `connected` and the lags come from the followers' replication reads;
/// without it, `connected` means registered under a live lease.
pub async fn list_nodes(
    etcd: &Etcd,
    keys: &Keys,
    progress: Option<&ReplicationProgress>,
) -> Result<Vec<NodeEntry>, ClusterError> {
    let (in_sync, registrations) = read_registry(etcd, keys).await?;
    let leader = etcd.get(&keys.leader()).await?.and_then(|kv| text(&kv).parse::<u64>().ok());
    let ids: std::collections::BTreeSet<u64> = in_sync.keys().chain(registrations.keys()).copied().collect();
    let mut entries: Vec<NodeEntry> = ids
        .into_iter()
        .map(|id| {
            let registered = registrations.contains_key(&id);
            let follower = progress.filter(|_| Some(id) != leader).map(|progress| progress.get(id));
            let (connected, lag_records, lag_bytes) = match follower {
                None => (registered, 0, 0),
                Some(None) => (false, 0, 0),
                Some(Some(progress)) => {
                    (registered && progress.is_connected(), progress.lag_records(), progress.lag_bytes())
                }
            };
            NodeEntry {
                id,
                role: if Some(id) == leader { "leader" } else { "follower" },
                address: registrations.get(&id).map(|registration| registration.client.clone()),
                connected,
                in_sync: in_sync.get(&id).copied().unwrap_or(false),
                lag_records,
                lag_bytes,
            }
        })
        .collect();
    entries.sort_by_key(|entry| (entry.role != "leader", entry.id));
    Ok(entries)
}

/// What forgetting a node did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgetOutcome {
    /// Its insync key and registration are gone.
    Forgotten,
    /// No such replica.
    Unknown,
    /// Refused (409) with the reason.
    Refused(String),
}

/// Forget replica `id`, asked on node `self_id`. The deletion is one
/// transaction that re-checks what the refusals looked at (the election
/// key and the registration), so a node that registers or wins the
/// election in between is never forgotten.
pub async fn forget(etcd: &Etcd, keys: &Keys, id: u64, self_id: Option<u64>) -> Result<ForgetOutcome, ClusterError> {
    if self_id == Some(id) {
        return Ok(ForgetOutcome::Refused(format!("node {id} is the node serving this request")));
    }
    if etcd.get(&keys.insync(id)).await?.is_none() {
        return Ok(ForgetOutcome::Unknown);
    }
    let leader = etcd.get(&keys.leader()).await?;
    if let Some(kv) = &leader {
        if text(kv) == id.to_string() {
            return Ok(ForgetOutcome::Refused(format!("node {id} is the leader")));
        }
    }
    if etcd.get(&keys.node(id)).await?.is_some() {
        return Ok(ForgetOutcome::Refused(format!("node {id} is registered and connected; stop it first")));
    }
    let leader_unchanged = match &leader {
        Some(kv) => Compare::mod_revision(keys.leader(), CompareOp::Equal, kv.mod_revision()),
        None => Compare::create_revision(keys.leader(), CompareOp::Equal, 0),
    };
    let txn = Txn::new()
        .when([
            leader_unchanged,
            Compare::create_revision(keys.node(id), CompareOp::Equal, 0),
            Compare::create_revision(keys.insync(id), CompareOp::NotEqual, 0),
        ])
        .and_then([TxnOp::delete(keys.insync(id), None), TxnOp::delete(keys.node(id), None)]);
    if etcd.txn("forget node", txn).await?.succeeded() {
        tracing::info!(target: "ringlog::cluster", id, "node forgotten");
        Ok(ForgetOutcome::Forgotten)
    } else {
        Ok(ForgetOutcome::Refused(format!("node {id} changed while it was being forgotten; try again")))
    }
}
