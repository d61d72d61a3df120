//! Shared fixtures for the process-level tests, so a test states what it
//! starts instead of repeating how:
//!
//! - [`StandaloneNode`]: a temporary data directory and a `ringlog serve`
//!   on it, optionally with a topic ("tempdir + node + topic");
//!   [`create_topic`] and [`create_topic_with`] for any node.
//! - [`Cluster::with_replication`] and [`Cluster::start_in_sync`]: a real
//!   etcd and N nodes, the first leading, every follower connected and in
//!   the in-sync set ("etcd + N nodes").
//!
//! Tests that restart a node on the same directory, or start nodes one at a
//! time to watch what happens in between, keep building from `Node` and
//! `Cluster::member` directly.

use std::ops::Deref;
use std::time::Duration;

use ringlog::protocol::{Request, Response, TopicSettings};

use crate::admin::{http, json};
use crate::cluster::{wait_for, wait_for_role, Cluster, Member};
use crate::node::{Client, Node};

/// A `ringlog serve` process on its own temporary data directory, which
/// lives as long as the node (the node is stopped before it is removed).
pub struct StandaloneNode {
    // Field order is drop order: the process goes before its directory.
    node: Node,
    _dir: tempfile::TempDir,
}

impl StandaloneNode {
    /// A node with `shards` shards on a fresh directory.
    pub fn start(shards: usize) -> StandaloneNode {
        StandaloneNode::start_with(shards, &[])
    }

    /// A node with extra environment variables (settings, fault injection).
    pub fn start_with(shards: usize, environment: &[(&str, &str)]) -> StandaloneNode {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start_with(dir.path(), shards, environment);
        StandaloneNode { node, _dir: dir }
    }

    /// A node with one topic of `partitions` partitions (default settings).
    pub fn with_topic(shards: usize, topic: &str, partitions: u32) -> StandaloneNode {
        let standalone = StandaloneNode::start(shards);
        create_topic(&standalone, topic, partitions);
        standalone
    }

    /// SIGTERM and wait; returns the exit code. The directory goes with it.
    pub fn terminate(self) -> Option<i32> {
        self.node.terminate()
    }
}

impl Deref for StandaloneNode {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

/// Create `topic` with `partitions` partitions and default settings.
pub fn create_topic(node: &Node, topic: &str, partitions: u32) {
    create_topic_with(node, topic, TopicSettings { partitions, ..TopicSettings::default() });
}

/// Create `topic` with these settings (retention, segment size).
pub fn create_topic_with(node: &Node, topic: &str, settings: TopicSettings) {
    node.client().call(Request::CreateTopic { name: topic.into(), settings }).expect("create topic");
}

/// Member names in start order: the first one leads.
const MEMBER_NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

impl Cluster {
    /// A fresh etcd whose nodes run with these replication settings.
    pub fn with_replication(lag_max_ms: u64, min_insync: usize) -> Cluster {
        let mut cluster = Cluster::new();
        cluster.environment = vec![
            ("RINGLOG_CLUSTER_REPLICA_LAG_MAX_MS".into(), lag_max_ms.to_string()),
            ("RINGLOG_CLUSTER_MIN_INSYNC_REPLICAS".into(), min_insync.to_string()),
        ];
        cluster
    }

    /// Members `a`, `b`, ... and their nodes: the first started alone and
    /// leading as node 1, each follower started after the previous one took
    /// its id (so node `i` has id `i + 1`), and all of them connected to the
    /// leader and in its in-sync set before this returns.
    pub fn start_in_sync<const N: usize>(&self) -> ([Member; N], [Node; N]) {
        assert!(N >= 1 && N <= MEMBER_NAMES.len(), "1 to {} nodes", MEMBER_NAMES.len());
        let members: [Member; N] = std::array::from_fn(|index| self.member(MEMBER_NAMES[index]));
        let nodes: [Node; N] = std::array::from_fn(|index| {
            let node = self.start(&members[index]);
            let role = if index == 0 { "leader" } else { "follower" };
            assert_eq!(wait_for_role(&node, role), index as u64 + 1, "ids follow the start order");
            node
        });
        wait_for(Duration::from_secs(30), &format!("{N} nodes connected and in sync"), || {
            let view = nodes_view(&nodes[0]);
            view.len() == N && view.iter().all(|node| node["in_sync"] == true && node["connected"] == true)
        });
        (members, nodes)
    }

    /// A replication connection to the leader (node 1), authenticated with
    /// the cluster secret as node `node_id`.
    pub fn replica_client(&self, node_id: u64) -> Client {
        let registration = json(&self.etcd.get("ringlog/nodes/1").unwrap().expect("node 1 registered"));
        let secret = self.etcd.get("ringlog/secret").unwrap().expect("a cluster secret");
        let mut replica = Client::connect(registration["replication"].as_str().unwrap());
        let Ok(Response::ReplicaChallenge { nonce }) = replica.call(Request::ReplicaHello { node_id }) else {
            panic!("no challenge")
        };
        let proof = ringlog::replication::auth::proof(secret.as_bytes(), &nonce, node_id);
        assert!(replica.call(Request::ReplicaAuth { proof }).is_ok());
        replica
    }
}

/// The leader's view of the cluster (GET /api/nodes).
pub fn nodes_view(node: &Node) -> Vec<serde_json::Value> {
    json(&http(&node.admin, "GET", "/api/nodes", None, None).1).as_array().cloned().unwrap_or_default()
}

/// Ids of the nodes `node` counts as in sync.
pub fn in_sync_ids(node: &Node) -> Vec<u64> {
    nodes_view(node).iter().filter(|n| n["in_sync"] == true).filter_map(|n| n["id"].as_u64()).collect()
}

/// Wait until `leader` counts `count` replicas in sync.
pub fn wait_all_in_sync(leader: &Node, count: usize) {
    wait_for(Duration::from_secs(20), &format!("{count} replicas in sync"), || in_sync_ids(leader).len() == count);
}

/// The value of the counter or gauge `name` on `node`'s `/metrics`.
pub fn metric(node: &Node, name: &str) -> u64 {
    let text = crate::admin::http(&node.admin, "GET", "/metrics", None, None).1;
    let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
    line[name.len()..].trim().parse().unwrap()
}

/// Lock `stream`'s receive buffer at 64 KiB, so the kernel stops growing
/// it: a client that reads nothing then holds little in its socket,
/// whatever the host's `tcp_rmem`.
pub fn shrink_receive_buffer(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let bytes: libc::c_int = 64 << 10;
    let length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let value = (&bytes as *const libc::c_int).cast::<libc::c_void>();
    // SAFETY: a valid socket descriptor, and an option value of the size given.
    let result = unsafe { libc::setsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, value, length) };
    assert_eq!(result, 0, "setsockopt SO_RCVBUF");
}
