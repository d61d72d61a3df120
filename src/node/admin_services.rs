//! The admin API's services, implemented with the floors beside it: the
//! node's own wire client over loopback for mutations, and the control
//! plane for the node list and `forget`.

use std::sync::Arc;
use std::time::Duration;

use crate::admin::services::{CallFailure, ClusterServices, ForgetAnswer, NodeClient, Pending};
use crate::cluster::etcd::Etcd;
use crate::cluster::membership::ControlPlane;
use crate::cluster::nodes::{forget, list_nodes, ForgetOutcome};
use crate::net::client::Client;
use crate::protocol::{Request, Response};
use crate::state::cluster::{ClusterState, Role};
use crate::state::progress::ReplicationProgress;

/// How long a mutation may retry against this node's own listener.
const LOOPBACK_RETRY_BUDGET: Duration = Duration::from_secs(5);
/// How long a follower waits for the leader's node list before answering
/// from etcd alone.
const LEADER_NODES_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests to this node's client listener over loopback.
pub struct LoopbackClient {
    /// The client listener's loopback address.
    pub address: String,
    /// The node's TLS (the listener's own certificate is the one trusted).
    pub tls: Arc<crate::security::listeners::NodeTls>,
    /// The node's internal admin (`[auth]` on): mutations authenticate as
    /// it (replaced by the cluster-wide one in a cluster).
    pub credentials: Arc<arc_swap::ArcSwapOption<crate::net::client::Credentials>>,
}

impl NodeClient for LoopbackClient {
    fn call(&self, request: Request) -> Pending<'_, Result<Response, CallFailure>> {
        Box::pin(async move {
            let tls = self.tls.loopback_client(crate::security::settings::Listener::Client);
            let mut client = Client::new(vec![self.address.clone()], LOOPBACK_RETRY_BUDGET)
                .with_tls(tls)
                .with_credentials(self.credentials.load_full().map(|credentials| (*credentials).clone()));
            client
                .call(&request)
                .await
                .map_err(|failure| CallFailure { code: failure.code(), message: failure.to_string() })
        })
    }
}

/// The control plane as the admin API sees it.
pub struct ClusterAdmin {
    /// The control plane.
    pub plane: Arc<ControlPlane>,
    /// The cluster view (this node's role and id).
    pub cluster: Arc<ClusterState>,
    /// How to reach another node's admin API (TLS when ours serves it).
    pub tls: Arc<crate::security::listeners::NodeTls>,
}

impl ClusterServices for ClusterAdmin {
    fn nodes(&self) -> Pending<'_, Result<serde_json::Value, String>> {
        Box::pin(self.list())
    }

    fn forget(&self, id: u64) -> Pending<'_, ForgetAnswer> {
        Box::pin(async move {
            let Some(etcd) = self.plane.etcd() else { return ForgetAnswer::Unavailable("etcd not reached yet".into()) };
            match forget(&etcd, &self.plane.keys, id, self.cluster.view().node_id).await {
                Ok(ForgetOutcome::Forgotten) => ForgetAnswer::Forgotten,
                Ok(ForgetOutcome::Unknown) => ForgetAnswer::Unknown,
                Ok(ForgetOutcome::Refused(reason)) => ForgetAnswer::Refused(reason),
                Err(failure) => ForgetAnswer::Unavailable(failure.to_string()),
            }
        })
    }

    fn progress(&self) -> &ReplicationProgress {
        &self.plane.progress
    }

    fn min_insync_replicas(&self) -> usize {
        self.plane.config.min_insync_replicas
    }
}

impl ClusterAdmin {
    /// The leader answers with its followers' progress; a follower asks the
    /// leader (where progress lives) and falls back to etcd alone.
    async fn list(&self) -> Result<serde_json::Value, String> {
        let etcd = self.plane.etcd().ok_or("etcd not reached yet")?;
        let view = self.cluster.view();
        let progress = (view.role == Role::Leader).then_some(&*self.plane.progress);
        if progress.is_none() {
            if let Some(nodes) = self.ask_leader(&etcd, view.leader_id).await {
                return Ok(nodes);
            }
        }
        let nodes = list_nodes(&etcd, &self.plane.keys, progress).await.map_err(|failure| failure.to_string())?;
        serde_json::to_value(nodes).map_err(|failure| failure.to_string())
    }

    async fn ask_leader(&self, etcd: &Etcd, leader_id: Option<u64>) -> Option<serde_json::Value> {
        let registration = self.plane.registration_of(etcd, leader_id?).await.ok()??;
        let answer = crate::admin::client::request(
            &registration.admin,
            axum::http::Method::GET,
            "/api/nodes",
            None,
            None,
            &self.tls.admin_client(),
            LEADER_NODES_TIMEOUT,
        )
        .await
        .ok()?;
        (answer.status == 200).then(|| serde_json::from_slice(&answer.body).ok()).flatten()
    }
}
