//! The node's users (`[auth]`): published to the shards through one
//! `ArcSwap` (an immutable snapshot, no locks on the request path).
//!
//! - Standalone, they are the users file, read at startup and rewritten
//!   atomically when the admin API adds or removes a user.
//! - In a cluster, they are the `PREFIX/users/<name>` keys in etcd (read by
//!   the control thread every second and after each change it makes),
//!   plus the users file if one is set (a local seed, e.g. the first
//!   admin; etcd wins on a name both hold). Changes go to etcd.
//!
//! The internal admin is how the admin API's own loopback client
//! authenticates: its password is random, made at startup, held only in
//! this process's memory, never written or logged. In a cluster it is
//! replaced, once the cluster secret is known, by one derived from that
//! secret: a follower's admin API forwards topic mutations to the leader
//! (`not_leader`), which must accept the same internal admin.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};

use crate::admin::services::{Pending, UserDirectory};
use crate::cluster::membership::ControlPlane;
use crate::cluster::users::ClusterUsersError;
use crate::config::NodeConfig;
use crate::net::client::Credentials;
use crate::security::scram::MIN_ITERATIONS;
use crate::security::users::{self, User, INTERNAL_ADMIN};
use crate::security::{Role, StoredCredential, TopicPattern, Users, UsersError};

use super::NodeError;

/// How often a clustered node reads the users in etcd.
const ETCD_USERS_POLL: Duration = Duration::from_secs(1);

/// The users a node serves, and how to change them.
#[derive(Clone)]
pub(super) struct NodeUsers {
    /// What the shards read.
    pub(super) snapshot: Arc<ArcSwap<Users>>,
    /// The internal admin's name and password (`[auth]` on), for the admin
    /// API's loopback client.
    pub(super) internal_admin: Arc<ArcSwapOption<Credentials>>,
    internal_credential: Arc<ArcSwapOption<StoredCredential>>,
    /// Whether the internal admin is the cluster-wide one yet.
    cluster_wide: Arc<AtomicBool>,
    /// The users file's users (standalone: the users; cluster: a seed).
    seed: Arc<ArcSwap<Users>>,
    /// Where changes are saved (standalone), with the lock that keeps two
    /// changes from interleaving.
    file: Option<Arc<(PathBuf, Mutex<()>)>>,
    /// The control plane (cluster): users live in etcd.
    plane: Option<Arc<ControlPlane>>,
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
    let (internal_credential, internal_admin) = match auth.enabled {
        true => {
            let (credential, password) = internal_admin_credential()?;
            (Some(Arc::new(credential)), Some(Arc::new(Credentials { user: INTERNAL_ADMIN.to_string(), password })))
        }
        false => (None, None),
    };
    if auth.enabled {
        tracing::info!(target: "ringlog::auth", users = from_file.len(), "client authentication is on");
    }
    let node_users = NodeUsers {
        snapshot: Arc::new(ArcSwap::from_pointee(Users::default())),
        internal_admin: Arc::new(ArcSwapOption::new(internal_admin)),
        internal_credential: Arc::new(ArcSwapOption::new(internal_credential)),
        cluster_wide: Arc::new(AtomicBool::new(false)),
        seed: Arc::new(ArcSwap::from_pointee(from_file.clone())),
        file: auth.users_file.clone().map(|path| Arc::new((path, Mutex::new(())))),
        plane: None,
        enabled: auth.enabled,
        scram_iterations: auth.scram_iterations,
    };
    node_users.publish(&from_file);
    Ok(node_users)
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
    /// These users, keeping their users in etcd (a cluster).
    pub(super) fn in_cluster(self, plane: Option<Arc<ControlPlane>>) -> NodeUsers {
        NodeUsers { plane, ..self }
    }

    /// Publish `users` (with the internal admin) to the shards, if changed.
    fn publish(&self, users: &Users) {
        let next = match &*self.internal_credential.load() {
            Some(credential) => users.with_internal_admin((**credential).clone()),
            None => users.clone(),
        };
        if **self.snapshot.load() != next {
            self.snapshot.store(Arc::new(next));
        }
    }

    /// Standalone: apply `change` to the users, save the file, then publish
    /// the new snapshot (so a saved change is never lost to a restart, and
    /// a failed save changes nothing).
    fn change_file(&self, change: impl FnOnce(&Users) -> Result<Users, UsersError>) -> Result<(), UsersError> {
        let Some(file) = &self.file else {
            return Err(UsersError::Unavailable("this node has no users file (set auth.users_file)".into()));
        };
        let _only_one_change = file.1.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = change(&self.seed.load())?;
        users::save(&file.0, &next)?;
        self.seed.store(Arc::new(next.clone()));
        self.publish(&next);
        Ok(())
    }

    /// Cluster: once the cluster secret is known, switch to the internal
    /// admin every node of the cluster derives from it.
    fn adopt_cluster_internal_admin(&self, plane: &ControlPlane) {
        if !self.enabled || self.cluster_wide.load(Ordering::SeqCst) {
            return;
        }
        let Some(secret) = plane.state.secret() else { return };
        match cluster_internal_admin(&secret) {
            Ok((credential, password)) => {
                self.internal_credential.store(Some(Arc::new(credential)));
                let credentials = Credentials { user: INTERNAL_ADMIN.to_string(), password };
                self.internal_admin.store(Some(Arc::new(credentials)));
                self.cluster_wide.store(true, Ordering::SeqCst);
            }
            Err(error) => tracing::warn!(target: "ringlog::auth", %error, "cannot derive the cluster's internal admin"),
        }
    }

    /// Cluster: read the users in etcd and publish them. The seed (the
    /// local users file) counts only while etcd holds no user at all: it
    /// bootstraps the first admin; after that etcd alone decides, so a
    /// user removed there cannot come back from one node's file.
    async fn refresh_from_etcd(&self, plane: &ControlPlane) -> Result<(), UsersError> {
        let etcd = plane.etcd().ok_or_else(|| UsersError::Unavailable("etcd is not connected yet".into()))?;
        let in_etcd = crate::cluster::users::load_users(&etcd, &plane.keys)
            .await
            .map_err(|error| UsersError::Unavailable(error.to_string()))?;
        let bootstrapping = in_etcd.iter().next().is_none();
        let merged = match bootstrapping {
            true => Users::clone(&self.seed.load()),
            false => in_etcd,
        };
        self.publish(&merged);
        Ok(())
    }

    /// Cluster: run one change against etcd, then refresh.
    async fn change_etcd(
        &self,
        plane: &ControlPlane,
        change: impl AsyncFnOnce(&crate::cluster::etcd::Etcd) -> Result<(), ClusterUsersError>,
    ) -> Result<(), UsersError> {
        let etcd = plane.etcd().ok_or_else(|| UsersError::Unavailable("etcd is not connected yet".into()))?;
        match change(&etcd).await {
            Ok(()) => self.refresh_from_etcd(plane).await,
            Err(ClusterUsersError::Users(error)) => Err(error),
            Err(ClusterUsersError::Etcd(error)) => Err(UsersError::Unavailable(error.to_string())),
        }
    }
}

/// Cluster: keep the shards' users in step with etcd until `stop`.
pub(super) async fn follow_etcd_users(users: NodeUsers, stop: &'static AtomicBool) {
    let Some(plane) = users.plane.clone() else { return };
    let mut failing = false;
    while !stop.load(Ordering::SeqCst) {
        users.adopt_cluster_internal_admin(&plane);
        match users.refresh_from_etcd(&plane).await {
            Ok(()) => failing = false,
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(target: "ringlog::auth", %error, "cannot read the users in etcd; keeping the last ones");
            }
            Err(_) => {}
        }
        // Until the cluster-wide internal admin is adopted, this node's
        // admin API cannot forward to the leader: look again soon.
        let adopted = !users.enabled || users.cluster_wide.load(Ordering::SeqCst);
        tokio::time::sleep(if adopted { ETCD_USERS_POLL } else { ETCD_USERS_POLL / 10 }).await;
    }
}

/// The internal admin every node of a cluster derives from the cluster
/// secret (which only members know): HMAC-SHA256 of fixed labels.
fn cluster_internal_admin(secret: &[u8]) -> Result<(StoredCredential, String), UsersError> {
    let derive = |label: &[u8]| {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret)
            .map_err(|error| UsersError::Unavailable(format!("cluster secret: {error}")))?;
        mac.update(label);
        Ok::<_, UsersError>(mac.finalize().into_bytes())
    };
    let password = BASE64.encode(derive(b"ringlog internal admin password")?);
    let salt = derive(b"ringlog internal admin salt")?;
    let credential = StoredCredential::derive(password.as_bytes(), &salt[..16], MIN_ITERATIONS)
        .map_err(|error| UsersError::BadUser { name: INTERNAL_ADMIN.into(), reason: error.to_string() })?;
    Ok((credential, password))
}

impl UserDirectory for NodeUsers {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn snapshot(&self) -> Arc<Users> {
        self.snapshot.load_full()
    }

    fn add(&self, user: User) -> Pending<'_, Result<(), UsersError>> {
        Box::pin(async move {
            match &self.plane {
                Some(plane) => {
                    self.change_etcd(plane, async |etcd| {
                        crate::cluster::users::add_user(etcd, &plane.keys, &user).await
                    })
                    .await
                }
                None => self.change_file(|users| users.with_user(user)),
            }
        })
    }

    fn grant(&self, name: &str, role: Role, topics: TopicPattern) -> Pending<'_, Result<(), UsersError>> {
        let name = name.to_string();
        Box::pin(async move {
            match &self.plane {
                Some(plane) => {
                    let keys = &plane.keys;
                    let topics_for_etcd = topics.clone();
                    self.change_etcd(plane, async |etcd| {
                        crate::cluster::users::grant_user(etcd, keys, &name, role, topics_for_etcd).await
                    })
                    .await
                }
                None => self.change_file(|users| users.with_grant(&name, role, topics)),
            }
        })
    }

    fn remove(&self, name: &str) -> Pending<'_, Result<(), UsersError>> {
        let name = name.to_string();
        Box::pin(async move {
            match &self.plane {
                Some(plane) => {
                    let keys = &plane.keys;
                    self.change_etcd(plane, async |etcd| crate::cluster::users::remove_user(etcd, keys, &name).await)
                        .await
                }
                None => self.change_file(|users| users.without_user(&name)),
            }
        })
    }

    fn scram_iterations(&self) -> u32 {
        self.scram_iterations
    }
}
