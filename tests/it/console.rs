//! The web console (spec §9): how the admin listener serves it (content
//! types, gzip, caching, page paths, unknown assets), the overview endpoint
//! it samples, and, in headless Chromium against a real three-node cluster
//! on real etcd, what an operator sees and does (tests/browser/console.mjs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::admin::json;
use crate::cluster::{wait_for, Cluster, Member};
use crate::fixtures::StandaloneNode;
use crate::node::{produce_request, Node};

/// A raw answer: status, lower-cased headers, body bytes.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// `GET path` with extra request headers; the body is read to the end.
fn get(address: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(address).expect("connect admin");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|window| window == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().and_then(|line| line.split_whitespace().nth(1)).and_then(|code| code.parse().ok());
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Answer { status: status.expect("status line"), headers, body: dechunk(&raw[split + 4..]) }
}

/// Undo `Transfer-Encoding: chunked` when the body is chunked, else return it.
fn dechunk(body: &[u8]) -> Vec<u8> {
    let text_start = body.iter().position(|&byte| byte == b'\r');
    let is_chunked = text_start.is_some_and(|end| {
        end > 0 && body[..end].iter().all(u8::is_ascii_hexdigit) && body.get(end + 1) == Some(&b'\n')
    });
    if !is_chunked {
        return body.to_vec();
    }
    let (mut out, mut rest) = (Vec::new(), body);
    while let Some(end) = rest.windows(2).position(|window| window == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = &rest[end + 4 + size..];
    }
    out
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8], "a gzip member");
    miniz_oxide::inflate::decompress_to_vec(&bytes[10..bytes.len() - 8]).expect("valid deflate")
}

#[test]
fn every_console_path_returns_the_page_and_assets_have_their_content_types() {
    let node = StandaloneNode::start(1);
    for path in ["/", "/nodes", "/topics", "/topics/orders", "/topics/with%20space"] {
        let answer = get(&node.admin, path, &[]);
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("content-type"), Some("text/html; charset=utf-8"), "{path}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"), "{path}");
        let policy = answer.header("content-security-policy").unwrap_or_default();
        assert!(policy.starts_with("default-src 'self';") && policy.contains("frame-ancestors 'none'"), "{policy}");
        let page = String::from_utf8(answer.body).unwrap();
        assert!(page.contains(r#"<table id="nodes">"#) && page.contains(r#"<table id="topics">"#), "{path}");
        assert!(page.contains(r#"src="/assets/console.js""#), "{path}");
        // No request to any other host: no absolute URL in the page.
        assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"), "{path}");
    }
    for (name, content_type) in [
        ("console.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let answer = get(&node.admin, &format!("/assets/{name}"), &[]);
        assert_eq!(answer.status, 200, "{name}");
        assert_eq!(answer.header("content-type"), Some(content_type), "{name}");
        assert_eq!(answer.header("content-encoding"), None, "{name}: no gzip unless asked");
        let text = String::from_utf8(answer.body).unwrap();
        let stripped = text.replace("http://www.w3.org/2000/svg", "");
        assert!(!stripped.contains("http://") && !stripped.contains("https://"), "{name} names another host");
    }
    let missing = get(&node.admin, "/assets/nope.js", &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(json(&String::from_utf8_lossy(&missing.body))["error"], "no asset nope.js");
    assert_eq!(get(&node.admin, "/nodes/extra", &[]).status, 404, "only the page paths return the page");
    // The API keeps its JSON answers beside the console.
    assert_eq!(get(&node.admin, "/api/health", &[]).header("content-type"), Some("application/json"));
}

#[test]
fn console_assets_are_gzipped_when_accepted_and_revalidated_by_etag() {
    let node = StandaloneNode::start(1);
    for path in ["/", "/assets/console.js", "/assets/console.css"] {
        let plain = get(&node.admin, path, &[]);
        let packed = get(&node.admin, path, &[("Accept-Encoding", "br, gzip;q=0.8")]);
        assert_eq!(packed.status, 200);
        assert_eq!(packed.header("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(packed.header("vary"), Some("Accept-Encoding"), "{path}");
        assert!(packed.body.len() < plain.body.len() / 2, "{path}: {} of {}", packed.body.len(), plain.body.len());
        assert_eq!(gunzip(&packed.body), plain.body, "{path}");
        let refused = get(&node.admin, path, &[("Accept-Encoding", "gzip;q=0")]);
        assert_eq!(refused.header("content-encoding"), None, "{path}: q=0 refuses gzip");

        assert_eq!(plain.header("cache-control"), Some("no-cache"), "{path}");
        let etag = plain.header("etag").expect("an ETag").to_string();
        assert_eq!(packed.header("etag"), Some(etag.as_str()));
        let revalidated = get(&node.admin, path, &[("If-None-Match", &etag)]);
        assert_eq!(revalidated.status, 304, "{path}");
        assert!(revalidated.body.is_empty());
        let stale = get(&node.admin, path, &[("If-None-Match", "\"0000\"")]);
        assert_eq!(stale.status, 200, "{path}: another tag gets the content");
    }
    let page_tag = get(&node.admin, "/", &[]).header("etag").unwrap().to_string();
    let script_tag = get(&node.admin, "/assets/console.js", &[]).header("etag").unwrap().to_string();
    assert_ne!(page_tag, script_tag);
}

#[test]
fn overview_reports_uptime_permissions_counters_and_topic_totals() {
    let node = StandaloneNode::start(2);
    let (status, _) =
        crate::admin::http(&node.admin, "POST", "/api/topics", Some(r#"{"name":"seen","partitions":2}"#), None);
    assert_eq!(status, 201);
    let mut client = node.client();
    let values = ["one".to_string(), "two".to_string(), "three".to_string()];
    client.call(produce_request("seen", 1, ringlog::protocol::Acks::Leader, &values)).unwrap();
    let fetch = ringlog::protocol::Request::Fetch {
        topic: "seen".into(),
        partition: 1,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
    };
    client.call(fetch).unwrap();
    let overview = || json(&String::from_utf8_lossy(&get(&node.admin, "/api/overview", &[]).body));
    // Partition gauges are republished once a second.
    wait_for(Duration::from_secs(5), "topic totals", || overview()["topics"][0]["records"] == 3);
    let first = overview();
    assert_eq!(first["role"], "standalone");
    assert_eq!(first["status"], "ok");
    assert_eq!(first["admin_token_required"], false);
    assert_eq!(first["mutations_allowed"], true, "loopback may mutate without a token");
    assert_eq!(first["counters"]["produce_records_total"], 3);
    assert!(first["counters"]["produce_bytes_total"].as_u64().unwrap() > 0);
    assert!(first["counters"]["fetch_bytes_total"].as_u64().unwrap() > 0);
    assert_eq!(first["counters"]["fetch_records_total"], 3, "the fetch advanced the consumer by 3 records");
    assert!(first["counters"]["fsync_latency_count"].as_u64().unwrap() > 0, "fsync=always synced the batch");
    let topic = &first["topics"][0];
    assert_eq!((topic["name"].as_str(), topic["partitions"].as_u64()), (Some("seen"), Some(2)));
    assert_eq!(topic["log_end_offset_total"], 3);
    assert!(topic["bytes"].as_u64().unwrap() > 0);
    assert_eq!(topic["fetched_bytes_total"], first["counters"]["fetch_bytes_total"]);
    let fetched =
        format!("ringlog_partition_fetched_bytes{{topic=\"seen\",partition=\"1\"}} {}", topic["fetched_bytes_total"]);
    // The Prometheus gauges are republished once a second.
    let metrics_now = || crate::admin::http(&node.admin, "GET", "/metrics", None, None).1;
    let idle = "ringlog_partition_fetched_bytes{topic=\"seen\",partition=\"0\"} 0";
    wait_for(Duration::from_secs(5), "Prometheus has the per-partition consumer bytes", || {
        let metrics = metrics_now();
        metrics.contains(&fetched) && metrics.contains(idle)
    });
    std::thread::sleep(Duration::from_millis(300));
    let later = overview()["uptime_ms"].as_u64().unwrap();
    assert!(later >= first["uptime_ms"].as_u64().unwrap() + 300, "uptime grows");
}

#[test]
fn overview_says_a_token_is_required_when_admin_token_is_set() {
    let node = StandaloneNode::start_with(1, &[("RINGLOG_ADMIN_TOKEN", "secret-token")]);
    let overview = json(&String::from_utf8_lossy(&get(&node.admin, "/api/overview", &[]).body));
    assert_eq!(overview["admin_token_required"], true);
    assert_eq!(overview["mutations_allowed"], true);
}

/// Where the browser test leaves its screenshots: `target/console-screenshots`.
fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("console-screenshots")
}

/// A three-node cluster with all followers connected and in sync.
fn three_nodes(cluster: &Cluster) -> ([Member; 3], [Node; 3]) {
    let (members, nodes) = cluster.start_in_sync::<3>();
    wait_for(Duration::from_secs(20), "etcd to record the followers in sync", || {
        (2..=3).all(|id| cluster.etcd.get(&format!("ringlog/replica/{id}/insync")).unwrap().as_deref() == Some("1"))
    });
    (members, nodes)
}

/// Run tests/browser/console.mjs in `phase` against the cluster's nodes.
fn run_browser_phase(phase: &str, nodes: &[Node], token_node: &Node, screenshots: &std::path::Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.mjs");
    let output = Command::new("node")
        .arg(script)
        .env("CONSOLE_PHASE", phase)
        .env("CONSOLE_LEADER_ADMIN", &nodes[0].admin)
        .env("CONSOLE_LEADER_CLIENT", &nodes[0].address)
        .env("CONSOLE_FOLLOWER_ADMIN", &nodes[1].admin)
        .env("CONSOLE_ALIVE_FOLLOWER_ID", "2")
        .env("CONSOLE_VICTIM_ID", "3")
        .env("CONSOLE_VICTIM_PID", nodes[2].pid().to_string())
        .env("CONSOLE_VICTIM_ADMIN", &nodes[2].admin)
        .env("CONSOLE_TOKEN_ADMIN", &token_node.admin)
        .env("CONSOLE_TOKEN", "console-test-token")
        .env("CONSOLE_SCREENSHOTS", screenshots)
        .env("RINGLOG_BIN", env!("CARGO_BIN_EXE_ringlog"))
        .output()
        .expect("run node (install nodejs, chromium and `npm ci` in tests/browser: tools/install-deps.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "browser test {phase} failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(&format!("console browser test ({phase}): all checks passed")), "{stdout}");
}

#[test]
#[ignore = "needs chromium and playwright-core; .ci/run runs it"]
fn console_in_headless_chromium_against_a_three_node_cluster() {
    let mut cluster = Cluster::new();
    let (_members, nodes) = three_nodes(&cluster);
    let token_node = StandaloneNode::start_with(1, &[("RINGLOG_ADMIN_TOKEN", "console-test-token")]);
    let screenshots = screenshot_dir();
    // Last run's pictures must not stand in for this run's.
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).unwrap();
    let overview_of = |node: &Node| json(&String::from_utf8_lossy(&get(&node.admin, "/api/overview", &[]).body));
    let on_leader = overview_of(&nodes[0]);
    assert_eq!(on_leader["followers"].as_array().map(Vec::len), Some(2), "{on_leader}");
    assert_eq!(on_leader["min_insync_replicas"], 1);
    let on_follower = overview_of(&nodes[1]);
    assert_eq!(on_follower["followers"], serde_json::json!([]), "only the leader measures followers");
    assert_eq!((on_follower["role"].as_str(), on_follower["leader_id"].as_u64()), (Some("follower"), Some(1)));
    run_browser_phase("cluster", &nodes, &token_node, &screenshots);
    // What the page did is real: node 3 is gone from etcd.
    assert_eq!(cluster.etcd.get("ringlog/replica/3/insync").unwrap(), None);
    cluster.etcd.kill();
    run_browser_phase("etcd-down", &nodes, &token_node, &screenshots);
    let names =
        ["overview", "nodes", "nodes-forget", "topics", "topic", "nodes-phone-dark", "token", "overview-unhealthy"];
    for name in names {
        assert!(screenshots.join(format!("{name}.png")).is_file(), "screenshot {name}");
    }
}
