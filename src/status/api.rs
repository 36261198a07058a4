//! The JSON API: Atlassian Statuspage's public API v2 (`/api/v2/...`), field for field, so
//! that existing clients and widgets read this page as they read a Statuspage one, and
//! `/api/v1/maintenance` for load balancers and apps (is the service closed right now?).

use serde_json::{Value, json};

use super::model::{self, Component, Incident, Maintenance, MaintenanceStatus, Page, Update};
use super::snapshot::{Asset, SHORT, Snapshot};
use crate::duration::local;

const JSON: &str = "application/json; charset=utf-8";

/// Statuspage's lists stop at 50.
const LIMIT: usize = 50;

/// Adds every API response of `page` to `snap`.
pub fn render(page: &Page, snap: &mut Snapshot) {
    let api = Api::new(page);
    let unresolved: Vec<&Incident> = page.unresolved_incidents().collect();
    let upcoming = page.upcoming();
    let active: Vec<&Maintenance> = page.active().collect();
    let status = page.indicator();
    let status = json!({"indicator": status.indicator, "description": status.description});

    let components = api.components();
    let unresolved_json = api.incidents(unresolved.iter().copied());
    let upcoming_json = api.maintenances(upcoming.iter().copied());
    let active_json = api.maintenances(active.iter().copied());
    let current = api.maintenances(active.iter().chain(&upcoming).copied());

    let mut add = |path: &str, body: Value| {
        let bytes = serde_json::to_vec(&body).expect("a JSON value serializes");
        snap.insert(path, Asset::new(JSON, bytes, page.updated_ms, SHORT));
    };
    add(
        "/api/v2/summary.json",
        json!({
            "page": api.page_json,
            "components": components,
            "incidents": unresolved_json,
            "scheduled_maintenances": current,
            "status": status,
        }),
    );
    add(
        "/api/v2/status.json",
        json!({"page": api.page_json, "status": status}),
    );
    add(
        "/api/v2/components.json",
        json!({"page": api.page_json, "components": components}),
    );
    add(
        "/api/v2/incidents.json",
        json!({"page": api.page_json, "incidents": api.incidents(page.incidents.iter().take(LIMIT))}),
    );
    add(
        "/api/v2/incidents/unresolved.json",
        json!({"page": api.page_json, "incidents": unresolved_json}),
    );
    add(
        "/api/v2/scheduled-maintenances.json",
        json!({
            "page": api.page_json,
            "scheduled_maintenances": api.maintenances(page.visible().take(LIMIT)),
        }),
    );
    add(
        "/api/v2/scheduled-maintenances/upcoming.json",
        json!({"page": api.page_json, "scheduled_maintenances": upcoming_json}),
    );
    add(
        "/api/v2/scheduled-maintenances/active.json",
        json!({"page": api.page_json, "scheduled_maintenances": active_json}),
    );
    add("/api/v1/maintenance", maintenance_v1(page));
}

/// The page's base URL, without a trailing slash.
pub(crate) fn base_url(page: &Page) -> &str {
    page.info.url.trim_end_matches('/')
}

/// The public page of a maintenance.
pub(crate) fn maintenance_url(page: &Page, id: &str) -> String {
    format!("{}/maintenances/{}", base_url(page), path_segment(id))
}

/// `s` percent-encoded for one path segment (ids are URL-safe already; this keeps links
/// valid should one not be).
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Statuspage's statuses for a maintenance's updates; anything else reads as in progress.
fn maintenance_update_status(s: &str) -> &str {
    match s {
        "scheduled" | "in_progress" | "verifying" | "completed" => s,
        _ => "in_progress",
    }
}

/// Statuspage's statuses for an incident's updates; anything else reads as investigating.
fn incident_update_status(s: &str) -> &str {
    match s {
        "investigating" | "identified" | "monitoring" | "resolved" | "postmortem" => s,
        _ => "investigating",
    }
}

fn iso(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(model::iso(ms)))
}

/// The window a maintenance shows: planned, else what it actually did (start, then ETA
/// or end). Statuspage clients need both ends: without a planned end, ETA or end, a
/// maintenance is shown until now (it has not ended).
fn window(m: &Maintenance, now_ms: i64) -> (Option<i64>, Option<i64>) {
    let from = m.planned_start_ms.or(m.started_ms).unwrap_or(m.created_ms);
    let until = m
        .planned_end_ms
        .or(m.eta_ms)
        .or(m.ended_ms)
        .unwrap_or(now_ms.max(from));
    // Under way past it: until now at least, never a past end.
    let until = if m.active() { until.max(now_ms) } else { until };
    (Some(from), Some(until))
}

/// Whether subscribers hear of an update (Statuspage's `deliver_notifications`): changes
/// of status, overruns, a person's word, and any update that changes a component's
/// status (the service closing and reopening); not every step's start nor `announce`
/// texts.
pub fn delivers(u: &Update) -> bool {
    !matches!(u.kind.as_str(), "step_started" | "announce") || !u.components.is_empty()
}

/// One public update as subscribers are told of it: the Statuspage webhook's `page` and
/// `incident` (as of this update: later ones left out), its `component_update`s, and
/// what a mail says.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Statuspage's `deliver_notifications` ([`delivers`]).
    pub deliver: bool,
    /// The component names the maintenance (or incident) concerns; empty: none named.
    pub components: Vec<String>,
    /// Our id of the maintenance or incident, and whether it is an incident.
    pub subject_id: String,
    pub incident: bool,
    /// `{"id", "status_indicator", "status_description"}`.
    pub page: Value,
    /// The incident (or scheduled maintenance) object with its `incident_updates`.
    pub object: Value,
    /// `(component_update, component)` for each component this update changes.
    pub component_updates: Vec<(Value, Value)>,
    /// For mails: the title, the status as said, the text, the maintenance's link and
    /// its times in the page's zone.
    pub title: String,
    pub status: String,
    pub status_label: String,
    pub body: String,
    pub url: String,
    pub at_local: String,
    pub window_local: Option<String>,
    pub eta_local: Option<String>,
    pub timezone: String,
}

/// The notification of the update `update_id` (`STREAM-SEQ`), if the page shows it.
pub fn notification(page: &Page, update_id: &str) -> Option<Notification> {
    let api = Api::new(page);
    let indicator = page.indicator();
    let page_json = json!({
        "id": api.page_id,
        "status_indicator": indicator.indicator,
        "status_description": indicator.description,
    });
    let zone = page.page_zone();
    let cut = |mut object: Value, id: &str| {
        // Statuspage's object as it was at this update: the later ones left out.
        if let Some(list) = object
            .get_mut("incident_updates")
            .and_then(Value::as_array_mut)
        {
            // Newest first, as Statuspage lists them.
            if let Some(pos) = list.iter().position(|u| u["id"] == id) {
                list.drain(..pos);
            }
        }
        object
    };
    let changes = |u: &Update| -> Vec<(Value, Value)> {
        u.components
            .iter()
            .filter_map(|c| {
                let comp = page.components.iter().find(|p| p.id == c.code)?;
                let mut comp_json = api.component(comp);
                comp_json["status"] = json!(c.new_status.as_str());
                Some((
                    json!({
                        "id": format!("{}-{}", u.id, c.code),
                        "component_id": c.code,
                        "created_at": model::iso(u.at_ms),
                        "old_status": c.old_status.as_str(),
                        "new_status": c.new_status.as_str(),
                    }),
                    comp_json,
                ))
            })
            .collect()
    };
    for i in &page.incidents {
        let Some(u) = i.updates.iter().find(|u| u.id == update_id) else {
            continue;
        };
        return Some(Notification {
            deliver: delivers(u),
            components: i.components.clone(),
            subject_id: i.id.clone(),
            incident: true,
            page: page_json,
            object: cut(api.incident(i), update_id),
            component_updates: changes(u),
            title: i.name.clone(),
            status: incident_update_status(&u.status).to_owned(),
            status_label: label(incident_update_status(&u.status)),
            body: u.body.clone(),
            url: maintenance_url(page, &i.maintenance),
            at_local: local(u.at_ms, zone),
            window_local: None,
            eta_local: None,
            timezone: zone.name().to_owned(),
        });
    }
    for m in &page.maintenances {
        let Some(u) = m.updates.iter().find(|u| u.id == update_id && !u.incident) else {
            continue;
        };
        let (from, until) = window(m, page.now_ms);
        return Some(Notification {
            deliver: delivers(u),
            components: m.components.clone(),
            subject_id: m.id.clone(),
            incident: false,
            page: page_json,
            object: cut(api.maintenance(m), update_id),
            component_updates: changes(u),
            title: m.title.clone(),
            status: maintenance_update_status(&u.status).to_owned(),
            status_label: label(maintenance_update_status(&u.status)),
            body: u.body.clone(),
            url: maintenance_url(page, &m.id),
            at_local: local(u.at_ms, zone),
            window_local: from
                .zip(until)
                .map(|(f, t)| format!("{} to {}", local(f, zone), local(t, zone))),
            eta_local: u.eta_ms.map(|t| local(t, zone)),
            timezone: zone.name().to_owned(),
        });
    }
    None
}

/// A Statuspage status as people read it (`in_progress`: "In progress").
fn label(status: &str) -> String {
    let mut s = status.replace('_', " ");
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    s
}

/// What every object of one page shares.
struct Api<'a> {
    page: &'a Page,
    page_id: String,
    /// The `page` object every response starts with.
    page_json: Value,
}

impl<'a> Api<'a> {
    fn new(page: &'a Page) -> Api<'a> {
        let page_id = model::slug(&page.info.name);
        let page_json = json!({
            "id": page_id,
            "name": page.info.name,
            "url": page.info.url,
            "time_zone": page.page_zone().name(),
            "updated_at": model::iso(page.updated_ms),
        });
        Api {
            page,
            page_id,
            page_json,
        }
    }

    fn component(&self, c: &Component) -> Value {
        json!({
            "id": c.id,
            "name": c.name,
            "status": c.status.as_str(),
            "created_at": model::iso(c.created_ms),
            "updated_at": model::iso(c.updated_ms),
            "position": c.position,
            "description": null,
            "showcase": false,
            "start_date": null,
            "group_id": null,
            "page_id": self.page_id,
            "group": false,
            "only_show_if_degraded": false,
        })
    }

    fn components(&self) -> Vec<Value> {
        self.page
            .components
            .iter()
            .map(|c| self.component(c))
            .collect()
    }

    /// The component objects of the components `names` names, in the page's order.
    fn named(&self, names: &[String]) -> Vec<Value> {
        let ids: Vec<String> = names.iter().map(|n| model::slug(n)).collect();
        self.page
            .components
            .iter()
            .filter(|c| ids.contains(&c.id))
            .map(|c| self.component(c))
            .collect()
    }

    fn update(&self, u: &Update, status: &str, parent: &str) -> Value {
        json!({
            "id": u.id,
            "status": status,
            "body": u.body,
            "incident_id": parent,
            "created_at": model::iso(u.at_ms),
            "updated_at": model::iso(u.at_ms),
            "display_at": model::iso(u.at_ms),
            // The component changes this update tells, as Statuspage lists them.
            "affected_components": (!u.components.is_empty()).then(|| {
                u.components.iter().map(|c| json!({
                    "code": c.code,
                    "name": c.name,
                    "old_status": c.old_status.as_str(),
                    "new_status": c.new_status.as_str(),
                })).collect::<Vec<_>>()
            }),
            "deliver_notifications": delivers(u),
            "custom_tweet": null,
            "tweet_id": null,
        })
    }

    fn incident(&self, i: &Incident) -> Value {
        let updates: Vec<Value> = i
            .updates
            .iter()
            .map(|u| self.update(u, incident_update_status(&u.status), &i.id))
            .collect();
        // When it last went into monitoring, as Statuspage records it.
        let monitoring_at = i
            .updates
            .iter()
            .find(|u| u.status == "monitoring")
            .map(|u| u.at_ms);
        json!({
            "id": i.id,
            "name": i.name,
            "status": incident_update_status(&i.status),
            "created_at": model::iso(i.created_ms),
            "updated_at": model::iso(i.updated_ms),
            "monitoring_at": iso(monitoring_at),
            "resolved_at": iso(i.resolved_ms),
            "impact": i.impact,
            "shortlink": maintenance_url(self.page, &i.maintenance),
            "started_at": model::iso(i.created_ms),
            "page_id": self.page_id,
            "incident_updates": updates,
            "components": self.named(&i.components),
        })
    }

    fn incidents<'i>(&self, it: impl Iterator<Item = &'i Incident>) -> Vec<Value> {
        it.map(|i| self.incident(i)).collect()
    }

    fn maintenance(&self, m: &Maintenance) -> Value {
        let updates: Vec<Value> = m
            .updates
            .iter()
            .filter(|u| !u.incident)
            .map(|u| self.update(u, maintenance_update_status(&u.status), &m.id))
            .collect();
        let (from, until) = window(m, self.page.now_ms);
        let resolved = m
            .ended_ms
            .filter(|_| m.status == MaintenanceStatus::Completed);
        json!({
            "id": m.id,
            "name": m.title,
            "status": m.status.as_str(),
            "created_at": model::iso(m.created_ms),
            "updated_at": model::iso(m.updated_ms),
            "monitoring_at": null,
            "resolved_at": iso(resolved),
            "impact": "maintenance",
            "shortlink": maintenance_url(self.page, &m.id),
            // Statuspage's `started_at` of a maintenance that has not begun is its creation.
            "started_at": model::iso(m.started_ms.unwrap_or(m.created_ms)),
            "page_id": self.page_id,
            "incident_updates": updates,
            "components": self.named(&m.components),
            "scheduled_for": iso(from),
            "scheduled_until": iso(until),
        })
    }

    fn maintenances<'m>(&self, it: impl Iterator<Item = &'m Maintenance>) -> Vec<Value> {
        it.map(|m| self.maintenance(m)).collect()
    }
}

/// `/api/v1/maintenance`: whether the service is closed, and for which maintenance.
fn maintenance_v1(page: &Page) -> Value {
    let model::Headline {
        maintenance: current,
        status,
        closed,
    } = page.headline();
    let unknown = closed.is_none();
    let closed = closed.unwrap_or(false);
    // The latest word: the incident's when the run left one open.
    let message = current
        .and_then(|m| {
            m.updates
                .iter()
                .find(|u| u.incident || !closed || m.active())
        })
        .map(|u| u.body.as_str());
    // Never a past ETA: once it has passed, `late` says the work is taking longer.
    let late = current.is_some_and(|m| m.late(page.now_ms));
    let eta = current
        .and_then(|m| m.eta_ms.or(m.planned_end_ms))
        .filter(|_| !late);
    let eta_local = current
        .zip(eta)
        .map(|(m, eta)| crate::duration::near(eta, page.now_ms, page.zone(m)));
    let maintenance = current.map(|m| {
        let (from, until) = window(m, page.now_ms);
        json!({
            "id": m.id,
            "title": m.title,
            "status": m.status.as_str(),
            "url": maintenance_url(page, &m.id),
            "scheduled_for": iso(from),
            "scheduled_until": iso(until),
            // The same times as the page writes them: in its zone, the zone named.
            "scheduled_for_local": from.map(|t| crate::duration::near(t, page.now_ms, page.zone(m))),
            "scheduled_until_local": until.map(|t| crate::duration::near(t, page.now_ms, page.zone(m))),
            "started_at": iso(m.started_ms),
        })
    });
    json!({
        "closed": if unknown { Value::Null } else { Value::from(closed) },
        "status": status,
        "message": message,
        "eta": iso(eta),
        "eta_local": eta_local,
        "late": late,
        "maintenance": maintenance,
        "updated_at": model::iso(page.updated_ms),
    })
}

#[cfg(test)]
pub(crate) mod tests;
