//! Hosts over SSH, with the system OpenSSH client: `~/.ssh/config`, ProxyJump and agents
//! work as they do for `ssh`. One multiplexed connection per host per run
//! (ControlMaster in a private directory of the run), `BatchMode=yes` (never a prompt),
//! the host key checked as `ssh.known_hosts` says (a changed key is always refused).
//!
//! A command runs on the host in a process group of its own, which it names on its
//! first line of standard error: a timeout or an abort kills that group on the host,
//! not only the local `ssh`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::action::{self, Outcome, Spawn, StepLog, Stopped};
use crate::runbook::{Host, KnownHosts, Runbook};

/// How long an idle connection to a host stays up (a runner that died leaves it no
/// longer than this).
const PERSIST_SECS: u32 = 600;

/// One host of a run, as ssh reaches it.
pub struct Remote<'a> {
    pub host: &'a Host,
    rb: &'a Runbook,
    /// The run's private directory of connection sockets.
    control: PathBuf,
}

/// The run's directory of connection sockets: private (0700), short enough for a socket
/// path, one per run (named from the run's log directory).
pub fn control_dir(log_dir: &Path) -> PathBuf {
    let digest = Sha256::digest(log_dir.as_os_str().as_encoded_bytes());
    let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("runbook-ssh-{uid}-{short}"))
}

fn make_private(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let made = std::fs::DirBuilder::new().mode(0o700).create(dir);
    if let Err(e) = made
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(format!("cannot make `{}`: {e}", dir.display()));
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(format!(
            "`{}` is not a directory of this user: another user may have made it; remove it",
            dir.display()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("`{}`: {e}", dir.display()))?;
    }
    Ok(())
}

/// `~/` at the start of a path is the home directory.
fn home(path: &str) -> OsString {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(h)) => Path::new(&h).join(rest).into_os_string(),
        _ => path.into(),
    }
}

/// The environment's exports in a private temporary file (removed at once; the open
/// file is what the command reads).
fn env_file(exports: &str) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    let mut f = tempfile::tempfile()?;
    f.write_all(exports.as_bytes())?;
    f.seek(std::io::SeekFrom::Start(0))?;
    Ok(f)
}

/// A path on the host as one word for `sh`: `~/` at its start is the home directory.
fn remote_path(p: &str) -> String {
    match p.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
        None if p == "~" => "\"$HOME\"".to_owned(),
        None => quote(p),
    }
}

/// Text as one word for `sh`, in single quotes.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Per host (socket directory, host name): whether this process has its connection up.
type Connections = Mutex<IndexMap<(PathBuf, String), Arc<tokio::sync::Mutex<bool>>>>;

/// Hosts whose connection this process started.
fn connected() -> &'static Connections {
    static C: OnceLock<Connections> = OnceLock::new();
    C.get_or_init(Default::default)
}

impl<'a> Remote<'a> {
    pub fn new(rb: &'a Runbook, host: &'a Host, log_dir: &Path) -> Self {
        Remote {
            host,
            rb,
            control: control_dir(log_dir),
        }
    }

    /// The user ssh logs in as, when the runbook says (else ssh's own choice).
    pub fn user(&self) -> Option<&str> {
        self.host.user.as_deref().or(self.rb.ssh.user.as_deref())
    }

    pub fn port(&self) -> Option<u16> {
        self.host.port.or(self.rb.ssh.port)
    }

    /// ssh's arguments up to and including the destination. ssh takes the first value
    /// of an option it is given: the runner's own come first, then the host's, then the
    /// runbook's, then the runner's defaults.
    fn args(&self) -> Vec<OsString> {
        let ssh = &self.rb.ssh;
        let mut a: Vec<OsString> = Vec::with_capacity(32);
        let o = |a: &mut Vec<OsString>, k: &str, v: &str| {
            a.push("-o".into());
            a.push(format!("{k}={v}").into());
        };
        o(&mut a, "BatchMode", "yes");
        o(
            &mut a,
            "StrictHostKeyChecking",
            match ssh.known_hosts {
                KnownHosts::Strict => "yes",
                KnownHosts::AcceptNew => "accept-new",
            },
        );
        o(&mut a, "ControlMaster", "auto");
        // One socket per host of the runbook (two names for one address are two
        // connections, each with its own user and key).
        let digest = Sha256::digest(self.host.name.as_bytes());
        let socket: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        o(
            &mut a,
            "ControlPath",
            &self.control.join(socket).to_string_lossy(),
        );
        o(&mut a, "ControlPersist", &PERSIST_SECS.to_string());
        for (k, v) in self.host.options.iter().chain(&ssh.options) {
            o(&mut a, k, v);
        }
        o(&mut a, "ConnectTimeout", "10");
        o(&mut a, "ServerAliveInterval", "15");
        o(&mut a, "ServerAliveCountMax", "3");
        if let Some(p) = self.port() {
            a.push("-p".into());
            a.push(p.to_string().into());
        }
        if let Some(u) = self.user() {
            a.push("-l".into());
            a.push(u.into());
        }
        if let Some(i) = self
            .host
            .identity_file
            .as_deref()
            .or(ssh.identity_file.as_deref())
        {
            a.push("-i".into());
            a.push(home(i));
        }
        a.push(self.host.address.as_str().into());
        a
    }

    fn command(&self, remote: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(self.args()).arg(remote);
        cmd
    }

    /// Connects to the host once per run (`ssh HOST true`), leaving the connection up for
    /// the run's later commands; the ssh error in one line when it cannot.
    pub async fn connect(&self) -> Result<(), String> {
        make_private(&self.control)?;
        let key = (self.control.clone(), self.host.name.clone());
        let slot = connected()
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_default()
            .clone();
        let mut up = slot.lock().await;
        if *up {
            return Ok(());
        }
        let mut cmd = self.command("true");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(|e| format!("cannot start `ssh`: {e} (install the OpenSSH client)"))?;
        if out.status.success() {
            *up = true;
            return Ok(());
        }
        Err(self.ssh_error(&String::from_utf8_lossy(&out.stderr), out.status))
    }

    /// ssh's complaint in one line, named by host.
    fn ssh_error(&self, stderr: &str, status: std::process::ExitStatus) -> String {
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("@@@")
                    && !l.starts_with("Warning: Permanently added")
                    && !l.starts_with(action::GROUP_MARK.trim())
            })
            .collect();
        let changed = stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED");
        let why = if changed {
            "its host key has changed (REMOTE HOST IDENTIFICATION HAS CHANGED): host key verification failed; if the change is expected, fix known_hosts by hand".to_owned()
        } else {
            lines
                .last()
                .map(|l| (*l).to_owned())
                .unwrap_or_else(|| action::ended(status))
        };
        format!("ssh to `{}`: {why}", self.host.name)
    }

    /// Runs `command` on the host (with `env` exported and in `cwd`), output to the log;
    /// a JSON object printed on standard output becomes the outputs, as for a local
    /// `shell`.
    pub async fn shell(
        &self,
        command: &str,
        env: &IndexMap<String, String>,
        cwd: Option<&str>,
        timeout: Option<Duration>,
        log: &mut StepLog,
        with: With<'_>,
    ) -> Outcome {
        let With { mut stdin, key } = with;
        if let Err(e) = self.connect().await {
            return Outcome::Failed(e);
        }
        let mut inner = String::new();
        // The environment goes on standard input, not on a command line (`ps` shows
        // those to every user); a command with its own input (`copy`) gets it inline.
        let exports: String = env
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", quote(v)))
            .collect();
        if !exports.is_empty() {
            match stdin {
                None => match env_file(&exports) {
                    Ok(f) => {
                        stdin = Some(f);
                        inner.push_str("eval \"$(cat)\"; ");
                    }
                    Err(e) => return Outcome::Failed(format!("cannot pass the environment: {e}")),
                },
                Some(_) => inner.push_str(&exports.replace('\n', "; ")),
            }
        }
        if let Some(dir) = cwd {
            inner.push_str(&format!("cd {} && ", remote_path(dir)));
        }
        inner.push_str(command);
        // The host's shell runs `setsid`, whose `sh` names its new process group; with
        // a key, it also leaves there that the command started and how it ended.
        let remote = match key {
            None => format!(
                "exec setsid -w sh -c 'printf \"{mark}%s\\n\" \"$$\" >&2; exec sh -c \"$1\"' runbook {}",
                quote(&inner),
                mark = action::GROUP_MARK
            ),
            Some(key) => format!(
                "exec setsid -w sh -c 'printf \"{mark}%s\\n\" \"$$\" >&2; d=\"$HOME/{OUTCOMES}\"; mkdir -p \"$d\" 2>/dev/null; \
                 : > \"$d/$2.started\" 2>/dev/null; sh -c \"$1\"; rc=$?; echo \"$rc\" > \"$d/$2.exit\" 2>/dev/null; exit $rc' runbook {} {}",
                quote(&inner),
                quote(key),
                mark = action::GROUP_MARK
            ),
        };
        let shown = log.masker.mask(command);
        let group = action::RemoteGroup::new(self.args());
        let spawn = Spawn {
            stdin,
            remote: Some(group),
        };
        match action::run_logged(self.command(&remote), timeout, log, spawn).await {
            Ok(ran) if ran.status.success() => {
                Outcome::Succeeded(action::json_outputs(&ran.stdout))
            }
            Ok(ran) if ran.status.code() == Some(255) => {
                Outcome::Failed(self.ssh_error(&ran.stderr, ran.status))
            }
            Ok(ran) => {
                let why = ran
                    .stderr
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                Outcome::Failed(format!(
                    "`{shown}` on `{}` {}{}{}",
                    self.host.name,
                    action::ended(ran.status),
                    if why.is_empty() { "" } else { ": " },
                    log.masker.mask(&why)
                ))
            }
            Err(Stopped::TimedOut) => Outcome::TimedOut,
            Err(Stopped::NotStarted(e)) => Outcome::Failed(format!(
                "cannot start `ssh`: {e} (install the OpenSSH client)"
            )),
        }
    }

    /// Uploads `src` (a file or a directory) to `dest` on the host: written under a
    /// temporary name, its SHA-256 checked there, then renamed over `dest`. Outputs
    /// `path`, `sha256` (of the file; of a directory, of its `sha256sum` listing) and
    /// `size_bytes`.
    pub async fn copy(
        &self,
        src: &Path,
        dest: &str,
        mode: Option<u32>,
        work_dir: &Path,
        log: &mut StepLog,
        key: Option<&str>,
    ) -> Outcome {
        let local = match Local::of(src, work_dir).await {
            Ok(l) => l,
            Err(e) => return Outcome::Failed(e),
        };
        let d = remote_path(dest);
        let chmod = mode
            .map(|m| format!("chmod {m:o} \"$t\"; "))
            .unwrap_or_default();
        let script = if local.dir {
            format!(
                "set -e; t={d}.runbook-tmp.$$; o={d}.runbook-old.$$; rm -rf -- \"$t\"; mkdir -p -- \"$t\"; trap 'rm -rf -- \"$t\"' EXIT; \
                 tar --no-same-owner -C \"$t\" -xf -; {chmod}\
                 s=$(cd \"$t\" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum | cut -d' ' -f1); \
                 if [ \"$s\" != {h} ]; then echo \"the upload of {src} arrived with SHA-256 $s, not {h}\" >&2; exit 1; fi; \
                 if [ -e {d} ]; then mv -- {d} \"$o\"; fi; mv -- \"$t\" {d}; rm -rf -- \"$o\"; trap - EXIT",
                h = local.sha256,
                src = src.display(),
            )
        } else {
            format!(
                "set -e; if [ -d {d} ]; then echo \"the destination {shown} is a directory: name the file\" >&2; exit 1; fi; \
                 t={d}.runbook-tmp.$$; mkdir -p -- \"$(dirname -- {d})\"; trap 'rm -f -- \"$t\"' EXIT; \
                 cat > \"$t\"; {chmod}\
                 s=$(sha256sum -- \"$t\" | cut -d' ' -f1); \
                 if [ \"$s\" != {h} ]; then echo \"the upload of {src} arrived with SHA-256 $s, not {h}\" >&2; exit 1; fi; \
                 mv -f -- \"$t\" {d}; trap - EXIT",
                h = local.sha256,
                src = src.display(),
                shown = dest.replace(['\'', '"', '$', '`', '\\'], "_"),
            )
        };
        let stdin = match std::fs::File::open(&local.upload) {
            Ok(f) => f,
            Err(e) => {
                return Outcome::Failed(format!("cannot read `{}`: {e}", local.upload.display()));
            }
        };
        log.line(
            "run",
            &format!("copy {} to {}:{dest}", src.display(), self.host.name),
        );
        let outcome = self
            .shell(
                &script,
                &IndexMap::new(),
                None,
                None,
                log,
                With {
                    stdin: Some(stdin),
                    key,
                },
            )
            .await;
        if local.dir {
            let _ = std::fs::remove_file(&local.upload);
        }
        match outcome {
            Outcome::Succeeded(_) => {
                let mut o = IndexMap::new();
                o.insert("path".into(), Value::from(dest));
                o.insert("sha256".into(), Value::from(local.sha256));
                o.insert("size_bytes".into(), Value::from(local.size));
                Outcome::Succeeded(o)
            }
            Outcome::Failed(e) if e.starts_with('`') => Outcome::Failed(format!(
                "copy of `{}` to `{}:{dest}` failed: {}",
                src.display(),
                self.host.name,
                e.rsplit_once(": ").map_or(e.as_str(), |(_, why)| why)
            )),
            other => other,
        }
    }
}

/// What a command on a host gets besides its text: its standard input, and the key under
/// which it leaves its outcome on the host (a host step's own action).
#[derive(Default)]
pub struct With<'k> {
    pub stdin: Option<std::fs::File>,
    pub key: Option<&'k str>,
}

/// Where on a host (under its home) commands leave their outcomes.
const OUTCOMES: &str = ".runbook/outcomes";

/// What a host says of a command a runner started under a key (see [`Remote::shell`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Left {
    /// It ended with this exit status.
    Exited(i32),
    /// It started and has not ended (it may still run, or have died with its host).
    Started,
    /// It never started.
    NotStarted,
}

impl Remote<'_> {
    /// What the host says of the command started under `key`.
    pub async fn left(&self, key: &str) -> Result<Left, String> {
        self.connect().await?;
        let script = format!(
            "d=\"$HOME/{OUTCOMES}\"; if [ -f \"$d/{key}.exit\" ]; then echo \"exit $(cat \"$d/{key}.exit\")\"; elif [ -e \"$d/{key}.started\" ]; then echo started; else echo none; fi"
        );
        let mut cmd = self.command(&script);
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| format!("ssh to `{}`: timed out", self.host.name))?
            .map_err(|e| format!("cannot start `ssh`: {e}"))?;
        if !out.status.success() {
            return Err(self.ssh_error(&String::from_utf8_lossy(&out.stderr), out.status));
        }
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match said.strip_prefix("exit ") {
            Some(rc) => rc
                .trim()
                .parse()
                .map(Left::Exited)
                .map_err(|_| format!("host `{}` left `{said}`", self.host.name)),
            None if said == "started" => Ok(Left::Started),
            None => Ok(Left::NotStarted),
        }
    }
}

/// What is uploaded: the file itself, or a tar archive of the directory.
struct Local {
    dir: bool,
    upload: PathBuf,
    sha256: String,
    size: u64,
}

impl Local {
    async fn of(src: &Path, work_dir: &Path) -> Result<Local, String> {
        let meta = std::fs::metadata(src).map_err(|e| missing(src, &e))?;
        if meta.is_file() {
            let (sha256, size) =
                file_digest(src).map_err(|e| format!("cannot read `{}`: {e}", src.display()))?;
            return Ok(Local {
                dir: false,
                upload: src.to_path_buf(),
                sha256,
                size,
            });
        }
        if !meta.is_dir() {
            return Err(format!(
                "`copy` source `{}` is neither a file nor a directory",
                src.display()
            ));
        }
        let (sha256, size) =
            dir_digest(src).map_err(|e| format!("cannot read `{}`: {e}", src.display()))?;
        std::fs::create_dir_all(work_dir)
            .map_err(|e| format!("cannot make `{}`: {e}", work_dir.display()))?;
        // An archive of this upload's own (hosts upload at the same time).
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let upload = work_dir.join(format!(
            "copy-{}-{}-{n}.tar",
            &sha256[..16],
            std::process::id()
        ));
        {
            let partial = upload.with_extension("tar.partial");
            let out = tokio::process::Command::new("tar")
                .env("COPYFILE_DISABLE", "1")
                .arg("-C")
                .arg(src)
                .arg("-cf")
                .arg(&partial)
                .arg(".")
                .output()
                .await
                .map_err(|e| format!("cannot start `tar`: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "`tar` could not pack `{}`: {}",
                    src.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            std::fs::rename(&partial, &upload)
                .map_err(|e| format!("`{}`: {e}", upload.display()))?;
        }
        Ok(Local {
            dir: true,
            upload,
            sha256,
            size,
        })
    }
}

/// Why a `copy` source cannot be used.
pub fn missing(src: &Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!("`copy` source `{}` does not exist", src.display())
    } else {
        format!("`copy` source `{}`: {e}", src.display())
    }
}

/// A file's SHA-256 (by the backups' own reader) and size.
fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
    let sha = super::builtin::artifact::sha256_file(path)?;
    Ok((sha, std::fs::metadata(path)?.len()))
}

/// The SHA-256 of a directory's `sha256sum` listing (`HASH  ./path` per file, sorted by
/// path as bytes), as the host computes it, and the files' total size.
fn dir_digest(dir: &Path) -> std::io::Result<(String, u64)> {
    let mut files: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            let path = entry.path();
            if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                let mut shown = b"./".to_vec();
                shown.extend_from_slice(rel.as_os_str().as_encoded_bytes());
                files.push((shown, path));
            }
        }
    }
    files.sort();
    let mut listing = Sha256::new();
    let mut total = 0u64;
    for (shown, path) in files {
        let (h, size) = file_digest(&path)?;
        total += size;
        listing.update(h.as_bytes());
        listing.update(b"  ");
        listing.update(&shown);
        listing.update(b"\n");
    }
    Ok((super::builtin::artifact::hex(&listing.finalize()), total))
}

/// Closes the connections of `rb`'s hosts that this process opened for the run whose
/// logs are in `log_dir` (`ssh -O exit`).
pub async fn close_run(rb: &Runbook, log_dir: &Path) {
    action::remote_kills_done().await;
    let control = control_dir(log_dir);
    let names: Vec<String> = {
        let mut c = connected().lock().expect("not poisoned");
        let keys: Vec<(PathBuf, String)> =
            c.keys().filter(|(d, _)| *d == control).cloned().collect();
        for k in &keys {
            c.shift_remove(k);
        }
        keys.into_iter().map(|(_, n)| n).collect()
    };
    let exits = names.iter().filter_map(|n| rb.inventory.host(n)).map(|h| {
        let r = Remote::new(rb, h, log_dir);
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.arg("-O")
            .arg("exit")
            .args(r.args())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), cmd.status()).await;
        }
    });
    futures_util::future::join_all(exits).await;
    let _ = std::fs::remove_dir(&control);
}
