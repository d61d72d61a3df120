//! The partition log: append with group commit, verified reads, timestamp
//! lookup, truncation, rolling, retention, consumer offsets and a clean
//! close. This file holds the state and opening; the operations live in the
//! sibling files (`append`, `flusher`, `read`, `read_ahead`, `roll`,
//! `truncate`, `offsets`). Owned by one executor thread: state lives in a
//! `RefCell` that is never borrowed across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::batch::{
    stamp_batch, validate_batch, verify_batch, BatchError, BatchHeader, BuiltBatch, BATCH_HEADER_BYTES,
    FORMAT_MAX_BATCH_BYTES,
};
use crate::storage::config::{FsyncPolicy, StorageConfig};
use crate::storage::epochs::EpochHistory;
use crate::storage::error::{is_disk_full, StorageError, StorageResult};
use crate::storage::io::{DirectFile, FaultInjector};
use crate::storage::markers::{store_clean_shutdown, store_recovery_point, CleanShutdown};
use crate::storage::offsets::{CommitError, CommittedOffset, ConsumerOffsets, OffsetLookup};
use crate::storage::producers::{ProducerStates, SequenceCheck};
use crate::storage::recovery::{
    empty_segment, rebuild_producer_states, recover_partition, FenceReport, RecoveredPartition, RecoveryReport,
    SegmentExtent,
};
use crate::storage::retention::{select_expired, RetentionPolicy};
use crate::storage::segment::{
    segment_file, Segment, INDEX_EXTENSION, LOG_EXTENSION, RECYCLED_EXTENSION, TIME_INDEX_EXTENSION,
};
use crate::storage::writer::{preallocation_target, SegmentWriter};
mod append;
mod flusher;
mod offsets;
mod read;
mod read_ahead;
mod roll;
mod truncate;

pub use read_ahead::reserved_read_ahead_bytes;

use crate::runtime::{run_blocking, Gate, Notify, Task};

/// Bytes read ahead when a fetch starts (the first batch may need more).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Consumer offsets file is compacted past this size.
const OFFSETS_COMPACT_BYTES: u64 = 1 << 20;

/// The offsets an append assigned: records `base_offset..next_offset`.
/// Says nothing about durability; [`Placed`] and [`Durable`] do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedOffsets {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset after the last record.
    pub next_offset: u64,
    /// True when the batch was a retry of one already in the log (idempotent
    /// produce): nothing was written and the original offsets are returned.
    pub duplicate: bool,
}

/// A batch that has its offsets and sits in the partition's write buffers
/// (`acks=none`, a follower's copy): the log end covers it, but it is NOT
/// durable. A crash, a write error or a disk-full rollback may still lose
/// it, and consumers do not see it until the durable end passes it. In
/// Redpanda's terms its offsets are *dirty*. (A duplicate retry is answered
/// only once the original is durable.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a placed batch is not durable: say why nothing waits for it"]
pub struct Placed {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset after the last record.
    pub next_offset: u64,
    /// The batch was a retry of one already in the log (nothing written).
    pub duplicate: bool,
    /// The log generation it was placed under (private: only the append
    /// path makes a `Placed`).
    generation: u64,
}

/// A batch that is durable under the partition's fsync policy: the durable
/// end has passed `next_offset`. Under `fsync = always` the records were
/// fdatasync'd (Redpanda's *stable*: they survive a power loss); under
/// `interval` and `never` they reached the file and survive a process
/// crash, and a power loss may lose up to the policy's window. Only an
/// append that waited for the durable end returns one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a durable append result carries the offsets to acknowledge"]
pub struct Durable {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset after the last record.
    pub next_offset: u64,
    /// The batch was a retry of one already in the log (nothing written).
    pub duplicate: bool,
    /// The log generation when durability was confirmed (private: only the
    /// durability wait makes a `Durable`).
    generation: u64,
}

impl Placed {
    fn new(offsets: AppendedOffsets, generation: u64) -> Self {
        let AppendedOffsets { base_offset, next_offset, duplicate } = offsets;
        assert!(base_offset <= next_offset, "a placed batch spans {base_offset}..{next_offset}");
        Placed { base_offset, next_offset, duplicate, generation }
    }

    /// The log generation the batch was placed under: should the log's
    /// [`PartitionLog::generation`] move before the batch is durable, the
    /// batch may be gone.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The offsets, with the knowledge that they are not durable dropped.
    pub fn offsets(self) -> AppendedOffsets {
        AppendedOffsets { base_offset: self.base_offset, next_offset: self.next_offset, duplicate: self.duplicate }
    }
}

impl Durable {
    /// The log generation when durability was confirmed: while
    /// [`PartitionLog::generation`] still equals it, the records are in the log.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The offsets, with the knowledge that they are durable dropped.
    pub fn offsets(self) -> AppendedOffsets {
        AppendedOffsets { base_offset: self.base_offset, next_offset: self.next_offset, duplicate: self.duplicate }
    }
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
    /// Bytes read from segment files by reads (tail-cache hits read none).
    pub segment_read_bytes: u64,
    /// Reads answered by a read-ahead started by the read before.
    pub read_ahead_hits: u64,
    /// Rolls that wrote into a segment file retention kept (recycled)
    /// instead of a new one.
    pub recycled_segments_reused: u64,
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

/// The partition's state, in three parts: the segments and what serves
/// appends and reads (here), what is durable ([`Durability`]) and what
/// refuses or redirects operations ([`Health`]).
struct State {
    segments: BTreeMap<u64, Segment>,
    readers: BTreeMap<u64, Rc<DirectFile>>,
    writer: SegmentWriter,
    /// Next offset to assign: placed batches are below it, durable or not.
    log_end_offset: u64,
    durability: Durability,
    health: Health,
    epochs: EpochHistory,
    producers: ProducerStates,
    offsets: ConsumerOffsets,
    active_opened_at: Instant,
    stats: LogStats,
    recovery: RecoveryReport,
    tail: crate::storage::tail_cache::TailCache,
    /// Segments retention dropped from `segments` whose files a failed
    /// removal may have left on disk: the next retention pass removes them
    /// again (a leak until the next restart otherwise). All lie below the
    /// log start, so no new segment can take their base.
    unremoved_segments: Vec<u64>,
    /// Segment files retention kept, zeroed and synced, that the next rolls
    /// write into (at most `max_recycled_segments`). Under names no
    /// segment has (`<base>.free`), so nothing reads them.
    recycled: Vec<PathBuf>,
    /// The file system answered `EOPNOTSUPP` to zeroing: retention frees
    /// every file.
    zeroing_unsupported: bool,
}

/// What is durable, what the device has accepted, and whether offsets read
/// earlier still describe the log (Redpanda's stable/committed offsets).
/// Only the flusher moves the marks forward; only a rollback or truncation
/// moves them back, and that starts a new generation.
struct Durability {
    /// End of what is durable under the policy, with where it lies in the
    /// active segment: appends wait for it, consumers read below it.
    mark: DurableMark,
    /// (log end, generation) of the last write that completed: on the
    /// device, maybe not yet fdatasync'd. Stale once the generation moved.
    written: (u64, u64),
    generation: u64,
    /// For the last few generation changes: (generation before it, offset
    /// below which it kept every record). A waiter whose batch lies below
    /// every floor since its own generation was durable and survived.
    generation_floors: VecDeque<(u64, u64)>,
    /// Since when written bytes wait for the interval fdatasync.
    unsynced_since: Option<Instant>,
}

/// Fault latches and the transient states that refuse or redirect
/// operations: every append, drain and wait checks them.
struct Health {
    /// Fail-stop cause: the first write or fdatasync error (never cleared).
    failure: Option<String>,
    /// Corruption before the tail: the partition refuses reads and writes.
    fence: Option<FenceReport>,
    closed: bool,
    /// The last generation change was a disk-full rollback (waiters it
    /// cut off answer disk_full rather than a failure).
    rollback_disk_full: bool,
    /// A disk-full rollback is waiting for, or holds, the append gate:
    /// appends and drains refuse at once so the gate comes free.
    rolling_back: bool,
    /// A truncation is between forgetting later segments and installing
    /// the cut segment's writer: reads answer empty instead of reading a
    /// map and a writer that disagree.
    truncating: bool,
}

/// Generation changes remembered for waiters (bounded).
const GENERATION_FLOORS: usize = 16;

impl Durability {
    fn recovered(mark: DurableMark) -> Self {
        Durability {
            mark,
            written: (0, 0),
            generation: 0,
            generation_floors: VecDeque::with_capacity(GENERATION_FLOORS),
            unsynced_since: None,
        }
    }

    /// Start a new generation that keeps every record below `floor_offset`.
    fn new_generation(&mut self, floor_offset: u64) {
        if self.generation_floors.len() == GENERATION_FLOORS {
            self.generation_floors.pop_front();
        }
        self.generation_floors.push_back((self.generation, floor_offset));
        self.generation += 1;
    }

    /// Whether every generation change since `generation` kept `offset`
    /// (None when that is too long ago to know).
    fn kept_since(&self, generation: u64, offset: u64) -> Option<bool> {
        let oldest = self.generation_floors.front()?.0;
        if generation < oldest {
            return None;
        }
        let floors = self.generation_floors.iter().filter(|(before, _)| *before >= generation);
        Some(floors.map(|(_, floor)| *floor).min().is_none_or(|floor| offset <= floor))
    }

    /// End of what the device has accepted: at or past the durable end.
    fn written_offset(&self) -> u64 {
        let (offset, generation) = self.written;
        if generation == self.generation {
            offset.max(self.mark.offset)
        } else {
            self.mark.offset
        }
    }
}

impl Health {
    fn recovered(fence: Option<FenceReport>) -> Self {
        Health {
            failure: None,
            fence,
            closed: false,
            rollback_disk_full: false,
            rolling_back: false,
            truncating: false,
        }
    }
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
    append_gate: Gate,
    /// Held while segment files are deleted or the epoch checkpoint is
    /// written: retention keeps only this one (not the append gate) while
    /// it unlinks a segment and syncs the directory, so appends go on
    /// meanwhile. Order: append gate, then files gate, then offsets gate;
    /// nobody holding it waits for the append gate.
    files_gate: Gate,
    offsets_gate: Gate,
    work: Notify,
    progress: Notify,
    flusher: RefCell<Option<Task<()>>>,
    fence_store: RefCell<Option<Task<()>>>,
    stopping: Cell<bool>,
    read_ahead: RefCell<VecDeque<read_ahead::ReadAhead>>,
    /// When a reader last took a read of the chain: a chain in use is
    /// never stale, however long ago its front read started.
    read_ahead_taken_at: Cell<Option<Instant>>,
    /// Changes running to their end in tasks of their own
    /// ([`PartitionLog::run_detached`]), and their endings.
    detached_changes: Cell<usize>,
    detached_settled: Notify,
}

/// One partition's log. Cheap to clone; all clones share the partition.
#[derive(Clone)]
pub struct PartitionLog {
    inner: Rc<Inner>,
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
        let (recovered, offsets) = recover(dir, &config).await?;
        let state = open_state(dir, &config, faults.clone(), recovered, offsets).await?;
        let log = PartitionLog {
            inner: Rc::new(Inner {
                dir: dir.to_path_buf(),
                config,
                faults,
                state: RefCell::new(state),
                append_gate: Gate::new(),
                files_gate: Gate::new(),
                offsets_gate: Gate::new(),
                work: Notify::new(),
                progress: Notify::new(),
                flusher: RefCell::new(None),
                fence_store: RefCell::new(None),
                stopping: Cell::new(false),
                read_ahead: RefCell::new(VecDeque::new()),
                read_ahead_taken_at: Cell::new(None),
                detached_changes: Cell::new(0),
                detached_settled: Notify::new(),
            }),
        };
        if log.inner.state.borrow().health.fence.is_none() {
            // Before anything is appended: a commit beyond the recovered end
            // must be latched while it is still beyond it (SPEC §2). Before
            // the flusher starts, so a failure here leaves no task behind.
            log.latch_stale_commits().await?;
        }
        let flusher_log = log.clone();
        let task = crate::runtime::spawn_local(async move { flusher_log.run_flusher().await });
        *log.inner.flusher.borrow_mut() = Some(task);
        Ok(log)
    }

    /// Run `change` (a truncation, a reset, a replica's append) to its end
    /// in a task of its own, whatever its caller does
    /// ([`crate::runtime::run_to_completion`]), counted until it ends so a
    /// new caller can wait for it ([`PartitionLog::detached_changes_settled`]).
    async fn run_detached<T: 'static>(
        &self,
        change: impl std::future::Future<Output = StorageResult<T>> + 'static,
    ) -> StorageResult<T> {
        struct Counted(Rc<Inner>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.detached_changes.set(self.0.detached_changes.get() - 1);
                self.0.detached_settled.notify_all();
            }
        }
        self.inner.detached_changes.set(self.inner.detached_changes.get() + 1);
        let counted = Counted(Rc::clone(&self.inner));
        let ended = crate::runtime::run_to_completion(async move {
            let _counted = counted;
            change.await
        });
        ended.await.unwrap_or_else(|| Err(StorageError::Closed(self.inner.dir.clone())))
    }

    /// Wait until no change started by an earlier caller is still running:
    /// a follower's new session checks divergence only after the appends,
    /// truncations and resets its ended session left running have landed
    /// (landing after the check, an append from the old leader extended
    /// the log past what the check agreed on).
    pub async fn detached_changes_settled(&self) {
        loop {
            let settled = self.inner.detached_settled.notified();
            if self.inner.detached_changes.get() == 0 {
                return;
            }
            settled.await;
        }
    }

    /// A closure for blocking metadata writes that returns the injected
    /// fault, if one is due (tests); always Ok in production.
    fn metadata_fault(&self) -> impl Fn() -> std::io::Result<()> + Send + 'static {
        let faults = self.inner.faults.clone();
        move || faults.as_ref().map_or(Ok(()), |faults| faults.check(crate::storage::io::FaultOperation::Metadata))
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
            durable_end_offset: state.durability.mark.offset,
            segments: state.segments.len(),
            size_bytes: state.segments.values().map(|segment| segment.size_bytes).sum(),
            leader_epoch: state.epochs.latest_epoch(),
            failure: state.health.failure.clone(),
            fence: state.health.fence.clone(),
        }
    }

    /// End of what the device has accepted (at or past the durable end):
    /// what a follower may copy (replication long polls watch it).
    pub fn written_end_offset(&self) -> u64 {
        self.inner.state.borrow().durability.written_offset()
    }

    /// Changes whenever records that were in the log may have been removed
    /// (truncation, reset, disk-full rollback): what was read before under
    /// another generation may no longer be the log's content.
    pub fn generation(&self) -> u64 {
        self.inner.state.borrow().durability.generation
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

    /// Whether the log was closed (its topic deleted, or the node
    /// stopping): it serves and takes nothing more, and its waits return
    /// at once.
    pub fn is_closed(&self) -> bool {
        self.inner.state.borrow().health.closed
    }

    /// Refuse work on a closed log (see `read`).
    fn check_open(&self) -> StorageResult<()> {
        match self.inner.state.borrow().health.closed {
            true => Err(StorageError::Closed(self.inner.dir.clone())),
            false => Ok(()),
        }
    }

    fn check_writable(&self, state: &State) -> StorageResult<()> {
        if state.health.closed {
            return Err(StorageError::Closed(self.inner.dir.clone()));
        }
        if state.health.rolling_back {
            return Err(StorageError::DiskFull { path: self.inner.dir.clone() });
        }
        if let Some(fence) = &state.health.fence {
            return Err(fence.to_error());
        }
        if let Some(cause) = &state.health.failure {
            return Err(StorageError::StorageFailed { partition: self.inner.dir.clone(), cause: cause.clone() });
        }
        Ok(())
    }

    /// Enter fail-stop: remember the first cause, wake every waiter.
    fn fail_stop(&self, operation: &str, path: &Path, error: &std::io::Error) -> StorageError {
        let cause = format!("{operation} {}: {}", path.display(), errno_text(error));
        {
            let mut state = self.inner.state.borrow_mut();
            if state.health.failure.is_none() {
                tracing::error!(target: "ringlog::storage", %cause, "partition fail-stopped; no further appends are acknowledged");
                state.health.failure = Some(cause.clone());
            }
        }
        self.inner.progress.notify_all();
        StorageError::StorageFailed { partition: self.inner.dir.clone(), cause }
    }

    /// Wait until everything appended so far is written (and fsynced under `always`).
    async fn drain(&self) -> StorageResult<()> {
        loop {
            let notified = self.inner.progress.notified();
            {
                let state = self.inner.state.borrow();
                if let Some(cause) = &state.health.failure {
                    return Err(StorageError::StorageFailed {
                        partition: self.inner.dir.clone(),
                        cause: cause.clone(),
                    });
                }
                if state.health.rolling_back {
                    // The flusher is rolling back and waits for the gate this
                    // drain's caller holds: waiting here would deadlock.
                    return Err(StorageError::DiskFull { path: self.inner.dir.clone() });
                }
                if state.durability.mark.offset == state.log_end_offset && !state.writer.has_unwritten() {
                    return Ok(());
                }
            }
            self.inner.work.notify_all();
            notified.await;
        }
    }
}

impl PartitionLog {
    /// Rebuild producer state from the log after a rollback or truncation
    /// removed batches that the in-memory state had already seen.
    pub(super) async fn rebuild_producers(&self) -> StorageResult<()> {
        let (extents, log_end_offset) = {
            let state = self.inner.state.borrow();
            let extents: Vec<SegmentExtent> = state.segments.values().map(SegmentExtent::of).collect();
            (extents, state.log_end_offset)
        };
        let dir = self.inner.dir.clone();
        let max_producers = self.inner.config.max_producers_per_partition;
        let states =
            run_blocking(move || rebuild_producer_states(&dir, &extents, log_end_offset, max_producers)).await?;
        self.inner.state.borrow_mut().producers = states;
        Ok(())
    }
}

/// Recover the segments and open the consumer offsets; damage in either
/// fences the partition (reported here, refused by every operation).
async fn recover(dir: &Path, config: &StorageConfig) -> StorageResult<(RecoveredPartition, ConsumerOffsets)> {
    let recovery_dir = dir.to_path_buf();
    let recovery_config = config.clone();
    let mut recovered = run_blocking(move || recover_partition(&recovery_dir, &recovery_config)).await?;
    let offsets_dir = dir.to_path_buf();
    let offsets = run_blocking(move || ConsumerOffsets::open(&offsets_dir, OFFSETS_COMPACT_BYTES))
        .await
        .map_err(|error| StorageError::io("open consumer offsets", dir, error))?;
    log_recovery(dir, &recovered.report, recovered.log_end_offset);
    if recovered.fence.is_none() {
        recovered.fence = fence_for_offsets_damage(dir, &offsets).await?;
    }
    if let Some(fence) = &recovered.fence {
        tracing::error!(target: "ringlog::storage", path = %fence.path.display(), position = fence.position,
            offset = fence.offset, reason = %fence.reason, "partition fenced: corruption before the tail");
    }
    Ok((recovered, offsets))
}

/// The state of a recovered partition: its active segment opened for
/// writing, everything recovered durable.
async fn open_state(
    dir: &Path,
    config: &StorageConfig,
    faults: Option<Arc<FaultInjector>>,
    recovered: RecoveredPartition,
    offsets: ConsumerOffsets,
) -> StorageResult<State> {
    let active = recovered.segments.last().expect("recovery yields an active segment");
    let active_path = segment_file(dir, active.base_offset, LOG_EXTENSION);
    let file = DirectFile::open_read_write(&active_path, faults)
        .await
        .map_err(|error| StorageError::io("open active segment", &active_path, error))?;
    let writer =
        SegmentWriter::open(Rc::new(file), active.size_bytes, config.write_buffer_bytes, config.max_write_buffers)
            .await
            .map_err(|error| StorageError::io("open segment writer", &active_path, error))?;
    let durable = DurableMark {
        offset: recovered.log_end_offset,
        position: active.size_bytes,
        last_batch_position: active.last_batch_position,
    };
    let segments = recovered.segments.into_iter().map(|segment| (segment.base_offset, segment)).collect();
    Ok(State {
        segments,
        readers: BTreeMap::new(),
        writer,
        log_end_offset: recovered.log_end_offset,
        durability: Durability::recovered(durable),
        health: Health::recovered(recovered.fence),
        epochs: recovered.epochs,
        producers: recovered.producers,
        offsets,
        active_opened_at: Instant::now(),
        stats: LogStats::default(),
        recovery: recovered.report,
        tail: Default::default(),
        unremoved_segments: Vec::new(),
        recycled: Vec::new(),
        zeroing_unsupported: false,
    })
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
    state.durability.mark = mark;
}

/// Unlink a segment's files and sync the directory. Directory entries
/// persist in any order: without the sync, a crash while several segments
/// go could keep an earlier one and lose a later one (a hole in the chain,
/// which fences a healthy partition). Synced per segment, a crash leaves a
/// prefix (retention, lowest first) or a suffix (truncation, highest
/// first) of them gone. The indexes go first, synced, then the log file: a
/// crash in between leaves a segment without indexes (rebuilt), never
/// indexes without a segment (nothing would ever remove them).
fn remove_segment_files(dir: &Path, base: u64, faults: Option<&FaultInjector>) -> std::io::Result<()> {
    remove_segment_indexes(dir, base, faults)?;
    crate::storage::io::remove_file(&segment_file(dir, base, LOG_EXTENSION), faults)?;
    // What a failed retention pass may have renamed and not removed.
    crate::storage::io::remove_file(&segment_file(dir, base, RECYCLED_EXTENSION), faults)?;
    crate::storage::io::sync_directory_of(dir, faults)
}

/// Like [`remove_segment_files`], but the log file is renamed to
/// `<base>.free` instead of unlinked, and that path added to `renamed` as
/// soon as it exists (nothing when neither file is there: a failed pass's
/// retry). Zeroed later (after the rename is durable), it is not part of
/// the log either way.
fn recycle_segment_files(
    dir: &Path,
    base: u64,
    faults: Option<&FaultInjector>,
    renamed: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    remove_segment_indexes(dir, base, faults)?;
    let recycled = segment_file(dir, base, RECYCLED_EXTENSION);
    match crate::storage::io::rename_file(&segment_file(dir, base, LOG_EXTENSION), &recycled, faults) {
        // A failed pass renamed it already (and could not unlink it).
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if recycled.exists() {
                renamed.push(recycled);
            }
            return Ok(());
        }
        result => result?,
    }
    renamed.push(recycled);
    crate::storage::io::sync_directory_of(dir, faults)
}

/// The index files go first: a log file without them is rebuilt, an
/// index without its log file would describe nothing.
fn remove_segment_indexes(dir: &Path, base: u64, faults: Option<&FaultInjector>) -> std::io::Result<()> {
    for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
        crate::storage::io::remove_file(&segment_file(dir, base, extension), faults)?;
    }
    crate::storage::io::sync_directory_of(dir, faults)
}

/// Corruption in `consumer-offsets.log` fences the partition like
/// corruption in a segment: stored durably, bytes kept, reported.
async fn fence_for_offsets_damage(dir: &Path, offsets: &ConsumerOffsets) -> StorageResult<Option<FenceReport>> {
    let Some(damage) = offsets.damage() else {
        return Ok(None);
    };
    let report = FenceReport {
        path: offsets.path().to_path_buf(),
        position: damage.position,
        offset: 0,
        reason: damage.reason.clone(),
    };
    let stored = report.clone();
    let fence_dir = dir.to_path_buf();
    run_blocking(move || crate::storage::fence::store_fence(&fence_dir, &stored))
        .await
        .map_err(|error| StorageError::io("store fence", dir, error))?;
    Ok(Some(report))
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
