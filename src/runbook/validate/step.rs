//! One step: the rules of its fields and of its kind, its fan-out and what it shows,
//! read into the model's `Step`. The `with` of the built-in kinds is checked in `kinds`.

use super::*;

/// Where a step is and what it is: the rules below are worded with its id and kind.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) path: &'a FieldPath,
    pub(super) id: &'a str,
    /// `None` when the kind is missing or unknown (reported): the rules of kinds are then
    /// left out, and everything else about the step is still checked.
    pub(super) kind: Option<Kind>,
}

/// What is written on a step (a field with something in it), read once from the file:
/// rules about what a step has are decided on this, not on what could be read.
#[derive(Clone, Copy)]
pub(super) struct Written {
    pub(super) checks: bool,
    pub(super) run: bool,
    pub(super) with: bool,
    pub(super) timeout: bool,
    pub(super) reason: bool,
    pub(super) title: bool,
    pub(super) rollback: bool,
    pub(super) restore: bool,
    pub(super) for_each: bool,
    pub(super) interval: bool,
    pub(super) on_timeout: bool,
    pub(super) wait_for: bool,
    pub(super) preconditions: bool,
    /// Not a checkpoint (`checkpoint` written with a value that is not a boolean was
    /// reported as that, and is not held against the step again).
    pub(super) not_checkpoint: bool,
    /// `public` is written but could not be read (reported).
    pub(super) public_unread: bool,
}

impl Written {
    fn of(cx: &Ctx, path: &FieldPath, rs: &RawStep) -> Written {
        let written = |f: &str| cx.written(&path.key(f));
        Written {
            checks: written("checks"),
            run: written("run"),
            with: written("with"),
            timeout: written("timeout"),
            reason: written("reason"),
            title: written("title"),
            rollback: written("rollback"),
            restore: written("restore"),
            for_each: written("for_each") || written("on"),
            interval: written("interval"),
            on_timeout: written("on_timeout"),
            wait_for: written("wait_for"),
            preconditions: written("preconditions"),
            not_checkpoint: !rs.checkpoint
                && cx.node(&path.key("checkpoint")).is_none_or(|n| {
                    matches!(
                        n.value,
                        NodeValue::Scalar(Scalar::Null | Scalar::Bool(false), _)
                    )
                }),
            public_unread: rs.public.is_none() && written("public"),
        }
    }
}

/// A step read from the file, checked against the rules of the format; `None` when its
/// kind could not be read (everything else about it is still checked).
pub(super) fn validate_step(
    cx: &mut Ctx,
    path: &FieldPath,
    rs: RawStep,
    index_of: &HashMap<String, usize>,
    targets: &IndexMap<String, Target>,
    inventory: &Inventory,
) -> Option<Step> {
    check_requires(cx, path, &rs, index_of);
    let w = Written::of(cx, path, &rs);
    let retries = retries(rs.retries);
    let preconditions = conditions(
        cx,
        &path.key("preconditions"),
        rs.preconditions,
        true,
        index_of,
    );
    let at = At {
        path,
        id: &rs.id,
        kind: rs.kind,
    };
    let checks = conditions(cx, &path.key("checks"), rs.checks, false, index_of);
    let until = conditions(cx, &path.key("until"), rs.until, false, index_of);
    check_kind_fields(cx, at, &w, checks.is_empty(), until.is_empty());
    let run = rs
        .run
        .map(|a| Box::new(action(cx, &path.key("run"), a, false)));
    check_has_work(cx, at, &w);
    let rollback = rs
        .rollback
        .map(|a| Box::new(action(cx, &path.key("rollback"), a, true)));
    let restore = rs
        .restore
        .map(|a| Box::new(action(cx, &path.key("restore"), a, true)));
    let undo = [
        ("rollback", rollback.as_deref()),
        ("restore", restore.as_deref()),
    ];
    super::kinds::check(cx, at, &w, &rs.with, run.as_deref(), undo);
    let on_failure = rs.on_failure.unwrap_or_default();
    check_failure_policy(cx, at, &w, on_failure);
    let on = rs
        .on
        .as_ref()
        .map(|on| super::hosts::on_hosts(cx, path, on, inventory));
    if on.is_some() && cx.written(&path.key("for_each")) {
        cx.error_key(
            path.key("on"),
            "a step runs `on` hosts or `for_each` item, not both (a host step's items are its hosts)",
        );
    }
    if on.is_some()
        && let Some(kind @ (Kind::Approve | Kind::Announce | Kind::Close | Kind::Reopen)) = at.kind
    {
        cx.error_key(
            path.key("on"),
            format!(
                "a `{}` step is about the whole run: it cannot run `on` hosts",
                kind.as_str()
            ),
        );
    }
    let host_step = on.is_some();
    let between = conditions(
        cx,
        &path.key("between_waves"),
        rs.between_waves,
        false,
        index_of,
    );
    let rollout = super::hosts::rollout(
        cx,
        path,
        host_step,
        on.as_ref().map_or(0, Vec::len),
        rs.waves,
        between,
        rs.pause_between_waves.map(|d| d.0),
        rs.approve_between_waves,
    );
    for (field, a) in [
        ("run", run.as_deref()),
        ("rollback", rollback.as_deref()),
        ("restore", restore.as_deref()),
    ] {
        if matches!(a, Some(Action::Copy { .. })) && !host_step {
            cx.error_key(
                path.key(field).key("copy"),
                "`copy` uploads to hosts: give the step `on:`",
            );
        }
    }
    let for_each = match on {
        Some(hosts) => Some(ForEach::Hosts(hosts)),
        None => rs.for_each.map(|f| for_each(cx, path, f, targets)),
    };
    let concurrency = rs.concurrency.unwrap_or(1);
    let max_failures = fan_out(cx, path, &w, rs.concurrency, rs.max_failures, {
        for_each.as_ref().and_then(|f| item_count(f, targets))
    });
    let (public, updates) = public(cx, at, &w, rs.public);
    check_outputs(cx, path, &rs.outputs);

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
        rollout,
        item_label: rs.item_label,
        concurrency,
        max_failures,
        idempotent: rs.idempotent,
        public,
        updates,
        outputs: rs.outputs,
    })
}

/// The kind is there, each required step exists (and is not this one), and `expected`
/// fits in `timeout`.
fn check_requires(cx: &mut Ctx, path: &FieldPath, rs: &RawStep, index_of: &HashMap<String, usize>) {
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
}

fn retries(raw: Option<RawRetries>) -> Retries {
    match raw {
        None => Retries::default(),
        Some(RawRetries::Count(n)) => Retries {
            max: n,
            backoff: Duration::from_secs(10),
        },
        Some(RawRetries::Policy(p)) => Retries {
            max: p.max,
            backoff: p.backoff.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
        },
    }
}

/// Fields that belong to some kinds only: `checks`, `until`, `interval`, `on_timeout`,
/// and `wait_for` (with preconditions).
fn check_kind_fields(cx: &mut Ctx, at: At, w: &Written, no_checks: bool, no_until: bool) {
    let path = at.path;
    if let Some(kind) = at.kind
        && !no_checks
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
    let not = |k: Kind| at.kind.is_some_and(|kind| kind != k);
    if at.kind == Some(Kind::Wait) && cx.node(&path.key("until")).is_none() {
        cx.error(
            path.key("kind"),
            format!(
                "`wait` step `{}` needs `until:` conditions to wait for",
                at.id
            ),
        );
    }
    if !no_until && not(Kind::Wait) {
        cx.error_key(path.key("until"), "`until` belongs to `wait` steps");
    }
    if w.interval && not(Kind::Wait) {
        cx.error_key(path.key("interval"), "`interval` belongs to `wait` steps");
    }
    if w.on_timeout && not(Kind::Approve) {
        cx.error_key(
            path.key("on_timeout"),
            "`on_timeout` belongs to `approve` steps",
        );
    } else if w.on_timeout && !w.timeout {
        cx.error_key(
            path.key("on_timeout"),
            "`on_timeout` needs a `timeout` to wait for",
        );
    }
    if w.wait_for && !w.preconditions {
        cx.error_key(
            path.key("wait_for"),
            "`wait_for` needs `preconditions` to re-check",
        );
    }
}

/// Kinds whose work is a `run:` action (or `checks:`) have one.
fn check_has_work(cx: &mut Ctx, at: At, w: &Written) {
    if let Some(kind @ (Kind::Patch | Kind::Install)) = at.kind
        && !w.run
    {
        cx.error(
            at.path.key("kind"),
            format!(
                "step `{}` of kind `{}` has nothing to do: give it a `run:` action",
                at.id,
                kind.as_str()
            ),
        );
    }
    if at.kind == Some(Kind::Test) && !w.run && !w.checks {
        cx.error(
            at.path.key("kind"),
            format!(
                "`test` step `{}` needs `checks:` (or a `run:` action)",
                at.id
            ),
        );
    }
}

/// `restore` only on checkpoints; a `rollback` that `on_failure: continue` would ignore
/// says why.
fn check_failure_policy(cx: &mut Ctx, at: At, w: &Written, on_failure: OnFailure) {
    if w.restore && w.not_checkpoint {
        cx.error_key(
            at.path.key("restore"),
            format!(
                "`restore` is only for checkpoints: add `checkpoint: true` to step `{}`",
                at.id
            ),
        );
    }
    if on_failure == OnFailure::Continue && w.rollback && !w.reason {
        cx.error(
            at.path.key("on_failure"),
            format!(
                "step `{}` has a `rollback` but `on_failure: continue` ignores its failure; say why in `reason:` or choose another policy",
                at.id
            ),
        );
    }
}

/// Where a fan-out step's items come from: a list, or a target that exists.
fn for_each(
    cx: &mut Ctx,
    path: &FieldPath,
    raw: RawForEach,
    targets: &IndexMap<String, Target>,
) -> ForEach {
    match raw {
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
                    cx.error(path.key("for_each"), format!("unknown target `{name}`"))
                        .label = label;
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
    }
}

/// How many items a fan-out runs over, when the file says.
fn item_count(for_each: &ForEach, targets: &IndexMap<String, Target>) -> Option<u64> {
    match for_each {
        ForEach::Items(items) => Some(items.len() as u64),
        ForEach::Target(name) => match targets.get(name) {
            Some(Target::Static(items)) => Some(items.len() as u64),
            _ => None,
        },
        ForEach::Hosts(hosts) => Some(hosts.len() as u64),
    }
}

/// `concurrency` and `max_failures`: only with `for_each`, and within what it has.
fn fan_out(
    cx: &mut Ctx,
    path: &FieldPath,
    w: &Written,
    concurrency: Option<u32>,
    max_failures: Option<RawMaxFailures>,
    item_count: Option<u64>,
) -> MaxFailures {
    if concurrency == Some(0) {
        cx.error(path.key("concurrency"), "`concurrency` must be at least 1");
    }
    if !w.for_each {
        for field in ["concurrency", "max_failures", "item_label"] {
            if cx.node(&path.key(field)).is_some() {
                cx.error_key(
                    path.key(field),
                    format!("`{field}` needs `for_each` (or `on:` hosts)"),
                );
            }
        }
    }
    match max_failures {
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
    }
}

/// How the step shows on the status page, and its own update templates; an `announce`
/// step has a text to publish.
fn public(
    cx: &mut Ctx,
    at: At,
    w: &Written,
    raw: Option<RawPublic>,
) -> (Public, IndexMap<String, String>) {
    let mut updates = IndexMap::new();
    let public = match raw {
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
    if at.kind == Some(Kind::Announce)
        && !w.title
        && !w.public_unread
        && !matches!(public, Public::Text(_))
    {
        cx.error(
            at.path.key("kind"),
            format!(
                "`announce` step `{}` needs a `title` (the text to publish)",
                at.id
            ),
        );
    }
    (public, updates)
}

/// Each output listed once.
fn check_outputs(cx: &mut Ctx, path: &FieldPath, outputs: &[String]) {
    let mut seen = HashSet::new();
    for (j, o) in outputs.iter().enumerate() {
        if !seen.insert(o.as_str()) {
            cx.error(
                path.key("outputs").index(j),
                format!("output `{o}` is listed twice"),
            );
        }
    }
}
