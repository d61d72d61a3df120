//! `ringlog nodes` and `ringlog forget-node`: the cluster's replicas, via
//! the admin HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use super::client::run_async;
use super::{fail, EXIT_FAILURE, EXIT_OK};
use crate::admin::client::{request_with, AdminCredential, AdminResponse};

/// The admin endpoint and credentials every admin command takes.
#[derive(Clone, clap::Args)]
pub struct AdminArgs {
    /// Admin HTTP address of any node.
    #[arg(long, env = "RINGLOG_ADMIN", default_value = "127.0.0.1:7071", global = true)]
    pub admin: String,
    /// Bearer token for mutating endpoints.
    #[arg(long, env = "RINGLOG_ADMIN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// An admin user (`--user`/`--password`, HTTP Basic), instead of the token.
    #[command(flatten)]
    pub credentials: super::client::CredentialArgs,
    /// TLS to the admin listener.
    #[command(flatten)]
    pub tls: super::client::TlsArgs,
}

impl std::fmt::Debug for AdminArgs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AdminArgs")
            .field("admin", &self.admin)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .finish()
    }
}

impl AdminArgs {
    /// An admin user's credentials when `--user` is given, else the token.
    pub fn credential(&self) -> Option<AdminCredential> {
        match (&self.credentials.user, &self.token) {
            (Some(user), _) => Some(AdminCredential::Basic {
                user: user.clone(),
                password: self.credentials.password.clone().unwrap_or_default(),
            }),
            (None, Some(token)) => Some(AdminCredential::Bearer(token.clone())),
            (None, None) => None,
        }
    }
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

fn call(args: &AdminArgs, method: hyper::Method, path: &str) -> Result<AdminResponse, String> {
    let tls = args.tls.client_tls()?;
    let credential = args.credential();
    run_async(request_with(&args.admin, method, path, credential.as_ref(), None, &tls, ADMIN_TIMEOUT))
        .map_err(|error| error.to_string())?
}

/// Run `ringlog nodes [--json]`.
pub fn run_nodes(args: &AdminArgs, json: bool) -> ExitCode {
    let response = match call(args, hyper::Method::GET, "/api/nodes") {
        Ok(response) if response.status == 200 => response,
        Ok(response) => return fail(response.error_message(), EXIT_FAILURE),
        Err(message) => return fail(message, EXIT_FAILURE),
    };
    let nodes: Vec<serde_json::Value> = match serde_json::from_slice(&response.body) {
        Ok(nodes) => nodes,
        Err(error) => return fail(format!("unexpected answer from {}: {error}", args.admin), EXIT_FAILURE),
    };
    if json {
        println!("{}", serde_json::Value::Array(nodes));
        return ExitCode::from(EXIT_OK);
    }
    print!("{}", render_table(&nodes));
    ExitCode::from(EXIT_OK)
}

/// The nodes view as a text table, with a line when there is no leader.
fn render_table(nodes: &[serde_json::Value]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if nodes.is_empty() {
        out.push_str("no replicas (a standalone node)\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<4} {:<9} {:<22} {:<10} {:<8} {:>12} {:>12}",
        "ID", "ROLE", "ADDRESS", "CONNECTED", "IN_SYNC", "LAG_RECORDS", "LAG_BYTES"
    );
    let yes_no = |value: &serde_json::Value| if value.as_bool() == Some(true) { "yes" } else { "no" };
    for node in nodes {
        let _ = writeln!(
            out,
            "{:<4} {:<9} {:<22} {:<10} {:<8} {:>12} {:>12}",
            node["id"].to_string(),
            node["role"].as_str().unwrap_or("?"),
            node["address"].as_str().unwrap_or("-"),
            yes_no(&node["connected"]),
            yes_no(&node["in_sync"]),
            node["lag_records"].to_string(),
            node["lag_bytes"].to_string()
        );
    }
    if !nodes.iter().any(|node| node["role"] == "leader") {
        out.push_str("no leader: the cluster is leaderless until a live in-sync replica wins the election\n");
    }
    out
}

/// Run `ringlog forget-node ID`.
pub fn run_forget(args: &AdminArgs, id: u64) -> ExitCode {
    match call(args, hyper::Method::DELETE, &format!("/api/nodes/{id}")) {
        Ok(response) if response.status == 204 => {
            println!("forgot node {id}");
            ExitCode::from(EXIT_OK)
        }
        Ok(response) => fail(format!("cannot forget node {id}: {}", response.error_message()), EXIT_FAILURE),
        Err(message) => fail(message, EXIT_FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_says_when_the_cluster_is_leaderless() {
        let nodes = vec![serde_json::json!({"id": 2, "role": "follower", "address": null, "connected": false,
            "in_sync": false, "lag_records": 0, "lag_bytes": 0})];
        let table = render_table(&nodes);
        assert!(table.contains("no leader"), "{table}");
        assert!(table.lines().nth(1).unwrap().starts_with("2    follower  -"), "{table}");
        let with_leader = vec![serde_json::json!({"id": 1, "role": "leader", "address": "127.0.0.1:7070",
            "connected": true, "in_sync": true, "lag_records": 0, "lag_bytes": 0})];
        assert!(!render_table(&with_leader).contains("no leader"));
    }
}
