//! Responses: the [`Response`] body, error answers, encode and decode.

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

fn encode_replica_fetched_many(writer: &mut Writer<'_>, response: &Response) {
    let Response::ReplicaFetchMany { leader_epoch, leader_shards, partitions } = response else {
        return;
    };
    writer.u32(*leader_epoch);
    writer.u16(*leader_shards);
    writer.u32(partitions.len() as u32);
    for fetched in partitions {
        writer.u32(fetched.index);
        writer.u16(fetched.error as u16);
        writer.u64(fetched.high_watermark.unwrap_or(u64::MAX));
        writer.u64(fetched.log_start_offset);
        writer.u64(fetched.log_end_offset);
        writer.u32(fetched.uncompressed_bytes);
        writer.bytes(&fetched.body);
    }
}

/// A per-partition error code must be one this side knows: read as
/// `internal`, an unknown one would not re-encode to what was sent.
fn known_error_code(value: u16) -> Result<ErrorCode, ProtocolError> {
    let code = ErrorCode::from_wire(value);
    match code as u16 == value {
        true => Ok(code),
        false => Err(ProtocolError::Invalid("unknown error code")),
    }
}

fn decode_replica_fetched_many(reader: &mut Reader<'_>) -> Result<Response, ProtocolError> {
    let leader_epoch = reader.u32("leader epoch")?;
    let leader_shards = reader.u16("leader shards")?;
    let count = reader.u32("partition count")? as usize;
    let mut partitions = Vec::with_capacity(count.min(reader.remaining() / REPLICA_FETCHED_PARTITION_FIXED_BYTES));
    for _ in 0..count {
        partitions.push(ReplicaFetchedPartition {
            index: reader.u32("index")?,
            error: known_error_code(reader.u16("error code")?)?,
            high_watermark: Some(reader.u64("high watermark")?).filter(|&offset| offset != u64::MAX),
            log_start_offset: reader.u64("log start")?,
            log_end_offset: reader.u64("log end")?,
            uncompressed_bytes: reader.u32("uncompressed bytes")?,
            body: reader.bytes("batches")?,
        });
    }
    Ok(Response::ReplicaFetchMany { leader_epoch, leader_shards, partitions })
}

/// Append a complete success response frame to `out`.
pub fn encode_response(correlation_id: u32, response: &Response, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut writer = Writer::new(out);
    writer.u32(correlation_id);
    writer.u16(ErrorCode::None as u16);
    match response {
        Response::CreateTopic | Response::DeleteTopic | Response::CommitOffset => {}
        Response::ListTopics(topics) => {
            writer.u32(topics.len() as u32);
            for (name, partitions) in topics {
                writer.string(name);
                writer.u32(*partitions);
            }
        }
        Response::DescribeTopic(partitions) => {
            writer.u32(partitions.len() as u32);
            for description in partitions {
                writer.u32(description.partition);
                writer.u64(description.log_start_offset);
                writer.u64(description.log_end_offset);
                writer.u64(description.high_watermark.unwrap_or(u64::MAX));
                writer.u32(description.segments);
                writer.u64(description.bytes);
                writer.u32(description.leader_epoch);
            }
        }
        Response::Produce { base_offset, next_offset, duplicate } => {
            writer.u64(*base_offset);
            writer.u64(*next_offset);
            writer.u8(u8::from(*duplicate));
        }
        Response::Fetch { high_watermark, log_start_offset, next_offset, batches } => {
            writer.u64(*high_watermark);
            writer.u64(*log_start_offset);
            writer.u64(*next_offset);
            writer.bytes(batches);
        }
        Response::ListOffsets { log_start_offset, log_end_offset, high_watermark } => {
            writer.u64(*log_start_offset);
            writer.u64(*log_end_offset);
            writer.u64(*high_watermark);
        }
        Response::FetchOffset(state) => match state {
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
        },
        Response::InitProducer { producer_id } => writer.u64(*producer_id),
        Response::FindOffset { offset } => writer.u64(offset.unwrap_or(u64::MAX)),
        Response::ReplicaChallenge { nonce } => writer.bytes(nonce),
        Response::ReplicaAuth { leader_id, leader_epoch } => {
            writer.u64(*leader_id);
            writer.u32(*leader_epoch);
        }
        Response::ReplicaFetch {
            high_watermark,
            log_start_offset,
            log_end_offset,
            leader_epoch,
            uncompressed_bytes,
            compressed,
        } => {
            writer.u64(high_watermark.unwrap_or(u64::MAX));
            writer.u64(*log_start_offset);
            writer.u64(*log_end_offset);
            writer.u32(*leader_epoch);
            writer.u32(*uncompressed_bytes);
            writer.bytes(compressed);
        }
        Response::EpochEndOffset { epoch, end_offset, log_start_offset } => {
            writer.u8(u8::from(epoch.is_some()));
            writer.u32(epoch.unwrap_or(0));
            writer.u64(*end_offset);
            writer.u64(*log_start_offset);
        }
        Response::TopicConfigs(topics) => {
            writer.u32(topics.len() as u32);
            for (name, settings) in topics {
                writer.string(name);
                writer.u32(settings.partitions);
                writer.u64(settings.retention_bytes);
                writer.u64(settings.retention_ms);
                writer.u64(settings.segment_bytes);
            }
        }
        Response::GroupOffsets(groups) => {
            writer.u32(groups.len() as u32);
            for (group, offset) in groups {
                writer.string(group);
                writer.u64(*offset);
            }
        }
        Response::ReplicaFetchMany { .. } => encode_replica_fetched_many(&mut writer, response),
    }
    finish_frame(out, start);
}

/// Encode a success response like [`encode_response`], but leave a fetch's
/// trailing batches out of `out` and return them: the frame header in
/// `out` already counts them, so writing `out` then the returned bytes puts
/// the same frame on the wire without copying the batches (the largest
/// thing the node sends).
pub fn encode_response_split(correlation_id: u32, response: Response, out: &mut Vec<u8>) -> Vec<u8> {
    let start = out.len();
    let (head, body) = match response {
        Response::Fetch { high_watermark, log_start_offset, next_offset, batches } => {
            let head = Response::Fetch { high_watermark, log_start_offset, next_offset, batches: Vec::new() };
            (head, batches)
        }
        Response::ReplicaFetch {
            high_watermark,
            log_start_offset,
            log_end_offset,
            leader_epoch,
            uncompressed_bytes,
            compressed,
        } => {
            let head = Response::ReplicaFetch {
                high_watermark,
                log_start_offset,
                log_end_offset,
                leader_epoch,
                uncompressed_bytes,
                compressed: Vec::new(),
            };
            (head, compressed)
        }
        other => {
            encode_response(correlation_id, &other, out);
            return Vec::new();
        }
    };
    encode_response(correlation_id, &head, out);
    // The body is the last field: patch its length and the frame length.
    let length_at = out.len() - 4;
    out[length_at..].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let frame_bytes = (out.len() - start - LENGTH_PREFIX_BYTES + body.len()) as u32;
    out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&frame_bytes.to_le_bytes());
    body
}

/// Append a complete error response frame to `out`.
pub fn encode_error(correlation_id: u32, error: &ErrorResponse, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut writer = Writer::new(out);
    writer.u32(correlation_id);
    writer.u16(error.code as u16);
    writer.string(&error.message);
    writer.string(error.leader.as_deref().unwrap_or(""));
    finish_frame(out, start);
}

/// Decode a response frame body (after the length prefix) for a request of
/// kind `api_key`. Returns the correlation id and the outcome.
pub fn decode_response(api_key: ApiKey, frame: &[u8]) -> Result<(u32, Result<Response, ErrorResponse>), ProtocolError> {
    let (correlation_id, mut reader) = response_reader(frame)?;
    let code = ErrorCode::from_wire(reader.u16("error code")?);
    if code != ErrorCode::None {
        let message = reader.string("error message")?;
        let leader = reader.string("leader")?;
        reader.finish()?;
        let leader = (!leader.is_empty()).then_some(leader);
        return Ok((correlation_id, Err(ErrorResponse { code, message, leader })));
    }
    let response = decode_success(api_key, &mut reader)?;
    reader.finish()?;
    Ok((correlation_id, Ok(response)))
}

/// Decode a response frame body it owns. A fetch's batches (the frame's last
/// field, and nearly all of it) reuse the frame's allocation instead of
/// being copied out.
pub fn decode_response_owned(
    api_key: ApiKey,
    mut frame: Vec<u8>,
) -> Result<(u32, Result<Response, ErrorResponse>), ProtocolError> {
    if !matches!(api_key, ApiKey::Fetch | ApiKey::ReplicaFetch) {
        return decode_response(api_key, &frame);
    }
    let (correlation_id, mut reader) = response_reader(&frame)?;
    if reader.u16("error code")? != ErrorCode::None as u16 {
        return decode_response(api_key, &frame);
    }
    // Decode the fixed fields with an empty trailing field, then move the
    // real one out of the frame.
    let fixed = match api_key {
        ApiKey::Fetch => 3 * 8,
        _ => 3 * 8 + 2 * 4,
    };
    let start = reader.position + fixed + 4;
    let body_bytes = frame.get(start - 4..start).ok_or(ProtocolError::Truncated("response"))?;
    let length = u32::from_le_bytes(body_bytes.try_into().expect("4 bytes")) as usize;
    if frame.len() - start != length {
        return Err(if frame.len() - start < length {
            ProtocolError::Truncated("batches")
        } else {
            ProtocolError::Invalid("trailing bytes after the body")
        });
    }
    let mut head = frame[..start].to_vec();
    head[start - 4..start].copy_from_slice(&0u32.to_le_bytes());
    let (_, decoded) = decode_response(api_key, &head)?;
    frame.drain(..start);
    let response = match decoded {
        Ok(Response::Fetch { high_watermark, log_start_offset, next_offset, .. }) => {
            Response::Fetch { high_watermark, log_start_offset, next_offset, batches: frame }
        }
        Ok(Response::ReplicaFetch {
            high_watermark,
            log_start_offset,
            log_end_offset,
            leader_epoch,
            uncompressed_bytes,
            ..
        }) => Response::ReplicaFetch {
            high_watermark,
            log_start_offset,
            log_end_offset,
            leader_epoch,
            uncompressed_bytes,
            compressed: frame,
        },
        other => return Ok((correlation_id, other)),
    };
    Ok((correlation_id, Ok(response)))
}

/// Correlation id of a response frame body, and a reader positioned after it.
pub fn response_reader(frame: &[u8]) -> Result<(u32, Reader<'_>), ProtocolError> {
    let mut reader = Reader::new(frame);
    let correlation_id = reader.u32("correlation id")?;
    Ok((correlation_id, reader))
}

fn decode_success(api_key: ApiKey, reader: &mut Reader<'_>) -> Result<Response, ProtocolError> {
    Ok(match api_key {
        ApiKey::CreateTopic => Response::CreateTopic,
        ApiKey::DeleteTopic => Response::DeleteTopic,
        ApiKey::CommitOffset => Response::CommitOffset,
        ApiKey::ListTopics => {
            let count = reader.u32("topic count")?;
            let mut topics = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                topics.push((reader.string("topic")?, reader.u32("partitions")?));
            }
            Response::ListTopics(topics)
        }
        ApiKey::DescribeTopic => {
            let count = reader.u32("partition count")?;
            let mut partitions = Vec::with_capacity(count.min(10_000) as usize);
            for _ in 0..count {
                partitions.push(PartitionDescription {
                    partition: reader.u32("partition")?,
                    log_start_offset: reader.u64("log start")?,
                    log_end_offset: reader.u64("log end")?,
                    high_watermark: Some(reader.u64("high watermark")?).filter(|&offset| offset != u64::MAX),
                    segments: reader.u32("segments")?,
                    bytes: reader.u64("bytes")?,
                    leader_epoch: reader.u32("leader epoch")?,
                });
            }
            Response::DescribeTopic(partitions)
        }
        ApiKey::Produce => Response::Produce {
            base_offset: reader.u64("base offset")?,
            next_offset: reader.u64("next offset")?,
            duplicate: reader.u8("duplicate")? != 0,
        },
        ApiKey::Fetch => Response::Fetch {
            high_watermark: reader.u64("high watermark")?,
            log_start_offset: reader.u64("log start")?,
            next_offset: reader.u64("next offset")?,
            batches: reader.bytes("batches")?,
        },
        ApiKey::ListOffsets => Response::ListOffsets {
            log_start_offset: reader.u64("log start")?,
            log_end_offset: reader.u64("log end")?,
            high_watermark: reader.u64("high watermark")?,
        },
        ApiKey::FetchOffset => Response::FetchOffset(match reader.u8("state")? {
            0 => CommittedState::None,
            1 => CommittedState::Valid(reader.u64("offset")?),
            2 => CommittedState::OutOfRange {
                committed: reader.u64("committed")?,
                log_start_offset: reader.u64("log start")?,
                log_end_offset: reader.u64("log end")?,
            },
            _ => return Err(ProtocolError::Invalid("unknown committed-offset state")),
        }),
        ApiKey::InitProducer => Response::InitProducer { producer_id: reader.u64("producer id")? },
        ApiKey::FindOffset => {
            let offset = reader.u64("offset")?;
            Response::FindOffset { offset: (offset != u64::MAX).then_some(offset) }
        }
        ApiKey::ReplicaHello => Response::ReplicaChallenge { nonce: reader.bytes("nonce")? },
        ApiKey::ReplicaAuth => {
            Response::ReplicaAuth { leader_id: reader.u64("leader id")?, leader_epoch: reader.u32("leader epoch")? }
        }
        ApiKey::ReplicaFetch => Response::ReplicaFetch {
            high_watermark: Some(reader.u64("high watermark")?).filter(|&offset| offset != u64::MAX),
            log_start_offset: reader.u64("log start")?,
            log_end_offset: reader.u64("log end")?,
            leader_epoch: reader.u32("leader epoch")?,
            uncompressed_bytes: reader.u32("uncompressed bytes")?,
            compressed: reader.bytes("compressed batches")?,
        },
        ApiKey::EpochEndOffset => {
            let known = match reader.u8("epoch known")? {
                0 => false,
                1 => true,
                _ => return Err(ProtocolError::Invalid("epoch flag must be 0 or 1")),
            };
            let epoch = reader.u32("epoch")?;
            if !known && epoch != 0 {
                return Err(ProtocolError::Invalid("an unknown epoch must be sent as 0"));
            }
            Response::EpochEndOffset {
                epoch: known.then_some(epoch),
                end_offset: reader.u64("end offset")?,
                log_start_offset: reader.u64("log start")?,
            }
        }
        ApiKey::TopicConfigs => {
            let count = reader.u32("topic count")?;
            let mut topics = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                let name = reader.string("topic")?;
                let settings = TopicSettings {
                    partitions: reader.u32("partitions")?,
                    retention_bytes: reader.u64("retention bytes")?,
                    retention_ms: reader.u64("retention ms")?,
                    segment_bytes: reader.u64("segment bytes")?,
                };
                topics.push((name, settings));
            }
            Response::TopicConfigs(topics)
        }
        ApiKey::ReplicaFetchMany => decode_replica_fetched_many(reader)?,
        ApiKey::GroupOffsets => {
            let count = reader.u32("group count")?;
            let mut groups = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                groups.push((reader.string("group")?, reader.u64("offset")?));
            }
            Response::GroupOffsets(groups)
        }
    })
}
