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
use crate::engine::event::{Event, PublicUpdate};
use crate::engine::state::RunState;
use crate::retry::{Backoff, Failed, Next};
use crate::status::model::{Maintenance, MaintenanceStatus, NoticeEvent, Page};
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
}

const MAINTENANCE_STATUSES: &[&str] = &["scheduled", "in_progress", "verifying", "completed"];
const INCIDENT_STATUSES: &[&str] = &["investigating", "identified", "monitoring", "resolved"];
/// Longest manual update accepted.
const MAX_BODY: usize = 5000;
/// A scheduled maintenance's update goes again at once when another writer got there
/// first, 20 tries in all.
const NOTICE_RETRY: Backoff = Backoff::immediate(20);

/// `POST /api/v1/admin/updates`: a person's public update of a maintenance.
pub(super) async fn update(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = admit(&st, &headers, body)?;
    let req: UpdateRequest = parse(&body)?;
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
    let m = maintenance_of(&page, req.maintenance.as_deref())?;
    let (status, incident) = status_of(&page, m, req.status.clone())?;
    let store = store_of(&st)?;
    let update = PublicUpdate {
        kind: "manual".into(),
        status: status.clone(),
        body: text.to_owned(),
        step: None,
        eta_ms: None,
        by: Some(req.by.clone().unwrap_or_else(|| "admin API".into())),
        incident,
    };
    let recorded = record(store, m, update).await?;
    Ok(ok(
        StatusCode::CREATED,
        json!({ "maintenance": m.id, "status": status, "body": recorded, "incident": incident }),
    ))
}

/// The maintenance an update is for: the one named, else the one in progress.
fn maintenance_of<'p>(page: &'p Page, named: Option<&str>) -> Result<&'p Maintenance, ApiError> {
    if let Some(id) = named {
        return page
            .maintenances
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| {
                ApiError::said(StatusCode::NOT_FOUND, format!("no maintenance `{id}`"))
            });
    }
    let active: Vec<_> = page.active().collect();
    match active.as_slice() {
        [one] => Ok(*one),
        [] => Err(ApiError::said(
            StatusCode::CONFLICT,
            "no maintenance is in progress: name one with `maintenance`",
        )),
        _ => Err(ApiError::said(
            StatusCode::CONFLICT,
            "several maintenances are in progress: name one with `maintenance`",
        )),
    }
}

/// The status an update of `m` says (the one asked for, else the current one), and
/// whether it is its incident's; refused when it is no status, or one a person may not
/// set there.
fn status_of(
    page: &Page,
    m: &Maintenance,
    asked: Option<String>,
) -> Result<(String, bool), ApiError> {
    let status = asked.unwrap_or_else(|| {
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
    let refuse = |status: StatusCode, message: String| Err(ApiError::said(status, message));
    if !incident && !MAINTENANCE_STATUSES.contains(&status.as_str()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown status `{status}`: use {} (a maintenance) or {} (its incident)",
                MAINTENANCE_STATUSES.join(", "),
                INCIDENT_STATUSES.join(", ")
            ),
        );
    }
    if incident && m.incident.is_none() {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "maintenance `{}` has no incident; `{status}` is an incident status",
                m.id
            ),
        );
    }
    // A person's word does not move a run's status: only its events do.
    let current = m.status.as_str();
    if !incident && m.run_id.is_some() && status != current {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "maintenance `{}` is {current} and its run decides that; post without `status` or with `{current}`",
                m.id,
            ),
        );
    }
    if m.run_id.is_none() && status != MaintenanceStatus::Scheduled.as_str() {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "maintenance `{}` has not started: its status is scheduled",
                m.id
            ),
        );
    }
    Ok((status, incident))
}

/// Records `update` of `m` (in its run's journal, or its scheduled maintenance's
/// stream); answers the text as recorded (a run's secrets are masked in it).
async fn record(store: &Store, m: &Maintenance, update: PublicUpdate) -> Result<String, ApiError> {
    if let Some(run) = &m.run_id {
        let text = update.body.clone();
        let state = crate::engine::control::append_checked(store, run, |_| {
            Ok(Event::Published(update.clone()))
        })
        .await?;
        let secrets = crate::engine::action::secret_values(&state.secrets);
        return Ok(crate::engine::action::Masker::new(secrets).mask(&text));
    }
    let appended = NOTICE_RETRY
        .retry(
            &crate::retry::Tokio,
            || async {
                let head = store
                    .load_notice_after(&m.id, 0)
                    .await?
                    .last()
                    .map_or(0, |r| r.seq);
                let event = NoticeEvent::Published(update.clone());
                store
                    .append_notice(&m.id, &m.runbook, head + 1, &[event], now_ms())
                    .await
            },
            |e, _| match e {
                StoreError::Conflict(_) => Next::Now(e),
                e => Next::Stop(e),
            },
        )
        .await;
    match appended {
        Ok(_) => Ok(update.body),
        Err(Failed::Exhausted(_)) => Err(ApiError::said(
            StatusCode::CONFLICT,
            "the maintenance kept changing; try again",
        )),
        Err(Failed::Stopped(e)) => Err(ApiError::store(e)),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionRequest {
    step: Option<String>,
    by: Option<String>,
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
    crate::engine::control::decide_in(&store, &run, &step, &by, approve).await?;
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
