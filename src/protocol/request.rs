//! Requests: the [`Request`] body, its header, encode and decode.

use super::types::*;
use super::wire::*;

/// A request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Create a topic.
    CreateTopic {
        /// Topic name.
        name: String,
        /// Settings.
        settings: TopicSettings,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// List topics.
    ListTopics,
    /// Describe a topic's partitions.
    DescribeTopic {
        /// Topic name.
        name: String,
    },
    /// Append a batch.
    Produce {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Acknowledgement level.
        acks: Acks,
        /// Encoded batch (storage batch format).
        batch: Vec<u8>,
    },
    /// Read batches.
    Fetch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// First offset wanted.
        offset: u64,
        /// Soft limit on returned bytes (at least one batch is returned).
        max_bytes: u32,
        /// Long-poll: wait up to this long for data at `offset`.
        max_wait_ms: u32,
    },
    /// Offsets of a partition.
    ListOffsets {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// Commit a consumer-group offset.
    CommitOffset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Next offset the group will consume.
        offset: u64,
    },
    /// Read a consumer-group offset.
    FetchOffset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// Obtain a producer id.
    InitProducer,
    /// First offset with timestamp >= `timestamp_ms`.
    FindOffset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Timestamp.
        timestamp_ms: i64,
    },
    /// A follower's first frame on a replication connection.
    ReplicaHello {
        /// The follower's node id.
        node_id: u64,
    },
    /// HMAC-SHA256(secret, nonce | node id) over the leader's challenge.
    ReplicaAuth {
        /// The proof.
        proof: Vec<u8>,
    },
    /// A follower's read of a partition, from its own log end.
    ReplicaFetch {
        /// The follower's node id (must match the authenticated one).
        replica_id: u64,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The follower's log end: everything before it is durable there.
        offset: u64,
        /// Soft limit on uncompressed bytes.
        max_bytes: u32,
        /// Long-poll bound.
        max_wait_ms: u32,
    },
    /// Where `epoch` ends in the leader's log (divergence check).
    EpochEndOffset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The follower's latest epoch.
        epoch: u32,
    },
    /// Every topic with its settings.
    TopicConfigs,
    /// Every consumer group's committed offset of a partition.
    GroupOffsets {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// A follower's read of many partitions in one long poll.
    ReplicaFetchMany {
        /// The follower's node id (must match the authenticated one).
        replica_id: u64,
        /// Long-poll bound: answered as soon as any partition has news.
        max_wait_ms: u32,
        /// Soft limit on the answer's uncompressed batch bytes.
        max_bytes: u32,
        /// Soft limit on one partition's uncompressed batch bytes.
        partition_max_bytes: u32,
        /// The partitions, each with the follower's durable end.
        partitions: Vec<ReplicaFetchPartition>,
    },
}

impl Request {
    /// The API key of this request.
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::CreateTopic { .. } => ApiKey::CreateTopic,
            Request::DeleteTopic { .. } => ApiKey::DeleteTopic,
            Request::ListTopics => ApiKey::ListTopics,
            Request::DescribeTopic { .. } => ApiKey::DescribeTopic,
            Request::Produce { .. } => ApiKey::Produce,
            Request::Fetch { .. } => ApiKey::Fetch,
            Request::ListOffsets { .. } => ApiKey::ListOffsets,
            Request::CommitOffset { .. } => ApiKey::CommitOffset,
            Request::FetchOffset { .. } => ApiKey::FetchOffset,
            Request::InitProducer => ApiKey::InitProducer,
            Request::FindOffset { .. } => ApiKey::FindOffset,
            Request::ReplicaHello { .. } => ApiKey::ReplicaHello,
            Request::ReplicaAuth { .. } => ApiKey::ReplicaAuth,
            Request::ReplicaFetch { .. } => ApiKey::ReplicaFetch,
            Request::EpochEndOffset { .. } => ApiKey::EpochEndOffset,
            Request::TopicConfigs => ApiKey::TopicConfigs,
            Request::GroupOffsets { .. } => ApiKey::GroupOffsets,
            Request::ReplicaFetchMany { .. } => ApiKey::ReplicaFetchMany,
        }
    }

    /// The (topic, partition) this request targets, if it targets one.
    pub fn partition(&self) -> Option<(&str, u32)> {
        match self {
            Request::Produce { topic, partition, .. }
            | Request::Fetch { topic, partition, .. }
            | Request::ListOffsets { topic, partition }
            | Request::CommitOffset { topic, partition, .. }
            | Request::FetchOffset { topic, partition, .. }
            | Request::FindOffset { topic, partition, .. }
            | Request::ReplicaFetch { topic, partition, .. }
            | Request::EpochEndOffset { topic, partition, .. }
            | Request::GroupOffsets { topic, partition } => Some((topic, *partition)),
            _ => None,
        }
    }
}

/// Append a complete request frame to `out`.
pub fn encode_request(correlation_id: u32, request: &Request, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut writer = Writer::new(out);
    writer.u16(request.api_key() as u16);
    writer.u16(PROTOCOL_VERSION);
    writer.u32(correlation_id);
    match request {
        Request::CreateTopic { name, settings } => {
            writer.string(name);
            writer.u32(settings.partitions);
            writer.u64(settings.retention_bytes);
            writer.u64(settings.retention_ms);
            writer.u64(settings.segment_bytes);
        }
        Request::DeleteTopic { name } | Request::DescribeTopic { name } => writer.string(name),
        Request::ListTopics | Request::InitProducer => {}
        Request::Produce { topic, partition, acks, batch } => {
            writer.string(topic);
            writer.u32(*partition);
            writer.u8(*acks as u8);
            writer.bytes(batch);
        }
        Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms } => {
            writer.string(topic);
            writer.u32(*partition);
            writer.u64(*offset);
            writer.u32(*max_bytes);
            writer.u32(*max_wait_ms);
        }
        Request::ListOffsets { topic, partition } => {
            writer.string(topic);
            writer.u32(*partition);
        }
        Request::CommitOffset { group, topic, partition, offset } => {
            writer.string(group);
            writer.string(topic);
            writer.u32(*partition);
            writer.u64(*offset);
        }
        Request::FetchOffset { group, topic, partition } => {
            writer.string(group);
            writer.string(topic);
            writer.u32(*partition);
        }
        Request::FindOffset { topic, partition, timestamp_ms } => {
            writer.string(topic);
            writer.u32(*partition);
            writer.u64(*timestamp_ms as u64);
        }
        Request::ReplicaHello { node_id } => writer.u64(*node_id),
        Request::ReplicaAuth { proof } => writer.bytes(proof),
        Request::ReplicaFetch { replica_id, topic, partition, offset, max_bytes, max_wait_ms } => {
            writer.u64(*replica_id);
            writer.string(topic);
            writer.u32(*partition);
            writer.u64(*offset);
            writer.u32(*max_bytes);
            writer.u32(*max_wait_ms);
        }
        Request::EpochEndOffset { topic, partition, epoch } => {
            writer.string(topic);
            writer.u32(*partition);
            writer.u32(*epoch);
        }
        Request::TopicConfigs => {}
        Request::GroupOffsets { topic, partition } => {
            writer.string(topic);
            writer.u32(*partition);
        }
        Request::ReplicaFetchMany { .. } => encode_replica_fetch_many(&mut writer, request),
    }
    finish_frame(out, start);
}

/// Encode a request like [`encode_request`], but leave a produce's batch out
/// of `out` and return it: `out` then the returned bytes are the same frame,
/// and the batch is written without being copied into it.
pub fn encode_request_split<'a>(correlation_id: u32, request: &'a Request, out: &mut Vec<u8>) -> &'a [u8] {
    let Request::Produce { topic, partition, acks, batch } = request else {
        encode_request(correlation_id, request, out);
        return &[];
    };
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut writer = Writer::new(out);
    writer.u16(ApiKey::Produce as u16);
    writer.u16(PROTOCOL_VERSION);
    writer.u32(correlation_id);
    writer.string(topic);
    writer.u32(*partition);
    writer.u8(*acks as u8);
    writer.u32(batch.len() as u32);
    let frame_bytes = (out.len() - start - LENGTH_PREFIX_BYTES + batch.len()) as u32;
    out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&frame_bytes.to_le_bytes());
    batch
}

fn acks_from_wire(value: u8) -> Result<Acks, ProtocolError> {
    match value {
        0 => Ok(Acks::None),
        1 => Ok(Acks::Leader),
        2 => Ok(Acks::All),
        _ => Err(ProtocolError::Invalid("acks must be 0, 1 or 2")),
    }
}

/// The fields of a produce frame before its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceHead {
    /// Frame header.
    pub header: RequestHeader,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Acknowledgement level.
    pub acks: Acks,
    /// Where the batch starts in the frame body.
    pub batch_start: usize,
    /// Batch length.
    pub batch_bytes: usize,
}

/// Parse a produce frame's fields up to its batch from the first bytes of
/// the frame body. `Ok(None)` when `head` is not a (version 1) produce frame
/// or too short to hold those fields; a wrong `frame_bytes` is an error.
pub fn decode_produce_head(head: &[u8], frame_bytes: usize) -> Result<Option<ProduceHead>, ProtocolError> {
    let Ok(header) = decode_request_header(head) else { return Ok(None) };
    if header.api_key != ApiKey::Produce as u16 || header.api_version != PROTOCOL_VERSION {
        return Ok(None);
    }
    let mut reader = Reader::new(&head[REQUEST_HEADER_BYTES..]);
    let fields = (|| -> Result<_, ProtocolError> {
        let topic = reader.string("topic")?;
        let partition = reader.u32("partition")?;
        let acks = reader.u8("acks")?;
        let batch_bytes = reader.u32("batch")? as usize;
        Ok((topic, partition, acks, batch_bytes))
    })();
    let Ok((topic, partition, acks, batch_bytes)) = fields else { return Ok(None) };
    let acks = acks_from_wire(acks)?;
    let batch_start = REQUEST_HEADER_BYTES + reader.position;
    match (batch_start + batch_bytes).cmp(&frame_bytes) {
        std::cmp::Ordering::Greater => Err(ProtocolError::Truncated("batch")),
        std::cmp::Ordering::Less => Err(ProtocolError::Invalid("trailing bytes after the body")),
        std::cmp::Ordering::Equal => Ok(Some(ProduceHead { header, topic, partition, acks, batch_start, batch_bytes })),
    }
}

/// Decode a request frame body it owns. A produce's batch (the frame's
/// last field, and nearly all of it) reuses the frame's allocation instead
/// of being copied into a new one.
pub fn decode_request_owned(mut frame: Vec<u8>) -> Result<(RequestHeader, Request), ProtocolError> {
    let Some(head) = decode_produce_head(&frame, frame.len())? else { return decode_request(&frame) };
    frame.drain(..head.batch_start);
    let request = Request::Produce { topic: head.topic, partition: head.partition, acks: head.acks, batch: frame };
    Ok((head.header, request))
}

/// Header of a decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Operation.
    pub api_key: u16,
    /// Version.
    pub api_version: u16,
    /// Echoed in the response.
    pub correlation_id: u32,
}

/// Parse the request header from a frame body (after the length prefix).
/// Works even when the body is not understood, so errors can be answered
/// with the right correlation id.
pub fn decode_request_header(frame: &[u8]) -> Result<RequestHeader, ProtocolError> {
    let mut reader = Reader::new(frame);
    Ok(RequestHeader {
        api_key: reader.u16("api key")?,
        api_version: reader.u16("api version")?,
        correlation_id: reader.u32("correlation id")?,
    })
}

/// Decode a request frame body (after the length prefix).
pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request), ProtocolError> {
    let header = decode_request_header(frame)?;
    let api_key = ApiKey::from_wire(header.api_key)?;
    if header.api_version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion(header.api_version));
    }
    let mut reader = Reader::new(&frame[REQUEST_HEADER_BYTES..]);
    let request = match api_key {
        ApiKey::CreateTopic => Request::CreateTopic {
            name: reader.string("topic")?,
            settings: TopicSettings {
                partitions: reader.u32("partitions")?,
                retention_bytes: reader.u64("retention bytes")?,
                retention_ms: reader.u64("retention ms")?,
                segment_bytes: reader.u64("segment bytes")?,
            },
        },
        ApiKey::DeleteTopic => Request::DeleteTopic { name: reader.string("topic")? },
        ApiKey::ListTopics => Request::ListTopics,
        ApiKey::DescribeTopic => Request::DescribeTopic { name: reader.string("topic")? },
        ApiKey::Produce => Request::Produce {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            acks: acks_from_wire(reader.u8("acks")?)?,
            batch: reader.bytes("batch")?,
        },
        ApiKey::Fetch => Request::Fetch {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            offset: reader.u64("offset")?,
            max_bytes: reader.u32("max bytes")?,
            max_wait_ms: reader.u32("max wait")?,
        },
        ApiKey::ListOffsets => {
            Request::ListOffsets { topic: reader.string("topic")?, partition: reader.u32("partition")? }
        }
        ApiKey::CommitOffset => Request::CommitOffset {
            group: reader.string("group")?,
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            offset: reader.u64("offset")?,
        },
        ApiKey::FetchOffset => Request::FetchOffset {
            group: reader.string("group")?,
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
        },
        ApiKey::InitProducer => Request::InitProducer,
        ApiKey::FindOffset => Request::FindOffset {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            timestamp_ms: reader.u64("timestamp")? as i64,
        },
        ApiKey::ReplicaHello => Request::ReplicaHello { node_id: reader.u64("node id")? },
        ApiKey::ReplicaAuth => Request::ReplicaAuth { proof: reader.bytes("proof")? },
        ApiKey::ReplicaFetch => Request::ReplicaFetch {
            replica_id: reader.u64("replica id")?,
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            offset: reader.u64("offset")?,
            max_bytes: reader.u32("max bytes")?,
            max_wait_ms: reader.u32("max wait")?,
        },
        ApiKey::EpochEndOffset => Request::EpochEndOffset {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            epoch: reader.u32("epoch")?,
        },
        ApiKey::TopicConfigs => Request::TopicConfigs,
        ApiKey::GroupOffsets => {
            Request::GroupOffsets { topic: reader.string("topic")?, partition: reader.u32("partition")? }
        }
        ApiKey::ReplicaFetchMany => decode_replica_fetch_many(&mut reader)?,
    };
    reader.finish()?;
    Ok((header, request))
}

fn encode_replica_fetch_many(writer: &mut Writer<'_>, request: &Request) {
    let Request::ReplicaFetchMany { replica_id, max_wait_ms, max_bytes, partition_max_bytes, partitions } = request
    else {
        return;
    };
    writer.u64(*replica_id);
    writer.u32(*max_wait_ms);
    writer.u32(*max_bytes);
    writer.u32(*partition_max_bytes);
    writer.u32(partitions.len() as u32);
    for wanted in partitions {
        writer.string(&wanted.topic);
        writer.u32(wanted.partition);
        writer.u64(wanted.offset);
        writer.u64(wanted.high_watermark.unwrap_or(u64::MAX));
    }
}

fn decode_replica_fetch_many(reader: &mut Reader<'_>) -> Result<Request, ProtocolError> {
    let replica_id = reader.u64("replica id")?;
    let max_wait_ms = reader.u32("max wait")?;
    let max_bytes = reader.u32("max bytes")?;
    let partition_max_bytes = reader.u32("partition max bytes")?;
    let count = reader.u32("partition count")? as usize;
    // A hostile count allocates no more than the frame could hold.
    let mut partitions = Vec::with_capacity(count.min(reader.remaining() / REPLICA_FETCH_PARTITION_MIN_BYTES));
    for _ in 0..count {
        partitions.push(ReplicaFetchPartition {
            topic: reader.string("topic")?,
            partition: reader.u32("partition")?,
            offset: reader.u64("offset")?,
            high_watermark: Some(reader.u64("high watermark")?).filter(|&offset| offset != u64::MAX),
        });
    }
    Ok(Request::ReplicaFetchMany { replica_id, max_wait_ms, max_bytes, partition_max_bytes, partitions })
}
