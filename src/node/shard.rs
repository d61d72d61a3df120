//! One data shard's executor: spawn, open its partitions, serve its
//! listeners and mesh, shut down in order, and join.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::config::NodeConfig;
use crate::net::server::{run_listener, InFlight, ListenerKind};
use crate::runtime::Notify;
use crate::shard::handler::{enforce_retention, publish_gauges, ShardContext};
use crate::shard::mesh::{build_mesh, Envelope, Inbound, Mesh, MeshEnds};
use crate::shard::partitions::ShardPartitions;
use crate::shard::topics::TopicRegistry;
use crate::shard::ShardId;
use crate::state::cluster::ClusterState;
use crate::state::metrics::ConnectionCount;
use crate::state::metrics::NodeMetrics;
use crate::state::progress::ReplicationProgress;

use super::{NodeError, ShardError, STOP_REQUESTED};

pub(super) type ShardHandle = glommio::ExecutorJoinHandle<Result<(), ShardError>>;

/// One pinned executor per shard (unpinned when there are more shards than
/// cores), each with a copy of `template` naming its own shard.
pub(super) fn spawn_shards(template: &ShardConfig) -> Result<Vec<ShardHandle>, NodeError> {
    let shards = template.shards;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut handles = Vec::with_capacity(shards);
    for (shard, ends) in build_mesh(shards, template.config.limits.cross_shard_queue_depth).into_iter().enumerate() {
        let placement = if shards <= cores { glommio::Placement::Fixed(shard) } else { glommio::Placement::Unbound };
        let shard_config = ShardConfig { shard, ..template.clone() };
        let handle = glommio::LocalExecutorBuilder::new(placement)
            .name(&format!("ringlog-shard-{shard}"))
            .spawn(move || run_shard(shard_config, ends))
            .map_err(|error| NodeError::ShardExecutor { shard, source: error.into() })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Wait for every shard to end; the first failure, if any (the handles
/// are in shard order).
pub(super) fn join_shards(handles: Vec<ShardHandle>) -> Option<NodeError> {
    let mut failed = None;
    for (shard, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                failed.get_or_insert(NodeError::Shard(error));
            }
            Err(error) => {
                failed.get_or_insert(NodeError::ShardJoin { shard, source: error.into() });
            }
        }
    }
    failed
}

#[derive(Clone)]
pub(super) struct ShardConfig {
    pub(super) shard: ShardId,
    pub(super) shards: usize,
    pub(super) config: Arc<NodeConfig>,
    pub(super) registry: Arc<TopicRegistry>,
    pub(super) connections: Arc<ConnectionCount>,
    pub(super) metrics: Arc<NodeMetrics>,
    pub(super) cluster: Arc<ClusterState>,
    pub(super) progress: Arc<ReplicationProgress>,
    /// Shards that have opened their partitions (the startup barrier).
    pub(super) opened: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) ready: mpsc::Sender<Result<ShardId, ShardError>>,
}

pub(super) async fn run_shard(setup: ShardConfig, ends: MeshEnds) -> Result<(), ShardError> {
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
    if let Err(error) = open_partitions(&context).await {
        let _ = setup.ready.send(Err(error.clone()));
        return Err(error);
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
            return Err(ShardError::StoppedDuringStartup { shard: setup.shard });
        }
        crate::runtime::sleep(Duration::from_millis(5)).await;
    }
    let listener = match bind(setup.shard, &setup.config.listen) {
        Ok(listener) => listener,
        Err(error) => {
            let _ = setup.ready.send(Err(error.clone()));
            return Err(error);
        }
    };
    let replication_listener = match context.cluster.is_clustered() {
        true => match bind(setup.shard, &setup.config.replication_listen) {
            Ok(listener) => Some(listener),
            Err(error) => {
                let _ = setup.ready.send(Err(error.clone()));
                return Err(error);
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

pub(super) fn bind(shard: ShardId, address: &str) -> Result<glommio::net::TcpListener, ShardError> {
    glommio::net::TcpListener::bind(address).map_err(|error| ShardError::Bind {
        shard,
        address: address.to_string(),
        source: Arc::new(error.into()),
    })
}

/// Poll the process-wide stop flag (set by the signal thread).
pub(super) async fn watch_for_stop(stop: Rc<Notify>, stopping: Rc<Cell<bool>>) {
    while !STOP_REQUESTED.load(Ordering::SeqCst) {
        crate::runtime::sleep(Duration::from_millis(50)).await;
    }
    stopping.set(true);
    stop.notify_all();
}

/// Finish in-flight requests (bounded wait), then close partitions cleanly.
pub(super) async fn shut_down(context: &Rc<ShardContext>, in_flight: &InFlight) -> Result<(), ShardError> {
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
    context
        .partitions
        .close_all()
        .await
        .map_err(|error| ShardError::Close { shard: context.shard, source: Arc::new(error) })?;
    context.mesh.fail_pending();
    Ok(())
}

pub(super) async fn open_partitions(context: &Rc<ShardContext>) -> Result<(), ShardError> {
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
            .map_err(|error| ShardError::OpenTopic {
                shard: context.shard,
                topic: meta.name.clone(),
                source: Arc::new(error),
            })?;
    }
    Ok(())
}

/// Spawn one task per peer channel: run its requests, deliver its replies.
pub(super) fn start_inbound(context: &Rc<ShardContext>, inbound: Inbound) -> Vec<crate::runtime::Task<()>> {
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
