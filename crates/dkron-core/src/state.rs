//! The replicated state machine: jobs, their running executions, and what each command does.
//!
//! `apply` is a pure function of the state and the command. Execution records themselves are
//! bulky and live in the shell's store; `apply` tells the shell what to write through
//! [`Effect`]s, which the shell commits in the same transaction as the state change.

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::command::{ApplyError, Command, FinishOutcome, Response, Verdict};
use crate::job::{
    Execution, Job, STATUS_FAILED, STATUS_PARTIALLY_FAILED, STATUS_SUCCESS, tail_utf8,
};
use crate::occurrence::{Skip, SkipReason, record_skip};
use crate::schedule::{Schedule, load_timezone};
use crate::validate::validate_job;
use crate::{INLINE_OUTPUT_LIMIT, MAX_EXECUTIONS_PER_JOB};

/// Groups kept open per job at most; older ones are dropped (their runs were lost).
const MAX_OPEN_GROUPS: usize = 64;

/// Storage work the shell must do for an applied command, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Persist the job entry under this name (it changed).
    PutJob(String),
    /// Persist only the job's [`Runtime`]: what changed is its run bookkeeping, not the job.
    PutRuntime(String),
    /// Remove the job entry.
    RemoveJob(String),
    /// Persist a finished run's record.
    PutExecution(Execution),
    /// Remove every execution of exactly this job.
    DeleteExecutionsOf(String),
    /// Delete the job's `remove` oldest executions (retention; the state counts them).
    PruneExecutions { job: String, remove: usize },
    /// Persist the ACL state (it changed).
    PutAcl,
    /// Persist the execution counts of this day (it changed).
    PutStats(jiff::civil::Date),
    /// Forget the execution counts of this day (too old).
    RemoveStats(jiff::civil::Date),
}

/// A job as stored, with the scheduler bookkeeping that is not part of Dkron's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEntry {
    pub job: Job,
    /// Phase origin of `@every` schedules: when the schedule was last set.
    pub anchor: Timestamp,
    /// Runs in progress, by execution id (output-free copies).
    #[serde(default)]
    pub running: BTreeMap<String, Execution>,
    /// Triggers still in progress, by group id.
    #[serde(default)]
    pub groups: BTreeMap<i64, GroupProgress>,
    /// Finished execution records stored for this job, so retention needs no scan (a run in
    /// progress has no record yet: `running` holds it).
    #[serde(default)]
    pub stored_executions: usize,
    /// The fire ledger: every scheduled occurrence at or before this instant is decided
    /// (claimed, or skipped for a reason). A new leader resumes right after it, so occurrences
    /// that fell due while no leader existed are fired late rather than dropped, and a claim
    /// at or before it is refused, so none is fired twice. `None` only in entries written
    /// before the ledger existed.
    #[serde(default)]
    pub fired_through: Option<Timestamp>,
    /// Occurrences that were decided without running, and why (bounded, newest last).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub skipped: VecDeque<Skip>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GroupProgress {
    pub nodes: BTreeMap<String, NodeProgress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeProgress {
    Running,
    Retrying,
    Succeeded,
    Failed,
}

/// What changes in a job entry with every run: the ledger, the runs in progress, the open
/// groups, the skips, and the job's counters and status. The shell stores it apart from the
/// entry (whose job definition is about a kilobyte), so a run rewrites a hundred bytes, not
/// the whole entry; [`JobEntry::set_runtime`] puts the two back together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Runtime {
    running: BTreeMap<String, Execution>,
    groups: BTreeMap<i64, GroupProgress>,
    stored_executions: usize,
    fired_through: Option<Timestamp>,
    skipped: VecDeque<Skip>,
    success_count: u64,
    error_count: u64,
    last_success: Option<Timestamp>,
    last_error: Option<Timestamp>,
    status: String,
}

/// A job's schedule parsed once, with its zone: what the scheduler keeps per job.
#[derive(Debug, Clone)]
pub struct CompiledSchedule {
    /// The (schedule, timezone) it was compiled from, to notice edits.
    pub source: (String, String),
    schedule: Schedule,
    tz: TimeZone,
}

impl CompiledSchedule {
    /// `@after`'s instant and grace.
    pub fn after_window(&self) -> Option<(Timestamp, jiff::SignedDuration)> {
        match self.schedule {
            Schedule::After { at, grace } => Some((at, grace)),
            _ => None,
        }
    }
}

impl JobEntry {
    /// The part of the entry that changes with every run.
    pub fn runtime(&self) -> Runtime {
        let job = &self.job;
        Runtime {
            running: self.running.clone(),
            groups: self.groups.clone(),
            stored_executions: self.stored_executions,
            fired_through: self.fired_through,
            skipped: self.skipped.clone(),
            success_count: job.success_count,
            error_count: job.error_count,
            last_success: job.last_success,
            last_error: job.last_error,
            status: job.status.clone(),
        }
    }

    /// The entry with its run bookkeeping replaced by `runtime` (stored later than the entry).
    pub fn set_runtime(&mut self, runtime: Runtime) {
        let job = &mut self.job;
        self.running = runtime.running;
        self.groups = runtime.groups;
        self.stored_executions = runtime.stored_executions;
        self.fired_through = runtime.fired_through;
        self.skipped = runtime.skipped;
        job.success_count = runtime.success_count;
        job.error_count = runtime.error_count;
        job.last_success = runtime.last_success;
        job.last_error = runtime.last_error;
        job.status = runtime.status;
    }

    /// Parses the job's schedule and zone; `None` if either is invalid (validation refuses
    /// such jobs, so only entries written by an older version could get here).
    pub fn compile(&self) -> Option<CompiledSchedule> {
        let job = &self.job;
        Some(CompiledSchedule {
            source: (job.schedule.clone(), job.timezone.clone()),
            schedule: Schedule::parse(&job.schedule, &job.name).ok()?,
            tz: load_timezone(&job.timezone).ok()?,
        })
    }

    /// The first fire strictly after `after`, honouring the job's zone, `starts_at`,
    /// `expires_at`, `disabled` and chaining. `None`: it will not fire on its own.
    pub fn next_fire_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.next_fire(&self.compile()?, after)
    }

    /// [`Self::next_fire_after`] with a schedule compiled earlier (it must be this job's).
    pub fn next_fire(&self, compiled: &CompiledSchedule, after: Timestamp) -> Option<Timestamp> {
        let job = &self.job;
        if job.disabled || !job.parent_job.is_empty() {
            return None;
        }
        let from = match job.starts_at {
            // Fire no earlier than starts_at: search from just before it.
            Some(s) if s > after => s
                .checked_sub(jiff::SignedDuration::from_nanos(1))
                .unwrap_or(s),
            _ => after,
        };
        let next = match (&compiled.schedule, job.starts_at) {
            // An `@every` job with `starts_at` fires at starts_at, then every interval from
            // it (Dkron's behaviour); without, its phase is when the schedule was set.
            (Schedule::Every(_), Some(s)) if s > after => s,
            (Schedule::Every(_), Some(s)) => compiled.schedule.next_after(from, &compiled.tz, s)?,
            _ => compiled
                .schedule
                .next_after(from, &compiled.tz, self.anchor)?,
        };
        match job.expires_at {
            Some(e) if next > e => None,
            _ => Some(next),
        }
    }
}

/// Frees an emptied map's storage: a `BTreeMap` keeps its root node when its last entry is
/// removed (for `running`, eleven execution slots, about 3 KB), and most jobs are idle most of
/// the time, so with 10,000 jobs that was 30 MB of empty nodes.
fn release_if_empty<K, V>(map: &mut BTreeMap<K, V>) {
    if map.is_empty() {
        *map = BTreeMap::new();
    }
}

/// Every job with its bookkeeping, and the pause flag. The shell reads it only through the
/// queries below and changes it only through [`State::apply`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    pub(crate) jobs: BTreeMap<String, JobEntry>,
    pub(crate) paused: bool,
    #[serde(default)]
    pub(crate) acl: crate::acl::AclState,
    #[serde(default)]
    pub(crate) stats: crate::stats::DailyStats,
}

impl State {
    /// A state loaded back from storage.
    pub fn from_parts(jobs: impl IntoIterator<Item = (String, JobEntry)>, paused: bool) -> State {
        State {
            jobs: jobs.into_iter().collect(),
            paused,
            acl: Default::default(),
            stats: Default::default(),
        }
    }

    /// The same state with the daily execution counts loaded back from storage.
    pub fn with_stats(self, stats: crate::stats::DailyStats) -> State {
        State { stats, ..self }
    }

    /// Daily execution counts.
    pub fn stats(&self) -> &crate::stats::DailyStats {
        &self.stats
    }

    /// The same state with the ACL state loaded back from storage.
    pub fn with_acl(self, acl: crate::acl::AclState) -> State {
        State { acl, ..self }
    }

    /// Policies, tokens and the bootstrap record.
    pub fn acl(&self) -> &crate::acl::AclState {
        &self.acl
    }

    /// Whether job submissions are paused (`POST /v1/pause`).
    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn entry(&self, name: &str) -> Option<&JobEntry> {
        self.jobs.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.jobs.contains_key(name)
    }

    /// Every job, by name.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &JobEntry)> {
        self.jobs.iter()
    }

    pub fn job_names(&self) -> impl Iterator<Item = &String> {
        self.jobs.keys()
    }

    /// Every run in progress, of every job.
    pub fn running(&self) -> impl Iterator<Item = &Execution> {
        self.jobs.values().flat_map(|e| e.running.values())
    }

    /// The job as the API shows it at `now` (computed `next` filled).
    pub fn job_view(&self, name: &str, now: Timestamp) -> Option<Job> {
        self.jobs.get(name).map(|e| view(e, now))
    }

    pub fn apply(&mut self, command: Command) -> (Response, Vec<Effect>) {
        if let Command::Batch { commands } = command {
            let mut responses = Vec::with_capacity(commands.len());
            let mut effects = Vec::new();
            for command in commands {
                let (response, more) = match command {
                    // A nested batch is not something a proposer sends; refuse it whole.
                    Command::Batch { .. } => (
                        Response::Batch {
                            responses: Vec::new(),
                        },
                        Vec::new(),
                    ),
                    command => self.apply(command),
                };
                responses.push(response);
                effects.extend(more);
            }
            return (Response::Batch { responses }, effects);
        }
        let mut effects = Vec::new();
        let result = match command {
            Command::SetJob {
                job,
                now,
                refuse_when_paused,
            } => {
                if refuse_when_paused && self.paused {
                    Err(ApplyError::Paused)
                } else {
                    self.set_job(*job, now, &mut effects)
                }
            }
            Command::DeleteJob { name } => self.delete_job(&name, &mut effects),
            Command::ToggleJob { name, now } => self.toggle_job(&name, now, &mut effects),
            Command::ClaimOccurrence { job, nominal, runs } => {
                self.claim_occurrence(&job, nominal, runs, &mut effects)
            }
            Command::SkipOccurrences {
                job,
                through,
                reason,
            } => self.skip_occurrences(&job, through, reason, &mut effects),
            Command::StartExecution {
                execution,
                enforce_forbid,
                moved_from,
            } => self.start_execution(execution, enforce_forbid, moved_from, &mut effects),
            Command::MoveExecution {
                job,
                execution_id,
                from,
                to,
            } => self.move_execution(&job, &execution_id, &from, to, &mut effects),
            Command::FinishExecution { execution, stopped } => {
                self.finish_execution(execution, stopped, &mut effects)
            }
            Command::DeleteExecutions { job } => self.delete_executions(&job, &mut effects),
            Command::SetPaused { paused } => {
                self.paused = paused;
                Ok(Response::Paused { paused })
            }
            Command::Acl { acl } => self
                .acl
                .apply(acl)
                .inspect(|_| effects.push(Effect::PutAcl)),
            Command::Batch { .. } => unreachable!("batches are unpacked above"),
        };
        match result {
            Ok(response) => (response, effects),
            // A rejected command changes nothing: effects gathered before the error are dropped.
            Err(error) => (Response::Rejected { error }, Vec::new()),
        }
    }

    fn existing(&self, name: &str) -> Result<&JobEntry, ApplyError> {
        self.jobs.get(name).ok_or_else(|| ApplyError::JobNotFound {
            job: name.to_string(),
        })
    }

    fn entry_mut(&mut self, name: &str) -> Result<&mut JobEntry, ApplyError> {
        self.jobs
            .get_mut(name)
            .ok_or_else(|| ApplyError::JobNotFound {
                job: name.to_string(),
            })
    }

    fn set_job(
        &mut self,
        mut job: Job,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, ApplyError> {
        let errors = validate_job(&job);
        if !errors.is_empty() {
            return Err(ApplyError::Invalid { errors });
        }
        let name = job.name.clone();
        if !job.parent_job.is_empty() {
            if !self.jobs.contains_key(&job.parent_job) {
                return Err(ApplyError::ParentNotFound {
                    parent: job.parent_job.clone(),
                });
            }
            // Walk up from the new parent: meeting ourselves means a cycle.
            let mut chain = vec![name.clone(), job.parent_job.clone()];
            let mut cursor = job.parent_job.clone();
            while let Some(parent) = self.jobs.get(&cursor).map(|e| e.job.parent_job.clone()) {
                if parent.is_empty() {
                    break;
                }
                chain.push(parent.clone());
                if parent == name || chain.len() > self.jobs.len() + 2 {
                    return Err(ApplyError::Cycle { chain });
                }
                cursor = parent;
            }
        }
        job.id = name.clone();
        job.next = None;
        let previous = self.jobs.remove(&name);
        let stored_executions = previous.as_ref().map_or(0, |p| p.stored_executions);
        let (anchor, running, groups, old_parent, fired_through, skipped) = match &previous {
            Some(prev) => {
                let p = &prev.job;
                job.success_count = job.success_count.max(p.success_count);
                job.error_count = job.error_count.max(p.error_count);
                job.last_success = job.last_success.max(p.last_success);
                job.last_error = job.last_error.max(p.last_error);
                // Dependents are derived from the children's parent_job; clients can't set them.
                job.dependent_jobs = p.dependent_jobs.clone();
                if !p.status.is_empty() {
                    job.status = p.status.clone();
                }
                let anchor = if p.schedule == job.schedule {
                    prev.anchor
                } else {
                    now
                };
                // Occurrences owed under the old schedule or zone, or while the job was
                // disabled, are not caught up under the new one.
                let fresh_start = p.schedule != job.schedule
                    || p.timezone != job.timezone
                    || (p.disabled && !job.disabled);
                let fired_through = match prev.fired_through {
                    Some(t) if fresh_start => Some(t.max(now)),
                    Some(t) => Some(t),
                    None => Some(now),
                };
                let mut skipped = prev.skipped.clone();
                if let Some(after) = prev.fired_through.filter(|t| fresh_start && *t < now) {
                    let reason = if p.disabled {
                        SkipReason::Disabled
                    } else {
                        SkipReason::Rescheduled
                    };
                    record_skip(
                        &mut skipped,
                        Skip {
                            after,
                            through: now,
                            reason,
                        },
                    );
                }
                (
                    anchor,
                    prev.running.clone(),
                    prev.groups.clone(),
                    p.parent_job.clone(),
                    fired_through,
                    skipped,
                )
            }
            None => {
                job.dependent_jobs = None;
                (
                    now,
                    BTreeMap::new(),
                    BTreeMap::new(),
                    String::new(),
                    Some(now),
                    VecDeque::new(),
                )
            }
        };
        let prev_ledger = previous.as_ref().and_then(|p| p.fired_through);
        let (fired_through, skipped) = after_owed(&job, now, prev_ledger, fired_through, skipped);
        if old_parent != job.parent_job {
            if let Some(parent) = self.jobs.get_mut(&old_parent) {
                let deps = parent.job.dependent_jobs.get_or_insert_with(Vec::new);
                deps.retain(|d| *d != name);
                effects.push(Effect::PutJob(old_parent.clone()));
            }
            if let Some(parent) = self.jobs.get_mut(&job.parent_job) {
                let deps = parent.job.dependent_jobs.get_or_insert_with(Vec::new);
                if !deps.contains(&name) {
                    deps.push(name.clone());
                }
                effects.push(Effect::PutJob(job.parent_job.clone()));
            }
        }
        self.jobs.insert(
            name.clone(),
            JobEntry {
                job: job.clone(),
                anchor,
                running,
                groups,
                stored_executions,
                fired_through,
                skipped,
            },
        );
        effects.push(Effect::PutJob(name));
        Ok(Response::Job { job: Box::new(job) })
    }

    fn delete_job(
        &mut self,
        name: &str,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, ApplyError> {
        let entry = self.existing(name)?;
        let children = entry.job.dependents().to_vec();
        if !children.is_empty() {
            return Err(ApplyError::HasDependents { children });
        }
        let entry = self.jobs.remove(name).expect("checked above");
        if let Some(parent) = self.jobs.get_mut(&entry.job.parent_job) {
            if let Some(deps) = parent.job.dependent_jobs.as_mut() {
                deps.retain(|d| d != name);
            }
            effects.push(Effect::PutJob(entry.job.parent_job.clone()));
        }
        effects.push(Effect::RemoveJob(name.to_string()));
        effects.push(Effect::DeleteExecutionsOf(name.to_string()));
        Ok(Response::Job {
            job: Box::new(entry.job),
        })
    }

    fn toggle_job(
        &mut self,
        name: &str,
        now: Option<Timestamp>,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, ApplyError> {
        let entry = self.entry_mut(name)?;
        entry.job.disabled = !entry.job.disabled;
        if let (false, Some(now)) = (entry.job.disabled, now) {
            // Enabled again: what fell due while disabled is not owed.
            if let Some(after) = entry.fired_through.filter(|t| *t < now) {
                record_skip(
                    &mut entry.skipped,
                    Skip {
                        after,
                        through: now,
                        reason: SkipReason::Disabled,
                    },
                );
            }
            entry.fired_through = Some(entry.fired_through.map_or(now, |t| t.max(now)));
        }
        let job = entry.job.clone();
        effects.push(Effect::PutJob(name.to_string()));
        Ok(Response::Job { job: Box::new(job) })
    }

    fn claim_occurrence(
        &mut self,
        name: &str,
        nominal: Timestamp,
        runs: Vec<Execution>,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, ApplyError> {
        let entry = self.entry_mut(name)?;
        if let Some(fired_through) = entry.fired_through {
            if nominal <= fired_through {
                return Err(ApplyError::AlreadyDecided {
                    job: name.to_string(),
                    nominal,
                    fired_through,
                });
            }
            // Claims are contiguous: only the next occurrence owed can be claimed, so the
            // ledger never passes an occurrence without a claim or a skip record for it.
            let expected = entry.next_fire_after(fired_through);
            if expected != Some(nominal) {
                return Err(ApplyError::OutOfOrder {
                    job: name.to_string(),
                    nominal,
                    expected,
                });
            }
        }
        let after = entry.fired_through.unwrap_or(nominal);
        entry.fired_through = Some(nominal);
        let (verdict, reason) = if runs.is_empty() {
            (Verdict::NoTarget, SkipReason::NoTarget)
        } else if entry.job.forbids_overlap() && !entry.running.is_empty() {
            let running = entry.running.keys().cloned().collect();
            (Verdict::SkippedForbid { running }, SkipReason::Forbid)
        } else {
            let executions = runs.iter().map(|r| r.id.clone()).collect();
            for mut run in runs {
                run.job_name = name.to_string();
                run.scheduled_at = Some(nominal);
                // Cannot fail: the job exists and forbid was decided above.
                self.start_execution(run, false, None, effects)?;
            }
            return Ok(Response::Claimed {
                verdict: Verdict::Ran { executions },
            });
        };
        record_skip(
            &mut entry.skipped,
            Skip {
                after,
                through: nominal,
                reason,
            },
        );
        effects.push(Effect::PutRuntime(name.to_string()));
        Ok(Response::Claimed { verdict })
    }

    fn skip_occurrences(
        &mut self,
        name: &str,
        through: Timestamp,
        reason: SkipReason,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, ApplyError> {
        let entry = self.entry_mut(name)?;
        let Some(after) = entry.fired_through else {
            // No ledger (an entry older than it): nothing is owed, nothing to skip.
            return Ok(Response::Skipped);
        };
        if through <= after {
            return Err(ApplyError::AlreadySkipped {
                job: name.to_string(),
                through,
                fired_through: after,
            });
        }
        entry.fired_through = Some(through);
        record_skip(
            &mut entry.skipped,
            Skip {
                after,
                through,
                reason,
            },
        );
        effects.push(Effect::PutRuntime(name.to_string()));
        Ok(Response::Skipped)
    }

    fn move_execution(
        &mut self,
        job: &str,
        execution_id: &str,
        from: &str,
        to: String,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, ApplyError> {
        let entry = self.entry_mut(job)?;
        let Some(run) = entry
            .running
            .get_mut(execution_id)
            .filter(|r| r.node_name == from)
        else {
            return Err(ApplyError::NotRunningOn {
                job: job.to_string(),
                execution_id: execution_id.to_string(),
                node: from.to_string(),
            });
        };
        run.node_name = to.clone();
        let moved = run.clone();
        if let Some(group) = entry.groups.get_mut(&moved.group) {
            group.nodes.remove(from);
            group.nodes.insert(to, NodeProgress::Running);
        }
        effects.push(Effect::PutRuntime(job.to_string()));
        Ok(Response::Started { execution: moved })
    }

    fn start_execution(
        &mut self,
        mut execution: Execution,
        enforce_forbid: bool,
        moved_from: Option<String>,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, ApplyError> {
        let entry = self.entry_mut(&execution.job_name)?;
        // Runs of one trigger (one group) on several nodes are one run of the job: only a
        // run from another trigger blocks a `forbid` job.
        if enforce_forbid && entry.job.forbids_overlap() {
            let others: Vec<String> = entry
                .running
                .values()
                .filter(|r| r.group != execution.group)
                .map(|r| r.id.clone())
                .collect();
            if !others.is_empty() {
                return Err(ApplyError::AlreadyRunning {
                    job: execution.job_name.clone(),
                    running: others,
                });
            }
        }
        execution.finished_at = None;
        execution.success = false;
        entry
            .running
            .insert(execution.id.clone(), execution.clone());
        let group = entry.groups.entry(execution.group).or_default();
        if let Some(from) = moved_from.filter(|from| *from != execution.node_name) {
            group.nodes.remove(&from);
        }
        group
            .nodes
            .insert(execution.node_name.clone(), NodeProgress::Running);
        while entry.groups.len() > MAX_OPEN_GROUPS {
            entry.groups.pop_first();
        }
        // The record of a run is written once, when it finishes: until then the entry's
        // `running` copy is the record (readers join the two), so a run costs the store one
        // record write instead of two.
        effects.push(Effect::PutRuntime(execution.job_name.clone()));
        Ok(Response::Started { execution })
    }

    fn finish_execution(
        &mut self,
        mut execution: Execution,
        stopped: bool,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, ApplyError> {
        // Output stays out of consensus: whatever the proposer sent, the record keeps a tail.
        if execution.output.len() > INLINE_OUTPUT_LIMIT {
            execution.output = tail_utf8(&execution.output, INLINE_OUTPUT_LIMIT).to_string();
        }
        let name = execution.job_name.clone();
        let entry = self.entry_mut(&name)?;
        // Only a run still running on that node can finish, once: a second report of the same
        // run (two leaders collecting it across a hand-over, or a stale one after a move) would
        // count it twice and could retry it or trigger its children twice.
        if entry
            .running
            .get(&execution.id)
            .is_none_or(|r| r.node_name != execution.node_name)
        {
            return Err(ApplyError::NotRunningOn {
                job: name,
                execution_id: execution.id,
                node: execution.node_name,
            });
        }
        entry.running.remove(&execution.id);
        release_if_empty(&mut entry.running);
        let finished = execution.finished_at;
        if let Some(at) = finished.or(execution.started_at) {
            let (day, dropped) = self.stats.record(at, execution.success);
            effects.push(Effect::PutStats(day));
            effects.extend(dropped.into_iter().map(Effect::RemoveStats));
        }
        let entry = self.entry_mut(&name)?;
        if execution.success {
            entry.job.success_count += 1;
            entry.job.last_success = entry.job.last_success.max(finished);
        } else {
            entry.job.error_count += 1;
            entry.job.last_error = entry.job.last_error.max(finished);
        }
        let retry = !execution.success
            && !stopped
            && execution.attempt < entry.job.retries.saturating_add(1);
        let progress = if retry {
            NodeProgress::Retrying
        } else if execution.success {
            NodeProgress::Succeeded
        } else {
            NodeProgress::Failed
        };
        let group = entry.groups.entry(execution.group).or_default();
        group.nodes.insert(execution.node_name.clone(), progress);
        let mut outcome = FinishOutcome {
            retry,
            ..FinishOutcome::default()
        };
        let open = group
            .nodes
            .values()
            .any(|p| matches!(p, NodeProgress::Running | NodeProgress::Retrying));
        if !open {
            let ok = group
                .nodes
                .values()
                .filter(|p| **p == NodeProgress::Succeeded)
                .count();
            let status = if ok == group.nodes.len() {
                STATUS_SUCCESS
            } else if ok == 0 {
                STATUS_FAILED
            } else {
                STATUS_PARTIALLY_FAILED
            };
            entry.groups.remove(&execution.group);
            release_if_empty(&mut entry.groups);
            entry.job.status = status.to_string();
            outcome.group_done = true;
            outcome.status = status.to_string();
            if status == STATUS_SUCCESS {
                outcome.dependents = entry.job.dependents().to_vec();
            }
        }
        effects.push(Effect::PutExecution(execution));
        entry.stored_executions += 1;
        if entry.stored_executions > MAX_EXECUTIONS_PER_JOB {
            effects.push(Effect::PruneExecutions {
                job: name.clone(),
                remove: entry.stored_executions - MAX_EXECUTIONS_PER_JOB,
            });
            entry.stored_executions = MAX_EXECUTIONS_PER_JOB;
        }
        let ephemeral_done = outcome.status == STATUS_SUCCESS
            && entry.job.ephemeral
            && entry.job.dependents().is_empty()
            && entry.running.is_empty();
        if ephemeral_done {
            let deleted = self.delete_job(&name, effects);
            outcome.deleted = deleted.is_ok();
        } else {
            effects.push(Effect::PutRuntime(name));
        }
        Ok(Response::Finished(outcome))
    }

    fn delete_executions(
        &mut self,
        name: &str,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, ApplyError> {
        let entry = self.entry_mut(name)?;
        entry.job.success_count = 0;
        entry.job.error_count = 0;
        entry.job.last_success = None;
        entry.job.last_error = None;
        entry.running.clear();
        entry.groups.clear();
        entry.stored_executions = 0;
        let job = entry.job.clone();
        effects.push(Effect::PutJob(name.to_string()));
        effects.push(Effect::DeleteExecutionsOf(name.to_string()));
        Ok(Response::Job { job: Box::new(job) })
    }
}

/// The API view of a stored job at `now`.
/// `@after` (Dkron 4.1): a job set within the grace after its instant still owes that one
/// occurrence, so the ledger stays just before it and the leader fires it at once; set past
/// the grace, the occurrence is recorded as skipped (past its deadline) and never runs. An
/// occurrence the previous ledger already decided is left alone: the ledger never moves back
/// over a decision.
fn after_owed(
    job: &Job,
    now: Timestamp,
    prev_ledger: Option<Timestamp>,
    fired_through: Option<Timestamp>,
    mut skipped: VecDeque<Skip>,
) -> (Option<Timestamp>, VecDeque<Skip>) {
    let window = Schedule::parse(&job.schedule, &job.name)
        .ok()
        .and_then(|s| match s {
            Schedule::After { at, grace } => Some((at, grace)),
            _ => None,
        });
    let Some((at, grace)) = window else {
        return (fired_through, skipped);
    };
    let Ok(before) = at.checked_sub(jiff::SignedDuration::from_nanos(1)) else {
        return (fired_through, skipped);
    };
    if at > now || job.disabled || prev_ledger.is_some_and(|t| t >= at) {
        return (fired_through, skipped);
    }
    if at.checked_add(grace).is_ok_and(|end| now <= end) {
        // A "rescheduled" skip just recorded over it stops short of it now.
        for s in skipped.iter_mut() {
            if s.after < at && at <= s.through {
                s.through = before;
            }
        }
        skipped.retain(|s| s.after < s.through);
        return (Some(before), skipped);
    }
    let covered = skipped.iter().any(|s| s.after < at && at <= s.through);
    if !covered {
        record_skip(
            &mut skipped,
            Skip {
                after: before,
                through: at,
                reason: SkipReason::PastDeadline,
            },
        );
    }
    (fired_through, skipped)
}

pub fn view(entry: &JobEntry, now: Timestamp) -> Job {
    let mut job = entry.job.clone();
    job.id = job.name.clone();
    job.next = entry.next_fire_after(now);
    job
}

#[cfg(test)]
mod tests;
