//! `cargo bench`: validates and plans a generated 10,000-step runbook.
//! Targets (issue 2): under 200 ms and under 100 MB peak memory. Also times every file of
//! the invalid corpus (target: each under 1 s).
//! Issue 15: with one checkpoint only (the longest rollback paths), `plan` output and
//! time grow linearly (40,000 steps against 10,000: at most 4.6 times the bytes and 6
//! times the time), `runbook plan` of the 10,000-step file peaks under 50 MB resident,
//! and the heap at its peak in process (validate + plan) is under 5 times the file.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use runbook::plan::plan;

// The same allocator as the binary, so the in-process figures match what users get;
// counted, for the heap's peak.
#[global_allocator]
static GLOBAL: Counted = Counted;

struct Counted;
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn grew(n: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed on to mimalloc unchanged; only sizes are counted.
unsafe impl std::alloc::GlobalAlloc for Counted {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        grew(l.size());
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        if n >= l.size() {
            grew(n - l.size());
        } else {
            LIVE.fetch_sub(l.size() - n, std::sync::atomic::Ordering::Relaxed);
        }
        unsafe { mimalloc::MiMalloc.realloc(p, l, n) }
    }
}

/// The heap's peak above what was live when `f` started, with `f`'s result.
fn heap_peak<T>(f: impl FnOnce() -> T) -> (usize, T) {
    use std::sync::atomic::Ordering::Relaxed;
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (PEAK.load(Relaxed) - base, out)
}
use runbook::runbook::load_file;

/// A realistic large runbook: templates, preconditions, checkpoints, rollbacks, fan-out.
fn generate(steps: usize) -> String {
    generate_with(steps, 100)
}

/// [`generate`] with a checkpoint every `every` steps.
fn generate_with(steps: usize, every: usize) -> String {
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
                    i % every == 0
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

    // Issue 15: one checkpoint, so every rollback path goes back to the start.
    let sparse = |n: usize| {
        let path = dir.path().join(format!("sparse-{n}.yaml"));
        std::fs::write(&path, generate_with(n, usize::MAX)).unwrap();
        path
    };
    let (small, large) = (sparse(10_000), sparse(40_000));
    let plan_of = |path: &Path, format: &str| {
        let t = Instant::now();
        let out = std::process::Command::new(bin)
            .args(["plan", path.to_str().unwrap(), "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success());
        (t.elapsed(), out.stdout.len())
    };
    let mut grow = Vec::new();
    for format in ["json", "text"] {
        let (t10, b10) = (0..3).map(|_| plan_of(&small, format)).min().unwrap();
        let (t40, b40) = (0..3).map(|_| plan_of(&large, format)).min().unwrap();
        let (bytes, time) = (
            b40 as f64 / b10 as f64,
            t40.as_secs_f64() / t10.as_secs_f64(),
        );
        println!(
            "one checkpoint, `plan --format {format}`: 10,000 steps {:.1} MB in {}, 40,000 steps {:.1} MB in {}: {bytes:.2}x the bytes, {time:.2}x the time (targets <= 4.6x, <= 6x)",
            b10 as f64 / 1e6,
            ms(t10),
            b40 as f64 / 1e6,
            ms(t40)
        );
        grow.push((bytes, time));
    }
    // The resident peak of `runbook plan` on the 10,000-step file, as a user runs it,
    // and the heap's peak in process, against the file's size.
    let (sparse_size, rss) = {
        let out = std::process::Command::new("/usr/bin/time")
            .args([
                "-f",
                "%M",
                bin,
                "plan",
                small.to_str().unwrap(),
                "--format",
                "json",
            ])
            .stdout(std::process::Stdio::null())
            .output();
        let kb = out.ok().and_then(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .lines()
                .last()?
                .parse::<u64>()
                .ok()
        });
        (
            std::fs::metadata(&small).unwrap().len(),
            kb.map(|k| k * 1024),
        )
    };
    let (heap, ()) = heap_peak(|| {
        let rb = load_file(&small).unwrap();
        let p = plan(&rb, None, chrono::Utc::now());
        p.write_json(&mut std::io::sink()).unwrap();
    });
    let heap_ratio = heap as f64 / sparse_size as f64;
    match rss {
        Some(rss) => println!(
            "`runbook plan` of the 10,000-step file ({:.1} MB): peak resident {:.1} MB ({:.1}x the file; target < 50 MB); heap peak in process {:.1} MB ({heap_ratio:.1}x the file; target < 5x)",
            sparse_size as f64 / 1e6,
            rss as f64 / 1e6,
            rss as f64 / sparse_size as f64,
            heap as f64 / 1e6
        ),
        None => println!(
            "heap peak in process {:.1} MB ({heap_ratio:.1}x the file; target < 5x); /usr/bin/time is missing, so no resident figure",
            heap as f64 / 1e6
        ),
    }

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
    if grow.iter().any(|&(bytes, time)| bytes > 4.6 || time > 6.0) {
        failed.push("plan output or time grew faster than the steps");
    }
    if rss.is_some_and(|r| r >= 50_000_000) {
        failed.push("`runbook plan` of 10,000 steps reached 50 MB resident");
    }
    if heap_ratio >= 5.0 {
        failed.push("validate + plan held 5 times the file's size or more");
    }
    if !failed.is_empty() {
        eprintln!("TARGET MISSED: {}", failed.join("; "));
        std::process::exit(1);
    }
}
