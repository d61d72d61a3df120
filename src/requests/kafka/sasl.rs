//! SASL on the Kafka listener (KIP-43, KIP-152; SPEC §11) when `[auth]` is
//! enabled: a connection must authenticate before anything but ApiVersions,
//! SaslHandshake (v1; v0 is refused) and SaslAuthenticate is served; any other request
//! closes it unanswered, as Kafka brokers do. Mechanisms:
//!
//! - `SCRAM-SHA-256`: two SaslAuthenticate round trips (client-first →
//!   server-first, client-final → server-final) through the same
//!   [`ScramServer`] and users as the native handshake;
//! - `PLAIN` (`authzid NUL user NUL password`): only on a TLS connection,
//!   where the password does not cross the wire in the clear; a plaintext
//!   connection is answered `UNSUPPORTED_SASL_MECHANISM` and closed.
//!
//! A failure answers `SASL_AUTHENTICATION_FAILED` (58), is counted in the
//! same `/metrics` counters as the native listener's and against its
//! source address in the shard's failure limiter, and closes the
//! connection. Once authenticated, the user is looked up again at every
//! request, so a removed user's connection closes at its next request.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{respond, KafkaOutcome, KafkaServeError};
use crate::protocol::kafka::{decode_body, KafkaRequest};
use crate::security::scram::{new_nonce, MECHANISM as SCRAM};
use crate::security::{FailureLimiter, Principal, ScramServer, StoredCredential};
use crate::shard::context::ShardContext;

/// The PLAIN mechanism's name.
pub const PLAIN: &str = "PLAIN";
/// The longest SASL message (a SaslAuthenticate's bytes) read: SCRAM and
/// PLAIN messages are a few hundred bytes; anything longer is hostile.
pub const MAX_SASL_MESSAGE_BYTES: usize = 4096;
/// The longest frame read from a connection that has not authenticated:
/// ApiVersions and the SASL requests fit many times over, and a stranger
/// never makes this node allocate `limits.max_frame_bytes`.
pub const MAX_UNAUTHENTICATED_FRAME_BYTES: usize = 16 * 1024;

/// What the listener does with one request of a connection.
pub enum Step {
    /// Serve it as this principal (`None`: ApiVersions before authentication).
    Serve(KafkaRequest, Option<Principal>),
    /// Send this answer; keep the connection when `keep_open`.
    Answer { outcome: KafkaOutcome, keep_open: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Scram,
    Plain,
}

enum State {
    AwaitingHandshake,
    AwaitingFirstMessage(Mechanism),
    AwaitingScramFinal(ScramServer),
    /// The user's name and the stored key it proved: its role and topics
    /// are read from the current snapshot at every request, and a user
    /// removed, or re-added or given a new password (the key differs),
    /// has its connection closed.
    Authenticated(String, [u8; 32]),
    /// After a failure: the connection is closing.
    Failed,
}

/// The per-shard failure limiter of a Kafka listener with `[auth]` on
/// (the same settings as the native listener's).
pub fn limiter(context: &ShardContext) -> Rc<RefCell<FailureLimiter>> {
    let auth = &context.config.auth;
    Rc::new(RefCell::new(FailureLimiter::new(auth.max_failures_per_minute, auth.max_tracked_sources)))
}

/// The mechanisms a connection may use: PLAIN only under TLS.
pub fn enabled_mechanisms(tls: bool) -> Vec<&'static str> {
    match tls {
        true => vec![SCRAM, PLAIN],
        false => vec![SCRAM],
    }
}

/// One Kafka connection's authentication.
pub struct KafkaAuthentication {
    state: State,
    peer: IpAddr,
    tls: bool,
    limiter: Rc<RefCell<FailureLimiter>>,
}

impl KafkaAuthentication {
    /// A connection from `peer`, `tls` when it arrived under TLS.
    pub fn new(peer: IpAddr, tls: bool, limiter: Rc<RefCell<FailureLimiter>>) -> KafkaAuthentication {
        KafkaAuthentication { state: State::AwaitingHandshake, peer, tls, limiter }
    }

    /// Whether the connection has authenticated.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated(..))
    }

    /// The longest frame to read next: `configured` once authenticated.
    pub fn frame_limit(&self, configured: usize) -> usize {
        match self.state {
            State::Authenticated(..) => configured,
            _ => configured.min(MAX_UNAUTHENTICATED_FRAME_BYTES),
        }
    }

    /// Decide `request`: serve it, or answer a SASL step, or close.
    pub async fn check(&mut self, context: &ShardContext, request: KafkaRequest) -> Step {
        if matches!(request.api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            // Served here, not by `handle`, which counts the others.
            context.metrics.kafka.count_request(request.api as i16);
        }
        let state = std::mem::replace(&mut self.state, State::Failed);
        match (state, request.api) {
            (state, ApiKey::ApiVersions) => {
                let principal = match &state {
                    State::Authenticated(name, _) => {
                        context.users.load().lookup(name).map(|user| user.principal.clone())
                    }
                    _ => None,
                };
                self.state = state;
                Step::Serve(request, principal)
            }
            (State::Authenticated(..), ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) => {
                close(illegal_state(&request, "this connection is authenticated already"))
            }
            (State::Authenticated(name, key), _) => match context.users.load().lookup(&name) {
                Some(user) if user.credential.stored_key == key => {
                    let principal = user.principal.clone();
                    self.state = State::Authenticated(name, key);
                    Step::Serve(request, Some(principal))
                }
                _ => close(Err(KafkaServeError::UserRemoved(name))),
            },
            (State::AwaitingHandshake, ApiKey::SaslHandshake) if request.header.request_api_version == 0 => {
                close(illegal_state(&request, "SaslHandshake v0 (SASL outside Kafka framing) is not supported"))
            }
            (State::AwaitingHandshake, ApiKey::SaslHandshake) => self.handshake(&request),
            (State::AwaitingFirstMessage(mechanism), ApiKey::SaslAuthenticate) => {
                self.first_message(context, &request, mechanism).await
            }
            (State::AwaitingScramFinal(server), ApiKey::SaslAuthenticate) => {
                self.scram_final(context, &request, server)
            }
            (_, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) => {
                close(illegal_state(&request, "SaslHandshake first, then SaslAuthenticate"))
            }
            (_, api) => close(Err(KafkaServeError::NotAuthenticated(api as i16))),
        }
    }

    /// SaslHandshake: pick the mechanism, or refuse one this connection
    /// may not use (listing those it may) and close.
    fn handshake(&mut self, request: &KafkaRequest) -> Step {
        let body: SaslHandshakeRequest = match decode_body(request) {
            Ok(body) => body,
            Err(error) => return close(Err(error.into())),
        };
        let enabled = enabled_mechanisms(self.tls);
        let mechanism = match &*body.mechanism {
            SCRAM => Some(Mechanism::Scram),
            PLAIN if self.tls => Some(Mechanism::Plain),
            _ => None,
        };
        let mechanisms = enabled.iter().map(|name| StrBytes::from_static_str(name)).collect();
        let response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
        match mechanism {
            Some(mechanism) => {
                self.state = State::AwaitingFirstMessage(mechanism);
                Step::Answer { outcome: respond(request, &response).map(Some), keep_open: true }
            }
            None => {
                tracing::info!(target: "ringlog::auth", peer = %self.peer, mechanism = %&*body.mechanism, tls = self.tls,
                    "kafka sasl mechanism refused");
                let response = response.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
                close(respond(request, &response).map(Some))
            }
        }
    }

    /// The first SaslAuthenticate: SCRAM's client-first, or PLAIN's
    /// whole credential.
    async fn first_message(&mut self, context: &ShardContext, request: &KafkaRequest, mechanism: Mechanism) -> Step {
        let message = match self.sasl_message(context, request) {
            Ok(message) => message,
            Err(step) => return *step,
        };
        if !self.limiter.borrow().admits(self.peer, Instant::now()) {
            context.metrics.auth.rate_limited.fetch_add(1, Ordering::Relaxed);
            let message = "too many failed authentications from this address; try again within a minute";
            return close(authenticate_answer(request, Err(message)));
        }
        match mechanism {
            Mechanism::Plain => self.plain(context, request, &message).await,
            Mechanism::Scram => self.scram_first(context, request, &message),
        }
    }

    /// The bytes of a SaslAuthenticate, bounded; a body that does not
    /// decode or is too long fails the authentication.
    fn sasl_message(&mut self, context: &ShardContext, request: &KafkaRequest) -> Result<Bytes, Box<Step>> {
        let body: SaslAuthenticateRequest = decode_body(request).map_err(|error| Box::new(close(Err(error.into()))))?;
        if body.auth_bytes.len() > MAX_SASL_MESSAGE_BYTES {
            let reason = format!("sasl message of {} bytes", body.auth_bytes.len());
            return Err(Box::new(self.fail(context, request, reason)));
        }
        Ok(body.auth_bytes)
    }

    fn scram_first(&mut self, context: &ShardContext, request: &KafkaRequest, message: &[u8]) -> Step {
        let nonce = match new_nonce() {
            Ok(nonce) => nonce,
            Err(error) => return close(authenticate_answer(request, Err(&format!("no randomness: {error}")))),
        };
        let users = context.users.load();
        let started =
            ScramServer::start(message, &nonce, |name| users.lookup(name).map(|user| user.credential.clone()));
        match started {
            Ok((server, server_first)) => {
                self.state = State::AwaitingScramFinal(server);
                Step::Answer { outcome: authenticate_answer(request, Ok(server_first)), keep_open: true }
            }
            Err(failure) => self.fail(context, request, failure.to_string()),
        }
    }

    fn scram_final(&mut self, context: &ShardContext, request: &KafkaRequest, server: ScramServer) -> Step {
        let message = match self.sasl_message(context, request) {
            Ok(message) => message,
            Err(step) => return *step,
        };
        let username = server.username().to_string();
        // Checked again here, not only at the first message: handshakes
        // started in parallel on many connections would each get a guess.
        if !self.limiter.borrow().admits(self.peer, Instant::now()) {
            context.metrics.auth.rate_limited.fetch_add(1, Ordering::Relaxed);
            let message = "too many failed authentications from this address; try again within a minute";
            return close(authenticate_answer(request, Err(message)));
        }
        let key = server.stored_key();
        match server.accepting_repeated_client_nonce().finish(&message) {
            Ok(done) => self.succeed(context, request, &done.username, key, done.server_final),
            Err(failure) => self.fail(context, request, format!("user {username:?}: {failure}")),
        }
    }

    /// PLAIN: `authzid NUL user NUL password`; an authorization identity,
    /// if given, must be the user itself (no acting as someone else).
    async fn plain(&mut self, context: &ShardContext, request: &KafkaRequest, message: &[u8]) -> Step {
        let mut fields = message.split(|byte| *byte == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return self.fail(context, request, "a PLAIN message is authzid NUL user NUL password".into());
        };
        let Ok(name) = std::str::from_utf8(user) else {
            return self.fail(context, request, "a PLAIN user name is not UTF-8".into());
        };
        if !authzid.is_empty() && authzid != user {
            return self.fail(context, request, format!("user {name:?} may not act as another identity"));
        }
        // An unknown user costs the same key derivation as a known one, so
        // the answer's timing does not tell which names exist.
        let credential = match context.users.load().lookup(name) {
            Some(user) => user.credential.clone(),
            None => StoredCredential {
                salt: name.as_bytes().to_vec(),
                iterations: context.config.auth.scram_iterations,
                stored_key: [0; 32],
                server_key: [0; 32],
            },
        };
        let Some(matches) = verify_off_the_shard(credential.clone(), password.to_vec()).await else {
            let message = "too many PLAIN logins at once on this shard; retry";
            return close(authenticate_answer(request, Err(message)));
        };
        let verified = matches.then_some(credential.stored_key).filter(|key| *key != [0; 32]);
        match verified {
            Some(key) => self.succeed(context, request, name, key, Vec::new()),
            None => self.fail(context, request, format!("user {name:?}: wrong password or no such user")),
        }
    }

    /// Looked up again: a user removed, or whose credential changed, during
    /// the handshake is refused (`key` is the stored key the proof was
    /// checked against).
    fn succeed(
        &mut self,
        context: &ShardContext,
        request: &KafkaRequest,
        name: &str,
        key: [u8; 32],
        server_final: Vec<u8>,
    ) -> Step {
        let current = context.users.load().lookup(name).map(|user| user.credential.stored_key);
        if current != Some(key) {
            return self.fail(context, request, format!("user {name:?} was removed or its credentials changed"));
        }
        context.metrics.auth.successes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "ringlog::auth", peer = %self.peer, user = %name, "kafka client authenticated");
        self.state = State::Authenticated(name.to_string(), key);
        Step::Answer { outcome: authenticate_answer(request, Ok(server_final)), keep_open: true }
    }

    /// Count a failed authentication and close. The detail goes to the log
    /// (never a password); the client hears only "failed".
    fn fail(&mut self, context: &ShardContext, request: &KafkaRequest, reason: String) -> Step {
        self.limiter.borrow_mut().record_failure(self.peer, Instant::now());
        context.metrics.auth.failures.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "ringlog::auth", peer = %self.peer, %reason, "kafka authentication failed");
        self.state = State::Failed;
        close(authenticate_answer(request, Err("authentication failed")))
    }
}

/// PLAIN password checks running at once on this shard's blocking pool: a
/// key derivation costs milliseconds (or seconds at a high iteration
/// count), which the shard's own thread must never spend, and a flood of
/// logins must not queue unbounded work.
const MAX_PLAIN_CHECKS_PER_SHARD: usize = 2;

thread_local! {
    static PLAIN_CHECKS_RUNNING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether `password` is `credential`'s, derived off the shard thread;
/// `None` when this shard runs as many checks as it may already.
async fn verify_off_the_shard(credential: StoredCredential, password: Vec<u8>) -> Option<bool> {
    if PLAIN_CHECKS_RUNNING.get() >= MAX_PLAIN_CHECKS_PER_SHARD {
        return None;
    }
    let _running = RunningCheck::start();
    Some(crate::runtime::run_blocking(move || credential.verify_password(&password)).await)
}

/// One running PLAIN check, counted until dropped (also if its connection's
/// task is dropped while it waits).
struct RunningCheck;

impl RunningCheck {
    fn start() -> RunningCheck {
        PLAIN_CHECKS_RUNNING.set(PLAIN_CHECKS_RUNNING.get() + 1);
        RunningCheck
    }
}

impl Drop for RunningCheck {
    fn drop(&mut self) {
        PLAIN_CHECKS_RUNNING.set(PLAIN_CHECKS_RUNNING.get() - 1);
    }
}

fn close(outcome: KafkaOutcome) -> Step {
    Step::Answer { outcome, keep_open: false }
}

/// A SaslAuthenticate answer: the server's SASL bytes, or
/// `SASL_AUTHENTICATION_FAILED` with `message`.
fn authenticate_answer(request: &KafkaRequest, answer: Result<Vec<u8>, &str>) -> KafkaOutcome {
    let response = match answer {
        Ok(bytes) => SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
        Err(message) => SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::SaslAuthenticationFailed.code())
            .with_error_message(Some(StrBytes::from_string(message.to_string()))),
    };
    respond(request, &response).map(Some)
}

/// `ILLEGAL_SASL_STATE` for a SASL request out of order.
fn illegal_state(request: &KafkaRequest, message: &str) -> KafkaOutcome {
    let code = ResponseError::IllegalSaslState.code();
    match request.api {
        ApiKey::SaslHandshake => respond(request, &SaslHandshakeResponse::default().with_error_code(code)).map(Some),
        _ => {
            let message = Some(StrBytes::from_string(message.to_string()));
            respond(request, &SaslAuthenticateResponse::default().with_error_code(code).with_error_message(message))
                .map(Some)
        }
    }
}

/// SaslHandshake and SaslAuthenticate when `[auth]` is off: no mechanism
/// is enabled (`UNSUPPORTED_SASL_MECHANISM` with an empty list), so a
/// client configured for SASL learns at once that this listener does not
/// authenticate, instead of believing it did.
pub fn without_authentication(request: &KafkaRequest) -> KafkaOutcome {
    match request.api {
        ApiKey::SaslHandshake => {
            let _: SaslHandshakeRequest = decode_body(request)?;
            let code = ResponseError::UnsupportedSaslMechanism.code();
            respond(request, &SaslHandshakeResponse::default().with_error_code(code)).map(Some)
        }
        _ => illegal_state(request, "authentication is not enabled on this listener"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::kafka::decode_request;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn request<T: Encodable>(api: ApiKey, version: i16, body: &T) -> KafkaRequest {
        let header = kafka_protocol::messages::RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7);
        let mut frame = bytes::BytesMut::new();
        header.encode(&mut frame, api.request_header_version(version)).unwrap();
        body.encode(&mut frame, version).unwrap();
        decode_request(frame.freeze()).unwrap()
    }

    fn handshake_answer(outcome: KafkaOutcome) -> SaslHandshakeResponse {
        let mut frame = Bytes::from(outcome.unwrap().unwrap().head).split_off(4 + 4);
        SaslHandshakeResponse::decode(&mut frame, 1).unwrap()
    }

    #[test]
    fn plain_is_enabled_only_under_tls() {
        assert_eq!(enabled_mechanisms(false), [SCRAM]);
        assert_eq!(enabled_mechanisms(true), [SCRAM, PLAIN]);
    }

    #[test]
    fn without_authentication_a_handshake_lists_no_mechanism() {
        let body = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(SCRAM));
        let answer = handshake_answer(without_authentication(&request(ApiKey::SaslHandshake, 1, &body)));
        assert_eq!(answer.error_code, ResponseError::UnsupportedSaslMechanism.code());
        assert!(answer.mechanisms.is_empty());
    }

    #[test]
    fn a_connection_reads_small_frames_until_it_authenticates() {
        let limiter = Rc::new(RefCell::new(FailureLimiter::new(10, 100)));
        let mut authentication = KafkaAuthentication::new(IpAddr::from([127, 0, 0, 1]), false, limiter);
        assert_eq!(authentication.frame_limit(64 << 20), MAX_UNAUTHENTICATED_FRAME_BYTES);
        assert_eq!(authentication.frame_limit(1024), 1024);
        authentication.state = State::Authenticated("someone".into(), [0; 32]);
        assert_eq!(authentication.frame_limit(64 << 20), 64 << 20);
    }
}
