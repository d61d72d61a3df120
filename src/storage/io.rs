//! Thin layer over glommio's DMA files (O_DIRECT through io_uring), with a
//! fault-injection seam so tests can make a chosen write, fsync or
//! preallocation fail with a chosen errno.
//!
//! Everything in ringlog that touches glommio's file API goes through here,
//! so a future move away from glommio changes one file.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::Arc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

/// Which I/O operation a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOperation {
    /// A data write.
    Write,
    /// An fdatasync.
    Fsync,
    /// A preallocation (fallocate).
    Preallocate,
    /// A truncation (ftruncate) of a segment.
    Truncate,
    /// A small metadata file (index files at a seal, epoch checkpoint).
    Metadata,
    /// An unlink of a segment or metadata file (retention, truncation).
    Unlink,
}

/// Makes chosen I/O operations fail, for tests. Shared across threads.
///
/// Each operation has a countdown: `n` means "let n more succeed, then fail
/// every following one" until cleared; -1 means never fail.
///
/// With a crash journal ([`FaultInjector::with_crash_journal`]) it also
/// remembers, for every completed segment write that no fdatasync has
/// covered yet, the bytes it overwrote, so a test can make the files look
/// as a power loss would leave them ([`FaultInjector::simulate_crash`]):
/// every write not yet fdatasync'd lost, or the oldest ones kept and the
/// next torn at a sector boundary. The journal's mutex exists only in
/// tests; production files carry no injector.
#[derive(Debug)]
pub struct FaultInjector {
    journal: Option<std::sync::Mutex<CrashJournal>>,
    crash_countdown: AtomicI64,
    unlink_crash_countdown: AtomicI64,
    crashed: std::sync::atomic::AtomicBool,
    script: std::sync::Mutex<std::collections::VecDeque<(FaultOperation, i32)>>,
    write_countdown: AtomicI64,
    fsync_countdown: AtomicI64,
    preallocate_countdown: AtomicI64,
    truncate_countdown: AtomicI64,
    metadata_countdown: AtomicI64,
    unlink_countdown: AtomicI64,
    errno: AtomicI32,
    attempts: [AtomicI64; 6],
    /// Writes submitted and not completed: (id, path, start, end).
    writes_in_flight: std::sync::Mutex<Vec<(i64, PathBuf, u64, u64)>>,
    next_write_id: AtomicI64,
    /// Writes submitted while another write to an overlapping range of the
    /// same file was in flight: the device may complete them in either
    /// order, so what lands is undefined. The write path must never do it
    /// (TigerBeetle's storage simulator asserts the same).
    overlapping_writes: AtomicI64,
    /// Every write waits this long (µs) after it is registered in flight
    /// and before it reaches the file: a slow device, so that what the
    /// write path submits while writes are in flight shows.
    write_delay_us: AtomicI64,
    sync_delay_us: AtomicI64,
    /// Every unlink waits this long (µs) first, on the blocking thread
    /// that runs it: a slow file system, so that what waits for an unlink
    /// shows.
    unlink_delay_us: AtomicI64,
    /// Reads of one file wait this long before they are submitted: a slow
    /// device, so that what changes under a read in flight shows.
    read_delay: std::sync::Mutex<Option<(PathBuf, std::time::Duration)>>,
}

impl Default for FaultInjector {
    fn default() -> Self {
        FaultInjector {
            write_countdown: AtomicI64::new(-1),
            fsync_countdown: AtomicI64::new(-1),
            preallocate_countdown: AtomicI64::new(-1),
            truncate_countdown: AtomicI64::new(-1),
            metadata_countdown: AtomicI64::new(-1),
            unlink_countdown: AtomicI64::new(-1),
            errno: AtomicI32::new(libc::EIO),
            attempts: Default::default(),
            journal: None,
            crash_countdown: AtomicI64::new(-1),
            unlink_crash_countdown: AtomicI64::new(-1),
            crashed: Default::default(),
            script: Default::default(),
            writes_in_flight: Default::default(),
            next_write_id: AtomicI64::new(0),
            overlapping_writes: AtomicI64::new(0),
            write_delay_us: AtomicI64::new(0),
            sync_delay_us: AtomicI64::new(0),
            unlink_delay_us: AtomicI64::new(0),
            read_delay: Default::default(),
        }
    }
}

/// A write in flight, registered with the injector until it is dropped
/// (completed, failed, or its future dropped).
struct WriteInFlight<'a> {
    faults: &'a FaultInjector,
    id: i64,
}

impl Drop for WriteInFlight<'_> {
    fn drop(&mut self) {
        let mut writes = self.faults.writes_in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(index) = writes.iter().position(|(id, ..)| *id == self.id) {
            writes.swap_remove(index);
        }
    }
}

impl FaultInjector {
    /// Writes that were submitted while an overlapping write to the same
    /// file was still in flight (should be 0).
    pub fn overlapping_writes(&self) -> i64 {
        self.overlapping_writes.load(Ordering::SeqCst)
    }

    /// Make every write take at least `delay` (a slow device).
    pub fn delay_writes(&self, delay: std::time::Duration) {
        self.write_delay_us.store(delay.as_micros() as i64, Ordering::SeqCst);
    }

    /// Make every fdatasync take at least `delay` (a slow device).
    pub fn delay_syncs(&self, delay: std::time::Duration) {
        self.sync_delay_us.store(delay.as_micros() as i64, Ordering::SeqCst);
    }

    /// Make every unlink take at least `delay` (a slow file system).
    pub fn delay_unlinks(&self, delay: std::time::Duration) {
        self.unlink_delay_us.store(delay.as_micros() as i64, Ordering::SeqCst);
    }

    /// Make every read of the file at `path` wait `delay` before it is
    /// submitted, and every open of it for reading wait after it completes
    /// (a zero delay clears it).
    pub fn delay_reads_of(&self, path: &Path, delay: std::time::Duration) {
        let delayed = (!delay.is_zero()).then(|| (path.to_path_buf(), delay));
        *self.read_delay.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = delayed;
    }

    fn read_delay_for(&self, path: &Path) -> Option<std::time::Duration> {
        let delayed = self.read_delay.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        delayed.as_ref().filter(|(delayed_path, _)| delayed_path == path).map(|(_, delay)| *delay)
    }

    fn write_started(&self, path: &Path, start: u64, length: usize) -> WriteInFlight<'_> {
        let end = start + length as u64;
        let mut writes = self.writes_in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let overlapping = writes
            .iter()
            .any(|(_, other, other_start, other_end)| other == path && start < *other_end && *other_start < end);
        if overlapping {
            self.overlapping_writes.fetch_add(1, Ordering::SeqCst);
            tracing::error!(target: "ringlog::storage", path = %path.display(), start, end,
                "a write overlaps another still in flight");
        }
        let id = self.next_write_id.fetch_add(1, Ordering::SeqCst);
        writes.push((id, path.to_path_buf(), start, end));
        WriteInFlight { faults: self, id }
    }

    /// A new injector that fails nothing.
    pub fn new() -> Arc<FaultInjector> {
        Arc::new(FaultInjector::default())
    }

    /// A new injector that also keeps a crash journal of unsynced writes.
    pub fn with_crash_journal() -> Arc<FaultInjector> {
        Arc::new(FaultInjector { journal: Some(Default::default()), ..FaultInjector::default() })
    }

    fn journal(&self) -> Option<std::sync::MutexGuard<'_, CrashJournal>> {
        // A test that panicked while holding it has failed already.
        self.journal.as_ref().map(|journal| journal.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The moment of a simulated crash: from now on every write, fdatasync,
    /// preallocation and truncation fails (EIO), so nothing more reaches
    /// the files or becomes durable; writes already submitted complete and
    /// stay in the journal. The log fail-stops; stop it, then call
    /// [`FaultInjector::simulate_crash`].
    pub fn crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
        for operation in [
            FaultOperation::Write,
            FaultOperation::Fsync,
            FaultOperation::Preallocate,
            FaultOperation::Truncate,
            FaultOperation::Metadata,
            FaultOperation::Unlink,
        ] {
            self.fail_after(operation, 0, libc::EIO);
        }
    }

    /// Crash (see [`FaultInjector::crash`]) right after the `writes`-th
    /// write from now is submitted: that write still lands, its fdatasync
    /// never comes. Lands a crash between a write and its sync every time.
    pub fn crash_after_writes(&self, writes: i64) {
        self.crash_countdown.store(writes.max(1), Ordering::SeqCst);
    }

    /// Crash right after the `unlinks`-th unlink from now: lands a crash
    /// between two unlinks of a retention or a truncation, before the
    /// directory fsync that makes them durable.
    pub fn crash_after_unlinks(&self, unlinks: i64) {
        self.unlink_crash_countdown.store(unlinks.max(1), Ordering::SeqCst);
    }

    /// Whether a simulated crash happened ([`FaultInjector::crash`]).
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Writes not yet covered by an fdatasync, over every file.
    pub fn unsynced_writes(&self) -> usize {
        self.journal().map_or(0, |journal| journal.files.values().map(Vec::len).sum())
    }

    /// The unsynced writes in completion order, as (file, position, length):
    /// what a failed crash test names so the crash can be read back even
    /// when the workload's timing does not repeat.
    pub fn unsynced_write_list(&self) -> Vec<(PathBuf, u64, usize)> {
        let Some(journal) = self.journal() else { return Vec::new() };
        let mut writes: Vec<(u64, PathBuf, u64, usize)> = journal
            .files
            .iter()
            .flat_map(|(path, entries)| {
                entries.iter().map(move |entry| (entry.sequence, path.clone(), entry.position, entry.old.len()))
            })
            .collect();
        writes.sort_unstable_by_key(|write| write.0);
        writes.into_iter().map(|(_, path, position, length)| (path, position, length)).collect()
    }

    /// Make the files look as a crash right now would leave them: keep the
    /// oldest `keep_writes` unsynced writes (in completion order), keep only
    /// the first `torn_sectors` 512-byte sectors of the next one, and undo
    /// every later one. Call after the log stopped (abandoned or closed).
    pub fn simulate_crash(&self, keep_writes: usize, torn_sectors: usize) -> io::Result<CrashSummary> {
        self.simulate_crash_with(&mut |index| WriteFate::of_prefix(index, keep_writes, torn_sectors))
    }

    /// Make the files look as a crash right now would leave them when the
    /// disk persisted any subset of the unsynced writes, in any order:
    /// `fate(i)` says what became of the `i`-th unsynced write (completion
    /// order). Each byte ends up as the newest write that landed on it left
    /// it, or as it was before every unsynced write. Call after the log
    /// stopped (abandoned or closed).
    pub fn simulate_crash_with(&self, fate: &mut dyn FnMut(usize) -> WriteFate) -> io::Result<CrashSummary> {
        let Some(mut journal) = self.journal() else {
            return Ok(CrashSummary::default());
        };
        let mut entries: Vec<(PathBuf, JournalEntry)> = journal
            .files
            .drain()
            .flat_map(|(path, entries)| entries.into_iter().map(move |entry| (path.clone(), entry)))
            .collect();
        entries.sort_by_key(|(_, entry)| entry.sequence);
        let fates: Vec<WriteFate> = (0..entries.len()).map(&mut *fate).collect();
        let mut summary = CrashSummary { unsynced_writes: entries.len(), ..CrashSummary::default() };
        // Newest first: a byte a newer landed write settled keeps its value
        // whatever happened to the older writes beneath it.
        let mut settled: std::collections::HashMap<PathBuf, Vec<(u64, u64)>> = Default::default();
        for ((path, entry), fate) in entries.iter().zip(fates).rev() {
            if inode_of(path) != Some(entry.inode) {
                continue;
            }
            let end = entry.position + entry.old.len() as u64;
            let landed_end = match fate {
                WriteFate::Landed => end,
                WriteFate::Torn { sectors } => entry.position + (sectors * SECTOR_BYTES).min(entry.old.len()) as u64,
                WriteFate::Lost => entry.position,
            };
            let ranges = settled.entry(path.clone()).or_default();
            let undo = unsettled(ranges, landed_end, end);
            ranges.push((entry.position, landed_end));
            if undo.is_empty() {
                continue;
            }
            let file = std::fs::OpenOptions::new().write(true).open(path)?;
            for (start, stop) in undo {
                let slice = &entry.old[(start - entry.position) as usize..(stop - entry.position) as usize];
                std::os::unix::fs::FileExt::write_all_at(&file, slice, start)?;
                summary.undone_bytes += stop - start;
            }
        }
        Ok(summary)
    }

    /// Files unlinked since their directory was last synced.
    pub fn unsynced_unlinks(&self) -> usize {
        self.journal().map_or(0, |journal| journal.unlinks.len())
    }

    /// Put back the files whose unlink a crash lost: `lost(i)` for the
    /// `i`-th unlink no directory fsync had covered (in order). Directory
    /// entries persist in any order, so any subset may come back. Returns
    /// how many came back.
    pub fn restore_lost_unlinks(&self, lost: &mut dyn FnMut(usize) -> bool) -> io::Result<usize> {
        let Some(mut journal) = self.journal() else {
            return Ok(0);
        };
        let mut restored = 0;
        for (index, unlink) in std::mem::take(&mut journal.unlinks).into_iter().enumerate() {
            if lost(index) && !unlink.path.exists() {
                std::fs::write(&unlink.path, unlink.bytes)?;
                // A lost rename leaves the file under its old name only.
                if let Some(renamed_to) = &unlink.renamed_to {
                    remove_file(renamed_to, None)?;
                }
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// Before an unlink of `path`: remember its bytes until its directory
    /// is synced (journal only).
    fn journal_unlink(&self, path: &Path, renamed_to: Option<&Path>) {
        if let Some(mut journal) = self.journal() {
            if let Ok(bytes) = std::fs::read(path) {
                let renamed_to = renamed_to.map(Path::to_path_buf);
                journal.unlinks.push(JournaledUnlink { path: path.to_path_buf(), bytes, renamed_to });
            }
        }
    }

    /// `directory` was fsynced: the unlinks in it are durable.
    pub fn directory_synced(&self, directory: &Path) {
        if let Some(mut journal) = self.journal() {
            journal.unlinks.retain(|unlink| parent_of(&unlink.path) != directory);
        }
    }

    fn journal_capture(&self, path: &Path, position: u64, length: usize) -> Option<Vec<u8>> {
        self.journal.as_ref()?;
        let mut old = vec![0u8; length];
        if let Ok(file) = std::fs::File::open(path) {
            // Past the end reads short: those bytes were zeros (or absent).
            let mut filled = 0usize;
            while filled < length {
                match std::os::unix::fs::FileExt::read_at(&file, &mut old[filled..], position + filled as u64) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => filled += read,
                }
            }
        }
        Some(old)
    }

    fn journal_record(&self, path: &Path, position: u64, old: Vec<u8>) {
        let Some(inode) = inode_of(path) else { return };
        if let Some(mut journal) = self.journal() {
            journal.sequence += 1;
            let sequence = journal.sequence;
            let entry = JournalEntry { inode, position, old, sequence };
            journal.files.entry(path.to_path_buf()).or_default().push(entry);
        }
    }

    fn journal_length(&self, path: &Path) -> usize {
        self.journal().map_or(0, |journal| journal.files.get(path).map_or(0, Vec::len))
    }

    /// An fdatasync issued when `path` had `covered` unsynced writes
    /// succeeded: those are durable. Writes that completed while it ran may
    /// or may not be, so they stay in the journal.
    fn journal_synced(&self, path: &Path, covered: usize) {
        if let Some(mut journal) = self.journal() {
            if let Some(entries) = journal.files.get_mut(path) {
                entries.drain(..covered.min(entries.len()));
            }
        }
    }

    /// After `successes` more successful `operation`s, fail with `errno`.
    pub fn fail_after(&self, operation: FaultOperation, successes: i64, errno: i32) {
        self.errno.store(errno, Ordering::SeqCst);
        self.countdown(operation).store(successes, Ordering::SeqCst);
    }

    /// The next `errnos.len()` attempts of `operation` fail, each with its
    /// own errno in order (e.g. ENOSPC then EIO on two writes in flight).
    pub fn fail_next(&self, operation: FaultOperation, errnos: &[i32]) {
        let mut script = self.script.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        script.extend(errnos.iter().map(|&errno| (operation, errno)));
    }

    /// Stop failing `operation`.
    pub fn clear(&self, operation: FaultOperation) {
        self.countdown(operation).store(-1, Ordering::SeqCst);
    }

    fn countdown(&self, operation: FaultOperation) -> &AtomicI64 {
        match operation {
            FaultOperation::Write => &self.write_countdown,
            FaultOperation::Fsync => &self.fsync_countdown,
            FaultOperation::Preallocate => &self.preallocate_countdown,
            FaultOperation::Truncate => &self.truncate_countdown,
            FaultOperation::Metadata => &self.metadata_countdown,
            FaultOperation::Unlink => &self.unlink_countdown,
        }
    }

    /// How many times `operation` was attempted (failed or not).
    pub fn attempts(&self, operation: FaultOperation) -> i64 {
        self.attempts[operation as usize].load(Ordering::SeqCst)
    }

    /// Called before each operation: the injected error, if one is due.
    pub fn check(&self, operation: FaultOperation) -> io::Result<()> {
        self.attempts[operation as usize].fetch_add(1, Ordering::SeqCst);
        {
            let mut script = self.script.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if script.front().is_some_and(|&(scripted, _)| scripted == operation) {
                let (_, errno) = script.pop_front().expect("front exists");
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        let countdown = self.countdown(operation);
        let remaining = countdown.load(Ordering::SeqCst);
        if remaining < 0 {
            self.count_toward_crash(operation);
            return Ok(());
        }
        if remaining == 0 {
            return Err(io::Error::from_raw_os_error(self.errno.load(Ordering::SeqCst)));
        }
        countdown.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    fn count_toward_crash(&self, operation: FaultOperation) {
        let countdown = match operation {
            FaultOperation::Write => &self.crash_countdown,
            FaultOperation::Unlink => &self.unlink_crash_countdown,
            _ => return,
        };
        if countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.crash();
        }
    }
}

/// Sector size a simulated crash tears at.
pub const SECTOR_BYTES: usize = 512;

/// What a simulated crash left of one unsynced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFate {
    /// Every byte reached the disk.
    Landed,
    /// Only the first `sectors` 512-byte sectors did.
    Torn {
        /// Sectors that landed.
        sectors: usize,
    },
    /// Nothing did.
    Lost,
}

impl WriteFate {
    /// The fate of the `index`-th unsynced write when a crash keeps the
    /// first `keep_writes`, tears the next after `torn_sectors` sectors and
    /// loses the rest ([`FaultInjector::simulate_crash`]).
    pub fn of_prefix(index: usize, keep_writes: usize, torn_sectors: usize) -> WriteFate {
        match index.cmp(&keep_writes) {
            std::cmp::Ordering::Less => WriteFate::Landed,
            std::cmp::Ordering::Equal => WriteFate::Torn { sectors: torn_sectors },
            std::cmp::Ordering::Greater => WriteFate::Lost,
        }
    }
}

/// The parts of `[start, end)` outside every range in `settled`.
fn unsettled(settled: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut parts = vec![(start, end)];
    for &(settled_start, settled_end) in settled {
        parts = parts
            .into_iter()
            .flat_map(|(part_start, part_end)| {
                let left = (part_start, part_end.min(settled_start));
                let right = (part_start.max(settled_end), part_end);
                [left, right]
            })
            .filter(|(part_start, part_end)| part_start < part_end)
            .collect();
    }
    parts
}

#[derive(Debug, Default)]
struct CrashJournal {
    files: std::collections::HashMap<PathBuf, Vec<JournalEntry>>,
    sequence: u64,
    /// Files unlinked (or renamed away) and their bytes, until their
    /// directory is synced.
    unlinks: Vec<JournaledUnlink>,
}

/// A file an unlink or a rename took from its name, as a crash that loses
/// the directory change would give it back.
#[derive(Debug)]
struct JournaledUnlink {
    path: PathBuf,
    bytes: Vec<u8>,
    /// The name a rename gave it (gone again if the rename is lost).
    renamed_to: Option<PathBuf>,
}

#[derive(Debug)]
struct JournalEntry {
    /// The file written: a path can be deleted and created anew, and an
    /// entry must never be undone onto a file it was not written to.
    inode: u64,
    position: u64,
    old: Vec<u8>,
    sequence: u64,
}

fn inode_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|metadata| metadata.ino())
}

/// What [`FaultInjector::simulate_crash`] undid.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CrashSummary {
    /// Writes no fdatasync had covered.
    pub unsynced_writes: usize,
    /// Bytes put back to what they were before those writes.
    pub undone_bytes: u64,
}

/// A file opened for direct I/O, with its path for error context.
pub struct DirectFile {
    file: DmaFile,
    path: PathBuf,
    faults: Option<Arc<FaultInjector>>,
}

thread_local! {
    static PROBED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> = Default::default();
}

/// glommio decides per device (once per thread) whether to use its polled
/// ring by reading the first block of the first file it opens there. When
/// that file is empty the read trivially succeeds and polling is wrongly
/// enabled, after which every direct read fails with EOPNOTSUPP on devices
/// without poll queues. Open a non-empty probe file first so the decision
/// is made on a real read.
async fn probe_device_once(directory: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(directory)?.dev();
    if PROBED_DEVICES.with(|devices| devices.borrow().contains(&device)) {
        return Ok(());
    }
    let probe_path = directory.join(format!(".iopoll-probe-{}.tmp", std::process::id()));
    std::fs::write(&probe_path, [0u8; 4096])?;
    let opened = DmaFile::open(&probe_path).await.map_err(os_error);
    let removed = std::fs::remove_file(&probe_path);
    opened?.close().await.map_err(os_error)?;
    removed?;
    PROBED_DEVICES.with(|devices| devices.borrow_mut().insert(device));
    Ok(())
}

/// Convert a glommio error to an `io::Error` that keeps the OS errno, so
/// callers can tell ENOSPC from EIO (glommio's own conversion drops it).
fn os_error<T>(error: glommio::GlommioError<T>) -> io::Error {
    match error {
        glommio::GlommioError::IoError(source) => source,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

impl DirectFile {
    /// Open (creating if absent) a file for direct reads and writes.
    pub async fn open_read_write(path: &Path, faults: Option<Arc<FaultInjector>>) -> io::Result<DirectFile> {
        probe_device_once(parent_of(path)).await?;
        let file = OpenOptions::new().read(true).write(true).create(true).dma_open(path).await.map_err(os_error)?;
        Ok(DirectFile { file, path: path.to_path_buf(), faults })
    }

    /// Open an existing file for direct reads only.
    pub async fn open_read_only(path: &Path, faults: Option<Arc<FaultInjector>>) -> io::Result<DirectFile> {
        probe_device_once(parent_of(path)).await?;
        let file = OpenOptions::new().read(true).dma_open(path).await.map_err(os_error)?;
        // A delayed open completes first: the file is the one the path
        // named then, whatever the path names when the caller resumes.
        if let Some(delay) = faults.as_ref().and_then(|faults| faults.read_delay_for(path)) {
            crate::runtime::sleep(delay).await;
        }
        Ok(DirectFile { file, path: path.to_path_buf(), faults })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Allocate an aligned buffer suitable for this file.
    pub fn alloc_buffer(&self, size: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(size)
    }

    fn inject(&self, operation: FaultOperation) -> io::Result<()> {
        match &self.faults {
            Some(faults) => faults.check(operation),
            None => Ok(()),
        }
    }

    /// Write all of `buffer` at the aligned `position`; a short write is an error.
    pub async fn write_all_at(&self, buffer: Rc<DmaBuffer>, position: u64) -> io::Result<()> {
        self.inject(FaultOperation::Write)?;
        let expected = buffer.len();
        let old = self.faults.as_ref().and_then(|faults| faults.journal_capture(&self.path, position, expected));
        let in_flight = self.faults.as_ref().map(|faults| faults.write_started(&self.path, position, expected));
        let delay_us = self.faults.as_ref().map_or(0, |faults| faults.write_delay_us.load(Ordering::SeqCst));
        if delay_us > 0 {
            crate::runtime::sleep(std::time::Duration::from_micros(delay_us as u64)).await;
        }
        let written = self.file.write_rc_at(buffer, position).await.map_err(os_error);
        drop(in_flight);
        let written = written?;
        if let (Some(faults), Some(old)) = (&self.faults, old) {
            faults.journal_record(&self.path, position, old);
        }
        if written != expected {
            // A short direct write means the device ran out of space or failed;
            // treat it as an error rather than guessing what reached the disk.
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {expected} bytes at {position}"),
            ));
        }
        Ok(())
    }

    /// fdatasync the file.
    pub async fn fdatasync(&self) -> io::Result<()> {
        self.inject(FaultOperation::Fsync)?;
        let covered = self.faults.as_ref().map_or(0, |faults| faults.journal_length(&self.path));
        let delay_us = self.faults.as_ref().map_or(0, |faults| faults.sync_delay_us.load(Ordering::SeqCst));
        if delay_us > 0 {
            crate::runtime::sleep(std::time::Duration::from_micros(delay_us as u64)).await;
        }
        let started = std::time::Instant::now();
        let outcome = self.file.fdatasync().await.map_err(os_error);
        crate::state::latency::record_fsync(started.elapsed());
        if let (Some(faults), Ok(())) = (&self.faults, &outcome) {
            faults.journal_synced(&self.path, covered);
        }
        outcome
    }

    /// Reserve space up to `size` bytes (the file's size grows; new space reads as zeros).
    pub async fn preallocate(&self, size: u64) -> io::Result<()> {
        self.inject(FaultOperation::Preallocate)?;
        self.file.pre_allocate(size, false).await.map_err(os_error)
    }

    /// Truncate (or extend with zeros) to `size` bytes.
    pub async fn truncate(&self, size: u64) -> io::Result<()> {
        self.inject(FaultOperation::Truncate)?;
        self.file.truncate(size).await.map_err(os_error)
    }

    /// Current size of the file.
    pub async fn file_size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(os_error)
    }

    /// Read `size` bytes at any `position` (unaligned is fine).
    pub async fn read_at(&self, position: u64, size: usize) -> io::Result<ReadResult> {
        if let Some(delay) = self.faults.as_ref().and_then(|faults| faults.read_delay_for(&self.path)) {
            crate::runtime::sleep(delay).await;
        }
        self.file.read_at(position, size).await.map_err(os_error)
    }

    /// Close the file, reporting any error.
    pub async fn close(self) -> io::Result<()> {
        self.file.close().await.map_err(os_error)
    }
}

/// fsync a directory so that creations, renames and deletions in it are durable.
pub fn sync_directory(path: &Path) -> io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Read a whole small file; Ok(None) when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Unlink `path` (absent already is fine). Each unlink is a metadata
/// operation the injector can fail, so a crash can land between two of a
/// group; with a crash journal the file is remembered until
/// [`sync_directory_of`] covers it.
pub fn remove_file(path: &Path, faults: Option<&FaultInjector>) -> io::Result<()> {
    if let Some(faults) = faults {
        faults.check(FaultOperation::Unlink)?;
        faults.journal_unlink(path, None);
        let delay_us = faults.unlink_delay_us.load(Ordering::SeqCst);
        if delay_us > 0 {
            // Only ever off the executor: unlinks run in `run_blocking` or
            // on a thread of their own (`run_on_own_thread`).
            std::thread::sleep(std::time::Duration::from_micros(delay_us as u64));
        }
    }
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Rename `from` to `to` (same directory). A metadata operation the
/// injector counts and fails like an unlink: for the old name it is one,
/// and with a crash journal a crash before the directory fsync may give
/// the file back its old name.
pub fn rename_file(from: &Path, to: &Path, faults: Option<&FaultInjector>) -> io::Result<()> {
    if let Some(faults) = faults {
        faults.check(FaultOperation::Unlink)?;
        faults.journal_unlink(from, Some(to));
    }
    std::fs::rename(from, to)
}

/// Turn every block of the file at `path` back into zeros without giving
/// it back to the file system, and make that durable. On ext4
/// `FALLOC_FL_ZERO_RANGE` marks the extents unwritten, a metadata change:
/// no data is written, and no extent is freed, so a file system mounted
/// with `discard` sends the device no discard (XFS frees and reallocates:
/// correct, but no saving). Freeing a 1 GiB segment cost this disk
/// 0.17-3 s of discards (BENCHMARKS.md). Unwritten extents read as zeros, which is
/// what the tail scan of a segment relies on past its written end. File
/// systems without it answer `EOPNOTSUPP`. A zeroing is a preallocation
/// to the injector.
pub fn zero_file(path: &Path, faults: Option<&FaultInjector>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if let Some(faults) = faults {
        faults.check(FaultOperation::Preallocate)?;
    }
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let length_bytes = file.metadata()?.len();
    let length = libc::off_t::try_from(length_bytes).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    if length > 0 {
        let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on a file descriptor `file` owns; no memory is passed.
        if unsafe { libc::fallocate(file.as_raw_fd(), mode, 0, length) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    file.sync_all()
}

/// (available to unprivileged users, total) bytes of the file system
/// holding `path`.
pub fn free_space(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statvfs only writes into `stats`, a plain struct it owns for the call.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a NUL-terminated path and `stats` a valid statvfs.
    if unsafe { libc::statvfs(name.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let block_bytes = stats.f_frsize;
    Ok((stats.f_bavail.saturating_mul(block_bytes), stats.f_blocks.saturating_mul(block_bytes)))
}

/// [`sync_directory`], telling the injector (if any) its unlinks are
/// durable. After a simulated crash it fails instead: nothing more becomes
/// durable.
pub fn sync_directory_of(directory: &Path, faults: Option<&FaultInjector>) -> io::Result<()> {
    if faults.is_some_and(FaultInjector::crashed) {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    sync_directory(directory)?;
    if let Some(faults) = faults {
        faults.directory_synced(directory);
    }
    Ok(())
}

/// Write `bytes` to `path` atomically: temp file, fsync, rename, fsync directory.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let prepared = prepare_file(path, bytes)?;
    commit_prepared(&prepared, path)
}

/// The first half of [`write_file_atomically`]: `bytes` written and synced
/// to `path` + `.tmp`, which is returned. Everything that allocates space
/// happens here; [`commit_prepared`] only renames. Recovery deletes a
/// `.tmp` file a crash left.
pub fn prepare_file(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write;
    let directory = path.parent().ok_or_else(|| io::Error::other("path has no parent"))?;
    let mut temp_name = path.file_name().ok_or_else(|| io::Error::other("path has no name"))?.to_os_string();
    temp_name.push(".tmp");
    let temp_path = directory.join(temp_name);
    let mut file = std::fs::File::create(&temp_path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(temp_path)
}

/// The second half of [`write_file_atomically`]: rename the prepared file
/// over `path` and sync the directory. Allocates no space.
pub fn commit_prepared(prepared: &Path, path: &Path) -> io::Result<()> {
    std::fs::rename(prepared, path)?;
    sync_directory(parent_of(path))
}

#[cfg(test)]
mod tests {
    use super::unsettled;

    #[test]
    fn unsettled_leaves_only_what_no_newer_landed_write_covers() {
        assert_eq!(unsettled(&[], 0, 100), vec![(0, 100)]);
        assert_eq!(unsettled(&[(20, 30)], 0, 100), vec![(0, 20), (30, 100)]);
        assert_eq!(unsettled(&[(0, 50), (40, 100)], 0, 100), Vec::<(u64, u64)>::new());
        assert_eq!(unsettled(&[(90, 200), (0, 10)], 0, 100), vec![(10, 90)]);
        assert_eq!(unsettled(&[(7, 7)], 0, 10), vec![(0, 7), (7, 10)]);
    }
}
