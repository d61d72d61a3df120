//! Batch-by-batch scan of a segment's bytes: the one piece of logic that
//! recovery, `ringlog check` and the fuzzers share. Pure and panic-free on
//! any input.

use super::batch::{
    read_u32, verify_batch, BatchHeader, HeaderWalk, BATCH_HEADER_BYTES, BATCH_MAGIC, CRC_COVERED_START,
    FORMAT_MAX_BATCH_BYTES, RECORD_OVERHEAD_BYTES,
};
use super::index::SegmentIndexes;

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// The bytes ended exactly after a batch.
    EndOfData,
    /// Zero-filled (preallocated, never written) space begins here.
    ZeroFill,
    /// The bytes at `position` are not the next valid batch.
    Invalid {
        /// Byte position of the bad batch.
        position: u64,
        /// Human-readable reason.
        reason: String,
    },
}

/// Result of scanning one segment.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Length of the valid prefix in bytes.
    pub valid_bytes: u64,
    /// Offset after the last valid batch (the segment base when empty).
    pub next_offset: u64,
    /// Valid batches seen.
    pub batch_count: u64,
    /// Records in the valid batches.
    pub record_count: u64,
    /// Position of the last valid batch.
    pub last_batch_position: Option<u64>,
    /// Leader-epoch transitions seen: (epoch, first offset with it).
    pub epoch_starts: Vec<(u32, u64)>,
    /// Indexes built over the valid prefix.
    pub indexes: SegmentIndexes,
    /// Why the scan stopped.
    pub stop: ScanStop,
}

impl ScanOutcome {
    /// True when everything scanned was valid (no corruption or torn tail).
    pub fn is_clean(&self) -> bool {
        !matches!(self.stop, ScanStop::Invalid { .. })
    }
}

/// Scan `bytes` (a whole segment file) whose first batch must start at
/// `base_offset`. Stops at the first batch that fails its CRC, length,
/// magic or offset-continuity check. Batches are bounded by the format
/// only ([`FORMAT_MAX_BATCH_BYTES`]): the configured `max_batch_bytes` is an
/// admission limit for new appends and never judges data already written.
pub fn scan_segment(bytes: &[u8], base_offset: u64, index_interval_bytes: u32) -> ScanOutcome {
    let mut outcome = ScanOutcome {
        valid_bytes: 0,
        next_offset: base_offset,
        batch_count: 0,
        record_count: 0,
        last_batch_position: None,
        epoch_starts: Vec::new(),
        indexes: SegmentIndexes::new(index_interval_bytes),
        stop: ScanStop::EndOfData,
    };
    let mut position = 0usize;
    while position < bytes.len() {
        let rest = &bytes[position..];
        let header_probe = &rest[..rest.len().min(BATCH_HEADER_BYTES)];
        if header_probe.iter().all(|&byte| byte == 0) {
            outcome.stop = ScanStop::ZeroFill;
            break;
        }
        match check_next_batch(rest, outcome.next_offset, base_offset, position) {
            Ok(header) => {
                record_batch(&mut outcome, &header, base_offset, position);
                position += header.batch_bytes as usize;
            }
            Err(reason) => {
                outcome.stop = ScanStop::Invalid { position: position as u64, reason };
                break;
            }
        }
    }
    outcome.valid_bytes = position as u64;
    outcome
}

fn check_next_batch(
    rest: &[u8],
    expected_offset: u64,
    base_offset: u64,
    position: usize,
) -> Result<BatchHeader, String> {
    let header = verify_batch(rest, FORMAT_MAX_BATCH_BYTES).map_err(|error| error.to_string())?;
    if header.base_offset != expected_offset {
        return Err(format!("offset discontinuity: expected {expected_offset}, found {}", header.base_offset));
    }
    let relative_end = header.next_offset() - base_offset;
    if relative_end > u64::from(u32::MAX) || position as u64 + u64::from(header.batch_bytes) > u64::from(u32::MAX) {
        return Err("segment exceeds the 32-bit relative offset or position range".into());
    }
    Ok(header)
}

fn record_batch(outcome: &mut ScanOutcome, header: &BatchHeader, base_offset: u64, position: usize) {
    let relative_offset = (header.base_offset - base_offset) as u32;
    outcome.indexes.on_batch(relative_offset, position as u32, header.batch_bytes, header.max_timestamp_ms);
    let epoch_changed = outcome.epoch_starts.last().is_none_or(|&(epoch, _)| epoch != header.leader_epoch);
    if epoch_changed {
        outcome.epoch_starts.push((header.leader_epoch, header.base_offset));
    }
    outcome.next_offset = header.next_offset();
    outcome.batch_count += 1;
    outcome.record_count += u64::from(header.record_count);
    outcome.last_batch_position = Some(position as u64);
}

/// What the bytes after a scan's valid prefix are (SPEC §3, torn write or
/// corruption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailJudgement {
    /// Nothing but zeros (preallocated space) after the valid prefix.
    Clean,
    /// A torn write: the damage starts inside the window a crash can tear
    /// and nothing valid follows it. Truncating it loses nothing durable.
    Torn {
        /// End of the non-zero bytes (how far the writer got).
        written_end: u64,
    },
    /// Damage no crash can explain: fence the partition and keep the bytes.
    Corrupt {
        /// Byte position of the first bad batch.
        position: u64,
        /// Why this is corruption rather than a torn write.
        reason: String,
    },
}

/// Judge the bytes after `outcome`'s valid prefix. A crash tears only what
/// was in flight: at most `torn_window_bytes` (every buffer the writer may
/// have had outstanding) plus the batch being written, before the end of
/// the written bytes. Damage further from the written end is corruption.
///
/// Inside the window, in-flight buffers complete in any order, so a crash
/// can leave a lost buffer *followed by* valid batches; but a lost write
/// reverts whole sectors to an older version (zeros, or an older tail
/// that ends in zeros: [`lost_write_between`]). A bad batch with valid
/// batches after it that no lost write explains was fully written: that is
/// corruption too (SPEC §3).
pub fn judge_tail(bytes: &[u8], outcome: &ScanOutcome, torn_window_bytes: u64) -> TailJudgement {
    judge_tail_before(bytes, outcome, torn_window_bytes, bytes.len())
}

/// [`judge_tail`] of a file known to be zeros from `data_end` on (holes,
/// unwritten extents): the search for the last written byte starts there
/// instead of at the end of a possibly gigabyte-long run of zeros.
pub fn judge_tail_before(
    bytes: &[u8],
    outcome: &ScanOutcome,
    torn_window_bytes: u64,
    data_end: usize,
) -> TailJudgement {
    let start = outcome.valid_bytes as usize;
    let searched = &bytes[..data_end.min(bytes.len())];
    let written_end = searched.iter().rposition(|&byte| byte != 0).map_or(0, |last| last + 1);
    if written_end <= start {
        return TailJudgement::Clean;
    }
    let cause = match &outcome.stop {
        ScanStop::Invalid { reason, .. } => reason.clone(),
        _ => "zero-filled gap in written data".to_string(),
    };
    // A batch larger than every buffer streams through them: the batch
    // being written at the crash may be torn over its whole length.
    let own_bytes = HeaderWalk::new(bytes, start).next().and_then(Result::ok).map_or(0, |(_, h)| h.batch_bytes);
    let window = torn_window_bytes.saturating_add(u64::from(own_bytes));
    let block_start = start - start % crate::storage::config::DIRECT_IO_ALIGNMENT;
    let damaged_bytes = (written_end - block_start) as u64;
    let later = find_later_batch(bytes, start, written_end, outcome.next_offset);
    if damaged_bytes > window {
        let evidence = match later {
            Some(position) => format!("a valid batch at position {position} continues the log after it"),
            None => format!("{damaged_bytes} bytes are written from its block on"),
        };
        let reason = format!("{cause}; {evidence}, beyond the {window} bytes a crash can tear: corruption");
        return TailJudgement::Corrupt { position: start as u64, reason };
    }
    match later {
        Some(position) if !lost_write_between(bytes, start, position as usize, outcome.next_offset) => {
            let reason = format!(
                "{cause}; a valid batch at position {position} follows and no lost write explains the bytes \
                 in between (no zeroed sector, no older tail): a fully written batch is damaged, corruption"
            );
            TailJudgement::Corrupt { position: start as u64, reason }
        }
        _ => TailJudgement::Torn { written_end: written_end as u64 },
    }
}

/// Whether a lost write explains the damage between the end of the valid
/// prefix (`from`, a batch end) and a valid batch at `to`. A lost write
/// reverts whole sectors to an older version of them, and every version
/// the writer left of a block is either full (a full buffer may end inside
/// a batch) or the log's bytes up to a batch end, then zero padding. So
/// either some sector in between is all zeros, or the sector holding
/// `from` is an older tail: the log up to `from`, then padding shorter
/// than a sector, and the next sector written (the rewrite of a partly
/// filled block was lost while the next buffer landed).
fn lost_write_between(bytes: &[u8], from: usize, to: usize, expected_offset: u64) -> bool {
    has_zero_sector(bytes, from, to) || ends_an_older_tail(bytes, from, to, expected_offset)
}

/// The unit a lost or torn write reverts: the smallest a device writes.
const SECTOR_BYTES: usize = 512;

/// End of a header's length field: no real header has zeros up to here.
const HEADER_LENGTH_END: usize = 12;
/// End of a header's base offset field.
const HEADER_OFFSET_END: usize = 8;

/// The older-tail case of [`lost_write_between`]: zeros from `from` to the
/// end of its sector. The batch the lost rewrite put at `from` runs on
/// into the landed sector, so its first bytes read as zeros. When they
/// cover its length field, no batch written in full looks like that. When
/// fewer are zero (the low bytes of a base offset, which a real header may
/// have), the batch must verify with the zeroed bytes put back as the log
/// says they were: a damaged batch that merely starts with zeros is still
/// corruption. (A bit flip that zeroes exactly those bytes of a batch that
/// starts them before a sector's end is the same bytes as a lost rewrite;
/// nothing can tell the two apart.)
fn ends_an_older_tail(bytes: &[u8], from: usize, to: usize, expected_offset: u64) -> bool {
    let sector_end = (from / SECTOR_BYTES + 1) * SECTOR_BYTES;
    let zeroed = sector_end - from;
    if from % SECTOR_BYTES == 0 || sector_end > to.min(bytes.len()) {
        return false;
    }
    if !bytes[from..sector_end].iter().all(|&byte| byte == 0) {
        return false;
    }
    zeroed >= HEADER_LENGTH_END || verifies_restored(&bytes[from..], zeroed, expected_offset)
}

/// Whether the batch at the start of `rest` verifies once its first
/// `zeroed` bytes, fewer than [`HEADER_LENGTH_END`], are put back: the
/// expected offset, and a length whose intact bytes are those on disk.
/// With the length field whole there is one candidate; with its low bytes
/// zeroed (9 to 11 zeroed bytes) the candidates are one contiguous range
/// of at most 2^24 lengths, walked with one running CRC, so the cost is
/// bounded whatever the bytes. The next valid batch found does not bound
/// the length: it may lie behind another lost write, or inside a record.
/// Only the header is copied: the CRC covers none of the zeroed bytes.
fn verifies_restored(rest: &[u8], zeroed: usize, expected_offset: u64) -> bool {
    const { assert!(HEADER_LENGTH_END <= CRC_COVERED_START) };
    if zeroed >= HEADER_LENGTH_END || rest.len() < BATCH_HEADER_BYTES {
        return false;
    }
    let mut header = [0u8; BATCH_HEADER_BYTES];
    header.copy_from_slice(&rest[..BATCH_HEADER_BYTES]);
    header[..zeroed.min(HEADER_OFFSET_END)]
        .copy_from_slice(&expected_offset.to_le_bytes()[..zeroed.min(HEADER_OFFSET_END)]);
    let unknown_length_bits = 8 * zeroed.saturating_sub(HEADER_OFFSET_END);
    let known_length = read_u32(&header, HEADER_OFFSET_END) as usize;
    let first = known_length.max(BATCH_HEADER_BYTES);
    let last = (known_length + (1 << unknown_length_bits) - 1).min(rest.len());
    if first > last {
        return false;
    }
    let stored_crc = read_u32(&header, CRC_COVERED_START - 4);
    let mut running = crc32fast::Hasher::new();
    running.update(&rest[CRC_COVERED_START..first]);
    for length in first..=last {
        if running.clone().finalize() == stored_crc && has_restored_shape(header, length, expected_offset) {
            return true;
        }
        if let Some(&byte) = rest.get(length) {
            running.update(&[byte]);
        }
    }
    false
}

/// Whether `header` with its length field set to `length` is a
/// well-shaped header of a batch at `expected_offset`.
fn has_restored_shape(mut header: [u8; BATCH_HEADER_BYTES], length: usize, expected_offset: u64) -> bool {
    let Ok(length) = u32::try_from(length) else { return false };
    header[HEADER_OFFSET_END..HEADER_LENGTH_END].copy_from_slice(&length.to_le_bytes());
    BatchHeader::parse(&header).is_ok_and(|parsed| {
        parsed.check_shape(FORMAT_MAX_BATCH_BYTES).is_ok()
            && parsed.base_offset == expected_offset
            && parsed.batch_bytes == length
    })
}

/// Whether an aligned, all-zero sector lies wholly inside `from..to`.
fn has_zero_sector(bytes: &[u8], from: usize, to: usize) -> bool {
    let first = from.div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
    (first..to.min(bytes.len()))
        .step_by(SECTOR_BYTES)
        .any(|sector| sector + SECTOR_BYTES <= to && bytes[sector..sector + SECTOR_BYTES].iter().all(|&byte| byte == 0))
}

/// Position of the first batch starting in `from + 1 .. before` that passes
/// every check and could continue a log whose next offset is
/// `expected_offset` (it may end past `before`: a batch can end in zero
/// bytes). Pure and bounded: a candidate must have the magic byte, a sane
/// shape, an offset the remaining bytes can hold, and a matching CRC.
pub fn find_later_batch(bytes: &[u8], from: usize, before: usize, expected_offset: u64) -> Option<u64> {
    let last_start = bytes.len().checked_sub(BATCH_HEADER_BYTES)?.min(before);
    (from + 1..=last_start).find(|&position| is_plausible_batch(&bytes[position..], expected_offset)).map(|p| p as u64)
}

fn is_plausible_batch(rest: &[u8], expected_offset: u64) -> bool {
    if rest[20] != BATCH_MAGIC {
        return false;
    }
    let Ok(header) = BatchHeader::parse(rest) else { return false };
    if header.check_shape(FORMAT_MAX_BATCH_BYTES).is_err() || header.batch_bytes as usize > rest.len() {
        return false;
    }
    // Each record takes at least RECORD_OVERHEAD_BYTES: a batch this far on
    // cannot start past the offsets the skipped bytes could have held.
    let most_offsets_skipped = (rest.len() / RECORD_OVERHEAD_BYTES) as u64;
    let offset_fits =
        header.base_offset >= expected_offset && header.base_offset - expected_offset <= most_offsets_skipped;
    offset_fits && verify_batch(rest, FORMAT_MAX_BATCH_BYTES).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{stamp_batch, BatchBuilder};

    fn segment(base_offset: u64, batches: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut offset = base_offset;
        for i in 0..batches {
            let mut builder = BatchBuilder::new();
            for record in 0..=(i % 3) {
                builder.push(1000 + i as i64, None, format!("value-{i}-{record}").as_bytes(), &[]);
            }
            let mut batch = builder.finish().to_vec();
            stamp_batch(&mut batch, offset, 1 + (i / 4) as u32);
            offset += u64::from(builder.record_count());
            bytes.extend_from_slice(&batch);
        }
        bytes
    }

    #[test]
    fn clean_segment_scans_to_the_end() {
        let bytes = segment(100, 10);
        let outcome = scan_segment(&bytes, 100, 64);
        assert_eq!(outcome.stop, ScanStop::EndOfData);
        assert_eq!(outcome.valid_bytes, bytes.len() as u64);
        assert_eq!(outcome.batch_count, 10);
        assert_eq!(outcome.next_offset, 100 + outcome.record_count);
        assert_eq!(outcome.epoch_starts.first(), Some(&(1, 100)));
        assert_eq!(outcome.epoch_starts.len(), 3);
    }

    #[test]
    fn torn_tail_is_truncated_to_last_valid_batch() {
        let bytes = segment(0, 5);
        let full = scan_segment(&bytes, 0, 4096);
        let torn = &bytes[..bytes.len() - 3];
        let outcome = scan_segment(torn, 0, 4096);
        assert!(matches!(outcome.stop, ScanStop::Invalid { .. }));
        assert_eq!(outcome.batch_count, 4);
        assert_eq!(Some(outcome.valid_bytes), full.last_batch_position);
    }

    #[test]
    fn zero_filled_preallocation_ends_the_log() {
        let mut bytes = segment(0, 3);
        let valid = bytes.len() as u64;
        bytes.resize(bytes.len() + 8192, 0);
        let outcome = scan_segment(&bytes, 0, 4096);
        assert_eq!(outcome.stop, ScanStop::ZeroFill);
        assert_eq!(outcome.valid_bytes, valid);
    }

    #[test]
    fn offset_gap_stops_the_scan() {
        let bytes = segment(0, 3);
        let outcome = scan_segment(&bytes, 5, 4096);
        assert_eq!(outcome.batch_count, 0);
        assert!(matches!(outcome.stop, ScanStop::Invalid { ref reason, .. } if reason.contains("discontinuity")));
    }

    #[test]
    fn scan_builds_the_same_indexes_as_appending() {
        let bytes = segment(0, 50);
        let outcome = scan_segment(&bytes, 0, 256);
        assert!(outcome.indexes.offsets.len() > 1);
        assert!(outcome.indexes.offsets.validate(outcome.valid_bytes).is_ok());
        assert!(outcome.indexes.times.validate(outcome.next_offset).is_ok());
    }
}

#[cfg(test)]
mod judgement_tests {
    use super::*;
    use crate::storage::batch::{stamp_batch, BatchBuilder};

    fn segment(batches: usize, value_bytes: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for offset in 0..batches as u64 {
            let mut builder = BatchBuilder::new();
            builder.push(offset as i64, None, &vec![b'v'; value_bytes], &[]);
            let mut batch = builder.finish().to_vec();
            stamp_batch(&mut batch, offset, 1);
            bytes.extend_from_slice(&batch);
        }
        bytes
    }

    #[test]
    fn flipped_byte_with_valid_batches_after_it_is_corruption() {
        let mut bytes = segment(100, 1000);
        bytes[10 * 1000 + 100] ^= 0x40;
        let outcome = scan_segment(&bytes, 0, 4096);
        assert!(!outcome.is_clean());
        let judgement = judge_tail(&bytes, &outcome, 64 * 1024);
        assert!(matches!(judgement, TailJudgement::Corrupt { ref reason, .. } if reason.contains("continues the log")));
        // Inside the window too: no sector was lost, the batch was written.
        let judgement = judge_tail(&bytes, &outcome, 1 << 30);
        assert!(matches!(judgement, TailJudgement::Corrupt { ref reason, .. } if reason.contains("no lost write")));
    }

    #[test]
    fn torn_last_batch_inside_the_window_is_a_torn_write() {
        let mut bytes = segment(20, 1000);
        let cut = bytes.len() - 300;
        bytes.truncate(cut);
        bytes.resize(cut + 8192, 0);
        let outcome = scan_segment(&bytes, 0, 4096);
        assert_eq!(judge_tail(&bytes, &outcome, 64 * 1024), TailJudgement::Torn { written_end: cut as u64 });
    }

    #[test]
    fn garbage_longer_than_the_window_is_corruption() {
        let mut bytes = segment(5, 1000);
        bytes.extend(std::iter::repeat_n(0xAB, 100_000));
        let outcome = scan_segment(&bytes, 0, 4096);
        assert!(matches!(judge_tail(&bytes, &outcome, 64 * 1024), TailJudgement::Corrupt { .. }));
        assert!(matches!(judge_tail(&bytes, &outcome, 1 << 20), TailJudgement::Torn { .. }));
    }

    /// A 30-batch segment with the 4 KiB block at `hole(length)` zeroed
    /// (a lost write), judged with a torn window of `window_bytes`.
    fn judge_with_lost_block(hole: impl Fn(usize) -> usize, window_bytes: u64) -> TailJudgement {
        let mut bytes = segment(30, 1000);
        let hole = hole(bytes.len());
        bytes[hole..hole + 4096].fill(0);
        let outcome = scan_segment(&bytes, 0, 4096);
        judge_tail(&bytes, &outcome, window_bytes)
    }

    #[test]
    fn zero_hole_followed_by_valid_batches_is_corruption_beyond_the_window() {
        let judgement = judge_with_lost_block(|length| length / 3 - (length / 3) % 4096, 8192);
        assert!(matches!(judgement, TailJudgement::Corrupt { .. }));
    }

    #[test]
    fn an_earlier_buffer_lost_behind_a_later_one_inside_the_window_is_a_torn_write() {
        // Two buffers in flight complete out of order; the crash keeps the
        // later one only.
        let judgement = judge_with_lost_block(|length| length - 8192 - length % 4096, 16384);
        assert!(matches!(judgement, TailJudgement::Torn { .. }));
    }

    /// A segment whose second batch starts `padding_bytes` before the end
    /// of the first 4 KiB block, followed by more batches, as the log wrote
    /// it; with the rewrite of that block lost (`lose_rewrite`), the bytes
    /// from the second batch to the block's end are the older version's
    /// zero padding while the next buffer, from 4096 on, landed.
    fn block_with_older_tail(padding_bytes: usize, lose_rewrite: bool) -> Vec<u8> {
        let batch = |offset: u64, value_bytes: usize| {
            let mut builder = BatchBuilder::new();
            builder.push(offset as i64, None, &vec![b'v'; value_bytes], &[]);
            let mut batch = builder.finish().to_vec();
            stamp_batch(&mut batch, offset, 1);
            batch
        };
        let overhead = batch(0, 0).len();
        let mut bytes = batch(0, 4096 - padding_bytes - overhead);
        for offset in 1..8 {
            bytes.extend_from_slice(&batch(offset, 1000));
        }
        if lose_rewrite {
            bytes[4096 - padding_bytes..4096].fill(0);
        }
        bytes
    }

    #[test]
    fn a_lost_rewrite_of_a_partly_filled_block_behind_a_landed_next_buffer_is_a_torn_write() {
        // Less padding than a sector, so no whole zero sector lies before
        // the next valid batch: zeros over part of the base offset only,
        // over part of the length, and over the whole length field.
        for padding_bytes in [1, 3, 8, 10, 12, 100, 511] {
            let bytes = block_with_older_tail(padding_bytes, true);
            let outcome = scan_segment(&bytes, 0, 4096);
            assert_eq!(outcome.valid_bytes as usize, 4096 - padding_bytes);
            let judgement = judge_tail(&bytes, &outcome, 1 << 30);
            assert!(matches!(judgement, TailJudgement::Torn { .. }), "padding {padding_bytes}: {judgement:?}");
            // The same bytes beyond the window a crash can tear stay corruption.
            assert!(matches!(judge_tail(&bytes, &outcome, 1024), TailJudgement::Corrupt { .. }));
        }
    }

    #[test]
    fn a_damaged_batch_that_starts_with_zero_bytes_is_not_an_older_tail() {
        for padding_bytes in [3, 8, 10] {
            let pristine = block_with_older_tail(padding_bytes, true);
            let from = 4096 - padding_bytes;
            let later = find_later_batch(&pristine, from, pristine.len(), 1).expect("the third batch") as usize;
            assert!(lost_write_between(&pristine, from, later, 1));
            // A flipped record byte, or a flipped magic: written in full
            // and damaged, whatever zeros it starts with.
            for damaged_at in [from + 100, from + 20] {
                let mut bytes = pristine.clone();
                bytes[damaged_at] ^= 0x40;
                assert!(!lost_write_between(&bytes, from, later, 1), "padding {padding_bytes}, byte {damaged_at}");
            }
        }
    }

    /// Length of the batches after the first in [`block_with_older_tail`].
    fn thousand_byte_batch_length() -> usize {
        let mut builder = BatchBuilder::new();
        builder.push(1, None, &[b'v'; 1000], &[]);
        builder.finish().len()
    }

    #[test]
    fn an_older_tail_is_recognised_behind_a_second_lost_write_and_at_any_sector_end() {
        // The batch after the older tail lost its header too (a second
        // rewrite lost): the next valid batch is one further on, and the
        // damaged batch's own intact length is what is verified.
        let mut bytes = block_with_older_tail(5, true);
        let second_end = 4096 - 5 + crate::storage::batch::read_u32(&bytes, 4096 - 5 + 8) as usize;
        bytes[second_end..second_end + BATCH_HEADER_BYTES].fill(0);
        let later = find_later_batch(&bytes, 4096 - 5, bytes.len(), 1).expect("the fourth batch") as usize;
        assert!(later > second_end);
        assert!(lost_write_between(&bytes, 4096 - 5, later, 1));
        // The same with the damaged batch's length field partly zeroed too
        // (10 bytes): its length is found among those its intact bytes allow.
        for padding_bytes in [9, 10, 11] {
            let mut bytes = block_with_older_tail(padding_bytes, true);
            let from = 4096 - padding_bytes;
            let next = from + thousand_byte_batch_length();
            let next_sector_end = next.next_multiple_of(512);
            bytes[next..next_sector_end].fill(0);
            let later = find_later_batch(&bytes, from, bytes.len(), 1).expect("a later batch") as usize;
            assert!(later > next_sector_end && !has_zero_sector(&bytes, from, later));
            assert!(lost_write_between(&bytes, from, later, 1), "padding {padding_bytes}");
            let mut damaged = bytes.clone();
            damaged[from + 300] ^= 1;
            assert!(!lost_write_between(&damaged, from, later, 1), "padding {padding_bytes}, damaged");
        }
        // Sectors of one write need not land in order: the sector holding
        // the older tail may end inside its block.
        let mut bytes = block_with_older_tail(600, false);
        bytes[4096 - 600..4096 - 512].fill(0);
        let later = find_later_batch(&bytes, 4096 - 600, bytes.len(), 1).expect("the third batch") as usize;
        assert!(lost_write_between(&bytes, 4096 - 600, later, 1));
    }

    #[test]
    fn trailing_zeros_are_clean() {
        let mut bytes = segment(5, 100);
        bytes.resize(bytes.len() + 10_000, 0);
        let outcome = scan_segment(&bytes, 0, 4096);
        assert_eq!(judge_tail(&bytes, &outcome, 0), TailJudgement::Clean);
    }
}
