//! Gauges (jobs by status, runs in progress, members, voters, leadership, how far behind
//! schedule the scheduler is), refreshed every
//! 5 s for StatsD and read fresh by `GET /metrics`, and the leader-change counter.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::ApiError;
use crate::clock::SharedClock;
use crate::cluster::Members;
use crate::leader::Lag;
use crate::raft::{Leadership, Proposer, StateReader, Voters};
use crate::shutdown::Shutdown;
use crate::telemetry::metrics::{self, Snapshot};

/// What the gauges read.
#[derive(Clone)]
pub struct Gauges {
    pub state: StateReader,
    pub members: Members,
    pub voters: Voters,
    pub leadership: Leadership,
    pub proposer: Proposer,
    pub lag: Lag,
    pub clock: SharedClock,
}

impl Gauges {
    /// The values the gauges show now.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        self.state.read(|s| {
            for (_, entry) in s.entries() {
                let status = if entry.job.disabled {
                    "disabled"
                } else {
                    match entry.job.status.as_str() {
                        dkron_core::job::STATUS_SUCCESS => "success",
                        dkron_core::job::STATUS_FAILED => "failed",
                        dkron_core::job::STATUS_PARTIALLY_FAILED => "partially_failed",
                        _ => "untriggered",
                    }
                };
                *snapshot.jobs_by_status.entry(status).or_default() += 1;
                snapshot.running += entry.running.len() as u64;
            }
        });
        for status in [
            "success",
            "failed",
            "partially_failed",
            "untriggered",
            "disabled",
        ] {
            snapshot.jobs_by_status.entry(status).or_default();
        }
        for status in ["alive", "suspect", "failed", "left"] {
            snapshot.members_by_status.entry(status).or_default();
        }
        for m in self.members.all() {
            *snapshot
                .members_by_status
                .entry(m.status.as_str())
                .or_default() += 1;
        }
        snapshot.voters = self.voters.ids().len() as u64;
        snapshot.leader = self.leadership.is_leader();
        snapshot.writes_pending = self.proposer.pending() as u64;
        snapshot.behind_seconds = self.lag.behind(self.clock.now()).as_secs_f64();
        snapshot
    }

    /// Keeps the gauges current (every 5 s) and counts leader changes (polled each second:
    /// Raft's metrics channel fires on every heartbeat and write, too often to scan the jobs
    /// on); also runs the Prometheus recorder's upkeep, which keeps histograms bounded.
    pub async fn run(self, shutdown: Shutdown) {
        // The first leader this node sees counts as a change too.
        let mut leader = None;
        for tick in 0u64.. {
            let now_leader = self.leadership.leader_id();
            if now_leader != leader {
                if now_leader.is_some() {
                    metrics::leader_changed();
                }
                leader = now_leader;
            }
            if tick % 5 == 0 {
                metrics::set_gauges(&self.snapshot());
                if let Some(handle) = metrics::prometheus() {
                    handle.run_upkeep();
                }
            }
            tokio::select! {
                () = shutdown.requested() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// `GET /metrics` (with `--enable-prometheus`): the Prometheus text exposition, gauges read
/// fresh from the state.
pub fn route(gauges: Gauges) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(gauges)
}

async fn render(State(gauges): State<Gauges>) -> Response {
    metrics::set_gauges(&gauges.snapshot());
    match metrics::prometheus() {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => ApiError::not_found("metrics are off: start the agent with --enable-prometheus")
            .into_response(),
    }
}
