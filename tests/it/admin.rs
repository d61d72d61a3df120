//! Admin HTTP API of a real node: health, topics, metrics, token rule.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::fixtures::{create_topic, StandaloneNode};
use crate::node::produce_request;

/// Minimal HTTP/1.1 request; returns (status, body).
pub fn http(address: &str, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect admin");
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|error| panic!("not JSON ({error}): {body}"))
}

#[test]
fn admin_api_answers_with_the_right_status_codes() {
    let node = StandaloneNode::start(2);
    let admin = node.admin.clone();
    let (status, body) = http(&admin, "GET", "/api/health", None, None);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["status"], "ok");
    assert_eq!(json(&body)["role"], "standalone");

    let (status, body) = http(&admin, "POST", "/api/topics", Some(r#"{"name":"web","partitions":4}"#), None);
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body)["name"], "web");
    let (status, _) = http(&admin, "POST", "/api/topics", Some(r#"{"name":"web","partitions":4}"#), None);
    assert_eq!(status, 409);
    let (status, _) = http(&admin, "POST", "/api/topics", Some(r#"{"name":"bad/name"}"#), None);
    assert_eq!(status, 400);
    let (status, _) = http(&admin, "POST", "/api/topics", Some("not json"), None);
    assert_eq!(status, 400);
    let (status, body) = http(&admin, "GET", "/api/topics", None, None);
    assert_eq!(status, 200);
    assert_eq!(json(&body)[0]["partitions"], 4);

    let mut client = node.client();
    let values = ["hello".to_string(), "world".to_string()];
    client.call(produce_request("web", 2, ringlog::protocol::Acks::Leader, &values)).unwrap();
    let (status, body) = http(&admin, "GET", "/api/topics/web", None, None);
    assert_eq!(status, 200);
    let partitions = &json(&body)["partitions"];
    assert_eq!(partitions.as_array().unwrap().len(), 4);
    assert_eq!(partitions[2]["log_end_offset"], 2);
    assert_eq!(partitions[2]["high_watermark"], 2);
    assert!(partitions[2]["bytes"].as_u64().unwrap() > 0);
    let (status, _) = http(&admin, "GET", "/api/topics/nope", None, None);
    assert_eq!(status, 404);

    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (status, metrics) = http(&admin, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE ringlog_produce_requests_total counter"));
    assert!(metrics.contains("ringlog_partition_log_end_offset{topic=\"web\",partition=\"2\"} 2"), "{metrics}");
    assert!(metrics.contains("ringlog_produce_latency_seconds_bucket"));
    assert!(metrics.contains("ringlog_connections"));

    let (status, body) = http(&admin, "GET", "/api/nodes", None, None);
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _) = http(&admin, "DELETE", "/api/nodes/7", None, None);
    assert_eq!(status, 404);
    let (status, _) = http(&admin, "DELETE", "/api/topics/web", None, None);
    assert_eq!(status, 204);
    let (status, _) = http(&admin, "DELETE", "/api/topics/web", None, None);
    assert_eq!(status, 404);
    let (status, _) = http(&admin, "GET", "/api/elsewhere", None, None);
    assert_eq!(status, 404);
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn mutations_need_the_bearer_token_when_one_is_set() {
    let node = StandaloneNode::start_with(1, &[("RINGLOG_ADMIN_TOKEN", "s3cret")]);
    let body = Some(r#"{"name":"guarded"}"#);
    assert_eq!(http(&node.admin, "POST", "/api/topics", body, None).0, 401);
    assert_eq!(http(&node.admin, "POST", "/api/topics", body, Some("wrong")).0, 401);
    assert_eq!(http(&node.admin, "POST", "/api/topics", body, Some("s3cret")).0, 201);
    assert_eq!(http(&node.admin, "GET", "/api/topics", None, None).0, 200, "reads need no token");
    assert_eq!(http(&node.admin, "DELETE", "/api/topics/guarded", None, None).0, 401);
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn a_fail_stopped_partition_turns_health_503_while_other_partitions_keep_serving() {
    use ringlog::protocol::{Acks, ErrorCode};
    // The real fsync of faulty/0 fails with EIO after two successes.
    let node = StandaloneNode::start_with(2, &[("RINGLOG_FAULT_INJECT", "faulty/0:fsync:2")]);
    let mut client = node.client();
    for name in ["faulty", "healthy"] {
        create_topic(&node, name, 1);
    }
    assert_eq!(http(&node.admin, "GET", "/api/health", None, None).0, 200);
    let produce = |client: &mut crate::node::Client, topic: &str| {
        client.call(produce_request(topic, 0, Acks::Leader, &["x".to_string()]))
    };
    let mut failure = None;
    for _ in 0..10 {
        if let Err(error) = produce(&mut client, "faulty") {
            failure = Some(error);
            break;
        }
    }
    let failure = failure.expect("the injected fsync error reaches the producer");
    assert_eq!(failure.code, ErrorCode::StorageFailed, "{failure:?}");
    assert_eq!(produce(&mut client, "faulty").unwrap_err().code, ErrorCode::StorageFailed, "fail-stopped");
    assert!(produce(&mut client, "healthy").is_ok(), "other partitions keep serving");

    let started = std::time::Instant::now();
    let (status, body) = loop {
        let (status, body) = http(&node.admin, "GET", "/api/health", None, None);
        if status != 200 || started.elapsed() > std::time::Duration::from_secs(5) {
            break (status, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{body}");
    let health = json(&body);
    assert_eq!(health["status"], "failed");
    assert!(health["reason"].as_str().unwrap().contains("faulty/0"), "{body}");
    // Each shard republishes its partitions' gauges once a second: the
    // healthy partition's shard may not have yet when health turned 503.
    let (failed, healthy) = (
        "ringlog_partition_failed{topic=\"faulty\",partition=\"0\"} 1",
        "ringlog_partition_failed{topic=\"healthy\",partition=\"0\"} 0",
    );
    let started = std::time::Instant::now();
    let metrics = loop {
        let metrics = http(&node.admin, "GET", "/metrics", None, None).1;
        if (metrics.contains(failed) && metrics.contains(healthy)) || started.elapsed().as_secs() > 5 {
            break metrics;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(metrics.contains(failed) && metrics.contains(healthy), "{metrics}");
    assert!(metrics.contains("ringlog_fsync_latency_seconds_count"), "fsync latency is exported");
    drop(node);
}
