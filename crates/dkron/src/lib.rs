//! dkron-rs: a distributed cron service compatible with Dkron v4.
//!
//! This crate is the shell around the IO-free [`dkron_core`]: it owns sockets, disks, clocks
//! and processes. Its folders are its runtime roles (ARCHITECTURE.md has the map, and a test
//! holds the dependencies between them to it):
//! [`cli`] is the process; [`server`] and [`agent`] build a node from its parts; [`raft`] is
//! consensus behind narrow handles; [`cluster`] is gossip membership; [`leader`] schedules and
//! runs jobs while this server leads; [`worker`] executes the run orders placed on this node;
//! [`api`] and [`ui`] are the HTTP surface; [`rpc`] is how nodes talk; [`storage`],
//! [`config`], [`telemetry`], [`clock`] and [`shutdown`] are shared by all.

pub mod agent;
pub mod api;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod leader;
pub mod raft;
pub mod rpc;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod ui;
pub mod worker;

/// Version reported by `dkron version`, `/v1` and the member tags.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
