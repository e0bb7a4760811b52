//! Agent configuration, resolved in two stages (as ripgrep does): raw values from the config
//! file, `DKRON_*` environment variables and flags, then one validated [`AgentConfig`].
//!
//! Precedence is Dkron's: flag > environment > file > default. Config-file keys equal the flag
//! names (`bootstrap-expect`, `data-dir`, ...).

mod addr;
mod load;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

pub use addr::{parse_bind, private_ipv4};
use load::IGNORED;
pub use load::resolve;

/// Every setting the agent understands, with Dkron's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct AgentConfig {
    pub server: bool,
    pub bootstrap_expect: u32,
    pub data_dir: PathBuf,
    pub node_name: String,
    pub bind_addr: String,
    pub advertise_addr: String,
    pub http_addr: String,
    pub rpc_port: u16,
    pub advertise_rpc_port: u16,
    pub tags: BTreeMap<String, String>,
    pub log_level: String,
    pub region: String,
    pub datacenter: String,
    pub ui: bool,
    pub join: Vec<String>,
    pub retry_join: Vec<String>,
    /// Wait between retry-join attempts (Go duration).
    pub retry_interval: String,
    /// Retry-join attempts before giving up; 0 = forever.
    pub retry_max: u32,
    pub encrypt: String,
    /// Derive node certificates from the gossip key (`encrypt`) for mutual TLS on the RPC port
    /// (Dkron Pro's flag; default true).
    pub auto_tls: bool,
    /// This node's certificate (PEM, leaf first) and key: used on the RPC port instead of the
    /// derived ones, and on the HTTP port (HTTPS) unless `disable-http-tls` (Dkron Pro's flags).
    pub cert_file: String,
    pub key_file: String,
    /// CA certificates (PEM) that other nodes' certificates, and API clients' with
    /// `client-cert-auth`, must chain to.
    pub trusted_ca_file: String,
    /// Require a client certificate of `trusted-ca-file` on the HTTP API.
    pub client_cert_auth: bool,
    /// Revoked certificates (a PEM CRL of the trusted CA), refused on both ports.
    pub client_crl_file: String,
    /// Serve the HTTP API in plain HTTP although `cert-file` is set.
    pub disable_http_tls: bool,
    /// How long a failed server may stay unreachable before the leader removes it from the
    /// Raft group (Go duration; Dkron's Serf reaping time).
    pub serf_reconnect_timeout: String,
    pub raft_multiplier: u32,
    /// Tests only, never read from flags, files or the environment: take a Raft snapshot
    /// every this many entries and purge the log behind it at once (0: every 20,000, keeping
    /// 1,000), so snapshot install and restart from a snapshot can be tested.
    #[serde(skip)]
    #[doc(hidden)]
    pub raft_snapshot_logs: u64,
    /// Tests only, like `raft_snapshot_logs`: the least log growth, in bytes, after which a
    /// server takes a snapshot (0: 64 MiB).
    #[serde(skip)]
    #[doc(hidden)]
    pub raft_snapshot_bytes: u64,
    pub profile: String,
    pub disable_usage_stats: bool,
    /// Log line format: `text` (default) or `json`.
    pub log_format: String,
    /// Serve Prometheus metrics at `/metrics`.
    pub enable_prometheus: bool,
    /// StatsD `host:port` to send metrics to.
    pub statsd_addr: String,
    /// DogStatsD `host:port` to send metrics to, with `dog-statsd-tags` (`key:value`).
    pub dog_statsd_addr: String,
    pub dog_statsd_tags: Vec<String>,
    /// SMTP server for email notifications (both host and port must be set).
    pub mail_host: String,
    pub mail_port: u16,
    pub mail_username: String,
    pub mail_password: String,
    pub mail_from: String,
    /// Email body template (Go template syntax); empty: the execution's output.
    pub mail_payload: String,
    pub mail_subject_prefix: String,
    /// Webhook called when an execution starts, with its body template and headers.
    pub pre_webhook_endpoint: String,
    pub pre_webhook_payload: String,
    pub pre_webhook_headers: Vec<String>,
    /// Webhook called when an execution finishes, with its body template and headers.
    pub webhook_endpoint: String,
    pub webhook_payload: String,
    pub webhook_headers: Vec<String>,
    /// Cronitor ping base URL.
    pub cronitor_endpoint: String,
    /// OpenTelemetry collector to export trace spans to (OTLP/HTTP, e.g. http://host:4318).
    pub otel_endpoint: String,
    /// Browser origins (`https://ops.example.com`) besides the server's own that may change
    /// anything through the HTTP API; requests without an `Origin` (curl, scripts, Dkron's
    /// clients) are not affected.
    pub http_allowed_origins: Vec<String>,
    /// Access control lists (Dkron Pro's `acl:` section): off by default.
    pub acl: AclConfig,
    /// Executors this node runs; empty: every executor it has. Orders for others are refused.
    pub executors: Vec<String>,
    /// Another directory of executor plugins (`dkron-executor-*`), searched after Dkron's
    /// (`/etc/dkron/plugins`, then the dkron binary's own directory).
    pub plugin_dir: String,
    /// When finished executions notify: `always` (Dkron's behaviour, default), `on_failure`,
    /// or `on_change` (the first failure and the recovery). A job's `notify_on` overrides it.
    pub notify_on: String,
    /// Processors applied to every job's executions (config file only); a job's own
    /// `processors` entry of the same name replaces the global one.
    pub processors: BTreeMap<String, dkron_core::job::StringMap>,
    /// Settings this build does not know; each is ignored with one warning.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl AgentConfig {
    /// Where executor plugins are looked for, in Dkron's order (a later directory's binary
    /// replaces an earlier one's): `/etc/dkron/plugins`, the dkron binary's directory, then
    /// `plugin-dir`.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![PathBuf::from("/etc/dkron/plugins")];
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(PathBuf::from))
        {
            dirs.push(dir);
        }
        if !self.plugin_dir.is_empty() {
            if !Path::new(&self.plugin_dir).is_dir() {
                tracing::warn!(plugin_dir = %self.plugin_dir, "plugin-dir is not a directory: no executor plugins are loaded from it; check the path");
            }
            dirs.push(PathBuf::from(&self.plugin_dir));
        }
        dirs
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            server: false,
            bootstrap_expect: 0,
            data_dir: PathBuf::from("dkron.data"),
            node_name: default_node_name(),
            bind_addr: "0.0.0.0:8946".into(),
            advertise_addr: String::new(),
            http_addr: ":8080".into(),
            rpc_port: 6868,
            advertise_rpc_port: 0,
            tags: BTreeMap::new(),
            log_level: "info".into(),
            region: "global".into(),
            datacenter: "dc1".into(),
            ui: true,
            join: Vec::new(),
            retry_join: Vec::new(),
            retry_interval: "30s".into(),
            retry_max: 0,
            encrypt: String::new(),
            auto_tls: true,
            cert_file: String::new(),
            key_file: String::new(),
            trusted_ca_file: String::new(),
            client_cert_auth: false,
            client_crl_file: String::new(),
            disable_http_tls: false,
            serf_reconnect_timeout: "24h".into(),
            raft_multiplier: 1,
            raft_snapshot_logs: 0,
            raft_snapshot_bytes: 0,
            profile: "lan".into(),
            disable_usage_stats: false,
            log_format: "text".into(),
            enable_prometheus: false,
            statsd_addr: String::new(),
            dog_statsd_addr: String::new(),
            dog_statsd_tags: Vec::new(),
            mail_host: String::new(),
            mail_port: 0,
            mail_username: String::new(),
            mail_password: String::new(),
            mail_from: String::new(),
            mail_payload: String::new(),
            mail_subject_prefix: "[Dkron]".into(),
            pre_webhook_endpoint: String::new(),
            pre_webhook_payload: String::new(),
            pre_webhook_headers: Vec::new(),
            webhook_endpoint: String::new(),
            webhook_payload: String::new(),
            webhook_headers: Vec::new(),
            cronitor_endpoint: String::new(),
            otel_endpoint: String::new(),
            http_allowed_origins: Vec::new(),
            acl: AclConfig::default(),
            executors: Vec::new(),
            plugin_dir: String::new(),
            notify_on: "always".into(),
            processors: BTreeMap::new(),
            other: BTreeMap::new(),
        }
    }
}

/// The `acl:` section: `enabled` (also `--acl-enabled`, `DKRON_ACL_ENABLED`) and
/// `bootstrap_token`, a secret that becomes the management token at the first start (for
/// compose files and Kubernetes; also `--acl-bootstrap-token`, `DKRON_ACL_BOOTSTRAP_TOKEN`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclConfig {
    pub enabled: bool,
    #[serde(alias = "bootstrap-token")]
    pub bootstrap_token: String,
}

fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dkron".into())
}
impl AgentConfig {
    /// `serf-reconnect-timeout` parsed.
    pub fn reconnect_timeout(&self) -> anyhow::Result<std::time::Duration> {
        dkron_core::godur::parse_go_duration(&self.serf_reconnect_timeout).map_err(|e| {
            anyhow::anyhow!("invalid serf-reconnect-timeout: {e} (for example 24h or 30m)")
        })
    }

    /// Refuses settings this build cannot honour, with the fix in the message.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.server
            && self.bootstrap_expect == 0
            && self.join.is_empty()
            && self.retry_join.is_empty()
        {
            bail!(
                "a server needs --bootstrap-expect (1 for a single server) or --join/--retry-join to find its cluster"
            );
        }
        if !self.server && self.join.is_empty() && self.retry_join.is_empty() {
            bail!(
                "an agent (no --server) needs --join or --retry-join <server>:8946 to find its cluster"
            );
        }
        if !self.encrypt.is_empty() {
            dkron_membership::Keyring::from_base64(&self.encrypt)
                .map_err(|e| anyhow::anyhow!("invalid --encrypt key: {e}"))?;
        }
        dkron_core::godur::parse_go_duration(&self.retry_interval)
            .map_err(|e| anyhow::anyhow!("invalid retry-interval: {e}"))?;
        self.reconnect_timeout()?;
        if !matches!(self.profile.as_str(), "lan" | "wan" | "local") {
            bail!("unknown profile {:?}: use lan, wan or local", self.profile);
        }
        if !(1..=10).contains(&self.raft_multiplier) {
            bail!(
                "raft-multiplier cannot be {}. Must be between 1 and 10",
                self.raft_multiplier
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("unknown log-format {:?}: use text or json", self.log_format);
        }
        dkron_core::notify::NotifyPolicy::parse(&self.notify_on)
            .map_err(|e| anyhow::anyhow!("invalid notify-on: {e}"))?;
        for (key, headers) in [
            ("webhook-headers", &self.webhook_headers),
            ("pre-webhook-headers", &self.pre_webhook_headers),
        ] {
            for h in headers {
                if !h.contains(':') {
                    bail!("invalid {key} entry {h:?}: write it as \"Name: value\"");
                }
            }
        }
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            bail!("cert-file and key-file go together: give both, or neither");
        }
        if !self.cert_file.is_empty() && self.trusted_ca_file.is_empty() {
            bail!(
                "cert-file needs trusted-ca-file: the CA that the other nodes' certificates chain to"
            );
        }
        if self.client_cert_auth && (self.cert_file.is_empty() || self.disable_http_tls) {
            bail!(
                "client-cert-auth needs HTTPS on the HTTP port: set cert-file, key-file and trusted-ca-file, without disable-http-tls"
            );
        }
        if !self.client_crl_file.is_empty() && self.trusted_ca_file.is_empty() {
            bail!("client-crl-file needs trusted-ca-file: the CA whose revocations it lists");
        }
        for origin in &self.http_allowed_origins {
            let authority = origin
                .trim_end_matches('/')
                .split_once("://")
                .map(|(_, rest)| rest)
                .filter(|rest| !rest.is_empty() && !rest.contains('/'));
            if authority.is_none() {
                bail!(
                    "invalid http-allowed-origins entry {origin:?}: write it as scheme://host[:port], e.g. https://ops.example.com"
                );
            }
        }
        if !self.acl.bootstrap_token.is_empty() && self.acl.bootstrap_token.len() < 16 {
            bail!(
                "acl.bootstrap_token is too short: use at least 16 random characters (e.g. from `uuidgen`)"
            );
        }
        for (name, settings) in &self.processors {
            dkron_core::processor::Processor::parse(name, settings)
                .map_err(|e| anyhow::anyhow!("invalid processors.{name}: {e}"))?;
        }
        Ok(())
    }

    /// One line per setting that is accepted but has no effect, saying what to do instead.
    /// Logged once at start (the logger does not exist yet while the configuration resolves).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (key, value) in &self.other {
            let set = !matches!(value, serde_json::Value::Null)
                && value != &serde_json::Value::String(String::new())
                && value != &serde_json::Value::Bool(false);
            match IGNORED.iter().find(|(k, _)| k == key) {
                Some((_, why)) if set => {
                    warnings.push(format!("setting {key} is not supported and is ignored: {why}"))
                }
                Some(_) => {}
                None => warnings.push(format!(
                    "unknown setting {key} is ignored: check its spelling against `dkron agent --help`"
                )),
            }
        }
        if !self.mail_host.is_empty() && self.mail_port == 0 {
            warnings.push("mail-host is set but mail-port is 0: email notifications are off until mail-port is set".into());
        }
        if self.webhook_endpoint.is_empty() != self.webhook_payload.is_empty() {
            warnings.push("webhook-endpoint and webhook-payload must both be set: post-execution webhooks are off".into());
        }
        if self.pre_webhook_endpoint.is_empty() != self.pre_webhook_payload.is_empty() {
            warnings.push("pre-webhook-endpoint and pre-webhook-payload must both be set: pre-execution webhooks are off".into());
        }
        warnings
    }

    /// The address the HTTP API binds; Dkron's `:8080` means every interface.
    pub fn http_bind(&self) -> anyhow::Result<SocketAddr> {
        parse_bind(&self.http_addr, 8080).context("invalid http-addr")
    }

    /// The gossip (UDP) bind address.
    pub fn gossip_bind(&self) -> anyhow::Result<SocketAddr> {
        parse_bind(&self.bind_addr, 8946).context("invalid bind-addr")
    }

    /// The RPC port binds the bind-addr's IP on `rpc-port`.
    pub fn rpc_bind(&self) -> anyhow::Result<SocketAddr> {
        let bind = parse_bind(&self.bind_addr, 8946).context("invalid bind-addr")?;
        Ok(SocketAddr::new(bind.ip(), self.rpc_port))
    }

    /// The IP other nodes reach this node at.
    pub fn advertise_ip(&self) -> IpAddr {
        if !self.advertise_addr.is_empty()
            && let Ok(a) = parse_bind(&self.advertise_addr, 8946)
        {
            return a.ip();
        }
        match parse_bind(&self.bind_addr, 8946) {
            Ok(a) if !a.ip().is_unspecified() => a.ip(),
            // Bound to every interface: advertise this host's private address, like Dkron's
            // GetPrivateIP; loopback only when the host has nothing else.
            _ => private_ipv4().unwrap_or(IpAddr::from([127, 0, 0, 1])),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use figment::providers::Serialized;

    use super::*;

    #[test]
    fn advertise_falls_back_to_a_real_interface_when_binding_everything() {
        let config = AgentConfig {
            bind_addr: "0.0.0.0:8946".into(),
            ..AgentConfig::default()
        };
        let ip = config.advertise_ip();
        assert!(!ip.is_unspecified());
        // Every machine this runs on has a non-loopback interface (CI and containers do).
        assert!(
            !ip.is_loopback(),
            "advertised {ip} although the host has other addresses"
        );
        let explicit = AgentConfig {
            advertise_addr: "10.1.2.3".into(),
            ..AgentConfig::default()
        };
        assert_eq!(explicit.advertise_ip().to_string(), "10.1.2.3");
    }

    #[test]
    fn the_sample_config_file_resolves_cleanly() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dkron.yml");
        let config = resolve(Some(&sample), Serialized::defaults(serde_json::json!({})))
            .unwrap_or_else(|e| panic!("docs/dkron.yml: {e:#}"));
        assert!(config.server && config.enable_prometheus);
        assert_eq!(config.notify_on, "on_failure");
        assert_eq!(
            config.processors["files"]
                .get("forward")
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(config.warnings(), Vec::<String>::new());
    }

    #[test]
    fn the_acl_section_loads_from_the_file_and_the_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dkron.yml");
        std::fs::write(
            &file,
            "server: true\nbootstrap-expect: 1\nacl:\n  enabled: true\n  bootstrap_token: file-secret-0123456789\nexecutors: [http]\n",
        )
        .unwrap();
        let config = resolve(Some(&file), Serialized::defaults(serde_json::json!({}))).unwrap();
        assert!(config.acl.enabled);
        assert_eq!(config.acl.bootstrap_token, "file-secret-0123456789");
        assert_eq!(config.executors, ["http"]);
        assert_eq!(config.warnings(), Vec::<String>::new());
        let flags = serde_json::json!({"acl": {"enabled": false}});
        let config = resolve(Some(&file), Serialized::defaults(flags)).unwrap();
        assert!(!config.acl.enabled);
        assert_eq!(config.acl.bootstrap_token, "file-secret-0123456789");
        // A misspelt key in the section is refused, naming it.
        std::fs::write(
            &file,
            "server: true\nbootstrap-expect: 1\nacl:\n  enable: true\n",
        )
        .unwrap();
        let err = resolve(Some(&file), Serialized::defaults(serde_json::json!({}))).unwrap_err();
        assert!(format!("{err:#}").contains("enable"), "{err:#}");
        std::fs::write(
            &file,
            "server: true\nbootstrap-expect: 1\nacl:\n  bootstrap_token: short\n",
        )
        .unwrap();
        assert!(resolve(Some(&file), Serialized::defaults(serde_json::json!({}))).is_err());
    }
}
