//! Bad input and exhaustion through the real binary: files that are not files or never
//! end, megabyte lines in errors, connections that never finish, `-o` onto a device, a
//! log on a full disk, and control characters on the way to the operator's terminal.

use crate::common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::world::World;
use common::{Output, run_in};

/// A generous bound on commands that must not hang (they take well under a second).
const HANG: Duration = Duration::from_secs(60);

/// Runs `runbook ARGS...` in `dir`, killed (and the test failed) if it has not ended
/// within [`HANG`]: a read that waits for ever shows as a failure, not a stuck suite.
fn run_bounded(dir: &Path, args: &[&str]) -> Output {
    let child = crate::common::runbook()
        .args(args)
        .current_dir(dir)
        .env(
            "RUNBOOK_STORE",
            format!("sqlite://{}/state/state.db", dir.display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    // The pipes are read as the command writes, however much that is.
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(HANG) else {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("`runbook {}` did not end within {HANG:?}", args.join(" "));
    };
    let out = out.unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

// ---------------------------------------------------------------------------------------
// 7. Files that are not regular files
// ---------------------------------------------------------------------------------------

#[test]
fn a_runbook_that_is_a_device_a_pipe_or_a_directory_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("pipe.yaml"));
    std::fs::create_dir(dir.path().join("dir.yaml")).unwrap();
    for (file, what) in [
        ("/dev/null", "a character device"),
        ("pipe.yaml", "a pipe (FIFO)"),
        ("dir.yaml", "a directory"),
    ] {
        for cmd in [
            vec!["validate", file],
            vec!["plan", file],
            vec!["execute", file, "--yes", "--now"],
            vec!["schedule", file],
        ] {
            let o = run_bounded(dir.path(), &cmd);
            assert_eq!(o.code, 1, "{cmd:?}: {}", o.stderr);
            assert!(
                o.stderr.starts_with(&format!(
                    "error: cannot read `{file}`: it is {what}, not a regular file\n"
                )),
                "{cmd:?}: {}",
                o.stderr
            );
        }
    }
    // Nothing was run or written.
    assert!(!dir.path().join("state").exists());
}

#[test]
fn an_admin_token_file_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    mkfifo(&dir.path().join("token"));
    for (file, what) in [
        ("/dev/null", "a character device"),
        ("token", "a pipe (FIFO)"),
    ] {
        let o = run_bounded(
            dir.path(),
            &["serve", "--addr", "127.0.0.1:0", "--admin-token-file", file],
        );
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert_eq!(
            o.stderr,
            format!(
                "error: --admin-token-file: cannot read `{file}`: it is {what}, not a regular file\n"
            )
        );
    }
}

// ---------------------------------------------------------------------------------------
// 8. Errors on long lines
// ---------------------------------------------------------------------------------------

#[test]
fn an_error_on_a_megabyte_line_is_shown_clipped_around_the_carets() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(1_000_000);
    let text = format!(
        "runbook: long\ntitle: {long}\nsteps:\n  - {{ id: a, kind: patch, colour: {long}, run: {{ shell: \"true\" }} }}\n"
    );
    std::fs::write(dir.path().join("long.yaml"), text).unwrap();
    let o = run_bounded(dir.path(), &["validate", "long.yaml"]);
    assert_eq!(o.code, 1);
    let expected_line = format!(
        "4 |   - {{ id: a, kind: patch, colour: {}...\n",
        "x".repeat(120 - 34)
    );
    assert!(o.stderr.contains(&expected_line), "{}", o.stderr);
    assert!(o.stderr.contains("unknown field `colour`"), "{}", o.stderr);
    // Two long lines in the file, a few hundred characters of error.
    assert!(
        o.stderr.len() < 1000,
        "{} bytes:\n{}",
        o.stderr.len(),
        o.stderr
    );
}

#[test]
fn many_errors_on_one_long_line_are_each_shown_clipped() {
    let dir = tempfile::tempdir().unwrap();
    // 20,000 unknown references on one line of 200 kB.
    let text = format!("runbook: many\ntitle: \"{}\"\n", "{{nope}}".repeat(20_000));
    std::fs::write(dir.path().join("many.yaml"), text).unwrap();
    let o = run_bounded(dir.path(), &["validate", "many.yaml"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.ends_with("invalid (20001 problems)\n"),
        "{}",
        &o.stderr[o.stderr.len() - 200..]
    );
    let longest = o.stderr.lines().map(str::len).max().unwrap();
    assert!(longest < 300, "a line of {longest} bytes");
    // The last one: its carets under its own `{{nope}}`, at the end of the line.
    let last = &o.stderr[o.stderr.rfind("error: ").unwrap()..];
    assert!(last.contains(" --> many.yaml:2:160001\n"), "{last}");
    let lines: Vec<&str> = last.lines().collect();
    let (shown, carets) = (lines[3], lines[4]);
    assert!(
        shown.starts_with("2 | ...") && shown.ends_with("{{nope}}\""),
        "{last}"
    );
    assert_eq!(carets.find('^'), shown.rfind("{{nope}}"), "{last}");
}

// ---------------------------------------------------------------------------------------
// 9. Connections that never finish
// ---------------------------------------------------------------------------------------

/// `runbook serve` on a free port of an empty store, with `env`; its address.
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, env: &[(&str, &str)], fd_limit: Option<u64>) -> Server {
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let mut cmd = crate::common::runbook();
    cmd.args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--store")
        .arg(format!("sqlite://{}/state/state.db", dir.display()))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(n) = fd_limit {
        // SAFETY: only setrlimit between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    Server(child, addr)
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    s
}

/// Reads until the server closes the connection; what it sent. A read that waits longer
/// than [`HANG`] fails the test: the server kept the connection open.
fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

#[test]
fn silent_half_sent_and_idle_connections_are_closed_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        &[("RUNBOOK_TEST_HEADER_TIMEOUT_MS", "300")],
        None,
    );
    // Nothing sent at all.
    let mut silent = connect(&server.1);
    // A header that never ends.
    let mut half = connect(&server.1);
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    // A request answered, then nothing more on the kept-alive connection.
    let mut idle = connect(&server.1);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(until_closed(&mut silent), b"");
    until_closed(&mut half);
    let answered = until_closed(&mut idle);
    assert!(answered.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[test]
fn a_connection_nothing_moves_on_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // The header timeout out of the way: only the idle timeout can close it.
    let server = serve(
        dir.path(),
        &[
            ("RUNBOOK_TEST_HEADER_TIMEOUT_MS", "600000"),
            ("RUNBOOK_TEST_IDLE_TIMEOUT_MS", "300"),
        ],
        None,
    );
    let mut quiet = connect(&server.1);
    quiet.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    assert_eq!(until_closed(&mut quiet), b"");
}

#[test]
fn the_page_answers_while_idle_connections_exceed_the_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Timeouts long enough that only the connection cap can make room.
    let server = serve(
        dir.path(),
        &[
            ("RUNBOOK_TEST_HEADER_TIMEOUT_MS", "600000"),
            ("RUNBOOK_TEST_IDLE_TIMEOUT_MS", "600000"),
        ],
        Some(256),
    );
    let idle: Vec<TcpStream> = (0..400).map(|_| connect(&server.1)).collect();
    let mut page = connect(&server.1);
    page.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    page.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = until_closed(&mut page);
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    drop(idle);
}

// ---------------------------------------------------------------------------------------
// 10, 11. Where reports and logs are written
// ---------------------------------------------------------------------------------------

const ONE_STEP: &str = "runbook: one\nsteps:\n  - id: s1\n    kind: patch\n    run: { shell: \"echo hello; echo world\" }\n";

#[test]
fn report_o_refuses_what_is_not_a_regular_file_and_write_errors_exit_1() {
    let w = World::sqlite();
    w.write("rb.yaml", ONE_STEP);
    assert_eq!(w.execute("rb.yaml", "r1").code, 0);
    mkfifo(&w.path("pipe.md"));
    let o = w.run(&["report", "r1", "-o", "pipe.md"]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "error: cannot write `pipe.md`: it is not a regular file\n"
    );
    use std::os::unix::fs::FileTypeExt as _;
    assert!(
        std::fs::metadata(w.path("pipe.md"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // Standard output that cannot be written.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = common::output_of(w.command(&["report", "r1"]).stdout(full));
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .starts_with("error: cannot write the report to standard output: "),
        "{}",
        o.stderr
    );
    // A regular file is written.
    let o = w.run(&["report", "r1", "-o", "r1.md"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn a_log_that_cannot_be_written_is_said_on_the_terminal_and_in_the_journal() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        &format!(
            "{ONE_STEP}  - id: fan\n    kind: install\n    for_each: [a, b]\n    run: {{ shell: \"echo {{{{item}}}}\" }}\n"
        ),
    );
    // The step's log is on a "full disk": /dev/full refuses every write with ENOSPC.
    let logs = w.path("state/logs/r1");
    std::fs::create_dir_all(&logs).unwrap();
    std::os::unix::fs::symlink("/dev/full", logs.join("s1.log")).unwrap();
    std::os::unix::fs::symlink("/dev/full", logs.join("fan.b.log")).unwrap();
    let o = w.execute("rb.yaml", "r1");
    assert_eq!(o.code, 0, "{}", o.stderr);
    let warning = format!(
        "step s1: succeeded, but WARNING: the step's log `{}` is incomplete: cannot write it: No space left on device",
        logs.join("s1.log").display()
    );
    assert!(o.stdout.contains(&warning), "{}", o.stdout);
    let s = w.status_json("r1");
    assert!(
        s["steps"]["s1"]["outputs"]["log_error"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{s}"
    );
    assert!(
        o.stdout.contains(&format!(
            "step fan: item b succeeded, but WARNING: the step's log `{}` is incomplete",
            logs.join("fan.b.log").display()
        )),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("item a succeeded, but"), "{}", o.stdout);
    let text = w.run(&["status", "r1"]);
    assert!(
        text.stdout.contains("      WARNING: the step's log"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("      WARNING: item b: the step's log"),
        "{}",
        text.stdout
    );
    let report = w.run(&["report", "r1"]);
    assert!(
        report.stdout.contains("log_error: the step's log"),
        "{}",
        report.stdout
    );
}

// ---------------------------------------------------------------------------------------
// 13. Control characters on the way to the terminal
// ---------------------------------------------------------------------------------------

fn no_raw_controls(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
        .collect();
    assert!(bad.is_empty(), "{what} holds {bad:?}:\n{text}");
}

#[test]
fn control_characters_reach_the_terminal_escaped() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: esc\ntitle: \"Title \\e]0;pwned\\a \\e[2J\\x9b\"\nvars: { who: x }\nsteps:\n  - id: s1\n    kind: patch\n    run: { shell: \"printf 'out \\\\033[31mred\\\\r\\\\n'; echo {{vars.who}}\" }\n  - id: s2\n    kind: patch\n    run: { shell: \"printf 'bad \\\\033[8m' >&2; exit 3\" }\n",
    );
    let o = w.run(&[
        "execute",
        "rb.yaml",
        "--yes",
        "--now",
        "--run-id",
        "r1",
        "--var",
        "who=\u{1b}[5mme",
    ]);
    assert_ne!(o.code, 0);
    no_raw_controls("execute's output", &o.stdout);
    no_raw_controls("execute's errors", &o.stderr);
    assert!(
        o.stdout
            .contains("Title \\u001b]0;pwned\\u0007 \\u001b[2J\\u009b"),
        "{}",
        o.stdout
    );
    // JSON lines stay JSON, and mean the same.
    let o = w.run(&[
        "execute",
        "rb.yaml",
        "--yes",
        "--now",
        "--run-id",
        "r2",
        "--log-format",
        "json",
    ]);
    no_raw_controls("execute's JSON", &o.stdout);
    let events: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"]["title"] == "Title \u{1b}]0;pwned\u{7} \u{1b}[2J\u{9b}"),
        "{}",
        o.stdout
    );
    let plan = w.run(&["plan", "rb.yaml", "--var", "who=\u{1b}[5mme"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    no_raw_controls("plan", &plan.stdout);
    assert!(plan.stdout.contains("\\u001b]0;pwned"), "{}", plan.stdout);
    let status = w.run(&["status", "r1"]);
    no_raw_controls("status", &status.stdout);
    assert!(status.stdout.contains("\\u001b[8m"), "{}", status.stdout);
    // A validation error quoting a key with an escape in it, and its source line.
    w.write("bad.yaml", "runbook: bad\n\"\\e[2Jkey\": 1\nsteps: []\n");
    let v = run_in(w.dir.path(), &["validate", "bad.yaml"]);
    assert_eq!(v.code, 1);
    no_raw_controls("validate", &v.stderr);
    assert!(v.stderr.contains("\\u001b[2Jkey"), "{}", v.stderr);
}
