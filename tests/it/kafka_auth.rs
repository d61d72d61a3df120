//! SASL and authorization on the Kafka listener (`[auth]`, docs/KAFKA.md,
//! docs/SECURITY.md): kcat and kafka-python authenticate with
//! SCRAM-SHA-256 over TLS; PLAIN works over TLS only; a wrong password, a
//! client that skips SASL and requests beyond a user's role are refused;
//! users are added offline with `ringlog user add`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, ProduceResponse, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringlog::net::client::{Client, Credentials};
use ringlog::protocol::{Request, TopicSettings};
use ringlog::security::scram::{new_nonce, ScramClient};

use crate::certs::{tls_environment, Authority};
use crate::fixtures::metric;
use crate::kafka::{closed_by_node, crate_batch, kcat, produce_request, require_python_module, KafkaClient};
use crate::node::{free_address, Node};

const ADMIN_PASSWORD: &str = "kafka-admin-password";
const WRITER_PASSWORD: &str = "kafka-writer-password";
const READER_PASSWORD: &str = "kafka-reader-password";

/// A users file made offline by the CLI: `root` (admin), `writer`
/// (producer of `orders*`) and `reader` (consumer of `orders*`).
fn users_file(dir: &Path) -> PathBuf {
    let path = dir.join("users.json");
    let file = path.to_str().unwrap();
    for (name, role, password) in [
        ("root", "admin", ADMIN_PASSWORD),
        ("writer", "producer", WRITER_PASSWORD),
        ("reader", "consumer", READER_PASSWORD),
    ] {
        let added = Command::new(env!("CARGO_BIN_EXE_ringlog"))
            .args(["user", "add", name, "--role", role, "--topics", "orders*", "--users-file", file])
            .env("RINGLOG_NEW_PASSWORD", password)
            .output()
            .unwrap();
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    }
    path
}

/// A node with `[auth]` on and a Kafka listener (TLS on every listener
/// when `authority` is given); its Kafka address.
fn secured_node(dir: &Path, authority: Option<&Authority>) -> (Node, String) {
    secured_node_with(dir, authority, &[])
}

/// As [`secured_node`], with `extra` settings.
fn secured_node_with(dir: &Path, authority: Option<&Authority>, extra: &[(&str, &str)]) -> (Node, String) {
    let users = users_file(dir);
    let kafka = free_address();
    let mut environment = vec![
        ("RINGLOG_AUTH_ENABLED".to_string(), "true".to_string()),
        ("RINGLOG_AUTH_USERS_FILE".to_string(), users.display().to_string()),
        ("RINGLOG_KAFKA_LISTEN".to_string(), kafka.clone()),
    ];
    if let Some(authority) = authority {
        environment.extend(tls_environment(&authority.server(dir, "node")));
    }
    environment.extend(extra.iter().map(|(key, value)| (key.to_string(), value.to_string())));
    let environment: Vec<(&str, &str)> =
        environment.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    (Node::start_with(&dir.join("data"), 1, &environment), kafka)
}

/// Create `topic` through the native listener as the admin.
fn create_as_admin(node: &Node, authority: Option<&Authority>, topic: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = Client::new(vec![node.address.clone()], Duration::from_millis(500))
            .with_credentials(Some(Credentials { user: "root".into(), password: ADMIN_PASSWORD.into() }));
        if let Some(authority) = authority {
            client = client.with_tls(authority.client_tls(None));
        }
        let create = Request::CreateTopic { name: topic.into(), settings: TopicSettings::default() };
        client.call(&create).await.expect("the admin creates a topic");
    });
}

/// SASL/SCRAM-SHA-256 on a raw Kafka connection; the SaslAuthenticate
/// error code when the node refuses.
fn scram_login(client: &mut KafkaClient, user: &str, password: &str) -> Result<(), i16> {
    let handshake = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
    let answer: SaslHandshakeResponse = client.call(ApiKey::SaslHandshake, 1, &handshake);
    assert_eq!(answer.error_code, 0);
    let (scram, client_first) = ScramClient::new(user, password.as_bytes(), &new_nonce().unwrap()).unwrap();
    let first = SaslAuthenticateRequest::default().with_auth_bytes(client_first.into());
    let answer: SaslAuthenticateResponse = client.call(ApiKey::SaslAuthenticate, 2, &first);
    if answer.error_code != 0 {
        return Err(answer.error_code);
    }
    let (scram, client_final) = scram.respond(&answer.auth_bytes).unwrap();
    let last = SaslAuthenticateRequest::default().with_auth_bytes(client_final.into());
    let answer: SaslAuthenticateResponse = client.call(ApiKey::SaslAuthenticate, 2, &last);
    if answer.error_code != 0 {
        return Err(answer.error_code);
    }
    scram.verify(&answer.auth_bytes).expect("the server proves it knows the credential");
    Ok(())
}

fn logged_in(kafka: &str, user: &str, password: &str) -> KafkaClient {
    let mut client = KafkaClient::connect(kafka);
    scram_login(&mut client, user, password).unwrap_or_else(|code| panic!("{user}: error code {code}"));
    client
}

fn sasl_arguments<'a>(mechanism: &'a str, user: &'a str, password: &'a str, ca: &'a str) -> Vec<String> {
    [
        "security.protocol=sasl_ssl".to_string(),
        format!("sasl.mechanisms={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={ca}"),
    ]
    .into_iter()
    .flat_map(|setting| ["-X".to_string(), setting])
    .collect()
}

/// kcat `arguments` then the SASL settings; stdout, or a panic with stderr.
fn kcat_as(arguments: &[&str], sasl: &[String], input: &[u8]) -> String {
    let mut all: Vec<&str> = arguments.to_vec();
    all.extend(sasl.iter().map(String::as_str));
    let output = kcat(&all, input);
    let errors = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success() && !errors.contains("ERROR"), "kcat {arguments:?}: {errors}");
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn kcat_produces_and_consumes_with_scram_sha_256_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let (node, kafka) = secured_node(dir.path(), Some(&authority));
    create_as_admin(&node, Some(&authority), "orders");
    let ca = authority.ca_file.display().to_string();
    let writer = sasl_arguments("SCRAM-SHA-256", "writer", WRITER_PASSWORD, &ca);
    kcat_as(&["-b", &kafka, "-P", "-t", "orders", "-p", "0"], &writer, b"alpha\nbeta\n");
    let reader = sasl_arguments("SCRAM-SHA-256", "reader", READER_PASSWORD, &ca);
    let consumed = kcat_as(&["-b", &kafka, "-C", "-t", "orders", "-p", "0", "-o", "beginning", "-e"], &reader, b"");
    assert_eq!(consumed.lines().collect::<Vec<_>>(), ["alpha", "beta"]);
}

#[test]
fn kafka_python_produces_and_consumes_in_a_group_with_scram_sha_256_over_tls() {
    require_python_module("kafka", "kafka-python");
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let (node, kafka) = secured_node(dir.path(), Some(&authority));
    create_as_admin(&node, Some(&authority), "orders-python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/kafka_python_sasl.py");
    let ca = authority.ca_file.display().to_string();
    let arguments =
        [&kafka, &ca, "SCRAM-SHA-256", "orders-python", "writer", WRITER_PASSWORD, "reader", READER_PASSWORD];
    let output = Command::new("python3").arg(script).args(arguments).output().unwrap();
    assert!(output.status.success(), "kafka-python: {}", String::from_utf8_lossy(&output.stderr));
    let lines = String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(lines, ["v0", "v1", "v2", "group|v0,v1,v2|3"], "by partition, then in a group that commits");
}

#[test]
fn plain_authenticates_over_tls_and_is_refused_over_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ringlog-test");
    let (node, kafka) = secured_node(dir.path(), Some(&authority));
    create_as_admin(&node, Some(&authority), "orders");
    let ca = authority.ca_file.display().to_string();
    let writer = sasl_arguments("PLAIN", "writer", WRITER_PASSWORD, &ca);
    kcat_as(&["-b", &kafka, "-P", "-t", "orders", "-p", "0"], &writer, b"plain\n");
    let reader = sasl_arguments("PLAIN", "reader", READER_PASSWORD, &ca);
    let consumed = kcat_as(&["-b", &kafka, "-C", "-t", "orders", "-p", "0", "-o", "beginning", "-e"], &reader, b"");
    assert_eq!(consumed.lines().collect::<Vec<_>>(), ["plain"]);
    let wrong = sasl_arguments("PLAIN", "reader", "not-the-password", &ca);
    let mut refused: Vec<String> = ["-b", &kafka, "-L", "-m", "5"].map(String::from).to_vec();
    refused.extend(wrong);
    let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
    assert!(!kcat(&refused, b"").status.success(), "a wrong PLAIN password gets no metadata");

    let plaintext_dir = tempfile::tempdir().unwrap();
    let (_plaintext_node, plaintext_kafka) = secured_node(plaintext_dir.path(), None);
    let mut client = KafkaClient::connect(&plaintext_kafka);
    let handshake = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let answer: SaslHandshakeResponse = client.call(ApiKey::SaslHandshake, 1, &handshake);
    assert_eq!(answer.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    let enabled: Vec<&str> = answer.mechanisms.iter().map(|name| name.as_str()).collect();
    assert_eq!(enabled, ["SCRAM-SHA-256"], "PLAIN is offered under TLS only");
    assert!(closed_by_node(&mut client.stream));
}

#[test]
fn a_wrong_scram_password_is_refused_closed_and_counted_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (node, kafka) = secured_node(dir.path(), None);
    let mut client = KafkaClient::connect(&kafka);
    assert_eq!(scram_login(&mut client, "root", "not-the-password"), Err(58), "SASL_AUTHENTICATION_FAILED");
    assert!(closed_by_node(&mut client.stream), "closed after a failed authentication");
    let mut stranger = KafkaClient::connect(&kafka);
    assert_eq!(scram_login(&mut stranger, "nobody", "x"), Err(58));
    assert_eq!(metric(&node, "ringlog_auth_failures_total"), 2);
    logged_in(&kafka, "root", ADMIN_PASSWORD);
    assert_eq!(metric(&node, "ringlog_auth_successes_total"), 1);
}

#[test]
fn kafka_authentication_failures_are_rate_limited_per_source_with_the_native_settings() {
    let dir = tempfile::tempdir().unwrap();
    // One shard: the limiter is per shard.
    let (node, kafka) = secured_node_with(dir.path(), None, &[("RINGLOG_AUTH_MAX_FAILURES_PER_MINUTE", "2")]);
    for _ in 0..2 {
        assert_eq!(scram_login(&mut KafkaClient::connect(&kafka), "root", "guess"), Err(58));
    }
    let mut limited = KafkaClient::connect(&kafka);
    assert_eq!(scram_login(&mut limited, "root", ADMIN_PASSWORD), Err(58), "refused even with the right password");
    assert!(closed_by_node(&mut limited.stream));
    assert_eq!(metric(&node, "ringlog_auth_rate_limited_total"), 1);
    assert_eq!(metric(&node, "ringlog_auth_failures_total"), 2, "a refusal at the door is not a new failure");
}

#[test]
fn a_removed_users_kafka_connection_closes_at_its_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let (node, kafka) = secured_node(dir.path(), None);
    let mut reader = logged_in(&kafka, "reader", READER_PASSWORD);
    let _: ApiVersionsResponse = reader.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let (status, _) = crate::auth::http_basic(&node.admin, "DELETE", "/api/users/reader", None, "root", ADMIN_PASSWORD);
    assert_eq!(status, 204);
    reader.send(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert!(closed_by_node(&mut reader.stream), "the removed user's next request closes its connection");
    assert_eq!(scram_login(&mut KafkaClient::connect(&kafka), "reader", READER_PASSWORD), Err(58));
}

#[test]
fn a_kafka_client_that_skips_sasl_gets_api_versions_and_is_then_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, kafka) = secured_node(dir.path(), None);
    let mut client = KafkaClient::connect(&kafka);
    let versions: ApiVersionsResponse = client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0, "ApiVersions is served before authentication");
    client.send(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert!(closed_by_node(&mut client.stream), "Metadata before SASL closes the connection unanswered");
    let unauthenticated = kcat(&["-b", &kafka, "-L", "-m", "3"], b"");
    assert!(!unauthenticated.status.success(), "kcat without SASL gets no metadata");
}

fn create_topic_error(client: &mut KafkaClient, name: &str) -> i16 {
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.into())))
        .with_num_partitions(1)
        .with_replication_factor(1);
    let request = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(5_000);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 5, &request);
    response.topics[0].error_code
}

fn delete_topic_error(client: &mut KafkaClient, name: &str) -> i16 {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(StrBytes::from_string(name.into()))])
        .with_timeout_ms(5_000);
    let response: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 4, &request);
    response.responses[0].error_code
}

#[test]
fn kafka_requests_beyond_a_users_role_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (node, kafka) = secured_node(dir.path(), None);
    let mut root = logged_in(&kafka, "root", ADMIN_PASSWORD);
    assert_eq!(create_topic_error(&mut root, "orders"), 0, "an admin creates topics through Kafka");
    let mut reader = logged_in(&kafka, "reader", READER_PASSWORD);
    let produce = produce_request("orders", 0, 1, crate_batch(&[b"x"]));
    let answer: ProduceResponse = reader.call(ApiKey::Produce, 8, &produce);
    assert_eq!(answer.responses[0].partition_responses[0].error_code, 29, "TOPIC_AUTHORIZATION_FAILED");
    let init: InitProducerIdResponse = reader.call(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default());
    assert_eq!(init.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED: a consumer has no producer id");
    let mut writer = logged_in(&kafka, "writer", WRITER_PASSWORD);
    let answer: ProduceResponse = writer.call(ApiKey::Produce, 8, &produce);
    assert_eq!(answer.responses[0].partition_responses[0].error_code, 0, "the producer of orders* writes");
    let elsewhere = produce_request("payments", 0, 1, crate_batch(&[b"x"]));
    let answer: ProduceResponse = writer.call(ApiKey::Produce, 8, &elsewhere);
    assert_eq!(answer.responses[0].partition_responses[0].error_code, 29, "outside its topic pattern");
    assert_eq!(create_topic_error(&mut writer, "orders-new"), 29, "a producer may not create topics");
    assert_eq!(delete_topic_error(&mut writer, "orders"), 29, "a producer may not delete topics");
    assert_eq!(delete_topic_error(&mut reader, "orders"), 29, "a consumer may not delete topics");
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("group"));
    let coordinator: FindCoordinatorResponse = writer.call(ApiKey::FindCoordinator, 2, &find);
    assert_eq!(coordinator.error_code, 30, "GROUP_AUTHORIZATION_FAILED: a producer has no group");
    let coordinator: FindCoordinatorResponse = reader.call(ApiKey::FindCoordinator, 2, &find);
    assert_eq!(coordinator.error_code, 0, "a consumer finds its coordinator");
    // A long poll of a topic it may not read is answered at once: nothing
    // is left to wait on (it spun its shard until the deadline).
    let partition = FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("orders")))
        .with_partitions(vec![partition]);
    let poll = FetchRequest::default().with_max_wait_ms(3_000).with_min_bytes(1).with_topics(vec![topic]);
    let started = std::time::Instant::now();
    let answer: FetchResponse = writer.call(ApiKey::Fetch, 11, &poll);
    assert_eq!(answer.responses[0].partitions[0].error_code, 29, "a producer does not read");
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "answered at once: {:?}", started.elapsed());
    assert_eq!(metric(&node, "ringlog_auth_not_authorized_total"), 8);
    assert_eq!(delete_topic_error(&mut root, "orders"), 0, "an admin deletes topics through Kafka");
}

#[test]
fn without_auth_a_sasl_handshake_is_answered_with_no_mechanism() {
    let node = crate::kafka::start(1);
    let mut client = KafkaClient::connect(&node.kafka);
    let handshake = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
    let answer: SaslHandshakeResponse = client.call(ApiKey::SaslHandshake, 1, &handshake);
    assert_eq!(answer.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    assert!(answer.mechanisms.is_empty(), "{:?}", answer.mechanisms);
}

#[test]
fn a_kafka_session_ends_when_its_user_is_re_added_with_a_new_password() {
    let dir = tempfile::tempdir().unwrap();
    let (node, kafka) = secured_node(dir.path(), None);
    let mut stolen = logged_in(&kafka, "reader", READER_PASSWORD);
    let basic = |method: &str, path: &str, body: Option<&str>| {
        crate::auth::http_basic(&node.admin, method, path, body, "root", ADMIN_PASSWORD).0
    };
    // Removed and re-added while the old session sends nothing.
    assert_eq!(basic("DELETE", "/api/users/reader", None), 204);
    let again = r#"{"name":"reader","role":"consumer","topics":"orders*","password":"rotated-password"}"#;
    assert_eq!(basic("POST", "/api/users", Some(again)), 201);
    stolen.send(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert!(closed_by_node(&mut stolen.stream), "the session of the old password ends");
    let _ = logged_in(&kafka, "reader", "rotated-password");
}

#[test]
fn an_anonymous_kafka_connection_is_closed_when_it_does_not_authenticate_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, kafka) = secured_node_with(dir.path(), None, &[("RINGLOG_AUTH_AUTHENTICATION_TIMEOUT_MS", "500")]);
    let mut idle = KafkaClient::connect(&kafka);
    let versions: ApiVersionsResponse = idle.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0);
    // ApiVersions now and then does not keep an anonymous connection alive.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _: ApiVersionsResponse = idle.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(closed_by_node(&mut idle.stream), "closed at the deadline from accept");
}
