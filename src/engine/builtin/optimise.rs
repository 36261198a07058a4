//! `optimise`: the routine upkeep a DBA runs in a maintenance window. PostgreSQL:
//! `VACUUM (ANALYZE)`, `ANALYZE`, `REINDEX TABLE CONCURRENTLY` under a `lock_timeout`;
//! SQLite: `VACUUM`, `ANALYZE`, `PRAGMA optimize`. Outputs what was done and the size
//! of the database before and after.

use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

use super::Env;
use crate::engine::action::Outcome;
use crate::engine::target::{self, Target};
use crate::runbook::Kind;

/// `with` of an `optimise` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// `postgres://...` or `sqlite://PATH`.
    database: String,
    /// What to do, in order. PostgreSQL: `vacuum` (`VACUUM (ANALYZE)`), `analyze`,
    /// `reindex` (each table `CONCURRENTLY`); SQLite: `vacuum`, `analyze`, `optimize`.
    /// Default: `vacuum` then `analyze` (PostgreSQL), all three (SQLite).
    #[serde(default)]
    actions: Option<Vec<Action>>,
    /// Only these tables (default: every table of the user's schemas).
    #[serde(default)]
    tables: Vec<String>,
    /// PostgreSQL: how long a statement may wait for a lock before giving up.
    #[serde(default)]
    lock_timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Vacuum,
    Analyze,
    Reindex,
    #[serde(alias = "optimise")]
    Optimize,
}

/// Runs the `optimise` step.
pub async fn optimise(with: &IndexMap<String, Value>, env: Env<'_>) -> Outcome {
    match run(with, env).await {
        Ok(outputs) => Outcome::Succeeded(outputs),
        Err(e) => Outcome::Failed(e),
    }
}

async fn run(
    with: &IndexMap<String, Value>,
    env: Env<'_>,
) -> Result<IndexMap<String, Value>, String> {
    let p: Params = super::params(Kind::Optimise, with)?;
    let lock_timeout = match &p.lock_timeout {
        Some(t) => crate::duration::parse_duration(t)
            .map_err(|e| format!("`with.lock_timeout` (optimise step): {e}"))?,
        None => Duration::from_millis(500),
    };
    let mut conn = target::connect(&p.database).await?;
    let postgres = matches!(conn, Target::Postgres(_));
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
                exec(&mut conn, &statement, env.log).await?;
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

/// The database's size in bytes.
async fn size(conn: &mut Target) -> Result<i64, String> {
    let sql = match conn {
        Target::Postgres(_) => "SELECT pg_database_size(current_database()) AS size",
        Target::Sqlite(_) => {
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
    let sql = match conn {
        Target::Postgres(_) => {
            "SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        }
        Target::Sqlite(_) => {
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
