//! How a built-in step's work reports how far it has come (a backfill's rows), for the
//! runner to journal (`step_progress`) while the work goes on: the work only reads the
//! run and never records, so its last report waits here, by run and step.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// One report: `done` of about `total` `what`, the time it expects to end, where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub done: u64,
    pub total: Option<u64>,
    pub eta_ms: Option<i64>,
    pub what: String,
    pub cursor: Option<Value>,
}

type Reports = Mutex<HashMap<(String, String), Report>>;

fn reports() -> &'static Reports {
    static R: OnceLock<Reports> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The work of `step` in run `run_id` has come this far (the latest report wins).
pub fn report(run_id: &str, step: &str, r: Report) {
    reports()
        .lock()
        .expect("not poisoned")
        .insert((run_id.to_owned(), step.to_owned()), r);
}

/// The latest report of `step` not taken yet.
pub fn take(run_id: &str, step: &str) -> Option<Report> {
    reports()
        .lock()
        .expect("not poisoned")
        .remove(&(run_id.to_owned(), step.to_owned()))
}
