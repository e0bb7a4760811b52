//! Consensus: openraft wired to our storage and transport, and the narrow handles the rest of
//! the node uses instead of openraft itself.
//!
//! - [`Proposer`] (`proposer.rs`): the only way to propose a command (group commit on the
//!   leader, forwarding from a follower).
//! - [`StateReader`] (`reader.rs`): named queries on the applied state and the executions.
//! - [`Leadership`] (`leadership.rs`): who leads, the fencing term, graceful hand-over.
//! - [`Voters`] (`voters.rs`): the Raft configuration: bootstrap, admission, removal, peers.
//! - `routes.rs`: what the RPC port answers for consensus (append, vote, snapshot, forwarded
//!   writes, elect, peers, remove-peer).
//! - `log_store.rs`: the Raft log, vote and committed pointer in `raft.redb` (fsynced appends);
//!   `log_tail.rs`: its newest entries decoded in memory, for replication and apply.
//! - `state_machine.rs`, `snapshot.rs`: the core's [`dkron_core::state::State`] persisted in
//!   `state.redb` with the execution records; snapshots built from one consistent view.
//! - `store_writer.rs`: the thread that writes applied batches to `state.redb` behind
//!   `apply`, so no commit waits for redb or an fsync.
//! - `network.rs`: Raft RPCs as MessagePack over HTTP to a peer's RPC port.
//! - `runtime.rs`: openraft's runtime (tokio's), with no RPC timeout under one second.
//!
//! A one-server cluster is a one-voter Raft group, so adding servers later adds members
//! rather than replacing storage. openraft's own handle never leaves this module.

mod codec;
mod compaction;
mod leadership;
// openraft fixes the storage error type (224 bytes); our helpers must return it as is.
#[allow(clippy::result_large_err)]
mod log_store;
mod log_tail;
mod network;
mod proposer;
mod reader;
mod routes;
mod runtime;
#[allow(clippy::result_large_err)]
mod snapshot;
#[allow(clippy::result_large_err)]
mod state_machine;
#[allow(clippy::result_large_err)]
mod store_writer;
mod voters;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use dkron_core::command::{Command, Response};
use serde::{Deserialize, Serialize};

pub use leadership::{LeaderWatch, Leadership};
pub use proposer::Proposer;
pub use reader::StateReader;
pub use voters::Voters;

use crate::rpc::RpcClient;

/// What Raft knows about a server: its Dkron node name and the address of its RPC port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerNode {
    pub name: String,
    pub rpc_addr: String,
}

impl fmt::Display for ServerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.rpc_addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Response,
        Node = ServerNode,
        AsyncRuntime = runtime::Runtime,
        // Streamed from and to disk (see `snapshot.rs`).
        SnapshotData = tokio::fs::File,
);

pub type NodeId = u64;
type Raft = openraft::Raft<TypeConfig>;
type StorageError = openraft::StorageError<NodeId>;
type LogId = openraft::LogId<NodeId>;

/// Raft ids are numbers; Dkron names servers. The id is a stable hash of the node name
/// (FNV-1a), so a server keeps its identity across restarts and address changes.
pub fn node_id_for(name: &str) -> NodeId {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

/// A running consensus layer: the handles, and the RPC routes it answers.
pub struct Consensus {
    pub proposer: Proposer,
    pub state: StateReader,
    pub leadership: Leadership,
    pub voters: Voters,
    /// `/raft/*` and the consensus calls of `/rpc/*`, to merge into the RPC router.
    pub routes: axum::Router,
    raft: Raft,
    /// Asks for snapshots by log size (`compaction.rs`).
    compaction: tokio::task::JoinHandle<()>,
}

/// How this server takes part in consensus.
pub struct Settings<'a> {
    pub data_dir: &'a Path,
    /// This server, as the Raft configuration names it.
    pub me: ServerNode,
    /// `--bootstrap-expect=1`: form a one-server group if none exists yet.
    pub bootstrap_alone: bool,
    /// `--raft-multiplier`: scales every Raft timeout.
    pub multiplier: u32,
    /// Tests only (`AgentConfig::raft_snapshot_logs`): snapshot every this many entries.
    pub snapshot_logs: u64,
    /// Tests only (`AgentConfig::raft_snapshot_bytes`): the least log growth that asks for a
    /// snapshot (0: [`compaction::MIN_LOG_BYTES`]).
    pub snapshot_bytes: u64,
}

impl Consensus {
    /// Opens `raft.redb`, `state.redb` and the snapshot in the data dir and starts Raft.
    pub async fn start(settings: Settings<'_>, rpc: RpcClient) -> anyhow::Result<Consensus> {
        let dir = settings.data_dir;
        let log_store = log_store::LogStore::open(&dir.join("raft.redb"))
            .context("opening the Raft log (raft.redb)")?;
        let state_machine = state_machine::StateMachine::open(&dir.join("state.redb"))
            .context("opening the state store (state.redb)")?;
        let state = state_machine.reader();
        let growth = log_store.growth();
        let id = node_id_for(&settings.me.name);
        let raft = Raft::new(
            id,
            Arc::new(config(settings.multiplier, settings.snapshot_logs)?),
            network::Network::new(rpc.clone()),
            log_store,
            state_machine,
        )
        .await
        .context("starting Raft")?;
        if settings.bootstrap_alone && !raft.is_initialized().await? {
            let members = BTreeMap::from([(id, settings.me.clone())]);
            raft.initialize(members)
                .await
                .context("bootstrapping a one-server cluster")?;
            tracing::info!(node = %settings.me.name, "bootstrapped a new single-server cluster");
        }
        let floor = match settings.snapshot_bytes {
            0 => compaction::MIN_LOG_BYTES,
            n => n,
        };
        let compaction = tokio::spawn(compaction::watch(
            raft.clone(),
            growth,
            snapshot::data_path(&dir.join("state.redb")),
            floor,
        ));
        let leadership = Leadership::new(raft.clone(), id, rpc.clone());
        let voters = Voters::new(raft.clone(), id);
        let proposer = Proposer::start(raft.clone(), settings.me.name.clone(), rpc.clone());
        let routes = routes::router(routes::Consensus {
            raft: raft.clone(),
            proposer: proposer.clone(),
            voters: voters.clone(),
            leadership: leadership.clone(),
            rpc,
        });
        Ok(Consensus {
            proposer,
            state,
            leadership,
            voters,
            routes,
            raft,
            compaction,
        })
    }

    /// Stops Raft, which flushes its storage.
    pub async fn shutdown(&self) {
        self.compaction.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown reported an error");
        }
    }
}

fn config(multiplier: u32, snapshot_logs: u64) -> anyhow::Result<openraft::Config> {
    let m = u64::from(multiplier.max(1));
    // A snapshot costs time proportional to the whole state; entries are batches, so 20,000
    // of them cover minutes of heavy scheduling. Tests take them far more often.
    let (every, keep) = match snapshot_logs {
        0 => (20_000, 1000),
        n => (n, 0),
    };
    let config = openraft::Config {
        cluster_name: "dkron".into(),
        // A follower grants no vote while its leader lease (the election timeout) runs, so a
        // dead leader costs up to two timeouts before a new one leads: keep them short enough
        // for a ~2 s failover on a LAN; --raft-multiplier scales them for slower networks.
        heartbeat_interval: 100 * m,
        election_timeout_min: 400 * m,
        election_timeout_max: 800 * m,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(every),
        max_in_snapshot_log_to_keep: keep,
        ..Default::default()
    };
    Ok(config.validate()?)
}

/// Maps any storage-layer error into openraft's error type.
fn io_err<E: std::error::Error + 'static>(verb: openraft::ErrorVerb, e: E) -> StorageError {
    openraft::StorageIOError::new(
        openraft::ErrorSubject::Store,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn read_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    io_err(openraft::ErrorVerb::Read, e)
}

fn write_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    io_err(openraft::ErrorVerb::Write, e)
}

/// openraft's storage conformance suite, run against our redb log store and state machine.
#[cfg(test)]
mod conformance {
    use openraft::testing::{StoreBuilder, Suite};

    use super::log_store::LogStore;
    use super::state_machine::StateMachine;
    use super::{StorageError, TypeConfig};

    struct RedbBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(super::write_err)?;
            let log = LogStore::open(&dir.path().join("raft.redb"))
                .map_err(|e| super::write_err(std::io::Error::other(e.to_string())))?;
            let sm = StateMachine::open(&dir.path().join("state.redb"))
                .map_err(|e| super::write_err(std::io::Error::other(e.to_string())))?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn redb_storage_passes_openraft_suite() {
        Suite::test_all(RedbBuilder).expect("openraft storage suite");
    }
}
