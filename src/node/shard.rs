//! One data shard's executor: spawn, open its partitions, serve its
//! listeners and mesh, shut down in order, and join.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::kafka_server::{run_kafka_listener, KafkaListener};
use crate::net::server::{run_listener, InFlight, ListenerKind};
use crate::shard::context::ShardContext;
use crate::shard::mesh::{build_mesh, Envelope, Inbound, Mesh, MeshEnds};
use crate::shard::partitions::ShardPartitions;
use crate::shard::ShardId;
use crate::state::metrics::ConnectionCount;

use super::shared::Shared;
use super::tasks::{enforce_retention, expire_group_sessions, publish_follower_progress, publish_gauges};
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
            .io_memory(usize::try_from(template.config.storage.io_memory_bytes).expect("validated: at most 1 GiB"))
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

/// What one shard starts with: the node's shared handles, its own number,
/// and the startup barrier.
#[derive(Clone)]
pub(super) struct ShardConfig {
    pub(super) shard: ShardId,
    pub(super) shared: Shared,
    /// Shards that have opened their partitions (the startup barrier).
    pub(super) opened: Arc<std::sync::atomic::AtomicUsize>,
    /// Shards whose requests in flight have ended (the shutdown barrier):
    /// no shard closes its partitions while another still answers a
    /// request that reads them (a long poll's last read, answered when
    /// the node stops).
    pub(super) drained: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) ready: mpsc::Sender<Result<ShardId, ShardError>>,
}

impl std::ops::Deref for ShardConfig {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// One shard's life, start to end: join the mesh, open its partitions,
/// wait for every other shard to have opened theirs, bind, serve until
/// the stop signal, then shut down in order. A startup failure goes to the
/// startup barrier as well as out of the executor.
pub(super) async fn run_shard(setup: ShardConfig, ends: MeshEnds) -> Result<(), ShardError> {
    crate::state::latency::observe_fsyncs_on_this_thread(Arc::clone(&setup.metrics.shards[setup.shard].fsync_latency));
    crate::runtime::buffer_pool::set_limit_bytes(setup.config.limits.buffer_pool_bytes);
    let (context, inbound) = build_context(&setup, ends).await;
    let receivers = start_inbound(&context, inbound);
    open_partitions(&context).await.map_err(|error| report_to_barrier(&setup, error))?;
    note_local_epochs(&context);
    wait_until_every_shard_opened(&setup).await?;
    let listeners = bind_listeners(&setup, context.cluster.is_clustered()).map_err(|error| {
        // Past the startup barrier: the other shards' shutdown must not
        // wait for this one.
        setup.drained.fetch_add(1, Ordering::SeqCst);
        report_to_barrier(&setup, error)
    })?;
    // The barrier has gone only when serve() already returned (another
    // shard failed): this shard then stops with the rest.
    let _ = setup.ready.send(Ok(setup.shard));
    let in_flight = Rc::new(InFlight::default());
    serve_until_stopped(&context, listeners, &setup.connections, &in_flight).await;
    shut_down(&setup, &context, &in_flight).await?;
    drop(receivers);
    Ok(())
}

/// Tell the startup barrier why this shard cannot start; the error is
/// also the executor's result. (A barrier that has gone already returned
/// another shard's failure.)
fn report_to_barrier(setup: &ShardConfig, error: ShardError) -> ShardError {
    let _ = setup.ready.send(Err(error.clone()));
    error
}

/// This shard's view of the node: its mesh ends, partitions (empty until
/// opened) and the shared state.
async fn build_context(setup: &ShardConfig, ends: MeshEnds) -> (Rc<ShardContext>, Inbound) {
    let (mesh, inbound) = Mesh::connect(setup.shard, ends).await;
    let context = Rc::new(ShardContext {
        shard: setup.shard,
        shards: setup.shards,
        config: Arc::clone(&setup.config),
        registry: Arc::clone(&setup.registry),
        partitions: ShardPartitions::default(),
        mesh,
        metrics: Arc::clone(&setup.metrics),
        cluster: Arc::clone(&setup.cluster),
        progress: Arc::clone(&setup.progress),
        topic_changes: Default::default(),
        groups: Default::default(),
        tls: Arc::clone(&setup.tls),
        users: Arc::clone(&setup.users.snapshot),
        stopping: Default::default(),
    });
    (context, inbound)
}

/// Before the control plane starts: a leader must outrank every epoch on disk.
fn note_local_epochs(context: &ShardContext) {
    for owned in context.partitions.all() {
        if let Some(epoch) = owned.log.snapshot().leader_epoch {
            context.cluster.note_local_epoch(epoch);
        }
    }
}

/// Accept clients only once every shard has opened its partitions: a
/// request forwarded to a shard still recovering would find nothing.
async fn wait_until_every_shard_opened(setup: &ShardConfig) -> Result<(), ShardError> {
    let opened = setup.opened.fetch_add(1, Ordering::SeqCst) + 1;
    assert!(opened <= setup.shards, "shard {} opened as number {opened} of {}", setup.shard, setup.shards);
    while setup.opened.load(Ordering::SeqCst) < setup.shards {
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            // Shards that passed the startup barrier may serve and stop:
            // their shutdown barrier must not wait for this one.
            setup.drained.fetch_add(1, Ordering::SeqCst);
            return Err(ShardError::StoppedDuringStartup { shard: setup.shard });
        }
        crate::runtime::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A shard's listeners: clients always, replication in cluster mode,
/// Kafka clients unless `kafka_listen` is empty.
struct ShardListeners {
    client: glommio::net::TcpListener,
    replication: Option<glommio::net::TcpListener>,
    kafka: Option<glommio::net::TcpListener>,
}

fn bind_listeners(setup: &ShardConfig, clustered: bool) -> Result<ShardListeners, ShardError> {
    let client = bind(setup.shard, &setup.config.listen)?;
    let replication = match clustered {
        true => Some(bind(setup.shard, &setup.config.replication_listen)?),
        false => None,
    };
    let kafka = match setup.config.kafka_listen.is_empty() {
        true => None,
        false => Some(bind(setup.shard, &setup.config.kafka_listen)?),
    };
    Ok(ShardListeners { client, replication, kafka })
}

/// Serve clients (and, in cluster mode, followers and this node's own
/// follower loop) with the shard's background tasks beside them, until the
/// stop signal; returns once every task has ended.
async fn serve_until_stopped(
    context: &Rc<ShardContext>,
    listeners: ShardListeners,
    connections: &Arc<ConnectionCount>,
    in_flight: &Rc<InFlight>,
) {
    let watcher = crate::runtime::spawn_local(watch_for_stop(Rc::clone(context)));
    let publisher = crate::runtime::spawn_local(publish_gauges(Rc::clone(context)));
    let retention = crate::runtime::spawn_local(enforce_retention(Rc::clone(context)));
    let group_sessions = crate::runtime::spawn_local(expire_group_sessions(Rc::clone(context)));
    let replication_tasks = match listeners.replication {
        Some(listener) => start_replication(context, listener, connections, in_flight),
        None => Vec::new(),
    };
    let kafka_task = listeners.kafka.map(|listener| {
        let shared = KafkaListener {
            context: Rc::clone(context),
            connections: Arc::clone(connections),
            in_flight: Rc::clone(in_flight),
        };
        crate::runtime::spawn_local(run_kafka_listener(shared, listener))
    });
    run_listener(
        Rc::clone(context),
        listeners.client,
        ListenerKind::Client,
        Arc::clone(connections),
        Rc::clone(in_flight),
    )
    .await;
    watcher.await;
    publisher.await;
    retention.await;
    group_sessions.await;
    for task in replication_tasks.into_iter().chain(kafka_task) {
        task.await;
    }
}

/// Cluster mode: the replication listener (followers reading from this
/// shard's partitions), the follower loop (this node reading from
/// leaders) and the publisher of follower progress.
fn start_replication(
    context: &Rc<ShardContext>,
    listener: glommio::net::TcpListener,
    connections: &Arc<ConnectionCount>,
    in_flight: &Rc<InFlight>,
) -> Vec<crate::runtime::Task<()>> {
    vec![
        crate::runtime::spawn_local(run_listener(
            Rc::clone(context),
            listener,
            ListenerKind::Replication,
            Arc::clone(connections),
            Rc::clone(in_flight),
        )),
        crate::runtime::spawn_local(crate::replication::follower::run(Rc::clone(context))),
        crate::runtime::spawn_local(publish_follower_progress(Rc::clone(context))),
    ]
}

pub(super) fn bind(shard: ShardId, address: &str) -> Result<glommio::net::TcpListener, ShardError> {
    glommio::net::TcpListener::bind(address).map_err(|error| ShardError::Bind {
        shard,
        address: address.to_string(),
        source: Arc::new(error.into()),
    })
}

/// Longest a stopping shard waits for requests in flight, its own and
/// then every other shard's, before it closes its partitions anyway.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Poll the process-wide stop flag (set by the signal thread); then set the
/// shard's `stopping` latch, which stops the listeners, the connections'
/// readers, the background loops and the follower, and ends long polls.
pub(super) async fn watch_for_stop(context: Rc<ShardContext>) {
    while !STOP_REQUESTED.load(Ordering::SeqCst) {
        crate::runtime::sleep(Duration::from_millis(50)).await;
    }
    context.stopping.set();
}

/// Finish in-flight requests, then wait for every other shard to have
/// finished theirs (both within [`SHUTDOWN_WAIT`]), then close partitions
/// cleanly.
pub(super) async fn shut_down(
    setup: &ShardConfig,
    context: &Rc<ShardContext>,
    in_flight: &InFlight,
) -> Result<(), ShardError> {
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    let waited = futures_lite::future::or(
        async {
            in_flight.drained().await;
            true
        },
        async {
            crate::runtime::sleep(deadline.saturating_duration_since(Instant::now())).await;
            false
        },
    )
    .await;
    if !waited {
        tracing::warn!(target: "ringlog::node", shard = context.shard, remaining = in_flight.count(),
            "in-flight requests did not finish within 10 s; closing anyway");
    }
    setup.drained.fetch_add(1, Ordering::SeqCst);
    while setup.drained.load(Ordering::SeqCst) < setup.shards && Instant::now() < deadline {
        crate::runtime::sleep(Duration::from_millis(5)).await;
    }
    let drained = setup.drained.load(Ordering::SeqCst);
    if drained < setup.shards {
        tracing::warn!(target: "ringlog::node", shard = context.shard, drained, shards = setup.shards,
            "other shards' requests did not finish within 10 s; closing anyway");
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
                context.registry.removals(),
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
                            let outcome = crate::requests::handle_forwarded(&context, request).await;
                            context.mesh.reply(peer, id, outcome).await;
                        })
                        .detach();
                    }
                    Envelope::Reply { id, outcome } => context.mesh.complete(id, outcome),
                    Envelope::Group(call) => {
                        let now_ms = crate::runtime::clock::monotonic_ms();
                        context.groups.serve(call, &context.config.groups, now_ms);
                    }
                    Envelope::Watch(watch) => crate::requests::spawn_watch(&context, watch),
                }
            }
        }));
    }
    tasks
}
