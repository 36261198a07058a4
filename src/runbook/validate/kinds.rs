//! The built-in kinds (`backup`, `verify`, `restore`, `migrate`, `optimise`): each one's
//! `with` (the step's own, and a built-in rollback's or restore's) checked against the
//! kind's own type in `runbook::with`, a `with` that is needed and missing, and a
//! migrations directory that is already there.

use super::*;
use crate::runbook::with;

/// The rules of the built-in kinds for one step: `run` is its `run:` action, `undo` its
/// `rollback` and `restore`, by name.
pub(super) fn check(
    cx: &mut Ctx,
    at: At,
    w: &Written,
    step_with: &IndexMap<String, Value>,
    run: Option<&Action>,
    undo: [(&str, Option<&Action>); 2],
) {
    // A database kind's `with` is read as the run would read it: an unknown or missing
    // field is known now.
    let builtin = at.kind.filter(|&k| !w.run && k.has_builtin());
    if let Some(kind) = builtin
        && (kind != Kind::Verify || w.with)
    {
        check_with(cx, kind, step_with, at.path.key("with"));
    }
    for (name, action) in undo {
        if let Some(Action::Builtin { kind, with }) = action {
            check_with(cx, *kind, with, at.path.key(name).key("with"));
        }
    }
    check_with_written(cx, at, w, builtin, undo);
    if at.kind == Some(Kind::Migrate) && run.is_none() {
        let rollback = undo[0].1;
        check_migrations(cx, at.path, step_with, rollback);
    }
}

/// One `with`, at `at`: its fields, and a duration written out (not a template) held to
/// the rule of every duration.
fn check_with(cx: &mut Ctx, kind: Kind, with: &IndexMap<String, Value>, at: FieldPath) {
    for p in with::problems(kind, with) {
        match p.field {
            Some(f) => {
                cx.error_key(at.key(&f), p.message);
            }
            None => {
                cx.error_key(at.clone(), p.message);
            }
        }
    }
    if matches!(kind, Kind::Migrate | Kind::Optimise)
        && let Some(Value::String(t)) = with.get("lock_timeout")
        && !t.contains("{{")
        && let Err(e) = crate::duration::parse_duration(t)
    {
        cx.error(at.key("lock_timeout"), e);
    }
}

/// What a kind's `with` cannot do without, for a message: "`with:` with `database` and
/// `dir`".
fn needs(kind: Kind) -> String {
    let listed: Vec<String> = with::required_fields(kind)
        .iter()
        .map(|f| format!("`{f}`"))
        .collect();
    match listed.as_slice() {
        [] => "`with:`".to_owned(),
        [one] => format!("`with:` with {one}"),
        [init @ .., last] => format!("`with:` with {} and {last}", init.join(", ")),
    }
}

/// A database kind with no `with` has nothing to work on: alone it would fail when it
/// runs, and fanned out each item would "succeed" having done nothing. Either way it is
/// known now. (Its built-in rollback or restore likewise.)
fn check_with_written(
    cx: &mut Ctx,
    at: At,
    w: &Written,
    builtin: Option<Kind>,
    undo: [(&str, Option<&Action>); 2],
) {
    let at_with_or = |cx: &Ctx, at: FieldPath, or: FieldPath| {
        if cx.node(&at).is_some() { at } else { or }
    };
    let path = at.path;
    if let Some(kind) = builtin
        && !w.with
    {
        let place = at_with_or(cx, path.key("with"), path.key("kind"));
        if kind != Kind::Verify {
            cx.error(
                place,
                format!(
                    "step `{}` of kind `{}` has nothing to do: give it {} (or a `run:` action)",
                    at.id,
                    kind.as_str(),
                    needs(kind)
                ),
            );
        } else if !w.checks {
            cx.error(
                place,
                format!(
                    "`verify` step `{}` has nothing to check: give it {} (the backup to check), or `checks:`",
                    at.id,
                    needs(kind)
                ),
            );
        }
    }
    for (name, action) in undo {
        let undo = path.key(name);
        if cx.written(&undo.key("kind")) && !cx.written(&undo.key("with")) {
            let Some(Action::Builtin { kind, .. }) = action else {
                continue;
            };
            if kind.has_builtin() {
                let place = at_with_or(cx, undo.key("with"), undo.key("kind"));
                cx.error(
                    place,
                    format!(
                        "the `{name}` of step `{}` (kind `{}`) has nothing to do: give it {}",
                        at.id,
                        kind.as_str(),
                        needs(*kind)
                    ),
                );
            }
        }
    }
}

/// A migrations directory that is there when the file is checked is checked too: a gap,
/// a duplicate, or a down file missing for a rollback that needs it is known before
/// anything runs. (One that does not exist yet is left to the run.)
fn check_migrations(
    cx: &mut Ctx,
    path: &FieldPath,
    with: &IndexMap<String, Value>,
    rollback: Option<&Action>,
) {
    if with.contains_key("phase") {
        for field in ["to", "accept_changed"] {
            if with.contains_key(field) {
                cx.error_key(
                    path.key("with").key(field),
                    format!("`{field}` is for classic migrations; `phase` works on the next online migration"),
                );
            }
        }
    }
    if let Some(Value::String(dir)) = with.get("dir")
        && !dir.contains("{{")
        && std::path::Path::new(dir).is_dir()
    {
        // A rollback migrating down needs the down files; one that aborts an online
        // migration does not.
        let needs_down = matches!(
            rollback,
            Some(Action::Builtin {
                kind: Kind::Migrate,
                with,
            }) if !with.contains_key("phase")
        );
        if let Err(e) = crate::sql::migrations::check_dir(std::path::Path::new(dir), needs_down) {
            cx.error(path.key("with").key("dir"), e);
            return;
        }
        // Online migrations: each operation checked, problems at their place in the file.
        for m in crate::sql::migrations::load(std::path::Path::new(dir)).unwrap_or_default() {
            if !m.online {
                continue;
            }
            if let Err(errors) = crate::runbook::online::parse(&m.up_sql) {
                let file = std::path::Path::new(dir)
                    .join(&m.up_file)
                    .display()
                    .to_string();
                let shared = std::sync::Arc::new((file, m.up_sql.clone()));
                for e in errors {
                    let pos = Pos::new(e.line, e.col.saturating_sub(1));
                    let mut d = Diagnostic::at(FieldPath::root(), e.message).with_span(Span {
                        start: pos,
                        end: Pos::new(e.line, e.col),
                    });
                    d.file = Some(shared.clone());
                    cx.push(d);
                }
            }
        }
    }
}
