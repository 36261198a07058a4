//! The status page: every endpoint and status code through the router (oneshot), over a
//! journal written by real runs of the binary; the admin API's refusals; escaping and
//! secrets in every public response; `schedule`; and one end-to-end run served on a
//! loopback port.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use runbook::status::follow::{Follower, render_if_changed};
use runbook::status::model::PageInfo;
use runbook::status::server::{Config, router};
use runbook::status::snapshot::Snapshot;
use runbook::store::Store;
use tokio::sync::watch;
use tower::ServiceExt;

use common::world::World;

const TOKEN: &str = "test-admin-token-0123456789";

/// A runbook with public and hidden steps, a close and a reopen.
const MAINTENANCE: &str = r#"
runbook: shop-upgrade
title: Shop upgrade
summary: We are upgrading the shop.
window: { timezone: Europe/London, duration: 1h }
status_page: { components: [web shop, api] }
steps:
  - { id: prepare, kind: patch, title: Prepare, expected: 1m, run: { shell: "true" } }
  - { id: internal, kind: patch, title: Internal thing, public: false, run: { shell: "true" } }
  - { id: close, kind: close, title: Close the shop }
  - { id: upgrade, kind: patch, title: Upgrade the shop, expected: 2m, run: { shell: "true" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#;

/// The page of `w`'s store as the server would have it now.
async fn snapshot(w: &World) -> (Store, Snapshot) {
    let store = Store::open(&w.store).await.unwrap();
    let mut f = Follower::default();
    f.refresh(&store).await.unwrap();
    let info = PageInfo {
        name: "Acme".into(),
        url: "https://status.example.com".into(),
        timezone: None,
    };
    let (snap, _) = render_if_changed(&f, &info, &Snapshot::default(), runbook::store::now_ms());
    (store, snap.expect("a first render"))
}

fn app(store: Store, snap: Snapshot, token: Option<&str>) -> axum::Router {
    let (_tx, rx) = watch::channel(Arc::new(snap));
    // The sender lives as long as the receiver needs it to for a oneshot.
    std::mem::forget(_tx);
    router(
        rx,
        Some(store),
        &Config {
            frame_ancestors: "'self' https://example.com".into(),
            admin_token: token.map(str::to_owned),
            allow_private_webhooks: false,
        },
    )
}

async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn completed_world() -> World {
    let w = World::sqlite();
    w.write("m.yaml", MAINTENANCE);
    let o = w.execute("m.yaml", "run-1");
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    w
}

#[tokio::test]
async fn every_public_endpoint_answers_with_its_type_and_headers() {
    let w = completed_world();
    let (store, snap) = snapshot(&w).await;
    let app = app(store, snap, None);
    let endpoints = [
        ("/", "text/html"),
        ("/history", "text/html"),
        ("/maintenances/run-1", "text/html"),
        ("/history.atom", "application/atom+xml"),
        ("/history.rss", "application/rss+xml"),
        ("/api/v2/summary.json", "application/json"),
        ("/api/v2/status.json", "application/json"),
        ("/api/v2/components.json", "application/json"),
        ("/api/v2/incidents.json", "application/json"),
        ("/api/v2/incidents/unresolved.json", "application/json"),
        ("/api/v2/scheduled-maintenances.json", "application/json"),
        (
            "/api/v2/scheduled-maintenances/upcoming.json",
            "application/json",
        ),
        (
            "/api/v2/scheduled-maintenances/active.json",
            "application/json",
        ),
        ("/api/v1/maintenance", "application/json"),
        ("/banner.js", "text/javascript"),
        ("/badge.svg", "image/svg+xml"),
        ("/style.css", "text/css"),
        ("/app.js", "text/javascript"),
        ("/favicon.svg", "image/svg+xml"),
        ("/maintenances/run-1/report.json", "application/json"),
    ];
    for (path, ty) in endpoints {
        let (status, h, body) = send(&app, get(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let ct = h[header::CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with(ty), "{path}: {ct}");
        assert!(!body.is_empty(), "{path}");
        assert!(h.contains_key(header::ETAG), "{path}");
        assert!(h.contains_key(header::LAST_MODIFIED), "{path}");
        let cc = h[header::CACHE_CONTROL].to_str().unwrap();
        assert!(cc.starts_with("public, max-age="), "{path}: {cc}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert!(h.contains_key(header::REFERRER_POLICY), "{path}");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(
            csp.contains("frame-ancestors 'self' https://example.com"),
            "{path}: {csp}"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{path}");
        if ty == "application/json" {
            let _: serde_json::Value = serde_json::from_str(&body).unwrap();
        }
    }
    // The completed run, as Statuspage says it.
    let (_, _, body) = send(&app, get("/api/v2/scheduled-maintenances.json")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let m = &v["scheduled_maintenances"][0];
    assert_eq!(m["id"], "run-1");
    assert_eq!(m["status"], "completed");
    assert_eq!(m["name"], "Shop upgrade");
    let bodies: Vec<&str> = m["incident_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["body"].as_str().unwrap())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("Step 3 of 4: Upgrade the shop")),
        "{bodies:?}"
    );
    assert!(
        !bodies.iter().any(|b| b.contains("Internal thing")),
        "{bodies:?}"
    );
    // The public part of the report, linked from the maintenance's page: public titles
    // only, nothing of the hidden step.
    let (_, _, page) = send(&app, get("/maintenances/run-1")).await;
    assert!(
        page.contains("href=\"/maintenances/run-1/report.json\""),
        "{page}"
    );
    let (_, _, report) = send(&app, get("/maintenances/run-1/report.json")).await;
    assert!(report.contains("Upgrade the shop"), "{report}");
    assert!(
        !report.contains("Internal thing") && !report.contains("\"internal\""),
        "{report}"
    );
    let (_, _, body) = send(&app, get("/api/v2/components.json")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web shop", "api"]);
    assert!(
        v["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "operational")
    );
}

#[tokio::test]
async fn conditional_requests_gzip_head_and_errors() {
    let w = completed_world();
    let (store, snap) = snapshot(&w).await;
    let app = app(store, snap, None);
    let (_, h, full) = send(&app, get("/")).await;
    let etag = h[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'), "a strong validator: {etag}");
    // 304 on If-None-Match, weak or strong, alone or in a list.
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"x\", {etag}"),
        "*".into(),
    ] {
        let req = Request::get("/")
            .header(header::IF_NONE_MATCH, &inm)
            .body(Body::empty())
            .unwrap();
        let (status, h, body) = send(&app, req).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{inm}");
        assert!(body.is_empty());
        assert_eq!(h[header::ETAG].to_str().unwrap(), etag);
    }
    let req = Request::get("/")
        .header(header::IF_NONE_MATCH, "\"other\"")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
    // If-Modified-Since, when no If-None-Match is sent.
    let lm = h[header::LAST_MODIFIED].to_str().unwrap().to_owned();
    let req = Request::get("/")
        .header(header::IF_MODIFIED_SINCE, &lm)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::NOT_MODIFIED);
    // gzip when asked, with its own validator; not when refused.
    let req = Request::get("/")
        .header(header::ACCEPT_ENCODING, "br, gzip;q=0.8")
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(res.headers()[header::VARY], "Accept-Encoding");
    let gz_etag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_ne!(gz_etag, etag);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
        .unwrap();
    assert_eq!(text, full);
    let req = Request::get("/")
        .header(header::ACCEPT_ENCODING, "gzip;q=0")
        .body(Body::empty())
        .unwrap();
    let (_, h, _) = send(&app, req).await;
    assert!(!h.contains_key(header::CONTENT_ENCODING));
    // HEAD: headers, no body.
    let (status, h, body) = send(
        &app,
        Request::head("/api/v2/summary.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert!(h.contains_key(header::ETAG));
    // Unknown pages: 404 (JSON under /api/).
    let (status, h, body) = send(&app, get("/api/v2/nope.json")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/api/v2/nope.json")
    );
    assert_eq!(
        send(&app, get("/maintenances/nope")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(send(&app, get("/nope")).await.0, StatusCode::NOT_FOUND);
    // Writes to the public side: 405 with Allow.
    let (status, h, body) = send(&app, Request::post("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(h[header::ALLOW].to_str().unwrap().contains("GET"));
    assert!(body.contains("read-only"));
    // CORS preflight.
    let (status, h, _) = send(
        &app,
        Request::options("/api/v2/summary.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    // The admin API answers GET with 405 and a JSON error.
    let (status, _, body) = send(&app, get("/api/v1/admin/updates")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.contains("POST"));
}

fn admin(path: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

async fn journal_len(store: &Store, run: &str) -> usize {
    store.load(run).await.unwrap().len()
}

#[tokio::test]
async fn the_admin_api_refuses_missing_wrong_and_empty_tokens_and_changes_nothing() {
    let w = World::sqlite();
    w.write(
        "wait.yaml",
        "runbook: gated\nsteps:\n  - { id: ok, kind: approve, title: Go ahead }\n",
    );
    let mut child = w
        .command(&[
            "execute",
            "wait.yaml",
            "--yes",
            "--now",
            "--run-id",
            "gated-1",
        ])
        .spawn()
        .unwrap();
    // Wait for the approval request.
    let store = Store::open(&w.store).await.unwrap();
    let t0 = Instant::now();
    loop {
        if let Ok(events) = store.load("gated-1").await
            && events
                .iter()
                .any(|r| r.event.kind() == "approval_requested")
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no approval request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (store, snap) = snapshot(&w).await;
    let before = journal_len(&store, "gated-1").await;
    let paths = [
        ("/api/v1/admin/updates", r#"{"body":"hello"}"#),
        ("/api/v1/admin/runs/gated-1/approve", "{}"),
        ("/api/v1/admin/runs/gated-1/reject", "{}"),
        ("/api/v1/admin/runs/gated-1/abort", "{}"),
    ];
    let on = app(store.clone(), snap.clone(), Some(TOKEN));
    let off = app(store.clone(), snap.clone(), None);
    for (path, body) in paths {
        for (app, token) in [
            (&on, None),
            (&on, Some("wrong")),
            (&on, Some("")),
            (&on, Some(&TOKEN[..TOKEN.len() - 1])),
            (&off, Some(TOKEN)),
            (&off, Some("")),
        ] {
            let (status, h, text) = send(app, admin(path, token, body)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {token:?}");
            assert!(h.contains_key(header::WWW_AUTHENTICATE));
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(v["error"]["message"].is_string(), "{text}");
        }
        // A Basic header is no bearer token either.
        let req = Request::post(path)
            .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
            .body(Body::from(body))
            .unwrap();
        assert_eq!(send(&on, req).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        journal_len(&store, "gated-1").await,
        before,
        "a refused request changed the journal"
    );

    // With the token: bad input gets a clear 4xx and changes nothing either.
    for (path, body, want) in [
        (
            "/api/v1/admin/updates",
            "{not json",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/admin/updates",
            r#"{"body":""}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/admin/updates",
            r#"{"body":"x","colour":"red"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/admin/updates",
            r#"{"body":"x","status":"exploded"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/admin/updates",
            r#"{"body":"x","status":"resolved"}"#,
            StatusCode::CONFLICT,
        ),
        (
            "/api/v1/admin/updates",
            r#"{"body":"x","maintenance":"nope"}"#,
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/admin/runs/nope/approve",
            "{}",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/admin/runs/gated-1/approve",
            r#"{"step":"nope"}"#,
            StatusCode::CONFLICT,
        ),
        (
            "/api/v1/admin/runs/gated-1/abort",
            r#"{"step":"ok"}"#,
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, _, text) = send(&on, admin(path, Some(TOKEN), body)).await;
        assert_eq!(status, want, "{path} {body}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{text}"
        );
    }
    assert_eq!(journal_len(&store, "gated-1").await, before);

    // A manual update lands in the run's journal and on the page.
    let (status, _, text) = send(
        &on,
        admin(
            "/api/v1/admin/updates",
            Some(TOKEN),
            r#"{"body":"Waiting for the go-ahead <b>now</b>.","by":"sam"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert_eq!(journal_len(&store, "gated-1").await, before + 1);
    let (_, snap) = snapshot(&w).await;
    let page = String::from_utf8_lossy(&snap.get("/").unwrap().body).into_owned();
    assert!(
        page.contains("Waiting for the go-ahead &lt;b&gt;now&lt;&#x2F;b&gt;.")
            || page.contains("Waiting for the go-ahead &lt;b&gt;now&lt;/b&gt;."),
        "{page}"
    );
    // Approve it through the API: the run completes.
    let (status, _, text) = send(
        &on,
        admin(
            "/api/v1/admin/runs/gated-1/approve",
            Some(TOKEN),
            r#"{"by":"sam"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let out = child.wait().unwrap();
    assert_eq!(out.code(), Some(0));
    // Now nothing waits, and the run has ended: conflicts.
    let (status, _, _) = send(
        &on,
        admin("/api/v1/admin/runs/gated-1/approve", Some(TOKEN), "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = send(
        &on,
        admin("/api/v1/admin/runs/gated-1/abort", Some(TOKEN), "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn runbook_text_is_escaped_and_secrets_never_reach_a_public_response() {
    let w = World::sqlite();
    let secret = "hunter2-very-secret-value";
    w.write(
        "evil.yaml",
        r#"
runbook: evil
title: 'Fix <script>alert("x")</script> & "quotes" \{{not a template}}'
summary: "<img src=x onerror=alert(1)> summary"
secrets: [DB_PASSWORD]
status_page: { components: ["<b>web</b>"] }
steps:
  - id: leak
    kind: patch
    title: "Step with <em>markup</em> 'single' \"double\""
    run: { shell: "echo password is $DB_PASSWORD; echo $DB_PASSWORD >&2; exit 1" }
    rollback: { shell: "true" }
"#,
    );
    let o = super_execute(&w, "evil.yaml", "evil-1", secret);
    assert_eq!(o.code, 3, "rolls back: {}\n{}", o.stdout, o.stderr);
    let (store, snap) = snapshot(&w).await;
    // The journal itself has the failure (masked), so the page had it to leak.
    let journal = serde_json::to_string(
        &store
            .load("evil-1")
            .await
            .unwrap()
            .iter()
            .map(|r| &r.event)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(journal.contains("step_failed"), "{journal}");
    assert!(!journal.contains(secret));
    for (path, asset) in &snap.assets {
        let body = String::from_utf8_lossy(&asset.body);
        assert!(!body.contains(secret), "{path} shows the secret");
        assert!(
            !body.contains("password is"),
            "{path} shows a step's output"
        );
        // JSON carries the text as written (its readers escape it where they show it).
        if asset.content_type.starts_with("application/json") {
            let _: serde_json::Value = serde_json::from_str(&body).unwrap();
            continue;
        }
        assert!(
            !body.contains("<script>alert"),
            "{path} has raw runbook markup"
        );
        assert!(
            !body.contains("<img src=x"),
            "{path} has raw runbook markup"
        );
        assert!(
            !body.contains("<em>markup"),
            "{path} has raw runbook markup"
        );
        assert!(!body.contains("<b>web"), "{path} has raw runbook markup");
    }
    let page =
        String::from_utf8_lossy(&snap.get("/maintenances/evil-1").unwrap().body).into_owned();
    assert!(page.contains("&lt;script&gt;"), "{page}");
    assert!(page.contains("{{not a template}}"), "{page}");
    let json = String::from_utf8_lossy(
        &snap
            .get("/api/v2/scheduled-maintenances.json")
            .unwrap()
            .body,
    )
    .into_owned();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["scheduled_maintenances"][0]["name"],
        "Fix <script>alert(\"x\")</script> & \"quotes\" {{not a template}}"
    );
    let atom = String::from_utf8_lossy(&snap.get("/history.atom").unwrap().body).into_owned();
    assert!(atom.contains("&lt;script&gt;"), "{atom}");
}

fn super_execute(w: &World, file: &str, run: &str, secret: &str) -> common::Output {
    let mut c = w.command(&["execute", file, "--yes", "--now", "--run-id", run]);
    c.env("DB_PASSWORD", secret);
    common::output_of(&mut c)
}

#[tokio::test]
async fn schedule_publishes_an_upcoming_maintenance_that_the_run_then_carries_out() {
    let w = World::sqlite();
    let start = (chrono::Utc::now() + chrono::Duration::hours(24)).format("%Y-%m-%dT%H:%M:00Z");
    let far = (chrono::Utc::now() + chrono::Duration::days(10)).format("%Y-%m-%dT%H:%M:00Z");
    let text = MAINTENANCE.replace(
        "window: { timezone: Europe/London, duration: 1h }",
        &format!("window: {{ start: \"{start}\", timezone: Europe/London, duration: 1h }}\nvars: {{ v: 1 }}"),
    );
    w.write(
        "m.yaml",
        &text.replace(
            "status_page: { components: [web shop, api] }",
            "status_page: { components: [web shop, api], announce_before: 48h }",
        ),
    );
    w.write(
        "later.yaml",
        &text
            .replace("runbook: shop-upgrade", "runbook: later")
            .replace(&start.to_string(), &far.to_string())
            .replace(
                "status_page: { components: [web shop, api] }",
                "status_page: { components: [api], announce_before: 48h }",
            ),
    );
    let o = w.run(&["schedule", "m.yaml"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.starts_with("scheduled maintenance shop-upgrade-"),
        "{}",
        o.stdout
    );
    // Again: nothing changes.
    let again = w.run(&["schedule", "m.yaml"]);
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("already scheduled"),
        "{}",
        again.stdout
    );
    // Announced in ten days minus 48 h: not shown yet.
    assert_eq!(w.run(&["schedule", "later.yaml"]).code, 0);
    let (_, snap) = snapshot(&w).await;
    let up: serde_json::Value = serde_json::from_slice(
        &snap
            .get("/api/v2/scheduled-maintenances/upcoming.json")
            .unwrap()
            .body,
    )
    .unwrap();
    let ms = up["scheduled_maintenances"].as_array().unwrap();
    assert_eq!(ms.len(), 1, "{up}");
    assert_eq!(ms[0]["status"], "scheduled");
    assert_eq!(ms[0]["name"], "Shop upgrade");
    let id = ms[0]["id"].as_str().unwrap().to_owned();
    // It is not a run: the run commands say so.
    for cmd in ["status", "resume", "abort"] {
        let o = w.run(&[cmd, &id]);
        assert_eq!(o.code, 1, "{cmd}");
        assert!(
            o.stderr.contains("is a scheduled maintenance"),
            "{cmd}: {}",
            o.stderr
        );
    }
    // Components stay operational while it is only scheduled.
    let comps: serde_json::Value =
        serde_json::from_slice(&snap.get("/api/v2/components.json").unwrap().body).unwrap();
    assert!(
        comps["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "operational"),
        "{comps}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&snap.get("/api/v1/maintenance").unwrap().body).unwrap();
    assert_eq!(status["status"], "scheduled");
    assert_eq!(status["closed"], false);
    // A run a day before the window (a drill, a preflight) leaves it scheduled.
    let o = w.execute("m.yaml", "drill-1");
    assert_eq!(o.code, 0, "{}", o.stderr);
    let (_, snap) = snapshot(&w).await;
    let up: serde_json::Value = serde_json::from_slice(
        &snap
            .get("/api/v2/scheduled-maintenances/upcoming.json")
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(up["scheduled_maintenances"][0]["id"], id.as_str(), "{up}");
    assert_eq!(
        up["scheduled_maintenances"][0]["status"], "scheduled",
        "{up}"
    );
    // A name that is not a waiting maintenance is refused before anything is written.
    let o = w.run(&[
        "execute",
        "m.yaml",
        "--yes",
        "--now",
        "--run-id",
        "wrong",
        "--maintenance",
        "nope",
    ]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("no scheduled maintenance `nope` of runbook `shop-upgrade`"),
        "{}",
        o.stderr
    );
    assert_eq!(w.run(&["status", "wrong"]).code, 1);
    // A run that names it carries it out.
    let o = w.run(&[
        "execute",
        "m.yaml",
        "--yes",
        "--now",
        "--run-id",
        "run-2",
        "--maintenance",
        &id,
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let (_, snap) = snapshot(&w).await;
    let all: serde_json::Value = serde_json::from_slice(
        &snap
            .get("/api/v2/scheduled-maintenances.json")
            .unwrap()
            .body,
    )
    .unwrap();
    let done: Vec<&serde_json::Value> = all["scheduled_maintenances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] == id.as_str())
        .collect();
    assert_eq!(done.len(), 1, "{all}");
    assert_eq!(done[0]["status"], "completed");
    let kinds = done[0]["incident_updates"].as_array().unwrap().len();
    assert!(kinds >= 4, "{all}");
    // Scheduling again after the run makes a new maintenance.
    let o = w.run(&["schedule", "m.yaml"]);
    assert_eq!(o.code, 0);
    let new_id = o
        .stdout
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':');
    assert!(
        o.stdout.starts_with("scheduled maintenance"),
        "{}",
        o.stdout
    );
    assert_ne!(new_id, id, "{}", o.stdout);
}

/// Each update lists the component changes it tells, as Statuspage does: the close's
/// update puts both components under maintenance, the reopen's brings them back; the
/// others change nothing.
#[tokio::test]
async fn each_update_lists_the_component_changes_it_tells() {
    let w = completed_world();
    let (store, snap) = snapshot(&w).await;
    let app = app(store, snap, None);
    let (_, _, body) = send(&app, get("/api/v2/scheduled-maintenances.json")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let updates = v["scheduled_maintenances"][0]["incident_updates"]
        .as_array()
        .unwrap();
    let changes: Vec<(String, String)> = updates
        .iter()
        .rev()
        .map(|u| {
            let c = match u["affected_components"].as_array() {
                None => "-".to_owned(),
                Some(cs) => cs
                    .iter()
                    .map(|c| {
                        assert_eq!(
                            c["code"],
                            runbook::status::model::slug(c["name"].as_str().unwrap())
                        );
                        format!(
                            "{}:{}>{}",
                            c["name"].as_str().unwrap(),
                            c["old_status"].as_str().unwrap(),
                            c["new_status"].as_str().unwrap()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            };
            (u["body"].as_str().unwrap().to_owned(), c)
        })
        .collect();
    let of = |title: &str| {
        &changes
            .iter()
            .find(|(b, _)| b.contains(title))
            .unwrap_or_else(|| panic!("no update of {title}: {changes:?}"))
            .1
    };
    assert_eq!(
        of("Close the shop"),
        "web shop:operational>under_maintenance,api:operational>under_maintenance",
        "{changes:?}"
    );
    assert_eq!(
        of("Reopen the shop"),
        "web shop:under_maintenance>operational,api:under_maintenance>operational",
        "{changes:?}"
    );
    let changed = changes.iter().filter(|(_, c)| c != "-").count();
    assert_eq!(changed, 2, "{changes:?}");
}

#[test]
fn schedule_refuses_a_runbook_without_a_window_and_bad_files() {
    let w = World::sqlite();
    w.write("m.yaml", MAINTENANCE);
    let o = w.run(&["schedule", "m.yaml"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("window.start"), "{}", o.stderr);
    w.write(
        "past.yaml",
        &MAINTENANCE.replace("window: {", "window: { start: \"2020-01-01T00:00:00Z\","),
    );
    let o = w.run(&["schedule", "past.yaml"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("ended"), "{}", o.stderr);
    w.write("bad.yaml", "runbook: x\nsteps: [ {id: a, kind: nope} ]\n");
    let o = w.run(&["schedule", "bad.yaml"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("bad.yaml:2:"), "{}", o.stderr);
    // Nothing was written for any of them: not even a store.
    assert!(!w.path("state/state.db").exists());
}

#[test]
fn serve_refuses_a_taken_address_and_bad_flags() {
    let w = World::sqlite();
    // A store in a directory that does not exist is a typo.
    let o = w.run(&["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("does not exist"), "{}", o.stderr);
    assert!(!w.path("state").exists());
    std::fs::create_dir(w.path("state")).unwrap();
    w.write("empty-token", "\n");
    let o = w.run(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--admin-token-file",
        "empty-token",
    ]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("is empty"), "{}", o.stderr);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = w.run(&["serve", "--addr", &addr]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains(&addr), "{}", o.stderr);
    let o = w.run(&["serve", "--timezone", "Mars/Olympus"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("IANA"), "{}", o.stderr);
    let o = w.run(&["serve", "--frame-ancestors", "'self'; script-src *"]);
    assert_eq!(o.code, 2);
    let o = w.run(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--admin-token-file",
        "/nonexistent/token",
    ]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("/nonexistent/token"), "{}", o.stderr);
    // execute --serve on a taken address starts no run.
    w.write("m.yaml", MAINTENANCE);
    let o = w.run(&["execute", "m.yaml", "--yes", "--now", "--serve", &addr]);
    assert_eq!(o.code, 1);
    assert!(
        w.run(&["runs"]).stdout.lines().count() <= 1,
        "a run was started"
    );
}

/// The whole thing on a loopback port: `execute --serve` while the run goes on, with a
/// person's update posted through the admin API while a step runs.
#[tokio::test]
async fn execute_serve_shows_the_run_live_on_a_loopback_port() {
    let w = World::sqlite();
    w.write(
        "slow.yaml",
        r#"
runbook: slow
title: Slow maintenance
status_page: { components: [web] }
steps:
  - { id: first, kind: patch, title: First part, expected: 5s, run: { shell: "sleep 1" } }
  - { id: close, kind: close, title: Close }
  - { id: second, kind: patch, title: Second part, expected: 2s, run: { shell: "sleep 4" } }
  - { id: reopen, kind: reopen, title: Reopen }
"#,
    );
    let addr = free_addr();
    let mut child = w
        .command(&[
            "execute",
            "slow.yaml",
            "--yes",
            "--now",
            "--serve",
            &addr,
            "--run-id",
            "slow-1",
        ])
        .env("RUNBOOK_ADMIN_TOKEN", TOKEN)
        .spawn()
        .unwrap();
    let client = client();
    let url = format!("http://{addr}/api/v1/maintenance");
    let t0 = Instant::now();
    let mut seen = false;
    while t0.elapsed() < Duration::from_secs(30) && !seen {
        if let Some(v) = get_json(&client, &url).await
            && v["closed"] == true
            && v["message"].as_str().unwrap_or("").contains("Second part")
        {
            seen = true;
            assert_eq!(v["status"], "in_progress");
            let c = get_json(&client, &format!("http://{addr}/api/v2/components.json"))
                .await
                .unwrap();
            assert_eq!(c["components"][0]["status"], "under_maintenance", "{c}");
            let html = client.get(format!("http://{addr}/")).send().await.unwrap();
            let html = html.text().await.unwrap();
            assert!(html.contains("Slow maintenance"), "{html}");
            assert!(html.contains("Second part"), "{html}");
            let r = client
                .post(format!("http://{addr}/api/v1/admin/updates"))
                .bearer_auth(TOKEN)
                .body(r#"{"body":"Half way there, all good."}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen,
        "the page never showed the second part with the service closed"
    );
    // The end of the run is on the page before the process stops serving.
    let mut completed = false;
    while t0.elapsed() < Duration::from_secs(30) {
        match get_json(&client, &url).await {
            Some(v) if v["status"] == "none" && v["closed"] == false => {
                completed = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(completed, "the page never showed the end");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let updates = published(&w, "slow-1").await;
    assert!(
        updates.contains(&"manual:Half way there, all good.".to_owned()),
        "{updates:?}"
    );
    // `second` ran past its expected 2 s: customers were told, once; `first` did not.
    let overruns: Vec<&String> = updates
        .iter()
        .filter(|k| k.starts_with("overrun:"))
        .collect();
    assert_eq!(overruns.len(), 1, "{updates:?}");
    assert!(
        overruns[0].contains("Second part is taking longer than expected"),
        "{updates:?}"
    );
    assert_eq!(
        updates.last().unwrap(),
        "completed:Slow maintenance is complete. Thank you for your patience."
    );
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let r = client.get(url).send().await.ok()?;
    serde_json::from_str(&r.text().await.ok()?).ok()
}

/// The public updates of a run, as `kind:body`.
async fn published(w: &World, run: &str) -> Vec<String> {
    updates_of(w, run)
        .await
        .into_iter()
        .map(|u| format!("{}:{}", u.kind, u.body))
        .collect()
}

/// Every public update of a run, oldest first.
async fn updates_of(w: &World, run: &str) -> Vec<runbook::engine::event::PublicUpdate> {
    let store = Store::open(&w.store).await.unwrap();
    store
        .load(run)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            runbook::engine::event::Event::Published(u) => Some(u),
            _ => None,
        })
        .collect()
}

/// `runbook serve` on PostgreSQL follows a run in another process (LISTEN/NOTIFY).
#[tokio::test]
async fn serve_on_postgres_follows_a_run_in_another_process() {
    let w = World::postgres();
    w.write(
        "m.yaml",
        &MAINTENANCE.replace(
            "title: Upgrade the shop, expected: 2m, run: { shell: \"true\" }",
            "title: Upgrade the shop, expected: 2m, run: { shell: \"sleep 2\" }",
        ),
    );
    let addr = free_addr();
    let mut server = w
        .command(&["serve", "--addr", &addr, "--page-name", "Acme"])
        .spawn()
        .unwrap();
    let client = client();
    let t0 = Instant::now();
    while client.get(format!("http://{addr}/")).send().await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the server never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut run = w
        .command(&["execute", "m.yaml", "--yes", "--now", "--run-id", "pg-1"])
        .spawn()
        .unwrap();
    let url = format!("http://{addr}/api/v1/maintenance");
    let mut statuses: Vec<String> = Vec::new();
    while t0.elapsed() < Duration::from_secs(40) {
        let v = get_json(&client, &url).await.unwrap();
        let s = format!("{}/{}", v["status"], v["closed"]);
        if statuses.last() != Some(&s) {
            statuses.push(s);
        }
        if v["status"] == "none" && run.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        statuses.contains(&"\"in_progress\"/true".to_owned()),
        "{statuses:?}"
    );
    assert_eq!(statuses.last().unwrap(), "\"none\"/false", "{statuses:?}");
    let page = client
        .get(format!("http://{addr}/maintenances/pg-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Upgrade the shop"));
    server.kill().unwrap();
    server.wait().unwrap();
    run.wait().unwrap();
}

/// A failed run opens an incident (major while it left the service closed), which a
/// person resolves through the admin API.
#[tokio::test]
async fn a_failed_run_opens_an_incident_that_the_admin_api_resolves() {
    let w = World::sqlite();
    w.write(
        "fail.yaml",
        r#"
runbook: doomed
title: Doomed upgrade
status_page: { components: [shop] }
steps:
  - { id: close, kind: close, title: Close the shop }
  - { id: change, kind: patch, title: Change things, run: { shell: "true" }, rollback: { shell: "exit 1" } }
  - { id: boom, kind: patch, title: Break, run: { shell: "exit 1" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#,
    );
    let o = w.execute("fail.yaml", "doomed-1");
    assert_eq!(o.code, 4, "{}\n{}", o.stdout, o.stderr);
    let (store, snap) = snapshot(&w).await;
    let json = |path: &str, snap: &Snapshot| -> serde_json::Value {
        serde_json::from_slice(&snap.get(path).unwrap().body).unwrap()
    };
    let open = json("/api/v2/incidents/unresolved.json", &snap);
    let incidents = open["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{open}");
    assert_eq!(incidents[0]["status"], "investigating");
    assert_eq!(incidents[0]["impact"], "major");
    assert_eq!(
        json("/api/v2/status.json", &snap)["status"]["indicator"],
        "major"
    );
    let comps = json("/api/v2/components.json", &snap);
    assert_eq!(comps["components"][0]["status"], "major_outage", "{comps}");
    // The service stays closed for load balancers and banners until someone says so.
    let m = json("/api/v1/maintenance", &snap);
    assert_eq!(m["status"], "incident", "{m}");
    assert_eq!(m["closed"], true, "{m}");
    assert!(
        m["message"].as_str().unwrap().contains("investigating"),
        "{m}"
    );
    // Resolved by a person.
    let app = app(store, snap, Some(TOKEN));
    let body = r#"{"maintenance":"doomed-1","status":"resolved","body":"The shop is back; we restored it by hand."}"#;
    let (status, _, text) = send(&app, admin("/api/v1/admin/updates", Some(TOKEN), body)).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let (_, snap) = snapshot(&w).await;
    let open = json("/api/v2/incidents/unresolved.json", &snap);
    assert!(open["incidents"].as_array().unwrap().is_empty(), "{open}");
    let all = json("/api/v2/incidents.json", &snap);
    assert_eq!(all["incidents"][0]["status"], "resolved");
    assert!(all["incidents"][0]["resolved_at"].is_string());
    assert_eq!(
        json("/api/v2/status.json", &snap)["status"]["indicator"],
        "none"
    );
    let comps = json("/api/v2/components.json", &snap);
    assert_eq!(comps["components"][0]["status"], "operational", "{comps}");
    let m = json("/api/v1/maintenance", &snap);
    assert_eq!(m["status"], "none", "{m}");
    assert_eq!(m["closed"], false, "{m}");
}

/// Public texts are rendered with the run's own values; an abort from another process
/// is announced; `schedule` refuses a secret in a public variable; the admin API's edges.
#[tokio::test]
async fn vars_in_public_text_abort_announced_and_secrets_masked_in_schedule() {
    let w = World::sqlite();
    let start = (chrono::Utc::now() + chrono::Duration::hours(5)).format("%Y-%m-%dT%H:%M:00Z");
    w.write(
        "m.yaml",
        &format!(
            r#"
runbook: gated
title: "Shop upgrade {{{{vars.version}}}}"
summary: "Version {{{{vars.version}}}} comes out."
window: {{ start: "{start}", duration: 1h }}
vars: {{ version: "1.0" }}
secrets: [DB_PASSWORD]
status_page: {{ components: [shop] }}
steps:
  - {{ id: close, kind: close, title: Close the shop }}
  - {{ id: go, kind: approve, title: Go or no go }}
  - {{ id: reopen, kind: reopen, title: Reopen }}
"#
        ),
    );
    // `schedule` with a secret passed as a var that public text uses: refused.
    let mut c = w.command(&["schedule", "m.yaml", "--var", "version=hunter2-secret"]);
    c.env("DB_PASSWORD", "hunter2-secret");
    let o = common::output_of(&mut c);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("--var version"), "{}", o.stderr);
    let (_, snap) = snapshot(&w).await;
    for (path, a) in &snap.assets {
        let body = String::from_utf8_lossy(&a.body);
        assert!(!body.contains("hunter2-secret"), "{path}");
    }
    // A run with `--var version=3.2`, aborted while it waits with the service closed.
    let mut child = w
        .command(&[
            "execute",
            "m.yaml",
            "--yes",
            "--now",
            "--run-id",
            "g-1",
            "--var",
            "version=3.2",
        ])
        .env("DB_PASSWORD", "hunter2-secret")
        .spawn()
        .unwrap();
    let store = Store::open(&w.store).await.unwrap();
    let t0 = Instant::now();
    while !store
        .load("g-1")
        .await
        .is_ok_and(|e| e.iter().any(|r| r.event.kind() == "approval_requested"))
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w.run(&["abort", "g-1", "--by", "sam"]).code, 0);
    assert_eq!(child.wait().unwrap().code(), Some(4));
    let updates = published(&w, "g-1").await;
    assert!(
        updates.iter().any(|u| u.starts_with("aborted:")),
        "{updates:?}"
    );
    let (_, snap) = snapshot(&w).await;
    let all: serde_json::Value = serde_json::from_slice(
        &snap
            .get("/api/v2/scheduled-maintenances.json")
            .unwrap()
            .body,
    )
    .unwrap();
    let m = &all["scheduled_maintenances"][0];
    assert_eq!(m["name"], "Shop upgrade 3.2", "{all}");
    let v: serde_json::Value =
        serde_json::from_slice(&snap.get("/api/v1/maintenance").unwrap().body).unwrap();
    assert_eq!(
        (&v["closed"], &v["status"]),
        (&true.into(), &"incident".into()),
        "{v}"
    );
    let inc: serde_json::Value =
        serde_json::from_slice(&snap.get("/api/v2/incidents/unresolved.json").unwrap().body)
            .unwrap();
    assert_eq!(
        inc["incidents"][0]["incident_updates"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{inc}"
    );

    // The admin API: unknown endpoints are 404, the scheme is case-insensitive, and a
    // body too large is refused in JSON (after the token check).
    let app = app(store, snap, Some(TOKEN));
    let (status, _, text) = send(&app, admin("/api/v1/admin/nope", Some(TOKEN), "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let req = Request::post("/api/v1/admin/updates")
        .header(header::AUTHORIZATION, format!("BEARER {TOKEN}"))
        .body(Body::from("{not json"))
        .unwrap();
    let (status, _, text) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(text.matches("line 1").count(), 1, "{text}");
    let big = "x".repeat(3 << 20);
    let (status, _, _) = send(&app, admin("/api/v1/admin/updates", None, &big)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, h, text) = send(&app, admin("/api/v1/admin/updates", Some(TOKEN), &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

/// An abort from the CLI or from the admin API tells customers with the template context
/// the runner uses: an `aborted` template with `{{window.end}}` shows the window's end.
#[tokio::test]
async fn an_abort_renders_the_window_in_the_aborted_update_from_the_cli_and_the_api() {
    let w = World::sqlite();
    w.write(
        "m.yaml",
        r#"
runbook: windowed
title: Windowed
window: { timezone: Europe/London, duration: 1h }
status_page:
  components: [shop]
  updates: { aborted: "Stopped. The window was to end at {{window.end}}." }
steps:
  - { id: go, kind: approve, title: Go or no go }
"#,
    );
    // The run's window opens when it starts, and lasts an hour.
    let store = Store::open(&w.store).await.unwrap();
    let expected = |run: &str| {
        let store = store.clone();
        let run = run.to_owned();
        async move {
            let start = store.load(&run).await.unwrap()[0].at_ms;
            let end = runbook::duration::local(start + 3_600_000, chrono_tz::Europe::London);
            assert!(!end.is_empty());
            format!("aborted:Stopped. The window was to end at {end}.")
        }
    };
    let waiting = |run: &'static str| {
        let child = w
            .command(&["execute", "m.yaml", "--yes", "--now", "--run-id", run])
            .spawn()
            .unwrap();
        let store = store.clone();
        async move {
            let t0 = Instant::now();
            while !store
                .load(run)
                .await
                .is_ok_and(|e| e.iter().any(|r| r.event.kind() == "approval_requested"))
            {
                assert!(t0.elapsed() < Duration::from_secs(30));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            child
        }
    };

    let mut child = waiting("w-cli").await;
    assert_eq!(w.run(&["abort", "w-cli", "--by", "sam"]).code, 0);
    assert_eq!(child.wait().unwrap().code(), Some(4));
    let updates = published(&w, "w-cli").await;
    assert!(updates.contains(&expected("w-cli").await), "{updates:?}");

    let mut child = waiting("w-api").await;
    let (_, snap) = snapshot(&w).await;
    let api = app(store.clone(), snap, Some(TOKEN));
    let abort = admin("/api/v1/admin/runs/w-api/abort", Some(TOKEN), "{}");
    let (status, _, text) = send(&api, abort).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(child.wait().unwrap().code(), Some(4));
    let updates = published(&w, "w-api").await;
    assert!(updates.contains(&expected("w-api").await), "{updates:?}");
}

/// `runbook serve` answers from the store from its very first answer: a client that
/// polls as soon as the port takes a connection never sees the `404` of a page not yet
/// rendered (a Statuspage client reports that as a configuration error).
#[tokio::test]
async fn serve_answers_from_the_store_from_its_first_connection_on() {
    let w = World::sqlite();
    // One runbook per writer: a runbook runs once at a time.
    for t in 0..4 {
        w.write(
            &format!("tiny{t}.yaml"),
            &format!(
                "runbook: tiny{t}\ntitle: Tiny change\nsteps:\n  - {{ id: a, kind: patch, run: {{ shell: \"true\" }} }}\n"
            ),
        );
    }
    w.write(
        "broken.yaml",
        "runbook: broken\ntitle: Broken change\nsteps:\n  - { id: a, kind: patch, run: { shell: \"true\" }, rollback: { shell: \"exit 1\" } }\n  - { id: b, kind: patch, run: { shell: \"exit 1\" } }\n",
    );
    // 150 real runs, a few at a time; the last one fails (its undo fails too) and opens
    // an incident, which the summary shows.
    std::thread::scope(|s| {
        for t in 0..4 {
            let w = &w;
            s.spawn(move || {
                for i in (t..149).step_by(4) {
                    let o = w.execute(&format!("tiny{t}.yaml"), &format!("tiny-{i}"));
                    assert_eq!(o.code, 0, "{}", o.stderr);
                }
            });
        }
    });
    assert_eq!(w.execute("broken.yaml", "broken-1").code, 4);
    let addr = free_addr();
    let _server = Killed(
        w.command(&["serve", "--addr", &addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the server never listened"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let client = client();
    let first = client
        .get(format!("http://{addr}/api/v2/summary.json"))
        .send()
        .await
        .unwrap();
    let status = first.status();
    let body = first.text().await.unwrap();
    assert_eq!(status, 200, "the first answer: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["incidents"][0]["id"], "inc-broken-1", "{v}");
    let all = get_json(
        &client,
        &format!("http://{addr}/api/v2/scheduled-maintenances.json"),
    )
    .await
    .unwrap();
    assert_eq!(
        all["scheduled_maintenances"].as_array().unwrap().len(),
        50,
        "{all}"
    );
    for run in ["tiny-0", "tiny-148", "broken-1"] {
        let page = client
            .get(format!("http://{addr}/maintenances/{run}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{run}");
    }
}

/// A process of the test, killed when the test ends (or fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bodies of the public updates of maintenance `id`, as the JSON API shows them.
fn update_bodies(snap: &Snapshot, id: &str) -> Vec<String> {
    let all: serde_json::Value = serde_json::from_slice(
        &snap
            .get("/api/v2/scheduled-maintenances.json")
            .unwrap()
            .body,
    )
    .unwrap();
    let m = all["scheduled_maintenances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no maintenance {id}: {all}"));
    m["incident_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["body"].as_str().unwrap().to_owned())
        .collect()
}

/// A rollback tells customers why: a person said no (`no_go`), the run stopped before
/// changing anything (`stopped_before_changes`), or changes are being undone
/// (`rolling_back`); a runbook's own `no_go` text replaces the default.
#[tokio::test]
async fn each_kind_of_rollback_publishes_its_own_update() {
    let w = World::sqlite();
    w.write(
        "nogo.yaml",
        r#"
runbook: nogo
title: Shop upgrade
steps:
  - { id: close, kind: close, title: Close the shop }
  - { id: change, kind: patch, title: Change things, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: go, kind: approve, title: Go or no go }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#,
    );
    w.write(
        "early.yaml",
        r#"
runbook: early
title: Shop upgrade
steps:
  - { id: close, kind: close, title: Close the shop }
  - id: change
    kind: migrate
    title: Change things
    preconditions: [{ shell: "exit 1", message: the replica has caught up }]
    run: { shell: "true" }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#,
    );
    w.write(
        "late.yaml",
        r#"
runbook: late
title: Shop upgrade
steps:
  - { id: close, kind: close, title: Close the shop }
  - { id: change, kind: patch, title: Change things, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: boom, kind: patch, title: Break, run: { shell: "exit 1" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#,
    );
    w.write(
        "waited.yaml",
        r#"
runbook: waited
title: Shop upgrade
status_page:
  updates: { no_go: "Nobody said go for {{title}}, so it does not happen." }
steps:
  - { id: go, kind: approve, title: Go or no go, timeout: 1s }
  - { id: change, kind: patch, title: Change things, run: { shell: "true" } }
"#,
    );
    // Rejected from another process while it waits.
    let mut child = w
        .command(&[
            "execute",
            "nogo.yaml",
            "--yes",
            "--now",
            "--run-id",
            "nogo-1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = Store::open(&w.store).await.unwrap();
    let t0 = Instant::now();
    while !store
        .load("nogo-1")
        .await
        .is_ok_and(|e| e.iter().any(|r| r.event.kind() == "approval_requested"))
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = w.run(&["reject", "nogo-1", "go", "--by", "sam"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(child.wait().unwrap().code(), Some(3));
    for (file, run) in [
        ("early.yaml", "early-1"),
        ("late.yaml", "late-1"),
        ("waited.yaml", "waited-1"),
    ] {
        let o = w.execute(file, run);
        assert_eq!(o.code, 3, "{run}: {}\n{}", o.stdout, o.stderr);
    }
    let (_, snap) = snapshot(&w).await;
    let no_go = "We have decided not to go ahead with the maintenance, so we are undoing any \
                 changes made so far. The service will come back as it was before the maintenance.";
    let before_changes = "We stopped the maintenance before making any changes, as something \
                          was not ready for it. The service stays as it was before the maintenance.";
    let rolling_back = "Something did not go as planned, so we are undoing the changes made so \
                        far. The service will come back as it was before the maintenance.";
    let own = "Nobody said go for Shop upgrade, so it does not happen.";
    for (run, kind, text) in [
        ("nogo-1", "no_go", no_go),
        ("early-1", "stopped_before_changes", before_changes),
        ("late-1", "rolling_back", rolling_back),
        ("waited-1", "no_go", own),
    ] {
        // Recorded in the journal with its kind, once, and nothing of the other kinds.
        let updates = published(&w, run).await;
        let rollbacks: Vec<&String> = updates
            .iter()
            .filter(|u| {
                ["no_go:", "stopped_before_changes:", "rolling_back:"]
                    .iter()
                    .any(|k| u.starts_with(k))
            })
            .collect();
        assert_eq!(rollbacks, [&format!("{kind}:{text}")], "{run}: {updates:?}");
        // And on the page.
        let bodies = update_bodies(&snap, run);
        assert!(bodies.iter().any(|b| b == text), "{run}: {bodies:?}");
    }
}

/// A store that fails under a running `runbook serve` (its SQLite file truncated) is not
/// a conflict: the admin API answers 503 with a generic message, and the real error goes
/// to the server's standard error only.
#[tokio::test]
async fn a_store_outage_answers_503_and_the_real_error_stays_in_the_log() {
    let w = World::sqlite();
    w.write("m.yaml", MAINTENANCE);
    let o = w.execute("m.yaml", "shop-1");
    assert_eq!(o.code, 0, "{}", o.stderr);
    let addr = free_addr();
    let log = std::fs::File::create(w.path("serve.err")).unwrap();
    let server = Killed(
        w.command(&["serve", "--addr", &addr])
            .env("RUNBOOK_ADMIN_TOKEN", TOKEN)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let client = client();
    let t0 = Instant::now();
    let page = format!("http://{addr}/api/v2/scheduled-maintenances.json");
    while get_json(&client, &page)
        .await
        .is_none_or(|v| v["scheduled_maintenances"][0]["id"] != "shop-1")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the server never showed the run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |body: &'static str| {
        client
            .post(format!("http://{addr}/api/v1/admin/updates"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post(r#"{"maintenance":"shop-1","body":"All is well."}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // The store's file is cut short under the server.
    let db = w.store.strip_prefix("sqlite://").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .unwrap()
        .set_len(0)
        .unwrap();
    let r = post(r#"{"maintenance":"shop-1","body":"Still well."}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "error": { "status": 503, "message": "the store is unavailable; try again" } })
    );
    drop(server);
    let log = std::fs::read_to_string(w.path("serve.err")).unwrap();
    assert!(
        log.contains("admin API: the store `") && log.contains("is damaged"),
        "{log}"
    );
}

/// The public updates of a run, as `kind:status`.
async fn published_statuses(w: &World, run: &str) -> Vec<String> {
    updates_of(w, run)
        .await
        .into_iter()
        .map(|u| format!("{}:{}", u.kind, u.status))
        .collect()
}

/// By default subscribers hear of the work, not of every check: a step's start is
/// published for the steps that change something, the close and the reopen, and a step
/// that wrote its own `started` text; backups, checks, approvals and waits stay quiet.
#[tokio::test]
async fn only_the_steps_that_change_something_announce_their_start() {
    let w = World::sqlite();
    w.write(
        "q.yaml",
        r#"
runbook: quiet-checks
title: Shop upgrade
window: { timezone: Europe/London, duration: 1h }
status_page: { components: [web shop] }
steps:
  - { id: pre, kind: test, title: Pre-check, run: { shell: "true" } }
  - { id: dump, kind: backup, title: Back up, run: { shell: "true" } }
  - { id: pause, kind: wait, title: Settle, interval: 10ms, until: [{ shell: "true" }] }
  - { id: close, kind: close, title: Close the shop }
  - { id: patch, kind: patch, title: Patch, run: { shell: "true" } }
  - id: told
    kind: test
    title: Told check
    public: { started: "Checking the orders now." }
    run: { shell: "true" }
  - { id: fix, kind: install, title: Install, run: { shell: "true" } }
  - { id: smoke, kind: test, title: Smoke test, run: { shell: "true" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#,
    );
    let o = w.execute("q.yaml", "q-1");
    assert_eq!(o.code, 0, "{}", o.stderr);
    let started: Vec<String> = updates_of(&w, "q-1")
        .await
        .into_iter()
        .filter(|u| u.kind == "step_started" || u.kind == "verifying")
        .map(|u| format!("{}:{}", u.kind, u.step.unwrap_or_default()))
        .collect();
    assert_eq!(
        started,
        [
            "step_started:close",
            "step_started:patch",
            "step_started:told",
            "step_started:fix",
            "verifying:smoke",
            "step_started:reopen"
        ]
    );
}

/// A maintenance goes to verifying once: at the first check after the plan's last change
/// (a hidden one counts), not for the backup's verify before the changes, and it stays
/// verifying through the reopen until it completes.
#[tokio::test]
async fn a_maintenance_goes_to_verifying_once_after_the_last_change() {
    let w = World::sqlite();
    w.write(
        "v.yaml",
        r#"
runbook: verify-once
title: Shop upgrade
window: { timezone: Europe/London, duration: 1h }
status_page: { components: [web shop] }
steps:
  - { id: check-backup, kind: verify, title: Check the backup, run: { shell: "true" } }
  - { id: close, kind: close, title: Close the shop }
  - { id: one, kind: patch, title: First patch, run: { shell: "true" } }
  - { id: between, kind: test, title: Check between, run: { shell: "true" } }
  - { id: two, kind: patch, title: Second patch, run: { shell: "true" } }
  - { id: hidden, kind: test, public: false, run: { shell: "true" } }
  - { id: smoke, kind: test, title: Smoke test, run: { shell: "true" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#,
    );
    let o = w.execute("v.yaml", "v-1");
    assert_eq!(o.code, 0, "{}", o.stderr);
    let got = published_statuses(&w, "v-1").await;
    let statuses: Vec<&str> = got.iter().map(|s| s.split(':').nth(1).unwrap()).collect();
    let first = statuses
        .iter()
        .position(|s| *s == "verifying")
        .expect("verifying");
    let last = statuses.iter().rposition(|s| *s == "verifying").unwrap();
    assert!(
        statuses[first..=last].iter().all(|s| *s == "verifying"),
        "verifying once: {got:?}"
    );
    assert_eq!(got[first], "verifying:verifying", "{got:?}");
    // Everything before it is the work: the backup check and the check between are in
    // progress; the hidden check made the smoke test's update the first verifying one.
    let kinds: Vec<&str> = got.iter().map(|s| s.split(':').next().unwrap()).collect();
    assert_eq!(
        statuses[..first]
            .iter()
            .filter(|s| **s == "verifying")
            .count(),
        0
    );
    assert!(
        got.iter().any(|s| s == "step_started:in_progress"),
        "{got:?}"
    );
    assert_eq!(statuses.last(), Some(&"completed"), "{got:?}");
    assert_eq!(
        statuses[statuses.len() - 2],
        "verifying",
        "the reopen: {got:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "verifying").count(),
        1,
        "{got:?}"
    );
}

/// `execute --rehearsal` runs for real and is journaled, but customers hear nothing of it:
/// no update, no maintenance on the page, no incident when it fails, no component
/// changed; its report says it was a rehearsal. It does not carry out a scheduled
/// maintenance.
#[tokio::test]
async fn a_rehearsal_runs_for_real_and_tells_customers_nothing() {
    let w = World::sqlite();
    let failing = MAINTENANCE.replace(
        "title: Upgrade the shop, expected: 2m, run: { shell: \"true\" }",
        "title: Upgrade the shop, expected: 2m, run: { shell: \"echo ran >> markers; exit 1\" }",
    );
    w.write("m.yaml", &failing);
    let o = w.run(&[
        "execute",
        "m.yaml",
        "--yes",
        "--now",
        "--run-id",
        "r-1",
        "--rehearsal",
    ]);
    assert_ne!(o.code, 0, "{}", o.stderr);
    assert_eq!(w.markers(), ["ran"], "it ran for real");
    assert_eq!(published(&w, "r-1").await, Vec::<String>::new());
    let (_, snap) = snapshot(&w).await;
    let json = |path: &str| -> serde_json::Value {
        serde_json::from_slice(&snap.get(path).unwrap().body).unwrap()
    };
    let summary = json("/api/v2/summary.json");
    assert_eq!(summary["incidents"], serde_json::json!([]), "{summary}");
    assert_eq!(
        summary["scheduled_maintenances"],
        serde_json::json!([]),
        "{summary}"
    );
    assert_eq!(summary["status"]["indicator"], "none", "{summary}");
    assert!(
        summary["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "operational"),
        "{summary}"
    );
    assert_eq!(json("/api/v1/maintenance")["closed"], false);
    let o = w.run(&["report", "r-1", "--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(r["run"]["rehearsal"], true);
    let o = w.run(&["report", "r-1", "--format", "md"]);
    assert!(o.stdout.contains("a rehearsal"), "{}", o.stdout);
    // A rehearsal and a maintenance are not both asked for.
    let o = w.run(&[
        "execute",
        "m.yaml",
        "--yes",
        "--now",
        "--rehearsal",
        "--maintenance",
        "x",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
}

/// The public updates of a run, as (kind, ETA).
async fn published_etas(w: &World, run: &str) -> Vec<(String, Option<i64>)> {
    updates_of(w, run)
        .await
        .into_iter()
        .map(|u| (u.kind, u.eta_ms))
        .collect()
}

/// `runbook update RUN TEXT --eta T` is a person's word: automatic updates after it never
/// say an earlier ETA. `--quiet FOR` mutes the step texts, not the end. Bad input is
/// refused with exit 1 and writes nothing.
#[tokio::test]
async fn a_persons_eta_stands_and_quiet_mutes_step_texts() {
    let w = World::sqlite();
    w.write(
        "u.yaml",
        r#"
runbook: person
title: Shop upgrade
window: { timezone: Europe/London, duration: 1h }
status_page: { components: [web shop] }
steps:
  - { id: close, kind: close, title: Close the shop }
  - { id: go, kind: approve, title: Decide }
  - { id: one, kind: patch, title: First patch, expected: 1m, run: { shell: "true" } }
  - { id: two, kind: patch, title: Second patch, expected: 1m, run: { shell: "true" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#,
    );
    let run = |id: &str| {
        w.command(&["execute", "u.yaml", "--yes", "--now", "--run-id", id])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut runner = run("p-1");
    crate::engine::wait_for_status(&w, "p-1", "awaiting_approval", &mut runner);
    let said = chrono::Utc::now() + chrono::Duration::hours(8);
    let eta = said.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // Bad input first: nothing is written.
    let before = published_etas(&w, "p-1").await.len();
    for (args, why) in [
        (vec!["--eta", "tonight"], "is not a time"),
        (vec!["--eta", "2020-01-01T00:00:00Z"], "has passed"),
        (vec!["--quiet", "forever"], "is not a duration"),
        (vec!["--status", "completed"], "its run decides that"),
    ] {
        let mut a = vec!["update", "p-1", "Slower than planned"];
        a.extend(args.iter().copied());
        let o = w.run(&a);
        assert_eq!(o.code, 1, "{a:?}: {}", o.stderr);
        assert!(o.stderr.contains(why), "{a:?}: {}", o.stderr);
    }
    let o = w.run(&["update", "nope", "x"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(published_etas(&w, "p-1").await.len(), before);
    // A person says 8 hours.
    let o = w.run(&[
        "update",
        "p-1",
        "This will take 2 to 8 hours.",
        "--eta",
        &eta,
        "--by",
        "alice",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("published on maintenance"),
        "{}",
        o.stdout
    );
    assert_eq!(w.run(&["approve", "p-1", "go"]).code, 0);
    assert_eq!(runner.wait().unwrap().code(), Some(0));
    let got = published_etas(&w, "p-1").await;
    let manual = got
        .iter()
        .position(|(k, _)| k == "manual")
        .expect("the update");
    assert_eq!(got[manual].1, Some(said.timestamp() * 1000), "{got:?}");
    let later: Vec<_> = got[manual + 1..]
        .iter()
        .filter(|(_, e)| e.is_some())
        .collect();
    assert!(!later.is_empty(), "{got:?}");
    for (kind, e) in later {
        assert!(
            e.unwrap() >= said.timestamp() * 1000,
            "{kind} said an earlier ETA than the person: {got:?}"
        );
    }
    // Quiet: the step texts wait, the end is said.
    let mut runner = run("p-2");
    crate::engine::wait_for_status(&w, "p-2", "awaiting_approval", &mut runner);
    let o = w.run(&["update", "p-2", "Working on it.", "--quiet", "1h"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(w.run(&["approve", "p-2", "go"]).code, 0);
    assert_eq!(runner.wait().unwrap().code(), Some(0));
    let got = published_etas(&w, "p-2").await;
    let kinds: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let manual = kinds.iter().position(|k| *k == "manual").unwrap();
    assert_eq!(kinds[manual + 1..], ["completed"], "{kinds:?}");
}
