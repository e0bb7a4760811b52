//! What a node keeps on its own disk, outside consensus: the redb opening rules every store
//! shares, and the full output of the runs this node recorded ([`outputs`]).
//!
//! The replicated stores (Raft log, state machine) live in `raft/`; the start journal, which
//! only the executing side reads, in `worker/`.

pub mod outputs;

pub use outputs::OutputStore;

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
