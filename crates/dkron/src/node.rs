//! One dkron node: opens storage, starts Raft, the HTTP API, the RPC listener and the
//! leader-only scheduler, and tears them down again. Everything else receives a [`Node`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State as AxState;
use axum::routing::post;
use axum::{Json, Router};
use dkron_core::command::{Command, Response};
use dkron_core::job::Execution;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::SharedClock;
use crate::config::AgentConfig;
use crate::orders::{HOLD, LEASE, OrderAnswer, OrderExecutor, RunOrder, RunResult};
use crate::outputs::OutputStore;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::{StateHandle, StateMachine};
use crate::raft::{NodeId, Raft, ServerNode, TypeConfig, node_id_for};

/// Why a replicated write did not happen. The API maps these to status codes.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteError {
    #[error("no leader is elected yet; retry in a few seconds")]
    NoLeader,
    #[error("this server is not the leader (leader: {0})")]
    NotLeader(ServerNode),
    #[error("the leader {leader} could not be reached: {reason}")]
    LeaderUnreachable { leader: String, reason: String },
    #[error("the consensus layer stopped: {0}")]
    Fatal(String),
}

/// A node jobs may be placed on.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMember {
    pub name: String,
    pub alive: bool,
    pub tags: BTreeMap<String, String>,
}

/// A committed write: its result and the log index that carried it.
type Committed = (Response, u64);

/// How long a graceful shutdown waits for runs in progress on this node (Docker sends
/// SIGKILL 10 s after SIGTERM).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long placement skips a node that refused a run order's connection.
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// How long a follower waits for its own state machine to catch up with a write it forwarded,
/// so a client reads its own write from the server it wrote to.
const READ_YOUR_WRITE_WAIT: Duration = Duration::from_secs(5);

pub struct Node {
    pub config: AgentConfig,
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateHandle,
    pub outputs: OutputStore,
    pub clock: SharedClock,
    pub http_addr: SocketAddr,
    pub rpc_addr: SocketAddr,
    /// Shared HTTP client (http executor aside, which keeps its own).
    pub client: reqwest::Client,
    /// Email, webhook and Cronitor notifications (sent while this node leads); replaced when
    /// SIGHUP reloads the configuration.
    notifier: std::sync::RwLock<Arc<crate::notify::Notifier>>,
    shutdown: watch::Sender<bool>,
    /// Proposals waiting for the group-commit loop ([`write_loop`]).
    writes: mpsc::UnboundedSender<PendingWrite>,
    /// Runs executing in this process, so shutdown can stop them and a new leader can tell
    /// its own live runs from runs orphaned by a restart.
    runs: Mutex<JoinSet<()>>,
    in_flight: Mutex<HashSet<(String, String)>>,
    /// Runs orders on this node, refusing those of deposed leaders.
    orders: Arc<OrderExecutor>,
    /// Gossip membership: who is in the cluster, with which tags.
    pub gossip: dkron_membership::Membership,
    /// Nodes that refused a run order's connection, and when.
    unreachable: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Jobs whose next claim failed or was refused: the scheduler searches their next
    /// occurrence from the ledger again.
    resync: Mutex<BTreeSet<String>>,
    resync_wake: tokio::sync::Notify,
    /// Why the node stopped on its own (e.g. retry-join gave up), for the exit status.
    failure: Mutex<Option<String>>,
}

/// A fresh run order that never reached its node (the connection failed): the run certainly
/// did not start there. Holds the failure to record if the run cannot go elsewhere.
#[derive(Debug)]
pub struct Undelivered(pub String);

struct PendingWrite {
    command: Command,
    reply: oneshot::Sender<Result<Committed, WriteError>>,
}

/// Most commands packed into one log entry.
const MAX_BATCH: usize = 512;
/// Log entries proposed at once; more queue up and form the next batch.
const MAX_IN_FLIGHT: usize = 2;

impl Node {
    /// Proposes a command and waits until it is committed and applied here. On a follower the
    /// command is forwarded to the leader's RPC port, then this server waits until it has
    /// applied the entry too, so the caller reads its own write. Concurrent callers on the
    /// leader are packed into one log entry (group commit).
    #[tracing::instrument(name = "raft.write", skip_all)]
    pub async fn write(&self, command: Command) -> Result<Response, WriteError> {
        let leader = self.leader();
        let forward_to = leader.filter(|l| l.name != self.name());
        let Some(leader) = forward_to else {
            return match self.write_local(command.clone()).await {
                Ok((response, _)) => Ok(response),
                // Leadership moved while the entry was proposed: forward once.
                Err(WriteError::NotLeader(leader)) => self.forward(&leader, command).await,
                Err(e) => Err(e),
            };
        };
        self.forward(&leader, command).await
    }

    /// Proposes on this node only (the RPC endpoint for forwarded writes uses this).
    pub async fn write_local(&self, command: Command) -> Result<Committed, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(PendingWrite { command, reply })
            .map_err(|_| WriteError::Fatal("the node is shutting down".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::Fatal("the node is shutting down".into())))
    }

    async fn forward(&self, leader: &ServerNode, command: Command) -> Result<Response, WriteError> {
        let unreachable = |reason: String| WriteError::LeaderUnreachable {
            leader: leader.name.clone(),
            reason,
        };
        let answer: Result<Committed, WriteError> = self
            .client
            .post(format!("http://{}/rpc/write", leader.rpc_addr))
            .timeout(Duration::from_secs(30))
            .json(&command)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .json()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (response, index) = answer?;
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

    /// Executes a run order on this node (see [`OrderExecutor`]).
    pub async fn execute_order(
        &self,
        order: RunOrder,
    ) -> Result<RunResult, crate::orders::Refusal> {
        self.orders.execute(order).await
    }

    /// Sends a run order to the node at `rpc_addr` and waits for its result, asking again
    /// each time the node answers that the run still goes (orders are idempotent). A fresh
    /// order that could not be delivered is [`Undelivered`]: the run did not start there and
    /// may go elsewhere (Dkron silently dropped such runs); a node that stops answering for
    /// [`LEASE`] after taking the order loses the run's lease: failed, its outcome unknown.
    pub async fn execute_remote(
        &self,
        node_name: &str,
        rpc_addr: &str,
        mut order: RunOrder,
    ) -> Result<RunResult, Undelivered> {
        let failed = |reason: String| RunResult {
            success: false,
            output: format!(
                "dkron: could not run the job on node {node_name} ({rpc_addr}): {reason}\n"
            ),
        };
        let url = format!("http://{rpc_addr}/rpc/execute");
        let mut last_contact = tokio::time::Instant::now();
        let mut first = true;
        loop {
            let sent = self
                .client
                .post(&url)
                .json(&order)
                .timeout(HOLD + Duration::from_secs(5))
                .send()
                .await;
            let problem = match sent {
                Ok(response) => match response.json::<OrderAnswer>().await {
                    Ok(OrderAnswer::Done { result }) => return Ok(result),
                    Ok(OrderAnswer::Refused { reason }) => return Ok(failed(reason)),
                    // A fresh order the node declined is free to go elsewhere; a resumed one
                    // is asked about again (the node's next process knows from its journal).
                    Ok(OrderAnswer::NotStarted { reason }) if first && !order.resumed => {
                        self.mark_unreachable(node_name);
                        return Err(Undelivered(failed(reason).output));
                    }
                    Ok(OrderAnswer::NotStarted { reason }) => Some(reason),
                    Ok(OrderAnswer::Running) => {
                        last_contact = tokio::time::Instant::now();
                        None
                    }
                    Err(e) => Some(e.to_string()),
                },
                // A fresh order that never got through: certainly not started. (A resumed
                // one may have been delivered by the previous leader: keep asking.)
                Err(e) if first && !order.resumed && e.is_connect() => {
                    self.mark_unreachable(node_name);
                    return Err(Undelivered(failed(e.to_string()).output));
                }
                Err(e) => Some(e.to_string()),
            };
            // From now on the node may know the order: ask about it, never start it afresh.
            first = false;
            order.resumed = true;
            if let Some(problem) = problem {
                if last_contact.elapsed() > LEASE {
                    return Ok(failed(format!(
                        "the node stopped answering for {} s while running it ({problem}); the run's outcome is unknown",
                        LEASE.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Stops `execution` wherever it runs; its result becomes a failure saying `reason`.
    pub async fn stop_run(&self, execution: &Execution, reason: String) {
        let stop = crate::orders::StopOrder {
            job_name: execution.job_name.clone(),
            execution_id: execution.id.clone(),
            reason,
        };
        if execution.node_name == self.name() {
            self.orders
                .stop(&stop.job_name, &stop.execution_id, stop.reason);
            return;
        }
        let Some(addr) = self.member_rpc_addr(&execution.node_name) else {
            return;
        };
        let sent = self
            .client
            .post(format!("http://{addr}/rpc/stop"))
            .json(&stop)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!(job = %stop.job_name, execution = %stop.execution_id, node = %execution.node_name, error = %e, "could not stop a replaced run; it ends on its own or when its lease runs out");
        }
    }

    /// What a run in progress printed so far, asked of the node executing it (`None` if that
    /// node cannot be reached or no longer knows the run).
    pub async fn live_output(&self, execution: &Execution) -> Option<String> {
        if execution.node_name == self.name() {
            return self.orders.output(&execution.job_name, &execution.id);
        }
        let addr = self.member_rpc_addr(&execution.node_name)?;
        let response = self
            .client
            .post(format!("http://{addr}/rpc/output"))
            .json(&(&execution.job_name, &execution.id))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        response.json::<Option<String>>().await.ok().flatten()
    }

    /// Starts a manual run of `job` on the leader (forwarded there from a follower).
    pub async fn run_now(self: &Arc<Self>, job: &str) -> Result<(), WriteError> {
        match self.leader() {
            Some(l) if l.name == self.name() => {
                crate::runner::run_job(
                    self.clone(),
                    job.to_string(),
                    crate::runner::Trigger::Manual,
                );
                Ok(())
            }
            Some(l) => {
                let answer: Result<(), WriteError> = self
                    .client
                    .post(format!("http://{}/rpc/run", l.rpc_addr))
                    .timeout(Duration::from_secs(10))
                    .json(&job)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| WriteError::LeaderUnreachable {
                        leader: l.name.clone(),
                        reason: e.to_string(),
                    })?
                    .json()
                    .await
                    .map_err(|e| WriteError::LeaderUnreachable {
                        leader: l.name.clone(),
                        reason: e.to_string(),
                    })?;
                answer
            }
            None => Err(WriteError::NoLeader),
        }
    }

    /// Adds a server to the Raft group (on the leader): first as a learner that catches up,
    /// then as a voter. Membership (gossip) calls this for servers it discovers.
    /// Called by a leader that is stopping gracefully: waits (briefly) until a voter has
    /// every log entry, asks it to stand for election, and waits until another server leads,
    /// so scheduling resumes without anyone waiting out an election timeout.
    pub async fn hand_over_leadership(&self) {
        if !self.is_leader() {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let successor = loop {
            let m = self.raft.metrics().borrow().clone();
            let last = m.last_log_index;
            let voters: Vec<NodeId> = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|id| *id != self.id)
                .collect();
            if voters.is_empty() {
                return;
            }
            let caught_up = voters.iter().copied().find(|id| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .and_then(|matched| matched.as_ref())
                    .map(|l| l.index)
                    == last
            });
            if let Some(id) = caught_up {
                break m
                    .membership_config
                    .nodes()
                    .find(|(n, _)| **n == id)
                    .map(|(_, s)| s.clone());
            }
            if tokio::time::Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some(successor) = successor else {
            tracing::warn!(
                "no server caught up in time to take over; the others will elect a leader after their election timeout"
            );
            return;
        };
        let asked = self
            .client
            .post(format!("http://{}/rpc/raft/elect", successor.rpc_addr))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Err(e) = asked {
            tracing::warn!(successor = %successor.name, error = %e, "could not ask the successor to take over; the others will elect a leader after their election timeout");
            return;
        }
        let id = self.id;
        let handed = self
            .raft
            .wait(Some(Duration::from_secs(1)))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != id),
                "another leader",
            )
            .await;
        if handed.is_err() {
            // More than three voters: followers refuse votes while our heartbeats keep
            // their leader lease alive. Stop sending them; the successor retries soon.
            self.raft.runtime_config().heartbeat(false);
            let _ = self
                .raft
                .wait(Some(Duration::from_secs(3)))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != id),
                    "another leader",
                )
                .await;
        }
        let leader = self.raft.metrics().borrow().current_leader;
        tracing::info!(successor = %successor.name, new_leader = ?leader, "handed leadership over before stopping");
    }

    pub async fn add_server(&self, name: &str, rpc_addr: &str) -> anyhow::Result<()> {
        let id = node_id_for(name);
        let node = ServerNode {
            name: name.to_string(),
            rpc_addr: rpc_addr.to_string(),
        };
        self.raft
            .add_learner(id, node, true)
            .await
            .with_context(|| format!("adding {name} as a learner"))?;
        let mut voters = self.voter_ids();
        voters.insert(id);
        self.raft
            .change_membership(voters, false)
            .await
            .with_context(|| format!("making {name} a voter"))?;
        tracing::info!(server = %name, rpc = %rpc_addr, "server added to the Raft group");
        Ok(())
    }

    /// Runs a job execution task that shutdown can stop.
    pub fn spawn_run(&self, run: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut runs = self.runs.lock().expect("runs lock");
        while runs.try_join_next().is_some() {}
        runs.spawn(run);
    }

    /// Marks an execution as executing here (`true`) or done (`false`). Keyed by job and
    /// id: ids (`<start ns>-<node>`) repeat across jobs started at the same instant.
    pub fn track_execution(&self, execution: &Execution, running: bool) {
        let key = (execution.job_name.clone(), execution.id.clone());
        let mut set = self.in_flight.lock().expect("in-flight lock");
        if running {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    pub fn is_executing_here(&self, execution: &Execution) -> bool {
        let key = (execution.job_name.clone(), execution.id.clone());
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .contains(&key)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    pub fn leader(&self) -> Option<ServerNode> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, n)| n.clone())
    }

    /// This node's tags (Dkron's built-in ones plus the user's).
    pub fn tags(&self) -> BTreeMap<String, String> {
        crate::cluster::node_tags(&self.config, self.rpc_addr.port())
    }

    /// Asks the scheduler to search `job`'s next occurrence from the fire ledger again (its
    /// last claim was not written or was refused, so an occurrence may still be owed).
    pub fn resync_schedule(&self, job: &str) {
        self.resync
            .lock()
            .expect("resync lock")
            .insert(job.to_string());
        self.resync_wake.notify_one();
    }

    pub fn take_resync(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.resync.lock().expect("resync lock"))
    }

    pub async fn resync_requested(&self) {
        self.resync_wake.notified().await
    }

    /// Stops the node because it cannot go on; `message` becomes the process's error.
    pub fn fail(&self, message: String) {
        tracing::error!(reason = %message, "stopping the node");
        *self.failure.lock().expect("failure lock") = Some(message);
        self.request_shutdown();
    }

    pub fn name(&self) -> &str {
        &self.config.node_name
    }

    /// The members jobs may run on, with their tags, from gossip.
    pub fn members(&self) -> Vec<ClusterMember> {
        self.gossip
            .members()
            .into_iter()
            .map(|m| ClusterMember {
                alive: matches!(
                    m.status,
                    dkron_membership::MemberStatus::Alive | dkron_membership::MemberStatus::Suspect
                ) && !self.recently_unreachable(&m.name),
                name: m.name,
                tags: m.tags,
            })
            .collect()
    }

    /// Placement skips a node that refused a connection for [`UNREACHABLE_FOR`]: gossip takes
    /// seconds to declare a dead node failed, and every run sent to it meanwhile is lost.
    fn mark_unreachable(&self, name: &str) {
        tracing::warn!(node = %name, "node unreachable: placement skips it for a while");
        self.skip_in_placement(name);
    }

    /// Placement skips `name` for [`UNREACHABLE_FOR`] (a new leader does so for the previous
    /// one, which is dead or cut off when it loses leadership without handing it over).
    pub fn skip_in_placement(&self, name: &str) {
        self.unreachable
            .lock()
            .expect("unreachable lock")
            .insert(name.to_string(), std::time::Instant::now());
    }

    fn recently_unreachable(&self, name: &str) -> bool {
        let mut map = self.unreachable.lock().expect("unreachable lock");
        map.retain(|_, since| since.elapsed() < UNREACHABLE_FOR);
        map.contains_key(name)
    }

    /// Where a member's RPC port is (its `rpc_addr` tag).
    pub fn member_rpc_addr(&self, name: &str) -> Option<String> {
        self.members()
            .into_iter()
            .find(|m| m.name == name)
            .and_then(|m| m.tags.get("rpc_addr").cloned())
    }

    /// The notification settings in force.
    pub fn notifier(&self) -> Arc<crate::notify::Notifier> {
        self.notifier.read().expect("notifier lock").clone()
    }

    /// SIGHUP, as in Dkron: takes the tags (reserved ones kept, `dc` and `region` re-set) and
    /// the notification settings of a re-read configuration. Other settings need a restart.
    pub async fn reload(&self, config: &AgentConfig) -> anyhow::Result<()> {
        crate::cluster::reload_tags(&self.gossip, config).await?;
        let notifier = crate::notify::Notifier::new(config, self.client.clone());
        *self.notifier.write().expect("notifier lock") = Arc::new(notifier);
        Ok(())
    }

    /// Asks the node to stop (used by `POST /v1/leave` and signals).
    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// A running node and its tasks.
pub struct NodeHandle {
    pub node: Arc<Node>,
    /// Background loops, aborted at shutdown.
    tasks: Vec<JoinHandle<()>>,
    /// The HTTP and RPC servers, which stop gracefully on the shutdown signal.
    servers: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    pub fn http_addr(&self) -> SocketAddr {
        self.node.http_addr
    }

    /// Waits until this node is the leader and its state machine is current.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<()> {
        let id = self.node.id;
        self.node
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader == Some(id), "leader")
            .await
            .context("no leader elected in time")?;
        Ok(())
    }

    /// Stops the node: scheduler, runs in progress, servers, then Raft (which flushes its
    /// storage). When this returns, nothing of the node holds the data dir any more.
    /// Graceful: a leader first hands leadership to an up-to-date server, and the others see
    /// this node as left (the leader then removes it from Raft).
    pub async fn shutdown(self) {
        self.stop(true).await;
    }

    /// Stops the node as if it had crashed: no hand-over, no goodbye to the cluster, which
    /// sees it as failed. For tests and benchmarks of failure handling.
    pub async fn crash(self) {
        self.stop(false).await;
    }

    async fn stop(self, graceful: bool) {
        if graceful {
            // Before the RPC server stops: the successor needs this node's vote.
            self.node.hand_over_leadership().await;
        }
        // No new claims from here.
        for task in &self.tasks {
            task.abort();
        }
        if graceful {
            self.node.skip_in_placement(self.node.name());
            if !self.node.is_leader() {
                // The successor resumed every run and collects each result over RPC; this
                // node collecting them too would report each twice.
                self.node.runs.lock().expect("runs lock").abort_all();
            }
            // Runs in progress here may finish (their leader collects them over RPC); new
            // orders are declined and go to other nodes.
            self.node.orders.drain(SHUTDOWN_GRACE).await;
        }
        self.node.request_shutdown();
        for task in self.tasks {
            let _ = task.await;
        }
        if graceful {
            self.node.gossip.leave().await;
        } else {
            self.node.gossip.shutdown().await;
        }
        let mut runs = std::mem::take(&mut *self.node.runs.lock().expect("runs lock"));
        runs.abort_all();
        self.node.orders.abort_all();
        while runs.join_next().await.is_some() {}
        self.node.orders.close().await;
        for server in self.servers {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown reported an error");
        }
        if let Err(e) = self.node.outputs.close().await {
            tracing::warn!(error = %format!("{e:#}"), "could not flush execution outputs at shutdown");
        }
    }
}

fn raft_config(multiplier: u32) -> anyhow::Result<openraft::Config> {
    let m = u64::from(multiplier.max(1));
    let config = openraft::Config {
        cluster_name: "dkron".into(),
        // A follower grants no vote while its leader lease (the election timeout) runs, so a
        // dead leader costs up to two timeouts before a new one leads: keep them short enough
        // for a ~2 s failover on a LAN; --raft-multiplier scales them for slower networks.
        heartbeat_interval: 100 * m,
        election_timeout_min: 400 * m,
        election_timeout_max: 800 * m,
        install_snapshot_timeout: 10_000,
        // A snapshot costs time proportional to the whole state; entries are batches, so
        // 20,000 of them cover minutes of heavy scheduling.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    };
    Ok(config.validate()?)
}

/// Starts a node from a resolved configuration.
pub async fn start(config: AgentConfig, clock: SharedClock) -> anyhow::Result<NodeHandle> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::metrics::install(&config)?;
    dkron_executors::install_crypto_provider();
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create data dir {}: check the --data-dir path and its permissions",
            config.data_dir.display()
        )
    })?;
    let log_store = LogStore::open(&config.data_dir.join("raft.redb"))
        .context("opening the Raft log (raft.redb)")?;
    let state_machine = StateMachine::open(&config.data_dir.join("state.redb"))
        .context("opening the state store (state.redb)")?;
    let outputs = OutputStore::open(&config.data_dir.join("outputs.redb"))
        .context("opening the output store (outputs.redb)")?;
    let journal = crate::journal::StartJournal::open_in(&config.data_dir, clock.clone())?;
    let state = state_machine.handle();

    let http_bind = config.http_bind()?;
    let http_listener = TcpListener::bind(http_bind)
        .await
        .with_context(|| format!("cannot listen on http-addr {http_bind}: is the port in use?"))?;
    let rpc_bind = config.rpc_bind()?;
    let rpc_listener = TcpListener::bind(rpc_bind)
        .await
        .with_context(|| format!("cannot listen on rpc port {rpc_bind}: is the port in use?"))?;
    let http_addr = http_listener.local_addr()?;
    let rpc_addr = rpc_listener.local_addr()?;

    let gossip = crate::cluster::start_gossip(&config, rpc_addr.port()).await?;
    crate::cluster::join_once(&gossip, &config.join).await;

    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .context("building the HTTP client")?;
    let id = node_id_for(&config.node_name);
    let raft = Raft::new(
        id,
        Arc::new(raft_config(config.raft_multiplier)?),
        Network::new(client.clone()),
        log_store,
        state_machine,
    )
    .await
    .context("starting Raft")?;

    let self_node = ServerNode {
        name: config.node_name.clone(),
        rpc_addr: format!("{}:{}", config.advertise_ip(), rpc_addr.port()),
    };
    if config.bootstrap_expect == 1 && !raft.is_initialized().await? {
        let members = BTreeMap::from([(id, self_node.clone())]);
        raft.initialize(members)
            .await
            .context("bootstrapping a one-server cluster")?;
        tracing::info!(node = %config.node_name, "bootstrapped a new single-server cluster");
    }

    let notifier = crate::notify::Notifier::new(&config, client.clone());
    let (shutdown, _) = watch::channel(false);
    let (writes, pending) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(raft.clone(), pending));
    let node = Arc::new(Node {
        config,
        id,
        raft,
        state,
        outputs,
        orders: Arc::new(OrderExecutor::new(clock.clone()).with_journal(journal)),
        clock,
        http_addr,
        rpc_addr,
        notifier: std::sync::RwLock::new(Arc::new(notifier)),
        client,
        shutdown,
        writes,
        runs: Mutex::new(JoinSet::new()),
        in_flight: Mutex::new(HashSet::new()),
        gossip,
        unreachable: Mutex::new(std::collections::HashMap::new()),
        failure: Mutex::new(None),
        resync: Mutex::new(BTreeSet::new()),
        resync_wake: tokio::sync::Notify::new(),
    });

    let mut tasks = Vec::new();
    let mut api = crate::api::router(node.clone());
    if node.config.ui {
        api = api.merge(crate::ui::router());
    }
    let servers = vec![
        tokio::spawn(serve(http_listener, api, node.shutdown_requested(), "http")),
        tokio::spawn(serve(
            rpc_listener,
            rpc_router(node.clone()),
            node.shutdown_requested(),
            "rpc",
        )),
    ];
    tasks.push(tokio::spawn(crate::scheduler::run(node.clone())));
    tasks.push(tokio::spawn(gauges(node.clone())));
    tasks.push(tokio::spawn(crate::cluster::reconcile(node.clone())));
    if node.config.bootstrap_expect > 1 {
        tasks.push(tokio::spawn(crate::cluster::bootstrap_when_expected(
            node.clone(),
        )));
    }
    if !node.config.retry_join.is_empty() {
        let joiner = node.clone();
        tasks.push(tokio::spawn(async move {
            let interval = dkron_core::godur::parse_go_duration(&joiner.config.retry_interval)
                .unwrap_or(Duration::from_secs(30));
            if let Err(e) = crate::cluster::retry_join(
                &joiner.gossip,
                &joiner.config.retry_join,
                interval,
                joiner.config.retry_max,
            )
            .await
            {
                joiner.fail(format!("{e:#}"));
            }
        }));
    }
    tracing::info!(
        node = %node.name(),
        http = %http_addr,
        rpc = %rpc_addr,
        data_dir = %node.config.data_dir.display(),
        "dkron node started"
    );
    Ok(NodeHandle {
        node,
        tasks,
        servers,
    })
}

/// Keeps the gauges current (every 5 s) and counts leader changes (polled each second: Raft's
/// metrics channel fires on every heartbeat and write, too often to scan the jobs on); also
/// runs the Prometheus recorder's upkeep, which keeps histograms bounded.
async fn gauges(node: Arc<Node>) {
    if !crate::metrics::wants_metrics(&node.config) {
        return;
    }
    // The first leader this node sees counts as a change too.
    let mut leader = None;
    let mut shutdown = node.shutdown_requested();
    for tick in 0u64.. {
        let now_leader = node.raft.metrics().borrow().current_leader;
        if now_leader != leader {
            if now_leader.is_some() {
                crate::metrics::leader_changed();
            }
            leader = now_leader;
        }
        if tick % 5 == 0 {
            crate::metrics::set_gauges(&node.metrics_snapshot());
            if let Some(handle) = crate::metrics::prometheus() {
                handle.run_upkeep();
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|v| *v) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
) {
    let stop = async move {
        let _ = shutdown.wait_for(|v| *v).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, server = what, "server stopped; restart the node");
    }
}

/// The group-commit loop: takes the first queued proposal, packs every other one already
/// waiting into the same log entry, and keeps at most [`MAX_IN_FLIGHT`] entries in flight.
async fn write_loop(raft: Raft, mut pending: mpsc::UnboundedReceiver<PendingWrite>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
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
            // Flatten: a proposal that is itself a batch (the scheduler's same-instant claims)
            // contributes its commands and gets its slice of the responses back.
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
            match propose(&raft, Command::Batch { commands }).await {
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
        });
    }
}

async fn propose(raft: &Raft, command: Command) -> Result<Committed, WriteError> {
    let proposed = std::time::Instant::now();
    let written = raft.client_write(command).await;
    crate::metrics::committed(proposed.elapsed());
    match written {
        Ok(r) => Ok((r.data, r.log_id.index)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_node {
            Some(n) => Err(WriteError::NotLeader(n)),
            None => Err(WriteError::NoLeader),
        },
        Err(RaftError::APIError(e)) => Err(WriteError::Fatal(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(WriteError::Fatal(e.to_string())),
    }
}

/// Routes on the RPC port: Raft traffic between servers, and run orders.
fn rpc_router(node: Arc<Node>) -> Router {
    let orders = crate::orders::router(node.orders.clone());
    Router::new()
        .route("/raft/append", post(raft_append))
        .route("/raft/vote", post(raft_vote))
        .route("/raft/snapshot", post(raft_snapshot))
        .route("/rpc/write", post(rpc_write))
        .route("/rpc/run", post(rpc_run))
        .route("/rpc/raft-state", axum::routing::get(rpc_raft_state))
        .route("/rpc/raft/peers", axum::routing::get(rpc_raft_peers))
        .route("/rpc/raft/remove-peer", post(rpc_remove_peer))
        .route("/rpc/leave", post(rpc_leave))
        .route("/rpc/raft/elect", post(rpc_elect))
        // Raft batches and forwarded claim batches outgrow axum's 2 MB default: a catch-up
        // of thousands of occurrences is one entry. An entry the followers refused to accept
        // would never commit, and every write behind it would wait forever.
        .with_state(node)
        .merge(orders)
        .layer(axum::extract::DefaultBodyLimit::max(RPC_BODY_LIMIT))
}

/// Largest request the RPC port accepts (Raft append and snapshot chunks, forwarded writes).
const RPC_BODY_LIMIT: usize = 256 << 20;

/// A leader stepping down asks this server to stand for election now.
async fn rpc_elect(AxState(node): AxState<Arc<Node>>) -> Json<Result<(), String>> {
    Json(node.raft.trigger().elect().await.map_err(|e| e.to_string()))
}

/// A write forwarded by a follower: proposed here only, never forwarded again.
async fn rpc_write(
    AxState(node): AxState<Arc<Node>>,
    Json(command): Json<Command>,
) -> Json<Result<Committed, WriteError>> {
    Json(node.write_local(command).await)
}

/// Whether this server belongs to a Raft group yet (bootstrap-expect asks its peers).
async fn rpc_raft_state(AxState(node): AxState<Arc<Node>>) -> Json<serde_json::Value> {
    let initialized = node.raft.is_initialized().await.unwrap_or(true);
    Json(serde_json::json!({ "initialized": initialized }))
}

/// One server of the Raft configuration, for `dkron raft list-peers`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub node: String,
    pub id: String,
    pub address: String,
    pub state: String,
    pub voter: bool,
}

async fn rpc_raft_peers(AxState(node): AxState<Arc<Node>>) -> Json<Vec<Peer>> {
    Json(node.raft_peers())
}

impl Node {
    /// The servers of the Raft configuration as this server sees it (`dkron raft list-peers`,
    /// `GET /v1/raft/peers`).
    /// The voters of the Raft configuration as this server sees it.
    pub fn voter_ids(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// The values the metrics gauges show.
    pub fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let mut snapshot = crate::metrics::Snapshot::default();
        self.state.read(|s| {
            for entry in s.jobs.values() {
                let status = if entry.job.disabled {
                    "disabled"
                } else {
                    match entry.job.status.as_str() {
                        dkron_core::job::STATUS_SUCCESS => "success",
                        dkron_core::job::STATUS_FAILED => "failed",
                        dkron_core::job::STATUS_PARTIALLY_FAILED => "partially_failed",
                        _ => "untriggered",
                    }
                };
                *snapshot.jobs_by_status.entry(status).or_default() += 1;
                snapshot.running += entry.running.len() as u64;
            }
        });
        for status in [
            "success",
            "failed",
            "partially_failed",
            "untriggered",
            "disabled",
        ] {
            snapshot.jobs_by_status.entry(status).or_default();
        }
        for status in ["alive", "suspect", "failed", "left"] {
            snapshot.members_by_status.entry(status).or_default();
        }
        for m in self.gossip.members() {
            *snapshot
                .members_by_status
                .entry(m.status.as_str())
                .or_default() += 1;
        }
        snapshot.voters = self.voter_ids().len() as u64;
        snapshot.leader = self.is_leader();
        snapshot
    }

    pub fn raft_peers(&self) -> Vec<Peer> {
        raft_peers(self)
    }
}

fn raft_peers(node: &Node) -> Vec<Peer> {
    let metrics = node.raft.metrics().borrow().clone();
    let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
    metrics
        .membership_config
        .nodes()
        .map(|(id, n)| Peer {
            node: n.name.clone(),
            id: n.name.clone(),
            address: n.rpc_addr.clone(),
            state: if metrics.current_leader == Some(*id) {
                "leader".into()
            } else {
                "follower".into()
            },
            voter: voters.contains(id),
        })
        .collect()
}

/// Removes a server (by node name) from the Raft configuration; runs on the leader.
async fn rpc_remove_peer(
    AxState(node): AxState<Arc<Node>>,
    Json(name): Json<String>,
) -> Json<Result<(), String>> {
    let id = node_id_for(&name);
    if !node.is_leader() {
        return Json(match node.leader() {
            Some(l) => match node
                .client
                .post(format!("http://{}/rpc/raft/remove-peer", l.rpc_addr))
                .json(&name)
                .send()
                .await
            {
                Ok(r) => r
                    .json::<Result<(), String>>()
                    .await
                    .unwrap_or_else(|e| Err(e.to_string())),
                Err(e) => Err(format!("cannot reach the leader {}: {e}", l.name)),
            },
            None => Err("no leader is elected yet; retry in a few seconds".into()),
        });
    }
    let metrics = node.raft.metrics().borrow().clone();
    if !metrics.membership_config.nodes().any(|(i, _)| *i == id) {
        return Json(Err(format!(
            "id \"{name}\" was not found in the Raft configuration"
        )));
    }
    let voters: BTreeSet<NodeId> = metrics
        .membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != id)
        .collect();
    Json(
        node.raft
            .change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    )
}

/// `dkron leave`: leave the cluster gracefully and stop.
async fn rpc_leave(AxState(node): AxState<Arc<Node>>) -> Json<Result<(), String>> {
    node.request_shutdown();
    Json(Ok(()))
}

/// A run order from the leader.
/// A manual run forwarded by a follower.
async fn rpc_run(
    AxState(node): AxState<Arc<Node>>,
    Json(job): Json<String>,
) -> Json<Result<(), WriteError>> {
    if node.is_leader() {
        crate::runner::run_job(node.clone(), job, crate::runner::Trigger::Manual);
        Json(Ok(()))
    } else {
        Json(Err(WriteError::NoLeader))
    }
}

async fn raft_append(
    AxState(node): AxState<Arc<Node>>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(node.raft.append_entries(req).await).unwrap_or_default())
}

async fn raft_vote(
    AxState(node): AxState<Arc<Node>>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(node.raft.vote(req).await).unwrap_or_default())
}

async fn raft_snapshot(
    AxState(node): AxState<Arc<Node>>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(node.raft.install_snapshot(req).await).unwrap_or_default())
}

/// Runs a node until SIGINT/SIGTERM or `POST /v1/leave`, then shuts it down cleanly. SIGHUP
/// re-reads the configuration with `reload` and applies its tags and notification settings.
pub async fn run_until_signal(
    config: AgentConfig,
    reload: impl Fn() -> anyhow::Result<AgentConfig>,
) -> anyhow::Result<()> {
    let handle = start(config, crate::clock::system()).await?;
    let mut leave = handle.node.shutdown_requested();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = leave.wait_for(|v| *v) => tracing::info!("leave requested, shutting down"),
            _ = hup.recv() => {
                let reloaded = match reload() {
                    Ok(config) => handle.node.reload(&config).await,
                    Err(e) => Err(e),
                };
                crate::cluster::log_reload(reloaded);
                continue;
            }
        }
        break;
    }
    let failure = handle.node.failure.lock().expect("failure lock").take();
    handle.shutdown().await;
    match failure {
        Some(message) => Err(anyhow::anyhow!(message)),
        None => Ok(()),
    }
}
