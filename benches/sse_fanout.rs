//! `cargo bench --bench sse_fanout`: Server-Sent Events fan-out of `runbook serve` (the
//! release binary) to 5,000 concurrent `/events` clients on loopback.
//!
//! Each client is a raw TCP connection (`GET /events HTTP/1.1`) that reads the initial
//! `update` event. Then one change is made and, for every client, the time from the
//! change to its next `update` event is taken:
//!
//! 1. an admin API update (`POST /api/v1/admin/updates`) to the active maintenance: the
//!    server's own write, so this is commit → re-render → fan-out;
//! 2. the run going on in its `runbook execute` process (the step's gate file is created,
//!    the next step starts and publishes): the cross-process path, where the server finds
//!    the commit by polling SQLite (every 250 ms), so it is slower by design.
//!
//! Target: all 5,000 clients get the admin update's event within 1 s (exit 1 otherwise).
//! `SSE_CLIENTS=N` changes the number of clients.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const TOKEN: &str = "sse-fanout-bench-token";
const TARGET: Duration = Duration::from_secs(1);
/// How long to wait for every client to get an event before counting the missing.
const PATIENCE: Duration = Duration::from_secs(15);

/// A child process in its own process group, killed with it when dropped.
struct Proc(Child);

impl Proc {
    fn spawn(cmd: &mut Command, log: &Path) -> Proc {
        let f = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Proc(child)
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        // SAFETY: signalling the process group we created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(3);
        while self.alive() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// The soft limit on open files raised to the hard one; the limit now.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One plain HTTP/1.1 exchange with `Connection: close`: status and body.
async fn http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let go = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(10), go).await {
        Ok(Ok(text)) => {
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            (status, body)
        }
        _ => (0, String::new()),
    }
}

/// What the clients share with the conductor.
#[derive(Default)]
struct Board {
    ready: AtomicUsize,
    failed: AtomicUsize,
    /// When each change was made.
    triggers: [OnceLock<Instant>; 2],
    /// Per change, every client's latency.
    latencies: [Mutex<Vec<Duration>>; 2],
}

/// Versions in `buf[*from..]` of complete `data: {"version":N}` lines, in order.
fn versions(buf: &[u8], from: &mut usize) -> Vec<u64> {
    const KEY: &[u8] = b"data: {\"version\":";
    let mut found = Vec::new();
    while let Some(i) = buf[*from..].windows(KEY.len()).position(|w| w == KEY) {
        let start = *from + i + KEY.len();
        let Some(end) = buf[start..].iter().position(|&b| b == b'}') else {
            break; // Not all here yet.
        };
        let digits = &buf[start..start + end];
        if let Some(v) = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            found.push(v);
        }
        *from = start + end + 1;
    }
    found
}

/// One SSE client: connects, reads the first `update`, then records, per change, the
/// latency of the first `update` that arrives after it.
async fn client(addr: String, board: Arc<Board>, connecting: Arc<Semaphore>) {
    // Connects a few hundred at a time (the listen backlog is finite); a client lets the
    // next one in once it has its first event.
    let mut permit = Some(connecting.acquire_owned().await.unwrap());
    let mut stream = None;
    for _ in 0..20 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await
        {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(mut s) = stream else {
        board.failed.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let _ = s.set_nodelay(true);
    let req = format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        board.failed.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut from = 0;
    let mut ready = false;
    let mut seen = [false; 2];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if !ready {
                    board.failed.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            Ok(n) => n,
        };
        let now = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        for _version in versions(&buf, &mut from) {
            if !ready {
                ready = true;
                permit.take();
                board.ready.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            // The latest change made before this event is the one it answers.
            let latest = (0..2).rev().find_map(|k| {
                board.triggers[k]
                    .get()
                    .filter(|&&t| t <= now)
                    .map(|&t| (k, t))
            });
            if let Some((k, t)) = latest
                && !seen[k]
            {
                seen[k] = true;
                board.latencies[k].lock().unwrap().push(now - t);
            }
        }
        if ready && from > 64 * 1024 {
            buf.drain(..from);
            from = 0;
        }
        if !seen.contains(&false) {
            // Hold the connection until the end, as a browser would.
            let _ = s.read(&mut chunk).await;
            return;
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Waits until `count()` reaches `n` or `patience` is over; how long it took.
async fn wait_count(n: usize, patience: Duration, count: impl Fn() -> usize) -> Duration {
    let t = Instant::now();
    while count() < n && t.elapsed() < patience {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.elapsed()
}

/// Prints one change's figures; whether every client got it within the target.
fn report(what: &str, clients: usize, lat: &mut [Duration]) -> bool {
    lat.sort();
    let within = lat.iter().filter(|d| **d <= TARGET).count();
    println!(
        "{what}: {}/{clients} received; min {}, p50 {}, p99 {}, max {}; {within} within {}",
        lat.len(),
        ms(lat.first().copied().unwrap_or_default()),
        ms(pct(lat, 0.50)),
        ms(pct(lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        ms(TARGET),
    );
    within == clients
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter here.
    let clients: usize = std::env::var("SSE_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let nofile = raise_nofile();
    assert!(
        nofile as usize > clients + 100,
        "RLIMIT_NOFILE is {nofile}: too few descriptors for {clients} clients"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(bench(clients));
    // The clients' tasks and sockets go with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    if !ok {
        eprintln!(
            "MISSED: not all {clients} clients got the update within {}",
            ms(TARGET)
        );
        std::process::exit(1);
    }
}

async fn bench(clients: usize) -> bool {
    let bin = env!("CARGO_BIN_EXE_runbook");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = format!("sqlite://{}/state.db", dir.display());
    let gate: PathBuf = dir.join("gate");
    std::fs::write(
        dir.join("rb.yaml"),
        format!(
            r#"runbook: fanout
title: Fan-out maintenance
summary: Thousands of people watch this page.
status_page: {{ components: [web] }}
steps:
  - {{ id: wait, kind: patch, title: Waiting for the signal, timeout: 10m, run: {{ shell: "i=0; while [ ! -e '{gate}' ] && [ $i -lt 6000 ]; do sleep 0.05; i=$((i+1)); done" }} }}
  - {{ id: next, kind: patch, title: The next step, timeout: 10m, run: {{ shell: "sleep 600" }} }}
"#,
            gate = gate.display()
        ),
    )
    .unwrap();

    // The server, on a free port (tried again if another process took it meanwhile).
    let mut server = None;
    let mut addr = String::new();
    for attempt in 0..5 {
        let port = free_port();
        addr = format!("127.0.0.1:{port}");
        let mut p = Proc::spawn(
            Command::new(bin)
                .args(["serve", "--addr", &addr, "--store", &store])
                .args(["--page-name", "Fan-out bench"])
                .env("RUNBOOK_ADMIN_TOKEN", TOKEN)
                .current_dir(dir),
            &dir.join(format!("serve-{attempt}.log")),
        );
        let t = Instant::now();
        while p.alive() && t.elapsed() < Duration::from_secs(30) {
            let (status, body) = http(&addr, "GET", "/api/v2/summary.json", "", "").await;
            if status == 200 && body.contains("Fan-out bench") {
                server = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if server.is_some() {
            break;
        }
    }
    let _server = server.expect("runbook serve starts");

    // A run in progress, waiting at its first step.
    let _run = Proc::spawn(
        Command::new(bin)
            .args(["execute", "rb.yaml", "--now", "--yes", "--store", &store])
            .current_dir(dir),
        &dir.join("execute.log"),
    );
    let t = Instant::now();
    loop {
        let (_, body) = http(&addr, "GET", "/api/v2/summary.json", "", "").await;
        if body.contains("Waiting for the signal") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the run did not start: {}",
            std::fs::read_to_string(dir.join("execute.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The clients.
    let board = Arc::new(Board::default());
    let connecting = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(client(addr.clone(), board.clone(), connecting.clone()));
    }
    let took = wait_count(clients, Duration::from_secs(120), || {
        board.ready.load(Ordering::SeqCst) + board.failed.load(Ordering::SeqCst)
    })
    .await;
    let ready = board.ready.load(Ordering::SeqCst);
    println!(
        "{ready}/{clients} SSE clients connected and got the first event in {} ({} failed)",
        ms(took),
        board.failed.load(Ordering::SeqCst)
    );
    // Let the connections settle (acks, the server's first polls) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. An admin update.
    board.triggers[0].set(Instant::now()).unwrap();
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/admin/updates",
        &format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"),
        r#"{"body": "We are on it: all is going to plan."}"#,
    )
    .await;
    let posted = board.triggers[0].get().unwrap().elapsed();
    assert_eq!(status, 201, "the admin update was refused: {body}");
    wait_count(ready, PATIENCE, || board.latencies[0].lock().unwrap().len()).await;
    let mut lat = board.latencies[0].lock().unwrap().clone();
    println!("admin update answered 201 in {}", ms(posted));
    let ok = ready == clients && report("admin update -> event", clients, &mut lat);

    // 2. The run goes on in the other process. The server finds its commit at its next
    // SQLite poll, so the delay depends on the poll's phase: start at a random moment
    // rather than always at the same distance from the last wake-up.
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 250);
    tokio::time::sleep(Duration::from_millis(500 + u64::from(jitter))).await;
    board.triggers[1].set(Instant::now()).unwrap();
    std::fs::write(&gate, "").unwrap();
    wait_count(ready, PATIENCE, || board.latencies[1].lock().unwrap().len()).await;
    let mut lat = board.latencies[1].lock().unwrap().clone();
    report(
        "next step in the runner process -> event (one sample: includes the step's 50 ms gate poll and 0-250 ms of the server's SQLite poll)",
        clients,
        &mut lat,
    );

    tasks.abort_all();
    ok
}
