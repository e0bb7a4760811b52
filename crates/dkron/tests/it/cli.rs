//! The `dkron` command line: keygen, version, flag errors, and config precedence
//! (flag > environment > file > default).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;

use crate::support::{Agent, Sink, dkron_command, free_port, run_to_exit, wait_until};

const EXIT_BOUND: Duration = Duration::from_secs(15);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Flags that keep a misbehaving agent (one that starts when it should refuse) off fixed ports.
fn safe_agent(home: &Path) -> Command {
    let mut cmd = dkron_command(home);
    cmd.args([
        "agent",
        &format!("--data-dir={}", home.join("data").display()),
        "--http-addr=127.0.0.1:0",
        "--bind-addr=127.0.0.1:0",
        "--rpc-port=0",
    ]);
    cmd
}

#[test]
fn keygen_prints_only_a_16_byte_base64_key() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = dkron_command(home.path());
    cmd.arg("keygen");
    let out = run_to_exit(cmd, EXIT_BOUND);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {text:?}");
    let key = base64::engine::general_purpose::STANDARD
        .decode(lines[0])
        .unwrap_or_else(|e| panic!("{:?} is not base64: {e}", lines[0]));
    assert_eq!(key.len(), 16);
    assert_eq!(text, format!("{}\n", lines[0]), "nothing else on stdout");
}

#[test]
fn version_names_dkron() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = dkron_command(home.path());
    cmd.arg("version");
    let out = run_to_exit(cmd, EXIT_BOUND);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("Name: Dkron"), "{}", stdout(&out));
}

#[test]
fn unknown_agent_flag_fails_with_an_error() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = safe_agent(home.path());
    cmd.arg("--bogus-flag");
    let out = run_to_exit(cmd, EXIT_BOUND);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("bogus-flag"), "{}", stderr(&out));
}

/// Agent invocations that must be refused, with a word the message must contain.
#[test]
fn unsupported_or_invalid_agent_settings_are_refused_clearly() {
    let cases: [(&[&str], &str); 12] = [
        (&["--server"], "bootstrap-expect"),
        (&["--node-name=lonely-agent"], "--retry-join"),
        (
            &["--server", "--bootstrap-expect=1", "--encrypt=not-base64!"],
            "--encrypt",
        ),
        (
            &["--retry-join=127.0.0.1:1", "--retry-interval=forever"],
            "retry-interval",
        ),
        (
            &["--server", "--bootstrap-expect=1", "--tag", "nope"],
            "invalid tag",
        ),
        (
            &["--server", "--bootstrap-expect=1", "--raft-multiplier=11"],
            "raft-multiplier",
        ),
        (
            &[
                "--server",
                "--bootstrap-expect=1",
                "--config=/nonexistent.yml",
            ],
            "/nonexistent.yml",
        ),
        (
            &[
                "--server",
                "--bootstrap-expect=1",
                "--http-allowed-origins=ops.example.com/x",
            ],
            "scheme://host[:port]",
        ),
        (
            &["--server", "--bootstrap-expect=1", "--cert-file=/x.pem"],
            "go together",
        ),
        (
            &[
                "--server",
                "--bootstrap-expect=1",
                "--cert-file=/x.pem",
                "--key-file=/x.key",
            ],
            "trusted-ca-file",
        ),
        (
            &["--server", "--bootstrap-expect=1", "--client-cert-auth"],
            "needs HTTPS",
        ),
        (
            &[
                "--server",
                "--bootstrap-expect=1",
                "--cert-file=/no/node.pem",
                "--key-file=/no/node.key",
                "--trusted-ca-file=/no/ca.pem",
            ],
            "cannot read trusted-ca-file /no/ca.pem",
        ),
    ];
    for (args, needle) in cases {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = safe_agent(home.path());
        cmd.args(args);
        let out = run_to_exit(cmd, EXIT_BOUND);
        assert!(!out.status.success(), "{args:?} should fail: {out:?}");
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: stderr should mention {needle:?}: {}",
            stderr(&out)
        );
    }
}

/// Starts an agent with `extra` arguments (and env) and returns the name GET /v1 reports.
async fn reported_name(home: &Path, extra: &[&str], env: &[(&str, String)]) -> (String, Agent) {
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = dkron_command(home);
    cmd.args([
        "agent",
        &format!("--http-addr={http}"),
        "--bind-addr=127.0.0.1:0",
        &format!("--rpc-port={}", free_port()),
        "--log-level=warn",
    ]);
    cmd.args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log = home.join(format!("agent-{}.log", http.port()));
    let mut agent = Agent::spawn(cmd, http, log);
    agent.wait_leader(Duration::from_secs(20)).await;
    let r = agent.api.get("/v1").await;
    assert_eq!(r.status, 200, "{r:#?}");
    let name = r.body["agent"]["name"].as_str().unwrap().to_string();
    (name, agent)
}

fn write_config(home: &Path) -> String {
    let path = home.join("dkron.yml");
    std::fs::write(
        &path,
        format!(
            "node-name: from-file\nserver: true\nbootstrap-expect: 1\ndata-dir: {}\n",
            home.join("file-data").display()
        ),
    )
    .unwrap();
    format!("--config={}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_supplies_settings_and_a_flag_overrides_it() {
    let home = tempfile::tempdir().unwrap();
    let config = write_config(home.path());
    let (name, agent) = reported_name(home.path(), &[&config], &[]).await;
    assert_eq!(name, "from-file", "log:\n{}", agent.log_text());
    assert!(home.path().join("file-data").join("raft.redb").exists());
    drop(agent);

    // A new node name is a new Raft member: give it its own data dir.
    let other = format!("--data-dir={}", home.path().join("flag-data").display());
    let (name, agent) = reported_name(
        home.path(),
        &[&config, "--node-name", "from-flag", &other],
        &[],
    )
    .await;
    assert_eq!(name, "from-flag", "log:\n{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_the_file_and_a_flag_overrides_the_environment() {
    let home = tempfile::tempdir().unwrap();
    let config = write_config(home.path());
    let env_data = home.path().join("env-data");
    let env = [
        ("DKRON_NODE_NAME", "from-env".to_string()),
        ("DKRON_DATA_DIR", env_data.display().to_string()),
    ];
    let (name, agent) = reported_name(home.path(), &[&config], &env).await;
    assert_eq!(name, "from-env", "log:\n{}", agent.log_text());
    assert!(
        env_data.join("raft.redb").exists(),
        "DKRON_DATA_DIR ignored"
    );
    assert!(
        !home.path().join("file-data").exists(),
        "the file's data-dir won"
    );
    drop(agent);

    let other = format!("--data-dir={}", home.path().join("flag-data").display());
    let (name, agent) = reported_name(
        home.path(),
        &[&config, "--node-name=from-flag", &other],
        &env,
    )
    .await;
    assert_eq!(name, "from-flag", "log:\n{}", agent.log_text());
}

/// A YAML file with every kind of key: known ones take effect (global processors, the
/// notify policy, Prometheus), Dkron keys this build ignores and unknown keys each get one
/// warning, and logs come out as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_file_configures_operations_and_warns_about_what_it_ignores() {
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("outputs");
    let path = home.path().join("dkron.yml");
    std::fs::write(
        &path,
        format!(
            "server: true\nbootstrap-expect: 1\ndata-dir: {}\nenable-prometheus: true\nlog-format: json\nnotify-on: on_failure\nwebhook-url: http://old.example\nbogus-key: 1\nprocessors:\n  log:\n    forward: \"true\"\n  files:\n    log_dir: {}\n    forward: \"true\"\n",
            home.path().join("data").display(),
            out_dir.display()
        ),
    )
    .unwrap();
    let config = format!("--config={}", path.display());
    let (_, agent) = reported_name(home.path(), &[&config], &[]).await;
    let r = agent.api.get("/metrics").await;
    assert_eq!(r.status, 200, "enable-prometheus from the file: {r:#?}");
    // The global files processor applies to a job that names no processor.
    agent
        .api
        .create(&serde_json::json!({"name": "global-proc", "schedule": "@manually", "executor": "shell", "executor_config": {"command": "echo kept"}}))
        .await;
    assert_eq!(agent.api.run("global-proc").await.status, 200);
    let done = agent
        .api
        .wait_finished("global-proc", 1, Duration::from_secs(20))
        .await;
    let id = done[0]["id"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(out_dir.join(format!("{id}.log"))).unwrap(),
        "kept\n"
    );
    assert_eq!(
        done[0]["output"], "kept\n",
        "forward: true keeps the output"
    );
    let log = agent.log_text();
    // The global log processor printed the output between Dkron's markers.
    assert!(
        log.contains(&format!("----- BEGIN OUTPUT job=global-proc execution={id} -----\nkept\n\n----- END OUTPUT -----")),
        "{log}"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with("{\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert!(!lines.is_empty(), "no JSON log lines:\n{log}");
    let warnings: Vec<&str> = lines
        .iter()
        .filter(|l| l["level"] == "WARN")
        .filter_map(|l| l["message"].as_str())
        .collect();
    for key in ["webhook-url", "bogus-key"] {
        assert_eq!(
            warnings.iter().filter(|w| w.contains(key)).count(),
            1,
            "one warning for {key}: {warnings:?}"
        );
    }
}

/// `--otel-endpoint`: spans of an execution reach an OTLP/HTTP collector, with the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_endpoint_receives_execution_spans() {
    let collector = Sink::start().await;
    let home = tempfile::tempdir().unwrap();
    let endpoint = format!("--otel-endpoint={}", collector.url(""));
    let (_, agent) = reported_name(
        home.path(),
        &[
            "--server",
            "--bootstrap-expect=1",
            &format!("--data-dir={}", home.path().join("data").display()),
            &endpoint,
        ],
        &[],
    )
    .await;
    agent
        .api
        .create(&serde_json::json!({"name": "traced-job", "schedule": "@manually", "executor": "shell", "executor_config": {"command": "true"}}))
        .await;
    assert_eq!(agent.api.run("traced-job").await.status, 200);
    agent
        .api
        .wait_finished("traced-job", 1, Duration::from_secs(20))
        .await;
    let export = crate::support::wait_until(
        Duration::from_secs(20),
        "an OTLP export naming the job",
        async || {
            collector.requests().into_iter().find(|r| {
                r.path == "/v1/traces"
                    && r.body.contains("traced-job")
                    && r.body.contains("execution")
            })
        },
    )
    .await;
    assert_eq!(export.method, "POST");
    assert_eq!(export.headers["content-type"], "application/x-protobuf");
    assert!(export.body.contains("dkron"), "service.name is dkron");
}

/// At the default level (info) the log never shows a job's command, its HTTP headers or its
/// output: they may hold secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_info_logs() {
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent(home.path(), "quiet").await;
    let sink = Sink::start().await;
    agent
        .api
        .create(&serde_json::json!({"name": "secret-shell", "schedule": "@manually", "executor": "shell",
            "executor_config": {"command": "echo s3cr3t-output # s3cr3t-command", "shell": "true"}}))
        .await;
    agent
        .api
        .create(&serde_json::json!({"name": "secret-http", "schedule": "@manually", "executor": "http",
            "executor_config": {"method": "GET", "url": sink.url("/x"), "headers": "[\"Authorization: Bearer s3cr3t-header\"]",
                "expectCode": "200"}}))
        .await;
    for job in ["secret-shell", "secret-http"] {
        assert_eq!(agent.api.run(job).await.status, 200);
        let done = agent
            .api
            .wait_finished(job, 1, Duration::from_secs(20))
            .await;
        assert_eq!(done[0]["success"], true, "{done:#?}");
    }
    assert_eq!(
        sink.requests()[0].headers["authorization"],
        "Bearer s3cr3t-header"
    );
    let log = agent.log_text();
    assert!(log.contains("INFO"), "the log is at info: {log}");
    assert!(!log.contains("s3cr3t"), "a secret reached the log:\n{log}");
}

#[test]
fn a_bad_value_in_the_file_names_the_key_and_the_file() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("dkron.yml");
    std::fs::write(
        &path,
        "server: true\nbootstrap-expect: 1\nmail-port: lots\n",
    )
    .unwrap();
    for (contents, key) in [
        (
            "server: true\nbootstrap-expect: 1\nmail-port: lots\n",
            "mail-port",
        ),
        (
            "server: true\nbootstrap-expect: 1\nnotify-on: sometimes\n",
            "notify-on",
        ),
        (
            "server: true\nbootstrap-expect: 1\nprocessors:\n  files:\n    dir: /x\n",
            "processors.files",
        ),
        (
            "server: true\nbootstrap-expect: 1\nwebhook-headers: [\"NoColon\"]\n",
            "webhook-headers",
        ),
    ] {
        std::fs::write(&path, contents).unwrap();
        let mut cmd = safe_agent(home.path());
        cmd.arg(format!("--config={}", path.display()));
        let out = run_to_exit(cmd, EXIT_BOUND);
        assert!(!out.status.success(), "{contents:?} accepted");
        let err = stderr(&out);
        assert!(
            err.contains(key),
            "{contents:?}: error should name {key}: {err}"
        );
        if key == "mail-port" {
            assert!(
                err.contains(&path.display().to_string()),
                "names the file: {err}"
            );
        }
    }
}

#[test]
fn list_settings_come_from_comma_separated_environment_variables() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = safe_agent(home.path());
    cmd.args(["--server", "--bootstrap-expect=1"]);
    cmd.env("DKRON_WEBHOOK_HEADERS", "A: b,NoColon");
    let out = run_to_exit(cmd, EXIT_BOUND);
    // Split on the comma: the second entry is the malformed one.
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"NoColon\""), "{}", stderr(&out));
}

async fn start_agent(home: &Path, name: &str) -> Agent {
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = dkron_command(home);
    cmd.args([
        "agent",
        "--server",
        "--bootstrap-expect=1",
        &format!("--data-dir={}", home.join("data").display()),
        &format!("--http-addr={http}"),
        "--bind-addr=127.0.0.1:0",
        &format!("--rpc-port={}", free_port()),
        &format!("--node-name={name}"),
    ]);
    let mut agent = Agent::spawn(cmd, http, home.join("agent.log"));
    agent.wait_leader(Duration::from_secs(20)).await;
    agent
}

/// Waits for the agent process to exit by itself and returns its status.
async fn wait_exit(agent: &mut Agent, what: &str) -> std::process::ExitStatus {
    let child = agent.child.as_mut().expect("the agent is running");
    crate::support::wait_until(Duration::from_secs(10), what, async || {
        child.try_wait().expect("polling the agent")
    })
    .await
}

/// Decision 13: `leave` ends the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_answers_and_ends_the_agent_process() {
    let home = tempfile::tempdir().unwrap();
    let mut agent = start_agent(home.path(), "leaver").await;
    let r = agent.api.post_empty("/v1/leave").await;
    assert_eq!(r.status, 200, "{r:#?}");
    let status = wait_exit(&mut agent, "the agent to exit after leave").await;
    assert!(status.success(), "{status}; log:\n{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let mut agent = start_agent(home.path(), "termed").await;
    let pid = agent.child.as_ref().unwrap().id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("sending SIGTERM");
    let status = wait_exit(&mut agent, "the agent to exit after SIGTERM").await;
    assert!(status.success(), "{status}; log:\n{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_command_tells_what_became_of_each_occurrence() {
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent(home.path(), "teller").await;
    let mut job = crate::support::shell_job("often", "@every 1s", "true");
    job["concurrency"] = "forbid".into();
    agent.api.create(&job).await;
    agent
        .api
        .wait_finished("often", 2, Duration::from_secs(10))
        .await;
    let address = agent.api.url("");
    let address = address.trim_end_matches('/');
    let mut cmd = dkron_command(home.path());
    cmd.args(["occurrences", "often", &format!("--address={address}")]);
    let out = run_to_exit(cmd, Duration::from_secs(20));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("SCHEDULED"), "{text}");
    assert!(
        text.contains(" ran ") && text.contains("teller succeeded"),
        "{text}"
    );

    let mut cmd = dkron_command(home.path());
    cmd.args([
        "occurrences",
        "often",
        "--json",
        &format!("--address={address}"),
    ]);
    let out = run_to_exit(cmd, Duration::from_secs(20));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON on stdout");
    assert!(list.as_array().is_some_and(|a| !a.is_empty()), "{list}");

    let mut cmd = dkron_command(home.path());
    cmd.args(["occurrences", "nope", &format!("--address={address}")]);
    let out = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn doc_writes_one_markdown_file_per_command() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("docs");
    let mut cmd = dkron_command(home.path());
    cmd.args(["doc", &format!("--dir={}", dir.display())]);
    let out = run_to_exit(cmd, Duration::from_secs(20));
    assert!(out.status.success(), "{}", stderr(&out));
    for name in [
        "dkron",
        "dkron_agent",
        "dkron_keygen",
        "dkron_raft_list-peers",
        "dkron_occurrences",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.md")))
            .unwrap_or_else(|e| panic!("{name}.md: {e}"));
        assert!(text.starts_with("---\ndate: "), "{name}: {text}");
        assert!(
            text.contains(&format!("url: /cli/{name}/")),
            "{name}: {text}"
        );
    }
    let agent = std::fs::read_to_string(dir.join("dkron_agent.md")).unwrap();
    assert!(agent.contains("--bootstrap-expect"), "{agent}");
}

#[test]
fn completion_prints_a_script_and_refuses_unknown_shells() {
    let home = tempfile::tempdir().unwrap();
    for (shell, needle) in [
        ("bash", "_dkron()"),
        ("zsh", "#compdef dkron"),
        ("fish", "complete -c dkron"),
    ] {
        let mut cmd = dkron_command(home.path());
        cmd.args(["completion", shell]);
        let out = run_to_exit(cmd, Duration::from_secs(20));
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains(needle), "{shell}");
    }
    let mut cmd = dkron_command(home.path());
    cmd.args(["completion", "tcsh"]);
    let out = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("possible values"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_executions_commands_drive_the_api() {
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent(home.path(), "clienty").await;
    let address = agent.api.url("");
    let address = format!("--address={}", address.trim_end_matches('/'));
    let dkron = |args: &[&str]| {
        let mut cmd = dkron_command(home.path());
        cmd.args(args).arg(&address);
        run_to_exit(cmd, Duration::from_secs(20))
    };
    let file = home.path().join("job.json");
    std::fs::write(
        &file,
        r#"{"name":"from-cli","schedule":"@manually","executor":"shell","executor_config":{"command":"echo via cli"}}"#,
    )
    .unwrap();
    let out = dkron(&["jobs", "apply", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "job from-cli saved");

    let out = dkron(&["jobs", "list"]);
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("from-cli ")),
        "{}",
        stdout(&out)
    );
    let out = dkron(&["jobs", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list[0]["name"], "from-cli");

    let out = dkron(&["jobs", "run", "from-cli"]);
    assert!(out.status.success(), "{}", stderr(&out));
    agent
        .api
        .wait_finished("from-cli", 1, Duration::from_secs(10))
        .await;
    let out = dkron(&["executions", "from-cli"]);
    let table = stdout(&out);
    assert!(
        table.contains("succeeded") && table.contains("via cli"),
        "{table}"
    );

    let out = dkron(&["jobs", "get", "from-cli"]);
    let job: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(job["success_count"], 1);

    // One-off parameters: this run only, recorded on its execution; a malformed one is a
    // CLI error saying the form.
    let out = dkron(&[
        "jobs",
        "run",
        "from-cli",
        "--env",
        "WHO=param",
        "--config",
        "command=echo $WHO",
        "--config",
        "shell=true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = agent
        .api
        .wait_finished("from-cli", 2, Duration::from_secs(10))
        .await;
    assert_eq!(runs[0]["output"], "param\n", "{runs:#?}");
    assert_eq!(runs[0]["parameters"]["env"]["WHO"], "param");
    let out = dkron(&["jobs", "run", "from-cli", "--env", "NOEQUALS"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("KEY=VALUE"), "{}", stderr(&out));

    let out = dkron(&["jobs", "delete", "from-cli"]);
    assert_eq!(stdout(&out).trim(), "job from-cli deleted");
    let out = dkron(&["jobs", "get", "from-cli"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    // A bad job file: the API's validation message, naming the field.
    std::fs::write(&file, r#"{"name":"bad","schedule":"nope"}"#).unwrap();
    let out = dkron(&["jobs", "apply", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("schedule"), "{}", stderr(&out));
}

/// SIGHUP, as in Dkron: the configuration file is read again; its tags are gossiped (the
/// reserved ones kept) and its notification settings take effect without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_tags_and_notification_settings() {
    let home = tempfile::tempdir().unwrap();
    let sink = crate::support::Sink::start().await;
    let path = home.path().join("dkron.yml");
    let base = format!(
        "node-name: hup\nserver: true\nbootstrap-expect: 1\ndata-dir: {}\n",
        home.path().join("data").display()
    );
    std::fs::write(&path, format!("{base}tags:\n  team: a\n")).unwrap();
    let config = format!("--config={}", path.display());
    let (_, agent) = reported_name(home.path(), &[&config], &[]).await;
    let tags = async || {
        let members = agent.api.get("/v1/members").await;
        members.body[0]["Tags"].clone()
    };
    assert_eq!(tags().await["team"], "a");

    std::fs::write(
        &path,
        format!(
            "{base}tags:\n  team: b\n  zone: z1\nwebhook-endpoint: {}\nwebhook-payload: \"done {{{{.JobName}}}}\"\n",
            sink.url("/hook")
        ),
    )
    .unwrap();
    let pid = agent.child.as_ref().expect("running").id();
    // SAFETY: kill(2) with a valid signal number on our own child process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    let reloaded = wait_until(Duration::from_secs(10), "the reloaded tags", async || {
        let t = tags().await;
        (t["team"] == "b").then_some(t)
    })
    .await;
    assert_eq!(reloaded["zone"], "z1");
    assert_eq!(
        reloaded["server"], "true",
        "reserved tags are kept: {reloaded}"
    );
    assert_eq!(reloaded["role"], "dkron");
    assert!(reloaded["rpc_addr"].as_str().is_some_and(|a| !a.is_empty()));

    // The webhook configured by the reload is sent.
    agent
        .api
        .create(&serde_json::json!({"name": "hooked", "schedule": "@manually", "executor": "shell", "executor_config": {"command": "true"}}))
        .await;
    assert_eq!(agent.api.run("hooked").await.status, 200);
    let hook = wait_until(
        Duration::from_secs(10),
        "the reloaded webhook",
        async || sink.requests().into_iter().find(|r| r.path == "/hook"),
    )
    .await;
    assert_eq!(hook.body, "done hooked");

    // A broken file keeps the configuration in force, and says so.
    std::fs::write(&path, "tags: [not, a, map\n").unwrap();
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    wait_until(
        Duration::from_secs(10),
        "the reload failure in the log",
        async || {
            agent
                .log_text()
                .contains("could not reload the configuration")
                .then_some(())
        },
    )
    .await;
    assert_eq!(tags().await["team"], "b");
}
