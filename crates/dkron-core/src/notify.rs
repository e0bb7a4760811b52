//! When a finished execution notifies (email, webhook): the policy, decided without IO.
//!
//! Dkron notifies on every finished execution; teams ask for failures only (#712, #288).
//! `on_change` tells about the first failure and the recovery, not every repeat.

use crate::job::{Job, STATUS_SUCCESS};

/// When to notify about a finished execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyPolicy {
    /// Every finished execution (Dkron's behaviour).
    Always,
    /// Every failed execution.
    OnFailure,
    /// A failure after a success (or as the first run), and a success after a failure.
    OnChange,
}

pub const POLICIES: &str = "always, on_failure or on_change";

impl NotifyPolicy {
    pub fn parse(text: &str) -> Result<NotifyPolicy, String> {
        match text {
            "always" => Ok(NotifyPolicy::Always),
            "on_failure" => Ok(NotifyPolicy::OnFailure),
            "on_change" => Ok(NotifyPolicy::OnChange),
            other => Err(format!("unknown policy {other:?}: use {POLICIES}")),
        }
    }

    /// The policy for `job`: its own `notify_on` when set, else the node's.
    pub fn for_job(job: &Job, node_default: NotifyPolicy) -> NotifyPolicy {
        if job.notify_on.is_empty() {
            node_default
        } else {
            NotifyPolicy::parse(&job.notify_on).unwrap_or(node_default)
        }
    }

    /// Whether an execution that ended with `success` notifies, given the job's `status`
    /// before it (`""` when the job never ran).
    pub fn should_notify(self, previous_status: &str, success: bool) -> bool {
        match self {
            NotifyPolicy::Always => true,
            NotifyPolicy::OnFailure => !success,
            NotifyPolicy::OnChange => {
                if previous_status.is_empty() {
                    !success
                } else {
                    success != (previous_status == STATUS_SUCCESS)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decide_as_documented() {
        use NotifyPolicy::*;
        // (policy, previous status, success, notifies)
        let cases = [
            (Always, "", true, true),
            (Always, "success", true, true),
            (OnFailure, "success", true, false),
            (OnFailure, "success", false, true),
            (OnFailure, "failed", false, true),
            (OnChange, "", true, false),
            (OnChange, "", false, true),
            (OnChange, "success", true, false),
            (OnChange, "success", false, true),
            (OnChange, "failed", false, false),
            (OnChange, "failed", true, true),
            (OnChange, "partially_failed", true, true),
        ];
        for (policy, previous, success, expected) in cases {
            assert_eq!(
                policy.should_notify(previous, success),
                expected,
                "{policy:?} after {previous:?}, success={success}"
            );
        }
    }

    #[test]
    fn a_job_overrides_the_node_policy() {
        let mut job = Job::default();
        assert_eq!(
            NotifyPolicy::for_job(&job, NotifyPolicy::OnFailure),
            NotifyPolicy::OnFailure
        );
        job.notify_on = "on_change".into();
        assert_eq!(
            NotifyPolicy::for_job(&job, NotifyPolicy::Always),
            NotifyPolicy::OnChange
        );
        assert!(
            NotifyPolicy::parse("sometimes")
                .unwrap_err()
                .contains("on_failure")
        );
    }
}
