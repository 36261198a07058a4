//! Time through the binary: ETA in `status`, the window in the report, and durations
//! learned from earlier runs in `plan`. (The window guard and overrun updates are tested
//! in process, under a paused clock, in `src/engine/run/paused_tests.rs`.)

use crate::common;

use common::world::World;

// The window guard's pause, resume and `--guard strict`, and the overrun updates, run in
// process under a paused clock: `src/engine/run/paused_tests.rs`.

#[test]
fn an_unknown_guard_mode_is_refused() {
    let w = World::sqlite();
    w.write(
        "g.yaml",
        "runbook: guarded\nsteps:\n  - { id: a, kind: patch, run: { shell: 'true' } }\n",
    );
    let o = w.run(&["execute", "g.yaml", "--guard", "sometimes"]);
    assert_eq!(o.code, 2);
}

#[test]
fn plan_learns_from_earlier_runs_and_shows_the_point_of_no_return() {
    let w = World::sqlite();
    w.write(
        "p.yaml",
        r#"
runbook: learner
window: { start: "2026-01-01T20:00:00Z", duration: 10m }
steps:
  - { id: backup, kind: patch, checkpoint: true, expected: 1m, run: { shell: "true" } }
  - { id: change, kind: patch, expected: 3m, run: { shell: "sleep 1" }, rollback: { shell: "true" } }
  - { id: migrate, kind: patch, expected: 5m, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: reopen, kind: reopen }
"#,
    );
    // No earlier runs: the runbook's figures; `migrate` at 20:04 + 5m + 3m undo > 20:10.
    let o = w.run(&["plan", "p.yaml", "--history"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .contains("Point of no return: before `migrate` at 20:04"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("Expected versus earlier runs"),
        "{}",
        o.stdout
    );
    // Two runs teach that `change` takes about a second and `migrate` nothing.
    for run in ["r1", "r2"] {
        let o = w.execute("p.yaml", run);
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let o = w.run(&["plan", "p.yaml", "--history", "--format", "text"]);
    assert!(
        o.stdout.contains("learned: median of 2 runs"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("Point of no return: none"),
        "{}",
        o.stdout
    );
    let json = w.run(&["plan", "p.yaml", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let change = &v["steps"][1];
    assert_eq!(change["estimate_source"], "learned", "{change}");
    assert_eq!(change["learned_runs"], 2);
    assert_eq!(change["expected_seconds"], 180);
    assert!(
        change["estimate_seconds"].as_u64().unwrap() <= 2,
        "{change}"
    );
}

/// `plan --history` names the runs it learned from: the completed ones, not a drill that
/// rolled back; `runbook forget RUN` takes one out, once, and only once it has ended.
#[test]
fn plan_history_lists_the_runs_it_learned_from_and_forget_removes_one() {
    let w = World::sqlite();
    w.write(
        "f.yaml",
        r#"
runbook: forgetful
vars: { drill: pass }
steps:
  - { id: work, kind: patch, expected: 1m, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: smoke, kind: test, checks: [{ shell: "test {{vars.drill}} = pass" }] }
"#,
    );
    assert_eq!(w.execute("f.yaml", "good-1").code, 0);
    assert_eq!(w.execute("f.yaml", "good-2").code, 0);
    let drill = w.run(&[
        "execute",
        "f.yaml",
        "--yes",
        "--now",
        "--run-id",
        "drill-1",
        "--var",
        "drill=fail",
    ]);
    assert_eq!(drill.code, 3, "{}", drill.stderr);
    let listed = |w: &World| -> Vec<String> {
        let o = w.run(&["plan", "f.yaml", "--format", "json"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        v["learned_from"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&w), ["good-2", "good-1"]);
    let text = w.run(&["plan", "f.yaml", "--history"]);
    assert!(
        text.stdout.contains("Learned from 2 runs (newest first):"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("\n  good-1  "), "{}", text.stdout);
    assert!(!text.stdout.contains("drill-1"), "{}", text.stdout);

    let o = w.run(&[
        "forget",
        "good-2",
        "--by",
        "sam",
        "--reason",
        "the disk was slow",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(listed(&w), ["good-1"]);
    // Once only; an unknown run and a run still going are refused, naming why.
    let again = w.run(&["forget", "good-2"]);
    assert_eq!(again.code, 1);
    assert_eq!(again.stderr, "error: run `good-2` is already forgotten\n");
    let unknown = w.run(&["forget", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("no run `nope`"),
        "{}",
        unknown.stderr
    );
    // A run whose runner died mid-way has not ended.
    w.execute_killed_after("f.yaml", "k-1", 3);
    let running = w.run(&["forget", "k-1"]);
    assert_eq!(running.code, 1);
    assert!(
        running.stderr.contains("run `k-1` has not ended (running)"),
        "{}",
        running.stderr
    );
    // The report of a forgotten run still reads.
    let r = w.run(&["report", "good-2", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The report measures a step's overrun against what the runner expected when it started
/// it (learned from earlier runs, else `expected`), as the overrun updates on the page
/// are: a step that usually takes 0.1 s and took 1.6 s ran over, though the runbook says
/// 10 s.
#[test]
fn the_report_measures_overruns_against_the_runners_estimate() {
    let w = World::sqlite();
    w.write(
        "o.yaml",
        "runbook: estimate\nvars: { d: '0.1' }\nsteps:\n  - { id: work, kind: patch, expected: 10s, run: { shell: 'sleep {{vars.d}}' } }\n",
    );
    assert_eq!(w.execute("o.yaml", "quick").code, 0);
    let first = report_step(&w, "quick");
    assert_eq!(first["estimate_ms"], 10_000, "{first}");
    assert_eq!(first["overrun_ms"], serde_json::Value::Null, "{first}");
    let o = w.run(&[
        "execute", "o.yaml", "--yes", "--now", "--run-id", "slow", "--var", "d=1.6",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let slow = report_step(&w, "slow");
    let estimate = slow["estimate_ms"].as_i64().unwrap();
    assert!(estimate < 1000, "learned from the quick run: {slow}");
    let overrun = slow["overrun_ms"].as_i64().expect("an overrun");
    assert_eq!(
        overrun,
        slow["duration_ms"].as_i64().unwrap() - estimate,
        "{slow}"
    );
}

fn report_step(w: &World, run: &str) -> serde_json::Value {
    let o = w.run(&["report", run, "--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    doc["steps"][0].clone()
}

#[test]
fn status_shows_the_eta_of_a_running_run() {
    let w = World::sqlite();
    w.write(
        "e.yaml",
        "runbook: eta\nsteps:\n  - { id: wait, kind: approve, title: Go, expected: 10m }\n  - { id: work, kind: patch, expected: 20m, run: { shell: 'true' } }\n",
    );
    let mut child = w
        .command(&["execute", "e.yaml", "--yes", "--now", "--run-id", "e1"])
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let o = w.run(&["status", "e1", "--format", "json"]);
        if o.code == 0 {
            let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
            if v["status"] == "awaiting_approval" {
                let eta = v["eta_ms"].as_i64().expect("an ETA");
                let started = v["started_ms"].as_i64().unwrap();
                // 10 + 20 minutes from the start, give or take the time it took to ask.
                assert!((eta - started - 30 * 60_000).abs() < 60_000, "{v}");
                let text = w.run(&["status", "e1"]);
                assert!(text.stdout.contains("ETA "), "{}", text.stdout);
                break;
            }
        }
        assert!(t0.elapsed().as_secs() < 30, "never awaited approval");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(w.run(&["abort", "e1"]).code, 0);
    child.wait().unwrap();
}

#[test]
fn a_window_without_a_start_lasts_its_duration_from_the_run_in_the_report() {
    let w = World::sqlite();
    w.write(
        "d.yaml",
        "runbook: dur\ntitle: 'Upgrade {{vars.v}}'\nvars: { v: '3.2' }\nwindow: { duration: 10m }\nsteps:\n  - { id: a, kind: patch, expected: 1s, run: { shell: 'sleep 1.2' } }\n",
    );
    assert_eq!(w.execute("d.yaml", "d1").code, 0);
    let o = w.run(&["report", "d1", "--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        v["window"]["planned_duration_ms"], 600_000,
        "{}",
        v["window"]
    );
    assert_eq!(v["window"]["held"], true, "{}", v["window"]);
    // The title as rendered with the run's values, everywhere.
    assert_eq!(v["run"]["title"], "Upgrade 3.2");
    assert_eq!(w.status_json("d1")["title"], "Upgrade 3.2");
}
