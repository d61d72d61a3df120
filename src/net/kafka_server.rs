//! The Kafka listener of one shard (SPEC §10): every shard binds
//! `kafka_listen` with SO_REUSEPORT like the client listener, reads
//! length-prefixed Kafka frames (the length checked against
//! `limits.max_frame_bytes` before anything is allocated), and serves a
//! connection's requests in the order they arrived, as a Kafka broker
//! does: clients rely on it (two Produce requests in flight to one
//! partition land in the order sent). A request starts once the one before
//! it is done, except after a Produce: the next starts as soon as the
//! Produce before that one is placed, each batch waiting only for the
//! batch sent before it to its partition (`requests::kafka::placements`),
//! while the Produce waits for its acks — so a client's pipelined produces
//! keep both cores and the disk busy, as the native protocol's do, and
//! still land in order. The next frame is read meanwhile
//! (`kafka_frames`). A writer task sends the answers in the order of the
//! requests; at most
//! `limits.max_inflight_requests_per_connection` wait for it.
//!
//! With `[auth]` on, a connection authenticates first
//! (`requests::kafka::sasl`); its requests then carry its principal.
//!
//! Kafka's framing has no error reply for a request that cannot be read
//! (bad length, unknown API, unsupported version, a body that does not
//! decode): the connection is closed, the node serves everyone else.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};

use crate::protocol::kafka::KafkaRequest;
use crate::protocol::kafka::{decode_request, KafkaFrameError};
use crate::requests::kafka::placements::Placements;
use crate::requests::kafka::sasl::{self, KafkaAuthentication, Step};
use crate::requests::kafka::{handle, Access, KafkaOutcome};
use crate::security::acl::Principal;
use crate::security::FailureLimiter;
use crate::shard::context::ShardContext;
use crate::state::metrics::ConnectionCount;

use super::accept::{next_connection, AcceptGate};
use super::answer_budget::AnswerBudget;
use super::kafka_frames::FrameReader;
use super::server::InFlight;
use super::server::{accept_and_split, count_stall, write_frame};
use crate::security::settings::Listener;
use crate::security::stream::{ReadHalf, WriteHalf};

/// How long a closing connection's writer may take to deliver the answers
/// already owed before the socket is shut under it.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What a Kafka listener shares with its shard.
pub struct KafkaListener {
    /// The shard's context (its `stopping` latch ends the listener).
    pub context: Rc<ShardContext>,
    /// Open connections across shards and listeners (`limits.max_connections`).
    pub connections: Arc<ConnectionCount>,
    /// Requests running on this shard (shutdown waits for them).
    pub in_flight: Rc<InFlight>,
}

/// Serve Kafka clients on `listener` until the node stops.
pub async fn run_kafka_listener(shared: KafkaListener, listener: TcpListener) {
    let shared = Rc::new(shared);
    let limit = shared.context.config.limits.max_connections;
    let gate = AcceptGate { stopping: &shared.context.stopping, connections: &shared.connections, limit };
    let limiter = shared.context.config.auth.enabled.then(|| sasl::limiter(&shared.context));
    while let Some((stream, admitted)) = next_connection(&listener, &gate).await {
        let connection = Rc::clone(&shared);
        let limiter = limiter.clone();
        crate::runtime::spawn_local(async move {
            serve(&connection, stream, limiter).await;
            drop(admitted);
        })
        .detach();
    }
}

/// One connection: this task reads and starts requests; a writer task
/// awaits them in order and writes their answers.
async fn serve(shared: &Rc<KafkaListener>, stream: TcpStream, limiter: Option<Rc<RefCell<FailureLimiter>>>) {
    let peer = stream.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |address| address.ip());
    // A Kafka listener with TLS configured accepts TLS connections only.
    let tls = shared.context.tls.server(Listener::Kafka).is_some();
    let Some((mut reader, writer, _certificate)) = accept_and_split(&shared.context, Listener::Kafka, stream).await
    else {
        return;
    };
    let mut authentication = limiter.map(|limiter| KafkaAuthentication::new(peer, tls, limiter));
    let socket = writer.raw_fd();
    let depth = shared.context.config.limits.max_inflight_requests_per_connection;
    let (sender, receiver) = local_channel::new_bounded::<Owed>(depth);
    let answers = Rc::new(AnswerBudget::new(shared.context.config.limits.max_answer_bytes_per_connection));
    let connections = Arc::clone(&shared.context.metrics.connections);
    let writer = crate::runtime::spawn_local(write_answers(receiver, writer, socket, Rc::clone(&answers), connections));
    let connection = Connection { reader: &mut reader, sender: &sender, answers };
    if let Err(reason) = read_requests(shared, connection, authentication.as_mut()).await {
        tracing::debug!(target: "ringlog::kafka", %reason, "closing kafka connection");
    }
    drop(sender);
    let mut writer = writer;
    if !crate::runtime::finished_within(&mut writer, CLOSE_GRACE).await {
        shut_down(socket);
        writer.await;
    }
}

/// Why a connection's read loop ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadEnd {
    #[error("peer closed or the socket failed")]
    Closed,
    #[error("node stopping")]
    Stopping,
    #[error(transparent)]
    BadInput(#[from] KafkaFrameError),
    #[error("no authentication within {0} ms")]
    Unauthenticated(u64),
}

/// What a connection's reader works with.
struct Connection<'a> {
    reader: &'a mut ReadHalf,
    /// The answers owed, in request order, to the writer.
    sender: &'a LocalSender<Owed>,
    answers: Rc<AnswerBudget>,
}

/// Read frames and start their requests in order, until the peer leaves,
/// bad input arrives, or the node stops. A request runs in its own task to
/// its end: nothing cancels it half-way (a Produce dropped between placing
/// its batch and counting it would leave the partition's writer
/// inconsistent), and the next request starts when it releases the
/// connection ([`handle`]). The bounded channel holds the answers the
/// writer has not sent yet: a full one stops reading, and so do answers
/// of more than `limits.max_answer_bytes_per_connection` the client has
/// not read.
async fn read_requests(
    shared: &Rc<KafkaListener>,
    connection: Connection<'_>,
    mut authentication: Option<&mut KafkaAuthentication>,
) -> Result<(), ReadEnd> {
    let Connection { reader, sender, answers } = connection;
    // One deadline from accept to a completed authentication: an anonymous
    // peer may not hold a connection slot (shared with followers) by
    // sending nothing, or ApiVersions now and then.
    let timeout = Duration::from_millis(shared.context.config.auth.authentication_timeout_ms);
    let deadline = std::time::Instant::now() + timeout;
    let mut frames = FrameReader::default();
    let placements = Rc::new(Placements::default());
    loop {
        let configured = shared.context.config.limits.max_frame_bytes;
        let limit = authentication.as_ref().map_or(configured, |authentication| authentication.frame_limit(configured));
        let authenticated = authentication.as_ref().is_none_or(|authentication| authentication.is_authenticated());
        let frame = match authenticated {
            true => frames.next(shared, reader, limit).await?,
            false => {
                let expired = async {
                    crate::runtime::sleep(deadline.saturating_duration_since(std::time::Instant::now())).await;
                    Err(ReadEnd::Unauthenticated(timeout.as_millis() as u64))
                };
                futures_lite::future::or(frames.next(shared, reader, limit), expired).await?
            }
        };
        let request = decode_request(frame)?;
        // Kafka requests run one at a time: an answer's size is known when
        // it is encoded, and what waits here is the answers before it.
        match answers.reserve_or_stop(0, &shared.context.stopping).await {
            Some(true) => {}
            Some(false) => return Err(ReadEnd::Closed),
            None => return Err(ReadEnd::Stopping),
        }
        let step = match authentication.as_deref_mut() {
            None => Step::Serve(request, None),
            Some(authentication) => authentication.check(&shared.context, request).await,
        };
        // Reading ahead needs the next frame's limit to be known: not while
        // authentication may still change it.
        let ahead = authenticated.then_some(ReadAhead { frames: &mut frames, reader: &mut *reader, limit });
        let (answer, keep_open) = match step {
            Step::Serve(request, principal) => {
                let answers = Rc::clone(&answers);
                (start(shared, request, principal, &placements, ahead, answers).await, true)
            }
            Step::Answer { outcome, keep_open } => {
                count_encoded(&answers, &outcome);
                (Owed::Ready(outcome), keep_open)
            }
        };
        let failed = answer.failed() || !keep_open;
        let sent = answers.unless_writer_ended(async { sender.send(answer).await.is_ok() }).await;
        if !sent || failed {
            // The writer ended (the socket failed), this request cannot
            // be answered, or authentication failed: the writer closes
            // after what it owes.
            return Err(ReadEnd::Closed);
        }
    }
}

/// What reading the next frame while a request is placed needs.
struct ReadAhead<'a> {
    frames: &'a mut FrameReader,
    reader: &'a mut ReadHalf,
    limit: usize,
}

/// An answer the writer owes, in request order.
enum Owed {
    /// Known now.
    Ready(KafkaOutcome),
    /// Its request's task sends it when done.
    Pending(async_channel::Receiver<KafkaOutcome>),
}

impl Owed {
    /// Known already to end the connection.
    fn failed(&self) -> bool {
        matches!(self, Owed::Ready(Err(_)))
    }

    async fn outcome(self) -> Option<KafkaOutcome> {
        match self {
            Owed::Ready(outcome) => Some(outcome),
            // A task that ended without an outcome: nothing to answer with.
            Owed::Pending(receiver) => receiver.recv().await.ok(),
        }
    }
}

/// Start `request` in its own task (counted in flight until it ends) and
/// return once it releases the connection: when it is done, or, for a
/// Produce with acks, once the Produce before it is placed (its own
/// batches chained behind the batches sent before them).
async fn start(
    shared: &Rc<KafkaListener>,
    request: KafkaRequest,
    principal: Option<Principal>,
    placements: &Rc<Placements>,
    ahead: Option<ReadAhead<'_>>,
    answers: Rc<AnswerBudget>,
) -> Owed {
    let (release, released) = async_channel::bounded::<()>(1);
    let (outcome_sender, outcome) = async_channel::bounded::<KafkaOutcome>(1);
    let (context, in_flight) = (Rc::clone(&shared.context), Rc::clone(&shared.in_flight));
    let placements = Rc::clone(placements);
    in_flight.enter();
    crate::runtime::spawn_local(async move {
        let outcome = handle(&context, request, Access(principal.as_ref()), release, &placements).await;
        count_encoded(&answers, &outcome);
        in_flight.leave();
        // The writer may have gone (the socket failed): nothing to send to.
        let _ = outcome_sender.try_send(outcome);
    })
    .detach();
    // Nothing is ever sent: recv returns when the request drops `release`
    // (and at once every time after).
    match ahead {
        None => {
            let _ = released.recv().await;
        }
        Some(ReadAhead { frames, reader, limit }) => {
            // The next frame comes in meanwhile (not started before this
            // request releases the connection). The wait ends at the
            // release: the answer may be what the client waits for before
            // it sends more, and the read resumes in the next call.
            let release = async {
                let _ = released.recv().await;
                None
            };
            let read = async { Some(frames.next(shared, reader, limit).await) };
            if let Some(read) = futures_lite::future::or(release, read).await {
                frames.keep(read);
                let _ = released.recv().await;
            }
        }
    }
    // A request that released the connection by ending has sent its
    // outcome in the same poll: known now, a failure stops reading at once
    // (nothing after it starts).
    match outcome.try_recv() {
        Ok(known) => Owed::Ready(known),
        Err(_) => Owed::Pending(outcome),
    }
}

/// An answer's frame is owed from the moment it is encoded until the
/// writer wrote it.
fn count_encoded(answers: &AnswerBudget, outcome: &KafkaOutcome) {
    if let Ok(Some(frame)) = outcome {
        answers.encoded(0, frame.len());
    }
}

/// Write the answers in the order their requests arrived. A request that
/// cannot be answered, a write that fails or one that makes no progress
/// for `limits.write_stall_timeout_ms` closes the connection.
async fn write_answers(
    receiver: LocalReceiver<Owed>,
    mut writer: WriteHalf,
    socket: std::os::fd::RawFd,
    answers: Rc<AnswerBudget>,
    connections: Arc<ConnectionCount>,
) {
    while let Some(owed) = receiver.recv().await {
        let frame = match owed.outcome().await {
            Some(Ok(Some(frame))) => frame,
            Some(Ok(None)) => continue,
            Some(Err(error)) => {
                tracing::debug!(target: "ringlog::kafka", %error, "closing kafka connection");
                break;
            }
            None => break,
        };
        let frame_bytes = frame.len();
        let written = write_frame(&mut writer, frame).await;
        answers.written(frame_bytes);
        if let Err(error) = written {
            // Failed, or no progress for `limits.write_stall_timeout_ms`:
            // no goodbye (TLS's close_notify would stall again).
            count_stall(&connections, &error);
            shut_down(socket);
            break;
        }
    }
    answers.writer_gone();
    // Say goodbye first (TLS sends close_notify), then wake the reader
    // (blocked on a peer that may send nothing more).
    let _ = writer.close().await;
    shut_down(socket);
}

/// Shut the socket down both ways: reads and writes on it fail at once.
fn shut_down(socket: std::os::fd::RawFd) {
    // SAFETY: `socket` is the writer half's descriptor, and the writer
    // half is alive while this runs (called by the writer itself, or by
    // `serve` while the writer task has not finished).
    // shutdown neither closes nor invalidates the descriptor.
    unsafe { libc::shutdown(socket, libc::SHUT_RDWR) };
}
