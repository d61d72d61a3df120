//! The field codec: little-endian [`Writer`] and [`Reader`], frame lengths.

use bytes::Bytes;

use super::request::REQUEST_HEADER_BYTES;
use super::response::RESPONSE_HEADER_BYTES;
use super::types::*;

/// Byte strings shared rather than copied into a frame when at least this
/// long: below it, copying costs less than the two more writes to the
/// socket a shared one takes (the string, then the head after it).
pub const SHARED_BYTES_MIN_BYTES: usize = 16 << 10;

/// Appends little-endian fields to a buffer.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// Where large shared byte strings go instead of `out` (see
    /// [`Writer::diverting`]).
    inserts: Option<&'a mut Vec<(usize, Bytes)>>,
}

impl<'a> Writer<'a> {
    /// Write into `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Writer<'a> {
        Writer { out, inserts: None }
    }
    /// Write into `out`, except that a shared byte string of
    /// [`SHARED_BYTES_MIN_BYTES`] or more is left out of it (its length
    /// is written) and listed in `inserts` with the position in `out` it
    /// belongs at.
    pub fn diverting(out: &'a mut Vec<u8>, inserts: &'a mut Vec<(usize, Bytes)>) -> Writer<'a> {
        Writer { out, inserts: Some(inserts) }
    }
    pub(super) fn u8(&mut self, value: u8) {
        self.out.push(value);
    }
    pub(super) fn u16(&mut self, value: u16) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    pub(super) fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    pub(super) fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    pub(super) fn string(&mut self, value: &str) {
        let length = value.len().min(u16::MAX as usize);
        self.u16(length as u16);
        self.out.extend_from_slice(&value.as_bytes()[..length]);
    }
    pub(super) fn bytes(&mut self, value: &[u8]) {
        self.u32(value.len() as u32);
        self.raw(value);
    }
    /// A byte string that may be left out of the frame (see [`Writer::diverting`]).
    pub(super) fn shared_bytes(&mut self, value: &Bytes) {
        self.u32(value.len() as u32);
        match &mut self.inserts {
            Some(inserts) if value.len() >= SHARED_BYTES_MIN_BYTES => inserts.push((self.out.len(), value.clone())),
            _ => self.raw(value),
        }
    }
    /// Bytes without a length: the rest of a byte string whose length is written.
    pub(super) fn raw(&mut self, value: &[u8]) {
        self.out.extend_from_slice(value);
    }
}

/// Reads little-endian fields, bounds-checked.
pub struct Reader<'a> {
    bytes: &'a [u8],
    /// The frame `bytes` is, when the caller owns it as [`Bytes`]: shared
    /// byte strings ([`Reader::shared_bytes`]) are then slices of it, not
    /// copies.
    frame: Option<&'a Bytes>,
    pub(super) position: usize,
}

impl<'a> Reader<'a> {
    /// Read from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, frame: None, position: 0 }
    }
    /// Read from a frame the caller owns: byte strings decoded as
    /// [`Bytes`] share its memory.
    pub fn over_frame(frame: &'a Bytes) -> Reader<'a> {
        Reader { bytes: frame, frame: Some(frame), position: 0 }
    }
    pub(super) fn take(&mut self, length: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        let end = self.position.checked_add(length).ok_or(ProtocolError::Truncated(what))?;
        let slice = self.bytes.get(self.position..end).ok_or(ProtocolError::Truncated(what))?;
        self.position = end;
        Ok(slice)
    }
    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.take(1, what)?[0])
    }
    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    pub(super) fn string(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let length = self.u16(what)? as usize;
        let bytes = self.take(length, what)?;
        std::str::from_utf8(bytes).map(str::to_string).map_err(|_| ProtocolError::Invalid("string is not UTF-8"))
    }
    pub(super) fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, ProtocolError> {
        let length = self.u32(what)? as usize;
        Ok(self.take(length, what)?.to_vec())
    }
    /// A byte string as a slice of the frame when there is one (no copy:
    /// a replica answer's batches are most of its bytes), else a copy.
    pub(super) fn shared_bytes(&mut self, what: &'static str) -> Result<Bytes, ProtocolError> {
        let length = self.u32(what)? as usize;
        let slice = self.take(length, what)?;
        Ok(match self.frame {
            Some(frame) => frame.slice_ref(slice),
            None => Bytes::copy_from_slice(slice),
        })
    }
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }
    pub(super) fn finish(&self) -> Result<(), ProtocolError> {
        if self.position == self.bytes.len() {
            Ok(())
        } else {
            Err(ProtocolError::Invalid("trailing bytes after the body"))
        }
    }
}

/// Length of the frame announced by a 4-byte prefix, checked against `limit`
/// before the caller allocates anything for it.
pub fn frame_length(prefix: [u8; 4], limit: usize) -> Result<usize, ProtocolError> {
    let frame_bytes = u32::from_le_bytes(prefix) as usize;
    if frame_bytes > limit {
        return Err(ProtocolError::FrameTooLarge { frame_bytes: frame_bytes as u64, limit });
    }
    if frame_bytes < REQUEST_HEADER_BYTES.min(RESPONSE_HEADER_BYTES) {
        return Err(ProtocolError::Truncated("frame header"));
    }
    Ok(frame_bytes)
}

/// Fill in the length prefix of the frame that starts at `start` in `out`
/// and goes on for `trailing_bytes` written separately.
pub(super) fn finish_frame(out: &mut [u8], start: usize, trailing_bytes: usize) {
    let frame_bytes =
        u32::try_from(out.len() - start - LENGTH_PREFIX_BYTES + trailing_bytes).expect("a frame under 4 GiB");
    out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&frame_bytes.to_le_bytes());
}
