//! The post-run report (`runbook report RUN`): planned versus actual for every step, the
//! window, the time the service was closed, rollbacks, approvals, the public updates as
//! published, a Gantt chart, and a postmortem draft for runs that did not complete.
//! A projection of the journal alone: the runbook file may have changed or gone since.
//!
//! [`build`] makes the [`Report`] (the JSON document, schema in `report.schema.json`);
//! [`Report::to_markdown`] and [`Report::to_html`] render it for people;
//! [`public_summary`] is the part customers may read.

mod build;
mod figures;
mod html;
mod markdown;
pub mod model;
mod postmortem;

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, TimeZone as _, Utc};
use chrono_tz::Tz;

pub use build::build;
pub use model::*;

use crate::engine::event::Recorded;
use crate::store::{Store, StoreError};

/// Output formats of `runbook report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown.
    Md,
    /// One self-contained HTML file (inline CSS and SVG, no scripts).
    Html,
    /// JSON (schema: report.schema.json).
    Json,
}

/// Why there is no report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the journal of run `{run}` does not make sense: {reason}")]
    Damaged { run: String, reason: String },
}

/// RFC 3339 in UTC with milliseconds.
pub(crate) fn iso(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => String::new(),
    }
}

/// Local times in the runbook's zone: the full date once, then times of day (with the
/// date when it differs from the run's first day).
pub(crate) struct Clock {
    tz: Tz,
    day: Option<chrono::NaiveDate>,
}

impl Clock {
    pub fn new(zone: &str, first_ms: i64) -> Clock {
        let tz: Tz = zone.parse().unwrap_or(Tz::UTC);
        let day = tz
            .timestamp_millis_opt(first_ms)
            .single()
            .map(|t| t.date_naive());
        Clock { tz, day }
    }

    pub fn zone(&self) -> &str {
        self.tz.name()
    }

    /// `2026-11-24 19:00:05 GMT`.
    pub fn full(&self, ms: i64) -> String {
        match self.tz.timestamp_millis_opt(ms).single() {
            Some(t) => t.format("%Y-%m-%d %H:%M:%S %Z").to_string(),
            None => String::new(),
        }
    }

    /// `19:00:05`, or `Nov 25 19:00:05` on another day than the run's first.
    pub fn time(&self, ms: i64) -> String {
        match self.tz.timestamp_millis_opt(ms).single() {
            Some(t) if Some(t.date_naive()) == self.day => t.format("%H:%M:%S").to_string(),
            Some(t) => t.format("%b %d %H:%M:%S").to_string(),
            None => String::new(),
        }
    }

    /// A time on the chart's axis: `19:05`, or with seconds when `seconds`.
    pub fn tick(&self, ms: i64, seconds: bool) -> String {
        match self.tz.timestamp_millis_opt(ms).single() {
            Some(t) if seconds => t.format("%H:%M:%S").to_string(),
            Some(t) => t.format("%H:%M").to_string(),
            None => String::new(),
        }
    }
}

/// A duration for people: `1h35m`, `42s`, `350ms`.
pub(crate) fn dur(ms: i64) -> String {
    crate::duration::fmt_duration(std::time::Duration::from_millis(ms.max(0) as u64))
}

/// A signed difference: `+2m10s`, `-30s`, `±0s`.
pub(crate) fn delta(ms: i64) -> String {
    match ms {
        0 => "±0s".into(),
        d if d > 0 => format!("+{}", dur(d)),
        d => format!("-{}", dur(-d)),
    }
}

/// Bytes for people: `42 B`, `1.5 MB`.
pub(crate) fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n;
    let mut unit = 0;
    while v.abs() >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// An output value in a line of text: strings bare, sizes in bytes, the rest as JSON,
/// cut to a readable length.
pub(crate) fn output_text(key: &str, v: &serde_json::Value) -> String {
    let text = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n)
            if matches!(key, "size_bytes" | "size_before" | "size_after") =>
        {
            n.as_f64().map(bytes).unwrap_or_else(|| n.to_string())
        }
        other => other.to_string(),
    };
    figures::cut(&text, 120)
}

impl Report {
    /// The report as JSON (pretty, with a final newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("the report serializes");
        s.push('\n');
        s
    }

    /// The report in Markdown.
    pub fn to_markdown(&self) -> String {
        markdown::render(self)
    }

    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        html::render(self)
    }

    /// The report in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Md => self.to_markdown(),
            Format::Html => self.to_html(),
            Format::Json => self.to_json(),
        }
    }
}

/// The JSON Schema of the report (`report.schema.json`).
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(Report).to_value()
}

/// The JSON Schema of the public summary.
pub fn public_schema() -> serde_json::Value {
    schemars::schema_for!(PublicSummary).to_value()
}

/// Every event of `run_id` in `store`.
pub async fn load(store: &Store, run_id: &str) -> Result<Vec<Recorded>, ReportError> {
    Ok(store.load(run_id).await?)
}

/// What customers may read of a run: its public title and summary, the planned and
/// actual window, the outcome, the public steps (titles and states only) and the
/// public updates as published. Hidden steps, step ids, internal titles, outputs,
/// errors, logs, operators and hosts are left out.
pub fn public_summary(
    run_id: &str,
    events: &[Recorded],
    now_ms: i64,
) -> Result<PublicSummary, ReportError> {
    let (state, history) = figures::fold(run_id, events)?;
    let plan = figures::plan_of(events);
    let outcome = figures::outcome(state.status);
    let finished = outcome.finished();
    let planned = figures::planned_steps(plan, &state);
    let expected: i64 = planned
        .iter()
        .map(|s| s.expected_ms.unwrap_or(0) as i64)
        .sum();
    let w = figures::window(plan, &state, expected, now_ms);
    let service = figures::service(&history, now_ms);
    let steps = planned
        .iter()
        .filter_map(|p| {
            p.public_title.as_ref().map(|t| PublicStepSummary {
                title: t.clone(),
                status: figures::step_state(state.step(&p.id), finished),
            })
        })
        .collect();
    let updates = history
        .updates
        .iter()
        .map(|p| PublicUpdateSummary {
            at: iso(p.at_ms),
            at_ms: p.at_ms,
            status: p.update.status.clone(),
            body: p.update.body.clone(),
            incident: p.update.incident,
        })
        .collect();
    Ok(PublicSummary {
        schema_version: SchemaVersion,
        title: plan.and_then(|p| p.title.clone()),
        summary: plan.and_then(|p| p.summary.clone()),
        components: plan.map(|p| p.components.clone()).unwrap_or_default(),
        timezone: plan.map_or_else(|| "UTC".to_owned(), |p| p.timezone.clone()),
        outcome,
        finished,
        planned_start: w.planned_start,
        planned_start_ms: w.planned_start_ms,
        planned_end: w.planned_end,
        planned_end_ms: w.planned_end_ms,
        actual_start: w.actual_start,
        actual_start_ms: w.actual_start_ms,
        actual_end: w.actual_end,
        actual_end_ms: w.actual_end_ms,
        held: w.held,
        overrun_ms: w.overrun_ms,
        closed_ms: service.closed_ms,
        steps,
        updates,
    })
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (`tempfile`), synced,
/// then renamed over it. On failure nothing is left behind, and the message says why.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let shown = path.display();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "cannot write `{shown}`: the directory `{}` does not exist",
            dir.display()
        ));
    }
    let Some(name) = path.file_name() else {
        return Err(format!("cannot write `{shown}`: it names no file"));
    };
    // Only a regular file is replaced: a device, a FIFO or a socket named by mistake
    // (`-o /dev/full`) is refused, not turned into a file.
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(format!("cannot write `{shown}`: it is {what}"));
    }
    // A temporary file of its own beside the target (readable as a new file would be),
    // renamed over it once synced; dropped on any failure.
    let written = (|| {
        use std::os::unix::fs::PermissionsExt as _;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok::<_, std::io::Error>(())
    })();
    if let Err(e) = written {
        return Err(format!("cannot write `{shown}`: {e}"));
    }
    // The rename itself survives a power cut once the directory is synced (best effort).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `runbook report RUN [--format md|html|json] [-o FILE] [--store URL]`: the report on
/// standard output, or written atomically to FILE. Exit 0, or 1 (unknown run, damaged
/// journal, unwritable FILE) with `error: ...`.
pub async fn command(
    run_id: &str,
    format: Format,
    output: Option<&Path>,
    store_flag: Option<&str>,
) -> crate::exit::Outcome {
    use crate::exit::{Exit, Failure};
    let fail = |message: &dyn std::fmt::Display| Err(Failure::invalid(message));
    let url = crate::store::chosen_url(store_flag);
    // Reading a run must not create a store.
    let store = match Store::open_existing(&url).await {
        Ok(Some(s)) => s,
        Ok(None) => return fail(&StoreError::UnknownRun(run_id.to_owned())),
        Err(e) => return fail(&e),
    };
    let events = load(&store, run_id).await;
    store.close().await;
    let events = match events {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let mut report = match build(run_id, &events, crate::store::now_ms()) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    // Where each step's log is, for the steps that wrote one here.
    let logs = crate::store::url::log_dir(&url, run_id);
    for s in &mut report.steps {
        let path = logs.join(format!("{}.log", s.id));
        s.log = path.exists().then(|| path.display().to_string());
    }
    let text = report.render(format);
    match output {
        Some(path) => match write_atomically(path, text.as_bytes()) {
            Ok(()) => Ok(Exit::Ok),
            Err(e) => fail(&e),
        },
        None => {
            use std::io::IsTerminal as _;
            let mut out = std::io::stdout().lock();
            // On a terminal, control characters are shown escaped; into a file or a pipe
            // the report goes as it is.
            let text = if out.is_terminal() {
                crate::terminal::safe(&text)
            } else {
                std::borrow::Cow::Borrowed(text.as_str())
            };
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => Ok(Exit::Ok),
                // A closed pipe (`runbook report X | head`) is not an error worth a word.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::Ok),
                Err(e) => fail(&format!("cannot write the report to standard output: {e}")),
            }
        }
    }
}
