//! The report as a projection of the journal's two folds, the run state and its history
//! ([`crate::engine::history::replay`]): this module puts them in the report's words.
//! The derived figures are in `figures`, the postmortem in `postmortem`.

use std::collections::HashMap;

use super::figures::*;
use super::model::*;
use super::postmortem::postmortem;
use super::{ReportError, iso};
use crate::engine::event::{PublicPlan, Recorded};
use crate::engine::history::{
    ApprovalRecord, Failure, History, Published, RollbackEnd, RollbackRecord, StepHistory,
    UndoRecord, UndoState, Verdict,
};
use crate::engine::state::{ItemStatus, RunState, StepRun};

/// Failed fan-out items listed per step (the rest are counted).
const ITEM_ERRORS: usize = 20;

/// Builds the whole report. `now_ms` is the report's time ("so far" for a run that
/// goes on).
pub fn build(run_id: &str, events: &[Recorded], now_ms: i64) -> Result<Report, ReportError> {
    let (state, history) = fold(run_id, events)?;
    let plan = plan_of(events);
    let out = outcome(state.status);
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
    let steps = steps(
        &planned,
        &state,
        &history,
        window.planned_start_ms,
        out.finished(),
    );
    let mut report = Report {
        schema_version: SchemaVersion,
        generated_at: iso(now_ms),
        generated_at_ms: now_ms,
        run: run_info(run_id, plan, &state, &history, events.len(), now_ms),
        service: service(&history, now_ms),
        window,
        steps,
        rollbacks: history
            .rollbacks
            .iter()
            .map(|rb| rollback(rb, &history, &title))
            .collect(),
        approvals: history
            .approvals
            .iter()
            .map(|a| approval(a, title(&a.step), now_ms))
            .collect(),
        resumes: history
            .resumes
            .iter()
            .map(|r| crate::report::model::Resume {
                at: iso(r.at_ms),
                at_ms: r.at_ms,
                decision: serde_json::to_value(r.decision)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                by: r.by.clone(),
                reason: r.reason.clone(),
            })
            .collect(),
        public_updates: history.updates.iter().map(update).collect(),
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

/// Who ran what, where, when, and how it ended.
fn run_info(
    run_id: &str,
    plan: Option<&PublicPlan>,
    state: &RunState,
    history: &History,
    events: usize,
    now_ms: i64,
) -> RunInfo {
    let out = outcome(state.status);
    let finished = out.finished();
    let started = state.started_ms.unwrap_or(now_ms);
    let ended = if finished { state.ended_ms } else { None };
    RunInfo {
        id: run_id.to_owned(),
        runbook: state.runbook.clone(),
        title: state.title.clone(),
        public_title: plan.and_then(|p| p.title.clone()),
        summary: plan.and_then(|p| p.summary.clone()),
        maintenance: plan.and_then(|p| p.maintenance.clone()),
        rehearsal: state.rehearsal,
        components: plan.map(|p| p.components.clone()).unwrap_or_default(),
        operator: state.operator.clone(),
        host: state.host.clone(),
        file: state.file.clone(),
        file_sha256: state.file_sha256.clone(),
        timezone: plan.map_or_else(|| "UTC".to_owned(), |p| p.timezone.clone()),
        outcome: out,
        finished,
        reason: state.reason.clone(),
        aborted_by: history.aborted_by.clone(),
        started_at: iso(started),
        started_at_ms: started,
        ended_at: ended.map(iso),
        ended_at_ms: ended,
        duration_ms: (ended.unwrap_or(now_ms) - started).max(0),
        events,
    }
}

/// Every planned step (then any other the journal names), each laid end to end from
/// the window's planned start.
fn steps(
    planned: &[PlannedStep],
    state: &RunState,
    history: &History,
    planned_start_ms: i64,
    finished: bool,
) -> Vec<StepReport> {
    let mut cursor = planned_start_ms;
    planned
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let planned_start = cursor;
            cursor += p.expected_ms.unwrap_or(0) as i64;
            step_report(
                i + 1,
                p,
                state,
                history.step(&p.id),
                planned_start,
                finished,
            )
        })
        .collect()
}

/// One step's line of the report.
fn step_report(
    position: usize,
    p: &PlannedStep,
    state: &RunState,
    h: &StepHistory,
    planned_start: i64,
    finished: bool,
) -> StepReport {
    let run = state.step(&p.id);
    let planned_end = planned_start + p.expected_ms.unwrap_or(0) as i64;
    let status = step_state(run, finished);
    let actual_start = run.started_ms;
    // The step's own outcome; a step the run's end stopped ends with the run.
    let actual_end = match status {
        StepState::Pending | StepState::NotRun => None,
        StepState::Checking | StepState::Running | StepState::AwaitingApproval => None,
        _ => h.outcome_ms.or(run.ended_ms),
    };
    let duration = actual_start.zip(actual_end).map(|(s, e)| (e - s).max(0));
    // Against what the runner expected when it started it (learned, else `expected`),
    // as the page's overrun updates were.
    let against = h.estimate_ms.or(p.expected_ms.map(|x| x as i64));
    let overrun = duration
        .zip(against)
        .map(|(d, x)| d - x)
        // A few milliseconds over is not an overrun worth a manager's eye (the status
        // page does not call it one either).
        .filter(|o| *o >= 1000);
    let items = (!run.items.is_empty()).then(|| {
        let count = |s: ItemStatus| run.items.values().filter(|x| **x == s).count();
        Items {
            total: run.items.len(),
            succeeded: count(ItemStatus::Succeeded),
            failed: count(ItemStatus::Failed),
            running: count(ItemStatus::Running),
            rows: item_rows(&p.kind, run, h),
        }
    });
    let (errors, errors_omitted) = errors(h);
    let skipped = status == StepState::Skipped;
    StepReport {
        position,
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
        estimate_ms: h.estimate_ms,
        overrun_ms: overrun,
        attempts: run.attempts,
        outputs: outputs_worth_reading(&p.kind, &run.outputs),
        items,
        errors,
        errors_omitted,
        error: if skipped { None } else { run.error.clone() },
        skip_reason: if skipped {
            h.skip_reason.clone().or_else(|| run.error.clone())
        } else {
            None
        },
        undo: h.undo.as_ref().map(undo),
        log: None,
    }
}

/// Each item of a fan-out: its name, outcome, timing and outputs worth reading.
fn item_rows(kind: &str, run: &StepRun, h: &StepHistory) -> Vec<ItemRow> {
    run.items
        .iter()
        .map(|(&index, status)| {
            let times = h.item_times.get(&index);
            let (started, ended) = (times.map(|t| t.0), times.and_then(|t| t.1));
            let failed = *status == ItemStatus::Failed;
            ItemRow {
                index,
                name: h.item_names.get(&index).cloned(),
                status: match status {
                    ItemStatus::Running => "running",
                    ItemStatus::Succeeded => "succeeded",
                    ItemStatus::Failed => "failed",
                }
                .into(),
                started_ms: started,
                ended_ms: ended,
                duration_ms: started.zip(ended).map(|(s, e)| (e - s).max(0)),
                outputs: run
                    .item_outputs
                    .get(&index)
                    .map(|o| outputs_worth_reading(kind, o))
                    .unwrap_or_default(),
                error: failed
                    .then(|| run.item_errors.get(&index).cloned())
                    .flatten(),
                undone: run.items_undone.get(&index) == Some(&true),
            }
        })
        .collect()
}

/// A step's errors, the failed fan-out items past the first [`ITEM_ERRORS`] counted
/// instead of listed.
fn errors(h: &StepHistory) -> (Vec<AttemptError>, usize) {
    let mut listed = Vec::new();
    let (mut items, mut omitted) = (0, 0);
    for e in &h.errors {
        if e.kind == Failure::ItemFailed {
            if items >= ITEM_ERRORS {
                omitted += 1;
                continue;
            }
            items += 1;
        }
        listed.push(AttemptError {
            at: iso(e.at_ms),
            at_ms: e.at_ms,
            attempt: e.attempt,
            item: e.item,
            item_name: e.item_name.clone(),
            kind: match e.kind {
                Failure::PreconditionFailed => ErrorKind::PreconditionFailed,
                Failure::Failed => ErrorKind::Failed,
                Failure::TimedOut => ErrorKind::TimedOut,
                Failure::Rejected => ErrorKind::Rejected,
                Failure::ItemFailed => ErrorKind::ItemFailed,
            },
            error: e.error.clone(),
        });
    }
    (listed, omitted)
}

/// A step's undo in the report's words.
fn undo(u: &UndoRecord) -> Undo {
    let (status, restored_by, error) = match &u.state {
        UndoState::Undoing => (UndoStatus::Undoing, None, None),
        UndoState::Undone => (UndoStatus::Undone, None, None),
        UndoState::Restored(cp) => (UndoStatus::Restored, Some(cp.clone()), None),
        UndoState::Left => (UndoStatus::Left, None, None),
        UndoState::Failed(e) => (UndoStatus::UndoFailed, None, Some(e.clone())),
    };
    Undo {
        status,
        restored_by,
        started_at: iso(u.started_ms),
        started_at_ms: u.started_ms,
        ended_at: u.ended_ms.map(iso),
        ended_at_ms: u.ended_ms,
        duration_ms: u.ended_ms.map(|e| e - u.started_ms),
        error,
    }
}

/// A rollback; each of its steps with the outcome of that step's undo.
fn rollback(rb: &RollbackRecord, history: &History, title: &dyn Fn(&str) -> String) -> Rollback {
    let steps = rb
        .steps
        .iter()
        .map(|(id, joined_ms)| {
            let u = history.step(id).undo.as_ref().map(undo).unwrap_or_else(|| {
                undo(&UndoRecord {
                    state: UndoState::Undoing,
                    started_ms: *joined_ms,
                    ended_ms: None,
                })
            });
            RollbackStep {
                id: id.clone(),
                title: title(id),
                status: u.status,
                restored_by: u.restored_by,
                started_at: iso(*joined_ms),
                started_at_ms: *joined_ms,
                ended_at: u.ended_at,
                ended_at_ms: u.ended_at_ms,
                duration_ms: u.duration_ms,
                error: u.error,
            }
        })
        .collect();
    Rollback {
        started_at: iso(rb.started_ms),
        started_at_ms: rb.started_ms,
        reason: rb.reason.clone(),
        ended_at: rb.ended_ms.map(iso),
        ended_at_ms: rb.ended_ms,
        duration_ms: rb.ended_ms.map(|e| e - rb.started_ms),
        outcome: match rb.end {
            RollbackEnd::InProgress => RollbackOutcome::InProgress,
            RollbackEnd::RolledBack => RollbackOutcome::RolledBack,
            RollbackEnd::Failed => RollbackOutcome::Failed,
            RollbackEnd::Aborted => RollbackOutcome::Aborted,
        },
        steps,
        left: rb.left.clone(),
    }
}

/// A wait for a person, to its decision (or to `now_ms`).
fn approval(a: &ApprovalRecord, title: String, now_ms: i64) -> Approval {
    let (decision, by) = match &a.verdict {
        Verdict::Waiting => (ApprovalDecision::Waiting, None),
        Verdict::Approved(by) => (ApprovalDecision::Approved, Some(by.clone())),
        Verdict::Rejected(by) => (ApprovalDecision::Rejected, Some(by.clone())),
        Verdict::TimedOut => (ApprovalDecision::TimedOut, None),
        Verdict::Skipped => (ApprovalDecision::Skipped, None),
        Verdict::Cancelled => (ApprovalDecision::Cancelled, None),
    };
    Approval {
        step: a.step.clone(),
        title,
        decision,
        by,
        comment: a.comment.clone(),
        requested_at: iso(a.requested_ms),
        requested_at_ms: a.requested_ms,
        decided_at: a.decided_ms.map(iso),
        decided_at_ms: a.decided_ms,
        waited_ms: (a.decided_ms.unwrap_or(now_ms) - a.requested_ms).max(0),
    }
}

/// A public update as the report lists it.
fn update(p: &Published) -> Update {
    let u = &p.update;
    Update {
        at: iso(p.at_ms),
        at_ms: p.at_ms,
        kind: u.kind.clone(),
        status: u.status.clone(),
        body: u.body.clone(),
        step: u.step.clone(),
        eta: u.eta_ms.map(iso),
        eta_ms: u.eta_ms,
        by: u.by.clone(),
        incident: u.incident,
    }
}
