//! The planned timeline of a runbook: when each step should start and end, whether the
//! plan fits the window, and what a failure at each step would undo.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::duration::fmt_duration;
use crate::engine::undo;
use crate::runbook::{Action, Kind, OnFailure, Public, Runbook};

/// Where the plan's start time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartSource {
    Flag,
    Window,
    Now,
}

/// The planned timeline of a runbook.
#[derive(Debug, Clone, Serialize)]
pub struct Plan<'a> {
    pub runbook: &'a str,
    pub title: String,
    pub timezone: &'static str,
    pub start: DateTime<Utc>,
    pub start_source: StartSource,
    pub end: DateTime<Utc>,
    pub total_expected_seconds: u64,
    /// Window length, when the runbook has one.
    pub window_seconds: Option<u64>,
    pub window_end: Option<DateTime<Utc>>,
    /// Whether the expected total fits the window; absent without a window duration.
    pub fits_window: Option<bool>,
    /// Window length minus expected total: negative when the plan overruns.
    pub slack_seconds: Option<i64>,
    /// Steps without an `expected` duration (counted as zero).
    pub unestimated: Vec<&'a str>,
    pub steps: Vec<PlannedStep<'a>>,
    /// The first step before which the window guard would stop the run: from there,
    /// the step and the rollback of what is done no longer fit the window.
    pub point_of_no_return: Option<PointOfNoReturn<'a>>,
    /// The earlier runs the durations are learned from (completed, not forgotten; the
    /// latest 20), newest first.
    pub learned_from: Vec<crate::engine::timing::LearnedRun>,
}

/// Where the plan passes the point of no return.
#[derive(Debug, Clone, Serialize)]
pub struct PointOfNoReturn<'a> {
    pub step: &'a str,
    pub at: DateTime<Utc>,
    /// The planned rollback of what is done by then.
    pub rollback_seconds: u64,
}

/// One step of the planned timeline.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep<'a> {
    /// 1-based position in execution order.
    pub position: usize,
    pub id: &'a str,
    pub kind: &'static str,
    pub title: String,
    pub public: bool,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The runbook's `expected`.
    pub expected_seconds: Option<u64>,
    /// The duration the timeline uses: learned from earlier runs when there are any
    /// (scaled per item for a fan-out), else `expected`.
    pub estimate_seconds: u64,
    /// `learned`, `expected` or `unknown`.
    pub estimate_source: crate::engine::timing::Source,
    /// The earlier runs a learned figure is the median of.
    pub learned_runs: usize,
    /// What earlier runs took (median), whether or not it is used.
    pub learned_seconds: Option<u64>,
    pub checkpoint: bool,
    pub requires: &'a [String],
    /// Fan-out item count, when known before the run.
    pub items: Option<usize>,
    /// A host step (`on:`): how many hosts it runs on (after `--limit`).
    pub hosts: Option<usize>,
    /// An online migration step (`migrate` with `phase`): `start`, `complete` or
    /// `abort`; it does not close the service.
    pub online: Option<String>,
    /// A host step in waves: how many of its hosts are done by the end of each wave.
    pub waves: Option<Vec<usize>>,
    /// How this step is undone when a later failure rolls the run back.
    pub rollback: Option<String>,
    /// How this step is undone when a later step fails and rolls the run back to the
    /// last checkpoint before it: `rollback` (its own), `restore` (that checkpoint's
    /// `restore` brings it back), `left` (left as it is), or `null` (it changes nothing).
    pub undone_by: Option<&'static str>,
    pub if_it_fails: FailurePath<'a>,
}

/// What the engine would do if this step failed. The steps it goes back over are a
/// range of positions, each undone as its own `undone_by` says: the path is linear in
/// the steps, however far back the last checkpoint is.
#[derive(Debug, Clone, Serialize)]
pub struct FailurePath<'a> {
    pub policy: &'static str,
    /// The position of the most recent step the rollback goes back over (policy
    /// `rollback` with something to undo; else `null`).
    pub from_position: Option<usize>,
    /// The position of the earliest one.
    pub to_position: Option<usize>,
    /// How many of those steps are undone by their own rollback.
    pub undo: usize,
    /// How many the checkpoint's `restore` brings back.
    pub restored: usize,
    /// How many are left as they are: no rollback, and no restore covers them.
    pub left: usize,
    /// The checkpoint the run returns to, if any.
    pub back_to: Option<&'a str>,
    /// The checkpoint whose `restore` runs last, if it has one.
    pub restore_from: Option<&'a str>,
    /// The service is closed at this point, and the rollback ends by reopening it.
    pub reopen: bool,
}

impl FailurePath<'_> {
    /// The positions gone back over, most recent first.
    pub fn positions(&self) -> impl Iterator<Item = usize> {
        self.from_position
            .zip(self.to_position)
            .into_iter()
            .flat_map(|(from, to)| (to..=from).rev())
    }
}

/// Builds the plan. `start` overrides the window's start; without either, now.
pub fn plan(rb: &Runbook, start: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Plan<'_> {
    plan_learned(rb, start, now, &crate::engine::timing::Learned::default())
}

/// The plan with what earlier runs of the runbook took.
pub fn plan_learned<'a>(
    rb: &'a Runbook,
    start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    learned: &crate::engine::timing::Learned,
) -> Plan<'a> {
    let (start, start_source) = match (start, rb.window.start) {
        (Some(s), _) => (s, StartSource::Flag),
        (None, Some(s)) => (s, StartSource::Window),
        (None, None) => (now, StartSource::Now),
    };
    let data = template_data(rb, start);
    // Text as written (the plan is read on a terminal or as JSON, not as HTML), with
    // the secrets a variable holds masked.
    let masker =
        crate::engine::action::Masker::new(crate::engine::action::secret_values(&rb.secrets));
    let render = |text: &str| masker.mask(&crate::engine::publish::text(text, &data));

    let mut at = start;
    let mut steps = Vec::with_capacity(rb.order.len());
    let mut unestimated = Vec::new();
    let mut total = Duration::ZERO;
    // Whether the service is closed when the step starts (a rollback then reopens it).
    let mut closed = false;
    // The last checkpoint before the step, and what a rollback to it goes back over.
    let mut cp: Option<&crate::runbook::Step> = None;
    let mut stretch = Stretch::default();
    for (pos, &i) in rb.order.iter().enumerate() {
        let s = &rb.steps[i];
        let how = undo::how(cp, s, &rb.vars);
        let est = crate::engine::timing::estimate(s, rb.item_count(s), learned);
        let expected = Duration::from_millis(est.ms.max(0) as u64);
        if est.source == crate::engine::timing::Source::Unknown
            && !matches!(s.kind, Kind::Close | Kind::Reopen)
        {
            unestimated.push(s.id.as_str());
        }
        total += expected;
        let end = crate::duration::after(at, expected);
        let title = match &s.public {
            Public::Text(t) => render(t),
            _ => render(s.display_title()),
        };
        steps.push(PlannedStep {
            position: pos + 1,
            id: &s.id,
            kind: s.kind.as_str(),
            title,
            public: s.public != Public::Hidden,
            start: at,
            end,
            expected_seconds: s.expected.map(|d| d.as_secs()),
            estimate_seconds: expected.as_secs(),
            estimate_source: est.source,
            learned_runs: est.runs,
            learned_seconds: learned.steps.get(&s.id).map(|l| {
                let ms = match (l.per_item_ms, rb.item_count(s)) {
                    (Some(per), Some(n)) => per.saturating_mul(n as i64),
                    _ => l.median_ms,
                };
                (ms.max(0) / 1000) as u64
            }),
            checkpoint: s.checkpoint,
            requires: &s.requires,
            items: rb.item_count(s),
            online: match s.run.as_deref() {
                None if s.kind == Kind::Migrate => s
                    .with
                    .get("phase")
                    .and_then(|p| p.as_str())
                    .map(str::to_owned),
                _ => None,
            },
            hosts: match &s.for_each {
                Some(crate::runbook::ForEach::Hosts(h)) => Some(h.len()),
                _ => None,
            },
            waves: s.rollout.as_ref().map(|r| {
                r.wave_ends(match &s.for_each {
                    Some(crate::runbook::ForEach::Hosts(h)) => h.len(),
                    _ => 0,
                })
            }),
            rollback: s.rollback.as_deref().map(Action::describe),
            undone_by: match how {
                undo::How::Nothing => None,
                _ => Some(how.as_str()),
            },
            if_it_fails: failure_path(s, pos + 1, &how, stretch, cp, closed),
        });
        stretch.add(pos + 1, &how);
        if s.checkpoint {
            cp = Some(s);
            stretch = Stretch::default();
        }
        at = end;
        match s.kind {
            Kind::Close => closed = true,
            Kind::Reopen => closed = false,
            _ => {}
        }
    }
    let window_seconds = rb.window.duration.map(|d| d.as_secs());
    let window_end = rb.window.duration.map(|d| crate::duration::after(start, d));
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    let slack = window_seconds.map(|w| secs(w).saturating_sub(secs(total.as_secs())));
    let point_of_no_return = window_end.and_then(|end| point_of_no_return(rb, &steps, end));
    Plan {
        runbook: &rb.id,
        title: render(&rb.title),
        timezone: rb.window.timezone.name(),
        start,
        start_source,
        end: at,
        total_expected_seconds: total.as_secs(),
        window_seconds,
        window_end,
        fits_window: slack.map(|s| s >= 0),
        slack_seconds: slack,
        unestimated,
        steps,
        point_of_no_return,
        learned_from: learned.from.clone(),
    }
}

/// The first step whose planned start plus its duration plus the planned rollback of
/// the steps before it (as long again as they take, back to the last checkpoint; a
/// checkpoint's `restore` as long as the checkpoint) passes the window's end. One pass:
/// the rollback so far is kept as the steps go by.
fn point_of_no_return<'a>(
    rb: &'a Runbook,
    steps: &[PlannedStep<'a>],
    end: DateTime<Utc>,
) -> Option<PointOfNoReturn<'a>> {
    let mut cost = crate::engine::timing::RollbackCost::default();
    for p in steps {
        let s = &rb.steps[rb.order[p.position - 1]];
        let rollback = cost.total().max(0) as u64;
        if !matches!(p.kind, "reopen" | "announce") {
            let finish =
                p.start + chrono::Duration::seconds((p.estimate_seconds + rollback) as i64);
            if finish > end {
                return Some(PointOfNoReturn {
                    step: p.id,
                    at: p.start,
                    rollback_seconds: rollback,
                });
            }
        }
        cost.after(s, i64::try_from(p.estimate_seconds).unwrap_or(i64::MAX));
    }
    None
}

/// Values public text can use at planning time.
fn template_data(rb: &Runbook, start: DateTime<Utc>) -> Value {
    json!({
        "vars": rb.vars,
        "run": { "id": "(planned)", "runbook": rb.id, "started_at": start.to_rfc3339() },
        "window": {
            "start": start.to_rfc3339(),
            "timezone": rb.window.timezone.name(),
            "duration": rb.window.duration.map(fmt_duration),
        },
    })
}

/// What a rollback has gone back over so far in the current stretch of steps since the
/// last checkpoint (the engine's rule, `engine::undo`: each step is undone by its own
/// rollback, brought back by the checkpoint's `restore`, or left as it is).
#[derive(Debug, Clone, Copy, Default)]
struct Stretch {
    /// Positions of the most recent and the earliest step with something to undo.
    latest: Option<usize>,
    earliest: Option<usize>,
    undo: usize,
    restored: usize,
    left: usize,
}

impl Stretch {
    fn add(&mut self, position: usize, how: &undo::How<'_>) {
        match how {
            undo::How::Rollback => self.undo += 1,
            undo::How::Restore(_) => self.restored += 1,
            undo::How::Left => self.left += 1,
            undo::How::Nothing => return,
        }
        self.latest = Some(position);
        self.earliest.get_or_insert(position);
    }
}

/// The rollback path for a failure of the step at `pos` in execution order, given what
/// the steps since the last checkpoint `cp` would need (`done`, not counting the step
/// itself) and how the step itself is undone: the steps after the checkpoint, most
/// recent first (a failing fan-out's own items too).
fn failure_path<'a>(
    step: &'a crate::runbook::Step,
    position: usize,
    own: &undo::How<'_>,
    mut done: Stretch,
    cp: Option<&'a crate::runbook::Step>,
    closed: bool,
) -> FailurePath<'a> {
    let rollback = step.on_failure == OnFailure::Rollback;
    if !rollback {
        done = Stretch::default();
    } else if step.for_each.is_some() {
        // A fan-out step that fails may have items to undo itself.
        done.add(position, own);
    }
    let cp = cp.filter(|_| rollback);
    FailurePath {
        policy: step.on_failure.as_str(),
        from_position: done.latest,
        to_position: done.earliest,
        undo: done.undo,
        restored: done.restored,
        left: done.left,
        back_to: cp.map(|c| c.id.as_str()),
        restore_from: cp.filter(|c| c.restore.is_some()).map(|c| c.id.as_str()),
        reopen: rollback && closed,
    }
}

impl Plan<'_> {
    /// Writes the plan as a stable JSON document (streamed: a large plan is never held
    /// twice in memory).
    pub fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.write_all(b"\n")
    }

    /// Expected versus learned, step by step (`plan --history`).
    pub fn history_text(&self) -> String {
        let id_w = self.id_width();
        let mut out = String::from("\nExpected versus earlier runs (median):\n");
        let _ = writeln!(
            out,
            "  {:id_w$}  {:>8}  {:>8}  runs  used",
            "step", "expected", "learned"
        );
        let secs = |s: Option<u64>| s.map_or("-".into(), |s| fmt_duration(Duration::from_secs(s)));
        for s in &self.steps {
            let used = match s.estimate_source {
                crate::engine::timing::Source::Learned => "learned",
                crate::engine::timing::Source::Expected => "expected",
                crate::engine::timing::Source::Unknown => "-",
            };
            let row = format!(
                "  {:id_w$}  {:>8}  {:>8}  {:>4}  {used}",
                s.id,
                secs(s.expected_seconds),
                secs(s.learned_seconds),
                if s.learned_seconds.is_some() {
                    s.learned_runs.to_string()
                } else {
                    "0".into()
                },
            );
            let _ = writeln!(out, "{}", row.trim_end());
        }
        if self.learned_from.is_empty() {
            out.push_str("\nLearned from: no earlier run that completed.\n");
        } else {
            let n = self.learned_from.len();
            let _ = writeln!(
                out,
                "\nLearned from {n} run{} (newest first):",
                if n == 1 { "" } else { "s" }
            );
            let tz: chrono_tz::Tz = self.timezone.parse().unwrap_or(chrono_tz::UTC);
            for r in &self.learned_from {
                let at = |ms: Option<i64>| {
                    ms.map_or_else(|| "-".into(), |ms| crate::duration::local(ms, tz))
                };
                let took = r
                    .started_ms
                    .zip(r.ended_ms)
                    .map(|(s, e)| fmt_duration(Duration::from_millis((e - s).max(0) as u64)))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {}  {}  took {took}{}",
                    r.run,
                    at(r.started_ms),
                    if r.rehearsal { "  (rehearsal)" } else { "" }
                );
            }
            out.push_str("`runbook forget RUN` stops learning from one.\n");
        }
        out
    }

    /// The plan for a terminal, as one string (small plans: the dry run, the prompt).
    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        let _ = self.write_text(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Writes the plan for a terminal, row by row (a large plan is never held as one
    /// text), control characters escaped.
    pub fn write_text(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut put = |text: &str| out.write_all(crate::terminal::safe(text).as_bytes());
        let times = Times::of(self);
        put(&self.text_header(&times))?;
        self.text_table(&times, &mut put)?;
        let mut totals = String::new();
        self.text_totals(&times, &mut totals);
        put(&totals)?;
        put("\nIf a step fails:\n")?;
        let id_w = self.id_width();
        for s in &self.steps {
            put(&format!(
                "  {:id_w$}  {}\n",
                s.id,
                describe_failure(&s.if_it_fails, &self.steps)
            ))?;
        }
        Ok(())
    }

    fn id_width(&self) -> usize {
        self.steps
            .iter()
            .map(|s| s.id.len())
            .max()
            .unwrap_or(4)
            .max(4)
    }

    /// The title, the start and the window.
    fn text_header(&self, times: &Times) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Plan for `{}`: {}", self.runbook, self.title);
        let source = match self.start_source {
            StartSource::Flag => "from --start",
            StartSource::Window => "the window's start",
            StartSource::Now => "now: the runbook has no window start",
        };
        let _ = writeln!(out, "Start:  {} ({source})", times.full(self.start));
        if let (Some(secs), Some(end)) = (self.window_seconds, self.window_end) {
            let _ = writeln!(
                out,
                "Window: {} → {} ({}, {})",
                times.full(self.start),
                times.full(end),
                fmt_duration(Duration::from_secs(secs)),
                self.timezone
            );
        }
        out.push('\n');
        out
    }

    /// One row a step: position, id, kind, planned start and end, expected, notes.
    fn text_table(
        &self,
        times: &Times,
        put: &mut impl FnMut(&str) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let id_w = self.id_width();
        let kind_w = self
            .steps
            .iter()
            .map(|s| s.kind.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let t_w = times.short(self.start).len();
        put(&format!(
            "{:>3}  {:id_w$}  {:kind_w$}  {:t_w$}  {:t_w$}  {:>8}  notes\n",
            "#", "step", "kind", "start", "end", "expected"
        ))?;
        for s in &self.steps {
            let expected = match s.estimate_source {
                crate::engine::timing::Source::Unknown => "-".into(),
                _ => fmt_duration(Duration::from_secs(s.estimate_seconds)),
            };
            let row = format!(
                "{:>3}  {:id_w$}  {:kind_w$}  {}  {}  {:>8}  {}",
                s.position,
                s.id,
                s.kind,
                times.short(s.start),
                times.short(s.end),
                expected,
                step_notes(s).join(", ")
            );
            put(row.trim_end())?;
            put("\n")?;
        }
        put("\n")
    }

    /// The total against the window, the point of no return, what has no estimate.
    fn text_totals(&self, times: &Times, out: &mut String) {
        let total = fmt_duration(Duration::from_secs(self.total_expected_seconds));
        let _ = match self.slack_seconds {
            Some(slack) if slack >= 0 => writeln!(
                out,
                "Total expected: {total}; fits the window with {} to spare.",
                fmt_duration(Duration::from_secs(slack as u64))
            ),
            Some(slack) => writeln!(
                out,
                "Total expected: {total}; does NOT fit the window: over by {}.",
                fmt_duration(Duration::from_secs(slack.unsigned_abs()))
            ),
            None => writeln!(
                out,
                "Total expected: {total} (no window duration to check against)."
            ),
        };
        if let Some(end) = self.window_end {
            let _ = match &self.point_of_no_return {
                Some(p) => writeln!(
                    out,
                    "Point of no return: before `{}` at {}: from there the step and a rollback ({}) no longer fit the window (ends {}).",
                    p.step,
                    times.short(p.at),
                    fmt_duration(Duration::from_secs(p.rollback_seconds)),
                    times.short(end)
                ),
                None => writeln!(
                    out,
                    "Point of no return: none: before every step, the step and a rollback fit the window."
                ),
            };
        }
        if !self.unestimated.is_empty() {
            let _ = writeln!(
                out,
                "No `expected` duration (counted as 0): {}.",
                self.unestimated.join(", ")
            );
        }
    }
}

/// How the text plan writes times: in the plan's zone, without the date when the whole
/// plan (and its window) falls on one day.
struct Times {
    tz: chrono_tz::Tz,
    same_day: bool,
}

impl Times {
    fn of(plan: &Plan<'_>) -> Times {
        let tz: chrono_tz::Tz = plan.timezone.parse().unwrap_or(chrono_tz::UTC);
        let last = plan.end.max(plan.window_end.unwrap_or(plan.end));
        let same_day =
            plan.start.with_timezone(&tz).date_naive() == last.with_timezone(&tz).date_naive();
        Times { tz, same_day }
    }

    fn short(&self, t: DateTime<Utc>) -> String {
        let local = t.with_timezone(&self.tz);
        if self.same_day {
            local.format("%H:%M").to_string()
        } else {
            local.format("%m-%d %H:%M").to_string()
        }
    }

    fn full(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%a %d %b %Y %H:%M %Z")
            .to_string()
    }
}

/// The notes column of a step's row.
fn step_notes(s: &PlannedStep<'_>) -> Vec<String> {
    let mut notes = Vec::new();
    if s.checkpoint {
        notes.push("checkpoint".to_owned());
    }
    if let Some(phase) = &s.online {
        notes.push(format!(
            "online migration ({phase}): the service stays open"
        ));
    }
    match (s.hosts, &s.waves) {
        (Some(n), Some(ends)) if ends.len() > 1 => {
            let shown: Vec<String> = ends.iter().map(usize::to_string).collect();
            notes.push(format!(
                "{n} host{} in {} waves (done by each: {})",
                if n == 1 { "" } else { "s" },
                ends.len(),
                shown.join(", ")
            ));
        }
        (Some(n), _) => notes.push(format!("{n} host{}", if n == 1 { "" } else { "s" })),
        (None, _) => {
            if let Some(n) = s.items {
                notes.push(format!("{n} items"));
            }
        }
    }
    if !s.public {
        notes.push("not public".to_owned());
    }
    if s.estimate_source == crate::engine::timing::Source::Learned {
        notes.push(format!(
            "learned: median of {} run{}",
            s.learned_runs,
            if s.learned_runs == 1 { "" } else { "s" }
        ));
    }
    notes
}

/// Paths going back over more steps than this are told as counts, not step by step:
/// the text stays linear in the steps.
const LISTED: usize = 6;

fn describe_failure(f: &FailurePath<'_>, steps: &[PlannedStep<'_>]) -> String {
    match f.policy {
        "pause" => "pause and wait for the operator".into(),
        "abort" => "abort the run, undoing nothing".into(),
        "continue" => "record the failure and continue".into(),
        _ => {
            let reopen = if f.reopen { "; reopen the service" } else { "" };
            let mut back = match (&f.back_to, &f.restore_from) {
                (Some(cp), Some(_)) => format!("restore from checkpoint `{cp}`"),
                (Some(cp), None) => format!("back to checkpoint `{cp}`"),
                (None, _) => "back to the start".into(),
            };
            let total = f.undo + f.restored + f.left;
            if total == 0 && f.restore_from.is_none() {
                return format!("roll back: nothing to undo ({back}){reopen}");
            }
            let mut parts: Vec<String> = Vec::new();
            if total > LISTED {
                let (from, to) = (f.from_position.unwrap_or(0), f.to_position.unwrap_or(0));
                let mut counts = Vec::new();
                let plural = |n: usize| if n == 1 { "step" } else { "steps" };
                if f.undo > 0 {
                    counts.push(format!("undo {} {}", f.undo, plural(f.undo)));
                }
                if f.left > 0 {
                    counts.push(format!(
                        "{} {} with no rollback left as is",
                        f.left,
                        plural(f.left)
                    ));
                }
                parts.push(format!(
                    "steps #{from} back to #{to}: {}",
                    counts.join(", ")
                ));
                if f.restored > 0 {
                    back = format!("{back} (brings back {} {})", f.restored, plural(f.restored));
                }
            } else {
                let mut restored = Vec::new();
                for s in f.positions().map(|p| &steps[p - 1]) {
                    match s.undone_by {
                        Some("rollback") => parts.push(format!("undo {}", s.id)),
                        Some("left") => parts.push(format!("{} (no rollback, left as is)", s.id)),
                        Some("restore") => restored.push(s.id),
                        _ => {}
                    }
                }
                if !restored.is_empty() {
                    back = format!("{back} (brings back {})", restored.join(", "));
                }
            }
            parts.push(back);
            format!("roll back: {}{reopen}", parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::load_str;

    const RB: &str = "runbook: t
window: { start: 2026-11-24T19:00:00Z, duration: 1h }
steps:
  - { id: pre, kind: patch, expected: 5m, run: { shell: 'true' } }
  - { id: snap, kind: backup, expected: 10m, checkpoint: true, with: { database: 'sqlite://a.db' } }
  - { id: close, kind: close }
  - { id: m1, kind: migrate, expected: 10m, with: { database: 'sqlite://a.db', dir: m }, rollback: { shell: down1 } }
  - { id: m2, kind: patch, expected: 10m, run: { shell: up2 } }
  - { id: check, kind: test, expected: 5m, checks: [ { shell: 'true' } ], on_failure: pause }
  - { id: reopen, kind: reopen }
  - { id: after, kind: patch, run: { shell: x }, requires: [late] }
  - { id: late, kind: patch, run: { shell: y } }
";

    /// The ids a failure path goes back over with how, most recent first.
    fn path<'a>(p: &'a Plan<'a>, id: &str) -> Vec<(&'a str, &'a str)> {
        let f = &p.steps.iter().find(|s| s.id == id).unwrap().if_it_fails;
        f.positions()
            .map(|pos| &p.steps[pos - 1])
            .filter_map(|s| s.undone_by.map(|how| (s.id, how)))
            .collect()
    }

    #[test]
    fn rollback_paths_undo_back_to_the_last_checkpoint() {
        let rb = load_str("t.yaml", RB).unwrap();
        let p = plan(&rb, None, Utc::now());
        let step = |id: &str| p.steps.iter().find(|s| s.id == id).unwrap();
        // Before any checkpoint: back to the start, undoing what changed things.
        assert_eq!(path(&p, "snap"), vec![("pre", "left")]);
        assert_eq!(step("snap").if_it_fails.undo, 0);
        assert_eq!(step("snap").if_it_fails.left, 1);
        assert_eq!(step("snap").if_it_fails.back_to, None);
        // After it: only the steps since the checkpoint, most recent first.
        let f = &step("reopen").if_it_fails;
        assert_eq!((f.undo, f.left, f.restored), (1, 1, 0));
        assert_eq!(path(&p, "reopen"), vec![("m2", "left"), ("m1", "rollback")]);
        assert_eq!((f.from_position, f.to_position), (Some(5), Some(4)));
        assert_eq!(f.back_to, Some("snap"));
        assert!(f.reopen);
        assert!(step("m1").if_it_fails.reopen);
        assert!(!step("close").if_it_fails.reopen);
        assert_eq!(step("check").if_it_fails.policy, "pause");
        assert_eq!(step("check").if_it_fails.from_position, None);
        assert!(path(&p, "check").is_empty());
        // The text names them while the path is short.
        let text = p.to_text();
        assert!(
            text.contains("m2 (no rollback, left as is); undo m1; back to checkpoint `snap`; reopen the service"),
            "{text}"
        );
    }

    #[test]
    fn a_far_checkpoint_gives_a_path_linear_in_the_steps() {
        let mut y = String::from(
            "runbook: t\nsteps:\n  - { id: cp, kind: backup, checkpoint: true, with: { database: 'sqlite://a.db' } }\n",
        );
        let n = 2000;
        for i in 0..n {
            let rollback = if i % 2 == 0 {
                ", rollback: { shell: 'u' }"
            } else {
                ""
            };
            y.push_str(&format!(
                "  - {{ id: s{i}, kind: patch, run: {{ shell: 'x' }}{rollback} }}\n"
            ));
        }
        let rb = load_str("t.yaml", &y).unwrap();
        let p = plan(&rb, None, Utc::now());
        let last = &p.steps[n].if_it_fails;
        assert_eq!((last.from_position, last.to_position), (Some(n), Some(2)));
        assert_eq!((last.undo, last.left), (n / 2, n / 2 - 1));
        assert_eq!(path(&p, &format!("s{}", n - 1)).len(), n - 1);
        // JSON and text grow linearly: each step's path is a range and counts.
        let mut json = Vec::new();
        p.write_json(&mut json).unwrap();
        assert!(json.len() < n * 1500, "{} bytes", json.len());
        let text = p.to_text();
        assert!(text.len() < n * 300, "{} bytes", text.len());
        assert!(
            text.contains(&format!(
                "roll back: steps #{n} back to #2: undo 1000 steps, 999 steps with no rollback left as is; back to checkpoint `cp`"
            )),
            "{}",
            &text[text.len() - 400..]
        );
    }

    #[test]
    fn requires_pulls_a_step_forward_and_times_accumulate() {
        let rb = load_str("t.yaml", RB).unwrap();
        let p = plan(&rb, None, Utc::now());
        let ids: Vec<&str> = p.steps.iter().map(|s| s.id).collect();
        assert_eq!(&ids[7..], &["late", "after"]);
        assert_eq!(p.total_expected_seconds, 40 * 60);
        assert_eq!(p.slack_seconds, Some(20 * 60));
        assert_eq!(step_start(&p, "m1"), "2026-11-24T19:15:00Z");
    }

    fn step_start(p: &Plan<'_>, id: &str) -> String {
        let s = p.steps.iter().find(|s| s.id == id).unwrap();
        s.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}
