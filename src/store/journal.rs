//! A stream's events in the store: appended in one transaction, numbered without gaps
//! and checked against a lost answer; read back in order, as far as they can be read.

use std::fmt::Write as _;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::error::conflict_or;
use super::reconnect::{Bind, lost_answer};
use super::{NOTIFY_CHANNEL, Store, StoreError, now_ms};
use crate::journal::{Event, NoticeEvent, NoticeRecorded, Recorded};

/// The INSERT of `rows` (numbered from `first`) into `stream`'s journal, bound. With a
/// `fence`, the rows go in only while that lease is held and not released: the check is
/// part of the statement.
fn insert_events<'q>(
    stream: &'q str,
    first: i64,
    at_ms: i64,
    rows: &'q [(&'q str, String)],
    fence: Option<&'q super::Lease>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let mut sql = String::from("INSERT INTO events (run_id, seq, at_ms, kind, body) ");
    sql.push_str(match fence {
        Some(_) => "SELECT * FROM (VALUES ",
        None => "VALUES ",
    });
    for i in 0..rows.len() {
        let p = i * 5;
        if i > 0 {
            sql.push_str(", ");
        }
        let _ = write!(
            sql,
            "(${}, ${}, ${}, ${}, ${})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5
        );
    }
    if fence.is_some() {
        let p = rows.len() * 5;
        let _ = write!(
            sql,
            ") WHERE EXISTS (SELECT 1 FROM leases WHERE runbook = ${} AND run_id = ${} AND epoch = ${} AND released = 0)",
            p + 1,
            p + 2,
            p + 3
        );
    }
    // Only placeholders are built into the text: the values are bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (i, (kind, body)) in rows.iter().enumerate() {
        query = query
            .bind(stream)
            .bind(first + i as i64)
            .bind(at_ms)
            .bind(*kind)
            .bind(body.as_str());
    }
    if let Some(lease) = fence {
        query = query
            .bind(lease.runbook.as_str())
            .bind(lease.run_id.as_str())
            .bind(lease.epoch);
    }
    query
}

/// Events one INSERT carries at most: 5 parameters each, within the 999 even an old
/// SQLite allows.
const ROWS_PER_INSERT: usize = 190;

impl Store {
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
        super::changed();
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

    /// [`Store::append_once`] on SQLite, in one statement (one round trip to the
    /// driver's thread, one commit): the rows are inserted only while the runner's lease
    /// holds, checked inside the statement's own write transaction, so no take-over can
    /// commit in between. (The runner's heartbeat renews the lease on its own.)
    async fn append_one_statement(
        &self,
        stream: &str,
        first: i64,
        rows: &[(&str, String)],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let query = insert_events(stream, first, at_ms, rows, self.fence.as_deref());
        let done = query
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, stream))?;
        if let Some(lease) = &self.fence
            && done.rows_affected() != rows.len() as u64
        {
            return Err(self.lost(&lease.runbook).await);
        }
        lost_answer()
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
        if !self.is_postgres()
            && register.is_none()
            && !rows.is_empty()
            && rows.len() <= ROWS_PER_INSERT
        {
            return self.append_one_statement(stream, first, rows, at_ms).await;
        }
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
        for (c, chunk) in rows.chunks(ROWS_PER_INSERT).enumerate() {
            let from = first + (c * ROWS_PER_INSERT) as i64;
            insert_events(stream, from, at_ms, chunk, None)
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
        self.pairs(
            "SELECT id, runbook FROM notices ORDER BY created_ms, id",
            "id",
            "runbook",
        )
        .await
    }

    /// Two columns of every row a query without parameters gives.
    async fn pairs<A, B>(
        &self,
        sql: &'static str,
        a: &str,
        b: &str,
    ) -> Result<Vec<(A, B)>, StoreError>
    where
        A: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
        B: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let rows = self.fetch_all(sql, &[]).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(a)?, r.try_get(b)?)))
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
        self.pairs(
            "SELECT run_id, MAX(seq) AS head FROM events GROUP BY run_id",
            "run_id",
            "head",
        )
        .await
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
