//! Trying again while the database cannot be reached: every query of the store goes
//! through [`Store::retry`], with the program's one backoff ([`crate::retry`]).

use std::time::Duration;

use sqlx::any::AnyRow;

use super::error::{RECONNECT_WINDOW, damaged, transient};
use super::{Store, StoreError};
use crate::retry::{Backoff, Failed, Next};

/// Waits of 50 ms doubling up to 1 s, for at most [`RECONNECT_WINDOW`] after the first
/// failure.
const RECONNECT: Backoff =
    Backoff::new(Duration::from_millis(50), Duration::from_secs(1)).within(RECONNECT_WINDOW);

impl Store {
    /// Runs `op` until it answers something other than a [`transient`] error, for at
    /// most [`RECONNECT_WINDOW`]: the pool makes new connections for each try.
    pub(super) async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let tried = RECONNECT
            .retry(
                &crate::retry::Tokio,
                || {
                    let intact = self.unshrunk();
                    let answer = op();
                    async move {
                        intact?;
                        answer.await
                    }
                },
                |e, wait| {
                    let e = match e {
                        StoreError::Sql(e) => damaged(&self.url, e),
                        e => e,
                    };
                    if transient(&e) {
                        tracing::debug!("store `{}`: {e}; trying again in {wait:?}", self.url);
                        Next::Later(e)
                    } else {
                        Next::Stop(e)
                    }
                },
            )
            .await;
        tried.map_err(|f| match f {
            Failed::Stopped(e) => e,
            Failed::Exhausted(e) => StoreError::Unreachable {
                store: self.url.clone(),
                last: e.to_string(),
            },
        })
    }

    /// Runs one query, trying again while the database cannot be reached.
    pub(super) async fn fetch_all(
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
}

/// A value bound to a query's placeholder.
pub(super) enum Bind<'a> {
    Text(&'a str),
    Int(i64),
}

/// Fault injection for the reconnection tests: with `RUNBOOK_TEST_LOSE_COMMIT=N` the
/// answer to the Nth commit of this process is lost (as when the connection drops
/// between the server's commit and its reply): the append is told of a dropped
/// connection, though its rows are in.
pub(super) fn lost_answer() -> Result<(), StoreError> {
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
