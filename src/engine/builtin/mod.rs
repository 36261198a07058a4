//! The built-in behaviour of the database kinds (`backup`, `verify`, `restore`,
//! `migrate`, `optimise`), done as a careful DBA would by hand, with the field's own
//! tools (`pg_dump`, `pg_restore`, SQLite's backup API) against PostgreSQL and SQLite.

mod artifact;
pub mod backup;
pub mod migrate;
pub mod optimise;
pub(crate) mod pg;
pub mod restore;
pub mod verify;

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::action::{Outcome, StepLog};
use crate::runbook::Kind;

/// What a built-in action gets besides its parameters.
pub struct Env<'a> {
    /// This run's directory for files (default backup location, scratch copies).
    pub work_dir: PathBuf,
    pub run_id: &'a str,
    /// The step the action belongs to.
    pub step: &'a str,
    /// Outputs of the steps so far, by step id (`verify` finds what `backup` recorded).
    pub outputs: &'a IndexMap<String, IndexMap<String, Value>>,
    /// The step's log: every command and statement run, and what it printed.
    pub log: &'a mut StepLog,
}

/// Runs the built-in behaviour of `kind` with its (rendered) `with` parameters.
pub async fn run(kind: Kind, with: &IndexMap<String, Value>, env: Env<'_>) -> Outcome {
    match kind {
        Kind::Backup => backup::backup(with, env).await,
        Kind::Verify => verify::verify(with, env).await,
        Kind::Restore => restore::restore(with, env).await,
        Kind::Migrate => migrate::migrate(with, env).await,
        Kind::Optimise => optimise::optimise(with, env).await,
        other => Outcome::Failed(format!(
            "`{}` has no built-in behaviour; give the step a `run:` action",
            other.as_str()
        )),
    }
}

/// Whether `kind` has a built-in behaviour.
pub fn has_builtin(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Backup | Kind::Verify | Kind::Restore | Kind::Migrate | Kind::Optimise
    )
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
pub fn with_problems(kind: Kind, with: &IndexMap<String, Value>) -> Vec<WithProblem> {
    let check = |w: &IndexMap<String, Value>| check_params(kind, w);
    // The fields there are, as serde lists them for a field that is not one.
    let probe = IndexMap::from([("runbook-probe".to_owned(), Value::Null)]);
    let fields: Vec<String> = match check(&probe) {
        Err(e) => e
            .split_once("expected one of ")
            .or_else(|| e.split_once("expected "))
            .map(|(_, list)| {
                list.split(", ")
                    .map(|f| f.trim_matches('`').to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        Ok(()) => return Vec::new(),
    };
    let unknown: Vec<WithProblem> = with
        .keys()
        .filter(|k| !fields.contains(k))
        .map(|k| {
            let kind = kind.as_str();
            let hint = crate::suggest::did_you_mean(k, &fields)
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
    let mut problems = unknown;
    if with.is_empty() {
        return problems;
    }
    let known = with
        .iter()
        .filter(|(k, _)| fields.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for name in missing_fields(kind, known) {
        let misspelt = problems.iter().any(|p| {
            p.field
                .as_deref()
                .is_some_and(|k| crate::suggest::closest(k, &[name.as_str()]).is_some())
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

/// The fields a kind's `with` cannot do without (`database`, say), in order.
pub fn required_fields(kind: Kind) -> Vec<String> {
    missing_fields(kind, IndexMap::new())
}

/// The required fields `with` lacks (serde names one at a time).
fn missing_fields(kind: Kind, mut with: IndexMap<String, Value>) -> Vec<String> {
    let mut missing = Vec::new();
    // Each round names the next missing field; a kind has only a few.
    for _ in 0..8 {
        let Err(e) = check_params(kind, &with) else {
            break;
        };
        let Some(name) = e
            .split_once("missing field `")
            .and_then(|(_, rest)| rest.split('`').next())
        else {
            break;
        };
        with.insert(name.to_owned(), Value::from("x"));
        missing.push(name.to_owned());
    }
    missing
}

fn check_params(kind: Kind, with: &IndexMap<String, Value>) -> Result<(), String> {
    match kind {
        Kind::Backup => backup::check_params(with),
        Kind::Verify => verify::check_params(with),
        Kind::Restore => restore::check_params(with),
        Kind::Migrate => migrate::check_params(with),
        Kind::Optimise => optimise::check_params(with),
        _ => Ok(()),
    }
}

/// The `with` parameters as a kind's own parameter type, or a message that names the
/// field that is wrong (the types say which fields exist, with `deny_unknown_fields`).
pub fn params<T: DeserializeOwned>(
    kind: Kind,
    with: &IndexMap<String, Value>,
) -> Result<T, String> {
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
