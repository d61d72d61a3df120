//! Batch-by-batch scan of a segment's bytes: the one piece of logic that
//! recovery, `ringlog check` and the fuzzers share. Pure and panic-free on
//! any input.

use super::batch::{verify_batch, BatchHeader, BATCH_HEADER_BYTES};
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
/// magic or offset-continuity check.
pub fn scan_segment(bytes: &[u8], base_offset: u64, index_interval_bytes: u32, max_batch_bytes: usize) -> ScanOutcome {
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
        match check_next_batch(rest, outcome.next_offset, base_offset, position, max_batch_bytes) {
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
    max_batch_bytes: usize,
) -> Result<BatchHeader, String> {
    let header = verify_batch(rest, max_batch_bytes).map_err(|error| error.to_string())?;
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
        let outcome = scan_segment(&bytes, 100, 64, 1 << 20);
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
        let full = scan_segment(&bytes, 0, 4096, 1 << 20);
        let torn = &bytes[..bytes.len() - 3];
        let outcome = scan_segment(torn, 0, 4096, 1 << 20);
        assert!(matches!(outcome.stop, ScanStop::Invalid { .. }));
        assert_eq!(outcome.batch_count, 4);
        assert_eq!(Some(outcome.valid_bytes), full.last_batch_position);
    }

    #[test]
    fn zero_filled_preallocation_ends_the_log() {
        let mut bytes = segment(0, 3);
        let valid = bytes.len() as u64;
        bytes.resize(bytes.len() + 8192, 0);
        let outcome = scan_segment(&bytes, 0, 4096, 1 << 20);
        assert_eq!(outcome.stop, ScanStop::ZeroFill);
        assert_eq!(outcome.valid_bytes, valid);
    }

    #[test]
    fn offset_gap_stops_the_scan() {
        let bytes = segment(0, 3);
        let outcome = scan_segment(&bytes, 5, 4096, 1 << 20);
        assert_eq!(outcome.batch_count, 0);
        assert!(matches!(outcome.stop, ScanStop::Invalid { ref reason, .. } if reason.contains("discontinuity")));
    }

    #[test]
    fn scan_builds_the_same_indexes_as_appending() {
        let bytes = segment(0, 50);
        let outcome = scan_segment(&bytes, 0, 256, 1 << 20);
        assert!(outcome.indexes.offsets.len() > 1);
        assert!(outcome.indexes.offsets.validate(outcome.valid_bytes).is_ok());
        assert!(outcome.indexes.times.validate(outcome.next_offset).is_ok());
    }
}
