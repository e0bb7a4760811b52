//! A server (`dkron agent --server`): the composition root. [`start`] opens storage, starts
//! Raft, gossip, the worker, the leader's work, the HTTP API and the RPC port, wires them
//! with narrow handles, and spawns the background tasks; [`ServerHandle`] stops them again,
//! gracefully (hand-over, drain, leave) or as a crash.

mod gauges;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::cluster::{Bootstrap, BootstrapStatus, Members, Reconcile, RetryJoin};
use crate::config::AgentConfig;
use crate::leader::{Leader, Parts};
use crate::raft::{Consensus, Leadership, Proposer, ServerNode, Settings, StateReader, Voters};
use crate::rpc::RpcClient;
use crate::shutdown::Shutdown;
use crate::storage::OutputStore;
use crate::tls::{ClusterTls, TlsSettings};
use crate::worker::{OrderExecutor, SHUTDOWN_GRACE, StartJournal};

/// A running server and its tasks.
pub struct ServerHandle {
    http_addr: SocketAddr,
    rpc_addr: SocketAddr,
    consensus: Consensus,
    members: Members,
    worker: Arc<OrderExecutor>,
    leader: Arc<Leader>,
    outputs: OutputStore,
    shutdown: Shutdown,
    bootstrap: watch::Receiver<BootstrapStatus>,
    /// Background loops, aborted at shutdown.
    tasks: Vec<JoinHandle<()>>,
    /// The HTTP and RPC servers, which stop gracefully on the shutdown signal.
    servers: Vec<JoinHandle<()>>,
}

/// Starts a server from a resolved configuration.
pub async fn start(config: AgentConfig, clock: SharedClock) -> anyhow::Result<ServerHandle> {
    crate::telemetry::metrics::install(&config)?;
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "cannot create data dir {}: check the --data-dir path and its permissions",
            data_dir.display()
        )
    })?;
    let outputs = OutputStore::open(&data_dir.join("outputs.redb"))
        .context("opening the output store (outputs.redb)")?;
    let journal = StartJournal::open_in(data_dir, clock.clone())?;

    let http_bind = config.http_bind()?;
    let http_listener = TcpListener::bind(http_bind)
        .await
        .with_context(|| format!("cannot listen on http-addr {http_bind}: is the port in use?"))?;
    let rpc_bind = config.rpc_bind()?;
    let rpc_listener = TcpListener::bind(rpc_bind)
        .await
        .with_context(|| format!("cannot listen on rpc port {rpc_bind}: is the port in use?"))?;
    let http_addr = http_listener.local_addr()?;
    let rpc_addr = rpc_listener.local_addr()?;

    let members = Members::start(&config, rpc_addr.port(), clock.clone()).await?;
    let tls = ClusterTls::for_node(&TlsSettings::of(&config), &config.node_name, clock.clone())?;
    let rpc = RpcClient::new(tls.as_deref())?;
    let rpc_tls = tls.as_ref().map(|t| t.server_config()).transpose()?;
    // HTTPS with the operator's certificate, unless turned off.
    let https = match &tls {
        Some(tls) if !config.disable_http_tls => tls.https_config(config.client_cert_auth)?,
        _ => None,
    };
    let me = ServerNode {
        name: config.node_name.clone(),
        rpc_addr: format!("{}:{}", config.advertise_ip(), rpc_addr.port()),
    };
    let settings = Settings {
        data_dir,
        me,
        bootstrap_alone: config.bootstrap_expect == 1,
        multiplier: config.raft_multiplier,
        snapshot_logs: config.raft_snapshot_logs,
        snapshot_bytes: config.raft_snapshot_bytes,
    };
    let consensus = Consensus::start(settings, rpc.clone()).await?;
    let shutdown = Shutdown::default();
    let plugins =
        dkron_executors::Plugins::start(&config.plugin_dirs(), &dkron_executors::builtin());
    let worker = Arc::new(
        OrderExecutor::new(clock.clone())
            .with_journal(journal)
            .with_executors(&config.executors)
            .with_plugins(plugins.clone()),
    );
    let lag = crate::leader::Lag::default();
    let leader = Leader::new(
        Parts {
            proposer: consensus.proposer.clone(),
            state: consensus.state.clone(),
            leadership: consensus.leadership.clone(),
            members: members.clone(),
            worker: worker.clone(),
            rpc: rpc.clone(),
            outputs: outputs.clone(),
            clock: clock.clone(),
            lag: lag.clone(),
        },
        &config,
    );
    let gauges = gauges::Gauges {
        lag: lag.clone(),
        clock: clock.clone(),
        state: consensus.state.clone(),
        members: members.clone(),
        voters: consensus.voters.clone(),
        leadership: consensus.leadership.clone(),
        proposer: consensus.proposer.clone(),
    };

    let metrics = if config.enable_prometheus {
        gauges::route(gauges.clone())
    } else {
        axum::Router::new()
    };
    let mut http = crate::api::router(
        crate::api::Context {
            proposer: consensus.proposer.clone(),
            state: consensus.state.clone(),
            leadership: consensus.leadership.clone(),
            voters: consensus.voters.clone(),
            members: members.clone(),
            dispatch: leader.dispatch(),
            outputs: outputs.clone(),
            clock: clock.clone(),
            shutdown: shutdown.clone(),
            encrypted: !config.encrypt.is_empty(),
            allowed_origins: config.http_allowed_origins.clone(),
            executors: config.executors.clone(),
            plugins,
            acl: crate::api::acl::AclSettings {
                enabled: config.acl.enabled,
                data_dir: data_dir.clone(),
            },
            audit: Some(
                crate::api::audit::Audit::start(data_dir, clock.clone())
                    .context("opening the audit log (audit.log in the data dir)")?,
            ),
        },
        metrics,
    );
    if config.ui {
        http = http.merge(crate::ui::router(config.acl.enabled));
    }
    let rpc_routes = routes::rpc_router(
        consensus.routes.clone(),
        worker.clone(),
        leader.dispatch(),
        shutdown.clone(),
    );
    let servers = vec![
        tokio::spawn(crate::rpc::serve_tls(
            http_listener,
            http,
            shutdown.clone(),
            https,
            "http",
        )),
        tokio::spawn(crate::rpc::serve_tls(
            rpc_listener,
            rpc_routes,
            shutdown.clone(),
            rpc_tls,
            "rpc",
        )),
    ];
    crate::rpc::warn_if_open(tls.is_some(), rpc_addr.port());

    let (bootstrap_status, bootstrap) = watch::channel(BootstrapStatus::Starting);
    let mut tasks = vec![tokio::spawn(leader.clone().run(shutdown.clone()))];
    if crate::telemetry::metrics::wants_metrics(&config) {
        tasks.push(tokio::spawn(gauges.run(shutdown.clone())));
    }
    let reconcile = Reconcile {
        members: members.clone(),
        voters: consensus.voters.clone(),
        leadership: consensus.leadership.clone(),
        clock: clock.clone(),
        reconnect_timeout: config
            .reconnect_timeout()
            .unwrap_or(Duration::from_secs(24 * 3600)),
    };
    tasks.push(tokio::spawn(reconcile.run(shutdown.clone())));
    if config.bootstrap_expect > 1 {
        let bootstrap = Bootstrap {
            members: members.clone(),
            voters: consensus.voters.clone(),
            rpc: rpc.clone(),
            expect: config.bootstrap_expect as usize,
            status: bootstrap_status,
        };
        tasks.push(tokio::spawn(bootstrap.run(shutdown.clone())));
    }
    if let Some(join) = RetryJoin::from_config(members.clone(), &config) {
        tasks.push(tokio::spawn(join.run(shutdown.clone())));
    }
    if let Some(tls) = tls {
        tasks.push(tokio::spawn(tls.run(shutdown.clone())));
    }
    if config.acl.enabled && !config.acl.bootstrap_token.is_empty() {
        tasks.push(tokio::spawn(crate::api::acl_admin::seed_bootstrap(
            consensus.proposer.clone(),
            consensus.state.clone(),
            clock.clone(),
            config.acl.bootstrap_token.clone(),
            shutdown.clone(),
        )));
    }
    if config.acl.enabled {
        tracing::info!(
            "ACLs are on: every API request needs a token (dkron acl bootstrap makes the first)"
        );
    }
    tracing::info!(
        node = %config.node_name,
        http = %http_addr,
        rpc = %rpc_addr,
        data_dir = %config.data_dir.display(),
        "dkron node started"
    );
    Ok(ServerHandle {
        http_addr,
        rpc_addr,
        consensus,
        members,
        worker,
        leader,
        outputs,
        shutdown,
        bootstrap,
        tasks,
        servers,
    })
}

impl ServerHandle {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    pub fn name(&self) -> &str {
        self.members.name()
    }

    pub fn is_leader(&self) -> bool {
        self.consensus.leadership.is_leader()
    }

    /// Waits until this node is the leader.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<()> {
        self.consensus.leadership.wait_leader(timeout).await
    }

    pub fn leadership(&self) -> &Leadership {
        &self.consensus.leadership
    }

    pub fn proposer(&self) -> &Proposer {
        &self.consensus.proposer
    }

    pub fn state(&self) -> &StateReader {
        &self.consensus.state
    }

    pub fn voters(&self) -> &Voters {
        &self.consensus.voters
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    /// How this server starts manual runs (claimed on the leader).
    pub fn dispatch(&self) -> crate::leader::Dispatch {
        self.leader.dispatch()
    }

    /// What the notify policy decided for the executions this node finished as leader.
    pub fn notify_decisions(&self) -> &crate::leader::notify::Decisions {
        self.leader.notify_decisions()
    }

    /// The worker executing the run orders placed on this node.
    pub fn worker(&self) -> &OrderExecutor {
        &self.worker
    }

    /// The node's stop signal (`dkron leave`, `POST /v1/leave`, a task that gave up).
    pub fn stop_signal(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Where `--bootstrap-expect` stands.
    pub fn bootstrap_status(&self) -> watch::Receiver<BootstrapStatus> {
        self.bootstrap.clone()
    }

    /// SIGHUP, as in Dkron: takes the tags (reserved ones kept, `dc` and `region` re-set) and
    /// the notification settings of a re-read configuration. Other settings need a restart.
    pub async fn reload(&self, config: &AgentConfig) -> anyhow::Result<()> {
        self.members.reload_tags(config).await?;
        self.leader.reload(config);
        Ok(())
    }

    /// Stops the node: scheduler, runs in progress, servers, then Raft (which flushes its
    /// storage). When this returns, nothing of the node holds the data dir any more.
    /// Graceful: a leader first hands leadership to an up-to-date server, and the others see
    /// this node as left (the leader then removes it from Raft).
    pub async fn shutdown(self) {
        self.stop(true).await;
    }

    /// Stops the node as if it had crashed: no hand-over, no goodbye to the cluster, which
    /// sees it as failed. For tests and benchmarks of failure handling.
    pub async fn crash(self) {
        self.stop(false).await;
    }

    async fn stop(self, graceful: bool) {
        if graceful {
            // Before the RPC server stops: the successor needs this node's vote.
            self.consensus.leadership.hand_over().await;
        }
        // No new claims from here.
        for task in &self.tasks {
            task.abort();
        }
        if graceful {
            self.members.skip_in_placement(self.members.name());
            if !self.is_leader() {
                // The successor resumed every run and collects each result over RPC; this
                // node collecting them too would report each twice.
                self.leader.abandon_runs();
            }
            // Runs in progress here may finish (their leader collects them over RPC); new
            // orders are declined and go to other nodes.
            self.worker.drain(SHUTDOWN_GRACE).await;
        }
        self.shutdown.request();
        for task in self.tasks {
            let _ = task.await;
        }
        if graceful {
            self.members.leave().await;
        } else {
            self.members.shutdown().await;
        }
        self.leader.abandon_runs();
        self.worker.abort_all();
        self.leader.stop_runs().await;
        self.worker.close().await;
        for server in self.servers {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.consensus.shutdown().await;
        if let Err(e) = self.outputs.close().await {
            tracing::warn!(error = %format!("{e:#}"), "could not flush execution outputs at shutdown");
        }
    }
}
