//! `ringlog user add|list|remove` (SPEC §11): with `--users-file` they edit
//! that file offline (how a standalone node gets its first admin);
//! otherwise they go through the admin API as an admin (`--user` and
//! `--password` as HTTP Basic, or `--token`). The new user's credential is
//! made here, so its password never leaves this process; passwords are
//! never echoed or printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::client::run_async;
use super::nodes::AdminArgs;
use super::{fail, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::admin::client::{request_with, AdminResponse};
use crate::security::users::{self, new_user, UserRecord};
use crate::security::{Principal, Role, TopicPattern, Users};

/// What to do with users.
#[derive(Debug, clap::Subcommand)]
pub enum UserAction {
    /// Add a user (its password from --new-password, RINGLOG_NEW_PASSWORD, with --users-file also
    /// --password, else read from stdin without echo).
    Add {
        /// The user's name (letters, digits, `._@-`).
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
        /// The new user's password (prefer the environment: flags show in `ps`).
        #[arg(long, env = "RINGLOG_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
        /// PBKDF2 iterations of the credential (4096..=1000000).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// List users (names, roles, topic patterns; never credentials).
    List {
        /// Print `[{"name","role","topics"}]`.
        #[arg(long)]
        json: bool,
        /// Read this users file instead of asking a node.
        #[arg(long)]
        users_file: Option<PathBuf>,
    },
    /// Remove a user.
    Remove {
        /// The user's name.
        name: String,
        /// Edit this users file instead of asking a node.
        #[arg(long)]
        users_file: Option<PathBuf>,
    },
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `ringlog user …`.
pub fn run(action: UserAction, admin: AdminArgs) -> ExitCode {
    let outcome = match action {
        UserAction::Add { name, role, topics, users_file, new_password, iterations } => {
            let principal = Principal { name, role, topics };
            // Never RINGLOG_PASSWORD: an operator who exported their own
            // would silently hand it to the new user.
            add(principal, users_file.as_deref(), new_password, iterations, &Remote { admin })
        }
        UserAction::List { json, users_file } => list(json, users_file.as_deref(), &Remote { admin }),
        UserAction::Remove { name, users_file } => remove(&name, users_file.as_deref(), &Remote { admin }),
    };
    exit_code(outcome)
}

/// The exit code of a user or acl command's outcome.
pub(super) fn exit_code(outcome: Result<(), Failure>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure::Usage(message)) => fail(message, EXIT_USAGE),
        Err(Failure::Operational(message)) => fail(message, EXIT_FAILURE),
    }
}

pub(super) enum Failure {
    Usage(String),
    Operational(String),
}

impl From<crate::security::UsersError> for Failure {
    fn from(error: crate::security::UsersError) -> Failure {
        Failure::Operational(error.to_string())
    }
}

/// The node's admin API and how to prove we are an admin there.
pub(super) struct Remote {
    pub(super) admin: AdminArgs,
}

impl Remote {
    pub(super) fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<AdminResponse, Failure> {
        let credential = self.admin.credential();
        let tls = self.admin.tls.client_tls().map_err(Failure::Usage)?;
        let address = &self.admin.admin;
        let answer = run_async(request_with(address, method, path, credential.as_ref(), body, &tls, ADMIN_TIMEOUT));
        answer.map_err(|error| Failure::Operational(error.to_string()))?.map_err(Failure::Operational)
    }
}

fn add(
    principal: Principal,
    users_file: Option<&Path>,
    new_password: Option<String>,
    iterations: u32,
    remote: &Remote,
) -> Result<(), Failure> {
    let password = match new_password {
        Some(password) => password,
        None => read_password(&format!("password for {}: ", principal.name))?,
    };
    if password.is_empty() {
        return Err(Failure::Usage("the new user's password is empty".into()));
    }
    let name = principal.name.clone();
    let user = new_user(principal, password.as_bytes(), iterations)?;
    match users_file {
        Some(path) => users::save(path, &users::load_or_empty(path)?.with_user(user)?)?,
        None => {
            let body = serde_json::to_string(&UserRecord::from_user(&user)).unwrap_or_default();
            let answer = remote.call(hyper::Method::POST, "/api/users", Some(body))?;
            if answer.status != 201 {
                return Err(Failure::Operational(format!("cannot add user {name}: {}", answer.error_message())));
            }
        }
    }
    eprintln!("added user {name}");
    Ok(())
}

fn list(json: bool, users_file: Option<&Path>, remote: &Remote) -> Result<(), Failure> {
    let listed = listed_users(users_file, remote)?;
    if json {
        println!("{}", serde_json::Value::Array(listed));
        return Ok(());
    }
    println!("{:<32} {:<9} TOPICS", "NAME", "ROLE");
    for user in &listed {
        let field = |key: &str| user[key].as_str().unwrap_or("?").to_string();
        println!("{:<32} {:<9} {}", field("name"), field("role"), field("topics"));
    }
    Ok(())
}

/// `[{"name","role","topics"}]` of the users file, or of the node's admin API.
pub(super) fn listed_users(users_file: Option<&Path>, remote: &Remote) -> Result<Vec<serde_json::Value>, Failure> {
    if let Some(path) = users_file {
        return Ok(listing(&users::load(path)?));
    }
    let answer = remote.call(hyper::Method::GET, "/api/users", None)?;
    if answer.status != 200 {
        return Err(Failure::Operational(format!("cannot list users: {}", answer.error_message())));
    }
    serde_json::from_slice(&answer.body).map_err(|error| Failure::Operational(error.to_string()))
}

fn listing(users: &Users) -> Vec<serde_json::Value> {
    users
        .iter()
        .map(|user| {
            let principal = &user.principal;
            serde_json::json!({"name": principal.name, "role": principal.role, "topics": principal.topics.to_string()})
        })
        .collect()
}

fn remove(name: &str, users_file: Option<&Path>, remote: &Remote) -> Result<(), Failure> {
    match users_file {
        Some(path) => users::save(path, &users::load(path)?.without_user(name)?)?,
        None => {
            let answer = remote.call(hyper::Method::DELETE, &format!("/api/users/{name}"), None)?;
            if answer.status != 204 {
                return Err(Failure::Operational(format!("cannot remove user {name}: {}", answer.error_message())));
            }
        }
    }
    eprintln!("removed user {name}");
    Ok(())
}

/// Read a password from stdin without echoing it when stdin is a terminal
/// (the prompt goes to stderr, so stdout stays clean for scripts).
fn read_password(prompt: &str) -> Result<String, Failure> {
    use std::io::{BufRead, IsTerminal};
    let terminal = std::io::stdin().is_terminal();
    if terminal {
        eprint!("{prompt}");
    }
    let echo = terminal.then(EchoOff::new).flatten();
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    drop(echo);
    if terminal {
        eprintln!();
    }
    read.map_err(|error| Failure::Operational(format!("cannot read the password: {error}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Terminal echo switched off until dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr fills a termios we own for stdin's descriptor;
        // zeroed is a valid bit pattern for the plain C struct.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: sets stdin's attributes from a termios read just above.
        (unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } == 0).then_some(EchoOff(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `new`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0) };
    }
}
