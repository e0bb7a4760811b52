//! `concurrency: forbid` refuses overlapping runs (409); `allow` lets them overlap, and
//! `/v1/busy` shows every running execution; `replace` stops the running one for the new one.

use std::time::Duration;

use serde_json::json;

use crate::support::{SOON, TestNode, shell_job, wait_until};

/// Waits until `/v1/busy` lists `n` running executions of `job` and returns them.
async fn wait_busy(node: &TestNode, job: &str, n: usize) -> Vec<serde_json::Value> {
    wait_until(
        SOON,
        &format!("{n} running execution(s) of {job}"),
        async || {
            let r = node.get("/v1/busy").await;
            assert_eq!(r.status, 200, "{r:#?}");
            let running: Vec<_> = r
                .array()
                .iter()
                .filter(|e| e["job_name"] == job)
                .cloned()
                .collect();
            (running.len() == n && r.total_count() == Some(n)).then_some(running)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_job_refuses_a_second_run_while_the_first_runs() {
    let node = TestNode::start().await;
    let mut job = shell_job("single", "@every 1h", "sleep 3");
    job["concurrency"] = json!("forbid");
    node.create(&job).await;

    node.run("single").await;
    let running = wait_busy(&node, "single", 1).await;
    assert_eq!(running[0]["finished_at"], crate::support::ZERO_TIME);

    let r = node.post_empty("/v1/jobs/single/run").await;
    assert_eq!(r.status, 409, "{r:#?}");
    assert!(r.error().contains("already running"), "{r:#?}");
    assert_eq!(r.body["job"], "single");

    // Once the first run is over, the job runs again.
    node.wait_finished("single", 1, SOON).await;
    wait_busy(&node, "single", 0).await;
    node.run("single").await;
    let all = node.wait_finished("single", 2, SOON).await;
    assert_eq!(all.len(), 2, "the refused run left a record: {all:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_job_runs_twice_at_once() {
    let node = TestNode::start().await;
    node.create(&shell_job("overlap", "@every 1h", "sleep 3"))
        .await;
    node.run("overlap").await;
    wait_busy(&node, "overlap", 1).await;
    node.run("overlap").await;
    let running = wait_busy(&node, "overlap", 2).await;
    assert_ne!(running[0]["id"], running[1]["id"]);
    assert!(
        running[0]["started_at"].as_str() <= running[1]["started_at"].as_str(),
        "busy is oldest first: {running:#?}"
    );
    let all = node
        .wait_finished("overlap", 2, Duration::from_secs(15))
        .await;
    assert!(all.iter().all(|e| e["success"] == true), "{all:#?}");
}

/// Decision 7: `forbid` holds for scheduled runs too: runs of a job slower than its schedule
/// never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_job_on_a_fast_schedule_never_overlaps() {
    let node = TestNode::start().await;
    let mut job = shell_job("slow-tick", "@every 1s", "sleep 1.5");
    job["concurrency"] = json!("forbid");
    node.create(&job).await;
    node.wait_finished("slow-tick", 2, Duration::from_secs(10))
        .await;
    let mut spans: Vec<(String, String)> = node
        .executions("slow-tick")
        .await
        .iter()
        .map(|e| {
            let end = if crate::support::is_finished(e) {
                e["finished_at"].as_str().unwrap().to_string()
            } else {
                "9999".to_string()
            };
            (e["started_at"].as_str().unwrap().to_string(), end)
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let a_end: jiff::Timestamp = a.1.parse().unwrap();
        let b_start: jiff::Timestamp = b.0.parse().unwrap();
        assert!(a_end <= b_start, "runs overlap: {spans:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_job_stops_the_running_one_for_the_new_one() {
    let node = TestNode::start().await;
    let mut job = shell_job("replaced", "@manually", "echo started; sleep 30");
    job["concurrency"] = json!("replace");
    node.create(&job).await;
    assert_eq!(node.run("replaced").await.status, 200);
    let first = wait_busy(&node, "replaced", 1).await;
    assert_eq!(node.run("replaced").await.status, 200);
    let runs = wait_until(SOON, "the first run to be stopped", async || {
        let runs = node.executions("replaced").await;
        runs.iter()
            .find(|e| e["id"] == first[0]["id"] && crate::support::is_finished(e))
            .cloned()
    })
    .await;
    assert_eq!(runs["success"], json!(false));
    let output = runs["output"].as_str().unwrap();
    assert!(output.contains("replaced by a newer run"), "{output}");
    let still = wait_busy(&node, "replaced", 1).await;
    assert_ne!(
        still[0]["id"], first[0]["id"],
        "the new run is the one going"
    );
}
