//! Shared helpers, by concern: [`http`] (a client that returns status, headers and JSON
//! together), [`node`] (an in-process server on port 0 with its own data dir and clock),
//! [`receivers`] (a local HTTP sink for the http executor and webhooks), [`process`] (the
//! real binary: spawned agents, short commands, free ports), and a bounded poller.

pub mod http;
pub mod node;
pub mod pki;
pub mod process;
pub mod receivers;

use std::time::Duration;

use serde_json::{Value, json};

pub use http::{
    Api, MULTIPART_TYPE, Resp, ZERO_TIME, assert_plain_http_refused, client, is_finished,
    multipart, send,
};
pub use node::{TestNode, node_config};
pub use process::{Agent, dkron_command, free_port, run_to_exit};
pub use receivers::Sink;

/// Upper bound for anything that should happen "soon" (a manual run, a chained child).
pub const SOON: Duration = Duration::from_secs(10);

/// Installs the TLS provider reqwest needs (it is built without one) and, when `RUST_LOG` is
/// set, a log subscriber so a failing test can be rerun with the node's logs visible.
pub fn init_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        dkron_executors::install_crypto_provider();
        if let Ok(filter) = std::env::var("RUST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Polls `check` every 50 ms until it yields a value; fails with `what` after `timeout`.
pub async fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = dkron::clock::monotonic() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            dkron::clock::monotonic() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A shell job that runs `command` through `sh -c`.
pub fn shell_job(name: &str, schedule: &str, command: &str) -> Value {
    json!({
        "name": name,
        "schedule": schedule,
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
    })
}
