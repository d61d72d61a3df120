//! The follower's side of replication, one loop per data shard: connect to
//! the leader's replication listener, authenticate, mirror the leader's
//! topics (shard 0), and for each partition this shard owns: truncate any
//! divergent suffix (leader-epoch history), then read it from the local
//! durable end and append the leader's batches with their original offsets
//! and epochs. Ready partitions are read together, one `ReplicaFetchMany`
//! long poll per leader shard ("lane"), so how soon a partition's new data
//! arrives does not grow with the number of partitions. A read is sent only
//! once everything before each offset is durable here, so the read itself
//! is the acknowledgement.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::answer_body::{decode_fetched, Fetched};
use super::connection::{CallError, ReplicaConnection};
use super::divergence::{next_step, LeaderAnswer, LocalLog, Step};
use crate::protocol::{ErrorCode, ErrorResponse, ReplicaFetchPartition, ReplicaFetchedPartition, Request, Response};
use crate::runtime::Notify;
use crate::shard::context::{ShardContext, METADATA_SHARD};
use crate::shard::partitions::OwnedPartition;
use crate::shard::topic_admin::{apply_create_topic, apply_delete_topic};
use crate::shard::topics::TopicMeta;
use crate::state::cluster::Role;
use crate::storage::PartitionLog;

/// Longest a follower's read waits at the leader for new data.
const FETCH_WAIT_MS: u32 = 500;
/// How often each partition asks for the leader's consumer-group commits
/// when no read announced new ones (a safety net: the announcement is what
/// makes copying prompt).
const GROUP_OFFSETS_INTERVAL: Duration = Duration::from_secs(1);
/// Longest one copy of the commits waits for this replica's log to become
/// durable past a commit before asking the leader again.
const COMMIT_DURABLE_WAIT: Duration = Duration::from_millis(200);
/// How often shard 0 mirrors the leader's topics.
const TOPIC_SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// The leader a session follows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    leader_id: u64,
    address: String,
    node_id: u64,
    secret: Arc<Vec<u8>>,
}

fn current_target(context: &ShardContext) -> Option<Target> {
    let view = context.cluster.view();
    if view.role != Role::Follower {
        return None;
    }
    Some(Target {
        leader_id: view.leader_id?,
        address: view.leader_replication_address.clone()?,
        node_id: view.node_id?,
        secret: context.cluster.secret()?,
    })
}

/// How long a session must have run past its first topic sync for its end
/// to reset the reconnect backoff.
const SESSION_LIVED: Duration = Duration::from_secs(1);

/// A partition's replication task and whether it has finished.
type PartitionTask = (crate::runtime::Task<()>, Rc<Cell<bool>>);

/// Follow the leader whenever this node is a follower, until shutdown.
pub async fn run(context: Rc<ShardContext>) {
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    // The leader (by id) that answered `unknown_api` to TopicIncarnations:
    // it predates incarnations, and closes a connection that asks again.
    let without_incarnations = Cell::new(None::<u64>);
    while !context.stopping.is_set() {
        let Some(target) = current_target(&context) else {
            context.sleep_unless_stopping(Duration::from_millis(100)).await;
            continue;
        };
        let first_synced = Cell::new(None);
        match session(&context, &target, &without_incarnations, &first_synced).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                // A session that ran a while past its first topic sync
                // (closed by the leader after a topic deletion, say) is no
                // reason to wait longer next time; one that never got that
                // far (a leader that does not answer) is.
                if first_synced.get().is_some_and(|at: std::time::Instant| at.elapsed() >= SESSION_LIVED) {
                    backoff = Duration::from_millis(100);
                }
                let message = error.to_string();
                if message != last_error {
                    tracing::warn!(target: "ringlog::replication", shard = context.shard, leader = target.leader_id,
                        error = %message, "replication session ended; reconnecting");
                    last_error = message;
                }
                context.sleep_unless_stopping(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One connection to one leader: runs until the leader changes, this node
/// stops following, or the connection breaks.
async fn session(
    context: &Rc<ShardContext>,
    target: &Target,
    without_incarnations: &Cell<Option<u64>>,
    first_synced: &Cell<Option<std::time::Instant>>,
) -> Result<(), CallError> {
    let limits = &context.config.limits;
    let connection = Rc::new(
        ReplicaConnection::connect(
            &target.address,
            context.tls.replication_client(),
            limits.max_frame_bytes,
            limits.max_inflight_requests_per_connection,
            // A leader silent for replica_lag_max_ms would have cut this
            // follower off: it is gone for us too.
            Duration::from_millis(context.config.cluster.replica_lag_max_ms.max(u64::from(FETCH_WAIT_MS) * 2)),
        )
        .await?,
    );
    authenticate(context, &connection, target).await?;
    let fetch_set = Rc::new(FetchSet::default());
    let mut tasks: HashMap<(String, u32), PartitionTask> = HashMap::new();
    let mut lanes: HashMap<Lane, PartitionTask> = HashMap::new();
    let mut last_topic_sync = None::<std::time::Instant>;
    let mut incarnations = None;
    while !context.stopping.is_set() && !connection.is_closed() && current_target(context).as_ref() == Some(target) {
        if last_topic_sync.is_none_or(|at| at.elapsed() >= TOPIC_SYNC_INTERVAL) {
            incarnations = sync_topics(context, &connection, target, without_incarnations).await?;
            last_topic_sync = Some(std::time::Instant::now());
            first_synced.set(first_synced.get().or(last_topic_sync));
        }
        for owned in context.partitions.all() {
            let key = (owned.meta.name.clone(), owned.partition);
            if tasks.get(&key).is_some_and(|(_, finished)| !finished.get()) {
                continue;
            }
            // Not the incarnation the leader listed: shard 0 replaces it.
            if incarnations.as_ref().is_some_and(|leader| is_replaced(leader, &owned.meta)) {
                continue;
            }
            let (context, connection, fetch_set) = (Rc::clone(context), Rc::clone(&connection), Rc::clone(&fetch_set));
            let follow = follow_partition(context, connection, fetch_set, owned, target.node_id);
            tasks.insert(key, spawn_tracked(follow));
        }
        tasks.retain(|_, (_, finished)| !finished.get());
        for lane in fetch_set.lanes(limits_chunk(context)) {
            if lanes.get(&lane).is_some_and(|(_, finished)| !finished.get()) {
                continue;
            }
            let (context, connection, fetch_set) = (Rc::clone(context), Rc::clone(&connection), Rc::clone(&fetch_set));
            let target = target.clone();
            lanes.insert(
                lane,
                spawn_tracked(async move {
                    if let Err(error) = run_lane(context, connection, fetch_set, target, lane).await {
                        tracing::debug!(target: "ringlog::replication", ?lane, %error, "replication lane stopped");
                    }
                }),
            );
        }
        context.sleep_unless_stopping(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The handshake: hello, the leader's challenge, our proof of the secret.
async fn authenticate(
    context: &ShardContext,
    connection: &ReplicaConnection,
    target: &Target,
) -> Result<(), CallError> {
    let challenge = match connection.call(&Request::ReplicaHello { node_id: target.node_id }).await? {
        Response::ReplicaChallenge { nonce } => nonce,
        other => return Err(CallError::Connection(format!("unexpected answer to hello: {other:?}"))),
    };
    let proof = super::auth::proof(&target.secret, &challenge, target.node_id);
    connection.call(&Request::ReplicaAuth { proof }).await?;
    tracing::info!(target: "ringlog::replication", shard = context.shard, leader = target.leader_id,
        "following the leader");
    Ok(())
}

fn limits_chunk(context: &ShardContext) -> usize {
    context.config.replica_read_partitions()
}

/// Spawn `work` with a flag that says when it has finished.
fn spawn_tracked(work: impl std::future::Future<Output = ()> + 'static) -> PartitionTask {
    let finished = Rc::new(Cell::new(false));
    let done = Rc::clone(&finished);
    let task = crate::runtime::spawn_local(async move {
        work.await;
        done.set(true);
    });
    (task, finished)
}

/// Learn the leader's topic incarnations (not from a leader known to
/// predate them) and, on shard 0, mirror its topics.
async fn sync_topics(
    context: &Rc<ShardContext>,
    connection: &ReplicaConnection,
    target: &Target,
    without_incarnations: &Cell<Option<u64>>,
) -> Result<Option<Incarnations>, CallError> {
    let incarnations = match without_incarnations.get() == Some(target.leader_id) {
        true => None,
        false => leader_incarnations(connection).await?,
    };
    if incarnations.is_none() {
        without_incarnations.set(Some(target.leader_id));
    }
    if context.shard == METADATA_SHARD {
        mirror_topics(context, connection, incarnations.as_ref()).await?;
    }
    Ok(incarnations)
}

/// The incarnation of each of the leader's topics; None from a leader
/// that predates incarnations (it answers `unknown_api` and closes the
/// connection; the next session does not ask it again), whose topics are
/// known by name alone.
async fn leader_incarnations(connection: &ReplicaConnection) -> Result<Option<Incarnations>, CallError> {
    match connection.call(&Request::TopicIncarnations).await {
        Ok(Response::TopicIncarnations(topics)) => Ok(Some(topics.into_iter().collect())),
        Ok(other) => Err(CallError::Connection(format!("unexpected answer to topic incarnations: {other:?}"))),
        Err(CallError::Refused(refusal)) if refusal.code == ErrorCode::UnknownApi => Ok(None),
        Err(error) => Err(error),
    }
}

/// (topic, incarnation) of the leader's topics.
type Incarnations = HashMap<String, u64>;

/// Whether the leader's topic of `meta`'s name is another incarnation, or
/// was not the leader's when it told its incarnations (deleted, and maybe
/// created again since). Such a partition is not followed until shard 0's
/// mirror has replaced or removed it: its reads, from this copy's end,
/// would acknowledge records of another topic. (Once this connection has
/// learned the incarnations, the leader serves it nothing of a topic
/// deleted and created again after: `OwnedPartition::serves_replica_session`.)
fn is_replaced(leader: &Incarnations, meta: &TopicMeta) -> bool {
    leader.get(&meta.name) != Some(&meta.incarnation)
}

/// Whether the leader lists `meta`'s name with another incarnation: it was
/// deleted and created again, and the local copy must go.
fn is_listed_as_another(leader: &Incarnations, meta: &TopicMeta) -> bool {
    leader.get(&meta.name).is_some_and(|told| *told != meta.incarnation)
}

/// The incarnation to create a mirror of the leader's topic `name` with:
/// the leader's, or 0 from a leader that predates incarnations (name
/// alone). None for a topic the leader created after it told its
/// incarnations: it is mirrored at the next sync, which knows it (created
/// with 0 now, it would be another incarnation then, deleted and copied
/// again).
fn incarnation_to_mirror(incarnations: Option<&Incarnations>, name: &str) -> Option<u64> {
    match incarnations {
        Some(leader) => leader.get(name).copied(),
        None => Some(0),
    }
}

/// Create and delete local topics so they match the leader's; a local
/// topic that is another incarnation of a leader's (see [`is_replaced`])
/// goes like one the leader no longer has, and is created again.
async fn mirror_topics(
    context: &Rc<ShardContext>,
    connection: &ReplicaConnection,
    incarnations: Option<&Incarnations>,
) -> Result<(), CallError> {
    let Response::TopicConfigs(topics) = connection.call(&Request::TopicConfigs).await? else {
        return Err(CallError::Connection("unexpected answer to topic configs".into()));
    };
    let leader_names: std::collections::HashSet<&str> = topics.iter().map(|(name, _)| name.as_str()).collect();
    let local: Vec<Arc<TopicMeta>> = context.registry.snapshot().values().cloned().collect();
    for meta in &local {
        let name = &meta.name;
        // Not followed while missing from the incarnations (`is_replaced`),
        // but removed only once they list another: a name missing from them
        // and in the configs was deleted and created again, or put back
        // after a failed deletion, between the two answers; the next poll
        // tells which.
        let another = incarnations.is_some_and(|leader| is_listed_as_another(leader, meta));
        if leader_names.contains(name.as_str()) && !another {
            continue;
        }
        match apply_delete_topic(context, name).await {
            Ok(_) if leader_names.contains(name.as_str()) => {
                tracing::warn!(target: "ringlog::replication", topic = %name,
                "topic deleted and created again on the leader; removed to be mirrored afresh")
            }
            Ok(_) => {
                tracing::info!(target: "ringlog::replication", topic = %name, "topic deleted on the leader; removed")
            }
            Err(error) => tracing::warn!(target: "ringlog::replication", topic = %name, message = %error.message,
                "cannot remove topic"),
        }
    }
    for (name, settings) in &topics {
        if context.registry.get(name).is_none() {
            let Some(incarnation) = incarnation_to_mirror(incarnations, name) else {
                tracing::debug!(target: "ringlog::replication", topic = %name,
                    "topic newer than the incarnations asked; mirrored at the next sync");
                continue;
            };
            match apply_create_topic(context, name, settings, Some(incarnation)).await {
                Ok(_) => {
                    tracing::info!(target: "ringlog::replication", topic = %name, "mirrored topic from the leader")
                }
                Err(error) => tracing::warn!(target: "ringlog::replication", topic = %name, message = %error.message,
                    "cannot mirror topic"),
            }
        }
    }
    Ok(())
}

/// Make one partition ready to read (forgotten-node resync, divergence
/// check), put it in the session's fetch set, and keep its consumer-group
/// commits copied; a lane that evicts it (the leader refused it, or an
/// answer could not be applied) ends this task, and the session starts it
/// again, which checks divergence again and copies the commits afresh.
async fn follow_partition(
    context: Rc<ShardContext>,
    connection: Rc<ReplicaConnection>,
    fetch_set: Rc<FetchSet>,
    owned: Rc<OwnedPartition>,
    replica_id: u64,
) {
    let topic = owned.meta.name.clone();
    let partition = owned.partition;
    let key = (topic.clone(), partition);
    let outcome = async {
        // What an ended session left running lands before anything is checked.
        owned.log.detached_changes_settled().await;
        resync_if_forgotten(&context, &owned).await?;
        truncate_divergence(&connection, &owned, &topic, partition).await?;
        // A leader without commit replication answers `unknown_api` here,
        // before any read whose answer layout it does not share is sent.
        let probe = Request::ReplicaGroupOffsets { replica_id, topic: topic.clone(), partition, stored_version: 0 };
        connection.call(&probe).await?;
        let evicted = fetch_set.insert(key.clone(), Rc::clone(&owned));
        let follow = FollowedPartition { context: &context, fetch_set: &fetch_set, owned: &owned, key: &key };
        copy_commits(&connection, follow, &evicted, replica_id).await
    }
    .await;
    fetch_set.evict(&key, &owned);
    if let Err(error) = outcome {
        tracing::debug!(target: "ringlog::replication", %topic, partition, %error, "partition replication stopped");
    }
}

/// One partition this follower shard follows, with what tells whether it
/// still does.
#[derive(Clone, Copy)]
struct FollowedPartition<'a> {
    context: &'a ShardContext,
    fetch_set: &'a FetchSet,
    owned: &'a Rc<OwnedPartition>,
    key: &'a PartitionKey,
}

impl FollowedPartition<'_> {
    /// Still this shard's open partition, and still read in this session.
    fn open(&self) -> bool {
        still_open(self.context, self.owned, &self.key.0, self.key.1) && self.fetch_set.holds(self.key, self.owned)
    }
}

/// Keep the partition's consumer-group commits copied from the leader
/// while it is followed: at once (a new session starts from nothing), then
/// as soon as a read's answer announces a new commit version, and at least
/// every [`GROUP_OFFSETS_INTERVAL`]. Each call acknowledges the version
/// stored durably before it, which is what releases the leader's waiting
/// commits, so a stored copy is acknowledged at once.
async fn copy_commits(
    connection: &ReplicaConnection,
    follow: FollowedPartition<'_>,
    evicted: &Notify,
    replica_id: u64,
) -> Result<(), CallError> {
    let commits = &follow.owned.replication.commits;
    // Versions are the leader process's: nothing stored from it yet.
    let mut stored_version = 0;
    loop {
        let announced = commits.learned_changed.notified();
        let learned = commits.learned();
        let (topic, partition) = (follow.key.0.clone(), follow.key.1);
        let request = Request::ReplicaGroupOffsets { replica_id, topic, partition, stored_version };
        let Response::ReplicaGroupOffsets { version, groups } = connection.call(&request).await? else {
            return Err(CallError::Connection("unexpected answer to replica group offsets".into()));
        };
        if version != stored_version {
            if store_commits(follow, &groups).await? {
                stored_version = version;
            }
            // Acknowledge at once, or ask again after the bounded wait for
            // this log to become durable past a commit.
            if !follow.open() {
                return Ok(());
            }
            continue;
        }
        if commits.learned() == learned && follow.open() {
            let sleep = crate::runtime::sleep(GROUP_OFFSETS_INTERVAL);
            futures_lite::future::or(futures_lite::future::or(evicted.notified(), announced), sleep).await;
        }
        if !follow.open() {
            return Ok(());
        }
    }
}

/// The partitions a follower shard reads, ready (divergence checked), and
/// the leader's shard count: partitions are read in lanes, one long poll
/// per leader shard (and per `replica_fetch_max_partitions` of them), so
/// each lane's read can wait on the one leader shard that owns them.
#[derive(Default)]
struct FetchSet {
    partitions: RefCell<BTreeMap<PartitionKey, Followed>>,
    leader_shards: Cell<usize>,
}

/// (topic, partition).
type PartitionKey = (String, u32);

/// A ready partition and what fires when it is evicted.
type Followed = (Rc<OwnedPartition>, Rc<Notify>);

/// A lane: (leader shard, chunk).
type Lane = (usize, usize);

impl FetchSet {
    /// Add a ready partition; the notify fires when it is evicted.
    fn insert(&self, key: (String, u32), owned: Rc<OwnedPartition>) -> Rc<Notify> {
        let evicted = Rc::new(Notify::new());
        self.partitions.borrow_mut().insert(key, (owned, Rc::clone(&evicted)));
        evicted
    }

    fn holds(&self, key: &(String, u32), owned: &Rc<OwnedPartition>) -> bool {
        self.partitions.borrow().get(key).is_some_and(|(held, _)| Rc::ptr_eq(held, owned))
    }

    /// Stop reading a partition until its task has checked it again.
    fn evict(&self, key: &(String, u32), owned: &Rc<OwnedPartition>) {
        if self.holds(key, owned) {
            if let Some((_, evicted)) = self.partitions.borrow_mut().remove(key) {
                evicted.notify_all();
            }
        }
    }

    fn lane_of(&self, key: &(String, u32)) -> usize {
        crate::shard::owner_of(&key.0, key.1, self.leader_shards.get().max(1))
    }

    /// Every lane with partitions in it.
    fn lanes(&self, chunk: usize) -> std::collections::BTreeSet<Lane> {
        let mut counts = BTreeMap::<usize, usize>::new();
        for key in self.partitions.borrow().keys() {
            *counts.entry(self.lane_of(key)).or_default() += 1;
        }
        counts
            .into_iter()
            .flat_map(|(shard, count)| (0..count.div_ceil(chunk)).map(move |index| (shard, index)))
            .collect()
    }

    /// The partitions of `lane` now, in key order.
    fn members(&self, (shard, index): Lane, chunk: usize) -> Vec<((String, u32), Rc<OwnedPartition>)> {
        let partitions = self.partitions.borrow();
        let in_shard = partitions.iter().filter(|(key, _)| self.lane_of(key) == shard);
        in_shard.skip(index * chunk).take(chunk).map(|(key, (owned, _))| (key.clone(), Rc::clone(owned))).collect()
    }
}

/// Read one lane's partitions from the leader until the lane is empty or
/// the connection fails: each read names every partition's durable end
/// (waiting for durability first: the read acknowledges it), and the
/// leader answers the ones with news.
async fn run_lane(
    context: Rc<ShardContext>,
    connection: Rc<ReplicaConnection>,
    fetch_set: Rc<FetchSet>,
    target: Target,
    lane: Lane,
) -> Result<(), CallError> {
    let config = &context.config;
    let mut buffer = Vec::new();
    loop {
        let members = fetch_set.members(lane, config.replica_read_partitions());
        if members.is_empty() || connection.is_closed() {
            return Ok(());
        }
        let (wanted, members) = read_positions(&context, &fetch_set, members).await;
        if wanted.is_empty() {
            continue;
        }
        let offsets: Vec<u64> = wanted.iter().map(|wanted| wanted.offset).collect();
        let request = Request::ReplicaFetchMany {
            replica_id: target.node_id,
            max_wait_ms: FETCH_WAIT_MS,
            max_bytes: config.replica_read_bytes() as u32,
            partition_max_bytes: config.replica_read_partition_bytes() as u32,
            partitions: wanted,
        };
        let Response::ReplicaFetchMany { leader_shards, partitions: answered, .. } = connection.call(&request).await?
        else {
            return Err(CallError::Connection("unexpected answer to a multi-partition fetch".into()));
        };
        // An answer that arrives after this node stopped following that
        // leader (it may lead now) must not be applied.
        if current_target(&context).as_ref() != Some(&target) {
            return Ok(());
        }
        fetch_set.leader_shards.set(usize::from(leader_shards).max(1));
        let mut previous = None;
        for fetched in answered {
            let index = fetched.index as usize;
            if previous.is_some_and(|previous| index <= previous) || index >= members.len() {
                return Err(CallError::Connection(format!("answer names partition {index} out of order or range")));
            }
            previous = Some(index);
            let (key, owned) = &members[index];
            // Evicted since the read was sent: its task checks it again first.
            if !fetch_set.holds(key, owned) {
                continue;
            }
            if let Err(error) = apply_fetched(&context, owned, offsets[index], fetched, &mut buffer).await {
                tracing::debug!(target: "ringlog::replication", topic = %key.0, partition = key.1, %error,
                    "partition read refused; checking it again");
                fetch_set.evict(key, owned);
            }
        }
    }
}

/// What one read asks for each member: its durable end (waited for) and
/// the high watermark it knows. A partition that closed or failed leaves.
async fn read_positions(
    context: &ShardContext,
    fetch_set: &FetchSet,
    members: Vec<((String, u32), Rc<OwnedPartition>)>,
) -> (Vec<ReplicaFetchPartition>, Vec<((String, u32), Rc<OwnedPartition>)>) {
    let mut wanted = Vec::with_capacity(members.len());
    let mut kept = Vec::with_capacity(members.len());
    for (key, owned) in members {
        let open = || still_open(context, &owned, &key.0, key.1) && fetch_set.holds(&key, &owned);
        match durable_end(&owned.log, open).await {
            Ok(offset) => {
                // None until an established leader told it one: then any
                // value the leader has established is news.
                let high_watermark = owned.replication.established_high_watermark();
                wanted.push(ReplicaFetchPartition { topic: key.0.clone(), partition: key.1, offset, high_watermark });
                kept.push((key, owned));
            }
            Err(_) => fetch_set.evict(&key, &owned),
        }
    }
    (wanted, kept)
}

/// Apply one partition's part of an answer to a read from `offset`.
async fn apply_fetched(
    context: &ShardContext,
    owned: &OwnedPartition,
    offset: u64,
    fetched: ReplicaFetchedPartition,
    buffer: &mut Vec<u8>,
) -> Result<(), CallError> {
    if fetched.error != ErrorCode::None {
        return Err(CallError::Refused(ErrorResponse {
            code: fetched.error,
            message: "refused in a multi-partition read".into(),
            leader: None,
        }));
    }
    // New commits on the leader: the partition's task copies them now.
    owned.replication.commits.learn(fetched.commit_version);
    // Another lane's read (the lanes were just redrawn) applied it already.
    if owned.log.snapshot().log_end_offset != offset {
        return Ok(());
    }
    if fetched.log_start_offset > offset {
        return reset_behind_leader(owned, offset, fetched.log_start_offset).await;
    }
    apply(context, owned, offset, fetched.uncompressed_bytes, fetched.body, buffer).await?;
    owned.replication.learn_high_watermark(fetched.high_watermark);
    Ok(())
}

/// Wait until everything in the log is durable, and return that end: the
/// offset of a read acknowledges everything before it, so it must never
/// pass what this node made durable, whatever an earlier session (cut off
/// while it waited for the disk) left written but unsynced.
async fn durable_end(log: &PartitionLog, still_open: impl Fn() -> bool) -> Result<u64, CallError> {
    loop {
        // A deleted topic's log is closed: its wait returns at once without
        // yielding and nothing more becomes durable, so waiting again would
        // spin this shard's executor forever.
        if !still_open() {
            return Err(CallError::Connection(format!("{} was closed", log.dir().display())));
        }
        let snapshot = log.snapshot();
        if let Some(failure) = snapshot.failure {
            return Err(CallError::Connection(format!("partition failed: {failure}")));
        }
        if snapshot.durable_end_offset >= snapshot.log_end_offset {
            return Ok(snapshot.durable_end_offset);
        }
        log.wait_durable_past(snapshot.durable_end_offset).await;
    }
}

/// Whether `owned` is still this shard's open partition: a deleted (or
/// deleted and created again) topic's old log is closed.
fn still_open(context: &ShardContext, owned: &OwnedPartition, topic: &str, partition: u32) -> bool {
    context.partitions.get(topic, partition).is_some_and(|current| std::ptr::eq(Rc::as_ptr(&current), owned))
}

/// Decompress, verify and append the leader's batches; the next read waits
/// until they are durable (it acknowledges them).
async fn apply(
    context: &ShardContext,
    owned: &OwnedPartition,
    offset: u64,
    uncompressed_bytes: u32,
    body: bytes::Bytes,
    buffer: &mut Vec<u8>,
) -> Result<(), CallError> {
    let limit = context.config.limits.max_frame_bytes;
    // Data already in the leader's log may exceed today's max_batch_bytes
    // (an admission limit for new appends): only the format and this
    // answer's own size bound a batch.
    let max_batch_bytes = crate::storage::batch::FORMAT_MAX_BATCH_BYTES.min(limit);
    let fetched = decode_fetched(uncompressed_bytes, &body, limit, max_batch_bytes, buffer)
        .map_err(|error| CallError::Connection(format!("bad answer from the leader at {offset}: {error}")))?;
    let batches = match fetched {
        Fetched::Raw => &body[..],
        Fetched::Decompressed(length) => &buffer[..length],
    };
    // Each batch is appended by a task of its own that runs to its end
    // (the session's end cancels this one): shared from the answer, or
    // copied out of the reused decompression buffer.
    let batch_at = |start: usize, end: usize| match fetched {
        Fetched::Raw => body.slice(start..end),
        Fetched::Decompressed(_) => bytes::Bytes::copy_from_slice(&batches[start..end]),
    };
    let mut position = 0;
    let mut next_offset = offset;
    let mut latest_epoch = owned.log.snapshot().leader_epoch;
    while position < batches.len() {
        // One step of the one header walk (decode_fetched walked it whole).
        let header = match crate::storage::batch::HeaderWalk::new(batches, position).next() {
            Some(Ok((_, header))) => header,
            Some(Err((_, error))) => return Err(CallError::Connection(format!("batch at {next_offset}: {error}"))),
            None => return Err(CallError::Connection(format!("batch at {next_offset}: truncated header"))),
        };
        // Epochs only grow along a log: an older one after ours means the
        // logs diverge, and the divergence check runs again on reconnection.
        if latest_epoch.is_some_and(|latest| header.leader_epoch < latest) {
            return Err(CallError::Connection(format!(
                "batch at {next_offset} has leader epoch {}, older than this log's {latest_epoch:?}",
                header.leader_epoch
            )));
        }
        latest_epoch = Some(header.leader_epoch);
        context.cluster.note_local_epoch(header.leader_epoch);
        let end = position + header.batch_bytes as usize;
        let info = owned
            .log
            .append_replica_placed(batch_at(position, end))
            .await
            .map_err(|error| CallError::Connection(format!("cannot append at {next_offset}: {error}")))?;
        next_offset = info.next_offset;
        position = end;
    }
    Ok(())
}

/// Store the leader's commits of a partition durably; true once every one
/// is stored. A commit beyond what this replica holds durably waits (up to
/// [`COMMIT_DURABLE_WAIT`]) for the log to become durable past it: stored
/// now, a crash would latch it out of range (SPEC §2).
async fn store_commits(follow: FollowedPartition<'_>, groups: &[(String, u64)]) -> Result<bool, CallError> {
    let log = &follow.owned.log;
    let deadline = std::time::Instant::now() + COMMIT_DURABLE_WAIT;
    loop {
        let local: HashMap<String, u64> = log.committed_offsets().into_iter().collect();
        let durable_end_offset = log.snapshot().durable_end_offset;
        let (mut beyond, mut stored_any) = (false, false);
        for &(ref group, offset) in groups {
            if local.get(group) == Some(&offset) {
                continue;
            }
            if offset > durable_end_offset {
                beyond = true;
                continue;
            }
            log.commit_offset(group, offset)
                .await
                .map_err(|error| CallError::Connection(format!("cannot store group {group}'s offset: {error}")))?;
            stored_any = true;
        }
        if stored_any {
            // This store changed: were this node to lead, it is news.
            follow.owned.replication.note_commit();
        }
        if let Some(failure) = log.snapshot().failure {
            // Its waits return at once: asking again would spin.
            return Err(CallError::Connection(format!("partition failed: {failure}")));
        }
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        // A closed log's wait returns at once too: the caller sees it closed.
        if !beyond || remaining.is_zero() || !follow.open() {
            return Ok(!beyond);
        }
        futures_lite::future::or(log.wait_durable_past(durable_end_offset), crate::runtime::sleep(remaining)).await;
    }
}

/// Most rounds of the divergence check: each round that does not settle
/// cuts at least one local epoch, so this bounds a hostile leader only.
const MAX_DIVERGENCE_ROUNDS: usize = 1024;

/// Cut every record the leader does not have (KIP-279, see
/// [`super::divergence`]): ask where this log's latest epoch ends at the
/// leader, truncate, and ask again until both sides name the same epoch.
async fn truncate_divergence(
    connection: &ReplicaConnection,
    owned: &OwnedPartition,
    topic: &str,
    partition: u32,
) -> Result<(), CallError> {
    for _ in 0..MAX_DIVERGENCE_ROUNDS {
        let epochs = owned.log.epochs();
        let Some(epoch) = epochs.latest_epoch() else { return Ok(()) };
        let request = Request::EpochEndOffset { topic: topic.to_string(), partition, epoch };
        let Response::EpochEndOffset { epoch: leader_epoch, end_offset, log_start_offset } =
            connection.call(&request).await?
        else {
            return Err(CallError::Connection("unexpected answer to epoch end offset".into()));
        };
        // The call awaited: read the log afresh, and only decide on the
        // epoch history the question was asked with.
        let local = owned.log.snapshot();
        let epochs = owned.log.epochs();
        if epochs.latest_epoch() != Some(epoch) {
            continue;
        }
        let log = LocalLog {
            epochs: &epochs,
            log_start_offset: local.log_start_offset,
            log_end_offset: local.log_end_offset,
        };
        let answer = LeaderAnswer { epoch: leader_epoch, end_offset, log_start_offset };
        let step = next_step(log, epoch, answer).map_err(|error| CallError::Connection(error.to_string()))?;
        match step {
            Step::Agreed => return Ok(()),
            Step::Reset(offset) => return reset_behind_leader(owned, local.log_end_offset, offset).await,
            Step::Truncate { to, ask_again } => {
                tracing::warn!(target: "ringlog::replication", topic, partition, epoch, ?leader_epoch,
                    from = local.log_end_offset, to, "truncating a divergent suffix the leader does not have");
                owned.log.truncate_to(to).await.map_err(|error| {
                    CallError::Connection(format!("cannot truncate {topic}/{partition} to {to}: {error}"))
                })?;
                if !ask_again {
                    return Ok(());
                }
            }
        }
    }
    Err(CallError::Connection(format!("{topic}/{partition}: the divergence check did not settle")))
}

/// This node's id was forgotten and it took a new one: nothing in its logs
/// is trusted (SPEC §5). The partition starts over empty, at the high
/// watermark it already showed consumers (never lower: that must not fall)
/// or its log start, and fetches everything after from the leader.
async fn resync_if_forgotten(context: &ShardContext, owned: &OwnedPartition) -> Result<(), CallError> {
    let wanted = context.cluster.resync_generation();
    if owned.replication.resynced_generation() >= wanted {
        return Ok(());
    }
    let snapshot = owned.log.snapshot();
    // An empty log (a topic mirrored since) has nothing to distrust. The
    // log starts over where it started (a leader whose log starts later
    // answers so, and the partition resets to that), and every record is
    // fetched again: started at the high watermark its consumers were
    // shown, it joined the ISR without the records before it. Consumers
    // are shown no high watermark until it is back there (it never falls).
    if snapshot.log_end_offset > snapshot.log_start_offset {
        reset_behind_leader(owned, snapshot.log_end_offset, snapshot.log_start_offset).await?;
    }
    owned.replication.set_resynced_generation(wanted);
    Ok(())
}

/// The leader no longer has the records after this log's end (retention):
/// start this partition over at the leader's log start.
async fn reset_behind_leader(owned: &OwnedPartition, local_end: u64, leader_start: u64) -> Result<(), CallError> {
    tracing::warn!(target: "ringlog::replication", dir = %owned.log.dir().display(), local_end, leader_start,
        "too far behind the leader: resynchronising this partition from scratch");
    owned
        .log
        .reset_to(leader_start)
        .await
        .map_err(|error| CallError::Connection(format!("cannot reset to {leader_start}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::BatchBuilder;
    use crate::storage::AppendMode;

    #[test]
    fn a_topic_is_followed_only_while_the_leader_told_its_incarnation() {
        let meta = TopicMeta { incarnation: 7, ..TopicMeta::for_tests("t", 1) };
        let told = |incarnation: u64| -> Incarnations { [("t".to_string(), incarnation)].into_iter().collect() };
        assert!(!is_replaced(&told(7), &meta));
        assert!(is_replaced(&told(8), &meta), "created again");
        assert!(is_replaced(&Incarnations::new(), &meta), "deleted, maybe created again since it was told");
        // Removed only once another incarnation is listed: a name missing
        // may be one put back after a failed deletion.
        assert!(is_listed_as_another(&told(8), &meta));
        assert!(!is_listed_as_another(&Incarnations::new(), &meta));
        assert!(!is_listed_as_another(&told(7), &meta));
    }

    #[test]
    fn a_topic_newer_than_the_incarnations_asked_is_mirrored_at_the_next_sync_not_with_incarnation_zero() {
        let leader: Incarnations = [("known".to_string(), 7u64)].into_iter().collect();
        assert_eq!(incarnation_to_mirror(Some(&leader), "known"), Some(7));
        assert_eq!(incarnation_to_mirror(Some(&leader), "created-since"), None, "waits for the next sync");
        assert_eq!(incarnation_to_mirror(None, "any"), Some(0), "a leader before incarnations: name alone");
    }

    #[test]
    fn waiting_for_a_log_closed_under_the_follower_ends_instead_of_spinning_the_shard() {
        let (sender, receiver) = std::sync::mpsc::channel();
        // A spinning task never yields, so only another thread can notice.
        std::thread::spawn(move || {
            let outcome = crate::runtime::block_on_executor("closed-durable-wait", || async {
                let dir = tempfile::tempdir().unwrap();
                let log = Rc::new(PartitionLog::open(dir.path(), Default::default(), None).await.unwrap());
                let mut builder = BatchBuilder::new();
                builder.push(1, None, b"value", &[]);
                let mut batch = builder.finish().to_vec();
                let _placed = log.append_placed(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
                // The topic is deleted: the shard forgets the partition, then closes its log.
                let open = Rc::new(Cell::new(true));
                let (closing, closing_open) = (Rc::clone(&log), Rc::clone(&open));
                let closer = crate::runtime::spawn_local(async move {
                    closing_open.set(false);
                    closing.abandon().await;
                });
                crate::runtime::yield_now().await;
                let outcome = durable_end(&log, || open.get()).await.map_err(|error| error.to_string());
                closer.await;
                outcome
            });
            let _ = sender.send(outcome.unwrap());
        });
        let outcome = receiver.recv_timeout(Duration::from_secs(20)).expect("the wait spun on the closed log");
        assert!(outcome.is_err(), "{outcome:?}");
    }
}
