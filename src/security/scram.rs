//! SCRAM-SHA-256 (RFC 5802, RFC 7677) over bytes: the server side the native
//! listener drives (and a Kafka SaslAuthenticate handler can drive with the
//! same raw messages), and the client side our CLI and client use.
//!
//! Pure: the nonces come in as arguments, so the RFC 7677 vector can be
//! replayed; [`new_nonce`] makes a real one from the kernel. Every input is
//! hostile: messages, usernames and iteration counts are bounded, and only
//! `n,,` / `y,,` GS2 headers are accepted (no channel binding, no authzid).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Fewest PBKDF2 iterations accepted (RFC 7677 minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations accepted: a hostile server cannot make a client,
/// nor a users file a node, spin for minutes.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Longest SCRAM message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 2048;
/// Longest username, in bytes (after saslname unescaping).
pub const MAX_USERNAME_BYTES: usize = 255;
/// Random bytes in a nonce (base64-encoded on the wire).
pub const NONCE_BYTES: usize = 24;
/// Longest salt accepted from a server, in bytes (decoded).
const MAX_SALT_BYTES: usize = 128;

type HmacSha256 = Hmac<Sha256>;

/// Why a SCRAM exchange failed. The server answers every variant with one
/// "authentication failed" error; the detail is for logs and tests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("SCRAM message of {bytes} bytes is longer than {MAX_MESSAGE_BYTES}")]
    MessageTooLong { bytes: usize },
    #[error("SCRAM message is not UTF-8")]
    NotUtf8,
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported (the GS2 header must be `n,,` or `y,,`)")]
    ChannelBindingUnsupported,
    #[error("an authorization identity other than the user is not supported")]
    AuthorizationIdentityUnsupported,
    #[error("mandatory SCRAM extensions are not supported")]
    MandatoryExtensionUnsupported,
    #[error("username of {bytes} bytes is empty or longer than {MAX_USERNAME_BYTES}")]
    UsernameLength { bytes: usize },
    #[error("bad saslname escape in the username (only =2C and =3D are allowed)")]
    BadSaslName,
    #[error("the nonce does not continue the one sent")]
    NonceMismatch,
    #[error("the channel-binding attribute does not repeat the GS2 header")]
    ChannelBindingMismatch,
    #[error("wrong password or unknown user")]
    BadProof,
    #[error("iteration count {iterations} is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}")]
    IterationsOutOfRange { iterations: u64 },
    #[error("salt of {bytes} bytes is empty or longer than {MAX_SALT_BYTES}")]
    SaltLength { bytes: usize },
    #[error("the server's signature is wrong (not the server that holds the credential)")]
    ServerSignatureMismatch,
    #[error("the server refused the authentication: {0}")]
    ServerRefused(String),
}

/// What a node stores for a user: never the password, only what RFC 5802
/// needs to verify a proof and to prove itself back.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for StoredCredential {
    // The keys are password equivalents for an offline attack: never print them.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoredCredential")
            .field("iterations", &self.iterations)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl StoredCredential {
    /// The credential for `password` with `salt` and `iterations`.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Result<StoredCredential, ScramError> {
        check_iterations(u64::from(iterations))?;
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Ok(StoredCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        })
    }

    /// Whether `password` is the one this credential was derived from
    /// (HTTP Basic on the admin API). Constant-time compare of the keys.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        match StoredCredential::derive(password, &self.salt, self.iterations) {
            Ok(candidate) => constant_time_equal(&candidate.stored_key, &self.stored_key),
            Err(_) => false,
        }
    }
}

/// A fresh printable nonce from the kernel.
pub fn new_nonce() -> std::io::Result<String> {
    Ok(BASE64.encode(crate::runtime::random::random_bytes(NONCE_BYTES)?))
}

/// Whether `left` and `right` are equal, in time that depends only on the length.
pub fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter().zip(right).fold(0u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

fn check_iterations(iterations: u64) -> Result<(), ScramError> {
    if (u64::from(MIN_ITERATIONS)..=u64::from(MAX_ITERATIONS)).contains(&iterations) {
        Ok(())
    } else {
        Err(ScramError::IterationsOutOfRange { iterations })
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed), so this never
    // fails; the fallback keeps the function panic-free all the same.
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()))
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Hi() of RFC 5802: PBKDF2-HMAC-SHA-256 with one output block.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let key = keyed(password);
    let mut first = key.clone();
    first.update(salt);
    first.update(&1u32.to_be_bytes());
    let mut previous: [u8; 32] = first.finalize().into_bytes().into();
    let mut result = previous;
    for _ in 1..iterations {
        let mut round = key.clone();
        round.update(&previous);
        previous = round.finalize().into_bytes().into();
        result.iter_mut().zip(previous.iter()).for_each(|(out, byte)| *out ^= byte);
    }
    result
}

fn as_text(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(ScramError::MessageTooLong { bytes: message.len() });
    }
    std::str::from_utf8(message).map_err(|_| ScramError::NotUtf8)
}

/// `value` of the attribute `name=value`, or the error `missing`.
fn attribute<'a>(part: Option<&'a str>, name: char, missing: &'static str) -> Result<&'a str, ScramError> {
    let part = part.ok_or(ScramError::Malformed(missing))?;
    let mut characters = part.chars();
    match (characters.next(), characters.next()) {
        (Some(found), Some('=')) if found == name => Ok(&part[2..]),
        _ => Err(ScramError::Malformed(missing)),
    }
}

/// Undo saslname escaping: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
pub fn decode_saslname(escaped: &str) -> Result<String, ScramError> {
    let mut name = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        name.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => name.push(','),
            Some("=3D") => name.push('='),
            _ => return Err(ScramError::BadSaslName),
        }
        rest = &rest[at + 3..];
    }
    name.push_str(rest);
    if name.is_empty() || name.len() > MAX_USERNAME_BYTES {
        return Err(ScramError::UsernameLength { bytes: name.len() });
    }
    Ok(name)
}

/// Escape `name` as a saslname.
pub fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// A nonce is printable ASCII without a comma (RFC 5802 §7).
fn check_nonce(nonce: &str) -> Result<(), ScramError> {
    let printable = nonce.bytes().all(|byte| (0x21..=0x7e).contains(&byte) && byte != b',');
    if nonce.is_empty() || !printable {
        return Err(ScramError::Malformed("the nonce is empty or not printable"));
    }
    Ok(())
}

/// The GS2 header and the bare part of a client-first message.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    bare: &'a str,
    username: String,
    nonce: &'a str,
}

fn parse_client_first(message: &[u8]) -> Result<ClientFirst<'_>, ScramError> {
    let text = as_text(message)?;
    let gs2_length = match text.get(..3) {
        Some("n,,") | Some("y,,") => 3,
        _ if text.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
        _ if text.starts_with("n,a=") || text.starts_with("y,a=") => {
            return Err(ScramError::AuthorizationIdentityUnsupported)
        }
        _ => return Err(ScramError::Malformed("the GS2 header must be `n,,` or `y,,`")),
    };
    let bare = &text[gs2_length..];
    if bare.starts_with("m=") {
        return Err(ScramError::MandatoryExtensionUnsupported);
    }
    let mut parts = bare.split(',');
    let username = decode_saslname(attribute(parts.next(), 'n', "the username (n=) is missing")?)?;
    let nonce = attribute(parts.next(), 'r', "the nonce (r=) is missing")?;
    check_nonce(nonce)?;
    Ok(ClientFirst { gs2_header: &text[..gs2_length], bare, username, nonce })
}

/// The server half of an exchange after the client-first message: what it
/// needs to check the client-final message.
pub struct ScramServer {
    username: String,
    known_user: bool,
    credential: StoredCredential,
    gs2_header: String,
    nonce: String,
    /// The client's part of `nonce` (its first bytes).
    client_nonce_bytes: usize,
    /// Whether a client-final nonce of the client's nonce followed by the
    /// whole combined one is accepted (librdkafka sends that).
    repeated_client_nonce: bool,
    auth_message_start: String,
}

/// A server-side exchange that succeeded.
#[derive(Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub username: String,
    /// The server-final message (`v=…`) to send back.
    pub server_final: Vec<u8>,
}

/// The salt an unknown user is answered with: stable for a name (asking
/// twice shows the same salt, as for a real user) but keyed with a secret
/// of this process, so nobody can compute it beforehand and tell an
/// unknown name from a real one by comparing salts.
fn unknown_user_salt(username: &str) -> Vec<u8> {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| match crate::runtime::random::random_bytes(32) {
        Ok(bytes) => bytes.try_into().unwrap_or([0; 32]),
        // No randomness: a fixed key is the old behaviour, no worse.
        Err(_) => Sha256::digest(b"ringlog unknown user salt").into(),
    });
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    mac.finalize().into_bytes()[..16].to_vec()
}

impl ScramServer {
    /// Answer a client-first message: look the user up, and return the
    /// server-first message. An unknown user is not told apart here: it
    /// gets a made-up salt and fails at the proof, like a wrong password.
    pub fn start(
        client_first: &[u8],
        server_nonce: &str,
        lookup: impl FnOnce(&str) -> Option<StoredCredential>,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        check_nonce(server_nonce)?;
        let parsed = parse_client_first(client_first)?;
        let found = lookup(&parsed.username);
        let known_user = found.is_some();
        let credential = found.unwrap_or_else(|| StoredCredential {
            salt: unknown_user_salt(&parsed.username),
            iterations: MIN_ITERATIONS,
            stored_key: [0; 32],
            server_key: [0; 32],
        });
        let nonce = format!("{}{server_nonce}", parsed.nonce);
        let server_first = format!("r={nonce},s={},i={}", BASE64.encode(&credential.salt), credential.iterations);
        let auth_message_start = format!("{},{server_first}", parsed.bare);
        let server = ScramServer {
            username: parsed.username,
            known_user,
            credential,
            gs2_header: parsed.gs2_header.to_string(),
            client_nonce_bytes: parsed.nonce.len(),
            nonce,
            repeated_client_nonce: false,
            auth_message_start,
        };
        Ok((server, server_first.into_bytes()))
    }

    /// The username the client claims (known or not).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The stored key the proof is checked against (zeros for an unknown
    /// user): what a session remembers to notice a changed password.
    pub fn stored_key(&self) -> [u8; 32] {
        self.credential.stored_key
    }

    /// Also accept a client-final nonce that is the client's nonce followed
    /// by the whole combined nonce: librdkafka (kcat, confluent-kafka)
    /// sends that, and Kafka brokers accept it (they check that the
    /// client's nonce ends with the server-first one). The server's random
    /// part must still come back whole, so a replay still fails; the proof
    /// covers the message as sent.
    pub fn accepting_repeated_client_nonce(mut self) -> ScramServer {
        self.repeated_client_nonce = true;
        self
    }

    /// Whether `nonce` from the client-final message continues the one sent.
    fn nonce_continues(&self, nonce: &str) -> bool {
        if nonce == self.nonce {
            return true;
        }
        let client_nonce = &self.nonce[..self.client_nonce_bytes];
        self.repeated_client_nonce
            && nonce.len() == client_nonce.len() + self.nonce.len()
            && nonce.starts_with(client_nonce)
            && nonce.ends_with(self.nonce.as_str())
    }

    /// Check a client-final message; on success the server-final message.
    pub fn finish(self, client_final: &[u8]) -> Result<Authenticated, ScramError> {
        let text = as_text(client_final)?;
        let proof_at = text.rfind(",p=").ok_or(ScramError::Malformed("the proof (p=) is missing"))?;
        let without_proof = &text[..proof_at];
        let mut parts = without_proof.split(',');
        let binding = attribute(parts.next(), 'c', "the channel binding (c=) is missing")?;
        if BASE64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if !self.nonce_continues(attribute(parts.next(), 'r', "the nonce (r=) is missing")?) {
            return Err(ScramError::NonceMismatch);
        }
        let proof =
            BASE64.decode(&text[proof_at + 3..]).map_err(|_| ScramError::Malformed("the proof is not base64"))?;
        let auth_message = format!("{},{without_proof}", self.auth_message_start);
        let client_signature = hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != 32 {
            return Err(ScramError::BadProof);
        }
        let mut client_key = [0u8; 32];
        for (index, byte) in client_key.iter_mut().enumerate() {
            *byte = proof[index] ^ client_signature[index];
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        if !constant_time_equal(&stored_key, &self.credential.stored_key) || !self.known_user {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", BASE64.encode(server_signature)).into_bytes();
        Ok(Authenticated { username: self.username, server_final })
    }
}

/// The client half of an exchange, before the server-first message.
pub struct ScramClient {
    password: Vec<u8>,
    client_nonce: String,
    client_first_bare: String,
}

/// The client half after the client-final message: it checks the server.
pub struct ScramClientFinal {
    expected_server_signature: [u8; 32],
}

impl ScramClient {
    /// Start an exchange for `username`; returns the client-first message.
    pub fn new(username: &str, password: &[u8], client_nonce: &str) -> Result<(ScramClient, Vec<u8>), ScramError> {
        check_nonce(client_nonce)?;
        if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
            return Err(ScramError::UsernameLength { bytes: username.len() });
        }
        let client_first_bare = format!("n={},r={client_nonce}", encode_saslname(username));
        let client_first = format!("n,,{client_first_bare}").into_bytes();
        let client =
            ScramClient { password: password.to_vec(), client_nonce: client_nonce.to_string(), client_first_bare };
        Ok((client, client_first))
    }

    /// Answer the server-first message with the client-final message.
    pub fn respond(self, server_first: &[u8]) -> Result<(ScramClientFinal, Vec<u8>), ScramError> {
        let text = as_text(server_first)?;
        if let Some(reason) = text.strip_prefix("e=") {
            return Err(ScramError::ServerRefused(reason.to_string()));
        }
        let mut parts = text.split(',');
        let nonce = attribute(parts.next(), 'r', "the nonce (r=) is missing")?;
        check_nonce(nonce)?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = BASE64
            .decode(attribute(parts.next(), 's', "the salt (s=) is missing")?)
            .map_err(|_| ScramError::Malformed("the salt is not base64"))?;
        if salt.is_empty() || salt.len() > MAX_SALT_BYTES {
            return Err(ScramError::SaltLength { bytes: salt.len() });
        }
        let iterations: u64 = attribute(parts.next(), 'i', "the iteration count (i=) is missing")?
            .parse()
            .map_err(|_| ScramError::Malformed("the iteration count is not a number"))?;
        check_iterations(iterations)?;
        let salted = salted_password(&self.password, &salt, iterations as u32);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = client_key;
        proof.iter_mut().zip(client_signature.iter()).for_each(|(out, byte)| *out ^= byte);
        let expected_server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        let client_final = format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes();
        Ok((ScramClientFinal { expected_server_signature }, client_final))
    }
}

impl ScramClientFinal {
    /// Check the server-final message: only a server holding the
    /// credential can sign the exchange.
    pub fn verify(self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = as_text(server_final)?;
        if let Some(reason) = text.strip_prefix("e=") {
            return Err(ScramError::ServerRefused(reason.to_string()));
        }
        let signature = attribute(Some(text), 'v', "the server signature (v=) is missing")?;
        let signature =
            BASE64.decode(signature).map_err(|_| ScramError::Malformed("the server signature is not base64"))?;
        if !constant_time_equal(&signature, &self.expected_server_signature) {
            return Err(ScramError::ServerSignatureMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
