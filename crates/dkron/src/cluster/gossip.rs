//! Gossip wiring: this node's tags (Dkron's built-in ones plus the user's, re-read on
//! SIGHUP) and starting the SWIM member on `bind-addr`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
use dkron_membership::{Config as GossipConfig, Keyring, Membership, Profile};
use tracing::{info, warn};

use crate::config::AgentConfig;

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

/// Starts gossip on `bind-addr` with this node's tags.
pub async fn start(
    config: &AgentConfig,
    rpc_port: u16,
    incarnation: u64,
) -> anyhow::Result<Membership> {
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
        incarnation,
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
