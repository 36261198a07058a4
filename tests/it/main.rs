//! The integration tests, one binary: cargo links one executable instead of one a file,
//! and the tests of every file run alongside each other. `cargo test --test it engine::`
//! runs one file's tests.

mod common;

mod actions;
mod backup;
mod bad_input;
mod browser;
mod cancel;
mod cli;
mod crash;
mod databases;
mod drill;
mod engine;
mod feeds;

mod fuzz;
mod hosts;
mod injection;
mod invalid_corpus;
mod items;
mod lease;
mod migrate;
mod notify;
mod online;
mod readme;
mod report;
mod safety;
mod schema;
mod secrets;
mod status;
mod store_resilience;
mod timing;
