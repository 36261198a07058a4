//! The admin API: a bearer token checked in constant time, then a manual public update,
//! an approval or rejection, or an abort, written to the store. Its errors are one type,
//! [`ApiError`], answered in one place: what the client did wrong is said as it is; a
//! store that fails is logged and answered with a generic `503`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Shared, St, error, ok};
use crate::engine::state::RunState;
use crate::status::manual;
use crate::store::{Store, StoreError, now_ms};

/// Why an admin request was not done.
#[derive(Debug)]
pub(super) enum ApiError {
    /// Said to the client: `{"error": {"status": N, "message": "..."}}`.
    Said(StatusCode, String),
    /// No token, or the wrong one: `401` with `WWW-Authenticate`.
    Unauthorized(&'static str),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Said(status, message) => error(status, message),
            Self::Unauthorized(message) => {
                let mut r = error(StatusCode::UNAUTHORIZED, message);
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"runbook admin\""),
                );
                r
            }
            Self::Unavailable(real) => {
                tracing::error!("status page: admin API: {real}");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable; try again",
                )
            }
        }
    }
}

type Answer = Result<Response, ApiError>;

/// A known admin endpoint asked with another method than POST.
pub(super) async fn not_allowed() -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "the admin API takes POST only",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// A path under the admin API that names no endpoint.
pub(super) async fn no_endpoint(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

/// Checks the bearer token in constant time.
fn authorize(st: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = st.token else {
        return Err(ApiError::Unauthorized(
            "the admin API is off: start the server with RUNBOOK_ADMIN_TOKEN or --admin-token-file",
        ));
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
        return Err(ApiError::Unauthorized(
            "missing bearer token: send `Authorization: Bearer TOKEN`",
        ));
    };
    let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    if bool::from(digest.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong bearer token"))
    }
}

/// An admin request's body, once its token is right (a refusal says nothing more).
fn admit(
    st: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    authorize(st, headers)?;
    body.map_err(|e| ApiError::said(e.status(), format!("the request body: {}", e.body_text())))
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

/// The store the admin API writes to.
fn store_of(st: &Shared) -> Result<&Store, ApiError> {
    st.store
        .as_ref()
        .ok_or_else(|| ApiError::said(StatusCode::SERVICE_UNAVAILABLE, "no store to write to"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    body: Option<String>,
    maintenance: Option<String>,
    status: Option<String>,
    by: Option<String>,
    /// When the maintenance is now expected to end (RFC 3339): automatic updates never
    /// say earlier.
    eta: Option<String>,
    /// Mute automatic texts for this long (`30m`).
    quiet: Option<String>,
}

/// `POST /api/v1/admin/updates`: a person's public update of a maintenance.
pub(super) async fn update(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = admit(&st, &headers, body)?;
    let req: UpdateRequest = parse(&body)?;
    let page = st.snap.borrow().page.clone();
    let Some(page) = page else {
        return Err(ApiError::said(
            StatusCode::SERVICE_UNAVAILABLE,
            "the page is still loading; try again",
        ));
    };
    let now = now_ms();
    let eta_ms = match req.eta.as_deref() {
        Some(t) => Some(manual::parse_eta(t, now).map_err(ApiError::from)?),
        None => None,
    };
    let quiet_ms = match req.quiet.as_deref() {
        Some(q) => Some(manual::parse_quiet(q).map_err(ApiError::from)?),
        None => None,
    };
    let asked = manual::Request {
        body: req.body.unwrap_or_default(),
        maintenance: req.maintenance,
        status: req.status,
        by: req.by.unwrap_or_else(|| "admin API".into()),
        eta_ms,
        quiet_ms,
    };
    let store = store_of(&st)?;
    let done = manual::publish(store, &page, asked, now).await?;
    Ok(ok(
        StatusCode::CREATED,
        json!({ "maintenance": done.maintenance, "status": done.status, "body": done.body, "incident": done.incident, "eta": done.eta_ms.map(crate::status::model::iso) }),
    ))
}

impl From<manual::Refusal> for ApiError {
    fn from(r: manual::Refusal) -> Self {
        match r {
            manual::Refusal::BadRequest(m) => ApiError::said(StatusCode::BAD_REQUEST, m),
            manual::Refusal::NotFound(m) => ApiError::said(StatusCode::NOT_FOUND, m),
            manual::Refusal::Conflict(m) => ApiError::said(StatusCode::CONFLICT, m),
            manual::Refusal::Store(e) => ApiError::store(e),
            manual::Refusal::Write(e) => e.into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionRequest {
    step: Option<String>,
    by: Option<String>,
    comment: Option<String>,
}

/// The run named in a path, as its journal folds now, or 404.
async fn existing_run(st: &Shared, run: &str) -> Result<(Store, RunState), ApiError> {
    let store = store_of(st)?.clone();
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

/// `POST /api/v1/admin/runs/{run}/approve`.
pub(super) async fn approve(
    st: St,
    run: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    decide(st, run, headers, body, true).await
}

/// `POST /api/v1/admin/runs/{run}/reject`.
pub(super) async fn reject(
    st: St,
    run: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    decide(st, run, headers, body, false).await
}

/// Approves or rejects the step named (else the one waiting) of a run.
async fn decide(
    State(st): St,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    approve: bool,
) -> Answer {
    let body = admit(&st, &headers, body)?;
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
    crate::engine::control::decide_in(&store, &run, &step, &by, approve, req.comment.as_deref())
        .await?;
    Ok(ok(
        StatusCode::OK,
        json!({
            "run": run,
            "step": step,
            "decision": if approve { "approved" } else { "rejected" },
            "by": by,
        }),
    ))
}

/// `POST /api/v1/admin/runs/{run}/abort`.
pub(super) async fn abort(
    State(st): St,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = admit(&st, &headers, body)?;
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
    Ok(ok(
        StatusCode::OK,
        json!({ "run": run, "status": "aborted", "by": by }),
    ))
}

impl From<crate::status::subscribe::Refusal> for ApiError {
    fn from(r: crate::status::subscribe::Refusal) -> Self {
        use crate::status::subscribe::Refusal;
        match r {
            Refusal::BadRequest(m) => ApiError::said(StatusCode::BAD_REQUEST, m),
            Refusal::NotFound(m) => ApiError::said(StatusCode::NOT_FOUND, m),
            Refusal::Conflict(m) => ApiError::said(StatusCode::CONFLICT, m),
            Refusal::Store(e) => ApiError::store(e),
        }
    }
}

/// A known admin endpoint asked with a method it does not take.
pub(super) fn not_allowed_but(
    allow: &'static str,
) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("this endpoint takes {allow} only"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        std::future::ready(r)
    }
}

/// `GET /api/v1/admin/subscribers`.
pub(super) async fn subscribers(State(st): St, headers: HeaderMap) -> Answer {
    authorize(&st, &headers)?;
    let list = store_of(&st)?
        .subscribers()
        .await
        .map_err(ApiError::store)?;
    let list: Vec<serde_json::Value> = list
        .iter()
        .map(|s| crate::status::subscribe::public_json(s, false))
        .collect();
    Ok(ok(StatusCode::OK, json!({ "subscribers": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeRequest {
    email: Option<String>,
    webhook: Option<String>,
    #[serde(default)]
    components: Vec<String>,
    /// Send an email address a confirmation mail first (default: an admin's address is
    /// taken as confirmed).
    #[serde(default)]
    confirm: bool,
}

/// `POST /api/v1/admin/subscribers`.
pub(super) async fn subscribe(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    use crate::status::subscribe::{Ask, By, Done};
    let body = admit(&st, &headers, body)?;
    let req: SubscribeRequest = parse(&body)?;
    let page = st.snap.borrow().page.clone().ok_or_else(|| {
        ApiError::said(
            StatusCode::SERVICE_UNAVAILABLE,
            "the page is still loading; try again",
        )
    })?;
    let known: Vec<String> = page.components.iter().map(|c| c.name.clone()).collect();
    let ask = Ask {
        email: req.email,
        webhook: req.webhook,
        components: req.components,
    };
    let by = if req.confirm { By::Public } else { By::Admin };
    let done = crate::status::subscribe::subscribe(
        store_of(&st)?,
        &page.info,
        &known,
        ask,
        by,
        st.allow_private,
    )
    .await?;
    Ok(match done {
        Done::Confirming(s) => ok(
            StatusCode::ACCEPTED,
            json!({ "subscriber": crate::status::subscribe::public_json(&s, false) }),
        ),
        Done::Active(s) => ok(
            StatusCode::CREATED,
            json!({ "subscriber": crate::status::subscribe::public_json(&s, true) }),
        ),
    })
}

/// `DELETE /api/v1/admin/subscribers/{id}` (an id, or an address).
pub(super) async fn unsubscribe(
    State(st): St,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&st, &headers)?;
    let store = store_of(&st)?;
    let Some(s) = store.subscriber_named(&id).await.map_err(ApiError::store)? else {
        return Err(ApiError::said(
            StatusCode::NOT_FOUND,
            format!("no subscriber `{id}`"),
        ));
    };
    store
        .remove_subscriber(&s.id)
        .await
        .map_err(ApiError::store)?;
    Ok(ok(
        StatusCode::OK,
        json!({ "removed": crate::status::subscribe::public_json(&s, false) }),
    ))
}

/// `GET /api/v1/admin/deliveries`: what is pending and failing, and the latest sent.
pub(super) async fn deliveries(State(st): St, headers: HeaderMap) -> Answer {
    authorize(&st, &headers)?;
    let store = store_of(&st)?;
    let list = store.deliveries(100).await.map_err(ApiError::store)?;
    let counts = store.notify_counts().await.map_err(ApiError::store)?;
    Ok(ok(
        StatusCode::OK,
        crate::status::deliveries::json(&list, &counts),
    ))
}

/// `GET /metrics`: Prometheus's text format, with the admin token.
pub(super) async fn metrics(State(st): St, headers: HeaderMap) -> Answer {
    authorize(&st, &headers)?;
    let store = store_of(&st)?;
    let text = crate::status::metrics::render(store)
        .await
        .map_err(ApiError::store)?;
    let mut r = Response::new(axum::body::Body::from(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
