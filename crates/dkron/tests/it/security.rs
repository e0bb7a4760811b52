//! Who may use a node's listeners. With a gossip key, the RPC port takes only mutual TLS with
//! a certificate of the cluster: plain HTTP, a TLS client without a certificate and one with a
//! certificate of another key all end at the handshake, a forged order runs nothing and does
//! not move the node's fencing term, and the CLI needs the key too.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{SOON, TestNode, dkron_command, run_to_exit, shell_job};

const KEY: &str = "kPpdjphiipNSsjd4QHWbkA==";
const OTHER_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAA==";

/// The order of the issue that found the hole: a shell command, a fencing token from the
/// future.
fn forged_order(marker: &std::path::Path) -> Value {
    json!({
        "job_name": "x",
        "executor": "shell",
        "config": {"command": format!("touch {}", marker.display()), "shell": "true"},
        "execution_id": "e2",
        "scheduled_time": "2026-12-01T14:00:00Z",
        "fencing_token": 99999,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_the_rpc_port_refuses_everyone_without_a_cluster_certificate() {
    let node = TestNode::start_configured("guarded", |c| c.encrypt = KEY.into()).await;
    let rpc = node.handle.as_ref().expect("running").rpc_addr();
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pwned");
    let order = forged_order(&marker);

    // Plain HTTP, as in the report.
    let plain = reqwest::Client::new()
        .post(format!("http://{rpc}/rpc/execute"))
        .timeout(Duration::from_secs(5))
        .json(&order)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");

    // TLS, any server certificate accepted, but no client certificate.
    let anonymous = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .post(format!("https://{rpc}/rpc/execute"))
        .timeout(Duration::from_secs(5))
        .json(&order)
        .send()
        .await;
    assert!(
        anonymous.is_err(),
        "TLS without a certificate got an answer: {anonymous:?}"
    );

    // A certificate of another cluster's key.
    let stranger =
        dkron::tls::ClusterTls::from_encrypt_key(OTHER_KEY, "stranger", dkron::clock::system())
            .unwrap();
    let other = dkron::rpc::RpcClient::new(stranger.as_deref()).unwrap();
    let order: dkron::rpc::wire::RunOrder = serde_json::from_value(order).unwrap();
    assert!(other.execute(&rpc.to_string(), &order).await.is_err());

    assert!(!marker.exists(), "a forged order ran");
    // The forged fencing token was never seen: a real run (term 1 or so) still runs here.
    node.create(&shell_job("still-works", "@manually", "echo fine"))
        .await;
    node.run("still-works").await;
    let runs = node.wait_finished("still-works", 1, SOON).await;
    assert_eq!(runs[0]["success"], json!(true), "{runs:#?}");
    assert_eq!(runs[0]["output"], json!("fine\n"));
}

/// `dkron raft list-peers` and `dkron leave` speak mutual TLS with the key, and without it
/// fail with an error that says to pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_needs_the_key_to_reach_a_guarded_rpc_port() {
    let node = TestNode::start_configured("cli-guarded", |c| c.encrypt = KEY.into()).await;
    let rpc = node
        .handle
        .as_ref()
        .expect("running")
        .rpc_addr()
        .to_string();
    let home = tempfile::tempdir().unwrap();
    let (dir, addr) = (home.path().to_path_buf(), rpc.clone());
    let (with, without, wrong) = tokio::task::spawn_blocking(move || {
        let list = |key: Option<&str>| {
            let mut cmd = dkron_command(&dir);
            cmd.args(["raft", "list-peers", "--rpc-addr", &addr]);
            if let Some(key) = key {
                cmd.env("DKRON_ENCRYPT", key);
            }
            run_to_exit(cmd, Duration::from_secs(20))
        };
        (list(Some(KEY)), list(None), list(Some(OTHER_KEY)))
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(out.contains("cli-guarded"), "{out}");
    for refused in [without, wrong] {
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains("--encrypt"), "{err}");
    }
    // With the key, `dkron leave` stops the node.
    let stop = node.handle.as_ref().unwrap().stop_signal().clone();
    let left = tokio::task::spawn_blocking({
        let home = home.path().to_path_buf();
        move || {
            let mut cmd = dkron_command(&home);
            cmd.args(["leave", "--rpc-addr", &rpc, "--encrypt", KEY]);
            run_to_exit(cmd, Duration::from_secs(20))
        }
    })
    .await
    .unwrap();
    assert!(
        left.status.success(),
        "{}",
        String::from_utf8_lossy(&left.stderr)
    );
    tokio::time::timeout(Duration::from_secs(5), stop.requested())
        .await
        .expect("the node was asked to stop");
}

/// A node started without a key says at start that its RPC port takes anyone's orders and
/// how to fix it, and its metrics say so; with a key, neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_key_warns_that_its_rpc_port_is_open() {
    for (key, open) in [(None, true), (Some(KEY), false)] {
        let home = tempfile::tempdir().unwrap();
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], crate::support::free_port()));
        let mut cmd = dkron_command(home.path());
        cmd.args([
            "agent",
            "--server",
            "--bootstrap-expect=1",
            "--enable-prometheus",
            &format!("--data-dir={}", home.path().join("data").display()),
            &format!("--http-addr={http}"),
            "--bind-addr=127.0.0.1:0",
            &format!("--rpc-port={}", crate::support::free_port()),
        ]);
        if let Some(key) = key {
            cmd.arg(format!("--encrypt={key}"));
        }
        let mut agent = crate::support::Agent::spawn(cmd, http, home.path().join("agent.log"));
        agent.wait_leader(Duration::from_secs(20)).await;
        let metrics = agent.api.get_text("/metrics").await;
        let gauge = format!("dkron_rpc_open {}", u8::from(open));
        assert!(metrics.contains(&gauge), "no {gauge:?} in:\n{metrics}");
        let warned = agent
            .log_text()
            .contains("start every node with the same --encrypt key");
        assert_eq!(warned, open, "{}", agent.log_text());
    }
}
