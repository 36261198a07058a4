//! The PostgreSQL example's failure drill (`runbooks/postgres-drill.yaml`), through the
//! real binary on the local server: three tenant databases backed up as a restore
//! checkpoint, migrated, the application installed, the smoke test failed on purpose.
//! After the rollback every tenant's schema and data are what they were before and the
//! application file is back; the same after the runner is killed during the restore
//! (and during an undo) and resumed.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::psql;
use common::world::World;

static N: AtomicUsize = AtomicUsize::new(0);

/// Three tenant databases named `PREFIX...`, with accounts and orders.
struct Tenants {
    prefix: String,
    names: Vec<String>,
}

impl Tenants {
    fn new() -> Tenants {
        // The store's database is made first: it starts the server when it is down.
        let prefix = format!(
            "drill_{}_{}_",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut names = Vec::new();
        for (i, t) in ["acme", "globex", "initech"].iter().enumerate() {
            let name = format!("{prefix}{t}");
            psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
            psql("postgres", &format!("CREATE DATABASE {name}"));
            psql(
                &name,
                &format!(
                    "create table accounts (id serial primary key, name text not null);
                     create table orders (id serial primary key, account_id int references accounts,
                                          qty int not null, price_cents int not null);
                     insert into accounts (name) select 'customer ' || g from generate_series(1, {n}) g;
                     insert into orders (account_id, qty, price_cents)
                       select 1 + g % {n}, g % 7 + 1, 100 + g from generate_series(1, {m}) g;",
                    n = 20 + i,
                    m = 500 + 10 * i
                ),
            );
            names.push(name);
        }
        Tenants { prefix, names }
    }

    /// Each tenant's schema (as `pg_dump --schema-only` prints it, without the
    /// migrations' tracking table) and a checksum of every table's rows.
    fn snapshot(&self) -> Vec<(String, String)> {
        self.names
            .iter()
            .map(|db| {
                let out = crate::common::pg_tool("pg_dump")
                    .args(["-h", "127.0.0.1", "-U", "postgres", "--schema-only"])
                    .args(["--exclude-table=runbook_migrations", "--no-owner", db])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                let schema: String = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    // pg_dump's per-dump random key, and comments.
                    .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
                    .filter(|l| !l.starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let tables = psql(
                    db,
                    "select string_agg(tablename, ',' order by tablename) from pg_tables where schemaname = 'public'",
                );
                let mut sums = String::new();
                for t in tables.split(',').filter(|t| !t.is_empty()) {
                    sums.push_str(&psql(
                        db,
                        &format!(
                            "select '{t}:' || count(*) || ':' || md5(coalesce(string_agg(x::text, '|' order by x::text), '')) from {t} x"
                        ),
                    ));
                    sums.push('\n');
                }
                (schema, sums)
            })
            .collect()
    }
}

impl Drop for Tenants {
    fn drop(&mut self) {
        for n in &self.names {
            common::world::drop_database_later(n);
        }
    }
}

fn drill_args<'a>(w: &World, t: &'a Tenants, run: &'a str, extra: &[&'a str]) -> Vec<String> {
    let root = common::root();
    let mut args: Vec<String> = vec![
        "execute".into(),
        root.join("runbooks/postgres-drill.yaml")
            .display()
            .to_string(),
        "--now".into(),
        "--yes".into(),
        "--run-id".into(),
        run.into(),
        "--var".into(),
        format!("prefix={}", t.prefix),
        "--var".into(),
        format!(
            "migrations={}",
            root.join("runbooks/migrations/tenant").display()
        ),
        "--var".into(),
        format!("app_dir={}", w.path("app").display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn app_version(w: &World) -> String {
    std::fs::read_to_string(w.path("app/version")).unwrap_or_default()
}

#[test]
fn the_failure_drill_puts_every_tenant_and_the_application_back() {
    let w = World::sqlite();
    let t = Tenants::new();
    std::fs::create_dir_all(w.path("app")).unwrap();
    w.write("app/version", "1\n");
    let before = t.snapshot();
    let args = drill_args(&w, &t, "drill", &["--var", "drill=fail"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = w.run(&args);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("the service is restored"),
        "{}",
        out.stdout
    );
    assert_eq!(t.snapshot(), before, "every tenant is as it was");
    assert_eq!(app_version(&w), "1\n", "the application is back");
    // The same run without the drill really changes all of it.
    let args = drill_args(&w, &t, "real", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = w.run(&args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_ne!(t.snapshot(), before);
    assert_eq!(app_version(&w), "2\n");
}

/// Waits until `path` exists.
fn wait_for(path: &Path, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the runner ended before {} appeared",
            path.display()
        );
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The journal number of `install`'s undo starting, from a clean run of the drill (the
/// number of events before it does not depend on timing).
fn seq_of_install_undo() -> i64 {
    let w = World::sqlite();
    let t = Tenants::new();
    std::fs::create_dir_all(w.path("app")).unwrap();
    w.write("app/version", "1\n");
    let args = drill_args(
        &w,
        &t,
        "clean",
        &["--var", "drill=fail", "--log-format", "json"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = w.run(&args);
    assert_eq!(out.code, 3, "{}", out.stderr);
    common::world::seqs_of(&out.stdout, "step_rollback_started", Some("install"))[0]
}

#[test]
fn a_runner_killed_during_the_restore_or_an_undo_ends_the_same_after_resume() {
    let install_undo = seq_of_install_undo();
    // The two kills side by side, each in its own world with its own tenants.
    std::thread::scope(|scope| {
        let kills = ["restore", "undo"]
            .map(|kill_in| scope.spawn(move || killed_during_the_rollback(kill_in, install_undo)));
        for k in kills {
            k.join().expect("a kill during the rollback");
        }
    });
}

/// A drill run killed in its restore (`restore`) or right after the undo of `install`
/// is recorded (`undo`, at journal event `install_undo`), then resumed to its end.
fn killed_during_the_rollback(kill_in: &str, install_undo: i64) {
    let w = World::sqlite();
    let t = Tenants::new();
    std::fs::create_dir_all(w.path("app")).unwrap();
    w.write("app/version", "1\n");
    let before = t.snapshot();
    let args = drill_args(&w, &t, "k", &["--var", "drill=fail"]);
    let mut cmd = w.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    if kill_in == "undo" {
        // Killed as a power cut would, right after the undo of `install` is recorded.
        cmd.env("RUNBOOK_TEST_KILL_AFTER_EVENT", install_undo.to_string());
    }
    let mut runner = cmd.spawn().unwrap();
    if kill_in == "restore" {
        // The tenants are restored from the last one down: killed once the first
        // restore is done and the next one is under way.
        // Each tenant's files are named by its database.
        let second = &t.names[1];
        wait_for(
            &w.path(&format!("state/logs/k/backup.{second}.rollback.log")),
            &mut runner,
        );
        runner.kill().unwrap();
    }
    let status = runner.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{kill_in}"
    );
    let status = w.status_json("k");
    assert_eq!(status["status"], "rolling_back", "{kill_in}: {status}");
    // The undo in doubt is not repeated by itself; --retry runs it again.
    let ask = w.run(&["resume", "k"]);
    assert_eq!(ask.code, 4, "{kill_in}: {}\n{}", ask.stdout, ask.stderr);
    let mut retry = w.run(&["resume", "k", "--retry"]);
    // Commands the killed runner started may still be finishing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while retry.code == 4 && retry.stderr.contains("still running") {
        assert!(Instant::now() < deadline, "{}", retry.stderr);
        std::thread::sleep(Duration::from_millis(200));
        retry = w.run(&["resume", "k", "--retry"]);
    }
    assert_eq!(
        retry.code, 3,
        "{kill_in}: {}\n{}",
        retry.stdout, retry.stderr
    );
    assert_eq!(t.snapshot(), before, "{kill_in}: every tenant is as it was");
    assert_eq!(app_version(&w), "1\n", "{kill_in}: the application is back");
}
