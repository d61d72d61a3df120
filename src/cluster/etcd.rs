//! A thin wrapper over `etcd-client`: every request is bounded by a timeout
//! (a lost quorum makes etcd requests hang, not fail), and every failure
//! becomes a [`ClusterError`] that names the operation. Runs only on the
//! control thread's tokio runtime.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KeyValue, TlsOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};

use crate::security::tls::{check_key_is_private, read_pem_file};

// Re-exported for the modules that name it here (isr.rs, admin).
pub use super::error::ClusterError;

/// An etcd connection with per-request timeouts.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    endpoints: String,
    timeout: Duration,
}

/// How the node proves itself to etcd and trusts it (`[cluster]`'s
/// `etcd_*` keys): TLS with a CA and optionally a client certificate, and
/// etcd's own user authentication.
#[derive(Clone, Default)]
pub struct EtcdAccess {
    tls: Option<TlsOptions>,
    user: Option<(String, String)>,
}

impl EtcdAccess {
    /// Read the files the settings name (a key file others may read is
    /// refused, as for the listeners).
    pub fn from_config(config: &crate::config::ClusterConfig) -> Result<EtcdAccess, ClusterError> {
        let password = config.etcd_password.as_ref().map(|password| password.expose().to_string());
        let user = config.etcd_user.clone().zip(password);
        let wants_tls = config.etcd_ca_file.is_some() || config.etcd_cert_file.is_some();
        if !wants_tls {
            return Ok(EtcdAccess { tls: None, user });
        }
        let mut tls = TlsOptions::new();
        if let Some(ca_file) = &config.etcd_ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca_file)?));
        }
        if let (Some(cert_file), Some(key_file)) = (&config.etcd_cert_file, &config.etcd_key_file) {
            check_key_is_private(key_file).map_err(|error| ClusterError::Tls(error.to_string()))?;
            tls = tls.identity(Identity::from_pem(read(cert_file)?, read(key_file)?));
        }
        Ok(EtcdAccess { tls: Some(tls), user })
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ClusterError> {
    read_pem_file(path).map_err(|error| ClusterError::Tls(error.to_string()))
}

impl Etcd {
    /// Connect to `endpoints` in plaintext, without a user; each request is
    /// bounded by `timeout`.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Etcd, ClusterError> {
        Etcd::connect_with(endpoints, &EtcdAccess::default(), timeout).await
    }

    /// Connect to `endpoints` with TLS and a user as `access` says.
    pub async fn connect_with(
        endpoints: &[String],
        access: &EtcdAccess,
        timeout: Duration,
    ) -> Result<Etcd, ClusterError> {
        let joined = endpoints.join(",");
        let mut options =
            ConnectOptions::new().with_connect_timeout(timeout).with_timeout(timeout).with_keep_alive(timeout, timeout);
        if let Some(tls) = &access.tls {
            options = options.with_tls(tls.clone());
        }
        if let Some((user, password)) = &access.user {
            options = options.with_user(user.clone(), password.clone());
        }
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

    /// Several keys read at one etcd revision (one transaction of gets), so
    /// keys written together are seen together; in the order asked.
    pub async fn get_together(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, ClusterError> {
        let gets: Vec<TxnOp> = keys.iter().map(|key| TxnOp::get(key.as_str(), None)).collect();
        let response = self.txn("get together", Txn::new().and_then(gets)).await?;
        let values: Vec<Option<KeyValue>> = response
            .op_responses()
            .into_iter()
            .map_while(|op| match op {
                TxnOpResponse::Get(get) => Some(get.kvs().first().cloned()),
                _ => None,
            })
            .collect();
        if values.len() != keys.len() {
            // Not "absent": a missing leader key would start a campaign.
            return Err(ClusterError::MalformedKey {
                key: keys.join(", "),
                value: format!("{} get answers", values.len()),
                expected: "one get answer per key read",
            });
        }
        Ok(values)
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
