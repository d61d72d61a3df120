//! Leader election on `PREFIX/leader` with compare-and-swap transactions.
//!
//! A node campaigns by creating the leader key, bound to its lease, in a
//! transaction that also checks its own insync key is `"1"`: the check and
//! the write are one atomic step, so a replica marked out of sync between
//! reading its key and campaigning cannot win. A brand-new cluster (no
//! `PREFIX/initialized` key) lets any node win once; that winner writes
//! `initialized` and marks itself in sync in the same transaction.
//!
//! The leader epoch is the etcd revision at which the leader key was
//! created: it grows with every election and needs no extra key.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::etcd::{text, ClusterError, Etcd};
use super::keys::Keys;

/// Who leads, as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This node holds the election under `epoch`.
    Mine {
        /// The leader key's create revision (as the leader epoch).
        epoch: u32,
        /// The same revision, for fencing compares.
        revision: i64,
    },
    /// Another node leads.
    Other(u64),
    /// Nobody leads.
    Vacant,
}

/// The leader epoch for a leader key created at `revision`.
pub fn epoch_of(revision: i64) -> Result<u32, ClusterError> {
    u32::try_from(revision)
        .map_err(|_| ClusterError::Invalid(format!("etcd revision {revision} does not fit a leader epoch")))
}

/// Read the election key.
pub async fn observe(etcd: &Etcd, keys: &Keys, lease: i64) -> Result<Leadership, ClusterError> {
    let Some(kv) = etcd.get(&keys.leader()).await? else { return Ok(Leadership::Vacant) };
    if kv.lease() == lease {
        return Ok(Leadership::Mine { epoch: epoch_of(kv.create_revision())?, revision: kv.create_revision() });
    }
    let value = text(&kv);
    value
        .parse()
        .map(Leadership::Other)
        .map_err(|_| ClusterError::Invalid(format!("{} holds {value:?}, not a node id", keys.leader())))
}

/// Try to become leader; `Some((epoch, revision))` when this node won.
pub async fn campaign(etcd: &Etcd, keys: &Keys, id: u64, lease: i64) -> Result<Option<(u32, i64)>, ClusterError> {
    let leader = keys.leader();
    let put_leader = TxnOp::put(leader.clone(), id.to_string(), Some(etcd_client::PutOptions::new().with_lease(lease)));
    let in_sync = Txn::new()
        .when([
            Compare::create_revision(leader.clone(), CompareOp::Equal, 0),
            Compare::value(keys.insync(id), CompareOp::Equal, "1"),
        ])
        .and_then([put_leader.clone()])
        .or_else([TxnOp::get(keys.initialized(), None)]);
    let response = etcd.txn("campaign", in_sync).await?;
    if response.succeeded() {
        return won(&response).map(Some);
    }
    let initialized = response.op_responses().into_iter().any(|op| match op {
        TxnOpResponse::Get(get) => !get.kvs().is_empty(),
        _ => false,
    });
    if initialized {
        return Ok(None);
    }
    let bootstrap = Txn::new()
        .when([
            Compare::create_revision(leader, CompareOp::Equal, 0),
            Compare::create_revision(keys.initialized(), CompareOp::Equal, 0),
        ])
        .and_then([
            put_leader,
            TxnOp::put(keys.initialized(), id.to_string(), None),
            TxnOp::put(keys.insync(id), "1", None),
        ]);
    let response = etcd.txn("bootstrap campaign", bootstrap).await?;
    if response.succeeded() {
        tracing::info!(target: "ringlog::cluster", id, "brand-new cluster: this node is its first leader");
        return won(&response).map(Some);
    }
    Ok(None)
}

fn won(response: &etcd_client::TxnResponse) -> Result<(u32, i64), ClusterError> {
    let revision = response
        .header()
        .map(|header| header.revision())
        .ok_or_else(|| ClusterError::Invalid("etcd transaction answer without a header".into()))?;
    Ok((epoch_of(revision)?, revision))
}

/// Give up the election (only if this node still holds it).
pub async fn resign(etcd: &Etcd, keys: &Keys, lease: i64) -> Result<(), ClusterError> {
    let txn = Txn::new()
        .when([Compare::lease(keys.leader(), CompareOp::Equal, lease)])
        .and_then([TxnOp::delete(keys.leader(), None)]);
    etcd.txn("resign", txn).await.map(|_| ())
}

/// Write `PREFIX/replica/<id>/insync` as the leader: the transaction checks
/// the election is still held at `revision` (fencing), so a deposed leader
/// can never change the in-sync set. Returns whether it was written.
pub async fn write_in_sync(
    etcd: &Etcd,
    keys: &Keys,
    revision: i64,
    id: u64,
    in_sync: bool,
) -> Result<bool, ClusterError> {
    let txn = Txn::new()
        .when([
            Compare::create_revision(keys.leader(), CompareOp::Equal, revision),
            Compare::create_revision(keys.insync(id), CompareOp::NotEqual, 0),
        ])
        .and_then([TxnOp::put(keys.insync(id), if in_sync { "1" } else { "0" }, None)]);
    Ok(etcd.txn("write insync", txn).await?.succeeded())
}
