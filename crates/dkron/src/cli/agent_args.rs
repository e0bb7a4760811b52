//! `dkron agent` flags. Every flag is optional so that an unset flag never overrides the
//! config file or the environment; the names are Dkron's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

/// `dkron agent` flags. Every flag is optional so that an unset flag never overrides the
/// config file or the environment; the names are Dkron's.
#[derive(Args, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct AgentArgs {
    /// Config file path (default: dkron.yml in /etc/dkron, $HOME/.dkron or ./config)
    #[arg(long, env = "DKRON_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Start in server mode
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<bool>,
    /// Number of servers to wait for before bootstrapping the cluster
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap_expect: Option<u32>,
    /// Directory for the Raft log and state
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// Name of this node, unique in the cluster (default: hostname)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<String>,
    /// Address to bind cluster communication to (ip[:port])
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bind_addr: Option<String>,
    /// Address to advertise to other nodes
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_addr: Option<String>,
    /// HTTP API address (default :8080)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    /// RPC port (default 6868)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rpc_port: Option<u16>,
    /// RPC port advertised to other nodes (default: rpc-port)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_rpc_port: Option<u16>,
    /// Tag this node: key=value (repeatable)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    #[serde(skip)]
    pub tag: Vec<String>,
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Log level: trace, debug, info, warn, error
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Region of this node
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// Datacenter of this node
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    datacenter: Option<String>,
    /// Serve the web UI
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ui: Option<bool>,
    /// Address of a member to join at start (repeatable)
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    join: Vec<String>,
    /// Address of a member to join, retried until it works (repeatable)
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    retry_join: Vec<String>,
    /// Wait between retry-join attempts (Go duration, default 30s)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_interval: Option<String>,
    /// Retry-join attempts before giving up with an error (0 = retry forever)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_max: Option<u32>,
    /// Gossip encryption key (from `dkron keygen`); also makes every RPC connection mutual
    /// TLS between the nodes that hold it
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypt: Option<String>,
    /// Derive node certificates from the gossip key for mutual TLS on the RPC port
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_tls: Option<bool>,
    /// This node's TLS certificate (PEM): RPC port, and HTTPS on the HTTP port
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_file: Option<String>,
    /// The key of --cert-file (PEM)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<String>,
    /// CA certificates (PEM) that other nodes' and API clients' certificates chain to
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted_ca_file: Option<String>,
    /// Require client certificates of --trusted-ca-file on the HTTP API
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert_auth: Option<bool>,
    /// Revoked certificates (PEM CRL of the trusted CA), refused on both ports
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    client_crl_file: Option<String>,
    /// Serve the HTTP API in plain HTTP even with --cert-file
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_http_tls: Option<bool>,
    /// How long a failed server may stay unreachable before it is removed from the Raft
    /// group (Go duration, default 24h)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    serf_reconnect_timeout: Option<String>,
    /// Scale Raft timeouts (1-10)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    raft_multiplier: Option<u32>,
    /// Gossip timing profile: lan, wan or local
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    /// Accepted for compatibility: dkron-rs never sends usage statistics
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_usage_stats: Option<bool>,
    /// Log format: text or json
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
    /// Serve Prometheus metrics at /metrics
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_prometheus: Option<bool>,
    /// StatsD address (host:port) to send metrics to
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    statsd_addr: Option<String>,
    /// DogStatsD address (host:port) to send metrics to
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dog_statsd_addr: Option<String>,
    /// DogStatsD tag key:value added to every metric (repeatable)
    #[arg(long, value_name = "VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dog_statsd_tags: Vec<String>,
    /// SMTP server host for email notifications
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_host: Option<String>,
    /// SMTP server port (0 turns email off)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_port: Option<u16>,
    /// SMTP user name
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_username: Option<String>,
    /// SMTP password
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_password: Option<String>,
    /// From address of notification emails
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_from: Option<String>,
    /// Email body template (default: the execution's output)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_payload: Option<String>,
    /// Email subject prefix (default [Dkron])
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_subject_prefix: Option<String>,
    /// URL called when an execution starts
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_webhook_endpoint: Option<String>,
    /// Body template of the pre-execution webhook
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_webhook_payload: Option<String>,
    /// Header "Name: value" of the pre-execution webhook (repeatable)
    #[arg(long, value_name = "VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pre_webhook_headers: Vec<String>,
    /// URL called when an execution finishes
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_endpoint: Option<String>,
    /// Body template of the webhook
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_payload: Option<String>,
    /// Header "Name: value" of the webhook (repeatable)
    #[arg(long, value_name = "VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    webhook_headers: Vec<String>,
    /// Deprecated in Dkron and without effect; use --webhook-endpoint
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_url: Option<String>,
    /// Cronitor ping base URL
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cronitor_endpoint: Option<String>,
    /// When finished executions notify: always, on_failure or on_change
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_on: Option<String>,
    /// OpenTelemetry collector for trace spans, OTLP over HTTP (e.g. http://collector:4318)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    otel_endpoint: Option<String>,
    /// Browser origin allowed to change things through the HTTP API besides the server's own
    /// (repeatable, e.g. https://ops.example.com)
    #[arg(long, value_name = "ORIGIN")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    http_allowed_origins: Vec<String>,
    /// Require an ACL token on the HTTP API (Dkron Pro's acl.enabled)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip)]
    pub acl_enabled: Option<bool>,
    /// Secret that becomes the management token at the first start (acl.bootstrap_token)
    #[arg(long, value_name = "SECRET")]
    #[serde(skip)]
    pub acl_bootstrap_token: Option<String>,
    #[arg(skip)]
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub acl: serde_json::Map<String, serde_json::Value>,
    /// Executors this node runs (repeatable or comma-separated; default: all)
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    executors: Vec<String>,
    /// Directory of executor plugins (dkron-executor-*), searched after /etc/dkron/plugins and the dkron binary's directory
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin_dir: Option<String>,
}
