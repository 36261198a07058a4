//! `backup`, `verify` and `restore`, with the field's own tools: `pg_dump` and
//! `pg_restore` for PostgreSQL, `VACUUM INTO` for SQLite.
//!
//! An artifact is written under a temporary name beside its final place and renamed
//! only once it is complete, so a backup that fails (a full disk, a dead server, a
//! timeout) leaves no partial file where a later step would look for one.

#[path = "restore.rs"]
mod restore;
#[path = "verify.rs"]
mod verify;

pub use restore::restore;
pub use verify::verify;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::Env;
use crate::engine::action::{self, Outcome, StepLog};
use crate::engine::target::{self, Conn, Engine, describe};
use crate::runbook::Kind;

/// A step's outputs.
type Outputs = IndexMap<String, Value>;

/// How long to wait for a PostgreSQL server to answer a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a `backup`, `verify` or `restore` step's `with` as the loader checks it.
pub fn check_params(kind: Kind, with: &IndexMap<String, Value>) -> Result<(), String> {
    match kind {
        Kind::Verify => verify::check_params(with),
        Kind::Restore => restore::check_params(with),
        _ => super::params::<BackupParams>(Kind::Backup, with).map(|_| ()),
    }
}

/// `with` of a `backup` step.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupParams {
    /// The database: `postgres://...` or `sqlite://PATH`.
    database: String,
    /// Where the artifact goes: a file (a directory for `format: directory`), or an
    /// existing directory (or a path ending in `/`) to put `<database>.dump|.db` in.
    to: Option<String>,
    /// PostgreSQL only: `custom` (default) or `directory`.
    format: Option<Format>,
    /// PostgreSQL `format: directory` only: parallel `pg_dump` jobs.
    #[serde(default, deserialize_with = "count")]
    jobs: Option<u32>,
}

/// A `pg_dump` archive format.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Format {
    Custom,
    Directory,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Custom => "custom",
            Format::Directory => "directory",
        }
    }
}

/// A positive count written as a number or, rendered from a template, as text.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Number(u32),
        Text(String),
    }
    let n = match Option::<N>::deserialize(d)? {
        None => return Ok(None),
        Some(N::Number(n)) => n,
        Some(N::Text(t)) => t.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("expected a positive whole number, got `{t}`"))
        })?,
    };
    if n == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(Some(n))
}

/// `backup`: a consistent copy of the database in one file (or directory), with its
/// checksum and the row count of every table at the moment it was taken.
pub async fn backup(with: &IndexMap<String, Value>, mut env: Env<'_>) -> Outcome {
    let p: BackupParams = match super::params(Kind::Backup, with) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e),
    };
    let started = Instant::now();
    let result = match source(&p.database) {
        Ok(Engine::Postgres) => pg_backup(&p, &mut env).await,
        Ok(Engine::Sqlite) => sqlite_backup(&p, &mut env).await,
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

/// Adds `duration` (text, as `3.2s`) and `duration_ms` (a number) to the outputs.
fn took(out: &mut Outputs, started: Instant) {
    let d = started.elapsed();
    out.insert(
        "duration".into(),
        Value::from(format!("{:.1}s", d.as_secs_f64())),
    );
    out.insert("duration_ms".into(), Value::from(d.as_millis() as u64));
}

/// The kind of database a URL names, refusing a SQLite URL without a file (a backup or a
/// restore needs one).
fn source(url: &str) -> Result<Engine, String> {
    let engine = target::engine(url)?;
    let path = sqlite_path(url);
    if engine == Engine::Sqlite && (path.as_os_str().is_empty() || path == Path::new(":memory:")) {
        return Err(format!(
            "`{url}` is not a SQLite database file; write sqlite://PATH"
        ));
    }
    Ok(engine)
}

/// The file of a `sqlite://PATH[?...]` URL.
fn sqlite_path(url: &str) -> PathBuf {
    target::sqlite_parts(url).0
}

// ---------------------------------------------------------------------------------------
// PostgreSQL URLs and connections

/// Splits `postgres://AUTHORITY[/DB][?QUERY]` at the end of the authority and of the
/// path.
fn pg_url_bounds(url: &str) -> (usize, usize) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let auth_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let path_end = url[auth_end..]
        .find('?')
        .map_or(url.len(), |i| auth_end + i);
    (auth_end, path_end)
}

/// The URL with another database name.
fn pg_url_with_db(url: &str, name: &str) -> String {
    let (auth_end, path_end) = pg_url_bounds(url);
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{}/{encoded}{}", &url[..auth_end], &url[path_end..])
}

/// The URL without its password (recorded in outputs; the password then comes from
/// `PGPASSWORD` or `~/.pgpass`, as for the tools).
pub(crate) fn pg_url_without_password(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (auth_end, _) = pg_url_bounds(url);
    let auth = &url[start..auth_end];
    match auth.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{}{user}@{host}{}", &url[..start], &url[auth_end..])
        }
        _ => url.to_owned(),
    }
}

fn pg_options(url: &str) -> Result<PgConnectOptions, String> {
    PgConnectOptions::from_str(url)
        .map_err(|e| format!("`{url}` is not a valid PostgreSQL URL: {e}"))
}

/// The name of the database a URL connects to (the user's name when it names none).
fn pg_database_name(url: &str) -> Result<String, String> {
    let o = pg_options(url)?;
    Ok(o.get_database().unwrap_or(o.get_username()).to_owned())
}

/// Connects to the database of `url`, or to `database` on the same server.
async fn pg_connect(url: &str, database: Option<&str>) -> Result<PgConnection, String> {
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

/// An identifier quoted for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal for SQL.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL error with what was being done.
fn sql_failed(what: &str) -> impl Fn(sqlx::Error) -> String + '_ {
    move |e| format!("{what}: {}", describe(&e))
}

/// The tables whose rows a backup holds: ordinary tables outside the system schemas,
/// not those of extensions (their data is not dumped).
const PG_TABLES: &str = "SELECT n.nspname::text, c.relname::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype = 'e')
    ORDER BY 1, 2";

/// How a table is named in `row_counts`: bare in `public`, else `schema.table`.
fn table_key(schema: &str, name: &str) -> String {
    if schema == "public" {
        name.to_owned()
    } else {
        format!("{schema}.{name}")
    }
}

/// The exact row count of every table (in the connection's current transaction).
async fn pg_row_counts(conn: &mut PgConnection) -> Result<IndexMap<String, i64>, String> {
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

// ---------------------------------------------------------------------------------------
// Files

/// A random suffix for scratch names (lowercase hex).
fn random_suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?} {} {}",
        std::time::SystemTime::now(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    hex(&Sha256::digest(seed.as_bytes()))[..10].to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file or directory that is removed when dropped (a failure, a timeout) unless
/// [`Scrap::keep`] was called.
struct Scrap {
    path: Option<PathBuf>,
}

impl Scrap {
    fn new(path: PathBuf) -> Scrap {
        Scrap { path: Some(path) }
    }

    fn path(&self) -> &Path {
        self.path.as_deref().expect("not kept yet")
    }

    fn keep(mut self) -> PathBuf {
        self.path.take().expect("kept once")
    }
}

impl Drop for Scrap {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            remove_any(&p);
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut side = p.clone().into_os_string();
                side.push(suffix);
                let _ = std::fs::remove_file(side);
            }
        }
    }
}

/// Removes a file or a directory tree, if there is one.
fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// A temporary name beside `path` (same directory, so the final rename is atomic).
fn temp_beside(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}-{}", random_suffix()))
}

/// An absolute path (relative ones are read from the current directory, as the
/// runner's other paths are).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Creates the directory an artifact goes in, with a message that says why not.
fn make_parent(path: &Path, what: &str) -> Result<(), String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the directory `{}` for {what}: {e}",
                dir.display()
            )
        }),
        _ => Ok(()),
    }
}

/// Flushes a file, or every file of a directory, to disk.
fn sync_tree(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            sync_tree(&entry?.path())?;
        }
    }
    std::fs::File::open(path)?.sync_all()
}

fn sync_dir_of(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
}

/// Moves a finished artifact to its place, durably (never over another), and logs it.
fn put_in_place(
    tmp: Scrap,
    dest: &Path,
    source: &str,
    tables: usize,
    size: u64,
    log: &mut StepLog,
) -> Result<PathBuf, String> {
    sync_tree(tmp.path())
        .map_err(|e| format!("cannot flush `{}` to disk: {e}", tmp.path().display()))?;
    // A backup never replaces another: two tenants' databases with one name, or a fixed
    // `to` used by two runs, must not quietly leave one backup where two were taken.
    if dest.exists() {
        return Err(format!(
            "`{}` already exists, and a backup never replaces another; choose a `to` of its own (with `{{{{run.id}}}}` in it, say)",
            dest.display()
        ));
    }
    std::fs::rename(tmp.path(), dest)
        .map_err(|e| format!("cannot move the backup to `{}`: {e}", dest.display()))?;
    tmp.keep();
    sync_dir_of(dest);
    log.line(
        "note",
        &format!(
            "backed up `{source}` ({tables} tables, {size} bytes) to `{}`",
            dest.display()
        ),
    );
    Ok(dest.to_path_buf())
}

/// The SHA-256 of a file.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Size and SHA-256 of an artifact: of the file, or for a directory (`pg_dump
/// --format=directory`) the total size and the SHA-256 of its manifest, one line
/// `SHA256  NAME` per file, sorted by name.
async fn digest(path: &Path) -> Result<(u64, String), String> {
    let p = path.to_path_buf();
    let work = move || -> std::io::Result<(u64, String)> {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            files.sort();
            let mut size = 0;
            let mut manifest = String::new();
            for f in files {
                size += std::fs::metadata(&f)?.len();
                let name = f.file_name().unwrap_or_default().to_string_lossy();
                manifest.push_str(&format!("{}  {name}\n", sha256_file(&f)?));
            }
            Ok((size, hex(&Sha256::digest(manifest.as_bytes()))))
        } else {
            Ok((std::fs::metadata(&p)?.len(), sha256_file(&p)?))
        }
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// What an artifact is, from its first bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Artifact {
    PgCustom,
    PgDirectory,
    Sqlite,
}

fn artifact_kind(path: &Path) -> Result<Artifact, String> {
    let shown = path.display();
    if path.is_dir() {
        return if path.join("toc.dat").is_file() {
            Ok(Artifact::PgDirectory)
        } else {
            Err(format!(
                "`{shown}` is a directory without `toc.dat`: not a pg_dump directory-format backup"
            ))
        };
    }
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| {
            let mut got = 0;
            while got < head.len() {
                match f.read(&mut head[got..])? {
                    0 => break,
                    k => got += k,
                }
            }
            Ok(got)
        })
        .map_err(|e| format!("cannot read the backup `{shown}`: {e}"))?;
    if n == 0 {
        Err(format!("the backup `{shown}` is empty (0 bytes)"))
    } else if head[..n].starts_with(b"PGDMP") {
        Ok(Artifact::PgCustom)
    } else if n == 16 && &head == b"SQLite format 3\0" {
        Ok(Artifact::Sqlite)
    } else {
        Err(format!(
            "the backup `{shown}` is neither a pg_dump archive nor a SQLite database: it is corrupted or not a backup"
        ))
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

// ---------------------------------------------------------------------------------------
// Backup

async fn pg_backup(p: &BackupParams, env: &mut Env<'_>) -> Result<Outputs, String> {
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

/// Opens a SQLite file that must exist, without creating anything.
async fn sqlite_open(path: &Path, read_only: bool) -> Result<SqliteConnection, String> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .read_only(read_only);
    SqliteConnection::connect_with(&opts).await.map_err(|e| {
        format!(
            "cannot open the SQLite database `{}`: {}",
            path.display(),
            describe(&e)
        )
    })
}

/// The exact row count of every table of a SQLite database.
async fn sqlite_row_counts(conn: &mut SqliteConnection) -> Result<IndexMap<String, i64>, String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(sql_failed("cannot list the tables"))?;
    let mut counts = IndexMap::new();
    for t in tables {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            ident(&t)
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_failed(&format!("cannot count the rows of {t}")))?;
        counts.insert(t, n);
    }
    Ok(counts)
}

async fn sqlite_backup(p: &BackupParams, env: &mut Env<'_>) -> Result<Outputs, String> {
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

// ---------------------------------------------------------------------------------------
// What verify and restore share

/// The outputs a `backup` step recorded for this artifact (the latest step whose
/// `path` is the same file), with that step's id.
fn recorded<'a>(
    outputs: &'a IndexMap<String, Outputs>,
    artifact: &Path,
) -> Option<(&'a str, &'a Outputs)> {
    let want = absolute(artifact);
    let canonical = std::fs::canonicalize(artifact).ok();
    outputs.iter().rev().find_map(|(id, out)| {
        let p = Path::new(out.get("path")?.as_str()?);
        out.get("sha256")?;
        let same = absolute(p) == want
            || canonical.is_some() && std::fs::canonicalize(p).ok() == canonical;
        same.then_some((id.as_str(), out))
    })
}

/// Compares the artifact with the checksum its backup step recorded; `Ok(Some(text))`
/// says what was checked.
async fn check_recorded_sha(
    artifact: &Path,
    rec: Option<(&str, &Outputs)>,
) -> Result<Option<String>, String> {
    let Some((step, out)) = rec else {
        return Ok(None);
    };
    let Some(want) = out.get("sha256").and_then(Value::as_str) else {
        return Ok(None);
    };
    let (size, got) = digest(artifact).await?;
    if got != want {
        let want_size = out.get("size_bytes").and_then(Value::as_u64);
        let sizes = match want_size {
            Some(w) if w > size => {
                format!(" ({size} bytes now, {w} when step `{step}` wrote it: truncated?)")
            }
            Some(w) if w < size => {
                format!(" ({size} bytes now, {w} when step `{step}` wrote it: written to since?)")
            }
            _ => String::new(),
        };
        return Err(format!(
            "the backup `{}` has changed since step `{step}` took it: its SHA-256 is {got}, not {want}{sizes}; it is corrupted",
            artifact.display()
        ));
    }
    Ok(Some(format!(
        "SHA-256 matches the one step `{step}` recorded"
    )))
}

/// A database the step made (a scratch copy, a restore not yet swapped in) that is
/// dropped whatever happens. The normal paths drop it themselves and disarm the guard;
/// when the future is dropped (a timeout, an abort) the guard starts `psql` to drop it,
/// a process of its own that finishes even if this one exits first.
struct ScratchDb {
    /// A URL of the server (any database other than this one).
    admin_url: String,
    name: String,
    force: bool,
    armed: bool,
}

impl ScratchDb {
    fn drop_sql(&self) -> String {
        format!(
            "DROP DATABASE IF EXISTS {}{}",
            ident(&self.name),
            if self.force { " WITH (FORCE)" } else { "" }
        )
    }

    /// Drops the database now; `Err` says why it could not be.
    async fn drop_now(&mut self, log: &mut StepLog) -> Result<(), String> {
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
fn psql_detached(url: &str, sql: &str) {
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
struct OnDrop {
    url: String,
    sql: Option<String>,
}

impl OnDrop {
    fn disarm(&mut self) {
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
async fn pg_version_num(conn: &mut PgConnection) -> Result<i64, String> {
    let v: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .fetch_one(conn)
        .await
        .map_err(sql_failed("cannot read the server version"))?;
    v.parse()
        .map_err(|_| format!("unexpected server_version_num `{v}`"))
}

/// Creates an empty database `name` from `template0`, with the encoding and locale of
/// `like` (an existing database of the server) when given, and its owner when `owner`.
async fn pg_create_database(
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
async fn pg_restore(
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
fn derived_name(base: &str, what: &str) -> String {
    let suffix = format!("_{what}_{}", random_suffix());
    let mut base = base.to_owned();
    while base.len() + suffix.len() > 63 {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// Copies a file to a new name (never over an existing one) and flushes it to disk.
fn copy_file(from: &Path, to: &Path) -> Result<u64, String> {
    let mut src =
        std::fs::File::open(from).map_err(|e| format!("cannot read `{}`: {e}", from.display()))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| format!("cannot write `{}`: {e}", to.display()))?;
    let n = std::io::copy(&mut src, &mut dst)
        .and_then(|n| dst.flush().map(|()| n))
        .and_then(|n| dst.sync_all().map(|()| n))
        .map_err(|e| {
            format!(
                "cannot copy `{}` to `{}`: {e}",
                from.display(),
                to.display()
            )
        })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = "postgres://u:p%40ss@h:5432/shop?sslmode=disable";
        assert_eq!(
            pg_url_with_db(u, "x_1"),
            "postgres://u:p%40ss@h:5432/x_1?sslmode=disable"
        );
        assert_eq!(
            pg_url_without_password(u),
            "postgres://u@h:5432/shop?sslmode=disable"
        );
        assert_eq!(pg_url_with_db("postgres://h", "a b"), "postgres://h/a%20b");
        assert_eq!(
            pg_url_with_db("postgres://h?x=1", "d"),
            "postgres://h/d?x=1"
        );
        assert_eq!(pg_database_name(u).unwrap(), "shop");
    }

    #[test]
    fn names_fit() {
        let n = derived_name(&"a".repeat(80), "restore");
        assert!(n.len() <= 63, "{n}");
        assert!(n.contains("_restore_"));
    }
}
