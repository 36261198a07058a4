//! Time through the binary: the window guard (pause, resume, `--guard strict`), ETA in
//! `status`, overrun settings, and durations learned from earlier runs in `plan`.

mod common;

use common::world::World;

const GUARDED: &str = r#"
runbook: guarded
window: { start: "2026-01-01T00:00:00Z", duration: 3s }
steps:
  - { id: change, kind: patch, expected: 1s, run: { shell: "sleep 1; echo change >> markers" }, rollback: { shell: "echo undo >> markers" } }
  - { id: long, kind: patch, expected: 5s, run: { shell: "echo long >> markers" } }
"#;

#[test]
fn the_window_guard_pauses_before_a_step_that_would_not_fit_and_resume_goes_on() {
    let w = World::sqlite();
    w.write("g.yaml", GUARDED);
    let o = w.execute("g.yaml", "g1");
    assert_eq!(o.code, 4, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("window guard: step `long`"),
        "{}",
        o.stdout
    );
    let s = w.status_json("g1");
    assert_eq!(s["status"], "paused");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("runbook resume g1 --rollback"),
        "{s}"
    );
    assert_eq!(w.markers(), ["change"]);
    // A person lets it go on: the guard does not stop the same step again.
    let o = w.run(&["resume", "g1"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(w.markers(), ["change", "long"]);
}

#[test]
fn the_window_guard_rolls_back_on_a_rollback_decision_or_by_itself_when_strict() {
    let w = World::sqlite();
    w.write("g.yaml", GUARDED);
    assert_eq!(w.execute("g.yaml", "g1").code, 4);
    let o = w.run(&["resume", "g1", "--rollback"]);
    assert_eq!(o.code, 3, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(w.markers(), ["change", "undo"]);
    std::fs::remove_file(w.path("markers")).unwrap();
    let o = w.run(&[
        "execute", "g.yaml", "--yes", "--now", "--run-id", "g2", "--guard", "strict",
    ]);
    assert_eq!(o.code, 3, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("--guard strict"), "{}", o.stdout);
    assert_eq!(w.markers(), ["change", "undo"]);
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
fn a_step_running_late_is_announced_after_the_margin_and_again_at_the_interval() {
    let w = World::sqlite();
    w.write(
        "late.yaml",
        r#"
runbook: late
status_page: { overrun: { after: 1s, every: 1s } }
steps:
  - { id: slow, kind: patch, title: Updating table sequences, expected: 1s, run: { shell: "sleep 4.5" } }
  - { id: fan, kind: patch, title: Processing the queue, expected: 1s, for_each: [a, b, c], run: { shell: "sleep 1.2" } }
  - { id: quick, kind: patch, title: Quick, run: { shell: "sleep 0.5" } }
"#,
    );
    let o = w.execute("late.yaml", "l1");
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let late = |title: &str| {
        o.stdout
            .lines()
            .filter(|l| l.contains(&format!("{title} is taking longer than expected")))
            .count()
    };
    // 1 s expected + 1 s margin, then every second: at 2, 3 and 4 s of 4.5 s.
    let n = late("Updating table sequences");
    assert!((2..=3).contains(&n), "{n} updates:\n{}", o.stdout);
    // The fan-out (3.6 s against 1 s) is announced too; a step without `expected`
    // never is.
    assert!(late("Processing the queue") >= 1, "{}", o.stdout);
    assert_eq!(late("Quick"), 0, "{}", o.stdout);
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
