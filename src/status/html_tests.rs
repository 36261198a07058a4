//! Tests of the status page's HTML (a child module of `status::html`).

use super::*;
use crate::engine::event::{Event, PublicPlan, PublicStep, PublicUpdate, Recorded};
use crate::status::model::{Announcement, NoticeEvent, NoticeRecorded, PageInfo, Stream, project};

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
        quiet_until_ms: None,
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
        rehearsal: false,
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
        limit: Vec::new(),
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
                estimate_ms: None,
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
                    quiet_until_ms: None,
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
    // The failed run left the service open: a minor incident, in Statuspage's words.
    assert!(index.contains("Minor Service Outage"));
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
    // `/api/v1/maintenance` says the same as the badge, an open incident included.
    let v1 = |streams: &[Stream], now: i64| -> String {
        let (page, _) = snap(streams, now);
        let api = crate::status::api::tests::rendered(&page);
        let v = crate::status::api::tests::get(&api, "/api/v1/maintenance");
        v["status"].as_str().unwrap().to_owned()
    };
    assert_eq!(v1(&[failed()], T0), "incident");
    assert_eq!(
        v1(&[failed(), notice("n", T0 + 5000 * MIN)], T0),
        "incident"
    );
    assert_eq!(
        v1(&[running(), notice("n", T0 + 5000 * MIN)], T0 + 10 * MIN),
        "in_progress"
    );
    assert_eq!(v1(&[notice("n", T0 + 5000 * MIN)], T0), "scheduled");
    assert_eq!(v1(&[], T0), "none");
}

#[test]
fn status_words() {
    assert_eq!(status_label("in_progress"), "In progress");
    assert_eq!(status_label("investigating"), "Investigating");
    assert_eq!(status_label("some_new_thing"), "Some new thing");
    assert_eq!(status_label(""), "");
    assert_eq!(href("a b/ü"), "/maintenances/a%20b%2F%C3%BC");
}

#[test]
fn the_running_step_shows_how_much_of_its_work_is_done() {
    let mut stream = running();
    if let Stream::Run { events, .. } = &mut stream {
        events.push(rec(
            10,
            T0 + 7 * MIN,
            Event::StepProgress {
                step: "s4".into(),
                done: 450,
                total: Some(1000),
                eta_ms: Some(T0 + 120 * MIN),
                what: "rows of `orders` backfilled".into(),
                cursor: None,
            },
        ));
    }
    let (_, snap) = snap(&[stream], T0 + 10 * MIN);
    let index = body(&snap, "/");
    assert!(
        index.contains("Step 4 of 9: Step title 4 (45% done)"),
        "{index}"
    );
    // What the work counts is not for customers.
    assert!(!index.contains("orders"), "{index}");
}
