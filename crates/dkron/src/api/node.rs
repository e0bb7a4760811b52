//! Node-level routes: `/health`, `/v1`, members, leader, pause, leave.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dkron_core::command::{Command, Response as Applied};
use serde::Serialize;
use serde_json::json;

use super::ApiError;
use super::query::{Query, render, total_count};
use crate::node::Node;

pub async fn health() -> Response {
    render(
        StatusCode::OK,
        &json!({"status": "healthy"}),
        false,
        HeaderMap::new(),
    )
}

/// A member in Dkron's (Serf's) shape; field names are Go's.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Member {
    name: String,
    addr: String,
    port: u16,
    tags: BTreeMap<String, String>,
    status: u8,
    protocol_min: u8,
    protocol_max: u8,
    protocol_cur: u8,
    delegate_min: u8,
    delegate_max: u8,
    delegate_cur: u8,
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "statusText")]
    status_text: &'static str,
}

fn serf_member(m: dkron_membership::Member) -> Member {
    use dkron_membership::MemberStatus;
    // Serf's numbers: 1 alive, 2 leaving, 3 left, 4 failed. A suspect is still alive to Serf.
    let status = match m.status {
        MemberStatus::Alive | MemberStatus::Suspect => 1,
        MemberStatus::Left => 3,
        MemberStatus::Failed => 4,
    };
    Member {
        addr: m.addr.ip().to_string(),
        port: m.addr.port(),
        tags: m.tags,
        status,
        protocol_min: 1,
        protocol_max: 5,
        protocol_cur: 2,
        delegate_min: 2,
        delegate_max: 5,
        delegate_cur: 4,
        id: m.name.clone(),
        name: m.name,
        status_text: m.status.as_str(),
    }
}

fn all_members(node: &Node) -> Vec<Member> {
    node.gossip.members().into_iter().map(serf_member).collect()
}

fn self_member(node: &Node) -> Member {
    all_members(node)
        .into_iter()
        .find(|m| m.name == node.name())
        .unwrap_or_else(|| {
            // Gossip always lists this node; this is only a safe answer if it ever does not.
            serf_member(dkron_membership::Member {
                name: node.name().to_string(),
                addr: node.gossip.advertise_addr(),
                tags: node.tags(),
                status: dkron_membership::MemberStatus::Alive,
            })
        })
}

pub async fn status(State(node): State<Arc<Node>>, RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw.as_deref());
    let members = node.gossip.members();
    let count =
        |s: dkron_membership::MemberStatus| members.iter().filter(|m| m.status == s).count();
    let body = json!({
        "agent": {"name": node.name(), "version": crate::VERSION},
        "serf": {
            "members": members.len().to_string(),
            "failed": count(dkron_membership::MemberStatus::Failed).to_string(),
            "left": count(dkron_membership::MemberStatus::Left).to_string(),
            "health_score": "0",
            "encrypted": (!node.config.encrypt.is_empty()).to_string(),
        },
        "tags": node.tags(),
    });
    render(StatusCode::OK, &body, query.pretty(), HeaderMap::new())
}

pub async fn members(State(node): State<Arc<Node>>, RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw.as_deref());
    let members = all_members(&node);
    render(
        StatusCode::OK,
        &members,
        query.pretty(),
        total_count(members.len()),
    )
}

pub async fn leader(
    State(node): State<Arc<Node>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    match node.leader() {
        Some(l) if l.name == node.name() => Ok(render(
            StatusCode::OK,
            &self_member(&node),
            query.pretty(),
            HeaderMap::new(),
        )),
        Some(l) => match all_members(&node).into_iter().find(|m| m.name == l.name) {
            Some(m) => Ok(render(StatusCode::OK, &m, query.pretty(), HeaderMap::new())),
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("leader {l} is not a known member yet"),
            )),
        },
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader is elected yet; retry in a few seconds",
        )),
    }
}

pub async fn is_leader(State(node): State<Arc<Node>>) -> Response {
    if node.is_leader() {
        render(StatusCode::OK, &"I am a leader", false, HeaderMap::new())
    } else {
        render(
            StatusCode::NOT_FOUND,
            &"I am a follower",
            false,
            HeaderMap::new(),
        )
    }
}

pub async fn pause_status(State(node): State<Arc<Node>>) -> Response {
    let paused = node.state.read(|s| s.paused);
    render(
        StatusCode::OK,
        &json!({"paused": paused}),
        false,
        HeaderMap::new(),
    )
}

async fn set_paused(node: &Node, paused: bool) -> Result<Response, ApiError> {
    match node.write(Command::SetPaused { paused }).await? {
        Applied::Paused { paused } => Ok(render(
            StatusCode::OK,
            &json!({"paused": paused}),
            false,
            HeaderMap::new(),
        )),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

pub async fn pause(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    set_paused(&node, true).await
}

pub async fn unpause(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    set_paused(&node, false).await
}

/// Leaves the cluster: answers with the member list, then the process shuts down.
pub async fn leave(State(node): State<Arc<Node>>) -> Response {
    let members = all_members(&node);
    node.request_shutdown();
    render(StatusCode::OK, &members, false, HeaderMap::new())
}

/// `GET /v1/raft/peers` (not in Dkron, which has it only as `dkron raft list-peers`): the
/// servers of the Raft configuration, their address, role and whether they vote.
pub async fn raft_peers(State(node): State<Arc<Node>>, RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw.as_deref());
    render(
        StatusCode::OK,
        &node.raft_peers(),
        query.pretty(),
        HeaderMap::new(),
    )
}
