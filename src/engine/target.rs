//! SQL against maintenance targets (PostgreSQL and SQLite), through sqlx's own drivers
//! so that every column type comes back as a value: statements, checks and the rows of
//! fan-out queries.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Connection, Row, TypeInfo, ValueRef};

mod cancel;

pub use cancel::{Cancelled, settle_cancellations};
use cancel::{RawSqlite, Stopper, Watch, shown_url};

/// How long a SQL check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to a maintenance target. A statement run through it ([`Target::rows`],
/// [`Target::guarded`]) whose future is dropped before the statement ended (a step's
/// timeout, an abort, Ctrl-C) is stopped on the server: see [`settle_cancellations`].
pub struct Target {
    pub conn: Conn,
    /// How to stop this connection's statement from outside.
    stopper: Stopper,
}

/// The connection itself, by engine.
pub enum Conn {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

/// A row as column name → JSON value.
pub type Cells = IndexMap<String, Value>;

pub use crate::sql::{Engine, engine};

/// The file (percent-decoded, as the driver reads it) and the query of a
/// `sqlite://PATH[?QUERY]` URL: the store's reading of SQLite URLs.
pub fn sqlite_parts(url: &str) -> (PathBuf, &str) {
    let rest = url.strip_prefix("sqlite://").unwrap_or(url);
    crate::store::url::sqlite_path(url).unwrap_or_else(|_| {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        (PathBuf::from(path), query)
    })
}

/// The URL to connect with. A SQLite file must exist unless the URL says `mode=rwc`,
/// which creates it (and its directory): a typo must not quietly make an empty database.
fn connect_url(database: &str) -> Result<String, String> {
    if engine(database)? == Engine::Postgres {
        return Ok(database.to_owned());
    }
    let (path, query) = sqlite_parts(database);
    let creates = query
        .split('&')
        .any(|p| p == "mode=rwc" || p == "mode=memory");
    if !creates && path != Path::new(":memory:") && !path.exists() {
        return Err(format!(
            "the SQLite database `{}` does not exist (write `{database}{}mode=rwc` to create it)",
            path.display(),
            if query.is_empty() { "?" } else { "&" }
        ));
    }
    if creates
        && let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create `{}` for `{database}`: {e}", dir.display()))?;
    }
    Ok(database.to_owned())
}

pub async fn connect(database: &str) -> Result<Target, String> {
    let url = connect_url(database)?;
    let failed = |e: sqlx::Error| format!("cannot connect to `{database}`: {}", describe(&e));
    let shown = shown_url(database);
    Ok(if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(&url)
            .await
            .map_err(failed)?;
        let handle = c.lock_handle().await.map_err(failed)?.as_raw_handle();
        Target {
            conn: Conn::Sqlite(c),
            stopper: Stopper::Sqlite {
                database: shown,
                handle: RawSqlite(handle),
            },
        }
    } else {
        let mut c = sqlx::PgConnection::connect(&url).await.map_err(failed)?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut c)
            .await
            .map_err(failed)?;
        Target {
            conn: Conn::Postgres(c),
            stopper: Stopper::Postgres {
                url,
                database: shown,
                pid,
            },
        }
    })
}

impl Target {
    pub fn is_postgres(&self) -> bool {
        matches!(self.conn, Conn::Postgres(_))
    }

    /// Runs `work`, the statement(s) `statement` on this connection. When `work` is
    /// dropped before it ends, the statement is stopped on the server (and recorded for
    /// [`settle_cancellations`]) instead of running on, holding its locks.
    pub async fn guarded<T>(
        &mut self,
        statement: &str,
        work: impl AsyncFnOnce(&mut Conn) -> T,
    ) -> T {
        // The connection outlives the watch: an interrupted SQLite handle is still open.
        let watch = Watch::arm(&self.stopper, statement);
        let out = work(&mut self.conn).await;
        watch.disarm();
        out
    }

    /// Runs the statements (in one transaction when asked) and returns every row.
    pub async fn rows(
        &mut self,
        statements: &str,
        transaction: bool,
    ) -> Result<Vec<Cells>, String> {
        self.guarded(statements, async |conn| match conn {
            Conn::Postgres(c) => Ok(fetch::<sqlx::Postgres>(c, statements, transaction)
                .await?
                .iter()
                .map(pg_cells)
                .collect()),
            Conn::Sqlite(c) => Ok(fetch::<sqlx::Sqlite>(c, statements, transaction)
                .await?
                .iter()
                .map(sqlite_cells)
                .collect()),
        })
        .await
    }

    /// Runs a query that must not change anything: in a read-only transaction that is
    /// rolled back (PostgreSQL), with `query_only` on (SQLite). A function that writes
    /// fails instead of writing.
    async fn read_only_rows(&mut self, query: &str) -> Result<Vec<Cells>, String> {
        self.guarded(query, async |conn| match conn {
            Conn::Postgres(c) => {
                let mut tx = c.begin().await.map_err(|e| describe(&e))?;
                sqlx::raw_sql("SET TRANSACTION READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| describe(&e))?;
                let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_owned()))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| describe(&e))?;
                tx.rollback().await.map_err(|e| describe(&e))?;
                Ok(rows.iter().map(pg_cells).collect())
            }
            Conn::Sqlite(c) => {
                sqlx::raw_sql("PRAGMA query_only = ON")
                    .execute(&mut *c)
                    .await
                    .map_err(|e| describe(&e))?;
                let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_owned()))
                    .fetch_all(&mut *c)
                    .await
                    .map_err(|e| describe(&e))?;
                Ok(rows.iter().map(sqlite_cells).collect())
            }
        })
        .await
    }

    pub async fn close(self) {
        let _ = match self.conn {
            Conn::Postgres(c) => c.close().await,
            Conn::Sqlite(c) => c.close().await,
        };
    }
}

/// A SQL error for people: the server's message and SQLSTATE, without the location in
/// the server's source that sqlx appends.
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("{} (SQLSTATE {code})", d.message()),
            None => d.message().to_owned(),
        },
        other => other.to_string(),
    }
}

async fn fetch<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    statements: &str,
    transaction: bool,
) -> Result<Vec<DB::Row>, String>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let query = || sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_owned()));
    if !transaction {
        return query()
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| describe(&e));
    }
    let mut tx = conn.begin().await.map_err(|e| describe(&e))?;
    let rows = query()
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| describe(&e))?;
    tx.commit().await.map_err(|e| describe(&e))?;
    Ok(rows)
}

/// PostgreSQL sends the rows of a simple query as text; numbers, booleans and JSON are
/// read back as such, every other type (timestamps, numerics, UUIDs ...) as its text.
fn pg_cells(row: &PgRow) -> Cells {
    row.columns()
        .iter()
        .map(|c| {
            let value = row.try_get_raw(c.ordinal()).ok().and_then(|v| {
                if v.is_null() {
                    return None;
                }
                let ty = v.type_info().name().to_owned();
                let text = match v.format() {
                    PgValueFormat::Text => v.as_str().ok()?.to_owned(),
                    PgValueFormat::Binary => return None,
                };
                Some(match ty.as_str() {
                    "INT2" | "INT4" | "INT8" | "OID" | "FLOAT4" | "FLOAT8" | "NUMERIC" => {
                        serde_json::from_str::<serde_json::Number>(&text)
                            .map(Value::Number)
                            .unwrap_or(Value::String(text))
                    }
                    "BOOL" => Value::Bool(text == "t"),
                    "JSON" | "JSONB" => serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    _ => Value::String(text),
                })
            });
            (c.name().to_owned(), value.unwrap_or(Value::Null))
        })
        .collect()
}

/// SQLite values by their storage class (blobs as lowercase hex).
fn sqlite_cells(row: &SqliteRow) -> Cells {
    row.columns()
        .iter()
        .map(|c| {
            let i = c.ordinal();
            let storage = row
                .try_get_raw(i)
                .ok()
                .filter(|v| !v.is_null())
                .map(|v| v.type_info().name().to_owned());
            let value = match storage.as_deref() {
                None => Value::Null,
                Some("INTEGER") => row
                    .try_get_unchecked::<i64, _>(i)
                    .map_or(Value::Null, Value::from),
                Some("REAL") => row
                    .try_get_unchecked::<f64, _>(i)
                    .map_or(Value::Null, Value::from),
                Some("BLOB") => row
                    .try_get_unchecked::<Vec<u8>, _>(i)
                    .map_or(Value::Null, |b| {
                        Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
                    }),
                Some(_) => row
                    .try_get_unchecked::<String, _>(i)
                    .map_or(Value::Null, Value::from),
            };
            (c.name().to_owned(), value)
        })
        .collect()
}

/// A SQL check: the first column of the first row must be true (or equal `expect`).
/// `read_only` runs it where it cannot write (for a dry run).
pub async fn sql_check(
    database: &str,
    query: &str,
    expect: Option<&Value>,
    read_only: bool,
) -> Result<(), String> {
    let work = async {
        let mut conn = connect(database).await?;
        let rows = if read_only {
            conn.read_only_rows(query).await
        } else {
            conn.rows(query, false).await
        };
        conn.close().await;
        rows
    };
    let outputs = match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(rows) => rows?.into_iter().next().unwrap_or_default(),
        Err(_) => return Err("the query timed out".into()),
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

/// The rows of a query, as fan-out items: the first column's value when there is one
/// column, otherwise an object per row.
pub async fn query_items(database: &str, query: &str) -> Result<Vec<Value>, String> {
    let mut conn = connect(database).await?;
    let rows = conn.rows(query, false).await;
    conn.close().await;
    Ok(rows?
        .into_iter()
        .map(|mut row| {
            if row.len() == 1 {
                row.swap_remove_index(0)
                    .map(|(_, v)| v)
                    .unwrap_or(Value::Null)
            } else {
                Value::Object(row.into_iter().collect())
            }
        })
        .collect())
}

/// Whether a value counts as "true" for a check without `expect`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(s.as_str(), "t" | "true" | "1"),
        _ => false,
    }
}

/// Whether what a check saw equals what it expects (numbers by value, booleans by truth,
/// anything against a string by its text).
pub fn same(got: &Value, want: &Value) -> bool {
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
