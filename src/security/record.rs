//! TLS record protection once the handshake is done: sealing outgoing
//! records and opening incoming ones in place, with the keys rustls
//! negotiated (`rustls::kernel`, the interface rustls gives kTLS).
//!
//! Why not rustls's own record layer: this machine's kernel has no kTLS,
//! and rustls 0.23 copies every byte three or four times between the
//! socket and the caller (its deframer buffer, a `Vec` per record, the
//! caller's buffer) and allocates per record; that, not AES-GCM, was most
//! of what TLS cost the node (docs/BENCHMARKS.md). Here a received record
//! is decrypted where the socket put it and copied once to the reader; a
//! sent one is copied once into the send buffer and encrypted there.
//!
//! What stays with rustls: the handshake, certificate verification,
//! key schedules (key updates go through `KernelConnection`) and session
//! tickets. What is here: framing (RFC 8446 §5, RFC 5246 §6.2) and nonces
//! and additional data for AES-GCM and ChaCha20-Poly1305; ring seals and
//! opens. Everything read is hostile: lengths are checked against the
//! protocol's limits before any use, and a record that fails
//! authentication ends the connection.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::ConnectionTrafficSecrets;

/// A record's header: content type, legacy version, length.
pub const HEADER_BYTES: usize = 5;
/// Most plaintext one record carries (2^14, both versions).
pub const MAX_PLAINTEXT_BYTES: usize = 1 << 14;
/// Most ciphertext one record may carry (RFC 8446 §5.2: 2^14 + 256).
pub const MAX_CIPHERTEXT_BYTES: usize = MAX_PLAINTEXT_BYTES + 256;
/// The largest record on the wire.
pub const MAX_RECORD_BYTES: usize = HEADER_BYTES + MAX_CIPHERTEXT_BYTES;
const TAG_BYTES: usize = 16;
/// TLS 1.2 AES-GCM sends the nonce's last 8 bytes before the ciphertext.
const EXPLICIT_NONCE_BYTES: usize = 8;
/// Most bytes a sealed record adds to its plaintext (header, explicit
/// nonce or inner content type, tag).
pub const MAX_RECORD_OVERHEAD_BYTES: usize = HEADER_BYTES + EXPLICIT_NONCE_BYTES + TAG_BYTES;
/// Both versions' records say 3.3 (TLS 1.3 keeps 1.2's for middleboxes).
const LEGACY_VERSION: [u8; 2] = [3, 3];

/// The content types a protected record may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    /// An alert (close_notify or a fatal one).
    Alert,
    /// Post-handshake messages: key updates, session tickets.
    Handshake,
    /// The application's bytes.
    ApplicationData,
}

impl ContentType {
    fn byte(self) -> u8 {
        match self {
            ContentType::Alert => 21,
            ContentType::Handshake => 22,
            ContentType::ApplicationData => 23,
        }
    }

    fn of(byte: u8) -> Option<ContentType> {
        match byte {
            21 => Some(ContentType::Alert),
            22 => Some(ContentType::Handshake),
            23 => Some(ContentType::ApplicationData),
            _ => None,
        }
    }
}

/// The protocol version a session negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// TLS 1.2 (RFC 5246, RFC 5288, RFC 7905).
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

/// What can go wrong protecting or reading a record; each ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A length beyond what the protocol allows.
    #[error("TLS record of {length} bytes is longer than the {limit} the protocol allows")]
    TooLong { length: usize, limit: usize },
    /// Too short to hold its cipher's tag (and explicit nonce).
    #[error("TLS record of {length} bytes is too short for its cipher")]
    TooShort { length: usize },
    /// A content type not allowed here.
    #[error("TLS record of content type {content_type} where {expected} was due")]
    UnexpectedType { content_type: u8, expected: &'static str },
    /// A legacy version other than 3.3.
    #[error("TLS record with version {major}.{minor}")]
    BadVersion { major: u8, minor: u8 },
    /// The tag did not verify: corrupted or forged.
    #[error("TLS record {sequence} failed authentication (corrupted or forged)")]
    Forged { sequence: u64 },
    /// A TLS 1.3 record of padding only.
    #[error("TLS record {sequence} carries no content type")]
    NoContentType { sequence: u64 },
    /// 2^64 records in one direction.
    #[error("TLS record sequence numbers are exhausted")]
    SequenceExhausted,
    /// A cipher this layer does not protect.
    #[error("TLS cipher suite not supported after the handshake: {0}")]
    Unsupported(String),
}

/// One direction's key, fixed IV and record sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    version: Version,
    /// TLS 1.2 AES-GCM (its records carry 8 bytes of nonce).
    explicit_nonce: bool,
    sequence: u64,
}

impl Keys {
    fn new(version: Version, (sequence, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Keys, RecordError> {
        let (algorithm, key, iv, gcm) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv, true),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv, true),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv, false),
            _ => return Err(RecordError::Unsupported("a cipher other than AES-GCM or ChaCha20-Poly1305".into())),
        };
        let unbound = UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| RecordError::Unsupported(format!("{algorithm:?} key of {} bytes", key.as_ref().len())))?;
        let iv: [u8; NONCE_LEN] = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::Unsupported(format!("IV of {} bytes", iv.as_ref().len())))?;
        let explicit_nonce = gcm && version == Version::Tls12;
        Ok(Keys { key: LessSafeKey::new(unbound), iv, version, explicit_nonce, sequence })
    }

    /// The nonce of the record with `sequence`: the IV with the sequence
    /// number XORed into its last 8 bytes (RFC 8446 §5.3; rustls builds
    /// TLS 1.2 GCM IVs so that the same holds).
    fn nonce(&self, sequence: u64) -> [u8; NONCE_LEN] {
        let mut nonce = self.iv;
        for (byte, sequence_byte) in nonce[4..].iter_mut().zip(sequence.to_be_bytes()) {
            *byte ^= sequence_byte;
        }
        nonce
    }

    /// Take the next sequence number.
    fn next_sequence(&mut self) -> Result<u64, RecordError> {
        let sequence = self.sequence;
        self.sequence = sequence.checked_add(1).ok_or(RecordError::SequenceExhausted)?;
        Ok(sequence)
    }
}

/// TLS 1.2's additional data: sequence, type, version, plaintext length.
fn tls12_additional_data(sequence: u64, content_type: u8, plaintext_bytes: usize) -> [u8; 13] {
    let mut data = [0; 13];
    data[..8].copy_from_slice(&sequence.to_be_bytes());
    data[8] = content_type;
    data[9..11].copy_from_slice(&LEGACY_VERSION);
    data[11..].copy_from_slice(&(plaintext_bytes as u16).to_be_bytes());
    data
}

fn header(content_type: u8, length: usize) -> [u8; HEADER_BYTES] {
    let length = (length as u16).to_be_bytes();
    [content_type, LEGACY_VERSION[0], LEGACY_VERSION[1], length[0], length[1]]
}

/// Seals outgoing records.
pub struct Sealer {
    keys: Keys,
}

impl Sealer {
    /// Seal with the keys and next sequence number rustls handed over.
    pub fn new(version: Version, secrets: (u64, ConnectionTrafficSecrets)) -> Result<Sealer, RecordError> {
        Ok(Sealer { keys: Keys::new(version, secrets)? })
    }

    /// Records sealed with the current keys (what the cipher's
    /// confidentiality limit counts).
    pub fn sequence(&self) -> u64 {
        self.keys.sequence
    }

    /// Switch to new keys (after sending a key update with the old ones).
    pub fn rekey(&mut self, secrets: (u64, ConnectionTrafficSecrets)) -> Result<(), RecordError> {
        self.keys = Keys::new(self.keys.version, secrets)?;
        Ok(())
    }

    /// Append one record carrying `plaintext` to `output`.
    pub fn seal(
        &mut self,
        content_type: ContentType,
        plaintext: &[u8],
        output: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        assert!(plaintext.len() <= MAX_PLAINTEXT_BYTES, "a record carries at most 2^14 bytes");
        let sequence = self.keys.next_sequence()?;
        let nonce = self.keys.nonce(sequence);
        let record_start = output.len();
        // The additional data: the header (1.3) or 13 bytes (1.2).
        let mut additional_data = [0; 13];
        let (plaintext_start, additional_bytes) = match self.keys.version {
            Version::Tls13 => {
                let record = header(ContentType::ApplicationData.byte(), plaintext.len() + 1 + TAG_BYTES);
                additional_data[..HEADER_BYTES].copy_from_slice(&record);
                output.extend_from_slice(&record);
                let start = output.len();
                output.extend_from_slice(plaintext);
                output.push(content_type.byte());
                (start, HEADER_BYTES)
            }
            Version::Tls12 => {
                let explicit = if self.keys.explicit_nonce { EXPLICIT_NONCE_BYTES } else { 0 };
                output.extend_from_slice(&header(content_type.byte(), explicit + plaintext.len() + TAG_BYTES));
                output.extend_from_slice(&nonce[NONCE_LEN - explicit..]);
                let start = output.len();
                output.extend_from_slice(plaintext);
                additional_data = tls12_additional_data(sequence, content_type.byte(), plaintext.len());
                (start, additional_data.len())
            }
        };
        let tag = self
            .keys
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&additional_data[..additional_bytes]),
                &mut output[plaintext_start..],
            )
            .map_err(|_| RecordError::TooLong { length: plaintext.len(), limit: MAX_PLAINTEXT_BYTES })?;
        output.extend_from_slice(tag.as_ref());
        debug_assert!(output.len() - record_start <= MAX_RECORD_BYTES);
        Ok(())
    }
}

/// A record opened in place.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// Bytes the record took at the front of the buffer.
    pub record_bytes: usize,
    /// What it carries.
    pub content_type: ContentType,
    /// Where its plaintext is in the buffer.
    pub plaintext: Range<usize>,
}

/// Opens incoming records.
pub struct Opener {
    keys: Keys,
}

impl Opener {
    /// Open with the keys and next sequence number rustls handed over.
    pub fn new(version: Version, secrets: (u64, ConnectionTrafficSecrets)) -> Result<Opener, RecordError> {
        Ok(Opener { keys: Keys::new(version, secrets)? })
    }

    /// Switch to new keys (after the peer's key update).
    pub fn rekey(&mut self, secrets: (u64, ConnectionTrafficSecrets)) -> Result<(), RecordError> {
        self.keys = Keys::new(self.keys.version, secrets)?;
        Ok(())
    }

    /// Open the record at the front of `buffer` in place; `None` until
    /// the buffer holds all of it. A header announcing more than the
    /// protocol allows fails at once, before its body arrives.
    pub fn open(&mut self, buffer: &mut [u8]) -> Result<Option<Opened>, RecordError> {
        let Some(&[outer_type, major, minor, length_high, length_low]) = buffer.get(..HEADER_BYTES) else {
            return Ok(None);
        };
        let length = usize::from(u16::from_be_bytes([length_high, length_low]));
        if length > MAX_CIPHERTEXT_BYTES {
            return Err(RecordError::TooLong { length, limit: MAX_CIPHERTEXT_BYTES });
        }
        if [major, minor] != LEGACY_VERSION {
            return Err(RecordError::BadVersion { major, minor });
        }
        let Some(record) = buffer.get_mut(..HEADER_BYTES + length) else { return Ok(None) };
        let sequence = self.keys.next_sequence()?;
        match self.keys.version {
            Version::Tls13 => self.open_tls13(record, sequence),
            Version::Tls12 => self.open_tls12(record, outer_type, sequence),
        }
        .map(Some)
    }

    fn open_tls13(&self, record: &mut [u8], sequence: u64) -> Result<Opened, RecordError> {
        let outer_type = record[0];
        if outer_type != ContentType::ApplicationData.byte() {
            return Err(RecordError::UnexpectedType { content_type: outer_type, expected: "an encrypted record" });
        }
        let length = record.len() - HEADER_BYTES;
        if length < TAG_BYTES + 1 {
            return Err(RecordError::TooShort { length });
        }
        let additional_data: [u8; HEADER_BYTES] = record[..HEADER_BYTES].try_into().expect("a header");
        let nonce = Nonce::assume_unique_for_key(self.keys.nonce(sequence));
        let inner = self
            .keys
            .key
            .open_in_place(nonce, Aad::from(additional_data), &mut record[HEADER_BYTES..])
            .map_err(|_| RecordError::Forged { sequence })?;
        if inner.len() > MAX_PLAINTEXT_BYTES + 1 {
            return Err(RecordError::TooLong { length: inner.len(), limit: MAX_PLAINTEXT_BYTES + 1 });
        }
        // The content type is the last byte that is not padding.
        let type_at = inner.iter().rposition(|&byte| byte != 0).ok_or(RecordError::NoContentType { sequence })?;
        let content_type = ContentType::of(inner[type_at]).ok_or(RecordError::UnexpectedType {
            content_type: inner[type_at],
            expected: "alert, handshake or data",
        })?;
        Ok(Opened { record_bytes: record.len(), content_type, plaintext: HEADER_BYTES..HEADER_BYTES + type_at })
    }

    fn open_tls12(&self, record: &mut [u8], outer_type: u8, sequence: u64) -> Result<Opened, RecordError> {
        let content_type = ContentType::of(outer_type)
            .ok_or(RecordError::UnexpectedType { content_type: outer_type, expected: "alert, handshake or data" })?;
        let explicit = if self.keys.explicit_nonce { EXPLICIT_NONCE_BYTES } else { 0 };
        let length = record.len() - HEADER_BYTES;
        if length < explicit + TAG_BYTES {
            return Err(RecordError::TooShort { length });
        }
        let mut nonce = self.keys.nonce(sequence);
        nonce[NONCE_LEN - explicit..].copy_from_slice(&record[HEADER_BYTES..HEADER_BYTES + explicit]);
        let plaintext_bytes = length - explicit - TAG_BYTES;
        if plaintext_bytes > MAX_PLAINTEXT_BYTES {
            return Err(RecordError::TooLong { length: plaintext_bytes, limit: MAX_PLAINTEXT_BYTES });
        }
        let additional_data = tls12_additional_data(sequence, outer_type, plaintext_bytes);
        let start = HEADER_BYTES + explicit;
        self.keys
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(additional_data), &mut record[start..])
            .map_err(|_| RecordError::Forged { sequence })?;
        Ok(Opened { record_bytes: record.len(), content_type, plaintext: start..start + plaintext_bytes })
    }
}
