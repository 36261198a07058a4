//! What the engineer sees while a run goes on: one line per event (or one JSON object
//! per event with `--log-format json`).

use std::io::Write as _;

use serde_json::json;

use super::event::{Event, Recorded};

/// Output format of the run's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Prints progress to standard output.
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    pub format: LogFormat,
}

impl Reporter {
    /// Prints one event.
    pub fn event(&self, run_id: &str, r: &Recorded) {
        let line = match self.format {
            LogFormat::Json => {
                json!({ "run": run_id, "seq": r.seq, "at_ms": r.at_ms, "event": r.event })
                    .to_string()
            }
            LogFormat::Text => {
                let at = chrono::DateTime::from_timestamp_millis(r.at_ms)
                    .map(|t| t.format("%H:%M:%S").to_string())
                    .unwrap_or_default();
                format!("{at}  {}", describe(&r.event))
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Prints a note that is not an event (what to do next, say).
    pub fn note(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = match self.format {
            LogFormat::Json => writeln!(out, "{}", json!({ "note": text })),
            LogFormat::Text => writeln!(out, "          {text}"),
        };
        let _ = out.flush();
    }
}

/// An event in words.
pub fn describe(e: &Event) -> String {
    use Event::*;
    match e {
        RunStarted { runbook, title, .. } => format!("run of `{runbook}` started: {title}"),
        StepChecking { step, attempt } => {
            format!("step {step}: checking preconditions (attempt {attempt})")
        }
        PreconditionFailed { step, message, .. } => {
            format!("step {step}: precondition failed: {message}")
        }
        StepStarted { step, attempt, .. } => format!("step {step}: started (attempt {attempt})"),
        StepSucceeded { step, .. } => format!("step {step}: succeeded"),
        StepFailed { step, error, .. } => format!("step {step}: FAILED: {error}"),
        StepTimedOut { step, .. } => format!("step {step}: TIMED OUT"),
        RetryScheduled {
            step,
            next_attempt,
            at_ms,
        } => {
            let at = chrono::DateTime::from_timestamp_millis(*at_ms)
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default();
            format!("step {step}: attempt {next_attempt} at {at}")
        }
        StepSkipped { step, reason } => format!("step {step}: skipped ({reason})"),
        FailureIgnored { step } => format!("step {step}: failure tolerated (on_failure: continue)"),
        ItemStarted { step, index } => format!("step {step}: item {index} started"),
        ItemSucceeded { step, index } => format!("step {step}: item {index} succeeded"),
        ItemFailed { step, index, error } => format!("step {step}: item {index} FAILED: {error}"),
        ApprovalRequested { step } => format!("step {step}: waiting for approval"),
        Approved { step, by } => format!("step {step}: approved by {by}"),
        Rejected { step, by } => format!("step {step}: rejected by {by}"),
        ServiceClosed => "service closed (maintenance mode on)".into(),
        ServiceReopened => "service reopened (maintenance mode off)".into(),
        RunPaused { reason } => format!("run paused: {reason}"),
        RunResumed { decision, by } => format!("run resumed ({decision:?}) by {by}").to_lowercase(),
        RollbackStarted { reason } => format!("ROLLING BACK: {reason}"),
        StepRollbackStarted { step } => format!("step {step}: undoing"),
        StepRolledBack { step } => format!("step {step}: undone"),
        StepRollbackFailed { step, error } => format!("step {step}: UNDO FAILED: {error}"),
        RunCompleted => "run completed".into(),
        RunRolledBack => "run rolled back: the service is restored".into(),
        RunFailed { reason } => format!("RUN FAILED: {reason}"),
        RunAborted { by, reason } => format!("run aborted by {by}: {reason}"),
    }
}
