//! The only module that knows YAML: text → a tree of positioned nodes.
//!
//! Built on `saphyr-parser`'s event stream (no recursion, so deeply nested input cannot
//! overflow the stack). Scalars are resolved with the YAML 1.2 core schema, so
//! `2026-11-24T19:00:00Z` stays a string and `yes` is not a boolean.

use std::collections::HashSet;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};
use serde_json::{Map, Number, Value};

pub use crate::diagnostic::{Pos, Span};

/// A source span from the parser's.
fn span_of(s: YSpan) -> Span {
    Span {
        start: Pos::new(s.start.line(), s.start.col()),
        end: Pos::new(s.end.line(), s.end.col()),
    }
}

/// How a scalar was written; templates inside quoted scalars are offset by the quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

/// A YAML value with the place it was written.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: NodeValue,
    pub span: Span,
}

/// A resolved scalar: small, so that large documents stay small in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
}

/// The value of a node; scalars are already resolved to their types.
#[derive(Debug, Clone)]
pub enum NodeValue {
    Scalar(Scalar, Style),
    Seq(Vec<Node>),
    /// Keys keep their own node for positions; they are always strings.
    Map(Vec<(Node, Node)>),
}

/// A syntax-level problem with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub message: String,
    pub span: Span,
}

/// Nesting deeper than this is refused: no runbook needs it, and it bounds recursion later.
pub const MAX_DEPTH: usize = 64;
/// Upper bound on the values aliases copy (guards against "billion laughs"). The values
/// written in the file are bounded by its size alone, so a long runbook without aliases
/// is never refused for its length.
pub const MAX_NODES: usize = 1_000_000;

enum Frame {
    Seq {
        items: Vec<Node>,
        start: Span,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        /// Keys seen so far, once the mapping is too large for a linear scan.
        seen: HashSet<String>,
        start: Span,
        anchor: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: Vec<Option<(Node, usize)>>,
    /// Values copied by aliases so far.
    aliased: usize,
    root: Option<Node>,
    documents: usize,
}

fn err(message: impl Into<String>, span: Span) -> YamlError {
    YamlError {
        message: message.into(),
        span,
    }
}

/// Parses one YAML document into a node tree.
pub fn parse(source: &str) -> Result<Node, YamlError> {
    let mut b = Builder {
        stack: Vec::new(),
        anchors: Vec::new(),
        aliased: 0,
        root: None,
        documents: 0,
    };
    for event in Parser::new_from_str(source) {
        let (event, yspan) = event.map_err(|e| {
            let m = e.marker();
            let pos = Pos::new(m.line(), m.col());
            err(
                format!("invalid YAML: {}", e.info()),
                Span {
                    start: pos,
                    end: pos,
                },
            )
        })?;
        let span = span_of(yspan);
        match event {
            Event::DocumentStart(_) => {
                b.documents += 1;
                if b.documents > 1 {
                    return Err(err(
                        "a runbook file holds one YAML document, found a second one",
                        span,
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let (value, style) = resolve_scalar(text, style, tag.as_deref(), span)?;
                b.push(
                    Node {
                        value: NodeValue::Scalar(value, style),
                        span,
                    },
                    anchor,
                )?;
            }
            Event::SequenceStart(anchor, tag) => {
                check_tag(tag.as_deref(), "seq", span)?;
                b.open(
                    Frame::Seq {
                        items: Vec::new(),
                        start: span,
                        anchor,
                    },
                    span,
                )?;
            }
            Event::MappingStart(anchor, tag) => {
                check_tag(tag.as_deref(), "map", span)?;
                b.open(
                    Frame::Map {
                        entries: Vec::new(),
                        pending_key: None,
                        seen: HashSet::new(),
                        start: span,
                        anchor,
                    },
                    span,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(span)?,
            Event::Alias(id) => {
                let size = match b.anchors.get(id) {
                    Some(Some((_, size))) => *size,
                    _ => return Err(err("alias refers to an unknown anchor", span)),
                };
                // Refuse before copying, so an alias bomb costs nothing.
                b.count_alias(size, span)?;
                let node = b.anchors[id]
                    .as_ref()
                    .map(|(n, _)| n.clone())
                    .expect("checked");
                b.push(node, 0)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    b.root.ok_or_else(|| {
        err(
            "the file holds no runbook (it is empty or only comments)",
            Span::default(),
        )
    })
}

impl Builder {
    fn open(&mut self, frame: Frame, span: Span) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(err(
                format!("values are nested more than {MAX_DEPTH} levels deep"),
                span,
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self, end: Span) -> Result<(), YamlError> {
        let frame = self
            .stack
            .pop()
            .expect("parser balances start and end events");
        let (node, anchor) = match frame {
            Frame::Seq {
                mut items,
                start,
                anchor,
            } => (
                Node {
                    value: NodeValue::Seq({
                        items.shrink_to_fit();
                        items
                    }),
                    span: Span {
                        start: start.start,
                        end: end.end,
                    },
                },
                anchor,
            ),
            Frame::Map {
                mut entries,
                start,
                anchor,
                ..
            } => (
                Node {
                    value: NodeValue::Map({
                        entries.shrink_to_fit();
                        entries
                    }),
                    span: Span {
                        start: start.start,
                        end: end.end,
                    },
                },
                anchor,
            ),
        };
        self.push(node, anchor)
    }

    /// Values an alias copies: limited, so that aliases of aliases cannot blow up.
    fn count_alias(&mut self, n: usize, span: Span) -> Result<(), YamlError> {
        self.aliased = self.aliased.saturating_add(n);
        if self.aliased > MAX_NODES {
            return Err(err(
                format!("aliases in the document expand to more than {MAX_NODES} values"),
                span,
            ));
        }
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        if anchor > 0 {
            if self.anchors.len() <= anchor {
                self.anchors.resize(anchor + 1, None);
            }
            self.anchors[anchor] = Some((node.clone(), node.count()));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                seen,
                ..
            }) => match pending_key.take() {
                None => {
                    let key = match node.value {
                        NodeValue::Scalar(Scalar::Str(s), _) => s.into_string(),
                        NodeValue::Scalar(Scalar::Null, _) => {
                            return Err(err("a mapping key is empty", node.span));
                        }
                        NodeValue::Scalar(ref v, _) => v.to_json().to_string(),
                        _ => {
                            return Err(err(
                                "mapping keys must be plain strings, not lists or mappings",
                                node.span,
                            ));
                        }
                    };
                    // Small mappings (nearly all of them) are checked by scanning.
                    const SCAN: usize = 16;
                    let duplicate = if entries.len() < SCAN {
                        entries
                            .iter()
                            .any(|(k, _)| k.as_str() == Some(key.as_str()))
                    } else {
                        if seen.is_empty() {
                            seen.extend(
                                entries
                                    .iter()
                                    .filter_map(|(k, _)| k.as_str().map(str::to_owned)),
                            );
                        }
                        !seen.insert(key.clone())
                    };
                    if duplicate {
                        return Err(err(format!("duplicate key `{key}`"), node.span));
                    }
                    *pending_key = Some(Node {
                        value: NodeValue::Scalar(Scalar::Str(key.into_boxed_str()), Style::Plain),
                        span: node.span,
                    });
                }
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

impl Node {
    /// Number of nodes in this subtree, for the expansion budget.
    fn count(&self) -> usize {
        match &self.value {
            NodeValue::Scalar(..) => 1,
            NodeValue::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            NodeValue::Map(entries) => {
                1 + entries.iter().map(|(_, v)| 1 + v.count()).sum::<usize>()
            }
        }
    }

    /// The node as a JSON value, for serde.
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Scalar(v, _) => v.to_json(),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    map.insert(k.as_str().unwrap_or_default().to_owned(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// The string value of a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar(Scalar::Str(s), _) => Some(s),
            _ => None,
        }
    }

    /// The value under `key` in a mapping, with the key's node.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            NodeValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The `index`-th item of a sequence.
    pub fn item(&self, index: usize) -> Option<&Node> {
        match &self.value {
            NodeValue::Seq(items) => items.get(index),
            _ => None,
        }
    }
}

fn show_tag(t: &saphyr_parser::Tag) -> String {
    if t.is_yaml_core_schema() {
        format!("!!{}", t.suffix)
    } else {
        t.to_string()
    }
}

fn check_tag(
    tag: Option<&saphyr_parser::Tag>,
    expected: &str,
    span: Span,
) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(t) if t.is_yaml_core_schema() && t.suffix == expected => Ok(()),
        Some(t) => Err(err(
            format!("YAML tag `{}` is not supported here", show_tag(t)),
            span,
        )),
    }
}

fn resolve_scalar(
    text: std::borrow::Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&saphyr_parser::Tag>,
    span: Span,
) -> Result<(Scalar, Style), YamlError> {
    let style_kind = match style {
        ScalarStyle::Plain => Style::Plain,
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
        _ => Style::Block,
    };
    if let Some(t) = tag {
        if t.is_yaml_core_schema() && t.suffix == "str" {
            return Ok((Scalar::Str(text.into_owned().into_boxed_str()), style_kind));
        }
        return Err(err(
            format!("YAML tag `{}` is not supported", show_tag(t)),
            span,
        ));
    }
    if style_kind != Style::Plain {
        return Ok((Scalar::Str(text.into_owned().into_boxed_str()), style_kind));
    }
    Ok((resolve_plain(text), Style::Plain))
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: std::borrow::Cow<'_, str>) -> Scalar {
    match text.as_ref() {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.') {
        if let Some(hex) = text.strip_prefix("0x") {
            if let Ok(n) = i64::from_str_radix(hex, 16) {
                return Scalar::Int(n);
            }
        } else if let Some(oct) = text.strip_prefix("0o") {
            if let Ok(n) = i64::from_str_radix(oct, 8) {
                return Scalar::Int(n);
            }
        } else if text.bytes().skip(1).all(|c| c.is_ascii_digit()) && first != b'.' {
            if let Ok(n) = text.parse::<i64>() {
                return Scalar::Int(n);
            }
        } else if is_float(&text)
            && let Ok(n) = text.parse::<f64>()
        {
            return Scalar::Float(n);
        }
    }
    Scalar::Str(text.into_owned().into_boxed_str())
}

impl Scalar {
    /// The scalar as JSON (a float JSON cannot hold, such as `.nan`, becomes null).
    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(n) => Value::Number((*n).into()),
            Scalar::Float(f) => Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Scalar::Str(s) => Value::String(s.to_string()),
        }
    }
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |d: &str| d.bytes().all(|c| c.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
    };
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(src: &str) -> Value {
        parse(src).unwrap().to_json()
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let v =
            json("a: 1\nb: 1.5\nc: true\nd: ~\ne: yes\nf: 2026-11-24T19:00:00Z\ng: '1'\nh: 0x1f\n");
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": 1.5, "c": true, "d": null, "e": "yes",
                "f": "2026-11-24T19:00:00Z", "g": "1", "h": 31})
        );
    }

    #[test]
    fn positions_are_one_based_lines_zero_based_columns() {
        let n = parse("steps:\n  - id: backup\n").unwrap();
        let (_, steps) = n.entry("steps").unwrap();
        let (k, v) = steps.item(0).unwrap().entry("id").unwrap();
        assert_eq!(k.span.start, Pos::new(2, 4));
        assert_eq!(v.span.start, Pos::new(2, 8));
        assert_eq!(v.span.end, Pos::new(2, 14));
    }

    #[test]
    fn refuses_duplicate_keys_and_second_documents() {
        assert_eq!(
            parse("a: 1\na: 2\n").unwrap_err().message,
            "duplicate key `a`"
        );
        assert!(
            parse("a: 1\n---\nb: 2\n")
                .unwrap_err()
                .message
                .contains("second")
        );
    }

    #[test]
    fn bounds_depth_and_alias_expansion() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!(
                "l{i}: &l{i} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        assert!(parse(&bomb).unwrap_err().message.contains("expand"));
        // A long document without aliases is as long as its file allows: more values
        // than the alias limit are fine.
        let long = format!("[{}]", vec!["0"; MAX_NODES + 10].join(","));
        assert!(parse(&long).is_ok());
        // A few aliases of a small anchor are fine too.
        assert!(
            parse(
                "a: &a [1, 2]
b: [*a, *a, *a]
"
            )
            .is_ok()
        );
    }

    #[test]
    fn empty_documents_are_reported() {
        assert!(parse("").unwrap_err().message.contains("empty"));
        assert!(
            parse("# only a comment\n")
                .unwrap_err()
                .message
                .contains("only comments")
        );
    }
}
