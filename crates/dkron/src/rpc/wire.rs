//! What crosses the RPC port between nodes (over HTTP; JSON, but MessagePack for Raft's own
//! traffic): the paths, and the requests and answers of each call. Every role speaks through these types; only [`super::client`] and the
//! routes that serve them know the paths.

use std::collections::BTreeMap;

use dkron_core::command::{ApplyError, Response};
use jiff::Timestamp;

/// Raft traffic between servers.
pub const RAFT_APPEND: &str = "/raft/append";
pub const RAFT_VOTE: &str = "/raft/vote";
pub const RAFT_SNAPSHOT: &str = "/raft/snapshot";
/// The content type of Raft's traffic: entries cross as MessagePack (struct fields named, so
/// every serde attribute of the commands holds), several times cheaper to encode and decode
/// than JSON and without JSON's number arrays for snapshot bytes. A JSON request is still
/// understood, and answered in JSON.
pub const MSGPACK: &str = "application/msgpack";
/// A write forwarded by a follower to the leader.
pub const WRITE: &str = "/rpc/write";
/// A manual run forwarded by a follower to the leader.
pub const RUN: &str = "/rpc/run";

/// A manual run forwarded to the leader: the job, and who asked (an ACL token's name).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRequest {
    pub job: String,
    #[serde(default)]
    pub started_by: Option<String>,
    /// One-off parameters of this run, checked by the server that took the request.
    #[serde(default)]
    pub parameters: Option<dkron_core::job::RunParameters>,
}
/// Whether a server belongs to a Raft group yet (bootstrap-expect asks its peers).
pub const RAFT_STATE: &str = "/rpc/raft-state";
pub const RAFT_PEERS: &str = "/rpc/raft/peers";
pub const RAFT_REMOVE_PEER: &str = "/rpc/raft/remove-peer";
/// A leader stepping down asks a caught-up voter to stand for election now.
pub const RAFT_ELECT: &str = "/rpc/raft/elect";
/// `dkron leave`: leave the cluster gracefully and stop.
pub const LEAVE: &str = "/rpc/leave";
/// Run orders, served by every node (server or agent).
pub const EXECUTE: &str = "/rpc/execute";
pub const STOP: &str = "/rpc/stop";
pub const OUTPUT: &str = "/rpc/output";

/// How long [`EXECUTE`] holds a request before answering [`OrderAnswer::Running`].
pub const EXECUTE_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest request the RPC port accepts (Raft append and snapshot chunks, forwarded writes).
/// A catch-up of thousands of occurrences is one entry; an entry the followers refused would
/// never commit, and every write behind it would wait forever.
pub const BODY_LIMIT: usize = 256 << 20;

/// Why a replicated write did not happen. The API maps these to status codes.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteError {
    #[error("no leader is elected yet; retry in a few seconds")]
    NoLeader,
    #[error("this server is not the leader (leader: {name}@{rpc_addr})")]
    NotLeader { name: String, rpc_addr: String },
    #[error("the leader {leader} could not be reached: {reason}")]
    LeaderUnreachable { leader: String, reason: String },
    #[error("the consensus layer stopped: {0}")]
    Fatal(String),
    /// The leader is behind: this client write was not queued (the leader's own work is).
    #[error("the leader is behind with {pending} writes waiting; retry in {retry_after_s} s")]
    Overloaded { pending: usize, retry_after_s: u64 },
}

/// A committed write: its result and the log index that carried it.
pub type Committed = (Response, u64);

/// Why a manual run was not started (`/rpc/run`, and the API's run endpoints).
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RunRefused {
    #[error("{0}")]
    Write(WriteError),
    /// The state machine refused the claim (`concurrency: forbid` while another run goes,
    /// or the job is gone).
    #[error("{0}")]
    Rejected(ApplyError),
}

impl From<WriteError> for RunRefused {
    fn from(e: WriteError) -> RunRefused {
        RunRefused::Write(e)
    }
}

/// A run order sent by the leader to the node that executes it ([`EXECUTE`]). Output comes
/// back in the answer, never through the Raft log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunOrder {
    pub job_name: String,
    pub executor: String,
    pub config: BTreeMap<String, String>,
    pub execution_id: String,
    /// RFC 3339 UTC nominal time.
    pub scheduled_time: String,
    /// The leader's term: a node refuses orders older than the newest it has seen.
    pub fencing_token: u64,
    /// Sent again by a new leader for a run its predecessor had claimed.
    #[serde(default)]
    pub resumed: bool,
    /// When the run was due to start (the claim's `started_at`).
    #[serde(default)]
    pub started_at: Option<Timestamp>,
}

/// Asks the executing node to stop a run ([`STOP`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StopOrder {
    pub job_name: String,
    pub execution_id: String,
    /// Becomes the stopped run's output.
    pub reason: String,
}

/// What the executing node answers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    pub success: bool,
    pub output: String,
    /// The run was stopped (`POST .../stop`, or replaced): it failed, and is not retried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

/// What [`EXECUTE`] answers: the result, a refusal, or "still running, ask again" after
/// holding the request for a while, so no connection waits for a whole long run and the
/// leader hears from the node regularly (the run's lease).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum OrderAnswer {
    Done {
        result: RunResult,
    },
    Refused {
        reason: String,
    },
    /// Not started and never will be here (the node is shutting down): the leader may place
    /// the run on another node.
    NotStarted {
        reason: String,
    },
    Running,
}

/// One server of the Raft configuration, for `dkron raft list-peers`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub node: String,
    pub id: String,
    pub address: String,
    pub state: String,
    pub voter: bool,
}
