//! Time: how long each step should take (declared `expected`, or learned from earlier
//! runs of the same runbook), the projected end of a run (ETA), and the window guard.
//! Everything here is pure: the clock is an argument, so the tests control it.

use std::collections::HashMap;

use serde::Serialize;

use super::event::Recorded;
use super::state::{ItemStatus, RunState, RunStatus, StepStatus};
use crate::runbook::{Runbook, Step};

/// Durations learned from earlier runs of a runbook, by step id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Learned {
    pub steps: HashMap<String, Sample>,
    /// The runs learned from, newest first (filled by whoever loaded them).
    pub from: Vec<LearnedRun>,
}

/// A run whose durations are learned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnedRun {
    pub run: String,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub rehearsal: bool,
}

/// What earlier runs took for one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Median duration over the runs where the step succeeded.
    pub median_ms: i64,
    /// Median per fan-out item, when the step fanned out.
    pub per_item_ms: Option<i64>,
    /// How many runs the median is over.
    pub runs: usize,
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

/// Whether a run's durations are learned: it completed (a rehearsal too), and no one
/// forgot it.
pub fn teaches(state: &RunState) -> bool {
    state.status == RunStatus::Completed && !state.forgotten
}

impl Learned {
    /// Learns from the journals of runs that completed (rehearsals too; a drill that
    /// rolled back, a failed or aborted run teach nothing): each step that succeeded, its
    /// duration (and per item, for a fan-out). Time waiting for a person (an `approve`
    /// step) is never learned.
    pub fn from_runs<'a>(runs: impl IntoIterator<Item = &'a [Recorded]>) -> Learned {
        let folded: Vec<(RunState, &[Recorded])> = runs
            .into_iter()
            .filter_map(|events| Some((RunState::of_journal(events).ok()?, events)))
            .collect();
        Learned::from_folded(folded.iter().map(|(state, events)| (state, *events)))
    }

    /// [`Learned::from_runs`] over journals already folded into their states.
    pub fn from_folded<'a>(
        runs: impl IntoIterator<Item = (&'a RunState, &'a [Recorded])>,
    ) -> Learned {
        let mut whole: HashMap<String, Vec<i64>> = HashMap::new();
        let mut per_item: HashMap<String, Vec<i64>> = HashMap::new();
        for (state, events) in runs {
            if !teaches(state) {
                continue;
            }
            let waited: std::collections::HashSet<&str> = events
                .iter()
                .filter_map(|r| match &r.event {
                    crate::engine::event::Event::ApprovalRequested { step, .. } => {
                        Some(step.as_str())
                    }
                    _ => None,
                })
                .collect();
            for (id, s) in &state.steps {
                if waited.contains(id.as_str()) {
                    continue;
                }
                let (StepStatus::Succeeded, Some(a), Some(b)) =
                    (s.status, s.started_ms, s.ended_ms)
                else {
                    continue;
                };
                let d = (b - a).max(0);
                whole.entry(id.clone()).or_default().push(d);
                if !s.items.is_empty() {
                    per_item
                        .entry(id.clone())
                        .or_default()
                        .push(d / s.items.len() as i64);
                }
            }
        }
        Learned {
            from: Vec::new(),
            steps: whole
                .into_iter()
                .filter_map(|(id, v)| {
                    let runs = v.len();
                    let per = per_item.remove(&id).and_then(median);
                    median(v).map(|m| {
                        (
                            id,
                            Sample {
                                median_ms: m,
                                per_item_ms: per,
                                runs,
                            },
                        )
                    })
                })
                .collect(),
        }
    }
}

/// Where a step's duration estimate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The median of earlier runs.
    Learned,
    /// The runbook's `expected`.
    Expected,
    /// Neither: counted as 0.
    Unknown,
}

/// A step's estimated duration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub ms: i64,
    pub source: Source,
    /// Runs the learned figure is the median of.
    pub runs: usize,
}

/// The estimate for `step` with `items` fan-out items (when known): learned first
/// (scaled per item for a fan-out), else declared.
pub fn estimate(step: &Step, items: Option<usize>, learned: &Learned) -> Estimate {
    if let Some(s) = learned.steps.get(&step.id) {
        let ms = match (s.per_item_ms, items) {
            (Some(per), Some(n)) => per.saturating_mul(n as i64),
            _ => s.median_ms,
        };
        return Estimate {
            ms,
            source: Source::Learned,
            runs: s.runs,
        };
    }
    match step.expected {
        Some(d) => Estimate {
            ms: crate::duration::millis(d),
            source: Source::Expected,
            runs: 0,
        },
        None => Estimate {
            ms: 0,
            source: Source::Unknown,
            runs: 0,
        },
    }
}

/// How long the step in `state` still needs at `now_ms`: its estimate less the time
/// spent (at least a quarter of the time spent, once it runs late), or, for a fan-out
/// under way, the time per finished item so far times the items left.
pub fn remaining_ms(
    rb: &Runbook,
    step: &Step,
    state: &RunState,
    learned: &Learned,
    now_ms: i64,
) -> i64 {
    let total = rb.item_count(step);
    let est = estimate(step, total, learned);
    let run = state.step(&step.id);
    match run.status {
        StepStatus::Pending | StepStatus::Checking => est.ms,
        StepStatus::Running => {
            let spent = run.started_ms.map_or(0, |s| (now_ms - s).max(0));
            let done = run
                .items
                .values()
                .filter(|s| **s != ItemStatus::Running)
                .count();
            match total {
                Some(n) if done > 0 && n > done => {
                    (spent / done as i64).saturating_mul((n - done) as i64)
                }
                // A step late by now is not about to end: a quarter of the time it has
                // taken so far is the guess (the same as the estimate at 80% of it).
                _ => (est.ms - spent).max(spent / 4),
            }
        }
        _ => 0,
    }
}

/// When the run should end: now plus what every step not finished still needs. `None`
/// for a run that has ended, or when no step has any estimate.
pub fn eta_ms(rb: &Runbook, state: &RunState, learned: &Learned, now_ms: i64) -> Option<i64> {
    if state.status.is_terminal() || state.status == RunStatus::RollingBack {
        return None;
    }
    let mut left = 0;
    let mut known = false;
    for &i in &rb.order {
        let step = &rb.steps[i];
        let total = rb.item_count(step);
        if estimate(step, total, learned).source != Source::Unknown {
            known = true;
        }
        left += remaining_ms(rb, step, state, learned, now_ms);
    }
    known.then_some(now_ms + left)
}

/// When the next overrun update of a step is due: once it passes its estimate by
/// `margin` (never less than a second), then every `every` after the last one.
pub fn overrun_due(
    started_ms: i64,
    estimate_ms: i64,
    margin_ms: i64,
    every_ms: i64,
    last_published_ms: Option<i64>,
) -> i64 {
    match last_published_ms {
        Some(last) => last.saturating_add(every_ms.max(1)),
        None => started_ms
            .saturating_add(estimate_ms)
            .saturating_add(margin_ms.max(1000)),
    }
}

/// When a run's window opened: as recorded at the start (`--now` opens it then), else
/// the runbook's planned start, else the run's start.
pub fn window_start(rb: &Runbook, state: &RunState) -> Option<chrono::DateTime<chrono::Utc>> {
    state
        .window_start_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .or(rb.window.start)
        .or_else(|| {
            state
                .started_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
        })
}

/// The end of this run's window, when it has one.
pub fn window_end_ms(rb: &Runbook, state: &RunState) -> Option<i64> {
    let start = window_start(rb, state)?;
    Some(crate::duration::after(start, rb.window.duration?).timestamp_millis())
}

/// Why the window guard stops a step from starting.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardTrip {
    pub step: String,
    /// The step's estimate.
    pub step_ms: i64,
    /// The estimated time to roll back what is done so far.
    pub rollback_ms: i64,
    /// When the step plus the rollback would end.
    pub would_end_ms: i64,
    pub window_end_ms: i64,
}

impl GuardTrip {
    pub fn reason(&self, tz: chrono_tz::Tz) -> String {
        let at = |ms| crate::duration::local(ms, tz);
        format!(
            "window guard: step `{}` ({}) and rolling back what is done so far ({}) would end at {}, after the window closes at {}",
            self.step,
            crate::duration::fmt_duration(std::time::Duration::from_millis(
                self.step_ms.max(0) as u64
            )),
            crate::duration::fmt_duration(std::time::Duration::from_millis(
                self.rollback_ms.max(0) as u64
            )),
            at(self.would_end_ms),
            at(self.window_end_ms),
        )
    }
}

/// How long undoing the steps done so far should take: each succeeded step with a
/// `rollback` since the last checkpoint takes as long again as it took; a checkpoint
/// with `restore` takes as long as the checkpoint step itself.
pub fn rollback_ms(rb: &Runbook, state: &RunState) -> i64 {
    let mut cost = RollbackCost::default();
    for &i in &rb.order {
        let step = &rb.steps[i];
        let run = state.step(&step.id);
        if run.status == StepStatus::Succeeded {
            let took = run
                .started_ms
                .zip(run.ended_ms)
                .map_or(0, |(a, b)| (b - a).max(0));
            cost.after(step, took);
        }
    }
    cost.total()
}

/// What undoing the steps done so far costs, kept as they are done in execution order
/// (the one rule for the window guard's rollback and the plan's point of no return).
#[derive(Debug, Clone, Copy, Default)]
pub struct RollbackCost {
    /// The steps with a rollback since the last checkpoint.
    undo: i64,
    /// The last checkpoint's restore, when it has one: it replaces them all.
    restore: Option<i64>,
}

impl RollbackCost {
    /// After `step` is done, having taken (or being planned to take) `took`.
    pub fn after(&mut self, step: &Step, took: i64) {
        if step.checkpoint {
            self.undo = 0;
            self.restore = step.restore.is_some().then_some(took);
        } else if step.rollback.is_some() {
            self.undo = self.undo.saturating_add(took);
        }
    }

    /// The cost of undoing everything done so far.
    pub fn total(self) -> i64 {
        self.restore.unwrap_or(self.undo)
    }
}

/// The window guard, before `step` starts at `now_ms`: trips when the step's estimate
/// plus the rollback of what is done would pass the end of the window. Nothing to
/// guard without a window end, or once nothing would be rolled back (no step to undo
/// and none after a checkpoint).
pub fn guard(
    rb: &Runbook,
    state: &RunState,
    step: &Step,
    learned: &Learned,
    window_end_ms: Option<i64>,
    now_ms: i64,
) -> Option<GuardTrip> {
    let window_end_ms = window_end_ms?;
    let step_ms = estimate(step, rb.item_count(step), learned).ms;
    let rollback_ms = rollback_ms(rb, state);
    let would_end_ms = now_ms + step_ms + rollback_ms;
    (would_end_ms > window_end_ms).then(|| GuardTrip {
        step: step.id.clone(),
        step_ms,
        rollback_ms,
        would_end_ms,
        window_end_ms,
    })
}

#[cfg(test)]
mod tests {
    use indexmap::IndexMap;

    use super::*;
    use crate::engine::event::Event;

    const S: i64 = 1000;

    fn rb(yaml: &str) -> Runbook {
        crate::runbook::load_bytes("t.yaml", yaml.as_bytes()).expect("valid")
    }

    fn started() -> Event {
        Event::RunStarted {
            runbook: "t".into(),
            title: "t".into(),
            file: "t.yaml".into(),
            file_sha256: String::new(),
            vars: IndexMap::new(),
            operator: "ops".into(),
            host: "h".into(),
            pid: 1,
            window_start_ms: None,
            guard: None,
            rehearsal: false,
            public: None,
            limit: Vec::new(),
        }
    }

    fn rec(seq: i64, at_ms: i64, event: Event) -> Recorded {
        Recorded { seq, at_ms, event }
    }

    /// A run in which step `id` took `ms`, with `items` fan-out items.
    fn run_of(steps: &[(&str, i64, usize)]) -> Vec<Recorded> {
        let mut v = vec![rec(1, 0, started())];
        let mut t = 0;
        for (id, ms, items) in steps {
            let step = id.to_string();
            v.push(rec(
                0,
                t,
                Event::StepChecking {
                    step: step.clone(),
                    attempt: 1,
                },
            ));
            v.push(rec(
                0,
                t,
                Event::StepStarted {
                    step: step.clone(),
                    attempt: 1,
                    verifying: false,
                    estimate_ms: None,
                },
            ));
            for index in 0..*items {
                v.push(rec(
                    0,
                    t,
                    Event::ItemStarted {
                        step: step.clone(),
                        index,
                        name: String::new(),
                    },
                ));
                v.push(rec(
                    0,
                    t,
                    Event::ItemSucceeded {
                        step: step.clone(),
                        index,
                        name: String::new(),
                        outputs: IndexMap::new(),
                    },
                ));
            }
            t += ms;
            v.push(rec(
                0,
                t,
                Event::StepSucceeded {
                    step,
                    attempt: 1,
                    outputs: IndexMap::new(),
                },
            ));
        }
        v.push(rec(0, t, Event::RunCompleted));
        v
    }

    fn state(events: &[Recorded]) -> RunState {
        RunState::from_events(events.iter().map(|r| (&r.event, r.at_ms))).unwrap()
    }

    const RB: &str = r#"
runbook: t
window: { start: "2026-01-01T00:00:00Z", duration: 100s }
targets: { tenants: [a, b, c, d] }
steps:
  - { id: backup, kind: patch, expected: 10s, checkpoint: true, run: { shell: "true" } }
  - { id: change, kind: patch, expected: 20s, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: fan, kind: patch, expected: 40s, for_each: "{{targets.tenants}}", run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: last, kind: patch, run: { shell: "true" } }
  - { id: reopen, kind: reopen }
"#;

    #[test]
    fn only_completed_runs_teach_and_never_the_wait_for_a_person() {
        let completed = run_of(&[("backup", 10 * S, 0), ("go", 600 * S, 0)]);
        // The same run, but rolled back at the end (a drill): it teaches nothing.
        let mut drill = run_of(&[("backup", 90 * S, 0)]);
        drill.pop();
        drill.push(rec(
            0,
            90 * S,
            Event::RollbackStarted {
                reason: "drill".into(),
            },
        ));
        drill.push(rec(0, 90 * S, Event::RunRolledBack { left: vec![] }));
        // `go` waited for a person: its time is not a duration of the work.
        let mut with_wait = completed.clone();
        // Its approval, instead of the StepSucceeded `run_of` wrote.
        with_wait.remove(6);
        with_wait.insert(
            6,
            rec(
                0,
                600 * S,
                Event::Approved {
                    step: "go".into(),
                    by: "alice".into(),
                    comment: None,
                },
            ),
        );
        with_wait.insert(
            6,
            rec(
                0,
                10 * S,
                Event::ApprovalRequested {
                    step: "go".into(),
                    wave: None,
                },
            ),
        );
        let learned = Learned::from_runs([with_wait.as_slice(), drill.as_slice()]);
        assert_eq!(learned.steps["backup"].median_ms, 10 * S);
        assert_eq!(learned.steps["backup"].runs, 1);
        assert!(
            !learned.steps.contains_key("go"),
            "{:?}",
            learned.steps.keys()
        );
    }

    #[test]
    fn learned_durations_are_medians_of_finished_runs_scaled_per_item() {
        let runs = [
            run_of(&[("backup", 12 * S, 0), ("fan", 8 * S, 2)]),
            run_of(&[("backup", 30 * S, 0), ("fan", 12 * S, 2)]),
            run_of(&[("backup", 14 * S, 0)]),
        ];
        // An unfinished run teaches nothing.
        let mut unfinished = run_of(&[("backup", 999 * S, 0)]);
        unfinished.pop();
        let learned = Learned::from_runs(runs.iter().chain([&unfinished]).map(Vec::as_slice));
        assert_eq!(learned.steps["backup"].median_ms, 14 * S);
        assert_eq!(learned.steps["backup"].runs, 3);
        assert_eq!(learned.steps["fan"].median_ms, 10 * S);
        assert_eq!(learned.steps["fan"].per_item_ms, Some(5 * S));
        let rb = rb(RB);
        let fan = rb.steps.iter().find(|s| s.id == "fan").unwrap();
        // Four tenants now, at 5 s each.
        let e = estimate(fan, Some(4), &learned);
        assert_eq!((e.ms, e.source, e.runs), (20 * S, Source::Learned, 2));
        let change = rb.steps.iter().find(|s| s.id == "change").unwrap();
        assert_eq!(estimate(change, None, &learned).source, Source::Expected);
        let last = rb.steps.iter().find(|s| s.id == "last").unwrap();
        assert_eq!(estimate(last, None, &learned).source, Source::Unknown);
    }

    #[test]
    fn eta_counts_what_is_left_and_extrapolates_a_fan_out() {
        let rb = rb(RB);
        let none = Learned::default();
        let mut events = vec![rec(1, 0, started())];
        let s = state(&events);
        // Nothing started: 10 + 20 + 40 s.
        assert_eq!(eta_ms(&rb, &s, &none, 5 * S), Some(75 * S));
        // `backup` done, `change` 5 s in: 15 s of it left, then 40 s.
        for (at, e) in [
            (
                0,
                Event::StepChecking {
                    step: "backup".into(),
                    attempt: 1,
                },
            ),
            (
                0,
                Event::StepStarted {
                    step: "backup".into(),
                    attempt: 1,
                    verifying: false,
                    estimate_ms: None,
                },
            ),
            (
                10 * S,
                Event::StepSucceeded {
                    step: "backup".into(),
                    attempt: 1,
                    outputs: IndexMap::new(),
                },
            ),
            (
                10 * S,
                Event::StepChecking {
                    step: "change".into(),
                    attempt: 1,
                },
            ),
            (
                10 * S,
                Event::StepStarted {
                    step: "change".into(),
                    attempt: 1,
                    verifying: false,
                    estimate_ms: None,
                },
            ),
        ] {
            events.push(rec(0, at, e));
        }
        assert_eq!(
            eta_ms(&rb, &state(&events), &none, 15 * S),
            Some(15 * S + 15 * S + 40 * S)
        );
        // Late (40 s into 20 s), it is given a quarter of what it took so far: 10 s.
        assert_eq!(
            eta_ms(&rb, &state(&events), &none, 50 * S),
            Some(50 * S + 10 * S + 40 * S)
        );
        // The fan-out: 1 of 4 items done in 30 s: 90 s more, whatever `expected` said.
        for (at, e) in [
            (
                30 * S,
                Event::StepSucceeded {
                    step: "change".into(),
                    attempt: 1,
                    outputs: IndexMap::new(),
                },
            ),
            (
                30 * S,
                Event::StepChecking {
                    step: "fan".into(),
                    attempt: 1,
                },
            ),
            (
                30 * S,
                Event::StepStarted {
                    step: "fan".into(),
                    attempt: 1,
                    verifying: false,
                    estimate_ms: None,
                },
            ),
            (
                30 * S,
                Event::ItemStarted {
                    step: "fan".into(),
                    index: 0,
                    name: String::new(),
                },
            ),
            (
                60 * S,
                Event::ItemSucceeded {
                    step: "fan".into(),
                    index: 0,
                    name: String::new(),
                    outputs: IndexMap::new(),
                },
            ),
        ] {
            events.push(rec(0, at, e));
        }
        assert_eq!(
            eta_ms(&rb, &state(&events), &none, 60 * S),
            Some(60 * S + 90 * S)
        );
        // Ended: no ETA.
        events.push(rec(
            0,
            61 * S,
            Event::RunAborted {
                by: "x".into(),
                reason: "x".into(),
            },
        ));
        assert_eq!(eta_ms(&rb, &state(&events), &none, 61 * S), None);
    }

    #[test]
    fn overrun_updates_come_after_the_margin_then_at_most_once_per_interval() {
        // Started at 100 s, 60 s expected, 20% margin (12 s): first at 172 s.
        assert_eq!(overrun_due(100 * S, 60 * S, 12 * S, 900 * S, None), 172 * S);
        // No margin: still not before a second late.
        assert_eq!(overrun_due(100 * S, 60 * S, 0, 900 * S, None), 161 * S);
        // Then every 15 minutes after the last one, whatever the clock says now.
        assert_eq!(
            overrun_due(100 * S, 60 * S, 0, 900 * S, Some(161 * S)),
            1061 * S
        );
        let margin = crate::runbook::Margin::Percent(20.0);
        assert_eq!(margin.of(std::time::Duration::from_secs(60)).as_secs(), 12);
    }

    #[test]
    fn the_guard_trips_when_the_step_and_the_rollback_would_pass_the_window() {
        let rb = rb(RB);
        let none = Learned::default();
        let step = |id: &str| rb.steps.iter().find(|s| s.id == id).unwrap();
        let mut events = vec![rec(1, 0, started())];
        // Before `backup` at 0: 10 s, nothing to roll back; the window ends at 100 s.
        assert_eq!(
            guard(
                &rb,
                &state(&events),
                step("backup"),
                &none,
                Some(100 * S),
                0
            ),
            None
        );
        // No window end: nothing to guard.
        assert_eq!(
            guard(&rb, &state(&events), step("backup"), &none, None, 99 * S),
            None
        );
        for (at, e) in [
            (
                0,
                Event::StepChecking {
                    step: "backup".into(),
                    attempt: 1,
                },
            ),
            (
                0,
                Event::StepStarted {
                    step: "backup".into(),
                    attempt: 1,
                    verifying: false,
                    estimate_ms: None,
                },
            ),
            (
                10 * S,
                Event::StepSucceeded {
                    step: "backup".into(),
                    attempt: 1,
                    outputs: IndexMap::new(),
                },
            ),
            (
                10 * S,
                Event::StepChecking {
                    step: "change".into(),
                    attempt: 1,
                },
            ),
            (
                10 * S,
                Event::StepStarted {
                    step: "change".into(),
                    attempt: 1,
                    verifying: false,
                    estimate_ms: None,
                },
            ),
            (
                35 * S,
                Event::StepSucceeded {
                    step: "change".into(),
                    attempt: 1,
                    outputs: IndexMap::new(),
                },
            ),
        ] {
            events.push(rec(0, at, e));
        }
        let s = state(&events);
        // `change` took 25 s and has a rollback; the checkpoint has no restore.
        assert_eq!(rollback_ms(&rb, &s), 25 * S);
        // At 35 s: 40 s + 25 s = 100 s: fits exactly.
        assert_eq!(
            guard(&rb, &s, step("fan"), &none, Some(100 * S), 35 * S),
            None
        );
        // At 36 s it does not.
        let trip = guard(&rb, &s, step("fan"), &none, Some(100 * S), 36 * S).unwrap();
        assert_eq!(
            (trip.step_ms, trip.rollback_ms, trip.would_end_ms),
            (40 * S, 25 * S, 101 * S)
        );
        assert!(
            trip.reason(chrono_tz::UTC)
                .contains("window guard: step `fan`"),
            "{}",
            trip.reason(chrono_tz::UTC)
        );
        // A learned figure moves the point: the fan-out took 1 s per tenant before.
        let learned = Learned::from_runs([run_of(&[("fan", 2 * S, 2)])].iter().map(Vec::as_slice));
        assert_eq!(
            guard(&rb, &s, step("fan"), &learned, Some(100 * S), 60 * S),
            None
        );
    }
}
