//! An encoding buffer that leaves chosen byte strings out of the frame it
//! builds: a Fetch answer's records (nearly all of its bytes) go on the
//! wire from the buffer they were transcoded into, beside the encoded
//! rest, instead of being copied into one frame (a third of the copying a
//! Kafka-consuming node did).
//!
//! The codec writes a byte string with one `put_slice` of the string's own
//! bytes, so a slice that *is* one of the chosen strings (same address,
//! same length) becomes an insert of that string; everything else is
//! copied into the head. A false match cannot send wrong bytes: the same
//! address and length as a live, immutable string are that string. The
//! result is a [`FramePieces`], the frame the native protocol already
//! writes in pieces.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes};
use kafka_protocol::protocol::buf::ByteBufMut;

use crate::protocol::FramePieces;

/// A [`ByteBufMut`] building a [`FramePieces`]: bytes go into its head,
/// except that a `put_slice` of one of `spliced` becomes an insert.
pub struct SplicingBuffer<'a> {
    frame: FramePieces,
    spliced: &'a [Bytes],
    /// The shortest of `spliced`: the codec writes every integer, varint
    /// byte and short string through `put_slice` too, and one shorter
    /// than this is no search at all.
    shortest_spliced_bytes: usize,
    /// Where in `spliced` the next search starts: the codec writes the
    /// strings in the order the answer holds them, which is the order
    /// they are usually given in, so a search takes one comparison.
    next_spliced: usize,
    /// Bytes of the frame held by the inserts.
    inserted_bytes: usize,
}

impl<'a> SplicingBuffer<'a> {
    /// A buffer appending to `head` (after the bytes it holds already),
    /// leaving out the strings in `spliced`.
    pub fn new(head: Vec<u8>, spliced: &'a [Bytes]) -> SplicingBuffer<'a> {
        let frame = FramePieces { head, inserts: Vec::with_capacity(spliced.len()) };
        // Empty strings are never spliced (empty slices may share an address).
        let shortest_spliced_bytes = spliced.iter().map(Bytes::len).min().unwrap_or(0).max(1);
        SplicingBuffer { frame, spliced, shortest_spliced_bytes, next_spliced: 0, inserted_bytes: 0 }
    }

    /// The frame built.
    pub fn finish(self) -> FramePieces {
        debug_assert_eq!(self.frame.len(), self.head_and_inserted_bytes(), "inserts counted");
        self.frame
    }

    fn head_and_inserted_bytes(&self) -> usize {
        self.frame.head.len() + self.inserted_bytes
    }

    /// Which of `spliced` `source` is: the same bytes in the same place.
    fn spliced_index(&self, source: &[u8]) -> Option<usize> {
        if source.len() < self.shortest_spliced_bytes || self.spliced.is_empty() {
            return None;
        }
        let count = self.spliced.len();
        (0..count).map(|step| (self.next_spliced + step) % count).find(|index| {
            let candidate = &self.spliced[*index];
            candidate.as_ptr() == source.as_ptr() && candidate.len() == source.len()
        })
    }

    /// Copy every insert into the head, so that frame offsets are head
    /// positions again: for a codec that seeks back or fills a gap (none
    /// of the messages this node encodes does), correct if not fast.
    fn join(&mut self) {
        self.frame = std::mem::take(&mut self.frame).joined();
        self.inserted_bytes = 0;
    }
}

// SAFETY: every method hands on to the head `Vec<u8>`'s own `BufMut`,
// whose contract it keeps; `put_slice` only adds whole inserts beside it.
unsafe impl BufMut for SplicingBuffer<'_> {
    fn remaining_mut(&self) -> usize {
        self.frame.head.remaining_mut().saturating_sub(self.inserted_bytes)
    }

    unsafe fn advance_mut(&mut self, count: usize) {
        // SAFETY: the caller initialised `count` bytes of the chunk the
        // head's `chunk_mut` returned (the contract passed on).
        unsafe { self.frame.head.advance_mut(count) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.frame.head.chunk_mut()
    }

    fn put_slice(&mut self, source: &[u8]) {
        match self.spliced_index(source) {
            Some(index) => {
                let bytes = self.spliced[index].clone();
                self.inserted_bytes += bytes.len();
                self.frame.inserts.push((self.frame.head.len(), bytes));
                self.next_spliced = (index + 1) % self.spliced.len();
            }
            None => self.frame.head.extend_from_slice(source),
        }
    }
}

impl ByteBufMut for SplicingBuffer<'_> {
    fn offset(&self) -> usize {
        self.head_and_inserted_bytes()
    }

    fn seek(&mut self, offset: usize) {
        self.join();
        self.frame.head.resize(offset, 0);
    }

    fn range(&mut self, range: Range<usize>) -> &mut [u8] {
        self.join();
        &mut self.frame.head[range]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(frame: &FramePieces) -> Vec<u8> {
        frame.pieces().flatten().copied().collect()
    }

    #[test]
    fn a_chosen_string_becomes_an_insert_and_its_copy_does_not() {
        let records = Bytes::from(vec![7u8; 1000]);
        let copy = records.to_vec();
        let spliced = [records.clone()];
        let mut buffer = SplicingBuffer::new(Vec::new(), &spliced);
        buffer.put_u32(1);
        buffer.put_slice(&records);
        buffer.put_u8(2);
        // Same bytes elsewhere, and part of the string: copied.
        buffer.put_slice(&copy);
        buffer.put_slice(&records[..10]);
        assert_eq!(buffer.offset(), 4 + 1000 + 1 + 1000 + 10);
        let frame = buffer.finish();
        assert_eq!(frame.inserts.len(), 1);
        assert_eq!(frame.inserts[0].0, 4, "inserted where it was put");
        assert_eq!(frame.inserts[0].1.as_ptr(), records.as_ptr(), "not copied");
        assert_eq!(frame.head.len(), 4 + 1 + 1000 + 10);
        let mut expected = vec![0, 0, 0, 1];
        expected.extend_from_slice(&records);
        expected.push(2);
        expected.extend_from_slice(&copy);
        expected.extend_from_slice(&records[..10]);
        assert_eq!(joined(&frame), expected);
    }

    #[test]
    fn strings_put_out_of_order_are_found_and_empty_ones_never_spliced() {
        let (first, second) = (Bytes::from(vec![1u8; 100]), Bytes::from(vec![2u8; 200]));
        let spliced = [first.clone(), second.clone(), Bytes::new()];
        let mut buffer = SplicingBuffer::new(Vec::new(), &spliced);
        buffer.put_slice(&second);
        buffer.put_slice(&[]);
        buffer.put_slice(&first);
        let frame = buffer.finish();
        let lengths: Vec<usize> = frame.inserts.iter().map(|(_, bytes)| bytes.len()).collect();
        assert_eq!(lengths, [200, 100]);
        assert!(frame.head.is_empty());
    }

    #[test]
    fn seeking_past_an_insert_joins_the_frame_first() {
        let records = Bytes::from(vec![9u8; 64]);
        let spliced = [records.clone()];
        let mut buffer = SplicingBuffer::new(vec![1], &spliced);
        buffer.put_slice(&records);
        buffer.seek(1 + 64 + 3);
        buffer.put_u8(5);
        let frame = buffer.finish();
        assert!(frame.inserts.is_empty(), "joined");
        let mut expected = vec![1];
        expected.extend_from_slice(&records);
        expected.extend_from_slice(&[0, 0, 0, 5]);
        assert_eq!(frame.head, expected);
    }

    #[test]
    fn filling_a_gap_before_an_insert_joins_the_frame_first() {
        let records = Bytes::from(vec![9u8; 64]);
        let spliced = [records.clone()];
        let mut buffer = SplicingBuffer::new(Vec::new(), &spliced);
        let gap = buffer.put_gap(4);
        buffer.put_slice(&records);
        buffer.gap_buf(gap).copy_from_slice(&[1, 2, 3, 4]);
        buffer.put_u8(5);
        let frame = buffer.finish();
        assert!(frame.inserts.is_empty(), "joined");
        let mut expected = vec![1, 2, 3, 4];
        expected.extend_from_slice(&records);
        expected.push(5);
        assert_eq!(frame.head, expected);
    }
}
