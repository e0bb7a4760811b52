//! `/v1/jobs/:job/executions`: order, output truncation (UTF-8 safe), full output by id,
//! deleting executions, and unknown jobs.

use serde_json::{Value, json};

use crate::support::{SOON, TestNode, shell_job};

/// 3000 × `a` then `END\n`: 3004 bytes, more than the tail kept in the replicated record.
const BIG_OUTPUT_COMMAND: &str = "head -c 3000 /dev/zero | tr '\\0' a; echo END";

fn output(e: &Value) -> &str {
    // An empty output is omitted, as in Dkron.
    e["output"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_list_newest_first_by_default() {
    let node = TestNode::start().await;
    node.create(&shell_job("counter", "@every 1h", "echo run"))
        .await;
    node.run("counter").await;
    node.wait_finished("counter", 1, SOON).await;
    node.run("counter").await;
    node.wait_finished("counter", 2, SOON).await;

    let r = node.get("/v1/jobs/counter/executions").await;
    assert_eq!(r.total_count(), Some(2), "{r:#?}");
    let list = r.array();
    let started: Vec<&str> = list
        .iter()
        .map(|e| e["started_at"].as_str().unwrap())
        .collect();
    assert!(started[0] > started[1], "newest first: {started:?}");
    for e in list {
        assert_eq!(e["job_name"], "counter");
        assert_eq!(e["node_name"], "test-node");
        assert_eq!(e["attempt"], 1);
        assert_eq!(e["output_truncated"], false);
        assert!(e["id"].as_str().unwrap().ends_with("-test-node"), "{e:#}");
    }
    assert_ne!(
        list[0]["group"], list[1]["group"],
        "each run is its own group"
    );

    let asc = node.get("/v1/jobs/counter/executions?_order=ASC").await;
    assert_eq!(asc.array()[0]["id"], list[1]["id"]);
    let page = node
        .get("/v1/jobs/counter/executions?_start=0&_end=1")
        .await;
    assert_eq!(page.array().len(), 1, "{page:#?}");
    assert_eq!(page.array()[0]["id"], list[0]["id"]);
    assert_eq!(page.total_count(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_size_limit_keeps_the_last_bytes_and_show_returns_everything() {
    let node = TestNode::start().await;
    node.create(&shell_job("chatty", "@every 1h", BIG_OUTPUT_COMMAND))
        .await;
    node.run("chatty").await;
    node.wait_finished("chatty", 1, SOON).await;
    let expected = format!("{}END\n", "a".repeat(3000));

    let r = node
        .get("/v1/jobs/chatty/executions?output_size_limit=5")
        .await;
    assert_eq!(r.status, 200, "{r:#?}");
    let e = &r.array()[0];
    assert_eq!(output(e), "aEND\n");
    assert_eq!(e["output_truncated"], true);
    assert_eq!(e["success"], true);

    let untouched = node.get("/v1/jobs/chatty/executions").await;
    assert_eq!(output(&untouched.array()[0]), expected);
    assert_eq!(untouched.array()[0]["output_truncated"], false);
    let roomy = node
        .get("/v1/jobs/chatty/executions?output_size_limit=100000")
        .await;
    assert_eq!(roomy.array()[0]["output_truncated"], false);

    let id = e["id"].as_str().unwrap();
    let r = node.get(&format!("/v1/jobs/chatty/executions/{id}")).await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(output(&r.body), expected, "show returns the full output");
    assert!(r.body.get("output_truncated").is_none(), "{:#}", r.body);

    let r = node.get("/v1/jobs/chatty/executions/0-nowhere").await;
    assert_eq!(r.status, 404, "{r:#?}");
    assert!(!r.error().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_multibyte_output_never_splits_a_character() {
    let node = TestNode::start().await;
    node.create(&shell_job("accents", "@every 1h", "printf 'ééééé'"))
        .await;
    node.run("accents").await;
    let runs = node.wait_finished("accents", 1, SOON).await;
    let full = output(&runs[0]).to_string();
    assert_eq!(full, "ééééé");
    for limit in 0..=full.len() + 1 {
        let r = node
            .get(&format!(
                "/v1/jobs/accents/executions?output_size_limit={limit}"
            ))
            .await;
        assert!(r.is_json, "limit {limit}: not valid JSON/UTF-8: {r:#?}");
        let e = &r.array()[0];
        let cut = output(e);
        assert!(cut.len() <= limit, "limit {limit}: {cut:?} is too long");
        assert!(
            full.ends_with(cut),
            "limit {limit}: {cut:?} is not a suffix"
        );
        assert_eq!(
            e["output_truncated"],
            json!(limit < full.len()),
            "limit {limit}"
        );
        assert!(
            cut.len() + 1 >= limit.min(full.len()),
            "limit {limit}: {cut:?} dropped more than the split character"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_executions_empties_the_list_and_resets_counters() {
    let node = TestNode::start().await;
    node.create(&shell_job("wiped", "@every 1h", "echo x"))
        .await;
    node.run("wiped").await;
    node.wait_finished("wiped", 1, SOON).await;
    crate::support::wait_until(SOON, "success_count 1", async || {
        (node.job("wiped").await["success_count"] == 1).then_some(())
    })
    .await;

    let r = node.delete("/v1/jobs/wiped/executions").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body["name"], "wiped");
    assert_eq!(r.body["success_count"], 0);
    assert_eq!(r.body["error_count"], 0);
    assert_eq!(r.body["last_success"], Value::Null);
    let r = node.get("/v1/jobs/wiped/executions").await;
    assert_eq!(r.body, json!([]), "{r:#?}");
    assert_eq!(r.total_count(), Some(0));
    assert_eq!(node.job("wiped").await["success_count"], 0);
}

/// Dkron's prefix bug (decision 10): deleting `foo`'s executions must not touch `foo-bar`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_executions_matches_the_job_name_exactly() {
    let node = TestNode::start().await;
    for name in ["foo", "foo-bar"] {
        node.create(&shell_job(name, "@every 1h", "true")).await;
        node.run(name).await;
        node.wait_finished(name, 1, SOON).await;
    }
    assert_eq!(node.delete("/v1/jobs/foo/executions").await.status, 200);
    assert_eq!(node.executions("foo").await.len(), 0);
    assert_eq!(node.executions("foo-bar").await.len(), 1);
    assert_eq!(node.delete("/v1/jobs/foo").await.status, 200);
    assert_eq!(node.executions("foo-bar").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_of_a_missing_job_are_404() {
    let node = TestNode::start().await;
    for r in [
        node.get("/v1/jobs/ghost/executions").await,
        node.delete("/v1/jobs/ghost/executions").await,
        node.get("/v1/jobs/ghost/executions/1-x").await,
    ] {
        assert_eq!(r.status, 404, "{r:#?}");
        assert!(r.error().contains("ghost"), "{r:#?}");
    }
    node.create(&shell_job("quiet", "@every 1h", "true")).await;
    let r = node.get("/v1/jobs/quiet/executions").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, "[]");
}

/// `GET /v1/stats` (Dkron 4.1): each finished execution counted on its day, durable across a
/// restart; a bad `days` is a 400 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_each_day_successes_and_failures_durably() {
    let mut node = TestNode::start().await;
    node.create(&shell_job("good", "@manually", "true")).await;
    node.create(&shell_job("bad", "@manually", "false")).await;
    node.run("good").await;
    node.run("good").await;
    node.run("bad").await;
    node.wait_finished("good", 2, SOON).await;
    node.wait_finished("bad", 1, SOON).await;
    let check = async |node: &TestNode| {
        let r = node.get("/v1/stats?days=3").await;
        assert_eq!(r.status, 200, "{r:#?}");
        let days = r.body["stats"].as_array().unwrap().clone();
        assert_eq!(days.len(), 3, "{r:#?}");
        let today = days.last().unwrap();
        assert_eq!(today["success_count"], 2, "{r:#?}");
        assert_eq!(today["failed_count"], 1, "{r:#?}");
        assert!(today["date"].as_str().unwrap().ends_with("T00:00:00Z"));
        assert_eq!(days[0]["success_count"], 0);
    };
    check(&node).await;
    node.restart().await;
    check(&node).await;
    assert_eq!(
        node.get("/v1/stats").await.body["stats"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    for bad in ["0", "366", "many"] {
        let r = node.get(&format!("/v1/stats?days={bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {r:#?}");
        assert_eq!(r.body["field"], "days");
    }
}

/// Stopping a run (Dkron #989, #1483): the run's process ends at once, the execution is
/// failed with who stopped it and is not retried, and a `forbid` job can run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_execution_can_be_stopped_and_is_not_retried() {
    let node = TestNode::start().await;
    let mut job = shell_job("stoppable", "@manually", "sleep 30");
    job["concurrency"] = json!("forbid");
    job["retries"] = json!(2);
    node.create(&job).await;
    node.run("stoppable").await;
    let running = crate::support::wait_until(SOON, "the run to be going", async || {
        let busy = node.get("/v1/busy").await;
        busy.array().first().cloned()
    })
    .await;
    let id = running["id"].as_str().unwrap().to_string();
    // Still going: a second run of the forbid job is refused.
    assert_eq!(node.post_empty("/v1/jobs/stoppable/run").await.status, 409);
    let r = node
        .post_empty(&format!("/v1/jobs/stoppable/executions/{id}/stop"))
        .await;
    assert_eq!(r.status, 200, "{r:#?}");
    let runs = node.wait_finished("stoppable", 1, SOON).await;
    assert_eq!(runs.len(), 1, "not retried: {runs:#?}");
    assert_eq!(runs[0]["success"], false);
    assert!(
        output(&runs[0]).contains("stopped through the API"),
        "{runs:#?}"
    );
    assert_eq!(node.job("stoppable").await["status"], "failed");
    // Stopped once is finished: a second stop is a 409, an unknown id a 404.
    let again = node
        .post_empty(&format!("/v1/jobs/stoppable/executions/{id}/stop"))
        .await;
    assert_eq!(again.status, 409, "{again:#?}");
    let unknown = node
        .post_empty("/v1/jobs/stoppable/executions/nope/stop")
        .await;
    assert_eq!(unknown.status, 404, "{unknown:#?}");
    // forbid is free again.
    assert_eq!(node.post_empty("/v1/jobs/stoppable/run").await.status, 200);
}

/// A run with one-off parameters (Dkron #578): merged into that run only, recorded on its
/// execution; what does not fit the executor is a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_parameters_changes_that_run_only() {
    let node = TestNode::start().await;
    let mut job = shell_job("deploy", "@manually", "echo target=$TARGET mode=$MODE");
    job["executor_config"]["env"] = json!("TARGET=prod,MODE=safe");
    node.create(&job).await;

    let r = node
        .post(
            "/v1/jobs/deploy/run",
            &json!({"env": {"TARGET": "staging"}, "executor_config": {"timeout": "10s"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:#?}");
    let runs = node.wait_finished("deploy", 1, SOON).await;
    assert_eq!(
        output(&runs[0]).trim(),
        "target=staging mode=safe",
        "{runs:#?}"
    );
    assert_eq!(
        runs[0]["parameters"],
        json!({"env": {"TARGET": "staging"}, "executor_config": {"timeout": "10s"}})
    );
    // The job itself is unchanged, and the next plain run uses it.
    assert_eq!(
        node.job("deploy").await["executor_config"]["env"],
        "TARGET=prod,MODE=safe"
    );
    node.run("deploy").await;
    let runs = node.wait_finished("deploy", 2, SOON).await;
    assert_eq!(
        output(&runs[0]).trim(),
        "target=prod mode=safe",
        "{runs:#?}"
    );
    assert!(runs[0].get("parameters").is_none(), "{runs:#?}");
    // An empty body and `{}` are plain runs, as Dkron (which ignores the body) has them.
    assert_eq!(node.post_raw("/v1/jobs/deploy/run", "").await.status, 200);
    assert_eq!(
        node.post("/v1/jobs/deploy/run", &json!({})).await.status,
        200
    );

    let bad = [
        (json!({"environment": {}}), "environment"),
        (json!({"env": {"A": 1}}), "env.A"),
        (json!({"env": {"A": "x,y"}}), "env.A"),
        (
            json!({"env": {"DKRON_FENCING_TOKEN": "1"}}),
            "env.DKRON_FENCING_TOKEN",
        ),
        (
            json!({"executor_config": {"timeout": "forever"}}),
            "executor_config.timeout",
        ),
        (
            json!({"executor_config": {"command": ""}}),
            "executor_config.command",
        ),
    ];
    for (body, field) in bad {
        let r = node.post("/v1/jobs/deploy/run", &body).await;
        assert_eq!(r.status, 400, "{body}: {r:#?}");
        let fields = r.error_fields();
        let named = fields.iter().any(|f| f == field) || r.body["field"] == field;
        assert!(named, "{body} names {field}: {r:#?}");
    }
    node.create(
        &json!({"name": "hook", "schedule": "@manually", "executor": "http",
        "executor_config": {"url": "http://127.0.0.1:9/", "method": "GET"}}),
    )
    .await;
    let r = node
        .post("/v1/jobs/hook/run", &json!({"env": {"A": "1"}}))
        .await;
    assert_eq!(r.status, 400, "{r:#?}");
    assert_eq!(r.error_fields(), ["env"], "{r:#?}");
    // Refused runs ran nothing.
    assert_eq!(node.executions("deploy").await.len(), 4);
}

/// Dkron renders a job's times, and its executions', in the job's zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_are_rendered_in_the_jobs_zone() {
    let node = TestNode::start().await;
    let mut job = shell_job("berlin", "0 0 9 * * *", "true");
    job["timezone"] = json!("Europe/Berlin");
    job["starts_at"] = json!("2025-01-01T10:00:00Z");
    node.create(&job).await;
    node.create(&shell_job("utc", "0 0 9 * * *", "true")).await;
    node.run("berlin").await;
    node.run("utc").await;
    let berlin = node.wait_finished("berlin", 1, SOON).await;
    node.wait_finished("utc", 1, SOON).await;

    let offset_of = |t: &Value| -> String {
        let t = t.as_str().unwrap();
        t[t.len() - 6..].to_string()
    };
    let is_berlin = |t: &Value| matches!(offset_of(t).as_str(), "+01:00" | "+02:00");
    let shown = node.job("berlin").await;
    assert_eq!(shown["starts_at"], "2025-01-01T11:00:00+01:00", "{shown:#}");
    assert!(is_berlin(&shown["next"]), "{shown:#}");
    assert!(is_berlin(&shown["last_success"]), "{shown:#}");
    assert!(is_berlin(&berlin[0]["started_at"]), "{berlin:#?}");
    assert!(is_berlin(&berlin[0]["finished_at"]), "{berlin:#?}");
    let id = berlin[0]["id"].as_str().unwrap();
    let one = node.get(&format!("/v1/jobs/berlin/executions/{id}")).await;
    assert!(is_berlin(&one.body["started_at"]), "{one:#?}");
    let listed = node.get("/v1/jobs").await;
    let in_list = listed
        .array()
        .iter()
        .find(|j| j["name"] == "berlin")
        .unwrap();
    assert!(is_berlin(&in_list["next"]), "{listed:#?}");
    // The same instants: parsing gives what a UTC rendering would.
    let utc: jiff::Timestamp = "2025-01-01T10:00:00Z".parse().unwrap();
    let read: jiff::Timestamp = shown["starts_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(read, utc);
    // Jobs without a zone stay in UTC, and the zero time stays the zero time.
    let plain = node.job("utc").await;
    assert!(
        plain["last_success"].as_str().unwrap().ends_with('Z'),
        "{plain:#}"
    );
    assert_eq!(shown["last_error"], Value::Null);
}
