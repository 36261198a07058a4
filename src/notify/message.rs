//! What is said, decided once per event when the outbox is expanded: a public update's
//! message (its Statuspage payload and its mail's words) and its recipients; a team
//! event's; a confirmation mail's. Each message is kept as JSON with its deliveries, so a
//! retry a day later sends the same words.

use serde_json::{Value, json};

use super::Settings;
use crate::runbook::TeamEvent;
use crate::status::api::Notification;
use crate::status::model::Page;
use crate::store::outbox::{Recipient, Subscriber, TeamTarget};

/// A message: its id, its JSON body, its recipients.
pub type Message = (String, String, Vec<Recipient>);

/// Whether a subscriber hears of an update about `components`: all of them do, but one
/// of some components only of the updates about one of those.
pub fn concerns(s: &Subscriber, components: &[String]) -> bool {
    s.components.is_empty()
        || components
            .iter()
            .any(|c| s.components.iter().any(|w| w.eq_ignore_ascii_case(c)))
}

/// The messages of a public update: its incident payload (every matching active
/// subscriber, and the mirror) and, for webhooks, one `component_update` per component
/// it changes. An update Statuspage would not deliver (a step's start) has none.
pub fn public(settings: &Settings, n: &Notification, subscribers: &[Subscriber]) -> Vec<Message> {
    if !n.deliver {
        return Vec::new();
    }
    let update_id = n.object["incident_updates"]
        .as_array()
        .and_then(|l| l.first())
        .and_then(|u| u["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let matching: Vec<&Subscriber> = subscribers
        .iter()
        .filter(|s| s.state == "active" && concerns(s, &n.components))
        .collect();
    let mut to: Vec<Recipient> = matching.iter().map(|s| Recipient::from(*s)).collect();
    if settings.mirror.is_some() {
        to.push(Recipient {
            id: "mirror".into(),
            channel: "statuspage".into(),
            address: "statuspage".into(),
        });
    }
    let body = json!({
        "type": "public",
        "subject": n.subject_id,
        "incident": n.incident,
        "page": n.page,
        "object": n.object,
        "changes": n.component_updates.iter().map(|(u, c)| json!({
            "name": c["name"], "new_status": u["new_status"], "old_status": u["old_status"],
        })).collect::<Vec<_>>(),
        "mail": {
            "page_name": settings.page_name,
            "title": n.title,
            "status": n.status,
            "status_label": n.status_label,
            "body": n.body,
            "url": n.url,
            "at_local": n.at_local,
            "window_local": n.window_local,
            "eta_local": n.eta_local,
            "components": n.components,
            "timezone": n.timezone,
            "incident": n.incident,
        },
    });
    let mut out = vec![(update_id.clone(), body.to_string(), to)];
    let hooks: Vec<Recipient> = matching
        .iter()
        .filter(|s| s.channel == "webhook")
        .map(|s| Recipient::from(*s))
        .collect();
    if !hooks.is_empty() {
        for (update, component) in &n.component_updates {
            let id = update["id"].as_str().unwrap_or_default().to_owned();
            let body = json!({
                "type": "component_update",
                "page": n.page,
                "component_update": update,
                "component": component,
            });
            out.push((id, body.to_string(), hooks.clone()));
        }
    }
    out
}

/// The message of a team event (if it is one any of the run's targets chose).
#[allow(clippy::too_many_arguments)]
pub fn team(
    settings: &Settings,
    page: &Page,
    run: &str,
    seq: i64,
    at_ms: i64,
    kind: &str,
    body: &Value,
    started: &Value,
    targets: &[TeamTarget],
) -> Option<Message> {
    let event = TeamEvent::of(kind, body)?;
    let to: Vec<Recipient> = targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.events.iter().any(|e| e == event.name()))
        .map(|(i, t)| Recipient {
            id: format!("team:{i}"),
            channel: t.channel.clone(),
            address: t.address.clone(),
        })
        .collect();
    if to.is_empty() {
        return None;
    }
    // The page may not show the run yet: its name and title are its first event's.
    let runbook = started["runbook"].as_str().unwrap_or_default().to_owned();
    let title = started["title"].as_str().unwrap_or(run).to_owned();
    let shown = page
        .maintenances
        .iter()
        .find(|m| m.run_id.as_deref() == Some(run))
        .map_or(run, |m| m.id.as_str());
    let url = Some(crate::status::api::maintenance_url(page, shown));
    let text = |f: &str| body.get(f).and_then(Value::as_str).map(str::to_owned);
    let step = text("step");
    let s = step.as_deref().unwrap_or("?");
    let (headline, error, next) = match (event, kind) {
        (TeamEvent::RunStarted, _) => (
            format!("Run {run} of {runbook} started: {title}"),
            None,
            Some(format!("runbook status {run}")),
        ),
        (TeamEvent::StepFailed, "step_timed_out") => (
            format!("Step {s} timed out in run {run}"),
            Some("timed out".to_owned()),
            Some(format!("runbook status {run}")),
        ),
        (TeamEvent::StepFailed, _) => (
            format!(
                "Step {s} failed in run {run} (attempt {})",
                body.get("attempt").and_then(Value::as_u64).unwrap_or(1)
            ),
            text("error"),
            Some(format!("runbook status {run}")),
        ),
        (TeamEvent::RollbackStarted, _) => (
            format!("Rollback started in run {run}"),
            text("reason"),
            Some(format!("runbook status {run}")),
        ),
        (TeamEvent::RunEnded, "run_completed") => (
            format!("Run {run} of {runbook} completed"),
            None,
            Some(format!("runbook report {run}")),
        ),
        (TeamEvent::RunEnded, "run_rolled_back") => (
            format!("Run {run} of {runbook} rolled back"),
            None,
            Some(format!("runbook report {run}")),
        ),
        (TeamEvent::RunEnded, "run_aborted") => (
            format!(
                "Run {run} of {runbook} aborted by {}",
                text("by").unwrap_or_default()
            ),
            text("reason"),
            Some(format!("runbook report {run}")),
        ),
        (TeamEvent::RunEnded, _) => (
            format!("Run {run} of {runbook} failed"),
            text("reason"),
            Some(format!("runbook resume {run}")),
        ),
        (TeamEvent::ApprovalWaiting, _) => (
            format!("Run {run} waits for approval of step {s}"),
            None,
            Some(format!(
                "runbook approve {run} {s}   (or: runbook reject {run} {s})"
            )),
        ),
        (TeamEvent::Overrun, _) => (
            format!("Step {s} is running late in run {run}"),
            None,
            Some(format!("runbook status {run}")),
        ),
        (TeamEvent::GuardPaused, _) => (
            format!("Run {run} paused by the window guard"),
            text("reason"),
            Some(format!("runbook resume {run}")),
        ),
    };
    let zone = page.page_zone();
    let message = json!({
        "type": "team",
        "event": event.name(),
        "kind": kind,
        "run": run,
        "runbook": runbook,
        "title": title,
        "step": step,
        "error": error,
        "next": next,
        "headline": headline,
        "at": crate::status::model::iso(at_ms),
        "at_local": crate::duration::local(at_ms, zone),
        "url": url,
        "page_name": settings.page_name,
    });
    Some((format!("{run}-{seq}-team"), message.to_string(), to))
}
