//! What `runbook deliveries` and `GET /api/v1/admin/deliveries` show: the outbox's
//! deliveries that are pending or failed (and the latest sent), and the counts.

use serde_json::{Value, json};

use crate::store::outbox::{Counts, Delivery};

fn iso(ms: i64) -> Value {
    if ms > 0 {
        json!(super::model::iso(ms))
    } else {
        Value::Null
    }
}

/// A delivery's JSON.
pub fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "message": d.message,
        "recipient": d.recipient,
        "channel": d.channel,
        "address": shown_address(d),
        "state": d.state,
        "attempts": d.attempts,
        "created_at": iso(d.created_ms),
        "next_attempt_at": if d.state == "pending" { iso(d.next_ms) } else { Value::Null },
        "sent_at": iso(d.sent_ms),
        "error": (!d.error.is_empty()).then_some(&d.error),
    })
}

/// A team target's URL may hold a secret (a Slack webhook's path is its key): only its
/// origin is shown.
fn shown_address(d: &Delivery) -> String {
    if d.recipient.starts_with("team:")
        && d.channel != "email"
        && let Ok(u) = reqwest::Url::parse(&d.address)
    {
        return format!("{}/…", u.origin().ascii_serialization());
    }
    d.address.clone()
}

/// The whole answer.
pub fn json(list: &[Delivery], counts: &Counts) -> Value {
    let mut by_state = serde_json::Map::new();
    for (channel, state, n) in &counts.deliveries {
        let e = by_state.entry(channel.clone()).or_insert_with(|| json!({}));
        e[state] = json!(n);
    }
    json!({
        "counts": by_state,
        "outbox": counts.outbox,
        "deliveries": list.iter().map(delivery_json).collect::<Vec<_>>(),
    })
}

/// As text: the counts, then one line per pending or failed delivery.
pub fn text(list: &[Delivery], counts: &Counts) -> String {
    let mut out = String::new();
    if counts.deliveries.is_empty() && counts.outbox == 0 {
        out.push_str("no deliveries\n");
        return out;
    }
    for (channel, state, n) in &counts.deliveries {
        out.push_str(&format!("{channel:<11} {state:<10} {n}\n"));
    }
    if counts.outbox > 0 {
        out.push_str(&format!(
            "{} events not yet expanded into deliveries\n",
            counts.outbox
        ));
    }
    let open: Vec<&Delivery> = list
        .iter()
        .filter(|d| d.state == "pending" || d.state == "failed")
        .collect();
    if !open.is_empty() {
        out.push('\n');
    }
    for d in open {
        let when = if d.state == "pending" {
            format!("next try {}", super::model::iso(d.next_ms))
        } else {
            "given up".into()
        };
        out.push_str(&format!(
            "{:<8} {:<10} {} → {} (tries {}, {when}){}\n",
            d.state,
            d.channel,
            d.message,
            shown_address(d),
            d.attempts,
            if d.error.is_empty() {
                String::new()
            } else {
                format!(": {}", d.error)
            }
        ));
    }
    out
}
