//! `runbook schedule`: publish a runbook's maintenance as scheduled before it runs (the
//! scheduled maintenance a run carries out is found by `store::notice`).

use serde_json::json;

use super::model::{Announcement, NoticeEvent};
use crate::engine::event::PublicUpdate;
use crate::engine::publish::{Publisher, step_title};
use crate::runbook::Runbook;
use crate::store::notice::pending;
use crate::store::{Store, now_ms};

/// What `schedule` did.
#[derive(Debug, PartialEq)]
pub enum Scheduled {
    New(String),
    Rescheduled(String),
    Unchanged(String),
}

/// The announcement of `rb`'s window, or why there can be none.
pub fn announcement(rb: &Runbook, now: i64) -> Result<Announcement, String> {
    let Some(start) = rb.window.start else {
        return Err(format!(
            "runbook `{}` has no `window.start`: a maintenance is scheduled for a time",
            rb.id
        ));
    };
    let plan = crate::plan::plan(rb, None, chrono::Utc::now());
    let end = plan.window_end.unwrap_or(plan.end);
    let (start_ms, end_ms) = (start.timestamp_millis(), end.timestamp_millis());
    if end_ms <= now {
        return Err(format!(
            "the window of `{}` ended at {}: there is nothing left to schedule",
            rb.id,
            end.to_rfc3339()
        ));
    }
    let announce_from_ms = rb
        .status_page
        .announce_before
        .map_or(now, |b| start_ms.saturating_sub(crate::duration::millis(b)));
    let ctx = json!({ "vars": rb.vars });
    let text = |t: &str| crate::engine::publish::text(t, &ctx);
    Ok(Announcement {
        runbook: rb.id.clone(),
        title: text(&rb.title),
        summary: rb.summary.as_deref().map(text),
        components: rb.status_page.components.clone(),
        timezone: rb.window.timezone.name().to_owned(),
        planned_start_ms: start_ms,
        planned_end_ms: end_ms,
        announce_from_ms,
        public_steps: rb.steps.iter().filter(|s| step_title(s).is_some()).count(),
    })
}

/// Publishes (or reschedules) `rb`'s maintenance.
pub async fn schedule(store: &Store, rb: &Runbook) -> Result<Scheduled, String> {
    let now = now_ms();
    let a = announcement(rb, now)?;
    let base = json!({
        "vars": rb.vars,
        "run": { "id": null, "runbook": rb.id, "operator": null, "started_at": null },
        "window": {
            "start": rb.window.start.map(|t| t.to_rfc3339()),
            "end": crate::status::model::iso(a.planned_end_ms),
            "duration": rb.window.duration.map(crate::duration::fmt_duration),
            "timezone": rb.window.timezone.name(),
        },
    });
    let learned = Default::default();
    let update: Option<PublicUpdate> = Publisher::new(rb, &learned).scheduled(&base, now);
    // Secret values (in `--var`s, say) never reach the page.
    let masker =
        crate::engine::action::Masker::new(crate::engine::action::secret_values(&rb.secrets));
    let update = update.map(|u| PublicUpdate {
        body: masker.mask(&u.body),
        ..u
    });
    let a = Announcement {
        title: masker.mask(&a.title),
        summary: a.summary.as_deref().map(|s| masker.mask(s)),
        ..a
    };
    let pending = pending(store, &rb.id).await.map_err(|e| e.to_string())?;
    let mut events = vec![NoticeEvent::MaintenanceScheduled(a.clone())];
    events.extend(update.map(NoticeEvent::Published));
    if let Some(p) = pending.last() {
        // Scheduling again is safe: the same window changes nothing, a new one moves it.
        let same = Announcement {
            announce_from_ms: p.announcement.announce_from_ms,
            ..a.clone()
        } == p.announcement;
        if same {
            return Ok(Scheduled::Unchanged(p.id.clone()));
        }
        store
            .append_notice(&p.id, &rb.id, p.seq + 1, &events, now)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Scheduled::Rescheduled(p.id.clone()));
    }
    let stamp = chrono::DateTime::from_timestamp_millis(a.planned_start_ms)
        .unwrap_or_default()
        .format("%Y%m%d-%H%M");
    let mut id = format!("{}-{stamp}", rb.id);
    let mut n = 1;
    while store.run_exists(&id).await.map_err(|e| e.to_string())? {
        n += 1;
        id = format!("{}-{stamp}-{n}", rb.id);
    }
    store
        .append_notice(&id, &rb.id, 1, &events, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Scheduled::New(id))
}
