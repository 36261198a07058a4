//! Secrets never leave a run: given through the environment (`secrets:`), held by a
//! variable, printed by commands as written, URL-encoded, base64 (at every alignment),
//! upper-cased, split over two lines and JSON-escaped, lower-cased in a PostgreSQL
//! error, and written by a person through the admin API. Everything the binary writes
//! or serves is scanned: the terminal, `status`, every report, the store file itself,
//! the step logs and every endpoint of a real `runbook serve`. A `--var` holding a secret
//! that public text would show is refused before anything starts. The HTML report shows
//! the mask as written, and `plan` shows values as written.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::world::World;

/// Has characters that URL and JSON encode (`"`, `/`, `+`, `=`, a space).
const TOKEN: &str = "zx9q\"Tok/en+4=2 ab";
/// An identifier, for PostgreSQL to lower-case in an error.
const KEY: &str = "Zx9qKeyAlpha7731";
const ADMIN: &str = "secrets-test-admin-token-0123456789";

/// The forms of `secret` no output may hold.
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![
        secret.to_owned(),
        secret.to_uppercase(),
        secret.to_lowercase(),
    ];
    let json = serde_json::to_string(secret).unwrap();
    forms.push(json[1..json.len() - 1].to_owned());
    let mut url = String::new();
    for b in secret.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    forms.push(url.to_lowercase());
    forms.push(url);
    // Base64 at each alignment: the characters that depend on the secret alone.
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for lead in 0..3 {
            let mut input = vec![b'x'; lead];
            input.extend_from_slice(secret.as_bytes());
            let encoded = engine.encode(&input);
            forms.push(encoded[(8 * lead).div_ceil(6)..8 * (lead + secret.len()) / 6].to_owned());
        }
    }
    forms
}

/// Every form of either secret found in `text` (named by `place`).
fn leaks(place: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for secret in [TOKEN, KEY] {
        for form in forms(secret) {
            if text.contains(&form) {
                found.push(format!("{place}: `{form}`"));
            }
        }
        // Split over two lines of a log (`stdout: ` starts each line).
        let joined: String = text
            .lines()
            .map(|l| l.split_once(": ").map_or(l, |(_, rest)| rest))
            .collect();
        if !text.contains(secret) && joined.contains(secret) {
            found.push(format!("{place}: split over two lines"));
        }
    }
    found
}

fn runbook(pg: &str) -> String {
    format!(
        r#"
runbook: leaky
title: "Upgrade for {{{{vars.owner}}}}"
summary: "The shop of {{{{vars.owner}}}} is upgraded."
secrets: [MY_TOKEN, DB_KEY]
vars: {{ owner: "team-{KEY}", note: "none" }}
status_page: {{ components: [shop] }}
steps:
  - id: show
    kind: patch
    title: "Show for {{{{vars.owner}}}}"
    run:
      env: {{ NOTE: "{{{{vars.note}}}}" }}
      shell: |
        echo "note: $NOTE"
        echo "as written: $MY_TOKEN and $DB_KEY"
        printf '%s' "$MY_TOKEN" | sed -e 's/%/%25/g' -e 's/ /%20/g' -e 's|/|%2F|g' -e 's/+/%2B/g' -e 's/=/%3D/g' -e 's/"/%22/g'; echo
        printf '%s' "$MY_TOKEN" | base64 -w0; echo
        printf 'x%s and more' "$MY_TOKEN" | base64 -w0; echo
        printf 'xy%s' "$DB_KEY" | base64 -w0 | tr '+/' '-_'; echo
        printf '%s\n' "$MY_TOKEN" | tr a-z A-Z
        printf '%s' "$DB_KEY" | cut -c1-7
        printf '%s' "$DB_KEY" | cut -c8-
        echo "split on stderr: ${{DB_KEY%????????}}" >&2
        echo "${{DB_KEY#????????}} ends it" >&2
        printf '{{"t": "%s", "b": "%s"}}\n' "$(printf '%s' "$MY_TOKEN" | sed 's/"/\\"/g')" "$(printf 'ab%s' "$DB_KEY" | base64 -w0)"
  - id: lowered
    kind: patch
    title: Query
    on_failure: continue
    run: {{ sql: "select lower({{{{secrets.DB_KEY}}}})::int", database: "{pg}" }}
  - id: call
    kind: patch
    title: Call
    on_failure: continue
    run: {{ http: {{ url: "http://127.0.0.1:9/hook?token={{{{secrets.MY_TOKEN}}}}" }} }}
"#
    )
}

/// Every file under `dir`, as text (the store's database and WAL files, the logs).
fn files(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
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

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn no_secret_in_any_form_reaches_a_log_the_journal_a_report_or_the_page() {
    let w = World::sqlite();
    let pg = World::postgres();
    w.write("leaky.yaml", &runbook(&pg.store));
    let note = format!("see {TOKEN}");
    let mut c = w.command(&[
        "execute",
        "leaky.yaml",
        "--yes",
        "--now",
        "--run-id",
        "leak-1",
        "--var",
        &format!("note={note}"),
    ]);
    c.env("MY_TOKEN", TOKEN).env("DB_KEY", KEY);
    let o = common::output_of(&mut c);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let mut scanned = 1;
    let mut found = leaks("terminal", &format!("{}\n{}", o.stdout, o.stderr));
    for format in ["text", "json"] {
        let mut c = w.command(&["plan", "leaky.yaml", "--format", format]);
        c.env("MY_TOKEN", TOKEN).env("DB_KEY", KEY);
        let p = common::output_of(&mut c);
        assert_eq!(p.code, 0, "{}", p.stderr);
        assert!(p.stdout.contains("Upgrade for team-****"), "{}", p.stdout);
        scanned += 1;
        found.extend(leaks(&format!("plan --format {format}"), &p.stdout));
    }

    // The run did what it was asked, with the real values.
    let status = w.status_json("leak-1");
    let steps = &status["steps"];
    assert_eq!(steps["show"]["status"], "succeeded", "{status}");
    assert_eq!(
        steps["show"]["outputs"]["t"], "{{secrets.MY_TOKEN}}",
        "{status}"
    );
    let b = steps["show"]["outputs"]["b"].as_str().unwrap_or_default();
    assert!(b.contains("****"), "{status}");
    // PostgreSQL lower-cased it: `column "zx9q..." does not exist`, or the like.
    let lowered = steps["lowered"]["error"].as_str().unwrap_or_default();
    assert!(lowered.contains("\"****\""), "{status}");
    assert_eq!(steps["call"]["status"], "failed", "{status}");
    let log = std::fs::read_to_string(w.path("state/logs/leak-1/show.log")).unwrap();
    assert!(log.contains("note: see ****"), "{log}");
    assert!(log.contains("as written: **** and ****"), "{log}");
    assert!(log.contains("stdout: ****\nstdout: ****\n"), "{log}");
    assert!(log.contains("stderr: split on stderr: ****\n"), "{log}");
    assert!(log.contains("stderr: **** ends it\n"), "{log}");
    scanned += 1;
    found.extend(leaks("status", &status.to_string()));

    for format in ["json", "md", "html"] {
        let r = w.run(&["report", "leak-1", "--format", format]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        scanned += 1;
        found.extend(leaks(&format!("report --format {format}"), &r.stdout));
        match format {
            // The mask shows as written, not as empty emphasis.
            "html" => {
                assert!(r.stdout.contains("team-****"), "{}", r.stdout);
                assert!(!r.stdout.contains("<strong></strong>"), "{}", r.stdout);
            }
            "md" => assert!(r.stdout.contains(r"team-\*\*\*\*"), "{}", r.stdout),
            _ => {}
        }
    }

    // The page, served by a real `runbook serve`, and a person's update through it.
    let addr = free_addr();
    let _server = Killed(
        w.command(&["serve", "--addr", &addr])
            .env("MY_TOKEN", TOKEN)
            .env("DB_KEY", KEY)
            .env("RUNBOOK_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    while client.get(format!("http://{addr}/")).send().await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "no server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posted = client
        .post(format!("http://{addr}/api/v1/admin/updates"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "maintenance": "leak-1",
                "body": format!("Rotated {TOKEN} and {}.", KEY.to_lowercase()),
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let answer = posted.text().await.unwrap();
    assert!(answer.contains("Rotated **** and ****."), "{answer}");
    scanned += 1;
    found.extend(leaks("admin API answer", &answer));

    // Every endpoint the page has, once the update is on it.
    let store = runbook::store::Store::open(&w.store).await.unwrap();
    let mut follower = runbook::status::follow::Follower::default();
    follower.refresh(&store).await.unwrap();
    let info = runbook::status::model::PageInfo {
        name: "Acme".into(),
        url: format!("http://{addr}"),
        timezone: None,
    };
    let (snap, _) = runbook::status::follow::render_if_changed(
        &follower,
        &info,
        &Default::default(),
        runbook::store::now_ms(),
    );
    let snap = snap.unwrap();
    let mut paths: Vec<&String> = snap.assets.keys().collect();
    paths.sort();
    assert!(paths.len() > 3, "{paths:?}");
    let t0 = Instant::now();
    loop {
        let page = client
            .get(format!("http://{addr}/maintenances/leak-1"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.contains("Rotated") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in paths {
        let r = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body = r.text().await.unwrap();
        scanned += 1;
        found.extend(leaks(&format!("GET {path}"), &body));
    }
    let page = client
        .get(format!("http://{addr}/maintenances/leak-1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Upgrade for team-****"), "{page}");
    assert!(page.contains("Rotated **** and ****."), "{page}");
    drop(store);

    // The store file, the logs: every byte under the state directory.
    let mut all = Vec::new();
    files(&w.path("state"), &mut all);
    assert!(all.iter().any(|(p, _)| p.ends_with("state.db")), "{all:?}");
    for (path, text) in &all {
        scanned += 1;
        found.extend(leaks(path, text));
    }
    eprintln!(
        "secret scan: {scanned} places (terminal, plan, status, reports, admin answer, every endpoint, every file under the state directory), {} hits",
        found.len()
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn a_var_holding_a_secret_that_public_text_shows_is_refused_before_anything_starts() {
    let w = World::sqlite();
    w.write(
        "r.yaml",
        r#"
runbook: refuse
title: "Release {{vars.version}}"
secrets: [MY_TOKEN]
vars: { version: "1", note: "none" }
steps:
  - { id: a, kind: patch, title: "Apply {{vars.note}}", run: { shell: "echo $MY_TOKEN > markers" } }
  - { id: b, kind: patch, public: false, run: { shell: "echo {{vars.version}} >> markers" } }
"#,
    );
    for (var, value) in [
        ("version", TOKEN.to_owned()),
        ("version", format!("v2-{}", TOKEN.to_uppercase())),
        ("note", format!("x {TOKEN}")),
    ] {
        let arg = format!("{var}={value}");
        for cmd in [
            vec!["execute", "r.yaml", "--yes", "--now", "--var", &arg],
            vec!["plan", "r.yaml", "--var", &arg],
        ] {
            let mut c = w.command(&cmd);
            c.env("MY_TOKEN", TOKEN);
            let o = common::output_of(&mut c);
            assert_eq!(o.code, 1, "{cmd:?}: {}\n{}", o.stdout, o.stderr);
            assert!(
                o.stderr.contains(&format!(
                    "--var {var}: the value holds the value of secret `MY_TOKEN`"
                )),
                "{}",
                o.stderr
            );
            assert!(o.stderr.contains("public text"), "{}", o.stderr);
            assert!(leaks("stderr", &o.stderr).is_empty(), "{}", o.stderr);
            assert!(o.stdout.is_empty(), "{}", o.stdout);
        }
    }
    assert!(!w.path("state").exists(), "nothing is written");
    assert!(!w.path("markers").exists(), "nothing ran");
    // The same value in a variable only the commands use is fine, and masked.
    w.write(
        "ok.yaml",
        r#"
runbook: fine
title: Release
secrets: [MY_TOKEN]
vars: { note: "none" }
steps:
  - { id: a, kind: patch, run: { shell: "echo {{vars.note}} > markers" } }
"#,
    );
    let arg = format!("note=n {}", KEY);
    let mut c = w.command(&["execute", "ok.yaml", "--yes", "--now", "--var", &arg]);
    c.env("MY_TOKEN", KEY);
    let o = common::output_of(&mut c);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(w.markers(), [format!("n {KEY}")]);
    assert!(!o.stdout.contains(KEY), "{}", o.stdout);
}

#[test]
fn plan_shows_rendered_text_as_written() {
    let w = World::sqlite();
    w.write(
        "p.yaml",
        r#"
runbook: plain
title: "Deploy {{vars.what}}"
vars: { what: "x" }
steps:
  - { id: a, kind: patch, title: "Set {{vars.what}}", run: { shell: "true" } }
  - { id: b, kind: patch, title: "a = b & <c>", run: { shell: "true" } }
"#,
    );
    let o = w.run(&["plan", "p.yaml", "--var", "what=a = b & <c> 'q' \"d\""]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .contains("Plan for `plain`: Deploy a = b & <c> 'q' \"d\"\n"),
        "{}",
        o.stdout
    );
    assert!(
        !o.stdout.contains("&#x3D;") && !o.stdout.contains("&amp;"),
        "{}",
        o.stdout
    );
    let o = w.run(&[
        "plan",
        "p.yaml",
        "--format",
        "json",
        "--var",
        "what=a = b & <c>",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["title"], "Deploy a = b & <c>", "{v}");
    assert_eq!(v["steps"][0]["title"], "Set a = b & <c>", "{v}");
    assert_eq!(v["steps"][1]["title"], "a = b & <c>", "{v}");
}
