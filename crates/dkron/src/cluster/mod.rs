//! Who is in the cluster. Gossip (`dkron-membership`, SWIM) says which nodes exist, where and
//! with which tags; this module turns that into:
//! - the [`Members`] handle: the member list for the API, the candidates placement picks
//!   from (minus nodes that just refused a connection), where each node's RPC port is;
//! - joining (`join.rs`: `--join` once, `--retry-join` until it works or `--retry-max` runs
//!   out);
//! - Raft bootstrap once `--bootstrap-expect` servers see each other (`bootstrap.rs`);
//! - on the leader, admission of new servers into Raft and removal of servers that left or
//!   stayed failed longer than `--serf-reconnect-timeout` (`reconcile.rs`).
//!
//! Tags and the gossip member itself: `gossip.rs`.

mod bootstrap;
mod gossip;
mod join;
mod reconcile;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use dkron_core::placement::Candidate;
use dkron_membership::{Member, MemberStatus, Membership, SetTagsError, Stats};
use tokio::sync::watch;
use tokio::time::Instant;

pub use bootstrap::{Bootstrap, BootstrapStatus};
pub use gossip::{node_tags, reloaded_tags};
pub use reconcile::Reconcile;

use crate::clock::SharedClock;
use crate::config::AgentConfig;
use crate::shutdown::Shutdown;

/// How long placement skips a node that refused a run order's connection: gossip takes
/// seconds to declare a dead node failed, and every run sent to it meanwhile would be lost.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// The cluster's members as this node sees them (clones share everything).
#[derive(Clone)]
pub struct Members {
    gossip: Membership,
    me: String,
    region: String,
    /// This node's tags at start (gossip lists them, this is the answer if it ever does not).
    start_tags: BTreeMap<String, String>,
    clock: SharedClock,
    /// Nodes placement skips for a while, and since when.
    skipped: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Members {
    /// Starts gossip on `bind-addr` with this node's tags and joins `--join` once.
    pub async fn start(
        config: &AgentConfig,
        rpc_port: u16,
        clock: SharedClock,
    ) -> anyhow::Result<Members> {
        let incarnation = u64::try_from(clock.now().as_millisecond()).unwrap_or(0);
        let gossip = gossip::start(config, rpc_port, incarnation).await?;
        join::join_once(&gossip, &config.join).await;
        Ok(Members {
            gossip,
            me: config.node_name.clone(),
            region: config.region.clone(),
            start_tags: node_tags(config, rpc_port),
            clock,
            skipped: Arc::default(),
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.me
    }

    /// Every member gossip knows, with its status.
    pub fn all(&self) -> Vec<Member> {
        self.gossip.members()
    }

    /// The members jobs may be placed on: alive (or suspect) and not skipped for having
    /// just refused a connection.
    pub fn candidates(&self) -> Vec<Candidate> {
        let now = self.clock.instant();
        let mut skipped = self.skipped.lock().expect("skipped lock");
        skipped.retain(|_, since| now.saturating_duration_since(*since) < UNREACHABLE_FOR);
        self.all()
            .into_iter()
            .map(|m| Candidate {
                alive: matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect)
                    && !skipped.contains_key(&m.name),
                name: m.name,
                tags: m.tags,
            })
            .collect()
    }

    /// Where a member's RPC port is (its `rpc_addr` tag), if it may be placed on.
    pub fn rpc_addr(&self, name: &str) -> Option<String> {
        self.gossip.with_members(|all| {
            all.iter()
                .find(|m| m.name == name)
                .and_then(|m| m.tags.get("rpc_addr").cloned())
        })
    }

    /// Alive servers of this node's region, by name, with their RPC address.
    pub fn alive_servers(&self) -> BTreeMap<String, String> {
        self.all()
            .into_iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .filter(|m| m.tags.get("server").map(String::as_str) == Some("true"))
            .filter(|m| m.tags.get("region") == Some(&self.region))
            .filter_map(|m| Some((m.name.clone(), m.tags.get("rpc_addr")?.clone())))
            .collect()
    }

    /// A node refused a run order's connection: placement skips it for [`UNREACHABLE_FOR`].
    pub fn mark_unreachable(&self, name: &str) {
        tracing::warn!(node = %name, "node unreachable: placement skips it for a while");
        self.skip_in_placement(name);
    }

    /// Placement skips `name` for [`UNREACHABLE_FOR`] (a new leader does so for the previous
    /// one, which is dead or cut off when it loses leadership without handing it over).
    pub fn skip_in_placement(&self, name: &str) {
        self.skipped
            .lock()
            .expect("skipped lock")
            .insert(name.to_string(), self.clock.instant());
    }

    /// This node's tags as gossiped.
    pub fn my_tags(&self) -> BTreeMap<String, String> {
        self.all()
            .into_iter()
            .find(|m| m.name == self.me)
            .map_or_else(|| self.start_tags.clone(), |m| m.tags)
    }

    /// Gossips new tags for this node.
    pub async fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), SetTagsError> {
        self.gossip.set_tags(tags).await
    }

    /// SIGHUP, as in Dkron: the user's tags of a re-read configuration, the reserved ones kept,
    /// `dc` and `region` re-set.
    pub async fn reload_tags(&self, config: &AgentConfig) -> anyhow::Result<()> {
        let current = self
            .all()
            .into_iter()
            .find(|m| m.name == self.me)
            .map(|m| m.tags)
            .context("this node is missing from its own member list")?;
        self.set_tags(reloaded_tags(&current, config))
            .await
            .map_err(|e| anyhow::anyhow!("cannot gossip the new tags: {e:?}"))
    }

    /// Member list changes.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Member>> {
        self.gossip.subscribe()
    }

    /// The gossip address other nodes reach this one at.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.gossip.advertise_addr()
    }

    /// Datagrams this node refused (wrong key, garbage).
    pub fn stats(&self) -> Stats {
        self.gossip.stats()
    }

    /// Leaves gracefully: the others see this node as left.
    pub async fn leave(&self) {
        self.gossip.leave().await
    }

    /// Stops gossiping without a goodbye: the others see this node as failed.
    pub async fn shutdown(&self) {
        self.gossip.shutdown().await
    }
}

/// `--retry-join`: tries every `--retry-interval` until an address answers; after
/// `--retry-max` failed attempts the node stops with an error that says what to check.
pub struct RetryJoin {
    pub members: Members,
    pub addresses: Vec<String>,
    pub interval: Duration,
    pub max: u32,
}

impl RetryJoin {
    pub fn from_config(members: Members, config: &AgentConfig) -> Option<RetryJoin> {
        (!config.retry_join.is_empty()).then(|| RetryJoin {
            members,
            addresses: config.retry_join.clone(),
            interval: dkron_core::godur::parse_go_duration(&config.retry_interval)
                .unwrap_or(Duration::from_secs(30)),
            max: config.retry_max,
        })
    }

    pub async fn run(self, shutdown: Shutdown) {
        let joined = join::retry_join(
            &self.members.gossip,
            &self.addresses,
            self.interval,
            self.max,
        );
        tokio::select! {
            joined = joined => {
                if let Err(e) = joined {
                    shutdown.fail(format!("{e:#}"));
                }
            }
            () = shutdown.requested() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--retry-join` against an address that never answers, with Dkron's 30 s interval:
    /// after `--retry-max` attempts the node is stopped with an error that says what to
    /// check. Timer-driven, so it runs on paused time.
    #[tokio::test(start_paused = true)]
    async fn retry_join_gives_up_after_retry_max_and_stops_the_node() {
        let config = AgentConfig {
            node_name: "lonely".into(),
            bind_addr: "127.0.0.1:0".into(),
            ..AgentConfig::default()
        };
        let members = Members::start(&config, 6868, crate::clock::system())
            .await
            .unwrap();
        let shutdown = Shutdown::default();
        let started = crate::clock::monotonic();
        RetryJoin {
            members: members.clone(),
            addresses: vec!["127.0.0.1:9".into()],
            interval: Duration::from_secs(30),
            max: 3,
        }
        .run(shutdown.clone())
        .await;
        assert!(shutdown.is_requested());
        let failure = shutdown.failure().expect("the node stops with an error");
        assert!(failure.contains("gave up after 3 attempts"), "{failure}");
        assert!(
            failure.contains("--encrypt"),
            "says what to check: {failure}"
        );
        // Three attempts, 30 s apart.
        assert!(crate::clock::since(started) >= Duration::from_secs(60));
        members.shutdown().await;
    }

    /// A node that refused a connection is skipped for ten seconds, then placed on again
    /// (paused time: only the test moves the clock).
    #[tokio::test(start_paused = true)]
    async fn placement_skips_an_unreachable_node_for_a_while() {
        let clock = crate::clock::ManualClock::starting_at("2026-01-01T00:00:00Z".parse().unwrap());
        let config = AgentConfig {
            node_name: "n1".into(),
            bind_addr: "127.0.0.1:0".into(),
            ..AgentConfig::default()
        };
        let members = Members::start(&config, 6868, clock.clone()).await.unwrap();
        let alive = |m: &Members| m.candidates().iter().any(|c| c.name == "n1" && c.alive);
        assert!(alive(&members));
        members.mark_unreachable("n1");
        assert!(!alive(&members));
        clock.advance(UNREACHABLE_FOR - Duration::from_millis(1));
        assert!(!alive(&members), "still skipped just before the time is up");
        clock.advance(Duration::from_millis(1));
        assert!(alive(&members), "placed on again after {UNREACHABLE_FOR:?}");
        members.shutdown().await;
    }
}
