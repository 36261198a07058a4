//! One step: the rules of its fields and of its kind, its fan-out and what it shows,
//! read into the model's `Step`.

use super::*;

pub(super) fn validate_step(
    cx: &mut Ctx,
    path: &FieldPath,
    rs: RawStep,
    index_of: &HashMap<String, usize>,
    targets: &IndexMap<String, Target>,
) -> Option<Step> {
    // A kind that is not there or not known (reported) leaves out the rules of kinds;
    // everything else about the step is still checked.
    if rs.kind.is_none() && !cx.present(&path.key("kind")) {
        cx.error(path.clone(), "missing field `kind`");
    }
    for (j, req) in rs.requires.iter().enumerate() {
        let p = path.key("requires").index(j);
        if req == &rs.id {
            cx.error(p, format!("step `{}` requires itself", rs.id));
        } else if !index_of.contains_key(req) {
            let known_ids: Vec<&str> = index_of.keys().map(String::as_str).collect();
            let label = did_you_mean(req, &known_ids);
            cx.error(p, format!("step `{}` requires unknown step `{req}`", rs.id))
                .label = label;
        }
    }
    if let (Some(e), Some(t)) = (rs.expected, rs.timeout)
        && e.0 > t.0
    {
        cx.error(
            path.key("expected"),
            format!(
                "`expected` ({}) is longer than `timeout` ({})",
                crate::duration::fmt_duration(e.0),
                crate::duration::fmt_duration(t.0)
            ),
        );
    }
    let retries = match rs.retries {
        None => Retries::default(),
        Some(RawRetries::Count(n)) => Retries {
            max: n,
            backoff: Duration::from_secs(10),
        },
        Some(RawRetries::Policy(p)) => Retries {
            max: p.max,
            backoff: p.backoff.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
        },
    };

    let preconditions = conditions(
        cx,
        &path.key("preconditions"),
        rs.preconditions,
        true,
        index_of,
    );
    let written = |f: &str| cx.written(&path.key(f));
    let (checks_written, run_written, with_written) =
        (written("checks"), written("run"), written("with"));
    let (timeout_written, reason_written, title_written) =
        (written("timeout"), written("reason"), written("title"));
    let (rollback_written, restore_written, fan_out) =
        (written("rollback"), written("restore"), written("for_each"));
    let (interval_written, on_timeout_written, wait_for_written) = (
        written("interval"),
        written("on_timeout"),
        written("wait_for"),
    );
    let preconditions_written = written("preconditions");
    // `checkpoint` written with a value that is not a boolean was reported as that.
    let not_checkpoint = !rs.checkpoint
        && cx.node(&path.key("checkpoint")).is_none_or(|n| {
            matches!(
                n.value,
                NodeValue::Scalar(Scalar::Null | Scalar::Bool(false), _)
            )
        });
    let public_unread = rs.public.is_none() && written("public");
    let checks = conditions(cx, &path.key("checks"), rs.checks, false, index_of);
    let until = conditions(cx, &path.key("until"), rs.until, false, index_of);
    if let Some(kind) = rs.kind
        && !checks.is_empty()
        && !matches!(kind, Kind::Test | Kind::Verify)
    {
        cx.error_key(
            path.key("checks"),
            format!(
                "`checks` belong to `test` and `verify` steps, not `{}`",
                kind.as_str()
            ),
        );
    }
    let not = |k: Kind| rs.kind.is_some_and(|kind| kind != k);
    if rs.kind == Some(Kind::Wait) && cx.node(&path.key("until")).is_none() {
        cx.error(
            path.key("kind"),
            format!(
                "`wait` step `{}` needs `until:` conditions to wait for",
                rs.id
            ),
        );
    }
    if !until.is_empty() && not(Kind::Wait) {
        cx.error_key(path.key("until"), "`until` belongs to `wait` steps");
    }
    if interval_written && not(Kind::Wait) {
        cx.error_key(path.key("interval"), "`interval` belongs to `wait` steps");
    }
    if on_timeout_written && not(Kind::Approve) {
        cx.error_key(
            path.key("on_timeout"),
            "`on_timeout` belongs to `approve` steps",
        );
    } else if on_timeout_written && !timeout_written {
        cx.error_key(
            path.key("on_timeout"),
            "`on_timeout` needs a `timeout` to wait for",
        );
    }
    if wait_for_written && !preconditions_written {
        cx.error_key(
            path.key("wait_for"),
            "`wait_for` needs `preconditions` to re-check",
        );
    }

    let run = rs
        .run
        .map(|a| Box::new(action(cx, &path.key("run"), a, false)));
    if let Some(kind @ (Kind::Patch | Kind::Install)) = rs.kind
        && !run_written
    {
        cx.error(
            path.key("kind"),
            format!(
                "step `{}` of kind `{}` has nothing to do: give it a `run:` action",
                rs.id,
                kind.as_str()
            ),
        );
    }
    if rs.kind == Some(Kind::Test) && !run_written && !checks_written {
        cx.error(
            path.key("kind"),
            format!(
                "`test` step `{}` needs `checks:` (or a `run:` action)",
                rs.id
            ),
        );
    }
    let rollback = rs
        .rollback
        .map(|a| Box::new(action(cx, &path.key("rollback"), a, true)));
    let restore = rs
        .restore
        .map(|a| Box::new(action(cx, &path.key("restore"), a, true)));
    // A database kind's `with` (the step's own, and a built-in rollback's or restore's)
    // is read as the run would read it: an unknown or missing field is known now.
    let mut check_with = |kind: Kind, with: &IndexMap<String, Value>, at: FieldPath| {
        for p in crate::runbook::with::problems(kind, with) {
            match p.field {
                Some(f) => {
                    cx.error_key(at.key(&f), p.message);
                }
                None => {
                    cx.error_key(at.clone(), p.message);
                }
            }
        }
        // A duration written out (not a template) is held to the rule of every duration.
        if matches!(kind, Kind::Migrate | Kind::Optimise)
            && let Some(Value::String(t)) = with.get("lock_timeout")
            && !t.contains("{{")
            && let Err(e) = crate::duration::parse_duration(t)
        {
            cx.error(at.key("lock_timeout"), e);
        }
    };
    let builtin = rs.kind.filter(|&k| !run_written && k.has_builtin());
    if let Some(kind) = builtin
        && (kind != Kind::Verify || with_written)
    {
        check_with(kind, &rs.with, path.key("with"));
    }
    for (name, undo) in [("rollback", &rollback), ("restore", &restore)] {
        if let Some(Action::Builtin { kind, with }) = undo.as_deref() {
            check_with(*kind, with, path.key(name).key("with"));
        }
    }
    // A database kind with no `with` has nothing to work on: alone it would fail when it
    // runs, and fanned out each item would "succeed" having done nothing. Either way it
    // is known now. (Its built-in rollback or restore likewise.)
    let needs = |kind: Kind| {
        let fields = crate::runbook::with::required_fields(kind);
        let listed: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
        match listed.as_slice() {
            [] => "`with:`".to_owned(),
            [one] => format!("`with:` with {one}"),
            [init @ .., last] => format!("`with:` with {} and {last}", init.join(", ")),
        }
    };
    let at_with_or = |cx: &Ctx, at: FieldPath, or: FieldPath| {
        if cx.node(&at).is_some() { at } else { or }
    };
    if let Some(kind) = builtin
        && !with_written
    {
        let at = at_with_or(cx, path.key("with"), path.key("kind"));
        if kind != Kind::Verify {
            cx.error(
                at,
                format!(
                    "step `{}` of kind `{}` has nothing to do: give it {} (or a `run:` action)",
                    rs.id,
                    kind.as_str(),
                    needs(kind)
                ),
            );
        } else if !checks_written {
            cx.error(
                at,
                format!(
                    "`verify` step `{}` has nothing to check: give it {} (the backup to check), or `checks:`",
                    rs.id,
                    needs(kind)
                ),
            );
        }
    }
    for name in ["rollback", "restore"] {
        let undo = path.key(name);
        if cx.written(&undo.key("kind")) && !cx.written(&undo.key("with")) {
            let kind = match (name, rollback.as_deref(), restore.as_deref()) {
                ("rollback", Some(Action::Builtin { kind, .. }), _)
                | ("restore", _, Some(Action::Builtin { kind, .. })) => *kind,
                _ => continue,
            };
            if kind.has_builtin() {
                let at = at_with_or(cx, undo.key("with"), undo.key("kind"));
                cx.error(
                    at,
                    format!(
                        "the `{name}` of step `{}` (kind `{}`) has nothing to do: give it {}",
                        rs.id,
                        kind.as_str(),
                        needs(kind)
                    ),
                );
            }
        }
    }
    // A migrations directory that is there when the file is checked is checked too: a
    // gap, a duplicate, or a down file missing for a rollback that needs it is known
    // before anything runs. (One that does not exist yet is left to the run.)
    if rs.kind == Some(Kind::Migrate)
        && run.is_none()
        && let Some(Value::String(dir)) = rs.with.get("dir")
        && !dir.contains("{{")
        && std::path::Path::new(dir).is_dir()
    {
        let needs_down = matches!(
            rollback.as_deref(),
            Some(Action::Builtin {
                kind: Kind::Migrate,
                ..
            })
        );
        if let Err(e) = crate::sql::migrations::check_dir(std::path::Path::new(dir), needs_down) {
            cx.error(path.key("with").key("dir"), e);
        }
    }
    if restore_written && not_checkpoint {
        cx.error_key(
            path.key("restore"),
            format!(
                "`restore` is only for checkpoints: add `checkpoint: true` to step `{}`",
                rs.id
            ),
        );
    }
    let on_failure = rs.on_failure.unwrap_or_default();
    if on_failure == OnFailure::Continue && rollback_written && !reason_written {
        cx.error(
            path.key("on_failure"),
            format!(
                "step `{}` has a `rollback` but `on_failure: continue` ignores its failure; say why in `reason:` or choose another policy",
                rs.id
            ),
        );
    }

    // Fan-out.
    let for_each = rs.for_each.map(|f| match f {
        RawForEach::Items(items) => {
            if items.is_empty() {
                cx.error(path.key("for_each"), "`for_each` has no items");
            }
            ForEach::Items(items)
        }
        RawForEach::Reference(text) => {
            let inner = text
                .trim()
                .strip_prefix("{{")
                .and_then(|t| t.strip_suffix("}}"))
                .map(str::trim);
            match inner.and_then(|t| t.strip_prefix("targets.")) {
                Some(name) if targets.contains_key(name) => ForEach::Target(name.to_owned()),
                Some(name) => {
                    let names: Vec<&str> = targets.keys().map(String::as_str).collect();
                    let label = did_you_mean(name, &names);
                    cx.error(path.key("for_each"), format!("unknown target `{name}`")).label =
                        label;
                    ForEach::Target(name.to_owned())
                }
                None => {
                    cx.error(
                        path.key("for_each"),
                        format!("`for_each` must be a reference such as `{{{{targets.tenants}}}}` or a list, not `{text}`"),
                    );
                    ForEach::Items(Vec::new())
                }
            }
        }
    });
    let item_count = match &for_each {
        Some(ForEach::Items(items)) => Some(items.len() as u64),
        Some(ForEach::Target(name)) => match targets.get(name) {
            Some(Target::Static(items)) => Some(items.len() as u64),
            _ => None,
        },
        None => None,
    };
    let concurrency = rs.concurrency.unwrap_or(1);
    if rs.concurrency == Some(0) {
        cx.error(path.key("concurrency"), "`concurrency` must be at least 1");
    }
    if !fan_out {
        for field in ["concurrency", "max_failures"] {
            if cx.node(&path.key(field)).is_some() {
                cx.error_key(path.key(field), format!("`{field}` needs `for_each`"));
            }
        }
    }
    let max_failures = match rs.max_failures {
        None => MaxFailures::None,
        Some(RawMaxFailures::Count(n)) => {
            if let Some(count) = item_count
                && n > count
            {
                cx.error(
                    path.key("max_failures"),
                    format!("`max_failures` is {n} but the step has only {count} items"),
                );
            }
            MaxFailures::Count(n)
        }
        Some(RawMaxFailures::Percent(text)) => {
            match text
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
            {
                Some(p) if (0.0..=100.0).contains(&p) => MaxFailures::Percent(p),
                _ => {
                    cx.error(
                        path.key("max_failures"),
                        format!("`max_failures` must be a count or a percentage from 0% to 100%, not `{text}`"),
                    );
                    MaxFailures::None
                }
            }
        }
    };

    let mut updates = IndexMap::new();
    let public = match rs.public {
        None | Some(RawPublic::Flag(true)) => Public::Shown,
        Some(RawPublic::Flag(false)) => Public::Hidden,
        Some(RawPublic::Text(t)) => Public::Text(t),
        Some(RawPublic::Detail(d)) => {
            for (kind, text) in [("started", d.started), ("overrun", d.overrun)] {
                if let Some(text) = text {
                    updates.insert(kind.to_owned(), text);
                }
            }
            d.title.map(Public::Text).unwrap_or(Public::Shown)
        }
    };
    if rs.kind == Some(Kind::Announce)
        && !title_written
        && !public_unread
        && !matches!(public, Public::Text(_))
    {
        cx.error(
            path.key("kind"),
            format!(
                "`announce` step `{}` needs a `title` (the text to publish)",
                rs.id
            ),
        );
    }
    let mut seen = HashSet::new();
    for (j, o) in rs.outputs.iter().enumerate() {
        if !seen.insert(o.as_str()) {
            cx.error(
                path.key("outputs").index(j),
                format!("output `{o}` is listed twice"),
            );
        }
    }

    Some(Step {
        id: rs.id,
        kind: rs.kind?,
        title: rs.title,
        expected: rs.expected.map(|d| d.0),
        timeout: rs.timeout.map(|d| d.0),
        retries,
        checkpoint: rs.checkpoint,
        requires: rs.requires,
        preconditions,
        wait_for: rs.wait_for.map(|d| d.0),
        checks,
        until,
        interval: rs.interval.map(|d| d.0),
        with: rs.with,
        run,
        rollback,
        restore,
        on_failure,
        on_timeout: rs.on_timeout.unwrap_or_default(),
        reason: rs.reason,
        for_each,
        concurrency,
        max_failures,
        idempotent: rs.idempotent,
        public,
        updates,
        outputs: rs.outputs,
    })
}
