//! An agent: a node without `--server`. It gossips, so servers know it and its tags, and it
//! executes the run orders servers send it on its RPC port. It holds no Raft state and
//! serves no HTTP API. [`start`] and [`AgentHandle`] have the server's shape, so tests start
//! one in-process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::cluster::{Members, RetryJoin};
use crate::config::AgentConfig;
use crate::shutdown::Shutdown;
use crate::tls::{ClusterTls, TlsSettings};
use crate::worker::{OrderExecutor, SHUTDOWN_GRACE, StartJournal};

/// A running agent.
pub struct AgentHandle {
    rpc_addr: SocketAddr,
    members: Members,
    worker: Arc<OrderExecutor>,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
    server: JoinHandle<()>,
}

/// Starts an agent from a resolved configuration.
pub async fn start(config: AgentConfig, clock: SharedClock) -> anyhow::Result<AgentHandle> {
    dkron_executors::install_crypto_provider();
    let rpc_bind = config.rpc_bind()?;
    let listener = TcpListener::bind(rpc_bind)
        .await
        .with_context(|| format!("cannot listen on rpc port {rpc_bind}: is the port in use?"))?;
    let rpc_addr = listener.local_addr()?;
    let members = Members::start(&config, rpc_addr.port(), clock.clone()).await?;
    let tls = ClusterTls::for_node(&TlsSettings::of(&config), &config.node_name, clock.clone())?;
    let rpc_tls = tls.as_ref().map(|t| t.server_config()).transpose()?;
    let shutdown = Shutdown::default();
    let worker = Arc::new(with_start_journal(
        OrderExecutor::new(clock.clone())
            .with_executors(&config.executors)
            .with_plugins(dkron_executors::Plugins::start(
                &config.plugin_dirs(),
                &dkron_executors::builtin(),
            )),
        &config,
        clock,
    ));
    let router = crate::worker::routes::router(worker.clone()).layer(crate::rpc::body_limit());
    let server = tokio::spawn(crate::rpc::serve_tls(
        listener,
        router,
        shutdown.clone(),
        rpc_tls,
        "rpc",
    ));
    crate::rpc::warn_if_open(tls.is_some(), rpc_addr.port());
    let mut tasks = Vec::new();
    if let Some(tls) = tls {
        tasks.push(tokio::spawn(tls.run(shutdown.clone())));
    }
    if let Some(join) = RetryJoin::from_config(members.clone(), &config) {
        tasks.push(tokio::spawn(join.run(shutdown.clone())));
    }
    tracing::info!(node = %config.node_name, rpc = %rpc_addr, gossip = %members.advertise_addr(), "dkron agent started");
    Ok(AgentHandle {
        rpc_addr,
        members,
        worker,
        shutdown,
        tasks,
        server,
    })
}

impl AgentHandle {
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The agent's stop signal (a task that gave up, such as retry-join).
    pub fn stop_signal(&self) -> &Shutdown {
        &self.shutdown
    }

    /// SIGHUP: gossips the tags of a re-read configuration.
    pub async fn reload(&self, config: &AgentConfig) -> anyhow::Result<()> {
        self.members.reload_tags(config).await
    }

    /// Stops gracefully: runs in progress may finish (up to the grace), the cluster sees the
    /// agent leave.
    pub async fn shutdown(self) {
        tracing::info!("agent shutting down");
        for task in &self.tasks {
            task.abort();
        }
        self.worker.drain(SHUTDOWN_GRACE).await;
        self.members.leave().await;
        self.shutdown.request();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        self.worker.abort_all();
        self.worker.close().await;
    }
}

/// An agent keeps its start journal in its data dir, so after a restart it still runs a
/// resumed run that never started here. Without a usable data dir it works without one, and
/// refuses as lost any resumed run due before it started.
fn with_start_journal(
    orders: OrderExecutor,
    config: &AgentConfig,
    clock: SharedClock,
) -> OrderExecutor {
    let opened = std::fs::create_dir_all(&config.data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| StartJournal::open_in(&config.data_dir, clock));
    match opened {
        Ok(journal) => orders.with_journal(journal),
        Err(e) => {
            tracing::warn!(data_dir = %config.data_dir.display(), error = %format!("{e:#}"), "no start journal: runs resumed after a restart of this agent are closed as lost. Give the agent a writable --data-dir");
            orders
        }
    }
}
