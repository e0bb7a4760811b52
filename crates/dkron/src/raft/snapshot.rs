//! Snapshots of the state machine: the core's state plus every execution record, in
//! `snapshot.bin` (a JSON metadata line, then the data in MessagePack; see `codec.rs`). Built
//! on a low-priority thread of its own from one consistent point, so building never stalls
//! `apply` or the scheduler; the applied state is made durable first, so openraft may purge
//! the log behind it.

use std::io::Cursor;
use std::path::Path;

use dkron_core::job::Execution;
use dkron_core::state::State;
use openraft::storage::Snapshot;
use openraft::{RaftSnapshotBuilder, SnapshotMeta};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::reader::Shared;
use super::state_machine::{EXECUTIONS, StateMachine};
use super::{NodeId, ServerNode, StorageError, TypeConfig, codec, read_err, write_err};

#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotData {
    pub(super) state: State,
    pub(super) executions: Vec<Execution>,
}

pub(super) fn write_snapshot_file(
    path: &Path,
    meta: &SnapshotMeta<NodeId, ServerNode>,
    data: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut file, meta)?;
    file.write_all(b"\n")?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub(super) fn read_snapshot_file(path: &Path) -> std::io::Result<Option<Snapshot<TypeConfig>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| std::io::Error::other("snapshot file has no metadata line"))?;
    let meta = serde_json::from_slice(&bytes[..split])?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(bytes[split + 1..].to_vec())),
    }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let reader = self.reader();
        // Serialising and writing tens of megabytes must not stall the async workers (fires
        // would be late): the build runs on its own thread, at a lower CPU priority.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("dkron-snapshot".into())
            .spawn(move || {
                lower_thread_priority();
                let _ = tx.send(build_snapshot_blocking(&reader.inner));
            })
            .map_err(write_err)?;
        rx.await.map_err(read_err)?
    }
}

/// Makes the calling thread yield the CPU to the scheduler and the API (nice 10).
fn lower_thread_priority() {
    // SAFETY: setpriority on the calling thread (who = 0) only changes this thread's nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

fn build_snapshot_blocking(shared: &Shared) -> Result<Snapshot<TypeConfig>, StorageError> {
    // One consistent point: no apply runs while we copy the state and open the read txn.
    let (state, applied, read_txn) = {
        let _serial = shared.apply_lock.lock().expect("apply lock");
        // The applied state must be durable before openraft purges the log behind it.
        let flush = shared.db.begin_write().map_err(write_err)?;
        flush.commit().map_err(write_err)?;
        let state = shared.state.read().expect("state lock").clone();
        let applied = shared.applied.lock().expect("applied lock").clone();
        let txn = shared.db.begin_read().map_err(read_err)?;
        (state, applied, txn)
    };
    let mut executions = Vec::new();
    {
        let table = read_txn.open_table(EXECUTIONS).map_err(read_err)?;
        for item in table.iter().map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            executions.push(codec::decode(v.value()).map_err(read_err)?);
        }
    }
    drop(read_txn);
    let data = codec::encode(&SnapshotData { state, executions }).map_err(write_err)?;
    let snapshot_id = match applied.0 {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, data.len()),
        None => format!("0-0-{}", data.len()),
    };
    let meta = SnapshotMeta {
        last_log_id: applied.0,
        last_membership: applied.1,
        snapshot_id,
    };
    write_snapshot_file(&shared.snapshot_path, &meta, &data).map_err(write_err)?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    })
}
