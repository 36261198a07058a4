//! The runbook format: loading, validation and the validated model.

mod code;
mod de;
pub mod inventory;
mod load;
mod model;
pub mod online;
mod raw;
mod template;
mod validate;
pub mod with;
pub mod yaml;

pub use crate::sql::{Engine, engine};
pub use load::{Invalid, MAX_FILE_BYTES, load_bytes, load_file, load_str};
pub use model::*;
/// The values a template refers to.
pub use template::references as template_references;
pub use validate::{RUN_FIELDS, WINDOW_FIELDS, parse_timestamp};
pub use with::With;

/// The JSON Schema of the runbook format, for editors.
pub fn schema() -> serde_json::Value {
    raw::schema()
}
