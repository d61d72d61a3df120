//! A replica answer's body, both ends: the leader sends its batches as one
//! lz4 block, or stored raw when lz4 does not pay (the follower recognises
//! raw by the body being exactly the uncompressed length), and keeps the
//! body so the next follower asking for the same range costs no read, copy
//! or compression (`shard/sent_answer.rs`); the follower
//! decodes it, bounded by its limits whatever the answer claims, into a
//! whole number of batches. Each batch's CRC is checked when appended.

use std::sync::atomic::Ordering;

use thiserror::Error;

use crate::runtime::clock::monotonic_ms;
use crate::shard::context::ShardContext;
use crate::shard::partitions::OwnedPartition;
use crate::shard::sent_answer::SentAnswer;
use crate::state::progress::FollowerProgress;
use crate::storage::batch::BatchError;
use crate::storage::ReadBatches;

/// Why a leader's answer body cannot be applied (the follower drops the
/// connection and reads again).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnswerError {
    /// The answer claims more bytes than a frame may carry.
    #[error("{uncompressed_bytes} uncompressed bytes, over the limit of {limit}")]
    OverLimit {
        /// What the answer claims.
        uncompressed_bytes: u32,
        /// The follower's bound.
        limit: usize,
    },
    /// The body is not a valid lz4 block.
    #[error("bad lz4 block: {reason}")]
    BadBlock {
        /// lz4's reason.
        reason: String,
    },
    /// The block decompressed to another length than the answer claims.
    #[error("lz4 block holds {written} bytes, the answer said {length}")]
    LengthMismatch {
        /// Bytes the block held.
        written: usize,
        /// Bytes the answer claimed.
        length: usize,
    },
    /// A batch header in the answer is malformed.
    #[error("batch at {position}: {source}")]
    BadBatch {
        /// Byte position of the batch in the answer.
        position: usize,
        /// What is wrong with it.
        source: BatchError,
    },
    /// A batch is longer than the rest of the answer or than a batch may be.
    #[error("batch of {batch_bytes} bytes at {position} does not fit the answer")]
    BatchDoesNotFit {
        /// The batch's length field.
        batch_bytes: usize,
        /// Byte position of the batch in the answer.
        position: usize,
    },
    /// The answer ends inside a batch header.
    #[error("the answer ends inside a batch header at {position}")]
    EndsInsideHeader {
        /// Byte position of the cut header.
        position: usize,
    },
}

thread_local! {
    /// Compression scratch space, reused so each answer does not allocate
    /// and zero a worst-case-sized output buffer.
    static COMPRESS_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// lz4-compress `input` into an exactly sized vector.
fn compress(input: &[u8]) -> Vec<u8> {
    COMPRESS_SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let needed = lz4_flex::block::get_maximum_output_size(input.len());
        if scratch.len() < needed {
            scratch.resize(needed, 0);
        }
        match lz4_flex::block::compress_into(input, &mut scratch[..needed]) {
            Ok(length) => scratch[..length].to_vec(),
            // Cannot happen with a worst-case-sized buffer; fall back to the allocating form.
            Err(_) => lz4_flex::block::compress(input),
        }
    })
}

/// After an answer lz4 could not shrink below 7/8 of its size, this many
/// answers to the same follower go stored raw before lz4 is tried again:
/// on data that does not compress (already compressed or encrypted
/// payloads) lz4 only costs CPU on both ends.
const RAW_ANSWERS_AFTER_MISS: u64 = 32;

/// The answer's body: an lz4 block, or the batches themselves ("stored
/// raw", which the follower recognises by the body being exactly
/// `uncompressed_bytes` long: an lz4 block that long is never sent).
pub fn encode_answer(batches: Vec<u8>, progress: &FollowerProgress) -> Vec<u8> {
    let skip = progress
        .raw_answers_left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
        .is_ok();
    if skip || batches.is_empty() {
        return batches;
    }
    let compressed = compress(&batches);
    if compressed.len() * 8 >= batches.len() * 7 {
        progress.raw_answers_left.store(RAW_ANSWERS_AFTER_MISS, Ordering::Relaxed);
        return batches;
    }
    compressed
}

/// Where a follower's read started: its offset, and the log's generation
/// taken before the read (a cut during the read moves it).
#[derive(Debug, Clone, Copy)]
pub struct ReadFrom {
    /// The offset asked for.
    pub offset: u64,
    /// [`crate::storage::PartitionLog::generation`] before the read.
    pub generation: u64,
}

/// For `follower`'s read from `offset`: the body another follower was
/// just sent for it, with no read, copy or lz4 pass, if its batches fit
/// `max_bytes` and are still the log's (see `shard/sent_answer.rs`).
pub fn shared_answer(owned: &OwnedPartition, follower: u64, offset: u64, max_bytes: usize) -> Option<SentAnswer> {
    let still_held = |answer: &SentAnswer| owned.log.still_holds(answer.offset, answer.next_offset, answer.generation);
    owned.replication.shared_answer((follower, monotonic_ms()), offset, max_bytes, still_held)
}

/// The answer body for `batches`, read for `follower` as `read` says: lz4
/// when it pays, else the batches themselves. Kept for the other followers
/// (`cluster.replica_answer_cache_bytes` per shard) when the log did not
/// change during the read.
pub fn answer_body(
    context: &ShardContext,
    owned: &OwnedPartition,
    progress: &FollowerProgress,
    follower: u64,
    read: ReadFrom,
    batches: ReadBatches,
) -> SentAnswer {
    let uncompressed_bytes = batches.bytes.len();
    let body = encode_answer(batches.bytes, progress);
    let held_bytes = body.capacity();
    let (offset, generation, next_offset) = (read.offset, read.generation, batches.next_offset);
    let answer = SentAnswer { offset, next_offset, generation, uncompressed_bytes, body: body.into(), held_bytes };
    if owned.log.still_holds(offset, next_offset, generation) {
        let budget_bytes = context.config.cluster.replica_answer_cache_bytes;
        owned.replication.keep_answer((follower, monotonic_ms()), answer.clone(), budget_bytes);
    }
    answer
}

/// Where a decoded answer's batches are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The body was stored raw: it is the batches.
    Raw,
    /// The body was an lz4 block, decompressed into the buffer (this long).
    Decompressed(usize),
}

/// Decode a leader's answer body: stored raw when exactly
/// `uncompressed_bytes` long, else an lz4 block decompressed into `buffer`
/// (reused across reads; at most `limit` bytes, however large the answer
/// claims to be). Either way it must be a whole number of batches. Each
/// batch's CRC is checked when it is appended.
pub fn decode_fetched(
    uncompressed_bytes: u32,
    body: &[u8],
    limit: usize,
    max_batch_bytes: usize,
    buffer: &mut Vec<u8>,
) -> Result<Fetched, AnswerError> {
    let length = uncompressed_bytes as usize;
    if length > limit {
        return Err(AnswerError::OverLimit { uncompressed_bytes, limit });
    }
    let fetched = if body.len() == length {
        Fetched::Raw
    } else {
        if buffer.len() < length {
            buffer.resize(length, 0);
        }
        let written = lz4_flex::block::decompress_into(body, &mut buffer[..length])
            .map_err(|error| AnswerError::BadBlock { reason: error.to_string() })?;
        if written != length {
            return Err(AnswerError::LengthMismatch { written, length });
        }
        Fetched::Decompressed(length)
    };
    let batches = match fetched {
        Fetched::Raw => body,
        Fetched::Decompressed(_) => &buffer[..length],
    };
    // The one header walk: its shape check rejects a length shorter than a
    // batch header (a zero length never advanced: found by the fuzzer as a
    // hang).
    let mut walk = crate::storage::batch::HeaderWalk::new(&batches[..length], 0);
    for step in walk.by_ref() {
        let (position, header) = step.map_err(|(position, source)| AnswerError::BadBatch { position, source })?;
        let batch_bytes = header.batch_bytes as usize;
        if batch_bytes > max_batch_bytes || batch_bytes > length - position {
            return Err(AnswerError::BatchDoesNotFit { batch_bytes, position });
        }
    }
    if walk.position() != length {
        return Err(AnswerError::EndsInsideHeader { position: walk.position() });
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::progress::ReplicationProgress;
    use crate::storage::batch::{BatchBuilder, BATCH_HEADER_BYTES};

    fn batches(value: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for index in 0..64 {
            builder.push(0, None, &value(index), &[]);
        }
        builder.finish().to_vec()
    }

    fn noise(seed: usize) -> Vec<u8> {
        let mut x = seed as u64 * 2_654_435_761 + 1;
        (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn decoded(body: &[u8], length: usize) -> (Fetched, Vec<u8>) {
        let mut buffer = Vec::new();
        let fetched = decode_fetched(length as u32, body, 1 << 24, 1 << 24, &mut buffer).unwrap();
        let bytes = match fetched {
            Fetched::Raw => body.to_vec(),
            Fetched::Decompressed(length) => buffer[..length].to_vec(),
        };
        (fetched, bytes)
    }

    #[test]
    fn incompressible_answers_go_raw_for_a_while_then_lz4_is_tried_again() {
        let progress = ReplicationProgress::new(1).follower(2);
        let compressible = batches(|_| vec![b'r'; 1024]);
        let body = encode_answer(compressible.clone(), &progress);
        assert!(body.len() < compressible.len() / 10);
        assert_eq!(
            decoded(&body, compressible.len()),
            (Fetched::Decompressed(compressible.len()), compressible.clone())
        );

        let random = batches(noise);
        let body = encode_answer(random.clone(), &progress);
        assert_eq!(decoded(&body, random.len()), (Fetched::Raw, random.clone()), "random data is stored raw");
        for _ in 0..RAW_ANSWERS_AFTER_MISS {
            let body = encode_answer(compressible.clone(), &progress);
            assert_eq!(decoded(&body, compressible.len()), (Fetched::Raw, compressible.clone()), "lz4 not tried");
        }
        let body = encode_answer(compressible.clone(), &progress);
        assert_eq!(decoded(&body, compressible.len()).0, Fetched::Decompressed(compressible.len()), "tried again");
    }

    #[test]
    fn compression_with_the_reused_scratch_round_trips_any_size() {
        for input in
            [vec![b'r'; 1 << 20], (0..70_000u32).flat_map(|i| i.to_le_bytes()).collect(), vec![7u8; 10], vec![]]
        {
            let compressed = compress(&input);
            assert_eq!(lz4_flex::block::decompress(&compressed, input.len()).unwrap(), input);
        }
    }

    #[test]
    fn an_answer_with_a_zero_length_batch_is_refused_instead_of_looping() {
        // Found by the replication_decode fuzz target: a header claiming 0
        // bytes never advanced the walk over the answer's batches.
        let body = vec![0u8; BATCH_HEADER_BYTES * 2];
        let outcome = decode_fetched(body.len() as u32, &body, 1 << 20, 1 << 20, &mut Vec::new());
        assert!(outcome.is_err(), "{outcome:?}");
    }

    #[test]
    fn a_raw_answer_of_whole_batches_decodes() {
        let mut builder = BatchBuilder::new();
        builder.push(1, None, b"value", &[]);
        let mut body = builder.finish().to_vec();
        body.extend_from_slice(&body.clone());
        let outcome = decode_fetched(body.len() as u32, &body, 1 << 20, 1 << 20, &mut Vec::new());
        assert!(matches!(outcome, Ok(Fetched::Raw)), "{outcome:?}");
        let cut = &body[..body.len() - 1];
        assert!(decode_fetched(cut.len() as u32, cut, 1 << 20, 1 << 20, &mut Vec::new()).is_err());
    }
}
