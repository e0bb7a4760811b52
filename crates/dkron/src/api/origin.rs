//! Cross-site writes. Any web page an operator opens can make their browser send a request to
//! a dkron it reaches (a form post, or a `fetch` simple enough to need no pre-flight), so a
//! state-changing request that carries a browser `Origin` other than the server's own is
//! refused, unless `--http-allowed-origins` lists it. Requests without an `Origin` — curl,
//! scripts, Dkron's clients — and reads are not affected; the dashboard is same-origin.

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Whether a request may go on: a read, no `Origin`, the server's own origin (its authority
/// is the `Host` the browser sent), or an allowed one.
pub(super) fn allowed(
    method: &Method,
    origin: Option<&str>,
    host: Option<&str>,
    allowed: &[String],
) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let Some(origin) = origin else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // `null` (a sandboxed frame, a file) has no authority: never the server's own.
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// The middleware: 403, saying why and what to do, for a cross-site write.
pub(super) async fn guard(
    origins: std::sync::Arc<Vec<String>>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (origin, host) = (text(header::ORIGIN), text(header::HOST));
    if allowed(req.method(), origin, host, &origins) {
        return next.run(req).await;
    }
    let origin = origin.unwrap_or_default().to_string();
    tracing::warn!(%origin, method = %req.method(), path = %req.uri().path(), "refused a cross-site write: a page of another site asked a browser to change this cluster");
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "cross-site request refused: origin {origin} may not change this cluster; start the servers with --http-allowed-origins={origin} if it should"
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_from_another_origin_are_refused_and_everything_else_goes() {
        let none: &[String] = &[];
        let host = Some("127.0.0.1:8080");
        // Scripts and Dkron's clients send no Origin.
        assert!(allowed(&Method::POST, None, host, none));
        // The dashboard: same origin, any case.
        assert!(allowed(
            &Method::POST,
            Some("http://127.0.0.1:8080"),
            host,
            none
        ));
        assert!(allowed(
            &Method::DELETE,
            Some("HTTP://127.0.0.1:8080"),
            host,
            none
        ));
        // A page of another site, or a sandboxed one.
        for origin in ["http://evil.example", "http://127.0.0.1:9999", "null"] {
            for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                assert!(
                    !allowed(&method, Some(origin), host, none),
                    "{method} {origin}"
                );
            }
            assert!(allowed(&Method::GET, Some(origin), host, none), "reads go");
            assert!(
                allowed(&Method::OPTIONS, Some(origin), host, none),
                "pre-flights go"
            );
        }
        // Unless allowed by name.
        let ops = ["https://ops.example.com/".to_string()];
        assert!(allowed(
            &Method::POST,
            Some("https://ops.example.com"),
            host,
            &ops
        ));
        assert!(!allowed(
            &Method::POST,
            Some("https://ops.example.com.evil"),
            host,
            &ops
        ));
    }
}
