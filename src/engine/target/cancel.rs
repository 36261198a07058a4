//! Statements stopped on the server when the runner stops waiting for them (a step's
//! timeout, an abort, Ctrl-C): a watch armed while a statement runs, and the record of
//! what was stopped, settled before the run records its outcome.

use super::*;

/// A statement stopped on the server because the runner stopped waiting for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancelled {
    /// The database's URL without its password.
    pub database: String,
    /// The PostgreSQL backend that ran it (none for SQLite).
    pub pid: Option<i32>,
    /// The statement, shortened to a line.
    pub statement: String,
    /// It ignored the cancel request and its backend was terminated.
    pub terminated: bool,
    /// Why it could not be stopped (it may still be running).
    pub error: Option<String>,
}

/// How long a cancelled PostgreSQL statement has to stop before its backend is
/// terminated, and then how long the backend has to go.
pub(super) const CANCEL_GRACE: Duration = Duration::from_millis(500);

/// How long stopping one statement may take in all (connecting included).
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest statement text a cancellation records.
pub(super) const STATEMENT_CHARS: usize = 200;

/// How to stop a connection's statement from outside it.
#[derive(Clone)]
pub(super) enum Stopper {
    /// From another connection, by backend pid.
    Postgres {
        url: String,
        database: String,
        pid: i32,
    },
    /// `sqlite3_interrupt` on the connection's handle.
    Sqlite { database: String, handle: RawSqlite },
}

/// A SQLite connection's `sqlite3*`. `sqlite3_interrupt` may be called from any thread
/// while the connection is open; a [`Watch`] lives only while its [`Target`] does.
#[derive(Clone, Copy)]
pub(super) struct RawSqlite(pub(super) std::ptr::NonNull<libsqlite3_sys::sqlite3>);

// SAFETY: only used for `sqlite3_interrupt`, which SQLite allows from any thread.
unsafe impl Send for RawSqlite {}

/// Armed while a statement runs; dropped armed (its future dropped), it stops the
/// statement on the server.
pub(super) struct Watch {
    stop: Option<(Stopper, String)>,
}

impl Watch {
    pub(super) fn arm(stopper: &Stopper, statement: &str) -> Watch {
        registry().armed.fetch_add(1, Ordering::SeqCst);
        Watch {
            stop: Some((stopper.clone(), shorten(statement))),
        }
    }

    /// The statement ended: nothing to stop.
    pub(super) fn disarm(mut self) {
        if self.stop.take().is_some() {
            registry().armed.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some((stopper, statement)) = self.stop.take() else {
            return;
        };
        let reg = registry();
        let pending = match stopper {
            Stopper::Sqlite { database, handle } => {
                // SAFETY: the connection is open: the watch is dropped inside the
                // `guarded` call that borrows it.
                unsafe { libsqlite3_sys::sqlite3_interrupt(handle.0.as_ptr()) };
                Pending::Done(Cancelled {
                    database,
                    pid: None,
                    statement,
                    terminated: false,
                    error: None,
                })
            }
            Stopper::Postgres { url, database, pid } => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    reg.armed.fetch_sub(1, Ordering::SeqCst);
                    return;
                };
                Pending::Stopping(rt.spawn(stop_postgres(url, database, pid, statement)))
            }
        };
        reg.pending.lock().expect("not poisoned").push(pending);
        // Counted down after it is pending: `settle_cancellations` sees it either way.
        reg.armed.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Cancellations under way or done, not yet settled.
pub(super) struct Registry {
    /// Statements running under a [`Watch`].
    armed: AtomicUsize,
    pending: std::sync::Mutex<Vec<Pending>>,
}

pub(super) enum Pending {
    Done(Cancelled),
    /// `None`: the statement had ended by itself.
    Stopping(tokio::task::JoinHandle<Option<Cancelled>>),
}

pub(super) fn registry() -> &'static Registry {
    static REGISTRY: Registry = Registry {
        armed: AtomicUsize::new(0),
        pending: std::sync::Mutex::new(Vec::new()),
    };
    &REGISTRY
}

/// How long [`settle_cancellations`] waits for statements being dropped (fan-out tasks
/// aborted, say) to reach their watch.
pub(super) const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// Waits until every statement whose future was dropped has been stopped on the server,
/// and returns what was stopped since the last call. The runner records these before it
/// records the step's outcome or exits. With `all`, it first waits (a short while) for
/// statements still running to be dropped: the work is being stopped as a whole.
pub async fn settle_cancellations(all: bool) -> Vec<Cancelled> {
    let reg = registry();
    if all {
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        while reg.armed.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let pending = std::mem::take(&mut *reg.pending.lock().expect("not poisoned"));
    let mut done = Vec::new();
    for p in pending {
        match p {
            Pending::Done(c) => done.push(c),
            Pending::Stopping(task) => {
                if let Ok(Some(c)) = task.await {
                    done.push(c);
                }
            }
        }
    }
    done
}

/// Stops backend `pid` from a fresh connection if it is still running a statement:
/// cancel, and terminate the backend when the statement has not stopped after
/// [`CANCEL_GRACE`]. `None` when it had already ended.
pub(super) async fn stop_postgres(
    url: String,
    database: String,
    pid: i32,
    statement: String,
) -> Option<Cancelled> {
    let mut cancelled = Cancelled {
        database,
        pid: Some(pid),
        statement,
        terminated: false,
        error: None,
    };
    let stopping = async {
        let mut c = sqlx::PgConnection::connect(&url).await?;
        let active = async |c: &mut sqlx::PgConnection| {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active')",
            )
            .bind(pid)
            .fetch_one(c)
            .await
        };
        // Gone within `CANCEL_GRACE`, polled.
        let stops = async |c: &mut sqlx::PgConnection| {
            let deadline = tokio::time::Instant::now() + CANCEL_GRACE;
            loop {
                if !active(c).await? {
                    return Ok::<_, sqlx::Error>(true);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        // Not active yet may be a statement still on its way to the backend: wait until
        // it runs, or the backend is gone (its client's connection was dropped with the
        // statement) or stays idle (the statement ended).
        let deadline = tokio::time::Instant::now() + CANCEL_GRACE;
        loop {
            let state: Option<Option<String>> =
                sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
                    .bind(pid)
                    .fetch_optional(&mut c)
                    .await?;
            match state {
                Some(Some(s)) if s == "active" => break,
                Some(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = c.close().await;
                    return Ok(None);
                }
            }
        }
        let signalled: bool = sqlx::query_scalar("SELECT pg_cancel_backend($1)")
            .bind(pid)
            .fetch_one(&mut c)
            .await?;
        let mut stopped = signalled && stops(&mut c).await?;
        let mut terminated = false;
        if !stopped {
            terminated = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&mut c)
                .await?;
            stopped = terminated && stops(&mut c).await?;
        }
        let _ = c.close().await;
        Ok::<_, sqlx::Error>(Some((terminated, stopped)))
    };
    match tokio::time::timeout(STOP_TIMEOUT, stopping).await {
        Ok(Ok(None)) => return None,
        Ok(Ok(Some((terminated, stopped)))) => {
            cancelled.terminated = terminated;
            if !stopped {
                cancelled.error = Some(format!(
                    "backend {pid} is still running it: neither pg_cancel_backend nor pg_terminate_backend stopped it"
                ));
            }
        }
        Ok(Err(e)) => {
            cancelled.error = Some(format!(
                "cannot stop backend {pid}, it may still be running: {}",
                describe(&e)
            ))
        }
        Err(_) => {
            cancelled.error = Some(format!(
                "cannot stop backend {pid} within {}s, it may still be running",
                STOP_TIMEOUT.as_secs()
            ))
        }
    }
    Some(cancelled)
}

/// A statement on one line, at most [`STATEMENT_CHARS`] long.
pub(super) fn shorten(statement: &str) -> String {
    let line = statement.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(STATEMENT_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// A database URL as it may be shown and recorded: without a password.
pub(super) fn shown_url(database: &str) -> String {
    match engine(database) {
        Ok(Engine::Postgres) => crate::sql::url::pg_url_without_password(database),
        _ => database.to_owned(),
    }
}
