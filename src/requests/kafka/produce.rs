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
use crate::security::Operation;
use crate::shard::context::ShardContext;

/// Answer a Produce request (nothing when acks is 0).
pub async fn produce(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: ProduceRequest = decode_body(request)?;
    let acks = match body.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let limits = DecodeLimits { max_records_bytes: context.config.storage.max_batch_bytes };
    let mut responses = Vec::with_capacity(body.topic_data.len());
    // Partitions are appended one after another: the order of a request's
    // partitions is the order of their appends.
    for topic in &body.topic_data {
        let allowed = access.allows(context, Operation::Produce { topic: &topic.name.0 });
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in &topic.partition_data {
            let answer = PartitionProduceResponse::default().with_index(data.index);
            let answer = match acks {
                _ if !allowed => answer.with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                None => answer.with_error_code(ResponseError::InvalidRequiredAcks.code()),
                Some(acks) => {
                    let records = data.records.as_deref().unwrap_or_default();
                    append(context, &topic.name.0, data.index, acks, records, limits, answer).await
                }
            };
            count_errors(context, ApiKey::Produce, [answer.error_code]);
            partitions.push(answer);
        }
        responses
            .push(TopicProduceResponse::default().with_name(topic.name.clone()).with_partition_responses(partitions));
    }
    if body.acks == 0 {
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
    respond(request, &ProduceResponse::default().with_responses(responses)).map(Some)
}

/// Append one partition's records; the answer carries the base offset or
/// the error.
async fn append(
    context: &Rc<ShardContext>,
    topic: &StrBytes,
    index: i32,
    acks: Acks,
    records: &[u8],
    limits: DecodeLimits,
    answer: PartitionProduceResponse,
) -> PartitionProduceResponse {
    let answer = answer.with_log_append_time_ms(-1).with_log_start_offset(-1);
    let Ok(partition) = u32::try_from(index) else {
        return answer.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let batch = match transcode::kafka_to_native(records, limits) {
        Ok(batch) => batch,
        Err(error) => {
            let message = StrBytes::from_string(error.to_string());
            return answer.with_error_code(records_error_code(&error)).with_error_message(Some(message));
        }
    };
    let native = Request::Produce { topic: topic.to_string(), partition, acks, batch };
    match crate::requests::handle(context, native).await {
        Ok(Response::Produce { base_offset, .. }) => answer.with_base_offset(base_offset as i64),
        Ok(_) => answer.with_error_code(ResponseError::UnknownServerError.code()),
        Err(error) => {
            answer.with_error_code(error_code(&error)).with_error_message(Some(StrBytes::from_string(error.message)))
        }
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
