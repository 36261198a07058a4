//! The template context: the values `{{...}}` can use at a point of a run (its vars,
//! `run`, `window`, the outputs of its steps, a fan-out item), built in this one place
//! for the runner, its workers and an abort from the CLI or the admin API alike (when
//! the window opened is `timing::window_start`).

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::state::RunState;
use crate::runbook::Runbook;

/// The values templates can use in `state` of run `run_id`: the one place a template
/// context is built, for the runner, its workers and an abort from the CLI or the admin
/// API alike. `item` is a fan-out item's `{{item}}`.
pub(crate) fn context(
    rb: &Runbook,
    state: &RunState,
    run_id: &str,
    secrets: &IndexMap<String, String>,
    item: Option<&Value>,
) -> Value {
    // Only steps that produced something: a template can refer to nothing else, and
    // a run of a thousand steps need not copy a thousand empty maps per context.
    let steps: serde_json::Map<String, Value> = state
        .steps
        .iter()
        .filter(|(_, s)| !s.outputs.is_empty())
        .map(|(id, s)| (id.clone(), json!({ "outputs": s.outputs })))
        .collect();
    let window = &rb.window;
    let start = super::timing::window_start(rb, state);
    json!({
        "vars": state.vars,
        "targets": {},
        "secrets": secrets,
        "run": {
            "id": run_id,
            "runbook": rb.id,
            "operator": state.operator,
            "started_at": state.started_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339()),
        },
        "window": {
            "start": start.map(|t| t.to_rfc3339()),
            "end": start.zip(window.duration).map(|(s, d)| crate::duration::after(s, d).to_rfc3339()),
            "duration": window.duration.map(crate::duration::fmt_duration),
            "timezone": window.timezone.name(),
        },
        "steps": steps,
        "item": item,
    })
}
