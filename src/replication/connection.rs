//! A follower shard's connection to the leader's replication listener, on
//! glommio: requests are pipelined (a reader task matches answers to
//! waiting callers by correlation id), frames are size-checked before
//! allocation, and a broken connection fails every waiting call.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;

use crate::net::protocol::{
    decode_response_owned, encode_request, frame_length, ApiKey, ErrorResponse, Request, Response, LENGTH_PREFIX_BYTES,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection broke (or was never made).
    #[error("replication connection: {0}")]
    Connection(String),
    /// The leader answered with an error.
    #[error("leader answered {}: {}", .0.code.name(), .0.message)]
    Refused(ErrorResponse),
}

type Waiter = async_channel::Sender<Result<Response, ErrorResponse>>;

struct Shared {
    pending: RefCell<HashMap<u32, (ApiKey, Waiter)>>,
    closed: Cell<bool>,
    failure: RefCell<String>,
}

/// A pipelined connection to the leader.
pub struct ReplicaConnection {
    shared: Rc<Shared>,
    frames: LocalSender<Vec<u8>>,
    next_correlation: Cell<u32>,
    _reader: crate::runtime::Task<()>,
    _writer: crate::runtime::Task<()>,
}

impl ReplicaConnection {
    /// Connect to `address`; answers larger than `max_frame_bytes` break the connection.
    pub async fn connect(address: &str, max_frame_bytes: usize, depth: usize) -> Result<ReplicaConnection, CallError> {
        let stream =
            TcpStream::connect(address).await.map_err(|error| CallError::Connection(format!("{address}: {error}")))?;
        let _ = stream.set_nodelay(true);
        // SAFETY: dup gives the writer its own descriptor for the socket;
        // the writer stream owns and closes it.
        let write_fd = unsafe { libc::dup(stream.as_raw_fd()) };
        if write_fd < 0 {
            return Err(CallError::Connection(format!("dup: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: write_fd is a fresh, valid socket descriptor we own.
        let mut write_stream = unsafe { TcpStream::from_raw_fd(write_fd) };
        let shared = Rc::new(Shared {
            pending: RefCell::new(HashMap::new()),
            closed: Cell::new(false),
            failure: RefCell::new(String::new()),
        });
        let (frames, outgoing) = local_channel::new_bounded::<Vec<u8>>(depth.max(1));
        let writer_shared = Rc::clone(&shared);
        let writer = crate::runtime::spawn_local(async move {
            while let Some(frame) = outgoing.recv().await {
                if let Err(error) = write_stream.write_all(&frame).await {
                    fail_all(&writer_shared, format!("write: {error}"));
                    break;
                }
            }
            let _ = write_stream.close().await;
        });
        let reader_shared = Rc::clone(&shared);
        let reader = crate::runtime::spawn_local(read_answers(stream, reader_shared, max_frame_bytes));
        Ok(ReplicaConnection { shared, frames, next_correlation: Cell::new(1), _reader: reader, _writer: writer })
    }

    /// Whether the connection has failed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.get()
    }

    /// Send `request` and wait for its answer.
    pub async fn call(&self, request: &Request) -> Result<Response, CallError> {
        if self.shared.closed.get() {
            return Err(CallError::Connection(self.shared.failure.borrow().clone()));
        }
        let correlation_id = self.next_correlation.get();
        self.next_correlation.set(correlation_id.wrapping_add(1));
        let (sender, receiver) = async_channel::bounded(1);
        self.shared.pending.borrow_mut().insert(correlation_id, (request.api_key(), sender));
        let mut frame = Vec::new();
        encode_request(correlation_id, request, &mut frame);
        if self.frames.send(frame).await.is_err() {
            self.shared.pending.borrow_mut().remove(&correlation_id);
            return Err(CallError::Connection("writer gone".into()));
        }
        match receiver.recv().await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(refusal)) => Err(CallError::Refused(refusal)),
            Err(_) => Err(CallError::Connection(self.shared.failure.borrow().clone())),
        }
    }
}

fn fail_all(shared: &Shared, reason: String) {
    if !shared.closed.get() {
        shared.closed.set(true);
        *shared.failure.borrow_mut() = reason;
    }
    // Dropping the senders wakes every waiter with an error.
    shared.pending.borrow_mut().clear();
}

async fn read_answers(mut stream: TcpStream, shared: Rc<Shared>, max_frame_bytes: usize) {
    let reason = loop {
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        if let Err(error) = stream.read_exact(&mut prefix).await {
            break format!("read: {error}");
        }
        let length = match frame_length(prefix, max_frame_bytes) {
            Ok(length) => length,
            Err(error) => break error.to_string(),
        };
        let mut body = vec![0u8; length];
        if let Err(error) = stream.read_exact(&mut body).await {
            break format!("read: {error}");
        }
        let Ok(correlation_id) = body.get(..4).map(|id| u32::from_le_bytes(id.try_into().expect("4 bytes"))).ok_or(())
        else {
            break "answer without a correlation id".into();
        };
        let Some((api_key, waiter)) = shared.pending.borrow_mut().remove(&correlation_id) else {
            break format!("answer to unknown request {correlation_id}");
        };
        match decode_response_owned(api_key, body) {
            Ok((_, outcome)) => {
                let _ = waiter.try_send(outcome);
            }
            Err(error) => break format!("undecodable answer: {error}"),
        }
    };
    fail_all(&shared, reason);
}
