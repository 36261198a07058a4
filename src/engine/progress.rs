//! How a built-in step's work reports how far it has come (a backfill's rows, after
//! each batch), for the runner to journal (`step_progress`) while the work goes on: the
//! work only reads the run and never records, so its reports wait here, by run and step.

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

type Reports = Mutex<HashMap<(String, String), Vec<Report>>>;

fn reports() -> &'static Reports {
    static R: OnceLock<Reports> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Reports kept for one step until the runner takes them (a runner that does not, in
/// a test say, holds no more than this).
const KEPT: usize = 1000;

/// The work of `step` in run `run_id` has come this far.
pub fn report(run_id: &str, step: &str, r: Report) {
    let mut all = reports().lock().expect("not poisoned");
    let kept = all.entry((run_id.to_owned(), step.to_owned())).or_default();
    if kept.len() >= KEPT {
        kept.remove(0);
    }
    kept.push(r);
}

/// The reports of `step` not taken yet, in order.
pub fn take(run_id: &str, step: &str) -> Vec<Report> {
    reports()
        .lock()
        .expect("not poisoned")
        .remove(&(run_id.to_owned(), step.to_owned()))
        .unwrap_or_default()
}
