//! An agent: a node without `--server`. It gossips, so servers know it and its tags, and it
//! executes the run orders servers send it on its RPC port. It holds no Raft state and
//! serves no HTTP API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::orders::OrderExecutor;

/// Runs an agent until SIGINT/SIGTERM, or until retry-join gives up (an error). SIGHUP
/// re-reads the configuration with `reload` and gossips its tags.
pub async fn run_until_signal(
    config: AgentConfig,
    reload: impl Fn() -> anyhow::Result<AgentConfig>,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    dkron_executors::install_crypto_provider();
    let rpc_bind = config.rpc_bind()?;
    let listener = TcpListener::bind(rpc_bind)
        .await
        .with_context(|| format!("cannot listen on rpc port {rpc_bind}: is the port in use?"))?;
    let rpc_addr = listener.local_addr()?;
    let gossip = crate::cluster::start_gossip(&config, rpc_addr.port()).await?;
    crate::cluster::join_once(&gossip, &config.join).await;

    let (stop, stopped) = watch::channel(false);
    let orders = Arc::new(with_start_journal(
        OrderExecutor::new(crate::clock::system()),
        &config,
    ));
    let router = crate::orders::router(orders.clone());
    let server = tokio::spawn(crate::node::serve(listener, router, stopped, "rpc"));
    tracing::info!(node = %config.node_name, rpc = %rpc_addr, gossip = %gossip.advertise_addr(), "dkron agent started");

    let interval = dkron_core::godur::parse_go_duration(&config.retry_interval)
        .unwrap_or(Duration::from_secs(30));
    let joining = async {
        if config.retry_join.is_empty() {
            std::future::pending::<anyhow::Result<()>>().await
        } else {
            crate::cluster::retry_join(&gossip, &config.retry_join, interval, config.retry_max)
                .await?;
            std::future::pending::<anyhow::Result<()>>().await
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::pin!(joining);
    let result = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = term.recv() => break Ok(()),
            joined = &mut joining => break joined,
            _ = hup.recv() => {
                let reloaded = match reload() {
                    Ok(config) => crate::cluster::reload_tags(&gossip, &config).await,
                    Err(e) => Err(e),
                };
                crate::cluster::log_reload(reloaded);
            }
        }
    };
    tracing::info!("agent shutting down");
    orders.drain(crate::node::SHUTDOWN_GRACE).await;
    gossip.leave().await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    orders.abort_all();
    orders.close().await;
    result
}

/// An agent keeps its start journal in its data dir, so after a restart it still runs a
/// resumed run that never started here. Without a usable data dir it works without one, and
/// refuses as lost any resumed run due before it started.
fn with_start_journal(orders: OrderExecutor, config: &AgentConfig) -> OrderExecutor {
    let opened = std::fs::create_dir_all(&config.data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            crate::journal::StartJournal::open_in(&config.data_dir, crate::clock::system())
        });
    match opened {
        Ok(journal) => orders.with_journal(journal),
        Err(e) => {
            tracing::warn!(data_dir = %config.data_dir.display(), error = %format!("{e:#}"), "no start journal: runs resumed after a restart of this agent are closed as lost. Give the agent a writable --data-dir");
            orders
        }
    }
}
