//! Driving a run to where it stops, for `execute` and `resume`: the lease's heartbeat
//! beside it, Ctrl-C or SIGTERM or a lease taken over cutting it short, then how it
//! ended said to the operator and turned into the exit code.

use std::time::Duration;

use crate::engine::run::{EngineError, Runner, Stop};
use crate::engine::state::RunStatus;
use crate::exit::{Exit, Failure, Outcome};
use crate::store::{Lease, StoreError};

const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

/// Waits for Ctrl-C or SIGTERM and names it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        () = terminated => "SIGTERM",
    }
}

/// Why a drive was cut short.
enum Cut {
    Signal(&'static str),
    /// The heartbeat found the lease taken over.
    LeaseLost(StoreError),
}

/// Drives the run with a heartbeat, holding `lease`, then says how it ended and
/// returns the exit code.
pub(super) async fn finish(mut runner: Runner<'_>, lease: &Lease) -> Outcome {
    let store = runner.store.clone();
    let driven = drive_holding(&mut runner, lease).await;
    // Commands stopped on hosts are killed there, and the run's connections closed.
    crate::engine::ssh::close_run(runner.rb, &runner.log_dir).await;
    runner.out.finish();
    // A cut drive's SQL is stopped on the server before the process ends, and recorded.
    if driven.is_err()
        && let Err(e) = runner.record_cancellations(None, true).await
    {
        errln!("error: cannot record the statements stopped on the server: {e}");
    }
    let result = match driven {
        Ok(result) => result,
        Err(Cut::Signal(signal)) => {
            let run_id = &runner.run_id;
            runner.out.note(&format!(
                "stopped by {signal}; the run is unfinished (a step that was running is in doubt). Go on with `runbook resume {run_id}`, or end it with `runbook abort {run_id}`"
            ));
            store.close().await;
            return Ok(Exit::NeedsAPerson);
        }
        Err(Cut::LeaseLost(lost)) => {
            store.close().await;
            return Err(Failure::error(Exit::NeedsAPerson, lost));
        }
    };
    let result = match result {
        // Someone ended the run from outside (abort) while a step ran.
        Err(EngineError::Illegal(_)) => match runner.sync().await {
            Ok(_) if runner.state.status.is_terminal() => Ok(Stop::Ended(runner.state.status)),
            _ => result,
        },
        other => other,
    };
    if let Ok(Stop::Ended(_)) = result {
        let _ = store.release(&lease.runbook, &runner.run_id).await;
    }
    let code = ending(&runner, result);
    store.close().await;
    code
}

/// `runner.drive()` with the lease's heartbeat beside it, until the run stops or is cut
/// short.
async fn drive_holding(
    runner: &mut Runner<'_>,
    lease: &Lease,
) -> Result<Result<Stop, EngineError>, Cut> {
    let mut beat = {
        let (store, lease) = (runner.store.clone(), lease.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                // A store that cannot be reached is tried again; a lease taken over is
                // the end of this runner.
                if let Err(lost @ StoreError::LeaseLost { .. }) = store.heartbeat(&lease).await {
                    return lost;
                }
            }
        })
    };
    // Ctrl-C or SIGTERM drops the drive: the running step's processes are killed and
    // the step stays in doubt in the journal, for `resume` to decide. A lease taken over
    // drops it the same way, and the new holder decides.
    let driven = tokio::select! {
        result = runner.drive() => Ok(result),
        signal = interrupted() => Err(Cut::Signal(signal)),
        Ok(lost) = &mut beat => Err(Cut::LeaseLost(lost)),
    };
    beat.abort();
    driven
}

/// Says where the run stopped and what the operator can do, and gives the exit code.
fn ending(runner: &Runner<'_>, result: Result<Stop, EngineError>) -> Outcome {
    let run_id = &runner.run_id;
    match result {
        Ok(Stop::Ended(status)) => Ok(match status {
            RunStatus::Completed => Exit::Ok,
            RunStatus::RolledBack => Exit::RolledBack,
            _ => Exit::NeedsAPerson,
        }),
        Ok(Stop::Paused(reason)) => {
            runner.out.note(&format!(
                "paused: {reason}. {}",
                if reason.starts_with("window guard") {
                    format!("Decide with `runbook resume {run_id}` (go on) or `runbook resume {run_id} --rollback`")
                } else {
                    format!("Decide with `runbook resume {run_id} --retry | --skip | --rollback`")
                }
            ));
            Ok(Exit::NeedsAPerson)
        }
        Ok(Stop::InDoubt(step)) if runner.state.status == RunStatus::RollingBack => {
            runner.out.note(&format!(
                "the undo of step `{step}` started before the runner stopped and may or may not have finished; it is not marked idempotent. Run it again with `runbook resume {run_id} --retry`, or end the run with `runbook abort {run_id}` and finish by hand"
            ));
            Ok(Exit::NeedsAPerson)
        }
        Ok(Stop::InDoubt(step)) => {
            runner.out.note(&format!(
                "step `{step}` started before the runner stopped and may or may not have finished; it is not marked idempotent. Decide with `runbook resume {run_id} --retry | --skip | --rollback`"
            ));
            Ok(Exit::NeedsAPerson)
        }
        Err(e) => Err(Failure::error(Exit::NeedsAPerson, e)),
    }
}
