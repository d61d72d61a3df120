//! Sequential node ids (SPEC §5): assigned once by an etcd transaction that
//! creates `PREFIX/replica/<n>/insync` only if absent, then kept in
//! `DATA/node_id`. `PREFIX/last_node_id` records the highest id handed
//! out, so a forgotten node's id is never reused, and a key someone created
//! by hand is skipped rather than taken over.

use std::path::{Path, PathBuf};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use thiserror::Error;

use super::error::ClusterError;
use super::etcd::{text, Etcd};
use super::keys::Keys;

/// Name of the file in the data directory that keeps the id.
pub const NODE_ID_FILE: &str = "node_id";

/// Give up after this many contended attempts (each one means another node
/// got an id or a hand-made key was skipped, so this is never reached in
/// practice; it bounds the loop).
const MAX_ATTEMPTS: usize = 10_000;

/// Why `DATA/node_id` cannot give this node its id.
#[derive(Debug, Error)]
pub enum NodeIdError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// `DATA/node_id`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written (atomically, with its directory synced).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// `DATA/node_id`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file holds something other than a positive integer.
    #[error("{} holds {content:?}, not a node id", path.display())]
    Malformed {
        /// `DATA/node_id`.
        path: PathBuf,
        /// What it holds (trimmed).
        content: String,
    },
}

/// The id kept in `DATA/node_id`, if any.
pub fn stored_node_id(data_dir: &Path) -> Result<Option<u64>, NodeIdError> {
    let path = data_dir.join(NODE_ID_FILE);
    let bytes = match crate::storage::io::read_optional(&path) {
        Ok(bytes) => bytes,
        Err(source) => return Err(NodeIdError::Read { path, source }),
    };
    let Some(bytes) = bytes else { return Ok(None) };
    let text = String::from_utf8_lossy(&bytes);
    match text.trim().parse::<u64>() {
        Ok(id) if id > 0 => Ok(Some(id)),
        _ => Err(NodeIdError::Malformed { content: text.trim().to_string(), path }),
    }
}

fn store_node_id(data_dir: &Path, id: u64) -> Result<(), NodeIdError> {
    assert!(id > 0, "node ids start at 1");
    let path = data_dir.join(NODE_ID_FILE);
    match crate::storage::io::write_file_atomically(&path, format!("{id}\n").as_bytes()) {
        Ok(()) => Ok(()),
        Err(source) => Err(NodeIdError::Write { path, source }),
    }
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
    debug_assert_eq!(stored_node_id(data_dir).ok().flatten(), Some(id), "the stored id reads back");
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
                let id = value.parse::<u64>().map_err(|_| ClusterError::MalformedKey {
                    key: last_key.clone(),
                    value,
                    expected: "a node id",
                })?;
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
    Err(ClusterError::NodeIdsExhausted { attempts: MAX_ATTEMPTS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_file_that_holds_no_id_is_refused_naming_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_ID_FILE);
        std::fs::write(&path, "seven\n").unwrap();
        let error = stored_node_id(dir.path()).unwrap_err();
        assert!(
            matches!(&error, NodeIdError::Malformed { path: named, content } if *named == path && content == "seven"),
            "{error:?}"
        );
        assert_eq!(error.to_string(), format!("{} holds \"seven\", not a node id", path.display()));
        std::fs::write(&path, "0\n").unwrap();
        assert!(matches!(stored_node_id(dir.path()), Err(NodeIdError::Malformed { .. })), "0 is no node id");
    }

    #[test]
    fn an_unreadable_node_id_file_is_refused_naming_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_ID_FILE);
        // A directory where the file should be: reading it fails.
        std::fs::create_dir(&path).unwrap();
        let error = stored_node_id(dir.path()).unwrap_err();
        assert!(matches!(&error, NodeIdError::Read { path: named, .. } if *named == path), "{error:?}");
        assert!(error.to_string().starts_with(&format!("cannot read {}: ", path.display())), "{error}");
        let error = store_node_id(dir.path(), 3).unwrap_err();
        assert!(matches!(&error, NodeIdError::Write { path: named, .. } if *named == path), "{error:?}");
    }

    #[test]
    fn a_stored_node_id_reads_back_and_a_missing_file_is_no_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stored_node_id(dir.path()).unwrap(), None);
        store_node_id(dir.path(), 42).unwrap();
        assert_eq!(stored_node_id(dir.path()).unwrap(), Some(42));
    }
}
