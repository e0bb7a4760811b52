//! What survives a restart: a clean in-process shutdown, and SIGKILL of the real binary.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Agent, SOON, TestNode, dkron_command, free_port, is_finished, shell_job, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_executions_counters_and_pause_survive_a_restart() {
    let mut node = TestNode::start().await;
    node.create(&shell_job("ticker", "@every 2s", "echo tick"))
        .await;
    node.create(&shell_job("manual", "@every 1h", "echo kept"))
        .await;
    node.create(&json!({"name": "manual-child", "parent_job": "manual",
        "executor": "shell", "executor_config": {"command": "true"}}))
        .await;
    node.run("manual").await;
    node.wait_finished("manual-child", 1, SOON).await;
    assert_eq!(node.post_empty("/v1/pause").await.status, 200);
    let before = node.job("manual").await;
    let manual_runs = node.executions("manual").await;

    // Stop right after a tick has finished, far from the next one: a run in flight at
    // shutdown keeps the data dir locked (see shutdown_with_a_run_in_flight_releases_the_data_dir).
    let seen = node.executions("ticker").await.len();
    let ticks_before = wait_until(
        Duration::from_secs(6),
        "a fresh, finished tick",
        async || {
            let ticks = node.executions("ticker").await;
            let idle = node.get("/v1/busy").await.total_count() == Some(0);
            (ticks.len() > seen && idle && ticks.iter().all(is_finished)).then_some(ticks.len())
        },
    )
    .await;

    node.restart().await;

    let after = node.job("manual").await;
    for key in [
        "success_count",
        "error_count",
        "last_success",
        "status",
        "dependent_jobs",
        "executor_config",
    ] {
        assert_eq!(after[key], before[key], "{key} changed across the restart");
    }
    assert_eq!(node.executions("manual").await, manual_runs);
    assert_eq!(node.executions("manual-child").await.len(), 1);
    let manual_id = manual_runs[0]["id"].as_str().unwrap();
    let shown = node
        .get(&format!("/v1/jobs/manual/executions/{manual_id}"))
        .await;
    assert_eq!(shown.body["output"], "kept\n", "{shown:#?}");
    assert_eq!(node.get("/v1/pause").await.body, json!({"paused": true}));
    assert_eq!(node.get("/v1/jobs").await.total_count(), Some(3));

    // The scheduler resumes: the ticker fires again after the restart, keeping its phase
    // (decision 12): every nominal fire time is a whole number of periods from the first.
    node.wait_finished("ticker", ticks_before + 1, Duration::from_secs(6))
        .await;
    let mut scheduled: Vec<jiff::Timestamp> = node
        .executions("ticker")
        .await
        .iter()
        .map(|e| e["scheduled_at"].as_str().unwrap().parse().unwrap())
        .collect();
    scheduled.sort();
    for t in &scheduled {
        let offset = t.duration_since(scheduled[0]).as_nanos();
        assert_eq!(offset % 2_000_000_000, 0, "phase moved: {scheduled:?}");
    }
}

/// `NodeHandle::shutdown` must leave the data dir free for the next start, even while a run is
/// in flight (a run that outlives shutdown keeps the node, and so its open databases, alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_run_in_flight_releases_the_data_dir() {
    let mut node = TestNode::start().await;
    node.create(&shell_job("long", "@every 1h", "sleep 10"))
        .await;
    node.run("long").await;
    wait_until(SOON, "the run to be busy", async || {
        (node.get("/v1/busy").await.total_count() == Some(1)).then_some(())
    })
    .await;
    node.restart().await;
    assert_eq!(node.get("/v1/jobs").await.total_count(), Some(1));
}

/// Decision 7: a "running" record whose run died with its node must not block a `forbid` job
/// forever. After a single server restarts, nothing it recorded as running can still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_killed_with_its_node_does_not_stay_running_forever() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let http = local(free_port());
    let mut agent = Agent::spawn(
        agent_command(tmp.path(), &data, http, "orphan"),
        http,
        tmp.path().join("first.log"),
    );
    agent.wait_leader(Duration::from_secs(20)).await;
    let mut job = shell_job("long", "@every 1h", "sleep 10");
    job["concurrency"] = json!("forbid");
    agent.api.create(&job).await;
    agent.api.run("long").await;
    wait_until(SOON, "the run to be busy", async || {
        (agent.api.get("/v1/busy").await.total_count() == Some(1)).then_some(())
    })
    .await;
    agent.kill();

    let http = local(free_port());
    let mut agent = Agent::spawn(
        agent_command(tmp.path(), &data, http, "orphan"),
        http,
        tmp.path().join("second.log"),
    );
    agent.wait_leader(Duration::from_secs(20)).await;
    let api = agent.api.clone();
    wait_until(
        Duration::from_secs(15),
        "the killed run to be closed after the restart",
        async || (api.get("/v1/busy").await.total_count() == Some(0)).then_some(()),
    )
    .await;
    let r = api.post_empty("/v1/jobs/long/run").await;
    assert_eq!(
        r.status, 200,
        "the forbid job is blocked by a dead run: {r:#?}"
    );
}

fn agent_command(
    home: &Path,
    data_dir: &Path,
    http: SocketAddr,
    name: &str,
) -> std::process::Command {
    let mut cmd = dkron_command(home);
    cmd.args([
        "agent",
        "--server",
        "--bootstrap-expect=1",
        &format!("--data-dir={}", data_dir.display()),
        &format!("--http-addr={http}"),
        "--bind-addr=127.0.0.1:0",
        &format!("--rpc-port={}", free_port()),
        &format!("--node-name={name}"),
        "--log-level=warn",
    ]);
    cmd
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_sigkill_of_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let http = local(free_port());
    let mut agent = Agent::spawn(
        agent_command(tmp.path(), &data, http, "k9"),
        http,
        tmp.path().join("first.log"),
    );
    agent.wait_leader(Duration::from_secs(20)).await;
    for i in 0..20 {
        let r = agent
            .api
            .post(
                "/v1/jobs",
                &shell_job(&format!("job-{i:02}"), "@every 1h", "true"),
            )
            .await;
        assert_eq!(r.status, 201, "job {i}: {r:#?}\nlog:\n{}", agent.log_text());
    }
    agent.kill();

    let http = local(free_port());
    let mut agent = Agent::spawn(
        agent_command(tmp.path(), &data, http, "k9"),
        http,
        tmp.path().join("second.log"),
    );
    agent.wait_leader(Duration::from_secs(20)).await;
    let r = agent.api.get("/v1/jobs").await;
    assert_eq!(
        r.total_count(),
        Some(20),
        "{r:#?}\nlog:\n{}",
        agent.log_text()
    );
    let expected: Vec<String> = (0..20).map(|i| format!("job-{i:02}")).collect();
    assert_eq!(r.names(), expected);
}

/// A snapshot is taken once the log outgrows a size, whatever its entry count: entries are
/// batches, so 20,000 of them (openraft's count policy here) can be gigabytes. Here 64 KiB of
/// log, about a hundred job writes, far from 20,000 entries; the next restart loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_outgrows_its_size_bound_is_snapshotted_and_purged() {
    let mut node = TestNode::start_configured("compact", |c| {
        c.raft_snapshot_bytes = 64 << 10;
    })
    .await;
    assert_eq!(node.h().leadership().snapshot_and_purged().0, None);
    let job = |i: usize| {
        let mut j = shell_job(&format!("c{i:03}"), "@every 1h", "true");
        j["metadata"] = json!({"padding": "x".repeat(512)});
        j
    };
    for i in 0..150 {
        node.create(&job(i)).await;
    }
    wait_until(
        Duration::from_secs(30),
        "a snapshot taken for the log's size",
        async || node.h().leadership().snapshot_and_purged().0.map(|_| ()),
    )
    .await;
    node.restart().await;
    let jobs = node.get("/v1/jobs").await.body;
    assert_eq!(jobs.as_array().map(Vec::len), Some(150));
}

/// A node restarts from its Raft snapshot (taken every 10 entries here, the log behind it
/// purged) with every job, execution and counter it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_from_its_snapshot_with_the_same_state() {
    let mut node = TestNode::start_configured("snappy", |c| {
        c.raft_snapshot_logs = 10;
    })
    .await;
    for i in 0..30 {
        node.create(&shell_job(&format!("s{i:02}"), "@every 1h", "true"))
            .await;
    }
    node.run("s07").await;
    node.wait_finished("s07", 1, SOON).await;
    wait_until(
        SOON,
        "a snapshot with the log purged behind it",
        async || {
            let (s, p) = node.h().leadership().snapshot_and_purged();
            (s? >= 20 && p? >= 20).then_some(())
        },
    )
    .await;
    let before = node.get("/v1/jobs").await.body;
    node.restart().await;
    let after = node.get("/v1/jobs").await.body;
    assert_eq!(after.as_array().map(Vec::len), Some(30));
    let strip_next = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|j| {
                let mut j = j.clone();
                j.as_object_mut().unwrap().remove("next");
                j
            })
            .collect()
    };
    assert_eq!(strip_next(&after), strip_next(&before));
    assert_eq!(node.job("s07").await["success_count"], 1);
    assert_eq!(node.executions("s07").await.len(), 1);
}
