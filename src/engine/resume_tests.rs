//! Unit tests of the resume decision matrix ([`crate::engine::decide::resume`]): every
//! decision (none, `--retry`, `--skip`, `--rollback`) in every situation a resume meets
//! (a step in doubt, safe to repeat or not; a failed step the run paused on; a pause
//! about no step; a run going on; an undo in doubt while rolling back). Pure: journals
//! folded as in the rest of `fold_tests`, and what the matrix records is checked to be
//! legal in the state it is recorded in.

use super::*;
use crate::engine::decide::{Refusal, resume};

/// `a` pauses the run when it fails; `safe` is idempotent; both can be undone.
const RESUME: &str = r#"
runbook: unit
steps:
  - { id: a, kind: patch, on_failure: pause, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: safe, kind: patch, idempotent: true, run: { shell: "true" }, rollback: { shell: "true" } }
  - { id: b, kind: patch, run: { shell: "true" } }
"#;

/// The time and run `resume` decides in (run `r-1`; these runbooks have no window).
fn facts() -> crate::engine::decide::Facts<'static> {
    static LEARNED: std::sync::OnceLock<Learned> = std::sync::OnceLock::new();
    crate::engine::decide::Facts {
        now_ms: 0,
        learned: LEARNED.get_or_init(Learned::default),
        run_id: "r-1",
    }
}

/// What `resume` answers to `decision` after `journal`; the events it gives are legal,
/// one after the other, in the state they are recorded in.
fn resumed_after(journal: &[Event], decision: Option<Decision>) -> Result<Vec<Event>, Refusal> {
    let state = fold(journal);
    let answer = resume(&runbook(RESUME), &state, decision, &facts(), "ops");
    if let Ok(events) = &answer {
        let mut s = state.clone();
        for e in events {
            s = apply(&s, e);
        }
    }
    answer
}

fn needs_a_person(answer: Result<Vec<Event>, Refusal>, says: &str) {
    match answer {
        Err(Refusal::NeedsAPerson(why)) => assert!(why.contains(says), "{why}"),
        other => panic!("expected a refusal saying {says:?}, got {other:?}"),
    }
}

/// `a` failed and the run paused on it.
fn a_failed_and_paused() -> Vec<Event> {
    and(running("a"), [failed("a", 1), paused()])
}

/// A pause about no step (the window guard's).
fn guard_paused() -> Vec<Event> {
    let pause = Event::RunPaused {
        reason: "window guard: the rest would not fit in the window".into(),
        guard: None,
    };
    and(after(&["a"]), [pause])
}

/// Rolling back after `b` failed; the undo of `a` started and has no outcome.
fn undo_of_a_in_doubt() -> Vec<Event> {
    let journal = and(after(&["a", "safe"]), [checking("b", 1), started("b", 1)]);
    and(
        journal,
        [
            failed("b", 1),
            rollback_started(),
            undo_started("safe"),
            undone("safe"),
            undo_started("a"),
        ],
    )
}

#[test]
fn a_step_in_doubt_that_is_safe_to_repeat_runs_again_by_itself() {
    let journal = and(after(&["a"]), [checking("safe", 1), started("safe", 1)]);
    assert_eq!(resumed_after(&journal, None), Ok(vec![]));
}

#[test]
fn a_step_in_doubt_that_is_not_safe_to_repeat_needs_a_decision() {
    needs_a_person(
        resumed_after(&running("a"), None),
        "step `a` started before the runner stopped and may or may not have finished; choose `runbook resume r-1 --retry`, `--skip` or `--rollback`",
    );
    let retry = resumed_after(&running("a"), Some(Decision::Retry));
    assert_eq!(retry, Ok(vec![resumed(Decision::Retry)]));
    let skip = resumed_after(&running("a"), Some(Decision::Skip));
    assert_eq!(skip, Ok(vec![resumed(Decision::Skip), skipped("a")]));
    let rollback = resumed_after(&running("a"), Some(Decision::Rollback));
    let reason = "rollback chosen by ops".into();
    assert_eq!(rollback, Ok(vec![Event::RollbackStarted { reason }]));
}

#[test]
fn a_failed_step_the_run_paused_on_needs_a_decision() {
    let journal = a_failed_and_paused();
    needs_a_person(
        resumed_after(&journal, None),
        "step `a` failed and the run paused; choose `runbook resume r-1 --retry`",
    );
    let retry = resumed_after(&journal, Some(Decision::Retry));
    assert_eq!(retry, Ok(vec![resumed(Decision::Retry)]));
    let skip = resumed_after(&journal, Some(Decision::Skip));
    assert_eq!(skip, Ok(vec![resumed(Decision::Skip), skipped("a")]));
    let rollback = resumed_after(&journal, Some(Decision::Rollback));
    let reason = "rollback chosen by ops".into();
    assert_eq!(rollback, Ok(vec![Event::RollbackStarted { reason }]));
}

#[test]
fn a_pause_about_no_step_goes_on_or_rolls_back_and_has_nothing_to_skip() {
    let journal = guard_paused();
    let go_on = resumed_after(&journal, None);
    assert_eq!(go_on, Ok(vec![resumed(Decision::Continue)]));
    // `--retry` of a pause is its end, like going on.
    let retry = resumed_after(&journal, Some(Decision::Retry));
    assert_eq!(retry, Ok(vec![resumed(Decision::Retry)]));
    let reason = "rollback chosen by ops".into();
    let rollback = resumed_after(&journal, Some(Decision::Rollback));
    assert_eq!(rollback, Ok(vec![Event::RollbackStarted { reason }]));
    let skip = resumed_after(&journal, Some(Decision::Skip));
    let why = "there is no failed or in-doubt step to skip".to_owned();
    assert_eq!(skip, Err(Refusal::Invalid(why)));
}

#[test]
fn a_run_that_simply_goes_on_records_nothing_but_a_chosen_rollback() {
    let journal = after(&["a"]);
    assert_eq!(resumed_after(&journal, None), Ok(vec![]));
    assert_eq!(resumed_after(&journal, Some(Decision::Retry)), Ok(vec![]));
    let skip = resumed_after(&journal, Some(Decision::Skip));
    assert!(matches!(skip, Err(Refusal::Invalid(_))), "{skip:?}");
    let reason = "rollback chosen by ops".into();
    let rollback = resumed_after(&journal, Some(Decision::Rollback));
    assert_eq!(rollback, Ok(vec![Event::RollbackStarted { reason }]));
}

#[test]
fn an_undo_in_doubt_can_only_be_retried() {
    let journal = undo_of_a_in_doubt();
    let retry = resumed_after(&journal, Some(Decision::Retry));
    assert_eq!(retry, Ok(vec![resumed(Decision::Retry)]));
    let refused = "the run is rolling back and the undo of step `a` started before the runner stopped: it may or may not have finished. `runbook resume r-1 --retry` runs it again; `runbook abort r-1` ends the run";
    for decision in [None, Some(Decision::Skip), Some(Decision::Rollback)] {
        needs_a_person(resumed_after(&journal, decision), refused);
    }
}

#[test]
fn an_undo_in_doubt_that_is_safe_to_repeat_runs_again_by_itself() {
    let journal = and(after(&["a", "safe"]), [checking("b", 1), started("b", 1)]);
    let journal = and(
        journal,
        [failed("b", 1), rollback_started(), undo_started("safe")],
    );
    assert_eq!(resumed_after(&journal, None), Ok(vec![]));
}

#[test]
fn a_rollback_under_way_is_not_started_again() {
    let journal = and(
        after(&["a", "safe"]),
        [checking("b", 1), started("b", 1), failed("b", 1)],
    );
    let journal = and(journal, [rollback_started()]);
    assert_eq!(
        resumed_after(&journal, Some(Decision::Rollback)),
        Ok(vec![])
    );
    assert_eq!(resumed_after(&journal, None), Ok(vec![]));
}

#[test]
fn the_person_who_decided_is_recorded() {
    let state = fold(&a_failed_and_paused());
    let skip = resume(
        &runbook(RESUME),
        &state,
        Some(Decision::Skip),
        &facts(),
        "sam",
    );
    let by = "sam".to_owned();
    let expected = vec![
        Event::RunResumed {
            decision: Decision::Skip,
            by,
            reason: None,
            only: Vec::new(),
        },
        Event::StepSkipped {
            step: "a".into(),
            reason: "skipped by sam".into(),
        },
    ];
    assert_eq!(skip, Ok(expected));
}
