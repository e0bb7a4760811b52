//! dkron-rs: a distributed cron service compatible with Dkron v4.
//!
//! This crate is the shell around the IO-free [`dkron_core`]: it owns sockets, disks, clocks
//! and processes. See ARCHITECTURE.md for the map; in short:
//! [`cli`] and [`config`] turn flags/env/file into an [`config::AgentConfig`]; [`node`] wires
//! storage, Raft, the HTTP API, the scheduler and the runner together; [`raft`] adapts
//! openraft; [`api`] is the REST surface; [`scheduler`] fires due jobs on the leader;
//! [`runner`] claims, executes and records runs; [`outputs`] keeps full run output locally.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod journal;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod orders;
pub mod outputs;
pub mod processors;
pub mod raft;
pub mod runner;
pub mod scheduler;
pub mod telemetry;
pub mod ui;

/// Version reported by `dkron version`, `/v1` and the member tags.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
