//! Consumer-group commits in a cluster survive the leader's SIGKILL right
//! after their acknowledgement: a commit is acknowledged only once every
//! in-sync follower stored it (docs/REPLICATION.md, "Consumer-group
//! offsets"), so whichever follower takes over serves it.

use std::time::Duration;

use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use ringlog::protocol::{Acks, CommittedState, Request, Response};

use crate::cluster::{health, log_of, wait_for, Cluster, Member};
use crate::fixtures::{create_topic, in_sync_ids, nodes_view};
use crate::kafka::{require_python_module, spawn_script_lines, KafkaClient};
use crate::node::{last_lines, produce_request, Node};

const TOPIC: &str = "commit-failover";
const GROUP: &str = "g-commit-failover";

/// How a round commits.
#[derive(Debug, Clone, Copy)]
enum Committer {
    /// The native `CommitOffset`.
    Native,
    /// A Kafka `OffsetCommit` from the test's own Kafka client.
    Kafka,
    /// kafka-python's `KafkaConsumer.commit`.
    KafkaPython,
}

/// Commit `offset` on partition 0 at the leader; returns once the commit
/// is acknowledged (a kafka-python committer is returned still running,
/// so that its exit does not delay the kill).
fn commit(leader: &Node, member: &Member, offset: u64, committer: Committer) -> Option<std::process::Child> {
    let kafka = member.kafka.as_deref().expect("a Kafka listener");
    match committer {
        Committer::Native => {
            let request = Request::CommitOffset { group: GROUP.into(), topic: TOPIC.into(), partition: 0, offset };
            assert_eq!(leader.client().call(request), Ok(Response::CommitOffset), "native commit of {offset}");
            None
        }
        Committer::Kafka => {
            kafka_commit(kafka, offset);
            None
        }
        Committer::KafkaPython => {
            require_python_module("kafka", "kafka-python");
            let offset_text = offset.to_string();
            let arguments = [kafka, TOPIC, GROUP, "0", offset_text.as_str()];
            let (mut child, lines) = spawn_script_lines("kafka_python_commit.py", &arguments, Some);
            let line = lines.recv_timeout(Duration::from_secs(60));
            if line.as_deref() != Ok(format!("committed {offset}").as_str()) {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!("kafka-python did not commit {offset}: {line:?}, {}", String::from_utf8_lossy(&output.stderr));
            }
            Some(child)
        }
    }
}

/// A Kafka `OffsetCommit` of `offset` outside group management (generation -1).
fn kafka_commit(kafka: &str, offset: u64) {
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset as i64)])]);
    let response: OffsetCommitResponse = KafkaClient::connect(kafka).call(ApiKey::OffsetCommit, 8, &commit);
    assert_eq!(response.topics[0].partitions[0].error_code, 0, "Kafka commit of {offset}");
}

fn committed(node: &Node) -> Option<CommittedState> {
    let request = Request::FetchOffset { group: GROUP.into(), topic: TOPIC.into(), partition: 0 };
    match node.client().call(request) {
        Ok(Response::FetchOffset(state)) => Some(state),
        _ => None,
    }
}

/// Index of the node that leads now (the others follow it); on a timeout
/// the panic carries what each node says of itself and the end of its log.
fn wait_for_leader(nodes: &[Option<Node>; 3], members: &[Member]) -> usize {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let found = (0..3).find(|&index| nodes[index].as_ref().is_some_and(|node| health(node)["role"] == "leader"));
        if let Some(index) = found {
            return index;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let report: Vec<String> = (0..3)
        .map(|index| {
            let said = nodes[index].as_ref().map_or("killed".to_string(), |node| health(node).to_string());
            format!("node {index}: {said}\n{}", last_lines(&log_of(&members[index]), 40))
        })
        .collect();
    panic!("timed out after 60s waiting for a new leader\n{}", report.join("\n\n"))
}

#[test]
fn a_commit_acknowledged_just_before_the_leader_is_sigkilled_is_served_by_the_new_leader() {
    let mut cluster = Cluster::with_replication(2_000, 1);
    cluster.kafka = true;
    let (members, started) = cluster.start_in_sync::<3>();
    create_topic(&started[0], TOPIC, 1);
    let mut nodes: [Option<Node>; 3] = started.map(Some);
    let mut leader = 0;
    for round in 0..5u64 {
        let node = nodes[leader].as_ref().unwrap();
        let values: Vec<String> = (0..5).map(|i| format!("r{round}-{i}")).collect();
        let Ok(Response::Produce { next_offset, .. }) =
            node.client().call(produce_request(TOPIC, 0, Acks::All, &values))
        else {
            panic!("round {round}: produce failed")
        };
        // A commit of the log end, acknowledged, then the leader dies at once.
        let committer = [Committer::Native, Committer::Kafka, Committer::KafkaPython][round as usize % 3];
        let script = commit(node, &members[leader], next_offset, committer);
        nodes[leader].take().unwrap().kill();
        if let Some(mut script) = script {
            let _ = script.kill();
            let _ = script.wait();
        }
        let killed = leader;
        leader = wait_for_leader(&nodes, &members);
        let new_leader = nodes[leader].as_ref().unwrap();
        let mut seen = None;
        wait_for(Duration::from_secs(30), "the new leader to answer FetchOffset", || {
            seen = committed(new_leader);
            seen.is_some()
        });
        assert_eq!(
            seen,
            Some(CommittedState::Valid(next_offset)),
            "round {round} ({committer:?}): the new leader serves the commit acknowledged before the kill"
        );
        // The killed node rejoins as a follower; the next round starts with all three in sync.
        nodes[killed] = Some(cluster.start(&members[killed]));
        let new_leader = nodes[leader].as_ref().unwrap();
        wait_for(Duration::from_secs(60), "3 nodes connected and in sync", || {
            let view = nodes_view(new_leader);
            view.len() == 3 && view.iter().all(|node| node["in_sync"] == true && node["connected"] == true)
        });
    }
}

/// A native commit of `offset` at `leader` and how long its answer took.
fn timed_commit(leader: &Node, offset: u64) -> (Result<Response, ringlog::protocol::ErrorResponse>, Duration) {
    let started = std::time::Instant::now();
    let request = Request::CommitOffset { group: GROUP.into(), topic: TOPIC.into(), partition: 0, offset };
    (leader.client().call(request), started.elapsed())
}

#[test]
fn a_stopped_follower_holds_commits_only_until_it_leaves_the_in_sync_set_and_copies_them_when_it_returns() {
    let lag_max = Duration::from_millis(2_000);
    let cluster = Cluster::with_replication(lag_max.as_millis() as u64, 1);
    let (_members, [a, b, c]) = cluster.start_in_sync::<3>();
    create_topic(&a, TOPIC, 1);
    let values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    assert!(a.client().call(produce_request(TOPIC, 0, Acks::All, &values)).is_ok());
    // Followers hear of a commit on their next read and copy it at once:
    // well within the once-a-second mirror this replaced.
    let mut took: Vec<Duration> = Vec::new();
    let mut checked = 0;
    for offset in 1..=5 {
        let before = in_sync_ids(&a);
        let (answer, elapsed) = timed_commit(&a, offset);
        assert_eq!(answer, Ok(Response::CommitOffset));
        let after = in_sync_ids(&a);
        // A follower a loaded machine slowed past replica_lag_max_ms left
        // the set meanwhile, and the commit rightly did not wait for it.
        for (id, node) in [(2, &b), (3, &c)].into_iter().filter(|(id, _)| before.contains(id) && after.contains(id)) {
            let stored = committed(node);
            assert_eq!(stored, Some(CommittedState::Valid(offset)), "in-sync follower {id} stored it before the ack");
            checked += 1;
        }
        took.push(elapsed);
    }
    assert!(checked >= 5, "followers were in sync for only {checked} of 10 checks");
    took.sort();
    eprintln!("commit acknowledged by both followers in {took:?}");
    assert!(took[2] < Duration::from_millis(500), "median commit {:?}", took[2]);

    // SAFETY: signals to our own child process.
    unsafe { libc::kill(c.pid() as i32, libc::SIGSTOP) };
    // Each commit is answered within the acks=all bound: a success once c
    // has left the in-sync set, before that success or a retriable error.
    let mut offset = 6;
    let mut answers = Vec::new();
    loop {
        let (answer, took) = timed_commit(&a, offset);
        assert!(took < lag_max * 2 + Duration::from_secs(1), "commit of {offset} took {took:?}: {answer:?}");
        let ok = answer == Ok(Response::CommitOffset);
        answers.push((offset, answer.map_err(|error| error.code), took));
        if ok && !in_sync_ids(&a).contains(&3) {
            break;
        }
        assert!(offset < 20, "commits kept failing while c was stopped: {answers:?}");
        offset += 1;
    }
    assert_eq!(committed(&b), Some(CommittedState::Valid(offset)), "{answers:?}");
    eprintln!("commits while a follower is stopped: {answers:?}");

    // SAFETY: as above.
    unsafe { libc::kill(c.pid() as i32, libc::SIGCONT) };
    wait_for(Duration::from_secs(30), "c back in sync", || in_sync_ids(&a).contains(&3));
    wait_for(Duration::from_secs(10), "c to copy the commit it missed", || {
        committed(&c) == Some(CommittedState::Valid(offset))
    });
    let (answer, _) = timed_commit(&a, offset + 1);
    assert_eq!(answer, Ok(Response::CommitOffset));
    assert_eq!(committed(&c), Some(CommittedState::Valid(offset + 1)), "back in sync: it stores before the ack");
}
