//! The leader-only scheduler: drives the core's due queue with the clock and claims what is
//! due. Everything claimable at the same moment goes into one log entry, so a thousand jobs
//! on `* * * * * *` cost one consensus round per second, not a thousand.
//!
//! Each claim goes through the fire ledger in the replicated state, so the queue starts from
//! the ledger, not from "now": occurrences that fell due while no leader existed (a failover,
//! a restart) are fired late, once each, in order. Before that, each job's catch-up policy
//! (`catchup`, `catchup_deadline`) decides which of them not to run, and those are recorded as
//! skipped (`SkipOccurrences`). The same rules hold while it leads: when it falls behind
//! (overload, a stall), each late occurrence is decided by `due::DueQueue::pop_claimable`
//! (`occurrence::plan_late`), and what it skips is recorded in the entry of the claims.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use dkron_core::command::Command;
use dkron_core::due::{DueQueue, catch_up_skips};
use dkron_core::plan::{Trigger, plan_runs};
use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use super::Leader;
use super::claim::Occurrence;
use crate::raft::LeaderWatch;

/// Occurrences claimed in one pass (one log entry) at most, so a long catch-up cannot starve
/// the loop nor make one huge entry; the rest follow in the next passes.
const MAX_PER_PASS: usize = 4_000;

/// Claim entries proposed and not yet answered, at most. When the log falls behind, what is
/// due waits in the due queue — one occurrence per job, so bounded by the job count, and
/// counted by `dkron_scheduler_behind_seconds` — instead of piling up as ever more proposals
/// (seen at 10,000 jobs on three servers of two cores: 337,000 commands waiting and growing,
/// every one of them later than the last).
const CLAIMS_IN_FLIGHT: usize = 2;

impl Leader {
    /// Schedules until this server no longer leads.
    pub(super) async fn lead(self: &Arc<Self>, watch: &mut LeaderWatch) {
        self.state.take_dirty();
        let now = self.clock.now();
        // What fell due while no leader ran the schedule: each job's catch-up policy decides
        // which of those occurrences not to run, recorded before anything is claimed.
        let skips = self.state.read(|s| catch_up_skips(s, now));
        if !skips.is_empty() {
            info!(
                jobs = skips.len(),
                "not running some occurrences that fell due while no leader ran the schedule (catch-up policy or deadline); GET /v1/jobs/<job>/occurrences shows which"
            );
            // Proposed here or not at all: a deposed leader's decisions must not reach its
            // successor.
            let recorded = self
                .proposer
                .write_here(Command::Batch { commands: skips })
                .await;
            if let Err(e) = recorded {
                warn!(error = %e, "could not record the catch-up decisions; stepping back until leadership is settled");
                return;
            }
        }
        let mut queue = DueQueue::default();
        for name in self.state.job_names() {
            self.state.read(|s| queue.refresh(s, &name, now));
        }
        let claims = Arc::new(Semaphore::new(CLAIMS_IN_FLIGHT));
        let claim_answered = Arc::new(tokio::sync::Notify::new());
        let mut behind = BehindLog::default();
        loop {
            let now = self.clock.now();
            // One read of the state per job, not one for the whole pass: `apply` waits for
            // the state's write lock, and a pass may parse thousands of schedules.
            let (mut fired, mut skips, mut taken) = (Vec::new(), Vec::new(), 0);
            let slot = claims.clone().try_acquire_owned().ok();
            while slot.is_some()
                && taken < MAX_PER_PASS
                && let Some(due) = self.state.read(|s| queue.pop_claimable(s, now))
            {
                taken += 1;
                for (through, reason) in due.skips {
                    skips.push(Command::SkipOccurrences {
                        job: due.job.clone(),
                        through,
                        reason,
                    });
                }
                if let Some(nominal) = due.claim {
                    fired.push((nominal, due.job));
                }
            }
            if !skips.is_empty() {
                behind.skipped(skips.len(), self.clock.instant());
            }
            if let (false, Some(slot)) = (taken == 0, slot) {
                let occurrences = self.plan_occurrences(fired, now);
                if !occurrences.is_empty() || !skips.is_empty() {
                    let (leader, answered) = (self.clone(), claim_answered.clone());
                    self.spawn_run(async move {
                        leader.claim_occurrences(skips, occurrences).await;
                        drop(slot);
                        answered.notify_one();
                    });
                }
            }
            self.lag.set_waiting(queue.oldest_waiting(now));
            let dirty = self.state.take_dirty();
            let resync = self.take_resync();
            for name in &dirty {
                self.state.read(|s| queue.refresh(s, name, now));
            }
            // A claim that was not written or was refused: search from the ledger again.
            for name in &resync {
                self.state.read(|s| queue.resync(s, name, now));
            }
            let wait = match queue.next_claim_at() {
                // Both claim slots taken: woken when one is answered.
                Some(_) if claims.available_permits() == 0 => Duration::from_secs(3600),
                Some(t) => t
                    .duration_since(self.clock.now())
                    .try_into()
                    .unwrap_or(Duration::ZERO),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.state.changed() => {}
                _ = self.resync_wake.notified() => {}
                _ = claim_answered.notified() => {}
                () = watch.lost() => {
                    self.lag.set_waiting(None);
                    return;
                }
            }
        }
    }

    /// The runs of each due occurrence, on the nodes its job's tags select now.
    fn plan_occurrences(&self, fired: Vec<(Timestamp, String)>, now: Timestamp) -> Vec<Occurrence> {
        let members = self.members.candidates();
        fired
            .into_iter()
            .enumerate()
            .filter_map(|(i, (nominal, name))| {
                let Some(job) = self.state.job(&name) else {
                    warn!(job = %name, "job vanished before it could run");
                    return None;
                };
                // Distinct instants for the ids of several catch-up runs of one job.
                let at = now
                    .checked_add(SignedDuration::from_nanos(i as i64))
                    .unwrap_or(now);
                let Some(runs) = plan_runs(
                    &job,
                    &members,
                    Trigger::Scheduled { nominal },
                    at,
                    super::pick,
                ) else {
                    info!(job = %name, %nominal, "skipping run: the job is disabled");
                    return None;
                };
                if runs.is_empty() {
                    super::claim::no_target(&job);
                }
                Some(Occurrence {
                    job: name,
                    nominal,
                    runs,
                })
            })
            .collect()
    }
}

/// Says, at most every [`BehindLog::EVERY`], how many late occurrences the scheduler skipped
/// (by catch-up policy or deadline) since it last said so: under overload that is every pass.
#[derive(Default)]
struct BehindLog {
    skipped: usize,
    said_at: Option<tokio::time::Instant>,
}

impl BehindLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn skipped(&mut self, n: usize, now: tokio::time::Instant) {
        self.skipped += n;
        if self
            .said_at
            .is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY)
        {
            return;
        }
        warn!(
            skip_records = self.skipped,
            "the scheduler is behind schedule: late occurrences were skipped by their jobs' catch-up policy (latest, none) or catchup_deadline; dkron_scheduler_behind_seconds says how far behind, GET /v1/jobs/<job>/occurrences which were skipped. Fewer jobs, longer intervals or faster disks bring it back on time"
        );
        self.skipped = 0;
        self.said_at = Some(now);
    }
}
