//! `runbook runs`: every run in the store, newest first, with its status; as text or
//! JSON.

use serde_json::{Value, json};

use super::{fail, fmt_ms};
use crate::engine::control::load_run;
use crate::exit::{Exit, Outcome};
use crate::store::Store;

/// `runbook runs`.
pub async fn runs(json_out: bool, store_flag: Option<&str>) -> Outcome {
    let url = crate::store::chosen_url(store_flag);
    let store = match Store::open_existing(&url).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            if json_out {
                outln!("[]");
            } else {
                outln!("no runs yet");
            }
            return Ok(Exit::Ok);
        }
        Err(e) => return fail(e),
    };
    let rows = match store.runs().await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut list = Vec::new();
    for r in rows {
        let state = load_run(&store, &r.run_id).await.map(|(s, _)| s).ok();
        list.push((r, state));
    }
    if json_out {
        let doc: Vec<Value> = list
            .iter()
            .map(|(r, s)| {
                json!({
                    "run": r.run_id,
                    "runbook": r.runbook,
                    "status": s.as_ref().map(|s| s.status.as_str()),
                    "started_ms": r.started_ms,
                    "ended_ms": s.as_ref().and_then(|s| s.ended_ms),
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serializes")
        );
        return Ok(Exit::Ok);
    }
    if list.is_empty() {
        outln!("no runs yet");
    }
    for (r, s) in list {
        let status = s
            .as_ref()
            .map(|s| s.status.as_str())
            .unwrap_or("unreadable");
        outln!(
            "{:<40} {:<20} {:<18} {}",
            r.run_id,
            r.runbook,
            status,
            fmt_ms(Some(r.started_ms))
        );
    }
    Ok(Exit::Ok)
}
