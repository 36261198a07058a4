//! The tracking table `runbook_migrations` in the target database: created when missing
//! (with the lock wait bound and, on PostgreSQL, the advisory lock), read, and written
//! as each migration is applied or rolled back.

use std::time::Duration;

use serde_json::Value;

use super::apply::{Db, Job};
use crate::engine::target::{self, Target};
use crate::sql::migrations::Migration;

/// The tracking table in the target database.
pub(super) const TABLE: &str = "runbook_migrations";
/// The key of the PostgreSQL advisory lock a migration holds (`runbook` in ASCII).
const ADVISORY_KEY: i64 = 0x72_75_6e_62_6f_6f_6b;

/// A migration the database says it has applied.
#[derive(Debug, Clone)]
pub(super) struct Applied {
    pub(super) version: u64,
    pub(super) name: String,
    pub(super) checksum: String,
    pub(super) applied_at: String,
}

/// The session advisory lock that keeps two migrators (classic or online) off one
/// PostgreSQL database.
pub(super) async fn advisory_lock(conn: &mut Target) -> Result<(), String> {
    let got = conn
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
    Ok(())
}

impl Db {
    /// The lock wait bound, the advisory lock (PostgreSQL), the tracking table.
    pub(super) async fn setup(&mut self, lock_timeout: Duration) -> Result<(), String> {
        let ms = lock_timeout.as_millis().max(1);
        let fail =
            |e: sqlx::Error| format!("cannot prepare the database: {}", target::describe(&e));
        if self.is_postgres() {
            self.exec(&format!("SET lock_timeout = '{ms}ms'"))
                .await
                .map_err(fail)?;
            advisory_lock(&mut self.conn).await?;
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
    pub(super) async fn applied(&mut self) -> Result<Vec<Applied>, String> {
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
    pub(super) async fn accept(&mut self, m: &Migration) -> Result<(), String> {
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
}

/// A SQL text quoted as a literal.
pub(super) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The statement that records a migration applied (up) or removes its row (down).
pub(super) fn record(pg: bool, job: &Job<'_>, ms: u64) -> String {
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
