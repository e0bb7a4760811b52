//! Benchmarks of dkron-rs on one node, printed as Markdown for BENCHMARKS.md.
//!
//! `cargo run --release -p dkron-bench -- [all|creates|spread|same-second|rss|failover [kills]]`
//! and the fault-injection suite against containers: `dkron-bench faults [jobs] [kills]`;
//! scale on a loopback cluster: `dkron-bench scale N EVERY_S SECONDS SERVERS` (`scale.rs`);
//! overload and recovery: `dkron-bench overload HIGH LOW EVERY_S SECONDS SERVERS [CATCHUP]`
//! (`overload.rs`); memory as history grows: `dkron-bench history N RUNS EVERY_S SERVERS`
//! (`history.rs`);
//! the nats executor against nats-server: `dkron-bench nats [N]` (`brokers.rs`).
//!
//! Each scenario starts the release `dkron` binary on a fresh data dir and free loopback ports,
//! drives it over HTTP, and measures from outside: acknowledged creates per second, fire
//! lateness (arrival of the http executor's request at a local sink minus the nominal time in
//! its `X-Dkron-Scheduled-Time` header), and resident memory from /proc. The same-second
//! scenario also runs the *floor*: a minimal program (this binary, `floor` subcommand) that
//! starts the same N requests at each whole second with no scheduler at all.

mod brokers;
mod cluster;
mod failover;
mod faults;
mod history;
mod overload;
mod scale;
mod sink;
mod verdict;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde_json::json;
use tokio::process::{Child, Command};

use sink::Sink;

/// A dkron process under test.
struct Dkron {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn dkron_path() -> PathBuf {
    if let Ok(p) = std::env::var("DKRON_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("dkron")
}

impl Dkron {
    async fn start(client: &reqwest::Client) -> anyhow::Result<Dkron> {
        let dir = tempfile::tempdir()?;
        let http = free_port()?;
        let rpc = free_port()?;
        let bin = dkron_path();
        // DKRON_BIN tells the bench which binary to run; dkron itself would read it as a
        // (misspelt) setting and warn.
        let child = Command::new(&bin)
            .env_remove("DKRON_BIN")
            .args([
                "agent",
                "--server",
                "--bootstrap-expect=1",
                "--node-name=bench",
                "--bind-addr=127.0.0.1:0",
                "--log-level=warn",
            ])
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--http-addr=127.0.0.1:{http}"))
            .arg(format!("--rpc-port={rpc}"))
            // Extra agent flags, e.g. to measure what metrics or processors cost.
            .args(
                std::env::var("BENCH_AGENT_FLAGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with cargo build --release)",
                    bin.display()
                )
            })?;
        let base = format!("http://127.0.0.1:{http}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{base}/v1/isleader")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("dkron did not become leader within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Dkron {
            child,
            base,
            _dir: dir,
        })
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("dkron exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")
    }

    /// Creates jobs with `concurrency` requests in flight; returns the wall time.
    async fn create_jobs(
        &self,
        client: &reqwest::Client,
        jobs: Vec<serde_json::Value>,
        concurrency: usize,
    ) -> anyhow::Result<Duration> {
        let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
        let start = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let jobs = jobs.clone();
            let client = client.clone();
            let url = format!("{}/v1/jobs", self.base);
            workers.push(tokio::spawn(async move {
                loop {
                    let Some(job) = jobs.lock().await.pop() else {
                        return Ok::<(), anyhow::Error>(());
                    };
                    let r = client.post(&url).json(&job).send().await?;
                    if r.status() != 201 {
                        bail!("create answered {}: {}", r.status(), r.text().await?);
                    }
                }
            }));
        }
        for w in workers {
            w.await??;
        }
        Ok(start.elapsed())
    }
}

fn http_job(name: &str, schedule: &str, sink: &str) -> serde_json::Value {
    json!({
        "name": name,
        "schedule": schedule,
        "executor": "http",
        "executor_config": {"method": "GET", "url": sink, "timeout": "30", "expectCode": "200"}
    })
}

/// GETs `url` and parses its JSON; `None` on any failure (the callers poll).
async fn get_json(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Option<serde_json::Value> {
    client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The nominal second of an execution record (its `scheduled_at`), if it has one.
fn scheduled_second(execution: &serde_json::Value) -> Option<i64> {
    execution["scheduled_at"]
        .as_str()?
        .parse::<Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

struct Lateness {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn summarize(mut ms: Vec<f64>) -> Lateness {
    ms.sort_by(|a, b| a.total_cmp(b));
    Lateness {
        count: ms.len(),
        p50: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        max: ms.last().copied().unwrap_or(f64::NAN),
    }
}

async fn bench_creates(client: &reqwest::Client) -> anyhow::Result<()> {
    let dkron = Dkron::start(client).await?;
    let n = 5000;
    let jobs = (0..n)
        .map(|i| {
            json!({"name": format!("c{i}"), "schedule": "@every 1h", "executor": "shell",
                   "executor_config": {"command": "true"}})
        })
        .collect();
    let took = dkron.create_jobs(client, jobs, 32).await?;
    println!(
        "| acknowledged job creates | {n} creates, 32 in flight | **{:.0} creates/s** | ≥ 2,000/s |",
        n as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Lateness samples (ms) of runs whose nominal time lies in [from, to).
fn window(sink: &Sink, from: Timestamp, to: Timestamp) -> Vec<f64> {
    sink.hits()
        .into_iter()
        .filter(|h| h.scheduled >= from && h.scheduled < to)
        .map(|h| h.arrived.duration_since(h.scheduled).as_secs_f64() * 1000.0)
        .collect()
}

async fn bench_spread(client: &reqwest::Client) -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dkron = Dkron::start(client).await?;
    let n = 1000;
    // Created one at a time, so every job gets its own phase within the second.
    let jobs = (0..n)
        .map(|i| http_job(&format!("s{i}"), "@every 1s", &sink.url()))
        .collect();
    dkron.create_jobs(client, jobs, 1).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let to = Timestamp::now() - jiff::SignedDuration::from_secs(2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let l = summarize(window(&sink, from, to));
    let hits = sink.hits();
    let unique: std::collections::BTreeSet<_> =
        hits.iter().map(|h| (h.job.clone(), h.scheduled)).collect();
    println!(
        "| fire lateness, {n} jobs `@every 1s`, phases spread | {} runs in 18 s, {} duplicates | p50 **{:.1} ms**, p99 **{:.1} ms**, max {:.1} ms | p99 ≤ 10 ms |",
        l.count,
        hits.len() - unique.len(),
        l.p50,
        l.p99,
        l.max
    );
    drop(dkron);
    Ok(())
}

async fn bench_same_second(client: &reqwest::Client, n: usize) -> anyhow::Result<()> {
    let seconds = 10;
    // The floor: N requests at each whole second from a program with no scheduler.
    let floor_sink = Sink::start().await?;
    let mut floor = Command::new(std::env::current_exe()?)
        .args([
            "floor",
            &floor_sink.url(),
            &n.to_string(),
            &seconds.to_string(),
        ])
        .kill_on_drop(true)
        .spawn()?;
    floor.wait().await?;
    let floor_l = summarize(
        floor_sink
            .hits()
            .into_iter()
            .map(|h| h.arrived.duration_since(h.scheduled).as_secs_f64() * 1000.0)
            .collect(),
    );

    let sink = Sink::start().await?;
    let dkron = Dkron::start(client).await?;
    let jobs = (0..n)
        .map(|i| http_job(&format!("q{i}"), "* * * * * *", &sink.url()))
        .collect();
    dkron.create_jobs(client, jobs, 16).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let to = Timestamp::now() - jiff::SignedDuration::from_secs(3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let SameSecond {
        lateness: l,
        expected,
        duplicates,
    } = same_second(&sink.hits(), n, from, to);
    println!(
        "| same-second fires, N = {n}, http to a local sink | {} of {expected} due runs, {duplicates} duplicates | p50 **{:.1} ms**, p99 **{:.1} ms** (floor p50 {:.1} ms, p99 {:.1} ms; ratio {:.2}×) | p99 ≤ 1.5× floor |",
        l.count,
        l.p50,
        l.p99,
        floor_l.p50,
        floor_l.p99,
        l.p99 / floor_l.p99
    );
    drop(dkron);
    Ok(())
}

/// What the same-second window `[from, to)` saw of N jobs on `* * * * * *`.
struct SameSecond {
    lateness: Lateness,
    /// Due runs: N per whole second in the window.
    expected: i64,
    /// Hits of an occurrence already seen.
    duplicates: usize,
}

fn same_second(hits: &[sink::Hit], n: usize, from: Timestamp, to: Timestamp) -> SameSecond {
    let in_window: Vec<_> = hits
        .iter()
        .filter(|h| h.scheduled >= from && h.scheduled < to)
        .collect();
    let unique: std::collections::BTreeSet<_> = in_window
        .iter()
        .map(|h| (h.job.clone(), h.scheduled))
        .collect();
    // Whole seconds s with from <= s < to: every one is due once per job.
    let whole = |t: Timestamp| t.as_second() + i64::from(t.subsec_nanosecond() > 0);
    SameSecond {
        lateness: summarize(
            in_window
                .iter()
                .map(|h| h.arrived.duration_since(h.scheduled).as_secs_f64() * 1000.0)
                .collect(),
        ),
        expected: n as i64 * (whole(to) - whole(from)),
        duplicates: in_window.len() - unique.len(),
    }
}

async fn bench_rss(client: &reqwest::Client) -> anyhow::Result<()> {
    let dkron = Dkron::start(client).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = dkron.rss_kib()?;
    let jobs = (0..10_000)
        .map(|i| {
            json!({"name": format!("r{i}"), "schedule": "0 0 0 1 1 *", "executor": "shell",
                   "executor_config": {"command": "true"}, "metadata": {"team": "bench"}})
        })
        .collect();
    dkron.create_jobs(client, jobs, 32).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = dkron.rss_kib()?;
    println!(
        "| RSS idle | fresh node, no jobs | **{:.1} MB** | ≤ 20 MB |",
        idle as f64 / 1024.0
    );
    println!(
        "| RSS with 10,000 jobs | after creating them | **{:.1} MB** | ≤ 50 MB |",
        full as f64 / 1024.0
    );
    Ok(())
}

/// A client that sends `token` as `Authorization: Bearer` on every request.
fn with_token(
    builder: reqwest::ClientBuilder,
    token: &str,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(builder.default_headers(headers))
}

/// The floor program: `floor <url> <n> <seconds>`.
async fn floor(url: String, n: usize, seconds: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..seconds {
        let now = Timestamp::now();
        let next_second = now
            .checked_add(jiff::SignedDuration::from_secs(1))?
            .round(jiff::Unit::Second)?;
        let next_second = if next_second <= now {
            next_second + jiff::SignedDuration::from_secs(1)
        } else {
            next_second
        };
        let wait = next_second.duration_since(Timestamp::now());
        tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
        for _ in 0..n {
            let client = client.clone();
            let url = url.clone();
            let scheduled = next_second.to_string();
            tokio::spawn(async move {
                let _ = client
                    .get(url)
                    .header("X-Dkron-Scheduled-Time", scheduled)
                    .send()
                    .await;
            });
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// The whole number at `args[i]`, named `what` in the error along with the scenario's `usage`.
fn whole(args: &[String], i: usize, usage: &str, what: &str) -> anyhow::Result<u64> {
    args.get(i)
        .with_context(|| format!("{usage}: no {what}"))?
        .parse()
        .with_context(|| format!("{usage}: {what} must be a whole number"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider in this workspace.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("floor") {
        let url = args.get(1).context("floor <url> <n> <seconds>")?.clone();
        let n = args.get(2).context("n")?.parse()?;
        let s = args.get(3).context("seconds")?.parse()?;
        return floor(url, n, s).await;
    }
    let scenario = args.first().map(String::as_str).unwrap_or("all");
    if scenario == "faults" {
        let jobs = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(200);
        let kills = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(3);
        let client = with_token(reqwest::Client::builder(), faults::ACL_TOKEN)?.build()?;
        return faults::run(&client, jobs, kills).await;
    }
    let bench_client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
    };
    if scenario == "scale" {
        let arg = |i, what| whole(&args, i, "scale N EVERY_S SECONDS SERVERS", what);
        let shape = scale::Shape {
            jobs: arg(1, "N")? as usize,
            every_s: arg(2, "EVERY_S")?.max(1),
            seconds: arg(3, "SECONDS")?,
            servers: arg(4, "SERVERS")?.max(1) as usize,
        };
        return scale::bench(&bench_client()?, shape).await;
    }
    if scenario == "overload" {
        let arg = |i, what| {
            whole(
                &args,
                i,
                "overload HIGH LOW EVERY_S SECONDS SERVERS [CATCHUP]",
                what,
            )
        };
        let shape = overload::Shape {
            high: arg(1, "HIGH")? as usize,
            low: arg(2, "LOW")? as usize,
            every_s: arg(3, "EVERY_S")?.max(1),
            seconds: arg(4, "SECONDS")?,
            servers: arg(5, "SERVERS")?.max(1) as usize,
            catchup: args.get(6).cloned().unwrap_or_else(|| "latest".into()),
        };
        return overload::bench(&bench_client()?, shape).await;
    }
    if scenario == "history" {
        let arg = |i, what| whole(&args, i, "history N RUNS EVERY_S SERVERS", what);
        let shape = history::Shape {
            jobs: arg(1, "N")?.max(1) as usize,
            runs: arg(2, "RUNS")? as usize,
            every_s: arg(3, "EVERY_S")?.max(1),
            servers: arg(4, "SERVERS")?.max(1) as usize,
        };
        return history::bench(&bench_client()?, shape).await;
    }
    // BENCH_TOKEN: the ACL token to send, for a node started with ACLs on (BENCH_AGENT_FLAGS).
    let mut client = reqwest::Client::builder().pool_max_idle_per_host(64);
    if let Ok(token) = std::env::var("BENCH_TOKEN") {
        client = with_token(client, &token)?;
    }
    let client = client.build()?;
    println!("| what | shape | result | target |");
    println!("|---|---|---|---|");
    if matches!(scenario, "all" | "creates") {
        bench_creates(&client).await?;
    }
    if matches!(scenario, "all" | "spread") {
        bench_spread(&client).await?;
    }
    if matches!(scenario, "all" | "same-second") {
        let sizes: Vec<usize> = match args.get(1) {
            Some(n) => vec![n.parse()?],
            None => vec![100, 1000, 4000],
        };
        for n in sizes {
            bench_same_second(&client, n).await?;
        }
    }
    if scenario == "nats" {
        let n = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(1000);
        brokers::bench(&client, n).await?;
    }
    if matches!(scenario, "all" | "rss") {
        bench_rss(&client).await?;
    }
    if matches!(scenario, "all" | "failover") {
        let kills = match (scenario, args.get(1)) {
            ("failover", Some(k)) => k.parse()?,
            _ => 20,
        };
        failover::bench(&client, kills).await?;
    }
    Ok(())
}
