//! Templates in every field: each found with its place in the file, checked against
//! what the field may refer to, and public text kept free of secrets.

use super::*;

/// What a template in a given field may refer to.
pub(super) struct Scope<'a> {
    pub(super) vars: &'a IndexMap<String, Value>,
    pub(super) secrets: &'a [String],
    pub(super) steps: &'a [Option<Step>],
    pub(super) index_of: &'a HashMap<String, usize>,
    /// Each step's id as written (a step that did not read still has one).
    pub(super) ids: &'a [Option<&'a str>],
    /// Step index → position in execution order.
    pub(super) position: HashMap<usize, usize>,
    /// The steps' requirements have a cycle (reported): there is no order to check.
    pub(super) cyclic: bool,
}

/// Where a template is written, which decides what it may refer to.
#[derive(Clone, Copy)]
pub(super) struct Site {
    /// Index of the step the field belongs to, if any.
    pub(super) step: Option<usize>,
    /// Public text: shown to customers, so secrets are forbidden.
    pub(super) public: bool,
    /// `{{item}}` is defined (a fan-out step's `run`, `with` and `rollback`).
    pub(super) item: bool,
    /// `{{host.*}}` is defined (a host step's work, its `between_waves`).
    pub(super) host: bool,
    /// Rollback and restore run after the step: its own outputs exist.
    pub(super) own_outputs: bool,
    /// A public update template: the update's own values exist (`title`, `step`, `eta` ...).
    pub(super) update: bool,
}

/// Values a public update template may use besides `vars`, `run` and `window`.
pub const UPDATE_ROOTS: &[&str] = &[
    "title",
    "summary",
    "runbook",
    "eta",
    "components",
    "step",
    "open",
];
/// Values `{{step.*}}` offers in an update template.
pub const UPDATE_STEP_FIELDS: &[&str] = &["id", "title", "number", "total"];

pub(super) fn check_top_templates(cx: &mut Ctx, scope: &Scope) {
    let public = Site {
        step: None,
        public: true,
        item: false,
        host: false,
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

pub(super) fn check_step_templates(cx: &mut Ctx, scope: &Scope, i: usize) {
    // From the file, so that a step with a problem of its own is checked too.
    let path = FieldPath::root().key("steps").index(i);
    let Some(node) = cx.node(&path) else { return };
    let on_hosts = cx.written(&path.key("on"));
    let fan_out = cx.written(&path.key("for_each")) || on_hosts;
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
            item: fan_out && per_item(field),
            host: on_hosts && (per_item(field) || field == "between_waves"),
            own_outputs: matches!(field, "rollback" | "restore"),
            update: false,
        };
        match (field, &value.value) {
            (
                "id" | "kind" | "requires" | "on_failure" | "outputs" | "for_each" | "on" | "waves",
                _,
            ) => {}
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

/// Fields that are each fan-out item's (or host's) work: its preconditions, `run` (or
/// built-in `with`), `until`, checks, and its `rollback` and a checkpoint's `restore`
/// (per item that succeeded).
fn per_item(field: &str) -> bool {
    matches!(
        field,
        "run"
            | "rollback"
            | "with"
            | "restore"
            | "preconditions"
            | "checks"
            | "until"
            | "item_label"
    )
}

/// Checks every string under `node` that holds a template. The path below `base` is
/// kept as borrowed segments and only turned into a `FieldPath` when a string needs it.
pub(super) fn check_node(cx: &mut Ctx, scope: &Scope, site: Site, base: FieldPath, node: &Node) {
    let mut below = Vec::new();
    walk(cx, scope, site, &base, &mut below, node);
}

pub(super) enum Below<'a> {
    Key(&'a str),
    Index(usize),
}

pub(super) fn walk<'a>(
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
pub(super) fn code_of(cx: &Ctx, path: &FieldPath) -> Option<Code> {
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
            Some("preconditions" | "checks" | "until" | "between_waves"),
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
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The place in the file of a position inside a scalar's text.
pub(super) fn place_in_scalar(
    node: &Node,
    style: Style,
    line: usize,
    col: usize,
    len: usize,
) -> Span {
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
pub(super) struct Expressions<'a> {
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
pub(super) fn check_string(
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

/// Public text must not mention a secret, by reference or by name.
pub(super) fn check_public_text(
    cx: &mut Ctx,
    scope: &Scope,
    path: &FieldPath,
    node: &Node,
    text: &str,
) {
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
