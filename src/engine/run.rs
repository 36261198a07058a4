//! The imperative shell around `decide`: records each event before acting on it, runs
//! the actions, and follows events other processes append (approvals, aborts).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use indexmap::IndexMap;
use serde_json::Value;

use super::action::{self, Masker, Outcome};
use super::decide::{self, Next};
use super::event::{Decision, Event};
use super::report::Reporter;
use super::state::{Illegal, ItemStatus, RunState, RunStatus, StepStatus};
use super::target;
use super::undo;
use super::work::{self, Unit, Worker};
use crate::runbook::{Action, Condition, ForEach, Kind, MaxFailures, OnTimeout, Runbook, Step};
use crate::store::{Store, StoreError, now_ms};

/// How soon a public update the store refused is tried again, doubling up to the max.
const PUBLISH_RETRY_FIRST: Duration = Duration::from_millis(250);
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(5);

/// How often a runner at work looks for an operator's `runbook abort`.
const ABORT_POLL: Duration = Duration::from_secs(1);

/// Why the engine stopped before the run ended.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Illegal(#[from] Illegal),
    /// Another process changed the run first; the state has been read again.
    #[error("the run was changed by another process")]
    Conflict,
}

/// Where a drive of the engine stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// The run ended with this status.
    Ended(RunStatus),
    /// The run is paused; an operator resumes it.
    Paused(String),
    /// A step is in doubt after a crash; an operator decides.
    InDoubt(String),
}

/// Runs one run of a runbook.
pub struct Runner<'a> {
    pub rb: &'a Runbook,
    pub store: Store,
    pub run_id: String,
    pub state: RunState,
    /// Highest journal sequence number folded into `state`.
    pub seq: i64,
    pub masker: Masker,
    pub secrets: IndexMap<String, String>,
    pub log_dir: PathBuf,
    pub out: Reporter,
    /// A dry run: SQL checks run where they cannot write.
    pub read_only: bool,
    templates: super::quote::Templates,
    /// What earlier runs of this runbook took (ETA, overrun, window guard).
    pub learned: super::timing::Learned,
}

impl<'a> Runner<'a> {
    /// A runner for a run whose journal (possibly empty) is `state` up to `seq`.
    pub fn new(
        rb: &'a Runbook,
        store: Store,
        run_id: String,
        state: RunState,
        seq: i64,
        log_dir: PathBuf,
        out: Reporter,
    ) -> Self {
        let secrets = action::secret_values(&rb.secrets);
        let masker = Masker::new(secrets.clone());
        let templates = super::quote::Templates::new(&masker);
        Runner {
            rb,
            store,
            run_id,
            state,
            seq,
            masker,
            secrets,
            log_dir,
            out,
            read_only: false,
            templates,
            learned: Default::default(),
        }
    }

    /// Checks the event against the state, commits it to the journal, then applies it.
    pub async fn record(&mut self, event: Event) -> Result<(), EngineError> {
        self.record_all(vec![event]).await
    }

    /// Records events that all come before the next action in one commit (all or none).
    /// When another process appended first (an abort, an approval), nothing is written:
    /// the state is read again and the answer is [`EngineError::Conflict`], so the engine
    /// decides again from what really happened. Public updates written in between (a
    /// person's through the admin API, an overrun notice) change nothing the engine
    /// decided: then the same events are committed after them.
    pub async fn record_all(&mut self, events: Vec<Event>) -> Result<(), EngineError> {
        let mut events: Vec<Event> = events.into_iter().map(|e| self.mask_event(e)).collect();
        let at_ms = now_ms();
        let mut next = self.state.clone();
        for event in &events {
            next.apply(event, at_ms)?;
        }
        // What customers are told is committed with what it tells.
        if events.iter().any(crate::engine::publish::announces) {
            let base = self.context_of(&next, None);
            let updates = crate::engine::publish::Publisher::new(self.rb, &self.learned).updates(
                &self.state,
                &events,
                &next,
                &base,
                at_ms,
            );
            for u in updates {
                let e = self.mask_event(Event::Published(u));
                next.apply(&e, at_ms)?;
                events.push(e);
            }
        }
        loop {
            match self
                .store
                .append(&self.run_id, self.seq + 1, &events, at_ms)
                .await
            {
                Ok(recorded) => {
                    self.state = next;
                    for r in &recorded {
                        self.seq = r.seq;
                        self.out.event(&self.run_id, r);
                        crash_point(r.seq);
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => {
                    if !self.sync().await? {
                        return Err(EngineError::Conflict);
                    }
                    next = self.state.clone();
                    for event in &events {
                        next.apply(event, at_ms)?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Folds events other processes appended (approvals, aborts, public updates).
    /// `true` when they were all public updates (nothing the engine decides on).
    pub async fn sync(&mut self) -> Result<bool, EngineError> {
        let mut only_updates = true;
        for r in self.store.load_after(&self.run_id, self.seq).await? {
            self.state.apply(&r.event, r.at_ms)?;
            self.seq = r.seq;
            self.out.event(&self.run_id, &r);
            only_updates &= matches!(r.event, Event::Published(_));
        }
        Ok(only_updates)
    }

    /// Records the statements stopped on the server since the last call (the work that
    /// ran them was dropped: a timeout, an abort, a signal), as events of `step` (else of
    /// the step at work, or the last one that started). They are facts, recorded whatever else was written meanwhile
    /// (an abort). With `all`, every statement still running is being stopped too.
    pub async fn record_cancellations(
        &mut self,
        step: Option<&str>,
        all: bool,
    ) -> Result<(), EngineError> {
        let cancelled = target::settle_cancellations(all).await;
        if cancelled.is_empty() {
            return Ok(());
        }
        let step = step.map(str::to_owned).unwrap_or_else(|| {
            let at_work = self.state.steps.iter().find(|(_, s)| {
                matches!(
                    s.status,
                    StepStatus::Checking | StepStatus::Running | StepStatus::RollingBack
                )
            });
            // Else the step that started last.
            at_work
                .or(self.state.steps.last())
                .map(|(id, _)| id.clone())
                .unwrap_or_default()
        });
        let events: Vec<Event> = cancelled
            .into_iter()
            .map(|c| Event::StatementCancelled {
                step: step.clone(),
                database: c.database,
                pid: c.pid,
                statement: c.statement,
                terminated: c.terminated,
                error: c.error,
            })
            .collect();
        // A conflict has read the state again; the next try goes after what came in.
        let mut tries = 0;
        loop {
            match self.record_all(events.clone()).await {
                Err(EngineError::Conflict) if tries < 10 => tries += 1,
                other => return other,
            }
        }
    }

    /// Tells customers that `step` runs late: once it passes its estimate (learned, or
    /// `expected`) by `status_page.overrun.after`, then again every
    /// `status_page.overrun.every` while it runs, each time with a new ETA. Committed on
    /// its own while the step runs: the runner's next record finds it and goes on.
    async fn announce_overrun(&self, step: &Step) {
        let items = self.rb.item_count(step);
        let mut last = None;
        loop {
            let Some(due) = self.overrun_due(step, items, last) else {
                return std::future::pending().await;
            };
            let wait = (due - now_ms()).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            self.publish_overrun(step).await;
            last = Some(now_ms());
        }
    }

    /// When `step` (with `items` fan-out items) is next due an overrun update, after one
    /// at `last`. Only a step that says how long it should take is announced as late
    /// (a learned figure can move the moment, not make a step without `expected` late).
    fn overrun_due(&self, step: &Step, items: Option<usize>, last: Option<i64>) -> Option<i64> {
        step.expected?;
        let est = super::timing::estimate(step, items, &self.learned);
        let sp = &self.rb.status_page;
        let margin = sp
            .overrun_after
            .of(Duration::from_millis(est.ms.max(0) as u64));
        let started = self.state.step(&step.id).started_ms.unwrap_or_else(now_ms);
        Some(super::timing::overrun_due(
            started,
            est.ms,
            crate::duration::millis(margin),
            crate::duration::millis(sp.overrun_every),
            last,
        ))
    }

    async fn publish_overrun(&self, step: &Step) {
        let publisher = crate::engine::publish::Publisher::new(self.rb, &self.learned);
        let Some(u) = publisher.overrun(&self.state, step, &self.context(None), now_ms()) else {
            return;
        };
        let e = self.mask_event(Event::Published(u));
        // After other public updates (its own earlier ones, a person's): say it after
        // them. After anything else (an abort): say nothing. A store that fails is
        // tried again soon (customers must not read a past ETA), and the engineer hears
        // of it.
        let mut head = self.seq;
        let mut delay = PUBLISH_RETRY_FIRST;
        loop {
            let appended = match self.store.load_after(&self.run_id, head).await {
                Err(e) => Err(e),
                Ok(newer) => {
                    if newer
                        .iter()
                        .any(|r| !matches!(r.event, Event::Published(_)))
                    {
                        return;
                    }
                    head = newer.last().map_or(head, |r| r.seq);
                    match injected_publish_failure() {
                        Some(e) => Err(e),
                        None => {
                            self.store
                                .append(&self.run_id, head + 1, std::slice::from_ref(&e), now_ms())
                                .await
                        }
                    }
                }
            };
            match appended {
                Ok(_) => return,
                Err(StoreError::Conflict(_)) => continue,
                Err(err) => {
                    self.out.note(&format!(
                        "the public update that step `{}` runs late could not be recorded ({err}); trying again in {}",
                        step.id,
                        crate::duration::fmt_duration(delay)
                    ));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(PUBLISH_RETRY_MAX);
                }
            }
        }
    }

    fn mask_event(&self, event: Event) -> Event {
        self.masker.event(event)
    }

    /// Drives the run until it ends or needs a person.
    pub async fn drive(&mut self) -> Result<Stop, EngineError> {
        self.sync().await?;
        loop {
            let next = decide::decide(self.rb, &self.state);
            match self.act_on(next).await {
                Ok(Some(stop)) => return Ok(stop),
                Ok(None) => {}
                // Someone else wrote first and the state is fresh: decide again.
                Err(EngineError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Carries out one decision; `Some` when the drive stops here.
    async fn act_on(&mut self, next: Next) -> Result<Option<Stop>, EngineError> {
        match next {
            Next::Done(status) => return Ok(Some(Stop::Ended(status))),
            Next::Wait => {
                return Ok(Some(Stop::Paused(
                    self.state.reason.clone().unwrap_or_else(|| "paused".into()),
                )));
            }
            Next::Pause { reason } => {
                self.record(Event::RunPaused {
                    reason: reason.clone(),
                    guard: None,
                })
                .await?;
                return Ok(Some(Stop::Paused(reason)));
            }
            Next::InDoubt { step, rerun } => {
                let id = self.rb.steps[step].id.clone();
                if !rerun {
                    return Ok(Some(Stop::InDoubt(id)));
                }
                self.record(Event::RunResumed {
                    decision: Decision::Retry,
                    by: "runbook (safe to repeat)".into(),
                })
                .await?;
            }
            Next::Skip { step, reason } => {
                let step = self.rb.steps[step].id.clone();
                self.record(Event::StepSkipped { step, reason }).await?;
            }
            Next::IgnoreFailure { step } => {
                let step = self.rb.steps[step].id.clone();
                self.record(Event::FailureIgnored { step }).await?;
            }
            Next::Retry {
                step,
                next_attempt,
                at_ms,
            } => {
                let step = self.rb.steps[step].id.clone();
                self.record(Event::RetryScheduled {
                    step,
                    next_attempt,
                    at_ms,
                })
                .await?;
            }
            Next::StartRollback { reason } => {
                self.record(Event::RollbackStarted { reason }).await?;
            }
            Next::RollbackStep { step } => self.undo(step, false).await?,
            Next::Restore { step } => self.undo(step, true).await?,
            Next::Reopen => self.record(Event::ServiceReopened).await?,
            Next::Finish(outcome) => {
                let event = match outcome {
                    decide::Outcome::Completed => Event::RunCompleted,
                    decide::Outcome::RolledBack { left } => Event::RunRolledBack { left },
                    decide::Outcome::Failed(reason) => Event::RunFailed { reason },
                    decide::Outcome::Aborted(reason) => Event::RunAborted {
                        by: "runbook (on_failure: abort)".into(),
                        reason,
                    },
                };
                self.record(event).await?;
            }
            Next::AwaitApproval { step } => self.await_approval(step).await?,
            Next::Start {
                step,
                attempt,
                not_before_ms,
            } => {
                if let Some(stop) = self.window_guard(step, attempt).await? {
                    return Ok(stop);
                }
                if let Some(at) = not_before_ms {
                    let wait = at - now_ms();
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    }
                }
                self.run_step(step, attempt).await?;
            }
        }
        Ok(None)
    }

    /// The end of this run's window, when it has one.
    pub fn window_end_ms(&self) -> Option<i64> {
        let start = self.window_start(&self.state)?;
        Some(crate::duration::after(start, self.rb.window.duration?).timestamp_millis())
    }

    /// Before a step's first attempt: when the step and the rollback of what is done
    /// would pass the window's end, pause for a person (or, with `--guard strict`, roll
    /// back now). A step a person let go on after such a pause is not stopped again.
    async fn window_guard(
        &mut self,
        i: usize,
        attempt: u32,
    ) -> Result<Option<Option<Stop>>, EngineError> {
        let step = &self.rb.steps[i];
        if attempt != 1
            || matches!(step.kind, Kind::Reopen | Kind::Announce)
            || self.state.guard_accepted.contains(&step.id)
        {
            return Ok(None);
        }
        let trip = super::timing::guard(
            self.rb,
            &self.state,
            step,
            &self.learned,
            self.window_end_ms(),
            now_ms(),
        );
        let Some(trip) = trip else { return Ok(None) };
        let reason = trip.reason(self.rb.window.timezone);
        if self.state.guard_strict {
            self.record(Event::RollbackStarted {
                reason: format!("{reason} (--guard strict)"),
            })
            .await?;
            return Ok(Some(None));
        }
        let reason = format!(
            "{reason}: `runbook resume {run}` to start it anyway, `runbook resume {run} --rollback` to roll back now",
            run = self.run_id
        );
        self.record(Event::RunPaused {
            reason: reason.clone(),
            guard: Some(step.id.clone()),
        })
        .await?;
        Ok(Some(Some(Stop::Paused(reason))))
    }

    /// When this run's window opened (see [`work::window_start`]).
    fn window_start(&self, state: &RunState) -> Option<chrono::DateTime<chrono::Utc>> {
        work::window_start(self.rb, state)
    }

    /// What a step's effects read of the run as it is now.
    pub(crate) fn worker(&self) -> Worker<'_> {
        Worker::new(
            self.rb,
            &self.state,
            &self.run_id,
            &self.masker,
            &self.secrets,
            &self.templates,
            &self.log_dir,
            self.read_only,
        )
    }

    /// The values templates can use at this point of the run.
    pub(crate) fn context(&self, item: Option<&Value>) -> Value {
        self.worker().context(item)
    }

    /// The values templates can use in `state`.
    pub(crate) fn context_of(&self, state: &RunState, item: Option<&Value>) -> Value {
        self.worker().context_of(state, item)
    }

    /// One condition, with this run's values (`runbook approve`'s checks, say).
    pub(crate) async fn holds(&self, c: &Condition, ctx: &Value) -> Result<(), String> {
        self.worker().holds(c, ctx).await
    }

    async fn run_step(&mut self, i: usize, attempt: u32) -> Result<(), EngineError> {
        let rb = self.rb;
        let step = &rb.steps[i];
        let id = step.id.clone();
        let checking = Event::StepChecking {
            step: id.clone(),
            attempt,
        };
        // Events with no action between them share one commit.
        let mut batch = Vec::new();
        // A fan-out checks its preconditions per item, with that item.
        if step.preconditions.is_empty() || step.for_each.is_some() {
            batch.push(checking);
        } else {
            self.record(checking).await?;
            let checked = self
                .unless_aborted(
                    self.worker().preconditions(step),
                    Err("the run was aborted".into()),
                )
                .await;
            if let Err(message) = checked {
                self.record_cancellations(Some(&id), false).await?;
                if self.state.status.is_terminal() {
                    return Ok(());
                }
                self.record(Event::PreconditionFailed {
                    step: id,
                    attempt,
                    message,
                })
                .await?;
                return Ok(());
            }
        }
        batch.push(Event::StepStarted {
            step: id.clone(),
            attempt,
            verifying: matches!(step.kind, Kind::Test | Kind::Verify),
        });
        let succeeded = Event::StepSucceeded {
            step: id.clone(),
            attempt,
            outputs: IndexMap::new(),
        };
        let has_work = step.run.is_some()
            || !step.checks.is_empty()
            || step.for_each.is_some()
            || step.kind == Kind::Wait
            || work::has_builtin_work(step);
        match step.kind {
            // `close` closes the service before its action runs (to stop the
            // application, say); `reopen` reopens it once its action succeeded.
            Kind::Close if !self.state.closed => batch.push(Event::ServiceClosed),
            Kind::Approve => {
                batch.push(Event::ApprovalRequested { step: id });
                self.record_all(batch).await?;
                return self.await_approval(i).await;
            }
            _ => {}
        }
        if !has_work {
            // Nothing to do but say so (an announcement, a kind with no action).
            if step.kind == Kind::Reopen && self.state.closed {
                batch.push(Event::ServiceReopened);
            }
            batch.push(succeeded);
            return self.record_all(batch).await;
        }
        self.record_all(batch).await?;
        if step.for_each.is_some() {
            return self.fan_out(i, attempt).await;
        }
        let outcome = self.timed(step, self.worker().work(step, Unit::Step)).await;
        if step.kind == Kind::Reopen
            && self.state.closed
            && let Outcome::Succeeded(outputs) = outcome
        {
            return self
                .record_all(vec![
                    Event::ServiceReopened,
                    Event::StepSucceeded {
                        step: id,
                        attempt,
                        outputs,
                    },
                ])
                .await;
        }
        self.finish_attempt(&id, attempt, outcome).await
    }

    /// The step's work under its `timeout`, stopped early when an operator aborts the run.
    async fn timed(&self, step: &Step, work: impl Future<Output = Outcome>) -> Outcome {
        let work = async {
            let work = async {
                tokio::select! {
                    out = work => out,
                    () = self.announce_overrun(step) => unreachable!("never returns"),
                }
            };
            match step.timeout {
                Some(t) => tokio::time::timeout(t, work)
                    .await
                    .unwrap_or(Outcome::TimedOut),
                None => work.await,
            }
        };
        self.unless_aborted(work, Outcome::Failed("stopped: the run was aborted".into()))
            .await
    }

    /// `work`, or `stopped` as soon as another process has ended the run (`runbook
    /// abort`). Dropping `work` kills what it started.
    async fn unless_aborted<T>(&self, work: impl Future<Output = T>, stopped: T) -> T {
        tokio::select! {
            out = work => out,
            () = self.ended_elsewhere() => stopped,
        }
    }

    /// Returns once the journal holds an event after ours that ends the run.
    async fn ended_elsewhere(&self) {
        loop {
            tokio::time::sleep(ABORT_POLL).await;
            if let Ok(events) = self.store.load_after(&self.run_id, self.seq).await
                && events
                    .iter()
                    .any(|r| matches!(r.event, Event::RunAborted { .. }))
            {
                return;
            }
        }
    }

    async fn finish_attempt(
        &mut self,
        id: &str,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<(), EngineError> {
        // What the stopped work left running on a server is stopped first, and said so.
        self.record_cancellations(Some(id), false).await?;
        if self.state.status.is_terminal() {
            return Ok(());
        }
        let step = id.to_owned();
        let event = match outcome {
            Outcome::Succeeded(outputs) => Event::StepSucceeded {
                step,
                attempt,
                outputs,
            },
            Outcome::Failed(error) => Event::StepFailed {
                step,
                attempt,
                error,
            },
            Outcome::TimedOut => Event::StepTimedOut { step, attempt },
        };
        self.record(event).await
    }

    async fn await_approval(&mut self, i: usize) -> Result<(), EngineError> {
        let step = &self.rb.steps[i];
        let id = step.id.clone();
        let attempt = self.state.step(&id).attempts;
        let started = self.state.step(&id).started_ms.unwrap_or_else(now_ms);
        self.out.note(&format!(
            "step {id}: waiting for approval: runbook approve {} {id} (or reject)",
            self.run_id
        ));
        loop {
            self.sync().await?;
            let s = self.state.step(&id);
            if !s.awaiting_approval || self.state.status.is_terminal() {
                return Ok(());
            }
            if let Some(t) = step.timeout
                && now_ms() - started >= crate::duration::millis(t)
            {
                let event = match step.on_timeout {
                    OnTimeout::Reject => Event::StepTimedOut { step: id, attempt },
                    OnTimeout::Approve => Event::Approved {
                        step: id,
                        by: "timeout".into(),
                    },
                };
                return self.record(event).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs the items of a fan-out step not yet done, `concurrency` at a time, each
    /// through the same work as a single step ([`Worker::work`]) with its `{{item}}`.
    async fn fan_out(&mut self, i: usize, attempt: u32) -> Result<(), EngineError> {
        let rb = self.rb;
        let step = &rb.steps[i];
        let id = step.id.clone();
        // What the items read of the run: the run as the step starts (the items record
        // only their own starts and outcomes).
        let state = self.state.clone();
        let (run_id, masker, secrets) = (
            self.run_id.clone(),
            self.masker.clone(),
            self.secrets.clone(),
        );
        let (templates, log_dir) = (self.templates.clone(), self.log_dir.clone());
        let worker = Worker::new(
            rb,
            &state,
            &run_id,
            &masker,
            &secrets,
            &templates,
            &log_dir,
            self.read_only,
        );
        let items = match worker.items(step).await {
            Ok(items) => items,
            Err(e) => {
                return self
                    .record(Event::StepFailed {
                        step: id,
                        attempt,
                        error: e,
                    })
                    .await;
            }
        };
        let total = items.len();
        let noun = match step.for_each.as_ref() {
            Some(ForEach::Target(name)) => name.as_str(),
            _ => "items",
        };
        self.out.items(total, noun);
        let allowed = match step.max_failures {
            MaxFailures::None => 0,
            MaxFailures::Count(n) => n as usize,
            MaxFailures::Percent(p) => ((p / 100.0) * total as f64).floor() as usize,
        };
        let done = self.state.step(&id).items.clone();
        let mut failed = done.values().filter(|s| **s == ItemStatus::Failed).count();
        let mut todo: std::collections::VecDeque<usize> = (0..total)
            .filter(|ix| {
                !matches!(
                    done.get(ix),
                    Some(ItemStatus::Succeeded | ItemStatus::Failed)
                )
            })
            .collect();
        let mut running = FuturesUnordered::new();
        let concurrency = step.concurrency.max(1) as usize;
        let deadline = step.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut timed_out = false;
        let mut aborted = false;
        // Customers hear when a fan-out runs late, as for any step.
        let mut last_overrun: Option<i64> = None;
        loop {
            // Start what fits, all the starts in one commit, before any of them runs.
            let mut launch = Vec::new();
            while running.len() + launch.len() < concurrency && failed <= allowed {
                let Some(ix) = todo.pop_front() else { break };
                launch.push(ix);
            }
            if !launch.is_empty() {
                let started = launch
                    .iter()
                    .map(|&index| Event::ItemStarted {
                        step: id.clone(),
                        index,
                    })
                    .collect();
                self.record_all(started).await?;
            }
            for ix in launch {
                let (worker, item) = (&worker, &items[ix]);
                running.push(async move { (ix, worker.work(step, Unit::Item(ix, item)).await) });
            }
            if running.is_empty() {
                break;
            }
            let until = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let overrun_at = self.overrun_due(step, Some(items.len()), last_overrun);
            let late = async {
                let Some(at) = overrun_at else {
                    return std::future::pending().await;
                };
                let wait = (at - now_ms()).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            };
            let mut overrun = false;
            let first = tokio::select! {
                joined = running.next() => joined,
                () = until => {
                    timed_out = true;
                    None
                }
                () = self.ended_elsewhere() => {
                    aborted = true;
                    None
                }
                () = late => {
                    overrun = true;
                    None
                }
            };
            if overrun {
                let publisher = crate::engine::publish::Publisher::new(self.rb, &self.learned);
                let ctx = self.context(None);
                if let Some(u) = publisher.overrun(&self.state, step, &ctx, now_ms()) {
                    self.record(Event::Published(u)).await?;
                }
                last_overrun = Some(now_ms());
                continue;
            }
            let Some(first) = first else { break };
            // Everything that has finished by now goes into one commit.
            let mut finished = vec![first];
            while let Some(Some(more)) = running.next().now_or_never() {
                finished.push(more);
            }
            let outcomes = finished
                .into_iter()
                .map(|(index, outcome)| {
                    let step = id.clone();
                    match outcome {
                        Outcome::Succeeded(outputs) => Event::ItemSucceeded {
                            step,
                            index,
                            outputs,
                        },
                        Outcome::Failed(error) => {
                            failed += 1;
                            Event::ItemFailed { step, index, error }
                        }
                        Outcome::TimedOut => {
                            failed += 1;
                            Event::ItemFailed {
                                step,
                                index,
                                error: "timed out".into(),
                            }
                        }
                    }
                })
                .collect();
            self.record_all(outcomes).await?;
        }
        // Items still running are stopped (their process groups killed, their SQL
        // stopped on the server) as they drop.
        drop(running);
        if aborted {
            return self
                .finish_attempt(
                    &id,
                    attempt,
                    Outcome::Failed("stopped: the run was aborted".into()),
                )
                .await;
        }
        let outcome = if timed_out {
            Outcome::TimedOut
        } else if failed > allowed {
            Outcome::Failed(format!(
                "{failed} of {total} items failed (at most {allowed} may)"
            ))
        } else {
            let mut o = IndexMap::new();
            o.insert("items".into(), Value::from(total));
            o.insert("failed".into(), Value::from(failed));
            Outcome::Succeeded(o)
        };
        self.finish_attempt(&id, attempt, outcome).await
    }

    /// A fan-out step is undone item by item, most recent first (the reverse of the order
    /// the items succeeded), each item's undo journaled: after a crash only the items not
    /// undone yet are undone. Items that failed did nothing to undo.
    async fn undo_items(
        &mut self,
        step: &'a Step,
        action: &'a Action,
    ) -> Result<Outcome, EngineError> {
        let items = match self.worker().items(step).await {
            Ok(items) => items,
            Err(e) => {
                return Ok(Outcome::Failed(format!(
                    "cannot list the items to undo: {e}"
                )));
            }
        };
        let run = self.state.step(&step.id);
        let todo: Vec<usize> = run
            .finished
            .iter()
            .rev()
            .copied()
            .filter(|ix| {
                run.items.get(ix) == Some(&ItemStatus::Succeeded)
                    && run.items_undone.get(ix) != Some(&true)
            })
            .collect();
        for index in todo {
            let Some(item) = items.get(index) else {
                return Ok(Outcome::Failed(format!(
                    "item {index} is no longer in the list of items; undo it by hand"
                )));
            };
            self.record(Event::ItemRollbackStarted {
                step: step.id.clone(),
                index,
            })
            .await?;
            match self
                .worker()
                .undo(step, action, Unit::Item(index, item))
                .await
            {
                Outcome::Succeeded(_) => {
                    self.record(Event::ItemRolledBack {
                        step: step.id.clone(),
                        index,
                    })
                    .await?;
                }
                Outcome::Failed(e) => {
                    return Ok(Outcome::Failed(format!("item {index} ({item}): {e}")));
                }
                Outcome::TimedOut => {
                    return Ok(Outcome::Failed(format!("item {index} ({item}): timed out")));
                }
            }
        }
        Ok(Outcome::Succeeded(IndexMap::new()))
    }

    /// Undoes one step with its `rollback`, or (`restore`) restores a checkpoint with
    /// its `restore` action: a fan-out one item by item. A restore that succeeds also
    /// records the steps it brought back.
    async fn undo(&mut self, i: usize, restore: bool) -> Result<(), EngineError> {
        let rb = self.rb;
        let step = &rb.steps[i];
        let id = step.id.clone();
        if self.state.step(&id).status != StepStatus::RollingBack {
            self.record(Event::StepRollbackStarted { step: id.clone() })
                .await?;
        }
        let action = if restore {
            step.restore.as_deref()
        } else {
            step.rollback.as_deref()
        }
        .expect("decide only undoes steps with an action");
        let outcome = if step.for_each.is_some() {
            self.undo_items(step, action).await?
        } else {
            self.worker().undo(step, action, Unit::Step).await
        };
        self.record_cancellations(Some(&id), false).await?;
        let events =
            match outcome {
                Outcome::Succeeded(_) => {
                    let mut events = vec![Event::StepRolledBack {
                        step: id.clone(),
                        by_restore: None,
                    }];
                    if restore {
                        events.extend(undo::restored_by(rb, &self.state, i).into_iter().map(
                            |step| Event::StepRolledBack {
                                step,
                                by_restore: Some(id.clone()),
                            },
                        ));
                    }
                    events
                }
                Outcome::Failed(error) => vec![Event::StepRollbackFailed { step: id, error }],
                Outcome::TimedOut => vec![Event::StepRollbackFailed {
                    step: id,
                    error: "timed out".into(),
                }],
            };
        self.record_all(events).await
    }
}

/// Fault injection for the tests: with `RUNBOOK_TEST_FAIL_PUBLISH=N` the first N
/// attempts to record a public update while a step runs fail as a store outage would.
fn injected_publish_failure() -> Option<StoreError> {
    static LEFT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let left = LEFT.get_or_init(|| {
        std::sync::atomic::AtomicU32::new(
            std::env::var("RUNBOOK_TEST_FAIL_PUBLISH")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )
    });
    let take = left.fetch_update(
        std::sync::atomic::Ordering::SeqCst,
        std::sync::atomic::Ordering::SeqCst,
        |n| n.checked_sub(1),
    );
    take.is_ok().then(|| {
        StoreError::Sql(sqlx::Error::Protocol(
            "injected failure (RUNBOOK_TEST_FAIL_PUBLISH)".into(),
        ))
    })
}

/// Fault injection for the crash tests: with `RUNBOOK_TEST_KILL_AFTER_EVENT=N` the
/// runner kills itself with SIGKILL right after committing journal event N, as a power
/// cut or an OOM kill would; with `RUNBOOK_TEST_STOP_AFTER_EVENT=N` it stops itself
/// there (SIGSTOP, until a SIGCONT), as a runner stalled past its lease would.
fn crash_point(seq: i64) {
    static AT: std::sync::OnceLock<[Option<i64>; 2]> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        [
            "RUNBOOK_TEST_KILL_AFTER_EVENT",
            "RUNBOOK_TEST_STOP_AFTER_EVENT",
        ]
        .map(|var| std::env::var(var).ok().and_then(|v| v.parse().ok()))
    });
    for (n, signal) in at.iter().zip([libc::SIGKILL, libc::SIGSTOP]) {
        if *n == Some(seq) {
            // SAFETY: sending a signal to ourselves.
            unsafe { libc::kill(libc::getpid(), signal) };
        }
    }
}
