//! A real single-member etcd for cluster tests: free loopback ports, a
//! temporary data directory, SIGKILL and restart on the same data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::node::free_port;

/// A running (or stopped) etcd process.
pub struct EtcdProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    client_port: u16,
    peer_port: u16,
    data_dir: tempfile::TempDir,
}

impl EtcdProcess {
    /// Start etcd and wait until it answers.
    pub fn start() -> EtcdProcess {
        let mut etcd = EtcdProcess {
            child: None,
            endpoint: String::new(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: tempfile::tempdir().unwrap(),
        };
        etcd.endpoint = format!("http://127.0.0.1:{}", etcd.client_port);
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.data_dir.path().join("etcd"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (install etcd-server: bash tools/install-deps.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.get("health-probe").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd on {} did not become ready", self.endpoint);
    }

    /// SIGKILL etcd.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send `signal` to etcd (SIGSTOP makes every request hang, as a lost
    /// quorum does; SIGCONT resumes it).
    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("etcd is running");
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    /// Start etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn run<T>(
        &self,
        operation: impl AsyncFnOnce(etcd_client::Client) -> Result<T, etcd_client::Error>,
    ) -> Result<T, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(2));
            let client = etcd_client::Client::connect([self.endpoint.as_str()], Some(options))
                .await
                .map_err(|error| error.to_string())?;
            operation(client).await.map_err(|error| error.to_string())
        })
    }

    /// A key's value.
    pub fn get(&self, key: &str) -> Result<Option<String>, String> {
        let key = key.to_string();
        self.run(async move |mut client| {
            let response = client.get(key, None).await?;
            Ok(response.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
        })
    }

    /// Write a key by hand (as an operator, or as replication will).
    pub fn put(&self, key: &str, value: &str) {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(async move |mut client| client.put(key, value, None).await.map(|_| ())).expect("etcd put");
    }
}

impl EtcdProcess {
    /// Revoke the lease `key` is bound to (as an operator might).
    pub fn revoke_lease_of(&self, key: &str) {
        let key = key.to_string();
        self.run(async move |mut client| {
            let response = client.get(key, None).await?;
            let lease = response.kvs().first().map(|kv| kv.lease()).expect("key exists");
            client.lease_revoke(lease).await.map(|_| ())
        })
        .expect("etcd lease revoke");
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
