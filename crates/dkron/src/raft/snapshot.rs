//! Snapshots of the state machine, streamed. `snapshot.data` holds a header (a magic line and
//! the snapshot's metadata as JSON), then every record of the replicated tables exactly as
//! `state.redb` stores it — job entries, execution records, daily counts, the pause flag and
//! the ACL state — each as (table, key, value), then an end mark, so a cut-short file is
//! refused, never half installed.
//!
//! Built from one consistent read transaction on a low-priority thread of its own, so building
//! never stalls `apply` or the scheduler; installed record by record into one write
//! transaction, after which the in-memory state is loaded from the tables as at startup; sent
//! to followers in chunks straight from the file. No step holds the whole snapshot in memory.
//! Earlier versions did: every execution record decoded into one list and encoded into one
//! buffer, hundreds of megabytes with a million executions. Their `snapshot.bin` is converted
//! once, when first asked for.
//!
//! The applied state is made durable before a snapshot is taken, so openraft may purge the log
//! behind it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use dkron_core::job::Execution;
use dkron_core::state::State;
use openraft::storage::Snapshot;
use openraft::{RaftSnapshotBuilder, SnapshotMeta};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::reader::Shared;
use super::state_machine::{
    ACL, EXECUTIONS, JOB_RUNTIME, JOBS, LAST_APPLIED, MEMBERSHIP, PAUSED, SM_META, STATS,
    StateMachine, applied_point, execution_key, load, put_json, stored_entry,
};
use super::{NodeId, ServerNode, StorageError, TypeConfig, codec, read_err, write_err};

type Meta = SnapshotMeta<NodeId, ServerNode>;

const MAGIC: &[u8] = b"dkron-snapshot-2\n";
/// Where a table's records end and the next table's begin is not marked: each record names
/// its table. This tag ends the file.
const END: u8 = 0;

/// The replicated tables, by the tag their records carry in a snapshot. `sm_meta` travels
/// only for the pause flag and the ACL state: the applied pointer and membership are the
/// snapshot's metadata. A job travels whole, its runtime (`job_runtime`) laid over it, so
/// the format did not change when the runtime moved to a table of its own.
const TABLES: [(u8, TableDefinition<&str, &[u8]>); 4] =
    [(1, JOBS), (2, EXECUTIONS), (3, STATS), (4, SM_META)];
const META_KEYS: [&str; 2] = [PAUSED, ACL];

/// The current snapshot, next to `state.redb`.
pub(super) fn data_path(state_db: &Path) -> PathBuf {
    state_db.with_file_name("snapshot.data")
}

fn receiving_path(data: &Path) -> PathBuf {
    data.with_file_name("snapshot.recv")
}

/// Earlier versions' snapshot: a JSON metadata line, then the whole state in MessagePack.
fn legacy_path(data: &Path) -> PathBuf {
    data.with_file_name("snapshot.bin")
}

#[derive(Serialize, Deserialize)]
struct LegacySnapshot {
    state: State,
    executions: Vec<Execution>,
}

fn io_error(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

fn write_header(w: &mut impl Write, meta: &Meta) -> std::io::Result<()> {
    let json = serde_json::to_vec(meta)?;
    w.write_all(MAGIC)?;
    w.write_all(&(json.len() as u32).to_le_bytes())?;
    w.write_all(&json)
}

fn read_header(r: &mut impl Read) -> std::io::Result<Meta> {
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(io_error("not a dkron snapshot (bad magic)"));
    }
    let json = read_chunk(r)?;
    Ok(serde_json::from_slice(&json)?)
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_chunk(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let len = read_u32(r)? as usize;
    let mut buf = Vec::new();
    // `take` rather than a buffer of `len`: a damaged length must not allocate gigabytes.
    r.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(io_error("snapshot cut short inside a record"));
    }
    Ok(buf)
}

fn write_record(w: &mut impl Write, tag: u8, key: &str, value: &[u8]) -> std::io::Result<()> {
    w.write_all(&[tag])?;
    w.write_all(&(key.len() as u32).to_le_bytes())?;
    w.write_all(key.as_bytes())?;
    w.write_all(&(value.len() as u32).to_le_bytes())?;
    w.write_all(value)
}

/// The next record, or `None` at the end mark; a file that stops before it is an error.
fn read_record(r: &mut impl Read) -> std::io::Result<Option<(u8, String, Vec<u8>)>> {
    let mut tag = [0u8; 1];
    if let Err(e) = r.read_exact(&mut tag) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            io_error("snapshot cut short: no end mark")
        } else {
            e
        });
    }
    if tag[0] == END {
        return Ok(None);
    }
    let key = String::from_utf8(read_chunk(r)?).map_err(|_| io_error("snapshot key not UTF-8"))?;
    Ok(Some((tag[0], key, read_chunk(r)?)))
}

/// Writes `path` through a temporary file, fsynced and renamed into place.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    fill(&mut w)?;
    w.flush()?;
    drop(w);
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The current snapshot, opened for openraft to read (and send) from the start; `None` if
/// none was taken. A snapshot in the earlier format is converted first.
pub(super) fn current_snapshot(data: &Path) -> std::io::Result<Option<Snapshot<TypeConfig>>> {
    let mut file = match File::open(data) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let legacy = legacy_path(data);
            if !legacy.exists() {
                return Ok(None);
            }
            convert_legacy(&legacy, data)?;
            File::open(data)?
        }
        Err(e) => return Err(e),
    };
    let meta = read_header(&mut BufReader::new(&mut file))?;
    file.rewind()?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(tokio::fs::File::from_std(file)),
    }))
}

/// Rewrites an earlier version's `snapshot.bin` in the streamed format (this once, it is read
/// whole), then removes it.
fn convert_legacy(legacy: &Path, data: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(legacy)?;
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| io_error("snapshot file has no metadata line"))?;
    let meta: Meta = serde_json::from_slice(&bytes[..split])?;
    let old: LegacySnapshot =
        codec::decode(&bytes[split + 1..]).map_err(|e| io_error(e.to_string()))?;
    write_atomically(data, |w| {
        write_header(w, &meta)?;
        for (name, entry) in old.state.entries() {
            write_record(w, 1, name, &encoded(entry)?)?;
        }
        for e in &old.executions {
            write_record(w, 2, &execution_key(&e.job_name, &e.id), &encoded(e)?)?;
        }
        for (day, count) in old.state.stats().days() {
            write_record(w, 3, &day.to_string(), &serde_json::to_vec(count)?)?;
        }
        write_record(w, 4, PAUSED, &serde_json::to_vec(&old.state.paused())?)?;
        write_record(w, 4, ACL, &serde_json::to_vec(old.state.acl())?)?;
        w.write_all(&[END])
    })?;
    std::fs::remove_file(legacy)?;
    tracing::info!(
        snapshot = %data.display(),
        "converted the Raft snapshot to the streamed format"
    );
    Ok(())
}

/// A job entry or an execution record encoded as `state.redb` stores it.
fn encoded<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    codec::encode(value).map_err(|e| io_error(e.to_string()))
}

/// Where openraft writes the chunks of a snapshot a leader sends.
pub(super) async fn receiving(data: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(receiving_path(data))
        .await
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let reader = self.reader();
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
    // One consistent, durable point, taken between two of the state writer's transactions:
    // `apply` goes on meanwhile (holding it up while the writer drained its queue stalled a
    // leader's claims for seconds at 4,000 runs/s). The snapshot may be behind what is
    // applied in memory; openraft purges only the log behind the snapshot.
    let read_txn = shared.writer.durable_read()?;
    let applied = applied_point(&read_txn).map_err(|e| read_err(io_error(format!("{e:#}"))))?;
    let records = read_txn
        .open_table(EXECUTIONS)
        .map_err(read_err)?
        .len()
        .map_err(read_err)?;
    let meta = Meta {
        snapshot_id: match applied.0 {
            Some(id) => format!("{}-{}-{records}", id.leader_id.term, id.index),
            None => format!("0-0-{records}"),
        },
        last_log_id: applied.0,
        last_membership: applied.1,
    };
    let runtimes = read_txn.open_table(JOB_RUNTIME).map_err(read_err)?;
    write_atomically(&shared.snapshot_path, |w| {
        write_header(w, &meta)?;
        for (tag, table) in TABLES {
            let t = read_txn.open_table(table).map_err(std::io::Error::other)?;
            for item in t.iter().map_err(std::io::Error::other)? {
                let (k, v) = item.map_err(std::io::Error::other)?;
                let key = k.value();
                if tag == 4 && !META_KEYS.contains(&key) {
                    continue;
                }
                if tag == 1 {
                    let entry = stored_entry(&runtimes, key, v.value())
                        .map_err(|e| io_error(format!("job {key}: {e:#}")))?;
                    let bytes = codec::encode(&entry).map_err(std::io::Error::other)?;
                    write_record(w, tag, key, &bytes)?;
                    continue;
                }
                write_record(w, tag, key, v.value())?;
            }
        }
        w.write_all(&[END])
    })
    .map_err(write_err)?;
    drop(read_txn);
    current_snapshot(&shared.snapshot_path)
        .map_err(read_err)?
        .ok_or_else(|| read_err(io_error("the snapshot just written is gone")))
}

/// Installs a snapshot a leader sent (written by openraft into the receiving file): replaces
/// the replicated tables with its records in one transaction, makes it the current snapshot,
/// and loads the in-memory state from the tables.
pub(super) fn install_blocking(
    shared: &Shared,
    meta: &Meta,
    mut file: File,
) -> Result<(), StorageError> {
    file.rewind().map_err(read_err)?;
    let mut r = BufReader::with_capacity(1 << 20, &mut file);
    let sent = read_header(&mut r).map_err(read_err)?;
    if sent.last_log_id != meta.last_log_id {
        return Err(read_err(io_error(format!(
            "snapshot data is for {:?}, not {:?}",
            sent.last_log_id, meta.last_log_id
        ))));
    }
    let _serial = shared.apply_lock.lock().expect("apply lock");
    // Nothing applied before may land on top of the snapshot's records.
    shared.writer.caught_up()?;
    let txn = shared.db.begin_write().map_err(write_err)?;
    // The snapshot's jobs carry their runtimes.
    for table in TABLES.map(|(_, t)| t).into_iter().chain([JOB_RUNTIME]) {
        let mut t = txn.open_table(table).map_err(write_err)?;
        t.retain(|_, _| false).map_err(write_err)?;
    }
    {
        let mut tables = TABLES
            .iter()
            .map(|(tag, def)| Ok((*tag, txn.open_table(*def)?)))
            .collect::<Result<Vec<_>, redb::TableError>>()
            .map_err(write_err)?;
        while let Some((tag, key, value)) = read_record(&mut r).map_err(read_err)? {
            let Some((_, table)) = tables.iter_mut().find(|(t, _)| *t == tag) else {
                return Err(read_err(io_error(format!(
                    "snapshot record of unknown table {tag}"
                ))));
            };
            table
                .insert(key.as_str(), value.as_slice())
                .map_err(write_err)?;
        }
    }
    put_json(&txn, SM_META, LAST_APPLIED, &meta.last_log_id)?;
    put_json(&txn, SM_META, MEMBERSHIP, &meta.last_membership)?;
    // From the commit to the new state in memory, readers that join the two wait.
    let records = shared.records.write().expect("records lock");
    txn.commit().map_err(write_err)?;
    drop(r);
    // The installed snapshot becomes this server's current one (a copy: openraft may hand
    // over a file other than the receiving one).
    file.rewind().map_err(read_err)?;
    write_atomically(&shared.snapshot_path, |w| {
        std::io::copy(&mut file, w).map(|_| ())
    })
    .map_err(write_err)?;
    drop(file);
    let _ = std::fs::remove_file(receiving_path(&shared.snapshot_path));
    let (state, _) = load(&shared.db).map_err(|e| read_err(io_error(format!("{e:#}"))))?;
    let names: std::collections::BTreeSet<String> = state.job_names().cloned().collect();
    *shared.state.write().expect("state lock") = state;
    drop(records);
    *shared.applied.lock().expect("applied lock") =
        (meta.last_log_id, meta.last_membership.clone());
    shared.dirty.lock().expect("dirty lock").extend(names);
    shared.changed.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use dkron_core::command::Command;
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::*;

    /// A state machine with `jobs` jobs of `runs` execution records each, paused.
    async fn filled(dir: &Path, jobs: usize, runs: usize) -> StateMachine {
        let mut sm = StateMachine::open(&dir.join("state.redb")).unwrap();
        let mut commands = Vec::new();
        for j in 0..jobs {
            let job = serde_json::from_value(serde_json::json!({
                "name": format!("job{j}"), "schedule": "@every 5s", "executor": "shell",
                "executor_config": {"command": "true"}, "metadata": {"user": "12345"},
            }))
            .unwrap();
            commands.push(Command::SetJob {
                job: Box::new(job),
                now: "2026-01-01T00:00:00Z".parse().unwrap(),
                refuse_when_paused: false,
            });
            for r in 0..runs {
                let execution = Execution {
                    id: format!("{r:020}-n1"),
                    job_name: format!("job{j}"),
                    started_at: Some("2026-01-01T00:00:01Z".parse().unwrap()),
                    node_name: "n1".into(),
                    group: r as i64 + 1,
                    attempt: 1,
                    ..Default::default()
                };
                commands.push(Command::StartExecution {
                    execution: execution.clone(),
                    enforce_forbid: false,
                    moved_from: None,
                });
                // Finished, so each run has its record in `state.redb` (a run in progress
                // has none yet).
                commands.push(Command::FinishExecution {
                    execution: Execution {
                        finished_at: Some("2026-01-01T00:00:02Z".parse().unwrap()),
                        success: true,
                        ..execution
                    },
                    stopped: false,
                });
            }
        }
        commands.push(Command::SetPaused { paused: true });
        let entries = commands.into_iter().enumerate().map(|(i, c)| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), i as u64 + 1),
            payload: EntryPayload::Normal(c),
        });
        // One batch each, as in a live cluster: the runs write their jobs' runtimes apart
        // from the entries written when the jobs were set.
        for entry in entries {
            sm.apply([entry]).await.unwrap();
        }
        sm
    }

    fn executions_of(sm: &StateMachine, jobs: usize) -> Vec<Execution> {
        (0..jobs)
            .flat_map(|j| sm.reader().executions(&format!("job{j}")).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_snapshot_streams_every_record_into_another_server() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = filled(a.path(), 20, 30).await;
        let snapshot = leader.build_snapshot().await.unwrap();
        let mut follower = StateMachine::open(&b.path().join("state.redb")).unwrap();
        // As openraft does: the leader's file read into the follower's receiving file.
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        let mut sent = snapshot.snapshot;
        tokio::io::copy(&mut *sent, &mut *receiving).await.unwrap();
        follower
            .install_snapshot(&snapshot.meta, receiving)
            .await
            .unwrap();

        let state = |sm: &StateMachine| sm.reader().read(|s| s.clone());
        let applied = |sm: &StateMachine| sm.shared().applied.lock().unwrap().clone();
        assert_eq!(state(&follower), state(&leader));
        assert_eq!(applied(&follower), applied(&leader));
        assert!(follower.reader().paused());
        let copied = executions_of(&follower, 20);
        assert_eq!(copied.len(), 600);
        assert_eq!(copied, executions_of(&leader, 20));
        // The installed snapshot is the follower's own now, and so is what it restarts from.
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
        drop(follower);
        let reopened = StateMachine::open(&b.path().join("state.redb")).unwrap();
        assert_eq!(state(&reopened), state(&leader));
        // The leader's own file too: its runtimes, written apart, are laid back over its jobs.
        let before = state(&leader);
        assert_eq!(before.entry("job3").unwrap().job.success_count, 30);
        drop(leader);
        let leader = StateMachine::open(&a.path().join("state.redb")).unwrap();
        assert_eq!(state(&leader), before);
    }

    #[tokio::test]
    async fn a_snapshot_cut_short_is_refused_and_changes_nothing() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = filled(a.path(), 5, 10).await;
        let snapshot = leader.build_snapshot().await.unwrap();
        let mut follower = filled(b.path(), 1, 1).await;
        let before = follower.reader().read(|s| s.clone());
        let bytes = std::fs::read(data_path(&a.path().join("state.redb"))).unwrap();
        for cut in [bytes.len() - 1, bytes.len() / 2, MAGIC.len() + 2] {
            use tokio::io::AsyncWriteExt;
            let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
            receiving.write_all(&bytes[..cut]).await.unwrap();
            let refused = follower.install_snapshot(&snapshot.meta, receiving).await;
            assert!(refused.is_err(), "cut at {cut} of {}", bytes.len());
            assert_eq!(follower.reader().read(|s| s.clone()), before);
            assert_eq!(executions_of(&follower, 1).len(), 1);
        }
    }

    #[tokio::test]
    async fn an_earlier_versions_snapshot_is_converted_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = filled(dir.path(), 3, 4).await;
        let state = sm.reader().read(|s| s.clone());
        let executions = executions_of(&sm, 3);
        let meta = sm.build_snapshot().await.unwrap().meta;
        // What earlier versions wrote: a JSON metadata line, then the whole state.
        let data = data_path(&dir.path().join("state.redb"));
        std::fs::remove_file(&data).unwrap();
        let mut legacy = serde_json::to_vec(&meta).unwrap();
        legacy.push(b'\n');
        legacy.extend(
            codec::encode(&LegacySnapshot {
                state: state.clone(),
                executions: executions.clone(),
            })
            .unwrap(),
        );
        std::fs::write(legacy_path(&data), legacy).unwrap();

        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, meta);
        assert!(data.exists() && !legacy_path(&data).exists());
        // Its records install as the original state.
        let other = tempfile::tempdir().unwrap();
        let mut fresh = StateMachine::open(&other.path().join("state.redb")).unwrap();
        let mut receiving = fresh.begin_receiving_snapshot().await.unwrap();
        let mut sent = current.snapshot;
        tokio::io::copy(&mut *sent, &mut *receiving).await.unwrap();
        fresh.install_snapshot(&meta, receiving).await.unwrap();
        assert_eq!(fresh.reader().read(|s| s.clone()), state);
        assert_eq!(executions_of(&fresh, 3), executions);
    }
}
