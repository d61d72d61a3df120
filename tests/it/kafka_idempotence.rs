//! Idempotent Kafka producers (SPEC §2, §10): InitProducerId, and a batch's
//! producer id, epoch and sequence mapped onto ringlog's producer table, so
//! a resent batch is answered with its original offsets and stored once.
//! Proved with a request encoded by the `kafka-protocol` crate sent twice
//! byte for byte, and with confluent-kafka (librdkafka) producing with
//! `enable.idempotence=true`.

use std::process::Command;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};

use crate::kafka::{
    create_topic, native_consume, produce_request, producer_batch, require_python_module, start, KafkaClient,
};

/// One idempotent Kafka batch of `values` from producer `id` at `epoch`,
/// its first record at `sequence`.
fn idempotent_batch(id: i64, epoch: i16, sequence: i32, values: &[&str]) -> Bytes {
    let values: Vec<&[u8]> = values.iter().map(|value| value.as_bytes()).collect();
    producer_batch(id, epoch, sequence, &values)
}

/// (error code, base offset) of the one partition a Produce named.
fn produce(client: &mut KafkaClient, request: &ProduceRequest) -> (i16, i64) {
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, request);
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn init_producer_id(client: &mut KafkaClient, version: i16, request: &InitProducerIdRequest) -> (i64, i16) {
    let response: InitProducerIdResponse = client.call(ApiKey::InitProducerId, version, request);
    assert_eq!(response.error_code, 0);
    (response.producer_id.0, response.producer_epoch)
}

/// InitProducerId for an idempotent (not transactional) producer.
fn idempotent_init() -> InitProducerIdRequest {
    InitProducerIdRequest::default().with_transactional_id(None)
}

/// The values natively read back from a partition, in offset order.
fn stored_values(node: &crate::node::Node, topic: &str) -> Vec<String> {
    native_consume(node, topic, 0).iter().map(|line| line.split('|').nth(2).unwrap().to_string()).collect()
}

#[test]
fn kafka_batch_resent_byte_for_byte_gets_its_original_offsets_and_is_stored_once() {
    let node = start(2);
    create_topic(&node.node, "kafka-idempotent", 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let (id, epoch) =
        init_producer_id(&mut client, 4, &idempotent_init().with_producer_id(ProducerId(-1)).with_producer_epoch(-1));
    assert!(id >= 0 && epoch == 0, "a fresh producer at epoch 0: {id}/{epoch}");
    let (other, _) = init_producer_id(&mut client, 0, &idempotent_init());
    assert_ne!(id, other, "every producer gets its own id");

    let first = produce_request("kafka-idempotent", 0, -1, idempotent_batch(id, epoch, 0, &["a", "b", "c"]));
    let second = produce_request("kafka-idempotent", 0, -1, idempotent_batch(id, epoch, 3, &["d", "e"]));
    assert_eq!(produce(&mut client, &first), (0, 0));
    assert_eq!(produce(&mut client, &second), (0, 3));
    // The same bytes again, as a client resends after a lost ack.
    assert_eq!(produce(&mut client, &first), (0, 0), "the first batch's original offsets");
    assert_eq!(produce(&mut client, &second), (0, 3), "the second batch's original offsets");
    let gap = produce_request("kafka-idempotent", 0, -1, idempotent_batch(id, epoch, 9, &["x"]));
    assert_eq!(produce(&mut client, &gap).0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER for a gap");
    let next = produce_request("kafka-idempotent", 0, -1, idempotent_batch(id, epoch, 5, &["f"]));
    assert_eq!(produce(&mut client, &next), (0, 5));
    assert_eq!(stored_values(&node.node, "kafka-idempotent"), ["a", "b", "c", "d", "e", "f"], "nothing twice");

    // A bumped epoch (InitProducerId v3+ naming the producer) restarts its sequences at 0.
    let bump = idempotent_init().with_producer_id(ProducerId(id)).with_producer_epoch(epoch);
    assert_eq!(init_producer_id(&mut client, 4, &bump), (id, epoch + 1));
    let bumped = produce_request("kafka-idempotent", 0, -1, idempotent_batch(id, epoch + 1, 0, &["g"]));
    assert_eq!(produce(&mut client, &bumped), (0, 6));
    assert_eq!(produce(&mut client, &bumped), (0, 6), "deduplicated within the new epoch too");
    assert_eq!(stored_values(&node.node, "kafka-idempotent"), ["a", "b", "c", "d", "e", "f", "g"]);
}

#[test]
fn idempotent_batch_is_deduplicated_after_the_node_crashes_and_restarts() {
    let node = start(1);
    create_topic(&node.node, "kafka-idempotent-restart", 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let (id, epoch) = init_producer_id(&mut client, 2, &idempotent_init());
    let batch = produce_request("kafka-idempotent-restart", 0, -1, idempotent_batch(id, epoch, 0, &["a", "b"]));
    assert_eq!(produce(&mut client, &batch), (0, 0));
    drop(client);
    let node = node.crash_and_restart(1);
    let mut client = KafkaClient::connect(&node.kafka);
    assert_eq!(produce(&mut client, &batch), (0, 0), "the producer table is rebuilt from the log");
    let (fresh, _) = init_producer_id(&mut client, 2, &idempotent_init());
    assert_ne!(fresh, id, "a restarted node does not hand out an id again");
    assert_eq!(stored_values(&node.node, "kafka-idempotent-restart"), ["a", "b"]);
}

#[test]
fn confluent_kafka_idempotent_producer_delivers_every_record_once() {
    require_python_module("confluent_kafka", "confluent-kafka");
    let node = start(2);
    create_topic(&node.node, "kafka-idempotent-librdkafka", 2);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/confluent_idempotent_produce.py");
    let output =
        Command::new("python3").args([script, &node.kafka, "kafka-idempotent-librdkafka", "500"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "confluent-kafka: {stderr}");
    for partition in 0..2 {
        let lines = native_consume(&node.node, "kafka-idempotent-librdkafka", partition);
        let values: Vec<String> = lines.iter().map(|line| line.split('|').nth(2).unwrap().to_string()).collect();
        let expected: Vec<String> = (0..500).filter(|i| i % 2 == partition as usize).map(|i| format!("v{i}")).collect();
        assert_eq!(values, expected, "partition {partition}: every record once, in order");
    }
}

#[test]
fn a_stale_epochs_batches_are_fenced_once_the_bumped_epoch_has_written_also_after_a_restart() {
    let node = start(1);
    let topic = "kafka-fenced";
    create_topic(&node.node, topic, 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let (id, epoch) = init_producer_id(&mut client, 4, &idempotent_init());
    let first = produce_request(topic, 0, -1, idempotent_batch(id, epoch, 0, &["a", "b"]));
    assert_eq!(produce(&mut client, &first), (0, 0));
    let bump = idempotent_init().with_producer_id(ProducerId(id)).with_producer_epoch(epoch);
    assert_eq!(init_producer_id(&mut client, 4, &bump), (id, epoch + 1));
    // Until the new epoch writes, the old one is all the log knows.
    let zombie = produce_request(topic, 0, -1, idempotent_batch(id, epoch, 2, &["zombie"]));
    let late_start = produce_request(topic, 0, -1, idempotent_batch(id, epoch + 1, 1, &["late"]));
    assert_eq!(produce(&mut client, &late_start).0, 45, "a new epoch starts its sequences at 0");
    let bumped = produce_request(topic, 0, -1, idempotent_batch(id, epoch + 1, 0, &["c"]));
    assert_eq!(produce(&mut client, &bumped), (0, 2));
    assert_eq!(produce(&mut client, &zombie).0, 47, "INVALID_PRODUCER_EPOCH: the next batch in the old epoch");
    assert_eq!(produce(&mut client, &first).0, 47, "and a retry of an old epoch's batch");
    drop(client);

    let node = node.crash_and_restart(1);
    let mut client = KafkaClient::connect(&node.kafka);
    assert_eq!(produce(&mut client, &zombie).0, 47, "the epoch is read back from the log");
    assert_eq!(produce(&mut client, &bumped), (0, 2), "the current epoch's retry keeps its offsets");
    assert_eq!(stored_values(&node.node, topic), ["a", "b", "c"]);
}

#[test]
fn kafka_sequences_wrap_from_i32_max_to_zero() {
    let node = start(1);
    let topic = "kafka-sequence-wrap";
    create_topic(&node.node, topic, 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let (id, epoch) = init_producer_id(&mut client, 4, &idempotent_init());
    // Sequences i32::MAX - 2 ..= i32::MAX, then 0 and 1.
    let across = produce_request(topic, 0, -1, idempotent_batch(id, epoch, i32::MAX - 2, &["a", "b", "c", "d", "e"]));
    assert_eq!(produce(&mut client, &across), (0, 0));
    let gap = produce_request(topic, 0, -1, idempotent_batch(id, epoch, 3, &["x"]));
    assert_eq!(produce(&mut client, &gap).0, 45, "2 comes next, not 3");
    let next = produce_request(topic, 0, -1, idempotent_batch(id, epoch, 2, &["f"]));
    assert_eq!(produce(&mut client, &next), (0, 5));
    assert_eq!(produce(&mut client, &across), (0, 0), "the batch across the wrap is still a retry");
    drop(client);
    let node = node.crash_and_restart(1);
    let mut client = KafkaClient::connect(&node.kafka);
    let after = produce_request(topic, 0, -1, idempotent_batch(id, epoch, 3, &["g"]));
    assert_eq!(produce(&mut client, &after), (0, 6), "the wrapped sequence is rebuilt from the log");
    assert_eq!(stored_values(&node.node, topic), ["a", "b", "c", "d", "e", "f", "g"]);
}

#[test]
fn a_producer_id_of_the_older_mapping_is_still_deduplicated() {
    // Ids handed out before ids were packed were 63 bits (and a node of
    // that version may still hand them out while a cluster is upgraded).
    let node = start(1);
    let topic = "kafka-legacy-producer";
    create_topic(&node.node, topic, 1);
    let mut client = KafkaClient::connect(&node.kafka);
    let legacy = (1 << 50) + 12345;
    let first = produce_request(topic, 0, -1, idempotent_batch(legacy, 0, 0, &["a", "b"]));
    assert_eq!(produce(&mut client, &first), (0, 0));
    assert_eq!(produce(&mut client, &first), (0, 0), "its retry keeps the original offsets");
    let bump = idempotent_init().with_producer_id(ProducerId(legacy)).with_producer_epoch(0);
    assert_eq!(init_producer_id(&mut client, 4, &bump), (legacy, 1));
    let bumped = produce_request(topic, 0, -1, idempotent_batch(legacy, 1, 0, &["c"]));
    assert_eq!(produce(&mut client, &bumped), (0, 2));
    assert_eq!(produce(&mut client, &bumped), (0, 2));
    assert_eq!(stored_values(&node.node, topic), ["a", "b", "c"]);
}

#[test]
fn a_native_client_cannot_write_under_a_kafka_producers_id() {
    use ringlog::protocol::{Acks, ErrorCode, Request};
    use ringlog::storage::producers::KafkaProducer;
    let node = start(1);
    let topic = "kafka-forged-producer";
    create_topic(&node.node, topic, 1);
    let mut kafka = KafkaClient::connect(&node.kafka);
    let (id, epoch) = init_producer_id(&mut kafka, 4, &idempotent_init());
    // A forged batch at the last epoch would fence the real producer.
    let forged = KafkaProducer { id: id as u64, epoch: KafkaProducer::MAX_EPOCH }.producer_id();
    let mut builder = ringlog::storage::batch::BatchBuilder::new();
    builder.set_producer(forged, 0);
    builder.push(0, None, b"forged", &[]);
    let request =
        Request::Produce { topic: topic.into(), partition: 0, acks: Acks::All, batch: builder.finish().to_vec() };
    let error = node.node.client().call(request).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidRequest, "{}", error.message);
    let real = produce_request(topic, 0, -1, idempotent_batch(id, epoch, 0, &["real"]));
    assert_eq!(produce(&mut kafka, &real), (0, 0), "the Kafka producer is not fenced");
    assert_eq!(stored_values(&node.node, topic), ["real"]);
}
