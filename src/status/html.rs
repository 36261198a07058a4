//! The status page's HTML, its static files (CSS, the live-update script, the
//! embeddable banner) and the badge, rendered once per change into the snapshot.
//!
//! Templates live in `templates/pages/` and the static files in `web/`, both embedded in
//! the binary. The context is built here as JSON with every time already written out, so
//! the templates hold no logic beyond `if` and `each`; everything that comes from a
//! runbook or a person goes through handlebars' HTML escaping (`{{ }}`, never `{{{ }}}`).

use std::sync::LazyLock;

use chrono_tz::Tz;
use handlebars::Handlebars;
use serde_json::{Value, json};

use super::model::{Incident, Maintenance, MaintenanceStatus, Outcome, Page, Update, iso, local};
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
    (
        "subscribe",
        include_str!("../../templates/pages/subscribe.hbs"),
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
    snap.insert(
        "/subscribe",
        Asset::new(
            HTML,
            subscribe_page(page, &SubscribePage::default()),
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

/// What a subscribe page says: the form (nothing said yet), or what was done.
#[derive(Debug, Default)]
pub struct SubscribePage {
    pub heading: Option<String>,
    pub message: Option<String>,
    pub error: bool,
    /// Show the form again (the first visit, or after a mistake).
    pub form: bool,
    /// A new webhook's signing secret, shown once.
    pub secret: Option<String>,
    /// An unsubscribe button for this token (an unsubscribe link opened by hand).
    pub unsubscribe_token: Option<String>,
}

/// The subscribe page: the form of the page's components, or what subscribing did.
pub fn subscribe_page(page: &Page, p: &SubscribePage) -> String {
    let heading = p
        .heading
        .clone()
        .unwrap_or_else(|| "Subscribe to updates".into());
    let components: Vec<&str> = page.components.iter().map(|c| c.name.as_str()).collect();
    let ctx = json!({
        "site": site(page, format!("{heading} · {}", page.info.name)),
        "heading": heading,
        "message": p.message,
        "error": p.error,
        "form": p.form || (p.message.is_none() && p.secret.is_none()),
        "secret": p.secret,
        "components": components,
        "unsubscribe_token": p.unsubscribe_token,
    });
    html("subscribe", &ctx)
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
            let done = p
                .step_percent
                .map(|pc| format!(" ({pc}% done)"))
                .unwrap_or_default();
            let text = match p.step_title.as_deref() {
                Some(title) => format!("Step {} of {}: {title}{done}", p.current, p.total),
                None => format!("Step {} of {}{done}", p.current, p.total),
            };
            json!({
                "text": text,
                "current": p.current,
                "total": p.total.max(p.current),
                "percent": p.step_percent,
            })
        });
    let eta = m
        .eta_shown(page.now_ms)
        .map_or(Value::Null, |ms| near_time(ms, page.now_ms, zone));
    let outcome = m.outcome.map_or(
        Value::Null,
        |o| json!({ "key": outcome_key(o), "label": o.label(), "text": outcome_text(o) }),
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
        "late": m.late(page.now_ms),
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
    m.outcome.map_or(m.status.label(), Outcome::label)
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
    json!({ "iso": iso(ms), "text": crate::duration::near(ms, reference, zone) })
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
    // The badge says what `/api/v1/maintenance` says.
    match page.headline().status {
        "in_progress" => ("in progress", "#9a4a00"),
        "verifying" => ("verifying", "#9a4a00"),
        "incident" => ("incident", "#b42318"),
        "unknown" => ("unknown", "#b42318"),
        "scheduled" => ("scheduled", "#0b5cad"),
        _ => ("none", "#2b7a3d"),
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
#[path = "html_tests.rs"]
mod tests;
