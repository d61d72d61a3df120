//! Shared pieces of the client-side commands: the `--server` list and a
//! tokio runtime (the client never runs on the node's shards).

use std::future::Future;
use std::time::Duration;

use crate::net::client::{Client, ClientError};
use crate::protocol::Acks;

/// The bootstrap list every client-side command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Servers to try, comma separated.
    #[arg(long, env = "RINGLOG_SERVER", default_value = "127.0.0.1:7070", global = true)]
    pub server: String,
}

impl ServerArgs {
    /// A client over the list, retrying for `retry_ms`.
    pub fn client(&self, retry_ms: u64) -> Client {
        Client::new(Client::parse_servers(&self.server), Duration::from_millis(retry_ms))
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
