//! Consensus: openraft wired to our storage and transport.
//!
//! - [`log_store`]: the Raft log, vote and committed pointer in `raft.redb` (fsynced appends).
//! - [`state_machine`]: the core's [`dkron_core::state::State`] persisted in `state.redb`,
//!   plus the execution records; snapshots are built from one consistent view.
//! - [`network`]: Raft RPCs as JSON over HTTP to a peer's RPC port.
//!
//! A one-server cluster is a one-voter Raft group, so adding servers later adds members
//! rather than replacing storage.

// openraft fixes the storage error type (224 bytes); our helpers must return it as is.
#[allow(clippy::result_large_err)]
pub mod log_store;
pub mod network;
#[allow(clippy::result_large_err)]
pub mod state_machine;

use std::fmt;
// The macro's default snapshot type names `Cursor` unqualified.
use std::io::Cursor;

use dkron_core::command::{Command, Response};
use serde::{Deserialize, Serialize};

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
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogId = openraft::LogId<NodeId>;

/// redb page caches. redb's default is 1 GiB per database; memory must stay bounded, and
/// the hot state (jobs) is in memory anyway, so small caches suffice.
pub const LOG_CACHE_BYTES: usize = 2 << 20;
pub const STATE_CACHE_BYTES: usize = 4 << 20;

/// Opens (or creates) a redb file with a bounded page cache.
pub fn open_db(
    path: &std::path::Path,
    cache_bytes: usize,
) -> Result<redb::Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)
}

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

/// Maps any storage-layer error into openraft's error type.
pub(crate) fn io_err<E: std::error::Error + 'static>(
    verb: openraft::ErrorVerb,
    e: E,
) -> StorageError {
    openraft::StorageIOError::new(
        openraft::ErrorSubject::Store,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

pub(crate) fn read_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    io_err(openraft::ErrorVerb::Read, e)
}

pub(crate) fn write_err<E: std::error::Error + 'static>(e: E) -> StorageError {
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
