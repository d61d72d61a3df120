//! The operators' web console (spec §9): a single page served at every
//! console path, its script and style sheet, all embedded in the binary.
//!
//! Every asset is served with an ETag (a hash of its bytes) and
//! `Cache-Control: no-cache`, so a browser revalidates cheaply (304) and an
//! upgraded binary is never hidden behind a stale cache. Gzip is made once,
//! on first use, with the deflate encoder the dependency tree already has;
//! the assets are a few tens of KiB, so this costs milliseconds once.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// Sent with every asset: only the node itself may be loaded or called.
pub const CONTENT_SECURITY: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// One embedded file.
pub struct Asset {
    /// Path under `/assets/` (the page is served at the page paths instead).
    pub name: &'static str,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// The file's bytes.
    pub bytes: &'static [u8],
}

/// The page every console path returns.
pub const PAGE: Asset =
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", bytes: include_bytes!("console/index.html") };

/// The assets the page loads from `/assets/<name>`.
pub const ASSETS: [Asset; 3] = [
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("console/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("console/console.css"),
    },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", bytes: include_bytes!("console/favicon.svg") },
];

/// An asset with its derived forms, computed once.
struct Prepared {
    etag: String,
    gzip: Vec<u8>,
}

fn prepared(asset: &Asset) -> &'static Prepared {
    static CACHE: OnceLock<Vec<Prepared>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        std::iter::once(&PAGE)
            .chain(ASSETS.iter())
            .map(|asset| Prepared { etag: etag_of(asset.bytes), gzip: gzip(asset.bytes) })
            .collect()
    });
    let index = std::iter::once(&PAGE).chain(ASSETS.iter()).position(|known| known.name == asset.name).unwrap_or(0);
    &all[index]
}

/// A strong ETag: the first 16 bytes of the SHA-256 of the content, in hex.
pub fn etag_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("\"{hex}\"")
}

/// `bytes` as a gzip member (RFC 1952): header, raw deflate, CRC-32, size.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=2 (best compression) OS=255 (unknown).
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(bytes, 9));
    out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    // ISIZE is the length modulo 2^32 by definition.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out
}

/// Whether `Accept-Encoding` admits gzip (a `q=0` refuses it).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|parameter| {
                parameter.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Serve `asset`: 304 when the browser's copy is current, gzip when accepted.
pub fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let prepared = prepared(asset);
    let etag = HeaderValue::from_str(&prepared.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let current = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim().trim_start_matches("W/") == prepared.etag);
    let common = [
        (ETAG, etag),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (VARY, HeaderValue::from_static("Accept-Encoding")),
    ];
    if current {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let content_type = [
        (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        // The browser itself refuses any request to another host, and the
        // page cannot be framed by one (spec §9: no host but the node).
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY)),
    ];
    if accepts_gzip(headers) {
        let encoding = [(CONTENT_ENCODING, HeaderValue::from_static("gzip"))];
        return (common, content_type, encoding, prepared.gzip.clone()).into_response();
    }
    (common, content_type, asset.bytes).into_response()
}

async fn page(headers: HeaderMap) -> Response {
    serve(&PAGE, &headers)
}

async fn topic_page(Path(_name): Path<String>, headers: HeaderMap) -> Response {
    serve(&PAGE, &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(asset, &headers),
        None => (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": format!("no asset {name}")})))
            .into_response(),
    }
}

/// The console's routes: the page paths of §9 and `/assets/<name>`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/nodes", get(page))
        .route("/topics", get(page))
        .route("/topics/{name}", get(topic_page))
        .route("/assets/{name}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_encoding(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn gzip_output_inflates_back_to_the_asset_and_carries_its_crc_and_size() {
        for asset in std::iter::once(&PAGE).chain(ASSETS.iter()) {
            let packed = gzip(asset.bytes);
            assert_eq!(&packed[..3], &[0x1f, 0x8b, 8]);
            let body = &packed[10..packed.len() - 8];
            let inflated = miniz_oxide::inflate::decompress_to_vec(body).expect("valid deflate");
            assert_eq!(inflated, asset.bytes, "{}", asset.name);
            let trailer = &packed[packed.len() - 8..];
            assert_eq!(trailer[..4], crc32fast::hash(asset.bytes).to_le_bytes());
            assert_eq!(trailer[4..], (asset.bytes.len() as u32).to_le_bytes());
            assert!(packed.len() < asset.bytes.len() || asset.bytes.len() < 200, "{} compresses", asset.name);
        }
    }

    #[test]
    fn accept_encoding_is_parsed_with_quality_values() {
        assert!(accepts_gzip(&with_encoding("gzip, deflate, br")));
        assert!(accepts_gzip(&with_encoding("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with_encoding("*")));
        assert!(!accepts_gzip(&with_encoding("gzip;q=0")));
        assert!(!accepts_gzip(&with_encoding("br, deflate")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn etags_differ_between_assets_and_are_quoted() {
        let tags: Vec<String> = ASSETS.iter().map(|asset| etag_of(asset.bytes)).collect();
        assert!(tags.iter().all(|tag| tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34));
        assert_ne!(tags[0], tags[1]);
    }
}
