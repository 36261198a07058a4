//! Undoing one step: its `rollback` or a checkpoint's `restore`, a fan-out item by item.

use indexmap::IndexMap;

use super::{EngineError, Runner};
use crate::engine::action::Outcome;
use crate::engine::event::Event;
use crate::engine::state::{ItemStatus, StepStatus};
use crate::engine::undo;
use crate::engine::work::Unit;
use crate::runbook::{Action, Step};

impl<'a> Runner<'a> {
    /// A fan-out step is undone item by item, most recent first (the reverse of the order
    /// the items succeeded), each item's undo journaled: after a crash only the items not
    /// undone yet are undone. Items that failed did nothing to undo.
    async fn undo_items(
        &mut self,
        step: &'a Step,
        action: &'a Action,
    ) -> Result<Outcome, EngineError> {
        let items = match self.worker().items(step).await {
            Ok(items) => items,
            Err(e) => {
                return Ok(Outcome::Failed(format!(
                    "cannot list the items to undo: {e}"
                )));
            }
        };
        let names = self.worker().item_names(step, &items);
        let stems = crate::engine::items::stems(&step.id, &names);
        let run = self.state.step(&step.id);
        let todo: Vec<usize> = run
            .finished
            .iter()
            .rev()
            .copied()
            .filter(|ix| {
                run.items.get(ix) == Some(&ItemStatus::Succeeded)
                    && run.items_undone.get(ix) != Some(&true)
            })
            .collect();
        for index in todo {
            let Some(item) = items.get(index) else {
                return Ok(Outcome::Failed(format!(
                    "item {index} is no longer in the list of items; undo it by hand"
                )));
            };
            let name = names[index].clone();
            self.record(Event::ItemRollbackStarted {
                step: step.id.clone(),
                index,
                name: name.clone(),
            })
            .await?;
            let worker = self.worker();
            let unit = Unit::Item(index, item, &stems[index]);
            let undone = self.effects.undo(&worker, step, action, unit).await;
            let words = crate::engine::items::words(index, &name);
            match undone {
                Outcome::Succeeded(_) => {
                    self.record(Event::ItemRolledBack {
                        step: step.id.clone(),
                        index,
                        name,
                    })
                    .await?;
                }
                Outcome::Failed(e) => return Ok(Outcome::Failed(format!("{words}: {e}"))),
                Outcome::TimedOut => return Ok(Outcome::Failed(format!("{words}: timed out"))),
            }
        }
        Ok(Outcome::Succeeded(IndexMap::new()))
    }

    /// Undoes one step with its `rollback`, or (`restore`) restores a checkpoint with
    /// its `restore` action: a fan-out one item by item. A restore that succeeds also
    /// records the steps it brought back.
    pub(super) async fn undo(&mut self, i: usize, restore: bool) -> Result<(), EngineError> {
        let rb = self.rb;
        let step = &rb.steps[i];
        let id = step.id.clone();
        if self.state.step(&id).status != StepStatus::RollingBack {
            self.record(Event::StepRollbackStarted { step: id.clone() })
                .await?;
        }
        let action = if restore {
            step.restore.as_deref()
        } else {
            step.rollback.as_deref()
        }
        .expect("decide only undoes steps with an action");
        let outcome = if step.for_each.is_some() {
            self.undo_items(step, action).await?
        } else {
            let worker = self.worker();
            self.effects.undo(&worker, step, action, Unit::Step).await
        };
        self.record_cancellations(Some(&id), false).await?;
        let events =
            match outcome {
                Outcome::Succeeded(_) => {
                    let mut events = vec![Event::StepRolledBack {
                        step: id.clone(),
                        by_restore: None,
                    }];
                    if restore {
                        events.extend(undo::restored_by(rb, &self.state, i).into_iter().map(
                            |step| Event::StepRolledBack {
                                step,
                                by_restore: Some(id.clone()),
                            },
                        ));
                    }
                    events
                }
                Outcome::Failed(error) => vec![Event::StepRollbackFailed { step: id, error }],
                Outcome::TimedOut => vec![Event::StepRollbackFailed {
                    step: id,
                    error: "timed out".into(),
                }],
            };
        self.record_all(events).await
    }
}
