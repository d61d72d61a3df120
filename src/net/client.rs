//! The Rust client used by the CLI, the tests and `ringlog bench`: a
//! bootstrap list, one reused connection with pipelining (a reader task
//! matches responses to requests by correlation id), retries of retriable
//! errors and lost connections against whichever listed node answers, and
//! CRC verification of every fetched batch. Runs on tokio; it never runs
//! inside the node's data shards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::io::WriteHalf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::protocol::{
    decode_response_owned, decode_response_parts, encode_request_split, frame_length, response_trailing_start, ApiKey,
    ErrorCode, ErrorResponse, ProtocolError, Request, Response,
};
use crate::security::scram::{new_nonce, ScramClient, MECHANISM};
use crate::storage::batch::{verify_batch, BatchError};

/// Client-side failures.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No listed server could be reached.
    #[error("cannot reach any server ({servers}): {last}")]
    Unreachable {
        /// The bootstrap list.
        servers: String,
        /// The last connection error.
        last: String,
    },
    /// The TLS handshake failed (an untrusted or expired certificate, a
    /// name it does not carry, a plaintext port): retrying cannot help.
    #[error("TLS: {0}")]
    Tls(String),
    /// The connection broke while the request was in flight.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server answered with an error.
    #[error("{}: {}", .0.code.name(), .0.message)]
    Server(ErrorResponse),
    /// The server sent something undecodable.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A fetched batch failed its CRC check.
    #[error("fetched batch failed verification: {0}")]
    Corrupt(#[from] BatchError),
    /// The SCRAM handshake could not be completed on our side (the
    /// server's own refusal is a `Server` error with its code).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// A failure of one step of a longer task, with what the step was (a
    /// benchmark's fetch names its partition and offset).
    #[error("{context}: {source}")]
    During {
        /// The step: what was asked, of what.
        context: String,
        /// Its failure.
        source: Box<ClientError>,
    },
    /// Retries did not succeed within the retry budget.
    #[error("gave up after {elapsed_ms} ms: {last}")]
    RetriesExhausted {
        /// Time spent.
        elapsed_ms: u64,
        /// The last failure.
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// Whether retrying (possibly on another node) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::ConnectionLost(_) => true,
            ClientError::Server(error) => error.code.is_retriable(),
            ClientError::During { source, .. } => source.is_retriable(),
            _ => false,
        }
    }

    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(error) => Some(error.code),
            ClientError::RetriesExhausted { last, .. } | ClientError::During { source: last, .. } => last.code(),
            _ => None,
        }
    }
}

type Answer = oneshot::Sender<Result<Response, ClientError>>;

/// Requests awaiting answers, and why the connection closed once it has: a
/// request sent after the reader stopped must fail at once, not wait for
/// an answer nobody will deliver (a half-closed socket still takes writes).
#[derive(Default)]
struct PendingState {
    waiting: HashMap<u32, (ApiKey, Answer)>,
    closed: Option<String>,
}

type Pending = Arc<Mutex<PendingState>>;

/// A byte stream to a server: TCP, or TLS over TCP.
trait ByteStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> ByteStream for T {}

pub use crate::security::tls::ClientTls;

/// One TCP connection with pipelining.
pub struct Connection {
    writer: tokio::sync::Mutex<WriteHalf<Box<dyn ByteStream>>>,
    pending: Pending,
    next_correlation: AtomicU32,
    address: String,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Largest response the client accepts.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

impl Connection {
    /// Connect to one server in plaintext.
    pub async fn connect(address: &str) -> std::io::Result<Connection> {
        Connection::connect_with(address, &None).await
    }

    /// Connect to one server, with TLS when `tls` is given (the server's
    /// certificate must be trusted and name the address's host).
    pub async fn connect_with(address: &str, tls: &ClientTls) -> std::io::Result<Connection> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, open_stream(address, tls))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let (mut read_half, write_half) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let reader_pending = Arc::clone(&pending);
        let reader = tokio::spawn(async move {
            // A TLS alert (the server refused our certificate after the
            // handshake, as TLS 1.3 does) is InvalidData: not worth a retry.
            let mut refused_by_tls = false;
            let failure = loop {
                let mut prefix = [0u8; 4];
                if let Err(error) = read_half.read_exact(&mut prefix).await {
                    refused_by_tls = error.kind() == std::io::ErrorKind::InvalidData;
                    break error.to_string();
                }
                let length = match frame_length(prefix, MAX_RESPONSE_BYTES) {
                    Ok(length) => length,
                    Err(error) => break error.to_string(),
                };
                let outcome = match read_response(&mut read_half, length, &reader_pending).await {
                    Ok(Some(outcome)) => outcome,
                    // An answer to nobody waiting (read whole, and dropped).
                    Ok(None) => continue,
                    Err(error) => break error,
                };
                let (sender, decoded) = outcome;
                let outcome = match decoded {
                    Ok((_, Ok(response))) => Ok(response),
                    Ok((_, Err(error))) => Err(ClientError::Server(error)),
                    Err(error) => Err(ClientError::Protocol(error)),
                };
                // A dropped receiver is a caller that stopped waiting: nobody to tell.
                let _ = sender.send(outcome);
            };
            let mut pending = reader_pending.lock().expect("pending");
            for (_, (_, sender)) in pending.waiting.drain() {
                // As above: only callers still waiting hear of the loss.
                let lost = match refused_by_tls {
                    true => ClientError::Tls(failure.clone()),
                    false => ClientError::ConnectionLost(failure.clone()),
                };
                let _ = sender.send(Err(lost));
            }
            pending.closed = Some(failure);
        });
        Ok(Connection {
            writer: tokio::sync::Mutex::new(write_half),
            pending,
            next_correlation: AtomicU32::new(1),
            address: address.to_string(),
            reader,
        })
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Send without waiting for the answer (pipelining); await the receiver later.
    pub async fn send(&self, request: &Request) -> oneshot::Receiver<Result<Response, ClientError>> {
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending");
            if let Some(reason) = &pending.closed {
                let _ = sender.send(Err(ClientError::ConnectionLost(reason.clone())));
                return receiver;
            }
            pending.waiting.insert(correlation_id, (request.api_key(), sender));
        }
        let mut frame = Vec::new();
        let body = encode_request_split(correlation_id, request, &mut frame);
        let written = {
            let mut writer = self.writer.lock().await;
            let written = match writer.write_all(&frame).await {
                Ok(()) if !body.is_empty() => writer.write_all(body).await,
                other => other,
            };
            // TLS holds records back until flushed; plaintext: nothing to do.
            match written {
                Ok(()) => writer.flush().await,
                failed => failed,
            }
        };
        if let Err(error) = written {
            if let Some((_, sender)) = self.pending.lock().expect("pending").waiting.remove(&correlation_id) {
                let _ = sender.send(Err(ClientError::ConnectionLost(error.to_string())));
            }
        }
        receiver
    }

    /// Send and wait for the answer.
    pub async fn call(&self, request: &Request) -> Result<Response, ClientError> {
        self.send(request).await.await.unwrap_or_else(|_| Err(ClientError::ConnectionLost("reader stopped".into())))
    }
}

/// Bytes of a response read first, to find where a fetch's batches start.
const PEEK_BYTES: usize = 512;

/// What the reader hands to the caller waiting for an answer.
type Decoded = Result<(u32, Result<Response, ErrorResponse>), ProtocolError>;

/// Read one response frame of `length` bytes (checked against
/// `MAX_RESPONSE_BYTES` before this) and decode it for the request waiting
/// on its correlation id: None when nobody waits for it any more. A fetch's
/// batches, nearly all of its bytes, are read straight into their own
/// buffer after the head: reading the frame whole zero-filled it first and
/// then moved the batches down over the head, two passes over every byte
/// consumed (BENCHMARKS.md, "the client's receive path").
async fn read_response<R: AsyncRead + Unpin>(
    stream: &mut R,
    length: usize,
    pending: &Pending,
) -> Result<Option<(Answer, Decoded)>, String> {
    let peek = length.min(PEEK_BYTES);
    let mut head = vec![0u8; peek];
    stream.read_exact(&mut head).await.map_err(|error| error.to_string())?;
    let Some(correlation_id) = head.get(..4).map(|id| u32::from_le_bytes(id.try_into().expect("4"))) else {
        return Err("short response".to_string());
    };
    let api_key = pending.lock().expect("pending").waiting.get(&correlation_id).map(|(api_key, _)| *api_key);
    let start =
        api_key.and_then(|api_key| response_trailing_start(api_key, &head, length)).filter(|&start| start <= peek);
    let decoded = match (api_key, start) {
        (Some(api_key), Some(start)) => {
            let mut trailing = Vec::with_capacity(length - start);
            trailing.extend_from_slice(&head[start..]);
            read_to_length(stream, &mut trailing, length - start).await.map_err(|error| error.to_string())?;
            head.truncate(start);
            decode_response_parts(api_key, &head, trailing)
        }
        (Some(api_key), None) => {
            read_to_length(stream, &mut head, length).await.map_err(|error| error.to_string())?;
            decode_response_owned(api_key, head)
        }
        (None, _) => {
            // Nobody asked for this id: skip the frame. The entry is not
            // looked up again, so a caller that asks under this id meanwhile
            // keeps waiting for its own answer.
            read_to_length(stream, &mut head, length).await.map_err(|error| error.to_string())?;
            return Ok(None);
        }
    };
    let waiting = pending.lock().expect("pending").waiting.remove(&correlation_id);
    Ok(waiting.map(|(_, sender)| (sender, decoded)))
}

/// Read from `stream` until `buffer` holds `length` bytes, into its spare
/// capacity (nothing is zero-filled first). Never reads past `length`:
/// the next frame's bytes stay in the stream.
async fn read_to_length<R: AsyncRead + Unpin>(
    stream: &mut R,
    buffer: &mut Vec<u8>,
    length: usize,
) -> std::io::Result<()> {
    debug_assert!(buffer.len() <= length);
    buffer.reserve_exact(length - buffer.len());
    while buffer.len() < length {
        let remaining = (length - buffer.len()) as u64;
        if (&mut *stream).take(remaining).read_buf(buffer).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "early eof"));
        }
    }
    debug_assert_eq!(buffer.len(), length);
    Ok(())
}

/// Longest a connect (with its TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP to `address`, then the TLS handshake when `tls` is given.
async fn open_stream(address: &str, tls: &ClientTls) -> std::io::Result<Box<dyn ByteStream>> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let Some(config) = tls else { return Ok(Box::new(stream)) };
    let name = crate::security::tls::server_name(address)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let session = crate::security::tokio_session::connect(Arc::clone(config), name, stream).await?;
    Ok(Box::new(session))
}

/// A user's name and password for the SCRAM handshake (`--user`,
/// `--password`). `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password (sent nowhere: SCRAM proves it without sending it).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

impl Connection {
    /// Authenticate this connection as `credentials` (SCRAM-SHA-256): the
    /// first requests on it, before any other. The server proves it holds
    /// the user's credential too, or this fails.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<(), ClientError> {
        if credentials.password.is_empty() {
            return self.authenticate_by_certificate(&credentials.user).await;
        }
        let refused = |error: crate::security::ScramError| ClientError::Authentication(error.to_string());
        let nonce = new_nonce().map_err(|error| ClientError::Authentication(format!("no random nonce: {error}")))?;
        let (client, client_first) =
            ScramClient::new(&credentials.user, credentials.password.as_bytes(), &nonce).map_err(refused)?;
        let start = Request::SaslStart { mechanism: MECHANISM.into(), message: client_first };
        let server_first = match self.call(&start).await? {
            Response::SaslStart { message } => message,
            other => return Err(unexpected(other)),
        };
        let (client, client_final) = client.respond(&server_first).map_err(refused)?;
        let server_final = match self.call(&Request::SaslContinue { message: client_final }).await? {
            Response::SaslContinue { message } => message,
            other => return Err(unexpected(other)),
        };
        client.verify(&server_final).map_err(refused)
    }
}

impl Connection {
    /// SASL EXTERNAL: the client certificate shown in the TLS handshake
    /// stands for `user` (no password: `--user` with `--tls-cert`).
    async fn authenticate_by_certificate(&self, user: &str) -> Result<(), ClientError> {
        let start = Request::SaslStart { mechanism: "EXTERNAL".into(), message: user.as_bytes().to_vec() };
        match self.call(&start).await? {
            Response::SaslStart { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// A client over a bootstrap list of servers.
pub struct Client {
    servers: Vec<String>,
    connection: Option<Arc<Connection>>,
    retry_budget: Duration,
    tls: ClientTls,
    credentials: Option<Credentials>,
}

impl Client {
    /// A client for `servers` (`host:port`, tried in order) retrying
    /// retriable failures for up to `retry_budget`.
    pub fn new(servers: Vec<String>, retry_budget: Duration) -> Client {
        Client { servers, connection: None, retry_budget, tls: None, credentials: None }
    }

    /// Connect with TLS (`None`: plaintext).
    pub fn with_tls(self, tls: ClientTls) -> Client {
        Client { tls, ..self }
    }

    /// Authenticate every connection as `credentials` (none: do not).
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Client {
        self.credentials = credentials;
        self
    }

    /// Parse a comma-separated bootstrap list.
    pub fn parse_servers(list: &str) -> Vec<String> {
        list.split(',').map(str::trim).filter(|server| !server.is_empty()).map(str::to_string).collect()
    }

    /// The current connection, connecting to the first reachable server.
    pub async fn connection(&mut self) -> Result<Arc<Connection>, ClientError> {
        if let Some(connection) = &self.connection {
            return Ok(Arc::clone(connection));
        }
        let mut last = String::from("empty server list");
        for server in &self.servers {
            match Connection::connect_with(server, &self.tls).await {
                Ok(connection) => {
                    if let Some(credentials) = &self.credentials {
                        connection.authenticate(credentials).await?;
                    }
                    let connection = Arc::new(connection);
                    self.connection = Some(Arc::clone(&connection));
                    return Ok(connection);
                }
                Err(error) if error.kind() == std::io::ErrorKind::InvalidData && self.tls.is_some() => {
                    return Err(ClientError::Tls(format!("{server}: {error}")));
                }
                Err(error) => last = format!("{server}: {error}"),
            }
        }
        Err(ClientError::Unreachable { servers: self.servers.join(","), last })
    }

    /// Forget the connection and prefer `leader` next (after `not_leader`).
    fn reconnect_to(&mut self, leader: Option<&str>) {
        self.connection = None;
        if let Some(leader) = leader {
            self.servers.retain(|server| server != leader);
            self.servers.insert(0, leader.to_string());
        } else if self.servers.len() > 1 {
            self.servers.rotate_left(1);
        }
    }

    /// Send a request, retrying retriable failures until the retry budget is spent.
    pub async fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let outcome = match self.connection().await {
                Ok(connection) => connection.call(request).await,
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(response) => return Ok(response),
                Err(error) if !error.is_retriable() => return Err(error),
                Err(error) => error,
            };
            let leader = match &error {
                ClientError::Server(response) => response.leader.clone(),
                _ => None,
            };
            if matches!(error, ClientError::ConnectionLost(_) | ClientError::Unreachable { .. }) || leader.is_some() {
                self.reconnect_to(leader.as_deref());
            }
            if started.elapsed() + backoff > self.retry_budget {
                return Err(ClientError::RetriesExhausted {
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    last: Box::new(error),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Partitions of `topic`. Asks each listed server in turn until one
    /// knows the topic (a follower may not have learned of it yet).
    pub async fn topic_partitions(&mut self, topic: &str) -> Result<u32, ClientError> {
        for _ in 0..self.servers.len().max(1) {
            match self.call(&Request::ListTopics).await? {
                Response::ListTopics(topics) => {
                    if let Some((_, partitions)) = topics.into_iter().find(|(name, _)| name == topic) {
                        return Ok(partitions);
                    }
                }
                other => return Err(unexpected(other)),
            }
            self.reconnect_to(None);
        }
        Err(ClientError::Server(ErrorResponse {
            code: ErrorCode::UnknownTopic,
            message: format!("topic {topic} does not exist"),
            leader: None,
        }))
    }

    /// Fetch and verify every batch's CRC before returning it.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<FetchResult, ClientError> {
        let request = Request::Fetch { topic: topic.into(), partition, offset, max_bytes, max_wait_ms };
        match self.call(&request).await? {
            Response::Fetch { high_watermark, log_start_offset, next_offset, batches } => {
                let mut position = 0;
                while position < batches.len() {
                    let header = verify_batch(&batches[position..], usize::MAX)?;
                    position += header.batch_bytes as usize;
                }
                Ok(FetchResult { high_watermark, log_start_offset, next_offset, batches })
            }
            other => Err(unexpected(other)),
        }
    }
}

/// A verified fetch answer.
#[derive(Debug, Clone)]
pub struct FetchResult {
    /// High watermark at the time of the answer.
    pub high_watermark: u64,
    /// Log start offset.
    pub log_start_offset: u64,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// CRC-verified batches.
    pub batches: Vec<u8>,
}

/// An answer of the wrong kind (a server bug).
pub fn unexpected(response: Response) -> ClientError {
    ClientError::Protocol(ProtocolError::Invalid(match response {
        Response::Fetch { .. } => "unexpected fetch response",
        _ => "unexpected response kind",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_error, encode_response};

    #[tokio::test]
    async fn a_request_after_the_server_closed_its_side_fails_instead_of_hanging() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            // Half-close: the client reads EOF, but its writes still succeed.
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        let connection = Connection::connect(&address).await.unwrap();
        while !connection.reader.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let answer = tokio::time::timeout(Duration::from_secs(2), connection.call(&Request::ListTopics)).await;
        assert!(matches!(answer, Ok(Err(ClientError::ConnectionLost(_)))), "{answer:?}");
        server.join().unwrap();
    }

    /// A stream that hands out one byte per read, as a slow socket may.
    struct Trickle(std::io::Cursor<Vec<u8>>);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buffer: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let mut byte = [0u8; 1];
            let read = std::io::Read::read(&mut self.0, &mut byte)?;
            buffer.put_slice(&byte[..read]);
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Read the next frame from `stream` as the connection's reader does.
    async fn next_frame(stream: &mut Trickle, pending: &Pending) -> Result<Option<(Answer, Decoded)>, String> {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await.map_err(|error| error.to_string())?;
        let length = frame_length(prefix, MAX_RESPONSE_BYTES).map_err(|error| error.to_string())?;
        read_response(stream, length, pending).await
    }

    fn wait_for(pending: &Pending, correlation_id: u32, api_key: ApiKey) {
        let (sender, _) = oneshot::channel();
        pending.lock().unwrap().waiting.insert(correlation_id, (api_key, sender));
    }

    #[tokio::test]
    async fn frames_back_to_back_are_read_whole_and_split_where_the_batches_start() {
        let fetch = Response::Fetch { high_watermark: 9, log_start_offset: 0, next_offset: 9, batches: vec![7; 3000] };
        let topics = Response::ListTopics(vec![("t".repeat(200), 3), ("u".repeat(300), 1)]);
        let refused = ErrorResponse { code: ErrorCode::NotLeader, message: "x".repeat(600), leader: None };
        let mut wire = Vec::new();
        encode_response(5, &fetch, &mut wire); // nobody waits for id 5: skipped
        encode_response(1, &fetch, &mut wire);
        encode_response(2, &topics, &mut wire);
        encode_error(3, &refused, &mut wire);
        encode_response(4, &fetch, &mut wire);
        wire.truncate(wire.len() - 100); // the last frame ends early
        let mut stream = Trickle(std::io::Cursor::new(wire));
        let pending = Pending::default();
        wait_for(&pending, 1, ApiKey::Fetch);
        wait_for(&pending, 2, ApiKey::ListTopics);
        wait_for(&pending, 3, ApiKey::Fetch);
        wait_for(&pending, 4, ApiKey::Fetch);
        assert!(next_frame(&mut stream, &pending).await.unwrap().is_none(), "an answer nobody waits for");
        let (_, decoded) = next_frame(&mut stream, &pending).await.unwrap().expect("waited for");
        assert_eq!(decoded, Ok((1, Ok(fetch))));
        let (_, decoded) = next_frame(&mut stream, &pending).await.unwrap().expect("waited for");
        assert_eq!(decoded, Ok((2, Ok(topics))));
        let (_, decoded) = next_frame(&mut stream, &pending).await.unwrap().expect("waited for");
        assert_eq!(decoded, Ok((3, Err(refused))));
        assert_eq!(next_frame(&mut stream, &pending).await.err().as_deref(), Some("early eof"));
        assert_eq!(pending.lock().unwrap().waiting.len(), 1, "only the cut answer is still waited for");
    }
}
