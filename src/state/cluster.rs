//! What the control thread knows about the cluster, published for the data
//! shards: an immutable [`ClusterView`] swapped atomically on every change,
//! plus the leader's write deadline as an atomic, so fencing takes effect
//! on the shards the instant the deadline passes, whatever the control
//! thread is doing.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::runtime::clock::{monotonic_ms, monotonic_ms_at};

/// Leader epoch a standalone node writes under.
pub const STANDALONE_EPOCH: u32 = 1;

/// What this node is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No etcd: the node accepts writes on its own.
    Standalone,
    /// Holds the election; acknowledges writes while its lease is fresh.
    Leader,
    /// Does not hold the election (or has not joined yet).
    Follower,
}

impl Role {
    /// The name used in `/api/health` and `/api/nodes`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// A live node (registered under a live lease), as Kafka Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    /// Node id.
    pub id: u64,
    /// Its advertised Kafka address (`host:port`); `None` when its
    /// `kafka_listen` is empty.
    pub kafka_address: Option<String>,
}

/// The membership as last read from etcd, for Kafka Metadata: who is
/// alive, which replicas exist and which are in sync, under which epoch
/// the current leader writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Live nodes, by id.
    pub live: Vec<LiveNode>,
    /// Every known replica (its insync key), by id, and whether it is in sync.
    pub replicas: Vec<(u64, bool)>,
    /// The current leader's epoch, when there is a leader.
    pub leader_epoch: Option<u32>,
}

/// An immutable snapshot of the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// This node's role.
    pub role: Role,
    /// This node's id, once assigned.
    pub node_id: Option<u64>,
    /// The current leader's id, if there is one.
    pub leader_id: Option<u64>,
    /// The leader's client address (for `not_leader` answers).
    pub leader_client_address: Option<String>,
    /// The leader's replication address (where followers connect).
    pub leader_replication_address: Option<String>,
    /// The epoch this node writes under while it leads.
    pub leader_epoch: u32,
    /// While leading: the followers counted in the high watermark and for
    /// `acks=all` (the in-sync set minus this node).
    pub in_sync_followers: Vec<u64>,
    /// While leading: when this term began (`monotonic_ms`), the grace
    /// start for followers that have not fetched yet.
    pub leader_since_ms: u64,
    /// Whether the last etcd request succeeded.
    pub etcd_reachable: bool,
    /// Why the node is not serving as it should (fenced, etcd unreachable…).
    pub problem: Option<String>,
    /// Live nodes and replicas as last read from etcd (empty standalone
    /// and until the node has joined).
    pub members: Members,
}

impl ClusterView {
    /// The view of a standalone node.
    pub fn standalone() -> ClusterView {
        ClusterView {
            role: Role::Standalone,
            node_id: None,
            leader_id: None,
            leader_client_address: None,
            leader_replication_address: None,
            leader_epoch: STANDALONE_EPOCH,
            in_sync_followers: Vec::new(),
            leader_since_ms: 0,
            etcd_reachable: true,
            problem: None,
            members: Members::default(),
        }
    }

    /// The view of a cluster node before it has reached etcd.
    pub fn joining() -> ClusterView {
        ClusterView {
            role: Role::Follower,
            node_id: None,
            leader_id: None,
            leader_client_address: None,
            leader_replication_address: None,
            leader_epoch: 0,
            in_sync_followers: Vec::new(),
            leader_since_ms: 0,
            etcd_reachable: false,
            problem: Some("joining the cluster: etcd not reached yet".into()),
            members: Members::default(),
        }
    }
}

/// Why a write may not be acknowledged here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRefusal {
    /// Another node leads (its client address, when known).
    NotLeader(Option<String>),
    /// This node led, but its lease was not renewed in time.
    Fenced,
}

/// Shared between the control thread (writer) and the shards (readers).
#[derive(Debug)]
pub struct ClusterState {
    view: ArcSwap<ClusterView>,
    /// Milliseconds on [`monotonic_ms`](crate::runtime::clock::monotonic_ms) until which the leader may ack.
    write_deadline_ms: AtomicU64,
    clustered: AtomicBool,
    secret: ArcSwapOption<Vec<u8>>,
    /// Raised when this node's id was forgotten and it took a new one: its
    /// partitions must start over from the leader (SPEC §5).
    resync_generation: AtomicU64,
    /// The highest leader epoch found in this node's logs.
    local_max_epoch: AtomicU32,
}

impl ClusterState {
    /// State of a standalone node: always writable.
    pub fn standalone() -> Arc<ClusterState> {
        Arc::new(ClusterState {
            view: ArcSwap::from_pointee(ClusterView::standalone()),
            write_deadline_ms: AtomicU64::new(u64::MAX),
            clustered: AtomicBool::new(false),
            secret: ArcSwapOption::empty(),
            resync_generation: AtomicU64::new(0),
            local_max_epoch: AtomicU32::new(0),
        })
    }

    /// State of a cluster node that has not joined yet: not writable.
    pub fn clustered() -> Arc<ClusterState> {
        Arc::new(ClusterState {
            view: ArcSwap::from_pointee(ClusterView::joining()),
            write_deadline_ms: AtomicU64::new(0),
            clustered: AtomicBool::new(true),
            secret: ArcSwapOption::empty(),
            resync_generation: AtomicU64::new(0),
            local_max_epoch: AtomicU32::new(0),
        })
    }

    /// Whether the node runs with etcd.
    pub fn is_clustered(&self) -> bool {
        self.clustered.load(Ordering::Relaxed)
    }

    /// The current view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    /// Replace the view (control thread only).
    pub fn publish(&self, view: ClusterView) {
        self.view.store(Arc::new(view));
    }

    /// Change the view with `change` (control thread only).
    pub fn update(&self, change: impl FnOnce(&mut ClusterView)) {
        let mut view = (*self.view()).clone();
        change(&mut view);
        if view != *self.view() {
            self.publish(view);
        }
    }

    /// This node's old logs are not to be trusted any more (its id was
    /// forgotten): every partition resynchronises from the leader.
    pub fn request_resync(&self) {
        self.resync_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times a resynchronisation from scratch was requested.
    pub fn resync_generation(&self) -> u64 {
        self.resync_generation.load(Ordering::SeqCst)
    }

    /// A log on this node holds records of leader `epoch`: an election this
    /// node wins must take a higher one, whatever etcd remembers.
    pub fn note_local_epoch(&self, epoch: u32) {
        self.local_max_epoch.fetch_max(epoch, Ordering::SeqCst);
    }

    /// The highest leader epoch in this node's logs.
    pub fn local_max_epoch(&self) -> u32 {
        self.local_max_epoch.load(Ordering::SeqCst)
    }

    /// The cluster secret for replication handshakes, once known.
    pub fn secret(&self) -> Option<Arc<Vec<u8>>> {
        self.secret.load_full()
    }

    /// Set the cluster secret (control thread only).
    pub fn set_secret(&self, secret: Vec<u8>) {
        self.secret.store(Some(Arc::new(secret)));
    }

    /// Allow acknowledgements until `deadline` (a fresh lease renewal).
    pub fn extend_write_deadline(&self, deadline: Instant) {
        self.write_deadline_ms.store(monotonic_ms_at(deadline), Ordering::SeqCst);
    }

    /// Stop acknowledging writes now.
    pub fn revoke_write_deadline(&self) {
        if self.is_clustered() {
            self.write_deadline_ms.store(0, Ordering::SeqCst);
        }
    }

    /// How long the current deadline still runs (zero when passed).
    pub fn write_deadline_remaining(&self) -> Duration {
        let deadline = self.write_deadline_ms.load(Ordering::SeqCst);
        Duration::from_millis(deadline.saturating_sub(monotonic_ms()))
    }

    /// The epoch to append under, or why this node may not write. Checked
    /// before an append and again before its acknowledgement.
    pub fn write_epoch(&self) -> Result<u32, WriteRefusal> {
        let view = self.view.load();
        match view.role {
            Role::Standalone => Ok(view.leader_epoch),
            Role::Follower => Err(WriteRefusal::NotLeader(view.leader_client_address.clone())),
            Role::Leader if monotonic_ms() < self.write_deadline_ms.load(Ordering::SeqCst) => Ok(view.leader_epoch),
            Role::Leader => Err(WriteRefusal::Fenced),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_node_always_writes_under_the_standalone_epoch() {
        let state = ClusterState::standalone();
        assert_eq!(state.write_epoch(), Ok(STANDALONE_EPOCH));
        state.revoke_write_deadline();
        assert!(state.write_epoch().is_ok());
    }

    #[test]
    fn follower_refuses_with_the_leader_address() {
        let state = ClusterState::clustered();
        assert_eq!(state.write_epoch(), Err(WriteRefusal::NotLeader(None)));
        state.update(|view| view.leader_client_address = Some("127.0.0.1:1".into()));
        assert_eq!(state.write_epoch(), Err(WriteRefusal::NotLeader(Some("127.0.0.1:1".into()))));
    }

    #[test]
    fn leader_is_fenced_once_its_deadline_passes() {
        let state = ClusterState::clustered();
        state.update(|view| {
            view.role = Role::Leader;
            view.leader_epoch = 7;
        });
        assert_eq!(state.write_epoch(), Err(WriteRefusal::Fenced), "no lease renewal yet");
        state.extend_write_deadline(Instant::now() + Duration::from_secs(60));
        assert_eq!(state.write_epoch(), Ok(7));
        assert!(state.write_deadline_remaining() > Duration::from_secs(50));
        state.extend_write_deadline(Instant::now() - Duration::from_millis(1));
        assert_eq!(state.write_epoch(), Err(WriteRefusal::Fenced));
        state.extend_write_deadline(Instant::now() + Duration::from_secs(60));
        state.revoke_write_deadline();
        assert_eq!(state.write_epoch(), Err(WriteRefusal::Fenced));
    }
}
