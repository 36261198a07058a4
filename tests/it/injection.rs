//! Values a template inserts into code stay values: one shell word in `shell`, a quoted
//! literal of the database in `sql` (actions, conditions, rollbacks alike), whether they
//! come from `--var`, a database row or an HTTP response; `raw` and `ident` say otherwise.

use crate::common;

use std::process::Command;

use common::world::World;

/// Text that runs as code when pasted into a command unquoted or between quotes.
const SHELL_PAYLOAD: &str = "'; touch PWNED; echo '";
/// The same for the other quotes and substitutions, with a line break.
const SHELL_PAYLOAD_2: &str = "$(touch PWNED2) `touch PWNED3` \" \\\n; touch PWNED4 #";

#[test]
fn a_var_with_shell_syntax_is_one_word_in_actions_checks_and_rollbacks() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        r#"runbook: inject
vars: { x: "", y: "" }
steps:
  - id: echo
    kind: patch
    run: { shell: "printf '[%s]' {{vars.x}} {{vars.y}} > got" }
    rollback: { shell: "printf '[%s]' {{vars.x}} > undone" }
  - id: check
    kind: test
    checks:
      # `env` values are passed as environment, as they are.
      - shell: 'test {{vars.x}} = "$X" && test {{vars.y}} = "$Y"'
        env: { X: "{{vars.x}}", Y: "{{vars.y}}" }
  - id: fail
    kind: patch
    run: { shell: "exit 1" }
"#,
    );
    let out = w.run(&[
        "execute",
        "rb.yaml",
        "--yes",
        "--now",
        "--run-id",
        "i1",
        "--var",
        &format!("x={SHELL_PAYLOAD}"),
        "--var",
        &format!("y={SHELL_PAYLOAD_2}"),
    ]);
    for marker in ["PWNED", "PWNED2", "PWNED3", "PWNED4"] {
        assert!(!w.path(marker).exists(), "{marker} ran:\n{}", out.stderr);
    }
    let s = w.status_json("i1");
    assert_eq!(s["steps"]["check"]["status"], "succeeded", "{s}");
    assert_eq!(s["steps"]["fail"]["status"], "failed", "{s}");
    let got = std::fs::read_to_string(w.path("got")).unwrap();
    assert_eq!(got, format!("[{SHELL_PAYLOAD}][{SHELL_PAYLOAD_2}]"));
    let undone = std::fs::read_to_string(w.path("undone")).unwrap();
    assert_eq!(undone, format!("[{SHELL_PAYLOAD}]"));
}

#[test]
fn raw_inserts_text_as_it_is_and_a_plain_template_one_word() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        r#"runbook: inject
vars: { words: "a   b", star: "*" }
steps:
  - id: words
    kind: patch
    run: { shell: "echo {{raw vars.words}} > raw && echo {{vars.words}} {{vars.star}} > quoted" }
"#,
    );
    let out = w.execute("rb.yaml", "r1");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(w.path("raw")).unwrap(), "a b\n");
    // Not split, not a glob.
    assert_eq!(
        std::fs::read_to_string(w.path("quoted")).unwrap(),
        "a   b *\n"
    );
}

/// A server whose `/item` answers a JSON object with a field that is shell code.
fn http_server() -> String {
    common::json_server(
        serde_json::json!({ "name": SHELL_PAYLOAD, "note": SHELL_PAYLOAD_2 }).to_string(),
    )
}

#[test]
fn an_http_response_field_is_one_word_in_a_shell_command() {
    let w = World::sqlite();
    let base = http_server();
    w.write(
        "rb.yaml",
        &format!(
            r#"runbook: inject
steps:
  - id: fetch
    kind: patch
    run: {{ http: {{ url: "{base}/item" }} }}
  - id: use
    kind: patch
    run: {{ shell: "printf '[%s]' {{{{steps.fetch.outputs.name}}}} {{{{steps.fetch.outputs.note}}}} > got" }}
"#
        ),
    );
    let out = w.execute("rb.yaml", "h1");
    assert_eq!(out.code, 0, "{}", out.stderr);
    for marker in ["PWNED", "PWNED2", "PWNED3", "PWNED4"] {
        assert!(!w.path(marker).exists(), "{marker} ran");
    }
    let got = std::fs::read_to_string(w.path("got")).unwrap();
    assert_eq!(got, format!("[{SHELL_PAYLOAD}][{SHELL_PAYLOAD_2}]"));
}

#[test]
fn a_secret_is_quoted_as_its_value_from_a_template_and_from_an_output() {
    let w = World::sqlite();
    let secret = "it's a s3cret $(touch PWNED)";
    w.write(
        "rb.yaml",
        r#"runbook: inject
secrets: [PW]
steps:
  - id: make
    kind: patch
    run: { shell: "printf '{\"dsn\": \"%s\"}' \"$PW\"", env: { PW: "{{secrets.PW}}" } }
  - id: use
    kind: patch
    run: { shell: "printf '%s' {{secrets.PW}} > direct && printf '%s' {{steps.make.outputs.dsn}} > via-output" }
"#,
    );
    let out = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "s1"])
        .env("PW", secret)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!w.path("PWNED").exists());
    assert_eq!(std::fs::read_to_string(w.path("direct")).unwrap(), secret);
    assert_eq!(
        std::fs::read_to_string(w.path("via-output")).unwrap(),
        secret
    );
}

/// Rows that are SQL when pasted into a statement: after a quote, and (PostgreSQL with
/// backslash escapes) after a backslash.
const ROWS: [&str; 2] = ["'); DROP TABLE t; --", "x\\'); DROP TABLE t; --"];

/// A fan-out over rows read from a table whose text is SQL, inserted into `sql` actions
/// and conditions on the database `db`; returns the table's rows afterwards.
fn rows_into_sql(w: &World, db: &str, read: impl Fn(&str) -> String) {
    w.write(
        "rb.yaml",
        &format!(
            r#"runbook: inject
vars:
  db: "{db}"
  expr: "1 + 2"
targets:
  rows: {{ sql: "SELECT name FROM src ORDER BY name", database: "{{{{vars.db}}}}" }}
steps:
  - id: schema
    kind: patch
    run:
      sql: |
        CREATE TABLE t (name text);
        CREATE TABLE src (name text);
        INSERT INTO src VALUES ('''); DROP TABLE t; --'), ('x\''); DROP TABLE t; --');
      database: "{{{{vars.db}}}}"
  - id: copy
    kind: patch
    for_each: "{{{{targets.rows}}}}"
    preconditions:
      - sql: "SELECT count(*) = 0 FROM t WHERE name = {{{{item}}}}"
        database: "{{{{vars.db}}}}"
    run: {{ sql: "INSERT INTO t VALUES ({{{{item}}}})", database: "{{{{vars.db}}}}" }}
  - id: tables
    kind: patch
    for_each: ["plain", "odd\"name; DROP TABLE t; --"]
    run: {{ sql: "CREATE TABLE {{{{ident item}}}} (v int); INSERT INTO {{{{ident item}}}} VALUES (7)", database: "{{{{vars.db}}}}" }}
  - id: raw
    kind: verify
    run: {{ sql: "SELECT {{{{raw vars.expr}}}} AS v, {{{{vars.expr}}}} AS quoted", database: "{{{{vars.db}}}}" }}
  - id: check
    kind: test
    checks:
      - sql: "SELECT count(*) FROM t WHERE name IN (SELECT name FROM src)"
        database: "{{{{vars.db}}}}"
        expect: 2
      - sql: "SELECT sum(v) FROM \"odd\"\"name; DROP TABLE t; --\""
        database: "{{{{vars.db}}}}"
        expect: 7
"#
        ),
    );
    let out = w.execute("rb.yaml", "q1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(read("SELECT name FROM t ORDER BY name"), ROWS.join("\n"));
    let s = w.status_json("q1");
    assert_eq!(s["steps"]["raw"]["outputs"]["v"], 3, "{s}");
    assert_eq!(s["steps"]["raw"]["outputs"]["quoted"], "1 + 2", "{s}");
}

#[test]
fn sqlite_a_row_with_sql_syntax_is_inserted_as_a_literal() {
    let w = World::sqlite();
    let file = w.path("target.db");
    let db = format!("sqlite://{}?mode=rwc", file.display());
    rows_into_sql(&w, &db, |sql| {
        let out = Command::new("sqlite3")
            .arg(&file)
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    });
}

#[test]
fn postgres_a_row_with_sql_syntax_is_inserted_as_a_literal() {
    let w = World::postgres();
    let db = w.store.clone();
    rows_into_sql(&w, &db, |sql| common::psql(&db, sql));
}

#[test]
fn a_template_inside_quotes_in_code_is_refused_with_its_place() {
    let w = World::sqlite();
    w.write(
        "rb.yaml",
        "runbook: inject\nvars: { n: a }\nsteps:\n  - id: s\n    kind: patch\n    run: { sql: \"select * from t where n = '{{vars.n}}'\", database: \"sqlite://x.db\" }\n",
    );
    let out = w.run(&["execute", "rb.yaml", "--yes", "--now"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "error: `{{vars.n}}` is inside a quoted string in SQL; the value it inserts is a quoted literal already\n --> rb.yaml:6:45"
        ),
        "{}",
        out.stderr
    );
    assert!(!w.path("state").exists(), "nothing is written");
}
