//! The ACL gate of the HTTP API. With ACLs off (the default) every request goes on as in
//! Dkron OSS and a sent token is ignored. With ACLs on, the token (`Authorization: Bearer
//! <secret>` or `X-Dkron-Token`) is looked up by the hash of its secret in the replicated ACL
//! state: missing, unknown or expired → 401; lacking what the route needs (decided by the
//! core's `route_access`) → 403 naming the capability and the path. Handlers then ask the
//! [`Caller`] for what only they know (the job named in a body, its executor, what a list may
//! show).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dkron_core::acl::{Access, Capability, Forbidden, Principal, Unauthenticated, route_access};
use serde_json::json;

use super::{ApiError, Context};

/// Whether ACLs are on at this node, and where its reset file would be.
#[derive(Clone, Debug, Default)]
pub struct AclSettings {
    pub enabled: bool,
    /// `<data-dir>`: an operator writes the reset index to `acl-bootstrap-reset` there to
    /// bootstrap again.
    pub data_dir: PathBuf,
}

/// Who is asking: anyone (ACLs off, or an open route) or a token's holder.
#[derive(Clone, Debug)]
pub enum Caller {
    Anyone,
    Token(Arc<Principal>),
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    /// Set by [`gate`] on every request of the API; its absence is a wiring bug, refused.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the ACL gate did not run for this route"))
    }
}

impl Caller {
    /// The token's name, recorded as a job's owner and as who started a run.
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Anyone => None,
            Caller::Token(p) => Some(&p.name),
        }
    }

    pub fn may_read_job(&self, job: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Token(p) => p.may(Capability::Read, &dkron_core::acl::job_path(job)),
        }
    }

    /// Refuses a create (`exists` false) or replacement of job `name` with `executor` that
    /// the token's policies do not allow.
    pub fn check_job_write(
        &self,
        name: &str,
        exists: bool,
        executor: &str,
    ) -> Result<(), ApiError> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Token(p) => p
                .may_write_job(name, exists, executor)
                .map_err(|f| forbidden(&p.name, f)),
        }
    }
}

/// The secret a request carries, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(auth) = text(header::AUTHORIZATION.as_str()) {
        let (scheme, secret) = auth.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| secret.trim())
            .filter(|s| !s.is_empty());
    }
    text("x-dkron-token")
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Hex SHA-256 of a secret: all the state ever holds of it.
pub fn secret_hash(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn unauthorized(message: &str) -> Response {
    crate::telemetry::metrics::acl_refused(401);
    let body = json!({ "error": format!("{message}: send a token as Authorization: Bearer <secret> (or X-Dkron-Token); `dkron acl bootstrap` makes the first one") });
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

pub(super) fn forbidden(token: &str, why: Forbidden) -> ApiError {
    let body = match why {
        Forbidden::Lacks { capability, path } => json!({
            "error": format!("token {token} lacks the {} capability on {path}", capability.as_str()),
            "capability": capability.as_str(),
            "path": path,
        }),
        Forbidden::ManagementOnly => json!({
            "error": format!("token {token} is not a management token: ACL administration needs one"),
            "capability": "management",
        }),
        Forbidden::Executor { executor, allowed } => json!({
            "error": format!("token {token} may not write jobs with the {executor} executor (its policies allow: {})", allowed.join(", ")),
            "field": "executor",
            "allowed": allowed,
        }),
    };
    ApiError {
        status: StatusCode::FORBIDDEN,
        body,
    }
}

/// The token behind a request, as the audit log records it.
fn who(principal: &Principal) -> super::audit::Who {
    super::audit::Who {
        accessor: principal.accessor.clone(),
        name: principal.name.clone(),
    }
}

/// The middleware: authenticates and authorizes, then hands the [`Caller`] to the handler.
pub(super) async fn gate(cx: Arc<Context>, mut req: Request, next: Next) -> Response {
    if !cx.acl.enabled {
        req.extensions_mut().insert(Caller::Anyone);
        return next.run(req).await;
    }
    // Judged on the decoded path, the names the handlers will see (`%C3%A9t%C3%A9` is `été`).
    let path = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy();
    let access = route_access(req.method().as_str(), &path);
    if access == Access::Open {
        req.extensions_mut().insert(Caller::Anyone);
        return next.run(req).await;
    }
    let Some(secret) = presented(req.headers()) else {
        return unauthorized("an ACL token is required");
    };
    let hash = secret_hash(secret);
    let now = cx.clock.now();
    let principal = match cx.state.read(|s| s.acl().authenticate(&hash, now)) {
        Ok(p) => p,
        Err(Unauthenticated::Unknown) => return unauthorized("unknown ACL token"),
        Err(Unauthenticated::Expired) => return unauthorized("the ACL token has expired"),
    };
    if let Err(why) = principal.check(&access) {
        crate::telemetry::metrics::acl_refused(403);
        let mut res = forbidden(&principal.name, why).into_response();
        res.extensions_mut().insert(who(&principal));
        return res;
    }
    let principal = Arc::new(principal);
    let who = who(&principal);
    req.extensions_mut().insert(Caller::Token(principal));
    let mut res = next.run(req).await;
    res.extensions_mut().insert(who);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_bearer_or_dkrons_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert("x-dkron-token", "s1".parse().unwrap());
        assert_eq!(presented(&h), Some("s1"));
        h.insert(header::AUTHORIZATION, "Bearer  s2 ".parse().unwrap());
        assert_eq!(presented(&h), Some("s2"));
        h.insert(header::AUTHORIZATION, "Basic czI=".parse().unwrap());
        assert_eq!(presented(&h), None);
    }

    #[test]
    fn only_a_hash_of_the_secret_is_kept() {
        let h = secret_hash("abc");
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
