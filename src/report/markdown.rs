//! The report in Markdown (GitHub-flavoured: tables). Every text from the journal is
//! escaped, so a title cannot become markup or break a table.

use std::fmt::Write as _;

use super::model::*;
use super::{Clock, delta, dur, output_text};

/// Text from the journal, safe in Markdown prose and table cells: punctuation that
/// could start markup is backslash-escaped, line breaks become `<br>`.
pub(crate) fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut prev = ' ';
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // Inside a word `_` cannot start emphasis (CommonMark): `in_progress` stays.
            '_' if prev.is_alphanumeric() && chars.peek().is_some_and(|n| n.is_alphanumeric()) => {
                out.push(c)
            }
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
        prev = c;
    }
    out
}

/// An id in a code span (ids are letters, digits, `-`, `_`, `.`; anything else is
/// shown escaped instead).
fn code(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        format!("`{s}`")
    } else {
        md(s)
    }
}

/// The step's details: outputs, fan-out items, errors, undo.
pub(crate) fn details(s: &StepReport, clock: &Clock) -> Vec<String> {
    let mut out = Vec::new();
    if !s.outputs.is_empty() {
        out.push(
            s.outputs
                .iter()
                .map(|(k, v)| format!("{k}: {}", output_text(k, v)))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if let Some(i) = &s.items {
        let mut t = format!("items: {} done of {}", i.succeeded + i.failed, i.total);
        if i.failed > 0 {
            let _ = write!(t, ", {} failed", i.failed);
        }
        if i.running > 0 {
            let _ = write!(t, ", {} running", i.running);
        }
        out.push(t);
    }
    for e in &s.errors {
        let what = match (e.kind, e.attempt, e.item) {
            (ErrorKind::ItemFailed, _, Some(i)) => {
                crate::engine::items::words(i, e.item_name.as_deref().unwrap_or_default())
            }
            (ErrorKind::PreconditionFailed, Some(a), _) => format!("attempt {a}, precondition"),
            (_, Some(a), _) => format!("attempt {a}"),
            _ => "decision".into(),
        };
        out.push(format!("{} {what}: {}", clock.time(e.at_ms), e.error));
    }
    if s.errors_omitted > 0 {
        out.push(format!("… {} more failed items", s.errors_omitted));
    }
    if let Some(err) = &s.error
        && !s.errors.iter().any(|e| &e.error == err)
    {
        out.push(err.clone());
    }
    if let Some(r) = &s.skip_reason {
        out.push(format!("skipped: {r}"));
    }
    if s.failure_tolerated {
        out.push("failure tolerated (on_failure: continue)".into());
    }
    if let Some(u) = &s.undo {
        let mut t = match u.status {
            UndoStatus::Undone => "undone".to_owned(),
            UndoStatus::Restored => format!(
                "undone by the restore of `{}`",
                u.restored_by.as_deref().unwrap_or_default()
            ),
            UndoStatus::UndoFailed => "UNDO FAILED".to_owned(),
            UndoStatus::Undoing => "undo started, no outcome".to_owned(),
            UndoStatus::Left => "LEFT AS IT WAS (no rollback)".to_owned(),
        };
        let _ = write!(t, " at {}", clock.time(u.started_at_ms));
        if let Some(d) = u.duration_ms {
            let _ = write!(t, " in {}", dur(d));
        }
        if let Some(e) = &u.error {
            let _ = write!(t, ": {e}");
        }
        out.push(t);
    }
    if let Some(log) = &s.log {
        out.push(format!("log: {log}"));
    }
    if let Some(i) = &s.items {
        out.extend(i.rows.iter().take(ITEM_ROWS).map(item_line));
        if i.rows.len() > ITEM_ROWS {
            out.push(format!(
                "… {} more items (all in the JSON report)",
                i.rows.len() - ITEM_ROWS
            ));
        }
    }
    out
}

/// Fan-out items listed one per line in the Markdown and HTML reports (the JSON has all).
const ITEM_ROWS: usize = 100;

/// One fan-out item: `item acme: succeeded in 1.2s (path: …, size_bytes: …), undone`.
fn item_line(row: &super::model::ItemRow) -> String {
    let mut t = format!(
        "{}: {}",
        crate::engine::items::words(row.index, row.name.as_deref().unwrap_or_default()),
        row.status
    );
    if let Some(d) = row.duration_ms {
        let _ = write!(t, " in {}", dur(d));
    }
    if !row.outputs.is_empty() {
        let outputs: Vec<String> = row
            .outputs
            .iter()
            .map(|(k, v)| format!("{k}: {}", output_text(k, v)))
            .collect();
        let _ = write!(t, " ({})", outputs.join(", "));
    }
    if let Some(e) = &row.error {
        let _ = write!(t, ": {e}");
    }
    if row.undone {
        t.push_str(", undone");
    }
    t
}

/// A span of times: `19:00:00–19:01:00`.
pub(crate) fn span(clock: &Clock, start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => format!("{}–{}", clock.time(s), clock.time(e)),
        (Some(s), None) => format!("{}–…", clock.time(s)),
        _ => "—".into(),
    }
}

pub(super) fn render(r: &Report) -> String {
    let clock = Clock::new(
        &r.run.timezone,
        r.window.planned_start_ms.min(r.run.started_at_ms),
    );
    let mut o = String::with_capacity(4096 + r.steps.len() * 400);
    header(&mut o, r, &clock);
    window(&mut o, r, &clock);
    service(&mut o, r, &clock);
    steps(&mut o, r, &clock);
    chart(&mut o, r, &clock);
    rollbacks(&mut o, r, &clock);
    approvals(&mut o, r, &clock);
    resumes(&mut o, r, &clock);
    updates(&mut o, r, &clock);
    postmortem(&mut o, r, &clock);
    o
}

/// The title and the run's facts.
fn header(o: &mut String, r: &Report, clock: &Clock) {
    let run = &r.run;
    let _ = writeln!(o, "# Maintenance report: {}\n", md(&run.title));
    if !run.finished {
        let _ = writeln!(
            o,
            "> **REPORT SO FAR**: the run has not ended ({}). This report shows the journal up to {}.\n",
            run.outcome.label(),
            clock.full(r.generated_at_ms)
        );
    }
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Run | {} |", code(&run.id));
    let _ = writeln!(o, "| Runbook | {} |", code(&run.runbook));
    if let Some(t) = run.public_title.as_ref().filter(|t| **t != run.title) {
        let _ = writeln!(o, "| Public title | {} |", md(t));
    }
    let mut outcome = format!("**{}**", run.outcome.label());
    if let Some(reason) = &run.reason {
        let _ = write!(outcome, ": {}", md(reason));
    }
    if let Some(by) = &run.aborted_by {
        let _ = write!(outcome, " (aborted by {})", md(by));
    }
    if run.rehearsal {
        outcome.push_str(" (a rehearsal: customers were told nothing)");
    }
    let _ = writeln!(o, "| Outcome | {outcome} |");
    let _ = writeln!(
        o,
        "| Operator | {} on {} |",
        md(&run.operator),
        md(&run.host)
    );
    let _ = writeln!(o, "| Started | {} |", clock.full(run.started_at_ms));
    match run.ended_at_ms {
        Some(e) => {
            let _ = writeln!(o, "| Ended | {} |", clock.full(e));
            let _ = writeln!(o, "| Duration | {} |", dur(run.duration_ms));
        }
        None => {
            let _ = writeln!(o, "| Ended | not yet ({} so far) |", dur(run.duration_ms));
        }
    }
    let _ = writeln!(o, "| Runbook file | {} |", md(&run.file));
    let _ = writeln!(o, "| Times | {} |", clock.zone());
    let _ = writeln!(o, "| Report made | {} |\n", clock.full(r.generated_at_ms));
}

/// The planned window against the actual one.
fn window(o: &mut String, r: &Report, clock: &Clock) {
    let run = &r.run;
    let w = &r.window;
    let _ = writeln!(o, "## Window\n");
    let _ = writeln!(o, "| | Start | End | Duration |\n|---|---|---|---|");
    let _ = writeln!(
        o,
        "| Planned | {} | {} | {} |",
        clock.full(w.planned_start_ms),
        clock.full(w.planned_end_ms),
        dur(w.planned_duration_ms)
    );
    let _ = writeln!(
        o,
        "| Actual | {} | {} | {} |\n",
        clock.full(w.actual_start_ms),
        w.actual_end_ms
            .map(|e| clock.full(e))
            .unwrap_or_else(|| "not ended".into()),
        dur(run.duration_ms)
    );
    let _ = writeln!(o, "{}\n", window_verdict(w, run.finished));
    let _ = writeln!(o, "{}\n", window_basis(w, clock));
}

/// When the service was closed to customers.
fn service(o: &mut String, r: &Report, clock: &Clock) {
    let _ = writeln!(o, "## Service closed\n");
    let _ = writeln!(o, "{}\n", closed_text(&r.service, clock));
    if !r.service.intervals.is_empty() {
        let _ = writeln!(o, "| Closed | Reopened | For |\n|---|---|---|");
        for i in &r.service.intervals {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                clock.time(i.closed_at_ms),
                i.reopened_at_ms
                    .map(|t| clock.time(t))
                    .unwrap_or_else(|| "**still closed**".into()),
                dur(i.duration_ms)
            );
        }
        o.push('\n');
    }
}

/// Every step: planned, actual, attempts and details.
fn steps(o: &mut String, r: &Report, clock: &Clock) {
    let _ = writeln!(o, "## Steps\n");
    let _ = writeln!(
        o,
        "| # | Step | Kind | Status | Planned | Expected | Actual | Took | Attempts | Overrun | Details |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for s in &r.steps {
        let mut name = format!("{}<br>{}", md(&s.title), code(&s.id));
        if s.checkpoint {
            name.push_str(" ⚑ checkpoint");
        }
        if s.public_title.is_none() {
            name.push_str(" (hidden)");
        }
        let status = match s.status {
            StepState::Failed | StepState::TimedOut | StepState::RollbackFailed => {
                format!("**{}**", s.status.label())
            }
            _ => s.status.label().to_owned(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.position,
            name,
            md(&s.kind),
            status,
            span(clock, Some(s.planned_start_ms), Some(s.planned_end_ms)),
            s.expected_ms
                .map(|x| dur(x as i64))
                .unwrap_or_else(|| "—".into()),
            span(clock, s.actual_start_ms, s.actual_end_ms),
            s.duration_ms.map(dur).unwrap_or_else(|| "—".into()),
            s.attempts,
            s.overrun_ms
                .map(|x| format!("**+{}**", dur(x)))
                .unwrap_or_default(),
            details(s, clock)
                .iter()
                .map(|d| md(d))
                .collect::<Vec<_>>()
                .join("<br>"),
        );
    }
    o.push('\n');
}

/// The Gantt chart as a table: planned versus actual, step by step.
fn chart(o: &mut String, r: &Report, clock: &Clock) {
    let w = &r.window;
    let _ = writeln!(o, "## Planned versus actual\n");
    let _ = writeln!(
        o,
        "| Step | Planned | Actual | Δ duration | Δ end |\n|---|---|---|---|---|"
    );
    for s in &r.steps {
        let planned = s.planned_end_ms - s.planned_start_ms;
        let (dd, de) = match (s.duration_ms, s.actual_end_ms) {
            (Some(d), Some(e)) => (delta(d - planned), delta(e - s.planned_end_ms)),
            _ => ("—".into(), "—".into()),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {dd} | {de} |",
            code(&s.id),
            span(clock, Some(s.planned_start_ms), Some(s.planned_end_ms)),
            span(clock, s.actual_start_ms, s.actual_end_ms),
        );
    }
    let _ = writeln!(
        o,
        "| *window* | {} | {} | {} | {} |\n",
        span(clock, Some(w.planned_start_ms), Some(w.planned_end_ms)),
        span(clock, Some(w.actual_start_ms), w.actual_end_ms),
        w.actual_end_ms
            .map(|e| delta((e - w.actual_start_ms) - w.planned_duration_ms))
            .unwrap_or_else(|| "—".into()),
        w.actual_end_ms
            .map(|e| delta(e - w.planned_end_ms))
            .unwrap_or_else(|| "—".into()),
    );
}

/// Each rollback and what it undid.
fn rollbacks(o: &mut String, r: &Report, clock: &Clock) {
    let _ = writeln!(o, "## Rollbacks\n");
    if r.rollbacks.is_empty() {
        let _ = writeln!(o, "None.\n");
    }
    for rb in &r.rollbacks {
        let _ = writeln!(
            o,
            "Started {}: {}. {}.\n",
            clock.time(rb.started_at_ms),
            md(&rb.reason),
            rollback_end(rb, clock)
        );
        if rb.steps.is_empty() {
            let _ = writeln!(o, "No step needed undoing.\n");
            continue;
        }
        let _ = writeln!(
            o,
            "| Step | Undo | Started | Took | Error |\n|---|---|---|---|---|"
        );
        for s in &rb.steps {
            let _ = writeln!(
                o,
                "| {} {} | {} | {} | {} | {} |",
                md(&s.title),
                code(&s.id),
                undo_label(s.status),
                clock.time(s.started_at_ms),
                s.duration_ms.map(dur).unwrap_or_else(|| "—".into()),
                s.error.as_deref().map(md).unwrap_or_default()
            );
        }
        o.push('\n');
    }
}

/// The waits for a person.
fn approvals(o: &mut String, r: &Report, clock: &Clock) {
    let _ = writeln!(o, "## Approvals\n");
    if r.approvals.is_empty() {
        let _ = writeln!(o, "None.\n");
    } else {
        let _ = writeln!(
            o,
            "| Step | Decision | By | Requested | Decided | Waited |\n|---|---|---|---|---|---|"
        );
        for a in &r.approvals {
            let _ = writeln!(
                o,
                "| {} {} | {} | {} | {} | {} | {} |",
                md(&a.title),
                code(&a.step),
                approval_label(a.decision),
                who_said(a.by.as_deref(), a.comment.as_deref(), md),
                clock.time(a.requested_at_ms),
                a.decided_at_ms
                    .map(|t| clock.time(t))
                    .unwrap_or_else(|| "—".into()),
                if a.decision == ApprovalDecision::Waiting {
                    format!("{} so far", dur(a.waited_ms))
                } else {
                    dur(a.waited_ms)
                }
            );
        }
        o.push('\n');
    }
}

/// The public updates as published.
fn updates(o: &mut String, r: &Report, clock: &Clock) {
    let _ = writeln!(o, "## Public updates\n");
    if r.public_updates.is_empty() {
        let _ = writeln!(o, "None were published.\n");
    } else {
        let _ = writeln!(o, "| Time | Status | Update |\n|---|---|---|");
        for u in &r.public_updates {
            let mut status = md(&u.status);
            if u.incident {
                status.push_str(" (incident)");
            }
            let _ = writeln!(
                o,
                "| {} | {status} | {} |",
                clock.time(u.at_ms),
                md(&u.body)
            );
        }
        o.push('\n');
    }
}

/// The postmortem draft, for a run that did not complete.
fn postmortem(o: &mut String, r: &Report, clock: &Clock) {
    if let Some(pm) = &r.postmortem {
        let _ = writeln!(o, "## Postmortem draft\n");
        let _ = writeln!(o, "### Summary\n\n{}\n", md(&pm.summary));
        let _ = writeln!(o, "### What happened\n");
        for e in &pm.timeline {
            let _ = writeln!(o, "- {} {}", clock.time(e.at_ms), md(&e.text));
        }
        o.push('\n');
        let _ = writeln!(o, "### Impact\n\n{}\n", md(&pm.impact.text));
        for u in &r.public_updates {
            let _ = writeln!(
                o,
                "- {} ({}): {}",
                clock.time(u.at_ms),
                md(&u.status),
                md(&u.body)
            );
        }
        if !r.public_updates.is_empty() {
            o.push('\n');
        }
        let _ = writeln!(o, "### Root cause\n\n_{}_\n", md(&pm.root_cause));
        let _ = writeln!(o, "### Follow-ups\n\n_{}_", md(&pm.follow_ups));
    }
}

/// Held, or overrun by how much.
pub(crate) fn window_verdict(w: &Window, finished: bool) -> String {
    match (w.held, finished) {
        (Some(true), _) => format!(
            "**The window held**: the run ended {} before the planned end.",
            dur(w.planned_end_ms - w.actual_end_ms.unwrap_or(w.planned_end_ms))
        ),
        (Some(false), true) => format!("**The window was overrun by {}.**", dur(w.overrun_ms)),
        (Some(false), false) => {
            format!("**The window is overrun by {} so far.**", dur(w.overrun_ms))
        }
        (None, _) => "The run is still inside its window.".into(),
    }
}

/// Where the planned window comes from, in words.
pub(crate) fn window_basis(w: &Window, clock: &Clock) -> String {
    let start = match w.planned_start_from {
        PlannedStartFrom::Window => "the planned start is the runbook's window start",
        PlannedStartFrom::WindowOpened => {
            "the window opened when the run started (`--now`), so the planned start is the run's start"
        }
        PlannedStartFrom::RunStart => {
            "the runbook has no window start: the planned start is the run's start"
        }
    };
    let end = match w.planned_end_from {
        PlannedEndFrom::Window => "the planned end is the window's end".to_owned(),
        PlannedEndFrom::ExpectedDurations => format!(
            "the planned end adds the steps' expected durations ({})",
            dur(w.expected_ms)
        ),
    };
    let mut s = format!("Planned: {start}; {end}.");
    if let (Some(ss), Some(se)) = (w.scheduled_start_ms, w.scheduled_end_ms)
        && (ss != w.planned_start_ms || se != w.planned_end_ms)
    {
        let _ = write!(
            s,
            " The runbook scheduled the window for {} to {}.",
            clock.full(ss),
            clock.full(se)
        );
    }
    let late = w.start_delay_ms;
    if late.abs() >= 1000 {
        let _ = write!(
            s,
            " The run started {} {}.",
            dur(late.abs()),
            if late > 0 { "late" } else { "early" }
        );
    }
    s
}

pub(crate) fn closed_text(s: &Service, clock: &Clock) -> String {
    match (s.intervals.len(), s.still_closed) {
        (0, _) => "The service was not closed.".into(),
        (n, still) => {
            let mut t = format!(
                "Closed to customers for **{}** in {n} closure{}",
                dur(s.closed_ms),
                if n == 1 { "" } else { "s" }
            );
            if still {
                let since = s.intervals.last().map_or(0, |i| i.closed_at_ms);
                let _ = write!(
                    t,
                    "; **still closed** (since {}, counted up to this report)",
                    clock.time(since)
                );
            }
            t.push('.');
            t
        }
    }
}

pub(crate) fn rollback_end(rb: &Rollback, clock: &Clock) -> String {
    let took = rb
        .duration_ms
        .map(|d| format!(" after {}", dur(d)))
        .unwrap_or_default();
    let at = rb
        .ended_at_ms
        .map(|t| format!(" at {}", clock.time(t)))
        .unwrap_or_default();
    match rb.outcome {
        RollbackOutcome::RolledBack if rb.left.is_empty() => {
            format!("Rolled back{at}{took}: the service is restored")
        }
        RollbackOutcome::RolledBack => format!(
            "Rolled back{at}{took}, but NOT everything is restored: left as it was: {}",
            rb.left.join(", ")
        ),
        RollbackOutcome::Failed => {
            format!("The rollback FAILED{at}{took}: a person must finish it")
        }
        RollbackOutcome::Aborted => format!("Aborted{at}{took}"),
        RollbackOutcome::InProgress => "Still in progress".into(),
    }
}

pub(crate) fn undo_label(s: UndoStatus) -> &'static str {
    match s {
        UndoStatus::Undone => "undone by its rollback",
        UndoStatus::Restored => "undone by the restore",
        UndoStatus::UndoFailed => "undo failed",
        UndoStatus::Undoing => "no outcome",
        UndoStatus::Left => "left as it was",
    }
}

pub(crate) fn approval_label(d: ApprovalDecision) -> &'static str {
    match d {
        ApprovalDecision::Approved => "approved",
        ApprovalDecision::Rejected => "rejected",
        ApprovalDecision::TimedOut => "timed out",
        ApprovalDecision::Skipped => "skipped",
        ApprovalDecision::Cancelled => "cancelled (the run ended)",
        ApprovalDecision::Waiting => "waiting",
    }
}

/// Who decided, and what they said with it.
pub(super) fn who_said(by: Option<&str>, said: Option<&str>, esc: fn(&str) -> String) -> String {
    match (by, said) {
        (Some(by), Some(said)) => format!("{}: “{}”", esc(by), esc(said)),
        (Some(by), None) => esc(by),
        _ => "—".into(),
    }
}

/// Every `runbook resume`: when, what, who and why.
fn resumes(o: &mut String, r: &Report, clock: &Clock) {
    if r.resumes.is_empty() {
        return;
    }
    let _ = writeln!(o, "## Decisions\n\n| At | Decision | By |\n|---|---|---|");
    for d in &r.resumes {
        let _ = writeln!(
            o,
            "| {} | resume: {} | {} |",
            clock.time(d.at_ms),
            md(&d.decision),
            who_said(Some(&d.by), d.reason.as_deref(), md)
        );
    }
    o.push('\n');
}
