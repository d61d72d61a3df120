//! Idempotent-producer state of one partition (spec §2).
//!
//! Every batch carries `producer_id` and `base_sequence` in its header, so
//! the state is a function of the log: it is rebuilt by walking batch
//! headers, from the last snapshot (written at seal and clean close) to the
//! log end. A retried batch (same producer, same sequence range as one of
//! the producer's recent batches) is answered with its original offsets
//! instead of being written again, also by a new leader after failover.
//!
//! Two kinds of producer share the table. A native producer's sequences are
//! u32 and wrap at 2^32. A Kafka producer ([`KafkaProducer`], its id and
//! epoch packed into the producer id with the top bit set) counts as Kafka
//! does: sequences are non-negative i32 and wrap from `i32::MAX` to 0, and
//! a batch from an epoch older than the newest the partition has seen from
//! that producer is fenced — the log, not the request, says which epoch is
//! current, so a new leader and a restarted node fence alike.

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

/// Producer ids with this bit set are Kafka producers ([`KafkaProducer`]);
/// the node assigns native producers ids below it.
pub const KAFKA_PRODUCER_BIT: u64 = 1 << 63;
const KAFKA_ID_BITS: u32 = 47;
const KAFKA_EPOCH_BITS: u32 = 15;
/// Kafka's sequences wrap from `i32::MAX` to 0.
const KAFKA_SEQUENCE_MODULUS: u64 = 1 << 31;
const NATIVE_SEQUENCE_MODULUS: u64 = 1 << 32;

/// A Kafka idempotent producer as the log knows it: the producer id the
/// node handed out (47 bits) and its epoch (Kafka's non-negative i16).
/// Packed into one ringlog producer id, so every batch header says which
/// producer and which epoch wrote it, with no field added to the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaProducer {
    /// Below 2^47 (`KafkaProducer::MAX_ID`).
    pub id: u64,
    /// Below 2^15.
    pub epoch: u16,
}

impl KafkaProducer {
    /// Largest Kafka producer id the packing holds.
    pub const MAX_ID: u64 = (1 << KAFKA_ID_BITS) - 1;
    /// Largest epoch the packing holds (Kafka's `i16::MAX`).
    pub const MAX_EPOCH: u16 = (1 << KAFKA_EPOCH_BITS) - 1;

    /// The producer for Kafka's (id, epoch) fields; None outside the ranges
    /// this node hands out.
    pub fn new(id: i64, epoch: i16) -> Option<KafkaProducer> {
        let id = u64::try_from(id).ok().filter(|id| *id <= Self::MAX_ID)?;
        let epoch = u16::try_from(epoch).ok()?;
        Some(KafkaProducer { id, epoch })
    }

    /// The ringlog producer id stored in batch headers (never 0).
    pub fn producer_id(self) -> u64 {
        KAFKA_PRODUCER_BIT | u64::from(self.epoch) << KAFKA_ID_BITS | self.id
    }

    /// The Kafka producer a ringlog producer id stands for, if it is one.
    pub fn from_producer_id(producer_id: u64) -> Option<KafkaProducer> {
        if producer_id & KAFKA_PRODUCER_BIT == 0 {
            return None;
        }
        let epoch = (producer_id >> KAFKA_ID_BITS) as u16 & Self::MAX_EPOCH;
        Some(KafkaProducer { id: producer_id & Self::MAX_ID, epoch })
    }
}

/// `sequence + count` in the producer's sequence space.
fn advance_sequence(producer_id: u64, sequence: u32, count: u32) -> u32 {
    let modulus = if producer_id & KAFKA_PRODUCER_BIT == 0 { NATIVE_SEQUENCE_MODULUS } else { KAFKA_SEQUENCE_MODULUS };
    ((u64::from(sequence) + u64::from(count)) % modulus) as u32
}

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
    /// The sequence the producer's next batch starts at.
    fn next_sequence(&self, producer_id: u64) -> u32 {
        advance_sequence(producer_id, self.first_sequence, self.record_count)
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
    /// A Kafka producer's batch from an epoch older than the one the log
    /// has seen (`invalid_producer_epoch`): a zombie's in-flight request.
    Fenced {
        /// The producer and the epoch it sent.
        producer: KafkaProducer,
        /// The producer's newest epoch in this partition.
        current_epoch: u16,
    },
}

/// Producer id → its recent batches, bounded in producers and batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<u64, VecDeque<ProducedBatch>>,
    /// Kafka producer id → the epoch of its entry in `producers` (one per
    /// Kafka producer: a new epoch replaces the old one's entry).
    kafka_epochs: HashMap<u64, u16>,
    /// Offset up to which the state reflects the log.
    pub applied_offset: u64,
    max_producers: usize,
}

impl ProducerStates {
    /// Empty state remembering at most `max_producers` producers.
    pub fn new(max_producers: usize) -> ProducerStates {
        ProducerStates {
            producers: HashMap::new(),
            kafka_epochs: HashMap::new(),
            applied_offset: 0,
            max_producers: max_producers.max(1),
        }
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
        if let Some(check) = self.check_kafka_epoch(producer_id, first_sequence) {
            return check;
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
        let expected = recent.back().map_or(0, |batch| batch.next_sequence(producer_id));
        if first_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder { expected }
        }
    }

    /// A Kafka producer's epoch against the newest the log has seen from
    /// it: older is fenced; newer must start its sequences at 0, as Kafka
    /// requires (anything else means batches of the new epoch were lost).
    /// None when the epoch is the current one, or the producer is unknown.
    fn check_kafka_epoch(&self, producer_id: u64, first_sequence: u32) -> Option<SequenceCheck> {
        let producer = KafkaProducer::from_producer_id(producer_id)?;
        let current_epoch = *self.kafka_epochs.get(&producer.id)?;
        if producer.epoch < current_epoch {
            Some(SequenceCheck::Fenced { producer, current_epoch })
        } else if producer.epoch > current_epoch && first_sequence != 0 {
            Some(SequenceCheck::OutOfOrder { expected: 0 })
        } else {
            None
        }
    }

    /// Record a batch that is now in the log (appended, replicated or scanned).
    pub fn apply(&mut self, header: &BatchHeader) {
        self.applied_offset = self.applied_offset.max(header.next_offset());
        if header.producer_id == 0 || !self.take_kafka_epoch(header.producer_id) {
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

    /// Keep one entry per Kafka producer, of its newest epoch: a batch at a
    /// newer epoch retires the older epoch's entry (whose batches are
    /// fenced from now on) and becomes the epoch checked against. A batch
    /// of an older epoch (a leader whose table had forgotten the newer one
    /// let it in) is not remembered: false. So `kafka_epochs` is always the
    /// epoch of the one entry, however the table was built.
    fn take_kafka_epoch(&mut self, producer_id: u64) -> bool {
        let Some(producer) = KafkaProducer::from_producer_id(producer_id) else { return true };
        match self.kafka_epochs.insert(producer.id, producer.epoch) {
            Some(current_epoch) if current_epoch > producer.epoch => {
                self.kafka_epochs.insert(producer.id, current_epoch);
                false
            }
            Some(current_epoch) if current_epoch < producer.epoch => {
                self.producers.remove(&KafkaProducer { epoch: current_epoch, ..producer }.producer_id());
                true
            }
            _ => true,
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
            self.forget(producer_id);
        }
    }

    /// Drop a producer's entry, and a Kafka producer's epoch with it (its
    /// only entry).
    fn forget(&mut self, producer_id: u64) {
        self.producers.remove(&producer_id);
        if let Some(producer) = KafkaProducer::from_producer_id(producer_id) {
            self.kafka_epochs.remove(&producer.id);
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
            if let Some(producer) = KafkaProducer::from_producer_id(producer_id) {
                // One entry per Kafka producer, as `apply` keeps it.
                if states.kafka_epochs.insert(producer.id, producer.epoch).is_some() {
                    return None;
                }
            }
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

    fn kafka(id: u64, epoch: u16) -> u64 {
        KafkaProducer { id, epoch }.producer_id()
    }

    #[test]
    fn kafka_producer_ids_pack_id_and_epoch_and_stay_apart_from_native_ids() {
        let producer = KafkaProducer::new(KafkaProducer::MAX_ID as i64, i16::MAX).unwrap();
        assert_eq!(KafkaProducer::from_producer_id(producer.producer_id()), Some(producer));
        assert_eq!(KafkaProducer::new(1 << 47, 0), None, "ids past 47 bits are not this node's");
        assert_eq!(KafkaProducer::new(5, -1), None);
        assert_eq!(KafkaProducer::from_producer_id(u64::MAX >> 1), None, "native ids have the top bit clear");
        assert_ne!(kafka(0, 0), 0, "never the id of a batch without a producer");
    }

    #[test]
    fn kafka_sequences_wrap_from_i32_max_to_zero_and_native_ones_at_u32_max() {
        let mut states = ProducerStates::new(10);
        let producer = kafka(7, 0);
        let near_end = i32::MAX as u32 - 4;
        states.apply(&header(producer, near_end, 10, 0));
        assert_eq!(states.check(producer, 5, 3), SequenceCheck::Append, "5 records before the wrap, 5 after");
        assert!(matches!(states.check(producer, near_end, 10), SequenceCheck::Duplicate(_)));
        assert_eq!(states.check(producer, near_end.wrapping_add(10), 1), SequenceCheck::OutOfOrder { expected: 5 });
        states.apply(&header(producer, 5, 3, 10));
        assert_eq!(states.check(producer, 8, 1), SequenceCheck::Append);

        let native = 99;
        states.apply(&header(native, u32::MAX - 1, 4, 20));
        assert_eq!(states.check(native, 2, 1), SequenceCheck::Append);
        assert_eq!(states.check(native, i32::MAX as u32 + 3, 1), SequenceCheck::OutOfOrder { expected: 2 });
    }

    #[test]
    fn a_kafka_producers_older_epoch_is_fenced_once_a_newer_one_is_in_the_log() {
        let mut states = ProducerStates::new(10);
        states.apply(&header(kafka(7, 3), 0, 2, 0));
        assert_eq!(
            states.check(kafka(7, 4), 1, 1),
            SequenceCheck::OutOfOrder { expected: 0 },
            "a new epoch starts at 0"
        );
        assert_eq!(states.check(kafka(7, 4), 0, 1), SequenceCheck::Append);
        assert!(matches!(states.check(kafka(7, 3), 0, 2), SequenceCheck::Duplicate(_)), "not yet fenced");
        states.apply(&header(kafka(7, 4), 0, 1, 2));
        assert_eq!(
            states.check(kafka(7, 3), 2, 1),
            SequenceCheck::Fenced { producer: KafkaProducer { id: 7, epoch: 3 }, current_epoch: 4 }
        );
        assert_eq!(
            states.check(kafka(7, 3), 0, 2),
            SequenceCheck::Fenced { producer: KafkaProducer { id: 7, epoch: 3 }, current_epoch: 4 },
            "retries too"
        );
        assert_eq!(states.len(), 1, "the old epoch's entry is retired");
        assert_eq!(states.check(kafka(8, 0), 0, 1), SequenceCheck::Append, "other producers are not affected");

        let restored = ProducerStates::decode(&states.encode(), 10).unwrap();
        assert_eq!(
            restored.check(kafka(7, 3), 2, 1),
            SequenceCheck::Fenced { producer: KafkaProducer { id: 7, epoch: 3 }, current_epoch: 4 }
        );
        assert_eq!(restored, states);
    }

    #[test]
    fn an_evicted_kafka_producer_forgets_its_epoch_with_its_entry() {
        let mut states = ProducerStates::new(1);
        states.apply(&header(kafka(7, 2), 0, 1, 0));
        states.apply(&header(kafka(8, 0), 0, 1, 1));
        assert_eq!(states.len(), 1);
        assert_eq!(states.check(kafka(7, 1), 0, 1), SequenceCheck::Append, "unknown again, as any evicted producer");
    }

    /// Every Kafka producer has exactly one entry, of the epoch it is
    /// checked against, and the snapshot holds the same table.
    fn assert_one_entry_per_kafka_producer(states: &ProducerStates) {
        for &producer_id in states.producers.keys() {
            if let Some(producer) = KafkaProducer::from_producer_id(producer_id) {
                assert_eq!(states.kafka_epochs.get(&producer.id), Some(&producer.epoch), "{producer:?}");
            }
        }
        let kafka_entries = states.producers.keys().filter(|id| *id >> 63 == 1).count();
        assert_eq!(kafka_entries, states.kafka_epochs.len());
        assert_eq!(ProducerStates::decode(&states.encode(), states.max_producers).as_ref(), Some(states));
    }

    proptest::proptest! {
        #[test]
        fn kafka_epochs_follow_the_entries_whatever_order_batches_arrive_in(
            batches in proptest::collection::vec((0u64..4, 0u16..4, proptest::bool::ANY), 1..60),
            max_producers in 1usize..5,
        ) {
            let mut states = ProducerStates::new(max_producers);
            for (offset, (id, epoch, native)) in batches.into_iter().enumerate() {
                let producer_id = if native { id + 1 } else { kafka(id, epoch) };
                states.apply(&header(producer_id, 0, 1, offset as u64));
                assert_one_entry_per_kafka_producer(&states);
            }
        }
    }
}
