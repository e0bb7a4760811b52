//! Node-level routes: `/health`, `/v1`, members, leader, pause, leave.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dkron_core::command::{Command, Response as Applied};
use serde::Serialize;
use serde_json::json;

use super::query::{Query, listed, ok, render};
use super::{ApiError, Context, Cx};

/// `{"status": "healthy"}`, and each executor with its state (Dkron 4.1 reports its plugins
/// there): `healthy`, or `disabled` when this node's `--executors` leaves it out; an external
/// plugin may also be `starting` or `failed: <why>`, and carries `"plugin": true`.
pub async fn health(State(cx): Cx) -> Response {
    let on = |name: &str| cx.executors.is_empty() || cx.executors.iter().any(|e| e == name);
    let mut executors: serde_json::Map<String, serde_json::Value> = dkron_executors::executors()
        .map(|name| {
            let status = if on(name) { "healthy" } else { "disabled" };
            (name.to_string(), json!({ "status": status }))
        })
        .collect();
    for (name, state) in cx.plugins.states().await {
        let status = if on(&name) {
            state
        } else {
            "disabled".to_owned()
        };
        executors.insert(name, json!({ "status": status, "plugin": true }));
    }
    render(
        StatusCode::OK,
        &json!({"status": "healthy", "executors": executors}),
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

fn all_members(cx: &Context) -> Vec<Member> {
    cx.members.all().into_iter().map(serf_member).collect()
}

fn self_member(cx: &Context) -> Member {
    let name = cx.members.name();
    all_members(cx)
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| {
            // Gossip always lists this node; this is only a safe answer if it ever does not.
            serf_member(dkron_membership::Member {
                name: name.to_string(),
                addr: cx.members.advertise_addr(),
                tags: cx.members.my_tags(),
                status: dkron_membership::MemberStatus::Alive,
            })
        })
}

pub async fn status(State(cx): Cx, query: Query) -> Response {
    let members = cx.members.all();
    let count =
        |s: dkron_membership::MemberStatus| members.iter().filter(|m| m.status == s).count();
    let body = json!({
        "agent": {"name": cx.members.name(), "version": crate::VERSION},
        "serf": {
            "members": members.len().to_string(),
            "failed": count(dkron_membership::MemberStatus::Failed).to_string(),
            "left": count(dkron_membership::MemberStatus::Left).to_string(),
            "health_score": "0",
            "encrypted": cx.encrypted.to_string(),
        },
        "tags": cx.members.my_tags(),
    });
    ok(&body, &query)
}

pub async fn members(State(cx): Cx, query: Query) -> Response {
    let members = all_members(&cx);
    listed(&members, members.len(), &query)
}

pub async fn leader(State(cx): Cx, query: Query) -> Result<Response, ApiError> {
    match cx.leadership.leader() {
        Some(l) if l.name == cx.members.name() => Ok(ok(&self_member(&cx), &query)),
        Some(l) => match all_members(&cx).into_iter().find(|m| m.name == l.name) {
            Some(m) => Ok(ok(&m, &query)),
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

pub async fn is_leader(State(cx): Cx) -> Response {
    if cx.leadership.is_leader() {
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

pub async fn pause_status(State(cx): Cx) -> Response {
    let paused = cx.state.paused();
    render(
        StatusCode::OK,
        &json!({"paused": paused}),
        false,
        HeaderMap::new(),
    )
}

async fn set_paused(cx: &Context, paused: bool) -> Result<Response, ApiError> {
    match cx.proposer.write(Command::SetPaused { paused }).await? {
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

pub async fn pause(State(cx): Cx) -> Result<Response, ApiError> {
    set_paused(&cx, true).await
}

pub async fn unpause(State(cx): Cx) -> Result<Response, ApiError> {
    set_paused(&cx, false).await
}

/// Leaves the cluster: answers with the member list, then the process shuts down.
pub async fn leave(State(cx): Cx) -> Response {
    let members = all_members(&cx);
    cx.shutdown.request();
    render(StatusCode::OK, &members, false, HeaderMap::new())
}

/// `GET /v1/raft/peers` (not in Dkron, which has it only as `dkron raft list-peers`): the
/// servers of the Raft configuration, their address, role and whether they vote.
pub async fn raft_peers(State(cx): Cx, query: Query) -> Response {
    ok(&cx.voters.peers(), &query)
}
