//! `ringlog serve`: startup checks, data directory lock, one pinned glommio
//! executor per data shard, the client listeners, and graceful shutdown on
//! SIGINT/SIGTERM (stop accepting, finish in-flight requests, flush, fsync,
//! clean-shutdown markers, exit 0).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use crate::admin::http::AdminState;
use crate::cluster::membership::ControlPlane;
use crate::config::NodeConfig;
use crate::shard::topics::{TopicMeta, TopicRegistry};
use crate::state::cluster::ClusterState;
use crate::state::metrics::ConnectionCount;
use crate::state::metrics::NodeMetrics;
use crate::state::progress::ReplicationProgress;
use crate::storage::lock::DataDirLock;

mod admin_services;
pub mod control_thread;
mod shard;
mod startup;
mod tasks;

use shard::{join_shards, spawn_shards, ShardConfig};
use startup::{advertised_addresses, announce, claim_addresses, loopback_address, wait_until_listening};
pub use startup::{startup_checks, MIN_MEMLOCK_BYTES};

/// Why the node could not run.
#[derive(Debug)]
pub enum NodeError {
    /// The environment cannot run ringlog (exit 78).
    Environment(String),
    /// Anything else (exit 1).
    Operational(String),
}

/// Set by the signal thread; every shard polls it.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

fn install_signal_handlers() -> Result<(), NodeError> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|error| NodeError::Operational(format!("cannot install signal handlers: {error}")))?;
    std::thread::Builder::new()
        .name("ringlog-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(target: "ringlog::node", signal, "shutdown requested");
                crate::systemd::notify("STOPPING=1");
                STOP_REQUESTED.store(true, Ordering::SeqCst);
            }
        })
        .map_err(|error| NodeError::Operational(format!("cannot start signal thread: {error}")))?;
    Ok(())
}

/// Run the node until a shutdown signal; returns when everything is closed.
pub fn serve(config: NodeConfig) -> Result<(), NodeError> {
    startup_checks()?;
    let _lock = DataDirLock::acquire(&config.data_dir).map_err(|error| NodeError::Operational(error.to_string()))?;
    claim_addresses(&config)?;
    let topics = TopicMeta::load_all(&config.data_dir)
        .map_err(|error| NodeError::Operational(format!("cannot load topics: {error}")))?;
    let shards = match config.shards {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        shards => shards,
    };
    install_signal_handlers()?;
    let config = Arc::new(config);
    let registry = Arc::new(TopicRegistry::new(topics));
    let connections = Arc::new(ConnectionCount::default());
    let metrics = Arc::new(NodeMetrics::new(shards, Arc::clone(&connections)));
    let clustered = !config.cluster.etcd.is_empty();
    let cluster = if clustered { ClusterState::clustered() } else { ClusterState::standalone() };
    let progress = ReplicationProgress::new(shards);
    let (ready_sender, ready_receiver) = mpsc::channel::<Result<ShardId, String>>();
    let template = ShardConfig {
        shard: 0,
        shards,
        config: Arc::clone(&config),
        registry: Arc::clone(&registry),
        connections: Arc::clone(&connections),
        metrics: Arc::clone(&metrics),
        cluster: Arc::clone(&cluster),
        progress: Arc::clone(&progress),
        opened: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        ready: ready_sender,
    };
    let handles = spawn_shards(&template)?;
    // The shards hold the only senders now: a shard that dies unannounced
    // ends the wait below instead of blocking it.
    drop(template);
    wait_until_listening(&ready_receiver, shards, &config)?;
    let admin_state = AdminState {
        registry: Arc::clone(&registry),
        metrics: Arc::clone(&metrics),
        client: Arc::new(admin_services::LoopbackClient { address: loopback_address(&config.listen) }),
        admin_token: config.admin_token.clone(),
        cluster: Arc::clone(&cluster),
        cluster_services: None,
    };
    let admin = match start_control(&config, admin_state, &progress) {
        Ok(admin) => admin,
        Err(message) => {
            STOP_REQUESTED.store(true, Ordering::SeqCst);
            join_shards(handles);
            return Err(NodeError::Operational(message));
        }
    };
    announce(&config, shards);
    let failed = join_shards(handles);
    let _ = admin.join();
    match failed {
        Some(message) => Err(NodeError::Operational(message)),
        None => {
            tracing::info!(target: "ringlog::node", "clean shutdown complete");
            Ok(())
        }
    }
}

use crate::shard::ShardId;

/// The control thread: the admin API and, in cluster mode, the etcd
/// control plane (which the admin API also answers from).
fn start_control(
    config: &NodeConfig,
    mut admin_state: AdminState,
    progress: &Arc<ReplicationProgress>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let plane = (!config.cluster.etcd.is_empty()).then(|| {
        ControlPlane::new(
            config.cluster.clone(),
            config.data_dir.clone(),
            advertised_addresses(config),
            Arc::clone(&admin_state.cluster),
            Arc::clone(progress),
        )
    });
    admin_state.cluster_services = plane.clone().map(|plane| {
        let cluster = Arc::clone(&admin_state.cluster);
        Arc::new(admin_services::ClusterAdmin { plane, cluster }) as Arc<dyn crate::admin::services::ClusterServices>
    });
    control_thread::start(&config.admin, admin_state, plane, config.limits.heap_trim_interval_ms, &STOP_REQUESTED)
}
