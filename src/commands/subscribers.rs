//! `runbook subscribers list|add|remove|export` and `runbook deliveries`: the status
//! page's subscribers and the outbox's deliveries, managed from a terminal with the same
//! rules as the admin API (`status::subscribe`, `status::deliveries`).

use serde_json::Value;

use super::fail;
use crate::exit::{Exit, Failure, Outcome};
use crate::status::model::PageInfo;
use crate::status::subscribe::{self, Ask, By, Done};
use crate::store::Store;
use crate::store::outbox::Subscriber;

/// What `runbook subscribers` does.
pub enum Action {
    List { json: bool },
    Add(AddArgs),
    Remove { subscriber: String },
    Export { json: bool },
}

pub struct AddArgs {
    /// An email address or a webhook URL.
    pub address: String,
    pub components: Vec<String>,
    /// Send a confirmation mail (double opt-in) instead of taking the address as
    /// confirmed.
    pub confirm: bool,
    pub allow_private: bool,
    /// For the confirmation mail's links.
    pub public_url: Option<String>,
    pub page_name: String,
}

/// The store, for commands that may write (`add`, `remove`) or only read.
async fn open(store_flag: Option<&str>, write: bool) -> Result<Option<Store>, Failure> {
    let url = crate::store::chosen_url(store_flag);
    let store = if write {
        Store::open(&url).await.map(Some)
    } else {
        Store::open_existing(&url).await
    };
    match store {
        Ok(Some(s)) if write => s
            .writable()
            .map(|()| Some(s))
            .map_err(|e| Failure::invalid(e.to_string())),
        Ok(s) => Ok(s),
        Err(e) => Err(Failure::invalid(e.to_string())),
    }
}

/// The components the page shows (what a subscriber may name).
async fn components(store: &Store, info: PageInfo) -> Vec<String> {
    let mut f = crate::status::follow::Follower::default();
    let _ = f.refresh(store).await;
    f.page(info, crate::store::now_ms())
        .components
        .into_iter()
        .map(|c| c.name)
        .collect()
}

fn line(s: &Subscriber) -> String {
    format!(
        "{:<22} {:<8} {:<8} {}{}",
        s.id,
        s.channel,
        s.state,
        s.address,
        if s.components.is_empty() {
            String::new()
        } else {
            format!("  [{}]", s.components.join(", "))
        }
    )
}

/// `runbook subscribers ...`.
pub async fn subscribers(action: Action, store_flag: Option<&str>) -> Outcome {
    let write = matches!(action, Action::Add(_) | Action::Remove { .. });
    let Some(store) = open(store_flag, write).await? else {
        match action {
            Action::List { json: true } | Action::Export { json: true } => outln!("[]"),
            Action::Export { json: false } => {
                outln!("id,channel,address,components,state,created_at,confirmed_at")
            }
            Action::Remove { subscriber } => {
                return Err(Failure::invalid(format!(
                    "no subscriber `{subscriber}`: the store has none"
                )));
            }
            _ => outln!("no subscribers"),
        }
        return Ok(Exit::Ok);
    };
    match action {
        Action::List { json } | Action::Export { json } if json => {
            let list = store
                .subscribers()
                .await
                .map_err(|e| Failure::invalid(e.to_string()))?;
            let doc: Vec<Value> = list
                .iter()
                .map(|s| subscribe::public_json(s, false))
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("serializes")
            );
            Ok(Exit::Ok)
        }
        Action::List { .. } => {
            let list = store
                .subscribers()
                .await
                .map_err(|e| Failure::invalid(e.to_string()))?;
            if list.is_empty() {
                outln!("no subscribers");
            } else {
                for s in &list {
                    outln!("{}", line(s));
                }
            }
            Ok(Exit::Ok)
        }
        Action::Export { .. } => {
            let list = store
                .subscribers()
                .await
                .map_err(|e| Failure::invalid(e.to_string()))?;
            outln!("id,channel,address,components,state,created_at,confirmed_at");
            for s in &list {
                let cells = [
                    s.id.clone(),
                    s.channel.clone(),
                    s.address.clone(),
                    s.components.join(";"),
                    s.state.clone(),
                    crate::status::model::iso(s.created_ms),
                    if s.confirmed_ms > 0 {
                        crate::status::model::iso(s.confirmed_ms)
                    } else {
                        String::new()
                    },
                ];
                outln!(
                    "{}",
                    cells.iter().map(|c| csv(c)).collect::<Vec<_>>().join(",")
                );
            }
            Ok(Exit::Ok)
        }
        Action::Remove { subscriber } => {
            let found = store
                .subscriber_named(&subscriber)
                .await
                .map_err(|e| Failure::invalid(e.to_string()))?;
            let Some(s) = found else {
                return Err(Failure::invalid(format!(
                    "no subscriber `{subscriber}` (give an id or an address; `runbook subscribers list` shows them)"
                )));
            };
            if let Err(e) = store.remove_subscriber(&s.id).await {
                return fail(e);
            }
            outln!("removed {} ({} {})", s.id, s.channel, s.address);
            Ok(Exit::Ok)
        }
        Action::Add(a) => {
            if a.confirm && a.public_url.is_none() {
                return Err(Failure::invalid(
                    "--confirm sends a mail with a link to the page: give the page's --public-url",
                ));
            }
            let info = PageInfo {
                name: a.page_name.clone(),
                url: a
                    .public_url
                    .clone()
                    .unwrap_or_else(|| "http://localhost".into()),
                timezone: None,
            };
            let known = components(&store, info.clone()).await;
            let is_url = a.address.contains("://");
            let ask = Ask {
                email: (!is_url).then(|| a.address.clone()),
                webhook: is_url.then(|| a.address.clone()),
                components: a.components.clone(),
            };
            let by = if a.confirm { By::Public } else { By::Admin };
            match subscribe::subscribe(&store, &info, &known, ask, by, a.allow_private).await {
                Ok(Done::Active(s)) => {
                    outln!("subscribed {} ({} {})", s.id, s.channel, s.address);
                    if !s.secret.is_empty() {
                        outln!("signing secret (shown only now): {}", s.secret);
                    }
                    Ok(Exit::Ok)
                }
                Ok(Done::Confirming(s)) => {
                    outln!(
                        "{} ({}) waits for confirmation: `runbook serve` sends the mail",
                        s.id,
                        s.address
                    );
                    Ok(Exit::Ok)
                }
                Err(e) => Err(Failure::invalid(e.to_string())),
            }
        }
    }
}

/// A CSV cell, quoted when it must be (RFC 4180).
fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `runbook deliveries`.
pub async fn deliveries(json: bool, store_flag: Option<&str>) -> Outcome {
    let Some(store) = open(store_flag, false).await? else {
        if json {
            outln!("{{\"counts\": {{}}, \"outbox\": 0, \"deliveries\": []}}");
        } else {
            outln!("no deliveries");
        }
        return Ok(Exit::Ok);
    };
    let list = store
        .deliveries(20)
        .await
        .map_err(|e| Failure::invalid(e.to_string()))?;
    let counts = store
        .notify_counts()
        .await
        .map_err(|e| Failure::invalid(e.to_string()))?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&crate::status::deliveries::json(&list, &counts))
                .expect("serializes")
        );
    } else {
        out!("{}", crate::status::deliveries::text(&list, &counts));
    }
    Ok(Exit::Ok)
}
