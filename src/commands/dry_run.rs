//! `execute --dry-run`: the plan, then the preconditions that only read evaluated now
//! through the engine's own checks, nothing written.

use super::{fail, operator};
use crate::engine::control::host;
use crate::engine::event::Event;
use crate::engine::run::Runner;
use crate::engine::state::RunState;
use crate::engine::terminal::Reporter;
use crate::exit::{Exit, Outcome};
use crate::runbook::{Check, Runbook};
use crate::store::{Store, now_ms};

/// `execute --dry-run`: the plan, then every precondition that only reads (SQL `select`,
/// HTTP `GET`/`HEAD`, the window) evaluated through the engine's own checks. Nothing is
/// written: the journal is a store in memory, and no action runs.
pub(super) async fn dry_run(rb: &Runbook, file: &str, out: Reporter) -> Outcome {
    let plan = crate::plan::plan(rb, None, chrono::Utc::now());
    out!("{}", plan.to_text());
    let store = match Store::memory().await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let started = Event::RunStarted {
        runbook: rb.id.clone(),
        title: rb.title.clone(),
        file: file.to_owned(),
        file_sha256: String::new(),
        vars: rb.vars.clone(),
        operator: operator(),
        host: host(),
        pid: std::process::id(),
        window_start_ms: None,
        guard: None,
        rehearsal: false,
        public: None,
    };
    let state = match RunState::default().fold(&started, now_ms()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut runner = Runner::new(
        rb,
        store,
        "dry-run".into(),
        state,
        0,
        std::env::temp_dir(),
        out,
    );
    runner.read_only = true;
    let ctx = runner.context(None);
    outln!("\nPreconditions (read-only ones evaluated now; nothing was changed):");
    let mut failing = 0;
    let mut any = false;
    for &i in &rb.order {
        let s = &rb.steps[i];
        for c in &s.preconditions {
            any = true;
            let what = match &c.check {
                Check::Sql { sql, .. } => format!("sql: {}", one_line(sql)),
                Check::Window { remaining_at_least } => format!(
                    "window: at least {} left",
                    crate::duration::fmt_duration(*remaining_at_least)
                ),
                Check::Step { id, state } => format!("step `{id}` {state:?}").to_lowercase(),
                Check::Shell { command, .. } => format!("shell: {}", one_line(command)),
                Check::Http(h) => format!("http: {} {}", h.method, h.url),
            };
            let result = match read_only(&c.check) {
                Err(why) => format!("not evaluated ({why})"),
                Ok(()) => match runner.holds(c, &ctx).await {
                    Ok(()) => "holds".to_owned(),
                    Err(e) => {
                        failing += 1;
                        format!("DOES NOT HOLD: {}", runner.masker.mask(&e))
                    }
                },
            };
            outln!("  {:<16} {}: {result}", s.id, runner.masker.mask(&what));
        }
    }
    if !any {
        outln!("  (none)");
    }
    if failing > 0 {
        outln!("\n{failing} precondition(s) do not hold now.");
        return Ok(Exit::NeedsAPerson);
    }
    Ok(Exit::Ok)
}

/// A single `SELECT` / `WITH` query (or an integrity check): reads only.
fn is_read_only(sql: &str) -> bool {
    let s = sql
        .trim()
        .trim_end_matches(';')
        .trim_start()
        .to_ascii_lowercase();
    const WRITES: &[&str] = &[
        "insert", "update", "delete", "merge", "drop", "alter", "create", "truncate", "grant",
        "revoke", "vacuum", "reindex", "copy", "call", "lock", "nextval", "setval", "into",
    ];
    (s.starts_with("select") || s.starts_with("with") || s.starts_with("pragma integrity_check"))
        && !s.contains(';')
        && !s
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| WRITES.contains(&w))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a dry run may evaluate the condition: it only reads, and uses no value that
/// exists only during the run (outputs of steps, fan-out items).
fn read_only(check: &Check) -> Result<(), &'static str> {
    let texts: Vec<&str> = match check {
        Check::Sql { sql, database, .. } => {
            if !is_read_only(sql) {
                return Err("it may change data");
            }
            vec![sql, database]
        }
        Check::Http(h) => {
            if !matches!(h.method.as_str(), "GET" | "HEAD") {
                return Err("it is not a GET");
            }
            let mut t = vec![h.url.as_str()];
            t.extend(h.headers.values().map(String::as_str));
            t
        }
        Check::Window { .. } => vec![],
        Check::Step { .. } => return Err("it depends on the run"),
        Check::Shell { .. } => return Err("a command may change things"),
    };
    if texts
        .iter()
        .any(|t| t.contains("steps.") || t.contains("item"))
    {
        return Err("it uses values known only during the run");
    }
    Ok(())
}
