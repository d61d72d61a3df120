//! Idempotent Kafka producers (SPEC §2, §10): InitProducerId hands out a
//! producer id, and a batch's (producer id, epoch, base sequence) maps onto
//! ringlog's producer id and sequence in the batch header, so the log's
//! producer table (`storage::producers`) recognises a retried batch and
//! answers it with the original offsets, on this leader or a new one, and
//! fences a batch from an epoch older than the producer's newest.
//!
//! **Producer ids** are 47 random bits from the kernel: with no state to
//! keep, allocate or replicate (a durable counter would need a write per
//! producer and, in a cluster, agreement between nodes). A collision
//! matters only between producers writing to one partition within the
//! partition's producer table (`max_producers_per_partition` entries): with a
//! thousand of them, about 4·10⁻⁹. The id and the epoch (15 bits) are
//! packed into one ringlog producer id with its top bit set
//! (`storage::producers::KafkaProducer`), so the log knows both from every
//! batch header, on every node and after every restart.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{count_errors, respond, Access, KafkaOutcome};
use crate::protocol::kafka::records::ProducerFields;
use crate::protocol::kafka::{decode_body, KafkaRequest};
use crate::security::Operation;
use crate::shard::context::ShardContext;
use crate::storage::producers::KafkaProducer;

/// InitProducerId for an idempotent producer: a fresh id at epoch 0, or,
/// when the client names its id and epoch (v3+, after a sequence error),
/// the same id at the next epoch, which fences the old one's batches in
/// every partition the new epoch writes to. Transactional ids are refused
/// (transactions are not supported).
pub fn init_producer_id(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: InitProducerIdRequest = decode_body(request)?;
    let response = InitProducerIdResponse::default();
    let response = if !access.allows(context, Operation::InitProducerId) {
        response
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    } else if body.transactional_id.is_some() {
        response
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    } else if body.producer_id.0 >= 0 && (0..i16::MAX - 1).contains(&body.producer_epoch) {
        response.with_producer_id(body.producer_id).with_producer_epoch(body.producer_epoch + 1)
    } else {
        response.with_producer_id(ProducerId(new_kafka_producer_id())).with_producer_epoch(0)
    };
    count_errors(context, ApiKey::InitProducerId, [response.error_code]);
    respond(request, &response).map(Some)
}

/// A fresh random Kafka producer id of 47 bits (never 0).
fn new_kafka_producer_id() -> i64 {
    let id = (crate::requests::new_producer_id() & KafkaProducer::MAX_ID).max(1);
    id as i64
}

/// The ringlog producer id of a Kafka producer's (id, epoch): the packed
/// [`KafkaProducer`] for the ids this node hands out. An id past 47 bits
/// (handed out before the packing existed, or by a node of that version in
/// a cluster being upgraded) keeps the mapping it was written with, so its
/// retries are still recognised: the id itself at epoch 0, a 63-bit hash
/// of (id, epoch) otherwise, sequences modulo 2^32 and no fencing.
pub fn native_producer_id(fields: &ProducerFields) -> u64 {
    match KafkaProducer::new(fields.producer_id, fields.producer_epoch) {
        Some(producer) => producer.producer_id(),
        None => legacy_producer_id(fields),
    }
}

/// The mapping of Kafka producers before ids were packed (never 0, top bit
/// clear: apart from packed ids).
fn legacy_producer_id(fields: &ProducerFields) -> u64 {
    let id = fields.producer_id as u64;
    if fields.producer_epoch == 0 && id != 0 {
        return id;
    }
    let mixed = splitmix64(splitmix64(id) ^ u64::from(fields.producer_epoch as u16));
    (mixed >> 1).max(1)
}

/// SplitMix64's finaliser: a bijection of u64 that spreads every input bit.
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(producer_id: i64, producer_epoch: i16) -> ProducerFields {
        ProducerFields { producer_id, producer_epoch, base_sequence: 0 }
    }

    #[test]
    fn epochs_of_one_producer_map_to_different_native_producers_of_the_kafka_space() {
        let first = native_producer_id(&fields(12345, 0));
        let bumped = native_producer_id(&fields(12345, 1));
        assert_ne!(first, bumped);
        assert_eq!(KafkaProducer::from_producer_id(bumped), Some(KafkaProducer { id: 12345, epoch: 1 }));
        assert_eq!(first >> 63, 1, "apart from native producers, whose ids have the top bit clear");
        assert_ne!(native_producer_id(&fields(0, 0)), 0, "producer id 0 still deduplicates");
        assert_eq!(native_producer_id(&fields(1 << 50, 0)), 1 << 50, "an id of the older mapping keeps it");
        let legacy_bumped = native_producer_id(&fields(1 << 50, 1));
        assert!(legacy_bumped >> 63 == 0 && legacy_bumped != 1 << 50 && legacy_bumped != 0);
        assert_eq!(native_producer_id(&fields(5, -3)) >> 63, 0, "a negative epoch is not packed");
    }

    #[test]
    fn fresh_kafka_producer_ids_fit_the_packing() {
        for _ in 0..1000 {
            let id = new_kafka_producer_id();
            assert!((1..=KafkaProducer::MAX_ID as i64).contains(&id));
        }
    }
}
