//! The engine's actions and checks through the real binary: HTTP against a real server on
//! a loopback port, SQL against a real SQLite file, shell timeouts, `wait` steps,
//! approval timeouts, secret masking, `--dry-run` and `--log-format json`.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::world::World;

/// A small HTTP/1.1 server on 127.0.0.1 for the checks to talk to. It answers:
/// `GET /health` 200 with a JSON body, `GET /slow` after 400 ms, `GET /down` 503,
/// `POST /echo` 200 with `{"got": BODY, "auth": AUTHORIZATION}`. Returns its base URL.
fn http_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                let mut length = 0;
                let mut auth = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "authorization" => auth = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, text) = match path {
                    "/health" => (200, r#"{"status":"ok","version":"3.2"}"#.to_owned()),
                    "/slow" => {
                        std::thread::sleep(Duration::from_millis(400));
                        (200, "slow but fine".to_owned())
                    }
                    "/down" => (503, "down for maintenance".to_owned()),
                    "/echo" => (
                        200,
                        serde_json::json!({ "got": body, "auth": auth }).to_string(),
                    ),
                    _ => (404, "not found".to_owned()),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    base
}

#[test]
fn http_actions_and_checks_talk_to_a_real_server() {
    let w = World::sqlite();
    let base = http_server();
    w.write(
        "rb.yaml",
        &format!(
            "runbook: http
vars:
  base: {base}
  release: \"3.2\"
steps:
  - id: ready
    kind: patch
    preconditions:
      - http: {{ url: \"{{{{vars.base}}}}/health\", expect_json: {{ /status: ok }} }}
        message: the application answers
    run:
      http:
        url: \"{{{{vars.base}}}}/echo\"
        method: post
        headers: {{ Authorization: \"Bearer t-{{{{vars.release}}}}\" }}
        body: \"release {{{{vars.release}}}}\"
        expect_contains: release
        expect_json: {{ /got: \"release 3.2\" }}
  - id: use-output
    kind: patch
    run: {{ shell: \"echo {{{{steps.ready.outputs.got}}}} {{{{steps.ready.outputs.auth}}}} {{{{steps.ready.outputs.http_status}}}} >> markers\" }}
  - id: smoke
    kind: test
    checks:
      - http: {{ url: \"{{{{vars.base}}}}/health\", expect_status: 200, within: 5s, expect_json: {{ /version: \"3.2\" }} }}
      - http: {{ url: \"{{{{vars.base}}}}/slow\", expect_contains: fine }}
"
        ),
    );
    let out = w.execute("rb.yaml", "h1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.markers(), ["release 3.2 Bearer t-3.2 200"]);
    let s = w.status_json("h1");
    assert_eq!(s["steps"]["ready"]["outputs"]["got"], "release 3.2");
    assert_eq!(s["steps"]["smoke"]["status"], "succeeded");
    // The request and response are in the step's log.
    let log = std::fs::read_to_string(w.path("state/logs/h1/ready.log")).unwrap();
    assert!(
        log.contains(&format!("http: POST {base}/echo -> 200")),
        "{log}"
    );
}

/// Each failing expectation says what it saw.
#[test]
fn failing_http_checks_say_what_they_saw() {
    let w = World::sqlite();
    let base = http_server();
    let closed = {
        // A port nobody listens on: bound, then released.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (
            format!("{{ url: \"{base}/down\" }}"),
            format!("GET {base}/down: status 503, expected 200"),
        ),
        (
            format!("{{ url: \"{base}/slow\", within: 100ms }}"),
            "more than the 100ms allowed".to_owned(),
        ),
        (
            format!("{{ url: \"{base}/slow\", timeout: 100ms }}"),
            format!("GET {base}/slow: no response within 100ms"),
        ),
        (
            format!("{{ url: \"{base}/health\", expect_contains: sad }}"),
            "the response does not contain `sad`".to_owned(),
        ),
        (
            format!("{{ url: \"{base}/health\", expect_json: {{ /version: \"4.0\" }} }}"),
            "`/version` is \"3.2\", expected \"4.0\"".to_owned(),
        ),
        (
            format!("{{ url: \"{base}/health\", expect_json: {{ /missing: 1 }} }}"),
            "the response has no `/missing`".to_owned(),
        ),
        (
            format!("{{ url: \"{base}/slow\", expect_json: {{ /a: 1 }} }}"),
            "the response is not JSON".to_owned(),
        ),
        (
            format!("{{ url: \"http://127.0.0.1:{closed}/\" }}"),
            format!("GET http://127.0.0.1:{closed}/: error sending request"),
        ),
    ];
    for (n, (check, want)) in cases.iter().enumerate() {
        w.write(
            "rb.yaml",
            &format!(
                "runbook: http-fail\nsteps:\n  - id: smoke\n    kind: test\n    on_failure: abort\n    checks:\n      - http: {check}\n"
            ),
        );
        let run = format!("f{n}");
        let out = w.execute("rb.yaml", &run);
        assert_eq!(out.code, 4, "{check}\n{}\n{}", out.stdout, out.stderr);
        let error = w.status_json(&run)["steps"]["smoke"]["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            error.contains(want.as_str()),
            "{check}: got `{error}`, want `{want}`"
        );
    }
}

#[test]
fn sql_actions_run_in_one_transaction_and_give_outputs() {
    let w = World::sqlite();
    // `mode=rwc` creates the file; without it a missing database is an error.
    let db = format!("sqlite://{}?mode=rwc", w.path("app.db").display());
    w.write(
        "rb.yaml",
        &format!(
            "runbook: sql
vars:
  db: {db}
steps:
  - id: schema
    kind: patch
    run:
      sql: |
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        INSERT INTO items (name) VALUES ('a'), ('b'), ('c');
      database: \"{{{{vars.db}}}}\"
  - id: count
    kind: verify
    run: {{ sql: \"SELECT COUNT(*) AS n, MAX(name) AS last FROM items\", database: \"{{{{vars.db}}}}\" }}
    checks:
      - sql: \"SELECT COUNT(*) FROM items\"
        database: \"{{{{vars.db}}}}\"
        expect: 3
  - id: report
    kind: patch
    run: {{ shell: \"echo {{{{steps.count.outputs.n}}}} {{{{steps.count.outputs.last}}}} >> markers\" }}
  - id: half
    kind: patch
    on_failure: continue
    run:
      sql: |
        INSERT INTO items (name) VALUES ('d');
        INSERT INTO items (name) VALUES (NULL);
      database: \"{{{{vars.db}}}}\"
  - id: after
    kind: test
    checks:
      - sql: \"SELECT COUNT(*) FROM items\"
        database: \"{{{{vars.db}}}}\"
        expect: 3
        message: the half-done insert was rolled back
"
        ),
    );
    let out = w.execute("rb.yaml", "s1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.markers(), ["3 c"]);
    let s = w.status_json("s1");
    assert_eq!(s["steps"]["count"]["outputs"]["n"], 3);
    assert_eq!(s["steps"]["half"]["status"], "failed");
    assert!(
        s["steps"]["half"]["error"]
            .as_str()
            .unwrap()
            .contains("NOT NULL"),
        "{}",
        s["steps"]["half"]
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: timeout
steps:
  - id: hang
    kind: patch
    timeout: 1s
    on_failure: abort
    run: { shell: \"(sleep 2; echo orphan >> markers) & sleep 30\" }
",
    );
    let t = Instant::now();
    let out = w.execute("rb.yaml", "t1");
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the step was not stopped"
    );
    assert_eq!(w.status_json("t1")["steps"]["hang"]["status"], "timed_out");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        w.markers().is_empty(),
        "a child of the timed-out step lived on"
    );
}

#[test]
fn a_wait_step_polls_until_its_condition_holds() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: wait
steps:
  - id: start-drain
    kind: patch
    run: { shell: \"(sleep 1; touch drained) > /dev/null 2>&1 &\" }
  - id: drained
    kind: wait
    interval: 100ms
    timeout: 30s
    until:
      - shell: test -f drained
  - id: after
    kind: patch
    run: { shell: \"echo after >> markers\" }
  - id: never
    kind: wait
    interval: 100ms
    timeout: 500ms
    on_failure: abort
    until:
      - shell: test -f never-there
",
    );
    let out = w.execute("rb.yaml", "w1");
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("w1");
    assert_eq!(s["steps"]["drained"]["status"], "succeeded");
    assert_eq!(s["steps"]["never"]["status"], "timed_out");
    assert_eq!(w.markers(), ["after"]);
}

#[test]
fn preconditions_wait_then_fail_with_their_message() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: pre
steps:
  - id: later
    kind: patch
    run: { shell: \"(sleep 1; touch ready) > /dev/null 2>&1 &\" }
  - id: waits
    kind: patch
    wait_for: 30s
    preconditions:
      - shell: test -f ready
    run: { shell: \"echo waited >> markers\" }
  - id: gives-up
    kind: patch
    on_failure: abort
    preconditions:
      - shell: test -f never-there
        message: the replica has caught up
    run: { shell: \"echo never >> markers\" }
",
    );
    let out = w.execute("rb.yaml", "p1");
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.markers(), ["waited"]);
    let s = w.status_json("p1");
    let error = s["steps"]["gives-up"]["error"].as_str().unwrap();
    assert!(error.starts_with("the replica has caught up: "), "{error}");
}

#[test]
fn approval_timeouts_follow_on_timeout() {
    let w = World::sqlite();
    let runbook = |on_timeout: &str| {
        format!(
            "runbook: approve-timeout
steps:
  - id: snap
    kind: patch
    checkpoint: true
    run: {{ shell: \"echo snap >> markers\" }}
  - id: change
    kind: patch
    run: {{ shell: \"echo change >> markers\" }}
    rollback: {{ shell: \"echo undo >> markers\" }}
  - id: go
    kind: approve
    timeout: 500ms
    {on_timeout}
  - id: after
    kind: patch
    run: {{ shell: \"echo after >> markers\" }}
"
        )
    };
    w.write("rb.yaml", &runbook("on_timeout: approve"));
    let out = w.execute("rb.yaml", "yes");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("yes");
    assert_eq!(s["steps"]["go"]["outputs"]["decision"], "approved");
    assert_eq!(s["steps"]["go"]["outputs"]["by"], "timeout");
    assert_eq!(w.markers(), ["snap", "change", "after"]);
    std::fs::remove_file(w.path("markers")).unwrap();

    // The default: nobody said yes, so the step times out and the run rolls back.
    w.write("rb.yaml", &runbook(""));
    let out = w.execute("rb.yaml", "no");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(w.status_json("no")["steps"]["go"]["status"], "timed_out");
    assert_eq!(w.markers(), ["snap", "change", "undo"]);
}

#[test]
fn on_timeout_is_only_for_approve_steps_with_a_timeout() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: bad\nsteps:\n  - id: go\n    kind: approve\n    on_timeout: approve\n  - id: p\n    kind: patch\n    timeout: 1s\n    on_timeout: approve\n    run: { shell: 'true' }\n",
    );
    let out = w.execute("rb.yaml", "x");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("error: `on_timeout` needs a `timeout` to wait for\n --> rb.yaml:5:5"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("error: `on_timeout` belongs to `approve` steps\n --> rb.yaml:9:5"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "", "nothing ran, not even a run id");
}

/// A secret's value appears in no output, log, journal event or error.
#[test]
fn secrets_are_masked_everywhere() {
    let w = World::sqlite();
    let secret = "hunter2-s3cr3t";
    w.write(
        "rb.yaml",
        "runbook: secret
secrets: [DB_PASSWORD]
steps:
  - id: uses
    kind: patch
    run: { shell: \"echo password is $DB_PASSWORD; echo '{\\\"token\\\": \\\"'$DB_PASSWORD'\\\"}'\", env: { DB_PASSWORD: \"{{secrets.DB_PASSWORD}}\" } }
  - id: fails
    kind: patch
    on_failure: abort
    run: { shell: \"echo {{secrets.DB_PASSWORD}} >&2; exit 3; : {{secrets.DB_PASSWORD}}\" }
",
    );
    let out = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "m1"])
        .env("DB_PASSWORD", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let mut seen = String::from_utf8_lossy(&out.stdout).into_owned();
    seen += &String::from_utf8_lossy(&out.stderr);
    let status = w.run(&["status", "m1"]);
    seen += &status.stdout;
    let json = w.run(&["status", "m1", "--format", "json"]);
    seen += &json.stdout;
    for log in ["uses.log", "fails.log"] {
        seen += &std::fs::read_to_string(w.path(&format!("state/logs/m1/{log}"))).unwrap();
    }
    let journal = w
        .command(&[
            "execute",
            "rb.yaml",
            "--yes",
            "--now",
            "--run-id",
            "m2",
            "--log-format",
            "json",
        ])
        .env("DB_PASSWORD", secret)
        .output()
        .unwrap();
    seen += &String::from_utf8_lossy(&journal.stdout);
    assert!(seen.contains("password is ****"), "{seen}");
    assert!(seen.contains("\"token\": \"****\""), "{seen}");
    assert!(!seen.contains(secret), "the secret leaked:\n{seen}");
    let db = std::fs::read(w.path("state/state.db")).unwrap_or_default();
    let wal = std::fs::read(w.path("state/state.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes
                .windows(secret.len())
                .any(|win| win == secret.as_bytes()),
            "the secret is in the journal file"
        );
    }
}

#[test]
fn log_format_json_prints_one_event_per_line() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: json\nsteps:\n  - { id: one, kind: patch, run: { shell: 'echo one >> markers' } }\n",
    );
    let out = w.run(&[
        "execute",
        "rb.yaml",
        "--yes",
        "--now",
        "--run-id",
        "j1",
        "--log-format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some(r#"{"run":"j1"}"#));
    let events: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "published",
            "step_checking",
            "step_started",
            "published",
            "step_succeeded",
            "run_completed",
            "published"
        ]
    );
    assert!(events.iter().all(|e| e["run"] == "j1"));
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 8]);
}

#[test]
fn dry_run_evaluates_read_only_preconditions_and_changes_nothing() {
    let w = World::sqlite();
    let base = http_server();
    let db = w.path("app.db");
    let made = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .status();
    if !made.is_ok_and(|s| s.success()) {
        // No sqlite3 client: make the database through the engine instead.
        sqlite_made(
            &w,
            &format!("sqlite://{}", db.display()),
            "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        );
    }
    let before = std::fs::read(&db).unwrap();
    w.write(
        "rb.yaml",
        &format!(
            "runbook: dry
vars:
  db: sqlite://{db}
steps:
  - id: change
    kind: patch
    preconditions:
      - sql: \"select count(*) = 1 from t\"
        database: \"{{{{vars.db}}}}\"
      - sql: \"select count(*) = 5 from t\"
        database: \"{{{{vars.db}}}}\"
        message: five rows
      - sql: \"delete from t\"
        database: \"{{{{vars.db}}}}\"
      - http: {{ url: \"{base}/health\" }}
      - http: {{ url: \"{base}/down\" }}
      - http: {{ url: \"{base}/echo\", method: POST }}
      - shell: \"echo ran >> markers\"
    run: {{ shell: \"echo change >> markers\" }}
",
            db = db.display()
        ),
    );
    let out = w.run(&["execute", "rb.yaml", "--dry-run"]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Preconditions"))
        .collect();
    assert_eq!(
        lines,
        [
            "Preconditions, and the checks of tests before any change (read-only ones evaluated now; nothing was changed):",
            "  change           sql: select count(*) = 1 from t: holds",
            "  change           sql: select count(*) = 5 from t: DOES NOT HOLD: five rows: the query returned 0",
            "  change           sql: delete from t: not evaluated (it may change data)",
            &format!("  change           http: GET {base}/health: holds"),
            &format!(
                "  change           http: GET {base}/down: DOES NOT HOLD: GET {base}/down: status 503, expected 200"
            ),
            &format!("  change           http: POST {base}/echo: not evaluated (it is not a GET)"),
            "  change           shell: echo ran >> markers: not evaluated (a command may change things)",
            "",
            "2 precondition(s) or check(s) do not hold now.",
        ],
        "{}",
        out.stdout
    );
    assert!(w.markers().is_empty());
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(!w.path("state").exists(), "a dry run opens no store");
}

/// A run started on a terminal without `--yes` asks first; the answer `n` starts nothing.
#[test]
fn without_yes_a_terminal_is_asked_first() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: ask\nsteps:\n  - { id: one, kind: patch, expected: 1m, run: { shell: 'echo one >> markers' } }\n",
    );
    if std::process::Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("`script` (util-linux) is missing: no terminal to test with");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_runbook");
    let ask = |answer: &str, run: &str| {
        std::process::Command::new("script")
            .args([
                "-qec",
                &format!("{bin} execute rb.yaml --now --run-id {run}"),
                "/dev/null",
            ])
            .current_dir(w.dir.path())
            .env("RUNBOOK_STORE", &w.store)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map(|mut c| {
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(answer.as_bytes())
                    .unwrap();
                c.wait_with_output().unwrap()
            })
            .unwrap()
    };
    let no = ask("n\n", "no");
    let text = String::from_utf8_lossy(&no.stdout);
    assert!(text.contains("Start run `no` of `ask`? [y/N]"), "{text}");
    assert!(text.contains("Plan for `ask`"), "{text}");
    assert_eq!(no.status.code(), Some(1), "{text}");
    assert!(w.markers().is_empty());
    let yes = ask("y\n", "yes");
    let text = String::from_utf8_lossy(&yes.stdout);
    assert_eq!(yes.status.code(), Some(0), "{text}");
    assert_eq!(w.markers(), ["one"]);
}

/// `runbooks/sqlite-patch.yaml`, as the README tells a new user to run it: the failure
/// drill rolls the migration back, and the proof is that the next run can add the
/// column again and completes.
#[test]
fn the_sqlite_patch_example_rolls_back_then_completes() {
    let w = World::sqlite();
    let file = common::root().join("runbooks/sqlite-patch.yaml");
    let file = file.to_str().unwrap();
    let drill = w.run(&[
        "execute",
        file,
        "--now",
        "--yes",
        "--run-id",
        "drill",
        "--var",
        "drill=fail",
    ]);
    assert_eq!(drill.code, 3, "{}\n{}", drill.stdout, drill.stderr);
    let s = w.status_json("drill");
    assert_eq!(s["status"], "rolled_back");
    assert_eq!(s["steps"]["migrate"]["status"], "rolled_back");
    assert_eq!(s["closed"], false);
    let real = w.run(&["execute", file, "--now", "--yes", "--run-id", "real"]);
    assert_eq!(real.code, 0, "{}\n{}", real.stdout, real.stderr);
    assert!(w.path(".runbook/example/snapshot-real.db").exists());
    // Once patched, the precondition refuses to patch twice.
    let again = w.run(&["execute", file, "--now", "--yes", "--run-id", "again"]);
    assert_eq!(again.code, 3, "{}", again.stdout);
    let error = w.status_json("again")["steps"]["migrate"]["error"].clone();
    assert_eq!(
        error, "the column is not there yet: the query returned 0",
        "{error}"
    );
}

/// SQL on a real PostgreSQL server: every column type comes back, a failing statement
/// undoes the whole step, and a query's rows feed a fan-out.
#[test]
fn sql_actions_on_postgres() {
    let w = World::postgres();
    // The test's own fresh database is the maintenance target too.
    let db = w.store.clone();
    w.write(
        "rb.yaml",
        &format!(
            "runbook: pg
vars:
  db: {db}
targets:
  tenants: {{ sql: \"SELECT name FROM tenants ORDER BY name\", database: \"{{{{vars.db}}}}\" }}
steps:
  - id: schema
    kind: patch
    run:
      sql: |
        CREATE TABLE tenants (name text PRIMARY KEY, created timestamptz NOT NULL DEFAULT now());
        INSERT INTO tenants (name) VALUES ('acme'), ('globex'), ('initech');
      database: \"{{{{vars.db}}}}\"
  - id: types
    kind: verify
    run:
      sql: \"SELECT count(*) AS n, max(created) AS newest, 2.50::numeric AS price, true AS ok, '{{\\\"v\\\": 3}}'::jsonb AS doc, NULL::text AS none FROM tenants\"
      database: \"{{{{vars.db}}}}\"
  - id: half
    kind: patch
    on_failure: continue
    reason: shows that a failed step leaves nothing behind
    run:
      sql: |
        INSERT INTO tenants (name) VALUES ('umbrella');
        INSERT INTO tenants (name) VALUES ('acme');
      database: \"{{{{vars.db}}}}\"
  - id: each
    kind: install
    for_each: \"{{{{targets.tenants}}}}\"
    concurrency: 2
    run: {{ shell: \"echo {{{{item}}}} >> markers\" }}
  - id: count
    kind: test
    checks:
      - sql: SELECT count(*) FROM tenants
        database: \"{{{{vars.db}}}}\"
        expect: 3
"
        ),
    );
    let out = w.execute("rb.yaml", "pg1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = w.status_json("pg1");
    let o = &s["steps"]["types"]["outputs"];
    assert_eq!(o["n"], 3);
    assert_eq!(o["price"], 2.5);
    assert_eq!(o["ok"], true);
    assert_eq!(o["doc"]["v"], 3);
    assert_eq!(o["none"], serde_json::Value::Null);
    assert!(o["newest"].as_str().unwrap().starts_with("20"), "{o}");
    assert!(
        s["steps"]["half"]["error"]
            .as_str()
            .unwrap()
            .contains("duplicate key"),
        "{}",
        s["steps"]["half"]
    );
    let mut seen = w.markers();
    seen.sort();
    assert_eq!(
        seen,
        ["acme", "globex", "initech"],
        "umbrella was rolled back"
    );
}

/// A step's output that holds a secret is recorded as a reference to it, and a later
/// step's template gets the real value back.
#[test]
fn an_output_holding_a_secret_reaches_later_steps_intact() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: dsn
secrets: [DB_PASSWORD]
steps:
  - id: make-dsn
    kind: patch
    run: { shell: \"printf '{\\\"dsn\\\": \\\"postgres://app:%s@db/app\\\"}\\\\n' \\\"$PW\\\"\", env: { PW: \"{{secrets.DB_PASSWORD}}\" } }
  - id: use-dsn
    kind: patch
    run: { shell: \"test {{steps.make-dsn.outputs.dsn}} = 'postgres://app:hunter2x@db/app' && echo same >> markers\" }
",
    );
    let out = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "d1"])
        .env("DB_PASSWORD", "hunter2x")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(w.markers(), ["same"]);
    let s = w.status_json("d1");
    assert_eq!(
        s["steps"]["make-dsn"]["outputs"]["dsn"],
        "postgres://app:{{secrets.DB_PASSWORD}}@db/app"
    );
    let journal = std::fs::read(w.path("state/state.db")).unwrap();
    assert!(!journal.windows(8).any(|x| x == b"hunter2x"));
}

#[test]
fn a_secret_that_is_not_set_is_refused_before_anything_runs() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: unset\nsecrets: [NOT_SET_ANYWHERE, ALSO_NOT_SET]\nsteps:\n  - { id: one, kind: patch, run: { shell: 'echo one >> markers' } }\n",
    );
    let out = w.execute("rb.yaml", "u1");
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "error: secrets `NOT_SET_ANYWHERE`, `ALSO_NOT_SET` are not set: export them in the environment of `runbook`\n"
    );
    assert_eq!(out.stdout, "");
    assert!(w.markers().is_empty());
}

/// A dry run cannot write even through a function that writes, or `SELECT ... INTO`.
#[test]
fn a_dry_run_cannot_write_through_a_select() {
    let w = World::postgres();
    let db = w.store.clone();
    let psql = |sql: &str| common::psql(&db, sql);
    psql(
        "CREATE TABLE audit (at timestamptz DEFAULT now());
         CREATE FUNCTION logit() RETURNS boolean LANGUAGE sql AS 'INSERT INTO audit DEFAULT VALUES RETURNING true';",
    );
    w.write(
        "rb.yaml",
        &format!(
            "runbook: dry-pg
steps:
  - id: s1
    kind: patch
    preconditions:
      - sql: select logit()
        database: {db}
      - sql: select 1 as x into newtable
        database: {db}
      - sql: select count(*) = 0 from audit
        database: {db}
    run: {{ shell: \"true\" }}
"
        ),
    );
    let out = w.run(&["execute", "rb.yaml", "--dry-run"]);
    assert_eq!(out.code, 4, "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "sql: select logit(): DOES NOT HOLD: cannot execute INSERT in a read-only transaction (SQLSTATE 25006)"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("sql: select 1 as x into newtable: not evaluated (it may change data)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("sql: select count(*) = 0 from audit: holds"),
        "{}",
        out.stdout
    );
    assert_eq!(psql("SELECT count(*) FROM audit"), "0");
    assert_eq!(psql("SELECT to_regclass('newtable') IS NULL"), "t");
}

/// `status` lists every step of the runbook, the ones still pending too, in order.
#[test]
fn status_lists_pending_steps_too() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: st\nsteps:\n  - { id: one, kind: patch, run: { shell: 'true' } }\n  - { id: two, kind: patch, on_failure: pause, run: { shell: 'exit 1' } }\n  - { id: three, kind: patch, run: { shell: 'true' } }\n",
    );
    assert_eq!(w.execute("rb.yaml", "p1").code, 4);
    let s = w.status_json("p1");
    let steps: Vec<(&String, &str)> = s["steps"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, v)| (id, v["status"].as_str().unwrap()))
        .collect();
    let want = [
        ("one", "succeeded"),
        ("two", "failed"),
        ("three", "pending"),
    ];
    assert_eq!(steps.len(), 3);
    for ((id, st), (wid, wst)) in steps.iter().zip(want) {
        assert_eq!((id.as_str(), *st), (wid, wst));
    }
    let text = w.run(&["status", "p1"]);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("  three") && l.contains("pending")),
        "{}",
        text.stdout
    );
}

/// Commands about runs write nothing where there is no store, and a closed pipe is not
/// a panic.
#[test]
fn commands_about_runs_leave_no_store_behind() {
    let w = World::sqlite();
    for args in [
        vec!["status"],
        vec!["status", "nope"],
        vec!["abort", "nope"],
        vec!["approve", "nope", "s"],
        vec!["resume", "nope"],
    ] {
        let o = w.run(&args);
        assert_eq!(o.code, 1, "{args:?}");
    }
    let runs = w.run(&["runs", "--format", "json"]);
    assert_eq!((runs.code, runs.stdout.as_str()), (0, "[]\n"));
    assert!(!w.path("state").exists(), "a store was created");
    // `| head`: stdout closed before the output is written.
    w.write(
        "rb.yaml",
        "runbook: pipe\nsteps:\n  - { id: one, kind: patch, run: { shell: 'seq 1 50' } }\n",
    );
    assert_eq!(w.execute("rb.yaml", "pipe").code, 0);
    let mut status = w
        .command(&["status", "pipe"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(status.stdout.take());
    let out = status.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_ids_that_are_not_names_are_refused() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: ids\nsteps:\n  - { id: one, kind: patch, run: { shell: 'echo one >> markers' } }\n",
    );
    let long = "a".repeat(129);
    for id in [".", "..", "_x", "a/b", "", long.as_str()] {
        let o = w.execute("rb.yaml", id);
        assert_eq!(o.code, 1, "{id:?}");
        assert!(
            o.stderr.starts_with(&format!(
                "error: --run-id `{id}`: start with a letter or digit"
            )),
            "{id:?}: {}",
            o.stderr
        );
    }
    assert!(w.markers().is_empty());
}

#[test]
fn approving_a_step_that_does_not_exist_says_so() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: ap\nsteps:\n  - { id: go-no-go, kind: approve, timeout: 1m }\n",
    );
    let mut runner = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "a1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w
        .run(&["status", "a1", "--format", "json"])
        .stdout
        .contains("\"awaiting_approval\"")
    {
        assert!(Instant::now() < deadline, "never waited for approval");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = w.run(&["approve", "a1", "go-nogo"]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "error: run `a1` of `ap` has no step `go-nogo`; did you mean `go-no-go`?\n"
    );
    assert_eq!(w.run(&["abort", "a1"]).code, 0);
    assert_eq!(runner.wait().unwrap().code(), Some(4));
    let late = w.run(&["approve", "a1", "go-no-go"]);
    assert_eq!(
        late.stderr,
        "error: run `a1` has already ended (aborted); there is nothing to approve\n"
    );
    let s = w.status_json("a1");
    assert_eq!(s["steps"]["go-no-go"]["status"], "failed");
    assert_eq!(
        s["steps"]["go-no-go"]["error"],
        "stopped: the run was aborted while it waited for approval"
    );
}

/// A dry run shows the night: each step's action and rollback rendered with the run's
/// values, the items a fan-out would touch (its query target asked, read-only), and the
/// read-only checks of a test before any change evaluated like preconditions; a test
/// after the first change is not evaluated, and nothing is written.
#[test]
fn a_dry_run_renders_each_step_lists_the_items_and_evaluates_early_tests() {
    let w = World::sqlite();
    let db = w.path("shop.db");
    sqlite_made(
        &w,
        &format!("sqlite://{}?mode=rwc", db.display()),
        "create table tenants (name text); insert into tenants values ('acme'), ('globex')",
    );
    let before = std::fs::read(&db).unwrap();
    w.write(
        "rb.yaml",
        &format!(
            "runbook: dry-night
vars:
  db: sqlite://{db}
  version: \"4.2\"
targets:
  tenants:
    sql: select name from tenants order by name
    database: \"{{{{vars.db}}}}\"
steps:
  - id: early
    kind: test
    checks:
      - sql: \"select count(*) = 3 from tenants\"
        database: \"{{{{vars.db}}}}\"
        message: three tenants
  - id: ship
    kind: install
    for_each: \"{{{{targets.tenants}}}}\"
    run: {{ shell: \"deploy --version {{{{vars.version}}}} --tenant {{{{item}}}}\" }}
    rollback: {{ shell: \"undeploy {{{{item}}}}\" }}
  - id: late
    kind: test
    checks:
      - sql: \"select count(*) = 99 from tenants\"
        database: \"{{{{vars.db}}}}\"
",
            db = db.display()
        ),
    );
    let out = w.run(&["execute", "rb.yaml", "--dry-run"]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    let has = |line: &str| assert!(out.stdout.contains(line), "no {line:?} in:\n{}", out.stdout);
    has("  ship             2 items: acme, globex");
    has("  ship             run (first item): shell: deploy --version '4.2' --tenant 'acme'");
    has("  ship             rollback (first item): shell: undeploy 'acme'");
    has(
        "  early            sql: select count(*) = 3 from tenants: DOES NOT HOLD: three tenants: the query returned 0",
    );
    assert!(!out.stdout.contains("count(*) = 99"), "{}", out.stdout);
    has("1 precondition(s) or check(s) do not hold now.");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the dry run wrote");
    assert!(!w.path("markers").exists());
}

/// Runs `sql` on the SQLite database `url` through the engine (a run in a store of its
/// own, so the test's store stays empty).
fn sqlite_made(w: &World, url: &str, sql: &str) {
    w.write(
        "mk.yaml",
        &format!(
            "runbook: mk\nsteps:\n  - id: mk\n    kind: patch\n    run: {{ sql: {sql:?}, database: {url:?} }}\n"
        ),
    );
    let o = w.run(&[
        "execute",
        "mk.yaml",
        "--yes",
        "--now",
        "--store",
        &format!("sqlite://{}/mk.db", w.path("").display()),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}
