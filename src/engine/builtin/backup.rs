//! `backup`, `verify` and `restore`.

use indexmap::IndexMap;
use serde_json::Value;

use super::Env;
use crate::engine::action::Outcome;

/// Whether this behaviour is finished (`execute` refuses it until then).
pub const READY: bool = false;

/// `backup`: being written.
pub async fn backup(_with: &IndexMap<String, Value>, _env: Env<'_>) -> Outcome {
    Outcome::Failed("the built-in `backup` behaviour is not available in this version".into())
}

/// `verify`: being written.
pub async fn verify(_with: &IndexMap<String, Value>, _env: Env<'_>) -> Outcome {
    Outcome::Failed("the built-in `verify` behaviour is not available in this version".into())
}

/// `restore`: being written.
pub async fn restore(_with: &IndexMap<String, Value>, _env: Env<'_>) -> Outcome {
    Outcome::Failed("the built-in `restore` behaviour is not available in this version".into())
}
