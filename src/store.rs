//! The journal: append-only events per run, the runs, and one lease per runbook, kept
//! in SQLite (the default, WAL mode) or PostgreSQL through sqlx. The SQL is written once
//! for both; the schema migrations are embedded and run on open.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub mod notice;
pub mod url;
pub use url::{Mode, StoreUrl};

use crate::journal::{Event, NoticeEvent, NoticeRecorded, Recorded};

/// The default store: `.runbook/state.db` in the current directory.
pub const DEFAULT_URL: &str = "sqlite://.runbook/state.db";

/// The store URL: `--store`, else `RUNBOOK_STORE`, else the default.
pub fn chosen_url(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| {
            std::env::var("RUNBOOK_STORE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

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
    #[error(
        "the journal of run `{run}` in the store `{store}` is damaged at event {seq}: {reason}"
    )]
    Corrupt {
        store: String,
        run: String,
        seq: i64,
        reason: String,
    },
    /// The store's file is no store any more (truncated, overwritten).
    #[error("the store `{store}` is damaged: {reason}")]
    Damaged { store: String, reason: String },
    /// The database stayed out of reach for all of [`RECONNECT_WINDOW`].
    #[error("the store `{store}` could not be reached for {}s: {last}", RECONNECT_WINDOW.as_secs())]
    Unreachable { store: String, last: String },
    /// A write through a store opened with `mode=ro`.
    #[error("the store `{0}` is read-only (mode=ro): this command writes to it")]
    ReadOnly(String),
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

/// How long the store keeps trying again when its database cannot be reached (a
/// dropped connection, a server restarting, a database refusing connections) before
/// the command gives up.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(60);

/// Whether `e` may go away by trying again: the connection dropped or could not be
/// made, or (SQLite) another process holds the lock for longer than the busy timeout.
fn transient(e: &StoreError) -> bool {
    let StoreError::Sql(e) = e else {
        return false;
    };
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            match sqlite_code(d.as_ref()) {
                // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
                Some(n) => matches!(n & 0xff, 5 | 6),
                // PostgreSQL: connection exceptions, the server shutting down or
                // terminating the session, too many connections, a database not
                // accepting connections.
                None => {
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || code == "53300"
                        || (code == "55000" && d.message().contains("accepting connections"))
                }
            }
        }
        _ => false,
    }
}

/// The (extended) result code of a SQLite error; `None` for PostgreSQL's.
fn sqlite_code(d: &dyn sqlx::error::DatabaseError) -> Option<i64> {
    d.try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .and_then(sqlx::error::DatabaseError::code)
        .and_then(|c| c.parse().ok())
}

/// A SQLite error that says the file is no database (any more): corrupt, not a
/// database, or without the journal's tables (truncated).
fn damaged(store: &str, e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e
        && let Some(code) = sqlite_code(d.as_ref())
        && (matches!(code & 0xff, 11 | 26) || d.message().starts_with("no such table"))
    {
        return StoreError::Damaged {
            store: store.to_owned(),
            reason: format!(
                "{} (it may have been truncated or overwritten: restore it from a copy)",
                d.message()
            ),
        };
    }
    StoreError::Sql(e)
}

/// A SQLite store's file before it is opened: a read-only or `mode=rw` one must exist,
/// and an existing one must not be empty (a store truncated to nothing is refused, not
/// made anew). One that is empty is looked at again a moment later: a process creating
/// the store may be about to write its first page.
async fn check_file(url: &str, path: &Path, mode: Mode) -> Result<(), StoreError> {
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
        Some((0, true)) => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match len() {
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
    /// As given (for messages).
    pub url: String,
    parsed: std::sync::Arc<StoreUrl>,
    /// The largest size a SQLite store's file was seen at: it never shrinks (nothing
    /// here vacuums it), so a smaller one was truncated under this process.
    file_len: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The lease a runner holds ([`Store::holding`]): every append checks it.
    fence: Option<std::sync::Arc<Lease>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (and creates or migrates) the store at `url`; with `mode=ro`, opens it
    /// for reading only (it must exist and be at this program's schema).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let open_err = |reason: String| StoreError::Open {
            url: url.to_owned(),
            reason,
        };
        let parsed = StoreUrl::parse(url).map_err(open_err)?;
        if let Some(path) = parsed.sqlite_file() {
            check_file(url, path, parsed.mode).await?;
            if parsed.mode == Mode::Create
                && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| open_err(format!("cannot create `{}`: {e}", dir.display())))?;
            }
        }
        let sqlite = parsed.sqlite_file().is_some();
        let read_only = parsed.read_only();
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 4 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    // Every connection the pool makes (again, after one was dropped)
                    // gets the same settings. WAL lets readers (`status`, the status
                    // page) run while a run writes; `synchronous=FULL` makes each
                    // committed event survive a power cut; a writer waits up to 10 s
                    // for another's lock before the store tries again.
                    let pragmas: &[&'static str] = match (sqlite, read_only) {
                        (true, false) => &[
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=FULL",
                            "PRAGMA busy_timeout=10000",
                        ],
                        (true, true) => &["PRAGMA busy_timeout=10000"],
                        (false, false) => &[],
                        (false, true) => &["SET default_transaction_read_only = on"],
                    };
                    for &pragma in pragmas {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&parsed.connect_url())
            .await
            .map_err(|e| open_err(e.to_string()))?;
        let store = Store {
            pool,
            url: url.to_owned(),
            parsed: std::sync::Arc::new(parsed),
            file_len: Default::default(),
            fence: None,
        };
        store.migrate().await.map_err(|e| match e {
            e @ (StoreError::Damaged { .. } | StoreError::Open { .. }) => e,
            e => open_err(e.to_string()),
        })?;
        store.unshrunk()?;
        Ok(store)
    }

    /// Opens the store at `url` if it exists: commands that only read or act on existing
    /// runs must not leave an empty SQLite store behind. `None`: no such file.
    pub async fn open_existing(url: &str) -> Result<Option<Store>, StoreError> {
        if let Ok(parsed) = StoreUrl::parse(url)
            && let Some(path) = parsed.sqlite_file()
            && !path.exists()
        {
            return Ok(None);
        }
        Store::open(url).await.map(Some)
    }

    /// Refuses a store opened read-only (`mode=ro`): for commands that write.
    pub fn writable(&self) -> Result<(), StoreError> {
        if self.parsed.read_only() {
            Err(StoreError::ReadOnly(self.url.clone()))
        } else {
            Ok(())
        }
    }

    /// The URL to connect to the store's database with (a follower's own connection).
    pub fn connect_url(&self) -> String {
        self.parsed.connect_url()
    }

    /// The store's URL as parsed.
    pub fn parsed(&self) -> &StoreUrl {
        &self.parsed
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
            parsed: std::sync::Arc::new(StoreUrl {
                raw: url.into(),
                location: url::Location::Sqlite(":memory:".into()),
                mode: Mode::Create,
            }),
            file_len: Default::default(),
            fence: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations this store lacks, all in one transaction. On PostgreSQL a
    /// transaction-scoped advisory lock keeps two processes opening a new store at the
    /// same moment from creating the same tables twice. A store of a newer schema than
    /// this program knows is refused, and a read-only one must be at this schema.
    async fn migrate(&self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
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
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
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
    fn classify<T>(&self, r: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        r.map_err(|e| damaged(&self.url, e))
    }

    /// Refuses a SQLite store whose file shrank (or went) since this process last
    /// looked: it was truncated or replaced under a live process, and what SQLite would
    /// read or write there now is no journal.
    fn unshrunk(&self) -> Result<(), StoreError> {
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

    /// Runs `op` until it answers something other than a [`transient`] error, for at
    /// most [`RECONNECT_WINDOW`]: the pool makes new connections for each try.
    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut since: Option<std::time::Instant> = None;
        let mut delay = Duration::from_millis(50);
        loop {
            self.unshrunk()?;
            let e = match op().await {
                Err(StoreError::Sql(e)) => damaged(&self.url, e),
                r => return r,
            };
            if !transient(&e) {
                return Err(e);
            }
            let since = *since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= RECONNECT_WINDOW {
                return Err(StoreError::Unreachable {
                    store: self.url.clone(),
                    last: e.to_string(),
                });
            }
            tokio::time::sleep(delay.min(RECONNECT_WINDOW.saturating_sub(since.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
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
    ///
    /// A connection lost on the way leaves the outcome unknown (the commit may have
    /// happened, its answer not arrived): before trying again, the rows at `first..` are
    /// read back. Ours there (same kind, body and time): it was committed, and is not
    /// written twice. Someone else's: [`StoreError::Conflict`]. None: written again.
    async fn append_rows(
        &self,
        stream: &str,
        register: Option<(&str, &str)>,
        first: i64,
        rows: &[(&str, String)],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let mut tries = 0;
        self.retry(|| {
            tries += 1;
            let again = tries > 1;
            async move {
                if again {
                    match self.landed(stream, first, rows, at_ms).await? {
                        Some(true) => return Ok(()),
                        Some(false) => return Err(StoreError::Conflict(stream.to_owned())),
                        None => {}
                    }
                }
                self.append_once(stream, register, first, rows, at_ms).await
            }
        })
        .await?;
        changed();
        Ok(())
    }

    /// Whether rows from `first` are there: `Some(true)` ours, `Some(false)` another
    /// writer's, `None` nothing at `first`.
    async fn landed(
        &self,
        stream: &str,
        first: i64,
        rows: &[(&str, String)],
        at_ms: i64,
    ) -> Result<Option<bool>, StoreError> {
        let there = sqlx::query(
            "SELECT seq, at_ms, kind, body FROM events WHERE run_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
        )
        .bind(stream)
        .bind(first)
        .bind(first + rows.len() as i64)
        .fetch_all(&self.pool)
        .await?;
        if there.is_empty() {
            return Ok(None);
        }
        let ours = there.len() == rows.len()
            && there.iter().zip(rows).all(|(r, (kind, body))| {
                r.try_get::<i64, _>("at_ms").ok() == Some(at_ms)
                    && r.try_get::<String, _>("kind").ok().as_deref() == Some(*kind)
                    && r.try_get::<String, _>("body").ok().as_deref() == Some(body.as_str())
            });
        Ok(Some(ours))
    }

    /// One try of [`Store::append_rows`].
    async fn append_once(
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
        lost_answer()
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
        self.parsed.sqlite_file().is_none()
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

    /// Runs one query, trying again while the database cannot be reached.
    async fn fetch_all(
        &self,
        sql: &'static str,
        binds: &[Bind<'_>],
    ) -> Result<Vec<AnyRow>, StoreError> {
        self.retry(|| async {
            let mut q = sqlx::query(sql);
            for b in binds {
                q = match b {
                    Bind::Text(t) => q.bind(*t),
                    Bind::Int(n) => q.bind(*n),
                };
            }
            Ok(q.fetch_all(&self.pool).await?)
        })
        .await
    }

    /// Scheduled maintenances: (id, runbook), oldest first.
    pub async fn notices(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT id, runbook FROM notices ORDER BY created_ms, id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("runbook")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// The rows of a stream after `seq`, in order.
    async fn rows_after(&self, stream: &str, seq: i64) -> Result<Vec<AnyRow>, StoreError> {
        self.fetch_all(
            "SELECT seq, at_ms, kind, body FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            &[Bind::Text(stream), Bind::Int(seq)],
        )
        .await
    }

    /// Events of a scheduled maintenance after `seq`.
    pub async fn load_notice_after(
        &self,
        id: &str,
        seq: i64,
    ) -> Result<Vec<NoticeRecorded>, StoreError> {
        let rows = self.rows_after(id, seq).await?;
        let (events, damage) = decode_rows(seq, &rows)?;
        self.refuse(id, damage)?;
        Ok(events
            .into_iter()
            .map(|(seq, at_ms, event)| NoticeRecorded { seq, at_ms, event })
            .collect())
    }

    /// The last sequence number of every stream (runs and scheduled maintenances): what
    /// a follower compares to know which streams grew.
    pub async fn heads(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT run_id, MAX(seq) AS head FROM events GROUP BY run_id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("run_id")?, r.try_get("head")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// SQLite's count of commits by other connections (other processes), for polling.
    pub async fn data_version(&self) -> Result<i64, StoreError> {
        let rows = self.fetch_all("PRAGMA data_version", &[]).await?;
        match rows.first() {
            Some(r) => Ok(r.try_get(0)?),
            None => Ok(0),
        }
    }

    /// Every event of a run, in order.
    pub async fn load(&self, run_id: &str) -> Result<Vec<Recorded>, StoreError> {
        let rows = self.rows_after(run_id, 0).await?;
        if rows.is_empty() {
            return Err(StoreError::UnknownRun(run_id.to_owned()));
        }
        let kind: String = rows[0].try_get("kind")?;
        if kind != "run_started" {
            return Err(StoreError::NotARun(run_id.to_owned()));
        }
        let (events, damage) = decode_rows(0, &rows)?;
        self.refuse(run_id, damage)?;
        Ok(events.into_iter().map(recorded).collect())
    }

    /// Events after `seq` (for followers that already have the earlier ones).
    pub async fn load_after(&self, run_id: &str, seq: i64) -> Result<Vec<Recorded>, StoreError> {
        let (events, damage) = self.load_readable_after(run_id, seq).await?;
        self.refuse(run_id, damage)?;
        Ok(events)
    }

    /// Events after `seq` up to the first that cannot be read (its body damaged, or one
    /// missing before it), and that one's [`Damage`]: what the status page can still
    /// show of a damaged run.
    pub async fn load_readable_after(
        &self,
        run_id: &str,
        seq: i64,
    ) -> Result<(Vec<Recorded>, Option<Damage>), StoreError> {
        let rows = self.rows_after(run_id, seq).await?;
        let (events, damage) = decode_rows(seq, &rows)?;
        Ok((events.into_iter().map(recorded).collect(), damage))
    }

    /// A damage found reading `stream`, as the error that refuses it.
    fn refuse(&self, stream: &str, damage: Option<Damage>) -> Result<(), StoreError> {
        match damage {
            None => Ok(()),
            Some(d) => Err(StoreError::Corrupt {
                store: self.url.clone(),
                run: stream.to_owned(),
                seq: d.seq,
                reason: d.reason,
            }),
        }
    }

    /// All runs, newest first.
    pub async fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT run_id, runbook, started_ms FROM runs ORDER BY started_ms DESC, run_id DESC",
                &[],
            )
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
        let rows = self
            .fetch_all(
                "SELECT COUNT(*) AS n FROM events WHERE run_id = $1",
                &[Bind::Text(run_id)],
            )
            .await?;
        let n: i64 = match rows.first() {
            Some(r) => r.try_get("n")?,
            None => 0,
        };
        Ok(n > 0)
    }

    /// The lease on a runbook, if anyone holds it.
    pub async fn lease(&self, runbook: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self.lease_row(runbook).await?.filter(|l| !l.released))
    }

    /// The lease row of a runbook: its holder, or who gave it back last.
    async fn lease_row(&self, runbook: &str) -> Result<Option<Lease>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT runbook, run_id, host, pid, heartbeat_ms, epoch, released FROM leases WHERE runbook = $1",
                &[Bind::Text(runbook)],
            )
            .await?;
        Ok(rows.first().map(lease_of).transpose()?)
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
    /// has it. A try whose answer was lost with the connection finds the lease its own
    /// when it looks again.
    pub async fn acquire(
        &self,
        lease: &Lease,
        expected: Option<&Lease>,
    ) -> Result<Result<Lease, Lease>, StoreError> {
        self.writable()?;
        let epoch: Option<i64> = self
            .retry(|| async {
                let row = match expected {
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
                };
                Ok(row.map(|r| r.try_get("epoch")).transpose()?)
            })
            .await?;
        if let Some(epoch) = epoch {
            return Ok(Ok(Lease {
                epoch,
                released: false,
                ..lease.clone()
            }));
        }
        match self.lease(&lease.runbook).await? {
            // Ours: taken by a try whose answer was lost.
            Some(holder)
                if holder.run_id == lease.run_id
                    && holder.host == lease.host
                    && holder.pid == lease.pid
                    && holder.heartbeat_ms == lease.heartbeat_ms =>
            {
                Ok(Ok(holder))
            }
            Some(holder) => Ok(Err(holder)),
            // Released in between: try again from scratch.
            None => Box::pin(self.acquire(lease, None)).await,
        }
    }

    /// Refreshes the heartbeat of `lease` (as [`Store::acquire`] returned it); answers
    /// [`StoreError::LeaseLost`] when it has been taken over.
    pub async fn heartbeat(&self, lease: &Lease) -> Result<(), StoreError> {
        self.writable()?;
        let done = self
            .retry(|| async {
                Ok(sqlx::query(
                    "UPDATE leases SET heartbeat_ms = $1 WHERE runbook = $2 AND run_id = $3 AND epoch = $4 AND released = 0",
                )
                .bind(now_ms())
                .bind(lease.runbook.as_str())
                .bind(lease.run_id.as_str())
                .bind(lease.epoch)
                .execute(&self.pool)
                .await?
                .rows_affected())
            })
            .await?;
        if done == 1 {
            Ok(())
        } else {
            Err(self.lost(&lease.runbook).await)
        }
    }

    /// Gives the lease back. The row stays, marked released, so that the next
    /// acquisition counts on from its epoch (a runner that lost the lease can never
    /// find its old epoch again) and a runner that lost it is told who had it.
    pub async fn release(&self, runbook: &str, run_id: &str) -> Result<(), StoreError> {
        self.writable()?;
        self.retry(|| async {
            sqlx::query(
                "UPDATE leases SET released = 1 WHERE runbook = $1 AND run_id = $2 AND released = 0",
            )
            .bind(runbook)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// Closes the pool, flushing SQLite's WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A value bound to a query's placeholder.
enum Bind<'a> {
    Text(&'a str),
    Int(i64),
}

/// Where a stream stops being readable.
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    /// The first event that cannot be read.
    pub seq: i64,
    /// When it was recorded (its row says so, even when its body is damaged); for a
    /// missing event, the time of the one after the gap.
    pub at_ms: i64,
    pub reason: String,
}

fn recorded((seq, at_ms, event): (i64, i64, Event)) -> Recorded {
    Recorded { seq, at_ms, event }
}

/// A stream's events as far as they can be read (number, time, event), and where that
/// stops.
type Readable<T> = (Vec<(i64, i64, T)>, Option<Damage>);

/// Decodes a stream's rows after `after`, in order, up to the first one that cannot be
/// read: a body that does not parse, or a number missing before it (the numbers of a
/// stream go 1, 2, 3, ... without gaps).
fn decode_rows<T: serde::de::DeserializeOwned>(
    after: i64,
    rows: &[AnyRow],
) -> Result<Readable<T>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for (expected, r) in (after + 1..).zip(rows) {
        let seq: i64 = r.try_get("seq")?;
        let at_ms: i64 = r.try_get("at_ms")?;
        if seq != expected {
            let reason = format!(
                "event {expected} is missing (the journal goes from {} to {seq})",
                expected - 1
            );
            return Ok((
                out,
                Some(Damage {
                    seq: expected,
                    at_ms,
                    reason,
                }),
            ));
        }
        let body: String = r.try_get("body")?;
        match serde_json::from_str(&body) {
            Ok(event) => out.push((seq, at_ms, event)),
            Err(e) => {
                let reason = e.to_string();
                return Ok((out, Some(Damage { seq, at_ms, reason })));
            }
        }
    }
    Ok((out, None))
}

/// Fault injection for the reconnection tests: with `RUNBOOK_TEST_LOSE_COMMIT=N` the
/// answer to the Nth commit of this process is lost (as when the connection drops
/// between the server's commit and its reply): the append is told of a dropped
/// connection, though its rows are in.
fn lost_answer() -> Result<(), StoreError> {
    static LEFT: std::sync::OnceLock<std::sync::atomic::AtomicI64> = std::sync::OnceLock::new();
    let left = LEFT.get_or_init(|| {
        std::sync::atomic::AtomicI64::new(
            std::env::var("RUNBOOK_TEST_LOSE_COMMIT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )
    });
    if left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
        return Err(StoreError::Sql(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected: the answer to a commit was lost (RUNBOOK_TEST_LOSE_COMMIT)",
        ))));
    }
    Ok(())
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
