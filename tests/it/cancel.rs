//! A stopped step's SQL is stopped on the server too: after a step timeout, SIGTERM,
//! Ctrl-C or `runbook abort`, the statement is cancelled (PostgreSQL) or interrupted
//! (SQLite) within a second or so, its locks are released, and the journal says so.

use crate::common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::psql;
use common::world::World;

/// How long after the stop the statement may still be running.
const STOP_WITHIN: Duration = Duration::from_secs(3);

/// The test's database name (the store's database, which also serves as the target).
fn db_name(w: &World) -> String {
    w.store.rsplit('/').next().unwrap().to_owned()
}

/// Active statements on the test's database that contain `text`, other than ours.
fn active(w: &World, text: &str) -> usize {
    psql(
        &db_name(w),
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE '%{text}%' \
             AND query NOT LIKE '%pg_stat_activity%'"
        ),
    )
    .parse()
    .unwrap()
}

/// Waits (with a deadline) until `n` statements containing `text` are active.
fn wait_active(w: &World, text: &str, n: usize, runner: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while active(w, text) < n {
        assert!(
            runner.try_wait().unwrap().is_none(),
            "the runner ended before its statement started"
        );
        assert!(Instant::now() < deadline, "the statement never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the runner to end; its exit code.
fn ended(runner: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = runner.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = runner.kill();
            panic!("the runner did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that no statement containing `text` is active within [`STOP_WITHIN`] of now.
fn stops_soon(w: &World, text: &str) {
    let deadline = Instant::now() + STOP_WITHIN;
    while active(w, text) > 0 {
        assert!(
            Instant::now() < deadline,
            "`{text}` is still running on the server {STOP_WITHIN:?} after the stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(w: &World, run: &str) -> Child {
    w.command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", run])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A runbook whose one step runs `sql` on the test's database.
fn sleeper(w: &World, timeout: &str, sql: &str) {
    w.write(
        "rb.yaml",
        &format!(
            "runbook: cancel\nsteps:\n  - id: sleepy\n    kind: patch\n    timeout: {timeout}\n    on_failure: abort\n    run: {{ sql: \"{sql}\", database: \"{}\" }}\n",
            w.store
        ),
    );
}

/// The statements the journal records as stopped for `step`.
fn cancelled(w: &World, run: &str, step: &str) -> Vec<serde_json::Value> {
    w.status_json(run)["steps"][step]["cancelled"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn assert_recorded(w: &World, run: &str, statement: &str) {
    let c = cancelled(w, run, "sleepy");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["statement"], statement, "{c:?}");
    assert_eq!(c[0]["database"], w.store.as_str());
    assert!(c[0]["pid"].as_i64().is_some_and(|p| p > 0), "{c:?}");
    assert_eq!(c[0]["terminated"], false);
    assert_eq!(c[0]["error"], serde_json::Value::Null);
}

/// Runs `run` (its step times out after 2 s) until `active` statements matching
/// `pattern` run on the server, then checks that they are gone within a second of the
/// timeout and that the runner ends with exit 4.
fn stopped_by_its_2s_timeout(w: &World, run: &str, pattern: &str, active: usize) {
    let mut runner = spawn(w, run);
    wait_active(w, pattern, active, &mut runner);
    let started = Instant::now();
    stops_soon_after(w, pattern, Duration::from_secs(2) + STOP_WITHIN, started);
    assert_eq!(ended(&mut runner, Duration::from_secs(10)), 4);
}

#[test]
fn a_step_timeout_cancels_the_statement_on_the_server() {
    let w = World::postgres();
    sleeper(&w, "2s", "SELECT pg_sleep(600)");
    stopped_by_its_2s_timeout(&w, "t", "pg_sleep(600)", 1);
    assert_recorded(&w, "t", "SELECT pg_sleep(600)");
    assert_eq!(w.status_json("t")["steps"]["sleepy"]["status"], "timed_out");
}

/// Like [`stops_soon`], measured from `from`.
fn stops_soon_after(w: &World, text: &str, within: Duration, from: Instant) {
    while active(w, text) > 0 {
        assert!(
            from.elapsed() < within,
            "`{text}` is still running on the server after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal_cancels_the_statement(signal: libc::c_int) {
    let w = World::postgres();
    sleeper(&w, "1h", "SELECT pg_sleep(600)");
    let mut runner = spawn(&w, "s");
    wait_active(&w, "pg_sleep(600)", 1, &mut runner);
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(runner.id() as libc::pid_t, signal) };
    stops_soon(&w, "pg_sleep(600)");
    assert_eq!(ended(&mut runner, Duration::from_secs(10)), 4);
    assert_recorded(&w, "s", "SELECT pg_sleep(600)");
    // The step stays in doubt, for `resume` to decide.
    assert_eq!(w.status_json("s")["steps"]["sleepy"]["status"], "running");
}

#[test]
fn sigterm_cancels_the_statement_on_the_server() {
    signal_cancels_the_statement(libc::SIGTERM);
}

#[test]
fn ctrl_c_cancels_the_statement_on_the_server() {
    signal_cancels_the_statement(libc::SIGINT);
}

#[test]
fn abort_cancels_the_statement_on_the_server() {
    let w = World::postgres();
    sleeper(&w, "1h", "SELECT pg_sleep(600)");
    let mut runner = spawn(&w, "a");
    wait_active(&w, "pg_sleep(600)", 1, &mut runner);
    let abort = w.run(&["abort", "a"]);
    assert_eq!(abort.code, 0, "{}", abort.stderr);
    // The runner sees the abort within a second, then stops the statement.
    stops_soon(&w, "pg_sleep(600)");
    assert_eq!(ended(&mut runner, Duration::from_secs(10)), 4);
    assert_recorded(&w, "a", "SELECT pg_sleep(600)");
    assert_eq!(w.status_json("a")["status"], "aborted");
}

#[test]
fn a_stopped_update_releases_its_row_lock() {
    let w = World::postgres();
    let db = db_name(&w);
    psql(
        &db,
        "CREATE TABLE accounts (id int PRIMARY KEY, n int); INSERT INTO accounts VALUES (1, 0)",
    );
    sleeper(
        &w,
        "2s",
        "UPDATE accounts SET n = n + 1 WHERE id = 1; SELECT pg_sleep(600)",
    );
    let mut runner = spawn(&w, "u");
    wait_active(&w, "pg_sleep(600)", 1, &mut runner);
    // While the statement runs, the row is locked.
    assert!(!can_lock_row(&db), "the update holds the row lock");
    assert_eq!(ended(&mut runner, Duration::from_secs(10)), 4);
    // Another session can lock the row at once, and the update was rolled back.
    let deadline = Instant::now() + STOP_WITHIN;
    while !can_lock_row(&db) {
        assert!(Instant::now() < deadline, "the row is still locked");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(psql(&db, "SELECT n FROM accounts WHERE id = 1"), "0");
    let c = cancelled(&w, "u", "sleepy");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        c[0]["statement"],
        "UPDATE accounts SET n = n + 1 WHERE id = 1; SELECT pg_sleep(600)"
    );
}

/// Whether another session can lock row 1 of `accounts` without waiting.
fn can_lock_row(db: &str) -> bool {
    crate::common::pg_tool("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "-d", db, "-tAqc"])
        .arg("SELECT n FROM accounts WHERE id = 1 FOR UPDATE NOWAIT")
        .output()
        .expect("psql runs")
        .status
        .success()
}

#[test]
fn a_fan_out_timeout_cancels_every_item_statement() {
    let w = World::postgres();
    w.write(
        "rb.yaml",
        &format!(
            "runbook: cancel\nsteps:\n  - id: sleepy\n    kind: patch\n    timeout: 2s\n    on_failure: abort\n    for_each: [601, 602]\n    concurrency: 2\n    run: {{ sql: \"SELECT pg_sleep({{{{item}}}})\", database: \"{}\" }}\n",
            w.store
        ),
    );
    // (`''`: the text goes into a LIKE pattern's literal.)
    stopped_by_its_2s_timeout(&w, "f", "pg_sleep(''60", 2);
    let mut statements: Vec<String> = cancelled(&w, "f", "sleepy")
        .iter()
        .map(|c| c["statement"].as_str().unwrap().to_owned())
        .collect();
    statements.sort();
    // Each item is inserted as a quoted literal.
    assert_eq!(
        statements,
        ["SELECT pg_sleep('601')", "SELECT pg_sleep('602')"]
    );
}

#[test]
fn a_recorded_statement_has_its_secrets_masked() {
    let w = World::postgres();
    sleeper(
        &w,
        "1s",
        "SELECT pg_sleep(600), {{secrets.CANCEL_TEST_SECRET}}",
    );
    let text = std::fs::read_to_string(w.path("rb.yaml")).unwrap();
    w.write(
        "rb.yaml",
        &text.replace("steps:", "secrets: [CANCEL_TEST_SECRET]\nsteps:"),
    );
    let mut runner = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "m"])
        .env("CANCEL_TEST_SECRET", "hunter2-swordfish")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(ended(&mut runner, Duration::from_secs(10)), 4);
    stops_soon(&w, "pg_sleep(600)");
    let c = cancelled(&w, "m", "sleepy");
    assert_eq!(c.len(), 1, "{c:?}");
    let statement = c[0]["statement"].as_str().unwrap();
    assert!(
        statement.starts_with("SELECT pg_sleep(600), '") && !statement.contains("hunter2"),
        "{statement}"
    );
}

#[test]
fn sqlite_a_long_query_is_interrupted_and_its_lock_released() {
    let w = World::sqlite();
    let db = w.path("target.db");
    let url = format!("sqlite://{}", db.display());
    let setup = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (0);")
        .status()
        .expect("sqlite3 runs");
    assert!(setup.success());
    // The first step writes, then counts for hours in the same transaction; after its
    // timeout the next step must be able to write at once (sqlx waits 5 s for a lock,
    // so a statement left running would make it fail, or the run take 5 s more).
    let count = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 10000000000) SELECT count(*) FROM c";
    w.write(
        "rb.yaml",
        &format!(
            "runbook: cancel\nsteps:\n  - id: count\n    kind: patch\n    timeout: 1s\n    on_failure: continue\n    run: {{ sql: \"UPDATE t SET x = x + 1; {count}\", database: \"{url}\" }}\n  - id: write\n    kind: patch\n    run: {{ sql: \"INSERT INTO t VALUES (2)\", database: \"{url}\" }}\n"
        ),
    );
    let started = Instant::now();
    let mut runner = spawn(&w, "q");
    assert_eq!(ended(&mut runner, Duration::from_secs(20)), 0);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the run took {:?}",
        started.elapsed()
    );
    let s = w.status_json("q");
    assert_eq!(s["steps"]["count"]["status"], "timed_out");
    assert_eq!(s["steps"]["write"]["status"], "succeeded");
    let c = cancelled(&w, "q", "count");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["database"], url.as_str());
    assert_eq!(c[0]["pid"], serde_json::Value::Null);
    assert!(
        c[0]["statement"]
            .as_str()
            .unwrap()
            .starts_with("UPDATE t SET x = x + 1; WITH RECURSIVE")
    );
    // The update was rolled back with its transaction; the database is not locked.
    let rows = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("BEGIN EXCLUSIVE; SELECT group_concat(x) FROM t; COMMIT;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "0,2");
}

#[test]
fn a_migration_stopped_by_its_timeout_is_cancelled_and_rolled_back() {
    let w = World::postgres();
    let db = db_name(&w);
    std::fs::create_dir(w.path("migrations")).unwrap();
    w.write(
        "migrations/0001_slow.up.sql",
        "CREATE TABLE gadgets (id int);\nSELECT pg_sleep(600);\n",
    );
    w.write(
        "rb.yaml",
        &format!(
            "runbook: cancel\nsteps:\n  - id: migrate\n    kind: migrate\n    timeout: 2s\n    on_failure: abort\n    with: {{ database: \"{}\", dir: migrations }}\n",
            w.store
        ),
    );
    stopped_by_its_2s_timeout(&w, "mg", "pg_sleep(600)", 1);
    let c = cancelled(&w, "mg", "migrate");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        c[0]["statement"],
        "CREATE TABLE gadgets (id int); SELECT pg_sleep(600);"
    );
    // Its transaction was rolled back with it.
    assert_eq!(psql(&db, "SELECT to_regclass('gadgets') IS NULL"), "t");
}
