//! `cargo bench --bench sse_fanout`: how fast a change reaches 5,000 Server-Sent Events
//! clients of the status page (the release binary, on loopback), in three set-ups:
//!
//! - `inprocess` (a): `runbook execute --serve ADDR` on SQLite: the runner serves the page
//!   itself and its commits wake the page in the same process;
//! - `sqlite` (b): `runbook serve` and a separate `runbook execute` on one SQLite file: the
//!   server learns of the runner's commits from the kernel (inotify on the store);
//! - `postgres` (c): the same on PostgreSQL (127.0.0.1:5432, user `postgres`, trust
//!   auth), woken by LISTEN/NOTIFY; a fresh database per run (`psql`), dropped at the end.
//!
//! Each client is a raw TCP connection (`GET /events HTTP/1.1`) that reads the initial
//! `update` event, then logs every later `update` event (its version, when it came).
//! Per set-up, with every client connected:
//!
//! 1. an admin API update (`POST /api/v1/admin/updates`): the server's own write, so this
//!    is commit → re-render → fan-out. Target: every client gets it within 1 s.
//! 2. five steps of the run, one sample each. The runbook's `patch` steps each wait for
//!    their own gate file (`sleep 0.005` between looks: a gate adds up to ~7 ms here, the
//!    spawn included); they are `expected` to take long, so no ETA passes and no overrun
//!    is announced meanwhile. At a random moment (jitter) the bench creates the next gate
//!    and notes the time; the step ends and the next one starts, which changes the page
//!    (its title, and its announced start). A client's latency is from the gate to its
//!    first `update` event of (or after) the first version of the page that shows the new
//!    step's title: once every client has a newer version, the bench looks for the title
//!    in `/api/v2/summary.json`, and waits for the next version if it is not there yet.
//!    Target (issue 15, item 4): over all clients × samples of a set-up, p99 under
//!    150 ms, and no client missing an event.
//!
//! Per set-up it prints how busy the machine was before it started anything (other work
//! slows every figure down), each sample (min ≈ gate + detection + render + the first
//! write; the rest is the fan-out), the CPU the server, the runner, the clients and
//! everything else used meanwhile, then count, p50, p90, p99 and max of the pool and
//! `set-up X: p99 N ms (target < 150 ms) OK|MISSED`. Exits 1 when a set-up misses its
//! target or cannot be run, or an admin update misses its own.
//!
//! `SSE_CLIENTS=N` changes the number of clients (default 5000);
//! `SSE_SETUPS=inprocess,sqlite,postgres` runs a subset (default: all three, in order).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const TOKEN: &str = "sse-fanout-bench-token";
const PAGE_NAME: &str = "Fan-out bench";
/// Every client gets the admin update within this.
const ADMIN_TARGET: Duration = Duration::from_secs(1);
/// The p99 of the step samples stays under this.
const STEP_TARGET: Duration = Duration::from_millis(150);
/// Step samples per set-up (the runbook has one more step, the last one waiting).
const SAMPLES: usize = 5;
/// How long to wait for every client to get an event before counting the missing.
const PATIENCE: Duration = Duration::from_secs(15);
/// The quiet spell before a gate: a random part of this comes on top of `QUIET_MIN`.
const QUIET_MIN: Duration = Duration::from_millis(300);
const JITTER: Duration = Duration::from_millis(500);
/// The text of the admin update.
const ADMIN_BODY: &str = "We are on it: all is going to plan.";
/// The PostgreSQL server of set-up c.
const PG_HOST: &str = "127.0.0.1";
const PG_PORT: &str = "5432";
const PG_USER: &str = "postgres";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    InProcess,
    Sqlite,
    Postgres,
}

impl Setup {
    const ALL: [Setup; 3] = [Setup::InProcess, Setup::Sqlite, Setup::Postgres];

    fn name(self) -> &'static str {
        match self {
            Setup::InProcess => "inprocess",
            Setup::Sqlite => "sqlite",
            Setup::Postgres => "postgres",
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Setup::InProcess => "a",
            Setup::Sqlite => "b",
            Setup::Postgres => "c",
        }
    }

    fn label(self) -> String {
        format!("{} ({})", self.letter(), self.name())
    }

    fn describe(self) -> &'static str {
        match self {
            Setup::InProcess => "runbook execute --serve on SQLite (one process)",
            Setup::Sqlite => "runbook serve + runbook execute on one SQLite file",
            Setup::Postgres => "runbook serve + runbook execute on PostgreSQL",
        }
    }
}

/// The set-ups `SSE_SETUPS` names (all of them when it is unset or empty).
fn chosen_setups() -> Result<Vec<Setup>, String> {
    let Ok(list) = std::env::var("SSE_SETUPS") else {
        return Ok(Setup::ALL.to_vec());
    };
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let setup = Setup::ALL
            .into_iter()
            .find(|s| s.name() == name || s.letter() == name)
            .ok_or_else(|| {
                format!("SSE_SETUPS: unknown set-up `{name}` (use inprocess, sqlite, postgres)")
            })?;
        if !out.contains(&setup) {
            out.push(setup);
        }
    }
    if out.is_empty() {
        return Ok(Setup::ALL.to_vec());
    }
    Ok(out)
}

/// A child process in a session of its own (so the steps it starts in their own process
/// groups are found too), killed with all of them when dropped.
struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command, log: &Path) -> Result<Proc, String> {
        let f = std::fs::File::create(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let f2 = f.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(f2).stderr(f);
        // SAFETY: between fork and exec only async-signal-safe calls: setsid, and prctl
        // so that the child does not outlive the bench should it be killed.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {what} ({cmd:?}): {e}"))?;
        Ok(Proc {
            child,
            what: what.to_owned(),
            log: log.to_owned(),
        })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Why it is not ready: how it ended (if it did) and the end of its log.
    fn failure(&mut self, why: &str) -> String {
        let ended = match self.child.try_wait() {
            Ok(Some(status)) => format!(" ({} exited: {status})", self.what),
            _ => String::new(),
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "{why}{ended}\n--- {} log (last lines) ---\n{tail}\n--- end of log ---",
            self.what,
        )
    }
}

/// The processes of session `sid`.
fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // After the command's `(name)`: state, ppid, pgrp, session.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(3)?.parse::<i32>().ok()
                })
                == Some(sid)
        })
        .collect()
}

impl Drop for Proc {
    fn drop(&mut self) {
        let sid = self.child.id() as i32;
        // SAFETY: signalling the process group (and session) the child leads.
        unsafe { libc::kill(-sid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while self.alive() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the session: the leader's group and its steps' groups.
        for _ in 0..3 {
            // SAFETY: as above.
            unsafe { libc::kill(-sid, libc::SIGKILL) };
            let _ = self.child.wait();
            let left = session_members(sid);
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: a process of the session this bench created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The `psql` client: on PATH, else in a PostgreSQL installation.
fn psql_path() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.path().join("bin")))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(installed)
        .map(|d| d.join("psql"))
        .find(|p| p.is_file())
}

/// A fresh PostgreSQL database, dropped when this is.
struct PgDb {
    psql: PathBuf,
    name: String,
}

impl PgDb {
    fn sql(psql: &Path, sql: &str) -> Result<(), String> {
        let out = Command::new(psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", "postgres",
            ])
            .args(["-c", sql])
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", psql.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{sql}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn create() -> Result<PgDb, String> {
        let psql = psql_path().ok_or("no `psql` on PATH nor in /usr/lib/postgresql/*/bin")?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() % 1_000_000_000);
        let name = format!("runbook_sse_bench_{}_{nanos}", std::process::id());
        PgDb::sql(&psql, &format!("CREATE DATABASE {name}")).map_err(|e| {
            format!(
                "cannot create a database on PostgreSQL at {PG_HOST}:{PG_PORT} as {PG_USER}: {e}"
            )
        })?;
        Ok(PgDb { psql, name })
    }

    fn url(&self) -> String {
        format!(
            "postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{}?sslmode=disable",
            self.name
        )
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = PgDb::sql(&self.psql, &drop) {
            eprintln!("warning: the bench's database was not dropped: {e}");
        }
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

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// A small xorshift generator for the gates' jitter (seeded by the clock).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Jitter((t ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }

    /// Somewhere in `[0, max)`.
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = max.as_nanos().max(1) as u64;
        Duration::from_nanos(self.0 % nanos)
    }
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

/// The page's summary (empty when it cannot be had).
async fn summary(addr: &str) -> String {
    let (status, body) = http(addr, "GET", "/api/v2/summary.json", "", "").await;
    if status == 200 { body } else { String::new() }
}

/// One client's view, shared with the conductor.
#[derive(Default)]
struct Slot {
    /// The version of the last `update` event it read (0: none yet).
    latest: AtomicU64,
    /// Its connection ended after its first event.
    gone: AtomicBool,
    /// Every `update` event after the first: version, when it was read.
    log: Mutex<Vec<(u64, Instant)>>,
}

/// What the clients share with the conductor.
struct Board {
    ready: AtomicUsize,
    failed: AtomicUsize,
    slots: Vec<Slot>,
}

impl Board {
    fn new(clients: usize) -> Board {
        Board {
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            slots: (0..clients).map(|_| Slot::default()).collect(),
        }
    }

    /// The newest version any client has.
    fn newest(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.latest.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0)
    }

    /// Connected clients that have not yet read version `v`.
    fn behind(&self, v: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                let l = s.latest.load(Ordering::SeqCst);
                l > 0 && l < v && !s.gone.load(Ordering::SeqCst)
            })
            .count()
    }

    /// Waits until every connected client has read version `v`; whether they all did
    /// within `patience`.
    async fn wait_all(&self, v: u64, patience: Duration) -> bool {
        let t = Instant::now();
        loop {
            if self.behind(v) == 0 {
                return true;
            }
            if t.elapsed() > patience {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
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

/// One SSE client: connects, reads the first `update`, then logs every later one.
async fn client(addr: String, board: Arc<Board>, me: usize, connecting: Arc<Semaphore>) {
    // Connects a few hundred at a time (the listen backlog is finite); a client lets the
    // next one in once it has its first event.
    let Ok(permit) = connecting.acquire_owned().await else {
        board.failed.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let mut permit = Some(permit);
    let slot = &board.slots[me];
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
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if permit.is_some() {
                    board.failed.fetch_add(1, Ordering::SeqCst);
                } else {
                    slot.gone.store(true, Ordering::SeqCst);
                }
                return;
            }
            Ok(n) => n,
        };
        let now = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        for v in versions(&buf, &mut from) {
            if permit.take().is_some() {
                board.ready.fetch_add(1, Ordering::SeqCst);
            } else if let Ok(mut log) = slot.log.lock() {
                log.push((v, now));
            }
            slot.latest.fetch_max(v, Ordering::SeqCst);
        }
        if from > 64 * 1024 {
            buf.drain(..from);
            from = 0;
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

/// CPU time of a process so far: all its threads (`schedstat`, exact), and the part in
/// user space and in the kernel (`stat`, in clock ticks).
#[derive(Clone, Copy, Default)]
struct Cpu {
    total: Duration,
    user: Duration,
    sys: Duration,
}

impl Cpu {
    fn of(pid: u32) -> Cpu {
        let total = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .filter_map(|t| {
                        let stat =
                            std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
                        stat.split_whitespace().next()?.parse::<u64>().ok()
                    })
                    .sum()
            })
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command's `(name)`: state is field 0, utime 11, stime 12.
        let fields: Vec<u64> = stat
            .rfind(')')
            .map(|i| &stat[i + 1..])
            .unwrap_or_default()
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let tick = |i: usize| ticks(fields.get(i).copied().unwrap_or(0));
        Cpu {
            total: Duration::from_nanos(total),
            user: tick(11),
            sys: tick(12),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            total: self.total.saturating_sub(before.total),
            user: self.user.saturating_sub(before.user),
            sys: self.sys.saturating_sub(before.sys),
        }
    }

    fn add(&mut self, other: Cpu) {
        self.total += other.total;
        self.user += other.user;
        self.sys += other.sys;
    }
}

/// Clock ticks as time.
fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(n.saturating_mul(1_000_000_000) / hz)
}

/// CPU time the whole machine has spent busy so far (all cores, from `/proc/stat`).
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system idle iowait irq softirq steal: all but idle and iowait.
        .filter(|(i, _)| *i < 8 && *i != 3 && *i != 4)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    self::ticks(ticks)
}

/// How busy the machine is over a second (0 to 1 of all cores), before this bench
/// starts anything: other work that competes with it.
async fn machine_load() -> f64 {
    let (busy, t) = (machine_busy(), Instant::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = machine_busy().saturating_sub(busy);
    used.as_secs_f64() / (t.elapsed().as_secs_f64() * cores() as f64)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Processes whose CPU time the samples note: name, pid.
type Watched = Vec<(String, u32)>;

/// One change and what every client made of it.
struct Sample {
    what: String,
    /// The first version showing the change.
    version: u64,
    /// Per client that got it: from the change to the event.
    lat: Vec<Duration>,
    /// Connected clients that never got it.
    missing: usize,
    /// Versions after `version` that came before the next change (should be none: each
    /// is a page change no one asked for).
    later: u64,
    /// Versions between the last before the change and `version` that did not show it.
    skipped: u64,
    /// CPU time of each watched process from the change until every client had it.
    cpu: Vec<Cpu>,
    /// The machine's busy CPU time meanwhile, and how long that was.
    machine: Duration,
    span: Duration,
}

impl Sample {
    fn line(&mut self) -> String {
        self.lat.sort();
        format!(
            "{}: v{}; {} received, {} missing; min {}, p50 {}, p99 {}, max {}{}{}",
            self.what,
            self.version,
            self.lat.len(),
            self.missing,
            ms(self.lat.first().copied().unwrap_or_default()),
            ms(pct(&self.lat, 0.50)),
            ms(pct(&self.lat, 0.99)),
            ms(self.lat.last().copied().unwrap_or_default()),
            if self.skipped > 0 {
                format!(
                    "  (note: {} page change(s) before it did not show the change)",
                    self.skipped
                )
            } else {
                String::new()
            },
            if self.later > 0 {
                format!(
                    "  (note: {} more page change(s) followed before the next)",
                    self.later
                )
            } else {
                String::new()
            }
        )
    }
}

/// Makes a change at `trigger` (`make` makes it) and waits until every client has the
/// first version of the page that shows `marker`.
async fn measure<F, Fut>(
    addr: &str,
    board: &Board,
    watched: &Watched,
    what: String,
    marker: &str,
    make: F,
) -> Result<Sample, String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let before = board.newest();
    if summary(addr).await.contains(marker) {
        return Err(format!(
            "{what}: the page shows `{marker}` before the change"
        ));
    }
    let cpu_before: Vec<Cpu> = watched.iter().map(|(_, pid)| Cpu::of(*pid)).collect();
    let machine_before = machine_busy();
    let trigger = Instant::now();
    make().await?;
    // The first newer version every client has that shows the marker.
    let mut version = before + 1;
    loop {
        if !board.wait_all(version, PATIENCE).await {
            break; // The missing are counted below.
        }
        if summary(addr).await.contains(marker) {
            break;
        }
        if trigger.elapsed() > PATIENCE {
            return Err(format!(
                "{what}: the page does not show `{marker}` after {}",
                ms(PATIENCE)
            ));
        }
        // That page did not show it yet: the next one.
        version += 1;
    }
    let span = trigger.elapsed();
    let machine = machine_busy().saturating_sub(machine_before);
    let cpu = watched
        .iter()
        .zip(cpu_before)
        .map(|((_, pid), before)| Cpu::of(*pid).since(before))
        .collect();
    let mut lat = Vec::new();
    let mut missing = 0;
    for slot in &board.slots {
        if slot.latest.load(Ordering::SeqCst) == 0 {
            continue; // Never connected: counted once, as such.
        }
        let log = slot.log.lock().map(|l| l.clone()).unwrap_or_default();
        match log.iter().find(|(v, _)| *v >= version) {
            Some((_, t)) => lat.push(t.saturating_duration_since(trigger)),
            None => missing += 1,
        }
    }
    Ok(Sample {
        what,
        version,
        lat,
        missing,
        later: 0,
        skipped: version - before - 1,
        cpu,
        machine,
        span,
    })
}

/// The runbook: `SAMPLES + 1` patch steps, each waiting for its gate. Each is expected
/// to take long, so that no ETA passes and no overrun is announced during the bench: the
/// page changes only when a step starts.
fn runbook(gates: &Path) -> String {
    let mut rb = String::from(
        "runbook: fanout\n\
         title: Fan-out maintenance\n\
         summary: Thousands of people watch this page.\n\
         status_page: { components: [web] }\n\
         steps:\n",
    );
    for k in 0..=SAMPLES {
        let gate = gates.join(format!("gate-{k}"));
        // At most about 10 minutes, should the runner be gone.
        rb.push_str(&format!(
            "  - id: s{k}\n    kind: patch\n    title: {title}\n    expected: 10m\n    timeout: 15m\n    run:\n      shell: \"i=0; while [ ! -e '{gate}' ] && [ $i -lt 120000 ]; do sleep 0.005; i=$((i+1)); done\"\n",
            title = title(k),
            gate = gate.display(),
        ));
    }
    rb
}

fn title(k: usize) -> String {
    format!("Stage {k} (bench)")
}

/// What one set-up came to.
struct Outcome {
    /// The admin update: every client within its target.
    admin_ok: bool,
    admin_line: String,
    /// Pooled step latencies (a client missing an event counts as missing).
    lat: Vec<Duration>,
    missing: usize,
    not_connected: usize,
}

/// Everything a set-up started, stopped in this order: processes, database, files.
struct Rig {
    procs: Vec<Proc>,
    db: Option<PgDb>,
    gates: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Let every step's gate loop end by itself too.
        for k in 0..=SAMPLES {
            let _ = std::fs::write(self.gates.join(format!("gate-{k}")), "");
        }
        self.procs.clear();
        self.db.take();
    }
}

/// Waits until the page at `addr` answers and shows `marker`; `Err` when `p` ended or
/// `patience` passed.
async fn wait_page(
    addr: &str,
    p: &mut Proc,
    marker: &str,
    patience: Duration,
) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let body = summary(addr).await;
        if body.contains(PAGE_NAME) && body.contains(marker) {
            return Ok(());
        }
        if !p.alive() {
            return Err(p.failure(&format!(
                "it ended before the page on {addr} showed `{marker}`"
            )));
        }
        if t.elapsed() > patience {
            return Err(p.failure(&format!(
                "the page on {addr} did not show `{marker}` within {}",
                ms(patience)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `make(addr)` on a free port, tried again (on another) should it end because it
/// could not listen there (another process may take the port meanwhile).
async fn start_serving(
    what: &str,
    dir: &Path,
    marker: &str,
    make: impl Fn(&str) -> Command,
) -> Result<(Proc, String), String> {
    let mut last = String::new();
    for attempt in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut p = Proc::spawn(
            what,
            &mut make(&addr),
            &dir.join(format!("{what}-{attempt}.log")),
        )?;
        match wait_page(&addr, &mut p, marker, Duration::from_secs(60)).await {
            Ok(()) => return Ok((p, addr)),
            Err(e) => {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                last = e;
                if p.alive() || !log.contains("cannot serve the status page") {
                    break; // Not the port: trying again would not help.
                }
            }
        }
    }
    Err(last)
}

async fn set_up(setup: Setup, clients: usize) -> Result<Outcome, String> {
    let bin = env!("CARGO_BIN_EXE_runbook");
    let tmp = tempfile::Builder::new()
        .prefix("sse-fanout-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let dir = tmp.path().to_owned();
    let gates = dir.join("gates");
    std::fs::create_dir(&gates).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("rb.yaml"), runbook(&gates)).map_err(|e| e.to_string())?;
    let mut rig = Rig {
        procs: Vec::new(),
        db: None,
        gates: gates.clone(),
        _tmp: tmp,
    };
    let store = match setup {
        Setup::Postgres => {
            let db = PgDb::create()?;
            let url = db.url();
            rig.db = Some(db);
            url
        }
        _ => format!("sqlite://{}/state.db", dir.display()),
    };
    let execute = |extra: &[&str]| {
        let mut c = Command::new(bin);
        c.args(["execute", "rb.yaml", "--now", "--yes", "--store", &store])
            .args(extra)
            .env("RUNBOOK_ADMIN_TOKEN", TOKEN)
            .env_remove("RUNBOOK_STORE")
            .current_dir(&dir);
        c
    };
    let first = title(0);
    let addr = match setup {
        Setup::InProcess => {
            let (p, addr) = start_serving("execute", &dir, &first, |addr| {
                execute(&["--serve", addr, "--page-name", PAGE_NAME])
            })
            .await?;
            rig.procs.push(p);
            addr
        }
        Setup::Sqlite | Setup::Postgres => {
            let (p, addr) = start_serving("serve", &dir, PAGE_NAME, |addr| {
                let mut c = Command::new(bin);
                c.args(["serve", "--addr", addr, "--store", &store])
                    .args(["--page-name", PAGE_NAME])
                    .env("RUNBOOK_ADMIN_TOKEN", TOKEN)
                    .env_remove("RUNBOOK_STORE")
                    .current_dir(&dir);
                c
            })
            .await?;
            rig.procs.push(p);
            // A run in progress, waiting at its first step.
            let mut run = Proc::spawn("execute", &mut execute(&[]), &dir.join("execute.log"))?;
            wait_page(&addr, &mut run, &first, Duration::from_secs(60))
                .await
                .map_err(|e| format!("the run did not start: {e}"))?;
            rig.procs.push(run);
            addr
        }
    };
    println!("serving on {addr}, store {store}");

    // The clients.
    let board = Arc::new(Board::new(clients));
    let connecting = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for me in 0..clients {
        tasks.spawn(client(addr.clone(), board.clone(), me, connecting.clone()));
    }
    let t = Instant::now();
    while board.ready.load(Ordering::SeqCst) + board.failed.load(Ordering::SeqCst) < clients
        && t.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = board.ready.load(Ordering::SeqCst);
    println!(
        "{ready}/{clients} SSE clients connected and got the first event in {} ({} failed)",
        ms(t.elapsed()),
        board.failed.load(Ordering::SeqCst)
    );
    if ready == 0 {
        let why = format!("no SSE client got its first event from {addr}");
        return Err(rig.procs[0].failure(&why));
    }
    // Let the connections settle (acks, the last clients' first reads) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut samples: Vec<Sample> = Vec::new();
    // 1. An admin update.
    let mut posted = Duration::ZERO;
    let took = &mut posted;
    let at = &addr;
    let mut watched: Watched = rig
        .procs
        .iter()
        .map(|p| (p.what.clone(), p.child.id()))
        .collect();
    if setup == Setup::InProcess {
        watched[0].0 = "execute --serve".into();
    }
    watched.push(("bench (clients)".into(), std::process::id()));
    let admin = measure(
        &addr,
        &board,
        &watched,
        "admin update -> event".into(),
        ADMIN_BODY,
        move || async move {
            let t = Instant::now();
            let (status, body) = http(
                at,
                "POST",
                "/api/v1/admin/updates",
                &format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"),
                &format!(r#"{{"body": "{ADMIN_BODY}"}}"#),
            )
            .await;
            *took = t.elapsed();
            if status == 201 {
                Ok(())
            } else {
                Err(format!("the admin update was refused ({status}): {body}"))
            }
        },
    )
    .await?;
    samples.push(admin);

    // 2. The run's next steps, one gate at a time, each at a random moment.
    let mut jitter = Jitter::new();
    for k in 0..SAMPLES {
        tokio::time::sleep(QUIET_MIN + jitter.below(JITTER)).await;
        let gate = gates.join(format!("gate-{k}"));
        let sample = measure(
            &addr,
            &board,
            &watched,
            format!("step {} starts", k + 1),
            &title(k + 1),
            || async {
                std::fs::write(&gate, "")
                    .map_err(|e| format!("cannot create {}: {e}", gate.display()))
            },
        )
        .await?;
        samples.push(sample);
    }
    // A last quiet spell: any page change after the last sample shows below.
    tokio::time::sleep(QUIET_MIN).await;
    let newest = board.newest();
    // The newest version before each next change (and at the end).
    let ends: Vec<u64> = samples
        .iter()
        .skip(1)
        .map(|s| s.version - s.skipped - 1)
        .chain([newest])
        .collect();
    for (s, end) in samples.iter_mut().zip(ends) {
        s.later = end.saturating_sub(s.version);
    }
    let alive = rig.procs.iter_mut().all(Proc::alive);
    if !alive {
        eprintln!("warning: a process of the set-up ended during the measurement");
    }

    // Report.
    let mut admin = samples.remove(0);
    let admin_line = admin.line();
    println!("{admin_line} (answered 201 in {})", ms(posted));
    let within = admin.lat.iter().filter(|d| **d <= ADMIN_TARGET).count();
    let admin_ok = within == clients && admin.missing == 0;
    let admin_line = format!(
        "set-up {}: admin update: {within}/{clients} clients within {} ms {}",
        setup.label(),
        ADMIN_TARGET.as_millis(),
        if admin_ok { "OK" } else { "MISSED" }
    );
    let mut lat = Vec::new();
    let mut missing = 0;
    let mut cpu = vec![Cpu::default(); watched.len()];
    for s in &mut samples {
        println!("{}", s.line());
        lat.extend_from_slice(&s.lat);
        missing += s.missing;
        for (sum, c) in cpu.iter_mut().zip(&s.cpu) {
            sum.add(*c);
        }
    }
    let span: Duration = samples.iter().map(|s| s.span).sum();
    let machine: Duration = samples.iter().map(|s| s.machine).sum();
    let ours: Duration = cpu.iter().map(|c| c.total).sum();
    let n = samples.len().max(1) as u32;
    println!(
        "CPU from the gates until every client had the event, {} samples ({} in all; {} cores: {} of CPU):",
        samples.len(),
        ms(span),
        cores(),
        ms(span * cores() as u32),
    );
    for ((name, _), c) in watched.iter().zip(&cpu) {
        println!(
            "  {name}: {} (user {}, kernel {}); {} per sample, {:.1} µs per client",
            ms(c.total),
            ms(c.user),
            ms(c.sys),
            ms(c.total / n),
            c.total.as_secs_f64() * 1e6 / (f64::from(n) * ready.max(1) as f64),
        );
    }
    println!(
        "  everything else on the machine: ~{} (other work, and the steps' gate polls)",
        ms(machine.saturating_sub(ours)),
    );
    tasks.shutdown().await;
    drop(rig);
    Ok(Outcome {
        admin_ok,
        admin_line,
        lat,
        missing,
        not_connected: clients - ready,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter here.
    let clients: usize = std::env::var("SSE_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let setups = match chosen_setups() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // The limit is inherited by the server too, which needs as many.
    let nofile = raise_nofile();
    if (nofile as usize) < clients + 100 {
        eprintln!("RLIMIT_NOFILE is {nofile}: too few descriptors for {clients} clients");
        std::process::exit(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let ok = rt.block_on(async {
        tokio::select! {
            ok = bench(clients, &setups) => ok,
            _ = tokio::signal::ctrl_c() => {
                // Dropping the bench's future stops its processes and removes its files.
                eprintln!("interrupted");
                false
            }
        }
    });
    // The clients' tasks and sockets go with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    if !ok {
        std::process::exit(1);
    }
}

async fn bench(clients: usize, setups: &[Setup]) -> bool {
    let mut verdicts = Vec::new();
    let mut ok = true;
    for &setup in setups {
        println!(
            "\n== set-up {}: {}, {clients} SSE clients, {SAMPLES} step samples ==",
            setup.label(),
            setup.describe()
        );
        let load = machine_load().await;
        println!(
            "machine {:.0}% busy (of {} cores) before the set-up starts anything{}",
            load * 100.0,
            cores(),
            if load > 0.25 {
                ": other work competes, the figures are slower than on a quiet machine"
            } else {
                ""
            }
        );
        match set_up(setup, clients).await {
            Ok(mut out) => {
                out.lat.sort();
                let count = out.lat.len() + out.missing;
                let p99 = if out.missing > 0 && count > 0 {
                    // The missing count as slower than any received.
                    let rank = ((count as f64 * 0.99).ceil() as usize).clamp(1, count);
                    out.lat.get(rank - 1).copied().unwrap_or(Duration::MAX)
                } else {
                    pct(&out.lat, 0.99)
                };
                println!(
                    "pooled: count {count} ({} clients × {SAMPLES} samples; {} missing); p50 {}, p90 {}, p99 {}, max {}",
                    clients - out.not_connected,
                    out.missing,
                    ms(pct(&out.lat, 0.50)),
                    ms(pct(&out.lat, 0.90)),
                    if p99 == Duration::MAX {
                        "none".into()
                    } else {
                        ms(p99)
                    },
                    ms(out.lat.last().copied().unwrap_or_default()),
                );
                let met = p99 < STEP_TARGET && out.missing == 0 && out.not_connected == 0;
                let mut verdict = format!(
                    "set-up {}: p99 {} (target < {} ms) {}",
                    setup.label(),
                    if p99 == Duration::MAX {
                        "none".into()
                    } else {
                        format!("{:.0} ms", p99.as_secs_f64() * 1000.0)
                    },
                    STEP_TARGET.as_millis(),
                    if met { "OK" } else { "MISSED" }
                );
                if out.missing > 0 || out.not_connected > 0 {
                    verdict.push_str(&format!(
                        " ({} events missing, {} clients not connected)",
                        out.missing, out.not_connected
                    ));
                }
                println!("{verdict}");
                println!("{}", out.admin_line);
                ok &= met && out.admin_ok;
                verdicts.push(verdict);
                verdicts.push(out.admin_line);
            }
            Err(e) => {
                let verdict = format!("set-up {}: FAILED to run: {e}", setup.label());
                println!("{verdict}");
                ok = false;
                verdicts.push(format!("set-up {}: FAILED to run", setup.label()));
            }
        }
    }
    println!("\n== summary ==");
    for v in &verdicts {
        println!("{v}");
    }
    ok
}
