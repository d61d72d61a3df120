//! Shared pieces of the client-side commands: the `--server` list and a
//! tokio runtime (the client never runs on the node's shards).

use std::future::Future;
use std::time::Duration;

use crate::net::client::{Client, ClientError, Credentials};
use crate::protocol::Acks;

/// The bootstrap list and the credentials every client-side command takes.
#[derive(Clone, clap::Args)]
pub struct ServerArgs {
    /// Servers to try, comma separated.
    #[arg(long, env = "RINGLOG_SERVER", default_value = "127.0.0.1:7070", global = true)]
    pub server: String,
    /// Authenticate as this user (SCRAM-SHA-256; needs --password).
    #[arg(long, env = "RINGLOG_USER", global = true)]
    pub user: Option<String>,
    /// The user's password (prefer RINGLOG_PASSWORD: flags show in `ps`).
    #[arg(long, env = "RINGLOG_PASSWORD", global = true, hide_env_values = true)]
    pub password: Option<String>,
}

impl std::fmt::Debug for ServerArgs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ServerArgs").field("server", &self.server).field("user", &self.user).finish()
    }
}

impl ServerArgs {
    /// A client over the list, retrying for `retry_ms`, authenticating
    /// when `--user` is given.
    pub fn client(&self, retry_ms: u64) -> Client {
        Client::new(Client::parse_servers(&self.server), Duration::from_millis(retry_ms))
            .with_credentials(self.credentials())
    }

    /// `--user` with `--password` (an empty password without it).
    pub fn credentials(&self) -> Option<Credentials> {
        let user = self.user.clone()?;
        Some(Credentials { user, password: self.password.clone().unwrap_or_default() })
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
