//! The REST API, Dkron v4's shapes (`/v1/...`), served by every server.
//!
//! Handlers read the local replicated state ([`StateReader`]) and write through the
//! [`Proposer`]; runs go through the leader's [`Dispatch`] like every other run. What is
//! allowed (pause, `forbid`, parents, cycles) is decided by the state machine, never here.
//! Errors are JSON (`{"error": "..."}`) with Dkron's wording where Dkron has one; status codes
//! are decided in one place, [`error::ApiError`].

pub mod acl;
pub mod acl_admin;
pub mod audit;
mod debug;
mod error;
mod executions;
mod jobs;
mod node;
mod origin;
mod query;
mod restore;
mod schedule;
mod zoned;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};
use tracing::Instrument;

pub use error::ApiError;

use crate::clock::SharedClock;
use crate::cluster::Members;
use crate::leader::Dispatch;
use crate::raft::{Leadership, Proposer, StateReader, Voters};
use crate::shutdown::Shutdown;
use crate::storage::OutputStore;

/// What the handlers use.
pub struct Context {
    pub proposer: Proposer,
    pub state: StateReader,
    pub leadership: Leadership,
    pub voters: Voters,
    pub members: Members,
    pub dispatch: Dispatch,
    pub outputs: OutputStore,
    pub clock: SharedClock,
    /// `POST /v1/leave` stops the node.
    pub shutdown: Shutdown,
    /// Whether gossip is encrypted (`/v1` says so).
    pub encrypted: bool,
    /// Browser origins besides the server's own that may change things.
    pub allowed_origins: Vec<String>,
    pub acl: acl::AclSettings,
    /// The executors this node runs (`--executors`; empty: all), as `/health` reports them.
    pub executors: Vec<String>,
    /// This node's external executor plugins: a job may name them, `/health` lists them.
    pub plugins: dkron_executors::Plugins,
    /// Where writes and refusals are recorded (`None`: not at all, in some tests).
    pub audit: Option<audit::Audit>,
}

type Cx = axum::extract::State<Arc<Context>>;

/// The API's routes, with `extra` routes of the node's own (`/metrics`) served alongside them
/// under the same layers (`X-Whom`, CORS, the request span).
pub fn router(cx: Context, extra: Router) -> Router {
    let whom =
        HeaderValue::from_str(cx.members.name()).unwrap_or(HeaderValue::from_static("dkron"));
    let origins = Arc::new(cx.allowed_origins.clone());
    let cors = cors(&cx);
    let audit = cx.audit.clone();
    let v1 = Router::new()
        .route("/", get(node::status))
        .route("/members", get(node::members))
        .route("/raft/peers", get(node::raft_peers))
        .route("/leader", get(node::leader))
        .route("/isleader", get(node::is_leader))
        .route("/leave", post(node::leave))
        .route("/busy", get(executions::busy))
        .route("/stats", get(executions::stats))
        .route("/pause", get(node::pause_status).post(node::pause))
        .route("/unpause", post(node::unpause))
        .route("/restore", post(restore::restore))
        .route(
            "/jobs",
            get(jobs::list).post(jobs::create).patch(jobs::create),
        )
        .route(
            "/jobs/{job}",
            get(jobs::show)
                .put(jobs::update)
                .delete(jobs::delete)
                .post(jobs::run),
        )
        .route("/jobs/{job}/run", post(jobs::run))
        .route("/jobs/{job}/toggle", post(jobs::toggle))
        .route(
            "/jobs/{job}/executions",
            get(executions::list).delete(executions::delete_all),
        )
        .route("/jobs/{job}/executions/{execution}", get(executions::show))
        .route(
            "/jobs/{job}/executions/{execution}/stop",
            post(executions::stop),
        )
        .route("/jobs/{job}/occurrences", get(executions::occurrences))
        // Dkron 0.x's path for a job's executions; the `dkron` PyPI client still reads it.
        .route("/executions/{job}", get(executions::list))
        .route("/jobs/{job}/next", get(schedule::next))
        .route("/schedule", get(schedule::preview))
        .route("/acl/bootstrap", post(acl_admin::bootstrap))
        .route("/acl/policies", get(acl_admin::policies))
        .route(
            "/acl/policies/{name}",
            get(acl_admin::policy)
                .post(acl_admin::put_policy)
                .put(acl_admin::put_policy)
                .delete(acl_admin::delete_policy),
        )
        .route(
            "/acl/tokens",
            get(acl_admin::tokens).post(acl_admin::create_token),
        )
        .route(
            "/acl/tokens/{accessor}",
            get(acl_admin::token).delete(acl_admin::delete_token),
        )
        .route("/acl/token/self", get(acl_admin::token_self));
    let cx = Arc::new(cx);
    let gate_cx = cx.clone();
    let router = Router::new()
        .route("/health", get(node::health))
        .route("/debug/vars", get(debug::vars))
        .route("/v1/", get(node::status))
        .nest("/v1", v1)
        .with_state(cx)
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            acl::gate(gate_cx.clone(), req, next)
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            origin::guard(origins.clone(), req, next)
        }));
    let router = match audit {
        Some(audit) => router.layer(middleware::from_fn(move |req: Request, next: Next| {
            audit::record(audit.clone(), req, next)
        })),
        None => router,
    };
    router
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let whom = whom.clone();
            let span = tracing::info_span!(
                "http.request",
                method = %req.method(),
                path = %req.uri().path()
            );
            async move {
                let mut res: Response = next.run(req).await;
                res.headers_mut().insert("x-whom", whom);
                res
            }
            .instrument(span)
        }))
        .layer(cors)
}

/// CORS: any origin may read while ACLs are off (Dkron's `*`); with ACLs on only the allowed
/// origins, since a token in a browser must not be usable from any page.
fn cors(cx: &Context) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(Any);
    if !cx.acl.enabled {
        return base.allow_origin(Any);
    }
    let allowed: Vec<HeaderValue> = cx
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    base.allow_origin(allowed)
}

/// Proposes a command whose success answer is a job (create, delete, toggle, delete
/// executions) and returns that job; a rejection becomes its API error.
async fn write_job(
    cx: &Context,
    command: dkron_core::command::Command,
) -> Result<dkron_core::job::Job, ApiError> {
    use dkron_core::command::Response as Applied;
    match cx.proposer.write(command).await? {
        Applied::Job { job } => Ok(*job),
        Applied::Rejected { error } => Err(error.into()),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

/// Drops the full outputs this node kept for `job` (its executions are gone).
async fn forget_outputs(cx: &Context, job: &str) {
    if let Err(e) = cx.outputs.delete_job(job).await {
        tracing::warn!(job = %job, error = %e, "could not delete the job's kept outputs");
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route: see the API reference in docs/api.md",
    )
}

/// No route: a path with a trailing slash is redirected to the one without, as Dkron's router
/// does (301 for reads, 307 otherwise, so a POST keeps its body); pydkron asks for
/// `/v1/jobs/<job>/executions/`. Anything else is a 404.
async fn not_found(method: axum::http::Method, uri: axum::extract::OriginalUri) -> Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let path = uri.0.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let target = match uri.0.query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        let status = if matches!(method, axum::http::Method::GET | axum::http::Method::HEAD) {
            StatusCode::MOVED_PERMANENTLY
        } else {
            StatusCode::TEMPORARY_REDIRECT
        };
        if let Ok(location) = HeaderValue::from_str(&target) {
            return (status, [(header::LOCATION, location)]).into_response();
        }
    }
    ApiError::not_found("no such route: see the API reference in docs/api.md").into_response()
}
