//! Operations: a node refuses addresses another process listens on, and
//! tells a supervisor (systemd's `NOTIFY_SOCKET`) when it is ready and when
//! it stops.

use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ringlog::protocol::Request;

use crate::admin::http;
use crate::cluster::{produce, Cluster};
use crate::fixtures::create_topic;
use crate::node::{free_address, Node};

/// Run `command` until it exits; kill it after `limit` and return None.
pub fn run_to_exit(command: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_second_node_on_a_used_client_admin_or_replication_address_exits_1_and_the_first_keeps_serving() {
    let cluster = Cluster::new();
    let ([member], [first]) = cluster.start_in_sync();
    create_topic(&first, "kept", 2);
    let replication = member.replication_address().to_string();
    let collisions = [
        ("client", [first.address.clone(), free_address(), free_address()], first.address.clone()),
        ("admin", [free_address(), first.admin.clone(), free_address()], first.admin.clone()),
        ("replication", [free_address(), free_address(), replication.clone()], replication.clone()),
    ];
    for (what, [listen, admin, replication_listen], used) in collisions {
        let data_dir = tempfile::tempdir().unwrap();
        let mut second = Command::new(env!("CARGO_BIN_EXE_ringlog"));
        second
            .args(["serve", "--shards", "1", "--listen", &listen, "--admin", &admin, "--etcd", &cluster.etcd.endpoint])
            .args(["--replication-listen", &replication_listen, "--data-dir"])
            .arg(data_dir.path())
            .env("RINGLOG_KAFKA_LISTEN", "")
            .env("RUST_LOG", "warn");
        let output = run_to_exit(&mut second, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("a second node on the first's {what} address kept running"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(&used), "{what}: names {used}: {stderr}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"), "{what}");

        // The first node still owns all three.
        assert!(produce(&first, "kept", what).is_ok(), "{what}: the first node still serves clients");
        assert_eq!(http(&first.admin, "GET", "/api/health", None, None).0, 200, "{what}");
        TcpStream::connect(&replication).expect("the first node's replication listener");
    }
    assert_eq!(first.terminate(), Some(0));
}

#[test]
fn the_node_tells_notify_socket_ready_once_it_serves_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let data_dir = dir.path().join("data");
    let notify = socket_path.to_str().unwrap();
    let node = Node::start_with(&data_dir, 2, &[("NOTIFY_SOCKET", notify)]);
    let mut buffer = [0u8; 512];
    let length = socket.recv(&mut buffer).expect("a READY datagram");
    let ready = String::from_utf8_lossy(&buffer[..length]).to_string();
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    // READY means recovered and listening: both listeners answer at once.
    TcpStream::connect(&node.address).expect("client listener up at READY");
    assert_eq!(http(&node.admin, "GET", "/api/health", None, None).0, 200);
    assert_eq!(node.terminate(), Some(0));
    let length = socket.recv(&mut buffer).expect("a STOPPING datagram");
    assert_eq!(&buffer[..length], b"STOPPING=1");
}

#[test]
fn a_node_restarts_on_its_own_addresses_right_after_a_sigkill_with_clients_connected() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 2);
    // Accepted connections: once the node dies they linger in the port's
    // bind bucket (FIN_WAIT, TIME_WAIT), and its listeners briefly outlive
    // it in io_uring's teardown. Neither is another process listening.
    let mut clients: Vec<_> = (0..4).map(|_| node.client()).collect();
    for client in &mut clients {
        client.call(Request::ListTopics).expect("answered");
    }
    let (address, admin) = (node.address.clone(), node.admin.clone());
    node.kill();
    let started = Instant::now();
    let restarted = Node::spawn(&address, &admin, dir.path(), 2, &[], &[], None);
    eprintln!("restarted on the same addresses in {:?}", started.elapsed());
    drop(clients);
    assert_eq!(restarted.terminate(), Some(0));
}
