//! The store under trouble, through the real binary: PostgreSQL connections dropped and
//! refused while a run goes on (and the runner killed while it reconnects); damaged
//! journals on the status page and in the CLI; store URLs read one way, and `mode=ro`.

use crate::both_stores;
use crate::common;

use std::io::{Read, Write};
use std::time::Duration;

use common::psql;
use common::spawned::Spawned;
use common::world::World;

both_stores!(
    a_damaged_run_is_shown_as_unknown_and_hides_no_other_run,
    a_gap_and_a_newer_schema_are_refused_with_the_store_named,
    a_read_only_store_serves_reads_and_refuses_every_write,
);

/// A SQL statement on the world's store (the `sqlite3` client, or `psql`).
fn sql(w: &World, statement: &str) -> String {
    match w.store.strip_prefix("sqlite://") {
        Some(path) => {
            let out = std::process::Command::new("sqlite3")
                .arg(path)
                .arg(statement)
                .output()
                .expect("the sqlite3 client runs");
            assert!(
                out.status.success(),
                "{statement}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
        None => psql(&w.store, statement),
    }
}

/// The database name of a PostgreSQL world.
fn db_name(w: &World) -> String {
    w.store.rsplit('/').next().unwrap().to_owned()
}

/// The numbers of a run's journal, in order.
fn seqs(w: &World, run: &str) -> Vec<i64> {
    sql(
        w,
        &format!("SELECT seq FROM events WHERE run_id = '{run}' ORDER BY seq"),
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect()
}

/// Steps that each write their marker, and take a while.
fn slow_steps(n: usize, sleep: &str) -> String {
    let mut rb = String::from("runbook: slow\nsteps:\n");
    for i in 1..=n {
        rb.push_str(&format!(
            "  - {{ id: s{i}, kind: patch, run: {{ shell: 'echo s{i} >> markers; sleep {sleep}' }} }}\n"
        ));
    }
    rb
}

/// Terminates every connection to the world's database but the one asking.
fn drop_connections(w: &World) {
    psql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db_name(w)
        ),
    );
}

/// Makes the world's database refuse new connections (and drops those it has), or
/// accept them again.
fn refuse_connections(w: &World, refuse: bool) {
    psql(
        "postgres",
        &format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {}",
            db_name(w),
            !refuse
        ),
    );
    if refuse {
        drop_connections(w);
    }
}

/// Every step ran once, in order, and the journal goes 1, 2, 3, ... without a gap.
fn ran_once_without_gaps(w: &World, run: &str, steps: usize) {
    let want: Vec<String> = (1..=steps).map(|i| format!("s{i}")).collect();
    assert_eq!(w.markers(), want);
    let seqs = seqs(w, run);
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    for i in 1..=steps {
        let started = sql(
            w,
            &format!(
                "SELECT count(*) FROM events WHERE run_id = '{run}' AND kind = 'step_started' AND body LIKE '%\"step\":\"s{i}\"%'"
            ),
        );
        assert_eq!(started, "1", "step s{i} started once in the journal");
    }
}

/// The connection to the store is dropped five times while steps run, the answer to
/// one commit is lost, and the database refuses all connections for 4 s: the runner
/// reconnects and reads back what it cannot know, the run completes, every step ran
/// exactly once and the journal has no gap.
#[test]
fn dropped_and_refused_connections_do_not_end_the_run_or_repeat_a_step() {
    let w = World::postgres();
    w.write("rb.yaml", &slow_steps(8, "0.5"));
    let mut runner = Spawned::spawn(
        w.command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "r"])
            .env("RUNBOOK_TEST_LOSE_COMMIT", "4"),
    );
    for i in 1..=5 {
        let marker = format!("s{i}");
        runner.wait_until(&format!("step {marker}"), || w.markers().contains(&marker));
        drop_connections(&w);
        std::thread::sleep(Duration::from_millis(150));
        drop_connections(&w);
    }
    runner.wait_until("step s6", || w.markers().contains(&"s6".to_owned()));
    refuse_connections(&w, true);
    std::thread::sleep(Duration::from_secs(4));
    refuse_connections(&w, false);
    let (code, stderr) = runner.ends();
    assert_eq!(code, Some(0), "{stderr}");
    ran_once_without_gaps(&w, "r", 8);
    assert_eq!(w.status_json("r")["status"], "completed");
}

/// A runner killed (SIGKILL) while it waits for its database to take connections again
/// leaves the step it ran in doubt; resumed, nothing runs twice.
#[test]
fn a_runner_killed_while_reconnecting_is_resumed_without_a_step_running_twice() {
    let w = World::postgres();
    w.write("rb.yaml", &slow_steps(4, "1"));
    let mut runner =
        Spawned::spawn(&mut w.command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "k"]));
    runner.wait_until("step s2", || w.markers().contains(&"s2".to_owned()));
    refuse_connections(&w, true);
    // s2's shell ends after a second; its outcome cannot be recorded.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(w.markers(), ["s1", "s2"]);
    assert!(matches!(runner.0.try_wait(), Ok(None)), "the runner waits");
    runner.0.kill().unwrap();
    runner.0.wait().unwrap();
    refuse_connections(&w, false);
    // s2 is in doubt: resume asks, and `--skip` goes on from s3.
    let asked = w.run(&["resume", "k"]);
    assert_eq!(asked.code, 4, "{}{}", asked.stdout, asked.stderr);
    let resumed = w
        .command(&["resume", "k", "--skip"])
        .env("RUNBOOK_TEST_STALE_AFTER_MS", "0")
        .output()
        .unwrap();
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(w.markers(), ["s1", "s2", "s3", "s4"]);
    let seqs = seqs(&w, "k");
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
}

/// `GET path` on a server at `addr`: the status and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `runbook serve` on `store`, once it answers.
fn serve_on(w: &World, store: &str) -> (Spawned, String) {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut server = Spawned::spawn(
        w.command(&["serve", "--addr", &addr])
            .env("RUNBOOK_STORE", store),
    );
    server.wait_until("the server to listen", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    (server, addr)
}

fn serve(w: &World) -> (Spawned, String) {
    serve_on(w, &w.store)
}

const OLD: &str =
    "runbook: old\ntitle: Old change\nsteps:\n  - { id: a, kind: patch, run: { shell: 'true' } }\n";

const CLOSING: &str = "runbook: shop
title: Shop upgrade
status_page: { components: [web shop] }
steps:
  - { id: close, kind: close, title: Close the shop }
  - { id: work, kind: patch, title: Work, run: { shell: 'true' } }
  - { id: more, kind: patch, title: More work, run: { shell: 'true' } }
";

/// One damaged event in a run: the page shows that run with its status unknown (a
/// major incident, its components in a major outage), keeps showing the others, and
/// `/api/v1/maintenance` says closed when the run's last readable state was closed,
/// `null` (not open) when it cannot know. `runbook status` refuses the run, naming the
/// store and the event.
fn a_damaged_run_is_shown_as_unknown_and_hides_no_other_run(w: &World) {
    w.write("old.yaml", OLD);
    w.write("shop.yaml", CLOSING);
    assert_eq!(w.execute("old.yaml", "old-1").code, 0);
    // The shop run is killed with the shop closed (event 5): live, as far as anyone
    // can tell.
    let killed = common::output_of(
        w.command(&[
            "execute",
            "shop.yaml",
            "--yes",
            "--now",
            "--run-id",
            "shop-1",
        ])
        .env("RUNBOOK_TEST_KILL_AFTER_EVENT", "6"),
    );
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    let last: i64 = sql(w, "SELECT MAX(seq) FROM events WHERE run_id = 'shop-1'")
        .parse()
        .unwrap();
    sql(
        w,
        &format!(
            "UPDATE events SET body = '{{\"type\": 12' WHERE run_id = 'shop-1' AND seq = {last}"
        ),
    );
    let status = w.run(&["status", "shop-1"]);
    assert_eq!(status.code, 1, "{}", status.stdout);
    assert!(
        status.stderr.contains(&format!(
            "the journal of run `shop-1` in the store `{}` is damaged at event {last}",
            w.store
        )),
        "{}",
        status.stderr
    );
    {
        let (_server, addr) = serve(w);
        let v1 = get_json(&addr, "/api/v1/maintenance");
        assert_eq!(v1["closed"], true, "{v1}");
        let st = get_json(&addr, "/api/v2/status.json");
        assert_eq!(st["status"]["indicator"], "major", "{st}");
        assert_eq!(st["status"]["description"], "Status Unknown", "{st}");
        let summary = get_json(&addr, "/api/v2/summary.json");
        assert_eq!(
            summary["components"][0]["status"], "major_outage",
            "{summary}"
        );
        let all = get_json(&addr, "/api/v2/scheduled-maintenances.json");
        let ids: Vec<&str> = all["scheduled_maintenances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["shop-1", "old-1"], "{all}");
        let (code, page) = get(&addr, "/maintenances/shop-1");
        assert_eq!(code, 200);
        assert!(page.contains("Status unknown"), "{page}");
        let (_, home) = get(&addr, "/");
        assert!(!home.contains("All Systems Operational"), "{home}");
    }
    // Damaged right after it started, before anything closed: nobody can say whether
    // the service is open.
    sql(
        w,
        "UPDATE events SET body = 'not json' WHERE run_id = 'shop-1' AND seq = 2",
    );
    let (_server, addr) = serve(w);
    let v1 = get_json(&addr, "/api/v1/maintenance");
    assert_eq!(v1["closed"], serde_json::Value::Null, "{v1}");
    assert_eq!(v1["status"], "unknown", "{v1}");
    assert_eq!(v1["maintenance"]["id"], "shop-1", "{v1}");
    let st = get_json(&addr, "/api/v2/status.json");
    assert_eq!(st["status"]["indicator"], "major", "{st}");
    let all = get_json(&addr, "/api/v2/scheduled-maintenances.json");
    assert_eq!(
        all["scheduled_maintenances"].as_array().unwrap().len(),
        2,
        "{all}"
    );
}

/// A number missing from a run's journal and a store of a newer schema are refused by
/// every command, exit 1, naming the store and what is wrong.
fn a_gap_and_a_newer_schema_are_refused_with_the_store_named(w: &World) {
    w.write("old.yaml", OLD);
    assert_eq!(w.execute("old.yaml", "g").code, 0);
    sql(w, "DELETE FROM events WHERE run_id = 'g' AND seq = 3");
    let o = w.run(&["status", "g"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains(&format!(
            "the journal of run `g` in the store `{}` is damaged at event 3: event 3 is missing (the journal goes from 2 to 4)",
            w.store
        )),
        "{}",
        o.stderr
    );
    let r = w.run(&["report", "g"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("event 3 is missing"), "{}", r.stderr);

    sql(w, "INSERT INTO runbook_schema (version) VALUES (99)");
    for args in [
        &["status", "g"][..],
        &["runs"],
        &["execute", "old.yaml", "--yes", "--now"],
    ] {
        let o = w.run(args);
        assert_eq!(o.code, 1, "{args:?}: {}", o.stdout);
        assert!(
            o.stderr.contains(&format!("cannot open the store `{}`: its schema is version 99, newer than this runbook program knows", w.store)),
            "{args:?}: {}",
            o.stderr
        );
    }
}

/// A store file of zero bytes is refused, not made into a new empty store.
#[test]
fn an_empty_store_file_is_refused() {
    let w = World::sqlite();
    w.write("old.yaml", OLD);
    assert_eq!(w.execute("old.yaml", "e").code, 0);
    let file = w.store.strip_prefix("sqlite://").unwrap().to_owned();
    std::fs::write(&file, b"").unwrap();
    let _ = std::fs::remove_file(format!("{file}-wal"));
    let _ = std::fs::remove_file(format!("{file}-shm"));
    for args in [
        &["runs"][..],
        &["status", "e"],
        &["execute", "old.yaml", "--yes", "--now"],
    ] {
        let o = w.run(args);
        assert_eq!(o.code, 1, "{args:?}: {}", o.stdout);
        assert!(
            o.stderr.contains(&format!(
                "the store `{}` is damaged: `{file}` is empty (0 bytes)",
                w.store
            )),
            "{args:?}: {}",
            o.stderr
        );
    }
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
}

/// A store truncated under a live runner stops it with a clear error; the steps after
/// run not.
#[test]
fn a_store_truncated_under_a_live_runner_stops_it() {
    let w = World::sqlite();
    w.write("rb.yaml", &slow_steps(4, "1"));
    let mut runner =
        Spawned::spawn(&mut w.command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "t"]));
    runner.wait_until("step s2", || w.markers().contains(&"s2".to_owned()));
    let file = w.store.strip_prefix("sqlite://").unwrap().to_owned();
    for f in [file.clone(), format!("{file}-wal")] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    let (code, stderr) = runner.ends();
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("the store `{}` is damaged", w.store)),
        "{stderr}"
    );
    assert_eq!(w.markers(), ["s1", "s2"]);
}

/// `sqlite://%2e%2e/...` is one place: the journal and the step logs are both in the
/// decoded directory.
#[test]
fn a_percent_encoded_store_path_keeps_the_journal_and_the_logs_together() {
    let w = World::sqlite();
    std::fs::create_dir(w.path("sub")).unwrap();
    w.write(
        "sub/rb.yaml",
        "runbook: enc\nsteps:\n  - { id: a, kind: patch, run: { shell: 'echo said-so' } }\n",
    );
    let url = "sqlite://%2e%2e/st/state.db";
    let o = common::output_of(
        w.command(&[
            "execute", "rb.yaml", "--yes", "--now", "--run-id", "p", "--store", url,
        ])
        .current_dir(w.path("sub")),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(w.path("st/state.db").is_file());
    assert!(!w.path("sub/%2e%2e").exists());
    let logs: Vec<_> = std::fs::read_dir(w.path("st/logs/p")).unwrap().collect();
    assert!(!logs.is_empty());
    let s = common::output_of(
        w.command(&["status", "p", "--store", url])
            .current_dir(w.path("sub")),
    );
    assert_eq!(s.code, 0, "{}", s.stderr);
    // Parameters the store does not know are refused, not ignored.
    let bad = w.run(&["runs", "--store", "sqlite://x.db?cache=shared"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("unknown parameter `cache`"),
        "{}",
        bad.stderr
    );
}

/// `mode=ro`: `status`, `runs`, `report` and `serve` read the store; `execute`,
/// `resume`, `approve`, `abort` and `schedule` are refused (exit 1) and write nothing.
fn a_read_only_store_serves_reads_and_refuses_every_write(w: &World) {
    w.write("old.yaml", OLD);
    w.write(
        "sched.yaml",
        "runbook: sched\ntitle: Later\nwindow: { start: '2099-01-01T00:00:00Z', duration: 1h }\nsteps:\n  - { id: a, kind: patch, run: { shell: 'true' } }\n",
    );
    assert_eq!(w.execute("old.yaml", "ro-1").code, 0);
    let before = sql(w, "SELECT count(*) FROM events");
    let ro = format!("{}?mode=ro", w.store);
    let run = |args: &[&str]| common::output_of(w.command(args).env("RUNBOOK_STORE", &ro));
    for args in [&["status", "ro-1"][..], &["runs"], &["report", "ro-1"]] {
        let o = run(args);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
    }
    for args in [
        &["execute", "old.yaml", "--yes", "--now", "--run-id", "ro-2"][..],
        &["resume", "ro-1"],
        &["approve", "ro-1", "a"],
        &["abort", "ro-1"],
        &["schedule", "sched.yaml"],
    ] {
        let o = run(args);
        assert_eq!(o.code, 1, "{args:?}: {}{}", o.stdout, o.stderr);
        assert!(
            o.stderr
                .contains(&format!("the store `{ro}` is read-only (mode=ro)")),
            "{args:?}: {}",
            o.stderr
        );
    }
    assert_eq!(sql(w, "SELECT count(*) FROM events"), before);
    let (_server, addr) = serve_on(w, &ro);
    let all = get_json(&addr, "/api/v2/scheduled-maintenances.json");
    assert_eq!(all["scheduled_maintenances"][0]["id"], "ro-1", "{all}");
    assert_eq!(sql(w, "SELECT count(*) FROM events"), before);
}
