//! A small HTTP/1.1 client for the admin API (used by `ringlog nodes` and
//! `ringlog forget-node`), on hyper, bounded in time and response size.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::security::tls::ClientTls;

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

/// Send `method path` to the admin API at `address` (`host:port`), over
/// TLS when `tls` is given (the certificate must name the host).
pub async fn request(
    address: &str,
    method: hyper::Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
    tls: &ClientTls,
    timeout: Duration,
) -> Result<AdminResponse, String> {
    let credential = token.map(|token| AdminCredential::Bearer(token.to_string()));
    request_with(address, method, path, credential.as_ref(), body, tls, timeout).await
}

/// [`request`] with a bearer token or an admin user's credentials.
pub async fn request_with(
    address: &str,
    method: hyper::Method,
    path: &str,
    credential: Option<&AdminCredential>,
    body: Option<String>,
    tls: &ClientTls,
    timeout: Duration,
) -> Result<AdminResponse, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("{scheme}://{address}{path}"))
        .header(hyper::header::HOST, address);
    if let Some(credential) = credential {
        builder = builder.header(hyper::header::AUTHORIZATION, credential.header());
    }
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|error| error.to_string())?;
    let exchange = async {
        let stream = open(address, tls).await.map_err(|error| format!("{address}: {error}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("{address}: {error}"))?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(|error| format!("{address}: {error}"))?;
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

/// A byte stream to an admin listener: TCP, or TLS over TCP.
trait ByteStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> ByteStream for T {}

async fn open(address: &str, tls: &ClientTls) -> std::io::Result<Box<dyn ByteStream>> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let Some(config) = tls else { return Ok(Box::new(stream)) };
    let name = crate::security::tls::server_name(address)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    Ok(Box::new(tokio_rustls::TlsConnector::from(std::sync::Arc::clone(config)).connect(name, stream).await?))
}
