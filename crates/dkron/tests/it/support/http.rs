//! An HTTP client for the API that answers status, headers, text and JSON together, and a
//! thin REST client bound to one node.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{init_process, wait_until};

pub fn client() -> reqwest::Client {
    init_process();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("building the test HTTP client")
}

/// One HTTP answer: status, headers, the raw text and its JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
    pub is_json: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn total_count(&self) -> Option<usize> {
        self.header("x-total-count").and_then(|v| v.parse().ok())
    }

    /// The `error` string of a JSON error body; panics with the whole answer otherwise.
    pub fn error(&self) -> &str {
        assert!(self.is_json, "expected a JSON error body, got {self:#?}");
        self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an `error` string in {self:#?}"))
    }

    /// The `field` of every entry in `errors`, plus the top-level `field`.
    pub fn error_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(f) = self.body["field"].as_str() {
            fields.push(f.to_string());
        }
        fields
    }

    /// A JSON array body; panics with the whole answer otherwise.
    pub fn array(&self) -> &Vec<Value> {
        self.body
            .as_array()
            .unwrap_or_else(|| panic!("expected a JSON array, got {self:#?}"))
    }

    /// Names of the jobs in an array body, in order.
    pub fn names(&self) -> Vec<String> {
        self.array()
            .iter()
            .map(|j| j["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Resp {
    let res = req.send().await.expect("HTTP request failed");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("reading the response body");
    let (body, is_json) = if text.is_empty() {
        (Value::Null, false)
    } else {
        match serde_json::from_str(&text) {
            Ok(v) => (v, true),
            Err(_) => (Value::Null, false),
        }
    };
    Resp {
        status,
        headers,
        text,
        body,
        is_json,
    }
}

/// A thin REST client bound to one base URL.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}"),
            client: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Resp {
        send(self.client.get(self.url(path))).await
    }

    /// GET `path` and answer the body as text (for non-JSON endpoints such as `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        r.text().await.expect("reading the body")
    }

    pub async fn delete(&self, path: &str) -> Resp {
        send(self.client.delete(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        send(self.client.post(self.url(path)).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        send(self.client.put(self.url(path)).json(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        send(self.client.patch(self.url(path)).json(body)).await
    }

    /// POST of raw bytes with no Content-Type header (as `curl --data-binary` without -H).
    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        send(self.client.post(self.url(path)).body(body.into())).await
    }

    /// POST with no body at all (run, toggle, pause...).
    pub async fn post_empty(&self, path: &str) -> Resp {
        send(self.client.post(self.url(path))).await
    }

    /// Creates a job and insists on 201.
    pub async fn create(&self, job: &Value) -> Value {
        let r = self.post("/v1/jobs", job).await;
        assert_eq!(r.status, 201, "creating {job} failed: {r:#?}");
        r.body
    }

    /// Starts a manual run and insists on 200 (Dkron's status).
    pub async fn run(&self, job: &str) -> Resp {
        let r = self.post_empty(&format!("/v1/jobs/{job}/run")).await;
        assert_eq!(r.status, 200, "running {job} failed: {r:#?}");
        r
    }

    pub async fn job(&self, name: &str) -> Value {
        let r = self.get(&format!("/v1/jobs/{name}")).await;
        assert_eq!(r.status, 200, "GET job {name}: {r:#?}");
        r.body
    }

    pub async fn executions(&self, job: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/jobs/{job}/executions")).await;
        assert_eq!(r.status, 200, "executions of {job}: {r:#?}");
        r.array().clone()
    }

    /// What became of each occurrence of `job` in `[from, to]`: `ran`, `pending`,
    /// `no_record`, or `skipped` and its reason (`skipped behind`).
    pub async fn outcomes(
        &self,
        job: &str,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
    ) -> Vec<String> {
        let r = self
            .get(&format!("/v1/jobs/{job}/occurrences?from={from}&to={to}"))
            .await;
        assert_eq!(r.status, 200, "occurrences of {job}: {}", r.text);
        r.array()
            .iter()
            .map(|o| {
                let reason = o["reason"].as_str().unwrap_or("");
                format!("{} {reason}", o["outcome"].as_str().unwrap_or("?"))
                    .trim()
                    .to_string()
            })
            .collect()
    }

    /// Waits until `job` has at least `n` finished executions and returns them all.
    pub async fn wait_finished(&self, job: &str, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(
            timeout,
            &format!("{n} finished execution(s) of {job}"),
            async || {
                let all = self.executions(job).await;
                (all.iter().filter(|e| is_finished(e)).count() >= n).then_some(all)
            },
        )
        .await
    }
}

pub fn is_finished(execution: &Value) -> bool {
    execution["finished_at"].as_str() != Some(ZERO_TIME)
}

pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A plain-HTTP GET of `url` gets no answer at all: a TLS port refuses it at the handshake.
pub async fn assert_plain_http_refused(url: &str) {
    let answer = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        answer.is_err(),
        "plain HTTP to {url} got an answer: {answer:?}"
    );
}

/// The Content-Type of a [`multipart`] body.
pub const MULTIPART_TYPE: &str = "multipart/form-data; boundary=dkron-test-boundary";

/// A multipart/form-data body with one file field (what `curl --form field=@jobs.json` sends).
pub fn multipart(field: &str, content: &str) -> Vec<u8> {
    format!(
        "--dkron-test-boundary\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"jobs.json\"\r\n\
         Content-Type: application/json\r\n\r\n{content}\r\n--dkron-test-boundary--\r\n"
    )
    .into_bytes()
}
