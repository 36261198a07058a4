//! What can go wrong with the store, said for people, and which of its errors may go
//! away by trying again.

use std::time::Duration;

use super::Lease;

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
pub(super) fn transient(e: &StoreError) -> bool {
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
pub(super) fn sqlite_code(d: &dyn sqlx::error::DatabaseError) -> Option<i64> {
    d.try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .and_then(sqlx::error::DatabaseError::code)
        .and_then(|c| c.parse().ok())
}

/// A SQLite error that says the file is no database (any more): corrupt, not a
/// database, or without the journal's tables (truncated).
pub(super) fn damaged(store: &str, e: sqlx::Error) -> StoreError {
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

/// A unique violation on append means another writer took the sequence number (or the
/// run id) first.
pub(super) fn conflict_or(e: sqlx::Error, run_id: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(run_id.to_owned())
        }
        _ => StoreError::Sql(e),
    }
}
