//! Kafka RecordBatch v2: a bounded decoder for batches from clients and an
//! encoder for batches sent to consumers. See `docs/KAFKA.md`.
//!
//! Layout (big endian; varints are zigzag like protobuf's sint):
//! ```text
//!  0 base_offset i64 | 8 batch_length i32 (bytes after this field) |
//! 12 partition_leader_epoch i32 | 16 magic i8 = 2 | 17 crc u32 (CRC-32C
//! of bytes 21..) | 21 attributes i16 | 23 last_offset_delta i32 |
//! 27 base_timestamp i64 | 35 max_timestamp i64 | 43 producer_id i64 |
//! 51 producer_epoch i16 | 53 base_sequence i32 | 57 record_count i32 |
//! 61 records (compressed as a whole when attributes & 7 != 0)
//! record: length varint | attributes i8 | timestamp_delta varlong |
//!   offset_delta varint | key_length varint (-1 null) | key |
//!   value_length varint (-1 null) | value | header_count varint |
//!   { key_length varint | key (UTF-8) | value_length varint (-1 null) | value }*
//! ```
//! The `kafka-protocol` crate has a record codec too; this one exists
//! because that one keeps headers in a map (a record with two headers of
//! one name would lose one, and SPEC §10 wants them back as produced) and
//! decompresses without a bound.

use std::io::Read;

use thiserror::Error;

/// Bytes of a RecordBatch v2 header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batch_length`'s coverage starts (base offset, length).
const LENGTH_COVERAGE_START: usize = 12;
/// First byte covered by the CRC (attributes).
const CRC_COVERAGE_START: usize = 21;
/// The smallest record: length, attributes, three deltas/lengths, value
/// length and header count of one byte each.
const RECORD_MIN_BYTES: usize = 7;
/// Attributes: compression codec bits.
const COMPRESSION_MASK: i16 = 0x7;
/// Attributes: transactional batch.
const TRANSACTIONAL_BIT: i16 = 1 << 4;
/// Attributes: control batch (transaction markers).
const CONTROL_BIT: i16 = 1 << 5;

/// Why a client's records were refused; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordsError {
    /// Truncated, bad lengths, bad varints, not UTF-8 header names.
    #[error("corrupt record batch: {0}")]
    Corrupt(&'static str),
    /// The stored CRC-32C does not match the batch.
    #[error("record batch crc-32c mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the batch header.
        stored: u32,
        /// CRC computed over the batch.
        computed: u32,
    },
    /// Only RecordBatch v2 (magic 2) is accepted.
    #[error("record batch magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    /// A codec this node does not decompress.
    #[error("compression codec {0} is not supported")]
    UnsupportedCompression(i16),
    /// Transactional or control batches (not implemented), or idempotent
    /// records this node cannot deduplicate as sent.
    #[error("{0}")]
    UnsupportedBatch(&'static str),
    /// More than one batch for one partition (Produce v3+ allows one).
    #[error("more than one record batch for one partition (a produce request carries exactly one)")]
    SeveralBatches,
    /// The records (decompressed) exceed the limit.
    #[error("records of more than {limit_bytes} bytes")]
    TooLarge {
        /// The limit.
        limit_bytes: usize,
    },
}

/// One record of a client batch, borrowed from the request (or from its
/// decompressed records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Absolute timestamp (base timestamp plus the record's delta).
    pub timestamp_ms: i64,
    /// Key, `None` when null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` when null.
    pub value: Option<&'a [u8]>,
    /// Headers in wire order; a value is `None` when null.
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// Bounds on decoding client records.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest records section of one batch after decompression.
    pub max_records_bytes: usize,
}

/// The idempotent producer's fields of a client batch (producer id ≥ 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    /// Producer id from InitProducerId.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// Sequence of the batch's first record (per partition, from 0).
    pub base_sequence: i32,
}

/// Call `visit` for every record of the one batch in a Produce
/// partition's `records`, after checking its framing and CRC-32C. Stops at
/// the first error (from the batch or from `visit`). Exactly one batch, as
/// Kafka requires since Produce v3: it also bounds what one partition's
/// records can decompress to (many small bombs, each under the limit,
/// would not be). Returns the producer's fields when the batch is
/// idempotent.
pub fn visit_records<E: From<RecordsError>>(
    mut bytes: &[u8],
    limits: DecodeLimits,
    mut visit: impl FnMut(RecordRef<'_>) -> Result<(), E>,
) -> Result<Option<ProducerFields>, E> {
    if bytes.is_empty() {
        return Err(RecordsError::Corrupt("no record batch").into());
    }
    let batch = split_batch(&mut bytes)?;
    if !bytes.is_empty() {
        return Err(RecordsError::SeveralBatches.into());
    }
    let header = BatchHead::parse(batch)?;
    let producer = header.producer;
    let payload = &batch[BATCH_HEADER_BYTES..];
    let decompressed;
    let records = match header.attributes & COMPRESSION_MASK {
        0 => payload,
        codec => {
            decompressed = decompress(codec, payload, limits.max_records_bytes)?;
            &decompressed[..]
        }
    };
    if records.len() > limits.max_records_bytes {
        return Err(RecordsError::TooLarge { limit_bytes: limits.max_records_bytes }.into());
    }
    // The count is untrusted: every record takes at least seven bytes.
    if header.record_count as usize > records.len() / RECORD_MIN_BYTES || header.record_count == 0 {
        return Err(RecordsError::Corrupt("record count disagrees with the records' size").into());
    }
    let last_offset_delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes"));
    if last_offset_delta != header.record_count - 1 {
        return Err(RecordsError::Corrupt("last offset delta disagrees with the record count").into());
    }
    let mut cursor = Cursor { bytes: records };
    for index in 0..header.record_count {
        visit(decode_record(&mut cursor, header.base_timestamp_ms, index)?)?;
    }
    if !cursor.bytes.is_empty() {
        return Err(RecordsError::Corrupt("bytes after the last record").into());
    }
    Ok(producer)
}

/// The fields of a client batch header that decoding needs.
struct BatchHead {
    attributes: i16,
    base_timestamp_ms: i64,
    record_count: i32,
    producer: Option<ProducerFields>,
}

impl BatchHead {
    /// Check magic, CRC-32C and what this node does not support yet.
    fn parse(batch: &[u8]) -> Result<BatchHead, RecordsError> {
        let magic = batch[16] as i8;
        if magic != 2 {
            return Err(RecordsError::UnsupportedMagic(magic));
        }
        let stored = u32::from_be_bytes(batch[17..21].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&batch[CRC_COVERAGE_START..]);
        if stored != computed {
            return Err(RecordsError::CrcMismatch { stored, computed });
        }
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        if attributes & CONTROL_BIT != 0 {
            return Err(RecordsError::UnsupportedBatch("control batches are not supported"));
        }
        if attributes & TRANSACTIONAL_BIT != 0 {
            return Err(RecordsError::UnsupportedBatch("transactional batches are not supported"));
        }
        let producer_id = i64::from_be_bytes(batch[43..51].try_into().expect("8 bytes"));
        let producer = match producer_id {
            id if id < 0 => None,
            producer_id => {
                let base_sequence = i32::from_be_bytes(batch[53..57].try_into().expect("4 bytes"));
                if base_sequence < 0 {
                    return Err(RecordsError::UnsupportedBatch("an idempotent batch has a negative base sequence"));
                }
                let producer_epoch = i16::from_be_bytes([batch[51], batch[52]]);
                Some(ProducerFields { producer_id, producer_epoch, base_sequence })
            }
        };
        Ok(BatchHead {
            attributes,
            base_timestamp_ms: i64::from_be_bytes(batch[27..35].try_into().expect("8 bytes")),
            record_count: i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes")),
            producer,
        })
    }
}

/// Take the next whole batch off `bytes` (by its declared length).
fn split_batch<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], RecordsError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(RecordsError::Corrupt("record batch shorter than its header"));
    }
    let declared = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let length = usize::try_from(declared)
        .ok()
        .and_then(|length| length.checked_add(LENGTH_COVERAGE_START))
        .filter(|length| (BATCH_HEADER_BYTES..=bytes.len()).contains(length))
        .ok_or(RecordsError::Corrupt("record batch length out of bounds"))?;
    let (batch, rest) = bytes.split_at(length);
    *bytes = rest;
    Ok(batch)
}

/// Decompress a batch's records into at most `limit_bytes` (one byte more
/// is read to tell "exactly at the limit" from "over it").
fn decompress(codec: i16, payload: &[u8], limit_bytes: usize) -> Result<Vec<u8>, RecordsError> {
    let corrupt = |_| RecordsError::Corrupt("compressed records do not decompress");
    let mut out = Vec::new();
    let bound = limit_bytes as u64 + 1;
    match codec {
        1 => flate2::read::GzDecoder::new(payload).take(bound).read_to_end(&mut out).map_err(corrupt)?,
        2 => return snappy(payload, limit_bytes),
        3 => lz4_flex::frame::FrameDecoder::new(payload).take(bound).read_to_end(&mut out).map_err(corrupt)?,
        4 => zstd_decoder(payload, limit_bytes).map_err(corrupt)?.take(bound).read_to_end(&mut out).map_err(corrupt)?,
        other => return Err(RecordsError::UnsupportedCompression(other)),
    };
    if out.len() > limit_bytes {
        return Err(RecordsError::TooLarge { limit_bytes });
    }
    Ok(out)
}

/// The largest zstd window a batch may ask for, as a power of two: 8 MiB,
/// or the decompression limit when that is larger (a frame's window is
/// what the decoder allocates up front, whatever the frame then holds).
/// Kafka clients compress at level 3, whose window is 2 MiB at most.
fn zstd_window_log_max(limit_bytes: usize) -> u32 {
    const MIN_LOG: u32 = 23;
    const MAX_LOG: u32 = 27;
    let needed = usize::BITS - limit_bytes.saturating_sub(1).leading_zeros();
    needed.clamp(MIN_LOG, MAX_LOG)
}

/// A zstd decoder over `payload` (one or more frames) that refuses a
/// window past [`zstd_window_log_max`].
fn zstd_decoder(payload: &[u8], limit_bytes: usize) -> std::io::Result<zstd::stream::read::Decoder<'_, &[u8]>> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(payload)?;
    decoder.window_log_max(zstd_window_log_max(limit_bytes))?;
    Ok(decoder)
}

/// Kafka's snappy: the xerial framing the Java client writes (a magic
/// header, then length-prefixed raw snappy blocks) or one raw block.
fn snappy(payload: &[u8], limit_bytes: usize) -> Result<Vec<u8>, RecordsError> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_BYTES: usize = 16;
    let corrupt = RecordsError::Corrupt("snappy records do not decompress");
    let mut out = Vec::new();
    let mut blocks: Vec<&[u8]> = Vec::new();
    if payload.starts_with(XERIAL_MAGIC) && payload.len() >= XERIAL_HEADER_BYTES {
        let mut rest = &payload[XERIAL_HEADER_BYTES..];
        while !rest.is_empty() {
            let length = rest.get(..4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
            let block = length.and_then(|length| rest.get(4..4 + length)).ok_or(corrupt.clone())?;
            rest = &rest[4 + block.len()..];
            blocks.push(block);
        }
    } else {
        blocks.push(payload);
    }
    for block in blocks {
        let length = snap::raw::decompress_len(block).map_err(|_| corrupt.clone())?;
        if out.len() + length > limit_bytes {
            return Err(RecordsError::TooLarge { limit_bytes });
        }
        let start = out.len();
        out.resize(start + length, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[start..]).map_err(|_| corrupt.clone())?;
    }
    Ok(out)
}

/// The record at `index` of its batch: its offset delta must be `index`
/// (the log assigns dense offsets; a batch that says otherwise is corrupt).
fn decode_record<'a>(
    cursor: &mut Cursor<'a>,
    base_timestamp_ms: i64,
    index: i32,
) -> Result<RecordRef<'a>, RecordsError> {
    let length = cursor.length()?.ok_or(RecordsError::Corrupt("null record length"))?;
    let mut record = Cursor { bytes: cursor.take(length)? };
    record.take(1)?; // attributes: unused in v2
    let timestamp_delta = record.varlong()?;
    if record.varlong()? != i64::from(index) {
        return Err(RecordsError::Corrupt("record offset deltas are not 0, 1, 2, ..."));
    }
    let key = record.nullable_bytes()?;
    let value = record.nullable_bytes()?;
    let header_count = record.length()?.ok_or(RecordsError::Corrupt("null header count"))?;
    // Two bytes per header at least: the count cannot reserve past the record.
    if header_count > record.bytes.len() / 2 {
        return Err(RecordsError::Corrupt("header count exceeds the record"));
    }
    let mut headers = Vec::with_capacity(header_count);
    for _ in 0..header_count {
        let name = record.nullable_bytes()?.ok_or(RecordsError::Corrupt("null header key"))?;
        let name = std::str::from_utf8(name).map_err(|_| RecordsError::Corrupt("header key is not UTF-8"))?;
        // ringlog stores a header name's length in two bytes.
        if name.len() > usize::from(u16::MAX) {
            return Err(RecordsError::Corrupt("header key longer than 65535 bytes"));
        }
        headers.push((name, record.nullable_bytes()?));
    }
    if !record.bytes.is_empty() {
        return Err(RecordsError::Corrupt("record length disagrees with its fields"));
    }
    let timestamp_ms = base_timestamp_ms.wrapping_add(timestamp_delta);
    Ok(RecordRef { timestamp_ms, key, value, headers })
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], RecordsError> {
        if length > self.bytes.len() {
            return Err(RecordsError::Corrupt("field runs past the record"));
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }

    /// A zigzag varint of at most ten bytes.
    fn varlong(&mut self) -> Result<i64, RecordsError> {
        let mut value = 0u64;
        for index in 0..10 {
            let byte = *self.bytes.first().ok_or(RecordsError::Corrupt("varint runs past the record"))?;
            self.bytes = &self.bytes[1..];
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(RecordsError::Corrupt("varint longer than ten bytes"))
    }

    /// A length: -1 is null, below that is corrupt.
    fn length(&mut self) -> Result<Option<usize>, RecordsError> {
        match self.varlong()? {
            -1 => Ok(None),
            length => usize::try_from(length).map(Some).map_err(|_| RecordsError::Corrupt("negative length")),
        }
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordsError> {
        self.length()?.map(|length| self.take(length)).transpose()
    }
}

/// What a batch sent to consumers says about itself.
#[derive(Debug, Clone, Copy)]
pub struct BatchSummary {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Leader epoch the batch was written under.
    pub leader_epoch: u32,
    /// Timestamp of the first record (the base of the deltas).
    pub first_timestamp_ms: i64,
    /// Largest record timestamp.
    pub max_timestamp_ms: i64,
}

/// Encodes one RecordBatch v2 (uncompressed, CreateTime, no producer) into
/// the end of `out`.
pub struct BatchEncoder<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    summary: BatchSummary,
    record_count: i32,
}

impl<'a> BatchEncoder<'a> {
    /// Start a batch at the end of `out`.
    pub fn begin(out: &'a mut Vec<u8>, summary: BatchSummary) -> BatchEncoder<'a> {
        let start = out.len();
        out.resize(start + BATCH_HEADER_BYTES, 0);
        BatchEncoder { out, start, summary, record_count: 0 }
    }

    /// Append the next record (its offset is the batch's base plus the
    /// records pushed before it).
    pub fn push(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) {
        let timestamp_delta = timestamp_ms.wrapping_sub(self.summary.first_timestamp_ms);
        let offset_delta = i64::from(self.record_count);
        // The body's length comes first: it is summed from the fields, so
        // the record is written once, straight into the answer.
        let headers_bytes: usize = headers
            .iter()
            .map(|(name, header_value)| bytes_length(Some(name.as_bytes())) + bytes_length(Some(header_value)))
            .sum();
        let body_bytes = 1
            + varlong_length(timestamp_delta)
            + varlong_length(offset_delta)
            + bytes_length(key)
            + bytes_length(Some(value))
            + varlong_length(headers.len() as i64)
            + headers_bytes;
        let out = &mut *self.out;
        put_varlong(out, body_bytes as i64);
        let body_start = out.len();
        out.push(0); // attributes
        put_varlong(out, timestamp_delta);
        put_varlong(out, offset_delta);
        put_bytes(out, key);
        put_bytes(out, Some(value));
        put_varlong(out, headers.len() as i64);
        for (name, header_value) in headers {
            put_bytes(out, Some(name.as_bytes()));
            put_bytes(out, Some(header_value));
        }
        assert_eq!(out.len() - body_start, body_bytes, "the length written is the body's");
        self.record_count += 1;
    }

    /// Write the header and the CRC-32C. A batch without records is removed.
    pub fn finish(self) {
        if self.record_count == 0 {
            self.out.truncate(self.start);
            return;
        }
        let summary = self.summary;
        let batch = &mut self.out[self.start..];
        let batch_length = (batch.len() - LENGTH_COVERAGE_START) as i32;
        batch[0..8].copy_from_slice(&(summary.base_offset as i64).to_be_bytes());
        batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
        batch[12..16].copy_from_slice(&(summary.leader_epoch as i32).to_be_bytes());
        batch[16] = 2;
        batch[21..23].copy_from_slice(&0i16.to_be_bytes());
        batch[23..27].copy_from_slice(&(self.record_count - 1).to_be_bytes());
        batch[27..35].copy_from_slice(&summary.first_timestamp_ms.to_be_bytes());
        batch[35..43].copy_from_slice(&summary.max_timestamp_ms.to_be_bytes());
        batch[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        batch[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        batch[57..61].copy_from_slice(&self.record_count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_COVERAGE_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Bytes [`put_varlong`] writes for `value`.
fn varlong_length(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let bits = (u64::BITS - zigzag.leading_zeros()).max(1) as usize;
    bits.div_ceil(7)
}

/// Bytes [`put_bytes`] writes for `bytes`.
fn bytes_length(bytes: Option<&[u8]>) -> usize {
    match bytes {
        Some(bytes) => varlong_length(bytes.len() as i64) + bytes.len(),
        None => varlong_length(-1),
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            put_varlong(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
        None => put_varlong(out, -1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits { max_records_bytes: 1 << 20 };

    /// timestamp, key, value, headers
    type Input<'a> = (i64, Option<&'a [u8]>, &'a [u8], &'a [(&'a str, &'a [u8])]);
    /// timestamp, key, value, headers (owned)
    type Decoded = (i64, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn encoded(records: &[Input<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        let summary =
            BatchSummary { base_offset: 7, leader_epoch: 3, first_timestamp_ms: records[0].0, max_timestamp_ms: 0 };
        let mut encoder = BatchEncoder::begin(&mut out, summary);
        for (timestamp_ms, key, value, headers) in records {
            encoder.push(*timestamp_ms, *key, value, headers);
        }
        encoder.finish();
        out
    }

    fn decoded(bytes: &[u8]) -> Result<Vec<Decoded>, RecordsError> {
        let mut records = Vec::new();
        visit_records::<RecordsError>(bytes, LIMITS, |record| {
            let headers = record.headers.iter().map(|(name, value)| (name.to_string(), value.unwrap().to_vec()));
            records.push((
                record.timestamp_ms,
                record.key.map(<[u8]>::to_vec),
                record.value.unwrap().to_vec(),
                headers.collect(),
            ));
            Ok(())
        })?;
        Ok(records)
    }

    #[test]
    fn encoded_batch_decodes_to_the_same_records_with_duplicate_headers_kept() {
        let headers: &[(&str, &[u8])] = &[("h", b"1"), ("h", b"2")];
        let bytes = encoded(&[(1_000, Some(b"k"), b"v1", headers), (999, None, b"", &[])]);
        let records = decoded(&bytes).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0],
            (
                1_000,
                Some(b"k".to_vec()),
                b"v1".to_vec(),
                vec![("h".into(), b"1".to_vec()), ("h".into(), b"2".to_vec())]
            )
        );
        assert_eq!(records[1], (999, None, Vec::new(), Vec::new()));
    }

    #[test]
    fn records_of_every_varint_width_decode_with_the_kafka_protocol_crate() {
        // Lengths either side of each varint boundary (zigzag: 64, 8192, …).
        let sizes = [0usize, 1, 63, 64, 65, 8191, 8192, 8193, 70_000];
        let values: Vec<Vec<u8>> = sizes.iter().map(|size| vec![b'v'; *size]).collect();
        let keys: Vec<Vec<u8>> = sizes.iter().rev().map(|size| vec![b'k'; *size]).collect();
        let header_value = vec![b'h'; 64];
        let headers: &[(&str, &[u8])] = &[("name", &header_value)];
        let inputs: Vec<Input<'_>> = (0..sizes.len())
            .map(|index| (1_000 + index as i64 * 70, Some(&keys[index][..]), &values[index][..], headers))
            .collect();
        let mut bytes = bytes::Bytes::from(encoded(&inputs));
        let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(decoded.records.len(), sizes.len());
        for (index, record) in decoded.records.iter().enumerate() {
            assert_eq!(record.offset, 7 + index as i64);
            assert_eq!(record.timestamp, 1_000 + index as i64 * 70);
            assert_eq!(record.key.as_deref(), Some(&keys[index][..]));
            assert_eq!(record.value.as_deref(), Some(&values[index][..]));
            assert_eq!(record.headers.len(), 1);
        }
    }

    #[test]
    fn flipped_bit_fails_the_crc() {
        let mut bytes = encoded(&[(5, Some(b"key"), b"value", &[])]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(decoded(&bytes), Err(RecordsError::CrcMismatch { .. })));
    }

    #[test]
    fn huge_record_count_is_refused_before_any_allocation() {
        let mut bytes = encoded(&[(5, None, b"v", &[])]);
        bytes[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_COVERAGE_START..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decoded(&bytes), Err(RecordsError::Corrupt("record count disagrees with the records' size")));
    }

    #[test]
    fn batch_length_past_the_bytes_is_corrupt() {
        let mut bytes = encoded(&[(5, None, b"v", &[])]);
        bytes[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(decoded(&bytes), Err(RecordsError::Corrupt("record batch length out of bounds")));
    }

    /// `plain` (one encoded batch) with its records replaced by `compress`'s
    /// output of them, flagged as `codec`, length and CRC fixed.
    fn compressed(plain: &[u8], codec: i16, compress: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut bytes = plain[..BATCH_HEADER_BYTES].to_vec();
        bytes.extend_from_slice(&compress(&plain[BATCH_HEADER_BYTES..]));
        let length = (bytes.len() - LENGTH_COVERAGE_START) as i32;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        bytes[21..23].copy_from_slice(&codec.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_COVERAGE_START..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn gzip_records_decompress_within_the_limit_and_not_past_it() {
        use std::io::Write;
        let plain = encoded(&[(5, Some(b"k"), &[b'x'; 4096], &[])]);
        let bytes = compressed(&plain, 1, |records| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(records).unwrap();
            encoder.finish().unwrap()
        });
        assert_eq!(decoded(&bytes).unwrap()[0].2, vec![b'x'; 4096]);
        let small = DecodeLimits { max_records_bytes: 1024 };
        let refused = visit_records::<RecordsError>(&bytes, small, |_| Ok(()));
        assert_eq!(refused, Err(RecordsError::TooLarge { limit_bytes: 1024 }));
    }

    /// `bytes` (one batch) with producer fields set and its CRC recomputed.
    fn with_producer(mut bytes: Vec<u8>, producer_id: i64, epoch: i16, sequence: i32) -> Vec<u8> {
        bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
        bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_COVERAGE_START..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn idempotent_batch_yields_its_producer_and_only_alone() {
        let plain = encoded(&[(5, None, b"v", &[])]);
        assert_eq!(visit_records::<RecordsError>(&plain, LIMITS, |_| Ok(())), Ok(None));
        let batch = with_producer(plain.clone(), 77, 2, 40);
        let fields = ProducerFields { producer_id: 77, producer_epoch: 2, base_sequence: 40 };
        assert_eq!(visit_records::<RecordsError>(&batch, LIMITS, |_| Ok(())), Ok(Some(fields)));
        for two in [[batch.clone(), plain.clone()].concat(), [plain.clone(), plain.clone()].concat()] {
            let refused = visit_records::<RecordsError>(&two, LIMITS, |_| Ok(()));
            assert_eq!(refused, Err(RecordsError::SeveralBatches), "one batch per partition, idempotent or not");
        }
        let negative = with_producer(plain, 77, 0, -5);
        let refused = visit_records::<RecordsError>(&negative, LIMITS, |_| Ok(()));
        assert!(matches!(refused, Err(RecordsError::UnsupportedBatch(_))));
    }

    #[test]
    fn zstd_records_decompress_within_the_limit_and_not_past_it() {
        let headers: &[(&str, &[u8])] = &[("h", b"1")];
        let plain = encoded(&[(5, Some(b"k"), &[b'z'; 4096], headers)]);
        let bytes = compressed(&plain, 4, |records| zstd::bulk::compress(records, 3).unwrap());
        let records = decoded(&bytes).unwrap();
        assert_eq!((records[0].2.clone(), records[0].3.clone()), (vec![b'z'; 4096], vec![("h".into(), b"1".to_vec())]));
        let small = DecodeLimits { max_records_bytes: 1024 };
        let refused = visit_records::<RecordsError>(&bytes, small, |_| Ok(()));
        assert_eq!(refused, Err(RecordsError::TooLarge { limit_bytes: 1024 }));
    }

    #[test]
    fn zstd_frames_asking_for_a_window_past_the_bound_are_corrupt() {
        use std::io::Write;
        let plain = encoded(&[(5, None, b"small", &[])]);
        // A streamed frame (no content size) declares its window: 32 MiB,
        // which libzstd's own default bound (128 MiB) would allocate.
        let bytes = compressed(&plain, 4, |records| {
            let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            encoder.window_log(25).unwrap();
            encoder.write_all(records).unwrap();
            encoder.finish().unwrap()
        });
        assert!(zstd::stream::decode_all(&bytes[BATCH_HEADER_BYTES..]).is_ok(), "a valid frame");
        assert_eq!(decoded(&bytes), Err(RecordsError::Corrupt("compressed records do not decompress")));
        assert_eq!(zstd_window_log_max(1 << 20), 23, "8 MiB at least");
        assert_eq!(zstd_window_log_max((16 << 20) + 1), 25, "the limit when larger");
        assert_eq!(zstd_window_log_max(usize::MAX), 27, "never past 128 MiB");
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for value in [0, 1, -1, 63, -64, 64, i64::from(i32::MAX), i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(Cursor { bytes: &out }.varlong().unwrap(), value);
        }
    }
}
