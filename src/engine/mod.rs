//! The engine: events (the journal's vocabulary), the run state as a fold over them,
//! `decide` (pure), and the runner that records each event before acting on it.

pub mod action;
pub mod builtin;
pub mod context;
pub mod control;
pub mod decide;
pub mod history;
pub mod items;
/// The journal's vocabulary ([`crate::journal`]), at the path the engine's code uses.
pub use crate::journal as event;
pub mod mask;
pub mod progress;
pub mod publish;
pub mod quote;
pub mod run;
pub mod ssh;
pub mod state;
pub mod target;
pub mod terminal;
pub mod timing;
pub mod undo;
pub mod vars;
pub mod work;

#[cfg(test)]
mod fold_tests;
