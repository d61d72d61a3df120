//! Responses: the [`Response`] body, error answers, encode and decode.

use super::field::{record, Field};
use super::message::{messages, Message};
use super::types::*;
use super::wire::*;

/// One partition in a describe answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionDescription {
    /// Partition number.
    pub partition: u32,
    /// First offset in the log.
    pub log_start_offset: u64,
    /// Next offset to assign.
    pub log_end_offset: u64,
    /// End of committed data; `None` while the node has not established
    /// it (after a restart or a leader change; `u64::MAX` on the wire).
    pub high_watermark: Option<u64>,
    /// Segment count.
    pub segments: u32,
    /// Bytes on disk.
    pub bytes: u64,
    /// Latest leader epoch.
    pub leader_epoch: u32,
}

record!(PartitionDescription {
    partition: u32 = "partition",
    log_start_offset: u64 = "log start",
    log_end_offset: u64 = "log end",
    high_watermark: Option<u64> = "high watermark",
    segments: u32 = "segments",
    bytes: u64 = "bytes",
    leader_epoch: u32 = "leader epoch",
});

/// State of a consumer group's committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommittedState {
    /// Nothing committed.
    None,
    /// Committed offset inside the log.
    Valid(u64),
    /// Committed offset outside the log: the consumer must reset explicitly.
    OutOfRange {
        /// Stored offset.
        committed: u64,
        /// Log start.
        log_start_offset: u64,
        /// Log end.
        log_end_offset: u64,
    },
}

/// `state u8`: 0 none; 1 valid, `offset u64`; 2 out of range, `committed
/// u64 | log_start u64 | log_end u64`.
impl Field for CommittedState {
    type Names = ();
    const MIN_BYTES: usize = 1;
    fn encode(&self, writer: &mut Writer<'_>) {
        match self {
            CommittedState::None => writer.u8(0),
            CommittedState::Valid(offset) => {
                writer.u8(1);
                writer.u64(*offset);
            }
            CommittedState::OutOfRange { committed, log_start_offset, log_end_offset } => {
                writer.u8(2);
                writer.u64(*committed);
                writer.u64(*log_start_offset);
                writer.u64(*log_end_offset);
            }
        }
    }
    fn decode(reader: &mut Reader<'_>, _: ()) -> Result<CommittedState, ProtocolError> {
        Ok(match reader.u8("state")? {
            0 => CommittedState::None,
            1 => CommittedState::Valid(reader.u64("offset")?),
            2 => CommittedState::OutOfRange {
                committed: reader.u64("committed")?,
                log_start_offset: reader.u64("log start")?,
                log_end_offset: reader.u64("log end")?,
            },
            _ => return Err(ProtocolError::Invalid("unknown committed-offset state")),
        })
    }
}

/// A successful response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Topic created.
    CreateTopic,
    /// Topic deleted.
    DeleteTopic,
    /// (name, partitions) of every topic.
    ListTopics(Vec<(String, u32)>),
    /// Per-partition description.
    DescribeTopic(Vec<PartitionDescription>),
    /// Where the batch landed.
    Produce {
        /// First offset.
        base_offset: u64,
        /// Offset after the batch.
        next_offset: u64,
        /// True when the batch was a recognised retry.
        duplicate: bool,
    },
    /// Batches read.
    Fetch {
        /// High watermark when the fetch was answered.
        high_watermark: u64,
        /// Log start offset.
        log_start_offset: u64,
        /// Offset after the returned batches.
        next_offset: u64,
        /// Concatenated batches.
        batches: Vec<u8>,
    },
    /// Partition offsets.
    ListOffsets {
        /// Log start.
        log_start_offset: u64,
        /// Log end.
        log_end_offset: u64,
        /// High watermark.
        high_watermark: u64,
    },
    /// Offset committed.
    CommitOffset,
    /// Committed offset state.
    FetchOffset(CommittedState),
    /// Producer id assigned.
    InitProducer {
        /// The id.
        producer_id: u64,
    },
    /// Offset found (None: no record at or after the timestamp).
    FindOffset {
        /// The offset.
        offset: Option<u64>,
    },
    /// The leader's challenge.
    ReplicaChallenge {
        /// Random bytes the follower must sign.
        nonce: Vec<u8>,
    },
    /// The follower is authenticated.
    ReplicaAuth {
        /// The leader's node id.
        leader_id: u64,
        /// The leader's epoch.
        leader_epoch: u32,
    },
    /// Batches for a follower (lz4-compressed block).
    ReplicaFetch {
        /// The leader's high watermark for the partition; `None` while the
        /// leader has not established it (`u64::MAX` on the wire).
        high_watermark: Option<u64>,
        /// Leader's log start.
        log_start_offset: u64,
        /// Leader's log end.
        log_end_offset: u64,
        /// Leader's current epoch.
        leader_epoch: u32,
        /// Size of `compressed` once decompressed.
        uncompressed_bytes: u32,
        /// lz4 block of concatenated batches.
        compressed: Vec<u8>,
    },
    /// Where an epoch ends on the leader.
    EpochEndOffset {
        /// The largest leader epoch <= the one asked for (None: no such epoch).
        epoch: Option<u32>,
        /// Its end offset (the leader's log end for the current epoch).
        end_offset: u64,
        /// The leader's log start.
        log_start_offset: u64,
    },
    /// Every topic: (name, settings).
    TopicConfigs(Vec<(String, TopicSettings)>),
    /// (group, committed offset) of every group of a partition.
    GroupOffsets(Vec<(String, u64)>),
    /// (topic, incarnation) of every topic.
    TopicIncarnations(Vec<(String, u64)>),
    /// The partitions of a multi-partition replica fetch that have news.
    ReplicaFetchMany {
        /// Leader's current epoch.
        leader_epoch: u32,
        /// The leader's data shards: the follower sends one request per
        /// leader shard (`owner_of` with this count), so each can wait.
        leader_shards: u16,
        /// Partitions with news, in request order.
        partitions: Vec<ReplicaFetchedPartition>,
    },
    /// A partition's consumer-group commits for a follower.
    ReplicaGroupOffsets {
        /// The commit version the groups reflect (every commit acknowledged
        /// up to it is among them).
        version: u64,
        /// (group, committed offset) of every group.
        groups: Vec<(String, u64)>,
    },
    /// The server's answer to the first SASL message (SCRAM server-first).
    SaslStart {
        /// The server-first message.
        message: Vec<u8>,
    },
    /// The server's last SASL message (SCRAM server-final): authenticated.
    SaslContinue {
        /// The server-final message (the client checks the server with it).
        message: Vec<u8>,
    },
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Leader's client address for `not_leader`.
    pub leader: Option<String>,
}

// Each success response body's layout, in wire order, by the API key of
// the request it answers: encode and decode both follow it.
messages!(Response {
    CreateTopic => CreateTopic (),
    DeleteTopic => DeleteTopic (),
    ListTopics => ListTopics (topics: Vec<(String, u32)> = ("topic count", ("topic", "partitions"))),
    DescribeTopic => DescribeTopic (partitions: Vec<PartitionDescription> = ("partition count", ())),
    Produce => Produce { base_offset: u64 = "base offset", next_offset: u64 = "next offset", duplicate: bool = "duplicate" },
    Fetch => Fetch {
        high_watermark: u64 = "high watermark",
        log_start_offset: u64 = "log start",
        next_offset: u64 = "next offset";
        batches = "batches"
    },
    ListOffsets => ListOffsets {
        log_start_offset: u64 = "log start",
        log_end_offset: u64 = "log end",
        high_watermark: u64 = "high watermark",
    },
    CommitOffset => CommitOffset (),
    FetchOffset => FetchOffset (state: CommittedState = ()),
    InitProducer => InitProducer { producer_id: u64 = "producer id" },
    FindOffset => FindOffset { offset: Option<u64> = "offset" },
    ReplicaHello => ReplicaChallenge { nonce: Vec<u8> = "nonce" },
    ReplicaAuth => ReplicaAuth { leader_id: u64 = "leader id", leader_epoch: u32 = "leader epoch" },
    ReplicaFetch => ReplicaFetch {
        high_watermark: Option<u64> = "high watermark",
        log_start_offset: u64 = "log start",
        log_end_offset: u64 = "log end",
        leader_epoch: u32 = "leader epoch",
        uncompressed_bytes: u32 = "uncompressed bytes";
        compressed = "compressed batches"
    },
    EpochEndOffset => EpochEndOffset {
        epoch: Option<u32> = ("epoch known", "epoch"),
        end_offset: u64 = "end offset",
        log_start_offset: u64 = "log start",
    },
    TopicConfigs => TopicConfigs (topics: Vec<(String, TopicSettings)> = ("topic count", ("topic", ()))),
    GroupOffsets => GroupOffsets (groups: Vec<(String, u64)> = ("group count", ("group", "offset"))),
    TopicIncarnations => TopicIncarnations (topics: Vec<(String, u64)> = ("topic count", ("topic", "incarnation"))),
    ReplicaFetchMany => ReplicaFetchMany {
        leader_epoch: u32 = "leader epoch",
        leader_shards: u16 = "leader shards",
        partitions: Vec<ReplicaFetchedPartition> = ("partition count", ()),
    },
    SaslStart => SaslStart { message: Vec<u8> = "sasl message" },
    SaslContinue => SaslContinue { message: Vec<u8> = "sasl message" },
    ReplicaGroupOffsets => ReplicaGroupOffsets {
        version: u64 = "commit version",
        groups: Vec<(String, u64)> = ("group count", ("group", "offset")),
    },
});

/// A response header after the length prefix.
struct ResponseHeader {
    correlation_id: u32,
    /// Read leniently (an unknown code reads as `internal`), unlike a
    /// per-partition code.
    error_code: u16,
}

record!(ResponseHeader { correlation_id: u32 = "correlation id", error_code: u16 = "error code" });

/// Bytes of a response header after the length prefix.
pub const RESPONSE_HEADER_BYTES: usize = ResponseHeader::MIN_BYTES;

/// Start a response frame in `out`: a length prefix to fill in, the header.
fn start_response(correlation_id: u32, code: ErrorCode, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    ResponseHeader { correlation_id, error_code: code as u16 }.encode(&mut Writer::new(out));
    start
}

/// Append a complete success response frame to `out`.
pub fn encode_response(correlation_id: u32, response: &Response, out: &mut Vec<u8>) {
    let start = start_response(correlation_id, ErrorCode::None, out);
    response.encode_body(&mut Writer::new(out));
    finish_frame(out, start, 0);
}

/// A frame in pieces: `head` with each of `inserts` spliced in, in order,
/// at its position in `head`. The batches a node sends (a fetch's trailing
/// batches, a replica answer's bodies) are most of its bytes: written to
/// the socket from where they are instead of copied into one frame.
#[derive(Debug, Default)]
pub struct FramePieces {
    /// Every byte of the frame but the inserts.
    pub head: Vec<u8>,
    /// `(position in head, bytes)`, positions not decreasing.
    pub inserts: Vec<(usize, bytes::Bytes)>,
}

impl FramePieces {
    /// A frame that is all head.
    pub fn whole(frame: Vec<u8>) -> FramePieces {
        FramePieces { head: frame, inserts: Vec::new() }
    }

    /// Bytes in the frame.
    pub fn len(&self) -> usize {
        self.head.len() + self.inserts.iter().map(|(_, bytes)| bytes.len()).sum::<usize>()
    }

    /// Whether the frame has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces to write, in order (some may be empty).
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let head_from = |index: usize| if index == 0 { 0 } else { self.inserts[index - 1].0 };
        let inserted = self
            .inserts
            .iter()
            .enumerate()
            .flat_map(move |(index, (position, bytes))| [&self.head[head_from(index)..*position], &bytes[..]]);
        inserted.chain(std::iter::once(&self.head[head_from(self.inserts.len())..]))
    }

    /// The same frame with every insert that lies inside the head copied
    /// into it; one at the head's end (a fetch's trailing batches) stays
    /// apart.
    pub fn joined_inside(self) -> FramePieces {
        if self.inserts.iter().all(|(position, _)| *position == self.head.len()) {
            return self;
        }
        self.joined()
    }

    /// The same frame all in its head: every insert copied into it.
    pub fn joined(self) -> FramePieces {
        if self.inserts.is_empty() {
            return self;
        }
        // Pooled when large (a fresh one is faulted in page by page).
        let mut head = crate::runtime::buffer_pool::take_empty(self.len());
        for piece in self.pieces() {
            head.extend_from_slice(piece);
        }
        crate::runtime::buffer_pool::give_back(self.head);
        FramePieces::whole(head)
    }
}

/// Encode a success response like [`encode_response`], in pieces: a
/// fetch's trailing batches and a replica answer's large bodies are left
/// out of the head (whose frame header counts them), so the same frame goes
/// on the wire without copying them.
pub fn encode_response_split(correlation_id: u32, mut response: Response) -> FramePieces {
    let mut frame = FramePieces::default();
    let start = start_response(correlation_id, ErrorCode::None, &mut frame.head);
    let trailing_bytes = response.encode_head(&mut Writer::diverting(&mut frame.head, &mut frame.inserts)).len();
    let diverted_bytes: usize = frame.inserts.iter().map(|(_, bytes)| bytes.len()).sum();
    finish_frame(&mut frame.head, start, diverted_bytes + trailing_bytes);
    let trailing = response.trailing_mut().map(std::mem::take).unwrap_or_default();
    assert_eq!(trailing.len(), trailing_bytes);
    if !trailing.is_empty() {
        frame.inserts.push((frame.head.len(), bytes::Bytes::from(trailing)));
    }
    frame
}

/// Append a complete error response frame to `out`: the header with the
/// code, then `message string | leader string` (empty: none).
pub fn encode_error(correlation_id: u32, error: &ErrorResponse, out: &mut Vec<u8>) {
    let start = start_response(correlation_id, error.code, out);
    let mut writer = Writer::new(out);
    writer.string(&error.message);
    writer.string(error.leader.as_deref().unwrap_or(""));
    finish_frame(out, start, 0);
}

/// An error answer's body: `message string | leader string`.
fn decode_error_body(code: ErrorCode, reader: &mut Reader<'_>) -> Result<ErrorResponse, ProtocolError> {
    let message = reader.string("error message")?;
    let leader = reader.string("leader")?;
    let leader = (!leader.is_empty()).then_some(leader);
    Ok(ErrorResponse { code, message, leader })
}

/// Decode a response frame body (after the length prefix) for a request of
/// kind `api_key`. Returns the correlation id and the outcome.
pub fn decode_response(api_key: ApiKey, frame: &[u8]) -> Result<(u32, Result<Response, ErrorResponse>), ProtocolError> {
    decode_with(api_key, Reader::new(frame))
}

/// Decode a response frame held as [`bytes::Bytes`], like
/// [`decode_response`], except that byte strings decoded as `Bytes` (a
/// replica answer's batches, nearly all of its bytes) are slices of the
/// frame instead of copies.
pub fn decode_response_shared(
    api_key: ApiKey,
    frame: &bytes::Bytes,
) -> Result<(u32, Result<Response, ErrorResponse>), ProtocolError> {
    decode_with(api_key, Reader::over_frame(frame))
}

fn decode_with(
    api_key: ApiKey,
    mut reader: Reader<'_>,
) -> Result<(u32, Result<Response, ErrorResponse>), ProtocolError> {
    let header = ResponseHeader::decode(&mut reader, ())?;
    let outcome = match ErrorCode::from_wire(header.error_code) {
        ErrorCode::None => Ok(Response::decode_body(api_key, &mut reader)?),
        code => Err(decode_error_body(code, &mut reader)?),
    };
    reader.finish()?;
    Ok((header.correlation_id, outcome))
}

/// Decode a response frame body it owns. A fetch's batches (the frame's last
/// field, and nearly all of it) reuse the frame's allocation instead of
/// being copied out.
pub fn decode_response_owned(
    api_key: ApiKey,
    mut frame: Vec<u8>,
) -> Result<(u32, Result<Response, ErrorResponse>), ProtocolError> {
    let mut reader = Reader::new(&frame);
    let header = ResponseHeader::decode(&mut reader, ())?;
    if header.error_code != ErrorCode::None as u16 {
        return decode_response(api_key, &frame);
    }
    let (mut response, trailing) = Response::decode_head(api_key, &mut reader)?;
    let Some(trailing) = trailing else {
        reader.finish()?;
        return Ok((header.correlation_id, Ok(response)));
    };
    let start = reader.position;
    trailing.check_ends_at(start, frame.len())?;
    frame.drain(..start);
    *response.trailing_mut().expect("a response with a trailing length has a trailing field") = frame;
    Ok((header.correlation_id, Ok(response)))
}

/// Where the trailing byte string (a fetch's batches) of a response frame of
/// `frame_bytes` starts, read from `head`, the frame's first bytes: Some
/// when the answer is a success of a kind that ends in one and `head`
/// holds all of the frame before it. A reader can then read the trailing
/// bytes straight into their own buffer ([`decode_response_parts`]), not
/// read the frame whole and move them down over the head.
pub fn response_trailing_start(api_key: ApiKey, head: &[u8], frame_bytes: usize) -> Option<usize> {
    let mut reader = Reader::new(head);
    let header = ResponseHeader::decode(&mut reader, ()).ok()?;
    if header.error_code != ErrorCode::None as u16 {
        return None;
    }
    let (_, trailing) = Response::decode_head(api_key, &mut reader).ok()?;
    let start = reader.position;
    trailing?.check_ends_at(start, frame_bytes).ok()?;
    Some(start)
}

/// Decode a response read in two parts: `head`, the frame up to where
/// [`response_trailing_start`] said its trailing byte string starts, and
/// `trailing`, the rest of the frame, which becomes that field as it is.
pub fn decode_response_parts(
    api_key: ApiKey,
    head: &[u8],
    trailing: Vec<u8>,
) -> Result<(u32, Result<Response, ErrorResponse>), ProtocolError> {
    let mut reader = Reader::new(head);
    let header = ResponseHeader::decode(&mut reader, ())?;
    if header.error_code != ErrorCode::None as u16 {
        return Err(ProtocolError::Invalid("an error answer split as if it had trailing bytes"));
    }
    let (mut response, length) = Response::decode_head(api_key, &mut reader)?;
    reader.finish()?;
    let Some(length) = length else { return Err(ProtocolError::Invalid("trailing bytes after the body")) };
    length.check_ends_at(0, trailing.len())?;
    *response.trailing_mut().expect("a response with a trailing length has a trailing field") = trailing;
    Ok((header.correlation_id, Ok(response)))
}
