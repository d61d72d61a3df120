//! The etcd control plane with real etcd and real `ringlog serve`
//! processes on loopback: node ids, election, fencing, forgetting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringlog::protocol::{Acks, ErrorCode, Request, Response, TopicSettings};

use crate::admin::{http, json};
use crate::etcd::EtcdProcess;
use crate::fixtures::create_topic;
use crate::node::{produce_request, Node};

/// Lease TTL the tests run with (etcd's minimum is about 1.5 s).
const LEASE_TTL: Duration = Duration::from_secs(2);

/// A data directory and log file for one node of a test cluster.
pub struct Member {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Node log (stderr).
    pub log: PathBuf,
    /// Client, admin and replication addresses, kept across restarts.
    addresses: [String; 3],
    /// Kafka listener address, when the cluster gives its nodes one
    /// (`Cluster::kafka`); `None` starts the node without one.
    pub kafka: Option<String>,
}

impl Member {
    /// The replication address the member listens on.
    pub fn replication_address(&self) -> &str {
        &self.addresses[2]
    }
}

/// One etcd and the nodes a test starts against it.
pub struct Cluster {
    /// The etcd process.
    pub etcd: EtcdProcess,
    dir: tempfile::TempDir,
    /// Admin token the nodes require, if any.
    pub token: Option<String>,
    /// Extra settings for every node.
    pub environment: Vec<(String, String)>,
    /// Whether new members get a Kafka listener on a free port.
    pub kafka: bool,
    /// Extra command-line flags for every node (`--config FILE`).
    pub flags: Vec<String>,
}

impl Cluster {
    /// A fresh etcd, no nodes yet.
    pub fn new() -> Cluster {
        Cluster {
            etcd: EtcdProcess::start(),
            dir: tempfile::tempdir().unwrap(),
            token: None,
            environment: Vec::new(),
            kafka: false,
            flags: Vec::new(),
        }
    }

    /// A node's directory and log (not started).
    pub fn member(&self, name: &str) -> Member {
        let data_dir = self.dir.path().join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        let addresses = [0; 3].map(|_| crate::node::free_address());
        let kafka = self.kafka.then(crate::node::free_address);
        Member { data_dir, log: self.dir.path().join(format!("{name}.log")), addresses, kafka }
    }

    /// Start a node on fresh ports.
    pub fn start(&self, member: &Member) -> Node {
        let ttl = LEASE_TTL.as_secs().to_string();
        let mut environment = vec![
            ("RUST_LOG", "warn,ringlog::cluster=info"),
            ("RINGLOG_CLUSTER_LEASE_TTL_S", ttl.as_str()),
            ("RINGLOG_CLUSTER_ELECTION_POLL_INTERVAL_MS", "100"),
            ("RINGLOG_CLUSTER_ETCD_REQUEST_TIMEOUT_MS", "1000"),
        ];
        if let Some(token) = &self.token {
            environment.push(("RINGLOG_ADMIN_TOKEN", token.as_str()));
        }
        environment.extend(self.environment.iter().map(|(key, value)| (key.as_str(), value.as_str())));
        let [client, admin, replication] = &member.addresses;
        let mut flags = vec!["--etcd", self.etcd.endpoint.as_str(), "--replication-listen", replication.as_str()];
        if let Some(kafka) = &member.kafka {
            flags.extend(["--kafka-listen", kafka.as_str()]);
        }
        flags.extend(self.flags.iter().map(String::as_str));
        Node::spawn(client, admin, &member.data_dir, 2, &flags, &environment, Some(&member.log))
    }
}

pub fn health(node: &Node) -> serde_json::Value {
    json(&http(&node.admin, "GET", "/api/health", None, None).1)
}

/// Poll `condition` every 50 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

pub fn wait_for_role(node: &Node, role: &str) -> u64 {
    wait_for(Duration::from_secs(15), &format!("{} to be {role}", node.admin), || health(node)["role"] == role);
    wait_for(Duration::from_secs(15), "a node id", || health(node)["node_id"].is_u64());
    health(node)["node_id"].as_u64().unwrap()
}

pub fn produce(node: &Node, topic: &str, value: &str) -> Result<Response, ringlog::protocol::ErrorResponse> {
    node.client().call(produce_request(topic, 0, Acks::Leader, &[value.into()]))
}

pub fn ringlog(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringlog")).args(args).output().expect("run ringlog")
}

pub fn log_of(member: &Member) -> String {
    std::fs::read_to_string(&member.log).unwrap_or_default()
}

fn data_dir_node_id(data_dir: &Path) -> u64 {
    std::fs::read_to_string(data_dir.join("node_id")).unwrap().trim().parse().unwrap()
}

#[test]
fn three_nodes_get_ids_1_2_3_the_first_leads_and_followers_redirect_producers() {
    let cluster = Cluster::new();
    let members: Vec<Member> = ["a", "b", "c"].iter().map(|name| cluster.member(name)).collect();
    let a = cluster.start(&members[0]);
    assert_eq!(wait_for_role(&a, "leader"), 1);
    let b = cluster.start(&members[1]);
    let c = cluster.start(&members[2]);
    assert_eq!(wait_for_role(&b, "follower"), 2);
    assert_eq!(wait_for_role(&c, "follower"), 3);
    assert_eq!(data_dir_node_id(&members[2].data_dir), 3);
    assert_eq!(cluster.etcd.get("ringlog/replica/1/insync").unwrap().as_deref(), Some("1"));
    assert_eq!(cluster.etcd.get("ringlog/leader").unwrap().as_deref(), Some("1"));
    // Replication brings the followers into the in-sync set.
    wait_for(Duration::from_secs(15), "followers in sync", || {
        cluster.etcd.get("ringlog/replica/2/insync").unwrap().as_deref() == Some("1")
            && cluster.etcd.get("ringlog/replica/3/insync").unwrap().as_deref() == Some("1")
    });
    let registration: serde_json::Value =
        serde_json::from_str(&cluster.etcd.get("ringlog/nodes/2").unwrap().unwrap()).unwrap();
    assert_eq!(registration["client"], b.address.as_str());

    let (status, body) = http(&c.admin, "GET", "/api/nodes", None, None);
    assert_eq!(status, 200);
    let nodes = json(&body);
    let ids: Vec<u64> = nodes.as_array().unwrap().iter().map(|node| node["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3], "leader first: {body}");
    assert_eq!(nodes[0]["role"], "leader");
    assert_eq!(nodes[0]["address"], a.address.as_str());
    assert!(nodes.as_array().unwrap().iter().all(|node| node["in_sync"] == true), "{body}");
    assert!(nodes.as_array().unwrap().iter().all(|node| node["connected"] == true), "{body}");
    let cli = ringlog(&["nodes", "--json", "--admin", &b.admin]);
    assert!(cli.status.success());
    assert_eq!(json(&String::from_utf8_lossy(&cli.stdout)), nodes, "nodes --json prints GET /api/nodes");

    create_topic(&a, "orders", 2);
    let refused = produce(&b, "orders", "x").unwrap_err();
    assert_eq!(refused.code, ErrorCode::NotLeader);
    assert_eq!(refused.leader.as_deref(), Some(a.address.as_str()), "not_leader names the leader");
    let refused = b.client().call(Request::CreateTopic {
        name: "other".into(),
        settings: TopicSettings { partitions: 1, retention_bytes: 0, retention_ms: 0, segment_bytes: 0 },
    });
    assert_eq!(refused.unwrap_err().code, ErrorCode::NotLeader);

    // The Rust client follows not_leader from the follower to the leader.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut client = ringlog::net::client::Client::new(vec![b.address.clone()], Duration::from_secs(10));
    let request = produce_request("orders", 1, Acks::Leader, &["y".into()]);
    match runtime.block_on(client.call(&request)).expect("produce through a follower") {
        Response::Produce { base_offset, .. } => assert_eq!(base_offset, 0),
        other => panic!("unexpected {other:?}"),
    }
    // And so does the CLI producer, listing the follower first.
    let servers = format!("{},{}", b.address, a.address);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["produce", "orders", "--partition", "0", "--json", "--server", &servers])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"one\ntwo\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let ack = json(String::from_utf8_lossy(&output.stdout).lines().next().expect("an ack line"));
    assert_eq!((ack["partition"].as_u64(), ack["count"].as_u64()), (Some(0), Some(2)));
}

#[test]
fn concurrent_first_starts_get_distinct_ids_and_skip_a_hand_made_key() {
    let cluster = Cluster::new();
    cluster.etcd.put("ringlog/replica/2/insync", "0");
    let members: Vec<Member> = ["a", "b", "c"].iter().map(|name| cluster.member(name)).collect();
    let nodes: Vec<Node> = std::thread::scope(|scope| {
        let handles: Vec<_> = members.iter().map(|member| scope.spawn(|| cluster.start(member))).collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let mut ids: Vec<u64> = nodes
        .iter()
        .map(|node| {
            wait_for(Duration::from_secs(15), "a node id", || health(node)["node_id"].is_u64());
            health(node)["node_id"].as_u64().unwrap()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 3, 4], "distinct, sequential, skipping the hand-made 2");
    wait_for(Duration::from_secs(10), "exactly one leader", || {
        nodes.iter().filter(|node| health(node)["role"] == "leader").count() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(nodes.iter().filter(|node| health(node)["role"] == "leader").count(), 1, "still exactly one");
}

#[test]
fn only_in_sync_followers_take_over_and_an_out_of_sync_one_leaves_the_cluster_leaderless() {
    let cluster = Cluster::new();
    let members: Vec<Member> = ["a", "b", "c"].iter().map(|name| cluster.member(name)).collect();
    let a = cluster.start(&members[0]);
    wait_for_role(&a, "leader");
    let b = cluster.start(&members[1]);
    // c cannot authenticate to the leader (wrong cluster secret), so it
    // never replicates and stays out of sync.
    let mut outsider = Cluster { environment: vec![("RINGLOG_CLUSTER_SECRET".into(), "wrong".into())], ..cluster };
    let c = outsider.start(&members[2]);
    wait_for_role(&b, "follower");
    wait_for_role(&c, "follower");
    let first_epoch = health(&a)["leader_epoch"].as_u64().unwrap();
    wait_for(Duration::from_secs(15), "b in sync through replication", || {
        outsider.etcd.get("ringlog/replica/2/insync").unwrap().as_deref() == Some("1")
    });
    assert_eq!(outsider.etcd.get("ringlog/replica/3/insync").unwrap().as_deref(), Some("0"));
    // c's first handshake may come after b is in sync on a loaded machine.
    wait_for(Duration::from_secs(10), "the leader to refuse c's handshake", || {
        log_of(&members[0]).contains("bad proof")
    });

    a.kill();
    let took = wait_for(LEASE_TTL * 4, "b to take over", || health(&b)["role"] == "leader");
    eprintln!("failover: b leads {took:?} after the leader's SIGKILL (TTL {LEASE_TTL:?})");
    assert!(took < LEASE_TTL * 2, "b led {took:?} after the kill; limit is 2 x TTL");
    assert!(health(&b)["leader_epoch"].as_u64().unwrap() > first_epoch, "a new election bumps the epoch");
    create_topic(&b, "t", 2);
    assert!(produce(&b, "t", "after failover").is_ok());
    wait_for(Duration::from_secs(5), "c to learn the new leader", || health(&c)["leader_id"] == 2);

    b.kill();
    std::thread::sleep(LEASE_TTL * 3);
    let view = health(&c);
    assert_eq!(view["role"], "follower", "c is out of sync and must not campaign: {view}");
    assert!(view["leader_id"].is_null(), "{view}");
    assert!(view["warning"].as_str().unwrap().contains("no leader"), "{view}");
    let table = ringlog(&["nodes", "--admin", &c.admin]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("no leader"), "{table:?}");
    assert_eq!(produce(&c, "t", "nobody leads").unwrap_err().code, ErrorCode::NotLeader);

    // An in-sync replica coming back ends the leaderless period.
    outsider.environment.clear();
    let b = outsider.start(&members[1]);
    wait_for_role(&b, "leader");
    assert_eq!(health(&b)["node_id"], 2);
}

#[test]
fn losing_etcd_fences_the_leader_within_the_lease_ttl_and_the_cluster_recovers() {
    let mut cluster = Cluster::new();
    let ([member_a, _], [a, b]) = cluster.start_in_sync();
    create_topic(&a, "t", 2);
    assert!(produce(&a, "t", "before").is_ok());

    cluster.etcd.kill();
    let stopped = Instant::now();
    let mut acknowledged_after = Duration::ZERO;
    loop {
        match produce(&a, "t", "during") {
            Ok(_) => acknowledged_after = stopped.elapsed(),
            Err(refused) => {
                assert_eq!(refused.code, ErrorCode::NotLeader, "{refused:?}");
                break;
            }
        }
        assert!(stopped.elapsed() < LEASE_TTL * 3, "the leader kept acknowledging without etcd");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "fencing: last ack {acknowledged_after:?}, first refusal {:?} after etcd stopped (TTL {LEASE_TTL:?})",
        stopped.elapsed()
    );
    assert!(acknowledged_after < LEASE_TTL, "last ack {acknowledged_after:?} after etcd stopped");
    let (status, body) = http(&a.admin, "GET", "/api/health", None, None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(json(&body)["status"], "fenced", "{body}");
    std::thread::sleep(LEASE_TTL);
    assert!(produce(&a, "t", "still fenced").is_err(), "no acks while etcd is gone");
    assert!(produce(&b, "t", "follower").is_err());

    cluster.etcd.restart();
    wait_for(Duration::from_secs(20), "a leader after etcd returns", || {
        health(&a)["role"] == "leader" || health(&b)["role"] == "leader"
    });
    // Either node may win the election once etcd is back: the cluster has
    // recovered when its leader, whichever it is, acknowledges again.
    wait_for(Duration::from_secs(10), "acks again", || {
        produce(&a, "t", "after").is_ok() || produce(&b, "t", "after").is_ok()
    });
    // When b won, a learns it at its next election poll: until then it
    // still reports itself fenced (seen once under a loaded full run).
    wait_for(Duration::from_secs(5), "node a healthy again", || {
        http(&a.admin, "GET", "/api/health", None, None).0 == 200
    });
    assert!(log_of(&member_a).contains("stepped down"), "the leader logs that it stepped down");
}

#[test]
fn a_hanging_etcd_fences_the_leader_and_a_duplicate_node_id_is_refused() {
    let cluster = Cluster::new();
    let (member_a, member_b) = (cluster.member("a"), cluster.member("b"));
    let a = cluster.start(&member_a);
    wait_for_role(&a, "leader");
    create_topic(&a, "t", 2);
    // A copy of a's data directory (same node_id) must not join while a lives.
    std::fs::copy(member_a.data_dir.join("node_id"), member_b.data_dir.join("node_id")).unwrap();
    let copy = cluster.start(&member_b);
    wait_for(Duration::from_secs(10), "the duplicate to say why it is out", || {
        log_of(&member_b).contains("already registered")
    });
    let (status, body) = http(&copy.admin, "GET", "/api/health", None, None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(health(&a)["role"], "leader", "the original keeps leading");
    drop(copy);

    // etcd stops answering (SIGSTOP: requests hang, as with a lost quorum).
    cluster.etcd.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    wait_for(LEASE_TTL * 2, "the leader to stop acknowledging", || produce(&a, "t", "x").is_err());
    assert!(
        stopped.elapsed() < LEASE_TTL + Duration::from_millis(500),
        "fenced {:?} after etcd hung",
        stopped.elapsed()
    );
    wait_for(Duration::from_secs(10), "health to say so", || http(&a.admin, "GET", "/api/health", None, None).0 == 503);
    cluster.etcd.signal(libc::SIGCONT);
    wait_for(Duration::from_secs(20), "acks again once etcd answers", || produce(&a, "t", "y").is_ok());
    assert_eq!(health(&a)["role"], "leader");
}

#[test]
fn a_revoked_leader_lease_fences_at_once_and_the_node_rejoins() {
    let cluster = Cluster::new();
    let ([member], [a]) = cluster.start_in_sync();
    create_topic(&a, "t", 2);
    let epoch = health(&a)["leader_epoch"].as_u64().unwrap();
    cluster.etcd.revoke_lease_of("ringlog/leader");
    // The next renewal (every TTL/3) learns the lease is gone.
    wait_for(LEASE_TTL, "the leader to stop acknowledging", || produce(&a, "t", "x").is_err());
    wait_for(Duration::from_secs(15), "re-election under a new lease", || {
        let view = health(&a);
        view["role"] == "leader" && view["leader_epoch"].as_u64() > Some(epoch)
    });
    wait_for(Duration::from_secs(5), "acks again", || produce(&a, "t", "y").is_ok());
    assert!(log_of(&member).contains("lease expired or was revoked"));
}

#[test]
fn forget_node_refuses_leader_self_and_connected_and_a_forgotten_node_gets_a_new_id() {
    let mut cluster = Cluster::new();
    cluster.token = Some("s3cret".into());
    let (members, [a, b, c]) = cluster.start_in_sync();
    let token = Some("s3cret");

    assert_eq!(http(&b.admin, "DELETE", "/api/nodes/3", None, None).0, 401, "token required");
    assert_eq!(http(&b.admin, "DELETE", "/api/nodes/3", None, Some("wrong")).0, 401);
    let (status, body) = http(&b.admin, "DELETE", "/api/nodes/1", None, token);
    assert_eq!(status, 409, "leader: {body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("leader"));
    assert_eq!(http(&b.admin, "DELETE", "/api/nodes/2", None, token).0, 409, "self");
    assert_eq!(http(&b.admin, "DELETE", "/api/nodes/3", None, token).0, 409, "connected");
    assert_eq!(http(&b.admin, "DELETE", "/api/nodes/99", None, token).0, 404);
    assert_eq!(http(&b.admin, "DELETE", "/api/nodes/x", None, token).0, 404);

    c.kill();
    // Its replication connection is gone at once; its registration lives
    // until its lease expires, and until then forgetting it is refused.
    wait_for(Duration::from_secs(5), "node 3 disconnected", || {
        http(&b.admin, "GET", "/api/nodes", None, None).1.matches("\"connected\":false").count() == 1
    });
    wait_for(LEASE_TTL * 4, "node 3's lease to expire", || cluster.etcd.get("ringlog/nodes/3").unwrap().is_none());
    let forgotten = ringlog(&["forget-node", "3", "--admin", &a.admin, "--token", "s3cret"]);
    assert!(forgotten.status.success(), "{forgotten:?}");
    assert_eq!(String::from_utf8_lossy(&forgotten.stdout).trim(), "forgot node 3");
    assert_eq!(cluster.etcd.get("ringlog/replica/3/insync").unwrap(), None);
    let nodes = json(&http(&a.admin, "GET", "/api/nodes", None, None).1);
    assert_eq!(nodes.as_array().unwrap().len(), 2);
    let again = ringlog(&["forget-node", "3", "--admin", &a.admin, "--token", "s3cret"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).starts_with("error: "), "{again:?}");

    let c = cluster.start(&members[2]);
    assert_eq!(wait_for_role(&c, "follower"), 4, "a forgotten node gets a new id");
    assert_eq!(data_dir_node_id(&members[2].data_dir), 4);
    let log = log_of(&members[2]);
    assert!(log.contains("old id 3 was forgotten"), "the node says so in its log: {log}");
}

#[test]
fn a_leader_elected_after_etcd_was_wiped_writes_under_an_epoch_above_the_ones_on_its_disk() {
    let mut cluster = Cluster::new();
    // Move etcd's revision well past where a fresh etcd starts.
    for round in 0..200 {
        cluster.etcd.put("filler", &round.to_string());
    }
    let ([member], [a]) = cluster.start_in_sync();
    create_topic(&a, "t", 2);
    assert!(produce(&a, "t", "before").is_ok());
    let before = health(&a)["leader_epoch"].as_u64().unwrap();
    a.kill();
    // etcd loses everything: a fresh one, whose revisions start over.
    cluster.etcd = EtcdProcess::start();
    let a = cluster.start(&member);
    wait_for_role(&a, "leader");
    let after = health(&a)["leader_epoch"].as_u64().unwrap();
    assert!(after > before, "epoch {after} after the wipe, {before} on disk");
    let outcome = produce(&a, "t", "after");
    assert!(outcome.is_ok(), "the new leader can write: {outcome:?}");
}

#[test]
fn a_node_whose_id_is_forgotten_before_it_registers_is_refused_registration() {
    use ringlog::cluster::{etcd::Etcd, keys::Keys, membership::ControlPlane, node_id::assign_node_id};
    let etcd = EtcdProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let outcome = runtime.block_on(async {
        let client = Etcd::connect(std::slice::from_ref(&etcd.endpoint), Duration::from_secs(2)).await.unwrap();
        let keys = Keys::new("ringlog");
        let id = assign_node_id(&client, &keys).await.unwrap();
        // forget-node lands after this node settled its id, before it registers.
        client.client().delete(keys.insync(id), None).await.unwrap();
        let lease = client.grant_lease(5).await.unwrap();
        let addresses = ringlog::cluster::keys::Registration {
            id,
            client: "127.0.0.1:1".into(),
            replication: "127.0.0.1:2".into(),
            admin: "127.0.0.1:3".into(),
            kafka: None,
        };
        let plane = ControlPlane::new(
            ringlog::config::ClusterConfig::default(),
            dir.path().to_path_buf(),
            addresses,
            ringlog::state::cluster::ClusterState::clustered(),
            ringlog::state::progress::ReplicationProgress::new(1),
        );
        plane.register(&client, id, lease).await.map_err(|error| error.to_string())
    });
    let error = outcome.expect_err("registered under a forgotten id");
    assert!(error.contains("forgotten"), "{error}");
    assert_eq!(etcd.get("ringlog/nodes/1").unwrap(), None, "no registration without an insync key");
}

#[test]
fn the_leader_and_its_epoch_are_read_at_one_etcd_revision() {
    use ringlog::cluster::election::{observe, Leadership};
    use ringlog::cluster::{etcd::Etcd, keys::Keys};
    let etcd = EtcdProcess::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = Etcd::connect(std::slice::from_ref(&etcd.endpoint), Duration::from_secs(2)).await.unwrap();
        let keys = Keys::new("ringlog");
        let mine = client.grant_lease(5).await.unwrap();
        let theirs = client.grant_lease(5).await.unwrap();
        assert_eq!(observe(&client, &keys, mine).await.unwrap(), Leadership::Vacant);
        let options = etcd_client::PutOptions::new().with_lease(theirs);
        client.client().put(keys.leader(), "7", Some(options)).await.unwrap();
        client.client().put(keys.leader_epoch(), "12", None).await.unwrap();
        assert_eq!(observe(&client, &keys, mine).await.unwrap(), Leadership::Other { leader: 7, epoch: Some(12) });
        let options = etcd_client::PutOptions::new().with_lease(mine);
        client.client().put(keys.leader(), "1", Some(options)).await.unwrap();
        let observed = observe(&client, &keys, mine).await.unwrap();
        assert!(matches!(observed, Leadership::Mine { epoch: 12, .. }), "{observed:?}");
        client.client().put(keys.leader_epoch(), "twelve", None).await.unwrap();
        let error = observe(&client, &keys, mine).await.unwrap_err().to_string();
        assert!(error.contains("not an epoch"), "{error}");
    });
}
