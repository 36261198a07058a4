//! The public side: every GET a lookup in the latest [`Snapshot`], with its validators
//! (`ETag`, `Last-Modified`, gzip by `Accept-Encoding`); the live updates (`/events`);
//! the CORS preflight; and the refusal of writes (the page is read-only).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tokio_stream::StreamExt;
use tower_http::set_header::SetResponseHeaderLayer;

use super::{Shared, St, error};

/// The public methods of a path: `get` (GET and HEAD), the CORS preflight, and the
/// read-only refusal of every other method. What they answer may be read from any origin.
pub(super) fn read_side(
    get: MethodRouter<std::sync::Arc<Shared>>,
) -> MethodRouter<std::sync::Arc<Shared>> {
    get.options(preflight)
        .route_layer(any_origin())
        .fallback(read_only)
}

/// `Access-Control-Allow-Origin: *`, unless the response says otherwise.
pub(super) fn any_origin() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    )
}

/// The CORS preflight: the page may be read from anywhere, conditionally.
pub(super) async fn preflight() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    for (name, value) in [
        (header::ALLOW, "GET, HEAD, OPTIONS"),
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
    r
}

/// A write to the public side: `405` with `Allow`.
async fn read_only(method: Method) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here: the status page is read-only"),
    );
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    r
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

/// A path the snapshot does not have: a JSON error under `/api/`, else the page's 404.
fn not_found(snap: &super::Snapshot, path: &str) -> Response {
    if path.starts_with("/api/") {
        return error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"));
    }
    let (body, content_type) = match snap.get("/404") {
        Some(page) => (
            Body::from(page.body.clone()),
            static_header(page.content_type),
        ),
        None => (
            Body::from("Not found\n"),
            HeaderValue::from_static("text/plain; charset=utf-8"),
        ),
    };
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, content_type);
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// Every public GET (and HEAD): a lookup in the snapshot, answered `304` when the
/// client's copy is fresh.
pub(super) async fn asset(State(st): St, req: Request<Body>) -> Response {
    let path = req.uri().path();
    let snap = st.snap.borrow().clone();
    match answer(&snap, req.method(), path, req.headers()) {
        Some(r) => r,
        None => not_found(&snap, path),
    }
}

/// The answer to a GET or HEAD of `path` from `snap`, with every header the snapshot
/// prepared (all but the CSP); `None` when the snapshot has no such path.
pub(super) fn answer(
    snap: &super::Snapshot,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    let asset = snap.get(path)?;
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
    if fresh {
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
        return Some(r);
    }
    let mut r = Response::new(if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body.clone())
    });
    *r.headers_mut() = prepared.clone();
    Some(r)
}

/// How often a quiet live-update stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// `/events`: one `update` event with the snapshot version now and after every change.
pub(super) async fn events(State(st): St) -> Response {
    let updates = tokio_stream::wrappers::WatchStream::new(st.snap.clone()).map(|snap| {
        Ok::<_, Infallible>(
            Event::default()
                .event("update")
                .data(format!("{{\"version\":{}}}", snap.version)),
        )
    });
    let first = Event::default().retry(Duration::from_millis(2000));
    let stream = tokio_stream::once(Ok(first)).chain(updates);
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"));
    ([("x-accel-buffering", "no")], sse).into_response()
}
