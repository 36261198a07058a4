//! Every safety feature does its job, through the real binary: fan-out checks and
//! preconditions run per item, a fan-out checkpoint restores per item, a restore does
//! not swallow the undo of what it does not restore, close and reopen with an action
//! still close and reopen, `expect` values are templates, a fan-out shell keeps its
//! timeout, a panic fails one item, and a public update the store refused is retried.

use crate::both_stores;
use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::world::World;
use common::{Output, psql};

both_stores!(
    fan_out_checks_and_preconditions_run_per_item,
    fan_out_wait_checks_until_per_item,
    a_fan_out_checkpoint_restores_every_item,
    a_restore_still_undoes_the_steps_it_does_not_restore,
    close_and_reopen_with_an_action_still_close_and_reopen,
    expect_values_are_templates,
    a_fan_out_shell_action_keeps_its_timeout,
    a_panic_fails_only_its_item,
    a_public_update_the_store_refused_is_retried,
);

fn fan_out_checks_and_preconditions_run_per_item(w: &World) {
    let rb = |max: u32| {
        format!(
            r#"runbook: per-item
steps:
  - id: smoke
    kind: test
    for_each: [a, b, c]
    concurrency: 3
    max_failures: {max}
    preconditions:
      - shell: "echo pre-{{{{item}}}} >> markers"
    run: {{ shell: "echo run-{{{{item}}}} >> markers" }}
    checks:
      - shell: "echo check-{{{{item}}}} >> markers; test {{{{item}}}} != b"
        message: "tenant {{{{item}}}} answers"
"#
        )
    };
    w.write("rb.yaml", &rb(0));
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    for item in ["a", "b", "c"] {
        for what in ["pre", "run", "check"] {
            assert_eq!(w.count(&format!("{what}-{item}")), 1, "{what}-{item}");
        }
    }
    let s = w.status_json("r1");
    let smoke = &s["steps"]["smoke"];
    assert_eq!(smoke["status"], "failed", "{smoke}");
    assert!(
        smoke["error"]
            .as_str()
            .unwrap()
            .contains("1 of 3 items failed"),
        "{smoke}"
    );
    // The failing item says which check failed, with its own item.
    assert!(
        out.stdout.contains("item b FAILED: tenant b answers"),
        "{}",
        out.stdout
    );
    // One failure allowed: the step succeeds.
    std::fs::remove_file(w.path("markers")).unwrap();
    w.write("rb.yaml", &rb(1));
    let out = w.execute("rb.yaml", "r2");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.count("check-c"), 1);
}

fn fan_out_wait_checks_until_per_item(w: &World) {
    w.write(
        "rb.yaml",
        r#"runbook: wait-per-item
steps:
  - id: drained
    kind: wait
    for_each: [q1, q2]
    interval: 100ms
    timeout: 5s
    until:
      - shell: "echo until-{{item}} >> markers; test -f {{item}}.empty"
"#,
    );
    w.write("q1.empty", "");
    w.write("q2.empty", "");
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.count("until-q1"), 1);
    assert_eq!(w.count("until-q2"), 1);
}

/// Three tenant SQLite databases, each with one row.
fn tenants(w: &World) {
    for t in ["acme", "globex", "initech"] {
        let db = w.path(&format!("{t}.db"));
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg("create table t (v integer); insert into t values (1);")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

fn rows(w: &World, tenant: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(w.path(&format!("{tenant}.db")))
        .arg("select group_concat(v) from t")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn a_fan_out_checkpoint_restores_every_item(w: &World) {
    tenants(w);
    w.write(
        "rb.yaml",
        r#"runbook: tenants
targets:
  tenants: [acme, globex, initech]
steps:
  - id: snap
    kind: backup
    for_each: "{{targets.tenants}}"
    checkpoint: true
    with: { database: "sqlite://{{item}}.db" }
    restore: { kind: restore, with: { database: "sqlite://{{item}}.db", from: "{{steps.snap.outputs.path}}" } }
  - id: change
    kind: migrate
    for_each: "{{targets.tenants}}"
    run: { sql: "insert into t values (2)", database: "sqlite://{{item}}.db" }
  - id: boom
    kind: patch
    run: { shell: "exit 1" }
"#,
    );
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    for t in ["acme", "globex", "initech"] {
        assert_eq!(rows(w, t), "1", "tenant {t} is back as it was");
    }
    let s = w.status_json("r1");
    assert_eq!(s["status"], "rolled_back");
    assert_eq!(s["steps"]["snap"]["status"], "rolled_back");
    assert_eq!(s["steps"]["change"]["status"], "rolled_back");
    assert!(
        out.stdout.contains("the service is restored"),
        "{}",
        out.stdout
    );
}

fn a_restore_still_undoes_the_steps_it_does_not_restore(w: &World) {
    tenants(w);
    w.write("app.txt", "v1\n");
    w.write(
        "rb.yaml",
        r#"runbook: app-and-db
steps:
  - id: snap
    kind: backup
    checkpoint: true
    with: { database: "sqlite://acme.db" }
    restore: { kind: restore, with: { database: "sqlite://acme.db", from: "{{steps.snap.outputs.path}}" } }
  - id: close
    kind: close
  - id: migrate
    kind: migrate
    run: { sql: "insert into t values (2)", database: "sqlite://acme.db" }
    rollback: { shell: "echo migrate-rollback-ran >> markers" }
  - id: install
    kind: install
    run: { shell: "cp app.txt app.old && echo v2 > app.txt" }
    rollback: { shell: "mv app.old app.txt" }
  - id: tweak
    kind: patch
    run: { shell: "echo tweaked > tweak.txt" }
  - id: smoke
    kind: test
    checks:
      - shell: "exit 1"
  - id: reopen
    kind: reopen
"#,
    );
    let plan = w.run(&["plan", "rb.yaml"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(
            "smoke    roll back: tweak (no rollback, left as is); undo install; restore from checkpoint `snap` (brings back migrate); reopen the service"
        ),
        "{}",
        plan.stdout
    );
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    // The app file is back, the database is back, the migrate's own undo was replaced
    // by the restore, and the run names what it left.
    assert_eq!(std::fs::read_to_string(w.path("app.txt")).unwrap(), "v1\n");
    assert_eq!(rows(w, "acme"), "1");
    assert_eq!(w.count("migrate-rollback-ran"), 0);
    assert!(w.path("tweak.txt").exists());
    let s = w.status_json("r1");
    assert_eq!(s["status"], "rolled_back");
    assert_eq!(s["closed"], false);
    assert_eq!(s["steps"]["install"]["status"], "rolled_back");
    assert_eq!(s["steps"]["migrate"]["status"], "rolled_back");
    assert_eq!(s["steps"]["tweak"]["status"], "succeeded");
    assert!(
        !out.stdout.contains("the service is restored"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("NOT everything is restored") && out.stdout.contains("`tweak`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("step migrate: undone by the restore of checkpoint `snap`"),
        "{}",
        out.stdout
    );
    // Undone most recent first: the app, then the database.
    let install = out.stdout.find("step install: undone").unwrap();
    let restore = out.stdout.find("step snap: undone").unwrap();
    assert!(install < restore, "{}", out.stdout);
    // The report says how each step was undone, and what was left.
    let report = w.run(&["report", "r1", "--format", "json"]);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    let rollback = &report["rollbacks"][0];
    let how: Vec<(String, String)> = rollback["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = how.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        pairs,
        vec![
            ("install", "undone"),
            ("snap", "undone"),
            ("migrate", "restored"),
            ("tweak", "left")
        ],
        "{rollback}"
    );
    assert_eq!(rollback["steps"][2]["restored_by"], "snap");
    assert_eq!(rollback["left"], serde_json::json!(["tweak"]));
    let md = w.run(&["report", "r1", "--format", "md"]).stdout;
    assert!(
        md.contains("NOT everything is restored: left as it was: tweak"),
        "{md}"
    );
    assert!(
        md.contains("| migrate `migrate` | undone by the restore |"),
        "{md}"
    );
    assert!(
        md.contains("tweak\\` had no way back and is left as it was"),
        "{md}"
    );
}

fn close_and_reopen_with_an_action_still_close_and_reopen(w: &World) {
    w.write(
        "rb.yaml",
        r#"runbook: close-action
steps:
  - id: close
    kind: close
    run: { shell: "echo closing >> markers" }
  - id: stop
    kind: patch
    on_failure: abort
    run: { shell: "test -f go" }
  - id: reopen
    kind: reopen
    run: { shell: "echo reopening >> markers" }
"#,
    );
    // Aborted after the close: the service stays closed, as the journal says.
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.count("closing"), 1);
    let s = w.status_json("r1");
    assert_eq!(s["closed"], true, "{s}");
    // With everything fine it closes, runs the actions and reopens.
    w.write("go", "");
    let out = w.execute("rb.yaml", "r2");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.count("reopening"), 1);
    let s = w.status_json("r2");
    assert_eq!(s["closed"], false, "{s}");
    let text = out.stdout;
    let closed = text.find("service closed").expect("closed");
    let reopened = text.find("service reopened").expect("reopened");
    assert!(closed < reopened, "{text}");
}

fn expect_values_are_templates(w: &World) {
    let url = common::json_server(r#"{"version": "42"}"#.into());
    let rb = |want: &str| {
        format!(
            r#"runbook: expect-templates
vars: {{ rows: "{want}", version: "{want}" }}
steps:
  - id: seed
    kind: patch
    run: {{ sql: "create table if not exists t (v integer); delete from t; insert into t values (1), (2)", database: "sqlite://x.db?mode=rwc" }}
  - id: smoke
    kind: test
    checks:
      - sql: "select count(*) from t"
        database: "sqlite://x.db"
        expect: "{{{{vars.rows}}}}"
      - http: {{ url: "{url}/v", expect_json: {{ "/version": "4{{{{vars.version}}}}" }} }}
"#
        )
    };
    // rows = 2; version "4" + "2" = "42".
    w.write("rb.yaml", &rb("2"));
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    w.write("rb.yaml", &rb("3"));
    let out = w.execute("rb.yaml", "r2");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("r2");
    let error = s["steps"]["smoke"]["error"].as_str().unwrap();
    assert!(
        error.contains("the query returned 2, expected \"3\""),
        "{error}"
    );
}

fn a_fan_out_shell_action_keeps_its_timeout(w: &World) {
    w.write(
        "rb.yaml",
        r#"runbook: item-timeout
steps:
  - id: slow
    kind: patch
    for_each: [a, b]
    concurrency: 2
    on_failure: abort
    run: { shell: "sleep 30", timeout: 1s }
"#,
    );
    let started = Instant::now();
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the 1s timeout held"
    );
    assert!(
        out.stdout.contains("item a FAILED: timed out")
            && out.stdout.contains("item b FAILED: timed out"),
        "{}",
        out.stdout
    );
}

fn a_panic_fails_only_its_item(w: &World) {
    w.write(
        "rb.yaml",
        r#"runbook: item-panic
steps:
  - id: each
    kind: patch
    for_each: [a, b, c]
    max_failures: 1
    run: { shell: "echo {{item}} >> markers" }
  - id: after
    kind: patch
    run: { shell: "echo after >> markers" }
"#,
    );
    let mut cmd = w.command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "r1"]);
    cmd.env("RUNBOOK_TEST_PANIC", "each.1");
    let out = cmd.output().unwrap();
    let out = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.markers(), vec!["a", "c", "after"]);
    let s = w.status_json("r1");
    assert_eq!(s["steps"]["each"]["status"], "succeeded");
    assert!(
        out.stdout
            .contains("item b FAILED: internal error (panic): injected panic in `each.1`"),
        "{}",
        out.stdout
    );
}

fn a_public_update_the_store_refused_is_retried(w: &World) {
    w.write(
        "rb.yaml",
        r#"runbook: overrun-retry
status_page:
  overrun: { after: 1s, every: 1h }
steps:
  - id: slow
    kind: patch
    expected: 1s
    run: { shell: "sleep 4" }
"#,
    );
    let mut cmd = w.command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "r1"]);
    cmd.env("RUNBOOK_TEST_FAIL_PUBLISH", "2");
    let out = common::output_of(&mut cmd);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("could not be recorded") && out.stdout.contains("trying again"),
        "{}",
        out.stdout
    );
    let report = w.run(&["report", "r1", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    let overruns = report["public_updates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["kind"] == "overrun")
        .count();
    assert_eq!(overruns, 1, "{report}");
}

#[test]
fn a_fan_out_restore_on_postgres_brings_every_tenant_back() {
    let w = World::postgres();
    let base = w.store.rsplit_once('/').unwrap().0.to_owned();
    let mut names = Vec::new();
    for t in ["acme", "globex", "initech"] {
        let name = format!("{}_{t}", w.store.rsplit_once('/').unwrap().1);
        psql("postgres", &format!("CREATE DATABASE {name}"));
        psql(
            &name,
            "create table t (v integer); insert into t values (1)",
        );
        names.push(name);
    }
    w.write("app.txt", "v1\n");
    let list = names.join(", ");
    w.write(
        "rb.yaml",
        &format!(
            r#"runbook: pg-tenants
vars: {{ server: "{base}" }}
targets:
  tenants: [{list}]
steps:
  - id: snap
    kind: backup
    for_each: "{{{{targets.tenants}}}}"
    checkpoint: true
    with: {{ database: "{{{{vars.server}}}}/{{{{item}}}}" }}
    restore: {{ kind: restore, with: {{ database: "{{{{vars.server}}}}/{{{{item}}}}", from: "{{{{steps.snap.outputs.path}}}}" }} }}
  - id: change
    kind: migrate
    for_each: "{{{{targets.tenants}}}}"
    run: {{ sql: "alter table t add column w integer; insert into t values (2, 2)", database: "{{{{vars.server}}}}/{{{{item}}}}" }}
  - id: install
    kind: install
    run: {{ shell: "cp app.txt app.old && echo v2 > app.txt" }}
    rollback: {{ shell: "mv app.old app.txt" }}
  - id: smoke
    kind: test
    checks:
      - shell: "exit 1"
"#
        ),
    );
    let before: Vec<String> = names
        .iter()
        .map(|n| psql(n, "select string_agg(v::text, ',') from t"))
        .collect();
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    for (n, b) in names.iter().zip(&before) {
        assert_eq!(&psql(n, "select string_agg(v::text, ',') from t"), b);
        assert_eq!(
            psql(
                n,
                "select count(*) from information_schema.columns where table_name = 't'"
            ),
            "1",
            "{n}: the column added by the change is gone"
        );
    }
    assert_eq!(std::fs::read_to_string(w.path("app.txt")).unwrap(), "v1\n");
    assert!(
        out.stdout.contains("the service is restored"),
        "{}",
        out.stdout
    );
    for n in &names {
        common::world::drop_database_later(n);
    }
}

#[test]
fn a_crash_during_a_fan_out_undo_undoes_each_item_once_most_recent_first() {
    for w in [World::sqlite(), World::postgres()] {
        // The items finish in the reverse of their order (d first), so "most recent
        // first" undoes a first.
        w.write(
            "rb.yaml",
            r#"runbook: undo-once
steps:
  - id: deploy
    kind: install
    for_each: [{ name: a, wait: "0.6" }, { name: b, wait: "0.4" }, { name: c, wait: "0.2" }, { name: d, wait: "0" }]
    concurrency: 4
    run: { shell: "sleep {{item.wait}}; echo do-{{item.name}} >> markers" }
    rollback: { shell: "echo undo-{{item.name}} >> markers" }
  - id: boom
    kind: patch
    run: { shell: "exit 1" }
"#,
        );
        let clean = w.execute_json("rb.yaml", "clean");
        assert_eq!(clean.code, 3, "{}", clean.stderr);
        let undos: Vec<String> = w
            .markers()
            .into_iter()
            .filter(|m| m.starts_with("undo-"))
            .collect();
        assert_eq!(undos, ["undo-a", "undo-b", "undo-c", "undo-d"]);
        // Killed right after the second item's undo is recorded.
        let seq = *common::world::seqs_of(&clean.stdout, "item_rolled_back", None)
            .get(1)
            .expect("items are undone one by one in the journal");
        std::fs::remove_file(w.path("markers")).unwrap();
        w.execute_killed_after("rb.yaml", "k", seq);
        // No item's undo is in doubt: resume goes on by itself, undoing only the rest.
        let resumed = w.run(&["resume", "k"]);
        assert_eq!(resumed.code, 3, "{}\n{}", resumed.stdout, resumed.stderr);
        let undos: Vec<String> = w
            .markers()
            .into_iter()
            .filter(|m| m.starts_with("undo-"))
            .collect();
        assert_eq!(undos, ["undo-a", "undo-b", "undo-c", "undo-d"], "each once");
        assert_eq!(w.status_json("k")["status"], "rolled_back");
    }
}
