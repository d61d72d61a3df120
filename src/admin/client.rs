//! A small HTTP/1.1 client for the admin API (used by `ringlog nodes` and
//! `ringlog forget-node`), on hyper, bounded in time and response size.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
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

/// How a caller proves it may mutate: the bearer token, or an admin user
/// (HTTP Basic). `Debug` never shows the secret.
#[derive(Clone)]
pub enum AdminCredential {
    /// `admin_token`.
    Bearer(String),
    /// An admin user's name and password.
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminCredential::Bearer(_) => formatter.write_str("Bearer(<redacted>)"),
            AdminCredential::Basic { user, .. } => write!(formatter, "Basic({user}, <redacted>)"),
        }
    }
}

impl AdminCredential {
    fn header(&self) -> String {
        match self {
            AdminCredential::Bearer(token) => format!("Bearer {token}"),
            AdminCredential::Basic { user, password } => {
                format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
            }
        }
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
    let credential = token.map(|token| AdminCredential::Bearer(token.to_string()));
    request_with(address, method, path, credential.as_ref(), None, timeout).await
}

/// Send `method path` with a credential and a JSON body.
pub async fn request_with(
    address: &str,
    method: hyper::Method,
    path: &str,
    credential: Option<&AdminCredential>,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<AdminResponse, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut builder = hyper::Request::builder().method(method).uri(format!("http://{address}{path}"));
    if let Some(credential) = credential {
        builder = builder.header(hyper::header::AUTHORIZATION, credential.header());
    }
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|error| error.to_string())?;
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
