//! Record batch wire and disk format: one checksummed unit of write,
//! replication and verification. See `docs/FORMAT.md`.
//!
//! Layout (little endian):
//! ```text
//!  0 base_offset        u64   assigned by the log (not covered by the CRC)
//!  8 batch_bytes        u32   total length including this header
//! 12 leader_epoch       u32   assigned by the leader (not covered by the CRC)
//! 16 crc                u32   crc32 of bytes [20 .. batch_bytes]
//! 20 magic              u8    = 1
//! 21 flags              u8    bits 0-2: compression codec (0 = none)
//! 22 reserved           u16   = 0
//! 24 record_count       u32   >= 1
//! 28 reserved           u32   = 0
//! 32 first_timestamp_ms i64
//! 40 max_timestamp_ms   i64
//! 48 producer_id        u64   0 = not idempotent
//! 56 base_sequence      u32   producer's per-partition sequence of the first record
//! 60 reserved           u32   = 0
//! 64 records...
//! ```
//! A record:
//! ```text
//! record_bytes u32 (bytes after this field) | timestamp_ms i64 |
//! key_length i32 (-1 = no key) | key | value_length u32 | value |
//! header_count u16 | { name_length u16 | name (UTF-8) | value_length u32 | value }*
//! ```
//! The fields before the CRC are the ones the log assigns, so a batch
//! checksummed by a producer stays valid after the log places it: the CRC
//! protects the payload end to end, and offset continuity protects the
//! offsets during recovery.

use thiserror::Error;

/// Size of the fixed batch header in bytes.
pub const BATCH_HEADER_BYTES: usize = 64;
/// Current batch format version.
pub const BATCH_MAGIC: u8 = 1;
/// Smallest possible record: length, timestamp, key length, value length, header count.
pub const RECORD_OVERHEAD_BYTES: usize = 4 + 8 + 4 + 4 + 2;
/// Byte position of the CRC field in the header.
pub const CRC_POSITION: usize = 16;
/// First byte covered by the CRC.
pub const CRC_COVERED_START: usize = 20;
/// The format's own bound on a batch: its length field is a u32 and index
/// positions inside a segment are u32. Data already in the log (recovery,
/// reads, `check`, replication) is checked against this bound only; the
/// configured `max_batch_bytes` is an admission limit for new appends
/// (SPEC §3), which an operator may lower after larger batches were
/// acknowledged.
pub const FORMAT_MAX_BATCH_BYTES: usize = u32::MAX as usize;

const FLAGS_CODEC_MASK: u8 = 0b0000_0111;

/// Why a batch could not be decoded or validated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// Fewer bytes than a header, or than the header's declared length.
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the header says are needed.
        needed: usize,
        /// Bytes actually available.
        available: usize,
    },
    /// The header's length is impossible (smaller than a header or over the limit).
    #[error("invalid batch length {batch_bytes} (limit {limit})")]
    InvalidLength {
        /// Declared length.
        batch_bytes: u32,
        /// Configured maximum.
        limit: usize,
    },
    /// Unknown format version.
    #[error("unknown batch magic {0}")]
    BadMagic(u8),
    /// Stored checksum does not match the bytes.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC found in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Unsupported compression codec in flags.
    #[error("unsupported compression codec {0}")]
    UnsupportedCodec(u8),
    /// Structure of the records disagrees with the header.
    #[error("malformed records: {0}")]
    MalformedRecords(&'static str),
    /// A batch must hold at least one record.
    #[error("batch has no records")]
    Empty,
}

/// Decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Total bytes of the batch, header included.
    pub batch_bytes: u32,
    /// Leader epoch under which the batch was appended.
    pub leader_epoch: u32,
    /// Stored CRC32.
    pub crc: u32,
    /// Format version.
    pub magic: u8,
    /// Flags (compression codec in the low bits).
    pub flags: u8,
    /// Number of records.
    pub record_count: u32,
    /// Timestamp of the first record.
    pub first_timestamp_ms: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp_ms: i64,
    /// Idempotent producer id, 0 when none.
    pub producer_id: u64,
    /// Producer sequence number of the first record.
    pub base_sequence: u32,
}

impl BatchHeader {
    /// Offset one past the last record of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Offset of the last record of the batch.
    pub fn last_offset(&self) -> u64 {
        self.next_offset() - 1
    }

    /// Parse the header from the start of `bytes` without checking the CRC.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_BYTES, available: bytes.len() });
        }
        Ok(BatchHeader {
            base_offset: read_u64(bytes, 0),
            batch_bytes: read_u32(bytes, 8),
            leader_epoch: read_u32(bytes, 12),
            crc: read_u32(bytes, 16),
            magic: bytes[20],
            flags: bytes[21],
            record_count: read_u32(bytes, 24),
            first_timestamp_ms: read_u64(bytes, 32) as i64,
            max_timestamp_ms: read_u64(bytes, 40) as i64,
            producer_id: read_u64(bytes, 48),
            base_sequence: read_u32(bytes, 56),
        })
    }

    /// Check length bounds, magic and codec (cheap checks before the CRC).
    pub fn check_shape(&self, max_batch_bytes: usize) -> Result<(), BatchError> {
        let length = self.batch_bytes as usize;
        if length < BATCH_HEADER_BYTES + RECORD_OVERHEAD_BYTES || length > max_batch_bytes {
            return Err(BatchError::InvalidLength { batch_bytes: self.batch_bytes, limit: max_batch_bytes });
        }
        if self.magic != BATCH_MAGIC {
            return Err(BatchError::BadMagic(self.magic));
        }
        let codec = self.flags & FLAGS_CODEC_MASK;
        if codec != 0 {
            return Err(BatchError::UnsupportedCodec(codec));
        }
        if self.record_count == 0 {
            return Err(BatchError::Empty);
        }
        Ok(())
    }
}

/// Compute the CRC a batch should carry.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32fast::hash(&batch[CRC_COVERED_START..])
}

/// Validate a complete batch: shape, length, CRC. Returns the header.
///
/// `bytes` may be longer than the batch; only the declared length is checked.
pub fn verify_batch(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = shaped_header(bytes, max_batch_bytes)?;
    let length = header.batch_bytes as usize;
    let computed = compute_crc(&bytes[..length]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { stored: header.crc, computed });
    }
    Ok(header)
}

/// The header of the batch at the start of `bytes`, its shape checked and
/// its length within `bytes`; the CRC not computed.
fn shaped_header(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    header.check_shape(max_batch_bytes)?;
    let length = header.batch_bytes as usize;
    if bytes.len() < length {
        return Err(BatchError::Truncated { needed: length, available: bytes.len() });
    }
    Ok(header)
}

/// Fully validate a batch, including every record's structure. Used on
/// input from clients and peers, where the CRC alone proves only that the
/// sender computed it.
pub fn validate_batch(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = verify_batch(bytes, max_batch_bytes)?;
    if bytes.len() != header.batch_bytes as usize {
        return Err(BatchError::MalformedRecords("trailing bytes after batch"));
    }
    let mut count = 0u32;
    let mut max_timestamp_ms = i64::MIN;
    for record in RecordIter::new(&bytes[BATCH_HEADER_BYTES..]) {
        let record = record?;
        max_timestamp_ms = max_timestamp_ms.max(record.timestamp_ms);
        count += 1;
    }
    if count != header.record_count {
        return Err(BatchError::MalformedRecords("record count differs from header"));
    }
    if max_timestamp_ms != header.max_timestamp_ms {
        return Err(BatchError::MalformedRecords("max timestamp differs from records"));
    }
    Ok(header)
}

/// One record borrowed from a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Record timestamp.
    pub timestamp_ms: i64,
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub value: &'a [u8],
    /// Encoded headers section (count excluded); iterate with [`HeaderIter`].
    pub headers_bytes: &'a [u8],
    /// Number of headers.
    pub header_count: u16,
}

impl<'a> RecordView<'a> {
    /// Iterate over the record's headers.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter { bytes: self.headers_bytes, remaining: self.header_count }
    }
}

/// Iterator over the records of a batch payload; never panics on bad input.
pub struct RecordIter<'a> {
    bytes: &'a [u8],
    failed: bool,
}

impl<'a> RecordIter<'a> {
    /// Iterate over `payload` (the bytes after the batch header).
    pub fn new(payload: &'a [u8]) -> RecordIter<'a> {
        RecordIter { bytes: payload, failed: false }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.bytes.is_empty() {
            return None;
        }
        match decode_record(self.bytes) {
            Ok((record, used)) => {
                self.bytes = &self.bytes[used..];
                Some(Ok(record))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

fn decode_record(bytes: &[u8]) -> Result<(RecordView<'_>, usize), BatchError> {
    let mut cursor = Cursor { bytes, position: 0 };
    let record_bytes = cursor.u32()? as usize;
    let total = record_bytes.checked_add(4).ok_or(BatchError::MalformedRecords("record length overflow"))?;
    if total > bytes.len() || record_bytes < RECORD_OVERHEAD_BYTES - 4 {
        return Err(BatchError::MalformedRecords("record length out of bounds"));
    }
    let mut cursor = Cursor { bytes: &bytes[..total], position: 4 };
    let timestamp_ms = cursor.u64()? as i64;
    let key_length = cursor.u32()? as i32;
    let key = match key_length {
        -1 => None,
        length if length >= 0 => Some(cursor.take(length as usize)?),
        _ => return Err(BatchError::MalformedRecords("negative key length")),
    };
    let value_length = cursor.u32()? as usize;
    let value = cursor.take(value_length)?;
    let header_count = cursor.u16()?;
    let headers_start = cursor.position;
    for _ in 0..header_count {
        let name_length = cursor.u16()? as usize;
        let name = cursor.take(name_length)?;
        if std::str::from_utf8(name).is_err() {
            return Err(BatchError::MalformedRecords("header name is not UTF-8"));
        }
        let header_value_length = cursor.u32()? as usize;
        cursor.take(header_value_length)?;
    }
    if cursor.position != total {
        return Err(BatchError::MalformedRecords("record length disagrees with fields"));
    }
    let headers_bytes = &bytes[headers_start..total];
    Ok((RecordView { timestamp_ms, key, value, headers_bytes, header_count }, total))
}

/// Iterator over a record's headers as (name, value).
pub struct HeaderIter<'a> {
    bytes: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let mut cursor = Cursor { bytes: self.bytes, position: 0 };
        let name_length = cursor.u16().ok()? as usize;
        let name = std::str::from_utf8(cursor.take(name_length).ok()?).ok()?;
        let value_length = cursor.u32().ok()? as usize;
        let value = cursor.take(value_length).ok()?;
        self.bytes = &self.bytes[cursor.position..];
        self.remaining -= 1;
        Some((name, value))
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], BatchError> {
        let end = self.position.checked_add(length).ok_or(BatchError::MalformedRecords("length overflow"))?;
        if end > self.bytes.len() {
            return Err(BatchError::MalformedRecords("field runs past record"));
        }
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }
    fn u16(&mut self) -> Result<u16, BatchError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
    fn u32(&mut self) -> Result<u32, BatchError> {
        let bytes = self.take(4)?;
        Ok(read_u32(bytes, 0))
    }
    fn u64(&mut self) -> Result<u64, BatchError> {
        let bytes = self.take(8)?;
        Ok(read_u64(bytes, 0))
    }
}

/// Read a little-endian u32 at `position` (caller guarantees bounds).
pub fn read_u32(bytes: &[u8], position: usize) -> u32 {
    u32::from_le_bytes(bytes[position..position + 4].try_into().expect("4 bytes"))
}

/// Read a little-endian u64 at `position` (caller guarantees bounds).
pub fn read_u64(bytes: &[u8], position: usize) -> u64 {
    u64::from_le_bytes(bytes[position..position + 8].try_into().expect("8 bytes"))
}

/// Overwrite the log-assigned fields of an encoded batch (outside the CRC).
pub fn stamp_batch(batch: &mut [u8], base_offset: u64, leader_epoch: u32) {
    assert!(batch.len() >= BATCH_HEADER_BYTES, "stamp_batch on a short batch");
    batch[0..8].copy_from_slice(&base_offset.to_le_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_le_bytes());
}

/// Builds an encoded batch into a reusable buffer.
///
/// `clear` keeps the allocation, so a producer that reuses one builder
/// encodes without allocating once the buffer has grown to its working size.
#[derive(Debug)]
pub struct BatchBuilder {
    buffer: Vec<u8>,
    record_count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer_id: u64,
    base_sequence: u32,
    /// `finish` lent the encoded bytes out mutably: they may no longer be
    /// what `push` wrote, so they cannot become a [`BuiltBatch`].
    lent_out: bool,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    /// A new empty builder.
    pub fn new() -> BatchBuilder {
        BatchBuilder::with_capacity(0)
    }

    /// A new empty builder whose buffer holds `bytes` before it grows.
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        BatchBuilder::with_buffer(Vec::with_capacity(bytes.max(BATCH_HEADER_BYTES)))
    }

    /// A new empty builder writing into `buffer`: its bytes are dropped,
    /// its capacity kept (a reused buffer, `runtime::buffer_pool`).
    pub fn with_buffer(buffer: Vec<u8>) -> BatchBuilder {
        let mut builder = BatchBuilder {
            buffer,
            record_count: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
            producer_id: 0,
            base_sequence: 0,
            lent_out: false,
        };
        builder.clear();
        builder
    }

    /// Reset to an empty batch, keeping the buffer's capacity.
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.buffer.resize(BATCH_HEADER_BYTES, 0);
        self.record_count = 0;
        self.first_timestamp_ms = 0;
        self.max_timestamp_ms = i64::MIN;
        self.producer_id = 0;
        self.base_sequence = 0;
        self.lent_out = false;
    }

    /// Tag the batch for idempotent produce.
    pub fn set_producer(&mut self, producer_id: u64, base_sequence: u32) {
        self.producer_id = producer_id;
        self.base_sequence = base_sequence;
    }

    /// Number of records added so far.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Encoded size so far, header included.
    pub fn encoded_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Append a record.
    pub fn push(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) {
        let headers_bytes: usize = headers.iter().map(|(name, value)| 2 + name.len() + 4 + value.len()).sum();
        let record_bytes = 8 + 4 + key.map_or(0, <[u8]>::len) + 4 + value.len() + 2 + headers_bytes;
        let buffer = &mut self.buffer;
        buffer.extend_from_slice(&(record_bytes as u32).to_le_bytes());
        buffer.extend_from_slice(&timestamp_ms.to_le_bytes());
        match key {
            Some(key) => {
                buffer.extend_from_slice(&(key.len() as u32).to_le_bytes());
                buffer.extend_from_slice(key);
            }
            None => buffer.extend_from_slice(&(-1i32).to_le_bytes()),
        }
        buffer.extend_from_slice(&(value.len() as u32).to_le_bytes());
        buffer.extend_from_slice(value);
        buffer.extend_from_slice(&(headers.len() as u16).to_le_bytes());
        for (name, header_value) in headers {
            buffer.extend_from_slice(&(name.len() as u16).to_le_bytes());
            buffer.extend_from_slice(name.as_bytes());
            buffer.extend_from_slice(&(header_value.len() as u32).to_le_bytes());
            buffer.extend_from_slice(header_value);
        }
        if self.record_count == 0 {
            self.first_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        self.record_count += 1;
    }

    /// Write the header and CRC; returns the encoded batch (base offset 0),
    /// mutable so the log can stamp its offsets without a copy.
    pub fn finish(&mut self) -> &mut [u8] {
        self.lent_out = true;
        self.write_header()
    }

    fn write_header(&mut self) -> &mut [u8] {
        assert!(self.record_count > 0, "a batch needs at least one record");
        let batch_bytes = self.buffer.len() as u32;
        let header = &mut self.buffer[..BATCH_HEADER_BYTES];
        header.fill(0);
        header[8..12].copy_from_slice(&batch_bytes.to_le_bytes());
        header[20] = BATCH_MAGIC;
        header[24..28].copy_from_slice(&self.record_count.to_le_bytes());
        header[32..40].copy_from_slice(&self.first_timestamp_ms.to_le_bytes());
        header[40..48].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
        header[48..56].copy_from_slice(&self.producer_id.to_le_bytes());
        header[56..60].copy_from_slice(&self.base_sequence.to_le_bytes());
        let crc = compute_crc(&self.buffer);
        self.buffer[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_le_bytes());
        &mut self.buffer
    }

    /// [`BatchBuilder::finish`], handing over the buffer instead of a copy,
    /// as a batch the log need not check again: only from a builder whose
    /// bytes were never lent out since its last `clear` (they are then
    /// exactly what `push` wrote).
    pub fn into_built(mut self) -> BuiltBatch {
        assert!(!self.lent_out, "a batch lent out by finish() is not built here any more");
        self.write_header();
        BuiltBatch(self.buffer)
    }
}

/// A batch this process encoded with [`BatchBuilder`], and only that (no
/// other constructor): valid by construction, its CRC, record count and
/// timestamps computed from the records as they were written. The log
/// appends it without walking its records and checksumming it again,
/// which was half the CRC work of a Kafka produce (the batch is built from
/// the client's records moments before).
#[derive(Debug)]
pub struct BuiltBatch(Vec<u8>);

impl BuiltBatch {
    /// The encoded batch.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The encoded batch, for the log to stamp its offsets and epoch
    /// (outside the CRC) in place.
    pub(in crate::storage) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// The buffer, to reuse once the log has copied the batch.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The one walk over batch headers: every reader that steps from batch to
/// batch by header (recovery's epoch and producer walks, a sealed segment's
/// end, truncation's search for a batch start, the max-timestamp walk, a
/// follower's checks of an answer) goes through it, so the zero- or
/// short-length guard that keeps a walk from looping lives in one place.
/// It yields each header whose 64 bytes are in `bytes`, checked for shape
/// against the format's own bound; the batch body may lie beyond `bytes`
/// (chunked readers continue at [`HeaderWalk::position`]). It stops at the
/// first header that is incomplete (`None`; `position` is where it starts)
/// or invalid (one `Err`, then `None`).
#[derive(Debug, Clone)]
pub struct HeaderWalk<'a> {
    bytes: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> HeaderWalk<'a> {
    /// Walk the headers in `bytes` starting at `position`.
    pub fn new(bytes: &'a [u8], position: usize) -> HeaderWalk<'a> {
        HeaderWalk { bytes, position, failed: false }
    }

    /// Where the next batch starts (after the last header yielded).
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for HeaderWalk<'_> {
    /// (position of the batch, its header), or why the bytes there are no batch.
    type Item = Result<(usize, BatchHeader), (usize, BatchError)>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.position..).filter(|rest| rest.len() >= BATCH_HEADER_BYTES && !self.failed)?;
        let checked =
            BatchHeader::parse(rest).and_then(|header| header.check_shape(FORMAT_MAX_BATCH_BYTES).map(|()| header));
        match checked {
            Ok(header) => {
                let position = self.position;
                // check_shape guarantees at least a header and one record:
                // the walk always moves forward.
                self.position += header.batch_bytes as usize;
                Some(Ok((position, header)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err((self.position, error)))
            }
        }
    }
}

/// Iterate over consecutive whole batches in `bytes` (e.g. a fetch result),
/// verifying each CRC. Stops with an error at the first bad batch.
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    max_batch_bytes: usize,
    verify_crc: bool,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    /// Iterate over the batches in `bytes`, each CRC-verified.
    pub fn new(bytes: &'a [u8], max_batch_bytes: usize) -> BatchIter<'a> {
        BatchIter { bytes, max_batch_bytes, verify_crc: true, failed: false }
    }

    /// Iterate over batches this process verified moments ago (a read's
    /// answer, which verified every batch's CRC, or the tail cache, which
    /// holds only validated batches): headers, shapes and lengths are
    /// checked as by [`BatchIter::new`], the CRC is not computed again.
    /// Re-verifying a Kafka fetch's batches before transcoding them was
    /// 3-4 % of a consuming node's CPU.
    pub fn already_verified(bytes: &'a [u8], max_batch_bytes: usize) -> BatchIter<'a> {
        BatchIter { bytes, max_batch_bytes, verify_crc: false, failed: false }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.bytes.is_empty() {
            return None;
        }
        let checked = match self.verify_crc {
            true => verify_batch(self.bytes, self.max_batch_bytes),
            false => shaped_header(self.bytes, self.max_batch_bytes),
        };
        match checked {
            Ok(header) => {
                let (batch, rest) = self.bytes.split_at(header.batch_bytes as usize);
                self.bytes = rest;
                Some(Ok((header, batch)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    #[test]
    fn already_verified_batches_skip_the_crc_but_not_the_bounds() {
        let mut builder = BatchBuilder::new();
        builder.push(1, None, b"value", &[]);
        let mut bytes = builder.finish().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(BatchIter::new(&bytes, LIMIT).next(), Some(Err(BatchError::CrcMismatch { .. }))));
        let trusted: Vec<_> = BatchIter::already_verified(&bytes, LIMIT).collect();
        assert!(matches!(trusted[..], [Ok(_)]), "the CRC is not computed again");
        let cut = &bytes[..bytes.len() - 1];
        let truncated = BatchIter::already_verified(cut, LIMIT).next();
        assert!(matches!(truncated, Some(Err(BatchError::Truncated { .. }))), "lengths still bound the bytes");
    }

    #[test]
    fn header_walk_stops_on_a_zero_length_instead_of_looping() {
        let mut batch = sample();
        stamp_batch(&mut batch, 0, 1);
        let mut bytes = batch.clone();
        bytes.extend_from_slice(&[0u8; 64]);
        let walked: Vec<_> = HeaderWalk::new(&bytes, 0).collect();
        assert_eq!(walked.len(), 2);
        assert!(walked[0].is_ok());
        assert!(matches!(walked[1], Err((position, BatchError::InvalidLength { .. })) if position == batch.len()));
        // A header whose body lies beyond the bytes is still yielded; the
        // walk then waits at the next batch's start.
        let mut walk = HeaderWalk::new(&batch[..64], 0);
        assert!(matches!(walk.next(), Some(Ok((0, _)))));
        assert!(walk.next().is_none());
        assert_eq!(walk.position(), batch.len());
    }

    fn sample() -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        builder.set_producer(7, 42);
        builder.push(1000, Some(b"k1"), b"value-one", &[("h", b"x")]);
        builder.push(999, None, b"", &[]);
        builder.push(1005, Some(b""), b"three", &[("a", b""), ("bb", b"yy")]);
        builder.finish().to_vec()
    }

    #[test]
    fn encoded_batch_round_trips_every_field() {
        let mut batch = sample();
        stamp_batch(&mut batch, 500, 3);
        let header = validate_batch(&batch, LIMIT).expect("valid");
        assert_eq!(header.base_offset, 500);
        assert_eq!(header.leader_epoch, 3);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.first_timestamp_ms, 1000);
        assert_eq!(header.max_timestamp_ms, 1005);
        assert_eq!(header.producer_id, 7);
        assert_eq!(header.base_sequence, 42);
        assert_eq!(header.next_offset(), 503);
        let records: Vec<_> = RecordIter::new(&batch[BATCH_HEADER_BYTES..]).map(Result::unwrap).collect();
        assert_eq!(records[0].key, Some(&b"k1"[..]));
        assert_eq!(records[0].value, b"value-one");
        assert_eq!(records[0].headers().collect::<Vec<_>>(), vec![("h", &b"x"[..])]);
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].timestamp_ms, 999);
        assert_eq!(records[2].key, Some(&b""[..]));
        assert_eq!(records[2].headers().count(), 2);
    }

    #[test]
    fn stamping_offsets_keeps_the_crc_valid() {
        let mut batch = sample();
        let crc_before = compute_crc(&batch);
        stamp_batch(&mut batch, u64::MAX - 10, u32::MAX);
        assert_eq!(compute_crc(&batch), crc_before);
        verify_batch(&batch, LIMIT).expect("still valid");
    }

    #[test]
    fn any_flipped_covered_bit_is_detected() {
        let batch = sample();
        for position in CRC_COVERED_START..batch.len() {
            let mut damaged = batch.clone();
            damaged[position] ^= 0x10;
            assert!(verify_batch(&damaged, LIMIT).is_err(), "flip at {position} not detected");
        }
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        let batch = sample();
        for length in 0..batch.len() {
            assert!(verify_batch(&batch[..length], LIMIT).is_err());
        }
    }

    #[test]
    fn oversized_and_undersized_lengths_are_rejected() {
        let mut batch = sample();
        batch[8..12].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert!(matches!(verify_batch(&batch, LIMIT), Err(BatchError::InvalidLength { .. })));
        batch[8..12].copy_from_slice(&10u32.to_le_bytes());
        assert!(matches!(verify_batch(&batch, LIMIT), Err(BatchError::InvalidLength { .. })));
    }

    #[test]
    fn zeroed_bytes_are_not_a_batch() {
        let zeros = vec![0u8; 4096];
        assert!(verify_batch(&zeros, LIMIT).is_err());
    }

    #[test]
    fn header_lying_about_record_count_fails_full_validation() {
        let mut batch = sample();
        batch[24..28].copy_from_slice(&5u32.to_le_bytes());
        let crc = compute_crc(&batch);
        batch[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(verify_batch(&batch, LIMIT).is_ok(), "crc alone passes");
        assert!(matches!(validate_batch(&batch, LIMIT), Err(BatchError::MalformedRecords(_))));
    }

    #[test]
    fn batch_iter_walks_concatenated_batches_and_stops_at_damage() {
        let mut first = sample();
        stamp_batch(&mut first, 0, 1);
        let mut second = sample();
        stamp_batch(&mut second, 3, 1);
        let mut both = first.clone();
        both.extend_from_slice(&second);
        let offsets: Vec<u64> = BatchIter::new(&both, LIMIT).map(|item| item.unwrap().0.base_offset).collect();
        assert_eq!(offsets, vec![0, 3]);
        let last = both.len() - 1;
        both[last] ^= 1;
        let results: Vec<_> = BatchIter::new(&both, LIMIT).collect();
        assert!(results[0].is_ok());
        assert!(results[1].is_err());
    }

    #[test]
    fn builder_reuse_does_not_leak_previous_records() {
        let mut builder = BatchBuilder::new();
        builder.push(1, None, b"a", &[]);
        builder.push(2, None, b"b", &[]);
        builder.finish();
        builder.clear();
        builder.push(3, None, b"c", &[]);
        let batch = builder.finish().to_vec();
        let header = validate_batch(&batch, LIMIT).unwrap();
        assert_eq!(header.record_count, 1);
        assert_eq!(header.first_timestamp_ms, 3);
    }

    #[test]
    fn a_built_batch_is_valid_whichever_way_its_builder_was_made() {
        for mut builder in [BatchBuilder::default(), BatchBuilder::new(), BatchBuilder::with_capacity(1 << 10)] {
            builder.push(-5, Some(b"k"), b"v", &[("h", b"1")]);
            builder.push(-7, None, b"w", &[]);
            let built = builder.into_built();
            let header = validate_batch(built.bytes(), LIMIT).unwrap();
            assert_eq!((header.record_count, header.max_timestamp_ms), (2, -5));
        }
        let mut reused = BatchBuilder::new();
        reused.push(1, None, b"a", &[]);
        reused.finish()[BATCH_HEADER_BYTES] ^= 0xff;
        reused.clear();
        reused.push(2, None, b"b", &[]);
        assert!(validate_batch(reused.into_built().bytes(), LIMIT).is_ok(), "clear forgets what was lent out");
    }

    #[test]
    #[should_panic(expected = "lent out by finish()")]
    fn bytes_lent_out_by_finish_never_become_a_built_batch() {
        let mut builder = BatchBuilder::new();
        builder.push(1, None, b"a", &[]);
        // Whatever the holder of these bytes did to them, into_built would
        // checksum it and the log would take it unchecked.
        builder.finish()[BATCH_HEADER_BYTES] ^= 0xff;
        let _ = builder.into_built();
    }
}
