//! Kafka Fetch and ListOffsets over the native consumer reads: records
//! below the high watermark consumers may see, the log start offset, and
//! the native long poll.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use kafka_protocol::messages::ApiKey;

use super::{at_most, count_errors, error_code, respond, transcode, Access, KafkaServeError};
use crate::protocol::kafka::{decode_body, encode_response_splicing, KafkaRequest};
use crate::protocol::{FramePieces, Request, Response};
use crate::requests::watch::{wait_for_news, Watched};
use crate::security::Operation;
use crate::shard::context::ShardContext;

/// Longest native long poll a Fetch of one partition waits in at a time:
/// between two, the read checks again that this node is still the
/// leader (the native poll does not wake when it steps down).
const SINGLE_PARTITION_POLL_SLICE: Duration = Duration::from_millis(1000);
/// Most partitions of one Fetch read at once (waves are one per shard, up
/// to this): each may pass its share of `max_bytes` by one batch.
const MAX_CONCURRENT_PARTITION_READS: usize = 8;
/// Records of at least this many bytes go on the wire from their own
/// buffer (each a write of its own); smaller ones are copied into the
/// frame, which costs less than a write.
const SPLICED_RECORDS_MIN_BYTES: usize = 64 << 10;
/// ListOffsets timestamp asking for the log start offset.
const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets timestamp asking for the high watermark.
const LATEST_TIMESTAMP: i64 = -1;

/// Answer a Fetch: read every partition without waiting; if none had
/// records or an error, wait up to `max_wait_ms` (capped by
/// `limits.max_fetch_wait_ms`) for any of them (not at all when
/// `min_bytes` is 0). A Fetch naming more than
/// `limits.max_partitions_per_fetch` partitions closes the connection.
pub async fn fetch(
    context: &Rc<ShardContext>,
    request: &KafkaRequest,
    access: Access<'_>,
) -> Result<FramePieces, KafkaServeError> {
    let mut body: FetchRequest = decode_body(request)?;
    let partition_count = body.topics.iter().map(|topic| topic.partitions.len()).sum::<usize>();
    let limit = context.config.limits.max_partitions_per_fetch;
    if partition_count > limit {
        return Err(KafkaServeError::TooManyPartitions { request: "fetch", partitions: partition_count, limit });
    }
    let max_wait_ms = match body.min_bytes > 0 {
        true => u64::try_from(body.max_wait_ms).unwrap_or(0).min(context.config.limits.max_fetch_wait_ms),
        false => 0,
    };
    // Topics the user may not read are answered at once and never waited on.
    let (topics, refused): (Vec<FetchTopic>, Vec<FetchTopic>) = std::mem::take(&mut body.topics)
        .into_iter()
        .partition(|topic| access.allows(context, Operation::Fetch { topic: &topic.topic.0 }));
    body.topics = topics;
    let deadline = Instant::now() + Duration::from_millis(max_wait_ms);
    // Counted after the refused topics left: a poll of nothing returns at once.
    let readable_partitions = body.topics.iter().map(|topic| topic.partitions.len()).sum::<usize>();
    let mut responses = read_all(context, &body, 0).await;
    if readable_partitions > 1 && !answer_has_news(&responses) && Instant::now() < deadline {
        // One wait for news on any partition, then one read. Woken by
        // something a read does not answer with records or an error, it
        // answers without records rather than wait again at once (a spin).
        wait_for_news(context, watched_partitions(&body), deadline).await;
        responses = read_all(context, &body, 0).await;
    }
    // Bounded by the deadline: every round long-polls first.
    while readable_partitions == 1 && !answer_has_news(&responses) && Instant::now() < deadline {
        // The native long poll wakes on the partition's own appends. In
        // whole milliseconds rounded up, so the last slice reaches the
        // deadline (rounded down, rounds of 0 ms read until it passed).
        let slice = deadline.saturating_duration_since(Instant::now()).min(SINGLE_PARTITION_POLL_SLICE);
        let wait_ms = u32::try_from(slice.as_micros().div_ceil(1000)).unwrap_or(u32::MAX);
        let slice_started = Instant::now();
        responses = read_all(context, &body, wait_ms).await;
        if slice_started.elapsed() < slice {
            // Back before its wait ended without records or an error (no
            // such answer is known: even a fail-stopped log waits out its
            // time): asked again at once, it would spin the shard.
            break;
        }
    }
    responses.extend(refused.iter().map(|topic| {
        let code = ResponseError::TopicAuthorizationFailed.code();
        let partitions = topic.partitions.iter().map(|partition| unanswered(partition.partition).with_error_code(code));
        FetchableTopicResponse::default().with_topic(topic.topic.clone()).with_partitions(partitions.collect())
    }));
    let codes = responses.iter().flat_map(|topic| topic.partitions.iter().map(|partition| partition.error_code));
    count_errors(context, ApiKey::Fetch, codes);
    let response = FetchResponse::default().with_responses(responses);
    let spliced = spliced_records(&response);
    let (version, correlation_id) = (request.header.request_api_version, request.header.correlation_id);
    Ok(encode_response_splicing(ApiKey::Fetch, version, correlation_id, &response, &spliced)?)
}

/// The records of `response` written from their own buffers rather than
/// copied into the frame: those of at least [`SPLICED_RECORDS_MIN_BYTES`].
fn spliced_records(response: &FetchResponse) -> Vec<Bytes> {
    let partitions = response.responses.iter().flat_map(|topic| &topic.partitions);
    let records = partitions.filter_map(|partition| partition.records.as_ref());
    records.filter(|records| records.len() >= SPLICED_RECORDS_MIN_BYTES).cloned().collect()
}

/// The partitions a Fetch asks for, as a watch takes them. A negative
/// index or offset is left out, though no Fetch naming one waits: its
/// first read answers an error.
fn watched_partitions(body: &FetchRequest) -> Vec<Watched> {
    let wanted = body.topics.iter().flat_map(|topic| {
        topic.partitions.iter().filter_map(|partition| {
            let index = u32::try_from(partition.partition).ok()?;
            let offset = u64::try_from(partition.fetch_offset).ok()?;
            Some((topic.topic.0.to_string(), index, offset))
        })
    });
    wanted.collect()
}

/// Whether any partition has records or an error to report.
fn answer_has_news(responses: &[FetchableTopicResponse]) -> bool {
    responses.iter().flat_map(|topic| &topic.partitions).any(|partition| {
        partition.error_code != 0 || partition.records.as_ref().is_some_and(|records| !records.is_empty())
    })
}

/// One read of every partition, the response's `max_bytes` shared out in
/// order: a read returns at least one batch, so a partition with records
/// may pass its share; once the budget is spent, later partitions answer
/// their offsets without records, so a Fetch naming many partitions (or
/// one partition many times) stays near `max_bytes`.
///
/// Partitions are read in waves of up to one per shard (at most
/// [`MAX_CONCURRENT_PARTITION_READS`]), in request order, concurrently: a
/// consumer fetches all its partitions over one connection, and read one
/// after another they would wait on each other's disk reads and leave all
/// the copying to one core. A wave takes partitions while its shares
/// leave budget (each gets its `partition_max_bytes` of what is left, as
/// if those before it used theirs; at least one batch); the next wave
/// shares what the earlier ones really left. So no partition is answered
/// without records while budget is left (an idle first partition cannot
/// starve the others). Only the answer's first records may pass their
/// share (Kafka's KIP-74): a later read that did is answered without
/// records, so the answer passes the budget by at most one batch.
async fn read_all(context: &Rc<ShardContext>, body: &FetchRequest, wait_ms: u32) -> Vec<FetchableTopicResponse> {
    let mut wanted = body
        .topics
        .iter()
        .enumerate()
        .flat_map(|(topic_index, topic)| {
            topic.partitions.iter().map(move |partition| {
                let partition_max = usize::try_from(partition.partition_max_bytes).unwrap_or(0);
                (topic_index, topic, partition.partition, partition.fetch_offset, partition_max)
            })
        })
        .peekable();
    let wave_size = context.shards.clamp(1, MAX_CONCURRENT_PARTITION_READS);
    // The client's fetch.max.bytes, never more than a frame holds: the
    // budget is the client's number, and one small request naming a
    // partition many times at i32::MAX had the node build gigabytes.
    let frame_budget_bytes = context.config.limits.max_frame_bytes - 1024;
    let mut remaining_bytes = usize::try_from(body.max_bytes).unwrap_or(0).clamp(1, frame_budget_bytes);
    let mut answered_bytes = 0usize;
    let mut answers: Vec<Vec<PartitionData>> =
        body.topics.iter().map(|topic| Vec::with_capacity(topic.partitions.len())).collect();
    while wanted.peek().is_some() {
        let mut share_left = remaining_bytes;
        let mut reads = Vec::with_capacity(wave_size);
        while reads.len() < wave_size && (share_left > 0 || remaining_bytes == 0) {
            let Some((topic_index, topic, index, offset, partition_max)) = wanted.next() else { break };
            let share = match remaining_bytes {
                0 => 0,
                _ => partition_max.min(share_left).max(1),
            };
            share_left = share_left.saturating_sub(share);
            let (context, name) = (Rc::clone(context), topic.topic.0.to_string());
            let read = crate::runtime::spawn_local(async move {
                match share {
                    0 => offsets_only(&context, &name, index).await,
                    share => read_partition(&context, &name, index, offset, share, wait_ms).await,
                }
            });
            reads.push((topic_index, share, read));
        }
        for (topic_index, share, read) in reads {
            let mut data = read.await;
            let mut used = data.records.as_ref().map_or(0, |records| records.len());
            // A read returns at least one batch, however small its share.
            // As in Kafka (KIP-74), only the answer's first records may pass
            // it: every read of a wave passing its share made an answer of
            // up to a batch per shard beyond the budget.
            if used > share && answered_bytes > 0 {
                data.records = Some(Default::default());
                used = 0;
            }
            answered_bytes += used;
            remaining_bytes = remaining_bytes.saturating_sub(used);
            answers[topic_index].push(data);
        }
    }
    body.topics
        .iter()
        .zip(answers)
        .map(|(topic, partitions)| {
            FetchableTopicResponse::default().with_topic(topic.topic.clone()).with_partitions(partitions)
        })
        .collect()
}

/// A partition's answer without records (the Fetch's byte budget is
/// spent): its high watermark and log start, or its error.
async fn offsets_only(context: &Rc<ShardContext>, topic: &str, index: i32) -> PartitionData {
    let answer = unanswered(index);
    let Ok(partition) = u32::try_from(index) else {
        return answer.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    if let Err(code) = leader_only(context) {
        return answer.with_error_code(code);
    }
    let bounds = Request::ListOffsets { topic: topic.to_string(), partition };
    match crate::requests::handle(context, bounds).await {
        Ok(Response::ListOffsets { log_start_offset, high_watermark, .. }) => answer
            .with_high_watermark(high_watermark as i64)
            .with_last_stable_offset(high_watermark as i64)
            .with_log_start_offset(log_start_offset as i64),
        Ok(_) => answer.with_error_code(ResponseError::UnknownServerError.code()),
        Err(error) => answer.with_error_code(error_code(&error)),
    }
}

/// Kafka reads are the leader's (SPEC §10): a follower, or a leader
/// fenced from etcd, answers `NOT_LEADER_OR_FOLLOWER`, on which clients
/// refresh Metadata and go to the leader it names. Checked before every
/// read, and a long poll reads again at least every
/// `SINGLE_PARTITION_POLL_SLICE`, so one on a leader that steps down ends
/// with that answer within about a second. The native protocol still
/// reads from followers (SPEC §5).
fn leader_only(context: &ShardContext) -> Result<(), i16> {
    context.write_epoch().map(|_| ()).map_err(|refusal| error_code(&refusal))
}

/// A partition's answer before anything is known: no records, and -1 for
/// the offsets (what Kafka answers beside an error).
fn unanswered(index: i32) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_records(Some(Default::default()))
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
}

async fn read_partition(
    context: &Rc<ShardContext>,
    topic: &str,
    index: i32,
    offset: i64,
    max_bytes: usize,
    wait_ms: u32,
) -> PartitionData {
    let answer = unanswered(index);
    let (Ok(partition), Ok(offset)) = (u32::try_from(index), u64::try_from(offset)) else {
        let code = match index < 0 {
            true => ResponseError::UnknownTopicOrPartition,
            false => ResponseError::OffsetOutOfRange,
        };
        return answer.with_error_code(code.code());
    };
    if let Err(code) = leader_only(context) {
        return answer.with_error_code(code);
    }
    let max_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX);
    let read = Request::Fetch { topic: topic.to_string(), partition, offset, max_bytes, max_wait_ms: wait_ms };
    match crate::requests::handle(context, read).await {
        Ok(Response::Fetch { high_watermark, log_start_offset, batches, .. }) => {
            // Pooled, and shared so that it goes back once the answer is
            // written, from this buffer (a fresh one was faulted in page
            // by page).
            let mut records = crate::runtime::buffer_pool::take_empty(batches.len() + batches.len() / 4);
            let answer = answer
                .with_high_watermark(high_watermark as i64)
                .with_last_stable_offset(high_watermark as i64)
                .with_log_start_offset(log_start_offset as i64);
            match transcode::native_to_kafka(&batches, &mut records) {
                Ok(()) => answer.with_records(Some(crate::runtime::buffer_pool::share(records))),
                Err(error) => {
                    tracing::error!(target: "ringlog::kafka", %error, "a batch read from the log does not transcode");
                    answer.with_error_code(ResponseError::KafkaStorageError.code())
                }
            }
        }
        Ok(_) => answer.with_error_code(ResponseError::UnknownServerError.code()),
        Err(error) => answer.with_error_code(error_code(&error)),
    }
}

/// Answer ListOffsets: earliest (-2) is the log start offset, latest (-1)
/// the high watermark consumers may see (both with timestamp -1, as
/// Kafka answers), a timestamp the first offset at or after it below the
/// high watermark with that record's timestamp (offset and timestamp -1
/// when there is none).
pub async fn list_offsets(
    context: &Rc<ShardContext>,
    request: &KafkaRequest,
    access: Access<'_>,
) -> Result<FramePieces, KafkaServeError> {
    let body: ListOffsetsRequest = decode_body(request)?;
    at_most(body.topics.len(), context.config.limits.max_topics, "ListOffsets topics")?;
    let partitions = body.topics.iter().map(|topic| topic.partitions.len()).sum::<usize>();
    at_most(partitions, context.config.limits.max_partitions_per_fetch, "ListOffsets partitions")?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let allowed = access.allows(context, Operation::ListOffsets { topic: &topic.name.0 });
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let answer = ListOffsetsPartitionResponse::default().with_partition_index(partition.partition_index);
            let found = match u32::try_from(partition.partition_index) {
                _ if !allowed => Err(ResponseError::TopicAuthorizationFailed.code()),
                Ok(index) => find(context, &topic.name.0, index, partition.timestamp).await,
                Err(_) => Err(ResponseError::UnknownTopicOrPartition.code()),
            };
            count_errors(context, ApiKey::ListOffsets, [found.err().unwrap_or(0)]);
            partitions.push(match found {
                Ok((offset, timestamp)) => answer.with_offset(offset).with_timestamp(timestamp),
                Err(code) => answer.with_error_code(code).with_offset(-1).with_timestamp(-1),
            });
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions));
    }
    respond(request, &ListOffsetsResponse::default().with_topics(topics))
}

/// The (offset, timestamp) ListOffsets names for `timestamp`, or a Kafka
/// error code.
async fn find(context: &Rc<ShardContext>, topic: &str, partition: u32, timestamp: i64) -> Result<(i64, i64), i16> {
    leader_only(context)?;
    let bounds = Request::ListOffsets { topic: topic.to_string(), partition };
    let (log_start_offset, high_watermark) = match crate::requests::handle(context, bounds).await {
        Ok(Response::ListOffsets { log_start_offset, high_watermark, .. }) => (log_start_offset, high_watermark),
        Ok(_) => return Err(ResponseError::UnknownServerError.code()),
        Err(error) => return Err(error_code(&error)),
    };
    match timestamp {
        EARLIEST_TIMESTAMP => return Ok((log_start_offset as i64, -1)),
        LATEST_TIMESTAMP => return Ok((high_watermark as i64, -1)),
        timestamp if timestamp < 0 => return Err(ResponseError::InvalidRequest.code()),
        _ => {}
    }
    let search = Request::FindOffset { topic: topic.to_string(), partition, timestamp_ms: timestamp };
    let offset = match crate::requests::handle(context, search).await {
        Ok(Response::FindOffset { offset: Some(offset) }) if offset < high_watermark => offset,
        Ok(Response::FindOffset { .. }) => return Ok((-1, -1)),
        Ok(_) => return Err(ResponseError::UnknownServerError.code()),
        Err(error) => return Err(error_code(&error)),
    };
    // Kafka answers the found record's own timestamp (the Java client
    // refuses a found offset with a negative one): read that record.
    let read = Request::Fetch { topic: topic.to_string(), partition, offset, max_bytes: 1, max_wait_ms: 0 };
    match crate::requests::handle(context, read).await {
        Ok(Response::Fetch { batches, .. }) => match transcode::timestamp_at(&batches, offset) {
            Some(found_timestamp) => Ok((offset as i64, found_timestamp)),
            None => Err(ResponseError::UnknownServerError.code()),
        },
        Ok(_) => Err(ResponseError::UnknownServerError.code()),
        Err(error) => Err(error_code(&error)),
    }
}
