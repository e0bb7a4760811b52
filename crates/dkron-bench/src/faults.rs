//! Fault-injection suite: three servers in containers (the image `scripts/build-image.sh`
//! builds) run jobs on `@every 1s` whose http runs report their nominal time to a sink on the
//! host; meanwhile the harness kills the leader (SIGKILL) and restarts it, restarts a follower,
//! cuts a follower off the network, then cuts the leader off, and keeps writing jobs. After
//! each phase it checks, from the sink and the API:
//! - no (job, nominal second) ran twice;
//! - every nominal second of every job in the phase either reached the sink or has an
//!   execution record saying why it failed (a verdict); nothing is silently missed;
//! - every acknowledged job write is present at the end.
//!
//! It prints a summary table (duplicates, misses, lateness per phase) and fails on any
//! violation. `dkron-bench faults [jobs] [kills]`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::sink::{Hit, Sink};
use crate::{percentile, scheduled_second};

const IMAGE: &str = "dkron-rs:dev";

/// The cluster's gossip key (`dkron keygen` output): the servers talk mutual TLS.
const CLUSTER_KEY: &str = "kPpdjphiipNSsjd4QHWbkA==";
/// The management token the servers are started with (`--acl-bootstrap-token`).
pub const ACL_TOKEN: &str = "fault-suite-management-token-0001";

/// Runs `docker` with `args`; its trimmed stdout, or an error with its stderr.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The containers and network of one run; removed on drop.
struct Cluster {
    network: String,
    names: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = docker(&["rm", "-f", name]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

impl Cluster {
    fn start(servers: usize) -> anyhow::Result<Cluster> {
        let tag = format!("dkronfault{}", std::process::id());
        docker(&["network", "create", &tag])?;
        let mut cluster = Cluster {
            network: tag.clone(),
            names: Vec::new(),
        };
        let joins: Vec<String> = (1..=servers)
            .map(|i| format!("--retry-join=d{i}:8946"))
            .collect();
        for i in 1..=servers {
            let name = format!("{tag}-d{i}");
            let host = format!("d{i}");
            let mut args = vec![
                "run".to_string(),
                "-d".into(),
                "--name".into(),
                name.clone(),
                "--hostname".into(),
                host.clone(),
                "--network".into(),
                tag.clone(),
                "--network-alias".into(),
                host.clone(),
                "-p".into(),
                "127.0.0.1::8080".into(),
                IMAGE.into(),
                "agent".into(),
                "--server".into(),
                format!("--bootstrap-expect={servers}"),
                format!("--node-name={host}"),
                "--data-dir=/dkron.data".into(),
                "--retry-interval=1s".into(),
                "--log-level=info".into(),
                // Encrypted gossip and mutual TLS between the servers, and ACLs on, as in
                // production: every API call of the harness carries the management token.
                format!("--encrypt={CLUSTER_KEY}"),
                "--acl-enabled".into(),
                format!("--acl-bootstrap-token={ACL_TOKEN}"),
            ];
            args.extend(joins.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&args)?;
            cluster.names.push(name);
        }
        Ok(cluster)
    }

    fn container(&self, node: &str) -> &str {
        let i: usize = node.trim_start_matches('d').parse().unwrap_or(1);
        &self.names[i - 1]
    }

    fn gateway(&self) -> anyhow::Result<String> {
        docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &self.network,
        ])
    }

    /// The API address of `node` on the host (it changes when a container restarts).
    fn api(&self, node: &str) -> Option<String> {
        let port = docker(&["port", self.container(node), "8080/tcp"]).ok()?;
        let line = port.lines().next()?.to_string();
        Some(format!("http://{}", line.replace("0.0.0.0", "127.0.0.1")))
    }

    fn nodes(&self) -> Vec<String> {
        (1..=self.names.len()).map(|i| format!("d{i}")).collect()
    }

    fn kill(&self, node: &str) -> anyhow::Result<()> {
        docker(&["kill", self.container(node)]).map(drop)
    }

    fn start_again(&self, node: &str) -> anyhow::Result<()> {
        docker(&["start", self.container(node)]).map(drop)
    }

    fn restart(&self, node: &str) -> anyhow::Result<()> {
        docker(&["restart", "-t", "10", self.container(node)]).map(drop)
    }

    fn disconnect(&self, node: &str) -> anyhow::Result<()> {
        docker(&["network", "disconnect", &self.network, self.container(node)]).map(drop)
    }

    fn connect(&self, node: &str) -> anyhow::Result<()> {
        docker(&[
            "network",
            "connect",
            "--alias",
            node,
            &self.network,
            self.container(node),
        ])
        .map(drop)
    }

    fn logs(&self, node: &str) -> String {
        docker(&["logs", "--tail", "30", self.container(node)]).unwrap_or_default()
    }
}

/// [`crate::get_json`] with this harness's timeout.
async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    crate::get_json(client, url, Duration::from_secs(2)).await
}

/// The leader as every reachable node in `among` names it, if they agree.
async fn agreed_leader(
    client: &reqwest::Client,
    cluster: &Cluster,
    among: &[String],
) -> Option<String> {
    let mut names = BTreeSet::new();
    for node in among {
        let api = cluster.api(node)?;
        let v = get_json(client, &format!("{api}/v1/leader")).await?;
        names.insert(v["Name"].as_str()?.to_string());
    }
    (names.len() == 1).then(|| names.into_iter().next().expect("one"))
}

async fn alive_servers(client: &reqwest::Client, api: &str) -> usize {
    get_json(client, &format!("{api}/v1/members"))
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

async fn wait_for<T, F: AsyncFnMut() -> Option<T>>(
    limit: Duration,
    what: &str,
    mut f: F,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stable cluster: every node up, one leader all agree on, every server alive in gossip.
async fn wait_stable(client: &reqwest::Client, cluster: &Cluster) -> anyhow::Result<String> {
    let nodes = cluster.nodes();
    wait_for(Duration::from_secs(90), "a stable cluster", async || {
        let leader = agreed_leader(client, cluster, &nodes).await?;
        let api = cluster.api(&leader)?;
        (alive_servers(client, &api).await == nodes.len()).then_some(leader)
    })
    .await
}

/// Writes through any reachable node; the names whose create was acknowledged.
struct Writer {
    acked: Vec<String>,
    next: usize,
}

impl Writer {
    async fn write_one(&mut self, client: &reqwest::Client, cluster: &Cluster) {
        let name = format!("w{}", self.next);
        self.next += 1;
        let job = json!({"name": name, "schedule": "@every 1h", "executor": "shell",
                         "executor_config": {"command": "true"}});
        for node in cluster.nodes() {
            let Some(api) = cluster.api(&node) else {
                continue;
            };
            let sent = client
                .post(format!("{api}/v1/jobs"))
                .json(&job)
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            if let Ok(r) = sent
                && r.status() == 201
            {
                self.acked.push(name);
                return;
            }
        }
    }
}

/// One phase's findings.
#[derive(Default)]
struct Findings {
    occurrences: usize,
    duplicates: Vec<(String, i64)>,
    failed_with_reason: usize,
    /// Why those failed, by kind of reason.
    reasons: BTreeMap<String, usize>,
    /// No sink hit yet, and a run of it is still recorded as running (its lease has not run
    /// out): neither a miss nor a verdict yet.
    in_flight: usize,
    silent: Vec<(String, i64)>,
    lateness: Vec<f64>,
}

/// The kind of reason a failed run's output gives (node names and addresses left out).
fn reason_kind(output: &str) -> String {
    let line = output.lines().next().unwrap_or_default();
    let known = [
        (
            "stopped answering",
            "the node stopped answering while running it (lease ran out)",
        ),
        (
            "started on this node before",
            "started on a node that then restarted (lost)",
        ),
        (
            "restarted after the run was due",
            "due before its node restarted (lost)",
        ),
        ("no longer a member", "its node left before the run started"),
        (
            "shutting down; the run was not started",
            "its node was shutting down",
        ),
        (
            "error trying to connect",
            "its order could not be delivered",
        ),
        (
            "refused: run order from leader term",
            "ordered by a deposed leader (fenced)",
        ),
        (
            "error sending request",
            "the job's own HTTP call failed (its node was cut off)",
        ),
    ];
    match known.iter().find(|(needle, _)| line.contains(needle)) {
        Some((_, kind)) => kind.to_string(),
        None => format!("other: {}", line.chars().take(160).collect::<String>()),
    }
}

/// Checks the nominal seconds in `[from, to)` of every tick job.
async fn check_window(
    client: &reqwest::Client,
    cluster: &Cluster,
    hits: &[Hit],
    jobs: &[String],
    from: i64,
    to: i64,
) -> anyhow::Result<Findings> {
    let mut per: BTreeMap<(&str, i64), Vec<&Hit>> = BTreeMap::new();
    for hit in hits {
        let second = hit.scheduled.as_second();
        if (from..to).contains(&second) {
            per.entry((hit.job.as_str(), second)).or_default().push(hit);
        }
    }
    let mut f = Findings::default();
    let api = wait_for(Duration::from_secs(30), "a reachable server", async || {
        for node in cluster.nodes() {
            if let Some(api) = cluster.api(&node)
                && get_json(client, &format!("{api}/v1/leader"))
                    .await
                    .is_some()
            {
                return Some(api);
            }
        }
        None
    })
    .await?;
    for job in jobs {
        let mut missing = Vec::new();
        for second in from..to {
            f.occurrences += 1;
            match per.get(&(job.as_str(), second)) {
                None => missing.push(second),
                Some(h) if h.len() > 1 => f.duplicates.push((job.clone(), second)),
                Some(h) => f
                    .lateness
                    .push(h[0].arrived.duration_since(h[0].scheduled).as_secs_f64()),
            }
        }
        if missing.is_empty() {
            continue;
        }
        let runs = get_json(client, &format!("{api}/v1/jobs/{job}/executions"))
            .await
            .unwrap_or_default();
        let recorded: BTreeSet<i64> = runs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["finished_at"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            })
            .filter_map(scheduled_second)
            .collect();
        for second in missing {
            if recorded.contains(&second) {
                f.failed_with_reason += 1;
                let output = runs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| scheduled_second(e) == Some(second))
                    .and_then(|e| e["output"].as_str())
                    .unwrap_or_default();
                *f.reasons.entry(reason_kind(output)).or_default() += 1;
            } else {
                f.silent.push((job.clone(), second));
                let about: Vec<String> = runs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| scheduled_second(e) == Some(second))
                    .map(|e| e.to_string())
                    .collect();
                let from = Timestamp::from_second(second).unwrap_or_default();
                let to = Timestamp::from_second(second + 1).unwrap_or_default();
                let verdict = get_json(
                    client,
                    &format!("{api}/v1/jobs/{job}/occurrences?from={from}&to={to}"),
                )
                .await
                .unwrap_or_default();
                eprintln!(
                    "silent miss {job} @ {second}: executions {about:?}; occurrences {verdict}"
                );
            }
        }
    }
    Ok(f)
}

pub async fn run(client: &reqwest::Client, jobs: usize, kills: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let log = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let cluster = Cluster::start(3)?;
    let gateway = cluster.gateway()?;
    let sink = Sink::start_on(format!("{gateway}:0").parse()?).await?;
    let leader = wait_stable(client, &cluster).await?;
    log(&format!("cluster up, leader {leader}"));

    let api = cluster.api(&leader).context("leader api")?;
    let anonymous = reqwest::Client::new()
        .get(format!("{api}/v1/jobs"))
        .send()
        .await?;
    anyhow::ensure!(
        anonymous.status() == 401,
        "ACLs are on but a request without a token got {}",
        anonymous.status()
    );
    let names: Vec<String> = (0..jobs).map(|i| format!("tick{i}")).collect();
    for name in &names {
        let job = json!({"name": name, "schedule": "@every 1s", "tags": {"server": "true:1"},
            "executor": "http",
            "executor_config": {"method": "GET", "url": sink.url(), "timeout": "5"}});
        let r = client
            .post(format!("{api}/v1/jobs"))
            .json(&job)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "creating {name}: {}", r.status());
    }
    log(&format!("{jobs} jobs on @every 1s"));
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut writer = Writer {
        acked: Vec::new(),
        next: 0,
    };
    let mut phases: Vec<(String, Findings)> = Vec::new();
    let mut window_start = Timestamp::now().as_second();
    let settle = Duration::from_secs(6);
    let mut failures = Vec::new();

    // Each phase: inject, keep writing while waiting for the cluster to be whole again, let
    // in-flight runs settle, then check the window the phase covered.
    for phase in 0..(kills + 3) {
        let leader = wait_stable(client, &cluster).await?;
        let followers: Vec<String> = cluster
            .nodes()
            .into_iter()
            .filter(|n| *n != leader)
            .collect();
        let label = if phase < kills {
            log(&format!("SIGKILL of the leader {leader}"));
            cluster.kill(&leader)?;
            for _ in 0..4 {
                writer.write_one(client, &cluster).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            cluster.start_again(&leader)?;
            "leader SIGKILL + restart"
        } else if phase == kills {
            let f = &followers[0];
            log(&format!("graceful restart of the follower {f}"));
            cluster.restart(f)?;
            "follower restart"
        } else if phase == kills + 1 {
            let f = &followers[0];
            log(&format!("cutting the follower {f} off for 8 s"));
            cluster.disconnect(f)?;
            for _ in 0..8 {
                writer.write_one(client, &cluster).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            cluster.connect(f)?;
            "minority partition"
        } else {
            log(&format!("cutting the leader {leader} off for 8 s"));
            cluster.disconnect(&leader)?;
            for _ in 0..8 {
                writer.write_one(client, &cluster).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            cluster.connect(&leader)?;
            "old leader partitioned"
        };
        if let Err(e) = wait_stable(client, &cluster).await {
            for node in cluster.nodes() {
                eprintln!("--- {node}\n{}", cluster.logs(&node));
            }
            return Err(e);
        }
        writer.write_one(client, &cluster).await;
        tokio::time::sleep(settle).await;
        let window_end = Timestamp::now().as_second() - 2;
        // Runs still going (a resumed run waiting for its node, within its lease) are given
        // the lease to end before they count.
        let patience = Instant::now() + Duration::from_secs(45);
        let findings = loop {
            let f = check_window(
                client,
                &cluster,
                &sink.hits(),
                &names,
                window_start,
                window_end,
            )
            .await?;
            if f.in_flight == 0 || Instant::now() > patience {
                break f;
            }
            log(&format!(
                "{label}: {} runs still in flight; waiting",
                f.in_flight
            ));
            tokio::time::sleep(Duration::from_secs(3)).await;
        };
        if findings.in_flight > 0 {
            failures.push(format!(
                "{label}: {} runs still recorded as running 45 s after the phase",
                findings.in_flight
            ));
        }
        log(&format!(
            "{label}: {} occurrences, {} duplicates, {} silent misses",
            findings.occurrences,
            findings.duplicates.len(),
            findings.silent.len()
        ));
        if !findings.duplicates.is_empty() {
            failures.push(format!(
                "{label}: ran twice: {:?}",
                &findings.duplicates[..findings.duplicates.len().min(5)]
            ));
        }
        if !findings.silent.is_empty() {
            failures.push(format!(
                "{label}: no run and no record: {:?}",
                &findings.silent[..findings.silent.len().min(5)]
            ));
        }
        phases.push((label.to_string(), findings));
        window_start = window_end;
    }

    // Every acknowledged write is there.
    let leader = wait_stable(client, &cluster).await?;
    let api = cluster.api(&leader).context("leader api")?;
    let listed = get_json(client, &format!("{api}/v1/jobs?_end=100000"))
        .await
        .context("listing jobs")?;
    let present: BTreeSet<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["name"].as_str())
        .collect();
    let lost: Vec<&String> = writer
        .acked
        .iter()
        .chain(names.iter())
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    if !lost.is_empty() {
        failures.push(format!("acknowledged job writes missing: {lost:?}"));
    }

    println!(
        "| phase | occurrences | ran twice | silently missed | failed with a recorded reason | lateness p99 | lateness max |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut merged: BTreeMap<String, Findings> = BTreeMap::new();
    for (label, f) in phases {
        let m = merged.entry(label).or_default();
        m.occurrences += f.occurrences;
        m.duplicates.extend(f.duplicates);
        m.silent.extend(f.silent);
        m.failed_with_reason += f.failed_with_reason;
        for (reason, n) in f.reasons {
            *m.reasons.entry(reason).or_default() += n;
        }
        m.lateness.extend(f.lateness);
    }
    let reasons: Vec<String> = merged
        .iter()
        .flat_map(|(label, f)| {
            f.reasons
                .iter()
                .map(move |(reason, n)| format!("- {label}: {n} × {reason}"))
        })
        .collect();
    for (label, mut f) in merged {
        f.lateness.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {label} | {} | {} | {} | {} | {:.2} s | {:.2} s |",
            f.occurrences,
            f.duplicates.len(),
            f.silent.len(),
            f.failed_with_reason,
            percentile(&f.lateness, 0.99),
            f.lateness.last().copied().unwrap_or(0.0)
        );
    }
    if !reasons.is_empty() {
        println!(
            "\nFailed with a recorded reason, by reason:\n{}",
            reasons.join("\n")
        );
    }
    println!(
        "\n{} jobs on `@every 1s`, 3 servers in containers; {} acknowledged job writes during the faults, {} missing; {:.0} s in all.",
        jobs,
        writer.acked.len(),
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("fault suite failed:\n{}", failures.join("\n"));
    }
    Ok(())
}
