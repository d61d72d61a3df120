//! `ringlog serve`: startup checks, data directory lock, one pinned glommio
//! executor per data shard, the client listeners, and graceful shutdown on
//! SIGINT/SIGTERM (stop accepting, finish in-flight requests, flush, fsync,
//! clean-shutdown markers, exit 0).

pub mod control_thread;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::http::AdminState;
use crate::cluster::keys::Registration;
use crate::cluster::membership::ControlPlane;
use crate::config::NodeConfig;
use crate::net::server::{run_listener, InFlight, ListenerKind};
use crate::runtime::Notify;
use crate::shard::handler::{enforce_retention, publish_gauges, ShardContext};
use crate::shard::mesh::{build_mesh, Envelope, Inbound, Mesh, MeshEnds};
use crate::shard::partitions::ShardPartitions;
use crate::shard::topics::{TopicMeta, TopicRegistry};
use crate::state::cluster::ClusterState;
use crate::state::metrics::ConnectionCount;
use crate::state::metrics::NodeMetrics;
use crate::state::progress::ReplicationProgress;
use crate::storage::lock::DataDirLock;

/// Why the node could not run.
#[derive(Debug)]
pub enum NodeError {
    /// The environment cannot run ringlog (exit 78).
    Environment(String),
    /// Anything else (exit 1).
    Operational(String),
}

/// Smallest RLIMIT_MEMLOCK the executors work with.
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// Check io_uring availability and locked-memory limits before starting.
pub fn startup_checks() -> Result<(), NodeError> {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if text.trim() == "2" {
            return Err(NodeError::Environment(
                "io_uring is disabled (kernel.io_uring_disabled = 2); enable it with sysctl kernel.io_uring_disabled=0"
                    .into(),
            ));
        }
    }
    let ring = io_uring::IoUring::new(8).map_err(|error| {
        NodeError::Environment(format!("io_uring is not available ({error}); ringlog needs Linux 5.10+ with io_uring"))
    })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|error| NodeError::Environment(format!("cannot probe io_uring operations: {error}")))?;
    for (opcode, name) in [
        (io_uring::opcode::Read::CODE, "read"),
        (io_uring::opcode::Write::CODE, "write"),
        (io_uring::opcode::Fsync::CODE, "fsync"),
        (io_uring::opcode::Fallocate::CODE, "fallocate"),
    ] {
        if !probe.is_supported(opcode) {
            return Err(NodeError::Environment(format!("io_uring lacks the {name} operation; upgrade the kernel")));
        }
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
        && limit.rlim_cur < MIN_MEMLOCK_BYTES
    {
        return Err(NodeError::Environment(format!(
            "RLIMIT_MEMLOCK is {} bytes; ringlog needs at least {MIN_MEMLOCK_BYTES} (ulimit -l {})",
            limit.rlim_cur,
            MIN_MEMLOCK_BYTES / 1024
        )));
    }
    Ok(())
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
        client_address: loopback_address(&config.listen),
        admin_token: config.admin_token.clone(),
        cluster: Arc::clone(&cluster),
        plane: None,
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
    admin_state.plane = plane.clone();
    control_thread::start(&config.admin, admin_state, plane, config.limits.heap_trim_interval_ms, &STOP_REQUESTED)
}

type ShardHandle = glommio::ExecutorJoinHandle<Result<(), String>>;

/// One pinned executor per shard (unpinned when there are more shards than
/// cores), each with a copy of `template` naming its own shard.
fn spawn_shards(template: &ShardConfig) -> Result<Vec<ShardHandle>, NodeError> {
    let shards = template.shards;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut handles = Vec::with_capacity(shards);
    for (shard, ends) in build_mesh(shards, template.config.limits.cross_shard_queue_depth).into_iter().enumerate() {
        let placement = if shards <= cores { glommio::Placement::Fixed(shard) } else { glommio::Placement::Unbound };
        let shard_config = ShardConfig { shard, ..template.clone() };
        let handle = glommio::LocalExecutorBuilder::new(placement)
            .name(&format!("ringlog-shard-{shard}"))
            .spawn(move || run_shard(shard_config, ends))
            .map_err(|error| NodeError::Environment(format!("cannot start shard executor {shard}: {error}")))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// The startup barrier: every shard has recovered its partitions and bound
/// its listeners, and no other process shares them.
fn wait_until_listening(
    ready: &mpsc::Receiver<Result<ShardId, String>>,
    shards: usize,
    config: &NodeConfig,
) -> Result<(), NodeError> {
    for _ in 0..shards {
        match ready.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => {
                STOP_REQUESTED.store(true, Ordering::SeqCst);
                return Err(NodeError::Operational(message));
            }
            Err(_) => return Err(NodeError::Operational("a shard exited during startup".into())),
        }
    }
    verify_shard_listeners(config).inspect_err(|_| STOP_REQUESTED.store(true, Ordering::SeqCst))
}

/// Log, print the "listening" line, and tell systemd (Type=notify) that
/// the node has recovered and every listener is bound and verified.
fn announce(config: &NodeConfig, shards: usize) {
    let mode = match config.cluster.etcd.is_empty() {
        true => "standalone".into(),
        false => format!("cluster, etcd {}", config.cluster.etcd.join(",")),
    };
    tracing::info!(target: "ringlog::node", listen = %config.listen, admin = %config.admin, shards,
        data_dir = %config.data_dir.display(), %mode, "ringlog node ready");
    println!(
        "ringlog listening on {} (admin http://{}) with {shards} shards, data in {} ({mode})",
        config.listen,
        config.admin,
        config.data_dir.display()
    );
    crate::systemd::notify(&format!("READY=1\nSTATUS=serving clients on {}", config.listen));
}

/// Wait for every shard to end; the first failure, if any.
fn join_shards(handles: Vec<ShardHandle>) -> Option<String> {
    let mut failed = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                failed.get_or_insert(message);
            }
            Err(error) => {
                failed.get_or_insert(format!("shard failed: {error}"));
            }
        }
    }
    failed
}

/// Each address this node listens on, with the setting that names it; the
/// replication listener only in cluster mode. The first two are shared by
/// every shard with SO_REUSEPORT (the admin listener is the control
/// thread's alone).
fn listen_addresses(config: &NodeConfig) -> Vec<(&'static str, &str)> {
    let mut addresses = vec![("listen", config.listen.as_str())];
    if !config.cluster.etcd.is_empty() {
        addresses.push(("replication_listen", config.replication_listen.as_str()));
    }
    addresses.push(("admin", config.admin.as_str()));
    addresses
}

/// Refuse to start, before recovery, when another process listens on one
/// of our addresses (`net::ports`). The patience covers the listeners of a
/// SIGKILLed predecessor, which io_uring's teardown keeps for a moment.
fn claim_addresses(config: &NodeConfig) -> Result<(), NodeError> {
    for (setting, address) in listen_addresses(config) {
        crate::net::ports::ensure_sole_listener(setting, address, Duration::from_secs(3))
            .map_err(NodeError::Operational)?;
    }
    Ok(())
}

/// Once every shard listens: no other process joined our SO_REUSEPORT
/// groups between the probe and the binds (`net::ports`).
fn verify_shard_listeners(config: &NodeConfig) -> Result<(), NodeError> {
    for (setting, address) in listen_addresses(config) {
        if setting != "admin" {
            crate::net::ports::ensure_sole_listener(setting, address, Duration::ZERO)
                .map_err(NodeError::Operational)?;
        }
    }
    Ok(())
}

/// The address to reach `listen` from this machine (0.0.0.0 → 127.0.0.1).
fn loopback_address(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_string(),
    }
}

/// `address` with its host replaced by `advertise` (when set), else made
/// reachable from this machine.
fn advertised(address: &str, advertise: Option<&str>) -> String {
    match (advertise, address.rsplit_once(':')) {
        (Some(host), Some((_, port))) => format!("{host}:{port}"),
        _ => loopback_address(address),
    }
}

/// The addresses this node registers in etcd.
fn advertised_addresses(config: &NodeConfig) -> Registration {
    let advertise = config.cluster.advertise.as_deref();
    Registration {
        id: 0,
        client: advertised(&config.listen, advertise),
        replication: advertised(&config.replication_listen, advertise),
        admin: advertised(&config.admin, advertise),
    }
}

#[derive(Clone)]
struct ShardConfig {
    shard: ShardId,
    shards: usize,
    config: Arc<NodeConfig>,
    registry: Arc<TopicRegistry>,
    connections: Arc<ConnectionCount>,
    metrics: Arc<NodeMetrics>,
    cluster: Arc<ClusterState>,
    progress: Arc<ReplicationProgress>,
    /// Shards that have opened their partitions (the startup barrier).
    opened: Arc<std::sync::atomic::AtomicUsize>,
    ready: mpsc::Sender<Result<ShardId, String>>,
}

async fn run_shard(setup: ShardConfig, ends: MeshEnds) -> Result<(), String> {
    crate::state::latency::observe_fsyncs_on_this_thread(Arc::clone(&setup.metrics.shards[setup.shard].fsync_latency));
    let (mesh, inbound) = Mesh::connect(setup.shard, ends).await;
    let context = Rc::new(ShardContext {
        shard: setup.shard,
        shards: setup.shards,
        config: Arc::clone(&setup.config),
        registry: Arc::clone(&setup.registry),
        partitions: ShardPartitions::default(),
        mesh: Rc::clone(&mesh),
        metrics: setup.metrics,
        cluster: setup.cluster,
        progress: setup.progress,
    });
    let receivers = start_inbound(&context, inbound);
    if let Err(message) = open_partitions(&context).await {
        let _ = setup.ready.send(Err(message.clone()));
        return Err(message);
    }
    // Before the control plane starts: a leader must outrank every epoch on disk.
    for owned in context.partitions.all() {
        if let Some(epoch) = owned.log.snapshot().leader_epoch {
            context.cluster.note_local_epoch(epoch);
        }
    }
    // Accept clients only once every shard has opened its partitions: a
    // request forwarded to a shard still recovering would find nothing.
    setup.opened.fetch_add(1, Ordering::SeqCst);
    while setup.opened.load(Ordering::SeqCst) < setup.shards {
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            return Err("stopped during startup".into());
        }
        crate::runtime::sleep(Duration::from_millis(5)).await;
    }
    let listener = match bind(&setup.config.listen) {
        Ok(listener) => listener,
        Err(message) => {
            let _ = setup.ready.send(Err(message.clone()));
            return Err(message);
        }
    };
    let replication_listener = match context.cluster.is_clustered() {
        true => match bind(&setup.config.replication_listen) {
            Ok(listener) => Some(listener),
            Err(message) => {
                let _ = setup.ready.send(Err(message.clone()));
                return Err(message);
            }
        },
        false => None,
    };
    let _ = setup.ready.send(Ok(setup.shard));
    let stop = Rc::new(Notify::new());
    let stopping = Rc::new(Cell::new(false));
    let in_flight = Rc::new(InFlight::default());
    let watcher = crate::runtime::spawn_local(watch_for_stop(Rc::clone(&stop), Rc::clone(&stopping)));
    let publisher = crate::runtime::spawn_local(publish_gauges(Rc::clone(&context), Rc::clone(&stopping)));
    let retention = crate::runtime::spawn_local(enforce_retention(Rc::clone(&context), Rc::clone(&stopping)));
    let mut replication_tasks = Vec::new();
    if let Some(replication_listener) = replication_listener {
        replication_tasks.push(crate::runtime::spawn_local(run_listener(
            Rc::clone(&context),
            replication_listener,
            ListenerKind::Replication,
            Rc::clone(&stop),
            Rc::clone(&stopping),
            Arc::clone(&setup.connections),
            Rc::clone(&in_flight),
        )));
        replication_tasks.push(crate::runtime::spawn_local(crate::replication::follower::run(
            Rc::clone(&context),
            Rc::clone(&stopping),
        )));
        replication_tasks
            .push(crate::runtime::spawn_local(Rc::clone(&context).publish_follower_progress(Rc::clone(&stopping))));
    }
    run_listener(
        Rc::clone(&context),
        listener,
        ListenerKind::Client,
        Rc::clone(&stop),
        Rc::clone(&stopping),
        setup.connections,
        Rc::clone(&in_flight),
    )
    .await;
    watcher.await;
    publisher.await;
    retention.await;
    for task in replication_tasks {
        task.await;
    }
    shut_down(&context, &in_flight).await?;
    drop(receivers);
    Ok(())
}

fn bind(address: &str) -> Result<glommio::net::TcpListener, String> {
    glommio::net::TcpListener::bind(address).map_err(|error| format!("cannot listen on {address}: {error}"))
}

/// Poll the process-wide stop flag (set by the signal thread).
async fn watch_for_stop(stop: Rc<Notify>, stopping: Rc<Cell<bool>>) {
    while !STOP_REQUESTED.load(Ordering::SeqCst) {
        crate::runtime::sleep(Duration::from_millis(50)).await;
    }
    stopping.set(true);
    stop.notify_all();
}

/// Finish in-flight requests (bounded wait), then close partitions cleanly.
async fn shut_down(context: &Rc<ShardContext>, in_flight: &InFlight) -> Result<(), String> {
    let waited = futures_lite::future::or(
        async {
            in_flight.drained().await;
            true
        },
        async {
            crate::runtime::sleep(Duration::from_secs(10)).await;
            false
        },
    )
    .await;
    if !waited {
        tracing::warn!(target: "ringlog::node", shard = context.shard, remaining = in_flight.count(),
            "in-flight requests did not finish within 10 s; closing anyway");
    }
    // Give peers a moment to finish requests they forwarded here.
    crate::runtime::sleep(Duration::from_millis(100)).await;
    context.partitions.close_all().await.map_err(|error| format!("shard {}: {error}", context.shard))?;
    context.mesh.fail_pending();
    Ok(())
}

async fn open_partitions(context: &Rc<ShardContext>) -> Result<(), String> {
    for meta in context.registry.snapshot().values() {
        context
            .partitions
            .open_topic(
                context.shard,
                context.shards,
                &context.config.data_dir,
                Arc::clone(meta),
                &context.config.storage,
            )
            .await
            .map_err(|error| format!("cannot open topic {}: {error}", meta.name))?;
    }
    Ok(())
}

/// Spawn one task per peer channel: run its requests, deliver its replies.
fn start_inbound(context: &Rc<ShardContext>, inbound: Inbound) -> Vec<crate::runtime::Task<()>> {
    let mut tasks = Vec::new();
    for (peer, receiver) in inbound {
        let context = Rc::clone(context);
        tasks.push(crate::runtime::spawn_local(async move {
            while let Some(envelope) = receiver.recv().await {
                match envelope {
                    Envelope::Request { id, request } => {
                        let context = Rc::clone(&context);
                        crate::runtime::spawn_local(async move {
                            let outcome = context.handle_forwarded(request).await;
                            context.mesh.reply(peer, id, outcome).await;
                        })
                        .detach();
                    }
                    Envelope::Reply { id, outcome } => context.mesh.complete(id, outcome),
                }
            }
        }));
    }
    tasks
}
