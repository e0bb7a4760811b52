//! The table of orders this process has seen, and what to do with each new one: start it,
//! join the run already going, answer a finished run's result, refuse it (lost before a
//! restart, or too old), or decline it (the node is shutting down). Pure bookkeeping: the
//! caller brings the clock's reading and what the start journal says.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use super::journal::Recorded;
use crate::rpc::wire::{RunOrder, RunResult};

/// How long a finished run's result is kept for a resumed order, and how long after its
/// start a never-seen resumed order may still run.
pub const RESULT_RETENTION: Duration = Duration::from_secs(600);

/// Output bytes kept across finished results; beyond it the oldest outputs are dropped (the
/// leader that ordered the run normally has the output already).
const KEPT_OUTPUT_BUDGET: usize = 8 << 20;

/// How long a finished run's result stays in memory when the start journal keeps it on
/// disk: long enough for the leader that ordered it to hear the answer; after that a
/// repeated order is answered from the journal.
pub const RESULT_IN_MEMORY: Duration = Duration::from_secs(10);

/// Clock skew tolerated between the leader that stamped `started_at` and this node.
pub(super) const SKEW: SignedDuration = SignedDuration::from_secs(1);

pub(super) type Key = (String, String);

pub(super) enum Slot {
    Running(watch::Receiver<Option<RunResult>>),
    Done(RunResult),
}

/// What to do with an order, decided from the table.
pub(super) enum Decision {
    Wait(watch::Receiver<Option<RunResult>>),
    Answer(RunResult),
    Start(watch::Sender<Option<RunResult>>),
    Refuse(String),
    /// Not started here, and never will be.
    Decline(String),
}

/// Orders seen by this process: running ones, and finished ones for `keep_results`
/// ([`RESULT_RETENTION`], or [`RESULT_IN_MEMORY`] when the start journal keeps them).
pub(super) struct Table {
    pub(super) slots: HashMap<Key, Slot>,
    /// How to stop each running run (with the reason that becomes its output).
    pub(super) stops: HashMap<Key, tokio::sync::oneshot::Sender<String>>,
    /// What each running run printed so far.
    pub(super) live: HashMap<Key, dkron_executors::LiveOutput>,
    /// Finished runs, oldest first, with when they finished.
    pub(super) finished: VecDeque<(Key, Timestamp)>,
    pub(super) kept_output: usize,
    /// The node is shutting down: runs it does not know are declined.
    pub(super) closing: bool,
    /// How long a finished run's result stays here.
    pub(super) keep_results: Duration,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            slots: HashMap::new(),
            stops: HashMap::new(),
            live: HashMap::new(),
            finished: VecDeque::new(),
            kept_output: 0,
            closing: false,
            keep_results: RESULT_RETENTION,
        }
    }
}

impl Table {
    /// Whether this process knows the run (running, or finished and still kept here).
    pub(super) fn knows(&self, job: &str, id: &str) -> bool {
        self.slots.contains_key(&(job.to_string(), id.to_string()))
    }

    /// `recorded`: what the start journal says of a run this process does not know (`None`:
    /// it cannot say, or there is no journal).
    pub(super) fn decide(
        &mut self,
        order: &RunOrder,
        up_since: Timestamp,
        now: Timestamp,
        recorded: Option<Recorded>,
    ) -> Decision {
        self.expire(now);
        let key = (order.job_name.clone(), order.execution_id.clone());
        match self.slots.get(&key) {
            Some(Slot::Running(rx)) => return Decision::Wait(rx.clone()),
            Some(Slot::Done(result)) => return Decision::Answer(result.clone()),
            None => {}
        }
        if let Some(Recorded::Finished(result)) = recorded {
            // Finished here, and forgotten by this process since (or before a restart).
            return Decision::Answer(result);
        }
        // Before the shutdown's decline: a declined fresh order may go to another node, and
        // this one started here already.
        if recorded == Some(Recorded::Started) {
            // A repeated order or a resumed one alike: never run twice.
            return Decision::Refuse(
                "this run was lost: it started on this node before its result could be kept (the node restarted, or the result was never recorded); it is closed as failed rather than run twice".into(),
            );
        }
        if self.closing {
            return Decision::Decline(
                "this node is shutting down; the run was not started here".into(),
            );
        }
        if order.resumed {
            let retention = SignedDuration::try_from(RESULT_RETENTION).unwrap_or_default();
            // Never started here (`Recorded::Never`): run it now, late, once. Without the
            // journal's word, only if this process was up when it was due.
            let delivered_before = order.started_at.is_none_or(|t| t < up_since + SKEW);
            if recorded.is_none() && delivered_before {
                return Decision::Refuse(
                    "this run was lost: the node restarted after the run was due, so whether it ran is unknown; it is closed as failed rather than run twice".into(),
                );
            }
            if order.started_at.is_some_and(|t| t < now - retention) {
                return Decision::Refuse(
                    "this run was lost: its result is no longer known on this node; it is closed as failed rather than run twice".into(),
                );
            }
        }
        let (tx, rx) = watch::channel(None);
        self.slots.insert(key, Slot::Running(rx));
        Decision::Start(tx)
    }

    pub(super) fn finish(&mut self, key: Key, result: RunResult, now: Timestamp) {
        self.stops.remove(&key);
        self.live.remove(&key);
        self.kept_output += result.output.len();
        self.slots.insert(key.clone(), Slot::Done(result));
        self.finished.push_back((key, now));
        // Over budget: drop the oldest outputs, keep their outcome.
        let mut i = 0;
        while self.kept_output > KEPT_OUTPUT_BUDGET && i < self.finished.len() {
            let key = &self.finished[i].0;
            if let Some(Slot::Done(r)) = self.slots.get_mut(key) {
                self.kept_output -= r.output.len();
                r.output = "dkron: output no longer kept by the executing node\n".into();
                self.kept_output += r.output.len();
            }
            i += 1;
        }
    }

    /// A run whose task ended without a result (aborted at shutdown).
    pub(super) fn forget(&mut self, key: &Key) {
        self.stops.remove(key);
        self.live.remove(key);
        if matches!(self.slots.get(key), Some(Slot::Running(_))) {
            self.slots.remove(key);
        }
    }

    pub(super) fn expire(&mut self, now: Timestamp) {
        let retention = SignedDuration::try_from(self.keep_results).unwrap_or_default();
        while let Some((key, at)) = self.finished.front() {
            if *at + retention > now {
                break;
            }
            if let Some(Slot::Done(r)) = self.slots.remove(key) {
                self.kept_output -= r.output.len();
            }
            self.finished.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::tests::{order, result, ts};

    const UP: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn a_repeated_order_waits_for_or_gets_the_first_ones_result() {
        let mut t = Table::default();
        let now = ts("2026-01-01T00:01:00Z");
        let o = order("e1", false, "2026-01-01T00:01:00Z");
        assert!(matches!(
            t.decide(&o, ts(UP), now, None),
            Decision::Start(_)
        ));
        assert!(matches!(t.decide(&o, ts(UP), now, None), Decision::Wait(_)));
        let resumed = RunOrder {
            resumed: true,
            ..o.clone()
        };
        assert!(matches!(
            t.decide(&resumed, ts(UP), now, None),
            Decision::Wait(_)
        ));
        t.finish(("j".into(), "e1".into()), result("out"), now);
        assert!(
            matches!(t.decide(&resumed, ts(UP), now, None), Decision::Answer(r) if r == result("out"))
        );
        // After the retention the key is forgotten.
        let later = now + SignedDuration::from_secs(601);
        let fresh = order("e1", false, "2026-01-01T00:11:01Z");
        assert!(matches!(
            t.decide(&fresh, ts(UP), later, None),
            Decision::Start(_)
        ));
    }

    #[test]
    fn a_resumed_order_never_seen_runs_only_if_this_process_was_up_when_it_was_due() {
        let mut t = Table::default();
        let now = ts("2026-01-01T00:05:00Z");
        // Due before this process started (+ skew): it may have run in the previous one.
        for due in ["2025-12-31T23:59:00Z", "2026-01-01T00:00:00.5Z"] {
            let d = t.decide(&order(due, true, due), ts(UP), now, None);
            assert!(
                matches!(d, Decision::Refuse(ref m) if m.contains("lost")),
                "{due}"
            );
        }
        // Due while up, never delivered: run it now, once.
        let due = "2026-01-01T00:04:00Z";
        assert!(matches!(
            t.decide(&order("e2", true, due), ts(UP), now, None),
            Decision::Start(_)
        ));
        assert!(matches!(
            t.decide(&order("e2", true, due), ts(UP), now, None),
            Decision::Wait(_)
        ));
        // Too old to be sure its result was not forgotten.
        let long_ago = "2026-01-01T00:04:00Z";
        let much_later = ts("2026-01-01T00:20:00Z");
        let d = t.decide(&order("e3", true, long_ago), ts(UP), much_later, None);
        assert!(matches!(d, Decision::Refuse(_)));
        // A fresh order (not resumed) always runs.
        let d = t.decide(
            &order("e4", false, "2025-12-31T00:00:00Z"),
            ts(UP),
            now,
            None,
        );
        assert!(matches!(d, Decision::Start(_)));
    }

    #[test]
    fn the_start_journal_decides_a_resumed_order_after_a_restart() {
        let mut t = Table::default();
        let now = ts("2026-01-01T00:05:00Z");
        // Due before this process started: the journal says it never started, so it runs now.
        let due = "2025-12-31T23:59:30Z";
        assert!(matches!(
            t.decide(
                &order("never", true, due),
                ts(UP),
                now,
                Some(Recorded::Never)
            ),
            Decision::Start(_)
        ));
        // It started in the previous process: lost, even if due while this one was up.
        let d = t.decide(
            &order("started", true, "2026-01-01T00:04:00Z"),
            ts(UP),
            now,
            Some(Recorded::Started),
        );
        assert!(matches!(d, Decision::Refuse(ref m) if m.contains("started on this node")));
        // Past the retention it is refused whatever the journal says.
        let d = t.decide(
            &order("old", true, "2025-12-31T23:00:00Z"),
            ts(UP),
            now,
            Some(Recorded::Never),
        );
        assert!(matches!(d, Decision::Refuse(_)));
    }

    #[test]
    fn a_run_forgotten_here_is_answered_or_refused_from_the_journal_never_run_again() {
        let mut t = Table {
            keep_results: RESULT_IN_MEMORY,
            ..Table::default()
        };
        let now = ts("2026-01-01T00:01:00Z");
        let o = order("e1", false, "2026-01-01T00:01:00Z");
        assert!(matches!(
            t.decide(&o, ts(UP), now, Some(Recorded::Never)),
            Decision::Start(_)
        ));
        t.finish(("j".into(), "e1".into()), result("out"), now);
        assert!(t.knows("j", "e1"));
        // Forgotten here once RESULT_IN_MEMORY passed: memory holds only recent results.
        let later = now + SignedDuration::try_from(RESULT_IN_MEMORY).unwrap();
        let recorded = Recorded::Finished(result("out"));
        assert!(
            matches!(t.decide(&o, ts(UP), later, Some(recorded)), Decision::Answer(r) if r == result("out"))
        );
        assert!(!t.knows("j", "e1"), "expired from memory");
        assert!(t.finished.is_empty() && t.slots.is_empty());
        // Started and its result not recorded (a write lost in a crash): lost, not run again,
        // whether the order is a repeat of a fresh one or resumed by a new leader.
        let d = t.decide(&o, ts(UP), later, Some(Recorded::Started));
        assert!(matches!(d, Decision::Refuse(ref m) if m.contains("lost")));
        let resumed = RunOrder {
            resumed: true,
            ..o.clone()
        };
        let d = t.decide(&resumed, ts(UP), later, Some(Recorded::Started));
        assert!(matches!(d, Decision::Refuse(ref m) if m.contains("lost")));
        // Shutting down: still refused as lost, never declined (a declined fresh order is
        // free to run on another node).
        t.closing = true;
        let d = t.decide(&o, ts(UP), later, Some(Recorded::Started));
        assert!(matches!(d, Decision::Refuse(ref m) if m.contains("lost")));
        assert!(matches!(
            t.decide(&o, ts(UP), later, Some(Recorded::Never)),
            Decision::Decline(_)
        ));
    }

    #[test]
    fn kept_outputs_stay_within_the_budget() {
        let mut t = Table::default();
        let now = ts("2026-01-01T00:01:00Z");
        let big = "x".repeat(1 << 20);
        for i in 0..20 {
            let o = order(&format!("e{i}"), false, "2026-01-01T00:01:00Z");
            assert!(matches!(
                t.decide(&o, ts(UP), now, None),
                Decision::Start(_)
            ));
            t.finish(("j".into(), format!("e{i}")), result(&big), now);
        }
        assert!(t.kept_output <= KEPT_OUTPUT_BUDGET, "{}", t.kept_output);
        let newest = order("e19", true, "2026-01-01T00:01:00Z");
        assert!(
            matches!(t.decide(&newest, ts(UP), now, None), Decision::Answer(r) if r.output.len() == big.len())
        );
        let oldest = order("e0", true, "2026-01-01T00:01:00Z");
        assert!(
            matches!(t.decide(&oldest, ts(UP), now, None), Decision::Answer(r) if r.success && r.output.contains("no longer kept"))
        );
    }
}
