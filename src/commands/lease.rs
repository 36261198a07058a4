//! The runbook's lease as `execute` and `resume` take it: one run of a runbook at a time,
//! a lease left by a run that ended given back, one left by a dead runner of the same
//! run taken over, and the refusal that says who holds it.

use crate::engine::control::{holder_alive, host, load_run};
use crate::exit::Failure;
use crate::store::{Lease, Store, now_ms};

/// A lease on `runbook` for run `run_id` by this process, to be acquired.
pub(super) fn ours(runbook: &str, run_id: &str) -> Lease {
    Lease {
        runbook: runbook.to_owned(),
        run_id: run_id.to_owned(),
        host: host(),
        pid: std::process::id() as i64,
        heartbeat_ms: now_ms(),
        epoch: 0,
        released: false,
    }
}

/// Whether a lease is left over from a run that has ended (its runner died after
/// recording the end, before giving the lease back): then it is released.
pub(super) async fn ended_run(store: &Store, holder: &Lease) -> bool {
    let ended = load_run(store, &holder.run_id)
        .await
        .is_ok_and(|(s, _)| s.status.is_terminal());
    if ended {
        let _ = store.release(&holder.runbook, &holder.run_id).await;
    }
    ended
}

/// Refuses to run: `holder` has the runbook's lease.
pub(super) fn refuse(holder: &Lease) -> Failure {
    let age = (now_ms() - holder.heartbeat_ms) / 1000;
    Failure::invalid(if holder_alive(holder) {
        format!(
            "runbook `{}` is already being run: run `{}` on host {} (pid {}), last heartbeat {age}s ago",
            holder.runbook, holder.run_id, holder.host, holder.pid
        )
    } else {
        format!(
            "run `{}` of runbook `{}` on host {} (pid {}) stopped without finishing (last heartbeat {age}s ago): resume it with `runbook resume {}` or end it with `runbook abort {}`",
            holder.run_id, holder.runbook, holder.host, holder.pid, holder.run_id, holder.run_id
        )
    })
}

/// The lease for `execute`: taken when free, refused when another run holds it.
pub(super) async fn acquire(store: &Store, lease: &Lease) -> Result<Lease, Failure> {
    match store.acquire(lease, None).await {
        Ok(Ok(lease)) => Ok(lease),
        Ok(Err(holder)) => Err(refuse(&holder)),
        Err(e) => Err(Failure::invalid(e)),
    }
}

/// The lease for `resume`: ours if free or left by a dead runner of this run (taken
/// over: the stalled runner's next append or heartbeat finds the epoch moved on, and it
/// stops).
pub(super) async fn take_for_resume(store: &Store, lease: &Lease) -> Result<Lease, Failure> {
    let run_id = &lease.run_id;
    let holder = match store.lease(&lease.runbook).await {
        Err(e) => return Err(Failure::invalid(e)),
        Ok(None) => return acquire(store, lease).await,
        Ok(Some(holder)) => holder,
    };
    if holder.run_id != *run_id {
        return Err(refuse(&holder));
    }
    if holder_alive(&holder) {
        return Err(Failure::invalid(format!(
            "run `{run_id}` is being run on host {} (pid {}), last heartbeat {}s ago",
            holder.host,
            holder.pid,
            (now_ms() - holder.heartbeat_ms) / 1000
        )));
    }
    match store.acquire(lease, Some(&holder)).await {
        Ok(Ok(lease)) => Ok(lease),
        Ok(Err(holder)) => Err(refuse(&holder)),
        Err(e) => Err(Failure::invalid(e)),
    }
}
