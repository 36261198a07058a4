//! The JSON API: Atlassian Statuspage's public API v2 (`/api/v2/...`), field for field, so
//! that existing clients and widgets read this page as they read a Statuspage one, and
//! `/api/v1/maintenance` for load balancers and apps (is the service closed right now?).

use serde_json::{Value, json};

use super::model::{self, Component, Incident, Maintenance, MaintenanceStatus, Page, Update};
use super::snapshot::{Asset, SHORT, Snapshot};

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
    add(
        "/api/v1/maintenance",
        maintenance_v1(page, &active, &upcoming),
    );
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
/// or end).
fn window(m: &Maintenance) -> (Option<i64>, Option<i64>) {
    let from = m.planned_start_ms.or(m.started_ms).or(Some(m.created_ms));
    let until = m.planned_end_ms.or(m.eta_ms).or(m.ended_ms);
    (from, until)
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
            "affected_components": null,
            "deliver_notifications": true,
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
        let (from, until) = window(m);
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
fn maintenance_v1(page: &Page, active: &[&Maintenance], upcoming: &[&Maintenance]) -> Value {
    // A run that ended with the service still closed (failed, aborted) keeps it closed
    // until a person resolves its incident.
    let left_closed = page.maintenances.iter().find(|m| m.closed && !m.active());
    // The one that closed the service, else the newest active one, else the next one.
    let current = active
        .iter()
        .find(|m| m.closed)
        .copied()
        .or(left_closed)
        .or(active.first().copied())
        .or(upcoming.first().copied());
    let closed = current.is_some_and(|m| m.closed);
    // A maintenance whose journal cannot be read may have closed the service since its
    // last readable event: not knowing is said as such (`closed: null`), never as open.
    let damaged = page.maintenances.iter().find(|m| m.damaged);
    let unknown = !closed && damaged.is_some();
    let current = if unknown { damaged } else { current };
    let status = match current {
        _ if unknown => "unknown",
        Some(m) if m.active() || m.status == model::MaintenanceStatus::Scheduled => {
            m.status.as_str()
        }
        Some(_) => "incident",
        None => "none",
    };
    // The latest word: the incident's when the run left one open.
    let message = current
        .and_then(|m| {
            m.updates
                .iter()
                .find(|u| u.incident || !closed || m.active())
        })
        .map(|u| u.body.as_str());
    let eta = current.and_then(|m| m.eta_ms.or(m.planned_end_ms));
    let eta_local = current
        .zip(eta)
        .map(|(m, eta)| model::local_time(eta, page.zone(m)));
    let maintenance = current.map(|m| {
        let (from, until) = window(m);
        json!({
            "id": m.id,
            "title": m.title,
            "status": m.status.as_str(),
            "url": maintenance_url(page, &m.id),
            "scheduled_for": iso(from),
            "scheduled_until": iso(until),
            "started_at": iso(m.started_ms),
        })
    });
    json!({
        "closed": if unknown { Value::Null } else { Value::from(closed) },
        "status": status,
        "message": message,
        "eta": iso(eta),
        "eta_local": eta_local,
        "maintenance": maintenance,
        "updated_at": model::iso(page.updated_ms),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeZone;
    use indexmap::IndexMap;
    use serde_json::Value;

    use super::*;
    use crate::engine::event::{Event, PublicPlan, PublicStep, PublicUpdate, Recorded};
    use crate::status::model::{
        Announcement, NoticeEvent, NoticeRecorded, PageInfo, Stream, project,
    };

    pub(crate) const MINUTE: i64 = 60_000;

    /// 2026-11-24 20:00 UTC (and GMT in London).
    pub(crate) fn t0() -> i64 {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 24, 20, 0, 0)
            .unwrap()
            .timestamp_millis()
    }

    pub(crate) fn info(name: &str) -> PageInfo {
        PageInfo {
            name: name.into(),
            url: "https://status.example.com/".into(),
            timezone: None,
        }
    }

    pub(crate) fn update(kind: &str, status: &str, body: &str, eta: Option<i64>) -> PublicUpdate {
        PublicUpdate {
            kind: kind.into(),
            status: status.into(),
            body: body.into(),
            step: None,
            eta_ms: eta,
            by: None,
            incident: false,
        }
    }

    fn rec(seq: i64, at_ms: i64, event: Event) -> Recorded {
        Recorded { seq, at_ms, event }
    }

    fn notice(seq: i64, at_ms: i64, event: NoticeEvent) -> NoticeRecorded {
        NoticeRecorded { seq, at_ms, event }
    }

    pub(crate) fn run_started(title: &str, plan: PublicPlan) -> Event {
        Event::RunStarted {
            runbook: "db-upgrade".into(),
            title: title.into(),
            file: "db-upgrade.yaml".into(),
            file_sha256: "ab".repeat(32),
            vars: IndexMap::new(),
            operator: "ops".into(),
            host: "db1".into(),
            pid: 1,
            window_start_ms: None,
            guard: None,
            public: Some(Box::new(plan)),
        }
    }

    pub(crate) fn scheduled(id: &str, title: &str, start: i64, body: &str) -> Stream {
        Stream::Notice {
            id: id.into(),
            events: vec![
                notice(
                    1,
                    start - 48 * 60 * MINUTE,
                    NoticeEvent::MaintenanceScheduled(Announcement {
                        runbook: "db-upgrade".into(),
                        title: title.into(),
                        summary: None,
                        components: vec!["API".into(), "Web app".into()],
                        timezone: "Europe/London".into(),
                        planned_start_ms: start,
                        planned_end_ms: start + 120 * MINUTE,
                        announce_from_ms: start - 24 * 60 * MINUTE,
                        public_steps: 2,
                    }),
                ),
                notice(
                    2,
                    start - 48 * 60 * MINUTE + 1,
                    NoticeEvent::Published(update("scheduled", "scheduled", body, None)),
                ),
            ],
        }
    }

    /// A run that failed a week ago with the service closed: an unresolved major incident.
    pub(crate) fn failed_run(title: &str) -> Stream {
        let at = t0() - 7 * 24 * 60 * MINUTE;
        let plan = PublicPlan {
            components: vec!["API".into()],
            timezone: "Europe/London".into(),
            ..PublicPlan::default()
        };
        let mut incident = update("failed", "investigating", "We are looking into it.", None);
        incident.incident = true;
        Stream::Run {
            id: "run-0".into(),
            events: vec![
                rec(1, at, run_started(title, plan)),
                rec(
                    2,
                    at + 1000,
                    Event::Published(update("in_progress", "in_progress", "Started.", None)),
                ),
                rec(3, at + 2000, Event::ServiceClosed),
                rec(
                    4,
                    at + 3000,
                    Event::RunFailed {
                        reason: "secret detail".into(),
                    },
                ),
                rec(5, at + 4000, Event::Published(incident)),
            ],
        }
    }

    /// The run carrying out `maint-1`, under way at `t0() + 30 min` with the service closed.
    pub(crate) fn running(title: &str, body: &str) -> Stream {
        let at = t0();
        let plan = PublicPlan {
            maintenance: Some("maint-1".into()),
            components: vec!["API".into(), "Web app".into()],
            timezone: "Europe/London".into(),
            planned_start_ms: Some(at),
            planned_end_ms: Some(at + 120 * MINUTE),
            steps: vec![
                PublicStep {
                    id: "migrate".into(),
                    title: Some("Migrating".into()),
                    expected_ms: None,
                    ..PublicStep::default()
                },
                PublicStep {
                    id: "check".into(),
                    title: Some("Checking".into()),
                    expected_ms: None,
                    ..PublicStep::default()
                },
            ],
            ..PublicPlan::default()
        };
        let eta = at + 45 * MINUTE;
        Stream::Run {
            id: "run-1".into(),
            events: vec![
                rec(1, at, run_started(title, plan)),
                rec(2, at + 1000, Event::ServiceClosed),
                rec(
                    3,
                    at + 2000,
                    Event::Published(update("in_progress", "in_progress", "Started.", Some(eta))),
                ),
                rec(
                    4,
                    at + 3000,
                    Event::StepStarted {
                        step: "migrate".into(),
                        attempt: 1,
                        verifying: false,
                    },
                ),
                rec(
                    5,
                    at + 4000,
                    Event::Published(update("step_started", "in_progress", body, Some(eta))),
                ),
            ],
        }
    }

    /// Everything at once: a failed run's open incident, a maintenance under way, one
    /// coming up.
    pub(crate) fn busy_page(title: &str, body: &str) -> Page {
        let streams = vec![
            scheduled("maint-1", "Database upgrade", t0(), "Planned."),
            scheduled(
                "maint-2",
                "Next upgrade",
                t0() + 12 * 60 * MINUTE,
                "Tomorrow.",
            ),
            failed_run("Old upgrade"),
            running(title, body),
        ];
        project(info("Acme Cloud"), &streams, t0() + 30 * MINUTE)
    }

    pub(crate) fn empty_page() -> Page {
        project(info("Acme Cloud"), &[], t0())
    }

    pub(crate) fn rendered(page: &Page) -> Snapshot {
        let mut snap = Snapshot::default();
        render(page, &mut snap);
        snap
    }

    const PATHS: &[&str] = &[
        "/api/v2/summary.json",
        "/api/v2/status.json",
        "/api/v2/components.json",
        "/api/v2/incidents.json",
        "/api/v2/incidents/unresolved.json",
        "/api/v2/scheduled-maintenances.json",
        "/api/v2/scheduled-maintenances/upcoming.json",
        "/api/v2/scheduled-maintenances/active.json",
        "/api/v1/maintenance",
    ];

    fn get(snap: &Snapshot, path: &str) -> Value {
        let asset = snap.get(path).unwrap_or_else(|| panic!("{path} missing"));
        serde_json::from_slice(&asset.body).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect()
    }

    fn ids(list: &Value) -> Vec<&str> {
        list.as_array()
            .expect("an array")
            .iter()
            .map(|v| v["id"].as_str().expect("an id"))
            .collect()
    }

    #[test]
    fn every_path_is_json_with_its_validators() {
        for page in [busy_page("Database upgrade", "Migrating."), empty_page()] {
            let snap = rendered(&page);
            assert_eq!(snap.assets.len(), PATHS.len());
            for path in PATHS {
                let asset = snap.get(path).unwrap();
                assert_eq!(asset.content_type, "application/json; charset=utf-8");
                assert_eq!(asset.cache_control, SHORT);
                assert_eq!(
                    asset.last_modified,
                    crate::status::snapshot::http_date(page.updated_ms)
                );
                let v = get(&snap, path);
                if path.starts_with("/api/v2/") {
                    let page_json = &v["page"];
                    assert_eq!(
                        keys(page_json),
                        ["id", "name", "url", "time_zone", "updated_at"]
                    );
                    assert_eq!(page_json["id"], "acme-cloud");
                    assert_eq!(page_json["name"], "Acme Cloud");
                    assert_eq!(page_json["url"], "https://status.example.com/");
                    assert_eq!(page_json["time_zone"], "UTC");
                    assert_eq!(page_json["updated_at"], model::iso(page.updated_ms));
                }
            }
        }
    }

    #[test]
    fn summary_has_statuspage_shapes() {
        let page = busy_page("Database upgrade", "Migrating.");
        let snap = rendered(&page);
        let s = get(&snap, "/api/v2/summary.json");
        assert_eq!(
            keys(&s),
            [
                "page",
                "components",
                "incidents",
                "scheduled_maintenances",
                "status"
            ]
        );

        let components = s["components"].as_array().unwrap();
        assert_eq!(ids(&s["components"]), ["api", "web-app"]);
        let api = &components[0];
        assert_eq!(
            keys(api),
            [
                "id",
                "name",
                "status",
                "created_at",
                "updated_at",
                "position",
                "description",
                "showcase",
                "start_date",
                "group_id",
                "page_id",
                "group",
                "only_show_if_degraded"
            ]
        );
        // Closed by the run under way, and left closed by the failed one.
        assert_eq!(api["status"], "major_outage");
        assert_eq!(components[1]["status"], "under_maintenance");
        assert_eq!(api["position"], 1);
        assert_eq!(api["page_id"], "acme-cloud");
        assert_eq!(api["description"], Value::Null);
        assert_eq!(api["showcase"], false);
        assert_eq!(api["group"], false);

        // The failed run's incident, unresolved.
        assert_eq!(ids(&s["incidents"]), ["inc-run-0"]);
        let inc = &s["incidents"][0];
        assert_eq!(
            keys(inc),
            [
                "id",
                "name",
                "status",
                "created_at",
                "updated_at",
                "monitoring_at",
                "resolved_at",
                "impact",
                "shortlink",
                "started_at",
                "page_id",
                "incident_updates",
                "components"
            ]
        );
        assert_eq!(inc["name"], "Problem during maintenance: Old upgrade");
        assert_eq!(inc["status"], "investigating");
        assert_eq!(inc["impact"], "major");
        assert_eq!(inc["resolved_at"], Value::Null);
        assert_eq!(inc["monitoring_at"], Value::Null);
        assert_eq!(
            inc["shortlink"],
            "https://status.example.com/maintenances/run-0"
        );
        assert_eq!(ids(&inc["components"]), ["api"]);
        let updates = inc["incident_updates"].as_array().unwrap();
        assert_eq!(updates.len(), 1);
        let u = &updates[0];
        assert_eq!(
            keys(u),
            [
                "id",
                "status",
                "body",
                "incident_id",
                "created_at",
                "updated_at",
                "display_at",
                "affected_components",
                "deliver_notifications",
                "custom_tweet",
                "tweet_id"
            ]
        );
        assert_eq!(u["status"], "investigating");
        assert_eq!(u["body"], "We are looking into it.");
        assert_eq!(u["incident_id"], "inc-run-0");
        assert_eq!(u["deliver_notifications"], true);
        assert_eq!(u["affected_components"], Value::Null);
        // Nothing of the run's own record leaks.
        assert!(
            !String::from_utf8_lossy(&snap.get("/api/v2/summary.json").unwrap().body)
                .contains("secret detail")
        );

        // Active first, then upcoming.
        assert_eq!(ids(&s["scheduled_maintenances"]), ["maint-1", "maint-2"]);
        let m = &s["scheduled_maintenances"][0];
        assert_eq!(
            keys(m),
            [
                "id",
                "name",
                "status",
                "created_at",
                "updated_at",
                "monitoring_at",
                "resolved_at",
                "impact",
                "shortlink",
                "started_at",
                "page_id",
                "incident_updates",
                "components",
                "scheduled_for",
                "scheduled_until"
            ]
        );
        assert_eq!(m["name"], "Database upgrade");
        assert_eq!(m["status"], "in_progress");
        assert_eq!(m["impact"], "maintenance");
        assert_eq!(m["started_at"], model::iso(t0()));
        assert_eq!(m["scheduled_for"], model::iso(t0()));
        assert_eq!(m["scheduled_until"], model::iso(t0() + 120 * MINUTE));
        assert_eq!(m["resolved_at"], Value::Null);
        assert_eq!(
            m["shortlink"],
            "https://status.example.com/maintenances/maint-1"
        );
        assert_eq!(ids(&m["components"]), ["api", "web-app"]);
        // Newest first, the notice's `scheduled` update included.
        let statuses: Vec<&str> = m["incident_updates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["in_progress", "in_progress", "scheduled"]);
        assert_eq!(m["incident_updates"][0]["body"], "Migrating.");
        assert_eq!(m["incident_updates"][0]["incident_id"], "maint-1");

        let upcoming = &s["scheduled_maintenances"][1];
        assert_eq!(upcoming["status"], "scheduled");
        assert_eq!(upcoming["started_at"], upcoming["created_at"]);

        assert_eq!(
            s["status"],
            serde_json::json!({"indicator": "major", "description": "Major System Outage"})
        );
    }

    #[test]
    fn lists_and_status() {
        let page = busy_page("Database upgrade", "Migrating.");
        let snap = rendered(&page);
        let status = get(&snap, "/api/v2/status.json");
        assert_eq!(keys(&status), ["page", "status"]);
        assert_eq!(status["status"]["indicator"], "major");
        assert_eq!(
            ids(&get(&snap, "/api/v2/components.json")["components"]),
            ["api", "web-app"]
        );
        assert_eq!(
            ids(&get(&snap, "/api/v2/incidents.json")["incidents"]),
            ["inc-run-0"]
        );
        assert_eq!(
            ids(&get(&snap, "/api/v2/incidents/unresolved.json")["incidents"]),
            ["inc-run-0"]
        );
        assert_eq!(
            ids(&get(&snap, "/api/v2/scheduled-maintenances.json")["scheduled_maintenances"]),
            ["maint-2", "maint-1", "run-0"]
        );
        assert_eq!(
            ids(
                &get(&snap, "/api/v2/scheduled-maintenances/upcoming.json")["scheduled_maintenances"]
            ),
            ["maint-2"]
        );
        assert_eq!(
            ids(
                &get(&snap, "/api/v2/scheduled-maintenances/active.json")["scheduled_maintenances"]
            ),
            ["maint-1"]
        );

        // The failed run's maintenance: completed, without the incident's updates.
        let all = get(&snap, "/api/v2/scheduled-maintenances.json");
        let failed = &all["scheduled_maintenances"][2];
        assert_eq!(failed["status"], "completed");
        let at = t0() - 7 * 24 * 60 * MINUTE;
        assert_eq!(failed["resolved_at"], model::iso(at + 3000));
        // No planned window: from the start to the end.
        assert_eq!(failed["scheduled_for"], model::iso(at));
        assert_eq!(failed["scheduled_until"], model::iso(at + 3000));
        let updates = failed["incident_updates"].as_array().unwrap();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0]["status"], "in_progress");
    }

    #[test]
    fn a_resolved_incident_leaves_the_unresolved_list() {
        let Stream::Run { id, mut events } = failed_run("Old upgrade") else {
            unreachable!()
        };
        let at = events.last().unwrap().at_ms;
        for (i, status) in ["monitoring", "resolved"].into_iter().enumerate() {
            let mut u = update("manual", status, "Fixed.", None);
            u.incident = true;
            let t = at + (i as i64 + 1) * MINUTE;
            events.push(rec(10 + i as i64, t, Event::Published(u)));
        }
        let page = project(info("Acme Cloud"), &[Stream::Run { id, events }], t0());
        let snap = rendered(&page);
        let inc = &get(&snap, "/api/v2/incidents.json")["incidents"][0];
        assert_eq!(inc["status"], "resolved");
        assert_eq!(inc["monitoring_at"], model::iso(at + MINUTE));
        assert_eq!(inc["resolved_at"], model::iso(at + 2 * MINUTE));
        let statuses: Vec<&str> = inc["incident_updates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["resolved", "monitoring", "investigating"]);
        assert_eq!(
            get(&snap, "/api/v2/incidents/unresolved.json")["incidents"],
            serde_json::json!([])
        );
        assert_eq!(
            get(&snap, "/api/v2/status.json")["status"],
            serde_json::json!({"indicator": "none", "description": "All Systems Operational"})
        );
        let summary = get(&snap, "/api/v2/summary.json");
        assert_eq!(summary["components"][0]["status"], "operational");
    }

    #[test]
    fn maintenance_v1_while_closed() {
        let page = busy_page("Database upgrade", "Migrating the data.");
        let v = get(&rendered(&page), "/api/v1/maintenance");
        assert_eq!(
            v,
            serde_json::json!({
                "closed": true,
                "status": "in_progress",
                "message": "Migrating the data.",
                "eta": model::iso(t0() + 45 * MINUTE),
                "eta_local": "20:45 GMT",
                "maintenance": {
                    "id": "maint-1",
                    "title": "Database upgrade",
                    "status": "in_progress",
                    "url": "https://status.example.com/maintenances/maint-1",
                    "scheduled_for": model::iso(t0()),
                    "scheduled_until": model::iso(t0() + 120 * MINUTE),
                    "started_at": model::iso(t0()),
                },
                "updated_at": model::iso(page.updated_ms),
            })
        );
        assert_eq!(
            keys(&v),
            [
                "closed",
                "status",
                "message",
                "eta",
                "eta_local",
                "maintenance",
                "updated_at"
            ]
        );
    }

    #[test]
    fn maintenance_v1_before_and_without() {
        let start = t0() + 60 * MINUTE;
        let streams = [scheduled("maint-1", "Database upgrade", start, "Planned.")];
        let page = project(info("Acme Cloud"), &streams, t0());
        let v = get(&rendered(&page), "/api/v1/maintenance");
        assert_eq!(v["closed"], false);
        assert_eq!(v["status"], "scheduled");
        assert_eq!(v["message"], "Planned.");
        assert_eq!(v["eta"], model::iso(start + 120 * MINUTE));
        assert_eq!(v["eta_local"], "23:00 GMT");
        assert_eq!(v["maintenance"]["id"], "maint-1");
        assert_eq!(v["maintenance"]["started_at"], Value::Null);
        assert_eq!(v["maintenance"]["scheduled_for"], model::iso(start));

        // Not yet announced: nothing to say.
        let early = project(info("Acme Cloud"), &streams, start - 30 * 60 * MINUTE);
        let snap = rendered(&early);
        let v = get(&snap, "/api/v1/maintenance");
        assert_eq!(v["status"], "none");
        assert_eq!(
            get(&snap, "/api/v2/scheduled-maintenances.json")["scheduled_maintenances"],
            serde_json::json!([])
        );

        let snap = rendered(&empty_page());
        assert_eq!(
            get(&snap, "/api/v1/maintenance"),
            serde_json::json!({
                "closed": false,
                "status": "none",
                "message": null,
                "eta": null,
                "eta_local": null,
                "maintenance": null,
                "updated_at": model::iso(0),
            })
        );
        let summary = get(&snap, "/api/v2/summary.json");
        assert_eq!(summary["components"], serde_json::json!([]));
        assert_eq!(summary["incidents"], serde_json::json!([]));
        assert_eq!(summary["scheduled_maintenances"], serde_json::json!([]));
        assert_eq!(summary["status"]["indicator"], "none");
    }

    #[test]
    fn an_open_maintenance_shows_as_maintenance() {
        let Stream::Run { id, events } = running("Database upgrade", "Migrating.") else {
            unreachable!()
        };
        let events: Vec<Recorded> = events
            .into_iter()
            .filter(|r| !matches!(r.event, Event::ServiceClosed))
            .collect();
        let page = project(
            info("Acme Cloud"),
            &[Stream::Run { id, events }],
            t0() + MINUTE,
        );
        let snap = rendered(&page);
        assert_eq!(
            get(&snap, "/api/v2/status.json")["status"]["indicator"],
            "maintenance"
        );
        let v = get(&snap, "/api/v1/maintenance");
        assert_eq!(v["closed"], false);
        assert_eq!(v["status"], "in_progress");
        // Its own maintenance: the run's id.
        assert_eq!(v["maintenance"]["id"], "run-1");
    }

    #[test]
    fn text_is_carried_verbatim() {
        let nasty = "<script>alert(\"x\")</script> & 'quotes' {{title}} \\ \u{2603}";
        let page = busy_page(nasty, nasty);
        let snap = rendered(&page);
        for path in PATHS {
            // Valid JSON everywhere (`get` parses).
            get(&snap, path);
        }
        let v = get(&snap, "/api/v1/maintenance");
        assert_eq!(v["message"], nasty);
        assert_eq!(v["maintenance"]["title"], nasty);
        let s = get(&snap, "/api/v2/summary.json");
        assert_eq!(s["scheduled_maintenances"][0]["name"], nasty);
        assert_eq!(
            s["scheduled_maintenances"][0]["incident_updates"][0]["body"],
            nasty
        );
    }

    #[test]
    fn odd_ids_and_names_make_valid_links() {
        assert_eq!(path_segment("run-1.a_b~c"), "run-1.a_b~c");
        assert_eq!(path_segment("a b/é"), "a%20b%2F%C3%A9");
        let page = project(info("Ünïcode & Co."), &[], 0);
        let v = get(&rendered(&page), "/api/v2/status.json");
        assert_eq!(v["page"]["id"], "n-code-co");
    }

    #[test]
    fn maintenance_statuses_stay_in_the_vocabulary() {
        assert_eq!(maintenance_update_status("verifying"), "verifying");
        assert_eq!(maintenance_update_status("rolling_back"), "in_progress");
        assert_eq!(incident_update_status("identified"), "identified");
        assert_eq!(incident_update_status("failed"), "investigating");
    }
}
