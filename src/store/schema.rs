//! The store's schema: the migrations, applied on open, and the checks that a SQLite
//! store's file is (still) a store.

use std::path::Path;
use std::time::Duration;

use sqlx::Row;

use super::error::damaged;
use super::{Mode, Store, StoreError};

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        runbook TEXT NOT NULL,
        started_ms BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS events (
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE IF NOT EXISTS leases (
        runbook TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        host TEXT NOT NULL,
        pid BIGINT NOT NULL,
        heartbeat_ms BIGINT NOT NULL
    );",
    // Scheduled maintenances (`runbook schedule`): each is a stream of the events table.
    "CREATE TABLE IF NOT EXISTS notices (
        id TEXT PRIMARY KEY,
        runbook TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    );",
    // The lease is a fence: `epoch` counts its acquisitions (every take-over bumps it),
    // and a lease given back stays as a `released` row, so its count goes on from there.
    "ALTER TABLE leases ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE leases ADD COLUMN released BIGINT NOT NULL DEFAULT 0;",
    // Notifications (`store::outbox`): who is subscribed, where a run's team hears of
    // it, the outbox of events not yet turned into deliveries, each message once, each
    // delivery once (its id is its message and its recipient), and the Statuspage
    // mirror's ids. A trigger (next migration) fills the outbox in the transaction that
    // appends the event.
    "CREATE TABLE IF NOT EXISTS subscribers (
        id TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        components TEXT NOT NULL,
        state TEXT NOT NULL,
        token TEXT NOT NULL UNIQUE,
        secret TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        confirmed_ms BIGINT NOT NULL,
        failing_ms BIGINT NOT NULL,
        UNIQUE (channel, address)
    );
    CREATE TABLE IF NOT EXISTS notify_targets (
        run_id TEXT NOT NULL,
        idx BIGINT NOT NULL,
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        events TEXT NOT NULL,
        kinds TEXT NOT NULL,
        PRIMARY KEY (run_id, idx)
    );
    CREATE TABLE IF NOT EXISTS outbox (
        stream TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        PRIMARY KEY (stream, seq)
    );
    CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS deliveries (
        id TEXT PRIMARY KEY,
        message TEXT NOT NULL,
        recipient TEXT NOT NULL,
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        created_ms BIGINT NOT NULL,
        next_ms BIGINT NOT NULL,
        claimed_ms BIGINT NOT NULL,
        claimed_by TEXT NOT NULL,
        sent_ms BIGINT NOT NULL,
        error TEXT NOT NULL,
        position BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_ms);
    CREATE INDEX IF NOT EXISTS deliveries_recipient ON deliveries (recipient, state, position);
    CREATE INDEX IF NOT EXISTS deliveries_position ON deliveries (position);
    CREATE TABLE IF NOT EXISTS mirror_ids (
        kind TEXT NOT NULL,
        ours TEXT NOT NULL,
        theirs TEXT NOT NULL,
        PRIMARY KEY (kind, ours)
    );",
];

/// The trigger that puts an event into the outbox in the transaction that appends it:
/// every public update, and the events a run's `notify:` targets chose (their journal
/// kinds, `,kind,` in `notify_targets.kinds`). One per database dialect; it is the
/// migration after [`MIGRATIONS`].
const OUTBOX_TRIGGER_SQLITE: &str =
    "CREATE TRIGGER IF NOT EXISTS events_outbox AFTER INSERT ON events
    WHEN NEW.kind = 'published'
        OR EXISTS (SELECT 1 FROM notify_targets t
                   WHERE t.run_id = NEW.run_id AND instr(t.kinds, ',' || NEW.kind || ',') > 0)
    BEGIN
        INSERT OR IGNORE INTO outbox (stream, seq, at_ms) VALUES (NEW.run_id, NEW.seq, NEW.at_ms);
    END;";
const OUTBOX_TRIGGER_POSTGRES: &str = "CREATE OR REPLACE FUNCTION runbook_events_outbox() RETURNS trigger AS $$
    BEGIN
        IF NEW.kind = 'published' OR EXISTS (SELECT 1 FROM notify_targets t
                WHERE t.run_id = NEW.run_id AND position(',' || NEW.kind || ',' in t.kinds) > 0) THEN
            INSERT INTO outbox (stream, seq, at_ms) VALUES (NEW.run_id, NEW.seq, NEW.at_ms)
                ON CONFLICT DO NOTHING;
        END IF;
        RETURN NULL;
    END $$ LANGUAGE plpgsql;
    DROP TRIGGER IF EXISTS events_outbox ON events;
    CREATE TRIGGER events_outbox AFTER INSERT ON events
        FOR EACH ROW EXECUTE FUNCTION runbook_events_outbox();";

/// The migrations in order, the dialect's own where they differ.
fn migrations(postgres: bool) -> impl Iterator<Item = &'static str> {
    MIGRATIONS
        .iter()
        .copied()
        .chain(std::iter::once(if postgres {
            OUTBOX_TRIGGER_POSTGRES
        } else {
            OUTBOX_TRIGGER_SQLITE
        }))
}

/// A SQLite store's file before it is opened: a read-only or `mode=rw` one must exist,
/// and an existing one must not be empty (a store truncated to nothing is refused, not
/// made anew). One that is empty is looked at again a moment later: a process creating
/// the store may be about to write its first page.
pub(super) async fn check_file(url: &str, path: &Path, mode: Mode) -> Result<(), StoreError> {
    let open_err = |reason: String| StoreError::Open {
        url: url.to_owned(),
        reason,
    };
    let len = || std::fs::metadata(path).ok().map(|m| (m.len(), m.is_file()));
    match len() {
        None if mode != Mode::Create => {
            Err(open_err(format!("`{}` does not exist", path.display())))
        }
        None => Ok(()),
        Some((_, false)) => Err(open_err(format!("`{}` is not a file", path.display()))),
        // A store another process just made in WAL mode has its first pages in the
        // write-ahead log until a checkpoint: empty, but no store truncated.
        Some((0, true)) if wal_has_pages(path) => Ok(()),
        Some((0, true)) => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match len() {
                Some((0, _)) if wal_has_pages(path) => Ok(()),
                Some((0, _)) => Err(StoreError::Damaged {
                    store: url.to_owned(),
                    reason: format!(
                        "`{}` is empty (0 bytes): it was truncated, or is no store; move it away to start a new store",
                        path.display()
                    ),
                }),
                _ => Ok(()),
            }
        }
        Some(_) => Ok(()),
    }
}

/// Whether the SQLite file at `path` has a write-ahead log with pages in it.
fn wal_has_pages(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(std::path::PathBuf::from(wal)).is_ok_and(|m| m.len() > 0)
}

impl Store {
    /// Applies the migrations this store lacks, all in one transaction. On PostgreSQL a
    /// transaction-scoped advisory lock keeps two processes opening a new store at the
    /// same moment from creating the same tables twice. A store of a newer schema than
    /// this program knows is refused, and a read-only one must be at this schema.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let known = migrations(false).count() as i64;
        if self.parsed.read_only() {
            let version = self
                .classify(
                    sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM runbook_schema")
                        .fetch_one(&self.pool)
                        .await,
                )?
                .try_get::<i64, _>("v")?;
            return self.schema_is(version, known);
        }
        let mut tx = self.classify(self.pool.begin().await)?;
        if self.is_postgres() {
            sqlx::query("SELECT pg_advisory_xact_lock(7210563001)")
                .execute(&mut *tx)
                .await?;
        }
        self.classify(
            sqlx::query("CREATE TABLE IF NOT EXISTS runbook_schema (version BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await,
        )?;
        let version: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM runbook_schema")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
        if version > known {
            return self.schema_is(version, known);
        }
        for (i, sql) in migrations(self.is_postgres())
            .enumerate()
            .skip(version as usize)
        {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO runbook_schema (version) VALUES ($1)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx.commit().await?)
    }

    /// Whether a store at schema `version` can be used as it is by this program.
    fn schema_is(&self, version: i64, known: i64) -> Result<(), StoreError> {
        let reason = if version > known {
            format!(
                "its schema is version {version}, newer than this runbook program knows ({known}): it was written by a newer release; use that one"
            )
        } else if version < known {
            format!(
                "its schema is version {version}, older than this program's ({known}), and a read-only store cannot be upgraded: open it once without mode=ro"
            )
        } else {
            return Ok(());
        };
        Err(StoreError::Open {
            url: self.url.clone(),
            reason,
        })
    }

    /// Says a store whose database is no store (any more) as such.
    pub(super) fn classify<T>(&self, r: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        r.map_err(|e| damaged(&self.url, e))
    }

    /// Refuses a SQLite store whose file shrank (or went) since this process last
    /// looked: it was truncated or replaced under a live process, and what SQLite would
    /// read or write there now is no journal.
    pub(super) fn unshrunk(&self) -> Result<(), StoreError> {
        let Some(path) = self.parsed.sqlite_file() else {
            return Ok(());
        };
        if path == Path::new(":memory:") {
            return Ok(());
        }
        let damaged = |reason: String| StoreError::Damaged {
            store: self.url.clone(),
            reason,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| damaged(format!("`{}` cannot be read any more: {e}", path.display())))?
            .len();
        let seen = self
            .file_len
            .fetch_max(len, std::sync::atomic::Ordering::SeqCst);
        if len < seen {
            return Err(damaged(format!(
                "`{}` shrank from {seen} to {len} bytes while in use: it was truncated; restore it from a copy",
                path.display()
            )));
        }
        Ok(())
    }
}
