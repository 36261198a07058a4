//! Effects: shell commands, SQL and the checks built on them. Everything that touches
//! the world outside the journal lives here.

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::Value;
use sqlx::{Column, Row};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How an action ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(IndexMap<String, Value>),
    Failed(String),
    TimedOut,
}

/// Replaces every secret value in `text` with `****`.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: Vec<String>,
}

impl Masker {
    /// Masks these values (empty ones are ignored).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        // Longest first, so a secret that contains another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Masker { values }
    }

    /// The text with secrets masked.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "****");
            }
        }
        out
    }
}

/// Where a step's output goes: its log file, masked, and the last lines for `status`.
pub struct StepLog {
    file: Option<std::fs::File>,
    masker: Masker,
    pub tail: Vec<String>,
}

/// Lines of output kept for `runbook status`.
pub const TAIL_LINES: usize = 20;

impl StepLog {
    /// Appends to `path` (created with its directory).
    pub fn open(path: &Path, masker: Masker) -> std::io::Result<StepLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(StepLog {
            file: Some(file),
            masker,
            tail: Vec::new(),
        })
    }

    /// A log that only keeps the tail (for checks that need no file).
    pub fn memory(masker: Masker) -> StepLog {
        StepLog {
            file: None,
            masker,
            tail: Vec::new(),
        }
    }

    /// Records one line.
    pub fn line(&mut self, stream: &str, line: &str) {
        let line = self.masker.mask(line);
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{stream}: {line}");
        }
        self.tail.push(line);
        if self.tail.len() > TAIL_LINES {
            self.tail.remove(0);
        }
    }
}

/// Runs `sh -c command` in its own process group; on timeout the whole group is killed.
/// Standard output and error go to the log; a JSON object printed on standard output
/// (the whole output, or its last line) becomes the step's outputs.
pub async fn shell(
    command: &str,
    env: &IndexMap<String, String>,
    cwd: Option<&Path>,
    timeout: Option<Duration>,
    log: &mut StepLog,
) -> Outcome {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot start `sh`: {e}")),
    };
    let pgid = child.id().map(|id| id as i32);
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut stdout = String::new();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let (mut out_open, mut err_open) = (true, true);
    let status = loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = out.next_line(), if out_open => match line {
                Ok(Some(l)) => {
                    log.line("stdout", &l);
                    stdout.push_str(&l);
                    stdout.push('\n');
                }
                _ => out_open = false,
            },
            line = err.next_line(), if err_open => match line {
                Ok(Some(l)) => log.line("stderr", &l),
                _ => err_open = false,
            },
            status = child.wait(), if !out_open && !err_open => break status,
            _ = sleep => {
                if let Some(pgid) = pgid {
                    // SAFETY: signalling a process group we created.
                    unsafe { libc::killpg(pgid, libc::SIGKILL) };
                }
                let _ = child.wait().await;
                return Outcome::TimedOut;
            }
        }
    };
    match status {
        Ok(s) if s.success() => Outcome::Succeeded(json_outputs(&stdout)),
        Ok(s) => match s.code() {
            Some(code) => Outcome::Failed(format!(
                "`{}` exited with status {code}",
                log.masker.mask(command)
            )),
            None => Outcome::Failed(format!(
                "`{}` was killed by a signal",
                log.masker.mask(command)
            )),
        },
        Err(e) => Outcome::Failed(format!("waiting for the command failed: {e}")),
    }
}

/// Outputs printed as a JSON object: the whole of stdout, or its last non-empty line.
fn json_outputs(stdout: &str) -> IndexMap<String, Value> {
    let parse = |s: &str| match serde_json::from_str::<Value>(s.trim()) {
        Ok(Value::Object(m)) => Some(m.into_iter().collect()),
        _ => None,
    };
    parse(stdout)
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(parse)
        })
        .unwrap_or_default()
}

/// A database URL as sqlx's Any driver wants it.
fn connect_url(database: &str) -> Result<String, String> {
    if let Some(path) = database.strip_prefix("sqlite://") {
        Ok(format!("sqlite://{path}"))
    } else if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        Ok(database.to_owned())
    } else {
        Err(format!(
            "unsupported database URL `{database}`: use sqlite://PATH or postgres://..."
        ))
    }
}

async fn connect(database: &str) -> Result<sqlx::AnyConnection, String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let url = connect_url(database)?;
    sqlx::AnyConnection::connect(&url)
        .await
        .map_err(|e| format!("cannot connect to `{database}`: {e}"))
}

/// Runs SQL statements (in one transaction unless `transaction` is false). The columns of
/// the first row returned become outputs.
pub async fn sql(
    database: &str,
    statements: &str,
    transaction: bool,
    timeout: Option<Duration>,
) -> Outcome {
    let work = async {
        use sqlx::Connection;
        let mut conn = connect(database).await?;
        let rows = if transaction {
            let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
            let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_owned()))
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())?;
            rows
        } else {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_owned()))
                .fetch_all(&mut conn)
                .await
                .map_err(|e| e.to_string())?
        };
        let _ = conn.close().await;
        Ok::<_, String>(rows.first().map(row_outputs).unwrap_or_default())
    };
    match timeout {
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(Ok(o)) => Outcome::Succeeded(o),
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::TimedOut,
        },
        None => match work.await {
            Ok(o) => Outcome::Succeeded(o),
            Err(e) => Outcome::Failed(e),
        },
    }
}

/// The first row's columns as JSON values.
fn row_outputs(row: &sqlx::any::AnyRow) -> IndexMap<String, Value> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name().to_owned(), cell(row, i)))
        .collect()
}

fn cell(row: &sqlx::any::AnyRow, i: usize) -> Value {
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map(Value::from).unwrap_or(Value::Null);
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
        return v.map(Value::from).unwrap_or(Value::Null);
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return v.map(Value::from).unwrap_or(Value::Null);
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v.map(Value::from).unwrap_or(Value::Null);
    }
    Value::Null
}

/// A SQL check: the first column of the first row must be true (or equal `expect`).
pub async fn sql_check(database: &str, query: &str, expect: Option<&Value>) -> Result<(), String> {
    let outputs = match sql(database, query, false, Some(Duration::from_secs(60))).await {
        Outcome::Succeeded(o) => o,
        Outcome::Failed(e) => return Err(e),
        Outcome::TimedOut => return Err("the query timed out".into()),
    };
    let Some((_, got)) = outputs.into_iter().next() else {
        return Err("the query returned no rows".into());
    };
    let ok = match expect {
        None => truthy(&got),
        Some(want) => same(&got, want),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the query returned {got}{}",
            expect
                .map(|w| format!(", expected {w}"))
                .unwrap_or_default()
        ))
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(s.as_str(), "t" | "true" | "1"),
        _ => false,
    }
}

fn same(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(_) | Value::Bool(_), Value::Bool(b)) => truthy(got) == *b,
        (g, Value::String(w)) => match g {
            Value::String(s) => s == w,
            other => &other.to_string() == w,
        },
        (g, w) => g == w,
    }
}

/// A stopwatch for durations in events and output.
pub fn elapsed_ms(start: Instant) -> i64 {
    start.elapsed().as_millis() as i64
}

/// The rows of a query, as fan-out items: the first column's value when there is one
/// column, otherwise an object per row.
pub async fn query_items(database: &str, query: &str) -> Result<Vec<Value>, String> {
    let mut conn = connect(database).await?;
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_all(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut o = row_outputs(r);
            if o.len() == 1 {
                o.shift_remove_index(0)
                    .map(|(_, v)| v)
                    .unwrap_or(Value::Null)
            } else {
                Value::Object(o.into_iter().collect())
            }
        })
        .collect())
}
