//! The journal: append-only events per run, the runs, and one lease per runbook, kept
//! in SQLite (the default, WAL mode) or PostgreSQL through sqlx. The SQL is written once
//! for both; the schema migrations are embedded and run on open.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::engine::event::{Event, Recorded};
use crate::status::model::{NoticeEvent, NoticeRecorded};

/// The default store: `.runbook/state.db` in the current directory.
pub const DEFAULT_URL: &str = "sqlite://.runbook/state.db";

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
];

/// Every commit to a journal in this process bumps this; followers (the status page)
/// wait on it instead of polling.
static CHANGES: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Wakes whoever follows the journal in this process.
fn changed() {
    CHANGES.send_modify(|n| *n += 1);
}

/// A receiver that sees every commit this process makes to any store.
pub fn changes() -> tokio::sync::watch::Receiver<u64> {
    CHANGES.subscribe()
}

/// The PostgreSQL channel a commit notifies, for followers in other processes.
pub const NOTIFY_CHANNEL: &str = "runbook_journal";

/// A store problem, said for people.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store `{url}`: {reason}")]
    Open { url: String, reason: String },
    #[error("store error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the journal of run `{run}` is damaged at event {seq}: {reason}")]
    Corrupt {
        run: String,
        seq: i64,
        reason: String,
    },
    #[error("no run `{0}` in this store")]
    UnknownRun(String),
    #[error("`{0}` is a scheduled maintenance (from `runbook schedule`), not a run")]
    NotARun(String),
    #[error("run `{0}` changed while this was being decided; try again")]
    Conflict(String),
    /// The runner's lease was taken over (or given back) since it acquired it: nothing
    /// was written, and the runner must stop.
    #[error("lost the lease on runbook `{runbook}` to {}: stopping", lost_to(.holder))]
    LeaseLost {
        runbook: String,
        /// Who holds it now (or last held it, when it has been given back since).
        holder: Option<Box<Lease>>,
    },
}

fn lost_to(holder: &Option<Box<Lease>>) -> String {
    match holder {
        None => "nobody (it was given back)".to_owned(),
        Some(h) => format!(
            "run `{}` on host {} (pid {}){}",
            h.run_id,
            h.host,
            h.pid,
            if h.released {
                ", which has given it back since"
            } else {
                ""
            }
        ),
    }
}

/// A unique violation on append means another writer took the sequence number (or the
/// run id) first.
fn conflict_or(e: sqlx::Error, run_id: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(run_id.to_owned())
        }
        _ => StoreError::Sql(e),
    }
}

/// Who holds a runbook's lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub runbook: String,
    pub run_id: String,
    pub host: String,
    pub pid: i64,
    pub heartbeat_ms: i64,
    /// How many times the lease has been acquired (taken over included): the holder's
    /// proof that it is still the holder. Set by [`Store::acquire`].
    pub epoch: i64,
    /// Given back (only in a [`StoreError::LeaseLost`]: who held it last).
    pub released: bool,
}

fn lease_of(r: &AnyRow) -> Result<Lease, sqlx::Error> {
    Ok(Lease {
        runbook: r.try_get("runbook")?,
        run_id: r.try_get("run_id")?,
        host: r.try_get("host")?,
        pid: r.try_get("pid")?,
        heartbeat_ms: r.try_get("heartbeat_ms")?,
        epoch: r.try_get("epoch")?,
        released: r.try_get::<i64, _>("released")? != 0,
    })
}

/// A run as listed by `runbook runs`.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run_id: String,
    pub runbook: String,
    pub started_ms: i64,
}

/// The journal store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    pub url: String,
    /// The lease a runner holds ([`Store::holding`]): every append checks it.
    fence: Option<std::sync::Arc<Lease>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (and creates or migrates) the store at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let open_err = |reason: String| StoreError::Open {
            url: url.to_owned(),
            reason,
        };
        let connect_url = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(open_err("no file name".into()));
            }
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| open_err(format!("cannot create `{}`: {e}", dir.display())))?;
            }
            format!("sqlite://{path}?mode=rwc")
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_owned()
        } else {
            return Err(open_err(
                "use sqlite://PATH or postgres://USER@HOST/DB".into(),
            ));
        };
        let sqlite = connect_url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 4 })
            .acquire_timeout(Duration::from_secs(10))
            .connect(&connect_url)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        let store = Store {
            pool,
            url: url.to_owned(),
            fence: None,
        };
        if sqlite {
            // WAL lets readers (`status`, the status page) run while a run writes;
            // `synchronous=FULL` makes each committed event survive a power cut.
            for pragma in [
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=FULL",
                "PRAGMA busy_timeout=10000",
            ] {
                sqlx::query(pragma)
                    .execute(&store.pool)
                    .await
                    .map_err(|e| open_err(e.to_string()))?;
            }
        }
        store
            .migrate(!sqlite)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        Ok(store)
    }

    /// Opens the store at `url` if it exists: commands that only read or act on existing
    /// runs must not leave an empty SQLite store behind. `None`: no such file.
    pub async fn open_existing(url: &str) -> Result<Option<Store>, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if !path.is_empty() && !Path::new(path).exists() {
                return Ok(None);
            }
        }
        Store::open(url).await.map(Some)
    }

    /// A store in memory that vanishes with the process: for a dry run, which evaluates
    /// conditions through the engine but must leave no trace.
    pub async fn memory() -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = "sqlite::memory:";
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(|e| StoreError::Open {
                url: url.into(),
                reason: e.to_string(),
            })?;
        let store = Store {
            pool,
            url: url.into(),
            fence: None,
        };
        store.migrate(false).await?;
        Ok(store)
    }

    /// Applies the migrations this store lacks, all in one transaction. On PostgreSQL a
    /// transaction-scoped advisory lock keeps two processes opening a new store at the
    /// same moment from creating the same tables twice.
    async fn migrate(&self, postgres: bool) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7210563001)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("CREATE TABLE IF NOT EXISTS runbook_schema (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let version: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM runbook_schema")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO runbook_schema (version) VALUES ($1)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// The same store for the runner holding `lease` (as [`Store::acquire`] returned
    /// it): each of its appends first checks, in its own transaction, that the lease is
    /// still that one (same run, same epoch, not given back), and writes nothing but
    /// answers [`StoreError::LeaseLost`] when it is not. Appends through a store not
    /// holding a lease (an approval, an abort, the admin API) are not checked.
    pub fn holding(&self, lease: &Lease) -> Store {
        Store {
            fence: Some(std::sync::Arc::new(lease.clone())),
            ..self.clone()
        }
    }

    /// Appends events to a run's journal in one transaction, numbered from `first`: all
    /// are committed when this returns, or none. `first` must be the next number of the
    /// journal as the writer last read it; if another writer got there first, nothing is
    /// written and the answer is [`StoreError::Conflict`]: read again, decide again. So
    /// every event is checked against the state it really follows, and the journal
    /// always folds.
    pub async fn append(
        &self,
        run_id: &str,
        first: i64,
        events: &[Event],
        at_ms: i64,
    ) -> Result<Vec<Recorded>, StoreError> {
        let register = events.iter().find_map(|e| match e {
            Event::RunStarted { runbook, .. } => Some(("runs", runbook.as_str())),
            _ => None,
        });
        let rows = rows(events, Event::kind);
        self.append_rows(run_id, register, first, &rows, at_ms)
            .await?;
        Ok(events
            .iter()
            .enumerate()
            .map(|(i, event)| Recorded {
                seq: first + i as i64,
                at_ms,
                event: event.clone(),
            })
            .collect())
    }

    /// Appends a stream's rows (`kind`, JSON body) numbered from `first` in one
    /// transaction, registering a new stream in `register` (`runs` or `notices`, with
    /// its runbook) first; notifies followers on commit.
    async fn append_rows(
        &self,
        stream: &str,
        register: Option<(&str, &str)>,
        first: i64,
        rows: &[(&str, String)],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(lease) = &self.fence {
            // A write first: it takes the row (PostgreSQL) or the database (SQLite) for
            // this transaction, so no take-over can commit between check and append. A
            // runner that appends is alive: its heartbeat is renewed on the way.
            let held = sqlx::query(
                "UPDATE leases SET heartbeat_ms = $1 WHERE runbook = $2 AND run_id = $3 AND epoch = $4 AND released = 0",
            )
            .bind(now_ms())
            .bind(lease.runbook.as_str())
            .bind(lease.run_id.as_str())
            .bind(lease.epoch)
            .execute(&mut *tx)
            .await?;
            if held.rows_affected() != 1 {
                tx.rollback().await?;
                return Err(self.lost(&lease.runbook).await);
            }
        }
        if let Some((table, runbook)) = register {
            let sql = match table {
                "runs" => "INSERT INTO runs (run_id, runbook, started_ms) VALUES ($1, $2, $3)",
                _ => "INSERT INTO notices (id, runbook, created_ms) VALUES ($1, $2, $3)",
            };
            sqlx::query(sql)
                .bind(stream)
                .bind(runbook)
                .bind(at_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict_or(e, stream))?;
        }
        for (i, (kind, body)) in rows.iter().enumerate() {
            sqlx::query(
                "INSERT INTO events (run_id, seq, at_ms, kind, body) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(stream)
            .bind(first + i as i64)
            .bind(at_ms)
            .bind(*kind)
            .bind(body.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, stream))?;
        }
        self.notify(&mut tx, stream).await?;
        tx.commit().await.map_err(|e| conflict_or(e, stream))?;
        changed();
        Ok(())
    }

    /// Tells followers in other processes (PostgreSQL's NOTIFY, delivered on commit;
    /// SQLite followers poll `PRAGMA data_version`).
    async fn notify(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        stream: &str,
    ) -> Result<(), StoreError> {
        if self.is_postgres() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(stream)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        !self.url.starts_with("sqlite")
    }

    /// Appends events of a scheduled maintenance's stream (registering the stream with
    /// its first event), like [`Store::append`].
    pub async fn append_notice(
        &self,
        id: &str,
        runbook: &str,
        first: i64,
        events: &[NoticeEvent],
        at_ms: i64,
    ) -> Result<Vec<NoticeRecorded>, StoreError> {
        let rows = rows(events, NoticeEvent::kind);
        let register = (first == 1).then_some(("notices", runbook));
        self.append_rows(id, register, first, &rows, at_ms).await?;
        Ok(events
            .iter()
            .enumerate()
            .map(|(i, event)| NoticeRecorded {
                seq: first + i as i64,
                at_ms,
                event: event.clone(),
            })
            .collect())
    }

    /// Scheduled maintenances: (id, runbook), oldest first.
    pub async fn notices(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, runbook FROM notices ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("runbook")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Events of a scheduled maintenance after `seq`.
    pub async fn load_notice_after(
        &self,
        id: &str,
        seq: i64,
    ) -> Result<Vec<NoticeRecorded>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, body FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(id)
        .bind(seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let (seq, at_ms, event) = decode_body(id, r)?;
                Ok(NoticeRecorded { seq, at_ms, event })
            })
            .collect()
    }

    /// The last sequence number of every stream (runs and scheduled maintenances): what
    /// a follower compares to know which streams grew.
    pub async fn heads(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT run_id, MAX(seq) AS head FROM events GROUP BY run_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("run_id")?, r.try_get("head")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// SQLite's count of commits by other connections (other processes), for polling.
    pub async fn data_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("PRAGMA data_version")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    /// Every event of a run, in order.
    pub async fn load(&self, run_id: &str) -> Result<Vec<Recorded>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, at_ms, kind, body FROM events WHERE run_id = $1 ORDER BY seq")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        if rows.is_empty() {
            return Err(StoreError::UnknownRun(run_id.to_owned()));
        }
        let kind: String = rows[0].try_get("kind")?;
        if kind != "run_started" {
            return Err(StoreError::NotARun(run_id.to_owned()));
        }
        rows.iter().map(|r| decode(run_id, r)).collect()
    }

    /// Events after `seq` (for followers that already have the earlier ones).
    pub async fn load_after(&self, run_id: &str, seq: i64) -> Result<Vec<Recorded>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, body FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(run_id)
        .bind(seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decode(run_id, r)).collect()
    }

    /// All runs, newest first.
    pub async fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, runbook, started_ms FROM runs ORDER BY started_ms DESC, run_id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RunRow {
                    run_id: r.try_get("run_id")?,
                    runbook: r.try_get("runbook")?,
                    started_ms: r.try_get("started_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Whether a run id is taken (by a run, or a scheduled maintenance's stream).
    pub async fn run_exists(&self, run_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM events WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n > 0)
    }

    /// The lease on a runbook, if anyone holds it.
    pub async fn lease(&self, runbook: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self.lease_row(runbook).await?.filter(|l| !l.released))
    }

    /// The lease row of a runbook: its holder, or who gave it back last.
    async fn lease_row(&self, runbook: &str) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query(
            "SELECT runbook, run_id, host, pid, heartbeat_ms, epoch, released FROM leases WHERE runbook = $1",
        )
        .bind(runbook)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(lease_of).transpose()?)
    }

    /// The answer to a holder whose lease is no longer its own.
    async fn lost(&self, runbook: &str) -> StoreError {
        match self.lease_row(runbook).await {
            Ok(holder) => StoreError::LeaseLost {
                runbook: runbook.to_owned(),
                holder: holder.map(Box::new),
            },
            Err(e) => e,
        }
    }

    /// Takes the lease on `lease.runbook` if it is free, or held by `expected` (the
    /// lease as last seen: a crashed runner's, being taken over), one epoch on from the
    /// last. Returns the lease taken (with its epoch), or the holder when someone else
    /// has it.
    pub async fn acquire(
        &self,
        lease: &Lease,
        expected: Option<&Lease>,
    ) -> Result<Result<Lease, Lease>, StoreError> {
        let epoch: Option<i64> = match expected {
            None => sqlx::query(
                "INSERT INTO leases (runbook, run_id, host, pid, heartbeat_ms, epoch, released) VALUES ($1, $2, $3, $4, $5, 1, 0)
                 ON CONFLICT (runbook) DO UPDATE SET run_id = excluded.run_id, host = excluded.host, pid = excluded.pid, heartbeat_ms = excluded.heartbeat_ms, epoch = leases.epoch + 1, released = 0
                 WHERE leases.released <> 0
                 RETURNING epoch",
            )
            .bind(lease.runbook.as_str())
            .bind(lease.run_id.as_str())
            .bind(lease.host.as_str())
            .bind(lease.pid)
            .bind(lease.heartbeat_ms)
            .fetch_optional(&self.pool)
            .await?,
            Some(old) => sqlx::query(
                "UPDATE leases SET run_id = $1, host = $2, pid = $3, heartbeat_ms = $4, epoch = epoch + 1
                 WHERE runbook = $5 AND run_id = $6 AND heartbeat_ms = $7 AND epoch = $8 AND released = 0
                 RETURNING epoch",
            )
            .bind(lease.run_id.as_str())
            .bind(lease.host.as_str())
            .bind(lease.pid)
            .bind(lease.heartbeat_ms)
            .bind(lease.runbook.as_str())
            .bind(old.run_id.as_str())
            .bind(old.heartbeat_ms)
            .bind(old.epoch)
            .fetch_optional(&self.pool)
            .await?,
        }
        .map(|r| r.try_get("epoch"))
        .transpose()?;
        if let Some(epoch) = epoch {
            return Ok(Ok(Lease {
                epoch,
                released: false,
                ..lease.clone()
            }));
        }
        match self.lease(&lease.runbook).await? {
            Some(holder) => Ok(Err(holder)),
            // Released in between: try again from scratch.
            None => Box::pin(self.acquire(lease, None)).await,
        }
    }

    /// Refreshes the heartbeat of `lease` (as [`Store::acquire`] returned it); answers
    /// [`StoreError::LeaseLost`] when it has been taken over.
    pub async fn heartbeat(&self, lease: &Lease) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE leases SET heartbeat_ms = $1 WHERE runbook = $2 AND run_id = $3 AND epoch = $4 AND released = 0",
        )
        .bind(now_ms())
        .bind(lease.runbook.as_str())
        .bind(lease.run_id.as_str())
        .bind(lease.epoch)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(self.lost(&lease.runbook).await)
        }
    }

    /// Gives the lease back. The row stays, marked released, so that the next
    /// acquisition counts on from its epoch (a runner that lost the lease can never
    /// find its old epoch again) and a runner that lost it is told who had it.
    pub async fn release(&self, runbook: &str, run_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE leases SET released = 1 WHERE runbook = $1 AND run_id = $2 AND released = 0",
        )
        .bind(runbook)
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Closes the pool, flushing SQLite's WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Journal rows of events: each one's kind and JSON body.
fn rows<E: serde::Serialize>(
    events: &[E],
    kind: fn(&E) -> &'static str,
) -> Vec<(&'static str, String)> {
    events
        .iter()
        .map(|e| (kind(e), serde_json::to_string(e).expect("events serialize")))
        .collect()
}

fn decode(run_id: &str, r: &AnyRow) -> Result<Recorded, StoreError> {
    let (seq, at_ms, event) = decode_body(run_id, r)?;
    Ok(Recorded { seq, at_ms, event })
}

fn decode_body<T: serde::de::DeserializeOwned>(
    stream: &str,
    r: &AnyRow,
) -> Result<(i64, i64, T), StoreError> {
    let seq: i64 = r.try_get("seq")?;
    let at_ms: i64 = r.try_get("at_ms")?;
    let body: String = r.try_get("body")?;
    let event = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
        run: stream.to_owned(),
        seq,
        reason: e.to_string(),
    })?;
    Ok((seq, at_ms, event))
}
