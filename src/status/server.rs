//! The HTTP server: public responses straight from the latest [`Snapshot`] (no rendering,
//! no database on the request path), Server-Sent Events, and the admin API.

// A refusal is a whole HTTP response, built once on a path that is already failing.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::model::{MaintenanceStatus, PageInfo};
use super::snapshot::Snapshot;
use crate::engine::event::{Event, PublicUpdate};
use crate::engine::state::RunState;
use crate::status::model::NoticeEvent;
use crate::store::{Store, StoreError, now_ms};

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// CSP `frame-ancestors` sources: who may embed the page (`'none'` by default).
    pub frame_ancestors: String,
    /// The admin API's bearer token; `None` turns the admin API off.
    pub admin_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            frame_ancestors: "'none'".into(),
            admin_token: None,
        }
    }
}

/// What every handler shares.
pub struct Shared {
    snap: watch::Receiver<Arc<Snapshot>>,
    store: Option<Store>,
    token: Option<[u8; 32]>,
    csp: HeaderValue,
}

type St = State<Arc<Shared>>;

/// The router over a stream of snapshots; `store` is where the admin API writes.
pub fn router(snap: watch::Receiver<Arc<Snapshot>>, store: Option<Store>, cfg: &Config) -> Router {
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {}",
        cfg.frame_ancestors
    );
    let shared = Arc::new(Shared {
        snap,
        store,
        token: cfg
            .admin_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Sha256::digest(t.as_bytes()).into()),
        csp: HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'")),
    });
    Router::new()
        .route("/api/v1/admin/updates", post(admin_update))
        .route("/api/v1/admin/runs/{run}/approve", post(admin_approve))
        .route("/api/v1/admin/runs/{run}/reject", post(admin_reject))
        .route("/api/v1/admin/runs/{run}/abort", post(admin_abort))
        .method_not_allowed_fallback(not_allowed)
        .fallback(public)
        .with_state(shared)
}

/// Serves the page of `store` on `listener` until the process ends: follows the journal
/// in the background and answers from memory. Nothing is accepted before the first
/// snapshot of the store is rendered: a client connecting early waits in the listen
/// queue, then gets the page, never a `404` of a page not yet there.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    info: PageInfo,
    cfg: Config,
) -> std::io::Result<()> {
    raise_fd_limit();
    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    tokio::spawn(super::follow::follow(store.clone(), info, tx));
    // The empty snapshot is version 0; the follower's first render is 1.
    if rx.wait_for(|s| s.version > 0).await.is_err() {
        return Err(std::io::Error::other(
            "the status page stopped before its first render",
        ));
    }
    let app = router(rx, Some(store), &cfg);
    accept(listener, app, Limits::from_env()).await
}

/// How long a connection may take, and how many there may be (documented in the README).
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// A request's header must be complete this long after the connection opened or its
    /// previous response was sent: a silent, half-sent or idle kept-alive connection ends.
    header: Duration,
    /// A connection on which no byte moves either way for this long ends (a client that
    /// stopped reading). Live updates send a keep-alive comment every 20 s.
    idle: Duration,
    /// Connections open at once; when a new one would pass it, the connection that has
    /// been quiet the longest is closed to make room.
    max: usize,
}

/// The default limits; `RUNBOOK_TEST_HEADER_TIMEOUT_MS`, `RUNBOOK_TEST_IDLE_TIMEOUT_MS`
/// and `RUNBOOK_TEST_MAX_CONNECTIONS` change them, for tests only.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS: usize = 10_000;
/// Descriptors kept for everything but connections (the store, logs, the runtime).
const FDS_KEPT: u64 = 100;

impl Limits {
    fn from_env() -> Limits {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let fds = fd_limit().unwrap_or(u64::MAX);
        let max = (MAX_CONNECTIONS as u64).min(fds.saturating_sub(FDS_KEPT).max(16)) as usize;
        Limits {
            header: env("RUNBOOK_TEST_HEADER_TIMEOUT_MS")
                .map_or(HEADER_TIMEOUT, Duration::from_millis),
            idle: env("RUNBOOK_TEST_IDLE_TIMEOUT_MS").map_or(IDLE_TIMEOUT, Duration::from_millis),
            max: env("RUNBOOK_TEST_MAX_CONNECTIONS").map_or(max, |n| n as usize),
        }
    }
}

/// The connections open now, each with the time of its last byte (ms since `epoch`).
struct Open {
    epoch: std::time::Instant,
    conns: std::sync::Mutex<std::collections::HashMap<u64, Arc<Conn>>>,
}

struct Conn {
    last_ms: std::sync::atomic::AtomicU64,
    /// Told to close, to make room for a new connection.
    shed: tokio::sync::Notify,
}

impl Open {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes the connection quiet for the longest (it no longer counts from now on).
    fn shed_quietest(&self) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let quietest = conns
            .iter()
            .min_by_key(|(_, c)| c.last_ms.load(std::sync::atomic::Ordering::Relaxed))
            .map(|(id, _)| *id);
        if let Some(c) = quietest.and_then(|id| conns.remove(&id)) {
            c.shed.notify_one();
        }
    }

    fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Accepts connections for ever, each served by hyper under [`Limits`].
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let open = Arc::new(Open {
        epoch: std::time::Instant::now(),
        conns: Default::default(),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header);
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors (or a connection reset before it was taken): make
                // room, and try again in a moment rather than spin.
                open.shed_quietest();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if open.len() >= limits.max {
            open.shed_quietest();
        }
        let id = next_id;
        next_id += 1;
        let conn = Arc::new(Conn {
            last_ms: open.now_ms().into(),
            shed: tokio::sync::Notify::new(),
        });
        open.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, conn.clone());
        let io = hyper_util::rt::TokioIo::new(Counted {
            inner: stream,
            open: open.clone(),
            conn: conn.clone(),
        });
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let served = http.serve_connection(io, service);
        let open = open.clone();
        let idle_ms = limits.idle.as_millis() as u64;
        tokio::spawn(async move {
            tokio::pin!(served);
            loop {
                let quiet_until = conn.last_ms.load(Relaxed) + idle_ms;
                let at = open.epoch + Duration::from_millis(quiet_until);
                tokio::select! {
                    _ = served.as_mut() => break,
                    _ = conn.shed.notified() => break,
                    _ = tokio::time::sleep_until(at.into()) => {
                        if open.now_ms() >= conn.last_ms.load(Relaxed) + idle_ms {
                            break;
                        }
                    }
                }
            }
            open.conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }
}

/// A connection's socket that notes when a byte last moved.
struct Counted {
    inner: tokio::net::TcpStream,
    open: Arc<Open>,
    conn: Arc<Conn>,
}

impl Counted {
    fn moved(&self) {
        self.conn
            .last_ms
            .store(self.open.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The soft limit on open descriptors.
fn fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit on a valid struct.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// Thousands of live-update clients need thousands of descriptors: take the hard limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn secure(mut r: Response, csp: &HeaderValue) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    r
}

/// A JSON error: `{"error": {"status": N, "message": "..."}}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ok(
        status,
        json!({ "error": { "status": status.as_u16(), "message": message.into() } }),
    )
}

/// Why an admin request was not done. What the client did wrong, or a state that refuses
/// the request, is said as it is; a store that fails is answered `503` with a generic
/// message, and the real error goes to the server's standard error.
#[derive(Debug)]
enum ApiError {
    /// Said to the client: `{"error": {"status": N, "message": "..."}}`.
    Said(StatusCode, String),
    /// The store could not read or write: logged, never sent.
    Unavailable(String),
}

impl ApiError {
    fn said(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Said(status, message.into())
    }

    fn store(e: StoreError) -> Self {
        match e {
            StoreError::UnknownRun(_) | StoreError::NotARun(_) => {
                Self::Said(StatusCode::NOT_FOUND, e.to_string())
            }
            // A write the run's state refuses, or a store opened read-only on purpose.
            StoreError::Conflict(_) | StoreError::LeaseLost { .. } | StoreError::ReadOnly(_) => {
                Self::Said(StatusCode::CONFLICT, e.to_string())
            }
            e => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<crate::engine::control::WriteError> for ApiError {
    fn from(e: crate::engine::control::WriteError) -> Self {
        use crate::engine::control::WriteError;
        match e {
            WriteError::Refused(message) => Self::Said(StatusCode::CONFLICT, message),
            WriteError::Store(e) => Self::store(e),
            WriteError::Damaged(reason) => Self::Unavailable(reason),
        }
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Said(status, message) => error(status, message),
            Self::Unavailable(real) => {
                eprintln!("status page: admin API: {real}");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable; try again",
                )
            }
        }
    }
}

/// The answer to an admin request, with the page's security headers.
fn answer(st: &Shared, result: Result<Response, ApiError>) -> Response {
    use axum::response::IntoResponse as _;
    secure(result.unwrap_or_else(ApiError::into_response), &st.csp)
}

async fn not_allowed(State(st): St) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "the admin API takes POST only",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    secure(r, &st.csp)
}

/// Whether a conditional request's `If-None-Match` names `etag` (weak comparison, as
/// RFC 9110 asks for GET).
fn matches_etag(inm: &str, etag: &str) -> bool {
    inm.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// Whether the client takes gzip (`Accept-Encoding`, honouring `q=0`).
fn takes_gzip(headers: &HeaderMap) -> bool {
    let Some(ae) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    ae.split(',').any(|part| {
        let mut it = part.split(';');
        let name = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

fn static_header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""))
}

/// Every public GET: a lookup in the snapshot.
async fn public(State(st): St, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path();
    if path == "/events" && (method == Method::GET || method == Method::HEAD) {
        return secure(events(&st), &st.csp);
    }
    if method == Method::OPTIONS {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        for (name, value) in [
            (header::ALLOW, "GET, HEAD, OPTIONS"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "If-None-Match, If-Modified-Since, Cache-Control",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ] {
            r.headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        return secure(r, &st.csp);
    }
    if path.starts_with("/api/v1/admin/") {
        return secure(
            error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
            &st.csp,
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here: the status page is read-only"),
        );
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        return secure(r, &st.csp);
    }
    let snap = st.snap.borrow().clone();
    let Some(asset) = snap.get(path) else {
        let mut r = if path.starts_with("/api/") {
            error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))
        } else if let Some(page) = snap.get("/404") {
            let mut r = Response::new(Body::from(page.body.clone()));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, static_header(page.content_type));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        } else {
            let mut r = Response::new(Body::from("Not found\n"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        };
        r.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        return secure(r, &st.csp);
    };
    let headers = req.headers();
    let (body, prepared, etag) = match &asset.gzip {
        Some(gz) if takes_gzip(headers) => (gz, &asset.headers_gzip, &asset.etag_gzip),
        _ => (&asset.body, &asset.headers, &asset.etag),
    };
    let fresh = match headers.get(header::IF_NONE_MATCH) {
        Some(inm) => inm.to_str().is_ok_and(|inm| matches_etag(inm, etag)),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .is_some_and(|since| asset.modified_s <= since.timestamp()),
    };
    let mut r = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        *r.headers_mut() = prepared.clone();
        for gone in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
        ] {
            r.headers_mut().remove(gone);
        }
        r
    } else {
        let mut r = Response::new(if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(body.clone())
        });
        *r.headers_mut() = prepared.clone();
        r
    };
    r.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, st.csp.clone());
    r
}

/// `/events`: one `update` event with the snapshot version now and after every change.
fn events(st: &Shared) -> Response {
    let frames = tokio_stream::wrappers::WatchStream::new(st.snap.clone()).map(|snap| {
        Ok::<_, Infallible>(Bytes::from(format!(
            "event: update\ndata: {{\"version\":{}}}\n\n",
            snap.version
        )))
    });
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    ping.reset();
    let pings = tokio_stream::wrappers::IntervalStream::new(ping)
        .map(|_| Ok::<_, Infallible>(Bytes::from_static(b": keep-alive\n\n")));
    let stream = tokio_stream::once(Ok::<_, Infallible>(Bytes::from_static(b"retry: 2000\n\n")))
        .chain(frames.merge(pings));
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

// ---------------------------------------------------------------------------------------
// The admin API
// ---------------------------------------------------------------------------------------

/// Checks the bearer token in constant time; the refusal when it is not right.
fn authorize(st: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let refuse = |message: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, message);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"runbook admin\""),
        );
        Err(secure(r, &st.csp))
    };
    let Some(expected) = st.token else {
        return refuse(
            "the admin API is off: start the server with RUNBOOK_ADMIN_TOKEN or --admin-token-file",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110).
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim);
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return refuse("missing bearer token: send `Authorization: Bearer TOKEN`");
    };
    let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    if bool::from(digest.ct_eq(&expected)) {
        Ok(())
    } else {
        refuse("wrong bearer token")
    }
}

/// Parses a JSON request body, saying where it is wrong.
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &body[..]
    };
    serde_json::from_slice(text).map_err(|e| {
        // serde_json's message ends with the line and column.
        ApiError::said(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
    })
}

/// A JSON answer that no cache keeps.
fn ok(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    body: Option<String>,
    maintenance: Option<String>,
    status: Option<String>,
    by: Option<String>,
}

const MAINTENANCE_STATUSES: &[&str] = &["scheduled", "in_progress", "verifying", "completed"];
const INCIDENT_STATUSES: &[&str] = &["investigating", "identified", "monitoring", "resolved"];
/// Longest manual update accepted.
const MAX_BODY: usize = 5000;

async fn admin_update(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match admit(&st, &headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    answer(&st, post_update(&st, &body).await)
}

async fn post_update(st: &Shared, body: &Bytes) -> Result<Response, ApiError> {
    let req: UpdateRequest = parse(body)?;
    let text = req.body.as_deref().map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err(ApiError::said(
            StatusCode::BAD_REQUEST,
            "`body` is required: the text of the update",
        ));
    }
    if text.chars().count() > MAX_BODY {
        return Err(ApiError::said(
            StatusCode::BAD_REQUEST,
            format!("`body` is longer than {MAX_BODY} characters"),
        ));
    }
    let page = st.snap.borrow().page.clone();
    let Some(page) = page else {
        return Err(ApiError::said(
            StatusCode::SERVICE_UNAVAILABLE,
            "the page is still loading; try again",
        ));
    };
    let m = match &req.maintenance {
        Some(id) => page
            .maintenances
            .iter()
            .find(|m| &m.id == id)
            .ok_or_else(|| {
                ApiError::said(StatusCode::NOT_FOUND, format!("no maintenance `{id}`"))
            })?,
        None => {
            let active: Vec<_> = page.active().collect();
            match active.as_slice() {
                [one] => *one,
                [] => {
                    return Err(ApiError::said(
                        StatusCode::CONFLICT,
                        "no maintenance is in progress: name one with `maintenance`",
                    ));
                }
                _ => {
                    return Err(ApiError::said(
                        StatusCode::CONFLICT,
                        "several maintenances are in progress: name one with `maintenance`",
                    ));
                }
            }
        }
    };
    let status = req.status.clone().unwrap_or_else(|| {
        let open = m
            .incident
            .as_ref()
            .and_then(|id| page.incidents.iter().find(|i| &i.id == id))
            .filter(|i| !i.resolved());
        match open {
            Some(i) => i.status.clone(),
            None => m.status.as_str().to_owned(),
        }
    });
    let incident = INCIDENT_STATUSES.contains(&status.as_str());
    if !incident && !MAINTENANCE_STATUSES.contains(&status.as_str()) {
        return Err(ApiError::said(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown status `{status}`: use {} (a maintenance) or {} (its incident)",
                MAINTENANCE_STATUSES.join(", "),
                INCIDENT_STATUSES.join(", ")
            ),
        ));
    }
    if incident && m.incident.is_none() {
        return Err(ApiError::said(
            StatusCode::CONFLICT,
            format!(
                "maintenance `{}` has no incident; `{status}` is an incident status",
                m.id
            ),
        ));
    }
    // A person's word does not move a run's status: only its events do.
    if !incident && m.run_id.is_some() && status != m.status.as_str() {
        return Err(ApiError::said(
            StatusCode::CONFLICT,
            format!(
                "maintenance `{}` is {} and its run decides that; post without `status` or with `{}`",
                m.id,
                m.status.as_str(),
                m.status.as_str()
            ),
        ));
    }
    if m.run_id.is_none() && status != MaintenanceStatus::Scheduled.as_str() {
        return Err(ApiError::said(
            StatusCode::CONFLICT,
            format!(
                "maintenance `{}` has not started: its status is scheduled",
                m.id
            ),
        ));
    }
    let Some(store) = &st.store else {
        return Err(ApiError::said(
            StatusCode::SERVICE_UNAVAILABLE,
            "no store to write to",
        ));
    };
    let update = PublicUpdate {
        kind: "manual".into(),
        status: status.clone(),
        body: text.to_owned(),
        step: None,
        eta_ms: None,
        by: Some(req.by.clone().unwrap_or_else(|| "admin API".into())),
        incident,
    };
    // What was recorded: a run's secrets are masked in it.
    let mut recorded = text.to_owned();
    match &m.run_id {
        Some(run) => {
            let state = crate::engine::control::append_checked(store, run, |_| {
                Ok(Event::Published(update.clone()))
            })
            .await?;
            recorded = crate::engine::action::Masker::new(crate::engine::action::secret_values(
                &state.secrets,
            ))
            .mask(text);
        }
        None => {
            let mut done = false;
            for _ in 0..20 {
                let head = store
                    .load_notice_after(&m.id, 0)
                    .await
                    .map_err(ApiError::store)?
                    .last()
                    .map_or(0, |r| r.seq);
                let event = NoticeEvent::Published(update.clone());
                match store
                    .append_notice(&m.id, &m.runbook, head + 1, &[event], now_ms())
                    .await
                {
                    Ok(_) => {
                        done = true;
                        break;
                    }
                    Err(crate::store::StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(ApiError::store(e)),
                }
            }
            if !done {
                return Err(ApiError::said(
                    StatusCode::CONFLICT,
                    "the maintenance kept changing; try again",
                ));
            }
        }
    }
    Ok(ok(
        StatusCode::CREATED,
        json!({ "maintenance": m.id, "status": status, "body": recorded, "incident": incident }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionRequest {
    step: Option<String>,
    by: Option<String>,
}

async fn admin_approve(
    st: St,
    run: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    decide(st, run, headers, body, true).await
}

async fn admin_reject(
    st: St,
    run: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    decide(st, run, headers, body, false).await
}

/// The run named in a path, or 404.
/// The run named in a path, as its journal folds now, or 404.
async fn existing_run(st: &Shared, run: &str) -> Result<(Store, RunState), ApiError> {
    let Some(store) = st.store.clone() else {
        return Err(ApiError::said(
            StatusCode::SERVICE_UNAVAILABLE,
            "no store to write to",
        ));
    };
    let events = match store.load(run).await {
        Ok(events) => events,
        Err(StoreError::UnknownRun(_) | StoreError::NotARun(_)) => {
            return Err(ApiError::said(
                StatusCode::NOT_FOUND,
                format!("no run `{run}`"),
            ));
        }
        Err(e) => return Err(ApiError::store(e)),
    };
    let state = RunState::from_events(events.iter().map(|r| (&r.event, r.at_ms))).map_err(|e| {
        ApiError::Unavailable(format!("the journal of run `{run}` does not fold: {e}"))
    })?;
    Ok((store, state))
}

/// An admin request's body, once its token is right (a refusal says nothing more).
fn admit(
    st: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Response> {
    authorize(st, headers)?;
    body.map_err(|e| {
        secure(
            error(e.status(), format!("the request body: {}", e.body_text())),
            &st.csp,
        )
    })
}

async fn decide(
    State(st): St,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    approve: bool,
) -> Response {
    let body = match admit(&st, &headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let result = async {
        let req: DecisionRequest = parse(&body)?;
        let (store, state) = existing_run(&st, &run).await?;
        let step = match req.step {
            Some(s) => s,
            None => state
                .steps
                .iter()
                .find(|(_, s)| s.awaiting_approval)
                .map(|(id, _)| id.clone())
                .ok_or_else(|| {
                    ApiError::said(
                        StatusCode::CONFLICT,
                        format!("no step of run `{run}` is waiting for approval"),
                    )
                })?,
        };
        let by = req.by.unwrap_or_else(|| "admin API".into());
        crate::engine::control::decide_in(&store, &run, &step, &by, approve).await?;
        Ok::<_, ApiError>(ok(
            StatusCode::OK,
            json!({
                "run": run,
                "step": step,
                "decision": if approve { "approved" } else { "rejected" },
                "by": by,
            }),
        ))
    }
    .await;
    answer(&st, result)
}

async fn admin_abort(
    State(st): St,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match admit(&st, &headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let result = async {
        let req: DecisionRequest = parse(&body)?;
        if req.step.is_some() {
            return Err(ApiError::said(
                StatusCode::BAD_REQUEST,
                "`step` has no meaning for an abort: the whole run stops",
            ));
        }
        let (store, _) = existing_run(&st, &run).await?;
        let by = req.by.unwrap_or_else(|| "admin API".into());
        crate::engine::control::abort_in(&store, &run, &by).await?;
        Ok::<_, ApiError>(ok(
            StatusCode::OK,
            json!({ "run": run, "status": "aborted", "by": by }),
        ))
    }
    .await;
    answer(&st, result)
}
