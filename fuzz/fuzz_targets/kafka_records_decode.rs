//! Kafka RecordBatch v2 from clients: the decoder never panics and never
//! allocates past its bounds; what decodes re-encodes (ringlog's encoder
//! for consumers) to the same records. The first byte is a mode: odd
//! recomputes the first batch's CRC-32C so mutations get past the check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::protocol::kafka::records::{visit_records, BatchEncoder, BatchSummary, DecodeLimits, RecordsError};

/// timestamp, key, value, headers (null values as empty, as ringlog stores them)
type Owned = (i64, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

fn decode(bytes: &[u8]) -> Result<Vec<Owned>, RecordsError> {
    let limits = DecodeLimits { max_records_bytes: 1 << 20 };
    let mut records = Vec::new();
    visit_records::<RecordsError>(bytes, limits, |record| {
        let headers = record.headers.iter().map(|(name, value)| (name.to_string(), value.unwrap_or_default().to_vec()));
        let value = record.value.unwrap_or_default().to_vec();
        records.push((record.timestamp_ms, record.key.map(<[u8]>::to_vec), value, headers.collect()));
        Ok(())
    })?;
    Ok(records)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode % 2 == 1 && bytes.len() >= 61 {
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let Ok(records) = decode(&bytes) else { return };
    let first_timestamp_ms = records[0].0;
    let summary = BatchSummary { base_offset: 0, leader_epoch: 0, first_timestamp_ms, max_timestamp_ms: 0 };
    let mut encoded = Vec::new();
    let mut encoder = BatchEncoder::begin(&mut encoded, summary);
    for (timestamp_ms, key, value, headers) in &records {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(name, value)| (name.as_str(), &value[..])).collect();
        encoder.push(*timestamp_ms, key.as_deref(), value, &headers);
    }
    encoder.finish();
    assert_eq!(decode(&encoded).expect("our own batch decodes"), records, "decode/encode round trip");
});
