//! A small HTTP/1.1 client for the admin API (used by `ringlog nodes` and
//! `ringlog forget-node`), on hyper, bounded in time and response size.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Largest admin response the client reads.
pub const MAX_ADMIN_RESPONSE_BYTES: usize = 16 << 20;

/// An admin API answer.
#[derive(Debug)]
pub struct AdminResponse {
    /// HTTP status.
    pub status: u16,
    /// Body (JSON).
    pub body: Vec<u8>,
}

impl AdminResponse {
    /// The `error` field of a JSON error body, or the raw body.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|value| value.get("error").and_then(|error| error.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

/// Send `method path` to the admin API at `address` (`host:port`).
pub async fn request(
    address: &str,
    method: hyper::Method,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<AdminResponse, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut builder = hyper::Request::builder().method(method).uri(format!("http://{address}{path}"));
    if let Some(token) = token {
        builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = builder.body(Empty::new()).map_err(|error| error.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|error| format!("{address}: {error}"))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ADMIN_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|error| format!("{address}: reading the answer: {error}"))?
            .to_bytes()
            .to_vec();
        Ok(AdminResponse { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{address}: no answer within {} ms", timeout.as_millis()))?
}
