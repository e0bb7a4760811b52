//! `dkron agent`: resolves the configuration, sets up logs and the runtime, starts a server
//! (`--server`) or an agent, and runs it until SIGINT/SIGTERM or a stop it asked for itself
//! (`dkron leave`, `POST /v1/leave`, retry-join giving up). SIGHUP re-reads the configuration
//! and applies its tags (and, on a server, its notification settings), as Dkron does.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use figment::providers::Serialized;
use tokio::signal::unix::{SignalKind, signal};

use super::agent_args::AgentArgs;
use crate::agent::AgentHandle;
use crate::config::{self, AgentConfig};
use crate::server::ServerHandle;
use crate::shutdown::Shutdown;

pub(super) fn parse_tags(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("invalid tag: '{t}': use --tag key=value"),
        })
        .collect()
}

/// Raises this process's open-files limit to its hard limit, as Go (and so Dkron) does at
/// start: every run's HTTP call and every client of the API holds a descriptor, and the soft
/// limit many systems start services with (1,024) is reached at a few hundred runs at once.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit on this process, with a valid rlimit to read and write.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        soft < limit.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
    };
    if raised {
        tracing::debug!(
            open_files = limit.rlim_cur,
            "raised the open-files limit to the hard limit"
        );
    }
}

pub(super) fn run(mut args: AgentArgs) -> anyhow::Result<ExitCode> {
    if !args.tag.is_empty() {
        args.tags = Some(parse_tags(&args.tag)?);
    }
    if let Some(enabled) = args.acl_enabled {
        args.acl.insert("enabled".into(), enabled.into());
    }
    if let Some(token) = args.acl_bootstrap_token.clone() {
        args.acl.insert("bootstrap_token".into(), token.into());
    }
    let flags = serde_json::to_value(&args).context("serialising flags")?;
    let config = config::resolve(args.config.as_deref(), Serialized::defaults(flags.clone()))?;
    // SIGHUP resolves the configuration again, from the same flags, file and environment.
    let config_file = args.config.clone();
    let reload =
        move || config::resolve(config_file.as_deref(), Serialized::defaults(flags.clone()));
    // Every HTTP client (the trace exporter's first) needs the TLS crypto provider.
    dkron_executors::install_crypto_provider();
    // Declared before the runtime, so it is dropped (flushing traces) after the runtime ends.
    let _telemetry =
        crate::telemetry::init(&config.log_level, &config.log_format, &config.otel_endpoint)?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    raise_open_files_limit();
    // Storage calls (redb commits, fsync) block the worker that makes them; a few workers
    // more than cores keep the scheduler and starting runs moving meanwhile.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(4))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(until_signal(config, reload))?;
    Ok(ExitCode::SUCCESS)
}

/// A started server or agent.
enum Node {
    Server(Box<ServerHandle>),
    Agent(Box<AgentHandle>),
}

impl Node {
    fn stop_signal(&self) -> Shutdown {
        match self {
            Node::Server(s) => s.stop_signal().clone(),
            Node::Agent(a) => a.stop_signal().clone(),
        }
    }

    async fn reload(&self, config: &AgentConfig) -> anyhow::Result<()> {
        match self {
            Node::Server(s) => s.reload(config).await,
            Node::Agent(a) => a.reload(config).await,
        }
    }

    async fn shutdown(self) {
        match self {
            Node::Server(s) => s.shutdown().await,
            Node::Agent(a) => a.shutdown().await,
        }
    }
}

/// Runs the node until a signal or a stop it asked for; SIGHUP re-reads the configuration
/// with `reload`. A stop the node asked for because it could not go on is the error.
async fn until_signal(
    config: AgentConfig,
    reload: impl Fn() -> anyhow::Result<AgentConfig>,
) -> anyhow::Result<()> {
    let clock = crate::clock::system();
    let node = if config.server {
        Node::Server(Box::new(crate::server::start(config, clock).await?))
    } else {
        Node::Agent(Box::new(crate::agent::start(config, clock).await?))
    };
    let stop = node.stop_signal();
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            () = stop.requested() => tracing::info!("stop requested, shutting down"),
            _ = hup.recv() => {
                let reloaded = match reload() {
                    Ok(config) => node.reload(&config).await,
                    Err(e) => Err(e),
                };
                log_reload(reloaded);
                continue;
            }
        }
        break;
    }
    node.shutdown().await;
    match stop.failure() {
        Some(message) => Err(anyhow::anyhow!(message)),
        None => Ok(()),
    }
}

/// Logs how a SIGHUP reload went.
fn log_reload(result: anyhow::Result<()>) {
    match result {
        Ok(()) => tracing::info!(
            "SIGHUP: configuration reloaded (tags and notification settings; other settings need a restart)"
        ),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "SIGHUP: could not reload the configuration; the current one stays. Fix the file and send SIGHUP again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_or_explain() {
        let tags = parse_tags(&["tag1=val1".into(), "tag2=val2".into()]).unwrap();
        assert_eq!(tags["tag1"], "val1");
        assert!(
            parse_tags(&["nope".into()])
                .unwrap_err()
                .to_string()
                .contains("invalid tag")
        );
    }
}
