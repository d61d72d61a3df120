//! Users on the admin API (`[auth]`, docs/SECURITY.md): HTTP Basic
//! credentials of an admin user as an alternative to the bearer token, and
//! `GET`/`POST /api/users`, `DELETE /api/users/{name}`. A listing shows
//! names, roles and topic patterns only, never a credential.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::http::{error, AdminState, Authorized};
use crate::security::users::{new_user, UserRecord};
use crate::security::{Principal, Role, StoredCredential, TopicPattern, User, UsersError};

/// Longest `Authorization: Basic` value looked at (a name of 255 bytes and
/// a long password fit).
const MAX_BASIC_BYTES: usize = 4096;

/// Check HTTP Basic credentials: an admin user with its password. Failures
/// are counted and limited per source address like native handshakes.
pub(super) async fn refuse_basic(state: &AdminState, encoded: &str, peer: SocketAddr) -> Option<Response> {
    let Some(users) = &state.users else { return Some(error(StatusCode::UNAUTHORIZED, "this node has no users")) };
    let admitted =
        state.auth_failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).admits(peer.ip(), Instant::now());
    if !admitted {
        state.metrics.auth.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Some(error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentications; try again within a minute",
        ));
    }
    let decoded = (encoded.len() <= MAX_BASIC_BYTES)
        .then(|| BASE64.decode(encoded.trim()).ok())
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some((name, password)) = decoded.as_deref().and_then(|text| text.split_once(':')) else {
        return Some(refused_basic(state, peer));
    };
    let user = users.snapshot().lookup(name).cloned();
    // An unknown user costs the same key derivation as a known one, so
    // the answer's timing does not tell which names exist.
    let credential = user.as_ref().map(|user| user.credential.clone()).unwrap_or_else(unknown_user_credential);
    let Some(verified) = verify_off_thread(credential, password.as_bytes().to_vec()).await else {
        return Some(error(StatusCode::SERVICE_UNAVAILABLE, "too many password checks at once; retry"));
    };
    match user.filter(|_| verified) {
        Some(user) if user.principal.role == Role::Admin => None,
        Some(user) => Some(error(StatusCode::FORBIDDEN, format!("user {} is not an admin", user.principal.name))),
        None => Some(refused_basic(state, peer)),
    }
}

/// Password checks running at once on the blocking pool: a key derivation
/// costs milliseconds (seconds at a high iteration count), so a flood of
/// Basic requests must neither stall the control thread (lease keep-alive,
/// elections) nor queue unbounded work.
static PASSWORD_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Verify `password` against `credential` on tokio's blocking pool; `None`
/// when too many checks are running already.
async fn verify_off_thread(credential: StoredCredential, password: Vec<u8>) -> Option<bool> {
    let permit = PASSWORD_CHECKS.try_acquire().ok()?;
    let verified = tokio::task::spawn_blocking(move || credential.verify_password(&password)).await.ok();
    drop(permit);
    verified
}

/// A wrong user or password: counted and limited like native failures.
fn refused_basic(state: &AdminState, peer: SocketAddr) -> Response {
    state
        .auth_failures
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .record_failure(peer.ip(), Instant::now());
    state.metrics.auth.failures.fetch_add(1, Ordering::Relaxed);
    tracing::info!(target: "ringlog::auth", peer = %peer.ip(), "admin API: wrong user or password");
    error(StatusCode::UNAUTHORIZED, "wrong user or password")
}

fn unknown_user_credential() -> StoredCredential {
    StoredCredential {
        salt: b"unknown-user-salt".to_vec(),
        iterations: crate::security::scram::MIN_ITERATIONS,
        stored_key: [0; 32],
        server_key: [0; 32],
    }
}

fn users_error(failure: UsersError) -> Response {
    error(users_status(&failure), failure.to_string())
}

fn users_status(failure: &UsersError) -> StatusCode {
    match failure {
        UsersError::Exists(_) => StatusCode::CONFLICT,
        UsersError::Unknown(_) => StatusCode::NOT_FOUND,
        UsersError::BadUser { .. } => StatusCode::BAD_REQUEST,
        UsersError::Invalid { .. } => StatusCode::CONFLICT,
        UsersError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        UsersError::Io { .. } | UsersError::TooLarge { .. } | UsersError::NotPrivate { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// `GET /api/users`: `[{"name","role","topics"}]`.
pub(super) async fn list_users(_: Authorized, State(state): State<AdminState>) -> Response {
    let Some(users) = &state.users else { return Json(json!([])).into_response() };
    let listed: Vec<serde_json::Value> = users
        .snapshot()
        .iter()
        .map(|user| {
            let principal = &user.principal;
            json!({"name": principal.name, "role": principal.role, "topics": principal.topics.to_string()})
        })
        .collect();
    Json(listed).into_response()
}

/// A user added with a password (the node derives the credential).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithPassword {
    name: String,
    role: Role,
    #[serde(default = "every_topic")]
    topics: TopicPattern,
    password: String,
}

fn every_topic() -> TopicPattern {
    TopicPattern::Any
}

/// The user a `POST /api/users` body describes: a users-file entry (the
/// credential made by the client, as `ringlog user add` does) or a password.
fn user_of(body: serde_json::Value, iterations: u32) -> Result<User, (StatusCode, String)> {
    let bad = |error: serde_json::Error| (StatusCode::BAD_REQUEST, error.to_string());
    let user = match body.get("password") {
        None => serde_json::from_value::<UserRecord>(body).map_err(bad)?.into_user(),
        Some(_) => {
            let body: WithPassword = serde_json::from_value(body).map_err(bad)?;
            let principal = Principal { name: body.name, role: body.role, topics: body.topics };
            new_user(principal, body.password.as_bytes(), iterations)
        }
    };
    user.map_err(|failure| (users_status(&failure), failure.to_string()))
}

/// `POST /api/users`: 201 added, 409 exists, 400 invalid.
pub(super) async fn add_user(
    _: Authorized,
    State(state): State<AdminState>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(users) = state.users.clone() else { return error(StatusCode::NOT_FOUND, "this node has no users") };
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let user = match user_of(body, users.scram_iterations()) {
        Ok(user) => user,
        Err((status, message)) => return error(status, message),
    };
    let listed = json!({"name": user.principal.name, "role": user.principal.role,
        "topics": user.principal.topics.to_string()});
    match users.add(user).await {
        Ok(()) => (StatusCode::CREATED, Json(listed)).into_response(),
        Err(failure) => users_error(failure),
    }
}

/// `DELETE /api/users/{name}`: 204 removed, 404 unknown.
/// The body of `PUT /api/users/{name}/grant`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Grant {
    role: Role,
    #[serde(default = "every_topic")]
    topics: TopicPattern,
}

/// `PUT /api/users/{name}/grant` `{"role","topics"}`: 204; 404 unknown.
/// The user's credential stays; its sessions follow the new grant.
pub(super) async fn grant_user(
    _: Authorized,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Json(grant): Json<Grant>,
) -> Response {
    let Some(users) = &state.users else { return error(StatusCode::NOT_FOUND, "this node has no users") };
    match users.grant(&name, grant.role, grant.topics).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => users_error(failure),
    }
}

pub(super) async fn remove_user(_: Authorized, State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    let Some(users) = &state.users else { return error(StatusCode::NOT_FOUND, "this node has no users") };
    match users.remove(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => users_error(failure),
    }
}
