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

/// HTTP/2 streams one connection may carry at once. A run order is held open until its run
/// finishes (up to [`wire::EXECUTE_HOLD`]) and all of a leader's orders to a node share one
/// connection, so hyper's default of 200 would hold back the 201st start on a busy node.
const MAX_STREAMS: u32 = 16_384;

/// Serves `router` on `listener` until `shutdown` is asked for; connections in progress are
/// let finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown, what: &'static str) {
    serve_on(listener, router, shutdown, what).await
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
    match TlsListener::new(listener, config, what) {
        Ok(listener) => serve_on(listener, router, shutdown, what).await,
        Err(e) => {
            tracing::error!(error = %e, server = what, "cannot serve over TLS; restart the node");
        }
    }
}

/// The accept loop: HTTP/1.1 and HTTP/2 (with prior knowledge, or over TLS) on every
/// connection, each request carrying its peer's address. Nodes call each other in HTTP/2
/// (`client.rs`): one connection per pair of nodes carries every run order, append and vote,
/// where HTTP/1.1 took one per order in flight — 20,000 file descriptors on a leader at 4,000
/// runs/s, which then failed writing its log (`Too many open files`).
async fn serve_on<L>(mut listener: L, router: Router, shutdown: Shutdown, what: &'static str)
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower_service::Service;

    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(MAX_STREAMS);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.requested() => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(PeerAddr(peer)));
            router.clone().call(req)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(server = what, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
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
