//! `execute --dry-run`: the plan, what each step would do (its templates rendered, its
//! fan-out's items listed), then the preconditions (and the checks of the tests before
//! any change) that only read, evaluated now through the engine's own checks; nothing
//! written.

use super::{fail, operator};
use crate::engine::control::host;
use crate::engine::event::Event;
use crate::engine::run::Runner;
use crate::engine::state::RunState;
use crate::engine::terminal::Reporter;
use crate::exit::{Exit, Outcome};
use crate::runbook::{Action, Check, ForEach, Runbook, Step, Target};
use crate::store::{Store, now_ms};
use futures_util::StreamExt;

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
        limit: Vec::new(),
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
    let broken = steps_rendered(rb, &runner).await;
    let ctx = runner.context(None);
    outln!(
        "\nPreconditions, and the checks of tests before any change (read-only ones evaluated now; nothing was changed):"
    );
    let mut failing = 0;
    let mut any = false;
    // The checks of `test` steps before the plan's first change read the service as it
    // is now, as preconditions do.
    let first_change = rb
        .order
        .iter()
        .position(|&i| crate::engine::undo::changes_things(&rb.steps[i]))
        .unwrap_or(rb.order.len());
    for (n, &i) in rb.order.iter().enumerate() {
        let s = &rb.steps[i];
        let checks: &[_] = if n < first_change && s.kind == crate::runbook::Kind::Test {
            &s.checks
        } else {
            &[]
        };
        for c in s.preconditions.iter().chain(checks) {
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
    let unreachable = hosts_reached(rb, &runner).await;
    if unreachable > 0 {
        outln!("\n{unreachable} host(s) cannot be reached (above).");
        return Ok(Exit::NeedsAPerson);
    }
    if failing > 0 {
        outln!("\n{failing} precondition(s) or check(s) do not hold now.");
        return Ok(Exit::NeedsAPerson);
    }
    if broken > 0 {
        outln!("\n{broken} step(s) cannot be rendered (above).");
        return Ok(Exit::NeedsAPerson);
    }
    Ok(Exit::Ok)
}

/// Prints what each step would do, rendered with the run's values: its action and its
/// rollback, and for a fan-out the items it would touch (a query target is asked when its
/// query only reads), rendered for the first of them. Returns how many could not be
/// rendered for a reason other than values known only once the run is under way.
async fn steps_rendered(rb: &Runbook, runner: &Runner<'_>) -> usize {
    outln!("\nWhat each step would do (rendered with the run's values; nothing runs):");
    let worker = runner.worker();
    let mask = |t: &str| runner.masker.mask(t);
    let mut broken = 0;
    for &i in &rb.order {
        let s = &rb.steps[i];
        let mut first = None;
        if s.for_each.is_some() {
            match items(&worker, s).await {
                Ok(items) => {
                    let names = worker.item_names(s, &items);
                    const SHOWN: usize = 10;
                    let mut list = names
                        .iter()
                        .take(SHOWN)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                    if names.len() > SHOWN {
                        list.push_str(&format!(", … {} more", names.len() - SHOWN));
                    }
                    outln!("  {:<16} {} items: {}", s.id, items.len(), mask(&list));
                    first = items.into_iter().next();
                }
                Err(why) => outln!("  {:<16} items: not listed ({why})", s.id),
            }
        }
        let action = s.run.as_deref().cloned().or_else(|| {
            crate::engine::work::has_builtin_work(s).then(|| Action::Builtin {
                kind: s.kind,
                with: s.with.clone(),
            })
        });
        // The first item's context as its work would have it (a host step's `{{host.*}}`).
        let ctx = match &first {
            Some(item) => worker.unit_context(s, crate::engine::work::Unit::Item(0, item, &s.id)),
            None => worker.context(None),
        };
        for (label, a) in [
            ("run", action.as_ref()),
            ("rollback", s.rollback.as_deref()),
        ] {
            let Some(a) = a else { continue };
            let shown = match worker.rendered(a, &ctx) {
                Ok(text) => text,
                // Outputs of earlier steps (or an item with no list) exist only in the run.
                Err(e) if e.contains(crate::engine::work::NOT_YET) => {
                    format!("rendered when it runs ({e})")
                }
                Err(e) => {
                    broken += 1;
                    format!("DOES NOT RENDER: {e}")
                }
            };
            let of = if first.is_some() { " (first item)" } else { "" };
            // A long script is cut: the file has it whole.
            let shown = match shown.char_indices().nth(240) {
                Some((at, _)) => format!("{}…", &shown[..at]),
                None => shown,
            };
            outln!("  {:<16} {label}{of}: {}", s.id, mask(&shown));
        }
    }
    broken
}

/// Connects to every host a host step would run on (`ssh HOST true`, changing nothing)
/// and says which cannot be reached; returns how many.
async fn hosts_reached(rb: &Runbook, runner: &Runner<'_>) -> usize {
    let mut used: Vec<usize> = Vec::new();
    for s in &rb.steps {
        if let Some(ForEach::Hosts(hosts)) = &s.for_each {
            for h in hosts {
                if !used.contains(h) {
                    used.push(*h);
                }
            }
        }
    }
    if used.is_empty() {
        return 0;
    }
    outln!("\nHosts (each connected to with `ssh HOST true`; nothing was changed):");
    let tried = futures_util::stream::iter(used.iter().map(|&h| {
        let host = &rb.inventory.hosts[h];
        let remote = crate::engine::ssh::Remote::new(rb, host, &runner.log_dir);
        async move {
            let at = format!("{}:{}", host.address, remote.port().unwrap_or(22));
            (host, at, remote.connect().await)
        }
    }))
    .buffered(16)
    .collect::<Vec<_>>()
    .await;
    let mut unreachable = 0;
    for (host, at, result) in tried {
        match result {
            Ok(()) => outln!("  {:<16} {at}: reachable", host.name),
            Err(e) => {
                unreachable += 1;
                outln!("  {:<16} {at}: UNREACHABLE: {e}", host.name);
            }
        }
    }
    crate::engine::ssh::close_run(rb, &runner.log_dir).await;
    unreachable
}

/// The items a fan-out would touch now; a query target is asked only when it only reads.
async fn items(
    worker: &crate::engine::work::Worker<'_>,
    s: &Step,
) -> Result<Vec<serde_json::Value>, String> {
    if let Some(ForEach::Target(name)) = &s.for_each
        && let Some(Target::Query { sql, .. }) = worker.rb.targets.get(name)
        && !is_read_only(sql)
    {
        return Err("its query may change data".into());
    }
    worker.items(s).await
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
