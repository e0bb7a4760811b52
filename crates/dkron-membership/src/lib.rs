//! Cluster membership for dkron-rs: what Serf gives Go Dkron — join through any
//! member, per-node tags, alive / suspect / left / failed member states and an
//! optional shared `--encrypt` key — built on the SWIM implementation in
//! [`foca`] driven by our own tokio UDP runtime ([`Membership`]).
//!
//! Wire compatibility with Serf/memberlist is a non-goal (see the stack note);
//! behaviour compatibility is the goal. Every datagram travels in a small
//! versioned envelope, AES-GCM sealed when a [`Keyring`] is configured.
//!
//! How member states are decided:
//! * `Alive` / `Suspect` come straight from foca's member state.
//! * A node leaving gracefully first switches to an identity flagged `leaving`
//!   (foca `change_identity`), then declares that identity down
//!   (`leave_cluster`). Peers therefore see a Down member whose identity carries
//!   the flag and show it as `Left`.
//! * A member foca declares Down without that flag (failed probes, suspicion
//!   timeout) is `Failed`. A peer that missed both leave datagrams (UDP loss)
//!   only learns of the departure through failure detection and shows `Failed`,
//!   as Serf does when a leave intent does not propagate.
//!
//! Down members stay listed until foca forgets them (`remove_down_after` of the
//! profile), one entry per gossip address, so the list is bounded.

mod identity;
mod keyring;
mod runtime;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use keyring::{KeyError, Keyring, generate_key};
pub use runtime::Membership;

/// Largest UDP datagram we put on the wire: the stack note's 1400-byte budget,
/// which keeps gossip below a typical 1500-byte MTU.
pub const MAX_DATAGRAM: usize = 1400;

/// Largest encoded identity (name, address, tags) a node may gossip. A foca
/// packet carries up to three identities in its header (source, destination,
/// probe target) plus at least one member update, so four must fit in a packet.
pub const MAX_IDENTITY_BYTES: usize = 320;

/// Foca's packet budget: the datagram limit minus the encryption envelope.
const FOCA_MAX_PACKET: usize = MAX_DATAGRAM - keyring::ENVELOPE_OVERHEAD;

/// Configuration of one gossip member.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node name, unique in the cluster (`--node-name`).
    pub name: String,
    /// UDP address to bind (`--bind-addr`); port 0 picks a free port.
    pub bind: SocketAddr,
    /// Address other nodes use to reach us; defaults to the bound address, and
    /// must be set when binding to an unspecified IP such as `0.0.0.0`.
    pub advertise: Option<SocketAddr>,
    /// Node tags, gossiped with the identity.
    pub tags: BTreeMap<String, String>,
    /// Gossip encryption; `None` sends plaintext.
    pub keyring: Option<Keyring>,
    /// Timing preset.
    pub profile: Profile,
    /// Seeds the identity's `bump`: a restarted node must start above any bump its previous
    /// run reached, so it wins the address conflict. The caller passes its wall clock in
    /// milliseconds (this crate reads no clock of its own).
    pub incarnation: u64,
}

impl Config {
    /// Config with no tags, no encryption and the LAN profile.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Config {
        Config {
            name: name.into(),
            bind,
            advertise: None,
            tags: BTreeMap::new(),
            keyring: None,
            profile: Profile::default(),
            incarnation: 0,
        }
    }
}

/// Timing presets, named after Serf's `--profile` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// foca's LAN preset (memberlist DefaultLANConfig-like): probe every 1 s,
    /// 500 ms probe RTT, suspicion ≈ 4–5 s for small clusters.
    #[default]
    Lan,
    /// foca's WAN preset: probe every 5 s, 3 s RTT, suspicion ≈ 36 s.
    Wan,
    /// Fast loopback timing for tests and single-host clusters: probe every
    /// 300 ms, 100 ms RTT, suspect → down after 1 s.
    Local,
}

impl Profile {
    /// The foca configuration this profile stands for.
    fn foca_config(self) -> foca::Config {
        // Sized for Dkron clusters of a few dozen nodes; only affects how often
        // updates are retransmitted and how long suspicion lasts.
        let expected_size = NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN);
        let mut config = match self {
            Profile::Lan => foca::Config::new_lan(expected_size),
            Profile::Wan => foca::Config::new_wan(expected_size),
            Profile::Local => {
                let mut c = foca::Config::new_lan(expected_size);
                c.probe_period = Duration::from_millis(300);
                c.probe_rtt = Duration::from_millis(100);
                c.suspect_to_down_after = Duration::from_secs(1);
                c.max_transmissions = NonZeroU8::new(8).unwrap_or(NonZeroU8::MIN);
                c.remove_down_after = Some(Duration::from_secs(60 * 60));
                c.periodic_announce = Some(foca::PeriodicParams {
                    frequency: Duration::from_secs(1),
                    num_members: NonZeroUsize::MIN,
                });
                c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
                    frequency: Duration::from_secs(5),
                    num_members: NonZeroUsize::MIN,
                });
                c.periodic_gossip = Some(foca::PeriodicParams {
                    frequency: Duration::from_millis(100),
                    num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
                });
                c
            }
        };
        config.max_packet_size = NonZeroUsize::new(FOCA_MAX_PACKET).unwrap_or(NonZeroUsize::MIN);
        if self == Profile::Lan {
            // foca's LAN default announces to down members every 65 s, so a partition
            // that heals stays visible for up to a minute; every 5 s costs one datagram.
            config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
                frequency: Duration::from_secs(5),
                num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            });
        }
        config
    }
}

/// Member status as Serf reports it (`statusText` in `/v1/members`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Answering probes.
    Alive,
    /// Missed probes; will become `Failed` unless it refutes in time.
    Suspect,
    /// Left the cluster gracefully.
    Left,
    /// Declared down by the cluster without having left.
    Failed,
}

impl MemberStatus {
    /// Lowercase name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cluster member as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Advertised gossip address.
    pub addr: SocketAddr,
    /// Node tags.
    pub tags: BTreeMap<String, String>,
    /// Current status.
    pub status: MemberStatus,
}

/// Counters of this node's gossip: datagrams it refused, and the failure-detection rounds
/// it ran (so a test can await "several probe periods" instead of sleeping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams that failed authentication / decryption, or whose encryption
    /// mode (plaintext vs encrypted) does not match ours.
    pub decrypt_failures: u64,
    /// Datagrams that are not gossip at all (bad envelope, oversize) or that
    /// foca could not decode.
    pub malformed: u64,
    /// SWIM probe rounds run (one per probe period while there are members to probe).
    pub probe_rounds: u64,
}

/// Why [`Membership::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Empty node name.
    #[error("node name must not be empty")]
    EmptyName,
    /// The UDP socket could not be bound.
    #[error("cannot bind gossip socket {addr}: {source}")]
    Bind {
        /// Requested bind address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The address to advertise is not reachable by others.
    #[error(
        "cannot advertise gossip address {0}: set an advertise address with a \
         concrete IP and port when binding to 0.0.0.0 / [::]"
    )]
    Advertise(SocketAddr),
    /// Name and tags do not fit in a gossip packet.
    #[error(
        "node identity (name, address and tags) encodes to {size} bytes but at most \
         {max} fit in a {packet}-byte gossip packet: shorten the node name or use \
         fewer / shorter tags"
    )]
    IdentityTooLarge {
        /// Encoded size.
        size: usize,
        /// Limit ([`MAX_IDENTITY_BYTES`]).
        max: usize,
        /// Datagram budget ([`MAX_DATAGRAM`]).
        packet: usize,
    },
}

/// Why [`Membership::join`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The membership task has stopped (after `leave` or `shutdown`).
    #[error("gossip membership has stopped; cannot join")]
    Stopped,
}

/// Why [`Membership::set_tags`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetTagsError {
    /// The membership task has stopped.
    #[error("gossip membership has stopped; cannot change tags")]
    Stopped,
    /// Name and new tags do not fit in a gossip packet.
    #[error(
        "node identity with these tags encodes to {size} bytes but at most {max} fit \
         in a gossip packet: use fewer / shorter tags"
    )]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Limit ([`MAX_IDENTITY_BYTES`]).
        max: usize,
    },
    /// foca refused the identity change.
    #[error("gossip refused the tag change: {0}")]
    Gossip(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&MemberStatus::Failed).unwrap(),
            "\"failed\""
        );
        assert_eq!(MemberStatus::Suspect.to_string(), "suspect");
    }

    #[test]
    fn profiles_fit_the_packet_budget() {
        for profile in [Profile::Lan, Profile::Wan, Profile::Local] {
            let c = profile.foca_config();
            assert_eq!(
                c.max_packet_size.get() + keyring::ENVELOPE_OVERHEAD,
                MAX_DATAGRAM
            );
            assert!(c.probe_rtt < c.probe_period);
        }
    }
}
