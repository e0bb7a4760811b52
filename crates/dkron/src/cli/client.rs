//! The CLI's client side: the API commands (`dkron jobs`, `dkron executions`,
//! `dkron occurrences`), one call to a server's HTTP API each, a table for people or the API's
//! JSON for scripts, an error answer becoming an error carrying the API's message; and the calls
//! to a server's RPC port (`dkron leave`, `dkron raft ...`).

use anyhow::Context;
use serde_json::Value;

use super::JobsCommand;
use crate::rpc::RpcClient;
use crate::rpc::wire::Peer;
use crate::tls::{ClusterTls, TlsSettings};

/// Runs `f` on a one-off runtime: each CLI command makes one call.
fn block_on<T>(f: impl AsyncFnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(f())
}

/// A server's HTTP API as a CLI command reaches it: its address (`https://` with the
/// certificate flags for a server with HTTPS) and the TLS to speak.
pub struct Endpoint {
    pub address: String,
    pub tls: TlsSettings,
    /// The ACL token's secret, sent as `Authorization: Bearer` (servers with ACLs on).
    pub token: Option<String>,
}

/// Runs `f` with an HTTP client on a one-off runtime: with the trusted CA (and client
/// certificate) of the flags when given, else the system's roots.
fn with_client<T>(
    tls: &TlsSettings,
    f: impl AsyncFnOnce(reqwest::Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    block_on(async || {
        let timeout = std::time::Duration::from_secs(30);
        let client = match crate::tls::https_client_config(tls)? {
            Some(config) => reqwest::Client::builder()
                .timeout(timeout)
                .use_preconfigured_tls(config)
                .build()
                .map_err(|e| anyhow::anyhow!("building the HTTPS client: {e}"))?,
            None => crate::rpc::http_client(Some(timeout))?,
        };
        f(client).await
    })
}

fn unreachable(rpc_addr: &str) -> String {
    format!(
        "cannot reach the server at {rpc_addr}: is it running? pass --rpc-addr host:port, and the cluster's gossip key with --encrypt (or DKRON_ENCRYPT) if it has one, or its --cert-file, --key-file and --trusted-ca-file"
    )
}

/// The client a CLI command calls a server's RPC port with: mutual TLS with a certificate of
/// the cluster (minted from its key, or the flags' files), plain HTTP otherwise.
fn rpc_client(tls: &TlsSettings) -> anyhow::Result<RpcClient> {
    let tls = ClusterTls::for_node(tls, "dkron-cli", crate::clock::system())?;
    RpcClient::new(tls.as_deref())
}

/// `dkron leave`: asks the server at `rpc_addr` to leave the cluster and stop.
pub fn leave(rpc_addr: &str, tls: &TlsSettings) -> anyhow::Result<()> {
    block_on(async || {
        rpc_client(tls)?
            .leave(rpc_addr)
            .await
            .with_context(|| unreachable(rpc_addr))?
            .map_err(anyhow::Error::msg)
    })
}

/// `dkron raft list-peers`.
pub fn list_peers(rpc_addr: &str, tls: &TlsSettings) -> anyhow::Result<Vec<Peer>> {
    block_on(async || {
        rpc_client(tls)?
            .peers(rpc_addr)
            .await
            .with_context(|| unreachable(rpc_addr))
    })
}

/// `dkron raft remove-peer`.
pub fn remove_peer(rpc_addr: &str, tls: &TlsSettings, name: &str) -> anyhow::Result<()> {
    block_on(async || {
        rpc_client(tls)?
            .remove_peer(rpc_addr, name)
            .await
            .map_err(anyhow::Error::msg)
    })
}

/// One call to the HTTP API of `server`; the JSON answer, or the API's error as an error.
pub(super) fn call(
    server: &Endpoint,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let address = server.address.trim_end_matches('/');
    with_client(&server.tls, async |client| {
        let url = format!("{address}{path}");
        let mut request = client.request(method, &url);
        if let Some(token) = &server.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach {address}: is a server running there? pass --address http://host:8080"
            )
        })?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("unexpected answer from {url}"))?;
        if !status.is_success() {
            anyhow::bail!(
                "{}",
                body["error"]
                    .as_str()
                    .unwrap_or("the server refused the request")
            );
        }
        Ok(body)
    })
}

pub(super) fn get(server: &Endpoint, path: &str) -> anyhow::Result<Value> {
    call(server, reqwest::Method::GET, path, None)
}

pub(super) fn path_part(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(super) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn finished(e: &Value) -> bool {
    e["finished_at"]
        .as_str()
        .is_some_and(|t| !t.starts_with("0001"))
}

fn execution_state(e: &Value) -> &'static str {
    if !finished(e) {
        "running"
    } else if e["success"] == Value::Bool(true) {
        "succeeded"
    } else {
        "failed"
    }
}

pub fn jobs(address: &Endpoint, json: bool, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List => {
            let list = get(address, "/v1/jobs")?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<32} {:<24} {:<18} {:<32} ENABLED",
                "NAME", "SCHEDULE", "STATUS", "NEXT"
            );
            for j in list.as_array().into_iter().flatten() {
                let status = match text(j, "status") {
                    "" => "untriggered",
                    s => s,
                };
                let next = match text(j, "next") {
                    t if t.starts_with("0001") || t.is_empty() => "-",
                    t => t,
                };
                println!(
                    "{:<32} {:<24} {:<18} {:<32} {}",
                    text(j, "name"),
                    text(j, "schedule"),
                    status,
                    next,
                    if j["disabled"] == Value::Bool(true) {
                        "no"
                    } else {
                        "yes"
                    }
                );
            }
            Ok(())
        }
        JobsCommand::Get { name } => {
            print_json(&get(address, &format!("/v1/jobs/{}", path_part(&name)))?)
        }
        JobsCommand::Apply { file } => {
            let raw = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the job from stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let parsed: Value = serde_json::from_str(&raw)
                .with_context(|| format!("{file} is not JSON in Dkron's job format"))?;
            let jobs = match parsed {
                Value::Array(jobs) => jobs,
                job => vec![job],
            };
            for job in jobs {
                let saved = call(address, reqwest::Method::POST, "/v1/jobs", Some(job))?;
                if json {
                    print_json(&saved)?;
                } else {
                    println!("job {} saved", text(&saved, "name"));
                }
            }
            Ok(())
        }
        JobsCommand::Run { name, env, config } => {
            let body = (!env.is_empty() || !config.is_empty()).then(|| {
                let map = |pairs: Vec<(String, String)>| -> serde_json::Map<String, Value> {
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect()
                };
                serde_json::json!({ "env": map(env), "executor_config": map(config) })
            });
            let job = call(
                address,
                reqwest::Method::POST,
                &format!("/v1/jobs/{}/run", path_part(&name)),
                body,
            )?;
            if json {
                return print_json(&job);
            }
            println!(
                "run of job {} started; see `dkron executions {name}`",
                text(&job, "name")
            );
            Ok(())
        }
        JobsCommand::Delete { name } => {
            let job = call(
                address,
                reqwest::Method::DELETE,
                &format!("/v1/jobs/{}", path_part(&name)),
                None,
            )?;
            if json {
                return print_json(&job);
            }
            println!("job {} deleted", text(&job, "name"));
            Ok(())
        }
        JobsCommand::Stop { name, execution } => {
            let path = format!(
                "/v1/jobs/{}/executions/{}/stop",
                path_part(&name),
                path_part(&execution)
            );
            let stopped = call(address, reqwest::Method::POST, &path, None)?;
            if json {
                return print_json(&stopped);
            }
            println!("execution {execution} of job {name} stopped");
            Ok(())
        }
    }
}

pub fn executions(address: &Endpoint, job: &str, json: bool) -> anyhow::Result<()> {
    let list = get(
        address,
        &format!(
            "/v1/jobs/{}/executions?_sort=started_at&_order=DESC",
            path_part(job)
        ),
    )?;
    if json {
        return print_json(&list);
    }
    println!(
        "{:<32} {:<10} {:<20} {:<8} OUTPUT (last line)",
        "STARTED", "STATE", "NODE", "ATTEMPT"
    );
    for e in list.as_array().into_iter().flatten() {
        let output = text(e, "output").trim_end().lines().last().unwrap_or("");
        println!(
            "{:<32} {:<10} {:<20} {:<8} {output}",
            text(e, "started_at"),
            execution_state(e),
            text(e, "node_name"),
            e["attempt"].as_u64().unwrap_or(1),
        );
    }
    Ok(())
}

pub fn occurrences(
    address: &Endpoint,
    job: &str,
    from: Option<String>,
    to: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(from) = from {
        query.push(format!("from={from}"));
    }
    if let Some(to) = to {
        query.push(format!("to={to}"));
    }
    let path = format!(
        "/v1/jobs/{}/occurrences?{}",
        path_part(job),
        query.join("&")
    );
    let list = get(address, &path)?;
    if json {
        return print_json(&list);
    }
    println!("{:<32} {:<9} DETAIL", "SCHEDULED", "OUTCOME");
    for o in list.as_array().into_iter().flatten() {
        let outcome = text(o, "outcome");
        let detail = match outcome {
            "ran" => o["executions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("{} {}", text(e, "node_name"), execution_state(e)))
                .collect::<Vec<_>>()
                .join(", "),
            "skipped" => text(o, "why").to_string(),
            "no_record" => "decided, but its record is no longer kept".to_string(),
            _ => String::new(),
        };
        println!("{:<32} {:<9} {detail}", text(o, "scheduled_at"), outcome);
    }
    Ok(())
}
