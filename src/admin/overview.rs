//! `GET /api/overview`: one small JSON snapshot the console samples every
//! couple of seconds to draw its charts and rates (docs/CONSOLE.md).
//!
//! It carries monotonic totals, never rates: the browser divides the
//! difference of two samples by the difference of their `uptime_ms`, so a
//! slow or skipped sample widens the interval instead of lying about it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::http::{health_report, AdminState};
use crate::state::metrics::PartitionGauge;

/// Per-topic sums over this node's partitions: one pass over the gauges,
/// so a node with many topics costs linear time per sample, not quadratic.
fn topic_totals(gauges: &[PartitionGauge], state: &AdminState) -> Vec<serde_json::Value> {
    // (bytes, records, summed log end offsets, fetched bytes) per topic.
    let mut sums: HashMap<&str, [u64; 4]> = HashMap::new();
    for gauge in gauges {
        let sum = sums.entry(gauge.topic.as_str()).or_default();
        sum[0] += gauge.size_bytes;
        sum[1] += gauge.log_end_offset.saturating_sub(gauge.log_start_offset);
        sum[2] += gauge.log_end_offset;
        sum[3] += gauge.fetched_bytes;
    }
    state
        .registry
        .snapshot()
        .values()
        .map(|meta| {
            let [bytes, records, log_end, fetched] = sums.get(meta.name.as_str()).copied().unwrap_or_default();
            json!({"name": meta.name, "partitions": meta.partitions, "bytes": bytes, "records": records,
                   "log_end_offset_total": log_end, "fetched_bytes_total": fetched})
        })
        .collect()
}

/// Totals of the shards' counters and the fsync histogram.
fn counters(state: &AdminState) -> serde_json::Value {
    let shards = &state.metrics.shards;
    let sum = |read: fn(&crate::state::metrics::ShardMetrics) -> u64| shards.iter().map(read).sum::<u64>();
    let (mut fsync_count, mut fsync_sum_us) = (0u64, 0u64);
    for shard in shards {
        let snapshot = shard.fsync_latency.snapshot();
        fsync_count += snapshot.count;
        fsync_sum_us += snapshot.sum_us;
    }
    json!({
        "produce_bytes_total": sum(|m| m.produce_bytes.load(Ordering::Relaxed)),
        "produce_records_total": sum(|m| m.produce_records.load(Ordering::Relaxed)),
        "fetch_bytes_total": sum(|m| m.fetch_bytes.load(Ordering::Relaxed)),
        "fetch_records_total": sum(|m| m.fetch_records.load(Ordering::Relaxed)),
        "fetch_requests_total": sum(|m| m.fetch_requests.load(Ordering::Relaxed)),
        "fsync_latency_count": fsync_count,
        "fsync_latency_sum_us": fsync_sum_us,
    })
}

/// Followers as the leader measures them; empty on any other node, and on
/// a leader that stepped down (its progress entries outlive its term).
fn followers(state: &AdminState) -> Vec<serde_json::Value> {
    let Some(services) = &state.cluster_services else { return Vec::new() };
    if state.cluster.view().role != crate::state::cluster::Role::Leader {
        return Vec::new();
    }
    services
        .progress()
        .all()
        .iter()
        .map(|(id, follower)| {
            json!({"id": id, "connected": follower.is_connected(), "lag_records": follower.lag_records(),
                   "lag_bytes": follower.lag_bytes()})
        })
        .collect()
}

/// `GET /api/overview`; `started` is when the admin listener came up.
pub async fn overview(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    started: Instant,
) -> Response {
    let (_, mut body) = health_report(&state);
    let gauges = state.metrics.partitions();
    let uptime_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    body["uptime_ms"] = json!(uptime_ms);
    body["min_insync_replicas"] = json!(state.cluster_services.as_ref().map(|services| services.min_insync_replicas()));
    body["admin_token_required"] = json!(state.admin_token.is_some());
    // Without a token, §7 allows mutations from loopback only: the page
    // greys its buttons out and says why instead of failing on click.
    // With [auth] on, loopback is no credential: the console (which sends
    // only the token) can mutate when a token is set.
    let authentication_on = state.users.as_ref().is_some_and(|users| users.enabled());
    body["mutations_allowed"] = json!(state.admin_token.is_some() || (peer.ip().is_loopback() && !authentication_on));
    body["counters"] = counters(&state);
    body["followers"] = json!(followers(&state));
    body["topics"] = json!(topic_totals(&gauges, &state));
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn state(admin_token: Option<&str>) -> AdminState {
        AdminState {
            registry: Arc::new(crate::shard::topics::TopicRegistry::new(Vec::new())),
            metrics: Arc::new(crate::state::metrics::NodeMetrics::new(1, Arc::default())),
            client: Arc::new(Unreachable),
            admin_token: admin_token.map(str::to_string),
            cluster: crate::state::cluster::ClusterState::standalone(),
            cluster_services: None,
            users: None,
            auth_failures: crate::admin::http::failure_limiter(&Default::default()),
        }
    }

    /// A node client that is never called by the overview.
    struct Unreachable;

    impl crate::admin::services::NodeClient for Unreachable {
        fn call(
            &self,
            _: crate::protocol::Request,
        ) -> crate::admin::services::Pending<'_, Result<crate::protocol::Response, crate::admin::services::CallFailure>>
        {
            Box::pin(async { Err(crate::admin::services::CallFailure { code: None, message: "unreachable".into() }) })
        }
    }

    async fn body(state: AdminState, peer: &str) -> serde_json::Value {
        let answer = overview(State(state), ConnectInfo(peer.parse().unwrap()), Instant::now()).await;
        let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_peers_may_mutate_and_with_one_anyone_holding_it() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let from_loopback = body(state(None), "127.0.0.1:5000").await;
            assert_eq!(from_loopback["mutations_allowed"], true);
            assert_eq!(body(state(None), "[::1]:5000").await["mutations_allowed"], true);
            let from_elsewhere = body(state(None), "192.0.2.7:5000").await;
            assert_eq!(from_elsewhere["mutations_allowed"], false, "the page greys its buttons out");
            assert_eq!(from_elsewhere["admin_token_required"], false);
            let with_token = body(state(Some("t")), "192.0.2.7:5000").await;
            assert_eq!(
                (with_token["mutations_allowed"].as_bool(), with_token["admin_token_required"].as_bool()),
                (Some(true), Some(true))
            );
            assert_eq!(from_loopback["min_insync_replicas"], serde_json::Value::Null, "standalone");
            assert_eq!(from_loopback["followers"], serde_json::json!([]));
        });
    }
}
