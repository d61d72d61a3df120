//! A thin wrapper over `etcd-client`: every request is bounded by a timeout
//! (a lost quorum makes etcd requests hang, not fail), and every failure
//! becomes a [`ClusterError`] that names the operation. Runs only on the
//! control thread's tokio runtime.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, Txn, TxnResponse};

// Re-exported for the modules that name it here (isr.rs, admin).
pub use super::error::ClusterError;

/// An etcd connection with per-request timeouts.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    endpoints: String,
    timeout: Duration,
}

impl Etcd {
    /// Connect to `endpoints`; each request is bounded by `timeout`.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Etcd, ClusterError> {
        let joined = endpoints.join(",");
        let options =
            ConnectOptions::new().with_connect_timeout(timeout).with_timeout(timeout).with_keep_alive(timeout, timeout);
        let connecting = Client::connect(endpoints, Some(options));
        let client = bounded(&joined, "connect", timeout, connecting).await?;
        Ok(Etcd { client, endpoints: joined, timeout })
    }

    /// The configured endpoints, comma separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The underlying client (for lease keep-alive streams).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    async fn run<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        bounded(&self.endpoints, operation, self.timeout, request).await
    }

    /// One key, if present.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, ClusterError> {
        let mut client = self.client.clone();
        let mut response = self.run("get", client.get(key, None)).await?;
        Ok(response.take_kvs().into_iter().next())
    }

    /// Every key under `prefix`.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, ClusterError> {
        let mut client = self.client.clone();
        let mut response = self.run("get prefix", client.get(prefix, Some(GetOptions::new().with_prefix()))).await?;
        Ok(response.take_kvs())
    }

    /// Run a transaction.
    pub async fn txn(&self, operation: &'static str, txn: Txn) -> Result<TxnResponse, ClusterError> {
        let mut client = self.client.clone();
        self.run(operation, client.txn(txn)).await
    }

    /// Grant a lease of `ttl_s` seconds; returns its id.
    pub async fn grant_lease(&self, ttl_s: i64) -> Result<i64, ClusterError> {
        let mut client = self.client.clone();
        Ok(self.run("lease grant", client.lease_grant(ttl_s, None)).await?.id())
    }

    /// Revoke a lease (deleting every key bound to it).
    pub async fn revoke_lease(&self, lease: i64) -> Result<(), ClusterError> {
        let mut client = self.client.clone();
        self.run("lease revoke", client.lease_revoke(lease)).await.map(|_| ())
    }
}

async fn bounded<T>(
    endpoints: &str,
    operation: &'static str,
    timeout: Duration,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ClusterError::Etcd { endpoints: endpoints.to_string(), operation, source }),
        Err(_) => Err(ClusterError::Timeout {
            endpoints: endpoints.to_string(),
            operation,
            timeout_ms: timeout.as_millis() as u64,
        }),
    }
}

/// A key's value as UTF-8 text (lossy: values are ours and ASCII).
pub fn text(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.value()).into_owned()
}
