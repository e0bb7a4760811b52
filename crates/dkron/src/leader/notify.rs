//! Notifications, sent by the leader: email (`mail-*`), the post-execution webhook
//! (`webhook-*`), the pre-execution webhook (`pre-webhook-*`) and Cronitor pings, with
//! Dkron's template variables (`{{.JobName}}`, `{{.Success}}`, `{{.Output}}`, ...).
//!
//! Unlike Dkron, a notification never holds anything up: each is sent from its own task with
//! a timeout, and a failure is logged and counted (`dkron_notifications_total`), never
//! returned. Pre-webhooks fire once per execution (Dkron fires one per output chunk). Which
//! finished executions notify is the policy in `dkron_core::notify`.

use std::collections::HashMap;
use std::time::Duration;

use dkron_core::job::{Execution, Job};
use dkron_core::notify::NotifyPolicy;
use gtmpl::Value;
use jiff::Timestamp;

use crate::config::AgentConfig;

/// Longest a notification may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Notification settings, taken from the agent configuration at start.
#[derive(Clone)]
pub struct Notifier {
    config: std::sync::Arc<AgentConfig>,
    policy: NotifyPolicy,
    http: reqwest::Client,
}

/// What the notify policy decided for each finished execution of this leader: the proof that
/// a success under `on_failure` sent nothing is a `quiet` decision, not a silence that might
/// only be slow. Also counted in `dkron_notifications_decided_total{decision}`.
#[derive(Debug, Default)]
pub struct Decisions {
    notify: std::sync::atomic::AtomicU64,
    quiet: std::sync::atomic::AtomicU64,
}

impl Decisions {
    fn record(&self, notify: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        if notify { &self.notify } else { &self.quiet }.fetch_add(1, SeqCst);
        crate::telemetry::metrics::notify_decided(notify);
    }

    /// Finished executions that (notified, stayed quiet) by the policy.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.notify.load(SeqCst), self.quiet.load(SeqCst))
    }
}

/// A finished execution, as notifications describe it.
pub struct Report<'a> {
    pub job: &'a Job,
    pub execution: &'a Execution,
    /// Every execution of the same trigger (all nodes), this one included.
    pub group: &'a [Execution],
    /// The node sending the notification (the leader).
    pub reporting_node: &'a str,
}

impl Notifier {
    pub fn new(config: &AgentConfig, http: reqwest::Client) -> Notifier {
        Notifier {
            policy: NotifyPolicy::parse(&config.notify_on).unwrap_or(NotifyPolicy::Always),
            config: std::sync::Arc::new(config.clone()),
            http,
        }
    }

    /// Whether finished executions may email or call the webhook (so callers skip gathering
    /// the report otherwise).
    pub fn notifies_finished(&self) -> bool {
        let c = &self.config;
        (!c.webhook_endpoint.is_empty() && !c.webhook_payload.is_empty())
            || (!c.mail_host.is_empty() && c.mail_port != 0)
    }

    /// An execution (each attempt) starts: the pre-webhook and Cronitor's `run` ping.
    pub fn started(&self, report: &Report<'_>) {
        let c = &self.config;
        if !c.pre_webhook_endpoint.is_empty() && !c.pre_webhook_payload.is_empty() {
            self.spawn_webhook(
                "pre_webhook",
                c.pre_webhook_endpoint.clone(),
                c.pre_webhook_headers.clone(),
                c.pre_webhook_payload.clone(),
                context(report),
            );
        }
        self.cronitor(report, "run");
    }

    /// An attempt finished, retried or not: Cronitor's `complete`/`fail` ping, so every
    /// series its `run` ping opened is closed.
    pub fn attempt_finished(&self, report: &Report<'_>) {
        let state = if report.execution.success {
            "complete"
        } else {
            "fail"
        };
        self.cronitor(report, state);
    }

    /// An execution finished (its last attempt): email and webhook as the policy says.
    /// `previous_status` is the job's status before this execution; `report.execution`
    /// carries the whole output (after processors), not only the replicated tail. The
    /// decision is recorded in `decisions` before anything is sent.
    pub fn finished(&self, report: &Report<'_>, previous_status: &str, decisions: &Decisions) {
        let c = &self.config;
        let success = report.execution.success;
        let notify =
            NotifyPolicy::for_job(report.job, self.policy).should_notify(previous_status, success);
        decisions.record(notify);
        if !notify {
            return;
        }
        let vars = context(report);
        if !c.webhook_endpoint.is_empty() && !c.webhook_payload.is_empty() {
            self.spawn_webhook(
                "webhook",
                c.webhook_endpoint.clone(),
                c.webhook_headers.clone(),
                c.webhook_payload.clone(),
                vars.clone(),
            );
        }
        if !c.mail_host.is_empty() && c.mail_port != 0 && !report.job.owner_email.is_empty() {
            let subject = format!(
                "{}{} {} execution report",
                c.mail_subject_prefix,
                if success { "Success" } else { "Failed" },
                report.job.name
            );
            let config = self.config.clone();
            let to = report.job.owner_email.clone();
            let job = report.job.name.clone();
            let output = report.execution.output.clone();
            tokio::spawn(async move {
                // Rendered here, off the run path.
                let body = if config.mail_payload.is_empty() {
                    output
                } else {
                    render(&config.mail_payload, &vars)
                };
                let sent =
                    tokio::time::timeout(SEND_TIMEOUT, send_email(&config, &to, subject, body))
                        .await
                        .unwrap_or_else(|_| {
                            Err(anyhow::anyhow!("no answer within {SEND_TIMEOUT:?}"))
                        });
                outcome("email", &job, sent);
            });
        }
    }

    fn spawn_webhook(
        &self,
        kind: &'static str,
        endpoint: String,
        headers: Vec<String>,
        template: String,
        vars: HashMap<String, Value>,
    ) {
        let http = self.http.clone();
        tokio::spawn(async move {
            let body = render(&template, &vars);
            let mut request = http.post(&endpoint).timeout(SEND_TIMEOUT).body(body);
            for header in &headers {
                // Split at the first colon only: Dkron splits at every one, which truncates
                // values such as URLs.
                if let Some((name, value)) = header.split_once(':') {
                    request = request.header(name.trim(), value.trim());
                }
            }
            // Webhook URLs often hold a token: logs name only the scheme and host.
            deliver(kind, request, redact(&endpoint)).await;
        });
    }

    fn cronitor(&self, report: &Report<'_>, state: &'static str) {
        if self.config.cronitor_endpoint.is_empty() {
            return;
        }
        let url = format!(
            "{}/{}",
            self.config.cronitor_endpoint.trim_end_matches('/'),
            report.job.name
        );
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("host", &report.execution.node_name)
            .append_pair("message", &format!("Job {state} by Dkron"))
            .append_pair("series", &report.execution.id)
            .append_pair("state", state)
            .finish();
        let request = self
            .http
            .get(format!("{url}?{query}"))
            .timeout(SEND_TIMEOUT);
        // The Cronitor URL holds the account's key: logs name only the scheme and host.
        tokio::spawn(deliver("cronitor", request, redact(&url)));
    }
}

/// Sends a prepared request; a non-2xx answer or an error is a failure, logged and counted
/// naming only `target`.
async fn deliver(kind: &'static str, request: reqwest::RequestBuilder, target: String) {
    let sent = match request.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(anyhow::anyhow!("{target} answered {}", r.status())),
        Err(e) => Err(anyhow::anyhow!(
            "cannot reach {target}: {}",
            e.without_url()
        )),
    };
    outcome(kind, &target, sent);
}

/// `scheme://host[:port]` of a URL, without the path and query that may hold a secret.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.port() {
            Some(port) => format!("{}://{}:{port}", u.scheme(), u.host_str().unwrap_or("")),
            None => format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")),
        },
        Err(_) => "(an unparsable URL)".into(),
    }
}

fn outcome(kind: &'static str, what: &str, sent: anyhow::Result<()>) {
    crate::telemetry::metrics::notified(kind, sent.is_ok());
    if let Err(e) = sent {
        tracing::warn!(kind, target = %what, error = %format!("{e:#}"), "notification not sent; check the notification settings and that the receiver is up");
    }
}

async fn send_email(
    config: &AgentConfig,
    to: &str,
    subject: String,
    body: String,
) -> anyhow::Result<()> {
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let message = Message::builder()
        .from(
            config
                .mail_from
                .parse()
                .map_err(|e| anyhow::anyhow!("mail-from {:?}: {e}", config.mail_from))?,
        )
        .to(to
            .parse()
            .map_err(|e| anyhow::anyhow!("owner_email {to:?}: {e}"))?)
        .subject(subject)
        .body(body)?;
    let tls = TlsParameters::new(config.mail_host.clone())?;
    let credentials = !config.mail_username.is_empty() && !config.mail_password.is_empty();
    // Port 465 speaks TLS from the first byte. Elsewhere STARTTLS is used when offered, and
    // required when a password would otherwise cross the network in clear.
    let tls = if config.mail_port == 465 {
        Tls::Wrapper(tls)
    } else if credentials {
        Tls::Required(tls)
    } else {
        Tls::Opportunistic(tls)
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.mail_host)
        .port(config.mail_port)
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT));
    if credentials {
        transport =
            transport.credentials(lettre::transport::smtp::authentication::Credentials::new(
                config.mail_username.clone(),
                config.mail_password.clone(),
            ));
    }
    transport
        .build()
        .send(message)
        .await
        .map_err(|e| anyhow::anyhow!("SMTP {}:{}: {e}", config.mail_host, config.mail_port))?;
    Ok(())
}

/// Dkron's template variables for one execution.
pub fn context(report: &Report<'_>) -> HashMap<String, Value> {
    let e = report.execution;
    let mut vars = HashMap::new();
    let mut set = |k: &str, v: String| {
        vars.insert(k.to_string(), Value::from(v));
    };
    set("Report", report_text(report));
    set("JobName", e.job_name.clone());
    set("ReportingNode", report.reporting_node.to_string());
    set("StartTime", go_time(e.started_at));
    set("FinishedAt", go_time(e.finished_at));
    set("Success", e.success.to_string());
    set("NodeName", e.node_name.clone());
    set("Output", e.output.clone());
    // Not in Dkron.
    set("ExecutionID", e.id.clone());
    set("Attempt", e.attempt.to_string());
    set("ScheduledAt", go_time(e.scheduled_at));
    vars
}

/// Renders a template; a broken template renders as its error (as in Dkron), so the
/// receiver sees what to fix.
pub fn render(template: &str, vars: &HashMap<String, Value>) -> String {
    match gtmpl::template(template, vars.clone()) {
        Ok(text) => text,
        Err(e) => format!("Failed to execute template: {e}"),
    }
}

/// Dkron's `.Report` text.
fn report_text(report: &Report<'_>) -> String {
    let e = report.execution;
    let mut text = format!(
        "Executed: {}\nReporting node: {}\nStart time: {}\nEnd time: {}\nSuccess: {}\nNode: {}\nOutput: {}\nExecution group: {}\n",
        e.job_name,
        report.reporting_node,
        go_time(e.started_at),
        go_time(e.finished_at),
        e.success,
        e.node_name,
        e.output,
        e.group
    );
    for g in report.group {
        text.push_str(&format!(
            "\t[Node]: {} [Start]: {} [End]: {} [Success]: {}\n",
            g.node_name,
            go_time(g.started_at),
            go_time(g.finished_at),
            g.success
        ));
    }
    text
}

/// Time as Go prints a `time.Time` (`2025-12-20 10:00:00.123 +0000 UTC`).
fn go_time(t: Option<Timestamp>) -> String {
    match t {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%S%.f +0000 UTC").to_string(),
        None => "0001-01-01 00:00:00 +0000 UTC".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Job, Execution) {
        let job = Job {
            name: "backup".into(),
            owner_email: "ops@example.com".into(),
            ..Job::default()
        };
        let execution = Execution {
            id: "1700000000000000000-node1".into(),
            job_name: "backup".into(),
            started_at: Some("2025-12-20T10:00:00.123Z".parse().unwrap()),
            finished_at: Some("2025-12-20T10:00:02Z".parse().unwrap()),
            success: false,
            output: "disk \"full\"\n".into(),
            node_name: "node1".into(),
            group: 42,
            attempt: 2,
            ..Execution::default()
        };
        (job, execution)
    }

    #[test]
    fn templates_see_dkron_variables() {
        let (job, execution) = sample();
        let group = [execution.clone()];
        let report = Report {
            job: &job,
            execution: &execution,
            group: &group,
            reporting_node: "leader1",
        };
        let vars = context(&report);
        let text = render(
            "{{.JobName}} on {{.NodeName}} via {{.ReportingNode}}: {{if eq .Success \"true\"}}ok{{else}}FAILED{{end}} at {{.StartTime}}",
            &vars,
        );
        assert_eq!(
            text,
            "backup on node1 via leader1: FAILED at 2025-12-20 10:00:00.123 +0000 UTC"
        );
        let report_text = render("{{.Report}}", &vars);
        assert!(
            report_text.starts_with("Executed: backup\nReporting node: leader1\n"),
            "{report_text}"
        );
        assert!(
            report_text.contains("\t[Node]: node1 [Start]: 2025-12-20 10:00:00.123 +0000 UTC"),
            "{report_text}"
        );
    }

    #[test]
    fn a_broken_template_says_so() {
        let (job, execution) = sample();
        let report = Report {
            job: &job,
            execution: &execution,
            group: &[],
            reporting_node: "l",
        };
        assert!(render("{{.JobName", &context(&report)).starts_with("Failed to execute template"));
    }
}
