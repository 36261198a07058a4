//! The state of a run: a pure fold over its journal. Illegal transitions are errors, so
//! the engine can never record an event that makes no sense.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

use super::event::{Decision, Event, Recorded};

mod step;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Scheduled,
    Running,
    Paused,
    AwaitingApproval,
    Verifying,
    Completed,
    RollingBack,
    RolledBack,
    Failed,
    Aborted,
}

impl RunStatus {
    /// The run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::RolledBack | RunStatus::Failed | RunStatus::Aborted
        )
    }

    /// The name used in output and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Scheduled => "scheduled",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Verifying => "verifying",
            RunStatus::Completed => "completed",
            RunStatus::RollingBack => "rolling_back",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::Failed => "failed",
            RunStatus::Aborted => "aborted",
        }
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    #[default]
    Pending,
    Checking,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    RollingBack,
    RolledBack,
    RollbackFailed,
}

impl StepStatus {
    /// The name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Checking => "checking",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Skipped => "skipped",
            StepStatus::RollingBack => "rolling_back",
            StepStatus::RolledBack => "rolled_back",
            StepStatus::RollbackFailed => "rollback_failed",
        }
    }
}

/// Where one fan-out item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Running,
    Succeeded,
    Failed,
}

/// How far a step's running work has come, as it last reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    pub eta_ms: Option<i64>,
    /// What is counted (`rows of orders`).
    pub what: String,
    pub at_ms: i64,
}

/// What the journal says about one step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepRun {
    pub status: StepStatus,
    /// An attempt's action has started (past its preconditions): it may have changed
    /// something, even if it then failed.
    pub acted: bool,
    /// Fan-out items in the order they succeeded (a rollback undoes them in reverse).
    pub finished: Vec<usize>,
    /// Fan-out items whose undo started (`false`) or ended (`true`) in this rollback.
    pub items_undone: BTreeMap<usize, bool>,
    /// Attempts started so far (1 after the first `StepChecking`).
    pub attempts: u32,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub outputs: IndexMap<String, Value>,
    pub error: Option<String>,
    /// When the next attempt may start.
    pub retry_at_ms: Option<i64>,
    /// A failure the runbook tolerates (`on_failure: continue`).
    pub failure_ignored: bool,
    /// Waiting for `runbook approve` / `reject`.
    pub awaiting_approval: bool,
    pub decided_by: Option<String>,
    /// Fan-out items by index.
    pub items: BTreeMap<usize, ItemStatus>,
    /// What fan-out items produced, by index (only items with outputs).
    pub item_outputs: BTreeMap<usize, IndexMap<String, Value>>,
    /// Why each failed fan-out item failed, by index.
    pub item_errors: BTreeMap<usize, String>,
    /// Failed items a `resume --retry --only` left failed: they still count against
    /// `max_failures` when the step ends, but do not stop the hosts retried from starting.
    pub kept_failed: std::collections::BTreeSet<usize>,
    /// The running work's last report of its progress (`step_progress`).
    pub progress: Option<Progress>,
    /// A host step waiting for approval between waves: the wave (1-based) it would start.
    pub awaiting_wave: Option<usize>,
    /// Waves (1-based) of a host step a person let start, and the first one refused
    /// (by whom).
    pub waves_approved: std::collections::BTreeSet<usize>,
    pub wave_rejected: Option<(usize, String)>,
    /// Its statements stopped on the server.
    pub cancelled: Vec<StoppedStatement>,
}

/// A statement of a step that was stopped on the server when the runner stopped
/// waiting for it (`statement_cancelled`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoppedStatement {
    pub database: String,
    pub pid: Option<i32>,
    pub statement: String,
    pub terminated: bool,
    /// It could not be stopped, and may still be running.
    pub error: Option<String>,
}

impl StepRun {
    /// Whether the step has done something a rollback goes back over: it succeeded, or
    /// it is a fan-out step that failed after some of its items succeeded.
    pub fn has_work_to_undo(&self) -> bool {
        match self.status {
            StepStatus::Succeeded => true,
            StepStatus::Failed | StepStatus::TimedOut => {
                self.items.values().any(|i| *i == ItemStatus::Succeeded)
            }
            _ => false,
        }
    }

    /// Started and with no outcome recorded: after a crash, nobody knows how far it got.
    pub fn in_doubt(&self) -> bool {
        matches!(self.status, StepStatus::Checking | StepStatus::Running) && !self.awaiting_approval
    }
}

/// A run, as the fold of its events.
#[derive(Debug, Clone, Serialize)]
pub struct RunState {
    pub status: RunStatus,
    pub runbook: String,
    pub title: String,
    pub file: String,
    pub file_sha256: String,
    pub vars: IndexMap<String, Value>,
    /// `execute --limit`: the hosts and groups host steps run on (all when empty).
    pub limit: Vec<String>,
    /// The names of the run's secrets (environment variables), from its public plan.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    pub operator: String,
    pub host: String,
    pub pid: u32,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    /// When the window opened for this run, if not as planned (`--now`).
    pub window_start_ms: Option<i64>,
    /// Steps by id, in the order they first appeared in the journal.
    pub steps: IndexMap<String, StepRun>,
    /// The service is closed to customers (maintenance mode on).
    pub closed: bool,
    /// Why the run paused, rolled back, failed or was aborted.
    pub reason: Option<String>,
    /// Events folded so far.
    pub events: usize,
    /// The step the window guard paused before, while paused for it.
    pub guard_paused: Option<String>,
    /// Steps a person let start despite the window guard.
    pub guard_accepted: Vec<String>,
    /// `strict`: the guard rolls back instead of pausing.
    pub guard_strict: bool,
    /// `execute --rehearsal`: customers are told nothing of this run.
    pub rehearsal: bool,
    /// Taken out of the learned durations (`runbook forget`).
    pub forgotten: bool,
    /// The ETA a person gave last (`runbook update --eta`, the admin API): automatic
    /// updates never say earlier.
    pub person_eta_ms: Option<i64>,
    /// Automatic texts are muted until then (`runbook update --quiet`).
    pub quiet_until_ms: Option<i64>,
}

/// An event that cannot happen in the current state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{event}` cannot happen while {what} is {state}")]
pub struct Illegal {
    pub event: &'static str,
    pub what: String,
    pub state: &'static str,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            status: RunStatus::Scheduled,
            limit: Vec::new(),
            forgotten: false,
            runbook: String::new(),
            title: String::new(),
            file: String::new(),
            file_sha256: String::new(),
            vars: IndexMap::new(),
            secrets: Vec::new(),
            operator: String::new(),
            host: String::new(),
            pid: 0,
            started_ms: None,
            ended_ms: None,
            window_start_ms: None,
            steps: IndexMap::new(),
            closed: false,
            reason: None,
            events: 0,
            guard_paused: None,
            guard_accepted: Vec::new(),
            guard_strict: false,
            rehearsal: false,
            person_eta_ms: None,
            quiet_until_ms: None,
        }
    }
}

impl RunState {
    /// The state after all `events`, or the first illegal one.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = (&'a Event, i64)>,
    ) -> Result<RunState, Illegal> {
        events
            .into_iter()
            .try_fold(RunState::default(), |s, (e, at)| s.fold(e, at))
    }

    /// The state after a journal's recorded events, or the first illegal one.
    pub fn of_journal(events: &[Recorded]) -> Result<RunState, Illegal> {
        RunState::from_events(events.iter().map(|r| (&r.event, r.at_ms)))
    }

    /// The step's record (a step never mentioned is pending).
    pub fn step(&self, id: &str) -> &StepRun {
        static PENDING: std::sync::LazyLock<StepRun> = std::sync::LazyLock::new(StepRun::default);
        self.steps.get(id).unwrap_or(&PENDING)
    }

    /// The state after one more event recorded at `at_ms`.
    pub fn fold(mut self, event: &Event, at_ms: i64) -> Result<RunState, Illegal> {
        self.apply(event, at_ms)?;
        Ok(self)
    }

    /// Applies one event in place. On an illegal event nothing changes.
    pub fn apply(&mut self, event: &Event, at_ms: i64) -> Result<(), Illegal> {
        // A step first named by this event gets its record here; a refusal takes it back.
        let fresh = event.step().is_some_and(|id| !self.steps.contains_key(id));
        let applied = self.apply_checked(event, at_ms);
        if applied.is_err() && fresh {
            self.steps.pop();
        }
        applied
    }

    /// Steps that started and will get no outcome of their own (the run is ending, or
    /// rolling back past them) end `failed`, saying why; an undo without an outcome
    /// ends `rollback_failed`.
    fn end_unfinished_steps(&mut self, at_ms: i64, why: &str) {
        for step in self.steps.values_mut() {
            match step.status {
                StepStatus::Checking | StepStatus::Running => {
                    step.status = StepStatus::Failed;
                    step.error = Some(if step.awaiting_approval {
                        format!("{why} while it waited for approval")
                    } else {
                        why.to_owned()
                    });
                    step.ended_ms = Some(at_ms);
                    step.items.retain(|_, s| *s != ItemStatus::Running);
                    step.awaiting_approval = false;
                }
                StepStatus::RollingBack if self.status.is_terminal() => {
                    step.status = StepStatus::RollbackFailed;
                    step.error = Some(format!("{why} during the undo"));
                }
                _ => {}
            }
        }
    }

    /// A step is in doubt: it started and has no outcome (and is not waiting for a person).
    pub fn any_in_doubt(&self) -> bool {
        self.steps.values().any(StepRun::in_doubt)
    }

    /// Every check comes before any change of the step or run.
    fn apply_checked(&mut self, event: &Event, at_ms: i64) -> Result<(), Illegal> {
        use Event as E;
        use RunStatus as R;
        let run_illegal = |s: &RunState| Illegal {
            event: event.kind(),
            what: "the run".into(),
            state: s.status.as_str(),
        };
        // Nothing happens before the start or after the end.
        match event {
            E::RunStarted { .. } if self.status != R::Scheduled => return Err(run_illegal(self)),
            E::RunStarted { .. } => {}
            // A public update changes nothing in the run; one may follow its end (a
            // person's last word on the page).
            E::Published(_) if self.status == R::Scheduled => return Err(run_illegal(self)),
            E::Published(u) => {
                if u.kind == "manual" {
                    self.person_eta_ms = u.eta_ms.or(self.person_eta_ms);
                    self.quiet_until_ms = u.quiet_until_ms.or(self.quiet_until_ms);
                }
                self.events += 1;
                return Ok(());
            }
            // Only an ended run is forgotten, once.
            E::RunForgotten { .. } if !self.status.is_terminal() || self.forgotten => {
                return Err(run_illegal(self));
            }
            E::RunForgotten { .. } => {
                self.forgotten = true;
                self.events += 1;
                return Ok(());
            }
            // A fact about what the runner stopped, recorded after it stopped waiting
            // (possibly after an abort ended the run); it changes no decision.
            E::StatementCancelled { .. } if self.status == R::Scheduled => {
                return Err(run_illegal(self));
            }
            E::StatementCancelled {
                step,
                database,
                pid,
                statement,
                terminated,
                error,
            } => {
                let stopped = StoppedStatement {
                    database: database.clone(),
                    pid: *pid,
                    statement: statement.clone(),
                    terminated: *terminated,
                    error: error.clone(),
                };
                self.steps
                    .entry(step.clone())
                    .or_default()
                    .cancelled
                    .push(stopped);
                self.events += 1;
                return Ok(());
            }
            _ if self.status == R::Scheduled || self.status.is_terminal() => {
                return Err(run_illegal(self));
            }
            _ => {}
        }
        let status = self.status;
        if let Some(id) = event.step() {
            let step_run = self.steps.entry(id.to_owned()).or_default();
            let next = step::apply(step_run, status, event, at_ms).map_err(|st| Illegal {
                event: event.kind(),
                what: format!("step `{id}`"),
                state: st.as_str(),
            })?;
            if let Some(next) = next {
                self.status = next;
            }
            self.events += 1;
            return Ok(());
        }
        self.apply_run_event(event, at_ms)?;
        self.events += 1;
        Ok(())
    }

    /// An operator's decision resumes the run (`false`: it cannot now); which steps run
    /// again follows from it.
    fn resume(&mut self, decision: Decision, only: &[usize]) -> bool {
        use RunStatus as R;
        let status = self.status;
        // A pause ends with any decision but a rollback (that is
        // `rollback_started`); a running run is resumed only about a step in
        // doubt; a rollback only to retry an undo in doubt.
        let legal = match (status, decision) {
            (R::Paused, d) => d != Decision::Rollback,
            (R::Running | R::Verifying, Decision::Retry | Decision::Skip) => self.any_in_doubt(),
            (R::RollingBack, Decision::Retry) => true,
            _ => false,
        };
        if !legal {
            return false;
        }
        let rolling = status == R::RollingBack;
        if !rolling {
            self.status = R::Running;
        }
        self.reason = None;
        // Going on after the window guard's pause lets that step start.
        if let Some(step) = self.guard_paused.take()
            && decision != Decision::Rollback
        {
            self.guard_accepted.push(step);
        }
        if decision == Decision::Retry {
            for step in self.steps.values_mut() {
                if rolling {
                    // Only the undo in doubt runs again; the failure that
                    // started the rollback stays on record.
                    if step.status == StepStatus::RollingBack {
                        step.status = StepStatus::Succeeded;
                        // An item whose undo has no outcome is undone again.
                        step.items_undone.retain(|_, done| *done);
                    }
                    continue;
                }
                // The step in doubt, or the failed one, goes back to pending;
                // its finished fan-out items stay finished.
                let retry = step.in_doubt()
                    || (matches!(step.status, StepStatus::Failed | StepStatus::TimedOut)
                        && !step.failure_ignored);
                if retry {
                    step.status = StepStatus::Pending;
                    // `--only`: the other failed items stay failed.
                    step.items.retain(|ix, s| {
                        *s == ItemStatus::Succeeded
                            || (!only.is_empty() && *s == ItemStatus::Failed && !only.contains(ix))
                    });
                    step.kept_failed = step
                        .items
                        .iter()
                        .filter(|(_, s)| **s == ItemStatus::Failed)
                        .map(|(ix, _)| *ix)
                        .collect();
                    step.retry_at_ms = None;
                }
            }
        }
        true
    }

    /// An event about the run as a whole, checked against its status.
    fn apply_run_event(&mut self, event: &Event, at_ms: i64) -> Result<(), Illegal> {
        use Event as E;
        use RunStatus as R;
        let run_illegal = |s: &RunState| Illegal {
            event: event.kind(),
            what: "the run".into(),
            state: s.status.as_str(),
        };
        let status = self.status;
        let active = matches!(status, R::Running | R::Verifying);
        match event {
            E::RunStarted {
                runbook,
                title,
                file,
                file_sha256,
                vars,
                operator,
                host,
                pid,
                window_start_ms,
                guard,
                rehearsal,
                public,
                limit,
            } => {
                self.limit = limit.clone();
                self.rehearsal = *rehearsal;
                self.secrets = public
                    .as_ref()
                    .map(|p| p.secrets.clone())
                    .unwrap_or_default();
                self.guard_strict = guard.as_deref() == Some("strict");
                self.status = R::Running;
                self.runbook = runbook.clone();
                self.title = title.clone();
                self.file = file.clone();
                self.file_sha256 = file_sha256.clone();
                self.vars = vars.clone();
                self.operator = operator.clone();
                self.host = host.clone();
                self.pid = *pid;
                self.started_ms = Some(at_ms);
                self.window_start_ms = *window_start_ms;
            }
            E::ServiceClosed => {
                // Closing is forward work; a rollback only ever reopens.
                if self.closed || !active {
                    return Err(run_illegal(self));
                }
                self.closed = true;
            }
            E::ServiceReopened => {
                if !self.closed || !(active || status == R::RollingBack) {
                    return Err(run_illegal(self));
                }
                self.closed = false;
            }
            E::RunPaused { reason, guard } => {
                if !matches!(status, R::Running | R::Verifying | R::AwaitingApproval) {
                    return Err(run_illegal(self));
                }
                self.status = R::Paused;
                self.reason = Some(reason.clone());
                self.guard_paused = guard.clone();
            }
            E::RunResumed { decision, only, .. } => {
                if !self.resume(*decision, only) {
                    return Err(run_illegal(self));
                }
            }
            E::RollbackStarted { reason } => {
                if !matches!(
                    status,
                    R::Running | R::Verifying | R::Paused | R::AwaitingApproval
                ) {
                    return Err(run_illegal(self));
                }
                self.status = R::RollingBack;
                self.reason = Some(reason.clone());
                self.end_unfinished_steps(
                    at_ms,
                    "in doubt when the rollback began: it may have run in part and is not undone",
                );
            }
            E::RunCompleted => {
                if !active {
                    return Err(run_illegal(self));
                }
                self.status = R::Completed;
                self.ended_ms = Some(at_ms);
            }
            E::RunRolledBack { .. } => {
                // Not while an undo has no outcome, nor after one failed (that run
                // ends `failed`).
                let unfinished = self.steps.values().any(|s| {
                    matches!(
                        s.status,
                        StepStatus::RollingBack | StepStatus::RollbackFailed
                    )
                });
                if status != R::RollingBack || unfinished {
                    return Err(run_illegal(self));
                }
                self.status = R::RolledBack;
                self.ended_ms = Some(at_ms);
            }
            E::RunFailed { reason } | E::RunAborted { reason, .. } => {
                let (status, why) = if matches!(event, E::RunFailed { .. }) {
                    (R::Failed, "stopped: the run failed")
                } else {
                    (R::Aborted, "stopped: the run was aborted")
                };
                self.status = status;
                self.reason = Some(reason.clone());
                self.ended_ms = Some(at_ms);
                self.end_unfinished_steps(at_ms, why);
            }
            _ => unreachable!("step events are handled above"),
        }
        Ok(())
    }
}
