//! Dkron's plugin executors, built in: `nats`, `rabbitmq`, `kafka`, `grpc` and `gcppubsub`, each
//! behind a feature of the same name (all on by default). They read Dkron's
//! `executor_config` keys with Dkron's string values, and differ where Dkron is weak: a run
//! succeeds only when the broker confirmed the message (NATS: the server processed it, proved by
//! an echo sent after it;
//! RabbitMQ: a publisher confirm for a routed message; Kafka: acks from all in-sync replicas;
//! Pub/Sub: a message id), every run is bounded by the config's `timeout`, connections are
//! kept per broker and closed when idle, and no secret reaches an output or a log line.
//!
//! This crate knows nothing of Raft, the API or the worker: [`validate_config`] checks a
//! config at job-submit time (no IO) and [`execute`] publishes one run's message.

// A build with some executors left out leaves some shared helpers unused.
#![cfg_attr(
    not(all(
        feature = "nats",
        feature = "rabbitmq",
        feature = "kafka",
        feature = "grpc",
        feature = "gcppubsub"
    )),
    allow(dead_code, unused_imports)
)]

mod pool;

#[cfg(feature = "gcppubsub")]
mod gcpauth;
#[cfg(feature = "gcppubsub")]
mod gcppubsub;
#[cfg(feature = "go-plugin")]
pub mod goplugin;
#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "kafka")]
mod tls;

use std::collections::BTreeMap;
use std::time::Duration;

pub use pool::Connections;

/// What an executor knows of the run it performs: its identity travels with the message
/// (headers or attributes), so a consumer can drop a duplicate and fence a stale leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub job_name: String,
    pub execution_id: String,
    /// Nominal fire time, RFC 3339 UTC.
    pub scheduled_time: String,
    pub fencing_token: u64,
}

impl Run {
    /// The identity headers every message carries, lower-case names as the http
    /// executor sends them.
    fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("x-dkron-job", self.job_name.clone()),
            ("x-dkron-scheduled-time", self.scheduled_time.clone()),
            ("x-dkron-execution-id", self.execution_id.clone()),
            ("x-dkron-fencing-token", self.fencing_token.to_string()),
        ]
    }
}

/// A finished run: `Ok(output)` when the broker confirmed, `Err(output)` saying why not.
pub type Outcome = Result<String, String>;

/// The executors this build carries, by the names jobs use.
pub const EXECUTORS: &[&str] = &[
    #[cfg(feature = "nats")]
    "nats",
    #[cfg(feature = "rabbitmq")]
    "rabbitmq",
    #[cfg(feature = "kafka")]
    "kafka",
    #[cfg(feature = "grpc")]
    "grpc",
    #[cfg(feature = "gcppubsub")]
    "gcppubsub",
];

/// Checks an executor config at job-submit time (no IO): `(config key, message)` problems,
/// Dkron's texts where it has one. `None` when `executor` is not one of this crate's.
pub fn validate_config(
    executor: &str,
    config: &BTreeMap<String, String>,
) -> Option<Vec<(String, String)>> {
    let own: Option<Vec<(String, String)>> = match executor {
        #[cfg(feature = "nats")]
        "nats" => Some(nats::validate_config(config)),
        #[cfg(feature = "rabbitmq")]
        "rabbitmq" => Some(rabbitmq::validate_config(config)),
        #[cfg(feature = "kafka")]
        "kafka" => Some(kafka::validate_config(config)),
        #[cfg(feature = "grpc")]
        "grpc" => Some(grpc::validate_config(config)),
        #[cfg(feature = "gcppubsub")]
        "gcppubsub" => Some(gcppubsub::validate_config(config)),
        _ => None,
    };
    own.map(|mut problems| {
        if let Err(e) = timeout(config, Duration::ZERO) {
            problems.push(("timeout".to_owned(), e));
        }
        problems
    })
}

/// Publishes one run's message. `None` when `executor` is not one of this crate's. Never
/// panics on bad input, never outlives the config's `timeout`. A config that does not pass
/// [`validate_config`] (a job stored before a check existed, run parameters) fails the run
/// with its first problem here, so no executor runs on one.
pub async fn execute(
    executor: &str,
    config: &BTreeMap<String, String>,
    run: &Run,
    connections: &Connections,
) -> Option<Outcome> {
    let default = match executor {
        // Dkron's Pub/Sub executor gives itself 15 s; the others had no bound of their own.
        "gcppubsub" => Duration::from_secs(15),
        _ => Duration::from_secs(30),
    };
    let bound = match timeout(config, default) {
        Ok(d) => d,
        Err(e) => return EXECUTORS.contains(&executor).then(|| Err(format!("{e}\n"))),
    };
    if let Some((_, problem)) = validate_config(executor, config)?.first() {
        return Some(Err(format!("{problem}\n")));
    }
    let work = async {
        let outcome: Option<Outcome> = match executor {
            #[cfg(feature = "nats")]
            "nats" => Some(nats::execute(config, run, connections).await),
            #[cfg(feature = "rabbitmq")]
            "rabbitmq" => Some(rabbitmq::execute(config, run, connections).await),
            #[cfg(feature = "kafka")]
            "kafka" => Some(kafka::execute(config, run, connections, bound).await),
            #[cfg(feature = "grpc")]
            "grpc" => Some(grpc::execute(config, run, connections).await),
            #[cfg(feature = "gcppubsub")]
            "gcppubsub" => Some(gcppubsub::execute(config, run, connections).await),
            _ => {
                let _ = (config, run, connections, bound);
                None
            }
        };
        outcome
    };
    match tokio::time::timeout(bound, work).await {
        Ok(outcome) => outcome.map(|o| o.map_err(|e| redact(&e, config))),
        Err(_) => Some(Err(format!(
            "{executor}: no confirmation from the broker within {}s (executor_config.timeout); the message may or may not have been delivered\n",
            bound.as_secs()
        ))),
    }
}

/// The run's bound from `timeout`: whole seconds as Dkron's http and grpc executors take it
/// (`0` or empty: `default`).
fn timeout(config: &BTreeMap<String, String>, default: Duration) -> Result<Duration, String> {
    let text = get(config, "timeout");
    if text.is_empty() {
        return Ok(default);
    }
    match text.parse::<u64>() {
        Ok(0) => Ok(default),
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => Err(format!(
            "timeout must be a whole number of seconds, got \"{text}\""
        )),
    }
}

/// Installs the rustls ring crypto provider once per process (idempotent), which
/// reqwest, built without a default provider, needs before it builds a client.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if some other provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A config value, `""` when absent (Dkron's Go map reads).
fn get<'a>(config: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    config.get(key).map(String::as_str).unwrap_or("")
}

/// Go's `strconv.ParseBool`.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Config keys whose values are secrets: never in an output or a log line.
const SECRET_KEYS: &[&str] = &["password", "saslPassword"];

/// `text` with every secret of `config` (and the password of any URL in it) masked.
fn redact(text: &str, config: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    let mut secrets: Vec<String> = SECRET_KEYS
        .iter()
        .map(|k| get(config, k).to_owned())
        .collect();
    for key in ["url", "brokerAddress"] {
        for url in get(config, key).split(',') {
            if let Some(pass) = url_password(url) {
                secrets.push(pass.to_owned());
            }
        }
    }
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// The password of `scheme://user:password@host...`, if there is one.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p)
}

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

    pub fn run() -> super::Run {
        super::Run {
            job_name: "job1".to_owned(),
            execution_id: "1700000000000000000-node1".to_owned(),
            scheduled_time: "2026-12-02T10:00:00Z".to_owned(),
            fencing_token: 7,
        }
    }

    /// A loopback port nothing listens on.
    pub fn dead_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn unknown_executors_are_not_ours() {
        assert_eq!(validate_config("shell", &cfg(&[])), None);
        assert_eq!(validate_config("", &cfg(&[])), None);
    }

    #[tokio::test]
    async fn unknown_executor_is_not_run() {
        let c = Connections::default();
        assert_eq!(execute("docker", &cfg(&[]), &run(), &c).await, None);
    }

    #[test]
    fn timeout_is_whole_seconds() {
        let d = Duration::from_secs(30);
        assert_eq!(timeout(&cfg(&[]), d), Ok(d));
        assert_eq!(timeout(&cfg(&[("timeout", "0")]), d), Ok(d));
        assert_eq!(
            timeout(&cfg(&[("timeout", "5")]), d),
            Ok(Duration::from_secs(5))
        );
        assert!(timeout(&cfg(&[("timeout", "5s")]), d).is_err());
        for executor in EXECUTORS {
            let problems = validate_config(executor, &cfg(&[("timeout", "soon")])).unwrap();
            assert!(
                problems.iter().any(|(k, _)| k == "timeout"),
                "{executor}: {problems:?}"
            );
        }
    }

    #[test]
    fn secrets_are_masked() {
        let config = cfg(&[
            (
                "url",
                "nats://bob:s3cret@host:4222,nats://other:pw2@h2:4222",
            ),
            ("password", "hunter2"),
        ]);
        assert_eq!(
            redact(
                "dial nats://bob:s3cret@host:4222 as bob/hunter2 then pw2",
                &config
            ),
            "dial nats://bob:***@host:4222 as bob/*** then ***"
        );
        assert_eq!(
            url_password("amqp://guest:guest@localhost:5672/"),
            Some("guest")
        );
        assert_eq!(url_password("amqp://localhost:5672/"), None);
        assert_eq!(url_password("amqp://user@localhost/"), None);
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }
}
