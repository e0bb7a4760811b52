//! What the RPC port answers for consensus: Raft's own traffic between servers, writes
//! forwarded by followers, whether this server is in a group yet (bootstrap-expect), the
//! peers, removing one, and standing for election when a stopping leader asks.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::{Leadership, NodeId, Proposer, Raft, TypeConfig, Voters};
use crate::rpc::wire::{self, Committed, Peer, WriteError};
use crate::rpc::{Packed, RpcClient};

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
    Packed(req, encoding): Packed<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    encoding.reply(&c.raft.append_entries(req).await)
}

async fn vote(
    State(c): State<Consensus>,
    Packed(req, encoding): Packed<VoteRequest<NodeId>>,
) -> Response {
    encoding.reply(&c.raft.vote(req).await)
}

async fn snapshot(
    State(c): State<Consensus>,
    Packed(req, encoding): Packed<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    encoding.reply(&c.raft.install_snapshot(req).await)
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use dkron_core::command::Command;
    use dkron_core::job::{Execution, Job};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};

    use super::*;
    use crate::raft::ServerNode;

    /// An append as the leader sends it: a batch with a job in Dkron's loosest JSON (string
    /// numbers, a `"[]"` header list, `true:1` tags), runs, and a membership change.
    fn append() -> AppendEntriesRequest<TypeConfig> {
        let job: Job = serde_json::from_value(serde_json::json!({
            "name": "job1", "schedule": "@every 5s", "executor": "http",
            "executor_config": {"method": "GET", "url": "http://x/", "timeout": "30",
                                "headers": "[]", "expectCode": "200"},
            "tags": {"server": "true:1"}, "metadata": {"user": "12345"},
            "concurrency": "forbid", "retries": 2, "processors": {"log": {"forward": "true"}}
        }))
        .unwrap();
        let execution = Execution {
            job_name: "job1".into(),
            id: "1764633600000000000-s1".into(),
            node_name: "s1".into(),
            started_at: Some("2026-12-02T00:00:00.5Z".parse().unwrap()),
            output: "ünïcode\n".into(),
            ..Execution::default()
        };
        let now = "2026-12-02T00:00:00Z".parse().unwrap();
        let batch = Command::Batch {
            commands: vec![
                Command::SetJob {
                    job: Box::new(job),
                    now,
                    refuse_when_paused: true,
                },
                Command::ClaimOccurrence {
                    job: "job1".into(),
                    nominal: now,
                    runs: vec![execution.clone()],
                },
                Command::FinishExecution {
                    execution,
                    stopped: true,
                },
            ],
        };
        let leader = CommittedLeaderId::new(3, 1);
        let nodes: BTreeMap<u64, ServerNode> = (1..=3)
            .map(|i| {
                (
                    i,
                    ServerNode {
                        name: format!("s{i}"),
                        rpc_addr: format!("10.0.0.{i}:6868"),
                    },
                )
            })
            .collect();
        let voters: BTreeSet<u64> = nodes.keys().copied().collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(LogId::new(leader, 41)),
            leader_commit: Some(LogId::new(leader, 40)),
            entries: vec![
                Entry {
                    log_id: LogId::new(leader, 42),
                    payload: EntryPayload::Normal(batch),
                },
                Entry {
                    log_id: LogId::new(leader, 43),
                    payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
                },
            ],
        }
    }

    #[test]
    fn raft_traffic_is_the_same_after_messagepack() {
        let sent = append();
        let bytes = rmp_serde::to_vec_named(&sent).unwrap();
        let received: AppendEntriesRequest<TypeConfig> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            serde_json::to_value(&received).unwrap(),
            serde_json::to_value(&sent).unwrap()
        );
        let json = serde_json::to_vec(&sent).unwrap();
        assert!(
            bytes.len() < json.len(),
            "{} vs {} bytes",
            bytes.len(),
            json.len()
        );
    }

    #[tokio::test]
    async fn an_append_in_json_is_still_understood_and_answered_in_json() {
        use axum::extract::FromRequest;
        let body = serde_json::to_vec(&append()).unwrap();
        let request = axum::http::Request::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let Packed(req, encoding) =
            Packed::<AppendEntriesRequest<TypeConfig>>::from_request(request, &())
                .await
                .unwrap();
        assert_eq!(req.entries.len(), 2);
        let answer = encoding.reply(&"ok");
        assert_eq!(answer.headers()["content-type"], "application/json");
        // And garbage is a 400 that says so, not a panic.
        let request = axum::http::Request::builder()
            .header("content-type", crate::rpc::wire::MSGPACK)
            .body(axum::body::Body::from(vec![0xc1, 0x00]))
            .unwrap();
        let refused = Packed::<AppendEntriesRequest<TypeConfig>>::from_request(request, &())
            .await
            .err()
            .unwrap();
        assert_eq!(refused.0, axum::http::StatusCode::BAD_REQUEST);
        assert!(refused.1.contains("undecodable"), "{}", refused.1);
    }
}
