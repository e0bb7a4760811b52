//! The leader-only scheduler: keeps every job's next fire time in an ordered queue and starts
//! the run when it is due. It starts when this node becomes leader (after its state machine
//! has caught up) and stops as soon as leadership is lost.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tracing::info;

use crate::node::Node;
use crate::runner::{Trigger, run_job};

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

/// Due-queue ordered by fire time.
#[derive(Default)]
struct Queue {
    by_time: BTreeSet<(Timestamp, String)>,
    next_of: HashMap<String, Timestamp>,
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
}

async fn lead(
    node: &Arc<Node>,
    metrics: &mut tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, crate::raft::ServerNode>>,
) {
    let mut queue = Queue::default();
    let mut last_fired: HashMap<String, Timestamp> = HashMap::new();
    node.state.take_dirty();
    let now = node.clock.now();
    let initial: Vec<(String, Option<Timestamp>)> = node.state.read(|s| {
        s.jobs
            .iter()
            .map(|(n, e)| (n.clone(), e.next_fire_after(now)))
            .collect()
    });
    for (name, next) in initial {
        queue.set(&name, next);
    }
    loop {
        let now = node.clock.now();
        while let Some((due, name)) = queue.pop_due(now) {
            last_fired.insert(name.clone(), due);
            let next = node
                .state
                .read(|s| s.jobs.get(&name).and_then(|e| e.next_fire_after(due)));
            queue.set(&name, next);
            run_job(node.clone(), name, Trigger::Scheduled { nominal: due });
        }
        for name in node.state.take_dirty() {
            // Never fire an occurrence twice: search after the last one fired.
            let after = last_fired.get(&name).map_or(now, |t| (*t).max(now));
            let next = node
                .state
                .read(|s| s.jobs.get(&name).and_then(|e| e.next_fire_after(after)));
            if next.is_none() {
                last_fired.remove(&name);
            }
            queue.set(&name, next);
        }
        let wait = match queue.by_time.first() {
            Some((t, _)) => {
                let d = t.duration_since(node.clock.now());
                d.try_into().unwrap_or(Duration::ZERO)
            }
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
