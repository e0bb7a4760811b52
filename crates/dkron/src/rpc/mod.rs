//! The RPC port (6868): how nodes talk to each other. [`wire`] says what crosses it,
//! [`client`] is the one way to call it, and [`serve_tls`] runs its listener until the node
//! stops — over mutual TLS (`crate::tls`) when the cluster has a key or certificates.
//! The routes live with the role that answers them: `raft/routes.rs` (consensus, forwarded
//! writes, Raft membership), `worker/routes.rs` (run orders) and `server/routes.rs` (forwarded
//! runs, leave), merged by the server; an agent serves only the worker's.

pub mod client;
pub mod wire;

pub use client::{RaftCallError, RpcClient, http_client};

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;
use crate::tls::TlsListener;

/// The address of the peer of a connection (what the audit log records as remote).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> PeerAddr {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> PeerAddr {
        PeerAddr(*stream.remote_addr())
    }
}

/// Serves `router` on `listener` until `shutdown` is asked for; connections in progress are
/// let finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown, what: &'static str) {
    let stop = async move { shutdown.requested().await };
    let service = router.into_make_service_with_connect_info::<PeerAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, server = what, "server stopped; restart the node");
    }
}

/// Serves a port over TLS with `tls` (the RPC port's config requires a client certificate),
/// else in plain HTTP.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    tls: Option<Arc<rustls::ServerConfig>>,
    what: &'static str,
) {
    let Some(config) = tls else {
        return serve(listener, router, shutdown, what).await;
    };
    let listener = match TlsListener::new(listener, config, what) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, server = what, "cannot serve over TLS; restart the node");
            return;
        }
    };
    let stop = async move { shutdown.requested().await };
    let service = router.into_make_service_with_connect_info::<PeerAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, server = what, "server stopped; restart the node");
    }
}

/// The startup warning of a node whose RPC port takes anyone's orders, and its metric.
pub fn warn_if_open(tls: bool, port: u16) {
    crate::telemetry::metrics::rpc_open(!tls);
    if !tls {
        tracing::warn!(
            rpc_port = port,
            "the RPC port accepts run orders, Raft votes and writes from any host that reaches it: start every node with the same --encrypt key (dkron keygen) to require mutual TLS between cluster members"
        );
    }
}

/// The body limit every RPC router takes (see [`wire::BODY_LIMIT`]).
pub fn body_limit() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(wire::BODY_LIMIT)
}

/// A request body in MessagePack ([`wire::MSGPACK`], what Raft's traffic uses) or JSON (what
/// a node of an earlier version sends), and the encoding its answer goes back in.
pub struct Packed<T>(pub T, pub Encoding);

/// How a request came, so its answer goes back the same way.
#[derive(Clone, Copy, Debug)]
pub enum Encoding {
    MessagePack,
    Json,
}

impl Encoding {
    /// `answer` in this encoding.
    pub fn reply<R: serde::Serialize>(self, answer: &R) -> axum::response::Response {
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        match self {
            Encoding::Json => axum::Json(answer).into_response(),
            Encoding::MessagePack => match rmp_serde::to_vec_named(answer) {
                Ok(body) => ([(header::CONTENT_TYPE, wire::MSGPACK)], body).into_response(),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding the answer: {e}"),
                )
                    .into_response(),
            },
        }
    }
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Packed<T> {
    type Rejection = (axum::http::StatusCode, String);

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let encoding = match req.headers().get(axum::http::header::CONTENT_TYPE) {
            Some(v) if v.as_bytes() == wire::MSGPACK.as_bytes() => Encoding::MessagePack,
            _ => Encoding::Json,
        };
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| (e.status(), e.body_text()))?;
        let value = match encoding {
            Encoding::MessagePack => rmp_serde::from_slice(&body).map_err(|e| e.to_string()),
            Encoding::Json => serde_json::from_slice(&body).map_err(|e| e.to_string()),
        };
        let value = value.map_err(|e| {
            (
                axum::http::StatusCode::BAD_REQUEST,
                format!("undecodable request body: {e}"),
            )
        })?;
        Ok(Packed(value, encoding))
    }
}
