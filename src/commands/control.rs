//! `runbook abort`, `runbook approve` / `reject`, `runbook update` and `runbook forget`: a
//! person's write
//! into a run, made by the same functions the admin API calls ([`crate::engine::control`],
//! [`crate::status::manual`]).

use super::{fail, open_for, operator};
use crate::engine::control::{abort_in, append_checked, decide_in};
use crate::exit::{Exit, Outcome};

/// `runbook abort`: ends the run as `aborted`, undoing nothing. A runner still at work
/// sees it at its next journal write and stops, killing the step it is running.
pub async fn abort(run_id: &str, by: Option<&str>, store_flag: Option<&str>) -> Outcome {
    let store = open_for(store_flag, run_id).await?;
    let by = by.map(str::to_owned).unwrap_or_else(operator);
    if let Err(e) = abort_in(&store, run_id, &by).await {
        return fail(e);
    }
    outln!("run {run_id} aborted");
    Ok(Exit::Ok)
}

/// `runbook approve` / `runbook reject`.
pub async fn decide_approval(
    run_id: &str,
    step: &str,
    who: super::Who<'_>,
    approve: bool,
    store_flag: Option<&str>,
) -> Outcome {
    let store = open_for(store_flag, run_id).await?;
    let by = who.by.map(str::to_owned).unwrap_or_else(operator);
    if let Err(e) = decide_in(&store, run_id, step, &by, approve, who.reason).await {
        return fail(e);
    }
    outln!(
        "step {step} of run {run_id} {} by {by}",
        if approve { "approved" } else { "rejected" }
    );
    Ok(Exit::Ok)
}

/// What `runbook update` was asked to say.
pub struct UpdateArgs<'a> {
    pub run: &'a str,
    pub text: &'a str,
    pub eta: Option<&'a str>,
    pub status: Option<&'a str>,
    pub quiet: Option<&'a str>,
    pub by: Option<&'a str>,
    pub store: Option<&'a str>,
}

/// `runbook update RUN TEXT`: a person's public update of the maintenance run `RUN`
/// carries out, by the admin API's rules (`crate::status::manual`).
pub async fn update(args: UpdateArgs<'_>) -> Outcome {
    use crate::status::manual;
    let store = open_for(args.store, args.run).await?;
    let now = crate::store::now_ms();
    let eta_ms = match args.eta {
        Some(t) => {
            Some(manual::parse_eta(t, now).map_err(|e| super::Failure::invalid(e.to_string()))?)
        }
        None => None,
    };
    let quiet_ms = match args.quiet {
        Some(q) => {
            Some(manual::parse_quiet(q).map_err(|e| super::Failure::invalid(e.to_string()))?)
        }
        None => None,
    };
    let mut follower = crate::status::follow::Follower::default();
    if let Err(e) = follower.refresh(&store).await {
        return fail(e);
    }
    let page = follower.page(crate::status::model::PageInfo::default(), now);
    let Some(m) = page
        .maintenances
        .iter()
        .find(|m| m.run_id.as_deref() == Some(args.run))
    else {
        return fail(format!(
            "run `{}` is not on the status page (a rehearsal, or a run without public steps): there is nothing to update",
            args.run
        ));
    };
    let req = manual::Request {
        body: args.text.to_owned(),
        maintenance: Some(m.id.clone()),
        status: args.status.map(str::to_owned),
        by: args.by.map(str::to_owned).unwrap_or_else(operator),
        eta_ms,
        quiet_ms,
    };
    let done = match manual::publish(&store, &page, req, now).await {
        Ok(done) => done,
        Err(e) => return fail(e),
    };
    outln!(
        "published on maintenance {} ({}{}): {}",
        done.maintenance,
        done.status,
        done.eta_ms
            .map(|t| format!(", ETA {}", crate::status::model::iso(t)))
            .unwrap_or_default(),
        done.body
    );
    Ok(Exit::Ok)
}

/// `runbook forget RUN`: an ended run's durations are no longer learned (they were not
/// typical: a slow night, a drill). Journaled, so `plan --history` and every later
/// estimate agree.
pub async fn forget(run_id: &str, who: super::Who<'_>, store_flag: Option<&str>) -> Outcome {
    let store = open_for(store_flag, run_id).await?;
    let by = who.by.map(str::to_owned).unwrap_or_else(operator);
    let forgotten = append_checked(&store, run_id, |state| {
        if !state.status.is_terminal() {
            return Err(format!(
                "run `{run_id}` has not ended ({}): forget it once it has",
                state.status.as_str()
            ));
        }
        if state.forgotten {
            return Err(format!("run `{run_id}` is already forgotten"));
        }
        Ok(crate::engine::event::Event::RunForgotten {
            by: by.clone(),
            reason: who.reason.map(str::to_owned),
        })
    })
    .await;
    if let Err(e) = forgotten {
        return fail(e);
    }
    outln!("run {run_id} forgotten: its durations are no longer learned");
    Ok(Exit::Ok)
}
