//! The `with` parameters of the built-in kinds (`backup`, `verify`, `restore`,
//! `migrate`, `optimise`): one type per kind, the one definition both the loader and the
//! builtins read. The loader checks a step's `with` against it (which fields there are,
//! which are required), structurally, from what serde's derived code reports; the run
//! reads the rendered `with` into it ([`With::parse`]) and hands the builtin the typed
//! payload. The values stay as written until the run renders their templates, so their
//! types are checked then.

use indexmap::IndexMap;
use serde::de::value::{MapDeserializer, SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::model::Kind;

/// The typed `with` of a built-in kind, read from the rendered `with` of a step (or of a
/// built-in rollback or restore).
pub enum With {
    Backup(BackupWith),
    Verify(VerifyWith),
    Restore(RestoreWith),
    Migrate(MigrateWith),
    Optimise(OptimiseWith),
}

impl With {
    /// Reads a (rendered) `with` as the parameters of `kind`, or a message that names the
    /// field that is wrong.
    pub fn parse(kind: Kind, with: &IndexMap<String, Value>) -> Result<With, String> {
        Ok(match kind {
            Kind::Backup => With::Backup(read(kind, with)?),
            Kind::Verify => With::Verify(read(kind, with)?),
            Kind::Restore => With::Restore(read(kind, with)?),
            Kind::Migrate => With::Migrate(read(kind, with)?),
            Kind::Optimise => With::Optimise(read(kind, with)?),
            other => {
                return Err(format!(
                    "`{}` has no built-in behaviour; give the step a `run:` action",
                    other.as_str()
                ));
            }
        })
    }
}

/// `with` as `T`, its error naming the field (`with.jobs`) and the kind.
fn read<T: DeserializeOwned>(kind: Kind, with: &IndexMap<String, Value>) -> Result<T, String> {
    let value = Value::Object(with.clone().into_iter().collect());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "with".to_owned()
        } else {
            format!("with.{path}")
        };
        format!("`{field}` ({} step): {}", kind.as_str(), e.into_inner())
    })
}

/// `with` of a `backup` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupWith {
    /// The database: `postgres://...` or `sqlite://PATH`.
    pub database: String,
    /// Where the artifact goes: a file (a directory for `format: directory`), or an
    /// existing directory (or a path ending in `/`) to put `<database>.dump|.db` in.
    pub to: Option<String>,
    /// PostgreSQL only: `custom` (default) or `directory`.
    pub format: Option<BackupFormat>,
    /// PostgreSQL `format: directory` only: parallel `pg_dump` jobs.
    #[serde(default, deserialize_with = "count")]
    pub jobs: Option<u32>,
}

/// A `pg_dump` archive format.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum BackupFormat {
    Custom,
    Directory,
}

impl BackupFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupFormat::Custom => "custom",
            BackupFormat::Directory => "directory",
        }
    }
}

/// `with` of a `verify` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyWith {
    /// The artifact (a `backup` step's `outputs.path`).
    pub backup: String,
    /// The source database: where its live row counts come from when no backup step
    /// recorded any, and (PostgreSQL) the server the scratch copy is restored on.
    pub database: Option<String>,
    /// PostgreSQL: the server to restore the scratch copy on, when not the source's.
    pub server: Option<String>,
    /// SQL run against the restored copy.
    #[serde(default)]
    pub checks: Vec<VerifyCheck>,
    /// PostgreSQL: parallel `pg_restore` jobs.
    #[serde(default, deserialize_with = "count")]
    pub jobs: Option<u32>,
}

/// A query on the restored copy: its first column must be true, or equal `expect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyCheck {
    pub sql: String,
    pub expect: Option<Value>,
    pub message: Option<String>,
}

/// `with` of a `restore` action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreWith {
    /// The artifact (a `backup` step's `outputs.path`).
    #[serde(alias = "from")]
    pub backup: String,
    /// The database to restore: `postgres://...` or `sqlite://PATH`.
    pub database: String,
    /// PostgreSQL: parallel `pg_restore` jobs.
    #[serde(default, deserialize_with = "count")]
    pub jobs: Option<u32>,
    /// PostgreSQL: keep the replaced database (renamed `<name>_old_<timestamp>`).
    #[serde(default)]
    pub keep_old: bool,
}

/// `with` of a `migrate` step (and of a `migrate` rollback).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateWith {
    /// `postgres://...` or `sqlite://PATH`.
    pub database: String,
    /// The directory of migration files, relative to the current directory.
    pub dir: String,
    /// The version to end at (up or down); default the latest in `dir`.
    #[serde(default)]
    pub to: Option<Whole>,
    /// How long one lock wait may last (`busy_timeout` on SQLite).
    #[serde(default)]
    pub lock_timeout: Option<String>,
    /// Attempts after the first when a lock wait times out.
    #[serde(default)]
    pub retries: Option<Whole>,
    /// Versions whose changed up file is accepted: the new checksum is recorded.
    #[serde(default)]
    pub accept_changed: Vec<Whole>,
    /// Online migrations (PostgreSQL): `start` expands and backfills the next one,
    /// `complete` contracts it, `abort` removes all it added.
    #[serde(default)]
    pub phase: Option<Phase>,
    /// The schema whose tables the migration changes (default `public`); the versioned
    /// schemas are `SCHEMA_vN`.
    #[serde(default)]
    pub schema: Option<String>,
    /// The time one backfill batch aims at (default 100ms).
    #[serde(default)]
    pub batch_time: Option<String>,
    /// A wait between backfill batches (default none).
    #[serde(default)]
    pub pause: Option<String>,
    /// The backfill waits while a replica's replay lag is over this.
    #[serde(default)]
    pub max_lag: Option<String>,
}

/// What a `migrate` step does with the next online migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Start,
    Complete,
    Abort,
}

/// `with` of an `optimise` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimiseWith {
    /// `postgres://...` or `sqlite://PATH`.
    pub database: String,
    /// What to do, in order. PostgreSQL: `vacuum` (`VACUUM (ANALYZE)`), `analyze`,
    /// `reindex` (each table `CONCURRENTLY`); SQLite: `vacuum`, `analyze`, `optimize`.
    /// Default: `vacuum` then `analyze` (PostgreSQL), all three (SQLite).
    #[serde(default)]
    pub actions: Option<Vec<OptimiseAction>>,
    /// Only these tables (default: every table of the user's schemas).
    #[serde(default)]
    pub tables: Vec<String>,
    /// PostgreSQL: how long a statement may wait for a lock before giving up.
    #[serde(default)]
    pub lock_timeout: Option<String>,
}

/// One thing `optimise` does.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimiseAction {
    Vacuum,
    Analyze,
    Reindex,
    #[serde(alias = "optimise")]
    Optimize,
}

/// A whole number written as a number or as text (a rendered template is text).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Whole(pub u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number, like 3 or \"3\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
                u64::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::custom(format!("{v} is negative; expected 0 or more")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole, E> {
                if v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
                    Ok(Whole(v as u64))
                } else {
                    Err(E::custom(format!("{v} is not a whole number of 0 or more")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Whole, E> {
                v.trim().parse::<u64>().map(Whole).map_err(|_| {
                    E::custom(format!(
                        "`{v}` is not a whole number of 0 or more (like 3 or \"3\")"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A positive count written as a number or, rendered from a template, as text.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Number(u32),
        Text(String),
    }
    let n = match Option::<N>::deserialize(d)? {
        None => return Ok(None),
        Some(N::Number(n)) => n,
        Some(N::Text(t)) => t.trim().parse().map_err(|_| {
            de::Error::custom(format!("expected a positive whole number, got `{t}`"))
        })?,
    };
    if n == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(Some(n))
}

/// What the derived code of a kind's `with` type says when it reads a probe: the
/// fields there are (for a field that is not one), a required field that is missing, or
/// anything else. Read as a value, never from a message's text.
#[derive(Debug)]
enum Probe {
    Fields(&'static [&'static str]),
    Missing(&'static str),
    Other,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Probe {}

impl de::Error for Probe {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Probe::Other
    }
    fn unknown_field(_: &str, expected: &'static [&'static str]) -> Self {
        Probe::Fields(expected)
    }
    fn missing_field(field: &'static str) -> Self {
        Probe::Missing(field)
    }
}

/// Reads the probe `entries` as the `with` of `kind`.
fn probe(kind: Kind, entries: &[(&str, ValueDe)]) -> Result<(), Probe> {
    fn go<T: DeserializeOwned>(entries: &[(&str, ValueDe)]) -> Result<(), Probe> {
        T::deserialize(MapDeserializer::new(entries.iter().copied())).map(|_| ())
    }
    match kind {
        Kind::Backup => go::<BackupWith>(entries),
        Kind::Verify => go::<VerifyWith>(entries),
        Kind::Restore => go::<RestoreWith>(entries),
        Kind::Migrate => go::<MigrateWith>(entries),
        Kind::Optimise => go::<OptimiseWith>(entries),
        _ => Ok(()),
    }
}

/// The fields a built-in kind's `with` takes; none for another kind.
pub fn fields(kind: Kind) -> &'static [&'static str] {
    const PROBE: Value = Value::Null;
    match probe(kind, &[("runbook-probe", ValueDe(&PROBE))]) {
        Err(Probe::Fields(fields)) => fields,
        _ => &[],
    }
}

/// The fields a kind's `with` cannot do without (`database`, say), in order.
pub fn required_fields(kind: Kind) -> Vec<&'static str> {
    missing_fields(kind, &IndexMap::new())
}

/// The required fields `with` lacks. The derived code names one at a time, so each
/// round adds the one named; a value that does not read ends the search (the run says
/// what is wrong with it).
fn missing_fields(kind: Kind, with: &IndexMap<String, Value>) -> Vec<&'static str> {
    let filler = Value::from("x");
    let mut entries: Vec<(&str, ValueDe)> =
        with.iter().map(|(k, v)| (k.as_str(), ValueDe(v))).collect();
    let mut missing = Vec::new();
    // A kind has only a few fields.
    for _ in 0..8 {
        match probe(kind, &entries) {
            Err(Probe::Missing(name)) => {
                missing.push(name);
                entries.push((name, ValueDe(&filler)));
            }
            _ => break,
        }
    }
    missing
}

/// A problem the loader finds in a built-in kind's `with`: the field it is about (none:
/// the whole `with`), and what is wrong.
pub struct WithProblem {
    pub field: Option<String>,
    pub message: String,
}

/// What the loader can tell of a built-in kind's `with` before anything runs: unknown
/// fields (and which there are), and the required ones missing from a `with` that is
/// there (the loader refuses a missing `with` itself). The values' types are left to the
/// run, since templates give them their values only then.
pub fn problems(kind: Kind, with: &IndexMap<String, Value>) -> Vec<WithProblem> {
    let fields = fields(kind);
    if fields.is_empty() {
        return Vec::new();
    }
    let mut problems: Vec<WithProblem> = with
        .keys()
        .filter(|k| !fields.contains(&k.as_str()))
        .map(|k| {
            let kind = kind.as_str();
            let hint = crate::suggest::did_you_mean(k, fields)
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            WithProblem {
                field: Some(k.clone()),
                message: format!(
                    "`with.{k}` is not a field of `{kind}`{hint} (`{kind}` takes {})",
                    fields
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        })
        .collect();
    // Every required field missing too, at once; one that is missing because it is
    // misspelt among the unknown ones is that problem, said once.
    if with.is_empty() {
        return problems;
    }
    let known: IndexMap<String, Value> = with
        .iter()
        .filter(|(k, _)| fields.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for name in missing_fields(kind, &known) {
        let misspelt = problems.iter().any(|p| {
            p.field
                .as_deref()
                .is_some_and(|k| crate::suggest::closest(k, &[name]).is_some())
        });
        if !misspelt {
            problems.push(WithProblem {
                field: None,
                message: format!("`with` ({} step): missing field `{name}`", kind.as_str()),
            });
        }
    }
    problems
}

/// A JSON value read by serde with the probe's error type (serde_json's own deserializer
/// has its own error type, which says what it found only as text).
#[derive(Clone, Copy)]
struct ValueDe<'a>(&'a Value);

impl<'de> IntoDeserializer<'de, Probe> for ValueDe<'_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for ValueDe<'_> {
    type Error = Probe;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probe> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_str(s),
            Value::Array(items) => {
                visitor.visit_seq(SeqDeserializer::new(items.iter().map(ValueDe)))
            }
            Value::Object(entries) => visitor.visit_map(MapDeserializer::new(
                entries.iter().map(|(k, v)| (k.as_str(), ValueDe(v))),
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probe> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Probe> {
        match self.0 {
            Value::String(s) => {
                let d: StrDeserializer<'_, Probe> = s.as_str().into_deserializer();
                visitor.visit_enum(d)
            }
            _ => Err(Probe::Other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Probe> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: Value) -> IndexMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_fields_of_each_kind_come_from_its_type() {
        assert_eq!(fields(Kind::Backup), ["database", "to", "format", "jobs"]);
        assert_eq!(
            required_fields(Kind::Migrate),
            ["database", "dir"],
            "in the order the type declares them"
        );
        assert_eq!(required_fields(Kind::Verify), ["backup"]);
        assert!(fields(Kind::Patch).is_empty());
    }

    #[test]
    fn problems_name_unknown_and_missing_fields_at_once() {
        let p = problems(Kind::Migrate, &with(serde_json::json!({ "dri": "m" })));
        let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].starts_with("`with.dri` is not a field of `migrate`"));
        assert_eq!(
            messages[1],
            "`with` (migrate step): missing field `database`"
        );
        let p = problems(
            Kind::Migrate,
            &with(serde_json::json!({ "dir": "m", "to": 3 })),
        );
        let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            ["`with` (migrate step): missing field `database`"]
        );
    }

    #[test]
    fn the_run_reads_the_rendered_with_into_the_kinds_type() {
        let w = with(serde_json::json!({ "database": "sqlite://a.db", "jobs": "2" }));
        match With::parse(Kind::Backup, &w) {
            Ok(With::Backup(b)) => assert_eq!(b.jobs, Some(2)),
            _ => panic!("a backup's with"),
        }
        let bad = with(serde_json::json!({ "database": "sqlite://a.db", "jobs": 0 }));
        let Err(e) = With::parse(Kind::Backup, &bad) else {
            panic!("jobs: 0 is refused");
        };
        assert_eq!(e, "`with.jobs` (backup step): must be at least 1");
        let Err(e) = With::parse(Kind::Patch, &w) else {
            panic!("patch has no built-in behaviour");
        };
        assert!(e.contains("has no built-in behaviour"), "{e}");
    }

    #[test]
    fn takes_numbers_as_numbers_or_text() {
        let p: MigrateWith = serde_json::from_value(serde_json::json!({
            "database": "sqlite://x", "dir": "m", "to": "3", "retries": 2, "accept_changed": [1, "2"]
        }))
        .unwrap();
        assert_eq!(p.to, Some(Whole(3)));
        assert_eq!(p.retries, Some(Whole(2)));
        assert_eq!(p.accept_changed, vec![Whole(1), Whole(2)]);
        let bad = serde_json::from_value::<MigrateWith>(serde_json::json!({
            "database": "sqlite://x", "dir": "m", "to": "three"
        }));
        assert!(bad.is_err());
    }
}
