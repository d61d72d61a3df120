//! What a shard needs to serve anything: its partitions, the shared topic
//! registry, the mesh to the other shards, the node's settings and the
//! cluster view the control thread publishes. Every layer above takes it as
//! a parameter; none adds methods to it, so what it offers is all here.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use super::mesh::Mesh;
use super::partitions::{OwnedPartition, ShardPartitions};
use super::topics::TopicRegistry;
use super::wire_error::refusal;
use super::ShardId;
use crate::config::NodeConfig;
use crate::protocol::{ErrorCode, ErrorResponse};
use crate::state::cluster::{ClusterState, WriteRefusal};

/// The shard that owns topic metadata (creates and deletes topics).
pub const METADATA_SHARD: ShardId = 0;

/// [`ShardContext::write_epoch`] from the cluster state alone.
pub fn write_epoch_of(cluster: &ClusterState) -> Result<u32, ErrorResponse> {
    cluster.write_epoch().map_err(|refusal_reason| match refusal_reason {
        WriteRefusal::NotLeader(Some(leader)) => ErrorResponse {
            code: ErrorCode::NotLeader,
            message: format!("this node is a follower; the leader is at {leader}"),
            leader: Some(leader),
        },
        WriteRefusal::NotLeader(None) => {
            refusal(ErrorCode::NotLeader, "this node is a follower and no leader is known")
        }
        WriteRefusal::Fenced => {
            refusal(ErrorCode::NotLeader, "fenced: this node's etcd lease was not renewed in time; not acknowledging")
        }
    })
}

/// Everything a shard needs to serve requests.
pub struct ShardContext {
    /// This shard.
    pub shard: ShardId,
    /// Number of data shards.
    pub shards: usize,
    /// Node settings.
    pub config: Arc<NodeConfig>,
    /// Topics, shared by all shards.
    pub registry: Arc<TopicRegistry>,
    /// Partitions this shard owns.
    pub partitions: ShardPartitions,
    /// Channels to the other shards.
    pub mesh: Rc<Mesh>,
    /// Node metrics (this shard writes `metrics.shards[shard]`).
    pub metrics: Arc<crate::state::metrics::NodeMetrics>,
    /// The cluster view the control thread publishes (role, epoch, fencing).
    pub cluster: Arc<ClusterState>,
    /// Followers' progress, written by this shard's slot while leading.
    pub progress: Arc<crate::state::progress::ReplicationProgress>,
    /// Held by a topic creation or deletion on the metadata shard from its
    /// checks to its last step, so two changes never interleave at an await.
    pub topic_changes: crate::runtime::Gate,
    /// The consumer groups this shard coordinates (`groups::coordinator_shard`).
    pub groups: super::groups::Groups,
    /// TLS of the listeners and of this node's connections to leaders.
    pub tls: Arc<crate::security::listeners::NodeTls>,
    /// The users clients authenticate as (`[auth]`): an immutable snapshot
    /// the control thread replaces when users change.
    pub users: Arc<arc_swap::ArcSwap<crate::security::Users>>,
    /// Set once when the node stops (`node::shard::watch_for_stop`): the
    /// listeners stop accepting, connections stop reading new requests,
    /// the background loops and the follower end, and a long poll answers
    /// with what it has at once (shutdown waits for the requests in
    /// flight, up to 10 s). The shard's one stop signal.
    pub stopping: crate::runtime::Latch,
}

impl ShardContext {
    /// Sleep `duration` and return true, or return false as soon as the
    /// shard is stopping (at once if it is already): loops that pause
    /// between passes end with the shard instead of a pause later.
    pub async fn sleep_unless_stopping(&self, duration: std::time::Duration) -> bool {
        if self.stopping.is_set() {
            return false;
        }
        let slept = async {
            crate::runtime::sleep(duration).await;
            true
        };
        futures_lite::future::or(slept, async {
            self.stopping.wait().await;
            false
        })
        .await
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The epoch to write under, or `not_leader` (with the leader's address
    /// when known). Checked before a write and again before its ack, so a
    /// leader whose lease lapsed mid-write does not acknowledge it.
    pub fn write_epoch(&self) -> Result<u32, ErrorResponse> {
        write_epoch_of(&self.cluster)
    }

    /// This shard's counters.
    pub fn shard_metrics(&self) -> &crate::state::metrics::ShardMetrics {
        &self.metrics.shards[self.shard]
    }

    /// The partition if this shard owns it and it is open, else `unknown_topic`.
    pub fn owned(&self, topic: &str, partition: u32) -> Result<Rc<OwnedPartition>, ErrorResponse> {
        self.partitions
            .get(topic, partition)
            .ok_or_else(|| refusal(ErrorCode::UnknownTopic, format!("partition {topic}/{partition} is not open here")))
    }
}
