//! Kafka Produce: every partition's records go to the partition's owner,
//! which checks them (CRC-32C, framing, codec), transcodes them into one
//! ringlog batch and appends it through the native Produce path, so acks
//! mean what they mean natively:
//! 0 → `none` (placed, not answered), 1 → `leader` (durable here under the
//! fsync policy), -1 → `all` (on every in-sync replica).

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use kafka_protocol::messages::ApiKey;

use super::placements::{wait_all, PlacedReceiver, Placements};
use super::{count_errors, error_code, respond, transcode, Access, KafkaOutcome, KafkaServeError};
use crate::protocol::kafka::records::{DecodeLimits, RecordsError};
use crate::protocol::kafka::{decode_body, KafkaRequest};
use crate::protocol::{Acks, ErrorCode, Response};
use crate::requests::produce::ProducedBatch;
use crate::runtime::Task;
use crate::security::Operation;
use crate::shard::context::ShardContext;
use crate::shard::mesh::{KafkaProduce, Outcome, PlacedSignal};
use crate::shard::wire_error::refusal;

/// Answer a Produce request (nothing when acks is 0). Every partition's
/// records go to the partition's owner at once, transcoded and placed there
/// concurrently, each after the batch sent before it to the same partition
/// on this connection ([`Placements`]). `release` is dropped once the
/// Produce before this one is placed, so the connection may start its next
/// request while these are placed and wait for their acks; with acks 0 only
/// once this one has finished (a failure must close the connection before
/// anything after it starts).
pub async fn produce(
    context: &Rc<ShardContext>,
    mut request: KafkaRequest,
    access: Access<'_>,
    release: PlacedSignal,
    placements: &Placements,
) -> KafkaOutcome {
    let body: ProduceRequest = decode_body(&request)?;
    let acks = match body.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let partition_count = body.topic_data.iter().map(|topic| topic.partition_data.len()).sum::<usize>();
    let limit = context.config.limits.max_partitions_per_produce;
    if partition_count > limit {
        return Err(KafkaServeError::TooManyPartitions { request: "produce", partitions: partition_count, limit });
    }
    let (pending, batches) = start_all(context, &body, acks, access, placements);
    let acks_zero = body.acks == 0;
    // At most two requests' batches are being placed per connection.
    let previous = placements.replace_previous_request(batches.clone());
    wait_all(&previous).await;
    if !acks_zero {
        drop(release);
    }
    wait_all(&batches).await;
    // The records are in the partitions' buffers: the frame need not stay
    // in memory while the acks are awaited (the answer needs the header).
    drop(body);
    request.body = bytes::Bytes::new();
    let responses = finish_all(context, pending).await;
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

/// One topic's partitions' answers, in request order.
type TopicAnswers = (TopicName, Vec<Answer>);

/// Start every partition's produce (or answer it at once: not allowed,
/// bad acks, no such partition); returns the answers and the placement
/// signals of the produces started.
fn start_all(
    context: &Rc<ShardContext>,
    body: &ProduceRequest,
    acks: Option<Acks>,
    access: Access<'_>,
    placements: &Placements,
) -> (Vec<TopicAnswers>, Vec<PlacedReceiver>) {
    let limits = DecodeLimits { max_records_bytes: context.config.storage.max_batch_bytes };
    let mut pending = Vec::with_capacity(body.topic_data.len());
    let mut batches = Vec::new();
    for topic in &body.topic_data {
        let allowed = access.allows(context, Operation::Produce { topic: &topic.name.0 });
        // Only partitions that exist are chained (their names are bounded).
        let partition_count = context.registry.get(&topic.name.0).map_or(0, |meta| meta.partitions);
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in &topic.partition_data {
            let answer = PartitionProduceResponse::default().with_index(data.index);
            let exists = u32::try_from(data.index).is_ok_and(|index| index < partition_count);
            let answer = match acks {
                _ if !allowed => Answer::Done(answer.with_error_code(ResponseError::TopicAuthorizationFailed.code())),
                None => Answer::Done(answer.with_error_code(ResponseError::InvalidRequiredAcks.code())),
                Some(_) if !exists => Answer::Done(
                    answer
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1),
                ),
                Some(acks) => {
                    let records = data.records.clone().unwrap_or_default();
                    let partition = Partition { topic: &topic.name.0, index: data.index };
                    let answer = start(context, partition, acks, records, limits, answer, placements);
                    if let Answer::Started(started) = &answer {
                        batches.push(started.placed.clone());
                    }
                    answer
                }
            };
            partitions.push(answer);
        }
        // Copied out of the frame, which the answer outlives.
        pending.push((crate::protocol::kafka::owned_topic_name(&topic.name), partitions));
    }
    (pending, batches)
}

/// Every partition's answer once its produce has finished, counted.
async fn finish_all(context: &ShardContext, pending: Vec<TopicAnswers>) -> Vec<TopicProduceResponse> {
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
    responses
}

/// A partition's answer: known, or its produce's.
enum Answer {
    Done(PartitionProduceResponse),
    Started(Started),
}

/// A partition's produce, started on the partition's owner.
struct Started {
    answer: PartitionProduceResponse,
    task: Task<Outcome>,
    /// Returns (closed) once the batch is placed or its produce has ended.
    placed: PlacedReceiver,
    /// Why the owner refused the records, if it did.
    refused: async_channel::Receiver<RecordsError>,
}

impl Answer {
    async fn finish(self) -> PartitionProduceResponse {
        let started = match self {
            Answer::Done(answer) => return answer,
            Answer::Started(started) => started,
        };
        let outcome = started.task.await;
        let answer = started.answer;
        match outcome {
            Ok(Response::Produce { base_offset, .. }) => answer.with_base_offset(base_offset as i64),
            Ok(_) => answer.with_error_code(ResponseError::UnknownServerError.code()),
            Err(error) => {
                // The owner says why it refused the records before it answers.
                let code = match started.refused.try_recv() {
                    Ok(records) => records_error_code(&records),
                    Err(_) => error_code(&error),
                };
                answer.with_error_code(code).with_error_message(Some(StrBytes::from_string(error.message)))
            }
        }
    }
}

/// A partition named in a Produce request.
struct Partition<'a> {
    topic: &'a StrBytes,
    index: i32,
}

/// Start one partition's produce on its owner, once the batch sent before
/// it to the same partition is placed (its own task, so it goes on to its
/// acks while other partitions and requests are placed; awaited by
/// `Answer::finish`, never dropped early).
fn start(
    context: &Rc<ShardContext>,
    partition: Partition<'_>,
    acks: Acks,
    records: bytes::Bytes,
    limits: DecodeLimits,
    answer: PartitionProduceResponse,
    placements: &Placements,
) -> Answer {
    let answer = answer.with_log_append_time_ms(-1).with_log_start_offset(-1);
    let Ok(index) = u32::try_from(partition.index) else {
        return Answer::Done(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
    };
    // The owner drops `placed_signal` once the batch is placed. `settled`
    // returns then or once the produce has ended: a produce that ends
    // without its signal dropped (a message left queued to a stopping
    // shard) must not hold up the batches chained after it.
    let (placed_signal, placed) = async_channel::bounded::<()>(1);
    let (settled_signal, settled) = async_channel::bounded::<()>(1);
    let (refused_sender, refused) = async_channel::bounded::<RecordsError>(1);
    let before = placements.chain(partition.topic, partition.index, &settled);
    let produce = KafkaProduce {
        topic: partition.topic.to_string(),
        partition: index,
        acks,
        records,
        limits,
        placed: placed_signal,
        refused: refused_sender,
    };
    let context = Rc::clone(context);
    let task = crate::runtime::spawn_local(async move {
        if let Some(before) = before {
            let _ = before.recv().await;
        }
        let produce = crate::requests::produce_kafka(context, produce);
        futures_lite::pin!(produce);
        let placed = async {
            let _ = placed.recv().await;
            None
        };
        let ended = futures_lite::future::or(placed, async { Some(produce.as_mut().await) }).await;
        drop(settled_signal);
        match ended {
            Some(outcome) => outcome,
            None => produce.await,
        }
    });
    Answer::Started(Started { answer, task, placed: settled, refused })
}

/// On the partition's owner: transcode the records into one ringlog batch
/// (refusing them with the reason in `refused`) and produce it, ordered.
pub async fn on_owner(context: &Rc<ShardContext>, produce: KafkaProduce) -> Outcome {
    let KafkaProduce { topic, partition, acks, records, limits, placed, refused } = produce;
    let batch = match transcode::kafka_to_native(&records, limits) {
        Ok(batch) => batch,
        Err(error) => {
            let answer = refusal(native_error_code(&error), error.to_string());
            // Sent before the refusal is answered; the caller may be gone.
            let _ = refused.try_send(error);
            return Err(answer);
        }
    };
    drop(records);
    let owned = context.owned(&topic, partition)?;
    crate::requests::produce::produce(context, &owned, acks, ProducedBatch::Built(batch), Some(placed)).await
}

/// The native error code closest to why records were refused (what a
/// native reader of the refusal sees; the Kafka code comes from the reason).
fn native_error_code(error: &RecordsError) -> ErrorCode {
    match error {
        RecordsError::TooLarge { .. } => ErrorCode::RecordTooLarge,
        _ => ErrorCode::InvalidRequest,
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
