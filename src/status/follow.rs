//! Following the journal: new events in this process wake the follower at once; other
//! processes' commits arrive by PostgreSQL's LISTEN/NOTIFY or, on SQLite, by the kernel
//! telling that the database's files were written (`store::wake`), confirmed by
//! `PRAGMA data_version` (cheap: it reads no table). A slow poll stays as the fallback.
//! Each change re-renders every public response once, at once; changes that keep
//! coming (a fan-out's items) are rendered at most once per [`SETTLE`]. Requests only
//! ever read the latest [`Snapshot`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::model::{NoticeRecorded, PageInfo, project_journals};
use super::snapshot::Snapshot;
use crate::engine::event::Recorded;
use crate::store::{Damage, NOTIFY_CHANNEL, Store, StoreError, now_ms};

/// How often a SQLite follower looks for other processes' commits when the kernel
/// cannot tell it.
const POLL: Duration = Duration::from_millis(250);
/// How often it looks anyway, when the kernel tells (or PostgreSQL notifies).
const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// Renders that would follow each other closer than this wait (a fan-out's items
/// arrive together and are rendered once).
const SETTLE: Duration = Duration::from_millis(30);

/// The journal as far as the follower has read it.
#[derive(Default)]
pub struct Follower {
    runs: HashMap<String, Vec<Recorded>>,
    notices: HashMap<String, Vec<NoticeRecorded>>,
    known_notices: HashSet<String>,
    /// Runs whose journal cannot be read past some event: they are shown as far as it
    /// can, with their status unknown, and not read again.
    damaged: HashMap<String, Damage>,
}

impl Follower {
    /// The page of what has been read, as of `now`.
    pub fn page(&self, info: PageInfo, now: i64) -> crate::status::model::Page {
        project_journals(
            info,
            self.runs
                .iter()
                .map(|(id, e)| (id.as_str(), e.as_slice(), self.damaged.get(id))),
            self.notices
                .iter()
                .map(|(id, e)| (id.as_str(), e.as_slice())),
            now,
        )
    }

    /// Reads what the store has that the follower has not; `true` when anything was new.
    pub async fn refresh(&mut self, store: &Store) -> Result<bool, StoreError> {
        let heads = store.heads().await?;
        let mut grew = false;
        for (id, head) in heads {
            let seen = self
                .runs
                .get(&id)
                .and_then(|e| e.last().map(|r| r.seq))
                .or_else(|| self.notices.get(&id).and_then(|e| e.last().map(|r| r.seq)))
                .unwrap_or(0);
            if head <= seen || self.damaged.contains_key(&id) {
                continue;
            }
            if !self.known_notices.contains(&id) && !self.runs.contains_key(&id) {
                self.known_notices = store
                    .notices()
                    .await?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
            }
            if self.known_notices.contains(&id) {
                let new = match store.load_notice_after(&id, seen).await {
                    Err(StoreError::Corrupt { seq, reason, .. }) => {
                        // A damaged announcement is left as far as it was read.
                        tracing::warn!("status page: {id}: event {seq} cannot be read: {reason}");
                        let at_ms = now_ms();
                        self.damaged
                            .insert(id.clone(), Damage { seq, at_ms, reason });
                        Vec::new()
                    }
                    new => new?,
                };
                grew |= !new.is_empty();
                self.notices.entry(id).or_default().extend(new);
            } else {
                // One damaged run is shown as such; it hides nothing else.
                let (new, damage) = store.load_readable_after(&id, seen).await?;
                grew |= !new.is_empty() || damage.is_some();
                if let Some(d) = damage {
                    tracing::warn!(
                        "status page: the journal of run `{id}` in the store `{}` is damaged at event {}: {}; it is shown with its status unknown",
                        store.url,
                        d.seq,
                        d.reason
                    );
                    self.damaged.insert(id.clone(), d);
                }
                self.runs.entry(id).or_default().extend(new);
            }
        }
        Ok(grew)
    }
}

/// Renders the page of `follower` at `now`: the next snapshot, unless nothing anyone can
/// see has changed since `last` (then `None`).
pub fn render_if_changed(
    follower: &Follower,
    info: &PageInfo,
    last: &Snapshot,
    now: i64,
) -> (Option<Snapshot>, Option<i64>) {
    let page = follower.page(info.clone(), now);
    let next_change = page.next_change_ms();
    let mut snap = super::render(&page, last.version + 1);
    // The public part of the report of every run that has ended.
    for m in page.maintenances.iter().filter(|m| m.outcome.is_some()) {
        let Some(events) = m.run_id.as_ref().and_then(|r| follower.runs.get(r)) else {
            continue;
        };
        let run = m.run_id.as_deref().unwrap_or_default();
        if let Ok(summary) = crate::report::public_summary(run, events, now) {
            let body = serde_json::to_vec(&summary).unwrap_or_default();
            snap.insert(
                format!("/maintenances/{}/report.json", m.id),
                super::snapshot::Asset::new(
                    "application/json; charset=utf-8",
                    body,
                    m.updated_ms,
                    super::snapshot::SHORT,
                ),
            );
        }
    }
    // The first render is always published: the server waits for it.
    let same = last.version > 0
        && snap.assets.len() == last.assets.len()
        && snap
            .assets
            .iter()
            .all(|(path, a)| last.get(path).is_some_and(|b| b.etag == a.etag));
    (if same { None } else { Some(snap) }, next_change)
}

/// Follows `store` for as long as the process lives, publishing each new snapshot.
pub async fn follow(store: Store, info: PageInfo, tx: watch::Sender<Arc<Snapshot>>) {
    let mut follower = Follower::default();
    let mut local = crate::store::changes();
    let mut listener = if store.is_postgres() {
        match sqlx::postgres::PgListener::connect(&store.connect_url()).await {
            Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
                Ok(()) => Some(l),
                Err(_) => None,
            },
            Err(_) => None,
        }
    } else {
        None
    };
    let wake = store
        .parsed()
        .sqlite_file()
        .and_then(|f| crate::store::wake::FileWake::new(f).ok());
    let mut version = store.data_version().await.unwrap_or(0);
    let mut next_change: Option<i64> = None;
    // When a snapshot was last sent.
    let mut rendered = tokio::time::Instant::now();
    loop {
        if let Err(e) = follower.refresh(&store).await {
            tracing::warn!("status page: cannot read the journal: {e}");
        }
        let last = tx.borrow().clone();
        let (snap, next) = render_if_changed(&follower, &info, &last, now_ms());
        next_change = next.or(next_change.filter(|&t| t > now_ms()));
        // Only a change anyone can see spaces the next render: a commit that changed
        // nothing visible (a step's end, just before the next one starts) must not hold
        // back the one that does.
        if let Some(snap) = snap {
            tx.send_replace(Arc::new(snap));
            rendered = tokio::time::Instant::now();
        }
        // Wait for something to happen.
        let until_change = next_change
            .map(|t| Duration::from_millis((t - now_ms()).max(0) as u64 + 5))
            .unwrap_or(Duration::from_secs(3600));
        let timer = tokio::time::sleep(until_change);
        tokio::pin!(timer);
        let poll = if listener.is_some() || wake.is_some() {
            FALLBACK_POLL
        } else {
            POLL
        };
        loop {
            tokio::select! {
                // This process's own commits first: they need no look at the store.
                biased;
                _ = local.changed() => break,
                _ = &mut timer => break,
                n = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                } => {
                    if n.is_err() {
                        // The connection dropped; it reconnects on the next recv.
                        tokio::time::sleep(POLL).await;
                    }
                    break;
                }
                w = async {
                    match &wake {
                        Some(w) => w.written().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if w.is_err() || committed(&store, &mut version, &local).await {
                        break;
                    }
                }
                _ = tokio::time::sleep(poll) => {
                    if store.is_postgres() {
                        break;
                    }
                    let v = store.data_version().await.unwrap_or(version);
                    if v != version {
                        version = v;
                        break;
                    }
                }
            }
        }
        // At once after a quiet spell; at most once per SETTLE while changes keep coming.
        tokio::time::sleep_until(rendered + SETTLE).await;
        local.mark_unchanged();
    }
}

/// After the kernel told that the store's files were written: whether a commit landed.
/// Another process's commit becomes visible a moment after its log is written, so this
/// looks again for a little while before deciding it was not one; a write by this
/// process (which its own connection's `data_version` never shows) is told by `local`,
/// and ends the look at once.
async fn committed(
    store: &Store,
    version: &mut i64,
    local: &tokio::sync::watch::Receiver<u64>,
) -> bool {
    for wait_ms in [0, 1, 2, 4, 8, 16, 32] {
        if local.has_changed().unwrap_or(false) {
            return true;
        }
        if wait_ms > 0 {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        let v = store.data_version().await.unwrap_or(*version);
        if v != *version {
            *version = v;
            return true;
        }
    }
    false
}
