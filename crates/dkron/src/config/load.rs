//! Loading the configuration: defaults, then the config file (Dkron's search path unless
//! `--config` names one), then `DKRON_*` variables, then the flags given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml, Yaml};

use super::AgentConfig;

/// Dkron's config-file search path when `--config` is not given.
fn default_config_file() -> Option<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/dkron")];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".dkron"));
    }
    dirs.push(PathBuf::from("./config"));
    for dir in dirs {
        for ext in ["yml", "yaml", "toml", "json"] {
            let candidate = dir.join(format!("dkron.{ext}"));
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Settings that hold lists: comma-separated in `DKRON_*` variables.
const LIST_KEYS: &[&str] = &[
    "join",
    "retry-join",
    "dog-statsd-tags",
    "webhook-headers",
    "pre-webhook-headers",
    "http-allowed-origins",
    "executors",
];

/// `DKRON_*` variables of the nested `acl:` section, and their keys there.
const ACL_VARS: &[(&str, &str)] = &[
    ("DKRON_ACL_ENABLED", "acl.enabled"),
    ("DKRON_ACL_BOOTSTRAP_TOKEN", "acl.bootstrap_token"),
];

/// Dkron settings dkron-rs accepts and ignores, and why.
pub(super) const IGNORED: &[(&str, &str)] = &[
    (
        "otel-endpoint",
        "OpenTelemetry tracing is not built in; use the Prometheus metrics and JSON logs",
    ),
    (
        "webhook-url",
        "deprecated in Dkron too, where it has no effect; use webhook-endpoint",
    ),
    (
        "devmode",
        "use --bootstrap-expect=1 with a temporary --data-dir",
    ),
    ("bootstrap", "use --bootstrap-expect=1"),
    (
        "reconcileinterval",
        "membership is reconciled every few seconds",
    ),
    ("dkron-version", "not a setting"),
];

/// Resolves the configuration: defaults, then the file, then `DKRON_*`, then `flags`
/// (a serialized map holding only the flags given on the command line).
pub fn resolve(
    config_file: Option<&Path>,
    flags: Serialized<serde_json::Value>,
) -> anyhow::Result<AgentConfig> {
    let mut figment = Figment::from(Serialized::defaults(AgentConfig::default()));
    let file = match config_file {
        Some(p) => {
            if !p.is_file() {
                bail!(
                    "config file {} not found: check the --config path",
                    p.display()
                );
            }
            Some(p.to_path_buf())
        }
        None => default_config_file(),
    };
    if let Some(path) = &file {
        figment = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => figment.merge(Toml::file(path)),
            // YAML is a superset of JSON, so .json files load through it too.
            _ => figment.merge(Yaml::file(path)),
        };
    }
    figment = figment.merge(
        Env::prefixed("DKRON_")
            .ignore(&["config", "tag", "acl_enabled", "acl_bootstrap_token"])
            .filter(|k| !LIST_KEYS.contains(&k.as_str().replace('_', "-").as_str()))
            .map(|k| k.as_str().replace('_', "-").into()),
    );
    // List settings from the environment are comma-separated (Dkron's binding); DKRON_TAG
    // holds whitespace-separated key=value pairs.
    for key in LIST_KEYS {
        let var = format!("DKRON_{}", key.to_uppercase().replace('-', "_"));
        if let Ok(value) = std::env::var(&var) {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(String::from)
                .collect();
            figment = figment.merge(Serialized::default(key, items));
        }
    }
    for (var, key) in ACL_VARS {
        if let Ok(value) = std::env::var(var) {
            let value = match *key {
                "acl.enabled" => serde_json::Value::Bool(match value.trim() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    other => bail!("invalid {var}={other:?}: use true or false"),
                }),
                _ => serde_json::Value::String(value),
            };
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    if let Ok(value) = std::env::var("DKRON_TAG") {
        let mut tags = BTreeMap::new();
        for pair in value.split_whitespace() {
            match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    tags.insert(k.to_string(), v.to_string());
                }
                _ => bail!(
                    "invalid tag in DKRON_TAG: '{pair}': use key=value pairs separated by spaces"
                ),
            }
        }
        figment = figment.merge(Serialized::default("tags", tags));
    }
    figment = figment.merge(flags);
    let config: AgentConfig = figment.extract().map_err(|e| {
        let source = file
            .as_ref()
            .map(|p| format!(" (config file {})", p.display()))
            .unwrap_or_default();
        anyhow::anyhow!("invalid configuration{source}: {e}")
    })?;
    config.check()?;
    Ok(config)
}
