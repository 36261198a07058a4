//! PostgreSQL for `backup`, `verify` and `restore`: URLs and connections, row counts,
//! scratch databases dropped whatever happens, `pg_restore`.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::artifact::random_suffix;
use crate::engine::action::{self, StepLog};
use crate::engine::target::describe;
pub(super) use crate::sql::quote::ident;
pub(super) use crate::sql::url::{pg_url_with_db, pg_url_without_password};

/// How long to wait for a PostgreSQL server to answer a connection.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn pg_options(url: &str) -> Result<PgConnectOptions, String> {
    PgConnectOptions::from_str(url)
        .map_err(|e| format!("`{url}` is not a valid PostgreSQL URL: {e}"))
}

/// The name of the database a URL connects to (the user's name when it names none).
pub(super) fn pg_database_name(url: &str) -> Result<String, String> {
    let o = pg_options(url)?;
    Ok(o.get_database().unwrap_or(o.get_username()).to_owned())
}

/// Connects to the database of `url`, or to `database` on the same server.
pub(super) async fn pg_connect(url: &str, database: Option<&str>) -> Result<PgConnection, String> {
    let mut opts = pg_options(url)?;
    if let Some(d) = database {
        opts = opts.database(d);
    }
    let shown = match database {
        Some(d) => pg_url_with_db(&pg_url_without_password(url), d),
        None => pg_url_without_password(url),
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect to `{shown}`: {}", describe(&e))),
        Err(_) => Err(format!(
            "cannot connect to `{shown}`: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// A string literal for SQL.
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL error with what was being done.
pub(super) fn sql_failed(what: &str) -> impl Fn(sqlx::Error) -> String + '_ {
    move |e| format!("{what}: {}", describe(&e))
}

/// The tables whose rows a backup holds: ordinary tables outside the system schemas,
/// not those of extensions (their data is not dumped).
pub(super) const PG_TABLES: &str = "SELECT n.nspname::text, c.relname::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype = 'e')
    ORDER BY 1, 2";

/// How a table is named in `row_counts`: bare in `public`, else `schema.table`.
pub(super) fn table_key(schema: &str, name: &str) -> String {
    if schema == "public" {
        name.to_owned()
    } else {
        format!("{schema}.{name}")
    }
}

/// The exact row count of every table (in the connection's current transaction).
pub(super) async fn pg_row_counts(
    conn: &mut PgConnection,
) -> Result<IndexMap<String, i64>, String> {
    let tables: Vec<(String, String)> = sqlx::query_as(PG_TABLES)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql_failed("cannot list the tables"))?;
    let mut counts = IndexMap::new();
    for (schema, name) in tables {
        let q = format!("SELECT count(*) FROM {}.{}", ident(&schema), ident(&name));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut *conn)
            .await
            .map_err(sql_failed(&format!(
                "cannot count the rows of {schema}.{name}"
            )))?;
        counts.insert(table_key(&schema, &name), n);
    }
    Ok(counts)
}

/// A database the step made (a scratch copy, a restore not yet swapped in) that is
/// dropped whatever happens. The normal paths drop it themselves and disarm the guard;
/// when the future is dropped (a timeout, an abort) the guard starts `psql` to drop it,
/// a process of its own that finishes even if this one exits first.
pub(super) struct ScratchDb {
    /// A URL of the server (any database other than this one).
    pub(super) admin_url: String,
    pub(super) name: String,
    pub(super) force: bool,
    pub(super) armed: bool,
}

impl ScratchDb {
    pub(super) fn drop_sql(&self) -> String {
        format!(
            "DROP DATABASE IF EXISTS {}{}",
            ident(&self.name),
            if self.force { " WITH (FORCE)" } else { "" }
        )
    }

    /// Drops the database now; `Err` says why it could not be.
    pub(super) async fn drop_now(&mut self, log: &mut StepLog) -> Result<(), String> {
        let sql = self.drop_sql();
        log.line("sql", &sql);
        let mut conn = pg_connect(&self.admin_url, None).await?;
        let mut last = String::new();
        // Without FORCE (before PostgreSQL 13) a session that is still closing can hold
        // it for a moment.
        for _ in 0..20 {
            match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await
            {
                Ok(_) => {
                    self.armed = false;
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(e) => last = describe(&e),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _ = conn.close().await;
        Err(format!("cannot drop the database `{}`: {last}", self.name))
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if self.armed {
            psql_detached(&self.admin_url, &self.drop_sql());
        }
    }
}

/// Runs one statement with `psql` in a process of its own, not waited for: what a
/// guard does when the step's future is dropped (a timeout, an abort), so that it
/// finishes even if this process exits first.
pub(super) fn psql_detached(url: &str, sql: &str) {
    let child = std::process::Command::new("psql")
        .args(["-X", "-q", "-w", "-d", url, "-c", sql])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut c) = child {
        std::thread::spawn(move || c.wait());
    }
}

/// A statement run (with [`psql_detached`]) if this is dropped before [`OnDrop::disarm`].
pub(super) struct OnDrop {
    pub(super) url: String,
    pub(super) sql: Option<String>,
}

impl OnDrop {
    pub(super) fn disarm(&mut self) {
        self.sql = None;
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(sql) = self.sql.take() {
            psql_detached(&self.url, &sql);
        }
    }
}

/// The server version as a number (`150020`).
pub(super) async fn pg_version_num(conn: &mut PgConnection) -> Result<i64, String> {
    let v: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .fetch_one(conn)
        .await
        .map_err(sql_failed("cannot read the server version"))?;
    v.parse()
        .map_err(|_| format!("unexpected server_version_num `{v}`"))
}

/// Creates an empty database `name` from `template0`, with the encoding and locale of
/// `like` (an existing database of the server) when given, and its owner when `owner`.
pub(super) async fn pg_create_database(
    conn: &mut PgConnection,
    name: &str,
    like: Option<&str>,
    owner: bool,
    log: &mut StepLog,
) -> Result<(), String> {
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", ident(name));
    if let Some(like) = like {
        // to_jsonb gives every column whatever the server version (locale providers
        // came in 15, `datlocale` in 17).
        let row: Option<String> = sqlx::query_scalar(
            "SELECT (to_jsonb(d) || jsonb_build_object('owner', pg_get_userbyid(d.datdba), 'enc', pg_encoding_to_char(d.encoding)))::text
             FROM pg_database d WHERE d.datname = $1",
        )
        .bind(like)
        .fetch_optional(&mut *conn)
        .await
        .map_err(sql_failed("cannot read the database's settings"))?;
        if let Some(row) = row.and_then(|r| serde_json::from_str::<Value>(&r).ok()) {
            let s = |k: &str| row.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
            if owner && let Some(o) = s("owner") {
                sql.push_str(&format!(" OWNER {}", ident(o)));
            }
            if let Some(e) = s("enc") {
                sql.push_str(&format!(" ENCODING {}", literal(e)));
            }
            if let Some(c) = s("datcollate") {
                sql.push_str(&format!(" LC_COLLATE {}", literal(c)));
            }
            if let Some(c) = s("datctype") {
                sql.push_str(&format!(" LC_CTYPE {}", literal(c)));
            }
            if s("datlocprovider") == Some("i") {
                sql.push_str(" LOCALE_PROVIDER icu");
                if let Some(l) = s("daticulocale").or(s("datlocale")) {
                    sql.push_str(&format!(" ICU_LOCALE {}", literal(l)));
                }
            }
        }
    }
    log.line("sql", &sql);
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map_err(sql_failed(&format!("cannot create the database `{name}`")))?;
    Ok(())
}

/// `pg_restore` of an archive into the database of `url`.
pub(super) async fn pg_restore(
    archive: &Path,
    url: &str,
    jobs: u32,
    extra: &[&str],
    log: &mut StepLog,
) -> Result<(), String> {
    let mut args = vec!["--exit-on-error".to_owned(), "--no-password".to_owned()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    if jobs > 1 {
        args.push(format!("--jobs={jobs}"));
    }
    args.push(format!("--dbname={url}"));
    args.push(archive.display().to_string());
    action::program("pg_restore", &args, &IndexMap::new(), log)
        .await
        .map(|_| ())
}

/// A scratch or new database name: `<base>_<what>_<random>`, within PostgreSQL's 63
/// bytes.
pub(super) fn derived_name(base: &str, what: &str) -> String {
    let suffix = format!("_{what}_{}", random_suffix());
    let mut base = base.to_owned();
    while base.len() + suffix.len() > 63 {
        base.pop();
    }
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_database_of_a_url() {
        let u = "postgres://u:p%40ss@h:5432/shop?sslmode=disable";
        assert_eq!(pg_database_name(u).unwrap(), "shop");
    }

    #[test]
    fn names_fit() {
        let n = derived_name(&"a".repeat(80), "restore");
        assert!(n.len() <= 63, "{n}");
        assert!(n.contains("_restore_"));
    }
}
