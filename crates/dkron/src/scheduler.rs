//! The leader-only scheduler: keeps every job's next fire time in an ordered queue and starts
//! the runs when they are due. It starts when this node becomes leader (after its state
//! machine has caught up) and stops as soon as leadership is lost.
//!
//! All occurrences due at the same instant are claimed together, in one log entry, so a
//! thousand jobs on `* * * * * *` cost one consensus round per second, not a thousand.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tracing::info;

use crate::node::Node;
use crate::raft::ServerNode;
use crate::runner::{Trigger, claim_and_start, plan_trigger};

pub async fn run(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    loop {
        if metrics
            .wait_for(|m| m.current_leader == Some(node.id))
            .await
            .is_err()
        {
            return;
        }
        // Serve from a state machine that has applied everything the previous leader did.
        if node.raft.ensure_linearizable().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        crate::runner::close_orphaned_runs(&node).await;
        info!(node = %node.name(), "became leader; scheduler started");
        lead(&node, &mut metrics).await;
        info!(node = %node.name(), "no longer leader; scheduler stopped");
    }
}

/// Due-queue ordered by fire time. Parsed schedules are not kept: croner's compiled form
/// takes about 5 KB per job, and parsing on each fire costs microseconds.
#[derive(Default)]
struct Queue {
    by_time: BTreeSet<(Timestamp, String)>,
    next_of: HashMap<String, Timestamp>,
    /// The last occurrence fired per job: the next one is searched after it, so an
    /// occurrence is never fired twice even if the job is edited right after it fired.
    last_fired: HashMap<String, Timestamp>,
}

impl Queue {
    fn set(&mut self, name: &str, next: Option<Timestamp>) {
        if let Some(old) = self.next_of.remove(name) {
            self.by_time.remove(&(old, name.to_string()));
        }
        if let Some(t) = next {
            self.by_time.insert((t, name.to_string()));
            self.next_of.insert(name.to_string(), t);
        }
    }

    fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, String)> {
        let first = self.by_time.first()?.clone();
        if first.0 > now {
            return None;
        }
        self.by_time.pop_first();
        self.next_of.remove(&first.1);
        Some(first)
    }

    /// Recomputes a job's next fire after `after` from the current state.
    fn refresh(&mut self, node: &Node, name: &str, after: Timestamp) {
        let next = node
            .state
            .read(|s| s.jobs.get(name).and_then(|e| e.next_fire_after(after)));
        if next.is_none() {
            self.last_fired.remove(name);
        }
        self.set(name, next);
    }
}

type Metrics = tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, ServerNode>>;

async fn lead(node: &Arc<Node>, metrics: &mut Metrics) {
    let mut queue = Queue::default();
    node.state.take_dirty();
    let now = node.clock.now();
    let names: Vec<String> = node.state.read(|s| s.jobs.keys().cloned().collect());
    for name in names {
        queue.refresh(node, &name, now);
    }
    loop {
        let now = node.clock.now();
        let mut fired = Vec::new();
        while let Some(due) = queue.pop_due(now) {
            fired.push(due);
        }
        if !fired.is_empty() {
            let runs: Vec<_> = fired
                .iter()
                .flat_map(|(due, name)| {
                    plan_trigger(node, name, Trigger::Scheduled { nominal: *due })
                })
                .collect();
            if !runs.is_empty() {
                node.spawn_run(claim_and_start(node.clone(), runs));
            }
            for (due, name) in fired {
                queue.last_fired.insert(name.clone(), due);
                queue.refresh(node, &name, due);
            }
        }
        for name in node.state.take_dirty() {
            let after = queue.last_fired.get(&name).map_or(now, |t| (*t).max(now));
            queue.refresh(node, &name, after);
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
            changed = metrics.changed() => {
                if changed.is_err() || metrics.borrow().current_leader != Some(node.id) {
                    return;
                }
            }
        }
    }
}
