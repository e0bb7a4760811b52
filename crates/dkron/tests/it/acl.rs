//! ACLs on the HTTP API: off by default (a token is ignored), and on: the bootstrap once, Dkron
//! Pro's policies and tokens, every route refused without a valid token, the body-name check,
//! the filtered job list, the run right, executor allow-lists, owners and who ran, and the
//! audit log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Resp, SOON, TestNode, send, shell_job, wait_until};

/// One request with an optional token (`Authorization: Bearer`).
async fn call(
    node: &TestNode,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = node.client.request(method, node.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    send(req).await
}

async fn acl_node() -> TestNode {
    TestNode::start_configured("acl-node", |c| c.acl.enabled = true).await
}

async fn bootstrap(node: &TestNode) -> String {
    let r = call(node, "POST", "/v1/acl/bootstrap", None, None).await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body["type"], "management");
    assert_eq!(r.body["name"], "bootstrap");
    r.body["secret"].as_str().unwrap().to_string()
}

async fn policy(node: &TestNode, root: &str, name: &str, rules: Value) {
    let r = call(
        node,
        "POST",
        &format!("/v1/acl/policies/{name}"),
        Some(root),
        Some(&rules),
    )
    .await;
    assert_eq!(r.status, 200, "policy {name}: {r:#?}");
}

async fn token(node: &TestNode, root: &str, name: &str, policies: &[&str], ttl: &str) -> String {
    let body = json!({"name": name, "type": "client", "policies": policies, "ttl": ttl});
    let r = call(node, "POST", "/v1/acl/tokens", Some(root), Some(&body)).await;
    assert_eq!(r.status, 200, "token {name}: {r:#?}");
    r.body["secret"].as_str().unwrap().to_string()
}

fn all_caps() -> Value {
    json!({"capabilities": ["create", "read", "update", "delete", "list"]})
}

#[tokio::test]
async fn with_acls_off_a_token_is_ignored_and_reads_stay_open_to_any_origin() {
    let node = TestNode::start().await;
    let created = call(
        &node,
        "POST",
        "/v1/jobs",
        Some("made-up"),
        Some(&shell_job("a", "@manually", "true")),
    )
    .await;
    assert_eq!(created.status, 201, "{created:#?}");
    let read = send(
        node.client
            .get(node.url("/v1/jobs"))
            .header("origin", "http://other.example"),
    )
    .await;
    assert_eq!(read.header("access-control-allow-origin"), Some("*"));
    // And no bootstrap: a token made now would become valid the day ACLs are turned on.
    let boot = call(&node, "POST", "/v1/acl/bootstrap", None, None).await;
    assert_eq!(boot.status, 400, "{boot:#?}");
    assert!(boot.error().contains("--acl-enabled"), "{}", boot.error());
}

/// Every route × no token / unknown / expired / a client token without rights / management.
#[tokio::test]
async fn every_route_needs_a_valid_token_and_the_right_to_use_it() {
    let node = acl_node().await;
    let root = bootstrap(&node).await;
    policy(
        &node,
        &root,
        "nothing",
        json!({"path": {"/v1/nope": {"capabilities": ["read"]}}}),
    )
    .await;
    let client = token(&node, &root, "client", &["nothing"], "").await;
    let expiring = token(&node, &root, "expiring", &["nothing"], "1m").await;
    let created = call(
        &node,
        "POST",
        "/v1/jobs",
        Some(&root),
        Some(&shell_job("j", "@manually", "true")),
    )
    .await;
    assert_eq!(created.status, 201, "{created:#?}");
    node.clock.advance(Duration::from_secs(120));
    let job = shell_job("j", "@manually", "true");
    let routes: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/v1", None),
        ("GET", "/v1/", None),
        ("GET", "/v1/members", None),
        ("GET", "/v1/leader", None),
        ("GET", "/v1/isleader", None),
        ("GET", "/v1/raft/peers", None),
        ("GET", "/v1/stats", None),
        ("GET", "/debug/vars", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/pause", None),
        ("POST", "/v1/pause", None),
        ("POST", "/v1/unpause", None),
        ("GET", "/v1/jobs/j", None),
        ("PUT", "/v1/jobs/j", Some(job.clone())),
        ("POST", "/v1/jobs", Some(job.clone())),
        ("PATCH", "/v1/jobs", Some(job.clone())),
        ("POST", "/v1/jobs/j", None),
        ("POST", "/v1/jobs/j/run", None),
        ("POST", "/v1/jobs/j/toggle", None),
        ("GET", "/v1/jobs/j/executions", None),
        ("GET", "/v1/jobs/j/executions/x", None),
        ("DELETE", "/v1/jobs/j/executions", None),
        ("GET", "/v1/jobs/j/occurrences", None),
        ("GET", "/v1/jobs/j/next", None),
        ("GET", "/v1/schedule?schedule=@every%201m", None),
        ("POST", "/v1/restore", None),
        ("GET", "/v1/acl/policies", None),
        ("GET", "/v1/acl/policies/nothing", None),
        ("POST", "/v1/acl/policies/other", Some(json!({"path": {}}))),
        ("GET", "/v1/acl/tokens", None),
        ("POST", "/v1/acl/tokens", Some(json!({"name": "x"}))),
        ("GET", "/v1/acl/tokens/none", None),
        ("DELETE", "/v1/acl/tokens/none", None),
        ("DELETE", "/v1/acl/policies/other", None),
        ("DELETE", "/v1/jobs/j", None),
        ("POST", "/v1/leave", None),
    ];
    for (method, path, body) in &routes {
        let what = format!("{method} {path}");
        for (who, secret) in [
            ("no token", None),
            ("unknown", Some("not-a-token")),
            ("expired", Some(expiring.as_str())),
        ] {
            let r = call(&node, method, path, secret, body.as_ref()).await;
            assert_eq!(r.status, 401, "{what} with {who}: {r:#?}");
            assert!(
                r.error().contains("Authorization: Bearer"),
                "{what}: {}",
                r.error()
            );
        }
        let r = call(&node, method, path, Some(&client), body.as_ref()).await;
        assert_eq!(
            r.status, 403,
            "{what} with a client token without rights: {r:#?}"
        );
        assert!(r.error().contains("token client"), "{what}: {}", r.error());
        if *path == "/v1/leave" {
            continue; // the management token would stop the node
        }
        let r = call(&node, method, path, Some(&root), body.as_ref()).await;
        assert!(
            ![401, 403].contains(&r.status),
            "{what} with the management token: {r:#?}"
        );
    }
    // The job list and the busy list answer, showing nothing the token may not read.
    for path in ["/v1/jobs", "/v1/busy"] {
        let r = call(&node, "GET", path, Some(&client), None).await;
        assert_eq!(r.status, 200, "{path}: {r:#?}");
        assert_eq!(r.array().len(), 0, "{path}: {r:#?}");
    }
    // Open routes stay open: health, the dashboard.
    assert_eq!(call(&node, "GET", "/health", None, None).await.status, 200);
    // A refusal names what was missing.
    let r = call(&node, "POST", "/v1/pause", Some(&client), None).await;
    assert_eq!(r.body["capability"], "create");
    assert_eq!(r.body["path"], "/v1/pause");
    // X-Dkron-Token works as well as Bearer.
    let r = send(
        node.client
            .get(node.url("/v1/jobs/j"))
            .header("x-dkron-token", &root),
    )
    .await;
    assert_eq!(r.status, 404, "{r:#?}"); // deleted above
    // With ACLs on, reads are no longer open to any origin.
    let r = send(
        node.client
            .get(node.url("/v1/jobs"))
            .bearer_auth(&root)
            .header("origin", "http://other.example"),
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:#?}");
}

#[tokio::test]
async fn a_team_policy_writes_and_sees_only_its_jobs_and_owns_them() {
    let node = acl_node().await;
    let root = bootstrap(&node).await;
    policy(
        &node,
        &root,
        "team-a",
        json!({"path": {"/v1/jobs/team-a-*": all_caps()}}),
    )
    .await;
    let team_a = token(&node, &root, "alice", &["team-a"], "").await;
    call(
        &node,
        "POST",
        "/v1/jobs",
        Some(&root),
        Some(&shell_job("team-b-y", "@manually", "true")),
    )
    .await;

    let mine = call(
        &node,
        "POST",
        "/v1/jobs",
        Some(&team_a),
        Some(&shell_job("team-a-x", "@manually", "true")),
    )
    .await;
    assert_eq!(mine.status, 201, "{mine:#?}");
    assert_eq!(mine.body["owner"], "alice");
    let theirs = call(
        &node,
        "POST",
        "/v1/jobs",
        Some(&team_a),
        Some(&shell_job("team-b-x", "@manually", "true")),
    )
    .await;
    assert_eq!(theirs.status, 403, "{theirs:#?}");
    assert_eq!(theirs.body["path"], "/v1/jobs/team-b-x");
    assert_eq!(theirs.body["capability"], "create");
    // Replacing another team's job through PUT or PATCH is refused the same way.
    let put = call(
        &node,
        "PUT",
        "/v1/jobs/team-b-y",
        Some(&team_a),
        Some(&shell_job("team-b-y", "@manually", "false")),
    )
    .await;
    assert_eq!(put.status, 403, "{put:#?}");
    assert_eq!(put.body["capability"], "update");
    let patch = call(
        &node,
        "PATCH",
        "/v1/jobs",
        Some(&team_a),
        Some(&shell_job("team-b-y", "@manually", "false")),
    )
    .await;
    assert_eq!(patch.status, 403, "{patch:#?}");
    // The list shows what the token may read, and counts only that.
    let list = call(&node, "GET", "/v1/jobs", Some(&team_a), None).await;
    assert_eq!(list.names(), ["team-a-x"]);
    assert_eq!(list.total_count(), Some(1));
    assert_eq!(
        call(&node, "GET", "/v1/jobs", Some(&root), None)
            .await
            .names()
            .len(),
        2
    );
    assert_eq!(
        call(&node, "GET", "/v1/jobs/team-b-y", Some(&team_a), None)
            .await
            .status,
        403
    );
    // Its own jobs' sub-resources follow the job.
    assert_eq!(
        call(
            &node,
            "GET",
            "/v1/jobs/team-a-x/executions",
            Some(&team_a),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(&node, "DELETE", "/v1/jobs/team-b-y", Some(&team_a), None)
            .await
            .status,
        403
    );
    assert_eq!(
        call(&node, "DELETE", "/v1/jobs/team-a-x", Some(&team_a), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_run_right_starts_runs_without_the_right_to_edit_and_runs_say_who() {
    let node = acl_node().await;
    let root = bootstrap(&node).await;
    policy(
        &node,
        &root,
        "runner",
        json!({"path": {"/v1/jobs/*": {"capabilities": ["read", "run"]}}}),
    )
    .await;
    let runner = token(&node, &root, "ci-bot", &["runner"], "").await;
    call(
        &node,
        "POST",
        "/v1/jobs",
        Some(&root),
        Some(&shell_job("deploy", "@manually", "true")),
    )
    .await;
    for path in ["/v1/jobs/deploy/run", "/v1/jobs/deploy"] {
        let r = call(&node, "POST", path, Some(&runner), None).await;
        assert!(r.status / 100 == 2, "run through {path}: {r:#?}");
    }
    let runs = wait_until(SOON, "two finished runs", async || {
        let r = call(
            &node,
            "GET",
            "/v1/jobs/deploy/executions",
            Some(&runner),
            None,
        )
        .await;
        let runs = r.array().clone();
        (runs.len() == 2 && runs.iter().all(crate::support::is_finished)).then_some(runs)
    })
    .await;
    assert!(
        runs.iter().all(|e| e["started_by"] == "ci-bot"),
        "{runs:#?}"
    );
    for (method, path, body) in [
        (
            "PUT",
            "/v1/jobs/deploy",
            Some(shell_job("deploy", "@manually", "false")),
        ),
        ("POST", "/v1/jobs/deploy/toggle", None),
        ("DELETE", "/v1/jobs/deploy", None),
        // Parameters change what runs: the run right alone does not pass them.
        (
            "POST",
            "/v1/jobs/deploy/run",
            Some(json!({"executor_config": {"command": "rm -rf /tmp/x"}})),
        ),
    ] {
        let r = call(&node, method, path, Some(&runner), body.as_ref()).await;
        assert_eq!(r.status, 403, "{method} {path}: {r:#?}");
    }
    // Reading alone does not run.
    policy(
        &node,
        &root,
        "reader",
        json!({"path": {"/v1/jobs/*": {"capabilities": ["read"]}}}),
    )
    .await;
    let reader = token(&node, &root, "reader", &["reader"], "").await;
    let r = call(&node, "POST", "/v1/jobs/deploy/run", Some(&reader), None).await;
    assert_eq!(r.status, 403, "{r:#?}");
    assert_eq!(r.body["capability"], "run");
    // The right to update the job does pass them.
    let params = json!({"env": {"STAGE": "canary"}});
    let r = call(
        &node,
        "POST",
        "/v1/jobs/deploy/run",
        Some(&root),
        Some(&params),
    )
    .await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(
        call(
            &node,
            "GET",
            "/v1/jobs/deploy/executions",
            Some(&root),
            None
        )
        .await
        .array()
        .len(),
        3,
        "the refused run with parameters ran nothing"
    );
}

#[tokio::test]
async fn a_policys_executor_list_binds_the_jobs_written_through_it() {
    let node = acl_node().await;
    let root = bootstrap(&node).await;
    policy(
        &node,
        &root,
        "http-only",
        json!({"path": {"/v1/jobs/*": {"capabilities": ["create", "update", "read"]}}, "executors": ["http"]}),
    )
    .await;
    let t = token(&node, &root, "web", &["http-only"], "").await;
    let shell = call(
        &node,
        "POST",
        "/v1/jobs",
        Some(&t),
        Some(&shell_job("s", "@manually", "id")),
    )
    .await;
    assert_eq!(shell.status, 403, "{shell:#?}");
    assert_eq!(shell.body["field"], "executor");
    let http = json!({"name": "h", "schedule": "@manually", "executor": "http",
        "executor_config": {"method": "GET", "url": "http://127.0.0.1:9/", "expectCode": "200"}});
    let r = call(&node, "POST", "/v1/jobs", Some(&t), Some(&http)).await;
    assert_eq!(r.status, 201, "{r:#?}");
    // Nor can a restore smuggle a shell job in.
    let file = crate::support::multipart(
        "file",
        &json!([shell_job("smuggled", "@manually", "id")]).to_string(),
    );
    policy(&node, &root, "restorer", json!({"path": {"/v1/restore": {"capabilities": ["create"]}, "/v1/jobs/*": {"capabilities": ["create"]}}, "executors": ["http"]})).await;
    let restorer = token(&node, &root, "restorer", &["restorer"], "").await;
    let r = send(
        node.client
            .post(node.url("/v1/restore"))
            .bearer_auth(&restorer)
            .header("content-type", crate::support::MULTIPART_TYPE)
            .body(file),
    )
    .await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert!(r.text.contains("fail create smuggled"), "{}", r.text);
    assert_eq!(
        call(&node, "GET", "/v1/jobs/smuggled", Some(&root), None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn policies_load_in_pros_shapes_and_bad_ones_name_the_field() {
    let node = acl_node().await;
    let root = bootstrap(&node).await;
    let rules = json!({"path": {"/v1/jobs": {"capabilities": ["list", "read"]}}});
    // {"Name", "Rules"} with the document as a string, as Dkron's OpenAPI shows it.
    let wrapped = json!({"Name": "ro", "Rules": rules.to_string()});
    policy(&node, &root, "ro", wrapped).await;
    let shown = call(&node, "GET", "/v1/acl/policies/ro", Some(&root), None).await;
    assert_eq!(shown.body["Name"], "ro");
    let back: Value = serde_json::from_str(shown.body["Rules"].as_str().unwrap()).unwrap();
    assert_eq!(back, rules);
    assert_eq!(
        call(&node, "GET", "/v1/acl/policies", Some(&root), None)
            .await
            .array()
            .len(),
        1
    );
    for (bad, field) in [
        (
            json!({"path": {"/v1/jobs": {"capabilities": ["read", "sudo"]}}}),
            "path./v1/jobs.capabilities[1]",
        ),
        (json!({"paths": {}}), "paths"),
        (
            json!({"path": {"v1/jobs": {"capabilities": []}}}),
            "path.v1/jobs",
        ),
        (json!({"Name": "x", "Rules": "{not json"}), "Rules"),
    ] {
        let r = call(
            &node,
            "POST",
            "/v1/acl/policies/bad",
            Some(&root),
            Some(&bad),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {r:#?}");
        assert!(
            r.body["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field.split('[').next().unwrap()),
            "{bad}: {r:#?}"
        );
    }
    let r = call(
        &node,
        "POST",
        "/v1/acl/tokens",
        Some(&root),
        Some(&json!({"name": "t", "policies": ["missing"]})),
    )
    .await;
    assert_eq!(r.status, 400, "{r:#?}");
    assert_eq!(r.body["field"], "policies");
    let r = call(
        &node,
        "POST",
        "/v1/acl/tokens",
        Some(&root),
        Some(&json!({"name": "t", "ttl": "soon"})),
    )
    .await;
    assert_eq!(r.status, 400, "{r:#?}");
    assert_eq!(r.body["field"], "ttl");
    // Secrets are shown once, at creation; lists and self never show them or their hash.
    let secret = token(&node, &root, "t", &["ro"], "").await;
    let me = call(&node, "GET", "/v1/acl/token/self", Some(&secret), None).await;
    assert_eq!(me.body["name"], "t");
    let tokens = call(&node, "GET", "/v1/acl/tokens", Some(&root), None).await;
    assert!(
        !tokens.text.contains(&secret) && !tokens.text.contains("hash"),
        "{}",
        tokens.text
    );
    let accessor = me.body["accessor"].as_str().unwrap();
    assert_eq!(
        call(
            &node,
            "DELETE",
            &format!("/v1/acl/tokens/{accessor}"),
            Some(&root),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(&node, "GET", "/v1/acl/token/self", Some(&secret), None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn bootstrap_happens_once_across_restarts_and_again_only_with_the_reset_file() {
    let mut node = acl_node().await;
    let root = bootstrap(&node).await;
    let again = call(&node, "POST", "/v1/acl/bootstrap", None, None).await;
    assert_eq!(again.status, 403, "{again:#?}");
    assert!(
        again.error().contains("acl-bootstrap-reset"),
        "{}",
        again.error()
    );
    let index = again.body["reset_index"].as_u64().unwrap();
    node.restart().await;
    assert_eq!(
        call(&node, "POST", "/v1/acl/bootstrap", None, None)
            .await
            .status,
        403
    );
    assert_eq!(
        call(&node, "GET", "/v1/acl/tokens", Some(&root), None)
            .await
            .status,
        200
    );
    // A wrong index is refused; the current one (written on the server's disk) works once.
    let reset = node.data_dir().join("acl-bootstrap-reset");
    std::fs::write(&reset, format!("{}", index + 7)).unwrap();
    assert_eq!(
        call(&node, "POST", "/v1/acl/bootstrap", None, None)
            .await
            .status,
        403
    );
    std::fs::write(&reset, format!("{index}\n")).unwrap();
    let second = bootstrap(&node).await;
    assert_ne!(second, root);
    assert!(!reset.exists(), "the reset file is consumed");
    assert_eq!(
        call(&node, "POST", "/v1/acl/bootstrap", None, None)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn a_configured_bootstrap_token_becomes_the_management_token() {
    let secret = "compose-bootstrap-secret-0123456789";
    let node = TestNode::start_configured("seeded", |c| {
        c.acl.enabled = true;
        c.acl.bootstrap_token = secret.into();
    })
    .await;
    wait_until(SOON, "the seeded token to work", async || {
        (call(&node, "GET", "/v1/acl/tokens", Some(secret), None)
            .await
            .status
            == 200)
            .then_some(())
    })
    .await;
    assert_eq!(
        call(&node, "POST", "/v1/acl/bootstrap", None, None)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn the_audit_log_records_writes_and_refusals_without_secrets() {
    let node = acl_node().await;
    let root = bootstrap(&node).await;
    call(
        &node,
        "POST",
        "/v1/jobs",
        Some(&root),
        Some(&shell_job("audited", "@manually", "true")),
    )
    .await;
    call(&node, "GET", "/v1/jobs", Some("wrong-secret"), None).await;
    call(&node, "GET", "/v1/jobs/audited", Some(&root), None).await;
    let path = node.data_dir().join("audit.log");
    let lines: Vec<Value> = wait_until(SOON, "three audit lines", async || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines.len() >= 3).then_some(lines)
    })
    .await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(&root) && !text.contains("wrong-secret"),
        "{text}"
    );
    let create = lines
        .iter()
        .find(|l| l["method"] == "POST" && l["path"] == "/v1/jobs")
        .expect("the create");
    assert_eq!(create["job"], "audited");
    assert_eq!(create["status"], 201);
    assert_eq!(create["token_name"], "bootstrap");
    assert!(
        create["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{create}"
    );
    let refused = lines
        .iter()
        .find(|l| l["status"] == 401)
        .expect("the refusal");
    assert_eq!(refused["path"], "/v1/jobs");
    // Reads that were allowed are not audited.
    assert!(
        !lines.iter().any(|l| l["path"] == "/v1/jobs/audited"),
        "{lines:#?}"
    );
}

/// Dkron Pro's CLI flow against the real binary, ACLs turned on by `DKRON_ACL_ENABLED`:
/// bootstrap, a policy from a rules file, a client token, and the API commands with `--token`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_commands_bootstrap_and_hand_out_tokens() {
    use crate::support::{Agent, dkron_command, free_port, run_to_exit};
    let home = tempfile::tempdir().unwrap();
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = dkron_command(home.path());
    cmd.env("DKRON_ACL_ENABLED", "true").args([
        "agent",
        "--server",
        "--bootstrap-expect=1",
        &format!("--data-dir={}", home.path().join("data").display()),
        &format!("--http-addr={http}"),
        "--bind-addr=127.0.0.1:0",
        &format!("--rpc-port={}", free_port()),
        "--node-name=acl-cli",
    ]);
    let _agent = Agent::spawn(cmd, http, home.path().join("agent.log"));
    let address = format!("--address=http://{http}");
    let dkron = |args: &[&str], token: Option<&str>| {
        let mut cmd = dkron_command(home.path());
        cmd.args(args).arg(&address);
        if let Some(t) = token {
            cmd.env("DKRON_TOKEN", t);
        }
        run_to_exit(cmd, Duration::from_secs(20))
    };
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).to_string();
    let out = wait_until(Duration::from_secs(20), "the bootstrap", async || {
        let out = dkron(&["acl", "bootstrap"], None);
        out.status.success().then_some(out)
    })
    .await;
    let printed = text(&out);
    assert!(
        printed.contains("Accessor ID: ") && printed.contains("Type: management"),
        "{printed}"
    );
    let root = printed
        .lines()
        .find_map(|l| l.strip_prefix("Secret: "))
        .expect("the secret is printed")
        .to_string();
    // Without the token the API commands are refused, saying how to send one.
    let out = dkron(&["jobs", "list"], None);
    assert!(
        !out.status.success() && err(&out).contains("Authorization: Bearer"),
        "{}",
        err(&out)
    );
    let rules = home.path().join("readonly.json");
    std::fs::write(&rules, r#"{"path": {"/v1/jobs": {"capabilities": ["list", "read"]}, "/v1/jobs/*": {"capabilities": ["read"]}}}"#).unwrap();
    let out = dkron(
        &[
            "acl",
            "policy",
            "apply",
            "-n",
            "readonly",
            "-r",
            rules.to_str().unwrap(),
        ],
        Some(&root),
    );
    assert!(out.status.success(), "{}", err(&out));
    let out = dkron(&["acl", "policy", "list"], Some(&root));
    assert!(text(&out).starts_with("readonly\t"), "{}", text(&out));
    let out = dkron(
        &[
            "acl", "token", "create", "-n", "alice", "-t", "client", "-p", "readonly",
        ],
        Some(&root),
    );
    assert!(out.status.success(), "{}", err(&out));
    let alice = text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("Secret: "))
        .expect("alice's secret")
        .to_string();
    let out = dkron(&["jobs", "list"], Some(&alice));
    assert!(out.status.success(), "{}", err(&out));
    let job = home.path().join("job.json");
    std::fs::write(&job, r#"{"name":"nope","schedule":"@manually","executor":"shell","executor_config":{"command":"true"}}"#).unwrap();
    let out = dkron(&["jobs", "apply", job.to_str().unwrap()], Some(&alice));
    assert!(
        !out.status.success() && err(&out).contains("lacks the create capability"),
        "{}",
        err(&out)
    );
    let out = dkron(&["acl", "token", "list", "--json"], Some(&root));
    let list: Value = serde_json::from_str(&text(&out)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let accessor = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "alice")
        .unwrap()["accessor"]
        .as_str()
        .unwrap()
        .to_string();
    let out = dkron(&["acl", "token", "delete", &accessor], Some(&root));
    assert!(out.status.success(), "{}", err(&out));
    let out = dkron(&["jobs", "list"], Some(&alice));
    assert!(
        !out.status.success() && err(&out).contains("unknown ACL token"),
        "{}",
        err(&out)
    );
    let out = dkron(&["acl", "bootstrap"], None);
    assert!(
        !out.status.success() && err(&out).contains("already done"),
        "{}",
        err(&out)
    );
}

#[tokio::test]
async fn the_dashboard_says_whether_acls_are_on_and_its_files_need_no_token() {
    let on = acl_node().await;
    let off = TestNode::start().await;
    for (node, flag) in [(&on, "true"), (&off, "false")] {
        let page = send(node.client.get(node.url("/ui/"))).await;
        assert_eq!(page.status, 200);
        assert!(
            page.text
                .contains(&format!("window.DKRON_ACL_ENABLED = {flag};")),
            "{}",
            page.text
        );
        let auth = send(node.client.get(node.url("/ui/auth.js"))).await;
        assert_eq!(auth.status, 200);
        assert!(auth.text.contains("Bearer"), "{}", auth.text);
    }
    // Its data is not public: the API behind it still asks for a token.
    assert_eq!(call(&on, "GET", "/v1/jobs", None, None).await.status, 401);
}
