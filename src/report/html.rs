//! The report as one self-contained HTML page: inline CSS, an inline SVG Gantt chart,
//! no scripts and no external assets, so it opens offline and prints. Every text from
//! the journal goes through the template renderer's HTML escaping
//! ([`crate::template::html_escape`]).

use std::fmt::Write as _;

use chrono::{Offset as _, TimeZone as _};
use chrono_tz::Tz;

use super::markdown::{
    approval_label, closed_text, details, rollback_end, span, undo_label, window_basis,
    window_verdict,
};
use super::model::*;
use super::{Clock, build::cut, delta, dur};

/// Escapes text for HTML (and the SVG inside it).
fn h(s: &str) -> String {
    crate::template::html_escape(s)
}

/// Markdown-ish emphasis of the shared sentences (`**x**`, `` `x` ``) as HTML, after
/// escaping: those sentences are ours, with journal text already inside.
fn emphasis(s: &str) -> String {
    let escaped = h(s);
    let mut out = String::with_capacity(escaped.len());
    let mut bold = false;
    let mut code = false;
    let mut rest = escaped.as_str();
    while let Some(c) = rest.chars().next() {
        // A masked secret in the journal's text shows as itself.
        if rest.starts_with(crate::engine::mask::MASK) {
            out.push_str(crate::engine::mask::MASK);
            rest = &rest[crate::engine::mask::MASK.len()..];
            continue;
        }
        if rest.starts_with("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = &rest[2..];
            continue;
        }
        if rest.starts_with("&#x60;") {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = &rest["&#x60;".len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if bold {
        out.push_str("</strong>");
    }
    if code {
        out.push_str("</code>");
    }
    out
}

const CSS: &str = r#"
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#ffffff; --soft:#f9fafb;
  --ok:#15803d; --bad:#b91c1c; --warn:#b45309; --info:#1d4ed8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 40px; }
h1 { font-size: 26px; margin: 4px 0 10px; line-height: 1.2; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
code { font: 12.5px/1.3 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f3f4f6;
  padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
.eyebrow { color: var(--muted); margin: 0; font-size: 13px; }
.badge { display: inline-block; padding: 3px 10px; border-radius: 999px; font-weight: 600; font-size: 13px;
  border: 1px solid currentColor; }
.b-ok { color: var(--ok); background: #f0fdf4; } .b-bad { color: var(--bad); background: #fef2f2; }
.b-warn { color: var(--warn); background: #fffbeb; } .b-info { color: var(--info); background: #eff6ff; }
.b-muted { color: var(--muted); background: var(--soft); }
.sofar { margin: 14px 0 0; padding: 10px 14px; border: 2px dashed var(--warn); background: #fffbeb;
  border-radius: 6px; font-weight: 600; color: #78350f; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 10px; margin: 18px 0 6px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; background: var(--soft); }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 17px; font-weight: 650; margin-top: 2px; }
.card .s { color: var(--muted); font-size: 12.5px; }
.v.ok { color: var(--ok); } .v.bad { color: var(--bad); } .v.warn { color: var(--warn); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 12px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 13px; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--line); }
th { background: var(--soft); font-weight: 600; color: #374151; white-space: nowrap; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); }
.over { color: var(--bad); font-weight: 600; }
.st { font-weight: 600; white-space: nowrap; }
.st-succeeded, .st-rolled_back { color: var(--ok); }
.st-failed, .st-timed_out, .st-rollback_failed { color: var(--bad); }
.st-running, .st-checking, .st-awaiting_approval, .st-rolling_back { color: var(--info); }
.st-skipped, .st-not_run, .st-pending { color: var(--muted); }
ul.details { margin: 0; padding-left: 16px; } ul.details li { overflow-wrap: anywhere; }
li.err { color: var(--bad); }
.tag { font-size: 11px; color: var(--muted); border: 1px solid var(--line); border-radius: 4px; padding: 0 4px; white-space: nowrap; }
.gantt { width: 100%; overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; padding: 6px 0; }
.gantt svg { display: block; width: 100%; height: auto; font-family: inherit; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; color: var(--muted); font-size: 12.5px; margin: 6px 0; }
.legend i { display: inline-block; width: 18px; height: 9px; margin-right: 5px; vertical-align: middle; border-radius: 2px; }
ol.timeline { list-style: none; padding: 0; margin: 0; border-left: 2px solid var(--line); }
ol.timeline li { margin: 0 0 4px; padding-left: 12px; }
ol.timeline time { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: 8px; }
.postmortem { border: 1px solid var(--line); border-radius: 8px; padding: 4px 18px 14px; margin-top: 28px; background: #fffdf7; }
.placeholder { color: var(--warn); font-style: italic; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 10px; }
@media print {
  body { font-size: 10.5pt; } main { max-width: none; padding: 0; }
  .gantt { overflow: visible; border: none; } h2 { break-after: avoid; }
  .postmortem { break-before: page; } a { color: inherit; text-decoration: none; }
  .card, .badge, .sofar, th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
@page { margin: 14mm; }
"#;

fn outcome_class(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "b-ok",
        Outcome::RolledBack => "b-warn",
        Outcome::Failed | Outcome::Aborted => "b-bad",
        _ => "b-info",
    }
}

pub(super) fn render(r: &Report) -> String {
    let run = &r.run;
    let w = &r.window;
    let clock = Clock::new(&run.timezone, w.planned_start_ms.min(run.started_at_ms));
    let mut o = String::with_capacity(16_384 + r.steps.len() * 1_500);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"runbook report\">\n\
         <title>{} — maintenance report {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        h(&run.title),
        h(&run.id)
    );

    // Header.
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

    // Cards.
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
        &mut o,
        "Duration",
        &dur(run.duration_ms),
        "",
        &format!("planned {}", dur(w.planned_duration_ms)),
    );
    card(&mut o, "Window", &wv, wclass, &ws);
    let svc = &r.service;
    card(
        &mut o,
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
        &mut o,
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
        &mut o,
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
        &mut o,
        "Public updates",
        &r.public_updates.len().to_string(),
        "",
        &r.public_updates
            .last()
            .map(|u| format!("last: {}", u.status))
            .unwrap_or_default(),
    );
    o.push_str("</div>\n");

    // Facts.
    o.push_str("<dl class=\"facts\">\n");
    fact(&mut o, "Run", &format!("<code>{}</code>", h(&run.id)));
    let mut outcome = h(run.outcome.label());
    if let Some(reason) = &run.reason {
        let _ = write!(outcome, ": {}", h(reason));
    }
    if let Some(by) = &run.aborted_by {
        let _ = write!(outcome, " (aborted by {})", h(by));
    }
    fact(&mut o, "Outcome", &outcome);
    if let Some(t) = run.public_title.as_ref().filter(|t| **t != run.title) {
        fact(&mut o, "Public title", &h(t));
    }
    if let Some(s) = &run.summary {
        fact(&mut o, "Summary", &h(s));
    }
    fact(
        &mut o,
        "Operator",
        &format!("{} on {}", h(&run.operator), h(&run.host)),
    );
    fact(&mut o, "Started", &h(&clock.full(run.started_at_ms)));
    fact(
        &mut o,
        "Ended",
        &run.ended_at_ms
            .map(|e| h(&clock.full(e)))
            .unwrap_or_else(|| format!("not yet ({} so far)", h(&dur(run.duration_ms)))),
    );
    if !run.components.is_empty() {
        fact(&mut o, "Components", &h(&run.components.join(", ")));
    }
    if let Some(m) = &run.maintenance {
        fact(
            &mut o,
            "Scheduled maintenance",
            &format!("<code>{}</code>", h(m)),
        );
    }
    fact(
        &mut o,
        "Runbook file",
        &format!(
            "<code>{}</code> <span class=\"muted\">sha256 {}</span>",
            h(&run.file),
            h(&cut(&run.file_sha256, 12))
        ),
    );
    fact(&mut o, "Times", &h(clock.zone()));
    o.push_str("</dl>\n");

    // Window.
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
        emphasis(&window_basis(w, &clock))
    );

    // Service.
    let _ = writeln!(
        o,
        "<section>\n<h2>Service closed</h2>\n<p>{}</p>",
        emphasis(&closed_text(svc, &clock))
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

    // Gantt.
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
    gantt(&mut o, r, &clock);
    o.push_str("</div>\n</section>\n");

    // Steps.
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
                &clock,
                Some(s.planned_start_ms),
                Some(s.planned_end_ms)
            )),
            s.expected_ms
                .map(|x| format!("expected {}", h(&dur(x as i64))))
                .unwrap_or_else(|| "no expected time".into())
        );
        let dets = details(s, &clock);
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
            h(&span(&clock, s.actual_start_ms, s.actual_end_ms)),
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

    // Rollbacks.
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
            h(&rollback_end(rb, &clock))
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

    // Approvals.
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
                a.by.as_deref().map(h).unwrap_or_else(|| "—".into()),
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

    // Public updates.
    o.push_str("<section>\n<h2>Public updates</h2>\n");
    updates_table(&mut o, r, &clock);
    o.push_str("</section>\n");

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
        updates_table(&mut o, r, &clock);
        let _ = writeln!(
            o,
            "<h3>Root cause</h3>\n<p class=\"placeholder\">{}</p>\n<h3>Follow-ups</h3>\n<p class=\"placeholder\">{}</p>\n</section>",
            h(&pm.root_cause),
            h(&pm.follow_ups)
        );
    }

    let _ = writeln!(
        o,
        "<footer>Made by <code>runbook report</code> on {} from the journal of run <code>{}</code> ({} events). Times in {}.</footer>\n</main>\n</body>\n</html>",
        h(&clock.full(r.generated_at_ms)),
        h(&run.id),
        run.events,
        h(clock.zone())
    );
    o
}

fn card(o: &mut String, k: &str, v: &str, class: &str, s: &str) {
    let _ = writeln!(
        o,
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v {class}\">{}</div><div class=\"s\">{}</div></div>",
        h(k),
        h(v),
        h(s)
    );
}

fn fact(o: &mut String, k: &str, v_html: &str) {
    let _ = writeln!(o, "<dt>{}</dt><dd>{v_html}</dd>", h(k));
}

fn updates_table(o: &mut String, r: &Report, clock: &Clock) {
    if r.public_updates.is_empty() {
        o.push_str("<p class=\"muted\">None were published.</p>\n");
        return;
    }
    o.push_str(
        "<table>\n<thead><tr><th>Time</th><th>Status</th><th>Update</th></tr></thead>\n<tbody>\n",
    );
    for u in &r.public_updates {
        let _ = writeln!(
            o,
            "<tr><td class=\"t\">{}</td><td>{}{}</td><td>{}</td></tr>",
            h(&clock.time(u.at_ms)),
            h(&u.status),
            if u.incident {
                " <span class=\"tag\">incident</span>"
            } else {
                ""
            },
            h(&u.body)
        );
    }
    o.push_str("</tbody>\n</table>\n");
}

/// Axis steps, smallest first (ms).
const TICKS: &[i64] = &[
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
    1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
];

/// The Gantt chart: two bars per step (planned light, actual solid, red when over its
/// expected time), a time axis in the runbook's zone, the planned window shaded and its
/// end as a line.
fn gantt(o: &mut String, r: &Report, clock: &Clock) {
    const W: f64 = 1160.0;
    const LABEL: f64 = 270.0;
    const X0: f64 = LABEL + 10.0;
    const X1: f64 = W - 24.0;
    const TOP: f64 = 34.0;
    const ROW: f64 = 22.0;
    let w = &r.window;
    let now = r.generated_at_ms;
    let finished = r.run.finished;
    let end_of = |s: &StepReport| -> Option<i64> {
        match (s.actual_start_ms, s.actual_end_ms) {
            (_, Some(e)) => Some(e),
            (Some(_), None) if !finished => Some(now),
            _ => None,
        }
    };
    // The domain: everything planned and everything that happened.
    let mut t0 = w.planned_start_ms.min(w.actual_start_ms);
    let mut t1 = w
        .planned_end_ms
        .max(w.actual_end_ms.unwrap_or(if finished { t0 } else { now }));
    for s in &r.steps {
        t0 = t0.min(s.planned_start_ms);
        t1 = t1.max(s.planned_end_ms);
        if let Some(a) = s.actual_start_ms {
            t0 = t0.min(a);
        }
        if let Some(e) = end_of(s) {
            t1 = t1.max(e);
        }
        if let Some(u) = &s.undo {
            t1 = t1.max(u.ended_at_ms.unwrap_or(u.started_at_ms));
        }
    }
    if t1 <= t0 {
        t1 = t0 + 1_000;
    }
    let pad = ((t1 - t0) as f64 * 0.02) as i64;
    let (t0, t1) = (t0 - pad, t1 + pad.max(1));
    let span_ms = (t1 - t0) as f64;
    let x = |t: i64| X0 + (t - t0) as f64 / span_ms * (X1 - X0);
    let rows = r.steps.len().max(1) as f64;
    let height = TOP + rows * ROW + 12.0;
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {height}\" width=\"{W}\" height=\"{height}\" role=\"img\" aria-label=\"Gantt chart: planned versus actual time of every step\" font-size=\"12\">"
    );
    // Row stripes.
    for i in (0..r.steps.len()).step_by(2) {
        let _ = writeln!(
            o,
            "<rect x=\"0\" y=\"{:.1}\" width=\"{W}\" height=\"{ROW}\" fill=\"#f9fafb\"/>",
            TOP + i as f64 * ROW
        );
    }
    // The planned window, shaded.
    let (wx0, wx1) = (x(w.planned_start_ms), x(w.planned_end_ms));
    let _ = writeln!(
        o,
        "<rect x=\"{wx0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#dcfce7\" fill-opacity=\"0.55\"><title>planned window {}</title></rect>",
        (wx1 - wx0).max(1.0),
        rows * ROW,
        h(&span(
            clock,
            Some(w.planned_start_ms),
            Some(w.planned_end_ms)
        ))
    );
    // Axis: ticks at round local times.
    let tick = TICKS
        .iter()
        .copied()
        .find(|t| span_ms / *t as f64 <= 8.0)
        .unwrap_or(86_400_000);
    let tz: Tz = r.run.timezone.parse().unwrap_or(Tz::UTC);
    let offset = tz
        .timestamp_millis_opt(t0)
        .single()
        .map(|t| t.offset().fix().local_minus_utc() as i64 * 1000)
        .unwrap_or(0);
    let mut t = (t0 + offset).div_euclid(tick) * tick - offset;
    if t < t0 {
        t += tick;
    }
    let seconds = tick < 60_000;
    while t <= t1 {
        let tx = x(t);
        let _ = writeln!(
            o,
            "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#e5e7eb\"/><text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#6b7280\">{}</text>",
            TOP - 4.0,
            TOP + rows * ROW,
            TOP - 10.0,
            h(&clock.tick(t, seconds))
        );
        t += tick;
    }
    // Bars.
    for (i, s) in r.steps.iter().enumerate() {
        let y = TOP + i as f64 * ROW;
        let mut label = format!("{}. {}", s.position, s.title);
        label = cut(&label, 38);
        let _ = writeln!(
            o,
            "<text x=\"{LABEL}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#111827\">{}<title>{} ({}): {}</title></text>",
            y + 15.0,
            h(&label),
            h(&s.title),
            h(&s.id),
            h(s.status.label())
        );
        let px0 = x(s.planned_start_ms);
        let pw = (x(s.planned_end_ms) - px0).max(2.0);
        let _ = writeln!(
            o,
            "<rect x=\"{px0:.1}\" y=\"{:.1}\" width=\"{pw:.1}\" height=\"7\" rx=\"1.5\" fill=\"#c7d2fe\"><title>planned {} ({})</title></rect>",
            y + 3.0,
            h(&span(
                clock,
                Some(s.planned_start_ms),
                Some(s.planned_end_ms)
            )),
            h(&s.expected_ms
                .map(|e| dur(e as i64))
                .unwrap_or_else(|| "no expected time".into()))
        );
        if let (Some(a), Some(e)) = (s.actual_start_ms, end_of(s)) {
            let ax0 = x(a);
            let aw = (x(e) - ax0).max(2.0);
            let failed = matches!(s.status, StepState::Failed | StepState::TimedOut);
            let color = if s.overrun_ms.is_some() {
                "#dc2626"
            } else if failed {
                "#6b7280"
            } else {
                "#2563eb"
            };
            let running = s.actual_end_ms.is_none();
            let mut tip = format!("actual {}", span(clock, Some(a), s.actual_end_ms));
            if let Some(d) = s.duration_ms {
                let _ = write!(tip, " ({})", dur(d));
            }
            if let Some(ov) = s.overrun_ms {
                let _ = write!(tip, ", {} over", delta(ov));
            }
            let _ = writeln!(
                o,
                "<rect x=\"{ax0:.1}\" y=\"{:.1}\" width=\"{aw:.1}\" height=\"8\" rx=\"1.5\" fill=\"{color}\"{}{}><title>{}: {}</title></rect>",
                y + 11.0,
                if running {
                    " fill-opacity=\"0.55\""
                } else {
                    ""
                },
                if failed {
                    " stroke=\"#111827\" stroke-width=\"1.5\""
                } else {
                    ""
                },
                h(s.status.label()),
                h(&tip)
            );
        }
        if let Some(u) = &s.undo {
            let ux0 = x(u.started_at_ms);
            let uw = (x(u.ended_at_ms.unwrap_or(now)) - ux0).max(2.0);
            let _ = writeln!(
                o,
                "<rect x=\"{ux0:.1}\" y=\"{:.1}\" width=\"{uw:.1}\" height=\"8\" rx=\"1.5\" fill=\"#a855f7\"><title>{}</title></rect>",
                y + 11.0,
                h(&format!("undo: {}", undo_label(u.status)))
            );
        }
    }
    // The window's end, and now for a run still going on.
    let _ = writeln!(
        o,
        "<line x1=\"{wx1:.1}\" y1=\"{:.1}\" x2=\"{wx1:.1}\" y2=\"{:.1}\" stroke=\"#b91c1c\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/><text x=\"{wx1:.1}\" y=\"{:.1}\" text-anchor=\"{}\" fill=\"#b91c1c\" font-weight=\"600\">window end {}</text>",
        TOP - 2.0,
        TOP + rows * ROW,
        TOP - 22.0,
        if wx1 > X1 - 80.0 { "end" } else { "middle" },
        h(&clock.tick(w.planned_end_ms, seconds))
    );
    if !finished {
        let nx = x(now);
        let _ = writeln!(
            o,
            "<line x1=\"{nx:.1}\" y1=\"{:.1}\" x2=\"{nx:.1}\" y2=\"{:.1}\" stroke=\"#1d4ed8\" stroke-width=\"1.5\" stroke-dasharray=\"2 3\"/><text x=\"{nx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#1d4ed8\">now</text>",
            TOP - 2.0,
            TOP + rows * ROW,
            TOP + rows * ROW + 11.0
        );
    }
    o.push_str("</svg>\n");
}
