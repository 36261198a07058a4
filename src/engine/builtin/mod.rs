//! The built-in behaviour of the database kinds (`backup`, `verify`, `restore`,
//! `migrate`, `optimise`), done as a careful DBA would by hand, with the field's own
//! tools (`pg_dump`, `pg_restore`, SQLite's backup API) against PostgreSQL and SQLite.

pub(crate) mod artifact;
pub mod backup;
pub mod migrate;
pub mod optimise;
mod pg;
pub mod restore;
pub mod verify;

use std::path::PathBuf;

use indexmap::IndexMap;
use serde_json::Value;

use super::action::{Outcome, StepLog};
use crate::runbook::{Kind, With};

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

/// Runs the built-in behaviour of `kind` with its (rendered) `with` parameters, read
/// once into the kind's own type.
pub async fn run(kind: Kind, with: &IndexMap<String, Value>, env: Env<'_>) -> Outcome {
    match With::parse(kind, with) {
        Ok(With::Backup(p)) => backup::backup(&p, env).await,
        Ok(With::Verify(p)) => verify::verify(&p, env).await,
        Ok(With::Restore(p)) => restore::restore(&p, env).await,
        Ok(With::Migrate(p)) => migrate::migrate(&p, env).await,
        Ok(With::Optimise(p)) => optimise::optimise(&p, env).await,
        Err(e) => Outcome::Failed(e),
    }
}
