//! Reads: locate by offset index, read whole CRC-verified batches, timestamp lookup.

use super::*;

impl PartitionLog {
    /// Read whole batches starting with the one holding `offset`, up to about
    /// `max_bytes` (at least one batch) and below `max_offset` (defaults to
    /// the durable end). Every batch's CRC is verified before it is returned.
    ///
    /// A closed log refuses: its directory may already be a re-created
    /// topic's, whose files it must not open, and a long poll on it would
    /// otherwise spin (nothing will ever be appended).
    pub async fn read(&self, offset: u64, max_bytes: usize, max_offset: Option<u64>) -> StorageResult<ReadBatches> {
        self.check_open()?;
        if let Some(cached) = self.read_tail(offset, max_bytes, max_offset) {
            self.note_tail_reader();
            return Ok(cached);
        }
        // The end this read may reach, as it starts: the durable end moves on
        // while the read waits for the disk.
        let limit_offset = {
            let state = self.inner.state.borrow();
            max_offset.unwrap_or(u64::MAX).min(state.durability.mark.offset)
        };
        let result = match self.take_read_ahead(offset, max_bytes, max_offset).await {
            Some(result) => result,
            None => self.read_from_disk(offset, max_bytes, max_offset).await?,
        };
        if result.batch_count > 0 {
            self.start_read_ahead(result.next_offset, max_bytes);
        }
        if result.next_offset >= limit_offset {
            self.note_tail_reader();
        }
        Ok(result)
    }

    /// A read reached as far as it could (the durable end, or the limit
    /// it was given, such as a consumer's high watermark), or the tail cache
    /// answered it: its reader reads the tail, and the batches appended
    /// next are cached for it.
    fn note_tail_reader(&self) {
        self.inner.state.borrow_mut().tail.note_tail_reader(Instant::now());
    }

    /// `read` from the segment files only: one segment, the one that holds
    /// `offset` (a read never continues into the next segment).
    pub(super) async fn read_from_disk(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: Option<u64>,
    ) -> StorageResult<ReadBatches> {
        let Some(location) = self.locate(offset, max_offset)? else {
            return Ok(ReadBatches { bytes: Vec::new(), next_offset: offset, batch_count: 0 });
        };
        let result = self.read_segment(&location, offset, max_bytes).await?;
        assert_dense_batches(&result, offset);
        // No progress possible (an empty segment the offset does not lie
        // past, as during a reset): answer empty rather than spin.
        let stuck = location.segment_next_offset <= offset;
        if result.batch_count > 0 || location.segment_next_offset >= location.limit_offset || stuck {
            return Ok(result);
        }
        // The segment holds `offset` yet no batch came back for it. Moving
        // on to the next segment (as this did) served a silent gap.
        let reason = format!(
            "offset {offset} lies in this segment (up to {}) but no batch was found for it",
            location.segment_next_offset
        );
        Err(StorageError::io("read segment", &location.path, std::io::Error::other(reason)))
    }

    /// For a replica: like `read`, but what the tail cache holds is served up
    /// to the written end, so followers copy a batch while the leader's
    /// fdatasync of it runs instead of after. The high watermark still
    /// waits for the leader's own durability.
    pub async fn read_written(&self, offset: u64, max_bytes: usize) -> StorageResult<ReadBatches> {
        self.check_open()?;
        let cached = {
            let state = self.inner.state.borrow();
            let usable =
                offset >= state.log_start_offset() && offset <= state.log_end_offset && state.health.fence.is_none();
            usable.then(|| state.tail.read(offset, max_bytes, state.durability.written_offset())).flatten()
        };
        match cached {
            Some(cached) => {
                let read = ReadBatches {
                    bytes: cached.bytes,
                    next_offset: cached.next_offset,
                    batch_count: cached.batch_count,
                };
                assert_dense_batches(&read, offset);
                self.note_tail_reader();
                Ok(read)
            }
            None => self.read(offset, max_bytes, None).await,
        }
    }

    /// Whether batches read from `offset` to `next_offset` under log
    /// `generation` are still this log's and may be served again: the log
    /// is open, not fenced and not failed, nothing was cut since (same generation:
    /// truncations, resets and rollbacks start a new one), and retention
    /// did not pass `offset`.
    pub fn still_holds(&self, offset: u64, next_offset: u64, generation: u64) -> bool {
        let state = self.inner.state.borrow();
        let health = &state.health;
        let inside = offset >= state.log_start_offset() && next_offset <= state.durability.written_offset();
        let healthy = !health.closed && health.fence.is_none() && health.failure.is_none();
        healthy && state.durability.generation == generation && inside
    }

    /// The same answer from the tail cache, when it holds `offset` (only
    /// durable batches: the limit is the durable end, as on disk).
    fn read_tail(&self, offset: u64, max_bytes: usize, max_offset: Option<u64>) -> Option<ReadBatches> {
        let state = self.inner.state.borrow();
        if offset < state.log_start_offset() || offset > state.log_end_offset || state.health.fence.is_some() {
            return None;
        }
        let limit_offset = max_offset.unwrap_or(state.durability.mark.offset).min(state.durability.mark.offset);
        let cached = state.tail.read(offset, max_bytes, limit_offset)?;
        debug_assert!(cached.next_offset <= limit_offset, "served beyond the durable end");
        let read =
            ReadBatches { bytes: cached.bytes, next_offset: cached.next_offset, batch_count: cached.batch_count };
        assert_dense_batches(&read, offset);
        Some(read)
    }

    /// Where a read of `offset` starts. A closed log is refused here too,
    /// not only when `read` starts: a read resumed after waiting on a
    /// read-ahead would otherwise open the path of a log abandoned
    /// meanwhile, which may be a re-created topic's file by then.
    pub(super) fn locate(&self, offset: u64, max_offset: Option<u64>) -> StorageResult<Option<ReadLocation>> {
        let state = self.inner.state.borrow();
        if state.health.closed {
            return Err(StorageError::Closed(self.inner.dir.clone()));
        }
        let log_start_offset = state.log_start_offset();
        let limit_offset = max_offset.unwrap_or(state.durability.mark.offset).min(state.durability.mark.offset);
        if offset < log_start_offset || offset > state.log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset: state.log_end_offset,
            });
        }
        if offset >= limit_offset || state.health.truncating {
            return Ok(None);
        }
        let active_base = state.active().base_offset;
        let (&base, segment) = state.segments.range(..=offset).next_back().expect("offset is inside the log");
        let is_active = base == active_base;
        let reader = if is_active { Some(Rc::clone(state.writer.file())) } else { state.readers.get(&base).cloned() };
        let relative = (offset - base).min(u64::from(u32::MAX)) as u32;
        let floor = segment.indexes.offsets.floor(relative);
        let start_position = floor.map_or(0, |(_, position)| u64::from(position));
        let start_offset = floor.map_or(base, |(floor_relative, _)| base + u64::from(floor_relative));
        Ok(Some(ReadLocation {
            offset,
            path: segment_file(&self.inner.dir, base, LOG_EXTENSION),
            reader,
            base_offset: base,
            generation: state.durability.generation,
            start_position,
            start_offset,
            end_position: if is_active { state.durability.mark.position } else { segment.written_bytes },
            end_offset: if is_active { state.durability.mark.offset } else { segment.next_offset },
            segment_next_offset: segment.next_offset,
            limit_offset,
        }))
    }

    pub(super) async fn reader_for(&self, location: &ReadLocation) -> StorageResult<Rc<DirectFile>> {
        if let Some(reader) = &location.reader {
            return Ok(Rc::clone(reader));
        }
        let file = match DirectFile::open_read_only(&location.path, self.inner.faults.clone()).await {
            Ok(file) => file,
            Err(error) => {
                // Retention may have taken the file while it opened.
                self.check_segment_kept(location)?;
                return Err(StorageError::io("open segment for read", &location.path, error));
            }
        };
        let file = Rc::new(file);
        let mut state = self.inner.state.borrow_mut();
        if state.health.closed {
            return Err(StorageError::Closed(self.inner.dir.clone()));
        }
        // Not when the log changed during the open: the segment under this
        // base may be a new file since, and this one a removed one.
        if state.segments.contains_key(&location.base_offset) && state.durability.generation == location.generation {
            state.readers.insert(location.base_offset, Rc::clone(&file));
        }
        Ok(file)
    }

    /// Read whole, verified batches of one segment from `location`: chunk
    /// by chunk (sized by the offset index where it can), taking every whole
    /// batch of a chunk, and reading exactly the batch a chunk cuts.
    async fn read_segment(&self, location: &ReadLocation, offset: u64, max_bytes: usize) -> StorageResult<ReadBatches> {
        let file = self.reader_for(location).await?;
        // Sized once for the answer: grown batch by batch, a 4 MiB answer
        // was copied again by every doubling (a tenth of a consuming node's
        // CPU). When the read may run to the segment's end, the answer is
        // `max_bytes` or what the segment holds from the start position,
        // whichever is less (a first batch over the limit grows it once). A
        // read stopped earlier by its limit (a high watermark behind the
        // durable end) may return far less: it grows as it fills.
        let span_bytes = location.end_position.saturating_sub(location.start_position);
        let runs_to_end = location.limit_offset >= location.end_offset;
        let capacity = match runs_to_end {
            true => max_bytes.min(usize::try_from(span_bytes).unwrap_or(usize::MAX)),
            false => 0,
        };
        let mut scan = SegmentScan {
            position: location.start_position,
            expected_offset: location.start_offset,
            output: ReadBatches { bytes: Vec::with_capacity(capacity), next_offset: offset, batch_count: 0 },
        };
        while scan.position < location.end_position {
            let budget_bytes = max_bytes.saturating_sub(scan.output.bytes.len());
            let exact_end = self.bounded_read_end(location, scan.position, budget_bytes);
            let want = match exact_end {
                Some(end) => (end - scan.position) as usize,
                None => (location.end_position - scan.position).min(max_bytes.max(READ_CHUNK_BYTES) as u64) as usize,
            };
            let chunk = self.read_bytes(&file, location, scan.position, want).await?;
            let consumed = match self.take_whole_batches(&chunk, location, &mut scan, offset, max_bytes)? {
                ChunkEnd::AnswerComplete => return Ok(scan.output),
                ChunkEnd::CutBatch { cursor, length } => {
                    let cut = (cursor, length);
                    match self.read_cut_batch(&file, location, &mut scan, cut, offset, max_bytes).await? {
                        CutEnd::AnswerComplete => return Ok(scan.output),
                        CutEnd::BelowOffset => continue,
                    }
                }
                ChunkEnd::Consumed(0) => break,
                ChunkEnd::Consumed(consumed) => consumed,
            };
            scan.position += consumed as u64;
            // An index-bounded read took every whole batch that fits; reading
            // on would only fetch a batch to throw away. An answer without a
            // batch goes on: a read returns at least one.
            let full = scan.output.bytes.len() >= max_bytes || exact_end.is_some();
            if full && scan.output.batch_count > 0 {
                break;
            }
        }
        Ok(scan.output)
    }

    /// Read `length` bytes at `position` of the segment, counted in the stats.
    async fn read_bytes(
        &self,
        file: &DirectFile,
        location: &ReadLocation,
        position: u64,
        length: usize,
    ) -> StorageResult<glommio::io::ReadResult> {
        let bytes = file
            .read_at(position, length)
            .await
            .map_err(|error| StorageError::io("read segment", &location.path, error))?;
        self.count_read(bytes.len());
        self.check_segment_kept(location)?;
        Ok(bytes)
    }

    /// After a read completes: its segment is still in the log and no
    /// truncation or rollback since the read was located cut what it may
    /// have read, so the bytes are the segment's. A segment gone from the
    /// log may have had its file recycled while the read was in flight
    /// (retention zeroes it, the next roll writes another segment into
    /// it); a truncated one may be back under the same base in a new file
    /// while the read held the old one, with the cut records in it. Either
    /// way the bytes prove nothing: the offset is below the log start now,
    /// or the reader asks again. Never corruption. Retention drops a
    /// segment from the state before it renames the file, a truncation
    /// starts a new generation before it removes any, and this check runs
    /// on the shard's thread like both: a read that passes it completed
    /// before either began.
    fn check_segment_kept(&self, location: &ReadLocation) -> StorageResult<()> {
        let state = self.inner.state.borrow();
        // Closed while the read waited: what it read is no longer this
        // log's to serve (its directory may be renamed away and reused).
        if state.health.closed {
            return Err(StorageError::Closed(self.inner.dir.clone()));
        }
        let durability = &state.durability;
        let generation_kept = durability.generation == location.generation
            || durability.kept_since(location.generation, location.limit_offset) == Some(true);
        if generation_kept && state.segments.contains_key(&location.base_offset) {
            return Ok(());
        }
        let log_start_offset = state.log_start_offset();
        if location.offset < log_start_offset {
            let log_end_offset = state.log_end_offset;
            return Err(StorageError::OffsetOutOfRange { offset: location.offset, log_start_offset, log_end_offset });
        }
        let source = std::io::Error::other("the log changed during the read");
        Err(StorageError::io("read segment", &location.path, source))
    }

    /// Take every whole batch of `chunk` (read at `scan.position`) into the
    /// answer, each verified and checked for continuity: the data in the log
    /// is bounded by the format, not by today's admission limit, and a
    /// length from disk is trusted only as far as the segment's written end.
    fn take_whole_batches(
        &self,
        chunk: &[u8],
        location: &ReadLocation,
        scan: &mut SegmentScan,
        offset: u64,
        max_bytes: usize,
    ) -> StorageResult<ChunkEnd> {
        let mut cursor = 0usize;
        while cursor < chunk.len() {
            let rest = &chunk[cursor..];
            if rest.len() < BATCH_HEADER_BYTES {
                break;
            }
            let header = BatchHeader::parse(rest).map_err(StorageError::InvalidBatch)?;
            let length = header.batch_bytes as usize;
            if length > rest.len() && length <= FORMAT_MAX_BATCH_BYTES {
                return Ok(ChunkEnd::CutBatch { cursor, length });
            }
            let batch_position = scan.position + cursor as u64;
            let verified = verify_batch(rest, FORMAT_MAX_BATCH_BYTES)
                .map_err(|error| self.report_corruption(location, batch_position, error.to_string()))?;
            self.check_continuity(location, batch_position, &verified, scan.expected_offset)?;
            scan.expected_offset = verified.next_offset();
            if verified.base_offset >= location.limit_offset {
                return Ok(ChunkEnd::AnswerComplete);
            }
            if verified.next_offset() > offset {
                if scan.output.batch_count > 0 && scan.output.bytes.len() + length > max_bytes {
                    return Ok(ChunkEnd::AnswerComplete);
                }
                scan.output.bytes.extend_from_slice(&rest[..length]);
                scan.output.next_offset = verified.next_offset();
                scan.output.batch_count += 1;
            }
            cursor += length;
        }
        Ok(ChunkEnd::Consumed(cursor))
    }

    /// The chunk cut the batch at `cursor` (`length` bytes): read exactly
    /// it rather than another whole chunk (which doubled the bytes read per
    /// fetch). A batch the answer would start with is read whatever its
    /// size, if the segment holds that much written data at all; a later
    /// one only if it is written and fits the answer. A batch wholly below
    /// `offset` (the chunk began at an index entry far before it, which a
    /// large `index_interval_bytes` allows) is stepped over and the scan
    /// goes on: answering empty there stopped the read short of `offset`.
    async fn read_cut_batch(
        &self,
        file: &DirectFile,
        location: &ReadLocation,
        scan: &mut SegmentScan,
        (cursor, length): (usize, usize),
        offset: u64,
        max_bytes: usize,
    ) -> StorageResult<CutEnd> {
        let batch_position = scan.position + cursor as u64;
        let written = batch_position + length as u64 <= location.end_position;
        // The answer's first batch, wherever it sits in the chunk (batches
        // before it in the chunk may lie below the offset asked for): a
        // length past the written end is damage. Answering empty instead
        // made the read move on to the next segment, a silent gap.
        if scan.output.batch_count == 0 && !written {
            let reason = format!("batch of {length} bytes runs past the written end");
            return Err(self.report_corruption(location, batch_position, reason));
        }
        // The first batch of an answer is returned whatever its size (a
        // read returns at least one batch): max_bytes bounds only the rest.
        let over_budget = scan.output.batch_count > 0 && scan.output.bytes.len() + length > max_bytes;
        if scan.output.batch_count > 0 && (!written || over_budget) {
            return Ok(CutEnd::AnswerComplete);
        }
        // The length is not under the CRC: read as it says, a damaged one
        // made every read of this batch allocate and read up to the rest of
        // the segment before the CRC could fail. A batch the offset index
        // places inside it proves it wrong without reading.
        if let Some(inside) = self.indexed_batch_inside(location, batch_position, length) {
            let reason = format!("batch of {length} bytes runs over the batch the offset index places at {inside}");
            return Err(self.report_corruption(location, batch_position, reason));
        }
        let whole = self.read_bytes(file, location, batch_position, length).await?;
        let at = (batch_position, scan.expected_offset);
        let header = self.accept_batch(&whole, location, at, offset, max_bytes, &mut scan.output)?;
        if scan.output.batch_count == 0 && header.next_offset() <= offset {
            scan.position = batch_position + length as u64;
            scan.expected_offset = header.next_offset();
            return Ok(CutEnd::BelowOffset);
        }
        Ok(CutEnd::AnswerComplete)
    }

    fn count_read(&self, bytes: usize) {
        self.inner.state.borrow_mut().stats.segment_read_bytes += bytes as u64;
    }

    /// Where a disk read from `position` of the whole batches that fit in
    /// `budget_bytes` ends: within the budget including the head padding
    /// the runtime reads (`padded_read_budget`), or, when that leaves room
    /// for no batch the index knows, within the budget alone (a small
    /// budget far into a block would otherwise read a whole chunk).
    pub(super) fn bounded_read_end(&self, location: &ReadLocation, position: u64, budget_bytes: usize) -> Option<u64> {
        let padded = self.whole_batches_end(location, position, padded_read_budget(budget_bytes, position));
        padded.or_else(|| self.whole_batches_end(location, position, budget_bytes))
    }

    /// Where the whole batches that fit in `budget_bytes` from `position`
    /// end, from the offset index (its entries sit at batch starts), so a
    /// read takes exactly what the answer returns. None when the index knows
    /// no batch start past `position` within the budget.
    fn whole_batches_end(&self, location: &ReadLocation, position: u64, budget_bytes: usize) -> Option<u64> {
        let target = position.saturating_add(budget_bytes as u64);
        if target >= location.end_position {
            return Some(location.end_position);
        }
        let state = self.inner.state.borrow();
        let segment = state.segments.get(&location.base_offset)?;
        let (_, boundary) = segment.indexes.offsets.floor_by_position(u32::try_from(target).ok()?)?;
        let boundary = u64::from(boundary);
        (boundary > position).then_some(boundary)
    }

    /// A batch start the offset index knows strictly inside the `length`
    /// bytes from `position` (index entries sit at batch starts).
    fn indexed_batch_inside(&self, location: &ReadLocation, position: u64, length: usize) -> Option<u64> {
        let last_byte = u32::try_from(position.checked_add(length as u64)?.checked_sub(1)?).ok()?;
        let state = self.inner.state.borrow();
        let segment = state.segments.get(&location.base_offset)?;
        let (_, entry_position) = segment.indexes.offsets.floor_by_position(last_byte)?;
        (u64::from(entry_position) > position).then_some(u64::from(entry_position))
    }

    /// Verify the batch read whole at `position` and add it to `output`
    /// when it holds offsets from `offset` on, below the limit, and fits.
    fn accept_batch(
        &self,
        bytes: &[u8],
        location: &ReadLocation,
        (position, expected_offset): (u64, u64),
        offset: u64,
        max_bytes: usize,
        output: &mut ReadBatches,
    ) -> StorageResult<BatchHeader> {
        let header = verify_batch(bytes, FORMAT_MAX_BATCH_BYTES)
            .map_err(|error| self.report_corruption(location, position, error.to_string()))?;
        self.check_continuity(location, position, &header, expected_offset)?;
        if header.base_offset < location.limit_offset
            && header.next_offset() > offset
            && (output.batch_count == 0 || output.bytes.len() + bytes.len() <= max_bytes)
        {
            output.bytes.extend_from_slice(&bytes[..header.batch_bytes as usize]);
            output.next_offset = header.next_offset();
            output.batch_count += 1;
        }
        Ok(header)
    }

    /// After the CRC (which does not cover the base offset), the batch must
    /// start where the one before it ended: a changed offset is corruption.
    fn check_continuity(
        &self,
        location: &ReadLocation,
        position: u64,
        header: &BatchHeader,
        expected_offset: u64,
    ) -> StorageResult<()> {
        if header.base_offset == expected_offset {
            return Ok(());
        }
        let reason = format!("batch has offset {}, expected {expected_offset}", header.base_offset);
        Err(self.report_corruption(location, position, reason))
    }

    /// A batch that should be valid failed its check: fence the partition.
    fn report_corruption(&self, location: &ReadLocation, position: u64, reason: String) -> StorageError {
        if self.inner.state.borrow().durability.generation != location.generation {
            // The bytes changed under the read (a cut, a rollback): not
            // corruption, and the reader simply asks again.
            let source = std::io::Error::other(format!("the log changed during the read ({reason})"));
            return StorageError::io("read segment", &location.path, source);
        }
        let report = FenceReport { path: location.path.clone(), position, offset: location.base_offset, reason };
        tracing::error!(target: "ringlog::storage", path = %report.path.display(), position, reason = %report.reason,
            "corrupted batch found by a read; partition fenced");
        let error = report.to_error();
        let mut state = self.inner.state.borrow_mut();
        // A closed log's directory may already be another topic's: the
        // fence is not stored there (its own files are gone or going).
        if state.health.fence.is_none() && !state.health.closed {
            state.health.fence = Some(report.clone());
            drop(state);
            self.persist_fence(report);
        }
        error
    }

    /// Store a fence found by a read, so a restart (whose clean path reads
    /// nothing) keeps the partition fenced. If the store itself fails the
    /// fence still holds in memory and the failure is logged; the next
    /// restart's read finds the damage again.
    fn persist_fence(&self, report: FenceReport) {
        let dir = self.inner.dir.clone();
        let task = crate::runtime::spawn_local(async move {
            let stored_dir = dir.clone();
            if let Err(error) = run_blocking(move || crate::storage::fence::store_fence(&stored_dir, &report)).await {
                tracing::error!(target: "ringlog::storage", dir = %dir.display(), %error, "cannot store the fence");
            }
        });
        // Close and abandon wait for it: a fence must not be lost to a
        // shutdown that follows the read that found it.
        *self.inner.fence_store.borrow_mut() = Some(task);
    }

    /// First offset whose record timestamp is >= `timestamp_ms`, or None when
    /// no such record is below the durable end.
    pub async fn find_offset_by_timestamp(&self, timestamp_ms: i64) -> StorageResult<Option<u64>> {
        let Some(start) = self.timestamp_scan_start(timestamp_ms) else {
            return Ok(None);
        };
        let mut offset = start;
        loop {
            let batches = self.read(offset, 1 << 20, None).await?;
            if batches.batch_count == 0 {
                return Ok(None);
            }
            for item in crate::storage::batch::BatchIter::new(&batches.bytes, FORMAT_MAX_BATCH_BYTES) {
                let (header, batch) = item.map_err(StorageError::InvalidBatch)?;
                if header.max_timestamp_ms < timestamp_ms {
                    continue;
                }
                let records = crate::storage::batch::RecordIter::new(&batch[BATCH_HEADER_BYTES..]);
                for (index, record) in records.enumerate() {
                    let record = record.map_err(StorageError::InvalidBatch)?;
                    let record_offset = header.base_offset + index as u64;
                    if record.timestamp_ms >= timestamp_ms && record_offset >= start {
                        return Ok(Some(record_offset));
                    }
                }
            }
            offset = batches.next_offset;
        }
    }

    fn timestamp_scan_start(&self, timestamp_ms: i64) -> Option<u64> {
        let state = self.inner.state.borrow();
        let segment = state
            .segments
            .values()
            .find(|segment| segment.max_timestamp_ms().is_some_and(|max| max >= timestamp_ms))?;
        let relative = segment.indexes.times.scan_start(timestamp_ms).unwrap_or(0);
        Some(segment.base_offset + u64::from(relative))
    }
}

/// What a read returns, checked after the CRC and continuity checks (which
/// report corruption) and after the tail cache's copy: `batch_count` whole
/// batches with dense offsets, the first holding or following `offset`, the
/// last ending at `next_offset`. Failing here is a bug in the read path,
/// not damage on disk, so it panics. One header parse per batch.
fn assert_dense_batches(read: &ReadBatches, offset: u64) {
    if read.batch_count == 0 {
        assert!(read.bytes.is_empty(), "an empty read returns no bytes");
        assert!(read.next_offset >= offset, "an empty read never moves back from {offset}");
        return;
    }
    let mut walk = crate::storage::batch::HeaderWalk::new(&read.bytes, 0);
    let mut expected_offset = None;
    let mut batch_count = 0usize;
    for item in walk.by_ref() {
        let (position, header) =
            item.unwrap_or_else(|(position, error)| panic!("read returned no batch at byte {position}: {error}"));
        match expected_offset {
            None => assert!(header.next_offset() > offset, "the first batch returned ends at or before {offset}"),
            Some(expected) => {
                assert_eq!(header.base_offset, expected, "batches returned are not dense at byte {position}")
            }
        }
        expected_offset = Some(header.next_offset());
        batch_count += 1;
    }
    assert_eq!(walk.position(), read.bytes.len(), "a read returns whole batches only");
    assert_eq!(batch_count, read.batch_count, "a read counts the batches it returns");
    assert_eq!(expected_offset, Some(read.next_offset), "a read's next offset follows its last batch");
}

/// The batch bytes one disk read from `position` may cover so that the
/// read, as the runtime issues it (from the block `position` lies in, and
/// rounded up to whole blocks), is no larger than `budget_bytes` rounded
/// up to a block. A read of `read_ahead_bytes` (4 MiB) then takes a 4 MiB
/// buffer from the shard's direct-I/O arena, whose buddy allocator would
/// give the padded 4 MiB + 4 KiB a block of 8 MiB: twice the memory, and
/// half the reads the arena holds (docs/STORAGE.md, "Direct-I/O memory").
fn padded_read_budget(budget_bytes: usize, position: u64) -> usize {
    let head_padding_bytes = (position % crate::storage::config::DIRECT_IO_ALIGNMENT as u64) as usize;
    budget_bytes.saturating_sub(head_padding_bytes)
}

/// Progress of one segment read.
struct SegmentScan {
    /// Where the next chunk starts in the segment.
    position: u64,
    /// Offset the next batch must start at (the CRC does not cover it).
    expected_offset: u64,
    output: ReadBatches,
}

/// How a chunk's batches ended.
enum ChunkEnd {
    /// Every whole batch was taken; this many bytes of the chunk were batches.
    Consumed(usize),
    /// The answer is complete (the limit, or the next batch does not fit).
    AnswerComplete,
    /// The batch at `cursor` of `length` bytes runs past the chunk's end.
    CutBatch { cursor: usize, length: usize },
}

/// How reading a cut batch ended.
enum CutEnd {
    /// The answer is complete.
    AnswerComplete,
    /// The batch lay wholly below the offset asked for; the scan goes on
    /// after it.
    BelowOffset,
}

/// Where a read goes.
pub(super) struct ReadLocation {
    /// The offset asked for.
    pub(super) offset: u64,
    pub(super) path: PathBuf,
    pub(super) reader: Option<Rc<DirectFile>>,
    pub(super) base_offset: u64,
    /// The log's generation when the read was located: a check failing
    /// after it changed read a file a truncation or rollback was cutting.
    pub(super) generation: u64,
    pub(super) start_position: u64,
    /// Offset of the batch at `start_position` (from the offset index): the
    /// CRC does not cover base offsets, so continuity is checked on read.
    pub(super) start_offset: u64,
    pub(super) end_position: u64,
    /// Offset of the batch that would start at `end_position`: the durable
    /// end in the active segment, the segment's end in a sealed one.
    pub(super) end_offset: u64,
    pub(super) segment_next_offset: u64,
    pub(super) limit_offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{stamp_batch, BatchBuilder};

    #[test]
    fn a_read_and_its_block_padding_fit_the_budget() {
        let block = crate::storage::config::DIRECT_IO_ALIGNMENT;
        let four_mib = 4 << 20;
        for position in [0u64, 1, 1000, 4095, 4096, 4097, 12_345_678] {
            let covered = padded_read_budget(four_mib, position);
            let head = (position % block as u64) as usize;
            let issued = (head + covered).div_ceil(block) * block;
            assert!(issued <= four_mib, "at {position}: {issued} bytes issued for a {four_mib} budget");
            assert_eq!(covered + head, four_mib, "at {position}: no more than the padding is given up");
        }
        assert_eq!(padded_read_budget(100, 4000), 0, "a budget smaller than the padding covers nothing");
    }

    fn batches_at(offsets_and_counts: &[(u64, usize)]) -> ReadBatches {
        let mut read = ReadBatches::default();
        for &(base_offset, records) in offsets_and_counts {
            let mut builder = BatchBuilder::new();
            for _ in 0..records {
                builder.push(0, None, b"value", &[]);
            }
            let mut batch = builder.finish().to_vec();
            stamp_batch(&mut batch, base_offset, 1);
            read.bytes.extend_from_slice(&batch);
            read.next_offset = base_offset + records as u64;
            read.batch_count += 1;
        }
        read
    }

    #[test]
    fn dense_whole_batches_pass_the_read_assertion() {
        assert_dense_batches(&batches_at(&[(10, 3), (13, 2), (15, 1)]), 11);
        assert_dense_batches(&ReadBatches { bytes: Vec::new(), next_offset: 7, batch_count: 0 }, 7);
    }

    #[test]
    #[should_panic(expected = "not dense")]
    fn a_gap_between_returned_batches_fires_the_read_assertion() {
        assert_dense_batches(&batches_at(&[(10, 3), (14, 2)]), 10);
    }

    #[test]
    #[should_panic(expected = "whole batches only")]
    fn a_cut_batch_fires_the_read_assertion() {
        let mut read = batches_at(&[(10, 3), (13, 2)]);
        read.bytes.truncate(read.bytes.len() - 1);
        assert_dense_batches(&read, 10);
    }

    #[test]
    #[should_panic(expected = "ends at or before")]
    fn a_first_batch_before_the_asked_offset_fires_the_read_assertion() {
        assert_dense_batches(&batches_at(&[(10, 3)]), 13);
    }
}
