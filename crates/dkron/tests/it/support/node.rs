//! An in-process server on port 0 with its own data dir, and a clock a test moves forward.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dkron::config::AgentConfig;
use dkron::server::ServerHandle;
use tempfile::TempDir;

use super::{Api, client, init_process};

/// A node running inside the test process, on port 0, with its own data dir.
pub struct TestNode {
    pub dir: TempDir,
    pub handle: Option<ServerHandle>,
    pub api: Api,
    /// The node's clock (the system clock plus an offset the test can move), kept across
    /// restarts.
    pub clock: Arc<OffsetClock>,
    /// The configuration it was started with, used again by [`TestNode::restart`].
    pub config: AgentConfig,
}

/// The system clock shifted by an offset a test moves forward, to let hours "pass" while a
/// node is down without waiting for them.
#[derive(Default)]
pub struct OffsetClock {
    offset_secs: std::sync::atomic::AtomicI64,
}

impl OffsetClock {
    fn offset(&self) -> i64 {
        self.offset_secs.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn advance(&self, by: Duration) {
        self.offset_secs
            .fetch_add(by.as_secs() as i64, std::sync::atomic::Ordering::SeqCst);
    }

    /// Steps the wall clock back (an NTP correction); the monotonic clock does not move back.
    pub fn rewind(&self, by: Duration) {
        self.offset_secs
            .fetch_sub(by.as_secs() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl dkron::clock::Clock for OffsetClock {
    fn now(&self) -> jiff::Timestamp {
        dkron::clock::wall() + jiff::SignedDuration::from_secs(self.offset())
    }

    fn instant(&self) -> tokio::time::Instant {
        dkron::clock::monotonic() + Duration::from_secs(self.offset().max(0) as u64)
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

async fn start_handle_with(config: AgentConfig, clock: Arc<OffsetClock>) -> ServerHandle {
    init_process();
    let name = config.node_name.clone();
    let handle = dkron::server::start(config, clock)
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
        let handle = start_handle_with(config.clone(), clock.clone()).await;
        let api = Api::new(handle.http_addr());
        TestNode {
            dir,
            handle: Some(handle),
            api,
            clock,
            config,
        }
    }

    /// The running server (a test that stopped it must not ask).
    pub fn h(&self) -> &ServerHandle {
        self.handle.as_ref().expect("running")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the node cleanly (`ServerHandle::shutdown`).
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
        let handle = start_handle_with(self.config.clone(), self.clock.clone()).await;
        self.api = Api::new(handle.http_addr());
        self.handle = Some(handle);
    }
}
