//! The Kafka listener in a cluster (SPEC §10, docs/KAFKA.md "In a
//! cluster"): Metadata names the live nodes as brokers with their Kafka
//! addresses and the cluster's leader of every partition; a follower
//! refuses produces with `NOT_LEADER_OR_FOLLOWER` and serves reads up to
//! the high watermark it learned; kcat and kafka-python reach the leader
//! through any node's Kafka port and find the new one after a SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::cluster::{health, wait_for, wait_for_role, Cluster};
use crate::fixtures::create_topic;
use crate::kafka::{crate_batch, kcat, kcat_consume, kcat_produce, native_consume, produce_request, KafkaClient};
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
fn metadata_follows_the_cluster_view_and_a_follower_refuses_produce_but_serves_reads() {
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
    assert_eq!(partition_zero(&kcat_metadata(kafka[2], "kc-meta")).0, 1, "every node names the same leader");
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

    // A follower serves Fetch and ListOffsets up to the high watermark it learned.
    wait_for(Duration::from_secs(15), "the follower to learn the high watermark", || {
        fetch_partition_zero(kafka[1], "kc-meta") == (0, 3, vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()])
    });
    assert_eq!(latest_offset(kafka[1], "kc-meta"), (0, 3));
    assert_eq!(kcat_consume(kafka[1], "kc-meta", 0).len(), 3);

    // Without etcd every node steps down: no leader, and a node that
    // cannot read the membership names only itself.
    cluster.etcd.kill();
    wait_for(Duration::from_secs(20), "Metadata without a leader once etcd is gone", || {
        last = kcat_metadata(kafka[1], "kc-meta");
        brokers(&last) == [(2, kafka[1].to_string())] && partition_zero(&last).0 == -1
    });
    drop(quiet_node);
}

/// Start the failover producer (kafka-python) against one Kafka address;
/// its `acked <i> <offset>` lines arrive on the channel.
fn spawn_python_producer(
    bootstrap: &str,
    topic: &str,
    count: u32,
) -> (std::process::Child, mpsc::Receiver<(u32, i64)>) {
    let found = Command::new("python3").args(["-c", "import kafka"]).stderr(Stdio::null()).status();
    assert!(found.is_ok_and(|status| status.success()), "kafka-python is not installed (bash tools/install-deps.sh)");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/kafka_python_failover.py");
    let mut child = Command::new("python3")
        .args([script, bootstrap, topic, &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut words = line.split_whitespace().skip(1);
            if let (Some(Ok(index)), Some(Ok(offset))) = (words.next().map(str::parse), words.next().map(str::parse)) {
                if sender.send((index, offset)).is_err() {
                    return;
                }
            }
        }
    });
    (child, receiver)
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
    let found = Command::new("python3").args(["-c", "import confluent_kafka"]).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|status| status.success()),
        "confluent-kafka is not installed (bash tools/install-deps.sh)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/confluent_failover.py");
    let mut child = Command::new("python3")
        .args([script, bootstrap, topic, &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let delivery = match words.as_slice() {
                ["acked", index, partition, offset] => match (index.parse(), partition.parse(), offset.parse()) {
                    (Ok(index), Ok(partition), Ok(offset)) => Delivery::Acked { index, partition, offset },
                    _ => Delivery::Failed(line.clone()),
                },
                _ => Delivery::Failed(line.clone()),
            };
            if sender.send(delivery).is_err() {
                return;
            }
        }
    });
    (child, receiver)
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
    let mut errors = String::new();
    std::io::Read::read_to_string(&mut producer.stderr.take().unwrap(), &mut errors).unwrap();
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
