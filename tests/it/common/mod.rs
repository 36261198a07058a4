//! Runs the real `runbook` binary from the project root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod spawned;
pub mod sshd;
pub mod world;

/// What a run of the binary produced.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The project root: tests name files relative to it, as a user in a checkout would.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `runbook ARGS...` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = runbook();
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    output_of(&mut cmd)
}

/// The `runbook` binary under test, finding the PostgreSQL client tools as [`pg_tool`]
/// does.
pub fn runbook() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    if let Some(bin) = pg_bin() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let paths = std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path));
        c.env("PATH", std::env::join_paths(paths).unwrap());
    }
    c.env("PGSSLMODE", "disable");
    c
}

/// A PostgreSQL client tool (`psql`, `pg_dump`, `pgbench` ...) for the local test server:
/// the newest installed version's binary itself, since Debian's `/usr/bin/psql` is a Perl
/// wrapper that costs more than the tool, and no TLS handshake on the loopback.
pub fn pg_tool(name: &str) -> Command {
    let mut c = Command::new(pg_bin().map_or_else(|| PathBuf::from(name), |b| b.join(name)));
    c.env("PGSSLMODE", "disable");
    c
}

/// The newest `/usr/lib/postgresql/N/bin` (Debian's layout), if there is one.
fn pg_bin() -> Option<&'static Path> {
    static BIN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let version: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("psql").exists().then_some((version, bin))
            })
            .max()
            .map(|(_, bin)| bin)
    })
    .as_deref()
}

/// Runs a prepared `runbook` command to the end; a panic is a failed test.
pub fn output_of(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the runbook binary runs");
    let output = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !output.stderr.contains("panicked"),
        "{cmd:?} panicked:\n{}",
        output.stderr
    );
    output
}

/// Runs `runbook ARGS...` in the project root.
pub fn run(args: &[&str]) -> Output {
    run_in(&root(), args)
}

/// `psql -tAq` on the local PostgreSQL server; `db` is a database name or URL. Returns
/// the trimmed output; a failure fails the test.
pub fn psql(db: &str, sql: &str) -> String {
    let out = pg_tool("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-X",
            "-d",
            db,
            "-tAqc",
            sql,
        ])
        .output()
        .expect("psql runs (PostgreSQL client installed)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An HTTP/1.1 server on a loopback port that answers every request with `body` as
/// JSON; its base URL.
pub fn json_server(body: String) -> String {
    serve("application/json", body)
}

/// An HTTP/1.1 server on a loopback port that answers every request with `body` as
/// `content_type`; its base URL.
pub fn serve(content_type: &'static str, body: String) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            // The request's head, to its blank line.
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}
