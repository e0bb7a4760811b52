//! `dkron-bench overload HIGH LOW EVERY_S SECONDS SERVERS [CATCHUP]`: HIGH http jobs
//! `@every EVERY_S s` (catch-up policy CATCHUP, default `latest`) on a loopback cluster of
//! SERVERS servers, more than it can run on time; watched SECONDS; then all but LOW of them are
//! deleted, and the bench measures how long until the leader is on time again and how late
//! the remaining jobs run for the next 30 s.
//!
//! Reported: how far behind the leader got (`dkron_scheduler_behind_seconds`, every 2 s, on
//! every server), whether every server is still running and a leader answers, what became of
//! a sample of the occurrences due while overloaded (ran, skipped with a reason, or neither:
//! silently dropped), how long the deletes took (client writes are shed while the leader is
//! behind), the time from the last delete to being on time (behind ≤ 1 s), and lateness after.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::cluster::{Server, start_cluster_with};
use crate::scale::{create_paced, fire_job, judge, leader, send_all, spread_rate};
use crate::sink::Sink;

pub struct Shape {
    pub high: usize,
    pub low: usize,
    pub every_s: u64,
    pub seconds: u64,
    pub servers: usize,
    pub catchup: String,
}

/// On time again: the leader at most this far behind, in three samples in a row.
const ON_TIME_S: f64 = 1.0;
/// How long the bench waits for the deletes, and then for the leader to be on time.
const PHASE_BOUND: Duration = Duration::from_secs(180);
/// How long the deletes that drop the load may take (they are never shed, but each waits for
/// the entries in flight: 40 a second at 30,000 jobs on this machine).
const DELETE_BOUND: Duration = Duration::from_secs(360);
/// How long creates may take beyond their pace before the rest are given up.
const CREATE_GRACE: Duration = Duration::from_secs(60);
/// Occurrences looked up per job sampled, jobs sampled.
const SAMPLED_JOBS: usize = 200;
const AFTER_WINDOW: Duration = Duration::from_secs(30);

pub async fn bench(client: &reqwest::Client, shape: Shape) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?.keep();
    eprintln!("servers' data and logs in {}", root.display());
    let mut servers =
        start_cluster_with(client, &root, "s", shape.servers, &["--enable-prometheus"]).await?;
    let sink = Sink::start().await?;
    let leader = leader(client, &servers).await?;
    let every = shape.every_s;
    let jobs: Vec<Value> = (0..shape.high)
        .map(|i| {
            let mut job = fire_job(&format!("j{i}"), every, &sink.url());
            job["catchup"] = shape.catchup.clone().into();
            job
        })
        .collect();
    let pace = spread_rate(jobs.len(), shape.every_s);
    // Bounded: past what the cluster keeps up with, the leader sheds creates (503 with
    // Retry-After) for as long as it is behind, so the rest may never be created. Sent in
    // order: what gets created is j0 up to `created`.
    let create_bound = Duration::from_secs_f64(jobs.len() as f64 / pace) + CREATE_GRACE;
    let (created, _) =
        create_paced(client, leader, jobs, "jobs", Some(create_bound), Some(pace)).await?;

    let overloaded_from = Timestamp::now();
    let mut max_behind: f64 = 0.0;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(shape.seconds) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let behind = behind(client, &servers).await;
        max_behind = max_behind.max(behind);
        eprintln!(
            "overloaded for {:.0} s: leader {behind:.1} s behind",
            watch.elapsed().as_secs_f64()
        );
    }
    let overloaded_to = Timestamp::now();

    let deleting = Instant::now();
    let base = leader.base();
    // What was created beyond `low`; kept and judged below: j0 up to `low`.
    let low = shape.low.min(created);
    let (deleted, _) = send_all(
        client,
        (low..created).map(|i| format!("j{i}")).collect(),
        move |c, name| c.delete(format!("{base}/v1/jobs/{name}")),
        &[200, 404],
        "deletes",
        Some(DELETE_BOUND),
        None,
    )
    .await?;
    let delete_s = deleting.elapsed().as_secs_f64();

    let recovering = Instant::now();
    let mut in_a_row = 0;
    let mut recovered = None;
    while recovering.elapsed() < PHASE_BOUND {
        let behind = behind(client, &servers).await;
        max_behind = max_behind.max(behind);
        in_a_row = if behind <= ON_TIME_S { in_a_row + 1 } else { 0 };
        if in_a_row == 3 {
            recovered = Some(recovering.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let after_from = Timestamp::now();
    tokio::time::sleep(AFTER_WINDOW).await;
    let after_to = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kept: Vec<_> = sink
        .hits()
        .into_iter()
        .filter(|h| h.job[1..].parse::<usize>().is_ok_and(|i| i < low))
        .collect();
    let after = judge(
        &kept,
        low,
        SignedDuration::from_secs(every as i64),
        after_from,
        after_to,
    );

    // What became of the occurrences due while overloaded, for a sample of the kept jobs.
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for i in (0..low).step_by((low / SAMPLED_JOBS).max(1)) {
        let url = format!(
            "{}/v1/jobs/j{i}/occurrences?from={overloaded_from}&to={overloaded_to}&limit=1000",
            leader.base()
        );
        let Some(list) = crate::cluster::get_json(client, &url).await else {
            *outcomes.entry("unanswered".into()).or_default() += 1;
            continue;
        };
        for o in list.as_array().into_iter().flatten() {
            let outcome = o["outcome"].as_str().unwrap_or("?");
            let key = match o["reason"].as_str() {
                Some(reason) => format!("{outcome} {reason}"),
                None => outcome.to_string(),
            };
            *outcomes.entry(key).or_default() += 1;
        }
    }
    let mut alive = 0;
    for s in servers.iter_mut() {
        if let Some(child) = s.child.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            alive += 1;
        }
    }
    let leads = crate::cluster::leader_of(client, &servers).await.is_some();
    let outcomes: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    println!(
        "| overload: {} ({created} created; the rest shed) → {} jobs `@every {every}s` (catchup {}), {} servers, {} s overloaded | {alive} of {} servers running, leader {}; at most {max_behind:.1} s behind | occurrences while overloaded (sample): {} | {deleted} deletes in {delete_s:.0} s; on time {} after the last | then {} of {} due runs, {} duplicates, {} missing, p99 {:.0} ms |",
        shape.high,
        low,
        shape.catchup,
        shape.servers,
        shape.seconds,
        servers.len(),
        if leads { "answers" } else { "**missing**" },
        outcomes.join(", "),
        recovered.map_or("**not within 180 s**".to_string(), |s| format!("{s:.0} s")),
        after.runs,
        after.due,
        after.duplicates,
        after.missing,
        after.p99,
    );
    Ok(())
}

/// How far behind schedule the leader is: the largest `dkron_scheduler_behind_seconds` any
/// server reports (only the leader's is not zero).
async fn behind(client: &reqwest::Client, servers: &[Server]) -> f64 {
    let mut worst: f64 = 0.0;
    for s in servers {
        let Ok(r) = client
            .get(format!("{}/metrics", s.base()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        if let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix("dkron_scheduler_behind_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            worst = worst.max(v);
        }
    }
    worst
}
