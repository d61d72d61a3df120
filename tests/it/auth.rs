//! Client authentication and roles on a real node (`[auth]`,
//! docs/SECURITY.md): the SCRAM handshake before anything else, one error
//! frame and a close for everything unauthenticated, role checks after it,
//! failures counted and rate limited per source, and no secret in the
//! node's output.

use std::path::{Path, PathBuf};

use ringlog::protocol::{decode_response, Acks, ErrorCode, ErrorResponse, Request, Response, TopicSettings};
use ringlog::security::scram::{new_nonce, ScramClient, MECHANISM};
use ringlog::security::users::{new_user, save};
use ringlog::security::{Principal, Role, Users};

use crate::admin::{http, json};
use crate::fixtures::{metric, StandaloneNode};
use crate::node::{produce_request, Client};

const ADMIN_PASSWORD: &str = "admin-password-must-not-leak";

/// A users file with `users` (name, role, topic pattern, password).
pub(crate) fn users_file(dir: &Path, users: &[(&str, Role, &str, &str)]) -> PathBuf {
    let mut all = Users::default();
    for (name, role, topics, password) in users {
        let principal = Principal { name: name.to_string(), role: *role, topics: topics.parse().unwrap() };
        all = all.with_user(new_user(principal, password.as_bytes(), 4096).unwrap()).unwrap();
    }
    let path = dir.join("users.json");
    save(&path, &all).unwrap();
    path
}

/// A node with `[auth]` on and an admin, a producer of `orders*` and a
/// consumer of `orders`; extra environment on top.
fn secured_node(dir: &Path, shards: usize, environment: &[(&str, &str)]) -> StandaloneNode {
    let path = users_file(
        dir,
        &[
            ("root", Role::Admin, "*", ADMIN_PASSWORD),
            ("writer", Role::Producer, "orders*", "writer-password"),
            ("reader", Role::Consumer, "orders", "reader-password"),
        ],
    );
    let path = path.to_str().unwrap().to_string();
    let mut settings = vec![("RINGLOG_AUTH_ENABLED", "true"), ("RINGLOG_AUTH_USERS_FILE", path.as_str())];
    settings.extend_from_slice(environment);
    StandaloneNode::start_with(shards, &settings)
}

/// Run the SCRAM handshake on `client`; the server's error if it refuses.
fn authenticate(client: &mut Client, user: &str, password: &str) -> Result<(), ErrorResponse> {
    let (scram, client_first) = ScramClient::new(user, password.as_bytes(), &new_nonce().unwrap()).unwrap();
    let server_first = match client.call(Request::SaslStart { mechanism: MECHANISM.into(), message: client_first })? {
        Response::SaslStart { message } => message,
        other => panic!("unexpected {other:?}"),
    };
    let (scram, client_final) = scram.respond(&server_first).unwrap();
    match client.call(Request::SaslContinue { message: client_final })? {
        Response::SaslContinue { message } => scram.verify(&message).map_err(|error| panic!("{error}")),
        other => panic!("unexpected {other:?}"),
    }
}

fn logged_in(node: &crate::node::Node, user: &str, password: &str) -> Client {
    let mut client = node.client();
    authenticate(&mut client, user, password).unwrap_or_else(|error| panic!("{user}: {error:?}"));
    client
}

fn error_code(outcome: Result<Response, ErrorResponse>) -> ErrorCode {
    match outcome {
        Ok(response) => panic!("expected a refusal, got {response:?}"),
        Err(error) => error.code,
    }
}

fn create(name: &str) -> Request {
    Request::CreateTopic { name: name.into(), settings: TopicSettings { partitions: 1, ..Default::default() } }
}

/// The one error frame, then the connection is closed.
fn assert_refused_then_closed(client: &mut Client, request: Request, code: ErrorCode) {
    let api_key = request.api_key();
    client.send(&request);
    let frame = client.receive_frame().expect("one error frame");
    let (_, outcome) = decode_response(api_key, &frame).unwrap();
    assert_eq!(error_code(outcome), code);
    assert!(client.receive_frame().is_err(), "the connection is closed after the error");
}

#[test]
fn an_unauthenticated_client_cannot_create_or_delete_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 2, &[]);
    assert_refused_then_closed(&mut node.client(), create("orders"), ErrorCode::AuthenticationRequired);
    let delete = Request::DeleteTopic { name: "orders".into() };
    assert_refused_then_closed(&mut node.client(), delete, ErrorCode::AuthenticationRequired);
    assert_refused_then_closed(&mut node.client(), Request::ListTopics, ErrorCode::AuthenticationRequired);
    let mut admin = logged_in(&node, "root", ADMIN_PASSWORD);
    assert_eq!(admin.call(Request::ListTopics), Ok(Response::ListTopics(Vec::new())), "nothing was created");
}

#[test]
fn a_wrong_password_is_refused_closed_and_counted_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 1, &[]);
    let mut client = node.client();
    assert_eq!(
        authenticate(&mut client, "root", "not-the-password").unwrap_err().code,
        ErrorCode::AuthenticationFailed
    );
    assert!(client.receive_frame().is_err(), "closed after a failed handshake");
    let mut stranger = node.client();
    assert_eq!(authenticate(&mut stranger, "nobody", "x").unwrap_err().code, ErrorCode::AuthenticationFailed);
    assert_eq!(metric(&node, "ringlog_auth_failures_total"), 2);
    logged_in(&node, "root", ADMIN_PASSWORD);
    assert_eq!(metric(&node, "ringlog_auth_successes_total"), 1);
}

#[test]
fn a_consumer_cannot_produce_but_consumes_its_topics_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 2, &[]);
    let mut admin = logged_in(&node, "root", ADMIN_PASSWORD);
    for topic in ["orders", "payments"] {
        assert_eq!(admin.call(create(topic)), Ok(Response::CreateTopic));
        admin.call(produce_request(topic, 0, Acks::Leader, &["one".to_string()])).unwrap();
    }
    let mut reader = logged_in(&node, "reader", "reader-password");
    let produce = produce_request("orders", 0, Acks::Leader, &["mine".to_string()]);
    assert_eq!(error_code(reader.call(produce)), ErrorCode::NotAuthorized);
    let fetch = |topic: &str| Request::Fetch {
        topic: topic.into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 16,
        max_wait_ms: 0,
    };
    // The refusal left the connection open: the same connection reads.
    match reader.call(fetch("orders")) {
        Ok(Response::Fetch { next_offset, .. }) => assert_eq!(next_offset, 1),
        other => panic!("{other:?}"),
    }
    let commit = Request::CommitOffset { group: "g".into(), topic: "orders".into(), partition: 0, offset: 1 };
    assert_eq!(reader.call(commit), Ok(Response::CommitOffset));
    assert_eq!(error_code(reader.call(fetch("payments"))), ErrorCode::NotAuthorized);
    assert_eq!(error_code(reader.call(create("mine"))), ErrorCode::NotAuthorized);
    assert!(metric(&node, "ringlog_auth_not_authorized_total") >= 3);
}

#[test]
fn a_client_that_floods_refused_requests_and_reads_nothing_is_disconnected_at_the_write_stall() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 1, &[("RINGLOG_LIMITS_WRITE_STALL_TIMEOUT_MS", "3000")]);
    let mut admin = logged_in(&node, "root", ADMIN_PASSWORD);
    assert_eq!(admin.call(create("orders")), Ok(Response::CreateTopic));
    let value = "v".repeat(100 << 10);
    for batch in 0..8 {
        let values: Vec<String> = (0..10).map(|record| format!("{batch}-{record}-{value}")).collect();
        admin.call(produce_request("orders", 0, Acks::Leader, &values)).unwrap();
    }
    drop(admin);
    let mut reader = logged_in(&node, "reader", "reader-password");
    reader.shrink_receive_buffer();
    // Answers of several MiB, more than the sockets hold: the writer
    // blocks. Then refusals the connection's reader answers itself, more
    // than the writer's queue takes (128): the reader waits to queue one.
    let fetch = Request::Fetch { topic: "orders".into(), partition: 0, offset: 0, max_bytes: 8 << 20, max_wait_ms: 0 };
    for _ in 0..4 {
        reader.send(&fetch);
    }
    let fetches = crate::node::FETCHES_OF_SHARD_ZERO;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metric(&node, fetches) < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(metric(&node, fetches), 4, "the answers are queued before the refusals");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let refused = produce_request("orders", 0, Acks::Leader, &["mine".to_string()]);
    for _ in 0..300 {
        reader.send(&refused);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while metric(&node, "ringlog_connections") > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(metric(&node, "ringlog_connections"), 0, "the reader waiting to queue a refusal ends with the writer");
    assert_eq!(metric(&node, "ringlog_write_stalls_total"), 1);
}

#[test]
fn a_producer_cannot_delete_topics_but_an_admin_can() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 2, &[]);
    let mut admin = logged_in(&node, "root", ADMIN_PASSWORD);
    assert_eq!(admin.call(create("orders-eu")), Ok(Response::CreateTopic));
    let mut writer = logged_in(&node, "writer", "writer-password");
    let produce = produce_request("orders-eu", 0, Acks::Leader, &["a".to_string()]);
    assert!(matches!(writer.call(produce), Ok(Response::Produce { .. })), "its pattern covers orders-eu");
    let delete = Request::DeleteTopic { name: "orders-eu".into() };
    assert_eq!(error_code(writer.call(delete.clone())), ErrorCode::NotAuthorized);
    assert_eq!(error_code(writer.call(create("orders-us"))), ErrorCode::NotAuthorized);
    assert_eq!(admin.call(delete), Ok(Response::DeleteTopic));
}

#[test]
fn the_rate_limiter_refuses_a_source_after_its_failures_even_with_the_right_password() {
    let dir = tempfile::tempdir().unwrap();
    // One shard: the limiter is per shard.
    let node = secured_node(dir.path(), 1, &[("RINGLOG_AUTH_MAX_FAILURES_PER_MINUTE", "2")]);
    for _ in 0..2 {
        assert_eq!(
            authenticate(&mut node.client(), "root", "guess").unwrap_err().code,
            ErrorCode::AuthenticationFailed
        );
    }
    let refused = authenticate(&mut node.client(), "root", ADMIN_PASSWORD).unwrap_err();
    assert_eq!(refused.code, ErrorCode::AuthenticationFailed);
    assert!(refused.message.contains("too many failed authentications"), "{}", refused.message);
    assert_eq!(metric(&node, "ringlog_auth_rate_limited_total"), 1);
    assert_eq!(metric(&node, "ringlog_auth_failures_total"), 2, "a refusal at the door is not a new failure");
}

/// An admin API request with `Authorization: Basic user:password`.
pub(crate) fn http_basic(
    admin: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    user: &str,
    password: &str,
) -> (u16, String) {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nAuthorization: Basic {encoded}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("status line");
    (status, response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

const WEB_TOPIC: &str = r#"{"name":"web","partitions":2}"#;

#[test]
fn the_admin_api_takes_an_admin_users_basic_credentials_and_refuses_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 2, &[]);
    let admin = &node.admin;
    let (status, _) = http(admin, "POST", "/api/topics", Some(WEB_TOPIC), None);
    assert_eq!(status, 401, "loopback is no credential once clients must authenticate");
    let (status, _) = http_basic(admin, "POST", "/api/topics", Some(WEB_TOPIC), "writer", "writer-password");
    assert_eq!(status, 403, "a producer is not an admin");
    let (status, _) = http_basic(admin, "POST", "/api/topics", Some(WEB_TOPIC), "root", "wrong");
    assert_eq!(status, 401);
    assert_eq!(metric(&node, "ringlog_auth_failures_total"), 1);
    // Created through the admin API's own client, which authenticates as the node's internal admin.
    let (status, body) = http_basic(admin, "POST", "/api/topics", Some(WEB_TOPIC), "root", ADMIN_PASSWORD);
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(admin, "GET", "/api/topics", None, None);
    assert_eq!((status, json(&body)[0]["name"].as_str()), (200, Some("web")));
}

#[test]
fn users_added_and_removed_through_the_admin_api_can_and_then_cannot_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 2, &[]);
    let admin = &node.admin;
    let new_user = r#"{"name":"later","role":"consumer","topics":"logs*","password":"later-password"}"#;
    let (status, body) = http_basic(admin, "POST", "/api/users", Some(new_user), "root", ADMIN_PASSWORD);
    assert_eq!(status, 201, "{body}");
    let (status, _) = http_basic(admin, "POST", "/api/users", Some(new_user), "root", ADMIN_PASSWORD);
    assert_eq!(status, 409);
    let mut later = logged_in(&node, "later", "later-password");
    assert!(later.call(Request::ListTopics).is_ok());
    let (status, body) = http_basic(admin, "GET", "/api/users", None, "root", ADMIN_PASSWORD);
    assert_eq!(status, 200);
    let listed = json(&body);
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    assert!(!body.contains("stored_key") && !body.contains("later-password") && !body.contains("internal"), "{body}");
    let saved = std::fs::read_to_string(dir.path().join("users.json")).unwrap();
    assert!(saved.contains("\"later\"") && !saved.contains("later-password"), "saved hashed, in the users file");
    let (status, _) = http_basic(admin, "DELETE", "/api/users/later", None, "root", ADMIN_PASSWORD);
    assert_eq!(status, 204);
    assert_eq!(
        authenticate(&mut node.client(), "later", "later-password").unwrap_err().code,
        ErrorCode::AuthenticationFailed
    );
    // The open connection of the removed user is closed at its next request.
    assert_refused_then_closed(&mut later, Request::ListTopics, ErrorCode::AuthenticationFailed);
}

#[test]
fn a_user_added_offline_with_the_cli_is_accepted_by_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.json");
    let ringlog = |arguments: &[&str], password: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
            .args(arguments)
            .env("RINGLOG_NEW_PASSWORD", password)
            // The operator's own password is never taken for the new user.
            .env("RINGLOG_PASSWORD", "operators-own-password")
            .output()
            .unwrap()
    };
    let file = path.to_str().unwrap();
    let added = ringlog(&["user", "add", "first", "--role", "admin", "--users-file", file], "first-password");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let added =
        ringlog(&["user", "add", "eve", "--role", "consumer", "--topics", "x*", "--users-file", file], "eve-pw");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let listed = ringlog(&["user", "list", "--json", "--users-file", file], "");
    let listed = json(&String::from_utf8_lossy(&listed.stdout));
    assert_eq!(
        listed,
        serde_json::json!([{"name": "eve", "role": "consumer", "topics": "x*"}, {"name": "first", "role": "admin", "topics": "*"}])
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let node = StandaloneNode::start_with(1, &[("RINGLOG_AUTH_ENABLED", "true"), ("RINGLOG_AUTH_USERS_FILE", file)]);
    let mut admin = logged_in(&node, "first", "first-password");
    assert_eq!(admin.call(create("x1")), Ok(Response::CreateTopic));
    // The CLI's own client authenticates with --user/--password too.
    let topics = std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["topic", "list", "--json", "--server", &node.address, "--user", "eve"])
        .env("RINGLOG_PASSWORD", "eve-pw")
        .output()
        .unwrap();
    assert!(topics.status.success(), "{}", String::from_utf8_lossy(&topics.stderr));
    assert!(String::from_utf8_lossy(&topics.stdout).contains("x1"));
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["topic", "delete", "x1", "--server", &node.address, "--user", "eve"])
        .env("RINGLOG_PASSWORD", "eve-pw")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not_authorized"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let removed = ringlog(&["user", "remove", "eve", "--users-file", file], "");
    assert!(removed.status.success());
}

#[test]
fn no_password_appears_in_the_nodes_log_output() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let path = users_file(dir.path(), &[("root", Role::Admin, "*", ADMIN_PASSWORD)]);
    let data = dir.path().join("data");
    let (address, admin) = (crate::node::free_address(), crate::node::free_address());
    let file = path.to_str().unwrap();
    let environment = [
        ("RINGLOG_AUTH_ENABLED", "true"),
        ("RINGLOG_AUTH_USERS_FILE", file),
        ("RINGLOG_ADMIN_TOKEN", "token-must-not-leak"),
        ("RUST_LOG", "debug"),
    ];
    let node = crate::node::Node::spawn(&address, &admin, &data, 1, &[], &environment, Some(&log));
    let _ = authenticate(&mut node.client(), "root", "guessed-password-must-not-leak");
    logged_in(&node, "root", ADMIN_PASSWORD);
    http_basic(&node.admin, "POST", "/api/topics", Some(WEB_TOPIC), "root", "basic-password-must-not-leak");
    http_basic(&node.admin, "POST", "/api/topics", Some(WEB_TOPIC), "root", ADMIN_PASSWORD);
    node.terminate();
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(output.contains("authentication failed"), "the failure is logged: {output}");
    for secret in ["must-not-leak", ADMIN_PASSWORD] {
        assert!(!output.contains(secret), "{secret} in the log:\n{output}");
    }
}

#[test]
fn a_node_with_auth_and_no_users_file_refuses_to_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["serve", "--print-config"])
        .env("RINGLOG_AUTH_ENABLED", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.users_file"), "{stderr}");
}

#[test]
fn no_password_or_token_appears_in_print_config_output() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["serve", "--print-config"])
        .env("RINGLOG_ADMIN_TOKEN", "token-must-not-leak")
        .env("RINGLOG_CLUSTER_SECRET", "secret-must-not-leak")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("must-not-leak"), "{stdout}");
    assert!(stdout.contains("admin_token = \"<redacted>\""), "{stdout}");
}

/// `ringlog ARGS` against `node` as `user`, with `stdin`.
fn ringlog_as(
    node: &crate::node::Node,
    user: &str,
    password: &str,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(args)
        .env("RINGLOG_SERVER", &node.address)
        .env("RINGLOG_USER", user)
        .env("RINGLOG_PASSWORD", password)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_cli_produces_and_consumes_as_users_of_the_right_roles_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 2, &[]);
    let created = ringlog_as(&node, "root", ADMIN_PASSWORD, &["topic", "create", "orders", "--partitions", "1"], "");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let produced = ringlog_as(&node, "writer", "writer-password", &["produce", "orders"], "a\nb\n");
    assert!(produced.status.success(), "{}", String::from_utf8_lossy(&produced.stderr));
    let refused = ringlog_as(&node, "reader", "reader-password", &["produce", "orders"], "c\n");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not_authorized"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let consumed = ringlog_as(&node, "reader", "reader-password", &["consume", "orders", "--group", "g"], "");
    assert!(consumed.status.success(), "{}", String::from_utf8_lossy(&consumed.stderr));
    assert_eq!(String::from_utf8_lossy(&consumed.stdout), "a\nb\n");
    let anonymous = std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["topic", "list", "--server", &node.address])
        .output()
        .unwrap();
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("authentication_required"));
    let wrong = ringlog_as(&node, "reader", "wrong", &["topic", "list"], "");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("authentication_failed"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[test]
fn users_of_a_cluster_live_in_etcd_and_every_node_accepts_them() {
    let mut cluster = crate::cluster::Cluster::with_replication(10_000, 1);
    cluster.token = Some("cluster-admin-token".into());
    cluster.environment.push(("RINGLOG_AUTH_ENABLED".into(), "true".into()));
    let (_members, [leader, follower]) = cluster.start_in_sync::<2>();
    // No admin user yet: the token adds the first one through any node.
    let first_admin = r#"{"name":"ops","role":"admin","topics":"*","password":"ops-password"}"#;
    let (status, body) = http(&follower.admin, "POST", "/api/users", Some(first_admin), Some("cluster-admin-token"));
    assert_eq!(status, 201, "{body}");
    let stored = cluster.etcd.get("ringlog/users/ops").unwrap().expect("the user is in etcd");
    assert!(stored.contains("stored_key") && !stored.contains("ops-password"), "{stored}");
    crate::cluster::wait_for(std::time::Duration::from_secs(10), "the leader to know ops", || {
        authenticate(&mut leader.client(), "ops", "ops-password").is_ok()
    });
    // A follower's admin API forwards the creation to the leader, whose
    // listener accepts the cluster-wide internal admin.
    let (status, body) = http_basic(&follower.admin, "POST", "/api/topics", Some(WEB_TOPIC), "ops", "ops-password");
    assert_eq!(status, 201, "{body}");
    let mut admin = logged_in(&leader, "ops", "ops-password");
    assert_eq!(admin.call(create("events")), Ok(Response::CreateTopic));
    let reader = r#"{"name":"viewer","role":"consumer","topics":"events","password":"viewer-password"}"#;
    let (status, _) = http_basic(&leader.admin, "POST", "/api/users", Some(reader), "ops", "ops-password");
    assert_eq!(status, 201);
    crate::cluster::wait_for(std::time::Duration::from_secs(10), "the follower to know viewer", || {
        authenticate(&mut follower.client(), "viewer", "viewer-password").is_ok()
    });
    let (status, _) = http_basic(&follower.admin, "DELETE", "/api/users/viewer", None, "ops", "ops-password");
    assert_eq!(status, 204);
    crate::cluster::wait_for(std::time::Duration::from_secs(10), "the leader to forget viewer", || {
        authenticate(&mut leader.client(), "viewer", "viewer-password").is_err()
    });
    assert!(cluster.etcd.get("ringlog/users/viewer").unwrap().is_none());
}

#[test]
fn a_node_listening_beyond_loopback_without_auth_warns_once_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let port = crate::node::free_port();
    let listen = format!("0.0.0.0:{port}");
    let node = crate::node::Node::spawn(
        &listen,
        &crate::node::free_address(),
        &dir.path().join("data"),
        1,
        &[],
        &[],
        Some(&log),
    );
    node.terminate();
    let output = std::fs::read_to_string(&log).unwrap();
    assert_eq!(output.matches("need no credentials").count(), 1, "{output}");
    let quiet = dir.path().join("quiet.log");
    let node = crate::node::Node::spawn(
        &crate::node::free_address(),
        &crate::node::free_address(),
        &dir.path().join("data2"),
        1,
        &[],
        &[],
        Some(&quiet),
    );
    node.terminate();
    assert!(!std::fs::read_to_string(&quiet).unwrap().contains("need no credentials"), "loopback is quiet");
}

#[test]
fn the_cli_manages_users_through_the_admin_api_as_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 1, &[]);
    let ringlog = |user: &str, password: &str, arguments: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
            .args(arguments)
            .args(["--admin", &node.admin])
            .env("RINGLOG_USER", user)
            .env("RINGLOG_PASSWORD", password)
            .env("RINGLOG_NEW_PASSWORD", "new-user-password")
            .output()
            .unwrap()
    };
    let added = ringlog("root", ADMIN_PASSWORD, &["user", "add", "carol", "--role", "producer", "--topics", "logs*"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    logged_in(&node, "carol", "new-user-password");
    let listed = ringlog("root", ADMIN_PASSWORD, &["user", "list", "--json"]);
    let listed = json(&String::from_utf8_lossy(&listed.stdout));
    assert!(listed
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"name": "carol", "role": "producer", "topics": "logs*"})));
    let refused = ringlog("writer", "writer-password", &["user", "remove", "carol"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not an admin"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let removed = ringlog("root", ADMIN_PASSWORD, &["user", "remove", "carol"]);
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    assert!(authenticate(&mut node.client(), "carol", "new-user-password").is_err());
}

#[test]
fn an_anonymous_connection_is_closed_when_it_does_not_authenticate_in_time_or_sends_a_large_frame() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 1, &[("RINGLOG_AUTH_AUTHENTICATION_TIMEOUT_MS", "300")]);
    // Idle: one authentication_required frame after the timeout, then closed.
    let mut idle = node.client();
    idle.set_read_timeout(std::time::Duration::from_secs(10));
    let started = std::time::Instant::now();
    let frame = idle.receive_frame().expect("an error frame before the close");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "closed at the timeout, not later");
    let (_, outcome) = decode_response(ringlog::protocol::ApiKey::ListTopics, &frame).unwrap();
    assert_eq!(error_code(outcome), ErrorCode::AuthenticationRequired);
    assert!(idle.receive_frame().is_err(), "then closed");
    // A frame larger than any handshake message is refused before it is read.
    let mut large = node.client();
    large.set_read_timeout(std::time::Duration::from_secs(10));
    large.send_raw(&(1u32 << 20).to_le_bytes());
    large.send_raw(&[0u8; 64]);
    let frame = large.receive_frame().expect("an error frame");
    let (_, outcome) = decode_response(ringlog::protocol::ApiKey::ListTopics, &frame).unwrap();
    assert_eq!(error_code(outcome), ErrorCode::RecordTooLarge);
    assert!(large.receive_frame().is_err(), "then closed");
}

/// `ringlog acl …` with `arguments`; stdout as JSON when it prints any.
fn acl(arguments: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringlog")).arg("acl").args(arguments).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn acl_lists_what_each_user_may_do_and_a_grant_applies_to_open_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let node = secured_node(dir.path(), 1, &[]);
    let file = dir.path().join("users.json").display().to_string();
    let (listed, text) = acl(&["list", "--json", "--users-file", &file]);
    assert!(listed, "{text}");
    let grants = json(&text);
    let reader = grants.as_array().unwrap().iter().find(|grant| grant["user"] == "reader").unwrap().clone();
    let permissions = reader["permissions"].as_array().unwrap();
    assert!(permissions.contains(&serde_json::json!("fetch")) && !permissions.contains(&serde_json::json!("produce")));
    let mut admin = logged_in(&node, "root", ADMIN_PASSWORD);
    assert_eq!(admin.call(create("orders")), Ok(Response::CreateTopic));
    let mut session = logged_in(&node, "reader", "reader-password");
    let produce = || produce_request("orders", 0, Acks::Leader, &["now-allowed".to_string()]);
    assert_eq!(error_code(session.call(produce())), ErrorCode::NotAuthorized);
    // Through the admin API, as an admin: the open session follows the grant.
    let admin_flags = ["--admin", node.admin.as_str(), "--user", "root", "--password", ADMIN_PASSWORD];
    let mut arguments = vec!["grant", "reader", "--role", "producer", "--topics", "orders"];
    arguments.extend_from_slice(&admin_flags);
    let (granted, text) = acl(&arguments);
    assert!(granted, "{text}");
    assert!(session.call(produce()).is_ok(), "the same connection may produce now");
    let mut arguments = vec!["list", "--json"];
    arguments.extend_from_slice(&admin_flags);
    let (listed, text) = acl(&arguments);
    assert!(listed, "{text}");
    let reader = json(&text).as_array().unwrap().iter().find(|grant| grant["user"] == "reader").unwrap().clone();
    assert_eq!(reader["role"], "producer");
    let (refused, text) = acl(&["grant", "nobody", "--role", "admin", "--users-file", &file]);
    assert!(!refused && text.contains("nobody"), "an unknown user is an error: {text}");
}
