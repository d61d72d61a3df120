//! A real `ringlog serve` process over real loopback sockets: topics,
//! produce/fetch across shards, pipelining, consumer groups, long polls,
//! idempotent retries, bad clients, SIGTERM restarts and SIGKILL crashes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringlog::protocol::{
    decode_response, encode_request, Acks, ApiKey, CommittedState, ErrorCode, ErrorResponse, Request, Response,
    TopicSettings,
};
use ringlog::storage::batch::BatchBuilder;

use crate::common::records_of;
use crate::fixtures::{create_topic, create_topic_with, StandaloneNode};

/// A running node.
pub struct Node {
    child: Child,
    /// Client address.
    pub address: String,
    /// Admin HTTP address.
    pub admin: String,
}

/// `127.0.0.1:PORT` on a free port.
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999 by default). A port
    // the kernel hands out for ":0" is free now, but any outgoing
    // connection, of this test or one running beside it, may take it as its
    // local port before the node binds it, and a restarted node binds its
    // ports again long after they were chosen. Tests in this process never
    // share one (a counter), and a port something else holds is skipped.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;
    let offset = std::process::id() % COUNT;
    for _ in 0..COUNT {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (FIRST + (offset + step * 7) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

impl Node {
    /// Start `ringlog serve` on a free port and wait until it listens.
    pub fn start(data_dir: &Path, shards: usize) -> Node {
        Node::start_with(data_dir, shards, &[])
    }

    /// Start with extra environment variables.
    pub fn start_with(data_dir: &Path, shards: usize, environment: &[(&str, &str)]) -> Node {
        Node::spawn(&free_address(), &free_address(), data_dir, shards, &[], environment, None)
    }

    /// Start on the given client and admin addresses, with extra flags and
    /// environment; stderr goes to `log` when given.
    pub fn spawn(
        address: &str,
        admin: &str,
        data_dir: &Path,
        shards: usize,
        flags: &[&str],
        environment: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Node {
        let (address, admin) = (address.to_string(), admin.to_string());
        let stderr = match log {
            Some(path) => {
                Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open node log"))
            }
            None => Stdio::inherit(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringlog"))
            .args(["serve", "--listen", &address, "--admin", &admin, "--shards", &shards.to_string(), "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .env("RUST_LOG", "warn")
            .env("RINGLOG_STORAGE_SEGMENT_BYTES", "2097152")
            .env("RINGLOG_STORAGE_MAX_BATCH_BYTES", "1572864")
            .env("RINGLOG_LIMITS_MAX_FRAME_BYTES", "2097152")
            .env("RINGLOG_LIMITS_MAX_RECORD_BYTES", "1048576")
            // Test nodes run in parallel: none may take the default Kafka
            // port 9092 (a test that wants Kafka passes a free address).
            .env("RINGLOG_KAFKA_LISTEN", "")
            .envs(environment.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start ringlog serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read startup line");
        if !line.contains("listening") {
            // The node's own words: its log, when it writes one.
            let tail = log.and_then(|path| std::fs::read_to_string(path).ok()).unwrap_or_default();
            let tail = last_lines(&tail, 30);
            panic!("unexpected startup output {line:?}; exit {:?}; log tail:\n{tail}", child.try_wait());
        }
        Node { child, address, admin }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new client connection.
    pub fn client(&self) -> Client {
        Client::connect(&self.address)
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status.code()
    }

    /// SIGKILL and wait.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::mem::forget(self);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking client for tests.
pub struct Client {
    stream: TcpStream,
    next_correlation: u32,
}

impl Client {
    /// Connect to `address`.
    pub fn connect(address: &str) -> Client {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { stream, next_correlation: 1 }
    }

    /// Wait up to `timeout` for each answer (20 s by default).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Send a request without waiting; returns its correlation id.
    pub fn send(&mut self, request: &Request) -> u32 {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let mut frame = Vec::new();
        encode_request(correlation_id, request, &mut frame);
        self.stream.write_all(&frame).expect("send");
        correlation_id
    }

    /// Read one response frame body.
    pub fn receive_frame(&mut self) -> std::io::Result<Vec<u8>> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let mut body = vec![0u8; u32::from_le_bytes(prefix) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(body)
    }

    /// Send and wait for the answer.
    pub fn call(&mut self, request: Request) -> Result<Response, ErrorResponse> {
        let api_key = request.api_key();
        let correlation_id = self.send(&request);
        let body = self.receive_frame().expect("response");
        let (answered, outcome) = decode_response(api_key, &body).expect("decodable response");
        assert_eq!(answered, correlation_id);
        outcome
    }

    /// Keep little of the answers in the socket ([`crate::fixtures::shrink_receive_buffer`]).
    pub fn shrink_receive_buffer(&self) {
        crate::fixtures::shrink_receive_buffer(&self.stream);
    }

    /// Send nothing more (a half-closed client).
    pub fn shut_down_writes(&self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Raw bytes onto the socket.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }
}

/// A batch of `values`, optionally idempotent.
pub fn batch(values: &[String], producer: Option<(u64, u32)>) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    if let Some((producer_id, sequence)) = producer {
        builder.set_producer(producer_id, sequence);
    }
    for value in values {
        builder.push(1_700_000_000_000, None, value.as_bytes(), &[]);
    }
    builder.finish().to_vec()
}

/// A partition's offsets as a node lists them (ListOffsets).
#[derive(Debug, Clone, Copy)]
pub struct Offsets {
    /// First offset still held.
    pub log_start_offset: u64,
    /// Offset after the last record consumers may read.
    pub high_watermark: u64,
    /// Offset after the last record written.
    pub log_end_offset: u64,
}

/// A partition's offsets on `node`; `None` when it refuses (not the leader,
/// unknown topic or partition, not ready).
pub fn list_offsets(node: &Node, topic: &str, partition: u32) -> Option<Offsets> {
    match node.client().call(Request::ListOffsets { topic: topic.into(), partition }) {
        Ok(Response::ListOffsets { log_start_offset, high_watermark, log_end_offset }) => {
            Some(Offsets { log_start_offset, high_watermark, log_end_offset })
        }
        _ => None,
    }
}

/// A Produce request of `values` as one batch (not idempotent).
/// The last `count` lines of `text`, in order.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

pub fn produce_request(topic: &str, partition: u32, acks: Acks, values: &[String]) -> Request {
    Request::Produce { topic: topic.into(), partition, acks, batch: batch(values, None) }
}

fn produce(client: &mut Client, topic: &str, partition: u32, values: &[String], acks: Acks) -> (u64, u64) {
    match client.call(produce_request(topic, partition, acks, values)) {
        Ok(Response::Produce { base_offset, next_offset, .. }) => (base_offset, next_offset),
        other => panic!("produce failed: {other:?}"),
    }
}

/// The batches (raw bytes) and every (offset, value) a partition serves
/// from `offset` up to its high watermark.
pub fn fetch_all(client: &mut Client, topic: &str, partition: u32, mut offset: u64) -> (Vec<u8>, Vec<(u64, String)>) {
    let (mut bytes, mut records) = (Vec::new(), Vec::new());
    loop {
        let request = Request::Fetch { topic: topic.into(), partition, offset, max_bytes: 1 << 20, max_wait_ms: 0 };
        let answer = client.call(request);
        let Ok(Response::Fetch { batches, next_offset, .. }) = answer else { panic!("fetch at {offset}: {answer:?}") };
        if batches.is_empty() {
            return (bytes, records);
        }
        records.extend(records_of(&batches, offset));
        bytes.extend_from_slice(&batches);
        offset = next_offset;
    }
}

/// Every (offset, value) of a partition from `offset` to the high watermark.
fn consume(client: &mut Client, topic: &str, partition: u32, offset: u64) -> Vec<(u64, String)> {
    fetch_all(client, topic, partition, offset).1
}

fn values(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn produce_and_fetch_round_trip_across_partitions_and_shards() {
    let node = StandaloneNode::with_topic(2, "events", 8);
    let mut client = node.client();
    let error = client.call(Request::CreateTopic {
        name: "events".into(),
        settings: TopicSettings { partitions: 1, ..Default::default() },
    });
    assert_eq!(error.unwrap_err().code, ErrorCode::TopicExists);
    for round in 0..5 {
        for partition in 0..8 {
            let (base, next) =
                produce(&mut client, "events", partition, &values(&format!("p{partition}r{round}"), 10), Acks::Leader);
            assert_eq!((base, next), (round * 10, round * 10 + 10), "dense offsets per partition");
        }
    }
    let mut other = node.client();
    for partition in 0..8 {
        let records = consume(&mut other, "events", partition, 0);
        assert_eq!(records.len(), 50);
        assert_eq!(records[13].1, format!("p{partition}r1-3"));
    }
    let Ok(Response::ListTopics(topics)) = client.call(Request::ListTopics) else { panic!() };
    assert_eq!(topics, vec![("events".to_string(), 8)]);
    let Ok(Response::DescribeTopic(partitions)) = client.call(Request::DescribeTopic { name: "events".into() }) else {
        panic!()
    };
    assert_eq!(partitions.len(), 8);
    assert!(partitions
        .iter()
        .enumerate()
        .all(|(i, p)| p.partition == i as u32 && p.log_end_offset == 50 && p.high_watermark == Some(50)));
    let missing = client.call(Request::ListOffsets { topic: "nope".into(), partition: 0 });
    assert_eq!(missing.unwrap_err().code, ErrorCode::UnknownTopic);
    let beyond = client.call(Request::ListOffsets { topic: "events".into(), partition: 8 });
    assert_eq!(beyond.unwrap_err().code, ErrorCode::UnknownTopic);
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn large_produce_batches_read_into_reused_buffers_store_exactly_what_was_sent() {
    // Produce batches of 64 KiB and more are read into buffers kept from
    // earlier requests (runtime/buffer_pool.rs). Each batch here is shorter
    // than the one before and made of another letter, over two partitions
    // on two shards: a buffer handed on at its old length, or before the
    // socket filled it, would store the letter before.
    let node = StandaloneNode::with_topic(2, "large", 2);
    produce_in_turn_and_check(&mut node.client(), "large", 12, |round| {
        let length = 150_000 - usize::from(round) * 9_000;
        (0..3).map(|index| char::from(b'a' + round).to_string().repeat(length - index)).collect()
    });
    assert_eq!(node.terminate(), Some(0));
}

/// Produce `rounds` batches to partitions 0 and 1 of `topic` in turn
/// (`batch` gives each round's values), then check that each partition
/// stores exactly what it was sent.
fn produce_in_turn_and_check(client: &mut Client, topic: &str, rounds: u8, batch: impl Fn(u8) -> Vec<String>) {
    let mut expected = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let partition = u32::from(round % 2);
        let values = batch(round);
        produce(client, topic, partition, &values, Acks::Leader);
        expected[partition as usize].extend(values);
    }
    for (partition, expected) in expected.iter().enumerate() {
        let stored: Vec<String> =
            consume(client, topic, partition as u32, 0).into_iter().map(|(_, value)| value).collect();
        crate::common::assert_same_values(partition, &stored, expected);
    }
}

#[test]
fn a_node_whose_buffers_nearly_all_come_from_the_heap_stores_exactly_what_was_sent() {
    // The smallest direct-I/O arena (64 KiB per shard): nearly every write
    // and read buffer comes from the heap instead.
    let node = StandaloneNode::start_with(2, &[("RINGLOG_STORAGE_IO_MEMORY_BYTES", "65536")]);
    create_topic(&node, "heap", 2);
    produce_in_turn_and_check(&mut node.client(), "heap", 8, |round| {
        (0..4).map(|index| char::from(b'a' + round).to_string().repeat(70_000 + index * 3)).collect()
    });
    assert_eq!(node.terminate(), Some(0));
}

#[test]
#[ignore = "needs CAP_IPC_LOCK in the initial user namespace (or no RLIMIT_MEMLOCK); .ci/run runs it as root with --ignored"]
fn each_shard_registers_its_io_memory() {
    // `storage.io_memory_bytes` is set aside per shard at start and
    // registered with io_uring once per ring (three), which the kernel
    // counts in the process's VmPin.
    assert!(may_pin_anything(), "this process may not pin freely: run as root with CAP_IPC_LOCK");
    let per_shard_bytes: u64 = 96 << 20;
    let setting = per_shard_bytes.to_string();
    let node = StandaloneNode::start_with(2, &[("RINGLOG_STORAGE_IO_MEMORY_BYTES", &setting)]);
    let large_pinned_bytes = status_bytes(node.pid(), "VmPin:");
    assert_eq!(node.terminate(), Some(0));
    let node = StandaloneNode::start_with(2, &[("RINGLOG_STORAGE_IO_MEMORY_BYTES", "65536")]);
    let small_pinned_bytes = status_bytes(node.pid(), "VmPin:");
    assert_eq!(node.terminate(), Some(0));
    let registered_bytes = 3 * 2 * per_shard_bytes;
    assert!(large_pinned_bytes >= registered_bytes, "two shards of {setting} bytes, pinned {large_pinned_bytes}");
    assert!(small_pinned_bytes < 10 << 20, "two shards of 64 KiB, pinned {small_pinned_bytes}");
}

#[test]
#[ignore = "needs root with CAP_IPC_LOCK and CAP_SETPCAP, setpriv, and RLIMIT_MEMLOCK below 384 MiB; .ci/run runs it with --ignored"]
fn a_node_that_cannot_register_its_io_memory_says_so_at_start() {
    // Without CAP_IPC_LOCK, under this machine's RLIMIT_MEMLOCK (far below
    // 3 × 128 MiB), io_uring refuses the registration; the runtime goes on
    // unregistered and only the node's own check can tell the operator.
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|path| Path::new(path).exists());
    let setpriv = setpriv.expect("setpriv (util-linux)");
    assert!(has_capability(CAP_IPC_LOCK) && has_capability(CAP_SETPCAP), "CAP_IPC_LOCK and CAP_SETPCAP to drop it");
    assert!(memlock_limit() < 3 << 27, "an RLIMIT_MEMLOCK below the 384 MiB one shard registers");
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(setpriv)
        .args(["--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock", env!("CARGO_BIN_EXE_ringlog"), "serve"])
        .args(["--listen", &free_address(), "--admin", &free_address(), "--shards", "1", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .env("RINGLOG_KAFKA_LISTEN", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start ringlog serve under setpriv");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(line.contains("listening"), "it still serves: {line:?}\n{log}");
    assert_eq!(status.code(), Some(0));
    assert!(log.contains("is not all registered with io_uring: 0 bytes pinned of 402653184"), "{log}");
}

/// A `kB` line of /proc/PID/status (VmRSS, VmPin), in bytes.
pub(crate) fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|line| line.strip_prefix(key)).expect("the key in /proc/PID/status");
    let kib: u64 = line.split_whitespace().next().and_then(|value| value.parse().ok()).expect("a size in kB");
    kib * 1024
}

/// Whether this process (and so the nodes it starts) may pin any amount
/// for certain: CAP_IPC_LOCK that the kernel honours (in the initial user
/// namespace: one a container maps shows in CapEff yet counts for nothing
/// here), or no RLIMIT_MEMLOCK at all. A finite limit is shared by all the
/// user's processes, such as other test nodes, so it proves nothing.
fn may_pin_anything() -> bool {
    let initial_namespace = std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
    (initial_namespace && has_capability(CAP_IPC_LOCK)) || memlock_limit() == libc::RLIM_INFINITY
}

const CAP_SETPCAP: u32 = 8;
const CAP_IPC_LOCK: u32 = 14;

/// Whether `capability` is in this process's effective set.
fn has_capability(capability: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|value| u64::from_str_radix(value.trim(), 16).ok())
        .unwrap_or(0);
    effective & (1 << capability) != 0
}

/// This process's RLIMIT_MEMLOCK (soft).
fn memlock_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    if known {
        limit.rlim_cur
    } else {
        0
    }
}

#[test]
fn pipelined_requests_on_one_connection_are_all_answered_with_their_ids() {
    let node = StandaloneNode::with_topic(2, "pipe", 4);
    let mut client = node.client();
    let mut sent = Vec::new();
    for i in 0..60u32 {
        sent.push(client.send(&produce_request("pipe", i % 4, Acks::Leader, &values("x", 3))));
    }
    let mut answered = Vec::new();
    for _ in 0..60 {
        let body = client.receive_frame().unwrap();
        let (correlation_id, outcome) = decode_response(ApiKey::Produce, &body).unwrap();
        assert!(outcome.is_ok());
        answered.push(correlation_id);
    }
    answered.sort_unstable();
    assert_eq!(answered, sent);
    assert_eq!(node.terminate(), Some(0));
}

/// 16 batches of about 1 MiB each on partition 0 of `topic`.
pub(crate) fn sixteen_large_batches(node: &Node, topic: &str) {
    let mut client = node.client();
    let value = "v".repeat(100 << 10);
    for batch in 0..16 {
        let values: Vec<String> = (0..10).map(|record| format!("{batch}-{record}-{value}")).collect();
        produce(&mut client, topic, 0, &values, Acks::Leader);
    }
}

/// Fetches the one shard of a single-shard node executed.
pub(crate) const FETCHES_OF_SHARD_ZERO: &str = "ringlog_fetch_requests_total{shard=\"0\"}";

#[test]
fn a_client_that_does_not_read_its_answers_is_held_back_at_its_answer_bound() {
    let bound = ("RINGLOG_LIMITS_MAX_ANSWER_BYTES_PER_CONNECTION", "1048576");
    let node = StandaloneNode::start_with(1, &[bound]);
    create_topic(&node, "unread", 1);
    sixteen_large_batches(&node, "unread");
    // 64 fetches pipelined, none of the answers read. Each asks for 1 byte
    // and gets a whole batch of about 1 MiB (a read returns at least one).
    let mut greedy = node.client();
    greedy.shrink_receive_buffer();
    let fetch = Request::Fetch { topic: "unread".into(), partition: 0, offset: 0, max_bytes: 1, max_wait_ms: 0 };
    let sent: Vec<u32> = (0..64).map(|_| greedy.send(&fetch)).collect();
    std::thread::sleep(Duration::from_secs(2));
    // What the sockets' buffers took (a few MiB) and the 1 MiB bound: not
    // the 64 MiB the node held for such a client before.
    let served = crate::fixtures::metric(&node, FETCHES_OF_SHARD_ZERO);
    assert!(served <= 24, "{served} fetches answered for a client that reads none of them");
    // Everyone else is served meanwhile.
    assert_eq!(list_offsets(&node, "unread", 0).map(|offsets| offsets.log_end_offset), Some(160));
    // Once the client reads, every answer comes, whole and in full.
    let mut answered = Vec::new();
    for _ in &sent {
        let body = greedy.receive_frame().unwrap();
        let (correlation_id, outcome) = decode_response(ApiKey::Fetch, &body).unwrap();
        let Ok(Response::Fetch { next_offset, batches, .. }) = outcome else { panic!("a fetch answer") };
        assert_eq!((next_offset, records_of(&batches, 0).len()), (10, 10));
        answered.push(correlation_id);
    }
    answered.sort_unstable();
    assert_eq!(answered, sent);
    assert_eq!(crate::fixtures::metric(&node, FETCHES_OF_SHARD_ZERO), 64);
    assert_eq!(node.terminate(), Some(0));
}

/// One answer frame, read 24 KiB at a time with 20 ms between reads (about
/// 1.2 MB/s: an answer of two 1 MiB batches takes longer than a second).
fn read_slowly(stream: &mut TcpStream) -> Vec<u8> {
    let mut frame = Vec::new();
    let mut chunk = vec![0u8; 24 << 10];
    while frame.len() < 4 || frame.len() < 4 + u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize {
        std::thread::sleep(Duration::from_millis(20));
        let wanted = match frame.len() < 4 {
            true => 4 - frame.len(),
            false => (4 + u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize - frame.len()).min(chunk.len()),
        };
        let read = stream.read(&mut chunk[..wanted]).expect("a slow reader keeps its connection");
        assert!(read > 0, "a slow reader keeps its connection");
        frame.extend_from_slice(&chunk[..read]);
    }
    frame
}

#[test]
fn a_client_that_takes_none_of_its_answers_for_the_write_stall_timeout_is_disconnected() {
    let bound = ("RINGLOG_LIMITS_MAX_ANSWER_BYTES_PER_CONNECTION", "1048576");
    let node = StandaloneNode::start_with(1, &[bound, ("RINGLOG_LIMITS_WRITE_STALL_TIMEOUT_MS", "1000")]);
    create_topic(&node, "stalled", 1);
    sixteen_large_batches(&node, "stalled");
    let fetch = Request::Fetch { topic: "stalled".into(), partition: 0, offset: 0, max_bytes: 1, max_wait_ms: 0 };
    // Two whole batches (about 2 MB) per answer: more than the bound.
    let large = Request::Fetch { topic: "stalled".into(), partition: 0, offset: 0, max_bytes: 2 << 20, max_wait_ms: 0 };
    // A slow reader is not cut off: about 6 MB of answers (more than the
    // sockets hold) read 24 KiB at a time, 20 ms apart, so that each
    // answer takes longer than the timeout to write, with some progress
    // every 20 ms.
    let mut slow = node.client();
    slow.shrink_receive_buffer();
    for _ in 0..3 {
        slow.send(&large);
    }
    let started = Instant::now();
    for _ in 0..3 {
        let frame = read_slowly(&mut slow.stream);
        assert!(frame.len() > 2_000_000, "a whole answer: {} bytes", frame.len());
    }
    assert!(started.elapsed() > Duration::from_secs(2), "read for longer than the timeout: {:?}", started.elapsed());
    assert_eq!(crate::fixtures::metric(&node, "ringlog_write_stalls_total"), 0);
    drop(slow);
    // A client that asks for answers larger than the bound, half-closes
    // and never reads: once the first answer is encoded its reader waits
    // for room and does not read on to the end of its input, so only the
    // stall ends the connection.
    let mut greedy = node.client();
    greedy.shrink_receive_buffer();
    for _ in 0..8 {
        greedy.send(&large);
    }
    std::thread::sleep(Duration::from_millis(300));
    greedy.shut_down_writes();
    // One that asks for less than the bound lets its reader read on, and
    // then sends nothing: its writer's end must wake that reader.
    let mut silent = node.client();
    silent.shrink_receive_buffer();
    for _ in 0..12 {
        silent.send(&fetch);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while crate::fixtures::metric(&node, "ringlog_connections") > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(crate::fixtures::metric(&node, "ringlog_connections"), 0, "the stalled connection is closed");
    assert_eq!(crate::fixtures::metric(&node, "ringlog_write_stalls_total"), 2);
    let served = crate::fixtures::metric(&node, FETCHES_OF_SHARD_ZERO);
    assert!(served < 3 + 8 + 12, "{served} fetches: the requests behind the stalls were not all run");
    // What the sockets held arrives, then the end: not a hang.
    for client in [&mut greedy, &mut silent] {
        client.set_read_timeout(Duration::from_secs(5));
        let ended = (0..64).map(|_| client.receive_frame()).find_map(Result::err).expect("the connection ends");
        assert_ne!(ended.kind(), std::io::ErrorKind::WouldBlock, "closed, not timed out");
    }
    assert_eq!(list_offsets(&node, "stalled", 0).map(|offsets| offsets.log_end_offset), Some(160));
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn a_produce_behind_long_polls_that_fill_the_answer_bound_is_served_at_once() {
    let node = StandaloneNode::start_with(1, &[("RINGLOG_LIMITS_MAX_ANSWER_BYTES_PER_CONNECTION", "1048576")]);
    create_topic(&node, "polled", 1);
    let mut client = node.client();
    // Each poll may answer a whole batch (1.5 MiB here): the first holds
    // the bound, the second waits for room, and the produce after them
    // is the one that ends the first.
    let poll = Request::Fetch { topic: "polled".into(), partition: 0, offset: 0, max_bytes: 1, max_wait_ms: 10_000 };
    let first = client.send(&poll);
    let second = client.send(&poll);
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let produced = client.send(&produce_request("polled", 0, Acks::Leader, &values("late", 1)));
    let mut answered = Vec::new();
    for _ in 0..3 {
        let body = client.receive_frame().unwrap();
        let correlation_id = u32::from_le_bytes(body[..4].try_into().unwrap());
        let api_key = if correlation_id == produced { ApiKey::Produce } else { ApiKey::Fetch };
        match decode_response(api_key, &body).unwrap().1 {
            Ok(Response::Fetch { batches, .. }) => {
                assert_eq!(records_of(&batches, 0).len(), 1, "each poll gets the produced record");
            }
            Ok(Response::Produce { .. }) => {}
            other => panic!("unexpected answer {other:?}"),
        }
        answered.push(correlation_id);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nobody waited for a poll to time out: {:?}",
        started.elapsed()
    );
    answered.sort_unstable();
    assert_eq!(answered, [first, second, produced]);
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn consumer_group_offsets_and_idempotent_retries_survive_a_sigterm_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 2);
    let mut client = node.client();
    create_topic(&node, "orders", 3);
    let Ok(Response::InitProducer { producer_id }) = client.call(Request::InitProducer) else { panic!() };
    assert_ne!(producer_id, 0);
    let request = Request::Produce {
        topic: "orders".into(),
        partition: 1,
        acks: Acks::All,
        batch: batch(&values("o", 4), Some((producer_id, 0))),
    };
    let Ok(Response::Produce { base_offset, duplicate, .. }) = client.call(request.clone()) else { panic!() };
    assert!(!duplicate);
    let Ok(Response::Produce { base_offset: again, duplicate, .. }) = client.call(request.clone()) else { panic!() };
    assert!(duplicate, "a re-sent batch is recognised");
    assert_eq!(again, base_offset);
    client
        .call(Request::CommitOffset { group: "billing".into(), topic: "orders".into(), partition: 1, offset: 3 })
        .unwrap();
    let beyond = client.call(Request::CommitOffset {
        group: "billing".into(),
        topic: "orders".into(),
        partition: 1,
        offset: 99,
    });
    assert_eq!(beyond.unwrap_err().code, ErrorCode::OffsetOutOfRange);
    assert_eq!(node.terminate(), Some(0), "SIGTERM exits 0");
    for partition in 0..3 {
        assert!(dir.path().join(format!("topics/orders/{partition}/clean-shutdown")).exists(), "clean marker written");
    }

    let node = Node::start(dir.path(), 2);
    let mut client = node.client();
    let fetched = client.call(Request::FetchOffset { group: "billing".into(), topic: "orders".into(), partition: 1 });
    assert_eq!(fetched, Ok(Response::FetchOffset(CommittedState::Valid(3))));
    let Ok(Response::Produce { base_offset: after_restart, duplicate, .. }) = client.call(request) else { panic!() };
    assert!(duplicate && after_restart == base_offset, "retry after restart is still recognised");
    assert_eq!(consume(&mut client, "orders", 1, 0).len(), 4, "written exactly once");
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn long_poll_fetch_wakes_when_data_arrives() {
    let node = StandaloneNode::with_topic(2, "poll", 1);
    let mut client = node.client();
    let address = node.address.clone();
    let waiter = std::thread::spawn(move || {
        let mut client = Client::connect(&address);
        let started = Instant::now();
        let request =
            Request::Fetch { topic: "poll".into(), partition: 0, offset: 0, max_bytes: 1 << 16, max_wait_ms: 10_000 };
        let outcome = client.call(request);
        (outcome, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    produce(&mut client, "poll", 0, &values("late", 2), Acks::Leader);
    let (outcome, waited) = waiter.join().unwrap();
    let Ok(Response::Fetch { batches, next_offset, .. }) = outcome else { panic!("{outcome:?}") };
    assert!(!batches.is_empty(), "the long poll returned the new data");
    assert_eq!(next_offset, 2);
    assert!(waited < Duration::from_secs(10), "woken by the append, not the timeout");
    // An empty long poll returns empty after its wait.
    let request =
        Request::Fetch { topic: "poll".into(), partition: 0, offset: 2, max_bytes: 1 << 16, max_wait_ms: 100 };
    let Ok(Response::Fetch { batches, .. }) = client.call(request) else { panic!() };
    assert!(batches.is_empty());
    // acks=none answers with offsets before durability; the data arrives.
    produce(&mut client, "poll", 0, &values("fast", 3), Acks::None);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(consume(&mut client, "poll", 0, 0).len(), 5);
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn bad_clients_are_disconnected_while_others_carry_on() {
    let node = StandaloneNode::with_topic(2, "safe", 2);
    let mut good = node.client();
    // A 4 GiB length prefix: rejected before allocation, error frame, closed.
    let mut huge = node.client();
    huge.send_raw(&u32::MAX.to_le_bytes());
    huge.send_raw(&[5, 0, 1, 0, 42, 0, 0, 0]);
    let body = huge.receive_frame().expect("error frame before close");
    let (correlation_id, outcome) = decode_response(ApiKey::Produce, &body).unwrap();
    assert_eq!(correlation_id, 42);
    assert_eq!(outcome.unwrap_err().code, ErrorCode::RecordTooLarge);
    assert!(huge.receive_frame().is_err(), "connection closed");
    // Garbage: unknown api key.
    let mut garbage = node.client();
    garbage.send_raw(&[8, 0, 0, 0, 0xff, 0xff, 1, 0, 7, 0, 0, 0]);
    let body = garbage.receive_frame().unwrap();
    let (_, outcome) = decode_response(ApiKey::Produce, &body).unwrap();
    assert_eq!(outcome.unwrap_err().code, ErrorCode::UnknownApi);
    assert!(garbage.receive_frame().is_err());
    // Truncated frame then hang-up.
    let mut truncated = node.client();
    truncated.send_raw(&[100, 0, 0, 0, 5, 0, 1, 0]);
    drop(truncated);
    // A produce with a corrupted batch is an error answer, not a crash.
    let mut bad_batch = batch(&values("x", 2), None);
    let last = bad_batch.len() - 1;
    bad_batch[last] ^= 0xff;
    let error = good
        .call(Request::Produce { topic: "safe".into(), partition: 0, acks: Acks::Leader, batch: bad_batch })
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidRequest);
    // A record over limits.max_record_bytes (1 MiB here) is record_too_large.
    let big = vec!["v".repeat((1 << 20) + 1)];
    let error = good.call(produce_request("safe", 0, Acks::Leader, &big));
    assert_eq!(error.unwrap_err().code, ErrorCode::RecordTooLarge);
    // The good client is unharmed.
    produce(&mut good, "safe", 1, &values("fine", 5), Acks::Leader);
    assert_eq!(consume(&mut good, "safe", 1, 0).len(), 5);
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn sigkill_under_produce_load_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = Node::start(dir.path(), 2);
        create_topic(&node, "load", 4);
        node.terminate();
    }
    let mut acknowledged: Vec<Vec<(u64, String)>> = vec![Vec::new(); 4];
    for round in 0..4 {
        let node = Node::start(dir.path(), 2);
        let address = node.address.clone();
        let producer = std::thread::spawn(move || {
            let mut client = Client::connect(&address);
            let mut acked = Vec::new();
            for i in 0..100_000u32 {
                let partition = i % 4;
                let batch_values = values(&format!("r{round}-b{i}"), 5);
                let correlation_id = client.send(&produce_request("load", partition, Acks::Leader, &batch_values));
                let Ok(body) = client.receive_frame() else { break };
                let Ok((answered, Ok(Response::Produce { base_offset, .. }))) = decode_response(ApiKey::Produce, &body)
                else {
                    break;
                };
                assert_eq!(answered, correlation_id);
                acked.push((partition, base_offset, batch_values));
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(150 + 100 * round));
        node.kill();
        for (partition, base_offset, batch_values) in producer.join().unwrap() {
            for (i, value) in batch_values.into_iter().enumerate() {
                acknowledged[partition as usize].push((base_offset + i as u64, value));
            }
        }
        let node = Node::start(dir.path(), 2);
        let mut client = node.client();
        for (partition, acked) in acknowledged.iter().enumerate() {
            let stored = consume(&mut client, "load", partition as u32, 0);
            for (offset, value) in acked {
                assert_eq!(
                    stored.get(*offset as usize),
                    Some(&(*offset, value.clone())),
                    "round {round}: acknowledged record lost"
                );
            }
        }
        assert!(acknowledged.iter().map(Vec::len).sum::<usize>() > 0);
        node.terminate();
    }
}

#[test]
fn retention_deletes_old_segments_of_a_running_node() {
    let node = StandaloneNode::start_with(1, &[("RINGLOG_LIMITS_RETENTION_CHECK_INTERVAL_MS", "200")]);
    let settings =
        TopicSettings { partitions: 1, retention_bytes: 64 * 1024, segment_bytes: 16 * 1024, ..Default::default() };
    create_topic_with(&node, "short", settings);
    let mut client = node.client();
    for i in 0..100 {
        produce(&mut client, "short", 0, &[format!("{i:04}-{}", "x".repeat(1000))], Acks::Leader);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Offsets { log_start_offset, log_end_offset, .. } = list_offsets(&node, "short", 0).unwrap();
        if log_start_offset > 0 {
            assert_eq!(log_end_offset, 100);
            let kept = consume(&mut client, "short", 0, log_start_offset);
            assert_eq!(kept.len() as u64, 100 - log_start_offset);
            break;
        }
        assert!(Instant::now() < deadline, "retention never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn too_little_locked_memory_is_one_error_line_and_exit_78() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlog"));
    command.args(["serve", "--listen", &free_address(), "--data-dir"]).arg(dir.path());
    command.env("RINGLOG_KAFKA_LISTEN", "");
    // SAFETY: setrlimit is async-signal-safe and only touches the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 64 * 1024, rlim_max: 64 * 1024 };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("RLIMIT_MEMLOCK"), "{stderr}");
}

#[test]
fn racing_topic_creations_answer_one_success_and_never_pass_max_topics() {
    let node = StandaloneNode::start_with(2, &[("RINGLOG_LIMITS_MAX_TOPICS", "3")]);
    let create = |name: String, partitions: u32| {
        let mut client = node.client();
        let settings = TopicSettings { partitions, ..TopicSettings::default() };
        move || client.call(Request::CreateTopic { name, settings })
    };
    // Eight clients create one name at once, each with its own partition count.
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let racers: Vec<_> = (1..=8).map(|partitions| scope.spawn(create("race".into(), partitions))).collect();
        racers.into_iter().map(|racer| racer.join().unwrap()).collect()
    });
    let winners: Vec<u32> = (1..=8).filter(|&index| outcomes[index as usize - 1].is_ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one creation wins: {outcomes:?}");
    for refused in outcomes.iter().filter_map(|outcome| outcome.as_ref().err()) {
        assert_eq!(refused.code, ErrorCode::TopicExists, "{refused:?}");
    }
    let Ok(Response::DescribeTopic(partitions)) = node.client().call(Request::DescribeTopic { name: "race".into() })
    else {
        panic!("describe race");
    };
    assert_eq!(partitions.len() as u32, winners[0], "the live topic has the winner's settings");
    // Eight distinct names against a limit of three topics (one exists).
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8).map(|index| scope.spawn(create(format!("t{index}"), 1))).collect();
        racers.into_iter().map(|racer| racer.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|outcome| outcome.is_ok()).count(), 2, "{outcomes:?}");
    let Ok(Response::ListTopics(topics)) = node.client().call(Request::ListTopics) else { panic!("list") };
    assert_eq!(topics.len(), 3, "limits.max_topics holds under racing creations: {topics:?}");
}

/// A deletion whose directory cannot move out of `DATA/topics` (here
/// `DATA/deleted-topics` is a file) keeps the topic whole, readable and
/// writable, now and after a restart; a start that cannot empty or create
/// the graveyard still starts; once it can, the deletion goes through.
#[test]
fn a_deletion_that_cannot_move_the_topic_directory_keeps_the_topic_whole() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 2);
    create_topic(&node, "kept", 2);
    let records: Vec<String> = (0..5).map(|index| format!("record-{index}")).collect();
    for partition in 0..2 {
        produce(&mut node.client(), "kept", partition, &records, Acks::All);
    }
    let graveyard = dir.path().join("deleted-topics");
    std::fs::remove_dir(&graveyard).expect("the graveyard exists, empty, from the start");
    std::fs::write(&graveyard, b"not a directory").unwrap();
    let refused = node.client().call(Request::DeleteTopic { name: "kept".into() }).unwrap_err();
    assert_eq!(refused.code, ErrorCode::StorageFailed, "{refused:?}");
    let assert_whole = |node: &Node, expected_per_partition: usize| {
        for partition in 0..2 {
            let read = consume(&mut node.client(), "kept", partition, 0);
            assert_eq!(read.len(), expected_per_partition, "partition {partition}: {read:?}");
        }
    };
    assert_whole(&node, 5);
    assert_eq!(produce(&mut node.client(), "kept", 1, &records, Acks::All), (5, 10));
    assert_eq!(node.terminate(), Some(0));
    let node = Node::start(dir.path(), 2);
    assert_eq!(consume(&mut node.client(), "kept", 0, 0).len(), 5);
    assert_eq!(consume(&mut node.client(), "kept", 1, 0).len(), 10);
    std::fs::remove_file(&graveyard).unwrap();
    node.client().call(Request::DeleteTopic { name: "kept".into() }).expect("delete once it can");
    let Ok(Response::ListTopics(topics)) = node.client().call(Request::ListTopics) else { panic!("list") };
    assert!(topics.is_empty(), "{topics:?}");
    assert!(!dir.path().join("topics").join("kept").exists());
}

/// A consumer long-polls a partition's tail while its topic is deleted:
/// the closed log must answer the poll at once (it used to spin the shard
/// until the poll's deadline, the deletion stuck behind it).
#[test]
fn deleting_a_topic_under_a_long_polling_consumer_stalls_neither() {
    let node = StandaloneNode::with_topic(1, "polled", 1);
    let records: Vec<String> = (0..3).map(|index| format!("record-{index}")).collect();
    let (_, end) = produce(&mut node.client(), "polled", 0, &records, Acks::All);
    let mut consumer = node.client();
    let poller = std::thread::spawn(move || {
        let started = Instant::now();
        let read = Request::Fetch {
            topic: "polled".into(),
            partition: 0,
            offset: end,
            max_bytes: 1 << 20,
            max_wait_ms: 25_000,
        };
        let outcome = consumer.call(read);
        (started.elapsed(), outcome)
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    node.client().call(Request::DeleteTopic { name: "polled".into() }).expect("delete");
    let deleted_after = started.elapsed();
    let (polled_for, outcome) = poller.join().unwrap();
    assert!(deleted_after < Duration::from_secs(10), "the deletion took {deleted_after:?}");
    assert!(polled_for < Duration::from_secs(10), "the poll took {polled_for:?}: {outcome:?}");
    if let Ok(Response::Fetch { batches, .. }) = &outcome {
        assert!(batches.is_empty(), "a deleted topic's poll returns nothing new");
    }
}
