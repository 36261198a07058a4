//! `migrate`: versioned SQL migrations, applied the way a careful DBA would by hand.
//!
//! A directory holds `NNNN_name.up.sql` and (optionally) `NNNN_name.down.sql`; versions
//! start at 1 and go up by one, with no gap and no duplicate. The target database keeps
//! what it has applied in `runbook_migrations` (version, name, checksum = SHA-256 of the
//! up file, applied_at, duration_ms), created when missing.
//!
//! - Each migration runs in its own transaction together with its tracking row (a
//!   failure rolls back that migration only). On PostgreSQL the transaction first sets
//!   `lock_timeout` (default 500ms) so DDL never queues behind a long transaction,
//!   holding up every query that comes after it; on SQLite the transaction is `BEGIN
//!   IMMEDIATE` and `PRAGMA busy_timeout` plays that part.
//! - A lock wait that times out (SQLSTATE 55P03; `SQLITE_BUSY`) is tried again after a
//!   jittered exponential backoff (200ms, 400ms, 800ms, ... each times 0.5 to 1.5),
//!   `retries` times (default 4, so 5 attempts). Every attempt is logged.
//! - A file with the line `-- runbook: no-transaction` runs outside a transaction, one
//!   statement at a time (`CREATE INDEX CONCURRENTLY` cannot run in a transaction, nor in
//!   a multi-statement query). The file is split at `;` outside quotes, comments,
//!   dollar-quoted bodies and the `BEGIN ... END` blocks of `CREATE` statements (trigger
//!   bodies, `BEGIN ATOMIC`), `E'...'` strings with their backslash escapes. A
//!   retry after a lock timeout goes on from the statement that timed out. Before each
//!   attempt and after a failure, the indexes that its `CREATE INDEX CONCURRENTLY`
//!   statements name and that PostgreSQL left INVALID (`pg_index.indisvalid = false`)
//!   are dropped with `DROP INDEX CONCURRENTLY IF EXISTS`; an unnamed
//!   `CREATE INDEX CONCURRENTLY ON ...` cannot be found that way.
//! - An applied migration whose up file changed (checksum or name) is refused, naming
//!   the file and when it was applied; `accept_changed: [VERSION, ...]` records the new
//!   checksum instead.
//! - `to` lower than the current version migrates down: the `.down.sql` files in reverse
//!   order, each in its own transaction with the deletion of its tracking row. Every
//!   down file needed must exist before anything runs.
//! - On PostgreSQL a session advisory lock keeps two migrators off one database.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Connection;

use super::Env;
use crate::engine::action::{Outcome, StepLog};
use crate::engine::target::{self, Conn, Target};
use crate::runbook::Kind;

/// The tracking table in the target database.
const TABLE: &str = "runbook_migrations";
/// How long one lock wait may last unless `with.lock_timeout` says otherwise.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_millis(500);
/// Attempts after the first when a lock wait times out, unless `with.retries` says.
const DEFAULT_RETRIES: u64 = 4;
/// The first wait before trying again; it doubles with each retry (with jitter).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The key of the PostgreSQL advisory lock a migration holds (`runbook` in ASCII).
const ADVISORY_KEY: i64 = 0x72_75_6e_62_6f_6f_6b;

/// `with` of a `migrate` step (and of a `migrate` rollback).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// `postgres://...` or `sqlite://PATH`.
    database: String,
    /// The directory of migration files, relative to the current directory.
    dir: String,
    /// The version to end at (up or down); default the latest in `dir`.
    #[serde(default)]
    to: Option<Whole>,
    /// How long one lock wait may last (`busy_timeout` on SQLite).
    #[serde(default)]
    lock_timeout: Option<String>,
    /// Attempts after the first when a lock wait times out.
    #[serde(default)]
    retries: Option<Whole>,
    /// Versions whose changed up file is accepted: the new checksum is recorded.
    #[serde(default)]
    accept_changed: Vec<Whole>,
}

/// A whole number written as a number or as text (a rendered template is text).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number, like 3 or \"3\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Whole, E> {
                u64::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::custom(format!("{v} is negative; expected 0 or more")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Whole, E> {
                if v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
                    Ok(Whole(v as u64))
                } else {
                    Err(E::custom(format!("{v} is not a whole number of 0 or more")))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Whole, E> {
                v.trim().parse::<u64>().map(Whole).map_err(|_| {
                    E::custom(format!(
                        "`{v}` is not a whole number of 0 or more (like 3 or \"3\")"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// One migration found in the directory.
#[derive(Debug, Clone)]
struct Migration {
    version: u64,
    /// `0002_add_points`, as the files are named.
    name: String,
    up_file: String,
    up_sql: String,
    /// SHA-256 of the up file, lowercase hex.
    checksum: String,
    /// The down file's name and text, when there is one.
    down: Option<(String, String)>,
}

impl Migration {
    /// The job that undoes this migration, when it has a down file.
    fn down_job(&self) -> Option<Job<'_>> {
        self.down.as_ref().map(|(file, sql)| Job {
            version: self.version,
            name: &self.name,
            file,
            sql,
            up: false,
            checksum: &self.checksum,
        })
    }
}

/// A migration the database says it has applied.
#[derive(Debug, Clone)]
struct Applied {
    version: u64,
    name: String,
    checksum: String,
    applied_at: String,
}

/// `migrate`: brings the database to `to` (default the latest migration in `dir`).
/// Reads `with` as the loader checks it (fields and their presence, not the values that
/// templates give at run time).
pub fn check_params(with: &IndexMap<String, Value>) -> Result<(), String> {
    super::params::<Params>(Kind::Migrate, with).map(|_| ())
}

pub async fn migrate(with: &IndexMap<String, Value>, env: Env<'_>) -> Outcome {
    match run(with, env.log).await {
        Ok(outputs) => Outcome::Succeeded(outputs),
        Err(e) => Outcome::Failed(e),
    }
}

/// How to wait for locks and try again.
struct Policy {
    lock_timeout: Duration,
    retries: u64,
}

async fn run(
    with: &IndexMap<String, Value>,
    log: &mut StepLog,
) -> Result<IndexMap<String, Value>, String> {
    let p: Params = super::params(Kind::Migrate, with)?;
    let lock_timeout = match &p.lock_timeout {
        None => DEFAULT_LOCK_TIMEOUT,
        Some(t) => crate::duration::parse_duration(t)
            .map_err(|e| format!("`with` `lock_timeout` of a `migrate` step: {e}"))?,
    };
    if lock_timeout.is_zero() {
        return Err(
            "`with` `lock_timeout` of a `migrate` step must be more than 0 (0 would wait for a lock for ever)"
                .into(),
        );
    }
    let retries = p.retries.map_or(DEFAULT_RETRIES, |r| r.0);
    if retries > 100 {
        return Err(format!(
            "`with` `retries` of a `migrate` step is {retries}; at most 100"
        ));
    }
    let policy = Policy {
        lock_timeout,
        retries,
    };
    let migrations = load(Path::new(&p.dir))?;
    let latest = migrations.last().map_or(0, |m| m.version);

    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, target::connect(&p.database)).await {
        Ok(c) => c?,
        Err(_) => {
            return Err(format!(
                "cannot connect to `{}`: no answer within {}",
                p.database,
                show(CONNECT_TIMEOUT)
            ));
        }
    };
    let mut db = Db { conn };
    let result = migrate_on(&mut db, &p, &policy, &migrations, latest, log).await;
    db.conn.close().await;
    result
}

async fn migrate_on(
    db: &mut Db,
    p: &Params,
    policy: &Policy,
    migrations: &[Migration],
    latest: u64,
    log: &mut StepLog,
) -> Result<IndexMap<String, Value>, String> {
    db.setup(policy.lock_timeout).await?;
    let applied = db.applied().await?;
    let current = applied.last().map_or(0, |a| a.version);
    let accept: Vec<u64> = p.accept_changed.iter().map(|w| w.0).collect();
    let accepted = check_applied(migrations, &applied, &accept, &p.dir)?;
    let target = match p.to {
        Some(Whole(to)) if to > latest => {
            return Err(format!(
                "`to` is {to} but the latest migration in `{}` is {}",
                p.dir,
                migrations
                    .last()
                    .map_or("none".to_owned(), |m| m.up_file.clone())
            ));
        }
        Some(Whole(to)) => to,
        None => latest,
    };
    log.line(
        "migrate",
        &format!(
            "database at version {current}, migrations in `{}` up to {latest}, target {target}",
            p.dir
        ),
    );
    // Everything is checked before anything changes: the down files a way down needs.
    let by_version: BTreeMap<u64, &Migration> = migrations.iter().map(|m| (m.version, m)).collect();
    if target < current {
        let missing: Vec<String> = (target + 1..=current)
            .rev()
            .filter_map(|v| by_version.get(&v))
            .filter(|m| m.down.is_none())
            .map(|m| format!("{}.down.sql", m.name))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "cannot migrate down from version {current} to {target}: {} missing in `{}` (nothing was changed)",
                list(&missing),
                p.dir
            ));
        }
    }
    for (m, was) in &accepted {
        db.accept(m).await?;
        log.line(
            "migrate",
            &format!(
                "accepted the changed {} (applied on {}): checksum {} recorded, was {}",
                m.up_file, was.applied_at, m.checksum, was.checksum
            ),
        );
    }

    let mut done: Vec<String> = Vec::new();
    let direction = match target.cmp(&current) {
        std::cmp::Ordering::Greater => "up",
        std::cmp::Ordering::Less => "down",
        std::cmp::Ordering::Equal => "none",
    };
    if target > current {
        for v in current + 1..=target {
            let m = by_version[&v];
            let job = Job {
                version: v,
                name: &m.name,
                file: &m.up_file,
                sql: &m.up_sql,
                up: true,
                checksum: &m.checksum,
            };
            let ms = match apply(db, &job, policy, log).await {
                Ok(ms) => ms,
                Err(e) if done.is_empty() => return Err(with_progress(e, "applied", &done, v - 1)),
                // The step is all or nothing: what it applied before the failure is
                // migrated back down, so a run that rolls back is really back where it
                // began.
                Err(e) => {
                    return Err(
                        match undo_applied(db, &by_version, current, v - 1, policy, log).await {
                            Ok(()) => format!(
                                "{e}; the migrations this step had applied before it ({}) were rolled back: the database is back at version {current}",
                                done.join(", ")
                            ),
                            Err(undo) => format!(
                                "{}; rolling them back failed too: {undo}",
                                with_progress(e, "applied", &done, v - 1)
                            ),
                        },
                    );
                }
            };
            log.line("migrate", &format!("applied {} in {ms} ms", m.name));
            done.push(m.name.clone());
        }
    } else if target < current {
        for v in (target + 1..=current).rev() {
            let m = by_version[&v];
            let job = m.down_job().expect("checked above");
            let ms = apply(db, &job, policy, log)
                .await
                .map_err(|e| with_progress(e, "rolled back", &done, v))?;
            log.line("migrate", &format!("rolled back {} in {ms} ms", m.name));
            done.push(m.name.clone());
        }
    } else {
        log.line("migrate", &format!("nothing to do: at version {current}"));
    }
    let mut out = IndexMap::new();
    out.insert("from_version".into(), Value::from(current));
    out.insert("to_version".into(), Value::from(target));
    out.insert(
        "applied".into(),
        Value::Array(done.into_iter().map(Value::from).collect()),
    );
    out.insert("direction".into(), Value::from(direction));
    Ok(out)
}

/// Migrates down from `at` to `to` (after a failed step applied `to + 1 ..= at`).
async fn undo_applied(
    db: &mut Db,
    by_version: &BTreeMap<u64, &Migration>,
    to: u64,
    at: u64,
    policy: &Policy,
    log: &mut StepLog,
) -> Result<(), String> {
    for v in (to + 1..=at).rev() {
        let m = by_version[&v];
        let Some(job) = m.down_job() else {
            return Err(format!(
                "{}.down.sql is missing; the database stays at version {v}",
                m.name
            ));
        };
        apply(db, &job, policy, log)
            .await
            .map_err(|e| format!("{e}; the database stays at version {v}"))?;
        log.line(
            "migrate",
            &format!("rolled back {} after the failure", m.name),
        );
    }
    Ok(())
}

/// A failure with what the step did before it and where the database stands.
fn with_progress(error: String, verb: &str, done: &[String], at: u64) -> String {
    if done.is_empty() {
        format!("{error}; the database stays at version {at}")
    } else {
        format!(
            "{error}; the database stays at version {at} ({verb} before it: {})",
            done.join(", ")
        )
    }
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// A duration as written in runbooks, to the millisecond.
fn show(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        crate::duration::fmt_duration(d)
    }
}

/// SHA-256, lowercase hex.
fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a file name says: `Some((version, stem, is_up))` for a migration file, `None` for
/// a file that is not SQL (a README), an error for SQL that is named wrongly.
fn classify(file: &str) -> Result<Option<(u64, &str, bool)>, String> {
    if file.starts_with('.') || !file.ends_with(".sql") {
        return Ok(None);
    }
    let wrong = || {
        format!("{file} is not a migration file name: write NNNN_name.up.sql or NNNN_name.down.sql")
    };
    let (stem, up) = if let Some(s) = file.strip_suffix(".up.sql") {
        (s, true)
    } else if let Some(s) = file.strip_suffix(".down.sql") {
        (s, false)
    } else {
        return Err(wrong());
    };
    let (digits, name) = stem.split_once('_').ok_or_else(wrong)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return Err(wrong());
    }
    let version: u64 = digits
        .parse()
        .map_err(|_| format!("{file}: the version is too large"))?;
    if version == 0 {
        return Err(format!(
            "{file}: versions start at 1 (0 means no migration applied)"
        ));
    }
    Ok(Some((version, stem, up)))
}

/// The check the loader makes of a migrations directory that exists when the runbook is
/// validated: the file names (gaps, duplicates, strays) and, when the step's rollback
/// migrates down (`needs_down`), a down file for every migration.
pub fn check_dir(dir: &Path, needs_down: bool) -> Result<(), String> {
    let migrations = load(dir)?;
    let missing: Vec<String> = migrations
        .iter()
        .filter(|m| m.down.is_none())
        .map(|m| format!("{}.down.sql", m.name))
        .collect();
    if needs_down && !missing.is_empty() {
        return Err(format!(
            "the step's rollback migrates down, but `{}` has no {}",
            dir.display(),
            list(&missing)
        ));
    }
    Ok(())
}

/// The migrations in `dir`, checked: versions 1, 2, 3 ... without gap or duplicate, each
/// down file beside its up file.
fn load(dir: &Path) -> Result<Vec<Migration>, String> {
    let shown = dir.display();
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            format!("the migrations directory `{shown}` does not exist (looked in {cwd})")
        }
        _ => format!("cannot read the migrations directory `{shown}`: {e}"),
    })?;
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("cannot read the migrations directory `{shown}`: {e}"))?;
        if entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink())
        {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    check_names(&names, &shown.to_string())?
        .into_iter()
        .map(
            |Named {
                 version,
                 stem,
                 up,
                 down,
             }| {
                let read = |file: &str| crate::input::read_limited_text(&dir.join(file));
                let up_sql = read(&up)?;
                let down = match down {
                    Some(d) => {
                        let text = read(&d)?;
                        Some((d, text))
                    }
                    None => None,
                };
                Ok(Migration {
                    version,
                    name: stem,
                    checksum: sha256(up_sql.as_bytes()),
                    up_file: up,
                    up_sql,
                    down,
                })
            },
        )
        .collect()
}

/// A migration as its file names describe it.
#[derive(Debug, Clone, PartialEq)]
struct Named {
    version: u64,
    /// `0002_add_points`.
    stem: String,
    up: String,
    down: Option<String>,
}

/// The migrations the file names describe, in order; every problem named at once.
fn check_names(names: &[String], dir: &str) -> Result<Vec<Named>, String> {
    let mut problems: Vec<String> = Vec::new();
    let mut ups: BTreeMap<u64, Vec<(&str, &str)>> = BTreeMap::new();
    let mut downs: BTreeMap<u64, Vec<(&str, &str)>> = BTreeMap::new();
    for file in names {
        match classify(file) {
            Ok(Some((v, stem, true))) => ups.entry(v).or_default().push((file, stem)),
            Ok(Some((v, stem, false))) => downs.entry(v).or_default().push((file, stem)),
            Ok(None) => {}
            Err(e) => problems.push(e),
        }
    }
    for (v, files) in ups.iter().chain(downs.iter()) {
        if files.len() > 1 {
            let files: Vec<String> = files.iter().map(|(f, _)| f.to_string()).collect();
            problems.push(format!("duplicate version {v}: {}", list(&files)));
        }
    }
    let mut expected = 1;
    let mut previous: Option<&str> = None;
    for (&v, files) in &ups {
        let file = files[0].0;
        if v != expected {
            let missing = if v == expected + 1 {
                format!("version {expected} is missing")
            } else {
                format!("versions {expected} to {} are missing", v - 1)
            };
            problems.push(match previous {
                None => {
                    format!("{file} is the first migration but versions start at 1 ({missing})")
                }
                Some(p) => format!("gap in the versions between {p} and {file} ({missing})"),
            });
        }
        expected = v + 1;
        previous = Some(file);
    }
    let mut out = Vec::new();
    for (&v, files) in &ups {
        let (file, stem) = files[0];
        let down = match downs.get(&v).map(|d| d[0]) {
            Some((d, down_stem)) if down_stem != stem => {
                problems.push(format!(
                    "{d} does not match {file} (same version, another name)"
                ));
                None
            }
            Some((d, _)) => Some(d.to_owned()),
            None => None,
        };
        out.push(Named {
            version: v,
            stem: stem.to_owned(),
            up: file.to_owned(),
            down,
        });
    }
    for (v, files) in &downs {
        if !ups.contains_key(v) {
            problems.push(format!(
                "{} has no up file ({}.up.sql)",
                files[0].0, files[0].1
            ));
        }
    }
    if problems.is_empty() && out.is_empty() {
        problems.push(format!(
            "the migrations directory `{dir}` holds no migrations (files named NNNN_name.up.sql)"
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "the migrations in `{dir}` are not in order: {}",
            problems.join("; ")
        ))
    }
}

/// Compares what the database applied with the files: every applied version has its
/// file, unchanged (or accepted), and the applied versions are 1 to the current one.
/// Returns the accepted changes, (migration, what the database recorded).
fn check_applied<'m>(
    migrations: &'m [Migration],
    applied: &[Applied],
    accept: &[u64],
    dir: &str,
) -> Result<Vec<(&'m Migration, Applied)>, String> {
    let latest = migrations.last().map_or(0, |m| m.version);
    if let Some(last) = applied.last()
        && last.version > latest
    {
        return Err(format!(
            "the database is at version {} ({}, applied on {}) but `{dir}` has migrations only up to {latest}: is it the right directory, or an older copy of it?",
            last.version, last.name, last.applied_at
        ));
    }
    for (i, a) in applied.iter().enumerate() {
        let expected = i as u64 + 1;
        if a.version != expected {
            let file = migrations
                .iter()
                .find(|m| m.version == expected)
                .map_or(String::new(), |m| format!(" ({})", m.up_file));
            return Err(format!(
                "the tracking table {TABLE} records version {} but not version {expected}{file}; \
                 it was changed by hand: make it list versions 1 to {} or none",
                a.version, a.version
            ));
        }
    }
    let mut changed = Vec::new();
    let mut accepted = Vec::new();
    for a in applied {
        let m = &migrations[a.version as usize - 1];
        if m.checksum == a.checksum && m.name == a.name {
            continue;
        }
        if accept.contains(&a.version) {
            accepted.push((m, a.clone()));
            continue;
        }
        let what = if m.name != a.name {
            format!("it was applied as {} and is now {}", a.name, m.up_file)
        } else {
            format!(
                "checksum recorded {}, now {}",
                a.checksum.chars().take(12).collect::<String>(),
                &m.checksum[..12]
            )
        };
        changed.push((
            a.version,
            format!(
                "{} was changed after it was applied on {} ({what})",
                m.up_file, a.applied_at
            ),
        ));
    }
    if !changed.is_empty() {
        let versions: Vec<String> = changed.iter().map(|(v, _)| v.to_string()).collect();
        let texts: Vec<String> = changed.into_iter().map(|(_, t)| t).collect();
        return Err(format!(
            "{}; an applied migration must not change (write a new one). If the change is deliberate and already done in the database, accept it with `accept_changed: [{}]` in the step's `with`",
            texts.join("; "),
            versions.join(", ")
        ));
    }
    Ok(accepted)
}

/// One migration file to run, up or down.
struct Job<'a> {
    version: u64,
    name: &'a str,
    file: &'a str,
    sql: &'a str,
    up: bool,
    checksum: &'a str,
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

/// A SQL text quoted as a literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Why an attempt failed.
enum Failure {
    /// A lock wait timed out: worth another attempt.
    Lock(String),
    /// Anything else, final.
    Other(String),
}

/// Runs one migration file, trying again after lock timeouts; returns how long it took.
async fn apply(
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
                let mut msg = format!("{} failed: {why}", job.file);
                if why.contains("cannot run inside a transaction block") {
                    msg.push_str(
                        " (mark the file with a line `-- runbook: no-transaction` to run it outside one)",
                    );
                }
                if outside {
                    let failed = statements
                        .get(next)
                        .map(|s| preview(&s.text))
                        .unwrap_or_default();
                    msg.push_str(&format!(
                        "; it ran outside a transaction: {next} of {} statements took effect, statement {} failed: {failed}",
                        statements.len(),
                        next + 1
                    ));
                    cleanup_after(db, &indexes, &mut msg, log).await;
                } else {
                    msg.push_str("; its transaction was rolled back");
                }
                return Err(msg);
            }
        }
    }
    unreachable!("the last attempt returns")
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
struct Db {
    conn: Target,
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
    fn is_postgres(&self) -> bool {
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

    async fn exec(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        self.conn
            .guarded(sql, async |conn| match conn {
                Conn::Postgres(c) => exec::<sqlx::Postgres>(c, sql).await,
                Conn::Sqlite(c) => exec::<sqlx::Sqlite>(c, sql).await,
            })
            .await
    }

    /// The lock wait bound, the advisory lock (PostgreSQL), the tracking table.
    async fn setup(&mut self, lock_timeout: Duration) -> Result<(), String> {
        let ms = lock_timeout.as_millis().max(1);
        let fail =
            |e: sqlx::Error| format!("cannot prepare the database: {}", target::describe(&e));
        if self.is_postgres() {
            self.exec(&format!("SET lock_timeout = '{ms}ms'"))
                .await
                .map_err(fail)?;
            let got = self
                .conn
                .rows(
                    &format!("SELECT pg_try_advisory_lock({ADVISORY_KEY}) AS locked"),
                    false,
                )
                .await
                .map_err(|e| format!("cannot prepare the database: {e}"))?;
            if got.first().and_then(|r| r.get("locked")) != Some(&Value::Bool(true)) {
                return Err(format!(
                    "another migration is running against this database (it holds the advisory lock {ADVISORY_KEY}); wait for it to end"
                ));
            }
            self.exec(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (
                    version bigint PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    duration_ms bigint NOT NULL
                )"
            ))
            .await
            .map_err(|e| {
                format!(
                    "cannot create the tracking table {TABLE}: {}",
                    target::describe(&e)
                )
            })
        } else {
            self.exec(&format!("PRAGMA busy_timeout = {ms}"))
                .await
                .map_err(fail)?;
            self.exec(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (
                    version INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    checksum TEXT NOT NULL,
                    applied_at TEXT NOT NULL,
                    duration_ms INTEGER NOT NULL
                )"
            ))
            .await
            .map_err(|e| {
                format!(
                    "cannot create the tracking table {TABLE}: {}",
                    target::describe(&e)
                )
            })
        }
    }

    /// The applied migrations, by version.
    async fn applied(&mut self) -> Result<Vec<Applied>, String> {
        let at = if self.is_postgres() {
            r#"to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"#
        } else {
            "applied_at"
        };
        let rows = self
            .conn
            .rows(
                &format!(
                    "SELECT version, name, checksum, {at} AS applied_at FROM {TABLE} ORDER BY version"
                ),
                false,
            )
            .await
            .map_err(|e| format!("cannot read the tracking table {TABLE}: {e}"))?;
        rows.into_iter()
            .map(|r| {
                let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                let version = r
                    .get("version")
                    .and_then(Value::as_u64)
                    .filter(|v| *v > 0)
                    .ok_or_else(|| {
                        format!(
                            "the tracking table {TABLE} holds the version {}, not a number of 1 or more",
                            r.get("version").unwrap_or(&Value::Null)
                        )
                    })?;
                Ok(Applied {
                    version,
                    name: text("name"),
                    checksum: text("checksum"),
                    applied_at: text("applied_at"),
                })
            })
            .collect()
    }

    /// Records the new checksum (and name) of an accepted changed migration.
    async fn accept(&mut self, m: &Migration) -> Result<(), String> {
        self.exec(&format!(
            "UPDATE {TABLE} SET checksum = {}, name = {} WHERE version = {}",
            lit(&m.checksum),
            lit(&m.name),
            m.version
        ))
        .await
        .map_err(|e| {
            format!(
                "cannot record the new checksum of {}: {}",
                m.up_file,
                target::describe(&e)
            )
        })
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

/// The statement that records a migration applied (up) or removes its row (down).
fn record(pg: bool, job: &Job<'_>, ms: u64) -> String {
    if job.up {
        let now = if pg {
            "now()"
        } else {
            "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"
        };
        format!(
            "INSERT INTO {TABLE} (version, name, checksum, applied_at, duration_ms) VALUES ({}, {}, {}, {now}, {ms})",
            job.version,
            lit(job.name),
            lit(job.checksum)
        )
    } else {
        format!("DELETE FROM {TABLE} WHERE version = {}", job.version)
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

/// What the scanner sees in SQL text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Tok {
    /// A keyword or identifier.
    Word,
    /// `"quoted identifier"`.
    Quoted,
    /// A string, a dollar-quoted body, a number: text that is not a word.
    Literal,
    Semicolon,
    /// Any other character.
    Punct,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: Tok,
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// The tokens of SQL text, without comments.
fn tokens(sql: &str) -> Vec<Token> {
    tokens_for(sql, true)
}

/// The tokens of SQL text, without comments; `[...]` is a quoted identifier when
/// `brackets` (SQLite), an operator otherwise (PostgreSQL's subscripts).
pub(crate) fn tokens_for(sql: &str, brackets: bool) -> Vec<Token> {
    let b = sql.as_bytes();
    let n = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    while i < n {
        let c = b[i];
        let start = i;
        let kind = match c {
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < n && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < n {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' | b'"' | b'`' => {
                // PostgreSQL's E'...' has backslash escapes (`E'it\'s'`).
                let escapes = c == b'\''
                    && i > 0
                    && matches!(b[i - 1], b'E' | b'e')
                    && (i < 2 || !ident(b[i - 2]));
                i += 1;
                while i < n && b[i] != c {
                    i += if escapes && b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(n);
                if c == b'\'' {
                    Tok::Literal
                } else {
                    Tok::Quoted
                }
            }
            b'[' if brackets => {
                // SQLite's [quoted identifier].
                while i < n && b[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(n);
                Tok::Quoted
            }
            b'$' => {
                // `$tag$ ... $tag$` (tag empty or an identifier not starting with a digit).
                let mut j = i + 1;
                while j < n && ident(b[j]) && !(j == i + 1 && b[j].is_ascii_digit()) {
                    j += 1;
                }
                if j < n && b[j] == b'$' {
                    let tag = &sql[i..=j];
                    match sql[j + 1..].find(tag) {
                        Some(k) => i = j + 1 + k + tag.len(),
                        None => i = n,
                    }
                    Tok::Literal
                } else {
                    i += 1;
                    while i < n && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    Tok::Punct
                }
            }
            b';' => {
                i += 1;
                Tok::Semicolon
            }
            _ if c.is_ascii_digit() => {
                while i < n && (ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
                Tok::Literal
            }
            _ if ident(c) => {
                while i < n && (ident(b[i]) || b[i] == b'$') {
                    i += 1;
                }
                Tok::Word
            }
            _ => {
                i += 1;
                while i < n && !sql.is_char_boundary(i) {
                    i += 1;
                }
                Tok::Punct
            }
        };
        out.push(Token {
            kind,
            text: sql[start..i].to_owned(),
            start,
            end: i,
        });
    }
    out
}

/// One statement of a file.
#[derive(Debug, Clone)]
struct Statement {
    text: String,
    words: Vec<Token>,
}

impl Statement {
    fn word(&self, i: usize) -> Option<String> {
        self.words
            .get(i)
            .filter(|t| t.kind == Tok::Word)
            .map(|t| t.text.to_ascii_uppercase())
    }

    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `END`, `ABORT`, `START TRANSACTION`.
    fn controls_transaction(&self) -> bool {
        match self.word(0).as_deref() {
            Some("BEGIN" | "COMMIT" | "ROLLBACK" | "END" | "ABORT") => true,
            Some("START") => self.word(1).as_deref() == Some("TRANSACTION"),
            _ => false,
        }
    }

    /// The index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON ...`
    /// creates, as written (`public.idx`, `"Idx"`).
    fn concurrent_index(&self) -> Option<String> {
        let mut i = 0;
        let expect = |w: &str, optional: bool, i: &mut usize| {
            let found = self.word(*i).as_deref() == Some(w);
            if found {
                *i += 1;
            }
            found || optional
        };
        if !(expect("CREATE", false, &mut i)
            && expect("UNIQUE", true, &mut i)
            && expect("INDEX", false, &mut i)
            && expect("CONCURRENTLY", false, &mut i))
        {
            return None;
        }
        if self.word(i).as_deref() == Some("IF") {
            i += 3;
        }
        let mut name = String::new();
        for t in &self.words[i.min(self.words.len())..] {
            if t.kind == Tok::Word && t.text.eq_ignore_ascii_case("ON") {
                break;
            }
            name.push_str(&t.text);
        }
        (!name.is_empty()).then_some(name)
    }
}

/// The statements of a file: split at `;` outside quotes, comments, dollar-quoted
/// bodies and the `BEGIN ... END` (and `CASE ... END`) blocks of a `CREATE` statement.
/// Pieces with nothing but comments are left out.
fn split_statements(sql: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut words: Vec<Token> = Vec::new();
    let mut depth = 0usize;
    let finish = |words: &mut Vec<Token>, end: usize, out: &mut Vec<Statement>| {
        if let Some(first) = words.first() {
            out.push(Statement {
                text: sql[first.start..end].trim_end().to_owned(),
                words: std::mem::take(words),
            });
        }
    };
    for t in tokens(sql) {
        if t.kind == Tok::Semicolon && depth == 0 {
            finish(&mut words, t.start, &mut out);
            continue;
        }
        let creates = words
            .first()
            .is_some_and(|w| w.kind == Tok::Word && w.text.eq_ignore_ascii_case("CREATE"));
        if creates && t.kind == Tok::Word {
            let w = t.text.to_ascii_uppercase();
            if w == "BEGIN" || w == "CASE" {
                depth += 1;
            } else if w == "END" {
                depth = depth.saturating_sub(1);
            }
        }
        words.push(t);
    }
    let end = words.last().map_or(0, |t| t.end);
    finish(&mut words, end, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        split_statements(sql).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_statements_outside_quotes_comments_and_bodies() {
        let sql = "-- a comment; not a statement\n\
                   CREATE TABLE t (a text DEFAULT ';');\n\
                   /* block; /* nested; */ still */\n\
                   CREATE FUNCTION f() RETURNS int AS $fn$ BEGIN RETURN 1; END $fn$ LANGUAGE plpgsql;\n\
                   INSERT INTO \"we;ird\" VALUES ($$x;y$$, 'it''s; fine');\n\
                   CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = CASE WHEN a = 'x' THEN 'y' ELSE a END; END;\n\
                   SELECT 1";
        let got = texts(sql);
        assert_eq!(got.len(), 5, "{got:#?}");
        assert_eq!(got[0], "CREATE TABLE t (a text DEFAULT ';')");
        assert!(got[1].starts_with("CREATE FUNCTION") && got[1].ends_with("plpgsql"));
        assert_eq!(
            got[2],
            "INSERT INTO \"we;ird\" VALUES ($$x;y$$, 'it''s; fine')"
        );
        assert!(got[3].starts_with("CREATE TRIGGER") && got[3].ends_with("END"));
        assert_eq!(got[4], "SELECT 1");
        assert!(texts("-- only a comment\n;\n").is_empty());
    }

    #[test]
    fn finds_transaction_control_and_concurrent_indexes() {
        let s = split_statements(
            "begin; create unique index concurrently if not exists public.\"Idx\" on t (a);\n\
             CREATE INDEX CONCURRENTLY ON t (b); CREATE INDEX plain ON t (c); start transaction; commit",
        );
        assert!(s[0].controls_transaction());
        assert_eq!(s[1].concurrent_index().as_deref(), Some("public.\"Idx\""));
        assert_eq!(s[2].concurrent_index(), None);
        assert_eq!(s[3].concurrent_index(), None);
        assert!(!s[1].controls_transaction());
        assert!(s[4].controls_transaction() && s[5].controls_transaction());
    }

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
    fn classifies_file_names() {
        assert_eq!(
            classify("0002_add_points.up.sql"),
            Ok(Some((2, "0002_add_points", true)))
        );
        assert_eq!(classify("10_x.down.sql"), Ok(Some((10, "10_x", false))));
        assert_eq!(classify("README.md"), Ok(None));
        assert!(
            classify("0002_x.sql")
                .unwrap_err()
                .contains("NNNN_name.up.sql")
        );
        assert!(classify("abc_x.up.sql").is_err());
        assert!(classify("0002.up.sql").is_err());
        assert!(
            classify("0000_x.up.sql")
                .unwrap_err()
                .contains("start at 1")
        );
    }

    fn names(files: &[&str]) -> Result<Vec<Named>, String> {
        let v: Vec<String> = files.iter().map(|s| s.to_string()).collect();
        check_names(&v, "m")
    }

    #[test]
    fn checks_versions_for_gaps_duplicates_and_strays() {
        let ok = names(&["0001_a.up.sql", "0001_a.down.sql", "0002_b.up.sql"]).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].down.as_deref(), Some("0001_a.down.sql"));
        assert_eq!(ok[1].down, None);
        let gap = names(&["0001_a.up.sql", "0003_c.up.sql"]).unwrap_err();
        assert!(
            gap.contains("gap in the versions between 0001_a.up.sql and 0003_c.up.sql"),
            "{gap}"
        );
        assert!(gap.contains("version 2 is missing"), "{gap}");
        let dup = names(&["0001_a.up.sql", "0001_b.up.sql"]).unwrap_err();
        assert!(
            dup.contains("duplicate version 1: 0001_a.up.sql and 0001_b.up.sql"),
            "{dup}"
        );
        let first = names(&["0002_b.up.sql"]).unwrap_err();
        assert!(first.contains("versions start at 1"), "{first}");
        let stray = names(&["0001_a.up.sql", "0002_b.down.sql"]).unwrap_err();
        assert!(stray.contains("0002_b.down.sql has no up file"), "{stray}");
        let other = names(&["0001_a.up.sql", "0001_b.down.sql"]).unwrap_err();
        assert!(
            other.contains("0001_b.down.sql does not match 0001_a.up.sql"),
            "{other}"
        );
        assert!(
            names(&["notes.txt"])
                .unwrap_err()
                .contains("holds no migrations")
        );
    }

    #[test]
    fn takes_numbers_as_numbers_or_text() {
        let p: Params = serde_json::from_value(serde_json::json!({
            "database": "sqlite://x", "dir": "m", "to": "3", "retries": 2, "accept_changed": [1, "2"]
        }))
        .unwrap();
        assert_eq!(p.to, Some(Whole(3)));
        assert_eq!(p.retries, Some(Whole(2)));
        assert_eq!(p.accept_changed, vec![Whole(1), Whole(2)]);
        let bad = serde_json::from_value::<Params>(serde_json::json!({
            "database": "sqlite://x", "dir": "m", "to": "three"
        }));
        assert!(bad.is_err());
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
