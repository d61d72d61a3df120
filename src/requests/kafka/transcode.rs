//! Records between Kafka's RecordBatch v2 and ringlog's batch
//! (`docs/KAFKA.md`, "Storage"): a Kafka producer's batches become one
//! ringlog batch (crc32fast stays the log's checksum), and a fetch's
//! ringlog batches become one Kafka batch each with the same base offset,
//! so every record keeps its offset, key, value, timestamp and headers.
//!
//! Kafka can say "null" where ringlog has bytes: a null value or header
//! value is stored as empty bytes (ringlog has no tombstones).

use super::producers::native_producer_id;
use crate::protocol::kafka::records::{visit_records, BatchEncoder, BatchSummary, DecodeLimits, RecordsError};
use crate::storage::batch::{BatchBuilder, BatchError, BatchIter, BuiltBatch, RecordIter, BATCH_HEADER_BYTES};

/// Most headers one record may carry in ringlog's format (a u16 count).
const MAX_HEADERS_PER_RECORD: usize = u16::MAX as usize;

/// One ringlog batch holding every record of a Produce partition's
/// `records` (one or more Kafka batches), after checking their CRC-32C.
/// Its size follows the decompressed records' bound (ringlog's per-record
/// overhead is fixed), and the native produce path checks it against
/// `max_batch_bytes` and `max_record_bytes` like any other batch. An
/// idempotent batch keeps its producer (mapped by
/// [`native_producer_id`]) and base sequence in the ringlog header, where
/// the log's producer table finds them.
pub fn kafka_to_native(records: &[u8], limits: DecodeLimits) -> Result<BuiltBatch, RecordsError> {
    // Room for uncompressed records of a few hundred bytes and more without
    // growing (each growth copies what was built); bounded by the request.
    // The buffer is a pooled one when it can be: it goes back to the pool
    // once the log has copied the batch (`requests/produce.rs`).
    let capacity = BATCH_HEADER_BYTES + records.len() + records.len() / 8;
    let mut builder = BatchBuilder::with_buffer(crate::runtime::buffer_pool::take_empty(capacity));
    let producer = visit_records::<RecordsError>(records, limits, |record| {
        if record.headers.len() > MAX_HEADERS_PER_RECORD {
            return Err(RecordsError::Corrupt("more than 65535 headers in one record"));
        }
        // Records borrow from the decoder's (decompressed) buffer, so the
        // list cannot be kept across records; without headers it allocates
        // nothing.
        let headers: Vec<(&str, &[u8])> =
            record.headers.iter().map(|(name, value)| (*name, value.unwrap_or_default())).collect();
        builder.push(record.timestamp_ms, record.key, record.value.unwrap_or_default(), &headers);
        Ok(())
    })?;
    if let Some(fields) = producer {
        // Non-negative: checked by the decoder. The log counts a Kafka
        // producer's sequences modulo 2^31, as Kafka does.
        builder.set_producer(native_producer_id(&fields), fields.base_sequence as u32);
    }
    Ok(builder.into_built())
}

/// Append one Kafka batch per ringlog batch in `batches` (a fetch's
/// answer, read from the log below the high watermark, every CRC verified
/// by that read: not computed again here) to `out`.
pub fn native_to_kafka(batches: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    for batch in BatchIter::already_verified(batches, crate::storage::batch::FORMAT_MAX_BATCH_BYTES) {
        let (header, bytes) = batch?;
        let summary = BatchSummary {
            base_offset: header.base_offset,
            leader_epoch: header.leader_epoch,
            first_timestamp_ms: header.first_timestamp_ms,
            max_timestamp_ms: header.max_timestamp_ms,
        };
        let mut encoder = BatchEncoder::begin(out, summary);
        for record in RecordIter::new(&bytes[BATCH_HEADER_BYTES..]) {
            let record = record?;
            headers.clear();
            headers.extend(record.headers());
            encoder.push(record.timestamp_ms, record.key, record.value, &headers);
        }
        encoder.finish();
    }
    Ok(())
}

/// The timestamp of the record at `offset` in `batches` (a fetch's answer
/// from that offset), if it is there.
pub fn timestamp_at(batches: &[u8], offset: u64) -> Option<i64> {
    for batch in BatchIter::new(batches, crate::storage::batch::FORMAT_MAX_BATCH_BYTES) {
        let (header, bytes) = batch.ok()?;
        if (header.base_offset..header.next_offset()).contains(&offset) {
            let index = (offset - header.base_offset) as usize;
            let record = RecordIter::new(&bytes[BATCH_HEADER_BYTES..]).nth(index)?.ok()?;
            return Some(record.timestamp_ms);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits { max_records_bytes: 1 << 20 };

    #[test]
    fn native_batch_survives_the_round_trip_through_kafka_format() {
        let mut builder = BatchBuilder::new();
        builder.push(1_700_000_000_000, Some(b"key"), b"value", &[("a", b"1"), ("a", b"2")]);
        builder.push(1_699_999_999_000, None, b"", &[]);
        let native = builder.finish();
        crate::storage::batch::stamp_batch(native, 42, 7);
        let native = native.to_vec();
        let mut kafka = Vec::new();
        native_to_kafka(&native, &mut kafka).unwrap();
        assert_eq!(i64::from_be_bytes(kafka[0..8].try_into().unwrap()), 42, "base offset kept");
        let back = kafka_to_native(&kafka, LIMITS).unwrap();
        // Same records; the log assigns offset and epoch again.
        assert_eq!(&back.bytes()[20..], &native[20..]);
    }

    #[test]
    fn a_produce_is_transcoded_into_a_pooled_buffer_without_its_old_bytes() {
        use crate::runtime::buffer_pool;
        let mut builder = BatchBuilder::new();
        for index in 0..100u8 {
            builder.push(1_700_000_000_000, None, &[index; 1000], &[("h", &[index])]);
        }
        let native = builder.finish().to_vec();
        let mut kafka = Vec::new();
        native_to_kafka(&native, &mut kafka).unwrap();
        // Above the ~114 KB the transcode asks for, within twice that.
        const POOLED_BYTES: usize = 192 << 10;
        buffer_pool::set_limit_bytes(4 << 20);
        buffer_pool::give_back(vec![0xaa; POOLED_BYTES]);
        let built = kafka_to_native(&kafka, LIMITS).unwrap();
        assert_eq!(&built.bytes()[20..], &native[20..], "the pooled buffer's old bytes are not in the batch");
        assert_eq!(built.into_bytes().capacity(), POOLED_BYTES, "built in the pooled buffer");
        buffer_pool::set_limit_bytes(0);
    }
}
