//! One lease per runbook: who runs it now, fenced by an epoch that every take-over
//! bumps.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::reconnect::Bind;
use super::{Store, StoreError, now_ms};

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

impl Store {
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
    pub(super) async fn lost(&self, runbook: &str) -> StoreError {
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
}
