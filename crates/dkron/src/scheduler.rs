//! The leader-only scheduler: keeps every job's next fire time in an ordered queue and starts
//! the runs when they are due. It starts when this node becomes leader (after its state
//! machine has caught up) and stops as soon as leadership is lost.
//!
//! Occurrences are claimed ahead of time: a job whose concurrency is `allow` is claimed
//! [`CLAIM_AHEAD`] before its nominal time and its run then starts exactly on time, so the
//! consensus round trip is not part of its lateness. Everything claimable at the same
//! moment goes into one log entry, so a thousand jobs on `* * * * * *` cost one consensus
//! round per second, not a thousand. A `forbid` job is claimed only when due, because the
//! run before it may still finish in between.
//!
//! Each claim goes through the fire ledger in the replicated state (`fired_through` per job),
//! so the queue starts from the ledger, not from "now": occurrences that fell due while no
//! leader existed (a failover, a restart) are fired late, once each, in order. Before that,
//! each job's catch-up policy (`catchup`, `catchup_deadline`) decides which of them not to run,
//! and those are recorded as skipped (`SkipOccurrences`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use dkron_core::command::Command;
use dkron_core::occurrence::plan_catch_up;

use crate::node::Node;
use crate::raft::ServerNode;
use crate::runner::{Occurrence, Trigger, claim_occurrences, plan_trigger};

pub async fn run(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    loop {
        // The last other server seen leading: when this node takes over, it is dead, cut off
        // or leaving, and gossip may take seconds to say so.
        let mut previous: Option<String> = None;
        let became_leader = metrics
            .wait_for(|m| {
                if let Some(other) = m.current_leader.filter(|l| *l != node.id) {
                    previous = m
                        .membership_config
                        .nodes()
                        .find(|(id, _)| **id == other)
                        .map(|(_, n)| n.name.clone());
                }
                m.current_leader == Some(node.id)
            })
            .await
            .is_ok();
        if !became_leader {
            return;
        }
        if let Some(previous) = previous {
            // Placing new runs on it would fail them; runs it had claimed are resumed below.
            node.skip_in_placement(&previous);
        }
        // Serve from a state machine that has applied everything the previous leader did.
        if node.raft.ensure_linearizable().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        crate::runner::resume_running_runs(&node);
        info!(node = %node.name(), "became leader; scheduler started");
        lead(&node, &mut metrics).await;
        info!(node = %node.name(), "no longer leader; scheduler stopped");
    }
}

/// How long before its nominal time an `allow` occurrence is claimed.
pub const CLAIM_AHEAD: Duration = Duration::from_millis(500);

/// Occurrences claimed in one pass (one log entry) at most, so a long catch-up cannot starve
/// the loop nor make one huge entry; the rest follow in the next passes.
const MAX_PER_PASS: usize = 4_000;

/// Due-queue ordered by claim time. Parsed schedules are not kept: croner's compiled form
/// takes about 5 KB per job, and parsing on each fire costs microseconds.
#[derive(Default)]
struct Queue {
    /// (claim time, job).
    by_time: BTreeSet<(Timestamp, String)>,
    /// Per job: (claim time, nominal fire time).
    next_of: HashMap<String, (Timestamp, Timestamp)>,
    /// The last occurrence fired per job: the next one is searched after it, so an
    /// occurrence is never fired twice even if the job is edited right after it fired.
    last_fired: HashMap<String, Timestamp>,
}

impl Queue {
    /// Queues a job's next fire; `forbid` jobs are claimed when due, others ahead of time.
    fn set(&mut self, name: &str, next: Option<(Timestamp, bool)>) {
        if let Some((claim_at, _)) = self.next_of.remove(name) {
            self.by_time.remove(&(claim_at, name.to_string()));
        }
        if let Some((fire, forbid)) = next {
            let claim_at = if forbid {
                fire
            } else {
                fire.checked_sub(jiff::SignedDuration::try_from(CLAIM_AHEAD).unwrap_or_default())
                    .unwrap_or(fire)
            };
            self.by_time.insert((claim_at, name.to_string()));
            self.next_of.insert(name.to_string(), (claim_at, fire));
        }
    }

    /// The next occurrence whose claim time has come: (nominal fire time, job).
    fn pop_claimable(&mut self, now: Timestamp) -> Option<(Timestamp, String)> {
        let (claim_at, name) = self.by_time.first()?.clone();
        if claim_at > now {
            return None;
        }
        self.by_time.pop_first();
        let (_, fire) = self.next_of.remove(&name)?;
        Some((fire, name))
    }

    /// Recomputes a job's next fire from the current state: the first occurrence after the
    /// fire ledger and after what this leader already fired (claims still in flight).
    fn refresh(&mut self, node: &Node, name: &str, now: Timestamp) {
        let fired_here = self.last_fired.get(name).copied();
        let next = node.state.read(|s| {
            let entry = s.jobs.get(name)?;
            // Entries older than the ledger: start from now, as before it existed.
            let ledger = entry.fired_through.unwrap_or(now);
            let after = fired_here.map_or(ledger, |t| t.max(ledger));
            Some((
                after,
                entry.next_fire_after(after),
                entry.job.forbids_overlap(),
            ))
        });
        match next {
            Some((after, Some(fire), forbid)) => {
                self.last_fired.insert(name.to_string(), after);
                self.set(name, Some((fire, forbid)));
            }
            _ => {
                self.last_fired.remove(name);
                self.set(name, None);
            }
        }
    }
}

type Metrics = tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, ServerNode>>;

async fn lead(node: &Arc<Node>, metrics: &mut Metrics) {
    let mut queue = Queue::default();
    node.state.take_dirty();
    let now = node.clock.now();
    // What fell due while no leader ran the schedule: each job's catch-up policy decides
    // which of those occurrences not to run, recorded before anything is claimed.
    let skips: Vec<Command> = node.state.read(|s| {
        s.jobs
            .iter()
            .filter_map(|(name, entry)| {
                let (through, reason) = plan_catch_up(entry, now)?;
                Some(Command::SkipOccurrences {
                    job: name.clone(),
                    through,
                    reason,
                })
            })
            .collect()
    });
    if !skips.is_empty() {
        info!(
            jobs = skips.len(),
            "not running some occurrences that fell due while no leader ran the schedule (catch-up policy or deadline); GET /v1/jobs/<job>/occurrences shows which"
        );
        // Proposed here or not at all: a deposed leader's decisions must not reach its
        // successor.
        if let Err(e) = node.write_local(Command::Batch { commands: skips }).await {
            warn!(error = %e, "could not record the catch-up decisions; stepping back until leadership is settled");
            return;
        }
    }
    let names: Vec<String> = node.state.read(|s| s.jobs.keys().cloned().collect());
    for name in names {
        queue.refresh(node, &name, now);
    }
    loop {
        let now = node.clock.now();
        // Everything claimable now, in order: a job owing several occurrences (catch-up)
        // contributes each of them, oldest first, to the same log entry.
        let mut fired = Vec::new();
        while let Some((due, name)) = queue.pop_claimable(now) {
            queue.last_fired.insert(name.clone(), due);
            queue.refresh(node, &name, now);
            fired.push((due, name));
            if fired.len() >= MAX_PER_PASS {
                break;
            }
        }
        if !fired.is_empty() {
            let occurrences: Vec<Occurrence> = fired
                .into_iter()
                .enumerate()
                .filter_map(|(i, (nominal, job))| {
                    // Distinct instants for the ids of several catch-up runs of one job.
                    let at = now
                        .checked_add(SignedDuration::from_nanos(i as i64))
                        .unwrap_or(now);
                    let runs = plan_trigger(node, &job, Trigger::Scheduled { nominal }, at)?;
                    Some(Occurrence { job, nominal, runs })
                })
                .collect();
            if !occurrences.is_empty() {
                node.spawn_run(claim_occurrences(node.clone(), occurrences));
            }
        }
        for name in node.state.take_dirty() {
            queue.refresh(node, &name, now);
        }
        // A claim that was not written or was refused: search from the ledger again.
        for name in node.take_resync() {
            queue.last_fired.remove(&name);
            queue.refresh(node, &name, now);
        }
        let wait = match queue.by_time.first() {
            Some((t, _)) => t
                .duration_since(node.clock.now())
                .try_into()
                .unwrap_or(Duration::ZERO),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node.state.changed() => {}
            _ = node.resync_requested() => {}
            changed = metrics.changed() => {
                if changed.is_err() || metrics.borrow().current_leader != Some(node.id) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn allow_jobs_are_claimable_ahead_and_forbid_jobs_only_when_due() {
        let mut q = Queue::default();
        let fire = ts("2026-01-01T00:00:10Z");
        q.set("allow", Some((fire, false)));
        q.set("forbid", Some((fire, true)));
        // Before the claim window nothing is claimable.
        assert!(q.pop_claimable(ts("2026-01-01T00:00:09.4Z")).is_none());
        // Inside the window only the allow job is, with its nominal time.
        assert_eq!(
            q.pop_claimable(ts("2026-01-01T00:00:09.6Z")),
            Some((fire, "allow".to_string()))
        );
        assert!(q.pop_claimable(ts("2026-01-01T00:00:09.9Z")).is_none());
        assert_eq!(q.pop_claimable(fire), Some((fire, "forbid".to_string())));
    }

    #[test]
    fn requeueing_replaces_the_previous_entry() {
        let mut q = Queue::default();
        q.set("j", Some((ts("2026-01-01T00:00:10Z"), true)));
        q.set("j", Some((ts("2026-01-01T00:00:20Z"), true)));
        assert_eq!(q.by_time.len(), 1);
        q.set("j", None);
        assert!(q.by_time.is_empty() && q.next_of.is_empty());
    }
}
