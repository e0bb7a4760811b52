//! `dkron-bench scale N EVERY_S SECONDS SERVERS`: N http jobs `@every EVERY_S s` on a
//! loopback cluster of SERVERS release servers, created through the leader at whatever pace
//! it acknowledges them (so their phases spread), then watched for SECONDS.
//!
//! Judged from the sink, by each run's nominal time (`X-Dkron-Scheduled-Time`): lateness
//! (arrival minus nominal) overall and per 10 s of nominal time, so a node falling behind
//! shows as a trend; duplicates (a job's nominal time reached twice); missing occurrences
//! (nominal times of a job's phase inside the window that never arrived). Also: creates/s
//! while the jobs are created and again while they all fire, every server's RSS, and the
//! leader's CPU over the window.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::cluster::{Server, leader_of, start_cluster};
use crate::percentile;
use crate::sink::{Hit, Sink};

/// Linux's USER_HZ, the unit of /proc/<pid>/stat's CPU times, on every mainstream kernel.
pub const TICKS_PER_SECOND: f64 = 100.0;
/// Lateness buckets, by nominal time.
const BUCKET: SignedDuration = SignedDuration::from_secs(10);
/// How long creates while the jobs fire are tried, at most.
const CREATE_WHILE_FIRING_FOR: Duration = Duration::from_secs(60);
/// How long after the window's end a run may still arrive before it counts as missing.
const GRACE: Duration = Duration::from_secs(5);

pub struct Shape {
    pub jobs: usize,
    pub every_s: u64,
    pub seconds: u64,
    pub servers: usize,
}

pub async fn bench(client: &reqwest::Client, shape: Shape) -> anyhow::Result<()> {
    // Kept afterwards: the servers' logs are what to read when a run goes wrong.
    let root = tempfile::tempdir()?.keep();
    eprintln!("servers' data and logs in {}", root.display());
    let servers = start_cluster(client, &root, "s", shape.servers).await?;
    let sink = Sink::start().await?;
    let leader = leader(client, &servers).await?;

    let every = shape.every_s;
    let jobs: Vec<Value> = (0..shape.jobs)
        .map(|i| fire_job(&format!("j{i}"), every, &sink.url()))
        .collect();
    let pace = spread_rate(shape.jobs, every);
    let (_, created) = create_paced(client, leader, jobs, "jobs", None, Some(pace)).await?;

    // One whole period for every job to have its first run behind it.
    tokio::time::sleep(Duration::from_secs(every + 2)).await;
    let cpu_before = leader.cpu_ticks()?;
    let from = Timestamp::now();
    let watch = Instant::now();
    tokio::time::sleep(Duration::from_secs(shape.seconds)).await;
    let to = Timestamp::now();
    let leader_cpu = (leader.cpu_ticks()? - cpu_before) as f64
        / TICKS_PER_SECOND
        / watch.elapsed().as_secs_f64();
    // With N jobs, before the creates below add a quarter more.
    let rss_watched = crate::cluster::rss_of(&servers);

    // Creates while everything fires: jobs that never fire, so the load stays the same.
    let extra: Vec<Value> = (0..(shape.jobs / 4).clamp(1000, 5000))
        .map(|i| {
            json!({"name": format!("x{i}"), "schedule": "@manually", "executor": "shell",
                        "executor_config": {"command": "true"}})
        })
        .collect();
    // Bounded: a leader that sheds every client write (503) must not hold the bench forever.
    let created_while_firing = create(
        client,
        leader,
        extra,
        "jobs while firing",
        Some(CREATE_WHILE_FIRING_FOR),
    )
    .await?;
    tokio::time::sleep(GRACE).await;

    let rss = crate::cluster::rss_of(&servers);
    let judged = judge(
        &sink.hits(),
        shape.jobs,
        SignedDuration::from_secs(every as i64),
        from,
        to,
    );
    // What tells a double run's cause: one execution id twice (a node ran one order twice),
    // or two ids (the occurrence was claimed twice), and by which leaders' terms.
    for (job, scheduled, runs) in duplicated(&sink.hits()).into_iter().take(10) {
        println!("duplicate: job {job} at {scheduled}: {}", runs.join(", "));
    }
    let trend: Vec<String> = judged
        .p99_by_bucket
        .iter()
        .map(|ms| format!("{ms:.0}"))
        .collect();
    println!(
        "| scale: {} jobs `@every {every}s`, {} servers, {} s watched | {} of {} due runs, **{} duplicates, {} missing**, {} jobs never seen | lateness p50 {:.1} ms, **p99 {:.1} ms**, max {:.1} ms; p99 per 10 s of nominal time: {} ms | RSS {} after the watch, {} after the creates while firing; leader CPU {:.0} % | creates {:.0}/s (paced at {pace:.0}/s to spread phases), {:.0}/s while firing |",
        shape.jobs,
        shape.servers,
        shape.seconds,
        judged.runs,
        judged.due,
        judged.duplicates,
        judged.missing,
        judged.jobs_unseen,
        judged.p50,
        judged.p99,
        judged.max,
        trend.join(" / "),
        rss_watched,
        rss,
        leader_cpu * 100.0,
        created,
        created_while_firing,
    );
    Ok(())
}

/// Occurrences that arrived more than once: job, nominal time, and each arrival's run and
/// arrival time.
fn duplicated(hits: &[Hit]) -> Vec<(String, Timestamp, Vec<String>)> {
    let mut by: std::collections::BTreeMap<(&str, Timestamp), Vec<&Hit>> = Default::default();
    for h in hits {
        by.entry((h.job.as_str(), h.scheduled)).or_default().push(h);
    }
    by.into_iter()
        .filter(|(_, hs)| hs.len() > 1)
        .map(|((job, at), hs)| {
            let runs = hs
                .iter()
                .map(|h| format!("{} arrived {}", h.run, h.arrived));
            (job.to_string(), at, runs.collect())
        })
        .collect()
}

pub fn fire_job(name: &str, every_s: u64, sink: &str) -> Value {
    json!({
        "name": name,
        "schedule": format!("@every {every_s}s"),
        "tags": {"server": "true:1"},
        "executor": "http",
        "executor_config": {"method": "GET", "url": sink, "timeout": "30", "expectCode": "200"}
    })
}

pub async fn leader<'a>(
    client: &reqwest::Client,
    servers: &'a [Server],
) -> anyhow::Result<&'a Server> {
    let name = leader_of(client, servers).await.context("no leader")?;
    servers
        .iter()
        .find(|s| s.name == name)
        .context("the leader is not one of ours")
}

/// Creates `jobs` through `server` ([`send_all`]); answers creates per second.
pub async fn create(
    client: &reqwest::Client,
    server: &Server,
    jobs: Vec<Value>,
    what: &str,
    bound: Option<Duration>,
) -> anyhow::Result<f64> {
    Ok(create_paced(client, server, jobs, what, bound, None)
        .await?
        .1)
}

/// [`create`], starting at most `pace` creates a second; answers how many were created, and
/// creates per second.
pub async fn create_paced(
    client: &reqwest::Client,
    server: &Server,
    jobs: Vec<Value>,
    what: &str,
    bound: Option<Duration>,
    pace: Option<f64>,
) -> anyhow::Result<(usize, f64)> {
    let url = format!("{}/v1/jobs", server.base());
    let (created, seconds) = send_all(
        client,
        jobs,
        move |c, job| c.post(&url).json(job),
        &[201],
        what,
        bound,
        pace,
    )
    .await?;
    Ok((created, created as f64 / seconds))
}

/// The create rate that spreads `n` jobs `@every every_s` evenly over their period: an
/// `@every` job's phase is the moment it was created, so `n` jobs created as fast as the
/// leader takes them (3,800/s) ran 10,000 jobs' 2,000 runs a second as 4,000 a second for
/// 2.6 s of every 5 and none for the rest. Whole periods, at most 2,000 creates a second.
pub fn spread_rate(n: usize, every_s: u64) -> f64 {
    let per_period = (n as f64 / every_s.max(1) as f64).max(1.0);
    let periods = (per_period / 2000.0).ceil();
    per_period / periods
}

/// Sends one request per item, in order, made by `request`, with 64 in flight (the `i`-th not before
/// `i / pace` seconds, given a pace), retrying a 503 after its `Retry-After`, until each is
/// answered with a status in `ok` or `bound` passed (then the rest are given up); answers how
/// many were answered `ok`, and in how many seconds. Progress on stderr every 5 s.
pub async fn send_all<T: Send + 'static>(
    client: &reqwest::Client,
    items: Vec<T>,
    request: impl Fn(&reqwest::Client, &T) -> reqwest::RequestBuilder + Send + Sync + 'static,
    ok: &'static [u16],
    what: &str,
    bound: Option<Duration>,
    pace: Option<f64>,
) -> anyhow::Result<(usize, f64)> {
    let total = items.len();
    let queue = Arc::new(tokio::sync::Mutex::new(std::collections::VecDeque::from(
        items,
    )));
    let request = Arc::new(request);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (queue, done, client, request) =
            (queue.clone(), done.clone(), client.clone(), request.clone());
        workers.spawn(async move {
            loop {
                let (i, item) = {
                    let mut queue = queue.lock().await;
                    let i = total - queue.len();
                    match queue.pop_front() {
                        Some(item) => (i, item),
                        None => return Ok::<(), anyhow::Error>(()),
                    }
                };
                if let Some(pace) = pace {
                    let at = started + Duration::from_secs_f64(i as f64 / pace);
                    tokio::time::sleep_until(at.into()).await;
                }
                loop {
                    let r = request(&client, &item).send().await?;
                    match r.status().as_u16() {
                        status if ok.contains(&status) => break,
                        503 => {
                            let wait = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<f64>().ok())
                                .unwrap_or(0.1);
                            tokio::time::sleep(Duration::from_secs_f64(wait.min(5.0))).await;
                        }
                        status => bail!("answered {status}: {}", r.text().await?),
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let give_up = tokio::time::sleep(bound.unwrap_or(Duration::MAX));
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            next = workers.join_next() => match next {
                Some(result) => result??,
                None => break,
            },
            _ = tick.tick() => eprintln!(
                "{} of {total} {what} in {:.0} s",
                done.load(std::sync::atomic::Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            ),
            () = &mut give_up => {
                eprintln!("gave up on {what} after {:.0} s", started.elapsed().as_secs_f64());
                workers.abort_all();
                break;
            }
        }
    }
    let answered = done.load(std::sync::atomic::Ordering::Relaxed);
    Ok((answered, started.elapsed().as_secs_f64()))
}

/// What the sink saw of N jobs `@every` over `[from, to)`.
#[derive(Debug, PartialEq)]
pub struct Judged {
    pub due: usize,
    /// Distinct (job, nominal time) pairs that arrived.
    pub runs: usize,
    pub duplicates: usize,
    pub missing: usize,
    /// Jobs with no run at all (their phase unknown: each counts a whole window missing).
    pub jobs_unseen: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Lateness p99 (ms) per [`BUCKET`] of nominal time from `from`.
    pub p99_by_bucket: Vec<f64>,
}

/// Judges `hits` of `jobs` jobs running `@every every`: a job's phase comes from any of its
/// runs (an `@every` occurrence is its anchor plus a whole number of periods), so the
/// nominal times due inside the window are known and each is due exactly once.
pub fn judge(
    hits: &[Hit],
    jobs: usize,
    every: SignedDuration,
    from: Timestamp,
    to: Timestamp,
) -> Judged {
    let step = every.as_nanos().max(1);
    let (from_ns, to_ns) = (from.as_nanosecond(), to.as_nanosecond());
    let mut phase: BTreeMap<&str, i128> = BTreeMap::new();
    let mut seen: BTreeMap<(&str, Timestamp), usize> = BTreeMap::new();
    let mut lateness = Vec::new();
    let mut buckets: BTreeMap<i128, Vec<f64>> = BTreeMap::new();
    for hit in hits {
        phase
            .entry(hit.job.as_str())
            .or_insert(hit.scheduled.as_nanosecond().rem_euclid(step));
        if hit.scheduled < from || hit.scheduled >= to {
            continue;
        }
        *seen.entry((hit.job.as_str(), hit.scheduled)).or_default() += 1;
        let ms = hit.arrived.duration_since(hit.scheduled).as_secs_f64() * 1000.0;
        lateness.push(ms);
        let bucket = (hit.scheduled.as_nanosecond() - from_ns) / BUCKET.as_nanos();
        buckets.entry(bucket).or_default().push(ms);
    }
    // Nominal times k·step + phase in [from, to).
    let due_with = |phase: i128| {
        let first = from_ns + (phase - from_ns).rem_euclid(step);
        if first >= to_ns {
            0
        } else {
            ((to_ns - 1 - first) / step + 1) as usize
        }
    };
    let due_of_seen: usize = phase.values().map(|p| due_with(*p)).sum();
    let jobs_unseen = jobs.saturating_sub(phase.len());
    let window_periods = ((to_ns - from_ns) / step) as usize;
    let due = due_of_seen + jobs_unseen * window_periods;
    let runs = seen.len();
    lateness.sort_by(f64::total_cmp);
    let p99_by_bucket = buckets
        .into_values()
        .map(|mut ms| {
            ms.sort_by(f64::total_cmp);
            percentile(&ms, 0.99)
        })
        .collect();
    Judged {
        due,
        runs,
        duplicates: seen.values().map(|n| n - 1).sum(),
        missing: due.saturating_sub(runs),
        jobs_unseen,
        p50: percentile(&lateness, 0.5),
        p99: percentile(&lateness, 0.99),
        max: lateness.last().copied().unwrap_or(f64::NAN),
        p99_by_bucket,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64, ms: i64) -> Timestamp {
        Timestamp::from_millisecond(s * 1000 + ms).unwrap()
    }

    fn hit(job: &str, scheduled: Timestamp, late_ms: i64) -> Hit {
        Hit {
            job: job.into(),
            scheduled,
            arrived: scheduled + SignedDuration::from_millis(late_ms),
            run: String::new(),
        }
    }

    /// Two jobs every 5 s over [100 s, 120 s): phases .250 and .900, four due each.
    fn clean() -> Vec<Hit> {
        let mut hits = Vec::new();
        for k in 0..4 {
            hits.push(hit("a", t(100 + 5 * k, 250), 10));
            hits.push(hit("b", t(100 + 5 * k, 900), 20));
        }
        // Outside the window: judged for the phase only.
        hits.push(hit("a", t(95, 250), 5000));
        hits
    }

    fn judged(hits: &[Hit], jobs: usize) -> Judged {
        judge(
            hits,
            jobs,
            SignedDuration::from_secs(5),
            t(100, 0),
            t(120, 0),
        )
    }

    #[test]
    fn creates_are_paced_over_whole_periods() {
        // 10,000 jobs `@every 5s`: one period at 2,000/s; twice that, two periods.
        assert_eq!(spread_rate(10_000, 5), 2000.0);
        assert_eq!(spread_rate(20_000, 5), 2000.0);
        assert_eq!(spread_rate(1_000, 5), 200.0);
        assert_eq!(spread_rate(30_000, 5), 2000.0);
        assert_eq!(spread_rate(25_000, 5), 5000.0 / 3.0);
        assert_eq!(spread_rate(0, 0), 1.0);
    }

    #[test]
    fn every_due_run_once_is_clean() {
        let j = judged(&clean(), 2);
        assert_eq!(
            (j.due, j.runs, j.duplicates, j.missing, j.jobs_unseen),
            (8, 8, 0, 0, 0)
        );
        assert_eq!(
            j.max, 20.0,
            "the run before the window is not judged for lateness"
        );
        assert_eq!(j.p99_by_bucket.len(), 2);
    }

    #[test]
    fn a_second_arrival_is_a_duplicate() {
        let mut hits = clean();
        hits.push(hit("b", t(110, 900), 3000));
        let j = judged(&hits, 2);
        assert_eq!((j.runs, j.duplicates, j.missing), (8, 1, 0));
        assert_eq!(j.max, 3000.0);
        let dups = duplicated(&hits);
        assert_eq!(dups.len(), 1);
        assert_eq!((dups[0].0.as_str(), dups[0].1), ("b", t(110, 900)));
        assert_eq!(dups[0].2.len(), 2);
    }

    #[test]
    fn a_gap_in_a_phase_is_missing() {
        let mut hits = clean();
        hits.retain(|h| !(h.job == "a" && h.scheduled == t(110, 250)));
        let j = judged(&hits, 2);
        assert_eq!((j.due, j.runs, j.missing), (8, 7, 1));
    }

    #[test]
    fn a_job_never_seen_misses_the_whole_window() {
        let j = judged(&clean(), 3);
        assert_eq!((j.due, j.missing, j.jobs_unseen), (12, 4, 1));
    }

    #[test]
    fn lateness_is_bucketed_by_nominal_time_not_arrival() {
        let mut hits = clean();
        // Nominal 105.250 arriving 9 s late lands in the first bucket.
        hits.retain(|h| !(h.job == "a" && h.scheduled == t(105, 250)));
        hits.push(hit("a", t(105, 250), 9000));
        let j = judged(&hits, 2);
        assert_eq!(j.p99_by_bucket[0], 9000.0);
        assert_eq!(j.p99_by_bucket[1], 20.0);
    }
}
