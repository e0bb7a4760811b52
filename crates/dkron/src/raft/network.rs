//! Raft RPCs between servers: MessagePack over HTTP to the peer's RPC port (`/raft/append`,
//! `/raft/vote`, `/raft/snapshot`), through the node's one [`RpcClient`]. Connection failures
//! map to `Unreachable`, so openraft backs off instead of retrying in a hot loop. What one
//! append carries is bounded by the log store (`log_store::MAX_APPEND_BYTES`).

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{NodeId, ServerNode, TypeConfig};
use crate::rpc::RpcClient;
use crate::rpc::wire;

#[derive(Clone)]
pub struct Network {
    rpc: RpcClient,
}

impl Network {
    pub fn new(rpc: RpcClient) -> Network {
        Network { rpc }
    }
}

pub struct PeerConnection {
    rpc: RpcClient,
    target: NodeId,
    node: ServerNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &ServerNode) -> PeerConnection {
        PeerConnection {
            rpc: self.rpc.clone(),
            target,
            node: node.clone(),
        }
    }
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, ServerNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, E> = self
            .rpc
            .raft(
                &self.node.rpc_addr,
                path,
                req,
                option.hard_ttl().max(super::runtime::RPC_TIMEOUT_FLOOR),
            )
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ServerNode, RaftError<NodeId>>>
    {
        self.call(wire::RAFT_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ServerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(wire::RAFT_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ServerNode, RaftError<NodeId>>> {
        self.call(wire::RAFT_VOTE, &rpc, &option).await
    }
}
