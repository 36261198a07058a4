//! Runs the real `runbook` binary from the project root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod spawned;
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    output_of(&mut cmd)
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
    let out = Command::new("psql")
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
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}
