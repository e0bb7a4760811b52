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
        let (rpc, scheme) = match tls {
            Some(tls) => {
                let rpc = reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .use_preconfigured_tls(tls.client_config()?)
                    .build()
                    .map_err(|e| anyhow::anyhow!("building the RPC client: {e}"))?;
                (rpc, "https")
            }
            None => (http.clone(), "http"),
        };
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
