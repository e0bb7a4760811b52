//! The command line: Dkron's commands, each defined once here.
//!
//! - `agent_args.rs`: `dkron agent`'s flags (Dkron's names), serialized over the config file
//!   and `DKRON_*` variables.
//! - `start.rs`: `dkron agent` itself: configuration, logs, runtime, then a server or an
//!   agent run until a signal (the one signal loop: SIGINT/SIGTERM stop, SIGHUP reloads).
//! - `client.rs`: the commands that call a server's HTTP API or RPC port.
//! - `doc.rs`: `dkron doc`.

mod acl;
mod agent_args;
mod client;
mod doc;
mod start;

use std::process::ExitCode;

use base64::Engine;
use clap::{Args, Parser, Subcommand};
use rand::RngCore;

use agent_args::AgentArgs;

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
        #[command(flatten)]
        tls: CliTls,
    },
    /// Inspect or change the Raft configuration
    Raft {
        /// RPC address of a server
        #[arg(long, global = true, default_value = "127.0.0.1:6868")]
        rpc_addr: String,
        #[command(flatten)]
        tls: CliTls,
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
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List, show, create or update, run and delete jobs through a server's HTTP API
    Jobs {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// List a job's executions (newest first)
    Executions {
        /// The job's name
        job: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Manage ACLs: the bootstrap, policies and tokens (Dkron Pro's commands)
    Acl {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: acl::AclCommand,
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

/// Where and how a command that calls a server's HTTP API reaches it.
#[derive(Args)]
struct ApiArgs {
    /// HTTP address of any server
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    address: String,
    /// Print the API's JSON instead of a table
    #[arg(long, global = true)]
    json: bool,
    /// ACL token secret, for servers with ACLs on
    #[arg(long, global = true, env = "DKRON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: CliTls,
}

impl ApiArgs {
    fn endpoint(&self) -> client::Endpoint {
        client::Endpoint {
            address: self.address.clone(),
            tls: self.tls.settings(),
            token: self.token.clone().filter(|t| !t.is_empty()),
        }
    }
}

/// How a CLI command speaks TLS: the cluster's gossip key (the RPC port's mutual TLS), or
/// certificate files (explicit PKI on the RPC port; `https://` API addresses).
#[derive(Args, Clone, Default)]
struct CliTls {
    /// The cluster's gossip key, when it has one (its RPC port takes only mutual TLS)
    #[arg(
        long,
        global = true,
        env = "DKRON_ENCRYPT",
        default_value = "",
        hide_env_values = true
    )]
    encrypt: String,
    /// Client certificate (PEM) for a cluster with its own certificates, or an API that
    /// requires one
    #[arg(long, global = true, env = "DKRON_CERT_FILE", default_value = "")]
    cert_file: String,
    /// The key of --cert-file (PEM)
    #[arg(long, global = true, env = "DKRON_KEY_FILE", default_value = "")]
    key_file: String,
    /// CA certificates (PEM) the server's certificate chains to (https:// addresses, explicit
    /// PKI)
    #[arg(long, global = true, env = "DKRON_TRUSTED_CA_FILE", default_value = "")]
    trusted_ca_file: String,
}

impl CliTls {
    fn settings(&self) -> crate::tls::TlsSettings {
        crate::tls::TlsSettings {
            encrypt: self.encrypt.clone(),
            auto_tls: true,
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            crl_file: String::new(),
        }
    }
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
    /// Run a job now, optionally with one-off parameters for this run only
    Run {
        /// The job's name
        name: String,
        /// An environment variable for this run (shell jobs), NAME=VALUE; repeatable
        #[arg(long = "env", value_name = "NAME=VALUE", value_parser = key_value)]
        env: Vec<(String, String)>,
        /// An executor setting replacing the job's for this run, KEY=VALUE; repeatable
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        config: Vec<(String, String)>,
    },
    /// Delete a job
    Delete {
        /// The job's name
        name: String,
    },
    /// Stop a running execution of a job (recorded as failed, not retried)
    Stop {
        /// The job's name
        name: String,
        /// The execution's id (`dkron executions JOB` lists them)
        execution: String,
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
        Command::Agent(args) => start::run(*args),
        Command::Doc { dir } => {
            let written = doc::write_docs(&dir)?;
            println!("Wrote {written} files to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "dkron", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Occurrences { job, from, to, api } => {
            client::occurrences(&api.endpoint(), &job, from, to, api.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs { api, command } => {
            client::jobs(&api.endpoint(), api.json, command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Acl { api, command } => {
            acl::run(&api.endpoint(), api.json, command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Executions { job, api } => {
            client::executions(&api.endpoint(), &job, api.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Leave { rpc_addr, tls } => {
            client::leave(&rpc_addr, &tls.settings())?;
            println!("Left the cluster successfully");
            Ok(ExitCode::SUCCESS)
        }
        Command::Raft {
            rpc_addr,
            tls,
            command,
        } => match command {
            RaftCommand::ListPeers => {
                let peers = client::list_peers(&rpc_addr, &tls.settings())?;
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
                client::remove_peer(&rpc_addr, &tls.settings(), &peer_id)?;
                println!("Peer removed");
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

/// A `KEY=VALUE` argument.
fn key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "{arg:?} is not KEY=VALUE (for example --env TARGET=staging)"
        )),
    }
}
