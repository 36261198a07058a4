//! What a rollback does to each step it goes back over: undone by its own `rollback`,
//! by the checkpoint's `restore` (when the restore brings back every database the step
//! changed), or left as it is. One rule for the engine (`decide`), `plan` ("If a step
//! fails") and what the run says at its end.

use indexmap::IndexMap;
use serde_json::Value;

use super::state::{RunState, StepStatus};
use crate::runbook::{Action, ForEach, Kind, Runbook, Step};

/// How a step is undone when the run rolls back over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How<'a> {
    /// By its own `rollback` action.
    Rollback,
    /// By the `restore` of this checkpoint, which brings back what the step changed.
    Restore(&'a str),
    /// Not at all: it changed something and has no rollback.
    Left,
    /// Nothing to undo: it changed nothing in the service.
    Nothing,
}

impl How<'_> {
    /// The words `plan` and the terminal use.
    pub fn as_str(&self) -> &'static str {
        match self {
            How::Rollback => "rollback",
            How::Restore(_) => "restore",
            How::Left => "left",
            How::Nothing => "nothing",
        }
    }
}

/// How `step` is undone when the run rolls back to checkpoint `cp` (or to the start).
pub fn how<'a>(cp: Option<&'a Step>, step: &Step, vars: &IndexMap<String, Value>) -> How<'a> {
    if let Some(cp) = cp
        && restore_covers(cp, step, vars)
    {
        return How::Restore(&cp.id);
    }
    if step.rollback.is_some() {
        How::Rollback
    } else if changes_things(step) {
        How::Left
    } else {
        How::Nothing
    }
}

/// Whether a step leaves something to undo. Checks, approvals, announcements, waits and
/// backups change nothing in the service (even with a `run:` action); close and reopen
/// without an action are settled by the rollback itself, which always ends with the
/// service open.
pub fn changes_things(s: &Step) -> bool {
    s.rollback.is_some()
        || matches!(
            s.kind,
            Kind::Patch | Kind::Migrate | Kind::Install | Kind::Restore
        )
        || (s.run.is_some()
            && !matches!(
                s.kind,
                Kind::Test
                    | Kind::Verify
                    | Kind::Approve
                    | Kind::Announce
                    | Kind::Wait
                    | Kind::Backup
            ))
}

/// Whether checkpoint `cp`'s `restore` brings back everything `step` changed: the step
/// works only on databases (its built-in behaviour, or a `sql` action) and the restore
/// restores each of them. A step whose effects are unknown (a shell command, an HTTP
/// call) is never covered: its own rollback runs.
pub fn restore_covers(cp: &Step, step: &Step, vars: &IndexMap<String, Value>) -> bool {
    let Some(restore) = cp.restore.as_deref() else {
        return false;
    };
    if std::ptr::eq(cp, step) {
        return false;
    }
    let restored: Vec<String> = action_databases(restore)
        .into_iter()
        .map(|d| key(d, cp.for_each.as_ref(), vars))
        .collect();
    let touched = step_databases(step);
    !restored.is_empty()
        && !touched.is_empty()
        && touched
            .into_iter()
            .all(|d| restored.contains(&key(d, step.for_each.as_ref(), vars)))
}

/// The databases a step's work touches; empty when it may touch anything else.
fn step_databases(step: &Step) -> Vec<&str> {
    match step.run.as_deref() {
        Some(a) => action_databases(a),
        None if step.kind.has_builtin() => database_of(&step.with),
        None => Vec::new(),
    }
}

fn action_databases(a: &Action) -> Vec<&str> {
    match a {
        Action::Sql { database, .. } => vec![database.as_str()],
        Action::Builtin { with, .. } => database_of(with),
        Action::Shell { .. } | Action::Http(_) | Action::Copy { .. } => Vec::new(),
    }
}

fn database_of(with: &IndexMap<String, Value>) -> Vec<&str> {
    with.get("database")
        .and_then(Value::as_str)
        .into_iter()
        .collect()
}

/// A database as written, comparable across steps: `{{vars.NAME}}` replaced by its
/// value, and a database named after the fan-out item tied to the list of items.
fn key(text: &str, for_each: Option<&ForEach>, vars: &IndexMap<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = text;
    let mut per_item = false;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        let inner = rest[open + 2..open + close].trim();
        let value = inner
            .strip_prefix("vars.")
            .and_then(|name| vars.get(name))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        match value {
            Some(v) => out.push_str(&v),
            None => {
                per_item |= inner == "item" || inner.starts_with("item.");
                out.push_str("{{");
                out.push_str(inner);
                out.push_str("}}");
            }
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    if per_item {
        out.push_str(&format!("\u{0}{for_each:?}"));
    }
    out
}

/// Where a rollback goes back to: the position in `rb.order` of the most recent
/// checkpoint that succeeded (undone or not), if any.
pub fn checkpoint(rb: &Runbook, state: &RunState) -> Option<usize> {
    rb.order.iter().rposition(|&i| {
        let s = state.step(&rb.steps[i].id).status;
        rb.steps[i].checkpoint
            && matches!(
                s,
                StepStatus::Succeeded | StepStatus::RollingBack | StepStatus::RolledBack
            )
    })
}

/// The steps a finished rollback left as they were (they changed something, had no
/// rollback and no restore brought them back), in execution order.
pub fn left_as_is(rb: &Runbook, state: &RunState) -> Vec<String> {
    let c = checkpoint(rb, state);
    let cp = c.map(|c| &rb.steps[rb.order[c]]);
    let from = c.map_or(0, |c| c + 1);
    rb.order[from..]
        .iter()
        .map(|&i| &rb.steps[i])
        .filter(|s| state.step(&s.id).has_work_to_undo())
        .filter(|s| how(cp, s, &state.vars) == How::Left)
        .map(|s| s.id.clone())
        .collect()
}

/// The steps the restore of checkpoint `cp` (an index into `rb.steps`) brought back,
/// in execution order.
pub fn restored_by(rb: &Runbook, state: &RunState, cp: usize) -> Vec<String> {
    let cp_step = &rb.steps[cp];
    let Some(pos) = rb.order.iter().position(|&i| i == cp) else {
        return Vec::new();
    };
    rb.order[pos + 1..]
        .iter()
        .map(|&i| &rb.steps[i])
        .filter(|s| state.step(&s.id).has_work_to_undo())
        .filter(|s| restore_covers(cp_step, s, &state.vars))
        .map(|s| s.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::load_str;

    const RB: &str = "runbook: t
vars: { db: 'sqlite://a.db', other: 'sqlite://b.db' }
targets: { tenants: [a, b] }
steps:
  - { id: snap, kind: backup, checkpoint: true, with: { database: '{{vars.db}}' },
      restore: { kind: restore, with: { database: '{{vars.db}}', from: x } } }
  - { id: m, kind: migrate, with: { database: 'sqlite://a.db', dir: m } }
  - { id: q, kind: patch, run: { sql: 'update t set x = 1', database: '{{ vars.db }}' } }
  - { id: o, kind: migrate, with: { database: '{{vars.other}}', dir: m } }
  - { id: app, kind: install, run: { shell: cp a b }, rollback: { shell: cp b a } }
  - { id: bare, kind: install, run: { shell: cp a b } }
  - { id: smoke, kind: test, run: { shell: 'true' } }
  - { id: tsnap, kind: backup, checkpoint: true, for_each: '{{targets.tenants}}',
      with: { database: 'sqlite://{{item}}.db' },
      restore: { kind: restore, with: { database: 'sqlite://{{item}}.db', from: x } } }
  - { id: tm, kind: migrate, for_each: '{{targets.tenants}}', with: { database: 'sqlite://{{item}}.db', dir: m } }
  - { id: tx, kind: migrate, for_each: [c, d], with: { database: 'sqlite://{{item}}.db', dir: m } }
";

    #[test]
    fn a_restore_replaces_only_the_undo_of_the_databases_it_brings_back() {
        let rb = load_str("t.yaml", RB).unwrap();
        let s = |id: &str| rb.steps.iter().find(|s| s.id == id).unwrap();
        let vars = &rb.vars;
        let snap = Some(s("snap"));
        assert_eq!(how(snap, s("m"), vars), How::Restore("snap"));
        assert_eq!(how(snap, s("q"), vars), How::Restore("snap"));
        assert_eq!(how(snap, s("o"), vars), How::Left);
        assert_eq!(how(snap, s("app"), vars), How::Rollback);
        assert_eq!(how(snap, s("bare"), vars), How::Left);
        assert_eq!(how(snap, s("smoke"), vars), How::Nothing);
        assert_eq!(how(None, s("m"), vars), How::Left);
        // Per tenant: the same list of items, the same databases.
        let tsnap = Some(s("tsnap"));
        assert_eq!(how(tsnap, s("tm"), vars), How::Restore("tsnap"));
        assert_eq!(how(tsnap, s("tx"), vars), How::Left);
        assert_eq!(how(tsnap, s("m"), vars), How::Left);
    }
}
