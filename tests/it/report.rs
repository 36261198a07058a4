//! `runbook report`: real runs through the binary, reported in Markdown, HTML and JSON;
//! the JSON validates against the committed schema (`report.schema.json`, checked to be
//! current); the HTML escapes every text from the journal and renders in a real browser
//! (headless Chromium, screenshot in `target/report.png`); bad input says what is wrong.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::world::World;
use serde_json::{Value, json};

/// The committed schema; `UPDATE_REPORT_SCHEMA=1` rewrites it.
const SCHEMA_FILE: &str = "report.schema.json";

fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&runbook::report::schema()).unwrap();
    s.push('\n');
    s
}

/// Checks `doc` against the report's JSON Schema (the committed one).
fn assert_valid(doc: &Value) {
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join(SCHEMA_FILE))
            .expect("report.schema.json is committed"),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&committed).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the report does not fit the schema: {errors:#?}"
    );
}

/// `runbook report RUN --format json`, validated against the schema.
fn report_json(w: &World, run: &str) -> Value {
    let o = w.run(&["report", run, "--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let doc: Value = serde_json::from_str(&o.stdout).expect("the JSON report parses");
    assert_valid(&doc);
    doc
}

fn report(w: &World, run: &str, format: &str) -> String {
    let o = w.run(&["report", run, "--format", format]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.is_empty(), "{}", o.stderr);
    o.stdout
}

fn step<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in the report"))
}

/// What an HTML report must never contain: scripts, external assets.
fn assert_self_contained(html: &str) {
    let lower = html
        .to_lowercase()
        .replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for bad in [
        "<script", "src=", "href=", "@import", "url(", "http://", "https://",
    ] {
        assert!(!lower.contains(bad), "the HTML report contains `{bad}`");
    }
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"), "no Gantt chart");
    assert!(html.trim_end().ends_with("</html>"));
}

fn wait_for_status(w: &World, run: &str, status: &str, runner: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = w.run(&["status", run, "--format", "json"]);
        if o.code == 0 {
            let s: Value = serde_json::from_str(&o.stdout).unwrap();
            if s["status"] == status {
                return;
            }
        }
        if Instant::now() > deadline || runner.try_wait().unwrap().is_some() {
            let _ = runner.kill();
            let _ = runner.wait();
            panic!("run {run} never became {status}: {}", o.stdout);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A completed maintenance of a real SQLite database: prepare, backup (built in),
/// a shell step printing backup-like outputs, close, a change, reopen.
const COMPLETED: &str = r#"runbook: shop-upkeep
title: Shop upkeep
summary: A short tidy-up of the shop database.
window:
  start: 2026-11-24T19:00:00Z
  duration: 30m
  timezone: Europe/London
status_page:
  components: [shop]
vars:
  db: sqlite://data/shop.db?mode=rwc
steps:
  - id: prepare
    kind: patch
    title: Prepare the database
    public: false
    run:
      sql: |
        CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        INSERT INTO customers (name) VALUES ('a'), ('b'), ('c');
      database: "{{vars.db}}"
  - id: backup
    kind: backup
    title: Back up the shop
    expected: 1m
    checkpoint: true
    with: { database: "{{vars.db}}", to: "backups/{{run.id}}.db" }
  - id: export
    kind: patch
    title: Export the archive
    expected: 10s
    run: { shell: "echo '{\"size_bytes\": 42, \"path\": \"/srv/archive.tar\", \"note\": \"fine\"}'" }
  - id: close
    kind: close
    title: Close the shop
  - id: change
    kind: patch
    title: Add a column
    expected: 30s
    run:
      sql: ALTER TABLE customers ADD COLUMN points INTEGER NOT NULL DEFAULT 0
      database: "{{vars.db}}"
  - id: reopen
    kind: reopen
    title: Reopen the shop
"#;

#[test]
fn a_completed_run_in_every_format() {
    let w = World::sqlite();
    w.write("rb.yaml", COMPLETED);
    std::fs::create_dir_all(w.path("data")).unwrap();
    let out = w.execute("rb.yaml", "done");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    let doc = report_json(&w, "done");
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["run"]["id"], "done");
    assert_eq!(doc["run"]["runbook"], "shop-upkeep");
    assert_eq!(doc["run"]["outcome"], "completed");
    assert_eq!(doc["run"]["finished"], true);
    assert_eq!(doc["run"]["timezone"], "Europe/London");
    assert!(doc["run"]["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        doc["postmortem"].is_null(),
        "no postmortem for a completed run"
    );
    // In the recorded plan's order.
    let ids: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["prepare", "backup", "export", "close", "change", "reopen"]
    );
    for s in doc["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "succeeded", "{s}");
        assert_eq!(s["attempts"], 1);
        assert!(s["duration_ms"].as_i64().unwrap() >= 0);
    }
    // The built-in backup's outputs worth reading, and only those.
    let backup = step(&doc, "backup");
    assert!(
        backup["outputs"]["size_bytes"].as_u64().unwrap() > 0,
        "{backup}"
    );
    assert!(
        backup["outputs"]["path"]
            .as_str()
            .unwrap()
            .ends_with("done.db")
    );
    assert_eq!(backup["outputs"]["tables"], 1);
    assert!(backup["outputs"].get("sha256").is_none());
    assert_eq!(backup["checkpoint"], true);
    // A shell step's outputs: all of them.
    let export = step(&doc, "export");
    assert_eq!(export["outputs"]["size_bytes"], 42);
    assert_eq!(export["outputs"]["path"], "/srv/archive.tar");
    assert_eq!(export["outputs"]["note"], "fine");
    // Planned times chain from the window's planned start (`--now` opened it at the
    // run's start), 0 for a step without `expected`.
    let window = &doc["window"];
    assert_eq!(window["planned_start_from"], "window_opened");
    assert_eq!(window["planned_end_from"], "window");
    assert_eq!(window["planned_duration_ms"], 30 * 60 * 1000);
    assert_eq!(window["scheduled_start"], "2026-11-24T19:00:00.000Z");
    assert_eq!(window["held"], true);
    assert_eq!(window["overrun_ms"], 0);
    assert_eq!(window["expected_ms"], 100_000);
    let start = window["planned_start_ms"].as_i64().unwrap();
    assert_eq!(step(&doc, "prepare")["planned_start_ms"], start);
    assert_eq!(step(&doc, "backup")["planned_start_ms"], start);
    assert_eq!(step(&doc, "export")["planned_start_ms"], start + 60_000);
    assert_eq!(step(&doc, "close")["planned_start_ms"], start + 70_000);
    assert_eq!(step(&doc, "close")["planned_end_ms"], start + 70_000);
    assert_eq!(step(&doc, "reopen")["planned_end_ms"], start + 100_000);
    // Closed from close to reopen, once.
    let service = &doc["service"];
    assert_eq!(service["still_closed"], false);
    assert_eq!(service["intervals"].as_array().unwrap().len(), 1);
    assert_eq!(
        service["intervals"][0]["closed_at_ms"],
        step(&doc, "close")["actual_end_ms"]
    );
    // The public updates as published.
    let updates = doc["public_updates"].as_array().unwrap();
    assert!(!updates.is_empty());
    assert_eq!(updates.last().unwrap()["status"], "completed");
    assert!(doc["rollbacks"].as_array().unwrap().is_empty());

    let md = report(&w, "done", "md");
    assert!(
        md.starts_with("# Maintenance report: Shop upkeep\n"),
        "{md}"
    );
    assert!(!md.contains("REPORT SO FAR"));
    for want in [
        "| Run | `done` |",
        "| Outcome | **completed** |",
        "**The window held**",
        "## Service closed",
        "## Planned versus actual",
        "| Step | Planned | Actual | Δ duration | Δ end |",
        "size_bytes: 42 B, path: /srv/archive.tar, note: fine",
        "| Times | Europe/London |",
        // December in London is GMT.
        " GMT |",
    ] {
        assert!(md.contains(want), "no `{want}` in:\n{md}");
    }
    assert!(!md.contains("Postmortem"));

    let html = report(&w, "done", "html");
    assert_self_contained(&html);
    assert!(html.contains("Shop upkeep"));
    assert!(html.contains("window end"));
    assert!(html.contains(" GMT"), "times in the runbook's zone");
    // Two bars per step (planned and actual).
    assert!(html.matches("<title>planned ").count() >= 6);
    assert!(html.matches("<title>succeeded: actual ").count() == 6);
}

/// A run whose smoke test fails after a change: the change is undone.
const ROLLS_BACK: &str = r#"runbook: rolls-back
title: Risky change
steps:
  - id: snap
    kind: patch
    title: Take a snapshot
    checkpoint: true
    run: { shell: "echo snap >> markers" }
  - id: close
    kind: close
    title: Close the service
  - id: change
    kind: patch
    title: Change the schema
    expected: 1s
    run: { shell: "echo change >> markers" }
    rollback: { shell: "echo undo >> markers" }
  - id: smoke
    kind: test
    title: Smoke test
    retries: { max: 1, backoff: 50ms }
    run: { shell: "echo 'the shop answers 500' >&2; exit 1" }
  - id: reopen
    kind: reopen
    title: Reopen the service
"#;

#[test]
fn a_rolled_back_run_has_its_rollback_and_a_postmortem() {
    let w = World::sqlite();
    w.write("rb.yaml", ROLLS_BACK);
    let out = w.execute("rb.yaml", "rb1");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.markers(), ["snap", "change", "undo"]);

    let doc = report_json(&w, "rb1");
    assert_eq!(doc["run"]["outcome"], "rolled_back");
    assert!(
        doc["run"]["reason"]
            .as_str()
            .unwrap()
            .contains("step `smoke` failed")
    );
    let smoke = step(&doc, "smoke");
    assert_eq!(smoke["status"], "failed");
    assert_eq!(smoke["attempts"], 2);
    let errors = smoke["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "one error per failed attempt: {smoke}");
    assert_eq!(errors[0]["attempt"], 1);
    assert_eq!(errors[1]["attempt"], 2);
    assert_eq!(errors[0]["kind"], "failed");
    assert_eq!(step(&doc, "reopen")["status"], "not_run");
    assert!(step(&doc, "reopen")["actual_start"].is_null());
    let change = step(&doc, "change");
    assert_eq!(change["status"], "rolled_back");
    assert_eq!(change["undo"]["status"], "undone");

    let rollbacks = doc["rollbacks"].as_array().unwrap();
    assert_eq!(rollbacks.len(), 1);
    let rb = &rollbacks[0];
    assert_eq!(rb["outcome"], "rolled_back");
    assert!(rb["reason"].as_str().unwrap().contains("smoke"));
    let undone: Vec<&str> = rb["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(undone, ["change"]);
    assert!(rb["duration_ms"].as_i64().unwrap() >= 0);
    // The rollback reopened the service.
    assert_eq!(doc["service"]["still_closed"], false);

    let pm = &doc["postmortem"];
    assert!(pm["summary"].as_str().unwrap().contains("Step `smoke`"));
    assert_eq!(pm["root_cause"], "to fill in");
    let timeline: Vec<&str> = pm["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(timeline.iter().any(|t| t.starts_with("ROLLBACK started")));
    assert!(
        timeline
            .iter()
            .any(|t| t.contains("`change` (Change the schema) undone"))
    );
    assert!(timeline.iter().any(|t| t.contains("service closed")));

    let md = report(&w, "rb1", "md");
    for want in [
        "## Rollbacks",
        "## Postmortem draft",
        "### Summary",
        "### What happened",
        "### Impact",
        "### Root cause\n\n_to fill in_",
        "### Follow-ups\n\n_to fill in_",
        "| Change the schema `change` | undone by its rollback |",
        "the shop answers 500",
        "not run",
    ] {
        assert!(md.contains(want), "no `{want}` in:\n{md}");
    }
    let html = report(&w, "rb1", "html");
    assert_self_contained(&html);
    assert!(html.contains("Postmortem draft"));
    assert!(html.contains("class=\"placeholder\">to fill in"));
}

#[test]
fn a_failed_run_leaves_the_service_closed() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        r#"runbook: fails
title: Doomed change
steps:
  - id: snap
    kind: patch
    checkpoint: true
    run: { shell: "true" }
  - id: close
    kind: close
  - id: change
    kind: patch
    title: Change that cannot be undone
    run: { shell: "true" }
    rollback: { shell: "echo 'cannot undo: disk full' >&2; exit 1" }
  - id: break
    kind: patch
    run: { shell: "exit 1" }
"#,
    );
    let out = w.execute("rb.yaml", "f1");
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    let doc = report_json(&w, "f1");
    assert_eq!(doc["run"]["outcome"], "failed");
    assert_eq!(doc["rollbacks"][0]["outcome"], "failed");
    assert_eq!(doc["rollbacks"][0]["steps"][0]["status"], "undo_failed");
    assert!(
        doc["rollbacks"][0]["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("disk full")
    );
    assert_eq!(step(&doc, "change")["status"], "rollback_failed");
    assert_eq!(doc["service"]["still_closed"], true);
    assert!(doc["service"]["intervals"][0]["reopened_at"].is_null());
    assert_eq!(doc["postmortem"]["impact"]["still_closed"], true);
    // A step without a title is shown by its id.
    assert_eq!(step(&doc, "break")["title"], "break");

    let md = report(&w, "f1", "md");
    assert!(md.contains("**failed**"), "{md}");
    assert!(md.contains("**still closed**"), "{md}");
    assert!(md.contains("STILL CLOSED"), "{md}");
    assert!(md.contains("## Postmortem draft"));
}

const APPROVAL: &str = r#"runbook: approval
title: Approved change
steps:
  - id: prep
    kind: patch
    title: Prepare
    run: { shell: "true" }
  - id: go
    kind: approve
    title: Go or no-go
    timeout: 2m
  - id: after
    kind: patch
    title: The change
    run: { shell: "true" }
"#;

#[test]
fn approvals_from_another_process_and_the_report_so_far() {
    let w = World::sqlite();
    w.write("rb.yaml", APPROVAL);
    let mut runner = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "ap"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_status(&w, "ap", "awaiting_approval", &mut runner);

    // While it waits: the report so far, clearly marked, exit 0.
    let doc = report_json(&w, "ap");
    assert_eq!(doc["run"]["outcome"], "awaiting_approval");
    assert_eq!(doc["run"]["finished"], false);
    assert!(doc["run"]["ended_at"].is_null());
    assert_eq!(step(&doc, "go")["status"], "awaiting_approval");
    assert_eq!(step(&doc, "after")["status"], "pending");
    assert_eq!(doc["approvals"][0]["decision"], "waiting");
    assert!(doc["approvals"][0]["by"].is_null());
    let md = report(&w, "ap", "md");
    assert!(
        md.contains("> **REPORT SO FAR**: the run has not ended (waiting for approval)"),
        "{md}"
    );
    assert!(md.contains("| Go or no-go `go` | waiting | — |"), "{md}");
    let html = report(&w, "ap", "html");
    assert_self_contained(&html);
    assert!(html.contains("class=\"sofar\">Report so far"));
    assert!(html.contains(">now</text>"), "the chart marks now");

    std::thread::sleep(Duration::from_millis(400));
    let ok = w.run(&["approve", "ap", "go", "--by", "alice"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let status = runner.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let doc = report_json(&w, "ap");
    assert_eq!(doc["run"]["outcome"], "completed");
    let a = &doc["approvals"][0];
    assert_eq!(a["step"], "go");
    assert_eq!(a["title"], "Go or no-go");
    assert_eq!(a["decision"], "approved");
    assert_eq!(a["by"], "alice");
    assert!(a["waited_ms"].as_i64().unwrap() >= 400, "{a}");
    assert_eq!(
        a["waited_ms"].as_i64().unwrap(),
        a["decided_at_ms"].as_i64().unwrap() - a["requested_at_ms"].as_i64().unwrap()
    );
    let md = report(&w, "ap", "md");
    assert!(
        md.contains("| Go or no-go `go` | approved | alice |"),
        "{md}"
    );
    assert!(!md.contains("REPORT SO FAR"));
}

/// The Gantt chart of a run much shorter than its window shows the run, the window's end
/// marked past the edge; a run that fills its window is drawn with the whole window.
#[test]
fn the_gantt_chart_zooms_to_a_run_much_shorter_than_its_window() {
    let w = World::sqlite();
    let rb = |window: &str| {
        format!(
            "runbook: zoom\nwindow: {{ duration: {window} }}\nsteps:\n  - {{ id: a, kind: patch, expected: 1s, run: {{ shell: 'sleep 0.2' }} }}\n  - {{ id: b, kind: patch, expected: 1s, run: {{ shell: 'sleep 0.2' }} }}\n"
        )
    };
    w.write("short.yaml", &rb("2h"));
    assert_eq!(w.execute("short.yaml", "short").code, 0);
    let html = report(&w, "short", "html");
    let svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    assert!(svg.contains("→ (zoomed to the run)"), "{svg}");
    assert!(svg.contains("window end"), "{svg}");
    // Zoomed, the second step's planned bar starts well inside the chart, not in its
    // first pixels (the chart spans x 280 to 1136).
    let planned: Vec<f64> = svg
        .split("<rect ")
        .filter(|r| r.contains("fill=\"#c7d2fe\""))
        .map(|r| {
            let x = r.split("x=\"").nth(1).unwrap().split('"').next().unwrap();
            x.parse().unwrap()
        })
        .collect();
    assert_eq!(planned.len(), 2, "{svg}");
    assert!(planned[1] > 600.0, "{planned:?}");

    w.write("long.yaml", &rb("3s"));
    assert_eq!(w.execute("long.yaml", "long").code, 0);
    let html = report(&w, "long", "html");
    let svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    assert!(!svg.contains("zoomed"), "{svg}");
    assert!(svg.contains("window end"), "{svg}");
}

#[test]
fn the_report_needs_only_the_journal() {
    let w = World::sqlite();
    w.write("rb.yaml", ROLLS_BACK);
    assert_eq!(w.execute("rb.yaml", "gone").code, 3);
    std::fs::remove_file(w.path("rb.yaml")).unwrap();
    let doc = report_json(&w, "gone");
    assert_eq!(doc["steps"].as_array().unwrap().len(), 5);
    assert_eq!(step(&doc, "change")["title"], "Change the schema");
    assert_eq!(step(&doc, "change")["expected_ms"], 1000);
    assert_eq!(step(&doc, "reopen")["kind"], "reopen");
    for format in ["md", "html"] {
        assert!(report(&w, "gone", format).contains("Change the schema"));
    }
}

#[test]
fn an_unknown_run_is_refused_without_creating_a_store() {
    let w = World::sqlite();
    let o = w.run(&["report", "nope"]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr, "error: no run `nope` in this store\n");
    assert!(o.stdout.is_empty());
    assert!(!w.path("state").exists(), "a store was created");
    // With a store that has other runs.
    w.write(
        "rb.yaml",
        "runbook: one\nsteps:\n  - { id: a, kind: patch, run: { shell: \"true\" } }\n",
    );
    assert_eq!(w.execute("rb.yaml", "real").code, 0);
    let o = w.run(&["report", "nope", "--format", "html"]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr, "error: no run `nope` in this store\n");
}

#[test]
fn bad_flags_are_usage_errors() {
    let w = World::sqlite();
    let o = w.run(&["report", "x", "--format", "pdf"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("invalid value 'pdf'"), "{}", o.stderr);
    assert_eq!(w.run(&["report"]).code, 2);
}

#[test]
fn output_files_are_written_whole_or_not_at_all() {
    let w = World::sqlite();
    w.write("rb.yaml", ROLLS_BACK);
    assert_eq!(w.execute("rb.yaml", "o1").code, 3);

    // Into a directory that does not exist: exit 1, a clear message, nothing written.
    let o = w.run(&[
        "report",
        "o1",
        "-o",
        "missing/dir/report.html",
        "--format",
        "html",
    ]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "error: cannot write `missing/dir/report.html`: the directory `missing/dir` does not exist\n"
    );
    assert!(!w.path("missing").exists());

    // Into a directory that exists: the whole report, nothing on stdout, no temp file.
    std::fs::create_dir(w.path("out")).unwrap();
    for (format, name) in [("html", "r.html"), ("md", "r.md"), ("json", "r.json")] {
        let file = format!("out/{name}");
        let o = w.run(&["report", "o1", "--format", format, "-o", &file]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(o.stdout.is_empty());
        let written = std::fs::read_to_string(w.path(&file)).unwrap();
        let again = report(&w, "o1", format);
        if format == "json" {
            let mut a: Value = serde_json::from_str(&written).unwrap();
            let mut b: Value = serde_json::from_str(&again).unwrap();
            for d in [&mut a, &mut b] {
                d["generated_at"] = Value::Null;
                d["generated_at_ms"] = Value::Null;
            }
            assert_eq!(a, b);
        } else {
            // The same report but for the time it was made.
            let timeless = |t: &str| {
                t.lines()
                    .filter(|l| !l.starts_with("| Report made") && !l.starts_with("<footer>"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(timeless(&written), timeless(&again));
        }
    }
    // Overwriting replaces it.
    let o = w.run(&["report", "o1", "--format", "md", "-o", "out/r.html"]);
    assert_eq!(o.code, 0);
    assert!(
        std::fs::read_to_string(w.path("out/r.html"))
            .unwrap()
            .starts_with("# ")
    );
    let mut names: Vec<String> = std::fs::read_dir(w.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["r.html", "r.json", "r.md"],
        "a temporary file was left behind"
    );
    // A directory as the target is refused.
    let o = w.run(&["report", "o1", "-o", "out"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("it is a directory"), "{}", o.stderr);
}

#[test]
fn every_text_from_the_journal_is_escaped() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        r#"runbook: escapes
title: '<script>alert("title")</script> & "quotes" ''single'''
steps:
  - id: evil
    kind: patch
    title: '<img src=x onerror=alert(1)> "step" | pipe'
    run: { shell: "echo '{\"note\": \"<b>bold</b> & <script>x</script>\"}'" }
  - id: fails
    kind: patch
    title: "<i>fails</i>"
    run: { shell: "echo '<script>alert(2)</script>' >&2; exit 1" }
"#,
    );
    let out = w.execute("rb.yaml", "esc");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let html = report(&w, "esc", "html");
    assert_self_contained(&html);
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "a script got through");
    assert!(!lower.contains("<img"), "an element got through");
    assert!(!lower.contains("<b>bold"), "an output got through");
    assert!(!lower.contains("<i>fails"), "a title got through");
    assert!(html.contains("&lt;script&gt;alert(&quot;title&quot;)&lt;/script&gt; &amp; &quot;quotes&quot; &#x27;single&#x27;"));
    assert!(html.contains("&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;"));
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;"));
    assert!(html.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));

    let md = report(&w, "esc", "md");
    // Every `<` is escaped, but for the report's own line breaks in table cells.
    for (i, _) in md.match_indices('<') {
        assert!(
            md[..i].ends_with('\\') || md[i..].starts_with("<br>"),
            "an unescaped `<` at {i}: {}",
            &md[i.saturating_sub(40)..(i + 40).min(md.len())]
        );
    }
    assert!(
        md.contains("\\<img src=x onerror=alert(1)\\> \"step\" \\| pipe"),
        "{md}"
    );
    // The JSON keeps the text as it is (JSON escaping is the reader's business).
    let doc = report_json(&w, "esc");
    assert_eq!(
        doc["run"]["title"],
        "<script>alert(\"title\")</script> & \"quotes\" 'single'"
    );
}

#[test]
fn the_committed_schema_is_current() {
    let path = common::root().join(SCHEMA_FILE);
    let want = schema_text();
    if std::env::var_os("UPDATE_REPORT_SCHEMA").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == want,
        "{SCHEMA_FILE} is stale: run `UPDATE_REPORT_SCHEMA=1 cargo test --test it report::the_committed_schema_is_current`"
    );
    let schema: Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(schema["title"], "runbook report v1");
    assert_eq!(schema["properties"]["schema_version"]["const"], 1);
    // A document that breaks the schema is refused: it does check something.
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(!validator.is_valid(&json!({ "schema_version": 2 })));
}

// ---------------------------------------------------------------------------------
// In process, from events written here: what real runs make hard to reach.

fn rec(seq: i64, at_ms: i64, event: Value) -> runbook::engine::event::Recorded {
    runbook::engine::event::Recorded {
        seq,
        at_ms,
        event: serde_json::from_value(event).expect("a valid event"),
    }
}

/// A run with a hidden step (with outputs and an error), a public one, two closures
/// (the second still open), a fan-out with failures and long outputs.
fn crafted() -> Vec<runbook::engine::event::Recorded> {
    let t = 1_790_000_000_000i64;
    let long = "x".repeat(500);
    let events = vec![
        json!({"type": "run_started", "runbook": "crafted", "title": "Internal title",
        "file": "/nowhere/rb.yaml", "file_sha256": "00", "vars": {}, "operator": "op",
        "host": "db-admin-7", "pid": 1,
        "public": {"title": "Public title", "summary": "We tidy up.", "components": ["api"],
                   "timezone": "America/New_York",
                   "planned_start_ms": t, "planned_end_ms": t + 60_000,
                   "steps": [
                       {"id": "secret-step", "kind": "patch", "label": "Rotate the HUNTER2 key", "expected_ms": 5000},
                       {"id": "fan", "title": "Update every tenant", "label": "Fan out", "kind": "install", "expected_ms": 1000},
                       {"id": "later", "title": "Later step", "kind": "patch"}
                   ]}}),
        json!({"type": "service_closed"}),
        json!({"type": "step_checking", "step": "secret-step", "attempt": 1}),
        json!({"type": "step_started", "step": "secret-step", "attempt": 1}),
        json!({"type": "step_failed", "step": "secret-step", "attempt": 1, "error": "password=****; SECRET-ERROR"}),
        json!({"type": "retry_scheduled", "step": "secret-step", "next_attempt": 2, "at_ms": t + 2000}),
        json!({"type": "step_checking", "step": "secret-step", "attempt": 2}),
        json!({"type": "step_started", "step": "secret-step", "attempt": 2}),
        json!({"type": "step_succeeded", "step": "secret-step", "attempt": 2,
               "outputs": {"token_path": "/secret/OUTPUT-VALUE", "long": long,
                           "list": (0..30).collect::<Vec<_>>()}}),
        json!({"type": "service_reopened"}),
        json!({"type": "published", "kind": "manual", "status": "in_progress", "body": "Half way.", "by": "ann"}),
        json!({"type": "service_closed"}),
        json!({"type": "step_checking", "step": "fan", "attempt": 1}),
        json!({"type": "step_started", "step": "fan", "attempt": 1}),
    ];
    let mut out: Vec<_> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| rec(i as i64 + 1, t + i as i64 * 1000, e))
        .collect();
    let mut seq = out.len() as i64;
    let mut at = t + 20_000;
    for i in 0..30usize {
        seq += 1;
        out.push(rec(
            seq,
            at,
            json!({"type": "item_started", "step": "fan", "index": i}),
        ));
        seq += 1;
        let e = if i % 3 == 0 {
            json!({"type": "item_failed", "step": "fan", "index": i, "error": format!("tenant {i} refused")})
        } else {
            json!({"type": "item_succeeded", "step": "fan", "index": i})
        };
        out.push(rec(seq, at, e));
        at += 100;
    }
    seq += 1;
    out.push(rec(
        seq,
        t + 90_000,
        json!({"type": "step_failed", "step": "fan", "attempt": 1, "error": "10 items failed"}),
    ));
    seq += 1;
    out.push(rec(
        seq,
        t + 90_000,
        json!({"type": "run_aborted", "by": "bob", "reason": "out of time"}),
    ));
    out
}

#[test]
fn in_process_reports_count_what_runs_rarely_show() {
    let events = crafted();
    let t = events[0].at_ms;
    let now = t + 120_000;
    let r = runbook::report::build("c1", &events, now).unwrap();
    let doc = serde_json::to_value(&r).unwrap();
    assert_valid(&doc);
    assert_eq!(doc["run"]["outcome"], "aborted");
    assert_eq!(doc["run"]["aborted_by"], "bob");
    // Planned from the recorded window; overrun by 30 s.
    assert_eq!(doc["window"]["planned_start_from"], "window");
    assert_eq!(doc["window"]["held"], false);
    assert_eq!(doc["window"]["overrun_ms"], 30_000);
    // Two closures; the second still open, counted to the report's time.
    let svc = &doc["service"];
    assert_eq!(svc["intervals"].as_array().unwrap().len(), 2);
    assert_eq!(svc["intervals"][0]["duration_ms"], 8000);
    assert_eq!(svc["still_closed"], true);
    assert_eq!(svc["closed_ms"], 8000 + (now - (t + 11_000)));
    // Attempts, errors, retries; overrun against `expected`.
    let s = step(&doc, "secret-step");
    assert_eq!(s["attempts"], 2);
    assert_eq!(s["errors"][0]["error"], "password=****; SECRET-ERROR");
    assert_eq!(s["duration_ms"], 6000);
    assert_eq!(s["overrun_ms"], 1000);
    assert_eq!(s["public_title"], Value::Null);
    // Long outputs abbreviated.
    let long = s["outputs"]["long"].as_str().unwrap();
    assert_eq!(long.chars().count(), 201);
    assert!(long.ends_with('…'));
    assert_eq!(s["outputs"]["list"].as_array().unwrap().len(), 11);
    // Fan-out counts; item errors listed.
    let fan = step(&doc, "fan");
    let counts = ["total", "succeeded", "failed", "running"].map(|k| fan["items"][k].clone());
    assert_eq!(counts, [30, 20, 10, 0].map(Value::from));
    // One row per item, each with its outcome and timing.
    let rows = fan["items"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 30);
    assert_eq!(
        (&rows[3]["status"], &rows[3]["error"]),
        (&json!("failed"), &json!("tenant 3 refused"))
    );
    assert_eq!(rows[4]["status"], "succeeded");
    assert_eq!(rows[4]["duration_ms"], 0);
    assert_eq!(fan["errors"].as_array().unwrap().len(), 11);
    assert_eq!(fan["errors"][0]["item"], 0);
    assert_eq!(fan["status"], "failed");
    assert_eq!(step(&doc, "later")["status"], "not_run");
    // Planned chain: 5 s, then 1 s, then 0.
    assert_eq!(step(&doc, "later")["planned_start_ms"], t + 6000);
    // An aborted run gets a postmortem draft.
    assert!(
        doc["postmortem"]["summary"]
            .as_str()
            .unwrap()
            .contains("Aborted by bob")
    );
    // America/New_York in the human formats.
    assert!(r.to_markdown().contains("| Times | America/New_York |"));
    let html = r.to_html();
    assert!(html.contains(" EDT"), "times in the runbook's zone");
    assert_self_contained(&html);
}

#[test]
fn the_public_summary_holds_only_public_fields() {
    let events = crafted();
    let now = events[0].at_ms + 120_000;
    let s = runbook::report::public_summary("c1", &events, now).unwrap();
    let doc = serde_json::to_value(&s).unwrap();
    let validator = jsonschema::validator_for(&runbook::report::public_schema()).unwrap();
    assert!(validator.is_valid(&doc), "{doc:#}");
    assert_eq!(doc["title"], "Public title");
    assert_eq!(doc["outcome"], "aborted");
    assert_eq!(doc["held"], false);
    let titles: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Update every tenant", "Later step"]);
    assert_eq!(doc["updates"][0]["body"], "Half way.");
    let text = doc.to_string();
    for secret in [
        "secret-step",
        "HUNTER2",
        "Internal title",
        "Fan out",
        "SECRET-ERROR",
        "OUTPUT-VALUE",
        "tenant 0 refused",
        "db-admin-7",
        "\"op\"",
        "bob",
        "\"ann\"",
        "out of time",
        "/nowhere",
        "\"fan\"",
        "\"later\"",
    ] {
        assert!(
            !text.contains(secret),
            "`{secret}` in the public summary: {text}"
        );
    }
}

#[test]
fn the_public_summary_of_a_real_run() {
    let w = World::sqlite();
    w.write("rb.yaml", COMPLETED);
    std::fs::create_dir_all(w.path("data")).unwrap();
    assert_eq!(w.execute("rb.yaml", "pub").code, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let events = rt.block_on(async {
        let store = runbook::store::Store::open(&w.store).await.unwrap();
        runbook::report::load(&store, "pub").await.unwrap()
    });
    let s = runbook::report::public_summary("pub", &events, runbook::store::now_ms()).unwrap();
    let text = serde_json::to_string(&s).unwrap();
    // `prepare` is `public: false`.
    assert!(!text.contains("Prepare the database"), "{text}");
    assert!(!text.contains("\"prepare\""), "{text}");
    assert_eq!(s.steps.len(), 5);
    assert_eq!(s.title.as_deref(), Some("Shop upkeep"));
    assert!(s.finished);
    assert!(!s.updates.is_empty());
}

// ---------------------------------------------------------------------------------
// A real browser.

const CHROMIUM: &str = "/usr/bin/chromium";

fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or(tmp)
}

fn ensure_chromium() {
    if Path::new(CHROMIUM).exists() {
        return;
    }
    let status = Command::new("bash")
        .arg(common::root().join("scripts/test-tools.sh"))
        .arg("chromium")
        .status()
        .expect("scripts/test-tools.sh runs");
    assert!(
        status.success(),
        "scripts/test-tools.sh chromium failed ({status})"
    );
}

/// A run worth looking at: steps that take time, one over its expected time, a close
/// and a reopen, a failure and a rollback.
const SHOWCASE: &str = r#"runbook: showcase
title: Platform upgrade 3.2
summary: We are upgrading the database.
window:
  start: 2026-11-24T19:00:00Z
  duration: 10s
  timezone: Europe/London
steps:
  - id: backup
    kind: patch
    title: Back up all customer data
    expected: 400ms
    checkpoint: true
    run: { shell: "sleep 0.3; echo '{\"size_bytes\": 1234567, \"path\": \"backups/b.db\"}'" }
  - id: close
    kind: close
    title: Close the service
  - id: migrate
    kind: patch
    title: Migrate the schema
    expected: 300ms
    run: { shell: "sleep 1.5; echo '{\"from_version\": 3, \"to_version\": 5}'" }
    rollback: { shell: "sleep 0.2" }
  - id: optimise
    kind: patch
    title: Tidy up the database
    expected: 300ms
    public: false
    run: { shell: "sleep 0.2" }
    rollback: { shell: "sleep 0.1" }
  - id: smoke
    kind: test
    title: Smoke test <the shop>
    expected: 200ms
    run: { shell: "sleep 0.2; echo 'HTTP 500 from /health' >&2; exit 1" }
  - id: reopen
    kind: reopen
    title: Reopen the service
"#;

#[test]
fn a_real_browser_renders_the_html_report() {
    ensure_chromium();
    let w = World::sqlite();
    w.write("rb.yaml", SHOWCASE);
    let out = w.execute("rb.yaml", "show");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let target = target_dir();
    let html = target.join("report.html");
    let png = target.join("report.png");
    let _ = std::fs::remove_file(&png);
    let o = w.run(&[
        "report",
        "show",
        "--format",
        "html",
        "-o",
        html.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let doc = report_json(&w, "show");
    assert!(step(&doc, "migrate")["overrun_ms"].as_i64().unwrap() > 0);

    let profile = tempfile::tempdir().unwrap();
    let mut chromium = Command::new(CHROMIUM)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,2000",
            &format!("file://{}", html.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = chromium.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = chromium.kill();
            let _ = chromium.wait();
            panic!("chromium took more than 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read as _;
    let _ = chromium
        .stderr
        .take()
        .map(|mut s| s.read_to_string(&mut err));
    assert!(status.success(), "chromium failed: {err}");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}): {err}"));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "a suspiciously small screenshot");
    eprintln!("screenshot: {}", png.display());
}
