//! The fault suite's judgement, apart from the harness that gathers its evidence.
//!
//! Pure functions over what the harness saw: sink hits (job, nominal second), execution
//! records, `/occurrences` verdicts and acknowledged writes. Each rule has a unit test that
//! plants the defect it must catch (a duplicate run, a late duplicate, two records for one
//! occurrence, a dropped verdict, an unexplained or misplaced failure, too many failures, a
//! lost write, too few writes) and sees it reported.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One execution record of a scheduled occurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub job: String,
    pub id: String,
    pub group: i64,
    /// The nominal second it belongs to.
    pub second: i64,
    pub attempt: u64,
    pub running: bool,
    pub success: bool,
    pub node: String,
    pub output: String,
}

impl Run {
    /// A record as `GET /v1/jobs/:job/executions` lists it; `None` for manual runs (no
    /// nominal time).
    pub fn from_json(v: &Value) -> Option<Run> {
        let second = v["scheduled_at"]
            .as_str()?
            .parse::<jiff::Timestamp>()
            .ok()?
            .as_second();
        Some(Run {
            job: v["job_name"].as_str()?.to_string(),
            id: v["id"].as_str()?.to_string(),
            group: v["group"].as_i64().unwrap_or(0),
            second,
            attempt: v["attempt"].as_u64().unwrap_or(1),
            running: v["finished_at"]
                .as_str()
                .is_none_or(|t| t.starts_with("0001-01-01")),
            success: v["success"].as_bool().unwrap_or(false),
            node: v["node_name"].as_str().unwrap_or_default().to_string(),
            output: v["output"].as_str().unwrap_or_default().to_string(),
        })
    }
}

/// What `/occurrences` says of one occurrence.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ran { ids: Vec<String> },
    Skipped { reason: String },
    Pending,
    NoRecord,
}

impl Verdict {
    /// One element of `GET /v1/jobs/:job/occurrences`, with its nominal second.
    pub fn from_json(v: &Value) -> Option<(i64, Verdict)> {
        let second = v["scheduled_at"]
            .as_str()?
            .parse::<jiff::Timestamp>()
            .ok()?
            .as_second();
        let verdict = match v["outcome"].as_str()? {
            "ran" => Verdict::Ran {
                ids: v["executions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["id"].as_str().map(str::to_string))
                    .collect(),
            },
            "skipped" => Verdict::Skipped {
                reason: v["reason"].as_str().unwrap_or_default().to_string(),
            },
            "pending" => Verdict::Pending,
            _ => Verdict::NoRecord,
        };
        Some((second, verdict))
    }
}

/// What a phase did to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL and a restart.
    Kill,
    /// A graceful restart.
    Restart,
    /// Cut off the network.
    Partition,
}

/// One phase: its fault, the node it hit, how long the fault lasted, and the window of
/// nominal seconds `[from, to)` it is judged on.
#[derive(Debug, Clone)]
pub struct Phase {
    pub label: String,
    pub kind: FaultKind,
    pub node: String,
    pub fault_secs: i64,
    pub from: i64,
    pub to: i64,
}

/// Who a failed run's reason blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// The run was in flight on a node the fault hit (killed, restarted, fenced, cut off).
    Scheduler,
    /// The job's own work failed (its HTTP call from a cut-off node).
    Job,
}

/// The known reasons a run fails under these faults: (a phrase of its output, a kind in
/// words, who is to blame). Anything else fails the suite.
const REASONS: &[(&str, &str, Blame)] = &[
    (
        "stopped answering",
        "the node stopped answering while running it (lease ran out)",
        Blame::Scheduler,
    ),
    (
        "started on this node before",
        "started on a node that then restarted (lost)",
        Blame::Scheduler,
    ),
    (
        "restarted after the run was due",
        "due before its node restarted (lost)",
        Blame::Scheduler,
    ),
    (
        "no longer a member",
        "its node left before the run started",
        Blame::Scheduler,
    ),
    (
        "shutting down; the run was not started",
        "its node was shutting down",
        Blame::Scheduler,
    ),
    (
        "error trying to connect",
        "its order could not be delivered",
        Blame::Scheduler,
    ),
    (
        "refused: run order from leader term",
        "ordered by a deposed leader (fenced)",
        Blame::Scheduler,
    ),
    (
        "error sending request",
        "the job's own HTTP call failed (its node was cut off)",
        Blame::Job,
    ),
];

fn reason_of(output: &str) -> Option<(&'static str, Blame)> {
    let line = output.lines().next().unwrap_or_default();
    REASONS
        .iter()
        .find(|(needle, _, _)| line.contains(needle))
        .map(|(_, kind, blame)| (*kind, *blame))
}

/// One phase's findings. `problems` fail the suite; the rest is reported.
#[derive(Debug, Default)]
pub struct Findings {
    pub occurrences: usize,
    pub duplicates: Vec<(String, i64)>,
    /// No sink hit and no record or verdict at all.
    pub silent: Vec<(String, i64)>,
    /// No sink hit yet, and a run of it is still recorded as running (its lease has not run
    /// out): neither a miss nor a verdict yet.
    pub in_flight: usize,
    /// Failed runs with a known reason, by kind.
    pub failed: BTreeMap<String, usize>,
    pub problems: Vec<String>,
}

impl Findings {
    pub fn failed_total(&self) -> usize {
        self.failed.values().sum()
    }
}

/// Judges every (job, nominal second) of `phase`'s window. `hits` counts sink hits by
/// (job, second); `runs` are the jobs' records; `verdicts` what `/occurrences` said of the
/// occurrences that did not reach the sink.
pub fn judge_phase(
    phase: &Phase,
    jobs: &[String],
    hits: &BTreeMap<(String, i64), usize>,
    runs: &[Run],
    verdicts: &BTreeMap<(String, i64), Verdict>,
) -> Findings {
    let mut by_occurrence: BTreeMap<(&str, i64), Vec<&Run>> = BTreeMap::new();
    for run in runs {
        by_occurrence
            .entry((run.job.as_str(), run.second))
            .or_default()
            .push(run);
    }
    let mut f = Findings::default();
    let (mut blamed_scheduler, mut blamed_job) = (0usize, 0usize);
    for job in jobs {
        for second in phase.from..phase.to {
            f.occurrences += 1;
            let key = (job.clone(), second);
            match hits.get(&key).copied().unwrap_or(0) {
                0 => {}
                1 => continue,
                _ => {
                    f.duplicates.push(key);
                    continue;
                }
            }
            let records = by_occurrence
                .get(&(job.as_str(), second))
                .cloned()
                .unwrap_or_default();
            let verdict = verdicts.get(&key);
            if records.iter().any(|r| r.running) {
                f.in_flight += 1;
                continue;
            }
            let Some(last) = records.iter().max_by_key(|r| r.attempt) else {
                match verdict {
                    Some(Verdict::Skipped { reason }) => f.problems.push(format!(
                        "{job} @ {second}: skipped ({reason}) although nothing asked for a skip"
                    )),
                    _ => f.silent.push(key),
                }
                continue;
            };
            if records.iter().any(|r| r.success) {
                f.problems.push(format!(
                    "{job} @ {second}: recorded as a success but never reached the sink"
                ));
                continue;
            }
            let Some((kind, blame)) = reason_of(&last.output) else {
                f.problems.push(format!(
                    "{job} @ {second}: failed for a reason the suite does not know: {:?}",
                    last.output.lines().next().unwrap_or_default()
                ));
                continue;
            };
            *f.failed.entry(kind.to_string()).or_default() += 1;
            if last.node != phase.node {
                f.problems.push(format!(
                    "{job} @ {second}: failed on {}, which this phase did not touch ({kind})",
                    last.node
                ));
            }
            match verdict {
                Some(Verdict::Ran { ids }) if ids.contains(&last.id) => {}
                other => f.problems.push(format!(
                    "{job} @ {second}: failed, but /occurrences says {other:?} instead of its execution {}",
                    last.id
                )),
            }
            match blame {
                Blame::Scheduler => blamed_scheduler += 1,
                Blame::Job => blamed_job += 1,
            }
        }
    }
    // A node runs at most one run of each job at a time here (they take milliseconds), so a
    // fault can catch at most one in flight per job.
    if blamed_scheduler > jobs.len() {
        f.problems.push(format!(
            "{}: {blamed_scheduler} runs failed for the scheduler's reasons, more than the {} jobs that could have had one in flight on {}",
            phase.label,
            jobs.len(),
            phase.node
        ));
    }
    if blamed_job > 0 && phase.kind != FaultKind::Partition {
        f.problems.push(format!(
            "{}: {blamed_job} jobs' own calls failed although no node was cut off",
            phase.label
        ));
    }
    let job_cap = jobs.len() * usize::try_from(phase.fault_secs + 2).unwrap_or(0);
    if blamed_job > job_cap {
        f.problems.push(format!(
            "{}: {blamed_job} jobs' own calls failed, more than one per job and second of the {} s cut",
            phase.label, phase.fault_secs
        ));
    }
    f
}

/// Every execution record seen over the whole run, by id (the latest state of each), so
/// that a second record of an occurrence is caught whenever it appears.
#[derive(Debug, Default)]
pub struct Ledger {
    runs: BTreeMap<String, Run>,
}

impl Ledger {
    pub fn record(&mut self, runs: &[Run]) {
        for run in runs {
            self.runs.insert(run.id.clone(), run.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Occurrences with more than one trigger (distinct groups) or more than one success.
    pub fn duplicates(&self) -> Vec<String> {
        let mut per: BTreeMap<(&str, i64), Vec<&Run>> = BTreeMap::new();
        for run in self.runs.values() {
            per.entry((run.job.as_str(), run.second))
                .or_default()
                .push(run);
        }
        per.into_iter()
            .filter_map(|((job, second), runs)| {
                let groups: BTreeSet<i64> = runs.iter().map(|r| r.group).collect();
                let successes = runs.iter().filter(|r| r.success).count();
                (groups.len() > 1 || successes > 1).then(|| {
                    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
                    format!("{job} @ {second}: {} execution records in {} groups, {successes} successful: {ids:?}", runs.len(), groups.len())
                })
            })
            .collect()
    }
}

/// Sink hits of the whole run judged again at the end: a second run of an occurrence that
/// arrived after its phase was checked is caught here.
pub fn late_duplicates(hits: &[(String, i64)], from: i64, to: i64) -> Vec<(String, i64)> {
    let mut count: BTreeMap<&(String, i64), usize> = BTreeMap::new();
    for hit in hits.iter().filter(|h| (from..to).contains(&h.1)) {
        *count.entry(hit).or_default() += 1;
    }
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k.clone())
        .collect()
}

/// The job writes the suite makes during the faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteKind {
    Create,
    Update,
    Toggle,
    Delete,
}

/// What a written job must look like at the end: present or not, the version its
/// `metadata.v` carries, and `disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub exists: bool,
    pub version: u64,
    pub disabled: bool,
}

/// A job as listed at the end: its `metadata.v` and `disabled`.
pub type Present = BTreeMap<String, (u64, bool)>;

/// Acknowledged writes and what they imply. A write that got no answer (a timeout, a
/// dropped connection) may or may not have happened: its job is uncertain from then on and
/// left out of the final check. Errors are counted, never dropped.
#[derive(Debug, Default)]
pub struct Writes {
    expected: BTreeMap<String, Option<Expected>>,
    pub acked: BTreeMap<WriteKind, usize>,
    pub errors: BTreeMap<String, usize>,
    next: u64,
}

impl Writes {
    /// The next write: creates, updates, toggles and deletes in turn; all but creates on a
    /// job whose state is certain (a create when there is none).
    pub fn plan(&mut self) -> (WriteKind, String, u64) {
        self.next += 1;
        let version = self.next;
        let certain: Vec<&String> = self
            .expected
            .iter()
            .filter(|(_, e)| e.is_some_and(|e| e.exists))
            .map(|(n, _)| n)
            .collect();
        // Each cycle of six leaves one more job behind, so updates and toggles are checked
        // on jobs that are still there at the end.
        let kind = match version % 6 {
            1 | 4 => WriteKind::Create,
            2 => WriteKind::Update,
            3 | 5 => WriteKind::Toggle,
            _ => WriteKind::Delete,
        };
        let target = match kind {
            WriteKind::Create => None,
            WriteKind::Delete => certain.first(),
            WriteKind::Update | WriteKind::Toggle => certain.last(),
        };
        match target {
            Some(name) => (kind, (*name).clone(), version),
            None => (WriteKind::Create, format!("w{version}"), version),
        }
    }

    /// `name`'s state before `kind`, for the request body (`disabled` for a toggle).
    pub fn current(&self, name: &str) -> Option<Expected> {
        self.expected.get(name).copied().flatten()
    }

    pub fn acknowledged(&mut self, kind: WriteKind, name: &str, version: u64) {
        *self.acked.entry(kind).or_default() += 1;
        let before = self.current(name);
        let after = match kind {
            WriteKind::Create => Expected {
                exists: true,
                version,
                disabled: false,
            },
            WriteKind::Update => Expected {
                version,
                ..before.unwrap_or(Expected {
                    exists: true,
                    version,
                    disabled: false,
                })
            },
            WriteKind::Toggle => {
                let b = before.unwrap_or(Expected {
                    exists: true,
                    version: 0,
                    disabled: false,
                });
                Expected {
                    disabled: !b.disabled,
                    ..b
                }
            }
            WriteKind::Delete => Expected {
                exists: false,
                version: 0,
                disabled: false,
            },
        };
        // A write to an uncertain job leaves it uncertain.
        let entry = self.expected.entry(name.to_string()).or_insert(None);
        if entry.is_some() || kind == WriteKind::Create {
            *entry = Some(after);
        }
    }

    /// A write that got an answer refusing it (5xx, 4xx): nothing happened.
    pub fn refused(&mut self, why: &str) {
        *self.errors.entry(why.to_string()).or_default() += 1;
    }

    /// A write with no answer: it may have happened.
    pub fn unanswered(&mut self, name: &str, why: &str) {
        *self.errors.entry(why.to_string()).or_default() += 1;
        self.expected.insert(name.to_string(), None);
    }

    /// Every acknowledged write holds in `present`, and there were at least `minimum` of
    /// each kind.
    pub fn check(&self, present: &Present, minimum: usize) -> Vec<String> {
        let mut problems = Vec::new();
        for kind in [
            WriteKind::Create,
            WriteKind::Update,
            WriteKind::Toggle,
            WriteKind::Delete,
        ] {
            let n = self.acked.get(&kind).copied().unwrap_or(0);
            if n < minimum {
                problems.push(format!(
                    "only {n} acknowledged {kind:?} writes during the faults (at least {minimum} needed for the check to mean anything)"
                ));
            }
        }
        for (name, expected) in &self.expected {
            let Some(e) = expected else { continue };
            match (e.exists, present.get(name)) {
                (true, None) => problems.push(format!("{name}: acknowledged, but missing")),
                (false, Some(_)) => {
                    problems.push(format!("{name}: deleted (acknowledged), but present"))
                }
                (true, Some(&(version, disabled))) => {
                    if version != e.version {
                        problems.push(format!(
                            "{name}: version {version}, but version {} was acknowledged",
                            e.version
                        ));
                    }
                    if disabled != e.disabled {
                        problems.push(format!(
                            "{name}: disabled = {disabled}, but {} was acknowledged",
                            e.disabled
                        ));
                    }
                }
                (false, None) => {}
            }
        }
        problems
    }

    /// Jobs whose final state the check asserts.
    pub fn certain(&self) -> usize {
        self.expected.values().filter(|e| e.is_some()).count()
    }
}

#[cfg(test)]
mod tests;
