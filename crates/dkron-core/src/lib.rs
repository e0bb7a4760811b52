//! The IO-free core of dkron-rs.
//!
//! Everything here is deterministic: no sockets, no tokio, no clock. Time and randomness arrive
//! as arguments (`now`, `rng`), stamped by the shell (the `dkron` crate). That is what lets the
//! state machine be replayed identically on every server and lets the tests be plain functions.
//!
//! - [`acl`]: policies, tokens and who may do what.
//! - [`job`]: Dkron's job and execution records, with their exact JSON shapes.
//! - [`validate`]: job validation that reports every problem at once, naming the field.
//! - [`schedule`]: the schedule language (6-field cron, descriptors, `@every`, `@at`, `~`).
//! - [`placement`]: choosing target nodes from a job's tags.
//! - [`plan`]: the runs of one trigger, and where a retry or an undelivered run goes.
//! - [`due`]: the leader's due queue and the catch-up decisions it records first.
//! - [`command`]: the replicated-log commands and their responses.
//! - [`state`]: the state machine (`apply`), including the fire ledger.
//! - [`stats`]: daily execution counts (`/v1/stats`).
//! - [`occurrence`]: skip records, the catch-up decision, per-occurrence verdicts.
//! - [`timefmt`]: Dkron's timestamp JSON conventions.

pub mod acl;
pub mod admission;
pub mod command;
pub mod due;
pub mod godur;
pub mod job;
pub mod notify;
pub mod occurrence;
pub mod placement;
pub mod plan;
pub mod processor;
pub mod schedule;
pub mod state;
pub mod stats;
pub mod timefmt;
pub mod validate;

pub use jiff::Timestamp;

/// How many executions each job keeps (Dkron's `MaxExecutions`).
pub const MAX_EXECUTIONS_PER_JOB: usize = 100;

/// Bytes of output a replicated execution record carries at most (its tail); the whole
/// output stays on the node that recorded the run. `apply` enforces it.
pub const INLINE_OUTPUT_LIMIT: usize = 1024;
