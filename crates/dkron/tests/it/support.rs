//! Shared helpers: an in-process node on port 0 with its own data dir, an HTTP client that
//! returns status, headers and JSON together, a bounded poller, a local HTTP sink for the
//! http executor, and a guard for spawned `dkron` processes.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dkron::config::AgentConfig;
use dkron::node::NodeHandle;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Upper bound for anything that should happen "soon" (a manual run, a chained child).
pub const SOON: Duration = Duration::from_secs(10);

/// Installs the TLS provider reqwest needs (it is built without one) and, when `RUST_LOG` is
/// set, a log subscriber so a failing test can be rerun with the node's logs visible.
fn init_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Ok(filter) = std::env::var("RUST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

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

    /// Starts a manual run and insists on 202.
    pub async fn run(&self, job: &str) -> Resp {
        let r = self.post_empty(&format!("/v1/jobs/{job}/run")).await;
        assert_eq!(r.status, 202, "running {job} failed: {r:#?}");
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

/// Polls `check` every 50 ms until it yields a value; fails with `what` after `timeout`.
pub async fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node running inside the test process, on port 0, with its own data dir.
pub struct TestNode {
    pub name: String,
    pub dir: TempDir,
    pub handle: Option<NodeHandle>,
    pub api: Api,
    /// The node's clock (the system clock plus an offset the test can move), kept across
    /// restarts.
    pub clock: Arc<OffsetClock>,
}

/// The system clock shifted by an offset a test moves forward, to let hours "pass" while a
/// node is down without waiting for them.
#[derive(Default)]
pub struct OffsetClock {
    offset_secs: std::sync::atomic::AtomicI64,
}

impl OffsetClock {
    pub fn advance(&self, by: Duration) {
        self.offset_secs
            .fetch_add(by.as_secs() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl dkron::clock::Clock for OffsetClock {
    fn now(&self) -> jiff::Timestamp {
        let offset = self.offset_secs.load(std::sync::atomic::Ordering::SeqCst);
        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(offset)
    }
}

impl std::ops::Deref for TestNode {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

pub fn node_config(name: &str, data_dir: &Path) -> AgentConfig {
    AgentConfig {
        server: true,
        bootstrap_expect: 1,
        data_dir: data_dir.to_path_buf(),
        node_name: name.into(),
        bind_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        rpc_port: 0,
        ..Default::default()
    }
}

async fn start_handle(name: &str, data_dir: &Path, clock: Arc<OffsetClock>) -> NodeHandle {
    start_handle_with(node_config(name, data_dir), clock).await
}

async fn start_handle_with(config: AgentConfig, clock: Arc<OffsetClock>) -> NodeHandle {
    init_process();
    let name = config.node_name.clone();
    let handle = dkron::node::start(config, clock)
        .await
        .unwrap_or_else(|e| panic!("starting node {name}: {e:#}"));
    handle
        .wait_leader(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("node {name} did not become leader: {e:#}"));
    handle
}

impl TestNode {
    pub async fn start() -> TestNode {
        TestNode::start_named("test-node").await
    }

    pub async fn start_named(name: &str) -> TestNode {
        TestNode::start_configured(name, |_| {}).await
    }

    /// Starts a node whose configuration `configure` adjusts first.
    pub async fn start_configured(
        name: &str,
        configure: impl FnOnce(&mut AgentConfig),
    ) -> TestNode {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let clock = Arc::new(OffsetClock::default());
        let mut config = node_config(name, &dir.path().join("data"));
        configure(&mut config);
        let handle = start_handle_with(config, clock.clone()).await;
        let api = Api::new(handle.http_addr());
        TestNode {
            name: name.into(),
            dir,
            handle: Some(handle),
            api,
            clock,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the node cleanly (`NodeHandle::shutdown`).
    pub async fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        // Drop pooled keep-alive connections to the stopped server.
        self.api.client = client();
    }

    /// Stops the node and starts it again on the same data dir (new ports).
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let handle = start_handle(&self.name, &self.data_dir(), self.clock.clone()).await;
        self.api = Api::new(handle.http_addr());
        self.handle = Some(handle);
    }
}

/// A shell job that runs `command` through `sh -c`.
pub fn shell_job(name: &str, schedule: &str, command: &str) -> Value {
    json!({
        "name": name,
        "schedule": schedule,
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
    })
}

/// One request received by [`Sink`].
#[derive(Debug, Clone)]
pub struct SinkRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: String,
}

/// A local HTTP server that records every request and answers 200 `ok`.
pub struct Sink {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<SinkRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Sink {
        let requests: Arc<Mutex<Vec<SinkRequest>>> = Arc::default();
        let recorded = requests.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let recorded = recorded.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20)
                    .await
                    .unwrap_or_default();
                recorded.lock().expect("sink lock").push(SinkRequest {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the sink");
        let addr = listener.local_addr().expect("sink address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Sink {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<SinkRequest> {
        self.requests.lock().expect("sink lock").clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, drop the listener).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free port")
        .port()
}

pub fn dkron_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dkron")
}

/// `dkron` with a clean environment for configuration: no `DKRON_*` variables, and a
/// working directory and `HOME` without config files, so only what the test passes counts.
pub fn dkron_command(home: &Path) -> Command {
    let mut cmd = Command::new(dkron_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DKRON_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home).current_dir(home);
    cmd
}

/// A spawned `dkron agent`, killed (SIGKILL) and reaped when dropped. Its stdout and stderr go
/// to a log file so a failing test can print them.
pub struct Agent {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub api: Api,
}

impl Agent {
    /// Spawns `dkron agent <args>` whose HTTP API will listen on `http`.
    pub fn spawn(mut cmd: Command, http: SocketAddr, log: PathBuf) -> Agent {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening the agent log");
        let err = out.try_clone().expect("cloning the log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawning dkron");
        Agent {
            child: Some(child),
            log,
            api: Api::new(http),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent answers `/v1/isleader` with 200; fails with its log otherwise.
    pub async fn wait_leader(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "dkron exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(r) = self
                .api
                .client
                .get(self.api.url("/v1/isleader"))
                .send()
                .await
                && r.status().as_u16() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dkron did not become leader within {timeout:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a short-lived `dkron` command (one that should exit by itself) with a time bound.
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning dkron");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("polling dkron").is_some() {
            return child.wait_with_output().expect("collecting dkron output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collecting dkron output");
            panic!(
                "dkron did not exit within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
