//! Handlebars templates in runbook fields: compiled at load time, and every value they
//! refer to checked against what will exist when the field is rendered.

use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::{Path, PathSeg};

/// A value a template refers to, as path segments (`["steps", "backup", "outputs", "path"]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub segments: Vec<String>,
    /// Position of the expression inside the template: 1-based line and column.
    pub line: usize,
    pub col: usize,
    /// The path as written.
    pub raw: String,
}

/// A template that does not compile.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub line: usize,
    pub col: usize,
}

/// Helpers a template may call: the ones handlebars has built in, with `raw` (text as it
/// is) and `ident` (an SQL identifier) of the run's own (`engine::quote`).
pub const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len", "ident",
];

/// Whether a string holds template syntax at all (most fields do not).
pub fn is_template(text: &str) -> bool {
    text.contains("{{")
}

/// Compiles a template and lists the values and helpers it uses.
pub fn references(text: &str) -> Result<(Vec<Reference>, Vec<Reference>), SyntaxError> {
    if let Some(refs) = plain_references(text) {
        return Ok((refs, Vec::new()));
    }
    let template = Template::compile(text).map_err(|e| {
        let (line, col) = e.pos().unwrap_or((1, 1));
        SyntaxError {
            message: e.reason().to_string(),
            line,
            col,
        }
    })?;
    let mut refs = Vec::new();
    let mut helpers = Vec::new();
    collect(&template, (1, 1), &mut refs, &mut helpers);
    Ok((refs, helpers))
}

/// The common case, without the full parser: every expression is a plain path such as
/// `{{vars.app_db}}`. Anything else (helpers, blocks, escapes, literals, comments) returns
/// `None` and goes through handlebars. Whatever this accepts, handlebars accepts alike.
fn plain_references(text: &str) -> Option<Vec<Reference>> {
    let mut refs = Vec::new();
    let (mut line, mut line_start) = (1, 0);
    // Columns counted as the scan goes: (byte offset, its column), never from the line's
    // start again, so that a long line with many expressions stays linear.
    let mut counted = (0, 0);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                line += 1;
                line_start = i + 1;
                i += 1;
            }
            b'\\' if text[i..].starts_with("\\{{") => return None,
            b'{' if text[i..].starts_with("{{") => {
                let inner_start = i + 2;
                let close = text[inner_start..].find("}}")? + inner_start;
                let inner = text[inner_start..close].trim();
                let simple = !inner.is_empty()
                    && inner.split('.').all(|seg| {
                        !seg.is_empty()
                            && seg
                                .bytes()
                                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                            && !seg.as_bytes()[0].is_ascii_digit()
                            && !matches!(
                                seg,
                                "this" | "else" | "true" | "false" | "null" | "undefined"
                            )
                    });
                if !simple || text[close + 2..].starts_with('}') {
                    return None;
                }
                refs.push(Reference {
                    segments: inner.split('.').map(str::to_owned).collect(),
                    line,
                    col: {
                        let (from, col) = if counted.0 >= line_start {
                            counted
                        } else {
                            (line_start, 0)
                        };
                        counted = (i, col + text[from..i].chars().count());
                        counted.1 + 1
                    },
                    raw: inner.to_owned(),
                });
                i = close + 2;
            }
            _ => i += 1,
        }
    }
    Some(refs)
}

fn collect(
    t: &Template,
    outer: (usize, usize),
    refs: &mut Vec<Reference>,
    helpers: &mut Vec<Reference>,
) {
    for (i, el) in t.elements.iter().enumerate() {
        let pos = t.mapping.get(i).map(|m| (m.0, m.1)).unwrap_or(outer);
        element(el, pos, refs, helpers);
    }
}

fn element(
    el: &TemplateElement,
    pos: (usize, usize),
    refs: &mut Vec<Reference>,
    helpers: &mut Vec<Reference>,
) {
    {
        match el {
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => {
                let bare = h.params.is_empty() && h.hash.is_empty() && !h.block;
                match &h.name {
                    Parameter::Path(p) if bare => push_path(p, pos, refs),
                    Parameter::Name(n) if bare => refs.push(Reference {
                        segments: vec![n.clone()],
                        line: pos.0,
                        col: pos.1,
                        raw: n.clone(),
                    }),
                    name => {
                        let n = match name {
                            Parameter::Name(n) => n.clone(),
                            Parameter::Path(p) => path_raw(p),
                            _ => String::new(),
                        };
                        helpers.push(Reference {
                            segments: vec![n.clone()],
                            line: pos.0,
                            col: pos.1,
                            raw: n,
                        });
                    }
                }
                for p in h.params.iter().chain(h.hash.values()) {
                    param(p, pos, refs, helpers);
                }
                // `each` and `with` change the context inside their body; only `if` and
                // `unless` bodies see the same values as the field itself.
                let same_context =
                    matches!(&h.name, Parameter::Name(n) if n == "if" || n == "unless");
                if same_context {
                    for body in h.template.iter().chain(h.inverse.iter()) {
                        collect(body, pos, refs, helpers);
                    }
                }
            }
            _ => {}
        }
    }
}

fn param(
    p: &Parameter,
    pos: (usize, usize),
    refs: &mut Vec<Reference>,
    helpers: &mut Vec<Reference>,
) {
    match p {
        Parameter::Path(path) => push_path(path, pos, refs),
        Parameter::Subexpression(sub) => element(&sub.element, pos, refs, helpers),
        _ => {}
    }
}

fn path_raw(p: &Path) -> String {
    match p {
        Path::Relative((_, raw)) => raw.clone(),
        Path::Local((_, _, raw)) => raw.clone(),
    }
}

fn push_path(p: &Path, pos: (usize, usize), refs: &mut Vec<Reference>) {
    // `@index`, `this`, `../x` and friends belong to block helpers, not to the runbook.
    let Path::Relative((segs, raw)) = p else {
        return;
    };
    let mut segments = Vec::with_capacity(segs.len());
    for s in segs {
        match s {
            PathSeg::Named(n) => segments.push(n.clone()),
            _ => return,
        }
    }
    refs.push(Reference {
        segments,
        line: pos.0,
        col: pos.1,
        raw: raw.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        references(text)
            .unwrap()
            .0
            .into_iter()
            .map(|r| r.segments.join("."))
            .collect()
    }

    #[test]
    fn finds_references_with_positions() {
        let (refs, helpers) = references("to {{vars.dir}}/{{run.id}}").unwrap();
        assert_eq!(refs[0].segments, vec!["vars", "dir"]);
        assert_eq!((refs[0].line, refs[0].col), (1, 4));
        assert_eq!((refs[1].line, refs[1].col), (1, 17));
        assert!(helpers.is_empty());
    }

    #[test]
    fn finds_references_in_helpers_and_if_blocks() {
        assert_eq!(
            paths("{{#if vars.a}}{{vars.b}}{{else}}{{item}}{{/if}}"),
            vec!["vars.a", "vars.b", "item"]
        );
        assert_eq!(
            paths("{{#each targets.t}}{{this}}{{/each}}"),
            vec!["targets.t"]
        );
        assert_eq!(
            paths("{{steps.go-no-go.outputs.by}}"),
            vec!["steps.go-no-go.outputs.by"]
        );
        let (_, helpers) = references("{{upper vars.a}}").unwrap();
        assert_eq!(helpers[0].segments, vec!["upper"]);
    }

    #[test]
    fn the_fast_path_agrees_with_handlebars() {
        for text in [
            "plain text",
            "{{vars.a}}",
            "x {{ vars.a }} y\n  {{run.id}}/{{steps.go-no-go.outputs.by}}",
            "é {{vars.a}}",
            "{{item}}",
        ] {
            let fast = plain_references(text).expect("simple");
            let template = Template::compile(text).unwrap();
            let (mut refs, mut helpers) = (Vec::new(), Vec::new());
            collect(&template, (1, 1), &mut refs, &mut helpers);
            assert_eq!(fast, refs, "{text}");
        }
        for text in [
            "{{{vars.a}}}",
            "\\{{x}}",
            "{{#if a}}b{{/if}}",
            "{{upper a}}",
            "{{1}}",
            "{{a",
            "{{this}}",
            "{{!c}}",
        ] {
            assert!(plain_references(text).is_none(), "{text}");
        }
    }

    #[test]
    fn reports_syntax_errors() {
        let e = references("x {{vars.a").unwrap_err();
        assert_eq!(e.line, 1);
    }
}
