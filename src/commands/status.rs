//! `runbook status`: a run as it stands, every step of its runbook in order (pending
//! ones too), with the projected end and the last lines of each step's log; as text or
//! JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{fail, fmt_ms, learned};
use crate::engine::action::LOG_ERROR;
use crate::engine::control::runbook_of;
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
    let (state, history) = match crate::engine::control::load_replayed(&store, &run_id).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let rb = runbook_of(&state);
    let runner = runner_of(&store, &state, &run_id).await;
    // The projected end: what the steps not finished still need (learned durations
    // first, fan-out progress extrapolated). A run whose runner is gone has none.
    let eta = match &rb {
        Some(_) if matches!(runner, Runner::Gone { .. }) => None,
        Some(rb) => {
            let learned = learned(&store, &rb.id, &run_id).await;
            crate::engine::timing::eta_ms(rb, &state, &learned, now_ms())
        }
        None => None,
    };
    let shown = Shown {
        run_id: &run_id,
        state: &state,
        history: &history,
        ids: step_ids(rb.as_ref(), &state),
        logs: super::log_dir(&url, &run_id),
        eta,
        runner,
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

/// Who carries a run on that has not ended.
enum Runner {
    /// The run has ended: no runner needed.
    None,
    /// Its runner holds the lease and beats.
    Alive { host: String, pid: i64 },
    /// No live runner: killed, or its machine gone. `since`: its last heartbeat.
    Gone { since_ms: Option<i64> },
}

/// Whether a run that has not ended still has a live runner (its lease held and beating).
async fn runner_of(store: &Store, state: &RunState, run_id: &str) -> Runner {
    use crate::engine::state::RunStatus as R;
    // A paused run waits for a person by design (`status` says why); these need a runner.
    if !matches!(
        state.status,
        R::Running | R::Verifying | R::RollingBack | R::AwaitingApproval
    ) {
        return Runner::None;
    }
    match store.lease(&state.runbook).await {
        Ok(Some(l))
            if l.run_id == run_id && !l.released && crate::engine::control::holder_alive(&l) =>
        {
            Runner::Alive {
                host: l.host,
                pid: l.pid,
            }
        }
        Ok(Some(l)) if l.run_id == run_id => Runner::Gone {
            since_ms: Some(l.heartbeat_ms),
        },
        // A store that cannot say is not a reason to call the runner gone.
        Err(_) => Runner::None,
        Ok(_) => Runner::Gone { since_ms: None },
    }
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
    history: &'a crate::engine::history::History,
    ids: Vec<String>,
    logs: PathBuf,
    eta: Option<i64>,
    runner: Runner,
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
                let names = &self.history.step(id).item_names;
                let (done, failed) = items_done(s);
                let step = json!({
                    "status": s.status.as_str(),
                    "attempts": s.attempts,
                    "started_ms": s.started_ms,
                    "ended_ms": s.ended_ms,
                    "duration_ms": duration_ms(s.started_ms, s.ended_ms),
                    "error": s.error,
                    "outputs": s.outputs,
                    "items": {
                        "done": done,
                        "failed": failed,
                        "failures": s.items.iter()
                            .filter(|(_, st)| **st == ItemStatus::Failed)
                            .map(|(ix, _)| json!({
                                "index": ix,
                                "name": names.get(ix),
                                "error": s.item_errors.get(ix),
                            }))
                            .collect::<Vec<_>>(),
                        "running": s.items.iter()
                            .filter(|(_, st)| **st == ItemStatus::Running)
                            .map(|(ix, _)| json!({ "index": ix, "name": names.get(ix) }))
                            .collect::<Vec<_>>(),
                    },
                    "output": self.log_tail(id, 5),
                    "progress": s.progress.as_ref().map(|p| json!({
                        "done": p.done,
                        "total": p.total,
                        "eta_ms": p.eta_ms,
                        "what": p.what,
                        "at_ms": p.at_ms,
                    })),
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
            "runner": match &self.runner {
                Runner::None => Value::Null,
                Runner::Alive { host, pid } => json!({ "alive": true, "host": host, "pid": pid }),
                Runner::Gone { since_ms } => json!({ "alive": false, "last_heartbeat_ms": since_ms }),
            },
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
        if let Runner::Gone { since_ms } = &self.runner {
            let since =
                since_ms.map_or_else(String::new, |ms| format!(" since {}", fmt_ms(Some(ms))));
            outln!(
                "runner gone{since}: nothing is carrying this run on; run `runbook resume {}`",
                self.run_id
            );
        }
        if state.status == crate::engine::state::RunStatus::AwaitingApproval
            && let Some(since) = state
                .steps
                .values()
                .filter(|s| s.awaiting_approval)
                .filter_map(|s| s.started_ms)
                .max()
        {
            outln!("waiting for approval since {}", fmt_ms(Some(since)));
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
        let names = &self.history.step(id).item_names;
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
        let name =
            |ix: &usize| crate::engine::items::words(*ix, names.get(ix).map_or("", String::as_str));
        // The items that failed, and those under way, by name (a few: the report has all).
        const SHOWN: usize = 10;
        for status in [ItemStatus::Failed, ItemStatus::Running] {
            let these: Vec<&usize> = s
                .items
                .iter()
                .filter(|(_, st)| **st == status)
                .map(|(ix, _)| ix)
                .collect();
            for ix in these.iter().take(SHOWN) {
                match status {
                    ItemStatus::Failed => match s.item_errors.get(ix) {
                        Some(e) => outln!("      {} FAILED: {e}", name(ix)),
                        None => outln!("      {} FAILED", name(ix)),
                    },
                    _ => outln!("      {} running", name(ix)),
                }
            }
            if these.len() > SHOWN {
                outln!("      … and {} more", these.len() - SHOWN);
            }
        }
        for (ix, outputs) in &s.item_outputs {
            if let Some(Value::String(e)) = outputs.get(LOG_ERROR) {
                outln!("      WARNING: {}: {e}", name(ix));
            }
        }
        if let Some(p) = s
            .progress
            .as_ref()
            .filter(|_| s.status == crate::engine::state::StepStatus::Running)
        {
            let share = p
                .total
                .filter(|t| *t > 0)
                .map(|t| format!(" ({}%)", (p.done * 100 / t).min(100)))
                .unwrap_or_default();
            let of = p
                .total
                .map(|t| format!(" of about {t}"))
                .unwrap_or_default();
            let left = p
                .eta_ms
                .map(|eta| {
                    let ms = (eta - crate::store::now_ms()).max(0) as u64;
                    format!(
                        ", about {} to go",
                        crate::duration::fmt_duration(std::time::Duration::from_secs(
                            ms.div_ceil(1000)
                        ))
                    )
                })
                .unwrap_or_default();
            outln!("      progress: {}{of} {}{share}{left}", p.done, p.what);
        }
        for line in self.log_tail(id, 3) {
            outln!("      | {line}");
        }
    }
}
