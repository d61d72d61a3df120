//! Direct-I/O write path of the active segment.
//!
//! Appends copy batch bytes into an aligned *staging* buffer that maps to
//! the file at an aligned position. A full staging buffer is written as is
//! (no copy) and may be in flight together with others: they never overlap.
//! The unwritten part of the current staging buffer is written as a *tail*
//! (copied into a small cached buffer, zero padded to alignment). Its last
//! block is rewritten by the next write of the same buffer, so at most one
//! tail is in flight and a full buffer that overlaps it waits for it.
//!
//! Buffers are reused: full buffers return to a free list when their write
//! completes, tail buffers to a small exact-size cache. In steady state an
//! append allocates nothing: every buffer lives in the `Rc` a write job
//! hands to io_uring from the moment it is allocated, so taking a job wraps
//! nothing and recycling keeps the `Rc` (it is unique again once the write
//! completed).

use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use glommio::io::DmaBuffer;

use super::config::DIRECT_IO_ALIGNMENT;
use super::io::DirectFile;

const TAIL_CACHE_MAX: usize = 8;

thread_local! {
    /// Bytes of write buffers held by all writers of this executor thread
    /// (one shard), compared with `write_buffer_budget_bytes`.
    static HELD_BUFFER_BYTES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Write-buffer bytes held by the writers of the current thread.
pub fn held_buffer_bytes() -> u64 {
    HELD_BUFFER_BYTES.with(std::cell::Cell::get)
}

fn hold(bytes: usize) {
    HELD_BUFFER_BYTES.with(|held| held.set(held.get() + bytes as u64));
}

fn release(bytes: usize) {
    HELD_BUFFER_BYTES.with(|held| held.set(held.get().saturating_sub(bytes as u64)));
}

fn align_down(value: u64) -> u64 {
    value - value % DIRECT_IO_ALIGNMENT as u64
}

fn align_up(value: u64) -> u64 {
    align_down(value + DIRECT_IO_ALIGNMENT as u64 - 1)
}

/// One aligned write.
pub struct WriteJob {
    /// Aligned bytes to write.
    pub buffer: Rc<DmaBuffer>,
    /// Aligned file position.
    pub position: u64,
    /// File position of the staging buffer the bytes came from.
    pub staging_position: u64,
    full: bool,
}

/// Mutable access to a buffer only the writer holds (staging, free or
/// cached buffers: none of them is in flight).
fn exclusive(buffer: &mut Rc<DmaBuffer>) -> &mut DmaBuffer {
    Rc::get_mut(buffer).expect("a buffer the writer fills is not in flight")
}

/// Buffers and positions of the active segment's writer.
pub struct SegmentWriter {
    file: Rc<DirectFile>,
    staging: Rc<DmaBuffer>,
    staging_position: u64,
    filled: usize,
    submitted: usize,
    full: VecDeque<(Rc<DmaBuffer>, u64, usize)>,
    free_full: Vec<Rc<DmaBuffer>>,
    allocated_full: usize,
    tail_cache: Vec<Rc<DmaBuffer>>,
    preallocated_to: u64,
    buffer_bytes: usize,
    max_buffers: usize,
    allocations: u64,
}

impl SegmentWriter {
    /// Open a writer whose next byte goes to `position`; the partial block
    /// before it is read back so the next write reproduces it exactly.
    pub async fn open(
        file: Rc<DirectFile>,
        position: u64,
        buffer_bytes: usize,
        max_buffers: usize,
    ) -> io::Result<SegmentWriter> {
        let preallocated_to = file.file_size().await?;
        let staging_position = align_down(position);
        let filled = (position - staging_position) as usize;
        let mut staging = file.alloc_buffer(buffer_bytes);
        hold(staging.len());
        if filled > 0 {
            let block = file.read_at(staging_position, filled).await?;
            if block.len() != filled {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "partial block shorter than the log"));
            }
            staging.as_bytes_mut()[..filled].copy_from_slice(&block);
        }
        Ok(SegmentWriter {
            file,
            staging: Rc::new(staging),
            staging_position,
            filled,
            submitted: filled,
            full: VecDeque::new(),
            free_full: Vec::new(),
            allocated_full: 1,
            tail_cache: Vec::new(),
            preallocated_to,
            buffer_bytes,
            max_buffers,
            allocations: 1,
        })
    }

    /// The file being written.
    pub fn file(&self) -> &Rc<DirectFile> {
        &self.file
    }

    /// Logical end: the position after the last byte copied in.
    pub fn position(&self) -> u64 {
        self.staging_position + self.filled as u64
    }

    /// Buffer allocations so far (for the allocation-free steady-state check).
    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// True when bytes are waiting to be written.
    pub fn has_unwritten(&self) -> bool {
        !self.full.is_empty() || self.filled > self.submitted
    }

    /// Space is reserved up to here.
    pub fn preallocated_to(&self) -> u64 {
        self.preallocated_to
    }

    /// Record a successful preallocation.
    pub fn set_preallocated_to(&mut self, size: u64) {
        self.preallocated_to = self.preallocated_to.max(size);
    }

    /// The file was cut to `size` (a seal): nothing past it is reserved.
    pub fn preallocation_cut_to(&mut self, size: u64) {
        self.preallocated_to = self.preallocated_to.min(size);
    }

    /// Copy as much of `bytes` as fits in the staging buffer; returns the count.
    pub fn copy_in(&mut self, bytes: &[u8]) -> usize {
        self.grow_staging();
        let room = self.buffer_bytes - self.filled;
        let count = room.min(bytes.len());
        exclusive(&mut self.staging).as_bytes_mut()[self.filled..self.filled + count].copy_from_slice(&bytes[..count]);
        self.filled += count;
        count
    }

    /// True when the staging buffer is full and must rotate before more bytes fit.
    pub fn staging_full(&self) -> bool {
        self.filled == self.buffer_bytes
    }

    /// Queue the full staging buffer for writing and start a fresh one.
    /// Returns false (doing nothing) when every buffer is still in flight.
    pub fn rotate(&mut self) -> bool {
        assert!(self.staging_full(), "rotate with a staging buffer that is not full");
        if self.submitted == self.buffer_bytes {
            // Tail writes already took all of it (each from its own copy), so
            // nothing in flight reads this buffer: reuse it in place. Queueing
            // it would ask for a write of nothing.
            self.staging_position += self.buffer_bytes as u64;
            self.filled = 0;
            self.submitted = 0;
            return true;
        }
        let fresh = match self.free_full.pop() {
            Some(buffer) => buffer,
            None if self.allocated_full < self.max_buffers => {
                self.allocated_full += 1;
                self.allocations += 1;
                hold(self.buffer_bytes);
                Rc::new(self.file.alloc_buffer(self.buffer_bytes))
            }
            None => return false,
        };
        let old = std::mem::replace(&mut self.staging, fresh);
        let skip = align_down(self.submitted as u64) as usize;
        self.full.push_back((old, self.staging_position, skip));
        self.staging_position += self.buffer_bytes as u64;
        self.filled = 0;
        self.submitted = 0;
        true
    }

    fn tail_buffer(&mut self, length: usize) -> Rc<DmaBuffer> {
        if let Some(index) = self.tail_cache.iter().position(|buffer| buffer.len() == length) {
            return self.tail_cache.swap_remove(index);
        }
        self.allocations += 1;
        let mut buffer = self.file.alloc_buffer(length);
        buffer.trim_to_size(length);
        // Tail buffers count toward the shard's budget like full ones: a
        // partition keeps up to TAIL_CACHE_MAX of them, each up to a whole
        // buffer, and uncounted they let a thousand partitions hold several
        // times the budget (RSS grew with every run).
        hold(buffer.len());
        Rc::new(buffer)
    }

    fn release_tail_cache(&mut self) {
        for buffer in self.tail_cache.drain(..) {
            release(buffer.len());
        }
    }

    /// Bring a shrunk staging buffer back to full size, keeping its bytes.
    fn grow_staging(&mut self) {
        if self.staging.len() >= self.buffer_bytes {
            return;
        }
        let mut staging = self.file.alloc_buffer(self.buffer_bytes);
        staging.as_bytes_mut()[..self.filled].copy_from_slice(&self.staging.as_bytes()[..self.filled]);
        release(self.staging.len());
        hold(staging.len());
        self.allocations += 1;
        self.staging = Rc::new(staging);
    }

    /// Give memory back while idle: keep only the partial last block of the
    /// staging buffer and drop spare buffers. Call only when nothing is
    /// unwritten and no write is in flight.
    pub fn shrink(&mut self) {
        assert!(!self.has_unwritten(), "shrink with unwritten bytes");
        for buffer in self.free_full.drain(..) {
            release(buffer.len());
        }
        self.allocated_full = 1;
        self.release_tail_cache();
        if self.staging.len() > DIRECT_IO_ALIGNMENT {
            // Everything is written: keep only the partial last block and
            // move the staging window up to it.
            let keep_from = align_down(self.filled as u64) as usize;
            let kept = self.filled - keep_from;
            let mut small = self.file.alloc_buffer(DIRECT_IO_ALIGNMENT);
            small.as_bytes_mut()[..kept].copy_from_slice(&self.staging.as_bytes()[keep_from..self.filled]);
            release(self.staging.len());
            hold(small.len());
            self.staging = Rc::new(small);
            self.staging_position += keep_from as u64;
            self.filled = kept;
            self.submitted = kept;
        }
    }

    /// Take the oldest full buffer for writing, unless a tail write of the
    /// same buffer is still in flight (`tail_in_flight`, the staging
    /// position of that tail): the tail's last block, zero padded, is the
    /// first block this write covers, and two writes in flight to one block
    /// may land in either order — the tail's zeros over the records. That
    /// holds also when the tails wrote less than one block (`skip` is 0:
    /// this write starts at the buffer's first block, which the tail
    /// covered).
    pub fn take_full(&mut self, tail_in_flight: Option<u64>) -> Option<WriteJob> {
        let &(_, position, _) = self.full.front()?;
        if tail_in_flight == Some(position) {
            return None;
        }
        let (buffer, position, skip) = self.full.pop_front().expect("front exists");
        assert!(skip < self.buffer_bytes, "a wholly written buffer is reused in place, never queued");
        if skip == 0 {
            return Some(WriteJob { buffer, position, staging_position: position, full: true });
        }
        // Part of it was written by earlier tail writes: write only the rest.
        let mut tail = self.tail_buffer(self.buffer_bytes - skip);
        exclusive(&mut tail).as_bytes_mut().copy_from_slice(&buffer.as_bytes()[skip..]);
        self.free_full.push(buffer);
        Some(WriteJob { buffer: tail, position: position + skip as u64, staging_position: position, full: false })
    }

    /// Take the unwritten part of the staging buffer (from the last aligned
    /// boundary already written, zero padded to alignment).
    pub fn take_tail(&mut self) -> Option<WriteJob> {
        if self.filled <= self.submitted {
            return None;
        }
        let start = align_down(self.submitted as u64) as usize;
        let end = align_up(self.filled as u64) as usize;
        let mut tail = self.tail_buffer(end - start);
        let bytes = exclusive(&mut tail).as_bytes_mut();
        let used = self.filled - start;
        bytes[..used].copy_from_slice(&self.staging.as_bytes()[start..self.filled]);
        bytes[used..].fill(0);
        self.submitted = self.filled;
        let position = self.staging_position + start as u64;
        Some(WriteJob { buffer: tail, position, staging_position: self.staging_position, full: false })
    }

    /// Whether the staging buffer is at full size.
    pub fn is_shrunk(&self) -> bool {
        self.staging.len() < self.buffer_bytes
    }

    /// Return a finished job's buffer for reuse.
    pub fn recycle(&mut self, job: WriteJob) {
        let buffer = job.buffer;
        if Rc::strong_count(&buffer) != 1 {
            // Still referenced elsewhere: it cannot be filled again.
            return;
        }
        if job.full {
            self.free_full.push(buffer);
        } else if self.tail_cache.len() < TAIL_CACHE_MAX {
            self.tail_cache.push(buffer);
        } else {
            release(buffer.len());
        }
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        release(self.staging.len());
        for buffer in &self.free_full {
            release(buffer.len());
        }
        for (buffer, _, _) in &self.full {
            release(buffer.len());
        }
        self.release_tail_cache();
    }
}

/// Smallest amount reserved ahead of the write position.
pub const MIN_PREALLOCATE_BYTES: u64 = 1 << 20;

/// Where to reserve space up to, for a write ending at `needed` in a segment
/// already `written` long. The reservation ahead grows with the segment
/// (1 MiB, then as much as is written, capped at `preallocate_bytes`), so a
/// thousand quiet partitions reserve megabytes, not a thousand times the cap.
pub fn preallocation_target(needed: u64, written: u64, preallocate_bytes: u64) -> u64 {
    let ahead = written.clamp(MIN_PREALLOCATE_BYTES, preallocate_bytes.max(MIN_PREALLOCATE_BYTES));
    (needed + ahead).div_ceil(MIN_PREALLOCATE_BYTES) * MIN_PREALLOCATE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_wholly_written_by_a_tail_is_reused_in_place_when_it_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        crate::runtime::block_on_executor("writer-test", move || async move {
            let file = Rc::new(DirectFile::open_read_write(&path, None).await.unwrap());
            let mut writer = SegmentWriter::open(file, 0, 8192, 2).await.unwrap();
            assert_eq!(writer.copy_in(&[7u8; 8192]), 8192);
            // The appender could not rotate (no free buffer), so the flusher
            // wrote the full staging buffer as a tail.
            let tail = writer.take_tail().expect("the whole buffer as a tail");
            assert_eq!((tail.position, tail.buffer.len()), (0, 8192));
            assert!(writer.rotate());
            assert!(writer.take_full(None).is_none(), "nothing of it is left to write");
            assert_eq!(writer.copy_in(&[8u8; 100]), 100);
            let next = writer.take_tail().expect("the new bytes");
            assert_eq!((next.position, &next.buffer.as_bytes()[..100]), (8192, &[8u8; 100][..]));
        })
        .unwrap();
    }

    #[test]
    fn a_full_buffer_waits_for_a_tail_of_less_than_one_block_still_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        crate::runtime::block_on_executor("writer-test", move || async move {
            let file = Rc::new(DirectFile::open_read_write(&path, None).await.unwrap());
            let mut writer = SegmentWriter::open(file, 0, 8192, 2).await.unwrap();
            assert_eq!(writer.copy_in(&[7u8; 4014]), 4014);
            // A producer waits for durability: the flusher writes block 0,
            // bytes 4014.. zero padded.
            let tail = writer.take_tail().expect("a tail of the first block");
            assert_eq!((tail.position, tail.buffer.len(), tail.staging_position), (0, 4096, 0));
            assert_eq!(writer.copy_in(&[8u8; 8192]), 8192 - 4014);
            assert!(writer.rotate());
            assert!(writer.take_full(Some(0)).is_none(), "block 0 would be written twice at once");
            let full = writer.take_full(None).expect("once the tail has landed");
            assert_eq!((full.position, full.buffer.len()), (0, 8192), "the whole buffer, block 0 again");
        })
        .unwrap();
    }

    #[test]
    fn tail_buffers_count_toward_the_budget_and_shrink_gives_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        crate::runtime::block_on_executor("writer-test", move || async move {
            let before = held_buffer_bytes();
            let file = Rc::new(DirectFile::open_read_write(&path, None).await.unwrap());
            let mut writer = SegmentWriter::open(file, 0, 8192, 2).await.unwrap();
            assert_eq!(held_buffer_bytes() - before, 8192, "the staging buffer");
            writer.copy_in(&[1u8; 5000]);
            let tail = writer.take_tail().expect("a tail");
            assert_eq!(held_buffer_bytes() - before, 8192 + 8192, "the tail's aligned copy counts too");
            writer.recycle(tail);
            assert_eq!(held_buffer_bytes() - before, 8192 + 8192, "a cached tail buffer stays counted");
            writer.shrink();
            assert_eq!(held_buffer_bytes() - before, DIRECT_IO_ALIGNMENT as u64, "only the partial block is kept");
            drop(writer);
            assert_eq!(held_buffer_bytes(), before, "dropping the writer gives everything back");
        })
        .unwrap();
    }

    #[test]
    fn preallocation_grows_with_the_segment_and_is_capped() {
        let cap = 64 << 20;
        assert_eq!(preallocation_target(1000, 0, cap), 2 << 20);
        assert_eq!(preallocation_target(10 << 20, 10 << 20, cap), 20 << 20);
        assert_eq!(preallocation_target(500 << 20, 500 << 20, cap), 564 << 20);
        assert!(preallocation_target(4097, 4096, cap) >= 4097);
    }
}
