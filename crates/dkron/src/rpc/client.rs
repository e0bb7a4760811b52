//! The one client every role uses to call another node's RPC port: a method per call, so the
//! paths and shapes of [`super::wire`] are spelled out once.

use std::time::Duration;

use dkron_core::command::Command;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{
    self, Committed, OrderAnswer, Peer, RunOrder, RunRefused, StopOrder, WriteError,
};
use crate::tls::ClusterTls;

/// How long a node waits to connect to another one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a run order may take to answer: the worker's hold, plus margin for the answer.
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(wire::EXECUTE_HOLD.as_secs() + 5);

/// How often an RPC connection is pinged, and how long a ping may go unanswered before the
/// connection is dropped (the next call opens a new one). A node cut off holds the run orders
/// sent to it until it is back; once the connection is dropped, the next order fails to
/// connect and its run goes to another node, as over HTTP/1.1 after its connect timeout.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(1);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a Raft call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RaftCallError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("encoding the request: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decoding the answer: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

impl RaftCallError {
    /// The peer could not be connected to (openraft backs off instead of retrying at once).
    pub fn is_connect(&self) -> bool {
        matches!(self, RaftCallError::Http(e) if e.is_connect())
    }
}

/// Clones share one connection pool.
#[derive(Clone)]
pub struct RpcClient {
    /// For RPC: over mutual TLS when the cluster has a key.
    rpc: reqwest::Client,
    /// Plain, for the world outside the cluster (webhooks, notifications).
    http: reqwest::Client,
    scheme: &'static str,
}

/// The HTTP client every part of the node uses (the http executor keeps its own), with TLS
/// available for the outside destinations that need it (webhooks, the trace collector).
pub fn http_client(timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    dkron_executors::install_crypto_provider();
    let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))
}

impl RpcClient {
    /// A client that calls other nodes with `tls` (this node's cluster identity: mutual TLS,
    /// `https://`), or in plain HTTP when the cluster has no key.
    pub fn new(tls: Option<&ClusterTls>) -> anyhow::Result<RpcClient> {
        let http = http_client(None)?;
        // HTTP/2 only: one connection to each node carries every call (see `serve_on`),
        // pinged so that a connection to a node that vanished is noticed and replaced.
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_prior_knowledge()
            .http2_keep_alive_interval(KEEP_ALIVE_EVERY)
            .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true);
        let (builder, scheme) = match tls {
            Some(tls) => (builder.use_preconfigured_tls(tls.client_config()?), "https"),
            None => (builder, "http"),
        };
        let rpc = builder
            .build()
            .map_err(|e| anyhow::anyhow!("building the RPC client: {e}"))?;
        Ok(RpcClient { rpc, http, scheme })
    }

    /// The pooled HTTP client for destinations outside the cluster (notifications).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme)
    }

    async fn post<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, reqwest::Error> {
        self.rpc
            .post(self.url(addr, path))
            .timeout(timeout)
            .json(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// Raft traffic (`append`, `vote`, `snapshot`) in MessagePack, with openraft's deadline.
    pub async fn raft<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RaftCallError> {
        let body = rmp_serde::to_vec_named(req)?;
        let answer = self
            .rpc
            .post(self.url(addr, path))
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, wire::MSGPACK)
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok(rmp_serde::from_slice(&answer)?)
    }

    /// Proposes `command` on the leader at `addr` (it never forwards again).
    pub async fn write(
        &self,
        leader: &str,
        addr: &str,
        command: &Command,
    ) -> Result<Committed, WriteError> {
        let answer: Result<Committed, WriteError> = self
            .post(addr, wire::WRITE, command, Duration::from_secs(30))
            .await
            .map_err(|e| WriteError::LeaderUnreachable {
                leader: leader.to_string(),
                reason: e.to_string(),
            })?;
        answer
    }

    /// Asks the leader at `addr` to start a manual run; answers the execution ids
    /// claimed.
    pub async fn run(
        &self,
        leader: &str,
        addr: &str,
        request: &wire::RunRequest,
    ) -> Result<Vec<String>, RunRefused> {
        let answer: Result<Vec<String>, RunRefused> = self
            .post(addr, wire::RUN, request, Duration::from_secs(30))
            .await
            .map_err(|e| {
                RunRefused::Write(WriteError::LeaderUnreachable {
                    leader: leader.to_string(),
                    reason: e.to_string(),
                })
            })?;
        answer
    }

    /// Sends (or asks again about) a run order.
    pub async fn execute(
        &self,
        addr: &str,
        order: &RunOrder,
    ) -> Result<OrderAnswer, reqwest::Error> {
        self.post(addr, wire::EXECUTE, order, EXECUTE_TIMEOUT).await
    }

    /// Asks the node at `addr` to stop a run; `true` if it was running there.
    pub async fn stop(&self, addr: &str, stop: &StopOrder) -> Result<bool, reqwest::Error> {
        self.post(addr, wire::STOP, stop, Duration::from_secs(5))
            .await
    }

    /// What a run in progress on the node at `addr` printed so far.
    pub async fn output(&self, addr: &str, job: &str, id: &str) -> Option<String> {
        self.post::<_, Option<String>>(addr, wire::OUTPUT, &(job, id), Duration::from_secs(2))
            .await
            .ok()
            .flatten()
    }

    /// Whether the server at `addr` belongs to a Raft group yet (`None`: no answer).
    pub async fn raft_initialized(&self, addr: &str) -> Option<bool> {
        let answer: serde_json::Value = self
            .rpc
            .get(self.url(addr, wire::RAFT_STATE))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer["initialized"].as_bool()
    }

    /// Asks the server at `addr` to stand for election now.
    pub async fn elect(&self, addr: &str) -> Result<(), String> {
        self.post::<_, Result<(), String>>(addr, wire::RAFT_ELECT, &(), Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Removes the server named `name` from the Raft configuration (asked of any server).
    pub async fn remove_peer(&self, addr: &str, name: &str) -> Result<(), String> {
        self.post::<_, Result<(), String>>(
            addr,
            wire::RAFT_REMOVE_PEER,
            name,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?
    }

    /// The servers of the Raft configuration as the server at `addr` sees it.
    pub async fn peers(&self, addr: &str) -> Result<Vec<Peer>, reqwest::Error> {
        self.rpc
            .get(self.url(addr, wire::RAFT_PEERS))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .json()
            .await
    }

    /// Asks the node at `addr` to leave the cluster gracefully and stop.
    pub async fn leave(&self, addr: &str) -> Result<Result<(), String>, reqwest::Error> {
        self.post(addr, wire::LEAVE, &(), Duration::from_secs(10))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::extract::{ConnectInfo, Request};
    use axum::routing::post;

    use super::*;
    use crate::rpc::PeerAddr;
    use crate::shutdown::Shutdown;

    /// More than hyper's default limit of streams on one HTTP/2 connection (200).
    const AT_ONCE: usize = 300;

    #[tokio::test]
    async fn calls_to_a_node_share_one_http2_connection_even_hundreds_held_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Every call is held until all of them arrived, as run orders are held by workers.
        let all_in = Arc::new(tokio::sync::Barrier::new(AT_ONCE));
        let router = Router::new().route(
            "/held",
            post(
                move |ConnectInfo(peer): ConnectInfo<PeerAddr>, req: Request| {
                    let all_in = all_in.clone();
                    async move {
                        all_in.wait().await;
                        axum::Json((peer.0.port(), format!("{:?}", req.version())))
                    }
                },
            ),
        );
        let shutdown = Shutdown::default();
        tokio::spawn(crate::rpc::serve(
            listener,
            router,
            shutdown.clone(),
            "test",
        ));

        let client = RpcClient::new(None).unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..AT_ONCE {
            let (client, addr) = (client.clone(), addr.clone());
            calls.spawn(async move {
                client
                    .post::<_, (u16, String)>(&addr, "/held", &(), Duration::from_secs(20))
                    .await
            });
        }
        let answers = tokio::time::timeout(Duration::from_secs(30), calls.join_all())
            .await
            .expect("every call was in flight at once");
        let answers: Vec<(u16, String)> = answers.into_iter().map(Result::unwrap).collect();
        let ports: std::collections::BTreeSet<u16> = answers.iter().map(|a| a.0).collect();
        assert_eq!(ports.len(), 1, "one connection, not {}", ports.len());
        assert!(
            answers.iter().all(|a| a.1 == "HTTP/2.0"),
            "{:?}",
            answers[0]
        );

        // A node of an earlier version calls in HTTP/1.1: still answered.
        let old = reqwest::Client::builder().http1_only().build().unwrap();
        let mut held = tokio::task::JoinSet::new();
        for _ in 0..AT_ONCE {
            let (old, addr) = (old.clone(), addr.clone());
            held.spawn(async move {
                let answer = old.post(format!("http://{addr}/held")).send().await?;
                answer.json::<(u16, String)>().await
            });
        }
        let answers = tokio::time::timeout(Duration::from_secs(30), held.join_all())
            .await
            .expect("every HTTP/1.1 call answered");
        assert!(answers.iter().all(|a| a.as_ref().unwrap().1 == "HTTP/1.1"));
        shutdown.request();
    }
}
