//! Effects: shell commands, SQL and the checks built on them. Everything that touches
//! the world outside the journal lives here.

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

mod http;

pub use http::http;

/// How an action ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(IndexMap<String, Value>),
    Failed(String),
    TimedOut,
}

pub use super::mask::Masker;

/// The values of the secrets `names` from the environment (empty when unset).
pub fn secret_values(names: &[String]) -> IndexMap<String, String> {
    names
        .iter()
        .map(|name| (name.clone(), std::env::var(name).unwrap_or_default()))
        .collect()
}

/// Where a step's output goes: its log file (created at the first line, so a step that
/// prints nothing costs no file), masked, and the last lines for `status`.
pub struct StepLog {
    path: Option<std::path::PathBuf>,
    /// The file's path, kept for messages after `path` is taken to open it.
    shown_path: std::path::PathBuf,
    /// `STEP.log.pgid`: the process group of the command running now, so that a runner
    /// that resumes after a crash can see whether the old one is still at work.
    pgid_path: Option<std::path::PathBuf>,
    file: Option<std::fs::File>,
    pub(crate) masker: Masker,
    /// A command's last line on each stream, held until the next one (or the end) so
    /// that a secret split across the two is masked in both: (stream, line).
    held: Vec<(String, String)>,
    pub tail: Vec<String>,
    /// The first error opening or writing the file (a full disk, say): the log is
    /// incomplete from there on, and [`StepLog::noted`] says so in the step's outcome.
    failed: Option<String>,
}

/// The output a step gets when its log could not be written whole.
pub const LOG_ERROR: &str = "log_error";

/// Where the process group of a log's running command is written.
pub fn pgid_path(log: &Path) -> std::path::PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".pgid");
    p.into()
}

/// Lines of output kept for `runbook status`.
pub const TAIL_LINES: usize = 20;

impl StepLog {
    /// Appends to `path` (created with its directory at the first line).
    pub fn open(path: &Path, masker: Masker) -> StepLog {
        StepLog {
            path: Some(path.to_path_buf()),
            shown_path: path.to_path_buf(),
            pgid_path: Some(pgid_path(path)),
            file: None,
            masker,
            held: Vec::new(),
            tail: Vec::new(),
            failed: None,
        }
    }

    /// A log that only keeps the tail (for checks that need no file).
    pub fn memory(masker: Masker) -> StepLog {
        StepLog {
            path: None,
            shown_path: std::path::PathBuf::new(),
            pgid_path: None,
            file: None,
            masker,
            held: Vec::new(),
            tail: Vec::new(),
            failed: None,
        }
    }

    fn file(&mut self) -> Option<&mut std::fs::File> {
        if self.file.is_none()
            && let Some(path) = self.path.take()
        {
            let opened = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                });
            // A log that cannot be written must not stop the step; the tail stays, and
            // the outcome says the log is missing.
            match opened {
                Ok(f) => self.file = Some(f),
                Err(e) => self.fail(&path, &e),
            }
        }
        self.file.as_mut()
    }

    fn fail(&mut self, path: &Path, e: &std::io::Error) {
        if self.failed.is_none() {
            self.failed = Some(format!(
                "the step's log `{}` is incomplete: cannot write it: {e}",
                path.display()
            ));
        }
    }

    /// Records one line. With secrets to mask, a command's output (`stdout`, `stderr`)
    /// is written one line late, masked together with the line after it.
    pub fn line(&mut self, stream: &str, line: &str) {
        if !matches!(stream, "stdout" | "stderr") || self.masker.is_empty() {
            self.flush();
            let line = self.masker.mask(line);
            return self.write(stream, line);
        }
        let Some(i) = self.held.iter().position(|(s, _)| s == stream) else {
            self.held.push((stream.to_owned(), line.to_owned()));
            return;
        };
        let (_, before) = self.held.remove(i);
        let both = self.masker.mask(&format!("{before}\n{line}"));
        let (before, line) = both.split_once('\n').unwrap_or((&both, ""));
        self.held.push((stream.to_owned(), line.to_owned()));
        self.write(stream, before.to_owned());
    }

    /// Writes the lines held back.
    pub fn flush(&mut self) {
        for (stream, line) in std::mem::take(&mut self.held) {
            let line = self.masker.mask(&line);
            self.write(&stream, line);
        }
    }

    fn write(&mut self, stream: &str, line: String) {
        if let Some(f) = self.file() {
            // One write per line, so that a failure is seen at the line it cut.
            if let Err(e) = f.write_all(format!("{stream}: {line}\n").as_bytes()) {
                self.file = None;
                let path = self.shown_path.clone();
                self.fail(&path, &e);
            }
        }
        self.tail.push(line);
        if self.tail.len() > TAIL_LINES {
            self.tail.remove(0);
        }
    }

    /// `outcome`, saying so when the log could not be written whole: a success gets the
    /// output [`LOG_ERROR`], a failure the note after its error. (A timeout stays as it is.)
    pub fn noted(&self, outcome: Outcome) -> Outcome {
        let Some(why) = &self.failed else {
            return outcome;
        };
        match outcome {
            Outcome::Succeeded(mut outputs) => {
                outputs.insert(LOG_ERROR.to_owned(), Value::String(why.clone()));
                Outcome::Succeeded(outputs)
            }
            Outcome::Failed(e) => Outcome::Failed(format!("{e} (and {why})")),
            Outcome::TimedOut => Outcome::TimedOut,
        }
    }
}

impl Drop for StepLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Runs `sh -c command` in its own process group; on timeout the whole group is killed.
/// Standard output and error go to the log; a JSON object printed on standard output
/// (the whole output, or its last line) becomes the step's outputs.
pub async fn shell(
    command: &str,
    env: &IndexMap<String, String>,
    cwd: Option<&Path>,
    timeout: Option<Duration>,
    log: &mut StepLog,
) -> Outcome {
    // Found on PATH once, not by every spawn (unless the step sets its own PATH).
    let sh = match env.contains_key("PATH") {
        true => Path::new("sh"),
        false => shell_path(),
    };
    let mut cmd = tokio::process::Command::new(sh);
    cmd.arg("-c").arg(command).envs(env);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let shown = log.masker.mask(command);
    match run_logged(cmd, timeout, log, Spawn::default()).await {
        Ok(ran) if ran.status.success() => Outcome::Succeeded(json_outputs(&ran.stdout)),
        Ok(ran) => Outcome::Failed(format!("`{shown}` {}", ended(ran.status))),
        Err(Stopped::TimedOut) => Outcome::TimedOut,
        Err(Stopped::NotStarted(e)) => Outcome::Failed(format!("cannot start `sh`: {e}")),
    }
}

/// `sh` as the runner's PATH finds it (as `execvp` would), looked up once; plain `sh`
/// when no directory on PATH has it (the spawn then says it is not found).
fn shell_path() -> &'static Path {
    static SH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    SH.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            // A relative directory depends on the step's working directory: leave the
            // search to the spawn.
            if !dir.is_absolute() {
                break;
            }
            let sh = dir.join("sh");
            if std::fs::metadata(&sh)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            {
                return sh;
            }
        }
        "sh".into()
    })
}

/// Runs a program (`pg_dump`, `pg_restore` ...) with its arguments in its own process
/// group, output to the log. Returns its standard output, or why it failed: not
/// installed, or its exit status with the last lines it wrote to standard error.
pub async fn program(
    name: &str,
    args: &[String],
    env: &IndexMap<String, String>,
    log: &mut StepLog,
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(name);
    cmd.args(args).envs(env);
    log.line("run", &format!("{name} {}", args.join(" ")));
    match run_logged(cmd, None, log, Spawn::default()).await {
        Ok(ran) if ran.status.success() => Ok(ran.stdout),
        Ok(ran) => {
            let why = ran.stderr.trim();
            Err(format!(
                "`{name}` {}{}{}",
                ended(ran.status),
                if why.is_empty() { "" } else { ": " },
                log.masker.mask(why)
            ))
        }
        Err(Stopped::NotStarted(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "`{name}` is not installed (not found on PATH); install the PostgreSQL client tools"
        )),
        Err(Stopped::NotStarted(e)) => Err(format!("cannot start `{name}`: {e}")),
        Err(Stopped::TimedOut) => Err(format!("`{name}` timed out")),
    }
}

pub(crate) fn ended(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    }
}

/// A process that ran to its end.
pub(crate) struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    /// The last lines of standard error.
    pub stderr: String,
}

/// A process that did not run to its end.
pub(crate) enum Stopped {
    NotStarted(std::io::Error),
    TimedOut,
}

/// What a command gets besides its arguments: its standard input (else nothing), and
/// for `ssh`, the process group of the command on the host.
#[derive(Default)]
pub(crate) struct Spawn {
    pub stdin: Option<std::fs::File>,
    pub remote: Option<RemoteGroup>,
}

/// Runs `cmd` in its own process group, streaming its output to the log. Dropping the
/// future (a step's timeout, an abort) kills the whole group, and the command's group on
/// the host for `ssh` (which names it on its first line of standard error).
pub(crate) async fn run_logged(
    mut cmd: tokio::process::Command,
    timeout: Option<Duration>,
    log: &mut StepLog,
    spawn: Spawn,
) -> Result<Ran, Stopped> {
    let Spawn { stdin, mut remote } = spawn;
    cmd.stdin(stdin.map_or_else(Stdio::null, Stdio::from))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Before the command starts, its file names it by a token in its environment: a
    // runner killed between the spawn and recording the group leaves a command that a
    // resume still finds (by the token), never one it cannot see.
    let spawning = log.pgid_path.as_ref().and_then(|file| {
        let token = spawn_token();
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(file, format!("{SPAWNING}{token}")));
        written.ok().map(|()| (file.clone(), token))
    });
    if let Some((_, token)) = &spawning {
        cmd.env(SPAWN_ENV, token);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            if let Some((file, _)) = spawning {
                let _ = std::fs::remove_file(file);
            }
            return Err(Stopped::NotStarted(e));
        }
    };
    let pgid = child.id().map(|id| id as i32);
    killed_after_spawn_for_tests();
    // Whoever stops waiting for the command drops this future; the guard then kills the
    // whole group, not just its leader.
    let mut group = GroupGuard {
        pgid,
        file: log.pgid_path.clone(),
    };
    group.record();
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut stdout = String::new();
    let mut stderr: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let (mut out_open, mut err_open) = (true, true);
    let status = loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = out.next_line(), if out_open => match line {
                Ok(Some(l)) => {
                    log.line("stdout", &l);
                    stdout.push_str(&l);
                    stdout.push('\n');
                }
                _ => out_open = false,
            },
            line = err.next_line(), if err_open => match line {
                Ok(Some(l)) if remote.as_mut().is_some_and(|r| r.names_group(&l)) => {}
                Ok(Some(l)) => {
                    log.line("stderr", &l);
                    stderr.push_back(l);
                    if stderr.len() > 5 {
                        stderr.pop_front();
                    }
                }
                _ => err_open = false,
            },
            status = child.wait(), if !out_open && !err_open => break status,
            _ = sleep => {
                log.flush();
                group.kill();
                let _ = child.wait().await;
                if let Some(r) = remote.take() {
                    r.kill().await;
                }
                return Err(Stopped::TimedOut);
            }
        }
    };
    log.flush();
    // It ended by itself: what it left running in the background may go on.
    group.disarm();
    if let Some(r) = remote.as_mut() {
        r.disarm();
    }
    let status = status.map_err(Stopped::NotStarted)?;
    Ok(Ran {
        status,
        stdout,
        stderr: Vec::from(stderr).join("\n"),
    })
}

/// How a command on the host names its process group (first line of standard error).
pub(crate) const GROUP_MARK: &str = "@runbook-remote-pgid ";

/// Kills of commands on hosts still under way (the run waits for them before it ends).
fn pending_kills() -> &'static std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> {
    static P: std::sync::OnceLock<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>> =
        std::sync::OnceLock::new();
    P.get_or_init(Default::default)
}

/// The process group of a command on a host, killed there when the command is stopped
/// (a timeout, an abort) before it ends by itself.
pub(crate) struct RemoteGroup {
    args: Vec<std::ffi::OsString>,
    pgid: Option<i32>,
    armed: bool,
}

impl RemoteGroup {
    /// The group of a command started with ssh's `args` (up to the destination), named
    /// later by the command's first line of standard error.
    pub fn new(args: Vec<std::ffi::OsString>) -> Self {
        RemoteGroup {
            args,
            pgid: None,
            armed: true,
        }
    }

    /// Whether `line` (of standard error) is the command naming its group; then it is
    /// kept, not logged.
    pub fn names_group(&mut self, line: &str) -> bool {
        if self.pgid.is_some() {
            return false;
        }
        match line
            .strip_prefix(GROUP_MARK)
            .and_then(|p| p.trim().parse().ok())
        {
            Some(p) => {
                self.pgid = Some(p);
                true
            }
            None => false,
        }
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }

    fn kill_command(&self) -> Option<std::process::Command> {
        let pgid = self.pgid.filter(|p| *p > 1)?;
        let mut cmd = std::process::Command::new("ssh");
        cmd.args(&self.args)
            .arg(format!("kill -9 -- -{pgid} 2>/dev/null; true"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Some(cmd)
    }

    /// Kills the group on the host and waits for it to be done.
    pub async fn kill(mut self) {
        self.armed = false;
        if let Some(cmd) = self.kill_command() {
            let mut cmd = tokio::process::Command::from(cmd);
            let _ = tokio::time::timeout(Duration::from_secs(15), cmd.status()).await;
        }
    }
}

impl Drop for RemoteGroup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Dropped with the command's future: the kill goes on in a thread that the run
        // waits for before it ends ([`close_all`]).
        if let Some(mut cmd) = self.kill_command() {
            let handle = std::thread::spawn(move || {
                if let Ok(mut child) = cmd.spawn() {
                    let deadline = std::time::Instant::now() + Duration::from_secs(15);
                    while std::time::Instant::now() < deadline {
                        if let Ok(Some(_)) = child.try_wait() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                }
            });
            pending_kills().lock().expect("not poisoned").push(handle);
        }
    }
}

/// Waits for the kills of commands on hosts that are still under way (a run does before
/// it ends).
pub(crate) async fn remote_kills_done() {
    let kills: Vec<_> = std::mem::take(&mut *pending_kills().lock().expect("not poisoned"));
    for k in kills {
        let _ = tokio::task::spawn_blocking(move || k.join()).await;
    }
}

/// Kills a command's process group when dropped while armed, and keeps the group's id
/// in a file while it runs.
struct GroupGuard {
    pgid: Option<i32>,
    file: Option<std::path::PathBuf>,
}

impl GroupGuard {
    /// Its directory was made when the file first named the command by its token. The
    /// group's id is written over the token, padded with spaces to the same length, not
    /// into a truncated file: on ext4 closing a file rewritten after truncation forces
    /// its data to disk (a block-device write on every command).
    fn record(&self) {
        if let (Some(pgid), Some(file)) = (self.pgid, &self.file) {
            let written = std::fs::OpenOptions::new()
                .write(true)
                .open(file)
                .and_then(|mut f| {
                    let len = f.metadata()?.len() as usize;
                    f.write_all(format!("{pgid:<len$}").as_bytes())
                });
            if written.is_err() {
                let _ = std::fs::write(file, pgid.to_string());
            }
        }
    }

    /// The command ended by itself: what it left in the background may go on.
    fn disarm(&mut self) {
        self.pgid = None;
        if let Some(file) = self.file.take() {
            let _ = std::fs::remove_file(file);
        }
    }

    fn kill(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: signalling a process group we created.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
        self.disarm();
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Fault injection for the tests: with `RUNBOOK_TEST_KILL_AFTER_SPAWN` set the runner
/// SIGKILLs itself right after starting a command, before recording its process group.
fn killed_after_spawn_for_tests() {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("RUNBOOK_TEST_KILL_AFTER_SPAWN").is_some()) {
        // SAFETY: signalling this process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// The environment variable that names a command to the runner that spawned it (see
/// [`orphans`]).
const SPAWN_ENV: &str = "RUNBOOK_SPAWN_ID";
/// How a `.pgid` file says its command is being started: the token follows.
const SPAWNING: &str = "spawning ";

/// A token no other command of this machine has.
fn spawn_token() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The process group of a live process whose environment holds `SPAWN_ENV=token`.
fn group_of_token(token: &str) -> Option<i32> {
    let wanted = format!("{SPAWN_ENV}={token}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let environ = std::fs::read(p.path().join("environ")).ok()?;
        if !environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()) {
            return None;
        }
        live_group(&p.path())
    })
}

/// The process group of the process at `/proc/PID` while it is alive (not a zombie:
/// where PID 1 does not reap, some containers, a finished command stays one).
fn live_group(proc_dir: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; the command name may hold spaces and parens.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?;
    let pgrp = rest.nth(1)?.parse::<i32>().ok()?;
    (!matches!(state, "Z" | "X")).then_some(pgrp)
}

/// Whether any process of the group is still running (a zombie does not count).
fn group_alive(pgid: i32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        // SAFETY: signal 0 only asks whether the group exists.
        return unsafe { libc::killpg(pgid, 0) } == 0;
    };
    procs.flatten().any(|p| live_group(&p.path()) == Some(pgid))
}

/// Process groups that a runner which died left running, from their `.pgid` files in
/// `dir`: (log file name, process group). Files of groups that are gone are removed.
pub fn orphans(dir: &Path) -> Vec<(String, i32)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(log) = name.strip_suffix(".pgid") else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // A command whose group was not recorded yet is found by its token.
        let pgid = match text.trim().strip_prefix(SPAWNING) {
            Some(token) => group_of_token(token),
            None => text.trim().parse::<i32>().ok(),
        };
        match pgid {
            Some(g) if g > 1 && group_alive(g) => {
                found.push((log.to_owned(), g));
            }
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    found.sort();
    found
}

/// Outputs printed as a JSON object: the whole of stdout, or its last non-empty line.
pub(crate) fn json_outputs(stdout: &str) -> IndexMap<String, Value> {
    let parse = |s: &str| match serde_json::from_str::<Value>(s.trim()) {
        Ok(Value::Object(m)) => Some(m.into_iter().collect()),
        _ => None,
    };
    parse(stdout)
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(parse)
        })
        .unwrap_or_default()
}

/// Runs SQL statements (in one transaction unless `transaction` is false). The columns of
/// the first row returned become outputs.
pub async fn sql(
    database: &str,
    statements: &str,
    transaction: bool,
    timeout: Option<Duration>,
) -> Outcome {
    let work = async {
        let mut conn = super::target::connect(database).await?;
        let rows = conn.rows(statements, transaction).await;
        conn.close().await;
        Ok::<_, String>(rows?.into_iter().next().unwrap_or_default())
    };
    match timeout {
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(Ok(o)) => Outcome::Succeeded(o),
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::TimedOut,
        },
        None => match work.await {
            Ok(o) => Outcome::Succeeded(o),
            Err(e) => Outcome::Failed(e),
        },
    }
}

#[cfg(test)]
mod group_file_tests {
    use super::*;

    #[test]
    fn the_group_written_over_the_token_is_what_a_resume_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("step.log.pgid");
        std::fs::write(&file, format!("{SPAWNING}{}", spawn_token())).unwrap();
        // This process's own group: alive, so `orphans` keeps it.
        // SAFETY: getpgrp has no preconditions.
        let own = unsafe { libc::getpgrp() };
        let mut guard = GroupGuard {
            pgid: Some(own),
            file: Some(file.clone()),
        };
        guard.record();
        // Never armed past this point: dropping it must not signal this process.
        guard.pgid = None;
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with(&own.to_string()), "{text:?}");
        assert_eq!(text.trim(), own.to_string());
        assert_eq!(orphans(dir.path()), vec![("step.log".to_owned(), own)]);
        guard.disarm();
        assert!(!file.exists());
    }
}
