//! Kafka Produce: every partition's records are checked (CRC-32C,
//! framing, codec), transcoded into one ringlog batch and appended through
//! the native Produce path, so acks mean what they mean natively:
//! 0 → `none` (placed, not answered), 1 → `leader` (durable here under the
//! fsync policy), -1 → `all` (on every in-sync replica).

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use kafka_protocol::messages::ApiKey;

use super::{count_errors, error_code, respond, transcode, Access, KafkaOutcome, KafkaServeError};
use crate::protocol::kafka::records::{DecodeLimits, RecordsError};
use crate::protocol::kafka::{decode_body, KafkaRequest};
use crate::protocol::{Acks, Request, Response};
use crate::runtime::Task;
use crate::security::Operation;
use crate::shard::context::ShardContext;
use crate::shard::mesh::{Outcome, PlacedSignal};

/// Answer a Produce request (nothing when acks is 0). Its partitions are
/// placed one after another, in the request's order; `release` is dropped
/// once all are placed (or refused), so the connection may start its next
/// request — whose batches then land after these — while these wait for
/// their acks.
pub async fn produce(
    context: &Rc<ShardContext>,
    mut request: KafkaRequest,
    access: Access<'_>,
    release: PlacedSignal,
) -> KafkaOutcome {
    let body: ProduceRequest = decode_body(&request)?;
    let acks = match body.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let limits = DecodeLimits { max_records_bytes: context.config.storage.max_batch_bytes };
    let mut pending = Vec::with_capacity(body.topic_data.len());
    for topic in &body.topic_data {
        let allowed = access.allows(context, Operation::Produce { topic: &topic.name.0 });
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in &topic.partition_data {
            let answer = PartitionProduceResponse::default().with_index(data.index);
            let answer = match acks {
                _ if !allowed => Answer::Done(answer.with_error_code(ResponseError::TopicAuthorizationFailed.code())),
                None => Answer::Done(answer.with_error_code(ResponseError::InvalidRequiredAcks.code())),
                Some(acks) => {
                    let records = data.records.as_deref().unwrap_or_default();
                    place(context, &topic.name.0, data.index, acks, records, limits, answer).await
                }
            };
            partitions.push(answer);
        }
        pending.push((topic.name.clone(), partitions));
    }
    let acks_zero = body.acks == 0;
    // The records are in the partitions' buffers: the frame need not stay
    // in memory while the acks are awaited (the answer needs the header).
    drop(body);
    request.body = bytes::Bytes::new();
    if !acks_zero {
        drop(release);
    }
    let mut responses = Vec::with_capacity(pending.len());
    for (name, partitions) in pending {
        let mut answers = Vec::with_capacity(partitions.len());
        for answer in partitions {
            let answer = answer.finish().await;
            count_errors(context, ApiKey::Produce, [answer.error_code]);
            answers.push(answer);
        }
        responses.push(TopicProduceResponse::default().with_name(name).with_partition_responses(answers));
    }
    if acks_zero {
        // `release` is still held: a failure must close the connection
        // before anything after it starts.
        let failed =
            responses.iter().flat_map(|topic| &topic.partition_responses).find(|answer| answer.error_code != 0);
        return match failed {
            None => Ok(None),
            Some(answer) => Err(KafkaServeError::UnansweredProduceFailed(format!(
                "partition {} error code {}",
                answer.index, answer.error_code
            ))),
        };
    }
    respond(&request, &ProduceResponse::default().with_responses(responses)).map(Some)
}

/// A partition's answer: known, awaiting its produce, or its produce's.
enum Answer {
    Done(PartitionProduceResponse),
    Pending(PartitionProduceResponse, Task<Outcome>),
    Finished(PartitionProduceResponse, Outcome),
}

impl Answer {
    async fn finish(self) -> PartitionProduceResponse {
        let (answer, outcome) = match self {
            Answer::Done(answer) => return answer,
            Answer::Pending(answer, task) => (answer, task.await),
            Answer::Finished(answer, outcome) => (answer, outcome),
        };
        match outcome {
            Ok(Response::Produce { base_offset, .. }) => answer.with_base_offset(base_offset as i64),
            Ok(_) => answer.with_error_code(ResponseError::UnknownServerError.code()),
            Err(error) => answer
                .with_error_code(error_code(&error))
                .with_error_message(Some(StrBytes::from_string(error.message))),
        }
    }
}

/// Transcode one partition's records and start its produce; returns once
/// the batch is placed (or refused), its outcome still to come.
async fn place(
    context: &Rc<ShardContext>,
    topic: &StrBytes,
    index: i32,
    acks: Acks,
    records: &[u8],
    limits: DecodeLimits,
    answer: PartitionProduceResponse,
) -> Answer {
    let answer = answer.with_log_append_time_ms(-1).with_log_start_offset(-1);
    let Ok(partition) = u32::try_from(index) else {
        return Answer::Done(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
    };
    let batch = match transcode::kafka_to_native(records, limits) {
        Ok(batch) => batch,
        Err(error) => {
            let message = StrBytes::from_string(error.to_string());
            return Answer::Done(answer.with_error_code(records_error_code(&error)).with_error_message(Some(message)));
        }
    };
    let native = Request::Produce { topic: topic.to_string(), partition, acks, batch };
    let (placed, placed_wait) = async_channel::bounded::<()>(1);
    // Its own task, so it goes on to its acks while the next partition (or
    // request) is placed; awaited by `Answer::finish`, never dropped early.
    let mut task = crate::runtime::spawn_local(crate::requests::produce_ordered(Rc::clone(context), native, placed));
    // Nothing is ever sent: recv returns when the produce drops `placed`.
    // Or the produce ends first without having dropped it (a message to a
    // stopping shard keeps it): its outcome is the answer.
    let placed = async {
        let _ = placed_wait.recv().await;
        None
    };
    match futures_lite::future::or(placed, async { Some((&mut task).await) }).await {
        None => Answer::Pending(answer, task),
        Some(outcome) => Answer::Finished(answer, outcome),
    }
}

/// The Kafka error code for records this node refuses.
fn records_error_code(error: &RecordsError) -> i16 {
    let kafka = match error {
        RecordsError::Corrupt(_) | RecordsError::CrcMismatch { .. } => ResponseError::CorruptMessage,
        RecordsError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        RecordsError::UnsupportedCompression(_) => ResponseError::UnsupportedCompressionType,
        RecordsError::UnsupportedBatch(_) | RecordsError::SeveralBatches => ResponseError::InvalidRecord,
        RecordsError::TooLarge { .. } => ResponseError::MessageTooLarge,
    };
    kafka.code()
}
