//! Applying one migration file, up or down: in a transaction with its tracking row (with
//! `lock_timeout`), or outside one statement by statement, tried again after lock
//! timeouts with a jittered exponential backoff.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

use super::tracking::{TABLE, lit, record};
use super::{Policy, list, show};
use crate::engine::action::StepLog;
use crate::engine::target::{self, Conn, Target};
use crate::sql::split::{Statement, split_statements};

/// The first wait before trying again; it doubles with each retry (with jitter).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One migration file to run, up or down.
pub(super) struct Job<'a> {
    pub(super) version: u64,
    pub(super) name: &'a str,
    pub(super) file: &'a str,
    pub(super) sql: &'a str,
    pub(super) up: bool,
    pub(super) checksum: &'a str,
}

/// Whether a file asks to run outside a transaction: a line `-- runbook: no-transaction`.
fn no_transaction(sql: &str) -> bool {
    sql.lines().any(|l| {
        l.trim().strip_prefix("--").is_some_and(|rest| {
            rest.split_whitespace()
                .collect::<String>()
                .eq_ignore_ascii_case("runbook:no-transaction")
        })
    })
}

/// Why an attempt failed.
enum Failure {
    /// A lock wait timed out: worth another attempt.
    Lock(String),
    /// Anything else, final.
    Other(String),
}

/// Runs one migration file, trying again after lock timeouts; returns how long it took.
pub(super) async fn apply(
    db: &mut Db,
    job: &Job<'_>,
    policy: &Policy,
    log: &mut StepLog,
) -> Result<u64, String> {
    let outside = no_transaction(job.sql);
    let statements = split_statements(job.sql);
    if !outside && let Some(s) = statements.iter().find(|s| s.controls_transaction()) {
        return Err(format!(
            "{} has its own `{}`: runbook runs each migration in a transaction of its own; remove it, or mark the file with a line `-- runbook: no-transaction`",
            job.file,
            s.words.first().map_or("", |w| w.text.as_str())
        ));
    }
    let indexes: Vec<String> = if outside {
        statements
            .iter()
            .filter_map(Statement::concurrent_index)
            .collect()
    } else {
        Vec::new()
    };
    let verb = if job.up { "applying" } else { "rolling back" };
    log.line(
        "migrate",
        &format!(
            "{verb} {} ({}{})",
            job.name,
            job.file,
            if outside {
                format!(", outside a transaction, {} statements", statements.len())
            } else {
                String::new()
            }
        ),
    );
    let attempts = policy.retries + 1;
    // Outside a transaction, what ran stays done: a retry goes on from where it stopped.
    let mut next = 0;
    for attempt in 1..=attempts {
        // What a failed attempt (or an earlier run) left invalid goes first; a lock
        // timeout while dropping it counts as one of the attempts.
        let result = match db.drop_invalid_indexes(&indexes, log).await {
            Err(f) => Err(f),
            Ok(_) => {
                let started = Instant::now();
                if outside {
                    db.run_outside(job, &statements, &mut next, started).await
                } else {
                    db.run_inside(job, policy.lock_timeout, started).await
                }
            }
        };
        match result {
            Ok(ms) => return Ok(ms),
            Err(Failure::Lock(why)) => {
                let timeout = show(policy.lock_timeout);
                let setting = db.lock_setting();
                if attempt < attempts {
                    let wait = backoff(attempt);
                    log.line(
                        "migrate",
                        &format!(
                            "{}: {setting} {timeout} reached (attempt {attempt} of {attempts}): {why}; trying again in {} ms",
                            job.file,
                            wait.as_millis()
                        ),
                    );
                    tokio::time::sleep(wait).await;
                } else {
                    log.line(
                        "migrate",
                        &format!(
                            "{}: {setting} {timeout} reached (attempt {attempt} of {attempts}): {why}; giving up",
                            job.file
                        ),
                    );
                    let mut msg = format!(
                        "{setting} {timeout} reached on each of {attempts} attempts to run {}: {why}; another session holds a lock it needs{}",
                        job.file,
                        if db.is_postgres() {
                            " (see pg_locks and pg_stat_activity)"
                        } else {
                            ""
                        }
                    );
                    if outside {
                        msg.push_str(&format!(
                            "; it ran outside a transaction: {next} of {} statements took effect",
                            statements.len()
                        ));
                        cleanup_after(db, &indexes, &mut msg, log).await;
                    }
                    return Err(msg);
                }
            }
            Err(Failure::Other(why)) => {
                let ran = outside.then_some((statements.as_slice(), next));
                return Err(failed(db, job, &why, ran, &indexes, log).await);
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// The message of a migration that failed for another reason than a lock (its invalid
/// indexes dropped first, when it ran outside a transaction: `ran` holds its statements
/// and how many took effect).
async fn failed(
    db: &mut Db,
    job: &Job<'_>,
    why: &str,
    ran: Option<(&[Statement], usize)>,
    indexes: &[String],
    log: &mut StepLog,
) -> String {
    let mut msg = format!("{} failed: {why}", job.file);
    if why.contains("cannot run inside a transaction block") {
        msg.push_str(
            " (mark the file with a line `-- runbook: no-transaction` to run it outside one)",
        );
    }
    if let Some((statements, next)) = ran {
        let failed = statements
            .get(next)
            .map(|s| preview(&s.text))
            .unwrap_or_default();
        msg.push_str(&format!(
            "; it ran outside a transaction: {next} of {} statements took effect, statement {} failed: {failed}",
            statements.len(),
            next + 1
        ));
        cleanup_after(db, indexes, &mut msg, log).await;
    } else {
        msg.push_str("; its transaction was rolled back");
    }
    msg
}

/// After a failure outside a transaction: drops the invalid indexes it left.
async fn cleanup_after(db: &mut Db, indexes: &[String], msg: &mut String, log: &mut StepLog) {
    if indexes.is_empty() {
        return;
    }
    match db.drop_invalid_indexes(indexes, log).await {
        Ok(dropped) if !dropped.is_empty() => {
            msg.push_str(&format!(
                "; the invalid index {} it left was dropped",
                list(&dropped)
            ));
        }
        Ok(_) => {}
        Err(Failure::Lock(e) | Failure::Other(e)) => msg.push_str(&format!(
            "; an invalid index it left could not be dropped ({e}): drop it by hand"
        )),
    }
}

/// The first line of a statement, shortened.
fn preview(sql: &str) -> String {
    let line = sql
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let short: String = line.chars().take(80).collect();
    if short.len() < line.len() || sql.trim().lines().count() > 1 {
        format!("`{short}...`")
    } else {
        format!("`{short}`")
    }
}

/// The wait before attempt `attempt + 1`: 200ms doubled per attempt, times 0.5 to 1.5.
fn backoff(attempt: u64) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(attempt);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let jitter = 0.5 + (h.finish() % 1000) as f64 / 1000.0;
    base.mul_f64(jitter)
}

/// The connection to the target, with what a migration needs of it.
pub(super) struct Db {
    pub(super) conn: Target,
}

/// Runs one statement (or several, in one simple query).
async fn exec<DB>(conn: &mut DB::Connection, sql: &str) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Runs `prelude`, `body` and then the statement `record` makes of the time `body` took,
/// in one transaction begun with `begin`; returns that time in ms.
async fn transaction<DB>(
    conn: &mut DB::Connection,
    begin: &'static str,
    prelude: Option<String>,
    body: &str,
    started: Instant,
    record: impl FnOnce(u64) -> String,
) -> Result<u64, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut tx = conn
        .begin_with(sqlx::AssertSqlSafe(begin.to_owned()))
        .await?;
    let mut ms = 0;
    let mut steps = prelude.into_iter().chain([body.to_owned()]);
    let mut record = Some(record);
    loop {
        let sql = match steps.next() {
            Some(s) => s,
            None => match record.take() {
                Some(r) => {
                    ms = started.elapsed().as_millis() as u64;
                    r(ms)
                }
                None => break,
            },
        };
        if let Err(e) = exec::<DB>(&mut *tx, &sql).await {
            let _ = tx.rollback().await;
            return Err(e);
        }
    }
    tx.commit().await?;
    Ok(ms)
}

impl Db {
    pub(super) fn is_postgres(&self) -> bool {
        self.conn.is_postgres()
    }

    /// What the lock wait bound is called on this database.
    fn lock_setting(&self) -> &'static str {
        if self.is_postgres() {
            "lock_timeout"
        } else {
            "lock_timeout (SQLite busy_timeout)"
        }
    }

    pub(super) async fn exec(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        self.conn
            .guarded(sql, async |conn| match conn {
                Conn::Postgres(c) => exec::<sqlx::Postgres>(c, sql).await,
                Conn::Sqlite(c) => exec::<sqlx::Sqlite>(c, sql).await,
            })
            .await
    }

    /// The file and its tracking row in one transaction.
    async fn run_inside(
        &mut self,
        job: &Job<'_>,
        lock_timeout: Duration,
        started: Instant,
    ) -> Result<u64, Failure> {
        let pg = self.is_postgres();
        let record = |ms| record(pg, job, ms);
        let result = self
            .conn
            .guarded(job.sql, async |conn| match conn {
                Conn::Postgres(c) => {
                    let prelude = format!(
                        "SET LOCAL lock_timeout = '{}ms'",
                        lock_timeout.as_millis().max(1)
                    );
                    transaction::<sqlx::Postgres>(
                        c,
                        "BEGIN",
                        Some(prelude),
                        job.sql,
                        started,
                        record,
                    )
                    .await
                }
                Conn::Sqlite(c) => {
                    transaction::<sqlx::Sqlite>(
                        c,
                        "BEGIN IMMEDIATE",
                        None,
                        job.sql,
                        started,
                        record,
                    )
                    .await
                }
            })
            .await;
        result.map_err(|e| classify_error(&e, pg))
    }

    /// The file's statements one by one from `next`, then its tracking row.
    async fn run_outside(
        &mut self,
        job: &Job<'_>,
        statements: &[Statement],
        next: &mut usize,
        started: Instant,
    ) -> Result<u64, Failure> {
        let pg = self.is_postgres();
        while let Some(s) = statements.get(*next) {
            self.exec(&s.text)
                .await
                .map_err(|e| classify_error(&e, pg))?;
            *next += 1;
        }
        let ms = started.elapsed().as_millis() as u64;
        self.exec(&record(pg, job, ms)).await.map_err(|e| {
            Failure::Other(format!(
                "its statements ran but it could not be recorded in {TABLE}: {}",
                target::describe(&e)
            ))
        })?;
        Ok(ms)
    }

    /// Drops the indexes among `names` that PostgreSQL has marked invalid (a
    /// `CREATE INDEX CONCURRENTLY` that failed half-way); returns their names.
    async fn drop_invalid_indexes(
        &mut self,
        names: &[String],
        log: &mut StepLog,
    ) -> Result<Vec<String>, Failure> {
        let mut dropped = Vec::new();
        if !self.is_postgres() {
            return Ok(dropped);
        }
        for name in names {
            let rows = self
                .conn
                .rows(
                    &format!(
                        "SELECT NOT i.indisvalid AS invalid FROM pg_index i WHERE i.indexrelid = to_regclass({})",
                        lit(name)
                    ),
                    false,
                )
                .await
                .map_err(|e| Failure::Other(format!("cannot check the index {name}: {e}")))?;
            let invalid = rows.first().and_then(|r| r.get("invalid")) == Some(&Value::Bool(true));
            if invalid {
                log.line(
                    "migrate",
                    &format!("dropping the invalid index {name} (left by a failed CREATE INDEX CONCURRENTLY)"),
                );
                self.exec(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                    .await
                    .map_err(|e| match classify_error(&e, true) {
                        Failure::Lock(t) => {
                            Failure::Lock(format!("cannot drop the invalid index {name}: {t}"))
                        }
                        Failure::Other(t) => {
                            Failure::Other(format!("cannot drop the invalid index {name}: {t}"))
                        }
                    })?;
                dropped.push(name.clone());
            }
        }
        Ok(dropped)
    }
}

/// A lock wait that timed out (worth another attempt), or any other failure.
fn classify_error(e: &sqlx::Error, pg: bool) -> Failure {
    let text = target::describe(e);
    let lock = match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            if pg {
                c == "55P03"
            } else {
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
                c.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
            }
        }),
        _ => false,
    };
    if lock {
        Failure::Lock(text)
    } else {
        Failure::Other(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_no_transaction_marker() {
        assert!(no_transaction(
            "-- runbook: no-transaction\nCREATE INDEX ..."
        ));
        assert!(no_transaction("select 1;\n  --runbook:no-transaction  \n"));
        assert!(!no_transaction("-- runbook: transaction\n"));
        assert!(!no_transaction("select '-- runbook: no-transaction'"));
    }
    #[test]
    fn backs_off_exponentially_with_jitter() {
        for attempt in 1..=5u64 {
            let base = 200u128 << (attempt - 1);
            let got = backoff(attempt).as_millis();
            assert!(got >= base / 2 && got <= base * 3 / 2, "{attempt}: {got}");
        }
        assert!(backoff(60) <= MAX_BACKOFF.mul_f64(1.5));
    }
}
