//! Conditions (preconditions, checks, `until`) and actions (`run`, `rollback`,
//! `restore`): one kind each, with the fields of that kind only.

use super::*;

pub(super) fn texts(m: Option<IndexMap<String, Text>>) -> IndexMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

pub(super) fn http(h: RawHttp) -> HttpCheck {
    HttpCheck {
        url: h.url,
        method: h.method.unwrap_or_else(|| "GET".into()).to_uppercase(),
        headers: texts(Some(h.headers)),
        body: h.body,
        expect_status: h.expect_status.unwrap_or(200),
        expect_contains: h.expect_contains,
        expect_json: h.expect_json,
        within: h.within.map(|d| d.0),
        timeout: h.timeout.map(|d| d.0),
    }
}

/// The one field of `fields` that is set, or a problem reported at `path` when none or
/// several are. `what` names the thing ("a condition"), `allowed` the choices.
pub(super) fn exactly_one(
    cx: &mut Ctx,
    path: &FieldPath,
    fields: &[(&'static str, bool)],
    what: &str,
    allowed: &str,
) -> Option<&'static str> {
    let set: Vec<&'static str> = fields.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    match set.as_slice() {
        [one] => return Some(one),
        [] => {
            cx.error(path.clone(), format!("{what} needs one of {allowed}"));
        }
        many => {
            let listed: Vec<String> = many.iter().map(|k| format!("`{k}`")).collect();
            cx.error(
                path.clone(),
                format!(
                    "{what} has one of {allowed}, this one has {}",
                    listed.join(" and ")
                ),
            );
        }
    }
    None
}

/// Reports fields that belong with another kind than the one chosen.
pub(super) fn misplaced(cx: &mut Ctx, path: &FieldPath, kind: &str, fields: &[(&str, bool, &str)]) {
    for (field, set, owner) in fields {
        if *set && kind != *owner {
            cx.error_key(
                path.key(field),
                format!("`{field}` goes with `{owner}`, not `{kind}`"),
            );
        }
    }
}

pub(super) fn conditions(
    cx: &mut Ctx,
    path: &FieldPath,
    raw: Vec<RawCondition>,
    precondition: bool,
    index_of: &HashMap<String, usize>,
) -> Vec<Condition> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, c) in raw.into_iter().enumerate() {
        let p = path.index(i);
        let allowed = if precondition {
            "`sql`, `http`, `shell`, `window` or `step`"
        } else {
            "`sql`, `http` or `shell`"
        };
        // What is written decides; a field whose value could not be read is reported.
        let w = |f: &str| cx.present(&p.key(f));
        let fields = [
            ("sql", w("sql")),
            ("http", w("http")),
            ("shell", w("shell")),
            ("window", w("window")),
            ("step", w("step")),
        ];
        let misplaced_fields = [
            ("database", w("database"), "sql"),
            ("expect", w("expect"), "sql"),
            ("env", w("env"), "shell"),
            ("state", w("state"), "step"),
        ];
        let database_written = w("database");
        let Some(kind) = exactly_one(cx, &p, &fields, "a condition", allowed) else {
            continue;
        };
        if !precondition && matches!(kind, "window" | "step") {
            cx.error_key(
                p.key(kind),
                format!("`{kind}` conditions are only for preconditions"),
            );
            continue;
        }
        misplaced(cx, &p, kind, &misplaced_fields);
        let read = match kind {
            "sql" => c.sql.is_some(),
            "http" => c.http.is_some(),
            "shell" => c.shell.is_some(),
            "window" => c.window.is_some(),
            _ => c.step.is_some(),
        };
        if !read {
            continue;
        }
        let check = match kind {
            "sql" => {
                let Some(database) = c.database else {
                    if !database_written {
                        cx.error(p.clone(), "an `sql` condition needs `database`");
                    }
                    continue;
                };
                Check::Sql {
                    sql: c.sql.unwrap_or_default(),
                    database,
                    expect: c.expect,
                }
            }
            "http" => Check::Http(Box::new(http(c.http.expect("kind is http")))),
            "shell" => Check::Shell {
                command: c.shell.unwrap_or_default(),
                env: texts(c.env),
            },
            "window" => Check::Window {
                remaining_at_least: c.window.expect("kind is window").remaining_at_least.0,
            },
            _ => {
                let id = c.step.unwrap_or_default();
                if !index_of.contains_key(&id) {
                    let ids: Vec<&str> = index_of.keys().map(String::as_str).collect();
                    let label = did_you_mean(&id, &ids);
                    cx.error(
                        p.key("step"),
                        format!("condition refers to unknown step `{id}`"),
                    )
                    .label = label;
                }
                Check::Step {
                    id,
                    state: c.state.unwrap_or_default(),
                }
            }
        };
        out.push(Condition {
            check,
            message: c.message,
        });
    }
    out
}

pub(super) fn action(cx: &mut Ctx, path: &FieldPath, a: RawAction, undo: bool) -> Action {
    let allowed = if undo {
        "`kind` (with `with`), `shell`, `sql`, `http` or `copy`"
    } else {
        "`shell`, `sql`, `http` or `copy`"
    };
    // What is written decides; a field whose value could not be read is reported.
    let w = |f: &str| cx.present(&path.key(f));
    let fields = [
        ("kind", w("kind")),
        ("shell", w("shell")),
        ("sql", w("sql")),
        ("http", w("http")),
        ("copy", w("copy")),
    ];
    let misplaced_fields = [
        ("with", w("with"), "kind"),
        ("database", w("database"), "sql"),
        ("transaction", w("transaction"), "sql"),
        ("env", w("env"), "shell"),
        ("cwd", w("cwd"), "shell"),
    ];
    let database_written = w("database");
    let kind = exactly_one(cx, path, &fields, "an action", allowed);
    let read = match kind {
        Some("kind") => a.kind.is_some(),
        Some("shell") => a.shell.is_some(),
        Some("sql") => a.sql.is_some(),
        Some("http") => a.http.is_some(),
        Some("copy") => a.copy.is_some(),
        _ => true,
    };
    let kind = kind.filter(|_| read);
    let kind = match kind {
        Some("kind") if !undo => {
            cx.error_key(
                path.key("kind"),
                "`run` takes `shell`, `sql`, `http` or `copy`; the step's own `kind` gives its built-in behaviour",
            );
            None
        }
        k => k,
    };
    let Some(kind) = kind else {
        return Action::Shell {
            command: String::new(),
            env: IndexMap::new(),
            cwd: None,
            timeout: None,
        };
    };
    misplaced(cx, path, kind, &misplaced_fields);
    match kind {
        "kind" => Action::Builtin {
            kind: a.kind.expect("kind is set"),
            with: a.with.unwrap_or_default(),
        },
        "shell" => Action::Shell {
            command: a.shell.unwrap_or_default(),
            env: texts(a.env),
            cwd: a.cwd,
            timeout: a.timeout.map(|d| d.0),
        },
        "sql" => {
            if !database_written {
                cx.error(path.clone(), "an `sql` action needs `database`");
            }
            Action::Sql {
                sql: a.sql.unwrap_or_default(),
                database: a.database.unwrap_or_default(),
                transaction: a.transaction.unwrap_or(true),
            }
        }
        "copy" => {
            let c = a.copy.expect("kind is copy");
            let mode = c.mode.as_deref().and_then(|m| {
                let parsed = u32::from_str_radix(m.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|v| *v <= 0o7777);
                if parsed.is_none() {
                    cx.error(
                        path.key("copy").key("mode"),
                        format!("`mode` is octal permission bits such as \"0644\", not `{m}`"),
                    );
                }
                parsed
            });
            for (field, v) in [("src", &c.src), ("dest", &c.dest)] {
                if v.trim().is_empty() {
                    cx.error(
                        path.key("copy").key(field),
                        format!("`copy` needs a `{field}` path"),
                    );
                }
            }
            Action::Copy {
                src: c.src,
                dest: c.dest,
                mode,
            }
        }
        _ => Action::Http(Box::new(http(a.http.expect("kind is http")))),
    }
}
