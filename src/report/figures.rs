//! The report's derived figures: the recorded plan, the run's and each step's states in
//! the report's words, the planned window against the actual one, the service's
//! closures, and the outputs worth a reader's time.

use indexmap::IndexMap;
use serde_json::Value;

use super::model::*;
use super::{ReportError, iso};
use crate::engine::event::{Event, PublicPlan, Recorded};
use crate::engine::history::{History, replay};
use crate::engine::state::{RunState, RunStatus, StepRun, StepStatus};

/// The recorded plan of a run (an empty one for journals older than the status page).
pub(super) fn plan_of(events: &[Recorded]) -> Option<&PublicPlan> {
    match events.first().map(|r| &r.event) {
        Some(Event::RunStarted {
            public: Some(p), ..
        }) => Some(p),
        _ => None,
    }
}

/// The run's state and history after every event (which proves the journal legal).
pub(super) fn fold(run_id: &str, events: &[Recorded]) -> Result<(RunState, History), ReportError> {
    if !matches!(
        events.first().map(|r| &r.event),
        Some(Event::RunStarted { .. })
    ) {
        return Err(ReportError::Damaged {
            run: run_id.to_owned(),
            reason: "it does not begin with `run_started`".into(),
        });
    }
    replay(events).map_err(|e| ReportError::Damaged {
        run: run_id.to_owned(),
        reason: e.to_string(),
    })
}

pub(super) fn outcome(status: RunStatus) -> Outcome {
    match status {
        RunStatus::Completed => Outcome::Completed,
        RunStatus::RolledBack => Outcome::RolledBack,
        RunStatus::Failed => Outcome::Failed,
        RunStatus::Aborted => Outcome::Aborted,
        // A run is `scheduled` only before its first event.
        RunStatus::Running | RunStatus::Scheduled => Outcome::Running,
        RunStatus::Verifying => Outcome::Verifying,
        RunStatus::Paused => Outcome::Paused,
        RunStatus::AwaitingApproval => Outcome::AwaitingApproval,
        RunStatus::RollingBack => Outcome::RollingBack,
    }
}

pub(super) fn step_state(run: &StepRun, finished: bool) -> StepState {
    match run.status {
        StepStatus::Pending if finished => StepState::NotRun,
        StepStatus::Pending => StepState::Pending,
        StepStatus::Checking => StepState::Checking,
        StepStatus::Running if run.awaiting_approval => StepState::AwaitingApproval,
        StepStatus::Running => StepState::Running,
        StepStatus::Succeeded => StepState::Succeeded,
        StepStatus::Failed => StepState::Failed,
        StepStatus::TimedOut => StepState::TimedOut,
        StepStatus::Skipped => StepState::Skipped,
        StepStatus::RollingBack => StepState::RollingBack,
        StepStatus::RolledBack => StepState::RolledBack,
        StepStatus::RollbackFailed => StepState::RollbackFailed,
    }
}

/// One step of the plan: id, titles, kind, expected duration, checkpoint.
pub(super) struct PlannedStep {
    pub id: String,
    pub title: String,
    pub public_title: Option<String>,
    pub kind: String,
    pub expected_ms: Option<u64>,
    pub checkpoint: bool,
}

/// The steps in the recorded plan's order, then any the journal names that the plan
/// does not (a journal without a plan: the order of first mention).
pub(super) fn planned_steps(plan: Option<&PublicPlan>, state: &RunState) -> Vec<PlannedStep> {
    let mut steps: Vec<PlannedStep> = plan
        .map(|p| {
            p.steps
                .iter()
                .map(|s| PlannedStep {
                    id: s.id.clone(),
                    title: s
                        .label
                        .clone()
                        .or_else(|| s.title.clone())
                        .unwrap_or_else(|| s.id.clone()),
                    public_title: s.title.clone(),
                    kind: s.kind.clone(),
                    expected_ms: s.expected_ms,
                    checkpoint: s.checkpoint,
                })
                .collect()
        })
        .unwrap_or_default();
    let known: std::collections::HashSet<String> = steps.iter().map(|s| s.id.clone()).collect();
    for id in state.steps.keys() {
        if !known.contains(id) {
            steps.push(PlannedStep {
                id: id.clone(),
                title: id.clone(),
                public_title: None,
                kind: String::new(),
                expected_ms: None,
                checkpoint: false,
            });
        }
    }
    steps
}

/// The planned window and where each end comes from.
pub(super) fn window(
    plan: Option<&PublicPlan>,
    state: &RunState,
    expected_ms: i64,
    now_ms: i64,
) -> Window {
    let started = state.started_ms.unwrap_or(now_ms);
    let scheduled_start = plan.and_then(|p| p.planned_start_ms);
    let scheduled_end = plan.and_then(|p| p.planned_end_ms);
    let length = plan
        .and_then(|p| p.window_ms)
        .or_else(|| scheduled_start.zip(scheduled_end).map(|(s, e)| e - s));
    let (start, start_from) = match (state.window_start_ms, scheduled_start) {
        // `--now`: the window opened at the run's start, for its recorded length.
        (Some(opened), _) => (opened, PlannedStartFrom::WindowOpened),
        (None, Some(s)) => (s, PlannedStartFrom::Window),
        (None, None) => (started, PlannedStartFrom::RunStart),
    };
    let (end, end_from) = match (start_from, length, scheduled_end) {
        (PlannedStartFrom::WindowOpened | PlannedStartFrom::RunStart, Some(len), _) => {
            (start + len, PlannedEndFrom::Window)
        }
        (PlannedStartFrom::Window, _, Some(e)) => (e, PlannedEndFrom::Window),
        _ => (start + expected_ms, PlannedEndFrom::ExpectedDurations),
    };
    let finished = state.status.is_terminal();
    let actual_end = if finished { state.ended_ms } else { None };
    let until = actual_end.unwrap_or(now_ms);
    let overrun = (until - end).max(0);
    let held = match actual_end {
        Some(e) => Some(e <= end),
        None if until > end => Some(false),
        None => None,
    };
    Window {
        planned_start: iso(start),
        planned_start_ms: start,
        planned_start_from: start_from,
        planned_end: iso(end),
        planned_end_ms: end,
        planned_end_from: end_from,
        planned_duration_ms: end - start,
        scheduled_start: scheduled_start.map(iso),
        scheduled_start_ms: scheduled_start,
        scheduled_end: scheduled_end.map(iso),
        scheduled_end_ms: scheduled_end,
        expected_ms,
        actual_start: iso(started),
        actual_start_ms: started,
        actual_end: actual_end.map(iso),
        actual_end_ms: actual_end,
        start_delay_ms: started - start,
        held,
        overrun_ms: overrun,
    }
}

/// Closures of the service, each to its reopening (or still open).
pub(super) fn service(history: &History, now_ms: i64) -> Service {
    let intervals: Vec<ClosedInterval> = history
        .closures
        .iter()
        .map(|c| ClosedInterval {
            closed_at: iso(c.closed_ms),
            closed_at_ms: c.closed_ms,
            reopened_at: c.reopened_ms.map(iso),
            reopened_at_ms: c.reopened_ms,
            duration_ms: (c.reopened_ms.unwrap_or(now_ms) - c.closed_ms).max(0),
        })
        .collect();
    Service {
        closed_ms: intervals.iter().map(|i| i.duration_ms).sum(),
        still_closed: history.closed(),
        intervals,
    }
}

/// Keys worth reading per kind.
fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "backup" => &["size_bytes", "path", "tables"],
        "migrate" => &["from_version", "to_version", "applied"],
        "verify" => &["checks"],
        "optimise" => &["size_before", "size_after"],
        _ => &[],
    }
}

/// The outputs worth reading: a database kind's own keys when it has them, else all.
pub(super) fn outputs_worth_reading(
    kind: &str,
    outputs: &IndexMap<String, Value>,
) -> IndexMap<String, Value> {
    let keys = keys_of(kind);
    let mut picked: IndexMap<String, Value> = keys
        .iter()
        .filter_map(|k| outputs.get(*k).map(|v| ((*k).to_owned(), abbreviate(v, 0))))
        .collect();
    if !picked.is_empty() {
        // A log that could not be written whole is always worth reading.
        let log_error = crate::engine::action::LOG_ERROR;
        if let Some(v) = outputs.get(log_error) {
            picked.insert(log_error.to_owned(), v.clone());
        }
        return picked;
    }
    outputs
        .iter()
        .map(|(k, v)| (k.clone(), abbreviate(v, 0)))
        .collect()
}

/// Longest string kept whole.
const MAX_STRING: usize = 200;
/// Most array elements or object keys kept.
const MAX_ENTRIES: usize = 10;

/// A value cut down to something a person reads: long strings cut, long lists and maps
/// shortened with a note of what was left out, deep nesting flattened.
pub(super) fn abbreviate(v: &Value, depth: usize) -> Value {
    match v {
        Value::String(s) => Value::String(cut(s, MAX_STRING)),
        Value::Array(a) if depth >= 2 => Value::String(format!("[{} values]", a.len())),
        Value::Object(o) if depth >= 2 => Value::String(format!("{{{} keys}}", o.len())),
        Value::Array(a) => {
            let mut out: Vec<Value> = a
                .iter()
                .take(MAX_ENTRIES)
                .map(|x| abbreviate(x, depth + 1))
                .collect();
            if a.len() > MAX_ENTRIES {
                out.push(Value::String(format!("… {} more", a.len() - MAX_ENTRIES)));
            }
            Value::Array(out)
        }
        Value::Object(o) => {
            let mut out: serde_json::Map<String, Value> = o
                .iter()
                .take(MAX_ENTRIES)
                .map(|(k, x)| (cut(k, 60), abbreviate(x, depth + 1)))
                .collect();
            if o.len() > MAX_ENTRIES {
                out.insert(
                    "…".into(),
                    Value::String(format!("{} more keys", o.len() - MAX_ENTRIES)),
                );
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// `s` cut to at most `max` characters, with `…` when cut.
pub(super) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}
