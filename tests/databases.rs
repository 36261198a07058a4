//! The built-in `optimise` and the demo, against a real SQLite file and a real
//! PostgreSQL server (a fresh database per test).

mod common;

use common::world::World;

fn psql(db_url: &str, sql: &str) -> String {
    let name = db_url.rsplit('/').next().unwrap();
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            name,
            "-tAqc",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

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
    let out = w.execute("rb.yaml", "o3");
    assert_eq!(out.code, 4);
    let error = w.status_json("o3")["steps"]["tidy"]["error"].clone();
    assert_eq!(
        error,
        "`with.actionz` (optimise step): unknown field `actionz`, expected one of `database`, `actions`, `tables`, `lock_timeout`"
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
    assert!(
        out.stdout.contains("item 2 FAILED: the SQLite database"),
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
