//! The built-in `migrate` kind through the real binary, against real databases: a SQLite
//! file and a fresh PostgreSQL database per test (on the local server), with the store
//! on SQLite and on PostgreSQL. Locks are held by real `psql` and `sqlite3` sessions.

use crate::both_stores;
use crate::common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::psql;
use common::world::World;
use serde_json::{Value, json};

both_stores!(
    migrates_up_with_outputs_and_a_rerun_applies_nothing,
    a_failing_migration_undoes_the_whole_step,
    a_later_failure_migrates_back_down,
    to_migrates_down_in_reverse_order,
    a_changed_migration_is_refused_until_accepted,
    a_missing_down_file_is_a_clear_error,
);

/// The migration target: a SQLite file in the world's directory, or a second database
/// beside the store's on the PostgreSQL server.
struct Db {
    url: String,
    /// The SQLite file, or `None` for PostgreSQL.
    file: Option<PathBuf>,
}

impl Db {
    fn new(w: &World) -> Db {
        if w.store.starts_with("postgres") {
            let name = format!("{}_app", w.store.rsplit('/').next().unwrap());
            psql("postgres", &format!("CREATE DATABASE {name}"));
            Db {
                url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                file: None,
            }
        } else {
            let file = w.path("app.db");
            Db {
                url: format!("sqlite://{}?mode=rwc", file.display()),
                file: Some(file),
            }
        }
    }

    fn pg(&self) -> bool {
        self.file.is_none()
    }

    /// The database's name on the PostgreSQL server.
    fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap()
    }

    /// Runs SQL with the command-line client; its output, trimmed.
    fn query(&self, sql: &str) -> String {
        match &self.file {
            None => psql(self.name(), sql),
            Some(f) => {
                let out = Command::new("sqlite3").arg(f).arg(sql).output().unwrap();
                assert!(
                    out.status.success(),
                    "sqlite3 {sql}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
        }
    }

    /// The schema without the tracking table: `pg_dump --schema-only`, or SQLite's
    /// `sqlite_master`.
    fn schema(&self) -> String {
        match &self.file {
            None => {
                let out = crate::common::pg_tool("pg_dump")
                    .args(["--schema-only", "--no-owner", "-T", "runbook_migrations"])
                    .arg(&self.url)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    // pg_dump's \restrict key is new in every dump.
                    .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Some(f) if !f.exists() => String::new(),
            Some(_) => self.query(
                "SELECT type, name, sql FROM sqlite_master \
                 WHERE tbl_name <> 'runbook_migrations' ORDER BY name",
            ),
        }
    }

    /// The versions in the tracking table.
    fn versions(&self) -> Vec<u64> {
        self.query("SELECT version FROM runbook_migrations ORDER BY version")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }

    /// Whether a table exists.
    fn has_table(&self, table: &str) -> bool {
        let sql = if self.pg() {
            format!("SELECT count(*) FROM pg_tables WHERE tablename = '{table}'")
        } else {
            format!("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'")
        };
        self.query(&sql) == "1"
    }
}

/// Writes `migrations/NAME` in the world.
fn migration(w: &World, name: &str, sql: &str) {
    std::fs::create_dir_all(w.path("migrations")).unwrap();
    w.write(&format!("migrations/{name}"), sql);
}

/// Three migrations that both PostgreSQL and SQLite understand, each with its undo.
fn shop(w: &World) {
    migration(
        w,
        "0001_create_customers.up.sql",
        "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);\n\
         INSERT INTO customers VALUES (1, 'ann'), (2, 'bob');\n",
    );
    migration(
        w,
        "0001_create_customers.down.sql",
        "DROP TABLE customers;\n",
    );
    migration(
        w,
        "0002_add_points.up.sql",
        "ALTER TABLE customers ADD COLUMN points integer NOT NULL DEFAULT 0;\n\
         CREATE INDEX customers_points ON customers (points);\n",
    );
    migration(
        w,
        "0002_add_points.down.sql",
        "DROP INDEX customers_points;\nALTER TABLE customers DROP COLUMN points;\n",
    );
    migration(
        w,
        "0003_create_orders.up.sql",
        "-- orders; one customer has many\n\
         CREATE TABLE orders (\n  id integer PRIMARY KEY,\n  \
           customer_id integer NOT NULL REFERENCES customers (id),\n  total numeric NOT NULL\n);\n",
    );
    migration(w, "0003_create_orders.down.sql", "DROP TABLE orders;\n");
}

/// A runbook with one `migrate` step (its `with` extended by `with`) and then `rest`.
fn runbook(db: &Db, with: &str, rest: &str) -> String {
    format!(
        "runbook: mig\nsteps:\n  - id: migrate\n    kind: migrate\n    with: {{ database: \"{}\", dir: migrations{with} }}\n{rest}",
        db.url
    )
}

/// Executes the runbook as run `run`: the exit code and the run's status.
fn go(w: &World, text: &str, run: &str) -> (i32, Value) {
    w.write("rb.yaml", text);
    let out = w.execute("rb.yaml", run);
    let status = if out.stdout.starts_with("run ") {
        w.status_json(run)
    } else {
        Value::Null
    };
    eprintln!("{run}: exit {}\n{}\n{}", out.code, out.stdout, out.stderr);
    (out.code, status)
}

/// The migrate step's status.
fn step(status: &Value) -> &Value {
    &status["steps"]["migrate"]
}

fn error(status: &Value) -> String {
    step(status)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The migrate step's log of run `run`.
fn log(w: &World, run: &str) -> String {
    log_file(w, run, "migrate.log")
}

/// A log file of run `run` (`migrate.log`, `migrate.rollback.log`).
fn log_file(w: &World, run: &str, file: &str) -> String {
    for dir in ["state/logs", ".runbook/logs"] {
        if let Ok(text) = std::fs::read_to_string(w.path(dir).join(run).join(file)) {
            return text;
        }
    }
    String::new()
}

fn migrates_up_with_outputs_and_a_rerun_applies_nothing(w: &World) {
    shop(w);
    let db = Db::new(w);
    let (code, s) = go(w, &runbook(&db, "", ""), "up");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["status"], "completed");
    assert_eq!(step(&s)["status"], "succeeded");
    assert_eq!(
        step(&s)["outputs"],
        json!({
            "from_version": 0,
            "to_version": 3,
            "applied": ["0001_create_customers", "0002_add_points", "0003_create_orders"],
            "direction": "up",
        })
    );
    assert_eq!(db.versions(), [1, 2, 3]);
    assert!(db.has_table("orders"));
    assert_eq!(db.query("SELECT sum(points) FROM customers"), "0");
    // The tracking rows: the checksum is the up file's SHA-256, a time and a duration.
    let row = db.query(
        "SELECT name, checksum, applied_at IS NOT NULL, duration_ms >= 0 \
         FROM runbook_migrations WHERE version = 2",
    );
    let file = std::fs::read(w.path("migrations/0002_add_points.up.sql")).unwrap();
    let sum: String =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&file))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    let t = if db.pg() { "t" } else { "1" };
    assert_eq!(row, format!("0002_add_points|{sum}|{t}|{t}"));
    let logged = log(w, "up");
    assert!(logged.contains("applied 0003_create_orders in"), "{logged}");

    // Again: nothing to do.
    let (code, s) = go(w, &runbook(&db, "", ""), "again");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(
        step(&s)["outputs"],
        json!({ "from_version": 3, "to_version": 3, "applied": [], "direction": "none" })
    );
    assert_eq!(db.versions(), [1, 2, 3]);
}

fn a_failing_migration_undoes_the_whole_step(w: &World) {
    shop(w);
    std::fs::remove_file(w.path("migrations/0002_add_points.up.sql")).unwrap();
    std::fs::remove_file(w.path("migrations/0002_add_points.down.sql")).unwrap();
    std::fs::remove_file(w.path("migrations/0003_create_orders.up.sql")).unwrap();
    std::fs::remove_file(w.path("migrations/0003_create_orders.down.sql")).unwrap();
    migration(
        w,
        "0002_bad.up.sql",
        "CREATE TABLE extra (id integer);\nINSERT INTO nope VALUES (1);\n",
    );
    let db = Db::new(w);
    let (code, s) = go(w, &runbook(&db, "", ""), "bad");
    // The step failed, and is all or nothing: 0001, applied before the failure, is
    // migrated back down, so the run that rolls back is really where it began.
    assert_eq!(code, 3, "{s:#}");
    assert_eq!(s["status"], "rolled_back");
    assert_eq!(step(&s)["status"], "failed");
    let e = error(&s);
    assert!(e.contains("0002_bad.up.sql failed"), "{e}");
    let why = if db.pg() {
        "relation \"nope\" does not exist (SQLSTATE 42P01)"
    } else {
        "no such table: nope"
    };
    assert!(e.contains(why), "{e}");
    assert!(e.contains("its transaction was rolled back"), "{e}");
    assert!(
        e.contains("the migrations this step had applied before it (0001_create_customers) were rolled back: the database is back at version 0"),
        "{e}"
    );
    assert!(db.versions().is_empty());
    assert!(!db.has_table("customers"));
    assert!(!db.has_table("extra"));
}

fn a_later_failure_migrates_back_down(w: &World) {
    shop(w);
    let db = Db::new(w);
    let (code, s) = go(w, &runbook(&db, ", to: 1", ""), "first");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(db.versions(), [1]);
    let before = db.schema();
    assert!(before.contains("customers"), "{before}");

    let rest = format!(
        "    rollback:\n      kind: migrate\n      with: {{ database: \"{}\", dir: migrations, to: \"{{{{steps.migrate.outputs.from_version}}}}\" }}\n  \
         - id: smoke\n    kind: test\n    run: {{ shell: \"exit 1\" }}\n",
        db.url
    );
    let (code, s) = go(w, &runbook(&db, "", &rest), "later");
    assert_eq!(code, 3, "{s:#}");
    assert_eq!(s["status"], "rolled_back");
    assert_eq!(step(&s)["status"], "rolled_back", "{s:#}");
    assert_eq!(step(&s)["outputs"]["to_version"], 3);
    assert_eq!(db.versions(), [1]);
    assert_eq!(db.schema(), before);
    let logged = log_file(w, "later", "migrate.rollback.log");
    assert!(
        logged.contains("rolled back 0003_create_orders"),
        "{logged}"
    );
    assert!(logged.contains("rolled back 0002_add_points"), "{logged}");
}

fn to_migrates_down_in_reverse_order(w: &World) {
    shop(w);
    let db = Db::new(w);
    let empty = db.schema();
    assert_eq!(go(w, &runbook(&db, ", to: 1", ""), "one").0, 0);
    let one = db.schema();
    assert_eq!(go(w, &runbook(&db, "", ""), "all").0, 0);
    assert_eq!(db.versions(), [1, 2, 3]);

    // `to` as text, as a rendered template gives it.
    let (code, s) = go(w, &runbook(&db, ", to: \"1\"", ""), "down");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(
        step(&s)["outputs"],
        json!({
            "from_version": 3,
            "to_version": 1,
            "applied": ["0003_create_orders", "0002_add_points"],
            "direction": "down",
        })
    );
    assert_eq!(db.versions(), [1]);
    assert_eq!(db.schema(), one);

    let (code, s) = go(w, &runbook(&db, ", to: 0", ""), "zero");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(
        step(&s)["outputs"]["applied"],
        json!(["0001_create_customers"])
    );
    assert_eq!(db.versions(), Vec::<u64>::new());
    assert!(!db.has_table("customers"));
    if db.pg() {
        assert_eq!(db.schema(), empty);
    }

    // A version beyond the files is refused.
    let (code, s) = go(w, &runbook(&db, ", to: 7", ""), "beyond");
    assert_eq!(code, 3);
    let e = error(&s);
    assert!(
        e.contains(
            "`to` is 7 but the latest migration in `migrations` is 0003_create_orders.up.sql"
        ),
        "{e}"
    );
}

fn a_changed_migration_is_refused_until_accepted(w: &World) {
    shop(w);
    let db = Db::new(w);
    assert_eq!(go(w, &runbook(&db, "", ""), "up").0, 0);
    let file = w.path("migrations/0002_add_points.up.sql");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("-- points are whole numbers\n");
    std::fs::write(&file, &text).unwrap();

    let (code, s) = go(w, &runbook(&db, "", ""), "changed");
    assert_eq!(code, 3, "{s:#}");
    let e = error(&s);
    assert!(
        e.contains("0002_add_points.up.sql was changed after it was applied on 20"),
        "{e}"
    );
    assert!(e.contains("`accept_changed: [2]`"), "{e}");

    let (code, s) = go(w, &runbook(&db, ", accept_changed: [2]", ""), "accepted");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(step(&s)["outputs"]["direction"], "none");
    assert!(log(w, "accepted").contains("accepted the changed 0002_add_points.up.sql"));
    let sum: String = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
        text.as_bytes(),
    ))
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect();
    assert_eq!(
        db.query("SELECT checksum FROM runbook_migrations WHERE version = 2"),
        sum
    );
    // Recorded: no need to accept it again.
    assert_eq!(go(w, &runbook(&db, "", ""), "after").0, 0);
}

fn a_missing_down_file_is_a_clear_error(w: &World) {
    shop(w);
    std::fs::remove_file(w.path("migrations/0002_add_points.down.sql")).unwrap();
    let db = Db::new(w);
    assert_eq!(go(w, &runbook(&db, "", ""), "up").0, 0);
    let (code, s) = go(w, &runbook(&db, ", to: 0", ""), "down");
    assert_eq!(code, 3, "{s:#}");
    let e = error(&s);
    assert!(
        e.contains("cannot migrate down from version 3 to 0: 0002_add_points.down.sql missing in `migrations` (nothing was changed)"),
        "{e}"
    );
    // Nothing ran: not even 0003's undo.
    assert_eq!(db.versions(), [1, 2, 3]);
    // Down to 2 needs only 0003's undo.
    let (code, s) = go(w, &runbook(&db, ", to: 2", ""), "down2");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(db.versions(), [1, 2]);
}

#[test]
fn gaps_and_duplicates_are_refused_naming_the_files() {
    // The directory is there when the runbook is checked, so the loader refuses it:
    // nothing starts, no run is recorded.
    let w = World::sqlite();
    let db = Db::new(&w);
    migration(&w, "0001_a.up.sql", "CREATE TABLE a (id integer);");
    migration(&w, "0003_c.up.sql", "CREATE TABLE c (id integer);");
    w.write("rb.yaml", &runbook(&db, "", ""));
    let out = w.execute("rb.yaml", "gap");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "gap in the versions between 0001_a.up.sql and 0003_c.up.sql (version 2 is missing)"
        ) && out.stderr.contains(" --> rb.yaml:"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    // Nothing was touched: the database was not even created.
    assert!(!db.file.as_ref().unwrap().exists());

    migration(&w, "0002_b.up.sql", "CREATE TABLE b (id integer);");
    migration(&w, "0002_bb.up.sql", "CREATE TABLE bb (id integer);");
    let out = w.execute("rb.yaml", "dup");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("duplicate version 2: 0002_b.up.sql and 0002_bb.up.sql"),
        "{}",
        out.stderr
    );
    assert!(!db.file.as_ref().unwrap().exists());
}

#[test]
fn connection_and_parameter_errors_are_clear() {
    let w = World::sqlite();
    shop(&w);
    let cases = [
        (
            "postgres://postgres@127.0.0.1:1/app",
            "migrations",
            "",
            "cannot connect to `postgres://postgres@127.0.0.1:1/app`",
        ),
        (
            "sqlite://missing.db",
            "migrations",
            "",
            "the SQLite database `missing.db` does not exist",
        ),
        (
            "sqlite://app.db?mode=rwc",
            "nowhere",
            "",
            "the migrations directory `nowhere` does not exist",
        ),
        (
            "sqlite://app.db?mode=rwc",
            "migrations",
            ", to: three",
            "`three` is not a whole number",
        ),
    ];
    for (i, (database, dir, extra, want)) in cases.into_iter().enumerate() {
        let text = format!(
            "runbook: mig\nsteps:\n  - id: migrate\n    kind: migrate\n    with: {{ database: \"{database}\", dir: {dir}{extra} }}\n"
        );
        let (code, s) = go(&w, &text, &format!("e{i}"));
        assert_eq!(code, 3, "{s:#}");
        let e = error(&s);
        assert!(e.contains(want), "{want}: {e}");
    }
    // An unknown field is known before anything runs.
    w.write(
        "rb.yaml",
        "runbook: mig\nsteps:\n  - id: migrate\n    kind: migrate\n    with: { database: \"sqlite://app.db?mode=rwc\", dir: migrations, bogus: 1 }\n",
    );
    let out = w.execute("rb.yaml", "bogus");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("error: `with.bogus` is not a field of `migrate`"),
        "{}",
        out.stderr
    );
    // So is a duration written out (one a template gives is checked when it runs).
    w.write(
        "rb.yaml",
        "runbook: mig\nsteps:\n  - id: migrate\n    kind: migrate\n    with: { database: \"sqlite://app.db?mode=rwc\", dir: migrations, lock_timeout: soon }\n",
    );
    let out = w.execute("rb.yaml", "soon");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: invalid duration `soon`"),
        "{}",
        out.stderr
    );
    // A database the server does not have.
    World::postgres();
    let text = "runbook: mig\nsteps:\n  - id: migrate\n    kind: migrate\n    with: { database: \"postgres://postgres@127.0.0.1:5432/no_such_db\", dir: migrations }\n";
    let (code, s) = go(&w, text, "nodb");
    assert_eq!(code, 3, "{s:#}");
    let e = error(&s);
    assert!(
        e.contains("database \"no_such_db\" does not exist (SQLSTATE 3D000)"),
        "{e}"
    );
}

/// A `psql` session on `db` that holds `LOCK TABLE table IN ACCESS EXCLUSIVE MODE` in
/// an open transaction until `release`.
struct Holder {
    child: Child,
}

impl Holder {
    fn lock(db: &Db, table: &str) -> Holder {
        let mut child = crate::common::pg_tool("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db.name(), "-Xq"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(
            child.stdin.as_mut().unwrap(),
            "BEGIN;\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;"
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while db.query(&format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = '{table}' AND l.mode = 'AccessExclusiveLock' AND l.granted"
        )) != "1"
        {
            assert!(Instant::now() < deadline, "the lock was not taken");
            std::thread::sleep(Duration::from_millis(50));
        }
        Holder { child }
    }

    fn release(mut self) {
        let mut stdin = self.child.stdin.take().unwrap();
        writeln!(stdin, "COMMIT;").unwrap();
        drop(stdin);
        self.child.wait().unwrap();
    }
}

#[test]
fn a_migration_blocked_by_a_lock_fails_fast_naming_the_lock_timeout() {
    let w = World::postgres();
    shop(&w);
    let db = Db::new(&w);
    assert_eq!(go(&w, &runbook(&db, ", to: 1", ""), "one").0, 0);
    let holder = Holder::lock(&db, "customers");
    let started = Instant::now();
    let (code, s) = go(&w, &runbook(&db, "", ""), "blocked");
    let took = started.elapsed();
    holder.release();
    assert_eq!(code, 3, "{s:#}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let e = error(&s);
    assert!(
        e.contains(
            "lock_timeout 500ms reached on each of 5 attempts to run 0002_add_points.up.sql"
        ),
        "{e}"
    );
    assert!(e.contains("(SQLSTATE 55P03)"), "{e}");
    assert!(e.contains("stays at version 1"), "{e}");
    let logged = log(&w, "blocked");
    for attempt in 1..=4 {
        assert!(
            logged.contains(&format!("(attempt {attempt} of 5)"))
                && logged.contains("trying again in"),
            "{logged}"
        );
    }
    assert!(logged.contains("(attempt 5 of 5)"), "{logged}");
    assert_eq!(db.versions(), [1]);

    // Without the lock it goes through.
    let (code, s) = go(&w, &runbook(&db, "", ""), "free");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(db.versions(), [1, 2, 3]);
}

#[test]
fn a_lock_released_during_the_backoff_lets_the_retry_succeed() {
    let w = World::postgres();
    shop(&w);
    let db = Db::new(&w);
    assert_eq!(go(&w, &runbook(&db, ", to: 1", ""), "one").0, 0);
    let holder = Holder::lock(&db, "customers");
    w.write(
        "rb.yaml",
        &runbook(&db, ", lock_timeout: 300ms, retries: \"8\"", ""),
    );
    let mut run = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "retry"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Released once the first attempt has timed out.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log(&w, "retry").contains("(attempt 1 of 9)") {
        assert!(Instant::now() < deadline, "no retry logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    holder.release();
    assert_eq!(run.wait().unwrap().code(), Some(0));
    let s = w.status_json("retry");
    assert_eq!(step(&s)["outputs"]["to_version"], 3);
    assert!(log(&w, "retry").contains("lock_timeout 300ms reached (attempt 1 of 9)"));
    assert_eq!(db.versions(), [1, 2, 3]);
}

#[test]
fn a_busy_sqlite_database_fails_fast() {
    let w = World::sqlite();
    shop(&w);
    let db = Db::new(&w);
    assert_eq!(go(&w, &runbook(&db, ", to: 1", ""), "one").0, 0);
    let file = db.file.clone().unwrap();
    let mut holder = Command::new("sqlite3")
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // It waits for the lock if a probe below holds it for a moment.
    writeln!(
        holder.stdin.as_mut().unwrap(),
        ".timeout 10000\nBEGIN IMMEDIATE;"
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = Command::new("sqlite3")
            .arg(&file)
            .arg("BEGIN IMMEDIATE; ROLLBACK;")
            .stderr(Stdio::null())
            .output()
            .unwrap();
        if !probe.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the lock was not taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let (code, s) = go(
        &w,
        &runbook(&db, ", lock_timeout: 200ms, retries: 2", ""),
        "busy",
    );
    let took = started.elapsed();
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(stdin, "COMMIT;").unwrap();
    drop(stdin);
    holder.wait().unwrap();
    assert_eq!(code, 3, "{s:#}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let e = error(&s);
    assert!(
        e.contains("lock_timeout (SQLite busy_timeout) 200ms reached on each of 3 attempts to run 0002_add_points.up.sql"),
        "{e}"
    );
    assert!(e.contains("database is locked"), "{e}");
    assert_eq!(db.versions(), [1]);
    assert_eq!(go(&w, &runbook(&db, "", ""), "free").0, 0);
    assert_eq!(db.versions(), [1, 2, 3]);
}

#[test]
fn no_transaction_migrations_create_indexes_concurrently_and_drop_invalid_ones() {
    let w = World::postgres();
    let db = Db::new(&w);
    migration(
        &w,
        "0001_customers.up.sql",
        "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);\n\
         INSERT INTO customers VALUES (1, 'ann'), (2, 'bob'), (3, 'ann');\n",
    );
    migration(&w, "0001_customers.down.sql", "DROP TABLE customers;\n");
    migration(
        &w,
        "0002_name_indexes.up.sql",
        "-- runbook: no-transaction\n\
         CREATE INDEX CONCURRENTLY IF NOT EXISTS customers_name ON customers (name);\n\
         CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS customers_name_unique\n  ON customers (name);\n",
    );
    migration(
        &w,
        "0002_name_indexes.down.sql",
        "-- runbook: no-transaction\n\
         DROP INDEX CONCURRENTLY IF EXISTS customers_name_unique;\n\
         DROP INDEX CONCURRENTLY IF EXISTS customers_name;\n",
    );
    assert_eq!(go(&w, &runbook(&db, ", to: 1", ""), "first").0, 0);
    // The unique index fails on the duplicate name, leaving an invalid index behind.
    let (code, s) = go(&w, &runbook(&db, "", ""), "dup");
    assert_eq!(code, 3, "{s:#}");
    let e = error(&s);
    assert!(e.contains("0002_name_indexes.up.sql failed"), "{e}");
    assert!(
        e.contains("could not create unique index \"customers_name_unique\""),
        "{e}"
    );
    assert!(
        e.contains("1 of 2 statements took effect, statement 2 failed"),
        "{e}"
    );
    assert!(
        e.contains("the invalid index customers_name_unique it left was dropped"),
        "{e}"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM pg_index WHERE NOT indisvalid"),
        "0"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM pg_indexes WHERE indexname = 'customers_name_unique'"),
        "0"
    );
    assert_eq!(db.versions(), [1]);

    // Fixed data: the whole file runs again and goes through.
    db.query("DELETE FROM customers WHERE id = 3");
    let (code, s) = go(&w, &runbook(&db, "", ""), "fixed");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(step(&s)["outputs"]["applied"], json!(["0002_name_indexes"]));
    assert_eq!(
        db.query(
            "SELECT string_agg(c.relname || ':' || i.indisvalid, ',' ORDER BY c.relname) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname LIKE 'customers_name%'"
        ),
        "customers_name:true,customers_name_unique:true"
    );
    assert!(log(&w, "fixed").contains("outside a transaction, 2 statements"));

    // And down again, outside a transaction too.
    let (code, s) = go(&w, &runbook(&db, ", to: 1", ""), "down");
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(
        db.query("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'customers_name%'"),
        "0"
    );
    assert_eq!(db.versions(), [1]);
}

#[test]
fn concurrent_index_in_a_transaction_says_how_to_mark_the_file() {
    let w = World::postgres();
    let db = Db::new(&w);
    migration(
        &w,
        "0001_customers.up.sql",
        "CREATE TABLE customers (id integer PRIMARY KEY, name text);\n\
         CREATE INDEX CONCURRENTLY customers_name ON customers (name);\n",
    );
    let (code, s) = go(&w, &runbook(&db, "", ""), "tx");
    assert_eq!(code, 3, "{s:#}");
    let e = error(&s);
    assert!(e.contains("cannot run inside a transaction block"), "{e}");
    assert!(e.contains("`-- runbook: no-transaction`"), "{e}");
    assert!(!db.has_table("customers"));

    // A file with its own COMMIT is refused before it runs.
    migration(
        &w,
        "0001_customers.up.sql",
        "BEGIN;\nCREATE TABLE customers (id integer PRIMARY KEY);\nCOMMIT;\n",
    );
    let (code, s) = go(&w, &runbook(&db, "", ""), "commit");
    assert_eq!(code, 3, "{s:#}");
    let e = error(&s);
    assert!(
        e.contains("0001_customers.up.sql has its own `BEGIN`"),
        "{e}"
    );
    assert!(!db.has_table("customers"));
}
