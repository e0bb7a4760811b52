//! The host side of HashiCorp's go-plugin protocol, for Dkron's external executor plugins:
//! a `dkron-executor-<name>` binary works here unchanged.
//!
//! The protocol, as Dkron's plugins speak it: the host starts the binary with Dkron's magic
//! cookie in the environment; the plugin prints one line on stdout,
//! `1|1|unix|/tmp/plugin123|grpc|` (core protocol, app protocol, network, address, protocol,
//! and a certificate when the host asked for mutual TLS, which Dkron does not), and serves
//! gRPC there: `types.v1.ExecutorService/Execute` and go-plugin's `plugin.GRPCBroker`. For
//! each run the host serves `types.v1.StatusHelperService` on a socket of its own, tells the
//! plugin where through the broker stream (`ConnInfo{service_id, network, address}`), and
//! calls `Execute{job_name, config, status_server: service_id}`; the plugin streams output
//! through `Update` while it runs and answers `{output, error}`.
//!
//! Differences from Dkron: a plugin that fails to start does not stop the agent (it is
//! reported by `/health` and by each of its runs, and started again by its next run); a
//! crashed plugin is restarted by its next run (Dkron never restarts one); a binary that
//! another user could have replaced (group- or world-writable, or not owned by this user or
//! root) is not loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::Outcome;

/// Dkron's handshake (`plugin.Handshake` in Dkron's source).
const COOKIE_KEY: &str = "DKRON_PLUGIN_MAGIC_COOKIE";
const COOKIE_VALUE: &str = "b29a76488b6f3ca7955c5f769b50641f0fcd88748d8cedecda313d516320ca19";
/// How long a plugin may take to print its handshake line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The prefix of executor plugin binaries.
const PREFIX: &str = "dkron-executor-";

// ---- the protocol's messages (Dkron's executor.proto, go-plugin's grpc_broker.proto) -------

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecuteRequest {
    #[prost(string, tag = "1")]
    pub job_name: String,
    #[prost(map = "string, string", tag = "2")]
    pub config: std::collections::HashMap<String, String>,
    #[prost(uint32, tag = "3")]
    pub status_server: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecuteResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub output: Vec<u8>,
    #[prost(string, tag = "2")]
    pub error: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusUpdateRequest {
    #[prost(bytes = "vec", tag = "2")]
    pub output: Vec<u8>,
    #[prost(bool, tag = "3")]
    pub error: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusUpdateResponse {
    #[prost(int64, tag = "1")]
    pub r: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConnInfo {
    #[prost(uint32, tag = "1")]
    pub service_id: u32,
    #[prost(string, tag = "2")]
    pub network: String,
    #[prost(string, tag = "3")]
    pub address: String,
}

// ---- discovery -------------------------------------------------------------------------

/// The executor plugins in `dirs`, by name (`dkron-executor-foo-bar` → `foo-bar`, `.exe`
/// dropped); a later directory's binary replaces an earlier one's, as in Dkron. Files
/// another user could have written are skipped with a warning.
pub fn discover(dirs: &[PathBuf]) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let Some(name) = file.strip_prefix(PREFIX) else {
                continue;
            };
            let name = name.strip_suffix(".exe").unwrap_or(name);
            if name.is_empty() {
                continue;
            }
            match trusted(&path) {
                Ok(()) => {
                    found.insert(name.to_owned(), path);
                }
                Err(why) => {
                    tracing::warn!(plugin = %path.display(), reason = %why, "executor plugin not loaded: {why}; make it owned by this user or root and writable by its owner only")
                }
            }
        }
    }
    found
}

/// Whether `path` is an executable file only this user or root could have written.
pub fn trusted(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a file".to_owned());
    }
    if meta.mode() & 0o111 == 0 {
        return Err("not executable".to_owned());
    }
    if meta.mode() & 0o022 != 0 {
        return Err("writable by its group or by anyone".to_owned());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "owned by uid {}, not this user ({me}) or root",
            meta.uid()
        ));
    }
    Ok(())
}

// ---- the host --------------------------------------------------------------------------

/// Where the output a plugin streams during a run goes (the run's live output).
pub type LiveSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Every executor plugin of this node, each started once and kept running.
#[derive(Clone, Default)]
pub struct Plugins(Arc<BTreeMap<String, Arc<Plugin>>>);

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Two run contexts are equal whatever plugins they carry.
impl PartialEq for Plugins {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Plugins {}

struct Plugin {
    name: String,
    path: PathBuf,
    running: tokio::sync::Mutex<Option<Arc<Running>>>,
    /// Why the last start failed, for `/health`.
    failure: Mutex<Option<String>>,
}

/// A started plugin process and its connection.
struct Running {
    child: Mutex<Child>,
    channel: Channel,
    broker: mpsc::Sender<ConnInfo>,
    next_id: AtomicU32,
    /// Where this host's status servers listen (private to this user).
    sockets: tempfile::TempDir,
}

impl Plugins {
    /// The plugins in `dirs` whose names are not in `builtin`, started now (in the
    /// background: a slow plugin does not hold the agent's start).
    pub fn start(dirs: &[PathBuf], builtin: &[&str]) -> Plugins {
        let plugins: BTreeMap<String, Arc<Plugin>> = discover(dirs)
            .into_iter()
            .filter(|(name, path)| {
                let shadowed = builtin.contains(&name.as_str());
                if shadowed {
                    tracing::info!(plugin = %path.display(), executor = %name, "executor plugin not loaded: the built-in {name} executor takes its place");
                }
                !shadowed
            })
            .map(|(name, path)| {
                let plugin = Arc::new(Plugin {
                    name: name.clone(),
                    path,
                    running: Default::default(),
                    failure: Mutex::new(None),
                });
                (name, plugin)
            })
            .collect();
        for plugin in plugins.values() {
            let plugin = plugin.clone();
            tokio::spawn(async move {
                if let Err(e) = plugin.ensure_running().await {
                    tracing::error!(plugin = %plugin.path.display(), error = %e, "executor plugin did not start; its jobs fail until it does (each run tries again)");
                }
            });
        }
        Plugins(Arc::new(plugins))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Each plugin with its state: `healthy` (running), `starting`, or `failed: <why>`.
    pub async fn states(&self) -> BTreeMap<String, String> {
        let mut states = BTreeMap::new();
        for (name, plugin) in self.0.iter() {
            let state = match plugin.running.try_lock() {
                Ok(running) if running.as_ref().is_some_and(|r| r.alive()) => "healthy".to_owned(),
                _ => match plugin
                    .failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                {
                    Some(why) => format!("failed: {why}"),
                    None => "starting".to_owned(),
                },
            };
            states.insert(name.clone(), state);
        }
        states
    }

    /// Runs one job on plugin `name`; `None` if there is no such plugin. `live` receives the
    /// output the plugin streams while it runs.
    pub async fn execute(
        &self,
        name: &str,
        job_name: &str,
        config: &BTreeMap<String, String>,
        live: LiveSink,
    ) -> Option<Outcome> {
        let plugin = self.0.get(name)?;
        Some(plugin.execute(job_name, config, live).await)
    }

    /// Stops every plugin process (agent shutdown).
    pub async fn stop(&self) {
        for plugin in self.0.values() {
            if let Some(running) = plugin.running.lock().await.take() {
                running.kill();
            }
        }
    }
}

impl Running {
    fn alive(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.start_kill();
    }
}

impl Plugin {
    async fn ensure_running(&self) -> Result<Arc<Running>, String> {
        let mut slot = self.running.lock().await;
        if let Some(running) = slot.as_ref()
            && running.alive()
        {
            return Ok(running.clone());
        }
        if slot.take().is_some() {
            tracing::warn!(plugin = %self.path.display(), "executor plugin exited; starting it again");
        }
        match self.spawn().await {
            Ok(running) => {
                let running = Arc::new(running);
                *slot = Some(running.clone());
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(plugin = %self.path.display(), executor = %self.name, "executor plugin started");
                Ok(running)
            }
            Err(e) => {
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn spawn(&self) -> Result<Running, String> {
        trusted(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut child = Command::new(&self.path)
            .env(COOKIE_KEY, COOKIE_VALUE)
            .env("PLUGIN_PROTOCOL_VERSIONS", "1")
            .env("PLUGIN_MIN_PORT", "10000")
            .env("PLUGIN_MAX_PORT", "25000")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.path.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(plugin = %name, "{line}");
            }
        });
        let mut stdout = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(START_TIMEOUT, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return Err(format!("exited before its handshake ({status})"));
            }
            Err(_) => {
                let _ = child.start_kill();
                return Err(format!(
                    "printed no handshake within {}s",
                    START_TIMEOUT.as_secs()
                ));
            }
        };
        let name = self.name.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                tracing::debug!(plugin = %name, "{line}");
            }
        });
        let (network, address) = handshake(&line)?;
        let channel = connect(&network, &address).await?;
        let (broker, rx) = mpsc::channel::<ConnInfo>(16);
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| format!("plugin connection: {e}"))?;
        // The broker stream: the plugin answers nothing until it has something to tell
        // (go-plugin sends no headers before), so the call lives in a task of its own while
        // our ConnInfo messages flow out through `broker`. What the plugin tells its side is
        // for services it serves us; Dkron's executors serve none, so it is drained.
        let name = self.name.clone();
        tokio::spawn(async move {
            let answer = grpc
                .streaming(
                    Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                    PathAndQuery::from_static("/plugin.GRPCBroker/StartStream"),
                    tonic_prost::ProstCodec::<ConnInfo, ConnInfo>::default(),
                )
                .await;
            match answer {
                Ok(stream) => {
                    let mut incoming = stream.into_inner();
                    while let Ok(Some(_)) = incoming.message().await {}
                }
                Err(e) => {
                    tracing::debug!(plugin = %name, error = %e.message(), "plugin broker stream ended")
                }
            }
        });
        let sockets = tempfile::Builder::new()
            .prefix("dkron-plugin-")
            .tempdir()
            .map_err(|e| format!("a directory for status sockets: {e}"))?;
        // Only this user may reach the status servers (what they receive becomes output).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(sockets.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("a directory for status sockets: {e}"))?;
        }
        Ok(Running {
            child: Mutex::new(child),
            channel,
            broker,
            next_id: AtomicU32::new(1),
            sockets,
        })
    }

    async fn execute(
        &self,
        job_name: &str,
        config: &BTreeMap<String, String>,
        live: LiveSink,
    ) -> Outcome {
        let running = self
            .ensure_running()
            .await
            .map_err(|e| format!("plugin {}: {e}\n", self.name))?;
        let id = running.next_id.fetch_add(1, Ordering::Relaxed);
        let socket = running.sockets.path().join(format!("status-{id}"));
        let listener = tokio::net::UnixListener::bind(&socket)
            .map_err(|e| format!("plugin {}: status socket: {e}\n", self.name))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StatusServer(live))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        let announced = running
            .broker
            .send(ConnInfo {
                service_id: id,
                network: "unix".to_owned(),
                address: socket.display().to_string(),
            })
            .await;
        let outcome = match announced {
            Err(_) => Err(format!("plugin {}: its broker stream closed\n", self.name)),
            Ok(()) => call(&running.channel, job_name, config, id).await,
        };
        let _ = stop.send(());
        let _ = server.await;
        let _ = std::fs::remove_file(&socket);
        if outcome.is_err() && !running.alive() {
            tracing::warn!(plugin = %self.path.display(), "executor plugin exited during a run; its next run starts it again");
        }
        outcome
    }
}

/// Network and address of a go-plugin handshake line, checked.
fn handshake(line: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = line.trim().split('|').collect();
    if parts.len() < 5 {
        return Err(format!("not a go-plugin handshake: {line:?}"));
    }
    if parts[0] != "1" {
        return Err(format!(
            "go-plugin core protocol {} (this host speaks 1)",
            parts[0]
        ));
    }
    if parts[1] != "1" {
        return Err(format!(
            "plugin protocol {} (Dkron's executors speak 1)",
            parts[1]
        ));
    }
    if parts[4] != "grpc" {
        return Err(format!(
            "protocol {} (Dkron's executor plugins speak grpc)",
            parts[4]
        ));
    }
    if parts.get(5).is_some_and(|c| !c.is_empty()) {
        return Err("the plugin asks for mutual TLS, which Dkron's host never requests".to_owned());
    }
    match parts[2] {
        "unix" | "tcp" => Ok((parts[2].to_owned(), parts[3].to_owned())),
        other => Err(format!("network {other} (unix or tcp)")),
    }
}

async fn connect(network: &str, address: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(match network {
        "tcp" => format!("http://{address}"),
        _ => "http://plugin".to_owned(),
    })
    .map_err(|e| e.to_string())?
    .connect_timeout(Duration::from_secs(5));
    let connected = if network == "unix" {
        let path = address.to_owned();
        endpoint
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                }
            }))
            .await
    } else {
        endpoint.connect().await
    };
    connected.map_err(|e| format!("cannot connect to the plugin at {network}:{address}: {e}"))
}

/// Dkron's reading of a plugin's answer: an error (of the call or in the answer) fails the
/// run, and its text comes first in the output.
async fn call(
    channel: &Channel,
    job_name: &str,
    config: &BTreeMap<String, String>,
    status_server: u32,
) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| format!("plugin connection: {e}\n"))?;
    let request = ExecuteRequest {
        job_name: job_name.to_owned(),
        config: config.clone().into_iter().collect(),
        status_server,
    };
    let answer = grpc
        .unary(
            Request::new(request),
            PathAndQuery::from_static("/types.v1.ExecutorService/Execute"),
            tonic_prost::ProstCodec::<ExecuteRequest, ExecuteResponse>::default(),
        )
        .await;
    match answer {
        Ok(response) => {
            let response = response.into_inner();
            let output = String::from_utf8_lossy(&response.output).into_owned();
            if response.error.is_empty() {
                Ok(output)
            } else {
                Err(format!("{}\n{output}", response.error))
            }
        }
        Err(status) => Err(format!("{}\n", status.message())),
    }
}

/// `types.v1.StatusHelperService` for one run: each `Update` goes to the run's live output.
#[derive(Clone)]
struct StatusServer(LiveSink);

impl tonic::server::NamedService for StatusServer {
    const NAME: &'static str = "types.v1.StatusHelperService";
}

impl<B> Service<http::Request<B>> for StatusServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let live = self.0.clone();
        if req.uri().path() == "/types.v1.StatusHelperService/Update" {
            Box::pin(async move {
                let codec =
                    tonic_prost::ProstCodec::<StatusUpdateResponse, StatusUpdateRequest>::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.unary(Update(live), req).await)
            })
        } else {
            Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) })
        }
    }
}

struct Update(LiveSink);

impl tonic::server::UnaryService<StatusUpdateRequest> for Update {
    type Response = StatusUpdateResponse;
    type Future = BoxFuture<Response<StatusUpdateResponse>, Status>;

    fn call(&mut self, request: Request<StatusUpdateRequest>) -> Self::Future {
        let live = self.0.clone();
        Box::pin(async move {
            let update = request.into_inner();
            live(&update.output);
            Ok(Response::new(StatusUpdateResponse {
                r: update.output.len() as i64,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_lines() {
        assert_eq!(
            handshake("1|1|unix|/tmp/plugin123|grpc|\n").unwrap(),
            ("unix".to_owned(), "/tmp/plugin123".to_owned())
        );
        assert_eq!(
            handshake("1|1|tcp|127.0.0.1:10001|grpc").unwrap(),
            ("tcp".to_owned(), "127.0.0.1:10001".to_owned())
        );
        assert!(
            handshake("1|1|unix|/tmp/p|netrpc")
                .unwrap_err()
                .contains("grpc")
        );
        assert!(
            handshake("2|1|unix|/tmp/p|grpc")
                .unwrap_err()
                .contains("core protocol")
        );
        assert!(
            handshake("1|1|unix|/tmp/p|grpc|MIIB")
                .unwrap_err()
                .contains("TLS")
        );
        assert!(handshake("hello").is_err());
    }

    #[test]
    fn discovery_names_later_directories_win_and_untrusted_files_are_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let make = |dir: &Path, file: &str, mode: u32| {
            let p = dir.join(file);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        make(a.path(), "dkron-executor-foo-bar", 0o755);
        let later = make(b.path(), "dkron-executor-foo-bar", 0o755);
        make(a.path(), "dkron-executor-win.exe", 0o755);
        make(a.path(), "dkron-executor-planted", 0o777);
        make(a.path(), "dkron-executor-noexec", 0o644);
        make(a.path(), "dkron-processor-log", 0o755);
        let found = discover(&[
            a.path().to_owned(),
            b.path().to_owned(),
            "/nonexistent".into(),
        ]);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["foo-bar", "win"]);
        assert_eq!(found["foo-bar"], later);
    }
}
