//! An `approve` step: waits for `runbook approve` or `reject`, or for its `timeout`
//! (then `on_timeout` decides).

use std::time::Duration;

use super::{EngineError, Runner};
use crate::engine::event::Event;
use crate::runbook::OnTimeout;
use crate::store::now_ms;

impl<'a> Runner<'a> {
    pub(super) async fn await_approval(&mut self, i: usize) -> Result<(), EngineError> {
        let step = &self.rb.steps[i];
        let id = step.id.clone();
        let attempt = self.state.step(&id).attempts;
        let started = self.state.step(&id).started_ms.unwrap_or_else(now_ms);
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
            if let Some(t) = step.timeout
                && now_ms() - started >= crate::duration::millis(t)
            {
                let event = match step.on_timeout {
                    OnTimeout::Reject => Event::StepTimedOut { step: id, attempt },
                    OnTimeout::Approve => Event::Approved {
                        step: id,
                        by: "timeout".into(),
                    },
                };
                return self.record(event).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
