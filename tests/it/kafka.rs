//! The Kafka listener (SPEC §10) against clients no one here wrote: kcat
//! (librdkafka) and requests encoded by the `kafka-protocol` crate, with
//! records crossing between the Kafka and the native protocol.
//!
//! kcat is installed by `tools/install-deps.sh` (CI runs it); without it
//! these tests fail and say so.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, FetchRequest, FetchResponse, GroupId, InitProducerIdRequest, JoinGroupRequest,
    MetadataRequest, OffsetCommitRequest, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use ringlog::protocol::kafka::records::{BatchEncoder, BatchSummary};
use ringlog::protocol::{Acks, Request, Response, TopicSettings};
use ringlog::storage::batch::{BatchBuilder, BatchIter, RecordIter, BATCH_HEADER_BYTES};

use crate::node::{free_port, Node};

/// A node with a Kafka listener on a free port.
pub(crate) struct KafkaNode {
    pub(crate) node: Node,
    pub(crate) kafka: String,
    _dir: tempfile::TempDir,
}

pub(crate) fn start(shards: usize) -> KafkaNode {
    start_with(shards, &[])
}

/// As [`start`], with extra settings in the environment.
pub(crate) fn start_with(shards: usize, environment: &[(&str, &str)]) -> KafkaNode {
    let dir = tempfile::tempdir().unwrap();
    let kafka = format!("127.0.0.1:{}", free_port());
    let mut environment = environment.to_vec();
    environment.push(("RINGLOG_KAFKA_LISTEN", &kafka));
    let node = Node::start_with(dir.path(), shards, &environment);
    KafkaNode { node, kafka, _dir: dir }
}

impl KafkaNode {
    /// A node already started with `kafka` as its Kafka listener on `dir`.
    pub(crate) fn from_parts(node: Node, kafka: String, dir: tempfile::TempDir) -> KafkaNode {
        KafkaNode { node, kafka, _dir: dir }
    }

    /// SIGKILL the node and start it again on the same data directory and
    /// Kafka address (a crash: the log is recovered by scanning).
    pub(crate) fn crash_and_restart(self, shards: usize) -> KafkaNode {
        self.crash_damage_and_restart(shards, |_| {})
    }

    /// SIGKILL the node, let `damage` change its data directory (lose data
    /// as a bad disk or restore would), and start it again.
    pub(crate) fn crash_damage_and_restart(self, shards: usize, damage: impl FnOnce(&std::path::Path)) -> KafkaNode {
        let KafkaNode { node, kafka, _dir } = self;
        node.kill();
        damage(_dir.path());
        let environment = [("RINGLOG_KAFKA_LISTEN", kafka.as_str())];
        let node = Node::start_with(_dir.path(), shards, &environment);
        KafkaNode { node, kafka, _dir }
    }
}

pub(crate) fn create_topic(node: &Node, name: &str, partitions: u32) {
    let settings = TopicSettings { partitions, ..TopicSettings::default() };
    node.client().call(Request::CreateTopic { name: name.into(), settings }).expect("create topic");
}

/// Fail, saying how to install it, unless python3 imports `module`: a
/// Kafka client no one here wrote (`package` on PyPI).
pub(crate) fn require_python_module(module: &str, package: &str) {
    let found = Command::new("python3").args(["-c", &format!("import {module}")]).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|status| status.success()),
        "{package} is not installed: the Kafka tests need it (bash tools/install-deps.sh)"
    );
}

/// Start `tests/kafka/<script>` with `arguments`; each stdout line that
/// `parse` turns into a value arrives on the channel (stderr is piped).
pub(crate) fn spawn_script_lines<T: Send + 'static>(
    script: &str,
    arguments: &[&str],
    parse: impl Fn(String) -> Option<T> + Send + 'static,
) -> (std::process::Child, std::sync::mpsc::Receiver<T>) {
    let path = format!("{}/tests/kafka/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(path)
        .args(arguments)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if let Some(value) = parse(line) {
                if sender.send(value).is_err() {
                    return;
                }
            }
        }
    });
    (child, receiver)
}

/// Run kcat with `arguments` and `input` on stdin, bounded in time.
pub(crate) fn kcat(arguments: &[&str], input: &[u8]) -> Output {
    let found = Command::new("kcat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|status| status.success()),
        "kcat is not installed: the Kafka tests need it (bash tools/install-deps.sh, or apt-get install kcat)"
    );
    let mut child = Command::new("kcat")
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kcat");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kcat {arguments:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// kcat produce; fails the test on any delivery error (kcat itself exits 0).
pub(crate) fn kcat_produce(kafka: &str, topic: &str, partition: u32, extra: &[&str], lines: &str) {
    let partition = partition.to_string();
    let mut arguments = vec!["-b", kafka, "-P", "-t", topic, "-p", &partition, "-K", "\t"];
    arguments.extend_from_slice(extra);
    let output = kcat(&arguments, lines.as_bytes());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !stderr.contains("failed"), "kcat produce {extra:?}: {stderr}");
}

/// One line per record of a partition, read with kcat from the beginning:
/// `offset|key|value|timestamp|headers`.
pub(crate) fn kcat_consume(kafka: &str, topic: &str, partition: u32) -> Vec<String> {
    let partition = partition.to_string();
    let format = "%o|%k|%s|%T|%h\n";
    let arguments = ["-b", kafka, "-C", "-t", topic, "-p", &partition, "-o", "beginning", "-e", "-q", "-f", format];
    let output = kcat(&arguments, b"");
    assert!(output.status.success(), "kcat consume: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect()
}

/// What the native protocol reads back, as kcat's lines would show it.
pub(crate) fn native_consume(node: &Node, topic: &str, partition: u32) -> Vec<String> {
    let mut client = node.client();
    let request = Request::Fetch { topic: topic.into(), partition, offset: 0, max_bytes: 1 << 20, max_wait_ms: 0 };
    let Ok(Response::Fetch { batches, .. }) = client.call(request) else { panic!("native fetch failed") };
    let mut lines = Vec::new();
    for batch in BatchIter::new(&batches, usize::MAX) {
        let (header, bytes) = batch.unwrap();
        for (index, record) in RecordIter::new(&bytes[BATCH_HEADER_BYTES..]).enumerate() {
            let record = record.unwrap();
            let headers: Vec<String> =
                record.headers().map(|(name, value)| format!("{name}={}", String::from_utf8_lossy(value))).collect();
            lines.push(format!(
                "{}|{}|{}|{}|{}",
                header.base_offset + index as u64,
                String::from_utf8_lossy(record.key.unwrap_or_default()),
                String::from_utf8_lossy(record.value),
                record.timestamp_ms,
                headers.join(",")
            ));
        }
    }
    lines
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn kcat_produces_keys_and_headers_and_consumes_them_back_by_partition() {
    let node = start(2);
    create_topic(&node.node, "kafka-kv", 2);
    let before = now_ms();
    kcat_produce(&node.kafka, "kafka-kv", 0, &["-H", "trace=a", "-H", "trace=b"], "k1\tv1\nk2\tv2\n");
    kcat_produce(&node.kafka, "kafka-kv", 1, &["-H", "only=1"], "k3\tv3\n");
    let after = now_ms();
    let zero = kcat_consume(&node.kafka, "kafka-kv", 0);
    let one = kcat_consume(&node.kafka, "kafka-kv", 1);
    let strip = |line: &String| {
        let fields: Vec<&str> = line.split('|').collect();
        let timestamp: i64 = fields[3].parse().unwrap();
        assert!((before..=after).contains(&timestamp), "timestamp {timestamp} of {line} not in the produce window");
        format!("{}|{}|{}|{}", fields[0], fields[1], fields[2], fields[4])
    };
    assert_eq!(zero.iter().map(strip).collect::<Vec<_>>(), ["0|k1|v1|trace=a,trace=b", "1|k2|v2|trace=a,trace=b"]);
    assert_eq!(one.iter().map(strip).collect::<Vec<_>>(), ["0|k3|v3|only=1"]);
}

#[test]
fn records_produced_with_kcat_read_back_natively_with_the_same_fields() {
    let node = start(2);
    create_topic(&node.node, "kafka-to-native", 1);
    kcat_produce(&node.kafka, "kafka-to-native", 0, &["-H", "h=1", "-H", "h=2", "-H", "x="], "key\tvalue\n\tno key\n");
    kcat_produce(&node.kafka, "kafka-to-native", 0, &["-X", "acks=all"], "k\tthird\n");
    let through_kafka = kcat_consume(&node.kafka, "kafka-to-native", 0);
    let through_native = native_consume(&node.node, "kafka-to-native", 0);
    assert_eq!(through_native.len(), 3);
    assert_eq!(through_native, through_kafka);
    assert!(through_native[0].starts_with("0|key|value|") && through_native[0].ends_with("|h=1,h=2,x="));
}

#[test]
fn records_produced_natively_read_back_with_kcat_with_the_same_fields() {
    let node = start(2);
    create_topic(&node.node, "native-to-kafka", 1);
    let mut builder = BatchBuilder::new();
    builder.push(1_700_000_000_123, Some(b"alpha"), b"one", &[("h", b"1"), ("h", b"2")]);
    builder.push(1_700_000_000_100, None, b"two", &[]);
    builder.push(1_700_000_000_200, Some(b"gamma"), b"three", &[("z", b"")]);
    let batch = builder.finish().to_vec();
    let produce = Request::Produce { topic: "native-to-kafka".into(), partition: 0, acks: Acks::Leader, batch };
    assert!(matches!(node.node.client().call(produce), Ok(Response::Produce { base_offset: 0, .. })));
    let through_kafka = kcat_consume(&node.kafka, "native-to-kafka", 0);
    assert_eq!(
        through_kafka,
        ["0|alpha|one|1700000000123|h=1,h=2", "1||two|1700000000100|", "2|gamma|three|1700000000200|z="]
    );
    assert_eq!(native_consume(&node.node, "native-to-kafka", 0), through_kafka);
}

#[test]
fn compressed_batches_of_every_kafka_codec_are_stored_decompressed_and_an_unknown_codec_refused() {
    let node = start(1);
    create_topic(&node.node, "kafka-codecs", 1);
    // Large, compressible values: librdkafka sends small ones uncompressed.
    let value = "x".repeat(5_000);
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        kcat_produce(&node.kafka, "kafka-codecs", 0, &["-z", codec], &format!("{codec}\t{value}\n"));
    }
    let lines = native_consume(&node.node, "kafka-codecs", 0);
    let keys: Vec<&str> = lines.iter().map(|line| line.split('|').nth(1).unwrap()).collect();
    assert_eq!(keys, codecs);
    assert!(lines.iter().all(|line| line.split('|').nth(2) == Some(value.as_str())));
    let through_kafka = kcat_consume(&node.kafka, "kafka-codecs", 0);
    let keys: Vec<&str> = through_kafka.iter().map(|line| line.split('|').nth(1).unwrap()).collect();
    assert_eq!(keys, codecs, "read back through Kafka too");
    // Codec 5 does not exist: the batch is refused whole.
    let mut unknown = crate_batch(&[b"v"]).to_vec();
    unknown[21..23].copy_from_slice(&5i16.to_be_bytes());
    let crc = crc32c::crc32c(&unknown[21..]);
    unknown[17..21].copy_from_slice(&crc.to_be_bytes());
    let request = produce_request("kafka-codecs", 0, 1, Bytes::from(unknown));
    assert_eq!(produce_error(&mut KafkaClient::connect(&node.kafka), &request), 76, "UNSUPPORTED_COMPRESSION_TYPE");
    assert_eq!(native_consume(&node.node, "kafka-codecs", 0).len(), 4, "nothing of the refused batch was stored");
}

#[test]
fn kcat_lists_offsets_by_time_and_metadata_names_this_node() {
    let node = start(2);
    create_topic(&node.node, "kafka-offsets", 3);
    let mut builder = BatchBuilder::new();
    for timestamp_ms in [1_000, 2_000, 3_000] {
        builder.push(timestamp_ms, None, b"v", &[]);
    }
    let batch = builder.finish().to_vec();
    let produce = Request::Produce { topic: "kafka-offsets".into(), partition: 2, acks: Acks::Leader, batch };
    node.node.client().call(produce).unwrap();
    let query = |spec: &str| {
        let output = kcat(&["-b", &node.kafka, "-Q", "-t", spec], b"");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(query("kafka-offsets:2:1500"), "kafka-offsets [2] offset 1");
    assert_eq!(query("kafka-offsets:2:3000"), "kafka-offsets [2] offset 2");
    assert_eq!(query("kafka-offsets:2:3001"), "kafka-offsets [2] offset -1");
    let metadata = kcat(&["-b", &node.kafka, "-L", "-t", "kafka-offsets"], b"");
    let metadata = String::from_utf8_lossy(&metadata.stdout);
    assert!(metadata.contains(&format!("broker 0 at {}", node.kafka)), "{metadata}");
    assert!(metadata.contains("topic \"kafka-offsets\" with 3 partitions"), "{metadata}");
}

#[test]
fn kafka_python_creates_produces_consumes_by_partition_and_deletes() {
    require_python_module("kafka", "kafka-python");
    let node = start(2);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/kafka_python_roundtrip.py");
    let output = Command::new("python3").args([script, &node.kafka, "from-python"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kafka-python: {stderr}");
    let lines: Vec<String> = String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        ["1|0|k1|v1|1700000000001|h=x,h=y", "1|1|k3|v3|1700000000003|h=x,h=y", "1|2|k5|v5|1700000000005|h=x,h=y"]
    );
    let Ok(Response::ListTopics(topics)) = node.node.client().call(Request::ListTopics) else { panic!("list") };
    assert!(topics.is_empty(), "kafka-python deleted its topic: {topics:?}");
}

/// A request frame after its length prefix, encoded by the crate.
pub(crate) fn request_frame<T: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("ringlog-test")));
    let mut frame = BytesMut::new();
    header.encode(&mut frame, api.request_header_version(version)).unwrap();
    body.encode(&mut frame, version).unwrap();
    frame.to_vec()
}

/// A blocking Kafka connection speaking through the `kafka-protocol` crate.
pub(crate) struct KafkaClient {
    pub(crate) stream: TcpStream,
    correlation_id: i32,
}

impl KafkaClient {
    pub(crate) fn connect(address: &str) -> KafkaClient {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        KafkaClient { stream, correlation_id: 0 }
    }

    pub(crate) fn call<T: Encodable, R: Decodable>(&mut self, api: ApiKey, version: i16, body: &T) -> R {
        self.send(api, version, body);
        self.receive(api, version)
    }

    /// Send a request without waiting for its answer ([`Self::receive`] reads it).
    pub(crate) fn send<T: Encodable>(&mut self, api: ApiKey, version: i16, body: &T) {
        self.correlation_id += 1;
        let frame = request_frame(api, version, self.correlation_id, body);
        self.stream.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
        self.stream.write_all(&frame).unwrap();
    }

    /// Read the answer to the last request sent.
    pub(crate) fn receive<R: Decodable>(&mut self, api: ApiKey, version: i16) -> R {
        self.receive_to(api, version, self.correlation_id)
    }

    /// Read the next answer, which must be the one to `correlation_id`
    /// (several requests pipelined).
    pub(crate) fn receive_to<R: Decodable>(&mut self, api: ApiKey, version: i16, correlation_id: i32) -> R {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).unwrap();
        let mut answer = vec![0u8; i32::from_be_bytes(prefix) as usize];
        self.stream.read_exact(&mut answer).unwrap();
        let mut answer = Bytes::from(answer);
        let header_version = if api == ApiKey::ApiVersions { 0 } else { api.response_header_version(version) };
        let header = ResponseHeader::decode(&mut answer, header_version).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        let response = R::decode(&mut answer, version).unwrap();
        assert!(answer.is_empty(), "{api:?} v{version}: {} bytes after the response", answer.len());
        response
    }
}

#[test]
fn api_versions_lists_exactly_what_is_served_at_every_version() {
    let node = start(1);
    let mut client = KafkaClient::connect(&node.kafka);
    for version in 0..=3 {
        let response: ApiVersionsResponse = client.call(ApiKey::ApiVersions, version, &ApiVersionsRequest::default());
        assert_eq!(response.error_code, 0);
        let mut keys: Vec<i16> = response.api_keys.iter().map(|api| api.api_key).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 36],
            "Produce, Fetch, ListOffsets, Metadata, OffsetCommit/Fetch, FindCoordinator, Join/Heartbeat/Leave/\
             SyncGroup, Describe/ListGroups, SaslHandshake, ApiVersions, Create/DeleteTopics, InitProducerId, \
             SaslAuthenticate"
        );
    }
}

#[test]
fn create_and_delete_topics_through_kafka_are_visible_natively() {
    let node = start(2);
    let mut client = KafkaClient::connect(&node.kafka);
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("made-by-kafka")))
        .with_num_partitions(4)
        .with_replication_factor(-1);
    let create = CreateTopicsRequest::default().with_topics(vec![topic.clone()]).with_timeout_ms(5_000);
    let created: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 5, &create);
    assert_eq!(created.topics[0].error_code, 0, "{:?}", created.topics[0].error_message);
    let again: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 5, &create);
    assert_eq!(again.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
    let Ok(Response::ListTopics(topics)) = node.node.client().call(Request::ListTopics) else { panic!("list") };
    assert!(topics.contains(&("made-by-kafka".to_string(), 4)), "{topics:?}");
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(StrBytes::from_static_str("made-by-kafka"))])
        .with_timeout_ms(5_000);
    let deleted: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 4, &delete);
    assert_eq!(deleted.responses[0].error_code, 0);
    let deleted: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 4, &delete);
    assert_eq!(deleted.responses[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
}

/// Fetch `partitions` of a fresh topic over `client` with a 10 s long poll
/// while a native produce lands in partition `target` once the poll waits
/// (`watches` of it run, or after 300 ms when it makes none); the answer
/// for it.
fn long_poll_until_native_produce(
    node: &KafkaNode,
    client: &mut KafkaClient,
    topic: &str,
    (partitions, watches): (u32, u64),
    target: u32,
) -> PartitionData {
    create_topic(&node.node, topic, partitions);
    let fetch = long_poll_request(topic, partitions, 10_000);
    let mut builder = BatchBuilder::new();
    builder.push(42, Some(b"k"), b"late", &[]);
    let batch = builder.finish().to_vec();
    let started = Instant::now();
    let response: FetchResponse = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            wait_for_watches(&node.node, watches);
            let produce = Request::Produce { topic: topic.into(), partition: target, acks: Acks::Leader, batch };
            node.node.client().call(produce).unwrap();
        });
        client.call(ApiKey::Fetch, 11, &fetch)
    });
    assert!(started.elapsed() < Duration::from_secs(5), "the long poll waited past the produce");
    let others = response.responses[0].partitions.iter().filter(|data| data.partition_index != target as i32);
    assert!(others.into_iter().all(|data| data.records.as_ref().is_none_or(|records| records.is_empty())));
    response.responses[0].partitions[target as usize].clone()
}

/// Wait (at most 5 s) until exactly `count` watches run on the two-shard
/// `node`.
fn wait_for_watches(node: &Node, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while sum_of_both_shards(node, "ringlog_fetch_watches") != count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sum_of_both_shards(node, "ringlog_fetch_watches"), count, "watches running");
}

/// A topic name from `prefix` whose three partitions are on both shards of
/// a two-shard node, partition 0 on `shard`.
fn topic_on_both_shards(prefix: &str, shard: usize) -> String {
    let owners =
        |topic: &str| -> Vec<usize> { (0..3).map(|partition| ringlog::shard::owner_of(topic, partition, 2)).collect() };
    (0..)
        .map(|index| format!("{prefix}-{index}"))
        .find(|topic| owners(topic)[0] == shard && owners(topic).contains(&(1 - shard)))
        .unwrap()
}

/// A Fetch of every partition of `topic` from offset 0, waiting up to
/// `max_wait_ms` for a record.
pub(crate) fn long_poll_request(topic: &str, partitions: u32, max_wait_ms: i32) -> FetchRequest {
    let fetched = (0..partitions as i32)
        .map(|index| FetchPartition::default().with_partition(index).with_partition_max_bytes(1 << 20))
        .collect();
    let topic =
        FetchTopic::default().with_topic(TopicName(StrBytes::from_string(topic.to_string()))).with_partitions(fetched);
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![topic])
}

fn assert_one_late_record(data: &PartitionData) {
    assert_eq!((data.error_code, data.high_watermark, data.log_start_offset), (0, 1, 0));
    let mut records = data.records.clone().unwrap();
    let decoded = RecordBatchDecoder::decode(&mut records).unwrap();
    assert_eq!(decoded.records.len(), 1);
    assert_eq!(decoded.records[0].value.as_deref(), Some(&b"late"[..]));
    assert_eq!(decoded.records[0].timestamp, 42);
}

#[test]
fn fetch_long_poll_wakes_when_a_native_produce_arrives() {
    let node = start(2);
    let mut client = KafkaClient::connect(&node.kafka);
    assert_one_late_record(&long_poll_until_native_produce(&node, &mut client, "kafka-poll", (1, 0), 0));
}

/// Three partitions over both shards of a node, the produce landing on
/// each shard in turn once both watches wait, on one connection: one poll
/// is woken by a watch on its connection's shard, the other by one the
/// other shard runs.
#[test]
fn fetch_of_several_partitions_wakes_when_any_of_them_gets_records() {
    let node = start(2);
    let mut client = KafkaClient::connect(&node.kafka);
    for shard in [0, 1] {
        let topic = topic_on_both_shards("kafka-poll", shard);
        assert_one_late_record(&long_poll_until_native_produce(&node, &mut client, &topic, (3, 2), 0));
        // The watch of the other shard stops with the poll, rather than
        // wait out its 10 s for a reader that left.
        wait_for_watches(&node.node, 0);
    }
}

#[test]
fn a_long_poll_of_several_partitions_answers_at_once_when_their_topic_is_deleted() {
    let node = start(2);
    let topic = topic_on_both_shards("kafka-deleted", 0);
    create_topic(&node.node, &topic, 3);
    let mut client = KafkaClient::connect(&node.kafka);
    let started = Instant::now();
    let answer: FetchResponse = std::thread::scope(|scope| {
        scope.spawn(|| {
            wait_for_watches(&node.node, 2);
            node.node.client().call(Request::DeleteTopic { name: topic.clone() }).unwrap();
        });
        client.call(ApiKey::Fetch, 11, &long_poll_request(&topic, 3, 10_000))
    });
    // A watch of a closed log used to wait on it, ready at once: it spun
    // its shard (the deletion with it) until the poll's 10 s were up.
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    let codes: Vec<i16> = answer.responses[0].partitions.iter().map(|data| data.error_code).collect();
    assert_eq!(codes, [3, 3, 3], "UNKNOWN_TOPIC_OR_PARTITION");
    wait_for_watches(&node.node, 0);
}

/// A node of `shards` shards with a topic `kafka-failed` of `partitions`
/// partitions whose partition 0 fail-stopped (its first write failed),
/// and a client connected to it.
fn with_fail_stopped_partition(shards: usize, partitions: u32) -> (KafkaNode, KafkaClient) {
    let node = start_with(shards, &[("RINGLOG_FAULT_INJECT", "kafka-failed/0:write:0")]);
    create_topic(&node.node, "kafka-failed", partitions);
    let mut client = KafkaClient::connect(&node.kafka);
    let code = produce_error(&mut client, &produce_request("kafka-failed", 0, 1, crate_batch(&[b"lost"])));
    assert_eq!(code, 56, "KAFKA_STORAGE_ERROR: the write failed and the partition fail-stops");
    (node, client)
}

#[test]
fn a_long_poll_of_several_partitions_waits_its_time_beside_a_fail_stopped_one() {
    let (node, mut client) = with_fail_stopped_partition(2, 2);
    let before = sum_of_both_shards(&node.node, "ringlog_fetch_requests_total");
    let started = Instant::now();
    let answer: FetchResponse = client.call(ApiKey::Fetch, 11, &long_poll_request("kafka-failed", 2, 1_500));
    // A read at the failed log's end answers nothing: answered at once, the
    // client asked again at once, and the other partition's records could
    // only have come by that loop.
    assert!(started.elapsed() >= Duration::from_millis(1_400), "answered after {:?}", started.elapsed());
    assert_eq!(record_bytes_per_partition(&answer), [0, 0]);
    let reads = sum_of_both_shards(&node.node, "ringlog_fetch_requests_total") - before;
    assert!(reads <= 4, "{reads} reads of 2 partitions in one poll");
    // A look every 100 ms per watch: a wait ready at once, every round,
    // spun through thousands.
    let rounds = sum_of_both_shards(&node.node, "ringlog_fetch_watch_rounds_total");
    assert!(rounds <= 60, "{rounds} rounds of at most two watches in 1.5 s");
}

/// A per-shard metric of a two-shard node, summed.
fn sum_of_both_shards(node: &Node, name: &str) -> u64 {
    let shard = |index: usize| format!("{name}{{shard=\"{index}\"}}");
    crate::fixtures::metric(node, &shard(0)) + crate::fixtures::metric(node, &shard(1))
}

#[test]
fn an_idle_long_poll_of_several_partitions_reads_them_only_before_and_after_its_wait() {
    let node = start(2);
    create_topic(&node.node, "kafka-idle", 3);
    let before = sum_of_both_shards(&node.node, "ringlog_fetch_requests_total");
    let started = Instant::now();
    let answer: FetchResponse =
        KafkaClient::connect(&node.kafka).call(ApiKey::Fetch, 11, &long_poll_request("kafka-idle", 3, 1_500));
    assert!(started.elapsed() >= Duration::from_millis(1_400), "it waited: {:?}", started.elapsed());
    assert_eq!(record_bytes_per_partition(&answer), [0, 0, 0]);
    // Polling every 50 ms read each partition some thirty times.
    let reads = sum_of_both_shards(&node.node, "ringlog_fetch_requests_total") - before;
    assert!(reads <= 6, "{reads} reads of 3 partitions in one poll");
    wait_for_watches(&node.node, 0);
}

/// One Kafka batch of `values` encoded by the crate's own encoder.
pub(crate) fn crate_batch(values: &[&[u8]]) -> Bytes {
    producer_batch(-1, -1, 0, values)
}

/// One Kafka batch of `values` from producer `id` at `epoch` (-1, -1: not
/// idempotent), its first record at `sequence`, encoded by the crate.
pub(crate) fn producer_batch(id: i64, epoch: i16, sequence: i32, values: &[&[u8]]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(index, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            // The crate starts a new batch wherever offset - sequence
            // changes: a sequence that follows the offset keeps one batch
            // (wrapping as i32 does; only the base sequence is on the wire).
            sequence: sequence.wrapping_add(index as i32),
            timestamp: 1_000 + index as i64,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut out, &records, &options).unwrap();
    out.freeze()
}

pub(crate) fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    let data = PartitionProduceData::default().with_index(partition).with_records(Some(records));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![data]);
    ProduceRequest::default().with_acks(acks).with_timeout_ms(5_000).with_topic_data(vec![topic])
}

/// The error code of the one partition a Produce named.
fn produce_error(client: &mut KafkaClient, request: &ProduceRequest) -> i16 {
    let response: ProduceResponse = client.call(ApiKey::Produce, 8, request);
    response.responses[0].partition_responses[0].error_code
}

#[test]
fn bad_produces_get_kafka_error_codes_and_store_nothing() {
    let node = start(2);
    create_topic(&node.node, "kafka-errors", 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let good = crate_batch(&[b"a", b"b"]);
    let mut flipped = good.to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    let corrupt = produce_request("kafka-errors", 0, -1, Bytes::from(flipped));
    assert_eq!(produce_error(&mut client, &corrupt), 2, "CORRUPT_MESSAGE for a CRC-32C mismatch");
    assert_eq!(produce_error(&mut client, &produce_request("no-such-topic", 0, 1, good.clone())), 3);
    assert_eq!(produce_error(&mut client, &produce_request("kafka-errors", 7, 1, good.clone())), 3);
    assert_eq!(produce_error(&mut client, &produce_request("kafka-errors", 0, 2, good.clone())), 21, "acks 2");
    let huge = crate_batch(&[&vec![b'x'; 1_100_000]]);
    assert_eq!(produce_error(&mut client, &produce_request("kafka-errors", 0, 1, huge)), 10, "MESSAGE_TOO_LARGE");
    assert!(native_consume(&node.node, "kafka-errors", 0).is_empty(), "nothing refused was stored");
    // acks 0 gets no answer: the next request's answer is the next frame.
    let unacknowledged = produce_request("kafka-errors", 0, 0, good.clone());
    let frame = request_frame(ApiKey::Produce, 8, 100, &unacknowledged);
    client.stream.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    client.stream.write_all(&frame).unwrap();
    let versions: ApiVersionsResponse = client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0);
    assert_eq!(produce_error(&mut client, &produce_request("kafka-errors", 0, 1, good)), 0);
    let values: Vec<String> = native_consume(&node.node, "kafka-errors", 0)
        .iter()
        .map(|line| format!("{}:{}", line.split('|').next().unwrap(), line.split('|').nth(2).unwrap()))
        .collect();
    assert_eq!(values, ["0:a", "1:b", "2:a", "3:b"], "the acks 0 batch landed before the acks 1 one");
    let metrics = crate::admin::http(&node.node.admin, "GET", "/metrics", None, None).1;
    for line in [
        "ringlog_kafka_requests_total{api=\"Produce\"} 7",
        "ringlog_kafka_requests_total{api=\"ApiVersions\"} 1",
        "ringlog_kafka_errors_total{api=\"Produce\",code=\"2\"} 1",
        "ringlog_kafka_errors_total{api=\"Produce\",code=\"3\"} 2",
        "ringlog_kafka_errors_total{api=\"Produce\",code=\"10\"} 1",
        "ringlog_kafka_errors_total{api=\"Produce\",code=\"21\"} 1",
    ] {
        assert!(metrics.lines().any(|metric| metric == line), "{line} missing from /metrics:\n{metrics}");
    }
}

#[test]
fn large_produce_frames_read_into_reused_buffers_store_exactly_what_was_sent() {
    // Frames of 64 KiB and more are read into buffers kept from earlier
    // frames (runtime/buffer_pool.rs). Each frame here is shorter than the one
    // before and filled with another letter: a buffer handed on at its old
    // length, or before the socket filled it, would show the letter before.
    let node = start(2);
    create_topic(&node.node, "kafka-large", 2);
    let mut client = KafkaClient::connect(&node.kafka);
    let mut expected = [Vec::new(), Vec::new()];
    for round in 0..12u8 {
        let partition = usize::from(round % 2);
        let letter = b'a' + round;
        let values: Vec<Vec<u8>> =
            (0..3).map(|index| vec![letter; 200_000 - usize::from(round) * 9_000 - index]).collect();
        let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let request = produce_request("kafka-large", partition as i32, 1, crate_batch(&slices));
        assert_eq!(produce_error(&mut client, &request), 0, "round {round}");
        expected[partition].extend(values.into_iter().map(|value| String::from_utf8(value).unwrap()));
    }
    let mut native = node.node.client();
    for (partition, expected) in expected.iter().enumerate() {
        let (_, records) = crate::node::fetch_all(&mut native, "kafka-large", partition as u32, 0);
        let values: Vec<String> = records.into_iter().map(|(_, value)| value).collect();
        crate::common::assert_same_values(partition, &values, expected);
    }
}

/// A Kafka fetch's transcoded records come from the shard's buffer pool,
/// are written to the socket from there beside the frame's small head
/// (not copied into a second, large, buffer) and go back once written:
/// after the first answers, fetching the same 600 KB again allocates no
/// large buffer (fresh ones were faulted in page by page after each heap
/// trim) and takes one pooled buffer per fetch.
#[test]
fn repeated_large_fetches_send_their_records_from_reused_pooled_buffers() {
    let node = start(1);
    create_topic(&node.node, "kafka-pooled", 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let values: Vec<Vec<u8>> = (0..3u8).map(|index| vec![b'a' + index; 200_000]).collect();
    let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    assert_eq!(produce_error(&mut client, &produce_request("kafka-pooled", 0, 1, crate_batch(&slices))), 0);
    // Answered at once: the records are there.
    let fetch = long_poll_request("kafka-pooled", 1, 0);
    let takes = |source: &str| {
        crate::fixtures::metric(&node.node, &format!("ringlog_buffer_pool_takes_total{{source=\"{source}\"}}"))
    };
    let mut fetch_records = || {
        let answer: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch);
        let bytes = record_bytes_per_partition(&answer)[0];
        assert!(bytes > 600_000, "{bytes} bytes of records");
    };
    for _ in 0..3 {
        fetch_records();
    }
    let (fresh_before, pooled_before) = (takes("fresh"), takes("pool"));
    const FETCHES: u64 = 5;
    for _ in 0..FETCHES {
        fetch_records();
    }
    assert_eq!(takes("fresh") - fresh_before, 0, "no large buffer allocated once warm");
    // One pooled buffer per fetch, its records: the frame is a small head
    // with the records sent from their own buffer beside it (encoded into
    // the frame, the records took a second, large, buffer).
    let pooled = takes("pool") - pooled_before;
    assert_eq!(pooled, FETCHES, "pooled buffers for {FETCHES} fetches: their records, no frame");
}

/// Large records go on the wire from their own buffers beside the
/// encoded answer, small ones inside it: a Fetch of three partitions,
/// large, small and large, reads every record back whole and in place.
#[test]
fn a_fetch_of_large_and_small_partitions_reads_every_record_back_whole() {
    let node = start(2);
    create_topic(&node.node, "kafka-spliced", 3);
    let mut client = KafkaClient::connect(&node.kafka);
    let values = spliced_fetch_values();
    for (partition, values) in values.iter().enumerate() {
        let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let produce = produce_request("kafka-spliced", partition as i32, 1, crate_batch(&slices));
        assert_eq!(produce_error(&mut client, &produce), 0);
    }
    let answer: FetchResponse = client.call(ApiKey::Fetch, 12, &long_poll_request("kafka-spliced", 3, 0));
    assert_fetched_values(&answer, &values);
}

/// Per partition of a three-partition topic, the values of one batch:
/// two of 100 KB, one of 1 KB, two of 100 KB.
pub(crate) fn spliced_fetch_values() -> [Vec<Vec<u8>>; 3] {
    [vec![vec![b'a'; 100_000], vec![b'b'; 100_000]], vec![vec![b'c'; 1_000]], vec![vec![b'd'; 100_000]; 2]]
}

/// Every partition of `answer` holds exactly `values`, CRC and all.
pub(crate) fn assert_fetched_values(answer: &FetchResponse, values: &[Vec<Vec<u8>>]) {
    let partitions = &answer.responses[0].partitions;
    assert_eq!(partitions.len(), values.len());
    for (data, expected) in partitions.iter().zip(values) {
        assert_eq!(data.error_code, 0);
        let mut records = data.records.clone().unwrap();
        let decoded = RecordBatchDecoder::decode(&mut records).unwrap();
        assert!(records.is_empty(), "one batch per partition");
        let fetched: Vec<&[u8]> = decoded.records.iter().map(|record| record.value.as_deref().unwrap()).collect();
        let expected: Vec<&[u8]> = expected.iter().map(Vec::as_slice).collect();
        assert!(fetched == expected, "partition {}: the records read back differ", data.partition_index);
    }
}

/// Long polls do not hold a stopping node: a Kafka Fetch of one partition
/// and one of two partitions, each waiting up to 30 s, and a native Fetch
/// waiting as long, are answered (no records, no error) as soon as the
/// node is told to stop, and it exits cleanly at once, not after the 10 s
/// it gives requests in flight.
#[test]
fn long_polls_are_answered_at_once_when_the_node_stops() {
    let node = start(2);
    // Its two partitions on the two shards: whichever shard a connection
    // lands on, some poll reads from the other one's partition.
    let owner = |topic: &str, partition| ringlog::shard::owner_of(topic, partition, 2);
    let topic = (0..).map(|index| format!("kafka-stopping-{index}")).find(|topic| owner(topic, 0) != owner(topic, 1));
    let topic = topic.unwrap();
    create_topic(&node.node, &topic, 2);
    let (mut one, mut two) = (KafkaClient::connect(&node.kafka), KafkaClient::connect(&node.kafka));
    one.send(ApiKey::Fetch, 12, &long_poll_request(&topic, 1, 30_000));
    two.send(ApiKey::Fetch, 12, &long_poll_request(&topic, 2, 30_000));
    let mut native = node.node.client();
    let fetch =
        Request::Fetch { topic: topic.clone(), partition: 1, offset: 0, max_bytes: 1 << 20, max_wait_ms: 30_000 };
    native.send(&fetch);
    // The two-partition poll waits: a watch on each shard. The others
    // wait as long, in the native long poll.
    wait_for_watches(&node.node, 2);
    std::thread::sleep(Duration::from_millis(300));
    let stopped_at = Instant::now();
    let KafkaNode { node: process, .. } = node;
    let terminating = std::thread::spawn(move || process.terminate());
    for (client, partitions) in [(&mut one, 1), (&mut two, 2)] {
        let answer: FetchResponse = client.receive(ApiKey::Fetch, 12);
        assert_eq!(record_bytes_per_partition(&answer), vec![0; partitions], "answered without records");
        assert!(answer.responses[0].partitions.iter().all(|data| data.error_code == 0));
    }
    let (_, outcome) = ringlog::protocol::decode_response(fetch.api_key(), &native.receive_frame().unwrap()).unwrap();
    assert!(matches!(outcome, Ok(Response::Fetch { ref batches, .. }) if batches.is_empty()), "{outcome:?}");
    let answered_after = stopped_at.elapsed();
    assert!(answered_after < Duration::from_secs(3), "answered {answered_after:?} after SIGTERM");
    assert_eq!(terminating.join().unwrap(), Some(0), "a clean exit");
    assert!(stopped_at.elapsed() < Duration::from_secs(5), "stopped in {:?}", stopped_at.elapsed());
}

/// Whether the node closed `stream` (EOF or reset, not a read timeout).
pub(crate) fn closed_by_node(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buffer = [0u8; 64];
    match stream.read(&mut buffer) {
        Ok(read) => read == 0,
        Err(error) => !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn garbage_and_oversized_kafka_frames_close_that_connection_while_another_client_carries_on() {
    let node = start(2);
    create_topic(&node.node, "kafka-bad", 1);
    let mut steady = KafkaClient::connect(&node.kafka);
    let mut garbage = TcpStream::connect(&node.kafka).unwrap();
    garbage.write_all(&12i32.to_be_bytes()).unwrap();
    garbage.write_all(b"\x7f\x7f garbage!!").unwrap();
    assert!(closed_by_node(&mut garbage), "an unknown api key closes the connection");
    let mut oversized = TcpStream::connect(&node.kafka).unwrap();
    oversized.write_all(&i32::MAX.to_be_bytes()).unwrap();
    assert!(closed_by_node(&mut oversized), "an oversized frame closes the connection before its body arrives");
    let mut negative = TcpStream::connect(&node.kafka).unwrap();
    negative.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(closed_by_node(&mut negative), "a negative length closes the connection");
    // A Produce whose body does not decode (topics array of 2^31-1).
    let mut hostile = TcpStream::connect(&node.kafka).unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&3i16.to_be_bytes());
    frame.extend_from_slice(&9i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // client id: null
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    frame.extend_from_slice(&1i16.to_be_bytes()); // acks
    frame.extend_from_slice(&1000i32.to_be_bytes()); // timeout
    frame.extend_from_slice(&i32::MAX.to_be_bytes()); // topic count
    hostile.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    hostile.write_all(&frame).unwrap();
    assert!(closed_by_node(&mut hostile), "an undecodable body closes the connection");
    // The steady client and kcat are served all along.
    let response: ApiVersionsResponse = steady.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
    kcat_produce(&node.kafka, "kafka-bad", 0, &[], "k\tstill served\n");
    assert_eq!(kcat_consume(&node.kafka, "kafka-bad", 0).len(), 1);
    // An idle Kafka connection does not hold up a clean shutdown.
    let KafkaNode { node, _dir, .. } = node;
    assert_eq!(node.terminate(), Some(0));
    drop(steady);
}

/// A frame's length prefix commits no memory for the bytes it announces,
/// on either listener: zeroed whole when the prefix arrived, the default
/// 10 000 connections each announcing a 17 MiB frame and sending nothing
/// more could make the node commit 170 GB. Memory follows the bytes that
/// arrive.
#[test]
fn announced_frames_commit_memory_only_as_their_bytes_arrive() {
    const CONNECTIONS: usize = 24;
    const ANNOUNCED_BYTES: usize = 16 << 20;
    // The default frame bound (test nodes run with 2 MiB).
    let node = start_with(2, &[("RINGLOG_LIMITS_MAX_FRAME_BYTES", "17825792")]);
    let resident_before = crate::node::status_bytes(node.node.pid(), "VmRSS:");
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut kafka = TcpStream::connect(&node.kafka).unwrap();
        kafka.write_all(&(ANNOUNCED_BYTES as i32).to_be_bytes()).unwrap();
        kafka.write_all(&[0u8; 100]).unwrap();
        held.push(kafka);
        // A native request's head whole (what the node reads before it
        // knows whether the frame is a produce), then a little more.
        let mut frame = Vec::new();
        ringlog::protocol::encode_request(1, &Request::ListTopics, &mut frame);
        frame[..4].copy_from_slice(&(ANNOUNCED_BYTES as u32).to_le_bytes());
        frame.resize(4 + 1000, 0);
        let mut native = TcpStream::connect(&node.node.address).unwrap();
        native.write_all(&frame).unwrap();
        held.push(native);
    }
    // Both listeners serve others meanwhile, after reading every prefix.
    let mut steady = KafkaClient::connect(&node.kafka);
    let response: ApiVersionsResponse = steady.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
    assert!(matches!(
        crate::node::Client::connect(&node.node.address).call(Request::ListTopics),
        Ok(Response::ListTopics { .. })
    ));
    std::thread::sleep(Duration::from_millis(500));
    let grown_bytes = crate::node::status_bytes(node.node.pid(), "VmRSS:").saturating_sub(resident_before);
    let announced_bytes = 2 * CONNECTIONS * ANNOUNCED_BYTES;
    // 16 KiB zeroed ahead of the first bytes of each: under 1 MiB, and some
    // room for what the connections themselves take.
    assert!(grown_bytes < 32 << 20, "{grown_bytes} bytes committed for {announced_bytes} announced");
    // Every announced frame was taken (none refused and closed): the node
    // waits for the rest of each.
    for stream in &mut held {
        stream.set_nonblocking(true).unwrap();
        let waiting = stream.read(&mut [0u8; 1]).map_err(|error| error.kind());
        assert_eq!(waiting, Err(std::io::ErrorKind::WouldBlock), "the connection is open, its frame awaited");
    }
}

#[test]
#[ignore = "writes the Kafka fuzz seed corpora into the source tree; run by hand"]
fn write_kafka_fuzz_seed_corpora() {
    let seed = |target: &str, name: &str, bytes: &[u8]| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let mut records = Vec::new();
    let summary = BatchSummary { base_offset: 0, leader_epoch: 0, first_timestamp_ms: 1_000, max_timestamp_ms: 1_002 };
    let mut encoder = BatchEncoder::begin(&mut records, summary);
    encoder.push(1_000, Some(b"key"), b"value", &[("h", b"1"), ("h", b"2")]);
    encoder.push(1_002, None, b"", &[]);
    encoder.finish();
    seed("kafka_records_decode", "two-records", &[&[0u8][..], &records].concat());
    seed("kafka_records_decode", "two-records-fixcrc", &[&[1u8][..], &records].concat());
    // The same records zstd-compressed (codec 4; the mode byte fixes the CRC).
    let mut zstd_batch = records[..61].to_vec();
    zstd_batch.extend(zstd::bulk::compress(&records[61..], 3).unwrap());
    let length = (zstd_batch.len() - 12) as i32;
    zstd_batch[8..12].copy_from_slice(&length.to_be_bytes());
    zstd_batch[21..23].copy_from_slice(&4i16.to_be_bytes());
    seed("kafka_records_decode", "two-records-zstd", &[&[1u8][..], &zstd_batch].concat());
    let target = "kafka_request_decode";
    for version in [0, 3] {
        let frame = request_frame(ApiKey::ApiVersions, version, 1, &ApiVersionsRequest::default());
        seed(target, &format!("api-versions-v{version}"), &frame);
    }
    let partition = PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(records)));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_partition_data(vec![partition]);
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(1_000).with_topic_data(vec![topic]);
    for version in [3, 9] {
        seed(target, &format!("produce-v{version}"), &request_frame(ApiKey::Produce, version, 2, &produce));
    }
    let partition = FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20);
    let topic =
        FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str("t"))).with_partitions(vec![partition]);
    let fetch = FetchRequest::default().with_max_wait_ms(500).with_max_bytes(1 << 20).with_topics(vec![topic]);
    for version in [4, 12] {
        seed(target, &format!("fetch-v{version}"), &request_frame(ApiKey::Fetch, version, 3, &fetch));
    }
    seed(target, "metadata-v9", &request_frame(ApiKey::Metadata, 9, 4, &MetadataRequest::default()));
    let topic = CreatableTopic::default().with_name(TopicName(StrBytes::from_static_str("t"))).with_num_partitions(2);
    let create = CreateTopicsRequest::default().with_topics(vec![topic]);
    seed(target, "create-topics-v5", &request_frame(ApiKey::CreateTopics, 5, 5, &create));
    let init = InitProducerIdRequest::default().with_transactional_id(None);
    seed(target, "init-producer-id-v4", &request_frame(ApiKey::InitProducerId, 4, 6, &init));
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"metadata"))]);
    for version in [0, 7] {
        seed(target, &format!("join-group-v{version}"), &request_frame(ApiKey::JoinGroup, version, 7, &join));
    }
    let commit =
        OffsetCommitRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g"))).with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![OffsetCommitRequestPartition::default().with_committed_offset(3)]),
        ]);
    seed(target, "offset-commit-v8", &request_frame(ApiKey::OffsetCommit, 8, 8, &commit));
    let handshake = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
    seed(target, "sasl-handshake-v1", &request_frame(ApiKey::SaslHandshake, 1, 9, &handshake));
    let first =
        SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"));
    seed(target, "sasl-authenticate-v2", &request_frame(ApiKey::SaslAuthenticate, 2, 10, &first));
}

/// Kafka clients pipeline requests and rely on a broker serving one
/// connection's requests one at a time: a request whose first partition
/// waits for its fsync must not let the next request's batch for its
/// second partition land first.
#[test]
fn pipelined_produces_on_one_connection_land_in_the_order_sent() {
    let node = start(2);
    create_topic(&node.node, "kafka-order", 2);
    let mut client = KafkaClient::connect(&node.kafka);
    for round in 0..5 {
        let slow =
            PartitionProduceData::default().with_index(0).with_records(Some(crate_batch(&[&vec![b'x'; 512 * 1024]])));
        let first = format!("first-{round}");
        let fast = PartitionProduceData::default().with_index(1).with_records(Some(crate_batch(&[first.as_bytes()])));
        let topic = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("kafka-order")))
            .with_partition_data(vec![slow, fast]);
        let both = ProduceRequest::default().with_acks(1).with_timeout_ms(5_000).with_topic_data(vec![topic]);
        let second = format!("second-{round}");
        let next = produce_request("kafka-order", 1, 1, crate_batch(&[second.as_bytes()]));
        client.send(ApiKey::Produce, 8, &both);
        client.send(ApiKey::Produce, 8, &next);
        let answers: [ProduceResponse; 2] = [
            client.receive_to(ApiKey::Produce, 8, client.correlation_id - 1),
            client.receive_to(ApiKey::Produce, 8, client.correlation_id),
        ];
        for answer in &answers {
            assert!(answer.responses[0].partition_responses.iter().all(|partition| partition.error_code == 0));
        }
    }
    let values: Vec<String> = native_consume(&node.node, "kafka-order", 1)
        .iter()
        .map(|line| line.split('|').nth(2).unwrap().to_string())
        .collect();
    let expected: Vec<String> =
        (0..5).flat_map(|round| [format!("first-{round}"), format!("second-{round}")]).collect();
    assert_eq!(values, expected, "partition 1 holds each round's records in the order they were sent");
}

/// The next frame is read while a Produce is placed, but its answer does
/// not wait for that frame: a frame that has begun to arrive (its length
/// prefix only half there) when the Produce is answered is finished later,
/// byte for byte, wherever the read was left.
#[test]
fn a_produce_is_answered_while_the_next_frame_is_half_read_and_that_frame_is_then_served() {
    let node = start(2);
    create_topic(&node.node, "kafka-ahead", 2);
    let mut client = KafkaClient::connect(&node.kafka);
    client.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for round in 0..10 {
        let value = vec![b'v'; 256 * 1024];
        client.send(ApiKey::Produce, 8, &produce_request("kafka-ahead", round % 2, 1, crate_batch(&[&value])));
        let produce_id = client.correlation_id;
        client.correlation_id += 1;
        let versions = request_frame(ApiKey::ApiVersions, 3, client.correlation_id, &ApiVersionsRequest::default());
        let mut next = (versions.len() as i32).to_be_bytes().to_vec();
        next.extend_from_slice(&versions);
        // Half the prefix in round 0, the prefix and part of the body after.
        let split = if round == 0 { 2 } else { 4 + round as usize };
        client.stream.write_all(&next[..split]).unwrap();
        let answer: ProduceResponse = client.receive_to(ApiKey::Produce, 8, produce_id);
        assert_eq!(answer.responses[0].partition_responses[0].error_code, 0, "round {round}");
        client.stream.write_all(&next[split..]).unwrap();
        let versions: ApiVersionsResponse = client.receive_to(ApiKey::ApiVersions, 3, client.correlation_id);
        assert_eq!(versions.error_code, 0, "round {round}: the frame read in two parts is whole");
    }
}

/// Produces on one connection are placed two requests at a time, each
/// batch after the one sent before it to its partition: many pipelined
/// requests of large and small batches to two partitions, sent without
/// waiting, land in each partition in the order sent.
#[test]
fn many_pipelined_produces_to_two_partitions_land_in_each_partition_in_the_order_sent() {
    let node = start(2);
    create_topic(&node.node, "kafka-chain", 2);
    let mut client = KafkaClient::connect(&node.kafka);
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let requests = 24;
    for number in 0..requests {
        // A fixed pattern of partitions, sizes and request shapes: both
        // partitions in one request, and runs of one partition.
        let partitions: &[i32] = match number % 4 {
            0 => &[0, 1],
            1 | 2 => &[number % 2],
            _ => &[1, 0],
        };
        let data = partitions
            .iter()
            .map(|&partition| {
                let value = format!("{number}-{partition}");
                sent[partition as usize].push(value.clone());
                let padding = vec![b'x'; if number % 3 == 0 { 100 * 1024 } else { 10 }];
                PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(crate_batch(&[value.as_bytes(), &padding])))
            })
            .collect();
        let topic = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("kafka-chain")))
            .with_partition_data(data);
        let request = ProduceRequest::default().with_acks(1).with_timeout_ms(5_000).with_topic_data(vec![topic]);
        client.send(ApiKey::Produce, 8, &request);
    }
    let last = client.correlation_id;
    for correlation_id in last + 1 - requests..=last {
        let answer: ProduceResponse = client.receive_to(ApiKey::Produce, 8, correlation_id);
        assert!(answer.responses[0].partition_responses.iter().all(|partition| partition.error_code == 0));
    }
    for partition in 0..2 {
        let values: Vec<String> = native_consume(&node.node, "kafka-chain", partition)
            .iter()
            .map(|line| line.split('|').nth(2).unwrap().to_string())
            .filter(|value| !value.starts_with('x'))
            .collect();
        assert_eq!(values, sent[partition as usize], "partition {partition} in the order sent");
    }
}

/// Each partition's records are transcoded on the shard that owns it, so
/// one request's partitions are refused there, on either shard, with their
/// own Kafka codes; a partition named twice in one request gets its two
/// batches in the order named.
#[test]
fn partitions_on_both_shards_are_checked_by_their_owner_and_one_named_twice_keeps_its_order() {
    let node = start(2);
    create_topic(&node.node, "kafka-owners", 4);
    let owners: Vec<usize> = (0..4).map(|partition| ringlog::shard::owner_of("kafka-owners", partition, 2)).collect();
    assert!(owners.contains(&0) && owners.contains(&1), "partitions on both shards: {owners:?}");
    let mut client = KafkaClient::connect(&node.kafka);
    let mut flipped = crate_batch(&[b"a"]).to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    let codec = {
        // Codec 5 does not exist (the CRC-32C made to match).
        let mut batch = crate_batch(&[b"a"]).to_vec();
        batch[21..23].copy_from_slice(&5i16.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    };
    let partitions = (0..4)
        .flat_map(|index| {
            [
                PartitionProduceData::default().with_index(index).with_records(Some(Bytes::from(flipped.clone()))),
                PartitionProduceData::default().with_index(index).with_records(Some(Bytes::from(codec.clone()))),
                PartitionProduceData::default()
                    .with_index(index)
                    .with_records(Some(crate_batch(&[format!("first-{index}").as_bytes()]))),
                PartitionProduceData::default()
                    .with_index(index)
                    .with_records(Some(crate_batch(&[format!("second-{index}").as_bytes()]))),
            ]
        })
        .collect();
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("kafka-owners")))
        .with_partition_data(partitions);
    let request = ProduceRequest::default().with_acks(1).with_timeout_ms(5_000).with_topic_data(vec![topic]);
    let response: ProduceResponse = client.call(ApiKey::Produce, 8, &request);
    let answers = &response.responses[0].partition_responses;
    let codes: Vec<(i32, i16)> = answers.iter().map(|answer| (answer.index, answer.error_code)).collect();
    let expected: Vec<(i32, i16)> =
        (0..4).flat_map(|index| [(index, 2), (index, 76), (index, 0), (index, 0)]).collect();
    assert_eq!(codes, expected, "CORRUPT_MESSAGE and UNSUPPORTED_COMPRESSION_TYPE from either shard");
    for index in 0..4 {
        let values: Vec<String> = native_consume(&node.node, "kafka-owners", index as u32)
            .iter()
            .map(|line| line.split('|').nth(2).unwrap().to_string())
            .collect();
        assert_eq!(values, [format!("first-{index}"), format!("second-{index}")], "partition {index}");
        let offsets: Vec<i64> = answers[index * 4 + 2..index * 4 + 4].iter().map(|answer| answer.base_offset).collect();
        assert_eq!(offsets, [0, 1], "partition {index}: answers name the offsets in request order");
    }
}

/// One partition's records are one batch (a second is refused, so many
/// small compressed bombs cannot add up); a Fetch's answer stays near its
/// `max_bytes` however many partitions it names, and naming more than
/// `limits.max_partitions_per_fetch` closes the connection, as does a
/// Produce naming more than `limits.max_partitions_per_produce`; a failed
/// acks 0 produce closes it too (no answer can carry the error).
#[test]
fn hostile_kafka_produces_and_fetches_stay_bounded() {
    let node = start_with(
        1,
        &[("RINGLOG_LIMITS_MAX_PARTITIONS_PER_FETCH", "100"), ("RINGLOG_LIMITS_MAX_PARTITIONS_PER_PRODUCE", "100")],
    );
    create_topic(&node.node, "kafka-bounds", 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let good = crate_batch(&[b"a", b"b"]);
    let two = Bytes::from([&good[..], &good[..]].concat());
    assert_eq!(produce_error(&mut client, &produce_request("kafka-bounds", 0, 1, two)), 87, "INVALID_RECORD");
    assert!(native_consume(&node.node, "kafka-bounds", 0).is_empty(), "nothing of a refused request was stored");
    let value = vec![b'v'; 64 * 1024];
    for _ in 0..3 {
        assert_eq!(produce_error(&mut client, &produce_request("kafka-bounds", 0, 1, crate_batch(&[&value]))), 0);
    }
    let fetch = |partitions: usize| {
        let partition =
            FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20);
        let topic = FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("kafka-bounds")))
            .with_partitions(vec![partition; partitions]);
        FetchRequest::default().with_max_bytes(1).with_topics(vec![topic])
    };
    let answer: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch(100));
    let partitions = &answer.responses[0].partitions;
    let record_bytes: usize = record_bytes_per_partition(&answer).iter().sum();
    assert!(record_bytes > 0 && record_bytes < 2 * value.len(), "one batch past the budget, not 100: {record_bytes}");
    assert!(partitions.iter().all(|data| data.error_code == 0 && data.high_watermark == 3), "offsets for every entry");
    client.send(ApiKey::Fetch, 12, &fetch(101));
    assert!(closed_by_node(&mut client.stream), "a fetch past max_partitions_per_fetch closes the connection");
    let wide = |partitions: usize| {
        let data = PartitionProduceData::default().with_index(0).with_records(None);
        let topic = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("kafka-bounds")))
            .with_partition_data(vec![data; partitions]);
        ProduceRequest::default().with_acks(1).with_timeout_ms(5_000).with_topic_data(vec![topic])
    };
    let mut client = KafkaClient::connect(&node.kafka);
    let answer: ProduceResponse = client.call(ApiKey::Produce, 8, &wide(100));
    assert_eq!(answer.responses[0].partition_responses.len(), 100, "100 partitions are answered");
    client.send(ApiKey::Produce, 8, &wide(101));
    assert!(closed_by_node(&mut client.stream), "a produce past max_partitions_per_produce closes the connection");
    let mut client = KafkaClient::connect(&node.kafka);
    client.send(ApiKey::Produce, 8, &produce_request("no-such-topic", 0, 0, good));
    assert!(closed_by_node(&mut client.stream), "a failed acks 0 produce closes the connection");
}

/// Admin, offset and group requests name at most what the node holds or
/// serves at once: one at the limit is answered, one past it closes its
/// connection before any element is served (17 million empty topic names
/// fit in one 17 MiB DeleteTopics, each a call to a shard and an answer
/// entry), and the node serves others meanwhile.
#[test]
fn admin_offset_and_group_requests_past_their_limits_close_the_connection() {
    use kafka_protocol::messages::{
        create_topics_request::CreatableTopic as Creatable,
        leave_group_request::MemberIdentity,
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        offset_fetch_request::OffsetFetchRequestTopic,
        CreateTopicsResponse, DeleteTopicsResponse, LeaveGroupRequest, LeaveGroupResponse, ListOffsetsRequest,
        ListOffsetsResponse, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    };
    let node = start_with(
        1,
        &[
            ("RINGLOG_LIMITS_MAX_TOPICS", "3"),
            ("RINGLOG_LIMITS_MAX_PARTITIONS_PER_FETCH", "4"),
            ("RINGLOG_GROUPS_MAX_MEMBERS_PER_GROUP", "2"),
        ],
    );
    create_topic(&node.node, "kafka-limits", 1);
    let name = || TopicName(StrBytes::from_static_str("kafka-limits"));
    let group = || GroupId(StrBytes::from_static_str("limits-group"));
    fn bounded<T: Encodable, R: Decodable>(kafka: &str, api: ApiKey, version: i16, at_limit: &T, past: &T) {
        let mut client = KafkaClient::connect(kafka);
        let _answered: R = client.call(api, version, at_limit);
        client.send(api, version, past);
        assert!(closed_by_node(&mut client.stream), "{api:?} past its limit closes the connection");
    }
    // At the limit: three names of topics that do not exist, answered.
    // Past it: the existing topic named four times, refused before any
    // deletion (it is still there at the end).
    let unknown = || TopicName(StrBytes::from_static_str("no-such-topic"));
    let at_limit = DeleteTopicsRequest::default().with_topic_names(vec![unknown(); 3]);
    let past = DeleteTopicsRequest::default().with_topic_names(vec![name(); 4]);
    bounded::<_, DeleteTopicsResponse>(&node.kafka, ApiKey::DeleteTopics, 4, &at_limit, &past);
    let creatable = Creatable::default().with_name(name()).with_num_partitions(1).with_replication_factor(1);
    let create = |count: usize| {
        CreateTopicsRequest::default().with_validate_only(true).with_topics(vec![creatable.clone(); count])
    };
    bounded::<_, CreateTopicsResponse>(&node.kafka, ApiKey::CreateTopics, 5, &create(3), &create(4));
    let latest = ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1);
    let list = |count: usize| {
        let topic = ListOffsetsTopic::default().with_name(name()).with_partitions(vec![latest.clone(); count]);
        ListOffsetsRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1)).with_topics(vec![topic])
    };
    bounded::<_, ListOffsetsResponse>(&node.kafka, ApiKey::ListOffsets, 6, &list(4), &list(5));
    let commit = |count: usize| {
        let partition = OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(0);
        let topic = OffsetCommitRequestTopic::default().with_name(name()).with_partitions(vec![partition; count]);
        OffsetCommitRequest::default()
            .with_group_id(group())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![topic])
    };
    bounded::<_, OffsetCommitResponse>(&node.kafka, ApiKey::OffsetCommit, 8, &commit(4), &commit(5));
    let fetch_offsets = |count: usize| {
        let topic = OffsetFetchRequestTopic::default().with_name(name()).with_partition_indexes(vec![0; count]);
        OffsetFetchRequest::default().with_group_id(group()).with_topics(Some(vec![topic]))
    };
    bounded::<_, OffsetFetchResponse>(&node.kafka, ApiKey::OffsetFetch, 7, &fetch_offsets(4), &fetch_offsets(5));
    let leave = |count: usize| {
        let member = MemberIdentity::default().with_member_id(StrBytes::from_static_str("member"));
        LeaveGroupRequest::default().with_group_id(group()).with_members(vec![member; count])
    };
    bounded::<_, LeaveGroupResponse>(&node.kafka, ApiKey::LeaveGroup, 4, &leave(2), &leave(3));
    // Topic entries without partitions count against the topics' bound.
    let empty_topics = |count: usize| {
        let topic = OffsetFetchRequestTopic::default().with_name(name());
        OffsetFetchRequest::default().with_group_id(group()).with_topics(Some(vec![topic; count]))
    };
    bounded::<_, OffsetFetchResponse>(&node.kafka, ApiKey::OffsetFetch, 7, &empty_topics(3), &empty_topics(4));
    // Others are served all along, and the refused deletion deleted nothing.
    let mut steady = KafkaClient::connect(&node.kafka);
    let response: ApiVersionsResponse = steady.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
    let topics = node.node.client().call(Request::ListTopics);
    let listed =
        matches!(&topics, Ok(Response::ListTopics(topics)) if topics.iter().any(|(name, _)| name == "kafka-limits"));
    assert!(listed, "{topics:?}");
}

/// A Fetch's byte budget is the client's `max_bytes` but never more than a
/// frame: one request naming a partition many times, everything at
/// i32::MAX, had the node build an answer of every copy.
#[test]
fn a_fetch_asking_for_gigabytes_is_answered_within_one_frame() {
    let frame_bytes = 256 * 1024;
    let node = start_with(
        1,
        &[
            ("RINGLOG_LIMITS_MAX_FRAME_BYTES", "262144"),
            ("RINGLOG_STORAGE_MAX_BATCH_BYTES", "131072"),
            ("RINGLOG_LIMITS_MAX_RECORD_BYTES", "131072"),
        ],
    );
    create_topic(&node.node, "kafka-huge-fetch", 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let value = vec![b'v'; 60 * 1024];
    for _ in 0..10 {
        assert_eq!(produce_error(&mut client, &produce_request("kafka-huge-fetch", 0, 1, crate_batch(&[&value]))), 0);
    }
    let partition = FetchPartition::default().with_partition(0).with_partition_max_bytes(i32::MAX);
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("kafka-huge-fetch")))
        .with_partitions(vec![partition; 50]);
    let fetch = FetchRequest::default().with_max_bytes(i32::MAX).with_topics(vec![topic]);
    let answer: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch);
    let partitions = &answer.responses[0].partitions;
    let record_bytes: usize = record_bytes_per_partition(&answer).iter().sum();
    // The budget, passed by at most one batch per partition of the last wave (one shard: one).
    assert!(record_bytes > value.len() && record_bytes <= frame_bytes + 2 * value.len(), "{record_bytes} bytes");
    assert_eq!(partitions.len(), 50, "every entry is answered, past the budget with offsets only");
    assert!(partitions.iter().all(|data| data.error_code == 0 && data.high_watermark == 10));
}

/// With a share smaller than a batch, every read of a wave (one per shard)
/// returned a whole batch: only the answer's first records may pass their
/// share (KIP-74); the other partitions answer without records this time.
#[test]
fn only_the_first_records_of_a_fetch_may_pass_their_share() {
    let node = start(2);
    create_topic(&node.node, "kafka-first-only", 4);
    let mut client = KafkaClient::connect(&node.kafka);
    let value = vec![b'v'; 60 * 1024];
    for partition in 0..4 {
        let records = crate_batch(&[&value]);
        assert_eq!(produce_error(&mut client, &produce_request("kafka-first-only", partition, 1, records)), 0);
    }
    let fetched = (0..4).map(|index| FetchPartition::default().with_partition(index).with_partition_max_bytes(1));
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("kafka-first-only")))
        .with_partitions(fetched.collect());
    let fetch = FetchRequest::default().with_max_bytes(i32::MAX).with_topics(vec![topic]);
    let answer: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch);
    let sizes = record_bytes_per_partition(&answer);
    assert!(sizes[0] > value.len(), "the first partition's batch passes its share: {sizes:?}");
    assert_eq!(&sizes[1..], [0, 0, 0], "the others answer without records: {sizes:?}");
    assert!(answer.responses[0].partitions.iter().all(|data| data.error_code == 0 && data.high_watermark == 1));
}

/// The bytes of records each partition of a Fetch answer's first topic holds.
fn record_bytes_per_partition(answer: &FetchResponse) -> Vec<usize> {
    let partitions = &answer.responses[0].partitions;
    partitions.iter().map(|data| data.records.as_ref().map_or(0, |records| records.len())).collect()
}

/// `limits.max_connections` counts native and Kafka connections together:
/// one past it is closed at once, on either listener, and a connection
/// that closes gives its place back.
#[test]
fn connections_past_max_connections_are_closed_and_a_closed_one_frees_its_place() {
    let node = start_with(1, &[("RINGLOG_LIMITS_MAX_CONNECTIONS", "2")]);
    let mut native = node.node.client();
    native.call(Request::ListTopics).expect("the first connection is served");
    let mut kafka = KafkaClient::connect(&node.kafka);
    let _: ApiVersionsResponse = kafka.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let mut third = TcpStream::connect(&node.kafka).unwrap();
    assert!(closed_by_node(&mut third), "a third connection (Kafka) is closed");
    let mut third = TcpStream::connect(&node.node.address).unwrap();
    assert!(closed_by_node(&mut third), "a third connection (native) is closed");
    drop(kafka);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut again = TcpStream::connect(&node.kafka).unwrap();
        if !closed_by_node(&mut again) {
            break;
        }
        assert!(Instant::now() < deadline, "the closed Kafka connection never gave its place back");
    }
    native.call(Request::ListTopics).expect("the first connection is still served");
}

#[test]
fn an_idle_first_partition_does_not_starve_the_others_of_a_fetch() {
    // fetch.max.bytes no larger than max.partition.fetch.bytes: the first
    // partition's share is the whole budget; idle, it leaves it all.
    let node = start(2);
    create_topic(&node.node, "kafka-idle-first", 3);
    let mut client = KafkaClient::connect(&node.kafka);
    for partition in 1..3 {
        let records = crate_batch(&[b"a", b"b"]);
        assert_eq!(produce_error(&mut client, &produce_request("kafka-idle-first", partition, 1, records)), 0);
    }
    let fetched = (0..3).map(|index| FetchPartition::default().with_partition(index).with_partition_max_bytes(1 << 20));
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("kafka-idle-first")))
        .with_partitions(fetched.collect());
    let fetch = FetchRequest::default().with_max_bytes(1 << 20).with_topics(vec![topic]);
    let answer: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch);
    let sizes = record_bytes_per_partition(&answer);
    assert_eq!(sizes[0], 0, "partition 0 is idle");
    assert!(sizes[1] > 0, "partition 1 gets the budget partition 0 left: {sizes:?}");
    let indexes: Vec<i32> = answer.responses[0].partitions.iter().map(|data| data.partition_index).collect();
    assert_eq!(indexes, [0, 1, 2], "answered in the request's order");
}

#[test]
fn a_request_that_closes_the_connection_stops_the_requests_pipelined_after_it() {
    let node = start_with(2, &[("RINGLOG_LIMITS_MAX_PARTITIONS_PER_FETCH", "10")]);
    create_topic(&node.node, "kafka-stop", 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let partition = FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("kafka-stop")))
        .with_partitions(vec![partition; 11]);
    let too_many = FetchRequest::default().with_max_bytes(1 << 20).with_topics(vec![topic]);
    let created = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("after-the-failure")))
        .with_num_partitions(1);
    // Both frames go in one write, before either is answered (in two, the
    // node could close the connection between them: the second write then
    // failed with EPIPE).
    let create = CreateTopicsRequest::default().with_topics(vec![created]);
    let mut frames = Vec::new();
    for frame in [request_frame(ApiKey::Fetch, 12, 1, &too_many), request_frame(ApiKey::CreateTopics, 5, 2, &create)] {
        frames.extend_from_slice(&(frame.len() as i32).to_be_bytes());
        frames.extend_from_slice(&frame);
    }
    client.stream.write_all(&frames).unwrap();
    assert!(closed_by_node(&mut client.stream), "the failed fetch closes the connection");
    let topics = node.node.client().call(Request::ListTopics).unwrap();
    assert!(!format!("{topics:?}").contains("after-the-failure"), "nothing after the failure ran: {topics:?}");
}

/// A one-shard node whose answer bound is 1 MiB (and `extra` settings), a
/// topic of sixteen batches of about 1 MiB, and a fetch of one of them.
fn sixteen_large_batches_behind_a_small_answer_bound(
    topic: &'static str,
    extra: &[(&str, &str)],
) -> (KafkaNode, FetchRequest) {
    let mut settings = vec![("RINGLOG_LIMITS_MAX_ANSWER_BYTES_PER_CONNECTION", "1048576")];
    settings.extend_from_slice(extra);
    let node = start_with(1, &settings);
    create_topic(&node.node, topic, 1);
    crate::node::sixteen_large_batches(&node.node, topic);
    let partition = FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20);
    let topic =
        FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str(topic))).with_partitions(vec![partition]);
    (node, FetchRequest::default().with_max_bytes(1 << 20).with_topics(vec![topic]))
}

#[test]
fn a_kafka_client_that_does_not_read_its_answers_is_held_back_at_its_answer_bound() {
    let (node, fetch) = sixteen_large_batches_behind_a_small_answer_bound("kafka-unread", &[]);
    // 64 fetches of about 1 MiB each, pipelined, none of the answers read.
    let mut greedy = KafkaClient::connect(&node.kafka);
    crate::fixtures::shrink_receive_buffer(&greedy.stream);
    for _ in 0..64 {
        greedy.send(ApiKey::Fetch, 12, &fetch);
    }
    std::thread::sleep(Duration::from_secs(2));
    let fetches = crate::node::FETCHES_OF_SHARD_ZERO;
    let served = crate::fixtures::metric(&node.node, fetches);
    assert!(served <= 24, "{served} fetches answered for a client that reads none of them");
    let other: FetchResponse = KafkaClient::connect(&node.kafka).call(ApiKey::Fetch, 12, &fetch);
    assert!(record_bytes_per_partition(&other)[0] > 1_000_000, "everyone else is served meanwhile");
    for correlation_id in 1..=64 {
        let answer: FetchResponse = greedy.receive_to(ApiKey::Fetch, 12, correlation_id);
        assert!(record_bytes_per_partition(&answer)[0] > 1_000_000, "answer {correlation_id} in full");
    }
    assert_eq!(crate::fixtures::metric(&node.node, fetches), 65, "64 and the other client's");
}

#[test]
fn a_kafka_client_that_takes_none_of_its_answers_for_the_write_stall_timeout_is_disconnected() {
    let stall = ("RINGLOG_LIMITS_WRITE_STALL_TIMEOUT_MS", "1000");
    let (node, fetch) = sixteen_large_batches_behind_a_small_answer_bound("kafka-stalled", &[stall]);
    let mut greedy = KafkaClient::connect(&node.kafka);
    crate::fixtures::shrink_receive_buffer(&greedy.stream);
    for _ in 0..64 {
        greedy.send(ApiKey::Fetch, 12, &fetch);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while crate::fixtures::metric(&node.node, "ringlog_connections") > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(crate::fixtures::metric(&node.node, "ringlog_connections"), 0, "the stalled connection is closed");
    assert_eq!(crate::fixtures::metric(&node.node, "ringlog_write_stalls_total"), 1);
    let other: FetchResponse = KafkaClient::connect(&node.kafka).call(ApiKey::Fetch, 12, &fetch);
    assert!(record_bytes_per_partition(&other)[0] > 1_000_000, "everyone else is served");
}

#[test]
fn a_long_poll_on_a_fail_stopped_partition_waits_its_time_without_spinning() {
    let (node, mut client) = with_fail_stopped_partition(1, 1);
    let (answer, polled_for, looked_after): (FetchResponse, Duration, Duration) = std::thread::scope(|scope| {
        // The shard serves others while the poll waits: a wait ready at
        // once, every round, would hold it until the poll's end.
        let look = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            let asked = Instant::now();
            let bounds = Request::ListOffsets { topic: "kafka-failed".into(), partition: 0 };
            node.node.client().call(bounds).expect("list offsets");
            asked.elapsed()
        });
        let started = Instant::now();
        let answer = client.call(ApiKey::Fetch, 11, &long_poll_request("kafka-failed", 1, 3_000));
        let polled_for = started.elapsed();
        (answer, polled_for, look.join().unwrap())
    });
    assert_eq!(record_bytes_per_partition(&answer), [0]);
    // A read at the end of a log that takes no more appends answers
    // nothing: answered at once, the client asked again at once, forever.
    assert!(polled_for >= Duration::from_millis(2_900), "answered after {polled_for:?}");
    assert!(looked_after < Duration::from_millis(1_000), "the shard was held for {looked_after:?}");
    let reads = crate::fixtures::metric(&node.node, crate::node::FETCHES_OF_SHARD_ZERO);
    assert!(reads <= 5, "{reads} reads for one poll");
}
