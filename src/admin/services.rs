//! What the admin API asks of floors it may not import. `admin` sits beside
//! `net` and `cluster` (docs/ARCHITECTURE.md): it does not call the wire
//! client or the control plane itself. The node implements these traits
//! with them at startup (`node/admin_services.rs`) and hands them in, so the
//! admin API depends only on the shared state and the wire types.

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use crate::protocol::{ErrorCode, Request, Response};
use crate::security::{Role, TopicPattern, User, Users, UsersError};
use crate::state::progress::ReplicationProgress;

/// A boxed future the admin API's handlers can await on the control thread.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A refused or failed call, with the wire code when the node answered one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// The node's error code; `None` when it could not be reached.
    pub code: Option<ErrorCode>,
    /// What to tell the operator.
    pub message: String,
}

/// This node's own client protocol: mutations take exactly the path, checks
/// and limits of any client request.
pub trait NodeClient: Send + Sync {
    /// Send `request` to this node and wait for its answer.
    fn call(&self, request: Request) -> Pending<'_, Result<Response, CallFailure>>;
}

/// The node's users (`[auth]`): read for HTTP Basic checks and
/// `GET /api/users`, changed by `POST`/`DELETE /api/users`.
pub trait UserDirectory: Send + Sync {
    /// Whether `[auth]` is on: mutations then need credentials even from loopback.
    fn enabled(&self) -> bool;
    /// The current users.
    fn snapshot(&self) -> Arc<Users>;
    /// Add a user (saved, in the users file or etcd, before it is published).
    fn add(&self, user: User) -> Pending<'_, Result<(), UsersError>>;
    /// Change a user's role and topics, keeping its credential.
    fn grant(&self, name: &str, role: Role, topics: TopicPattern) -> Pending<'_, Result<(), UsersError>>;
    /// Remove a user (saved before it is published).
    fn remove(&self, name: &str) -> Pending<'_, Result<(), UsersError>>;
    /// PBKDF2 iterations for a user added with a password (`auth.scram_iterations`).
    fn scram_iterations(&self) -> u32;
}

/// What `DELETE /api/nodes/{id}` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgetAnswer {
    /// The node's replica and registration are gone.
    Forgotten,
    /// No such node.
    Unknown,
    /// Refused, with the reason (409).
    Refused(String),
    /// etcd could not be asked (503).
    Unavailable(String),
}

/// The cluster's control plane, present only in cluster mode.
pub trait ClusterServices: Send + Sync {
    /// Every node with its state, as `GET /api/nodes` shows it (SPEC §9);
    /// `Err` when etcd cannot be asked (503).
    fn nodes(&self) -> Pending<'_, Result<serde_json::Value, String>>;
    /// Forget node `id` (SPEC §6).
    fn forget(&self, id: u64) -> Pending<'_, ForgetAnswer>;
    /// Followers' progress as this node (when leading) measures it.
    fn progress(&self) -> &ReplicationProgress;
    /// `cluster.min_insync_replicas`.
    fn min_insync_replicas(&self) -> usize;
}
