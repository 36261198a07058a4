//! The journal store: append-only events per run, the runs, and one lease per runbook,
//! kept in SQLite (the default, WAL mode) or PostgreSQL through sqlx. The SQL is written
//! once for both. This file owns the [`Store`] handle and opening it; the schema, the
//! journal's reads and appends, the runs, the leases, the errors and the reconnecting
//! query are in the submodules.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

mod error;
mod journal;
mod lease;
pub mod notice;
pub mod outbox;
mod reconnect;
mod runs;
mod schema;
pub mod url;
pub mod wake;

pub use error::{RECONNECT_WINDOW, StoreError};
pub use journal::Damage;
pub use lease::Lease;
pub use runs::RunRow;
pub use url::{Mode, StoreUrl};

use schema::check_file;

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
            // A SQLite file cannot drop a connection as a server can: no ping before
            // each use (it is a round trip to the driver's thread per query).
            .test_before_acquire(!sqlite)
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

    pub fn is_postgres(&self) -> bool {
        self.parsed.sqlite_file().is_none()
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

    /// Closes the pool, flushing SQLite's WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
