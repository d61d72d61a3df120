//! Idempotent Kafka producers (SPEC §2, §10): InitProducerId hands out a
//! producer id, and a batch's (producer id, epoch, base sequence) maps onto
//! ringlog's producer id and sequence in the batch header, so the log's
//! producer table (`storage::producers`) recognises a retried batch and
//! answers it with the original offsets, on this leader or a new one.
//!
//! **Producer ids** are 63 random bits from the kernel (`new_producer_id`,
//! the same source as native InitProducer): unique with overwhelming
//! probability across nodes and restarts (two of a million producers share
//! one with probability about 5·10⁻⁸) with no state to keep, allocate or
//! replicate; a durable counter would need a write per producer and, in a
//! cluster, agreement between nodes. Kafka's epoch is not a field of
//! ringlog's header, and a new epoch restarts the sequences at 0, so the
//! ringlog producer id is the Kafka id at epoch 0 and a 63-bit hash of
//! (id, epoch) otherwise: a pure function, so every node maps a retry the
//! same way.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{count_errors, respond, Access, KafkaOutcome};
use crate::protocol::kafka::records::ProducerFields;
use crate::protocol::kafka::{decode_body, KafkaRequest};
use crate::security::Operation;
use crate::shard::context::ShardContext;

/// InitProducerId for an idempotent producer: a fresh id at epoch 0, or,
/// when the client names its id and epoch (v3+, after a sequence error),
/// the same id at the next epoch. Transactional ids are refused
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
        let fresh = crate::requests::new_producer_id() as i64;
        response.with_producer_id(ProducerId(fresh)).with_producer_epoch(0)
    };
    count_errors(context, ApiKey::InitProducerId, [response.error_code]);
    respond(request, &response).map(Some)
}

/// The ringlog producer id of a Kafka producer's (id, epoch): never 0
/// (which marks a batch without a producer).
pub fn native_producer_id(fields: &ProducerFields) -> u64 {
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
    fn epochs_of_one_producer_map_to_different_native_producers() {
        assert_eq!(native_producer_id(&fields(12345, 0)), 12345);
        let bumped = native_producer_id(&fields(12345, 1));
        assert_ne!(bumped, 12345);
        assert_ne!(bumped, native_producer_id(&fields(12345, 2)));
        assert_eq!(bumped, native_producer_id(&fields(12345, 1)), "a pure function: every node maps alike");
        assert_ne!(native_producer_id(&fields(0, 0)), 0, "producer id 0 still deduplicates");
        assert!(native_producer_id(&fields(i64::MAX, 7)) < 1 << 63);
    }
}
