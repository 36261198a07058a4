//! `runbook resume`: loads the run, checks that its runbook is as it started and that no
//! command of a dead runner still runs, takes the lease, records what the engine's
//! resume matrix ([`decide::resume`]) says the decision means, and drives the run on.

use super::{fail, lease, log_dir, open_for, operator, say_run_id, secrets_set};
use crate::engine::control::{NotAsStarted, file_as_started, load_run};
use crate::engine::decide::{self, Refusal};
use crate::engine::event::{Decision, Event};
use crate::engine::run::Runner;
use crate::engine::state::RunState;
use crate::engine::terminal::{LogFormat, Reporter};
use crate::exit::{Exit, Failure, Outcome};
use crate::runbook::{self, Runbook};

/// `runbook resume`.
pub async fn resume(
    run_id: &str,
    decision: Option<Decision>,
    only: &[String],
    who: super::Who<'_>,
    store_flag: Option<&str>,
    log_format: LogFormat,
) -> Outcome {
    let url = crate::store::chosen_url(store_flag);
    let store = open_for(store_flag, run_id).await?;
    let (state, seq) = match load_run(&store, run_id).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if state.status.is_terminal() {
        // A runner that died after recording the end left its lease behind.
        if let Ok(Some(holder)) = store.lease(&state.runbook).await
            && holder.run_id == run_id
        {
            lease::ended_run(&store, &holder).await;
        }
        return fail(format!(
            "run `{run_id}` has already ended ({}); nothing to resume",
            state.status.as_str()
        ));
    }
    let rb = runbook_as_started(run_id, &state)?;
    let lease = lease::take_for_resume(&store, &lease::ours(&rb.id, run_id)).await?;
    let out = Reporter::new(log_format, &rb);
    say_run_id(log_format, run_id);
    let logs = log_dir(&url, run_id);
    let mut runner = Runner::new(
        &rb,
        store.holding(&lease),
        run_id.to_owned(),
        state,
        seq,
        logs.clone(),
        out,
    );
    runner.learned = super::learned(&store, &rb.id, run_id).await;
    if let Err(failure) = decided(&mut runner, decision, only, who, &logs).await {
        let _ = store.release(&rb.id, run_id).await;
        return Err(failure);
    }
    super::drive::finish(runner, &lease).await
}

/// The runbook run `run_id` was started from, with the run's values, its file unchanged
/// since and its secrets set.
fn runbook_as_started(run_id: &str, state: &RunState) -> Result<Runbook, Failure> {
    let bytes = match file_as_started(state) {
        Ok(b) => b,
        Err(NotAsStarted::Unreadable(e)) => {
            return Err(Failure::invalid(format!(
                "the runbook of run `{run_id}`: {e}"
            )));
        }
        Err(NotAsStarted::Changed) => {
            return Err(Failure::invalid(format!(
                "the runbook `{}` has changed since run `{run_id}` started; resuming would run a different plan. Restore the file as it was, or abort the run",
                state.file
            )));
        }
    };
    let mut rb = runbook::load_bytes(&state.file, &bytes)
        .map_err(|invalid| Failure::rendered(invalid.render()))?;
    rb.vars = state.vars.clone();
    rb.limit_to(&state.limit).map_err(Failure::invalid)?;
    secrets_set(&rb).map_err(Failure::invalid)?;
    Ok(rb)
}

/// Checks that nothing the stopped runner started still runs, then records what the
/// decision means for the run as it stands (nothing, when it simply goes on).
async fn decided(
    runner: &mut Runner<'_>,
    decision: Option<Decision>,
    only: &[String],
    who: super::Who<'_>,
    logs: &std::path::Path,
) -> Result<(), Failure> {
    // A runner killed outright (SIGKILL, a power cut on a VM host) cannot stop what it
    // started; running or skipping its step again while that still runs would do it twice.
    let left = crate::engine::action::orphans(logs);
    if !left.is_empty() {
        let list = left
            .iter()
            .map(|(log, g)| format!("`{log}` (process group {g}: `kill -TERM -- -{g}`)"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Failure::error(
            Exit::NeedsAPerson,
            format!(
                "commands that the stopped runner started are still running: {list}. Wait for them to end or stop them, then resume"
            ),
        ));
    }
    // Hosts whose command was under way say what became of it.
    runner
        .settle_hosts_in_doubt()
        .await
        .map_err(Failure::invalid)?;
    let only_items = only_failed_hosts(runner, only)?;
    let events = decide::resume(
        runner.rb,
        &runner.state,
        decision,
        &runner.facts(),
        &who.by.map(str::to_owned).unwrap_or_else(operator),
    )
    .map_err(|refusal| match refusal {
        Refusal::NeedsAPerson(why) => Failure::error(Exit::NeedsAPerson, why),
        Refusal::Invalid(why) => Failure::invalid(why),
    })?;
    // The person's words go with their decision (`decide` chose what is recorded).
    let events: Vec<Event> = events
        .into_iter()
        .map(|e| match e {
            Event::RunResumed { decision, by, .. } => Event::RunResumed {
                decision,
                by,
                reason: who.reason.map(str::to_owned),
                only: only_items.clone(),
            },
            e => e,
        })
        .collect();
    if !events.is_empty() {
        runner.record_all(events).await.map_err(Failure::invalid)?;
    }
    Ok(())
}

/// `--retry --only HOST,...`: the indexes of those hosts among the failed items of the
/// host step the resume is about; a host that is not one of them is refused, naming the
/// failed ones.
fn only_failed_hosts(runner: &Runner<'_>, only: &[String]) -> Result<Vec<usize>, Failure> {
    if only.is_empty() {
        return Ok(Vec::new());
    }
    let rb = runner.rb;
    let Some(i) = decide::resume_subject(rb, &runner.state, &runner.facts()) else {
        return Err(Failure::invalid(
            "--only: no host step of the run has failed or is in doubt; there is nothing to retry",
        ));
    };
    let step = &rb.steps[i];
    let Some(crate::runbook::ForEach::Hosts(hosts)) = &step.for_each else {
        return Err(Failure::invalid(format!(
            "--only names hosts, but step `{}` (the one to retry) is not a host step",
            step.id
        )));
    };
    let run = runner.state.step(&step.id);
    let failed: Vec<(usize, &str)> = hosts
        .iter()
        .enumerate()
        .filter(|(ix, _)| {
            matches!(
                run.items.get(ix),
                Some(
                    crate::engine::state::ItemStatus::Failed
                        | crate::engine::state::ItemStatus::Running
                )
            )
        })
        .map(|(ix, &h)| (ix, rb.inventory.hosts[h].name.as_str()))
        .collect();
    only.iter()
        .map(|name| {
            failed
                .iter()
                .find(|(_, n)| n == name)
                .map(|(ix, _)| *ix)
                .ok_or_else(|| {
                    let names: Vec<&str> = failed.iter().map(|(_, n)| *n).collect();
                    Failure::invalid(format!(
                        "--only: `{name}` is not a failed host of step `{}` (failed: {})",
                        step.id,
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ))
                })
        })
        .collect()
}
