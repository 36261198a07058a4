//! A fan-out step (`for_each`): its items, `concurrency` at a time, within `max_failures`
//! and the step's `timeout`, every start and outcome journaled.

use std::collections::VecDeque;

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
        // The items; a `copy` whose source is missing fails before any host is touched.
        let listed = worker
            .items(step)
            .await
            .and_then(|items| worker.before_hosts(step, &items).map(|()| items));
        let items = match listed {
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
        let names = worker.item_names(step, &items);
        let stems = crate::engine::items::stems(&id, &names);
        let noun = match step.for_each.as_ref() {
            Some(ForEach::Target(name)) => name.as_str(),
            Some(ForEach::Hosts(_)) => "hosts",
            _ => "items",
        };
        self.out.items(total, noun);
        let (mut todo, mut failed) = self.items_to_do(&id, total);
        // Failures a `--retry --only` kept do not stop the hosts it retries.
        let kept = self.state.step(&id).kept_failed.len();
        // Waves: where each ends, and the one the next item is in. A run resumed before
        // the first host of a wave started checks the gate before it again.
        let ends = step
            .rollout
            .as_ref()
            .map_or_else(|| vec![total], |r| r.wave_ends(total));
        let mut wave = todo
            .front()
            .map_or(0, |&ix| ends.iter().position(|&e| ix < e).unwrap_or(0));
        let started_in = |state: &crate::engine::state::RunState, w: usize| {
            let from = if w == 0 { 0 } else { ends[w - 1] };
            state.step(&id).items.range(from..ends[w]).next().is_some()
        };
        let mut gate_due = wave > 0 && !started_in(&self.state, wave);
        let effects = self.effects.clone();
        let mut running = FuturesUnordered::new();
        let concurrency = step.concurrency.max(1) as usize;
        let deadline = step.timeout.map(|t| tokio::time::Instant::now() + t);
        // Customers hear when a fan-out runs late, as for any step.
        let mut last_overrun: Option<i64> = None;
        let ended = loop {
            if gate_due {
                gate_due = false;
                if let Err(e) = self
                    .between_waves(&worker, step, &items, &stems, &ends, wave)
                    .await
                {
                    break Ended::Gate(e);
                }
                if self.state.status.is_terminal() {
                    break Ended::Aborted;
                }
            }
            // Start what fits (in this wave), all the starts in one commit, before any
            // of them runs.
            let room = if decide::fan_out_may_go_on(step, total, failed - kept.min(failed)) {
                concurrency.saturating_sub(running.len())
            } else {
                0
            };
            let end = ends.get(wave).copied().unwrap_or(total);
            let mut launch: Vec<usize> = Vec::with_capacity(room);
            while launch.len() < room && todo.front().is_some_and(|&ix| ix < end) {
                launch.extend(todo.pop_front());
            }
            if !launch.is_empty() {
                let started = launch
                    .iter()
                    .map(|&index| Event::ItemStarted {
                        step: id.clone(),
                        index,
                        name: names[index].clone(),
                    })
                    .collect();
                self.record_all(started).await?;
            }
            for ix in launch {
                let (worker, item, effects) = (&worker, &items[ix], &effects);
                let stem = stems[ix].as_str();
                running.push(async move {
                    (
                        ix,
                        effects.work(worker, step, Unit::Item(ix, item, stem)).await,
                    )
                });
            }
            if running.is_empty() {
                // The wave is done: the next starts after its gate, while failures allow.
                if !todo.is_empty()
                    && wave + 1 < ends.len()
                    && decide::fan_out_may_go_on(step, total, failed - kept.min(failed))
                {
                    wave += 1;
                    gate_due = true;
                    continue;
                }
                break Ended::Done;
            }
            let overrun_at = self.overrun_due(step, Some(total), last_overrun);
            let woke = tokio::select! {
                joined = running.next() => match joined {
                    Some(first) => Woke::Finished(first),
                    None => Woke::Ended(Ended::Done),
                },
                () = sleep_until_maybe(deadline) => Woke::Ended(Ended::TimedOut),
                () = self.ended_elsewhere() => Woke::Ended(Ended::Aborted),
                () = self.clock.sleep_until_maybe(overrun_at) => Woke::Overrun,
            };
            match woke {
                Woke::Ended(ended) => break ended,
                Woke::Overrun => {
                    self.fan_out_overrun(step).await?;
                    last_overrun = Some(self.clock.now_ms());
                }
                Woke::Finished(first) => {
                    // Everything that has finished by now goes into one commit.
                    let mut finished = vec![first];
                    while let Some(Some(more)) = running.next().now_or_never() {
                        finished.push(more);
                    }
                    let outcomes = finished
                        .into_iter()
                        .map(|(index, outcome)| {
                            if !matches!(outcome, Outcome::Succeeded(_)) {
                                failed += 1;
                            }
                            item_event(&id, index, &names[index], outcome)
                        })
                        .collect();
                    self.record_all(outcomes).await?;
                }
            }
        };
        // Items still running are stopped (their process groups killed, their SQL
        // stopped on the server) as they drop.
        drop(running);
        let outcome = fan_out_outcome(step, total, failed, ended);
        self.finish_attempt(&id, attempt, outcome).await
    }

    /// The items of step `id` not yet finished (a resumed fan-out runs only those), and
    /// how many have already failed.
    fn items_to_do(&self, id: &str, total: usize) -> (VecDeque<usize>, usize) {
        let done = &self.state.step(id).items;
        let failed = done.values().filter(|s| **s == ItemStatus::Failed).count();
        let todo = (0..total)
            .filter(|ix| {
                !matches!(
                    done.get(ix),
                    Some(ItemStatus::Succeeded | ItemStatus::Failed)
                )
            })
            .collect();
        (todo, failed)
    }

    /// After wave `wave - 1` (0-based) of a host step: its `between_waves` conditions on
    /// every host that succeeded so far, then its pause. The first failing condition, as
    /// the reason the step fails.
    async fn between_waves(
        &mut self,
        worker: &Worker<'_>,
        step: &crate::runbook::Step,
        items: &[Value],
        stems: &[String],
        ends: &[usize],
        wave: usize,
    ) -> Result<(), String> {
        let Some(rollout) = step.rollout.as_deref() else {
            return Ok(());
        };
        let done: Vec<usize> = self
            .state
            .step(&step.id)
            .items
            .iter()
            .filter(|(ix, s)| **ix < ends[wave - 1] && **s == ItemStatus::Succeeded)
            .map(|(ix, _)| *ix)
            .collect();
        self.out.note(&format!(
            "step {}: wave {wave} of {} done ({} hosts); checking between_waves",
            step.id,
            ends.len(),
            ends[wave - 1]
        ));
        for ix in done {
            let unit = Unit::Item(ix, &items[ix], stems[ix].as_str());
            worker
                .between_waves(step, &rollout.between_waves, unit)
                .await
                .map_err(|e| {
                    format!(
                        "between waves {wave} and {}: host `{}`: {e}; no host of wave {} was started",
                        wave + 1,
                        items[ix]["name"].as_str().unwrap_or_default(),
                        wave + 1
                    )
                })?;
        }
        if let Some(pause) = rollout.pause_between_waves {
            self.out.note(&format!(
                "step {}: pausing {} before wave {}",
                step.id,
                crate::duration::fmt_duration(pause),
                wave + 1
            ));
            tokio::select! {
                () = self.clock.sleep(pause) => {}
                () = self.ended_elsewhere() => {}
            }
            // An abort while pausing is read here.
            let _ = self.sync().await;
        }
        let next = wave + 1;
        let rejected = |state: &crate::engine::state::RunState| match &state
            .step(&step.id)
            .wave_rejected
        {
            Some((w, by)) if *w == next => Some(format!(
                "between waves {wave} and {next}: rejected by {by}; no host of wave {next} was started"
            )),
            _ => None,
        };
        if let Some(why) = rejected(&self.state) {
            return Err(why);
        }
        if rollout.approve_between_waves
            && !self.state.status.is_terminal()
            && !self.state.step(&step.id).waves_approved.contains(&next)
        {
            let asked = self.state.step(&step.id).awaiting_wave == Some(next);
            if !asked {
                self.record(Event::ApprovalRequested {
                    step: step.id.clone(),
                    wave: Some(next),
                })
                .await
                .map_err(|e| e.to_string())?;
            }
            self.out.note(&format!(
                "step {}: waiting for approval to start wave {next}: runbook approve {} {} (or reject)",
                step.id, self.run_id, step.id
            ));
            loop {
                if self.sync().await.is_err() || self.state.status.is_terminal() {
                    break;
                }
                let s = self.state.step(&step.id);
                if !s.awaiting_approval {
                    break;
                }
                self.clock
                    .sleep(std::time::Duration::from_millis(250))
                    .await;
            }
            if let Some(why) = rejected(&self.state) {
                return Err(why);
            }
        }
        Ok(())
    }

    /// The overrun update of a fan-out that runs late, if one is due.
    async fn fan_out_overrun(&mut self, step: &crate::runbook::Step) -> Result<(), EngineError> {
        let publisher = crate::engine::publish::Publisher::new(self.rb, &self.learned);
        let ctx = self.context(None);
        let now = self.clock.now_ms();
        match publisher.overrun(&self.state, step, &ctx, now) {
            Some(u) => self.record(Event::Published(u)).await,
            None => Ok(()),
        }
    }
}

/// Why a fan-out stopped waiting.
enum Woke {
    Finished((usize, Outcome)),
    Overrun,
    Ended(Ended),
}

/// How a fan-out's loop ended.
enum Ended {
    Done,
    TimedOut,
    Aborted,
    /// A gate between waves failed (why).
    Gate(String),
}

/// The step's outcome once its items have run (or stopped).
fn fan_out_outcome(
    step: &crate::runbook::Step,
    total: usize,
    failed: usize,
    ended: Ended,
) -> Outcome {
    match ended {
        Ended::Aborted => Outcome::Failed("stopped: the run was aborted".into()),
        Ended::TimedOut => Outcome::TimedOut,
        Ended::Gate(why) => Outcome::Failed(why),
        Ended::Done => match decide::fan_out_failure(step, total, failed) {
            Some(why) => Outcome::Failed(why),
            None => {
                let mut o = IndexMap::new();
                o.insert("items".into(), Value::from(total));
                o.insert("failed".into(), Value::from(failed));
                Outcome::Succeeded(o)
            }
        },
    }
}

/// The journal event of an item's outcome.
fn item_event(step: &str, index: usize, name: &str, outcome: Outcome) -> Event {
    let (step, name) = (step.to_owned(), name.to_owned());
    match outcome {
        Outcome::Succeeded(outputs) => Event::ItemSucceeded {
            step,
            index,
            name,
            outputs,
        },
        Outcome::Failed(error) => Event::ItemFailed {
            step,
            index,
            name,
            error,
        },
        Outcome::TimedOut => Event::ItemFailed {
            step,
            index,
            name,
            error: "timed out".into(),
        },
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until_maybe(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Runner<'_> {
    /// After a crash: a host step's hosts whose command was under way when the runner
    /// stopped are asked what became of it (each left its outcome on the host, under a
    /// key of the run, the host and the attempt). A command that ended is recorded as it
    /// ended, not run again; one that never started is let run again; one that started and
    /// has not ended (or a host that cannot be asked) stays in doubt for a person.
    /// Returns how many hosts were settled.
    pub async fn settle_hosts_in_doubt(&mut self) -> Result<usize, EngineError> {
        use crate::engine::ssh::{Left, Remote};
        let rb = self.rb;
        let mut settled = 0;
        for &i in &rb.order {
            let step = &rb.steps[i];
            let Some(ForEach::Hosts(hosts)) = &step.for_each else {
                continue;
            };
            let run = self.state.step(&step.id);
            if !run.in_doubt() {
                continue;
            }
            let running: Vec<usize> = run
                .items
                .iter()
                .filter(|(_, s)| **s == ItemStatus::Running)
                .map(|(ix, _)| *ix)
                .collect();
            if running.is_empty() {
                continue;
            }
            let attempt = run.attempts;
            let (names, stems) = {
                let worker = self.worker();
                let Ok(items) = worker.items(step).await else {
                    continue;
                };
                let names = worker.item_names(step, &items);
                let stems = crate::engine::items::stems(&step.id, &names);
                (names, stems)
            };
            let mut events = Vec::new();
            let mut not_started = Vec::new();
            let mut unknown = 0;
            for ix in running {
                let Some(host) = hosts.get(ix).map(|&h| &rb.inventory.hosts[h]) else {
                    unknown += 1;
                    continue;
                };
                let key = crate::engine::work::host_key(&self.run_id, &stems[ix], attempt);
                let said = Remote::new(rb, host, &self.log_dir).left(&key).await;
                let (step_id, name) = (step.id.clone(), names[ix].clone());
                match said {
                    Ok(Left::Exited(0)) => {
                        self.out.note(&format!(
                            "step {step_id}: host {name} finished its command after the runner stopped: recorded from the host, not run again"
                        ));
                        events.push(Event::ItemSucceeded {
                            step: step_id,
                            index: ix,
                            name,
                            outputs: IndexMap::new(),
                        });
                    }
                    Ok(Left::Exited(rc)) => events.push(Event::ItemFailed {
                        step: step_id,
                        index: ix,
                        name,
                        error: format!(
                            "exited with status {rc} (read from the host after the runner stopped)"
                        ),
                    }),
                    Ok(Left::NotStarted) => not_started.push(ix),
                    Ok(Left::Started) | Err(_) => unknown += 1,
                }
            }
            settled += events.len();
            if !events.is_empty() {
                self.record_all(events).await?;
            }
            if unknown == 0 && !not_started.is_empty() {
                settled += not_started.len();
                self.record(Event::RunResumed {
                    decision: crate::engine::event::Decision::Retry,
                    by: "runbook (the hosts say these commands never started)".into(),
                    reason: None,
                    only: not_started,
                })
                .await?;
            }
        }
        Ok(settled)
    }
}
