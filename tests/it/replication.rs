//! Replication with real etcd and three real `ringlog serve` processes:
//! identical logs on every replica, min_insync_replicas, slow followers,
//! forgetting, and lossless failover under acks=all.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringlog::protocol::{Acks, ErrorCode, ErrorResponse, Request, Response, TopicSettings};

use crate::admin::{http, json};
use crate::cluster::{health, wait_for, wait_for_role, Cluster};
use crate::common::incompressible;
use crate::fixtures::{create_topic, create_topic_with, in_sync_ids, nodes_view, wait_all_in_sync};
use crate::node::{batch, fetch_all, list_offsets, produce_request, Node};

fn produce_acks(
    node: &Node,
    topic: &str,
    partition: u32,
    values: &[String],
    acks: Acks,
) -> Result<Response, ErrorCode> {
    node.client().call(produce_request(topic, partition, acks, values)).map_err(|error| error.code)
}

/// Every record (offset, value) of a partition as `node` serves it, up to its high watermark.
fn read_partition(node: &Node, topic: &str, partition: u32) -> (Vec<u8>, Vec<(u64, String)>) {
    read_partition_from(node, topic, partition, 0)
}

fn high_watermark(node: &Node, topic: &str, partition: u32) -> Option<u64> {
    list_offsets(node, topic, partition).map(|offsets| offsets.high_watermark)
}

#[test]
fn acks_all_records_are_on_every_follower_with_identical_offsets_and_bytes() {
    let cluster = Cluster::with_replication(5_000, 1);
    let (_, [a, b, c]) = cluster.start_in_sync();
    create_topic(&a, "orders", 3);
    let mut expected_end = [0u64; 3];
    let mut noise = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..60u32 {
        let partition = round % 3;
        // Every other round incompressible: answers go both lz4 and raw.
        let filler = |noise: &mut u64| if round % 2 == 0 { "x".repeat(100) } else { incompressible(noise, 100) };
        let values: Vec<String> = (0..50).map(|i| format!("r{round}-{i}-{}", filler(&mut noise))).collect();
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
    // Followers in step read the same ranges: the second is sent the body
    // the first was (and gets the same bytes, checked above).
    let shared: f64 = [2, 3]
        .iter()
        .filter_map(|id| metric(&a, &format!("ringlog_follower_shared_answer_bytes_total{{follower=\"{id}\"}}")))
        .sum();
    assert!(shared > 0.0, "no follower was sent an answer another one had: {metrics}");
    assert!(metrics.contains("ringlog_follower_compression_ratio{follower=\"3\"}"));
    for follower in [2, 3] {
        let name = format!("ringlog_follower_queue_bytes{{follower=\"{follower}\"}}");
        wait_for(Duration::from_secs(5), "idle followers have nothing queued", || metric(&a, &name) == Some(0.0));
    }
}

/// The value of one sample in a node's /metrics.
fn metric(node: &Node, sample: &str) -> Option<f64> {
    let text = http(&node.admin, "GET", "/metrics", None, None).1;
    text.lines().find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

#[test]
fn min_insync_replicas_refuses_acks_all_and_a_forgotten_dead_node_stops_counting() {
    // A long lag bound: a hung replica counts in the ISR for 30 s unless forgotten.
    let cluster = Cluster::with_replication(30_000, 2);
    let (_, [a, b, c]) = cluster.start_in_sync();
    create_topic(&a, "t", 2);
    assert!(produce_acks(&a, "t", 0, &["one".into()], Acks::All).is_ok());

    // c hangs for good: its lease expires, but it is still in the in-sync
    // set (its connection is open and lag_max has not passed), so every
    // acks=all produce would wait for it.
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(c.pid() as i32, libc::SIGSTOP) };
    wait_for(Duration::from_secs(10), "c's registration to expire", || {
        cluster.etcd.get("ringlog/nodes/3").unwrap().is_none()
    });
    assert!(in_sync_ids(&a).contains(&3), "c still counts before it is forgotten");
    // Forgetting it removes it from the set that counts, long before lag_max.
    assert_eq!(http(&a.admin, "DELETE", "/api/nodes/3", None, None).0, 204);
    wait_for(Duration::from_secs(5), "c no longer counted", || !in_sync_ids(&a).contains(&3));
    assert!(nodes_view(&a).iter().all(|node| node["id"] != 3));
    let started = Instant::now();
    assert!(produce_acks(&a, "t", 0, &["two".into()], Acks::All).is_ok());
    assert!(started.elapsed() < Duration::from_secs(5), "acks=all did not wait for c: {:?}", started.elapsed());

    // b dies too: one in-sync replica is fewer than min_insync_replicas = 2.
    b.kill();
    wait_for(Duration::from_secs(10), "b out of sync", || !in_sync_ids(&a).contains(&2));
    assert_eq!(produce_acks(&a, "t", 0, &["three".into()], Acks::All).unwrap_err(), ErrorCode::NotEnoughReplicas);
    assert!(produce_acks(&a, "t", 0, &["four".into()], Acks::Leader).is_ok(), "acks=leader does not need the ISR");
    let (_, records) = read_partition(&a, "t", 0);
    let values: Vec<&str> = records.iter().map(|(_, value)| value.as_str()).collect();
    assert_eq!(values, ["one", "two", "four"], "the refused batch was never written");
    c.kill();
}

#[test]
fn a_stopped_follower_is_cut_off_without_slowing_the_leader_and_catches_up_after_it_resumes() {
    let cluster = Cluster::with_replication(1_000, 1);
    let (_, [a, _b, c]) = cluster.start_in_sync();
    create_topic(&a, "load", 2);
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
    // Answers queued for the cut-off connection were dropped with it; the
    // gauge must not keep counting them.
    wait_for(Duration::from_secs(5), "c's queued answers released", || {
        metric(&a, "ringlog_follower_queue_bytes{follower=\"3\"}") == Some(0.0)
    });
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
    let cluster = Cluster::with_replication(2_000, 1);
    let (members, started) = cluster.start_in_sync::<3>();
    let mut nodes: Vec<Option<Node>> = started.into_iter().map(Some).collect();
    create_topic(nodes[0].as_ref().unwrap(), "ledger", 2);
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
            let lines: String = (next_value..next_value + 20).map(|value| format!("v{value}\n")).collect();
            if stdin.write_all(lines.as_bytes()).and_then(|()| stdin.flush()).is_err() {
                return; // the producer exited; its status and stderr are checked below
            }
            next_value += 20;
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
    let mut errors = String::new();
    std::io::Read::read_to_string(&mut producer.stderr.take().unwrap(), &mut errors).unwrap();
    assert!(status.success(), "the producer survived every failover: {status:?} {errors}");
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

#[test]
fn malformed_and_unauthenticated_replication_connections_are_refused_without_harm() {
    use std::io::Read;
    use std::net::TcpStream;
    let cluster = Cluster::with_replication(5_000, 1);
    let (members, [a, b]) = cluster.start_in_sync();
    create_topic(&a, "t", 2);
    let registration: serde_json::Value =
        serde_json::from_str(&cluster.etcd.get("ringlog/nodes/1").unwrap().unwrap()).unwrap();
    let replication = registration["replication"].as_str().unwrap().to_string();
    // Sends the frames; returns the answer frames and whether the leader
    // closed the connection (rather than the read timing out).
    let exchange = |frames: &[Vec<u8>]| -> (Vec<Vec<u8>>, bool) {
        let mut stream = TcpStream::connect(&replication).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for frame in frames {
            let _ = stream.write_all(frame);
        }
        let mut answer = Vec::new();
        let closed = stream.read_to_end(&mut answer).is_ok();
        let mut answers = Vec::new();
        let mut rest = &answer[..];
        while rest.len() >= 4 {
            let length = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(rest.len() >= 4 + length, "a whole answer frame: {answer:?}");
            answers.push(rest[4..4 + length].to_vec());
            rest = &rest[4 + length..];
        }
        assert!(rest.is_empty(), "only whole frames: {answer:?}");
        (answers, closed)
    };
    let frame = |request: &Request| {
        let mut out = Vec::new();
        ringlog::protocol::encode_request(7, request, &mut out);
        out
    };
    let refusal = |api_key, answer: &[u8]| -> ErrorResponse {
        match ringlog::protocol::decode_response(api_key, answer) {
            Ok((_, Err(error))) => error,
            other => panic!("an error answer, not {other:?}"),
        }
    };
    let fetch = Request::ReplicaFetch {
        replica_id: 2,
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1024,
        max_wait_ms: 0,
    };
    // Garbage: an oversized length prefix is refused before allocation.
    let (answers, closed) = exchange(&[vec![0xff; 64]]);
    assert!(closed, "garbage closes the connection");
    assert_eq!(answers.len(), 1, "one error answer");
    assert_eq!(refusal(ringlog::protocol::ApiKey::ReplicaFetch, &answers[0]).code, ErrorCode::RecordTooLarge);
    // A read without a handshake, a client API: each answered with the reason, then closed.
    for (request, reason) in [(&fetch, "not authenticated"), (&Request::ListTopics, "replication APIs only")] {
        let (answers, closed) = exchange(&[frame(request)]);
        assert!(closed, "{reason}: closed");
        assert_eq!(answers.len(), 1, "{reason}: one answer");
        let error = refusal(request.api_key(), &answers[0]);
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{error:?}");
        assert!(error.message.contains(reason), "{error:?}");
        assert_eq!(u32::from_le_bytes(answers[0][..4].try_into().unwrap()), 7, "answers the request's id");
    }
    // A wrong proof: the challenge, then the refusal, then the close.
    let hello = Request::ReplicaHello { node_id: 2 };
    let (answers, closed) = exchange(&[frame(&hello), frame(&Request::ReplicaAuth { proof: vec![0; 32] })]);
    assert!(closed, "a wrong proof closes the connection");
    assert_eq!(answers.len(), 2, "challenge and refusal");
    let challenge = ringlog::protocol::decode_response(hello.api_key(), &answers[0]).unwrap().1;
    assert!(matches!(challenge, Ok(Response::ReplicaChallenge { .. })), "{challenge:?}");
    let error = refusal(ringlog::protocol::ApiKey::ReplicaAuth, &answers[1]);
    assert_eq!(error.code, ErrorCode::InvalidRequest);
    assert!(error.message.contains("authentication failed"), "{error:?}");
    // The client listener does not serve replication APIs either.
    let refused = a.client().call(fetch);
    assert_eq!(refused.unwrap_err().code, ErrorCode::InvalidRequest);
    // Nothing else was affected.
    assert!(produce_acks(&a, "t", 0, &["still fine".into()], Acks::All).is_ok());
    assert_eq!(in_sync_ids(&a), [1, 2]);
    let end = high_watermark(&a, "t", 0).unwrap();
    wait_for(Duration::from_secs(5), "b keeps replicating", || high_watermark(&b, "t", 0) == Some(end));
    assert!(crate::cluster::log_of(&members[0]).contains("bad proof"));
}

#[test]
fn a_deposed_leader_truncates_what_only_it_had_and_idempotent_retries_keep_their_offsets() {
    let cluster = Cluster::with_replication(60_000, 1);
    let (members, [a, b]) = cluster.start_in_sync();
    create_topic(&a, "t", 2);
    let producer_id = match a.client().call(Request::InitProducer) {
        Ok(Response::InitProducer { producer_id }) => producer_id,
        other => panic!("{other:?}"),
    };
    let idempotent = |sequence: u32, value: &str| Request::Produce {
        topic: "t".into(),
        partition: 0,
        acks: Acks::All,
        batch: batch(&[value.to_string()], Some((producer_id, sequence))),
    };
    let Ok(Response::Produce { base_offset: first, .. }) = a.client().call(idempotent(0, "committed")) else {
        panic!("first produce")
    };
    wait_for(Duration::from_secs(5), "b has it", || high_watermark(&b, "t", 0) == Some(1));
    let commit = Request::CommitOffset { group: "g".into(), topic: "t".into(), partition: 0, offset: 1 };
    assert!(a.client().call(commit).is_ok());
    let group_offset =
        |node: &Node| node.client().call(Request::FetchOffset { group: "g".into(), topic: "t".into(), partition: 0 });
    wait_for(Duration::from_secs(5), "b mirrors the group's offset", || {
        matches!(group_offset(&b), Ok(Response::FetchOffset(ringlog::protocol::CommittedState::Valid(1))))
    });

    // b stops; a accepts writes only it has (acks=leader), then dies.
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(b.pid() as i32, libc::SIGSTOP) };
    // b's outstanding read is answered with the first record (it waits in
    // b's socket buffer and b applies it when it resumes); the second is on a alone.
    // Stamped later than every record before them (1_700_000_000_000).
    let only_on_a_ms = 1_800_000_000_000;
    let only_on_a = |value: &str| {
        let mut builder = ringlog::storage::batch::BatchBuilder::new();
        builder.push(only_on_a_ms, None, value.as_bytes(), &[]);
        let batch = builder.finish().to_vec();
        a.client().call(Request::Produce { topic: "t".into(), partition: 0, acks: Acks::Leader, batch })
    };
    assert!(only_on_a("only-on-a-1").is_ok());
    std::thread::sleep(Duration::from_millis(300));
    assert!(only_on_a("only-on-a-2").is_ok());
    // A search by time finds only what consumers may read: the records
    // past the high watermark are not found, as they are not served.
    assert_eq!(high_watermark(&a, "t", 0), Some(1));
    let find = |timestamp_ms| Request::FindOffset { topic: "t".into(), partition: 0, timestamp_ms };
    assert_eq!(a.client().call(find(only_on_a_ms)), Ok(Response::FindOffset { offset: None }));
    assert_eq!(a.client().call(find(0)), Ok(Response::FindOffset { offset: Some(0) }));
    let a_epoch = health(&a)["leader_epoch"].as_u64().unwrap();
    a.kill();
    // SAFETY: as above.
    unsafe { libc::kill(b.pid() as i32, libc::SIGCONT) };
    wait_for(Duration::from_secs(20), "b leads", || health(&b)["role"] == "leader");
    assert!(health(&b)["leader_epoch"].as_u64().unwrap() > a_epoch);

    // The producer retries its committed batch against the new leader: same offset, not written twice.
    match b.client().call(idempotent(0, "committed")) {
        Ok(Response::Produce { base_offset, duplicate, .. }) => assert_eq!((base_offset, duplicate), (first, true)),
        other => panic!("retry: {other:?}"),
    }
    assert!(produce_acks(&b, "t", 0, &["after-failover".into()], Acks::All).is_ok());

    // a comes back as a follower and drops the suffix b never had.
    let a = cluster.start(&members[0]);
    wait_for_role(&a, "follower");
    let end = high_watermark(&b, "t", 0).unwrap();
    wait_for(Duration::from_secs(15), "a caught up", || high_watermark(&a, "t", 0) == Some(end));
    let (a_bytes, a_records) = read_partition(&a, "t", 0);
    let values: Vec<&str> = a_records.iter().map(|(_, value)| value.as_str()).collect();
    assert_eq!(values.first(), Some(&"committed"));
    assert_eq!(values.last(), Some(&"after-failover"));
    assert!(!values.contains(&"only-on-a-2"), "the divergent record is gone: {values:?}");
    assert_eq!(values.iter().filter(|value| **value == "committed").count(), 1);
    assert!(a_bytes == read_partition(&b, "t", 0).0, "a and b hold the same log");
    assert!(crate::cluster::log_of(&members[0]).contains("truncating a divergent suffix"));
}

/// Every (offset, value) and the raw bytes a node serves from `from` up to its high watermark.
fn read_partition_from(node: &Node, topic: &str, partition: u32, from: u64) -> (Vec<u8>, Vec<(u64, String)>) {
    fetch_all(&mut node.client(), topic, partition, from)
}

fn log_start(node: &Node, topic: &str, partition: u32) -> Option<u64> {
    list_offsets(node, topic, partition).map(|offsets| offsets.log_start_offset)
}

#[test]
fn a_replica_with_a_new_disk_behind_the_leaders_log_start_resets_catches_up_and_rejoins_the_isr() {
    let mut cluster = Cluster::with_replication(2_000, 1);
    cluster.environment.push(("RINGLOG_LIMITS_RETENTION_CHECK_INTERVAL_MS".into(), "100".into()));
    let (members, [a, _b, c]) = cluster.start_in_sync();
    let settings = TopicSettings { partitions: 1, retention_bytes: 16_384, retention_ms: 0, segment_bytes: 4096 };
    create_topic_with(&a, "short", settings);
    // c's disk dies: the cluster goes on and retention moves the log start.
    c.kill();
    std::fs::remove_dir_all(&members[2].data_dir).unwrap();
    std::fs::create_dir_all(&members[2].data_dir).unwrap();
    for round in 0..60u32 {
        let values: Vec<String> = (0..10).map(|i| format!("r{round}-{i}-{}", "x".repeat(100))).collect();
        produce_acks(&a, "short", 0, &values, Acks::All).expect("acks=all with a and b");
    }
    wait_for(Duration::from_secs(10), "retention to move the log start", || {
        log_start(&a, "short", 0).is_some_and(|start| start > 0)
    });
    let end = high_watermark(&a, "short", 0).unwrap();

    // A replacement disk: the node starts empty, under a new id.
    let c = cluster.start(&members[2]);
    let id = wait_for_role(&c, "follower");
    wait_for(Duration::from_secs(30), "the replaced replica in sync", || in_sync_ids(&a).contains(&id));
    wait_for(Duration::from_secs(10), "it caught up", || high_watermark(&c, "short", 0) == Some(end));
    let from = log_start(&a, "short", 0).unwrap().max(log_start(&c, "short", 0).unwrap());
    assert!(from > 0, "the replica starts past offset 0");
    let (leader_bytes, leader_records) = read_partition_from(&a, "short", 0, from);
    let (bytes, records) = read_partition_from(&c, "short", 0, from);
    assert_eq!(records.first().map(|(offset, _)| *offset), Some(from));
    assert_eq!(records.last().map(|(offset, _)| *offset), Some(end - 1));
    assert_eq!(records, leader_records);
    assert!(bytes == leader_bytes, "the replica holds the leader's bytes from {from}");
}

/// Retention never moves a leader's log start past its high watermark:
/// records the in-sync followers have not acknowledged stay, however
/// small the retention. Past it, a lagging follower found the log start
/// beyond its position, reset to it, and the high watermark passed
/// records no follower ever held.
#[test]
fn retention_never_moves_the_log_start_past_the_high_watermark() {
    // Stopped followers stay in the ISR for a minute: the watermark stays.
    let mut cluster = Cluster::with_replication(60_000, 1);
    cluster.environment.push(("RINGLOG_LIMITS_RETENTION_CHECK_INTERVAL_MS".into(), "100".into()));
    let (_, [a, b, c]) = cluster.start_in_sync();
    let settings = TopicSettings { partitions: 1, retention_bytes: 16_384, retention_ms: 0, segment_bytes: 4096 };
    create_topic_with(&a, "held", settings);
    let values = |round: u32| -> Vec<String> { (0..10).map(|i| format!("r{round}-{i}-{}", "x".repeat(100))).collect() };
    produce_acks(&a, "held", 0, &values(0), Acks::All).expect("acks=all with b and c");
    let held = high_watermark(&a, "held", 0).unwrap();
    // SAFETY: signals to our own child processes.
    unsafe {
        libc::kill(b.pid() as i32, libc::SIGSTOP);
        libc::kill(c.pid() as i32, libc::SIGSTOP);
    }
    for round in 1..60u32 {
        produce_acks(&a, "held", 0, &values(round), Acks::Leader).expect("acks=1 while both followers stop");
    }
    // Ten retention passes over many sealed segments past the watermark.
    std::thread::sleep(Duration::from_secs(1));
    let (start, watermark) = (log_start(&a, "held", 0).unwrap(), high_watermark(&a, "held", 0).unwrap());
    // SAFETY: as above.
    unsafe {
        libc::kill(b.pid() as i32, libc::SIGCONT);
        libc::kill(c.pid() as i32, libc::SIGCONT);
    }
    assert_eq!(watermark, held, "no follower acknowledged more");
    assert!(start <= watermark, "the log start {start} passed the high watermark {watermark}");
    // Once the followers catch up, retention goes on.
    wait_for(Duration::from_secs(20), "retention past the old watermark", || {
        log_start(&a, "held", 0).is_some_and(|start| start > held)
    });
}

#[test]
fn a_follower_whose_fsync_failed_never_acknowledges_the_records_it_could_not_make_durable() {
    let mut cluster = Cluster::with_replication(1_000, 2);
    let members: Vec<_> = ["a", "b"].iter().map(|name| cluster.member(name)).collect();
    let a = cluster.start(&members[0]);
    wait_for_role(&a, "leader");
    // b's disk accepts the writes of "t"/0 but its second fsync fails.
    cluster.environment.push(("RINGLOG_FAULT_INJECT".into(), "t/0:fsync:1".into()));
    let _b = cluster.start(&members[1]);
    wait_all_in_sync(&a, 2);
    create_topic(&a, "t", 2);
    assert!(produce_acks(&a, "t", 0, &["durable on both".into()], Acks::All).is_ok());
    std::thread::sleep(Duration::from_millis(300));
    // b holds "only written" in its log but never made it durable: it must
    // not be acknowledged as replicated, however b's session goes on.
    let outcome = produce_acks(&a, "t", 0, &["only written on b".into()], Acks::All);
    assert!(
        matches!(outcome, Err(ErrorCode::NotEnoughReplicas | ErrorCode::Timeout)),
        "acknowledged without b having it durable: {outcome:?}"
    );
    assert!(crate::cluster::log_of(&members[1]).contains("fdatasync"), "b's fsync failed");
}

/// A topic deleted and created again under its name while a replica was
/// down is a new topic to that replica when it returns (its incarnation
/// differs): the replica drops its old partitions and copies the new ones.
/// Known by name alone, it kept the old records below the new log's end
/// (the divergence check saw the same leader epoch on both) and
/// acknowledged offsets whose records differed from the leader's.
#[test]
fn a_topic_created_again_while_a_replica_was_down_is_copied_afresh() {
    let cluster = Cluster::with_replication(2_000, 1);
    let (members, [a, _b, c]) = cluster.start_in_sync();
    // Two partitions: one on each of the nodes' two shards (only shard 0
    // mirrors topics; the other must not follow its old partition meanwhile).
    replicate_old_topic(&a, &c, "again", 20);
    c.kill();
    wait_for(Duration::from_secs(10), "c out of sync", || !in_sync_ids(&a).contains(&3));
    a.client().call(Request::DeleteTopic { name: "again".into() }).expect("delete");
    create_topic(&a, "again", 2);
    for round in 0..4u32 {
        produce_acks(&a, "again", round % 2, &incarnation_values("new", round), Acks::All)
            .expect("acks=all with a and b");
    }
    let c = cluster.start(&members[2]);
    wait_for(Duration::from_secs(30), "c back in sync", || in_sync_ids(&a).contains(&3));
    for partition in 0..2 {
        let end = high_watermark(&a, "again", partition).unwrap();
        assert!(end < 100, "the new partition is shorter than the old one c holds");
    }
    holds_only_the_new_topic(&a, &c, "again");
}

/// Ten values of one round, named for the topic's incarnation ("old" or "new").
fn incarnation_values(prefix: &str, round: u32) -> Vec<String> {
    (0..10).map(|i| format!("{prefix}-{round}-{i}-{}", "z".repeat(100))).collect()
}

/// Create `topic` with 2 partitions, produce `rounds` rounds of "old"
/// values with acks=all, and wait until `follower` holds them all.
fn replicate_old_topic(leader: &Node, follower: &Node, topic: &str, rounds: u32) {
    create_topic(leader, topic, 2);
    for round in 0..rounds {
        produce_acks(leader, topic, round % 2, &incarnation_values("old", round), Acks::All).expect("acks=all");
    }
    for partition in 0..2 {
        let end = high_watermark(leader, topic, partition).unwrap();
        wait_for(Duration::from_secs(10), "the follower has the old topic", || {
            high_watermark(follower, topic, partition) == Some(end)
        });
    }
}

/// `follower` catches up on both partitions of `topic` and holds the
/// leader's bytes, none of the values of the topic's old incarnation.
fn holds_only_the_new_topic(leader: &Node, follower: &Node, topic: &str) {
    for partition in 0..2 {
        let end = high_watermark(leader, topic, partition).unwrap();
        wait_for(Duration::from_secs(10), "the follower caught up", || {
            high_watermark(follower, topic, partition) == Some(end)
        });
        let (leader_bytes, leader_records) = read_partition(leader, topic, partition);
        let (bytes, records) = read_partition(follower, topic, partition);
        assert!(records.iter().all(|(_, value)| value.starts_with("new-")), "nothing of the old topic");
        assert_eq!(records, leader_records);
        assert!(bytes == leader_bytes, "the follower holds the leader's bytes of partition {partition}");
    }
}

#[test]
fn a_topic_deleted_and_created_again_on_the_leader_closes_the_followers_connections_opened_before() {
    let cluster = Cluster::with_replication(2_000, 1);
    let (_, [a, b]) = cluster.start_in_sync();
    replicate_old_topic(&a, &b, "replaced", 10);
    let closed = r#"ringlog_follower_topic_deletion_disconnects_total{follower="2"}"#;
    assert_eq!(metric(&a, closed), Some(0.0));
    // Deleted and created again at once, while b is connected: b's next
    // request on a connection that saw the old incarnation is refused.
    a.client().call(Request::DeleteTopic { name: "replaced".into() }).expect("delete");
    create_topic(&a, "replaced", 2);
    for round in 0..4u32 {
        produce_acks(&a, "replaced", round % 2, &incarnation_values("new", round), Acks::All).expect("acks=all");
    }
    wait_for(Duration::from_secs(10), "b's connections closed", || {
        metric(&a, closed).is_some_and(|count| count >= 1.0)
    });
    holds_only_the_new_topic(&a, &b, "replaced");
}

#[test]
fn a_follower_connection_older_than_a_topics_deletion_acknowledges_nothing_of_the_topic_created_again() {
    // A long lag bound: the test's idle connections are not cut off first.
    let cluster = Cluster::with_replication(10_000, 1);
    let (_, [a]) = cluster.start_in_sync();
    let values: Vec<String> = (0..10).map(|i| format!("value-{i}")).collect();
    create_topic(&a, "again", 1);
    produce_acks(&a, "again", 0, &values, Acks::Leader).expect("old records");
    // Followers (nodes 2 and 4) connected while the topic was the old one.
    let mut replica = cluster.replica_client(2);
    let mut single = cluster.replica_client(4);
    a.client().call(Request::DeleteTopic { name: "again".into() }).expect("delete");
    create_topic(&a, "again", 1);
    for _ in 0..3 {
        produce_acks(&a, "again", 0, &values, Acks::Leader).expect("new records");
    }
    let fetch = |replica_id: u64, offset: u64| Request::ReplicaFetchMany {
        replica_id,
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        partition_max_bytes: 1 << 20,
        partitions: vec![ringlog::protocol::ReplicaFetchPartition {
            topic: "again".into(),
            partition: 0,
            offset,
            high_watermark: None,
        }],
    };
    // Another follower's read begins the new partition's replication term
    // (which forgets positions recorded before it), so an acknowledgement
    // recorded next would stay.
    assert!(cluster.replica_client(3).call(fetch(3, 0)).is_ok());
    // Node 2's offset, from its copy of the old topic, lies inside the new one.
    replica.send(&fetch(2, 25));
    assert!(replica.receive_frame().is_err(), "the connection closes with nothing answered");
    let lag = r#"ringlog_follower_lag_records{follower="2"}"#;
    // Progress is published every 100 ms: an acknowledgement at 25 would show as 5.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(metric(&a, lag), Some(30.0), "no acknowledgement of the new topic's records");
    let closed = r#"ringlog_follower_topic_deletion_disconnects_total{follower="2"}"#;
    assert_eq!(metric(&a, closed), Some(1.0));
    // The same for a single-partition read, served on the partition's owner.
    let (topic, partition, offset, max_bytes, max_wait_ms) = ("again".to_string(), 0, 25, 1 << 20, 0);
    single.send(&Request::ReplicaFetch { replica_id: 4, topic, partition, offset, max_bytes, max_wait_ms });
    assert!(single.receive_frame().is_err(), "the connection closes with nothing answered");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(metric(&a, r#"ringlog_follower_lag_records{follower="4"}"#), Some(30.0));
    // A connection opened since is served, and its acknowledgement counts.
    let mut replica = cluster.replica_client(2);
    let Ok(Response::ReplicaFetchMany { partitions, .. }) = replica.call(fetch(2, 25)) else {
        panic!("a new connection is served")
    };
    assert!(
        partitions[0].error == ErrorCode::None && partitions[0].uncompressed_bytes > 0,
        "{:?}",
        partitions[0].error
    );
    wait_for(Duration::from_secs(5), "its acknowledgement counted", || metric(&a, lag) == Some(5.0));
}

#[test]
fn a_topic_deleted_while_it_replicates_leaves_the_followers_shards_serving() {
    let cluster = Cluster::with_replication(5_000, 1);
    let (_, [a, b]) = cluster.start_in_sync();
    let values: Vec<String> = (0..20).map(|i| format!("{i:0>2000}")).collect();
    for round in 0..6 {
        let topic = format!("doomed-{round}");
        create_topic(&a, &topic, 2);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2u32)
            .map(|partition| {
                let (node, topic, values, stop) = (a.address.clone(), topic.clone(), values.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut client = crate::node::Client::connect(&node);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if client.call(produce_request(&topic, partition, Acks::Leader, &values)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writers.into_iter().for_each(|writer| writer.join().unwrap());
        // Deleted on the leader while the follower is still catching up on it.
        a.client().call(Request::DeleteTopic { name: topic.clone() }).unwrap();
    }
    // Both of b's shards still replicate a new topic and answer reads.
    create_topic(&a, "after", 2);
    for partition in 0..2 {
        let Ok(Response::Produce { next_offset, .. }) =
            produce_acks(&a, "after", partition, &["alive".into()], Acks::All)
        else {
            panic!("acks=all on the new topic")
        };
        wait_for(Duration::from_secs(10), "b replicates the new topic", || {
            high_watermark(&b, "after", partition) == Some(next_offset)
        });
    }
}

fn connections_open(node: &Node) -> Option<f64> {
    metric(node, "ringlog_connections ")
}

#[test]
fn a_follower_that_stops_reading_is_cut_off_and_its_connection_closed_after_replica_lag_max_ms() {
    let cluster = Cluster::with_replication(1_000, 1);
    let (_, [a]) = cluster.start_in_sync();
    create_topic(&a, "big", 1);
    // Incompressible records, so the answers stay as large as the log.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..60 {
        let values: Vec<String> = (0..100).map(|_| incompressible(&mut x, 1000)).collect();
        produce_acks(&a, "big", 0, &values, Acks::Leader).unwrap();
    }
    // Nothing else connects to a from here on.
    wait_for(Duration::from_secs(5), "the producers' connections closed", || connections_open(&a) == Some(0.0));
    // A follower that authenticates, asks for far more than its socket
    // holds, then stops reading and sending (as a SIGSTOPped one does).
    let mut follower = cluster.replica_client(9);
    assert_eq!(connections_open(&a), Some(1.0));
    for _ in 0..8 {
        let fetch = Request::ReplicaFetch {
            replica_id: 9,
            topic: "big".into(),
            partition: 0,
            offset: 0,
            max_bytes: 4 << 20,
            max_wait_ms: 0,
        };
        follower.send(&fetch);
    }
    wait_for(Duration::from_secs(10), "the idle follower's connection closed", || connections_open(&a) == Some(0.0));
    drop(follower);
}

#[test]
fn a_forgotten_node_that_starts_again_gets_a_new_id_and_resynchronises_from_scratch() {
    let cluster = Cluster::with_replication(2_000, 1);
    let (members, [a, _b, c]) = cluster.start_in_sync();
    create_topic(&a, "t", 2);
    for round in 0..20u32 {
        let values: Vec<String> = (0..20).map(|i| format!("r{round}-{i}-{}", "y".repeat(200))).collect();
        produce_acks(&a, "t", round % 2, &values, Acks::All).expect("acks=all");
    }
    c.kill();
    wait_for(Duration::from_secs(10), "forget c", || http(&a.admin, "DELETE", "/api/nodes/3", None, None).0 == 204);

    // c comes back with its old disk: a new id, and none of its old logs trusted.
    let c = cluster.start(&members[2]);
    let id = wait_for_role(&c, "follower");
    assert_eq!(id, 4);
    wait_for(Duration::from_secs(20), "the returning node in sync", || in_sync_ids(&a).contains(&id));
    let mut log_bytes = 0;
    for partition in 0..2 {
        let end = high_watermark(&a, "t", partition).unwrap();
        wait_for(Duration::from_secs(10), "it caught up", || high_watermark(&c, "t", partition) == Some(end));
        let leader = read_partition(&a, "t", partition).0;
        assert!(read_partition(&c, "t", partition).0 == leader, "partition {partition} differs");
        log_bytes += leader.len();
    }
    let sent = metric(&a, "ringlog_follower_sent_uncompressed_bytes_total{follower=\"4\"}").unwrap_or(0.0);
    assert!(sent >= log_bytes as f64, "the leader sent node 4 its whole log again: {sent} of {log_bytes} bytes");
}

/// The same for a node forgotten while its process kept running (stopped
/// past its lease, forgotten, then continued): it starts each partition
/// over at its log start, not at the high watermark it had shown its
/// consumers, and fetches the whole log. Started at that watermark, it
/// joined the ISR without the records before it, and elected leader it
/// would have answered them out of range.
#[test]
fn a_node_forgotten_while_it_ran_resynchronises_the_whole_log() {
    let cluster = Cluster::with_replication(2_000, 1);
    let (_, [a, _b, c]) = cluster.start_in_sync();
    create_topic(&a, "t", 1);
    for round in 0..20u32 {
        let values: Vec<String> = (0..20).map(|i| format!("r{round}-{i}-{}", "y".repeat(200))).collect();
        produce_acks(&a, "t", 0, &values, Acks::All).expect("acks=all");
    }
    let end = high_watermark(&a, "t", 0).unwrap();
    // c's consumers were shown the whole log.
    wait_for(Duration::from_secs(10), "c shows the end", || high_watermark(&c, "t", 0) == Some(end));
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(c.pid() as i32, libc::SIGSTOP) };
    wait_for(Duration::from_secs(20), "forget c", || http(&a.admin, "DELETE", "/api/nodes/3", None, None).0 == 204);
    // SAFETY: as above.
    unsafe { libc::kill(c.pid() as i32, libc::SIGCONT) };
    wait_for(Duration::from_secs(30), "c back under a new id, in sync", || in_sync_ids(&a).iter().any(|id| *id > 3));
    wait_for(Duration::from_secs(10), "it caught up", || high_watermark(&c, "t", 0) == Some(end));
    assert_eq!(log_start(&c, "t", 0), Some(0), "the whole log, not from the watermark it had shown");
    assert!(read_partition(&c, "t", 0).0 == read_partition(&a, "t", 0).0, "the replica holds the leader's log");
}

/// What a consumer of `node` is shown as the high watermark of t/0, by the
/// client protocol and by the admin API: `Err` for a refusal, `Ok(None)`
/// for the admin API's `null` (not re-established yet).
fn shown_high_watermarks(node: &Node) -> Vec<Result<Option<u64>, ErrorCode>> {
    let listed = match node.client().call(Request::ListOffsets { topic: "t".into(), partition: 0 }) {
        Ok(Response::ListOffsets { high_watermark, .. }) => Ok(Some(high_watermark)),
        Ok(other) => panic!("{other:?}"),
        Err(error) => Err(error.code),
    };
    let fetched = match node.client().call(Request::Fetch {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
    }) {
        Ok(Response::Fetch { high_watermark, .. }) => Ok(Some(high_watermark)),
        Ok(other) => panic!("{other:?}"),
        Err(error) => Err(error.code),
    };
    let (status, body) = http(&node.admin, "GET", "/api/topics/t", None, None);
    let described = if status == 200 { Ok(json(&body)["partitions"][0]["high_watermark"].as_u64()) } else { Ok(None) };
    vec![listed, fetched, described]
}

#[test]
fn no_consumer_sees_the_high_watermark_fall_after_every_node_is_killed_and_one_restarts() {
    let cluster = Cluster::with_replication(3_000, 1);
    let (members, [a, b, c]) = cluster.start_in_sync();
    create_topic(&a, "t", 2);
    for index in 0..20 {
        assert!(produce_acks(&a, "t", 0, &[format!("record-{index}")], Acks::All).is_ok());
    }
    let shown = high_watermark(&a, "t", 0).unwrap();
    assert_eq!(shown, 20);
    // The whole cluster dies at once; the high watermark lived in memory.
    for node in [a, b, c] {
        node.kill();
    }
    // b alone comes back: a follower of a dead leader, then leader with two
    // dead in-sync followers until replica_lag_max_ms drops them.
    let b = cluster.start(&members[1]);
    let started = Instant::now();
    let (mut refusals, mut values) = (0, Vec::new());
    while started.elapsed() < Duration::from_secs(20) {
        for answer in shown_high_watermarks(&b) {
            match answer {
                Ok(Some(value)) => values.push(value),
                Ok(None) | Err(ErrorCode::NotReady) | Err(ErrorCode::NotLeader) => refusals += 1,
                Err(code) => panic!("unexpected refusal {code:?}"),
            }
        }
        assert!(values.iter().all(|&value| value >= shown), "the high watermark fell below {shown}: {values:?}");
        if values.len() >= 30 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refusals > 0, "the window before the high watermark is re-established was not observed");
    assert!(values.len() >= 30, "the high watermark was never re-established: {refusals} refusals");
    assert_eq!(health(&b)["role"], "leader");
    let (_, records) = read_partition(&b, "t", 0);
    assert_eq!(records.len(), 20, "every acknowledged record is served again");
}

#[test]
fn a_followers_first_read_of_a_new_topic_that_finds_it_behind_keeps_it_in_sync() {
    let lag_max = Duration::from_millis(5_000);
    let cluster = Cluster::with_replication(lag_max.as_millis() as u64, 1);
    let (_members, [a, b]) = cluster.start_in_sync();
    // Old enough a term that its start no longer counts as b's catch-up.
    let started = Instant::now();
    std::thread::sleep(lag_max + Duration::from_millis(500));
    // b stops with everything copied: it stays in sync for lag_max from here.
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(b.pid() as i32, libc::SIGSTOP) };
    // b counts as caught up as of the topic's opening, so lag_max after it
    // it is rightly dropped: the samples end well before.
    let sampled_until = Instant::now() + lag_max - Duration::from_millis(1_500);
    create_topic(&a, "fresh", 1);
    assert!(produce_acks(&a, "fresh", 0, &["first".into()], Acks::Leader).is_ok());
    // A consumer's look begins the term on the partition (its first look
    // in a term forgets every follower position, and would forget the
    // read below too). Its answer does not matter: `not_ready` while b,
    // counted and not yet read, holds the watermark.
    let _ = high_watermark(&a, "fresh", 0);
    // In b's name, the first read of the new topic: behind, by one record.
    let mut replica = cluster.replica_client(2);
    let fetch = Request::ReplicaFetch {
        replica_id: 2,
        topic: "fresh".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
    };
    assert!(matches!(replica.call(fetch), Ok(Response::ReplicaFetch { .. })));
    // Several ISR rounds (an election poll each, 100 ms in tests) pass
    // before b's next read; without the fix the first of them drops b.
    let read = Instant::now();
    let mut samples = 0;
    while Instant::now() < sampled_until {
        assert_eq!(in_sync_ids(&a), [1, 2], "b was dropped after its first read of the new topic");
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(b.pid() as i32, libc::SIGCONT) };
    let sampled = read.elapsed();
    eprintln!("b stayed in sync for {samples} samples over {sampled:?}, {:?} into the term", started.elapsed());
    assert!(sampled >= Duration::from_secs(1), "the machine was too slow to sample: {sampled:?}, {samples} samples");
    assert!(produce_acks(&a, "fresh", 0, &["second".into()], Acks::All).is_ok());
}

/// A consumer long-polling a partition whose high watermark is not
/// re-established (a new topic its stopped follower has not read yet)
/// does not hold a stopping leader: it is answered `not_ready` and the
/// node exits at once. (The stop made that wait ready at once, every
/// round: the shard spun until the poll's deadline.)
#[test]
fn a_poll_waiting_for_the_high_watermark_does_not_hold_a_stopping_node() {
    let cluster = Cluster::with_replication(30_000, 1);
    let (_members, [a, b]) = cluster.start_in_sync();
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(b.pid() as i32, libc::SIGSTOP) };
    // A look at the partition begins its term (here or in the gauges'
    // once a second): one begun before the record was durable would have
    // its high watermark at 0 established. Looked at after the produce,
    // it is not: b, counted and not yet read, holds it.
    let topic = (0..5)
        .map(|attempt| format!("fresh-{attempt}"))
        .find(|topic| {
            create_topic(&a, topic, 1);
            assert!(produce_acks(&a, topic, 0, &["first".into()], Acks::Leader).is_ok());
            high_watermark(&a, topic, 0).is_none()
        })
        .expect("a high watermark not re-established");
    let mut consumer = a.client();
    let fetch = Request::Fetch { topic, partition: 0, offset: 0, max_bytes: 1 << 20, max_wait_ms: 30_000 };
    consumer.send(&fetch);
    // b, in sync and not yet read, holds the high watermark back: the
    // poll waits for it to be established (for up to lag_max, 30 s).
    consumer.set_read_timeout(Duration::from_millis(500));
    assert!(consumer.receive_frame().is_err(), "the poll waits");
    consumer.set_read_timeout(Duration::from_secs(20));
    let stopped_at = Instant::now();
    let terminating = std::thread::spawn(move || a.terminate());
    let answer = consumer.receive_frame().unwrap();
    let answered_after = stopped_at.elapsed();
    let (_, outcome) = ringlog::protocol::decode_response(fetch.api_key(), &answer).unwrap();
    assert!(matches!(outcome, Err(ErrorResponse { code: ErrorCode::NotReady, .. })), "{outcome:?}");
    assert!(answered_after < Duration::from_secs(3), "answered {answered_after:?} after SIGTERM");
    assert_eq!(terminating.join().unwrap(), Some(0), "a clean exit");
    assert!(stopped_at.elapsed() < Duration::from_secs(8), "stopped in {:?}", stopped_at.elapsed());
    // SAFETY: as above.
    unsafe { libc::kill(b.pid() as i32, libc::SIGCONT) };
}

#[test]
fn an_acks_all_produce_waiting_for_a_stopped_follower_is_refused_at_once_when_the_leader_stops() {
    // lag_max 30 s: b, stopped, stays in the in-sync set that long, and
    // an acks=all produce would wait for it up to twice that.
    let cluster = Cluster::with_replication(30_000, 1);
    let (_members, [a, b]) = cluster.start_in_sync();
    create_topic(&a, "t", 1);
    assert!(produce_acks(&a, "t", 0, &["before".into()], Acks::All).is_ok());
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(b.pid() as i32, libc::SIGSTOP) };
    let mut producer = a.client();
    let produce = produce_request("t", 0, Acks::All, &["waits".to_string()]);
    producer.send(&produce);
    producer.set_read_timeout(Duration::from_millis(500));
    assert!(producer.receive_frame().is_err(), "the produce waits for b");
    // etcd hangs too (as with a lost quorum), long enough for a's next
    // etcd request to be waiting for its timeout (1 s here): the step-down
    // may not wait for it, nor for the lease to run out ("fenced").
    cluster.etcd.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(300));
    producer.set_read_timeout(Duration::from_secs(20));
    let a_address = a.address.clone();
    let stopped_at = Instant::now();
    let terminating = std::thread::spawn(move || a.terminate());
    let answer = producer.receive_frame().unwrap();
    let answered_after = stopped_at.elapsed();
    let (_, outcome) = ringlog::protocol::decode_response(produce.api_key(), &answer).unwrap();
    let Err(ErrorResponse { code: ErrorCode::NotLeader, leader, message }) = outcome else {
        panic!("not acknowledged, and the client told to look for the leader: {outcome:?}")
    };
    assert_ne!(leader, Some(a_address), "a node going away does not name itself the leader");
    assert!(message.contains("no leader is known"), "stepped down, not fenced: {message}");
    assert!(answered_after < Duration::from_millis(500), "answered {answered_after:?} after SIGTERM");
    assert_eq!(terminating.join().unwrap(), Some(0), "a clean exit");
    assert!(stopped_at.elapsed() < Duration::from_secs(8), "stopped in {:?}", stopped_at.elapsed());
    cluster.etcd.signal(libc::SIGCONT);
    // SAFETY: as above.
    unsafe { libc::kill(b.pid() as i32, libc::SIGCONT) };
}
