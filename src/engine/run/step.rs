//! One attempt of a step: its preconditions, its work under its `timeout` (stopped
//! when the run is aborted elsewhere, with overrun announcements meanwhile), its outcome.

use std::future::Future;

use indexmap::IndexMap;

use super::{ABORT_POLL, EngineError, Runner};
use crate::engine::action::Outcome;
use crate::engine::event::Event;
use crate::engine::work::{self, Unit};
use crate::runbook::{Kind, Step};

impl<'a> Runner<'a> {
    pub(super) async fn run_step(&mut self, i: usize, attempt: u32) -> Result<(), EngineError> {
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
            estimate_ms: crate::engine::decide::overrun_estimate(
                step,
                self.rb.item_count(step),
                &self.learned,
            ),
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
                // `decide` then waits for the approval, or its timeout.
                batch.push(Event::ApprovalRequested {
                    step: id,
                    wave: None,
                });
                return self.record_all(batch).await;
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
        let worker = self.worker();
        let outcome = self
            .timed(step, self.effects.work(&worker, step, Unit::Step))
            .await;
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
    pub(super) async fn timed(&self, step: &Step, work: impl Future<Output = Outcome>) -> Outcome {
        let work = async {
            let work = async {
                tokio::select! {
                    out = work => out,
                    () = self.announce_overrun(step) => unreachable!("never returns"),
                    () = self.journal_progress(step) => unreachable!("never returns"),
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
    pub(super) async fn unless_aborted<T>(&self, work: impl Future<Output = T>, stopped: T) -> T {
        tokio::select! {
            out = work => out,
            () = self.ended_elsewhere() => stopped,
        }
    }

    /// Returns once the journal holds an event after ours that ends the run.
    pub(super) async fn ended_elsewhere(&self) {
        loop {
            self.clock.sleep(ABORT_POLL).await;
            let newer = self.store.load_after(&self.run_id, self.seq);
            if let Ok(events) = self.clock.io(newer).await
                && events
                    .iter()
                    .any(|r| matches!(r.event, Event::RunAborted { .. }))
            {
                return;
            }
        }
    }

    pub(super) async fn finish_attempt(
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
}
