//! Online migrations (`NNNN_name.yaml`, `phase: start | complete | abort`) on the local
//! PostgreSQL server, a fresh database per test: the expand half (columns, triggers, the
//! two versioned schemas of views), the batched backfill, `abort` leaving schema and data
//! as they were, `complete` leaving the new shape, and the refusals.

use crate::common;

use common::psql;
use common::world::World;

/// A database of a test, dropped when the test ends.
struct Database(String);

impl std::ops::Deref for Database {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        common::world::drop_database_later(self.0.rsplit('/').next().unwrap());
    }
}

/// A fresh database with `orders` (10,000 rows, a primary key) and `accounts` (no
/// primary key).
fn database(w: &World, tag: &str) -> Database {
    let name = format!(
        "online_{tag}_{}",
        w.path("")
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
            .replace(['.', '-'], "_")
    );
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    psql("postgres", &format!("CREATE DATABASE {name}"));
    psql(
        &name,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, account_id int NOT NULL, qty int NOT NULL, price_cents int NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO orders (account_id, qty, price_cents) SELECT g % 97, 1 + g % 7, 100 + g % 1000 FROM generate_series(1, 10000) g;
         CREATE TABLE accounts (id int NOT NULL, name text NOT NULL);
         INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 300) g;",
    );
    Database(format!("postgres://postgres@127.0.0.1:5432/{name}"))
}

const MIGRATION: &str = r#"operations:
  - add_column:
      table: orders
      column: { name: total_cents, type: bigint, nullable: false }
      up: "qty * price_cents"
  - rename_column: { table: accounts, from: name, to: display_name }
  - alter_column:
      table: orders
      column: qty
      type: bigint
      up: "qty::bigint"
      down: "least(qty, 2147483647)::int"
  - create_index: { table: orders, columns: [account_id, created_at] }
"#;

fn runbook(db: &str, phase: &str) -> String {
    format!(
        "runbook: online\nsteps:\n  - id: m\n    kind: migrate\n    with: {{ database: \"{db}\", dir: migrations, phase: {phase}, batch_time: 20ms }}\n"
    )
}

fn schema_and_data(db: &str) -> (String, String) {
    let name = db.rsplit('/').next().unwrap();
    let out = common::pg_tool("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--schema-only",
            "-d",
            name,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    // Without the random key of `\restrict` lines.
    let schema: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(|l| format!("{l}\n"))
        .collect();
    let data = psql(
        db,
        "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM (SELECT o::text AS t FROM orders o UNION ALL SELECT a::text FROM accounts a) x",
    );
    (schema, data)
}

#[test]
fn start_then_abort_leaves_schema_and_data_as_they_were() {
    let w = World::sqlite();
    let db = database(&w, "abort");
    std::fs::create_dir_all(w.path("migrations")).unwrap();
    w.write("migrations/0001_order_totals.yaml", MIGRATION);
    let before = schema_and_data(&db);
    w.write("start.yaml", &runbook(&db, "start"));
    let out = w.run(&[
        "execute",
        "start.yaml",
        "--yes",
        "--now",
        "--log-format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("\"rows_backfilled\":10000"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\"new_schema\":\"public_v1\""),
        "{}",
        out.stdout
    );
    // Both versions read and write through their own schema.
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM orders WHERE total_cents IS DISTINCT FROM qty * price_cents"
        ),
        "0"
    );
    assert_eq!(
        psql(
            &db,
            "SET search_path = public_v1; SELECT display_name FROM accounts WHERE id = 7"
        ),
        "account 7"
    );
    assert_eq!(
        psql(
            &db,
            "SET search_path = public_v0; SELECT name FROM accounts WHERE id = 7"
        ),
        "account 7"
    );
    psql(
        &db,
        "SET search_path = public_v0; INSERT INTO orders (account_id, qty, price_cents) VALUES (1, 3, 250)",
    );
    assert_eq!(
        psql(
            &db,
            "SELECT total_cents FROM orders ORDER BY id DESC LIMIT 1"
        ),
        "750"
    );
    psql(
        &db,
        "SET search_path = public_v1; INSERT INTO orders (account_id, qty, price_cents, total_cents) VALUES (1, 4, 10, 40)",
    );
    assert_eq!(
        psql(
            &db,
            "SELECT qty FROM public.orders ORDER BY id DESC LIMIT 1"
        ),
        "4"
    );
    psql(&db, "DELETE FROM orders WHERE id > 10000");
    // A NOT NULL column the new version leaves empty is refused.
    let out = common::pg_tool("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "-d", &db, "-c", "SET search_path = public_v1; INSERT INTO orders (account_id, qty, price_cents) VALUES (1, 1, 1)"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Two at once, and complete before start, are refused (nothing changed).
    w.write(
        "migrations/0002_more.yaml",
        "operations:\n  - add_column: { table: orders, column: { name: note, type: text } }\n",
    );
    w.write("abort.yaml", &runbook(&db, "abort"));
    let out = w.run(&["execute", "abort.yaml", "--yes", "--now"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let after = schema_and_data(&db);
    assert_eq!(before.1, after.1, "the data");
    assert_eq!(before.0, after.0, "the schema");
    let out = w.run(&["execute", "abort.yaml", "--yes", "--now"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stdout.contains("no online migration is started"),
        "{}",
        out.stdout
    );
    w.write("complete.yaml", &runbook(&db, "complete"));
    let out = w.run(&["execute", "complete.yaml", "--yes", "--now"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stdout
            .contains("there is nothing to complete; `phase: start` comes first"),
        "{}",
        out.stdout
    );
}

#[test]
fn complete_leaves_the_new_shape_only_and_the_new_version_keeps_working() {
    let w = World::sqlite();
    let db = database(&w, "complete");
    std::fs::create_dir_all(w.path("migrations")).unwrap();
    w.write("migrations/0001_order_totals.yaml", MIGRATION);
    w.write("start.yaml", &runbook(&db, "start"));
    let out = w.run(&["execute", "start.yaml", "--yes", "--now"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // `plan` says the step keeps the service open.
    let plan = w.run(&["plan", "start.yaml"]);
    assert!(
        plan.stdout
            .contains("online migration (start): the service stays open"),
        "{}",
        plan.stdout
    );
    // Without a `close` step, customers are told the service stays up.
    assert!(
        out.stdout
            .contains("online has started. The service stays available throughout."),
        "{}",
        out.stdout
    );
    // A second online migration cannot start while this one is under way.
    w.write(
        "migrations/0002_more.yaml",
        "operations:\n  - add_column: { table: orders, column: { name: note, type: text } }\n",
    );
    let out = w.run(&["execute", "start.yaml", "--yes", "--now"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stdout.contains("online migration 1 (0001_order_totals) is already started: complete or abort it before starting 0002_more.yaml"),
        "{}",
        out.stdout
    );
    w.write("complete.yaml", &runbook(&db, "complete"));
    let out = w.run(&["execute", "complete.yaml", "--yes", "--now"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        psql(&db, "SELECT to_regnamespace('public_v0') IS NULL"),
        "t"
    );
    assert_eq!(
        psql(
            &db,
            "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'orders'"
        ),
        "id:bigint,account_id:integer,price_cents:integer,created_at:timestamp with time zone,total_cents:bigint,qty:bigint"
    );
    assert_eq!(
        psql(
            &db,
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'total_cents' AND table_schema = 'public'"
        ),
        "NO"
    );
    assert_eq!(
        psql(&db, "SELECT display_name FROM accounts WHERE id = 3"),
        "account 3"
    );
    // The changed column keeps its NOT NULL.
    assert_eq!(
        psql(
            &db,
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'qty' AND table_schema = 'public'"
        ),
        "NO"
    );
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_account_id_created_at_idx'"
        ),
        "1"
    );
    // The new version, on its schema, goes on working.
    psql(
        &db,
        "SET search_path = public_v1; INSERT INTO orders (account_id, qty, price_cents, total_cents) VALUES (2, 5, 10, 50)",
    );
    assert_eq!(
        psql(
            &db,
            "SET search_path = public_v1; SELECT qty FROM orders ORDER BY id DESC LIMIT 1"
        ),
        "5"
    );
    assert_eq!(
        psql(&db, "SELECT max(version) FROM runbook_migrations"),
        "1"
    );
    assert_eq!(
        psql(&db, "SELECT to_regclass('runbook_online') IS NULL"),
        "t"
    );
    let out = w.run(&["execute", "complete.yaml", "--yes", "--now"]);
    assert_ne!(out.code, 0);
}

#[test]
fn operations_without_a_safe_online_form_and_missing_tables_are_refused() {
    let w = World::sqlite();
    std::fs::create_dir_all(w.path("migrations")).unwrap();
    w.write(
        "migrations/0001_bad.yaml",
        "operations:\n  - drop_column: { table: orders, column: qty }\n  - add_column: { table: orders, column: { name: c, type: int, nullable: false } }\n  - alter_column: { table: orders, column: qty, type: bigint }\n",
    );
    w.write(
        "rb.yaml",
        &runbook("postgres://postgres@127.0.0.1:5432/x", "start"),
    );
    let out = w.run(&["validate", "rb.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("--> migrations/0001_bad.yaml:2:5"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("`drop_column` has no safe online form"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("NOT NULL column `c` needs `up` (or a `default`)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("a type change needs `up`"),
        "{}",
        out.stderr
    );
    // A table that does not exist: refused before anything changes.
    let db = database(&w, "missing");
    w.write(
        "migrations/0001_bad.yaml",
        "operations:\n  - add_column: { table: order, column: { name: c, type: int } }\n",
    );
    w.write("rb.yaml", &runbook(&db, "start"));
    let before = schema_and_data(&db);
    let out = w.run(&["execute", "rb.yaml", "--yes", "--now"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stdout
            .contains("table `public.order` does not exist; did you mean `orders`?"),
        "{}",
        out.stdout
    );
    assert_eq!(before, schema_and_data(&db));
}

#[test]
fn a_backfill_killed_half_way_goes_on_from_its_cursor_and_abort_still_restores_everything() {
    let w = World::sqlite();
    let db = database(&w, "killed");
    psql(
        &db,
        "INSERT INTO orders (account_id, qty, price_cents) SELECT g % 97, 1 + g % 7, 100 + g % 1000 FROM generate_series(1, 90000) g",
    );
    std::fs::create_dir_all(w.path("migrations")).unwrap();
    w.write("migrations/0001_order_totals.yaml", MIGRATION);
    let before = schema_and_data(&db);
    // Small batches with a pause, so that the kill lands in the middle.
    w.write(
        "start.yaml",
        &runbook(&db, "start").replace("batch_time: 20ms", "batch_time: 5ms, pause: 20ms"),
    );
    let mut running = w
        .command(&["execute", "start.yaml", "--yes", "--now", "--run-id", "cut"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let there = psql(&db, "SELECT to_regclass('runbook_online') IS NOT NULL") == "t";
        let done = if there {
            psql(&db, "SELECT coalesce(max(rows), 0) FROM runbook_online")
        } else {
            String::new()
        };
        if done.parse::<i64>().unwrap_or(0) > 5000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backfill did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // `runbook status` shows the backfill's progress (rows, rows/s, time to go).
    loop {
        let o = w.run(&["status", "cut", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        let progress = &v["steps"]["m"]["progress"];
        if o.stdout.contains("backfill of `orders`")
            && o.stdout.contains("to go")
            && progress["done"].as_u64().is_some_and(|d| d > 0)
        {
            // Journaled: `step_progress`, with how many of about how many, and when.
            assert_eq!(
                progress["what"], "rows of `orders` backfilled",
                "{progress}"
            );
            assert!(progress["total"].as_u64().unwrap() >= 100_000, "{progress}");
            assert!(progress["eta_ms"].as_i64().is_some(), "{progress}");
            let text = w.run(&["status", "cut"]).stdout;
            assert!(
                text.contains("progress: ") && text.contains("% ") || text.contains("%)"),
                "{text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress in status: {}",
            o.stdout
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    running.kill().unwrap();
    running.wait().unwrap();
    let part: i64 = psql(&db, "SELECT rows FROM runbook_online")
        .parse()
        .unwrap();
    assert!(part > 0 && part < 100_000, "{part}");
    // The step was in doubt; run again, it goes on from the cursor.
    let out = w.run(&["resume", "cut", "--retry"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let log = std::fs::read_to_string(w.path("state/logs/cut/m.log")).unwrap();
    assert!(log.contains("going on from its backfill"), "{log}");
    assert!(log.contains("rows/s"), "{log}");
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM orders WHERE total_cents IS DISTINCT FROM qty * price_cents"
        ),
        "0"
    );
    let s = w.status_json("cut");
    assert_eq!(
        s["steps"]["m"]["outputs"]["rows_backfilled"], 100_000,
        "{s}"
    );
    w.write("abort.yaml", &runbook(&db, "abort"));
    let out = w.run(&["execute", "abort.yaml", "--yes", "--now"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(before, schema_and_data(&db));
}

#[test]
fn a_long_transaction_holding_a_lock_makes_start_fail_fast_changing_nothing() {
    let w = World::sqlite();
    let db = database(&w, "locked");
    std::fs::create_dir_all(w.path("migrations")).unwrap();
    w.write("migrations/0001_order_totals.yaml", MIGRATION);
    let before = schema_and_data(&db);
    let mut holder = common::pg_tool("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-X",
            "-d",
            &db,
            "-c",
            "BEGIN; SELECT count(*) FROM orders; SELECT pg_sleep(30);",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while psql(
        &db,
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'orders' AND l.pid <> pg_backend_pid()",
    ) == "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was not taken"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    w.write(
        "start.yaml",
        &runbook(&db, "start").replace("batch_time: 20ms", "lock_timeout: 100ms, retries: 1"),
    );
    let began = std::time::Instant::now();
    let out = w.run(&["execute", "start.yaml", "--yes", "--now"]);
    let took = began.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("lock") && out.stdout.contains("nothing of it was changed"),
        "{}",
        out.stdout
    );
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
    assert_eq!(before, schema_and_data(&db));
}

#[test]
fn a_classic_step_stops_before_an_online_migration_and_refuses_to_cross_one() {
    let w = World::sqlite();
    let db = database(&w, "classic");
    std::fs::create_dir_all(w.path("migrations")).unwrap();
    w.write(
        "migrations/0001_notes.up.sql",
        "ALTER TABLE orders ADD COLUMN note text;",
    );
    w.write(
        "migrations/0001_notes.down.sql",
        "ALTER TABLE orders DROP COLUMN note;",
    );
    w.write("migrations/0002_order_totals.yaml", MIGRATION);
    let classic = format!(
        "runbook: classic\nsteps:\n  - id: m\n    kind: migrate\n    with: {{ database: \"{}\", dir: migrations }}\n",
        &*db
    );
    w.write("classic.yaml", &classic);
    let out = w.run(&[
        "execute",
        "classic.yaml",
        "--yes",
        "--now",
        "--log-format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("\"to_version\":1"), "{}", out.stdout);
    w.write(
        "to.yaml",
        &classic.replace("dir: migrations", "dir: migrations, to: 2"),
    );
    let out = w.run(&["execute", "to.yaml", "--yes", "--now"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stdout
            .contains("is an online migration: apply it with `phase: start`"),
        "{}",
        out.stdout
    );
    // `to` with `phase` is refused when the file is checked.
    w.write(
        "both.yaml",
        &classic.replace("dir: migrations", "dir: migrations, phase: start, to: 2"),
    );
    let out = w.run(&["validate", "both.yaml"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("`to` is for classic migrations"),
        "{}",
        out.stderr
    );
    // Start goes on from version 1: the online migration is version 2.
    w.write(
        "start.yaml",
        &classic.replace("dir: migrations", "dir: migrations, phase: start"),
    );
    let out = w.run(&[
        "execute",
        "start.yaml",
        "--yes",
        "--now",
        "--log-format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("\"new_schema\":\"public_v2\""),
        "{}",
        out.stdout
    );
    assert_eq!(
        psql(
            &db,
            "SET search_path = public_v1; SELECT count(*) > 0 FROM orders WHERE note IS NULL"
        ),
        "t"
    );
}
