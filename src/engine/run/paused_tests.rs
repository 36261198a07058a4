//! A real [`Runner`] on an in-memory store, under tokio's paused clock and fake effects
//! (steps that only take time): overruns, approval timeouts, aborts, retries and the
//! window guard, minutes of a run in no real time. The journal and the public texts are
//! what is checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use indexmap::IndexMap;

use super::effects::Effects;
use super::{Clock, Runner, Stop};
use crate::engine::action::Outcome;
use crate::engine::event::{Decision, Event, Recorded};
use crate::engine::state::{RunState, RunStatus, StepStatus};
use crate::engine::terminal::{LogFormat, Reporter};
use crate::engine::work::{Unit, Worker};
use crate::runbook::{Action, Runbook, Step};
use crate::store::Store;

/// 2026-01-01T00:00:00Z, when every run here starts.
const START_MS: i64 = 1_767_225_600_000;
const S: i64 = 1000;

/// Fake effects: what each step (or item, `step.N`) takes and how it ends, attempt by
/// attempt (the last repeats); a step not listed succeeds at once. `log` lists what
/// ran and what was undone (`undo STEP`), in order.
#[derive(Default)]
struct Script {
    takes: HashMap<String, Vec<(Duration, Outcome)>>,
    log: Mutex<Vec<String>>,
}

impl Script {
    fn new() -> Self {
        Script::default()
    }

    /// `name` takes `secs`, then ends `outcome`; again for the next attempt.
    fn then(mut self, name: &str, secs: f64, outcome: Outcome) -> Self {
        let took = Duration::from_secs_f64(secs);
        self.takes
            .entry(name.into())
            .or_default()
            .push((took, outcome));
        self
    }

    fn takes(self, name: &str, secs: f64) -> Self {
        self.then(name, secs, ok())
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("the log").clone()
    }
}

fn ok() -> Outcome {
    Outcome::Succeeded(IndexMap::new())
}

impl Effects for Script {
    fn work<'a>(
        &'a self,
        _: &'a Worker<'a>,
        step: &'a Step,
        unit: Unit<'a>,
    ) -> BoxFuture<'a, Outcome> {
        let name = match unit {
            Unit::Step => step.id.clone(),
            Unit::Item(ix, ..) => format!("{}.{ix}", step.id),
        };
        let attempt = {
            let mut log = self.log.lock().expect("the log");
            let n = log.iter().filter(|l| **l == name).count();
            log.push(name.clone());
            n
        };
        let (took, outcome) = self
            .takes
            .get(&name)
            .and_then(|t| t.get(attempt).or(t.last()))
            .cloned()
            .unwrap_or((Duration::ZERO, ok()));
        Box::pin(async move {
            tokio::time::sleep(took).await;
            outcome
        })
    }

    fn undo<'a>(
        &'a self,
        _: &'a Worker<'a>,
        step: &'a Step,
        _: &'a Action,
        _: Unit<'a>,
    ) -> BoxFuture<'a, Outcome> {
        let name = format!("undo {}", step.id);
        self.log.lock().expect("the log").push(name);
        Box::pin(async { ok() })
    }
}

fn runbook(yaml: &str) -> Runbook {
    crate::runbook::load_bytes("t.yaml", yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()))
}

/// A started run `r1` of `rb` (with `--guard strict` when `strict`), at `START_MS`, in a
/// store in a new directory, returned with it. (A file, not memory: a query dropped midway, as when a step ends while
/// the runner looks for an abort, costs the pool its connection, and a database in
/// memory with it.)
async fn started<'a>(
    rb: &'a Runbook,
    script: &Arc<Script>,
    strict: bool,
) -> (Runner<'a>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a directory");
    let clock = Clock::virtual_from(START_MS);
    let url = format!("sqlite://{}/state.db", dir.path().display());
    let store = clock.io(Store::open(&url)).await.expect("a store");
    let mut r = Runner::new(
        rb,
        store,
        "r1".into(),
        RunState::default(),
        0,
        std::env::temp_dir().join("runbook-paused-tests"),
        Reporter::plain(LogFormat::Text),
    );
    r.clock = clock;
    r.effects = script.clone() as Arc<dyn Effects>;
    let mut start = Event::RunStarted {
        runbook: rb.id.clone(),
        title: rb.title.clone(),
        file: "t.yaml".into(),
        file_sha256: String::new(),
        vars: rb.vars.clone(),
        operator: "ops".into(),
        host: "h".into(),
        pid: 1,
        window_start_ms: None,
        guard: strict.then(|| "strict".to_owned()),
        rehearsal: false,
        public: None,
        limit: Vec::new(),
    };
    // The public texts, as `execute` plans them.
    let state = RunState::default()
        .fold(&start, START_MS)
        .expect("a run can start");
    let plan = crate::engine::publish::plan(rb, None, &r.context_of(&state, None));
    if let Event::RunStarted { public, .. } = &mut start {
        *public = Some(Box::new(plan));
    }
    r.record(start).await.expect("recorded");
    (r, dir)
}

async fn journal(r: &Runner<'_>) -> Vec<Recorded> {
    r.clock
        .io(r.store.load(&r.run_id))
        .await
        .expect("the journal")
}

/// The public updates of `kind`: (ms since the start, body).
fn published(journal: &[Recorded], kind: &str) -> Vec<(i64, String)> {
    journal
        .iter()
        .filter_map(|r| match &r.event {
            Event::Published(u) if u.kind == kind => Some((r.at_ms - START_MS, u.body.clone())),
            _ => None,
        })
        .collect()
}

/// The kinds of the events, in order, without the public updates.
fn kinds(journal: &[Recorded]) -> Vec<&'static str> {
    journal
        .iter()
        .filter(|r| !matches!(r.event, Event::Published(_)))
        .map(|r| r.event.kind())
        .collect()
}

/// When the first event of `kind` about `step` was recorded (ms since the start).
fn at(journal: &[Recorded], kind: &str, nth: usize) -> i64 {
    journal
        .iter()
        .filter(|r| r.event.kind() == kind)
        .nth(nth)
        .map(|r| r.at_ms - START_MS)
        .unwrap_or_else(|| panic!("no {kind} #{nth} in {:?}", kinds(journal)))
}

const LATE: &str = r#"
runbook: late
status_page: { overrun: { after: 1s, every: 1s } }
steps:
  - { id: slow, kind: patch, title: Updating table sequences, expected: 1s, run: { shell: "sleep 4.5" } }
  - { id: fan, kind: patch, title: Processing the queue, expected: 1s, for_each: [a, b, c], run: { shell: "sleep 1.2" } }
  - { id: quick, kind: patch, title: Quick, run: { shell: "sleep 0.5" } }
"#;

#[tokio::test(start_paused = true)]
async fn a_step_running_late_is_announced_after_the_margin_and_again_at_the_interval() {
    let rb = runbook(LATE);
    let script = Arc::new(
        Script::new()
            .takes("slow", 4.5)
            .takes("fan.0", 1.2)
            .takes("fan.1", 1.2)
            .takes("fan.2", 1.2)
            .takes("quick", 0.5),
    );
    let (mut r, _dir) = started(&rb, &script, false).await;
    let real = std::time::Instant::now();
    assert_eq!(r.drive().await.unwrap(), Stop::Ended(RunStatus::Completed));
    let j = journal(&r).await;
    let late = |title: &str| -> Vec<i64> {
        published(&j, "overrun")
            .into_iter()
            .filter(|(_, body)| body.contains(&format!("{title} is taking longer than expected")))
            .map(|(t, _)| t)
            .collect()
    };
    // 1 s expected + 1 s margin, then every second: at 2, 3 and 4 s of 4.5 s.
    let slow_started = at(&j, "step_started", 0);
    let slow: Vec<i64> = late("Updating table sequences")
        .into_iter()
        .map(|t| t - slow_started)
        .collect();
    assert_eq!(
        slow,
        [2 * S, 3 * S, 4 * S],
        "{:?}",
        published(&j, "overrun")
    );
    // The fan-out (3.6 s against 1 s) is announced too; a step without `expected`
    // never is.
    let fan_started = at(&j, "step_started", 1);
    let fan: Vec<i64> = late("Processing the queue")
        .into_iter()
        .map(|t| t - fan_started)
        .collect();
    assert_eq!(fan, [2 * S, 3 * S], "{:?}", published(&j, "overrun"));
    assert!(late("Quick").is_empty());
    // Each update says when the run should now end.
    assert!(j.iter().all(|r| match &r.event {
        Event::Published(u) if u.kind == "overrun" => u.eta_ms.is_some(),
        _ => true,
    }));
    // Virtual seconds, not real ones.
    assert_eq!(at(&j, "run_completed", 0), 4500 + 3600 + 500);
    assert!(
        real.elapsed() < Duration::from_secs(3),
        "{:?}",
        real.elapsed()
    );
}

const APPROVAL: &str = r#"
runbook: approve
steps:
  - { id: snap, kind: patch, checkpoint: true, run: { shell: "echo snap >> markers" } }
  - { id: change, kind: patch, run: { shell: "echo change >> markers" }, rollback: { shell: "echo undo-change >> markers" } }
  - { id: go, kind: approve, timeout: 1m, on_timeout: ON_TIMEOUT }
  - { id: after, kind: patch, run: { shell: "echo after >> markers" } }
"#;

#[tokio::test(start_paused = true)]
async fn an_approval_nobody_gives_times_out_and_rolls_back() {
    let rb = runbook(&APPROVAL.replace("ON_TIMEOUT", "reject"));
    let script = Arc::new(Script::new());
    let (mut r, _dir) = started(&rb, &script, false).await;
    assert_eq!(r.drive().await.unwrap(), Stop::Ended(RunStatus::RolledBack));
    let j = journal(&r).await;
    // Asked at once, timed out a minute later, to the millisecond.
    let asked = at(&j, "approval_requested", 0);
    assert_eq!(at(&j, "step_timed_out", 0) - asked, 60 * S);
    let tail: Vec<_> = kinds(&j)
        .into_iter()
        .skip_while(|k| *k != "step_timed_out")
        .collect();
    assert_eq!(
        tail,
        [
            "step_timed_out",
            "rollback_started",
            "step_rollback_started",
            "step_rolled_back",
            "run_rolled_back"
        ]
    );
    assert_eq!(script.log(), ["snap", "change", "undo change"]);
    let s = &r.state;
    assert_eq!(s.step("go").status, StepStatus::TimedOut);
    assert_eq!(s.step("after").status, StepStatus::Pending);
}

#[tokio::test(start_paused = true)]
async fn an_approval_that_times_out_as_approved_goes_on() {
    let rb = runbook(&APPROVAL.replace("ON_TIMEOUT", "approve"));
    let script = Arc::new(Script::new());
    let (mut r, _dir) = started(&rb, &script, false).await;
    assert_eq!(r.drive().await.unwrap(), Stop::Ended(RunStatus::Completed));
    let j = journal(&r).await;
    assert_eq!(
        at(&j, "approved", 0) - at(&j, "approval_requested", 0),
        60 * S
    );
    assert!(j.iter().any(|r| matches!(
        &r.event,
        Event::Approved { step, by, .. } if step == "go" && by == "timeout"
    )));
    assert_eq!(script.log(), ["snap", "change", "after"]);
}

#[tokio::test(start_paused = true)]
async fn an_abort_stops_the_step_that_waits() {
    let rb = runbook(
        "runbook: long\nsteps:\n  - { id: long, kind: patch, run: { shell: 'sleep 3600' } }\n  - { id: next, kind: patch, run: { shell: 'true' } }\n",
    );
    let script = Arc::new(Script::new().takes("long", 3600.0));
    let (mut r, _dir) = started(&rb, &script, false).await;
    // `runbook abort` from another process, 5 s into the step.
    let (store, clock) = (r.store.clone(), r.clock);
    let abort = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let head = clock.io(store.load("r1")).await.expect("the journal").len() as i64;
        let aborted = Event::RunAborted {
            by: "carol".into(),
            reason: "aborted by carol".into(),
        };
        let at = clock.now_ms();
        clock
            .io(store.append("r1", head + 1, &[aborted], at))
            .await
            .expect("the abort is recorded");
    });
    assert_eq!(r.drive().await.unwrap(), Stop::Ended(RunStatus::Aborted));
    abort.await.unwrap();
    let j = journal(&r).await;
    // The runner saw it within its poll and stopped the step: `next` never ran.
    assert_eq!(script.log(), ["long"]);
    let aborted = at(&j, "run_aborted", 0);
    assert!((5 * S..6 * S).contains(&aborted), "{aborted}");
    assert_eq!(r.state.status, RunStatus::Aborted);
    assert_eq!(r.state.reason.as_deref(), Some("aborted by carol"));
    assert_eq!(
        r.state.step("long").error.as_deref(),
        Some("stopped: the run was aborted")
    );
    assert_eq!(r.state.step("next").status, StepStatus::Pending);
}

#[tokio::test(start_paused = true)]
async fn a_failing_step_is_retried_after_a_doubling_backoff() {
    let rb = runbook(
        "runbook: retry\nsteps:\n  - id: flaky\n    kind: patch\n    retries: { max: 2, backoff: 200ms }\n    run: { shell: 'false' }\n",
    );
    let boom = || Outcome::Failed("boom".into());
    let script = Arc::new(
        Script::new()
            .then("flaky", 1.0, boom())
            .then("flaky", 1.0, boom())
            .then("flaky", 1.0, ok()),
    );
    let (mut r, _dir) = started(&rb, &script, false).await;
    assert_eq!(r.drive().await.unwrap(), Stop::Ended(RunStatus::Completed));
    let j = journal(&r).await;
    assert_eq!(script.log(), ["flaky", "flaky", "flaky"]);
    assert_eq!(r.state.step("flaky").attempts, 3);
    // Each attempt starts when its retry was scheduled for: 200 ms, then 400 ms, after
    // the failure.
    for (n, backoff) in [(0, 200), (1, 400)] {
        let failed = at(&j, "step_failed", n);
        let (at_ms, next_attempt) = j
            .iter()
            .filter_map(|r| match r.event {
                Event::RetryScheduled {
                    at_ms,
                    next_attempt,
                    ..
                } => Some((at_ms - START_MS, next_attempt)),
                _ => None,
            })
            .nth(n)
            .expect("a retry");
        assert_eq!((at_ms - failed, next_attempt), (backoff, n as u32 + 2));
        assert_eq!(at(&j, "step_checking", n + 1), at_ms);
    }
}

const GUARDED: &str = r#"
runbook: guarded
window: { start: "2026-01-01T00:00:00Z", duration: 3s }
steps:
  - { id: change, kind: patch, expected: 1s, run: { shell: "sleep 1; echo change >> markers" }, rollback: { shell: "echo undo >> markers" } }
  - { id: long, kind: patch, expected: 5s, run: { shell: "echo long >> markers" } }
"#;

#[tokio::test(start_paused = true)]
async fn the_window_guard_pauses_before_a_step_that_would_not_fit_and_resume_goes_on() {
    let rb = runbook(GUARDED);
    let script = Arc::new(Script::new().takes("change", 1.0));
    let (mut r, _dir) = started(&rb, &script, false).await;
    let Stop::Paused(reason) = r.drive().await.unwrap() else {
        panic!("not paused: {:?}", kinds(&journal(&r).await));
    };
    assert!(reason.contains("window guard: step `long`"), "{reason}");
    assert!(reason.contains("runbook resume r1 --rollback"), "{reason}");
    assert_eq!(r.state.status, RunStatus::Paused);
    assert_eq!(r.state.guard_paused.as_deref(), Some("long"));
    assert_eq!(script.log(), ["change"]);
    // A person lets it go on: the guard does not stop the same step again.
    r.record(Event::RunResumed {
        decision: Decision::Continue,
        by: "ops".into(),
        reason: None,
        only: Vec::new(),
    })
    .await
    .unwrap();
    assert_eq!(r.drive().await.unwrap(), Stop::Ended(RunStatus::Completed));
    assert_eq!(script.log(), ["change", "long"]);
}

#[tokio::test(start_paused = true)]
async fn the_window_guard_rolls_back_on_a_rollback_decision_or_by_itself_when_strict() {
    let rb = runbook(GUARDED);
    // A person chooses to roll back.
    let script = Arc::new(Script::new().takes("change", 1.0));
    let (mut r, _dir) = started(&rb, &script, false).await;
    assert!(matches!(r.drive().await.unwrap(), Stop::Paused(_)));
    r.record(Event::RollbackStarted {
        reason: "rollback chosen by ops".into(),
    })
    .await
    .unwrap();
    assert_eq!(r.drive().await.unwrap(), Stop::Ended(RunStatus::RolledBack));
    assert_eq!(script.log(), ["change", "undo change"]);
    // `--guard strict`: by itself.
    let script = Arc::new(Script::new().takes("change", 1.0));
    let (mut r, _dir) = started(&rb, &script, true).await;
    assert_eq!(r.drive().await.unwrap(), Stop::Ended(RunStatus::RolledBack));
    let j = journal(&r).await;
    let reason = j
        .iter()
        .find_map(|r| match &r.event {
            Event::RollbackStarted { reason } => Some(reason.clone()),
            _ => None,
        })
        .expect("a rollback");
    assert!(reason.contains("--guard strict"), "{reason}");
    assert!(!kinds(&j).contains(&"run_paused"));
    assert_eq!(script.log(), ["change", "undo change"]);
}
