//! Tests of the history fold: what it keeps of a journal, and that it never refuses one
//! while `replay` proves it legal.

use serde_json::json;

use super::*;

fn journal(events: serde_json::Value) -> Vec<Recorded> {
    let events: Vec<Event> = serde_json::from_value(events).expect("events");
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Recorded {
            seq: i as i64 + 1,
            at_ms: (i as i64 + 1) * 1000,
            event,
        })
        .collect()
}

fn started() -> serde_json::Value {
    json!({ "type": "run_started", "runbook": "rb", "title": "T", "file": "rb.yaml",
        "file_sha256": "00", "vars": {}, "operator": "op", "host": "h", "pid": 1 })
}

#[test]
fn each_step_keeps_its_errors_outcome_and_items_over_its_attempts() {
    let events = journal(json!([
        started(),
        { "type": "step_checking", "step": "a", "attempt": 1 },
        { "type": "step_started", "step": "a", "attempt": 1 },
        { "type": "item_started", "step": "a", "index": 0 },
        { "type": "item_succeeded", "step": "a", "index": 0 },
        { "type": "item_started", "step": "a", "index": 1 },
        { "type": "item_failed", "step": "a", "index": 1, "error": "tenant 1 is locked" },
        { "type": "step_failed", "step": "a", "attempt": 1, "error": "1 item failed" },
        { "type": "retry_scheduled", "step": "a", "next_attempt": 2, "at_ms": 9000 },
        { "type": "step_checking", "step": "a", "attempt": 2 },
        { "type": "step_started", "step": "a", "attempt": 2 },
        { "type": "item_started", "step": "a", "index": 2 },
        { "type": "item_succeeded", "step": "a", "index": 2 },
    ]));
    let (state, mut history) = replay(&events).expect("a legal journal");
    assert_eq!(state.step("a").attempts, 2);
    assert_eq!(history.current.as_deref(), Some("a"), "under way");
    let a = history.step("a");
    let kinds: Vec<Failure> = a.errors.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [Failure::ItemFailed, Failure::Failed]);
    assert_eq!(a.errors[0].item, Some(1));
    assert_eq!(a.errors[1].attempt, Some(1));
    assert_eq!((a.items_ended, a.items_failed), (3, 1));
    assert_eq!((a.attempt_items_ended, a.attempt_items_failed), (1, 0));
    assert_eq!(a.outcome_ms, Some(8000));

    let done = journal(json!([{ "type": "step_succeeded", "step": "a", "attempt": 2 }]));
    assert_eq!(history.apply(&done[0]), Change::Other);
    assert_eq!(history.current, None);
    assert_eq!(history.step("a").outcome_ms, Some(1000));
}

#[test]
fn a_rollback_lists_its_steps_in_order_with_each_steps_undo() {
    let events = journal(json!([
        started(),
        { "type": "step_checking", "step": "a", "attempt": 1 },
        { "type": "step_started", "step": "a", "attempt": 1 },
        { "type": "step_succeeded", "step": "a", "attempt": 1 },
        { "type": "step_checking", "step": "b", "attempt": 1 },
        { "type": "step_started", "step": "b", "attempt": 1 },
        { "type": "step_succeeded", "step": "b", "attempt": 1 },
        { "type": "step_checking", "step": "c", "attempt": 1 },
        { "type": "step_started", "step": "c", "attempt": 1 },
        { "type": "step_succeeded", "step": "c", "attempt": 1 },
        { "type": "rollback_started", "reason": "smoke test failed" },
        { "type": "step_rollback_started", "step": "c" },
        { "type": "step_rolled_back", "step": "c" },
        { "type": "step_rolled_back", "step": "a", "by_restore": "a" },
        { "type": "run_rolled_back", "left": ["b"] },
    ]));
    let (state, history) = replay(&events).expect("a legal journal");
    assert_eq!(state.status, crate::engine::state::RunStatus::RolledBack);
    let [rb] = history.rollbacks.as_slice() else {
        panic!("one rollback: {:?}", history.rollbacks);
    };
    assert_eq!(rb.reason, "smoke test failed");
    assert_eq!(
        (rb.started_ms, rb.ended_ms, rb.end),
        (11_000, Some(15_000), RollbackEnd::RolledBack)
    );
    let order: Vec<(&str, i64)> = rb.steps.iter().map(|(s, at)| (s.as_str(), *at)).collect();
    assert_eq!(order, [("c", 12_000), ("a", 14_000), ("b", 15_000)]);
    assert_eq!(rb.left, ["b"]);
    let undo = |id: &str| history.step(id).undo.clone().expect("an undo");
    assert_eq!(
        undo("c"),
        UndoRecord {
            state: UndoState::Undone,
            started_ms: 12_000,
            ended_ms: Some(13_000)
        }
    );
    assert_eq!(undo("a").state, UndoState::Restored("a".into()));
    assert_eq!(undo("a").ended_ms, Some(14_000));
    assert_eq!(
        undo("b"),
        UndoRecord {
            state: UndoState::Left,
            started_ms: 15_000,
            ended_ms: None
        }
    );
    assert_eq!(history.end, Some((15_000, End::RolledBack)));
}

#[test]
fn approvals_end_with_a_verdict_or_are_cancelled_by_the_rollback() {
    let events = journal(json!([
        started(),
        { "type": "step_checking", "step": "go", "attempt": 1 },
        { "type": "step_started", "step": "go", "attempt": 1 },
        { "type": "approval_requested", "step": "go" },
        { "type": "approved", "step": "go", "by": "ann" },
        { "type": "step_checking", "step": "again", "attempt": 1 },
        { "type": "step_started", "step": "again", "attempt": 1 },
        { "type": "approval_requested", "step": "again" },
        { "type": "rollback_started", "reason": "no go" },
    ]));
    let (_, history) = replay(&events).expect("a legal journal");
    let verdicts: Vec<(&str, &Verdict, Option<i64>)> = history
        .approvals
        .iter()
        .map(|a| (a.step.as_str(), &a.verdict, a.decided_ms))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("go", &Verdict::Approved("ann".into()), Some(5000)),
            ("again", &Verdict::Cancelled, Some(9000)),
        ]
    );
    assert_eq!(history.approvals[1].requested_ms, 8000);
}

#[test]
fn closures_updates_and_the_end_say_what_changed() {
    let update = |eta: Option<i64>| {
        json!({ "type": "published", "kind": "in_progress", "status": "in_progress",
            "body": "On it.", "eta_ms": eta })
    };
    let events = journal(json!([
        started(),
        { "type": "service_closed" },
        update(Some(60_000)),
        { "type": "service_reopened" },
        { "type": "service_closed" },
        update(None),
        { "type": "run_aborted", "by": "ops", "reason": "enough" },
    ]));
    let mut history = History::default();
    let changes: Vec<String> = events
        .iter()
        .map(|r| {
            format!("{:?}", history.apply(r))
                .split('(')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        changes,
        [
            "Other",
            "ServiceClosed",
            "Published",
            "ServiceReopened",
            "ServiceClosed",
            "Published",
            "Ended"
        ]
    );
    assert_eq!(
        history.closures,
        [
            Closure {
                closed_ms: 2000,
                reopened_ms: Some(4000)
            },
            Closure {
                closed_ms: 5000,
                reopened_ms: None
            },
        ]
    );
    assert!(history.closed());
    assert_eq!(
        history.eta_ms,
        Some(60_000),
        "the latest update that gave one"
    );
    let seqs: Vec<i64> = history.updates.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [3, 6]);
    assert_eq!(history.end, Some((7000, End::Aborted)));
    assert_eq!(history.aborted_by.as_deref(), Some("ops"));
}

#[test]
fn the_history_reads_any_journal_but_replay_refuses_an_illegal_one() {
    // A step's action cannot start before its preconditions are checked.
    let events = journal(json!([
        started(),
        { "type": "step_started", "step": "a", "attempt": 1 },
    ]));
    let refused = replay(&events).expect_err("illegal");
    assert_eq!(refused.event, "step_started");
    let history = History::of(&events);
    assert_eq!(history.current.as_deref(), Some("a"));
}
