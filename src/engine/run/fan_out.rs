//! A fan-out step (`for_each`): its items, `concurrency` at a time, within `max_failures`
//! and the step's `timeout`, every start and outcome journaled.

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use indexmap::IndexMap;
use serde_json::Value;

use super::{EngineError, Runner};
use crate::engine::action::Outcome;
use crate::engine::decide;
use crate::engine::event::Event;
use crate::engine::state::ItemStatus;
use crate::engine::work::{Unit, Worker};
use crate::runbook::ForEach;

impl<'a> Runner<'a> {
    /// Runs the items of a fan-out step not yet done, `concurrency` at a time, each
    /// through the same work as a single step ([`Worker::work`]) with its `{{item}}`.
    pub(super) async fn fan_out(&mut self, i: usize, attempt: u32) -> Result<(), EngineError> {
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
        let effects = self.effects.clone();
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
            while running.len() + launch.len() < concurrency
                && decide::fan_out_may_go_on(step, total, failed)
            {
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
                let (worker, item, effects) = (&worker, &items[ix], &effects);
                running.push(async move {
                    (ix, effects.work(worker, step, Unit::Item(ix, item)).await)
                });
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
            let overrun_at = self.overrun_due(step, Some(total), last_overrun);
            let clock = self.clock;
            let late = async {
                let Some(at) = overrun_at else {
                    return std::future::pending().await;
                };
                clock.sleep_until(at).await;
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
                let now = self.clock.now_ms();
                if let Some(u) = publisher.overrun(&self.state, step, &ctx, now) {
                    self.record(Event::Published(u)).await?;
                }
                last_overrun = Some(self.clock.now_ms());
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
        } else if let Some(why) = decide::fan_out_failure(step, total, failed) {
            Outcome::Failed(why)
        } else {
            let mut o = IndexMap::new();
            o.insert("items".into(), Value::from(total));
            o.insert("failed".into(), Value::from(failed));
            Outcome::Succeeded(o)
        };
        self.finish_attempt(&id, attempt, outcome).await
    }
}
