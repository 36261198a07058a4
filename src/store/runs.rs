//! The runs table: which runs the store holds.

use sqlx::Row;

use super::reconnect::Bind;
use super::{Store, StoreError};

/// A run as listed by `runbook runs`.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run_id: String,
    pub runbook: String,
    pub started_ms: i64,
}

impl Store {
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
}
