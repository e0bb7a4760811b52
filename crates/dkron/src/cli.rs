//! The command line: Dkron's commands and `agent` flags, each flag defined once here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use figment::providers::Serialized;
use rand::RngCore;
use serde::Serialize;

use crate::config;

#[derive(Parser)]
#[command(
    name = "dkron",
    about = "Distributed cron service: a drop-in replacement for Dkron",
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a dkron agent (a server with --server)
    Agent(Box<AgentArgs>),
    /// Generate a new gossip encryption key (base64, on stdout)
    Keygen,
    /// Ask a server to leave the cluster gracefully and stop
    Leave {
        /// RPC address of the server
        #[arg(long, default_value = "127.0.0.1:6868")]
        rpc_addr: String,
    },
    /// Inspect or change the Raft configuration
    Raft {
        /// RPC address of a server
        #[arg(long, global = true, default_value = "127.0.0.1:6868")]
        rpc_addr: String,
        #[command(subcommand)]
        command: RaftCommand,
    },
    /// Show what became of each scheduled occurrence of a job: ran, skipped (and why),
    /// pending. Answers "why didn't it run at 03:00?"
    Occurrences {
        /// The job's name
        job: String,
        /// Start of the range (RFC 3339, e.g. 2026-01-01T02:00:00Z; default: an hour before --to)
        #[arg(long)]
        from: Option<String>,
        /// End of the range (RFC 3339; default: now)
        #[arg(long)]
        to: Option<String>,
        /// HTTP address of any server
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        address: String,
        /// Print the API's JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// List, show, create or update, run and delete jobs through a server's HTTP API
    Jobs {
        /// HTTP address of any server
        #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
        address: String,
        /// Print the API's JSON instead of a table
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// List a job's executions (newest first)
    Executions {
        /// The job's name
        job: String,
        /// HTTP address of any server
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        address: String,
        /// Print the API's JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show version information
    Version,
    /// Write Markdown documentation of every command, one file per command
    Doc {
        /// Directory to write the files to
        #[arg(long, default_value = "/tmp/dkrondoc/")]
        dir: std::path::PathBuf,
    },
    /// Print a shell completion script: bash, zsh, fish, powershell or elvish
    Completion {
        /// The shell
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs
    List,
    /// Show one job (JSON)
    Get {
        /// The job's name
        name: String,
    },
    /// Create or update the job (or jobs, given a JSON array) in FILE (`-` for stdin)
    Apply {
        /// A JSON file in Dkron's job format
        file: String,
    },
    /// Run a job now
    Run {
        /// The job's name
        name: String,
    },
    /// Delete a job
    Delete {
        /// The job's name
        name: String,
    },
}

#[derive(Subcommand)]
enum RaftCommand {
    /// List the servers of the Raft configuration
    ListPeers,
    /// Remove a server (by node name) from the Raft configuration
    RemovePeer {
        /// The node name of the server to remove
        #[arg(long)]
        peer_id: String,
    },
}

/// `dkron agent` flags. Every flag is optional so that an unset flag never overrides the
/// config file or the environment; the names are Dkron's.
#[derive(Args, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
struct AgentArgs {
    /// Config file path (default: dkron.yml in /etc/dkron, $HOME/.dkron or ./config)
    #[arg(long, env = "DKRON_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Start in server mode
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<bool>,
    /// Number of servers to wait for before bootstrapping the cluster
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap_expect: Option<u32>,
    /// Directory for the Raft log and state
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// Name of this node, unique in the cluster (default: hostname)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<String>,
    /// Address to bind cluster communication to (ip[:port])
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bind_addr: Option<String>,
    /// Address to advertise to other nodes
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_addr: Option<String>,
    /// HTTP API address (default :8080)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    /// RPC port (default 6868)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rpc_port: Option<u16>,
    /// RPC port advertised to other nodes (default: rpc-port)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_rpc_port: Option<u16>,
    /// Tag this node: key=value (repeatable)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    #[serde(skip)]
    tag: Vec<String>,
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<BTreeMap<String, String>>,
    /// Log level: trace, debug, info, warn, error
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Region of this node
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// Datacenter of this node
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    datacenter: Option<String>,
    /// Serve the web UI
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ui: Option<bool>,
    /// Address of a member to join at start (repeatable)
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    join: Vec<String>,
    /// Address of a member to join, retried until it works (repeatable)
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    retry_join: Vec<String>,
    /// Wait between retry-join attempts (Go duration, default 30s)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_interval: Option<String>,
    /// Retry-join attempts before giving up with an error (0 = retry forever)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_max: Option<u32>,
    /// Gossip encryption key (from `dkron keygen`)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypt: Option<String>,
    /// How long a failed server may stay unreachable before it is removed from the Raft
    /// group (Go duration, default 24h)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    serf_reconnect_timeout: Option<String>,
    /// Scale Raft timeouts (1-10)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    raft_multiplier: Option<u32>,
    /// Gossip timing profile: lan, wan or local
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    /// Accepted for compatibility: dkron-rs never sends usage statistics
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_usage_stats: Option<bool>,
    /// Log format: text or json
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
    /// Serve Prometheus metrics at /metrics
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_prometheus: Option<bool>,
    /// StatsD address (host:port) to send metrics to
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    statsd_addr: Option<String>,
    /// DogStatsD address (host:port) to send metrics to
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dog_statsd_addr: Option<String>,
    /// DogStatsD tag key:value added to every metric (repeatable)
    #[arg(long, value_name = "VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dog_statsd_tags: Vec<String>,
    /// SMTP server host for email notifications
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_host: Option<String>,
    /// SMTP server port (0 turns email off)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_port: Option<u16>,
    /// SMTP user name
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_username: Option<String>,
    /// SMTP password
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_password: Option<String>,
    /// From address of notification emails
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_from: Option<String>,
    /// Email body template (default: the execution's output)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_payload: Option<String>,
    /// Email subject prefix (default [Dkron])
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_subject_prefix: Option<String>,
    /// URL called when an execution starts
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_webhook_endpoint: Option<String>,
    /// Body template of the pre-execution webhook
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_webhook_payload: Option<String>,
    /// Header "Name: value" of the pre-execution webhook (repeatable)
    #[arg(long, value_name = "VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pre_webhook_headers: Vec<String>,
    /// URL called when an execution finishes
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_endpoint: Option<String>,
    /// Body template of the webhook
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_payload: Option<String>,
    /// Header "Name: value" of the webhook (repeatable)
    #[arg(long, value_name = "VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    webhook_headers: Vec<String>,
    /// Deprecated in Dkron and without effect; use --webhook-endpoint
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_url: Option<String>,
    /// Cronitor ping base URL
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cronitor_endpoint: Option<String>,
    /// When finished executions notify: always, on_failure or on_change
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_on: Option<String>,
    /// OpenTelemetry collector for trace spans, OTLP over HTTP (e.g. http://collector:4318)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    otel_endpoint: Option<String>,
}

/// Entry point of the binary: runs the command, prints errors with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen => {
            let mut key = [0u8; 16];
            rand::rng().fill_bytes(&mut key);
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("Name: Dkron");
            println!("Version: {}", crate::VERSION);
            println!("Codename: dkron-rs");
            println!("Agent Protocol: 5 (Understands back to: 2)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => run_agent(*args),
        Command::Doc { dir } => {
            let written = write_docs(&dir)?;
            println!("Wrote {written} files to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "dkron", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Occurrences {
            job,
            from,
            to,
            address,
            json,
        } => {
            crate::client::occurrences(&address, &job, from, to, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs {
            address,
            json,
            command,
        } => {
            crate::client::jobs(&address, json, command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Executions { job, address, json } => {
            crate::client::executions(&address, &job, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Leave { rpc_addr } => {
            let answer: Result<(), String> =
                crate::client::rpc(&rpc_addr, "/rpc/leave", Some(&serde_json::Value::Null))?;
            answer.map_err(anyhow::Error::msg)?;
            println!("Left the cluster successfully");
            Ok(ExitCode::SUCCESS)
        }
        Command::Raft { rpc_addr, command } => match command {
            RaftCommand::ListPeers => {
                let peers: Vec<crate::node::Peer> =
                    crate::client::rpc(&rpc_addr, "/rpc/raft/peers", None)?;
                println!(
                    "{:<20} {:<20} {:<24} {:<10} Voter",
                    "Node", "ID", "Address", "State"
                );
                for p in peers {
                    println!(
                        "{:<20} {:<20} {:<24} {:<10} {}",
                        p.node, p.id, p.address, p.state, p.voter
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            RaftCommand::RemovePeer { peer_id } => {
                let answer: Result<(), String> = crate::client::rpc(
                    &rpc_addr,
                    "/rpc/raft/remove-peer",
                    Some(&serde_json::json!(peer_id)),
                )?;
                answer.map_err(anyhow::Error::msg)?;
                println!("Peer removed");
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

/// `dkron doc`: one Markdown file per command, with the Hugo front matter Dkron's docs use
/// (`date`, `title`, `slug`, `url: /cli/<name>/`). Answers how many files it wrote.
fn write_docs(dir: &std::path::Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}: pass another --dir", dir.display()))?;
    let root = <Cli as clap::CommandFactory>::command();
    let date = jiff::Zoned::now().date();
    let mut stack = vec![(vec!["dkron".to_string()], root.clone(), None::<String>)];
    let mut written = 0;
    while let Some((path, command, parent)) = stack.pop() {
        let name = path.join(" ");
        let slug = path.join("_");
        let about = command
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut md = format!(
            "---\ndate: {date}\ntitle: \"{name}\"\nslug: {slug}\nurl: /cli/{slug}/\n---\n## {name}\n\n{about}\n\n### Synopsis\n\n```\n{name}{}\n```\n",
            if command.has_subcommands() {
                " [command]"
            } else {
                " [flags]"
            }
        );
        let options: Vec<String> = command
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .map(|a| {
                let flag = match (a.get_short(), a.get_long()) {
                    (Some(s), Some(l)) => format!("-{s}, --{l}"),
                    (None, Some(l)) => format!("    --{l}"),
                    (Some(s), None) => format!("-{s}"),
                    (None, None) => format!("<{}>", a.get_id()),
                };
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                let defaults: Vec<String> = a
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                if defaults.is_empty() {
                    format!("  {flag:<32} {help}")
                } else {
                    format!("  {flag:<32} {help} (default {})", defaults.join(","))
                }
            })
            .collect();
        if !options.is_empty() {
            md.push_str(&format!(
                "\n### Options\n\n```\n{}\n```\n",
                options.join("\n")
            ));
        }
        let mut see_also = Vec::new();
        if let Some(parent) = &parent {
            let parent_slug = path[..path.len() - 1].join("_");
            see_also.push(format!("* [{parent}](/cli/{parent_slug}/)"));
        }
        for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_string());
            let sub_about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            see_also.push(format!(
                "* [{}](/cli/{}/)\t - {sub_about}",
                sub_path.join(" "),
                sub_path.join("_")
            ));
            stack.push((sub_path, sub.clone(), Some(name.clone())));
        }
        if !see_also.is_empty() {
            md.push_str(&format!("\n### SEE ALSO\n\n{}\n", see_also.join("\n")));
        }
        let file = dir.join(format!("{slug}.md"));
        std::fs::write(&file, md).with_context(|| format!("cannot write {}", file.display()))?;
        written += 1;
    }
    Ok(written)
}

fn parse_tags(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("invalid tag: '{t}': use --tag key=value"),
        })
        .collect()
}

fn run_agent(mut args: AgentArgs) -> anyhow::Result<ExitCode> {
    if !args.tag.is_empty() {
        args.tags = Some(parse_tags(&args.tag)?);
    }
    let flags = serde_json::to_value(&args).context("serialising flags")?;
    let config = config::resolve(args.config.as_deref(), Serialized::defaults(flags.clone()))?;
    // SIGHUP resolves the configuration again, from the same flags, file and environment.
    let config_file = args.config.clone();
    let reload =
        move || config::resolve(config_file.as_deref(), Serialized::defaults(flags.clone()));
    // Every HTTP client (the trace exporter's first) needs the TLS crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Declared before the runtime, so it is dropped (flushing traces) after the runtime ends.
    let _telemetry =
        crate::telemetry::init(&config.log_level, &config.log_format, &config.otel_endpoint)?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    limit_malloc_arenas();
    // Storage calls (redb commits, fsync) block the worker that makes them; a few workers
    // more than cores keep the scheduler and starting runs moving meanwhile.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(4))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if config.server {
        runtime.block_on(crate::node::run_until_signal(config, reload))?;
    } else {
        runtime.block_on(crate::agent::run_until_signal(config, reload))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// glibc gives each thread its own malloc arena (up to 8 per core), each keeping freed
/// memory; two arenas keep the footprint small at no measurable cost for this workload.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
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
