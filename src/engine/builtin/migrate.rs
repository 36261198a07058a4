//! `migrate`.

use indexmap::IndexMap;
use serde_json::Value;

use super::Env;
use crate::engine::action::Outcome;

/// Whether this behaviour is finished (`execute` refuses it until then).
pub const READY: bool = false;

/// `migrate`: being written.
pub async fn migrate(_with: &IndexMap<String, Value>, _env: Env<'_>) -> Outcome {
    Outcome::Failed("the built-in `migrate` behaviour is not available in this version".into())
}
