//! Shared pieces of the client-side commands: the `--server` list and a
//! tokio runtime (the client never runs on the node's shards).

use std::future::Future;
use std::time::Duration;

use std::path::PathBuf;
use std::sync::Arc;

use crate::net::client::{Client, ClientError, ClientTls, Credentials};
use crate::protocol::Acks;
use crate::security::tls::{client_config, ClientTrust};

/// The bootstrap list, credentials and TLS every client-side command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Servers to try, comma separated.
    #[arg(long, env = "RINGLOG_SERVER", default_value = "127.0.0.1:7070", global = true)]
    pub server: String,
    /// Who to authenticate as.
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// TLS to the servers.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `--user` and `--password` (SCRAM-SHA-256 on the native protocol, HTTP
/// Basic on the admin API). `Debug` never shows the password.
#[derive(Clone, Default, clap::Args)]
pub struct CredentialArgs {
    /// Authenticate as this user: with --password (SCRAM-SHA-256), or
    /// without one by the client certificate of --tls-cert (EXTERNAL).
    #[arg(long, env = "RINGLOG_USER", global = true)]
    pub user: Option<String>,
    /// The user's password (prefer RINGLOG_PASSWORD: flags show in `ps`).
    #[arg(long, env = "RINGLOG_PASSWORD", global = true, hide_env_values = true)]
    pub password: Option<String>,
}

impl std::fmt::Debug for CredentialArgs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CredentialArgs").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

impl CredentialArgs {
    /// `--user` with `--password` (an empty password without it).
    pub fn credentials(&self) -> Option<Credentials> {
        let user = self.user.clone()?;
        Some(Credentials { user, password: self.password.clone().unwrap_or_default() })
    }
}

impl ServerArgs {
    /// A client over the list, retrying for `retry_ms`, authenticating
    /// when `--user` is given.
    pub fn client(&self, retry_ms: u64) -> Result<Client, ClientError> {
        let tls = self.tls.client_tls().map_err(ClientError::Tls)?;
        let client = Client::new(Client::parse_servers(&self.server), Duration::from_millis(retry_ms));
        Ok(client.with_tls(tls).with_credentials(self.credentials.credentials()))
    }
}

/// How a client command speaks TLS: off unless one of these is given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Connect with TLS, trusting the system's CAs.
    #[arg(long, global = true)]
    pub tls: bool,
    /// Connect with TLS, trusting the CAs in this PEM file.
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one (mutual TLS).
    #[arg(long, value_name = "FILE", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Connect with TLS but accept ANY server certificate: whoever sits on
    /// the path can read and change the traffic. For tests only.
    #[arg(long, global = true)]
    pub insecure_skip_verify: bool,
}

impl TlsArgs {
    /// The client TLS these flags ask for (`None`: plaintext).
    pub fn client_tls(&self) -> Result<ClientTls, String> {
        let wanted = self.tls || self.tls_ca.is_some() || self.tls_cert.is_some() || self.insecure_skip_verify;
        if !wanted {
            return Ok(None);
        }
        if self.insecure_skip_verify {
            tracing::warn!(target: "ringlog::tls",
                "--insecure-skip-verify: the server's certificate is NOT verified; anyone on the path can read and change this connection");
        }
        let trust = ClientTrust {
            ca_file: self.tls_ca.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            identity: self.tls_cert.clone().zip(self.tls_key.clone()),
        };
        client_config(&trust).map(|config| Some(Arc::new(config))).map_err(|error| error.to_string())
    }
}

/// Run `future` on a current-thread tokio runtime.
pub fn run_async<T>(future: impl Future<Output = T>) -> std::io::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(future))
}

/// Parse `--acks`.
pub fn parse_acks(text: &str) -> Result<Acks, String> {
    match text {
        "none" => Ok(Acks::None),
        "leader" => Ok(Acks::Leader),
        "all" => Ok(Acks::All),
        other => Err(format!("--acks must be none, leader or all, not {other:?}")),
    }
}

/// Run a client command on tokio and map its outcome to the exit code.
pub fn finish(future: impl Future<Output = Result<(), ClientError>>) -> std::process::ExitCode {
    match run_async(future) {
        Ok(Ok(())) => std::process::ExitCode::from(super::EXIT_OK),
        Ok(Err(error)) => super::fail(error, super::EXIT_FAILURE),
        Err(error) => super::fail(error, super::EXIT_FAILURE),
    }
}
