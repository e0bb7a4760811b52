//! `/v1/jobs` routes: list, create/update, show, delete, run, toggle and restore.

use std::cmp::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use dkron_core::command::Command;
use dkron_core::job::Job;
use dkron_core::validate::{FieldError, validate_job};

use super::query::{Query, render, total_count};
use super::{ApiError, forget_outputs, write_job};
use crate::node::Node;
use crate::runner::{Trigger, run_job};

/// Decodes a job the way Dkron does (content type ignored), naming the field on error.
fn decode_job(body: &[u8]) -> Result<Job, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, Job>(de).map_err(|e| {
        let path = e.path().to_string();
        let message = format!("Unable to parse payload: {}: {}.", path, e.inner());
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::json!({ "error": message, "field": path }),
        }
    })
}

/// Every problem of a submitted job: the core's checks plus the executor's config checks.
fn check_job(job: &Job) -> Vec<FieldError> {
    let mut errors = validate_job(job);
    if !job.executor.is_empty() {
        for (key, message) in
            dkron_executors::validate_config(&job.executor, &job.executor_config())
        {
            let field = if key == "executor" {
                key
            } else {
                format!("executor_config.{key}")
            };
            if !errors.iter().any(|e| e.field == field) {
                errors.push(FieldError::new(field, message));
            }
        }
    }
    errors
}

fn stored_job(node: &Node, name: &str) -> Result<Job, ApiError> {
    let now = node.clock.now();
    node.state
        .read(|s| s.job_view(name, now))
        .ok_or_else(|| ApiError::job_not_found(name))
}

async fn save(node: &Arc<Node>, job: Job, query: &Query) -> Result<Response, ApiError> {
    if node.state.read(|s| s.paused) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "New job submissions are currently paused: POST /v1/unpause to resume",
        ));
    }
    let errors = check_job(&job);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let name = job.name.clone();
    let now = node.clock.now();
    write_job(
        node,
        Command::SetJob {
            job: Box::new(job),
            now,
        },
    )
    .await?;
    if query.has("runoncreate") {
        run_job(node.clone(), name.clone(), Trigger::Manual);
    }
    let stored = stored_job(node, &name)?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{name}")) {
        headers.insert(header::LOCATION, v);
    }
    Ok(render(
        StatusCode::CREATED,
        &stored,
        query.pretty(),
        headers,
    ))
}

pub async fn create(
    State(node): State<Arc<Node>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let job = decode_job(&body)?;
    save(&node, job, &query).await
}

pub async fn update(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let mut job = decode_job(&body)?;
    if job.name.is_empty() {
        job.name = name.clone();
    } else if job.name != name {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::json!({
                "error": format!("the job name in the body ({}) differs from the path ({name}); jobs cannot be renamed", job.name),
                "field": "name",
            }),
        });
    }
    save(&node, job, &query).await
}

fn sort_key(field: &str) -> Option<fn(&Job, &Job) -> Ordering> {
    Some(match field {
        "" | "id" | "name" => |a: &Job, b: &Job| a.name.cmp(&b.name),
        "displayname" => |a: &Job, b: &Job| a.displayname.cmp(&b.displayname),
        "schedule" => |a: &Job, b: &Job| a.schedule.cmp(&b.schedule),
        "success_count" => |a: &Job, b: &Job| a.success_count.cmp(&b.success_count),
        "error_count" => |a: &Job, b: &Job| a.error_count.cmp(&b.error_count),
        "last_success" => |a: &Job, b: &Job| a.last_success.cmp(&b.last_success),
        "last_error" => |a: &Job, b: &Job| a.last_error.cmp(&b.last_error),
        "next" => |a: &Job, b: &Job| a.next.cmp(&b.next),
        "status" => |a: &Job, b: &Job| a.status.cmp(&b.status),
        _ => return None,
    })
}

pub async fn list(
    State(node): State<Arc<Node>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let metadata = query.metadata();
    let tags = query.tags();
    let text = query.get("q").unwrap_or("").to_string();
    let status = query.get("status").unwrap_or("").to_string();
    let disabled = match query.get("disabled") {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => {
            return Err(ApiError::bad_param(
                "disabled",
                format!("{v:?} is not true or false"),
            ));
        }
    };
    let sort_field = query.get("_sort").unwrap_or("");
    let compare = sort_key(sort_field).ok_or_else(|| {
        ApiError::bad_param(
            "_sort",
            format!("cannot sort by {sort_field:?}: use name, displayname, schedule, success_count, error_count, last_success, last_error, next or status"),
        )
    })?;
    let descending = query.descending(false)?;
    let now = node.clock.now();
    let mut jobs: Vec<Job> = node.state.read(|s| {
        s.jobs
            .values()
            .filter(|e| {
                let j = &e.job;
                metadata
                    .iter()
                    .all(|(k, v)| j.metadata.as_ref().and_then(|m| m.get(k)) == Some(v))
                    && tags.iter().all(|(k, v)| {
                        j.tags
                            .as_ref()
                            .and_then(|t| t.get(k))
                            .map(|raw| raw.split_once(':').map_or(raw.as_str(), |(value, _)| value))
                            == Some(v.as_str())
                    })
                    && (text.is_empty() || j.name.contains(&text) || j.displayname.contains(&text))
                    && match status.as_str() {
                        "" => true,
                        "untriggered" => j.status.is_empty(),
                        s => j.status == s,
                    }
                    && disabled.is_none_or(|d| j.disabled == d)
            })
            .map(|e| dkron_core::state::view(e, now))
            .collect()
    });
    jobs.sort_by(|a, b| {
        let o = compare(a, b).then_with(|| a.name.cmp(&b.name));
        if descending { o.reverse() } else { o }
    });
    let total = jobs.len();
    let page = query.page(total)?;
    Ok(render(
        StatusCode::OK,
        &jobs[page],
        query.pretty(),
        total_count(total),
    ))
}

pub async fn show(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let job = stored_job(&node, &name)?;
    Ok(render(
        StatusCode::OK,
        &job,
        query.pretty(),
        HeaderMap::new(),
    ))
}

pub async fn delete(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let job = write_job(&node, Command::DeleteJob { name: name.clone() }).await?;
    forget_outputs(&node, &name).await;
    Ok(render(
        StatusCode::OK,
        &job,
        query.pretty(),
        HeaderMap::new(),
    ))
}

/// Run now: answered 202 at once; the run proceeds in the background.
pub async fn run(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let job = stored_job(&node, &name)?;
    let running: Vec<String> = node.state.read(|s| {
        s.jobs
            .get(&name)
            .map(|e| e.running.keys().cloned().collect())
            .unwrap_or_default()
    });
    if job.forbids_overlap() && !running.is_empty() {
        return Err(dkron_core::command::ApplyError::AlreadyRunning { job: name, running }.into());
    }
    if job.disabled && job.parent_job.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {name} is disabled: enable it (POST /v1/jobs/{name}/toggle) to run it"),
        ));
    }
    node.run_now(&name).await?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{name}")) {
        headers.insert(header::LOCATION, v);
    }
    Ok(render(StatusCode::ACCEPTED, &job, query.pretty(), headers))
}

pub async fn toggle(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let toggle = Command::ToggleJob {
        name: name.clone(),
        now: Some(node.clock.now()),
    };
    write_job(&node, toggle).await?;
    let job = stored_job(&node, &name)?;
    Ok(render(
        StatusCode::OK,
        &job,
        query.pretty(),
        HeaderMap::new(),
    ))
}

/// Restores jobs from a `GET /v1/jobs` dump (multipart field `file`), parents first.
/// Answers Dkron's shape: a JSON string holding an array of `success|fail create <name>`.
pub async fn restore(
    State(node): State<Arc<Node>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_param(
            "file",
            format!("{e}: send multipart/form-data with the jobs JSON in field `file` (curl --form file=@jobs.json)"),
        )
    })?;
    let mut file = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the multipart body: {e}")))?
    {
        if field.name() == Some("file") {
            file = Some(
                field
                    .bytes()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("cannot read field file: {e}")))?,
            );
        }
    }
    let file = file.ok_or_else(|| {
        ApiError::bad_param(
            "file",
            "missing: send the jobs JSON as multipart field `file`",
        )
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&file);
    let jobs: Vec<Job> = serde_path_to_error::deserialize(de).map_err(|e| {
        ApiError::bad_param(
            "file",
            format!("not a JSON array of jobs: {}: {}", e.path(), e.inner()),
        )
    })?;
    // Parents before children: repeatedly take the jobs whose parent is already placed.
    let mut pending = jobs;
    let mut ordered = Vec::new();
    let mut placed: std::collections::BTreeSet<String> =
        node.state.read(|s| s.jobs.keys().cloned().collect());
    while !pending.is_empty() {
        let (ready, rest): (Vec<Job>, Vec<Job>) = pending
            .into_iter()
            .partition(|j| j.parent_job.is_empty() || placed.contains(&j.parent_job));
        if ready.is_empty() {
            ordered.extend(rest);
            break;
        }
        placed.extend(ready.iter().map(|j| j.name.clone()));
        ordered.extend(ready);
        pending = rest;
    }
    let mut results = Vec::new();
    for job in ordered {
        let name = job.name.clone();
        let ok = check_job(&job).is_empty()
            && write_job(
                &node,
                Command::SetJob {
                    job: Box::new(job),
                    now: node.clock.now(),
                },
            )
            .await
            .is_ok();
        results.push(format!(
            "{} create {name}",
            if ok { "success" } else { "fail" }
        ));
    }
    let encoded = serde_json::to_string(&results).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(render(StatusCode::OK, &encoded, false, HeaderMap::new()))
}

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
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let count = count_param(&query)?;
    let now = node.clock.now();
    let Some(next) = node.state.read(|s| {
        s.jobs
            .get(&name)
            .map(|e| dkron_core::occurrence::upcoming(e, now, count))
    }) else {
        return Err(ApiError::job_not_found(&name));
    };
    Ok(render(
        StatusCode::OK,
        &next,
        query.pretty(),
        HeaderMap::new(),
    ))
}

/// `GET /v1/schedule?schedule=...&timezone=...&name=...&count=N` (not in Dkron): the schedule
/// in words and the next N fire times a job with this schedule (and name, for `~` hashes)
/// created now would have — `{"description": "...", "next": [...]}`, the dashboard's schedule
/// preview. A bad schedule or zone is a 400 naming the field, with job validation's message.
pub async fn preview(
    State(node): State<Arc<Node>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
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
    let now = node.clock.now();
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
    Ok(render(
        StatusCode::OK,
        &serde_json::json!({"description": description, "next": next}),
        query.pretty(),
        HeaderMap::new(),
    ))
}
