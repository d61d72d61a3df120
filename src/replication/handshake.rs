//! The leader's side of a replication connection's handshake: a follower
//! says hello with its node id, gets a random challenge, proves it knows the
//! cluster secret (`auth`), and only then may fetch. Counts the follower's
//! connections and slow disconnects in its progress.

use std::cell::Cell;
use std::sync::atomic::Ordering;

use crate::protocol::{ErrorCode, ErrorResponse, Response};
use crate::shard::context::ShardContext;

/// The handshake of one replication connection.
#[derive(Default)]
pub struct ReplicaSession {
    /// The node id the follower announced, and our challenge to it.
    hello: std::cell::RefCell<Option<(u64, Vec<u8>)>>,
    /// Set once the proof checked out.
    authenticated: Cell<Option<u64>>,
    /// The node's count of removed topics when the follower authenticated.
    topic_removals: Cell<Option<u64>>,
    /// Whether this connection was counted as outliving a topic removal.
    outlived_removal: Cell<bool>,
}

impl ReplicaSession {
    /// The follower's node id, once authenticated.
    pub fn replica(&self) -> Option<u64> {
        self.authenticated.get()
    }

    /// Answer a follower's hello with a fresh challenge.
    pub fn hello(&self, node_id: u64) -> Result<Response, ErrorResponse> {
        if self.hello.borrow().is_some() || self.authenticated.get().is_some() {
            return Err(invalid("hello sent twice"));
        }
        let nonce = crate::runtime::random::random_bytes(super::auth::NONCE_BYTES).map_err(|error| ErrorResponse {
            code: ErrorCode::Internal,
            message: error.to_string(),
            leader: None,
        })?;
        *self.hello.borrow_mut() = Some((node_id, nonce.clone()));
        Ok(Response::ReplicaChallenge { nonce })
    }

    /// Check the follower's proof; on success the connection serves it.
    pub fn authenticate(&self, context: &ShardContext, proof: &[u8]) -> Result<Response, ErrorResponse> {
        let Some((node_id, nonce)) = self.hello.borrow_mut().take() else {
            return Err(invalid("auth without hello"));
        };
        let secret = context.cluster.secret().ok_or_else(|| invalid("this node has no cluster secret yet"))?;
        if !super::auth::verify(&secret, &nonce, node_id, proof) {
            tracing::warn!(target: "ringlog::replication", node_id, "replication handshake refused: bad proof");
            return Err(invalid("authentication failed"));
        }
        let leader_epoch = context.write_epoch()?;
        let view = context.cluster.view();
        self.authenticated.set(Some(node_id));
        self.topic_removals.set(Some(context.registry.removals()));
        context.progress.follower(node_id).connections.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "ringlog::replication", follower = node_id, "follower connected");
        Ok(Response::ReplicaAuth { leader_id: view.node_id.unwrap_or(0), leader_epoch })
    }

    /// Topic deletions the node had counted when the follower authenticated
    /// (None before; kept after the connection closes, for its requests
    /// still running): its partition requests are served no partition
    /// opened after a later one (`OwnedPartition::serves_replica_session`).
    pub fn topic_removals_seen(&self) -> Option<u64> {
        self.topic_removals.get()
    }

    /// Whether a topic was deleted since the follower authenticated. Such a
    /// connection is closed after the request that finds it: the follower
    /// learned the topics' incarnations on it, and is refused every
    /// partition of a topic created since. On its next connection it asks
    /// the topics afresh first. Counted once per connection.
    pub fn outlived_a_topic_removal(&self, context: &ShardContext) -> bool {
        let Some(seen) = self.topic_removals.get() else { return false };
        if context.registry.removals() == seen {
            return false;
        }
        if let (false, Some(node_id)) = (self.outlived_removal.replace(true), self.authenticated.get()) {
            context.progress.follower(node_id).topic_deletion_disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "ringlog::replication", follower = node_id,
                "topic deleted while the follower was connected: connection closed, the follower asks afresh");
        }
        true
    }

    /// Count and log a follower cut off for slowness.
    pub fn cut_off(&self, context: &ShardContext, reason: &str) {
        if let Some(node_id) = self.authenticated.get() {
            context.progress.follower(node_id).slow_disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "ringlog::replication", follower = node_id, reason, "follower disconnected");
        }
    }

    /// The connection closed: the follower has one connection fewer.
    pub fn close(&self, context: &ShardContext) {
        if let Some(node_id) = self.authenticated.take() {
            context.progress.follower(node_id).connections.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(target: "ringlog::replication", follower = node_id, "follower disconnected");
        }
    }
}

fn invalid(message: &str) -> ErrorResponse {
    ErrorResponse { code: ErrorCode::InvalidRequest, message: message.into(), leader: None }
}
