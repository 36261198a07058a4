//! `cargo bench --bench report`: the post-run report of a big run, through the release
//! binary and in process. The journal is written here, event by event through
//! `Store::append` into a fresh SQLite store: 1,000 steps and one fan-out step of
//! 10,000 items (1% of them failing), closures, public updates. Target: every report
//! (HTML and JSON) under 1 s; the bench exits 1 when one is over.

use std::process::Command;
use std::time::{Duration, Instant};

use runbook::engine::event::Event;
use runbook::store::Store;
use serde_json::{Value, json};

const STEPS: usize = 1_000;
const ITEMS: usize = 10_000;
const TARGET: Duration = Duration::from_secs(1);
const RUN: &str = "big-20261124-190000-000";

fn ev(v: Value) -> Event {
    serde_json::from_value(v).expect("a valid event")
}

/// A small deterministic generator (no dependency, same journal every time).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Writes the big run's journal; returns the number of events.
async fn write_journal(store: &Store) -> usize {
    let mut rng = Lcg(7);
    let t0: i64 = 1_795_546_800_000; // 2026-11-24T19:00:00Z
    let fan_at = STEPS / 2;
    let ids: Vec<String> = (0..=STEPS)
        .map(|i| {
            if i == fan_at {
                "fan-out".to_owned()
            } else {
                format!("step-{i:04}")
            }
        })
        .collect();
    let expected: Vec<u64> = (0..=STEPS).map(|_| 5_000 + rng.next(20) * 1_000).collect();
    let total: u64 = expected.iter().sum();
    let steps: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "id": id,
                "title": (i % 7 != 3).then(|| format!("Public step {i}")),
                "label": format!("Step {i}: do the thing number {i} <carefully>"),
                "kind": if i == fan_at { "install" } else if i % 10 == 0 { "backup" } else { "patch" },
                "expected_ms": expected[i],
                "checkpoint": i % 100 == 0,
            })
        })
        .collect();
    let start = ev(json!({
        "type": "run_started", "runbook": "big", "title": "A very big maintenance",
        "file": "/srv/runbooks/big.yaml", "file_sha256": "ab".repeat(32), "vars": {},
        "operator": "bench", "host": "bench-host", "pid": 1,
        "public": {
            "title": "A very big maintenance", "summary": "Many steps.", "components": ["api"],
            "timezone": "Europe/London", "planned_start_ms": t0,
            "planned_end_ms": t0 + (total as f64 * 1.05) as i64, "steps": steps,
        },
    }));
    let mut seq = 1i64;
    let mut at = t0;
    let mut n = 0usize;
    let mut append = |batch: Vec<Event>, at: i64| {
        let first = seq;
        seq += batch.len() as i64;
        n += batch.len();
        let store = store.clone();
        async move {
            store.append(RUN, first, &batch, at).await.expect("append");
        }
    };
    append(vec![start], at).await;
    // Each step: one batch with its start, one with its outcome (and whatever goes with
    // it), so every step has its own times; about one in eight runs over.
    for (i, id) in ids.iter().enumerate() {
        let mut begin = vec![
            ev(json!({"type": "step_checking", "step": id, "attempt": 1})),
            ev(json!({"type": "step_started", "step": id, "attempt": 1})),
        ];
        if i % 10 == 0 {
            begin.push(ev(json!({"type": "published", "kind": "step_started",
                "status": "in_progress", "step": id,
                "body": format!("Step {i} of {STEPS}: Public step {i}."), "eta_ms": at + 3_600_000})));
        }
        append(begin, at).await;
        if i == fan_at {
            let mut batch = Vec::with_capacity(1_000);
            for item in 0..ITEMS {
                batch.push(ev(
                    json!({"type": "item_started", "step": id, "index": item}),
                ));
                batch.push(if item % 100 == 42 {
                    ev(json!({"type": "item_failed", "step": id, "index": item,
                        "error": format!("tenant {item}: connection refused")}))
                } else {
                    ev(json!({"type": "item_succeeded", "step": id, "index": item,
                        "outputs": {"version": 7}}))
                });
                if batch.len() >= 1_000 {
                    at += 2_000;
                    append(std::mem::take(&mut batch), at).await;
                }
            }
            if !batch.is_empty() {
                append(batch, at).await;
            }
        }
        let over = rng.next(8) == 0;
        let took = if over {
            expected[i] as i64 * 3 / 2
        } else {
            expected[i] as i64 * (70 + rng.next(30) as i64) / 100
        };
        at += took;
        let outputs = if i % 10 == 0 {
            json!({"size_bytes": 1_000_000 + i, "path": format!("backups/{i}.db"), "tables": 12, "sha256": "00"})
        } else {
            json!({"rows": i, "log": "x".repeat(300)})
        };
        let mut end = vec![ev(
            json!({"type": "step_succeeded", "step": id, "attempt": 1, "outputs": outputs}),
        )];
        if i == 10 || i == 600 {
            end.push(ev(json!({"type": "service_closed"})));
        }
        if i == 400 || i == 990 {
            end.push(ev(json!({"type": "service_reopened"})));
        }
        append(end, at).await;
    }
    append(
        vec![
            ev(json!({"type": "run_completed"})),
            ev(
                json!({"type": "published", "kind": "completed", "status": "completed",
                "body": "The maintenance is complete."}),
            ),
        ],
        at + 1_000,
    )
    .await;
    n
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/state.db", dir.path().display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Instant::now();
    let (store, events) = rt.block_on(async {
        let store = Store::open(&url).await.unwrap();
        let n = write_journal(&store).await;
        (store, n)
    });
    println!(
        "journal: {events} events ({STEPS} steps + 1 fan-out of {ITEMS} items), written in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut failed = Vec::new();
    let mut check = |what: String, took: Duration| {
        let verdict = if took > TARGET { "OVER" } else { "ok" };
        println!(
            "{what}: {:.0} ms ({verdict}; target < {} ms)",
            ms(took),
            TARGET.as_millis()
        );
        if took > TARGET {
            failed.push(what);
        }
    };

    // Through the release binary: process start, store open, load, fold, render, write.
    for format in ["html", "json", "md"] {
        let mut size = 0;
        let times: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
                    .args(["report", RUN, "--format", format, "--store", &url])
                    .output()
                    .unwrap();
                let took = t.elapsed();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                size = out.stdout.len();
                took
            })
            .collect();
        check(
            format!(
                "binary: runbook report --format {format} ({:.1} MB, median of 5)",
                size as f64 / 1e6
            ),
            median(times),
        );
    }

    // In process: load from the store, then build and render.
    let now = runbook::store::now_ms();
    let mut load = Vec::new();
    let mut build = Vec::new();
    let mut html = Vec::new();
    let mut json = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let recorded = rt
            .block_on(runbook::report::load(&store, RUN))
            .expect("the run loads");
        load.push(t.elapsed());
        let t = Instant::now();
        let report = runbook::report::build(RUN, &recorded, now).expect("the report builds");
        build.push(t.elapsed());
        let t = Instant::now();
        let h = report.to_html();
        html.push(t.elapsed());
        let t = Instant::now();
        let j = report.to_json();
        json.push(t.elapsed());
        assert!(h.len() > 1_000_000 && j.len() > 1_000_000);
    }
    let (load, build, html, json) = (median(load), median(build), median(html), median(json));
    println!(
        "in process: load {:.0} ms, build {:.0} ms, HTML {:.0} ms, JSON {:.0} ms (medians of 5)",
        ms(load),
        ms(build),
        ms(html),
        ms(json)
    );
    check(
        "in process: load + build + HTML".into(),
        load + build + html,
    );
    check(
        "in process: load + build + JSON".into(),
        load + build + json,
    );

    rt.block_on(store.close());
    if !failed.is_empty() {
        eprintln!("TARGET MISSED: {}", failed.join(", "));
        std::process::exit(1);
    }
}
