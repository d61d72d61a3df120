//! The TLS record layer (security/record.rs) that opens every record a
//! client sends the node: arbitrary bytes never panic it, a record is
//! never opened before all of it arrived, and whatever the sealer seals
//! opens to the same content type and plaintext.
//!
//! Input: a mode byte (bit 0: TLS 1.2 or 1.3; bits 1–2: the content
//! type sealed), then bytes used twice: opened as received from a peer,
//! and sealed in pieces of up to 2^14 bytes and opened back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::security::record::{ContentType, Opener, Sealer, Version, MAX_PLAINTEXT_BYTES};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::ConnectionTrafficSecrets;

fn keys(version: Version) -> (Sealer, Opener) {
    let secrets = || (0, ConnectionTrafficSecrets::Aes256Gcm { key: AeadKey::from([7; 32]), iv: Iv::new([3; 12]) });
    (Sealer::new(version, secrets()).expect("a sealer"), Opener::new(version, secrets()).expect("an opener"))
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let version = if mode & 1 == 0 { Version::Tls12 } else { Version::Tls13 };
    let content_type = match (mode >> 1) & 3 {
        0 => ContentType::Alert,
        1 => ContentType::Handshake,
        _ => ContentType::ApplicationData,
    };
    let (mut sealer, mut opener) = keys(version);

    // Received bytes: open record after record until one is incomplete or fails.
    let mut received = rest.to_vec();
    let mut at = 0;
    while let Ok(Some(opened)) = opener.open(&mut received[at..]) {
        assert!(opened.record_bytes <= received.len() - at, "a record is opened only when all of it is here");
        assert!(opened.plaintext.end <= opened.record_bytes, "plaintext lies inside its record");
        at += opened.record_bytes;
    }

    // Sealed then opened: the same pieces back.
    let (_, mut opener) = keys(version);
    let mut wire = Vec::new();
    for piece in rest.chunks(MAX_PLAINTEXT_BYTES) {
        sealer.seal(content_type, piece, &mut wire).expect("a piece seals");
    }
    let mut at = 0;
    for piece in rest.chunks(MAX_PLAINTEXT_BYTES) {
        let opened = opener.open(&mut wire[at..]).expect("a sealed record opens").expect("whole");
        assert_eq!(opened.content_type, content_type);
        assert_eq!(&wire[at..][opened.plaintext.clone()], piece);
        at += opened.record_bytes;
    }
    assert_eq!(at, wire.len(), "nothing left over");
});
