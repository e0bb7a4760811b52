//! Job executors of dkron-rs: run one job on this machine and report its
//! outcome. This file owns the public API (`RunContext`, `ExecOutcome`,
//! `validate_config`, `execute`, `install_crypto_provider`) and the dispatch
//! from an executor name to its module (`shell`, `http`) or to Dkron's plugin
//! executors (`dkron-plugins`: nats, rabbitmq, kafka, gcppubsub); the executors
//! know nothing of Raft, gossip or scheduling, only of one run.

mod http;
mod output;
mod shell;

use std::collections::BTreeMap;

pub use dkron_core::godur::{format_go_duration, parse_go_duration};
pub use dkron_plugins::Connections;
pub use dkron_plugins::goplugin::Plugins;
pub use output::{LIVE_LIMIT, LiveOutput};
pub use shell::parse_mem_limit;

/// What the executor knows about the run it performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContext {
    pub job_name: String,
    pub execution_id: String,
    /// nominal fire time, RFC 3339 UTC, e.g. "2026-11-27T10:00:00Z"
    pub scheduled_time: String,
    pub fencing_token: u64,
    /// byte bound of the captured output; the TAIL (last bytes) is kept
    pub output_limit: usize,
    /// Where the output also goes while the run is in progress.
    pub live: LiveOutput,
    /// Broker connections kept between runs (the plugin executors'); share one per node.
    pub connections: Connections,
    /// This node's external executor plugins (`dkron-executor-*` binaries).
    pub plugins: Plugins,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub success: bool,
    /// captured output, at most output_limit bytes, valid UTF-8 (lossy-converted; truncation never splits a UTF-8 character)
    pub output: String,
}

/// Dkron's wording for a job whose executor this agent does not have.
const UNKNOWN_EXECUTOR: &str = "Specified executor is not present";
/// Dkron's wording for a job with no executor at all.
const NO_EXECUTOR: &str = "No executor defined, nothing to do";

/// The executors built into the dkron binary itself.
const OWN: &[&str] = &["shell", "http"];

/// The executors this build runs, by the names jobs use.
pub fn executors() -> impl Iterator<Item = &'static str> {
    OWN.iter().chain(dkron_plugins::EXECUTORS).copied()
}

/// The built-in executors' names, which an external plugin of the same name cannot replace.
pub fn builtin() -> Vec<&'static str> {
    executors().collect()
}

/// Validate executor_config at job-submit time (no IO). Returns a list of (config key, message) problems.
///
/// An empty executor has no config to check (running it fails, as in Dkron); an external
/// plugin's config is the plugin's to read; an executor neither built in nor among
/// `plugins` is reported under the key "executor".
pub fn validate_config(
    executor: &str,
    config: &BTreeMap<String, String>,
    plugins: &Plugins,
) -> Vec<(String, String)> {
    match executor {
        "" => Vec::new(),
        "shell" => shell::validate_config(config),
        "http" => http::validate_config(config),
        other => dkron_plugins::validate_config(other, config).unwrap_or_else(|| {
            if plugins.has(other) {
                Vec::new()
            } else {
                vec![("executor".to_owned(), UNKNOWN_EXECUTOR.to_owned())]
            }
        }),
    }
}

/// Run the job. Never panics on bad input: config problems become a failed outcome with a clear message in output.
pub async fn execute(
    executor: &str,
    config: &BTreeMap<String, String>,
    ctx: &RunContext,
) -> ExecOutcome {
    let fail = |msg: &str| ExecOutcome {
        success: false,
        output: output::tail_str(msg, ctx.output_limit).to_owned(),
    };
    match executor {
        "" => fail(NO_EXECUTOR),
        "shell" => shell::execute(config, ctx).await,
        "http" => http::execute(config, ctx).await,
        other => {
            let run = dkron_plugins::Run {
                job_name: ctx.job_name.clone(),
                execution_id: ctx.execution_id.clone(),
                scheduled_time: ctx.scheduled_time.clone(),
                fencing_token: ctx.fencing_token,
            };
            let mut outcome = dkron_plugins::execute(other, config, &run, &ctx.connections).await;
            if outcome.is_none() {
                let live = ctx.live.clone();
                let live = std::sync::Arc::new(move |chunk: &[u8]| live.push(chunk));
                outcome = ctx
                    .plugins
                    .execute(other, &ctx.job_name, config, live)
                    .await;
            }
            match outcome {
                Some(Ok(output)) => ExecOutcome {
                    success: true,
                    output: output::tail_str(&output, ctx.output_limit).to_owned(),
                },
                Some(Err(output)) => fail(&output),
                None => fail(UNKNOWN_EXECUTOR),
            }
        }
    }
}

/// Install the rustls ring crypto provider once per process (idempotent; call at startup and in tests).
///
/// reqwest is built without a default provider and panics when building a
/// client if none is installed, so the http executor also calls this itself.
pub fn install_crypto_provider() {
    dkron_plugins::install_crypto_provider();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RunContext {
        RunContext {
            job_name: "j".to_owned(),
            execution_id: "e".to_owned(),
            scheduled_time: "2026-11-27T10:00:00Z".to_owned(),
            fencing_token: 1,
            output_limit: 1024,
            live: Default::default(),
            connections: Default::default(),
            plugins: Default::default(),
        }
    }

    #[tokio::test]
    async fn unknown_and_empty_executors_fail() {
        let cfg = BTreeMap::new();
        let r = execute("nope", &cfg, &ctx()).await;
        assert_eq!(
            r,
            ExecOutcome {
                success: false,
                output: "Specified executor is not present".to_owned()
            }
        );
        let r = execute("", &cfg, &ctx()).await;
        assert!(!r.success);
        assert_eq!(r.output, "No executor defined, nothing to do");
    }

    #[tokio::test]
    async fn seed_job_runs() {
        // The seed job: {"executor": "shell", "command": "date"}.
        let cfg = BTreeMap::from([("command".to_owned(), "date".to_owned())]);
        assert!(validate_config("shell", &cfg, &Plugins::default()).is_empty());
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            execute("shell", &cfg, &ctx()),
        )
        .await
        .expect("bounded");
        assert!(r.success, "{r:?}");
        assert!(!r.output.is_empty());
    }

    #[test]
    fn validate_dispatch() {
        let cfg = BTreeMap::new();
        assert!(validate_config("", &cfg, &Plugins::default()).is_empty());
        assert_eq!(
            validate_config("nope", &cfg, &Plugins::default()),
            vec![(
                "executor".to_owned(),
                "Specified executor is not present".to_owned()
            )]
        );
        assert!(!validate_config("shell", &cfg, &Plugins::default()).is_empty());
        assert!(!validate_config("http", &cfg, &Plugins::default()).is_empty());
    }

    #[test]
    fn crypto_provider_install_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}

/// Helpers shared by the executors' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    /// An executor config from literal pairs.
    pub fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
}
