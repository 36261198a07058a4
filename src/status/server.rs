//! The HTTP server: public responses straight from the latest [`Snapshot`] (no rendering,
//! no database on the request path), Server-Sent Events, and the admin API. This file
//! owns the routes and the headers every response carries (as tower-http layers); the
//! public side, the admin API and the accept loop are its submodules.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{delete, get, options, post};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tower_http::set_header::SetResponseHeaderLayer;

use super::model::PageInfo;
use super::snapshot::Snapshot;
use crate::store::Store;

mod accept;
mod admin;
mod public;
mod subscribe;

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// CSP `frame-ancestors` sources: who may embed the page (`'none'` by default).
    pub frame_ancestors: String,
    /// The admin API's bearer token; `None` turns the admin API off.
    pub admin_token: Option<String>,
    /// Webhook subscribers on loopback or private addresses are accepted.
    pub allow_private_webhooks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            frame_ancestors: "'none'".into(),
            admin_token: None,
            allow_private_webhooks: false,
        }
    }
}

/// What every handler shares.
pub struct Shared {
    snap: watch::Receiver<Arc<Snapshot>>,
    store: Option<Store>,
    token: Option<[u8; 32]>,
    allow_private: bool,
}

type St = axum::extract::State<Arc<Shared>>;

/// The router over a stream of snapshots; `store` is where the admin API writes.
pub fn router(snap: watch::Receiver<Arc<Snapshot>>, store: Option<Store>, cfg: &Config) -> Router {
    let csp = csp(cfg);
    let shared = Arc::new(Shared {
        snap,
        store,
        token: cfg
            .admin_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Sha256::digest(t.as_bytes()).into()),
        allow_private: cfg.allow_private_webhooks,
    });
    // Any other path under the admin API is no endpoint (a preflight to it is answered
    // as the public side's).
    let no_admin_endpoint = options(public::preflight)
        .route_layer(public::any_origin())
        .fallback(admin::no_endpoint);
    Router::new()
        .route(
            "/api/v1/admin/updates",
            post(admin::update).fallback(admin::not_allowed),
        )
        .route(
            "/api/v1/admin/runs/{run}/approve",
            post(admin::approve).fallback(admin::not_allowed),
        )
        .route(
            "/api/v1/admin/runs/{run}/reject",
            post(admin::reject).fallback(admin::not_allowed),
        )
        .route(
            "/api/v1/admin/runs/{run}/abort",
            post(admin::abort).fallback(admin::not_allowed),
        )
        .route(
            "/api/v1/admin/subscribers",
            get(admin::subscribers)
                .post(admin::subscribe)
                .fallback(admin::not_allowed_but("GET, POST")),
        )
        .route(
            "/api/v1/admin/subscribers/{id}",
            delete(admin::unsubscribe).fallback(admin::not_allowed_but("DELETE")),
        )
        .route(
            "/api/v1/admin/deliveries",
            get(admin::deliveries).fallback(admin::not_allowed_but("GET")),
        )
        .route(
            "/metrics",
            get(admin::metrics).fallback(admin::not_allowed_but("GET")),
        )
        .route(
            "/subscribe",
            public::read_side(get(public::asset)).post(subscribe::form),
        )
        .route("/subscribe/confirm", get(subscribe::confirm))
        .route(
            "/unsubscribe",
            get(subscribe::unsubscribe).post(subscribe::unsubscribe),
        )
        .route("/api/v1/admin/", no_admin_endpoint.clone())
        .route("/api/v1/admin/{*rest}", no_admin_endpoint)
        .route("/events", public::read_side(get(public::events)))
        .fallback_service(public::read_side(get(public::asset)).with_state(shared.clone()))
        .with_state(shared)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ))
}

/// What runs beside the server on the same snapshots (the notifications' sender):
/// started with the store and the stream of snapshots once the follower is.
pub type Sidecar = Box<dyn FnOnce(Store, watch::Receiver<Arc<Snapshot>>) + Send>;

/// Serves the page of `store` on `listener` until the process ends: follows the journal
/// in the background and answers from memory. Nothing is accepted before the first
/// snapshot of the store is rendered: a client connecting early waits in the listen
/// queue, then gets the page, never a `404` of a page not yet there.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    info: PageInfo,
    cfg: Config,
    sidecar: Option<Sidecar>,
) -> std::io::Result<()> {
    accept::raise_fd_limit();
    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    tokio::spawn(super::follow::follow(store.clone(), info, tx));
    if let Some(start) = sidecar {
        start(store.clone(), rx.clone());
    }
    // The empty snapshot is version 0; the follower's first render is 1.
    if rx.wait_for(|s| s.version > 0).await.is_err() {
        return Err(std::io::Error::other(
            "the status page stopped before its first render",
        ));
    }
    let front = Front {
        snap: rx.clone(),
        csp: csp(&cfg),
        app: hyper_util::service::TowerToHyperService::new(router(rx, Some(store), &cfg)),
    };
    accept::accept(listener, front, accept::Limits::from_env()).await
}

/// What the accept loop serves: a public GET or HEAD of a path the snapshot has is
/// answered here at once, with the same headers the router's layers would give it (the
/// page's hot path: no routing, no layers); everything else goes through the router.
#[derive(Clone)]
pub(super) struct Front {
    snap: watch::Receiver<Arc<Snapshot>>,
    csp: HeaderValue,
    app: hyper_util::service::TowerToHyperService<Router>,
}

impl hyper::service::Service<axum::http::Request<hyper::body::Incoming>> for Front {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Response, std::convert::Infallible>>,
        <hyper_util::service::TowerToHyperService<Router> as hyper::service::Service<
            axum::http::Request<hyper::body::Incoming>,
        >>::Future,
    >;

    fn call(&self, req: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        use axum::http::Method;
        let path = req.uri().path();
        let public = matches!(*req.method(), Method::GET | Method::HEAD)
            && path != "/events"
            && !path.starts_with("/api/v1/admin");
        if public {
            let snap = self.snap.borrow().clone();
            if let Some(mut r) = public::answer(&snap, req.method(), path, req.headers()) {
                r.headers_mut()
                    .insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
                return futures_util::future::Either::Left(std::future::ready(Ok(r)));
            }
        }
        futures_util::future::Either::Right(self.app.call(req))
    }
}

/// The Content-Security-Policy of every response.
fn csp(cfg: &Config) -> HeaderValue {
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors {}",
        cfg.frame_ancestors
    );
    HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'"))
}

/// A JSON error: `{"error": {"status": N, "message": "..."}}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ok(
        status,
        json!({ "error": { "status": status.as_u16(), "message": message.into() } }),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, Method, Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> Router {
        let mut snap = Snapshot {
            version: 1,
            ..Snapshot::default()
        };
        snap.insert(
            "/api/v2/status.json",
            super::super::snapshot::Asset::new("application/json", "{}", 0, "no-cache"),
        );
        let (tx, rx) = watch::channel(Arc::new(snap));
        std::mem::forget(tx);
        router(rx, None, &Config::default())
    }

    async fn send(method: Method, path: &str) -> (StatusCode, HeaderMap, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let res = app().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = if parts.status == StatusCode::OK && path == "/events" {
            String::new()
        } else {
            let b = body.collect().await.unwrap().to_bytes();
            String::from_utf8_lossy(&b).into_owned()
        };
        (parts.status, parts.headers, body)
    }

    fn secured(h: &HeaderMap) -> bool {
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
            && h[header::X_CONTENT_TYPE_OPTIONS] == "nosniff"
            && h[header::REFERRER_POLICY] == "strict-origin-when-cross-origin"
    }

    #[tokio::test]
    async fn the_admin_side_is_never_cross_origin_and_its_unknown_paths_are_404() {
        for (method, path) in [
            (Method::GET, "/api/v1/admin/"),
            (Method::GET, "/api/v1/admin/nope"),
            (Method::POST, "/api/v1/admin/nope"),
            (Method::POST, "/api/v1/admin/runs/r/nope"),
            (Method::DELETE, "/api/v1/admin/runs/r/approve/more"),
        ] {
            let (status, h, body) = send(method.clone(), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert!(body.contains("no such endpoint"), "{method} {path}: {body}");
            assert!(
                !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
                "{path}"
            );
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
            assert!(secured(&h), "{path}");
        }
        for (method, path) in [
            (Method::GET, "/api/v1/admin/updates"),
            (Method::OPTIONS, "/api/v1/admin/runs/r/abort"),
            (Method::HEAD, "/api/v1/admin/runs/r/reject"),
        ] {
            let (status, h, _) = send(method.clone(), path).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(h[header::ALLOW], "POST");
            assert!(
                !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
                "{path}"
            );
            assert!(secured(&h), "{path}");
        }
        // Without a token configured, a POST is refused with the scheme to use.
        let (status, h, _) = send(Method::POST, "/api/v1/admin/updates").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(h.contains_key(header::WWW_AUTHENTICATE));
        assert!(secured(&h));
    }

    #[tokio::test]
    async fn the_public_side_reads_from_anywhere_and_refuses_writes() {
        for path in ["/api/v2/status.json", "/api/v2/nope", "/nope"] {
            let (_, h, _) = send(Method::GET, path).await;
            assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{path}");
            assert!(secured(&h), "{path}");
        }
        for path in ["/api/v2/status.json", "/api/v1/admin/nope", "/events"] {
            let (status, h, _) = send(Method::OPTIONS, path).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{path}");
            assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{path}");
            assert_eq!(
                h[header::ACCESS_CONTROL_ALLOW_METHODS],
                "GET, HEAD, OPTIONS"
            );
            assert_eq!(h[header::ALLOW], "GET, HEAD, OPTIONS");
            assert!(secured(&h), "{path}");
        }
        for path in ["/", "/events", "/api/v1/admin"] {
            let (status, h, body) = send(Method::PUT, path).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_eq!(h[header::ALLOW], "GET, HEAD, OPTIONS");
            assert!(body.contains("read-only"), "{body}");
            assert!(
                !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
                "{path}"
            );
            assert!(secured(&h), "{path}");
        }
    }

    #[tokio::test]
    async fn live_updates_start_with_the_retry_hint_then_the_version() {
        let req = Request::get("/events").body(Body::empty()).unwrap();
        let res = app().oneshot(req).await.unwrap();
        let h = res.headers().clone();
        assert_eq!(h[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h["x-accel-buffering"], "no");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(secured(&h));
        let mut body = res.into_body();
        let mut got = Vec::new();
        while got.len() < 2 {
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                got.push(String::from_utf8_lossy(&data).into_owned());
            }
        }
        assert_eq!(
            got,
            [
                "retry: 2000\n\n",
                "event: update\ndata: {\"version\":1}\n\n"
            ]
        );
    }
}
