//! Sequential node ids (SPEC §5): assigned once by an etcd transaction that
//! creates `PREFIX/replica/<n>/insync` only if absent, then kept in
//! `DATA/node_id`. `PREFIX/last_node_id` records the highest id handed
//! out, so a forgotten node's id is never reused, and a key someone created
//! by hand is skipped rather than taken over.

use std::path::Path;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::etcd::{text, ClusterError, Etcd};
use super::keys::Keys;

/// Name of the file in the data directory that keeps the id.
pub const NODE_ID_FILE: &str = "node_id";

/// Give up after this many contended attempts (each one means another node
/// got an id or a hand-made key was skipped, so this is never reached in
/// practice; it bounds the loop).
const MAX_ATTEMPTS: usize = 10_000;

/// The id kept in `DATA/node_id`, if any.
pub fn stored_node_id(data_dir: &Path) -> Result<Option<u64>, ClusterError> {
    let path = data_dir.join(NODE_ID_FILE);
    let bytes = crate::storage::io::read_optional(&path).map_err(|source| ClusterError::Io {
        action: "read",
        path: path.display().to_string(),
        source,
    })?;
    let Some(bytes) = bytes else { return Ok(None) };
    let text = String::from_utf8_lossy(&bytes);
    match text.trim().parse::<u64>() {
        Ok(id) if id > 0 => Ok(Some(id)),
        _ => Err(ClusterError::Invalid(format!("{} holds {:?}, not a node id", path.display(), text.trim()))),
    }
}

fn store_node_id(data_dir: &Path, id: u64) -> Result<(), ClusterError> {
    let path = data_dir.join(NODE_ID_FILE);
    crate::storage::io::write_file_atomically(&path, format!("{id}\n").as_bytes()).map_err(|source| ClusterError::Io {
        action: "write",
        path: path.display().to_string(),
        source,
    })
}

/// How this node came by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeIdOrigin {
    /// `DATA/node_id` matched a key in etcd.
    Kept,
    /// First start: a new id.
    Assigned,
    /// `DATA/node_id` named a forgotten id (the old one is in here).
    Reassigned(u64),
}

/// This node's id: the stored one if etcd still knows it, else a new one.
pub async fn ensure_node_id(etcd: &Etcd, keys: &Keys, data_dir: &Path) -> Result<(u64, NodeIdOrigin), ClusterError> {
    let stored = stored_node_id(data_dir)?;
    if let Some(id) = stored {
        if etcd.get(&keys.insync(id)).await?.is_some() {
            return Ok((id, NodeIdOrigin::Kept));
        }
    }
    let id = assign_node_id(etcd, keys).await?;
    store_node_id(data_dir, id)?;
    Ok((id, stored.map_or(NodeIdOrigin::Assigned, NodeIdOrigin::Reassigned)))
}

/// Claim the next free id with compare-and-swap transactions.
pub async fn assign_node_id(etcd: &Etcd, keys: &Keys) -> Result<u64, ClusterError> {
    let last_key = keys.last_node_id();
    for _ in 0..MAX_ATTEMPTS {
        let last = etcd.get(&last_key).await?;
        let (last_id, unchanged) = match &last {
            Some(kv) => {
                let value = text(kv);
                let id = value
                    .parse::<u64>()
                    .map_err(|_| ClusterError::Invalid(format!("{last_key} holds {value:?}, not a node id")))?;
                (id, Compare::mod_revision(last_key.clone(), CompareOp::Equal, kv.mod_revision()))
            }
            None => (0, Compare::create_revision(last_key.clone(), CompareOp::Equal, 0)),
        };
        let candidate = last_id + 1;
        let candidate_key = keys.insync(candidate);
        let claim = Txn::new()
            .when([unchanged.clone(), Compare::create_revision(candidate_key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(candidate_key.clone(), "0", None),
                TxnOp::put(last_key.clone(), candidate.to_string(), None),
            ]);
        if etcd.txn("claim node id", claim).await?.succeeded() {
            return Ok(candidate);
        }
        // Either another node moved last_node_id (re-read and try the next
        // id), or the candidate's key exists without being counted (made by
        // hand): count it so nobody tries it again.
        let skip = Txn::new()
            .when([unchanged, Compare::create_revision(candidate_key, CompareOp::NotEqual, 0)])
            .and_then([TxnOp::put(last_key.clone(), candidate.to_string(), None)]);
        if etcd.txn("skip taken node id", skip).await?.succeeded() {
            tracing::info!(target: "ringlog::cluster", id = candidate, "node id already taken in etcd; skipping it");
        }
    }
    Err(ClusterError::Invalid(format!("could not claim a node id after {MAX_ATTEMPTS} attempts")))
}
