//! `POST /v1/restore`: jobs from a `GET /v1/jobs` dump, parents first.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dkron_core::command::Command;
use dkron_core::job::Job;

use super::acl::Caller;
use super::jobs::{authorize_write, check_job};
use super::query::render;
use super::{ApiError, Cx, write_job};

/// Restores jobs from a `GET /v1/jobs` dump (multipart field `file`), parents first.
/// Answers Dkron's shape: a JSON string holding an array of `success|fail create <name>`.
/// With ACLs on, each job is written only if the token may write it (as `POST /v1/jobs`).
pub async fn restore(
    State(cx): Cx,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_param(
            "file",
            format!("{e}: send multipart/form-data with the jobs JSON in field `file` (curl --form file=@jobs.json)"),
        )
    })?;
    let mut file = None;
    // A body over the limit is a 413 saying so; other malformed bodies are 400s.
    let unreadable = |what: &str, e: axum::extract::multipart::MultipartError| {
        let status = e.status();
        let hint = if status == StatusCode::PAYLOAD_TOO_LARGE {
            " (the API takes bodies up to 2 MiB: split the dump and restore it in parts)"
        } else {
            ""
        };
        ApiError::new(
            status,
            format!("cannot read {what}: {}{hint}", e.body_text()),
        )
    };
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| unreadable("the multipart body", e))?
    {
        if field.name() == Some("file") {
            file = Some(
                field
                    .bytes()
                    .await
                    .map_err(|e| unreadable("field file", e))?,
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
    let mut placed: std::collections::BTreeSet<String> = cx.state.job_names().into_iter().collect();
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
    for mut job in ordered {
        let name = job.name.clone();
        let ok = check_job(&job, &cx.plugins).is_empty()
            && authorize_write(&cx, &caller, &mut job).is_ok()
            && write_job(
                &cx,
                // A restore is not subject to the pause flag (Dkron's behaviour).
                Command::SetJob {
                    job: Box::new(job),
                    now: cx.clock.now(),
                    refuse_when_paused: false,
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
