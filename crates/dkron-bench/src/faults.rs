//! Fault-injection suite: three servers in containers (the image `scripts/build-image.sh`
//! builds) run jobs on `@every 1s` whose http runs report their nominal time to a sink on the
//! host; meanwhile the harness kills the leader (SIGKILL) and restarts it, restarts a follower,
//! cuts a follower off the network, then cuts the leader off, and keeps writing jobs. After
//! each phase it judges (the rules are in [`crate::verdict`], unit-tested with each defect
//! planted), from the sink and the API:
//! - no (job, nominal second) ran twice;
//! - every nominal second of every job in the phase either reached the sink or has a failed
//!   execution record with a known reason, on the node the phase hit, and the matching
//!   `/occurrences` verdict; failures the scheduler is to blame for are no more than the jobs;
//!   nothing is silently missed, nothing is still running once leases ran out.
//!
//! At the end a final sweep over every sink hit and every execution record seen catches a
//! second run that arrived after its phase was judged, and every acknowledged write
//! (creates, updates, toggles, deletes; a minimum of each) must hold.
//!
//! It prints a summary table (duplicates, misses, lateness per phase) and fails on any
//! violation. `dkron-bench faults [jobs] [kills]`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::percentile;
use crate::sink::{Hit, Sink};
use crate::verdict::{
    FaultKind, Findings, Ledger, Phase, Present, Run, Verdict, WriteKind, Writes, judge_phase,
    late_duplicates,
};

/// Acknowledged writes of each kind (create, update, toggle, delete) the run must make for
/// "no acknowledged write lost" to mean something.
const MIN_WRITES_OF_EACH_KIND: usize = 5;

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
        (crate::cluster::alive_servers(client, &api, Duration::from_secs(2)).await == nodes.len())
            .then_some(leader)
    })
    .await
}

/// One job write through the first server that takes it, recorded in `writes`: a refusal
/// (4xx) changed nothing; no answer, or a 5xx, may have changed something, so its job is
/// uncertain from then on (and a toggle is never sent twice).
async fn write_one(writes: &mut Writes, client: &reqwest::Client, cluster: &Cluster) {
    let (kind, name, version) = writes.plan();
    let disabled = writes.current(&name).is_some_and(|e| e.disabled);
    let job = json!({"name": name, "schedule": "@every 1h", "executor": "shell",
                     "executor_config": {"command": "true"}, "disabled": disabled,
                     "metadata": {"v": version.to_string()}});
    for node in cluster.nodes() {
        let Some(api) = cluster.api(&node) else {
            continue;
        };
        let request = match kind {
            WriteKind::Create | WriteKind::Update => {
                client.post(format!("{api}/v1/jobs")).json(&job)
            }
            WriteKind::Toggle => client.post(format!("{api}/v1/jobs/{name}/toggle")),
            WriteKind::Delete => client.delete(format!("{api}/v1/jobs/{name}")),
        };
        match request.timeout(Duration::from_secs(3)).send().await {
            Ok(r) if r.status().is_success() => {
                writes.acknowledged(kind, &name, version);
                return;
            }
            Ok(r) if r.status().is_client_error() => {
                writes.refused(&format!("{kind:?}: {}", r.status()));
                return;
            }
            Ok(r) => {
                writes.unanswered(&name, &format!("{kind:?}: {}", r.status()));
                return;
            }
            // Not sent at all: the next server may take it.
            Err(e) if e.is_connect() => {
                writes.refused(&format!("{kind:?}: could not connect to {node}"))
            }
            Err(e) => {
                let why = if e.is_timeout() {
                    "no answer in 3 s"
                } else {
                    "connection lost"
                };
                writes.unanswered(&name, &format!("{kind:?}: {why}"));
                return;
            }
        }
    }
}

/// Sink hits as (job, nominal second).
fn hit_keys(hits: &[Hit]) -> Vec<(String, i64)> {
    hits.iter()
        .map(|h| (h.job.clone(), h.scheduled.as_second()))
        .collect()
}

/// Any server that answers.
async fn reachable(client: &reqwest::Client, cluster: &Cluster) -> anyhow::Result<String> {
    wait_for(Duration::from_secs(30), "a reachable server", async || {
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
    .await
}

/// Every tick job's execution records, as one server lists them.
async fn all_runs(client: &reqwest::Client, api: &str, jobs: &[String]) -> Vec<Run> {
    let mut runs = Vec::new();
    for job in jobs {
        let listed = get_json(client, &format!("{api}/v1/jobs/{job}/executions"))
            .await
            .unwrap_or_default();
        runs.extend(
            listed
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Run::from_json),
        );
    }
    runs
}

/// Gathers the evidence of `phase`'s window (records of every job, into `ledger` too;
/// verdicts of the occurrences that did not reach the sink) and judges it.
async fn check_window(
    client: &reqwest::Client,
    cluster: &Cluster,
    hits: &[Hit],
    jobs: &[String],
    phase: &Phase,
    ledger: &mut Ledger,
) -> anyhow::Result<(Findings, Vec<f64>)> {
    let mut counted: BTreeMap<(String, i64), usize> = BTreeMap::new();
    let mut lateness = Vec::new();
    for hit in hits {
        let second = hit.scheduled.as_second();
        if (phase.from..phase.to).contains(&second) {
            let n = counted.entry((hit.job.clone(), second)).or_default();
            if *n == 0 {
                lateness.push(hit.arrived.duration_since(hit.scheduled).as_secs_f64());
            }
            *n += 1;
        }
    }
    let api = reachable(client, cluster).await?;
    let runs = all_runs(client, &api, jobs).await;
    ledger.record(&runs);
    let mut verdicts = BTreeMap::new();
    for job in jobs {
        let missed = (phase.from..phase.to).any(|s| !counted.contains_key(&(job.clone(), s)));
        if !missed {
            continue;
        }
        let from = Timestamp::from_second(phase.from).unwrap_or_default();
        let to = Timestamp::from_second(phase.to).unwrap_or_default();
        let listed = get_json(
            client,
            &format!("{api}/v1/jobs/{job}/occurrences?from={from}&to={to}"),
        )
        .await
        .unwrap_or_default();
        for (second, verdict) in listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Verdict::from_json)
        {
            verdicts.insert((job.clone(), second), verdict);
        }
    }
    Ok((
        judge_phase(phase, jobs, &counted, &runs, &verdicts),
        lateness,
    ))
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

    let mut writes = Writes::default();
    let mut ledger = Ledger::default();
    let mut phases: Vec<(String, Findings, Vec<f64>)> = Vec::new();
    let first_second = Timestamp::now().as_second();
    let mut window_start = first_second;
    let mut failures = Vec::new();

    // Each phase: inject, keep writing while waiting for the cluster to be whole again, keep
    // writing while in-flight runs settle, then judge the window the phase covered.
    for phase in 0..(kills + 3) {
        let leader = wait_stable(client, &cluster).await?;
        let followers: Vec<String> = cluster
            .nodes()
            .into_iter()
            .filter(|n| *n != leader)
            .collect();
        let (label, kind, node, fault_secs) = if phase < kills {
            log(&format!("SIGKILL of the leader {leader}"));
            cluster.kill(&leader)?;
            for _ in 0..4 {
                write_one(&mut writes, client, &cluster).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            cluster.start_again(&leader)?;
            ("leader SIGKILL + restart", FaultKind::Kill, leader, 2)
        } else if phase == kills {
            let f = followers[0].clone();
            log(&format!("graceful restart of the follower {f}"));
            cluster.restart(&f)?;
            ("follower restart", FaultKind::Restart, f, 2)
        } else if phase == kills + 1 {
            let f = followers[0].clone();
            log(&format!("cutting the follower {f} off for 8 s"));
            cluster.disconnect(&f)?;
            for _ in 0..8 {
                write_one(&mut writes, client, &cluster).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            cluster.connect(&f)?;
            ("minority partition", FaultKind::Partition, f, 8)
        } else {
            log(&format!("cutting the leader {leader} off for 8 s"));
            cluster.disconnect(&leader)?;
            for _ in 0..8 {
                write_one(&mut writes, client, &cluster).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            cluster.connect(&leader)?;
            ("old leader partitioned", FaultKind::Partition, leader, 8)
        };
        if let Err(e) = wait_stable(client, &cluster).await {
            for node in cluster.nodes() {
                eprintln!("--- {node}\n{}", cluster.logs(&node));
            }
            return Err(e);
        }
        // Settle for 6 s, writing meanwhile.
        for _ in 0..12 {
            write_one(&mut writes, client, &cluster).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let window = Phase {
            label: label.to_string(),
            kind,
            node,
            fault_secs,
            from: window_start,
            to: Timestamp::now().as_second() - 2,
        };
        // Runs still going (a resumed run waiting for its node, within its lease) are given
        // the lease to end before they count.
        let patience = Instant::now() + Duration::from_secs(45);
        let (findings, lateness) = loop {
            let judged =
                check_window(client, &cluster, &sink.hits(), &names, &window, &mut ledger).await?;
            if judged.0.in_flight == 0 || Instant::now() > patience {
                break judged;
            }
            log(&format!(
                "{label}: {} runs still in flight; waiting",
                judged.0.in_flight
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
            "{label}: {} occurrences, {} duplicates, {} silent misses, {} failed with a reason",
            findings.occurrences,
            findings.duplicates.len(),
            findings.silent.len(),
            findings.failed_total()
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
        failures.extend(findings.problems.iter().take(10).cloned());
        window_start = window.to;
        phases.push((label.to_string(), findings, lateness));
    }

    // The final sweep over the whole run: a second run of an occurrence that reached the sink
    // or the API after its phase was judged is caught here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let api = reachable(client, &cluster).await?;
    ledger.record(&all_runs(client, &api, &names).await);
    let late = late_duplicates(&hit_keys(&sink.hits()), first_second, window_start);
    if !late.is_empty() {
        failures.push(format!(
            "final sweep: ran twice at the sink: {:?}",
            &late[..late.len().min(5)]
        ));
    }
    // The sweep means something only if it saw the records: each run makes one, and only
    // the oldest beyond the 100 kept per job can be pruned before a check reads them.
    let hits_total = sink.hits().len();
    if ledger.len() * 2 < hits_total {
        failures.push(format!(
            "final sweep: only {} execution records seen for {hits_total} runs at the sink: the evidence was not gathered",
            ledger.len()
        ));
    }
    let twice = ledger.duplicates();
    if !twice.is_empty() {
        failures.push(format!(
            "final sweep: two records for one occurrence: {:?}",
            &twice[..twice.len().min(5)]
        ));
    }

    // Every acknowledged write holds; the tick jobs are all there.
    let leader = wait_stable(client, &cluster).await?;
    let api = cluster.api(&leader).context("leader api")?;
    let listed = get_json(client, &format!("{api}/v1/jobs?_end=100000"))
        .await
        .context("listing jobs")?;
    let listed = listed.as_array().cloned().unwrap_or_default();
    let present: Present = listed
        .iter()
        .filter_map(|j| {
            let name = j["name"].as_str()?;
            let version = j["metadata"]["v"].as_str()?.parse().ok()?;
            Some((name.to_string(), (version, j["disabled"].as_bool()?)))
        })
        .collect();
    let ticks: BTreeSet<&str> = listed.iter().filter_map(|j| j["name"].as_str()).collect();
    let lost_ticks: Vec<&String> = names
        .iter()
        .filter(|n| !ticks.contains(n.as_str()))
        .collect();
    if !lost_ticks.is_empty() {
        failures.push(format!("tick jobs missing: {lost_ticks:?}"));
    }
    let write_problems = writes.check(&present, MIN_WRITES_OF_EACH_KIND);
    failures.extend(write_problems.iter().cloned());

    println!(
        "| phase | occurrences | ran twice | silently missed | failed with a recorded reason | lateness p99 | lateness max |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut merged: BTreeMap<String, (Findings, Vec<f64>)> = BTreeMap::new();
    for (label, f, lateness) in phases {
        let (m, l) = merged.entry(label).or_default();
        m.occurrences += f.occurrences;
        m.duplicates.extend(f.duplicates);
        m.silent.extend(f.silent);
        for (reason, n) in f.failed {
            *m.failed.entry(reason).or_default() += n;
        }
        l.extend(lateness);
    }
    let reasons: Vec<String> = merged
        .iter()
        .flat_map(|(label, (f, _))| {
            f.failed
                .iter()
                .map(move |(reason, n)| format!("- {label}: {n} × {reason}"))
        })
        .collect();
    for (label, (f, mut lateness)) in merged {
        lateness.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {label} | {} | {} | {} | {} | {:.2} s | {:.2} s |",
            f.occurrences,
            f.duplicates.len(),
            f.silent.len(),
            f.failed_total(),
            percentile(&lateness, 0.99),
            lateness.last().copied().unwrap_or(0.0)
        );
    }
    if !reasons.is_empty() {
        println!(
            "\nFailed with a recorded reason, by reason:\n{}",
            reasons.join("\n")
        );
    }
    let acked: Vec<String> = writes
        .acked
        .iter()
        .map(|(kind, n)| format!("{n} {kind:?}"))
        .collect();
    let errors: Vec<String> = writes
        .errors
        .iter()
        .map(|(why, n)| format!("{n} × {why}"))
        .collect();
    println!(
        "\n{jobs} jobs on `@every 1s`, 3 servers in containers; final sweep over {} execution records and {} sink hits; acknowledged job writes during the faults: {} ({} jobs' final state checked, {} problems); writes not acknowledged: {}; {:.0} s in all.",
        ledger.len(),
        sink.hits().len(),
        acked.join(", "),
        writes.certain(),
        write_problems.len(),
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        },
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("fault suite failed:\n{}", failures.join("\n"));
    }
    Ok(())
}
