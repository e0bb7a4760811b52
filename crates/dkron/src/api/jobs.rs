//! `/v1/jobs` routes: list, create/update, show, delete, run and toggle.

use std::cmp::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use dkron_core::command::Command;
use dkron_core::job::{Job, RunParameters};
use dkron_core::validate::{FieldError, validate_job};

use super::acl::Caller;
use super::audit::AuditJob;
use super::query::{Query, created, listed, located, ok};
use super::{ApiError, Context, Cx, forget_outputs, write_job, zoned};

/// Decodes a job the way Dkron does (content type ignored), naming the field on error. As in
/// Go, `null` leaves a field at its zero value (clients such as django-dkron send
/// `"parent_job": null`), and only a JSON object is a job.
fn decode_job(body: &[u8]) -> Result<Job, ApiError> {
    let unparsable = |message: String, field: Option<String>| ApiError {
        status: StatusCode::BAD_REQUEST,
        body: match field {
            Some(f) => serde_json::json!({ "error": message, "field": f }),
            None => serde_json::json!({ "error": message }),
        },
    };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| unparsable(format!("Unable to parse payload: {e}."), None))?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(unparsable(
            "Unable to parse payload: a job is a JSON object ({\"name\": ..., \"schedule\": ...})."
                .into(),
            None,
        ));
    };
    fields.retain(|_, v| !v.is_null());
    for v in fields.values_mut() {
        // Inside string maps (tags, metadata, executor_config), null is the empty string.
        if let serde_json::Value::Object(inner) = v {
            for x in inner.values_mut().filter(|x| x.is_null()) {
                *x = serde_json::Value::String(String::new());
            }
        }
    }
    serde_path_to_error::deserialize::<_, Job>(serde_json::Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        unparsable(
            format!("Unable to parse payload: {}: {}.", path, e.inner()),
            Some(path),
        )
    })
}

/// Every problem of a submitted job: the core's checks plus the executor's config checks.
pub(super) fn check_job(job: &Job, plugins: &dkron_executors::Plugins) -> Vec<FieldError> {
    let mut errors = validate_job(job);
    if !job.executor.is_empty() {
        for (key, message) in
            dkron_executors::validate_config(&job.executor, &job.executor_config(), plugins)
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

fn stored_job(cx: &Context, name: &str) -> Result<Job, ApiError> {
    cx.state
        .job_view(name, cx.clock.now())
        .ok_or_else(|| ApiError::job_not_found(name))
}

fn location(name: &str) -> String {
    format!("/v1/jobs/{name}")
}

/// Refuses a job write the caller's token does not allow (judged on the job's own path, and
/// its executor); a job written through a token is owned by the token's name.
pub(super) fn authorize_write(
    cx: &Context,
    caller: &Caller,
    job: &mut Job,
) -> Result<(), ApiError> {
    caller.check_job_write(&job.name, cx.state.contains(&job.name), &job.executor)?;
    if let Some(name) = caller.name() {
        job.owner = name.to_string();
    }
    Ok(())
}

/// Creates or replaces a job. The pause flag is decided by the state machine, so a create
/// racing a `POST /v1/pause` is refused or accepted as the log orders them.
async fn save(
    cx: &Context,
    caller: &Caller,
    mut job: Job,
    query: &Query,
) -> Result<Response, ApiError> {
    let errors = check_job(&job, &cx.plugins);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    authorize_write(cx, caller, &mut job)?;
    let name = job.name.clone();
    let set = Command::SetJob {
        job: Box::new(job),
        now: cx.clock.now(),
        refuse_when_paused: true,
    };
    let applied = write_job(cx, set).await?;
    if query.has("runoncreate") {
        // Run on the leader, like every run; the job is saved whatever becomes of the run.
        if let Err(e) = cx.dispatch.run_now(&name, caller.name(), None).await {
            tracing::warn!(job = %name, error = %e, "runoncreate: the job was saved but its run did not start");
        }
    }
    // Committed: answered as this server sees it, or, if it lags the leader past the
    // read-your-write wait (seen under overload), as the leader applied it, never a 404.
    let stored = stored_job(cx, &name).unwrap_or(applied);
    let mut res = created(&zoned::job(&stored), &location(&name), query);
    res.extensions_mut().insert(AuditJob(name));
    Ok(res)
}

pub async fn create(
    State(cx): Cx,
    caller: Caller,
    query: Query,
    body: Bytes,
) -> Result<Response, ApiError> {
    let job = decode_job(&body)?;
    save(&cx, &caller, job, &query).await
}

pub async fn update(
    State(cx): Cx,
    caller: Caller,
    Path(name): Path<String>,
    query: Query,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    save(&cx, &caller, job, &query).await
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

/// The list filters: `metadata[k]=v`, `tags[k]=v`, `q`, `status`, `disabled`.
struct Filter {
    metadata: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    text: String,
    status: String,
    disabled: Option<bool>,
}

impl Filter {
    fn parse(query: &Query) -> Result<Filter, ApiError> {
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
        Ok(Filter {
            metadata: query.metadata(),
            tags: query.tags(),
            text: query.get("q").unwrap_or("").to_string(),
            status: query.get("status").unwrap_or("").to_string(),
            disabled,
        })
    }

    fn matches(&self, j: &Job) -> bool {
        self.metadata
            .iter()
            .all(|(k, v)| j.metadata.as_ref().and_then(|m| m.get(k)) == Some(v))
            && self.tags.iter().all(|(k, v)| {
                j.tags
                    .as_ref()
                    .and_then(|t| t.get(k))
                    .map(|raw| raw.split_once(':').map_or(raw.as_str(), |(value, _)| value))
                    == Some(v.as_str())
            })
            && (self.text.is_empty()
                || j.name.contains(&self.text)
                || j.displayname.contains(&self.text))
            && match self.status.as_str() {
                "" => true,
                "untriggered" => j.status.is_empty(),
                s => j.status == s,
            }
            && self.disabled.is_none_or(|d| j.disabled == d)
    }
}

/// The jobs the caller may read (all of them with ACLs off), filtered, sorted and paged.
pub async fn list(State(cx): Cx, caller: Caller, query: Query) -> Result<Response, ApiError> {
    let filter = Filter::parse(&query)?;
    let sort_field = query.get("_sort").unwrap_or("");
    let compare = sort_key(sort_field).ok_or_else(|| {
        ApiError::bad_param(
            "_sort",
            format!("cannot sort by {sort_field:?}: use name, displayname, schedule, success_count, error_count, last_success, last_error, next or status"),
        )
    })?;
    let descending = query.descending(false)?;
    let now = cx.clock.now();
    let mut jobs: Vec<Job> = cx.state.read(|s| {
        s.entries()
            .filter(|(name, e)| filter.matches(&e.job) && caller.may_read_job(name))
            .map(|(_, e)| dkron_core::state::view(e, now))
            .collect()
    });
    jobs.sort_by(|a, b| {
        let o = compare(a, b).then_with(|| a.name.cmp(&b.name));
        if descending { o.reverse() } else { o }
    });
    let total = jobs.len();
    let page = query.page(total)?;
    let shown: Vec<_> = jobs[page].iter().map(zoned::job).collect();
    Ok(listed(&shown, total, &query))
}

pub async fn show(
    State(cx): Cx,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    Ok(ok(&zoned::job(&stored_job(&cx, &name)?), &query))
}

pub async fn delete(
    State(cx): Cx,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let job = write_job(&cx, Command::DeleteJob { name: name.clone() }).await?;
    forget_outputs(&cx, &name).await;
    Ok(ok(&zoned::job(&job), &query))
}

/// The optional body of a run: one-off parameters (not in Dkron, which ignores the body).
/// No body, or an empty object, runs the job as it is.
fn decode_parameters(body: &[u8]) -> Result<Option<RunParameters>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let parameters: RunParameters = serde_path_to_error::deserialize(de).map_err(|e| {
        ApiError::undecodable("invalid run parameters", e.path().to_string(), e.inner())
    })?;
    Ok(Some(parameters).filter(|p| !p.is_empty()))
}

/// Whether `parameters` fit `job`: the core's checks, then the executor's on the merged
/// config (named `executor_config.<key>`, as for a job).
fn check_parameters(
    job: &Job,
    parameters: &RunParameters,
    plugins: &dkron_executors::Plugins,
) -> Result<(), ApiError> {
    let mut errors = parameters.check(&job.executor);
    if errors.is_empty() {
        let mut config = job.executor_config();
        parameters.apply(&mut config);
        for (key, message) in dkron_executors::validate_config(&job.executor, &config, plugins) {
            errors.push(FieldError::new(format!("executor_config.{key}"), message));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// Run now: answered 200 (Dkron's status) once the run is claimed on the leader (`forbid` is
/// decided there, by the state machine); the run proceeds in the background. A disabled job
/// without a parent is not run: 404, as in Dkron (a disabled child can be run by hand).
///
/// A body with parameters changes what runs, so with ACLs on it needs the right to update
/// the job (and its executor), not only to run it.
pub async fn run(
    State(cx): Cx,
    caller: Caller,
    Path(name): Path<String>,
    query: Query,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parameters = decode_parameters(&body)?;
    let job = stored_job(&cx, &name)?;
    if let Some(parameters) = &parameters {
        caller.check_job_write(&name, true, &job.executor)?;
        check_parameters(&job, parameters, &cx.plugins)?;
    }
    if job.disabled && job.parent_job.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("job {name} is disabled: enable it (POST /v1/jobs/{name}/toggle) to run it"),
        ));
    }
    cx.dispatch
        .run_now(&name, caller.name(), parameters)
        .await?;
    Ok(located(
        StatusCode::OK,
        &zoned::job(&job),
        &location(&name),
        &query,
    ))
}

/// Flips `disabled`: 200 with the job and, as Dkron answers, `Location: <request URI>`.
pub async fn toggle(
    State(cx): Cx,
    Path(name): Path<String>,
    uri: axum::extract::OriginalUri,
    query: Query,
) -> Result<Response, ApiError> {
    let toggle = Command::ToggleJob {
        name: name.clone(),
        now: Some(cx.clock.now()),
    };
    write_job(&cx, toggle).await?;
    let requested = uri.0.path_and_query().map_or(uri.0.path(), |p| p.as_str());
    Ok(located(
        StatusCode::OK,
        &zoned::job(&stored_job(&cx, &name)?),
        requested,
        &query,
    ))
}
