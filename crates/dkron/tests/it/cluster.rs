//! Several servers in one Raft group, in-process on loopback: writes through a follower,
//! replication to every server, and a leader failure that another server takes over.
//! Servers are added to the group directly (`Node::add_server`); discovering them through
//! gossip is not built yet.

use std::time::Duration;

use dkron::node::NodeHandle;
use serde_json::json;

use crate::support::{Api, client, node_config, shell_job, wait_until};

struct Server {
    handle: Option<NodeHandle>,
    api: Api,
    _dir: tempfile::TempDir,
}

async fn server(name: &str, bootstrap: bool) -> Server {
    let _ = client(); // installs the TLS provider
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = node_config(name, &dir.path().join("data"));
    if !bootstrap {
        config.bootstrap_expect = 0;
    }
    let handle = dkron::node::start(config, dkron::clock::system())
        .await
        .unwrap_or_else(|e| panic!("starting {name}: {e:#}"));
    let api = Api::new(handle.http_addr());
    Server {
        handle: Some(handle),
        api,
        _dir: dir,
    }
}

async fn three_servers() -> Vec<Server> {
    let first = server("s1", true).await;
    first
        .handle
        .as_ref()
        .unwrap()
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("s1 leads");
    let others = [server("s2", false).await, server("s3", false).await];
    let leader = &first.handle.as_ref().unwrap().node;
    for (name, s) in ["s2", "s3"].iter().zip(&others) {
        let rpc = s.handle.as_ref().unwrap().node.rpc_addr;
        leader
            .add_server(name, &rpc.to_string())
            .await
            .unwrap_or_else(|e| panic!("adding {name}: {e:#}"));
    }
    let mut all = vec![first];
    all.extend(others);
    all
}

async fn leader_index(servers: &[Server]) -> usize {
    wait_until(
        Duration::from_secs(15),
        "a leader among the live servers",
        async || {
            servers
                .iter()
                .position(|s| s.handle.as_ref().is_some_and(|h| h.node.is_leader()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_a_follower_reach_every_server() {
    let servers = three_servers().await;
    let follower = &servers[2].api;
    let created = follower
        .post("/v1/jobs", &shell_job("replicated", "@manually", "true"))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    // Read-your-write on the server that was written to.
    assert_eq!(follower.get("/v1/jobs/replicated").await.status, 200);
    for s in &servers {
        wait_until(
            Duration::from_secs(10),
            "the job on every server",
            async || (s.api.get("/v1/jobs/replicated").await.status == 200).then_some(()),
        )
        .await;
    }
    // A manual run asked of a follower runs on the leader and is recorded everywhere.
    let run = follower.post_empty("/v1/jobs/replicated/run").await;
    assert_eq!(run.status, 202, "{}", run.text);
    for s in &servers {
        s.api
            .wait_finished("replicated", 1, Duration::from_secs(10))
            .await;
    }
    // Pause is replicated too.
    assert_eq!(
        follower.post_empty("/v1/pause").await.body,
        json!({"paused": true})
    );
    for s in &servers {
        wait_until(Duration::from_secs(10), "pause everywhere", async || {
            (s.api.get("/v1/pause").await.body == json!({"paused": true})).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_server_takes_over_when_the_leader_stops() {
    let mut servers = three_servers().await;
    let first_leader = leader_index(&servers).await;
    let api = servers[first_leader].api.clone();
    assert_eq!(
        api.post("/v1/jobs", &shell_job("heartbeat", "@every 1s", "true"))
            .await
            .status,
        201
    );
    api.wait_finished("heartbeat", 1, Duration::from_secs(10))
        .await;
    let old = servers[first_leader].handle.take().expect("running");
    let old_name = old.node.name().to_string();
    old.shutdown().await;

    let next = leader_index(&servers).await;
    assert_ne!(next, first_leader);
    let survivor = &servers[next].api;
    // The job survived, and the new leader keeps firing it.
    assert_eq!(survivor.get("/v1/jobs/heartbeat").await.status, 200);
    let new_leader = servers[next]
        .handle
        .as_ref()
        .unwrap()
        .node
        .name()
        .to_string();
    wait_until(
        Duration::from_secs(15),
        "a run by the new leader",
        async || {
            let runs = survivor.executions("heartbeat").await;
            runs.iter()
                .any(|e| e["node_name"] == json!(new_leader) && e["success"] == json!(true))
                .then_some(())
        },
    )
    .await;
    assert_ne!(new_leader, old_name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_targeted_at_three_servers_runs_on_each_with_output_kept_by_the_leader() {
    let servers = three_servers().await;
    let leader = leader_index(&servers).await;
    let api = &servers[leader].api;
    let mut job = shell_job(
        "everywhere",
        "@manually",
        "echo ran on $HOSTNAME-$DKRON_EXECUTION_ID",
    );
    job["tags"] = json!({"server": "true:3"});
    assert_eq!(api.post("/v1/jobs", &job).await.status, 201);
    assert_eq!(api.post_empty("/v1/jobs/everywhere/run").await.status, 202);
    let runs = api
        .wait_finished("everywhere", 3, Duration::from_secs(15))
        .await;
    let mut nodes: Vec<String> = runs
        .iter()
        .map(|r| {
            assert_eq!(r["success"], json!(true), "{r:#}");
            let id = r["id"].as_str().unwrap();
            assert!(r["output"].as_str().unwrap().contains(id), "{r:#}");
            r["node_name"].as_str().unwrap().to_string()
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["s1", "s2", "s3"]);
    // One trigger: all three runs share a group.
    assert!(runs.windows(2).all(|w| w[0]["group"] == w[1]["group"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_run_orders_from_an_older_leader_term() {
    let s = server("fenced", true).await;
    let node = &s.handle.as_ref().unwrap().node;
    let order = |token: u64| dkron::node::RunOrder {
        job_name: "j".into(),
        executor: "shell".into(),
        config: [("command".to_string(), "true".to_string())].into(),
        execution_id: format!("e{token}"),
        scheduled_time: "2026-01-01T00:00:00Z".into(),
        fencing_token: token,
    };
    assert!(
        node.execute_order(order(7))
            .await
            .expect("term 7 runs")
            .success
    );
    let refused = node
        .execute_order(order(6))
        .await
        .expect_err("term 6 is stale");
    assert!(
        refused.contains("term 6") && refused.contains('7'),
        "{refused}"
    );
    assert!(
        node.execute_order(order(7)).await.is_ok(),
        "the same term still runs"
    );
}
