//! Reading a Kafka connection's length-prefixed frames so that a read may
//! be abandoned between any two socket reads and resumed later: the bytes
//! of a frame read so far live here, not in a future. That lets a
//! connection read its next frame while the request before it is still
//! being placed (`kafka_server::start`), and stop waiting for that frame as
//! soon as the request releases the connection (the answer must go to the
//! writer at once: the client may send nothing more until it has it).
//!
//! At most one frame is read ahead of the request being started; with
//! the two Produce requests that may be being placed at once
//! (`requests::kafka::placements`), a connection holds at most three
//! frames of `limits.max_frame_bytes`.

use bytes::Bytes;
use futures_lite::AsyncReadExt;

use super::kafka_server::{KafkaListener, ReadEnd};
use crate::protocol::kafka::{frame_length, LENGTH_PREFIX_BYTES};
use crate::runtime::buffer_pool;
use crate::security::stream::ReadHalf;

/// The frame being read on one connection, and one read ahead if any.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// The length prefix read so far.
    prefix: [u8; LENGTH_PREFIX_BYTES],
    /// Bytes of `prefix` read so far.
    prefix_bytes: usize,
    /// The frame's buffer, bytes filled, and its length from the prefix.
    frame: Option<(Vec<u8>, usize, usize)>,
    /// A frame (or why there is none) read ahead, not yet taken.
    ready: Option<Result<Bytes, ReadEnd>>,
}

impl FrameReader {
    /// The next frame, at most `limit` bytes (checked before its buffer is
    /// allocated; memory is committed as its bytes arrive, not when the
    /// prefix announces them, see [`buffer_pool::take_unfilled`]). Dropping the future between socket reads loses nothing:
    /// the next call continues where it stopped. The node stopping ends
    /// the wait only before a frame's first byte (a frame begun is
    /// finished). The frame's buffer comes from the thread's pool and goes
    /// back to it when the last of the frame's bytes is dropped; it is
    /// handed on only once every byte is read, so no byte of the frame it
    /// held before is ever seen.
    pub async fn next(
        &mut self,
        shared: &KafkaListener,
        reader: &mut ReadHalf,
        limit: usize,
    ) -> Result<Bytes, ReadEnd> {
        if let Some(ready) = self.ready.take() {
            return ready;
        }
        while self.frame.is_none() {
            let room = &mut self.prefix[self.prefix_bytes..];
            let read = match self.prefix_bytes {
                0 => read_or_stop(shared, reader, room).await?,
                _ => read_some(reader, room).await?,
            };
            self.prefix_bytes += read;
            if self.prefix_bytes == LENGTH_PREFIX_BYTES {
                let length = frame_length(self.prefix, limit)?;
                self.prefix_bytes = 0;
                self.frame = Some((buffer_pool::take_unfilled(length), 0, length));
            }
        }
        let (frame, filled, length) = self.frame.as_mut().expect("a frame is being read");
        while *filled < *length {
            *filled += read_some(reader, buffer_pool::unfilled(frame, *filled, *length)).await?;
        }
        let (frame, filled, length) = self.frame.take().expect("a frame is being read");
        assert!(filled == length && frame.len() == length, "a frame is handed on only when read whole");
        Ok(buffer_pool::share(frame))
    }

    /// Keep `read` (a frame read ahead, or why reading ended) for the next
    /// call of [`FrameReader::next`].
    pub fn keep(&mut self, read: Result<Bytes, ReadEnd>) {
        debug_assert!(self.ready.is_none(), "one frame read ahead at most");
        self.ready = Some(read);
    }
}

/// Some bytes into `buffer` (not empty); a closed or failed socket ends.
async fn read_some(reader: &mut ReadHalf, buffer: &mut [u8]) -> Result<usize, ReadEnd> {
    match reader.read(buffer).await {
        Ok(0) | Err(_) => Err(ReadEnd::Closed),
        Ok(read) => Ok(read),
    }
}

/// As [`read_some`], unless the node starts stopping first.
async fn read_or_stop(shared: &KafkaListener, reader: &mut ReadHalf, buffer: &mut [u8]) -> Result<usize, ReadEnd> {
    let stopping = &shared.context.stopping;
    if stopping.is_set() {
        return Err(ReadEnd::Stopping);
    }
    let read = futures_lite::future::or(async { Some(read_some(reader, buffer).await) }, async {
        stopping.wait().await;
        None
    });
    read.await.unwrap_or(Err(ReadEnd::Stopping))
}
