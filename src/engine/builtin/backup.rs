//! `backup`: a consistent copy of the database with the field's own tools, `pg_dump` for
//! PostgreSQL, `VACUUM INTO` for SQLite (`verify` and `restore` read what it writes;
//! what the three share is in `artifact` and `pg`).
//!
//! An artifact is written under a temporary name beside its final place and renamed
//! only once it is complete, so a backup that fails (a full disk, a dead server, a
//! timeout) leaves no partial file where a later step would look for one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indexmap::IndexMap;
use serde_json::Value;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::Env;
use super::artifact::{
    Artifact, Outputs, Scrap, absolute, artifact_kind, digest, make_parent, put_in_place, source,
    sqlite_open, sqlite_path, sqlite_row_counts, temp_beside, took,
};
use super::pg::{literal, pg_connect, pg_row_counts, pg_url_without_password, sql_failed};
use crate::engine::action::{self, Outcome, StepLog};
use crate::engine::target::{self, Conn, Engine, describe};
use crate::runbook::with::{BackupFormat as Format, BackupWith};

/// `backup`: a consistent copy of the database in one file (or directory), with its
/// checksum and the row count of every table at the moment it was taken.
pub async fn backup(p: &BackupWith, mut env: Env<'_>) -> Outcome {
    let started = Instant::now();
    let result = match source(&p.database) {
        Ok(Engine::Postgres) => pg_backup(p, &mut env).await,
        Ok(Engine::Sqlite) => sqlite_backup(p, &mut env).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(mut out) => {
            took(&mut out, started);
            Outcome::Succeeded(out)
        }
        Err(e) => Outcome::Failed(e),
    }
}

/// Opens a REPEATABLE READ, read-only transaction and exports its snapshot for
/// `pg_dump --snapshot`, so the counts and the dump see the same data. `None` when the
/// server cannot export one (the counts are then taken right before the dump).
async fn pg_snapshot(conn: &mut PgConnection, log: &mut StepLog) -> Result<Option<String>, String> {
    let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
    sqlx::raw_sql(begin)
        .execute(&mut *conn)
        .await
        .map_err(sql_failed("cannot start the backup transaction"))?;
    match sqlx::query_scalar::<_, String>("SELECT pg_export_snapshot()")
        .fetch_one(&mut *conn)
        .await
    {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            log.line(
                "note",
                &format!(
                    "cannot export a snapshot ({}); the row counts are taken right before the dump, not in its snapshot",
                    describe(&e)
                ),
            );
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            sqlx::raw_sql(begin)
                .execute(&mut *conn)
                .await
                .map_err(sql_failed("cannot start the backup transaction"))?;
            Ok(None)
        }
    }
}

/// Where the artifact goes: `to` as given, inside `to` when it is a directory (or ends
/// with `/`), or `<work dir>/<step>.<ext>`.
fn artifact_path(
    to: Option<&str>,
    env: &Env<'_>,
    database: &str,
    ext: &str,
    dir_format: bool,
) -> PathBuf {
    let named = |dir: &Path| dir.join(format!("{database}.{ext}"));
    let p = match to {
        None => env.work_dir.join(format!("{}.{ext}", env.step)),
        Some(t) if t.ends_with('/') => named(Path::new(t)),
        Some(t) => {
            let p = Path::new(t);
            // An earlier directory-format backup is not a place to put a new one in;
            // it is refused as a destination that exists.
            let earlier_dump = dir_format && p.join("toc.dat").exists();
            if p.is_dir() && !earlier_dump {
                named(p)
            } else {
                p.to_path_buf()
            }
        }
    };
    absolute(&p)
}

async fn pg_backup(p: &BackupWith, env: &mut Env<'_>) -> Result<Outputs, String> {
    let url = p.database.as_str();
    let format = p.format.unwrap_or(Format::Custom);
    let jobs = p.jobs.unwrap_or(1);
    if jobs > 1 && format == Format::Custom {
        env.log.line(
            "note",
            "pg_dump writes a custom-format archive with one job; `jobs` applies to `format: directory`",
        );
    }
    let mut conn = pg_connect(url, None).await?;
    let snapshot = pg_snapshot(&mut conn, env.log).await?;
    let (database, version): (String, String) =
        sqlx::query_as("SELECT current_database()::text, current_setting('server_version')")
            .fetch_one(&mut conn)
            .await
            .map_err(sql_failed("cannot read the server version"))?;
    let counts = pg_row_counts(&mut conn).await?;
    if counts.is_empty() {
        return Err(format!(
            "the database `{database}` has no tables: nothing to back up (is `database` the right one?)"
        ));
    }
    let dest = artifact_path(
        p.to.as_deref(),
        env,
        &database,
        "dump",
        format == Format::Directory,
    );
    make_parent(&dest, "the backup")?;
    let tmp = Scrap::new(temp_beside(&dest, "partial"));
    let mut args = vec![
        format!("--format={}", format.as_str()),
        format!("--file={}", tmp.path().display()),
        "--no-password".to_owned(),
    ];
    if let Some(s) = &snapshot {
        args.push(format!("--snapshot={s}"));
    }
    if format == Format::Directory && jobs > 1 {
        args.push(format!("--jobs={jobs}"));
    }
    args.push(format!("--dbname={url}"));
    let dumped = action::program("pg_dump", &args, &IndexMap::new(), env.log).await;
    // The snapshot is needed until pg_dump has imported it; it is done now.
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
    let _ = conn.close().await;
    dumped.map_err(|e| format!("the backup of `{database}` failed: {e}"))?;
    let (size, sha) = digest(tmp.path()).await?;
    if size == 0 {
        return Err(format!(
            "the backup of `{database}` is empty (0 bytes); nothing was kept"
        ));
    }
    let written = artifact_kind(tmp.path())
        .map_err(|e| format!("pg_dump did not write a usable archive: {e}"))?;
    debug_assert!(matches!(
        written,
        Artifact::PgCustom | Artifact::PgDirectory
    ));
    let path = put_in_place(tmp, &dest, &database, counts.len(), size, env.log)?;
    Ok(outputs(
        &path,
        size,
        sha,
        &database,
        &version,
        format.as_str(),
        counts,
        snapshot.is_some(),
        Some(pg_url_without_password(url)),
    ))
}

#[allow(clippy::too_many_arguments)]
fn outputs(
    path: &Path,
    size: u64,
    sha: String,
    database: &str,
    version: &str,
    format: &str,
    counts: IndexMap<String, i64>,
    consistent: bool,
    source: Option<String>,
) -> Outputs {
    let mut out = Outputs::new();
    out.insert("path".into(), Value::from(path.display().to_string()));
    out.insert("size_bytes".into(), Value::from(size));
    out.insert("sha256".into(), Value::from(sha));
    out.insert("format".into(), Value::from(format));
    out.insert("database".into(), Value::from(database));
    out.insert("server_version".into(), Value::from(version));
    out.insert("tables".into(), Value::from(counts.len()));
    out.insert(
        "row_counts".into(),
        Value::Object(
            counts
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect(),
        ),
    );
    out.insert("row_counts_in_snapshot".into(), Value::from(consistent));
    if let Some(s) = source {
        out.insert("source".into(), Value::from(s));
    }
    out
}

async fn sqlite_backup(p: &BackupWith, env: &mut Env<'_>) -> Result<Outputs, String> {
    if p.format.is_some() || p.jobs.is_some() {
        return Err(
            "`format` and `jobs` apply to PostgreSQL backups only, not to a SQLite database".into(),
        );
    }
    let file = sqlite_path(&p.database);
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "database".into());
    let mut conn = target::connect(&p.database).await?;
    if conn.is_postgres() {
        conn.close().await;
        return Err(format!("`{}` is not a SQLite database", p.database));
    }
    let dest = artifact_path(p.to.as_deref(), env, &name, "db", false);
    if let Err(e) = make_parent(&dest, "the backup") {
        conn.close().await;
        return Err(e);
    }
    let tmp = Scrap::new(temp_beside(&dest, "partial"));
    // VACUUM INTO writes a consistent copy of a live database (one read transaction),
    // compacted; it refuses to write over an existing file, hence the fresh name.
    let statement = format!("VACUUM INTO {}", literal(&tmp.path().display().to_string()));
    env.log.line("sql", &statement);
    let copied = conn
        .guarded(&statement, async |c| match c {
            Conn::Sqlite(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                .execute(c)
                .await
                .map(|_| ()),
            Conn::Postgres(_) => unreachable!("checked above"),
        })
        .await
        .map_err(|e| {
            format!(
                "the backup of `{}` to `{}` failed: {}",
                file.display(),
                dest.display(),
                describe(&e)
            )
        });
    conn.close().await;
    copied?;
    // The counts are those of the copy: exactly what the backup holds, taken in the
    // same read transaction as the copy itself.
    let mut copy = sqlite_open(tmp.path(), true).await?;
    let counted = sqlite_row_counts(&mut copy).await;
    let version: Result<String, String> = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut copy)
        .await
        .map_err(sql_failed("cannot read the SQLite version"));
    let _ = copy.close().await;
    let (counts, version) = (counted?, version?);
    if counts.is_empty() {
        return Err(format!(
            "the database `{}` has no tables: nothing to back up (is `database` the right one?)",
            file.display()
        ));
    }
    let (size, sha) = digest(tmp.path()).await?;
    if size == 0 {
        return Err(format!(
            "the backup of `{}` is empty (0 bytes)",
            file.display()
        ));
    }
    let path = put_in_place(
        tmp,
        &dest,
        &file.display().to_string(),
        counts.len(),
        size,
        env.log,
    )?;
    Ok(outputs(
        &path,
        size,
        sha,
        &name,
        &version,
        "sqlite",
        counts,
        true,
        Some(p.database.clone()),
    ))
}
