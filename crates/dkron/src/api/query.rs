//! The query string and the answers: a [`Query`] extractor (`pretty`, paging, sorting,
//! filters), and one way to render each kind of answer ([`ok`], [`created`], [`listed`]).

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ApiError;

/// The decoded query string, in order.
pub struct Query(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Query, Infallible> {
        Ok(Query::parse(parts.uri.query()))
    }
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// `metadata[key]=value` pairs.
    pub fn metadata(&self) -> Vec<(String, String)> {
        self.bracketed("metadata")
    }

    /// `tags[k]=v` filters (not in Dkron): a job matches when its tag `k`, without the
    /// `:count` suffix, is `v`.
    pub fn tags(&self) -> Vec<(String, String)> {
        self.bracketed("tags")
    }

    /// `name[k]=v` pairs.
    fn bracketed(&self, name: &str) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(name)?.strip_prefix('[')?.strip_suffix(']')?;
                Some((key.to_string(), v.clone()))
            })
            .collect()
    }

    fn index(&self, key: &str) -> Result<Option<usize>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
                ApiError::bad_param(key, format!("{v:?} is not a non-negative integer"))
            }),
        }
    }

    /// `_start`/`_end` as a clamped range over `len` items (react-admin's convention).
    pub fn page(&self, len: usize) -> Result<std::ops::Range<usize>, ApiError> {
        let start = self.index("_start")?.unwrap_or(0);
        let end = self.index("_end")?.unwrap_or(len).min(len);
        Ok(start.min(end)..end)
    }

    /// `_order`: `ASC` (default) or `DESC`, any case.
    pub fn descending(&self, default_desc: bool) -> Result<bool, ApiError> {
        match self.get("_order") {
            None | Some("") => Ok(default_desc),
            Some(o) if o.eq_ignore_ascii_case("desc") => Ok(true),
            Some(o) if o.eq_ignore_ascii_case("asc") => Ok(false),
            Some(o) => Err(ApiError::bad_param(
                "_order",
                format!("{o:?} is not ASC or DESC"),
            )),
        }
    }

    pub fn pretty(&self) -> bool {
        self.has("pretty")
    }
}

/// 200 with `value` as JSON.
pub fn ok<T: Serialize + ?Sized>(value: &T, query: &Query) -> Response {
    render(StatusCode::OK, value, query.pretty(), HeaderMap::new())
}

/// 200 with a page of a list and its full length in `X-Total-Count`.
pub fn listed<T: Serialize>(page: &[T], total: usize, query: &Query) -> Response {
    render(StatusCode::OK, page, query.pretty(), total_count(total))
}

/// `status` with `value` and `Location: <location>` (a created or run job).
pub fn located<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
    location: &str,
    query: &Query,
) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    render(status, value, query.pretty(), headers)
}

/// 201 with the created job and its `Location`.
pub fn created<T: Serialize + ?Sized>(value: &T, location: &str, query: &Query) -> Response {
    located(StatusCode::CREATED, value, location, query)
}

/// Renders JSON, indented when `pretty` is in the query, with extra headers.
pub fn render<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
    pretty: bool,
    headers: HeaderMap,
) -> Response {
    let body = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    match body {
        Ok(bytes) => {
            let mut res = (status, bytes).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            res.headers_mut().extend(headers);
            res
        }
        Err(e) => ApiError::internal(format!("cannot encode response: {e}")).into_response(),
    }
}

fn total_count(n: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-total-count", HeaderValue::from(n));
    h
}
