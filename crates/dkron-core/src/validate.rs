//! Job validation: every problem at once, each naming its field.
//!
//! Dkron stops at the first problem and answers in plain text; we report them all in a JSON
//! body, keeping Dkron's wording for each message so scripts that match on it still work.

use serde::Serialize;

use crate::godur::parse_go_duration;
use crate::job::{
    CATCHUP_ALL, CATCHUP_LATEST, CATCHUP_NONE, CONCURRENCY_ALLOW, CONCURRENCY_FORBID,
    CONCURRENCY_REPLACE, Job,
};

/// The longest catch-up deadline: a week of occurrences is the most a new leader enumerates.
const MAX_CATCHUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
use crate::placement::parse_tag_value;
use crate::schedule::{Schedule, load_timezone};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Joins problems into Dkron's one-line form: `Job validation failed: a; b.`
pub fn summary(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    format!("Job validation failed: {}.", parts.join("; "))
}

/// Validates the user-writable fields of a job. Parent existence and cycles need the whole
/// state and are checked by the state machine.
pub fn validate_job(job: &Job) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if job.name.is_empty() {
        errors.push(FieldError::new("name", "name cannot be empty"));
    } else if let Some(c) = job
        .name
        .chars()
        .find(|c| !(c.is_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        errors.push(FieldError::new(
            "name",
            format!("name contains illegal character '{c}' (use lower case letters, digits, '_' and '-')"),
        ));
    }
    if !job.parent_job.is_empty() && job.parent_job == job.name {
        errors.push(FieldError::new(
            "parent_job",
            "the job can not have itself as parent",
        ));
    }
    if (!job.schedule.is_empty() || job.parent_job.is_empty())
        && let Err(e) = Schedule::parse(&job.schedule, &job.name)
    {
        errors.push(FieldError::new(
            "schedule",
            format!("can't parse job schedule: {e}"),
        ));
    }
    if !matches!(
        job.concurrency.as_str(),
        CONCURRENCY_ALLOW | CONCURRENCY_FORBID | CONCURRENCY_REPLACE | ""
    ) {
        errors.push(FieldError::new(
            "concurrency",
            "invalid concurrency policy value, use \"allow\", \"forbid\" or \"replace\"",
        ));
    }
    if !matches!(
        job.catchup.as_str(),
        CATCHUP_ALL | CATCHUP_LATEST | CATCHUP_NONE | ""
    ) {
        errors.push(FieldError::new(
            "catchup",
            "invalid catch-up policy, use \"all\", \"latest\" or \"none\"",
        ));
    }
    if !job.catchup_deadline.is_empty() {
        match parse_go_duration(&job.catchup_deadline) {
            Ok(d) if d.is_zero() || d > MAX_CATCHUP_DEADLINE => errors.push(FieldError::new(
                "catchup_deadline",
                "catchup_deadline must be more than 0 and at most 168h",
            )),
            Ok(_) => {}
            Err(e) => errors.push(FieldError::new(
                "catchup_deadline",
                format!("can't parse catchup_deadline: {e} (for example \"1h\" or \"30m\")"),
            )),
        }
    }
    if !job.notify_on.is_empty()
        && let Err(e) = crate::notify::NotifyPolicy::parse(&job.notify_on)
    {
        errors.push(FieldError::new("notify_on", e));
    }
    for (name, settings) in &job.processors {
        if let Err(e) = crate::processor::Processor::parse(name, settings) {
            errors.push(FieldError::new(format!("processors.{name}"), e));
        }
    }
    if let Err(e) = load_timezone(&job.timezone) {
        errors.push(FieldError::new("timezone", e));
    }
    for (key, value) in job.tags.iter().flatten() {
        if let Err(e) = parse_tag_value(value) {
            errors.push(FieldError::new(format!("tags.{key}"), e));
        }
    }
    if let (Some(starts), Some(expires)) = (job.starts_at, job.expires_at)
        && expires <= starts
    {
        errors.push(FieldError::new(
            "expires_at",
            "expires_at must be later than starts_at",
        ));
    }
    if job.executor == "shell" {
        let config = job.executor_config();
        if let Some(t) = config.get("timeout").filter(|t| !t.is_empty())
            && parse_go_duration(t).is_err()
        {
            errors.push(FieldError::new(
                "executor_config.timeout",
                "Error parsing job timeout value",
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(json: &str) -> Job {
        serde_json::from_str(json).unwrap()
    }

    fn fields(json: &str) -> Vec<String> {
        validate_job(&job(json))
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn seed_job_is_valid() {
        let raw = r#"{"name":"job1","schedule":"@every 10s","timezone":"Europe/Berlin",
            "tags":{"server":"true:1"},"executor":"shell","executor_config":{"command":"date"}}"#;
        assert!(validate_job(&job(raw)).is_empty());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let got = fields(
            r#"{"name":"BAD JOB","schedule":"nope","timezone":"Asis/Taipei","concurrency":"x",
                "tags":{"role":"web:many"},"executor":"shell","executor_config":{"timeout":"forever"}}"#,
        );
        assert_eq!(
            got,
            [
                "name",
                "schedule",
                "concurrency",
                "timezone",
                "tags.role",
                "executor_config.timeout"
            ]
        );
    }

    #[test]
    fn names_follow_dkron_rules() {
        assert!(fields(r#"{"name":"abcdefghijklmnopqrstuvwxyz0123456789-_ßñëäïüøüáéíóýćàèìòùâêîôûæšłç","schedule":"@daily"}"#).is_empty());
        assert_eq!(fields(r#"{"name":"","schedule":"@daily"}"#), ["name"]);
        assert_eq!(fields(r#"{"name":"a.b","schedule":"@daily"}"#), ["name"]);
        assert_eq!(fields(r#"{"name":"a","parent_job":"a"}"#), ["parent_job"]);
    }

    #[test]
    fn processors_and_notify_policy_are_checked() {
        assert_eq!(
            fields(
                r#"{"name":"a","schedule":"@every 1s","notify_on":"never","processors":{"files":{"dir":"/x"}}}"#
            ),
            vec!["notify_on".to_string(), "processors.files".to_string()]
        );
        assert!(
            fields(
                r#"{"name":"a","schedule":"@every 1s","notify_on":"on_failure","processors":{"log":{"forward":"true"}}}"#
            )
            .is_empty()
        );
    }

    #[test]
    fn a_child_needs_no_schedule() {
        assert!(fields(r#"{"name":"child","parent_job":"p"}"#).is_empty());
        assert_eq!(fields(r#"{"name":"solo"}"#), ["schedule"]);
    }

    #[test]
    fn summary_keeps_dkron_prefix() {
        let s = summary(&[FieldError::new("timezone", "unknown time zone X")]);
        assert_eq!(s, "Job validation failed: timezone: unknown time zone X.");
    }
}
