//! The report's Gantt chart, as inline SVG.

use std::fmt::Write as _;

use chrono::{Offset as _, TimeZone as _};
use chrono_tz::Tz;

use super::super::markdown::{span, undo_label};
use super::super::model::*;
use super::super::{Clock, delta, dur, figures::cut};
use super::h;

/// Axis steps, smallest first (ms).
const TICKS: &[i64] = &[
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
    1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
];

const W: f64 = 1160.0;
const LABEL: f64 = 270.0;
const X0: f64 = LABEL + 10.0;
const X1: f64 = W - 24.0;
const TOP: f64 = 34.0;
const ROW: f64 = 22.0;

/// The chart's time scale: everything planned and everything that happened, padded.
struct Scale {
    t0: i64,
    t1: i64,
    now: i64,
    finished: bool,
    /// The run took far less than its window: the chart shows the run, and the window's
    /// end is marked past its right edge.
    zoomed: bool,
}

/// A window more than this many times longer than the run is not drawn whole.
const ZOOM: i64 = 4;

impl Scale {
    fn of(r: &Report) -> Scale {
        let w = &r.window;
        let now = r.generated_at_ms;
        let finished = r.run.finished;
        let mut g = Scale {
            t0: w.planned_start_ms.min(w.actual_start_ms),
            t1: 0,
            now,
            finished,
            zoomed: false,
        };
        g.t1 = w.actual_end_ms.unwrap_or(if finished { g.t0 } else { now });
        for s in &r.steps {
            g.t0 = g.t0.min(s.planned_start_ms);
            g.t1 = g.t1.max(s.planned_end_ms);
            if let Some(a) = s.actual_start_ms {
                g.t0 = g.t0.min(a);
            }
            if let Some(e) = g.end_of(s) {
                g.t1 = g.t1.max(e);
            }
            if let Some(u) = &s.undo {
                g.t1 = g.t1.max(u.ended_at_ms.unwrap_or(u.started_at_ms));
            }
        }
        // What the steps planned and did, against the whole window.
        let work = (g.t1 - g.t0).max(1_000);
        if w.planned_end_ms - g.t0 > ZOOM * work {
            g.zoomed = true;
        } else {
            g.t1 = g.t1.max(w.planned_end_ms);
        }
        if g.t1 <= g.t0 {
            g.t1 = g.t0 + 1_000;
        }
        let pad = ((g.t1 - g.t0) as f64 * 0.02) as i64;
        g.t0 -= pad;
        g.t1 += pad.max(1);
        g
    }

    /// Where a step's actual bar ends: its end, or now while it runs.
    fn end_of(&self, s: &StepReport) -> Option<i64> {
        match (s.actual_start_ms, s.actual_end_ms) {
            (_, Some(e)) => Some(e),
            (Some(_), None) if !self.finished => Some(self.now),
            _ => None,
        }
    }

    fn span_ms(&self) -> f64 {
        (self.t1 - self.t0) as f64
    }

    /// The x coordinate of an instant.
    fn x(&self, t: i64) -> f64 {
        X0 + (t - self.t0) as f64 / self.span_ms() * (X1 - X0)
    }
}

/// The Gantt chart: two bars per step (planned light, actual solid, red when over its
/// expected time), a time axis in the runbook's zone, the planned window shaded and its
/// end as a line.
pub(super) fn gantt(o: &mut String, r: &Report, clock: &Clock) {
    let w = &r.window;
    let g = Scale::of(r);
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
    let (wx0, wx1) = (g.x(w.planned_start_ms), g.x(w.planned_end_ms).min(X1));
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
    let seconds = axis(o, r, clock, &g, rows);
    for (row, s) in r.steps.iter().enumerate() {
        bars(o, s, row, &g, clock);
    }
    // The window's end (past the right edge when the chart shows only the run), and now
    // for a run still going on.
    if g.zoomed {
        let _ = writeln!(
            o,
            "<text x=\"{X1:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#b91c1c\" font-weight=\"600\">window end {} → (zoomed to the run)</text>",
            TOP - 22.0,
            h(&clock.tick(w.planned_end_ms, seconds))
        );
    } else {
        let _ = writeln!(
            o,
            "<line x1=\"{wx1:.1}\" y1=\"{:.1}\" x2=\"{wx1:.1}\" y2=\"{:.1}\" stroke=\"#b91c1c\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/><text x=\"{wx1:.1}\" y=\"{:.1}\" text-anchor=\"{}\" fill=\"#b91c1c\" font-weight=\"600\">window end {}</text>",
            TOP - 2.0,
            TOP + rows * ROW,
            TOP - 22.0,
            if wx1 > X1 - 80.0 { "end" } else { "middle" },
            h(&clock.tick(w.planned_end_ms, seconds))
        );
    }
    if !g.finished {
        let nx = g.x(g.now);
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

/// The time axis: ticks at round local times. Whether they show seconds.
fn axis(o: &mut String, r: &Report, clock: &Clock, g: &Scale, rows: f64) -> bool {
    let tick = TICKS
        .iter()
        .copied()
        .find(|t| g.span_ms() / *t as f64 <= 8.0)
        .unwrap_or(86_400_000);
    let tz: Tz = r.run.timezone.parse().unwrap_or(Tz::UTC);
    let offset = tz
        .timestamp_millis_opt(g.t0)
        .single()
        .map(|t| t.offset().fix().local_minus_utc() as i64 * 1000)
        .unwrap_or(0);
    let mut t = (g.t0 + offset).div_euclid(tick) * tick - offset;
    if t < g.t0 {
        t += tick;
    }
    let seconds = tick < 60_000;
    while t <= g.t1 {
        let tx = g.x(t);
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
    seconds
}

/// One step's row: its label, its planned bar, its actual bar and its undo.
fn bars(o: &mut String, s: &StepReport, row: usize, g: &Scale, clock: &Clock) {
    let y = TOP + row as f64 * ROW;
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
    let px0 = g.x(s.planned_start_ms);
    let pw = (g.x(s.planned_end_ms) - px0).max(2.0);
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
    if let (Some(a), Some(e)) = (s.actual_start_ms, g.end_of(s)) {
        let ax0 = g.x(a);
        let aw = (g.x(e) - ax0).max(2.0);
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
        let ux0 = g.x(u.started_at_ms);
        let uw = (g.x(u.ended_at_ms.unwrap_or(g.now)) - ux0).max(2.0);
        let _ = writeln!(
            o,
            "<rect x=\"{ux0:.1}\" y=\"{:.1}\" width=\"{uw:.1}\" height=\"8\" rx=\"1.5\" fill=\"#a855f7\"><title>{}</title></rect>",
            y + 11.0,
            h(&format!("undo: {}", undo_label(u.status)))
        );
    }
}
