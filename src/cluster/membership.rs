//! The membership loop on the control thread: reach etcd, settle the node
//! id, take a lease, register, then watch the election and campaign when
//! allowed — until shutdown. Every etcd failure is logged once per state
//! change, retried with bounded backoff, and reflected truthfully in the
//! published [`ClusterView`]; nothing here panics or blocks a data shard.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::election::{self, Leadership};
use super::error::ClusterError;
use super::etcd::{Etcd, EtcdAccess};
use super::keys::{Keys, Registration};
use super::lease::{keep_alive, LeaseHealth};
use super::node_id::{ensure_node_id, NodeIdOrigin};
use crate::config::ClusterConfig;
use crate::state::cluster::{ClusterState, ClusterView, LiveNode, Members, Role};

/// Everything the control plane needs, shared with the admin handlers.
pub struct ControlPlane {
    /// Cluster settings.
    pub config: ClusterConfig,
    /// Key layout.
    pub keys: Keys,
    /// Data directory (for `DATA/node_id`).
    pub data_dir: PathBuf,
    /// This node's addresses, as registered.
    pub addresses: Registration,
    /// The published view (read by the shards).
    pub state: Arc<ClusterState>,
    /// Followers' progress as the shards see it (while leading).
    pub progress: Arc<crate::state::progress::ReplicationProgress>,
    /// The current etcd connection, once made.
    etcd: ArcSwapOption<Etcd>,
    /// Create revision of the leader key while this node leads, else 0
    /// (what fenced insync writes compare against).
    election_revision: AtomicI64,
}

/// Bounded exponential backoff.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: Duration::from_millis(200), max: Duration::from_secs(5) }
    }

    fn step(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        current
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(200);
    }
}

impl ControlPlane {
    /// A control plane for this node (not started).
    pub fn new(
        config: ClusterConfig,
        data_dir: PathBuf,
        addresses: Registration,
        state: Arc<ClusterState>,
        progress: Arc<crate::state::progress::ReplicationProgress>,
    ) -> Arc<ControlPlane> {
        let keys = Keys::new(&config.prefix);
        Arc::new(ControlPlane {
            config,
            keys,
            data_dir,
            addresses,
            state,
            progress,
            etcd: ArcSwapOption::empty(),
            election_revision: AtomicI64::new(0),
        })
    }

    /// The etcd connection, if one has been made.
    pub fn etcd(&self) -> Option<Etcd> {
        self.etcd.load_full().map(|etcd| (*etcd).clone())
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.config.lease_ttl_s)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.etcd_request_timeout_ms)
    }

    /// Run until `stop` is set; then resign and revoke the lease.
    pub async fn run(self: Arc<Self>, stop: &'static AtomicBool) {
        let mut backoff = Backoff::new();
        let mut previous_lease = None;
        while !stop.load(Ordering::SeqCst) {
            let failure = match self.session(stop, &mut previous_lease, &mut backoff).await {
                Ok(()) => return,
                Err(failure) => failure,
            };
            self.step_down(&failure.to_string());
            let wait = backoff.step();
            tracing::warn!(target: "ringlog::cluster", error = %failure, retry_in_ms = wait.as_millis() as u64,
                "cluster membership interrupted; retrying");
            sleep_unless_stopped(wait, stop).await;
        }
    }

    /// Stop acknowledging writes and say why.
    fn step_down(&self, reason: &str) {
        self.state.revoke_write_deadline();
        self.election_revision.store(0, Ordering::SeqCst);
        let was_leader = self.state.view().role == Role::Leader;
        self.state.update(|view| {
            follow_no_leader(view);
            view.in_sync_followers.clear();
            view.members = Members::default();
            view.etcd_reachable = false;
            view.problem = Some(if was_leader {
                format!("fenced: stepped down from leader ({reason})")
            } else {
                format!("not in the cluster: {reason}")
            });
        });
        if was_leader {
            tracing::warn!(target: "ringlog::cluster", %reason, "stepped down: no longer acknowledging writes");
        }
    }

    /// One membership session: connect, id, lease, register, follow the
    /// election until the lease is lost (error) or shutdown (Ok).
    async fn session(
        &self,
        stop: &'static AtomicBool,
        previous_lease: &mut Option<i64>,
        backoff: &mut Backoff,
    ) -> Result<(), ClusterError> {
        let access = EtcdAccess::from_config(&self.config)?;
        let etcd = Etcd::connect_with(&self.config.etcd, &access, self.request_timeout()).await?;
        self.etcd.store(Some(Arc::new(etcd.clone())));
        if let Some(lease) = previous_lease.take() {
            // Keys of an earlier session (etcd restarts refresh leases) must
            // not outlive it: they would block registration and the election.
            if let Err(error) = etcd.revoke_lease(lease).await {
                tracing::debug!(target: "ringlog::cluster", lease, %error, "old lease not revoked (probably expired)");
            }
        }
        let id = self.settle_node_id(&etcd).await?;
        let secret = super::isr::ensure_secret(&etcd, &self.keys, self.config.secret.as_deref()).await?;
        self.state.set_secret(secret);
        let granted = Instant::now();
        let lease = etcd.grant_lease(self.config.lease_ttl_s as i64).await?;
        *previous_lease = Some(lease);
        let health = LeaseHealth::new(lease, granted);
        let renewals = tokio::spawn(keep_alive(etcd.clone(), Arc::clone(&health), self.ttl(), Arc::clone(&self.state)));
        let _renewals = AbortOnDrop(renewals);
        self.register(&etcd, id, lease).await?;
        backoff.reset();
        tracing::info!(target: "ringlog::cluster", id, lease, endpoints = etcd.endpoints(), "joined the cluster");
        self.state.update(|view| {
            view.etcd_reachable = true;
            view.problem = None;
        });
        let poll = Duration::from_millis(self.config.election_poll_interval_ms);
        let mut pending = super::isr::PendingJoins::default();
        while !stop.load(Ordering::SeqCst) {
            if health.is_lost() {
                return Err(ClusterError::LeaseLost { lease, lease_ttl_s: self.config.lease_ttl_s });
            }
            let iteration = async {
                if let Err(error) = self.follow_election(&etcd, id, &health).await {
                    self.note_unreachable(&error);
                } else if self.state.view().role == Role::Leader {
                    if let Err(error) = self.manage_in_sync_set(&etcd, id, &mut pending).await {
                        pending.clear();
                        self.note_unreachable(&error);
                    }
                }
                tokio::time::sleep(poll).await;
                false
            };
            // A stop ends the iteration where it waits, so a hung etcd call
            // (up to `etcd_request_timeout_ms`) does not hold the step-down.
            // Dropped half-way it leaves nothing to undo: the view is
            // published in one update at the end of `follow_election`, a
            // won election not yet published is revoked with the lease, and
            // the in-sync writes are fenced on the election.
            let stopped = async {
                stopped(stop).await;
                true
            };
            if futures_lite::future::or(iteration, stopped).await {
                break;
            }
        }
        self.leave(&etcd, lease).await;
        *previous_lease = None;
        Ok(())
    }

    async fn settle_node_id(&self, etcd: &Etcd) -> Result<u64, ClusterError> {
        let (id, origin) = ensure_node_id(etcd, &self.keys, &self.data_dir).await?;
        match origin {
            NodeIdOrigin::Kept => {}
            NodeIdOrigin::Assigned => tracing::info!(target: "ringlog::cluster", id, "assigned node id"),
            NodeIdOrigin::Reassigned(old) => {
                // A forgotten node starts over (SPEC §5): whatever its logs
                // hold was not counted by anyone since it was forgotten.
                // Raised before the id is published: nothing follows before.
                self.state.request_resync();
                tracing::warn!(target: "ringlog::cluster", id, old,
                    "this node's old id {old} was forgotten (no {} key); it now has the new id {id} and \
                     resynchronises every partition from the leader", self.keys.insync(old))
            }
        }
        self.state.update(|view| view.node_id = Some(id));
        Ok(id)
    }

    /// Create `PREFIX/nodes/<id>` under `lease`, only if no live process
    /// holds it (a duplicate id, or our own previous run before its lease
    /// expired) and the id is still known (its insync key exists).
    pub async fn register(&self, etcd: &Etcd, id: u64, lease: i64) -> Result<(), ClusterError> {
        use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
        let registration = Registration { id, ..self.addresses.clone() };
        let value = serde_json::to_vec(&registration).map_err(|source| ClusterError::Encode { id, source })?;
        let key = self.keys.node(id);
        // The id must still be known: forget-node may have deleted its
        // insync key since the id was settled, and registering anyway would
        // leave a live node no leader ever counts or brings in sync.
        let known = Compare::create_revision(self.keys.insync(id), CompareOp::NotEqual, 0);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0), known])
            .and_then([TxnOp::put(key.clone(), value, Some(PutOptions::new().with_lease(lease)))]);
        if etcd.txn("register", txn).await?.succeeded() {
            return Ok(());
        }
        if etcd.get(&self.keys.insync(id)).await?.is_none() {
            return Err(ClusterError::ForgottenWhileRegistering { id });
        }
        Err(ClusterError::AlreadyRegistered { id, key, lease_ttl_s: self.config.lease_ttl_s })
    }

    /// Read the election; campaign if vacant; publish what we learned.
    async fn follow_election(&self, etcd: &Etcd, id: u64, health: &LeaseHealth) -> Result<(), ClusterError> {
        let mut leadership = election::observe(etcd, &self.keys, health.lease).await?;
        if leadership == Leadership::Vacant {
            if let Some((epoch, revision)) =
                election::campaign(etcd, &self.keys, id, health.lease, self.state.local_max_epoch()).await?
            {
                tracing::info!(target: "ringlog::cluster", id, epoch, "elected leader");
                leadership = Leadership::Mine { epoch, revision };
            }
        }
        let revision = match leadership {
            Leadership::Mine { revision, .. } => revision,
            _ => 0,
        };
        self.election_revision.store(revision, Ordering::SeqCst);
        let (role, leader_id, epoch) = match leadership {
            Leadership::Mine { epoch, .. } => (Role::Leader, Some(id), epoch),
            Leadership::Other { leader, .. } => (Role::Follower, Some(leader), 0),
            Leadership::Vacant => (Role::Follower, None, 0),
        };
        let (leader_registration, members) = self.read_members(etcd, id, &leadership).await?;
        let previous = self.state.view();
        let starts_term = role == Role::Leader && (previous.role != Role::Leader || previous.leader_epoch != epoch);
        let in_sync_followers = match role {
            Role::Leader if starts_term => {
                let followers = super::isr::in_sync_keys(etcd, &self.keys, id).await?;
                tracing::info!(target: "ringlog::cluster", id, epoch, ?followers, "leading with these in-sync followers");
                followers
            }
            Role::Leader => previous.in_sync_followers.clone(),
            _ => Vec::new(),
        };
        if previous.role == Role::Leader && role != Role::Leader {
            self.state.revoke_write_deadline();
            tracing::warn!(target: "ringlog::cluster", id, ?leader_id, "lost the election key; now a follower");
        }
        if previous.leader_id != leader_id && leader_id.is_none() {
            tracing::warn!(target: "ringlog::cluster", "the cluster has no leader (no live in-sync replica)");
        }
        self.state.publish(ClusterView {
            role,
            node_id: Some(id),
            leader_id,
            leader_client_address: leader_registration.as_ref().map(|registration| registration.client.clone()),
            leader_replication_address: leader_registration.map(|registration| registration.replication),
            leader_epoch: if role == Role::Leader { epoch } else { previous.leader_epoch },
            in_sync_followers,
            leader_since_ms: if starts_term { crate::runtime::clock::monotonic_ms() } else { previous.leader_since_ms },
            etcd_reachable: true,
            problem: None,
            members,
        });
        Ok(())
    }

    /// The leader's registration and the membership Kafka Metadata lists:
    /// live nodes, known replicas and the leader's epoch, read from etcd.
    /// This node's own entry is what it registered (its own addresses).
    async fn read_members(
        &self,
        etcd: &Etcd,
        id: u64,
        leadership: &Leadership,
    ) -> Result<(Option<Registration>, Members), ClusterError> {
        let (in_sync, mut registrations) = super::nodes::read_registry(etcd, &self.keys).await?;
        if registrations.contains_key(&id) {
            registrations.insert(id, Registration { id, ..self.addresses.clone() });
        }
        let (leader_registration, leader_epoch) = match *leadership {
            Leadership::Mine { epoch, .. } => (Some(Registration { id, ..self.addresses.clone() }), Some(epoch)),
            Leadership::Other { leader, epoch } => (registrations.get(&leader).cloned(), epoch),
            Leadership::Vacant => (None, None),
        };
        let live = registrations
            .into_iter()
            .map(|(id, registration)| LiveNode { id, kafka_address: registration.kafka })
            .collect();
        let members = Members { live, replicas: in_sync.into_iter().collect(), leader_epoch };
        Ok((leader_registration, members))
    }

    /// A node's registration, if it is registered.
    pub async fn registration_of(&self, etcd: &Etcd, id: u64) -> Result<Option<Registration>, ClusterError> {
        let Some(kv) = etcd.get(&self.keys.node(id)).await? else { return Ok(None) };
        Ok(serde_json::from_slice::<Registration>(kv.value()).ok())
    }

    fn note_unreachable(&self, error: &ClusterError) {
        let first = self.state.view().etcd_reachable;
        if first {
            tracing::warn!(target: "ringlog::cluster", %error, "etcd request failed; the lease keeps this node \
                in the cluster until it expires");
        }
        self.state.update(|view| {
            view.etcd_reachable = false;
            view.problem = Some(format!("etcd unreachable: {error}"));
        });
    }

    /// Shutdown: stop acknowledging, resign if leading, revoke the lease
    /// (which removes the registration) so others need not wait for expiry.
    async fn leave(&self, etcd: &Etcd, lease: i64) {
        let was_leader = self.state.view().role == Role::Leader;
        if was_leader {
            // One update, before etcd is asked anything: waits for
            // followers end `not_leader` at once, and a node going away
            // names no leader (`not_leader` answers and Kafka's Metadata
            // would send clients back to it).
            self.state.update(follow_no_leader);
        }
        self.state.revoke_write_deadline();
        self.election_revision.store(0, Ordering::SeqCst);
        if was_leader {
            match election::resign(etcd, &self.keys, lease).await {
                Ok(()) => tracing::info!(target: "ringlog::cluster", "resigned leadership"),
                Err(error) => tracing::warn!(target: "ringlog::cluster", %error, "could not resign; the lease expires"),
            }
        }
        if let Err(error) = etcd.revoke_lease(lease).await {
            tracing::warn!(target: "ringlog::cluster", %error, "could not revoke the lease; it expires on its own");
        }
    }

    /// As leader, write a replica's insync key. The transaction is fenced
    /// on the election: it fails if this node no longer holds it.
    pub async fn set_in_sync(&self, id: u64, in_sync: bool) -> Result<bool, ClusterError> {
        let etcd = self.etcd().ok_or_else(|| ClusterError::NotConnected)?;
        let revision = self.election_revision.load(Ordering::SeqCst);
        if revision == 0 || self.state.write_epoch().is_err() {
            return Ok(false);
        }
        election::write_in_sync(&etcd, &self.keys, revision, id, in_sync).await
    }
}

/// Aborts a spawned task when dropped (the lease keeper of a session).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often a wait looks at the stop flag (set from another thread, which
/// wakes nothing here).
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// Returns once `stop` is set.
async fn stopped(stop: &'static AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(STOP_CHECK_INTERVAL).await;
    }
}

async fn sleep_unless_stopped(duration: Duration, stop: &'static AtomicBool) {
    futures_lite::future::or(tokio::time::sleep(duration), stopped(stop)).await;
}

/// A follower that knows no leader: what this node is once it steps down.
fn follow_no_leader(view: &mut ClusterView) {
    view.role = Role::Follower;
    view.leader_id = None;
    view.leader_client_address = None;
    view.leader_replication_address = None;
}
