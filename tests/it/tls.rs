//! TLS on every listener (SPEC §11) with certificates made in the test:
//! clients that trust the CA are served; plaintext clients, untrusted CAs,
//! expired certificates and (with `client_ca_file`) clients without a
//! certificate from the client CA are refused; a SIGHUP reload serves the
//! new certificate to new connections and drops no open one.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlog::net::client::{Client, ClientError, Connection};
use ringlog::protocol::{Acks, Request, Response, TopicSettings};
use ringlog::security::tls::ClientTls;

use crate::certs::{tls_environment, Authority, Leaf};
use crate::cli::ringlog;
use crate::node::{free_address, Node};

/// A node serving TLS with `leaf` on every listener, plus `extra` settings.
fn tls_node(dir: &Path, leaf: &Leaf, extra: &[(&str, &str)]) -> Node {
    let mut environment = tls_environment(leaf);
    environment.extend(extra.iter().map(|(key, value)| (key.to_string(), value.to_string())));
    let environment: Vec<(&str, &str)> =
        environment.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    Node::start_with(&dir.join("data"), 1, &environment)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// One request over a fresh TLS client.
fn call(address: &str, tls: &ClientTls, request: &Request) -> Result<Response, ClientError> {
    runtime().block_on(async {
        let mut client = Client::new(vec![address.to_string()], Duration::from_millis(500)).with_tls(tls.clone());
        client.call(request).await
    })
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// GET `path` from a TLS admin listener.
fn admin_get(node: &Node, tls: &ClientTls, path: &str) -> Result<(u16, String), String> {
    admin_call(&node.admin, tls, hyper::Method::GET, path, None)
}

/// `method path` (with a JSON body) to the admin listener at `address`.
fn admin_call(
    address: &str,
    tls: &ClientTls,
    method: hyper::Method,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let body = body.map(str::to_string);
    let timeout = Duration::from_secs(5);
    runtime().block_on(async {
        let answer = ringlog::admin::client::request(address, method, path, None, body, tls, timeout).await?;
        Ok((answer.status, String::from_utf8_lossy(&answer.body).to_string()))
    })
}

#[test]
fn a_client_that_trusts_the_ca_produces_and_consumes_over_tls_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let node = tls_node(dir.path(), &authority.server(dir.path(), "node"), &[]);
    let ca = authority.ca_file.display().to_string();
    let created = ringlog(&node, &["topic", "create", "secure", "--tls-ca", &ca], None);
    assert!(created.status.success(), "{}", stderr(&created));
    let produced = ringlog(&node, &["produce", "secure", "--tls-ca", &ca], Some("one\ntwo\nthree\n"));
    assert!(produced.status.success(), "{}", stderr(&produced));
    let consumed = ringlog(&node, &["consume", "secure", "--tls-ca", &ca], None);
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    assert_eq!(stdout(&consumed).lines().collect::<Vec<_>>(), ["one", "two", "three"]);
}

#[test]
fn a_plaintext_client_on_a_tls_port_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let node = tls_node(dir.path(), &authority.server(dir.path(), "node"), &[]);
    let mut plaintext = std::net::TcpStream::connect(&node.address).unwrap();
    plaintext.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut frame = Vec::new();
    ringlog::protocol::encode_request(1, &Request::ListTopics, &mut frame);
    plaintext.write_all(&frame).unwrap();
    let mut answer = Vec::new();
    // rustls answers a non-TLS record with an alert, then the node closes.
    let _ = plaintext.read_to_end(&mut answer);
    assert!(answer.len() < 16 && !answer.starts_with(&frame[..4]), "no protocol answer in plaintext: {answer:?}");
    // Counted on the shard's thread right after the socket closes: the
    // test may look before that thread ran.
    wait_until(|| {
        let (status, metrics) = admin_get(&node, &authority.client_tls(None), "/metrics").unwrap();
        status == 200 && metric(&metrics, "ringlog_tls_handshake_failures_total") >= 1
    });
    // Plaintext HTTP to the admin listener gets no HTTP answer either.
    let mut http = std::net::TcpStream::connect(&node.admin).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    http.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = http.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "plaintext HTTP is not served: {:?}", String::from_utf8_lossy(&answer));
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in metrics"))
}

#[test]
fn a_client_that_does_not_trust_the_servers_certificate_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let stranger = Authority::new(dir.path(), "stranger");
    let node = tls_node(dir.path(), &authority.server(dir.path(), "node"), &[]);
    let started = Instant::now();
    let refused = ringlog(&node, &["topic", "list", "--tls-ca", &stranger.ca_file.display().to_string()], None);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("TLS"), "the error says TLS: {}", stderr(&refused));
    assert!(started.elapsed() < Duration::from_secs(4), "a certificate error is not retried");
    let plaintext = ringlog(&node, &["topic", "list"], None);
    assert_eq!(plaintext.status.code(), Some(1), "a plaintext client fails too");
}

#[test]
fn an_expired_server_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let expired = authority.leaf(dir.path(), "expired", &["127.0.0.1"], true);
    let node = tls_node(dir.path(), &expired, &[]);
    let outcome = call(&node.address, &authority.client_tls(None), &Request::ListTopics);
    match outcome {
        Err(ClientError::Tls(message)) => assert!(message.to_lowercase().contains("expired"), "{message}"),
        other => panic!("an expired certificate must be refused, got {other:?}"),
    }
}

#[test]
fn mutual_tls_serves_only_clients_with_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let clients = Authority::new(dir.path(), "clients");
    let stranger = Authority::new(dir.path(), "stranger");
    let client_ca = clients.ca_file.display().to_string();
    let node =
        tls_node(dir.path(), &authority.server(dir.path(), "node"), &[("RINGLOG_TLS_CLIENT_CA_FILE", &client_ca)]);
    let member = clients.leaf(dir.path(), "member", &["member"], false);
    let outsider = stranger.leaf(dir.path(), "outsider", &["outsider"], false);
    let create = Request::CreateTopic { name: "mutual".into(), settings: TopicSettings::default() };
    assert!(call(&node.address, &authority.client_tls(Some(&member)), &create).is_ok());
    for (who, identity) in [("no certificate", None), ("a stranger's certificate", Some(&outsider))] {
        let refused = call(&node.address, &authority.client_tls(identity), &Request::ListTopics);
        assert!(refused.is_err(), "a client with {who} is refused");
    }
    // The admin API's own mutations reach the client listener with the
    // node's certificate (pinned), so they still work under mutual TLS.
    let (status, body) = admin_get(&node, &authority.client_tls(Some(&member)), "/api/topics/mutual").unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_key_file_others_can_read_stops_the_node_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let leaf = authority.server(dir.path(), "node");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&leaf.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["serve", "--listen", &free_address(), "--admin", &free_address(), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RINGLOG_KAFKA_LISTEN", "")
        .envs(tls_environment(&leaf))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("chmod 600") && message.contains("node.key"), "{message}");
}

#[test]
fn the_admin_api_serves_https_and_its_mutations_work() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    // A certificate naming only `localhost`: the admin API's own loopback
    // connection to 127.0.0.1 trusts it by its pin, not by its name.
    let leaf = authority.leaf(dir.path(), "node", &["localhost"], false);
    let node = tls_node(dir.path(), &leaf, &[]);
    let admin = format!("localhost:{}", node.admin.rsplit_once(':').unwrap().1);
    let tls = authority.client_tls(None);
    let body = r#"{"name":"viahttps","partitions":2}"#;
    let (status, answer) = admin_call(&admin, &tls, hyper::Method::POST, "/api/topics", Some(body)).unwrap();
    assert_eq!(status, 201, "{answer}");
    let (status, listed) = admin_call(&admin, &tls, hyper::Method::GET, "/api/topics", None).unwrap();
    assert_eq!(status, 200);
    assert!(listed.contains("viahttps"), "{listed}");
    let (status, page) = admin_call(&admin, &tls, hyper::Method::GET, "/", None).unwrap();
    assert!(status == 200 && page.contains("<html"), "the console is served over https too");
}

#[test]
fn a_certificate_reload_serves_new_connections_the_new_certificate_and_drops_no_open_one() {
    let dir = tempfile::tempdir().unwrap();
    let old_authority = Authority::new(dir.path(), "old");
    let new_authority = Authority::new(dir.path(), "new");
    let leaf = old_authority.server(dir.path(), "node");
    let node = tls_node(dir.path(), &leaf, &[]);
    let old_tls = old_authority.client_tls(None);
    let create = Request::CreateTopic { name: "rotating".into(), settings: TopicSettings::default() };
    call(&node.address, &old_tls, &create).unwrap();
    // A producer on one connection, producing before, during and after the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let producer = {
        let (address, tls, stop, acknowledged) =
            (node.address.clone(), old_tls.clone(), stop.clone(), acknowledged.clone());
        std::thread::spawn(move || produce_until(&address, &tls, &stop, &acknowledged))
    };
    wait_until(|| acknowledged.load(Ordering::SeqCst) >= 20);
    // A reload that fails (a key that is not the certificate's) keeps the
    // certificate in use.
    let stray = new_authority.server(dir.path(), "stray");
    let original_key = std::fs::read_to_string(&leaf.key_file).unwrap();
    crate::certs::write_private(&leaf.key_file, &std::fs::read_to_string(&stray.key_file).unwrap());
    unsafe { libc::kill(node.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(call(&node.address, &old_tls, &Request::ListTopics).is_ok(), "a failed reload keeps the old certificate");
    crate::certs::write_private(&leaf.key_file, &original_key);
    let rotated = new_authority.server(dir.path(), "rotated");
    std::fs::copy(&rotated.cert_file, &leaf.cert_file).unwrap();
    crate::certs::write_private(&leaf.key_file, &std::fs::read_to_string(&rotated.key_file).unwrap());
    unsafe { libc::kill(node.pid() as i32, libc::SIGHUP) };
    wait_until(|| call(&node.address, &new_authority.client_tls(None), &Request::ListTopics).is_ok());
    let before = acknowledged.load(Ordering::SeqCst);
    wait_until(|| acknowledged.load(Ordering::SeqCst) >= before + 20);
    stop.store(true, Ordering::SeqCst);
    let failure = producer.join().unwrap();
    assert_eq!(failure, None, "the open connection kept working through the reload");
    assert!(call(&node.address, &old_tls, &Request::ListTopics).is_err(), "new connections get the new certificate");
}

/// Produce one record at a time on one connection until `stop`; the first
/// failure, if any.
fn produce_until(address: &str, tls: &ClientTls, stop: &AtomicBool, acknowledged: &AtomicU64) -> Option<String> {
    runtime().block_on(async {
        let connection = Connection::connect_with(address, tls).await.map_err(|error| error.to_string()).ok()?;
        while !stop.load(Ordering::SeqCst) {
            let request = crate::node::produce_request("rotating", 0, ringlog::protocol::Acks::All, &["r".to_string()]);
            match connection.call(&request).await {
                Ok(_) => acknowledged.fetch_add(1, Ordering::SeqCst),
                Err(error) => return Some(error.to_string()),
            };
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    })
}

fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kcat_produces_and_consumes_over_tls_and_a_plaintext_kafka_client_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let kafka = free_address();
    let node = tls_node(dir.path(), &authority.server(dir.path(), "node"), &[("RINGLOG_KAFKA_LISTEN", &kafka)]);
    let ca = authority.ca_file.display().to_string();
    let create = Request::CreateTopic { name: "kafka-tls".into(), settings: TopicSettings::default() };
    call(&node.address, &authority.client_tls(None), &create).unwrap();
    let ssl = ["-X", "security.protocol=ssl", "-X"];
    let ca_location = format!("ssl.ca.location={ca}");
    let mut produce = vec!["-b", kafka.as_str(), "-P", "-t", "kafka-tls", "-p", "0"];
    produce.extend_from_slice(&ssl);
    produce.push(&ca_location);
    let produced = crate::kafka::kcat(&produce, b"alpha\nbeta\n");
    let produce_errors = String::from_utf8_lossy(&produced.stderr).to_string();
    assert!(produced.status.success() && !produce_errors.contains("ERROR"), "{produce_errors}");
    let mut consume = vec!["-b", kafka.as_str(), "-C", "-t", "kafka-tls", "-p", "0", "-o", "beginning", "-e"];
    consume.extend_from_slice(&ssl);
    consume.push(&ca_location);
    let consumed = crate::kafka::kcat(&consume, b"");
    assert_eq!(stdout(&consumed).lines().collect::<Vec<_>>(), ["alpha", "beta"], "{}", stderr(&consumed));
    // The same client in plaintext gets no metadata: the port speaks TLS only.
    let plaintext =
        crate::kafka::kcat(&["-b", &kafka, "-L", "-m", "3", "-X", "socket.connection.setup.timeout.ms=2000"], b"");
    assert!(!plaintext.status.success(), "plaintext Kafka is refused: {}", stdout(&plaintext));
}

/// A config file serving mutual TLS on the replication listener only (the
/// test harness reads health and node lists over plaintext admin HTTP).
/// Its peers are trusted through `ca`.
fn replication_tls_config(dir: &Path, name: &str, leaf: &Leaf, client_ca: &Path, ca: &Path) -> String {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\nca_file = {:?}\n\
         [tls.client]\nenabled = false\n[tls.admin]\nenabled = false\n",
        leaf.cert_file, leaf.key_file, client_ca, ca
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn followers_replicate_over_mutual_tls_and_a_node_with_a_foreign_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "cluster");
    let mut cluster = crate::cluster::Cluster::with_replication(2_000, 2);
    // Each node its own certificate: the follower is admitted through the
    // client CA, not as the leader's own certificate.
    let mut start = |name: &str, role: &str| {
        let leaf = authority.server(dir.path(), name);
        let config = replication_tls_config(dir.path(), name, &leaf, &authority.ca_file, &authority.ca_file);
        cluster.flags = vec!["--config".into(), config];
        let member = cluster.member(name);
        let node = cluster.start(&member);
        crate::cluster::wait_for_role(&node, role);
        (member, node)
    };
    let (_a, leader) = start("a", "leader");
    let (_b, _follower) = start("b", "follower");
    crate::cluster::wait_for(Duration::from_secs(30), "the follower in sync", || {
        let view = crate::fixtures::nodes_view(&leader);
        view.len() == 2 && view.iter().all(|node| node["in_sync"] == true && node["connected"] == true)
    });
    crate::fixtures::create_topic(&leader, "replicated", 1);
    let produced = leader.client().call(crate::node::produce_request(
        "replicated",
        0,
        ringlog::protocol::Acks::All,
        &["over-tls".to_string()],
    ));
    assert!(produced.is_ok(), "acks=all is met through the TLS follower: {produced:?}");
    // Answers whose bodies are 16 KiB and more (two partitions' batches in
    // one answer, sealed as one piece on TLS) reach the follower intact:
    // it checks every batch's CRC before acks=all can be met.
    crate::fixtures::create_topic(&leader, "large", 2);
    let values: Vec<String> = (0..40).map(|index| format!("{index:04}").repeat(256)).collect();
    for acks in [ringlog::protocol::Acks::Leader, ringlog::protocol::Acks::All] {
        for partition in [0, 1] {
            let produced = leader.client().call(crate::node::produce_request("large", partition, acks, &values));
            assert!(produced.is_ok(), "40 KiB to partition {partition} with {acks:?}: {produced:?}");
        }
    }
    // A node whose certificate comes from another CA is not let in, even
    // though it trusts the leader's: the leader refuses its certificate.
    let stranger = Authority::new(dir.path(), "stranger");
    let foreign = stranger.server(dir.path(), "foreign");
    let foreign_config = replication_tls_config(dir.path(), "foreign", &foreign, &stranger.ca_file, &authority.ca_file);
    cluster.flags = vec!["--config".into(), foreign_config];
    let outsider = cluster.member("c");
    let _outsider_node = cluster.start(&outsider);
    std::thread::sleep(Duration::from_secs(3));
    let view = crate::fixtures::nodes_view(&leader);
    let connected: Vec<_> = view.iter().filter(|node| node["connected"] == true).collect();
    assert_eq!(connected.len(), 2, "only the leader and the trusted follower are connected: {view:?}");
    let log = crate::cluster::log_of(&outsider);
    assert!(log.contains("UnknownCA"), "the outsider hears the leader's refusal of its certificate: {log}");
}

/// A single etcd serving TLS that requires client certificates from
/// `authority`, with authentication enabled and user `root` (password
/// `root-password`); killed when dropped.
struct SecuredEtcd {
    child: std::process::Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl Drop for SecuredEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd_options(authority: &Authority, client: &Leaf, user: Option<(&str, &str)>) -> etcd_client::ConnectOptions {
    let read = |path: &Path| std::fs::read(path).unwrap();
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&authority.ca_file)))
        .identity(etcd_client::Identity::from_pem(read(&client.cert_file), read(&client.key_file)));
    let options = etcd_client::ConnectOptions::new().with_tls(tls).with_connect_timeout(Duration::from_secs(2));
    match user {
        Some((name, password)) => options.with_user(name, password),
        None => options,
    }
}

fn start_secured_etcd(dir: &Path, authority: &Authority, client: &Leaf) -> SecuredEtcd {
    let server = authority.server(dir, "etcd");
    let data = tempfile::tempdir().unwrap();
    let (client_port, peer_port) = (crate::node::free_port(), crate::node::free_port());
    let endpoint = format!("https://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new("etcd")
        .args(["--name", "secured", "--data-dir"])
        .arg(data.path().join("etcd"))
        .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("secured={peer}"), "--client-cert-auth"])
        .arg("--cert-file")
        .arg(&server.cert_file)
        .arg("--key-file")
        .arg(&server.key_file)
        .arg("--trusted-ca-file")
        .arg(&authority.ca_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd (bash tools/install-deps.sh)");
    let etcd = SecuredEtcd { child, endpoint, _data: data };
    let options = etcd_options(authority, client, None);
    wait_until(|| {
        runtime().block_on(async {
            let Ok(mut client) = etcd_client::Client::connect([etcd.endpoint.as_str()], Some(options.clone())).await
            else {
                return false;
            };
            if client.get("probe", None).await.is_err() {
                return false;
            }
            client.user_add("root", "root-password", None).await.unwrap();
            client.user_grant_role("root", "root").await.unwrap();
            client.auth_enable().await.unwrap();
            true
        })
    });
    etcd
}

#[test]
fn a_node_reaches_etcd_over_mutual_tls_with_a_user_and_a_wrong_password_keeps_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "etcd-ca");
    let client = authority.leaf(dir.path(), "etcd-client", &["ringlog-node"], false);
    let etcd = start_secured_etcd(dir.path(), &authority, &client);
    let start = |name: &str, password: &str| {
        let environment = [
            ("RINGLOG_CLUSTER_ETCD_CA_FILE", authority.ca_file.display().to_string()),
            ("RINGLOG_CLUSTER_ETCD_CERT_FILE", client.cert_file.display().to_string()),
            ("RINGLOG_CLUSTER_ETCD_KEY_FILE", client.key_file.display().to_string()),
            ("RINGLOG_CLUSTER_ETCD_USER", "root".to_string()),
            ("RINGLOG_CLUSTER_ETCD_PASSWORD", password.to_string()),
            ("RINGLOG_CLUSTER_LEASE_TTL_S", "2".to_string()),
            ("RUST_LOG", "warn,ringlog::cluster=info".to_string()),
        ];
        let environment: Vec<(&str, &str)> = environment.iter().map(|(key, value)| (*key, value.as_str())).collect();
        let log = dir.path().join(format!("{name}.log"));
        let flags = ["--etcd", etcd.endpoint.as_str(), "--replication-listen", &free_address()];
        let node =
            Node::spawn(&free_address(), &free_address(), &dir.path().join(name), 1, &flags, &environment, Some(&log));
        (node, log)
    };
    let (leader, _) = start("a", "root-password");
    assert_eq!(crate::cluster::wait_for_role(&leader, "leader"), 1, "the node joined through TLS and etcd auth");
    let (outsider, log) = start("b", "wrong-password");
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(log).unwrap();
    let health = crate::cluster::health(&outsider);
    assert!(health["node_id"].is_null(), "a wrong etcd password keeps the node out: {health}\n{log}");
    assert_eq!(crate::fixtures::nodes_view(&leader).len(), 1, "the leader sees no second node");
    assert!(log.contains("authentication failed"), "the node says why: {log}");
    assert!(!log.contains("wrong-password"), "the password is never logged");
}

/// A TLS node (with `extra` settings) holding one batch of 1 MiB in topic
/// `large`, and a client configuration that trusts it.
fn tls_node_with_a_large_batch(dir: &Path, extra: &[(&str, &str)]) -> (Node, ClientTls) {
    let authority = Authority::new(dir, "ringlog-test");
    let node = tls_node(dir, &authority.server(dir, "node"), extra);
    let tls = authority.client_tls(None);
    let create = Request::CreateTopic { name: "large".into(), settings: TopicSettings::default() };
    call(&node.address, &tls, &create).unwrap();
    let value = "v".repeat(256 << 10);
    let produce = crate::node::produce_request("large", 0, ringlog::protocol::Acks::Leader, &vec![value; 4]);
    call(&node.address, &tls, &produce).unwrap();
    (node, tls)
}

/// A blocking TLS connection to `address`, trusting what `tls` trusts.
fn tls_stream(tls: &ClientTls, address: &str) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let name = ringlog::security::tls::server_name(address).unwrap();
    let session = rustls::ClientConnection::new(tls.clone().unwrap(), name).unwrap();
    rustls::StreamOwned::new(session, std::net::TcpStream::connect(address).unwrap())
}

#[test]
fn a_corrupt_record_from_a_client_that_stopped_reading_still_frees_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (node, tls) = tls_node_with_a_large_batch(dir.path(), &[]);
    // A TLS client that asks for megabytes and reads none of it: the
    // node's writer blocks on the full socket.
    let mut stream = tls_stream(&tls, &node.address);
    for correlation_id in 1..=64 {
        let fetch =
            Request::Fetch { topic: "large".into(), partition: 0, offset: 0, max_bytes: 1 << 20, max_wait_ms: 0 };
        let mut frame = Vec::new();
        ringlog::protocol::encode_request(correlation_id, &fetch, &mut frame);
        stream.write_all(&frame).unwrap();
    }
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Then one application-data record that does not decrypt: the node's
    // read fails while its writer waits for room.
    let mut garbage = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    garbage.extend(std::iter::repeat_n(0x5a, 0x40));
    stream.sock.write_all(&garbage).unwrap();
    // The connection must be gone after the close grace (5 s), its writer
    // woken by the shutdown, even though this client never reads.
    let open_connections = || {
        let (_, metrics) = admin_get(&node, &tls, "/metrics").unwrap();
        metric(&metrics, "ringlog_connections")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_connections() > 0 {
        assert!(Instant::now() < deadline, "the connection of a client that stopped reading was never freed");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stream);
}

#[test]
fn a_tls_kafka_client_that_stops_reading_is_closed_without_a_goodbye_that_stalls_again() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir().unwrap();
    let kafka = free_address();
    let stall = ("RINGLOG_LIMITS_WRITE_STALL_TIMEOUT_MS", "3000");
    let (node, tls) = tls_node_with_a_large_batch(dir.path(), &[("RINGLOG_KAFKA_LISTEN", &kafka), stall]);
    // 12 fetches of 1 MiB each, more than the sockets hold, and far less
    // than the answer bound: the node's reader reads them all and then
    // waits on a client that sends nothing more, and only the writer's
    // stall can end the connection.
    let mut stream = tls_stream(&tls, &kafka);
    crate::fixtures::shrink_receive_buffer(&stream.sock);
    let partition = FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("large")))
        .with_partitions(vec![partition]);
    let fetch = FetchRequest::default().with_max_bytes(1 << 20).with_topics(vec![topic]);
    for correlation_id in 1..=12 {
        let frame = crate::kafka::request_frame(ApiKey::Fetch, 12, correlation_id, &fetch);
        stream.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
        stream.write_all(&frame).unwrap();
    }
    stream.flush().unwrap();
    let started = Instant::now();
    let read_metric = |name: &str| {
        let (_, metrics) = admin_get(&node, &tls, "/metrics").unwrap();
        metric(&metrics, name)
    };
    while read_metric("ringlog_write_stalls_total") == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the writer never stalled");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Counted when the write fails. A goodbye (TLS close_notify) to a peer
    // that reads nothing would stall once more before the close.
    let stalled = Instant::now();
    while read_metric("ringlog_connections") > 0 {
        assert!(stalled.elapsed() < Duration::from_secs(20), "the stalled connection was never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let closing = stalled.elapsed();
    assert!(closing < Duration::from_millis(1_500), "closed at once after the stall, not a timeout later: {closing:?}");
    assert_eq!(read_metric("ringlog_write_stalls_total"), 1);
    drop(stream);
}

/// Over TLS the records a Fetch answer sends from their own buffers are
/// joined into its frame (a write each would seal runt records): the
/// answer still reads back whole.
#[test]
fn a_kafka_fetch_of_large_and_small_partitions_reads_back_whole_over_tls() {
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    let dir = tempfile::tempdir().unwrap();
    let kafka = free_address();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let node = tls_node(dir.path(), &authority.server(dir.path(), "node"), &[("RINGLOG_KAFKA_LISTEN", &kafka)]);
    let tls = authority.client_tls(None);
    let settings = TopicSettings { partitions: 3, ..TopicSettings::default() };
    call(&node.address, &tls, &Request::CreateTopic { name: "kafka-spliced".into(), settings }).unwrap();
    let values = crate::kafka::spliced_fetch_values();
    for (partition, values) in values.iter().enumerate() {
        let values: Vec<String> = values.iter().map(|value| String::from_utf8(value.clone()).unwrap()).collect();
        let produce = crate::node::produce_request("kafka-spliced", partition as u32, Acks::Leader, &values);
        call(&node.address, &tls, &produce).unwrap();
    }
    let mut stream = tls_stream(&tls, &kafka);
    let fetch = crate::kafka::long_poll_request("kafka-spliced", 3, 0);
    // v11 ends with the last partition's records (the frame's last piece,
    // written apart); v12 has tagged fields after them (joined).
    for (correlation_id, version) in [(1, 11), (2, 12)] {
        let frame = crate::kafka::request_frame(ApiKey::Fetch, version, correlation_id, &fetch);
        stream.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
        stream.write_all(&frame).unwrap();
        stream.flush().unwrap();
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).unwrap();
        let mut answer = vec![0u8; i32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut answer).unwrap();
        let mut answer = bytes::Bytes::from(answer);
        let header = ResponseHeader::decode(&mut answer, ApiKey::Fetch.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        let response = FetchResponse::decode(&mut answer, version).unwrap();
        assert!(answer.is_empty(), "v{version}: bytes after the answer");
        crate::kafka::assert_fetched_values(&response, &values);
    }
}

#[test]
fn a_client_certificate_that_names_a_user_authenticates_as_that_user() {
    use ringlog::security::Role;
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let clients = Authority::new(dir.path(), "clients");
    let users = crate::auth::users_file(
        dir.path(),
        &[("alice", Role::Admin, "*", "alice-password"), ("bob", Role::Consumer, "orders", "bob-password")],
    );
    let (client_ca, users) = (clients.ca_file.display().to_string(), users.display().to_string());
    let settings = [
        ("RINGLOG_TLS_CLIENT_CA_FILE", client_ca.as_str()),
        ("RINGLOG_AUTH_ENABLED", "true"),
        ("RINGLOG_AUTH_USERS_FILE", users.as_str()),
    ];
    let node = tls_node(dir.path(), &authority.server(dir.path(), "node"), &settings);
    let alice = clients.leaf(dir.path(), "alice", &["alice"], false);
    let ca = authority.ca_file.display().to_string();
    let (cert, key) = (alice.cert_file.display().to_string(), alice.key_file.display().to_string());
    let tls = ["--tls-ca", ca.as_str(), "--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    let as_user = |user: Option<&str>, command: &[&str]| {
        let mut arguments = command.to_vec();
        arguments.extend_from_slice(&tls);
        if let Some(user) = user {
            arguments.extend_from_slice(&["--user", user]);
        }
        ringlog(&node, &arguments, None)
    };
    let created = as_user(Some("alice"), &["topic", "create", "by-certificate"]);
    assert!(created.status.success(), "alice's certificate makes her alice: {}", stderr(&created));
    let impostor = as_user(Some("bob"), &["topic", "list"]);
    assert!(!impostor.status.success(), "alice's certificate does not make her bob");
    assert!(stderr(&impostor).contains("authentication_failed"), "{}", stderr(&impostor));
    let anonymous = as_user(None, &["topic", "list"]);
    assert!(!anonymous.status.success(), "a certificate alone, without --user, does not authenticate");
}
