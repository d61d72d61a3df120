//! The node's users (`[auth]`): the users file read at startup, merged
//! with the node's internal admin, published to the shards through one
//! `ArcSwap` (an immutable snapshot, no locks on the request path), and
//! rewritten atomically when the admin API adds or removes a user.
//!
//! The internal admin is how the admin API's own loopback client
//! authenticates: its password is random, made at startup, held only in
//! this process's memory, never written or logged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::admin::services::UserDirectory;
use crate::config::NodeConfig;
use crate::net::client::Credentials;
use crate::security::scram::MIN_ITERATIONS;
use crate::security::users::{self, User, INTERNAL_ADMIN};
use crate::security::{StoredCredential, Users, UsersError};

use super::NodeError;

/// The users a node serves, and how to change them.
#[derive(Clone)]
pub(super) struct NodeUsers {
    /// What the shards read.
    pub(super) snapshot: Arc<ArcSwap<Users>>,
    /// The internal admin's name and password (`[auth]` on), for the admin
    /// API's loopback client.
    pub(super) internal_admin: Option<Credentials>,
    /// Where changes are saved (standalone), with the lock that keeps two
    /// changes from interleaving.
    file: Option<Arc<(PathBuf, Mutex<()>)>>,
    enabled: bool,
    scram_iterations: u32,
}

/// Read the users file (if any) and add the internal admin when `[auth]` is on.
pub(super) fn load(config: &NodeConfig) -> Result<NodeUsers, NodeError> {
    let auth = &config.auth;
    let from_file = match (&auth.users_file, auth.enabled) {
        (Some(path), true) => users::load(path)?,
        // Off: the file may not exist yet; the admin API may create it.
        (Some(path), false) => users::load_or_empty(path)?,
        (None, _) => Users::default(),
    };
    let (snapshot, internal_admin) = match auth.enabled {
        true => {
            let (credential, password) = internal_admin_credential()?;
            let credentials = Credentials { user: INTERNAL_ADMIN.to_string(), password };
            (from_file.with_internal_admin(credential), Some(credentials))
        }
        false => (from_file, None),
    };
    if auth.enabled {
        tracing::info!(target: "ringlog::auth", users = snapshot.len(), "client authentication is on");
    }
    Ok(NodeUsers {
        snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
        internal_admin,
        file: auth.users_file.clone().map(|path| Arc::new((path, Mutex::new(())))),
        enabled: auth.enabled,
        scram_iterations: auth.scram_iterations,
    })
}

/// A random password and its credential (the minimum iteration count: the
/// password is 32 random bytes, not something a person chose).
fn internal_admin_credential() -> Result<(StoredCredential, String), UsersError> {
    let random = |count| {
        crate::runtime::random::random_bytes(count)
            .map_err(|source| UsersError::Io { path: PathBuf::from("/dev/urandom"), source })
    };
    let password = BASE64.encode(random(32)?);
    let credential = StoredCredential::derive(password.as_bytes(), &random(16)?, MIN_ITERATIONS)
        .map_err(|error| UsersError::BadUser { name: INTERNAL_ADMIN.into(), reason: error.to_string() })?;
    Ok((credential, password))
}

impl NodeUsers {
    /// Apply `change` to the users, save the file, then publish the new
    /// snapshot (so a saved change is never lost to a restart, and a failed
    /// save changes nothing).
    fn change(&self, change: impl FnOnce(&Users) -> Result<Users, UsersError>) -> Result<(), UsersError> {
        let Some(file) = &self.file else {
            return Err(UsersError::Invalid {
                path: PathBuf::from("auth.users_file"),
                reason: "this node has no users file (set auth.users_file)".into(),
            });
        };
        let _only_one_change = file.1.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = change(&self.snapshot.load())?;
        users::save(&file.0, &next)?;
        self.snapshot.store(Arc::new(next));
        Ok(())
    }
}

impl UserDirectory for NodeUsers {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn snapshot(&self) -> Arc<Users> {
        self.snapshot.load_full()
    }

    fn add(&self, user: User) -> Result<(), UsersError> {
        self.change(|users| users.with_user(user))
    }

    fn remove(&self, name: &str) -> Result<(), UsersError> {
        self.change(|users| users.without_user(name))
    }

    fn scram_iterations(&self) -> u32 {
        self.scram_iterations
    }
}
