//! Claiming runs in the replicated state before they start: scheduled occurrences through the
//! fire ledger (`ClaimOccurrence`), manual and dependent triggers as `StartExecution`. Each
//! batch is one log entry; `forbid` and the ledger are decided in `apply`, so what starts here
//! is exactly what the state machine granted.

use std::sync::Arc;

use dkron_core::command::{ApplyError, Command, Response, Verdict};
use dkron_core::job::{Execution, Job};
use dkron_core::plan::{Trigger, plan_runs, replaced_runs};
use jiff::Timestamp;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::Leader;
use crate::rpc::wire::{RunRefused, WriteError};

/// One scheduled occurrence to claim in the fire ledger, with its planned runs (empty: no
/// eligible node, which the ledger records as such).
pub(super) struct Occurrence {
    pub(super) job: String,
    pub(super) nominal: Timestamp,
    pub(super) runs: Vec<Execution>,
}

/// Logs that no node matches a job's tags.
pub(super) fn no_target(job: &Job) {
    warn!(
        job = %job.name,
        tags = ?job.tags,
        "no target nodes found to run job: compare the job's tags with the nodes' tags (GET /v1/members)"
    );
}

impl Leader {
    /// Records `skips` (late occurrences the scheduler decided not to run) and claims scheduled
    /// occurrences in the fire ledger, all in one log entry, then starts the runs of each
    /// occurrence the ledger granted.
    pub(super) async fn claim_occurrences(
        self: Arc<Self>,
        skips: Vec<Command>,
        occurrences: Vec<Occurrence>,
    ) {
        let t0 = self.clock.now();
        // Tracked before the claim commits, so a concurrent orphan sweep never mistakes these
        // runs for ones lost by a restart.
        for run in occurrences.iter().flat_map(|o| &o.runs) {
            self.track(run, true);
        }
        let skipped_jobs: Vec<String> = skips
            .iter()
            .filter_map(|c| match c {
                Command::SkipOccurrences { job, .. } => Some(job.clone()),
                _ => None,
            })
            .collect();
        // Skips first: a job's skip and the claim of its newest occurrence are contiguous in
        // the ledger only in that order.
        let commands = skips
            .into_iter()
            .chain(occurrences.iter().map(|o| Command::ClaimOccurrence {
                job: o.job.clone(),
                nominal: o.nominal,
                runs: o.runs.clone(),
            }))
            .collect();
        let claiming = self
            .lag
            .claiming(occurrences.iter().map(|o| o.nominal).collect());
        // Proposed here or not at all: a deposed leader's claims must not reach its
        // successor, whose own catch-up decides those occurrences.
        let written = self.write_all(commands, true).await;
        drop(claiming);
        let written = written.ok();
        let mut answers = written.into_iter().flatten();
        for job in &skipped_jobs {
            match answers.next() {
                Some(Response::Skipped) => {}
                // Recorded by an entry before this one: nothing left to skip.
                Some(Response::Rejected {
                    error: ApplyError::AlreadySkipped { .. },
                }) => {}
                // Not written (said by `write_all`): still owed.
                None => self.resync_schedule(job),
                Some(other) => {
                    warn!(job = %job, response = ?other, "late occurrences not recorded as skipped; the scheduler decides them again");
                    self.resync_schedule(job);
                }
            }
        }
        if let Some(first) = occurrences.first() {
            tracing::debug!(
                occurrences = occurrences.len(),
                planned_ms = t0.duration_since(first.nominal).as_secs_f64() * 1000.0,
                claimed_ms = self.clock.now().duration_since(first.nominal).as_secs_f64() * 1000.0,
                "claimed"
            );
        }
        for occurrence in occurrences {
            let started = self.granted(&occurrence, answers.next());
            if let (true, Some(first)) = (started, occurrence.runs.first()) {
                let ids: Vec<String> = occurrence.runs.iter().map(|r| r.id.clone()).collect();
                self.replace_running(&occurrence.job, first.group, &ids);
            }
            for run in occurrence.runs {
                if started {
                    self.spawn_run(self.clone().execute_claimed(run, false));
                } else {
                    self.track(&run, false);
                }
            }
        }
    }

    /// Whether the ledger granted an occurrence; a claim not written or refused out of order
    /// leaves it owed, so the scheduler searches from the ledger again.
    fn granted(&self, occurrence: &Occurrence, answer: Option<Response>) -> bool {
        let (job, nominal) = (&occurrence.job, occurrence.nominal);
        match answer {
            Some(Response::Claimed {
                verdict: Verdict::Ran { .. },
            }) => true,
            Some(Response::Claimed {
                verdict: Verdict::SkippedForbid { running },
            }) => {
                info!(job = %job, %nominal, ?running, "skipping occurrence: the previous run is still going and concurrency is forbid");
                false
            }
            Some(Response::Claimed {
                verdict: Verdict::NoTarget,
            }) => false,
            Some(Response::Rejected {
                error: ApplyError::AlreadyDecided { .. },
            }) => {
                info!(job = %job, %nominal, "occurrence already decided by the fire ledger; not firing it again");
                false
            }
            Some(Response::Rejected {
                error: ApplyError::OutOfOrder { expected, .. },
            }) => {
                info!(job = %job, %nominal, ?expected, "an earlier occurrence is still owed; the scheduler claims it first");
                self.resync_schedule(job);
                false
            }
            Some(other) => {
                warn!(job = %job, response = ?other, "occurrence not started");
                self.resync_schedule(job);
                false
            }
            // The claim was not written: the occurrence is still owed.
            None => {
                self.resync_schedule(job);
                false
            }
        }
    }

    /// A manual run of `job` (`POST /v1/jobs/:job/run`, `?runoncreate`), on this leader:
    /// claims every run of the trigger and starts them; answers their execution ids once
    /// the claim is committed, or why the state machine refused it.
    pub(super) async fn run_manual(
        self: &Arc<Self>,
        request: &crate::rpc::wire::RunRequest,
    ) -> Result<Vec<String>, RunRefused> {
        let job = request.job.as_str();
        let Some(stored) = self.state.job(job) else {
            return Err(RunRefused::Rejected(ApplyError::JobNotFound {
                job: job.to_string(),
            }));
        };
        let mut runs = self.plan(&stored, Trigger::Manual);
        let parameters = request
            .parameters
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|p| Box::new(p.clone()));
        for run in &mut runs {
            if let Some(by) = &request.started_by {
                run.started_by = by.clone();
            }
            run.parameters = parameters.clone();
        }
        // Claimed in a task of its own: a request that goes away (the client hung up, a
        // follower's call timed out) must not leave a committed claim without its runs.
        let (answer, answered) = oneshot::channel();
        let leader = self.clone();
        let spawned = self.spawn_run(async move {
            let _ = answer.send(leader.claim_and_start(runs).await);
        });
        let stopping = || RunRefused::Write(WriteError::Fatal("the node is shutting down".into()));
        if !spawned {
            return Err(stopping());
        }
        answered.await.unwrap_or_else(|_| Err(stopping()))
    }

    /// A parent's group succeeded: its child runs, in the background.
    pub(super) fn trigger_dependent(self: &Arc<Self>, job: String) {
        let Some(stored) = self.state.job(&job) else {
            warn!(job = %job, "job vanished before it could run");
            return;
        };
        let runs = self.plan(&stored, Trigger::Dependent);
        if !runs.is_empty() {
            let leader = self.clone();
            self.spawn_run(async move {
                let _ = leader.claim_and_start(runs).await;
            });
        }
    }

    /// The runs of one manual or dependent trigger of `job`, on the nodes its tags select.
    fn plan(&self, job: &Job, trigger: Trigger) -> Vec<Execution> {
        let members = self.members.candidates();
        match plan_runs(job, &members, trigger, self.clock.now(), super::pick) {
            Some(runs) => {
                if runs.is_empty() {
                    no_target(job);
                }
                runs
            }
            None => {
                info!(job = %job.name, ?trigger, "skipping run: the job is disabled");
                Vec::new()
            }
        }
    }

    /// Claims all `runs` of a manual or dependent trigger in one log entry, then starts each
    /// claimed run; answers their ids, or the first refusal (all runs of a trigger are refused
    /// alike: `forbid` looks at other triggers only).
    async fn claim_and_start(
        self: &Arc<Self>,
        runs: Vec<Execution>,
    ) -> Result<Vec<String>, RunRefused> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        for run in &runs {
            self.track(run, true);
        }
        let commands = runs
            .iter()
            .map(|r| Command::StartExecution {
                execution: r.clone(),
                enforce_forbid: true,
                moved_from: None,
            })
            .collect();
        let answers = match self.write_all(commands, false).await {
            Ok(answers) => answers,
            Err(e) => {
                for run in &runs {
                    self.track(run, false);
                }
                return Err(RunRefused::Write(e));
            }
        };
        let mut started = Vec::new();
        let mut refused = None;
        for (run, answer) in runs.into_iter().zip(answers) {
            match answer {
                Response::Started { .. } => started.push(run),
                other => {
                    self.track(&run, false);
                    match other {
                        Response::Rejected {
                            error: error @ ApplyError::AlreadyRunning { .. },
                        } => {
                            info!(job = %run.job_name, "skipping run: the previous run is still going and concurrency is forbid");
                            refused.get_or_insert(RunRefused::Rejected(error));
                        }
                        Response::Rejected { error } => {
                            warn!(job = %run.job_name, %error, "run not started");
                            refused.get_or_insert(RunRefused::Rejected(error));
                        }
                        other => warn!(job = %run.job_name, response = ?other, "run not started"),
                    }
                }
            }
        }
        let ids: Vec<String> = started.iter().map(|r| r.id.clone()).collect();
        if let Some(first) = started.first() {
            self.replace_running(&first.job_name, first.group, &ids);
        }
        for run in started {
            self.spawn_run(self.clone().execute_claimed(run, false));
        }
        match refused {
            Some(refusal) if ids.is_empty() => Err(refusal),
            _ => Ok(ids),
        }
    }

    /// Proposes `commands` as one log entry (one consensus round however many there are) and
    /// answers one response per command. With `here_only` they are proposed on this node or
    /// not at all.
    async fn write_all(
        &self,
        mut commands: Vec<Command>,
        here_only: bool,
    ) -> Result<Vec<Response>, WriteError> {
        let count = commands.len();
        let command = if count == 1 {
            commands.pop().expect("one command")
        } else {
            Command::Batch { commands }
        };
        let written = if here_only {
            self.proposer.write_here(command).await.map(|(r, _)| r)
        } else {
            self.proposer.write(command).await
        };
        let answers = match written {
            Ok(Response::Batch { responses }) if count > 1 => responses,
            Ok(other) => vec![other],
            Err(e) => {
                warn!(error = %e, commands = count, "could not record the runs' start; they did not run (the next leader resumes from the fire ledger)");
                return Err(e);
            }
        };
        if answers.len() != count {
            warn!(
                expected = count,
                got = answers.len(),
                "write answered with the wrong number of results; runs not started"
            );
            return Err(WriteError::Fatal(
                "the write answered with the wrong number of results".into(),
            ));
        }
        Ok(answers)
    }

    /// `concurrency: replace`: once the runs of a new trigger of `job` are claimed, stops the
    /// runs of older triggers still going; each ends as a failure saying it was replaced.
    fn replace_running(self: &Arc<Self>, job: &str, group: i64, new_ids: &[String]) {
        let older: Vec<Execution> = self.state.read(|s| {
            s.entry(job)
                .map(|e| replaced_runs(e, group).into_iter().cloned().collect())
                .unwrap_or_default()
        });
        for run in older {
            let reason = format!(
                "stopped: replaced by a newer run of the job ({}); its concurrency is replace",
                new_ids.join(", ")
            );
            info!(job = %job, execution = %run.id, node = %run.node_name, "stopping a run replaced by a newer one");
            let leader = self.clone();
            tokio::spawn(async move {
                leader.stop_run(&run, reason).await;
            });
        }
    }
}
