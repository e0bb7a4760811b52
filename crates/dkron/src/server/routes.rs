//! The RPC port of a server: consensus (`raft/routes.rs`), run orders (`worker/routes.rs`),
//! manual runs forwarded by followers, and `dkron leave`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};

use crate::leader::Dispatch;
use crate::rpc::wire::{self, RunRefused};
use crate::shutdown::Shutdown;
use crate::worker::OrderExecutor;

#[derive(Clone)]
struct Server {
    dispatch: Dispatch,
    shutdown: Shutdown,
}

pub fn rpc_router(
    consensus: Router,
    worker: Arc<OrderExecutor>,
    dispatch: Dispatch,
    shutdown: Shutdown,
) -> Router {
    Router::new()
        .route(wire::RUN, post(run))
        .route(wire::LEAVE, post(leave))
        .with_state(Server { dispatch, shutdown })
        .merge(consensus)
        .merge(crate::worker::routes::router(worker))
        .layer(crate::rpc::body_limit())
}

/// A manual run forwarded by a follower: claimed here if this server still leads.
async fn run(
    State(s): State<Server>,
    Json(request): Json<wire::RunRequest>,
) -> Json<Result<Vec<String>, RunRefused>> {
    Json(s.dispatch.run_here(&request).await)
}

/// `dkron leave`: leave the cluster gracefully and stop.
async fn leave(State(s): State<Server>) -> Json<Result<(), String>> {
    s.shutdown.request();
    Json(Ok(()))
}
