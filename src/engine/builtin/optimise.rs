//! `optimise`: the routine upkeep a DBA runs in a maintenance window. PostgreSQL:
//! `VACUUM (ANALYZE)`, `ANALYZE`, `REINDEX TABLE CONCURRENTLY` under a `lock_timeout`;
//! SQLite: `VACUUM`, `ANALYZE`, `PRAGMA optimize`. Outputs what was done and the size
//! of the database before and after.

use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::Value;

use super::Env;
use crate::engine::action::Outcome;
use crate::engine::target::{self, Conn, Target};
use crate::runbook::with::{OptimiseAction as Action, OptimiseWith};

/// Runs the `optimise` step.
pub async fn optimise(p: &OptimiseWith, env: Env<'_>) -> Outcome {
    match run(p, env).await {
        Ok(outputs) => Outcome::Succeeded(outputs),
        Err(e) => Outcome::Failed(e),
    }
}

async fn run(p: &OptimiseWith, env: Env<'_>) -> Result<IndexMap<String, Value>, String> {
    let lock_timeout = match &p.lock_timeout {
        Some(t) => crate::duration::parse_duration(t)
            .map_err(|e| format!("`with.lock_timeout` (optimise step): {e}"))?,
        None => Duration::from_millis(500),
    };
    let mut conn = target::connect(&p.database).await?;
    let postgres = conn.is_postgres();
    let actions = p.actions.clone().unwrap_or(if postgres {
        vec![Action::Vacuum, Action::Analyze]
    } else {
        vec![Action::Vacuum, Action::Analyze, Action::Optimize]
    });
    let result = async {
        let before = size(&mut conn).await?;
        let mut statements = Vec::new();
        if postgres {
            // A lock this maintenance cannot get quickly is given up, not queued for:
            // queued DDL blocks every query behind it.
            exec(
                &mut conn,
                &format!("SET lock_timeout = '{}ms'", lock_timeout.as_millis()),
                env.log,
            )
            .await?;
        }
        let tables = if p.tables.is_empty() {
            user_tables(&mut conn).await?
        } else {
            p.tables.iter().map(|t| quote(t)).collect()
        };
        for action in &actions {
            let sql: Vec<String> = match (action, postgres) {
                (Action::Vacuum, true) => per_table("VACUUM (ANALYZE)", &p.tables, &tables),
                (Action::Analyze, true) => per_table("ANALYZE", &p.tables, &tables),
                (Action::Reindex, true) => tables
                    .iter()
                    .map(|t| format!("REINDEX TABLE CONCURRENTLY {t}"))
                    .collect(),
                (Action::Optimize, true) => {
                    return Err(
                        "`optimize` is SQLite's `PRAGMA optimize`; on PostgreSQL use `analyze`"
                            .to_owned(),
                    );
                }
                (Action::Vacuum, false) => vec!["VACUUM".to_owned()],
                (Action::Analyze, false) => per_table("ANALYZE", &p.tables, &tables),
                (Action::Optimize, false) => vec!["PRAGMA optimize".to_owned()],
                (Action::Reindex, false) => per_table("REINDEX", &p.tables, &tables),
            };
            for statement in sql {
                if *action == Action::Reindex && postgres {
                    reindex_concurrently(&mut conn, &statement, env.log).await?;
                } else {
                    exec(&mut conn, &statement, env.log).await?;
                }
                statements.push(Value::from(statement));
            }
        }
        let after = size(&mut conn).await?;
        let mut out = IndexMap::new();
        out.insert("actions".to_owned(), Value::Array(statements));
        out.insert("size_before".to_owned(), Value::from(before));
        out.insert("size_after".to_owned(), Value::from(after));
        Ok(out)
    }
    .await;
    conn.close().await;
    result
}

/// `verb` for the whole database, or once per table when tables were named.
fn per_table(verb: &str, named: &[String], tables: &[String]) -> Vec<String> {
    if named.is_empty() {
        vec![verb.to_owned()]
    } else {
        tables.iter().map(|t| format!("{verb} {t}")).collect()
    }
}

/// One statement on its own (VACUUM and REINDEX CONCURRENTLY refuse a transaction),
/// logged with how long it took.
async fn exec(
    conn: &mut Target,
    sql: &str,
    log: &mut crate::engine::action::StepLog,
) -> Result<(), String> {
    let started = Instant::now();
    conn.rows(sql, false)
        .await
        .map_err(|e| format!("`{sql}`: {e}"))?;
    log.line(
        "optimise",
        &format!("{sql} ({} ms)", started.elapsed().as_millis()),
    );
    Ok(())
}

/// How long dropping a failed reindex's leftovers may wait for old transactions.
const CLEANUP_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts of a `REINDEX CONCURRENTLY` that meets a lock it cannot get in time.
const REINDEX_ATTEMPTS: u32 = 3;

/// `REINDEX TABLE CONCURRENTLY`, retried with backoff when it times out on a lock
/// (SQLSTATE 55P03). A failed attempt leaves invalid `_ccnew` copies of the indexes,
/// which every write would keep updating: they are dropped before the next attempt and
/// after the last.
async fn reindex_concurrently(
    conn: &mut Target,
    sql: &str,
    log: &mut crate::engine::action::StepLog,
) -> Result<(), String> {
    let table = sql
        .trim_start_matches("REINDEX TABLE CONCURRENTLY ")
        .to_owned();
    let mut attempt = 1;
    loop {
        let result = exec(conn, sql, log).await;
        let Err(error) = result else {
            return Ok(());
        };
        // The drop waits for the same old transactions the reindex waited for: give it
        // longer than the statement's own lock_timeout, and report what is left if even
        // that is not enough.
        let cleaned = match drop_leftovers(conn, &table, log).await {
            Ok(dropped) if dropped.is_empty() => String::new(),
            Ok(dropped) => format!(
                "; the invalid indexes it left ({}) were dropped",
                dropped.join(", ")
            ),
            Err(e) => format!(
                "; dropping the invalid `_ccnew` indexes it left failed ({e}): drop them by hand with DROP INDEX CONCURRENTLY"
            ),
        };
        if error.contains("SQLSTATE 55P03") && attempt < REINDEX_ATTEMPTS {
            let wait = Duration::from_millis(500 * u64::from(attempt));
            log.line(
                "optimise",
                &format!(
                    "attempt {attempt} met a lock{cleaned}; trying again in {} ms",
                    wait.as_millis()
                ),
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
            continue;
        }
        return Err(format!("{error}{cleaned}"));
    }
}

/// Drops the invalid `_ccnew` indexes a failed `REINDEX CONCURRENTLY` left on `table`.
async fn drop_leftovers(
    conn: &mut Target,
    table: &str,
    log: &mut crate::engine::action::StepLog,
) -> Result<Vec<String>, String> {
    let literal = table.replace('\'', "''");
    let rows = conn
        .rows(
            &format!(
                "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT i.indisvalid AND i.indrelid = '{literal}'::regclass \
                 AND c.relname ~ '_ccnew[0-9]*$'"
            ),
            false,
        )
        .await?;
    let names: Vec<String> = rows
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    if names.is_empty() {
        return Ok(names);
    }
    let shown = conn.rows("SHOW lock_timeout", false).await?;
    let before = shown
        .first()
        .and_then(|r| r.get("lock_timeout"))
        .and_then(Value::as_str)
        .unwrap_or("0")
        .replace('\'', "''");
    let wait = CLEANUP_LOCK_TIMEOUT.as_millis();
    exec(conn, &format!("SET lock_timeout = '{wait}ms'"), log).await?;
    let mut dropped = Vec::new();
    let mut failed = None;
    for name in names {
        let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {name}");
        match exec(conn, &drop, log).await {
            Ok(()) => dropped.push(name),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    exec(conn, &format!("SET lock_timeout = '{before}'"), log).await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(dropped),
    }
}

/// The database's size in bytes.
async fn size(conn: &mut Target) -> Result<i64, String> {
    let sql = match conn.conn {
        Conn::Postgres(_) => "SELECT pg_database_size(current_database()) AS size",
        Conn::Sqlite(_) => {
            "SELECT page_count * page_size AS size FROM pragma_page_count(), pragma_page_size()"
        }
    };
    let rows = conn.rows(sql, false).await?;
    Ok(rows
        .first()
        .and_then(|r| r.get("size"))
        .and_then(Value::as_i64)
        .unwrap_or(0))
}

/// The user's tables, quoted: PostgreSQL outside the system schemas, SQLite outside
/// `sqlite_*`.
async fn user_tables(conn: &mut Target) -> Result<Vec<String>, String> {
    let sql = match conn.conn {
        Conn::Postgres(_) => {
            "SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        }
        Conn::Sqlite(_) => {
            "SELECT '\"' || replace(name, '\"', '\"\"') || '\"' AS t FROM sqlite_master \
             WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        }
    };
    Ok(conn
        .rows(sql, false)
        .await?
        .into_iter()
        .filter_map(|r| r.get("t").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// A table name as written by the user, quoted as an identifier (a dotted name keeps
/// its schema).
fn quote(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}
