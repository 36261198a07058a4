//! What the server hands out: every public response rendered once per change, as bytes
//! with their validators. Nothing on the request path renders or queries.

use std::collections::HashMap;
use std::io::Write;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

/// One response body, ready to send.
#[derive(Debug, Clone)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: Bytes,
    /// The body gzipped, when that makes it smaller.
    pub gzip: Option<Bytes>,
    /// Strong validator, quoted: `"<hex>"`.
    pub etag: String,
    /// The gzip body's validator (a different representation needs its own).
    pub etag_gzip: String,
    /// An IMF-fixdate.
    pub last_modified: String,
    /// `Cache-Control` value.
    pub cache_control: &'static str,
    /// `last_modified` as Unix seconds (for `If-Modified-Since`).
    pub modified_s: i64,
    /// The headers of a 200 with the plain body, and with the gzip body: built once
    /// here, cloned per request.
    pub headers: HeaderMap,
    pub headers_gzip: HeaderMap,
}

/// Every header of a 200 but the CSP (which the server's configuration sets).
fn prepared(
    content_type: &'static str,
    len: usize,
    etag: &str,
    last_modified: &str,
    cache_control: &'static str,
    gzip: bool,
) -> HeaderMap {
    let text = |v: &str| HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""));
    let mut h = HeaderMap::with_capacity(16);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(header::ETAG, text(etag));
    h.insert(header::LAST_MODIFIED, text(last_modified));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    h
}

/// How long browsers and proxies may keep a page before asking again (short: the page
/// changes during a maintenance).
pub const SHORT: &str = "public, max-age=5";
/// Static assets (CSS, scripts) change only with the binary.
pub const STATIC: &str = "public, max-age=300";

impl Asset {
    /// An asset of `body`, last changed at `modified_ms`.
    pub fn new(
        content_type: &'static str,
        body: impl Into<Vec<u8>>,
        modified_ms: i64,
        cache_control: &'static str,
    ) -> Asset {
        let body: Vec<u8> = body.into();
        let digest = Sha256::digest(&body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let gzip = (body.len() > 200)
            .then(|| gzip(&body))
            .flatten()
            .filter(|g| g.len() < body.len())
            .map(Bytes::from);
        let etag = format!("\"{hex}\"");
        let etag_gzip = format!("\"{hex}-gz\"");
        let last_modified = http_date(modified_ms);
        let gz_len = gzip.as_ref().map_or(0, |g| g.len());
        Asset {
            content_type,
            headers: prepared(
                content_type,
                body.len(),
                &etag,
                &last_modified,
                cache_control,
                false,
            ),
            headers_gzip: prepared(
                content_type,
                gz_len,
                &etag_gzip,
                &last_modified,
                cache_control,
                true,
            ),
            modified_s: modified_ms.max(0) / 1000,
            etag,
            etag_gzip,
            gzip,
            body: Bytes::from(body),
            last_modified,
            cache_control,
        }
    }
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

/// An HTTP date (IMF-fixdate) of Unix milliseconds.
pub fn http_date(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms.max(0))
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// All public responses at one version of the page, by path.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Grows by one per re-render; SSE clients learn it.
    pub version: u64,
    pub assets: HashMap<String, Asset>,
    /// The page it was rendered from (the admin API finds maintenances in it).
    pub page: Option<std::sync::Arc<super::model::Page>>,
}

impl Snapshot {
    pub fn insert(&mut self, path: impl Into<String>, asset: Asset) {
        self.assets.insert(path.into(), asset);
    }

    pub fn get(&self, path: &str) -> Option<&Asset> {
        self.assets.get(path)
    }
}
