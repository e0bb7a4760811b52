//! `dkron-bench history N RUNS EVERY_S SERVERS`: does a server's memory grow with the history
//! it keeps? N http jobs `@every EVERY_S s` on a loopback cluster of SERVERS servers run until
//! each has about RUNS executions (Dkron keeps at most 100 per job, so RUNS = 100 is the most
//! history a job holds); every server's RSS is printed as the history grows, then with every
//! job saved disabled and the runs in flight drained, then again after every server restarted
//! on its data (the state loaded from disk, no run in flight).
//!
//! The target: with 10,000 jobs and 100 executions each (1,000,000 executions),
//! at most 60 MB RSS per server.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cluster::{get_json, leader_of, rss_of, start_cluster, wait};
use crate::scale::{create, fire_job, leader};
use crate::sink::Sink;

pub struct Shape {
    pub jobs: usize,
    pub runs: usize,
    pub every_s: u64,
    pub servers: usize,
}

/// How often the growing history's RSS is printed.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// Runs in flight when the jobs are disabled finish within their timeout; this is ample.
const DRAIN: Duration = Duration::from_secs(15);
/// After a restart, the allocator and the caches settle.
const SETTLE: Duration = Duration::from_secs(10);

pub async fn bench(client: &reqwest::Client, shape: Shape) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?.keep();
    eprintln!("servers' data and logs in {}", root.display());
    let mut servers = start_cluster(client, &root, "h", shape.servers).await?;
    let sink = Sink::start().await?;
    let every = shape.every_s;
    {
        let leader = leader(client, &servers).await?;
        let jobs: Vec<Value> = (0..shape.jobs)
            .map(|i| fire_job(&format!("j{i}"), every, &sink.url()))
            .collect();
        create(client, leader, jobs, "jobs", None).await?;
    }

    let target = shape.jobs * shape.runs;
    // Each job runs once a period; allow three times the time it should take.
    let bound = Duration::from_secs(every * shape.runs as u64 * 3 + 60);
    let started = Instant::now();
    let mut growing = Vec::new();
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let ran = sink.count();
        let line = format!(
            "{:.0} runs per job: {}",
            ran as f64 / shape.jobs as f64,
            rss_of(&servers)
        );
        eprintln!(
            "{line} ({ran} of {target} runs, {:.0} s)",
            started.elapsed().as_secs_f64()
        );
        growing.push(line);
        if ran >= target {
            break;
        }
        if started.elapsed() > bound {
            bail!("only {ran} of {target} runs after {} s", bound.as_secs());
        }
    }

    let leader_base = {
        let leader = leader(client, &servers).await?;
        // Saved disabled: the scheduler stops firing them (and such a save is never shed).
        let disabled: Vec<Value> = (0..shape.jobs)
            .map(|i| {
                let mut job = fire_job(&format!("j{i}"), every, &sink.url());
                job["disabled"] = Value::Bool(true);
                job
            })
            .collect();
        create(client, leader, disabled, "disables", None).await?;
        leader.base()
    };
    tokio::time::sleep(DRAIN).await;
    let stored = stored_executions(client, &leader_base, shape.jobs).await?;
    let idle = rss_of(&servers);

    for s in servers.iter_mut() {
        if let Some(mut child) = s.child.take() {
            child.start_kill()?;
            let _ = child.wait().await;
        }
    }
    let seed = servers[0].gossip;
    for (i, s) in servers.iter_mut().enumerate() {
        s.spawn((i > 0).then_some(seed))?;
    }
    wait(
        Duration::from_secs(60),
        "a leader after the restart",
        async || leader_of(client, &servers).await.is_some(),
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let leader_base = leader(client, &servers).await?.base();
    let stored_after = stored_executions(client, &leader_base, shape.jobs).await?;
    let restarted = rss_of(&servers);

    println!(
        "| history: {} jobs `@every {every}s`, {} servers, {} runs | while the history grows: {} | disabled, {stored} executions stored (sampled): {idle} | after restarting every server, {stored_after} stored: {restarted} |",
        shape.jobs,
        shape.servers,
        sink.count(),
        growing.join("; "),
    );
    Ok(())
}

/// Executions stored, estimated from 100 jobs spread over all of them (the list endpoint
/// answers every stored execution of a job) and scaled to `jobs`.
async fn stored_executions(
    client: &reqwest::Client,
    base: &str,
    jobs: usize,
) -> anyhow::Result<usize> {
    let step = (jobs / 100).max(1);
    let (mut sampled, mut stored) = (0, 0);
    for i in (0..jobs).step_by(step) {
        let list = get_json(client, &format!("{base}/v1/jobs/j{i}/executions"))
            .await
            .with_context(|| format!("listing the executions of j{i}"))?;
        stored += list.as_array().map_or(0, Vec::len);
        sampled += 1;
    }
    Ok(stored * jobs / sampled.max(1))
}
