//! A test's world for the engine tests: a directory with runbooks and markers, and a
//! store (a SQLite file, or a fresh database on the local PostgreSQL server).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Output;

/// A test's world: a directory with runbooks and markers, and a store.
pub struct World {
    pub dir: tempfile::TempDir,
    pub store: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl World {
    pub fn sqlite() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}/state/state.db", dir.path().display());
        World { dir, store }
    }

    /// A fresh PostgreSQL database on the local server (started first if it is down).
    pub fn postgres() -> World {
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(|| {
            let status = Command::new(super::root().join(".ci/start-postgres")).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "PostgreSQL is not running on 127.0.0.1:5432 and .ci/start-postgres could not start it"
            );
        });
        let dir = tempfile::tempdir().unwrap();
        let name = format!(
            "runbook_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "")
        );
        let status = super::pg_tool("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("CREATE DATABASE {name}"))
            .status()
            .expect("psql runs (PostgreSQL client installed)");
        assert!(
            status.success(),
            "cannot create database {name}: is PostgreSQL running on 127.0.0.1:5432?"
        );
        World {
            dir,
            store: format!("postgres://postgres@127.0.0.1:5432/{name}"),
        }
    }

    /// Another world on the same kind of store, empty.
    pub fn like(&self) -> World {
        if self.store.starts_with("postgres://") {
            World::postgres()
        } else {
            World::sqlite()
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    pub fn markers(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("markers"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn count(&self, marker: &str) -> usize {
        self.markers().iter().filter(|m| *m == marker).count()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = super::runbook();
        c.args(args)
            .current_dir(self.dir.path())
            .env("RUNBOOK_STORE", &self.store)
            .env_remove("RUNBOOK_TEST_KILL_AFTER_EVENT")
            .env_remove("RUNBOOK_TEST_STOP_AFTER_EVENT")
            .env_remove("RUNBOOK_TEST_STALE_AFTER_MS")
            .env_remove("RUNBOOK_TEST_KILL_AFTER_SPAWN")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        super::output_of(&mut self.command(args))
    }

    pub fn execute(&self, file: &str, run_id: &str) -> Output {
        self.run(&["execute", file, "--yes", "--now", "--run-id", run_id])
    }

    /// `execute FILE` to the end with `--log-format json`: one event per line.
    pub fn execute_json(&self, file: &str, run_id: &str) -> Output {
        self.run(&[
            "execute",
            file,
            "--yes",
            "--now",
            "--run-id",
            run_id,
            "--log-format",
            "json",
        ])
    }

    /// `execute FILE`, SIGKILLed by the runner itself right after journal event `n`
    /// (`RUNBOOK_TEST_KILL_AFTER_EVENT`); fails the test unless it died so.
    pub fn execute_killed_after(&self, file: &str, run_id: &str, n: i64) {
        self.execute_killed_by(
            file,
            run_id,
            "RUNBOOK_TEST_KILL_AFTER_EVENT",
            &n.to_string(),
        );
    }

    /// `execute FILE` with the fault-injection variable `var=value` that SIGKILLs the
    /// runner; fails the test unless it died so.
    pub fn execute_killed_by(&self, file: &str, run_id: &str, var: &str, value: &str) {
        let status = self
            .command(&["execute", file, "--yes", "--now", "--run-id", run_id])
            .env(var, value)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "run {run_id}: killed by {var}={value}"
        );
    }

    /// Resumes `run` until it ends with exit `ended` (0 completed, 3 rolled back),
    /// answering `--retry` when a step or an undo is in doubt, and waiting while the
    /// killed runner's commands finish. Returns whether `--retry` was needed.
    pub fn resume_to_the_end(&self, run: &str, ended: i32) -> bool {
        let mut retried = false;
        for _ in 0..50 {
            let o = self.run(&["resume", run]);
            match o.code {
                c if c == ended => return retried,
                // The killed runner's command is still finishing: resume refuses until
                // it has.
                4 if o.stderr.contains("are still running") => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                4 if o.stderr.contains("--retry") || o.stdout.contains("--retry") => {
                    retried = true;
                    let o = self.run(&["resume", run, "--retry"]);
                    if o.code == ended {
                        return retried;
                    }
                    assert_eq!(o.code, 4, "{}\n{}", o.stdout, o.stderr);
                }
                1 if o.stderr.contains("has already ended") => return retried,
                _ => panic!("resume {run}: exit {}\n{}\n{}", o.code, o.stdout, o.stderr),
            }
        }
        panic!("run {run} did not finish");
    }

    pub fn status_json(&self, run: &str) -> serde_json::Value {
        let o = self.run(&["status", run, "--format", "json"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        serde_json::from_str(&o.stdout).unwrap()
    }
}

/// Generates one test per store from `fn name(w: &World)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&$crate::common::world::World::sqlite()); } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&$crate::common::world::World::postgres()); } )*
        }
    };
}

/// A test's PostgreSQL database is dropped when the test is done with it (whatever is
/// still connected), so that the server does not fill up with old test databases.
impl Drop for World {
    fn drop(&mut self) {
        let Some(name) = self
            .store
            .strip_prefix("postgres://postgres@127.0.0.1:5432/")
        else {
            return;
        };
        drop_database_later(name);
    }
}

/// Drops PostgreSQL database `name`, not waiting for it: a drop takes a checkpoint (a
/// second or two, one drop at a time on the server) that no test needs to wait for. The
/// `psql` outlives the test process if need be; a thread reaps it meanwhile.
pub fn drop_database_later(name: &str) {
    let child = super::pg_tool("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        std::thread::spawn(move || child.wait());
    }
}

/// The journal numbers of the events of `kind` about `step` (any step when `None`) in the
/// output of [`World::execute_json`], in order.
pub fn seqs_of(json_lines: &str, kind: &str, step: Option<&str>) -> Vec<i64> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"]["type"] == kind && step.is_none_or(|s| e["event"]["step"] == s))
        .filter_map(|e| e["seq"].as_i64())
        .collect()
}
