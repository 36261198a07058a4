//! The imperative shell around `decide`: records each event before acting on it, runs
//! the actions, and follows events other processes append (approvals, aborts).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::action::{self, Masker, Outcome, StepLog};
use super::builtin;
use super::decide::{self, Next};
use super::event::{Decision, Event};
use super::report::Reporter;
use super::state::{Illegal, ItemStatus, RunState, RunStatus, StepStatus};
use super::target;
use crate::runbook::{
    Action, Check, Condition, ForEach, HttpCheck, Kind, MaxFailures, OnTimeout, Runbook, Step,
    Target,
};
use crate::store::{Store, StoreError, now_ms};

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
    templates: handlebars::Handlebars<'static>,
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
        let mut templates = handlebars::Handlebars::new();
        templates.set_strict_mode(true);
        templates.register_escape_fn(handlebars::no_escape);
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
        if events.iter().any(crate::status::publish::announces) {
            let base = self.context_of(&next, None);
            let updates = crate::status::publish::Publisher::new(self.rb, &self.learned).updates(
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

    /// Tells customers that `step` runs late: once it passes its estimate (learned, or
    /// `expected`) by `status_page.overrun.after`, then again every
    /// `status_page.overrun.every` while it runs, each time with a new ETA. Committed on
    /// its own while the step runs: the runner's next record finds it and goes on.
    async fn announce_overrun(&self, step: &Step) {
        let items = crate::plan::item_count(self.rb, step);
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
        let publisher = crate::status::publish::Publisher::new(self.rb, &self.learned);
        let Some(u) = publisher.overrun(&self.state, step, &self.context(None), now_ms()) else {
            return;
        };
        let e = self.mask_event(Event::Published(u));
        // After other public updates (its own earlier ones, a person's): say it after
        // them. After anything else (an abort): say nothing.
        let mut head = self.seq;
        for _ in 0..10 {
            let Ok(newer) = self.store.load_after(&self.run_id, head).await else {
                return;
            };
            if newer
                .iter()
                .any(|r| !matches!(r.event, Event::Published(_)))
            {
                return;
            }
            head = newer.last().map_or(head, |r| r.seq);
            match self
                .store
                .append(&self.run_id, head + 1, std::slice::from_ref(&e), now_ms())
                .await
            {
                Err(StoreError::Conflict(_)) => continue,
                _ => return,
            }
        }
    }

    fn mask_event(&self, event: Event) -> Event {
        match event {
            Event::StepFailed {
                step,
                attempt,
                error,
            } => Event::StepFailed {
                step,
                attempt,
                error: self.masker.mask(&error),
            },
            Event::PreconditionFailed {
                step,
                attempt,
                message,
            } => Event::PreconditionFailed {
                step,
                attempt,
                message: self.masker.mask(&message),
            },
            Event::ItemFailed { step, index, error } => Event::ItemFailed {
                step,
                index,
                error: self.masker.mask(&error),
            },
            Event::StepSucceeded {
                step,
                attempt,
                outputs,
            } => Event::StepSucceeded {
                step,
                attempt,
                outputs: outputs
                    .into_iter()
                    .map(|(k, v)| (k, self.masker.reference_value(v)))
                    .collect(),
            },
            Event::ItemSucceeded {
                step,
                index,
                outputs,
            } => Event::ItemSucceeded {
                step,
                index,
                outputs: outputs
                    .into_iter()
                    .map(|(k, v)| (k, self.masker.reference_value(v)))
                    .collect(),
            },
            Event::StepRollbackFailed { step, error } => Event::StepRollbackFailed {
                step,
                error: self.masker.mask(&error),
            },
            Event::Published(u) => Event::Published(crate::engine::event::PublicUpdate {
                body: self.masker.mask(&u.body),
                ..u
            }),
            other => other,
        }
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
            Next::RollbackStep { step } | Next::Restore { step } => self.undo(step).await?,
            Next::Reopen => self.record(Event::ServiceReopened).await?,
            Next::Finish(outcome) => {
                let event = match outcome {
                    decide::Outcome::Completed => Event::RunCompleted,
                    decide::Outcome::RolledBack => Event::RunRolledBack,
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

    /// When this run's window opened: as recorded at the start (`--now` opens it then),
    /// else the runbook's planned start, else the run's start.
    fn window_start(&self, state: &RunState) -> Option<chrono::DateTime<chrono::Utc>> {
        state
            .window_start_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .or(self.rb.window.start)
            .or_else(|| {
                state
                    .started_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
            })
    }

    /// The values templates can use at this point of the run.
    pub(crate) fn context(&self, item: Option<&Value>) -> Value {
        self.context_of(&self.state, item)
    }

    /// The values templates can use in `state`.
    pub(crate) fn context_of(&self, state: &RunState, item: Option<&Value>) -> Value {
        // Only steps that produced something: a template can refer to nothing else, and
        // a run of a thousand steps need not copy a thousand empty maps per context.
        let steps: serde_json::Map<String, Value> = state
            .steps
            .iter()
            .filter(|(_, s)| !s.outputs.is_empty())
            .map(|(id, s)| (id.clone(), json!({ "outputs": s.outputs })))
            .collect();
        let window = &self.rb.window;
        let start = self.window_start(state);
        json!({
            "vars": state.vars,
            "targets": {},
            "secrets": self.secrets,
            "run": {
                "id": self.run_id,
                "runbook": self.rb.id,
                "operator": state.operator,
                "started_at": state.started_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339()),
            },
            "window": {
                "start": start.map(|t| t.to_rfc3339()),
                "end": start.zip(window.duration).map(|(s, d)| crate::duration::after(s, d).to_rfc3339()),
                "duration": window.duration.map(crate::duration::fmt_duration),
                "timezone": window.timezone.name(),
            },
            "steps": steps,
            "item": item,
        })
    }

    fn render(&self, text: &str, ctx: &Value) -> Result<String, String> {
        if !text.contains("{{") {
            return Ok(text.to_owned());
        }
        match self.templates.render_template(text, ctx) {
            // Outputs hold secrets as references; the action gets the values.
            Ok(rendered) => Ok(self.masker.resolve(&rendered)),
            Err(e) => Err(match e.reason() {
                handlebars::RenderErrorReason::MissingVariable(Some(path)) => {
                    format!("`{{{{{path}}}}}` has no value at this point of the run (in `{text}`)")
                }
                reason => format!("template `{text}`: {reason}"),
            }),
        }
    }

    /// The request with its URL, headers, body and expected text rendered.
    fn render_http(&self, h: &HttpCheck, ctx: &Value) -> Result<HttpCheck, String> {
        Ok(HttpCheck {
            url: self.render(&h.url, ctx)?,
            headers: h
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render(v, ctx)?)))
                .collect::<Result<_, String>>()?,
            body: h.body.as_ref().map(|b| self.render(b, ctx)).transpose()?,
            expect_contains: h
                .expect_contains
                .as_ref()
                .map(|c| self.render(c, ctx))
                .transpose()?,
            ..h.clone()
        })
    }

    fn log(&self, step: &str) -> StepLog {
        let path = self.log_dir.join(format!("{step}.log"));
        StepLog::open(&path, self.masker.clone())
    }

    async fn run_step(&mut self, i: usize, attempt: u32) -> Result<(), EngineError> {
        let step = &self.rb.steps[i];
        let id = step.id.clone();
        let checking = Event::StepChecking {
            step: id.clone(),
            attempt,
        };
        // Events with no action between them share one commit.
        let mut batch = Vec::new();
        if step.preconditions.is_empty() {
            batch.push(checking);
        } else {
            self.record(checking).await?;
            let checked = self
                .unless_aborted(self.preconditions(step), Err("the run was aborted".into()))
                .await;
            if let Err(message) = checked {
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
        match step.kind {
            Kind::Close | Kind::Reopen if step.run.is_none() => {
                let close = step.kind == Kind::Close;
                if self.state.closed != close {
                    batch.push(if close {
                        Event::ServiceClosed
                    } else {
                        Event::ServiceReopened
                    });
                }
                batch.push(succeeded);
                return self.record_all(batch).await;
            }
            Kind::Approve => {
                batch.push(Event::ApprovalRequested { step: id });
                self.record_all(batch).await?;
                return self.await_approval(i).await;
            }
            // Nothing to do but say so (an announcement, a kind with no action).
            Kind::Announce | Kind::Patch | Kind::Install | Kind::Test | Kind::Verify
                if step.run.is_none()
                    && step.checks.is_empty()
                    && step.for_each.is_none()
                    && (step.kind != Kind::Verify || step.with.is_empty()) =>
            {
                batch.push(succeeded);
                return self.record_all(batch).await;
            }
            _ => self.record_all(batch).await?,
        }
        let outcome = match step.kind {
            Kind::Wait => self.timed(step, self.wait_until(step)).await,
            _ if step.for_each.is_some() => return self.fan_out(i, attempt).await,
            _ => {
                let mut ctx = self.context(None);
                ctx["step"] = Value::from(id.as_str());
                let mut log = self.log(&id);
                let work = async {
                    match self.act(step, &ctx, &mut log).await {
                        Outcome::Succeeded(outputs) => {
                            match self.checks(&step.checks, &ctx).await {
                                Ok(()) => Outcome::Succeeded(outputs),
                                Err(e) => Outcome::Failed(e),
                            }
                        }
                        other => other,
                    }
                };
                self.timed(step, work).await
            }
        };
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

    /// The step's own action: its `run`, or nothing (a kind whose work is its checks).
    async fn act(&self, step: &Step, ctx: &Value, log: &mut StepLog) -> Outcome {
        match &step.run {
            Some(a) => self.action(a, ctx, log).await,
            // A `verify` step with only `checks` has nothing built in to do.
            None if builtin::has_builtin(step.kind)
                && !(step.kind == Kind::Verify && step.with.is_empty()) =>
            {
                self.builtin(step.kind, &step.with, ctx, log).await
            }
            None => Outcome::Succeeded(IndexMap::new()),
        }
    }

    /// A kind's built-in behaviour, its `with` rendered first.
    async fn builtin(
        &self,
        kind: Kind,
        with: &IndexMap<String, Value>,
        ctx: &Value,
        log: &mut StepLog,
    ) -> Outcome {
        let name = ctx["step"].as_str().unwrap_or_default();
        match self.builtin_item(kind, with, ctx, name, Arc::new(self.all_outputs())) {
            Ok(item) => item.run(log).await,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// A built-in behaviour ready to run on its own (a fan-out item's task, say): `with`
    /// rendered, and what it needs of the run owned. `name` (`STEP` or `STEP.N`) names
    /// its files.
    fn builtin_item(
        &self,
        kind: Kind,
        with: &IndexMap<String, Value>,
        ctx: &Value,
        name: &str,
        outputs: Arc<Outputs>,
    ) -> Result<BuiltinItem, String> {
        Ok(BuiltinItem {
            kind,
            with: with
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render_value(v, ctx)?)))
                .collect::<Result<_, String>>()?,
            work_dir: self.work_dir(),
            run_id: self.run_id.clone(),
            name: name.to_owned(),
            outputs,
        })
    }

    /// Every step's outputs by id, and every fan-out item's as `STEP.N` (so `verify`
    /// finds what a fan-out `backup` recorded of each file).
    fn all_outputs(&self) -> Outputs {
        let mut all = IndexMap::new();
        for (id, s) in &self.state.steps {
            all.insert(id.clone(), s.outputs.clone());
            for (ix, o) in &s.item_outputs {
                all.insert(format!("{id}.{ix}"), o.clone());
            }
        }
        all
    }

    /// Every string in a `with` value rendered as a template.
    fn render_value(&self, v: &Value, ctx: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => Value::String(self.render(s, ctx)?),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.render_value(x, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), self.render_value(x, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    /// This run's directory for the files built-in actions make (backups, scratch).
    fn work_dir(&self) -> PathBuf {
        let state_dir = self
            .log_dir
            .parent()
            .and_then(|logs| logs.parent())
            .map(PathBuf::from)
            .unwrap_or_default();
        state_dir.join("work").join(&self.run_id)
    }

    async fn action(&self, a: &Action, ctx: &Value, log: &mut StepLog) -> Outcome {
        match a {
            Action::Shell {
                command,
                env,
                cwd,
                timeout,
            } => {
                let rendered = (|| {
                    let command = self.render(command, ctx)?;
                    let env = env
                        .iter()
                        .map(|(k, v)| Ok((k.clone(), self.render(v, ctx)?)))
                        .collect::<Result<IndexMap<_, _>, String>>()?;
                    let cwd = cwd.as_ref().map(|c| self.render(c, ctx)).transpose()?;
                    Ok::<_, String>((command, env, cwd))
                })();
                match rendered {
                    Ok((command, env, cwd)) => {
                        action::shell(
                            &command,
                            &env,
                            cwd.as_deref().map(std::path::Path::new),
                            *timeout,
                            log,
                        )
                        .await
                    }
                    Err(e) => Outcome::Failed(e),
                }
            }
            Action::Sql {
                sql,
                database,
                transaction,
            } => match (self.render(sql, ctx), self.render(database, ctx)) {
                (Ok(sql), Ok(db)) => target::sql(&db, &sql, *transaction, None).await,
                (Err(e), _) | (_, Err(e)) => Outcome::Failed(e),
            },
            Action::Http(h) => match self.render_http(h, ctx) {
                Ok(h) => action::http(&h, log).await,
                Err(e) => Outcome::Failed(e),
            },
            Action::Builtin { kind, with } => self.builtin(*kind, with, ctx, log).await,
        }
    }

    async fn preconditions(&self, step: &Step) -> Result<(), String> {
        if step.preconditions.is_empty() {
            return Ok(());
        }
        let ctx = self.context(None);
        let deadline = step.wait_for.map(|w| Instant::now() + w);
        loop {
            let result = self.conditions(&step.preconditions, &ctx).await;
            match (result, deadline) {
                (Ok(()), _) => return Ok(()),
                (Err(e), Some(d)) if Instant::now() < d => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_secs(1).min(d - Instant::now())).await;
                }
                (Err(e), _) => return Err(e),
            }
        }
    }

    async fn checks(&self, checks: &[Condition], ctx: &Value) -> Result<(), String> {
        if checks.is_empty() {
            return Ok(());
        }
        self.conditions(checks, ctx).await
    }

    /// Every condition, in order; the first that does not hold fails with its message.
    async fn conditions(&self, conditions: &[Condition], ctx: &Value) -> Result<(), String> {
        for c in conditions {
            self.holds(c, ctx).await?;
        }
        Ok(())
    }

    /// One condition; when it does not hold, its `message` says what that means.
    pub(crate) async fn holds(&self, c: &Condition, ctx: &Value) -> Result<(), String> {
        self.condition(&c.check, ctx)
            .await
            .map_err(|why| match &c.message {
                Some(m) => format!("{m}: {why}"),
                None => why,
            })
    }

    async fn condition(&self, check: &Check, ctx: &Value) -> Result<(), String> {
        match check {
            Check::Sql {
                sql,
                database,
                expect,
            } => {
                let sql = self.render(sql, ctx)?;
                let db = self.render(database, ctx)?;
                target::sql_check(&db, &sql, expect.as_ref(), self.read_only).await
            }
            Check::Shell { command, env } => {
                let command = self.render(command, ctx)?;
                let env = env
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.render(v, ctx)?)))
                    .collect::<Result<IndexMap<_, _>, String>>()?;
                let mut log = StepLog::memory(self.masker.clone());
                match action::shell(
                    &command,
                    &env,
                    None,
                    Some(Duration::from_secs(300)),
                    &mut log,
                )
                .await
                {
                    Outcome::Succeeded(_) => Ok(()),
                    Outcome::Failed(e) => Err(e),
                    Outcome::TimedOut => Err(format!("`{command}` timed out")),
                }
            }
            Check::Window { remaining_at_least } => {
                let (Some(start), Some(duration)) =
                    (self.window_start(&self.state), self.rb.window.duration)
                else {
                    return Ok(());
                };
                let end = crate::duration::after(start, duration);
                let left = (end - chrono::Utc::now()).to_std().unwrap_or_default();
                if left >= *remaining_at_least {
                    Ok(())
                } else {
                    Err(format!(
                        "only {} of the window is left, {} needed",
                        crate::duration::fmt_duration(left),
                        crate::duration::fmt_duration(*remaining_at_least)
                    ))
                }
            }
            Check::Step { id, state } => {
                let got = self.state.step(id).status;
                let want = match state {
                    crate::runbook::StepState::Succeeded => StepStatus::Succeeded,
                    crate::runbook::StepState::Failed => StepStatus::Failed,
                    crate::runbook::StepState::Skipped => StepStatus::Skipped,
                    crate::runbook::StepState::TimedOut => StepStatus::TimedOut,
                    crate::runbook::StepState::RolledBack => StepStatus::RolledBack,
                };
                if got == want {
                    Ok(())
                } else {
                    Err(format!(
                        "step `{id}` is {}, not {}",
                        got.as_str(),
                        want.as_str()
                    ))
                }
            }
            Check::Http(h) => {
                let h = self.render_http(h, ctx)?;
                let mut log = StepLog::memory(self.masker.clone());
                match action::http(&h, &mut log).await {
                    Outcome::Succeeded(_) => Ok(()),
                    Outcome::Failed(e) => Err(e),
                    Outcome::TimedOut => Err(format!("{} {} timed out", h.method, h.url)),
                }
            }
        }
    }

    async fn wait_until(&self, step: &Step) -> Outcome {
        let ctx = self.context(None);
        let interval = step.interval.unwrap_or(Duration::from_secs(10));
        let deadline = step.timeout.map(|t| Instant::now() + t);
        loop {
            match self.conditions(&step.until, &ctx).await {
                Ok(()) => return Outcome::Succeeded(IndexMap::new()),
                Err(_) if deadline.is_some_and(|d| Instant::now() + interval > d) => {
                    return Outcome::TimedOut;
                }
                Err(_) => tokio::time::sleep(interval).await,
            }
        }
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

    /// Runs the items of a fan-out step not yet done, `concurrency` at a time.
    async fn fan_out(&mut self, i: usize, attempt: u32) -> Result<(), EngineError> {
        let step = &self.rb.steps[i];
        let id = step.id.clone();
        let items = match self.items(step).await {
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
        // What earlier steps produced, read once for every item of this step.
        let outputs = Arc::new(self.all_outputs());
        let mut running = tokio::task::JoinSet::new();
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
                let ctx = self.context(Some(&items[ix]));
                let prepared =
                    self.prepare_item(step, &ctx, &format!("{id}.{ix}"), outputs.clone());
                let mut log = self.log(&format!("{id}.{ix}"));
                running.spawn(async move {
                    let outcome = match prepared {
                        Ok(p) => p.run(&mut log).await,
                        Err(e) => Outcome::Failed(e),
                    };
                    (ix, outcome)
                });
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
                joined = running.join_next() => joined,
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
                let publisher = crate::status::publish::Publisher::new(self.rb, &self.learned);
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
            while let Some(more) = running.try_join_next() {
                finished.push(more);
            }
            let outcomes = finished
                .into_iter()
                .map(|joined| {
                    let (index, outcome) = joined.expect("item tasks do not panic");
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
        // Items still running are stopped (their process groups killed) as the set drops.
        running.abort_all();
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

    async fn items(&self, step: &Step) -> Result<Vec<Value>, String> {
        match step.for_each.as_ref().expect("fan-out step") {
            ForEach::Items(items) => Ok(items.clone()),
            ForEach::Target(name) => match self.rb.targets.get(name) {
                Some(Target::Static(items)) => Ok(items.clone()),
                Some(Target::Query { sql, database }) => {
                    let ctx = self.context(None);
                    let sql = self.render(sql, &ctx)?;
                    let db = self.render(database, &ctx)?;
                    target::query_items(&db, &sql).await
                }
                None => Err(format!("unknown target `{name}`")),
            },
        }
    }

    /// One fan-out item's work with its templates rendered; `name` (`STEP.N`) names its
    /// files.
    fn prepare_item(
        &self,
        step: &Step,
        ctx: &Value,
        name: &str,
        outputs: Arc<Outputs>,
    ) -> Result<Prepared, String> {
        let builtin = |kind: Kind, with: &IndexMap<String, Value>| {
            Ok(Prepared::Builtin(Box::new(self.builtin_item(
                kind,
                with,
                ctx,
                name,
                outputs.clone(),
            )?)))
        };
        match step.run.as_deref() {
            Some(Action::Shell {
                command, env, cwd, ..
            }) => Ok(Prepared::Shell {
                command: self.render(command, ctx)?,
                env: env
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.render(v, ctx)?)))
                    .collect::<Result<_, String>>()?,
                cwd: cwd.as_ref().map(|c| self.render(c, ctx)).transpose()?,
            }),
            Some(Action::Sql {
                sql,
                database,
                transaction,
            }) => Ok(Prepared::Sql {
                sql: self.render(sql, ctx)?,
                database: self.render(database, ctx)?,
                transaction: *transaction,
            }),
            Some(Action::Http(h)) => Ok(Prepared::Http(self.render_http(h, ctx)?)),
            Some(Action::Builtin { kind, with }) => builtin(*kind, with),
            // A database kind fans out its own behaviour: back up every tenant, say.
            None if builtin::has_builtin(step.kind) && !step.with.is_empty() => {
                builtin(step.kind, &step.with)
            }
            None => Ok(Prepared::Nothing),
        }
    }

    /// Undoes one step (its `rollback`), or restores a checkpoint (its `restore`).
    async fn undo(&mut self, i: usize) -> Result<(), EngineError> {
        let step = &self.rb.steps[i];
        let id = step.id.clone();
        if self.state.step(&id).status == StepStatus::Succeeded {
            self.record(Event::StepRollbackStarted { step: id.clone() })
                .await?;
        }
        let action = step
            .restore
            .as_deref()
            .filter(|_| step.checkpoint)
            .or(step.rollback.as_deref())
            .expect("decide only undoes steps with an action");
        let restoring = step.checkpoint && step.restore.is_some();
        let outcome = if step.for_each.is_some() && !restoring {
            self.undo_items(step, action).await
        } else {
            let mut ctx = self.context(None);
            ctx["step"] = Value::from(id.as_str());
            let mut log = self.log(&format!("{id}.rollback"));
            self.undo_once(step, action, &ctx, &mut log).await
        };
        let event = match outcome {
            Outcome::Succeeded(_) => Event::StepRolledBack { step: id },
            Outcome::Failed(error) => Event::StepRollbackFailed { step: id, error },
            Outcome::TimedOut => Event::StepRollbackFailed {
                step: id,
                error: "timed out".into(),
            },
        };
        self.record(event).await
    }

    async fn undo_once(
        &self,
        step: &Step,
        action: &Action,
        ctx: &Value,
        log: &mut StepLog,
    ) -> Outcome {
        match step.timeout {
            Some(t) => tokio::time::timeout(t, self.action(action, ctx, log))
                .await
                .unwrap_or(Outcome::TimedOut),
            None => self.action(action, ctx, log).await,
        }
    }

    /// A fan-out step is undone item by item, most recent first, each with its `{{item}}`
    /// and its own outputs as `{{steps.ID.outputs.NAME}}` (the version that tenant was
    /// migrated from, say). Items that failed did nothing to undo.
    async fn undo_items(&self, step: &Step, action: &Action) -> Outcome {
        let items = match self.items(step).await {
            Ok(items) => items,
            Err(e) => return Outcome::Failed(format!("cannot list the items to undo: {e}")),
        };
        let run = self.state.step(&step.id);
        let done: Vec<usize> = run
            .items
            .iter()
            .filter(|(_, s)| **s == ItemStatus::Succeeded)
            .map(|(ix, _)| *ix)
            .collect();
        for ix in done.into_iter().rev() {
            let Some(item) = items.get(ix) else {
                return Outcome::Failed(format!(
                    "item {ix} is no longer in the list of items; undo it by hand"
                ));
            };
            let mut ctx = self.context(Some(item));
            ctx["step"] = Value::from(format!("{}.{ix}", step.id));
            if let Some(outputs) = run.item_outputs.get(&ix) {
                let mut merged = run.outputs.clone();
                merged.extend(outputs.clone());
                ctx["steps"][step.id.as_str()]["outputs"] = json!(merged);
            }
            let mut log = self.log(&format!("{}.{ix}.rollback", step.id));
            match self.undo_once(step, action, &ctx, &mut log).await {
                Outcome::Succeeded(_) => {}
                Outcome::Failed(e) => return Outcome::Failed(format!("item {ix} ({item}): {e}")),
                Outcome::TimedOut => {
                    return Outcome::Failed(format!("item {ix} ({item}): timed out"));
                }
            }
        }
        Outcome::Succeeded(IndexMap::new())
    }
}

/// Fault injection for the crash tests: with `RUNBOOK_TEST_KILL_AFTER_EVENT=N` the
/// runner kills itself with SIGKILL right after committing journal event N, as a power
/// cut or an OOM kill would.
fn crash_point(seq: i64) {
    static AT: std::sync::OnceLock<Option<i64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("RUNBOOK_TEST_KILL_AFTER_EVENT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *at == Some(seq) {
        // SAFETY: sending a signal to ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// A fan-out item's action with its templates rendered, ready to run on its own task.
enum Prepared {
    Shell {
        command: String,
        env: IndexMap<String, String>,
        cwd: Option<String>,
    },
    Sql {
        sql: String,
        database: String,
        transaction: bool,
    },
    Http(HttpCheck),
    Builtin(Box<BuiltinItem>),
    Nothing,
}

impl BuiltinItem {
    async fn run(self, log: &mut StepLog) -> Outcome {
        let env = builtin::Env {
            work_dir: self.work_dir,
            run_id: &self.run_id,
            step: &self.name,
            outputs: &self.outputs,
            log,
        };
        builtin::run(self.kind, &self.with, env).await
    }
}

/// A built-in behaviour with what it needs owned, so it can run on its own task.
struct BuiltinItem {
    kind: Kind,
    with: IndexMap<String, Value>,
    work_dir: PathBuf,
    run_id: String,
    /// `STEP.N`: names the item's files (a default backup path, say).
    name: String,
    outputs: Arc<Outputs>,
}

/// Outputs by step id (and `STEP.N` for fan-out items).
type Outputs = IndexMap<String, IndexMap<String, Value>>;

impl Prepared {
    async fn run(self, log: &mut StepLog) -> Outcome {
        match self {
            Prepared::Shell { command, env, cwd } => {
                action::shell(
                    &command,
                    &env,
                    cwd.as_deref().map(std::path::Path::new),
                    None,
                    log,
                )
                .await
            }
            Prepared::Sql {
                sql,
                database,
                transaction,
            } => target::sql(&database, &sql, transaction, None).await,
            Prepared::Http(h) => action::http(&h, log).await,
            Prepared::Builtin(b) => b.run(log).await,
            Prepared::Nothing => Outcome::Succeeded(IndexMap::new()),
        }
    }
}
