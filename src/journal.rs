//! Journal events: every transition of a run, appended before the engine acts on it.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happened. Serialized as JSON with a `type` tag; the journal stores one per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The run began: which runbook, from which file (and its hash), with which values.
    RunStarted {
        runbook: String,
        title: String,
        file: String,
        file_sha256: String,
        vars: IndexMap<String, Value>,
        operator: String,
        host: String,
        pid: u32,
        /// When the window opened for this run (Unix ms): `--now` opens it at the start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window_start_ms: Option<i64>,
        /// `strict`: the window guard rolls back by itself instead of pausing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guard: Option<String>,
        /// `execute --rehearsal`: a run for real that customers are not told of (nothing
        /// published, no incident, no component changed).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        rehearsal: bool,
        /// What the status page may show of this run (absent in journals written before
        /// the status page existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public: Option<Box<PublicPlan>>,
        /// `execute --limit`: host steps run only on these hosts and groups.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        limit: Vec<String>,
    },
    /// Preconditions of an attempt are being checked.
    StepChecking { step: String, attempt: u32 },
    /// A precondition did not hold.
    PreconditionFailed {
        step: String,
        attempt: u32,
        message: String,
    },
    /// The action of an attempt starts; committed before anything runs. `verifying` marks
    /// a `test` or `verify` step (the run shows as verifying while it runs).
    StepStarted {
        step: String,
        attempt: u32,
        #[serde(default)]
        verifying: bool,
        /// How long the runner expects it to take (learned from earlier runs, else its
        /// `expected`): what its overrun is measured against, on the page and in the
        /// report alike.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        estimate_ms: Option<i64>,
    },
    /// The attempt succeeded, with what it produced.
    StepSucceeded {
        step: String,
        attempt: u32,
        #[serde(default)]
        outputs: IndexMap<String, Value>,
    },
    /// The attempt failed.
    StepFailed {
        step: String,
        attempt: u32,
        error: String,
    },
    /// The attempt ran past the step's `timeout` and was stopped.
    StepTimedOut { step: String, attempt: u32 },
    /// Another attempt will start at `at_ms` (Unix milliseconds).
    RetryScheduled {
        step: String,
        next_attempt: u32,
        at_ms: i64,
    },
    /// The step will not run (operator's `--skip`, or a required step did not succeed).
    StepSkipped { step: String, reason: String },
    /// A failure the runbook tolerates (`on_failure: continue`); the run goes on.
    FailureIgnored { step: String },
    /// How far the running step's work has come, as it reports it (a backfill's rows):
    /// `done` of `total`, when it expects to end, and where it is (`cursor`).
    StepProgress {
        step: String,
        done: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eta_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        what: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<Value>,
    },
    /// One fan-out item started.
    ItemStarted {
        step: String,
        index: usize,
        /// The item's name (its `name`, its `item_label`, else its value).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
    },
    /// One fan-out item succeeded, with what it produced (a tenant's backup path, the
    /// version a tenant's database was migrated from ...).
    ItemSucceeded {
        step: String,
        index: usize,
        /// The item's name (its `name`, its `item_label`, else its value).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
        #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
        outputs: IndexMap<String, Value>,
    },
    /// One fan-out item failed.
    ItemFailed {
        step: String,
        index: usize,
        /// The item's name (its `name`, its `item_label`, else its value).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
        error: String,
    },
    /// An `approve` step is waiting for a person; or a host step between two waves
    /// (`approve_between_waves`), before wave `wave` (1-based) starts.
    ApprovalRequested {
        step: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wave: Option<usize>,
    },
    /// A person approved the waiting step.
    Approved {
        step: String,
        by: String,
        /// What the person said with it (`--comment`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// A person rejected the waiting step.
    Rejected {
        step: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// Maintenance mode is on: the service is closed to customers.
    ServiceClosed,
    /// Maintenance mode is off.
    ServiceReopened,
    /// The run stopped for an operator's decision. `guard`: the step the window guard
    /// stopped (resuming with `continue` lets it start).
    RunPaused {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guard: Option<String>,
    },
    /// An operator resumed the run.
    RunResumed {
        decision: Decision,
        by: String,
        /// Why (`resume --reason`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// `--retry --only`: the failed items (hosts) of the step that are run again, by
        /// index; the step's other failed items stay failed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        only: Vec<usize>,
    },
    /// The run undoes completed steps back to the last checkpoint.
    RollbackStarted { reason: String },
    /// Undoing one step.
    StepRollbackStarted { step: String },
    /// Undoing one fan-out item of the step being undone (its rollback, or its
    /// checkpoint's restore, with that item).
    ItemRollbackStarted {
        step: String,
        index: usize,
        /// The item's name (its `name`, its `item_label`, else its value).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
    },
    /// One fan-out item undone: a resumed rollback does not undo it again.
    ItemRolledBack {
        step: String,
        index: usize,
        /// The item's name (its `name`, its `item_label`, else its value).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
    },
    /// One step undone: by its own rollback, or (`by_restore`) by the restore of that
    /// checkpoint, recorded with the restore's own outcome.
    StepRolledBack {
        step: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by_restore: Option<String>,
    },
    /// Undoing one step failed; the run will end `failed`.
    StepRollbackFailed { step: String, error: String },
    /// All steps done.
    RunCompleted,
    /// Rolled back to the checkpoint. The service is restored unless `left` names steps
    /// that changed something and had no way back: they are left as they are.
    RunRolledBack {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        left: Vec<String>,
    },
    /// The run needs a person: a rollback failed, or a step failed with no way back.
    RunFailed { reason: String },
    /// Stopped by an operator, or by the runbook's `on_failure: abort`.
    RunAborted { by: String, reason: String },
    /// A person took an ended run out of the learned durations (`runbook forget`): its
    /// times were not typical. It changes nothing else.
    RunForgotten {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A statement the runner stopped waiting for (a timeout, an abort, Ctrl-C) was
    /// stopped on the server: cancelled (PostgreSQL `pg_cancel_backend`, SQLite
    /// interrupt), its backend `terminated` when the cancel did not take. `error`: it
    /// could not be stopped and may still be running. It changes nothing in the run.
    StatementCancelled {
        step: String,
        /// The database's URL, without its password.
        database: String,
        /// The PostgreSQL backend that ran it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
        /// The statement, shortened.
        statement: String,
        #[serde(default)]
        terminated: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A public update on the status page: rendered from `templates/` by the run, or
    /// written by a person through the admin API. It changes nothing in the run.
    Published(PublicUpdate),
}

/// What a run is, recorded when it starts so that the status page and the post-run
/// report are projections of the journal alone. The page reads only the public fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PublicPlan {
    /// The scheduled maintenance (from `runbook schedule`) this run carries out; `None`:
    /// the run is its own maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
    /// The title as customers read it (templates rendered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default)]
    pub components: Vec<String>,
    /// IANA zone the page shows this maintenance's times in.
    pub timezone: String,
    /// The planned window (Unix ms), when the runbook has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_start_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_end_ms: Option<i64>,
    /// The window's length (`window.duration`), with or without a planned start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<i64>,
    /// Steps in execution order; a step with `public: false` has no title.
    #[serde(default)]
    pub steps: Vec<PublicStep>,
    /// The names (never the values) of the environment variables the runbook declares
    /// as `secrets`: whoever writes to the run's journal later (the admin API) masks
    /// their values too. Not for the status page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// One step as the status page and the report know it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PublicStep {
    pub id: String,
    /// Public title; `None` hides the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ms: Option<u64>,
    /// The step's kind (`backup`, `migrate` ...), for the post-run report.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The step's own title, public or not: for the engineers' report only, never
    /// for the status page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A rollback point.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint: bool,
}

/// A public update, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicUpdate {
    /// What it announces, which is also the template that wrote it: `scheduled`,
    /// `in_progress`, `step_started`, `overrun`, `verifying`, `no_go`,
    /// `stopped_before_changes`, `rolling_back`, `completed`, `rolled_back`, `failed`,
    /// `aborted`, `announce`, or `manual`.
    pub kind: String,
    /// The Statuspage status it sets: `scheduled`, `in_progress`, `verifying`,
    /// `completed` for a maintenance; `investigating`, `identified`, `monitoring`,
    /// `resolved` for an incident.
    pub status: String,
    pub body: String,
    /// The step it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Projected end of the maintenance when this was published (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<i64>,
    /// Who wrote it, for a manual update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// An update of the incident a failed run opened, not of the maintenance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incident: bool,
    /// A person's update (`manual`) may mute automatic texts until then (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_until_ms: Option<i64>,
}

/// How an operator resumes a run stopped at a step in doubt or a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Go on (a pause for a decision that is not about one step).
    Continue,
    /// Run the step in doubt (or failed) again.
    Retry,
    /// Mark it skipped and go on.
    Skip,
    /// Roll back to the last checkpoint.
    Rollback,
}

impl Event {
    /// The step an event is about, if any.
    pub fn step(&self) -> Option<&str> {
        use Event::*;
        match self {
            StepChecking { step, .. }
            | PreconditionFailed { step, .. }
            | StepStarted { step, .. }
            | StepSucceeded { step, .. }
            | StepFailed { step, .. }
            | StepTimedOut { step, .. }
            | RetryScheduled { step, .. }
            | StepSkipped { step, .. }
            | FailureIgnored { step }
            | StepProgress { step, .. }
            | ItemStarted { step, .. }
            | ItemSucceeded { step, .. }
            | ItemFailed { step, .. }
            | ItemRollbackStarted { step, .. }
            | ItemRolledBack { step, .. }
            | ApprovalRequested { step, .. }
            | Approved { step, .. }
            | Rejected { step, .. }
            | StepRollbackStarted { step }
            | StepRolledBack { step, .. }
            | StepRollbackFailed { step, .. }
            | StatementCancelled { step, .. } => Some(step),
            _ => None,
        }
    }

    /// The `type` tag, as stored in the journal's `kind` column.
    pub fn kind(&self) -> &'static str {
        use Event::*;
        match self {
            RunStarted { .. } => "run_started",
            StepChecking { .. } => "step_checking",
            PreconditionFailed { .. } => "precondition_failed",
            StepStarted { .. } => "step_started",
            StepSucceeded { .. } => "step_succeeded",
            StepFailed { .. } => "step_failed",
            StepTimedOut { .. } => "step_timed_out",
            RetryScheduled { .. } => "retry_scheduled",
            StepSkipped { .. } => "step_skipped",
            FailureIgnored { .. } => "failure_ignored",
            StepProgress { .. } => "step_progress",
            ItemStarted { .. } => "item_started",
            ItemSucceeded { .. } => "item_succeeded",
            ItemFailed { .. } => "item_failed",
            ItemRollbackStarted { .. } => "item_rollback_started",
            ItemRolledBack { .. } => "item_rolled_back",
            ApprovalRequested { .. } => "approval_requested",
            Approved { .. } => "approved",
            Rejected { .. } => "rejected",
            ServiceClosed => "service_closed",
            ServiceReopened => "service_reopened",
            RunPaused { .. } => "run_paused",
            RunResumed { .. } => "run_resumed",
            RollbackStarted { .. } => "rollback_started",
            StepRollbackStarted { .. } => "step_rollback_started",
            StepRolledBack { .. } => "step_rolled_back",
            StepRollbackFailed { .. } => "step_rollback_failed",
            RunCompleted => "run_completed",
            RunRolledBack { .. } => "run_rolled_back",
            RunFailed { .. } => "run_failed",
            RunAborted { .. } => "run_aborted",
            RunForgotten { .. } => "run_forgotten",
            StatementCancelled { .. } => "statement_cancelled",
            Published(_) => "published",
        }
    }
}

/// An event as stored: its place in the run's journal and when it was appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub seq: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub event: Event,
}

/// An event of a scheduled maintenance's own stream (`runbook schedule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NoticeEvent {
    /// Published as scheduled (again, with new values, when rescheduled).
    MaintenanceScheduled(Announcement),
    /// A public update (the `scheduled` one, or a person's).
    Published(PublicUpdate),
    /// A run began carrying it out (its `run_started` names this maintenance too).
    MaintenanceStarted { run: String },
}

impl NoticeEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            NoticeEvent::MaintenanceScheduled(_) => "maintenance_scheduled",
            NoticeEvent::Published(_) => "published",
            NoticeEvent::MaintenanceStarted { .. } => "maintenance_started",
        }
    }
}

/// What `runbook schedule` publishes about a runbook before it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub runbook: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default)]
    pub components: Vec<String>,
    pub timezone: String,
    pub planned_start_ms: i64,
    pub planned_end_ms: i64,
    /// Shown from this moment on (`announce_before` ahead of the start).
    pub announce_from_ms: i64,
    /// Steps the run will take that the page may count ("step 4 of 9").
    #[serde(default)]
    pub public_steps: usize,
}

/// A recorded notice event.
#[derive(Debug, Clone, PartialEq)]
pub struct NoticeRecorded {
    pub seq: i64,
    pub at_ms: i64,
    pub event: NoticeEvent,
}
