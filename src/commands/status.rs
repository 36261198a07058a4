//! `runbook status`: a run as it stands, every step of its runbook in order (pending
//! ones too), with the projected end and the last lines of each step's log; as text or
//! JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{fail, fmt_ms, learned};
use crate::engine::action::LOG_ERROR;
use crate::engine::control::{load_run, runbook_of};
use crate::engine::state::{ItemStatus, RunState, StepRun};
use crate::exit::{Exit, Outcome};
use crate::runbook::Runbook;
use crate::store::{Store, StoreError, now_ms};

fn duration_ms(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    Some(b.unwrap_or_else(now_ms) - a?)
}

fn tail(path: &Path, n: usize) -> Vec<String> {
    // The end of the log only: a log may be large, or not a file at all.
    crate::input::read_tail(path, 64 * 1024)
        .map(|b| {
            let t = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(n)..]
                .iter()
                .map(|l| l.to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `runbook status`.
pub async fn status(run: Option<&str>, json_out: bool, store_flag: Option<&str>) -> Outcome {
    let url = crate::store::chosen_url(store_flag);
    let store = match Store::open_existing(&url).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return fail(match run {
                Some(r) => StoreError::UnknownRun(r.to_owned()).to_string(),
                None => "no runs in this store yet".to_owned(),
            });
        }
        Err(e) => return fail(e),
    };
    let run_id = match run {
        Some(r) => r.to_owned(),
        None => match store.runs().await {
            Ok(runs) if !runs.is_empty() => runs[0].run_id.clone(),
            Ok(_) => return fail("no runs in this store yet"),
            Err(e) => return fail(e),
        },
    };
    let (state, _) = match load_run(&store, &run_id).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let rb = runbook_of(&state);
    // The projected end: what the steps not finished still need (learned durations
    // first, fan-out progress extrapolated).
    let eta = match &rb {
        Some(rb) => {
            let learned = learned(&store, &rb.id, &run_id).await;
            crate::engine::timing::eta_ms(rb, &state, &learned, now_ms())
        }
        None => None,
    };
    let shown = Shown {
        run_id: &run_id,
        state: &state,
        ids: step_ids(rb.as_ref(), &state),
        logs: super::log_dir(&url, &run_id),
        eta,
    };
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(&shown.json()).expect("serializes")
        );
    } else {
        shown.print();
    }
    Ok(Exit::Ok)
}

/// Every step of the runbook in execution order, pending ones too (the journal alone
/// knows only the steps that started), then any step the journal names that the
/// runbook does not.
fn step_ids(rb: Option<&Runbook>, state: &RunState) -> Vec<String> {
    let mut ids: Vec<String> = rb
        .map(|rb| rb.order.iter().map(|&i| rb.steps[i].id.clone()).collect())
        .unwrap_or_default();
    for id in state.steps.keys() {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids
}

/// A fan-out's items: how many are done (not running), how many failed.
fn items_done(s: &StepRun) -> (usize, usize) {
    let done = s
        .items
        .values()
        .filter(|i| **i != ItemStatus::Running)
        .count();
    let failed = s
        .items
        .values()
        .filter(|i| **i == ItemStatus::Failed)
        .count();
    (done, failed)
}

/// What `status` shows of one run.
struct Shown<'a> {
    run_id: &'a str,
    state: &'a RunState,
    ids: Vec<String>,
    logs: PathBuf,
    eta: Option<i64>,
}

impl Shown<'_> {
    fn log_tail(&self, id: &str, n: usize) -> Vec<String> {
        tail(&self.logs.join(format!("{id}.log")), n)
    }

    /// `--format json`.
    fn json(&self) -> Value {
        let state = self.state;
        let steps: IndexMap<String, Value> = self
            .ids
            .iter()
            .map(|id| {
                let s = state.step(id);
                let (done, failed) = items_done(s);
                let step = json!({
                    "status": s.status.as_str(),
                    "attempts": s.attempts,
                    "started_ms": s.started_ms,
                    "ended_ms": s.ended_ms,
                    "duration_ms": duration_ms(s.started_ms, s.ended_ms),
                    "error": s.error,
                    "outputs": s.outputs,
                    "items": { "done": done, "failed": failed },
                    "output": self.log_tail(id, 5),
                    "cancelled": s.cancelled,
                });
                (id.clone(), step)
            })
            .collect();
        json!({
            "run": self.run_id,
            "runbook": state.runbook,
            "title": state.title,
            "status": state.status.as_str(),
            "closed": state.closed,
            "reason": state.reason,
            "started_ms": state.started_ms,
            "ended_ms": state.ended_ms,
            "eta_ms": self.eta,
            "steps": steps,
        })
    }

    /// The text view.
    fn print(&self) {
        let state = self.state;
        outln!(
            "run {} of `{}`: {}",
            self.run_id,
            state.runbook,
            state.status.as_str()
        );
        outln!("started {}", fmt_ms(state.started_ms));
        if state.ended_ms.is_some() {
            outln!("ended   {}", fmt_ms(state.ended_ms));
        }
        if let Some(eta) = self.eta {
            outln!("ETA     {}", fmt_ms(Some(eta)));
        }
        if state.closed {
            outln!("the service is CLOSED (maintenance mode on)");
        }
        if let Some(r) = &state.reason {
            outln!("reason: {r}");
        }
        outln!();
        for id in &self.ids {
            self.print_step(id, state.step(id));
        }
    }

    fn print_step(&self, id: &str, s: &StepRun) {
        let d = duration_ms(s.started_ms, s.ended_ms)
            .map(|ms| crate::duration::fmt_duration(Duration::from_millis(ms.max(0) as u64)))
            .unwrap_or_default();
        let items = if s.items.is_empty() {
            String::new()
        } else {
            let (done, failed) = items_done(s);
            format!("  {done} items done, {failed} failed")
        };
        outln!(
            "  {id:<20} {:<14} attempt {}  {d}{items}",
            s.status.as_str(),
            s.attempts
        );
        if let Some(e) = &s.error {
            outln!("      {e}");
        }
        if let Some(Value::String(e)) = s.outputs.get(LOG_ERROR) {
            outln!("      WARNING: {e}");
        }
        for (ix, outputs) in &s.item_outputs {
            if let Some(Value::String(e)) = outputs.get(LOG_ERROR) {
                outln!("      WARNING: item {ix}: {e}");
            }
        }
        for line in self.log_tail(id, 3) {
            outln!("      | {line}");
        }
    }
}
