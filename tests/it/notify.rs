//! Notifications, end to end with real receivers on loopback: a real SMTP server
//! (Python's aiosmtpd, `scripts/smtp-sink.py`), real HTTP receivers
//! (`scripts/webhook-sink.py`) and a local stand-in of Statuspage's manage API with its
//! rate limit (`scripts/fake-statuspage.py`), against `runbook serve` and `execute`
//! processes. `scripts/test-tools.sh aiosmtpd` installs aiosmtpd when it is missing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

use crate::common::world::World;
use crate::common::{Output, root};

const TOKEN: &str = "notify-test-token";

/// A helper process, killed when the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: i32) {
        // SAFETY: signalling a child this test started.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }
}

/// `target/pyenv/bin/python` with aiosmtpd, installed when missing.
fn python() -> PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let python = root().join("target/pyenv/bin/python");
    ONCE.call_once(|| {
        let ok = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let status = Command::new("bash")
                .arg(root().join("scripts/test-tools.sh"))
                .arg("aiosmtpd")
                .status()
                .expect("scripts/test-tools.sh runs");
            assert!(status.success(), "scripts/test-tools.sh aiosmtpd failed");
        }
    });
    python
}

/// Starts a helper script that prints `ready PORT`; its port.
fn start_sink(args: &[&str]) -> (Proc, u16) {
    let mut child = Command::new(python())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{args:?} did not start: {line:?}"));
    (Proc(child), port)
}

/// `scripts/smtp-sink.py` or `scripts/webhook-sink.py` writing to `out`; its port.
fn sink(kind: &str, out: &Path, extra: &[&str]) -> (Proc, u16) {
    let script = root().join(format!("scripts/{kind}-sink.py"));
    let mut args = vec![
        script.to_str().unwrap(),
        "--port",
        "0",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    start_sink(&args)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits (up to 60 s) until `pred` holds of the JSON lines in `path`.
fn wait_lines(path: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let l = lines(path);
        if pred(&l) {
            return l;
        }
        assert!(Instant::now() < end, "{what}: never happened; have {l:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// `runbook serve` of the world's store with `flags`, up (answering) before it returns.
fn serve(w: &World, flags: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    std::fs::create_dir_all(w.path("state")).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(w.path(&format!("serve-{port}.log"))).unwrap();
    let mut cmd = w.command(&["serve", "--addr", &format!("127.0.0.1:{port}")]);
    cmd.args(flags)
        .env("RUNBOOK_ADMIN_TOKEN", TOKEN)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = Proc(cmd.spawn().unwrap());
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "serve did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, base)
}

/// A blocking HTTP request through curl: (status, body).
fn http(method: &str, url: &str, headers: &[&str], body: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]);
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    let out = c.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn admin(method: &str, base: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let b = body.map(|b| b.to_string());
    let (code, text) = http(
        method,
        &format!("{base}{path}"),
        &[
            &format!("Authorization: Bearer {TOKEN}"),
            "Content-Type: application/json",
        ],
        b.as_deref(),
    );
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn verify(secret: &str, body: &str, signature: &str) -> bool {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    signature == format!("sha256={hex}")
}

const RUNBOOK: &str = r#"runbook: shop
title: Shop upgrade
window: { duration: 10m, timezone: Europe/Paris }
status_page: { components: [API, Database] }
steps:
  - { id: close, kind: close, title: Close the shop }
  - { id: patch, kind: patch, title: Patch the shop, run: { shell: "true" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#;

fn subscribe_cli(w: &World, args: &[&str]) -> Output {
    let mut a = vec!["subscribers", "add"];
    a.extend_from_slice(args);
    let out = w.run(&a);
    assert_eq!(out.code, 0, "{out:?}");
    out
}

/// Mail and webhook subscribers get each delivered update once, on SQLite and
/// PostgreSQL: the mail with its two parts and its unsubscribe headers in the page's
/// zone, the webhook Statuspage's payload signed with its secret; a subscriber of
/// another component hears nothing.
fn subscribers_hear_of_a_run(w: World) {
    let mails = w.path("mails.jsonl");
    let hooks = w.path("hooks.jsonl");
    let (_smtp, smtp_port) = sink("smtp", &mails, &[]);
    let (_hook, hook_port) = sink("webhook", &hooks, &[]);
    w.write("rb.yaml", RUNBOOK);
    subscribe_cli(&w, &["ops@example.com"]);
    let added = subscribe_cli(
        &w,
        &[
            &format!("http://127.0.0.1:{hook_port}/hook"),
            "--allow-private-webhooks",
        ],
    );
    let secret = added
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("signing secret (shown only now): "))
        .expect("the secret is shown")
        .to_owned();
    subscribe_cli(&w, &["other@example.com", "--component", "Billing"]);
    let smtp = format!("smtp://127.0.0.1:{smtp_port}?tls=none");
    let (_serve, base) = serve(
        &w,
        &[
            "--smtp",
            &smtp,
            "--allow-private-webhooks",
            "--timezone",
            "Europe/Paris",
        ],
        &[],
    );
    let out = w.execute("rb.yaml", "run-1");
    assert_eq!(out.code, 0, "{out:?}");
    // In progress, closed (components under maintenance), reopened, completed.
    let got = wait_lines(&mails, "four mails", |l| l.len() >= 4);
    std::thread::sleep(Duration::from_millis(500));
    let got_after = lines(&mails);
    assert_eq!(got_after.len(), got.len(), "no mail twice: {got_after:#?}");
    assert!(
        got.iter()
            .all(|m| m["rcpt_tos"] == json!(["ops@example.com"])),
        "{got:#?}"
    );
    let subjects: Vec<&str> = got.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert!(
        subjects[0].contains("Shop upgrade: In progress"),
        "{subjects:?}"
    );
    assert!(
        subjects.last().unwrap().contains("Completed"),
        "{subjects:?}"
    );
    let first = &got[0];
    assert!(first["html"].as_str().unwrap().contains("<h1"), "{first}");
    assert!(
        first["text"].as_str().unwrap().contains("Shop upgrade"),
        "{first}"
    );
    assert!(
        first["text"].as_str().unwrap().contains("CET")
            || first["text"].as_str().unwrap().contains("CEST"),
        "times in the page's zone: {first}"
    );
    let unsubscribe = first["headers"]["list-unsubscribe"].as_str().unwrap();
    assert!(
        unsubscribe.starts_with(&format!("<{base}/unsubscribe?token=")),
        "{unsubscribe}"
    );
    assert_eq!(
        first["headers"]["list-unsubscribe-post"],
        "List-Unsubscribe=One-Click"
    );
    // The webhook: incident payloads and component updates, each signed.
    let got = wait_lines(&hooks, "the webhook's posts", |l| l.len() >= 8);
    let mut ids = std::collections::HashSet::new();
    for h in &got {
        let body = h["body"].as_str().unwrap();
        assert!(
            verify(
                &secret,
                body,
                h["headers"]["x-runbook-signature"].as_str().unwrap()
            ),
            "signed: {h}"
        );
        assert!(
            ids.insert(
                h["headers"]["x-runbook-delivery"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            ),
            "once: {h}"
        );
    }
    let bodies: Vec<Value> = got
        .iter()
        .map(|h| serde_json::from_str(h["body"].as_str().unwrap()).unwrap())
        .collect();
    let incidents: Vec<&Value> = bodies
        .iter()
        .filter(|b| b.get("incident").is_some())
        .collect();
    let components: Vec<&Value> = bodies
        .iter()
        .filter(|b| b.get("component_update").is_some())
        .collect();
    assert_eq!(incidents.len(), 4, "{bodies:#?}");
    assert_eq!(
        components.len(),
        4,
        "API and Database, closed then reopened: {bodies:#?}"
    );
    let i = incidents[0];
    assert!(
        i["meta"]["unsubscribe"]
            .as_str()
            .unwrap()
            .starts_with(&base)
    );
    assert_eq!(i["page"]["id"], "service-status");
    assert_eq!(i["incident"]["id"], "run-1");
    assert_eq!(
        i["incident"]["incident_updates"][0]["status"],
        "in_progress"
    );
    assert_eq!(incidents[3]["incident"]["status"], "completed");
    assert_eq!(
        components[0]["component_update"]["new_status"],
        "under_maintenance"
    );
    assert_eq!(components[0]["component"]["status"], "under_maintenance");
    // The books agree.
    let d = w.run(&["deliveries", "--format", "json"]);
    let v: Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(v["counts"]["email"]["sent"], 4, "{v}");
    assert_eq!(v["counts"]["webhook"]["sent"], 8, "{v}");
    assert!(v["counts"]["email"].get("pending").is_none(), "{v}");
}

#[test]
fn subscribers_hear_of_a_run_on_sqlite() {
    subscribers_hear_of_a_run(World::sqlite());
}

#[test]
fn subscribers_hear_of_a_run_on_postgres() {
    subscribers_hear_of_a_run(World::postgres());
}

/// The page's form: double opt-in by mail, then every mail's one-click unsubscribe;
/// malformed addresses, a loopback webhook, a repeated subscribe and a token that does
/// not exist are refused with a clear error and store nothing.
#[test]
fn subscribing_confirming_and_unsubscribing_through_the_page() {
    let w = World::sqlite();
    let mails = w.path("mails.jsonl");
    let (_smtp, smtp_port) = sink("smtp", &mails, &[]);
    w.write("rb.yaml", RUNBOOK);
    let smtp = format!("smtp://127.0.0.1:{smtp_port}?tls=none");
    let (_serve, base) = serve(&w, &["--smtp", &smtp], &[]);
    // The form is on the page.
    let (code, page) = http("GET", &format!("{base}/subscribe"), &[], None);
    assert_eq!(code, 200);
    assert!(
        page.contains("<form") && page.contains("name=\"email\""),
        "{page}"
    );
    // Bad input.
    let form = |body: &str| {
        http(
            "POST",
            &format!("{base}/subscribe"),
            &["Content-Type: application/x-www-form-urlencoded"],
            Some(body),
        )
    };
    let json_post = |body: Value| {
        http(
            "POST",
            &format!("{base}/subscribe"),
            &["Content-Type: application/json"],
            Some(&body.to_string()),
        )
    };
    let (code, text) = form("email=not-an-address");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("is not an email address"), "{text}");
    let (code, text) = json_post(json!({"email": "a@b@c"}));
    assert_eq!(code, 400);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("email"),
        "{v}"
    );
    let (code, text) = json_post(json!({"webhook": "http://127.0.0.1:9/x"}));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("loopback or private"), "{text}");
    let (code, text) = json_post(json!({"webhook": "ftp://example.com/x"}));
    assert_eq!(code, 400, "{text}");
    let (code, _) = json_post(json!({}));
    assert_eq!(code, 400);
    let (code, text) = json_post(json!({"email": "x@example.com", "extra": 1}));
    assert_eq!(code, 400, "{text}");
    assert_eq!(
        w.run(&["subscribers", "list"]).stdout.trim(),
        "no subscribers"
    );

    // Subscribe: a confirmation mail, nothing else yet.
    let (code, text) = form("email=Jane%40Example.com");
    assert_eq!(code, 202, "{text}");
    assert!(text.contains("Check your mail"), "{text}");
    let got = wait_lines(&mails, "the confirmation", |l| !l.is_empty());
    let confirm_mail = &got[0];
    assert_eq!(confirm_mail["rcpt_tos"], json!(["jane@example.com"]));
    assert!(
        confirm_mail["subject"]
            .as_str()
            .unwrap()
            .starts_with("Confirm")
    );
    let text = confirm_mail["text"].as_str().unwrap();
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/subscribe/confirm?token="))
        .expect("a confirmation link")
        .to_owned();
    // Again: refused as it is, and the mail sent again; nothing stored twice.
    let (code, _) = form("email=jane@example.com");
    assert_eq!(code, 202);
    let list = w.run(&["subscribers", "list", "--format", "json"]);
    let v: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["state"], "pending");
    // A run before the confirmation: the pending address hears nothing of it.
    assert_eq!(w.execute("rb.yaml", "run-1").code, 0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        lines(&mails)
            .iter()
            .all(|m| m["subject"].as_str().unwrap().starts_with("Confirm")),
        "{:#?}",
        lines(&mails)
    );
    // Unknown and damaged tokens.
    let (code, text) = http(
        "GET",
        &format!("{base}/subscribe/confirm?token={}", "0".repeat(48)),
        &[],
        None,
    );
    assert_eq!(code, 404, "{text}");
    let (code, _) = http(
        "GET",
        &format!("{base}/subscribe/confirm?token=../../etc"),
        &[],
        None,
    );
    assert_eq!(code, 404);
    let (code, _) = http("GET", &format!("{base}/unsubscribe"), &[], None);
    assert_eq!(code, 404);
    // Confirmed: the next run is heard of.
    let (code, text) = http("GET", &link, &[], None);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("Confirmed"), "{text}");
    let (code, _) = json_post(json!({"email": "jane@example.com"}));
    assert_eq!(code, 409, "already subscribed");
    let before = lines(&mails).len();
    assert_eq!(w.execute("rb.yaml", "run-2").code, 0);
    let got = wait_lines(&mails, "the run's mails", |l| l.len() >= before + 4);
    let update = got.last().unwrap();
    assert_eq!(update["rcpt_tos"], json!(["jane@example.com"]));
    // One click (the mail client's RFC 8058 POST) unsubscribes.
    let unsubscribe = update["headers"]["list-unsubscribe"]
        .as_str()
        .unwrap()
        .trim_matches(['<', '>'])
        .to_owned();
    let (code, text) = http(
        "POST",
        &unsubscribe,
        &["Content-Type: application/x-www-form-urlencoded"],
        Some("List-Unsubscribe=One-Click"),
    );
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        w.run(&["subscribers", "list"]).stdout.trim(),
        "no subscribers"
    );
    let (code, _) = http("GET", &unsubscribe, &[], None);
    assert_eq!(code, 404, "a second click finds nobody");
    let before = lines(&mails).len();
    assert_eq!(w.execute("rb.yaml", "run-3").code, 0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lines(&mails).len(), before, "nothing after unsubscribing");
}

/// The admin API manages subscribers and shows deliveries; `/metrics` needs the token
/// and names no run.
#[test]
fn the_admin_api_manages_subscribers_and_serves_metrics() {
    let w = World::sqlite();
    w.write("rb.yaml", RUNBOOK);
    let hooks = w.path("hooks.jsonl");
    let (_hook, hook_port) = sink("webhook", &hooks, &[]);
    let (_serve, base) = serve(&w, &["--allow-private-webhooks"], &[]);
    let url = format!("http://127.0.0.1:{hook_port}/h");
    let (code, v) = admin(
        "POST",
        &base,
        "/api/v1/admin/subscribers",
        Some(json!({"webhook": url})),
    );
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["subscriber"]["state"], "active");
    assert_eq!(v["subscriber"]["secret"].as_str().unwrap().len(), 64);
    let id = v["subscriber"]["id"].as_str().unwrap().to_owned();
    let (code, v) = admin(
        "POST",
        &base,
        "/api/v1/admin/subscribers",
        Some(json!({"webhook": url})),
    );
    assert_eq!(code, 409, "{v}");
    let (code, v) = admin(
        "POST",
        &base,
        "/api/v1/admin/subscribers",
        Some(json!({"email": "ops@example.com", "components": ["API"]})),
    );
    assert_eq!(code, 201, "{v}");
    let (code, v) = admin(
        "POST",
        &base,
        "/api/v1/admin/subscribers",
        Some(json!({"email": "nope"})),
    );
    assert_eq!(code, 400, "{v}");
    let (code, v) = admin("GET", &base, "/api/v1/admin/subscribers", None);
    assert_eq!(code, 200);
    assert_eq!(v["subscribers"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        v["subscribers"][0].get("secret").is_none(),
        "the secret is shown once only"
    );
    let (code, _) = http(
        "GET",
        &format!("{base}/api/v1/admin/subscribers"),
        &[],
        None,
    );
    assert_eq!(code, 401);
    let (code, v) = admin(
        "DELETE",
        &base,
        "/api/v1/admin/subscribers/sub_nosuch",
        None,
    );
    assert_eq!(code, 404, "{v}");
    let (code, _) = admin(
        "DELETE",
        &base,
        "/api/v1/admin/subscribers/ops@example.com",
        None,
    );
    assert_eq!(code, 200);

    assert_eq!(w.execute("rb.yaml", "run-1").code, 0);
    wait_lines(&hooks, "the webhook's posts", |l| l.len() >= 8);
    let (code, v) = admin("GET", &base, "/api/v1/admin/deliveries", None);
    assert_eq!(code, 200);
    assert_eq!(v["counts"]["webhook"]["sent"], 8, "{v}");

    let (code, _) = http("GET", &format!("{base}/metrics"), &[], None);
    assert_eq!(code, 401);
    let (code, text) = http(
        "GET",
        &format!("{base}/metrics"),
        &[&format!("Authorization: Bearer {TOKEN}")],
        None,
    );
    assert_eq!(code, 200);
    for want in [
        "runbook_runs{state=\"completed\"} 1",
        "runbook_public_updates_total{kind=\"completed\"} 1",
        "runbook_deliveries_sent_total{channel=\"webhook\"} 8",
        "runbook_outbox_backlog{stage=\"deliveries\"} 0",
        "runbook_step_duration_seconds_count{kind=\"patch\",outcome=\"succeeded\"} 1",
        "runbook_subscribers{channel=\"webhook\",state=\"active\"} 1",
        "# TYPE runbook_step_duration_seconds histogram",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    assert!(!text.contains("run-1"), "no run ids in metrics:\n{text}");
    // Removing the webhook subscriber: nothing more to it.
    let (code, _) = admin(
        "DELETE",
        &base,
        &format!("/api/v1/admin/subscribers/{id}"),
        None,
    );
    assert_eq!(code, 200);
}

/// A run's `notify:` targets: a webhook and a Slack incoming webhook hear of a failure,
/// the rollback and the end, with the step, the error and the command to run next.
#[test]
fn a_team_hears_of_a_failed_run_on_webhook_and_slack() {
    let w = World::sqlite();
    let hooks = w.path("hooks.jsonl");
    let (_hook, port) = sink("webhook", &hooks, &[]);
    w.write(
        "rb.yaml",
        &format!(
            r#"runbook: team
title: Team test
vars: {{ hook: "http://127.0.0.1:{port}" }}
secrets: [SLACK_PATH]
notify:
  - webhook: "{{{{vars.hook}}}}/team"
    events: [step_failed, run_ended]
  - slack: "{{{{vars.hook}}}}/{{{{secrets.SLACK_PATH}}}}"
steps:
  - {{ id: first, kind: patch, checkpoint: true, run: {{ shell: "true" }}, rollback: {{ shell: "true" }} }}
  - {{ id: broken, kind: patch, run: {{ shell: "echo disk full >&2; exit 3" }} }}
"#
        ),
    );
    let (_serve, _base) = serve(&w, &["--allow-private-webhooks"], &[]);
    let mut cmd = w.command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "run-t"]);
    cmd.env("SLACK_PATH", "services-T000-B000-secret");
    let out = crate::common::output_of(&mut cmd);
    assert_eq!(out.code, 3, "rolled back: {out:?}");
    let got = wait_lines(&hooks, "the team's posts", |l| {
        l.iter().filter(|h| h["path"] == "/team").count() >= 2
            && l.iter().filter(|h| h["path"] != "/team").count() >= 4
    });
    let team: Vec<Value> = got
        .iter()
        .filter(|h| h["path"] == "/team")
        .map(|h| serde_json::from_str(h["body"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(team.len(), 2, "only the events chosen: {team:#?}");
    assert_eq!(team[0]["event"], "step_failed");
    assert_eq!(team[0]["step"], "broken");
    assert!(
        team[0]["error"].as_str().unwrap().contains("exit"),
        "{team:#?}"
    );
    assert_eq!(team[0]["next"], "runbook status run-t");
    assert_eq!(team[1]["event"], "run_ended");
    let slack: Vec<String> = got
        .iter()
        .filter(|h| h["path"] == "/services-T000-B000-secret")
        .map(|h| {
            let v: Value = serde_json::from_str(h["body"].as_str().unwrap()).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect();
    // Started, failed, rollback started, ended.
    assert!(slack.len() >= 4, "{slack:#?}");
    assert!(
        slack[0].contains("Run run-t of team started: Team test"),
        "{slack:#?}"
    );
    let failed = slack.iter().find(|t| t.contains("failed")).unwrap();
    assert!(
        failed.contains("run-t") && failed.contains("`broken`") && failed.contains("Next:"),
        "{failed}"
    );
    // The secret in the Slack URL is not shown.
    let d = w.run(&["deliveries"]);
    assert!(!d.stdout.contains("B000-secret"), "{}", d.stdout);
}

/// A receiver that answers 500, and an SMTP server that refuses: tried again with
/// doubling waits, visible in `deliveries`, and given up a "day" on (shortened here),
/// the subscriber marked failing; the page answers all along.
#[test]
fn failing_receivers_are_retried_then_given_up() {
    let w = World::sqlite();
    w.write("rb.yaml", RUNBOOK);
    let hooks = w.path("hooks.jsonl");
    let mails = w.path("mails.jsonl");
    let (_hook, hport) = sink("webhook", &hooks, &["--status", "500"]);
    let (_smtp, sport) = sink("smtp", &mails, &["--refuse-first", "2"]);
    subscribe_cli(
        &w,
        &[
            &format!("http://127.0.0.1:{hport}/h"),
            "--allow-private-webhooks",
        ],
    );
    subscribe_cli(&w, &["ops@example.com"]);
    let smtp = format!("smtp://127.0.0.1:{sport}?tls=none");
    let (_serve, base) = serve(
        &w,
        &["--smtp", &smtp, "--allow-private-webhooks"],
        &[
            ("RUNBOOK_TEST_DELIVERY_RETRY_MS", "200"),
            ("RUNBOOK_TEST_DELIVERY_GIVE_UP_MS", "3000"),
        ],
    );
    assert_eq!(w.execute("rb.yaml", "run-1").code, 0);
    // Mails: the first two refused, then all four delivered.
    wait_lines(&mails, "mails after refusals", |l| l.len() >= 4);
    // Webhooks: each tried several times.
    // Each delivery tried again (a recipient's later ones wait behind its first).
    wait_lines(&hooks, "retries", |l| l.len() >= 10);
    let (code, _) = http("GET", &format!("{base}/api/v2/summary.json"), &[], None);
    assert_eq!(code, 200, "the page answers while deliveries fail");
    let end = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let d = w.run(&["deliveries", "--format", "json"]);
        let v: Value = serde_json::from_str(&d.stdout).unwrap();
        if v["counts"]["webhook"]["failed"] == 8 {
            break v;
        }
        assert!(Instant::now() < end, "never given up: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(v["counts"]["email"]["sent"], 4, "{v}");
    let failed: Vec<&Value> = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "failed")
        .collect();
    assert!(
        failed
            .iter()
            .all(|d| d["error"] == "HTTP 500 Internal Server Error"),
        "{v}"
    );
    // The first was tried again and again; those behind it once the day was over.
    assert!(
        failed.iter().any(|d| d["attempts"].as_i64().unwrap() >= 3),
        "{v}"
    );
    let list = w.run(&["subscribers", "list", "--format", "json"]);
    let subs: Value = serde_json::from_str(&list.stdout).unwrap();
    let hook = subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["channel"] == "webhook")
        .unwrap();
    assert_eq!(hook["state"], "failing", "{subs}");
    let text = w.run(&["deliveries"]).stdout;
    assert!(
        text.contains("webhook") && text.contains("failed"),
        "{text}"
    );
}

/// `serve` killed in the middle of sending (SIGKILL, then SIGTERM): after a restart every
/// delivery that was pending is sent, each once; only the ones in flight at a SIGKILL
/// may arrive twice, and they carry the same delivery id.
#[test]
fn a_killed_sender_sends_what_was_pending_once_after_a_restart() {
    let w = World::sqlite();
    w.write("rb.yaml", RUNBOOK);
    let hooks = w.path("hooks.jsonl");
    let (_hook, port) = sink("webhook", &hooks, &["--delay-ms", "200"]);
    for i in 0..150 {
        subscribe_cli(
            &w,
            &[
                &format!("http://127.0.0.1:{port}/h{i}"),
                "--allow-private-webhooks",
            ],
        );
    }
    // 150 subscribers × (4 updates + 4 component updates) = 1,200 deliveries.
    assert_eq!(w.execute("rb.yaml", "run-1").code, 0);
    let total = 150 * 8;
    let (serve1, _) = serve(&w, &["--allow-private-webhooks"], &[]);
    wait_lines(&hooks, "some sent", |l| l.len() >= 100);
    serve1.signal(libc::SIGKILL);
    drop(serve1);
    let at_kill = lines(&hooks).len();
    assert!(at_kill < total, "killed in the middle");
    let (serve2, _) = serve(&w, &["--allow-private-webhooks"], &[]);
    wait_lines(&hooks, "more sent", |l| l.len() >= at_kill + 200);
    serve2.signal(libc::SIGTERM);
    let mut serve2 = serve2;
    let _ = serve2.0.wait();
    let at_term = lines(&hooks).len();
    let (_serve3, _) = serve(&w, &["--allow-private-webhooks"], &[]);
    let got = wait_lines(&hooks, "everything", |l| {
        let ids: std::collections::HashSet<&str> = l
            .iter()
            .map(|h| h["headers"]["x-runbook-delivery"].as_str().unwrap())
            .collect();
        ids.len() >= total
    });
    std::thread::sleep(Duration::from_secs(1));
    let got_after = lines(&hooks);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for h in &got_after {
        *count
            .entry(h["headers"]["x-runbook-delivery"].as_str().unwrap())
            .or_default() += 1;
    }
    assert_eq!(count.len(), total);
    let twice: Vec<(&&str, &usize)> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= 64,
        "only what was in flight at the SIGKILL ({} twice)",
        twice.len()
    );
    // After the SIGTERM, nothing that was sent before it is sent again.
    let before_term: std::collections::HashSet<&str> = got[..at_term]
        .iter()
        .map(|h| h["headers"]["x-runbook-delivery"].as_str().unwrap())
        .collect();
    let again = got_after[at_term..]
        .iter()
        .filter(|h| before_term.contains(h["headers"]["x-runbook-delivery"].as_str().unwrap()))
        .count();
    assert_eq!(
        again, 0,
        "a graceful stop finishes and records what was under way"
    );
    assert!(twice.iter().all(|(_, n)| **n == 2));
}

/// `--mirror statuspage` drives a Statuspage page (the local stand-in, with its 1
/// request/s limit): `runbook schedule` creates the scheduled maintenance, the run's
/// updates update it and set the components (mapped by name), the end completes it; a
/// restart creates nothing twice.
#[test]
fn the_statuspage_mirror_drives_a_page() {
    let w = World::sqlite();
    let log = w.path("statuspage.jsonl");
    let mut child = Command::new("python3")
        .arg(root().join("scripts/fake-statuspage.py"))
        .args(["--port", "0", "--out", log.to_str().unwrap()])
        .args([
            "--page",
            "pg1abc",
            "--key",
            "k3y",
            "--components",
            "API,Database,Other",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _fake = Proc(child);
    let port: u16 = line.trim().strip_prefix("ready ").unwrap().parse().unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let start = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    w.write(
        "rb.yaml",
        &RUNBOOK.replace(
            "window: { duration: 10m, timezone: Europe/Paris }",
            &format!("window: {{ start: \"{start}\", duration: 10m, timezone: Europe/Paris }}"),
        ),
    );
    let env = [
        ("STATUSPAGE_API_KEY", "k3y"),
        ("STATUSPAGE_API_URL", api.as_str()),
    ];
    let flags = ["--mirror", "statuspage", "--statuspage-page-id", "pg1abc"];
    let (serve1, _) = serve(&w, &flags, &env);
    let out = w.run(&["schedule", "rb.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out
        .stdout
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    let state = |api: &str| -> Value {
        let (_, text) = http("GET", &format!("{api}/_state"), &[], None);
        serde_json::from_str(&text).unwrap()
    };
    let end = Instant::now() + Duration::from_secs(30);
    while state(&api)["incidents"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < end, "the maintenance was never created");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = state(&api);
    assert_eq!(s["incidents"][0]["status"], "scheduled", "{s}");
    assert_eq!(s["incidents"][0]["name"], "Shop upgrade");
    assert!(s["incidents"][0]["scheduled_for"].is_string(), "{s}");
    // Restarted: nothing is created twice.
    drop(serve1);
    let (_serve2, _) = serve(&w, &flags, &env);
    let out = w.run(&[
        "execute",
        "rb.yaml",
        "--yes",
        "--now",
        "--run-id",
        "run-1",
        "--maintenance",
        &id,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let end = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = state(&api);
        if s["incidents"][0]["status"] == "completed" {
            break s;
        }
        assert!(Instant::now() < end, "never completed: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        s["incidents"].as_array().unwrap().len(),
        1,
        "one maintenance: {s}"
    );
    let updates = s["incidents"][0]["incident_updates"].as_array().unwrap();
    assert!(
        updates.len() >= 5,
        "scheduled, started, closed, reopened, completed: {s}"
    );
    let comps = s["components"].as_array().unwrap();
    assert!(
        comps.iter().all(|c| c["status"] == "operational"),
        "reopened: {s}"
    );
    // While closed they were under maintenance.
    let requests = lines(&log);
    assert!(
        requests.iter().any(|r| r["body"]["incident"]["components"]
            .as_object()
            .is_some_and(|c| c.values().any(|v| v == "under_maintenance"))),
        "{requests:#?}"
    );
    assert_eq!(s["rate_limited"], 0, "kept under 1 request/s: {s}");
    assert_eq!(s["unauthorized"], 0);
}

/// Flags that cannot work are refused before anything is served.
#[test]
fn notification_flags_that_cannot_work_are_refused() {
    let w = World::sqlite();
    std::fs::create_dir_all(w.path("state")).unwrap();
    for (flags, env, want) in [
        (vec!["--smtp", "smtp://"], vec![], "--smtp"),
        (vec!["--smtp", "imap://mail.example.com"], vec![], "smtp://"),
        (
            vec!["--smtp", "smtp://u:pw@mail.example.com"],
            vec![],
            "RUNBOOK_SMTP_PASSWORD",
        ),
        (
            vec!["--smtp", "smtp://user@mail.example.com"],
            vec![],
            "RUNBOOK_SMTP_PASSWORD",
        ),
        (vec!["--mail-from", "x@example.com"], vec![], "--smtp"),
        (
            vec!["--mirror", "statuspage", "--statuspage-page-id", "abc"],
            vec![],
            "STATUSPAGE_API_KEY",
        ),
        (
            vec!["--mirror", "statuspage"],
            vec![("STATUSPAGE_API_KEY", "k")],
            "page",
        ),
        (vec!["--mirror", "pagerduty"], vec![], "statuspage"),
    ] {
        let mut cmd = w.command(&["serve", "--addr", "127.0.0.1:0"]);
        cmd.args(&flags)
            .env_remove("STATUSPAGE_API_KEY")
            .env_remove("STATUSPAGE_PAGE_ID");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = crate::common::output_of(&mut cmd);
        assert_ne!(out.code, 0, "{flags:?}: {out:?}");
        assert!(out.stderr.contains(want), "{flags:?}: {}", out.stderr);
    }
}

/// A webhook that hangs holds only its own place: every other recipient hears of the
/// run long before the hung request's 30 s are up, and the page answers meanwhile.
#[test]
fn a_hanging_webhook_holds_back_no_one_else() {
    let w = World::sqlite();
    w.write("rb.yaml", RUNBOOK);
    let hooks = w.path("hooks.jsonl");
    let (_hook, port) = sink(
        "webhook",
        &hooks,
        &["--hang-first", "1", "--hang-seconds", "40"],
    );
    for name in ["a", "b"] {
        subscribe_cli(
            &w,
            &[
                &format!("http://127.0.0.1:{port}/{name}"),
                "--allow-private-webhooks",
            ],
        );
    }
    let (_serve, base) = serve(&w, &["--allow-private-webhooks"], &[]);
    let started = Instant::now();
    assert_eq!(w.execute("rb.yaml", "run-1").code, 0);
    let got = wait_lines(&hooks, "the other recipient's posts", |l| {
        let Some(hung) = l.iter().find(|h| h["n"] == 1) else {
            return false;
        };
        l.iter().filter(|h| h["path"] != hung["path"]).count() >= 8
    });
    let hung = got.iter().find(|h| h["n"] == 1).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the others were not held behind the hung request ({:?})",
        started.elapsed()
    );
    assert_eq!(
        got.iter().filter(|h| h["path"] == hung["path"]).count(),
        1,
        "the hung recipient's later updates wait behind its first: {got:#?}"
    );
    let (code, _) = http("GET", &format!("{base}/api/v2/summary.json"), &[], None);
    assert_eq!(code, 200);
    let d = w.run(&["deliveries", "--format", "json"]);
    let v: Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(v["counts"]["webhook"]["sent"], 8, "{v}");
    assert_eq!(v["counts"]["webhook"]["pending"], 8, "{v}");
}

/// An `email` team target hears of an approval waiting (with the command that answers
/// it) and of the run's end; events it did not choose are not sent.
#[test]
fn a_team_email_hears_of_an_approval_waiting() {
    let w = World::sqlite();
    let mails = w.path("mails.jsonl");
    let (_smtp, port) = sink("smtp", &mails, &[]);
    w.write(
        "rb.yaml",
        r#"runbook: gate
title: Gate test
notify:
  - email: dba@example.com
    events: [approval_waiting, run_ended]
steps:
  - { id: prepare, kind: patch, run: { shell: "true" } }
  - { id: go, kind: approve, timeout: 1s, on_timeout: approve }
"#,
    );
    let smtp = format!("smtp://127.0.0.1:{port}?tls=none");
    let (_serve, _) = serve(&w, &["--smtp", &smtp], &[]);
    let out = w.execute("rb.yaml", "run-g");
    assert_eq!(out.code, 0, "{out:?}");
    let got = wait_lines(&mails, "two team mails", |l| l.len() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&mails).len(), 2, "only the events chosen: {got:#?}");
    assert!(
        got.iter()
            .all(|m| m["rcpt_tos"] == json!(["dba@example.com"]))
    );
    let waiting = got
        .iter()
        .find(|m| {
            m["subject"]
                .as_str()
                .unwrap()
                .contains("waits for approval")
        })
        .expect("the approval mail");
    let text = waiting["text"].as_str().unwrap();
    assert!(text.contains("runbook approve run-g go"), "{text}");
    assert!(
        waiting["html"].as_str().unwrap().contains("<table>"),
        "{waiting}"
    );
    assert!(
        waiting["headers"].get("list-unsubscribe").is_none(),
        "a team mail is no subscription"
    );
    assert!(got.iter().any(|m| {
        m["subject"]
            .as_str()
            .unwrap()
            .contains("Run run-g of gate completed")
    }));
}
