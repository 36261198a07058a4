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

mod actions;
pub(crate) mod hosts;
mod kinds;
mod notify;
mod order;
mod references;
mod status_page;
mod step;
mod templates;
mod window;

use actions::*;
use order::*;
use references::*;
use status_page::status_page;
use step::*;
use templates::*;
pub use window::parse_timestamp;
use window::*;

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
    "hosts",
    "inventory",
    "ssh",
    "notify",
    "steps",
];

/// Values `{{run.*}}` offers.
pub const RUN_FIELDS: &[&str] = &["id", "runbook", "started_at", "operator"];
/// Values `{{window.*}}` offers.
pub const WINDOW_FIELDS: &[&str] = &["start", "end", "duration", "timezone"];
/// Roots a template reference may start with.
const ROOTS: &[&str] = &[
    "vars", "targets", "secrets", "run", "window", "steps", "item", "host",
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
    pub(super) fn locate(&self, path: &FieldPath) -> (&'a Node, Option<&'a Node>, bool) {
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

    pub(super) fn push(&mut self, d: Diagnostic) -> &mut Diagnostic {
        self.diags.push(d);
        self.diags.last_mut().expect("just pushed")
    }

    pub fn node(&self, path: &FieldPath) -> Option<&'a Node> {
        let (node, _, found) = self.locate(path);
        found.then_some(node)
    }

    /// Unwraps a lenient value, reporting its serde error in terms people use.
    pub(super) fn lenient<T>(&mut self, base: FieldPath, value: Option<Lenient<T>>) -> Option<T> {
        let Lenient { value, errors } = value?;
        for e in errors {
            self.serde_error(base.join(&e.path), &e.problem);
        }
        value
    }

    /// Whether the field at `path` is there (with a value other than null). Rules about
    /// what a step has are decided on this, not on what could be read: a field with a
    /// bad value is reported once, as that, and not again as missing.
    pub(super) fn present(&self, path: &FieldPath) -> bool {
        self.node(path)
            .is_some_and(|n| !matches!(n.value, NodeValue::Scalar(Scalar::Null, _)))
    }

    /// Whether the field at `path` is written with something in it: a value, or a list or
    /// mapping that is not empty.
    pub(super) fn written(&self, path: &FieldPath) -> bool {
        self.node(path).is_some_and(|n| match &n.value {
            NodeValue::Scalar(Scalar::Null, _) => false,
            NodeValue::Seq(items) => !items.is_empty(),
            NodeValue::Map(entries) => !entries.is_empty(),
            NodeValue::Scalar(..) => true,
        })
    }

    /// Words serde's problems as ours: unknown fields and values get a suggestion.
    pub(super) fn serde_error(&mut self, path: FieldPath, problem: &DeError) {
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
    let status_page = cx_lenient(&mut cx, "status_page", raw.status_page)
        .map_or_else(StatusPage::default, |sp| status_page(&mut cx, sp));
    let vars = cx_lenient(&mut cx, "vars", raw.vars).unwrap_or_default();
    let secrets = cx_lenient(&mut cx, "secrets", raw.secrets).unwrap_or_default();
    check_secrets(&mut cx, &secrets);
    let raw_targets = cx_lenient(&mut cx, "targets", raw.targets);
    let targets = targets(&mut cx, raw_targets);
    let raw_hosts = cx_lenient(&mut cx, "hosts", raw.hosts);
    let inventory_file = cx_lenient(&mut cx, "inventory", raw.inventory);
    let inventory = hosts::inventory(&mut cx, raw_hosts, inventory_file);
    let raw_ssh = cx_lenient(&mut cx, "ssh", raw.ssh);
    let ssh = hosts::ssh(&mut cx, raw_ssh);
    let raw_notify = cx_lenient(&mut cx, "notify", raw.notify);
    let notify = notify::notify(&mut cx, raw_notify.unwrap_or_default(), &vars, &secrets);

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

    let index_of = step_ids(&mut cx, &all_ids);

    // Steps that did not parse stay as `None`, so indexes keep matching the file.
    let steps: Vec<Option<Step>> = step_nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let path = top.key("steps").index(i);
            let rs = cx.lenient(path.clone(), Some(lenient::<Box<RawStep>>(node)))?;
            validate_step(&mut cx, &path, *rs, &index_of, &targets, &inventory)
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
        // In place: every step parsed (one that did not left a diagnostic), and
        // `Option<Step>` is the size of a `Step`, so the list is not copied.
        #[expect(
            clippy::filter_map_identity,
            reason = "`flatten` is not collected in place: it would copy every step"
        )]
        let steps = steps.into_iter().filter_map(|s| s).collect();
        Ok(Runbook {
            id,
            title,
            summary,
            window,
            status_page,
            vars,
            secrets,
            targets,
            inventory,
            ssh,
            notify,
            limit: Vec::new(),
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

/// Secrets: environment variable names, each listed once.
fn check_secrets(cx: &mut Ctx, secrets: &[String]) {
    let top = FieldPath::root();
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

/// The targets (lists of items for fan-out), by name.
fn targets(cx: &mut Ctx, raw: Option<IndexMap<String, RawTarget>>) -> IndexMap<String, Target> {
    let targets: IndexMap<String, Target> = raw
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
                FieldPath::root().key("targets").key(name),
                format!("target name `{name}` must be lowercase letters, digits, `-` and `_`"),
            );
        }
    }
    targets
}

/// The steps' ids: well-formed and unique. Each id's first step, by id.
fn step_ids(cx: &mut Ctx, all_ids: &[Option<&str>]) -> HashMap<String, usize> {
    let mut index_of: HashMap<String, usize> = HashMap::with_capacity(all_ids.len());
    for (i, id) in all_ids.iter().enumerate() {
        let Some(id) = id else { continue };
        let path = FieldPath::root().key("steps").index(i).key("id");
        if !is_id(id, true) {
            cx.error(
                path.clone(),
                format!("step id `{id}` must start with a lowercase letter or digit and use only lowercase letters, digits, `-` and `_`"),
            );
        }
        if let Some(&first) = index_of.get(*id) {
            let line = cx
                .node(&FieldPath::root().key("steps").index(first).key("id"))
                .map(|n| n.span.start.line)
                .unwrap_or(0);
            cx.error(path, format!("duplicate step id `{id}`")).label =
                Some(format!("first used on line {line}"));
        } else {
            index_of.insert((*id).to_owned(), i);
        }
    }
    index_of
}
