//! A person's public update of a maintenance (the admin API's `POST
//! /api/v1/admin/updates` and `runbook update`): one set of rules for both. A person may
//! say the text, the incident's status, a new ETA (automatic updates never say earlier)
//! and mute automatic texts for a while; never move a run's status.

use crate::engine::event::{Event, PublicUpdate};
use crate::retry::{Backoff, Failed, Next};
use crate::status::model::{Maintenance, MaintenanceStatus, NoticeEvent, Page};
use crate::store::{Store, StoreError, now_ms};

/// Why a manual update was not recorded.
#[derive(Debug)]
pub enum Refusal {
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    Store(StoreError),
    Write(crate::engine::control::WriteError),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BadRequest(m) | Refusal::NotFound(m) | Refusal::Conflict(m) => f.write_str(m),
            Refusal::Store(e) => write!(f, "{e}"),
            Refusal::Write(e) => write!(f, "{e}"),
        }
    }
}

/// What a person asked to say.
pub struct Request {
    pub body: String,
    /// The maintenance (default: the one in progress).
    pub maintenance: Option<String>,
    pub status: Option<String>,
    pub by: String,
    pub eta_ms: Option<i64>,
    /// Mute automatic texts for this long.
    pub quiet_ms: Option<u64>,
}

/// What was recorded.
pub struct Published {
    pub maintenance: String,
    pub status: String,
    /// The text as recorded (a run's secrets masked).
    pub body: String,
    pub incident: bool,
    pub eta_ms: Option<i64>,
}

/// Longest manual update accepted.
pub const MAX_BODY: usize = 5000;

/// An ETA a person gives: RFC 3339, in the future.
pub fn parse_eta(t: &str, now_ms: i64) -> Result<i64, Refusal> {
    let at = chrono::DateTime::parse_from_rfc3339(t.trim())
        .map_err(|e| {
            Refusal::BadRequest(format!(
                "`eta` `{t}` is not a time: give it as RFC 3339, like 2026-12-02T21:30:00Z ({e})"
            ))
        })?
        .timestamp_millis();
    if at <= now_ms {
        return Err(Refusal::BadRequest(format!(
            "`eta` `{t}` has passed: an ETA says when the work will end"
        )));
    }
    Ok(at)
}

/// How long to mute automatic texts: a duration like `30m`, at most a day.
pub fn parse_quiet(q: &str) -> Result<u64, Refusal> {
    let d = humantime::parse_duration(q.trim()).map_err(|e| {
        Refusal::BadRequest(format!("`quiet` `{q}` is not a duration like 30m: {e}"))
    })?;
    if d > std::time::Duration::from_secs(24 * 3600) {
        return Err(Refusal::BadRequest(format!(
            "`quiet` `{q}` is longer than a day"
        )));
    }
    Ok(d.as_millis() as u64)
}

/// Records a person's update of a maintenance of `page`.
pub async fn publish(
    store: &Store,
    page: &Page,
    req: Request,
    now: i64,
) -> Result<Published, Refusal> {
    let text = req.body.trim();
    if text.is_empty() {
        return Err(Refusal::BadRequest(
            "`body` is required: the text of the update".into(),
        ));
    }
    if text.chars().count() > MAX_BODY {
        return Err(Refusal::BadRequest(format!(
            "`body` is longer than {MAX_BODY} characters"
        )));
    }
    let m = maintenance_of(page, req.maintenance.as_deref())?;
    let (status, incident) = status_of(page, m, req.status.clone())?;
    if (req.eta_ms.is_some() || req.quiet_ms.is_some()) && !m.active() {
        return Err(Refusal::Conflict(format!(
            "maintenance `{}` is not under way: an ETA or a quiet time is for a running maintenance",
            m.id
        )));
    }
    let update = PublicUpdate {
        kind: "manual".into(),
        status: status.clone(),
        body: text.to_owned(),
        step: None,
        eta_ms: req.eta_ms,
        by: Some(req.by.clone()),
        incident,
        quiet_until_ms: req.quiet_ms.map(|q| now + q as i64),
    };
    let body = record(store, m, update).await?;
    Ok(Published {
        maintenance: m.id.clone(),
        status,
        body,
        incident,
        eta_ms: req.eta_ms,
    })
}

const MAINTENANCE_STATUSES: &[&str] = &["scheduled", "in_progress", "verifying", "completed"];
const INCIDENT_STATUSES: &[&str] = &["investigating", "identified", "monitoring", "resolved"];
/// A scheduled maintenance's update goes again at once when another writer got there
/// first, 20 tries in all.
const NOTICE_RETRY: Backoff = Backoff::immediate(20);

/// The maintenance an update is for: the one named, else the one in progress.
pub fn maintenance_of<'p>(page: &'p Page, named: Option<&str>) -> Result<&'p Maintenance, Refusal> {
    if let Some(id) = named {
        return page
            .maintenances
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Refusal::NotFound(format!("no maintenance `{id}`")));
    }
    let active: Vec<_> = page.active().collect();
    match active.as_slice() {
        [one] => Ok(*one),
        [] => Err(Refusal::Conflict(
            "no maintenance is in progress: name one with `maintenance`".into(),
        )),
        _ => Err(Refusal::Conflict(
            "several maintenances are in progress: name one with `maintenance`".into(),
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
) -> Result<(String, bool), Refusal> {
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
    let refuse = |r: fn(String) -> Refusal, message: String| Err(r(message));
    if !incident && !MAINTENANCE_STATUSES.contains(&status.as_str()) {
        return refuse(
            Refusal::BadRequest,
            format!(
                "unknown status `{status}`: use {} (a maintenance) or {} (its incident)",
                MAINTENANCE_STATUSES.join(", "),
                INCIDENT_STATUSES.join(", ")
            ),
        );
    }
    if incident && m.incident.is_none() {
        return refuse(
            Refusal::Conflict,
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
            Refusal::Conflict,
            format!(
                "maintenance `{}` is {current} and its run decides that; post without `status` or with `{current}`",
                m.id,
            ),
        );
    }
    if m.run_id.is_none() && status != MaintenanceStatus::Scheduled.as_str() {
        return refuse(
            Refusal::Conflict,
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
async fn record(store: &Store, m: &Maintenance, update: PublicUpdate) -> Result<String, Refusal> {
    if let Some(run) = &m.run_id {
        let text = update.body.clone();
        let state = crate::engine::control::append_checked(store, run, |_| {
            Ok(Event::Published(update.clone()))
        })
        .await
        .map_err(Refusal::Write)?;
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
        Err(Failed::Exhausted(_)) => Err(Refusal::Conflict(
            "the maintenance kept changing; try again".into(),
        )),
        Err(Failed::Stopped(e)) => Err(Refusal::Store(e)),
    }
}
