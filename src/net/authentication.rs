//! Client authentication on the native listener (`[auth] enabled`): a
//! connection's first requests must be `SaslStart` then `SaslContinue`
//! (SCRAM-SHA-256, `security::scram`); anything else first gets one
//! `authentication_required` error and the connection is closed. A failed
//! handshake answers `authentication_failed`, is counted in `/metrics`
//! and against its source address (`security::limiter`), and closes the
//! connection. Once authenticated, every request is checked with
//! `Principal::may` against the user as the current snapshot has it (a
//! removed user's connections are closed at their next request); a
//! refusal answers `not_authorized` and the connection stays open.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::protocol::{ErrorCode, ErrorResponse, Request, Response};
use crate::security::scram::{new_nonce, MECHANISM};
use crate::security::settings::Listener;
use crate::security::tls::certificate_names;
use crate::security::{FailureLimiter, Operation, Principal, ScramServer};
use crate::shard::context::ShardContext;
use rustls::pki_types::CertificateDer;

/// What the listener does with one request of a connection.
pub(super) enum Verdict {
    /// Execute it.
    Pass(Request),
    /// A handshake step: send this answer, read the next request.
    Answer(Response),
    /// Not allowed: answer this error, keep the connection.
    Refuse(ErrorResponse),
    /// Answer this error and close the connection.
    Close(ErrorResponse),
}

enum State {
    AwaitingStart,
    AwaitingContinue(ScramServer),
    /// The user's name and the stored key it proved: its role and topics
    /// are read from the current snapshot at every request, and a user
    /// removed or given a new password since (the key differs) is closed.
    Authenticated(String, [u8; 32]),
    /// After a failure: the connection is closing.
    Failed,
}

/// One connection's authentication: its state and where failures count.
pub(super) struct ClientAuthentication {
    state: RefCell<State>,
    peer: IpAddr,
    limiter: Rc<RefCell<FailureLimiter>>,
    /// The client certificate mutual TLS verified, for SASL EXTERNAL.
    client_certificate: RefCell<Option<CertificateDer<'static>>>,
}

/// SASL EXTERNAL (RFC 4422 appendix A): the user is the one the verified
/// client certificate names; the message is that user's name.
pub const EXTERNAL: &str = "EXTERNAL";

/// The per-shard failure limiter of a client listener with `[auth]` on.
pub(super) fn limiter(context: &ShardContext) -> Rc<RefCell<FailureLimiter>> {
    let auth = &context.config.auth;
    Rc::new(RefCell::new(FailureLimiter::new(auth.max_failures_per_minute, auth.max_tracked_sources)))
}

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse { code, message: message.into(), leader: None }
}

/// The operation a client request asks for.
pub fn operation_of(request: &Request) -> Operation<'_> {
    match request {
        Request::CreateTopic { .. } => Operation::CreateTopic,
        Request::DeleteTopic { .. } => Operation::DeleteTopic,
        Request::ListTopics | Request::DescribeTopic { .. } | Request::TopicConfigs | Request::TopicIncarnations => {
            Operation::Describe
        }
        Request::Produce { topic, .. } => Operation::Produce { topic },
        Request::Fetch { topic, .. } => Operation::Fetch { topic },
        Request::ListOffsets { topic, .. } | Request::FindOffset { topic, .. } => Operation::ListOffsets { topic },
        Request::CommitOffset { topic, .. } => Operation::CommitGroupOffsets { topic },
        Request::FetchOffset { topic, .. } => Operation::FetchGroupOffsets { topic },
        Request::InitProducer => Operation::InitProducerId,
        // Replication and handshake frames never reach the authorizer on a
        // client connection; if they did, only an admin would pass.
        Request::ReplicaHello { .. }
        | Request::ReplicaAuth { .. }
        | Request::ReplicaFetch { .. }
        | Request::EpochEndOffset { .. }
        | Request::GroupOffsets { .. }
        | Request::ReplicaFetchMany { .. }
        | Request::ReplicaGroupOffsets { .. }
        | Request::SaslStart { .. }
        | Request::SaslContinue { .. } => Operation::NodeAdmin,
    }
}

impl ClientAuthentication {
    pub(super) fn new(peer: IpAddr, limiter: Rc<RefCell<FailureLimiter>>) -> ClientAuthentication {
        ClientAuthentication {
            state: RefCell::new(State::AwaitingStart),
            peer,
            limiter,
            client_certificate: RefCell::new(None),
        }
    }

    /// Whether the connection has authenticated.
    pub(super) fn is_authenticated(&self) -> bool {
        matches!(*self.state.borrow(), State::Authenticated(..))
    }

    /// The certificate the TLS handshake verified (none on plaintext or
    /// without `client_ca_file`).
    pub(super) fn set_client_certificate(&self, certificate: Option<CertificateDer<'static>>) {
        *self.client_certificate.borrow_mut() = certificate;
    }

    /// Decide `request`: a handshake step, an authorized request, or a refusal.
    pub(super) fn check(&self, context: &ShardContext, request: Request) -> Verdict {
        let state = std::mem::replace(&mut *self.state.borrow_mut(), State::Failed);
        let (next, verdict) = match (state, request) {
            (State::AwaitingStart, Request::SaslStart { mechanism, message }) => {
                self.start(context, &mechanism, &message)
            }
            (State::AwaitingContinue(server), Request::SaslContinue { message }) => {
                self.finish(context, server, &message)
            }
            (State::Authenticated(..), Request::SaslStart { .. } | Request::SaslContinue { .. }) => (
                State::Failed,
                Verdict::Close(error(ErrorCode::InvalidRequest, "this connection is authenticated already")),
            ),
            (State::Authenticated(name, key), request) => match context.users.load().lookup(&name) {
                Some(user) if user.credential.stored_key == key => {
                    let verdict = authorize(context, &user.principal, request);
                    (State::Authenticated(name, key), verdict)
                }
                _ => {
                    let message = format!("user {name} was removed or its credentials changed");
                    (State::Failed, Verdict::Close(error(ErrorCode::AuthenticationFailed, message)))
                }
            },
            (State::AwaitingContinue(_), _) => self.fail(context, "expected SaslContinue".into()),
            (_, request) => {
                let message = format!("authenticate first (SaslStart with {MECHANISM}) before {:?}", request.api_key());
                (State::Failed, Verdict::Close(error(ErrorCode::AuthenticationRequired, message)))
            }
        };
        *self.state.borrow_mut() = next;
        verdict
    }

    fn start(&self, context: &ShardContext, mechanism: &str, message: &[u8]) -> (State, Verdict) {
        if !self.limiter.borrow().admits(self.peer, Instant::now()) {
            context.metrics.auth.rate_limited.fetch_add(1, Ordering::Relaxed);
            let message = "too many failed authentications from this address; try again within a minute";
            return (State::Failed, Verdict::Close(error(ErrorCode::AuthenticationFailed, message)));
        }
        if mechanism == EXTERNAL {
            return self.external(context, message);
        }
        if mechanism != MECHANISM {
            return self.fail(context, format!("unsupported mechanism {mechanism:?} ({MECHANISM} or {EXTERNAL})"));
        }
        let nonce = match new_nonce() {
            Ok(nonce) => nonce,
            Err(failure) => return (State::Failed, Verdict::Close(error(ErrorCode::Internal, failure.to_string()))),
        };
        let users = context.users.load();
        let started =
            ScramServer::start(message, &nonce, |name| users.lookup(name).map(|user| user.credential.clone()));
        match started {
            Ok((server, server_first)) => {
                (State::AwaitingContinue(server), Verdict::Answer(Response::SaslStart { message: server_first }))
            }
            Err(failure) => self.fail(context, failure.to_string()),
        }
    }

    fn finish(&self, context: &ShardContext, server: ScramServer, message: &[u8]) -> (State, Verdict) {
        let username = server.username().to_string();
        // Checked again here, not only at SaslStart: handshakes started in
        // parallel on many connections would otherwise each get a guess.
        if !self.limiter.borrow().admits(self.peer, Instant::now()) {
            context.metrics.auth.rate_limited.fetch_add(1, Ordering::Relaxed);
            let message = "too many failed authentications from this address; try again within a minute";
            return (State::Failed, Verdict::Close(error(ErrorCode::AuthenticationFailed, message)));
        }
        let done = match server.finish(message) {
            Ok(done) => done,
            Err(failure) => return self.fail(context, format!("user {username:?}: {failure}")),
        };
        // Looked up again: a user removed during the handshake is refused.
        let Some(user) = context.users.load().lookup(&done.username).cloned() else {
            return self.fail(context, format!("user {username:?} was removed"));
        };
        context.metrics.auth.successes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "ringlog::auth", peer = %self.peer, user = %user.principal.name, "authenticated");
        (
            State::Authenticated(user.principal.name, user.credential.stored_key),
            Verdict::Answer(Response::SaslContinue { message: done.server_final }),
        )
    }

    /// SASL EXTERNAL: the verified client certificate must name the user
    /// (a subjectAltName DNS name equal to the user's name) and the user
    /// must exist; one step, answered with an empty message.
    fn external(&self, context: &ShardContext, message: &[u8]) -> (State, Verdict) {
        let Ok(name) = std::str::from_utf8(message) else {
            return self.fail(context, "EXTERNAL: the user name is not UTF-8".into());
        };
        let certificate = self.client_certificate.borrow().clone();
        let Some(certificate) = certificate else {
            return self.fail(context, format!("EXTERNAL as {name:?} without a verified client certificate"));
        };
        // The node's own certificate passes mutual TLS (for its loopback
        // client) without the client CA: it stands for no user.
        if context.tls.own_certificate(Listener::Client).is_some_and(|own| own == certificate) {
            return self.fail(context, "EXTERNAL with the node's own certificate".into());
        }
        if !certificate_names(&certificate, name) {
            return self.fail(context, format!("EXTERNAL: the client certificate does not name {name:?}"));
        }
        let Some(user) = context.users.load().lookup(name).cloned() else {
            return self.fail(context, format!("EXTERNAL: no user {name:?}"));
        };
        context.metrics.auth.successes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "ringlog::auth", peer = %self.peer, user = %user.principal.name, "authenticated by certificate");
        let state = State::Authenticated(user.principal.name, user.credential.stored_key);
        (state, Verdict::Answer(Response::SaslStart { message: Vec::new() }))
    }

    /// Count a failed handshake and close. The detail goes to the log (never
    /// a password: none crosses the wire); the client hears only "failed".
    fn fail(&self, context: &ShardContext, reason: String) -> (State, Verdict) {
        self.limiter.borrow_mut().record_failure(self.peer, Instant::now());
        context.metrics.auth.failures.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "ringlog::auth", peer = %self.peer, %reason, "authentication failed");
        (State::Failed, Verdict::Close(error(ErrorCode::AuthenticationFailed, "authentication failed")))
    }
}

fn authorize(context: &ShardContext, principal: &Principal, request: Request) -> Verdict {
    if principal.may(&operation_of(&request)) {
        return Verdict::Pass(request);
    }
    context.metrics.auth.not_authorized.fetch_add(1, Ordering::Relaxed);
    let message = format!("user {} ({}) may not {:?}", principal.name, principal.role, operation_of(&request));
    Verdict::Refuse(error(ErrorCode::NotAuthorized, message))
}
