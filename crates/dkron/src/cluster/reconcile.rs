//! On the leader: admits alive servers that are not in the Raft group yet, removes servers
//! that left gracefully, and removes servers that stayed failed longer than
//! `--serf-reconnect-timeout`. Runs on every membership change and every few seconds.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use dkron_membership::MemberStatus;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Members;
use crate::clock::SharedClock;
use crate::raft::{Leadership, NodeId, Voters, node_id_for};
use crate::shutdown::Shutdown;

/// The reconcile task of a server.
pub struct Reconcile {
    pub members: Members,
    pub voters: Voters,
    pub leadership: Leadership,
    pub clock: SharedClock,
    pub reconnect_timeout: Duration,
}

/// Why a voter leaves the Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    Left,
    /// Failed (or forgotten by gossip) for this long, beyond the reconnect timeout.
    FailedFor(Duration),
}

/// Which voters (other than `me`) leave the group: those gossip shows as left, and those
/// failed or unknown to gossip since at least `timeout` ago. `failed_since` remembers when
/// each failure was first seen; it is updated here.
fn departures(
    voters: &BTreeSet<NodeId>,
    me: NodeId,
    status: &HashMap<NodeId, MemberStatus>,
    failed_since: &mut HashMap<NodeId, Instant>,
    now: Instant,
    timeout: Duration,
) -> Vec<(NodeId, Departure)> {
    let mut out = Vec::new();
    for id in voters.iter().filter(|id| **id != me) {
        match status.get(id) {
            Some(MemberStatus::Alive | MemberStatus::Suspect) => {
                failed_since.remove(id);
            }
            Some(MemberStatus::Left) => out.push((*id, Departure::Left)),
            Some(MemberStatus::Failed) | None => {
                let since = *failed_since.entry(*id).or_insert(now);
                let failed_for = now.saturating_duration_since(since);
                if failed_for >= timeout {
                    out.push((*id, Departure::FailedFor(failed_for)));
                }
            }
        }
    }
    failed_since.retain(|id, _| voters.contains(id));
    out
}

impl Reconcile {
    pub async fn run(self, shutdown: Shutdown) {
        let mut changes = self.members.subscribe();
        // When this leader first saw each voter failed (or gone from gossip).
        let mut failed_since: HashMap<NodeId, Instant> = HashMap::new();
        loop {
            if self.leadership.is_leader() {
                self.once(&mut failed_since).await;
            } else {
                failed_since.clear();
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                () = shutdown.requested() => return,
            }
        }
    }

    async fn once(&self, failed_since: &mut HashMap<NodeId, Instant>) {
        let in_group = self.voters.servers();
        for (name, rpc) in self.members.alive_servers() {
            if in_group.contains_key(&node_id_for(&name)) {
                continue;
            }
            if let Err(e) = self.voters.add_server(&name, &rpc).await {
                warn!(server = %name, error = %format!("{e:#}"), "could not add a server to the Raft group; will retry");
            }
        }
        let status: HashMap<NodeId, MemberStatus> = self
            .members
            .all()
            .into_iter()
            .map(|m| (node_id_for(&m.name), m.status))
            .collect();
        let voters = self.voters.ids();
        let leaving = departures(
            &voters,
            self.voters.me(),
            &status,
            failed_since,
            self.clock.instant(),
            self.reconnect_timeout,
        );
        for (id, why) in &leaving {
            if let Departure::FailedFor(d) = why {
                let name = in_group.get(id).map(|s| s.name.clone()).unwrap_or_default();
                warn!(
                    server = %name,
                    unreachable_for_s = d.as_secs(),
                    "removing a failed server from the Raft group (serf-reconnect-timeout); it is added back if it returns"
                );
            }
        }
        let remove: BTreeSet<NodeId> = leaving.iter().map(|(id, _)| *id).collect();
        let remaining: BTreeSet<NodeId> = voters.difference(&remove).copied().collect();
        if remove.is_empty() || remaining.is_empty() {
            return;
        }
        match self.voters.set(remaining).await {
            Ok(()) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_left_server_goes_at_once_and_a_failed_one_after_the_timeout() {
        let (me, left, failed, alive) = (1, 2, 3, 4);
        let voters = BTreeSet::from([me, left, failed, alive]);
        let status = HashMap::from([
            (left, MemberStatus::Left),
            (failed, MemberStatus::Failed),
            (alive, MemberStatus::Alive),
        ]);
        let timeout = Duration::from_secs(60);
        let t0 = crate::clock::monotonic();
        let mut since = HashMap::new();
        let first = departures(&voters, me, &status, &mut since, t0, timeout);
        assert_eq!(first, [(left, Departure::Left)]);
        let before = departures(
            &voters,
            me,
            &status,
            &mut since,
            t0 + Duration::from_secs(59),
            timeout,
        );
        assert_eq!(
            before,
            [(left, Departure::Left)],
            "not yet: failed for 59 s"
        );
        let after = departures(&voters, me, &status, &mut since, t0 + timeout, timeout);
        assert_eq!(
            after,
            [
                (left, Departure::Left),
                (failed, Departure::FailedFor(timeout))
            ]
        );
    }

    #[test]
    fn a_server_that_comes_back_starts_its_clock_again() {
        let (me, flappy) = (1, 2);
        let voters = BTreeSet::from([me, flappy]);
        let timeout = Duration::from_secs(60);
        let t0 = crate::clock::monotonic();
        let mut since = HashMap::new();
        let failed = HashMap::from([(flappy, MemberStatus::Failed)]);
        let back = HashMap::from([(flappy, MemberStatus::Alive)]);
        departures(&voters, me, &failed, &mut since, t0, timeout);
        departures(
            &voters,
            me,
            &back,
            &mut since,
            t0 + Duration::from_secs(30),
            timeout,
        );
        let again = departures(
            &voters,
            me,
            &failed,
            &mut since,
            t0 + Duration::from_secs(70),
            timeout,
        );
        assert!(
            again.is_empty(),
            "failed again for 0 s, not 70 s: {again:?}"
        );
        // Unknown to gossip counts as failed, from when it was first missed.
        let gone = departures(
            &voters,
            me,
            &HashMap::new(),
            &mut since,
            t0 + Duration::from_secs(130),
            timeout,
        );
        assert_eq!(gone, [(flappy, Departure::FailedFor(timeout))]);
        // This server never removes itself.
        assert!(
            departures(
                &BTreeSet::from([me]),
                me,
                &HashMap::new(),
                &mut since,
                t0,
                timeout
            )
            .is_empty()
        );
    }
}
