//! `runbook abort` and `runbook approve` / `reject`: a person's write into a run, made
//! by the same engine functions the admin API calls ([`crate::engine::control`]).

use super::{fail, open_for, operator};
use crate::engine::control::{abort_in, decide_in};
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
    by: Option<&str>,
    approve: bool,
    store_flag: Option<&str>,
) -> Outcome {
    let store = open_for(store_flag, run_id).await?;
    let by = by.map(str::to_owned).unwrap_or_else(operator);
    if let Err(e) = decide_in(&store, run_id, step, &by, approve).await {
        return fail(e);
    }
    outln!(
        "step {step} of run {run_id} {} by {by}",
        if approve { "approved" } else { "rejected" }
    );
    Ok(Exit::Ok)
}
