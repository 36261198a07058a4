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

mod apply;
mod files;
mod online;
mod tracking;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::Env;
use crate::engine::action::{Outcome, StepLog};
use crate::engine::target;
use crate::runbook::with::{MigrateWith, Whole};
use crate::sql::migrations::{Migration, list, load};
use apply::{Db, Job, apply};
use files::check_applied;

/// How long one lock wait may last unless `with.lock_timeout` says otherwise.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_millis(500);
/// Attempts after the first when a lock wait times out, unless `with.retries` says.
const DEFAULT_RETRIES: u64 = 4;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// `migrate`: brings the database to `to` (default the latest migration in `dir`).
pub async fn migrate(p: &MigrateWith, env: Env<'_>) -> Outcome {
    match run(p, env.log, (env.run_id, env.step)).await {
        Ok(outputs) => Outcome::Succeeded(outputs),
        Err(e) => Outcome::Failed(e),
    }
}

/// How to wait for locks and try again.
struct Policy {
    lock_timeout: Duration,
    retries: u64,
}

/// `unit`: the run and step, under which progress is reported.
async fn run(
    p: &MigrateWith,
    log: &mut StepLog,
    unit: (&str, &str),
) -> Result<IndexMap<String, Value>, String> {
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
    let result = match p.phase {
        Some(phase) => online::run(&mut db.conn, p, phase, &policy, &migrations, log, unit).await,
        None => migrate_on(&mut db, p, &policy, &migrations, latest, log).await,
    };
    db.conn.close().await;
    result
}

async fn migrate_on(
    db: &mut Db,
    p: &MigrateWith,
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
    let mut target = target_version(p, migrations, latest)?;
    // Without `to`, a classic step goes up to the next online migration, not through it.
    if p.to.is_none()
        && let Some(first) = migrations.iter().find(|m| m.online && m.version > current)
    {
        target = target.min(first.version - 1);
    }
    log.line(
        "migrate",
        &format!(
            "database at version {current}, migrations in `{}` up to {latest}, target {target}",
            p.dir
        ),
    );
    // Everything is checked before anything changes: the down files a way down needs.
    let by_version: BTreeMap<u64, &Migration> = migrations.iter().map(|m| (m.version, m)).collect();
    // An online migration is applied by its phases, never by a classic step.
    let (low, high) = (current.min(target) + 1, current.max(target));
    if let Some(m) = (low..=high)
        .filter_map(|v| by_version.get(&v))
        .find(|m| m.online)
    {
        return Err(format!(
            "version {} ({}) is an online migration: apply it with `phase: start` (then `complete`), undo it with `phase: abort`; the database stays at version {current}",
            m.version, m.up_file
        ));
    }
    if target < current {
        check_down_files(&by_version, target, current, &p.dir)?;
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

/// The version to end at: `to`, at most the latest migration; the latest by default.
fn target_version(p: &MigrateWith, migrations: &[Migration], latest: u64) -> Result<u64, String> {
    match p.to {
        Some(Whole(to)) if to > latest => Err(format!(
            "`to` is {to} but the latest migration in `{}` is {}",
            p.dir,
            migrations
                .last()
                .map_or("none".to_owned(), |m| m.up_file.clone())
        )),
        Some(Whole(to)) => Ok(to),
        None => Ok(latest),
    }
}

/// Every down file a way down from `current` to `target` needs is there.
fn check_down_files(
    by_version: &BTreeMap<u64, &Migration>,
    target: u64,
    current: u64,
    dir: &str,
) -> Result<(), String> {
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
            dir
        ));
    }
    Ok(())
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

/// A duration as written in runbooks, to the millisecond.
fn show(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        crate::duration::fmt_duration(d)
    }
}
