//! Metrics: one global [`metrics`] recorder fanned out to the sinks the configuration turns
//! on — Prometheus (`--enable-prometheus`, served at `/metrics`), StatsD (`--statsd-addr`) and
//! DogStatsD (`--dog-statsd-addr`, `--dog-statsd-tags`). Every name is defined here, once, so
//! the code and docs/operations.md agree, and every one is really recorded (several of
//! Dkron's documented metrics never are).
//!
//! Recording is nearly free when no sink is on: the recorder fans out to nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Label, Metadata,
    Recorder, SharedString, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::AgentConfig;

/// Executions finished successfully, by `job_name` (Dkron's documented name).
pub const EXECUTIONS_SUCCEEDED: &str = "dkron_job_executions_succeeded_total";
/// Executions finished with a failure, by `job_name` (Dkron's documented name).
pub const EXECUTIONS_FAILED: &str = "dkron_job_executions_failed_total";
/// How long executions ran, by `job_name`, in seconds.
pub const EXECUTION_DURATION: &str = "dkron_job_execution_duration_seconds";
/// How late a scheduled run started after its nominal time, in seconds.
pub const FIRE_LATENESS: &str = "dkron_scheduler_fire_lateness_seconds";
/// Executions running now (as the replicated state records them).
pub const RUNNING: &str = "dkron_executions_running";
/// Jobs by `status`: success, failed, partially_failed, untriggered, disabled.
pub const JOBS: &str = "dkron_jobs";
/// Times this node saw the Raft leader change.
pub const LEADER_CHANGES: &str = "dkron_raft_leader_changes_total";
/// 1 on the leader, 0 elsewhere.
pub const IS_LEADER: &str = "dkron_raft_is_leader";
/// Time from proposing a write on the leader to its commit and apply, in seconds.
pub const RAFT_COMMIT: &str = "dkron_raft_commit_seconds";
/// Time this server's state machine took to apply committed entries, by `phase`: `memory`
/// (the in-memory state, which readers wait for), `store` (adding them to the state writer's
/// open `state.redb` transaction), `commit` (committing it early for a reader) and `fsync`
/// (its once-a-second durable commit).
pub const RAFT_APPLY: &str = "dkron_raft_apply_seconds";
/// Gossip members by `status`: alive, suspect, failed, left.
pub const MEMBERS: &str = "dkron_members";
/// Raft voters in the configuration.
pub const RAFT_VOTERS: &str = "dkron_raft_voters";
/// Notifications sent, by `kind` (email, webhook, pre_webhook, cronitor) and `outcome`
/// (sent, failed).
pub const NOTIFICATIONS: &str = "dkron_notifications_total";
pub const NOTIFY_DECISIONS: &str = "dkron_notifications_decided_total";
/// Processor runs that failed, by `processor`.
pub const PROCESSOR_ERRORS: &str = "dkron_processor_errors_total";
/// 1 while this node's RPC port takes orders, votes and writes from any host that reaches it
/// (started without `--encrypt`), 0 with mutual TLS.
pub const RPC_OPEN: &str = "dkron_rpc_open";
/// Connections refused at the TLS handshake, by `port` (rpc, http): no certificate of the
/// cluster, an expired or revoked one, plain HTTP on a TLS port.
pub const TLS_HANDSHAKES_REFUSED: &str = "dkron_tls_handshakes_refused_total";
/// Audit log lines that could not be written in time (the writer was stuck).
pub const AUDIT_DROPPED: &str = "dkron_audit_lines_dropped_total";
/// HTTP requests refused by the ACLs, by `status` (401, 403).
pub const ACL_REFUSED: &str = "dkron_acl_refused_total";
/// Client writes refused with 503 because the leader is behind (`dkron_core::admission`).
pub const WRITES_SHED: &str = "dkron_writes_shed_total";
/// Commands proposed on this server and waiting for the log.
pub const WRITES_PENDING: &str = "dkron_raft_writes_pending";
/// On the leader, the age in seconds of the oldest scheduled occurrence that is owed and not
/// yet claimed (0 when on time, and on followers).
pub const SCHEDULER_BEHIND: &str = "dkron_scheduler_behind_seconds";

/// Histogram buckets in seconds: from a millisecond to ten minutes.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// The process's one global recorder: every sink configured so far, each metric handle
/// fanned out to all of them.
///
/// A process normally runs one node, but tests run many nodes in one process with different
/// sinks; each node adds its own here, whichever starts first.
struct Sinks {
    recorders: RwLock<Vec<Arc<dyn Recorder + Send + Sync>>>,
    statsd: Mutex<BTreeSet<String>>,
}

/// One metric handle per sink.
struct Fan<T>(Vec<T>);

impl CounterFn for Fan<Counter> {
    fn increment(&self, value: u64) {
        self.0.iter().for_each(|c| c.increment(value));
    }
    fn absolute(&self, value: u64) {
        self.0.iter().for_each(|c| c.absolute(value));
    }
}

impl GaugeFn for Fan<Gauge> {
    fn increment(&self, value: f64) {
        self.0.iter().for_each(|g| g.increment(value));
    }
    fn decrement(&self, value: f64) {
        self.0.iter().for_each(|g| g.decrement(value));
    }
    fn set(&self, value: f64) {
        self.0.iter().for_each(|g| g.set(value));
    }
}

impl HistogramFn for Fan<Histogram> {
    fn record(&self, value: f64) {
        self.0.iter().for_each(|h| h.record(value));
    }
}

impl Sinks {
    fn add(&self, recorder: Arc<dyn Recorder + Send + Sync>) {
        self.recorders
            .write()
            .expect("metrics sinks lock")
            .push(recorder);
    }

    fn each<T>(&self, f: impl Fn(&(dyn Recorder + Send + Sync)) -> T) -> Vec<T> {
        let recorders = self.recorders.read().expect("metrics sinks lock");
        recorders.iter().map(|r| f(r.as_ref())).collect()
    }
}

impl Recorder for Sinks {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.each(|r| r.describe_counter(key.clone(), unit, description.clone()));
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.each(|r| r.describe_gauge(key.clone(), unit, description.clone()));
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.each(|r| r.describe_histogram(key.clone(), unit, description.clone()));
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Fan(
            self.each(|r| r.register_counter(key, metadata))
        )))
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(
            Fan(self.each(|r| r.register_gauge(key, metadata))),
        ))
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Fan(
            self.each(|r| r.register_histogram(key, metadata))
        )))
    }
}

static SINKS: OnceLock<&'static Sinks> = OnceLock::new();
static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

fn sinks() -> &'static Sinks {
    SINKS.get_or_init(|| {
        let sinks: &'static Sinks = Box::leak(Box::new(Sinks {
            recorders: RwLock::new(Vec::new()),
            statsd: Mutex::new(BTreeSet::new()),
        }));
        // Fails only if something else installed a recorder; then ours stays unused.
        let _ = metrics::set_global_recorder(sinks);
        sinks
    })
}

/// Adds the sinks `config` enables (Prometheus once per process, each StatsD address once).
pub fn install(config: &AgentConfig) -> anyhow::Result<()> {
    if !wants_metrics(config) {
        return Ok(());
    }
    let sinks = sinks();
    if config.enable_prometheus && PROMETHEUS.get().is_none() {
        let mut builder = PrometheusBuilder::new();
        for name in [EXECUTION_DURATION, FIRE_LATENESS, RAFT_COMMIT, RAFT_APPLY] {
            builder = builder.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(name.into()),
                BUCKETS,
            )?;
        }
        // Series of deleted or renamed jobs go after an hour without updates, so job names
        // that come and go (ephemeral jobs) do not grow /metrics without bound.
        let recorder = builder
            .idle_timeout(
                metrics_util::MetricKindMask::COUNTER | metrics_util::MetricKindMask::HISTOGRAM,
                Some(Duration::from_secs(3600)),
            )
            .build_recorder();
        if PROMETHEUS.set(recorder.handle()).is_ok() {
            sinks.add(Arc::new(recorder));
        }
    }
    for (addr, tags, what) in [
        (&config.statsd_addr, &Vec::new(), "statsd-addr"),
        (
            &config.dog_statsd_addr,
            &config.dog_statsd_tags,
            "dog-statsd-addr",
        ),
    ] {
        if addr.is_empty()
            || !sinks
                .statsd
                .lock()
                .expect("metrics sinks lock")
                .insert(addr.clone())
        {
            continue;
        }
        let labels = tags
            .iter()
            .map(|t| match t.split_once(':') {
                Some((k, v)) => Label::new(k.to_string(), v.to_string()),
                None => Label::new(t.to_string(), String::new()),
            })
            .collect();
        let recorder = metrics_exporter_dogstatsd::DogStatsDBuilder::default()
            .with_remote_address(addr.as_str())
            .map_err(|e| anyhow::anyhow!("invalid {what} {addr:?}: {e} (use host:port)"))?
            .with_telemetry(false)
            .with_flush_interval(Duration::from_secs(1))
            .with_global_labels(labels)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot send metrics to {what} {addr}: {e}"))?;
        sinks.add(Arc::new(recorder));
    }
    describe();
    Ok(())
}

/// Whether `config` turns on any metrics sink (nodes without one record nothing).
pub fn wants_metrics(config: &AgentConfig) -> bool {
    config.enable_prometheus || !config.statsd_addr.is_empty() || !config.dog_statsd_addr.is_empty()
}

/// The Prometheus exposition, once a node enabled it.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS.get()
}

fn describe() {
    describe_counter!(
        EXECUTIONS_SUCCEEDED,
        "Executions that finished successfully, by job"
    );
    describe_counter!(EXECUTIONS_FAILED, "Executions that failed, by job");
    describe_histogram!(
        EXECUTION_DURATION,
        metrics::Unit::Seconds,
        "How long executions ran, by job"
    );
    describe_histogram!(
        FIRE_LATENESS,
        metrics::Unit::Seconds,
        "How late scheduled runs started after their nominal time"
    );
    describe_gauge!(RUNNING, "Executions running now");
    describe_gauge!(JOBS, "Jobs by status");
    describe_counter!(LEADER_CHANGES, "Raft leader changes seen by this node");
    describe_gauge!(IS_LEADER, "1 when this node is the Raft leader");
    describe_histogram!(
        RAFT_COMMIT,
        metrics::Unit::Seconds,
        "Time from proposing a write to its commit and apply"
    );
    describe_histogram!(
        RAFT_APPLY,
        metrics::Unit::Seconds,
        "Time the state machine took to apply committed entries, by phase (memory, store)"
    );
    describe_gauge!(MEMBERS, "Gossip members by status");
    describe_gauge!(RAFT_VOTERS, "Voters in the Raft configuration");
    describe_counter!(NOTIFICATIONS, "Notifications sent, by kind and outcome");
    describe_counter!(
        NOTIFY_DECISIONS,
        "Finished executions the notify policy sent notifications for (notify) or not (quiet)"
    );
    describe_counter!(PROCESSOR_ERRORS, "Processor runs that failed, by processor");
    describe_gauge!(
        RPC_OPEN,
        "1 while the RPC port accepts any host (no --encrypt), 0 with mutual TLS"
    );
    describe_counter!(
        TLS_HANDSHAKES_REFUSED,
        "Connections refused at the TLS handshake, by port"
    );
    describe_counter!(
        AUDIT_DROPPED,
        "Audit log lines dropped: the writer was stuck"
    );
    describe_counter!(ACL_REFUSED, "HTTP requests refused by the ACLs, by status");
    describe_counter!(
        WRITES_SHED,
        "Client writes refused with 503 and Retry-After: the leader was behind"
    );
    describe_gauge!(
        WRITES_PENDING,
        "Commands proposed on this server and waiting for the log"
    );
    describe_gauge!(
        SCHEDULER_BEHIND,
        "Age of the oldest scheduled occurrence owed and not yet claimed (0: on time)"
    );
}

/// A client write was refused because the leader is behind.
pub fn write_shed() {
    counter!(WRITES_SHED).increment(1);
}

/// A finished execution: its outcome and how long it ran.
pub fn execution_finished(job: &str, success: bool, ran_for: Duration) {
    let name = if success {
        EXECUTIONS_SUCCEEDED
    } else {
        EXECUTIONS_FAILED
    };
    counter!(name, "job_name" => job.to_string()).increment(1);
    metrics::histogram!(EXECUTION_DURATION, "job_name" => job.to_string())
        .record(ran_for.as_secs_f64());
}

/// A scheduled run started `late` after its nominal time.
pub fn fired_late(late: Duration) {
    metrics::histogram!(FIRE_LATENESS).record(late.as_secs_f64());
}

/// A write committed `took` after it was proposed.
pub fn committed(took: Duration) {
    metrics::histogram!(RAFT_COMMIT).record(took.as_secs_f64());
}

/// Committed entries were applied: `phase` took `took`.
pub fn applied(phase: &'static str, took: Duration) {
    metrics::histogram!(RAFT_APPLY, "phase" => phase).record(took.as_secs_f64());
}

/// A notification was sent or failed.
pub fn notified(kind: &'static str, sent: bool) {
    let outcome = if sent { "sent" } else { "failed" };
    counter!(NOTIFICATIONS, "kind" => kind, "outcome" => outcome).increment(1);
}

/// The notify policy decided for a finished execution.
pub fn notify_decided(notify: bool) {
    let decision = if notify { "notify" } else { "quiet" };
    counter!(NOTIFY_DECISIONS, "decision" => decision).increment(1);
}

/// A processor failed.
pub fn processor_failed(processor: &str) {
    counter!(PROCESSOR_ERRORS, "processor" => processor.to_string()).increment(1);
}

/// Point-in-time values the sinks read as gauges.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub jobs_by_status: std::collections::BTreeMap<&'static str, u64>,
    pub running: u64,
    pub members_by_status: std::collections::BTreeMap<&'static str, u64>,
    pub voters: u64,
    pub leader: bool,
    pub writes_pending: u64,
    pub behind_seconds: f64,
}

/// Sets the gauges from a snapshot.
pub fn set_gauges(snapshot: &Snapshot) {
    for (status, n) in &snapshot.jobs_by_status {
        gauge!(JOBS, "status" => *status).set(*n as f64);
    }
    for (status, n) in &snapshot.members_by_status {
        gauge!(MEMBERS, "status" => *status).set(*n as f64);
    }
    gauge!(RUNNING).set(snapshot.running as f64);
    gauge!(RAFT_VOTERS).set(snapshot.voters as f64);
    gauge!(IS_LEADER).set(if snapshot.leader { 1.0 } else { 0.0 });
    gauge!(WRITES_PENDING).set(snapshot.writes_pending as f64);
    gauge!(SCHEDULER_BEHIND).set(snapshot.behind_seconds);
}

/// Whether this node's RPC port takes connections from any host.
pub fn rpc_open(open: bool) {
    gauge!(RPC_OPEN).set(if open { 1.0 } else { 0.0 });
}

/// A connection to `port` (rpc, http) was refused at the TLS handshake.
pub fn handshake_refused(port: &'static str) {
    counter!(TLS_HANDSHAKES_REFUSED, "port" => port).increment(1);
}

/// An audit line could not be queued in time.
pub fn audit_dropped() {
    counter!(AUDIT_DROPPED).increment(1);
}

/// The ACLs refused a request with `status` (401 or 403).
pub fn acl_refused(status: u16) {
    let status = if status == 401 { "401" } else { "403" };
    counter!(ACL_REFUSED, "status" => status).increment(1);
}

/// This node saw the leader change.
pub fn leader_changed() {
    counter!(LEADER_CHANGES).increment(1);
}
