//! `cargo bench --bench engine`: the engine's own cost, through the release binary with
//! the durable SQLite journal (a fresh store per measurement).
//! Targets (issue 3): under 2 ms per no-op step (1,000 steps), under 1 ms of engine
//! overhead per fan-out item (10,000 items, concurrency 64); and the cost of a
//! `shell: "true"` step against a bare `true` spawned by bash.

use std::process::Command;
use std::time::{Duration, Instant};

fn run(dir: &std::path::Path, file: &str) -> Duration {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["execute", file, "--yes", "--now", "--log-format", "json"])
        .env(
            "RUNBOOK_STORE",
            format!("sqlite://{}/state.db", dir.display()),
        )
        .current_dir(dir)
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn fresh(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rb.yaml"), text).unwrap();
    dir
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut failed = Vec::new();

    // 1,000 no-op steps (announcements with no action): all engine and journal.
    let mut y = String::from("runbook: noop\nsteps:\n");
    for i in 0..1000 {
        y.push_str(&format!(
            "  - {{ id: s{i}, kind: announce, title: step {i} }}\n"
        ));
    }
    let empty = "runbook: empty\nsteps:\n  - { id: s0, kind: announce, title: one }\n";
    let base = median(
        (0..3)
            .map(|_| run(fresh(empty).path(), "rb.yaml"))
            .collect(),
    );
    let times: Vec<Duration> = (0..3).map(|_| run(fresh(&y).path(), "rb.yaml")).collect();
    let per_step = (median(times) - base) / 999;
    println!(
        "1,000 no-op steps: {:.3} ms per step (median of 3 runs, process start excluded; target < 2 ms)",
        ms(per_step)
    );
    if per_step > Duration::from_millis(2) {
        failed.push("per-step overhead");
    }

    // One step over 10,000 items of a no-op, 64 at a time.
    let fan = "runbook: fan\nsteps:\n  - id: fan\n    kind: announce\n    title: fan-out\n    concurrency: 64\n    for_each: [".to_owned()
        + &(0..10_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        + "]\n";
    let t = median((0..3).map(|_| run(fresh(&fan).path(), "rb.yaml")).collect());
    let per_item = (t.saturating_sub(base)) / 10_000;
    println!(
        "fan-out, 10,000 no-op items, concurrency 64: {:.3} ms per item (target < 1 ms)",
        ms(per_item)
    );
    if per_item > Duration::from_millis(1) {
        failed.push("per-item overhead");
    }

    // 200 `shell: "true"` steps against bash running `true` 200 times.
    let mut y = String::from("runbook: shells\nsteps:\n");
    for i in 0..200 {
        y.push_str(&format!(
            "  - {{ id: s{i}, kind: patch, run: {{ shell: \"true\" }} }}\n"
        ));
    }
    let ours = median((0..3).map(|_| run(fresh(&y).path(), "rb.yaml")).collect());
    let bash = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let s = Command::new("bash")
                    .args(["-c", "for i in $(seq 200); do /bin/sh -c true; done"])
                    .status()
                    .unwrap();
                assert!(s.success());
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "200 shell steps: {:.0} ms; bash spawning `sh -c true` 200 times: {:.0} ms; ratio {:.1} ({:.2} ms per step over a bare spawn)",
        ms(ours),
        ms(bash),
        ms(ours) / ms(bash),
        (ms(ours) - ms(bash)) / 200.0
    );

    if !failed.is_empty() {
        eprintln!("TARGET MISSED: {}", failed.join(", "));
        std::process::exit(1);
    }
}
