//! Replication with real etcd and three real `ringlog serve` processes:
//! identical logs on every replica, min_insync_replicas, slow followers,
//! forgetting, and lossless failover under acks=all.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringlog::net::protocol::{Acks, ErrorCode, Request, Response, TopicSettings};
use ringlog::storage::batch::{BatchIter, RecordIter, BATCH_HEADER_BYTES};

use crate::admin::{http, json};
use crate::cluster::{create_topic, health, wait_for, wait_for_role, Cluster};
use crate::node::{batch, Node};

fn cluster_with(lag_max_ms: u64, min_insync: usize) -> Cluster {
    let mut cluster = Cluster::new();
    cluster.environment = vec![
        ("RINGLOG_CLUSTER_REPLICA_LAG_MAX_MS".into(), lag_max_ms.to_string()),
        ("RINGLOG_CLUSTER_MIN_INSYNC_REPLICAS".into(), min_insync.to_string()),
    ];
    cluster
}

fn nodes_view(node: &Node) -> Vec<serde_json::Value> {
    json(&http(&node.admin, "GET", "/api/nodes", None, None).1).as_array().cloned().unwrap_or_default()
}

fn in_sync_ids(node: &Node) -> Vec<u64> {
    nodes_view(node).iter().filter(|n| n["in_sync"] == true).filter_map(|n| n["id"].as_u64()).collect()
}

fn wait_all_in_sync(leader: &Node, count: usize) {
    wait_for(Duration::from_secs(20), &format!("{count} replicas in sync"), || in_sync_ids(leader).len() == count);
}

fn produce_acks(
    node: &Node,
    topic: &str,
    partition: u32,
    values: &[String],
    acks: Acks,
) -> Result<Response, ErrorCode> {
    let request = Request::Produce { topic: topic.into(), partition, acks, batch: batch(values, None) };
    node.client().call(request).map_err(|error| error.code)
}

/// Every record (offset, value) of a partition as `node` serves it, up to its high watermark.
fn read_partition(node: &Node, topic: &str, partition: u32) -> (Vec<u8>, Vec<(u64, String)>) {
    let mut client = node.client();
    let (mut offset, mut bytes, mut records) = (0u64, Vec::new(), Vec::new());
    loop {
        let request = Request::Fetch { topic: topic.into(), partition, offset, max_bytes: 1 << 20, max_wait_ms: 0 };
        let Ok(Response::Fetch { batches, next_offset, .. }) = client.call(request) else { panic!("fetch failed") };
        if batches.is_empty() {
            return (bytes, records);
        }
        for batch in BatchIter::new(&batches, usize::MAX) {
            let (header, raw) = batch.expect("valid batch");
            for (index, record) in RecordIter::new(&raw[BATCH_HEADER_BYTES..]).enumerate() {
                let record = record.expect("valid record");
                records.push((header.base_offset + index as u64, String::from_utf8_lossy(record.value).into_owned()));
            }
        }
        bytes.extend_from_slice(&batches);
        offset = next_offset;
    }
}

fn high_watermark(node: &Node, topic: &str, partition: u32) -> Option<u64> {
    match node.client().call(Request::ListOffsets { topic: topic.into(), partition }) {
        Ok(Response::ListOffsets { high_watermark, .. }) => Some(high_watermark),
        _ => None,
    }
}

#[test]
fn acks_all_records_are_on_every_follower_with_identical_offsets_and_bytes() {
    let cluster = cluster_with(5_000, 1);
    let members: Vec<_> = ["a", "b", "c"].iter().map(|name| cluster.member(name)).collect();
    let a = cluster.start(&members[0]);
    wait_for_role(&a, "leader");
    let (b, c) = (cluster.start(&members[1]), cluster.start(&members[2]));
    wait_all_in_sync(&a, 3);
    let settings = TopicSettings { partitions: 3, retention_bytes: 0, retention_ms: 0, segment_bytes: 0 };
    a.client().call(Request::CreateTopic { name: "orders".into(), settings }).unwrap();
    let mut expected_end = [0u64; 3];
    for round in 0..60u32 {
        let partition = round % 3;
        let values: Vec<String> = (0..50).map(|i| format!("r{round}-{i}-{}", "x".repeat(100))).collect();
        let Ok(Response::Produce { next_offset, .. }) = produce_acks(&a, "orders", partition, &values, Acks::All)
        else {
            panic!("acks=all produce failed in round {round}")
        };
        expected_end[partition as usize] = next_offset;
    }
    for (partition, &end) in expected_end.iter().enumerate() {
        let partition = partition as u32;
        for node in [&b, &c] {
            wait_for(Duration::from_secs(10), "followers to learn the high watermark", || {
                high_watermark(node, "orders", partition) == Some(end)
            });
        }
        let (leader_bytes, leader_records) = read_partition(&a, "orders", partition);
        assert_eq!(leader_records.len() as u64, end);
        assert!(leader_records.iter().enumerate().all(|(index, (offset, _))| *offset == index as u64), "dense");
        for node in [&b, &c] {
            let (bytes, _) = read_partition(node, "orders", partition);
            assert!(bytes == leader_bytes, "partition {partition} differs on {}", node.address);
        }
    }
    let metrics = http(&a.admin, "GET", "/metrics", None, None).1;
    assert!(metrics.contains("ringlog_follower_sent_bytes_total{follower=\"2\"}"), "{metrics}");
    assert!(metrics.contains("ringlog_follower_compression_ratio{follower=\"3\"}"));
}

#[test]
fn min_insync_replicas_refuses_acks_all_and_a_forgotten_dead_node_stops_counting() {
    let cluster = cluster_with(1_000, 2);
    let members: Vec<_> = ["a", "b", "c"].iter().map(|name| cluster.member(name)).collect();
    let a = cluster.start(&members[0]);
    wait_for_role(&a, "leader");
    let (b, c) = (cluster.start(&members[1]), cluster.start(&members[2]));
    wait_all_in_sync(&a, 3);
    create_topic(&a, "t");
    assert!(produce_acks(&a, "t", 0, &["one".into()], Acks::All).is_ok());

    // c dies: after replica_lag_max_ms it leaves the ISR; {a, b} still meets 2.
    c.kill();
    wait_for(Duration::from_secs(10), "c out of sync", || !in_sync_ids(&a).contains(&3));
    assert!(produce_acks(&a, "t", 0, &["two".into()], Acks::All).is_ok());
    // Once its lease is gone, the dead node can be forgotten and no longer appears.
    wait_for(Duration::from_secs(10), "forget c", || http(&a.admin, "DELETE", "/api/nodes/3", None, None).0 == 204);
    assert!(nodes_view(&a).iter().all(|node| node["id"] != 3));
    assert!(produce_acks(&a, "t", 0, &["three".into()], Acks::All).is_ok());

    // b dies too: one in-sync replica is fewer than min_insync_replicas = 2.
    b.kill();
    wait_for(Duration::from_secs(10), "b out of sync", || !in_sync_ids(&a).contains(&2));
    assert_eq!(produce_acks(&a, "t", 0, &["four".into()], Acks::All).unwrap_err(), ErrorCode::NotEnoughReplicas);
    assert!(produce_acks(&a, "t", 0, &["five".into()], Acks::Leader).is_ok(), "acks=leader does not need the ISR");
    let (_, records) = read_partition(&a, "t", 0);
    let values: Vec<&str> = records.iter().map(|(_, value)| value.as_str()).collect();
    assert_eq!(values, ["one", "two", "three", "five"], "the refused batch was never written");
}

#[test]
fn a_stopped_follower_is_cut_off_without_slowing_the_leader_and_catches_up_after_it_resumes() {
    let cluster = cluster_with(1_000, 1);
    let members: Vec<_> = ["a", "b", "c"].iter().map(|name| cluster.member(name)).collect();
    let a = cluster.start(&members[0]);
    wait_for_role(&a, "leader");
    let (_b, c) = (cluster.start(&members[1]), cluster.start(&members[2]));
    wait_all_in_sync(&a, 3);
    create_topic(&a, "load");
    let values: Vec<String> = (0..100).map(|i| format!("{i:0>1000}")).collect();
    let measure = |duration: Duration| -> (u64, Duration) {
        let started = Instant::now();
        let (mut batches, mut worst) = (0u64, Duration::ZERO);
        while started.elapsed() < duration {
            let sent = Instant::now();
            produce_acks(&a, "load", (batches % 2) as u32, &values, Acks::All).expect("acks=all keeps working");
            worst = worst.max(sent.elapsed());
            batches += 1;
        }
        (batches, worst)
    };
    let (before, before_worst) = measure(Duration::from_secs(2));

    // SAFETY: signals to our own child process.
    unsafe { libc::kill(c.pid() as i32, libc::SIGSTOP) };
    let stopped = Instant::now();
    let (during, during_worst) = measure(Duration::from_secs(4));
    wait_for(Duration::from_secs(10), "c out of sync", || !in_sync_ids(&a).contains(&3));
    let view = nodes_view(&a);
    let c_view = view.iter().find(|node| node["id"] == 3).unwrap();
    assert_eq!(c_view["connected"], false, "the stopped follower was disconnected: {c_view}");
    assert!(c_view["lag_records"].as_u64().unwrap() > 0, "{c_view}");
    let cut_off = stopped.elapsed();
    let (after, after_worst) = measure(Duration::from_secs(2));
    eprintln!(
        "slow follower: 100 KiB acks=all batches/s before {:.0} (worst {before_worst:?}), while c is stopped \
         {:.0} (worst {during_worst:?}), after it is cut off {:.0} (worst {after_worst:?}); c out of the ISR {cut_off:?} \
         after SIGSTOP",
        before as f64 / 2.0,
        during as f64 / 4.0,
        after as f64 / 2.0
    );
    assert!(after > 0 && during > 0);

    // SAFETY: as above.
    unsafe { libc::kill(c.pid() as i32, libc::SIGCONT) };
    wait_for(Duration::from_secs(20), "c back in sync", || in_sync_ids(&a).contains(&3));
    for partition in 0..2 {
        let end = high_watermark(&a, "load", partition).unwrap();
        wait_for(Duration::from_secs(10), "c caught up", || high_watermark(&c, "load", partition) == Some(end));
        assert!(read_partition(&c, "load", partition).0 == read_partition(&a, "load", partition).0);
    }
    let metrics = http(&a.admin, "GET", "/metrics", None, None).1;
    assert!(!metrics.contains("ringlog_follower_slow_disconnects_total{follower=\"3\"} 0"), "counted: {metrics}");
}

/// The acknowledgements a CLI producer printed: (partition, base_offset, count).
fn read_acks(output: &str) -> Vec<(u64, u64, u64)> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|ack| {
            (ack["partition"].as_u64().unwrap(), ack["base_offset"].as_u64().unwrap(), ack["count"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn acknowledged_records_survive_repeated_leader_kills_exactly_once_at_their_offsets() {
    let cluster = cluster_with(2_000, 1);
    let members: Vec<_> = ["a", "b", "c"].iter().map(|name| cluster.member(name)).collect();
    let mut nodes: Vec<Option<Node>> = members.iter().map(|_| None).collect();
    nodes[0] = Some(cluster.start(&members[0]));
    wait_for_role(nodes[0].as_ref().unwrap(), "leader");
    nodes[1] = Some(cluster.start(&members[1]));
    nodes[2] = Some(cluster.start(&members[2]));
    wait_all_in_sync(nodes[0].as_ref().unwrap(), 3);
    create_topic(nodes[0].as_ref().unwrap(), "ledger");
    let servers: Vec<String> = nodes.iter().map(|node| node.as_ref().unwrap().address.clone()).collect();

    let mut producer = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["produce", "ledger", "--acks", "all", "--json", "--batch", "20", "--retry-ms", "60000"])
        .args(["--server", &servers.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = producer.stdin.take().unwrap();
    let stdout = producer.stdout.take().unwrap();
    let acks_reader = std::thread::spawn(move || {
        let mut lines = String::new();
        for line in BufReader::new(stdout).lines() {
            lines.push_str(&line.unwrap());
            lines.push('\n');
        }
        lines
    });
    let mut next_value = 0u64;
    let mut feed = |stdin: &mut std::process::ChildStdin, seconds: f64| {
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        while Instant::now() < until {
            for _ in 0..20 {
                writeln!(stdin, "v{next_value}").unwrap();
                next_value += 1;
            }
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    feed(&mut stdin, 1.0);
    let mut failovers = Vec::new();
    for round in 0..3 {
        let leader_index = (0..3)
            .find(|&index| nodes[index].as_ref().is_some_and(|node| health(node)["role"] == "leader"))
            .expect("a leader");
        let killed_at = Instant::now();
        nodes[leader_index].take().unwrap().kill();
        feed(&mut stdin, 0.5);
        let new_leader = wait_for(Duration::from_secs(20), "a new leader", || {
            nodes.iter().flatten().any(|node| health(node)["role"] == "leader")
        });
        failovers.push(killed_at.elapsed().min(new_leader + Duration::from_millis(500)));
        feed(&mut stdin, 1.5);
        // Bring the killed node back (it truncates anything it alone had).
        nodes[leader_index] = Some(cluster.start(&members[leader_index]));
        if round == 1 {
            // Kill the node that just restarted, again, while it catches up.
            std::thread::sleep(Duration::from_millis(300));
            nodes[leader_index].take().unwrap().kill();
            nodes[leader_index] = Some(cluster.start(&members[leader_index]));
        }
        feed(&mut stdin, 1.0);
    }
    drop(stdin);
    let status = producer.wait().unwrap();
    let acks = read_acks(&acks_reader.join().unwrap());
    assert!(status.success(), "the producer survived every failover: {status:?}");
    let produced = next_value;
    let acked: u64 = acks.iter().map(|(_, _, count)| count).sum();
    assert_eq!(acked, produced, "every line was acknowledged");
    eprintln!("failover: {} rounds, new leader within {failovers:?}; {produced} records acknowledged", failovers.len());

    let leader = nodes.iter().flatten().find(|node| health(node)["role"] == "leader").expect("a leader");
    wait_all_in_sync(leader, 3);
    let mut by_partition: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for (partition, base, count) in &acks {
        by_partition.entry(*partition).or_default().push((*base, *count));
    }
    for (&partition, ranges) in &by_partition {
        let partition = partition as u32;
        let end = high_watermark(leader, "ledger", partition).unwrap();
        let (leader_bytes, records) = read_partition(leader, "ledger", partition);
        assert!(records.iter().enumerate().all(|(index, (offset, _))| *offset == index as u64), "dense offsets");
        let mut seen = HashMap::new();
        for (offset, value) in &records {
            assert!(seen.insert(value.clone(), *offset).is_none(), "{value} appears twice in partition {partition}");
        }
        for &(base, count) in ranges {
            for offset in base..base + count {
                let (_, value) = &records[offset as usize];
                assert!(value.starts_with('v'), "acknowledged offset {offset} holds {value}");
            }
        }
        for node in nodes.iter().flatten() {
            wait_for(Duration::from_secs(15), "every replica at the leader's high watermark", || {
                high_watermark(node, "ledger", partition) == Some(end)
            });
            assert!(read_partition(node, "ledger", partition).0 == leader_bytes, "replica {} differs", node.address);
        }
    }
    let total: usize = (0..by_partition.len() as u32).map(|p| read_partition(leader, "ledger", p).1.len()).sum();
    assert_eq!(total as u64, produced, "each acknowledged record exactly once, nothing else");
}
