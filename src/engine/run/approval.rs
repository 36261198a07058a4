//! An `approve` step: waits for `runbook approve` or `reject`, or until its `timeout`
//! (then `decide` says what `on_timeout` means).

use std::time::Duration;

use super::{EngineError, Runner};

/// How often a runner waiting for an approval looks for it in the journal.
const APPROVAL_POLL: Duration = Duration::from_millis(250);

impl<'a> Runner<'a> {
    /// Waits until step `i` is no longer awaiting approval, the run has ended, or
    /// `until_ms` (its timeout) has come.
    pub(super) async fn await_approval(
        &mut self,
        i: usize,
        until_ms: Option<i64>,
    ) -> Result<(), EngineError> {
        let id = self.rb.steps[i].id.clone();
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
            let now = self.clock.now_ms();
            match until_ms {
                Some(at) if now >= at => return Ok(()),
                Some(at) => {
                    let left = Duration::from_millis((at - now) as u64);
                    self.clock.sleep(APPROVAL_POLL.min(left)).await;
                }
                None => self.clock.sleep(APPROVAL_POLL).await,
            }
        }
    }
}
