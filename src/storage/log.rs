//! The partition log: append with group commit, verified reads, timestamp
//! lookup, truncation, rolling, retention, consumer offsets and a clean
//! close. Owned by one executor thread: state lives in a `RefCell` that is
//! never borrowed across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;

use super::batch::{stamp_batch, validate_batch, verify_batch, BatchHeader, BATCH_HEADER_BYTES};
use super::config::{FsyncPolicy, StorageConfig};
use super::epochs::EpochHistory;
use super::error::{is_disk_full, StorageError, StorageResult};
use super::io::{DirectFile, FaultInjector};
use super::markers::{store_clean_shutdown, store_recovery_point, CleanShutdown};
use super::offsets::{CommittedOffset, ConsumerOffsets, OffsetLookup};
use super::recovery::{empty_segment, recover_partition, FenceReport, RecoveryReport};
use super::retention::{select_expired, RetentionPolicy};
use super::segment::{segment_file, Segment, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION};
use super::writer::{preallocation_target, write_round, SegmentWriter};
use crate::runtime::{run_blocking, Notify, Task};

/// Bytes read ahead when a fetch starts (the first batch may need more).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Consumer offsets file is compacted past this size.
const OFFSETS_COMPACT_BYTES: u64 = 1 << 20;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an append result says whether the batch is durable"]
pub struct AppendInfo {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset after the last record.
    pub next_offset: u64,
}

/// How the leader epoch of an appended batch is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// Assign the next offsets and stamp this leader epoch.
    Leader {
        /// Current leader epoch.
        leader_epoch: u32,
    },
    /// Keep the batch's own offsets and epoch (a follower copying the leader);
    /// its base offset must equal the log end.
    Replica,
}

/// Whole batches returned by a read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadBatches {
    /// Concatenated, CRC-verified batches.
    pub bytes: Vec<u8>,
    /// Offset after the last returned record (the next offset to ask for).
    pub next_offset: u64,
    /// Number of batches.
    pub batch_count: usize,
}

/// Counters for tests, metrics and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// fdatasync calls on segment files.
    pub fsyncs: u64,
    /// Write rounds completed.
    pub write_rounds: u64,
    /// Bytes written to segment files (including re-written tail blocks).
    pub bytes_written: u64,
    /// Aligned buffers allocated by the writer of the active segment.
    pub buffer_allocations: u64,
}

/// Offsets and sizes of the log at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSnapshot {
    /// First offset still in the log.
    pub log_start_offset: u64,
    /// Next offset to assign.
    pub log_end_offset: u64,
    /// End of what is durable under the policy (the standalone high watermark).
    pub durable_end_offset: u64,
    /// Number of segments.
    pub segments: usize,
    /// Total valid bytes.
    pub size_bytes: u64,
    /// Latest leader epoch.
    pub leader_epoch: Option<u32>,
    /// Fail-stop cause, if any.
    pub failure: Option<String>,
    /// Fence report, if any.
    pub fence: Option<FenceReport>,
}

#[derive(Debug, Clone, Copy)]
struct DurableMark {
    offset: u64,
    position: u64,
    last_batch_position: Option<u64>,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    readers: BTreeMap<u64, Rc<DirectFile>>,
    writer: SegmentWriter,
    log_end_offset: u64,
    durable: DurableMark,
    generation: u64,
    rollback_disk_full: bool,
    failure: Option<String>,
    fence: Option<FenceReport>,
    epochs: EpochHistory,
    offsets: ConsumerOffsets,
    closed: bool,
    active_opened_at: Instant,
    unsynced_since: Option<Instant>,
    stats: LogStats,
    recovery: RecoveryReport,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }
    fn log_start_offset(&self) -> u64 {
        self.segments.values().next().map_or(0, |segment| segment.base_offset)
    }
}

struct Inner {
    dir: PathBuf,
    config: StorageConfig,
    faults: Option<Arc<FaultInjector>>,
    state: RefCell<State>,
    append_gate: Semaphore,
    offsets_gate: Semaphore,
    work: Notify,
    progress: Notify,
    flusher: RefCell<Option<Task<()>>>,
    stopping: Cell<bool>,
}

/// One partition's log. Cheap to clone; all clones share the partition.
#[derive(Clone)]
pub struct PartitionLog {
    inner: Rc<Inner>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn errno_text(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(errno) => format!("{error} (errno {errno})"),
        None => error.to_string(),
    }
}

impl PartitionLog {
    /// Recover and open the partition in `dir`, then start its flusher.
    pub async fn open(dir: &Path, config: StorageConfig, faults: Option<Arc<FaultInjector>>) -> StorageResult<Self> {
        config.validate().map_err(StorageError::Config)?;
        let recovery_dir = dir.to_path_buf();
        let recovery_config = config.clone();
        let recovered = run_blocking(move || recover_partition(&recovery_dir, &recovery_config)).await?;
        let offsets_dir = dir.to_path_buf();
        let offsets = run_blocking(move || ConsumerOffsets::open(&offsets_dir, OFFSETS_COMPACT_BYTES))
            .await
            .map_err(|error| StorageError::io("open consumer offsets", dir, error))?;
        log_recovery(dir, &recovered.report, recovered.log_end_offset);
        if let Some(fence) = &recovered.fence {
            tracing::error!(target: "ringlog::storage", path = %fence.path.display(), position = fence.position,
                offset = fence.offset, reason = %fence.reason, "partition fenced: corruption before the tail");
        }
        let active = recovered.segments.last().expect("recovery yields an active segment");
        let active_path = segment_file(dir, active.base_offset, LOG_EXTENSION);
        let file = DirectFile::open_read_write(&active_path, faults.clone())
            .await
            .map_err(|error| StorageError::io("open active segment", &active_path, error))?;
        let writer = SegmentWriter::open(Rc::new(file), active.size_bytes, config.write_buffer_bytes, config.write_buffers_max)
            .await
            .map_err(|error| StorageError::io("open segment writer", &active_path, error))?;
        let durable = DurableMark {
            offset: recovered.log_end_offset,
            position: active.size_bytes,
            last_batch_position: active.last_batch_position,
        };
        let segments = recovered.segments.into_iter().map(|segment| (segment.base_offset, segment)).collect();
        let state = State {
            segments,
            readers: BTreeMap::new(),
            writer,
            log_end_offset: recovered.log_end_offset,
            durable,
            generation: 0,
            rollback_disk_full: false,
            failure: None,
            fence: recovered.fence,
            epochs: recovered.epochs,
            offsets,
            closed: false,
            active_opened_at: Instant::now(),
            unsynced_since: None,
            stats: LogStats::default(),
            recovery: recovered.report,
        };
        let log = PartitionLog {
            inner: Rc::new(Inner {
                dir: dir.to_path_buf(),
                config,
                faults,
                state: RefCell::new(state),
                append_gate: Semaphore::new(1),
                offsets_gate: Semaphore::new(1),
                work: Notify::new(),
                progress: Notify::new(),
                flusher: RefCell::new(None),
                stopping: Cell::new(false),
            }),
        };
        let flusher_log = log.clone();
        let task = crate::runtime::spawn_local(async move { flusher_log.run_flusher().await });
        *log.inner.flusher.borrow_mut() = Some(task);
        Ok(log)
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The settings this log runs with.
    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    /// Offsets, sizes and health right now.
    pub fn snapshot(&self) -> LogSnapshot {
        let state = self.inner.state.borrow();
        LogSnapshot {
            log_start_offset: state.log_start_offset(),
            log_end_offset: state.log_end_offset,
            durable_end_offset: state.durable.offset,
            segments: state.segments.len(),
            size_bytes: state.segments.values().map(|segment| segment.size_bytes).sum(),
            leader_epoch: state.epochs.latest_epoch(),
            failure: state.failure.clone(),
            fence: state.fence.clone(),
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        let state = self.inner.state.borrow();
        LogStats { buffer_allocations: state.writer.allocations(), ..state.stats }
    }

    /// What recovery did when this log was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner.state.borrow().recovery.clone()
    }

    /// The leader-epoch history.
    pub fn epochs(&self) -> EpochHistory {
        self.inner.state.borrow().epochs.clone()
    }

    fn check_writable(&self, state: &State) -> StorageResult<()> {
        if state.closed {
            return Err(StorageError::Closed(self.inner.dir.clone()));
        }
        if let Some(fence) = &state.fence {
            return Err(fence.to_error());
        }
        if let Some(cause) = &state.failure {
            return Err(StorageError::StorageFailed { partition: self.inner.dir.clone(), cause: cause.clone() });
        }
        Ok(())
    }

    /// Append one encoded batch. Resolves when the batch is durable under the
    /// configured policy; the batch's log-assigned header fields are stamped
    /// in place.
    pub async fn append(&self, batch: &mut [u8], mode: AppendMode) -> StorageResult<AppendInfo> {
        let header = validate_batch(batch, self.inner.config.max_batch_bytes)?;
        let permit = self.inner.append_gate.acquire_permit(1).await;
        let _permit = permit.map_err(|_| StorageError::Closed(self.inner.dir.clone()))?;
        self.check_writable(&self.inner.state.borrow())?;
        self.roll_if_needed(batch.len() as u64).await?;
        self.ensure_preallocated(batch.len() as u64).await?;
        let (base_offset, leader_epoch) = self.place(batch, &header, mode)?;
        self.record_epoch(leader_epoch, base_offset).await?;
        self.copy_into_buffers(batch).await?;
        let (info, generation) = self.commit_placement(batch, &header, base_offset);
        drop(_permit);
        self.inner.work.notify_all();
        self.wait_durable(info.next_offset, generation).await?;
        Ok(info)
    }

    /// Choose the batch's offsets and epoch and stamp them.
    fn place(&self, batch: &mut [u8], header: &BatchHeader, mode: AppendMode) -> StorageResult<(u64, u32)> {
        let log_end_offset = self.inner.state.borrow().log_end_offset;
        match mode {
            AppendMode::Leader { leader_epoch } => {
                stamp_batch(batch, log_end_offset, leader_epoch);
                Ok((log_end_offset, leader_epoch))
            }
            AppendMode::Replica if header.base_offset == log_end_offset => Ok((log_end_offset, header.leader_epoch)),
            AppendMode::Replica => Err(StorageError::OffsetOutOfRange {
                offset: header.base_offset,
                log_start_offset: self.inner.state.borrow().log_start_offset(),
                log_end_offset,
            }),
        }
    }

    async fn record_epoch(&self, leader_epoch: u32, base_offset: u64) -> StorageResult<()> {
        let history = {
            let mut state = self.inner.state.borrow_mut();
            let latest = state.epochs.latest_epoch();
            if latest.is_some_and(|latest| leader_epoch < latest) {
                return Err(StorageError::StorageFailed {
                    partition: self.inner.dir.clone(),
                    cause: format!("leader epoch {leader_epoch} is older than the log's epoch {latest:?}"),
                });
            }
            if !state.epochs.assign(leader_epoch, base_offset) {
                return Ok(());
            }
            state.epochs.clone()
        };
        let dir = self.inner.dir.clone();
        run_blocking(move || history.store(&dir))
            .await
            .map_err(|error| StorageError::io("store epoch checkpoint", &self.inner.dir, error))
    }

    /// Copy the batch into staging buffers, waiting for the disk when all are in flight.
    async fn copy_into_buffers(&self, batch: &[u8]) -> StorageResult<()> {
        let mut copied = 0usize;
        loop {
            let notified = self.inner.progress.notified();
            {
                let mut state = self.inner.state.borrow_mut();
                if let Some(cause) = &state.failure {
                    return Err(StorageError::StorageFailed { partition: self.inner.dir.clone(), cause: cause.clone() });
                }
                while copied < batch.len() {
                    copied += state.writer.copy_in(&batch[copied..]);
                    if state.writer.staging_full() && !state.writer.rotate() {
                        break;
                    }
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
    fn commit_placement(&self, batch: &[u8], header: &BatchHeader, base_offset: u64) -> (AppendInfo, u64) {
        let mut state = self.inner.state.borrow_mut();
        let interval = self.inner.config.index_interval_bytes;
        let next_offset = base_offset + u64::from(header.record_count);
        let active = state.active_mut();
        let position = active.size_bytes;
        let relative_offset = (base_offset - active.base_offset) as u32;
        if active.indexes.offsets.is_empty() && active.indexes.times.is_empty() && active.size_bytes == 0 {
            active.indexes = super::index::SegmentIndexes::new(interval);
        }
        active.indexes.on_batch(relative_offset, position as u32, batch.len() as u32, header.max_timestamp_ms);
        active.size_bytes += batch.len() as u64;
        active.next_offset = next_offset;
        active.last_batch_position = Some(position);
        state.log_end_offset = next_offset;
        debug_assert_eq!(state.writer.position(), state.active().size_bytes, "writer and segment disagree");
        (AppendInfo { base_offset, next_offset }, state.generation)
    }

    /// Wait until `target` is durable, or report why it never will be.
    async fn wait_durable(&self, target: u64, generation: u64) -> StorageResult<()> {
        loop {
            let notified = self.inner.progress.notified();
            {
                let state = self.inner.state.borrow();
                if state.generation != generation {
                    if state.rollback_disk_full {
                        return Err(StorageError::DiskFull { path: self.inner.dir.clone() });
                    }
                    return Err(StorageError::StorageFailed {
                        partition: self.inner.dir.clone(),
                        cause: "the log was truncated before this batch became durable".into(),
                    });
                }
                if state.durable.offset >= target {
                    return Ok(());
                }
                if let Some(cause) = &state.failure {
                    return Err(StorageError::StorageFailed { partition: self.inner.dir.clone(), cause: cause.clone() });
                }
            }
            notified.await;
        }
    }

    /// Reserve disk space ahead of the write position; ENOSPC here changes nothing.
    async fn ensure_preallocated(&self, batch_bytes: u64) -> StorageResult<()> {
        let (file, target) = {
            let state = self.inner.state.borrow();
            let needed = state.writer.position() + batch_bytes;
            if needed <= state.writer.preallocated_to() {
                return Ok(());
            }
            let target = preallocation_target(needed + self.inner.config.preallocate_bytes, self.inner.config.preallocate_bytes);
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

    /// Enter fail-stop: remember the first cause, wake every waiter.
    fn fail_stop(&self, operation: &str, path: &Path, error: &std::io::Error) -> StorageError {
        let cause = format!("{operation} {}: {}", path.display(), errno_text(error));
        {
            let mut state = self.inner.state.borrow_mut();
            if state.failure.is_none() {
                tracing::error!(target: "ringlog::storage", %cause, "partition fail-stopped; no further appends are acknowledged");
                state.failure = Some(cause.clone());
            }
        }
        self.inner.progress.notify_all();
        StorageError::StorageFailed { partition: self.inner.dir.clone(), cause }
    }

    /// The flusher: writes rounds, fsyncs per policy, publishes durability.
    async fn run_flusher(&self) {
        loop {
            let notified = self.inner.work.notified();
            if self.inner.stopping.get() {
                return;
            }
            if self.inner.state.borrow().failure.is_some() {
                notified.await;
                continue;
            }
            let has_work = self.inner.state.borrow().writer.has_unwritten();
            if has_work {
                self.flush_round().await;
                continue;
            }
            match self.interval_fsync_due() {
                Some(wait) if wait.is_zero() => self.interval_fsync().await,
                Some(wait) => {
                    futures_lite::future::or(notified, crate::runtime::sleep(wait)).await;
                }
                None => notified.await,
            }
        }
    }

    fn interval_fsync_due(&self) -> Option<Duration> {
        if self.inner.config.fsync != FsyncPolicy::Interval {
            return None;
        }
        let since = self.inner.state.borrow().unsynced_since?;
        let interval = Duration::from_millis(self.inner.config.fsync_interval_ms);
        Some(interval.saturating_sub(since.elapsed()))
    }

    async fn interval_fsync(&self) {
        let file = Rc::clone(self.inner.state.borrow().writer.file());
        match file.fdatasync().await {
            Ok(()) => {
                let mut state = self.inner.state.borrow_mut();
                state.stats.fsyncs += 1;
                state.unsynced_since = None;
            }
            Err(error) => {
                self.fail_stop("fdatasync", file.path(), &error);
            }
        }
    }

    /// One group-commit round: write everything buffered, fsync once, ack all.
    async fn flush_round(&self) {
        let (file, round, mark, generation) = {
            let mut state = self.inner.state.borrow_mut();
            let round = state.writer.take_round();
            let active = state.active();
            let mark = DurableMark {
                offset: state.log_end_offset,
                position: active.size_bytes,
                last_batch_position: active.last_batch_position,
            };
            (Rc::clone(state.writer.file()), round, mark, state.generation)
        };
        let bytes: u64 = round.jobs.iter().map(|job| job.buffer.len() as u64).sum();
        if let Err(error) = write_round(&file, &round).await {
            self.inner.state.borrow_mut().writer.recycle(round);
            if is_disk_full(&error) {
                self.roll_back_after_disk_full(&file, &error).await;
            } else {
                self.fail_stop("write", file.path(), &error);
            }
            return;
        }
        if self.inner.config.fsync == FsyncPolicy::Always {
            if let Err(error) = file.fdatasync().await {
                // fsyncgate: the kernel may have dropped the dirty pages; a
                // retry could "succeed" without the data. Never retry.
                self.inner.state.borrow_mut().writer.recycle(round);
                self.fail_stop("fdatasync", file.path(), &error);
                return;
            }
        }
        self.publish_round(round, mark, generation, bytes);
    }

    fn publish_round(&self, round: super::writer::WriteRound, mark: DurableMark, generation: u64, bytes: u64) {
        let mut state = self.inner.state.borrow_mut();
        state.writer.recycle(round);
        state.stats.write_rounds += 1;
        state.stats.bytes_written += bytes;
        if self.inner.config.fsync == FsyncPolicy::Always {
            state.stats.fsyncs += 1;
        } else if state.unsynced_since.is_none() {
            state.unsynced_since = Some(Instant::now());
        }
        if state.generation == generation && mark.offset >= state.durable.offset {
            state.durable = mark;
            let active = state.active_mut();
            active.written_bytes = active.written_bytes.max(mark.position);
        }
        drop(state);
        self.inner.progress.notify_all();
    }

    /// ENOSPC from a write: forget everything not yet durable (those appends
    /// fail with disk_full), cut the file back so no stale bytes remain past
    /// the durable end, and keep serving.
    async fn roll_back_after_disk_full(&self, file: &Rc<DirectFile>, error: &std::io::Error) {
        let mark = self.inner.state.borrow().durable;
        tracing::warn!(target: "ringlog::storage", path = %file.path().display(), offset = mark.offset,
            "disk full while writing: rolling back unacknowledged appends");
        if let Err(truncate_error) = file.truncate(mark.position).await {
            self.fail_stop("truncate after disk full", file.path(), &truncate_error);
            return;
        }
        if let Err(sync_error) = file.fdatasync().await {
            self.fail_stop("fdatasync after disk full", file.path(), &sync_error);
            return;
        }
        let config = &self.inner.config;
        match SegmentWriter::open(Rc::clone(file), mark.position, config.write_buffer_bytes, config.write_buffers_max).await {
            Ok(writer) => {
                let mut state = self.inner.state.borrow_mut();
                state.writer = writer;
                reset_active_to(&mut state, mark);
                state.generation += 1;
                state.rollback_disk_full = true;
            }
            Err(open_error) => {
                self.fail_stop("reopen writer after disk full", file.path(), &open_error);
                let _ = error;
            }
        }
        self.inner.progress.notify_all();
    }

    /// Wait until everything appended so far is written (and fsynced under `always`).
    async fn drain(&self) -> StorageResult<()> {
        loop {
            let notified = self.inner.progress.notified();
            {
                let state = self.inner.state.borrow();
                if let Some(cause) = &state.failure {
                    return Err(StorageError::StorageFailed { partition: self.inner.dir.clone(), cause: cause.clone() });
                }
                if state.durable.offset == state.log_end_offset && !state.writer.has_unwritten() {
                    return Ok(());
                }
            }
            self.inner.work.notify_all();
            notified.await;
        }
    }

    /// Roll when the active segment is full or old enough (caller holds the append gate).
    async fn roll_if_needed(&self, batch_bytes: u64) -> StorageResult<()> {
        let needs_roll = {
            let state = self.inner.state.borrow();
            let active = state.active();
            let config = &self.inner.config;
            let too_big = active.size_bytes + batch_bytes > config.segment_bytes;
            let too_old = config.segment_ms > 0
                && state.active_opened_at.elapsed() >= Duration::from_millis(config.segment_ms);
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
        let indexes_bytes = {
            let mut state = self.inner.state.borrow_mut();
            let active = state.active_mut();
            active.indexes.finalize();
            (active.indexes.offsets.as_bytes().to_vec(), active.indexes.times.as_bytes().to_vec())
        };
        let dir = self.inner.dir.clone();
        let new_path = segment_file(&dir, new_base, LOG_EXTENSION);
        run_blocking(move || seal_metadata(&dir, base, new_base, indexes_bytes))
            .await
            .map_err(|error| self.fail_stop("seal segment", &new_path, &error))?;
        let new_file = DirectFile::open_read_write(&new_path, self.inner.faults.clone())
            .await
            .map_err(|error| self.fail_stop("create segment", &new_path, &error))?;
        let config = &self.inner.config;
        let writer = SegmentWriter::open(Rc::new(new_file), 0, config.write_buffer_bytes, config.write_buffers_max)
            .await
            .map_err(|error| self.fail_stop("open segment writer", &new_path, &error))?;
        let mut state = self.inner.state.borrow_mut();
        let old_writer = std::mem::replace(&mut state.writer, writer);
        state.readers.insert(base, Rc::clone(old_writer.file()));
        state.active_mut().sealed = true;
        let mut segment = empty_segment(new_base);
        segment.indexes = super::index::SegmentIndexes::new(config.index_interval_bytes);
        state.segments.insert(new_base, segment);
        state.durable = DurableMark { offset: new_base, position: 0, last_batch_position: None };
        state.active_opened_at = Instant::now();
        state.unsynced_since = None;
        tracing::debug!(target: "ringlog::storage", dir = %self.inner.dir.display(), base, new_base, "segment rolled");
        Ok(())
    }

    /// fdatasync, then cut preallocated space so the file is exactly its log.
    async fn seal_file(&self, file: &Rc<DirectFile>, size_bytes: u64) -> StorageResult<()> {
        file.fdatasync().await.map_err(|error| self.fail_stop("fdatasync", file.path(), &error))?;
        file.truncate(size_bytes).await.map_err(|error| self.fail_stop("truncate", file.path(), &error))?;
        file.fdatasync().await.map_err(|error| self.fail_stop("fdatasync", file.path(), &error))?;
        self.inner.state.borrow_mut().stats.fsyncs += 2;
        Ok(())
    }

    /// Read whole batches starting with the one holding `offset`, up to about
    /// `max_bytes` (at least one batch) and below `max_offset` (defaults to
    /// the durable end). Every batch's CRC is verified before it is returned.
    pub async fn read(&self, offset: u64, max_bytes: usize, max_offset: Option<u64>) -> StorageResult<ReadBatches> {
        let mut offset = offset;
        loop {
            let location = self.locate(offset, max_offset)?;
            let Some(location) = location else {
                return Ok(ReadBatches { bytes: Vec::new(), next_offset: offset, batch_count: 0 });
            };
            let result = self.read_segment(&location, offset, max_bytes).await?;
            if result.batch_count > 0 || location.segment_next_offset >= location.limit_offset {
                return Ok(result);
            }
            // The offset is at the end of a sealed segment: continue in the next one.
            offset = location.segment_next_offset;
        }
    }

    fn locate(&self, offset: u64, max_offset: Option<u64>) -> StorageResult<Option<ReadLocation>> {
        let state = self.inner.state.borrow();
        let log_start_offset = state.log_start_offset();
        let limit_offset = max_offset.unwrap_or(state.durable.offset).min(state.durable.offset);
        if offset < log_start_offset || offset > state.log_end_offset {
            return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset: state.log_end_offset });
        }
        if offset >= limit_offset {
            return Ok(None);
        }
        let active_base = state.active().base_offset;
        let (&base, segment) = state.segments.range(..=offset).next_back().expect("offset is inside the log");
        let is_active = base == active_base;
        let reader = if is_active { Some(Rc::clone(state.writer.file())) } else { state.readers.get(&base).cloned() };
        let relative = (offset - base).min(u64::from(u32::MAX)) as u32;
        let start_position = segment.indexes.offsets.floor(relative).map_or(0, |(_, position)| u64::from(position));
        Ok(Some(ReadLocation {
            path: segment_file(&self.inner.dir, base, LOG_EXTENSION),
            reader,
            base_offset: base,
            start_position,
            end_position: if is_active { state.durable.position } else { segment.written_bytes },
            segment_next_offset: segment.next_offset,
            limit_offset,
        }))
    }

    async fn reader_for(&self, location: &ReadLocation) -> StorageResult<Rc<DirectFile>> {
        if let Some(reader) = &location.reader {
            return Ok(Rc::clone(reader));
        }
        let file = DirectFile::open_read_only(&location.path)
            .await
            .map_err(|error| StorageError::io("open segment for read", &location.path, error))?;
        let file = Rc::new(file);
        let mut state = self.inner.state.borrow_mut();
        if state.segments.contains_key(&location.base_offset) {
            state.readers.insert(location.base_offset, Rc::clone(&file));
        }
        Ok(file)
    }

    async fn read_segment(&self, location: &ReadLocation, offset: u64, max_bytes: usize) -> StorageResult<ReadBatches> {
        let file = self.reader_for(location).await?;
        let mut position = location.start_position;
        let mut output = ReadBatches { bytes: Vec::new(), next_offset: offset, batch_count: 0 };
        let max_batch_bytes = self.inner.config.max_batch_bytes;
        while position < location.end_position {
            let want = (location.end_position - position).min(max_bytes.max(READ_CHUNK_BYTES) as u64) as usize;
            let chunk = file.read_at(position, want).await.map_err(|error| StorageError::io("read segment", &location.path, error))?;
            let mut cursor = 0usize;
            while cursor < chunk.len() {
                let rest = &chunk[cursor..];
                if rest.len() < BATCH_HEADER_BYTES {
                    break;
                }
                let header = BatchHeader::parse(rest).map_err(StorageError::InvalidBatch)?;
                let length = header.batch_bytes as usize;
                if length > rest.len() && length <= max_batch_bytes && cursor > 0 {
                    break;
                }
                if length > rest.len() && length <= max_batch_bytes {
                    // First batch larger than the chunk: read exactly it.
                    let whole = file.read_at(position, length).await.map_err(|error| StorageError::io("read segment", &location.path, error))?;
                    return self.accept_batches(&whole, location, position, offset, max_bytes, output);
                }
                let verified = verify_batch(rest, max_batch_bytes)
                    .map_err(|error| self.report_corruption(location, position + cursor as u64, error.to_string()))?;
                if verified.base_offset >= location.limit_offset {
                    return Ok(output);
                }
                if verified.next_offset() > offset {
                    if output.batch_count > 0 && output.bytes.len() + length > max_bytes {
                        return Ok(output);
                    }
                    output.bytes.extend_from_slice(&rest[..length]);
                    output.next_offset = verified.next_offset();
                    output.batch_count += 1;
                }
                cursor += length;
            }
            if cursor == 0 {
                break;
            }
            position += cursor as u64;
            if output.bytes.len() >= max_bytes {
                break;
            }
        }
        Ok(output)
    }

    fn accept_batches(
        &self,
        bytes: &[u8],
        location: &ReadLocation,
        position: u64,
        offset: u64,
        max_bytes: usize,
        mut output: ReadBatches,
    ) -> StorageResult<ReadBatches> {
        let header = verify_batch(bytes, self.inner.config.max_batch_bytes)
            .map_err(|error| self.report_corruption(location, position, error.to_string()))?;
        if header.base_offset < location.limit_offset && header.next_offset() > offset && (output.batch_count == 0 || output.bytes.len() + bytes.len() <= max_bytes) {
            output.bytes.extend_from_slice(&bytes[..header.batch_bytes as usize]);
            output.next_offset = header.next_offset();
            output.batch_count += 1;
        }
        Ok(output)
    }

    /// A batch that should be valid failed its check: fence the partition.
    fn report_corruption(&self, location: &ReadLocation, position: u64, reason: String) -> StorageError {
        let report = FenceReport { path: location.path.clone(), position, offset: location.base_offset, reason };
        tracing::error!(target: "ringlog::storage", path = %report.path.display(), position, reason = %report.reason,
            "corrupted batch found by a read; partition fenced");
        let error = report.to_error();
        let mut state = self.inner.state.borrow_mut();
        if state.fence.is_none() {
            state.fence = Some(report);
        }
        error
    }

    /// First offset whose record timestamp is >= `timestamp_ms`, or None when
    /// no such record is below the durable end.
    pub async fn find_offset_by_timestamp(&self, timestamp_ms: i64) -> StorageResult<Option<u64>> {
        let Some(start) = self.timestamp_scan_start(timestamp_ms) else { return Ok(None) };
        let mut offset = start;
        loop {
            let batches = self.read(offset, 1 << 20, None).await?;
            if batches.batch_count == 0 {
                return Ok(None);
            }
            for item in super::batch::BatchIter::new(&batches.bytes, self.inner.config.max_batch_bytes) {
                let (header, batch) = item.map_err(StorageError::InvalidBatch)?;
                if header.max_timestamp_ms < timestamp_ms {
                    continue;
                }
                let records = super::batch::RecordIter::new(&batch[BATCH_HEADER_BYTES..]);
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
        let segment = state.segments.values().find(|segment| segment.max_timestamp_ms().is_some_and(|max| max >= timestamp_ms))?;
        let relative = segment.indexes.times.scan_start(timestamp_ms).unwrap_or(0);
        Some(segment.base_offset + u64::from(relative))
    }

    /// Remove every record at or after `offset` (replication divergence).
    /// When `offset` falls inside a batch the whole batch goes; returns the new log end.
    pub async fn truncate_to(&self, offset: u64) -> StorageResult<u64> {
        let permit = self.inner.append_gate.acquire_permit(1).await;
        let _permit = permit.map_err(|_| StorageError::Closed(self.inner.dir.clone()))?;
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
        self.apply_truncation(cut).await?;
        Ok(cut.offset)
    }

    /// Position and offset of the batch that holds `offset`.
    async fn find_batch_start(&self, offset: u64) -> StorageResult<DurableMark> {
        let location = self.locate(offset, Some(u64::MAX))?.expect("offset below the log end");
        let file = self.reader_for(&location).await?;
        let mut position = location.start_position;
        let mut last_batch_position = None;
        let mut batch_offset = location.base_offset;
        while position < location.end_position {
            let header_bytes = file
                .read_at(position, BATCH_HEADER_BYTES)
                .await
                .map_err(|error| StorageError::io("read segment", &location.path, error))?;
            let header = BatchHeader::parse(&header_bytes).map_err(StorageError::InvalidBatch)?;
            if header.next_offset() > offset {
                return Ok(DurableMark { offset: header.base_offset, position, last_batch_position });
            }
            last_batch_position = Some(position);
            batch_offset = header.next_offset();
            position += u64::from(header.batch_bytes);
        }
        Ok(DurableMark { offset: batch_offset, position, last_batch_position })
    }

    async fn apply_truncation(&self, cut: DurableMark) -> StorageResult<()> {
        let dir = self.inner.dir.clone();
        let (removed, keep_base) = {
            let state = self.inner.state.borrow();
            let keep_base = *state.segments.range(..=cut.offset).next_back().expect("cut inside the log").0;
            let removed: Vec<u64> = state.segments.range(keep_base + 1..).map(|(&base, _)| base).collect();
            (removed, keep_base)
        };
        let keep_path = segment_file(&dir, keep_base, LOG_EXTENSION);
        let file = match removed.is_empty() {
            true => Rc::clone(self.inner.state.borrow().writer.file()),
            false => Rc::new(
                DirectFile::open_read_write(&keep_path, self.inner.faults.clone())
                    .await
                    .map_err(|error| self.fail_stop("reopen segment", &keep_path, &error))?,
            ),
        };
        file.truncate(cut.position).await.map_err(|error| self.fail_stop("truncate", &keep_path, &error))?;
        file.fdatasync().await.map_err(|error| self.fail_stop("fdatasync", &keep_path, &error))?;
        let config = &self.inner.config;
        let writer = SegmentWriter::open(Rc::clone(&file), cut.position, config.write_buffer_bytes, config.write_buffers_max)
            .await
            .map_err(|error| self.fail_stop("open segment writer", &keep_path, &error))?;
        let epochs = {
            let mut state = self.inner.state.borrow_mut();
            for base in &removed {
                state.segments.remove(base);
                state.readers.remove(base);
            }
            state.readers.remove(&keep_base);
            state.writer = writer;
            let active = state.active_mut();
            active.sealed = false;
            active.indexes.make_writable();
            reset_active_to(&mut state, cut);
            state.generation += 1;
            state.rollback_disk_full = false;
            state.epochs.truncate_from_end(cut.offset);
            state.epochs.clone()
        };
        let removed_dir = dir.clone();
        run_blocking(move || -> std::io::Result<()> {
            for base in removed {
                remove_segment_files(&removed_dir, base)?;
            }
            let recovery_point = super::markers::load_recovery_point(&removed_dir)?;
            if recovery_point > keep_base {
                store_recovery_point(&removed_dir, keep_base)?;
            }
            for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
                let path = segment_file(&removed_dir, keep_base, extension);
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
            }
            epochs.store(&removed_dir)?;
            super::io::sync_directory(&removed_dir)
        })
        .await
        .map_err(|error| self.fail_stop("truncate metadata", &dir, &error))?;
        self.inner.progress.notify_all();
        tracing::info!(target: "ringlog::storage", dir = %dir.display(), offset = cut.offset, "log truncated");
        Ok(())
    }

    /// Delete sealed segments past the retention limits; returns their base offsets.
    pub async fn apply_retention(&self, policy: RetentionPolicy, now_ms: i64) -> StorageResult<Vec<u64>> {
        let (expired, epochs) = {
            let mut state = self.inner.state.borrow_mut();
            let sealed: Vec<(u64, u64, Option<i64>)> = state
                .segments
                .values()
                .filter(|segment| segment.sealed)
                .map(|segment| (segment.base_offset, segment.size_bytes, segment.max_timestamp_ms()))
                .collect();
            let total_bytes = state.segments.values().map(|segment| segment.size_bytes).sum();
            let expired = select_expired(&sealed, total_bytes, policy, now_ms);
            for base in &expired {
                state.segments.remove(base);
                state.readers.remove(base);
            }
            let log_start_offset = state.log_start_offset();
            state.epochs.truncate_from_start(log_start_offset);
            (expired, state.epochs.clone())
        };
        if expired.is_empty() {
            return Ok(expired);
        }
        let dir = self.inner.dir.clone();
        let removed = expired.clone();
        run_blocking(move || -> std::io::Result<()> {
            for base in removed {
                remove_segment_files(&dir, base)?;
            }
            epochs.store(&dir)?;
            super::io::sync_directory(&dir)
        })
        .await
        .map_err(|error| StorageError::io("delete expired segments", &self.inner.dir, error))?;
        tracing::info!(target: "ringlog::storage", dir = %self.inner.dir.display(), segments = expired.len(), "retention deleted segments");
        Ok(expired)
    }

    /// Durably commit `offset` for consumer `group`.
    pub async fn commit_offset(&self, group: &str, offset: u64) -> StorageResult<()> {
        let permit = self.inner.offsets_gate.acquire_permit(1).await;
        let _permit = permit.map_err(|_| StorageError::Closed(self.inner.dir.clone()))?;
        let committed = CommittedOffset { offset, commit_ms: now_ms() };
        let job = self.inner.state.borrow_mut().offsets.begin_commit(group, committed).map_err(StorageError::Config)?;
        let outcome = run_blocking(move || job.run()).await;
        self.inner
            .state
            .borrow_mut()
            .offsets
            .finish_commit(group, committed, outcome)
            .map_err(|error| StorageError::io("commit consumer offset", &self.inner.dir, error))
    }

    /// Where consumer `group` resumes, checked against the current log bounds.
    pub fn committed_offset(&self, group: &str) -> OffsetLookup {
        let state = self.inner.state.borrow();
        state.offsets.lookup(group, state.log_start_offset(), state.log_end_offset)
    }

    /// Flush, fsync, write index files and the clean-shutdown marker, stop the flusher.
    pub async fn close(&self) -> StorageResult<()> {
        let permit = self.inner.append_gate.acquire_permit(1).await;
        let _permit = permit.map_err(|_| StorageError::Closed(self.inner.dir.clone()))?;
        let drained = self.drain().await;
        self.inner.state.borrow_mut().closed = true;
        self.stop_flusher().await;
        drained?;
        if self.inner.state.borrow().fence.is_some() {
            return Ok(());
        }
        let (file, marker, base, indexes_bytes) = {
            let mut state = self.inner.state.borrow_mut();
            let active = state.active_mut();
            active.indexes.finalize();
            let marker = CleanShutdown {
                active_base_offset: active.base_offset,
                active_size_bytes: active.size_bytes,
                last_batch_position: active.last_batch_position.unwrap_or(u64::MAX),
            };
            let indexes = (active.indexes.offsets.as_bytes().to_vec(), active.indexes.times.as_bytes().to_vec());
            let base = active.base_offset;
            (Rc::clone(state.writer.file()), marker, base, indexes)
        };
        file.fdatasync().await.map_err(|error| self.fail_stop("fdatasync", file.path(), &error))?;
        let dir = self.inner.dir.clone();
        run_blocking(move || -> std::io::Result<()> {
            super::io::write_file_atomically(&segment_file(&dir, base, INDEX_EXTENSION), &indexes_bytes.0)?;
            super::io::write_file_atomically(&segment_file(&dir, base, TIME_INDEX_EXTENSION), &indexes_bytes.1)?;
            store_clean_shutdown(&dir, &marker)
        })
        .await
        .map_err(|error| StorageError::io("write clean-shutdown marker", &self.inner.dir, error))?;
        tracing::debug!(target: "ringlog::storage", dir = %self.inner.dir.display(), "partition closed cleanly");
        Ok(())
    }

    async fn stop_flusher(&self) {
        self.inner.stopping.set(true);
        self.inner.work.notify_all();
        let task = self.inner.flusher.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
    }

    /// Stop the flusher without a clean-shutdown marker (tests simulating a crash).
    pub async fn abandon(&self) {
        self.inner.state.borrow_mut().closed = true;
        self.stop_flusher().await;
    }
}

/// Where a read goes.
struct ReadLocation {
    path: PathBuf,
    reader: Option<Rc<DirectFile>>,
    base_offset: u64,
    start_position: u64,
    end_position: u64,
    segment_next_offset: u64,
    limit_offset: u64,
}

/// Make the active segment end at `mark` (after rollback or truncation).
fn reset_active_to(state: &mut State, mark: DurableMark) {
    let active = state.active_mut();
    let relative = (mark.offset - active.base_offset) as u32;
    active.indexes.truncate(relative, mark.position);
    active.size_bytes = mark.position;
    active.written_bytes = mark.position;
    active.next_offset = mark.offset;
    active.last_batch_position = mark.last_batch_position;
    state.log_end_offset = mark.offset;
    state.durable = mark;
}

/// Index files of the sealed segment, directory entry of the new one, recovery point.
fn seal_metadata(dir: &Path, base: u64, new_base: u64, indexes: (Vec<u8>, Vec<u8>)) -> std::io::Result<()> {
    super::io::write_file_atomically(&segment_file(dir, base, INDEX_EXTENSION), &indexes.0)?;
    super::io::write_file_atomically(&segment_file(dir, base, TIME_INDEX_EXTENSION), &indexes.1)?;
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(segment_file(dir, new_base, LOG_EXTENSION))?;
    super::io::sync_directory(dir)?;
    store_recovery_point(dir, new_base)
}

fn remove_segment_files(dir: &Path, base: u64) -> std::io::Result<()> {
    for extension in [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
        match std::fs::remove_file(segment_file(dir, base, extension)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn log_recovery(dir: &Path, report: &RecoveryReport, log_end_offset: u64) {
    tracing::info!(
        target: "ringlog::storage",
        dir = %dir.display(),
        clean = report.clean,
        scanned_segments = report.scanned_segments,
        scanned_bytes = report.scanned_bytes,
        truncated_bytes = report.truncated_bytes,
        rebuilt_indexes = report.rebuilt_indexes,
        log_end_offset,
        "partition recovered"
    );
}
