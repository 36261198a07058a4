//! Unit tests of `RunState::apply` (every legal and illegal transition) and `decide`.
//!
//! A state is always built the way the engine builds it: by folding a journal. The table
//! test tries every kind of event in every reachable situation; the tests after it check
//! what each legal event records. The `decide` tests fold journals against small runbooks
//! loaded from YAML, as the runner does after a restart.

use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::decide::{self, Facts, Next, Outcome, backoff_delay, decide};
use super::event::{Decision, Event};
use super::state::{ItemStatus, RunState, RunStatus, StepStatus};
use super::timing::Learned;
use crate::runbook::{OnTimeout, Runbook, load_bytes};

// ---------------------------------------------------------------------------------------
// Journals
// ---------------------------------------------------------------------------------------

const SECOND: i64 = 1000;

/// When the event under test is applied: later than any journal in this file.
const NOW: i64 = 999 * SECOND;

fn run_started() -> Event {
    Event::RunStarted {
        runbook: "unit".into(),
        title: "Unit test".into(),
        file: "test.yaml".into(),
        file_sha256: "ab".repeat(32),
        vars: IndexMap::from([("db".to_owned(), Value::from("sqlite://app.db"))]),
        operator: "ops".into(),
        host: "db1".into(),
        pid: 4242,
        window_start_ms: None,
        guard: None,
        rehearsal: false,
        public: None,
        limit: Vec::new(),
    }
}

fn published() -> Event {
    Event::Published(super::event::PublicUpdate {
        kind: "manual".into(),
        status: "in_progress".into(),
        body: "Still on it.".into(),
        step: None,
        eta_ms: None,
        by: Some("ops".into()),
        incident: false,
        quiet_until_ms: None,
    })
}

fn statement_cancelled(id: &str) -> Event {
    Event::StatementCancelled {
        step: id.into(),
        database: "postgres://ops@db1/app".into(),
        pid: Some(4711),
        statement: "SELECT pg_sleep(600)".into(),
        terminated: false,
        error: None,
    }
}

fn checking(id: &str, attempt: u32) -> Event {
    let step = id.into();
    Event::StepChecking { step, attempt }
}

fn precondition_failed(id: &str, attempt: u32) -> Event {
    let (step, message) = (id.into(), "the backup was not verified".into());
    Event::PreconditionFailed {
        step,
        attempt,
        message,
    }
}

fn started(id: &str, attempt: u32) -> Event {
    let (step, verifying) = (id.into(), false);
    Event::StepStarted {
        step,
        attempt,
        verifying,
        estimate_ms: None,
    }
}

/// A `test` or `verify` step starts.
fn verifying(id: &str, attempt: u32) -> Event {
    let (step, verifying) = (id.into(), true);
    Event::StepStarted {
        step,
        attempt,
        verifying,
        estimate_ms: None,
    }
}

fn succeeded(id: &str, attempt: u32) -> Event {
    let (step, outputs) = (id.into(), IndexMap::new());
    Event::StepSucceeded {
        step,
        attempt,
        outputs,
    }
}

fn failed(id: &str, attempt: u32) -> Event {
    let (step, error) = (id.into(), "boom".into());
    Event::StepFailed {
        step,
        attempt,
        error,
    }
}

fn timed_out(id: &str, attempt: u32) -> Event {
    let step = id.into();
    Event::StepTimedOut { step, attempt }
}

fn retry(id: &str, next_attempt: u32, at_ms: i64) -> Event {
    let step = id.into();
    Event::RetryScheduled {
        step,
        next_attempt,
        at_ms,
    }
}

fn skipped(id: &str) -> Event {
    let (step, reason) = (id.into(), "skipped by ops".into());
    Event::StepSkipped { step, reason }
}

fn ignored(id: &str) -> Event {
    Event::FailureIgnored { step: id.into() }
}

fn item_started(id: &str, index: usize) -> Event {
    let step = id.into();
    Event::ItemStarted {
        step,
        index,
        name: String::new(),
    }
}

fn item_succeeded(id: &str, index: usize) -> Event {
    let step = id.into();
    let outputs = IndexMap::from([("n".to_owned(), Value::from(index))]);
    Event::ItemSucceeded {
        step,
        index,
        name: String::new(),
        outputs,
    }
}

fn item_failed(id: &str, index: usize) -> Event {
    let (step, error) = (id.into(), "item boom".into());
    Event::ItemFailed {
        step,
        index,
        name: String::new(),
        error,
    }
}

fn item_undo_started(id: &str, index: usize) -> Event {
    let step = id.into();
    Event::ItemRollbackStarted {
        step,
        index,
        name: String::new(),
    }
}

fn item_undone(id: &str, index: usize) -> Event {
    let step = id.into();
    Event::ItemRolledBack {
        step,
        index,
        name: String::new(),
    }
}

fn approval_requested(id: &str) -> Event {
    Event::ApprovalRequested {
        step: id.into(),
        wave: None,
    }
}

fn approved(id: &str) -> Event {
    let (step, by) = (id.into(), "alice".into());
    Event::Approved {
        step,
        by,
        comment: None,
    }
}

fn rejected(id: &str) -> Event {
    let (step, by) = (id.into(), "alice".into());
    Event::Rejected {
        step,
        by,
        comment: None,
    }
}

fn paused() -> Event {
    let reason = "step `a` failed: boom".into();
    Event::RunPaused {
        reason,
        guard: None,
    }
}

fn resumed(decision: Decision) -> Event {
    let by = "ops".into();
    Event::RunResumed {
        decision,
        by,
        reason: None,
        only: Vec::new(),
    }
}

fn rollback_started() -> Event {
    let reason = "step `a` failed: boom".into();
    Event::RollbackStarted { reason }
}

fn undo_started(id: &str) -> Event {
    Event::StepRollbackStarted { step: id.into() }
}

fn undone(id: &str) -> Event {
    Event::StepRolledBack {
        step: id.into(),
        by_restore: None,
    }
}

fn undo_failed(id: &str) -> Event {
    let (step, error) = (id.into(), "disk full".into());
    Event::StepRollbackFailed { step, error }
}

fn run_failed() -> Event {
    let reason = "rollback of step `a` failed".into();
    Event::RunFailed { reason }
}

fn run_aborted() -> Event {
    let (by, reason) = ("ops".into(), "aborted by ops".into());
    Event::RunAborted { by, reason }
}

/// `steps` succeeding at their first attempt.
fn ran(steps: &[&str]) -> Vec<Event> {
    let ran = steps
        .iter()
        .flat_map(|s| [checking(s, 1), started(s, 1), succeeded(s, 1)]);
    ran.collect()
}

/// A run in which `steps` succeeded at their first attempt.
fn after(steps: &[&str]) -> Vec<Event> {
    and(vec![run_started()], ran(steps))
}

/// A run whose step `id` is running its first attempt.
fn running(id: &str) -> Vec<Event> {
    vec![run_started(), checking(id, 1), started(id, 1)]
}

/// `journal`, then `more`.
fn and(mut journal: Vec<Event>, more: impl IntoIterator<Item = Event>) -> Vec<Event> {
    journal.extend(more);
    journal
}

/// Folds a journal whose n-th event was recorded at n seconds.
fn fold(events: &[Event]) -> RunState {
    RunState::from_events(events.iter().zip(1..).map(|(e, n)| (e, n * SECOND)))
        .unwrap_or_else(|e| panic!("the journal should be legal, but {e}"))
}

/// Applies a legal event at `NOW`.
fn apply(state: &RunState, event: &Event) -> RunState {
    let mut next = state.clone();
    let kind = event.kind();
    next.apply(event, NOW)
        .unwrap_or_else(|e| panic!("`{kind}` should be legal, but {e}"));
    next
}

/// `RunState` has no `PartialEq`; its debug form shows every field.
fn snapshot(state: &RunState) -> String {
    format!("{state:?}")
}

/// Asserts that `event` is refused and changes nothing.
fn assert_illegal(state: &RunState, event: &Event) {
    let mut after = state.clone();
    let err = after
        .apply(event, NOW)
        .expect_err("the event should be illegal");
    assert_eq!(err.event, event.kind());
    assert_eq!(
        snapshot(&after),
        snapshot(state),
        "`{}` changed the state",
        err.event
    );
}

// ---------------------------------------------------------------------------------------
// Every event in every situation
// ---------------------------------------------------------------------------------------

/// How the table names an event: its kind, and the decision of a resume.
fn label(event: &Event) -> String {
    use Event as E;
    // No wildcard: a new kind of event does not compile until the table knows it.
    match event {
        E::RunResumed { decision, .. } => {
            format!("run_resumed({})", format!("{decision:?}").to_lowercase())
        }
        E::RunStarted { .. }
        | E::StepChecking { .. }
        | E::PreconditionFailed { .. }
        | E::StepStarted { .. }
        | E::StepSucceeded { .. }
        | E::StepFailed { .. }
        | E::StepTimedOut { .. }
        | E::RetryScheduled { .. }
        | E::StepSkipped { .. }
        | E::FailureIgnored { .. }
        | E::StepProgress { .. }
        | E::ItemStarted { .. }
        | E::ItemSucceeded { .. }
        | E::ItemFailed { .. }
        | E::ItemRollbackStarted { .. }
        | E::ItemRolledBack { .. }
        | E::ApprovalRequested { .. }
        | E::Approved { .. }
        | E::Rejected { .. }
        | E::ServiceClosed
        | E::ServiceReopened
        | E::RunPaused { .. }
        | E::RollbackStarted { .. }
        | E::StepRollbackStarted { .. }
        | E::StepRolledBack { .. }
        | E::StepRollbackFailed { .. }
        | E::RunCompleted
        | E::RunRolledBack { .. }
        | E::RunFailed { .. }
        | E::RunAborted { .. }
        | E::RunForgotten { .. }
        | E::StatementCancelled { .. }
        | E::Published(_) => event.kind().to_owned(),
    }
}

/// Every kind of event about step `a` (and each resume decision), with the attempt
/// numbers the state expects, so only the statuses decide what is legal.
fn every_event(state: &RunState) -> Vec<Event> {
    let attempt = state.step("a").attempts.max(1);
    let next = state.step("a").attempts + 1;
    let resumes = [
        Decision::Continue,
        Decision::Retry,
        Decision::Skip,
        Decision::Rollback,
    ];
    let step_events = [
        checking("a", next),
        precondition_failed("a", attempt),
        started("a", attempt),
        succeeded("a", attempt),
        failed("a", attempt),
        timed_out("a", attempt),
        retry("a", next, NOW + SECOND),
        skipped("a"),
        ignored("a"),
        item_started("a", 0),
        item_succeeded("a", 0),
        item_failed("a", 0),
        item_undo_started("a", 0),
        item_undone("a", 0),
        approval_requested("a"),
        approved("a"),
        rejected("a"),
        undo_started("a"),
        undone("a"),
        undo_failed("a"),
        statement_cancelled("a"),
    ];
    let run_events = [
        run_started(),
        Event::ServiceClosed,
        Event::ServiceReopened,
        paused(),
        rollback_started(),
        Event::RunCompleted,
        Event::RunRolledBack { left: vec![] },
        run_failed(),
        run_aborted(),
        Event::RunForgotten {
            by: "sam".into(),
            reason: None,
        },
        published(),
    ];
    let resumes = resumes.map(resumed);
    step_events
        .into_iter()
        .chain(run_events)
        .chain(resumes)
        .collect()
}

/// A run reached by `journal`, and the events that may come next (space-separated
/// labels).
struct Situation {
    name: &'static str,
    journal: Vec<Event>,
    /// Allowed by the documented state machine; everything else must be refused.
    legal: String,
}

impl Situation {
    fn allows(&self, label: &str) -> bool {
        // A public update, or a statement stopped on the server, is legal whenever the
        // run has started, even after its end.
        if label == "published" || label == "statement_cancelled" {
            return !self.journal.is_empty();
        }
        // An ended run is forgotten (by `runbook forget`) once, and no other run is.
        if label == "run_forgotten" {
            let ended = self.journal.iter().any(|e| {
                matches!(
                    e,
                    Event::RunCompleted
                        | Event::RunRolledBack { .. }
                        | Event::RunFailed { .. }
                        | Event::RunAborted { .. }
                )
            });
            let forgotten = self
                .journal
                .iter()
                .any(|e| matches!(e, Event::RunForgotten { .. }));
            return ended && !forgotten;
        }
        self.legal.split_whitespace().any(|l| l == label)
    }
}

fn situation(name: &'static str, journal: Vec<Event>, legal: &[&str]) -> Situation {
    Situation {
        name,
        journal,
        legal: legal.join(" "),
    }
}

/// Run-level events allowed while running or verifying, besides closing or reopening.
const RUNNING: &str = "run_paused rollback_started run_completed run_failed run_aborted";
/// A running run is resumed only about a step in doubt (after a crash).
const RESUMES_IN_DOUBT: &str = "run_resumed(retry) run_resumed(skip)";
const PAUSED: &str = "rollback_started run_failed run_aborted \
                      run_resumed(continue) run_resumed(retry) run_resumed(skip)";
/// Run-level events allowed while rolling back, besides ending `rolled_back`.
const ROLLING_BACK: &str = "run_resumed(retry) run_failed run_aborted";
/// Allowed while running with the service open (never while rolling back).
const CLOSE: &str = "service_closed";
/// Allowed while rolling back with no undo under way or failed.
const ROLLED_BACK: &str = "run_rolled_back";
/// Outcomes of a running step, and what it may do while it runs.
const A_RUNS: &str = "step_succeeded step_failed step_timed_out step_skipped approval_requested";

fn situations() -> Vec<Situation> {
    let a_failed = || and(running("a"), [failed("a", 1)]);
    let awaiting = || and(running("a"), [approval_requested("a")]);
    vec![
        situation("scheduled", vec![], &["run_started"]),
        situation(
            "running, `a` never mentioned",
            vec![run_started()],
            &["step_checking step_skipped", RUNNING, CLOSE],
        ),
        situation(
            "running, service closed",
            vec![run_started(), Event::ServiceClosed],
            &["step_checking step_skipped service_reopened", RUNNING],
        ),
        situation(
            "running, `a` pending a retry",
            and(a_failed(), [retry("a", 2, 5 * SECOND)]),
            &["step_checking step_skipped", RUNNING, CLOSE],
        ),
        situation(
            "running, `a` checking",
            vec![run_started(), checking("a", 1)],
            &[
                "precondition_failed step_started step_failed step_skipped",
                RUNNING,
                RESUMES_IN_DOUBT,
                CLOSE,
            ],
        ),
        situation(
            "running, `a` running",
            running("a"),
            &[A_RUNS, "item_started", RUNNING, RESUMES_IN_DOUBT, CLOSE],
        ),
        situation(
            "running, `a` running item 0",
            and(running("a"), [item_started("a", 0)]),
            &[
                A_RUNS,
                "item_succeeded item_failed",
                RUNNING,
                RESUMES_IN_DOUBT,
                CLOSE,
            ],
        ),
        situation(
            "verifying, `a` running",
            vec![run_started(), checking("a", 1), verifying("a", 1)],
            &[A_RUNS, "item_started", RUNNING, RESUMES_IN_DOUBT, CLOSE],
        ),
        situation(
            "awaiting approval of `a`",
            awaiting(),
            &[
                "step_timed_out step_skipped approved rejected",
                "run_paused rollback_started run_failed run_aborted",
            ],
        ),
        situation(
            "running, `a` failed",
            a_failed(),
            &[
                "retry_scheduled step_skipped failure_ignored",
                RUNNING,
                CLOSE,
            ],
        ),
        situation(
            "running, `a` failed and ignored",
            and(a_failed(), [ignored("a")]),
            &[RUNNING, CLOSE],
        ),
        situation(
            "running, `a` timed out",
            and(running("a"), [timed_out("a", 1)]),
            &[
                "retry_scheduled step_skipped failure_ignored",
                RUNNING,
                CLOSE,
            ],
        ),
        situation(
            "running, `a` skipped",
            vec![run_started(), skipped("a")],
            &[RUNNING, CLOSE],
        ),
        situation("running, `a` succeeded", after(&["a"]), &[RUNNING, CLOSE]),
        situation(
            "paused, `a` failed",
            and(a_failed(), [paused()]),
            &["step_skipped", PAUSED],
        ),
        situation(
            "paused, `a` running",
            and(running("a"), [paused()]),
            &[
                "step_succeeded step_failed step_timed_out step_skipped item_started",
                PAUSED,
            ],
        ),
        situation(
            "rolling back, `a` succeeded",
            and(after(&["a"]), [rollback_started()]),
            &["step_rollback_started", ROLLING_BACK, ROLLED_BACK],
        ),
        situation(
            "rolling back, service closed",
            vec![run_started(), Event::ServiceClosed, rollback_started()],
            &["service_reopened", ROLLING_BACK, ROLLED_BACK],
        ),
        situation(
            "rolling back, `a` rolling back",
            and(after(&["a"]), [rollback_started(), undo_started("a")]),
            &["step_rolled_back step_rollback_failed", ROLLING_BACK],
        ),
        situation(
            "rolling back, fan-out `a` rolling back",
            and(
                and(running("a"), [item_started("a", 0), item_succeeded("a", 0)]),
                [succeeded("a", 1), rollback_started(), undo_started("a")],
            ),
            &[
                "item_rollback_started step_rolled_back step_rollback_failed",
                ROLLING_BACK,
            ],
        ),
        situation(
            "rolling back, fan-out `a` undoing item 0",
            and(
                and(running("a"), [item_started("a", 0), item_succeeded("a", 0)]),
                [
                    succeeded("a", 1),
                    rollback_started(),
                    undo_started("a"),
                    item_undo_started("a", 0),
                ],
            ),
            &["item_rolled_back step_rollback_failed", ROLLING_BACK],
        ),
        situation(
            "rolling back, fan-out `a` item 0 undone",
            and(
                and(running("a"), [item_started("a", 0), item_succeeded("a", 0)]),
                [
                    succeeded("a", 1),
                    rollback_started(),
                    undo_started("a"),
                    item_undo_started("a", 0),
                    item_undone("a", 0),
                ],
            ),
            &["step_rolled_back step_rollback_failed", ROLLING_BACK],
        ),
        situation(
            "rolling back, `a` rolled back",
            and(
                after(&["a"]),
                [rollback_started(), undo_started("a"), undone("a")],
            ),
            &[ROLLING_BACK, ROLLED_BACK],
        ),
        situation(
            "rolling back, `a` rollback failed",
            and(
                after(&["a"]),
                [rollback_started(), undo_started("a"), undo_failed("a")],
            ),
            &[ROLLING_BACK],
        ),
        situation(
            "rolling back, `a` failed",
            and(a_failed(), [rollback_started()]),
            &[ROLLING_BACK, ROLLED_BACK],
        ),
        situation(
            "rolling back, `a` in doubt",
            and(running("a"), [rollback_started()]),
            &[ROLLING_BACK, ROLLED_BACK],
        ),
        situation("completed", vec![run_started(), Event::RunCompleted], &[]),
        situation(
            "rolled back",
            vec![
                run_started(),
                rollback_started(),
                Event::RunRolledBack { left: vec![] },
            ],
            &[],
        ),
        situation("failed", and(running("a"), [run_failed()]), &[]),
        situation("aborted", and(awaiting(), [run_aborted()]), &[]),
    ]
}

#[test]
fn every_event_in_every_situation_is_legal_exactly_when_the_state_machine_allows_it() {
    let labels: Vec<String> = every_event(&RunState::default())
        .iter()
        .map(label)
        .collect();
    let mut wrong = Vec::new();
    for s in situations() {
        for l in s.legal.split_whitespace() {
            assert!(labels.iter().any(|x| x == l), "{}: no event `{l}`", s.name);
        }
        let state = fold(&s.journal);
        for event in every_event(&state) {
            let l = label(&event);
            let mut after = state.clone();
            match (s.allows(&l), after.apply(&event, NOW)) {
                (true, Ok(())) => assert_eq!(after.events, state.events + 1),
                (false, Err(e)) => {
                    assert_eq!(e.event, event.kind());
                    let after = snapshot(&after);
                    assert_eq!(
                        after,
                        snapshot(&state),
                        "{}: refused `{l}` changed it",
                        s.name
                    );
                }
                (true, Err(e)) => wrong.push(format!("{}: `{l}` refused: {e}", s.name)),
                (false, Ok(())) => wrong.push(format!("{}: `{l}` accepted", s.name)),
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------
// What each legal event records
// ---------------------------------------------------------------------------------------

#[test]
fn run_started_records_the_run_and_starts_it() {
    let s = fold(&[run_started()]);
    assert_eq!(s.status, RunStatus::Running);
    assert_eq!(
        [&s.runbook, &s.title, &s.file],
        ["unit", "Unit test", "test.yaml"]
    );
    assert_eq!([&s.operator, &s.host], ["ops", "db1"]);
    assert_eq!((s.pid, s.file_sha256.len()), (4242, 64));
    assert_eq!(s.vars["db"], Value::from("sqlite://app.db"));
    assert_eq!(
        (s.started_ms, s.ended_ms, s.events),
        (Some(SECOND), None, 1)
    );
}

#[test]
fn a_cancelled_statement_is_recorded_on_its_step_and_changes_nothing_else() {
    let aborted = and(running("a"), [run_aborted()]);
    let before = fold(&aborted);
    let after = apply(&before, &statement_cancelled("a"));
    assert_eq!(after.status, RunStatus::Aborted);
    let a = after.step("a");
    assert_eq!(a.status, before.step("a").status);
    assert_eq!(a.cancelled.len(), 1);
    let c = &a.cancelled[0];
    assert_eq!(
        (c.database.as_str(), c.pid, c.statement.as_str()),
        ("postgres://ops@db1/app", Some(4711), "SELECT pg_sleep(600)")
    );
    assert!(!c.terminated && c.error.is_none());
}

#[test]
fn a_run_starts_only_once() {
    let err = fold(&[run_started()])
        .fold(&run_started(), NOW)
        .unwrap_err();
    assert_eq!((err.what.as_str(), err.state), ("the run", "running"));
    assert_eq!(
        err.to_string(),
        "`run_started` cannot happen while the run is running"
    );
}

#[test]
fn from_events_stops_at_the_first_illegal_event_and_names_it() {
    let journal = [run_started(), succeeded("a", 1), Event::RunCompleted];
    let err = RunState::from_events(journal.iter().map(|e| (e, 0))).unwrap_err();
    let message = "`step_succeeded` cannot happen while step `a` is pending";
    assert_eq!(err.to_string(), message);
    let err = RunState::from_events([(&checking("a", 1), 0)]).unwrap_err();
    let message = "`step_checking` cannot happen while the run is scheduled";
    assert_eq!(err.to_string(), message);
}

#[test]
fn fold_and_apply_agree_and_count_events() {
    let journal = and(after(&["a", "b"]), [Event::RunCompleted]);
    let mut applied = RunState::default();
    for (e, n) in journal.iter().zip(1..) {
        applied.apply(e, n * SECOND).unwrap();
    }
    let folded = fold(&journal);
    assert_eq!(snapshot(&folded), snapshot(&applied));
    assert_eq!(folded.events, 8);
    assert_eq!(folded.steps.keys().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn a_step_never_mentioned_is_pending() {
    let s = fold(&[run_started()]);
    assert_eq!(
        (s.step("nope").status, s.step("nope").attempts),
        (StepStatus::Pending, 0)
    );
    assert!(s.steps.is_empty());
}

#[test]
fn checking_counts_attempts_and_clears_the_last_failure() {
    let s = apply(
        &fold(&and(running("a"), [failed("a", 1)])),
        &retry("a", 2, 10 * SECOND),
    );
    assert_eq!(s.step("a").status, StepStatus::Pending);
    assert_eq!(s.step("a").retry_at_ms, Some(10 * SECOND));
    let s = apply(&s, &checking("a", 2));
    let a = s.step("a");
    assert_eq!((a.status, a.attempts), (StepStatus::Checking, 2));
    assert_eq!((a.error.as_deref(), a.retry_at_ms), (None, None));
    // The step started when its first attempt did.
    assert_eq!(a.started_ms, Some(2 * SECOND));
}

#[test]
fn attempts_must_follow_one_another() {
    let failed_once = fold(&and(running("a"), [failed("a", 1)]));
    assert_illegal(&failed_once, &retry("a", 1, NOW));
    assert_illegal(&failed_once, &retry("a", 3, NOW));
    let pending_second = apply(&failed_once, &retry("a", 2, NOW));
    assert_illegal(&pending_second, &checking("a", 1));
    assert_illegal(&pending_second, &checking("a", 3));
}

#[test]
fn a_failed_precondition_fails_the_step_with_its_message() {
    let s = fold(&[run_started(), checking("a", 1), precondition_failed("a", 1)]);
    let a = s.step("a");
    assert_eq!(
        (a.status, a.ended_ms),
        (StepStatus::Failed, Some(3 * SECOND))
    );
    assert_eq!(a.error.as_deref(), Some("the backup was not verified"));
}

#[test]
fn a_test_or_verify_step_shows_the_run_as_verifying_until_another_step_starts() {
    let s = fold(&[run_started(), checking("t", 1), verifying("t", 1)]);
    assert_eq!(
        (s.status, s.step("t").status),
        (RunStatus::Verifying, StepStatus::Running)
    );
    let s = apply(&s, &succeeded("t", 1));
    assert_eq!(s.status, RunStatus::Verifying);
    let s = apply(&apply(&s, &checking("b", 1)), &started("b", 1));
    assert_eq!(s.status, RunStatus::Running);
}

#[test]
fn success_records_outputs_and_the_end_time() {
    let outputs = IndexMap::from([("path".to_owned(), Value::from("/backups/1.db"))]);
    let success = Event::StepSucceeded {
        step: "a".into(),
        attempt: 1,
        outputs,
    };
    let s = apply(&fold(&running("a")), &success);
    let a = s.step("a");
    assert_eq!((a.status, a.ended_ms), (StepStatus::Succeeded, Some(NOW)));
    assert_eq!(a.outputs["path"], Value::from("/backups/1.db"));
}

#[test]
fn a_step_fails_while_checking_or_running_and_keeps_the_error() {
    for journal in [vec![run_started(), checking("a", 1)], running("a")] {
        let s = apply(&fold(&journal), &failed("a", 1));
        let a = s.step("a");
        assert_eq!(
            (a.status, a.error.as_deref()),
            (StepStatus::Failed, Some("boom"))
        );
        assert_eq!(a.ended_ms, Some(NOW));
    }
}

#[test]
fn a_timeout_is_recorded_as_its_own_outcome() {
    let s = fold(&and(running("a"), [timed_out("a", 1)]));
    let a = s.step("a");
    assert_eq!(
        (a.status, a.error.as_deref()),
        (StepStatus::TimedOut, Some("timed out"))
    );
}

#[test]
fn an_approval_that_times_out_gives_the_run_back() {
    let s = fold(&and(
        running("g"),
        [approval_requested("g"), timed_out("g", 1)],
    ));
    assert_eq!(
        (s.status, s.step("g").awaiting_approval),
        (RunStatus::Running, false)
    );
}

#[test]
fn skipping_records_why_and_ends_a_wait_for_approval() {
    let s = fold(&[run_started(), skipped("a")]);
    let a = s.step("a");
    let reason = Some("skipped by ops");
    assert_eq!(
        (a.status, a.error.as_deref()),
        (StepStatus::Skipped, reason)
    );
    let s = fold(&and(running("g"), [approval_requested("g"), skipped("g")]));
    assert_eq!(
        (s.status, s.step("g").awaiting_approval),
        (RunStatus::Running, false)
    );
}

#[test]
fn a_failure_is_ignored_once() {
    let s = fold(&and(running("a"), [failed("a", 1), ignored("a")]));
    assert_eq!(
        (s.step("a").status, s.step("a").failure_ignored),
        (StepStatus::Failed, true)
    );
    assert_illegal(&s, &ignored("a"));
}

#[test]
fn fan_out_items_finish_once_each() {
    let items = [
        item_started("f", 0),
        item_started("f", 1),
        item_succeeded("f", 0),
        item_failed("f", 1),
    ];
    let s = fold(&and(running("f"), items));
    let items: Vec<_> = s.step("f").items.clone().into_iter().collect();
    assert_eq!(items, [(0, ItemStatus::Succeeded), (1, ItemStatus::Failed)]);
    // What an item produced is kept for its undo; a failed item produced nothing.
    let kept: Vec<_> = s.step("f").item_outputs.clone().into_iter().collect();
    assert_eq!(
        kept,
        [(0, IndexMap::from([("n".to_owned(), Value::from(0))]))]
    );
    assert_illegal(&s, &item_succeeded("f", 0));
    assert_illegal(&s, &item_failed("f", 1));
    assert_illegal(&s, &item_succeeded("f", 2));
}

#[test]
fn an_approval_request_waits_and_is_not_in_doubt() {
    let s = fold(&and(running("g"), [approval_requested("g")]));
    assert_eq!(s.status, RunStatus::AwaitingApproval);
    assert!(s.step("g").awaiting_approval && !s.step("g").in_doubt());
    assert_illegal(&s, &approval_requested("g"));
    // Only a person's decision ends an approve step.
    assert_illegal(&s, &succeeded("g", 1));
}

#[test]
fn approval_and_rejection_record_who_decided() {
    let s = fold(&and(running("g"), [approval_requested("g")]));
    for (event, status, decision) in [
        (approved("g"), StepStatus::Succeeded, "approved"),
        (rejected("g"), StepStatus::Failed, "rejected"),
    ] {
        let after = apply(&s, &event);
        let g = after.step("g");
        assert_eq!((after.status, g.status), (RunStatus::Running, status));
        assert_eq!(
            (g.decided_by.as_deref(), g.ended_ms),
            (Some("alice"), Some(NOW))
        );
        assert_eq!(
            [&g.outputs["by"], &g.outputs["decision"]],
            ["alice", decision]
        );
        assert!(!g.awaiting_approval);
    }
    let no = apply(&s, &rejected("g"));
    assert_eq!(no.step("g").error.as_deref(), Some("rejected by alice"));
}

#[test]
fn the_service_closes_and_reopens_once_each() {
    let s = fold(&[run_started(), Event::ServiceClosed]);
    assert!(s.closed);
    assert_illegal(&s, &Event::ServiceClosed);
    let s = apply(&s, &Event::ServiceReopened);
    assert!(!s.closed);
    assert_illegal(&s, &Event::ServiceReopened);
}

#[test]
fn a_pause_keeps_its_reason_until_the_run_resumes() {
    let s = fold(&[run_started(), paused()]);
    let reason = Some("step `a` failed: boom");
    assert_eq!((s.status, s.reason.as_deref()), (RunStatus::Paused, reason));
    let s = apply(&s, &resumed(Decision::Continue));
    assert_eq!((s.status, s.reason.as_deref()), (RunStatus::Running, None));
}

#[test]
fn resuming_with_retry_sends_failed_and_in_doubt_steps_back_to_pending() {
    let lost = [
        checking("lost", 1),
        started("lost", 1),
        item_started("lost", 0),
        item_started("lost", 1),
        item_succeeded("lost", 1),
    ];
    let bad = [
        checking("bad", 1),
        started("bad", 1),
        failed("bad", 1),
        retry("bad", 2, 50 * SECOND),
        checking("bad", 2),
        started("bad", 2),
        timed_out("bad", 2),
    ];
    let ok = [
        checking("ok", 1),
        started("ok", 1),
        failed("ok", 1),
        ignored("ok"),
    ];
    let journal = and(
        and(and(after(&["done"]), lost), bad),
        and(ok.to_vec(), [paused()]),
    );
    let s = apply(&fold(&journal), &resumed(Decision::Retry));
    assert_eq!(s.status, RunStatus::Running);
    let status = |id: &str| s.step(id).status;
    assert_eq!(
        (status("lost"), status("bad")),
        (StepStatus::Pending, StepStatus::Pending)
    );
    // A tolerated failure and a success stay as they are.
    assert_eq!(
        (status("ok"), status("done")),
        (StepStatus::Failed, StepStatus::Succeeded)
    );
    // Finished items are not run again; the one in doubt is.
    assert_eq!(s.step("lost").items.keys().collect::<Vec<_>>(), [&1]);
    assert_eq!(
        (s.step("bad").attempts, s.step("bad").retry_at_ms),
        (2, None)
    );
}

#[test]
fn resuming_a_paused_run_without_retry_leaves_the_steps_alone() {
    let before = fold(&and(running("a"), [failed("a", 1), paused()]));
    for d in [Decision::Continue, Decision::Skip] {
        let after = apply(&before, &resumed(d));
        assert_eq!(format!("{:?}", after.steps), format!("{:?}", before.steps));
    }
}

#[test]
fn resuming_a_rollback_with_retry_runs_the_undo_in_doubt_again() {
    let s = fold(&and(after(&["a"]), [rollback_started(), undo_started("a")]));
    let s = apply(&s, &resumed(Decision::Retry));
    let expected = (RunStatus::RollingBack, StepStatus::Succeeded);
    assert_eq!((s.status, s.step("a").status), expected);
}

#[test]
fn a_rollback_keeps_its_reason_and_ends_any_wait_for_approval() {
    let s = fold(&and(
        running("g"),
        [approval_requested("g"), rollback_started()],
    ));
    let reason = Some("step `a` failed: boom");
    assert_eq!(
        (s.status, s.reason.as_deref()),
        (RunStatus::RollingBack, reason)
    );
    let g = s.step("g");
    assert!(!g.awaiting_approval && !g.in_doubt());
    assert_eq!(g.status, StepStatus::Failed);
    assert_eq!(
        g.error.as_deref(),
        Some(
            "in doubt when the rollback began: it may have run in part and is not undone while it waited for approval"
        )
    );
}

#[test]
fn an_ended_run_leaves_no_step_running() {
    // Aborted while a step ran, while one waited for approval, and during an undo.
    let running_step = fold(&and(running("a"), [run_aborted()]));
    let a = running_step.step("a");
    assert_eq!(a.status, StepStatus::Failed);
    assert_eq!(a.error.as_deref(), Some("stopped: the run was aborted"));
    assert_eq!(a.ended_ms, Some(4 * SECOND), "when the run was aborted");
    let waiting = fold(&and(running("g"), [approval_requested("g"), run_failed()]));
    assert_eq!(
        waiting.step("g").error.as_deref(),
        Some("stopped: the run failed while it waited for approval")
    );
    let undoing = fold(&and(
        after(&["a"]),
        [rollback_started(), undo_started("a"), run_aborted()],
    ));
    assert_eq!(undoing.step("a").status, StepStatus::RollbackFailed);
}

#[test]
fn undoing_a_step_ends_rolled_back_or_rollback_failed() {
    let s = fold(&and(after(&["a"]), [rollback_started(), undo_started("a")]));
    assert_eq!(s.step("a").status, StepStatus::RollingBack);
    assert_eq!(
        apply(&s, &undone("a")).step("a").status,
        StepStatus::RolledBack
    );
    let s = apply(&s, &undo_failed("a"));
    let a = s.step("a");
    let expected = (StepStatus::RollbackFailed, Some("disk full"));
    assert_eq!((a.status, a.error.as_deref()), expected);
}

#[test]
fn each_end_records_its_status_time_and_reason() {
    let running = fold(&[run_started()]);
    let rolling = fold(&[run_started(), rollback_started()]);
    let ends = [
        (&running, Event::RunCompleted, RunStatus::Completed, None),
        (
            &rolling,
            Event::RunRolledBack { left: vec![] },
            RunStatus::RolledBack,
            Some("step `a` failed: boom"),
        ),
        (
            &rolling,
            run_failed(),
            RunStatus::Failed,
            Some("rollback of step `a` failed"),
        ),
        (
            &running,
            run_aborted(),
            RunStatus::Aborted,
            Some("aborted by ops"),
        ),
    ];
    for (from, event, status, reason) in ends {
        let s = apply(from, &event);
        assert_eq!((s.status, s.ended_ms), (status, Some(NOW)));
        assert_eq!(s.reason.as_deref(), reason);
        assert!(s.status.is_terminal());
    }
}

// Bugs found by these tests, kept so they stay fixed.

#[test]
fn illegal_event_about_an_unknown_step_adds_nothing() {
    assert_illegal(&fold(&[run_started()]), &succeeded("ghost", 1));
}

#[test]
fn a_rollback_cannot_turn_back_into_a_wait_for_approval() {
    let s = fold(&and(running("g"), [rollback_started()]));
    assert_illegal(&s, &approval_requested("g"));
}

#[test]
fn retrying_an_undo_keeps_the_failure_that_caused_the_rollback() {
    let s = fold(&and(running("a"), [failed("a", 1), rollback_started()]));
    let s = apply(&s, &resumed(Decision::Retry));
    assert_eq!(s.step("a").status, StepStatus::Failed);
}

// ---------------------------------------------------------------------------------------
// decide
// ---------------------------------------------------------------------------------------

fn runbook(yaml: &str) -> Runbook {
    load_bytes("test.yaml", yaml.as_bytes()).unwrap_or_else(|e| panic!("{}", e.render()))
}

fn ix(rb: &Runbook, id: &str) -> usize {
    rb.steps
        .iter()
        .position(|s| s.id == id)
        .expect("a step of the runbook")
}

/// What `decide` says right after `journal` (at the time of its last event).
fn next(rb: &Runbook, journal: &[Event]) -> Next {
    next_at(rb, journal, last_at(journal))
}

/// What `decide` says after `journal`, at `now_ms`.
fn next_at(rb: &Runbook, journal: &[Event], now_ms: i64) -> Next {
    next_learned(rb, journal, now_ms, &Learned::default())
}

/// What `decide` says after `journal`, at `now_ms`, knowing what earlier runs took.
fn next_learned(rb: &Runbook, journal: &[Event], now_ms: i64, learned: &Learned) -> Next {
    let facts = Facts {
        now_ms,
        learned,
        run_id: "r1",
    };
    decide(rb, &fold(journal), &facts)
}

fn start(rb: &Runbook, id: &str, attempt: u32) -> Next {
    let step = ix(rb, id);
    Next::Start { step, attempt }
}

/// The time of the last event of `journal`, as `fold` records it.
fn last_at(journal: &[Event]) -> i64 {
    journal.len() as i64 * SECOND
}

/// `prep` comes before the checkpoint, so a rollback never undoes it; `b` has no undo;
/// `flaky` is tried three times, 1s then 2s apart.
const ROLLBACK: &str = r#"
runbook: unit
steps:
  - { id: prep, kind: patch, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: snapshot, kind: patch, checkpoint: true, run: { shell: "true" } }
  - { id: close, kind: close }
  - { id: a, kind: patch, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: b, kind: patch, run: { shell: "true" } }
  - { id: c, kind: patch, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: d, kind: patch, run: { shell: "true" }, rollback: { shell: "true" } }
  - id: flaky
    kind: patch
    retries: { max: 2, backoff: 1s }
    run: { shell: "true" }
  - { id: reopen, kind: reopen }
"#;

/// Every step up to `d` done, `d` started, and the service closed by `close`.
fn d_running() -> Vec<Event> {
    let mut journal = after(&["prep", "snapshot"]);
    journal.extend(closing("close"));
    journal.extend(ran(&["a", "b", "c"]));
    and(journal, [checking("d", 1), started("d", 1)])
}

/// A `close` step: the service closes while it runs.
fn closing(id: &str) -> [Event; 4] {
    [
        checking(id, 1),
        started(id, 1),
        Event::ServiceClosed,
        succeeded(id, 1),
    ]
}

#[test]
fn decide_waits_for_the_run_to_start() {
    let reason = "the run has not started".into();
    assert_eq!(
        next(&runbook(ROLLBACK), &[]),
        Next::Pause {
            reason,
            guard: None
        }
    );
}

#[test]
fn decide_starts_each_step_in_order_then_completes() {
    let rb = runbook(ROLLBACK);
    assert_eq!(next(&rb, &[run_started()]), start(&rb, "prep", 1));
    let mut journal = and(d_running(), [succeeded("d", 1)]);
    assert_eq!(next(&rb, &journal), start(&rb, "flaky", 1));
    journal.extend(ran(&["flaky"]));
    assert_eq!(next(&rb, &journal), start(&rb, "reopen", 1));
    let reopen = [
        checking("reopen", 1),
        started("reopen", 1),
        Event::ServiceReopened,
    ];
    journal.extend(and(reopen.to_vec(), [succeeded("reopen", 1)]));
    assert_eq!(next(&rb, &journal), Next::Finish(Outcome::Completed));
    journal.push(Event::RunCompleted);
    assert_eq!(next(&rb, &journal), Next::Done(RunStatus::Completed));
}

#[test]
fn decide_retries_with_doubling_backoff_then_rolls_back() {
    let rb = runbook(ROLLBACK);
    let flaky = ix(&rb, "flaky");
    let mut journal = and(d_running(), [succeeded("d", 1)]);
    journal.extend([
        checking("flaky", 1),
        started("flaky", 1),
        failed("flaky", 1),
    ]);
    let at_ms = last_at(&journal) + SECOND;
    assert_eq!(
        next(&rb, &journal),
        Next::Retry {
            step: flaky,
            next_attempt: 2,
            at_ms
        }
    );
    journal.push(retry("flaky", 2, at_ms));
    // Not before the backoff has passed: wait until then.
    assert_eq!(
        next_at(&rb, &journal, at_ms - SECOND),
        Next::Sleep { until_ms: at_ms }
    );
    assert_eq!(
        next_at(&rb, &journal, at_ms - 1),
        Next::Sleep { until_ms: at_ms }
    );
    assert_eq!(next_at(&rb, &journal, at_ms), start(&rb, "flaky", 2));

    // A timeout is retried like a failure, after twice the wait.
    journal.extend([
        checking("flaky", 2),
        started("flaky", 2),
        timed_out("flaky", 2),
    ]);
    let at_ms = last_at(&journal) + 2 * SECOND;
    assert_eq!(
        next(&rb, &journal),
        Next::Retry {
            step: flaky,
            next_attempt: 3,
            at_ms
        }
    );

    journal.extend([retry("flaky", 3, at_ms), checking("flaky", 3)]);
    journal.push(precondition_failed("flaky", 3));
    let reason = "step `flaky` failed: the backup was not verified".into();
    assert_eq!(next(&rb, &journal), Next::StartRollback { reason });
}

#[test]
fn backoff_doubles_from_the_second_attempt() {
    let second = Duration::from_secs(1);
    let delays: Vec<u64> = (0..=5)
        .map(|n| backoff_delay(second, n).as_secs())
        .collect();
    assert_eq!(delays, [1, 1, 1, 2, 4, 8]);
    assert_eq!(backoff_delay(Duration::ZERO, 9), Duration::ZERO);
}

#[test]
fn backoff_stops_doubling_after_sixteen_doublings_and_never_overflows() {
    let second = Duration::from_secs(1);
    assert_eq!(backoff_delay(second, 18), Duration::from_secs(1 << 16));
    assert_eq!(
        backoff_delay(second, u32::MAX),
        Duration::from_secs(1 << 16)
    );
    assert_eq!(backoff_delay(Duration::MAX, 3), Duration::MAX);
}

#[test]
fn decide_rolls_back_most_recent_first_to_the_checkpoint_then_reopens() {
    let rb = runbook(ROLLBACK);
    let undo = |id| Next::RollbackStep { step: ix(&rb, id) };
    // `d` failed: there is nothing of it to undo.
    let mut journal = and(d_running(), [failed("d", 1)]);
    let reason = "step `d` failed: boom".to_owned();
    assert_eq!(
        next(&rb, &journal),
        Next::StartRollback {
            reason: reason.clone()
        }
    );

    journal.push(Event::RollbackStarted { reason });
    assert_eq!(next(&rb, &journal), undo("c"));
    journal.push(undo_started("c"));
    // Interrupted before its outcome: in doubt, like a step (`c` is not idempotent).
    let c = ix(&rb, "c");
    assert_eq!(
        next(&rb, &journal),
        Next::InDoubt {
            step: c,
            rerun: false
        }
    );
    journal.push(undone("c"));
    assert_eq!(next(&rb, &journal), undo("a"));
    journal.extend([undo_started("a"), undone("a")]);
    // `prep` is before the checkpoint and stays done.
    assert_eq!(next(&rb, &journal), Next::Reopen);
    journal.push(Event::ServiceReopened);
    // `b` changed something and has no rollback: the run says it is left as it was.
    let left = vec!["b".to_owned()];
    assert_eq!(
        next(&rb, &journal),
        Next::Finish(Outcome::RolledBack { left: left.clone() })
    );
    journal.push(Event::RunRolledBack { left });
    assert_eq!(next(&rb, &journal), Next::Done(RunStatus::RolledBack));
}

#[test]
fn decide_ends_the_run_failed_when_an_undo_fails() {
    let rb = runbook(ROLLBACK);
    let undo = [rollback_started(), undo_started("c"), undo_failed("c")];
    let journal = and(d_running(), and(vec![failed("d", 1)], undo));
    let reason = "rollback of step `c` failed: disk full".into();
    assert_eq!(next(&rb, &journal), Next::Finish(Outcome::Failed(reason)));
    assert_eq!(
        next(&rb, &and(journal, [run_failed()])),
        Next::Done(RunStatus::Failed)
    );
}

/// Two checkpoints; `last` has no undo of its own.
const CHECKPOINTS: &str = r#"
runbook: unit
steps:
  - { id: x, kind: patch, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: cp1, kind: patch, checkpoint: true, run: { shell: "true" } }
  - { id: y, kind: patch, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: cp2, kind: patch, checkpoint: true, run: { shell: "true" } }
  - { id: z, kind: patch, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: last, kind: patch, run: { shell: "true" } }
"#;

/// The rollback after `done` succeeded and `failing` failed.
fn rolling_back(done: &[&str], failing: &str) -> Vec<Event> {
    let fail = [
        checking(failing, 1),
        started(failing, 1),
        failed(failing, 1),
    ];
    and(after(done), and(fail.to_vec(), [rollback_started()]))
}

#[test]
fn decide_rolls_back_only_to_the_most_recent_checkpoint_that_succeeded() {
    let rb = runbook(CHECKPOINTS);
    let undo = |id| Next::RollbackStep { step: ix(&rb, id) };
    let all = ["x", "cp1", "y", "cp2", "z"];
    assert_eq!(next(&rb, &rolling_back(&all, "last")), undo("z"));
    let undone_z = and(rolling_back(&all, "last"), [undo_started("z"), undone("z")]);
    // The service was never closed: nothing to reopen.
    assert_eq!(
        next(&rb, &undone_z),
        Next::Finish(Outcome::RolledBack { left: vec![] })
    );
    // A checkpoint that failed does not count.
    assert_eq!(next(&rb, &rolling_back(&all[..3], "cp2")), undo("y"));
    // With no checkpoint done, everything is undone.
    assert_eq!(next(&rb, &rolling_back(&all[..1], "cp1")), undo("x"));
}

const RESTORE: &str = r#"
runbook: unit
steps:
  - id: snapshot
    kind: patch
    checkpoint: true
    run: { shell: "true" }
    restore: { shell: "true" }
  - { id: a, kind: patch, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: close, kind: close }
  - { id: bad, kind: patch, run: { shell: "false" } }
"#;

#[test]
fn decide_undoes_what_a_restore_does_not_bring_back_then_restores() {
    let rb = runbook(RESTORE);
    let restore = Next::Restore {
        step: ix(&rb, "snapshot"),
    };
    let mut journal = and(after(&["snapshot", "a"]), closing("close"));
    journal.extend([checking("bad", 1), started("bad", 1), failed("bad", 1)]);
    journal.push(rollback_started());
    // A shell restore restores no database we know of: `a` is undone by its rollback.
    assert_eq!(
        next(&rb, &journal),
        Next::RollbackStep { step: ix(&rb, "a") }
    );
    journal.extend([undo_started("a"), undone("a")]);
    assert_eq!(next(&rb, &journal), restore);
    journal.push(undo_started("snapshot"));
    let in_doubt = Next::InDoubt {
        step: ix(&rb, "snapshot"),
        rerun: false,
    };
    assert_eq!(next(&rb, &journal), in_doubt);
    journal.push(undone("snapshot"));
    assert_eq!(next(&rb, &journal), Next::Reopen);
    journal.push(Event::ServiceReopened);
    assert_eq!(
        next(&rb, &journal),
        Next::Finish(Outcome::RolledBack { left: vec![] })
    );
}

/// A restore of the database `a` and `m` migrate, and an app step beside them.
const RESTORE_DB: &str = r#"
runbook: unit
vars: { db: "sqlite://app.db" }
steps:
  - id: snapshot
    kind: backup
    checkpoint: true
    with: { database: "{{vars.db}}" }
    restore: { kind: restore, with: { database: "{{vars.db}}", from: "{{steps.snapshot.outputs.path}}" } }
  - { id: m, kind: migrate, with: { database: "sqlite://app.db", dir: m }, rollback: { shell: "true" } }
  - { id: app, kind: install, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: other, kind: patch, run: { sql: "update t set x = 1", database: "sqlite://other.db" } }
  - { id: bad, kind: patch, run: { shell: "false" } }
"#;

#[test]
fn decide_restores_the_database_and_still_undoes_every_other_step() {
    let rb = runbook(RESTORE_DB);
    let mut journal = after(&["snapshot", "m", "app", "other"]);
    journal.extend([checking("bad", 1), started("bad", 1), failed("bad", 1)]);
    journal.push(rollback_started());
    // The app step is undone; `m` is left to the restore; `other` cannot be undone.
    assert_eq!(
        next(&rb, &journal),
        Next::RollbackStep {
            step: ix(&rb, "app")
        }
    );
    journal.extend([undo_started("app"), undone("app")]);
    assert_eq!(
        next(&rb, &journal),
        Next::Restore {
            step: ix(&rb, "snapshot")
        }
    );
    journal.extend([
        undo_started("snapshot"),
        undone("snapshot"),
        Event::StepRolledBack {
            step: "m".into(),
            by_restore: Some("snapshot".into()),
        },
    ]);
    assert_eq!(
        next(&rb, &journal),
        Next::Finish(Outcome::RolledBack {
            left: vec!["other".into()]
        })
    );
}

fn policy(on_failure: &str) -> Runbook {
    runbook(&format!(
        r#"
runbook: unit
steps:
  - {{ id: x, kind: patch, on_failure: {on_failure}, run: {{ shell: "false" }} }}
  - {{ id: after, kind: patch, run: {{ shell: "true" }} }}
"#
    ))
}

#[test]
fn decide_follows_each_failure_policy() {
    let x_failed = and(running("x"), [failed("x", 1)]);
    let reason = || "step `x` failed: boom".to_owned();
    let cases = [
        ("rollback", Next::StartRollback { reason: reason() }),
        (
            "pause",
            Next::Pause {
                reason: reason(),
                guard: None,
            },
        ),
        ("abort", Next::Finish(Outcome::Aborted(reason()))),
        ("continue", Next::IgnoreFailure { step: 0 }),
    ];
    for (on_failure, expected) in cases {
        assert_eq!(
            next(&policy(on_failure), &x_failed),
            expected,
            "{on_failure}"
        );
    }
    let rb = policy("continue");
    let ignored = and(x_failed, [ignored("x")]);
    assert_eq!(next(&rb, &ignored), start(&rb, "after", 1));
}

#[test]
fn decide_waits_while_paused_and_resumes_after() {
    let rb = policy("pause");
    let journal = and(running("x"), [failed("x", 1), paused()]);
    assert_eq!(next(&rb, &journal), Next::Wait);
    let journal = and(journal, [resumed(Decision::Retry)]);
    assert_eq!(next(&rb, &journal), start(&rb, "x", 2));
}

#[test]
fn decide_reports_every_ended_run_as_done() {
    let rb = policy("abort");
    let ends = [
        (vec![Event::RunCompleted], RunStatus::Completed),
        (
            vec![rollback_started(), Event::RunRolledBack { left: vec![] }],
            RunStatus::RolledBack,
        ),
        (vec![run_failed()], RunStatus::Failed),
        (vec![run_aborted()], RunStatus::Aborted),
    ];
    for (end, status) in ends {
        assert_eq!(
            next(&rb, &and(vec![run_started()], end)),
            Next::Done(status)
        );
    }
}

const REQUIRES: &str = r#"
runbook: unit
steps:
  - { id: optional, kind: patch, on_failure: continue, run: { shell: "true" } }
  - { id: dependent, kind: patch, requires: [optional], run: { shell: "true" } }
  - { id: independent, kind: patch, run: { shell: "true" } }
"#;

#[test]
fn decide_skips_a_step_whose_required_step_did_not_succeed() {
    let rb = runbook(REQUIRES);
    let step = ix(&rb, "dependent");
    let cases = [
        (and(running("optional"), [failed("optional", 1)]), "failed"),
        (
            and(running("optional"), [timed_out("optional", 1)]),
            "timed out",
        ),
    ];
    for (journal, how) in cases {
        let reason = format!("required step `optional` {how}");
        let journal = and(journal, [ignored("optional")]);
        assert_eq!(next(&rb, &journal), Next::Skip { step, reason });
    }
    let journal = vec![run_started(), skipped("optional")];
    let reason = "required step `optional` skipped".into();
    assert_eq!(next(&rb, &journal), Next::Skip { step, reason });
    let journal = and(journal, [skipped("dependent")]);
    assert_eq!(next(&rb, &journal), start(&rb, "independent", 1));
    assert_eq!(next(&rb, &after(&["optional"])), start(&rb, "dependent", 1));
}

#[test]
fn decide_waits_for_approval_and_never_retries_a_rejection() {
    let rb = runbook(
        "runbook: unit\nsteps:\n  - { id: gate, kind: approve, retries: 3 }\n  \
         - { id: after, kind: patch, run: { shell: \"true\" } }\n",
    );
    let journal = and(running("gate"), [approval_requested("gate")]);
    assert_eq!(
        next(&rb, &journal),
        Next::AwaitApproval {
            step: 0,
            until_ms: None
        }
    );
    let yes = and(journal.clone(), [approved("gate")]);
    assert_eq!(next(&rb, &yes), start(&rb, "after", 1));
    let reason = "step `gate` failed: rejected by alice".into();
    let no = and(journal, [rejected("gate")]);
    assert_eq!(next(&rb, &no), Next::StartRollback { reason });
}

const IN_DOUBT: &str = r#"
runbook: unit
steps:
  - { id: risky, kind: patch, run: { shell: "true" } }
  - { id: safe, kind: patch, idempotent: true, run: { shell: "true" } }
  - { id: fan, kind: patch, for_each: [t1, t2], run: { shell: "echo {{item}}" } }
  - { id: smoke, kind: test, checks: [{ shell: "true" }] }
"#;

#[test]
fn decide_reruns_a_step_in_doubt_only_when_that_is_safe() {
    let rb = runbook(IN_DOUBT);
    let in_doubt = |before: &[&str], events: &[Event], id, rerun| {
        let journal = and(after(before), events.to_vec());
        let expected = Next::InDoubt {
            step: ix(&rb, id),
            rerun,
        };
        assert_eq!(next(&rb, &journal), expected, "{id} after {events:?}");
    };
    in_doubt(
        &[],
        &[checking("risky", 1), started("risky", 1)],
        "risky",
        false,
    );
    // Checking preconditions changes nothing.
    in_doubt(&[], &[checking("risky", 1)], "risky", true);
    in_doubt(
        &["risky"],
        &[checking("safe", 1), started("safe", 1)],
        "safe",
        true,
    );
    // A fan-out is safe to rerun once every item it started has an outcome.
    let fan = [
        checking("fan", 1),
        started("fan", 1),
        item_started("fan", 0),
    ];
    let fan = and(
        fan.to_vec(),
        [item_started("fan", 1), item_succeeded("fan", 0)],
    );
    in_doubt(&["risky", "safe"], &fan, "fan", false);
    in_doubt(
        &["risky", "safe"],
        &and(fan, [item_failed("fan", 1)]),
        "fan",
        true,
    );
    // A test step in doubt while the run shows as verifying.
    let smoke = [checking("smoke", 1), verifying("smoke", 1)];
    in_doubt(&["risky", "safe", "fan"], &smoke, "smoke", false);

    let resolved = and(running("risky"), [resumed(Decision::Retry)]);
    assert_eq!(next(&rb, &resolved), start(&rb, "risky", 2));
}

#[test]
fn decide_retries_even_with_the_largest_retry_count() {
    let rb = runbook(
        "runbook: unit\nsteps:\n  \
         - { id: x, kind: patch, retries: 4294967295, run: { shell: \"false\" } }\n",
    );
    let journal = and(running("x"), [failed("x", 1)]);
    let decision = next(&rb, &journal);
    assert!(
        matches!(
            decision,
            Next::Retry {
                next_attempt: 2,
                ..
            }
        ),
        "{decision:?}"
    );
}

// ---------------------------------------------------------------------------------------
// decide: policy that depends on the time
// ---------------------------------------------------------------------------------------

/// A window from the epoch (the journals here start there) that lasts 10 s; `change`
/// took a second and has an undo.
const GUARDED: &str = r#"
runbook: unit
window: { start: "1970-01-01T00:00:00Z", duration: 10s }
steps:
  - { id: change, kind: patch, expected: 1s, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: long, kind: patch, expected: 20s, run: { shell: "true" } }
"#;

fn guard_paused(step: &str) -> Event {
    Event::RunPaused {
        reason: "window guard".into(),
        guard: Some(step.into()),
    }
}

#[test]
fn decide_pauses_before_a_step_the_window_cannot_hold() {
    let rb = runbook(GUARDED);
    let journal = after(&["change"]);
    let Next::Pause { reason, guard } = next(&rb, &journal) else {
        panic!("{:?}", next(&rb, &journal));
    };
    assert_eq!(guard.as_deref(), Some("long"));
    assert!(
        reason.starts_with("window guard: step `long` ("),
        "{reason}"
    );
    assert!(
        reason.ends_with(
            ": `runbook resume r1` to start it anyway, `runbook resume r1 --rollback` to roll back now"
        ),
        "{reason}"
    );
    // A person let it go on: the guard does not stop the same step again.
    let resumed = and(journal, [guard_paused("long"), resumed(Decision::Continue)]);
    assert_eq!(next(&rb, &resumed), start(&rb, "long", 1));
}

#[test]
fn decide_rolls_back_instead_under_guard_strict() {
    let rb = runbook(GUARDED);
    let mut journal = after(&["change"]);
    let Event::RunStarted { guard, .. } = &mut journal[0] else {
        unreachable!()
    };
    *guard = Some("strict".into());
    let Next::StartRollback { reason } = next(&rb, &journal) else {
        panic!("{:?}", next(&rb, &journal));
    };
    assert!(reason.starts_with("window guard: step `long`"), "{reason}");
    assert!(reason.ends_with(" (--guard strict)"), "{reason}");
}

#[test]
fn decide_guards_by_the_time_it_is_told() {
    let rb = runbook(
        "runbook: unit\nwindow: { start: \"1970-01-01T00:00:00Z\", duration: 10s }\nsteps:\n  \
         - { id: change, kind: patch, expected: 1s, run: { shell: \"true\" }, rollback: { shell: \"true\" } }\n  \
         - { id: short, kind: patch, expected: 1s, run: { shell: \"true\" } }\n  \
         - { id: reopen, kind: reopen }\n",
    );
    let journal = after(&["change"]);
    // 4 s + 1 s + 1 s of undo fits in 10 s; at 9 s it does not.
    assert_eq!(next_at(&rb, &journal, 4 * SECOND), start(&rb, "short", 1));
    assert!(matches!(
        next_at(&rb, &journal, 9 * SECOND),
        Next::Pause { guard: Some(g), .. } if g == "short"
    ));
    // A retry is not guarded (the step already began), and `reopen` never is.
    let failed_once = [
        checking("short", 1),
        started("short", 1),
        failed("short", 1),
        retry("short", 2, 0),
    ];
    let retried = and(journal.clone(), failed_once);
    assert_eq!(next_at(&rb, &retried, 99 * SECOND), start(&rb, "short", 2));
    let done = and(journal, ran(&["short"]));
    assert_eq!(next_at(&rb, &done, 99 * SECOND), start(&rb, "reopen", 1));
}

#[test]
fn decide_times_an_approval_out_by_its_on_timeout() {
    for (on_timeout, expected) in [
        ("reject", OnTimeout::Reject),
        ("approve", OnTimeout::Approve),
    ] {
        let rb = runbook(&format!(
            "runbook: unit\nsteps:\n  - {{ id: gate, kind: approve, timeout: 1m, on_timeout: {on_timeout} }}\n"
        ));
        let journal = and(running("gate"), [approval_requested("gate")]);
        let asked = fold(&journal).step("gate").started_ms.expect("started");
        let until_ms = Some(asked + 60 * SECOND);
        let waiting = Next::AwaitApproval { step: 0, until_ms };
        assert_eq!(next(&rb, &journal), waiting);
        assert_eq!(next_at(&rb, &journal, asked + 60 * SECOND - 1), waiting);
        assert_eq!(
            next_at(&rb, &journal, asked + 60 * SECOND),
            Next::ApprovalTimedOut {
                step: 0,
                on_timeout: expected
            }
        );
        // Approved in time: the run goes on, whatever the time.
        let yes = and(journal, [approved("gate")]);
        assert_eq!(
            next_at(&rb, &yes, i64::MAX),
            Next::Finish(Outcome::Completed)
        );
    }
}

#[test]
fn max_failures_says_how_many_items_may_fail() {
    let rb = runbook(
        "runbook: unit\nsteps:\n  \
         - { id: none, kind: patch, for_each: [a, b], run: { shell: \"true\" } }\n  \
         - { id: one, kind: patch, for_each: [a, b], max_failures: 1, run: { shell: \"true\" } }\n  \
         - { id: half, kind: patch, for_each: [a, b], max_failures: 50%, run: { shell: \"true\" } }\n",
    );
    let step = |id| &rb.steps[ix(&rb, id)];
    assert_eq!(decide::failures_allowed(step("none"), 10), 0);
    assert_eq!(decide::failures_allowed(step("one"), 10), 1);
    assert_eq!(decide::failures_allowed(step("half"), 5), 2);
    assert!(decide::fan_out_may_go_on(step("one"), 10, 1));
    assert!(!decide::fan_out_may_go_on(step("one"), 10, 2));
    assert_eq!(decide::fan_out_failure(step("one"), 10, 1), None);
    assert_eq!(
        decide::fan_out_failure(step("half"), 5, 3).as_deref(),
        Some("3 of 5 items failed (at most 2 may)")
    );
    assert!(!decide::fan_out_may_go_on(step("none"), 3, 1));
}

#[test]
fn an_overrun_is_due_after_the_margin_then_every_interval() {
    let rb = runbook(
        "runbook: unit\nstatus_page: { overrun: { after: 2s, every: 5s } }\nsteps:\n  \
         - { id: slow, kind: patch, expected: 10s, run: { shell: \"true\" } }\n  \
         - { id: vague, kind: patch, run: { shell: \"true\" } }\n",
    );
    let state = fold(&running("slow"));
    let started = state.step("slow").started_ms.expect("started");
    let learned = Learned::default();
    let due = |id, last| {
        let step = &rb.steps[ix(&rb, id)];
        decide::overrun_due(&rb, &state, step, None, &learned, last, 0)
    };
    // 10 s expected + 2 s margin; then every 5 s after the last update.
    assert_eq!(due("slow", None), Some(started + 12 * SECOND));
    assert_eq!(
        due("slow", Some(started + 12 * SECOND)),
        Some(started + 17 * SECOND)
    );
    // A step that does not say how long it takes is never late.
    assert_eq!(due("vague", None), None);
}

/// The resume decision matrix, with this file's journals.
#[path = "resume_tests.rs"]
mod resume;
