//! The built-in `optimise` and the demo, against a real SQLite file and a real
//! PostgreSQL server (a fresh database per test).

use crate::common;

use common::psql;
use common::world::World;

#[test]
fn optimise_postgres_vacuums_analyzes_and_reindexes() {
    let w = World::postgres();
    let db = w.store.clone();
    psql(
        &db,
        "CREATE TABLE t (id serial PRIMARY KEY, x int);
         INSERT INTO t (x) SELECT g FROM generate_series(1, 20000) g;
         DELETE FROM t WHERE x % 2 = 0;",
    );
    w.write(
        "rb.yaml",
        &format!(
            "runbook: opt
steps:
  - id: tidy
    kind: optimise
    with: {{ database: \"{db}\", actions: [vacuum, analyze, reindex], tables: [t], lock_timeout: 2s }}
"
        ),
    );
    let out = w.execute("rb.yaml", "o1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let o = &w.status_json("o1")["steps"]["tidy"]["outputs"];
    assert_eq!(
        o["actions"],
        serde_json::json!([
            "VACUUM (ANALYZE) \"t\"",
            "ANALYZE \"t\"",
            "REINDEX TABLE CONCURRENTLY \"t\""
        ])
    );
    assert!(o["size_before"].as_i64().unwrap() > 0);
    assert!(o["size_after"].as_i64().unwrap() > 0);
    // VACUUM (ANALYZE) ran: the statistics know the table.
    assert_eq!(
        psql(
            &db,
            "SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 't'"
        ),
        "10000"
    );
}

#[test]
fn optimise_sqlite_shrinks_the_file() {
    let w = World::sqlite();
    let db = format!("sqlite://{}?mode=rwc", w.path("app.db").display());
    w.write(
        "rb.yaml",
        &format!(
            "runbook: opt
steps:
  - id: fill
    kind: patch
    run:
      sql: |
        CREATE TABLE t (x TEXT);
        INSERT INTO t WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
          SELECT hex(randomblob(64)) FROM n;
        DELETE FROM t WHERE rowid % 4 <> 0;
      database: \"{db}\"
  - id: tidy
    kind: optimise
    with: {{ database: \"{db}\" }}
"
        ),
    );
    let out = w.execute("rb.yaml", "o2");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let o = &w.status_json("o2")["steps"]["tidy"]["outputs"];
    assert_eq!(
        o["actions"],
        serde_json::json!(["VACUUM", "ANALYZE", "PRAGMA optimize"])
    );
    let (before, after) = (
        o["size_before"].as_i64().unwrap(),
        o["size_after"].as_i64().unwrap(),
    );
    assert!(after < before / 2, "{before} -> {after}");
}

#[test]
fn optimise_refuses_what_it_does_not_know() {
    let w = World::sqlite();
    let db = format!("sqlite://{}?mode=rwc", w.path("app.db").display());
    w.write(
        "rb.yaml",
        &format!(
            "runbook: opt\nsteps:\n  - id: tidy\n    kind: optimise\n    on_failure: abort\n    with: {{ database: \"{db}\", actionz: [vacuum] }}\n"
        ),
    );
    // Known before anything runs, with its place.
    let out = w.execute("rb.yaml", "o3");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "error: `with.actionz` is not a field of `optimise`; did you mean `actions`? (`optimise` takes `database`, `actions`, `tables`, `lock_timeout`)\n --> rb.yaml:6:"
        ),
        "{}",
        out.stderr
    );
    // A value only the run can read (an action that does not exist) fails the step.
    w.write(
        "rb.yaml",
        &format!(
            "runbook: opt\nsteps:\n  - id: tidy\n    kind: optimise\n    on_failure: abort\n    with: {{ database: \"{db}\", actions: [defrag] }}\n"
        ),
    );
    assert_eq!(w.execute("rb.yaml", "o3b").code, 4);
    let error = w.status_json("o3b")["steps"]["tidy"]["error"].clone();
    assert!(
        error
            .as_str()
            .unwrap()
            .starts_with("`with.actions[0]` (optimise step): unknown variant `defrag`"),
        "{error}"
    );
    let unreachable = "postgres://postgres@127.0.0.1:1/none";
    w.write(
        "rb.yaml",
        &format!(
            "runbook: opt\nsteps:\n  - id: tidy\n    kind: optimise\n    on_failure: abort\n    with: {{ database: \"{unreachable}\" }}\n"
        ),
    );
    assert_eq!(w.execute("rb.yaml", "o4").code, 4);
    let error = w.status_json("o4")["steps"]["tidy"]["error"].clone();
    assert!(
        error
            .as_str()
            .unwrap()
            .starts_with(&format!("cannot connect to `{unreachable}`")),
        "{error}"
    );
}

/// A database kind fans out over a list of database URLs: one step tidies every
/// tenant's database, and a tenant that cannot be reached fails only its item.
#[test]
fn a_database_step_fans_out_over_tenant_databases() {
    let w = World::sqlite();
    let url = |t: &str| format!("sqlite://{}?mode=rwc", w.path(&format!("{t}.db")).display());
    let missing = format!("sqlite://{}", w.path("gone.db").display());
    w.write(
        "rb.yaml",
        &format!(
            "runbook: fan
targets:
  tenants: [\"{a}\", \"{b}\", \"{missing}\"]
steps:
  - id: tidy
    kind: optimise
    for_each: \"{{{{targets.tenants}}}}\"
    concurrency: 2
    max_failures: 1
    with: {{ database: \"{{{{item}}}}\", actions: [vacuum] }}
",
            a = url("acme"),
            b = url("globex"),
        ),
    );
    let out = w.execute("rb.yaml", "f1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("f1");
    assert_eq!(s["steps"]["tidy"]["items"]["done"], 3);
    assert_eq!(s["steps"]["tidy"]["items"]["failed"], 1);
    // An item is named by its value: the unreachable tenant's URL.
    assert!(
        out.stdout
            .contains(&format!("item {missing} FAILED: the SQLite database")),
        "{}",
        out.stdout
    );
    assert!(w.path("acme.db").exists() && w.path("globex.db").exists());
    let log = std::fs::read_to_string(w.path("state/logs/f1/tidy.0.log")).unwrap();
    assert!(log.contains("optimise: VACUUM"), "{log}");
}

/// Copies the demo runbook and its migrations into the world, as a checkout has them.
fn demo_world() -> World {
    let w = World::sqlite();
    let root = common::root();
    std::fs::create_dir_all(w.path("runbooks/migrations/demo")).unwrap();
    std::fs::copy(
        root.join("runbooks/demo.yaml"),
        w.path("runbooks/demo.yaml"),
    )
    .unwrap();
    for f in std::fs::read_dir(root.join("runbooks/migrations/demo")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(
            f.path(),
            w.path("runbooks/migrations/demo").join(f.file_name()),
        )
        .unwrap();
    }
    w
}

/// Schema and a checksum of every row of a SQLite database, read through a run of its
/// own (an `sql` step's outputs). SQLite's own tables (statistics) and the migrations'
/// tracking table, which stays once made, are left out.
fn fingerprint(w: &World, db: &str, run: &str) -> serde_json::Value {
    w.write(
        "fp.yaml",
        &format!(
            "runbook: fingerprint
steps:
  - id: fp
    kind: patch
    run:
      sql: |
        SELECT
          (SELECT group_concat(sql, ';') FROM (SELECT sql FROM sqlite_master
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
               AND name NOT LIKE 'runbook_migrations%' ORDER BY name)) AS schema,
          (SELECT count(*) FROM orders) AS orders,
          (SELECT total(id * 7 + customer_id * 3 + product_id + quantity) FROM orders) AS sum,
          (SELECT total(length(note) * id) FROM orders) AS notes,
          (SELECT group_concat(substr(note, 1, 3), '') FROM (SELECT note FROM orders ORDER BY id DESC LIMIT 50)) AS last_notes
      database: \"sqlite://{db}\"
"
        ),
    );
    let out = w.execute("fp.yaml", run);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    w.status_json(run)["steps"]["fp"]["outputs"].clone()
}

/// The demo as the README runs it: every step, on a shop it makes itself.
#[test]
fn the_demo_runs_end_to_end() {
    let w = demo_world();
    let out = w.run(&[
        "execute",
        "runbooks/demo.yaml",
        "--now",
        "--yes",
        "--run-id",
        "demo",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("demo");
    assert_eq!(s["status"], "completed");
    for step in [
        "prepare",
        "backup",
        "verify-backup",
        "close",
        "migrate",
        "optimise",
        "verify",
        "smoke",
        "reopen",
    ] {
        assert_eq!(
            s["steps"][step]["status"], "succeeded",
            "{step}: {}",
            s["steps"][step]
        );
    }
    assert_eq!(s["steps"]["migrate"]["outputs"]["to_version"], 2);
    assert!(
        s["steps"]["backup"]["outputs"]["size_bytes"]
            .as_i64()
            .unwrap()
            > 1_000_000
    );
    let fp = fingerprint(&w, ".runbook/demo/app.db", "fp");
    assert_eq!(fp["orders"], 100_000);
    assert!(fp["schema"].as_str().unwrap().contains("status"));
}

/// The failure drill: the run fails after the migration and rolls back to the
/// checkpoint, leaving schema and data exactly as the backup holds them.
#[test]
fn the_demo_drill_rolls_back_to_the_data_as_it_was() {
    let w = demo_world();
    let out = w.run(&[
        "execute",
        "runbooks/demo.yaml",
        "--now",
        "--yes",
        "--run-id",
        "drill",
        "--var",
        "drill=fail",
    ]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("drill");
    assert_eq!(s["status"], "rolled_back");
    assert_eq!(s["steps"]["migrate"]["status"], "rolled_back");
    assert_eq!(s["closed"], false);
    let backup = s["steps"]["backup"]["outputs"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = fingerprint(&w, &backup, "fp-backup");
    let after = fingerprint(&w, ".runbook/demo/app.db", "fp-app");
    assert_eq!(before, after);
    assert!(!after["schema"].as_str().unwrap().contains("status"));
}

/// Per-table checksums and the schema of a PostgreSQL database: what "exactly as
/// before" means.
fn pg_fingerprint(db: &str) -> (String, String) {
    let name = db.rsplit('/').next().unwrap();
    let schema = crate::common::pg_tool("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--schema-only",
            "--no-owner",
            name,
        ])
        .output()
        .unwrap();
    assert!(schema.status.success());
    let schema = String::from_utf8_lossy(&schema.stdout)
        .lines()
        // The tracking table stays once made; everything else must match.
        // (and pg_dump's `\restrict` keys are new every time).
        .filter(|l| {
            !l.starts_with("--")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.contains("runbook_migrations")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let sums = psql(
        db,
        "SELECT string_agg(t || ':' || s, ',' ORDER BY t) FROM (
           SELECT 'accounts' AS t, md5(string_agg(a::text, ',' ORDER BY aid)) AS s FROM pgbench_accounts a
           UNION ALL SELECT 'branches', md5(string_agg(b::text, ',' ORDER BY bid)) FROM pgbench_branches b
           UNION ALL SELECT 'tellers', md5(string_agg(t::text, ',' ORDER BY tid)) FROM pgbench_tellers t) x",
    );
    (schema, sums)
}

/// A whole maintenance on a `pgbench -i -s 10` database (a million accounts): backup,
/// verify, close, migrate, optimise, test, reopen; then the same with a failure injected
/// after the migration, which restores the checkpoint and leaves schema and data exactly
/// as before.
#[test]
fn a_full_maintenance_on_postgres_and_its_rollback() {
    let w = World::postgres();
    // A database of its own: the run's journal must not be inside what it restores.
    let name = format!("{}_target", w.store.rsplit('/').next().unwrap());
    psql(&w.store, &format!("CREATE DATABASE {name}"));
    let db = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let init = crate::common::pg_tool("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-i",
            "-s",
            "10",
            "-q",
            &name,
        ])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    std::fs::create_dir_all(w.path("migrations")).unwrap();
    w.write(
        "migrations/0001_account_status.up.sql",
        "ALTER TABLE pgbench_accounts ADD COLUMN status text NOT NULL DEFAULT 'active';\n",
    );
    w.write(
        "migrations/0001_account_status.down.sql",
        "ALTER TABLE pgbench_accounts DROP COLUMN status;\n",
    );
    w.write(
        "migrations/0002_balance_index.up.sql",
        "-- runbook: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_balance ON pgbench_accounts (abalance);\n",
    );
    w.write(
        "migrations/0002_balance_index.down.sql",
        "DROP INDEX IF EXISTS accounts_balance;\n",
    );
    let runbook = |drill: &str| {
        format!(
            "runbook: pg-maintenance
vars:
  db: {db}
steps:
  - id: backup
    kind: backup
    checkpoint: true
    with: {{ database: \"{{{{vars.db}}}}\" }}
    restore: {{ kind: restore, with: {{ backup: \"{{{{steps.backup.outputs.path}}}}\", database: \"{{{{vars.db}}}}\" }} }}
  - id: verify-backup
    kind: verify
    with: {{ backup: \"{{{{steps.backup.outputs.path}}}}\", database: \"{{{{vars.db}}}}\" }}
  - id: close
    kind: close
  - id: migrate
    kind: migrate
    with: {{ database: \"{{{{vars.db}}}}\", dir: migrations }}
  - id: optimise
    kind: optimise
    with: {{ database: \"{{{{vars.db}}}}\", actions: [analyze] }}
  - id: smoke
    kind: test
    checks:
      - sql: SELECT count(*) FROM pgbench_accounts WHERE status = 'active'
        database: \"{{{{vars.db}}}}\"
        expect: 1000000
      - sql: SELECT '{drill}' = 'pass'
        database: \"{{{{vars.db}}}}\"
        message: the failure drill
  - id: reopen
    kind: reopen
"
        )
    };
    let before = pg_fingerprint(&db);
    w.write("rb.yaml", &runbook("fail"));
    let out = w.execute("rb.yaml", "drill");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("drill");
    assert_eq!(
        s["steps"]["backup"]["status"], "rolled_back",
        "{}",
        s["steps"]["backup"]
    );
    assert_eq!(s["closed"], false);
    assert_eq!(
        pg_fingerprint(&db),
        before,
        "the restore brought everything back"
    );
    // And the real thing.
    w.write("rb.yaml", &runbook("pass"));
    let out = w.execute("rb.yaml", "real");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("real");
    assert_eq!(s["steps"]["migrate"]["outputs"]["to_version"], 2);
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'accounts_balance'"
        ),
        "1"
    );
}

/// Without the PostgreSQL client tools, a backup fails saying what is missing, and
/// nothing is written.
#[test]
fn a_missing_pg_dump_is_a_clear_error() {
    // The world's database holds the journal's tables: something to back up.
    let w = World::postgres();
    w.write(
        "rb.yaml",
        &format!(
            "runbook: nodump\nsteps:\n  - id: backup\n    kind: backup\n    on_failure: abort\n    with: {{ database: \"{}\", to: out.dump }}\n",
            w.store
        ),
    );
    let out = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "n1"])
        // A PATH where no program is found.
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    let error = w.status_json("n1")["steps"]["backup"]["error"].clone();
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("`pg_dump` is not installed"),
        "{error}"
    );
    assert!(!w.path("out.dump").exists());
}

/// "Back up, verify and migrate every customer database": each tenant's backup is
/// recorded (verify checks it against its own checksum and row counts), and when a later
/// step fails each tenant is migrated back down to where it was.
#[test]
fn fan_out_backup_verify_migrate_and_undo_per_tenant() {
    let w = World::sqlite();
    std::fs::create_dir_all(w.path("migrations")).unwrap();
    w.write(
        "migrations/0001_accounts.up.sql",
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT);\nINSERT INTO accounts (name) VALUES ('a'), ('b');\n",
    );
    w.write(
        "migrations/0001_accounts.down.sql",
        "DROP TABLE accounts;\n",
    );
    w.write(
        "migrations/0002_points.up.sql",
        "ALTER TABLE accounts ADD COLUMN points INTEGER NOT NULL DEFAULT 0;\n",
    );
    w.write(
        "migrations/0002_points.down.sql",
        "ALTER TABLE accounts DROP COLUMN points;\n",
    );
    let url = |t: &str| format!("sqlite://{}?mode=rwc", w.path(&format!("{t}.db")).display());
    let runbook = |to: &str, drill: &str| {
        format!(
            "runbook: tenants
targets:
  tenants:
    - {{ name: acme, url: \"{a}\" }}
    - {{ name: globex, url: \"{b}\" }}
steps:
  - id: migrate
    kind: migrate
    for_each: \"{{{{targets.tenants}}}}\"
    with: {{ database: \"{{{{item.url}}}}\", dir: migrations{to} }}
    rollback:
      kind: migrate
      with: {{ database: \"{{{{item.url}}}}\", dir: migrations, to: \"{{{{steps.migrate.outputs.from_version}}}}\" }}
  - id: backup
    kind: backup
    for_each: \"{{{{targets.tenants}}}}\"
    with: {{ database: \"{{{{item.url}}}}\", to: \"backups/{{{{run.id}}}}-{{{{item.name}}}}.db\" }}
  - id: verify
    kind: verify
    for_each: \"{{{{targets.tenants}}}}\"
    with: {{ backup: \"backups/{{{{run.id}}}}-{{{{item.name}}}}.db\" }}
  - id: smoke
    kind: test
    checks:
      - sql: SELECT '{drill}' = 'pass'
        database: \"{a}\"
",
            a = url("acme"),
            b = url("globex"),
        )
    };
    // Both tenants at version 1 first.
    w.write("rb.yaml", &runbook(", to: 1", "pass"));
    let out = w.execute("rb.yaml", "v1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // Now to version 2, then a failure: each tenant goes back to version 1.
    w.write("rb.yaml", &runbook("", "fail"));
    let out = w.execute("rb.yaml", "v2");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("v2");
    assert_eq!(s["steps"]["migrate"]["status"], "rolled_back");
    assert_eq!(s["steps"]["verify"]["status"], "succeeded");
    for t in ["acme", "globex"] {
        // Each item's files are named by the item's name.
        let log =
            std::fs::read_to_string(w.path(&format!("state/logs/v2/migrate.{t}.rollback.log")))
                .unwrap();
        assert!(log.contains("rolled back 0002_points"), "{t}: {log}");
    }
    // Each verify compared its file with the checksum and counts its backup recorded.
    let verify_log = std::fs::read_to_string(w.path("state/logs/v2/verify.globex.log")).unwrap();
    assert!(!verify_log.contains("no backup step"), "{verify_log}");
    // Version 2 applies again cleanly: the column was really gone.
    w.write("rb.yaml", &runbook("", "pass"));
    assert_eq!(w.execute("rb.yaml", "v2-again").code, 0);
}

/// Two backups never share one file: the second is refused, the first is kept.
#[test]
fn a_backup_never_replaces_another() {
    let w = World::sqlite();
    let db = format!("sqlite://{}?mode=rwc", w.path("app.db").display());
    w.write(
        "rb.yaml",
        &format!(
            "runbook: twice
steps:
  - id: make
    kind: patch
    idempotent: true
    run: {{ sql: \"CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (1);\", database: \"{db}\" }}
  - id: backup
    kind: backup
    on_failure: abort
    with: {{ database: \"{db}\", to: backups/app.db }}
"
        ),
    );
    assert_eq!(w.execute("rb.yaml", "one").code, 0);
    let first = std::fs::read(w.path("backups/app.db")).unwrap();
    assert_eq!(w.execute("rb.yaml", "two").code, 4);
    let error = w.status_json("two")["steps"]["backup"]["error"].clone();
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("already exists, and a backup never replaces another"),
        "{error}"
    );
    assert_eq!(std::fs::read(w.path("backups/app.db")).unwrap(), first);
}

/// A `REINDEX CONCURRENTLY` held up by an old transaction times out on its lock, drops
/// the invalid `_ccnew` copies it left, and tries again once the transaction is gone.
#[test]
fn a_reindex_that_meets_a_lock_cleans_up_and_tries_again() {
    let w = World::postgres();
    let db = w.store.clone();
    psql(
        &db,
        "CREATE TABLE items (id serial PRIMARY KEY, v int UNIQUE);
         INSERT INTO items (v) SELECT g FROM generate_series(1, 1000) g;",
    );
    // An old snapshot that REINDEX CONCURRENTLY must wait for.
    let mut holder = crate::common::pg_tool("psql")
        .args(["-X", "-q", "-d", &db, "-c"])
        .arg("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM items; SELECT pg_sleep(3); COMMIT;")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    w.write(
        "rb.yaml",
        &format!(
            "runbook: reindex\nsteps:\n  - id: tidy\n    kind: optimise\n    with: {{ database: \"{db}\", actions: [reindex], tables: [items], lock_timeout: 300ms }}\n"
        ),
    );
    let out = w.execute("rb.yaml", "r1");
    holder.wait().unwrap();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname LIKE 'items%' AND (NOT i.indisvalid OR c.relname LIKE '%ccnew%')"
        ),
        "0"
    );
    let log = std::fs::read_to_string(w.path(".runbook/logs/r1/tidy.log")).unwrap();
    assert!(log.contains("met a lock"), "{log}");
}

/// A SQLite database in WAL mode is restored in WAL mode: the journal mode is the
/// application's choice, not the backup's.
#[test]
fn a_sqlite_restore_keeps_the_journal_mode() {
    let w = World::sqlite();
    let db = format!("sqlite://{}?mode=rwc", w.path("app.db").display());
    w.write(
        "rb.yaml",
        &format!(
            "runbook: wal
steps:
  - id: make
    kind: patch
    run: {{ sql: \"PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);\", database: \"{db}\", transaction: false }}
  - id: backup
    kind: backup
    checkpoint: true
    with: {{ database: \"{db}\" }}
    restore: {{ kind: restore, with: {{ backup: \"{{{{steps.backup.outputs.path}}}}\", database: \"{db}\" }} }}
  - id: change
    kind: patch
    run: {{ sql: \"INSERT INTO t VALUES (2)\", database: \"{db}\" }}
  - id: fail
    kind: patch
    run: {{ shell: \"exit 1\" }}
"
        ),
    );
    let out = w.execute("rb.yaml", "w1");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    w.write(
        "check.yaml",
        &format!(
            "runbook: check\nsteps:\n  - id: look\n    kind: patch\n    run: {{ sql: \"SELECT (SELECT journal_mode FROM pragma_journal_mode()) AS mode, (SELECT count(*) FROM t) AS n\", database: \"{db}\", transaction: false }}\n"
        ),
    );
    assert_eq!(w.execute("check.yaml", "c1").code, 0);
    let o = &w.status_json("c1")["steps"]["look"]["outputs"];
    assert_eq!(o["mode"], "wal");
    assert_eq!(o["n"], 1);
}
