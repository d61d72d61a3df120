//! Idempotent-producer state of one partition (spec §2).
//!
//! Every batch carries `producer_id` and `base_sequence` in its header, so
//! the state is a function of the log: it is rebuilt by walking batch
//! headers, from the last snapshot (written at seal and clean close) to the
//! log end. A retried batch (same producer, same sequence range as one of
//! the producer's recent batches) is answered with its original offsets
//! instead of being written again, also by a new leader after failover.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

use super::batch::{read_u32, read_u64, BatchHeader};
use super::io::{read_optional, write_file_atomically};

/// Recent batches remembered per producer (a client retries at most this many in flight).
pub const RECENT_BATCHES_PER_PRODUCER: usize = 5;
/// File name of the snapshot inside a partition directory.
pub const PRODUCER_SNAPSHOT_FILE: &str = "producer-state";
const MAGIC: &[u8; 4] = b"RLPS";

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducedBatch {
    /// Sequence of the first record.
    pub first_sequence: u32,
    /// Records in the batch.
    pub record_count: u32,
    /// Offset the log gave the first record.
    pub base_offset: u64,
}

impl ProducedBatch {
    fn last_sequence(&self) -> u32 {
        self.first_sequence.wrapping_add(self.record_count - 1)
    }
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data in order: append it.
    Append,
    /// A retry of a batch already in the log: answer with these offsets.
    Duplicate(ProducedBatch),
    /// A gap or a reordering: refuse (`out_of_order_sequence`).
    OutOfOrder {
        /// Sequence the partition expects next from this producer.
        expected: u32,
    },
}

/// Producer id → its recent batches, bounded in producers and batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<u64, VecDeque<ProducedBatch>>,
    /// Offset up to which the state reflects the log.
    pub applied_offset: u64,
    max_producers: usize,
}

impl ProducerStates {
    /// Empty state remembering at most `max_producers` producers.
    pub fn new(max_producers: usize) -> ProducerStates {
        ProducerStates { producers: HashMap::new(), applied_offset: 0, max_producers: max_producers.max(1) }
    }

    /// Number of producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Classify a batch before it is appended.
    pub fn check(&self, producer_id: u64, first_sequence: u32, record_count: u32) -> SequenceCheck {
        if producer_id == 0 {
            return SequenceCheck::Append;
        }
        let Some(recent) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state was evicted): accept any start.
            return SequenceCheck::Append;
        };
        if let Some(batch) =
            recent.iter().find(|batch| batch.first_sequence == first_sequence && batch.record_count == record_count)
        {
            return SequenceCheck::Duplicate(*batch);
        }
        let expected = recent.back().map_or(0, |batch| batch.last_sequence().wrapping_add(1));
        if first_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder { expected }
        }
    }

    /// Record a batch that is now in the log (appended, replicated or scanned).
    pub fn apply(&mut self, header: &BatchHeader) {
        self.applied_offset = self.applied_offset.max(header.next_offset());
        if header.producer_id == 0 {
            return;
        }
        if !self.producers.contains_key(&header.producer_id) && self.producers.len() >= self.max_producers {
            self.evict_oldest();
        }
        let recent = self.producers.entry(header.producer_id).or_default();
        recent.push_back(ProducedBatch {
            first_sequence: header.base_sequence,
            record_count: header.record_count,
            base_offset: header.base_offset,
        });
        while recent.len() > RECENT_BATCHES_PER_PRODUCER {
            recent.pop_front();
        }
    }

    /// Forget the producer whose latest batch is oldest (bounded memory).
    fn evict_oldest(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, recent)| recent.back().map_or(0, |batch| batch.base_offset))
            .map(|(&producer_id, _)| producer_id);
        if let Some(producer_id) = oldest {
            self.producers.remove(&producer_id);
        }
    }

    /// Encode as a checksummed snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&self.applied_offset.to_le_bytes());
        bytes.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        let mut ids: Vec<&u64> = self.producers.keys().collect();
        ids.sort_unstable();
        for producer_id in ids {
            let recent = &self.producers[producer_id];
            bytes.extend_from_slice(&producer_id.to_le_bytes());
            bytes.push(recent.len() as u8);
            for batch in recent {
                bytes.extend_from_slice(&batch.first_sequence.to_le_bytes());
                bytes.extend_from_slice(&batch.record_count.to_le_bytes());
                bytes.extend_from_slice(&batch.base_offset.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decode a snapshot; None when damaged.
    pub fn decode(bytes: &[u8], max_producers: usize) -> Option<ProducerStates> {
        if bytes.len() < 20 || &bytes[..4] != MAGIC {
            return None;
        }
        let body = &bytes[..bytes.len() - 4];
        if crc32fast::hash(body) != read_u32(bytes, bytes.len() - 4) {
            return None;
        }
        let mut states = ProducerStates::new(max_producers);
        states.applied_offset = read_u64(body, 4);
        let count = read_u32(body, 12) as usize;
        let mut position = 16;
        for _ in 0..count {
            let producer_id = read_u64(body.get(position..position + 8)?, 0);
            let batches = *body.get(position + 8)? as usize;
            position += 9;
            let mut recent = VecDeque::with_capacity(batches);
            for _ in 0..batches {
                let entry = body.get(position..position + 16)?;
                let record_count = read_u32(entry, 4);
                if record_count == 0 {
                    return None;
                }
                recent.push_back(ProducedBatch {
                    first_sequence: read_u32(entry, 0),
                    record_count,
                    base_offset: read_u64(entry, 8),
                });
                position += 16;
            }
            states.producers.insert(producer_id, recent);
        }
        (position == body.len()).then_some(states)
    }

    /// Path of the snapshot in `partition_dir`.
    pub fn path(partition_dir: &Path) -> PathBuf {
        partition_dir.join(PRODUCER_SNAPSHOT_FILE)
    }

    /// Load the snapshot; None when absent, damaged, or ahead of `log_end_offset`.
    pub fn load(partition_dir: &Path, log_end_offset: u64, max_producers: usize) -> io::Result<Option<ProducerStates>> {
        let bytes = read_optional(&Self::path(partition_dir))?;
        Ok(bytes
            .and_then(|bytes| Self::decode(&bytes, max_producers))
            .filter(|states| states.applied_offset <= log_end_offset))
    }

    /// Durably write the snapshot.
    pub fn store(&self, partition_dir: &Path) -> io::Result<()> {
        write_file_atomically(&Self::path(partition_dir), &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: u64, base_sequence: u32, record_count: u32, base_offset: u64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_bytes: 100,
            leader_epoch: 1,
            crc: 0,
            magic: 1,
            flags: 0,
            record_count,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            producer_id,
            base_sequence,
        }
    }

    #[test]
    fn retried_batch_is_recognised_with_its_original_offsets() {
        let mut states = ProducerStates::new(100);
        assert_eq!(states.check(7, 0, 3), SequenceCheck::Append);
        states.apply(&header(7, 0, 3, 100));
        states.apply(&header(7, 3, 2, 103));
        assert_eq!(
            states.check(7, 0, 3),
            SequenceCheck::Duplicate(ProducedBatch { first_sequence: 0, record_count: 3, base_offset: 100 })
        );
        assert_eq!(states.check(7, 5, 1), SequenceCheck::Append);
        assert_eq!(states.check(7, 9, 1), SequenceCheck::OutOfOrder { expected: 5 });
        assert_eq!(states.check(0, 9, 1), SequenceCheck::Append, "non-idempotent batches are not checked");
    }

    #[test]
    fn only_recent_batches_are_remembered_and_producers_are_bounded() {
        let mut states = ProducerStates::new(2);
        for i in 0..10u32 {
            states.apply(&header(1, i, 1, u64::from(i)));
        }
        assert!(matches!(states.check(1, 9, 1), SequenceCheck::Duplicate(_)));
        assert!(matches!(states.check(1, 2, 1), SequenceCheck::OutOfOrder { .. }), "too old to be a retry");
        states.apply(&header(2, 0, 1, 20));
        states.apply(&header(3, 0, 1, 21));
        assert_eq!(states.len(), 2, "oldest producer evicted");
        assert_eq!(states.check(1, 10, 1), SequenceCheck::Append, "evicted producer starts fresh");
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let mut states = ProducerStates::new(100);
        states.apply(&header(5, 0, 2, 0));
        states.apply(&header(9, 10, 4, 2));
        let mut bytes = states.encode();
        assert_eq!(ProducerStates::decode(&bytes, 100), Some(states.clone()));
        bytes[20] ^= 1;
        assert_eq!(ProducerStates::decode(&bytes, 100), None);
    }
}
