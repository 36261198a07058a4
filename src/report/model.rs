//! The report's data: what `runbook report RUN --format json` prints, and what the
//! Markdown and HTML renderings show. The JSON Schema in `report.schema.json` is derived
//! from these types (schemars), so the two cannot drift apart.
//!
//! Conventions: every instant is a pair, `X` (RFC 3339 in UTC, milliseconds) and `X_ms`
//! (Unix milliseconds); every other field ending in `_ms` is a duration in milliseconds.
//! Every field is always present; `null` says "not known" or "did not happen".

use std::borrow::Cow;

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The layout version of the JSON report; bumped only on a change that could break a
/// reader (a field removed, renamed or retyped). New fields do not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// `schema_version`: always 1 in this layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct SchemaVersion;

impl From<SchemaVersion> for u32 {
    fn from(_: SchemaVersion) -> u32 {
        SCHEMA_VERSION
    }
}

impl TryFrom<u32> for SchemaVersion {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if v == SCHEMA_VERSION {
            Ok(SchemaVersion)
        } else {
            Err(format!(
                "schema_version {v}: this reader knows {SCHEMA_VERSION}"
            ))
        }
    }
}

impl JsonSchema for SchemaVersion {
    fn schema_name() -> Cow<'static, str> {
        "SchemaVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The layout version of this document.",
            "type": "integer",
            "const": SCHEMA_VERSION,
        })
    }
    fn inline_schema() -> bool {
        true
    }
}

/// The post-run report of one run, projected from its journal alone.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "runbook report v1", deny_unknown_fields)]
pub struct Report {
    pub schema_version: SchemaVersion,
    /// When the report was made (for a run still going on, "so far" means up to here).
    pub generated_at: String,
    pub generated_at_ms: i64,
    pub run: RunInfo,
    pub window: Window,
    pub service: Service,
    /// Every step in the recorded plan's execution order, the ones that never ran too.
    pub steps: Vec<StepReport>,
    pub rollbacks: Vec<Rollback>,
    pub approvals: Vec<Approval>,
    /// Every `runbook resume` decision, oldest first: who, what and why.
    pub resumes: Vec<Resume>,
    /// Every public update as published on the status page, oldest first.
    pub public_updates: Vec<Update>,
    /// A draft for the postmortem: for runs that rolled back, failed or were aborted.
    pub postmortem: Option<Postmortem>,
}

/// Where a run is, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    RolledBack,
    Failed,
    Aborted,
    Running,
    Verifying,
    Paused,
    AwaitingApproval,
    RollingBack,
}

impl Outcome {
    /// The run has ended; otherwise the report is "the report so far".
    pub fn finished(self) -> bool {
        matches!(
            self,
            Outcome::Completed | Outcome::RolledBack | Outcome::Failed | Outcome::Aborted
        )
    }

    /// The word used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::Running => "running",
            Outcome::Verifying => "verifying",
            Outcome::Paused => "paused",
            Outcome::AwaitingApproval => "awaiting_approval",
            Outcome::RollingBack => "rolling_back",
        }
    }

    /// In words, for people.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::RolledBack => "rolled back",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::Running => "still running",
            Outcome::Verifying => "still running (verifying)",
            Outcome::Paused => "paused, waiting for an operator",
            Outcome::AwaitingApproval => "waiting for approval",
            Outcome::RollingBack => "rolling back",
        }
    }
}

/// The run: who ran what, and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunInfo {
    pub id: String,
    /// The runbook's id.
    pub runbook: String,
    /// The runbook's title.
    pub title: String,
    /// The title customers read on the status page (null: none recorded).
    pub public_title: Option<String>,
    pub summary: Option<String>,
    /// The scheduled maintenance (`runbook schedule`) this run carried out.
    pub maintenance: Option<String>,
    /// A rehearsal (`execute --rehearsal`): a run for real that customers were told
    /// nothing of.
    pub rehearsal: bool,
    pub components: Vec<String>,
    pub operator: String,
    pub host: String,
    /// The runbook file as it was when the run started, and its SHA-256.
    pub file: String,
    pub file_sha256: String,
    /// IANA zone the Markdown and HTML reports show times in.
    pub timezone: String,
    pub outcome: Outcome,
    /// False: the run has not ended and this is the report so far.
    pub finished: bool,
    /// Why the run paused, rolled back, failed or was aborted.
    pub reason: Option<String>,
    /// Who aborted the run.
    pub aborted_by: Option<String>,
    pub started_at: String,
    pub started_at_ms: i64,
    pub ended_at: Option<String>,
    pub ended_at_ms: Option<i64>,
    /// Start to end; for a run not finished, to `generated_at`.
    pub duration_ms: i64,
    /// Events in the journal.
    pub events: usize,
}

/// Where the planned start comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlannedStartFrom {
    /// The runbook's `window.start`, as recorded when the run started.
    Window,
    /// `execute --now` opened the window when the run started: the run was held to the
    /// window's length from then (the engine's own deadline).
    WindowOpened,
    /// No window start: the run's actual start.
    RunStart,
}

/// Where the planned end comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlannedEndFrom {
    /// The window's end (its start plus `window.duration`).
    Window,
    /// No window end: the planned start plus every step's `expected` duration.
    ExpectedDurations,
}

/// The maintenance window: planned versus actual.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Window {
    pub planned_start: String,
    pub planned_start_ms: i64,
    pub planned_start_from: PlannedStartFrom,
    pub planned_end: String,
    pub planned_end_ms: i64,
    pub planned_end_from: PlannedEndFrom,
    pub planned_duration_ms: i64,
    /// The window as the runbook scheduled it (recorded at the start), when it has one;
    /// differs from the planned window when `--now` opened it early or late.
    pub scheduled_start: Option<String>,
    pub scheduled_start_ms: Option<i64>,
    pub scheduled_end: Option<String>,
    pub scheduled_end_ms: Option<i64>,
    /// The sum of the steps' `expected` durations.
    pub expected_ms: i64,
    pub actual_start: String,
    pub actual_start_ms: i64,
    pub actual_end: Option<String>,
    pub actual_end_ms: Option<i64>,
    /// Actual start minus planned start: positive when the run started late.
    pub start_delay_ms: i64,
    /// The run ended by the planned end; null while a run not finished is still inside
    /// the window.
    pub held: Option<bool>,
    /// How long past the planned end the run ended (or, not finished, has run so far);
    /// 0 when it held.
    pub overrun_ms: i64,
}

/// When the service was closed to customers (maintenance mode on).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Service {
    /// Total time closed; an interval still open counts up to `generated_at`.
    pub closed_ms: i64,
    /// The run left the service closed (or it is closed right now).
    pub still_closed: bool,
    pub intervals: Vec<ClosedInterval>,
}

/// One closure: `service_closed` to `service_reopened`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClosedInterval {
    pub closed_at: String,
    pub closed_at_ms: i64,
    /// Null: not reopened (yet).
    pub reopened_at: Option<String>,
    pub reopened_at_ms: Option<i64>,
    pub duration_ms: i64,
}

/// Where a step is, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started yet; the run goes on.
    Pending,
    /// Never started, and the run has ended.
    NotRun,
    Checking,
    Running,
    AwaitingApproval,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    RollingBack,
    RolledBack,
    RollbackFailed,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::NotRun => "not_run",
            StepState::Checking => "checking",
            StepState::Running => "running",
            StepState::AwaitingApproval => "awaiting_approval",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::TimedOut => "timed_out",
            StepState::Skipped => "skipped",
            StepState::RollingBack => "rolling_back",
            StepState::RolledBack => "rolled_back",
            StepState::RollbackFailed => "rollback_failed",
        }
    }

    /// In words, for people.
    pub fn label(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::NotRun => "not run",
            StepState::Checking => "checking",
            StepState::Running => "running",
            StepState::AwaitingApproval => "awaiting approval",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::TimedOut => "timed out",
            StepState::Skipped => "skipped",
            StepState::RollingBack => "undoing",
            StepState::RolledBack => "undone",
            StepState::RollbackFailed => "undo failed",
        }
    }
}

/// One step: planned versus actual.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StepReport {
    /// 1-based place in the execution order.
    pub position: usize,
    pub id: String,
    /// The step's own title (else its public title, else its id).
    pub title: String,
    /// What the status page shows for it; null: hidden from customers.
    pub public_title: Option<String>,
    pub kind: String,
    /// A rollback point.
    pub checkpoint: bool,
    pub status: StepState,
    /// It failed, and the runbook let the run go on (`on_failure: continue`).
    pub failure_tolerated: bool,
    /// Planned duration; null when the runbook gives none (planned as 0).
    pub expected_ms: Option<u64>,
    /// Planned start: the previous step's planned end, from the window's planned start.
    pub planned_start: String,
    pub planned_start_ms: i64,
    pub planned_end: String,
    pub planned_end_ms: i64,
    /// First `step_checking` (or `step_started`).
    pub actual_start: Option<String>,
    pub actual_start_ms: Option<i64>,
    /// The step's last outcome.
    pub actual_end: Option<String>,
    pub actual_end_ms: Option<i64>,
    /// Actual end minus actual start: retries and their waits included.
    pub duration_ms: Option<i64>,
    /// What the runner expected it to take when it started: learned from earlier runs,
    /// else `expected` (null in a journal that does not say).
    pub estimate_ms: Option<i64>,
    /// Duration minus the estimate (else `expected`), when over by a second or more: the
    /// same measure as the page's overrun updates.
    pub overrun_ms: Option<i64>,
    pub attempts: u32,
    /// The outputs worth reading (backup: `size_bytes`, `path`, `tables`; migrate:
    /// `from_version`, `to_version`, `applied`; verify: `checks`; optimise:
    /// `size_before`, `size_after`; otherwise all), long values abbreviated.
    pub outputs: IndexMap<String, Value>,
    /// Fan-out items, for a step with `for_each`.
    pub items: Option<Items>,
    /// Each failed attempt's error (and failed fan-out items'), as masked in the journal.
    pub errors: Vec<AttemptError>,
    /// Errors left out of `errors` (failed fan-out items past the first 20).
    pub errors_omitted: usize,
    /// The step's last error (null for a skipped step: see `skip_reason`).
    pub error: Option<String>,
    pub skip_reason: Option<String>,
    /// Undoing the step in a rollback.
    pub undo: Option<Undo>,
    /// Its log file (a fan-out's items have `STEP.NAME.log` beside it), when the report
    /// is made where the logs are.
    pub log: Option<String>,
}

/// Fan-out items of a step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Items {
    /// Items started.
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Started and not finished.
    pub running: usize,
    /// Every item started, in the order of the list.
    pub rows: Vec<ItemRow>,
}

/// One fan-out item of a step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ItemRow {
    pub index: usize,
    /// Its name: its `name`, the step's `item_label`, else its value (null in a journal
    /// written before items had names).
    pub name: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// Its last attempt's start and end.
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The outputs worth reading, as for a step (a backup's `path`, `size_bytes`,
    /// `sha256`; a migration's versions).
    pub outputs: IndexMap<String, Value>,
    pub error: Option<String>,
    /// Undone in a rollback.
    pub undone: bool,
}

/// What went wrong in one attempt (or one fan-out item).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AttemptError {
    pub at: String,
    pub at_ms: i64,
    pub attempt: Option<u32>,
    /// The fan-out item's index, for an item's failure.
    pub item: Option<usize>,
    /// The fan-out item's name, for an item's failure.
    pub item_name: Option<String>,
    pub kind: ErrorKind,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    PreconditionFailed,
    Failed,
    TimedOut,
    Rejected,
    ItemFailed,
}

/// Undoing one step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Undo {
    pub status: UndoStatus,
    /// The checkpoint whose restore brought the step back (status `restored`).
    pub restored_by: Option<String>,
    pub started_at: String,
    pub started_at_ms: i64,
    pub ended_at: Option<String>,
    pub ended_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UndoStatus {
    /// Undone by its own rollback.
    Undone,
    /// Brought back by a checkpoint's restore (`restored_by`).
    Restored,
    UndoFailed,
    /// Started and no outcome recorded.
    Undoing,
    /// Changed something, had no rollback and no restore brought it back: left as it
    /// was when the run rolled back.
    Left,
}

/// A rollback: from `rollback_started` to the run's end.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Rollback {
    pub started_at: String,
    pub started_at_ms: i64,
    pub reason: String,
    pub ended_at: Option<String>,
    pub ended_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub outcome: RollbackOutcome,
    /// Steps undone (or not), in the order they were undone; the steps left as they
    /// were come last.
    pub steps: Vec<RollbackStep>,
    /// Ids of the steps left as they were: the service is restored only when empty.
    pub left: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RollbackOutcome {
    /// Back at the checkpoint: the service is restored, but for the steps in `left`.
    RolledBack,
    /// An undo failed: a person has to finish it.
    Failed,
    Aborted,
    InProgress,
}

/// One step undone in a rollback.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RollbackStep {
    pub id: String,
    pub title: String,
    pub status: UndoStatus,
    /// The checkpoint whose restore brought the step back (status `restored`).
    pub restored_by: Option<String>,
    pub started_at: String,
    pub started_at_ms: i64,
    pub ended_at: Option<String>,
    pub ended_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

/// An `approve` step's wait for a person.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Approval {
    pub step: String,
    pub title: String,
    pub decision: ApprovalDecision,
    /// Who decided (`timeout` for `on_timeout: approve`); null when nobody did.
    pub by: Option<String>,
    /// What they said with it (`approve`/`reject --comment`).
    pub comment: Option<String>,
    pub requested_at: String,
    pub requested_at_ms: i64,
    pub decided_at: Option<String>,
    pub decided_at_ms: Option<i64>,
    /// Requested to decided (or, still waiting, to `generated_at`).
    pub waited_ms: i64,
}

/// A person's decision to resume the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resume {
    pub at: String,
    pub at_ms: i64,
    /// `continue`, `retry`, `skip` or `rollback`.
    pub decision: String,
    pub by: String,
    /// Why (`resume --reason`).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approved,
    Rejected,
    /// Nobody decided within the step's `timeout`.
    TimedOut,
    /// An operator skipped the step.
    Skipped,
    /// The run ended (or rolled back) while it waited.
    Cancelled,
    /// Still waiting.
    Waiting,
}

/// A public update, as published.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Update {
    pub at: String,
    pub at_ms: i64,
    /// What it announces (`in_progress`, `step_started`, `overrun`, `completed`,
    /// `manual`, ...).
    pub kind: String,
    /// The Statuspage status it set.
    pub status: String,
    pub body: String,
    /// The step it is about.
    pub step: Option<String>,
    /// The projected end it announced.
    pub eta: Option<String>,
    pub eta_ms: Option<i64>,
    /// Who wrote it, for a manual update.
    pub by: Option<String>,
    /// An update of the incident a failed run opened.
    pub incident: bool,
}

/// A postmortem draft: the facts from the journal, and the sections people write.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Postmortem {
    pub summary: String,
    /// What happened, from the events (fan-out items and precondition checks left out).
    pub timeline: Vec<TimelineEntry>,
    pub impact: Impact,
    /// Placeholder: "to fill in".
    pub root_cause: String,
    /// Placeholder: "to fill in".
    pub follow_ups: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TimelineEntry {
    pub at: String,
    pub at_ms: i64,
    pub step: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Impact {
    pub text: String,
    pub closed_ms: i64,
    pub still_closed: bool,
    pub public_updates: usize,
    /// The run opened an incident on the status page.
    pub incident: bool,
}

/// What customers may read of a run: the public title and steps, the window, the
/// outcome and the public updates. No step ids, internal titles, outputs, errors or
/// logs; hidden steps are left out entirely.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "runbook public summary v1", deny_unknown_fields)]
pub struct PublicSummary {
    pub schema_version: SchemaVersion,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub components: Vec<String>,
    pub timezone: String,
    pub outcome: Outcome,
    pub finished: bool,
    pub planned_start: String,
    pub planned_start_ms: i64,
    pub planned_end: String,
    pub planned_end_ms: i64,
    pub actual_start: String,
    pub actual_start_ms: i64,
    pub actual_end: Option<String>,
    pub actual_end_ms: Option<i64>,
    pub held: Option<bool>,
    pub overrun_ms: i64,
    pub closed_ms: i64,
    pub steps: Vec<PublicStepSummary>,
    pub updates: Vec<PublicUpdateSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PublicStepSummary {
    pub title: String,
    pub status: StepState,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PublicUpdateSummary {
    pub at: String,
    pub at_ms: i64,
    pub status: String,
    pub body: String,
    pub incident: bool,
}
