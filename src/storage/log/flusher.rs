//! The flusher: one task per partition that submits buffered bytes to
//! io_uring, completes writes in submission order, fsyncs per policy and
//! publishes durability.
//!
//! Full staging buffers are submitted as soon as they fill, several in
//! flight at once (they never overlap), which keeps the device queue deep.
//! The tail of the current buffer is written whenever no other tail is in
//! flight; each tail carries a *mark* (log end offset and position at the
//! moment it was taken). When a tail completes, every earlier write has
//! completed too (completions are taken in order), so the mark is written;
//! under `fsync = always` one fdatasync then makes it durable for every
//! batch that joined the group, and waiting appends are woken.
//!
//! The writes in flight are futures the flusher polls itself, each in a
//! slot (a pinned box) kept for the flusher's lifetime: spawning a task per
//! write cost a task allocation on every round, which a lone `fsync =
//! always` appender pays per batch.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use glommio::io::DmaBuffer;

use super::*;
use crate::storage::writer::WriteJob;

/// A write submitted to io_uring.
struct InFlight {
    /// The pipeline slot that runs the write.
    slot: usize,
    job: WriteJob,
    file: Rc<DirectFile>,
    /// For tail writes: what becomes durable once this write completes.
    mark: Option<(DurableMark, u64)>,
}

/// The one write operation the pipeline runs; a plain function so that
/// every write has the same future type and slots can be reused.
async fn write_op(file: Rc<DirectFile>, buffer: Rc<DmaBuffer>, position: u64) -> io::Result<()> {
    file.write_all_at(buffer, position).await
}

/// Writes in flight, oldest first, and which staging buffer's tail is among
/// them. Slots grow to the most writes ever in flight at once and are then
/// reused: a round allocates nothing here.
struct Pipeline<F: Future<Output = io::Result<()>>> {
    start: fn(Rc<DirectFile>, Rc<DmaBuffer>, u64) -> F,
    in_flight: VecDeque<InFlight>,
    tail_in_flight: Option<u64>,
    /// Running writes; `None` once finished (or never used).
    slots: Vec<Pin<Box<Option<F>>>>,
    /// Results of writes that finished before the writes ahead of them.
    results: Vec<Option<io::Result<()>>>,
    free: Vec<usize>,
}

impl<F: Future<Output = io::Result<()>>> Pipeline<F> {
    fn new(start: fn(Rc<DirectFile>, Rc<DmaBuffer>, u64) -> F) -> Self {
        Pipeline {
            start,
            in_flight: VecDeque::new(),
            tail_in_flight: None,
            slots: Vec::new(),
            results: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Start writing `job` in a free slot; completions are still taken in
    /// submission order (`poll_front`).
    fn submit(&mut self, file: &Rc<DirectFile>, job: WriteJob, mark: Option<(DurableMark, u64)>) {
        let operation = (self.start)(Rc::clone(file), Rc::clone(&job.buffer), job.position);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot].set(Some(operation));
                slot
            }
            None => {
                self.slots.push(Box::pin(Some(operation)));
                self.results.push(None);
                self.slots.len() - 1
            }
        };
        self.in_flight.push_back(InFlight { slot, job, file: Rc::clone(file), mark });
    }

    /// Drive every running write (each must be polled to reach io_uring and
    /// to complete); ready when the oldest has finished, which then leaves
    /// the pipeline. Pending when nothing is in flight.
    fn poll_front(&mut self, context: &mut Context<'_>) -> Poll<(InFlight, io::Result<()>)> {
        for in_flight in &self.in_flight {
            let slot = &mut self.slots[in_flight.slot];
            let Some(operation) = slot.as_mut().as_pin_mut() else { continue };
            if let Poll::Ready(result) = operation.poll(context) {
                slot.set(None);
                self.results[in_flight.slot] = Some(result);
            }
        }
        let Some(front) = self.in_flight.front() else { return Poll::Pending };
        let Some(result) = self.results[front.slot].take() else { return Poll::Pending };
        let finished = self.in_flight.pop_front().expect("front exists");
        self.free.push(finished.slot);
        if finished.mark.is_some() {
            self.tail_in_flight = None;
        }
        Poll::Ready((finished, result))
    }

    /// The oldest write's completion (call only with a write in flight).
    async fn next_completion(&mut self) -> (InFlight, io::Result<()>) {
        std::future::poll_fn(|context| self.poll_front(context)).await
    }
}

impl PartitionLog {
    /// The flusher loop; returns when the log stops and no write is in flight.
    pub(super) async fn run_flusher(&self) {
        let mut pipeline = Pipeline::new(write_op);
        loop {
            let notified = self.inner.work.notified();
            if self.inner.state.borrow().health.failure.is_some() {
                // Already fail-stopped: later write errors add nothing.
                let _already_failed = self.settle_all(&mut pipeline).await;
                if self.inner.stopping.get() {
                    return;
                }
                notified.await;
                continue;
            }
            if self.interval_fsync_due().is_some_and(|wait| wait.is_zero()) {
                // Under steady load the flusher is never idle: the interval
                // fsync must not wait for a pause that may never come.
                self.interval_fsync().await;
            }
            self.submit_writes(&mut pipeline);
            if pipeline.in_flight.is_empty() {
                if self.settle_unmarked_end().await {
                    continue;
                }
                if self.inner.stopping.get() {
                    return;
                }
                self.release_buffers_if_over_budget();
                self.idle(notified).await;
                continue;
            }
            let completion = futures_lite::future::or(async { Some(pipeline.next_completion().await) }, async {
                notified.await;
                None
            });
            let Some((finished, result)) = completion.await else { continue };
            match result {
                Ok(()) => self.complete_write(finished).await,
                Err(error) => self.write_failed(finished, error, &mut pipeline).await,
            }
        }
    }

    /// Idle with nothing to write: when the shard holds more write-buffer
    /// memory than its budget, give this partition's buffers back.
    fn release_buffers_if_over_budget(&self) {
        let mut state = self.inner.state.borrow_mut();
        let over_budget = crate::storage::writer::held_buffer_bytes() > self.inner.config.write_buffer_budget_bytes;
        if over_budget && !state.writer.has_unwritten() && !state.writer.is_shrunk() {
            state.writer.shrink();
        }
    }

    /// Nothing in flight: wait for work, or for the interval fsync to fall due.
    async fn idle(&self, notified: crate::runtime::Notified<'_>) {
        match self.interval_fsync_due() {
            Some(wait) if wait.is_zero() => self.interval_fsync().await,
            Some(wait) => {
                futures_lite::future::or(notified, crate::runtime::sleep(wait)).await;
            }
            None => notified.await,
        }
    }

    /// Everything appended is written and nothing is in flight, yet the
    /// durable end lags the log end: the last write was a full buffer and
    /// carried no mark (a batch ended exactly at a buffer's end, so no tail
    /// followed it). Make that end durable here; without this the append
    /// would wait for a mark that never comes. Returns whether it acted.
    async fn settle_unmarked_end(&self) -> bool {
        let (mark, generation, file) = {
            let state = self.inner.state.borrow();
            if state.writer.has_unwritten()
                || state.durability.mark.offset >= state.log_end_offset
                || state.health.failure.is_some()
            {
                return false;
            }
            let active = state.active();
            let mark = DurableMark {
                offset: state.log_end_offset,
                position: active.size_bytes,
                last_batch_position: active.last_batch_position,
            };
            (mark, state.durability.generation, Rc::clone(state.writer.file()))
        };
        if self.inner.config.fsync == FsyncPolicy::Always {
            self.publish_written(mark, generation);
            if let Err(error) = file.fdatasync().await {
                // As in complete_write: never retry a failed fdatasync.
                self.fail_stop("fdatasync", file.path(), &error);
                return true;
            }
        }
        self.publish(mark, generation);
        true
    }

    /// Submit every full buffer that may go, and a tail if none is in flight.
    fn submit_writes<F: Future<Output = io::Result<()>>>(&self, pipeline: &mut Pipeline<F>) {
        let mut state = self.inner.state.borrow_mut();
        let file = Rc::clone(state.writer.file());
        while let Some(job) = state.writer.take_full(pipeline.tail_in_flight) {
            pipeline.submit(&file, job, None);
        }
        if pipeline.tail_in_flight.is_some() {
            return;
        }
        let Some(job) = state.writer.take_tail() else { return };
        let active = state.active();
        let mark = DurableMark {
            offset: state.log_end_offset,
            position: active.size_bytes,
            last_batch_position: active.last_batch_position,
        };
        pipeline.tail_in_flight = Some(job.staging_position);
        pipeline.submit(&file, job, Some((mark, state.durability.generation)));
    }

    /// A write completed: recycle its buffer; a tail also publishes its mark.
    async fn complete_write(&self, finished: InFlight) {
        let bytes = finished.job.buffer.len() as u64;
        {
            let mut state = self.inner.state.borrow_mut();
            state.writer.recycle(finished.job);
            state.stats.bytes_written += bytes;
        }
        let Some((mark, generation)) = finished.mark else {
            // A buffer came free: appenders waiting for one can go on.
            self.inner.progress.notify_all();
            return;
        };
        if self.inner.config.fsync == FsyncPolicy::Always {
            self.publish_written(mark, generation);
            if let Err(error) = finished.file.fdatasync().await {
                // fsyncgate: the kernel may have dropped the dirty pages; a
                // retry could "succeed" without the data. Never retry.
                self.fail_stop("fdatasync", finished.file.path(), &error);
                return;
            }
        }
        self.publish(mark, generation);
    }

    /// The write of `mark` completed: replicas may copy it while the
    /// fdatasync runs (a failed fdatasync fail-stops the partition, so a
    /// written batch is never rolled back under the same epoch).
    fn publish_written(&self, mark: DurableMark, generation: u64) {
        let mut state = self.inner.state.borrow_mut();
        if state.durability.generation == generation && mark.offset > state.durability.written_offset() {
            assert!(mark.offset <= state.log_end_offset, "written mark {} past the log end", mark.offset);
            state.durability.written = (mark.offset, generation);
            drop(state);
            self.inner.progress.notify_all();
        }
    }

    /// The write of `mark` completed (and, under `always`, its fdatasync):
    /// move the durable end to it and wake the waiters. A mark of an older
    /// generation describes a log a rollback or truncation has replaced.
    fn publish(&self, mark: DurableMark, generation: u64) {
        let mut state = self.inner.state.borrow_mut();
        state.stats.write_rounds += 1;
        if self.inner.config.fsync == FsyncPolicy::Always {
            state.stats.fsyncs += 1;
        } else if state.durability.unsynced_since.is_none() {
            state.durability.unsynced_since = Some(Instant::now());
        }
        // A mark of an older generation (before a truncation or reset) or
        // behind the durable end is stale: the durable end never moves back
        // here, only a new generation moves it.
        if state.durability.generation == generation && mark.offset >= state.durability.mark.offset {
            // Marks are taken at the log end: one past it would make
            // unwritten offsets durable.
            assert!(
                mark.offset <= state.log_end_offset,
                "durable mark {} past the log end {}",
                mark.offset,
                state.log_end_offset
            );
            state.durability.mark = mark;
            let active = state.active_mut();
            active.written_bytes = active.written_bytes.max(mark.position);
            assert!(active.written_bytes <= active.size_bytes, "written past the segment's placed bytes");
        }
        drop(state);
        self.inner.progress.notify_all();
    }

    /// Wait for every write still in flight (their buffers must not be
    /// reused while the kernel may read them). Returns the first error that
    /// is not disk full: a caller rolling back after ENOSPC must fail-stop
    /// instead when another write failed for a worse reason (SPEC §4).
    async fn settle_all<F: Future<Output = io::Result<()>>>(&self, pipeline: &mut Pipeline<F>) -> Option<io::Error> {
        let mut worse = None;
        while !pipeline.in_flight.is_empty() {
            let (in_flight, result) = pipeline.next_completion().await;
            if let Err(error) = result {
                if !is_disk_full(&error) && worse.is_none() {
                    worse = Some(error);
                }
            }
            self.inner.state.borrow_mut().writer.recycle(in_flight.job);
        }
        pipeline.tail_in_flight = None;
        worse
    }

    /// A write failed: ENOSPC rolls back what was not acknowledged; any
    /// other error fail-stops the partition.
    async fn write_failed<F: Future<Output = io::Result<()>>>(
        &self,
        finished: InFlight,
        error: io::Error,
        pipeline: &mut Pipeline<F>,
    ) {
        let file = Rc::clone(&finished.file);
        self.inner.state.borrow_mut().writer.recycle(finished.job);
        let worse = self.settle_all(pipeline).await;
        match worse {
            None if is_disk_full(&error) => self.roll_back_after_disk_full(&file).await,
            Some(worse) => {
                self.fail_stop("write", file.path(), &worse);
            }
            None => {
                self.fail_stop("write", file.path(), &error);
            }
        }
    }

    fn interval_fsync_due(&self) -> Option<Duration> {
        if self.inner.config.fsync != FsyncPolicy::Interval {
            return None;
        }
        let since = self.inner.state.borrow().durability.unsynced_since?;
        let interval = Duration::from_millis(self.inner.config.fsync_interval_ms);
        Some(interval.saturating_sub(since.elapsed()))
    }

    async fn interval_fsync(&self) {
        let file = Rc::clone(self.inner.state.borrow().writer.file());
        match file.fdatasync().await {
            Ok(()) => {
                let mut state = self.inner.state.borrow_mut();
                state.stats.fsyncs += 1;
                state.durability.unsynced_since = None;
            }
            Err(error) => {
                self.fail_stop("fdatasync", file.path(), &error);
            }
        }
    }

    /// ENOSPC from a write: forget everything not yet durable (those appends
    /// fail with disk_full), cut the file back so no stale bytes remain past
    /// the durable end, and keep serving. The whole rollback holds the
    /// append gate: no batch can be placed against the log end it is about
    /// to lower, and producer state is rebuilt before any retry is checked
    /// against it.
    async fn roll_back_after_disk_full(&self, file: &Rc<DirectFile>) {
        {
            // Wake every appender and drain first: those holding the gate
            // give it up (their generation is stale), then the gate is ours.
            let mut state = self.inner.state.borrow_mut();
            state.health.rolling_back = true;
            state.health.rollback_disk_full = true;
            let floor = state.durability.mark.offset;
            state.durability.new_generation(floor);
        }
        self.inner.progress.notify_all();
        let gate = async { Some(self.inner.append_gate.acquire().await) };
        let stopping = async {
            self.stopped().await;
            None
        };
        let Some(permit) = futures_lite::future::or(gate, stopping).await else {
            // close() holds the gate and waits for this task: give up the
            // rollback. close() fails its drain and writes no clean marker,
            // so the next open recovers the unacknowledged tail from disk.
            self.inner.state.borrow_mut().health.rolling_back = false;
            self.inner.progress.notify_all();
            return;
        };
        let rolled_back = self.roll_back_holding_gate(file).await;
        if rolled_back {
            // Still holding the gate: no append may move the log end past a
            // stale commit before it is latched. The latch holds in memory
            // even when its write fails (the disk is full); recovery latches
            // it again at the next open while it is still beyond the end.
            if let Err(error) = self.latch_stale_commits().await {
                tracing::error!(target: "ringlog::storage", %error, "cannot store the latch of commits after disk full");
            }
        }
        self.inner.state.borrow_mut().health.rolling_back = false;
        drop(permit);
        self.inner.progress.notify_all();
    }

    /// Resolves once the log is stopping (close or abandon).
    async fn stopped(&self) {
        loop {
            let notified = self.inner.work.notified();
            if self.inner.stopping.get() {
                return;
            }
            notified.await;
        }
    }

    async fn roll_back_holding_gate(&self, file: &Rc<DirectFile>) -> bool {
        let mark = self.inner.state.borrow().durability.mark;
        tracing::warn!(target: "ringlog::storage", path = %file.path().display(), offset = mark.offset,
            "disk full while writing: rolling back unacknowledged appends");
        if let Err(error) = file.truncate(mark.position).await {
            self.fail_stop("truncate after disk full", file.path(), &error);
            return false;
        }
        if let Err(error) = file.fdatasync().await {
            self.fail_stop("fdatasync after disk full", file.path(), &error);
            return false;
        }
        let config = &self.inner.config;
        let writer =
            SegmentWriter::open(Rc::clone(file), mark.position, config.write_buffer_bytes, config.max_write_buffers)
                .await;
        match writer {
            Ok(writer) => {
                let mut state = self.inner.state.borrow_mut();
                state.writer = writer;
                reset_active_to(&mut state, mark);
                state.epochs.truncate_from_end(mark.offset);
                state.tail.clear();
                state.durability.new_generation(mark.offset);
                drop(state);
                self.discard_read_ahead();
            }
            Err(error) => {
                self.fail_stop("reopen writer after disk full", file.path(), &error);
                return false;
            }
        }
        if let Err(error) = self.restore_max_timestamp(file, mark).await {
            self.fail_stop("read segment after disk full", file.path(), &std::io::Error::other(error.to_string()));
            return false;
        }
        // Producer state had already seen the rolled-back batches.
        if let Err(error) = self.rebuild_producers().await {
            tracing::error!(target: "ringlog::storage", %error, "cannot rebuild producer state after disk full");
            self.inner.state.borrow_mut().health.failure.get_or_insert_with(|| error.to_string());
            return false;
        }
        true
    }
}
