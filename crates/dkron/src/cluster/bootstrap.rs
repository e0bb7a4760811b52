//! `--bootstrap-expect=N` (N > 1): once N servers see each other and none of them is part of
//! a Raft group yet, every one of them initialises Raft with the same N members (identical
//! proposals are safe; the later ones are refused as already initialised). A server started
//! with `--bootstrap-expect=1` owns the cluster: the others join it instead.

use std::collections::BTreeMap;
use std::time::Duration;

use dkron_membership::Member;
use tokio::sync::watch;
use tracing::info;

use super::Members;
use crate::raft::{NodeId, ServerNode, Voters, node_id_for};
use crate::rpc::RpcClient;
use crate::shutdown::Shutdown;

/// Where bootstrap stands, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapStatus {
    /// Not decided yet.
    Starting,
    /// `seen` of the `expect` servers see each other: not enough to form a group.
    Waiting { seen: usize, expect: usize },
    /// A server started with `--bootstrap-expect=1` owns the cluster; its leader admits us.
    JoiningBootstrapper,
    /// This server belongs to a Raft group (it formed one, or was added to one).
    Done,
}

/// What to do, from the member list alone.
#[derive(Debug, PartialEq)]
enum Decision {
    Wait {
        seen: usize,
    },
    JoinBootstrapper,
    /// Form the group from these servers (once none of them is in a group yet).
    Form(BTreeMap<String, String>),
}

fn decide(
    me: &str,
    expect: usize,
    members: &[Member],
    servers: BTreeMap<String, String>,
) -> Decision {
    let bootstrapper = members.iter().any(|m| {
        m.name != me
            && m.tags.get("server").map(String::as_str) == Some("true")
            && m.tags.get("expect").map(String::as_str) == Some("1")
    });
    if bootstrapper {
        Decision::JoinBootstrapper
    } else if servers.len() >= expect {
        Decision::Form(servers)
    } else {
        Decision::Wait {
            seen: servers.len(),
        }
    }
}

/// The bootstrap task of a server started with `--bootstrap-expect` above 1.
pub struct Bootstrap {
    pub members: Members,
    pub voters: Voters,
    pub rpc: RpcClient,
    pub expect: usize,
    pub status: watch::Sender<BootstrapStatus>,
}

impl Bootstrap {
    pub async fn run(self, shutdown: Shutdown) {
        let mut changes = self.members.subscribe();
        loop {
            if self.voters.is_initialized().await {
                self.status.send_replace(BootstrapStatus::Done);
                return;
            }
            let decision = decide(
                self.members.name(),
                self.expect,
                &self.members.all(),
                self.members.alive_servers(),
            );
            match decision {
                Decision::Form(servers) if self.peers_uninitialised(&servers).await => {
                    self.form(&servers).await;
                    self.status.send_replace(BootstrapStatus::Done);
                    return;
                }
                Decision::Form(_) => {}
                Decision::JoinBootstrapper => {
                    self.status
                        .send_replace(BootstrapStatus::JoiningBootstrapper);
                }
                Decision::Wait { seen } => {
                    self.status.send_replace(BootstrapStatus::Waiting {
                        seen,
                        expect: self.expect,
                    });
                }
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.requested() => return,
            }
        }
    }

    async fn form(&self, servers: &BTreeMap<String, String>) {
        let group: BTreeMap<NodeId, ServerNode> = servers
            .iter()
            .map(|(name, rpc)| {
                (
                    node_id_for(name),
                    ServerNode {
                        name: name.clone(),
                        rpc_addr: rpc.clone(),
                    },
                )
            })
            .collect();
        match self.voters.initialize(group).await {
            Ok(()) => {
                info!(servers = ?servers.keys().collect::<Vec<_>>(), "bootstrapped the cluster")
            }
            Err(e) => {
                info!(reason = %e, "bootstrap not needed: another server initialised the cluster")
            }
        }
    }

    /// Asks each other server whether it already belongs to a Raft group.
    async fn peers_uninitialised(&self, servers: &BTreeMap<String, String>) -> bool {
        for (name, rpc) in servers {
            if name == self.members.name() {
                continue;
            }
            if self.rpc.raft_initialized(rpc).await != Some(false) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dkron_membership::MemberStatus;

    fn server(name: &str, expect: &str) -> Member {
        Member {
            name: name.into(),
            addr: "127.0.0.1:8946".parse().unwrap(),
            tags: [
                ("server".to_string(), "true".to_string()),
                ("expect".to_string(), expect.to_string()),
            ]
            .into(),
            status: MemberStatus::Alive,
        }
    }

    fn rpc(names: &[&str]) -> BTreeMap<String, String> {
        names
            .iter()
            .map(|n| (n.to_string(), format!("{n}:6868")))
            .collect()
    }

    #[test]
    fn a_group_forms_only_once_enough_servers_see_each_other() {
        let two = [server("a", "3"), server("b", "3")];
        assert_eq!(
            decide("a", 3, &two, rpc(&["a", "b"])),
            Decision::Wait { seen: 2 }
        );
        let three = [server("a", "3"), server("b", "3"), server("c", "3")];
        assert_eq!(
            decide("a", 3, &three, rpc(&["a", "b", "c"])),
            Decision::Form(rpc(&["a", "b", "c"]))
        );
    }

    #[test]
    fn a_single_server_bootstrapper_is_joined_not_outvoted() {
        let members = [server("a", "3"), server("b", "3"), server("boss", "1")];
        assert_eq!(
            decide("a", 3, &members, rpc(&["a", "b", "boss"])),
            Decision::JoinBootstrapper
        );
        // The bootstrapper itself does not defer to itself.
        assert_eq!(
            decide("boss", 1, &members[2..], rpc(&["boss"])),
            Decision::Form(rpc(&["boss"]))
        );
    }
}
