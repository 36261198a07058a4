//! Subscribing to the page (the form, the admin API and `runbook subscribers` share these
//! rules): an email address or a webhook URL, optionally some of the page's components.
//! An email subscribes by double opt-in: it is `pending` until the link of its
//! confirmation mail is opened (an admin's address is taken as confirmed); a webhook is
//! active at once, with its own signing secret. Nothing is stored twice: the same
//! address again is refused as already subscribed (a pending one gets its mail again).

use serde_json::json;

use super::model::{PageInfo, slug};
use crate::store::outbox::{Added, Recipient, Subscriber, random_hex};
use crate::store::{Store, StoreError, now_ms};

/// What a subscriber asks for.
#[derive(Debug, Default, Clone)]
pub struct Ask {
    pub email: Option<String>,
    pub webhook: Option<String>,
    /// Component names (or ids); empty: every update.
    pub components: Vec<String>,
}

/// Why not.
#[derive(Debug)]
pub enum Refusal {
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BadRequest(m) | Refusal::NotFound(m) | Refusal::Conflict(m) => f.write_str(m),
            Refusal::Store(e) => write!(f, "{e}"),
        }
    }
}

/// What subscribing did.
#[derive(Debug)]
pub enum Done {
    /// An email: its confirmation mail is on its way.
    Confirming(Subscriber),
    /// Subscribed (a webhook, or an admin's email).
    Active(Subscriber),
}

/// Who is asking: the public form, or an admin (whose email needs no confirmation,
/// and who may re-activate a failing subscriber).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Public,
    Admin,
}

/// The link of a confirmation mail and of every mail's unsubscribe.
pub fn confirm_url(page: &PageInfo, token: &str) -> String {
    format!(
        "{}/subscribe/confirm?token={token}",
        page.url.trim_end_matches('/')
    )
}

/// The component names `asked` names (by name or id, any case), as the page names them;
/// a name the page does not show is refused, unless the page shows none yet.
fn components(known: &[String], asked: &[String]) -> Result<Vec<String>, Refusal> {
    let mut out: Vec<String> = Vec::new();
    for a in asked.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        let found = known
            .iter()
            .find(|k| k.eq_ignore_ascii_case(a) || slug(k) == a.to_lowercase());
        match found {
            Some(k) if !out.contains(k) => out.push(k.clone()),
            Some(_) => {}
            // A page that has shown no component yet (no maintenance named one) cannot
            // say which exist: the name is taken as written.
            None if known.is_empty() => {
                if a.chars().any(char::is_control) || a.len() > 100 {
                    return Err(Refusal::BadRequest(format!(
                        "`{}` is not a component name",
                        a.escape_debug()
                    )));
                }
                if !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
                    out.push(a.to_owned());
                }
            }
            None => {
                return Err(Refusal::BadRequest(format!(
                    "unknown component `{a}`; the page's are: {}",
                    known.join(", ")
                )));
            }
        }
    }
    Ok(out)
}

/// Subscribes `ask`. `known` are the page's components; `allow_private`: a webhook
/// on a loopback or private address is accepted.
pub async fn subscribe(
    store: &Store,
    page: &PageInfo,
    known: &[String],
    ask: Ask,
    by: By,
    allow_private: bool,
) -> Result<Done, Refusal> {
    let components = components(known, &ask.components)?;
    let now = now_ms();
    let (channel, address, secret) = match (ask.email, ask.webhook) {
        (Some(e), None) => (
            "email",
            crate::address::email(&e)
                .map_err(Refusal::BadRequest)?
                .to_lowercase(),
            String::new(),
        ),
        (None, Some(w)) => {
            let url = crate::address::webhook(&w).map_err(Refusal::BadRequest)?;
            crate::address::check_public(&url, allow_private)
                .await
                .map_err(Refusal::BadRequest)?;
            ("webhook", url.to_string(), random_hex(32))
        }
        (Some(_), Some(_)) => {
            return Err(Refusal::BadRequest(
                "give an `email` or a `webhook`, not both: one subscription each".into(),
            ));
        }
        (None, None) => {
            return Err(Refusal::BadRequest(
                "give an `email` address or a `webhook` URL to subscribe".into(),
            ));
        }
    };
    let confirmed = channel == "webhook" || by == By::Admin;
    let s = Subscriber {
        id: format!("sub_{}", random_hex(8)),
        channel: channel.into(),
        address,
        components,
        state: if confirmed { "active" } else { "pending" }.into(),
        token: random_hex(24),
        secret,
        created_ms: now,
        confirmed_ms: if confirmed { now } else { 0 },
    };
    match store.add_subscriber(&s).await? {
        Added::New(s) if s.state == "pending" => {
            enqueue_confirmation(store, page, &s).await?;
            Ok(Done::Confirming(s))
        }
        Added::New(s) => Ok(Done::Active(s)),
        Added::Exists(old) if old.state == "pending" => {
            // The mail may have been lost: it is sent again, nothing else is stored.
            enqueue_confirmation(store, page, &old).await?;
            Ok(Done::Confirming(old))
        }
        Added::Exists(old) if old.state == "failing" && by == By::Admin => {
            store.set_subscriber_state(&old.id, "active", now).await?;
            Ok(Done::Active(Subscriber {
                state: "active".into(),
                ..old
            }))
        }
        Added::Exists(old) => Err(Refusal::Conflict(format!(
            "`{}` is already subscribed ({}, since {})",
            old.address,
            old.state,
            super::model::iso(old.created_ms)
        ))),
    }
}

/// Puts a pending subscriber's confirmation mail in the outbox.
async fn enqueue_confirmation(
    store: &Store,
    page: &PageInfo,
    s: &Subscriber,
) -> Result<(), StoreError> {
    let body = json!({
        "type": "confirm",
        "mail": {
            "page_name": page.name,
            "address": s.address,
            "components": s.components,
            "confirm": confirm_url(page, &s.token),
        },
    });
    let now = now_ms();
    store
        .enqueue(
            &format!("confirm-{}-{now}", s.id),
            &body.to_string(),
            &Recipient::from(s),
            now,
        )
        .await
}

/// The subscriber a link's token names; tokens are hex, anything else names none (and
/// is not looked up).
async fn by_token(store: &Store, token: &str) -> Result<Subscriber, Refusal> {
    let missing = || {
        Refusal::NotFound(
            "no subscription has this token (it was removed, or the link is damaged)".into(),
        )
    };
    if token.len() != 48 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(missing());
    }
    store.subscriber_by_token(token).await?.ok_or_else(missing)
}

/// Opens a confirmation link.
pub async fn confirm(store: &Store, token: &str) -> Result<Subscriber, Refusal> {
    let s = by_token(store, token).await?;
    store.confirm_subscriber(&s.id, now_ms()).await?;
    Ok(Subscriber {
        state: if s.state == "pending" {
            "active".into()
        } else {
            s.state
        },
        ..s
    })
}

/// Opens (or POSTs, RFC 8058) an unsubscribe link: the subscriber is removed.
pub async fn unsubscribe(store: &Store, token: &str) -> Result<Subscriber, Refusal> {
    let s = by_token(store, token).await?;
    store.remove_subscriber(&s.id).await?;
    Ok(s)
}

/// A subscriber as the admin API, the form's JSON answer and `runbook subscribers
/// --format json` show it; its webhook secret only with `secret` (right after it was
/// made: it is not shown again).
pub fn public_json(s: &Subscriber, secret: bool) -> serde_json::Value {
    let mut v = json!({
        "id": s.id,
        "channel": s.channel,
        "address": s.address,
        "components": s.components,
        "state": s.state,
        "created_at": super::model::iso(s.created_ms),
        "confirmed_at": (s.confirmed_ms > 0).then(|| super::model::iso(s.confirmed_ms)),
    });
    if secret && !s.secret.is_empty() {
        v["secret"] = json!(s.secret);
    }
    v
}
