//! The status page's HTML, its static files (CSS, the live-update script, the
//! embeddable banner) and the badge, rendered once per change into the snapshot.
//!
//! Templates live in `templates/pages/` and the static files in `web/`, both embedded in
//! the binary. The context is built here as JSON with every time already written out, so
//! the templates hold no logic beyond `if` and `each`; everything that comes from a
//! runbook or a person goes through handlebars' HTML escaping (`{{ }}`, never `{{{ }}}`).

use std::sync::LazyLock;

use chrono::{NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use handlebars::Handlebars;
use serde_json::{Value, json};

use super::model::{
    Incident, Maintenance, MaintenanceStatus, Outcome, Page, Update, iso, local, local_time,
};
use super::snapshot::{self, Asset, Snapshot};
use crate::template::{self, Mode};

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// How many finished maintenances the front page lists.
const RECENT: usize = 5;

/// Full pages, rendered by name.
const PAGES: &[(&str, &str)] = &[
    ("index", include_str!("../../templates/pages/index.hbs")),
    ("history", include_str!("../../templates/pages/history.hbs")),
    (
        "maintenance",
        include_str!("../../templates/pages/maintenance.hbs"),
    ),
    ("badge", include_str!("../../templates/pages/badge.svg.hbs")),
    (
        "not_found",
        include_str!("../../templates/pages/not_found.hbs"),
    ),
];

/// Pieces the pages share.
const PARTIALS: &[(&str, &str)] = &[
    ("layout", include_str!("../../templates/pages/layout.hbs")),
    (
        "timeline",
        include_str!("../../templates/pages/timeline.hbs"),
    ),
    ("times", include_str!("../../templates/pages/times.hbs")),
    ("time", include_str!("../../templates/pages/time.hbs")),
];

const STYLE_CSS: &str = include_str!("../../web/style.css");
const APP_JS: &str = include_str!("../../web/app.js");
const BANNER_JS: &str = include_str!("../../web/banner.js");
const FAVICON: &str = include_str!("../../web/favicon.svg");

/// The static files, hashed and compressed once (they change only with the binary).
static STATIC_ASSETS: LazyLock<[(&str, Asset); 4]> = LazyLock::new(|| {
    // They change only with the binary: last modified when this process first served.
    let since = crate::store::now_ms();
    [
        (
            "/style.css",
            Asset::new(CSS, STYLE_CSS, since, snapshot::STATIC),
        ),
        ("/app.js", Asset::new(JS, APP_JS, since, snapshot::STATIC)),
        (
            "/banner.js",
            Asset::new(JS, BANNER_JS, since, snapshot::STATIC),
        ),
        (
            "/favicon.svg",
            Asset::new("image/svg+xml", FAVICON, since, snapshot::STATIC),
        ),
    ]
});

/// HTML mode, strict: every value from a runbook or a person is escaped.
static TEMPLATES: LazyLock<Handlebars<'static>> =
    LazyLock::new(|| template::compiled(Mode::Html, true, "templates/pages", PARTIALS, PAGES));

/// Adds the HTML pages (`/`, `/history`, `/maintenances/{id}`, and `/404`, which the
/// server sends with any unknown page's 404), the static files
/// (`/style.css`, `/app.js`, `/banner.js`) and `/badge.svg` to `snap`.
pub fn render(page: &Page, snap: &mut Snapshot) {
    let modified = page.updated_ms;
    snap.insert(
        "/",
        Asset::new(HTML, html("index", &index(page)), modified, snapshot::SHORT),
    );
    snap.insert(
        "/history",
        Asset::new(
            HTML,
            html("history", &history(page)),
            modified,
            snapshot::SHORT,
        ),
    );
    for m in page.visible() {
        snap.insert(
            format!("/maintenances/{}", m.id),
            Asset::new(
                HTML,
                html("maintenance", &maintenance_page(page, m)),
                modified,
                snapshot::SHORT,
            ),
        );
    }
    let not_found = json!({ "site": site(page, format!("Not found · {}", page.info.name)) });
    snap.insert(
        "/404",
        Asset::new(
            HTML,
            html("not_found", &not_found),
            modified,
            snapshot::SHORT,
        ),
    );
    for (path, asset) in STATIC_ASSETS.iter() {
        snap.insert(*path, asset.clone());
    }
    snap.insert(
        "/badge.svg",
        Asset::new(SVG, badge(page), modified, snapshot::SHORT),
    );
}

/// Renders a page template. The templates are part of the binary and the context is
/// built here, so a failure is a bug; the page then says so plainly rather than missing.
fn html(name: &str, ctx: &Value) -> String {
    TEMPLATES.render(name, ctx).unwrap_or_else(|e| {
        eprintln!("error: status page template `{name}`: {e}");
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Status</title></head><body><main><h1>Status</h1>\
         <p>This page could not be shown. The current status is at \
         <a href=\"/api/v2/summary.json\">/api/v2/summary.json</a>.</p></main></body></html>\n"
            .to_owned()
    })
}

// ---------------------------------------------------------------------------------------
// Contexts

/// What every page's layout needs.
fn site(page: &Page, title: String) -> Value {
    let zone = page.page_zone();
    json!({
        "name": page.info.name,
        "title": title,
        "updated": time(page.updated_ms, zone),
    })
}

fn index(page: &Page) -> Value {
    let indicator = page.indicator();
    let active: Vec<Value> = page.active().map(|m| maintenance(page, m)).collect();
    let upcoming: Vec<Value> = page
        .upcoming()
        .into_iter()
        .map(|m| maintenance(page, m))
        .collect();
    let incidents: Vec<Value> = page
        .unresolved_incidents()
        .map(|i| incident(page, i))
        .collect();
    let recent: Vec<Value> = page.past().take(RECENT).map(|m| listed(page, m)).collect();
    let components: Vec<Value> = page
        .components
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "status": c.status.as_str(),
                "label": c.status.label(),
            })
        })
        .collect();
    let lead = match (incidents.is_empty(), active.is_empty()) {
        (false, false) => {
            "We are looking into a problem, and maintenance is under way; details below."
        }
        (false, true) => "We are looking into a problem; details below.",
        (true, false) => "Maintenance is under way; details below.",
        (true, true) if !upcoming.is_empty() => {
            "No maintenance is under way. Upcoming maintenance is listed below."
        }
        (true, true) => "No maintenance is under way or scheduled.",
    };
    json!({
        "site": site(page, page.info.name.clone()),
        "indicator": {
            "key": indicator.indicator,
            "description": indicator.description,
            "lead": lead,
        },
        "active": active,
        "upcoming": upcoming,
        "incidents": incidents,
        "components": components,
        "recent": recent,
    })
}

fn history(page: &Page) -> Value {
    let maintenances: Vec<Value> = page.visible().map(|m| listed(page, m)).collect();
    let incidents: Vec<Value> = page.incidents.iter().map(|i| incident(page, i)).collect();
    json!({
        "site": site(page, format!("History · {}", page.info.name)),
        "maintenances": maintenances,
        "incidents": incidents,
    })
}

fn maintenance_page(page: &Page, m: &Maintenance) -> Value {
    let incident = m
        .incident
        .as_deref()
        .and_then(|id| page.incidents.iter().find(|i| i.id == id))
        .map_or(Value::Null, |i| incident(page, i));
    json!({
        "site": site(page, format!("{} · {}", m.title, page.info.name)),
        "m": maintenance(page, m),
        "incident": incident,
    })
}

/// A maintenance with everything any page shows of it.
fn maintenance(page: &Page, m: &Maintenance) -> Value {
    let zone = page.zone(m);
    let progress = m
        .progress
        .as_ref()
        .filter(|p| p.current > 0 && m.active())
        .map_or(Value::Null, |p| {
            let text = match p.step_title.as_deref() {
                Some(title) => format!("Step {} of {}: {title}", p.current, p.total),
                None => format!("Step {} of {}", p.current, p.total),
            };
            json!({ "text": text, "current": p.current, "total": p.total.max(p.current) })
        });
    let eta = m
        .eta_ms
        .filter(|_| m.active())
        .map_or(Value::Null, |ms| near_time(ms, page.now_ms, zone));
    let outcome = m.outcome.map_or(
        Value::Null,
        |o| json!({ "key": outcome_key(o), "label": outcome_label(o), "text": outcome_text(o) }),
    );
    json!({
        "id": m.id,
        "href": href(&m.id),
        // The public part of the post-run report, once the run has ended.
        "report": (m.outcome.is_some() && m.run_id.is_some())
            .then(|| format!("{}/report.json", href(&m.id))),
        "title": m.title,
        "summary": m.summary,
        "status": m.status.as_str(),
        "status_label": if m.damaged { UNKNOWN } else { m.status.label() },
        // Once it has ended, how it ended says more than `completed`.
        "chip": {
            "key": chip_key(m),
            "label": chip_label(m),
        },
        "active": m.active(),
        "closed": m.closed && m.active(),
        "zone": zone.name(),
        "progress": progress,
        "eta": eta,
        "planned_start": opt_time(m.planned_start_ms, zone),
        "planned_end": m.planned_end_ms.map_or(Value::Null, |end| {
            match m.planned_start_ms {
                Some(start) => near_time(end, start, zone),
                None => time(end, zone),
            }
        }),
        "started": opt_time(m.started_ms, zone),
        "ended": opt_time(m.ended_ms, zone),
        "outcome": outcome,
        "components": m.components,
        "incident_href": m.incident.as_ref().map(|_| format!("{}#incident", href(&m.id))),
        "updates": m.updates.iter().map(|u| update(u, zone)).collect::<Vec<_>>(),
    })
}

/// What the page says of a maintenance whose journal cannot be read.
const UNKNOWN: &str = "Status unknown";

/// The chip of a maintenance: how it ended once it has (that says more than
/// `completed`), else its status; `unknown` when its journal cannot be read.
fn chip_key(m: &Maintenance) -> &'static str {
    if m.damaged {
        return "unknown";
    }
    m.outcome.map_or(m.status.as_str(), outcome_key)
}

fn chip_label(m: &Maintenance) -> &'static str {
    if m.damaged {
        return UNKNOWN;
    }
    m.outcome.map_or(m.status.label(), outcome_label)
}

/// A maintenance as a line of a list.
fn listed(page: &Page, m: &Maintenance) -> Value {
    let zone = page.zone(m);
    let when = m.started_ms.or(m.planned_start_ms).unwrap_or(m.created_ms);
    json!({
        "href": href(&m.id),
        "title": m.title,
        "status": m.status.as_str(),
        "label": chip_label(m),
        "tone": chip_key(m),
        "when": time(when, zone),
    })
}

fn incident(page: &Page, i: &Incident) -> Value {
    let zone = page.info.timezone.unwrap_or(i.timezone);
    let latest = i.updates.first().map_or(Value::Null, |u| update(u, zone));
    json!({
        "id": i.id,
        "name": i.name,
        "href": format!("{}#incident", href(&i.maintenance)),
        "status": i.status,
        "status_label": status_label(&i.status),
        "resolved": i.resolved(),
        "impact": i.impact,
        "impact_text": if i.impact == "major" {
            "Major: the service was left unavailable"
        } else {
            "Minor: the service stayed available"
        },
        "created": time(i.created_ms, zone),
        "resolved_at": opt_time(i.resolved_ms, zone),
        "components": i.components,
        "latest": latest,
    })
}

fn update(u: &Update, zone: Tz) -> Value {
    json!({
        "id": u.id,
        "time": time(u.at_ms, zone),
        "status": u.status,
        "status_label": status_label(&u.status),
        "body": u.body,
        "incident": u.incident,
    })
}

// ---------------------------------------------------------------------------------------
// Words

/// How the page says a Statuspage status (a maintenance's or an incident's).
fn status_label(status: &str) -> String {
    let known = [
        MaintenanceStatus::Scheduled,
        MaintenanceStatus::InProgress,
        MaintenanceStatus::Verifying,
        MaintenanceStatus::Completed,
    ];
    if let Some(s) = known.iter().find(|s| s.as_str() == status) {
        return s.label().to_owned();
    }
    let words = status.replace('_', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn outcome_key(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "completed",
        Outcome::RolledBack => "rolled_back",
        Outcome::Failed => "failed",
        Outcome::Aborted => "aborted",
    }
}

fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "Completed",
        Outcome::RolledBack => "Rolled back",
        Outcome::Failed => "Failed",
        Outcome::Aborted => "Stopped",
    }
}

/// The outcome as a customer reads it.
fn outcome_text(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "Completed: the work finished as planned.",
        Outcome::RolledBack => {
            "Rolled back: the work did not go as planned, and the service was restored \
             to how it was before."
        }
        Outcome::Failed => {
            "Failed: the work could not be finished as planned. We are looking into it; \
             see the incident for the latest."
        }
        Outcome::Aborted => "Stopped: the work was called off before it finished.",
    }
}

// ---------------------------------------------------------------------------------------
// Times and links

/// A time for `<time datetime>`: machine-readable and as the page writes it.
fn time(ms: i64, zone: Tz) -> Value {
    json!({ "iso": iso(ms), "text": local(ms, zone) })
}

fn opt_time(ms: Option<i64>, zone: Tz) -> Value {
    ms.map_or(Value::Null, |ms| time(ms, zone))
}

/// A time written short (`20:45 GMT`) when it falls on the same day as `reference`.
fn near_time(ms: i64, reference: i64, zone: Tz) -> Value {
    let same_day = day(ms, zone).is_some() && day(ms, zone) == day(reference, zone);
    let text = if same_day {
        local_time(ms, zone)
    } else {
        local(ms, zone)
    };
    json!({ "iso": iso(ms), "text": text })
}

fn day(ms: i64, zone: Tz) -> Option<NaiveDate> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.with_timezone(&zone).date_naive())
}

/// The page of a maintenance, its id percent-encoded (ids are URL-safe today; a link
/// stays one whatever they become).
fn href(id: &str) -> String {
    format!("/maintenances/{}", super::api::path_segment(id))
}

// ---------------------------------------------------------------------------------------
// Badge

/// What the badge says, and in which colour (white text on it keeps 4.5:1 contrast).
fn badge_state(page: &Page) -> (&'static str, &'static str) {
    let active: Vec<&Maintenance> = page.active().collect();
    if active
        .iter()
        .any(|m| m.status == MaintenanceStatus::InProgress)
    {
        ("in progress", "#9a4a00")
    } else if !active.is_empty() {
        ("verifying", "#9a4a00")
    } else if page.unresolved_incidents().next().is_some() {
        ("incident", "#b42318")
    } else if !page.upcoming().is_empty() {
        ("scheduled", "#0b5cad")
    } else {
        ("none", "#2b7a3d")
    }
}

/// A flat badge, `maintenance | <state>`, sized from the text (Verdana 11px averages
/// about 7px a character; `textLength` makes any font fit the box).
fn badge(page: &Page) -> String {
    let label = "maintenance";
    let (message, color) = badge_state(page);
    let text_w = |s: &str| s.chars().count() as u32 * 7;
    let (label_tw, message_tw) = (text_w(label), text_w(message));
    let (label_w, message_w) = (label_tw + 12, message_tw + 12);
    let ctx = json!({
        "label": label,
        "message": message,
        "color": color,
        "width": label_w + message_w,
        "label_w": label_w,
        "message_w": message_w,
        "label_x": label_w / 2,
        "message_x": label_w + message_w / 2,
        "label_tw": label_tw,
        "message_tw": message_tw,
    });
    TEMPLATES.render("badge", &ctx).unwrap_or_else(|e| {
        eprintln!("error: status badge template: {e}");
        String::from("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"0\" height=\"0\"></svg>\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::{Event, PublicPlan, PublicStep, PublicUpdate, Recorded};
    use crate::status::model::{
        Announcement, NoticeEvent, NoticeRecorded, PageInfo, Stream, project,
    };

    const T0: i64 = 1_794_996_000_000; // 2026-11-18 10:00 UTC
    const MIN: i64 = 60_000;
    const EVIL: &str = "<script>alert(\"x\")</script> {{vars.x}} & 'q'";

    fn info() -> PageInfo {
        PageInfo {
            name: "Acme <Cloud>".into(),
            url: "http://status.example.com".into(),
            timezone: None,
        }
    }

    fn rec(seq: i64, at_ms: i64, event: Event) -> Recorded {
        Recorded { seq, at_ms, event }
    }

    fn published(status: &str, kind: &str, body: &str, eta_ms: Option<i64>) -> Event {
        Event::Published(PublicUpdate {
            kind: kind.into(),
            status: status.into(),
            body: body.into(),
            step: None,
            eta_ms,
            by: None,
            incident: false,
        })
    }

    fn started(title: &str, maintenance: Option<&str>, start: i64) -> Event {
        Event::RunStarted {
            runbook: "db-upgrade".into(),
            title: title.into(),
            file: "db.yaml".into(),
            file_sha256: "00".into(),
            vars: Default::default(),
            operator: "ops".into(),
            host: "h".into(),
            pid: 1,
            window_start_ms: None,
            guard: None,
            public: Some(Box::new(PublicPlan {
                maintenance: maintenance.map(Into::into),
                title: None,
                window_ms: None,
                summary: Some(format!("Summary {EVIL}")),
                components: vec!["API".into(), "Web <app>".into()],
                timezone: "Europe/London".into(),
                planned_start_ms: Some(start),
                planned_end_ms: Some(start + 120 * MIN),
                steps: (1..=9)
                    .map(|n| PublicStep {
                        id: format!("s{n}"),
                        title: Some(format!("Step title {n}")),
                        expected_ms: None,
                        ..PublicStep::default()
                    })
                    .collect(),
                secrets: Vec::new(),
            })),
        }
    }

    /// A run at step 4 of 9, with the service closed and an ETA.
    fn running() -> Stream {
        let mut events = vec![
            rec(1, T0, started(EVIL, None, T0)),
            rec(2, T0 + MIN, Event::ServiceClosed),
            rec(
                3,
                T0 + MIN,
                published("in_progress", "in_progress", "We have started.", None),
            ),
        ];
        for n in 1..=4 {
            events.push(rec(
                3 + n,
                T0 + (n + 1) * MIN,
                Event::StepStarted {
                    step: format!("s{n}"),
                    attempt: 1,
                    verifying: false,
                },
            ));
        }
        events.push(rec(
            9,
            T0 + 6 * MIN,
            published(
                "in_progress",
                "overrun",
                &format!("Body {EVIL}\nsecond line"),
                Some(T0 + 105 * MIN),
            ),
        ));
        Stream::Run {
            id: "db-upgrade-20261118-100000-000".into(),
            events,
        }
    }

    fn finished(id: &str, at: i64, end: Event) -> Stream {
        Stream::Run {
            id: id.into(),
            events: vec![
                rec(1, at, started(&format!("Old {id}"), None, at)),
                rec(
                    2,
                    at + MIN,
                    published("in_progress", "in_progress", "Go.", None),
                ),
                rec(3, at + 2 * MIN, end),
            ],
        }
    }

    fn notice(id: &str, start: i64) -> Stream {
        Stream::Notice {
            id: id.into(),
            events: vec![
                NoticeRecorded {
                    seq: 1,
                    at_ms: T0 - 1000 * MIN,
                    event: NoticeEvent::MaintenanceScheduled(Announcement {
                        runbook: "db-upgrade".into(),
                        title: format!("Planned {EVIL}"),
                        summary: None,
                        components: vec!["API".into()],
                        timezone: "America/New_York".into(),
                        planned_start_ms: start,
                        planned_end_ms: start + 60 * MIN,
                        announce_from_ms: T0 - 1000 * MIN,
                        public_steps: 3,
                    }),
                },
                NoticeRecorded {
                    seq: 2,
                    at_ms: T0 - 1000 * MIN,
                    event: NoticeEvent::Published(PublicUpdate {
                        kind: "scheduled".into(),
                        status: "scheduled".into(),
                        body: "We will upgrade.".into(),
                        step: None,
                        eta_ms: None,
                        by: None,
                        incident: false,
                    }),
                },
            ],
        }
    }

    fn snap(streams: &[Stream], now: i64) -> (Page, Snapshot) {
        let page = project(info(), streams, now);
        let mut snap = Snapshot::default();
        render(&page, &mut snap);
        (page, snap)
    }

    fn body<'a>(snap: &'a Snapshot, path: &str) -> &'a str {
        let asset = snap.get(path).unwrap_or_else(|| panic!("no asset {path}"));
        std::str::from_utf8(&asset.body).expect("utf-8")
    }

    #[test]
    fn every_asset_is_there_with_its_type_and_cache() {
        let streams = [
            running(),
            finished("old-1", T0 - 5000 * MIN, Event::RunCompleted),
            notice("planned-1", T0 + 5000 * MIN),
        ];
        let (page, snap) = snap(&streams, T0 + 10 * MIN);
        for path in ["/", "/history"] {
            let a = snap.get(path).unwrap();
            assert_eq!(a.content_type, HTML);
            assert_eq!(a.cache_control, snapshot::SHORT);
            assert_eq!(a.last_modified, snapshot::http_date(page.updated_ms));
        }
        for m in page.visible() {
            let path = format!("/maintenances/{}", m.id);
            assert_eq!(snap.get(&path).unwrap().content_type, HTML, "{path}");
        }
        assert!(snap.get("/maintenances/planned-1").is_some());
        assert!(body(&snap, "/404").contains("Page not found"));
        assert!(snap.get("/maintenances/old-1").is_some());
        assert_eq!(snap.get("/style.css").unwrap().content_type, CSS);
        assert_eq!(snap.get("/app.js").unwrap().content_type, JS);
        assert_eq!(snap.get("/banner.js").unwrap().content_type, JS);
        for path in ["/style.css", "/app.js", "/banner.js"] {
            let a = snap.get(path).unwrap();
            assert_eq!(a.cache_control, snapshot::STATIC);
            assert_ne!(a.last_modified, snapshot::http_date(0), "not dated 1970");
            assert!(!a.body.is_empty());
        }
        let badge = snap.get("/badge.svg").unwrap();
        assert_eq!(badge.content_type, SVG);
        assert_eq!(badge.cache_control, snapshot::SHORT);
    }

    #[test]
    fn an_unannounced_maintenance_has_no_page() {
        let mut s = notice("later", T0 + 5000 * MIN);
        if let Stream::Notice { events, .. } = &mut s
            && let NoticeEvent::MaintenanceScheduled(a) = &mut events[0].event
        {
            a.announce_from_ms = T0 + 4000 * MIN;
        }
        let (_, snap) = snap(&[s], T0);
        assert!(snap.get("/maintenances/later").is_none());
        assert!(!body(&snap, "/").contains("Planned"));
        assert!(!body(&snap, "/history").contains("Planned"));
        assert!(body(&snap, "/badge.svg").contains(">none<"));
    }

    #[test]
    fn text_from_the_runbook_is_escaped_everywhere() {
        let streams = [
            running(),
            finished("old-1", T0 - 5000 * MIN, Event::RunCompleted),
            notice("planned-1", T0 + 5000 * MIN),
        ];
        let (_, snap) = snap(&streams, T0 + 10 * MIN);
        let escaped =
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; {{vars.x}} &amp; &#x27;q&#x27;";
        for (path, asset) in &snap.assets {
            let text = std::str::from_utf8(&asset.body).unwrap();
            assert!(!text.contains("<script>"), "{path}: raw <script>");
            assert!(!text.contains("alert(\"x\")"), "{path}: raw quotes");
            assert!(!text.contains("<Cloud>"), "{path}: raw page name");
            assert!(!text.contains("<app>"), "{path}: raw component");
        }
        let index = body(&snap, "/");
        assert!(index.contains(escaped), "{index}");
        assert!(index.contains(&format!("Body {escaped}\nsecond line")));
        assert!(index.contains(&format!("Summary {escaped}")));
        assert!(index.contains("Acme &lt;Cloud&gt;"));
        assert!(index.contains("Web &lt;app&gt;"));
        let page = body(&snap, "/maintenances/db-upgrade-20261118-100000-000");
        assert!(page.contains(&format!("<title>{escaped} · Acme &lt;Cloud&gt;</title>")));
        assert!(body(&snap, "/history").contains(&format!("Planned {escaped}")));
    }

    #[test]
    fn the_front_page_shows_progress_eta_and_window() {
        let (_, snap) = snap(&[running()], T0 + 10 * MIN);
        let index = body(&snap, "/");
        assert!(index.contains("Service Under Maintenance"));
        assert!(index.contains("Step 4 of 9: Step title 4"), "{index}");
        // Europe/London in November is GMT; the ETA is 10:00 + 105 min.
        assert!(index.contains("11:45 GMT"), "{index}");
        assert!(index.contains(&format!("datetime=\"{}\"", iso(T0 + 105 * MIN))));
        assert!(index.contains(&format!("datetime=\"{}\"", iso(T0))));
        assert!(index.contains("2026-11-18 10:00 GMT"), "{index}");
        assert!(index.contains("Under maintenance"));
        assert!(index.contains("The service is unavailable"));
        assert!(index.contains("We have started."));
        // The timeline is newest first.
        let newer = index.find("second line").unwrap();
        let older = index.find("We have started.").unwrap();
        assert!(newer < older);
        assert!(index.contains("href=\"/maintenances/db-upgrade-20261118-100000-000\""));
    }

    #[test]
    fn the_html_is_csp_clean_and_well_formed_enough() {
        let streams = [
            running(),
            finished(
                "old-1",
                T0 - 5000 * MIN,
                Event::RunRolledBack { left: vec![] },
            ),
            finished(
                "old-2",
                T0 - 6000 * MIN,
                Event::RunFailed {
                    reason: "secret detail".into(),
                },
            ),
            notice("planned-1", T0 + 5000 * MIN),
        ];
        let (_, snap) = snap(&streams, T0 + 10 * MIN);
        for (path, asset) in &snap.assets {
            if asset.content_type != HTML {
                continue;
            }
            let text = std::str::from_utf8(&asset.body).unwrap();
            assert!(text.starts_with("<!doctype html>"), "{path}");
            assert!(text.contains("<html lang=\"en\">"), "{path}");
            assert!(text.contains("<meta charset=\"utf-8\">"), "{path}");
            assert!(text.contains("<meta name=\"viewport\""), "{path}");
            assert!(text.contains("<link rel=\"stylesheet\" href=\"/style.css\">"));
            assert!(text.contains("<script src=\"/app.js\" defer></script>"));
            assert!(text.contains("type=\"application/atom+xml\""));
            assert!(text.contains("href=\"/history.atom\""));
            assert!(text.contains("href=\"/history.rss\""));
            assert!(text.contains("href=\"/api/v2/summary.json\""));
            assert!(text.contains("<main id=\"content\""));
            assert!(text.contains("aria-live=\"polite\""));
            assert!(!text.contains("secret detail"), "{path}");
            // Only the one external script; no inline script, style or handler.
            assert_eq!(text.matches("<script").count(), 1, "{path}");
            assert!(!text.contains("<style"), "{path}");
            assert!(!text.contains("style="), "{path}");
            assert!(!text.contains(" onclick"), "{path}");
            assert!(!text.contains("javascript:"), "{path}");
            assert!(!text.contains("src=\"http"), "{path}: a third-party asset");
            assert!(!text.contains("href=\"http"), "{path}: a third-party asset");
            // Headings go down one level at a time.
            let mut last = 0;
            for level in (1..=6)
                .flat_map(|n| {
                    let tag = format!("<h{n}");
                    text.match_indices(&tag)
                        .map(|(i, _)| (i, n))
                        .collect::<Vec<_>>()
                })
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_values()
            {
                assert!(level <= last + 1, "{path}: h{level} after h{last}");
                last = level;
            }
            assert!(text.matches("<h1").count() == 1, "{path}");
        }
    }

    #[test]
    fn the_maintenance_page_says_how_it_ended() {
        let streams = [
            finished("rb", T0 - 5000 * MIN, Event::RunRolledBack { left: vec![] }),
            finished(
                "failed",
                T0 - 6000 * MIN,
                Event::RunFailed { reason: "x".into() },
            ),
        ];
        let (_, snap) = snap(&streams, T0);
        let rb = body(&snap, "/maintenances/rb");
        assert!(
            rb.contains("Rolled back: the work did not go as planned"),
            "{rb}"
        );
        assert!(rb.contains("the service was restored to how it was before"));
        assert!(rb.contains(&format!("datetime=\"{}\"", iso(T0 - 5000 * MIN + 2 * MIN))));
        let failed = body(&snap, "/maintenances/failed");
        assert!(failed.contains("Failed: the work could not be finished as planned"));
        assert!(failed.contains("<span class=\"chip chip-failed\">Failed</span>"));
        assert!(failed.contains("id=\"incident\""));
        assert!(failed.contains("Problem during maintenance: Old failed"));
        assert!(failed.contains("Investigating"));
        let index = body(&snap, "/");
        assert!(index.contains("Partial System Outage"));
        assert!(index.contains("href=\"/maintenances/failed#incident\""));
        assert!(index.contains("href=\"/history\""));
        let history = body(&snap, "/history");
        assert!(history.contains("href=\"/maintenances/rb\""));
        assert!(history.contains("href=\"/maintenances/failed#incident\""));
        // Newest first.
        assert!(history.find("Old rb").unwrap() < history.find("Old failed").unwrap());
    }

    #[test]
    fn the_front_page_lists_the_last_few_and_links_to_history() {
        let streams: Vec<Stream> = (0..8)
            .map(|n| {
                finished(
                    &format!("old-{n}"),
                    T0 - (n + 1) * 1000 * MIN,
                    Event::RunCompleted,
                )
            })
            .collect();
        let (_, snap) = snap(&streams, T0);
        let index = body(&snap, "/");
        assert!(index.contains("All Systems Operational"));
        assert!(index.contains("href=\"/maintenances/old-0\""));
        assert!(index.contains("href=\"/maintenances/old-4\""));
        assert!(!index.contains("href=\"/maintenances/old-5\""));
        let history = body(&snap, "/history");
        assert!(history.contains("href=\"/maintenances/old-7\""));
    }

    /// The badge's text, after checking what every badge has.
    fn badge_of(streams: &[Stream], now: i64) -> String {
        let (page, snap) = snap(streams, now);
        let asset = snap.get("/badge.svg").unwrap();
        assert_eq!(asset.last_modified, snapshot::http_date(page.updated_ms));
        let svg = body(&snap, "/badge.svg");
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.contains("<title>maintenance: "), "{svg}");
        svg.to_owned()
    }

    #[test]
    fn badge_states() {
        let none = badge_of(&[], T0);
        assert!(none.contains(">none<"), "{none}");
        assert!(none.contains("aria-label=\"maintenance: none\""));
        assert!(badge_of(&[notice("n", T0 + 5000 * MIN)], T0).contains(">scheduled<"));
        let active = badge_of(&[running(), notice("n", T0 + 5000 * MIN)], T0 + 10 * MIN);
        assert!(active.contains(">in progress<"), "{active}");
        // A run is verifying once its updates say so.
        let verifying = Stream::Run {
            id: "v".into(),
            events: vec![
                rec(1, T0, started("V", None, T0)),
                rec(
                    2,
                    T0 + MIN,
                    published("verifying", "verifying", "Checking.", None),
                ),
            ],
        };
        let v = badge_of(&[verifying], T0 + 10 * MIN);
        assert!(v.contains(">verifying<"), "{v}");
        let failed = || finished("f", T0 - 100 * MIN, Event::RunFailed { reason: "x".into() });
        assert!(badge_of(&[failed()], T0).contains(">incident<"));
        // An open incident says more than a maintenance next week.
        let both = badge_of(&[failed(), notice("n", T0 + 5000 * MIN)], T0);
        assert!(both.contains(">incident<"), "{both}");
    }

    #[test]
    fn status_words() {
        assert_eq!(status_label("in_progress"), "In progress");
        assert_eq!(status_label("investigating"), "Investigating");
        assert_eq!(status_label("some_new_thing"), "Some new thing");
        assert_eq!(status_label(""), "");
        assert_eq!(href("a b/ü"), "/maintenances/a%20b%2F%C3%BC");
    }
}
