//! Telling the people who are not looking: subscribers (email, webhook), a run's team
//! (`notify:`: webhook, Slack, email) and a Statuspage page (the mirror), all through the
//! store's outbox (`store::outbox`).
//!
//! An event enters the outbox in the transaction that appends it (a trigger). The
//! sender ([`run`], in `serve` and `execute --serve`) turns each into its messages and
//! their deliveries in one transaction ([`expand`]), then sends what is due: claimed
//! first, so that two senders never send one delivery, and marked sent the moment its
//! recipient accepted it. A failed one is tried again with doubling waits for up to a
//! day, then given up and its subscriber marked failing. Nothing here blocks the run or
//! the page: the sender is a task of its own, each send has a deadline, and at most
//! [`IN_FLIGHT`] are under way at once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::retry::Backoff;
use crate::status::command::NotifyArgs;
use crate::status::model::Page;
use crate::status::snapshot::Snapshot;
use crate::store::outbox::Claimed;
use crate::store::{Store, StoreError, now_ms};

pub mod email;
pub mod message;
pub mod mirror;
pub mod webhook;

/// Sends under way at once.
pub const IN_FLIGHT: usize = 64;

/// How the sender reaches people, checked before anything is served.
pub struct Settings {
    pub page_name: String,
    /// The page's base URL (links in mails and payloads).
    pub url: String,
    pub mail: Option<email::Mailer>,
    pub mirror: Option<mirror::Mirror>,
    pub allow_private: bool,
}

impl Settings {
    /// From the flags and the page's name and URL; a flag that cannot work is refused
    /// here, before the page is served.
    pub fn new(args: &NotifyArgs, page_name: &str, url: &str) -> Result<Settings, String> {
        let mail = match &args.smtp {
            Some(smtp) => Some(email::Mailer::new(smtp, args.mail_from.as_deref(), url)?),
            None if args.mail_from.is_some() => {
                return Err("--mail-from needs --smtp: there is no mail without a server".into());
            }
            None => None,
        };
        let mirror = match args.mirror.as_deref() {
            Some(_) => Some(mirror::Mirror::from_env(
                args.statuspage_page_id.as_deref(),
            )?),
            None if args.statuspage_page_id.is_some() => {
                return Err("--statuspage-page-id needs --mirror statuspage".into());
            }
            None => None,
        };
        Ok(Settings {
            page_name: page_name.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            mail,
            mirror,
            allow_private: args.allow_private_webhooks,
        })
    }

    /// The link that unsubscribes the holder of `token` (one click, and RFC 8058's POST).
    pub fn unsubscribe_url(&self, token: &str) -> String {
        format!("{}/unsubscribe?token={token}", self.url)
    }
}

/// The waits between tries of a delivery: 30 s doubling to an hour, for a day. Tests
/// shorten them with `RUNBOOK_TEST_DELIVERY_RETRY_MS` (the first wait) and
/// `RUNBOOK_TEST_DELIVERY_GIVE_UP_MS` (the day).
fn backoff() -> (Backoff, i64) {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let first = Duration::from_millis(env("RUNBOOK_TEST_DELIVERY_RETRY_MS").unwrap_or(30_000));
    let give_up = env("RUNBOOK_TEST_DELIVERY_GIVE_UP_MS").unwrap_or(24 * 3600 * 1000) as i64;
    (
        Backoff::new(first, Duration::from_secs(3600).max(first)),
        give_up,
    )
}

/// When a delivery that failed its `attempts`th time is tried next; `None`: given up
/// (a day after it was made).
pub fn next_try(created_ms: i64, attempts: i64, now: i64) -> Option<i64> {
    let (b, give_up) = backoff();
    let next = now + b.wait(attempts.max(1) as u32).as_millis() as i64;
    (next <= created_ms + give_up).then_some(next)
}

/// What one send came to.
#[derive(Debug)]
pub enum Sent {
    Accepted,
    /// Not accepted; to be tried again later.
    Failed(String),
}

/// Sends until `stop` turns true: expands the outbox, sends what is due, waits for the
/// next event (a new snapshot, a commit of this process, the next retry). When `stop`
/// comes, what is under way is finished and marked before it returns.
pub async fn run(
    store: Store,
    settings: Arc<Settings>,
    mut pages: watch::Receiver<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let me = format!("{}:{}", crate::engine::control::host(), std::process::id());
    release_dead(&store).await;
    if let Some(m) = &settings.mirror {
        tokio::spawn(mirror::run(
            store.clone(),
            m.clone(),
            pages.clone(),
            stop.clone(),
            me.clone(),
        ));
    }
    let mut local = crate::store::changes();
    // Sends under way, each a task: one that hangs holds its own place only, never the
    // others'.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            while tasks.join_next().await.is_some() {}
            return;
        }
        let page = pages.borrow().page.clone();
        if let Some(page) = page
            && let Err(e) = expand(&store, &settings, &page).await
        {
            tracing::warn!("notifications: cannot read the outbox: {e}");
        }
        // Claimed in batches: when a quarter of the places is free, or none is taken.
        let free = IN_FLIGHT - tasks.len();
        let mut more = false;
        if tasks.is_empty() || free >= IN_FLIGHT / 4 {
            match store.claim(false, free as i64, now_ms(), &me).await {
                Ok(due) => {
                    more = due.len() == free;
                    for c in due {
                        let (store, settings) = (store.clone(), settings.clone());
                        tasks.spawn(async move {
                            let outcome = send(&settings, &c).await;
                            settle(&store, &c, outcome).await;
                        });
                    }
                }
                Err(e) => tracing::warn!("notifications: cannot claim deliveries: {e}"),
            }
        }
        if more && tasks.len() < IN_FLIGHT {
            continue;
        }
        tokio::select! {
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                while tasks.try_join_next().is_some() {}
            }
            _ = pages.changed() => {}
            _ = local.changed() => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Gives back the claims of senders of this host that are gone (killed mid-send).
async fn release_dead(store: &Store) {
    let host = format!("{}:", crate::engine::control::host());
    let Ok(claimants) = store.claimants(now_ms()).await else {
        return;
    };
    for by in claimants {
        let dead = by
            .strip_prefix(&host)
            .and_then(|pid| pid.parse::<i64>().ok())
            .is_some_and(|pid| {
                pid != i64::from(std::process::id()) && !crate::engine::control::pid_alive(pid)
            });
        if dead && let Ok(n) = store.release_claims(&by).await {
            tracing::info!(
                "notifications: {n} deliveries claimed by `{by}`, which is gone, are due again"
            );
        }
    }
}

/// Turns what is in the outbox into messages and deliveries. A public update waits for
/// the page to show it (the follower may be a moment behind the journal); one the page
/// still does not show 30 s after it was appended is not shown at all (a hidden or
/// damaged journal) and has no deliveries.
pub async fn expand(store: &Store, settings: &Settings, page: &Page) -> Result<(), StoreError> {
    let waiting = store.outbox(500).await?;
    if waiting.is_empty() {
        return Ok(());
    }
    let subscribers = store.subscribers().await?;
    for (stream, seq) in waiting {
        let Some((kind, body, at_ms)) = store.event_at(&stream, seq).await? else {
            store.expand(&stream, seq, &[], now_ms()).await?;
            continue;
        };
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let mut messages = Vec::new();
        if kind == "published" {
            let id = format!("{stream}-{seq}");
            match crate::status::api::notification(page, &id) {
                Some(n) => messages.extend(message::public(settings, &n, &subscribers)),
                // The page may be a moment behind the journal: wait for it, unless it
                // has been rendered well after the update (then it does not show it).
                None if page.now_ms < at_ms + 30_000 && now_ms() < at_ms + 600_000 => continue,
                None => {}
            }
        }
        let targets = store.team_targets(&stream).await?;
        if !targets.is_empty() {
            let started: Value = match store.event_at(&stream, 1).await? {
                Some((_, b, _)) => serde_json::from_str(&b).unwrap_or(Value::Null),
                None => Value::Null,
            };
            messages.extend(message::team(
                settings, page, &stream, seq, at_ms, &kind, &body, &started, &targets,
            ));
        }
        store.expand(&stream, seq, &messages, now_ms()).await?;
    }
    Ok(())
}

/// Sends one delivery by its channel.
async fn send(settings: &Settings, c: &Claimed) -> Sent {
    let sub = c.subscriber.as_ref();
    let body: Value = match serde_json::from_str(&c.body) {
        Ok(v) => v,
        Err(e) => return Sent::Failed(format!("the message cannot be read: {e}")),
    };
    let d = &c.delivery;
    match d.channel.as_str() {
        "email" => match &settings.mail {
            Some(m) => m.send(settings, d, &body, sub).await,
            None => Sent::Failed("no mail server: start the sender with --smtp".into()),
        },
        "webhook" | "slack" => webhook::send(settings, d, &body, sub).await,
        other => Sent::Failed(format!("unknown channel `{other}`")),
    }
}

/// Records what a send came to: sent; or tried again later; or, a day on, given up
/// and its subscriber marked failing.
async fn settle(store: &Store, c: &Claimed, outcome: Sent) {
    let sub = c.subscriber.as_ref();
    let d = &c.delivery;
    let now = now_ms();
    let recorded = match outcome {
        Sent::Accepted => {
            if sub.is_some_and(|s| s.state == "failing") {
                let _ = store
                    .set_subscriber_state(&d.recipient, "active", now)
                    .await;
            }
            store.delivered(&d.id, now).await
        }
        Sent::Failed(error) => {
            let next = next_try(d.created_ms, d.attempts + 1, now);
            if next.is_none() {
                tracing::warn!(
                    "notifications: gave up delivery {} to {} after {} tries: {error}",
                    d.id,
                    d.address,
                    d.attempts + 1
                );
                if sub.is_some() {
                    let _ = store
                        .set_subscriber_state(&d.recipient, "failing", now)
                        .await;
                }
            }
            store.not_delivered(&d.id, &error, next).await
        }
    };
    if let Err(e) = recorded {
        tracing::error!("notifications: cannot record delivery {}: {e}", d.id);
    }
}
