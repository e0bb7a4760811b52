//! Cluster membership wiring. Gossip (`dkron-membership`, SWIM) says who is in the cluster
//! and with which tags; this module turns that into:
//! - joining (`--join` once, `--retry-join` until it works or `--retry-max` runs out),
//! - Raft bootstrap once `--bootstrap-expect` servers see each other,
//! - admission of new servers into the Raft group by the leader (learner, then voter), and
//!   removal of servers that left gracefully,
//! - the member list that job placement and `/v1/members` use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dkron_membership::{Config as GossipConfig, Keyring, MemberStatus, Membership, Profile};
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::node::Node;
use crate::raft::{NodeId, ServerNode, node_id_for};

/// Dkron's built-in tags plus the user's (`--tag`); built-in ones win.
pub fn node_tags(config: &AgentConfig, rpc_port: u16) -> BTreeMap<String, String> {
    let mut tags = config.tags.clone();
    let port = if config.advertise_rpc_port != 0 {
        config.advertise_rpc_port
    } else {
        rpc_port
    };
    let builtin = [
        ("role", "dkron".to_string()),
        ("dc", config.datacenter.clone()),
        ("region", config.region.clone()),
        ("version", crate::VERSION.to_string()),
        ("rpc_addr", format!("{}:{port}", config.advertise_ip())),
        ("port", port.to_string()),
        ("server", config.server.to_string()),
        ("expect", config.bootstrap_expect.to_string()),
    ];
    for (k, v) in builtin {
        tags.insert(k.to_string(), v);
    }
    tags
}

/// Tags after a configuration reload (SIGHUP), as Dkron does it: the user's tags from the new
/// configuration, the reserved ones (`role`, `version`, `server`, `bootstrap`, `expect`, `port`,
/// `rpc_addr`) kept from `current`, and `dc` and `region` from the new configuration.
pub fn reloaded_tags(
    current: &BTreeMap<String, String>,
    config: &AgentConfig,
) -> BTreeMap<String, String> {
    const RESERVED: [&str; 7] = [
        "role",
        "version",
        "server",
        "bootstrap",
        "expect",
        "port",
        "rpc_addr",
    ];
    let mut tags = config.tags.clone();
    for key in RESERVED {
        match current.get(key) {
            Some(v) => tags.insert(key.to_string(), v.clone()),
            None => tags.remove(key),
        };
    }
    tags.insert("dc".into(), config.datacenter.clone());
    tags.insert("region".into(), config.region.clone());
    tags
}

/// Gossips this node's tags as a reloaded configuration has them.
pub async fn reload_tags(gossip: &Membership, config: &AgentConfig) -> anyhow::Result<()> {
    let current = gossip
        .members()
        .into_iter()
        .find(|m| m.name == config.node_name)
        .map(|m| m.tags)
        .context("this node is missing from its own member list")?;
    let tags = reloaded_tags(&current, config);
    gossip
        .set_tags(tags)
        .await
        .map_err(|e| anyhow::anyhow!("cannot gossip the new tags: {e:?}"))
}

/// Logs how a SIGHUP reload went.
pub fn log_reload(result: anyhow::Result<()>) {
    match result {
        Ok(()) => info!(
            "SIGHUP: configuration reloaded (tags and notification settings; other settings need a restart)"
        ),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "SIGHUP: could not reload the configuration; the current one stays. Fix the file and send SIGHUP again")
        }
    }
}

/// Starts gossip on `bind-addr` with this node's tags.
pub async fn start_gossip(config: &AgentConfig, rpc_port: u16) -> anyhow::Result<Membership> {
    let bind = config.gossip_bind()?;
    // Advertise the bind port (Dkron always advertised 8946, even when bound elsewhere).
    let advertise = (bind.ip().is_unspecified() || !config.advertise_addr.is_empty())
        .then(|| SocketAddr::new(config.advertise_ip(), bind.port()));
    let keyring = if config.encrypt.is_empty() {
        None
    } else {
        Some(Keyring::from_base64(&config.encrypt).context("invalid --encrypt key")?)
    };
    let profile = match config.profile.as_str() {
        "wan" => Profile::Wan,
        "local" => Profile::Local,
        _ => Profile::Lan,
    };
    let gossip = GossipConfig {
        name: config.node_name.clone(),
        bind,
        advertise,
        tags: node_tags(config, rpc_port),
        keyring,
        profile,
    };
    let membership = Membership::start(gossip)
        .await
        .with_context(|| format!("starting gossip on {bind} (bind-addr)"))?;
    let advertised = membership.advertise_addr();
    if advertised.ip().is_loopback() && !bind.ip().is_loopback() {
        warn!(advertise = %advertised, "advertising a loopback address: other hosts cannot reach this node; set --advertise-addr");
    } else {
        info!(advertise = %advertised, "gossip address other nodes use");
    }
    Ok(membership)
}

/// Resolves `host[:port]` entries (port 8946 by default), each time it is called, so a
/// retry-join follows DNS changes.
pub async fn resolve(entries: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for entry in entries {
        let target = if entry
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            entry.clone()
        } else {
            format!("{entry}:8946")
        };
        match tokio::net::lookup_host(&target).await {
            Ok(addrs) => out.extend(addrs.filter(|a| a.is_ipv4())),
            Err(e) => warn!(address = %entry, error = %e, "cannot resolve a join address yet"),
        }
    }
    out
}

const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `--join`: one attempt at each address; failure only warns (Dkron's behaviour).
pub async fn join_once(gossip: &Membership, entries: &[String]) {
    if entries.is_empty() {
        return;
    }
    let addrs = resolve(entries).await;
    match gossip.join(&addrs, JOIN_TIMEOUT).await {
        Ok(n) if n > 0 => info!(joined = n, "joined the cluster"),
        _ => {
            warn!(addresses = ?entries, "could not join any of the --join addresses; check they are reachable and use the same --encrypt key")
        }
    }
}

/// `--retry-join`: tries every `interval` until one address answers. After `max` failed
/// attempts (0 = never) it returns an error that says what to check.
pub async fn retry_join(
    gossip: &Membership,
    entries: &[String],
    interval: Duration,
    max: u32,
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let addrs = resolve(entries).await;
        if !addrs.is_empty()
            && let Ok(n) = gossip.join(&addrs, JOIN_TIMEOUT).await
            && n > 0
        {
            info!(joined = n, attempt, "joined the cluster");
            return Ok(());
        }
        if max > 0 && attempt >= max {
            anyhow::bail!(
                "retry-join gave up after {attempt} attempts: none of {entries:?} answered; check that they are running, reachable on the gossip port (UDP) and use the same --encrypt key"
            );
        }
        warn!(attempt, addresses = ?entries, retry_in_s = interval.as_secs_f64(), "retry-join: no member answered yet");
        tokio::time::sleep(interval).await;
    }
}

/// Alive servers of this node's region, by name, with their RPC address.
fn alive_servers(node: &Node) -> BTreeMap<String, String> {
    node.gossip
        .members()
        .into_iter()
        .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
        .filter(|m| m.tags.get("server").map(String::as_str) == Some("true"))
        .filter(|m| m.tags.get("region") == Some(&node.config.region))
        .filter_map(|m| Some((m.name.clone(), m.tags.get("rpc_addr")?.clone())))
        .collect()
}

/// `--bootstrap-expect=N` (N > 1): once N servers see each other and none of them is part
/// of a Raft group yet, every one of them initialises Raft with the same N members
/// (identical proposals are safe; the later ones are refused as already initialised).
pub async fn bootstrap_when_expected(node: Arc<Node>) {
    let expect = node.config.bootstrap_expect as usize;
    let mut changes = node.gossip.subscribe();
    loop {
        if node.raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        let members = node.gossip.members();
        // A server in single-server bootstrap mode (expect=1) owns the cluster: join it.
        let bootstrapper = members.iter().any(|m| {
            m.name != node.name()
                && m.tags.get("server").map(String::as_str) == Some("true")
                && m.tags.get("expect").map(String::as_str) == Some("1")
        });
        let servers = alive_servers(&node);
        if !bootstrapper && servers.len() >= expect && peers_uninitialised(&node, &servers).await {
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
            match node.raft.initialize(group).await {
                Ok(()) => {
                    info!(servers = ?servers.keys().collect::<Vec<_>>(), "bootstrapped the cluster")
                }
                Err(e) => {
                    info!(reason = %e, "bootstrap not needed: another server initialised the cluster")
                }
            }
            return;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Asks each server whether it already belongs to a Raft group.
async fn peers_uninitialised(node: &Node, servers: &BTreeMap<String, String>) -> bool {
    for (name, rpc) in servers {
        if name == node.name() {
            continue;
        }
        let answer = node
            .client
            .get(format!("http://{rpc}/rpc/raft-state"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match answer {
            Ok(r) => match r.json::<serde_json::Value>().await {
                Ok(v) if v["initialized"] == serde_json::json!(false) => {}
                _ => return false,
            },
            Err(_) => return false,
        }
    }
    true
}

/// On the leader: admits alive servers that are not in the Raft group yet, removes servers
/// that left gracefully, and removes servers that stayed failed longer than
/// `serf-reconnect-timeout`. Runs on every membership change and every few seconds.
pub async fn reconcile(node: Arc<Node>) {
    let mut changes = node.gossip.subscribe();
    let reconnect_timeout = node
        .config
        .reconnect_timeout()
        .unwrap_or(Duration::from_secs(24 * 3600));
    // When this leader first saw each voter failed (or gone from gossip).
    let mut failed_since: HashMap<NodeId, Instant> = HashMap::new();
    loop {
        if node.is_leader() {
            reconcile_once(&node, &mut failed_since, reconnect_timeout).await;
        } else {
            failed_since.clear();
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn reconcile_once(
    node: &Node,
    failed_since: &mut HashMap<NodeId, Instant>,
    reconnect_timeout: Duration,
) {
    let membership = node.raft.metrics().borrow().membership_config.clone();
    let in_group: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
    for (name, rpc) in alive_servers(node) {
        if in_group.contains(&node_id_for(&name)) {
            continue;
        }
        if let Err(e) = node.add_server(&name, &rpc).await {
            warn!(server = %name, error = %format!("{e:#}"), "could not add a server to the Raft group; will retry");
        }
    }
    let status: HashMap<NodeId, MemberStatus> = node
        .gossip
        .members()
        .into_iter()
        .map(|m| (node_id_for(&m.name), m.status))
        .collect();
    let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
    let now = Instant::now();
    let mut remove = BTreeSet::new();
    for id in voters.iter().filter(|id| **id != node.id) {
        match status.get(id) {
            Some(MemberStatus::Alive | MemberStatus::Suspect) => {
                failed_since.remove(id);
            }
            Some(MemberStatus::Left) => {
                remove.insert(*id);
            }
            // Failed, or forgotten by gossip altogether.
            Some(MemberStatus::Failed) | None => {
                let since = *failed_since.entry(*id).or_insert(now);
                if now.duration_since(since) >= reconnect_timeout {
                    let name = membership
                        .nodes()
                        .find(|(n, _)| *n == id)
                        .map(|(_, s)| s.name.clone())
                        .unwrap_or_default();
                    warn!(
                        server = %name,
                        unreachable_for_s = now.duration_since(since).as_secs(),
                        "removing a failed server from the Raft group (serf-reconnect-timeout); it is added back if it returns"
                    );
                    remove.insert(*id);
                }
            }
        }
    }
    failed_since.retain(|id, _| voters.contains(id));
    let remaining: BTreeSet<NodeId> = voters.difference(&remove).copied().collect();
    if !remove.is_empty() && !remaining.is_empty() {
        match node.raft.change_membership(remaining, false).await {
            Ok(_) => {
                info!(
                    removed = remove.len(),
                    "removed departed or failed servers from the Raft group"
                );
                for id in &remove {
                    failed_since.remove(id);
                }
            }
            Err(e) => {
                warn!(error = %e, "could not remove departed servers from the Raft group; will retry")
            }
        }
    }
}
