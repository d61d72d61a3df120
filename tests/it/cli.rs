//! The client-side CLI against a real node: topic, produce, consume, groups,
//! output formats and exit codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::StandaloneNode;
use crate::node::{free_address, Node};

/// The `ringlog` command against `node`'s client listener, with `stdin`.
pub(crate) fn ringlog(node: &Node, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(args)
        .env("RINGLOG_SERVER", &node.address)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringlog");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// A node with `topic` holding `input` (one record a line), both made
/// through the CLI.
fn node_with_records(shards: usize, topic: &str, input: &str) -> StandaloneNode {
    let node = StandaloneNode::start(shards);
    assert!(ringlog(&node, &["topic", "create", topic], None).status.success());
    assert!(ringlog(&node, &["produce", topic], Some(input)).status.success());
    node
}

fn lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

#[test]
fn topic_produce_and_consume_commands_work_end_to_end() {
    let node = StandaloneNode::start(2);
    assert!(ringlog(&node, &["topic", "create", "clicks", "--partitions", "2"], None).status.success());
    let listed = ringlog(&node, &["topic", "list", "--json"], None);
    assert_eq!(lines(&listed), vec![r#"[{"name":"clicks","partitions":2}]"#]);
    let again = ringlog(&node, &["topic", "create", "clicks"], None);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).starts_with("error: topic_exists"));

    let input: String = (0..25).map(|i| format!("value-{i}\n")).collect();
    let produced = ringlog(&node, &["produce", "clicks", "--partition", "1", "--batch", "10", "--json"], Some(&input));
    assert!(produced.status.success(), "{}", String::from_utf8_lossy(&produced.stderr));
    let acks = lines(&produced);
    assert_eq!(acks.len(), 3, "one line per acknowledged batch");
    assert_eq!(acks[0], r#"{"topic":"clicks","partition":1,"base_offset":0,"count":10}"#);
    assert_eq!(acks[2], r#"{"topic":"clicks","partition":1,"base_offset":20,"count":5}"#);

    let consumed = ringlog(&node, &["consume", "clicks", "--partition", "1", "--format", "json"], None);
    let records = lines(&consumed);
    assert_eq!(records.len(), 25, "stops at the high watermark");
    let first: serde_json::Value = serde_json::from_str(&records[0]).unwrap();
    assert_eq!(first["offset"], 0);
    assert_eq!(first["value"], "value-0");
    assert!(first["key"].is_null());
    assert!(records[0].starts_with(r#"{"offset":0,"timestamp_ms":"#), "field order as in the spec: {}", records[0]);
    let values = ringlog(&node, &["consume", "clicks", "--partition", "1", "--from", "20"], None);
    assert_eq!(lines(&values), (20..25).map(|i| format!("value-{i}")).collect::<Vec<_>>());
    let latest = ringlog(&node, &["consume", "clicks", "--partition", "1", "--from", "latest"], None);
    assert!(lines(&latest).is_empty());
    let timestamp = first["timestamp_ms"].as_i64().unwrap();
    let by_time = ringlog(
        &node,
        &["consume", "clicks", "--partition", "1", "--from", &format!("@{timestamp}"), "--count", "2"],
        None,
    );
    assert_eq!(lines(&by_time).len(), 2);

    // A consumer group resumes where it committed.
    let group = ["consume", "clicks", "--partition", "1", "--group", "g", "--count", "10"];
    assert_eq!(lines(&ringlog(&node, &group, None))[0], "value-0");
    assert_eq!(lines(&ringlog(&node, &group, None))[0], "value-10");

    let keyed = ringlog(&node, &["produce", "clicks", "--key", "user-7", "--json"], Some("k1\nk2\n"));
    assert!(keyed.status.success());
    let all = ringlog(&node, &["consume", "clicks"], None);
    assert_eq!(lines(&all).len(), 27, "every partition is read without --partition");

    let missing = ringlog(&node, &["consume", "nope"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("error: unknown_topic"));
    let usage = ringlog(&node, &["produce", "clicks", "--acks", "maybe"], None);
    assert_eq!(usage.status.code(), Some(2));
    assert!(ringlog(&node, &["topic", "delete", "clicks"], None).status.success());
    assert_eq!(lines(&ringlog(&node, &["topic", "list"], None)), Vec::<String>::new());
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn unreachable_server_is_one_error_line_and_exit_1() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["topic", "list", "--server", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: ") && stderr.lines().count() == 1, "{stderr}");
}

/// `ringlog bench MODE` on `topic` with `partitions`: 2 producers, records
/// of 100 bytes, batches of 50, `total_bytes`, JSON.
fn bench_args<'a>(mode: &'a str, topic: &'a str, partitions: &'a str, total_bytes: &'a str) -> [&'a str; 15] {
    [
        "bench",
        mode,
        "--topic",
        topic,
        "--partitions",
        partitions,
        "--producers",
        "2",
        "--record-bytes",
        "100",
        "--batch",
        "50",
        "--total-bytes",
        total_bytes,
        "--json",
    ]
}

#[test]
fn bench_prints_the_spec_json_line_for_every_mode() {
    let node = StandaloneNode::start(2);
    for mode in ["produce", "consume", "e2e"] {
        let topic = if mode == "e2e" { "bench-e2e" } else { "bench" };
        let args = bench_args(mode, topic, "4", "200000");
        let output = ringlog(&node, &args, None);
        assert!(output.status.success(), "{mode}: {}", String::from_utf8_lossy(&output.stderr));
        let last = lines(&output).pop().expect("a final line");
        let report: serde_json::Value = serde_json::from_str(&last).unwrap();
        assert_eq!(report["mode"], mode);
        assert!(report["records"].as_u64().unwrap() >= 2000, "{mode}: {report}");
        assert_eq!(report["bytes"].as_u64().unwrap(), report["records"].as_u64().unwrap() * 100);
        for key in ["seconds", "mb_per_s", "records_per_s", "p50_us", "p99_us", "p999_us", "max_us"] {
            assert!(report.get(key).is_some(), "{mode}: missing {key}");
        }
        assert!(report["p50_us"].as_u64().unwrap() <= report["max_us"].as_u64().unwrap());
    }
    assert_eq!(node.terminate(), Some(0));
}

/// `bench consume` of topic `bench` (2 partitions of 100-byte records).
const BENCH_CONSUME: [&str; 9] =
    ["bench", "consume", "--topic", "bench", "--producers", "2", "--record-bytes", "100", "--json"];

#[test]
fn bench_consume_reads_every_partition_to_its_end_and_names_the_fetch_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 2);
    let produce = bench_args("produce", "bench", "2", "400000");
    assert!(ringlog(&node, &produce, None).status.success());
    let output = ringlog(&node, &BENCH_CONSUME, None);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(&lines(&output).pop().unwrap()).unwrap();
    assert_eq!(report["records"], 4000, "every record of both partitions: {report}");
    assert_eq!(node.terminate(), Some(0));
    // A flipped byte in the records of partition 1's first batch: a clean
    // restart reads only batch headers, so the first fetch finds it.
    let segment = dir.path().join("topics/bench/1/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[300] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    let node = Node::start(dir.path(), 2);
    let output = ringlog(&node, &BENCH_CONSUME, None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("fetch of partition 1 at offset 0: storage_failed"), "{stderr}");
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn consume_follow_into_a_closed_pipe_exits_0_within_a_second() {
    let node = node_with_records(2, "piped", "a\nb\nc\n");
    for partition in [None, Some("0")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringlog"));
        command.args(["consume", "piped", "--follow"]).env("RINGLOG_SERVER", &node.address);
        if let Some(partition) = partition {
            command.args(["--partition", partition]);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // What `| head -1` does: read one line, then close the pipe. Every
        // record is already written, so only an idle --follow remains.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert_eq!(first, "a\n");
        let closed = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if closed.elapsed() > Duration::from_secs(1) {
                let _ = child.kill();
                panic!("consume --follow (partition {partition:?}) still runs 1 s after its reader left");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0), "partition {partition:?}");
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert_eq!(stderr, "", "quietly");
    }
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn consume_fails_with_one_error_line_when_stdout_cannot_be_written() {
    let node = node_with_records(1, "full", "a\nb\n");
    let output = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["consume", "full"])
        .env("RINGLOG_SERVER", &node.address)
        .stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: cannot write to stdout") && stderr.lines().count() == 1, "{stderr}");
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn consume_json_lines_say_which_partition_and_keep_each_partitions_order() {
    let node = StandaloneNode::start(2);
    assert!(ringlog(&node, &["topic", "create", "spread", "--partitions", "3"], None).status.success());
    for partition in ["0", "1", "2"] {
        let input: String = (0..4).map(|i| format!("p{partition}-{i}\n")).collect();
        let produced = ringlog(&node, &["produce", "spread", "--partition", partition], Some(&input));
        assert!(produced.status.success());
    }
    let consumed = ringlog(&node, &["consume", "spread", "--format", "json"], None);
    let mut next = [0u64; 3];
    for line in lines(&consumed) {
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        let partition = record["partition"].as_u64().unwrap_or_else(|| panic!("no partition: {line}"));
        assert!(line.starts_with(r#"{"offset":"#), "the spec's fields come first: {line}");
        assert_eq!(record["offset"], next[partition as usize], "{line}");
        assert_eq!(record["value"], format!("p{partition}-{}", next[partition as usize]));
        next[partition as usize] += 1;
    }
    assert_eq!(next, [4, 4, 4]);
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    let run = |shell: &str| Command::new(env!("CARGO_BIN_EXE_ringlog")).args(["completions", shell]).output().unwrap();
    for (shell, marker) in
        [("bash", "complete -F _ringlog"), ("zsh", "#compdef ringlog"), ("fish", "complete -c ringlog")]
    {
        let output = run(shell);
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("forget-node") && script.contains("data-dir"), "{shell}: every command and flag");
    }
    // bash itself accepts the script and registers it.
    let bash = Command::new("bash")
        .args(["-c", "source <(\"$0\" completions bash) && complete -p ringlog", env!("CARGO_BIN_EXE_ringlog")])
        .output()
        .unwrap();
    assert!(bash.status.success(), "{}", String::from_utf8_lossy(&bash.stderr));
    assert_eq!(run("tcsh").status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let data_dir = dir.path().join("data");
    let (address, admin) = (free_address(), free_address());
    let flags = ["--log-format", "json"];
    let node = Node::spawn(&address, &admin, &data_dir, 1, &flags, &[("RUST_LOG", "info")], Some(&log));
    assert_eq!(node.terminate(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect();
    let ready = events.iter().find(|event| event["message"] == "ringlog node ready").expect("the ready event");
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["target"], "ringlog::node");
    assert_eq!(ready["shards"], 1, "fields sit beside the message");
    assert!(ready["timestamp"].is_string());
    assert!(events.iter().any(|event| event["message"] == "clean shutdown complete"));
}

#[test]
fn serve_with_an_out_of_range_setting_exits_2_with_one_line_naming_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RINGLOG_LIMITS_MAX_CONNECTIONS", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr, "error: limits.max_connections must be > 0, got 0\n");
    assert!(!dir.path().join("data").exists(), "refused before the data directory is touched");
}
