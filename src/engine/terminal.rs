//! What the engineer sees while a run goes on: one line per event (or one JSON object
//! per event with `--log-format json`), and on a terminal a live progress line.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use serde_json::json;

use super::event::{Event, Recorded};
use super::history::{Change, History};
use crate::duration::fmt_duration;
use crate::runbook::Runbook;

/// Output format of the run's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Prints progress to standard output: one line per event, and on a terminal a live
/// line under them with the current step, elapsed versus expected and fan-out progress.
#[derive(Clone)]
pub struct Reporter {
    pub format: LogFormat,
    live: Option<Live>,
}

/// The live line of a terminal.
#[derive(Clone)]
struct Live {
    bar: ProgressBar,
    now: Arc<Mutex<Current>>,
}

/// What the live line shows: the run's history as the events come (the same fold the
/// report and the status page read), with the step positions and when the step under
/// way started on this clock.
#[derive(Default)]
struct Current {
    /// Step id → (position in the run, expected duration).
    steps: HashMap<String, (usize, Option<Duration>)>,
    total: usize,
    history: History,
    started: Option<Instant>,
    /// The fan-out of the step under way: how many items, called what.
    items: Option<(usize, String)>,
}

impl Current {
    fn line(&self) -> String {
        let Some(step) = &self.history.current else {
            return String::new();
        };
        let (pos, expected) = self.steps.get(step).copied().unwrap_or((0, None));
        let elapsed = self.started.map(|s| s.elapsed()).unwrap_or_default();
        let took = fmt_duration(Duration::from_secs(elapsed.as_secs()));
        let mut line = format!("[{}/{}] {step}  {took}", pos + 1, self.total);
        if let Some(e) = expected {
            line.push_str(&format!(" of {} expected", fmt_duration(e)));
            if elapsed > e {
                // Red: the step is over its expected duration.
                line = format!("\x1b[31m{line} (over)\x1b[0m");
            }
        }
        if let Some((n, noun)) = &self.items {
            let h = self.history.step(step);
            line.push_str(&format!("  {}/{n} {noun}", h.attempt_items_ended));
            if h.attempt_items_failed > 0 {
                line.push_str(&format!(", {} failed", h.attempt_items_failed));
            }
        }
        if let Some(eta) = self
            .history
            .eta_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
        {
            let local = eta.with_timezone(&chrono::Local);
            line.push_str(&format!("  ETA {}", local.format("%H:%M")));
        }
        line
    }

    fn follow(&mut self, r: &Recorded) {
        if let Change::StepStarted(_) = self.history.apply(r) {
            self.started = Some(Instant::now());
            self.items = None;
        }
    }
}

impl Reporter {
    /// A reporter for a run of `rb`; the live line only when standard output is a
    /// terminal and the format is text.
    pub fn new(format: LogFormat, rb: &Runbook) -> Reporter {
        let live = (format == LogFormat::Text && std::io::stdout().is_terminal()).then(|| {
            let now = Current {
                steps: rb
                    .order
                    .iter()
                    .enumerate()
                    .map(|(pos, &i)| (rb.steps[i].id.clone(), (pos, rb.steps[i].expected)))
                    .collect(),
                total: rb.steps.len(),
                ..Current::default()
            };
            let now = Arc::new(Mutex::new(now));
            let shown = now.clone();
            let style = ProgressStyle::with_template("{spinner} {line}")
                .expect("the template is valid")
                .with_key(
                    "line",
                    move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let line = shown.lock().map(|c| c.line()).unwrap_or_default();
                        let _ = w.write_str(&line);
                    },
                );
            let bar = ProgressBar::new_spinner().with_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            Live { bar, now }
        });
        Reporter { format, live }
    }

    /// A reporter with no live line (plain lines, or JSON).
    pub fn plain(format: LogFormat) -> Reporter {
        Reporter { format, live: None }
    }

    /// Prints a line, its control characters escaped ([`crate::terminal::safe`]); a JSON
    /// line has none (JSON escapes them).
    fn print(&self, line: &str) {
        let line = &*crate::terminal::safe(line);
        match &self.live {
            Some(live) => live.bar.println(line),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }

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
        // On a terminal the live line counts the items; only failures (and warnings) get
        // a line.
        let quiet = self.live.is_some()
            && match &r.event {
                Event::ItemStarted { .. } => true,
                Event::ItemSucceeded { outputs, .. } => {
                    !outputs.contains_key(super::action::LOG_ERROR)
                }
                _ => false,
            };
        if !quiet {
            self.print(&line);
        }
        if let Some(live) = &self.live {
            if let Ok(mut now) = live.now.lock() {
                now.follow(r);
            }
            live.bar.tick();
        }
    }

    /// A fan-out step has `total` items, called `noun` (its target's name, or "items").
    pub fn items(&self, total: usize, noun: &str) {
        if let Some(live) = &self.live
            && let Ok(mut now) = live.now.lock()
        {
            now.items = Some((total, crate::terminal::safe(noun).into_owned()));
        }
    }

    /// Prints a note that is not an event (what to do next, say).
    pub fn note(&self, text: &str) {
        let line = match self.format {
            LogFormat::Json => json!({ "note": text }).to_string(),
            LogFormat::Text => format!("          {text}"),
        };
        self.print(&line);
    }

    /// Removes the live line (before the command's last words).
    pub fn finish(&mut self) {
        if let Some(live) = self.live.take() {
            live.bar.finish_and_clear();
        }
    }
}

/// An event in words.
pub fn describe(e: &Event) -> String {
    use super::items;
    use Event::*;
    match e {
        RunStarted { runbook, title, .. } => format!("run of `{runbook}` started: {title}"),
        StepProgress {
            step,
            done,
            total,
            what,
            ..
        } => match total {
            Some(t) => format!("step {step}: {done} of about {t} {what}"),
            None => format!("step {step}: {done} {what}"),
        },
        StepChecking { step, attempt } => {
            format!("step {step}: checking preconditions (attempt {attempt})")
        }
        PreconditionFailed { step, message, .. } => {
            format!("step {step}: precondition failed: {message}")
        }
        StepStarted { step, attempt, .. } => format!("step {step}: started (attempt {attempt})"),
        StepSucceeded { step, outputs, .. } => {
            format!("step {step}: succeeded{}", log_warning(outputs))
        }
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
        ItemStarted { step, index, name } => {
            format!("step {step}: {} started", items::words(*index, name))
        }
        ItemSucceeded {
            step,
            index,
            name,
            outputs,
        } => format!(
            "step {step}: {} succeeded{}",
            items::words(*index, name),
            log_warning(outputs)
        ),
        ItemRollbackStarted { step, index, name } => {
            format!("step {step}: {} undoing", items::words(*index, name))
        }
        ItemRolledBack { step, index, name } => {
            format!("step {step}: {} undone", items::words(*index, name))
        }
        ItemFailed {
            step,
            index,
            name,
            error,
        } => format!(
            "step {step}: {} FAILED: {error}",
            items::words(*index, name)
        ),
        ApprovalRequested {
            step,
            wave: Some(w),
        } => format!("step {step}: waiting for approval to start wave {w}"),
        ApprovalRequested { step, .. } => format!("step {step}: waiting for approval"),
        Approved { step, by, comment } => format!(
            "step {step}: approved by {by}{}",
            comment
                .as_ref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ),
        Rejected { step, by, comment } => format!(
            "step {step}: rejected by {by}{}",
            comment
                .as_ref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ),
        ServiceClosed => "service closed (maintenance mode on)".into(),
        ServiceReopened => "service reopened (maintenance mode off)".into(),
        RunPaused { reason, .. } => format!("run paused: {reason}"),
        RunResumed {
            decision,
            by,
            reason,
            ..
        } => format!(
            "{}{}",
            format!("run resumed ({decision:?}) by {by}").to_lowercase(),
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        RollbackStarted { reason } => format!("ROLLING BACK: {reason}"),
        StepRollbackStarted { step } => format!("step {step}: undoing"),
        StepRolledBack {
            step,
            by_restore: None,
        } => format!("step {step}: undone"),
        StepRolledBack {
            step,
            by_restore: Some(cp),
        } => format!("step {step}: undone by the restore of checkpoint `{cp}`"),
        StepRollbackFailed { step, error } => format!("step {step}: UNDO FAILED: {error}"),
        StatementCancelled { step, .. } => format!("step {step}: {}", cancelled(e)),
        Published(u) => format!("public update ({}): {}", u.status, u.body),
        RunCompleted => "run completed".into(),
        RunRolledBack { left } => rolled_back_words(left),
        RunFailed { reason } => format!("RUN FAILED: {reason}"),
        RunAborted { by, reason } => format!("run aborted by {by}: {reason}"),
        RunForgotten { by, reason } => format!(
            "run forgotten by {by} (not learned from){}",
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

/// ", but WARNING: its log ..." when the step's log could not be written whole.
fn log_warning(outputs: &indexmap::IndexMap<String, serde_json::Value>) -> String {
    match outputs.get(super::action::LOG_ERROR) {
        Some(why) => format!(", but WARNING: {}", why.as_str().unwrap_or_default()),
        None => String::new(),
    }
}

/// How a rolled-back run ends, in words: "restored" only when no step was left as it
/// was.
pub fn rolled_back_words(left: &[String]) -> String {
    if left.is_empty() {
        return "run rolled back: the service is restored".into();
    }
    let names: Vec<String> = left.iter().map(|s| format!("`{s}`")).collect();
    format!(
        "run rolled back, but NOT everything is restored: left as {} (no rollback, and no restore brings {} back): {}",
        if left.len() == 1 {
            "it was"
        } else {
            "they were"
        },
        if left.len() == 1 { "it" } else { "them" },
        names.join(", ")
    )
}

/// A `statement_cancelled` event in words, without its step: what was stopped where, and
/// how (or why it could not be).
pub fn cancelled(e: &Event) -> String {
    let Event::StatementCancelled {
        database,
        pid,
        statement,
        terminated,
        error,
        ..
    } = e
    else {
        return String::new();
    };
    let backend = pid.map(|p| format!(" (backend {p})")).unwrap_or_default();
    let how = match (error, terminated) {
        (Some(why), _) => format!("could NOT be stopped on the server: {why}"),
        (None, true) => "ignored the cancel; its backend was terminated".into(),
        (None, false) if pid.is_some() => "cancelled on the server".into(),
        (None, false) => "interrupted".into(),
    };
    format!("statement `{statement}` on {database}{backend} {how}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: i64, event: serde_json::Value) -> Recorded {
        let event = serde_json::from_value(event).expect("an event");
        Recorded {
            seq,
            at_ms: seq * 1000,
            event,
        }
    }

    #[test]
    fn the_live_line_shows_the_step_under_way_its_items_and_the_eta() {
        let mut now = Current {
            steps: HashMap::from([
                ("a".to_owned(), (0, None)),
                ("b".to_owned(), (1, Some(Duration::from_secs(600)))),
            ]),
            total: 3,
            ..Current::default()
        };
        assert_eq!(now.line(), "", "nothing under way");
        for (seq, e) in [
            serde_json::json!({ "type": "step_started", "step": "b", "attempt": 1 }),
            serde_json::json!({ "type": "item_started", "step": "b", "index": 0 }),
            serde_json::json!({ "type": "item_succeeded", "step": "b", "index": 0 }),
            serde_json::json!({ "type": "item_failed", "step": "b", "index": 1, "error": "x" }),
            serde_json::json!({ "type": "published", "kind": "overrun", "status": "in_progress",
                "body": "Later.", "eta_ms": 1_794_996_000_000_i64 }),
        ]
        .into_iter()
        .enumerate()
        {
            now.follow(&rec(seq as i64 + 1, e));
            if seq == 0 {
                now.items = Some((4, "tenants".into()));
            }
        }
        let line = now.line();
        assert!(
            line.starts_with("[2/3] b  0s of 10m expected  2/4 tenants, 1 failed  ETA "),
            "{line}"
        );
        now.follow(&rec(
            9,
            serde_json::json!({ "type": "step_succeeded", "step": "b", "attempt": 1 }),
        ));
        assert_eq!(now.line(), "", "the step ended");
    }
}
