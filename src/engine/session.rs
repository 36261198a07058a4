//! The run commands: execute, resume, abort, approve/reject, status, runs. Each opens the
//! store, checks what it is asked against the journal, and only then writes.

/// `println!` and friends that shrug off a closed pipe (`runbook status | head`)
/// instead of panicking.
macro_rules! outln {
    () => {
        outln!("")
    };
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($t)*);
        let _ = writeln!(std::io::stdout().lock(), "{}", crate::terminal::safe(&text));
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($t)*);
        let mut o = std::io::stdout().lock();
        let _ = write!(o, "{}", crate::terminal::safe(&text));
        let _ = o.flush();
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($t)*);
        let _ = writeln!(std::io::stderr().lock(), "{}", crate::terminal::safe(&text));
    }};
}

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::decide::{self, Next};
use super::event::{Decision, Event};
use super::run::{EngineError, Runner, Stop};
use super::state::{RunState, RunStatus, StepStatus};
use super::terminal::{LogFormat, Reporter};
use crate::exit::{Exit, Failure, Outcome};
use crate::runbook::{self, Check, Runbook};
use crate::store::{Lease, Store, StoreError, now_ms};

/// A lease whose heartbeat is older than this belongs to a runner that died.
pub const STALE_AFTER: Duration = Duration::from_secs(15);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

/// [`STALE_AFTER`]; for tests only, `RUNBOOK_TEST_STALE_AFTER_MS` replaces it (the
/// take-over tests stall a runner and take its lease over at once with `0`).
fn stale_after() -> Duration {
    std::env::var("RUNBOOK_TEST_STALE_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(STALE_AFTER, Duration::from_millis)
}

fn fail(message: impl std::fmt::Display) -> Outcome {
    Err(Failure::invalid(message))
}

/// Where step logs go: beside a SQLite store (its file's directory, as the store reads
/// its URL), or `.runbook/` for PostgreSQL.
fn state_dir(url: &str) -> PathBuf {
    crate::store::StoreUrl::parse(url).map_or_else(|_| PathBuf::from(".runbook"), |u| u.state_dir())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "operator".into())
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every secret the runbook names must be in the environment: an unset one would be
/// used as an empty password, a failure far from its cause.
fn secrets_set(rb: &Runbook) -> Result<(), String> {
    let unset: Vec<&str> = rb
        .secrets
        .iter()
        .filter(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()))
        .map(String::as_str)
        .collect();
    match unset.as_slice() {
        [] => Ok(()),
        [one] => Err(format!(
            "secret `{one}` is not set: export it in the environment of `runbook`"
        )),
        many => Err(format!(
            "secrets {} are not set: export them in the environment of `runbook`",
            many.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The first line of `execute` and `resume`: the run's id (JSON with `--log-format json`).
fn say_run_id(format: LogFormat, run_id: &str) {
    match format {
        LogFormat::Text => outln!("run {run_id}"),
        LogFormat::Json => outln!("{}", json!({ "run": run_id })),
    }
}

/// Options of `runbook execute`.
/// Starts the status page beside a run, given the store URL: the page's module is above
/// the engine (the admin API calls into it), so `execute --serve` is handed one.
pub type PageStarter = Box<
    dyn FnOnce(
            String,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<tokio::task::JoinHandle<()>, String>>
                    + Send,
            >,
        > + Send,
>;

pub struct ExecuteArgs {
    pub file: PathBuf,
    pub vars: Vec<(String, String)>,
    pub run_id: Option<String>,
    pub now: bool,
    pub yes: bool,
    pub dry_run: bool,
    pub store: Option<String>,
    pub log_format: LogFormat,
    /// Serve the status page while the run goes on: started (given the store URL) once
    /// the run may begin, and before it does.
    pub serve: Option<PageStarter>,
    /// `strict`: the window guard rolls back by itself instead of pausing.
    pub guard_strict: bool,
}

/// `runbook execute`.
pub async fn execute(args: ExecuteArgs) -> Outcome {
    let mut rb = match runbook::load_file(&args.file) {
        Ok(rb) => rb,
        Err(invalid) => return Err(Failure::rendered(invalid.render())),
    };
    if let Err(e) = super::vars::apply_vars(&mut rb, &args.vars) {
        return fail(e);
    }
    if let Err(e) = secrets_set(&rb) {
        return fail(e);
    }
    let bytes = crate::input::read_limited(&args.file).unwrap_or_default();
    if args.dry_run {
        return dry_run(
            &rb,
            &args.file.display().to_string(),
            Reporter::plain(args.log_format),
        )
        .await;
    }
    let url = crate::store::chosen_url(args.store.as_deref());
    let store = match Store::open(&url)
        .await
        .and_then(|s| s.writable().map(|()| s))
    {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            rb.id,
            chrono::Utc::now().format("%Y%m%d-%H%M%S-%3f")
        )
    });
    // The id names the run's log directory: no `.`/`..`, nothing a file system refuses.
    let well_formed = run_id.len() <= 128
        && run_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !well_formed {
        return fail(format!(
            "--run-id `{run_id}`: start with a letter or digit, then letters, digits, `-`, `_` and `.`, at most 128 characters"
        ));
    }
    match store.run_exists(&run_id).await {
        Ok(true) => {
            return fail(format!(
                "run `{run_id}` already exists; choose another --run-id"
            ));
        }
        Ok(false) => {}
        Err(e) => return fail(e),
    }
    // Refuse before saying anything about a run that will not exist.
    match store.lease(&rb.id).await {
        Ok(Some(holder)) if !ended_run(&store, &holder).await => return refuse_lease(&holder),
        Ok(_) => {}
        Err(e) => return fail(e),
    }
    // The page is started before the run: a page that cannot be served is a reason not
    // to begin.
    let server = match args.serve {
        Some(start) => match start(url.clone()).await {
            Ok(handle) => Some(handle),
            Err(e) => return fail(e),
        },
        None => None,
    };
    say_run_id(args.log_format, &run_id);
    if !args.yes && std::io::stdin().is_terminal() {
        out!(
            "{}",
            crate::plan::plan(&rb, None, chrono::Utc::now()).to_text()
        );
        out!("Start run `{run_id}` of `{}`? [y/N] ", rb.id);
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure::rendered("not started\n"));
        }
    }
    let out = Reporter::new(args.log_format, &rb);
    if !args.now
        && let Some(start) = rb.window.start
    {
        let wait = (start - chrono::Utc::now()).to_std().unwrap_or_default();
        if !wait.is_zero() {
            out.note(&format!(
                "waiting for the window to open at {} (use --now to start at once)",
                start
                    .with_timezone(&rb.window.timezone)
                    .format("%Y-%m-%d %H:%M %Z")
            ));
            tokio::time::sleep(wait).await;
        }
    }
    let lease = Lease {
        runbook: rb.id.clone(),
        run_id: run_id.clone(),
        host: host(),
        pid: std::process::id() as i64,
        heartbeat_ms: now_ms(),
        epoch: 0,
        released: false,
    };
    let lease = match store.acquire(&lease, None).await {
        Ok(Ok(lease)) => lease,
        Ok(Err(holder)) => return refuse_lease(&holder),
        Err(e) => return fail(e),
    };
    let mut runner = Runner::new(
        &rb,
        store.holding(&lease),
        run_id.clone(),
        RunState::default(),
        0,
        state_dir(&url).join("logs").join(&run_id),
        out,
    );
    runner.learned = learned(&store, &rb.id, &run_id).await;
    // The scheduled maintenance (`runbook schedule`) this run carries out, if any.
    let scheduled = crate::store::notice::pending(&store, &rb.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .next();
    let mut start = Event::RunStarted {
        runbook: rb.id.clone(),
        title: rb.title.clone(),
        file: std::fs::canonicalize(&args.file)
            .unwrap_or(args.file.clone())
            .display()
            .to_string(),
        file_sha256: sha256(&bytes),
        vars: rb.vars.clone(),
        operator: operator(),
        host: lease.host.clone(),
        pid: std::process::id(),
        // `--now`: the window opens now, and lasts `window.duration` from here.
        window_start_ms: (args.now && rb.window.start.is_some()).then(now_ms),
        guard: args.guard_strict.then(|| "strict".to_owned()),
        public: None,
    };
    // The public texts are rendered with the run's own values (its vars, its id).
    let started_state = RunState::default()
        .fold(&start, now_ms())
        .unwrap_or_default();
    let plan = crate::engine::publish::plan(
        &rb,
        scheduled.as_ref().map(|p| p.id.clone()),
        &runner.context_of(&started_state, None),
    );
    if let Event::RunStarted { public, title, .. } = &mut start {
        // The title as rendered with the run's values (`{{vars.version}}` ...).
        if let Some(t) = &plan.title {
            *title = t.clone();
        }
        *public = Some(Box::new(plan));
    }
    let started = runner.record(start).await;
    if started.is_ok()
        && let Some(p) = &scheduled
    {
        // Best effort: the run's own journal already names the maintenance.
        let _ = crate::store::notice::mark_started(&store, p, &run_id).await;
    }
    if let Err(e) = started {
        let _ = store.release(&rb.id, &run_id).await;
        return fail(e);
    }
    let code = finish(runner, &lease).await;
    if let Some(server) = server {
        // Long enough for the page and its live clients to show how the run ended.
        tokio::time::sleep(SERVE_LINGER).await;
        server.abort();
    }
    code
}

/// How long `execute --serve` keeps serving after the run ends.
const SERVE_LINGER: Duration = Duration::from_secs(2);

/// What earlier finished runs of `runbook` took, step by step (the latest 20 runs).
pub async fn learned(store: &Store, runbook: &str, except: &str) -> crate::engine::timing::Learned {
    let Ok(runs) = store.runs().await else {
        return Default::default();
    };
    let mut journals = Vec::new();
    for r in runs
        .iter()
        .filter(|r| r.runbook == runbook && r.run_id != except)
        .take(20)
    {
        if let Ok(events) = store.load(&r.run_id).await {
            journals.push(events);
        }
    }
    crate::engine::timing::Learned::from_runs(journals.iter().map(Vec::as_slice))
}

/// Whether a lease is left over from a run that has ended (its runner died after
/// recording the end, before giving the lease back): then it is released.
async fn ended_run(store: &Store, holder: &Lease) -> bool {
    let ended = match store.load(&holder.run_id).await {
        Ok(events) => RunState::from_events(events.iter().map(|r| (&r.event, r.at_ms)))
            .is_ok_and(|s| s.status.is_terminal()),
        Err(_) => false,
    };
    if ended {
        let _ = store.release(&holder.runbook, &holder.run_id).await;
    }
    ended
}

/// Whether a process of this host is still running (a runner on this machine that died
/// need not wait for its heartbeat to go stale).
fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether the runner holding a lease is still at work: its heartbeat is fresh and, on
/// this host, its process exists.
fn holder_alive(holder: &Lease) -> bool {
    now_ms() - holder.heartbeat_ms < stale_after().as_millis() as i64
        && (holder.host != host() || pid_alive(holder.pid))
}

fn refuse_lease(holder: &Lease) -> Outcome {
    let age = (now_ms() - holder.heartbeat_ms) / 1000;
    fail(if holder_alive(holder) {
        format!(
            "runbook `{}` is already being run: run `{}` on host {} (pid {}), last heartbeat {age}s ago",
            holder.runbook, holder.run_id, holder.host, holder.pid
        )
    } else {
        format!(
            "run `{}` of runbook `{}` on host {} (pid {}) stopped without finishing (last heartbeat {age}s ago): resume it with `runbook resume {}` or end it with `runbook abort {}`",
            holder.run_id, holder.runbook, holder.host, holder.pid, holder.run_id, holder.run_id
        )
    })
}

/// Waits for Ctrl-C or SIGTERM and names it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        () = terminated => "SIGTERM",
    }
}

/// Why a drive was cut short.
enum Cut {
    Signal(&'static str),
    /// The heartbeat found the lease taken over.
    LeaseLost(StoreError),
}

/// Drives the run with a heartbeat, holding `lease`, then says how it ended and
/// returns the exit code.
async fn finish(mut runner: Runner<'_>, lease: &Lease) -> Outcome {
    let store = runner.store.clone();
    let run_id = runner.run_id.clone();
    let runbook_id = lease.runbook.as_str();
    let mut beat = {
        let (store, lease) = (store.clone(), lease.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                // A store that cannot be reached is tried again; a lease taken over is
                // the end of this runner.
                if let Err(lost @ StoreError::LeaseLost { .. }) = store.heartbeat(&lease).await {
                    return lost;
                }
            }
        })
    };
    // Ctrl-C or SIGTERM drops the drive: the running step's processes are killed and
    // the step stays in doubt in the journal, for `resume` to decide. A lease taken over
    // drops it the same way, and the new holder decides.
    let driven = tokio::select! {
        result = runner.drive() => Ok(result),
        signal = interrupted() => Err(Cut::Signal(signal)),
        Ok(lost) = &mut beat => Err(Cut::LeaseLost(lost)),
    };
    beat.abort();
    runner.out.finish();
    // A cut drive's SQL is stopped on the server before the process ends, and recorded.
    if driven.is_err()
        && let Err(e) = runner.record_cancellations(None, true).await
    {
        errln!("error: cannot record the statements stopped on the server: {e}");
    }
    let result = match driven {
        Ok(result) => result,
        Err(Cut::Signal(signal)) => {
            runner.out.note(&format!(
                "stopped by {signal}; the run is unfinished (a step that was running is in doubt). Go on with `runbook resume {run_id}`, or end it with `runbook abort {run_id}`"
            ));
            store.close().await;
            return Ok(Exit::NeedsAPerson);
        }
        Err(Cut::LeaseLost(lost)) => {
            store.close().await;
            return Err(Failure::error(Exit::NeedsAPerson, lost));
        }
    };
    let result = match result {
        // Someone ended the run from outside (abort) while a step ran.
        Err(EngineError::Illegal(_)) => match runner.sync().await {
            Ok(_) if runner.state.status.is_terminal() => Ok(Stop::Ended(runner.state.status)),
            _ => result,
        },
        other => other,
    };
    let code = match result {
        Ok(Stop::Ended(status)) => {
            let _ = store.release(runbook_id, &run_id).await;
            match status {
                RunStatus::Completed => Ok(Exit::Ok),
                RunStatus::RolledBack => Ok(Exit::RolledBack),
                _ => Ok(Exit::NeedsAPerson),
            }
        }
        Ok(Stop::Paused(reason)) => {
            runner.out.note(&format!(
                "paused: {reason}. {}",
                if reason.starts_with("window guard") {
                    format!("Decide with `runbook resume {run_id}` (go on) or `runbook resume {run_id} --rollback`")
                } else {
                    format!("Decide with `runbook resume {run_id} --retry | --skip | --rollback`")
                }
            ));
            Ok(Exit::NeedsAPerson)
        }
        Ok(Stop::InDoubt(step)) if runner.state.status == RunStatus::RollingBack => {
            runner.out.note(&format!(
                "the undo of step `{step}` started before the runner stopped and may or may not have finished; it is not marked idempotent. Run it again with `runbook resume {run_id} --retry`, or end the run with `runbook abort {run_id}` and finish by hand"
            ));
            Ok(Exit::NeedsAPerson)
        }
        Ok(Stop::InDoubt(step)) => {
            runner.out.note(&format!(
                "step `{step}` started before the runner stopped and may or may not have finished; it is not marked idempotent. Decide with `runbook resume {run_id} --retry | --skip | --rollback`"
            ));
            Ok(Exit::NeedsAPerson)
        }
        Err(e) => Err(Failure::error(Exit::NeedsAPerson, e)),
    };
    store.close().await;
    code
}

/// `execute --dry-run`: the plan, then every precondition that only reads (SQL `select`,
/// HTTP `GET`/`HEAD`, the window) evaluated through the engine's own checks. Nothing is
/// written: the journal is a store in memory, and no action runs.
async fn dry_run(rb: &Runbook, file: &str, out: Reporter) -> Outcome {
    let plan = crate::plan::plan(rb, None, chrono::Utc::now());
    out!("{}", plan.to_text());
    let store = match Store::memory().await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let started = Event::RunStarted {
        runbook: rb.id.clone(),
        title: rb.title.clone(),
        file: file.to_owned(),
        file_sha256: String::new(),
        vars: rb.vars.clone(),
        operator: operator(),
        host: host(),
        pid: std::process::id(),
        window_start_ms: None,
        guard: None,
        public: None,
    };
    let state = match RunState::default().fold(&started, now_ms()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut runner = Runner::new(
        rb,
        store,
        "dry-run".into(),
        state,
        0,
        std::env::temp_dir(),
        out,
    );
    runner.read_only = true;
    let ctx = runner.context(None);
    outln!("\nPreconditions (read-only ones evaluated now; nothing was changed):");
    let mut failing = 0;
    let mut any = false;
    for &i in &rb.order {
        let s = &rb.steps[i];
        for c in &s.preconditions {
            any = true;
            let what = match &c.check {
                Check::Sql { sql, .. } => format!("sql: {}", one_line(sql)),
                Check::Window { remaining_at_least } => format!(
                    "window: at least {} left",
                    crate::duration::fmt_duration(*remaining_at_least)
                ),
                Check::Step { id, state } => format!("step `{id}` {state:?}").to_lowercase(),
                Check::Shell { command, .. } => format!("shell: {}", one_line(command)),
                Check::Http(h) => format!("http: {} {}", h.method, h.url),
            };
            let result = match read_only(&c.check) {
                Err(why) => format!("not evaluated ({why})"),
                Ok(()) => match runner.holds(c, &ctx).await {
                    Ok(()) => "holds".to_owned(),
                    Err(e) => {
                        failing += 1;
                        format!("DOES NOT HOLD: {}", runner.masker.mask(&e))
                    }
                },
            };
            outln!("  {:<16} {}: {result}", s.id, runner.masker.mask(&what));
        }
    }
    if !any {
        outln!("  (none)");
    }
    if failing > 0 {
        outln!("\n{failing} precondition(s) do not hold now.");
        return Ok(Exit::NeedsAPerson);
    }
    Ok(Exit::Ok)
}

/// A single `SELECT` / `WITH` query (or an integrity check): reads only.
fn is_read_only(sql: &str) -> bool {
    let s = sql
        .trim()
        .trim_end_matches(';')
        .trim_start()
        .to_ascii_lowercase();
    const WRITES: &[&str] = &[
        "insert", "update", "delete", "merge", "drop", "alter", "create", "truncate", "grant",
        "revoke", "vacuum", "reindex", "copy", "call", "lock", "nextval", "setval", "into",
    ];
    (s.starts_with("select") || s.starts_with("with") || s.starts_with("pragma integrity_check"))
        && !s.contains(';')
        && !s
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| WRITES.contains(&w))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a dry run may evaluate the condition: it only reads, and uses no value that
/// exists only during the run (outputs of steps, fan-out items).
fn read_only(check: &Check) -> Result<(), &'static str> {
    let texts: Vec<&str> = match check {
        Check::Sql { sql, database, .. } => {
            if !is_read_only(sql) {
                return Err("it may change data");
            }
            vec![sql, database]
        }
        Check::Http(h) => {
            if !matches!(h.method.as_str(), "GET" | "HEAD") {
                return Err("it is not a GET");
            }
            let mut t = vec![h.url.as_str()];
            t.extend(h.headers.values().map(String::as_str));
            t
        }
        Check::Window { .. } => vec![],
        Check::Step { .. } => return Err("it depends on the run"),
        Check::Shell { .. } => return Err("a command may change things"),
    };
    if texts
        .iter()
        .any(|t| t.contains("steps.") || t.contains("item"))
    {
        return Err("it uses values known only during the run");
    }
    Ok(())
}

/// The runbook a run was started from, when its file is still as it was then.
fn runbook_of(state: &RunState) -> Option<Runbook> {
    let bytes = crate::input::read_limited(Path::new(&state.file)).ok()?;
    if sha256(&bytes) != state.file_sha256 {
        return None;
    }
    runbook::load_bytes(&state.file, &bytes).ok()
}

/// Loads a run's journal and folds it.
async fn load_run(store: &Store, run_id: &str) -> Result<(RunState, i64), WriteError> {
    let events = store.load(run_id).await.map_err(WriteError::Store)?;
    let seq = events.last().map(|r| r.seq).unwrap_or(0);
    let state = RunState::from_events(events.iter().map(|r| (&r.event, r.at_ms))).map_err(|e| {
        WriteError::Damaged(format!("the journal of run `{run_id}` does not fold: {e}"))
    })?;
    Ok((state, seq))
}

/// Why a write a person asked for (approve, reject, abort, a manual update) was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The run, as it stands, refuses it (ended, no such step, not waiting, kept changing).
    #[error("{0}")]
    Refused(String),
    /// The store could not read or write it.
    #[error(transparent)]
    Store(StoreError),
    /// The run's journal in the store cannot be read as a run.
    #[error("{0}")]
    Damaged(String),
}

/// `runbook resume`.
pub async fn resume(
    run_id: &str,
    decision: Option<Decision>,
    store_flag: Option<&str>,
    log_format: LogFormat,
) -> Outcome {
    let url = crate::store::chosen_url(store_flag);
    let store = match Store::open_existing(&url).await {
        Ok(Some(s)) => s,
        Ok(None) => return fail(StoreError::UnknownRun(run_id.to_owned())),
        Err(e) => return fail(e),
    };
    if let Err(e) = store.writable() {
        return fail(e);
    }
    let (state, seq) = match load_run(&store, run_id).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if state.status.is_terminal() {
        // A runner that died after recording the end left its lease behind.
        if let Ok(Some(holder)) = store.lease(&state.runbook).await
            && holder.run_id == run_id
        {
            ended_run(&store, &holder).await;
        }
        return fail(format!(
            "run `{run_id}` has already ended ({}); nothing to resume",
            state.status.as_str()
        ));
    }
    let bytes = match crate::input::read_limited(Path::new(&state.file)) {
        Ok(b) => b,
        Err(e) => return fail(format!("the runbook of run `{run_id}`: {e}")),
    };
    if sha256(&bytes) != state.file_sha256 {
        return fail(format!(
            "the runbook `{}` has changed since run `{run_id}` started; resuming would run a different plan. Restore the file as it was, or abort the run",
            state.file
        ));
    }
    let mut rb = match runbook::load_bytes(&state.file, &bytes) {
        Ok(rb) => rb,
        Err(invalid) => return Err(Failure::rendered(invalid.render())),
    };
    rb.vars = state.vars.clone();
    if let Err(e) = secrets_set(&rb) {
        return fail(e);
    }
    // The lease: ours if free or left by a dead runner of this run.
    let lease = Lease {
        runbook: rb.id.clone(),
        run_id: run_id.to_owned(),
        host: host(),
        pid: std::process::id() as i64,
        heartbeat_ms: now_ms(),
        epoch: 0,
        released: false,
    };
    let lease = match store.lease(&rb.id).await {
        Err(e) => return fail(e),
        Ok(None) => match store.acquire(&lease, None).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(holder)) => return refuse_lease(&holder),
            Err(e) => return fail(e),
        },
        Ok(Some(holder)) => {
            if holder.run_id != run_id || holder_alive(&holder) {
                if holder.run_id == run_id {
                    return fail(format!(
                        "run `{run_id}` is being run on host {} (pid {}), last heartbeat {}s ago",
                        holder.host,
                        holder.pid,
                        (now_ms() - holder.heartbeat_ms) / 1000
                    ));
                }
                return refuse_lease(&holder);
            }
            // Taken over: the stalled runner's next append or heartbeat finds the
            // epoch moved on, and it stops.
            match store.acquire(&lease, Some(&holder)).await {
                Ok(Ok(lease)) => lease,
                Ok(Err(holder)) => return refuse_lease(&holder),
                Err(e) => return fail(e),
            }
        }
    };
    let out = Reporter::new(log_format, &rb);
    say_run_id(log_format, run_id);
    let mut runner = Runner::new(
        &rb,
        store.holding(&lease),
        run_id.to_owned(),
        state,
        seq,
        state_dir(&url).join("logs").join(run_id),
        out,
    );
    runner.learned = learned(&store, &rb.id, run_id).await;
    // A runner killed outright (SIGKILL, a power cut on a VM host) cannot stop what it
    // started; running or skipping its step again while that still runs would do it twice.
    let left = super::action::orphans(&state_dir(&url).join("logs").join(run_id));
    if !left.is_empty() {
        let _ = store.release(&rb.id, run_id).await;
        let list = left
            .iter()
            .map(|(log, g)| format!("`{log}` (process group {g}: `kill -TERM -- -{g}`)"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Failure::error(
            Exit::NeedsAPerson,
            format!(
                "commands that the stopped runner started are still running: {list}. Wait for them to end or stop them, then resume"
            ),
        ));
    }
    // The step the decision is about: in doubt, or failed and paused.
    let pending = decide::decide(&rb, &runner.state, &runner.facts());
    let subject = match &pending {
        Next::InDoubt { step, .. } => Some(*step),
        Next::Wait => rb.order.iter().copied().find(|&i| {
            let s = runner.state.step(&rb.steps[i].id);
            matches!(s.status, StepStatus::Failed | StepStatus::TimedOut) && !s.failure_ignored
        }),
        _ => None,
    };
    let by = operator();
    let applied = async {
        match (decision, subject) {
            // A step in doubt that is safe to repeat runs again by itself.
            (None, Some(_)) if matches!(pending, Next::InDoubt { rerun: true, .. }) => {}
            (d, Some(i)) if runner.state.status == RunStatus::RollingBack && d != Some(Decision::Retry) => {
                return Err(Failure::error(Exit::NeedsAPerson, format!(
                    "the run is rolling back and the undo of step `{}` started before the runner stopped: it may or may not have finished. `runbook resume {run_id} --retry` runs it again; `runbook abort {run_id}` ends the run for a person to finish by hand",
                    rb.steps[i].id
                )));
            }
            (None, Some(i)) => {
                let id = &rb.steps[i].id;
                let why = match pending {
                    Next::InDoubt { .. } => "started before the runner stopped and may or may not have finished",
                    _ => "failed and the run paused",
                };
                // Not bad input: the run needs a person's decision (exit 4).
                return Err(Failure::error(Exit::NeedsAPerson, format!(
                    "step `{id}` {why}; choose `runbook resume {run_id} --retry`, `--skip` or `--rollback`"
                )));
            }
            (None, None) if matches!(pending, Next::Wait) => {
                runner
                    .record(Event::RunResumed { decision: Decision::Continue, by })
                    .await
                    .map_err(Failure::invalid)?;
            }
            (None, None) => {}
            (Some(Decision::Skip), subject) => {
                let Some(i) = subject else {
                    return Err(Failure::invalid("there is no failed or in-doubt step to skip"));
                };
                let step = rb.steps[i].id.clone();
                runner
                    .record(Event::RunResumed { decision: Decision::Skip, by: by.clone() })
                    .await
                    .map_err(Failure::invalid)?;
                runner
                    .record(Event::StepSkipped { step, reason: format!("skipped by {by}") })
                    .await
                    .map_err(Failure::invalid)?;
            }
            (Some(Decision::Rollback), _) => {
                if runner.state.status != RunStatus::RollingBack {
                    runner
                        .record(Event::RollbackStarted { reason: format!("rollback chosen by {by}") })
                        .await
                        .map_err(Failure::invalid)?;
                }
            }
            // Nothing failed or in doubt and no pause: there is nothing to retry, the run
            // simply goes on.
            (Some(Decision::Retry), None) if !matches!(pending, Next::Wait) => {}
            (Some(d), _) => {
                runner
                    .record(Event::RunResumed { decision: d, by })
                    .await
                    .map_err(Failure::invalid)?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(failure) = applied {
        let _ = store.release(&rb.id, run_id).await;
        return Err(failure);
    }
    finish(runner, &lease).await
}

/// Appends the event `make` draws from the run's current state, checked against that
/// state, at the journal's next number. When another process wrote in between, reads
/// again and decides again. Returns the state after the event.
pub(crate) async fn append_checked(
    store: &Store,
    run_id: &str,
    make: impl Fn(&RunState) -> Result<Event, String>,
) -> Result<RunState, WriteError> {
    append_checked_with(store, run_id, |state| make(state).map(|e| vec![e])).await
}

/// Like [`append_checked`], for events that go together in one commit.
pub(crate) async fn append_checked_with(
    store: &Store,
    run_id: &str,
    make: impl Fn(&RunState) -> Result<Vec<Event>, String>,
) -> Result<RunState, WriteError> {
    for _ in 0..50 {
        let (mut state, seq) = load_run(store, run_id).await?;
        // Whoever writes, the run's secrets are masked in what they write.
        let masker = super::action::Masker::new(super::action::secret_values(&state.secrets));
        let events: Vec<Event> = make(&state)
            .map_err(WriteError::Refused)?
            .into_iter()
            .map(|e| masker.event(e))
            .collect();
        let at = now_ms();
        for event in &events {
            state
                .apply(event, at)
                .map_err(|e| WriteError::Refused(format!("run `{run_id}`: {e}")))?;
        }
        match store.append(run_id, seq + 1, &events, at).await {
            Ok(_) => return Ok(state),
            Err(StoreError::Conflict(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(WriteError::Store(e)),
        }
    }
    Err(WriteError::Refused(format!(
        "run `{run_id}` kept changing while this was being recorded; try again"
    )))
}

/// `runbook abort`: ends the run as `aborted`, undoing nothing. A runner still at work
/// sees it at its next journal write and stops, killing the step it is running.
pub async fn abort(run_id: &str, by: Option<&str>, store_flag: Option<&str>) -> Outcome {
    let url = crate::store::chosen_url(store_flag);
    let store = match Store::open_existing(&url).await {
        Ok(Some(s)) => s,
        Ok(None) => return fail(StoreError::UnknownRun(run_id.to_owned())),
        Err(e) => return fail(e),
    };
    if let Err(e) = store.writable() {
        return fail(e);
    }
    let by = by.map(str::to_owned).unwrap_or_else(operator);
    if let Err(e) = abort_in(&store, run_id, &by).await {
        return fail(e);
    }
    outln!("run {run_id} aborted");
    Ok(Exit::Ok)
}

/// Aborts a run in `store` (the CLI's `abort` and the admin API's).
pub async fn abort_in(store: &Store, run_id: &str, by: &str) -> Result<(), WriteError> {
    let state = append_checked_with(store, run_id, |state| {
        if state.status.is_terminal() {
            return Err(format!(
                "run `{run_id}` has already ended ({})",
                state.status.as_str()
            ));
        }
        let aborted = Event::RunAborted {
            by: by.to_owned(),
            reason: format!("aborted by {by}"),
        };
        // Customers are told, in the same commit, as when the run ends by itself.
        let mut events = vec![aborted.clone()];
        if let Some(mut rb) = runbook_of(state) {
            rb.vars = state.vars.clone();
            let mut after = state.clone();
            if after.apply(&aborted, now_ms()).is_ok() {
                let learned = Default::default();
                let publisher = crate::engine::publish::Publisher::new(&rb, &learned);
                let base = json!({ "vars": state.vars, "run": { "id": run_id, "runbook": rb.id } });
                for u in publisher.updates(state, &[aborted], &after, &base, now_ms()) {
                    events.push(Event::Published(u));
                }
            }
        }
        Ok(events)
    })
    .await?;
    // A live runner gives the lease back itself when it stops; a dead one cannot.
    if let Ok(Some(holder)) = store.lease(&state.runbook).await
        && holder.run_id == run_id
        && !holder_alive(&holder)
    {
        let _ = store.release(&state.runbook, run_id).await;
    }
    Ok(())
}

/// `runbook approve` / `runbook reject`.
pub async fn decide_approval(
    run_id: &str,
    step: &str,
    by: Option<&str>,
    approve: bool,
    store_flag: Option<&str>,
) -> Outcome {
    let url = crate::store::chosen_url(store_flag);
    let store = match Store::open_existing(&url).await {
        Ok(Some(s)) => s,
        Ok(None) => return fail(StoreError::UnknownRun(run_id.to_owned())),
        Err(e) => return fail(e),
    };
    if let Err(e) = store.writable() {
        return fail(e);
    }
    let by = by.map(str::to_owned).unwrap_or_else(operator);
    if let Err(e) = decide_in(&store, run_id, step, &by, approve).await {
        return fail(e);
    }
    outln!(
        "step {step} of run {run_id} {} by {by}",
        if approve { "approved" } else { "rejected" }
    );
    Ok(Exit::Ok)
}

/// Approves or rejects a waiting step (the CLI's `approve`/`reject` and the admin API's).
pub async fn decide_in(
    store: &Store,
    run_id: &str,
    step: &str,
    by: &str,
    approve: bool,
) -> Result<(), WriteError> {
    let decided = append_checked(store, run_id, |state| {
        if state.status.is_terminal() {
            return Err(format!(
                "run `{run_id}` has already ended ({}); there is nothing to approve",
                state.status.as_str()
            ));
        }
        if let Some(rb) = runbook_of(state)
            && !rb.steps.iter().any(|s| s.id == step)
        {
            let ids: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();
            let hint = crate::suggest::did_you_mean(step, &ids)
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            return Err(format!(
                "run `{run_id}` of `{}` has no step `{step}`{hint}",
                rb.id
            ));
        }
        let Some(s) = state.steps.get(step) else {
            return Err(format!(
                "step `{step}` of run `{run_id}` is not waiting for approval (it has not started)"
            ));
        };
        if !s.awaiting_approval || state.status.is_terminal() {
            return Err(format!(
                "step `{step}` of run `{run_id}` is not waiting for approval (it is {})",
                s.status.as_str()
            ));
        }
        let (step, by) = (step.to_owned(), by.to_owned());
        Ok(if approve {
            Event::Approved { step, by }
        } else {
            Event::Rejected { step, by }
        })
    })
    .await;
    decided.map(|_| ())
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn duration_ms(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    Some(b.unwrap_or_else(now_ms) - a?)
}

fn tail(path: &Path, n: usize) -> Vec<String> {
    // The end of the log only: a log may be large, or not a file at all.
    crate::input::read_tail(path, 64 * 1024)
        .map(|b| {
            let t = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(n)..]
                .iter()
                .map(|l| l.to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `runbook status`.
pub async fn status(run: Option<&str>, json_out: bool, store_flag: Option<&str>) -> Outcome {
    let url = crate::store::chosen_url(store_flag);
    let store = match Store::open_existing(&url).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return fail(match run {
                Some(r) => StoreError::UnknownRun(r.to_owned()).to_string(),
                None => "no runs in this store yet".to_owned(),
            });
        }
        Err(e) => return fail(e),
    };
    let run_id = match run {
        Some(r) => r.to_owned(),
        None => match store.runs().await {
            Ok(runs) if !runs.is_empty() => runs[0].run_id.clone(),
            Ok(_) => return fail("no runs in this store yet"),
            Err(e) => return fail(e),
        },
    };
    let (state, _) = match load_run(&store, &run_id).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let logs = state_dir(&url).join("logs").join(&run_id);
    // Every step of the runbook in execution order, pending ones too; the journal alone
    // knows only the steps that started.
    let rb = runbook_of(&state);
    let mut ids: Vec<String> = rb
        .as_ref()
        .map(|rb| rb.order.iter().map(|&i| rb.steps[i].id.clone()).collect())
        .unwrap_or_default();
    // The projected end: what the steps not finished still need (learned durations
    // first, fan-out progress extrapolated).
    let eta = match &rb {
        Some(rb) => {
            let learned = learned(&store, &rb.id, &run_id).await;
            super::timing::eta_ms(rb, &state, &learned, now_ms())
        }
        None => None,
    };
    for id in state.steps.keys() {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let steps: IndexMap<String, Value> = ids
        .iter()
        .map(|id| (id, state.step(id)))
        .map(|(id, s)| {
            (
                id.clone(),
                json!({
                    "status": s.status.as_str(),
                    "attempts": s.attempts,
                    "started_ms": s.started_ms,
                    "ended_ms": s.ended_ms,
                    "duration_ms": duration_ms(s.started_ms, s.ended_ms),
                    "error": s.error,
                    "outputs": s.outputs,
                    "items": { "done": s.items.values().filter(|i| **i != super::state::ItemStatus::Running).count(), "failed": s.items.values().filter(|i| **i == super::state::ItemStatus::Failed).count() },
                    "output": tail(&logs.join(format!("{id}.log")), 5),
                    "cancelled": s.cancelled,
                }),
            )
        })
        .collect();
    if json_out {
        let doc = json!({
            "run": run_id,
            "runbook": state.runbook,
            "title": state.title,
            "status": state.status.as_str(),
            "closed": state.closed,
            "reason": state.reason,
            "started_ms": state.started_ms,
            "ended_ms": state.ended_ms,
            "eta_ms": eta,
            "steps": steps,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serializes")
        );
        return Ok(Exit::Ok);
    }
    outln!(
        "run {run_id} of `{}`: {}",
        state.runbook,
        state.status.as_str()
    );
    outln!("started {}", fmt_ms(state.started_ms));
    if state.ended_ms.is_some() {
        outln!("ended   {}", fmt_ms(state.ended_ms));
    }
    if let Some(eta) = eta {
        outln!("ETA     {}", fmt_ms(Some(eta)));
    }
    if state.closed {
        outln!("the service is CLOSED (maintenance mode on)");
    }
    if let Some(r) = &state.reason {
        outln!("reason: {r}");
    }
    outln!();
    for (id, s) in ids.iter().map(|id| (id, state.step(id))) {
        let d = duration_ms(s.started_ms, s.ended_ms)
            .map(|ms| crate::duration::fmt_duration(Duration::from_millis(ms.max(0) as u64)))
            .unwrap_or_default();
        let items = if s.items.is_empty() {
            String::new()
        } else {
            let done = s
                .items
                .values()
                .filter(|i| **i != super::state::ItemStatus::Running)
                .count();
            let failed = s
                .items
                .values()
                .filter(|i| **i == super::state::ItemStatus::Failed)
                .count();
            format!("  {done} items done, {failed} failed")
        };
        outln!(
            "  {id:<20} {:<14} attempt {}  {d}{items}",
            s.status.as_str(),
            s.attempts
        );
        if let Some(e) = &s.error {
            outln!("      {e}");
        }
        if let Some(Value::String(e)) = s.outputs.get(super::action::LOG_ERROR) {
            outln!("      WARNING: {e}");
        }
        for (ix, outputs) in &s.item_outputs {
            if let Some(Value::String(e)) = outputs.get(super::action::LOG_ERROR) {
                outln!("      WARNING: item {ix}: {e}");
            }
        }
        for line in tail(&logs.join(format!("{id}.log")), 3) {
            outln!("      | {line}");
        }
    }
    Ok(Exit::Ok)
}

/// `runbook runs`.
pub async fn runs(json_out: bool, store_flag: Option<&str>) -> Outcome {
    let url = crate::store::chosen_url(store_flag);
    let store = match Store::open_existing(&url).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            if json_out {
                outln!("[]");
            } else {
                outln!("no runs yet");
            }
            return Ok(Exit::Ok);
        }
        Err(e) => return fail(e),
    };
    let rows = match store.runs().await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut list = Vec::new();
    for r in rows {
        let state = load_run(&store, &r.run_id).await.map(|(s, _)| s).ok();
        list.push((r, state));
    }
    if json_out {
        let doc: Vec<Value> = list
            .iter()
            .map(|(r, s)| {
                json!({
                    "run": r.run_id,
                    "runbook": r.runbook,
                    "status": s.as_ref().map(|s| s.status.as_str()),
                    "started_ms": r.started_ms,
                    "ended_ms": s.as_ref().and_then(|s| s.ended_ms),
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serializes")
        );
        return Ok(Exit::Ok);
    }
    if list.is_empty() {
        outln!("no runs yet");
    }
    for (r, s) in list {
        let status = s
            .as_ref()
            .map(|s| s.status.as_str())
            .unwrap_or("unreadable");
        outln!(
            "{:<40} {:<20} {:<18} {}",
            r.run_id,
            r.runbook,
            status,
            fmt_ms(Some(r.started_ms))
        );
    }
    Ok(Exit::Ok)
}
