//! Who leads: this server or another, the term that fences run orders, a watch the leader's
//! scheduler follows, and the graceful hand-over of a leader that stops.

use std::time::Duration;

use anyhow::Context;
use openraft::RaftMetrics;
use tokio::sync::watch;

use super::{NodeId, Raft, ServerNode};
use crate::clock;
use crate::rpc::RpcClient;

/// Leadership as this server sees it (clones share it).
#[derive(Clone)]
pub struct Leadership {
    raft: Raft,
    id: NodeId,
    rpc: RpcClient,
    /// Times a stopping leader asked this server to take over.
    asked_to_elect: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The leader named by the Raft configuration, if one is known.
pub(super) fn current_leader(raft: &Raft) -> Option<ServerNode> {
    let metrics = raft.metrics().borrow().clone();
    let leader = metrics.current_leader?;
    metrics
        .membership_config
        .nodes()
        .find(|(id, _)| **id == leader)
        .map(|(_, n)| n.clone())
}

impl Leadership {
    pub(super) fn new(raft: Raft, id: NodeId, rpc: RpcClient) -> Leadership {
        Leadership {
            raft,
            id,
            rpc,
            asked_to_elect: Default::default(),
        }
    }

    /// This server's Raft id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn is_leader(&self) -> bool {
        self.leader_id() == Some(self.id)
    }

    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn leader(&self) -> Option<ServerNode> {
        current_leader(&self.raft)
    }

    /// The last log index the newest snapshot covers, and the last index purged from the
    /// log behind it (tests check that a snapshot really replaced entries).
    pub fn snapshot_and_purged(&self) -> (Option<u64>, Option<u64>) {
        let m = self.raft.metrics().borrow().clone();
        (m.snapshot.map(|l| l.index), m.purged.map(|l| l.index))
    }

    /// The current term: the fencing token of run orders (a node refuses older ones).
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Waits until this server leads.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<()> {
        let id = self.id;
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader == Some(id), "leader")
            .await
            .context("no leader elected in time")?;
        Ok(())
    }

    /// Follows leadership changes (the leader's scheduler, the gauges).
    pub fn watch(&self) -> LeaderWatch {
        LeaderWatch {
            metrics: self.raft.metrics(),
            id: self.id,
        }
    }

    /// Waits until this server's state machine has applied everything a previous leader
    /// committed; `false` if it is not (or no longer) the leader.
    pub async fn ensure_linearizable(&self) -> bool {
        self.raft.ensure_linearizable().await.is_ok()
    }

    /// Stands for election now (a stopping leader asked this server to take over).
    pub(super) async fn elect(&self) -> Result<(), String> {
        self.asked_to_elect
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.raft.trigger().elect().await.map_err(|e| e.to_string())
    }

    /// How often a stopping leader asked this server to take over (for tests and debugging:
    /// it tells a hand-over from an election after a timeout).
    pub fn times_asked_to_elect(&self) -> u64 {
        self.asked_to_elect
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Called by a leader that is stopping gracefully: waits (briefly) until a voter has
    /// every log entry, asks it to stand for election, and waits until another server leads,
    /// so scheduling resumes without anyone waiting out an election timeout.
    pub async fn hand_over(&self) {
        let alone = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .all(|id| id == self.id);
        if !self.is_leader() || alone {
            return;
        }
        let Some(successor) = self.caught_up_voter(Duration::from_secs(3)).await else {
            tracing::warn!(
                "no server caught up in time to take over; the others will elect a leader after their election timeout"
            );
            return;
        };
        if let Err(e) = self.rpc.elect(&successor.rpc_addr).await {
            tracing::warn!(successor = %successor.name, error = %e, "could not ask the successor to take over; the others will elect a leader after their election timeout");
            return;
        }
        let id = self.id;
        let another =
            |m: &RaftMetrics<NodeId, ServerNode>| m.current_leader.is_some_and(|l| l != id);
        let handed = self
            .raft
            .wait(Some(Duration::from_secs(1)))
            .metrics(another, "another leader")
            .await;
        if handed.is_err() {
            // More than three voters: followers refuse votes while our heartbeats keep
            // their leader lease alive. Stop sending them; the successor retries soon.
            self.raft.runtime_config().heartbeat(false);
            let _ = self
                .raft
                .wait(Some(Duration::from_secs(3)))
                .metrics(another, "another leader")
                .await;
        }
        let leader = self.leader_id();
        tracing::info!(successor = %successor.name, new_leader = ?leader, "handed leadership over before stopping");
    }

    /// A voter other than this server whose log matches the leader's, waiting up to `wait`.
    async fn caught_up_voter(&self, wait: Duration) -> Option<ServerNode> {
        let deadline = clock::monotonic() + wait;
        loop {
            let m = self.raft.metrics().borrow().clone();
            let last = m.last_log_index;
            let caught_up = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|id| *id != self.id)
                .find(|id| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id))
                        .and_then(|matched| matched.as_ref())
                        .map(|l| l.index)
                        == last
                });
            if let Some(id) = caught_up {
                return m
                    .membership_config
                    .nodes()
                    .find(|(n, _)| **n == id)
                    .map(|(_, s)| s.clone());
            }
            if clock::monotonic() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Leadership changes, as the leader's scheduler follows them.
pub struct LeaderWatch {
    metrics: watch::Receiver<RaftMetrics<NodeId, ServerNode>>,
    id: NodeId,
}

/// Raft stopped: no leadership will come.
#[derive(Debug)]
pub struct Stopped;

impl LeaderWatch {
    /// Waits until this server leads. Answers the name of the last other server seen leading
    /// before it (when this node takes over, that one is dead, cut off or leaving, and gossip
    /// may take seconds to say so).
    pub async fn gained(&mut self) -> Result<Option<String>, Stopped> {
        let mut previous = None;
        let id = self.id;
        self.metrics
            .wait_for(|m| {
                if let Some(other) = m.current_leader.filter(|l| *l != id) {
                    previous = m
                        .membership_config
                        .nodes()
                        .find(|(n, _)| **n == other)
                        .map(|(_, n)| n.name.clone());
                }
                m.current_leader == Some(id)
            })
            .await
            .map_err(|_| Stopped)?;
        Ok(previous)
    }

    /// Resolves once this server no longer leads (or Raft stopped).
    pub async fn lost(&mut self) {
        let id = self.id;
        let _ = self
            .metrics
            .wait_for(|m| m.current_leader != Some(id))
            .await;
    }
}
