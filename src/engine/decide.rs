//! What the engine does next: a pure function of the runbook, the run state and the time.
//!
//! Every run-policy choice is made here: retries and their backoff, waiting until a
//! retry is due, the window guard (pause, or roll back under `--guard strict`), an
//! approval's timeout, in-doubt steps, `max_failures` of a fan-out, and when the next
//! overrun update is due. The runner only carries the answers out.

use std::time::Duration;

use super::event::{Decision, Event};
use super::state::{ItemStatus, RunState, RunStatus, StepRun, StepStatus};
use super::timing::{self, Learned};
use super::undo;
use crate::runbook::{Kind, MaxFailures, OnFailure, OnTimeout, Runbook, Step};

/// What `decide` knows besides the runbook and the journal: the time, what earlier
/// runs took, and the run's id (for the commands a pause tells a person to type).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub now_ms: i64,
    pub learned: &'a Learned,
    pub run_id: &'a str,
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Check the preconditions of the step (index into `runbook.steps`) and run it.
    Start { step: usize, attempt: u32 },
    /// Nothing to do before `until_ms` (a retry's backoff): wait, then decide again.
    Sleep { until_ms: i64 },
    /// Wait for `runbook approve` / `reject` of this step, until `until_ms` (its
    /// `timeout`) if it has one; then decide again.
    AwaitApproval { step: usize, until_ms: Option<i64> },
    /// The approval's `timeout` has passed: `on_timeout` says what that means.
    ApprovalTimedOut { step: usize, on_timeout: OnTimeout },
    /// Schedule another attempt of a failed step.
    Retry {
        step: usize,
        next_attempt: u32,
        at_ms: i64,
    },
    /// The step cannot run: a step it requires did not succeed.
    Skip { step: usize, reason: String },
    /// Record that a failure is tolerated and go on.
    IgnoreFailure { step: usize },
    /// Stop for an operator; `guard`: the step the window guard stopped before.
    Pause {
        reason: String,
        guard: Option<String>,
    },
    /// A step started before a crash and never finished. When `rerun` is false (it is
    /// not idempotent), an operator must choose `--retry`, `--skip` or `--rollback`.
    InDoubt { step: usize, rerun: bool },
    /// Begin rolling back.
    StartRollback { reason: String },
    /// Undo one completed step with its `rollback` action.
    RollbackStep { step: usize },
    /// Restore the checkpoint (its `restore` action) instead of per-step undos.
    Restore { step: usize },
    /// The rollback is done; reopen the service before ending.
    Reopen,
    /// End the run.
    Finish(Outcome),
    /// Nothing to do until an operator acts (the run is paused).
    Wait,
    /// The run has ended.
    Done(RunStatus),
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed,
    /// Rolled back; `left`: the steps left as they were (they had no way back).
    RolledBack {
        left: Vec<String>,
    },
    Failed(String),
    Aborted(String),
}

/// Delay before attempt `next_attempt` (2 or more): `backoff`, doubling each time.
pub fn backoff_delay(backoff: Duration, next_attempt: u32) -> Duration {
    let doublings = next_attempt.saturating_sub(2).min(16);
    backoff.saturating_mul(1u32 << doublings)
}

/// Decides the next action at `facts.now_ms`.
pub fn decide(rb: &Runbook, state: &RunState, facts: &Facts) -> Next {
    match state.status {
        s if s.is_terminal() => return Next::Done(s),
        RunStatus::Scheduled => {
            return Next::Pause {
                reason: "the run has not started".into(),
                guard: None,
            };
        }
        RunStatus::Paused => return Next::Wait,
        RunStatus::RollingBack => return decide_rollback(rb, state),
        _ => {}
    }
    for &i in &rb.order {
        let step = &rb.steps[i];
        let run = state.step(&step.id);
        match run.status {
            StepStatus::Succeeded | StepStatus::Skipped => continue,
            StepStatus::Failed | StepStatus::TimedOut if run.failure_ignored => continue,
            StepStatus::Failed | StepStatus::TimedOut => return on_failure(step, i, run),
            StepStatus::Checking | StepStatus::Running if run.awaiting_approval => {
                return await_approval(step, i, run, facts.now_ms);
            }
            StepStatus::Checking | StepStatus::Running => {
                // In doubt: the journal says it started, not how it ended. Still checking
                // preconditions changes nothing, so that is as safe to redo as an
                // idempotent step; so is a fan-out whose every started item finished.
                let items_in_doubt = run.items.values().any(|s| *s == ItemStatus::Running);
                let rerun = step.idempotent
                    || run.status == StepStatus::Checking
                    || (step.for_each.is_some() && !items_in_doubt);
                return Next::InDoubt { step: i, rerun };
            }
            StepStatus::Pending => {
                if let Some(reason) = unmet_requirement(step, state) {
                    return Next::Skip { step: i, reason };
                }
                let attempt = run.attempts + 1;
                if attempt == 1
                    && let Some(stop) = window_guard(rb, state, step, facts)
                {
                    return stop;
                }
                if let Some(until_ms) = run.retry_at_ms.filter(|&at| at > facts.now_ms) {
                    return Next::Sleep { until_ms };
                }
                return Next::Start { step: i, attempt };
            }
            StepStatus::RollingBack | StepStatus::RolledBack | StepStatus::RollbackFailed => {
                // Only reachable if a rollback was interrupted by a retry decision.
                continue;
            }
        }
    }
    Next::Finish(Outcome::Completed)
}

/// An approval waits until its `timeout` (from when it was asked), then `on_timeout`.
fn await_approval(step: &Step, i: usize, run: &StepRun, now_ms: i64) -> Next {
    // A host step's approval between waves waits for a person (its `timeout` is the
    // step's own).
    let timeout = step.timeout.filter(|_| run.awaiting_wave.is_none());
    let until_ms = timeout.map(|t| {
        run.started_ms
            .unwrap_or(now_ms)
            .saturating_add(crate::duration::millis(t))
    });
    match until_ms {
        Some(at) if now_ms >= at => Next::ApprovalTimedOut {
            step: i,
            on_timeout: step.on_timeout,
        },
        _ => Next::AwaitApproval { step: i, until_ms },
    }
}

/// Before a step's first attempt: when the step and the rollback of what is done would
/// pass the window's end, pause for a person (or, with `--guard strict`, roll back now).
/// A step a person let go on after such a pause is not stopped again; `reopen` and
/// `announce` never are.
fn window_guard(rb: &Runbook, state: &RunState, step: &Step, facts: &Facts) -> Option<Next> {
    if matches!(step.kind, Kind::Reopen | Kind::Announce) || state.guard_accepted.contains(&step.id)
    {
        return None;
    }
    let window_end_ms = timing::window_end_ms(rb, state);
    let trip = timing::guard(rb, state, step, facts.learned, window_end_ms, facts.now_ms)?;
    let reason = trip.reason(rb.window.timezone);
    if state.guard_strict {
        return Some(Next::StartRollback {
            reason: format!("{reason} (--guard strict)"),
        });
    }
    Some(Next::Pause {
        reason: format!(
            "{reason}: `runbook resume {run}` to start it anyway, `runbook resume {run} --rollback` to roll back now",
            run = facts.run_id
        ),
        guard: Some(step.id.clone()),
    })
}

/// How many items of a fan-out of `total` may fail (`max_failures`) and the step still
/// succeed.
pub fn failures_allowed(step: &Step, total: usize) -> usize {
    match step.max_failures {
        MaxFailures::None => 0,
        MaxFailures::Count(n) => n as usize,
        MaxFailures::Percent(p) => ((p / 100.0) * total as f64).floor() as usize,
    }
}

/// A fan-out starts no more items once more than the allowed number failed.
pub fn fan_out_may_go_on(step: &Step, total: usize, failed: usize) -> bool {
    failed <= failures_allowed(step, total)
}

/// Why a fan-out of `total` items with `failed` failures fails, when over `max_failures`.
pub fn fan_out_failure(step: &Step, total: usize, failed: usize) -> Option<String> {
    let allowed = failures_allowed(step, total);
    (failed > allowed).then(|| format!("{failed} of {total} items failed (at most {allowed} may)"))
}

/// When the running `step` (with `items` fan-out items) is next due an overrun update,
/// after one at `last_ms`: once
/// it passes its estimate (learned, or `expected`) by `status_page.overrun.after`, then
/// every `status_page.overrun.every`. Only a step that says how long it should take is
/// announced as late (a learned figure can move the moment, not make a step without
/// `expected` late).
/// What a step's overrun is measured against: its estimate (learned, else `expected`),
/// for a step with `expected` (the others never run late).
pub fn overrun_estimate(step: &Step, items: Option<usize>, learned: &Learned) -> Option<i64> {
    step.expected?;
    Some(timing::estimate(step, items, learned).ms)
}

pub fn overrun_due(
    rb: &Runbook,
    state: &RunState,
    step: &Step,
    items: Option<usize>,
    learned: &Learned,
    last_ms: Option<i64>,
    now_ms: i64,
) -> Option<i64> {
    let est = overrun_estimate(step, items, learned)?;
    let sp = &rb.status_page;
    let margin = sp
        .overrun_after
        .of(Duration::from_millis(est.max(0) as u64));
    let started = state.step(&step.id).started_ms.unwrap_or(now_ms);
    Some(timing::overrun_due(
        started,
        est,
        crate::duration::millis(margin),
        crate::duration::millis(sp.overrun_every),
        last_ms,
    ))
}

fn unmet_requirement(step: &Step, state: &RunState) -> Option<String> {
    step.requires.iter().find_map(|r| {
        let req = state.step(r);
        match req.status {
            StepStatus::Succeeded => None,
            s => Some(format!(
                "required step `{r}` {}",
                s.as_str().replace('_', " ")
            )),
        }
    })
}

fn on_failure(step: &Step, i: usize, run: &StepRun) -> Next {
    let rejected = step.kind == Kind::Approve;
    if !rejected && run.attempts <= step.retries.max {
        let next_attempt = run.attempts + 1;
        let delay = backoff_delay(step.retries.backoff, next_attempt);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let at_ms = run.ended_ms.unwrap_or(0).saturating_add(delay_ms);
        return Next::Retry {
            step: i,
            next_attempt,
            at_ms,
        };
    }
    let why = run.error.clone().unwrap_or_else(|| "failed".into());
    let reason = format!("step `{}` failed: {why}", step.id);
    match step.on_failure {
        OnFailure::Rollback => Next::StartRollback { reason },
        OnFailure::Pause => Next::Pause {
            reason,
            guard: None,
        },
        OnFailure::Abort => Next::Finish(Outcome::Aborted(reason)),
        OnFailure::Continue => Next::IgnoreFailure { step: i },
    }
}

/// Rolling back: undo the completed steps after the most recent completed checkpoint,
/// most recent first, or restore the checkpoint; then reopen; then end.
fn decide_rollback(rb: &Runbook, state: &RunState) -> Next {
    if let Some((id, _)) = state
        .steps
        .iter()
        .find(|(_, s)| s.status == StepStatus::RollbackFailed)
    {
        let error = state.step(id).error.clone().unwrap_or_default();
        return Next::Finish(Outcome::Failed(format!(
            "rollback of step `{id}` failed: {error}"
        )));
    }
    // An undo that started and has no outcome (the runner died during it) is in doubt
    // like any step: run again by itself only when the step is idempotent.
    if let Some(&i) = rb
        .order
        .iter()
        .find(|&&i| state.step(&rb.steps[i].id).status == StepStatus::RollingBack)
    {
        // A fan-out's undo is journaled item by item: unless an item's undo has no
        // outcome, going on undoes only the items not undone yet.
        let run = state.step(&rb.steps[i].id);
        let item_in_doubt = run.items_undone.values().any(|done| !done);
        return Next::InDoubt {
            step: i,
            rerun: rb.steps[i].idempotent || (rb.steps[i].for_each.is_some() && !item_in_doubt),
        };
    }
    // Every step after the checkpoint that a restore does not bring back is undone by
    // its own rollback, most recent first; then the checkpoint's restore, if it has one.
    let order = &rb.order;
    let checkpoint = undo::checkpoint(rb, state);
    let cp = checkpoint.map(|c| &rb.steps[order[c]]);
    let from = checkpoint.map(|c| c + 1).unwrap_or(0);
    for &i in order[from..].iter().rev() {
        let step = &rb.steps[i];
        let run = state.step(&step.id);
        // (An undo under way was handled above, as in doubt.)
        if run.has_work_to_undo() && undo::how(cp, step, &state.vars) == undo::How::Rollback {
            return Next::RollbackStep { step: i };
        }
    }
    if let Some(c) = checkpoint
        && rb.steps[order[c]].restore.is_some()
        && matches!(
            state.step(&rb.steps[order[c]].id).status,
            StepStatus::Succeeded | StepStatus::RollingBack
        )
    {
        return Next::Restore { step: order[c] };
    }
    finish_rollback(rb, state)
}

fn finish_rollback(rb: &Runbook, state: &RunState) -> Next {
    if state.closed {
        Next::Reopen
    } else {
        Next::Finish(Outcome::RolledBack {
            left: undo::left_as_is(rb, state),
        })
    }
}

/// Why [`resume`] refuses a person's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The run needs a person's decision, or another one, first (not bad input: exit 4).
    NeedsAPerson(String),
    /// The decision has nothing to act on (exit 1).
    Invalid(String),
}

/// The step a resume decides about: the one in doubt, or else the failed step the run
/// paused on (`pending` is what [`decide`] says now).
fn subject_of(rb: &Runbook, state: &RunState, pending: &Next) -> Option<usize> {
    match pending {
        Next::InDoubt { step, .. } => Some(*step),
        Next::Wait => rb.order.iter().copied().find(|&i| {
            let s = state.step(&rb.steps[i].id);
            matches!(s.status, StepStatus::Failed | StepStatus::TimedOut) && !s.failure_ignored
        }),
        _ => None,
    }
}

/// The step `runbook resume` would decide about now, if any.
pub fn resume_subject(rb: &Runbook, state: &RunState, facts: &Facts) -> Option<usize> {
    subject_of(rb, state, &decide(rb, state, facts))
}

/// The resume decision matrix: what `runbook resume RUN` (with `decision`: `--retry`,
/// `--skip`, `--rollback`, or none) records in `state` by `by` before the run goes on,
/// or why it is refused. No events: the run simply goes on.
///
/// The decision is about the step in doubt, or else the failed step the run paused on.
/// A step in doubt that is safe to repeat runs again by itself; one that is not needs a
/// decision; an undo in doubt can only be retried (or the run aborted).
pub fn resume(
    rb: &Runbook,
    state: &RunState,
    decision: Option<Decision>,
    facts: &Facts,
    by: &str,
) -> Result<Vec<Event>, Refusal> {
    let run_id = facts.run_id;
    let pending = decide(rb, state, facts);
    let subject = subject_of(rb, state, &pending);
    let waiting = matches!(pending, Next::Wait);
    let resumed = |decision| Event::RunResumed {
        decision,
        by: by.to_owned(),
        reason: None,
        only: Vec::new(),
    };
    let rolling_back = state.status == RunStatus::RollingBack;
    Ok(match (decision, subject) {
        (None, Some(_)) if matches!(pending, Next::InDoubt { rerun: true, .. }) => vec![],
        (d, Some(i)) if rolling_back && d != Some(Decision::Retry) => {
            return Err(Refusal::NeedsAPerson(format!(
                "the run is rolling back and the undo of step `{}` started before the runner stopped: it may or may not have finished. `runbook resume {run_id} --retry` runs it again; `runbook abort {run_id}` ends the run for a person to finish by hand",
                rb.steps[i].id
            )));
        }
        (None, Some(i)) => {
            let why = match pending {
                Next::InDoubt { .. } => {
                    "started before the runner stopped and may or may not have finished"
                }
                _ => "failed and the run paused",
            };
            return Err(Refusal::NeedsAPerson(format!(
                "step `{}` {why}; choose `runbook resume {run_id} --retry`, `--skip` or `--rollback`",
                rb.steps[i].id
            )));
        }
        (None, None) if waiting => vec![resumed(Decision::Continue)],
        (None, None) => vec![],
        (Some(Decision::Skip), None) => {
            return Err(Refusal::Invalid(
                "there is no failed or in-doubt step to skip".into(),
            ));
        }
        (Some(Decision::Skip), Some(i)) => vec![
            resumed(Decision::Skip),
            Event::StepSkipped {
                step: rb.steps[i].id.clone(),
                reason: format!("skipped by {by}"),
            },
        ],
        (Some(Decision::Rollback), _) if rolling_back => vec![],
        (Some(Decision::Rollback), _) => vec![Event::RollbackStarted {
            reason: format!("rollback chosen by {by}"),
        }],
        // Nothing failed or in doubt and no pause: there is nothing to retry, the run
        // simply goes on.
        (Some(Decision::Retry), None) if !waiting => vec![],
        (Some(d), _) => vec![resumed(d)],
    })
}
