//! The replicated-log commands and what applying them answers.
//!
//! This is a persisted protocol: entries written today are replayed by future versions, so
//! variants are only ever added, and every field that may be missing in old entries has a
//! default. Timestamps and ids are stamped by the leader before proposing, never in `apply`.
//! Execution output is not carried here beyond a short tail (see ARCHITECTURE.md).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::job::{Execution, Job};
use crate::validate::FieldError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Create or fully replace a job (Dkron's SetJob). `now` anchors a new schedule's phase.
    /// With `refuse_when_paused` (a submission through the API) it is refused while job
    /// submissions are paused — decided here, so a create racing a pause cannot slip through;
    /// a restore is not subject to the pause (absent in older entries: not subject either).
    SetJob {
        job: Box<Job>,
        now: Timestamp,
        #[serde(default)]
        refuse_when_paused: bool,
    },
    DeleteJob {
        name: String,
    },
    /// Flip `disabled` atomically (Dkron read-modify-wrote it from a possibly stale replica).
    /// `now` (absent in entries older than the fire ledger) moves the ledger of a job being
    /// enabled, so occurrences due while it was disabled are not caught up.
    ToggleJob {
        name: String,
        #[serde(default)]
        now: Option<Timestamp>,
    },
    /// Claim a run: records it as running. With `enforce_forbid`, refused while the job
    /// (`concurrency: forbid`) has another run in progress — decided here, atomically.
    StartExecution {
        execution: Execution,
        enforce_forbid: bool,
        /// A retry that moved off the node named here (it became unreachable or left): that
        /// node no longer counts toward the group's outcome.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        moved_from: Option<String>,
    },
    /// A run whose order never reached its node (the connection failed, so it certainly did
    /// not start there) moves to node `to`, keeping its execution id: the occurrence still
    /// runs once. Refused unless the run is still recorded as running on `from`.
    MoveExecution {
        job: String,
        execution_id: String,
        from: String,
        to: String,
    },
    /// Claim one scheduled occurrence in the fire ledger. Refused when an occurrence at or
    /// after `nominal` was already decided, so no occurrence is fired twice, whoever leads.
    /// Otherwise the ledger moves to `nominal` and the verdict says what happened: `runs`
    /// (every target of the occurrence, one group) started, or skipped because the job's
    /// concurrency is `forbid` and a run is still going, or nothing eligible to run it.
    ClaimOccurrence {
        job: String,
        nominal: Timestamp,
        runs: Vec<Execution>,
    },
    /// Decide, without running them, the occurrences after the job's ledger up to `through`
    /// (catch-up policy or deadline): the ledger moves to `through` and a skip is recorded.
    /// Refused if the ledger is already there.
    SkipOccurrences {
        job: String,
        through: Timestamp,
        reason: crate::occurrence::SkipReason,
    },
    /// Record a finished run. Its output is cut to its last [`crate::INLINE_OUTPUT_LIMIT`]
    /// bytes here, whatever the proposer sent: the whole output stays on the node.
    FinishExecution {
        execution: Execution,
        /// The run was stopped (by a user, or replaced): it is not retried.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stopped: bool,
    },
    /// Delete a job's executions and reset its counters.
    DeleteExecutions {
        job: String,
    },
    /// Pause or resume job submissions cluster-wide.
    SetPaused {
        paused: bool,
    },
    /// ACL administration: policies, tokens, the bootstrap.
    Acl {
        acl: crate::acl::AclCommand,
    },
    /// Several commands in one log entry, applied in order (group commit: the proposer packs
    /// whatever queued up while the previous entry was being committed). Never nested.
    Batch {
        commands: Vec<Command>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Raft's own entries (blank, membership).
    None,
    Job {
        job: Box<Job>,
    },
    Started {
        execution: Execution,
    },
    Finished(FinishOutcome),
    /// A [`Command::ClaimOccurrence`] was decided.
    Claimed {
        verdict: Verdict,
    },
    Paused {
        paused: bool,
    },
    Rejected {
        error: ApplyError,
    },
    /// A [`Command::SkipOccurrences`] was recorded.
    Skipped,
    /// A [`Command::Acl`] was applied.
    Acl,
    /// One response per command of a [`Command::Batch`], in order.
    Batch {
        responses: Vec<Response>,
    },
}

/// What became of one scheduled occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Its runs started, with these execution ids.
    Ran { executions: Vec<String> },
    /// Not run: `concurrency` is `forbid` and these runs were still going.
    SkippedForbid { running: Vec<String> },
    /// Not run: no alive node matched the job's tags.
    NoTarget,
}

/// What the leader must do after a run finished, decided by the state machine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FinishOutcome {
    /// The failed run gets another attempt on the same group.
    pub retry: bool,
    /// Every target of the trigger has finished; `status` is final for it.
    pub group_done: bool,
    pub status: String,
    /// Children to trigger (the group succeeded).
    pub dependents: Vec<String>,
    /// The job was ephemeral and has been deleted.
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApplyError {
    #[error("job {job} not found")]
    JobNotFound { job: String },
    #[error("specified parent job not found")]
    ParentNotFound { parent: String },
    #[error("could not delete job with dependent jobs, delete children first: {children:?}")]
    HasDependents { children: Vec<String> },
    #[error("parent_job would create a cycle: {}", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    #[error("{}", crate::validate::summary(errors))]
    Invalid { errors: Vec<FieldError> },
    #[error("occurrence {nominal} of job {job} was already decided (ledger at {fired_through})")]
    AlreadyDecided {
        job: String,
        nominal: Timestamp,
        fired_through: Timestamp,
    },
    #[error(
        "occurrences of job {job} through {through} were already decided (ledger at {fired_through})"
    )]
    AlreadySkipped {
        job: String,
        through: Timestamp,
        fired_through: Timestamp,
    },
    #[error(
        "occurrence {nominal} of job {job} is not the next one owed ({expected:?}); claims are contiguous"
    )]
    OutOfOrder {
        job: String,
        nominal: Timestamp,
        expected: Option<Timestamp>,
    },
    #[error("execution {execution_id} of job {job} is not running on node {node}")]
    NotRunningOn {
        job: String,
        execution_id: String,
        node: String,
    },
    #[error("job {job} is already running and its concurrency is forbid")]
    AlreadyRunning { job: String, running: Vec<String> },
    #[error("New job submissions are currently paused: POST /v1/unpause to resume")]
    Paused,
    #[error(
        "ACL bootstrap already done (reset index {reset_index}): to bootstrap again, write {reset_index} to <data-dir>/acl-bootstrap-reset on the server that answers and retry"
    )]
    AclBootstrapDone { reset_index: u64 },
    #[error("ACL policy {name} not found")]
    PolicyNotFound { name: String },
    #[error("ACL token {accessor} not found")]
    TokenNotFound { accessor: String },
    #[error("ACL policies not found: {}: create them first (dkron acl policy apply)", names.join(", "))]
    UnknownPolicies { names: Vec<String> },
    #[error("an ACL token with this secret or accessor already exists")]
    TokenExists,
}
