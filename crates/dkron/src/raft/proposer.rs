//! The write path: the only holder of the way into the Raft log.
//!
//! On the leader, a group-commit loop packs every proposal queued while an entry is in flight
//! into one `Command::Batch` entry (at most [`MAX_IN_FLIGHT`] entries in flight), so thousands
//! of claims or creates share one fsync. On a follower, [`Proposer::write`] forwards the
//! command to the leader's RPC port and then waits until this server applied the entry too,
//! so a client reads its own write from the server it wrote to.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dkron_core::admission::{self, Admission};

use dkron_core::command::{Command, Response};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Raft, ServerNode};
use crate::clock;
use crate::rpc::RpcClient;
use crate::rpc::wire::{Committed, WriteError};

/// Most commands packed into one log entry. At 4,000 runs/s on three servers of two cores
/// the queue is never empty, so every entry is full and this bounds the log's throughput:
/// 512 kept the leader 52 s behind after six minutes of 20,000 jobs `@every 5s`; with 2,048
/// it ran all 240,000 due runs of a minute, under 3 s late.
const MAX_BATCH: usize = 2048;
/// Log entries proposed at once; more queue up and form the next batch.
const MAX_IN_FLIGHT: usize = 2;
/// Commands waiting for the log beyond which client writes are refused (`admission`): about
/// a second of work for a leader that keeps up.
pub const WRITE_QUEUE: usize = 4096;
/// How long a follower waits for its own state machine to catch up with a write it forwarded.
const READ_YOUR_WRITE_WAIT: Duration = Duration::from_secs(5);

struct PendingWrite {
    command: Command,
    reply: oneshot::Sender<Result<Committed, WriteError>>,
}

/// Proposes commands (clones share the one group-commit loop).
#[derive(Clone)]
pub struct Proposer {
    writes: mpsc::UnboundedSender<PendingWrite>,
    /// What takes load off ([`admission::relieves`]): packed ahead of `writes`.
    urgent: mpsc::UnboundedSender<PendingWrite>,
    /// Commands proposed here and not answered yet.
    pending: Arc<AtomicUsize>,
    /// How many may wait before client writes are refused ([`WRITE_QUEUE`]).
    capacity: Arc<AtomicUsize>,
    raft: Raft,
    name: String,
    rpc: RpcClient,
}

impl Proposer {
    pub(super) fn start(raft: Raft, name: String, rpc: RpcClient) -> Proposer {
        let (writes, pending) = mpsc::unbounded_channel();
        let (urgent, urgent_pending) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(raft.clone(), urgent_pending, pending));
        Proposer {
            writes,
            urgent,
            pending: Arc::default(),
            capacity: Arc::new(AtomicUsize::new(WRITE_QUEUE)),
            raft,
            name,
            rpc,
        }
    }

    /// Proposes a command and waits until it is committed and applied here; forwarded to the
    /// leader from a follower.
    #[tracing::instrument(name = "raft.write", skip_all)]
    pub async fn write(&self, command: Command) -> Result<Response, WriteError> {
        let leader = super::leadership::current_leader(&self.raft);
        match leader.filter(|l| l.name != self.name) {
            Some(leader) => self.forward(&leader, command).await,
            None => match self.write_here(command.clone()).await {
                Ok((response, _)) => Ok(response),
                // Leadership moved while the entry was proposed: forward once.
                Err(WriteError::NotLeader { name, rpc_addr }) => {
                    self.forward(&ServerNode { name, rpc_addr }, command).await
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Proposes on this server or not at all: the leader's own decisions (claims, catch-up
    /// skips, moves) must never reach a successor that plans them itself, and a write a
    /// follower forwarded is not forwarded again.
    pub async fn write_here(&self, command: Command) -> Result<Committed, WriteError> {
        let pending = self.pending.load(Ordering::Acquire);
        if let Admission::Shed { retry_after_s } =
            admission::admit(&command, pending, self.capacity.load(Ordering::Acquire))
        {
            crate::telemetry::metrics::write_shed();
            return Err(WriteError::Overloaded {
                pending,
                retry_after_s,
            });
        }
        let weight = admission::weight(&command);
        self.pending.fetch_add(weight, Ordering::AcqRel);
        let _waiting = Waiting(self.pending.clone(), weight);
        let (reply, answer) = oneshot::channel();
        let lane = if admission::relieves(&command) {
            &self.urgent
        } else {
            &self.writes
        };
        lane.send(PendingWrite { command, reply })
            .map_err(|_| WriteError::Fatal("the node is shutting down".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::Fatal("the node is shutting down".into())))
    }

    /// Commands waiting for the log on this server.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Sets how many commands may wait before client writes are refused (tests shrink it to
    /// overload a node on demand).
    pub fn set_write_queue(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Release);
    }

    async fn forward(&self, leader: &ServerNode, command: Command) -> Result<Response, WriteError> {
        let (response, index) = self
            .rpc
            .write(&leader.name, &leader.rpc_addr, &command)
            .await?;
        let caught_up = self
            .raft
            .wait(Some(READ_YOUR_WRITE_WAIT))
            .applied_index_at_least(Some(index), "forwarded write applied")
            .await;
        if caught_up.is_err() {
            tracing::warn!(index, leader = %leader.name, "this server lags the leader; a read right after this write may not see it");
        }
        Ok(response)
    }
}

/// A proposal's share of the pending count, given back when it is answered or abandoned.
struct Waiting(Arc<AtomicUsize>, usize);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// The group-commit loop: takes the first queued proposal, packs every other one already
/// waiting into the same log entry (what takes load off first, from `urgent`), and keeps at
/// most [`MAX_IN_FLIGHT`] entries in flight.
async fn write_loop(
    raft: Raft,
    mut urgent: mpsc::UnboundedReceiver<PendingWrite>,
    mut pending: mpsc::UnboundedReceiver<PendingWrite>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let first = tokio::select! {
            biased;
            Some(w) = urgent.recv() => w,
            Some(w) = pending.recv() => w,
            else => return,
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        for lane in [&mut urgent, &mut pending] {
            while batch.len() < MAX_BATCH {
                match lane.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if batch.len() == 1 {
                let w = batch.pop().expect("one write");
                let _ = w.reply.send(propose(&raft, w.command).await);
                return;
            }
            propose_batch(&raft, batch).await;
        });
    }
}

/// Proposes several pending writes as one entry and answers each its own response. A
/// proposal that is itself a batch (the scheduler's same-instant claims) contributes its
/// commands and gets its slice of the responses back.
async fn propose_batch(raft: &Raft, batch: Vec<PendingWrite>) {
    let mut commands = Vec::new();
    let mut shapes = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for w in batch {
        match w.command {
            Command::Batch { commands: inner } => {
                shapes.push(Some(inner.len()));
                commands.extend(inner);
            }
            command => {
                shapes.push(None);
                commands.push(command);
            }
        }
        replies.push(w.reply);
    }
    let total = commands.len();
    match propose(raft, Command::Batch { commands }).await {
        Ok((Response::Batch { responses }, index)) if responses.len() == total => {
            let mut responses = responses.into_iter();
            for (reply, shape) in replies.into_iter().zip(shapes) {
                let answer = match shape {
                    None => responses.next().expect("counted above"),
                    Some(n) => Response::Batch {
                        responses: responses.by_ref().take(n).collect(),
                    },
                };
                let _ = reply.send(Ok((answer, index)));
            }
        }
        Ok((other, _)) => {
            let e = WriteError::Fatal(format!("unexpected batch result {other:?}"));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

async fn propose(raft: &Raft, command: Command) -> Result<Committed, WriteError> {
    let proposed = clock::monotonic();
    let written = raft.client_write(command).await;
    crate::telemetry::metrics::committed(clock::since(proposed));
    match written {
        Ok(r) => Ok((r.data, r.log_id.index)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_node {
            Some(n) => Err(WriteError::NotLeader {
                name: n.name,
                rpc_addr: n.rpc_addr,
            }),
            None => Err(WriteError::NoLeader),
        },
        Err(RaftError::APIError(e)) => Err(WriteError::Fatal(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(WriteError::Fatal(e.to_string())),
    }
}
