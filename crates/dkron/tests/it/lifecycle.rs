//! Chaining, retries, ephemeral jobs and expiry.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::support::{SOON, TestNode, ZERO_TIME, shell_job, wait_until};

fn child(name: &str, parent: &str, command: &str) -> serde_json::Value {
    json!({
        "name": name,
        "parent_job": parent,
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_parent_triggers_its_child_once() {
    let node = TestNode::start().await;
    node.create(&shell_job("parent", "@every 1h", "echo parent"))
        .await;
    node.create(&child("child", "parent", "echo child")).await;
    node.run("parent").await;

    wait_until(SOON, "the child to finish", async || {
        let c = node.job("child").await;
        (c["success_count"] == 1 && node.get("/v1/busy").await.total_count() == Some(0))
            .then_some(())
    })
    .await;
    let parent_runs = node.executions("parent").await;
    let child_runs = node.executions("child").await;
    assert_eq!(parent_runs.len(), 1, "{parent_runs:#?}");
    assert_eq!(
        child_runs.len(),
        1,
        "the child ran more than once: {child_runs:#?}"
    );
    assert_eq!(child_runs[0]["output"], "child\n");
    assert_ne!(
        child_runs[0]["group"], parent_runs[0]["group"],
        "a child runs as its own group"
    );
    assert_eq!(node.job("parent").await["status"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_parent_does_not_trigger_its_child() {
    let node = TestNode::start().await;
    node.create(&shell_job("bad-parent", "@every 1h", "exit 1"))
        .await;
    node.create(&child("never-child", "bad-parent", "true"))
        .await;
    node.run("bad-parent").await;
    node.wait_finished("bad-parent", 1, SOON).await;
    // The parent's result is recorded before children would be triggered; give the (absent)
    // trigger the same bounded window a real one gets, using a sibling as the witness.
    node.create(&shell_job("witness", "@every 1h", "true"))
        .await;
    node.create(&child("witness-child", "witness", "true"))
        .await;
    node.run("witness").await;
    node.wait_finished("witness-child", 1, SOON).await;
    assert_eq!(node.executions("never-child").await.len(), 0);
    assert_eq!(node.job("bad-parent").await["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_with_one_retry_makes_two_attempts_in_one_group() {
    let node = TestNode::start().await;
    let mut job = shell_job("flaky", "@every 1h", "echo nope; exit 1");
    job["retries"] = json!(1);
    node.create(&job).await;
    node.run("flaky").await;

    let runs = node.wait_finished("flaky", 2, SOON).await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let mut attempts: Vec<u64> = runs
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    attempts.sort();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(runs[0]["group"], runs[1]["group"], "{runs:#?}");
    assert!(runs.iter().all(|e| e["success"] == false));
    let j = wait_until(SOON, "status failed", async || {
        let j = node.job("flaky").await;
        (j["status"] == "failed").then_some(j)
    })
    .await;
    assert_eq!(j["error_count"], 2, "{j:#}");
    assert_eq!(j["success_count"], 0);
}

/// Decision 8: a retry that succeeds is a success, and dependents run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_that_succeeds_is_a_success_and_triggers_the_child() {
    let node = TestNode::start().await;
    let marker = node.dir.path().join("second-attempt");
    let command = format!(
        "if [ -e '{0}' ]; then echo ok; else touch '{0}'; exit 1; fi",
        marker.display()
    );
    let mut job = shell_job("second-time-lucky", "@every 1h", &command);
    job["retries"] = json!(2);
    node.create(&job).await;
    node.create(&child("after-lucky", "second-time-lucky", "true"))
        .await;
    node.run("second-time-lucky").await;
    node.wait_finished("after-lucky", 1, SOON).await;
    let runs = node.executions("second-time-lucky").await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let j = node.job("second-time-lucky").await;
    assert_eq!(j["status"], "success", "{j:#}");
    assert_eq!(node.executions("after-lucky").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_job_is_deleted_after_a_successful_run() {
    let node = TestNode::start().await;
    let mut job = shell_job("one-shot", "@every 1h", "true");
    job["ephemeral"] = json!(true);
    node.create(&job).await;
    node.run("one-shot").await;
    wait_until(SOON, "the ephemeral job to be deleted", async || {
        (node.get("/v1/jobs/one-shot").await.status == 404).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_job_that_fails_is_kept() {
    let node = TestNode::start().await;
    let mut job = shell_job("one-shot-fail", "@every 1h", "exit 1");
    job["ephemeral"] = json!(true);
    node.create(&job).await;
    node.run("one-shot-fail").await;
    node.wait_finished("one-shot-fail", 1, SOON).await;
    let j = wait_until(SOON, "status failed", async || {
        let j = node.job("one-shot-fail").await;
        (j["status"] == "failed").then_some(j)
    })
    .await;
    assert_eq!(j["ephemeral"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_job_never_runs_on_its_own() {
    let node = TestNode::start().await;
    let past = dkron::clock::wall() - SignedDuration::from_hours(1);
    let mut expired = shell_job("expired", "@every 1s", "true");
    expired["expires_at"] = json!(past.to_string());
    let r = node.post("/v1/jobs", &expired).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.body["next"], ZERO_TIME, "{:#}", r.body);

    // A live twin on the same schedule is the clock: once it has fired twice, the expired
    // job has had two chances too.
    node.create(&shell_job("live", "@every 1s", "true")).await;
    node.wait_finished("live", 2, Duration::from_secs(8)).await;
    assert_eq!(node.executions("expired").await.len(), 0);
    assert_eq!(node.job("expired").await["next"], ZERO_TIME);
    assert_ne!(node.job("live").await["next"], ZERO_TIME);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_second_job_fires_repeatedly_with_scheduled_at() {
    let node = TestNode::start().await;
    node.create(&shell_job("ticker", "@every 1s", "true")).await;
    node.wait_finished("ticker", 2, Duration::from_secs(8))
        .await;
    // Every run (finished or not) belongs to one nominal tick; ticks are exactly 1 s apart.
    let mut scheduled: Vec<Timestamp> = node
        .executions("ticker")
        .await
        .iter()
        .map(|e| {
            e["scheduled_at"]
                .as_str()
                .unwrap_or_else(|| panic!("a scheduled run has scheduled_at: {e:#}"))
                .parse()
                .unwrap()
        })
        .collect();
    scheduled.sort();
    for pair in scheduled.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]),
            SignedDuration::from_secs(1),
            "{scheduled:?}"
        );
    }
}

/// Dependents go through the runnable checks (a disabled child is skipped), while a manual run
/// of a disabled child is allowed, as in Dkron.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_child_is_skipped_by_the_chain_but_runs_by_hand() {
    let node = TestNode::start().await;
    node.create(&shell_job("chain-root", "@every 1h", "true"))
        .await;
    let mut off = child("off-child", "chain-root", "echo manual");
    off["disabled"] = json!(true);
    node.create(&off).await;
    node.create(&child("on-child", "chain-root", "true")).await;
    node.run("chain-root").await;
    node.wait_finished("on-child", 1, SOON).await;
    assert_eq!(node.executions("off-child").await.len(), 0);

    node.run("off-child").await;
    let runs = node.wait_finished("off-child", 1, SOON).await;
    assert_eq!(runs[0]["output"], "manual\n");
}

/// Runs are claimed ahead of their nominal time, but the command itself must never start
/// before it: the shell prints the clock at start, which is compared with `scheduled_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_ahead_runs_never_start_before_their_nominal_time() {
    let node = TestNode::start().await;
    let mut job = shell_job("punctual", "@every 1s", "date -u +%s%N");
    job["executor_config"]["shell"] = json!("true");
    node.create(&job).await;
    let runs = node
        .wait_finished("punctual", 3, Duration::from_secs(10))
        .await;
    for run in runs.iter().filter(|r| r["success"] == json!(true)) {
        let scheduled: Timestamp = run["scheduled_at"]
            .as_str()
            .expect("scheduled_at")
            .parse()
            .unwrap();
        let printed: i128 = run["output"]
            .as_str()
            .expect("output")
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("date output: {run:#}"));
        assert!(
            printed >= scheduled.as_nanosecond(),
            "the command ran {} ns before its nominal time: {run:#}",
            scheduled.as_nanosecond() - printed
        );
    }
}

/// A manual run whose caller goes away (a client that hung up, a follower whose call timed
/// out) after its claim was queued still runs: the claim and the run belong to the leader,
/// not to the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_whose_caller_goes_away_still_runs() {
    let node = TestNode::start().await;
    node.create(&shell_job("abandoned", "@manually", "echo ran"))
        .await;
    let dispatch = node.h().dispatch();
    let mut run = Box::pin(dispatch.run_now("abandoned", None, None));
    // One poll takes the request as far as its first wait (the claim is queued by then),
    // then the caller drops it.
    std::future::poll_fn(|cx| {
        assert!(
            run.as_mut().poll(cx).is_pending(),
            "the claim cannot commit without a poll"
        );
        std::task::Poll::Ready(())
    })
    .await;
    drop(run);
    let runs = node.wait_finished("abandoned", 1, SOON).await;
    assert_eq!(runs[0]["success"], json!(true), "{runs:#?}");
    assert_eq!(runs[0]["output"], json!("ran\n"));
    assert_eq!(node.get("/v1/busy").await.total_count(), Some(0));
}
