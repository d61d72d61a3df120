//! Kafka consumer groups (SPEC §10, classic protocol) against clients no
//! one here wrote: a confluent-kafka (librdkafka) group of two members that
//! splits a topic, commits, and hands over when a member leaves; offsets
//! shared with `ringlog consume --group` both ways; and the protocol's
//! fencing (generations, unknown members, rebalances, session timeouts)
//! through requests encoded by the `kafka-protocol` crate.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringlog::protocol::{Acks, CommittedState, Request, Response};

use crate::kafka::{closed_by_node, create_topic, require_python_module, KafkaClient, KafkaNode};
use crate::node::{free_port, produce_request, Node};

/// A node with a Kafka listener and group settings from `environment`.
fn start_with(shards: usize, environment: &[(&str, &str)]) -> KafkaNode {
    let dir = tempfile::tempdir().unwrap();
    let kafka = format!("127.0.0.1:{}", free_port());
    let mut all = vec![("RINGLOG_KAFKA_LISTEN", kafka.as_str())];
    all.extend_from_slice(environment);
    let node = Node::start_with(dir.path(), shards, &all);
    KafkaNode::from_parts(node, kafka, dir)
}

fn produce_values(node: &Node, topic: &str, partition: u32, values: std::ops::Range<u32>) {
    let values: Vec<String> = values.map(|i| format!("p{partition}-{i}")).collect();
    let Ok(Response::Produce { .. }) = node.client().call(produce_request(topic, partition, Acks::All, &values)) else {
        panic!("native produce failed")
    };
}

fn committed_natively(node: &Node, group: &str, topic: &str, partition: u32) -> CommittedState {
    let request = Request::FetchOffset { group: group.into(), topic: topic.into(), partition };
    let Ok(Response::FetchOffset(state)) = node.client().call(request) else { panic!("native offset fetch failed") };
    state
}

fn ringlog_cli(node: &Node, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(args)
        .env("RINGLOG_SERVER", &node.address)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ringlog")
}

fn python_script(script: &str, arguments: &[&str]) -> String {
    require_python_module("confluent_kafka", "confluent-kafka");
    let output = Command::new("python3").arg(script).args(arguments).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn kafka_group_of_two_splits_partitions_commits_and_survivor_resumes_from_commits() {
    let node = start_with(2, &[]);
    create_topic(&node.node, "kafka-group", 4);
    for partition in 0..4 {
        produce_values(&node.node, "kafka-group", partition, 0..10);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/confluent_group_takeover.py");
    let stdout = python_script(script, &[&node.kafka, "kafka-group", "takeover"]);
    let lines: Vec<&str> = stdout.lines().collect();
    let split = lines[0].strip_prefix("split ").expect("split line");
    let owned: Vec<Vec<u32>> = split
        .split(' ')
        .map(|member| member.split_once('=').unwrap().1.split(',').map(|p| p.parse().unwrap()).collect())
        .collect();
    let mut all: Vec<u32> = owned.concat();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3], "two members split the four partitions: {split}");
    assert_eq!(owned[0].len(), 2, "{split}");
    assert_eq!(lines[1], "described STABLE 2");
    let took_over: Vec<String> = owned[0].iter().map(|p| format!("took-over {p}:5..9")).collect();
    assert_eq!(&lines[2..], &took_over[..], "the survivor resumes the leaver's partitions at the commit");
    for partition in 0..4 {
        assert_eq!(
            committed_natively(&node.node, "takeover", "kafka-group", partition),
            CommittedState::Valid(10),
            "partition {partition}: the Kafka commit is the native group offset"
        );
    }
}

#[test]
fn offsets_committed_through_kafka_read_back_with_ringlog_consume_group_and_back() {
    let node = start_with(1, &[]);
    create_topic(&node.node, "kafka-offsets", 1);
    produce_values(&node.node, "kafka-offsets", 0, 0..6);
    // A Kafka commit outside group management (generation -1, as assign() consumers do).
    let mut client = KafkaClient::connect(&node.kafka);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("shared")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("kafka-offsets")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(4)])]);
    let response: OffsetCommitResponse = client.call(ApiKey::OffsetCommit, 8, &commit);
    assert_eq!(response.topics[0].partitions[0].error_code, 0);

    let consumed = ringlog_cli(&node.node, &["consume", "kafka-offsets", "--partition", "0", "--group", "shared"]);
    assert!(consumed.status.success(), "{}", String::from_utf8_lossy(&consumed.stderr));
    let values: Vec<String> = String::from_utf8(consumed.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(values, ["p0-4", "p0-5"], "ringlog consume --group resumes at the Kafka commit");

    // The CLI committed 6; librdkafka reads it back.
    let read = concat!(
        "import sys\nfrom confluent_kafka import Consumer, TopicPartition\n",
        "c = Consumer({'bootstrap.servers': sys.argv[1], 'group.id': 'shared'})\n",
        "print(c.committed([TopicPartition('kafka-offsets', 0)], timeout=10)[0].offset)\nc.close()\n"
    );
    let output = Command::new("python3").args(["-c", read, &node.kafka]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "6", "the native commit, read through Kafka");
    let fetch = OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_static_str("shared"))).with_topics(
        Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("kafka-offsets")))
            .with_partition_indexes(vec![0])]),
    );
    let fetched: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 7, &fetch);
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, 6);
    let never = fetch.clone().with_group_id(GroupId(StrBytes::from_static_str("never-committed")));
    let fetched: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 7, &never);
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, -1, "no commit: -1, auto.offset.reset decides");
}

fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_string()))
}

fn join_request(group: &str, member: &str, session_timeout_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"meta"))])
}

fn heartbeat(client: &mut KafkaClient, group: &str, member: &str, generation: i32) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_generation_id(generation);
    let response: HeartbeatResponse = client.call(ApiKey::Heartbeat, 4, &request);
    response.error_code
}

fn sync(
    client: &mut KafkaClient,
    group: &str,
    member: &str,
    generation: i32,
    assign: &[(&str, &'static [u8])],
) -> SyncGroupResponse {
    let assignments = assign
        .iter()
        .map(|(id, bytes)| {
            SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(id.to_string()))
                .with_assignment(Bytes::from_static(bytes))
        })
        .collect();
    let request = SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_generation_id(generation)
        .with_assignments(assignments);
    client.call(ApiKey::SyncGroup, 5, &request)
}

fn member_commit(client: &mut KafkaClient, group: &str, member: &str, generation: i32) -> i16 {
    let commit = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("kafka-fencing")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let response: OffsetCommitResponse = client.call(ApiKey::OffsetCommit, 8, &commit);
    response.topics[0].partitions[0].error_code
}

#[test]
fn group_generations_fence_stale_members_and_rebalances_and_sessions_expire() {
    let limits = [("RINGLOG_GROUPS_MIN_SESSION_TIMEOUT_MS", "500"), ("RINGLOG_GROUPS_MAX_MEMBERS_PER_GROUP", "2")];
    let node = start_with(3, &limits);
    create_topic(&node.node, "kafka-fencing", 1);
    produce_values(&node.node, "kafka-fencing", 0, 0..3);
    let mut one = KafkaClient::connect(&node.kafka);
    let mut two = KafkaClient::connect(&node.kafka);
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("fence"));
    let coordinator: FindCoordinatorResponse = one.call(ApiKey::FindCoordinator, 3, &find);
    assert_eq!(
        (coordinator.error_code, coordinator.port),
        (0, node.kafka.rsplit(':').next().unwrap().parse().unwrap())
    );
    let too_short: JoinGroupResponse = one.call(ApiKey::JoinGroup, 7, &join_request("fence", "", 100));
    assert_eq!(too_short.error_code, 26, "INVALID_SESSION_TIMEOUT below groups.min_session_timeout_ms");
    let unknown: JoinGroupResponse = one.call(ApiKey::JoinGroup, 7, &join_request("fence", "nobody", 30_000));
    assert_eq!(unknown.error_code, 25, "UNKNOWN_MEMBER_ID for a member id the group never gave");

    // A lone member's join completes at once: generation 1, it leads.
    let first: JoinGroupResponse = one.call(ApiKey::JoinGroup, 7, &join_request("fence", "", 30_000));
    let a = first.member_id.to_string();
    assert_eq!((first.error_code, first.generation_id, first.leader.as_str()), (0, 1, a.as_str()));
    let synced = sync(&mut one, "fence", &a, 1, &[(&a, b"all")]);
    assert_eq!((synced.error_code, &synced.assignment[..]), (0, &b"all"[..]));
    assert_eq!(heartbeat(&mut one, "fence", &a, 1), 0);
    assert_eq!(heartbeat(&mut one, "fence", &a, 0), 22, "ILLEGAL_GENERATION for an old generation");
    assert_eq!(heartbeat(&mut one, "fence", "stranger", 1), 25, "UNKNOWN_MEMBER_ID");
    assert_eq!(member_commit(&mut one, "fence", &a, 1), 0);

    // A second member's join waits for the first to rejoin; meanwhile the
    // first is told to, and may still commit what it consumed (as Kafka).
    two.send(ApiKey::JoinGroup, 7, &join_request("fence", "", 1_000));
    // The join travels to the coordinator shard on its own connection:
    // heartbeats answer 0 until it has arrived, then 27.
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let code = heartbeat(&mut one, "fence", &a, 1);
        if code != 0 || Instant::now() > deadline {
            break code;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, 27, "REBALANCE_IN_PROGRESS: rejoin");
    assert_eq!(member_commit(&mut one, "fence", &a, 1), 0, "a commit as the rebalance begins is kept");
    let mut three = KafkaClient::connect(&node.kafka);
    let full: JoinGroupResponse = three.call(ApiKey::JoinGroup, 7, &join_request("fence", "", 30_000));
    assert_eq!(full.error_code, 81, "GROUP_MAX_SIZE_REACHED past groups.max_members_per_group");
    let rejoined: JoinGroupResponse = one.call(ApiKey::JoinGroup, 7, &join_request("fence", &a, 30_000));
    let second: JoinGroupResponse = two.receive(ApiKey::JoinGroup, 7);
    let b = second.member_id.to_string();
    assert_eq!((rejoined.generation_id, second.generation_id), (2, 2));
    assert_eq!(rejoined.leader.as_str(), a, "the leader stays");
    assert_eq!(rejoined.members.len(), 2, "the leader sees every member");
    assert!(second.members.is_empty(), "a follower sees none");
    assert_eq!(member_commit(&mut one, "fence", &a, 2), 27, "no commit before SyncGroup hands out the assignment");
    // The follower's sync waits for the leader's assignment.
    two.send(
        ApiKey::SyncGroup,
        5,
        &SyncGroupRequest::default()
            .with_group_id(group_id("fence"))
            .with_member_id(StrBytes::from_string(b.clone()))
            .with_generation_id(2),
    );
    let leader_sync = sync(&mut one, "fence", &a, 2, &[(&a, b"p0"), (&b, b"p1")]);
    let follower_sync: SyncGroupResponse = two.receive(ApiKey::SyncGroup, 5);
    assert_eq!((&leader_sync.assignment[..], &follower_sync.assignment[..]), (&b"p0"[..], &b"p1"[..]));
    assert_eq!(member_commit(&mut one, "fence", &a, 1), 22, "a commit from the old generation is fenced");
    assert_eq!(member_commit(&mut one, "fence", &a, 2), 0);

    let described: DescribeGroupsResponse =
        one.call(ApiKey::DescribeGroups, 5, &DescribeGroupsRequest::default().with_groups(vec![group_id("fence")]));
    assert_eq!((described.groups[0].group_state.as_str(), described.groups[0].members.len()), ("Stable", 2));
    let listed: ListGroupsResponse = one.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert_eq!(listed.groups.iter().map(|g| g.group_id.0.as_str()).collect::<Vec<_>>(), ["fence"]);

    // The second member goes silent: past its 1 s session it is dropped
    // and the first must rejoin, alone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        std::thread::sleep(Duration::from_millis(200));
        let code = heartbeat(&mut one, "fence", &a, 2);
        if code != 0 || Instant::now() > deadline {
            break code;
        }
    };
    assert_eq!(code, 27, "the survivor is told to rejoin after the silent member's session lapsed");
    assert_eq!(heartbeat(&mut two, "fence", &b, 2), 25, "the lapsed member is unknown");
    let alone: JoinGroupResponse = one.call(ApiKey::JoinGroup, 7, &join_request("fence", &a, 30_000));
    assert_eq!((alone.generation_id, alone.members.len()), (3, 1));

    let leave = LeaveGroupRequest::default()
        .with_group_id(group_id("fence"))
        .with_members(vec![MemberIdentity::default().with_member_id(StrBytes::from_string(a.clone()))]);
    let left: LeaveGroupResponse = one.call(ApiKey::LeaveGroup, 4, &leave);
    assert_eq!((left.error_code, left.members[0].error_code), (0, 0));
    let described: DescribeGroupsResponse =
        one.call(ApiKey::DescribeGroups, 5, &DescribeGroupsRequest::default().with_groups(vec![group_id("fence")]));
    assert_eq!(described.groups[0].group_state.as_str(), "Dead", "no members left");
    assert_eq!(committed_natively(&node.node, "fence", "kafka-fencing", 0), CommittedState::Valid(1));
    let metrics = crate::admin::http(&node.node.admin, "GET", "/metrics", None, None).1;
    for line in [
        "ringlog_kafka_requests_total{api=\"JoinGroup\"} 7",
        "ringlog_kafka_errors_total{api=\"Heartbeat\",code=\"22\"} 1",
        "ringlog_kafka_errors_total{api=\"Heartbeat\",code=\"25\"} 2",
        "ringlog_kafka_errors_total{api=\"JoinGroup\",code=\"81\"} 1",
    ] {
        assert!(metrics.lines().any(|metric| metric == line), "{line} missing from /metrics:\n{metrics}");
    }
}

#[test]
fn kcat_and_kafka_python_group_members_resume_from_their_groups_commits() {
    let node = start_with(2, &[]);
    create_topic(&node.node, "kafka-clients", 2);
    produce_values(&node.node, "kafka-clients", 0, 0..3);
    produce_values(&node.node, "kafka-clients", 1, 0..2);
    // kcat's balanced consumer (librdkafka): auto-commits what it read.
    let arguments = ["-b", &node.kafka, "-G", "kcat-group", "-o", "beginning", "-e", "-q", "-f", "%p|%o|%s\n"];
    let output = crate::kafka::kcat(&[&arguments[..], &["kafka-clients"]].concat(), b"");
    assert!(output.status.success(), "kcat -G: {}", String::from_utf8_lossy(&output.stderr));
    let mut read: Vec<String> = String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect();
    read.sort();
    assert_eq!(read, ["0|0|p0-0", "0|1|p0-1", "0|2|p0-2", "1|0|p1-0", "1|1|p1-1"]);
    assert_eq!(committed_natively(&node.node, "kcat-group", "kafka-clients", 0), CommittedState::Valid(3));
    assert_eq!(committed_natively(&node.node, "kcat-group", "kafka-clients", 1), CommittedState::Valid(2));

    // kafka-python's group member, resuming after a native consumer of its group committed.
    let native =
        ringlog_cli(&node.node, &["consume", "kafka-clients", "--partition", "0", "--group", "py", "--count", "2"]);
    assert!(native.status.success(), "{}", String::from_utf8_lossy(&native.stderr));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/kafka_python_group.py");
    let output = Command::new("python3").args([script, &node.kafka, "kafka-clients", "py"]).output().unwrap();
    assert!(output.status.success(), "kafka-python group: {}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<String> = String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        ["0|2|p0-2", "1|0|p1-0", "1|1|p1-1", "committed|0|3", "committed|1|2"],
        "partition 0 resumes at the native commit (2), partition 1 starts at auto.offset.reset"
    );
}

/// Cut partition 0 of `topic` in `data_dir` at the batch holding `offset`.
fn lose_log_from(data_dir: &std::path::Path, topic: &str, offset: u64) {
    let partition = data_dir.join("topics").join(topic).join("0");
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log") && path.file_stem().unwrap().len() == 20)
        .collect();
    segments.sort();
    let segment = segments.last().unwrap();
    let bytes = std::fs::read(segment).unwrap();
    let mut position = 0usize;
    loop {
        let header = ringlog::storage::batch::BatchHeader::parse(&bytes[position..]).unwrap();
        if header.base_offset == offset {
            break;
        }
        position += header.batch_bytes as usize;
    }
    std::fs::OpenOptions::new().write(true).open(segment).unwrap().set_len(position as u64).unwrap();
}

fn kafka_committed(client: &mut KafkaClient, group: &str, topic: &str) -> i64 {
    let fetch = OffsetFetchRequest::default().with_group_id(group_id(group)).with_topics(Some(vec![
        OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes(vec![0]),
    ]));
    let fetched: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 7, &fetch);
    assert_eq!(fetched.topics[0].partitions[0].error_code, 0);
    fetched.topics[0].partitions[0].committed_offset
}

#[test]
fn commit_latched_out_of_range_leaves_the_kafka_clients_reset_policy_to_decide() {
    let node = start_with(1, &[]);
    create_topic(&node.node, "kafka-latch", 1);
    for round in 0..15 {
        produce_values(&node.node, "kafka-latch", 0, round * 10..round * 10 + 10);
    }
    let mut client = KafkaClient::connect(&node.kafka);
    let commit = OffsetCommitRequest::default()
        .with_group_id(group_id("latched"))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("kafka-latch")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(150)])]);
    let response: OffsetCommitResponse = client.call(ApiKey::OffsetCommit, 8, &commit);
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    drop(client);
    // The log loses offsets 100.. after the commit (a lost cache, a bad restore).
    let node = node.crash_damage_and_restart(1, |dir| lose_log_from(dir, "kafka-latch", 100));
    let latched = committed_natively(&node.node, "latched", "kafka-latch", 0);
    assert!(matches!(latched, CommittedState::OutOfRange { committed: 150, .. }), "{latched:?}");

    // Latched: "no committed offset" (never the stale one, which appends
    // could make readable before the client's Fetch), so librdkafka's
    // auto.offset.reset=earliest restarts at the log start.
    let mut client = KafkaClient::connect(&node.kafka);
    assert_eq!(kafka_committed(&mut client, "latched", "kafka-latch"), -1);
    let read = concat!(
        "import sys, time\nfrom confluent_kafka import Consumer\n",
        "c = Consumer({'bootstrap.servers': sys.argv[1], 'group.id': 'latched', 'auto.offset.reset': 'earliest',\n",
        "              'enable.auto.commit': False})\n",
        "c.subscribe(['kafka-latch'])\ndeadline = time.time() + 30\nm = None\n",
        "while m is None and time.time() < deadline:\n    m = c.poll(0.2)\n    m = m if m is not None and not m.error() else None\n",
        "print(m.offset())\nc.close()\n"
    );
    let output = Command::new("python3").args(["-c", read, &node.kafka]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "0", "auto.offset.reset=earliest decided");

    // Appends carry the log end past the stale commit: still latched (SPEC
    // §2), so OffsetFetch says "no committed offset" rather than 150.
    for round in 10..16 {
        produce_values(&node.node, "kafka-latch", 0, round * 10..round * 10 + 10);
    }
    let latched = committed_natively(&node.node, "latched", "kafka-latch", 0);
    assert!(matches!(latched, CommittedState::OutOfRange { committed: 150, log_end_offset: 160, .. }), "{latched:?}");
    assert_eq!(kafka_committed(&mut client, "latched", "kafka-latch"), -1);
}

/// Group requests a client controls stay cheap for the coordinator: a
/// JoinGroup offering too many protocols, one twice or an empty one is
/// refused before it is compared with the group's; a DescribeGroups naming
/// one group many times is answered once; a FindCoordinator naming more
/// distinct keys than `groups.max_groups` closes the connection.
#[test]
fn hostile_group_requests_are_refused_or_answered_once_per_distinct_name() {
    let node = start_with(1, &[("RINGLOG_GROUPS_MAX_GROUPS", "10")]);
    let mut client = KafkaClient::connect(&node.kafka);
    let protocol = |name: &str| {
        JoinGroupRequestProtocol::default().with_name(StrBytes::from_string(name.into())).with_metadata(Bytes::new())
    };
    let join = |protocols: Vec<JoinGroupRequestProtocol>| {
        JoinGroupRequest::default()
            .with_group_id(group_id("hostile"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(protocols)
    };
    let too_many: Vec<_> = (0..33).map(|index| protocol(&format!("p{index}"))).collect();
    for protocols in [too_many, vec![protocol("range"), protocol("range")], vec![protocol("")]] {
        let answer: JoinGroupResponse = client.call(ApiKey::JoinGroup, 5, &join(protocols));
        assert_eq!(answer.error_code, 42, "INVALID_REQUEST");
    }
    let answer: JoinGroupResponse = client.call(ApiKey::JoinGroup, 5, &join(vec![protocol("range")]));
    assert_eq!(answer.error_code, 0, "a well-formed join is served");
    let describe = DescribeGroupsRequest::default().with_groups(vec![group_id("hostile"); 100_000]);
    let answer: DescribeGroupsResponse = client.call(ApiKey::DescribeGroups, 5, &describe);
    assert_eq!(answer.groups.len(), 1, "one answer per distinct group");
    assert_eq!(answer.groups[0].members.len(), 1);
    let keys: Vec<StrBytes> = (0..11).map(|index| StrBytes::from_string(format!("k{index}"))).collect();
    let find = FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(keys);
    client.send(ApiKey::FindCoordinator, 4, &find);
    assert!(closed_by_node(&mut client.stream), "more distinct keys than groups.max_groups close the connection");
}

/// A JoinGroup whose rebalance may wait a minute for the other members.
fn patient_join(group: &str, member: &str) -> JoinGroupRequest {
    join_request(group, member, 30_000).with_rebalance_timeout_ms(60_000)
}

/// Heartbeat `member` until it is told to rejoin (another member's join
/// reached the coordinator): `REBALANCE_IN_PROGRESS`.
fn until_rebalancing(client: &mut KafkaClient, group: &str, member: &str, generation: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while heartbeat(client, group, member, generation) != 27 {
        assert!(Instant::now() < deadline, "the second member's join never reached the coordinator");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn members_parked_in_join_or_sync_are_answered_not_coordinator_at_once_when_the_node_stops() {
    let node = start_with(3, &[]);
    let connect = || KafkaClient::connect(&node.kafka);
    // Parked in JoinGroup: "joins"'s only member has to rejoin first, for up to a minute.
    let (mut a, mut b) = (connect(), connect());
    let first: JoinGroupResponse = a.call(ApiKey::JoinGroup, 7, &patient_join("joins", ""));
    let member_a = first.member_id.to_string();
    assert_eq!(sync(&mut a, "joins", &member_a, 1, &[(&member_a, b"all")]).error_code, 0);
    b.send(ApiKey::JoinGroup, 7, &patient_join("joins", ""));
    until_rebalancing(&mut a, "joins", &member_a, 1);

    // Parked in SyncGroup: "syncs"'s follower waits for its leader's assignment.
    let (mut c, mut d) = (connect(), connect());
    let first: JoinGroupResponse = c.call(ApiKey::JoinGroup, 7, &patient_join("syncs", ""));
    let member_c = first.member_id.to_string();
    assert_eq!(sync(&mut c, "syncs", &member_c, 1, &[(&member_c, b"all")]).error_code, 0);
    d.send(ApiKey::JoinGroup, 7, &patient_join("syncs", ""));
    until_rebalancing(&mut c, "syncs", &member_c, 1);
    let rejoined: JoinGroupResponse = c.call(ApiKey::JoinGroup, 7, &patient_join("syncs", &member_c));
    let joined_d: JoinGroupResponse = d.receive(ApiKey::JoinGroup, 7);
    assert_eq!((rejoined.error_code, joined_d.error_code, rejoined.leader.as_str()), (0, 0, member_c.as_str()));
    let request = SyncGroupRequest::default()
        .with_group_id(group_id("syncs"))
        .with_member_id(joined_d.member_id.clone())
        .with_generation_id(joined_d.generation_id);
    d.send(ApiKey::SyncGroup, 5, &request);

    // SIGTERM: both are answered NOT_COORDINATOR (16) at once, not held
    // until the 10 s shutdown timeout (and not UNKNOWN_MEMBER_ID, on which
    // clients would drop their member ids).
    let stopped_at = Instant::now();
    let KafkaNode { node: process, .. } = node;
    let terminating = std::thread::spawn(move || process.terminate());
    let parked_join: JoinGroupResponse = b.receive(ApiKey::JoinGroup, 7);
    let parked_sync: SyncGroupResponse = d.receive(ApiKey::SyncGroup, 5);
    let answered_after = stopped_at.elapsed();
    assert_eq!((parked_join.error_code, parked_sync.error_code), (16, 16), "NOT_COORDINATOR");
    assert!(answered_after < Duration::from_secs(8), "answered {answered_after:?} after SIGTERM");
    assert_eq!(terminating.join().unwrap(), Some(0), "a clean exit");
    assert!(stopped_at.elapsed() < Duration::from_secs(9), "stopped in {:?}: nothing held it", stopped_at.elapsed());
}
