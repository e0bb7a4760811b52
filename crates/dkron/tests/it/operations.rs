//! Operations: metrics (Prometheus, StatsD), processors (files, log, syslog, fluent) and
//! notifications (webhooks, email, the notify policy), each against a local receiver.

use std::time::Duration;

use base64::Engine;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};

use crate::support::*;

const BOUND: Duration = Duration::from_secs(20);

/// Creates a shell job, runs it once and waits for the result.
async fn run_once(node: &TestNode, job: serde_json::Value) -> serde_json::Value {
    let name = job["name"].as_str().unwrap().to_string();
    node.create(&job).await;
    let before = node.executions(&name).await.len();
    assert_eq!(node.run(&name).await.status, 200);
    let all = node.wait_finished(&name, before + 1, BOUND).await;
    all.into_iter()
        .filter(is_finished)
        .max_by_key(|e| e["started_at"].as_str().unwrap_or_default().to_string())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_count_executions_jobs_and_raft() {
    let node = TestNode::start_configured("metrics-node", |c| c.enable_prometheus = true).await;
    run_once(&node, shell_job("ok-job", "@manually", "echo fine")).await;
    run_once(&node, shell_job("bad-job", "@manually", "exit 3")).await;
    let r = client().get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        r.headers()
    );
    // Served with the API's layers, as every route of the HTTP port.
    assert_eq!(r.headers()["x-whom"], "metrics-node");
    let expected = [
        "# TYPE dkron_job_executions_succeeded_total counter",
        "dkron_job_executions_succeeded_total{job_name=\"ok-job\"} 1",
        "dkron_job_executions_failed_total{job_name=\"bad-job\"} 1",
        "dkron_job_execution_duration_seconds_bucket{job_name=\"ok-job\",le=\"0.1\"}",
        "dkron_job_execution_duration_seconds_count{job_name=\"bad-job\"} 1",
        "dkron_jobs{status=\"success\"} 1",
        "dkron_jobs{status=\"failed\"} 1",
        "dkron_jobs{status=\"untriggered\"} 0",
        "dkron_executions_running 0",
        "dkron_raft_is_leader 1",
        "dkron_raft_voters 1",
        "dkron_scheduler_behind_seconds 0",
        "dkron_members{status=\"alive\"} 1",
        "dkron_raft_commit_seconds_count",
        "dkron_raft_apply_seconds_count{phase=\"memory\"}",
        "dkron_raft_apply_seconds_count{phase=\"store\"}",
        "dkron_raft_leader_changes_total",
    ];
    // Polled: under `cargo test` other nodes in this process share the recorder, and a
    // gauge one of them set between our refresh and the render is corrected by the next.
    let mut last = String::new();
    let found = tokio::time::timeout(BOUND, async {
        loop {
            last = node.get_text("/metrics").await;
            if expected.iter().all(|e| last.contains(e)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let missing: Vec<_> = expected.iter().filter(|e| !last.contains(*e)).collect();
    assert!(found.is_ok(), "/metrics lacks {missing:?}:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_unless_enabled() {
    let node = TestNode::start().await;
    let r = node.get("/metrics").await;
    assert_eq!(r.status, 404, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsd_and_dogstatsd_receive_the_same_metrics() {
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = receiver.local_addr().unwrap().to_string();
    let dog = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dog_addr = dog.local_addr().unwrap().to_string();
    let node = TestNode::start_configured("statsd-node", |c| {
        c.statsd_addr = addr;
        c.dog_statsd_addr = dog_addr;
        c.dog_statsd_tags = vec!["env:test".into()];
    })
    .await;
    run_once(&node, shell_job("counted", "@manually", "true")).await;
    let mut seen = String::new();
    let found = tokio::time::timeout(BOUND, async {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = receiver.recv(&mut buf).await.unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
            if seen.contains("dkron_job_executions_succeeded_total:1|c|#job_name:counted") {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "statsd never got the execution counter; got:\n{seen}"
    );
    let mut seen = String::new();
    let found = tokio::time::timeout(BOUND, async {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = dog.recv(&mut buf).await.unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
            if seen.lines().any(|l| {
                l.starts_with("dkron_job_executions_succeeded_total:1|c|#")
                    && l.contains("job_name:counted")
                    && l.contains("env:test")
            }) {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "dogstatsd never got the tagged counter; got:\n{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_processor_stores_the_output_and_records_where() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("outputs");
    let mut job = shell_job("to-file", "@manually", "echo written to a file");
    job["processors"] = json!({"files": {"log_dir": log_dir.display().to_string()}});
    let execution = run_once(&node, job).await;
    let id = execution["id"].as_str().unwrap();
    let file = log_dir.join(format!("{id}.log"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "written to a file\n"
    );
    // forward defaults to false: the execution keeps only where the output went.
    assert_eq!(execution["output"], file.display().to_string());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_and_fluent_processors_deliver_to_their_receivers() {
    let node = TestNode::start().await;
    let syslog = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fluent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut job = shell_job("shipped", "@manually", "echo shipped line");
    job["processors"] = json!({
        "syslog": {"address": format!("udp://{}", syslog.local_addr().unwrap()), "forward": "true"},
        "fluent": {"host": "127.0.0.1", "port": fluent.local_addr().unwrap().port().to_string(), "tag": "dkron.jobs", "forward": "true"},
    });
    node.create(&job).await;
    assert_eq!(node.run("shipped").await.status, 200);

    let frame = tokio::time::timeout(BOUND, async {
        let (mut conn, _) = fluent.accept().await.unwrap();
        let mut bytes = Vec::new();
        conn.read_to_end(&mut bytes).await.unwrap();
        bytes
    })
    .await
    .expect("fluent receiver got nothing");
    let (tag, time, record): (String, u64, std::collections::BTreeMap<String, String>) =
        rmp_serde::from_slice(&frame).expect("a forward-protocol message [tag, time, record]");
    assert_eq!(tag, "dkron.jobs");
    assert!(time > 1_700_000_000, "time {time}");
    assert_eq!(record["job_name"], "shipped");
    assert_eq!(record["message"], "shipped line\n");
    assert_eq!(record["host"], "test-node");

    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(BOUND, syslog.recv(&mut buf))
        .await
        .expect("syslog receiver got nothing")
        .unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    // Facility cron (9), severity info (6): priority 78.
    assert!(line.starts_with("<78>"), "{line}");
    assert!(line.contains("dkron["), "{line}");
    assert!(
        line.contains("job=shipped") && line.contains("shipped line"),
        "{line}"
    );

    // forward=true on both: the execution keeps its output.
    let done = node.wait_finished("shipped", 1, BOUND).await;
    assert_eq!(done[0]["output"], "shipped line\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_processors_and_notifications_neither_block_children_nor_lose_the_output() {
    // Nothing listens at either port: every notification fails.
    let (dead_http, dead_smtp) = (free_port(), free_port());
    let node = TestNode::start_configured("failing-node", |c| {
        c.webhook_endpoint = format!("http://127.0.0.1:{dead_http}/hook");
        c.webhook_payload = "{{.JobName}}".into();
        c.pre_webhook_endpoint = c.webhook_endpoint.clone();
        c.pre_webhook_payload = "{{.JobName}}".into();
        c.mail_host = "127.0.0.1".into();
        c.mail_port = dead_smtp;
        c.mail_from = "dkron@example.com".into();
    })
    .await;
    let mut parent = shell_job("proc-parent", "@manually", "echo parent ran");
    parent["owner_email"] = json!("ops@example.com");
    // Nothing listens there: the processor fails.
    parent["processors"] =
        json!({"fluent": {"host": "127.0.0.1", "port": free_port().to_string()}});
    node.create(&parent).await;
    let mut child = shell_job("proc-child", "", "echo child ran");
    child["parent_job"] = json!("proc-parent");
    node.create(&child).await;
    assert_eq!(node.run("proc-parent").await.status, 200);
    let parent_runs = node.wait_finished("proc-parent", 1, BOUND).await;
    assert_eq!(parent_runs[0]["success"], true);
    assert_eq!(
        parent_runs[0]["output"], "parent ran\n",
        "output kept as it was"
    );
    let child_runs = node.wait_finished("proc-child", 1, BOUND).await;
    assert_eq!(child_runs[0]["output"], "child ran\n");
}

/// A receiver that accepts connections and never answers (a hung webhook, a stuck fluentd):
/// answers its port and how many connections it took.
async fn black_hole() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, accepted)
}

/// A port whose accept queue is full: a connect to it hangs (its SYNs are dropped) for
/// minutes. Keep what it answers alive for as long as the port must stay jammed.
async fn jammed() -> (u16, tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut queued = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        match tokio::time::timeout(Duration::from_millis(300), connect).await {
            Ok(Ok(c)) => queued.push(c),
            _ => break,
        }
    }
    (port, listener, queued)
}

/// Receivers that never answer hold nothing up: a fluent processor whose connect hangs is
/// cut off by the processor timeout (the output kept), the run is recorded, its child runs,
/// and the webhook reached a receiver that accepts and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_that_never_answer_hold_no_run_up() {
    let (hook_port, hook_calls) = black_hole().await;
    let (fluent_port, _jam, _queued) = jammed().await;
    let node = TestNode::start_configured("hung-node", |c| {
        c.webhook_endpoint = format!("http://127.0.0.1:{hook_port}/hook");
        c.webhook_payload = "{{.JobName}}".into();
    })
    .await;
    let mut parent = shell_job("hung-parent", "@manually", "echo parent ran");
    parent["processors"] =
        json!({"fluent": {"host": "127.0.0.1", "port": fluent_port.to_string()}});
    node.create(&parent).await;
    let mut child = shell_job("hung-child", "", "echo child ran");
    child["parent_job"] = json!("hung-parent");
    node.create(&child).await;
    assert_eq!(node.run("hung-parent").await.status, 200);
    // Without the processor's bound the connect would hang for minutes, past this wait.
    let parent_runs = node.wait_finished("hung-parent", 1, BOUND).await;
    assert_eq!(parent_runs[0]["success"], true);
    assert_eq!(parent_runs[0]["output"], "parent ran\n", "output kept");
    let child_runs = node.wait_finished("hung-child", 1, BOUND).await;
    assert_eq!(child_runs[0]["output"], "child ran\n");
    wait_until(
        BOUND,
        "the parent's webhook to reach the hung receiver",
        async || (hook_calls.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_follow_the_notify_policy_with_dkron_templates() {
    let sink = Sink::start().await;
    let post = sink.url("/post");
    let pre = sink.url("/pre");
    let node = TestNode::start_configured("hook-node", |c| {
        c.webhook_endpoint = post;
        c.webhook_payload =
            r#"{"job":"{{.JobName}}","success":{{.Success}},"node":"{{.NodeName}}"}"#.into();
        c.webhook_headers = vec![
            "Content-Type: application/json".into(),
            "X-Callback: http://host:9000/x".into(),
        ];
        c.pre_webhook_endpoint = pre;
        c.pre_webhook_payload = "start {{.JobName}} {{.ExecutionID}}".into();
        c.notify_on = "on_failure".into();
    })
    .await;
    let posts = |job: &str| {
        sink.requests()
            .into_iter()
            .filter(|r| r.path == "/post" && r.body.contains(&format!("\"job\":\"{job}\"")))
            .count()
    };

    // on_failure (the node's policy): a success sends nothing, a failure sends one. That the
    // success sent nothing is the policy's recorded decision, not a silence that might only be
    // slow: a quiet decision spawns no sender.
    let decided = |n: u64| {
        let decisions = node.h().notify_decisions();
        async move {
            let (notify, quiet) = decisions.counts();
            (notify + quiet >= n).then_some((notify, quiet))
        }
    };
    let good = run_once(&node, shell_job("good", "@manually", "true")).await;
    let after_good = wait_until(BOUND, "the policy's decision for good", || decided(1)).await;
    assert_eq!(
        after_good,
        (0, 1),
        "a success under on_failure was to notify"
    );
    run_once(&node, shell_job("bad", "@manually", "exit 1")).await;
    let after_bad = wait_until(BOUND, "the policy's decision for bad", || decided(2)).await;
    assert_eq!(after_bad, (1, 1), "a failure under on_failure stayed quiet");
    let hook = wait_until(BOUND, "the webhook for bad", async || {
        sink.requests()
            .into_iter()
            .find(|r| r.path == "/post" && r.body.contains("\"job\":\"bad\""))
    })
    .await;
    assert_eq!(
        hook.body,
        r#"{"job":"bad","success":false,"node":"hook-node"}"#
    );
    assert_eq!(hook.headers["content-type"], "application/json");
    assert_eq!(hook.headers["x-callback"], "http://host:9000/x");
    assert_eq!(posts("good"), 0, "a success under on_failure notified");

    // Pre-webhooks: exactly one per execution.
    let pres = wait_until(BOUND, "two pre-webhooks", async || {
        let pres: Vec<_> = sink
            .requests()
            .into_iter()
            .filter(|r| r.path == "/pre")
            .collect();
        (pres.len() >= 2).then_some(pres)
    })
    .await;
    assert_eq!(pres.len(), 2, "{pres:#?}");
    assert!(
        pres.iter()
            .any(|r| r.body == format!("start good {}", good["id"].as_str().unwrap())),
        "{pres:#?}"
    );

    // A job's own policy wins: on_change tells the first failure and the recovery only.
    let flag = tempfile::tempdir().unwrap();
    let flag_file = flag.path().join("flag");
    let mut watched = shell_job(
        "watched",
        "@manually",
        &format!("test -f {}", flag_file.display()),
    );
    watched["notify_on"] = json!("on_change");
    // fail, fail, succeed, succeed: notifications for the first failure and the recovery.
    let expected_after = [1, 1, 2, 2];
    node.create(&watched).await;
    for (i, expected) in expected_after.into_iter().enumerate() {
        if i == 2 {
            std::fs::write(&flag_file, "").unwrap();
        }
        assert_eq!(node.run("watched").await.status, 200);
        node.wait_finished("watched", i + 1, BOUND).await;
        wait_until(
            BOUND,
            &format!("{expected} webhook(s) for watched"),
            async || (posts("watched") >= expected).then_some(()),
        )
        .await;
    }
    assert_eq!(posts("watched"), 2);
}

/// An SMTP server that offers AUTH but not STARTTLS and would accept anything: answers every
/// line one client sent before it hung up.
async fn smtp_without_starttls(listener: TcpListener) -> Vec<String> {
    let (conn, _) = listener.accept().await.unwrap();
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut seen = Vec::new();
    write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        let verb = line.to_ascii_uppercase();
        seen.push(line);
        let answer: &[u8] = if verb.starts_with("EHLO") {
            b"250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
        } else if verb.starts_with("AUTH") {
            b"235 accepted\r\n"
        } else if verb.starts_with("QUIT") {
            let _ = write.write_all(b"221 bye\r\n").await;
            break;
        } else {
            b"250 OK\r\n"
        };
        if write.write_all(answer).await.is_err() {
            break;
        }
    }
    seen
}

/// With a mail password set, STARTTLS is required: a server that does not offer it never
/// sees the credentials (the email is not sent; without credentials it would be, as above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_cross_a_connection_without_starttls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = tokio::spawn(smtp_without_starttls(listener));
    let node = TestNode::start_configured("tls-mail-node", |c| {
        c.mail_host = "127.0.0.1".into();
        c.mail_port = port;
        c.mail_from = "dkron@example.com".into();
        c.mail_username = "dkron".into();
        c.mail_password = "hunter2-secret".into();
    })
    .await;
    let mut job = shell_job("mailed-secure", "@manually", "exit 1");
    job["owner_email"] = json!("ops@example.com");
    run_once(&node, job).await;
    let seen = tokio::time::timeout(BOUND, received)
        .await
        .expect("the client hung up within the bound")
        .unwrap();
    assert!(
        seen.iter()
            .any(|l| l.to_ascii_uppercase().starts_with("EHLO")),
        "{seen:?}"
    );
    let secret = base64::engine::general_purpose::STANDARD.encode("\0dkron\0hunter2-secret");
    for line in &seen {
        let upper = line.to_ascii_uppercase();
        assert!(
            !upper.starts_with("AUTH") && !upper.starts_with("MAIL") && !line.contains(&secret),
            "sent over a plain connection: {seen:?}"
        );
    }
}

/// A minimal SMTP server that accepts one message and answers what it received.
async fn smtp_sink(listener: TcpListener) -> (Vec<String>, String) {
    let (conn, _) = listener.accept().await.unwrap();
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut envelope = Vec::new();
    let mut data = String::new();
    write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
    while let Some(line) = lines.next_line().await.unwrap() {
        let verb = line.to_ascii_uppercase();
        if verb.starts_with("EHLO") || verb.starts_with("HELO") {
            write
                .write_all(b"250-sink\r\n250 8BITMIME\r\n")
                .await
                .unwrap();
        } else if verb.starts_with("MAIL") || verb.starts_with("RCPT") {
            envelope.push(line.clone());
            write.write_all(b"250 OK\r\n").await.unwrap();
        } else if verb.starts_with("DATA") {
            write.write_all(b"354 go ahead\r\n").await.unwrap();
            while let Some(body) = lines.next_line().await.unwrap() {
                if body == "." {
                    break;
                }
                data.push_str(&body);
                data.push('\n');
            }
            write.write_all(b"250 queued\r\n").await.unwrap();
        } else if verb.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await.unwrap();
            break;
        } else {
            write.write_all(b"250 OK\r\n").await.unwrap();
        }
    }
    (envelope, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reports_reach_the_owner() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = tokio::spawn(smtp_sink(listener));
    let node = TestNode::start_configured("mail-node", |c| {
        c.mail_host = "127.0.0.1".into();
        c.mail_port = port;
        c.mail_from = "dkron@example.com".into();
        c.mail_payload = "{{.JobName}} failed on {{.NodeName}}:\n{{.Output}}".into();
    })
    .await;
    let mut job = shell_job("mailed", "@manually", "echo out of disk; exit 2");
    job["owner_email"] = json!("ops@example.com");
    run_once(&node, job).await;
    let (envelope, data) = tokio::time::timeout(BOUND, received)
        .await
        .expect("no email within the bound")
        .unwrap();
    assert!(
        envelope.iter().any(|l| l.contains("<ops@example.com>")),
        "{envelope:?}"
    );
    assert!(
        envelope.iter().any(|l| l.contains("<dkron@example.com>")),
        "{envelope:?}"
    );
    assert!(
        data.contains("Subject: [Dkron]Failed mailed execution report"),
        "{data}"
    );
    assert!(data.contains("mailed failed on mail-node:"), "{data}");
    assert!(data.contains("out of disk"), "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronitor_hears_run_and_the_real_outcome() {
    let sink = Sink::start().await;
    let endpoint = sink.url("/ping");
    let node = TestNode::start_configured("cron-node", |c| c.cronitor_endpoint = endpoint).await;
    // One retry: two attempts, each its own Cronitor series, each opened and closed.
    let mut job = shell_job("pinged", "@manually", "exit 1");
    job["retries"] = json!(1);
    node.create(&job).await;
    assert_eq!(node.run("pinged").await.status, 200);
    let attempts = node.wait_finished("pinged", 2, BOUND).await;
    let pings = wait_until(BOUND, "four cronitor pings", async || {
        let pings: Vec<_> = sink
            .requests()
            .into_iter()
            .filter(|r| r.path == "/ping/pinged")
            .collect();
        (pings.len() >= 4).then_some(pings)
    })
    .await;
    let queries: Vec<&str> = pings.iter().map(|p| p.query.as_str()).collect();
    for attempt in &attempts {
        let series = format!("series={}", attempt["id"].as_str().unwrap());
        for state in ["state=run", "state=fail"] {
            assert!(
                queries
                    .iter()
                    .any(|q| q.contains(state) && q.contains(&series)),
                "{series} lacks {state}: {queries:?}"
            );
        }
    }
    // Dkron's failure ping says "complete" in its message; ours says what happened.
    assert!(
        queries
            .iter()
            .any(|q| q.contains("state=fail") && q.contains("message=Job+fail+by+Dkron")),
        "{queries:?}"
    );
}

/// Templates see the whole output, not the 1 KiB tail the replicated record keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_carry_the_whole_output() {
    let sink = Sink::start().await;
    let hook = sink.url("/out");
    let node = TestNode::start_configured("output-node", |c| {
        c.webhook_endpoint = hook;
        c.webhook_payload = "{{.Output}}".into();
    })
    .await;
    run_once(
        &node,
        shell_job(
            "long-output",
            "@manually",
            "head -c 5000 /dev/zero | tr '\\0' x",
        ),
    )
    .await;
    let body = wait_until(BOUND, "the webhook", async || {
        sink.requests()
            .into_iter()
            .find(|r| r.path == "/out")
            .map(|r| r.body)
    })
    .await;
    assert_eq!(body, "x".repeat(5000));
}

/// A leader too far behind refuses client writes with 503 and `Retry-After` (instead of
/// letting them hang), while its own work — firing and recording runs — goes on; when the
/// backlog is gone, writes are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_leader_sheds_client_writes_but_keeps_scheduling() {
    let node = TestNode::start().await;
    node.create(&shell_job("ticker", "@every 1s", "true")).await;
    node.create(&shell_job("spare", "@every 1s", "true")).await;
    node.wait_finished("ticker", 1, BOUND).await;

    // Overloaded on demand: no client write may queue behind what waits.
    node.h().proposer().set_write_queue(0);
    let refused = node
        .post("/v1/jobs", &shell_job("late", "@every 1h", "true"))
        .await;
    assert_eq!(refused.status, 503, "{refused:#?}");
    assert_eq!(refused.headers["retry-after"], "1", "{refused:#?}");
    assert_eq!(refused.body["retry_after"], 1);
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .contains("the leader is behind"),
        "{refused:#?}"
    );
    let toggle = node.post_empty("/v1/jobs/ticker/toggle").await;
    assert_eq!(toggle.status, 503, "{toggle:#?}");
    assert_eq!(
        node.get("/v1/jobs/late").await.status,
        404,
        "nothing was written"
    );
    // What takes load off is taken even now, or the operator could not end the overload:
    // deleting a job, saving one disabled.
    let deleted = node.delete("/v1/jobs/spare").await;
    assert_eq!(deleted.status, 200, "{deleted:#?}");
    assert_eq!(node.get("/v1/jobs/spare").await.status, 404);
    let mut quiet = shell_job("quiet", "@every 1s", "true");
    quiet["disabled"] = true.into();
    let saved = node.post("/v1/jobs", &quiet).await;
    assert_eq!(saved.status, 201, "{saved:#?}");

    // The scheduler's claims and the results are not client writes: the job keeps running.
    let before = node.executions("ticker").await.len();
    node.wait_finished("ticker", before + 2, BOUND).await;
    assert_eq!(node.job("ticker").await["disabled"], false);

    node.h().proposer().set_write_queue(4096);
    let taken = node
        .post("/v1/jobs", &shell_job("late", "@every 1h", "true"))
        .await;
    assert_eq!(taken.status, 201, "{taken:#?}");
}
