//! The client listener of one shard: every shard binds the same address
//! with SO_REUSEPORT (the kernel spreads connections), reads length-prefixed
//! frames, runs requests concurrently (pipelining, bounded per connection)
//! and writes responses as they complete, tagged with their correlation id.
//!
//! A connection is read by one task and written by another, each owning
//! its own file descriptor of the socket (`dup`), so neither needs a lock.
//! Bad input gets an error frame where the framing allows it, then the
//! connection is closed; nothing else is affected.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, TcpStream};

use super::accept::{next_connection, AcceptGate};
use super::answer_budget::AnswerBudget;
use super::authentication::{ClientAuthentication, Verdict};
use crate::protocol::{
    decode_produce_head, decode_request_header, decode_request_owned, encode_error, encode_response,
    encode_response_split, frame_length, ErrorCode, ErrorResponse, FramePieces, ProtocolError, Request, RequestHeader,
    LENGTH_PREFIX_BYTES, REQUEST_HEADER_BYTES,
};
use crate::replication::handshake::ReplicaSession;
use crate::runtime::{buffer_pool, Notify};
use crate::security::settings::Listener;
use crate::security::stream::{split, ReadHalf, WriteHalf};
use crate::shard::context::ShardContext;
use crate::state::metrics::ConnectionCount;
use crate::state::progress::QueuedAnswer;
use rustls::pki_types::CertificateDer;

/// Requests in flight on this shard, so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: Cell<usize>,
    changed: Notify,
}

impl InFlight {
    /// A request starts.
    pub(crate) fn enter(&self) {
        self.count.set(self.count.get() + 1);
    }
    /// A request ended.
    pub(crate) fn leave(&self) {
        self.count.set(self.count.get() - 1);
        self.changed.notify_all();
    }
    /// Requests running now.
    pub fn count(&self) -> usize {
        self.count.get()
    }
    /// Wait until no request is running.
    pub async fn drained(&self) {
        while self.count.get() > 0 {
            self.changed.notified().await;
        }
    }
}

/// Which protocol a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Clients: every API except replication.
    Client,
    /// Followers: the handshake first, then only replication APIs.
    Replication,
}

/// Serve clients until the shard stops (`ShardContext::stopping`).
pub async fn run_listener(
    context: Rc<ShardContext>,
    listener: TcpListener,
    kind: ListenerKind,
    connections: Arc<ConnectionCount>,
    in_flight: Rc<InFlight>,
) {
    let limit = context.config.limits.max_connections;
    let gate = AcceptGate { stopping: &context.stopping, connections: &connections, limit };
    let authenticating = kind == ListenerKind::Client && context.config.auth.enabled;
    let limiter = authenticating.then(|| super::authentication::limiter(&context));
    while let Some((stream, admitted)) = next_connection(&listener, &gate).await {
        let authentication = limiter.as_ref().map(|limiter| {
            let peer = stream.peer_addr().map_or(std::net::IpAddr::from([0, 0, 0, 0]), |address| address.ip());
            ClientAuthentication::new(peer, Rc::clone(limiter))
        });
        let connection = Connection {
            context: Rc::clone(&context),
            in_flight: Rc::clone(&in_flight),
            replication: (kind == ListenerKind::Replication).then(|| Rc::new(ReplicaSession::default())),
            authentication,
        };
        crate::runtime::spawn_local(async move {
            connection.serve(stream).await;
            drop(admitted);
        })
        .detach();
    }
}

struct Connection {
    context: Rc<ShardContext>,
    in_flight: Rc<InFlight>,
    /// Handshake state on the replication listener (None: a client listener).
    replication: Option<Rc<ReplicaSession>>,
    /// Client authentication state (None: replication, or `[auth]` off).
    authentication: Option<ClientAuthentication>,
}

/// Largest frame read before a connection has authenticated.
const MAX_UNAUTHENTICATED_FRAME_BYTES: usize = 64 << 10;

/// How long a closing connection's writer may take to deliver what is
/// already queued before the socket is shut under it.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the read loop ended.
enum ReadEnd {
    Closed,
    /// An idle follower was cut off (`replica_lag_max_ms` without a frame).
    CutOff,
    Stopping,
    BadInput(Option<u32>, ErrorResponse),
}

impl Connection {
    /// Which of the node's listeners this connection came in on.
    fn listener(&self) -> Listener {
        match self.replication {
            Some(_) => Listener::Replication,
            None => Listener::Client,
        }
    }

    async fn serve(self, stream: TcpStream) {
        let Some((stream, write_stream, certificate)) = accept_and_split(&self.context, self.listener(), stream).await
        else {
            return;
        };
        if let Some(authentication) = &self.authentication {
            authentication.set_client_certificate(certificate);
        }
        let write_fd = write_stream.raw_fd();
        let depth = self.context.config.limits.max_inflight_requests_per_connection;
        let (sender, receiver) = local_channel::new_bounded::<Outgoing>(depth);
        let sender = Rc::new(sender);
        let queue = Rc::new(ReplyQueue {
            answers: AnswerBudget::new(self.context.config.limits.max_answer_bytes_per_connection),
            limit_bytes: self.context.config.cluster.follower_queue_bytes,
            socket: write_fd,
            socket_open: Cell::new(true),
        });
        let connections = Arc::clone(&self.context.metrics.connections);
        let writer = crate::runtime::spawn_local(write_frames(receiver, write_stream, Rc::clone(&queue), connections));
        let end = self.read_loop(stream, &sender, &queue).await;
        if let Some(session) = &self.replication {
            session.close(&self.context);
        }
        close(end, sender, &queue, writer).await;
    }

    async fn read_loop(
        &self,
        mut stream: ReadHalf,
        sender: &Rc<LocalSender<Outgoing>>,
        queue: &Rc<ReplyQueue>,
    ) -> ReadEnd {
        let limit = self.context.config.limits.max_inflight_requests_per_connection;
        let pending = Rc::new(PendingRequests::default());
        loop {
            let (header, request) = match self.read_frame_bounded(&mut stream).await {
                Ok(decoded) => decoded,
                Err(end) => return end,
            };
            let request = match self.admit(header.correlation_id, request, sender, queue).await {
                Ok(Some(request)) => request,
                // Answered here, or not: nobody writes any more.
                Ok(None) if queue.answers.writer_is_gone() => return ReadEnd::Closed,
                Ok(None) => continue,
                Err(error) => return ReadEnd::BadInput(Some(header.correlation_id), error),
            };
            while pending.count.get() >= limit {
                pending.changed.notified().await;
            }
            // A client's answers are bounded in bytes (`answer_budget.rs`);
            // a follower's by `follower_queue_bytes` (`ReplyQueue`).
            let answer_estimate = match self.replication {
                Some(_) => None,
                None => match self.wait_for_unread_answers(queue).await {
                    Ok(()) => Some(self.answer_estimate(&request)),
                    Err(end) => return end,
                },
            };
            // Read before the stop, admitted after the shard's requests in
            // flight were counted out (the shutdown barrier): not served.
            if self.context.stopping.is_set() {
                return ReadEnd::Stopping;
            }
            pending.count.set(pending.count.get() + 1);
            self.in_flight.enter();
            let answer = Answer {
                context: Rc::clone(&self.context),
                correlation_id: header.correlation_id,
                follower: self.replication.as_ref().and_then(|session| session.replica()),
                session: self.replication.clone(),
                sender: Rc::clone(sender),
                queue: Rc::clone(queue),
                answer_estimate,
            };
            let (pending, in_flight) = (Rc::clone(&pending), Rc::clone(&self.in_flight));
            crate::runtime::spawn_local(async move {
                answer.execute_and_send(request).await;
                pending.count.set(pending.count.get() - 1);
                pending.changed.notify_all();
                in_flight.leave();
            })
            .detach();
        }
    }

    /// Read no further while the client's encoded answers, not yet
    /// written, pass `limits.max_answer_bytes_per_connection`: it does
    /// not read them. Ends the connection when the node stops or the
    /// writer is gone meanwhile (the client may never read again).
    async fn wait_for_unread_answers(&self, queue: &ReplyQueue) -> Result<(), ReadEnd> {
        match queue.answers.reserve_or_stop(0, &self.context.stopping).await {
            Some(true) => Ok(()),
            Some(false) => Err(ReadEnd::Closed),
            None => Err(ReadEnd::Stopping),
        }
    }

    /// The most a client's answer to `request` may take, reserved before
    /// it runs (`net/answer_budget.rs`): a fetch's `max_bytes`, or one whole
    /// batch when that is more (a read returns at least one); a topic
    /// listing or description by what it names now. Other answers are
    /// small and count once encoded (0: they wait for nothing reserved).
    fn answer_estimate(&self, request: &Request) -> usize {
        let config = &self.context.config;
        let bytes = match request {
            Request::Fetch { max_bytes, .. } => (*max_bytes as usize).max(config.storage.max_batch_bytes),
            Request::ListTopics | Request::TopicConfigs | Request::TopicIncarnations => {
                self.context.registry.snapshot().len() * TOPIC_ENTRY_ESTIMATE_BYTES
            }
            Request::DescribeTopic { name } => self
                .context
                .registry
                .get(name)
                .map_or(0, |meta| meta.partitions as usize * PARTITION_ENTRY_ESTIMATE_BYTES),
            _ => 0,
        };
        bytes.min(config.limits.max_frame_bytes)
    }

    /// Before authentication, the next frame must arrive whole within
    /// `auth.authentication_timeout_ms` and be small (SCRAM messages are a
    /// few hundred bytes): an anonymous peer can neither hold a connection
    /// slot idle nor make the node buffer a large frame.
    async fn read_frame_bounded(&self, stream: &mut ReadHalf) -> Result<(RequestHeader, Request), ReadEnd> {
        if !self.awaiting_authentication() {
            return self.read_frame(stream).await;
        }
        let timeout_ms = self.context.config.auth.authentication_timeout_ms;
        let expired = async {
            crate::runtime::sleep(std::time::Duration::from_millis(timeout_ms)).await;
            let message = format!("no authentication within {timeout_ms} ms");
            Err(ReadEnd::BadInput(
                None,
                ErrorResponse { code: ErrorCode::AuthenticationRequired, message, leader: None },
            ))
        };
        futures_lite::future::or(self.read_frame(stream), expired).await
    }

    /// Whether this connection must still authenticate.
    fn awaiting_authentication(&self) -> bool {
        self.authentication.as_ref().is_some_and(|authentication| !authentication.is_authenticated())
    }

    /// The next request frame, or how the connection ends: stopping, a
    /// follower silent past `replica_lag_max_ms`, closed, or bad input.
    async fn read_frame(&self, stream: &mut ReadHalf) -> Result<(RequestHeader, Request), ReadEnd> {
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        match self.read_or_stop(stream, &mut prefix).await {
            Ok(true) => {}
            Ok(false) => return Err(ReadEnd::Stopping),
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                if let Some(session) = &self.replication {
                    session.cut_off(&self.context, "sent nothing for replica_lag_max_ms");
                }
                return Err(ReadEnd::CutOff);
            }
            Err(_) => return Err(ReadEnd::Closed),
        }
        let max_frame_bytes = match self.awaiting_authentication() {
            true => MAX_UNAUTHENTICATED_FRAME_BYTES,
            false => self.context.config.limits.max_frame_bytes,
        };
        let length = match frame_length(prefix, max_frame_bytes) {
            Ok(length) => length,
            Err(error) => return Err(self.reject_oversized(stream, error).await),
        };
        match read_request(stream, length).await {
            Ok(Ok(decoded)) => Ok(decoded),
            Ok(Err((correlation_id, error))) => Err(ReadEnd::BadInput(correlation_id, protocol_error(error))),
            Err(_) => Err(ReadEnd::Closed),
        }
    }

    /// Apply the listener's rules to a decoded request: clients may not use
    /// replication APIs; a replication connection must complete the
    /// handshake first and then use only replication APIs. Handshake frames
    /// are answered here (Ok(None)); refusals close the connection.
    async fn admit(
        &self,
        correlation_id: u32,
        request: Request,
        sender: &Rc<LocalSender<Outgoing>>,
        queue: &ReplyQueue,
    ) -> Result<Option<Request>, ErrorResponse> {
        let replication_api = request.api_key().is_replication();
        let Some(session) = &self.replication else {
            return match replication_api {
                true => Err(invalid("replication APIs are served on the replication listener only")),
                false => self.admit_client(correlation_id, request, sender, queue).await,
            };
        };
        if !replication_api {
            return Err(invalid("the replication listener serves replication APIs only"));
        }
        let answer = match request {
            Request::ReplicaHello { node_id } => session.hello(node_id)?,
            Request::ReplicaAuth { proof } => session.authenticate(&self.context, &proof)?,
            Request::ReplicaFetch { replica_id, .. }
            | Request::ReplicaFetchMany { replica_id, .. }
            | Request::ReplicaGroupOffsets { replica_id, .. }
                if session.replica() != Some(replica_id) =>
            {
                return Err(invalid("not authenticated as this replica"));
            }
            request if session.replica().is_some() => return Ok(Some(request)),
            _ => return Err(invalid("authenticate first (hello, then auth)")),
        };
        let mut frame = Vec::new();
        encode_response(correlation_id, &answer, &mut frame);
        queue_for_writer(sender, &queue.answers, (FramePieces::whole(frame), None, 0)).await;
        Ok(None)
    }

    /// A client request under `[auth]`: handshake steps are answered here
    /// (Ok(None)), a refused request gets its error and the connection
    /// stays, a failed or missing handshake closes it (`net/authentication.rs`).
    async fn admit_client(
        &self,
        correlation_id: u32,
        request: Request,
        sender: &Rc<LocalSender<Outgoing>>,
        queue: &ReplyQueue,
    ) -> Result<Option<Request>, ErrorResponse> {
        let Some(authentication) = &self.authentication else {
            return match request {
                Request::SaslStart { .. } | Request::SaslContinue { .. } => {
                    Err(invalid("authentication is not enabled on this node ([auth] enabled = false)"))
                }
                request => Ok(Some(request)),
            };
        };
        let mut frame = Vec::new();
        match authentication.check(&self.context, request) {
            Verdict::Pass(request) => return Ok(Some(request)),
            Verdict::Answer(response) => encode_response(correlation_id, &response, &mut frame),
            Verdict::Refuse(error) => encode_error(correlation_id, &error, &mut frame),
            Verdict::Close(error) => return Err(error),
        }
        queue_for_writer(sender, &queue.answers, (FramePieces::whole(frame), None, 0)).await;
        Ok(None)
    }

    /// Read exactly `buffer` unless shutdown starts first (only between
    /// frames). On a replication connection, an idle follower times out.
    async fn read_or_stop(&self, stream: &mut ReadHalf, buffer: &mut [u8]) -> std::io::Result<bool> {
        let stopping = &self.context.stopping;
        if stopping.is_set() {
            return Ok(false);
        }
        let idle_limit = match &self.replication {
            Some(_) => std::time::Duration::from_millis(self.context.config.cluster.replica_lag_max_ms),
            None => std::time::Duration::MAX,
        };
        // Wait for the first byte or shutdown; once a frame has begun, finish it.
        let first = futures_lite::future::or(async { Some(stream.read(&mut buffer[..1]).await) }, async {
            futures_lite::future::or(stopping.wait(), async {
                if idle_limit == std::time::Duration::MAX {
                    std::future::pending::<()>().await;
                }
                crate::runtime::sleep(idle_limit).await;
            })
            .await;
            None
        })
        .await;
        let first = match first {
            None if !stopping.is_set() && self.replication.is_some() => {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            first => first,
        };
        match first {
            None => Ok(false),
            Some(Ok(0)) => Err(std::io::ErrorKind::UnexpectedEof.into()),
            Some(Ok(_)) => stream.read_exact(&mut buffer[1..]).await.map(|()| true),
            Some(Err(error)) => Err(error),
        }
    }

    /// The frame is too large to read: answer with an error (using the
    /// correlation id from its header) and close, without allocating it.
    async fn reject_oversized(&self, stream: &mut ReadHalf, error: ProtocolError) -> ReadEnd {
        let mut header = [0u8; REQUEST_HEADER_BYTES];
        let correlation_id = match stream.read_exact(&mut header).await {
            Ok(()) => decode_request_header(&header).ok().map(|header| header.correlation_id),
            Err(_) => None,
        };
        ReadEnd::BadInput(correlation_id, protocol_error(error))
    }
}

/// The TLS handshake (on a TLS listener) and the split into a reading and
/// a writing half; `None` (logged and counted) when either fails.
pub(crate) async fn accept_and_split(
    context: &ShardContext,
    listener: Listener,
    stream: TcpStream,
) -> Option<(ReadHalf, WriteHalf, Option<CertificateDer<'static>>)> {
    let tls = context.tls.server(listener);
    let peer = stream.peer_addr().ok();
    let accepted = crate::security::stream::accept(stream, tls, context.tls.handshake_timeout).await;
    let stall_timeout = std::time::Duration::from_millis(context.config.limits.write_stall_timeout_ms);
    let split = accepted.and_then(|stream| {
        let certificate = stream.peer_certificate();
        let (reader, writer) = split(stream)?;
        writer.set_write_stall_timeout(stall_timeout)?;
        Ok((reader, writer, certificate))
    });
    if let Err(error) = &split {
        context.metrics.connections.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "ringlog::tls", listener = listener.name(), ?peer, %error,
            "connection closed before it could be served");
    }
    split.ok()
}

/// Write `frame` in its pieces and flush it, then give its head back to
/// the buffer pool (its inserts go back as they drop).
pub(super) async fn write_frame(write_stream: &mut WriteHalf, frame: FramePieces) -> std::io::Result<()> {
    // TLS seals each write as records of its own: a head slice between
    // two bodies would be a runt record, so an encrypted connection gets
    // such a frame in one piece.
    let frame = match write_stream.is_encrypted() {
        true => frame.joined_inside(),
        false => frame,
    };
    let mut written = Ok(());
    for piece in frame.pieces().filter(|piece| !piece.is_empty()) {
        written = write_stream.write_all(piece).await;
        if written.is_err() {
            break;
        }
    }
    if written.is_ok() {
        // TLS holds records back until flushed; plaintext: nothing to do.
        written = write_stream.flush().await;
    }
    crate::runtime::buffer_pool::give_back(frame.head);
    written
}

/// Write a connection's answers as they come. A write that fails or makes
/// no progress for `limits.write_stall_timeout_ms` ends it: the socket is
/// shut down both ways, so the reader, blocked on a peer that may send
/// nothing more or waiting for room the writer will never make, ends too.
async fn write_frames(
    receiver: local_channel::LocalReceiver<Outgoing>,
    mut write_stream: WriteHalf,
    queue: Rc<ReplyQueue>,
    connections: Arc<ConnectionCount>,
) {
    let mut written = Ok(());
    while let Some((frame, _queued, counted_bytes)) = receiver.recv().await {
        written = write_frame(&mut write_stream, frame).await;
        queue.answers.written(counted_bytes);
        if written.is_err() {
            break;
        }
    }
    queue.answers.writer_gone();
    if let Err(error) = written {
        count_stall(&connections, &error);
        queue.shut_down();
    }
    // Closing may block (TLS sends close_notify): the socket stays open to
    // `close`'s shutdown after its grace until then.
    let _ = write_stream.close().await;
    queue.socket_open.set(false);
}

/// Count a connection closed because its peer took none of its bytes.
pub(crate) fn count_stall(connections: &ConnectionCount, error: &std::io::Error) {
    if error.kind() == std::io::ErrorKind::TimedOut {
        connections.write_stalls.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "ringlog::net", "closing a connection whose peer took none of its bytes");
    }
}

/// End a connection whose read loop ended with `end`: say why where the
/// framing allows, then let the writer deliver what is queued for a bounded
/// time and shut the socket under it after that, so a peer that stops
/// reading never holds the writer, its queue, the connection slot or the
/// descriptors.
async fn close(end: ReadEnd, sender: Rc<LocalSender<Outgoing>>, queue: &ReplyQueue, writer: crate::runtime::Task<()>) {
    match end {
        ReadEnd::BadInput(correlation_id, error) => {
            tracing::debug!(target: "ringlog::net", message = %error.message, "closing connection after bad input");
            let mut frame = Vec::new();
            encode_error(correlation_id.unwrap_or(0), &error, &mut frame);
            // Never wait for room: a peer that does not read would hold
            // this connection forever. No room, no error frame.
            let _ = sender.try_send((FramePieces::whole(frame), None, 0));
        }
        // Cut off: nothing more is owed to it, and its writer may be
        // blocked on a full socket the peer no longer reads.
        ReadEnd::CutOff => queue.shut_down(),
        ReadEnd::Closed | ReadEnd::Stopping => {}
    }
    drop(sender);
    let mut writer = writer;
    if !crate::runtime::finished_within(&mut writer, CLOSE_GRACE).await {
        queue.shut_down();
        writer.await;
    }
}

/// Requests of one connection being executed: at most
/// `limits.max_inflight_requests_per_connection`, so one client cannot
/// queue unbounded work on the shard.
#[derive(Default)]
struct PendingRequests {
    count: Cell<usize>,
    changed: Notify,
}

/// Where one request's answer goes.
struct Answer {
    context: Rc<ShardContext>,
    correlation_id: u32,
    /// The follower this replication connection serves, if any.
    follower: Option<u64>,
    /// Its replication session (None on a client connection).
    session: Option<Rc<ReplicaSession>>,
    sender: Rc<LocalSender<Outgoing>>,
    queue: Rc<ReplyQueue>,
    /// The most the answer may take, reserved before the request runs;
    /// None on a replication connection (bounded by the `ReplyQueue`).
    answer_estimate: Option<usize>,
}

impl Answer {
    /// Execute the request and queue its answer for the writer; a follower
    /// whose queue is full is cut off instead.
    async fn execute_and_send(self, request: Request) {
        // Waits here, not in the reader: the requests behind this one (a
        // produce that ends the long polls holding the budget) go on.
        let reserved_bytes = match self.answer_estimate {
            // Nothing to reserve, and the reader waited for the encoded
            // answers already: waiting again could let a later produce to
            // the same partition pass this one.
            None | Some(0) => 0,
            Some(bytes) => match self.queue.answers.reserve_or_stop(bytes, &self.context.stopping).await {
                Some(true) => bytes,
                // The writer is gone or the node stops: nobody reads it.
                Some(false) | None => return,
            },
        };
        let topic_removals_seen = self.session.as_ref().and_then(|session| session.topic_removals_seen());
        let outcome = match (crate::requests::refuse_kafka_producer_id(&request), topic_removals_seen) {
            (Err(refused), _) => Err(refused),
            (Ok(()), Some(seen)) => crate::requests::handle_replica(&self.context, request, seen).await,
            (Ok(()), None) => crate::requests::handle(&self.context, request).await,
        };
        if outcome.is_err() {
            self.context.shard_metrics().errors.fetch_add(1, Ordering::Relaxed);
        }
        let frame = match outcome {
            Ok(response) => encode_response_split(self.correlation_id, response),
            Err(error) => {
                let mut frame = Vec::new();
                encode_error(self.correlation_id, &error, &mut frame);
                FramePieces::whole(frame)
            }
        };
        // A topic deleted since the follower authenticated: its partitions'
        // owners now refuse it any partition of a topic created since, so
        // it reconnects and learns the topics afresh
        // (`ReplicaSession::outlived_a_topic_removal`).
        if self.session.as_ref().is_some_and(|session| session.outlived_a_topic_removal(&self.context)) {
            self.queue.answers.encoded(reserved_bytes, 0);
            self.queue.shut_down();
            return;
        }
        let bytes = frame.len();
        match self.follower {
            Some(follower) if !self.queue.admit(bytes) => {
                self.queue.answers.encoded(reserved_bytes, 0);
                // The follower does not read its answers fast enough: cut it
                // off now, without waiting for its writer.
                self.queue.shut_down();
                self.context.progress.follower(follower).slow_disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "ringlog::replication", follower, limit_bytes = self.queue.limit_bytes,
                    "follower disconnected: its send queue is full");
            }
            _ => {
                self.queue.answers.encoded(reserved_bytes, bytes);
                let queued = self.follower.map(|id| QueuedAnswer::new(self.context.progress.follower(id), bytes));
                if !queue_for_writer(&self.sender, &self.queue.answers, (frame, queued, bytes)).await {
                    // The writer is gone: nobody will write (and uncount) it.
                    self.queue.answers.written(bytes);
                }
            }
        }
    }
}

/// Queue `outgoing` for the writer, unless the writer ends first; false:
/// not queued. A send to its full channel, woken by the writer's end,
/// finds it still full and waits again ([`AnswerBudget::writer_ended`]):
/// a reader or request waiting there would hold the connection forever.
async fn queue_for_writer(sender: &LocalSender<Outgoing>, answers: &AnswerBudget, outgoing: Outgoing) -> bool {
    answers.unless_writer_ended(async { sender.send(outgoing).await.is_ok() }).await
}

/// What one topic of a topic listing may take: a name of up to 200 bytes
/// and its settings.
const TOPIC_ENTRY_ESTIMATE_BYTES: usize = 320;
/// What one partition of a topic description may take.
const PARTITION_ENTRY_ESTIMATE_BYTES: usize = 64;

/// Bytes read first from a large frame to find where a produce's batch starts.
const PEEK_BYTES: usize = 512;

/// A decoded request, or why it could not be decoded (with its correlation id).
type Decoded = Result<(RequestHeader, Request), (Option<u32>, ProtocolError)>;

/// Read one request frame of `length` bytes (checked against the limit, so
/// every allocation here is bounded, and its memory committed as the bytes
/// arrive rather than when the prefix announces them) and decode it. A large produce frame
/// is read head first, then its batch straight into the batch's own
/// buffer, so the batch is neither copied nor moved after the socket read.
async fn read_request(stream: &mut ReadHalf, length: usize) -> std::io::Result<Decoded> {
    let peek = length.min(PEEK_BYTES);
    let mut head = vec![0u8; peek];
    stream.read_exact(&mut head).await?;
    let correlation_id = decode_request_header(&head).ok().map(|header| header.correlation_id);
    let produce = match decode_produce_head(&head, length) {
        Ok(produce) => produce,
        Err(error) => return Ok(Err((correlation_id, error))),
    };
    let Some(produce) = produce.filter(|produce| produce.batch_start <= peek) else {
        // Room for the whole frame, committed as its bytes arrive.
        let mut frame = head;
        frame.reserve_exact(length - peek);
        buffer_pool::read_to_length(stream, &mut frame, peek, length).await?;
        return Ok(decode_request_owned(frame).map_err(|error| (correlation_id, error)));
    };
    // Every byte is overwritten below before the batch is used (a read that
    // fails drops it): a pooled buffer's old bytes are never seen.
    let mut batch = buffer_pool::take_unfilled(produce.batch_bytes);
    let already = peek - produce.batch_start;
    if batch.len() < already {
        batch.resize(already, 0);
    }
    batch[..already].copy_from_slice(&head[produce.batch_start..]);
    buffer_pool::read_to_length(stream, &mut batch, already, produce.batch_bytes).await?;
    Ok(Ok(produce.into_request(batch)))
}

fn invalid(message: &str) -> ErrorResponse {
    ErrorResponse { code: ErrorCode::InvalidRequest, message: message.into(), leader: None }
}

/// A frame to write, in pieces (a fetch's batches and a replica answer's
/// large bodies are written from where they are, not copied into the
/// head); for a follower the guard that counts its bytes as queued until
/// the writer is done with them; and the bytes it counts in the
/// connection's [`AnswerBudget`] (0 for the few small frames the reader
/// answers itself: handshakes, and the error that closes a connection).
type Outgoing = (FramePieces, Option<QueuedAnswer>, usize);

/// Bytes of answers owed on a connection. A client's are bounded by
/// `limits.max_answer_bytes_per_connection`: a request with an estimate
/// waits for room before it runs, and the reader reads no next request
/// while the encoded answers pass the bound. On a replication connection they are
/// bounded by `follower_queue_bytes` instead: a follower over the bound is
/// disconnected at once by shutting the socket down, which also fails its
/// writer's blocked write instead of waiting for it.
struct ReplyQueue {
    answers: AnswerBudget,
    limit_bytes: usize,
    socket: std::os::fd::RawFd,
    socket_open: Cell<bool>,
}

impl ReplyQueue {
    fn admit(&self, bytes: usize) -> bool {
        self.answers.queued_bytes() + bytes <= self.limit_bytes.max(bytes)
    }

    fn shut_down(&self) {
        if self.socket_open.get() {
            // SAFETY: the writer task owns this descriptor and sets
            // socket_open to false before closing it (same thread), so it
            // is open here; shutdown does not close or invalidate it.
            unsafe { libc::shutdown(self.socket, libc::SHUT_RDWR) };
        }
    }
}

fn protocol_error(error: ProtocolError) -> ErrorResponse {
    let code = match error {
        ProtocolError::FrameTooLarge { .. } => ErrorCode::RecordTooLarge,
        ProtocolError::UnknownApi(_) => ErrorCode::UnknownApi,
        ProtocolError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        _ => ErrorCode::InvalidRequest,
    };
    ErrorResponse { code, message: error.to_string(), leader: None }
}
