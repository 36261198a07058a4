//! The writes a person asks for, checked against the journal: an abort, an approval
//! decision, a manual public update. The CLI's commands and the admin API call the same
//! functions here. Also: reading a run back (its journal folded, the runbook it was
//! started from), and whether the runner holding a run's lease is still at work.

use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use sha2::{Digest, Sha256};

use super::action::{Masker, secret_values};
use super::event::Event;
use super::state::RunState;
use crate::runbook::{self, Runbook};
use crate::store::{Lease, Store, StoreError, now_ms};

/// A lease whose heartbeat is older than this belongs to a runner that died.
pub const STALE_AFTER: Duration = Duration::from_secs(15);

/// [`STALE_AFTER`]; for tests only, `RUNBOOK_TEST_STALE_AFTER_MS` replaces it (the
/// take-over tests stall a runner and take its lease over at once with `0`).
fn stale_after() -> Duration {
    std::env::var("RUNBOOK_TEST_STALE_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(STALE_AFTER, Duration::from_millis)
}

/// This machine's name, as a lease records it.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a process of this host is still running (a runner on this machine that died
/// need not wait for its heartbeat to go stale).
pub fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether the runner holding a lease is still at work: its heartbeat is fresh and, on
/// this host, its process exists.
pub fn holder_alive(holder: &Lease) -> bool {
    now_ms() - holder.heartbeat_ms < stale_after().as_millis() as i64
        && (holder.host != host() || pid_alive(holder.pid))
}

/// The SHA-256 of a runbook file, as `RunStarted` records it (hex).
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why the runbook file a run was started from cannot be had as it was then.
#[derive(Debug, Clone, PartialEq)]
pub enum NotAsStarted {
    /// The file cannot be read (the reason, naming the file).
    Unreadable(String),
    /// The file is not the one the run started from (its SHA-256 differs).
    Changed,
}

/// The bytes of the runbook file a run was started from, when it is still as it was.
pub fn file_as_started(state: &RunState) -> Result<Vec<u8>, NotAsStarted> {
    let bytes =
        crate::input::read_limited(Path::new(&state.file)).map_err(NotAsStarted::Unreadable)?;
    if sha256(&bytes) != state.file_sha256 {
        return Err(NotAsStarted::Changed);
    }
    Ok(bytes)
}

/// The runbook a run was started from, when its file is still as it was then.
pub fn runbook_of(state: &RunState) -> Option<Runbook> {
    let bytes = file_as_started(state).ok()?;
    runbook::load_bytes(&state.file, &bytes).ok()
}

/// Why a write a person asked for (approve, reject, abort, a manual update) was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The run, as it stands, refuses it (ended, no such step, not waiting, kept changing).
    #[error("{0}")]
    Refused(String),
    /// The store could not read or write it.
    #[error(transparent)]
    Store(StoreError),
    /// The run's journal in the store cannot be read as a run.
    #[error("{0}")]
    Damaged(String),
}

/// Loads a run's journal and folds it: the state and the journal's last number.
pub async fn load_run(store: &Store, run_id: &str) -> Result<(RunState, i64), WriteError> {
    let events = store.load(run_id).await.map_err(WriteError::Store)?;
    let seq = events.last().map(|r| r.seq).unwrap_or(0);
    let state = RunState::from_events(events.iter().map(|r| (&r.event, r.at_ms)))
        .map_err(|e| does_not_fold(run_id, e))?;
    Ok((state, seq))
}

/// Loads a run's journal and folds it into its state and its history (what `status`
/// shows).
pub async fn load_replayed(
    store: &Store,
    run_id: &str,
) -> Result<(RunState, super::history::History), WriteError> {
    let events = store.load(run_id).await.map_err(WriteError::Store)?;
    super::history::replay(&events).map_err(|e| does_not_fold(run_id, e))
}

fn does_not_fold(run_id: &str, e: impl std::fmt::Display) -> WriteError {
    WriteError::Damaged(format!("the journal of run `{run_id}` does not fold: {e}"))
}

/// Appends the event `make` draws from the run's current state, checked against that
/// state, at the journal's next number. When another process wrote in between, reads
/// again and decides again. Returns the state after the event.
pub async fn append_checked(
    store: &Store,
    run_id: &str,
    make: impl Fn(&RunState) -> Result<Event, String>,
) -> Result<RunState, WriteError> {
    append_checked_with(store, run_id, |state| make(state).map(|e| vec![e])).await
}

/// Like [`append_checked`], for events that go together in one commit.
async fn append_checked_with(
    store: &Store,
    run_id: &str,
    make: impl Fn(&RunState) -> Result<Vec<Event>, String>,
) -> Result<RunState, WriteError> {
    for _ in 0..50 {
        let (mut state, seq) = load_run(store, run_id).await?;
        // Whoever writes, the run's secrets are masked in what they write.
        let masker = Masker::new(secret_values(&state.secrets));
        let events: Vec<Event> = make(&state)
            .map_err(WriteError::Refused)?
            .into_iter()
            .map(|e| masker.event(e))
            .collect();
        let at = now_ms();
        for event in &events {
            state
                .apply(event, at)
                .map_err(|e| WriteError::Refused(format!("run `{run_id}`: {e}")))?;
        }
        match store.append(run_id, seq + 1, &events, at).await {
            Ok(_) => return Ok(state),
            Err(StoreError::Conflict(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(WriteError::Store(e)),
        }
    }
    Err(WriteError::Refused(format!(
        "run `{run_id}` kept changing while this was being recorded; try again"
    )))
}

/// Ends a run in `store` as `aborted`, undoing nothing (the CLI's `abort` and the admin
/// API's). Customers are told in the same commit, as when the run ends by itself. A
/// runner still at work sees it at its next journal write and stops.
pub async fn abort_in(store: &Store, run_id: &str, by: &str) -> Result<(), WriteError> {
    let state = append_checked_with(store, run_id, |state| {
        if state.status.is_terminal() {
            return Err(format!(
                "run `{run_id}` has already ended ({})",
                state.status.as_str()
            ));
        }
        let aborted = Event::RunAborted {
            by: by.to_owned(),
            reason: format!("aborted by {by}"),
        };
        let mut events = vec![aborted.clone()];
        events.extend(abort_announced(state, run_id, &aborted));
        Ok(events)
    })
    .await?;
    // A live runner gives the lease back itself when it stops; a dead one cannot.
    if let Ok(Some(holder)) = store.lease(&state.runbook).await
        && holder.run_id == run_id
        && !holder_alive(&holder)
    {
        let _ = store.release(&state.runbook, run_id).await;
    }
    Ok(())
}

/// The public updates announcing `aborted`, with the template context the runner uses
/// ([`super::context::context`]): none when the runbook is not as the run started.
fn abort_announced(state: &RunState, run_id: &str, aborted: &Event) -> Vec<Event> {
    let Some(mut rb) = runbook_of(state) else {
        return Vec::new();
    };
    rb.vars = state.vars.clone();
    let at = now_ms();
    let mut after = state.clone();
    if after.apply(aborted, at).is_err() {
        return Vec::new();
    }
    // Public templates never see `secrets`, so none are read from the environment here.
    let base = super::context::context(&rb, &after, run_id, &IndexMap::new(), None);
    let learned = Default::default();
    super::publish::Publisher::new(&rb, &learned)
        .updates(state, std::slice::from_ref(aborted), &after, &base, at)
        .into_iter()
        .map(Event::Published)
        .collect()
}

/// Approves or rejects a waiting step (the CLI's `approve`/`reject` and the admin API's).
pub async fn decide_in(
    store: &Store,
    run_id: &str,
    step: &str,
    by: &str,
    approve: bool,
    comment: Option<&str>,
) -> Result<(), WriteError> {
    let decided = append_checked(store, run_id, |state| {
        if state.status.is_terminal() {
            return Err(format!(
                "run `{run_id}` has already ended ({}); there is nothing to approve",
                state.status.as_str()
            ));
        }
        if let Some(rb) = runbook_of(state)
            && !rb.steps.iter().any(|s| s.id == step)
        {
            let ids: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();
            let hint = crate::suggest::did_you_mean(step, &ids)
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            return Err(format!(
                "run `{run_id}` of `{}` has no step `{step}`{hint}",
                rb.id
            ));
        }
        let Some(s) = state.steps.get(step) else {
            return Err(format!(
                "step `{step}` of run `{run_id}` is not waiting for approval (it has not started)"
            ));
        };
        if !s.awaiting_approval || state.status.is_terminal() {
            return Err(format!(
                "step `{step}` of run `{run_id}` is not waiting for approval (it is {})",
                s.status.as_str()
            ));
        }
        let (step, by) = (step.to_owned(), by.to_owned());
        let comment = comment.map(str::to_owned);
        Ok(if approve {
            Event::Approved { step, by, comment }
        } else {
            Event::Rejected { step, by, comment }
        })
    })
    .await;
    decided.map(|_| ())
}
