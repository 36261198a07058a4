//! What the server hands out: every public response rendered once per change, as bytes
//! with their validators. Nothing on the request path renders or queries.

use std::collections::HashMap;
use std::io::Write;

use axum::body::Bytes;
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
        let gzip = (body.len() > 200).then(|| gzip(&body)).flatten();
        Asset {
            content_type,
            etag: format!("\"{hex}\""),
            etag_gzip: format!("\"{hex}-gz\""),
            gzip: gzip.filter(|g| g.len() < body.len()).map(Bytes::from),
            body: Bytes::from(body),
            last_modified: http_date(modified_ms),
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
