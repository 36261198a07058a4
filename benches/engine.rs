//! `cargo bench --bench engine`: the engine's own cost, through the release binary with
//! the durable SQLite journal (a fresh store per measurement), in 5 interleaved rounds
//! (min / median printed). Targets: under 2 ms per no-op step (1,000 steps); under
//! 0.1 ms per fan-out item, median (10,000 no-op items, concurrency 64; issue 15); 200
//! `shell: "true"` steps at most 1.3 times bash spawning `/bin/sh -c true` 200 times in
//! the same round, median of the ratios (issue 15). Exit 1 when one is missed.

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

fn min_median(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

const ROUNDS: usize = 5;

fn main() {
    let mut failed = Vec::new();

    // 1,000 no-op steps (announcements with no action): all engine and journal.
    let mut noop = String::from("runbook: noop\nsteps:\n");
    for i in 0..1000 {
        noop.push_str(&format!(
            "  - {{ id: s{i}, kind: announce, title: step {i} }}\n"
        ));
    }
    let empty = "runbook: empty\nsteps:\n  - { id: s0, kind: announce, title: one }\n";
    // One step over 10,000 items of a no-op, 64 at a time.
    let fan = "runbook: fan\nsteps:\n  - id: fan\n    kind: announce\n    title: fan-out\n    concurrency: 64\n    for_each: [".to_owned()
        + &(0..10_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        + "]\n";
    // 200 `shell: "true"` steps against bash running `/bin/sh -c true` 200 times.
    let mut shells = String::from("runbook: shells\nsteps:\n");
    for i in 0..200 {
        shells.push_str(&format!(
            "  - {{ id: s{i}, kind: patch, run: {{ shell: \"true\" }} }}\n"
        ));
    }
    let bare = || {
        let t = Instant::now();
        let s = Command::new("bash")
            .args(["-c", "for i in $(seq 200); do /bin/sh -c true; done"])
            .status()
            .unwrap();
        assert!(s.success());
        t.elapsed()
    };

    let (mut per_step, mut per_item, mut ratio, mut ours_ms, mut bash_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let base = run(fresh(empty).path(), "rb.yaml");
        let t = run(fresh(&noop).path(), "rb.yaml");
        per_step.push(ms(t.saturating_sub(base)) / 999.0);
        let t = run(fresh(&fan).path(), "rb.yaml");
        per_item.push(ms(t.saturating_sub(base)) / 10_000.0);
        let b = bare();
        let ours = run(fresh(&shells).path(), "rb.yaml");
        ratio.push(ms(ours) / ms(b));
        ours_ms.push(ms(ours));
        bash_ms.push(ms(b));
    }
    let (min, med) = min_median(&per_step);
    println!(
        "1,000 no-op steps: {med:.3} ms per step median (min {min:.3}), process start excluded; target < 2 ms"
    );
    if med > 2.0 {
        failed.push("per-step overhead");
    }
    let (min, med) = min_median(&per_item);
    println!(
        "fan-out, 10,000 no-op items, concurrency 64: {med:.3} ms per item median (min {min:.3}); target < 0.1 ms"
    );
    if med >= 0.1 {
        failed.push("per-item overhead");
    }
    let (rmin, rmed) = min_median(&ratio);
    let (_, ours) = min_median(&ours_ms);
    let (_, bash) = min_median(&bash_ms);
    println!(
        "200 shell steps: {ours:.0} ms median; bash spawning `/bin/sh -c true` 200 times: {bash:.0} ms median; ratio {rmed:.2} median (min {rmin:.2}), {:.2} ms per step over a bare spawn; target ratio <= 1.3",
        (ours - bash) / 200.0
    );
    if rmed > 1.3 {
        failed.push("shell steps against bare spawns");
    }

    if !failed.is_empty() {
        eprintln!("TARGET MISSED: {}", failed.join(", "));
        std::process::exit(1);
    }
}
