//! The built-in behaviour of the database kinds (`backup`, `verify`, `restore`,
//! `migrate`, `optimise`), done as a careful DBA would by hand, with the field's own
//! tools (`pg_dump`, `pg_restore`, SQLite's backup API) against PostgreSQL and SQLite.

pub mod backup;
pub mod migrate;
pub mod optimise;

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
        Kind::Verify => backup::verify(with, env).await,
        Kind::Restore => backup::restore(with, env).await,
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
