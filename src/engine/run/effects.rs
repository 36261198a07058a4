//! What a step does to the world, behind one seam: the real effects run the step's
//! actions through a [`Worker`]; tests put in effects that only take (virtual) time.

use futures_util::future::BoxFuture;

use crate::engine::action::Outcome;
use crate::engine::work::{Unit, Worker};
use crate::runbook::{Action, Step};

/// Runs a step's work and its undo.
pub(crate) trait Effects: Send + Sync {
    /// The work of a step, or of one of its fan-out items.
    fn work<'a>(
        &'a self,
        worker: &'a Worker<'a>,
        step: &'a Step,
        unit: Unit<'a>,
    ) -> BoxFuture<'a, Outcome>;

    /// Undoes a step (or item) with `action`, its `rollback` or its checkpoint's `restore`.
    fn undo<'a>(
        &'a self,
        worker: &'a Worker<'a>,
        step: &'a Step,
        action: &'a Action,
        unit: Unit<'a>,
    ) -> BoxFuture<'a, Outcome>;
}

/// The step's real actions: commands, SQL, HTTP, built-ins.
pub(crate) struct Real;

impl Effects for Real {
    fn work<'a>(
        &'a self,
        worker: &'a Worker<'a>,
        step: &'a Step,
        unit: Unit<'a>,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(worker.work(step, unit))
    }

    fn undo<'a>(
        &'a self,
        worker: &'a Worker<'a>,
        step: &'a Step,
        action: &'a Action,
        unit: Unit<'a>,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(worker.undo(step, action, unit))
    }
}
