//! runbook: runs planned database maintenance safely and tells everyone what is happening.

pub mod address;
pub mod cli;
pub mod commands;
pub mod diagnostic;
pub mod duration;
pub mod engine;
pub mod exit;
pub mod input;
pub mod journal;
pub mod notify;
pub mod plan;
pub mod report;
pub mod retry;
pub mod runbook;
pub mod sql;
pub mod status;
pub mod store;
pub mod suggest;
pub mod template;
pub mod terminal;
