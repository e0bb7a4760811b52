//! Dkron's job and execution records, exactly as its REST API shows them.
//!
//! These structs are both the API shape and the stored shape: Dkron clients read back what
//! they wrote, so keeping one definition avoids drift. Computed fields (`status`, `next`,
//! counters) are filled by the state machine and by [`crate::state::State::job_view`].

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::timefmt;
use crate::validate::FieldError;

/// A small string map (tags, metadata, executor settings): sorted like a `BTreeMap`, so the
/// JSON keeps its key order, but held in one `Vec` — with 10,000 jobs the B-tree nodes of these
/// one- or two-entry maps were 11 MB of the heap. Always a JSON object, empty ones too
/// (`LiteMap` on its own writes an empty map as `[]`, which Dkron clients cannot decode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StringMap(litemap::LiteMap<String, String>);

impl StringMap {
    pub fn new() -> StringMap {
        StringMap::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Deref for StringMap {
    type Target = litemap::LiteMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for StringMap {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Serialize for StringMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter())
    }
}

impl FromIterator<(String, String)> for StringMap {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        StringMap(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a StringMap {
    type Item = (&'a String, &'a String);
    type IntoIter = Box<dyn Iterator<Item = (&'a String, &'a String)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.0.iter())
    }
}

/// A scheduled task. Field order follows Dkron's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Job {
    /// Always equal to `name` when read back; ignored on input.
    pub id: String,
    pub name: String,
    pub displayname: String,
    pub timezone: String,
    pub schedule: String,
    pub owner: String,
    pub owner_email: String,
    pub success_count: u64,
    pub error_count: u64,
    #[serde(with = "timefmt::nullable")]
    pub last_success: Option<Timestamp>,
    #[serde(with = "timefmt::nullable")]
    pub last_error: Option<Timestamp>,
    pub disabled: bool,
    pub tags: Option<StringMap>,
    pub metadata: Option<StringMap>,
    pub retries: u32,
    pub dependent_jobs: Option<Vec<String>>,
    pub parent_job: String,
    pub processors: BTreeMap<String, StringMap>,
    pub concurrency: String,
    pub executor: String,
    pub executor_config: Option<StringMap>,
    pub status: String,
    #[serde(with = "timefmt::zero_is_none")]
    pub next: Option<Timestamp>,
    pub ephemeral: bool,
    #[serde(with = "timefmt::nullable")]
    pub expires_at: Option<Timestamp>,
    #[serde(with = "timefmt::nullable")]
    pub starts_at: Option<Timestamp>,
    /// Not in Dkron: what to do with occurrences that fell due while no leader ran the
    /// schedule (a failover, a cluster restart): `all` (default), `latest` or `none`.
    pub catchup: String,
    /// Not in Dkron: how late such an occurrence may still run (Go duration, default `1h`).
    pub catchup_deadline: String,
    /// Not in Dkron: when finished executions notify — `always`, `on_failure` or
    /// `on_change`; empty: the node's `notify-on` setting.
    pub notify_on: String,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            id: String::new(),
            name: String::new(),
            displayname: String::new(),
            timezone: String::new(),
            schedule: String::new(),
            owner: String::new(),
            owner_email: String::new(),
            success_count: 0,
            error_count: 0,
            last_success: None,
            last_error: None,
            disabled: false,
            tags: None,
            metadata: None,
            retries: 0,
            dependent_jobs: None,
            parent_job: String::new(),
            processors: BTreeMap::new(),
            // Dkron pre-sets `allow` before decoding, so an absent field means allow.
            concurrency: CONCURRENCY_ALLOW.to_string(),
            executor: String::new(),
            executor_config: None,
            status: String::new(),
            next: None,
            ephemeral: false,
            expires_at: None,
            starts_at: None,
            catchup: CATCHUP_ALL.to_string(),
            catchup_deadline: DEFAULT_CATCHUP_DEADLINE.to_string(),
            notify_on: String::new(),
        }
    }
}

pub const CATCHUP_ALL: &str = "all";
pub const CATCHUP_LATEST: &str = "latest";
pub const CATCHUP_NONE: &str = "none";
pub const DEFAULT_CATCHUP_DEADLINE: &str = "1h";

pub const CONCURRENCY_ALLOW: &str = "allow";
pub const CONCURRENCY_FORBID: &str = "forbid";
/// Not in Dkron: a new run stops the running ones.
pub const CONCURRENCY_REPLACE: &str = "replace";

pub const STATUS_SUCCESS: &str = "success";
pub const STATUS_FAILED: &str = "failed";
pub const STATUS_PARTIALLY_FAILED: &str = "partially_failed";

impl Job {
    pub fn forbids_overlap(&self) -> bool {
        self.concurrency == CONCURRENCY_FORBID
    }

    pub fn replaces_running(&self) -> bool {
        self.concurrency == CONCURRENCY_REPLACE
    }

    /// The executor's settings, as the executors take them.
    pub fn executor_config(&self) -> BTreeMap<String, String> {
        self.executor_config
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `catchup_deadline` parsed (the default when empty or unparsable; validation refuses
    /// bad values).
    pub fn catchup_deadline(&self) -> jiff::SignedDuration {
        let text = if self.catchup_deadline.is_empty() {
            DEFAULT_CATCHUP_DEADLINE
        } else {
            &self.catchup_deadline
        };
        crate::godur::parse_go_duration(text)
            .ok()
            .and_then(|d| jiff::SignedDuration::try_from(d).ok())
            .unwrap_or(jiff::SignedDuration::from_hours(1))
    }

    pub fn dependents(&self) -> &[String] {
        self.dependent_jobs.as_deref().unwrap_or(&[])
    }
}

/// One run of a job on one node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Execution {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub job_name: String,
    #[serde(with = "timefmt::zero_is_none")]
    pub started_at: Option<Timestamp>,
    /// `None` (rendered as the zero time) while the execution runs.
    #[serde(with = "timefmt::zero_is_none")]
    pub finished_at: Option<Timestamp>,
    pub success: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// One trigger = one group; all nodes and retries of that trigger share it.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub group: i64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub attempt: u32,
    /// The nominal fire time this run belongs to (absent for manual runs).
    #[serde(
        with = "timefmt::nullable",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub scheduled_at: Option<Timestamp>,
    /// Size of the whole captured output; `output` may hold only its tail (see ARCHITECTURE.md,
    /// "execution output stays out of consensus").
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub output_size: u64,
    /// Who started a manual run: the ACL token's name (not in Dkron).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub started_by: String,
    /// The one-off parameters a manual run was started with (not in Dkron).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Box<RunParameters>>,
}

/// One-off parameters of a manual run (`POST /v1/jobs/:job/run` with a body; Dkron #578):
/// merged into that run's executor config only, and kept on its execution records, retries
/// and moves included, so a new leader resuming the run sends the same order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunParameters {
    /// Extra environment variables (shell jobs), after the job's own `env` entries.
    #[serde(skip_serializing_if = "StringMap::is_empty")]
    pub env: StringMap,
    /// Executor settings replacing the job's for this run.
    #[serde(skip_serializing_if = "StringMap::is_empty")]
    pub executor_config: StringMap,
}

/// Environment names the shell executor sets for every run.
const RESERVED_ENV: &[&str] = &["ENV_JOB_NAME"];
const RESERVED_ENV_PREFIX: &str = "DKRON_";

impl RunParameters {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.executor_config.is_empty()
    }

    /// Problems with these parameters for a job run by `executor`, each naming its field.
    /// The merged config is the executor's to check (see [`RunParameters::apply`]).
    pub fn check(&self, executor: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !self.env.is_empty() && executor != "shell" {
            errors.push(FieldError::new(
                "env",
                format!("the {executor:?} executor has no environment: env parameters are for shell jobs; use executor_config"),
            ));
            return errors;
        }
        for (name, value) in &self.env {
            let field = format!("env.{name}");
            if name.is_empty() || name.contains(['=', ',', '\0']) || name.trim() != name {
                errors.push(FieldError::new(
                    field,
                    "a variable name cannot be empty or contain '=', ',', spaces around it or NUL",
                ));
            } else if RESERVED_ENV.contains(&name.as_str()) || name.starts_with(RESERVED_ENV_PREFIX)
            {
                errors.push(FieldError::new(
                    field,
                    "set by dkron for every run (DKRON_* and ENV_JOB_NAME): choose another name",
                ));
            } else if value.contains([',', '\0']) {
                errors.push(FieldError::new(
                    field,
                    "a value cannot contain ',' (the shell executor's env list is comma-separated) or NUL",
                ));
            }
        }
        errors
    }

    /// Merges the parameters into a job's executor config: `executor_config` entries replace
    /// the job's, `env` entries are appended to its `env` list (so they win).
    pub fn apply(&self, config: &mut BTreeMap<String, String>) {
        for (k, v) in &self.executor_config {
            config.insert(k.clone(), v.clone());
        }
        if self.env.is_empty() {
            return;
        }
        let extra: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let env = config.entry("env".to_string()).or_default();
        if !env.trim().is_empty() {
            env.push(',');
        }
        env.push_str(&extra.join(","));
    }
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

impl Execution {
    /// Dkron's execution id: `<started_at unix ns>-<node name>`.
    pub fn make_id(started_at: Timestamp, node_name: &str) -> String {
        format!("{:019}-{}", timefmt::unix_nanos(started_at), node_name)
    }

    pub fn is_running(&self) -> bool {
        self.finished_at.is_none()
    }
}

/// Keeps the last `max` bytes of `s`, never splitting a UTF-8 character.
pub fn tail_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_job_decodes_with_string_typed_config() {
        let raw = r#"{"name":"job2","schedule":"@every 10m","timezone":"Europe/Berlin",
            "tags":{"server":"true:1"},"metadata":{"user":"12345"},"concurrency":"forbid",
            "executor":"http","executor_config":{"timeout":"30","headers":"[]"},"retries":1}"#;
        let job: Job = serde_json::from_str(raw).unwrap();
        assert_eq!(job.executor_config()["timeout"], "30");
        assert!(job.forbids_overlap());
        assert_eq!(job.retries, 1);
    }

    #[test]
    fn absent_concurrency_means_allow() {
        let job: Job = serde_json::from_str(r#"{"name":"a"}"#).unwrap();
        assert_eq!(job.concurrency, "allow");
    }

    #[test]
    fn numbers_in_executor_config_are_refused() {
        let err = serde_json::from_str::<Job>(r#"{"name":"a","executor_config":{"timeout":30}}"#);
        assert!(err.is_err());
    }

    #[test]
    fn execution_json_omits_empty_fields_like_dkron() {
        let e = Execution::default();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"started_at":"0001-01-01T00:00:00Z","finished_at":"0001-01-01T00:00:00Z","success":false}"#
        );
    }

    #[test]
    fn tail_never_splits_a_character() {
        assert_eq!(tail_utf8("héllo", 4), "llo");
        assert_eq!(tail_utf8("abc", 10), "abc");
        assert_eq!(tail_utf8("日本語", 4), "語");
    }

    #[test]
    fn maps_are_json_objects_even_when_empty() {
        let job: Job = serde_json::from_str(
            r#"{"name":"m","tags":{},"metadata":{"b":"2","a":"1"},"processors":{"log":{}}}"#,
        )
        .unwrap();
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["tags"], serde_json::json!({}));
        assert_eq!(json["processors"], serde_json::json!({"log": {}}));
        assert_eq!(
            serde_json::to_string(&json["metadata"]).unwrap(),
            r#"{"a":"1","b":"2"}"#,
            "sorted keys, as a BTreeMap wrote them"
        );
        let back: Job = serde_json::from_value(json).unwrap();
        assert_eq!(back, job);
    }

    fn params(json: &str) -> RunParameters {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn run_parameters_merge_into_this_runs_config() {
        let p = params(r#"{"env":{"TARGET":"b"},"executor_config":{"timeout":"5s"}}"#);
        let mut config: BTreeMap<String, String> = [
            ("command".to_string(), "deploy".to_string()),
            ("env".to_string(), "TARGET=a,MODE=x".to_string()),
            ("timeout".to_string(), "1h".to_string()),
        ]
        .into();
        p.apply(&mut config);
        assert_eq!(config["env"], "TARGET=a,MODE=x,TARGET=b");
        assert_eq!(config["timeout"], "5s");
        assert_eq!(config["command"], "deploy");
        let mut bare = BTreeMap::new();
        params(r#"{"env":{"A":"1","B":"2"}}"#).apply(&mut bare);
        assert_eq!(bare["env"], "A=1,B=2");
        assert!(params("{}").is_empty());
    }

    #[test]
    fn run_parameters_name_what_does_not_fit() {
        let fields = |p: RunParameters, executor: &str| -> Vec<String> {
            p.check(executor).into_iter().map(|e| e.field).collect()
        };
        assert_eq!(fields(params(r#"{"env":{"A":"1"}}"#), "http"), ["env"]);
        assert!(fields(params(r#"{"env":{"A":"1"}}"#), "shell").is_empty());
        assert_eq!(
            fields(
                params(r#"{"env":{"A":"x,y","B=C":"1","DKRON_FENCING_TOKEN":"9"}}"#),
                "shell"
            ),
            ["env.A", "env.B=C", "env.DKRON_FENCING_TOKEN"]
        );
        assert!(serde_json::from_str::<RunParameters>(r#"{"environment":{}}"#).is_err());
    }

    #[test]
    fn executions_keep_their_parameters_and_omit_none() {
        let mut e = Execution::default();
        assert!(!serde_json::to_string(&e).unwrap().contains("parameters"));
        e.parameters = Some(Box::new(params(r#"{"env":{"A":"1"}}"#)));
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""parameters":{"env":{"A":"1"}}"#), "{json}");
        let back: Execution = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
