//! The two seed jobs of the original deployment guide, posted verbatim (job2's `url` aside),
//! and the guide's misspelt time zone.

use std::time::Duration;

use jiff::Timestamp;

use crate::support::{Sink, TestNode, wait_until};

const JOB1: &str = include_str!("fixtures/seed-jobs/job1.json");
const JOB2: &str = include_str!("fixtures/seed-jobs/job2.json");
const JOB2_URL: &str = "\"https://www.google.com\"";

/// job2 exactly as shipped, except its `url`, pointed at a local sink (the seed README allows it).
fn job2_pointing_at(sink: &Sink) -> String {
    assert!(JOB2.contains(JOB2_URL), "the job2 fixture changed");
    JOB2.replace(JOB2_URL, &format!("\"{}\"", sink.url("/seed-job2")))
}

fn assert_future_time(value: &serde_json::Value, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let t: Timestamp = text
        .parse()
        .unwrap_or_else(|e| panic!("{what} {text:?} is not RFC 3339: {e}"));
    assert!(
        t > dkron::clock::wall(),
        "{what} {text} is not in the future"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_jobs_are_accepted_verbatim_without_content_type() {
    let node = TestNode::start().await;
    let sink = Sink::start().await;
    for (name, raw) in [
        ("job1", JOB1.to_string()),
        ("job2", job2_pointing_at(&sink)),
    ] {
        let r = node.post_raw("/v1/jobs", raw).await;
        assert_eq!(r.status, 201, "{name}: {r:#?}");
        assert_eq!(
            r.header("location"),
            Some(format!("/v1/jobs/{name}").as_str())
        );
        assert_eq!(r.body["id"], name, "the answer is the stored job");
        assert_eq!(r.body["name"], name);
        assert_eq!(r.body["timezone"], "Europe/Berlin");
        assert_eq!(r.body["metadata"]["user"], "12345");
        assert_future_time(&r.body["next"], &format!("{name}.next"));
    }
    let job2 = node.job("job2").await;
    assert_eq!(job2["retries"], 1);
    assert_eq!(job2["concurrency"], "forbid");
    assert_eq!(job2["executor_config"]["expectCode"], "200");
    assert_eq!(job2["executor_config"]["headers"], "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_jobs_are_found_by_metadata_filter() {
    let node = TestNode::start().await;
    let sink = Sink::start().await;
    assert_eq!(node.post_raw("/v1/jobs", JOB1).await.status, 201);
    assert_eq!(
        node.post_raw("/v1/jobs", job2_pointing_at(&sink))
            .await
            .status,
        201
    );
    node.create(&crate::support::shell_job("other", "@every 1h", "true"))
        .await;

    let r = node.get("/v1/jobs?metadata%5Buser%5D=12345").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.names(), ["job1", "job2"]);
    assert_eq!(r.total_count(), Some(2));

    let r = node.get("/v1/jobs?metadata%5Buser%5D=99999").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body, serde_json::json!([]));
    assert_eq!(r.total_count(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_job1_runs_date_successfully_on_its_schedule() {
    let node = TestNode::start().await;
    assert_eq!(node.post_raw("/v1/jobs", JOB1).await.status, 201);
    // `@every 10s`: the first fire is 10 s after creation.
    let runs = node.wait_finished("job1", 1, Duration::from_secs(25)).await;
    let run = runs
        .iter()
        .find(|e| crate::support::is_finished(e))
        .unwrap();
    assert_eq!(run["success"], true, "{run:#}");
    assert_eq!(run["node_name"], "test-node");
    assert!(
        run["output"].as_str().is_some_and(|o| !o.trim().is_empty()),
        "date printed nothing: {run:#}"
    );
    let job = node.job("job1").await;
    assert!(job["success_count"].as_u64() >= Some(1), "{job:#}");
    assert_eq!(job["status"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_job2_calls_its_url_with_dkron_headers_when_run() {
    let node = TestNode::start().await;
    let sink = Sink::start().await;
    assert_eq!(
        node.post_raw("/v1/jobs", job2_pointing_at(&sink))
            .await
            .status,
        201
    );
    let r = node.run("job2").await;
    assert_eq!(
        r.body["name"], "job2",
        "the run answer carries the job: {r:#?}"
    );

    let request = wait_until(
        Duration::from_secs(10),
        "job2 to call the sink",
        async || sink.requests().into_iter().next(),
    )
    .await;
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/seed-job2");
    let header = |n: &str| {
        request
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("header {n} missing from {request:#?}"))
            .to_string()
    };
    assert_eq!(header("x-dkron-job"), "job2");
    assert!(header("x-dkron-execution-id").ends_with("-test-node"));
    header("x-dkron-scheduled-time")
        .parse::<Timestamp>()
        .expect("X-Dkron-Scheduled-Time is RFC 3339");
    assert!(header("x-dkron-fencing-token").parse::<u64>().unwrap() >= 1);

    let runs = node.wait_finished("job2", 1, Duration::from_secs(10)).await;
    assert_eq!(runs[0]["success"], true, "{:#}", runs[0]);
    assert_eq!(
        runs[0]["id"].as_str().map(str::to_string),
        Some(header("x-dkron-execution-id"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelt_timezone_is_rejected_naming_the_field_and_stores_nothing() {
    let node = TestNode::start().await;
    let raw = JOB1.replace("Europe/Berlin", "Asis/Taipei");
    let r = node.post_raw("/v1/jobs", raw).await;
    assert_eq!(r.status, 400, "{r:#?}");
    assert!(r.error().contains("timezone"), "{r:#?}");
    assert!(r.error_fields().iter().any(|f| f == "timezone"), "{r:#?}");
    let r = node.get("/v1/jobs/job1").await;
    assert_eq!(r.status, 404, "{r:#?}");
    assert_eq!(node.get("/v1/jobs").await.total_count(), Some(0));
}
