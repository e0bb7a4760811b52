//! Servers of a loopback cluster, each a release `dkron` process on its own ports and data
//! directory: started, joined, asked who leads, measured from /proc.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::{dkron_path, free_port};

pub struct Server {
    pub name: String,
    pub http: u16,
    pub rpc: u16,
    pub gossip: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Agent flags of this bench's own (after `BENCH_AGENT_FLAGS`).
    pub extra_args: Vec<String>,
}

impl Server {
    pub fn new(name: String, dir: PathBuf) -> anyhow::Result<Server> {
        Ok(Server {
            name,
            http: free_port()?,
            rpc: free_port()?,
            gossip: free_port()?,
            dir,
            child: None,
            extra_args: Vec::new(),
        })
    }

    /// Starts the process: the first server bootstraps, the others join `join`'s gossip port.
    pub fn spawn(&mut self, join: Option<u16>) -> anyhow::Result<()> {
        let mut cmd = Command::new(dkron_path());
        cmd.env_remove("DKRON_BIN")
            .args(["agent", "--server", "--log-level=warn"])
            .arg(format!("--node-name={}", self.name))
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--http-addr=127.0.0.1:{}", self.http))
            .arg(format!("--bind-addr=127.0.0.1:{}", self.gossip))
            .arg(format!("--rpc-port={}", self.rpc))
            // Extra agent flags, e.g. `--encrypt=KEY` to measure mutual TLS.
            .args(
                std::env::var("BENCH_AGENT_FLAGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .args(&self.extra_args);
        match join {
            Some(port) => cmd.arg(format!("--join=127.0.0.1:{port}")),
            None => cmd.arg("--bootstrap-expect=1"),
        };
        // Warnings and errors, next to the data directory: what to read when a run goes wrong.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))?;
        self.child = Some(
            cmd.stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting dkron (build it with cargo build --release)")?,
        );
        Ok(())
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn proc_file(&self, file: &str) -> anyhow::Result<String> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("the server exited")?;
        Ok(std::fs::read_to_string(format!("/proc/{pid}/{file}"))?)
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.proc_file("status")?
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")
    }

    /// CPU time used so far (user + system), in clock ticks (see `getconf CLK_TCK`).
    pub fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let stat = self.proc_file("stat")?;
        // The command name (field 2) may hold spaces; fields after it are plain.
        let rest = stat.rsplit_once(')').context("no ')' in stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11).context("no utime")?.parse()?;
        let stime: u64 = fields.get(12).context("no stime")?.parse()?;
        Ok(utime + stime)
    }
}

/// Every server's RSS, as `s1 212 MB, s2 142 MB, …` (or why it could not be read).
pub fn rss_of(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| {
            s.rss_kib()
                .map(|k| format!("{} {:.0} MB", s.name, k as f64 / 1024.0))
                .unwrap_or_else(|e| format!("{} {e}", s.name))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts `count` servers named `<prefix>1..` under `root` and waits until all are voters
/// and every one knows the leader.
pub async fn start_cluster(
    client: &reqwest::Client,
    root: &Path,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Server>> {
    start_cluster_with(client, root, prefix, count, &[]).await
}

/// [`start_cluster`] with more agent flags for every server.
pub async fn start_cluster_with(
    client: &reqwest::Client,
    root: &Path,
    prefix: &str,
    count: usize,
    extra_args: &[&str],
) -> anyhow::Result<Vec<Server>> {
    let mut servers: Vec<Server> = (1..=count)
        .map(|i| {
            let mut s = Server::new(format!("{prefix}{i}"), root.join(format!("{prefix}{i}")))?;
            s.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
            Ok(s)
        })
        .collect::<anyhow::Result<_>>()?;
    let seed = servers[0].gossip;
    servers[0].spawn(None)?;
    wait(Duration::from_secs(20), "the first server", async || {
        get_json(client, &format!("{}/v1/leader", servers[0].base()))
            .await
            .is_some()
    })
    .await?;
    for s in servers.iter_mut().skip(1) {
        s.spawn(Some(seed))?;
    }
    wait(
        Duration::from_secs(30),
        &format!("{count} servers"),
        async || voters(client, &servers[0]).await == count,
    )
    .await?;
    // A server just made a voter learns who leads with its first append from the leader;
    // until then it answers 503 "no leader yet", which clients retry.
    for s in &servers {
        wait(
            Duration::from_secs(10),
            "every server to know the leader",
            async || {
                get_json(client, &format!("{}/v1/leader", s.base()))
                    .await
                    .is_some_and(|v| v["Name"].is_string())
            },
        )
        .await?;
    }
    Ok(servers)
}

/// [`crate::get_json`] with this harness's timeout.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    crate::get_json(client, url, Duration::from_millis(500)).await
}

pub async fn leader_of(client: &reqwest::Client, servers: &[Server]) -> Option<String> {
    for s in servers.iter().filter(|s| s.child.is_some()) {
        if let Some(v) = get_json(client, &format!("{}/v1/leader", s.base())).await
            && let Some(name) = v["Name"].as_str()
        {
            return Some(name.to_string());
        }
    }
    None
}

/// Servers gossip shows alive, as the server whose API is at `api` sees them (0 when it
/// does not answer within `timeout`).
pub async fn alive_servers(client: &reqwest::Client, api: &str, timeout: Duration) -> usize {
    crate::get_json(client, &format!("{api}/v1/members"), timeout)
        .await
        .and_then(|v| {
            v.as_array().map(|a| {
                a.iter()
                    .filter(|m| m["statusText"] == "alive" && m["Tags"]["server"] == "true")
                    .count()
            })
        })
        .unwrap_or(0)
}

/// Voters of the Raft configuration as `server` sees it (gossip lists a server before the
/// leader admitted it).
pub async fn voters(client: &reqwest::Client, server: &Server) -> usize {
    get_json(client, &format!("{}/v1/raft/peers", server.base()))
        .await
        .and_then(|v| {
            v.as_array()
                .map(|a| a.iter().filter(|p| p["voter"] == true).count())
        })
        .unwrap_or(0)
}

pub async fn wait<F: AsyncFnMut() -> bool>(
    limit: Duration,
    what: &str,
    mut f: F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !f().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
