//! The report as one self-contained HTML page: inline CSS, an inline SVG Gantt chart,
//! no scripts and no external assets, so it opens offline and prints. Every text from
//! the journal goes through the template renderer's HTML escaping
//! ([`crate::template::html_escape`]).

mod gantt;
mod sections;

use std::fmt::Write as _;

use super::Clock;
use super::model::*;

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

    sections::header(&mut o, r, &clock);
    sections::cards(&mut o, r);
    sections::facts(&mut o, r, &clock);
    sections::window(&mut o, r, &clock);
    sections::service(&mut o, r, &clock);
    sections::chart(&mut o, r, &clock);
    sections::steps(&mut o, r, &clock);
    sections::rollbacks(&mut o, r, &clock);
    sections::approvals(&mut o, r, &clock);
    sections::resumes(&mut o, r, &clock);
    sections::updates(&mut o, r, &clock);
    sections::postmortem(&mut o, r, &clock);
    sections::footer(&mut o, r, &clock);
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
