//! What a run's journal says happened, folded once for every reader: the errors and
//! outcome times of each step, its undo, the rollbacks and approvals, the service's
//! closures, the public updates, and the step under way. [`RunState`] (state.rs) is the
//! state machine that decides what may happen next; [`History`] keeps what did happen.
//! The post-run report, the status page and the terminal's live line are projections
//! of these two folds, never readings of the events of their own.
//!
//! Unlike [`RunState`], [`History::apply`] never refuses an event: the status page shows
//! whatever a journal holds. [`replay`] folds both at once and proves the journal legal.

use std::collections::HashMap;

use super::event::{Event, PublicUpdate, Recorded};
use super::state::{Illegal, RunState};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Completed,
    RolledBack,
    Failed,
    Aborted,
}

/// What kind of failure an attempt error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    PreconditionFailed,
    Failed,
    TimedOut,
    Rejected,
    ItemFailed,
}

/// One failure of a step, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    pub at_ms: i64,
    pub attempt: Option<u32>,
    pub item: Option<usize>,
    /// The item's name, for an item's failure (when the journal has it).
    pub item_name: Option<String>,
    pub kind: Failure,
    pub error: String,
}

/// Where a step's undo is.
#[derive(Debug, Clone, PartialEq)]
pub enum UndoState {
    Undoing,
    Undone,
    /// Brought back by the restore of this checkpoint.
    Restored(String),
    /// Had no way back: left as it was.
    Left,
    Failed(String),
}

/// A step's undo: since when, and until when once it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoRecord {
    pub state: UndoState,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
}

/// What the journal says about one step, beyond its state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepHistory {
    /// Every failure, in order (fan-out items' included).
    pub errors: Vec<StepError>,
    /// The last outcome (succeeded, failed, timed out, skipped, decided).
    pub outcome_ms: Option<i64>,
    pub skip_reason: Option<String>,
    pub undo: Option<UndoRecord>,
    /// Fan-out items that ended, over every attempt, and how many of them failed.
    pub items_ended: usize,
    pub items_failed: usize,
    /// The same, in the attempt under way (or the last one).
    pub attempt_items_ended: usize,
    pub attempt_items_failed: usize,
    /// When each fan-out item last started and (if it has) ended, by index.
    pub item_times: std::collections::BTreeMap<usize, (i64, Option<i64>)>,
    /// What the runner measured the step's overrun against (its estimate when it
    /// started), when the journal says.
    pub estimate_ms: Option<i64>,
    /// Fan-out items' names, by index (journals written before items had names have
    /// none). Here, not in the run's state: the engine decides nothing by them, and the
    /// state is copied at every commit.
    pub item_names: std::collections::BTreeMap<usize, String>,
}

/// How a rollback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackEnd {
    InProgress,
    RolledBack,
    Failed,
    Aborted,
}

/// One rollback of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackRecord {
    pub started_ms: i64,
    pub reason: String,
    pub ended_ms: Option<i64>,
    pub end: RollbackEnd,
    /// The steps it went back over, in order, each with when it joined the rollback
    /// (its undo started, its restore ended, or it was left); their undo is the step's.
    pub steps: Vec<(String, i64)>,
    /// Steps left as they were.
    pub left: Vec<String>,
}

/// What became of a request for approval.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Waiting,
    Approved(String),
    Rejected(String),
    TimedOut,
    Skipped,
    /// The run rolled back or ended while it waited.
    Cancelled,
}

/// One request for approval.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    pub step: String,
    pub verdict: Verdict,
    /// What the person said with their decision.
    pub comment: Option<String>,
    pub requested_ms: i64,
    pub decided_ms: Option<i64>,
}

/// A person's decision to resume a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeRecord {
    pub at_ms: i64,
    pub decision: crate::engine::event::Decision,
    pub by: String,
    pub reason: Option<String>,
}

/// A closure of the service, to its reopening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closure {
    pub closed_ms: i64,
    pub reopened_ms: Option<i64>,
}

/// A public update and where it is in the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub seq: i64,
    pub at_ms: i64,
    pub update: PublicUpdate,
}

/// What one event changed, in the terms the projections read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change<'a> {
    /// Nothing a projection shows by itself.
    Other,
    /// A step's action started (the step under way).
    StepStarted(&'a str),
    /// The running step's work reported how far it has come: `done` of about `total`.
    StepProgress {
        step: &'a str,
        done: u64,
        total: Option<u64>,
        eta_ms: Option<i64>,
    },
    ServiceClosed,
    ServiceReopened,
    RollbackStarted,
    Ended(End),
    /// A public update: the last of [`History::updates`].
    Published(&'a PublicUpdate),
}

/// A run's journal, folded: see the module's doc.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub steps: HashMap<String, StepHistory>,
    pub rollbacks: Vec<RollbackRecord>,
    pub approvals: Vec<ApprovalRecord>,
    /// Every `runbook resume` decision: who, what and why.
    pub resumes: Vec<ResumeRecord>,
    pub closures: Vec<Closure>,
    pub updates: Vec<Published>,
    /// The projected end, from the latest update that gave one.
    pub eta_ms: Option<i64>,
    /// The step whose action started last and has no outcome yet.
    pub current: Option<String>,
    pub aborted_by: Option<String>,
    pub end: Option<(i64, End)>,
}

/// Both folds of a journal in one pass: the run state, which proves every event legal,
/// and the history.
pub fn replay(events: &[Recorded]) -> Result<(RunState, History), Illegal> {
    let mut state = RunState::default();
    let mut history = History::default();
    for r in events {
        state.apply(&r.event, r.at_ms)?;
        history.apply(r);
    }
    Ok((state, history))
}

impl History {
    /// The history of a journal (never refused).
    pub fn of(events: &[Recorded]) -> History {
        let mut h = History::default();
        for r in events {
            h.apply(r);
        }
        h
    }

    /// A step's history (empty for a step never mentioned).
    pub fn step(&self, id: &str) -> &StepHistory {
        static EMPTY: std::sync::LazyLock<StepHistory> =
            std::sync::LazyLock::new(StepHistory::default);
        self.steps.get(id).unwrap_or(&EMPTY)
    }

    /// The service is closed now (its last closure has no reopening).
    pub fn closed(&self) -> bool {
        self.closures
            .last()
            .is_some_and(|c| c.reopened_ms.is_none())
    }

    /// Folds one more event, and says what it changed.
    pub fn apply<'a>(&mut self, r: &'a Recorded) -> Change<'a> {
        let at = r.at_ms;
        if let Some(step) = r.event.step() {
            self.apply_step(step, &r.event, at);
        }
        self.apply_rollback(&r.event, at);
        self.apply_approval(&r.event, at);
        match &r.event {
            Event::StepStarted { step, .. } => Change::StepStarted(step),
            Event::StepProgress {
                step,
                done,
                total,
                eta_ms,
                ..
            } => Change::StepProgress {
                step,
                done: *done,
                total: *total,
                eta_ms: *eta_ms,
            },
            Event::ServiceClosed => {
                self.closures.push(Closure {
                    closed_ms: at,
                    reopened_ms: None,
                });
                Change::ServiceClosed
            }
            Event::ServiceReopened => {
                if let Some(open) = self.closures.last_mut().filter(|c| c.reopened_ms.is_none()) {
                    open.reopened_ms = Some(at);
                }
                Change::ServiceReopened
            }
            Event::RollbackStarted { .. } => Change::RollbackStarted,
            Event::RunCompleted => self.ended(at, End::Completed),
            Event::RunRolledBack { .. } => self.ended(at, End::RolledBack),
            Event::RunFailed { .. } => self.ended(at, End::Failed),
            Event::RunAborted { by, .. } => {
                self.aborted_by = Some(by.clone());
                self.ended(at, End::Aborted)
            }
            Event::Published(u) => {
                self.eta_ms = u.eta_ms.or(self.eta_ms);
                self.updates.push(Published {
                    seq: r.seq,
                    at_ms: at,
                    update: u.clone(),
                });
                Change::Published(u)
            }
            _ => Change::Other,
        }
    }

    fn ended(&mut self, at_ms: i64, end: End) -> Change<'static> {
        self.end = Some((at_ms, end));
        Change::Ended(end)
    }

    /// A step's errors, outcome, items, undo, and whether it is the one under way.
    fn apply_step(&mut self, step: &str, e: &Event, at: i64) {
        match e {
            Event::StepStarted { .. } => self.current = Some(step.to_owned()),
            Event::StepSucceeded { .. }
            | Event::StepFailed { .. }
            | Event::StepTimedOut { .. }
            | Event::StepSkipped { .. }
                if self.current.as_deref() == Some(step) =>
            {
                self.current = None;
            }
            _ => {}
        }
        let f = self.steps.entry(step.to_owned()).or_default();
        // `item`: a fan-out item's index and name (empty in older journals).
        let mut error = |attempt: Option<u32>, item: Option<(usize, &str)>, kind, text: &str| {
            f.errors.push(StepError {
                at_ms: at,
                attempt,
                item: item.map(|(ix, _)| ix),
                item_name: item
                    .filter(|(_, name)| !name.is_empty())
                    .map(|(_, name)| name.to_owned()),
                kind,
                error: text.to_owned(),
            })
        };
        match e {
            Event::PreconditionFailed {
                attempt, message, ..
            } => error(Some(*attempt), None, Failure::PreconditionFailed, message),
            Event::StepFailed {
                attempt, error: x, ..
            } => error(Some(*attempt), None, Failure::Failed, x),
            Event::StepTimedOut { attempt, .. } => {
                error(Some(*attempt), None, Failure::TimedOut, "timed out")
            }
            Event::Rejected { by, .. } => {
                error(None, None, Failure::Rejected, &format!("rejected by {by}"))
            }
            Event::ItemFailed {
                index,
                name,
                error: x,
                ..
            } => error(None, Some((*index, name)), Failure::ItemFailed, x),
            _ => {}
        }
        match e {
            Event::StepStarted { estimate_ms, .. } => {
                f.attempt_items_ended = 0;
                f.attempt_items_failed = 0;
                if estimate_ms.is_some() {
                    f.estimate_ms = *estimate_ms;
                }
            }
            Event::ItemStarted { index, name, .. } => {
                f.item_times.insert(*index, (at, None));
                if !name.is_empty() {
                    f.item_names.insert(*index, name.clone());
                }
            }
            Event::ItemSucceeded { index, .. } | Event::ItemFailed { index, .. } => {
                if let Some((_, end)) = f.item_times.get_mut(index) {
                    *end = Some(at);
                }
                let failed = usize::from(matches!(e, Event::ItemFailed { .. }));
                f.items_ended += 1;
                f.items_failed += failed;
                f.attempt_items_ended += 1;
                f.attempt_items_failed += failed;
            }
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
                let undo = f.undo.get_or_insert(UndoRecord {
                    state: UndoState::Undoing,
                    started_ms: at,
                    ended_ms: None,
                });
                undo.state = UndoState::Undoing;
            }
            // Brought back by a restore: undone when the restore was.
            Event::StepRolledBack {
                by_restore: Some(cp),
                ..
            } => {
                f.undo = Some(UndoRecord {
                    state: UndoState::Restored(cp.clone()),
                    started_ms: at,
                    ended_ms: Some(at),
                });
            }
            Event::StepRolledBack { .. } | Event::StepRollbackFailed { .. } => {
                if let Some(undo) = &mut f.undo {
                    undo.ended_ms = Some(at);
                    undo.state = match e {
                        Event::StepRollbackFailed { error, .. } => UndoState::Failed(error.clone()),
                        _ => UndoState::Undone,
                    };
                }
            }
            _ => {}
        }
    }

    /// The rollbacks: their steps in order, and how each ended.
    fn apply_rollback(&mut self, e: &Event, at: i64) {
        match e {
            Event::RollbackStarted { reason } => self.rollbacks.push(RollbackRecord {
                started_ms: at,
                reason: reason.clone(),
                ended_ms: None,
                end: RollbackEnd::InProgress,
                steps: Vec::new(),
                left: Vec::new(),
            }),
            // A step the restore brought back, in the order of the restore.
            Event::StepRolledBack {
                step,
                by_restore: Some(_),
            } => {
                if let Some(rb) = self.rollbacks.last_mut() {
                    rb.steps.push((step.clone(), at));
                }
            }
            // Rollback order: the first time a step's undo starts.
            Event::StepRollbackStarted { step } => {
                if let Some(rb) = self.rollbacks.last_mut()
                    && !rb.steps.iter().any(|(s, _)| s == step)
                {
                    rb.steps.push((step.clone(), at));
                }
            }
            Event::RunRolledBack { .. } | Event::RunFailed { .. } | Event::RunAborted { .. } => {
                let Some(rb) = self
                    .rollbacks
                    .last_mut()
                    .filter(|rb| rb.end == RollbackEnd::InProgress)
                else {
                    return;
                };
                rb.ended_ms = Some(at);
                rb.end = match e {
                    Event::RunRolledBack { .. } => RollbackEnd::RolledBack,
                    Event::RunFailed { .. } => RollbackEnd::Failed,
                    _ => RollbackEnd::Aborted,
                };
                // What the rollback could not undo is named, step by step.
                if let Event::RunRolledBack { left } = e {
                    rb.left.clone_from(left);
                    for step in left {
                        rb.steps.push((step.clone(), at));
                        self.steps.entry(step.clone()).or_default().undo = Some(UndoRecord {
                            state: UndoState::Left,
                            started_ms: at,
                            ended_ms: None,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Requests for approval and what became of them.
    fn apply_approval(&mut self, e: &Event, at: i64) {
        match e {
            Event::RunResumed {
                decision,
                by,
                reason,
                ..
            } => self.resumes.push(ResumeRecord {
                at_ms: at,
                decision: *decision,
                by: by.clone(),
                reason: reason.clone(),
            }),
            Event::ApprovalRequested { step, .. } => self.approvals.push(ApprovalRecord {
                step: step.clone(),
                verdict: Verdict::Waiting,
                comment: None,
                requested_ms: at,
                decided_ms: None,
            }),
            Event::Approved { step, .. }
            | Event::Rejected { step, .. }
            | Event::StepTimedOut { step, .. }
            | Event::StepSkipped { step, .. } => {
                if let Some(a) = self
                    .approvals
                    .iter_mut()
                    .rev()
                    .find(|a| &a.step == step && a.verdict == Verdict::Waiting)
                {
                    if let Event::Approved { comment, .. } | Event::Rejected { comment, .. } = e {
                        a.comment = comment.clone();
                    }
                    a.verdict = match e {
                        Event::Approved { by, .. } => Verdict::Approved(by.clone()),
                        Event::Rejected { by, .. } => Verdict::Rejected(by.clone()),
                        Event::StepTimedOut { .. } => Verdict::TimedOut,
                        _ => Verdict::Skipped,
                    };
                    a.decided_ms = Some(at);
                }
            }
            Event::RollbackStarted { .. } | Event::RunFailed { .. } | Event::RunAborted { .. } => {
                for a in self
                    .approvals
                    .iter_mut()
                    .filter(|a| a.verdict == Verdict::Waiting)
                {
                    a.verdict = Verdict::Cancelled;
                    a.decided_ms = Some(at);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
