//! The append path: validate, place, copy into aligned buffers, wait for durability.

use super::*;

/// Where `place` put a batch, and under which generation of the log.
#[derive(Debug, Clone, Copy)]
struct Placement {
    base_offset: u64,
    leader_epoch: u32,
    generation: u64,
}

/// A batch on its way into the log: a leader's, which the log stamps with
/// its offsets and epoch in place (`built` when this process encoded it,
/// so it is not checked again), or a replica's, kept as its leader
/// stamped it (and so only read).
enum Incoming<'a> {
    Leader { batch: &'a mut [u8], leader_epoch: u32, built: bool },
    Replica(&'a [u8]),
}

impl<'a> Incoming<'a> {
    fn new(batch: &'a mut [u8], mode: AppendMode) -> Incoming<'a> {
        match mode {
            AppendMode::Leader { leader_epoch } => Incoming::Leader { batch, leader_epoch, built: false },
            AppendMode::Replica => Incoming::Replica(batch),
        }
    }

    /// The batch's header, checked: a built batch's shape and size only
    /// (the builder computed its CRC and counts from its records; debug
    /// builds check that claim), any other batch whole, records included.
    fn checked_header(&self, max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
        let Incoming::Leader { batch, built: true, .. } = self else {
            return validate_batch(self.bytes(), max_batch_bytes);
        };
        let header = BatchHeader::parse(batch)?;
        header.check_shape(max_batch_bytes)?;
        if header.batch_bytes as usize != batch.len() {
            return Err(BatchError::MalformedRecords("a built batch is not its buffer's length"));
        }
        debug_assert_eq!(validate_batch(batch, max_batch_bytes), Ok(header), "a built batch is valid");
        Ok(header)
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Incoming::Leader { batch, .. } => batch,
            Incoming::Replica(batch) => batch,
        }
    }
}

impl PartitionLog {
    /// Append one encoded batch. Resolves when the batch is durable under the
    /// configured policy; the batch's log-assigned header fields are stamped
    /// in place.
    pub async fn append(&self, batch: &mut [u8], mode: AppendMode) -> StorageResult<Durable> {
        let placed = self.append_with(Incoming::new(batch, mode)).await?;
        self.wait_durable(placed).await
    }

    /// Append without waiting for durability (`acks=none`): resolves once
    /// the batch has its offsets and sits in the write buffers. Not durable.
    pub async fn append_placed(&self, batch: &mut [u8], mode: AppendMode) -> StorageResult<Placed> {
        self.append_incoming_placed(Incoming::new(batch, mode)).await
    }

    /// [`PartitionLog::append_placed`] of a batch this process built (a
    /// Kafka client's records, transcoded), as leader at `leader_epoch`:
    /// its size is checked against `max_batch_bytes`, its records and CRC
    /// are not walked again.
    pub async fn append_built_placed(&self, batch: &mut BuiltBatch, leader_epoch: u32) -> StorageResult<Placed> {
        let incoming = Incoming::Leader { batch: batch.bytes_mut(), leader_epoch, built: true };
        self.append_incoming_placed(incoming).await
    }

    /// [`PartitionLog::append_placed`] of a replica's batch, which keeps
    /// its leader's offsets and epoch, so nothing writes to it: a follower
    /// appends straight from the answer it read, shared with other
    /// partitions' batches instead of copied out of it. Once begun it runs
    /// to its end even if the caller stops waiting: a follower's session
    /// that ends drops its tasks, and an append cancelled while it waited
    /// for buffer room (or in a roll) left bytes in the writer that its
    /// segment did not count.
    pub async fn append_replica_placed(&self, batch: bytes::Bytes) -> StorageResult<Placed> {
        let log = self.clone();
        self.run_detached(async move { log.append_incoming_placed(Incoming::Replica(&batch)).await }).await
    }

    async fn append_incoming_placed(&self, incoming: Incoming<'_>) -> StorageResult<Placed> {
        let placed = self.append_with(incoming).await?;
        if placed.duplicate {
            // A retry is answered once the original is durable, whatever
            // the acks: the producer must not see offsets it could lose.
            let _durable = self.wait_durable(placed).await?;
        }
        Ok(placed)
    }

    /// Wait until the durable end passes `offset` (long-poll fetches), or the
    /// partition fails or closes.
    pub async fn wait_durable_past(&self, offset: u64) {
        self.wait_until(|state| state.durability.mark.offset > offset).await;
    }

    /// Wait until the written end passes `offset` (replica long polls).
    pub async fn wait_written_past(&self, offset: u64) {
        self.wait_until(|state| state.durability.written_offset() > offset).await;
    }

    /// Wait until [`PartitionLog::read_written`] at `offset` can return a
    /// batch: durable past it, or written past it with the batch in the tail
    /// cache (the only place written but not durable batches are read
    /// from, and not once the partition is fenced). Waiting for the write
    /// alone returned at once while the batch was written but neither
    /// durable nor served from the cache, and the fetch that waited spun
    /// the shard (its fdatasync could not complete) until its long poll
    /// ran out.
    pub async fn wait_replica_readable_past(&self, offset: u64) {
        self.wait_until(|state| {
            let cached = state.health.fence.is_none() && state.tail.holds(offset);
            state.durability.mark.offset > offset || (state.durability.written_offset() > offset && cached)
        })
        .await;
    }

    async fn wait_until(&self, reached: impl Fn(&State) -> bool) {
        loop {
            let notified = self.inner.progress.notified();
            {
                let state = self.inner.state.borrow();
                if reached(&state) || state.health.failure.is_some() || state.health.closed {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The write path up to the write buffers.
    async fn append_with(&self, mut incoming: Incoming<'_>) -> StorageResult<Placed> {
        // max_batch_bytes admits new batches from clients; a replica copies
        // batches its leader already acknowledged, bounded by the format only.
        let limit = match incoming {
            Incoming::Leader { .. } => self.inner.config.max_batch_bytes,
            Incoming::Replica(_) => FORMAT_MAX_BATCH_BYTES,
        };
        let header = incoming.checked_header(limit)?;
        let batch_bytes = incoming.bytes().len() as u64;
        let _permit = self.inner.append_gate.acquire().await;
        self.check_writable(&self.inner.state.borrow())?;
        if let Incoming::Leader { .. } = incoming {
            if let Some(original) = self.check_sequence(&header)? {
                return Ok(original);
            }
        }
        self.roll_if_needed(batch_bytes).await?;
        self.ensure_preallocated(batch_bytes).await?;
        let placement = self.place(&mut incoming, &header)?;
        self.record_epoch(placement.leader_epoch, placement.base_offset).await?;
        self.copy_into_buffers(incoming.bytes(), placement.generation).await?;
        let placed = self.commit_placement(incoming.bytes(), &header, placement)?;
        drop(_permit);
        self.inner.work.notify_all();
        Ok(placed)
    }

    /// Idempotent produce: the original offsets when this batch is a retry of
    /// one already in the log; an error when its sequence is out of order.
    fn check_sequence(&self, header: &BatchHeader) -> StorageResult<Option<Placed>> {
        let state = self.inner.state.borrow();
        match state.producers.check(header.producer_id, header.base_sequence, header.record_count) {
            SequenceCheck::Append => Ok(None),
            SequenceCheck::Duplicate(original) => Ok(Some(Placed::new(
                AppendedOffsets {
                    base_offset: original.base_offset,
                    next_offset: original.base_offset + u64::from(original.record_count),
                    duplicate: true,
                },
                state.durability.generation,
            ))),
            SequenceCheck::OutOfOrder { expected } => Err(StorageError::OutOfOrderSequence {
                producer_id: header.producer_id,
                expected,
                received: header.base_sequence,
            }),
            SequenceCheck::Fenced { producer, current_epoch } => Err(StorageError::ProducerFenced {
                kafka_producer_id: producer.id,
                current_epoch,
                received_epoch: producer.epoch,
            }),
        }
    }

    /// Choose the batch's offsets and epoch and stamp them. The generation
    /// is taken here, with the offsets: a rollback that lands in any later
    /// await changes it, and the batch is refused instead of landing at a
    /// position its stamped offsets no longer describe.
    fn place(&self, incoming: &mut Incoming<'_>, header: &BatchHeader) -> StorageResult<Placement> {
        let state = self.inner.state.borrow();
        self.check_writable(&state)?;
        let (log_end_offset, generation) = (state.log_end_offset, state.durability.generation);
        let (base_offset, leader_epoch) = match incoming {
            Incoming::Leader { batch, leader_epoch, .. } => {
                stamp_batch(batch, log_end_offset, *leader_epoch);
                (log_end_offset, *leader_epoch)
            }
            Incoming::Replica(_) if header.base_offset == log_end_offset => (log_end_offset, header.leader_epoch),
            Incoming::Replica(_) => {
                return Err(StorageError::OffsetOutOfRange {
                    offset: header.base_offset,
                    log_start_offset: state.log_start_offset(),
                    log_end_offset,
                })
            }
        };
        Ok(Placement { base_offset, leader_epoch, generation })
    }

    async fn record_epoch(&self, leader_epoch: u32, base_offset: u64) -> StorageResult<()> {
        if self.inner.state.borrow().epochs.latest_epoch() == Some(leader_epoch) {
            // The common case, every batch of a running epoch: nothing to
            // store, and no copy of the history to keep for a rollback.
            return Ok(());
        }
        // Retention may be storing the checkpoint it trimmed (it holds
        // this gate, not the append gate): ours must land after it.
        let _files_permit = self.inner.files_gate.acquire().await;
        let (history, previous) = {
            let mut state = self.inner.state.borrow_mut();
            let latest = state.epochs.latest_epoch();
            if latest.is_some_and(|latest| leader_epoch < latest) {
                return Err(StorageError::StorageFailed {
                    partition: self.inner.dir.clone(),
                    cause: format!("leader epoch {leader_epoch} is older than the log's epoch {latest:?}"),
                });
            }
            if latest == Some(leader_epoch) {
                return Ok(());
            }
            let previous = state.epochs.clone();
            if !state.epochs.assign(leader_epoch, base_offset) {
                return Ok(());
            }
            (state.epochs.clone(), previous)
        };
        let dir = self.inner.dir.clone();
        let fault = self.metadata_fault();
        let stored = run_blocking(move || fault().and_then(|()| history.store(&dir))).await;
        if let Err(error) = stored {
            // The batch that began the epoch is not appended: the epoch must
            // not stay in memory either, or it would be recorded against
            // offsets that other batches take.
            self.inner.state.borrow_mut().epochs = previous;
            if is_disk_full(&error) {
                return Err(StorageError::DiskFull { path: self.inner.dir.clone() });
            }
            return Err(StorageError::io("store epoch checkpoint", &self.inner.dir, error));
        }
        Ok(())
    }

    /// Copy the batch into staging buffers, waiting for the disk when all are
    /// in flight. Each filled buffer is handed to the flusher at once.
    async fn copy_into_buffers(&self, batch: &[u8], generation: u64) -> StorageResult<()> {
        let mut copied = 0usize;
        loop {
            let notified = self.inner.progress.notified();
            {
                let mut state = self.inner.state.borrow_mut();
                if let Some(cause) = &state.health.failure {
                    return Err(StorageError::StorageFailed {
                        partition: self.inner.dir.clone(),
                        cause: cause.clone(),
                    });
                }
                if state.durability.generation != generation {
                    // A disk-full rollback replaced the writer under us.
                    return Err(StorageError::DiskFull { path: self.inner.dir.clone() });
                }
                if state.health.closed {
                    // Abandoned: the flusher is gone and no buffer comes free.
                    return Err(StorageError::Closed(self.inner.dir.clone()));
                }
                while copied < batch.len() {
                    copied += state.writer.copy_in(&batch[copied..]);
                    if !state.writer.staging_full() {
                        continue;
                    }
                    if !state.writer.rotate() {
                        break;
                    }
                    self.inner.work.notify_all();
                }
            }
            if copied == batch.len() {
                return Ok(());
            }
            self.inner.work.notify_all();
            notified.await;
        }
    }

    /// Update segment metadata and offsets after the bytes are in the buffers.
    fn commit_placement(&self, batch: &[u8], header: &BatchHeader, placement: Placement) -> StorageResult<Placed> {
        let mut state = self.inner.state.borrow_mut();
        if state.durability.generation != placement.generation {
            // A disk-full rollback ran while this batch was being copied.
            return Err(StorageError::DiskFull { path: self.inner.dir.clone() });
        }
        // Only a rollback or truncation moves the log end other than here,
        // and both change the generation while holding the append gate.
        let base_offset = placement.base_offset;
        assert_eq!(base_offset, state.log_end_offset, "a placed batch starts at the log end");
        assert!(header.record_count > 0, "a validated batch holds at least one record");
        let stamped = BatchHeader::parse(batch).ok().map(|stamped| stamped.base_offset);
        assert_eq!(stamped, Some(base_offset), "the batch carries the offset it is placed at");
        let counted_bytes = state.active().size_bytes + batch.len() as u64;
        assert_eq!(state.writer.position(), counted_bytes, "the writer holds the batch the segment will count");
        let interval = self.inner.config.index_interval_bytes;
        let next_offset = base_offset + u64::from(header.record_count);
        let active = state.active_mut();
        let position = active.size_bytes;
        let relative_offset = (base_offset - active.base_offset) as u32;
        if active.indexes.offsets.is_empty() && active.indexes.times.is_empty() && active.size_bytes == 0 {
            active.indexes = crate::storage::index::SegmentIndexes::new(interval);
        }
        active.indexes.on_batch(relative_offset, position as u32, batch.len() as u32, header.max_timestamp_ms);
        active.size_bytes += batch.len() as u64;
        active.next_offset = next_offset;
        active.last_batch_position = Some(position);
        state.log_end_offset = next_offset;
        assert_eq!(state.writer.position(), state.active().size_bytes, "writer and segment disagree");
        let placed = BatchHeader { base_offset, ..*header };
        state.producers.apply(&placed);
        if state.tail.has_tail_reader(Instant::now()) {
            let config = &self.inner.config;
            state.tail.push(base_offset, next_offset, batch, config.tail_cache_bytes, config.tail_cache_budget_bytes);
        }
        assert_eq!(state.log_end_offset, base_offset + u64::from(header.record_count), "offsets stay dense");
        Ok(Placed::new(AppendedOffsets { base_offset, next_offset, duplicate: false }, state.durability.generation))
    }

    /// Wait until `placed` is durable, or report why it never will be: the
    /// one way to make a [`Durable`].
    pub async fn wait_durable(&self, placed: Placed) -> StorageResult<Durable> {
        loop {
            let notified = self.inner.progress.notified();
            if let Some(outcome) = self.durable_outcome(placed.next_offset, placed.generation) {
                outcome?;
                let Placed { base_offset, next_offset, duplicate, .. } = placed;
                let generation = self.inner.state.borrow().durability.generation;
                return Ok(Durable { base_offset, next_offset, duplicate, generation });
            }
            notified.await;
        }
    }

    /// Whether waiting for `target` is over: durable, or never will be.
    fn durable_outcome(&self, target: u64, generation: u64) -> Option<StorageResult<()>> {
        let state = self.inner.state.borrow();
        if state.durability.generation != generation {
            if state.health.rolling_back {
                // Answered once the rollback is done, so the caller sees the
                // log it left behind (and a retry finds it writable).
                return None;
            }
            if state.durability.kept_since(generation, target) == Some(true) {
                // Durable before the rollback or truncation, and kept by it:
                // a disk_full answer would make the producer write it twice.
                return Some(Ok(()));
            }
            if state.health.rollback_disk_full {
                return Some(Err(StorageError::DiskFull { path: self.inner.dir.clone() }));
            }
            return Some(Err(StorageError::StorageFailed {
                partition: self.inner.dir.clone(),
                cause: "the log was truncated before this batch became durable".into(),
            }));
        }
        if state.durability.mark.offset >= target {
            return Some(Ok(()));
        }
        if state.health.closed {
            // Only an abandoned log closes with batches not yet durable
            // (a clean close drains under the append gate first).
            return Some(Err(StorageError::Closed(self.inner.dir.clone())));
        }
        let cause = state.health.failure.as_ref()?;
        Some(Err(StorageError::StorageFailed { partition: self.inner.dir.clone(), cause: cause.clone() }))
    }

    /// Reserve disk space ahead of the write position; ENOSPC here changes nothing.
    async fn ensure_preallocated(&self, batch_bytes: u64) -> StorageResult<()> {
        let (file, target) = {
            let state = self.inner.state.borrow();
            let needed = state.writer.position() + batch_bytes;
            if needed <= state.writer.preallocated_to() {
                return Ok(());
            }
            let target = preallocation_target(needed, state.writer.position(), self.inner.config.preallocate_bytes);
            (Rc::clone(state.writer.file()), target)
        };
        match file.preallocate(target).await {
            Ok(()) => {
                self.inner.state.borrow_mut().writer.set_preallocated_to(target);
                Ok(())
            }
            Err(error) if is_disk_full(&error) => {
                tracing::warn!(target: "ringlog::storage", path = %file.path().display(), "disk full reserving segment space");
                Err(StorageError::DiskFull { path: file.path().to_path_buf() })
            }
            Err(error) if error.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                // Filesystems without fallocate: writes extend the file instead.
                self.inner.state.borrow_mut().writer.set_preallocated_to(target);
                Ok(())
            }
            Err(error) => Err(self.fail_stop("preallocate", file.path(), &error)),
        }
    }
}
