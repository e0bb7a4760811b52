//! Processors: what happens to a finished execution's output before it is stored — printed
//! to the log, written to a file, sent to syslog or to Fluentd/Fluent Bit. This module parses
//! and checks their settings and merges the node's global processors with a job's own; the
//! node's `processors` module does the IO.
//!
//! Settings are Dkron's string maps (`{"files": {"forward": "true", "log_dir": "/tmp"}}`).
//! `forward` (default false, as in Dkron) keeps the original output in the execution; else it
//! is replaced by a short marker saying where it went.

use std::collections::BTreeMap;

use crate::job::StringMap;

/// One configured processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processor {
    /// Prints the output to the node's log stream.
    Log { forward: bool },
    /// Writes the output to `<log_dir>/<execution id>.log`.
    Files { forward: bool, log_dir: String },
    /// Sends the output to syslog (facility cron, tag dkron). `address`: empty for the local
    /// `/dev/log`, `unix:///path`, `udp://host:port` or `tcp://host:port`.
    Syslog { forward: bool, address: String },
    /// Posts `{host, job_name, message}` to a Fluent forward-protocol endpoint.
    Fluent {
        forward: bool,
        host: String,
        port: u16,
        tag: String,
    },
}

pub const NAMES: &str = "log, files, syslog or fluent";
pub const DEFAULT_LOG_DIR: &str = "/var/log/dkron";

impl Processor {
    /// Parses one processor's settings. `env` supplies Dkron's `FLUENTBIT_HOST`,
    /// `FLUENTBIT_PORT` and `FLUENTBIT_TAG` defaults for fluent.
    pub fn parse_with_env(
        name: &str,
        settings: &StringMap,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Processor, String> {
        let forward = match settings.get("forward").map(String::as_str) {
            None | Some("") => false,
            Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
            Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
            Some(other) => return Err(format!("forward must be true or false, not {other:?}")),
        };
        let known: &[&str] = match name {
            "log" => &["forward"],
            "files" => &["forward", "log_dir"],
            "syslog" => &["forward", "address"],
            "fluent" => &["forward", "host", "port", "tag"],
            _ => return Err(format!("unknown processor {name:?}: use {NAMES}")),
        };
        // Dkron adds `reporting_node` itself; accept it back from stored jobs.
        if let Some(key) = settings
            .keys()
            .find(|k| !known.contains(&k.as_str()) && *k != "reporting_node")
        {
            return Err(format!(
                "unknown setting {key:?} for processor {name}: use {}",
                known.join(", ")
            ));
        }
        let get = |key: &str| settings.get(key).filter(|v| !v.is_empty()).cloned();
        Ok(match name {
            "log" => Processor::Log { forward },
            "files" => Processor::Files {
                forward,
                log_dir: get("log_dir").unwrap_or_else(|| DEFAULT_LOG_DIR.to_string()),
            },
            "syslog" => {
                let address = get("address").unwrap_or_default();
                if !address.is_empty()
                    && !["unix://", "udp://", "tcp://"]
                        .iter()
                        .any(|p| address.starts_with(p))
                {
                    return Err(format!(
                        "syslog address {address:?}: use unix:///dev/log, udp://host:514 or tcp://host:514"
                    ));
                }
                Processor::Syslog { forward, address }
            }
            _ => {
                let port_text = get("port")
                    .or_else(|| env("FLUENTBIT_PORT"))
                    .unwrap_or_else(|| "24224".into());
                let port = port_text
                    .parse()
                    .map_err(|_| format!("fluent port {port_text:?} is not a port number"))?;
                Processor::Fluent {
                    forward,
                    host: get("host")
                        .or_else(|| env("FLUENTBIT_HOST"))
                        .unwrap_or_else(|| "127.0.0.1".into()),
                    port,
                    tag: get("tag")
                        .or_else(|| env("FLUENTBIT_TAG"))
                        .unwrap_or_else(|| "dkron".into()),
                }
            }
        })
    }

    /// Parses settings without environment defaults (validation).
    pub fn parse(name: &str, settings: &StringMap) -> Result<Processor, String> {
        Processor::parse_with_env(name, settings, |_| None)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Processor::Log { .. } => "log",
            Processor::Files { .. } => "files",
            Processor::Syslog { .. } => "syslog",
            Processor::Fluent { .. } => "fluent",
        }
    }

    /// Whether the execution keeps its original output.
    pub fn forwards(&self) -> bool {
        match self {
            Processor::Log { forward }
            | Processor::Files { forward, .. }
            | Processor::Syslog { forward, .. }
            | Processor::Fluent { forward, .. } => *forward,
        }
    }
}

/// The processors that apply to a job: the node's global ones, with the job's entries
/// replacing same-named global ones. Sorted by name, so they run in a stable order (Dkron's
/// order is random).
pub fn effective<'a>(
    global: &'a BTreeMap<String, StringMap>,
    job: &'a BTreeMap<String, StringMap>,
) -> BTreeMap<&'a str, &'a StringMap> {
    let mut all: BTreeMap<&str, &StringMap> = global.iter().map(|(k, v)| (k.as_str(), v)).collect();
    all.extend(job.iter().map(|(k, v)| (k.as_str(), v)));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> StringMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_dkron_settings_with_defaults() {
        assert_eq!(
            Processor::parse("files", &map(&[("forward", "true")])).unwrap(),
            Processor::Files {
                forward: true,
                log_dir: DEFAULT_LOG_DIR.into()
            }
        );
        assert_eq!(
            Processor::parse("log", &StringMap::new()).unwrap(),
            Processor::Log { forward: false }
        );
        let env = |k: &str| (k == "FLUENTBIT_PORT").then(|| "5170".to_string());
        assert_eq!(
            Processor::parse_with_env("fluent", &map(&[("tag", "jobs")]), env).unwrap(),
            Processor::Fluent {
                forward: false,
                host: "127.0.0.1".into(),
                port: 5170,
                tag: "jobs".into()
            }
        );
    }

    #[test]
    fn bad_settings_say_what_to_write() {
        let err = Processor::parse("elastic", &StringMap::new()).unwrap_err();
        assert!(err.contains("log, files"), "{err}");
        let err = Processor::parse("files", &map(&[("logdir", "/tmp")])).unwrap_err();
        assert!(err.contains("log_dir"), "{err}");
        let err = Processor::parse("log", &map(&[("forward", "yes")])).unwrap_err();
        assert!(err.contains("true or false"), "{err}");
        let err = Processor::parse("syslog", &map(&[("address", "10.0.0.1")])).unwrap_err();
        assert!(err.contains("udp://"), "{err}");
        let err = Processor::parse("fluent", &map(&[("port", "http")])).unwrap_err();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn a_job_entry_replaces_the_global_one() {
        let global = BTreeMap::from([
            ("log".to_string(), map(&[("forward", "true")])),
            ("files".to_string(), map(&[("log_dir", "/a")])),
        ]);
        let job = BTreeMap::from([("files".to_string(), map(&[("log_dir", "/b")]))]);
        let all = effective(&global, &job);
        assert_eq!(all.len(), 2);
        assert_eq!(all["files"].get("log_dir").map(String::as_str), Some("/b"));
        assert_eq!(all["log"].get("forward").map(String::as_str), Some("true"));
    }
}
