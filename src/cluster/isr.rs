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
use crate::runtime::clock::monotonic_ms;
use crate::state::cluster::{ClusterView, Role};

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
    let random = crate::runtime::random::random_bytes(32).map_err(|source| ClusterError::Io {
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

/// Followers joining the in-sync set in this leadership term: counted
/// since the time stamped here (taken after the set that counts them was
/// published), written `"1"` once caught up after it.
#[derive(Debug, Default)]
pub struct PendingJoins {
    term_since_ms: u64,
    since: HashMap<u64, u64>,
}

impl PendingJoins {
    /// Forget everything (a failed round: what was stamped may never have
    /// been published, or no longer is).
    pub fn clear(&mut self) {
        self.since.clear();
    }

    /// A new term starts with nothing pending: joins of an earlier term
    /// were counted by a set that no longer exists.
    fn begin_term(&mut self, term_since_ms: u64) {
        if self.term_since_ms != term_since_ms {
            self.term_since_ms = term_since_ms;
            self.since.clear();
        }
    }
}

/// What the leader knows of one other replica in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaState {
    /// Its id.
    pub id: u64,
    /// Whether its insync key is `"1"`.
    pub in_sync: bool,
    /// Whether a replication connection from it is open.
    pub connected: bool,
    /// When it was last caught up on every partition (`monotonic_ms`, 0: never).
    pub caught_up_ms: u64,
}

/// The time and settings one round decides with.
#[derive(Debug, Clone, Copy)]
pub struct Round<'a> {
    /// Now (`monotonic_ms`), taken after the replicas were read.
    pub now_ms: u64,
    /// `replica_lag_max_ms`.
    pub max_lag_ms: u64,
    /// How long a new leader waits for in-sync followers to reconnect.
    pub reconnect_grace_ms: u64,
    /// When this term began.
    pub leader_since_ms: u64,
    /// The counted set the shards use right now.
    pub published: &'a [u64],
}

/// An insync key to write, fenced on the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Write `"0"`, then stop counting it.
    Out(u64),
    /// Write `"1"` (it is counted already).
    In(u64),
}

/// The outcome of one round's decisions, before any etcd write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// The set to count (before `Out` writes remove their followers).
    pub counted: Vec<u64>,
    /// Followers counted from this round on: their join is stamped once
    /// the set is published.
    pub joined: Vec<u64>,
    /// Keys to write.
    pub writes: Vec<Write>,
}

/// Decide one round of ISR management from what etcd and the shards say.
pub fn decide(round: Round<'_>, replicas: &[ReplicaState], pending: &mut PendingJoins) -> Decision {
    pending.begin_term(round.leader_since_ms);
    let since_term_ms = round.now_ms.saturating_sub(round.leader_since_ms);
    let mut decision = Decision { counted: round.published.to_vec(), ..Decision::default() };
    for replica in replicas {
        let id = replica.id;
        // A follower in sync when this term began counts as caught up then.
        let effective_ms =
            if replica.in_sync { replica.caught_up_ms.max(round.leader_since_ms) } else { replica.caught_up_ms };
        let healthy =
            replica.connected && effective_ms > 0 && round.now_ms.saturating_sub(effective_ms) <= round.max_lag_ms;
        let in_grace = !replica.connected && since_term_ms <= round.reconnect_grace_ms;
        match (replica.in_sync, healthy || in_grace) {
            (true, true) => add(&mut decision.counted, id),
            (true, false) => decision.writes.push(Write::Out(id)),
            (false, _) if healthy => match pending.since.get(&id) {
                // Only a follower the published set counts, caught up after
                // that set was published, has every acknowledged record.
                Some(&since) if replica.caught_up_ms > since && round.published.contains(&id) => {
                    decision.writes.push(Write::In(id))
                }
                Some(_) if round.published.contains(&id) => {}
                _ => {
                    pending.since.remove(&id);
                    add(&mut decision.counted, id);
                    decision.joined.push(id);
                }
            },
            (false, _) => {
                pending.since.remove(&id);
                decision.counted.retain(|&other| other != id);
            }
        }
    }
    // Forgotten replicas (keys deleted) no longer count.
    decision.counted.retain(|id| replicas.iter().any(|replica| replica.id == *id));
    pending.since.retain(|id, _| replicas.iter().any(|replica| replica.id == *id));
    assert_names_members(&decision.counted, replicas);
    assert!(decision.joined.iter().all(|id| decision.counted.contains(id)), "a joining follower is counted");
    decision
}

/// The counted set names each follower once, and only followers that
/// have an insync key (members of the partition's replica set). The
/// leader is never among them: it always counts itself, implicitly.
fn assert_names_members(counted: &[u64], replicas: &[ReplicaState]) {
    for (index, id) in counted.iter().enumerate() {
        assert!(replicas.iter().any(|replica| replica.id == *id), "counted follower {id} is not a member");
        assert!(!counted[..index].contains(id), "follower {id} counted twice");
    }
}

fn add(set: &mut Vec<u64>, id: u64) {
    if !set.contains(&id) {
        set.push(id);
    }
}

impl ControlPlane {
    /// One round of ISR management (leader only). On an error the caller
    /// clears `pending`.
    pub async fn manage_in_sync_set(
        &self,
        etcd: &Etcd,
        own_id: u64,
        pending: &mut PendingJoins,
    ) -> Result<(), ClusterError> {
        let view = self.state.view();
        let max_lag_ms = self.config.replica_lag_max_ms;
        let replicas: Vec<ReplicaState> = all_insync(etcd, &self.keys)
            .await?
            .into_iter()
            .filter(|&(id, _)| id != own_id)
            .map(|(id, in_sync)| {
                let progress = self.progress.get(id);
                ReplicaState {
                    id,
                    in_sync,
                    connected: progress.as_ref().is_some_and(|progress| progress.is_connected()),
                    caught_up_ms: progress.as_ref().map_or(0, |progress| progress.caught_up_ms()),
                }
            })
            .collect();
        // A new leader gives the followers marked in sync time to reconnect
        // (they learn of it within an election poll), but not a whole
        // max_lag_ms: a follower that died with the old leader would hold
        // acks=all that long.
        let round = Round {
            now_ms: monotonic_ms(),
            max_lag_ms,
            reconnect_grace_ms: max_lag_ms.min(self.config.lease_ttl_s * 1000),
            leader_since_ms: view.leader_since_ms,
            published: &view.in_sync_followers,
        };
        let decision = decide(round, &replicas, pending);
        let mut counted = decision.counted;
        for write in decision.writes {
            match write {
                Write::Out(id) => {
                    if self.set_in_sync(id, false).await? {
                        counted.retain(|&other| other != id);
                        let connected = replicas.iter().any(|replica| replica.id == id && replica.connected);
                        let reason = if connected { "lagging" } else { "disconnected" };
                        tracing::warn!(target: "ringlog::replication", follower = id, reason, max_lag_ms,
                            "follower left the in-sync set");
                    }
                }
                Write::In(id) => {
                    if self.set_in_sync(id, true).await? {
                        pending.since.remove(&id);
                        tracing::info!(target: "ringlog::replication", follower = id, "follower joined the in-sync set");
                    }
                }
            }
        }
        counted.sort_unstable();
        assert!(!counted.contains(&own_id), "the leader counts itself implicitly, never as its own follower");
        assert_names_members(&counted, &replicas);
        self.publish_counted(&view, counted, &decision.joined, pending);
        Ok(())
    }

    /// Publish the counted set (unless the term changed meanwhile), then
    /// stamp the joins it counts: only from now on do acknowledgements wait
    /// for them.
    fn publish_counted(&self, round_view: &ClusterView, counted: Vec<u64>, joined: &[u64], pending: &mut PendingJoins) {
        let current = self.state.view();
        if current.role != Role::Leader || current.leader_since_ms != round_view.leader_since_ms {
            pending.clear();
            return;
        }
        assert!(counted.windows(2).all(|pair| pair[0] < pair[1]), "the published set is sorted, each follower once");
        if counted != current.in_sync_followers {
            let published = counted.clone();
            self.state.update(|view| view.in_sync_followers = published);
        }
        let stamped = monotonic_ms();
        for id in joined.iter().filter(|id| counted.contains(id)) {
            pending.since.insert(*id, stamped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: u64 = 1_000;

    fn round(now_ms: u64, published: &[u64]) -> Round<'_> {
        Round { now_ms, max_lag_ms: LAG, reconnect_grace_ms: LAG, leader_since_ms: 1, published }
    }

    fn follower(id: u64, in_sync: bool, caught_up_ms: u64) -> ReplicaState {
        ReplicaState { id, in_sync, connected: true, caught_up_ms }
    }

    #[test]
    fn a_joining_follower_is_counted_first_and_written_in_sync_only_after_catching_up_after_the_publish() {
        let mut pending = PendingJoins::default();
        let decision = decide(round(5_000, &[]), &[follower(2, false, 4_900)], &mut pending);
        assert_eq!((decision.counted.clone(), decision.joined.clone(), decision.writes), (vec![2], vec![2], vec![]));
        // The set counting it is published at 5 010.
        pending.since.insert(2, 5_010);
        let decision = decide(round(5_100, &[2]), &[follower(2, false, 5_005)], &mut pending);
        assert!(decision.writes.is_empty(), "caught up before it was counted: not yet");
        let decision = decide(round(5_200, &[2]), &[follower(2, false, 5_150)], &mut pending);
        assert_eq!(decision.writes, [Write::In(2)]);
    }

    #[test]
    fn a_join_that_was_never_published_is_never_written_in_sync() {
        let mut pending = PendingJoins::default();
        decide(round(5_000, &[]), &[follower(2, false, 4_900)], &mut pending);
        // The round failed before publishing: nothing was stamped. The
        // follower keeps catching up, but the shards never counted it.
        let decision = decide(round(9_000, &[]), &[follower(2, false, 8_900)], &mut pending);
        assert!(decision.writes.is_empty(), "{decision:?}");
        assert_eq!(decision.joined, [2], "joins again instead");
        // Stamped, but no longer in the published set (a failed round
        // left the shards' set without it): counted again, not written.
        pending.since.insert(2, 9_010);
        let decision = decide(round(9_500, &[]), &[follower(2, false, 9_400)], &mut pending);
        assert!(decision.writes.is_empty(), "{decision:?}");
    }

    #[test]
    fn a_new_term_forgets_joins_of_the_previous_one() {
        let mut pending = PendingJoins::default();
        decide(round(5_000, &[]), &[follower(2, false, 4_900)], &mut pending);
        pending.since.insert(2, 5_010);
        let next_term = Round { leader_since_ms: 6_000, ..round(6_500, &[2]) };
        let decision = decide(next_term, &[follower(2, false, 6_400)], &mut pending);
        assert!(decision.writes.is_empty(), "{decision:?}");
        assert_eq!(decision.joined, [2]);
    }

    #[test]
    fn every_decision_counts_only_members_and_each_once() {
        let mut pending = PendingJoins::default();
        let replicas = [follower(2, true, 9_990), follower(3, false, 9_990), follower(4, true, 9_990)];
        let decision = decide(round(10_000, &[2, 4, 9]), &replicas, &mut pending);
        let mut counted = decision.counted.clone();
        counted.sort_unstable();
        assert_eq!(counted, [2, 3, 4], "9 is no member (its key was deleted); 3 joins");
        assert_names_members(&decision.counted, &replicas);
    }

    #[test]
    #[should_panic(expected = "is not a member")]
    fn a_counted_set_naming_a_non_member_fires_the_assertion() {
        assert_names_members(&[2, 7], &[follower(2, true, 1)]);
    }

    #[test]
    #[should_panic(expected = "counted twice")]
    fn a_counted_set_naming_a_follower_twice_fires_the_assertion() {
        assert_names_members(&[2, 2], &[follower(2, true, 1)]);
    }

    #[test]
    fn lagging_or_disconnected_in_sync_followers_are_written_out_and_forgotten_ones_stop_counting() {
        let mut pending = PendingJoins::default();
        let replicas = [
            follower(2, true, 8_000),
            ReplicaState { connected: false, ..follower(3, true, 9_900) },
            follower(4, true, 9_950),
        ];
        let decision = decide(round(10_000, &[2, 3, 4, 5]), &replicas, &mut pending);
        assert_eq!(decision.writes, [Write::Out(2), Write::Out(3)]);
        assert_eq!(decision.counted, [2, 3, 4], "5 was forgotten; 2 and 3 go once written out");
    }
}
