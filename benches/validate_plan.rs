//! `cargo bench`: validates and plans a generated 10,000-step runbook.
//! Targets (issue 2): under 200 ms and under 100 MB peak memory. Also times every file of
//! the invalid corpus (target: each under 1 s).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use runbook::plan::plan;

// The same allocator as the binary, so the in-process figures match what users get.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use runbook::runbook::load_file;

/// A realistic large runbook: templates, preconditions, checkpoints, rollbacks, fan-out.
fn generate(steps: usize) -> String {
    let mut y = String::from(
        "runbook: big-upgrade\ntitle: Upgrade {{vars.version}}\nsummary: A very long maintenance.\n\
         window: { start: 2026-11-24T19:00:00Z, duration: 400h, timezone: Europe/London }\n\
         status_page: { components: [web, api], announce_before: 48h }\n\
         vars: { version: '3.2', app_db: 'postgres://127.0.0.1/app', dir: migrations }\n\
         secrets: [PGPASSWORD]\n\
         targets:\n  tenants: [acme, globex, initech, umbrella, hooli]\nsteps:\n",
    );
    for i in 0..steps {
        let _ = writeln!(y, "  - id: s{i}");
        match i % 5 {
            0 => {
                let _ = write!(
                    y,
                    "    kind: backup\n    title: Back up part {i}\n    expected: 1m\n    timeout: 5m\n    checkpoint: {}\n    with: {{ database: \"{{{{vars.app_db}}}}\", to: \"backups/{{{{run.id}}}}/{i}\" }}\n",
                    i % 100 == 0
                );
            }
            1 => {
                let _ = write!(
                    y,
                    "    kind: migrate\n    title: Migrate part {i}\n    expected: 2m\n    requires: [s{}]\n    preconditions:\n      - sql: select true\n        database: \"{{{{vars.app_db}}}}\"\n        message: ready\n      - window: {{ remaining_at_least: 5m }}\n    with: {{ database: \"{{{{vars.app_db}}}}\", dir: \"{{{{vars.dir}}}}\" }}\n    rollback: {{ kind: migrate, with: {{ database: \"{{{{vars.app_db}}}}\", dir: \"{{{{vars.dir}}}}\", to: \"{{{{steps.s{i}.outputs.from_version}}}}\" }} }}\n",
                    i - 1
                );
            }
            2 => {
                let _ = write!(
                    y,
                    "    kind: install\n    expected: 30s\n    for_each: \"{{{{targets.tenants}}}}\"\n    concurrency: 2\n    max_failures: 20%\n    run: {{ shell: \"./deploy.sh {{{{item}}}} {{{{vars.version}}}}\", env: {{ PGPASSWORD: \"{{{{secrets.PGPASSWORD}}}}\" }} }}\n"
                );
            }
            3 => {
                let _ = write!(
                    y,
                    "    kind: verify\n    expected: 1m\n    with: {{ backup: \"{{{{steps.s{}.outputs.path}}}}\" }}\n",
                    i - 3
                );
            }
            _ => {
                let _ = write!(
                    y,
                    "    kind: test\n    expected: 10s\n    public: false\n    checks:\n      - http: {{ url: \"http://127.0.0.1:8080/health\", expect_status: 200, within: 500ms }}\n"
                );
            }
        }
    }
    y
}

/// The largest peak resident memory of any child process waited for so far, in bytes.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as u64 * 1024 // Linux reports KiB
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, generate(10_000)).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();

    // End to end, as a user runs it: the release binary, process start and JSON output.
    // First, while this process holds little: a spawned child's peak resident memory
    // (getrusage) starts from its parent's, so measured after the in-process runs below
    // it would count what the benchmark itself holds.
    let bin = env!("CARGO_BIN_EXE_runbook");
    let mut e2e = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = std::process::Command::new(bin)
            .args(["plan", path.to_str().unwrap(), "--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        e2e.push(t.elapsed());
    }
    let peak = children_peak_rss();

    // Warm up (page cache, allocator), then measure.
    let rb = load_file(&path).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(rb.steps.len(), 10_000);
    drop(rb);
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let rb = load_file(&path).unwrap();
        let p = plan(&rb, None, chrono::Utc::now());
        p.write_json(&mut std::io::sink()).unwrap();
        times.push(t.elapsed());
    }
    let med = median(times.clone());
    println!("validate + plan, 10,000 steps ({} KiB):", size / 1024);
    println!(
        "  in process: median {}, min {}, max {} over 10 runs (target < 200 ms)",
        ms(med),
        ms(*times.iter().min().unwrap()),
        ms(*times.iter().max().unwrap())
    );

    println!(
        "  `runbook plan big.yaml --format json` (release binary): median {} over 5 runs, peak resident memory {:.1} MB (target < 100 MB)",
        ms(median(e2e)),
        peak as f64 / 1e6
    );

    // Every invalid-corpus file: rejected, and quickly.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut slowest = (Duration::ZERO, String::new());
    let mut count = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let t = Instant::now();
            assert!(load_file(&p).is_err());
            let took = t.elapsed();
            count += 1;
            if took > slowest.0 {
                slowest = (took, p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    println!(
        "invalid corpus: {count} files, slowest {} ({}) (target < 1 s each)",
        ms(slowest.0),
        slowest.1
    );

    let mut failed = Vec::new();
    if med > Duration::from_millis(200) {
        failed.push("validate + plan took 200 ms or more");
    }
    if peak > 100_000_000 {
        failed.push("peak memory reached 100 MB");
    }
    if slowest.0 > Duration::from_secs(1) {
        failed.push("an invalid file took more than 1 s");
    }
    if !failed.is_empty() {
        eprintln!("TARGET MISSED: {}", failed.join("; "));
        std::process::exit(1);
    }
}
