//! `/v1/jobs/:job/executions` and `/v1/busy`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dkron_core::command::Command;
use dkron_core::job::{Execution, tail_utf8};
use serde::Serialize;

use super::query::{Query, listed, ok, render};
use super::zoned::{self, InZone};
use super::{ApiError, Context, Cx, forget_outputs, write_job};

#[derive(Serialize)]
struct ListedExecution {
    #[serde(flatten)]
    execution: Execution,
    output_truncated: bool,
}

/// Replaces the replicated tail by the full output when this node kept it.
fn with_full_output(cx: &Context, mut e: Execution) -> Execution {
    if let Ok(Some(full)) = cx.outputs.get(&e.job_name, &e.id) {
        e.output = full;
    }
    e
}

/// Reads execution records on a blocking thread: a read waits until the state writer wrote
/// what was applied when it asked, and must not hold up a runtime worker meanwhile.
async fn records<T: Send + 'static>(
    cx: &Context,
    read: impl FnOnce(&crate::raft::StateReader) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let state = cx.state.clone();
    tokio::task::spawn_blocking(move || read(&state)).await?
}

fn require_job(cx: &Context, job: &str) -> Result<(), ApiError> {
    if cx.state.contains(job) {
        Ok(())
    } else {
        Err(ApiError::job_not_found(job))
    }
}

pub async fn list(
    State(cx): Cx,
    Path(job): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    require_job(&cx, &job)?;
    let limit = match query.get("output_size_limit") {
        None | Some("") => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::bad_param(
                "output_size_limit",
                format!("{v:?} is not a non-negative integer"),
            )
        })?),
    };
    let descending = query.descending(true)?;
    let name = job.clone();
    let mut executions = records(&cx, move |s| s.executions(&name)).await?;
    match query.get("_sort").unwrap_or("") {
        "" | "id" | "started_at" => {
            executions.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)))
        }
        "finished_at" => executions.sort_by_key(|a| a.finished_at),
        "attempt" => executions.sort_by_key(|e| e.attempt),
        other => {
            return Err(ApiError::bad_param(
                "_sort",
                format!(
                    "cannot sort executions by {other:?}: use started_at, finished_at or attempt"
                ),
            ));
        }
    }
    if descending {
        executions.reverse();
    }
    let total = executions.len();
    let page = query.page(total)?;
    let zone = zoned::zone_of_job(&cx, &job);
    let shown: Vec<_> = executions[page]
        .iter()
        .cloned()
        .map(|e| {
            let mut e = with_full_output(&cx, e);
            let truncated = match limit {
                Some(n) if e.output.len() > n => {
                    e.output = tail_utf8(&e.output, n).to_string();
                    true
                }
                _ => false,
            };
            InZone::with_zone(
                ListedExecution {
                    execution: e,
                    output_truncated: truncated,
                },
                zone.clone(),
            )
        })
        .collect();
    Ok(listed(&shown, total, &query))
}

pub async fn show(
    State(cx): Cx,
    Path((job, id)): Path<(String, String)>,
    query: Query,
) -> Result<Response, ApiError> {
    require_job(&cx, &job)?;
    let (name, eid) = (job.clone(), id.clone());
    let execution = records(&cx, move |s| s.execution(&name, &eid))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("execution {id} of job {job} not found")))?;
    let mut execution = with_full_output(&cx, execution);
    // Still running: what it printed so far, from the node running it (not in Dkron).
    if execution.finished_at.is_none()
        && let Some(output) = cx.dispatch.live_output(&execution).await
    {
        execution.output = output;
    }
    Ok(ok(&zoned::execution(&cx, &execution), &query))
}

pub async fn delete_all(
    State(cx): Cx,
    Path(job): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let stored = write_job(&cx, Command::DeleteExecutions { job: job.clone() }).await?;
    forget_outputs(&cx, &job).await;
    Ok(ok(&zoned::job(&stored), &query))
}

/// Running executions, oldest first.
pub async fn busy(
    State(cx): Cx,
    caller: super::acl::Caller,
    query: Query,
) -> Result<Response, ApiError> {
    let mut running = cx.state.all_running();
    running.retain(|e| caller.may_read_job(&e.job_name));
    running.sort_by_key(|a| a.started_at);
    let shown: Vec<_> = running.iter().map(|e| zoned::execution(&cx, e)).collect();
    Ok(listed(&shown, shown.len(), &query))
}

/// Occurrences listed at most per request.
const MAX_OCCURRENCES: usize = 1000;

/// `GET /v1/jobs/:job/occurrences?from=&to=&limit=` (not in Dkron): every nominal occurrence
/// of the job in the range with what became of it — ran (its executions), skipped and why,
/// pending, or no record kept. `from` and `to` are RFC 3339; the default range is the last
/// hour. `X-Truncated: true` when the list stops at `limit` (at most 1000).
pub async fn occurrences(
    State(cx): Cx,
    Path(job): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let now = cx.clock.now();
    let instant = |field: &str, default: jiff::Timestamp| match query.get(field) {
        None | Some("") => Ok(default),
        Some(v) => v.parse::<jiff::Timestamp>().map_err(|e| {
            ApiError::bad_param(
                field,
                format!("{v:?} is not an RFC 3339 time such as 2026-01-01T03:00:00Z: {e}"),
            )
        }),
    };
    let to = instant("to", now)?;
    let from = instant("from", to - jiff::SignedDuration::from_hours(1))?;
    if from > to {
        return Err(ApiError::bad_param("from", "from must not be after to"));
    }
    let limit = match query.get("limit") {
        None | Some("") => MAX_OCCURRENCES,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_OCCURRENCES).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_param(
                    "limit",
                    format!("{v:?} is not a number from 1 to {MAX_OCCURRENCES}"),
                ));
            }
        },
    };
    let name = job.clone();
    let joined = records(&cx, move |s| s.entry_and_executions(&name)).await?;
    let Some((entry, executions)) = joined else {
        return Err(ApiError::job_not_found(&job));
    };
    let (list, truncated) = dkron_core::occurrence::verdicts(&entry, &executions, from, to, limit);
    let mut headers = HeaderMap::new();
    headers.insert("X-Truncated", truncated.to_string().parse().expect("ascii"));
    Ok(render(StatusCode::OK, &list, query.pretty(), headers))
}

/// `GET /v1/stats?days=N` (Dkron 4.1): successes and failures per UTC day over the last `N`
/// days (default 30, 1 to 365), oldest first, zeros where nothing ran.
pub async fn stats(State(cx): Cx, query: Query) -> Result<Response, ApiError> {
    let days = match query.get("days") {
        None | Some("") => 30,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| {
                ApiError::bad_param(
                    "days",
                    format!("{v:?} is not a number of days from 1 to 365"),
                )
            })?,
    };
    let today = dkron_core::stats::day_of(cx.clock.now());
    let counts = cx.state.read(|s| s.stats().last(today, days));
    let stats: Vec<serde_json::Value> = counts
        .iter()
        .map(|(day, c)| {
            serde_json::json!({
                "date": format!("{day}T00:00:00Z"),
                "success_count": c.success_count,
                "failed_count": c.failed_count,
            })
        })
        .collect();
    Ok(ok(&serde_json::json!({ "stats": stats }), &query))
}

/// `POST /v1/jobs/:job/executions/:id/stop` (not in Dkron, which users ask for): stops a run in
/// progress on the node running it, from any server. The run is recorded as failed with
/// "stopped by <token name>" (or "stopped through the API" without ACLs), is not retried, and
/// frees a `forbid` job. 404 for an unknown execution, 409 for one that already finished.
pub async fn stop(
    State(cx): Cx,
    caller: super::acl::Caller,
    Path((job, id)): Path<(String, String)>,
    query: Query,
) -> Result<Response, ApiError> {
    let running = cx.state.running_of(&job).into_iter().find(|e| e.id == id);
    let Some(execution) = running else {
        let (name, eid) = (job.clone(), id.clone());
        return match records(&cx, move |s| s.execution(&name, &eid)).await? {
            Some(_) => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("execution {id} of job {job} already finished"),
            )),
            None => Err(ApiError::not_found(format!(
                "execution {id} of job {job} not found"
            ))),
        };
    };
    let reason = match caller.name() {
        Some(name) => format!("stopped by {name}"),
        None => "stopped through the API".to_string(),
    };
    if !cx.dispatch.stop(&execution, reason).await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "node {} did not stop execution {id}: it is unreachable or the run just ended; retry, or wait for its lease to run out",
                execution.node_name
            ),
        ));
    }
    Ok(ok(&zoned::execution(&cx, &execution), &query))
}
