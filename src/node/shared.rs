//! What the data shards and the control thread share: the settings, the
//! topic registry and the published state (connections, metrics, the
//! cluster view, follower progress). Built once before the shards start;
//! each shard gets a copy of the handles, the admin API another.

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::sync::Arc;

use crate::admin::http::AdminState;
use crate::config::NodeConfig;
use crate::security::listeners::NodeTls;
use crate::shard::topics::{TopicMeta, TopicRegistry};
use crate::shard::ShardId;
use crate::state::cluster::ClusterState;
use crate::state::metrics::{ConnectionCount, NodeMetrics};
use crate::state::progress::ReplicationProgress;

use super::admin_services::LoopbackClient;
use super::shard::ShardConfig;
use super::startup::loopback_address;
use super::users::NodeUsers;
use super::ShardError;

/// Handles to everything the shards and the control thread share.
#[derive(Clone)]
pub(super) struct Shared {
    /// Data shards (resolved: never 0).
    pub(super) shards: usize,
    pub(super) config: Arc<NodeConfig>,
    pub(super) registry: Arc<TopicRegistry>,
    pub(super) connections: Arc<ConnectionCount>,
    pub(super) metrics: Arc<NodeMetrics>,
    pub(super) cluster: Arc<ClusterState>,
    pub(super) progress: Arc<ReplicationProgress>,
    pub(super) tls: Arc<NodeTls>,
    /// The users clients authenticate as (`[auth]`).
    pub(super) users: super::users::NodeUsers,
}

impl Shared {
    /// The shared state of a node with `topics` and `shards` data shards
    /// (clustered when etcd endpoints are configured).
    pub(super) fn new(
        config: NodeConfig,
        topics: Vec<TopicMeta>,
        shards: usize,
        tls: Arc<NodeTls>,
        users: NodeUsers,
    ) -> Shared {
        assert!(shards > 0, "shards are resolved before the shared state is built");
        let connections = Arc::new(ConnectionCount::default());
        let cluster = match config.cluster.etcd.is_empty() {
            true => ClusterState::standalone(),
            false => ClusterState::clustered(),
        };
        Shared {
            shards,
            config: Arc::new(config),
            registry: Arc::new(TopicRegistry::new(topics)),
            metrics: Arc::new(NodeMetrics::new(shards, Arc::clone(&connections))),
            connections,
            cluster,
            progress: ReplicationProgress::new(shards),
            tls,
            users,
        }
    }

    /// The settings every shard starts from (`shard` 0; `spawn_shards`
    /// names each one's own), reporting to the startup barrier `ready`.
    pub(super) fn shard_template(&self, ready: mpsc::Sender<Result<ShardId, ShardError>>) -> ShardConfig {
        let (opened, drained) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        ShardConfig { shard: 0, shared: self.clone(), opened, drained, ready }
    }

    /// What the admin API reads (the control plane is added when it exists).
    pub(super) fn admin_state(&self) -> AdminState {
        AdminState {
            registry: Arc::clone(&self.registry),
            metrics: Arc::clone(&self.metrics),
            client: Arc::new(LoopbackClient {
                address: loopback_address(&self.config.listen),
                tls: Arc::clone(&self.tls),
                credentials: Arc::clone(&self.users.internal_admin),
            }),
            admin_token: self.config.admin_token.as_ref().map(|token| token.expose().to_string()),
            cluster: Arc::clone(&self.cluster),
            cluster_services: None,
            users: Some(Arc::new(self.users.clone())),
            auth_failures: crate::admin::http::failure_limiter(&self.config.auth),
        }
    }
}
