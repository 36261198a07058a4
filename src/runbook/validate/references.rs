//! What a template reference may name where it is written: `vars`, `secrets`, `run`,
//! `window`, `item`, a step's outputs or state, an update's own values.

use super::*;

pub(super) type RefError = (String, Option<String>);

pub(super) fn check_reference(scope: &Scope, site: Site, segs: &[String]) -> Result<(), RefError> {
    if segs.is_empty() {
        return Ok(());
    }
    let full = segs.join(".");
    let names = |it: &mut dyn Iterator<Item = &str>| it.map(str::to_owned).collect::<Vec<_>>();
    let member =
        |root: &str, name: Option<&String>, known: Vec<String>| member(&full, root, name, known);
    if site.update && UPDATE_ROOTS.contains(&segs[0].as_str()) {
        return match (segs[0].as_str(), segs.get(1)) {
            ("step", field) => member(
                "step",
                field,
                names(&mut UPDATE_STEP_FIELDS.iter().copied()),
            ),
            (_, None) => Ok(()),
            (root, Some(_)) => Err((
                format!("`{{{{{full}}}}}`: `{root}` is text, with no fields"),
                None,
            )),
        };
    }
    match segs[0].as_str() {
        "vars" => check_var_reference(scope, segs, &full),
        // A target is the list a step fans out over; text has no value for it.
        "targets" => Err((
            format!("`{{{{{full}}}}}`: a target is only for `for_each`, not a value in text"),
            Some("a fan-out step's actions have each item as `{{item}}`".into()),
        )),
        "secrets" => {
            if site.public {
                return Err((
                    format!(
                        "secret `{}` used in public text",
                        segs.get(1).map(String::as_str).unwrap_or("?")
                    ),
                    Some("public text is shown to customers".into()),
                ));
            }
            member(
                "secrets",
                segs.get(1),
                names(&mut scope.secrets.iter().map(String::as_str)),
            )
        }
        "run" => member("run", segs.get(1), names(&mut RUN_FIELDS.iter().copied())),
        "window" => member(
            "window",
            segs.get(1),
            names(&mut WINDOW_FIELDS.iter().copied()),
        ),
        "item" => {
            if site.item {
                Ok(())
            } else {
                Err((
                    "`{{item}}` is only defined in what a step with `for_each` does for each item: its `run`, `with`, `preconditions`, `checks`, `until`, `rollback`, `restore` and `item_label`".into(),
                    None,
                ))
            }
        }
        "host" => {
            if !site.host {
                return Err((
                    "`{{host.*}}` is only defined in what a host step (`on:`) does on each host: its `run`, `with`, `preconditions`, `checks`, `rollback`, `restore` and `between_waves`".into(),
                    None,
                ));
            }
            match segs.get(1).map(String::as_str) {
                // A host's own vars differ from host to host.
                Some("vars") => Ok(()),
                _ => member(
                    "host",
                    segs.get(1),
                    names(&mut super::hosts::HOST_FIELDS.iter().copied()),
                ),
            }
        }
        "steps" => check_step_reference(scope, site, segs, &full),
        other => unknown_root(site, other, &full),
    }
}

/// `root.NAME` names one of `known`.
fn member(
    full: &str,
    root: &str,
    name: Option<&String>,
    known: Vec<String>,
) -> Result<(), RefError> {
    let noun = match root {
        "vars" => "variable",
        "targets" => "target",
        "secrets" => "secret",
        "run" => "run value",
        "step" => "step value",
        "host" => "host value",
        _ => "window value",
    };
    match name {
        None => Err((
            format!("`{{{{{full}}}}}` needs a name: `{root}.NAME`"),
            None,
        )),
        Some(n) if known.iter().any(|k| k == n) => Ok(()),
        Some(n) => Err((
            format!("`{{{{{full}}}}}` refers to unknown {noun} `{n}`"),
            did_you_mean(n, &known).or_else(|| {
                Some(if known.is_empty() {
                    format!("no {noun}s are defined")
                } else {
                    format!("known: {}", known.join(", "))
                })
            }),
        )),
    }
}

/// `vars.NAME[.FIELD...]`: a variable there is, and fields its value has.
fn check_var_reference(scope: &Scope, segs: &[String], full: &str) -> Result<(), RefError> {
    member(
        full,
        "vars",
        segs.get(1),
        scope.vars.keys().cloned().collect(),
    )?;
    let mut value = &scope.vars[segs[1].as_str()];
    for s in &segs[2..] {
        match value.get(s) {
            Some(v) => value = v,
            None => {
                return Err((
                    format!("`{{{{{full}}}}}`: variable has no field `{s}`"),
                    None,
                ));
            }
        }
    }
    Ok(())
}

/// A reference to something templates do not offer where it is written.
fn unknown_root(site: Site, other: &str, full: &str) -> Result<(), RefError> {
    let roots: Vec<&str> = if site.update {
        UPDATE_ROOTS
            .iter()
            .chain(["vars", "run", "window", "steps"].iter())
            .copied()
            .collect()
    } else {
        ROOTS.to_vec()
    };
    Err((
        format!("`{{{{{full}}}}}` refers to unknown value `{other}`"),
        did_you_mean(other, &roots).or_else(|| {
            Some(format!(
                "templates can use {}",
                roots
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }),
    ))
}

pub(super) fn check_step_reference(
    scope: &Scope,
    site: Site,
    segs: &[String],
    full: &str,
) -> Result<(), RefError> {
    let shape = || {
        Err((
            format!("`{{{{{full}}}}}` should look like `steps.ID.outputs.NAME`"),
            None,
        ))
    };
    let (Some(id), Some(outputs), Some(name)) = (segs.get(1), segs.get(2), segs.get(3)) else {
        return shape();
    };
    if outputs != "outputs" || segs.len() > 4 {
        return shape();
    }
    let Some(&target) = scope.index_of.get(id) else {
        let ids: Vec<&str> = scope.index_of.keys().map(String::as_str).collect();
        return Err((
            format!("`{{{{{full}}}}}` refers to unknown step `{id}`"),
            did_you_mean(id, &ids),
        ));
    };
    if let Some(me) = site.step.filter(|_| !scope.cyclic) {
        let (t, m) = (scope.position[&target], scope.position[&me]);
        let ok = t < m || (t == m && site.own_outputs);
        if !ok {
            let when = if t == m {
                "its own outputs exist only after it has run"
            } else {
                "it runs later"
            };
            let my_id = scope.ids[me].unwrap_or("?");
            return Err((
                format!("step `{my_id}` uses outputs of step `{id}`, but {when}"),
                Some("only outputs of earlier steps can be used".into()),
            ));
        }
    }
    // A step that did not parse has already been reported; its outputs are unknown.
    let Some(step) = &scope.steps[target] else {
        return Ok(());
    };
    let builtin = step.kind.builtin_outputs();
    // A `run` action's outputs are whatever it prints, unless the step declares them.
    let open = step.run.is_some() && step.outputs.is_empty();
    let known = builtin.iter().any(|b| *b == name) || step.outputs.iter().any(|o| o == name);
    if open || known {
        return Ok(());
    }
    let mut all: Vec<&str> = builtin.to_vec();
    all.extend(step.outputs.iter().map(String::as_str));
    let label = did_you_mean(name, &all).or_else(|| {
        Some(if all.is_empty() {
            format!("step `{id}` has no outputs")
        } else {
            format!(
                "step `{id}` has outputs {}",
                all.iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    });
    Err((format!("step `{id}` has no output `{name}`"), label))
}
