//! The imperative shell around `decide`: records each event before acting on it, runs
//! the actions, and follows events other processes append (approvals, aborts).
//!
//! Here: recording and syncing events, overrun announcements, and the loop of `drive`:
//! ask [`decide`](decide::decide), carry out the one thing it says (`act_on`), record the
//! outcome. One step's attempt is in `step`, an approval in `approval`, a fan-out in
//! `fan_out`, undoing a step in `undo`; the time comes from a [`Clock`] and what a step
//! does to the world from its [`Effects`](effects::Effects).

mod approval;
mod clock;
pub(crate) mod effects;
mod fan_out;
mod step;
mod undo;

#[cfg(test)]
mod paused_tests;

pub use clock::Clock;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::action::{self, Masker};
use super::decide::{self, Facts, Next};
use super::event::{Decision, Event};
use super::state::{Illegal, RunState, RunStatus, StepStatus};
use super::target;
use super::terminal::Reporter;
use super::work::Worker;
use crate::runbook::{Condition, OnTimeout, Runbook, Step};
use crate::store::{Store, StoreError};

/// Recording stopped statements goes again at once after a conflict, 11 tries in all.
const CANCELLATION_RETRY: crate::retry::Backoff = crate::retry::Backoff::immediate(11);
/// How soon a public update the store refused is tried again, doubling up to the max.
const PUBLISH_RETRY: crate::retry::Backoff =
    crate::retry::Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

/// How often a step's progress is journaled at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Events another writer may append while a step works that change nothing the engine
/// decides: public updates and progress reports.
fn harmless(e: &Event) -> bool {
    matches!(e, Event::Published(_) | Event::StepProgress { .. })
}

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
    /// What time it is, and how the runner waits.
    pub clock: Clock,
    /// What the steps do to the world.
    pub(crate) effects: Arc<dyn effects::Effects>,
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
            clock: Clock::system(),
            effects: Arc::new(effects::Real),
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
        let at_ms = self.clock.now_ms();
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
            let appended = self
                .clock
                .io(self
                    .store
                    .append(&self.run_id, self.seq + 1, &events, at_ms))
                .await;
            match appended {
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
        let newer = self
            .clock
            .io(self.store.load_after(&self.run_id, self.seq))
            .await?;
        for r in newer {
            self.state.apply(&r.event, r.at_ms)?;
            self.seq = r.seq;
            self.out.event(&self.run_id, &r);
            only_updates &= harmless(&r.event);
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
        let mut attempts = CANCELLATION_RETRY.start(&crate::retry::Tokio);
        loop {
            match self.record_all(events.clone()).await {
                Err(EngineError::Conflict) => attempts
                    .after(crate::retry::Next::Now(EngineError::Conflict))
                    .await
                    .map_err(crate::retry::Failed::into_inner)?,
                other => return other,
            }
        }
    }

    /// Tells customers that `step` runs late, when [`decide::overrun_due`] says, each
    /// time with a new ETA. Committed on its own while the step runs: the runner's next
    /// record finds it and goes on.
    async fn announce_overrun(&self, step: &Step) {
        let items = self.rb.item_count(step);
        let mut last = None;
        loop {
            let due = self.overrun_due(step, items, last);
            self.clock.sleep_until_maybe(due).await;
            self.publish_overrun(step).await;
            last = Some(self.clock.now_ms());
        }
    }

    /// When `step` (with `items` items), running, is next due an overrun update after
    /// one at `last`.
    fn overrun_due(&self, step: &Step, items: Option<usize>, last: Option<i64>) -> Option<i64> {
        decide::overrun_due(
            self.rb,
            &self.state,
            step,
            items,
            &self.learned,
            last,
            self.clock.now_ms(),
        )
    }

    async fn publish_overrun(&self, step: &Step) {
        let publisher = crate::engine::publish::Publisher::new(self.rb, &self.learned);
        let now = self.clock.now_ms();
        let Some(u) = publisher.overrun(&self.state, step, &self.context(None), now) else {
            return;
        };
        let e = self.mask_event(Event::Published(u));
        // After other public updates (its own earlier ones, a person's): say it after
        // them. After anything else (an abort): say nothing. A store that fails is
        // tried again soon (customers must not read a past ETA), and the engineer hears
        // of it.
        let head = std::sync::atomic::AtomicI64::new(self.seq);
        let _never_gives_up = PUBLISH_RETRY
            .retry(
                &crate::retry::Tokio,
                || self.publish_after(&head, &e),
                |err, wait| match err {
                    StoreError::Conflict(_) => crate::retry::Next::Now(err),
                    err => {
                        self.out.note(&format!(
                            "the public update that step `{}` runs late could not be recorded ({err}); trying again in {}",
                            step.id,
                            crate::duration::fmt_duration(wait)
                        ));
                        crate::retry::Next::Later(err)
                    }
                },
            )
            .await;
    }

    /// One try of [`Self::publish_overrun`]: `e` appended after the public updates
    /// recorded since `head` (which it moves on), or nothing after anything else.
    async fn publish_after(
        &self,
        head: &std::sync::atomic::AtomicI64,
        e: &Event,
    ) -> Result<(), StoreError> {
        self.append_after(head, std::slice::from_ref(e)).await
    }

    /// `events` appended in one commit after the harmless events recorded since `head`
    /// (which it moves on), or nothing after anything else.
    async fn append_after(
        &self,
        head: &std::sync::atomic::AtomicI64,
        events: &[Event],
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let newer = self
            .clock
            .io(self.store.load_after(&self.run_id, head.load(SeqCst)))
            .await?;
        if newer.iter().any(|r| !harmless(&r.event)) {
            return Ok(());
        }
        if let Some(last) = newer.last() {
            head.store(last.seq, SeqCst);
        }
        if let Some(err) = injected_publish_failure() {
            return Err(err);
        }
        let next = head.load(SeqCst) + 1;
        let at = self.clock.now_ms();
        let append = self.store.append(&self.run_id, next, events, at);
        let recorded = self.clock.io(append).await?;
        if let Some(last) = recorded.last() {
            head.store(last.seq, SeqCst);
        }
        Ok(())
    }

    /// While step `step` works: its progress reports journaled (every one, so a
    /// backfill's cursor after each batch), in one commit every [`PROGRESS_EVERY`], after
    /// the public updates and progress since (never after anything else).
    pub(super) async fn journal_progress(&self, step: &Step) {
        let head = std::sync::atomic::AtomicI64::new(self.seq);
        loop {
            self.clock.sleep(PROGRESS_EVERY).await;
            let events: Vec<Event> = crate::engine::progress::take(&self.run_id, &step.id)
                .into_iter()
                .map(|r| {
                    self.mask_event(Event::StepProgress {
                        step: step.id.clone(),
                        done: r.done,
                        total: r.total,
                        eta_ms: r.eta_ms,
                        what: r.what,
                        cursor: r.cursor,
                    })
                })
                .collect();
            if events.is_empty() {
                continue;
            }
            // A store that refuses them now is told the next reports instead.
            let _ = self.append_after(&head, &events).await;
        }
    }

    fn mask_event(&self, event: Event) -> Event {
        self.masker.event(event)
    }

    /// Drives the run until it ends or needs a person.
    pub async fn drive(&mut self) -> Result<Stop, EngineError> {
        self.sync().await?;
        loop {
            let next = decide::decide(self.rb, &self.state, &self.facts());
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
            Next::Pause { reason, guard } => {
                self.record(Event::RunPaused {
                    reason: reason.clone(),
                    guard,
                })
                .await?;
                return Ok(Some(Stop::Paused(reason)));
            }
            Next::Sleep { until_ms } => self.clock.sleep_until(until_ms).await,
            Next::InDoubt { step, rerun } => {
                let id = self.rb.steps[step].id.clone();
                if !rerun {
                    return Ok(Some(Stop::InDoubt(id)));
                }
                self.record(Event::RunResumed {
                    decision: Decision::Retry,
                    by: "runbook (safe to repeat)".into(),
                    reason: None,
                    only: Vec::new(),
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
            Next::AwaitApproval { step, until_ms } => self.await_approval(step, until_ms).await?,
            Next::ApprovalTimedOut { step, on_timeout } => {
                let step = self.rb.steps[step].id.clone();
                let attempt = self.state.step(&step).attempts;
                let event = match on_timeout {
                    OnTimeout::Reject => Event::StepTimedOut { step, attempt },
                    OnTimeout::Approve => Event::Approved {
                        step,
                        by: "timeout".into(),
                        comment: None,
                    },
                };
                self.record(event).await?;
            }
            Next::Start { step, attempt } => self.run_step(step, attempt).await?,
        }
        Ok(None)
    }

    /// What `decide` knows now besides the journal.
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            now_ms: self.clock.now_ms(),
            learned: &self.learned,
            run_id: &self.run_id,
        }
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
