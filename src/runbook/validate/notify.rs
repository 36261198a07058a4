//! `notify:`: the team's notification targets, each one channel, an address of its
//! kind (templates only of `vars` and `secrets`, rendered when the run starts), and the
//! events it hears of.

use indexmap::IndexMap;
use serde_json::Value;

use super::Ctx;
use crate::diagnostic::FieldPath;
use crate::runbook::model::{Notify, NotifyChannel, TeamEvent};
use crate::runbook::raw::RawNotify;
use crate::runbook::template;
use crate::suggest::did_you_mean;

pub(super) fn notify(
    cx: &mut Ctx,
    raw: Vec<RawNotify>,
    vars: &IndexMap<String, Value>,
    secrets: &[String],
) -> Vec<Notify> {
    let top = FieldPath::root().key("notify");
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let path = top.index(i);
        let given: Vec<(NotifyChannel, String)> = [
            (NotifyChannel::Webhook, r.webhook),
            (NotifyChannel::Slack, r.slack),
            (NotifyChannel::Email, r.email),
        ]
        .into_iter()
        .filter_map(|(c, a)| a.map(|a| (c, a)))
        .collect();
        let (channel, address) = match given.as_slice() {
            [(c, a)] => (*c, a.clone()),
            [] => {
                cx.error(
                    path.clone(),
                    "a notify target needs one of `webhook`, `slack` or `email`",
                );
                continue;
            }
            _ => {
                cx.error(
                    path.clone(),
                    "a notify target is one of `webhook`, `slack` or `email`, not several: write one target per channel",
                );
                continue;
            }
        };
        let apath = path.key(channel.as_str());
        if template::is_template(&address) {
            check_references(cx, &apath, &address, vars, secrets);
        } else {
            let checked = match channel {
                NotifyChannel::Email => crate::address::email(&address).map(|_| ()),
                _ => crate::address::webhook(&address).map(|_| ()),
            };
            if let Err(e) = checked {
                cx.error(apath.clone(), e);
            }
        }
        let mut events = Vec::new();
        match r.events {
            None => events.extend(TeamEvent::ALL),
            Some(names) if names.is_empty() => {
                cx.error(
                    path.key("events"),
                    "`events` is empty: leave it out for every event, or name some",
                );
            }
            Some(names) => {
                let all: Vec<&str> = TeamEvent::ALL.iter().map(|e| e.name()).collect();
                for (j, name) in names.iter().enumerate() {
                    match TeamEvent::named(name) {
                        Some(e) if !events.contains(&e) => events.push(e),
                        Some(_) => {
                            cx.error(
                                path.key("events").index(j),
                                format!("event `{name}` is listed twice"),
                            );
                        }
                        None => {
                            let label = did_you_mean(name, &all);
                            cx.error(
                                path.key("events").index(j),
                                format!("unknown event `{name}`; one of: {}", all.join(", ")),
                            )
                            .label = label;
                        }
                    }
                }
                events.sort_by_key(|e| TeamEvent::ALL.iter().position(|a| a == e));
            }
        }
        out.push(Notify {
            channel,
            address,
            events,
        });
    }
    out
}

/// A target's address may use `{{vars.NAME}}` and `{{secrets.NAME}}` only: it is
/// rendered once, when the run starts.
fn check_references(
    cx: &mut Ctx,
    path: &FieldPath,
    text: &str,
    vars: &IndexMap<String, Value>,
    secrets: &[String],
) {
    let refs = match template::references(text) {
        Ok((refs, helpers)) => {
            if let Some(h) = helpers.first() {
                cx.error(
                    path.clone(),
                    format!("`{}`: a notify address takes plain values (`{{{{vars.NAME}}}}`, `{{{{secrets.NAME}}}}`), no helpers", h.raw),
                );
            }
            refs
        }
        Err(e) => {
            cx.error(path.clone(), format!("template: {}", e.message));
            return;
        }
    };
    for r in refs {
        let ok = match r.segments.as_slice() {
            [root, name] if root == "vars" => vars.contains_key(name),
            [root, name] if root == "secrets" => secrets.contains(name),
            _ => false,
        };
        if !ok {
            cx.error(
                path.clone(),
                format!(
                    "`{{{{{}}}}}` is not known when the run starts: a notify address may use `vars.NAME` and `secrets.NAME` (declared)",
                    r.raw
                ),
            );
        }
    }
}
