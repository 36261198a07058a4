//! Serde over the node tree: the raw types are read straight from the parsed YAML (no
//! intermediate copy), and what serde's derived code reports on the way is kept as a
//! value ([`DeError`]): an unknown field or value with the names it expected, a missing
//! field, a value of the wrong type. The loader words each for people from the value,
//! never from the text of a message. A value is read as far as it goes ([`lenient`]),
//! so one mistake does not hide the others.

use serde::de::{self, IntoDeserializer, Visitor};

use serde::de::DeserializeOwned;

use super::yaml::{Node, NodeValue, Scalar};
use crate::diagnostic::{FieldPath, Seg};

/// A problem serde found reading a value, as a value.
#[derive(Debug, Clone, PartialEq)]
pub enum DeError {
    /// A field that is not one of `expected`.
    UnknownField {
        name: String,
        expected: &'static [&'static str],
    },
    /// A name that is not one of the `expected` values (of an enum).
    UnknownVariant {
        name: String,
        expected: &'static [&'static str],
    },
    /// A required field that is not there.
    MissingField(&'static str),
    /// A value of the wrong type, or a wrong value of the right type: what was found, and
    /// what was expected as serde's derived code says it.
    Invalid {
        /// `invalid type` or `invalid value`.
        what: &'static str,
        found: String,
        expected: String,
    },
    /// Anything else, in the words of the code that found it.
    Other(String),
}

impl DeError {
    /// The message, with what was expected named the way people write it: serde names
    /// Rust types (`u16`, `struct RawStep`); people write numbers and mappings.
    pub fn message(&self) -> String {
        match self {
            DeError::Invalid {
                what,
                found,
                expected,
            } => {
                let expected = match expected.as_str() {
                    "u16" => "a whole number from 0 to 65535",
                    "u32" | "u64" => "a whole number of 0 or more",
                    e if e.starts_with("struct Raw") => "a mapping",
                    e => e,
                };
                format!("{what}: {found}, expected {expected}")
            }
            other => other.to_string(),
        }
    }
}

/// `` `a` ``, `` `a` or `b` ``, `` one of `a`, `b`, `c` ``, as serde lists names.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => format!("`{one}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        _ => format!(
            "one of {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// serde's own wording of each problem.
impl std::fmt::Display for DeError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            DeError::UnknownField { name, expected: [] } => {
                write!(f, "unknown field `{name}`, there are no fields")
            }
            DeError::UnknownField { name, expected } => {
                write!(f, "unknown field `{name}`, expected {}", one_of(expected))
            }
            DeError::UnknownVariant { name, expected: [] } => {
                write!(f, "unknown variant `{name}`, there are no variants")
            }
            DeError::UnknownVariant { name, expected } => {
                write!(f, "unknown variant `{name}`, expected {}", one_of(expected))
            }
            DeError::MissingField(name) => write!(f, "missing field `{name}`"),
            DeError::Invalid {
                what,
                found,
                expected,
            } => write!(f, "{what}: {found}, expected {expected}"),
            DeError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DeError {}

/// What was found, worded as serde_json words it (`null`, `` floating point `1.5` ``), as
/// the loader's messages always have.
fn found(unexp: de::Unexpected) -> String {
    match unexp {
        de::Unexpected::Unit => "null".to_owned(),
        de::Unexpected::Float(v) => format!(
            "floating point `{}`",
            serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())
        ),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DeError::Other(msg.to_string())
    }
    fn invalid_type(found: de::Unexpected, expected: &dyn de::Expected) -> Self {
        DeError::Invalid {
            what: "invalid type",
            found: self::found(found),
            expected: expected.to_string(),
        }
    }
    fn invalid_value(found: de::Unexpected, expected: &dyn de::Expected) -> Self {
        DeError::Invalid {
            what: "invalid value",
            found: self::found(found),
            expected: expected.to_string(),
        }
    }
    fn unknown_variant(name: &str, expected: &'static [&'static str]) -> Self {
        DeError::UnknownVariant {
            name: name.to_owned(),
            expected,
        }
    }
    fn unknown_field(name: &str, expected: &'static [&'static str]) -> Self {
        DeError::UnknownField {
            name: name.to_owned(),
            expected,
        }
    }
    fn missing_field(name: &'static str) -> Self {
        DeError::MissingField(name)
    }
}

/// A value read as far as it goes: what could be read, and every problem found on the
/// way (each with its path relative to this value), so one mistake does not hide the
/// others in a file.
#[derive(Debug)]
pub struct Lenient<T> {
    /// `None` when the value could not be read at all.
    pub value: Option<T>,
    pub errors: Vec<FieldError>,
}

/// A serde error with the path where it happened.
#[derive(Debug, Clone)]
pub struct FieldError {
    pub path: FieldPath,
    pub problem: DeError,
}

/// serde_path_to_error's error as ours.
fn field_error(e: serde_path_to_error::Error<DeError>) -> FieldError {
    let path = FieldPath(
        e.path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                _ => None,
            })
            .collect(),
    );
    FieldError {
        path,
        problem: e.into_inner(),
    }
}

/// Deserializes one node as far as it goes. serde stops at the first problem, so the
/// field it is in is reported and taken out, and the rest is read again, until what is
/// left reads: every problem of a step is found in one pass, and the step is still
/// checked against the rules of the format. The path-tracking deserializer only runs
/// when there is an error to locate, which keeps large runbooks fast.
pub fn lenient<T: DeserializeOwned>(node: &Node) -> Lenient<T> {
    if let Ok(t) = T::deserialize(node) {
        return Lenient {
            value: Some(t),
            errors: Vec::new(),
        };
    }
    let mut node = node.clone();
    let mut errors = Vec::new();
    // What was taken out, and whether as an unknown field (a misspelt known one, maybe).
    let mut removed: Vec<(FieldPath, bool)> = Vec::new();
    loop {
        let e = match serde_path_to_error::deserialize::<_, T>(&node) {
            Ok(t) => {
                return Lenient {
                    value: Some(t),
                    errors,
                };
            }
            Err(e) => field_error(e),
        };
        // A required field taken out for its bad value is missing now, and one written
        // with a typo was never there: either way, already said.
        let follow_on = match e.problem {
            DeError::MissingField(name) => {
                removed.iter().any(|(r, unknown)| match r.0.split_last() {
                    Some((Seg::Key(k), parent)) if parent == e.path.0.as_slice() => {
                        k == name || (*unknown && crate::suggest::closest(k, &[name]).is_some())
                    }
                    _ => false,
                })
            }
            _ => false,
        };
        let unknown = matches!(e.problem, DeError::UnknownField { .. });
        // The deepest field on the error's path goes; without one, nothing can be read.
        let cut = e
            .path
            .0
            .iter()
            .rposition(|s| matches!(s, Seg::Key(_)))
            .map(|at| FieldPath(e.path.0[..=at].to_vec()));
        if !follow_on {
            errors.push(e);
        }
        match cut {
            Some(cut) if remove(&mut node, &cut.0) => removed.push((cut, unknown)),
            _ => {
                return Lenient {
                    value: None,
                    errors,
                };
            }
        }
    }
}

/// Takes the entry at `path` out of a mapping in `node`; false when there is none.
fn remove(node: &mut Node, path: &[Seg]) -> bool {
    match (path, &mut node.value) {
        ([Seg::Key(k)], NodeValue::Map(entries)) => {
            let before = entries.len();
            entries.retain(|(key, _)| key.as_str() != Some(k.as_str()));
            entries.len() < before
        }
        ([Seg::Key(k), rest @ ..], NodeValue::Map(entries)) => entries
            .iter_mut()
            .find(|(key, _)| key.as_str() == Some(k.as_str()))
            .is_some_and(|(_, v)| remove(v, rest)),
        ([Seg::Index(i), rest @ ..], NodeValue::Seq(items)) => {
            items.get_mut(*i).is_some_and(|v| remove(v, rest))
        }
        _ => false,
    }
}

/// Serde reads the raw types straight from the node tree: no intermediate copy.
impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match &self.value {
            NodeValue::Scalar(s, _) => match s {
                Scalar::Null => visitor.visit_unit(),
                Scalar::Bool(b) => visitor.visit_bool(*b),
                Scalar::Int(n) => visitor.visit_i64(*n),
                Scalar::Float(f) => visitor.visit_f64(*f),
                Scalar::Str(s) => visitor.visit_borrowed_str(s),
            },
            NodeValue::Seq(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            NodeValue::Map(entries) => {
                let mut map = de::value::MapDeserializer::new(
                    entries
                        .iter()
                        .map(|(k, v)| (k.as_str().unwrap_or_default(), v)),
                );
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match &self.value {
            NodeValue::Scalar(Scalar::Null, _) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match &self.value {
            NodeValue::Scalar(Scalar::Str(s), _) => {
                visitor.visit_enum(s.as_ref().into_deserializer())
            }
            _ => Err(de::Error::invalid_type(self.unexpected(), &"a name")),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, DeError> for &'de Node {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl Node {
    fn unexpected(&self) -> de::Unexpected<'_> {
        match &self.value {
            NodeValue::Scalar(Scalar::Null, _) => de::Unexpected::Unit,
            NodeValue::Scalar(Scalar::Bool(b), _) => de::Unexpected::Bool(*b),
            NodeValue::Scalar(Scalar::Int(n), _) => de::Unexpected::Signed(*n),
            NodeValue::Scalar(Scalar::Float(f), _) => de::Unexpected::Float(*f),
            NodeValue::Scalar(Scalar::Str(s), _) => de::Unexpected::Str(s),
            NodeValue::Seq(_) => de::Unexpected::Seq,
            NodeValue::Map(_) => de::Unexpected::Map,
        }
    }
}
