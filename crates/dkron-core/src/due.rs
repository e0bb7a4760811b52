//! The leader's due queue: every job's next occurrence, ordered by when to claim it.
//!
//! An `allow` occurrence is claimable [`CLAIM_AHEAD`] before its nominal time, so the consensus
//! round trip of its claim is not part of its lateness (its run then waits for the nominal
//! instant); a `forbid` one only when due, because the run before it may still finish in
//! between. Each job's next occurrence is searched after the fire ledger and after what this
//! leader already fired (claims still in flight), so an occurrence is never fired twice even
//! if the job is edited right after it fired, and what fell due without a leader is owed.
//!
//! Parsed schedules are not kept: croner's compiled form takes about 5 KB per job, and parsing
//! on each fire costs microseconds.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::command::Command;
use crate::occurrence::{Late, SkipReason, plan_catch_up, plan_late};
use crate::state::State;

/// How long before its nominal time an `allow` occurrence is claimed.
pub const CLAIM_AHEAD: Duration = Duration::from_millis(500);

/// An owed occurrence taken off the queue, decided ([`plan_late`]): the skips to record first,
/// then the occurrence to claim, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub job: String,
    pub skips: Vec<(Timestamp, SkipReason)>,
    pub claim: Option<Timestamp>,
}

#[derive(Debug, Default)]
pub struct DueQueue {
    /// (claim time, job).
    by_time: BTreeSet<(Timestamp, String)>,
    /// Per job: (claim time, nominal fire time).
    next_of: HashMap<String, (Timestamp, Timestamp)>,
    /// The last occurrence fired per job by this leader.
    last_fired: HashMap<String, Timestamp>,
}

impl DueQueue {
    /// A queue holding every job's next occurrence owed at `now`.
    pub fn new(state: &State, now: Timestamp) -> DueQueue {
        let mut queue = DueQueue::default();
        let names: Vec<String> = state.job_names().cloned().collect();
        for name in names {
            queue.refresh(state, &name, now);
        }
        queue
    }

    /// Queues a job's next fire; `forbid` jobs are claimed when due, others ahead of time.
    fn set(&mut self, name: &str, next: Option<(Timestamp, bool)>) {
        if let Some((claim_at, _)) = self.next_of.remove(name) {
            self.by_time.remove(&(claim_at, name.to_string()));
        }
        if let Some((fire, forbid)) = next {
            let claim_at = if forbid {
                fire
            } else {
                fire.checked_sub(SignedDuration::try_from(CLAIM_AHEAD).unwrap_or_default())
                    .unwrap_or(fire)
            };
            self.by_time.insert((claim_at, name.to_string()));
            self.next_of.insert(name.to_string(), (claim_at, fire));
        }
    }

    /// The next occurrence whose claim time has come, taken off the queue and decided: on
    /// time it is claimed; late, the job's catch-up policy and deadline decide ([`plan_late`]).
    /// The job's following occurrence is queued in its place.
    pub fn pop_claimable(&mut self, state: &State, now: Timestamp) -> Option<Due> {
        let (claim_at, name) = self.by_time.first()?.clone();
        if claim_at > now {
            return None;
        }
        self.by_time.pop_first();
        let (_, fire) = self.next_of.remove(&name)?;
        let Late { skips, claim } = state.entry(&name).map_or(
            Late {
                skips: Vec::new(),
                claim: Some(fire),
            },
            |entry| plan_late(entry, fire, now),
        );
        let decided = claim.or(skips.last().map(|(through, _)| *through));
        self.last_fired
            .insert(name.clone(), decided.unwrap_or(fire));
        self.refresh(state, &name, now);
        Some(Due {
            job: name,
            skips,
            claim,
        })
    }

    /// Recomputes a job's next fire from `state`: the first occurrence after the fire ledger
    /// and after what this leader already fired.
    pub fn refresh(&mut self, state: &State, name: &str, now: Timestamp) {
        let fired_here = self.last_fired.get(name).copied();
        let next = state.entry(name).map(|entry| {
            // Entries older than the ledger: start from now, as before it existed.
            let ledger = entry.fired_through.unwrap_or(now);
            let after = fired_here.map_or(ledger, |t| t.max(ledger));
            (
                after,
                entry.next_fire_after(after),
                entry.job.forbids_overlap(),
            )
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

    /// A claim of `name` was not written or was refused: search its next occurrence from the
    /// fire ledger again, forgetting what this leader thought it had fired.
    pub fn resync(&mut self, state: &State, name: &str, now: Timestamp) {
        self.last_fired.remove(name);
        self.refresh(state, name, now);
    }

    /// The nominal time of the oldest occurrence still queued whose claim time has come: the
    /// scheduler has not taken it yet (a pass takes a bounded number). `None`: none is waiting.
    pub fn oldest_waiting(&self, now: Timestamp) -> Option<Timestamp> {
        self.by_time
            .iter()
            .take_while(|(claim_at, _)| *claim_at <= now)
            .filter_map(|(_, name)| self.next_of.get(name).map(|(_, fire)| *fire))
            // Claim times differ from nominal times by at most CLAIM_AHEAD, so the oldest is
            // among the first; a bound keeps this cheap when thousands are overdue.
            .take(64)
            .min()
    }

    /// When the first queued occurrence becomes claimable.
    pub fn next_claim_at(&self) -> Option<Timestamp> {
        self.by_time.first().map(|(t, _)| *t)
    }

    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
}

/// What a leader whose scheduler starts at `now` records before claiming anything: for each
/// job, the occurrences that fell due while no leader ran the schedule and that its catch-up
/// policy or deadline says not to run (one `SkipOccurrences` per such job).
pub fn catch_up_skips(state: &State, now: Timestamp) -> Vec<Command> {
    state
        .entries()
        .filter_map(|(name, entry)| {
            let (through, reason) = plan_catch_up(entry, now)?;
            Some(Command::SkipOccurrences {
                job: name.clone(),
                through,
                reason,
            })
        })
        .collect()
}

/// How far behind schedule the leader is at `now`: the age of the oldest occurrence that is
/// owed and not yet decided — still queued (`waiting`), or claimed with the claim not yet
/// answered by the log (`claiming`). Zero when nothing owed is past its nominal time.
pub fn behind(now: Timestamp, waiting: Option<Timestamp>, claiming: Option<Timestamp>) -> Duration {
    let Some(oldest) = waiting.into_iter().chain(claiming).min() else {
        return Duration::ZERO;
    };
    Duration::try_from(now.duration_since(oldest)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Job;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Pops an occurrence that is claimed as is (no skips), as (nominal, job).
    fn pop(q: &mut DueQueue, state: &State, now: Timestamp) -> Option<(Timestamp, String)> {
        let due = q.pop_claimable(state, now)?;
        assert!(due.skips.is_empty(), "{due:?}");
        Some((due.claim.expect("claimed"), due.job))
    }

    fn state_with(jobs: &[(&str, &str)], now: Timestamp) -> State {
        let mut state = State::default();
        for (name, concurrency) in jobs {
            let job: Job = serde_json::from_str(&format!(
                r#"{{"name":"{name}","schedule":"@every 10s","concurrency":"{concurrency}","executor":"shell","executor_config":{{"command":"true"}}}}"#
            ))
            .unwrap();
            state.apply(Command::SetJob {
                job: Box::new(job),
                now,
                refuse_when_paused: false,
            });
        }
        state
    }

    #[test]
    fn how_far_behind_is_the_age_of_the_oldest_undecided_occurrence() {
        let now = ts("2026-01-01T00:01:00Z");
        assert_eq!(behind(now, None, None), Duration::ZERO);
        // Claimed ahead of its nominal time: on time.
        assert_eq!(
            behind(now, None, Some(ts("2026-01-01T00:01:00.4Z"))),
            Duration::ZERO
        );
        assert_eq!(
            behind(
                now,
                Some(ts("2026-01-01T00:00:57Z")),
                Some(ts("2026-01-01T00:00:59Z"))
            ),
            Duration::from_secs(3)
        );
        assert_eq!(
            behind(
                now,
                Some(ts("2026-01-01T00:00:59.5Z")),
                Some(ts("2026-01-01T00:00:48Z"))
            ),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn the_oldest_waiting_occurrence_is_one_whose_claim_time_came() {
        let t0 = ts("2026-01-01T00:00:00Z");
        let state = state_with(&[("allow", "allow"), ("forbid", "forbid")], t0);
        let q = DueQueue::new(&state, t0);
        assert_eq!(q.oldest_waiting(ts("2026-01-01T00:00:09Z")), None);
        // Only the allow job's claim window opened: its nominal time, not the claim time.
        assert_eq!(
            q.oldest_waiting(ts("2026-01-01T00:00:09.6Z")),
            Some(ts("2026-01-01T00:00:10Z"))
        );
        // Both overdue, neither taken: the oldest nominal.
        assert_eq!(
            q.oldest_waiting(ts("2026-01-01T00:00:30Z")),
            Some(ts("2026-01-01T00:00:10Z"))
        );
    }

    #[test]
    fn allow_jobs_are_claimable_ahead_and_forbid_jobs_only_when_due() {
        let t0 = ts("2026-01-01T00:00:00Z");
        let state = state_with(&[("allow", "allow"), ("forbid", "forbid")], t0);
        let mut q = DueQueue::new(&state, t0);
        let fire = ts("2026-01-01T00:00:10Z");
        // Before the claim window nothing is claimable.
        assert!(pop(&mut q, &state, ts("2026-01-01T00:00:09.4Z")).is_none());
        // Inside the window only the allow job is, with its nominal time.
        assert_eq!(
            pop(&mut q, &state, ts("2026-01-01T00:00:09.6Z")),
            Some((fire, "allow".to_string()))
        );
        assert!(pop(&mut q, &state, ts("2026-01-01T00:00:09.9Z")).is_none());
        assert_eq!(
            pop(&mut q, &state, fire),
            Some((fire, "forbid".to_string()))
        );
        // Each job's following occurrence is queued in its place, never the same one twice.
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_claim_at(), Some(ts("2026-01-01T00:00:19.5Z")));
    }

    #[test]
    fn what_fell_due_without_a_leader_is_owed_oldest_first() {
        let t0 = ts("2026-01-01T00:00:00Z");
        let state = state_with(&[("j", "allow")], t0);
        // A leader starting 25 s later owes the occurrences at 10 s and 20 s, in order.
        let later = ts("2026-01-01T00:00:25Z");
        let mut q = DueQueue::new(&state, later);
        assert_eq!(
            pop(&mut q, &state, later).map(|(t, _)| t),
            Some(ts("2026-01-01T00:00:10Z"))
        );
        assert_eq!(
            pop(&mut q, &state, later).map(|(t, _)| t),
            Some(ts("2026-01-01T00:00:20Z"))
        );
        assert!(pop(&mut q, &state, later).is_none());
        // A refused claim: searched from the ledger again, the 10 s occurrence is owed again.
        q.resync(&state, "j", later);
        assert_eq!(
            pop(&mut q, &state, later).map(|(t, _)| t),
            Some(ts("2026-01-01T00:00:10Z"))
        );
    }

    #[test]
    fn a_queue_that_fell_behind_decides_by_the_catch_up_policy_and_owes_nothing_twice() {
        let t0 = ts("2026-01-01T00:00:00Z");
        let mut state = State::default();
        let job: Job = serde_json::from_str(
            r#"{"name":"j","schedule":"@every 10s","catchup":"latest","executor":"shell","executor_config":{"command":"true"}}"#,
        )
        .unwrap();
        state.apply(Command::SetJob {
            job: Box::new(job),
            now: t0,
            refuse_when_paused: false,
        });
        let mut q = DueQueue::new(&state, t0);
        // The scheduler stalled until 00:35: 00:10 and 00:20 are skipped, 00:30 claimed.
        let now = ts("2026-01-01T00:00:35Z");
        assert_eq!(
            q.pop_claimable(&state, now),
            Some(Due {
                job: "j".into(),
                skips: vec![(
                    ts("2026-01-01T00:00:30Z") - SignedDuration::from_nanos(1),
                    SkipReason::Behind
                )],
                claim: Some(ts("2026-01-01T00:00:30Z")),
            })
        );
        // Back on time: the next one owed is 00:40, claimable ahead of it.
        assert!(q.pop_claimable(&state, now).is_none());
        assert_eq!(q.next_claim_at(), Some(ts("2026-01-01T00:00:39.5Z")));
    }

    #[test]
    fn a_deleted_job_leaves_the_queue() {
        let t0 = ts("2026-01-01T00:00:00Z");
        let mut state = state_with(&[("j", "allow")], t0);
        let mut q = DueQueue::new(&state, t0);
        assert_eq!(q.len(), 1);
        state.apply(Command::DeleteJob { name: "j".into() });
        q.refresh(&state, "j", t0);
        assert!(q.is_empty() && q.next_claim_at().is_none());
    }
}
