//! Schedules ahead (not in Dkron): a job's next fire times, and a schedule's description and
//! fire times before a job is saved (the dashboard's preview).

use axum::extract::{Path, State};
use axum::response::Response;
use dkron_core::job::Job;

use super::query::{Query, ok};
use super::{ApiError, Cx};

/// How many upcoming fires `/next` and `/v1/schedule` list at most.
const MAX_UPCOMING: usize = 100;

fn count_param(query: &Query) -> Result<usize, ApiError> {
    match query.get("count") {
        None | Some("") => Ok(10),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_UPCOMING).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_param(
                "count",
                format!("{v:?} is not a number from 1 to {MAX_UPCOMING}"),
            )),
        },
    }
}

/// `GET /v1/jobs/:job/next?count=N` (not in Dkron): the job's next N fire times (default 10),
/// in its zone's rules, honouring `disabled`, `starts_at` and `expires_at`.
pub async fn next(
    State(cx): Cx,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let count = count_param(&query)?;
    let now = cx.clock.now();
    let Some(next) = cx.state.read(|s| {
        s.entry(&name)
            .map(|e| dkron_core::occurrence::upcoming(e, now, count))
    }) else {
        return Err(ApiError::job_not_found(&name));
    };
    Ok(ok(&next, &query))
}

/// `GET /v1/schedule?schedule=...&timezone=...&name=...&count=N` (not in Dkron): the schedule
/// in words and the next N fire times a job with this schedule (and name, for `~` hashes)
/// created now would have — `{"description": "...", "next": [...]}`, the dashboard's schedule
/// preview. A bad schedule or zone is a 400 naming the field, with job validation's message.
pub async fn preview(State(cx): Cx, query: Query) -> Result<Response, ApiError> {
    let count = count_param(&query)?;
    let job = Job {
        name: query
            .get("name")
            .filter(|n| !n.is_empty())
            .unwrap_or("preview")
            .to_string(),
        schedule: query.get("schedule").unwrap_or("").to_string(),
        timezone: query.get("timezone").unwrap_or("").to_string(),
        ..Job::default()
    };
    let errors: Vec<_> = dkron_core::validate::validate_job(&job)
        .into_iter()
        .filter(|e| e.field == "schedule" || e.field == "timezone")
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let now = cx.clock.now();
    let entry = dkron_core::state::JobEntry {
        job,
        anchor: now,
        running: Default::default(),
        groups: Default::default(),
        stored_executions: 0,
        fired_through: None,
        skipped: Default::default(),
    };
    let next = dkron_core::occurrence::upcoming(&entry, now, count);
    let description = dkron_core::schedule::Schedule::parse(&entry.job.schedule, &entry.job.name)
        .map(|s| s.describe(&entry.job.timezone))
        .unwrap_or_default();
    Ok(ok(
        &serde_json::json!({"description": description, "next": next}),
        &query,
    ))
}
