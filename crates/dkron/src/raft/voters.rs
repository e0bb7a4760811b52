//! The Raft configuration: which servers vote. Bootstrap forms it, the leader admits servers
//! gossip discovers (learner, then voter) and removes servers that left or stayed failed, and
//! `dkron raft list-peers|remove-peer` show and change it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;

use super::{NodeId, Raft, ServerNode, node_id_for};
use crate::rpc::wire::Peer;

/// The voter set as this server sees it (clones share it).
#[derive(Clone)]
pub struct Voters {
    raft: Raft,
    id: NodeId,
}

impl Voters {
    pub(super) fn new(raft: Raft, id: NodeId) -> Voters {
        Voters { raft, id }
    }

    /// The voters' ids.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Every server of the configuration (voters and learners), by id.
    pub fn servers(&self) -> BTreeMap<NodeId, ServerNode> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// The servers of the configuration with their role (`dkron raft list-peers`,
    /// `GET /v1/raft/peers`).
    pub fn peers(&self) -> Vec<Peer> {
        let metrics = self.raft.metrics().borrow().clone();
        let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        metrics
            .membership_config
            .nodes()
            .map(|(id, n)| Peer {
                node: n.name.clone(),
                id: n.name.clone(),
                address: n.rpc_addr.clone(),
                state: if metrics.current_leader == Some(*id) {
                    "leader".into()
                } else {
                    "follower".into()
                },
                voter: voters.contains(id),
            })
            .collect()
    }

    /// Whether this server belongs to a Raft group yet.
    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(true)
    }

    /// Forms the group from `servers` (`--bootstrap-expect`); an error if it already exists.
    pub async fn initialize(&self, servers: BTreeMap<NodeId, ServerNode>) -> Result<(), String> {
        self.raft
            .initialize(servers)
            .await
            .map_err(|e| e.to_string())
    }

    /// Adds a server (on the leader): first as a learner that catches up, then as a voter.
    pub async fn add_server(&self, name: &str, rpc_addr: &str) -> anyhow::Result<()> {
        let id = node_id_for(name);
        let node = ServerNode {
            name: name.to_string(),
            rpc_addr: rpc_addr.to_string(),
        };
        self.raft
            .add_learner(id, node, true)
            .await
            .with_context(|| format!("adding {name} as a learner"))?;
        let mut voters = self.ids();
        voters.insert(id);
        self.raft
            .change_membership(voters, false)
            .await
            .with_context(|| format!("making {name} a voter"))?;
        tracing::info!(server = %name, rpc = %rpc_addr, "server added to the Raft group");
        Ok(())
    }

    /// Makes `voters` the voter set (on the leader).
    pub async fn set(&self, voters: BTreeSet<NodeId>) -> Result<(), String> {
        self.raft
            .change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Removes the server named `name` (on the leader).
    pub async fn remove(&self, name: &str) -> Result<(), String> {
        let id = node_id_for(name);
        if !self.servers().contains_key(&id) {
            return Err(format!(
                "id \"{name}\" was not found in the Raft configuration"
            ));
        }
        let mut voters = self.ids();
        voters.remove(&id);
        self.set(voters).await
    }

    /// This server's id.
    pub fn me(&self) -> NodeId {
        self.id
    }
}
