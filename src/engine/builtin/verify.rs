//! `verify`: restores a backup into a scratch database, checks it, and drops the
//! scratch database whatever happens.

use std::path::Path;
use std::time::Instant;

use indexmap::IndexMap;
use serde_json::Value;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

use super::Env;
use super::artifact::{
    Artifact, Outputs, Scrap, absolute, artifact_kind, check_recorded_sha, copy_file,
    random_suffix, recorded, source, sqlite_open, sqlite_path, sqlite_row_counts, took,
};
use super::pg::{
    ScratchDb, ident, pg_connect, pg_create_database, pg_database_name, pg_restore, pg_row_counts,
    pg_url_with_db, pg_version_num, sql_failed,
};
use crate::engine::action::{Outcome, StepLog};
use crate::engine::target::{self, Engine, describe};
use crate::runbook::with::VerifyWith;

/// Table → row count, and what those counts are.
type Expected = (String, IndexMap<String, i64>);

/// What the checks found.
#[derive(Default)]
struct Report {
    passed: Vec<String>,
    skipped: Vec<String>,
    tables: usize,
}

impl Report {
    fn skip(&mut self, log: &mut StepLog, why: String) {
        log.line("note", &format!("skipped: {why}"));
        self.skipped.push(why);
    }
}

pub async fn verify(p: &VerifyWith, mut env: Env<'_>) -> Outcome {
    match run(p, &mut env).await {
        Ok(o) => Outcome::Succeeded(o),
        Err(e) => Outcome::Failed(e),
    }
}

async fn run(p: &VerifyWith, env: &mut Env<'_>) -> Result<Outputs, String> {
    let started = Instant::now();
    let path = absolute(Path::new(&p.backup));
    if !path.exists() {
        return Err(format!("the backup `{}` does not exist", path.display()));
    }
    let rec = recorded(env.outputs, &path);
    let mut report = Report::default();
    match check_recorded_sha(&path, rec).await? {
        Some(c) => report.passed.push(c),
        None => report.skip(
            env.log,
            "checksum: no backup step of this run recorded this file".into(),
        ),
    }
    let kind = artifact_kind(&path)?;
    let recorded_counts: Option<Expected> = rec.and_then(|(id, out)| {
        let counts = out.get("row_counts")?.as_object()?;
        let counts = counts
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_i64()?)))
            .collect::<Option<IndexMap<_, _>>>()?;
        Some((format!("the row counts step `{id}` recorded"), counts))
    });
    let source_url = p.database.clone().or_else(|| {
        rec.and_then(|(_, o)| o.get("source"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    match kind {
        Artifact::Sqlite => {
            sqlite_verify(&path, p, recorded_counts, &mut report, env).await?;
        }
        Artifact::PgCustom | Artifact::PgDirectory => {
            pg_verify(
                &path,
                p,
                source_url.as_deref(),
                recorded_counts,
                &mut report,
                env,
            )
            .await?;
        }
    }
    let mut out = Outputs::new();
    out.insert("checks".into(), Value::from(report.passed));
    out.insert("skipped".into(), Value::from(report.skipped));
    out.insert(
        "restored_from".into(),
        Value::from(path.display().to_string()),
    );
    out.insert("tables".into(), Value::from(report.tables));
    out.insert(
        "format".into(),
        Value::from(match kind {
            Artifact::PgCustom => "custom",
            Artifact::PgDirectory => "directory",
            Artifact::Sqlite => "sqlite",
        }),
    );
    took(&mut out, started);
    Ok(out)
}

/// The counts to compare with: those recorded at backup time, else the source's live
/// counts (with `database`), else none.
async fn expected_counts(
    recorded: Option<Expected>,
    database: Option<&str>,
    report: &mut Report,
    log: &mut StepLog,
) -> Result<Option<Expected>, String> {
    if recorded.is_some() {
        return Ok(recorded);
    }
    let Some(db) = database else {
        report.skip(
            log,
            "row counts: no backup step recorded counts for this file, and no `database` to count"
                .into(),
        );
        return Ok(None);
    };
    log.line(
        "note",
        "no backup step recorded row counts for this file: comparing with the source's live counts (changes since the backup show as differences)",
    );
    let counts = match source(db)? {
        Engine::Postgres => {
            let mut c = pg_connect(db, None).await?;
            let counts = pg_row_counts(&mut c).await;
            let _ = c.close().await;
            counts?
        }
        Engine::Sqlite => {
            let mut c = sqlite_open(&sqlite_path(db), true).await?;
            let counts = sqlite_row_counts(&mut c).await;
            let _ = c.close().await;
            counts?
        }
    };
    Ok(Some((format!("the live row counts of `{db}`"), counts)))
}

/// The restored counts against the expected ones.
fn compare_counts(
    got: &IndexMap<String, i64>,
    (against, want): &Expected,
) -> Result<String, String> {
    let mut problems = Vec::new();
    for (table, w) in want {
        match got.get(table) {
            None => problems.push(format!("table `{table}` is missing")),
            Some(g) if g != w => problems.push(format!("`{table}` has {g} rows, not {w}")),
            Some(_) => {}
        }
    }
    for table in got.keys().filter(|t| !want.contains_key(*t)) {
        problems.push(format!("table `{table}` is not in {against}"));
    }
    if problems.is_empty() {
        return Ok(format!(
            "row counts of {} tables match {against}",
            want.len()
        ));
    }
    let more = problems.len().saturating_sub(10);
    problems.truncate(10);
    Err(format!(
        "the restored backup does not match {against}: {}{}",
        problems.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    ))
}

/// The `checks` of `with`, against the restored copy.
async fn custom_checks(url: &str, p: &VerifyWith, report: &mut Report) -> Result<(), String> {
    for c in &p.checks {
        let what = c.message.as_deref().unwrap_or(&c.sql);
        target::sql_check(url, &c.sql, c.expect.as_ref(), false)
            .await
            .map_err(|why| format!("check `{what}` on the restored backup: {why}"))?;
        report.passed.push(format!("check: {what}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

async fn pg_verify(
    path: &Path,
    p: &VerifyWith,
    source_url: Option<&str>,
    recorded: Option<Expected>,
    report: &mut Report,
    env: &mut Env<'_>,
) -> Result<(), String> {
    let server = p.server.as_deref().or(source_url).ok_or_else(|| {
        format!(
            "to verify the PostgreSQL backup `{}`, give `database` (the source) or `server` (where to restore a scratch copy)",
            path.display()
        )
    })?;
    if source(server)? != Engine::Postgres {
        return Err(format!(
            "`{server}` is not a PostgreSQL server, and `{}` is a pg_dump archive",
            path.display()
        ));
    }
    let expected = expected_counts(recorded, p.database.as_deref(), report, env.log).await?;
    // On the source's server, the scratch copy gets the source's encoding and locale.
    let like = match p.server {
        None => Some(pg_database_name(server)?),
        Some(_) => None,
    };
    let mut admin = pg_connect(server, None).await?;
    let version = match pg_version_num(&mut admin).await {
        Ok(v) => v,
        Err(e) => {
            let _ = admin.close().await;
            return Err(e);
        }
    };
    let name = format!("runbook_verify_{}", random_suffix());
    let mut scratch = ScratchDb {
        admin_url: server.to_owned(),
        name: name.clone(),
        force: version >= 130_000,
        armed: true,
    };
    let created = pg_create_database(&mut admin, &name, like.as_deref(), false, env.log).await;
    let _ = admin.close().await;
    let result = match created {
        Ok(()) => pg_check_copy(path, server, &name, p, expected.as_ref(), report, env.log).await,
        Err(e) => Err(e),
    };
    match scratch.drop_now(env.log).await {
        Ok(()) => env
            .log
            .line("note", &format!("dropped the scratch database `{name}`")),
        Err(e) => {
            // The guard tries once more as it goes; the run goes on either way.
            let why = format!("the scratch database `{name}` may be left behind: {e}");
            env.log.line("warning", &why);
            report.skipped.push(why);
        }
    }
    result
}

/// Restores into the scratch database and checks what came back.
async fn pg_check_copy(
    path: &Path,
    server: &str,
    name: &str,
    p: &VerifyWith,
    expected: Option<&Expected>,
    report: &mut Report,
    log: &mut StepLog,
) -> Result<(), String> {
    let url = pg_url_with_db(server, name);
    // The copy belongs to whoever runs the check: ownership and grants depend on the
    // roles of the server, not on the backup.
    pg_restore(
        path,
        &url,
        p.jobs.unwrap_or(1),
        &["--no-owner", "--no-privileges"],
        log,
    )
    .await
    .map_err(|e| {
        format!(
            "the backup `{}` does not restore (corrupted or truncated?): {e}",
            path.display()
        )
    })?;
    report
        .passed
        .push("restored into a scratch database with pg_restore --exit-on-error".into());
    let mut conn = pg_connect(server, Some(name)).await?;
    let inspected = pg_inspect(&mut conn, expected, report, log).await;
    let _ = conn.close().await;
    inspected?;
    custom_checks(&url, p, report).await
}

async fn pg_inspect(
    conn: &mut PgConnection,
    expected: Option<&Expected>,
    report: &mut Report,
    log: &mut StepLog,
) -> Result<(), String> {
    let counts = pg_row_counts(conn).await?;
    if counts.is_empty() {
        return Err("the restored backup has no tables".into());
    }
    report.tables = counts.len();
    if let Some(e) = expected {
        report.passed.push(compare_counts(&counts, e)?);
    }

    // Sequences that feed a column (serial, identity) must be ahead of its values, or
    // the next insert fails on a duplicate key.
    let owned: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT s.oid::regclass::text, t.oid::regclass::text, quote_ident(a.attname::text), ps.seqincrement
         FROM pg_depend d
         JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
         JOIN pg_sequence ps ON ps.seqrelid = s.oid
         JOIN pg_class t ON t.oid = d.refobjid
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
           AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(sql_failed("cannot list the sequences"))?;
    let mut behind = Vec::new();
    let mut checked = 0;
    for (seq, table, column, increment) in owned {
        if increment <= 0 {
            continue;
        }
        let (last, called): (i64, bool) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT last_value, is_called FROM {seq}"
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_failed(&format!("cannot read the sequence {seq}")))?;
        let max: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT max({column})::int8 FROM {table}"
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_failed(&format!("cannot read max({column}) of {table}")))?;
        let next = if called {
            last.saturating_add(increment)
        } else {
            last
        };
        checked += 1;
        if let Some(m) = max
            && m >= next
        {
            behind.push(format!(
                "sequence `{seq}` would next give {next}, but {table}.{column} already holds {m}"
            ));
        }
    }
    if !behind.is_empty() {
        return Err(format!(
            "sequences are behind their columns in the restored backup: {}",
            behind.join("; ")
        ));
    }
    report.passed.push(format!(
        "{checked} sequences are ahead of the columns they feed"
    ));

    // B-tree structure, where the amcheck extension is installed on the server.
    if let Err(e) = sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS amcheck")
        .execute(&mut *conn)
        .await
    {
        report.skip(
            log,
            format!("amcheck: the extension is not available ({})", describe(&e)),
        );
        return Ok(());
    }
    let indexes: Vec<(i64, String)> = sqlx::query_as(
        "SELECT c.oid::int8, c.oid::regclass::text
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_am am ON am.oid = c.relam
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready
           AND c.relpersistence <> 't'
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%'
         ORDER BY 2",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(sql_failed("cannot list the indexes"))?;
    for (oid, index) in &indexes {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SELECT bt_index_check({oid}::oid::regclass)"
        )))
        .execute(&mut *conn)
        .await
        .map_err(|e| format!("amcheck: index `{index}` is corrupt: {}", describe(&e)))?;
    }
    report.passed.push(format!(
        "amcheck bt_index_check passed on {} b-tree indexes",
        indexes.len()
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// SQLite

async fn sqlite_verify(
    path: &Path,
    p: &VerifyWith,
    recorded: Option<Expected>,
    report: &mut Report,
    env: &mut Env<'_>,
) -> Result<(), String> {
    if p.server.is_some() || p.jobs.is_some() {
        return Err("`server` and `jobs` apply to PostgreSQL backups only".into());
    }
    let expected = expected_counts(recorded, p.database.as_deref(), report, env.log).await?;
    std::fs::create_dir_all(&env.work_dir).map_err(|e| {
        format!(
            "cannot create the work directory `{}`: {e}",
            env.work_dir.display()
        )
    })?;
    let copy = Scrap::new(
        env.work_dir
            .join(format!("{}.verify-{}.db", env.step, random_suffix())),
    );
    let (from, to) = (path.to_path_buf(), copy.path().to_path_buf());
    tokio::task::spawn_blocking(move || copy_file(&from, &to))
        .await
        .map_err(|e| e.to_string())??;
    env.log.line(
        "note",
        &format!(
            "checking a copy of `{}`: `{}`",
            path.display(),
            copy.path().display()
        ),
    );
    let mut conn = sqlite_open(copy.path(), false).await?;
    let inspected = sqlite_inspect(&mut conn, path, expected.as_ref(), report).await;
    let _ = conn.close().await;
    inspected?;
    let url = format!("sqlite://{}", copy.path().display());
    custom_checks(&url, p, report).await
    // `copy` is removed here, whatever happened.
}

async fn sqlite_inspect(
    conn: &mut SqliteConnection,
    path: &Path,
    expected: Option<&Expected>,
    report: &mut Report,
) -> Result<(), String> {
    let shown = path.display().to_string();
    let corrupt =
        |what: &str, why: String| format!("the backup `{shown}` is corrupted: {what}: {why}");
    let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| corrupt("PRAGMA integrity_check", describe(&e)))?;
    if integrity != ["ok"] {
        let shown: Vec<&str> = integrity.iter().take(5).map(String::as_str).collect();
        return Err(corrupt("PRAGMA integrity_check", shown.join("; ")));
    }
    report.passed.push("PRAGMA integrity_check: ok".into());
    let fk: Vec<(String, Option<i64>, String)> =
        sqlx::query_as("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| corrupt("PRAGMA foreign_key_check", describe(&e)))?;
    if !fk.is_empty() {
        let shown: Vec<String> = fk
            .iter()
            .take(5)
            .map(|(t, r, parent)| {
                format!(
                    "{t} row {} refers to a missing {parent}",
                    r.map_or("?".into(), |r| r.to_string())
                )
            })
            .collect();
        return Err(format!(
            "PRAGMA foreign_key_check on the backup found {} broken references: {}",
            fk.len(),
            shown.join("; ")
        ));
    }
    report
        .passed
        .push("PRAGMA foreign_key_check: no broken references".into());
    let counts = sqlite_row_counts(conn).await?;
    if counts.is_empty() {
        return Err(format!("the backup `{}` has no tables", path.display()));
    }
    report.tables = counts.len();
    if let Some(e) = expected {
        report.passed.push(compare_counts(&counts, e)?);
    }
    // AUTOINCREMENT counters must be ahead of the rows they numbered.
    let has_seq: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql_failed("cannot read sqlite_master"))?;
    if has_seq.is_some() {
        let seqs: Vec<(String, i64)> = sqlx::query_as("SELECT name, seq FROM sqlite_sequence")
            .fetch_all(&mut *conn)
            .await
            .map_err(sql_failed("cannot read sqlite_sequence"))?;
        let mut behind = Vec::new();
        for (table, seq) in &seqs {
            let max: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT max(rowid) FROM {}",
                ident(table)
            )))
            .fetch_one(&mut *conn)
            .await
            .map_err(sql_failed(&format!("cannot read max(rowid) of {table}")))?;
            if let Some(m) = max
                && m > *seq
            {
                behind.push(format!("`{table}`: counter {seq}, but rowid {m} exists"));
            }
        }
        if !behind.is_empty() {
            return Err(format!(
                "AUTOINCREMENT counters are behind their tables in the backup: {}",
                behind.join("; ")
            ));
        }
        report.passed.push(format!(
            "{} AUTOINCREMENT counters are ahead of their rows",
            seqs.len()
        ));
    }
    Ok(())
}
