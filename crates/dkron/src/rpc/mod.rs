//! The RPC port (6868): how nodes talk to each other. [`wire`] says what crosses it,
//! [`client`] is the one way to call it, and [`serve`] runs a listener until the node stops.
//! The routes live with the role that answers them: `raft/routes.rs` (consensus, forwarded
//! writes, Raft membership), `worker/routes.rs` (run orders) and `server/routes.rs` (forwarded
//! runs, leave), merged by the server; an agent serves only the worker's.

pub mod client;
pub mod wire;

pub use client::{RpcClient, http_client};

use axum::Router;
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;

/// Serves `router` on `listener` until `shutdown` is asked for; connections in progress are
/// let finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown, what: &'static str) {
    let stop = async move { shutdown.requested().await };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, server = what, "server stopped; restart the node");
    }
}

/// The body limit every RPC router takes (see [`wire::BODY_LIMIT`]).
pub fn body_limit() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(wire::BODY_LIMIT)
}
