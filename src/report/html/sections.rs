//! The sections of the HTML report, top to bottom, each written from the report alone.

use std::fmt::Write as _;

use super::super::markdown::{
    approval_label, closed_text, details, rollback_end, span, undo_label, window_basis,
    window_verdict,
};
use super::super::model::*;
use super::super::{Clock, dur, figures::cut};
use super::{card, emphasis, fact, gantt::gantt, h, outcome_class, updates_table};

/// The page head, the title, the outcome badge.
pub(super) fn header(o: &mut String, r: &Report, clock: &Clock) {
    let run = &r.run;
    let _ = writeln!(
        o,
        "<header>\n<p class=\"eyebrow\">Maintenance report · runbook <code>{}</code> · run <code>{}</code></p>\n<h1>{}</h1>\n<span class=\"badge {}\">{}</span>",
        h(&run.runbook),
        h(&run.id),
        h(&run.title),
        outcome_class(run.outcome),
        h(run.outcome.label())
    );
    if !run.finished {
        let _ = writeln!(
            o,
            "<p class=\"sofar\">Report so far: the run has not ended ({}). This is the journal up to {}.</p>",
            h(run.outcome.label()),
            h(&clock.full(r.generated_at_ms))
        );
    }
    o.push_str("</header>\n");
}

/// The headline figures, one card each.
pub(super) fn cards(o: &mut String, r: &Report) {
    let run = &r.run;
    let w = &r.window;
    let (wv, wclass, ws) = match (w.held, run.finished) {
        (Some(true), _) => (
            "Held".to_owned(),
            "ok",
            format!(
                "{} to spare",
                dur(w.planned_end_ms - w.actual_end_ms.unwrap_or(w.planned_end_ms))
            ),
        ),
        (Some(false), true) => (
            format!("Overrun {}", dur(w.overrun_ms)),
            "bad",
            "past the planned end".to_owned(),
        ),
        (Some(false), false) => (
            format!("Overrun {}", dur(w.overrun_ms)),
            "bad",
            "so far".to_owned(),
        ),
        (None, _) => ("Inside".to_owned(), "", "so far".to_owned()),
    };
    let count = |f: &dyn Fn(&StepReport) -> bool| r.steps.iter().filter(|s| f(s)).count();
    let done = count(&|s| s.status == StepState::Succeeded);
    let failed = count(&|s| {
        matches!(
            s.status,
            StepState::Failed | StepState::TimedOut | StepState::RollbackFailed
        )
    });
    let not_run = count(&|s| {
        matches!(
            s.status,
            StepState::NotRun | StepState::Skipped | StepState::Pending
        )
    });
    let over = count(&|s| s.overrun_ms.is_some());
    let undone = count(&|s| s.status == StepState::RolledBack);
    o.push_str("<div class=\"cards\">\n");
    card(
        o,
        "Duration",
        &dur(run.duration_ms),
        "",
        &format!("planned {}", dur(w.planned_duration_ms)),
    );
    card(o, "Window", &wv, wclass, &ws);
    let svc = &r.service;
    card(
        o,
        "Service closed",
        &if svc.intervals.is_empty() {
            "Not closed".to_owned()
        } else {
            dur(svc.closed_ms)
        },
        if svc.still_closed { "bad" } else { "" },
        &if svc.still_closed {
            "STILL CLOSED".to_owned()
        } else {
            format!(
                "{} closure{}",
                svc.intervals.len(),
                if svc.intervals.len() == 1 { "" } else { "s" }
            )
        },
    );
    card(
        o,
        "Steps",
        &format!("{done} of {}", r.steps.len()),
        if failed > 0 { "bad" } else { "" },
        &format!("succeeded; {failed} failed · {undone} undone · {not_run} not run · {over} over"),
    );
    let undo_of = |st: UndoStatus| -> usize {
        r.rollbacks
            .iter()
            .flat_map(|rb| &rb.steps)
            .filter(|s| s.status == st)
            .count()
    };
    let (undo_steps, undo_failed) = (undo_of(UndoStatus::Undone), undo_of(UndoStatus::UndoFailed));
    card(
        o,
        "Rollbacks",
        &if r.rollbacks.is_empty() {
            "None".to_owned()
        } else {
            r.rollbacks.len().to_string()
        },
        if r.rollbacks.is_empty() { "" } else { "warn" },
        &if r.rollbacks.is_empty() {
            String::new()
        } else {
            let mut t = format!(
                "{undo_steps} step{} undone",
                if undo_steps == 1 { "" } else { "s" }
            );
            if undo_failed > 0 {
                t.push_str(&format!(", {undo_failed} failed to undo"));
            }
            t
        },
    );
    card(
        o,
        "Public updates",
        &r.public_updates.len().to_string(),
        "",
        &r.public_updates
            .last()
            .map(|u| format!("last: {}", u.status))
            .unwrap_or_default(),
    );
    o.push_str("</div>\n");
}

/// Who ran what, where and when.
pub(super) fn facts(o: &mut String, r: &Report, clock: &Clock) {
    let run = &r.run;
    o.push_str("<dl class=\"facts\">\n");
    fact(o, "Run", &format!("<code>{}</code>", h(&run.id)));
    let mut outcome = h(run.outcome.label());
    if let Some(reason) = &run.reason {
        let _ = write!(outcome, ": {}", h(reason));
    }
    if let Some(by) = &run.aborted_by {
        let _ = write!(outcome, " (aborted by {})", h(by));
    }
    if run.rehearsal {
        outcome.push_str(" (a rehearsal: customers were told nothing)");
    }
    fact(o, "Outcome", &outcome);
    if let Some(t) = run.public_title.as_ref().filter(|t| **t != run.title) {
        fact(o, "Public title", &h(t));
    }
    if let Some(s) = &run.summary {
        fact(o, "Summary", &h(s));
    }
    fact(
        o,
        "Operator",
        &format!("{} on {}", h(&run.operator), h(&run.host)),
    );
    fact(o, "Started", &h(&clock.full(run.started_at_ms)));
    fact(
        o,
        "Ended",
        &run.ended_at_ms
            .map(|e| h(&clock.full(e)))
            .unwrap_or_else(|| format!("not yet ({} so far)", h(&dur(run.duration_ms)))),
    );
    if !run.components.is_empty() {
        fact(o, "Components", &h(&run.components.join(", ")));
    }
    if let Some(m) = &run.maintenance {
        fact(
            o,
            "Scheduled maintenance",
            &format!("<code>{}</code>", h(m)),
        );
    }
    fact(
        o,
        "Runbook file",
        &format!(
            "<code>{}</code> <span class=\"muted\">sha256 {}</span>",
            h(&run.file),
            h(&cut(&run.file_sha256, 12))
        ),
    );
    fact(o, "Times", &h(clock.zone()));
    o.push_str("</dl>\n");
}

/// The planned window against the actual one.
pub(super) fn window(o: &mut String, r: &Report, clock: &Clock) {
    let run = &r.run;
    let w = &r.window;
    o.push_str("<section>\n<h2>Window</h2>\n<table>\n<thead><tr><th></th><th>Start</th><th>End</th><th>Duration</th></tr></thead>\n<tbody>\n");
    let _ = writeln!(
        o,
        "<tr><th>Planned</th><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td></tr>",
        h(&clock.full(w.planned_start_ms)),
        h(&clock.full(w.planned_end_ms)),
        h(&dur(w.planned_duration_ms))
    );
    let _ = writeln!(
        o,
        "<tr><th>Actual</th><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td></tr>\n</tbody>\n</table>",
        h(&clock.full(w.actual_start_ms)),
        w.actual_end_ms
            .map(|e| h(&clock.full(e)))
            .unwrap_or_else(|| "not ended".into()),
        h(&dur(run.duration_ms))
    );
    let _ = writeln!(
        o,
        "<p>{}</p>\n<p class=\"muted\">{}</p>\n</section>",
        emphasis(&window_verdict(w, run.finished)),
        emphasis(&window_basis(w, clock))
    );
}

/// When the service was closed to customers.
pub(super) fn service(o: &mut String, r: &Report, clock: &Clock) {
    let svc = &r.service;
    let _ = writeln!(
        o,
        "<section>\n<h2>Service closed</h2>\n<p>{}</p>",
        emphasis(&closed_text(svc, clock))
    );
    if !svc.intervals.is_empty() {
        o.push_str("<table>\n<thead><tr><th>Closed</th><th>Reopened</th><th>For</th></tr></thead>\n<tbody>\n");
        for i in &svc.intervals {
            let _ = writeln!(
                o,
                "<tr><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td></tr>",
                h(&clock.time(i.closed_at_ms)),
                i.reopened_at_ms
                    .map(|t| h(&clock.time(t)))
                    .unwrap_or_else(|| "<strong class=\"over\">still closed</strong>".into()),
                h(&dur(i.duration_ms))
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
    o.push_str("</section>\n");
}

/// The planned-versus-actual chart with its legend.
pub(super) fn chart(o: &mut String, r: &Report, clock: &Clock) {
    o.push_str("<section>\n<h2>Planned versus actual</h2>\n");
    o.push_str(
        "<div class=\"legend\"><span><i style=\"background:#c7d2fe\"></i>planned</span>\
         <span><i style=\"background:#2563eb\"></i>actual</span>\
         <span><i style=\"background:#dc2626\"></i>actual, over expected</span>\
         <span><i style=\"background:#6b7280;outline:1.5px solid #111827\"></i>failed (outlined)</span>\
         <span><i style=\"background:#a855f7\"></i>undo</span>\
         <span><i style=\"background:#dcfce7;border:1px solid #86efac\"></i>planned window</span>\
         <span><i style=\"background:#b91c1c;height:2px\"></i>window end</span></div>\n",
    );
    o.push_str("<div class=\"gantt\">\n");
    gantt(o, r, clock);
    o.push_str("</div>\n</section>\n");
}

/// Every step: planned, actual, attempts, what it produced and what went wrong.
pub(super) fn steps(o: &mut String, r: &Report, clock: &Clock) {
    o.push_str("<section>\n<h2>Steps</h2>\n<table>\n<thead><tr><th>#</th><th>Step</th><th>Status</th><th>Planned</th><th>Actual</th><th>Took</th><th>Att.</th><th>Overrun</th><th>Details</th></tr></thead>\n<tbody>\n");
    for s in &r.steps {
        let mut name = format!(
            "{}<br><code>{}</code> <span class=\"tag\">{}</span>",
            h(&s.title),
            h(&s.id),
            h(&s.kind)
        );
        if s.checkpoint {
            name.push_str(" <span class=\"tag\">checkpoint</span>");
        }
        if s.public_title.is_none() {
            name.push_str(" <span class=\"tag\">hidden</span>");
        }
        let planned = format!(
            "{}<br><span class=\"muted\">{}</span>",
            h(&span(
                clock,
                Some(s.planned_start_ms),
                Some(s.planned_end_ms)
            )),
            s.expected_ms
                .map(|x| format!("expected {}", h(&dur(x as i64))))
                .unwrap_or_else(|| "no expected time".into())
        );
        let dets = details(s, clock);
        let n_err = s.errors.len()
            + usize::from(s.errors_omitted > 0)
            + usize::from(
                s.error
                    .as_ref()
                    .is_some_and(|e| !s.errors.iter().any(|x| &x.error == e)),
            );
        let first_err = usize::from(!s.outputs.is_empty()) + usize::from(s.items.is_some());
        let mut list = String::new();
        if !dets.is_empty() {
            list.push_str("<ul class=\"details\">");
            for (i, d) in dets.iter().enumerate() {
                let err = i >= first_err && i < first_err + n_err;
                let _ = write!(
                    list,
                    "<li{}>{}</li>",
                    if err { " class=\"err\"" } else { "" },
                    h(d)
                );
            }
            list.push_str("</ul>");
        }
        let _ = writeln!(
            o,
            "<tr><td class=\"num\">{}</td><td>{name}</td><td><span class=\"st st-{}\">{}</span></td><td class=\"t\">{planned}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"num\">{}</td><td class=\"t\">{}</td><td>{list}</td></tr>",
            s.position,
            s.status.as_str(),
            h(s.status.label()),
            h(&span(clock, s.actual_start_ms, s.actual_end_ms)),
            s.duration_ms
                .map(|d| h(&dur(d)))
                .unwrap_or_else(|| "—".into()),
            s.attempts,
            s.overrun_ms
                .map(|x| format!("<span class=\"over\">+{}</span>", h(&dur(x))))
                .unwrap_or_default(),
        );
    }
    o.push_str("</tbody>\n</table>\n</section>\n");
}

/// Each rollback and what it undid.
pub(super) fn rollbacks(o: &mut String, r: &Report, clock: &Clock) {
    o.push_str("<section>\n<h2>Rollbacks</h2>\n");
    if r.rollbacks.is_empty() {
        o.push_str("<p class=\"muted\">None.</p>\n");
    }
    for rb in &r.rollbacks {
        let _ = writeln!(
            o,
            "<p>Started {}: {}.<br>{}.</p>",
            h(&clock.time(rb.started_at_ms)),
            h(&rb.reason),
            h(&rollback_end(rb, clock))
        );
        if rb.steps.is_empty() {
            o.push_str("<p class=\"muted\">No step needed undoing.</p>\n");
            continue;
        }
        o.push_str("<table>\n<thead><tr><th>Step</th><th>Undo</th><th>Started</th><th>Took</th><th>Error</th></tr></thead>\n<tbody>\n");
        for s in &rb.steps {
            let _ = writeln!(
                o,
                "<tr><td>{} <code>{}</code></td><td class=\"st st-{}\">{}</td><td class=\"t\">{}</td><td>{}</td><td>{}</td></tr>",
                h(&s.title),
                h(&s.id),
                match s.status {
                    UndoStatus::Undone | UndoStatus::Restored => "rolled_back",
                    UndoStatus::UndoFailed | UndoStatus::Left => "rollback_failed",
                    UndoStatus::Undoing => "running",
                },
                h(undo_label(s.status)),
                h(&clock.time(s.started_at_ms)),
                s.duration_ms
                    .map(|d| h(&dur(d)))
                    .unwrap_or_else(|| "—".into()),
                s.error.as_deref().map(h).unwrap_or_default()
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
    o.push_str("</section>\n");
}

/// The waits for a person.
pub(super) fn approvals(o: &mut String, r: &Report, clock: &Clock) {
    o.push_str("<section>\n<h2>Approvals</h2>\n");
    if r.approvals.is_empty() {
        o.push_str("<p class=\"muted\">None.</p>\n");
    } else {
        o.push_str("<table>\n<thead><tr><th>Step</th><th>Decision</th><th>By</th><th>Requested</th><th>Decided</th><th>Waited</th></tr></thead>\n<tbody>\n");
        for a in &r.approvals {
            let _ = writeln!(
                o,
                "<tr><td>{} <code>{}</code></td><td>{}</td><td>{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td></tr>",
                h(&a.title),
                h(&a.step),
                h(approval_label(a.decision)),
                crate::report::markdown::who_said(a.by.as_deref(), a.comment.as_deref(), h),
                h(&clock.time(a.requested_at_ms)),
                a.decided_at_ms
                    .map(|t| h(&clock.time(t)))
                    .unwrap_or_else(|| "—".into()),
                if a.decision == ApprovalDecision::Waiting {
                    format!("{} so far", h(&dur(a.waited_ms)))
                } else {
                    h(&dur(a.waited_ms))
                }
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
    o.push_str("</section>\n");
}

/// The public updates as published.
pub(super) fn updates(o: &mut String, r: &Report, clock: &Clock) {
    o.push_str("<section>\n<h2>Public updates</h2>\n");
    updates_table(o, r, clock);
    o.push_str("</section>\n");
}

/// The postmortem draft, for a run that did not complete.
pub(super) fn postmortem(o: &mut String, r: &Report, clock: &Clock) {
    if let Some(pm) = &r.postmortem {
        o.push_str("<section class=\"postmortem\">\n<h2>Postmortem draft</h2>\n");
        let _ = writeln!(o, "<h3>Summary</h3>\n<p>{}</p>", emphasis(&pm.summary));
        o.push_str("<h3>What happened</h3>\n<ol class=\"timeline\">\n");
        for e in &pm.timeline {
            let _ = writeln!(
                o,
                "<li><time datetime=\"{}\">{}</time>{}</li>",
                h(&e.at),
                h(&clock.time(e.at_ms)),
                emphasis(&e.text)
            );
        }
        o.push_str("</ol>\n");
        let _ = writeln!(o, "<h3>Impact</h3>\n<p>{}</p>", h(&pm.impact.text));
        updates_table(o, r, clock);
        let _ = writeln!(
            o,
            "<h3>Root cause</h3>\n<p class=\"placeholder\">{}</p>\n<h3>Follow-ups</h3>\n<p class=\"placeholder\">{}</p>\n</section>",
            h(&pm.root_cause),
            h(&pm.follow_ups)
        );
    }
}

/// Where the report comes from.
pub(super) fn footer(o: &mut String, r: &Report, clock: &Clock) {
    let run = &r.run;
    let _ = writeln!(
        o,
        "<footer>Made by <code>runbook report</code> on {} from the journal of run <code>{}</code> ({} events). Times in {}.</footer>\n</main>\n</body>\n</html>",
        h(&clock.full(r.generated_at_ms)),
        h(&run.id),
        run.events,
        h(clock.zone())
    );
}

/// Every `runbook resume`: when, what, who and why.
pub(super) fn resumes(o: &mut String, r: &Report, clock: &Clock) {
    if r.resumes.is_empty() {
        return;
    }
    o.push_str("<section>\n<h2>Decisions</h2>\n<table>\n<thead><tr><th>At</th><th>Decision</th><th>By</th></tr></thead>\n<tbody>\n");
    for d in &r.resumes {
        let _ = writeln!(
            o,
            "<tr><td class=\"t\">{}</td><td>resume: {}</td><td>{}</td></tr>",
            h(&clock.time(d.at_ms)),
            h(&d.decision),
            crate::report::markdown::who_said(Some(&d.by), d.reason.as_deref(), h)
        );
    }
    o.push_str("</tbody>\n</table>\n</section>\n");
}
