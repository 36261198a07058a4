//! The built-in `backup`, `verify` and `restore` through the real binary, against real
//! PostgreSQL databases (the server on 127.0.0.1:5432) and real SQLite files.

use crate::common;

use std::path::Path;

use common::psql;
use common::world::World;
use sha2::{Digest as _, Sha256};

/// A fresh database of the local server, dropped at the end of the test.
struct Pg {
    name: String,
    url: String,
}

impl Pg {
    fn new(w: &World) -> Pg {
        let tag = w
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let name = format!("rb_backup_{}_{tag}", std::process::id());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Pg {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }

    fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    /// pgbench's four tables at scale 1 (100,000 accounts), plus a table fed by a
    /// sequence and one with a foreign key.
    fn fill(&self) {
        let out = crate::common::pg_tool("pgbench")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-i", "-q", "-s", "1"])
            .arg(&self.name)
            .output()
            .expect("pgbench runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.sql(
            "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
             CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                  customer int NOT NULL REFERENCES customers, note text);
             INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 500) g;
             INSERT INTO orders (customer, note)
               SELECT 1 + g % 500, md5(g::text) FROM generate_series(1, 3000) g;",
        );
    }

    /// Every table's checksum and the schema: what must come back after a restore.
    fn fingerprint(&self) -> (Vec<String>, String) {
        let tables = self.sql(
            "SELECT string_agg(quote_ident(relname), ' ' ORDER BY relname) FROM pg_class
             WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace",
        );
        let sums = tables
            .split_whitespace()
            .map(|t| {
                let sum = self.sql(&format!(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"
                ));
                format!("{t} {sum}")
            })
            .collect();
        let out = crate::common::pg_tool("pg_dump")
            .args(["-h", "127.0.0.1", "-U", "postgres", "--schema-only"])
            .arg(&self.name)
            .output()
            .unwrap();
        assert!(out.status.success());
        // Newer pg_dump guards its output with a random `\restrict` key.
        let schema = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n");
        (sums, schema)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = crate::common::pg_tool("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-X",
                "-d",
                "postgres",
                "-qc",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// The names of the server's databases.
fn databases() -> Vec<String> {
    psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The step's log (beside the world's SQLite store).
fn log(w: &World, run: &str, step: &str) -> String {
    std::fs::read_to_string(w.path(&format!("state/logs/{run}/{step}.log"))).unwrap_or_default()
}

/// The scratch databases a step's log says it made.
fn scratch_names(log: &str) -> Vec<String> {
    let mut names: Vec<String> = log
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("runbook_verify_") || w.contains("_restore_"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn ran(out: &common::Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr)
}

#[test]
fn postgres_backup_and_verify_record_what_they_did() {
    let w = World::sqlite();
    let db = Pg::new(&w);
    db.fill();
    let dump = w.path("backups/shop.dump");
    let dir = w.path("backups/shop.dir");
    w.write(
        "rb.yaml",
        &format!(
            "runbook: pg-backup
steps:
  - id: backup
    kind: backup
    checkpoint: true
    with: {{ database: \"{url}\", to: \"{dump}\" }}
  - id: verify
    kind: verify
    with:
      backup: \"{{{{steps.backup.outputs.path}}}}\"
      jobs: 2
      checks:
        - {{ sql: \"select count(*) from pgbench_branches\", expect: 1 }}
        - {{ sql: \"select sum(abalance) = 0 from pgbench_accounts\" }}
  - id: backup-dir
    kind: backup
    with: {{ database: \"{url}\", to: \"{dir}\", format: directory, jobs: 2 }}
  - id: verify-dir
    kind: verify
    with: {{ backup: \"{{{{steps.backup-dir.outputs.path}}}}\" }}
",
            url = db.url,
            dump = dump.display(),
            dir = dir.display(),
        ),
    );
    let out = w.execute("rb.yaml", "b1");
    assert_eq!(out.code, 0, "{}", ran(&out));
    let s = w.status_json("b1");
    let b = &s["steps"]["backup"]["outputs"];
    assert_eq!(b["path"], dump.display().to_string());
    assert_eq!(b["size_bytes"], std::fs::metadata(&dump).unwrap().len());
    assert_eq!(b["sha256"], sha256(&dump));
    assert_eq!(b["format"], "custom");
    assert_eq!(b["database"], db.name);
    assert!(
        b["server_version"]
            .as_str()
            .unwrap()
            .starts_with(|c: char| c.is_ascii_digit()),
        "{b}"
    );
    assert_eq!(
        b["row_counts"],
        serde_json::json!({
            "customers": 500, "orders": 3000, "pgbench_accounts": 100000,
            "pgbench_branches": 1, "pgbench_history": 0, "pgbench_tellers": 10
        })
    );
    assert_eq!(b["row_counts_in_snapshot"], true);
    assert_eq!(b["tables"], 6);
    assert!(b["duration"].as_str().unwrap().ends_with('s'), "{b}");
    assert!(b["duration_ms"].is_u64());
    assert_eq!(b["source"], db.url);
    let v = &s["steps"]["verify"]["outputs"];
    assert_eq!(v["restored_from"], dump.display().to_string());
    assert_eq!(v["tables"], 6);
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for want in [
        "SHA-256 matches the one step `backup` recorded",
        "restored into a scratch database with pg_restore --exit-on-error",
        "row counts of 6 tables match the row counts step `backup` recorded",
        "2 sequences are ahead of the columns they feed",
        "check: select count(*) from pgbench_branches",
        "check: select sum(abalance) = 0 from pgbench_accounts",
    ] {
        assert!(checks.contains(&want), "{want} not in {checks:?}");
    }
    assert!(
        checks
            .iter()
            .any(|c| c.starts_with("amcheck bt_index_check passed on"))
            || v["skipped"].to_string().contains("amcheck"),
        "{v}"
    );
    // Directory format: the checksum covers every file of the directory.
    let d = &s["steps"]["backup-dir"]["outputs"];
    assert_eq!(d["format"], "directory");
    assert!(dir.join("toc.dat").is_file());
    assert_eq!(d["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(s["steps"]["verify-dir"]["outputs"]["tables"], 6);
    // Nothing half-written beside the artifacts, and no scratch database left.
    let left: Vec<_> = std::fs::read_dir(w.path("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    let scratch = scratch_names(&(log(&w, "b1", "verify") + &log(&w, "b1", "verify-dir")));
    assert_eq!(scratch.len(), 2, "{scratch:?}");
    let all = databases();
    for name in &scratch {
        assert!(!all.contains(name), "{name} was left behind");
    }
}

#[test]
fn sqlite_backup_and_verify_record_what_they_did() {
    let w = World::sqlite();
    let url = format!("sqlite://{}?mode=rwc", w.path("app.db").display());
    w.write(
        "rb.yaml",
        &format!(
            "runbook: sqlite-backup
steps:
  - id: prepare
    kind: patch
    run:
      database: \"{url}\"
      sql: |
        CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER NOT NULL REFERENCES customers (id), note TEXT);
        INSERT INTO customers (name)
          WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) SELECT 'c' || i FROM n;
        INSERT INTO orders (customer, note)
          WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
          SELECT 1 + i % 300, hex(randomblob(16)) FROM n;
  - id: wal
    kind: patch
    run: {{ database: \"{url}\", sql: \"PRAGMA journal_mode = WAL\", transaction: false }}
  - id: backup
    kind: backup
    checkpoint: true
    with: {{ database: \"{url}\" }}
  - id: verify
    kind: verify
    with:
      backup: \"{{{{steps.backup.outputs.path}}}}\"
      checks: [{{ sql: \"select count(*) from orders where note is null\", expect: 0 }}]
",
        ),
    );
    let out = w.execute("rb.yaml", "s1");
    assert_eq!(out.code, 0, "{}", ran(&out));
    let s = w.status_json("s1");
    let b = &s["steps"]["backup"]["outputs"];
    // Without `to`: the run's work directory, named after the step.
    let path = w.path("state/work/s1/backup.db");
    assert_eq!(b["path"], path.display().to_string());
    assert_eq!(b["sha256"], sha256(&path));
    assert_eq!(b["format"], "sqlite");
    assert_eq!(b["database"], "app");
    assert_eq!(
        b["row_counts"],
        serde_json::json!({ "customers": 300, "orders": 5000 })
    );
    let v = &s["steps"]["verify"]["outputs"];
    assert_eq!(v["tables"], 2);
    assert_eq!(
        v["checks"],
        serde_json::json!([
            "SHA-256 matches the one step `backup` recorded",
            "PRAGMA integrity_check: ok",
            "PRAGMA foreign_key_check: no broken references",
            "row counts of 2 tables match the row counts step `backup` recorded",
            "1 AUTOINCREMENT counters are ahead of their rows",
            "check: select count(*) from orders where note is null",
        ])
    );
    // The scratch copy is gone; only the backup is left in the work directory.
    let left: Vec<_> = std::fs::read_dir(w.path("state/work/s1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["backup.db"]);
}

/// A verify-only runbook for a backup file this run did not take.
fn verify_runbook(backup: &Path, database: &str) -> String {
    format!(
        "runbook: verify-only
steps:
  - id: verify
    kind: verify
    on_failure: abort
    with: {{ backup: \"{}\", database: \"{database}\" }}
",
        backup.display()
    )
}

/// Writes a copy of `from` cut to half its size, and one with bytes flipped in its
/// middle.
fn damaged_copies(from: &Path, w: &World, ext: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let bytes = std::fs::read(from).unwrap();
    let truncated = w.path(&format!("truncated.{ext}"));
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    let at = bytes.len() * 3 / 5;
    for b in &mut flipped[at..at + 4096] {
        *b ^= 0xA5;
    }
    let corrupted = w.path(&format!("corrupted.{ext}"));
    std::fs::write(&corrupted, flipped).unwrap();
    (truncated, corrupted)
}

#[test]
fn a_truncated_or_corrupted_postgres_backup_fails_verify_and_leaves_no_scratch_database() {
    let w = World::sqlite();
    let db = Pg::new(&w);
    db.fill();
    let dump = w.path("shop.dump");
    let out = crate::common::pg_tool("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-Fc", "-f"])
        .arg(&dump)
        .arg(&db.name)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (truncated, corrupted) = damaged_copies(&dump, &w, "dump");
    for (run, file) in [("t1", &truncated), ("t2", &corrupted)] {
        w.write("rb.yaml", &verify_runbook(file, &db.url));
        let out = w.execute("rb.yaml", run);
        assert_eq!(out.code, 4, "{}", ran(&out));
        let error = w.status_json(run)["steps"]["verify"]["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            error.starts_with(&format!(
                "the backup `{}` does not restore (corrupted or truncated?): `pg_restore` exited with status 1: pg_restore: error:",
                file.display()
            )),
            "{run}: {error}"
        );
        let scratch = scratch_names(&log(&w, run, "verify"));
        assert_eq!(scratch.len(), 1, "{scratch:?}");
        assert!(
            !databases().contains(&scratch[0]),
            "{scratch:?} left behind"
        );
    }
    // The untouched dump verifies, against the live counts (no step recorded any).
    w.write("rb.yaml", &verify_runbook(&dump, &db.url));
    let out = w.execute("rb.yaml", "t3");
    assert_eq!(out.code, 0, "{}", ran(&out));
    let v = w.status_json("t3")["steps"]["verify"]["outputs"].clone();
    assert!(
        v["checks"].to_string().contains(&format!(
            "row counts of 6 tables match the live row counts of `{}`",
            db.url
        )),
        "{v}"
    );
}

#[test]
fn a_backup_changed_after_it_was_taken_fails_verify_by_its_checksum() {
    let w = World::sqlite();
    let url = format!("sqlite://{}?mode=rwc", w.path("app.db").display());
    let backup = w.path("app.backup.db");
    w.write(
        "rb.yaml",
        &format!(
            "runbook: changed
steps:
  - id: prepare
    kind: patch
    run:
      database: \"{url}\"
      sql: |
        CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT);
        INSERT INTO t (x) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
          SELECT hex(randomblob(32)) FROM n;
  - id: backup
    kind: backup
    with: {{ database: \"{url}\", to: \"{backup}\" }}
  - id: damage
    kind: patch
    run: {{ shell: \"truncate -s 8192 '{backup}'\" }}
  - id: verify
    kind: verify
    on_failure: abort
    with: {{ backup: \"{{{{steps.backup.outputs.path}}}}\" }}
",
            backup = backup.display()
        ),
    );
    let out = w.execute("rb.yaml", "c1");
    assert_eq!(out.code, 4, "{}", ran(&out));
    let s = w.status_json("c1");
    let error = s["steps"]["verify"]["error"].as_str().unwrap();
    let size = s["steps"]["backup"]["outputs"]["size_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        error.starts_with(&format!(
            "the backup `{}` has changed since step `backup` took it: its SHA-256 is ",
            backup.display()
        )) && error.ends_with(&format!(
            " (8192 bytes now, {size} when step `backup` wrote it: truncated?); it is corrupted"
        )),
        "{error}"
    );
}

#[test]
fn a_damaged_sqlite_backup_fails_verify() {
    let w = World::sqlite();
    let db = w.path("app.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    w.write(
        "fill.yaml",
        &format!(
            "runbook: fill
steps:
  - id: fill
    kind: patch
    run:
      database: \"{url}\"
      sql: |
        CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT);
        CREATE INDEX t_x ON t (x);
        INSERT INTO t (x) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
          SELECT hex(randomblob(32)) FROM n;
"
        ),
    );
    assert_eq!(w.execute("fill.yaml", "fill").code, 0);
    let (truncated, corrupted) = damaged_copies(&db, &w, "db");
    w.write("rb.yaml", &verify_runbook(&truncated, &url));
    let out = w.execute("rb.yaml", "d1");
    assert_eq!(out.code, 4, "{}", ran(&out));
    let error = w.status_json("d1")["steps"]["verify"]["error"].clone();
    assert!(
        error.as_str().unwrap().starts_with(&format!(
            "the backup `{}` is corrupted: PRAGMA integrity_check",
            truncated.display()
        )),
        "{error}"
    );
    w.write("rb.yaml", &verify_runbook(&corrupted, &url));
    let out = w.execute("rb.yaml", "d2");
    assert_eq!(out.code, 4, "{}", ran(&out));
    let error = w.status_json("d2")["steps"]["verify"]["error"].clone();
    assert!(
        error.as_str().unwrap().starts_with(&format!(
            "the backup `{}` is corrupted: PRAGMA integrity_check",
            corrupted.display()
        )),
        "{error}"
    );
    // Not a backup at all.
    w.write("junk.db", "this is not a database, nor a dump\n");
    w.write("rb.yaml", &verify_runbook(&w.path("junk.db"), &url));
    assert_eq!(w.execute("rb.yaml", "d3").code, 4);
    assert_eq!(
        w.status_json("d3")["steps"]["verify"]["error"],
        format!(
            "the backup `{}` is neither a pg_dump archive nor a SQLite database: it is corrupted or not a backup",
            w.path("junk.db").display()
        )
    );
    // The scratch copies are gone.
    let work: Vec<_> = std::fs::read_dir(w.path("state/work"))
        .map(|d| {
            d.flatten()
                .flat_map(|r| std::fs::read_dir(r.path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert!(work.is_empty(), "{work:?}");
}

#[test]
fn postgres_restore_as_a_checkpoint_brings_everything_back() {
    let w = World::sqlite();
    let db = Pg::new(&w);
    db.fill();
    db.sql(&format!("ALTER DATABASE {} SET work_mem = '7MB'", db.name));
    let before = db.fingerprint();
    w.write(
        "rb.yaml",
        &format!(
            "runbook: pg-restore
steps:
  - id: backup
    kind: backup
    checkpoint: true
    with: {{ database: \"{url}\", to: \"{dump}\" }}
    restore:
      kind: restore
      with: {{ backup: \"{{{{steps.backup.outputs.path}}}}\", database: \"{url}\" }}
  - id: change
    kind: migrate
    run:
      database: \"{url}\"
      sql: |
        UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid < 5000;
        DELETE FROM orders WHERE id > 2500;
        INSERT INTO customers (name) VALUES ('new');
        ALTER TABLE customers ADD COLUMN email text;
        CREATE TABLE added_later (id int);
  - id: smoke
    kind: test
    run: {{ shell: \"exit 1\" }}
",
            url = db.url,
            dump = w.path("shop.dump").display(),
        ),
    );
    // An application session on the database is ended by the swap.
    let mut app = crate::common::pg_tool("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-X",
            "-d",
            &db.name,
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = w.execute("rb.yaml", "r1");
    let _ = app.kill();
    let _ = app.wait();
    assert_eq!(out.code, 3, "{}", ran(&out));
    let s = w.status_json("r1");
    assert_eq!(s["status"], "rolled_back");
    assert_eq!(
        s["steps"]["backup"]["status"], "rolled_back",
        "{}",
        s["steps"]["backup"]
    );
    let after = db.fingerprint();
    assert_eq!(before.0, after.0);
    assert_eq!(before.1, after.1);
    assert!(!after.1.contains("added_later"));
    // The database's own settings came along.
    assert_eq!(
        psql(
            &db.name,
            "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        "work_mem=7MB"
    );
    // Neither the new database nor the replaced one is left.
    let left: Vec<String> = databases()
        .into_iter()
        .filter(|d| d.starts_with(&db.name) && *d != db.name)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let rollback = log(&w, "r1", "backup.rollback");
    assert!(rollback.contains("RENAME TO"), "{rollback}");
}

#[test]
fn sqlite_restore_as_a_checkpoint_brings_everything_back() {
    let w = World::sqlite();
    let file = w.path("app.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    w.write(
        "rb.yaml",
        &format!(
            "runbook: sqlite-restore
steps:
  - id: prepare
    kind: patch
    run:
      database: \"{url}\"
      sql: |
        CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT);
        INSERT INTO t (x) VALUES ('a'), ('b'), ('c');
  - id: backup
    kind: backup
    checkpoint: true
    with: {{ database: \"{url}\" }}
    restore:
      kind: restore
      with: {{ from: \"{{{{steps.backup.outputs.path}}}}\", database: \"{url}\" }}
  - id: change
    kind: migrate
    run:
      database: \"{url}\"
      sql: |
        DELETE FROM t WHERE x = 'a';
        CREATE TABLE later (y);
  - id: smoke
    kind: test
    run: {{ shell: \"exit 1\" }}
"
        ),
    );
    let out = w.execute("rb.yaml", "q1");
    assert_eq!(out.code, 3, "{}", ran(&out));
    w.write(
        "check.yaml",
        &format!(
            "runbook: check
steps:
  - id: look
    kind: test
    run:
      database: \"{url}\"
      sql: \"SELECT (SELECT group_concat(x) FROM (SELECT x FROM t ORDER BY id)) AS xs, (SELECT count(*) FROM sqlite_master WHERE name = 'later') AS later\"
"
        ),
    );
    assert_eq!(w.execute("check.yaml", "q2").code, 0);
    assert_eq!(
        w.status_json("q2")["steps"]["look"]["outputs"],
        serde_json::json!({ "xs": "a,b,c", "later": 0 })
    );
    let mut left: Vec<String> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("app.db") || n.starts_with(".app.db"))
        .collect();
    left.sort();
    assert!(left.iter().all(|n| !n.starts_with('.')), "{left:?}");
}

#[test]
fn a_backup_that_cannot_be_written_fails_clearly_and_leaves_nothing() {
    let w = World::sqlite();
    let db = Pg::new(&w);
    db.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
    // Root ignores permission bits: a path under a regular file cannot be written.
    w.write("plain-file", "x");
    let to = w.path("plain-file/sub/x.dump");
    w.write(
        "rb.yaml",
        &format!(
            "runbook: unwritable
steps:
  - id: backup
    kind: backup
    on_failure: abort
    with: {{ database: \"{}\", to: \"{}\" }}
",
            db.url,
            to.display()
        ),
    );
    let out = w.execute("rb.yaml", "u1");
    assert_eq!(out.code, 4, "{}", ran(&out));
    let error = w.status_json("u1")["steps"]["backup"]["error"].clone();
    assert_eq!(
        error,
        format!(
            "cannot create the directory `{}` for the backup: Not a directory (os error 20)",
            w.path("plain-file/sub").display()
        )
    );
    assert_eq!(std::fs::read_to_string(w.path("plain-file")).unwrap(), "x");
    // pg_dump itself cannot write there (nothing can be created in /proc): its own
    // message, and nothing left.
    w.write(
        "rb.yaml",
        &format!(
            "runbook: unwritable
steps:
  - id: backup
    kind: backup
    on_failure: abort
    with: {{ database: \"{}\", to: /proc/runbook-test.dump }}
",
            db.url,
        ),
    );
    let out = w.execute("rb.yaml", "u2");
    assert_eq!(out.code, 4, "{}", ran(&out));
    let error = w.status_json("u2")["steps"]["backup"]["error"].clone();
    assert!(
        error.as_str().unwrap().starts_with(&format!(
            "the backup of `{}` failed: `pg_dump` exited with status 1: pg_dump: error: could not open output file",
            db.name
        )),
        "{error}"
    );
    let left: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("runbook-test"))
        .collect();
    assert!(left.is_empty());
}

#[test]
fn unreachable_or_wrong_input_fails_clearly() {
    let w = World::sqlite();
    let cases = [
        (
            "database: \"postgres://postgres@127.0.0.1:1/none\"",
            "cannot connect to `postgres://postgres@127.0.0.1:1/none`: ".to_owned(),
        ),
        (
            "database: \"postgres://nobody_here@127.0.0.1:5432/postgres\"",
            "cannot connect to `postgres://nobody_here@127.0.0.1:5432/postgres`: ".to_owned(),
        ),
        (
            &format!("database: \"sqlite://{}\"", w.path("missing.db").display()),
            format!(
                "the SQLite database `{}` does not exist",
                w.path("missing.db").display()
            ),
        ),
        (
            "database: \"mysql://x\"",
            "unsupported database URL `mysql://x`: use postgres://... or sqlite://PATH".to_owned(),
        ),
    ];
    for (i, (with, want)) in cases.iter().enumerate() {
        w.write(
            "rb.yaml",
            &format!(
                "runbook: bad\nsteps:\n  - id: backup\n    kind: backup\n    on_failure: abort\n    with: {{ {with} }}\n"
            ),
        );
        let run = format!("e{i}");
        let out = w.execute("rb.yaml", &run);
        assert_eq!(out.code, 4, "{}", ran(&out));
        let error = w.status_json(&run)["steps"]["backup"]["error"].clone();
        let error = error.as_str().unwrap();
        // The unknown field message names the fields there are; the rest is exact.
        assert!(
            error.starts_with(want.as_str()) || error.contains(want.as_str()),
            "{i}: {error}\nwanted: {want}"
        );
    }
    // A misspelt field is known before anything runs.
    w.write(
        "rb.yaml",
        "runbook: bad\nsteps:\n  - id: backup\n    kind: backup\n    with: { database: \"postgres://x\", formt: custom }\n",
    );
    let out = w.execute("rb.yaml", "typo");
    assert_eq!(out.code, 1, "{}", ran(&out));
    assert!(
        out.stderr
            .starts_with("error: `with.formt` is not a field of `backup`; did you mean `format`?"),
        "{}",
        out.stderr
    );
}

/// The seed lesson: verify that the backup ran properly on every customer database.
#[test]
fn backup_and_verify_fan_out_over_every_customer_database() {
    let w = World::sqlite();
    let mut urls = Vec::new();
    for t in ["acme", "globex"] {
        let url = format!("sqlite://{}?mode=rwc", w.path(&format!("{t}.db")).display());
        w.write(
            "fill.yaml",
            &format!(
                "runbook: fill\nsteps:\n  - id: fill\n    kind: patch\n    run: {{ database: \"{url}\", sql: \"CREATE TABLE t (x); INSERT INTO t VALUES (1), (2)\" }}\n"
            ),
        );
        assert_eq!(w.execute("fill.yaml", &format!("fill-{t}")).code, 0);
        urls.push(url);
    }
    w.write(
        "rb.yaml",
        &format!(
            "runbook: tenants
targets:
  tenants: [\"{a}\", \"{b}\"]
  backups: [\"{dir}/acme.db\", \"{dir}/globex.db\"]
steps:
  - id: backup
    kind: backup
    for_each: \"{{{{targets.tenants}}}}\"
    with: {{ database: \"{{{{item}}}}\", to: \"{dir}/\" }}
  - id: verify
    kind: verify
    for_each: \"{{{{targets.backups}}}}\"
    with: {{ backup: \"{{{{item}}}}\" }}
",
            a = urls[0],
            b = urls[1],
            dir = w.path("backups").display(),
        ),
    );
    let out = w.execute("rb.yaml", "f1");
    assert_eq!(out.code, 0, "{}", ran(&out));
    let s = w.status_json("f1");
    assert_eq!(s["steps"]["backup"]["items"]["done"], 2);
    assert_eq!(s["steps"]["verify"]["items"]["done"], 2);
    assert_eq!(s["steps"]["verify"]["items"]["failed"], 0);
    assert!(w.path("backups/acme.db").is_file() && w.path("backups/globex.db").is_file());
    let item = log(&w, "f1", "verify.1");
    assert!(item.contains("globex.db"), "{item}");
}

/// Restoring the database that holds runbook's own store would rewind the journal of
/// the run doing it: refused, and the run ends failed with the reason.
#[test]
fn restoring_the_store_database_itself_is_refused() {
    let w = World::postgres();
    let name = w.store.rsplit('/').next().unwrap().to_owned();
    psql(&name, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
    w.write(
        "rb.yaml",
        &format!(
            "runbook: self-restore
steps:
  - id: backup
    kind: backup
    checkpoint: true
    with: {{ database: \"{url}\", to: \"{dump}\" }}
    restore:
      kind: restore
      with: {{ backup: \"{{{{steps.backup.outputs.path}}}}\", database: \"{url}\" }}
  - id: change
    kind: migrate
    run: {{ database: \"{url}\", sql: \"INSERT INTO t VALUES (2)\" }}
  - id: smoke
    kind: test
    run: {{ shell: \"exit 1\" }}
",
            url = w.store,
            dump = w.path("self.dump").display(),
        ),
    );
    let out = w.execute("rb.yaml", "self1");
    assert_eq!(out.code, 4, "{}", ran(&out));
    let s = w.status_json("self1");
    assert_eq!(s["status"], "failed");
    assert_eq!(s["steps"]["backup"]["status"], "rollback_failed");
    assert_eq!(
        s["steps"]["backup"]["error"],
        format!(
            "`{name}` holds runbook's own journal (the store's `runbook_schema` table): restoring it would rewind this run's journal too; keep the store (--store) in another database"
        )
    );
    assert_eq!(psql(&name, "SELECT count(*) FROM t"), "2");
}
