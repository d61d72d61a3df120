//! Cross-shard messaging: one bounded single-producer channel (glommio
//! `shared_channel`) for every ordered pair of shards, built up front.
//! Requests carry an id; the owning shard answers on the reverse channel and
//! the caller's pending table completes the waiting task. No locks: each
//! channel end belongs to one executor. (glommio's `channel_mesh` is avoided
//! on purpose: it can deadlock with small contended channels, issue 555.)

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

use super::groups::GroupCall;
use super::topics::TopicMeta;
use super::ShardId;
use crate::protocol::kafka::records::{DecodeLimits, RecordsError};
use crate::protocol::{Acks, ErrorCode, ErrorResponse, Request, Response};

/// What a shard can ask another to do.
#[derive(Debug)]
pub enum ShardRequest {
    /// A client request for a partition (or topic) the receiver owns.
    Client(Request),
    /// A follower's request for partitions the receiver owns, with the
    /// topic deletions its connection had seen when it authenticated
    /// (`OwnedPartition::serves_replica_session`).
    Replica { request: Request, topic_removals_seen: u64 },
    /// A Kafka client's records for a partition the receiver owns, to
    /// transcode there and produce, signalling its placement.
    KafkaProduce(KafkaProduce),
    /// A topic the metadata shard created or deleted.
    Topic(TopicChange),
}

/// One partition's share of a Kafka Produce request, sent to the partition's
/// owner. Transcoding (CRC-32C, decoding every record, building the ringlog
/// batch) is most of a Kafka produce's CPU; done by the owner, it runs on the
/// partition's core instead of all on the core that accepted the connection
/// (`docs/KAFKA.md`, "Where the work runs").
#[derive(Debug)]
pub struct KafkaProduce {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// What the answer waits for.
    pub acks: Acks,
    /// The client's records section (a slice of its request frame).
    pub records: bytes::Bytes,
    /// Bounds on decoding them.
    pub limits: DecodeLimits,
    /// Dropped once the batch is placed, or the produce failed first.
    pub placed: PlacedSignal,
    /// Why the owner refused the records, sent before the refusal is
    /// answered: the Kafka error code depends on it (corrupt, unsupported
    /// codec or format), and no native error code says it.
    pub refused: async_channel::Sender<RecordsError>,
}

/// Held by a produce until its batch has its offsets: the holder's peer
/// (`async_channel::Receiver::recv`) returns when it is dropped. It crosses
/// shards, so it is a thread-safe channel end.
pub type PlacedSignal = async_channel::Sender<()>;

/// What the metadata shard asks every shard to do with its own partitions.
#[derive(Debug, Clone)]
pub enum TopicChange {
    /// Open the receiver's partitions of a new topic.
    Open(Arc<TopicMeta>),
    /// Close and forget the receiver's partitions of a topic.
    Drop(String),
}

/// A partition to watch: (topic, partition, offset the reader asks for next).
pub type Watched = (String, u32, u64);

/// A wait for news on partitions the receiving shard owns, without reading
/// them (a Kafka Fetch of several partitions, `requests/watch.rs`): it ends
/// when any of them has records a read would return, or an error to
/// report, when its time is up, or when the watcher stops waiting.
#[derive(Debug)]
pub struct ReadableWatch {
    /// The partitions and the offsets their reader asks for next.
    pub partitions: Vec<Watched>,
    /// How long it may wait (capped by `limits.max_fetch_wait_ms`).
    pub max_wait_ms: u32,
    /// Sent to (or dropped) when the watch ends: the watcher waits on its
    /// peer, which returns when any watch has news or every watch ended.
    pub news: async_channel::Sender<()>,
    /// Closed when the watcher stops waiting (it drops the sending end):
    /// the watch ends then, rather than waiting out its time on another
    /// shard for a reader that left.
    pub stopped: async_channel::Receiver<()>,
}

/// Result of a request: a response or a typed error.
pub type Outcome = Result<Response, ErrorResponse>;

/// A message on a cross-shard channel.
#[derive(Debug)]
pub enum Envelope {
    /// A request to execute on the receiving shard.
    Request {
        /// Caller's id for the reply.
        id: u64,
        /// The request.
        request: ShardRequest,
    },
    /// The answer to an earlier request.
    Reply {
        /// The request's id.
        id: u64,
        /// Its outcome.
        outcome: Outcome,
    },
    /// A consumer-group request for the group's coordinator shard; it
    /// carries its own reply channel (the answer may wait for a rebalance).
    Group(GroupCall),
    /// A wait for news on the receiver's partitions; it signals on its
    /// own channels.
    Watch(ReadableWatch),
}

/// Unconnected channel ends for one shard, built before the executors start.
pub struct MeshEnds {
    senders: Vec<Option<SharedSender<Envelope>>>,
    receivers: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Build the channels for `shards` shards, each `depth` messages deep.
pub fn build_mesh(shards: usize, depth: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shards)
        .map(|_| MeshEnds {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (sender, receiver) = shared_channel::new_bounded(depth);
                ends[from].senders[to] = Some(sender);
                ends[to].receivers[from] = Some(receiver);
            }
        }
    }
    ends
}

/// A shard's view of the mesh.
pub struct Mesh {
    shard: ShardId,
    senders: Vec<Option<ConnectedSender<Envelope>>>,
    pending: RefCell<HashMap<u64, async_channel::Sender<Outcome>>>,
    next_id: Cell<u64>,
}

/// Connected receiving ends, one per peer shard.
pub type Inbound = Vec<(ShardId, ConnectedReceiver<Envelope>)>;

impl Mesh {
    /// Connect this shard's ends (must run on the shard's executor).
    pub async fn connect(shard: ShardId, ends: MeshEnds) -> (Rc<Mesh>, Inbound) {
        // Each end's connect waits for its peer's: connect all of them
        // concurrently, or two shards would wait on each other forever.
        let sender_tasks: Vec<_> = ends
            .senders
            .into_iter()
            .map(|sender| {
                crate::runtime::spawn_local(async move {
                    match sender {
                        Some(sender) => Some(sender.connect().await),
                        None => None,
                    }
                })
            })
            .collect();
        let receiver_tasks: Vec<_> = ends
            .receivers
            .into_iter()
            .enumerate()
            .filter_map(|(peer, receiver)| receiver.map(|receiver| (peer, receiver)))
            .map(|(peer, receiver)| crate::runtime::spawn_local(async move { (peer, receiver.connect().await) }))
            .collect();
        let mut senders = Vec::with_capacity(sender_tasks.len());
        for task in sender_tasks {
            senders.push(task.await);
        }
        let mut inbound = Vec::with_capacity(receiver_tasks.len());
        for task in receiver_tasks {
            inbound.push(task.await);
        }
        let mesh = Mesh { shard, senders, pending: RefCell::new(HashMap::new()), next_id: Cell::new(1) };
        (Rc::new(mesh), inbound)
    }

    /// This shard's id.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Ask shard `to` to execute `request` and wait for its outcome.
    pub async fn call(&self, to: ShardId, request: ShardRequest) -> Outcome {
        let Some(sender) = self.senders.get(to).and_then(Option::as_ref) else {
            return Err(internal(format!("no channel from shard {} to shard {to}", self.shard)));
        };
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (reply_sender, reply_receiver) = async_channel::bounded(1);
        self.pending.borrow_mut().insert(id, reply_sender);
        if sender.send(Envelope::Request { id, request }).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(shutting_down());
        }
        reply_receiver.recv().await.unwrap_or_else(|_| Err(shutting_down()))
    }

    /// Send a group request to its coordinator shard `to`; the answer
    /// comes on the call's own reply channel.
    pub async fn post_group(&self, to: ShardId, call: GroupCall) -> Result<(), ErrorResponse> {
        self.post(to, Envelope::Group(call)).await
    }

    /// Start a watch of partitions shard `to` owns; it signals on its own
    /// channels.
    pub async fn post_watch(&self, to: ShardId, watch: ReadableWatch) -> Result<(), ErrorResponse> {
        self.post(to, Envelope::Watch(watch)).await
    }

    /// Send `envelope`, which answers on channels of its own, to shard `to`.
    async fn post(&self, to: ShardId, envelope: Envelope) -> Result<(), ErrorResponse> {
        let Some(sender) = self.senders.get(to).and_then(Option::as_ref) else {
            return Err(internal(format!("no channel from shard {} to shard {to}", self.shard)));
        };
        sender.send(envelope).await.map_err(|_| shutting_down())
    }

    /// Send a reply to `to` (spawned by the receiving loop).
    pub async fn reply(&self, to: ShardId, id: u64, outcome: Outcome) {
        if let Some(sender) = self.senders.get(to).and_then(Option::as_ref) {
            // The caller may be gone (shutdown); nothing else to do then.
            let _ = sender.send(Envelope::Reply { id, outcome }).await;
        }
    }

    /// Complete a pending call with its reply.
    pub fn complete(&self, id: u64, outcome: Outcome) {
        if let Some(sender) = self.pending.borrow_mut().remove(&id) {
            let _ = sender.try_send(outcome);
        }
    }

    /// Fail every pending call (shutdown).
    pub fn fail_pending(&self) {
        for (_, sender) in self.pending.borrow_mut().drain() {
            let _ = sender.try_send(Err(shutting_down()));
        }
    }
}

fn internal(message: String) -> ErrorResponse {
    ErrorResponse { code: ErrorCode::Internal, message, leader: None }
}

fn shutting_down() -> ErrorResponse {
    ErrorResponse { code: ErrorCode::ShuttingDown, message: "the node is shutting down".into(), leader: None }
}
