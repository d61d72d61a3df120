//! Rolling the active segment (seal it, open the next) and closing the log
//! cleanly.

use super::*;

impl PartitionLog {
    /// Roll when the active segment is full or old enough (caller holds the append gate).
    pub(super) async fn roll_if_needed(&self, batch_bytes: u64) -> StorageResult<()> {
        let needs_roll = {
            let state = self.inner.state.borrow();
            let active = state.active();
            let config = &self.inner.config;
            let too_big = active.size_bytes + batch_bytes > config.segment_bytes;
            let too_old =
                config.segment_ms > 0 && state.active_opened_at.elapsed() >= Duration::from_millis(config.segment_ms);
            !active.is_empty() && (too_big || too_old)
        };
        if needs_roll {
            self.roll().await?;
        }
        Ok(())
    }

    /// Seal the active segment (durable, exact size, index files) and start a new one.
    pub async fn roll(&self) -> StorageResult<()> {
        self.drain().await?;
        let (file, base, size_bytes, new_base) = {
            let state = self.inner.state.borrow();
            let active = state.active();
            (Rc::clone(state.writer.file()), active.base_offset, active.size_bytes, state.log_end_offset)
        };
        if new_base == base {
            return Ok(());
        }
        self.seal_file(&file, size_bytes).await?;
        // The preallocated space is cut away: should the roll fail (a full
        // disk) and the log go on in this file, the next appends reserve
        // space again instead of meeting ENOSPC in the flusher, which rolls
        // back appends already placed.
        self.inner.state.borrow_mut().writer.preallocation_cut_to(size_bytes);
        let (indexes_bytes, producer_snapshot) = {
            let mut state = self.inner.state.borrow_mut();
            let active = state.active_mut();
            active.indexes.finalize();
            let indexes = (active.indexes.offsets.file_bytes(), active.indexes.times.file_bytes());
            (indexes, state.producers.encode())
        };
        let dir = self.inner.dir.clone();
        let new_path = segment_file(&dir, new_base, LOG_EXTENSION);
        let fault = self.metadata_fault();
        let recycled = self.inner.state.borrow_mut().recycled.pop();
        let faults = self.inner.faults.clone();
        let reused = run_blocking(move || {
            let indexes_written =
                fault().and_then(|()| write_seal_files(&dir, base, indexes_bytes, &producer_snapshot));
            if let Err(error) = indexes_written {
                // Most likely a full disk: give the kept file's space back.
                if let Some(recycled) = recycled {
                    let _ = crate::storage::io::remove_file(&recycled, faults.as_deref());
                }
                return Err(error);
            }
            start_next_segment(&dir, new_base, recycled.as_deref(), &fault, faults.as_deref())
        })
        .await
        .map_err(|error| self.metadata_failure("seal segment", &new_path, &error))?;
        self.inner.state.borrow_mut().stats.recycled_segments_reused += u64::from(reused);
        let new_file = DirectFile::open_read_write(&new_path, self.inner.faults.clone())
            .await
            .map_err(|error| self.metadata_failure("create segment", &new_path, &error))?;
        let config = &self.inner.config;
        let writer = SegmentWriter::open(Rc::new(new_file), 0, config.write_buffer_bytes, config.max_write_buffers)
            .await
            .map_err(|error| self.fail_stop("open segment writer", &new_path, &error))?;
        let mut state = self.inner.state.borrow_mut();
        let old_writer = std::mem::replace(&mut state.writer, writer);
        state.readers.insert(base, Rc::clone(old_writer.file()));
        state.active_mut().sealed = true;
        let mut segment = empty_segment(new_base);
        segment.indexes = crate::storage::index::SegmentIndexes::new(config.index_interval_bytes);
        state.segments.insert(new_base, segment);
        state.durability.mark = DurableMark { offset: new_base, position: 0, last_batch_position: None };
        state.active_opened_at = Instant::now();
        state.durability.unsynced_since = None;
        tracing::debug!(target: "ringlog::storage", dir = %self.inner.dir.display(), base, new_base, "segment rolled");
        Ok(())
    }

    /// A roll's or a truncation's metadata could not be written. Disk full
    /// is `disk_full`, not fail-stop (SPEC §4): nothing in memory changed
    /// yet, every metadata file is written atomically, and the next append
    /// (or the follower's next read) retries. Any other error fail-stops.
    pub(super) fn metadata_failure(&self, operation: &str, path: &Path, error: &std::io::Error) -> StorageError {
        if is_disk_full(error) {
            tracing::warn!(target: "ringlog::storage", path = %path.display(), operation, "disk full; nothing changed, the operation is retried");
            return StorageError::DiskFull { path: path.to_path_buf() };
        }
        self.fail_stop(operation, path, error)
    }

    /// fdatasync, then cut preallocated space so the file is exactly its log.
    pub(super) async fn seal_file(&self, file: &Rc<DirectFile>, size_bytes: u64) -> StorageResult<()> {
        file.fdatasync().await.map_err(|error| self.fail_stop("fdatasync", file.path(), &error))?;
        file.truncate(size_bytes).await.map_err(|error| self.fail_stop("truncate", file.path(), &error))?;
        file.fdatasync().await.map_err(|error| self.fail_stop("fdatasync", file.path(), &error))?;
        self.inner.state.borrow_mut().stats.fsyncs += 2;
        Ok(())
    }

    /// Flush, fsync, write index files and the clean-shutdown marker, stop the flusher.
    pub async fn close(&self) -> StorageResult<()> {
        let _permit = self.inner.append_gate.acquire().await;
        // Retention may still be removing files without the append gate.
        let _files_permit = self.inner.files_gate.acquire().await;
        let drained = self.drain().await;
        self.inner.state.borrow_mut().health.closed = true;
        self.discard_read_ahead();
        self.stop_flusher().await;
        drained?;
        if self.inner.state.borrow().health.fence.is_some() {
            return Ok(());
        }
        let (file, marker, base, indexes_bytes, producer_snapshot) = {
            let mut state = self.inner.state.borrow_mut();
            let producer_snapshot = state.producers.encode();
            let active = state.active_mut();
            active.indexes.finalize();
            let marker = CleanShutdown {
                active_base_offset: active.base_offset,
                active_size_bytes: active.size_bytes,
                last_batch_position: active.last_batch_position.unwrap_or(u64::MAX),
            };
            let indexes = (active.indexes.offsets.file_bytes(), active.indexes.times.file_bytes());
            let base = active.base_offset;
            (Rc::clone(state.writer.file()), marker, base, indexes, producer_snapshot)
        };
        file.fdatasync().await.map_err(|error| self.fail_stop("fdatasync", file.path(), &error))?;
        let dir = self.inner.dir.clone();
        run_blocking(move || -> std::io::Result<()> {
            crate::storage::io::write_file_atomically(&segment_file(&dir, base, INDEX_EXTENSION), &indexes_bytes.0)?;
            crate::storage::io::write_file_atomically(
                &segment_file(&dir, base, TIME_INDEX_EXTENSION),
                &indexes_bytes.1,
            )?;
            crate::storage::io::write_file_atomically(&ProducerStates::path(&dir), &producer_snapshot)?;
            store_clean_shutdown(&dir, &marker)
        })
        .await
        .map_err(|error| StorageError::io("write clean-shutdown marker", &self.inner.dir, error))?;
        tracing::debug!(target: "ringlog::storage", dir = %self.inner.dir.display(), "partition closed cleanly");
        Ok(())
    }

    pub(super) async fn stop_flusher(&self) {
        let fence_store = self.inner.fence_store.borrow_mut().take();
        if let Some(task) = fence_store {
            task.await;
        }
        self.inner.stopping.set(true);
        self.inner.work.notify_all();
        self.inner.progress.notify_all();
        let task = self.inner.flusher.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
    }

    /// Stop using the log without a clean-shutdown marker: a crash as tests
    /// simulate it, and a deleted topic's partitions. Waits for whatever
    /// holds the append, files or offsets gate (a roll, a truncation,
    /// retention, a commit) to finish: a deleted topic's directory is
    /// renamed away, and a new topic of its name may take its path, as
    /// soon as this returns, so nothing of this log may touch the path
    /// again. Every writer checks `closed` under its gate.
    pub async fn abandon(&self) {
        self.inner.state.borrow_mut().health.closed = true;
        // Append, files, offsets: the order truncation takes them.
        let append_permit = self.inner.append_gate.acquire().await;
        let files_permit = self.inner.files_gate.acquire().await;
        let offsets_permit = self.inner.offsets_gate.acquire().await;
        self.discard_read_ahead();
        self.stop_flusher().await;
        drop(offsets_permit);
        drop(files_permit);
        drop(append_permit);
    }
}

/// Index files and producer snapshot of the segment being sealed. The
/// producer snapshot is taken at the seal, so a crash later only walks the
/// headers of the new active segment.
fn write_seal_files(
    dir: &Path,
    base: u64,
    indexes: (Vec<u8>, Vec<u8>),
    producer_snapshot: &[u8],
) -> std::io::Result<()> {
    crate::storage::io::write_file_atomically(&segment_file(dir, base, INDEX_EXTENSION), &indexes.0)?;
    crate::storage::io::write_file_atomically(&ProducerStates::path(dir), producer_snapshot)?;
    crate::storage::io::write_file_atomically(&segment_file(dir, base, TIME_INDEX_EXTENSION), &indexes.1)
}

/// The next segment's file (a recycled one when there is one), the
/// directory synced, and the recovery point moved to it. When a step
/// before the recovery point's rename fails (the sync, or writing the new
/// point on a full disk) the roll fails and the log goes on in the segment
/// it was sealing: the new file is removed again, as it would lie inside
/// that segment's offsets once the log moves past `new_base` without
/// rolling there, and the next start would read it as a gap. The removal
/// is made durable (directory fsync) before the log goes on: lost to a
/// power loss, the file came back inside that segment's offsets and
/// recovery fenced the partition. Once the recovery point's rename has
/// landed the file stays, since the point names it, and the log must not go
/// on in the old segment: a failed sync after it, like a removal that
/// cannot be made durable, stops the partition (never read as a full disk).
fn start_next_segment(
    dir: &Path,
    new_base: u64,
    recycled: Option<&Path>,
    fault: &dyn Fn() -> std::io::Result<()>,
    faults: Option<&crate::storage::io::FaultInjector>,
) -> std::io::Result<bool> {
    let new_path = segment_file(dir, new_base, LOG_EXTENSION);
    let reused = recycled.is_some_and(|recycled| reuse_recycled(recycled, &new_path));
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&new_path)?;
    let prepared = crate::storage::io::sync_directory(dir)
        .and_then(|()| fault())
        .and_then(|()| crate::storage::markers::prepare_recovery_point(dir, new_base));
    let stopping = |error: std::io::Error, what: &str| std::io::Error::other(format!("{what}: {error}"));
    // A failed rename did not land: the file goes, as after any step before.
    let landed = prepared
        .and_then(|prepared| std::fs::rename(&prepared, dir.join(crate::storage::markers::RECOVERY_POINT_FILE)));
    match landed {
        Ok(()) => crate::storage::io::sync_directory(dir)
            .map(|()| reused)
            .map_err(|error| stopping(error, "syncing the recovery point moved to the new segment")),
        Err(error) => {
            let removed = crate::storage::io::remove_file(&new_path, faults)
                .and_then(|()| crate::storage::io::sync_directory_of(dir, faults));
            match removed {
                Ok(()) => Err(error),
                Err(cleanup) => Err(stopping(cleanup, &format!("{error}; removing the new segment file durably"))),
            }
        }
    }
}

/// Give the next segment a file retention kept (zeroed, synced, its blocks
/// still allocated) instead of a new one: writing into it frees nothing
/// and allocates nothing. A crash before the directory sync that follows
/// may leave the file under either name: as `.free` recovery deletes it,
/// as the next segment it reads as an empty one (zeros). Failing, the roll
/// creates a new file as before, and the kept file is unlinked. True when
/// the file was reused.
fn reuse_recycled(recycled: &Path, new_path: &Path) -> bool {
    let Err(error) = std::fs::rename(recycled, new_path) else {
        return true;
    };
    tracing::warn!(target: "ringlog::storage", path = %recycled.display(), %error, "cannot reuse a recycled segment");
    let _ = std::fs::remove_file(recycled);
    false
}
