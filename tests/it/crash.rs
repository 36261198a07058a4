//! SIGKILL of the runner right after every journal commit of a run that rolls back
//! through a fan-out's undo, on both stores, then `resume` until the run ends: no event
//! lost, no step or item run (or undone) twice. Run with `--nocapture` for the figures.

use crate::common;

use common::world::World;

const RUNBOOK: &str = r#"runbook: crash-undo
steps:
  - { id: snap, kind: patch, checkpoint: true, run: { shell: "echo snap >> markers" } }
  - { id: close, kind: close }
  - id: fan
    kind: install
    for_each: [a, b, c]
    run: { shell: "echo do-{{item}} >> markers" }
    rollback: { shell: "echo undo-{{item}} >> markers" }
  - id: app
    kind: install
    run: { shell: "echo do-app >> markers" }
    rollback: { shell: "echo undo-app >> markers" }
  - { id: boom, kind: patch, run: { shell: "exit 1" } }
  - { id: reopen, kind: reopen }
"#;

const MARKERS: [&str; 9] = [
    "snap", "do-a", "do-b", "do-c", "do-app", "undo-app", "undo-c", "undo-b", "undo-a",
];

fn killed_at_every_commit(w: &World) -> (usize, usize) {
    w.write("rb.yaml", RUNBOOK);
    let clean = w.execute_json("rb.yaml", "clean");
    assert_eq!(clean.code, 3, "{}", clean.stderr);
    assert_eq!(w.markers(), MARKERS);
    let events = clean.stdout.lines().skip(1).count() as i64;
    let clean_states = final_states(w, "clean");
    // The kill points shared out over two worlds of the same store, side by side.
    const SIDE_BY_SIDE: i64 = 2;
    let counts: Vec<(usize, usize)> = std::thread::scope(|scope| {
        let each: Vec<_> = (0..SIDE_BY_SIDE)
            .map(|k| {
                let clean_states = &clean_states;
                scope.spawn(move || {
                    let w = w.like();
                    w.write("rb.yaml", RUNBOOK);
                    let mut counts = (0, 0);
                    for n in (1..events).filter(|n| n % SIDE_BY_SIDE == k) {
                        counts.0 += 1;
                        counts.1 += killed_at(&w, n, clean_states);
                    }
                    counts
                })
            })
            .collect();
        each.into_iter()
            .map(|t| t.join().expect("the kill points of one world"))
            .collect()
    });
    counts
        .into_iter()
        .fold((0, 0), |(k, d), (k2, d2)| (k + k2, d + d2))
}

/// Kills the run right after journal commit `n` and resumes it to its end: it rolls back
/// with every marker seen once and every step ending as in `clean_states`. Returns the
/// duplicate executions seen.
fn killed_at(w: &World, n: i64, clean_states: &[String]) -> usize {
    let _ = std::fs::remove_file(w.path("markers"));
    let run = format!("kill-{n}");
    w.execute_killed_after("rb.yaml", &run, n);
    w.resume_to_the_end(&run, 3);
    let s = w.status_json(&run);
    assert_eq!(s["status"], "rolled_back", "kill point {n}");
    assert_eq!(s["closed"], false, "kill point {n}");
    let seen = w.markers();
    let mut duplicates = 0;
    for m in MARKERS {
        let c = seen.iter().filter(|x| *x == m).count();
        duplicates += c.saturating_sub(1);
        assert_eq!(c, 1, "kill point {n}: `{m}` seen {c} times in {seen:?}");
    }
    // Nothing lost: every step ends as in the clean run.
    let got = final_states(w, &run);
    assert_eq!(
        got, clean_states,
        "kill point {n}: the steps end as in a clean run"
    );
    duplicates
}

/// Every step of a run as `ID:STATUS` (from its report, a projection of the journal).
fn final_states(w: &World, run: &str) -> Vec<String> {
    let o = w.run(&["report", run, "--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let mut k: Vec<String> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["id"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

#[test]
fn killed_after_every_commit_of_a_fan_out_rollback_on_both_stores() {
    // The two stores side by side: each run waits on its store far more than it computes.
    let mut total = (0, 0);
    let worlds: [fn() -> World; 2] = [World::sqlite, World::postgres];
    let counts: Vec<(usize, usize)> = std::thread::scope(|scope| {
        let each = worlds.map(|world| scope.spawn(move || killed_at_every_commit(&world())));
        each.into_iter()
            .map(|t| t.join().expect("the kills on one store"))
            .collect()
    });
    for (kills, dups) in counts {
        total = (total.0 + kills, total.1 + dups);
    }
    eprintln!(
        "crash: {} kills survived, 0 events lost, {} duplicate executions",
        total.0, total.1
    );
    assert!(total.0 >= 40, "{} kill points", total.0);
    assert_eq!(total.1, 0);
}
