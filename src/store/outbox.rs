//! Notifications in the store: subscribers, the targets a run's `notify:` chose, the
//! outbox of events still to be turned into deliveries (filled by a trigger in the
//! transaction that appends the event: see `schema.rs`), each message once, each
//! delivery once, and the Statuspage mirror's ids. What is sent, and how, is
//! `crate::notify`'s; this file only keeps the books.
//!
//! A delivery's id is its message's and its recipient's: one update reaches one
//! subscriber at most once, whoever expands the outbox and however often. A sender
//! claims deliveries (`claimed_ms`, `claimed_by`) before sending them, so that two
//! senders never send the same one; a claim runs out after [`CLAIM_MS`], and the
//! sender takes back at once those of a process of its host that is gone.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::reconnect::Bind;
use super::{Store, StoreError};

/// How long a claimed delivery is left to its sender before another may send it: the
/// longest a send may take (30 s) and a margin.
pub const CLAIM_MS: i64 = 40_000;

/// Random lowercase hex of `bytes` bytes, from the kernel: tokens, secrets and ids.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Someone who asked to hear of every public update (of some components).
#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    /// `sub_` and random hex.
    pub id: String,
    /// `email` or `webhook`.
    pub channel: String,
    /// The address, or the webhook's URL.
    pub address: String,
    /// The components (their names) it is about; empty: all.
    pub components: Vec<String>,
    /// `pending` (an email not confirmed yet), `active`, or `failing` (a webhook that
    /// failed for a day).
    pub state: String,
    /// In the confirmation and unsubscribe links: whoever holds it may do both.
    pub token: String,
    /// A webhook's HMAC key (empty for email).
    pub secret: String,
    pub created_ms: i64,
    /// 0 until confirmed.
    pub confirmed_ms: i64,
}

/// What adding a subscriber found.
#[derive(Debug)]
pub enum Added {
    New(Subscriber),
    /// The same channel and address were already there (as they are).
    Exists(Subscriber),
}

/// One recipient of a message.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// A subscriber's id, `team:N` (a run's `notify:` target), `mirror`, or `confirm`.
    pub id: String,
    /// `email`, `webhook`, `slack` or `statuspage`.
    pub channel: String,
    pub address: String,
}

impl From<&Subscriber> for Recipient {
    fn from(s: &Subscriber) -> Recipient {
        Recipient {
            id: s.id.clone(),
            channel: s.channel.clone(),
            address: s.address.clone(),
        }
    }
}

/// A delivery as the books have it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub message: String,
    pub recipient: String,
    pub channel: String,
    pub address: String,
    /// `pending`, `sent`, `failed` (gave up), or `cancelled` (unsubscribed first).
    pub state: String,
    pub attempts: i64,
    pub created_ms: i64,
    pub next_ms: i64,
    pub sent_ms: i64,
    /// The last attempt's error; empty when none failed.
    pub error: String,
}

/// A claimed delivery with its message's body, to send.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub body: String,
    /// Its subscriber (none for a team target or the mirror, or one removed since).
    pub subscriber: Option<Subscriber>,
}

/// A run's team notification target, as recorded when the run starts.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamTarget {
    pub channel: String,
    /// URL or address (templates rendered).
    pub address: String,
    /// The runbook's event names (`run_started`, `step_failed` ...).
    pub events: Vec<String>,
    /// The journal kinds those events come from (what the outbox trigger matches).
    pub kinds: Vec<String>,
}

/// Counts for `/metrics` and `runbook deliveries`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// (channel, state, count).
    pub deliveries: Vec<(String, String, i64)>,
    /// (channel, state, count) of subscribers.
    pub subscribers: Vec<(String, String, i64)>,
    /// Events in the outbox not yet expanded.
    pub outbox: i64,
    /// (channel, count) of deliveries given up, or pending after a failed try.
    pub failing: Vec<(String, i64)>,
}

/// The columns of a subscriber, as [`subscriber`] reads them.
macro_rules! subscriber_select {
    () => {
        "SELECT id, channel, address, components, state, token, secret, created_ms, confirmed_ms FROM subscribers"
    };
}

/// A list stored as `a,b,c` (components, events, journal kinds); empty: none.
fn comma_list(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn subscriber(r: &AnyRow) -> Result<Subscriber, sqlx::Error> {
    let components: String = r.try_get("components")?;
    Ok(Subscriber {
        id: r.try_get("id")?,
        channel: r.try_get("channel")?,
        address: r.try_get("address")?,
        components: comma_list(&components),
        state: r.try_get("state")?,
        token: r.try_get("token")?,
        secret: r.try_get("secret")?,
        created_ms: r.try_get("created_ms")?,
        confirmed_ms: r.try_get("confirmed_ms")?,
    })
}

fn delivery(r: &AnyRow) -> Result<Delivery, sqlx::Error> {
    Ok(Delivery {
        id: r.try_get("id")?,
        message: r.try_get("message")?,
        recipient: r.try_get("recipient")?,
        channel: r.try_get("channel")?,
        address: r.try_get("address")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        created_ms: r.try_get("created_ms")?,
        next_ms: r.try_get("next_ms")?,
        sent_ms: r.try_get("sent_ms")?,
        error: r.try_get("error")?,
    })
}

fn rows<T>(
    rows: Vec<AnyRow>,
    f: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(f)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

impl Store {
    /// Adds a subscriber, unless one of the same channel and address is there (then
    /// that one is answered, unchanged): nothing is stored twice.
    pub async fn add_subscriber(&self, s: &Subscriber) -> Result<Added, StoreError> {
        self.writable()?;
        let components = s.components.join(",");
        let inserted = self
            .fetch_all(
                "INSERT INTO subscribers (id, channel, address, components, state, token, secret, created_ms, confirmed_ms, failing_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0)
                 ON CONFLICT (channel, address) DO NOTHING RETURNING id",
                &[
                    Bind::Text(&s.id),
                    Bind::Text(&s.channel),
                    Bind::Text(&s.address),
                    Bind::Text(&components),
                    Bind::Text(&s.state),
                    Bind::Text(&s.token),
                    Bind::Text(&s.secret),
                    Bind::Int(s.created_ms),
                    Bind::Int(s.confirmed_ms),
                ],
            )
            .await?;
        if !inserted.is_empty() {
            return Ok(Added::New(s.clone()));
        }
        match self
            .subscriber_where_address(&s.channel, &s.address)
            .await?
        {
            Some(old) => Ok(Added::Exists(old)),
            // Removed between the two statements: as good as new, try once more.
            None => Box::pin(self.add_subscriber(s)).await,
        }
    }

    async fn subscriber_where_address(
        &self,
        channel: &str,
        address: &str,
    ) -> Result<Option<Subscriber>, StoreError> {
        let found = self
            .fetch_all(
                concat!(subscriber_select!(), " WHERE channel = $1 AND address = $2"),
                &[Bind::Text(channel), Bind::Text(address)],
            )
            .await?;
        Ok(rows(found, subscriber)?.pop())
    }

    /// Every subscriber, oldest first.
    pub async fn subscribers(&self) -> Result<Vec<Subscriber>, StoreError> {
        let found = self
            .fetch_all(
                concat!(subscriber_select!(), " ORDER BY created_ms, id"),
                &[],
            )
            .await?;
        rows(found, subscriber)
    }

    /// The subscriber a confirmation or unsubscribe token names.
    pub async fn subscriber_by_token(&self, token: &str) -> Result<Option<Subscriber>, StoreError> {
        let found = self
            .fetch_all(
                concat!(subscriber_select!(), " WHERE token = $1"),
                &[Bind::Text(token)],
            )
            .await?;
        Ok(rows(found, subscriber)?.pop())
    }

    /// The subscriber of this id, or else of this address (of either channel).
    pub async fn subscriber_named(&self, name: &str) -> Result<Option<Subscriber>, StoreError> {
        let found = self
            .fetch_all(
                concat!(
                    subscriber_select!(),
                    " WHERE id = $1 OR address = $1 ORDER BY id"
                ),
                &[Bind::Text(name)],
            )
            .await?;
        let mut found = rows(found, subscriber)?;
        Ok(match found.iter().position(|s| s.id == name) {
            Some(i) => Some(found.swap_remove(i)),
            None => found.into_iter().next(),
        })
    }

    /// Confirms a pending subscriber (double opt-in); one already active stays so.
    pub async fn confirm_subscriber(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.writable()?;
        self.fetch_all(
            "UPDATE subscribers SET state = 'active', confirmed_ms = $2 WHERE id = $1 AND state = 'pending'",
            &[Bind::Text(id), Bind::Int(now_ms)],
        )
        .await?;
        Ok(())
    }

    /// Marks a subscriber `failing` (a webhook that failed for a day) or `active` again.
    pub async fn set_subscriber_state(
        &self,
        id: &str,
        state: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.fetch_all(
            "UPDATE subscribers SET state = $2, failing_ms = $3 WHERE id = $1 AND state <> 'pending'",
            &[Bind::Text(id), Bind::Text(state), Bind::Int(now_ms)],
        )
        .await?;
        Ok(())
    }

    /// Removes a subscriber; what was still to be sent to it is cancelled.
    pub async fn remove_subscriber(&self, id: &str) -> Result<bool, StoreError> {
        self.writable()?;
        let gone = self
            .fetch_all(
                "DELETE FROM subscribers WHERE id = $1 RETURNING id",
                &[Bind::Text(id)],
            )
            .await?;
        self.fetch_all(
            "UPDATE deliveries SET state = 'cancelled' WHERE recipient = $1 AND state = 'pending'",
            &[Bind::Text(id)],
        )
        .await?;
        Ok(!gone.is_empty())
    }

    /// Records where a run's team hears of it, before its first event: the outbox
    /// trigger reads them.
    pub async fn set_team_targets(
        &self,
        run_id: &str,
        targets: &[TeamTarget],
    ) -> Result<(), StoreError> {
        for (i, t) in targets.iter().enumerate() {
            let events = t.events.join(",");
            let kinds = format!(",{},", t.kinds.join(","));
            self.fetch_all(
                "INSERT INTO notify_targets (run_id, idx, channel, address, events, kinds)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, idx) DO NOTHING",
                &[
                    Bind::Text(run_id),
                    Bind::Int(i as i64),
                    Bind::Text(&t.channel),
                    Bind::Text(&t.address),
                    Bind::Text(&events),
                    Bind::Text(&kinds),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// A run's team targets, in their order (`team:N` is the Nth).
    pub async fn team_targets(&self, run_id: &str) -> Result<Vec<TeamTarget>, StoreError> {
        let found = self
            .fetch_all(
                "SELECT channel, address, events, kinds FROM notify_targets WHERE run_id = $1 ORDER BY idx",
                &[Bind::Text(run_id)],
            )
            .await?;
        rows(found, |r| {
            Ok(TeamTarget {
                channel: r.try_get("channel")?,
                address: r.try_get("address")?,
                events: comma_list(&r.try_get::<String, _>("events")?),
                kinds: comma_list(&r.try_get::<String, _>("kinds")?),
            })
        })
    }

    /// Events in the outbox, oldest first: (stream, seq).
    pub async fn outbox(&self, limit: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let found = self
            .fetch_all(
                "SELECT stream, seq FROM outbox ORDER BY at_ms, stream, seq LIMIT $1",
                &[Bind::Int(limit)],
            )
            .await?;
        rows(found, |r| Ok((r.try_get("stream")?, r.try_get("seq")?)))
    }

    /// Turns one outbox event into its messages and their deliveries, in one
    /// transaction: the event leaves the outbox as its deliveries are recorded, and a
    /// delivery already there (another sender expanded it) stays as it is.
    pub async fn expand(
        &self,
        stream: &str,
        seq: i64,
        messages: &[(String, String, Vec<Recipient>)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.retry(|| async {
            let mut tx = self.pool.begin().await?;
            // Deliveries are sent in the order they were made.
            let mut position: i64 =
                sqlx::query("SELECT COALESCE(MAX(position), 0) AS p FROM deliveries")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("p")?;
            for (id, body, recipients) in messages {
                sqlx::query(
                    "INSERT INTO messages (id, body, created_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id.as_str())
                .bind(body.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                for r in recipients {
                    position += 1;
                    insert_delivery(&mut tx, id, r, now_ms, position).await?;
                }
            }
            sqlx::query("DELETE FROM outbox WHERE stream = $1 AND seq = $2")
                .bind(stream)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await?;
        super::changed();
        Ok(())
    }

    /// A message of its own (a confirmation mail) and its one delivery.
    pub async fn enqueue(
        &self,
        message: &str,
        body: &str,
        to: &Recipient,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.expand(
            "",
            -1,
            &[(message.into(), body.into(), vec![to.clone()])],
            now_ms,
        )
        .await
    }

    /// Claims up to `limit` deliveries due by `now_ms`, oldest first, of every channel but
    /// the mirror's (or, `mirror`, of the mirror's): at most one per recipient, its
    /// oldest pending one, so that each recipient hears of the updates in order.
    pub async fn claim(
        &self,
        mirror: bool,
        limit: i64,
        now_ms: i64,
        me: &str,
    ) -> Result<Vec<Claimed>, StoreError> {
        // A recipient's deliveries go in the order of their updates: only its oldest
        // pending one may be claimed (a failed one holds back those after it).
        let sql = if mirror {
            "UPDATE deliveries SET claimed_ms = $1, claimed_by = $2
             WHERE state = 'pending' AND next_ms <= $3 AND claimed_ms <= $3 AND channel = 'statuspage'
               AND id IN (SELECT d.id FROM deliveries d WHERE d.state = 'pending' AND d.next_ms <= $3
                          AND d.claimed_ms <= $3 AND d.channel = 'statuspage'
                          AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.recipient = d.recipient
                                          AND e.state = 'pending' AND e.position < d.position)
                          ORDER BY d.position LIMIT $4)
             RETURNING id"
        } else {
            "UPDATE deliveries SET claimed_ms = $1, claimed_by = $2
             WHERE state = 'pending' AND next_ms <= $3 AND claimed_ms <= $3 AND channel <> 'statuspage'
               AND id IN (SELECT d.id FROM deliveries d WHERE d.state = 'pending' AND d.next_ms <= $3
                          AND d.claimed_ms <= $3 AND d.channel <> 'statuspage'
                          AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.recipient = d.recipient
                                          AND e.state = 'pending' AND e.position < d.position)
                          ORDER BY d.position LIMIT $4)
             RETURNING id"
        };
        let until = now_ms + CLAIM_MS;
        let claimed = self
            .fetch_all(
                sql,
                &[
                    Bind::Int(until),
                    Bind::Text(me),
                    Bind::Int(now_ms),
                    Bind::Int(limit),
                ],
            )
            .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // What was just claimed, with the messages' bodies, in one query.
        let found = self
            .fetch_all(
                "SELECT d.id, d.message, d.recipient, d.channel, d.address, d.state, d.attempts, d.created_ms,
                        d.next_ms, d.sent_ms, d.error, m.body,
                        COALESCE(s.id, '') AS s_id, COALESCE(s.components, '') AS s_components,
                        COALESCE(s.state, '') AS s_state, COALESCE(s.token, '') AS s_token,
                        COALESCE(s.secret, '') AS s_secret, COALESCE(s.created_ms, 0) AS s_created_ms,
                        COALESCE(s.confirmed_ms, 0) AS s_confirmed_ms
                 FROM deliveries d JOIN messages m ON m.id = d.message
                      LEFT JOIN subscribers s ON s.id = d.recipient
                 WHERE d.state = 'pending' AND d.claimed_by = $1 AND d.claimed_ms = $2
                   AND (d.channel = 'statuspage') = ($3 = 1)
                 ORDER BY d.position",
                &[Bind::Text(me), Bind::Int(until), Bind::Int(i64::from(mirror))],
            )
            .await?;
        let mut out = Vec::with_capacity(found.len());
        for r in &found {
            let d = delivery(r)?;
            let id: String = r.try_get("s_id")?;
            let subscriber = if id.is_empty() {
                None
            } else {
                let components: String = r.try_get("s_components")?;
                Some(Subscriber {
                    id,
                    channel: d.channel.clone(),
                    address: d.address.clone(),
                    components: comma_list(&components),
                    state: r.try_get("s_state")?,
                    token: r.try_get("s_token")?,
                    secret: r.try_get("s_secret")?,
                    created_ms: r.try_get("s_created_ms")?,
                    confirmed_ms: r.try_get("s_confirmed_ms")?,
                })
            };
            out.push(Claimed {
                delivery: d,
                body: r.try_get("body")?,
                subscriber,
            });
        }
        Ok(out)
    }

    /// Who holds claims on pending deliveries now (`HOST:PID` of each sender).
    pub async fn claimants(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let found = self
            .fetch_all(
                "SELECT DISTINCT claimed_by FROM deliveries WHERE state = 'pending' AND claimed_ms > $1",
                &[Bind::Int(now_ms)],
            )
            .await?;
        rows(found, |r| r.try_get("claimed_by"))
    }

    /// Gives back the claims of `by` (a sender that is gone): its deliveries are due
    /// again at once.
    pub async fn release_claims(&self, by: &str) -> Result<u64, StoreError> {
        let back = self
            .fetch_all(
                "UPDATE deliveries SET claimed_ms = 0 WHERE state = 'pending' AND claimed_by = $1 RETURNING id",
                &[Bind::Text(by)],
            )
            .await?;
        Ok(back.len() as u64)
    }

    /// A delivery was accepted by its recipient.
    pub async fn delivered(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.fetch_all(
            "UPDATE deliveries SET state = 'sent', sent_ms = $2, attempts = attempts + 1, claimed_ms = 0 WHERE id = $1",
            &[Bind::Text(id), Bind::Int(now_ms)],
        )
        .await?;
        Ok(())
    }

    /// A delivery failed: tried again at `next_ms`, or (`None`) given up.
    pub async fn not_delivered(
        &self,
        id: &str,
        error: &str,
        next_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let (state, next) = match next_ms {
            Some(t) => ("pending", t),
            None => ("failed", 0),
        };
        self.fetch_all(
            "UPDATE deliveries SET state = $2, next_ms = $3, error = $4, attempts = attempts + 1, claimed_ms = 0 WHERE id = $1",
            &[Bind::Text(id), Bind::Text(state), Bind::Int(next), Bind::Text(error)],
        )
        .await?;
        Ok(())
    }

    /// Deliveries, newest first: those pending or failed, and the latest `sent` others.
    pub async fn deliveries(&self, sent: i64) -> Result<Vec<Delivery>, StoreError> {
        let mut out = rows(
            self.fetch_all(
                "SELECT id, message, recipient, channel, address, state, attempts, created_ms, next_ms, sent_ms, error
                 FROM deliveries WHERE state IN ('pending', 'failed') ORDER BY position DESC",
                &[],
            )
            .await?,
            delivery,
        )?;
        out.extend(rows(
            self.fetch_all(
                "SELECT id, message, recipient, channel, address, state, attempts, created_ms, next_ms, sent_ms, error
                 FROM deliveries WHERE state NOT IN ('pending', 'failed') ORDER BY position DESC LIMIT $1",
                &[Bind::Int(sent)],
            )
            .await?,
            delivery,
        )?);
        Ok(out)
    }

    /// The counts `/metrics` and `runbook deliveries` show.
    pub async fn notify_counts(&self) -> Result<Counts, StoreError> {
        let triples = |found: Vec<AnyRow>| {
            rows(found, |r| {
                Ok((r.try_get("channel")?, r.try_get("state")?, r.try_get("n")?))
            })
        };
        let deliveries = triples(
            self.fetch_all(
                "SELECT channel, state, COUNT(*) AS n FROM deliveries GROUP BY channel, state ORDER BY channel, state",
                &[],
            )
            .await?,
        )?;
        let subscribers = triples(
            self.fetch_all(
                "SELECT channel, state, COUNT(*) AS n FROM subscribers GROUP BY channel, state ORDER BY channel, state",
                &[],
            )
            .await?,
        )?;
        let outbox = match self
            .fetch_all("SELECT COUNT(*) AS n FROM outbox", &[])
            .await?
            .first()
        {
            Some(r) => r.try_get("n")?,
            None => 0,
        };
        let failing = rows(
            self.fetch_all(
                "SELECT channel, COUNT(*) AS n FROM deliveries
                 WHERE state = 'failed' OR (state = 'pending' AND error <> '') GROUP BY channel ORDER BY channel",
                &[],
            )
            .await?,
            |r| Ok((r.try_get("channel")?, r.try_get("n")?)),
        )?;
        Ok(Counts {
            deliveries,
            subscribers,
            outbox,
            failing,
        })
    }

    /// The Statuspage id the mirror gave one of ours (`kind`: `incident`, `component`).
    pub async fn mirror_id(&self, kind: &str, ours: &str) -> Result<Option<String>, StoreError> {
        let found = self
            .fetch_all(
                "SELECT theirs FROM mirror_ids WHERE kind = $1 AND ours = $2",
                &[Bind::Text(kind), Bind::Text(ours)],
            )
            .await?;
        Ok(match found.first() {
            Some(r) => Some(r.try_get("theirs")?),
            None => None,
        })
    }

    pub async fn set_mirror_id(
        &self,
        kind: &str,
        ours: &str,
        theirs: &str,
    ) -> Result<(), StoreError> {
        self.fetch_all(
            "INSERT INTO mirror_ids (kind, ours, theirs) VALUES ($1, $2, $3)
             ON CONFLICT (kind, ours) DO UPDATE SET theirs = $3",
            &[Bind::Text(kind), Bind::Text(ours), Bind::Text(theirs)],
        )
        .await?;
        Ok(())
    }

    /// One event of a stream (run or scheduled maintenance): its kind and JSON body.
    pub async fn event_at(
        &self,
        stream: &str,
        seq: i64,
    ) -> Result<Option<(String, String, i64)>, StoreError> {
        let found = self
            .fetch_all(
                "SELECT kind, body, at_ms FROM events WHERE run_id = $1 AND seq = $2",
                &[Bind::Text(stream), Bind::Int(seq)],
            )
            .await?;
        Ok(match found.first() {
            Some(r) => Some((r.try_get("kind")?, r.try_get("body")?, r.try_get("at_ms")?)),
            None => None,
        })
    }
}

async fn insert_delivery(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    message: &str,
    r: &Recipient,
    now_ms: i64,
    position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deliveries (id, message, recipient, channel, address, state, attempts, created_ms, next_ms, claimed_ms, claimed_by, sent_ms, error, position)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, 0, '', 0, '', $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(format!("{message}/{}", r.id))
    .bind(message)
    .bind(r.id.as_str())
    .bind(r.channel.as_str())
    .bind(r.address.as_str())
    .bind(now_ms)
    .bind(position)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
