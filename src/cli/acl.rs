//! `ringlog acl list|grant` (issue 17): what each user may do, and changing
//! a user's role and topic pattern without touching its credential. Like
//! `ringlog user`, offline with `--users-file`, else through the admin API
//! as an admin. The permissions shown are the authorizer's own answers
//! (`Principal::permissions`), not a second table that could drift.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::nodes::AdminArgs;
use super::user::{exit_code, listed_users, Failure, Remote};
use crate::security::users;
use crate::security::{Principal, Role, TopicPattern};

/// What to do with grants.
#[derive(Debug, clap::Subcommand)]
pub enum AclAction {
    /// Every user's role, topic pattern and the operations they allow.
    List {
        /// Print `[{"user","role","topics","permissions":[…]}]`.
        #[arg(long)]
        json: bool,
        /// Read this users file instead of asking a node.
        #[arg(long)]
        users_file: Option<PathBuf>,
    },
    /// Give a user another role or topic pattern (its password stays; its
    /// open sessions follow the new grant at their next request).
    Grant {
        /// The user's name.
        name: String,
        /// admin, producer or consumer.
        #[arg(long)]
        role: Role,
        /// The topics the role applies to: `*`, a name, or `prefix*`.
        #[arg(long, default_value = "*")]
        topics: TopicPattern,
        /// Edit this users file instead of asking a node.
        #[arg(long)]
        users_file: Option<PathBuf>,
    },
}

/// Run `ringlog acl …`.
pub fn run(action: AclAction, admin: AdminArgs) -> ExitCode {
    let remote = Remote { admin };
    let outcome = match action {
        AclAction::List { json, users_file } => list(json, users_file.as_deref(), &remote),
        AclAction::Grant { name, role, topics, users_file } => {
            grant(&name, role, topics, users_file.as_deref(), &remote)
        }
    };
    exit_code(outcome)
}

fn list(json: bool, users_file: Option<&Path>, remote: &Remote) -> Result<(), Failure> {
    let listed = listed_users(users_file, remote)?;
    let grants = listed.iter().map(grant_of).collect::<Result<Vec<_>, _>>()?;
    if json {
        println!("{}", serde_json::Value::Array(grants));
        return Ok(());
    }
    println!("{:<32} {:<9} {:<24} PERMISSIONS", "USER", "ROLE", "TOPICS");
    for grant in &grants {
        let field = |key: &str| grant[key].as_str().unwrap_or("?").to_string();
        let permissions: Vec<&str> =
            grant["permissions"].as_array().into_iter().flatten().filter_map(|value| value.as_str()).collect();
        println!("{:<32} {:<9} {:<24} {}", field("user"), field("role"), field("topics"), permissions.join(","));
    }
    Ok(())
}

/// One listed user (`{"name","role","topics"}`) with its permissions.
fn grant_of(user: &serde_json::Value) -> Result<serde_json::Value, Failure> {
    let principal = Principal {
        name: user["name"].as_str().unwrap_or_default().to_string(),
        role: serde_json::from_value(user["role"].clone()).map_err(|error| Failure::Operational(error.to_string()))?,
        topics: user["topics"].as_str().unwrap_or_default().parse().map_err(Failure::Operational)?,
    };
    Ok(serde_json::json!({
        "user": principal.name,
        "role": principal.role,
        "topics": principal.topics.to_string(),
        "permissions": principal.permissions(),
    }))
}

fn grant(
    name: &str,
    role: Role,
    topics: TopicPattern,
    users_file: Option<&Path>,
    remote: &Remote,
) -> Result<(), Failure> {
    let described = format!("{name}: {role} of {topics}");
    match users_file {
        Some(path) => users::save(path, &users::load(path)?.with_grant(name, role, topics)?)?,
        None => {
            let body = serde_json::json!({"role": role, "topics": topics.to_string()}).to_string();
            let answer = remote.call(hyper::Method::PUT, &format!("/api/users/{name}/grant"), Some(body))?;
            if answer.status != 204 {
                return Err(Failure::Operational(format!("cannot grant {described}: {}", answer.error_message())));
            }
        }
    }
    eprintln!("granted {described}");
    Ok(())
}
