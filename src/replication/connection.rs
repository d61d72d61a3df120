//! A follower shard's connection to the leader's replication listener, on
//! glommio: requests are pipelined (a reader task matches answers to
//! waiting callers by correlation id), frames are size-checked before
//! allocation, and a broken connection fails every waiting call.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use rustls::ClientConfig;

use crate::protocol::{
    decode_response_shared, encode_request, frame_length, ApiKey, ErrorResponse, Request, Response, LENGTH_PREFIX_BYTES,
};
use crate::security::stream::{split, ReadHalf};

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
    call_timeout: std::time::Duration,
    _reader: crate::runtime::Task<()>,
    _writer: crate::runtime::Task<()>,
}

impl ReplicaConnection {
    /// Connect to `address` (with TLS when `tls` is given: the leader's
    /// certificate must be trusted and name the address's host); answers
    /// larger than `max_frame_bytes` break the connection, and so does a
    /// call left unanswered for `call_timeout`, which also bounds the
    /// connect and the handshake.
    pub async fn connect(
        address: &str,
        tls: Option<Arc<ClientConfig>>,
        max_frame_bytes: usize,
        depth: usize,
        call_timeout: std::time::Duration,
    ) -> Result<ReplicaConnection, CallError> {
        let stream = crate::security::stream::connect(address, tls, call_timeout)
            .await
            .map_err(|error| CallError::Connection(format!("{address}: {error}")))?;
        let (stream, mut write_stream) =
            split(stream).map_err(|error| CallError::Connection(format!("{address}: {error}")))?;
        let shared = Rc::new(Shared {
            pending: RefCell::new(HashMap::new()),
            closed: Cell::new(false),
            failure: RefCell::new(String::new()),
        });
        let (frames, outgoing) = local_channel::new_bounded::<Vec<u8>>(depth.max(1));
        let writer_shared = Rc::clone(&shared);
        let writer = crate::runtime::spawn_local(async move {
            while let Some(frame) = outgoing.recv().await {
                let written = match write_stream.write_all(&frame).await {
                    Ok(()) => write_stream.flush().await,
                    failed => failed,
                };
                if let Err(error) = written {
                    fail_all(&writer_shared, format!("write: {error}"));
                    break;
                }
            }
            let _ = write_stream.close().await;
        });
        let reader_shared = Rc::clone(&shared);
        let reader = crate::runtime::spawn_local(read_answers(stream, reader_shared, max_frame_bytes));
        Ok(ReplicaConnection {
            shared,
            frames,
            next_correlation: Cell::new(1),
            call_timeout,
            _reader: reader,
            _writer: writer,
        })
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
        // Bounded too: glommio never wakes a send to a full channel for
        // good once the writer is gone (it wakes it, finds it full, and it
        // waits again), and a leader that stopped reading fills it.
        let sent = crate::runtime::within(self.call_timeout, self.frames.send(frame)).await;
        if !matches!(sent, Some(Ok(()))) {
            self.shared.pending.borrow_mut().remove(&correlation_id);
            let reason = format!("request not sent within {} ms", self.call_timeout.as_millis());
            fail_all(&self.shared, reason.clone());
            return Err(CallError::Connection(reason));
        }
        let answer = crate::runtime::within(self.call_timeout, receiver.recv()).await;
        match answer {
            Some(Ok(Ok(response))) => Ok(response),
            Some(Ok(Err(refusal))) => Err(CallError::Refused(refusal)),
            Some(Err(_)) => Err(CallError::Connection(self.shared.failure.borrow().clone())),
            None => {
                // A leader that answers nothing (stopped, hung, partitioned
                // without a reset) would hold this follower forever: a lost
                // answer makes the whole pipelined connection unusable.
                let reason = format!("no answer within {} ms", self.call_timeout.as_millis());
                fail_all(&self.shared, reason.clone());
                Err(CallError::Connection(reason))
            }
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

async fn read_answers(mut stream: ReadHalf, shared: Rc<Shared>, max_frame_bytes: usize) {
    let reason = loop {
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        if let Err(error) = stream.read_exact(&mut prefix).await {
            break format!("read: {error}");
        }
        let length = match frame_length(prefix, max_frame_bytes) {
            Ok(length) => length,
            Err(error) => break error.to_string(),
        };
        // Not zero-filled (the reads overwrite all of it before any use),
        // and kept for the next answer once its batches are applied.
        let mut body = crate::runtime::buffer_pool::take_unfilled(length);
        if let Err(error) = crate::runtime::buffer_pool::read_to_length(&mut stream, &mut body, 0, length).await {
            break format!("read: {error}");
        }
        let Ok(correlation_id) = body.get(..4).map(|id| u32::from_le_bytes(id.try_into().expect("4 bytes"))).ok_or(())
        else {
            break "answer without a correlation id".into();
        };
        let Some((api_key, waiter)) = shared.pending.borrow_mut().remove(&correlation_id) else {
            break format!("answer to unknown request {correlation_id}");
        };
        match decode_answer(api_key, body) {
            Ok((_, outcome)) => {
                let _ = waiter.try_send(outcome);
            }
            Err(error) => break format!("undecodable answer: {error}"),
        }
    };
    fail_all(&shared, reason);
}

/// Decode an answer over its frame as shared bytes: a multi-partition
/// replica answer's batches stay in the frame (sliced, not copied out: a
/// follower copied every replicated byte here once more), and the frame
/// returns to the shard's pool once the last of them is applied (at once
/// for any other answer).
fn decode_answer(
    api_key: ApiKey,
    frame: Vec<u8>,
) -> Result<(u32, Result<Response, ErrorResponse>), crate::protocol::ProtocolError> {
    decode_response_shared(api_key, &crate::runtime::buffer_pool::share(frame))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_call_the_leader_never_answers_fails_after_the_call_timeout_and_closes_the_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // A "leader" that accepts and then says nothing, holding the socket open.
        let silent = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(socket);
        });
        let (outcome, elapsed, closed) = crate::runtime::block_on_executor("call-timeout", move || async move {
            let connection =
                ReplicaConnection::connect(&address, None, 1 << 20, 4, Duration::from_millis(200)).await.unwrap();
            let started = Instant::now();
            let outcome = connection.call(&Request::TopicConfigs).await;
            (outcome.map(|_| ()).map_err(|error| error.to_string()), started.elapsed(), connection.is_closed())
        })
        .unwrap();
        assert!(outcome.is_err(), "{outcome:?}");
        assert!(elapsed < Duration::from_secs(2), "gave up after {elapsed:?}");
        assert!(closed, "the connection is closed after a lost answer");
        silent.join().unwrap();
    }
}
