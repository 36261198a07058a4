//! Raw (serde) runbook → validated `Runbook`, collecting every problem with its place.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use indexmap::IndexMap;
use serde_json::Value;

use super::code::{self, Code};
use super::de::DeError;
use super::model::*;
use super::raw::*;
use super::template;
use super::yaml::{Node, NodeValue, Pos, Scalar, Span, Style};
use crate::diagnostic::{Diagnostic, FieldPath, Seg};
use crate::suggest::did_you_mean;

/// Top-level fields of a runbook, for unknown-field suggestions.
const TOP_FIELDS: &[&str] = &[
    "runbook",
    "title",
    "summary",
    "window",
    "status_page",
    "vars",
    "secrets",
    "targets",
    "steps",
];

/// Values `{{run.*}}` offers.
pub const RUN_FIELDS: &[&str] = &["id", "runbook", "started_at", "operator"];
/// Values `{{window.*}}` offers.
pub const WINDOW_FIELDS: &[&str] = &["start", "end", "duration", "timezone"];
/// Roots a template reference may start with.
const ROOTS: &[&str] = &[
    "vars", "targets", "secrets", "run", "window", "steps", "item",
];

/// Collects problems and knows where each field path was written.
pub(super) struct Ctx<'a> {
    root: &'a Node,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    pub fn new(root: &'a Node) -> Self {
        Ctx {
            root,
            diags: Vec::new(),
        }
    }

    /// The node at a path, or the deepest node on the way there.
    fn locate(&self, path: &FieldPath) -> (&'a Node, Option<&'a Node>, bool) {
        let mut node = self.root;
        let mut key = None;
        for seg in &path.0 {
            let next = match seg {
                Seg::Key(k) => node.entry(k).map(|(kn, v)| {
                    key = Some(kn);
                    v
                }),
                Seg::Index(i) => node.item(*i).inspect(|_| key = None),
            };
            match next {
                Some(n) => node = n,
                None => return (node, None, false),
            }
        }
        (node, key, true)
    }

    /// Reports a problem with the value at `path`.
    pub fn error(&mut self, path: FieldPath, message: impl Into<String>) -> &mut Diagnostic {
        let (node, _, found) = self.locate(&path);
        let span = if found {
            node.span
        } else {
            node.span.at_start()
        };
        self.push(Diagnostic::at(path, message).with_span(span))
    }

    /// Reports a problem with the key that names `path` (unknown or misplaced fields).
    pub fn error_key(&mut self, path: FieldPath, message: impl Into<String>) -> &mut Diagnostic {
        let (node, key, found) = self.locate(&path);
        let span = match (found, key) {
            (true, Some(k)) => k.span,
            _ => node.span.at_start(),
        };
        self.push(Diagnostic::at(path, message).with_span(span))
    }

    /// Reports a problem at an exact place.
    pub fn error_at(&mut self, path: FieldPath, span: Span, message: impl Into<String>) {
        self.push(Diagnostic::at(path, message).with_span(span));
    }

    fn push(&mut self, d: Diagnostic) -> &mut Diagnostic {
        self.diags.push(d);
        self.diags.last_mut().expect("just pushed")
    }

    pub fn node(&self, path: &FieldPath) -> Option<&'a Node> {
        let (node, _, found) = self.locate(path);
        found.then_some(node)
    }

    /// Unwraps a lenient value, reporting its serde error in terms people use.
    fn lenient<T>(&mut self, base: FieldPath, value: Option<Lenient<T>>) -> Option<T> {
        let Lenient { value, errors } = value?;
        for e in errors {
            self.serde_error(base.join(&e.path), &e.problem);
        }
        value
    }

    /// Whether the field at `path` is there (with a value other than null). Rules about
    /// what a step has are decided on this, not on what could be read: a field with a
    /// bad value is reported once, as that, and not again as missing.
    fn present(&self, path: &FieldPath) -> bool {
        self.node(path)
            .is_some_and(|n| !matches!(n.value, NodeValue::Scalar(Scalar::Null, _)))
    }

    /// Whether the field at `path` is written with something in it: a value, or a list or
    /// mapping that is not empty.
    fn written(&self, path: &FieldPath) -> bool {
        self.node(path).is_some_and(|n| match &n.value {
            NodeValue::Scalar(Scalar::Null, _) => false,
            NodeValue::Seq(items) => !items.is_empty(),
            NodeValue::Map(entries) => !entries.is_empty(),
            NodeValue::Scalar(..) => true,
        })
    }

    /// Words serde's problems as ours: unknown fields and values get a suggestion.
    fn serde_error(&mut self, path: FieldPath, problem: &DeError) {
        match problem {
            DeError::UnknownField { name, expected } => {
                let label = did_you_mean(name, expected).or_else(|| {
                    (!expected.is_empty() && expected.len() <= 8)
                        .then(|| format!("known fields: {}", expected.join(", ")))
                });
                self.error_key(path, format!("unknown field `{name}`"))
                    .label = label;
            }
            DeError::UnknownVariant { name, expected } => {
                let field = match path.0.last() {
                    Some(Seg::Key(k)) => k.clone(),
                    _ => "value".into(),
                };
                let msg = if field == "kind" {
                    format!("unknown step kind `{name}`")
                } else {
                    format!("unknown value `{name}` for `{field}`")
                };
                let label = did_you_mean(name, expected)
                    .unwrap_or_else(|| format!("expected one of: {}", expected.join(", ")));
                self.error(path, msg).label = Some(label);
            }
            other => {
                self.error(path, other.message());
            }
        }
    }
}

fn is_id(s: &str, allow_underscore: bool) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '-'
                || (allow_underscore && c == '_')
        })
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validates a deserialized runbook against the rules of the format.
pub(super) fn validate(raw: RawRunbook, root: &Node) -> Result<Runbook, Vec<Diagnostic>> {
    let mut cx = Ctx::new(root);
    let top = FieldPath::root();

    if let NodeValue::Map(entries) = &root.value {
        for (key, _) in entries {
            let name = key.as_str().unwrap_or_default();
            if !TOP_FIELDS.contains(&name) {
                let label = did_you_mean(name, TOP_FIELDS);
                cx.error_key(top.key(name), format!("unknown field `{name}`"))
                    .label = label;
            }
        }
    }

    let id = match cx.lenient(top.key("runbook"), raw.runbook) {
        Some(id) => {
            if !is_id(&id, false) {
                cx.error(
                    top.key("runbook"),
                    format!("runbook id `{id}` must be lowercase letters, digits and `-`"),
                );
            }
            id
        }
        None => {
            if cx.node(&top.key("runbook")).is_none() {
                cx.error(top.clone(), "missing field `runbook` (the runbook id)");
            }
            String::new()
        }
    };
    let title = cx
        .lenient(top.key("title"), raw.title)
        .unwrap_or_else(|| id.clone());
    let summary = cx.lenient(top.key("summary"), raw.summary);
    let raw_window = cx_lenient(&mut cx, "window", raw.window);
    let window = validate_window(&mut cx, raw_window);
    let status_page = match cx_lenient(&mut cx, "status_page", raw.status_page) {
        Some(sp) => {
            let mut seen = HashSet::new();
            for (i, c) in sp.components.iter().enumerate() {
                let path = top.key("status_page").key("components").index(i);
                if c.trim().is_empty() {
                    cx.error(path, "a component name is empty");
                } else if !seen.insert(c.as_str()) {
                    cx.error(path, format!("component `{c}` is listed twice"));
                }
            }
            for key in sp.updates.keys() {
                if !UPDATE_KINDS.contains(&key.as_str()) {
                    cx.error(
                        top.key("status_page").key("updates").key(key),
                        format!("unknown kind of update `{key}`"),
                    );
                    cx.diags.last_mut().expect("pushed").label = did_you_mean(key, UPDATE_KINDS)
                        .or_else(|| Some(format!("known: {}", UPDATE_KINDS.join(", "))));
                }
            }
            let mut overrun_after = Margin::default();
            let mut overrun_every = OVERRUN_EVERY;
            if let Some(o) = &sp.overrun {
                let path = top.key("status_page").key("overrun");
                if let Some(after) = &o.after {
                    let t = after.trim();
                    let neither = || {
                        format!("`{after}` is neither a duration (`5m`) nor a percentage (`20%`)")
                    };
                    let parsed = match t.strip_suffix('%') {
                        Some(p) => p
                            .trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|p| p.is_finite() && *p >= 0.0)
                            .map(Margin::Percent)
                            .ok_or_else(neither),
                        // A duration over the limit is told as that.
                        None => crate::duration::parse_duration(t)
                            .map(Margin::Fixed)
                            .map_err(|e| if e.contains("too long") { e } else { neither() }),
                    };
                    match parsed {
                        Ok(m) => overrun_after = m,
                        Err(e) => {
                            cx.error(path.key("after"), e);
                        }
                    }
                }
                if let Some(every) = &o.every {
                    if every.0.is_zero() {
                        cx.error(path.key("every"), "`every` must be more than zero");
                    } else {
                        overrun_every = every.0;
                    }
                }
            }
            StatusPage {
                overrun_after,
                overrun_every,
                updates: sp.updates,
                components: sp.components,
                announce_before: sp.announce_before.map(|d| d.0),
            }
        }
        None => StatusPage::default(),
    };
    let vars = cx_lenient(&mut cx, "vars", raw.vars).unwrap_or_default();
    let secrets = cx_lenient(&mut cx, "secrets", raw.secrets).unwrap_or_default();
    {
        let mut seen = HashSet::new();
        for (i, s) in secrets.iter().enumerate() {
            let path = top.key("secrets").index(i);
            if !is_env_name(s) {
                cx.error(
                    path,
                    format!("secret `{s}` is not an environment variable name"),
                );
            } else if !seen.insert(s.as_str()) {
                cx.error(path, format!("secret `{s}` is listed twice"));
            }
        }
    }
    let targets: IndexMap<String, Target> = cx_lenient(&mut cx, "targets", raw.targets)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, t)| {
            let t = match t {
                RawTarget::List(items) => Target::Static(items),
                RawTarget::Query(q) => Target::Query {
                    sql: q.sql,
                    database: q.database,
                },
            };
            (name, t)
        })
        .collect();
    for name in targets.keys() {
        if !is_id(name, true) {
            cx.error_key(
                top.key("targets").key(name),
                format!("target name `{name}` must be lowercase letters, digits, `-` and `_`"),
            );
        }
    }

    // Steps: ids first (from the nodes, so a broken step still lends its id to
    // references), then each step read and validated on its own.
    let step_nodes: &[Node] = match cx.lenient(top.key("steps"), raw.steps) {
        Some(StepList(nodes)) => {
            if nodes.is_empty() {
                cx.error(top.key("steps"), "a runbook needs at least one step");
            }
            nodes
        }
        None => {
            if cx.node(&top.key("steps")).is_none() {
                cx.error(top.clone(), "missing field `steps`");
            }
            &[]
        }
    };
    let all_ids: Vec<Option<&str>> = step_nodes
        .iter()
        .map(|n| n.entry("id").and_then(|(_, v)| v.as_str()))
        .collect();

    // Ids: well-formed and unique.
    let mut index_of: HashMap<String, usize> = HashMap::with_capacity(all_ids.len());
    for (i, id) in all_ids.iter().enumerate() {
        let Some(id) = id else { continue };
        let path = top.key("steps").index(i).key("id");
        if !is_id(id, true) {
            cx.error(
                path.clone(),
                format!("step id `{id}` must start with a lowercase letter or digit and use only lowercase letters, digits, `-` and `_`"),
            );
        }
        if let Some(&first) = index_of.get(*id) {
            let line = cx
                .node(&top.key("steps").index(first).key("id"))
                .map(|n| n.span.start.line)
                .unwrap_or(0);
            cx.error(path, format!("duplicate step id `{id}`")).label =
                Some(format!("first used on line {line}"));
        } else {
            index_of.insert((*id).to_owned(), i);
        }
    }

    // Steps that did not parse stay as `None`, so indexes keep matching the file.
    let steps: Vec<Option<Step>> = step_nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let path = top.key("steps").index(i);
            let rs = cx.lenient(path.clone(), Some(lenient::<Box<RawStep>>(node)))?;
            validate_step(&mut cx, &path, *rs, &index_of, &targets)
        })
        .collect();

    // A cycle is reported, and templates are still checked (but not for running later).
    let (order, cyclic) = order_steps(&mut cx, &steps, &index_of);
    let scope = Scope {
        vars: &vars,
        secrets: &secrets,
        steps: &steps,
        index_of: &index_of,
        ids: &all_ids,
        position: order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect(),
        cyclic,
    };
    check_top_templates(&mut cx, &scope);
    for i in 0..steps.len() {
        check_step_templates(&mut cx, &scope, i);
    }

    if cx.diags.is_empty() {
        let steps = steps.into_iter().flatten().collect();
        Ok(Runbook {
            id,
            title,
            summary,
            window,
            status_page,
            vars,
            secrets,
            targets,
            steps,
            order,
        })
    } else {
        Err(cx.diags)
    }
}

fn cx_lenient<T>(cx: &mut Ctx, field: &str, value: Option<Lenient<T>>) -> Option<T> {
    cx.lenient(FieldPath::root().key(field), value)
}

fn validate_window(cx: &mut Ctx, raw: Option<RawWindow>) -> Window {
    let path = FieldPath::root().key("window");
    let Some(raw) = raw else {
        return Window {
            start: None,
            duration: None,
            timezone: Tz::UTC,
        };
    };
    let timezone = match &raw.timezone {
        None => Tz::UTC,
        Some(name) => match name.parse::<Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
                let label = did_you_mean(name, &names);
                cx.error(
                    path.key("timezone"),
                    format!("unknown time zone `{name}`; use an IANA name such as `Europe/London`"),
                )
                .label = label;
                Tz::UTC
            }
        },
    };
    let start = raw
        .start
        .as_ref()
        .and_then(|s| match parse_timestamp(s, timezone) {
            Ok(t) => Some(t),
            Err(msg) => {
                cx.error(path.key("start"), msg);
                None
            }
        });
    let duration = raw.duration.map(|d| d.0);
    if duration.is_some_and(|d| d.is_zero()) {
        cx.error(
            path.key("duration"),
            "the window duration must be more than zero",
        );
    }
    Window {
        start,
        duration,
        timezone,
    }
}

/// RFC 3339, or a local date-time read in `tz` (`2026-11-24T19:00:00`, `2026-11-24 19:00`).
pub fn parse_timestamp(text: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        format!(
            "invalid timestamp `{text}`; write it like `2026-11-24T19:00:00Z` (RFC 3339), or without an offset to use the window's time zone"
        )
    };
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .ok_or_else(bad)?;
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(..) => Err(format!(
            "`{text}` happens twice in {tz} (clocks go back); add an offset such as `+01:00`"
        )),
        chrono::LocalResult::None => Err(format!(
            "`{text}` does not exist in {tz} (clocks go forward); pick another time"
        )),
    }
}

fn validate_step(
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
        for p in super::with::problems(kind, with) {
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
        let fields = super::with::required_fields(kind);
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

fn texts(m: Option<IndexMap<String, Text>>) -> IndexMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn http(h: RawHttp) -> HttpCheck {
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
fn exactly_one(
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
fn misplaced(cx: &mut Ctx, path: &FieldPath, kind: &str, fields: &[(&str, bool, &str)]) {
    for (field, set, owner) in fields {
        if *set && kind != *owner {
            cx.error_key(
                path.key(field),
                format!("`{field}` goes with `{owner}`, not `{kind}`"),
            );
        }
    }
}

fn conditions(
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
            "http" => Check::Http(http(c.http.expect("kind is http"))),
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

fn action(cx: &mut Ctx, path: &FieldPath, a: RawAction, undo: bool) -> Action {
    let allowed = if undo {
        "`kind` (with `with`), `shell`, `sql` or `http`"
    } else {
        "`shell`, `sql` or `http`"
    };
    // What is written decides; a field whose value could not be read is reported.
    let w = |f: &str| cx.present(&path.key(f));
    let fields = [
        ("kind", w("kind")),
        ("shell", w("shell")),
        ("sql", w("sql")),
        ("http", w("http")),
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
        _ => true,
    };
    let kind = kind.filter(|_| read);
    let kind = match kind {
        Some("kind") if !undo => {
            cx.error_key(
                path.key("kind"),
                "`run` takes `shell`, `sql` or `http`; the step's own `kind` gives its built-in behaviour",
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
        _ => Action::Http(http(a.http.expect("kind is http"))),
    }
}

/// Orders steps: file order, with each step's `requires` placed before it. Reports cycles
/// (and says whether there was one: the order then breaks it somewhere).
fn order_steps(
    cx: &mut Ctx,
    steps: &[Option<Step>],
    index_of: &HashMap<String, usize>,
) -> (Vec<usize>, bool) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    let mut cyclic = false;
    for start in 0..steps.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative depth-first search: (step, next requirement to visit).
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Active;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            let reqs = steps[i]
                .as_ref()
                .map(|s| s.requires.as_slice())
                .unwrap_or(&[]);
            if *next < reqs.len() {
                let r = *next;
                *next += 1;
                // Unknown and self requirements were reported by `validate_step`.
                let Some(&j) = index_of.get(&reqs[r]).filter(|&&j| j != i) else {
                    continue;
                };
                match mark[j] {
                    Mark::New => {
                        mark[j] = Mark::Active;
                        stack.push((j, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|&(s, _)| s == j).unwrap_or(0);
                        let id = |s: usize| steps[s].as_ref().map(|s| s.id.as_str()).unwrap_or("?");
                        let mut names: Vec<&str> =
                            stack[from..].iter().map(|&(s, _)| id(s)).collect();
                        names.push(id(j));
                        let path = FieldPath::root()
                            .key("steps")
                            .index(i)
                            .key("requires")
                            .index(r);
                        cx.error(path, format!("dependency cycle: {}", names.join(" → ")));
                        cyclic = true;
                    }
                    Mark::Done => {}
                }
            } else {
                mark[i] = Mark::Done;
                order.push(i);
                stack.pop();
            }
        }
    }
    (order, cyclic)
}

/// What a template in a given field may refer to.
struct Scope<'a> {
    vars: &'a IndexMap<String, Value>,
    secrets: &'a [String],
    steps: &'a [Option<Step>],
    index_of: &'a HashMap<String, usize>,
    /// Each step's id as written (a step that did not read still has one).
    ids: &'a [Option<&'a str>],
    /// Step index → position in execution order.
    position: HashMap<usize, usize>,
    /// The steps' requirements have a cycle (reported): there is no order to check.
    cyclic: bool,
}

/// Where a template is written, which decides what it may refer to.
#[derive(Clone, Copy)]
struct Site {
    /// Index of the step the field belongs to, if any.
    step: Option<usize>,
    /// Public text: shown to customers, so secrets are forbidden.
    public: bool,
    /// `{{item}}` is defined (a fan-out step's `run`, `with` and `rollback`).
    item: bool,
    /// Rollback and restore run after the step: its own outputs exist.
    own_outputs: bool,
    /// A public update template: the update's own values exist (`title`, `step`, `eta` ...).
    update: bool,
}

/// Values a public update template may use besides `vars`, `run` and `window`.
pub const UPDATE_ROOTS: &[&str] = &["title", "summary", "runbook", "eta", "components", "step"];
/// Values `{{step.*}}` offers in an update template.
pub const UPDATE_STEP_FIELDS: &[&str] = &["id", "title", "number", "total"];

fn check_top_templates(cx: &mut Ctx, scope: &Scope) {
    let public = Site {
        step: None,
        public: true,
        item: false,
        own_outputs: false,
        update: false,
    };
    for field in ["title", "summary"] {
        let path = FieldPath::root().key(field);
        if let Some(node) = cx.node(&path) {
            check_node(cx, scope, public, path, node);
        }
    }
    let path = FieldPath::root().key("status_page").key("updates");
    if let Some(node) = cx.node(&path) {
        let update = Site {
            update: true,
            ..public
        };
        check_node(cx, scope, update, path, node);
    }
    let internal = Site {
        public: false,
        ..public
    };
    let path = FieldPath::root().key("targets");
    if let Some(node) = cx.node(&path) {
        check_node(cx, scope, internal, path, node);
    }
}

fn check_step_templates(cx: &mut Ctx, scope: &Scope, i: usize) {
    // From the file, so that a step with a problem of its own is checked too.
    let path = FieldPath::root().key("steps").index(i);
    let Some(node) = cx.node(&path) else { return };
    let fan_out = cx.written(&path.key("for_each"));
    let NodeValue::Map(entries) = &node.value else {
        return;
    };
    for (key, value) in entries {
        let field = key.as_str().unwrap_or_default();
        let site = Site {
            step: Some(i),
            public: matches!(field, "title" | "public"),
            // Each item's work is everything the step does: its preconditions, `run`
            // (or built-in `with`), `until`, checks, and its `rollback` and a
            // checkpoint's `restore` (per item that succeeded).
            item: fan_out
                && matches!(
                    field,
                    "run" | "rollback" | "with" | "restore" | "preconditions" | "checks" | "until"
                ),
            own_outputs: matches!(field, "rollback" | "restore"),
            update: false,
        };
        match (field, &value.value) {
            ("id" | "kind" | "requires" | "on_failure" | "outputs" | "for_each", _) => {}
            // `public: { title, started, overrun }`: the last two are update templates.
            ("public", NodeValue::Map(detail)) => {
                for (k, v) in detail {
                    let k = k.as_str().unwrap_or_default();
                    let site = Site {
                        update: k != "title",
                        ..site
                    };
                    check_node(cx, scope, site, path.key(field).key(k), v);
                }
            }
            _ => check_node(cx, scope, site, path.key(field), value),
        }
    }
}

/// Checks every string under `node` that holds a template. The path below `base` is
/// kept as borrowed segments and only turned into a `FieldPath` when a string needs it.
fn check_node(cx: &mut Ctx, scope: &Scope, site: Site, base: FieldPath, node: &Node) {
    let mut below = Vec::new();
    walk(cx, scope, site, &base, &mut below, node);
}

enum Below<'a> {
    Key(&'a str),
    Index(usize),
}

fn walk<'a>(
    cx: &mut Ctx,
    scope: &Scope,
    site: Site,
    base: &FieldPath,
    below: &mut Vec<Below<'a>>,
    node: &'a Node,
) {
    match &node.value {
        NodeValue::Scalar(Scalar::Str(s), style) => {
            let template = template::is_template(s);
            if !site.public && !template {
                return;
            }
            let mut path = base.clone();
            path.0.extend(below.iter().map(|b| match b {
                Below::Key(k) => Seg::Key((*k).to_owned()),
                Below::Index(i) => Seg::Index(*i),
            }));
            if site.public {
                check_public_text(cx, scope, &path, node, s);
            }
            if template {
                let code = code_of(cx, &path);
                check_string(cx, scope, site, &path, node, s, *style, code);
            }
        }
        NodeValue::Scalar(..) => {}
        // Depth is bounded by `yaml::MAX_DEPTH`, so recursion is safe.
        NodeValue::Seq(items) => {
            for (i, n) in items.iter().enumerate() {
                below.push(Below::Index(i));
                walk(cx, scope, site, base, below, n);
                below.pop();
            }
        }
        NodeValue::Map(entries) => {
            for (k, v) in entries {
                below.push(Below::Key(k.as_str().unwrap_or_default()));
                walk(cx, scope, site, base, below, v);
                below.pop();
            }
        }
    }
}

/// The language of a field whose templates insert quoted values: an action's or a
/// condition's `shell` or `sql`, a target's `sql` (with the database its `database`
/// names, when written as a URL).
fn code_of(cx: &Ctx, path: &FieldPath) -> Option<Code> {
    let segs: Vec<Option<&str>> = path
        .0
        .iter()
        .map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    let field = match segs.as_slice() {
        [Some("targets"), Some(_), Some(f @ "sql")] => *f,
        [
            Some("steps"),
            None,
            Some("run" | "rollback" | "restore"),
            Some(f),
        ] => *f,
        [
            Some("steps"),
            None,
            Some("preconditions" | "checks" | "until"),
            None,
            Some(f),
        ] => *f,
        _ => return None,
    };
    match field {
        "shell" => Some(Code::Shell),
        "sql" => {
            let mut database = path.clone();
            database.0.pop();
            let engine = match cx.node(&database.key("database")).map(|n| &n.value) {
                Some(NodeValue::Scalar(Scalar::Str(url), _)) => crate::sql::engine(url).ok(),
                _ => None,
            };
            Some(Code::Sql(engine))
        }
        _ => None,
    }
}

/// The line and column (1-based, in characters) of a byte offset in text.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The place in the file of a position inside a scalar's text.
fn place_in_scalar(node: &Node, style: Style, line: usize, col: usize, len: usize) -> Span {
    let (l, c) = (node.span.start.line as usize, node.span.start.col as usize);
    let c = match style {
        Style::Plain if line == 1 => c + col - 1,
        Style::Quoted if line == 1 => c + col,
        _ => return node.span,
    };
    Span {
        start: Pos::new(l, c),
        end: Pos::new(l, c + len),
    }
}

/// Finds how long the expressions of a template's first line are, in characters. The
/// expressions come in order; each is found from the one before, so that a line with a
/// great many of them is read once.
struct Expressions<'a> {
    line: &'a str,
    /// A character column and its byte offset in `line`.
    at: (usize, usize),
}

impl<'a> Expressions<'a> {
    fn new(text: &'a str) -> Self {
        Expressions {
            line: text.lines().next().unwrap_or_default(),
            at: (1, 0),
        }
    }

    /// The length of the expression at 1-based `line` and `col` (only line 1 is placed
    /// precisely; elsewhere 1).
    fn len(&mut self, line: usize, col: usize) -> usize {
        if line != 1 {
            return 1;
        }
        let (mut c, mut byte) = if self.at.0 <= col { self.at } else { (1, 0) };
        for ch in self.line[byte..].chars() {
            if c >= col {
                break;
            }
            c += 1;
            byte += ch.len_utf8();
        }
        self.at = (c, byte);
        let rest = &self.line[byte..];
        rest.find("}}")
            .map(|e| rest[..e + 2].chars().count())
            .unwrap_or(1)
    }
}

#[allow(clippy::too_many_arguments)]
fn check_string(
    cx: &mut Ctx,
    scope: &Scope,
    site: Site,
    path: &FieldPath,
    node: &Node,
    text: &str,
    style: Style,
    code: Option<Code>,
) {
    let (refs, helpers) = match template::references(text) {
        Ok(r) => r,
        Err(e) => {
            let span = place_in_scalar(node, style, e.line, e.col, 1);
            let why = if text.matches("{{").count() > text.matches("}}").count() {
                "`{{` is not closed by `}}`".to_owned()
            } else {
                e.message
                    .replace("invalid handlebars syntax: ", "unexpected syntax, ")
            };
            cx.error_at(path.clone(), span, format!("invalid template: {why}"));
            return;
        }
    };
    let mut expressions = Expressions::new(text);
    for h in helpers {
        let name = h.segments.join(".");
        if !template::HELPERS.contains(&name.as_str()) {
            let span = place_in_scalar(node, style, h.line, h.col, expressions.len(h.line, h.col));
            let label = did_you_mean(&name, template::HELPERS);
            cx.error_at(
                path.clone(),
                span,
                format!("unknown template helper `{name}`"),
            );
            cx.diags.last_mut().expect("pushed").label = label;
            continue;
        }
        // `raw` and `ident` say how a value is quoted: only where values are quoted.
        let misplaced = match (name.as_str(), code) {
            ("ident", Some(Code::Sql(_))) | ("raw", Some(_)) => None,
            ("ident", _) => Some("`ident` quotes an SQL identifier: it is for `sql` fields"),
            ("raw", None) => {
                Some("`raw` is for `shell` and `sql` fields; here values are inserted as they are")
            }
            _ => None,
        };
        if let Some(msg) = misplaced {
            let len = expressions.len(h.line, h.col);
            let span = place_in_scalar(node, style, h.line, h.col, len);
            cx.error_at(path.clone(), span, msg);
        }
    }
    for m in code.map(|c| code::misplaced(text, c)).unwrap_or_default() {
        let (line, col) = line_col(text, m.start);
        let len = text[m.start..m.end].chars().count();
        let span = place_in_scalar(node, style, line, col, len);
        cx.error_at(path.clone(), span, m.message);
        cx.diags.last_mut().expect("pushed").label = Some(m.label);
    }
    let mut expressions = Expressions::new(text);
    for r in refs {
        if let Err((msg, label)) = check_reference(scope, site, &r.segments) {
            let span = place_in_scalar(node, style, r.line, r.col, expressions.len(r.line, r.col));
            cx.error_at(path.clone(), span, msg);
            cx.diags.last_mut().expect("pushed").label = label;
        }
    }
}

type RefError = (String, Option<String>);

fn check_reference(scope: &Scope, site: Site, segs: &[String]) -> Result<(), RefError> {
    if segs.is_empty() {
        return Ok(());
    }
    let full = segs.join(".");
    let names = |it: &mut dyn Iterator<Item = &str>| it.map(str::to_owned).collect::<Vec<_>>();
    let member = |root: &str, name: Option<&String>, known: Vec<String>| -> Result<(), RefError> {
        let noun = match root {
            "vars" => "variable",
            "targets" => "target",
            "secrets" => "secret",
            "run" => "run value",
            "step" => "step value",
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
    };
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
        "vars" => {
            member(
                "vars",
                segs.get(1),
                names(&mut scope.vars.keys().map(String::as_str)),
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
                    "`{{item}}` is only defined in what a step with `for_each` does for each item: its `run`, `with`, `preconditions`, `checks`, `until`, `rollback` and `restore`".into(),
                    None,
                ))
            }
        }
        "steps" => check_step_reference(scope, site, segs, &full),
        other => {
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
    }
}

fn check_step_reference(
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

/// Public text must not mention a secret, by reference or by name.
fn check_public_text(cx: &mut Ctx, scope: &Scope, path: &FieldPath, node: &Node, text: &str) {
    for secret in scope.secrets {
        let mut from = 0;
        while let Some(found) = text[from..].find(secret.as_str()) {
            let at = from + found;
            let end = at + secret.len();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let before = text[..at].chars().next_back();
            let after = text[end..].chars().next();
            let referenced = text[..at].ends_with("secrets.");
            if !word(before) && !word(after) && !referenced {
                let col = text[..at].chars().count() + 1;
                let style = match &node.value {
                    NodeValue::Scalar(_, s) => *s,
                    _ => Style::Block,
                };
                let line = text[..at].matches('\n').count() + 1;
                let span = place_in_scalar(node, style, line, col, secret.chars().count());
                cx.error_at(
                    path.clone(),
                    span,
                    format!("secret `{secret}` named in public text"),
                );
                cx.diags.last_mut().expect("pushed").label =
                    Some("public text is shown to customers".into());
                break;
            }
            from = end;
        }
    }
}
