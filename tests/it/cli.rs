//! The real binary on the example runbooks: validate, plan, schema.

use crate::common;

use serde_json::Value;

#[test]
fn every_example_runbook_validates() {
    let mut files: Vec<String> = std::fs::read_dir(common::root().join("runbooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("runbooks/{n}"))
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f == "runbooks/demo.yaml"));
    assert!(files.iter().any(|f| f == "runbooks/postgres-upgrade.yaml"));
    let args: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = common::run(&args);
    assert_eq!(out.stderr, "");
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout.lines().count(), files.len());
    for f in &files {
        assert!(out.stdout.contains(&format!("{f}: ok (runbook `")), "{f}");
    }
}

#[test]
fn validate_prints_one_line_per_valid_file() {
    let out = common::run(&[
        "validate",
        "runbooks/demo.yaml",
        "runbooks/postgres-upgrade.yaml",
    ]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        "runbooks/demo.yaml: ok (runbook `demo`, 9 steps)\n\
         runbooks/postgres-upgrade.yaml: ok (runbook `postgres-upgrade`, 13 steps)\n"
    );
}

#[test]
fn validate_reports_invalid_files_and_still_checks_the_others() {
    let out = common::run(&[
        "validate",
        "tests/invalid/unknown-kind.yaml",
        "runbooks/demo.yaml",
        "tests/invalid/requires-unknown.yaml",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "runbooks/demo.yaml: ok (runbook `demo`, 9 steps)\n"
    );
    let first = std::fs::read_to_string(common::root().join("tests/invalid/unknown-kind.expected"))
        .unwrap();
    let second =
        std::fs::read_to_string(common::root().join("tests/invalid/requires-unknown.expected"))
            .unwrap();
    assert_eq!(out.stderr, format!("{first}\n{second}"));
}

#[test]
fn validate_without_files_is_a_usage_error() {
    let out = common::run(&["validate"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("FILES"), "{}", out.stderr);
}

#[test]
fn plan_shows_the_timeline_window_fit_and_rollback_paths() {
    // No earlier runs to learn from: the runbook's own durations.
    let out = common::run(&[
        "plan",
        "runbooks/demo.yaml",
        "--store",
        "sqlite:///nonexistent/none.db",
    ]);
    assert_eq!(out.stderr, "");
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        "\
Plan for `demo`: Shop database maintenance
Start:  Tue 24 Nov 2026 19:00 GMT (the window's start)
Window: Tue 24 Nov 2026 19:00 GMT → Tue 24 Nov 2026 19:30 GMT (30m, Europe/London)

  #  step           kind      start  end    expected  notes
  1  prepare        patch     19:00  19:00       10s  not public
  2  backup         backup    19:00  19:01        1m  checkpoint
  3  verify-backup  verify    19:01  19:02        1m
  4  close          close     19:02  19:02         -
  5  migrate        migrate   19:02  19:04        2m
  6  optimise       optimise  19:04  19:05        1m
  7  verify         verify    19:05  19:05       30s  not public
  8  smoke          test      19:05  19:06       30s
  9  reopen         reopen    19:06  19:06         -

Total expected: 6m10s; fits the window with 23m50s to spare.
Point of no return: none: before every step, the step and a rollback fit the window.

If a step fails:
  prepare        roll back: nothing to undo (back to the start)
  backup         roll back: prepare (no rollback, left as is); back to the start
  verify-backup  roll back: nothing to undo (back to checkpoint `backup`)
  close          roll back: nothing to undo (back to checkpoint `backup`)
  migrate        roll back: nothing to undo (back to checkpoint `backup`); reopen the service
  optimise       record the failure and continue
  verify         roll back: undo migrate; back to checkpoint `backup`; reopen the service
  smoke          roll back: undo migrate; back to checkpoint `backup`; reopen the service
  reopen         roll back: undo migrate; back to checkpoint `backup`; reopen the service
"
    );
}

fn plan_json(args: &[&str]) -> Value {
    let mut all = vec!["plan"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = common::run(&all);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// What a failure of step `id` goes back over, as the JSON tells it: the positions
/// `from_position` down to `to_position`, each step undone as its `undone_by` says.
fn rollback_path<'a>(p: &'a Value, id: &str) -> Vec<(&'a str, &'a str)> {
    let steps = p["steps"].as_array().unwrap();
    let f = &steps.iter().find(|s| s["id"] == id).unwrap()["if_it_fails"];
    let (Some(from), Some(to)) = (f["from_position"].as_u64(), f["to_position"].as_u64()) else {
        return Vec::new();
    };
    (to..=from)
        .rev()
        .map(|pos| &steps[pos as usize - 1])
        .filter(|s| !s["undone_by"].is_null())
        .map(|s| (s["id"].as_str().unwrap(), s["undone_by"].as_str().unwrap()))
        .collect()
}

#[test]
fn plan_json_is_a_stable_document() {
    let p = plan_json(&["runbooks/postgres-upgrade.yaml"]);
    assert_eq!(p["runbook"], "postgres-upgrade");
    assert_eq!(p["title"], "Platform upgrade 3.2");
    assert_eq!(p["start"], "2026-11-24T19:00:00Z");
    assert_eq!(p["start_source"], "window");
    assert_eq!(p["timezone"], "Europe/London");
    assert_eq!(p["total_expected_seconds"], 116 * 60);
    assert_eq!(p["window_seconds"], 7200);
    assert_eq!(p["fits_window"], true);
    assert_eq!(p["slack_seconds"], 4 * 60);
    let steps = p["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 13);
    let step = |id: &str| steps.iter().find(|s| s["id"] == id).unwrap();
    assert_eq!(step("backup")["checkpoint"], true);
    assert_eq!(step("backup-tenants")["items"], 3);
    assert_eq!(step("backup-tenants")["start"], "2026-11-24T19:21:00Z");
    // The undos after the checkpoint, most recent first (the tenants' too).
    let f = &step("install")["if_it_fails"];
    assert_eq!(f["policy"], "rollback");
    assert_eq!(
        rollback_path(&p, "install"),
        [("migrate-tenants", "rollback"), ("migrate", "rollback")]
    );
    assert_eq!(f["undo"], 2);
    assert_eq!(f["back_to"], "backup");
    assert_eq!(f["restore_from"], Value::Null);
    assert_eq!(f["reopen"], true);
    assert_eq!(step("optimise")["if_it_fails"]["policy"], "continue");
    // `install` requires `migrate`, which is already before it: file order holds.
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(&ids[6..9], &["migrate", "migrate-tenants", "install"]);
}

#[test]
fn plan_lists_undo_steps_most_recent_first() {
    let p = plan_json(&["runbooks/design-example.yaml"]);
    let smoke = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "smoke")
        .unwrap();
    let f = &smoke["if_it_fails"];
    assert_eq!(f["back_to"], "backup");
    // The fan-out `install` has no rollback: its tenants are left as they are, and
    // the plan says so.
    assert_eq!((f["undo"].as_u64(), f["left"].as_u64()), (Some(1), Some(1)));
    assert_eq!(
        rollback_path(&p, "smoke"),
        [("install", "left"), ("migrate", "rollback")]
    );
    let step = |id: &str| {
        p["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(step("install")["rollback"], Value::Null);
    assert_eq!(step("migrate")["rollback"], "migrate (built-in)");
}

#[test]
fn plan_start_and_vars_override_the_file() {
    let p = plan_json(&[
        "runbooks/postgres-upgrade.yaml",
        "--start",
        "2026-12-01T22:00:00+01:00",
        "--var",
        "version=4.0",
    ]);
    assert_eq!(p["start"], "2026-12-01T21:00:00Z");
    assert_eq!(p["start_source"], "flag");
    assert_eq!(p["title"], "Platform upgrade 4.0");
    assert_eq!(p["window_end"], "2026-12-01T23:00:00Z");
    let install = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "install")
        .unwrap();
    assert_eq!(install["title"], "Install version 4.0 of the application");
    // Without an offset, --start is read in the window's time zone (BST in summer).
    let p = plan_json(&[
        "runbooks/postgres-upgrade.yaml",
        "--start",
        "2026-07-01T20:00",
    ]);
    assert_eq!(p["start"], "2026-07-01T19:00:00Z");
}

#[test]
fn plan_reports_a_window_overrun() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tight.yaml"),
        "runbook: tight\nwindow: { start: 2026-11-24T19:00:00Z, duration: 30m }\nsteps:\n  - { id: migrate, kind: migrate, expected: 25m, with: { database: 'sqlite://app.db', dir: migrations } }\n  - { id: smoke, kind: test, expected: 10m, checks: [ { shell: 'true' } ] }\n",
    )
    .unwrap();
    let out = common::run_in(dir.path(), &["plan", "tight.yaml"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout
            .contains("Total expected: 35m; does NOT fit the window: over by 5m."),
        "{}",
        out.stdout
    );
    let out = common::run_in(dir.path(), &["plan", "tight.yaml", "--format", "json"]);
    let p: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(p["fits_window"], false);
    assert_eq!(p["slack_seconds"], -300);
}

#[test]
fn plan_refuses_a_duration_too_long_to_count() {
    // Once counted as 0s ("fits the window with 2h to spare").
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("long.yaml"),
        "runbook: long\nwindow: { start: 2026-11-24T19:00:00Z, duration: 2h }\nsteps:\n  - { id: patch, kind: patch, expected: 1000000000y, run: { shell: 'true' } }\n",
    )
    .unwrap();
    for format in ["text", "json"] {
        let out = common::run_in(dir.path(), &["plan", "long.yaml", "--format", format]);
        assert_eq!(out.code, 1, "{}", out.stdout);
        assert_eq!(out.stdout, "");
        assert_eq!(
            out.stderr,
            "error: duration `1000000000y` is too long: a duration is at most 366d\n \
             --> long.yaml:4:41\n  |\n4 |   - { id: patch, kind: patch, expected: 1000000000y, run: { shell: 'true' } }\n  \
             |                                         ^^^^^^^^^^^\n  = field: steps[0].expected\n"
        );
    }
    // A year and a day is the most: it is counted, and does not fit.
    std::fs::write(
        dir.path().join("year.yaml"),
        "runbook: year\nwindow: { start: 2026-11-24T19:00:00Z, duration: 2h }\nsteps:\n  - { id: patch, kind: patch, expected: 366d, run: { shell: 'true' } }\n",
    )
    .unwrap();
    let out = common::run_in(dir.path(), &["plan", "year.yaml", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let p: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(p["fits_window"], false);
    assert_eq!(p["total_expected_seconds"], 366 * 86_400);
}

#[test]
fn plan_refuses_an_unknown_variable() {
    let out = common::run(&[
        "plan",
        "runbooks/demo.yaml",
        "--var",
        "app_dbb=sqlite://x.db",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "error: --var app_dbb: runbook `demo` has no variable `app_dbb`: did you mean `app_db`?\n"
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn plan_refuses_malformed_flags() {
    let out = common::run(&["plan", "runbooks/demo.yaml", "--var", "novalue"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("expected NAME=VALUE"), "{}", out.stderr);
    let out = common::run(&["plan", "runbooks/demo.yaml", "--start", "next tuesday"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("error: --start: invalid timestamp `next tuesday`"),
        "{}",
        out.stderr
    );
    let out = common::run(&["plan", "runbooks/demo.yaml", "--format", "yaml"]);
    assert_eq!(out.code, 2);
}

#[test]
fn plan_of_an_invalid_runbook_shows_the_problems() {
    let out = common::run(&["plan", "tests/invalid/cycle.yaml"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    let expected =
        std::fs::read_to_string(common::root().join("tests/invalid/cycle.expected")).unwrap();
    // `plan` shows the same problems as `validate`, without the per-file summary line.
    assert!(expected.starts_with(&out.stderr), "{}", out.stderr);
}

#[test]
fn schema_is_json_schema_describing_the_format() {
    let out = common::run(&["schema"]);
    assert_eq!(out.code, 0);
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["additionalProperties"], false);
    let props = s["properties"].as_object().unwrap();
    for field in [
        "runbook",
        "title",
        "summary",
        "window",
        "status_page",
        "vars",
        "secrets",
        "targets",
        "steps",
    ] {
        assert!(props.contains_key(field), "{field}");
    }
    let required: Vec<&str> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, vec!["runbook", "steps"]);
    let step = &s["$defs"]["RawStep"];
    assert_eq!(step["additionalProperties"], false);
    let kinds = s["$defs"]["Kind"].to_string();
    assert!(
        kinds.contains("\"migrate\"") && kinds.contains("\"restore\""),
        "{kinds}"
    );
}
