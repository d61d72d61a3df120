//! Truncation (a follower cutting a divergent suffix), reset to an offset,
//! and retention: everything that removes records.

use super::*;
use crate::storage::batch::{BatchError, HeaderWalk};

impl PartitionLog {
    /// Remove every record at or after `offset` (replication divergence).
    /// When `offset` falls inside a batch the whole batch goes; returns the
    /// new log end. Once begun it runs to its end even if the caller stops
    /// waiting (see [`PartitionLog::run_detached`]).
    pub async fn truncate_to(&self, offset: u64) -> StorageResult<u64> {
        let log = self.clone();
        self.run_detached(async move { log.truncate_to_end(offset).await }).await
    }

    async fn truncate_to_end(&self, offset: u64) -> StorageResult<u64> {
        let _permit = self.inner.append_gate.acquire().await;
        let _files_permit = self.inner.files_gate.acquire().await;
        self.truncate_holding_gate(offset).await
    }

    pub(super) async fn truncate_holding_gate(&self, offset: u64) -> StorageResult<u64> {
        self.check_writable(&self.inner.state.borrow())?;
        self.drain().await?;
        let (log_start_offset, log_end_offset) = {
            let state = self.inner.state.borrow();
            (state.log_start_offset(), state.log_end_offset)
        };
        if offset >= log_end_offset {
            return Ok(log_end_offset);
        }
        if offset < log_start_offset {
            return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
        }
        let cut = self.find_batch_start(offset).await?;
        self.inner.state.borrow_mut().tail.clear();
        self.discard_read_ahead();
        self.apply_truncation(cut).await?;
        Ok(cut.offset)
    }

    /// Position and offset of the batch that holds `offset`.
    pub(super) async fn find_batch_start(&self, offset: u64) -> StorageResult<DurableMark> {
        let location = self.locate(offset, Some(u64::MAX))?.expect("offset below the log end");
        let file = self.reader_for(&location).await?;
        let mut position = location.start_position;
        let mut last_batch_position = None;
        let mut batch_offset = location.start_offset;
        while position < location.end_position {
            let header_bytes = file
                .read_at(position, BATCH_HEADER_BYTES)
                .await
                .map_err(|error| StorageError::io("read segment", &location.path, error))?;
            let header = match HeaderWalk::new(&header_bytes, 0).next() {
                Some(Ok((_, header))) => header,
                Some(Err((_, error))) => return Err(StorageError::InvalidBatch(error)),
                None => return Err(StorageError::InvalidBatch(BatchError::Truncated { needed: 64, available: 0 })),
            };
            if header.base_offset != batch_offset {
                // The CRC does not cover base offsets: never cut by a wrong one.
                let reason = format!("batch at {position} has offset {}, expected {batch_offset}", header.base_offset);
                return Err(StorageError::Fenced {
                    path: location.path.clone(),
                    position,
                    offset: batch_offset,
                    reason,
                });
            }
            if header.next_offset() > offset {
                return Ok(DurableMark { offset: header.base_offset, position, last_batch_position });
            }
            last_batch_position = Some(position);
            batch_offset = header.next_offset();
            position += u64::from(header.batch_bytes);
        }
        Ok(DurableMark { offset: batch_offset, position, last_batch_position })
    }

    /// Truncate in the order a crash between any two steps can survive:
    /// forget the later segments, then (durably) lower the recovery point
    /// and delete their files, and only then cut the kept segment. A crash
    /// before the cut leaves a longer kept segment (re-truncated by the
    /// leader), never later segments that resurrect or a silent hole.
    pub(super) async fn apply_truncation(&self, cut: DurableMark) -> StorageResult<()> {
        let dir = self.inner.dir.clone();
        let (prepared_epochs, prepared_bytes) = self.store_truncation_intent(cut).await?;
        let (removed, keep_base, epochs) = self.forget_segments_after(cut);
        assert_eq!(prepared_bytes, epochs.encode(), "the append gate kept the epoch history as the intent prepared it");
        let keep_path = segment_file(&dir, keep_base, LOG_EXTENSION);
        let file = match removed.is_empty() {
            true => Rc::clone(self.inner.state.borrow().writer.file()),
            false => Rc::new(
                DirectFile::open_read_write(&keep_path, self.inner.faults.clone())
                    .await
                    .map_err(|error| self.fail_stop("reopen segment", &keep_path, &error))?,
            ),
        };
        let metadata_dir = dir.clone();
        let faults = self.inner.faults.clone();
        let metadata = TruncationMetadata { removed, keep_base, cut_offset: cut.offset, prepared_epochs };
        run_blocking(move || store_truncation_metadata(&metadata_dir, &metadata, faults.as_deref()))
            .await
            .map_err(|error| self.fail_stop("truncate metadata", &dir, &error))?;
        file.truncate(cut.position).await.map_err(|error| self.fail_stop("truncate", &keep_path, &error))?;
        file.fdatasync().await.map_err(|error| self.fail_stop("fdatasync", &keep_path, &error))?;
        let config = &self.inner.config;
        let writer =
            SegmentWriter::open(Rc::clone(&file), cut.position, config.write_buffer_bytes, config.max_write_buffers)
                .await
                .map_err(|error| self.fail_stop("open segment writer", &keep_path, &error))?;
        {
            let mut state = self.inner.state.borrow_mut();
            state.readers.remove(&keep_base);
            state.writer = writer;
            let active = state.active_mut();
            active.sealed = false;
            active.indexes.make_writable();
            reset_active_to(&mut state, cut);
            state.health.rollback_disk_full = false;
            state.health.truncating = false;
        }
        // The cut is durable: producer state or indexes that do not match it
        // could answer a retry with another batch's offsets. Fail-stop.
        if let Err(error) = self.restore_max_timestamp(&file, cut).await {
            return Err(self.fail_stop(
                "read segment after truncation",
                &keep_path,
                &std::io::Error::other(error.to_string()),
            ));
        }
        if let Err(error) = self.rebuild_producers().await {
            return Err(self.fail_stop(
                "rebuild producers after truncation",
                &dir,
                &std::io::Error::other(error.to_string()),
            ));
        }
        self.inner.progress.notify_all();
        tracing::info!(target: "ringlog::storage", dir = %dir.display(), offset = cut.offset, "log truncated");
        self.latch_stale_commits().await
    }

    /// The truncation's writes that need space, before anything in memory
    /// changes: the lowered recovery point, and the trimmed epoch history
    /// prepared beside the checkpoint (`.tmp`), renamed over it only once
    /// the later segments are gone (the checkpoint must never say less than
    /// the segments on disk hold: recovery re-reads only the last segment's
    /// epochs). A full disk answers `disk_full` and leaves the log as it
    /// was (SPEC §4: resume once space is freed; the follower's next read
    /// retries). A lower recovery point alone only makes recovery scan
    /// more; a crash leaves the `.tmp`, which recovery deletes.
    pub(super) async fn store_truncation_intent(&self, cut: DurableMark) -> StorageResult<(PathBuf, Vec<u8>)> {
        let (keep_base, epochs) = {
            let state = self.inner.state.borrow();
            let keep_base = *state.segments.range(..=cut.offset).next_back().expect("cut inside the log").0;
            let mut epochs = state.epochs.clone();
            epochs.truncate_from_end(cut.offset);
            (keep_base, epochs)
        };
        let dir = self.inner.dir.clone();
        let fault = self.metadata_fault();
        let bytes = epochs.encode();
        let prepared_bytes = bytes.clone();
        run_blocking(move || -> std::io::Result<PathBuf> {
            fault()?;
            let recovery_point = crate::storage::markers::load_recovery_point(&dir)?;
            if recovery_point > keep_base {
                store_recovery_point(&dir, keep_base)?;
            }
            let path = EpochHistory::path(&dir);
            crate::storage::io::prepare_file(&path, &bytes).inspect_err(|_| {
                // Give back what a half-written file holds on a full disk.
                let _ = std::fs::remove_file(path.with_extension("tmp"));
            })
        })
        .await
        .map(|path| (path, prepared_bytes))
        .map_err(|error| self.metadata_failure("store truncation metadata", &self.inner.dir, &error))
    }

    /// Drop every segment after the one holding `cut` from the state and
    /// start a new generation (readers of the old content see it changed).
    pub(super) fn forget_segments_after(&self, cut: DurableMark) -> (Vec<u64>, u64, EpochHistory) {
        let mut state = self.inner.state.borrow_mut();
        let keep_base = *state.segments.range(..=cut.offset).next_back().expect("cut inside the log").0;
        let removed: Vec<u64> = state.segments.range(keep_base + 1..).map(|(&base, _)| base).collect();
        for base in &removed {
            state.segments.remove(base);
            state.readers.remove(base);
        }
        state.durability.new_generation(cut.offset);
        state.health.truncating = true;
        state.epochs.truncate_from_end(cut.offset);
        (removed, keep_base, state.epochs.clone())
    }

    /// After a cut the time index's last entry may understate the segment's
    /// largest timestamp (entries are sparse): walk the batch headers from
    /// that entry's batch to the cut, at most about one index interval.
    pub(super) async fn restore_max_timestamp(&self, file: &Rc<DirectFile>, cut: DurableMark) -> StorageResult<()> {
        let (from_position, base) = {
            let state = self.inner.state.borrow();
            let active = state.active();
            let last_time = active.indexes.times.last().map_or(0, |(_, relative)| relative);
            let floor = active.indexes.offsets.floor(last_time).map_or(0, |(_, position)| u64::from(position));
            (floor, active.base_offset)
        };
        let mut position = from_position;
        while position < cut.position {
            let want = (cut.position - position).min(READ_CHUNK_BYTES as u64 * 16) as usize;
            let chunk = file
                .read_at(position, want.max(BATCH_HEADER_BYTES))
                .await
                .map_err(|error| StorageError::io("read segment", file.path(), error))?;
            let limit = ((cut.position - position) as usize).min(chunk.len());
            let mut walk = HeaderWalk::new(&chunk[..limit], 0);
            for step in walk.by_ref() {
                let (_, header) = step.map_err(|(_, error)| StorageError::InvalidBatch(error))?;
                let relative =
                    header.base_offset.checked_sub(base).and_then(|relative| u32::try_from(relative).ok()).ok_or(
                        StorageError::InvalidBatch(BatchError::MalformedRecords("batch offset outside its segment")),
                    )?;
                let mut state = self.inner.state.borrow_mut();
                state.active_mut().indexes.raise_max_timestamp(header.max_timestamp_ms, relative);
            }
            let cursor = walk.position();
            if cursor == 0 {
                let error = BatchError::Truncated { needed: BATCH_HEADER_BYTES, available: limit };
                return Err(StorageError::InvalidBatch(error));
            }
            position += cursor as u64;
        }
        Ok(())
    }

    /// Delete sealed segments past the retention limits; returns their base
    /// offsets.
    ///
    /// Two steps under two gates. Under the append gate the segments leave
    /// the state (a truncation, which also holds it, never finds the
    /// segment it cuts removed under it) and the files gate is taken. Then
    /// the append gate is given back before the slow part: unlinking a
    /// 1 GiB segment and syncing the directory took up to 390 ms, and every
    /// append to the partition waited for it (BENCHMARKS.md, sustained
    /// produce). The files gate keeps the epoch checkpoint this stores
    /// from overtaking, or being overtaken by, a later one (a new epoch, a
    /// truncation), and keeps `close` and `abandon` from returning while
    /// files are still being removed from the directory.
    pub async fn apply_retention(&self, policy: RetentionPolicy, now_ms: i64) -> StorageResult<Vec<u64>> {
        self.apply_retention_below(policy, now_ms, u64::MAX).await
    }

    /// [`PartitionLog::apply_retention`], deleting only segments wholly
    /// below `below_offset`: a replicated partition's high watermark, so
    /// that retention never removes records the in-sync followers have not
    /// acknowledged (as Kafka bounds its log start). Past it, a lagging
    /// in-sync follower found the log start beyond its position, reset to
    /// it, and the high watermark passed records no follower ever held.
    pub async fn apply_retention_below(
        &self,
        policy: RetentionPolicy,
        now_ms: i64,
        below_offset: u64,
    ) -> StorageResult<Vec<u64>> {
        let append_permit = self.inner.append_gate.acquire().await;
        let Some((expired, epochs)) = self.forget_expired_segments(policy, now_ms, below_offset) else {
            return Ok(Vec::new());
        };
        let _files_permit = self.inner.files_gate.acquire().await;
        self.discard_read_ahead();
        drop(append_permit);
        let recycle = self.segments_to_recycle(&expired);
        let removed = self.remove_segments(expired.clone(), recycle, epochs, "delete expired segments").await;
        match removed {
            Ok(removal) => self.keep_recycled(removal),
            Err(error) => {
                self.inner.state.borrow_mut().unremoved_segments.extend(&expired);
                return Err(error);
            }
        }
        tracing::info!(target: "ringlog::storage", dir = %self.inner.dir.display(), segments = expired.len(), "retention deleted segments");
        Ok(expired)
    }

    /// Which of the expired segments' files to keep for the next rolls, as
    /// many as `max_recycled_segments` leaves room for: the newest, whose
    /// size is the likeliest to match the next segment's.
    fn segments_to_recycle(&self, expired: &[u64]) -> Vec<u64> {
        let state = self.inner.state.borrow();
        if state.zeroing_unsupported {
            return Vec::new();
        }
        let room = (self.inner.config.max_recycled_segments as usize).saturating_sub(state.recycled.len());
        expired.iter().rev().take(room).copied().collect()
    }

    /// Files retention zeroed join the pool the next rolls take from,
    /// unless the log closed meanwhile (its directory may be another's:
    /// the files stay until recovery deletes them). A file system that
    /// cannot zero is not asked again (each try costs a rename, a sync and
    /// an unlink).
    fn keep_recycled(&self, removal: Removal) {
        let mut state = self.inner.state.borrow_mut();
        state.zeroing_unsupported |= removal.zeroing_unsupported;
        state.recycled.retain(|path| !removal.released.contains(path));
        if state.health.closed {
            return;
        }
        state.recycled.extend(removal.recycled);
        assert!(state.recycled.len() <= self.inner.config.max_recycled_segments as usize, "the pool stays bounded");
    }

    /// Drop the segments past the retention limits from the state and trim
    /// the epoch history to the new log start; `None` when nothing expired
    /// (or the log is fenced or closed). Segments a failed removal left
    /// behind are removed again first. The caller holds the append gate.
    fn forget_expired_segments(
        &self,
        policy: RetentionPolicy,
        now_ms: i64,
        below_offset: u64,
    ) -> Option<(Vec<u64>, EpochHistory)> {
        let mut state = self.inner.state.borrow_mut();
        if state.health.fence.is_some() || state.health.closed || state.health.failure.is_some() {
            // A fenced partition's bytes stay on disk until repaired; a
            // closed log's directory may already be another's; a failed
            // one's state may not be what its disk holds (a truncation that
            // failed half-way trimmed the epochs this would store).
            return None;
        }
        let last_base = state.active().base_offset;
        // A segment ends where the next begins; none is sealed after an
        // unsealed one, and the deletable ones are a prefix.
        let ends = state.segments.keys().skip(1);
        let sealed: Vec<(u64, u64, Option<i64>)> = state
            .segments
            .values()
            .zip(ends)
            .take_while(|(segment, end)| segment.sealed && segment.base_offset != last_base && **end <= below_offset)
            .map(|(segment, _)| (segment.base_offset, segment.size_bytes, segment.max_timestamp_ms()))
            .collect();
        let total_bytes = state.segments.values().map(|segment| segment.size_bytes).sum();
        let mut expired = std::mem::take(&mut state.unremoved_segments);
        let newly_expired = select_expired(&sealed, total_bytes, policy, now_ms);
        expired.extend(&newly_expired);
        if expired.is_empty() {
            return None;
        }
        for base in &newly_expired {
            state.segments.remove(base);
            state.readers.remove(base);
        }
        let log_start_offset = state.log_start_offset();
        state.epochs.truncate_from_start(log_start_offset);
        Some((expired, state.epochs.clone()))
    }

    /// Delete the files of segments already dropped from the state (those
    /// in `recycle` renamed to `<base>.free` instead), store the trimmed
    /// epoch history, and make both durable (directory fsync); then zero
    /// the renamed files. On a thread of its own: an unlink of a large
    /// segment can take seconds, and the shard's helper thread also serves
    /// its rolls.
    pub(super) async fn remove_segments(
        &self,
        bases: Vec<u64>,
        recycle: Vec<u64>,
        epochs: EpochHistory,
        action: &'static str,
    ) -> StorageResult<Removal> {
        let dir = self.inner.dir.clone();
        let faults = self.inner.faults.clone();
        let fault = self.metadata_fault();
        let min_free_percent = self.inner.config.recycle_min_free_percent;
        let pool = self.inner.state.borrow().recycled.clone();
        crate::runtime::run_on_own_thread("ringlog-unlink", move || -> std::io::Result<Removal> {
            fault()?;
            if !short_of_space(&dir, min_free_percent) {
                return remove_or_recycle(&dir, &bases, &recycle, &epochs, faults.as_deref());
            }
            // Retention is how a full disk gets space back: the files kept
            // for rolls go too, and nothing new is kept.
            let mut removal = remove_or_recycle(&dir, &bases, &[], &epochs, faults.as_deref())?;
            for path in pool {
                if crate::storage::io::remove_file(&path, faults.as_deref()).is_ok() {
                    removal.released.push(path);
                }
            }
            Ok(removal)
        })
        .await
        .and_then(|removed| removed)
        .map_err(|error| StorageError::io(action, &self.inner.dir, error))
    }

    /// Start the log over, empty, at `offset`: a follower so far behind its
    /// leader that the records between its log end and the leader's log
    /// start no longer exist anywhere. Every local segment goes.
    ///
    /// One hold of the append gate covers the whole reset: an append that
    /// slipped in between the truncation and the roll would land in the
    /// segment being emptied. A crash between the roll and the removal of
    /// the old (empty) first segment is tidied by recovery. Once begun it
    /// runs to its end even if the caller stops waiting.
    pub async fn reset_to(&self, offset: u64) -> StorageResult<()> {
        let log = self.clone();
        self.run_detached(async move { log.reset_to_end(offset).await }).await
    }

    async fn reset_to_end(&self, offset: u64) -> StorageResult<()> {
        let _permit = self.inner.append_gate.acquire().await;
        let _files_permit = self.inner.files_gate.acquire().await;
        let start = self.snapshot().log_start_offset;
        self.truncate_holding_gate(start).await?;
        self.check_writable(&self.inner.state.borrow())?;
        let emptied_mark = {
            let mut state = self.inner.state.borrow_mut();
            assert_eq!(state.log_end_offset, start, "the log is empty after truncating to its start");
            if offset == start {
                return Ok(());
            }
            state.log_end_offset = offset;
            std::mem::replace(
                &mut state.durability.mark,
                DurableMark { offset, position: 0, last_batch_position: None },
            )
        };
        // The roll starts the segment at `offset` from the log's end. If it
        // fails, the log stays empty at its start: left at `offset` over the
        // segment at `start`, the next append went to that segment's first
        // byte under offsets its base does not match, and reads fenced it.
        if let Err(error) = self.roll().await {
            let mut state = self.inner.state.borrow_mut();
            if state.active().base_offset == start {
                state.log_end_offset = start;
                state.durability.mark = emptied_mark;
            }
            return Err(error);
        }
        let (removed, epochs) = {
            let mut state = self.inner.state.borrow_mut();
            let removed: Vec<u64> = state.segments.range(..offset).map(|(&base, _)| base).collect();
            for base in &removed {
                state.segments.remove(base);
                state.readers.remove(base);
            }
            state.epochs.truncate_from_start(offset);
            (removed, state.epochs.clone())
        };
        self.remove_segments(removed, Vec::new(), epochs, "remove segments after a reset").await?;
        assert_eq!(self.snapshot().log_start_offset, offset, "the log starts at the reset offset");
        tracing::info!(target: "ringlog::storage", dir = %self.inner.dir.display(), offset, "log reset");
        Ok(())
    }
}

/// What a removal left for the next rolls.
#[derive(Debug, Default)]
pub(super) struct Removal {
    /// Files renamed, zeroed and synced: ready for a roll.
    pub(super) recycled: Vec<PathBuf>,
    /// The file system answered `EOPNOTSUPP` to zeroing.
    pub(super) zeroing_unsupported: bool,
    /// Files the pool held that were unlinked for space (a roll that took
    /// one meanwhile found it gone, or renamed it first: both are safe).
    pub(super) released: Vec<PathBuf>,
}

/// The body of [`PartitionLog::remove_segments`], on its own thread. A
/// step that fails after some files were renamed unlinks them: they are
/// the log's no longer, not zeroed, and on a full disk (the likeliest
/// failure) their space is what is missing.
fn remove_or_recycle(
    dir: &Path,
    bases: &[u64],
    recycle: &[u64],
    epochs: &EpochHistory,
    faults: Option<&FaultInjector>,
) -> std::io::Result<Removal> {
    let mut renamed = Vec::new();
    let mut removed = || -> std::io::Result<()> {
        for &base in bases {
            match recycle.contains(&base) {
                true => recycle_segment_files(dir, base, faults, &mut renamed)?,
                false => remove_segment_files(dir, base, faults)?,
            }
        }
        if let Some(faults) = faults {
            faults.check(crate::storage::io::FaultOperation::Metadata)?;
        }
        // The store syncs the directory: the unlinks above are durable.
        epochs.store(dir)?;
        crate::storage::io::sync_directory_of(dir, faults)
    };
    if let Err(error) = removed() {
        for path in &renamed {
            let _ = crate::storage::io::remove_file(path, faults);
        }
        return Err(error);
    }
    // Only now: a rename a crash could still undo must never bring back a
    // segment whose blocks were zeroed.
    let mut removal = Removal::default();
    for path in renamed {
        match zero_recycled(&path, faults) {
            Ok(()) => removal.recycled.push(path),
            Err(error) => removal.zeroing_unsupported |= error.raw_os_error() == Some(libc::EOPNOTSUPP),
        }
    }
    Ok(removal)
}

/// Less than `min_free_percent` of the file system holding `dir` is free
/// (or it cannot be told).
fn short_of_space(dir: &Path, min_free_percent: u32) -> bool {
    match crate::storage::io::free_space(dir) {
        Ok((available_bytes, total_bytes)) => {
            u128::from(available_bytes) * 100 < u128::from(total_bytes) * u128::from(min_free_percent)
        }
        Err(_) => true,
    }
}

/// Zero a segment file retention renamed away (ready for a roll when it
/// succeeds). A file that cannot be zeroed (a file system without
/// `FALLOC_FL_ZERO_RANGE`, an I/O error) is unlinked instead: stale
/// batches past a segment's written end would read as a torn tail or as
/// corruption. Neither failure touches the log, whose files these no
/// longer are, and a failed fsync is never retried.
fn zero_recycled(path: &Path, faults: Option<&FaultInjector>) -> std::io::Result<()> {
    let Err(error) = crate::storage::io::zero_file(path, faults) else {
        return Ok(());
    };
    tracing::debug!(target: "ringlog::storage", path = %path.display(), %error, "cannot zero a recycled segment; unlinking it");
    if let Err(error) = crate::storage::io::remove_file(path, faults) {
        // Recovery deletes it at the next start.
        tracing::warn!(target: "ringlog::storage", path = %path.display(), %error, "cannot unlink a recycled segment");
    }
    Err(error)
}

/// The durable half of a truncation, before the kept segment is cut (the
/// recovery point was lowered by `store_truncation_intent`): later
/// segments' files deleted, the kept segment's stale indexes and the
/// producer snapshot removed, the trimmed epoch history stored again (the
/// intent's may predate a concurrent change), and the directory synced.
/// Nothing here allocates space but the epoch file, written once already.
/// What a truncation removes once its intent is stored.
struct TruncationMetadata {
    /// Later segments, deleted.
    removed: Vec<u64>,
    /// The segment the cut falls in.
    keep_base: u64,
    /// The offset of the cut: the new log end.
    cut_offset: u64,
    /// The trimmed epoch history, written beside the checkpoint.
    prepared_epochs: PathBuf,
}

fn store_truncation_metadata(
    dir: &Path,
    metadata: &TruncationMetadata,
    faults: Option<&FaultInjector>,
) -> std::io::Result<()> {
    let keep_base = metadata.keep_base;
    // Highest first, each synced: a failure or crash part way leaves a
    // shorter log, never a hole between the kept segment and a later one.
    for &base in metadata.removed.iter().rev() {
        remove_segment_files(dir, base, faults)?;
    }
    for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
        crate::storage::io::remove_file(&segment_file(dir, keep_base, extension), faults)?;
    }
    // A rename: no space needed (the intent wrote the bytes). It syncs the
    // directory, so the unlinks above are durable.
    if faults.is_some_and(FaultInjector::crashed) {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    crate::storage::io::commit_prepared(&metadata.prepared_epochs, &EpochHistory::path(dir))?;
    if let Some(faults) = faults {
        faults.directory_synced(dir);
    }
    // A snapshot of batches past the cut describes batches that are gone
    // now. One below it is still true, and it is kept: it remembers
    // producers whose batches retention deleted, which a walk of the
    // remaining segments would forget (and their retries be written twice).
    if ProducerStates::load(dir, metadata.cut_offset, 1)?.is_none() {
        crate::storage::io::remove_file(&ProducerStates::path(dir), faults)?;
    }
    crate::storage::io::sync_directory_of(dir, faults)
}
