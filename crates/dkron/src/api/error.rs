//! API errors: one type, one mapping to status codes and JSON bodies.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dkron_core::command::ApplyError;
use dkron_core::validate::FieldError;
use serde_json::{Value, json};

use crate::rpc::wire::{RunRefused, WriteError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A bad query parameter, named.
    pub fn bad_param(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": format!("{field}: {message}"), "field": field }),
        }
    }

    /// A body that does not decode: 400 naming the field (`what`: "invalid token", ...).
    pub fn undecodable(what: &str, field: String, detail: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": format!("{what}: {field}: {detail}"), "field": field }),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn job_not_found(job: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            body: json!({ "error": format!("job {job} not found"), "job": job }),
        }
    }

    pub fn invalid(errors: Vec<FieldError>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({
                "error": dkron_core::validate::summary(&errors),
                "errors": errors,
            }),
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> ApiError {
        let message = e.to_string();
        match e {
            ApplyError::JobNotFound { job } => ApiError::job_not_found(&job),
            ApplyError::ParentNotFound { parent } => ApiError {
                status: StatusCode::NOT_FOUND,
                body: json!({ "error": message, "field": "parent_job", "parent_job": parent }),
            },
            ApplyError::Invalid { errors } => ApiError::invalid(errors),
            ApplyError::Cycle { chain } => ApiError {
                status: StatusCode::BAD_REQUEST,
                body: json!({ "error": message, "field": "parent_job", "chain": chain }),
            },
            ApplyError::HasDependents { children } => ApiError {
                status: StatusCode::CONFLICT,
                body: json!({ "error": message, "dependent_jobs": children }),
            },
            ApplyError::AlreadyRunning { job, running } => ApiError {
                status: StatusCode::CONFLICT,
                body: json!({ "error": message, "job": job, "running": running }),
            },
            ApplyError::Paused => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
            ApplyError::AclBootstrapDone { reset_index } => ApiError {
                status: StatusCode::FORBIDDEN,
                body: json!({ "error": message, "reset_index": reset_index }),
            },
            ApplyError::PolicyNotFound { .. } | ApplyError::TokenNotFound { .. } => {
                ApiError::not_found(message)
            }
            ApplyError::UnknownPolicies { names } => ApiError {
                status: StatusCode::BAD_REQUEST,
                body: json!({ "error": message, "field": "policies", "policies": names }),
            },
            ApplyError::TokenExists => ApiError::new(StatusCode::CONFLICT, message),
            // Only the scheduler and the runner propose these; no API call answers with them.
            ApplyError::AlreadyDecided { job, .. }
            | ApplyError::AlreadySkipped { job, .. }
            | ApplyError::OutOfOrder { job, .. }
            | ApplyError::NotRunningOn { job, .. } => ApiError {
                status: StatusCode::CONFLICT,
                body: json!({ "error": message, "job": job }),
            },
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        match e {
            WriteError::NoLeader
            | WriteError::NotLeader { .. }
            | WriteError::LeaderUnreachable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            WriteError::Overloaded { retry_after_s, .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({ "error": e.to_string(), "retry_after": retry_after_s }),
            },
            WriteError::Fatal(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<RunRefused> for ApiError {
    fn from(e: RunRefused) -> ApiError {
        match e {
            RunRefused::Write(e) => e.into(),
            RunRefused::Rejected(e) => e.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        tracing::error!(error = %format!("{e:#}"), "storage read failed; check the data dir's disk");
        ApiError::internal(format!("storage error: {e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A refusal to come back later says when, as a header too.
        let retry_after = self.body.get("retry_after").and_then(Value::as_u64);
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
