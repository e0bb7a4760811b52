//! Who may use a node's listeners. With a gossip key, the RPC port takes only mutual TLS with
//! a certificate of the cluster: plain HTTP, a TLS client without a certificate and one with a
//! certificate of another key all end at the handshake, a forged order runs nothing and does
//! not move the node's fencing term, and the CLI needs the key too.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{SOON, TestNode, dkron_command, run_to_exit, shell_job};

const KEY: &str = "kPpdjphiipNSsjd4QHWbkA==";
const OTHER_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAA==";

/// Runs `dkron <args>` (with `env`) to its exit, off the async workers.
async fn cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = dkron_command(home.path());
        cmd.args(&args).envs(env);
        run_to_exit(cmd, Duration::from_secs(20))
    })
    .await
    .unwrap()
}

fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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
    let rpc = node.h().rpc_addr();
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
    let rpc = node.h().rpc_addr().to_string();
    let list = ["raft", "list-peers", "--rpc-addr", &rpc];
    let out = succeeded(&cli(&list, &[("DKRON_ENCRYPT", KEY)]).await);
    assert!(out.contains("cli-guarded"), "{out}");
    for refused in [
        cli(&list, &[]).await,
        cli(&list, &[("DKRON_ENCRYPT", OTHER_KEY)]).await,
    ] {
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains("--encrypt"), "{err}");
    }
    // With the key, `dkron leave` stops the node.
    let stop = node.h().stop_signal().clone();
    succeeded(&cli(&["leave", "--rpc-addr", &rpc, "--encrypt", KEY], &[]).await);
    tokio::time::timeout(Duration::from_secs(5), stop.requested())
        .await
        .expect("the node was asked to stop");
}

/// A node started without a key says at start that its RPC port takes anyone's orders and
/// how to fix it, and its metrics say so; with a key, neither, and the handshakes it refuses
/// are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_key_warns_that_its_rpc_port_is_open() {
    for (key, open) in [(None, true), (Some(KEY), false)] {
        let home = tempfile::tempdir().unwrap();
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], crate::support::free_port()));
        let rpc = crate::support::free_port();
        let mut cmd = dkron_command(home.path());
        cmd.args([
            "agent",
            "--server",
            "--bootstrap-expect=1",
            "--enable-prometheus",
            &format!("--data-dir={}", home.path().join("data").display()),
            &format!("--http-addr={http}"),
            "--bind-addr=127.0.0.1:0",
            &format!("--rpc-port={rpc}"),
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
        if !open {
            crate::support::assert_plain_http_refused(&format!(
                "http://127.0.0.1:{rpc}/rpc/raft/peers"
            ))
            .await;
            let counted = r#"dkron_tls_handshakes_refused_total{port="rpc"} 1"#;
            crate::support::wait_until(SOON, "the refusal to be counted", async || {
                agent
                    .api
                    .get_text("/metrics")
                    .await
                    .contains(counted)
                    .then_some(())
            })
            .await;
        }
    }
}

/// An HTTPS client of the test PKI, presenting `client` if given (the CLI's own builder).
fn https(
    pki: &crate::support::pki::Pki,
    client: Option<&crate::support::pki::CertFiles>,
) -> reqwest::Client {
    let settings = dkron::tls::TlsSettings {
        trusted_ca_file: pki.ca.clone(),
        cert_file: client.map(|c| c.cert.clone()).unwrap_or_default(),
        key_file: client.map(|c| c.key.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let config = dkron::tls::https_client_config(&settings).unwrap().unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn with_pki(c: &mut dkron::config::AgentConfig, pki: &crate::support::pki::Pki) {
    c.cert_file = pki.node.cert.clone();
    c.key_file = pki.node.key.clone();
    c.trusted_ca_file = pki.ca.clone();
}

/// Dkron Pro's explicit PKI: the operator's certificate serves the HTTP API over HTTPS and
/// the RPC port over mutual TLS; plain HTTP gets nothing on either; the CLI reaches both
/// with the certificate flags, and not without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_pki_serves_https_and_mutual_tls_with_the_operators_certificates() {
    let pki = crate::support::pki::Pki::new();
    let node = TestNode::start_configured("pki-node", |c| with_pki(c, &pki)).await;
    let http = node.h().http_addr();
    let rpc = node.h().rpc_addr().to_string();
    let over_https = https(&pki, None)
        .get(format!("https://127.0.0.1:{}/v1", http.port()))
        .send()
        .await
        .expect("HTTPS with the trusted CA");
    assert_eq!(over_https.status(), 200);
    crate::support::assert_plain_http_refused(&format!("http://{http}/v1")).await;

    let list = ["raft", "list-peers", "--rpc-addr", &rpc];
    let certs = [
        ("DKRON_CERT_FILE", pki.client.cert.as_str()),
        ("DKRON_KEY_FILE", pki.client.key.as_str()),
        ("DKRON_TRUSTED_CA_FILE", pki.ca.as_str()),
    ];
    assert!(succeeded(&cli(&list, &certs).await).contains("pki-node"));
    let without = cli(&list, &[]).await;
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("--cert-file"));
    // The CLI's API commands take https:// and the same flags.
    let address = format!("https://127.0.0.1:{}", http.port());
    succeeded(
        &cli(
            &[
                "jobs",
                "list",
                "--address",
                &address,
                "--trusted-ca-file",
                &pki.ca,
            ],
            &[],
        )
        .await,
    );
}

/// `--client-cert-auth`: the API takes only clients with a certificate of the trusted CA that
/// is neither expired nor revoked (`--client-crl-file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_auth_refuses_missing_expired_revoked_and_foreign_certificates() {
    let pki = crate::support::pki::Pki::new();
    let node = TestNode::start_configured("mtls-api", |c| {
        with_pki(c, &pki);
        c.client_cert_auth = true;
        c.client_crl_file = pki.crl.clone();
    })
    .await;
    let url = format!("https://127.0.0.1:{}/v1/jobs", node.h().http_addr().port());
    let status = |client: reqwest::Client| {
        let url = url.clone();
        async move { client.get(&url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(status(https(&pki, Some(&pki.client))).await.ok(), Some(200));
    for (what, client) in [
        ("no certificate", https(&pki, None)),
        ("an expired one", https(&pki, Some(&pki.expired))),
        ("a revoked one", https(&pki, Some(&pki.revoked))),
        ("another CA's", https(&pki, Some(&pki.stranger))),
    ] {
        let answer = status(client).await;
        assert!(answer.is_err(), "{what}: {answer:?}");
    }
}

/// `--disable-http-tls`: the certificate guards the RPC port only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_http_tls_keeps_the_api_plain() {
    let pki = crate::support::pki::Pki::new();
    let node = TestNode::start_configured("plain-api", |c| {
        with_pki(c, &pki);
        c.disable_http_tls = true;
    })
    .await;
    assert_eq!(node.get("/v1").await.status, 200);
    let rpc = node.h().rpc_addr();
    crate::support::assert_plain_http_refused(&format!("http://{rpc}/rpc/raft/peers")).await;
}

/// The http executor's TLS options against a real TLS server: this node's own HTTPS API,
/// which asks for a client certificate of the test CA. Trusted with the CA file and a client
/// certificate, a run succeeds; without the CA, without a certificate, or with another CA's,
/// it fails saying why; `tlsNoVerifyPeer` skips only the server's check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_jobs_use_their_tls_options_against_a_real_tls_server() {
    let pki = crate::support::pki::Pki::new();
    let node = TestNode::start_configured("tls-target", |c| {
        with_pki(c, &pki);
        c.client_cert_auth = true;
    })
    .await;
    let base = format!("https://127.0.0.1:{}", node.h().http_addr().port());
    let api = https(&pki, Some(&pki.client));
    let run = async |name: &str, options: &[(&str, &str)]| -> Value {
        let mut config = json!({"method": "GET", "url": format!("{base}/v1"), "expectCode": "200"});
        for (k, v) in options {
            config[*k] = json!(v);
        }
        let job = json!({"name": name, "schedule": "@manually", "executor": "http",
                         "executor_config": config});
        let r = api
            .post(format!("{base}/v1/jobs"))
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{name}: {}", r.text().await.unwrap());
        let r = api
            .post(format!("{base}/v1/jobs/{name}/run"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        crate::support::wait_until(SOON, &format!("the run of {name}"), async || {
            let list: Value = api
                .get(format!("{base}/v1/jobs/{name}/executions"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            list.as_array()?
                .iter()
                .find(|e| crate::support::is_finished(e))
                .cloned()
        })
        .await
    };
    let ca = ("tlsRootCAsFile", pki.ca.as_str());
    let cert = ("tlsCertificateFile", pki.client.cert.as_str());
    let key = ("tlsCertificateKeyFile", pki.client.key.as_str());

    let trusted = run("trusted", &[ca, cert, key]).await;
    assert_eq!(trusted["success"], true, "{trusted:#}");
    let insecure = run("insecure", &[("tlsNoVerifyPeer", "true"), cert, key]).await;
    assert_eq!(insecure["success"], true, "{insecure:#}");

    let untrusted = run("untrusted", &[cert, key]).await;
    assert_eq!(untrusted["success"], false, "{untrusted:#}");
    let why = untrusted["output"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(why.contains("certificate"), "{untrusted:#}");
    for (name, options) in [
        ("anonymous", vec![ca]),
        (
            "stranger",
            vec![
                ca,
                ("tlsCertificateFile", pki.stranger.cert.as_str()),
                ("tlsCertificateKeyFile", pki.stranger.key.as_str()),
            ],
        ),
    ] {
        let refused = run(name, &options).await;
        assert_eq!(refused["success"], false, "{name}: {refused:#}");
        assert!(
            !refused["output"].as_str().unwrap_or_default().is_empty(),
            "{name} says why: {refused:#}"
        );
    }
}
