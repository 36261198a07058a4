//! The report as a projection of the journal: one pass over the events, plus the run
//! state's fold (which also proves the journal makes sense).

use std::collections::HashMap;

use indexmap::IndexMap;
use serde_json::Value;

use super::model::*;
use super::{ReportError, iso};
use crate::engine::event::{Event, PublicPlan, Recorded};
use crate::engine::state::{ItemStatus, RunState, RunStatus, StepRun, StepStatus};

/// Failed fan-out items listed per step (the rest are counted).
const ITEM_ERRORS: usize = 20;
/// Failed fan-out items per step in the postmortem timeline.
const TIMELINE_ITEM_ERRORS: usize = 5;

/// What one pass over the events collects for a step, beyond the fold.
#[derive(Default)]
struct StepFacts {
    errors: Vec<AttemptError>,
    errors_omitted: usize,
    /// The last outcome event (succeeded, failed, timed out, skipped, decided).
    outcome_ms: Option<i64>,
    skip_reason: Option<String>,
    undo: Option<Undo>,
}

/// The recorded plan of a run (an empty one for journals older than the status page).
pub(super) fn plan_of(events: &[Recorded]) -> Option<&PublicPlan> {
    match events.first().map(|r| &r.event) {
        Some(Event::RunStarted {
            public: Some(p), ..
        }) => Some(p),
        _ => None,
    }
}

/// The run's state after every event.
pub(super) fn fold(run_id: &str, events: &[Recorded]) -> Result<RunState, ReportError> {
    if !matches!(
        events.first().map(|r| &r.event),
        Some(Event::RunStarted { .. })
    ) {
        return Err(ReportError::Damaged {
            run: run_id.to_owned(),
            reason: "it does not begin with `run_started`".into(),
        });
    }
    RunState::from_events(events.iter().map(|r| (&r.event, r.at_ms))).map_err(|e| {
        ReportError::Damaged {
            run: run_id.to_owned(),
            reason: e.to_string(),
        }
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
pub(super) fn service(events: &[Recorded], now_ms: i64) -> Service {
    let mut intervals: Vec<ClosedInterval> = Vec::new();
    for r in events {
        match r.event {
            Event::ServiceClosed => intervals.push(ClosedInterval {
                closed_at: iso(r.at_ms),
                closed_at_ms: r.at_ms,
                reopened_at: None,
                reopened_at_ms: None,
                duration_ms: 0,
            }),
            Event::ServiceReopened => {
                if let Some(open) = intervals.last_mut().filter(|i| i.reopened_at_ms.is_none()) {
                    open.reopened_at = Some(iso(r.at_ms));
                    open.reopened_at_ms = Some(r.at_ms);
                }
            }
            _ => {}
        }
    }
    for i in &mut intervals {
        i.duration_ms = (i.reopened_at_ms.unwrap_or(now_ms) - i.closed_at_ms).max(0);
    }
    Service {
        closed_ms: intervals.iter().map(|i| i.duration_ms).sum(),
        still_closed: intervals.last().is_some_and(|i| i.reopened_at_ms.is_none()),
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
fn outputs_worth_reading(kind: &str, outputs: &IndexMap<String, Value>) -> IndexMap<String, Value> {
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

/// Builds the whole report. `now_ms` is the report's time ("so far" for a run that
/// goes on).
pub fn build(run_id: &str, events: &[Recorded], now_ms: i64) -> Result<Report, ReportError> {
    let state = fold(run_id, events)?;
    let plan = plan_of(events);
    let out = outcome(state.status);
    let finished = out.finished();
    let planned = planned_steps(plan, &state);
    let title_of: HashMap<&str, &str> = planned
        .iter()
        .map(|s| (s.id.as_str(), s.title.as_str()))
        .collect();
    let title = |id: &str| title_of.get(id).copied().unwrap_or(id).to_owned();

    let expected_total: i64 = planned
        .iter()
        .map(|s| s.expected_ms.unwrap_or(0) as i64)
        .sum();
    let window = window(plan, &state, expected_total, now_ms);
    let service = service(events, now_ms);

    // One pass: attempt errors, outcomes, undo times, rollbacks, approvals, updates.
    let mut facts: HashMap<&str, StepFacts> = HashMap::new();
    let mut rollbacks: Vec<Rollback> = Vec::new();
    let mut approvals: Vec<Approval> = Vec::new();
    let mut updates: Vec<Update> = Vec::new();
    let mut aborted_by = None;
    for r in events {
        let at = r.at_ms;
        let e = &r.event;
        if let Some(step) = e.step() {
            let f = facts.entry(step).or_default();
            let mut error = |attempt: Option<u32>, item: Option<usize>, kind, text: &str| {
                if kind == ErrorKind::ItemFailed && f.errors.len() >= ITEM_ERRORS {
                    f.errors_omitted += 1;
                    return;
                }
                f.errors.push(AttemptError {
                    at: iso(at),
                    at_ms: at,
                    attempt,
                    item,
                    kind,
                    error: text.to_owned(),
                });
            };
            match e {
                Event::PreconditionFailed {
                    attempt, message, ..
                } => error(Some(*attempt), None, ErrorKind::PreconditionFailed, message),
                Event::StepFailed {
                    attempt, error: x, ..
                } => error(Some(*attempt), None, ErrorKind::Failed, x),
                Event::StepTimedOut { attempt, .. } => {
                    error(Some(*attempt), None, ErrorKind::TimedOut, "timed out")
                }
                Event::Rejected { by, .. } => error(
                    None,
                    None,
                    ErrorKind::Rejected,
                    &format!("rejected by {by}"),
                ),
                Event::ItemFailed {
                    index, error: x, ..
                } => error(None, Some(*index), ErrorKind::ItemFailed, x),
                _ => {}
            }
            match e {
                Event::StepSucceeded { .. }
                | Event::StepFailed { .. }
                | Event::StepTimedOut { .. }
                | Event::PreconditionFailed { .. }
                | Event::Approved { .. }
                | Event::Rejected { .. } => f.outcome_ms = Some(at),
                Event::StepSkipped { reason, .. } => {
                    f.outcome_ms = Some(at);
                    f.skip_reason = Some(reason.clone());
                }
                Event::StepRollbackStarted { .. } => {
                    let undo = f
                        .undo
                        .get_or_insert_with(|| undo_at(UndoStatus::Undoing, None, at, false));
                    undo.status = UndoStatus::Undoing;
                }
                // Brought back by a restore: undone when the restore was.
                Event::StepRolledBack {
                    by_restore: Some(cp),
                    ..
                } => {
                    f.undo = Some(undo_at(UndoStatus::Restored, Some(cp), at, true));
                }
                Event::StepRolledBack { .. } | Event::StepRollbackFailed { .. } => {
                    if let Some(undo) = &mut f.undo {
                        undo.ended_at = Some(iso(at));
                        undo.ended_at_ms = Some(at);
                        undo.duration_ms = Some(at - undo.started_at_ms);
                        if let Event::StepRollbackFailed { error, .. } = e {
                            undo.status = UndoStatus::UndoFailed;
                            undo.error = Some(error.clone());
                        } else {
                            undo.status = UndoStatus::Undone;
                            undo.error = None;
                        }
                    }
                }
                _ => {}
            }
            // A step the restore brought back, in the order of the restore.
            if let Event::StepRolledBack {
                step,
                by_restore: Some(cp),
            } = e
                && let Some(rb) = rollbacks.last_mut()
            {
                let undo = undo_at(UndoStatus::Restored, Some(cp), at, true);
                rb.steps.push(rollback_step(step, title(step), &undo));
            }
            // Rollback order: the first time a step's undo starts.
            if let Event::StepRollbackStarted { step } = e
                && let Some(rb) = rollbacks.last_mut()
                && !rb.steps.iter().any(|s| &s.id == step)
            {
                let undo = undo_at(UndoStatus::Undoing, None, at, false);
                rb.steps.push(rollback_step(step, title(step), &undo));
            }
        }
        match e {
            Event::RollbackStarted { reason } => rollbacks.push(Rollback {
                started_at: iso(at),
                started_at_ms: at,
                reason: reason.clone(),
                ended_at: None,
                ended_at_ms: None,
                duration_ms: None,
                outcome: RollbackOutcome::InProgress,
                steps: Vec::new(),
                left: Vec::new(),
            }),
            Event::RunRolledBack { .. } | Event::RunFailed { .. } | Event::RunAborted { .. } => {
                if let Some(rb) = rollbacks
                    .last_mut()
                    .filter(|rb| rb.outcome == RollbackOutcome::InProgress)
                {
                    rb.ended_at = Some(iso(at));
                    rb.ended_at_ms = Some(at);
                    rb.duration_ms = Some(at - rb.started_at_ms);
                    rb.outcome = match e {
                        Event::RunRolledBack { .. } => RollbackOutcome::RolledBack,
                        Event::RunFailed { .. } => RollbackOutcome::Failed,
                        _ => RollbackOutcome::Aborted,
                    };
                    // What the rollback could not undo is named, step by step.
                    if let Event::RunRolledBack { left } = e {
                        rb.left.clone_from(left);
                        for step in left {
                            let undo = undo_at(UndoStatus::Left, None, at, false);
                            rb.steps.push(rollback_step(step, title(step), &undo));
                            facts.entry(step.as_str()).or_default().undo = Some(undo);
                        }
                    }
                }
                if let Event::RunAborted { by, .. } = e {
                    aborted_by = Some(by.clone());
                }
            }
            _ => {}
        }
        // Approvals.
        match e {
            Event::ApprovalRequested { step } => approvals.push(Approval {
                step: step.clone(),
                title: title(step),
                decision: ApprovalDecision::Waiting,
                by: None,
                requested_at: iso(at),
                requested_at_ms: at,
                decided_at: None,
                decided_at_ms: None,
                waited_ms: 0,
            }),
            Event::Approved { step, .. }
            | Event::Rejected { step, .. }
            | Event::StepTimedOut { step, .. }
            | Event::StepSkipped { step, .. } => {
                if let Some(a) = approvals
                    .iter_mut()
                    .rev()
                    .find(|a| &a.step == step && a.decision == ApprovalDecision::Waiting)
                {
                    a.decision = match e {
                        Event::Approved { .. } => ApprovalDecision::Approved,
                        Event::Rejected { .. } => ApprovalDecision::Rejected,
                        Event::StepTimedOut { .. } => ApprovalDecision::TimedOut,
                        _ => ApprovalDecision::Skipped,
                    };
                    a.by = match e {
                        Event::Approved { by, .. } | Event::Rejected { by, .. } => Some(by.clone()),
                        _ => None,
                    };
                    a.decided_at = Some(iso(at));
                    a.decided_at_ms = Some(at);
                }
            }
            Event::RollbackStarted { .. } | Event::RunFailed { .. } | Event::RunAborted { .. } => {
                for a in approvals
                    .iter_mut()
                    .filter(|a| a.decision == ApprovalDecision::Waiting)
                {
                    a.decision = ApprovalDecision::Cancelled;
                    a.decided_at = Some(iso(at));
                    a.decided_at_ms = Some(at);
                }
            }
            _ => {}
        }
        if let Event::Published(u) = e {
            updates.push(Update {
                at: iso(at),
                at_ms: at,
                kind: u.kind.clone(),
                status: u.status.clone(),
                body: u.body.clone(),
                step: u.step.clone(),
                eta: u.eta_ms.map(iso),
                eta_ms: u.eta_ms,
                by: u.by.clone(),
                incident: u.incident,
            });
        }
    }
    for a in &mut approvals {
        a.waited_ms = (a.decided_at_ms.unwrap_or(now_ms) - a.requested_at_ms).max(0);
    }
    // The rollback's steps take their outcome from the step's undo.
    for rb in &mut rollbacks {
        for s in &mut rb.steps {
            if let Some(undo) = facts.get(s.id.as_str()).and_then(|f| f.undo.as_ref()) {
                s.status = undo.status;
                s.restored_by.clone_from(&undo.restored_by);
                s.ended_at.clone_from(&undo.ended_at);
                s.ended_at_ms = undo.ended_at_ms;
                s.duration_ms = undo.duration_ms;
                s.error.clone_from(&undo.error);
            }
        }
    }

    let mut cursor = window.planned_start_ms;
    let steps: Vec<StepReport> = planned
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let run = state.step(&p.id);
            let f = facts.remove(p.id.as_str()).unwrap_or_default();
            let planned_start = cursor;
            let planned_end = cursor + p.expected_ms.unwrap_or(0) as i64;
            cursor = planned_end;
            let status = step_state(run, finished);
            let actual_start = run.started_ms;
            // The step's own outcome; a step the run's end stopped ends with the run.
            let actual_end = match status {
                StepState::Pending | StepState::NotRun => None,
                StepState::Checking | StepState::Running | StepState::AwaitingApproval => None,
                _ => f.outcome_ms.or(run.ended_ms),
            };
            let duration = actual_start.zip(actual_end).map(|(s, e)| (e - s).max(0));
            let overrun = duration
                .zip(p.expected_ms)
                .map(|(d, x)| d - x as i64)
                // A few milliseconds over is not an overrun worth a manager's eye (the
                // status page does not call it one either).
                .filter(|o| *o >= 1000);
            let items = (!run.items.is_empty()).then(|| {
                let count = |s: ItemStatus| run.items.values().filter(|x| **x == s).count();
                Items {
                    total: run.items.len(),
                    succeeded: count(ItemStatus::Succeeded),
                    failed: count(ItemStatus::Failed),
                    running: count(ItemStatus::Running),
                }
            });
            let skipped = status == StepState::Skipped;
            StepReport {
                position: i + 1,
                id: p.id.clone(),
                title: p.title.clone(),
                public_title: p.public_title.clone(),
                kind: p.kind.clone(),
                checkpoint: p.checkpoint,
                status,
                failure_tolerated: run.failure_ignored,
                expected_ms: p.expected_ms,
                planned_start: iso(planned_start),
                planned_start_ms: planned_start,
                planned_end: iso(planned_end),
                planned_end_ms: planned_end,
                actual_start: actual_start.map(iso),
                actual_start_ms: actual_start,
                actual_end: actual_end.map(iso),
                actual_end_ms: actual_end,
                duration_ms: duration,
                overrun_ms: overrun,
                attempts: run.attempts,
                outputs: outputs_worth_reading(&p.kind, &run.outputs),
                items,
                errors: f.errors,
                errors_omitted: f.errors_omitted,
                error: if skipped { None } else { run.error.clone() },
                skip_reason: if skipped {
                    f.skip_reason.or_else(|| run.error.clone())
                } else {
                    None
                },
                undo: f.undo,
            }
        })
        .collect();

    let started = state.started_ms.unwrap_or(now_ms);
    let ended = if finished { state.ended_ms } else { None };
    let (runbook_title, maintenance, components, timezone, summary, public_title) = match plan {
        Some(p) => (
            state.title.clone(),
            p.maintenance.clone(),
            p.components.clone(),
            p.timezone.clone(),
            p.summary.clone(),
            p.title.clone(),
        ),
        None => (
            state.title.clone(),
            None,
            Vec::new(),
            "UTC".to_owned(),
            None,
            None,
        ),
    };
    let run = RunInfo {
        id: run_id.to_owned(),
        runbook: state.runbook.clone(),
        title: runbook_title,
        public_title,
        summary,
        maintenance,
        components,
        operator: state.operator.clone(),
        host: state.host.clone(),
        file: state.file.clone(),
        file_sha256: state.file_sha256.clone(),
        timezone,
        outcome: out,
        finished,
        reason: state.reason.clone(),
        aborted_by,
        started_at: iso(started),
        started_at_ms: started,
        ended_at: ended.map(iso),
        ended_at_ms: ended,
        duration_ms: (ended.unwrap_or(now_ms) - started).max(0),
        events: events.len(),
    };
    let mut report = Report {
        schema_version: SchemaVersion,
        generated_at: iso(now_ms),
        generated_at_ms: now_ms,
        run,
        window,
        service,
        steps,
        rollbacks,
        approvals,
        public_updates: updates,
        postmortem: None,
    };
    if matches!(
        out,
        Outcome::RolledBack | Outcome::Failed | Outcome::Aborted
    ) {
        report.postmortem = Some(postmortem(&report, events, &title));
    }
    Ok(report)
}

/// A draft postmortem: summary, timeline and impact from the journal.
fn postmortem(report: &Report, events: &[Recorded], title: &dyn Fn(&str) -> String) -> Postmortem {
    let fmt =
        |ms: i64| crate::duration::fmt_duration(std::time::Duration::from_millis(ms.max(0) as u64));
    let run = &report.run;
    let clock = super::Clock::new(&run.timezone, run.started_at_ms);
    let mut summary = format!(
        "Run {} of runbook `{}` ({}) started at {} by {} on {} and ended {} at {} after {}.",
        run.id,
        run.runbook,
        run.title,
        clock.full(run.started_at_ms),
        run.operator,
        run.host,
        run.outcome.label(),
        run.ended_at_ms
            .map(|t| clock.full(t))
            .unwrap_or_else(|| "(not recorded)".into()),
        fmt(run.duration_ms),
    );
    let first_failure = report.steps.iter().find(|s| {
        matches!(s.status, StepState::Failed | StepState::TimedOut) && !s.failure_tolerated
    });
    if let Some(s) = first_failure {
        summary.push_str(&format!(
            " Step `{}` ({}) {} after {} attempt{}: {}.",
            s.id,
            s.title,
            s.status.label(),
            s.attempts,
            if s.attempts == 1 { "" } else { "s" },
            s.error.as_deref().unwrap_or("no error recorded"),
        ));
    } else if let Some(reason) = &run.reason {
        summary.push_str(&format!(" Reason: {reason}."));
    }
    if let Some(by) = &run.aborted_by {
        summary.push_str(&format!(" Aborted by {by}."));
    }
    for rb in &report.rollbacks {
        let ids = |f: &dyn Fn(UndoStatus) -> bool| -> Vec<String> {
            rb.steps
                .iter()
                .filter(|s| f(s.status))
                .map(|s| format!("`{}`", s.id))
                .collect()
        };
        let undone = ids(&|s| s == UndoStatus::Undone);
        let restored = ids(&|s| s == UndoStatus::Restored);
        let left = ids(&|s| s == UndoStatus::Left);
        let failed = ids(&|s| matches!(s, UndoStatus::UndoFailed | UndoStatus::Undoing));
        summary.push_str(&format!(
            " The rollback undid {}",
            if undone.is_empty() {
                "no step".to_owned()
            } else {
                undone.join(", ")
            }
        ));
        if !restored.is_empty() {
            summary.push_str(&format!(
                "; its restore brought back {}",
                restored.join(", ")
            ));
        }
        if !failed.is_empty() {
            summary.push_str(&format!("; undoing {} did not finish", failed.join(", ")));
        }
        if !left.is_empty() {
            summary.push_str(&format!(
                "; {} had no way back and {} left as {} was",
                left.join(", "),
                if left.len() == 1 { "is" } else { "are" },
                if left.len() == 1 { "it" } else { "they" }
            ));
        }
        summary.push('.');
    }
    let w = &report.window;
    match w.held {
        Some(true) => summary.push_str(" The run ended inside its window."),
        Some(false) => summary.push_str(&format!(
            " The run overran its window by {}.",
            fmt(w.overrun_ms)
        )),
        None => {}
    }

    let svc = &report.service;
    let incident = report.public_updates.iter().any(|u| u.incident);
    let mut impact = if svc.intervals.is_empty() {
        "The service was not closed to customers.".to_owned()
    } else {
        format!(
            "The service was closed to customers for {} ({} closure{}){}.",
            fmt(svc.closed_ms),
            svc.intervals.len(),
            if svc.intervals.len() == 1 { "" } else { "s" },
            if svc.still_closed {
                " and is STILL CLOSED: the run left maintenance mode on"
            } else {
                ""
            }
        )
    };
    impact.push_str(&format!(
        " {} public update{} {} published{}.",
        report.public_updates.len(),
        if report.public_updates.len() == 1 {
            ""
        } else {
            "s"
        },
        if report.public_updates.len() == 1 {
            "was"
        } else {
            "were"
        },
        if incident {
            "; the failure opened an incident on the status page"
        } else {
            ""
        }
    ));

    Postmortem {
        summary,
        timeline: timeline(events, title),
        impact: Impact {
            text: impact,
            closed_ms: svc.closed_ms,
            still_closed: svc.still_closed,
            public_updates: report.public_updates.len(),
            incident,
        },
        root_cause: "to fill in".into(),
        follow_ups: "to fill in".into(),
    }
}

/// What happened, event by event, in words (fan-out items summed up, precondition
/// checks and item starts left out).
fn timeline(events: &[Recorded], title: &dyn Fn(&str) -> String) -> Vec<TimelineEntry> {
    let mut out = Vec::new();
    let mut item_failures: HashMap<&str, usize> = HashMap::new();
    let mut items_done: HashMap<&str, (usize, usize)> = HashMap::new();
    for r in events {
        let name = |step: &str| format!("`{step}` ({})", title(step));
        let text = match &r.event {
            Event::RunStarted {
                runbook, operator, ..
            } => Some(format!("run of `{runbook}` started by {operator}")),
            Event::StepStarted { step, attempt, .. } if *attempt > 1 => {
                Some(format!("{} started, attempt {attempt}", name(step)))
            }
            Event::StepStarted { step, .. } => Some(format!("{} started", name(step))),
            Event::StepSucceeded { step, .. } => {
                let items = match items_done.get(step.as_str()) {
                    Some((n, 0)) => format!(" ({n} items)"),
                    Some((n, f)) => format!(" ({n} items, {f} failed)"),
                    None => String::new(),
                };
                Some(format!("{} succeeded{items}", name(step)))
            }
            Event::StepFailed { step, error, .. } => {
                Some(format!("{} FAILED: {error}", name(step)))
            }
            Event::PreconditionFailed { step, message, .. } => {
                Some(format!("{}: precondition failed: {message}", name(step)))
            }
            Event::StepTimedOut { step, .. } => Some(format!("{} TIMED OUT", name(step))),
            Event::RetryScheduled {
                step, next_attempt, ..
            } => Some(format!("{}: attempt {next_attempt} scheduled", name(step))),
            Event::StepSkipped { step, reason } => {
                Some(format!("{} skipped: {reason}", name(step)))
            }
            Event::FailureIgnored { step } => Some(format!(
                "{}: failure tolerated (on_failure: continue)",
                name(step)
            )),
            Event::ItemSucceeded { step, .. } => {
                items_done.entry(step.as_str()).or_default().0 += 1;
                None
            }
            // The step's undo says it as a whole; its items' undos are in the journal.
            Event::ItemRollbackStarted { .. } | Event::ItemRolledBack { .. } => None,
            Event::ItemFailed { step, index, error } => {
                let d = items_done.entry(step.as_str()).or_default();
                d.0 += 1;
                d.1 += 1;
                let n = item_failures.entry(step.as_str()).or_default();
                *n += 1;
                match *n {
                    n if n <= TIMELINE_ITEM_ERRORS => {
                        Some(format!("{}: item {index} FAILED: {error}", name(step)))
                    }
                    n if n == TIMELINE_ITEM_ERRORS + 1 => {
                        Some(format!("{}: more items failed (see the step)", name(step)))
                    }
                    _ => None,
                }
            }
            Event::ApprovalRequested { step } => {
                Some(format!("{} waiting for approval", name(step)))
            }
            Event::Approved { step, by } => Some(format!("{} approved by {by}", name(step))),
            Event::Rejected { step, by } => Some(format!("{} REJECTED by {by}", name(step))),
            Event::ServiceClosed => {
                Some("service closed to customers (maintenance mode on)".into())
            }
            Event::ServiceReopened => Some("service reopened (maintenance mode off)".into()),
            Event::RunPaused {
                reason,
                guard: Some(step),
            } => Some(format!(
                "run paused by the window guard before {}: {reason}",
                name(step)
            )),
            Event::RunPaused { reason, .. } => Some(format!("run paused: {reason}")),
            Event::RunResumed { decision, by } => Some(format!(
                "run resumed by {by} ({})",
                serde_json::to_value(decision)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )),
            Event::RollbackStarted { reason } => Some(format!("ROLLBACK started: {reason}")),
            Event::StepRolledBack { step, by_restore } => Some(match by_restore {
                Some(cp) => format!("{} undone by the restore of `{cp}`", name(step)),
                None => format!("{} undone", name(step)),
            }),
            Event::StepRollbackFailed { step, error } => {
                Some(format!("{} UNDO FAILED: {error}", name(step)))
            }
            Event::StatementCancelled { step, .. } => Some(format!(
                "{}: {}",
                name(step),
                crate::engine::terminal::cancelled(&r.event)
            )),
            Event::Published(u) => Some(format!("public update ({}): {}", u.status, u.body)),
            Event::RunCompleted => Some("run completed".into()),
            Event::RunRolledBack { left } => Some(crate::engine::terminal::rolled_back_words(left)),
            Event::RunFailed { reason } => Some(format!("RUN FAILED: {reason}")),
            Event::RunAborted { by, reason } => Some(format!("run aborted by {by}: {reason}")),
            Event::StepChecking { .. }
            | Event::ItemStarted { .. }
            | Event::StepRollbackStarted { .. } => None,
        };
        if let Some(text) = text {
            out.push(TimelineEntry {
                at: iso(r.at_ms),
                at_ms: r.at_ms,
                step: r.event.step().map(str::to_owned),
                text,
            });
        }
    }
    out
}

/// A step's undo as it stands at `at_ms`; `ended`: it ended then too (a restore's
/// outcome covers the steps it brought back).
fn undo_at(status: UndoStatus, restored_by: Option<&String>, at_ms: i64, ended: bool) -> Undo {
    Undo {
        status,
        restored_by: restored_by.cloned(),
        started_at: iso(at_ms),
        started_at_ms: at_ms,
        ended_at: ended.then(|| iso(at_ms)),
        ended_at_ms: ended.then_some(at_ms),
        duration_ms: ended.then_some(0),
        error: None,
    }
}

/// A rollback's line for a step, from the step's undo.
fn rollback_step(id: &str, title: String, u: &Undo) -> RollbackStep {
    RollbackStep {
        id: id.to_owned(),
        title,
        status: u.status,
        restored_by: u.restored_by.clone(),
        started_at: u.started_at.clone(),
        started_at_ms: u.started_at_ms,
        ended_at: u.ended_at.clone(),
        ended_at_ms: u.ended_at_ms,
        duration_ms: u.duration_ms,
        error: u.error.clone(),
    }
}
