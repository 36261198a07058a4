//! The fold of the events about one step: each is checked against the step's state and
//! the run's before anything changes. A transition gives the run's new status when the
//! step's event changes it, or refuses with the step's status.

use serde_json::Value;

use super::{ItemStatus, RunStatus as R, StepRun, StepStatus as S};
use crate::engine::event::Event as E;

/// What a legal step event does to the run: its new status, if it changes.
type Transition = Result<Option<R>, S>;

/// Folds `event` (about `step`) into `step`, the run being `run`.
pub(super) fn apply(step: &mut StepRun, run: R, event: &E, at_ms: i64) -> Transition {
    match event {
        // A report of the running work; one that comes late (the step has ended) is kept
        // as a fact and changes nothing.
        E::StepProgress {
            done,
            total,
            eta_ms,
            what,
            ..
        } => {
            if matches!(step.status, S::Running) {
                step.progress = Some(super::Progress {
                    done: *done,
                    total: *total,
                    eta_ms: *eta_ms,
                    what: what.clone(),
                    at_ms,
                });
            }
            Ok(None)
        }
        E::StepChecking { .. } | E::PreconditionFailed { .. } | E::StepStarted { .. } => {
            attempt_start(step, run, event, at_ms)
        }
        E::StepSucceeded { .. } | E::StepFailed { .. } | E::StepTimedOut { .. } => {
            attempt_outcome(step, run, event, at_ms)
        }
        E::RetryScheduled { .. } | E::StepSkipped { .. } | E::FailureIgnored { .. } => {
            after_attempt(step, run, event, at_ms)
        }
        E::ItemStarted { .. }
        | E::ItemSucceeded { .. }
        | E::ItemFailed { .. }
        | E::ItemRollbackStarted { .. }
        | E::ItemRolledBack { .. } => item(step, run, event).map(|()| None),
        E::ApprovalRequested { .. } | E::Approved { .. } | E::Rejected { .. } => {
            approval(step, run, event, at_ms)
        }
        E::StepRollbackStarted { .. } | E::StepRolledBack { .. } | E::StepRollbackFailed { .. } => {
            undo(step, run, event).map(|()| None)
        }
        _ => unreachable!("every step event is handled above"),
    }
}

/// The run does forward work: running or verifying.
fn active(run: R) -> bool {
    matches!(run, R::Running | R::Verifying)
}

/// A step's own work goes on while the run runs (or is paused with it in doubt); never
/// while rolling back.
fn working(run: R) -> bool {
    active(run) || run == R::Paused
}

/// An attempt begins: its preconditions, then its action.
fn attempt_start(step: &mut StepRun, run: R, event: &E, at_ms: i64) -> Transition {
    step.progress = None;
    match event {
        E::StepChecking { attempt, .. } => {
            if !active(run) || step.status != S::Pending || *attempt != step.attempts + 1 {
                return Err(step.status);
            }
            step.status = S::Checking;
            step.attempts = *attempt;
            step.started_ms.get_or_insert(at_ms);
            step.error = None;
            step.retry_at_ms = None;
            Ok(None)
        }
        _ if !active(run) || step.status != S::Checking => Err(step.status),
        E::PreconditionFailed { message, .. } => {
            step.status = S::Failed;
            step.error = Some(message.clone());
            step.ended_ms = Some(at_ms);
            Ok(None)
        }
        E::StepStarted { verifying, .. } => {
            step.status = S::Running;
            step.acted = true;
            Ok(Some(if *verifying { R::Verifying } else { R::Running }))
        }
        _ => unreachable!("only the start of an attempt comes here"),
    }
}

/// An attempt's action ends: it succeeded, failed, or ran out of time.
fn attempt_outcome(step: &mut StepRun, run: R, event: &E, at_ms: i64) -> Transition {
    match event {
        E::StepSucceeded { outputs, .. } => {
            if !working(run) || step.status != S::Running || step.awaiting_approval {
                return Err(step.status);
            }
            step.status = S::Succeeded;
            step.outputs.extend(outputs.clone());
            step.ended_ms = Some(at_ms);
            Ok(None)
        }
        E::StepFailed { error, .. } => {
            if !working(run)
                || !matches!(step.status, S::Running | S::Checking)
                || step.awaiting_approval
            {
                return Err(step.status);
            }
            step.status = S::Failed;
            step.error = Some(error.clone());
            step.ended_ms = Some(at_ms);
            Ok(None)
        }
        E::StepTimedOut { .. } => {
            let waiting = step.awaiting_approval;
            if step.status != S::Running
                || (waiting && run != R::AwaitingApproval)
                || (!waiting && !working(run))
            {
                return Err(step.status);
            }
            step.status = S::TimedOut;
            step.error = Some("timed out".into());
            step.ended_ms = Some(at_ms);
            if waiting {
                step.awaiting_approval = false;
                return Ok(Some(R::Running));
            }
            Ok(None)
        }
        _ => unreachable!("only an attempt's outcome comes here"),
    }
}

/// After an attempt: another one, a skip, or a failure tolerated.
fn after_attempt(step: &mut StepRun, run: R, event: &E, at_ms: i64) -> Transition {
    match event {
        E::RetryScheduled {
            next_attempt,
            at_ms: when,
            ..
        } => {
            if !active(run)
                || !matches!(step.status, S::Failed | S::TimedOut)
                || step.failure_ignored
                || *next_attempt != step.attempts + 1
            {
                return Err(step.status);
            }
            step.status = S::Pending;
            step.retry_at_ms = Some(*when);
            Ok(None)
        }
        E::StepSkipped { reason, .. } => {
            if !matches!(
                step.status,
                S::Pending | S::Checking | S::Running | S::Failed | S::TimedOut
            ) || step.failure_ignored
                || run == R::RollingBack
            {
                return Err(step.status);
            }
            step.status = S::Skipped;
            step.awaiting_approval = false;
            step.error = Some(reason.clone());
            step.ended_ms = Some(at_ms);
            Ok((run == R::AwaitingApproval).then_some(R::Running))
        }
        E::FailureIgnored { .. } => {
            if !active(run)
                || !matches!(step.status, S::Failed | S::TimedOut)
                || step.failure_ignored
            {
                return Err(step.status);
            }
            step.failure_ignored = true;
            Ok(None)
        }
        _ => unreachable!("only what follows an attempt comes here"),
    }
}

/// One fan-out item: its work, then (in a rollback) its undo.
fn item(step: &mut StepRun, run: R, event: &E) -> Result<(), S> {
    let rolling = run == R::RollingBack;
    match event {
        E::ItemStarted { index, .. } => {
            if !working(run)
                || step.status != S::Running
                || step.awaiting_approval
                || step.items.contains_key(index)
            {
                return Err(step.status);
            }
            step.items.insert(*index, ItemStatus::Running);
        }
        E::ItemSucceeded { index, .. } | E::ItemFailed { index, .. } => {
            if !working(run)
                || step.status != S::Running
                || step.items.get(index) != Some(&ItemStatus::Running)
            {
                return Err(step.status);
            }
            let outcome = match event {
                E::ItemSucceeded { outputs, .. } => {
                    if !outputs.is_empty() {
                        step.item_outputs.insert(*index, outputs.clone());
                    }
                    step.item_errors.remove(index);
                    step.finished.push(*index);
                    ItemStatus::Succeeded
                }
                E::ItemFailed { error, .. } => {
                    step.item_errors.insert(*index, error.clone());
                    ItemStatus::Failed
                }
                _ => unreachable!("an item's outcome"),
            };
            step.items.insert(*index, outcome);
        }
        E::ItemRollbackStarted { index, .. } => {
            if !rolling
                || step.status != S::RollingBack
                || step.items.get(index) != Some(&ItemStatus::Succeeded)
                || step.items_undone.contains_key(index)
            {
                return Err(step.status);
            }
            step.items_undone.insert(*index, false);
        }
        E::ItemRolledBack { index, .. } => {
            if !rolling
                || step.status != S::RollingBack
                || step.items_undone.get(index) != Some(&false)
            {
                return Err(step.status);
            }
            step.items_undone.insert(*index, true);
        }
        _ => unreachable!("only item events come here"),
    }
    Ok(())
}

/// An `approve` step waits for a person, who approves or rejects it.
fn approval(step: &mut StepRun, run: R, event: &E, at_ms: i64) -> Transition {
    match event {
        E::ApprovalRequested { wave, .. } => {
            if !active(run) || step.status != S::Running || step.awaiting_approval {
                return Err(step.status);
            }
            step.awaiting_approval = true;
            step.awaiting_wave = *wave;
            Ok(Some(R::AwaitingApproval))
        }
        E::Approved { by, .. } | E::Rejected { by, .. } => {
            if run != R::AwaitingApproval || step.status != S::Running || !step.awaiting_approval {
                return Err(step.status);
            }
            // Between waves: the step goes on (or its fan-out fails it, refused).
            if let Some(wave) = step.awaiting_wave.take() {
                step.awaiting_approval = false;
                step.decided_by = Some(by.clone());
                if matches!(event, E::Approved { .. }) {
                    step.waves_approved.insert(wave);
                } else {
                    step.wave_rejected = Some((wave, by.clone()));
                }
                return Ok(Some(R::Running));
            }
            let approved = matches!(event, E::Approved { .. });
            step.awaiting_approval = false;
            step.decided_by = Some(by.clone());
            step.ended_ms = Some(at_ms);
            step.outputs.insert("by".into(), Value::String(by.clone()));
            step.outputs.insert(
                "decision".into(),
                Value::String(if approved { "approved" } else { "rejected" }.into()),
            );
            if approved {
                step.status = S::Succeeded;
            } else {
                step.status = S::Failed;
                step.error = Some(format!("rejected by {by}"));
            }
            Ok(Some(R::Running))
        }
        _ => unreachable!("only approval events come here"),
    }
}

/// Undoing the step in a rollback: by its own rollback, or by a checkpoint's restore.
fn undo(step: &mut StepRun, run: R, event: &E) -> Result<(), S> {
    let rolling = run == R::RollingBack;
    match event {
        E::StepRollbackStarted { .. } => {
            if !rolling || !step.has_work_to_undo() {
                return Err(step.status);
            }
            step.status = S::RollingBack;
        }
        // Brought back by a checkpoint's restore, with the restore's outcome.
        E::StepRolledBack {
            by_restore: Some(_),
            ..
        } => {
            if !rolling || !step.has_work_to_undo() {
                return Err(step.status);
            }
            step.status = S::RolledBack;
        }
        E::StepRolledBack { .. } | E::StepRollbackFailed { .. } => {
            // Not undone while an item's undo has no outcome.
            let item_unfinished = step.items_undone.values().any(|done| !done);
            if !rolling
                || step.status != S::RollingBack
                || (item_unfinished && matches!(event, E::StepRolledBack { .. }))
            {
                return Err(step.status);
            }
            if let E::StepRollbackFailed { error, .. } = event {
                step.status = S::RollbackFailed;
                step.error = Some(error.clone());
            } else {
                step.status = S::RolledBack;
            }
        }
        _ => unreachable!("only undo events come here"),
    }
    Ok(())
}
