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
use crate::security::listeners::NodeTls;
use crate::shard::topics::TopicMeta;
use crate::shard::ShardId;
use crate::storage::lock::DataDirLock;

mod admin_services;
pub mod control_thread;
mod error;
mod shard;
mod shared;
mod startup;
mod tasks;
mod users;

pub use error::{NodeError, ShardError};

use shard::{join_shards, spawn_shards};
use shared::Shared;
use startup::{advertised_addresses, announce, claim_addresses, wait_until_listening};
pub use startup::{startup_checks, MIN_MEMLOCK_BYTES};

/// Set by the signal thread; every shard polls it.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// SIGINT and SIGTERM stop the node; SIGHUP reloads its certificates.
fn install_signal_handlers(tls: Arc<NodeTls>) -> Result<(), NodeError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|source| NodeError::SignalHandlers { source })?;
    std::thread::Builder::new()
        .name("ringlog-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload(&tls);
                    continue;
                }
                tracing::info!(target: "ringlog::node", signal, "shutdown requested");
                crate::systemd::notify("STOPPING=1");
                STOP_REQUESTED.store(true, Ordering::SeqCst);
                return;
            }
        })
        .map_err(|source| NodeError::Thread { thread: "signal", source })?;
    Ok(())
}

/// SIGHUP: read the certificates and keys again. New connections use
/// them; open ones keep theirs; a file that fails keeps the old one.
fn reload(tls: &NodeTls) {
    if !tls.any() {
        tracing::info!(target: "ringlog::tls", "SIGHUP: no [tls] configured, nothing to reload");
        return;
    }
    let failures = tls.reload();
    for (listener, error) in &failures {
        tracing::error!(target: "ringlog::tls", listener, %error, "TLS reload failed; the previous certificate stays in use");
    }
    if failures.is_empty() {
        tracing::info!(target: "ringlog::tls", "TLS certificates reloaded");
    }
}

/// Run the node until a shutdown signal; returns when everything is closed.
pub fn serve(config: NodeConfig) -> Result<(), NodeError> {
    startup_checks()?;
    let _lock = DataDirLock::acquire(&config.data_dir).map_err(NodeError::DataDirectory)?;
    claim_addresses(&config)?;
    let topics = TopicMeta::load_all(&config.data_dir)
        .map_err(|source| NodeError::LoadTopics { data_dir: config.data_dir.clone(), source })?;
    let shards = shard_count(&config);
    startup::check_io_memory_fits(config.storage.io_memory_bytes, shards)?;
    let tls = Arc::new(NodeTls::load(&config.tls).map_err(NodeError::Tls)?);
    if !config.cluster.etcd.is_empty() {
        // Read once now so unusable files stop the start instead of every
        // membership session failing on them later.
        crate::cluster::etcd::EtcdAccess::from_config(&config.cluster).map_err(NodeError::EtcdAccess)?;
    }
    let users = users::load(&config)?;
    install_signal_handlers(Arc::clone(&tls))?;
    let shared = Shared::new(config, topics, shards, tls, users);
    let (ready_sender, ready_receiver) = mpsc::channel::<Result<ShardId, ShardError>>();
    // The template is dropped at the end of this statement, so the shards
    // hold the only senders: a shard that dies unannounced ends the wait
    // below instead of blocking it.
    let handles = spawn_shards(&shared.shard_template(ready_sender))?;
    wait_until_listening(&ready_receiver, shards, &shared.config)?;
    startup::warn_if_io_memory_unregistered(shared.config.storage.io_memory_bytes, shards);
    let admin = match start_control(&shared) {
        Ok(admin) => admin,
        Err(error) => return Err(stop_shards(handles, error)),
    };
    startup::warn_if_exposed(&shared.config);
    announce(&shared.config, shards);
    join_node(handles, admin)
}

/// Data shards: the setting, or one per core when it is 0.
fn shard_count(config: &NodeConfig) -> usize {
    match config.shards {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        shards => shards,
    }
}

/// The control thread: the admin API and, in cluster mode, the etcd
/// control plane (which the admin API also answers from).
fn start_control(shared: &Shared) -> Result<std::thread::JoinHandle<()>, NodeError> {
    let config = &shared.config;
    let plane = (!config.cluster.etcd.is_empty()).then(|| {
        ControlPlane::new(
            config.cluster.clone(),
            config.data_dir.clone(),
            advertised_addresses(config),
            Arc::clone(&shared.cluster),
            Arc::clone(&shared.progress),
        )
    });
    let cluster_services = plane.clone().map(|plane| {
        let cluster = Arc::clone(&shared.cluster);
        Arc::new(admin_services::ClusterAdmin { plane, cluster, tls: Arc::clone(&shared.tls) })
            as Arc<dyn crate::admin::services::ClusterServices>
    });
    let users = shared.users.clone().in_cluster(plane.clone());
    let directory = Some(Arc::new(users.clone()) as Arc<dyn crate::admin::services::UserDirectory>);
    let admin_state = AdminState { cluster_services, users: directory, ..shared.admin_state() };
    let trim_interval_ms = config.limits.heap_trim_interval_ms;
    let tls = Arc::clone(&shared.tls);
    let control = control_thread::Control { plane, users };
    control_thread::start(&config.admin, admin_state, control, trim_interval_ms, tls, &STOP_REQUESTED)
}

/// Stop the running shards after a failure to start, and return it.
fn stop_shards(handles: Vec<shard::ShardHandle>, error: NodeError) -> NodeError {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
    if let Some(shard_error) = join_shards(handles) {
        tracing::error!(target: "ringlog::node", error = %shard_error, "a shard failed while stopping");
    }
    error
}

/// Wait for the shards to end (after the stop signal), then the control
/// thread; the first shard failure, if any.
fn join_node(handles: Vec<shard::ShardHandle>, admin: std::thread::JoinHandle<()>) -> Result<(), NodeError> {
    let failed = join_shards(handles);
    if admin.join().is_err() {
        tracing::error!(target: "ringlog::node", "the control thread panicked");
    }
    match failed {
        Some(error) => Err(error),
        None => {
            tracing::info!(target: "ringlog::node", "clean shutdown complete");
            Ok(())
        }
    }
}
