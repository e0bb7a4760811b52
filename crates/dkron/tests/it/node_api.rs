//! Node-level routes: health, status, members, leader, pause, X-Whom, CORS and restore.

use serde_json::{Value, json};

use crate::support::{TestNode, send, shell_job};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_healthy() {
    let node = TestNode::start().await;
    let r = node.get("/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"status": "healthy", "executors": {
            "shell": {"status": "healthy"}, "http": {"status": "healthy"},
            "nats": {"status": "healthy"}, "rabbitmq": {"status": "healthy"},
            "kafka": {"status": "healthy"}, "grpc": {"status": "healthy"},
            "gcppubsub": {"status": "healthy"}}})
    );
    // A node limited by --executors says which it does not run.
    let limited =
        TestNode::start_configured("limited", |c| c.executors = vec!["http".into()]).await;
    let r = limited.get("/health").await;
    assert_eq!(r.body["executors"]["shell"]["status"], "disabled");
    assert_eq!(r.body["executors"]["http"]["status"], "healthy");
    assert_eq!(r.body["executors"]["nats"]["status"], "disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_agent_with_and_without_trailing_slash() {
    let node = TestNode::start_named("status-node").await;
    for path in ["/v1", "/v1/"] {
        let r = node.get(path).await;
        assert_eq!(r.status, 200, "{path}: {r:#?}");
        assert_eq!(r.body["agent"]["name"], "status-node", "{path}");
        assert!(r.body["agent"]["version"].is_string());
        assert_eq!(r.body["tags"]["role"], "dkron");
        assert!(r.body["serf"].is_object());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_lists_this_server_in_serf_shape() {
    let node = TestNode::start().await;
    let r = node.get("/v1/members").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.total_count(), Some(1));
    let members = r.array();
    assert_eq!(members.len(), 1);
    let m = &members[0];
    assert_eq!(m["Name"], "test-node");
    assert_eq!(m["Addr"], "127.0.0.1");
    assert!(m["Port"].is_u64(), "{m:#}");
    assert_eq!(m["Status"], 1);
    assert_eq!(m["statusText"], "alive");
    let tags = &m["Tags"];
    assert_eq!(tags["server"], "true");
    assert_eq!(tags["role"], "dkron");
    assert_eq!(tags["dc"], "dc1");
    assert_eq!(tags["region"], "global");
    assert_eq!(tags["expect"], "1");
    let rpc_port = tags["port"].as_str().unwrap();
    assert_eq!(tags["rpc_addr"], format!("127.0.0.1:{rpc_port}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_isleader_report_this_node() {
    let node = TestNode::start().await;
    let r = node.get("/v1/leader").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body["Name"], "test-node");
    assert_eq!(r.body["Tags"]["server"], "true");
    let r = node.get("/v1/isleader").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body, json!("I am a leader"));
}

/// Dkron's TestAPIPauseUnpause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_blocks_submissions_until_unpause() {
    let node = TestNode::start().await;
    let job = shell_job("paused-job", "@every 1h", "true");
    assert_eq!(node.get("/v1/pause").await.body, json!({"paused": false}));
    let r = node.post_empty("/v1/pause").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body, json!({"paused": true}));
    assert_eq!(node.get("/v1/pause").await.body, json!({"paused": true}));

    let r = node.post("/v1/jobs", &job).await;
    assert_eq!(r.status, 503, "{r:#?}");
    assert!(r.error().contains("paused"), "{r:#?}");
    let r = node.put("/v1/jobs/paused-job", &job).await;
    assert_eq!(r.status, 503, "{r:#?}");
    assert_eq!(node.get("/v1/jobs/paused-job").await.status, 404);

    let r = node.post_empty("/v1/unpause").await;
    assert_eq!(r.body, json!({"paused": false}));
    assert_eq!(node.get("/v1/pause").await.body, json!({"paused": false}));
    assert_eq!(node.post("/v1/jobs", &job).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_answer_names_the_node_in_x_whom() {
    let node = TestNode::start_named("whom-node").await;
    for r in [
        node.get("/v1").await,
        node.get("/v1/jobs").await,
        node.get("/v1/jobs/missing").await,
        node.post_raw("/v1/jobs", "not json").await,
        node.get("/v1/no-such-route").await,
    ] {
        assert_eq!(r.header("x-whom"), Some("whom-node"), "{r:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered() {
    let node = TestNode::start().await;
    let req = node
        .client
        .request(reqwest::Method::OPTIONS, node.url("/v1/jobs"))
        .header("Origin", "http://ui.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type");
    let r = send(req).await;
    assert!((200..300).contains(&r.status), "{r:#?}");
    assert!(r.header("access-control-allow-origin").is_some(), "{r:#?}");
    assert!(r.header("access-control-allow-methods").is_some(), "{r:#?}");

    let simple = send(
        node.client
            .get(node.url("/v1/jobs"))
            .header("Origin", "http://ui.example"),
    )
    .await;
    assert_eq!(simple.header("access-control-allow-origin"), Some("*"));
}

async fn restore(node: &TestNode, body: Vec<u8>) -> crate::support::Resp {
    send(
        node.client
            .post(node.url("/v1/restore"))
            .header("Content-Type", crate::support::MULTIPART_TYPE)
            .body(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_creates_parents_before_children() {
    let node = TestNode::start().await;
    let jobs = json!([
        {"name": "grandchild", "parent_job": "middle", "executor": "shell",
         "executor_config": {"command": "true"}},
        {"name": "middle", "parent_job": "root", "executor": "shell",
         "executor_config": {"command": "true"}},
        {"name": "root", "schedule": "@every 1h", "executor": "shell",
         "executor_config": {"command": "true"}, "success_count": 7},
    ]);
    let r = restore(&node, crate::support::multipart("file", &jobs.to_string())).await;
    assert_eq!(r.status, 200, "{r:#?}");
    let inner = r
        .body
        .as_str()
        .unwrap_or_else(|| panic!("restore answers a JSON string: {r:#?}"));
    let results: Vec<String> = serde_json::from_str(inner).expect("a JSON array inside");
    for name in ["root", "middle", "grandchild"] {
        assert!(
            results.contains(&format!("success create {name}")),
            "{name}: {results:?}"
        );
    }
    assert!(!inner.contains("fail"), "{results:?}");
    assert_eq!(node.job("root").await["dependent_jobs"], json!(["middle"]));
    assert_eq!(
        node.job("middle").await["dependent_jobs"],
        json!(["grandchild"])
    );
    assert_eq!(
        node.job("root").await["success_count"],
        7,
        "restore keeps counters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_reports_invalid_jobs_as_fail() {
    let node = TestNode::start().await;
    let jobs = json!([
        {"name": "good", "schedule": "@every 1h", "executor": "shell",
         "executor_config": {"command": "true"}},
        {"name": "Bad Name", "schedule": "@every 1h"},
    ]);
    let r = restore(&node, crate::support::multipart("file", &jobs.to_string())).await;
    assert_eq!(r.status, 200, "{r:#?}");
    let results: Vec<String> = serde_json::from_str(r.body.as_str().unwrap()).unwrap();
    assert!(
        results.contains(&"success create good".to_string()),
        "{results:?}"
    );
    assert!(
        results.contains(&"fail create Bad Name".to_string()),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_without_the_file_part_is_400() {
    let node = TestNode::start().await;
    let r = restore(&node, crate::support::multipart("other", "[]")).await;
    assert_eq!(r.status, 400, "{r:#?}");
    assert!(r.error().contains("file"), "{r:#?}");

    let r = restore(
        &node,
        crate::support::multipart("file", "{\"not\": \"an array\"}"),
    )
    .await;
    assert_eq!(r.status, 400, "{r:#?}");
    assert!(r.error().contains("file"), "{r:#?}");
    assert_eq!(node.get("/v1/jobs").await.body, Value::Array(vec![]));
}

fn restore_results(r: &crate::support::Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{r:#?}");
    serde_json::from_str(r.body.as_str().expect("a JSON string")).expect("a JSON array inside")
}

/// What a dump can hold that a plain create cannot: a parent that is missing, a cycle, names
/// that exist already (replaced, their history kept), the same name twice; and a dump larger
/// than the body limit is a clear 413, with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_handles_missing_parents_cycles_existing_names_and_size() {
    let node = TestNode::start().await;
    let mut existing = crate::support::shell_job("kept", "@every 1h", "true");
    existing["displayname"] = json!("before");
    node.create(&existing).await;
    node.run("kept").await;
    node.wait_finished("kept", 1, crate::support::SOON).await;
    let shell = |name: &str, parent: &str| {
        let schedule = if parent.is_empty() { "@manually" } else { "" };
        json!({"name": name, "parent_job": parent, "schedule": schedule, "executor": "shell",
               "executor_config": {"command": "true"}})
    };
    let mut replaced = existing.clone();
    replaced["displayname"] = json!("after");
    let jobs = json!([
        shell("orphan", "nowhere"),
        shell("ping", "pong"),
        shell("pong", "ping"),
        replaced,
        shell("twice", ""),
        shell("twice", ""),
    ]);
    let results = restore_results(
        &restore(&node, crate::support::multipart("file", &jobs.to_string())).await,
    );
    for expected in [
        "fail create orphan",
        "fail create ping",
        "fail create pong",
        "success create kept",
        "success create twice",
    ] {
        assert!(
            results.iter().any(|r| r == expected),
            "{expected}: {results:?}"
        );
    }
    assert_eq!(
        results.len(),
        6,
        "one line per job in the dump: {results:?}"
    );
    for gone in ["orphan", "ping", "pong"] {
        assert_eq!(
            node.get(&format!("/v1/jobs/{gone}")).await.status,
            404,
            "{gone}"
        );
    }
    let kept = node.job("kept").await;
    assert_eq!(kept["displayname"], "after");
    assert_eq!(node.executions("kept").await.len(), 1, "history kept");

    // Larger than the body limit: refused as such, nothing written.
    let big: Vec<Value> = (0..40_000)
        .map(|i| shell(&format!("bulk-{i:05}"), ""))
        .collect();
    // The server answers 413 as soon as the limit is passed and closes the connection with
    // the rest unread, so the client either reads the 413 or, if it was still writing, has
    // its write cut (a broken pipe or reset, never a hang or a 5xx).
    let answer = node
        .client
        .post(node.url("/v1/restore"))
        .header("Content-Type", crate::support::MULTIPART_TYPE)
        .body(crate::support::multipart(
            "file",
            &Value::Array(big).to_string(),
        ))
        .send()
        .await;
    match answer {
        Ok(r) => {
            assert_eq!(r.status(), 413);
            let body: Value = r.json().await.unwrap();
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{body}"
            );
        }
        Err(e) => assert!(e.is_request() && !e.is_timeout(), "{e:?}"),
    }
    assert_eq!(node.get("/v1/jobs/bulk-00000").await.status, 404);
}

/// Decision 3: a restore that is not multipart at all is still a 4xx with a JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_of_a_non_multipart_body_is_a_4xx_json_error() {
    let node = TestNode::start().await;
    let r = node.post("/v1/restore", &json!([])).await;
    assert!((400..500).contains(&r.status), "{r:#?}");
    assert!(!r.error().is_empty(), "{r:#?}");
}

/// The dashboard is embedded: `/` sends a browser to it (303, as Dkron) and its assets come
/// with their types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_at_ui() {
    let node = crate::support::TestNode::start().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let browser = |path: &str| {
        client
            .get(node.url(path))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
    };
    let root = browser("/").send().await.unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/ui/");
    // Not a browser: nothing at /.
    assert_eq!(
        client.get(node.url("/")).send().await.unwrap().status(),
        404
    );
    let ui = browser("/ui").send().await.unwrap();
    assert_eq!(ui.status(), 301);
    assert_eq!(ui.headers()["location"], "/ui/");
    for (path, kind, needle) in [
        ("/ui/", "text/html", "/ui/app.js"),
        ("/ui/app.js", "text/javascript", "/v1"),
        ("/ui/style.css", "text/css", "prefers-color-scheme"),
    ] {
        let r = client.get(node.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
}

/// A web page of another site cannot change the cluster through an operator's browser: the
/// simple cross-origin POST a form sends (no pre-flight) is refused, while scripts (no
/// `Origin`), the dashboard (same origin) and listed origins go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_writes_are_refused() {
    let node = TestNode::start_configured("csrf-node", |c| {
        c.http_allowed_origins = vec!["https://ops.example.com".into()]
    })
    .await;
    let job = |name: &str| shell_job(name, "@manually", "id > pwned").to_string();
    let post = |origin: Option<String>, name: &str| {
        let mut req = node
            .client
            .post(node.url("/v1/jobs"))
            .header("content-type", "text/plain")
            .body(job(name));
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        send(req)
    };
    let evil = post(Some("http://evil.example".into()), "evil").await;
    assert_eq!(evil.status, 403, "{evil:#?}");
    assert!(evil.error().contains("--http-allowed-origins"), "{evil:#?}");
    assert_eq!(
        node.get("/v1/jobs/evil").await.status,
        404,
        "nothing was created"
    );
    let own = node.base.clone();
    assert_eq!(post(Some(own), "dashboard").await.status, 201);
    assert_eq!(
        post(Some("https://ops.example.com".into()), "ops")
            .await
            .status,
        201
    );
    assert_eq!(post(None, "script").await.status, 201);
    // Reads from anywhere still answer, with CORS.
    let read = send(
        node.client
            .get(node.url("/v1/jobs"))
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("access-control-allow-origin"), Some("*"));
}

/// `/debug/vars`, which Dkron's end-to-end tests read: Go's expvar shape, secrets redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_vars_answers_gos_expvar_shape() {
    let node = crate::support::TestNode::start().await;
    node.create(&crate::support::shell_job("exp", "@every 1h", "true"))
        .await;
    let r = node.get("/debug/vars").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert!(r.body["cmdline"].is_array(), "{r:#?}");
    assert!(r.body["memstats"]["Alloc"].as_u64().unwrap() > 0, "{r:#?}");
    assert!(r.body["memstats"]["Sys"].is_u64());
    assert_eq!(r.body["node"], "test-node");
    assert_eq!(r.body["scheduler_started"], 1);
    assert_eq!(
        r.body["cron_entries"]["exp"],
        "Job: exp, scheduled at: @every 1h, tags:map[]"
    );
}
