//! What `backup`, `verify` and `restore` share about artifacts and files: outputs,
//! scratch and temporary names, atomic placement (written beside, synced, renamed),
//! checksums, the kind of an artifact, SQLite files, and the outputs a `backup` step
//! recorded for an artifact.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indexmap::IndexMap;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::pg::{ident, sql_failed};
use crate::engine::action::StepLog;
use crate::engine::target::{self, Engine, describe};

/// A step's outputs.
pub(super) type Outputs = IndexMap<String, Value>;

/// Adds `duration` (text, as `3.2s`) and `duration_ms` (a number) to the outputs.
pub(super) fn took(out: &mut Outputs, started: Instant) {
    let d = started.elapsed();
    out.insert(
        "duration".into(),
        Value::from(format!("{:.1}s", d.as_secs_f64())),
    );
    out.insert("duration_ms".into(), Value::from(d.as_millis() as u64));
}

/// The kind of database a URL names, refusing a SQLite URL without a file (a backup or a
/// restore needs one).
pub(super) fn source(url: &str) -> Result<Engine, String> {
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
pub(super) fn sqlite_path(url: &str) -> PathBuf {
    target::sqlite_parts(url).0
}

/// A random suffix for scratch names (lowercase hex).
pub(super) fn random_suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?} {} {}",
        std::time::SystemTime::now(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    hex(&Sha256::digest(seed.as_bytes()))[..10].to_owned()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file or directory that is removed when dropped (a failure, a timeout) unless
/// [`Scrap::keep`] was called.
pub(super) struct Scrap {
    path: Option<PathBuf>,
}

impl Scrap {
    pub(super) fn new(path: PathBuf) -> Scrap {
        Scrap { path: Some(path) }
    }

    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().expect("not kept yet")
    }

    pub(super) fn keep(mut self) -> PathBuf {
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
pub(super) fn remove_any(p: &Path) {
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
pub(super) fn temp_beside(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}-{}", random_suffix()))
}

/// An absolute path (relative ones are read from the current directory, as the
/// runner's other paths are).
pub(super) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Creates the directory an artifact goes in, with a message that says why not.
pub(super) fn make_parent(path: &Path, what: &str) -> Result<(), String> {
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
pub(super) fn sync_tree(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            sync_tree(&entry?.path())?;
        }
    }
    std::fs::File::open(path)?.sync_all()
}

pub(super) fn sync_dir_of(path: &Path) {
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
pub(super) fn put_in_place(
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
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
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
pub(super) async fn digest(path: &Path) -> Result<(u64, String), String> {
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
pub(super) enum Artifact {
    PgCustom,
    PgDirectory,
    Sqlite,
}

pub(super) fn artifact_kind(path: &Path) -> Result<Artifact, String> {
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

/// Opens a SQLite file that must exist, without creating anything.
pub(super) async fn sqlite_open(path: &Path, read_only: bool) -> Result<SqliteConnection, String> {
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
pub(super) async fn sqlite_row_counts(
    conn: &mut SqliteConnection,
) -> Result<IndexMap<String, i64>, String> {
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

/// The outputs a `backup` step recorded for this artifact (the latest step whose
/// `path` is the same file), with that step's id.
pub(super) fn recorded<'a>(
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
pub(super) async fn check_recorded_sha(
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

/// Copies a file to a new name (never over an existing one) and flushes it to disk.
pub(super) fn copy_file(from: &Path, to: &Path) -> Result<u64, String> {
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
