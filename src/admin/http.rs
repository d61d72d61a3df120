//! Admin HTTP API on the control thread (one tokio current-thread runtime).
//!
//! Reads of shared state (topics, metrics, health) come straight from the
//! immutable snapshots and atomics the shards publish. Mutations (create
//! and delete topic, describe) go through the node's own client protocol
//! over loopback, so they take exactly the same path, checks and limits as
//! any client request, and no second request channel into the shards exists.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::services::{CallFailure, ClusterServices, ForgetAnswer, NodeClient, UserDirectory};
use crate::protocol::{ErrorCode, Request, Response as ProtocolResponse, TopicSettings};
use crate::security::FailureLimiter;
use crate::shard::topics::TopicRegistry;
use crate::state::cluster::{ClusterState, Role};
use crate::state::metrics::NodeMetrics;

/// What the admin API needs.
#[derive(Clone)]
pub struct AdminState {
    /// Topics.
    pub registry: Arc<TopicRegistry>,
    /// Metrics and partition gauges.
    pub metrics: Arc<NodeMetrics>,
    /// This node's client protocol (mutations take the path of any client).
    pub client: Arc<dyn NodeClient>,
    /// Bearer token for mutating endpoints.
    pub admin_token: Option<String>,
    /// The cluster view the shards act on.
    pub cluster: Arc<ClusterState>,
    /// The control plane (cluster mode only).
    pub cluster_services: Option<Arc<dyn ClusterServices>>,
    /// The node's users (`[auth]`; HTTP Basic and `/api/users`).
    pub users: Option<Arc<dyn UserDirectory>>,
    /// Failed HTTP Basic attempts per source address.
    pub auth_failures: Arc<std::sync::Mutex<FailureLimiter>>,
}

/// The admin API's failure limiter, bounded like the listeners' ones.
pub fn failure_limiter(auth: &crate::config::AuthConfig) -> Arc<std::sync::Mutex<FailureLimiter>> {
    Arc::new(std::sync::Mutex::new(FailureLimiter::new(auth.max_failures_per_minute, auth.max_tracked_sources)))
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Mutations need HTTP Basic credentials of an admin user (`[auth]`), or
/// the bearer token when one is set, else (neither `[auth]` nor a token) a
/// loopback peer. Returns the refusal, if any.
pub async fn refuse(state: &AdminState, headers: &HeaderMap, peer: SocketAddr) -> Option<Response> {
    let authentication_on = state.users.as_ref().is_some_and(|users| users.enabled());
    if let Some(refusal) = refuse_cross_site(headers, state.admin_token.is_none() && !authentication_on) {
        return Some(refusal);
    }
    let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if let Some(basic) = authorization.and_then(|value| value.strip_prefix("Basic ")) {
        return super::users::refuse_basic(state, basic, peer).await;
    }
    match &state.admin_token {
        Some(token) => {
            let presented = authorization.and_then(|value| value.strip_prefix("Bearer "));
            let matches =
                presented.is_some_and(|presented| constant_time_equal(presented.as_bytes(), token.as_bytes()));
            (!matches).then(|| error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
        }
        // Loopback is no credential once clients must authenticate.
        None if authentication_on => Some(error(
            StatusCode::UNAUTHORIZED,
            "authentication is on: send HTTP Basic credentials of an admin user (or the admin_token)",
        )),
        None if peer.ip().is_loopback() => None,
        None => {
            Some(error(StatusCode::FORBIDDEN, "mutations are allowed only from loopback when admin_token is unset"))
        }
    }
}

/// Proof that a mutating request passed [`refuse`]: a handler that takes it
/// cannot forget the check, and the check runs before the body is read.
pub struct Authorized;

impl axum::extract::FromRequestParts<AdminState> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AdminState,
    ) -> Result<Authorized, Response> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| *peer);
        let Some(peer) = peer else {
            return Err(error(StatusCode::FORBIDDEN, "the peer address is unknown; refusing a mutation"));
        };
        refuse(state, &parts.headers, peer).await.map_or(Ok(Authorized), Err)
    }
}

/// A browser page of another site must not mutate through an operator's
/// browser: a request whose `Origin` names another host than `Host` is
/// refused, and without a token (loopback is the only check then) `Host`
/// must be an IP address or `localhost`, so a hostile name rebound to
/// 127.0.0.1 (DNS rebinding, where `Origin` and `Host` agree) is refused.
fn refuse_cross_site(headers: &HeaderMap, loopback_only: bool) -> Option<Response> {
    let header = |name| headers.get(name).and_then(|value: &axum::http::HeaderValue| value.to_str().ok());
    let host = header(axum::http::header::HOST);
    if let Some(origin) = header(axum::http::header::ORIGIN) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if Some(origin_host) != host {
            return Some(error(StatusCode::FORBIDDEN, "cross-origin mutation refused"));
        }
    }
    let name = host.map(|host| host.rsplit_once(':').map_or(host, |(name, _)| name));
    let local_name = name
        .is_none_or(|name| name == "localhost" || name.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok());
    (loopback_only && !local_name)
        .then(|| error(StatusCode::FORBIDDEN, "without admin_token, mutations need an IP address or localhost as Host"))
}

/// Compare without leaking the position of the first difference.
pub fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

fn client_error(failure: CallFailure) -> Response {
    let status = match failure.code {
        Some(ErrorCode::TopicExists) => StatusCode::CONFLICT,
        Some(ErrorCode::UnknownTopic) => StatusCode::NOT_FOUND,
        Some(ErrorCode::InvalidRequest) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, failure.message)
}

async fn health(State(state): State<AdminState>) -> Response {
    let (status, body) = health_report(&state);
    (status, Json(body)).into_response()
}

/// The body of `GET /api/health` and its status: 200, or 503 with the
/// reason when a partition is fail-stopped or the node is fenced.
pub fn health_report(state: &AdminState) -> (StatusCode, serde_json::Value) {
    let mut reasons: Vec<String> = state
        .metrics
        .partitions()
        .into_iter()
        .filter_map(|gauge| gauge.failure.map(|reason| format!("{}/{}: {reason}", gauge.topic, gauge.partition)))
        .collect();
    let view = state.cluster.view();
    let fenced = view.role == Role::Leader && state.cluster.write_epoch().is_err();
    if fenced {
        reasons.push("fenced: the leader's etcd lease was not renewed in time; writes are refused".into());
    }
    reasons.extend(view.problem.clone());
    let mut body = json!({"status": "ok", "node_id": view.node_id, "role": view.role.name()});
    if state.cluster.is_clustered() {
        body["leader_id"] = json!(view.leader_id);
        body["leader_epoch"] = json!(view.leader_epoch);
        body["etcd"] = json!(if view.etcd_reachable { "connected" } else { "unreachable" });
        if view.leader_id.is_none() {
            body["warning"] = json!("the cluster has no leader: no live in-sync replica has won the election");
        }
    }
    if reasons.is_empty() {
        return (StatusCode::OK, body);
    }
    body["status"] = json!(if fenced || view.problem.as_deref().is_some_and(|p| p.starts_with("fenced")) {
        "fenced"
    } else {
        "failed"
    });
    body["reason"] = json!(reasons.join("; "));
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

async fn list_topics(State(state): State<AdminState>) -> Response {
    let topics: Vec<serde_json::Value> = state
        .registry
        .snapshot()
        .values()
        .map(|meta| {
            json!({"name": meta.name, "partitions": meta.partitions, "retention_bytes": meta.retention_bytes,
                   "retention_ms": meta.retention_ms, "segment_bytes": meta.segment_bytes})
        })
        .collect();
    Json(topics).into_response()
}

/// Body of `POST /api/topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopicBody {
    name: String,
    #[serde(default = "one")]
    partitions: u32,
    #[serde(default)]
    retention_bytes: u64,
    #[serde(default)]
    retention_ms: u64,
    #[serde(default)]
    segment_bytes: u64,
}

fn one() -> u32 {
    1
}

async fn create_topic(
    _: Authorized,
    State(state): State<AdminState>,
    body: Result<Json<CreateTopicBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let settings = TopicSettings {
        partitions: body.partitions,
        retention_bytes: body.retention_bytes,
        retention_ms: body.retention_ms,
        segment_bytes: body.segment_bytes,
    };
    match state.client.call(Request::CreateTopic { name: body.name.clone(), settings }).await {
        Ok(_) => (StatusCode::CREATED, Json(json!({"name": body.name, "partitions": body.partitions}))).into_response(),
        Err(failure) => client_error(failure),
    }
}

async fn describe_topic(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match state.client.call(Request::DescribeTopic { name: name.clone() }).await {
        Ok(ProtocolResponse::DescribeTopic(partitions)) => {
            let partitions: Vec<serde_json::Value> = partitions
                .iter()
                .map(|p| {
                    json!({"partition": p.partition, "log_start_offset": p.log_start_offset,
                           "log_end_offset": p.log_end_offset, "high_watermark": p.high_watermark,
                           "segments": p.segments, "bytes": p.bytes, "leader_epoch": p.leader_epoch})
                })
                .collect();
            Json(json!({"name": name, "partitions": partitions})).into_response()
        }
        Ok(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer"),
        Err(failure) => client_error(failure),
    }
}

async fn delete_topic(_: Authorized, State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match state.client.call(Request::DeleteTopic { name }).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => client_error(failure),
    }
}

async fn list_nodes(State(state): State<AdminState>) -> Response {
    let Some(services) = &state.cluster_services else { return Json(json!([])).into_response() };
    match services.nodes().await {
        Ok(nodes) => Json(nodes).into_response(),
        Err(failure) => error(StatusCode::SERVICE_UNAVAILABLE, failure),
    }
}

async fn forget_node(_: Authorized, State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(services) = &state.cluster_services else {
        return error(StatusCode::NOT_FOUND, format!("unknown node {id} (standalone node)"));
    };
    let Ok(id) = id.parse::<u64>() else { return error(StatusCode::NOT_FOUND, format!("unknown node {id}")) };
    match services.forget(id).await {
        ForgetAnswer::Forgotten => StatusCode::NO_CONTENT.into_response(),
        ForgetAnswer::Unknown => error(StatusCode::NOT_FOUND, format!("unknown node {id}")),
        ForgetAnswer::Refused(reason) => error(StatusCode::CONFLICT, reason),
        ForgetAnswer::Unavailable(reason) => error(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let headers = [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    let mut text = crate::admin::metrics::render(&state.metrics);
    if let Some(services) = &state.cluster_services {
        crate::admin::metrics::render_replication(services.progress(), &mut text);
    }
    (headers, text).into_response()
}

/// The router of the admin API and the console (spec §9).
pub fn router(state: AdminState) -> Router {
    let started = std::time::Instant::now();
    Router::new()
        .merge(super::console::routes())
        .route("/api/overview", get(move |state, peer| super::overview::overview(state, peer, started)))
        .route("/api/health", get(health))
        .route("/api/nodes", get(list_nodes))
        .route("/api/nodes/{id}", delete(forget_node))
        .route("/api/topics", get(list_topics).post(create_topic))
        .route("/api/topics/{name}", get(describe_topic).delete(delete_topic))
        .route("/api/users", get(super::users::list_users).post(super::users::add_user))
        .route("/api/users/{name}", delete(super::users::remove_user))
        .route("/api/users/{name}/grant", axum::routing::put(super::users::grant_user))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::refuse_cross_site;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn another_sites_page_and_a_rebound_name_cannot_mutate() {
        // The console itself, and the CLI (no Origin).
        assert!(refuse_cross_site(&headers("127.0.0.1:7071", Some("http://127.0.0.1:7071")), true).is_none());
        assert!(refuse_cross_site(&headers("localhost:7071", None), true).is_none());
        assert!(refuse_cross_site(&headers("[::1]:7071", None), true).is_none());
        // A page of another site posting to the node.
        assert!(refuse_cross_site(&headers("127.0.0.1:7071", Some("http://evil.example")), true).is_some());
        // DNS rebinding: Origin and Host agree on a name that is not local.
        assert!(refuse_cross_site(&headers("evil.example:7071", Some("http://evil.example:7071")), true).is_some());
        // With a token, a name is fine (the token is the check), a foreign Origin is not.
        assert!(refuse_cross_site(&headers("ringlog-0.ringlog:7071", None), false).is_none());
        assert!(refuse_cross_site(&headers("ringlog-0:7071", Some("http://evil.example")), false).is_some());
    }
}
