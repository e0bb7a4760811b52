//! The web dashboard at `/ui`: static HTML, CSS and a JavaScript module embedded in the
//! binary (no build step, no CDN), talking only to the public `/v1` API. `/` redirects here.
//! The page says whether ACLs are on the way Dkron's does (`window.DKRON_ACL_ENABLED`); the
//! dashboard then asks for a token (`auth.js`). Its files are public: they hold no data.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const AUTH: &str = include_str!("assets/auth.js");
const CHARTS: &str = include_str!("assets/charts.js");
const STYLE: &str = include_str!("assets/style.css");

/// `/`: a browser (its `Accept` names HTML) is sent to the dashboard with 303, as Dkron does;
/// anything else gets a 404.
async fn root(headers: axum::http::HeaderMap) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if html {
        Redirect::to("/ui/").into_response()
    } else {
        (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "nothing here: the dashboard is at /ui/, the API at /v1/"})),
        )
            .into_response()
    }
}

static INDEX_ACL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static INDEX_OPEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change with the binary; revalidate rather than serve a stale dashboard.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Routes of the dashboard, to merge into the API router; `acl` says whether ACLs are on.
pub fn router<S: Clone + Send + Sync + 'static>(acl: bool) -> Router<S> {
    let index: &'static str = if acl {
        INDEX_ACL.get_or_init(|| INDEX.replace("__DKRON_ACL_ENABLED__", "true"))
    } else {
        INDEX_OPEN.get_or_init(|| INDEX.replace("__DKRON_ACL_ENABLED__", "false"))
    };
    Router::new()
        .route("/", get(root))
        .route(
            "/ui",
            get(|| async {
                (
                    axum::http::StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, "/ui/")],
                )
            }),
        )
        .route(
            "/ui/",
            get(move || async move { asset(index, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/auth.js",
            get(|| async { asset(AUTH, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/charts.js",
            get(|| async { asset(CHARTS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}
