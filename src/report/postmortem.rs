//! The draft postmortem of a run that did not complete: its summary, its timeline in
//! words, and its impact on customers.

use super::iso;
use super::model::*;
use crate::engine::event::{Event, Recorded};
use crate::engine::history::History;

/// Failed fan-out items per step in the postmortem timeline.
const TIMELINE_ITEM_ERRORS: usize = 5;

/// A draft postmortem: summary, timeline and impact from the journal.
pub(super) fn postmortem(
    report: &Report,
    events: &[Recorded],
    title: &dyn Fn(&str) -> String,
) -> Postmortem {
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
        summary.push_str(&rollback_words(rb));
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

/// What a rollback undid, restored, could not finish and left, in one sentence.
fn rollback_words(rb: &Rollback) -> String {
    let mut out = String::new();
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
    out.push_str(&format!(
        " The rollback undid {}",
        if undone.is_empty() {
            "no step".to_owned()
        } else {
            undone.join(", ")
        }
    ));
    if !restored.is_empty() {
        out.push_str(&format!(
            "; its restore brought back {}",
            restored.join(", ")
        ));
    }
    if !failed.is_empty() {
        out.push_str(&format!("; undoing {} did not finish", failed.join(", ")));
    }
    if !left.is_empty() {
        out.push_str(&format!(
            "; {} had no way back and {} left as {} was",
            left.join(", "),
            if left.len() == 1 { "is" } else { "are" },
            if left.len() == 1 { "it" } else { "they" }
        ));
    }
    out.push('.');
    out
}

/// What happened, event by event, in words (fan-out items summed up, precondition
/// checks and item starts left out).
fn timeline(events: &[Recorded], title: &dyn Fn(&str) -> String) -> Vec<TimelineEntry> {
    let mut out = Vec::new();
    // The history so far, for what a line says of the events before it.
    let mut so_far = History::default();
    for r in events {
        so_far.apply(r);
        let name = |step: &str| format!("`{step}` ({})", title(step));
        let text = match &r.event {
            // Progress reports are for the run as it goes, not the timeline after it.
            Event::StepProgress { .. } => None,
            Event::RunStarted {
                runbook, operator, ..
            } => Some(format!("run of `{runbook}` started by {operator}")),
            Event::StepStarted { step, attempt, .. } if *attempt > 1 => {
                Some(format!("{} started, attempt {attempt}", name(step)))
            }
            Event::StepStarted { step, .. } => Some(format!("{} started", name(step))),
            Event::StepSucceeded { step, .. } => {
                let h = so_far.step(step);
                let items = match (h.items_ended, h.items_failed) {
                    (0, _) => String::new(),
                    (n, 0) => format!(" ({n} items)"),
                    (n, f) => format!(" ({n} items, {f} failed)"),
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
            Event::ItemSucceeded { .. } => None,
            // The step's undo says it as a whole; its items' undos are in the journal.
            Event::ItemRollbackStarted { .. } | Event::ItemRolledBack { .. } => None,
            Event::ItemFailed {
                step,
                index,
                name: item,
                error,
            } => match so_far.step(step).items_failed {
                n if n <= TIMELINE_ITEM_ERRORS => Some(format!(
                    "{}: {} FAILED: {error}",
                    name(step),
                    crate::engine::items::words(*index, item)
                )),
                n if n == TIMELINE_ITEM_ERRORS + 1 => {
                    Some(format!("{}: more items failed (see the step)", name(step)))
                }
                _ => None,
            },
            Event::ApprovalRequested {
                step,
                wave: Some(w),
            } => Some(format!(
                "{} waiting for approval to start wave {w}",
                name(step)
            )),
            Event::ApprovalRequested { step, .. } => {
                Some(format!("{} waiting for approval", name(step)))
            }
            Event::Approved { step, by, comment } => Some(format!(
                "{} approved by {by}{}",
                name(step),
                said(comment.as_deref())
            )),
            Event::Rejected { step, by, comment } => Some(format!(
                "{} REJECTED by {by}{}",
                name(step),
                said(comment.as_deref())
            )),
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
            Event::RunResumed {
                decision,
                by,
                reason,
                ..
            } => Some(format!(
                "run resumed by {by} ({}){}",
                serde_json::to_value(decision)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                said(reason.as_deref())
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
            Event::RunForgotten { .. } => None,
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

/// What a person said with a decision, quoted after it.
fn said(words: Option<&str>) -> String {
    words.map(|w| format!(": \"{w}\"")).unwrap_or_default()
}
