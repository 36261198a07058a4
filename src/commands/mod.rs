//! The run commands, above the engine, the plan, the status page and the store: execute
//! (and its dry run), resume, abort, approve/reject, status, runs. Each opens the store,
//! checks what it is asked against the journal, has the engine decide and record, and
//! says how it went. Nothing below depends on this module.

/// `println!` and friends that shrug off a closed pipe (`runbook status | head`)
/// instead of panicking.
macro_rules! outln {
    () => {
        outln!("")
    };
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($t)*);
        let _ = writeln!(std::io::stdout().lock(), "{}", crate::terminal::safe(&text));
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($t)*);
        let mut o = std::io::stdout().lock();
        let _ = write!(o, "{}", crate::terminal::safe(&text));
        let _ = o.flush();
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($t)*);
        let _ = writeln!(std::io::stderr().lock(), "{}", crate::terminal::safe(&text));
    }};
}

mod control;
mod drive;
mod dry_run;
mod execute;
mod lease;
mod resume;
mod runs;
pub mod serve;
mod status;
pub mod subscribers;

use serde_json::json;

pub use control::{UpdateArgs, abort, decide_approval, forget, update};
pub use execute::{ExecuteArgs, PageStarter, execute};
pub use resume::resume;

/// Who makes a decision (`--by`, default $USER), and what they say with it
/// (`resume --reason`, `approve`/`reject --comment`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    pub by: Option<&'a str>,
    pub reason: Option<&'a str>,
}
pub use runs::runs;
pub use status::status;

use crate::engine::terminal::LogFormat;
use crate::engine::timing::Learned;
use crate::exit::{Failure, Outcome};
use crate::runbook::Runbook;
use crate::store::{Store, StoreError};

fn fail(message: impl std::fmt::Display) -> Outcome {
    Err(Failure::invalid(message))
}

use crate::store::url::log_dir;

/// Who is at the keyboard, for the journal.
fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "operator".into())
}

/// The store at `url` (`RUNBOOK_STORE` or `--store`) that holds run `run_id`, opened for
/// writing.
async fn open_for(store_flag: Option<&str>, run_id: &str) -> Result<Store, Failure> {
    let url = crate::store::chosen_url(store_flag);
    let store = match Store::open_existing(&url).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(Failure::invalid(StoreError::UnknownRun(run_id.to_owned()))),
        Err(e) => return Err(Failure::invalid(e)),
    };
    store.writable().map_err(Failure::invalid)?;
    Ok(store)
}

/// Every secret the runbook names must be in the environment: an unset one would be
/// used as an empty password, a failure far from its cause.
fn secrets_set(rb: &Runbook) -> Result<(), String> {
    let unset: Vec<&str> = rb
        .secrets
        .iter()
        .filter(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()))
        .map(String::as_str)
        .collect();
    match unset.as_slice() {
        [] => Ok(()),
        [one] => Err(format!(
            "secret `{one}` is not set: export it in the environment of `runbook`"
        )),
        many => Err(format!(
            "secrets {} are not set: export them in the environment of `runbook`",
            many.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The first line of `execute` and `resume`: the run's id (JSON with `--log-format json`).
fn say_run_id(format: LogFormat, run_id: &str) {
    match format {
        LogFormat::Text => outln!("run {run_id}"),
        LogFormat::Json => outln!("{}", json!({ "run": run_id })),
    }
}

/// A time in the journal (ms since the epoch) as `status` and `runs` show it.
fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// What earlier finished runs of `runbook` took, step by step (the latest 20 runs but
/// `except`).
pub async fn learned(store: &Store, runbook: &str, except: &str) -> Learned {
    let Ok(runs) = store.runs().await else {
        return Default::default();
    };
    let mut journals = Vec::new();
    let mut from = Vec::new();
    // Each journal is folded once: to see whether it teaches, and to learn from it.
    for r in runs
        .iter()
        .filter(|r| r.runbook == runbook && r.run_id != except)
    {
        if journals.len() == LEARNED_RUNS {
            break;
        }
        let Ok(events) = store.load(&r.run_id).await else {
            continue;
        };
        // Only the runs that teach count towards the last 20.
        match crate::engine::state::RunState::of_journal(&events) {
            Ok(state) if crate::engine::timing::teaches(&state) => {
                from.push(crate::engine::timing::LearnedRun {
                    run: r.run_id.clone(),
                    started_ms: state.started_ms,
                    ended_ms: state.ended_ms,
                    rehearsal: state.rehearsal,
                });
                journals.push((state, events));
            }
            _ => {}
        }
    }
    Learned {
        from,
        ..Learned::from_folded(journals.iter().map(|(s, e)| (s, e.as_slice())))
    }
}

/// How many of a runbook's latest runs that completed teach its durations.
const LEARNED_RUNS: usize = 20;
