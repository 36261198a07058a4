//! The engine through the real binary, against both stores: a SQLite file and a real
//! PostgreSQL server (a fresh database per test). Crashes are real SIGKILLs.

use crate::both_stores;
use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::world::World;

both_stores!(
    completes_and_records_every_step,
    survives_sigkill_at_every_point,
    rolls_back_to_the_checkpoint,
    a_failing_rollback_ends_the_run_failed,
    pause_then_skip,
    abort_policy_stops_without_undoing,
    continue_policy_goes_on,
    fan_out_failure_over_max_rolls_back,
    retries_with_backoff,
    approval_from_another_terminal,
    rejection_rolls_back,
    a_second_execute_is_refused,
    bad_input_is_refused_and_writes_nothing,
    a_changed_runbook_is_not_resumed,
    abort_stops_the_running_step,
    an_undo_in_doubt_asks_before_it_runs_again,
);

const STEPS: usize = 6;

/// Six shell steps that each append their marker and then sleep 0.2 s (so a runner can
/// be killed while one runs); step 3 closes the service.
fn crash_runbook() -> String {
    crash_runbook_sleeping("0.2")
}

/// The same steps, each sleeping `secs` after its marker.
fn crash_runbook_sleeping(secs: &str) -> String {
    let mut y = String::from("runbook: crash\nsteps:\n");
    for i in 1..=STEPS {
        if i == 3 {
            y.push_str("  - id: close\n    kind: close\n");
        }
        y.push_str(&format!(
            "  - id: s{i}\n    kind: patch\n    run: {{ shell: \"echo s{i} >> markers; sleep {secs}\" }}\n"
        ));
    }
    y.push_str("  - id: reopen\n    kind: reopen\n");
    y
}

fn completes_and_records_every_step(w: &World) {
    w.write("rb.yaml", &crash_runbook());
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("run r1\n"), "{}", out.stdout);
    for i in 1..=STEPS {
        assert_eq!(w.count(&format!("s{i}")), 1);
    }
    let s = w.status_json("r1");
    assert_eq!(s["status"], "completed");
    assert_eq!(s["closed"], false);
    assert_eq!(s["steps"]["s1"]["status"], "succeeded");
    let runs = w.run(&["runs", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs[0]["run"], "r1");
    assert_eq!(runs[0]["status"], "completed");
}

/// Runs the crash runbook killed right after journal commit `n`, then resumes it to its
/// end: it completes, every step having run exactly once.
fn killed_at(w: &World, n: i64) {
    let run = format!("kill-at-{n}");
    w.execute_killed_after("rb.yaml", &run, n);
    let retried = w.resume_to_the_end(&run, 0);
    let s = w.status_json(&run);
    assert_eq!(s["status"], "completed", "kill point {n}");
    for i in 1..=STEPS {
        let c = w.count(&format!("s{i}"));
        // Killed between commit of `step_started` and the command: never ran, once.
        assert_eq!(
            c, 1,
            "kill point {n}: marker s{i} seen {c} times (retried: {retried})"
        );
    }
    std::fs::remove_file(w.path("markers")).unwrap();
}

fn survives_sigkill_at_every_point(w: &World) {
    // Killed right after a commit, the runner is never inside a command: the steps need
    // not take any time (the kills in the middle of a step below use `crash_runbook`).
    w.write("rb.yaml", &crash_runbook_sleeping("0"));
    // A clean run says how many events there are.
    let clean = w.execute("rb.yaml", "clean");
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    let events = clean.stdout.lines().filter(|l| l.contains("  ")).count();
    assert!(events >= 20, "{events} events");
    std::fs::remove_file(w.path("markers")).unwrap();
    // At every event boundary: right after each journal commit. The kill points are
    // shared out over a few worlds of the same store, side by side.
    const SIDE_BY_SIDE: i64 = 3;
    let points: Vec<i64> = std::thread::scope(|scope| {
        let each: Vec<_> = (0..SIDE_BY_SIDE)
            .map(|k| {
                scope.spawn(move || {
                    let w = w.like();
                    w.write("rb.yaml", &crash_runbook_sleeping("0"));
                    let mut done = 0;
                    for n in (1..events as i64).filter(|n| n % SIDE_BY_SIDE == k) {
                        killed_at(&w, n);
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        each.into_iter()
            .map(|t| t.join().expect("the kill points of one world"))
            .collect()
    });
    let mut kill_points: i64 = points.iter().sum();
    // In the middle of steps: while the command sleeps after writing its marker.
    w.write("rb.yaml", &crash_runbook());
    for i in [1, 3, 5, 6] {
        let run = format!("mid-{i}");
        let mut child = w
            .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", &run])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.count(&format!("s{i}")) == 0 {
            assert!(Instant::now() < deadline, "step s{i} never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kill_points += 1;
        let retried = w.resume_to_the_end(&run, 0);
        assert!(retried, "mid-step kill of s{i} must leave it in doubt");
        assert_eq!(w.status_json(&run)["status"], "completed");
        for j in 1..=STEPS {
            let c = w.count(&format!("s{j}"));
            // The step in doubt ran twice (resumed with --retry); every other once.
            let want = if j == i { 2 } else { 1 };
            assert_eq!(c, want, "mid-step kill of s{i}: marker s{j} seen {c} times");
        }
        std::fs::remove_file(w.path("markers")).unwrap();
    }
    assert!(kill_points >= 20, "{kill_points} kill points");
}

fn policy_runbook(policy: &str, fail: &str) -> String {
    format!(
        "runbook: policy
steps:
  - id: backup
    kind: patch
    checkpoint: true
    run: {{ shell: \"echo backup >> markers\" }}
    rollback: {{ shell: \"echo undo-backup >> markers\" }}
  - id: close
    kind: close
  - id: a
    kind: patch
    run: {{ shell: \"echo a >> markers\" }}
    rollback: {{ shell: \"echo undo-a >> markers\" }}
  - id: b
    kind: patch
    run: {{ shell: \"echo b >> markers\" }}
  - id: c
    kind: patch
    run: {{ shell: \"echo c >> markers\" }}
    rollback: {{ shell: \"echo undo-c >> markers\" }}
  - id: bad
    kind: patch
    on_failure: {policy}
    {reason}
    run: {{ shell: \"{fail}\" }}
  - id: after
    kind: patch
    run: {{ shell: \"echo after >> markers\" }}
  - id: reopen
    kind: reopen
",
        reason = if policy == "continue" {
            "reason: best effort"
        } else {
            ""
        },
    )
}

fn rolls_back_to_the_checkpoint(w: &World) {
    w.write("rb.yaml", &policy_runbook("rollback", "exit 7"));
    let out = w.execute("rb.yaml", "rb");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    // Most recent first, back to (not including) the checkpoint; `b` has no rollback.
    assert_eq!(w.markers(), ["backup", "a", "b", "c", "undo-c", "undo-a"]);
    let s = w.status_json("rb");
    assert_eq!(s["status"], "rolled_back");
    assert_eq!(s["closed"], false, "the rollback reopens the service");
    assert_eq!(s["steps"]["c"]["status"], "rolled_back");
    assert_eq!(s["steps"]["backup"]["status"], "succeeded");
    assert!(
        s["steps"]["bad"]["error"]
            .as_str()
            .unwrap()
            .contains("status 7")
    );
}

fn a_failing_rollback_ends_the_run_failed(w: &World) {
    let y = policy_runbook("rollback", "exit 7").replace("echo undo-a >> markers", "exit 9");
    w.write("rb.yaml", &y);
    let out = w.execute("rb.yaml", "rf");
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("RUN FAILED: rollback of step `a` failed"),
        "{}",
        out.stdout
    );
    let s = w.status_json("rf");
    assert_eq!(s["status"], "failed");
    assert_eq!(s["steps"]["a"]["status"], "rollback_failed");
    assert_eq!(
        s["closed"], true,
        "a failed rollback leaves the service closed for a person"
    );
}

fn pause_then_skip(w: &World) {
    w.write("rb.yaml", &policy_runbook("pause", "exit 7"));
    let out = w.execute("rb.yaml", "p");
    assert_eq!(out.code, 4);
    assert!(out.stdout.contains("paused"), "{}", out.stdout);
    assert_eq!(w.status_json("p")["status"], "paused");
    let plain = w.run(&["resume", "p"]);
    assert_eq!(plain.code, 4, "a decision is needed, not better input");
    assert!(
        plain.stderr.contains("choose `runbook resume p --retry`"),
        "{}",
        plain.stderr
    );
    let out = w.run(&["resume", "p", "--skip"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.markers(), ["backup", "a", "b", "c", "after"]);
    assert_eq!(w.status_json("p")["steps"]["bad"]["status"], "skipped");
}

fn abort_policy_stops_without_undoing(w: &World) {
    w.write("rb.yaml", &policy_runbook("abort", "exit 7"));
    let out = w.execute("rb.yaml", "ab");
    assert_eq!(out.code, 4);
    assert_eq!(w.markers(), ["backup", "a", "b", "c"]);
    assert_eq!(w.status_json("ab")["status"], "aborted");
}

fn continue_policy_goes_on(w: &World) {
    w.write("rb.yaml", &policy_runbook("continue", "exit 7"));
    let out = w.execute("rb.yaml", "co");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.markers(), ["backup", "a", "b", "c", "after"]);
    let s = w.status_json("co");
    assert_eq!(s["status"], "completed");
    assert_eq!(s["steps"]["bad"]["status"], "failed");
}

fn fan_out_failure_over_max_rolls_back(w: &World) {
    w.write(
        "rb.yaml",
        "runbook: fan
targets:
  tenants: [t1, t2, t3, t4, t5, t6]
steps:
  - id: snap
    kind: patch
    checkpoint: true
    run: { shell: \"echo snap >> markers\" }
  - id: deploy
    kind: install
    for_each: \"{{targets.tenants}}\"
    concurrency: 2
    max_failures: 1
    run: { shell: \"echo {{item}} >> markers; case {{item}} in t2|t4) exit 1;; esac\" }
    rollback: { shell: \"echo undo-deploy >> markers\" }
  - id: never
    kind: patch
    run: { shell: \"echo never >> markers\" }
",
    );
    let out = w.execute("rb.yaml", "fan");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("fan");
    assert_eq!(s["status"], "rolled_back");
    assert!(
        s["steps"]["deploy"]["error"]
            .as_str()
            .unwrap()
            .contains("items failed")
    );
    assert_eq!(w.count("never"), 0);
    // The tenants the failed step did deploy are undone, each once; the ones that
    // failed did nothing to undo.
    let deployed = ["t1", "t3", "t5", "t6"]
        .iter()
        .filter(|t| w.count(t) == 1)
        .count();
    assert!(deployed >= 2, "{:?}", w.markers());
    assert_eq!(w.count("undo-deploy"), deployed, "{:?}", w.markers());
    assert_eq!(s["steps"]["deploy"]["status"], "rolled_back");
}

fn retries_with_backoff(w: &World) {
    w.write(
        "rb.yaml",
        "runbook: retry
steps:
  - id: flaky
    kind: patch
    retries: { max: 2, backoff: 200ms }
    run: { shell: \"echo try >> markers; test $(grep -c try markers) -ge 3\" }
",
    );
    let out = w.execute("rb.yaml", "re");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.count("try"), 3);
    assert_eq!(w.status_json("re")["steps"]["flaky"]["attempts"], 3);
}

fn approval_runbook() -> &'static str {
    "runbook: approve
steps:
  - id: snap
    kind: patch
    checkpoint: true
    run: { shell: \"echo snap >> markers\" }
  - id: change
    kind: patch
    run: { shell: \"echo change >> markers\" }
    rollback: { shell: \"echo undo-change >> markers\" }
  - id: go
    kind: approve
    timeout: 1m
  - id: after
    kind: patch
    run: { shell: \"echo after >> markers\" }
"
}

pub(crate) fn wait_for_status(
    w: &World,
    run: &str,
    status: &str,
    runner: &mut std::process::Child,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = w.run(&["status", run, "--format", "json"]);
        if o.code == 0 {
            let s: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
            if s["status"] == status {
                return;
            }
        }
        if Instant::now() > deadline || runner.try_wait().unwrap().is_some() {
            let _ = runner.kill();
            let mut out = String::new();
            let mut err = String::new();
            use std::io::Read;
            let _ = runner.stdout.take().map(|mut s| s.read_to_string(&mut out));
            let _ = runner.stderr.take().map(|mut s| s.read_to_string(&mut err));
            panic!(
                "run {run} never became {status}; last status: {}\nrunner: {out}\n{err}",
                o.stdout
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn approval_from_another_terminal(w: &World) {
    w.write("rb.yaml", approval_runbook());
    let mut runner = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "ap"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(w, "ap", "awaiting_approval", &mut runner);
    let early = w.run(&["approve", "ap", "after"]);
    assert_eq!(early.code, 1);
    assert!(
        early.stderr.contains("is not waiting for approval"),
        "{}",
        early.stderr
    );
    let ok = w.run(&["approve", "ap", "go", "--by", "alice"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let out = runner.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(w.markers(), ["snap", "change", "after"]);
    let s = w.status_json("ap");
    assert_eq!(s["steps"]["go"]["outputs"]["by"], "alice");
    assert_eq!(s["steps"]["go"]["outputs"]["decision"], "approved");
}

fn rejection_rolls_back(w: &World) {
    w.write("rb.yaml", approval_runbook());
    let mut runner = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "rj"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(w, "rj", "awaiting_approval", &mut runner);
    let no = w.run(&["reject", "rj", "go", "--by", "bob"]);
    assert_eq!(no.code, 0, "{}", no.stderr);
    let out = runner.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(w.markers(), ["snap", "change", "undo-change"]);
}

fn a_second_execute_is_refused(w: &World) {
    w.write(
        "rb.yaml",
        "runbook: lease\nsteps:\n  - { id: slow, kind: patch, run: { shell: 'echo slow >> markers; sleep 3' } }\n",
    );
    let first = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "first"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.count("slow") == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = w.execute("rb.yaml", "second");
    assert_eq!(second.code, 1);
    assert!(
        second.stderr.contains("is already being run: run `first`")
            && second.stderr.contains(&format!("(pid {pid})")),
        "{}",
        second.stderr
    );
    let mut first = first;
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(w.count("slow"), 1);
    // Once the first has finished, the runbook can run again.
    assert_eq!(w.execute("rb.yaml", "third").code, 0);
}

fn bad_input_is_refused_and_writes_nothing(w: &World) {
    w.write(
        "rb.yaml",
        "runbook: bad\nsteps:\n  - { id: one, kind: patch, run: { shell: 'echo one >> markers' } }\n",
    );
    for args in [
        vec!["status", "nope"],
        vec!["resume", "nope"],
        vec!["abort", "nope"],
        vec!["approve", "nope", "one"],
    ] {
        let o = w.run(&args);
        assert_eq!(o.code, 1, "{args:?}");
        assert_eq!(o.stderr, "error: no run `nope` in this store\n", "{args:?}");
    }
    assert_eq!(w.execute("rb.yaml", "done").code, 0);
    let o = w.run(&["resume", "done"]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "error: run `done` has already ended (completed); nothing to resume\n"
    );
    let o = w.run(&["approve", "done", "one"]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "error: run `done` has already ended (completed); there is nothing to approve\n"
    );
    let o = w.execute("rb.yaml", "done");
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("run `done` already exists"),
        "{}",
        o.stderr
    );
    let o = w.run(&[
        "execute",
        "rb.yaml",
        "--yes",
        "--now",
        "--store",
        "postgres://postgres@127.0.0.1:1/none",
    ]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .starts_with("error: cannot open the store `postgres://postgres@127.0.0.1:1/none`"),
        "{}",
        o.stderr
    );
    let o = w.run(&[
        "execute",
        "rb.yaml",
        "--yes",
        "--now",
        "--store",
        "mysql://x",
    ]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("use sqlite://PATH or postgres://"),
        "{}",
        o.stderr
    );
    // Only the one good run touched the markers.
    assert_eq!(w.markers(), ["one"]);
}

fn a_changed_runbook_is_not_resumed(w: &World) {
    w.write("rb.yaml", &policy_runbook("pause", "exit 7"));
    assert_eq!(w.execute("rb.yaml", "ch").code, 4);
    w.write("rb.yaml", &policy_runbook("pause", "true"));
    let o = w.run(&["resume", "ch", "--retry"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("has changed since run `ch` started"),
        "{}",
        o.stderr
    );
    assert_eq!(
        w.status_json("ch")["status"],
        "paused",
        "nothing was written"
    );
}

#[test]
fn an_unusable_state_directory_is_a_clear_error() {
    let w = World::sqlite();
    // A file where the state directory should be: it cannot be created, even by root
    // (for whom permission bits would not stop anything).
    w.write("blocked", "not a directory");
    w.write("rb.yaml", "runbook: ro\nsteps:\n  - { id: one, kind: patch, run: { shell: 'echo one >> markers' } }\n");
    let store = format!("sqlite://{}/state/state.db", w.path("blocked").display());
    let o = w.run(&["execute", "rb.yaml", "--yes", "--now", "--store", &store]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.starts_with(&format!(
            "error: cannot open the store `{store}`: cannot create"
        )),
        "{}",
        o.stderr
    );
    assert_eq!(o.stdout, "");
    assert!(w.markers().is_empty());
}

/// `runbook abort` from another terminal stops the step that is running (its whole
/// process group), ends the run `aborted`, and frees the runbook for the next run.
fn abort_stops_the_running_step(w: &World) {
    w.write(
        "rb.yaml",
        "runbook: long\nsteps:\n  - { id: long, kind: patch, run: { shell: 'echo start >> markers; sleep 30; echo end >> markers' } }\n  - { id: next, kind: patch, run: { shell: 'echo next >> markers' } }\n",
    );
    let runner = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "long"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.count("start") == 0 {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let abort = w.run(&["abort", "long", "--by", "carol"]);
    assert_eq!(abort.code, 0, "{}", abort.stderr);
    assert_eq!(abort.stdout, "run long aborted\n");
    let out = runner.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the runner took {:?} to stop",
        t.elapsed()
    );
    let s = w.status_json("long");
    assert_eq!(s["status"], "aborted");
    assert_eq!(s["reason"], "aborted by carol");
    assert_eq!(w.markers(), ["start"]);
    let again = w.run(&["abort", "long"]);
    assert_eq!(again.code, 1);
    assert_eq!(
        again.stderr,
        "error: run `long` has already ended (aborted)\n"
    );
    // The lease went with the runner.
    w.write(
        "rb.yaml",
        "runbook: long\nsteps:\n  - { id: next, kind: patch, run: { shell: 'echo next >> markers' } }\n",
    );
    assert_eq!(w.execute("rb.yaml", "after").code, 0);
}

/// A lease held by a runner on another host: refused while its heartbeat is fresh,
/// taken over by `resume` once the heartbeat has stopped.
#[test]
fn a_stale_lease_from_another_host_is_taken_over_by_resume() {
    let w = World::postgres();
    w.write("rb.yaml", &crash_runbook());
    let status = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "k"])
        // Right after `s1` succeeded (run_started, its update, checking, started, the
        // step's update, succeeded).
        .env("RUNBOOK_TEST_KILL_AFTER_EVENT", "6")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let db = w.store.rsplit('/').next().unwrap().to_owned();
    let set_lease = |age_ms: i64| {
        let sql = format!(
            "UPDATE leases SET host = 'db-runner-2', heartbeat_ms = (extract(epoch from now()) * 1000)::bigint - {age_ms}"
        );
        let ok = crate::common::pg_tool("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &db, "-qc", &sql])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    set_lease(0);
    let other = w.execute("rb.yaml", "other");
    assert_eq!(other.code, 1);
    assert!(
        other.stderr.contains(
            "error: runbook `crash` is already being run: run `k` on host db-runner-2 (pid "
        ),
        "{}",
        other.stderr
    );
    let early = w.run(&["resume", "k"]);
    assert_eq!(early.code, 1);
    assert!(
        early
            .stderr
            .starts_with("error: run `k` is being run on host db-runner-2 (pid "),
        "{}",
        early.stderr
    );
    set_lease(60_000);
    let o = w.run(&["resume", "k"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(w.status_json("k")["status"], "completed");
    for i in 1..=STEPS {
        assert_eq!(w.count(&format!("s{i}")), 1);
    }
}

/// SIGTERM (or Ctrl-C) stops the runner and the step's processes with it; the step is
/// left in doubt for `resume` to decide.
#[test]
fn a_terminated_runner_leaves_its_step_in_doubt() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: term\nsteps:\n  - { id: long, kind: patch, run: { shell: 'echo start >> markers; sleep 2; echo end >> markers' } }\n  - { id: next, kind: patch, run: { shell: 'echo next >> markers' } }\n",
    );
    let runner = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "t"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.count("start") == 0 {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(runner.id() as i32, libc::SIGTERM) };
    let out = runner.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stopped by SIGTERM; the run is unfinished"),
        "{stdout}"
    );
    assert_eq!(w.status_json("t")["steps"]["long"]["status"], "running");
    let ask = w.run(&["resume", "t"]);
    assert_eq!(ask.code, 4, "{}", ask.stdout);
    assert!(ask.stderr.contains("--retry"), "{}", ask.stderr);
    let skip = w.run(&["resume", "t", "--skip"]);
    assert_eq!(skip.code, 0, "{}\n{}", skip.stdout, skip.stderr);
    // Had the step's shell lived on, it would have written `end` by now.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        w.markers(),
        ["start", "next"],
        "the step's shell was killed with the runner"
    );
}

/// A runner killed during an undo: the undo is in doubt, and `resume` asks before it
/// runs it again (undos are not assumed to be safe to repeat).
fn an_undo_in_doubt_asks_before_it_runs_again(w: &World) {
    w.write("rb.yaml", &policy_runbook("rollback", "exit 7"));
    let clean = w.execute_json("rb.yaml", "clean");
    assert_eq!(clean.code, 3, "{}", clean.stderr);
    // The journal number of `c`'s undo starting, from the clean run.
    let seq = common::world::seqs_of(&clean.stdout, "step_rollback_started", Some("c"))[0];
    std::fs::remove_file(w.path("markers")).unwrap();
    w.execute_killed_after("rb.yaml", "u", seq);
    assert_eq!(w.status_json("u")["steps"]["c"]["status"], "rolling_back");
    let ask = w.run(&["resume", "u"]);
    assert_eq!(ask.code, 4, "{}\n{}", ask.stdout, ask.stderr);
    assert!(
        ask.stderr
            .contains("the undo of step `c` started before the runner stopped"),
        "{}",
        ask.stderr
    );
    let skip = w.run(&["resume", "u", "--skip"]);
    assert_eq!(skip.code, 4);
    assert!(
        skip.stderr
            .contains("`runbook resume u --retry` runs it again"),
        "{}",
        skip.stderr
    );
    let retry = w.run(&["resume", "u", "--retry"]);
    assert_eq!(retry.code, 3, "{}\n{}", retry.stdout, retry.stderr);
    assert_eq!(w.markers(), ["backup", "a", "b", "c", "undo-c", "undo-a"]);
    assert_eq!(w.status_json("u")["status"], "rolled_back");
}

/// After a SIGKILL the step's command lives on; `resume` refuses to run or skip it
/// again until that command has ended.
#[test]
fn resume_waits_for_the_dead_runners_command() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: orphan\nsteps:\n  - { id: long, kind: patch, run: { shell: 'echo start >> markers; sleep 5; echo end >> markers' } }\n  - { id: next, kind: patch, run: { shell: 'echo next >> markers' } }\n",
    );
    let mut runner = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "o"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.count("start") == 0 {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    runner.kill().unwrap();
    runner.wait().unwrap();
    let early = w.run(&["resume", "o", "--retry"]);
    assert_eq!(early.code, 4, "{}", early.stdout);
    assert!(
        early.stderr.starts_with(
            "error: commands that the stopped runner started are still running: `long.log` (process group "
        ),
        "{}",
        early.stderr
    );
    while w.count("end") == 0 {
        assert!(Instant::now() < deadline, "the orphan never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let skip = w.run(&["resume", "o", "--skip"]);
    assert_eq!(skip.code, 0, "{}\n{}", skip.stdout, skip.stderr);
    assert_eq!(w.markers(), ["start", "end", "next"]);
}

/// A runner killed right after starting a command, before it recorded the command's
/// process group, still leaves the command for `resume` to see (by the token the command
/// carries): `--retry` waits instead of running it a second time alongside.
#[test]
fn resume_finds_a_command_whose_group_was_never_recorded() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: unrecorded\nsteps:\n  - { id: long, kind: patch, run: { shell: 'echo start >> markers; sleep 3; echo end >> markers' } }\n  - { id: next, kind: patch, run: { shell: 'echo next >> markers' } }\n",
    );
    w.execute_killed_by("rb.yaml", "u", "RUNBOOK_TEST_KILL_AFTER_SPAWN", "1");
    let early = w.run(&["resume", "u", "--retry"]);
    assert_eq!(early.code, 4, "{}\n{}", early.stdout, early.stderr);
    assert!(
        early.stderr.starts_with(
            "error: commands that the stopped runner started are still running: `long.log` (process group "
        ),
        "{}",
        early.stderr
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.count("end") == 0 {
        assert!(Instant::now() < deadline, "the orphan never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let skip = w.run(&["resume", "u", "--skip"]);
    assert_eq!(skip.code, 0, "{}\n{}", skip.stdout, skip.stderr);
    assert_eq!(w.markers(), ["start", "end", "next"]);
}

/// `status` of a run whose runner was killed says the runner is gone and what to run,
/// without an ETA; a run whose runner is alive does not.
#[test]
fn status_says_when_the_runner_is_gone() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: gone\nsteps:\n  - { id: a, kind: patch, expected: 1m, run: { shell: 'true' } }\n  - { id: b, kind: patch, expected: 1m, run: { shell: 'true' } }\n",
    );
    w.execute_killed_after("rb.yaml", "gone-1", 3);
    let o = w.run(&["status", "gone-1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("runner gone since ") && o.stdout.contains("run `runbook resume gone-1`"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("ETA"), "{}", o.stdout);
    let s = w.status_json("gone-1");
    assert_eq!(s["runner"]["alive"], false, "{s}");
    assert!(s["runner"]["last_heartbeat_ms"].is_i64(), "{s}");
    assert_eq!(s["eta_ms"], serde_json::Value::Null, "{s}");
    // Resumed to the end: no runner needed, none said to be gone.
    w.resume_to_the_end("gone-1", 0);
    let o = w.run(&["status", "gone-1"]);
    assert!(!o.stdout.contains("runner gone"), "{}", o.stdout);
    assert_eq!(w.status_json("gone-1")["runner"], serde_json::Value::Null);
}

/// Who decided, and why: `resume --by --reason` and `approve --comment` are recorded
/// and the report (JSON, Markdown, HTML) shows them.
#[test]
fn decisions_carry_who_and_why_into_the_report() {
    let w = World::sqlite();
    w.write(
        "p.yaml",
        "runbook: why\nsteps:\n  - { id: disk, kind: patch, on_failure: pause, run: { shell: 'test -f ok' } }\n  - { id: after, kind: patch, run: { shell: 'true' } }\n",
    );
    assert_eq!(w.execute("p.yaml", "why-1").code, 4);
    w.write("ok", "");
    let o = w.run(&[
        "resume",
        "why-1",
        "--retry",
        "--by",
        "alice",
        "--reason",
        "freed the disk",
    ]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let r = w.run(&["report", "why-1", "--format", "json"]);
    let r: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(r["resumes"][0]["by"], "alice", "{r}");
    assert_eq!(r["resumes"][0]["decision"], "retry", "{r}");
    assert_eq!(r["resumes"][0]["reason"], "freed the disk", "{r}");
    for format in ["md", "html"] {
        let o = w.run(&["report", "why-1", "--format", format]);
        assert!(
            o.stdout.contains("freed the disk"),
            "{format}: {}",
            o.stdout
        );
    }
    w.write("rb.yaml", approval_runbook());
    let mut runner = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "why-2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(&w, "why-2", "awaiting_approval", &mut runner);
    let o = w.run(&[
        "approve",
        "why-2",
        "go",
        "--by",
        "bob",
        "--comment",
        "backup checked",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(runner.wait().unwrap().code(), Some(0));
    let r = w.run(&["report", "why-2", "--format", "json"]);
    let r: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(r["approvals"][0]["by"], "bob", "{r}");
    assert_eq!(r["approvals"][0]["comment"], "backup checked", "{r}");
    let md = w.run(&["report", "why-2", "--format", "md"]).stdout;
    assert!(md.contains("bob: “backup checked”"), "{md}");
}
