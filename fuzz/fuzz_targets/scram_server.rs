//! The SCRAM-SHA-256 server state machine (the native listener's and,
//! later, Kafka's SaslAuthenticate handshake) never panics on arbitrary
//! client messages, and never authenticates anyone but a known user.
//!
//! Input: a mode byte, a split byte, then the bytes split into the
//! client-first and client-final messages. An odd mode replaces the
//! client-first message with a valid one, so the fuzzer spends its time on
//! the client-final parser and the proof check.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringlog::security::scram::{ScramServer, StoredCredential};

fn credential() -> StoredCredential {
    static CREDENTIAL: OnceLock<StoredCredential> = OnceLock::new();
    CREDENTIAL.get_or_init(|| StoredCredential::derive(b"pencil", b"fuzz-salt", 4096).expect("valid")).clone()
}

fuzz_target!(|data: &[u8]| {
    let [mode, split, rest @ ..] = data else { return };
    let (first, last) = rest.split_at(usize::from(*split).min(rest.len()));
    let client_first: &[u8] = if mode & 1 == 1 { b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL" } else { first };
    let lookup = |name: &str| (name == "user").then(credential);
    if let Ok((server, server_first)) = ScramServer::start(client_first, "3rfcNHYJY1ZVvWVs7j", lookup) {
        assert!(server_first.starts_with(b"r="), "a server-first message starts with the nonce");
        if let Ok(done) = server.finish(last) {
            assert_eq!(done.username, "user", "only a known user authenticates");
            assert!(done.server_final.starts_with(b"v="));
        }
    }
});
