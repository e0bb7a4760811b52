//! The fire ledger: occurrences that fell due while no leader ran the schedule are fired late,
//! once each, within the catch-up deadline; none is fired twice across restarts. Time "passes"
//! while the node is down by moving its clock forward, so nothing here waits for a schedule.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::support::{SOON, TestNode, shell_job, wait_until};

/// The nominal times of a job's scheduled runs, sorted.
async fn scheduled_times(node: &TestNode, job: &str) -> Vec<Timestamp> {
    let mut times: Vec<Timestamp> = node
        .executions(job)
        .await
        .iter()
        .filter_map(|e| e["scheduled_at"].as_str()?.parse().ok())
        .collect();
    times.sort();
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_occurrences_are_caught_up_once_and_old_ones_are_not() {
    let mut node = TestNode::start().await;
    let anchor = dkron::clock::Clock::now(&*node.clock);
    node.create(&shell_job("ten", "@every 10m", "true")).await;
    node.shutdown().await;

    // 35 minutes "pass" while the node is down: three occurrences fell due.
    node.clock.advance(Duration::from_secs(35 * 60));
    node.restart().await;
    let first = wait_until(SOON, "three catch-up runs", async || {
        let times = scheduled_times(&node, "ten").await;
        (times.len() >= 3).then_some(times)
    })
    .await;
    assert_eq!(first.len(), 3, "{first:?}");
    for (i, t) in first.iter().enumerate() {
        let expected_offset = SignedDuration::from_mins(10 * (i as i64 + 1));
        let off = t.duration_since(anchor) - expected_offset;
        assert!(
            off.abs() < SignedDuration::from_secs(5),
            "occurrence {i} at {t}, anchor {anchor}"
        );
    }

    // A restart at the same time owes nothing: the ledger is durable.
    node.restart().await;
    // Two hours later: only the occurrences at most an hour late are caught up (the deadline);
    // the six of the first hour are not run.
    node.shutdown().await;
    node.clock.advance(Duration::from_secs(2 * 3600));
    node.restart().await;
    let all = wait_until(SOON, "the catch-up within the deadline", async || {
        let times = scheduled_times(&node, "ten").await;
        (times.len() >= 9).then_some(times)
    })
    .await;
    // Give a wrongly fired extra occurrence the time it would need to show up.
    node.create(&shell_job("witness", "@every 1h", "true"))
        .await;
    node.run("witness").await;
    node.wait_finished("witness", 1, SOON).await;
    let all_again = scheduled_times(&node, "ten").await;
    assert_eq!(all, all_again, "no further runs after the catch-up");
    let mut dedup = all.clone();
    dedup.dedup();
    assert_eq!(dedup, all, "an occurrence ran twice: {all:?}");
    let late: Vec<i64> = all[3..]
        .iter()
        .map(|t| (t.duration_since(anchor).as_secs() + 150) / 600)
        .collect();
    // Now is anchor + 155 min: occurrences at 100..150 min are within an hour.
    assert_eq!(late, vec![10, 11, 12, 13, 14, 15], "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_policies_decide_and_the_occurrences_api_says_why() {
    let mut node = TestNode::start().await;
    let start = dkron::clock::Clock::now(&*node.clock);
    let mut latest = shell_job("latest", "@every 10m", "true");
    latest["catchup"] = "latest".into();
    let mut none = shell_job("none", "@every 10m", "true");
    none["catchup"] = "none".into();
    node.create(&latest).await;
    node.create(&none).await;
    node.create(&shell_job("all", "@every 10m", "true")).await;
    node.shutdown().await;
    node.clock.advance(Duration::from_secs(35 * 60));
    node.restart().await;
    wait_until(SOON, "the catch-up runs", async || {
        let all = scheduled_times(&node, "all").await.len();
        let latest = scheduled_times(&node, "latest").await.len();
        (all == 3 && latest == 1).then_some(())
    })
    .await;
    node.create(&shell_job("witness", "@every 1h", "true"))
        .await;
    node.run("witness").await;
    node.wait_finished("witness", 1, SOON).await;
    assert!(scheduled_times(&node, "none").await.is_empty());
    let latest_run = scheduled_times(&node, "latest").await[0];
    assert!(
        (latest_run.duration_since(start) - SignedDuration::from_mins(30)).abs()
            < SignedDuration::from_secs(5),
        "latest ran {latest_run}"
    );

    let (from, to) = (
        start + SignedDuration::from_mins(5),
        start + SignedDuration::from_mins(45),
    );
    let outcomes = |job: &'static str| node.outcomes(job, from, to);
    assert_eq!(
        outcomes("latest").await,
        [
            "skipped catchup_latest",
            "skipped catchup_latest",
            "ran",
            "pending"
        ]
    );
    assert_eq!(
        outcomes("none").await,
        [
            "skipped catchup_none",
            "skipped catchup_none",
            "skipped catchup_none",
            "pending"
        ]
    );
    assert_eq!(outcomes("all").await, ["ran", "ran", "ran", "pending"]);

    // Bad input is a 400 naming the field.
    let mut bad = shell_job("bad", "@every 1m", "true");
    bad["catchup"] = "sometimes".into();
    bad["catchup_deadline"] = "soon".into();
    let r = node.post("/v1/jobs", &bad).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_fields(), ["catchup", "catchup_deadline"]);
    let r = node.get("/v1/jobs/all/occurrences?from=yesterday").await;
    assert_eq!((r.status, r.body["field"].as_str()), (400, Some("from")));
    assert_eq!(node.get("/v1/jobs/nope/occurrences").await.status, 404);
}

/// The wall clock stepping back (an NTP correction) repeats no occurrence: the ledger has
/// them fired already, so the job waits until the clock passes them again, then goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepping_backwards_repeats_no_occurrence() {
    let node = TestNode::start().await;
    node.create(&shell_job("steady", "@every 1s", "true")).await;
    let before = wait_until(SOON, "three runs", async || {
        let times = scheduled_times(&node, "steady").await;
        (times.len() >= 3).then_some(times)
    })
    .await;
    node.clock.rewind(Duration::from_secs(4));
    let stepped_at = dkron::clock::Clock::now(&*node.clock);
    // Occurrences after the newest fired one, once the clock is past it again.
    let after = wait_until(Duration::from_secs(20), "runs after the step", async || {
        let times = scheduled_times(&node, "steady").await;
        (times.len() >= before.len() + 8).then_some(times)
    })
    .await;
    let mut distinct = after.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        after.len(),
        "an occurrence ran twice: {after:?}"
    );
    // Every second from the first to the last ran: none was skipped by the step either.
    let span = after.last().unwrap().duration_since(after[0]).as_secs();
    assert_eq!(span as usize + 1, after.len(), "{after:?}");
    assert!(*after.last().unwrap() > stepped_at, "{after:?}");
}
