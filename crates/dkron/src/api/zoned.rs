//! Timestamps rendered in the job's time zone, as Dkron renders them.
//!
//! Records store instants; Dkron answers them as Go `time.Time` values in the job's
//! `timezone` (`"2025-01-01T11:00:00+01:00"` for a Berlin job). Jobs without a zone, or in
//! UTC, serialize straight through; the others go through a JSON value whose time fields are
//! rewritten. The instant is the same either way: a client parsing RFC 3339 reads equal times.

use dkron_core::job::{Execution, Job};
use dkron_core::timefmt::{ZERO_TIME, in_zone};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Serialize, Serializer};

/// The time fields of jobs and executions.
const TIME_FIELDS: &[&str] = &[
    "last_success",
    "last_error",
    "next",
    "starts_at",
    "expires_at",
    "started_at",
    "finished_at",
    "scheduled_at",
];

/// `value` with its timestamps in `zone` (`None`: as stored, in UTC).
pub struct InZone<T> {
    value: T,
    zone: Option<TimeZone>,
}

/// The zone a job's records are rendered in: `None` for UTC (no rewriting needed).
pub fn zone_of(timezone: &str) -> Option<TimeZone> {
    let tz = dkron_core::schedule::load_timezone(timezone).ok()?;
    (tz != TimeZone::UTC).then_some(tz)
}

impl<T> InZone<T> {
    pub fn new(value: T, timezone: &str) -> InZone<T> {
        InZone {
            value,
            zone: zone_of(timezone),
        }
    }

    pub fn with_zone(value: T, zone: Option<TimeZone>) -> InZone<T> {
        InZone { value, zone }
    }
}

/// A job in its own zone.
pub fn job(job: &Job) -> InZone<&Job> {
    InZone::new(job, &job.timezone)
}

/// The zone of the stored job `name` (`None`: UTC, or the job is gone).
pub fn zone_of_job(cx: &super::Context, name: &str) -> Option<TimeZone> {
    cx.state
        .read(|s| s.entry(name).and_then(|j| zone_of(&j.job.timezone)))
}

/// An execution in the zone of its job.
pub fn execution<'a>(cx: &super::Context, e: &'a Execution) -> InZone<&'a Execution> {
    InZone::with_zone(e, zone_of_job(cx, &e.job_name))
}

impl<T: Serialize> Serialize for InZone<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(zone) = &self.zone else {
            return self.value.serialize(s);
        };
        let mut value = serde_json::to_value(&self.value).map_err(serde::ser::Error::custom)?;
        if let Some(fields) = value.as_object_mut() {
            for name in TIME_FIELDS {
                if let Some(serde_json::Value::String(text)) = fields.get_mut(*name)
                    && text != ZERO_TIME
                    && let Ok(ts) = text.parse::<Timestamp>()
                {
                    *text = in_zone(ts, zone);
                }
            }
        }
        value.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_time_fields_and_keeps_the_zero_time() {
        let job: Job = serde_json::from_str(
            r#"{"name":"j","timezone":"Europe/Berlin","schedule":"@every 1h",
                "last_success":"2025-01-01T10:00:00Z"}"#,
        )
        .unwrap();
        let out = serde_json::to_value(super::job(&job)).unwrap();
        assert_eq!(out["last_success"], "2025-01-01T11:00:00+01:00");
        assert_eq!(out["next"], ZERO_TIME);
        assert_eq!(out["last_error"], serde_json::Value::Null);
        assert_eq!(out["name"], "j");
    }

    #[test]
    fn utc_jobs_pass_through() {
        let job: Job = serde_json::from_str(
            r#"{"name":"j","schedule":"@every 1h","last_success":"2025-01-01T10:00:00Z"}"#,
        )
        .unwrap();
        let out = serde_json::to_value(super::job(&job)).unwrap();
        assert_eq!(out["last_success"], "2025-01-01T10:00:00Z");
        assert!(zone_of("UTC").is_none() && zone_of("").is_none());
    }
}
