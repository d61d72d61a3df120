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

pub mod control_thread;
mod error;
mod shard;
mod startup;

pub use error::{NodeError, ShardError};

use shard::{join_shards, spawn_shards, ShardConfig};
use startup::{advertised_addresses, announce, claim_addresses, loopback_address, wait_until_listening};
pub use startup::{startup_checks, MIN_MEMLOCK_BYTES};

/// Set by the signal thread; every shard polls it.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

fn install_signal_handlers() -> Result<(), NodeError> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|source| NodeError::SignalHandlers { source })?;
    std::thread::Builder::new()
        .name("ringlog-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(target: "ringlog::node", signal, "shutdown requested");
                crate::systemd::notify("STOPPING=1");
                STOP_REQUESTED.store(true, Ordering::SeqCst);
            }
        })
        .map_err(|source| NodeError::Thread { thread: "signals", source })?;
    Ok(())
}

/// Run the node until a shutdown signal; returns when everything is closed.
pub fn serve(config: NodeConfig) -> Result<(), NodeError> {
    startup_checks()?;
    let _lock = DataDirLock::acquire(&config.data_dir).map_err(NodeError::DataDirectory)?;
    claim_addresses(&config)?;
    let topics = TopicMeta::load_all(&config.data_dir)
        .map_err(|source| NodeError::LoadTopics { data_dir: config.data_dir.clone(), source })?;
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
    let (ready_sender, ready_receiver) = mpsc::channel::<Result<ShardId, ShardError>>();
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
        client_address: loopback_address(&config.listen),
        admin_token: config.admin_token.clone(),
        cluster: Arc::clone(&cluster),
        plane: None,
    };
    let admin = match start_control(&config, admin_state, &progress) {
        Ok(admin) => admin,
        Err(error) => {
            STOP_REQUESTED.store(true, Ordering::SeqCst);
            if let Some(shard_error) = join_shards(handles) {
                tracing::error!(target: "ringlog::node", error = %shard_error, "a shard failed while stopping");
            }
            return Err(error);
        }
    };
    announce(&config, shards);
    let failed = join_shards(handles);
    let _ = admin.join();
    match failed {
        Some(error) => Err(error),
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
) -> Result<std::thread::JoinHandle<()>, NodeError> {
    let plane = (!config.cluster.etcd.is_empty()).then(|| {
        ControlPlane::new(
            config.cluster.clone(),
            config.data_dir.clone(),
            advertised_addresses(config),
            Arc::clone(&admin_state.cluster),
            Arc::clone(progress),
        )
    });
    admin_state.plane = plane.clone();
    control_thread::start(&config.admin, admin_state, plane, config.limits.heap_trim_interval_ms, &STOP_REQUESTED)
}
