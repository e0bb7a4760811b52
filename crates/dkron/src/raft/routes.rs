//! What the RPC port answers for consensus: Raft's own traffic between servers, writes
//! forwarded by followers, whether this server is in a group yet (bootstrap-expect), the
//! peers, removing one, and standing for election when a stopping leader asks.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::{Leadership, NodeId, Proposer, Raft, TypeConfig, Voters};
use crate::rpc::RpcClient;
use crate::rpc::wire::{self, Committed, Peer, WriteError};

/// What the consensus routes need.
#[derive(Clone)]
pub(super) struct Consensus {
    pub(super) raft: Raft,
    pub(super) proposer: Proposer,
    pub(super) voters: Voters,
    pub(super) leadership: Leadership,
    pub(super) rpc: RpcClient,
}

pub(super) fn router(consensus: Consensus) -> Router {
    Router::new()
        .route(wire::RAFT_APPEND, post(append))
        .route(wire::RAFT_VOTE, post(vote))
        .route(wire::RAFT_SNAPSHOT, post(snapshot))
        .route(wire::WRITE, post(write))
        .route(wire::RAFT_STATE, get(raft_state))
        .route(wire::RAFT_PEERS, get(peers))
        .route(wire::RAFT_REMOVE_PEER, post(remove_peer))
        .route(wire::RAFT_ELECT, post(elect))
        .with_state(consensus)
}

async fn append(
    State(c): State<Consensus>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(c.raft.append_entries(req).await).unwrap_or_default())
}

async fn vote(
    State(c): State<Consensus>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(c.raft.vote(req).await).unwrap_or_default())
}

async fn snapshot(
    State(c): State<Consensus>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(c.raft.install_snapshot(req).await).unwrap_or_default())
}

/// A write forwarded by a follower: proposed here only, never forwarded again.
async fn write(
    State(c): State<Consensus>,
    Json(command): Json<dkron_core::command::Command>,
) -> Json<Result<Committed, WriteError>> {
    Json(c.proposer.write_here(command).await)
}

async fn raft_state(State(c): State<Consensus>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "initialized": c.voters.is_initialized().await }))
}

async fn peers(State(c): State<Consensus>) -> Json<Vec<Peer>> {
    Json(c.voters.peers())
}

/// Removes a server (by node name) from the Raft configuration: on the leader, asked of any
/// server.
async fn remove_peer(
    State(c): State<Consensus>,
    Json(name): Json<String>,
) -> Json<Result<(), String>> {
    if c.leadership.is_leader() {
        return Json(c.voters.remove(&name).await);
    }
    Json(match c.leadership.leader() {
        Some(l) => c.rpc.remove_peer(&l.rpc_addr, &name).await,
        None => Err("no leader is elected yet; retry in a few seconds".into()),
    })
}

/// A leader stepping down asks this server to stand for election now.
async fn elect(State(c): State<Consensus>) -> Json<Result<(), String>> {
    Json(c.leadership.elect().await)
}
