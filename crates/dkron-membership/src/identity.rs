//! The identity every node gossips about itself: name, gossip address, tags, a
//! bump counter and a "leaving" flag. Tags travel inside the identity, so a tag
//! change is an identity change (foca `change_identity`) that the cluster sees as a
//! rename of the member at the same address.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use foca::Codec as _;
use serde::{Deserialize, Serialize};

/// A node's gossip identity.
///
/// Foca keeps one entry per [`foca::Identity::addr`] (the gossip socket address);
/// when two identities share it the one with the larger `bump` wins. A fresh
/// process seeds `bump` with the wall clock in milliseconds (`Config::incarnation`, read by
/// the caller) and every renewal or
/// tag change adds one, so a restarted node replaces whatever identity its
/// previous run left behind. (A `u16` counter would wrap within hours, and peers
/// remember Down identities for up to a day, so a restart could lose the
/// conflict; a `u64` costs a few bytes more per identity.)
///
/// `leaving` is set on the identity a node switches to right before a graceful
/// leave: a member that goes Down with `leaving == true` is shown as Left, any
/// other Down member as Failed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeId {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) bump: u64,
    pub(crate) leaving: bool,
}

impl fmt::Debug for NodeId {
    // Tags are noise in foca's traces; name@addr#bump identifies the member.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.bump)?;
        if self.leaving {
            f.write_str("(leaving)")?;
        }
        Ok(())
    }
}

impl NodeId {
    /// Placeholder identity used only to address an `Announce` to a socket address
    /// whose real identity we do not know yet; foca accepts an Announce whose
    /// destination has the receiver's address.
    pub(crate) fn probe_target(addr: SocketAddr) -> NodeId {
        NodeId {
            name: String::new(),
            addr,
            tags: BTreeMap::new(),
            bump: 0,
            leaving: false,
        }
    }

    /// The same node with a newer bump, so it wins over `self` at the same address.
    pub(crate) fn bumped(&self) -> NodeId {
        NodeId {
            bump: self.bump.saturating_add(1),
            ..self.clone()
        }
    }

    /// Size of this identity as foca encodes it inside a member update.
    pub(crate) fn encoded_len(&self) -> usize {
        let mut buf: Vec<u8> = Vec::new();
        match foca::PostcardCodec.encode_member(&foca::Member::alive(self.clone()), &mut buf) {
            Ok(()) => buf.len(),
            // Encoding into a Vec cannot run out of space; treat failure as "too big".
            Err(_) => usize::MAX,
        }
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    /// Lets foca rejoin on its own after the cluster wrongly declared us down. A
    /// leaving node must stay gone, so it never renews.
    fn renew(&self) -> Option<Self> {
        if self.leaving {
            None
        } else {
            Some(self.bumped())
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity as _;

    fn id(bump: u64) -> NodeId {
        NodeId {
            name: "n".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            tags: BTreeMap::new(),
            bump,
            leaving: false,
        }
    }

    #[test]
    fn newer_bump_wins() {
        assert!(id(5).win_addr_conflict(&id(4)));
        assert!(!id(4).win_addr_conflict(&id(5)));
        assert!(!id(4).win_addr_conflict(&id(4)));
        assert!(id(9).renew().unwrap().win_addr_conflict(&id(9)));
    }

    #[test]
    fn leaving_identity_does_not_renew() {
        let mut leaving = id(1);
        leaving.leaving = true;
        assert!(leaving.renew().is_none());
    }
}
