//! The JSON API's tests, and the pages they build (shared with the feeds' tests).

use chrono::TimeZone;
use indexmap::IndexMap;
use serde_json::Value;

use super::*;
use crate::engine::event::{Event, PublicPlan, PublicStep, PublicUpdate, Recorded};
use crate::status::model::{Announcement, NoticeEvent, NoticeRecorded, PageInfo, Stream, project};

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
        quiet_until_ms: None,
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
        rehearsal: false,
        public: Some(Box::new(plan)),
        limit: Vec::new(),
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
                    estimate_ms: None,
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

pub(crate) fn get(snap: &Snapshot, path: &str) -> Value {
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
                // The zone the pages show: every maintenance here is in London's; an
                // empty page has UTC.
                let zone = if page.maintenances.is_empty() {
                    "UTC"
                } else {
                    "Europe/London"
                };
                assert_eq!(page_json["time_zone"], zone);
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
    // The failure left the service closed: the update that says so names the change.
    assert_eq!(
        u["affected_components"],
        json!([{ "code": "api", "name": "API", "old_status": "operational", "new_status": "major_outage" }])
    );
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
        serde_json::json!({"indicator": "major", "description": "Partial System Outage"})
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
        ids(&get(&snap, "/api/v2/scheduled-maintenances/upcoming.json")["scheduled_maintenances"]),
        ["maint-2"]
    );
    assert_eq!(
        ids(&get(&snap, "/api/v2/scheduled-maintenances/active.json")["scheduled_maintenances"]),
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
            "late": false,
            "maintenance": {
                "id": "maint-1",
                "title": "Database upgrade",
                "status": "in_progress",
                "url": "https://status.example.com/maintenances/maint-1",
                "scheduled_for": model::iso(t0()),
                "scheduled_until": model::iso(t0() + 120 * MINUTE),
                "scheduled_for_local": "20:00 GMT",
                "scheduled_until_local": "22:00 GMT",
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
            "late",
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
    // As the page writes them (the banner shows these): in its zone, the zone named.
    assert_eq!(v["maintenance"]["scheduled_for_local"], "21:00 GMT");
    assert_eq!(v["maintenance"]["scheduled_until_local"], "23:00 GMT");

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
            "late": false,
            "maintenance": null,
            // Never 1970: a page with nothing on it is as of now.
            "updated_at": model::iso(t0()),
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

#[test]
fn an_eta_that_passed_is_never_shown_the_page_says_it_is_late() {
    // `running` expects to finish at t0 + 45 min.
    let on_time = project(
        info("Acme"),
        &[running("Upgrade", "Migrating.")],
        t0() + 30 * MINUTE,
    );
    let v = get(&rendered(&on_time), "/api/v1/maintenance");
    assert_eq!(v["late"], false, "{v}");
    assert_eq!(v["eta"], model::iso(t0() + 45 * MINUTE), "{v}");
    let now = t0() + 50 * MINUTE;
    let late = project(info("Acme"), &[running("Upgrade", "Migrating.")], now);
    let snap = rendered(&late);
    let v = get(&snap, "/api/v1/maintenance");
    assert_eq!(v["late"], true, "{v}");
    assert_eq!(v["eta"], Value::Null, "{v}");
    assert_eq!(v["eta_local"], Value::Null, "{v}");
    let active = get(&snap, "/api/v2/scheduled-maintenances/active.json");
    let until = active["scheduled_maintenances"][0]["scheduled_until"]
        .as_str()
        .unwrap();
    assert!(until >= model::iso(now).as_str(), "{until} is in the past");
    // The page is drawn again the moment the ETA passes.
    assert_eq!(on_time.next_change_ms(), Some(t0() + 45 * MINUTE));
}

#[test]
fn a_recovery_run_that_reopened_the_service_opens_it_on_the_page() {
    let failed = failed_run("Upgrade");
    let at = t0() - 60 * MINUTE;
    let plan = PublicPlan {
        components: vec!["API".into()],
        timezone: "Europe/London".into(),
        ..PublicPlan::default()
    };
    let recovery = Stream::Run {
        id: "run-9".into(),
        events: vec![
            rec(1, at, run_started("Recovery", plan)),
            rec(2, at + 1000, Event::ServiceReopened),
            rec(3, at + 2000, Event::RunCompleted),
        ],
    };
    let before = project(info("Acme"), std::slice::from_ref(&failed), t0());
    assert_eq!(
        get(&rendered(&before), "/api/v1/maintenance")["closed"],
        true
    );
    let after = project(info("Acme"), &[failed, recovery], t0());
    let v = get(&rendered(&after), "/api/v1/maintenance");
    assert_eq!(v["closed"], false, "{v}");
}

#[test]
fn subscribers_are_notified_of_changes_of_status_not_of_every_step() {
    let page = project(
        info("Acme"),
        &[running("Upgrade", "Migrating.")],
        t0() + 10 * MINUTE,
    );
    let v = get(
        &rendered(&page),
        "/api/v2/scheduled-maintenances/active.json",
    );
    let updates = v["scheduled_maintenances"][0]["incident_updates"]
        .as_array()
        .unwrap();
    let delivered: Vec<(&str, bool)> = updates
        .iter()
        .map(|u| {
            (
                u["body"].as_str().unwrap(),
                u["deliver_notifications"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        [("Migrating.", false), ("Started.", true)],
        "{v}"
    );
}
