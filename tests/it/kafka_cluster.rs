//! The Kafka listener in a cluster (SPEC §10, docs/KAFKA.md "In a
//! cluster"): Metadata names the live nodes as brokers with their Kafka
//! addresses and the cluster's leader of every partition; a follower
//! refuses produces, fetches and offset lookups with
//! `NOT_LEADER_OR_FOLLOWER`; kcat and kafka-python reach the leader
//! through any node's Kafka port and find the new one after a SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use ringlog::protocol::{CommittedState, Request, Response};

use crate::cluster::{health, wait_for, wait_for_role, Cluster};
use crate::fixtures::create_topic;
use crate::kafka::{
    crate_batch, kcat, kcat_consume, kcat_produce, native_consume, produce_request, require_python_module,
    spawn_script_lines, KafkaClient,
};
use crate::node::Node;

/// `NOT_LEADER_OR_FOLLOWER`.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// `NOT_CONTROLLER`.
const NOT_CONTROLLER: i16 = 41;

/// A cluster whose members get a Kafka listener on a free port each.
fn kafka_cluster(lag_max_ms: u64) -> Cluster {
    let mut cluster = Cluster::with_replication(lag_max_ms, 1);
    cluster.kafka = true;
    cluster
}

/// Metadata as kcat (librdkafka) reads it through `kafka`, for `topic`.
fn kcat_metadata(kafka: &str, topic: &str) -> serde_json::Value {
    let output = kcat(&["-b", kafka, "-L", "-J", "-t", topic, "-m", "5"], b"");
    assert!(output.status.success(), "kcat -L: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("kcat -J prints JSON")
}

/// (broker id, address) pairs of a kcat metadata listing, by id.
fn brokers(metadata: &serde_json::Value) -> Vec<(u64, String)> {
    let mut brokers: Vec<(u64, String)> = metadata["brokers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|broker| (broker["id"].as_u64().unwrap(), broker["name"].as_str().unwrap().to_string()))
        .collect();
    brokers.sort();
    brokers
}

/// (leader, replicas, isrs) of partition 0 of the listed topic.
fn partition_zero(metadata: &serde_json::Value) -> (i64, Vec<u64>, Vec<u64>) {
    let partition = &metadata["topics"][0]["partitions"][0];
    let ids = |list: &serde_json::Value| -> Vec<u64> {
        let mut ids: Vec<u64> =
            list.as_array().into_iter().flatten().filter_map(|replica| replica["id"].as_u64()).collect();
        ids.sort_unstable();
        ids
    };
    (partition["leader"].as_i64().unwrap_or(-2), ids(&partition["replicas"]), ids(&partition["isrs"]))
}

/// A Fetch of partition 0 from offset 0 without waiting (v11).
fn fetch_partition_zero(kafka: &str, topic: &str) -> (i16, i64, Vec<Vec<u8>>) {
    let partition = FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![partition]);
    let fetch = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![topic]);
    let response: FetchResponse = KafkaClient::connect(kafka).call(ApiKey::Fetch, 11, &fetch);
    let data = &response.responses[0].partitions[0];
    let mut values = Vec::new();
    let mut records = data.records.clone().unwrap_or_default();
    while !records.is_empty() {
        let batch = RecordBatchDecoder::decode(&mut records).expect("a Kafka batch");
        values.extend(batch.records.into_iter().map(|record| record.value.unwrap_or_default().to_vec()));
    }
    (data.error_code, data.high_watermark, values)
}

/// ListOffsets latest (-1) of partition 0 (v6): (error code, offset).
fn latest_offset(kafka: &str, topic: &str) -> (i16, i64) {
    let partition = ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1);
    let topic = ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![partition]);
    let request = ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(vec![topic]);
    let response: ListOffsetsResponse = KafkaClient::connect(kafka).call(ApiKey::ListOffsets, 6, &request);
    let answer = &response.topics[0].partitions[0];
    (answer.error_code, answer.offset)
}

#[test]
fn metadata_follows_the_cluster_view_and_a_follower_refuses_kafka_produce_and_reads() {
    let mut cluster = kafka_cluster(5_000);
    let (members, nodes) = cluster.start_in_sync::<3>();
    // A fourth node without a Kafka listener: a replica, not a broker.
    let mut quiet = cluster.member("quiet");
    quiet.kafka = None;
    let quiet_node = cluster.start(&quiet);
    assert_eq!(wait_for_role(&quiet_node, "follower"), 4);
    create_topic(&nodes[0], "kc-meta", 1);
    let kafka: Vec<&str> = members.iter().map(|member| member.kafka.as_deref().unwrap()).collect();

    let expected_brokers: Vec<(u64, String)> =
        kafka.iter().enumerate().map(|(index, address)| (index as u64 + 1, address.to_string())).collect();
    let mut last = serde_json::Value::Null;
    wait_for(Duration::from_secs(30), "a follower's Metadata to show the whole cluster", || {
        last = kcat_metadata(kafka[1], "kc-meta");
        brokers(&last) == expected_brokers && partition_zero(&last) == (1, vec![1, 2, 3, 4], vec![1, 2, 3, 4])
    });
    // Each node learns the new topic on its own (from the leader, within a
    // replication round): wait for the third as for the second.
    wait_for(Duration::from_secs(30), "every node to name the same leader", || {
        partition_zero(&kcat_metadata(kafka[2], "kc-meta")).0 == 1
    });
    let metadata: MetadataResponse =
        KafkaClient::connect(kafka[1]).call(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(metadata.controller_id.0, 1, "admin requests go to the leader");
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("kc-on-follower")))
        .with_num_partitions(1)
        .with_replication_factor(-1);
    let create = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(5_000);
    let created: CreateTopicsResponse = KafkaClient::connect(kafka[1]).call(ApiKey::CreateTopics, 5, &create);
    assert_eq!(created.topics[0].error_code, NOT_CONTROLLER, "a follower does not create topics");

    // Produce straight to a follower: refused per partition.
    let request = produce_request("kc-meta", 0, -1, crate_batch(&[b"direct"]));
    let response: kafka_protocol::messages::ProduceResponse =
        KafkaClient::connect(kafka[1]).call(ApiKey::Produce, 8, &request);
    assert_eq!(response.responses[0].partition_responses[0].error_code, NOT_LEADER_OR_FOLLOWER);

    // kcat given only a follower's port follows Metadata to the leader.
    kcat_produce(kafka[2], "kc-meta", 0, &["-X", "acks=all"], "k\tone\nk\ttwo\nk\tthree\n");
    let on_leader = native_consume(&nodes[0], "kc-meta", 0);
    assert_eq!(
        on_leader.iter().map(|line| line.split('|').nth(2).unwrap()).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );

    // Kafka reads are the leader's (SPEC §10): a follower refuses Fetch and
    // ListOffsets, although it holds the records and serves them natively.
    let expected = vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
    assert_eq!(fetch_partition_zero(kafka[0], "kc-meta"), (0, 3, expected));
    assert_eq!(latest_offset(kafka[0], "kc-meta"), (0, 3));
    wait_for(Duration::from_secs(15), "the follower to hold the records", || {
        native_consume(&nodes[1], "kc-meta", 0).len() == 3
    });
    assert_eq!(fetch_partition_zero(kafka[1], "kc-meta"), (NOT_LEADER_OR_FOLLOWER, -1, vec![]));
    assert_eq!(latest_offset(kafka[1], "kc-meta"), (NOT_LEADER_OR_FOLLOWER, -1));
    // kcat given only a follower's port follows Metadata to the leader.
    assert_eq!(kcat_consume(kafka[1], "kc-meta", 0).len(), 3);

    // A long poll on the leader at its end, in flight when it steps down.
    let leader_kafka = kafka[0].to_string();
    let long_poll = std::thread::spawn(move || {
        let partition =
            FetchPartition::default().with_partition(0).with_fetch_offset(3).with_partition_max_bytes(1 << 20);
        let topic = FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("kc-meta")))
            .with_partitions(vec![partition]);
        let fetch = FetchRequest::default().with_max_wait_ms(25_000).with_min_bytes(1).with_topics(vec![topic]);
        let started = Instant::now();
        let response: FetchResponse = KafkaClient::connect(&leader_kafka).call(ApiKey::Fetch, 11, &fetch);
        (response.responses[0].partitions[0].error_code, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    // Without etcd every node steps down: no leader, and a node that
    // cannot read the membership names only itself.
    cluster.etcd.kill();
    wait_for(Duration::from_secs(20), "Metadata without a leader once etcd is gone", || {
        last = kcat_metadata(kafka[1], "kc-meta");
        brokers(&last) == [(2, kafka[1].to_string())] && partition_zero(&last).0 == -1
    });
    let (code, waited) = long_poll.join().unwrap();
    assert_eq!(code, NOT_LEADER_OR_FOLLOWER, "the long poll ends when its leader steps down");
    assert!(waited < Duration::from_secs(20), "well before its 25 s wait: {waited:?}");
    drop(quiet_node);
}

/// Start the failover producer (kafka-python) against one Kafka address;
/// its `acked <i> <offset>` lines arrive on the channel.
fn spawn_python_producer(
    bootstrap: &str,
    topic: &str,
    count: u32,
) -> (std::process::Child, mpsc::Receiver<(u32, i64)>) {
    require_python_module("kafka", "kafka-python");
    let count = count.to_string();
    spawn_script_lines("kafka_python_failover.py", &[bootstrap, topic, &count], |line| {
        let mut words = line.split_whitespace().skip(1);
        match (words.next().map(str::parse), words.next().map(str::parse)) {
            (Some(Ok(index)), Some(Ok(offset))) => Some((index, offset)),
            _ => None,
        }
    })
}

#[test]
fn kafka_clients_find_the_new_leader_through_metadata_after_a_sigkill_and_lose_no_acked_record() {
    let cluster = kafka_cluster(2_000);
    let (members, nodes) = cluster.start_in_sync::<3>();
    create_topic(&nodes[0], "kc-failover", 1);
    let kafka: Vec<&str> = members.iter().map(|member| member.kafka.as_deref().unwrap()).collect();
    let [a, b, c] = nodes;

    const COUNT: u32 = 300;
    // Bootstrapped with a follower's address only.
    let (mut producer, acks) = spawn_python_producer(kafka[1], "kc-failover", COUNT);
    let mut acked = Vec::new();
    while acked.len() < 100 {
        acked.push(acks.recv_timeout(Duration::from_secs(30)).expect("acks before the kill"));
    }
    // What kafka-python had acknowledged is on the leader, at those offsets.
    let on_leader = native_consume(&a, "kc-failover", 0);
    for (index, offset) in &acked {
        let value = on_leader.get(*offset as usize).and_then(|line| line.split('|').nth(2));
        assert_eq!(value, Some(format!("v{index}").as_str()), "acked before the kill: v{index} at {offset}");
    }
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(90);
    // The failover shows as the longest pause between two acknowledgements.
    let (mut last_ack_at, mut longest_pause) = (Instant::now(), Duration::ZERO);
    while acked.len() < COUNT as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        match acks.recv_timeout(left) {
            Ok(ack) => acked.push(ack),
            Err(_) => break,
        }
        longest_pause = longest_pause.max(last_ack_at.elapsed());
        last_ack_at = Instant::now();
    }
    let status = producer.wait().unwrap();
    let mut errors = String::new();
    std::io::Read::read_to_string(&mut producer.stderr.take().unwrap(), &mut errors).unwrap();
    assert!(
        status.success() && acked.len() == COUNT as usize,
        "kafka-python carried on: {} acked; {errors}",
        acked.len()
    );
    eprintln!("kafka-python acknowledged all {COUNT} records; no acknowledgement for {longest_pause:?}");

    let new_leader: &Node = [&b, &c].into_iter().find(|node| health(node)["role"] == "leader").expect("a new leader");
    let new_id = health(new_leader)["node_id"].as_u64().unwrap() as i64;
    let metadata = kcat_metadata(kafka[2], "kc-failover");
    assert_eq!(partition_zero(&metadata).0, new_id, "Metadata names the new leader");
    assert_eq!(brokers(&metadata).iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2, 3], "the dead node is gone");

    // Every acknowledged record is where its ack said, read through Kafka.
    let lines = kcat_consume(kafka[1], "kc-failover", 0);
    let by_offset: std::collections::HashMap<i64, String> = lines
        .iter()
        .map(|line| {
            let mut fields = line.split('|');
            (fields.next().unwrap().parse().unwrap(), fields.nth(1).unwrap().to_string())
        })
        .collect();
    for (index, offset) in &acked {
        assert_eq!(by_offset.get(offset), Some(&format!("v{index}")), "acked record v{index} at offset {offset}");
    }
    // One more produce through the third node's port lands on the new leader.
    kcat_produce(kafka[2], "kc-failover", 0, &["-X", "acks=all"], "k\tafter\n");
    assert_eq!(native_consume(new_leader, "kc-failover", 0).last().unwrap().split('|').nth(2), Some("after"));
}

/// Collect a child's stderr on a thread, so a chatty client never blocks
/// on a full pipe; the text is there once the child exited.
fn drain_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    })
}

/// A delivery report of the confluent-kafka failover producer: record
/// `v<index>` acknowledged at (partition, offset), or an error line.
#[derive(Debug)]
enum Delivery {
    Acked { index: u32, partition: u32, offset: u64 },
    Failed(String),
}

/// Start the confluent-kafka (librdkafka) idempotent failover producer
/// against one Kafka address; its delivery reports arrive on the channel.
fn spawn_confluent_producer(
    bootstrap: &str,
    topic: &str,
    count: u32,
) -> (std::process::Child, mpsc::Receiver<Delivery>) {
    require_python_module("confluent_kafka", "confluent-kafka");
    let count = count.to_string();
    spawn_script_lines("confluent_failover.py", &[bootstrap, topic, &count], |line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        Some(match words.as_slice() {
            ["acked", index, partition, offset] => match (index.parse(), partition.parse(), offset.parse()) {
                (Ok(index), Ok(partition), Ok(offset)) => Delivery::Acked { index, partition, offset },
                _ => Delivery::Failed(line.clone()),
            },
            _ => Delivery::Failed(line.clone()),
        })
    })
}

/// The values of `topic`'s partition as `node` stores them, by offset.
fn stored_values(node: &Node, topic: &str, partition: u32) -> Vec<String> {
    let lines = native_consume(node, topic, partition);
    lines.iter().map(|line| line.split('|').nth(2).unwrap_or_default().to_string()).collect()
}

#[test]
fn idempotent_librdkafka_producer_loses_and_duplicates_nothing_when_the_leader_is_sigkilled() {
    let cluster = kafka_cluster(2_000);
    let (members, nodes) = cluster.start_in_sync::<3>();
    create_topic(&nodes[0], "kc-idem-failover", 2);
    let kafka: Vec<&str> = members.iter().map(|member| member.kafka.as_deref().unwrap()).collect();
    let [a, b, c] = nodes;
    let mut a = Some(a);

    const COUNT: u32 = 1_500;
    let (mut producer, deliveries) = spawn_confluent_producer(kafka[1], "kc-idem-failover", COUNT);
    let producer_stderr = drain_stderr(&mut producer);
    let mut acked: Vec<(u32, u32, u64)> = Vec::new();
    let mut failed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    // Kill the leader while records are in flight, after 300 acknowledgements.
    while acked.len() + failed.len() < COUNT as usize {
        if acked.len() >= 300 {
            if let Some(leader) = a.take() {
                leader.kill();
            }
        }
        match deliveries.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Delivery::Acked { index, partition, offset }) => acked.push((index, partition, offset)),
            Ok(Delivery::Failed(line)) => failed.push(line),
            Err(_) => break,
        }
    }
    let status = producer.wait().unwrap();
    let errors = producer_stderr.join().unwrap();
    assert!(a.is_none(), "the leader was killed under the producer: {} acked; {errors}", acked.len());
    assert!(
        status.success() && failed.is_empty() && acked.len() == COUNT as usize,
        "librdkafka delivered everything: {} acked, failed {:?}; {errors}",
        acked.len(),
        &failed[..failed.len().min(5)]
    );

    let new_leader: &Node = [&b, &c].into_iter().find(|node| health(node)["role"] == "leader").expect("a new leader");
    for partition in 0..2u32 {
        let stored = stored_values(new_leader, "kc-idem-failover", partition);
        // Acknowledgements of one partition in the order they came.
        let in_ack_order: Vec<(u32, u64)> =
            acked.iter().filter(|(_, p, _)| *p == partition).map(|(index, _, offset)| (*index, *offset)).collect();
        for (index, offset) in &in_ack_order {
            assert_eq!(
                stored.get(*offset as usize).map(String::as_str),
                Some(format!("v{index}").as_str()),
                "partition {partition}: acked v{index} at {offset}"
            );
        }
        // Nothing else: every acknowledged record exactly once, in order.
        let expected: Vec<String> = in_ack_order.iter().map(|(index, _)| format!("v{index}")).collect();
        assert_eq!(stored, expected, "partition {partition}: each acknowledged record once, in acknowledged order");
    }
}

/// FindCoordinator for `group` asked at `kafka` (v3): (error code, node
/// id, `host:port`).
fn find_coordinator(kafka: &str, group: &str) -> (i16, i32, String) {
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
    let answer: FindCoordinatorResponse = KafkaClient::connect(kafka).call(ApiKey::FindCoordinator, 3, &request);
    (answer.error_code, answer.node_id.0, format!("{}:{}", answer.host.as_str(), answer.port))
}

/// The offsets `group` committed on partitions 0 and 1 of `topic`, read
/// through `kafka` with OffsetFetch (v7): (error code, offsets).
fn committed_offsets(kafka: &str, group: &str, topic: &str) -> (i16, Vec<i64>) {
    let topics = vec![OffsetFetchRequestTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_indexes(vec![0, 1])];
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(Some(topics));
    let answer: OffsetFetchResponse = KafkaClient::connect(kafka).call(ApiKey::OffsetFetch, 7, &request);
    let offsets = answer.topics.iter().flat_map(|topic| topic.partitions.iter().map(|p| p.committed_offset));
    (answer.error_code, offsets.collect())
}

/// What `node` holds as `group`'s commit on a partition (native FetchOffset).
fn committed_natively(node: &Node, group: &str, topic: &str, partition: u32) -> CommittedState {
    let request = Request::FetchOffset { group: group.into(), topic: topic.into(), partition };
    let Ok(Response::FetchOffset(state)) = node.client().call(request) else { panic!("native offset fetch failed") };
    state
}

/// Start the confluent-kafka group member of `tests/kafka/confluent_group_failover.py`;
/// its output lines arrive on the channel.
fn spawn_group_member(
    bootstrap: &str,
    topic: &str,
    group: &str,
    count: u32,
) -> (std::process::Child, mpsc::Receiver<String>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/confluent_group_failover.py");
    let mut child = Command::new("python3")
        .args([script, bootstrap, topic, group, &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    (child, receiver)
}

/// Produce `<prefix><i>` for i in `range` with kcat through `kafka`, each
/// to partition i % 2, acks=all.
fn produce_alternating(kafka: &str, topic: &str, prefix: &str, range: std::ops::Range<u32>) {
    for partition in 0..2 {
        let lines: String = range.clone().filter(|i| i % 2 == partition).map(|i| format!("k\t{prefix}{i}\n")).collect();
        kcat_produce(kafka, topic, partition, &["-X", "acks=all"], &lines);
    }
}

/// Read the member's lines until `consumed` holds `count` records (or the
/// time is up); every line is kept in `lines`.
fn read_member(
    receiver: &mpsc::Receiver<String>,
    lines: &mut Vec<String>,
    consumed: &mut Vec<(u32, u64, String)>,
    count: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(150);
    while consumed.len() < count {
        let Ok(line) = receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) else { return };
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["consumed", partition, offset, value] = words.as_slice() {
            if let (Ok(partition), Ok(offset)) = (partition.parse(), offset.parse()) {
                consumed.push((partition, offset, value.to_string()));
            }
        }
        lines.push(line);
    }
}

#[test]
fn consumer_group_bootstrapped_at_a_follower_rejoins_on_the_new_leader_and_resumes_from_its_commits() {
    let cluster = kafka_cluster(2_000);
    let (members, nodes) = cluster.start_in_sync::<3>();
    create_topic(&nodes[0], "kc-group", 2);
    let kafka: Vec<&str> = members.iter().map(|member| member.kafka.as_deref().unwrap()).collect();
    let [a, b, c] = nodes;
    // Every node names the leader as the coordinator, at its Kafka address.
    for asked in &kafka {
        assert_eq!(find_coordinator(asked, "g-failover"), (0, 1, kafka[0].to_string()), "asked at {asked}");
    }
    produce_alternating(kafka[0], "kc-group", "a", 0..20);

    let (mut member, receiver) = spawn_group_member(kafka[1], "kc-group", "g-failover", 40);
    let member_stderr = drain_stderr(&mut member);
    let (mut lines, mut consumed) = (Vec::new(), Vec::new());
    read_member(&receiver, &mut lines, &mut consumed, 20);
    assert_eq!(consumed.len(), 20, "the member consumed what was there before the kill: {lines:?}");
    assert_eq!(committed_offsets(kafka[0], "g-failover", "kc-group"), (0, vec![10, 10]), "committed on the leader");
    // Followers mirror the leader's commits every second (REPLICATION.md,
    // "Consumer-group offsets"): the kill comes once both have them.
    wait_for(Duration::from_secs(30), "the followers to mirror the commits", || {
        [&b, &c].into_iter().all(|node| {
            (0..2).all(|partition| {
                committed_natively(node, "g-failover", "kc-group", partition) == CommittedState::Valid(10)
            })
        })
    });
    a.kill();

    let new_leader: &Node = {
        let mut found = None;
        wait_for(Duration::from_secs(60), "a new leader", || {
            found = [&b, &c].into_iter().find(|node| health(node)["role"] == "leader");
            found.is_some()
        });
        found.unwrap()
    };
    let new_id = health(new_leader)["node_id"].as_u64().unwrap() as i32;
    let new_kafka = kafka[new_id as usize - 1];
    let follower_kafka = kafka[if new_id == 2 { 2 } else { 1 }];
    wait_for(Duration::from_secs(30), "the follower to name the new coordinator", || {
        find_coordinator(follower_kafka, "g-failover") == (0, new_id, new_kafka.to_string())
    });
    produce_alternating(new_kafka, "kc-group", "b", 20..40);
    read_member(&receiver, &mut lines, &mut consumed, 40);
    let status = member.wait().unwrap();
    let errors = member_stderr.join().unwrap();
    assert!(status.success() && consumed.len() == 40, "the member consumed all 40: {lines:?}; {errors}");

    // Resumed from its commits: every record once, each partition in order.
    for partition in 0..2u32 {
        let offsets: Vec<u64> = consumed.iter().filter(|(p, _, _)| *p == partition).map(|(_, o, _)| *o).collect();
        assert_eq!(offsets, (0..20).collect::<Vec<u64>>(), "partition {partition} read once, in order: {lines:?}");
        let values: Vec<String> =
            consumed.iter().filter(|(p, _, _)| *p == partition).map(|(_, _, v)| v.clone()).collect();
        let expected: Vec<String> = (0..20u32)
            .map(|n| 2 * n + partition)
            .map(|i| if i < 20 { format!("a{i}") } else { format!("b{i}") })
            .collect();
        assert_eq!(values, expected, "partition {partition}");
    }
    let assignments =
        lines.iter().filter(|line| line.starts_with("assigned") && line.len() > "assigned ".len()).count();
    assert!(assignments >= 2, "the member rejoined after the kill: {lines:?}");
    // Its commits after the failover are on the new leader.
    assert_eq!(committed_offsets(new_kafka, "g-failover", "kc-group"), (0, vec![20, 20]));
}

/// A JoinGroup of `member` to `group` whose rebalance may wait a minute.
fn patient_join(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(60_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(bytes::Bytes::from_static(b"meta"))])
}

#[test]
fn a_member_parked_in_join_on_a_leader_that_steps_down_is_answered_not_coordinator() {
    let mut cluster = kafka_cluster(2_000);
    let (members, _nodes) = cluster.start_in_sync::<3>();
    let leader = members[0].kafka.as_deref().unwrap();
    let group = GroupId(StrBytes::from_static_str("g-stepdown"));
    let (mut a, mut b) = (KafkaClient::connect(leader), KafkaClient::connect(leader));
    let first: JoinGroupResponse = a.call(ApiKey::JoinGroup, 7, &patient_join("g-stepdown", ""));
    assert_eq!((first.error_code, first.generation_id), (0, 1));
    let assignment = SyncGroupRequestAssignment::default().with_member_id(first.member_id.clone());
    let sync = SyncGroupRequest::default()
        .with_group_id(group.clone())
        .with_member_id(first.member_id.clone())
        .with_generation_id(1)
        .with_assignments(vec![assignment]);
    let synced: SyncGroupResponse = a.call(ApiKey::SyncGroup, 5, &sync);
    assert_eq!(synced.error_code, 0);
    // A second member parks: the first has a minute to rejoin.
    b.send(ApiKey::JoinGroup, 7, &patient_join("g-stepdown", ""));
    let heartbeat =
        HeartbeatRequest::default().with_group_id(group).with_member_id(first.member_id).with_generation_id(1);
    wait_for(Duration::from_secs(30), "the second join to reach the coordinator", || {
        let answer: HeartbeatResponse = a.call(ApiKey::Heartbeat, 4, &heartbeat);
        answer.error_code == 27
    });

    // Without etcd the leader steps down: the parked member hears
    // NOT_COORDINATOR then, not after the minute of its rebalance.
    let stepped_down_from = Instant::now();
    cluster.etcd.kill();
    b.stream.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let parked: JoinGroupResponse = b.receive(ApiKey::JoinGroup, 7);
    let after = stepped_down_from.elapsed();
    assert_eq!(parked.error_code, 16, "NOT_COORDINATOR after {after:?}");
    assert!(after < Duration::from_secs(45), "answered when the leader stepped down, {after:?} after etcd died");
}
