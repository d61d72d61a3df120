//! Leader election on `PREFIX/leader` with compare-and-swap transactions.
//!
//! A node campaigns by creating the leader key, bound to its lease, in a
//! transaction that also checks its own insync key is `"1"`: the check and
//! the write are one atomic step, so a replica marked out of sync between
//! reading its key and campaigning cannot win. A brand-new cluster (no
//! `PREFIX/initialized` key) lets any node win once; that winner writes
//! `initialized` and marks itself in sync in the same transaction.
//!
//! The leader epoch is a counter in `PREFIX/leader_epoch`, raised by the
//! winner in its campaign transaction (compare-and-swap), to one above both
//! the stored value and the highest epoch in the winner's own logs: etcd
//! revisions (the old epoch) stopped fitting a u32 after 2^32 writes, and
//! an etcd that was wiped starts counting again below the epochs on disk.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::error::ClusterError;
use super::etcd::{text, Etcd};
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
    Other {
        /// The leader's node id.
        leader: u64,
        /// The epoch it leads under, read at the same etcd revision as the
        /// leader key (both are written by one campaign transaction).
        epoch: Option<u32>,
    },
    /// Nobody leads.
    Vacant,
}

/// The epoch a new leader takes: one above what etcd stored (`None`: no
/// election yet, or etcd was wiped) and above every epoch in its own logs.
pub fn next_epoch(stored: Option<&str>, local_max: u32) -> Result<u32, ClusterError> {
    let stored = match stored {
        Some(text) => text.parse::<u32>().map_err(|_| ClusterError::MalformedKey {
            key: "the leader epoch key".into(),
            value: text.to_string(),
            expected: "an epoch",
        })?,
        None => 0,
    };
    stored.max(local_max).checked_add(1).ok_or(ClusterError::EpochsExhausted)
}

/// Read the election key and the epoch key together, at one etcd revision:
/// read one after the other, a new election between the two reads would
/// pair one leader with another's epoch (and Metadata would name it).
pub async fn observe(etcd: &Etcd, keys: &Keys, lease: i64) -> Result<Leadership, ClusterError> {
    let mut values = etcd.get_together(&[keys.leader(), keys.leader_epoch()]).await?.into_iter();
    let (Some(leader), epoch) = (values.next().flatten(), values.next().flatten()) else {
        return Ok(Leadership::Vacant);
    };
    let epoch = epoch.map(|kv| parse_epoch(keys, &kv)).transpose()?;
    if leader.lease() == lease {
        // Nobody can campaign while this node holds the key, so the epoch
        // key holds what this node's campaign wrote.
        let epoch = epoch.ok_or_else(|| ClusterError::MalformedKey {
            key: keys.leader_epoch(),
            value: String::new(),
            expected: "an epoch",
        })?;
        return Ok(Leadership::Mine { epoch, revision: leader.create_revision() });
    }
    let value = text(&leader);
    let leader =
        value.parse().map_err(|_| ClusterError::MalformedKey { key: keys.leader(), value, expected: "a node id" })?;
    Ok(Leadership::Other { leader, epoch })
}

fn parse_epoch(keys: &Keys, kv: &etcd_client::KeyValue) -> Result<u32, ClusterError> {
    let value = text(kv);
    value.parse().map_err(|_| ClusterError::MalformedKey { key: keys.leader_epoch(), value, expected: "an epoch" })
}

/// Try to become leader; `Some((epoch, revision))` when this node won.
/// `local_max_epoch` is the highest epoch in this node's logs.
pub async fn campaign(
    etcd: &Etcd,
    keys: &Keys,
    id: u64,
    lease: i64,
    local_max_epoch: u32,
) -> Result<Option<(u32, i64)>, ClusterError> {
    let leader = keys.leader();
    let put_leader = TxnOp::put(leader.clone(), id.to_string(), Some(etcd_client::PutOptions::new().with_lease(lease)));
    let stored = etcd.get(&keys.leader_epoch()).await?;
    let epoch = next_epoch(stored.as_ref().map(text).as_deref(), local_max_epoch)?;
    // Another campaign in between moves the key: this one then fails.
    let epoch_unchanged = match &stored {
        Some(kv) => Compare::mod_revision(keys.leader_epoch(), CompareOp::Equal, kv.mod_revision()),
        None => Compare::create_revision(keys.leader_epoch(), CompareOp::Equal, 0),
    };
    let put_epoch = TxnOp::put(keys.leader_epoch(), epoch.to_string(), None);
    let in_sync = Txn::new()
        .when([
            Compare::create_revision(leader.clone(), CompareOp::Equal, 0),
            Compare::value(keys.insync(id), CompareOp::Equal, "1"),
            epoch_unchanged.clone(),
        ])
        .and_then([put_leader.clone(), put_epoch.clone()])
        .or_else([TxnOp::get(keys.initialized(), None)]);
    let response = etcd.txn("campaign", in_sync).await?;
    if response.succeeded() {
        return won(&response, epoch).map(Some);
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
            epoch_unchanged,
        ])
        .and_then([
            put_leader,
            put_epoch,
            TxnOp::put(keys.initialized(), id.to_string(), None),
            TxnOp::put(keys.insync(id), "1", None),
        ]);
    let response = etcd.txn("bootstrap campaign", bootstrap).await?;
    if response.succeeded() {
        tracing::info!(target: "ringlog::cluster", id, "brand-new cluster: this node is its first leader");
        return won(&response, epoch).map(Some);
    }
    Ok(None)
}

/// The epoch won and the leader key's create revision (for fencing).
fn won(response: &etcd_client::TxnResponse, epoch: u32) -> Result<(u32, i64), ClusterError> {
    let revision = response.header().map(|header| header.revision()).ok_or(ClusterError::MissingHeader)?;
    Ok((epoch, revision))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_epoch_is_above_both_the_stored_one_and_every_epoch_on_disk() {
        assert_eq!(next_epoch(None, 0).unwrap(), 1, "the first election");
        assert_eq!(next_epoch(Some("7"), 3).unwrap(), 8);
        assert_eq!(next_epoch(None, 205).unwrap(), 206, "etcd wiped: the disk decides");
        assert_eq!(next_epoch(Some("5"), 205).unwrap(), 206);
        assert!(next_epoch(Some("4294967295"), 0).is_err(), "exhausted, not wrapped");
        assert!(next_epoch(Some("x"), 0).is_err());
    }
}
