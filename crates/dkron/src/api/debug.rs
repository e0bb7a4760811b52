//! `GET /debug/vars`: Go's expvar JSON, as Dkron serves it — `cmdline`, `memstats` (Go's field
//! names, filled with this process's memory as the kernel reports it; the collector's fields
//! are 0: there is none), and Dkron's own `node`, `scheduler_started` and `cron_entries`.
//! Unlike Dkron, secrets given on the command line are shown as `<redacted>`.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::Cx;
use super::query::{Query, ok};

/// Flags whose value is a secret.
const SECRET_FLAGS: &[&str] = &[
    "--encrypt",
    "--acl-bootstrap-token",
    "--mail-password",
    "--token",
];

fn redacted(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut hide_next = false;
    for arg in args {
        if hide_next {
            out.push("<redacted>".to_string());
            hide_next = false;
            continue;
        }
        match arg.split_once('=') {
            Some((flag, _)) if SECRET_FLAGS.contains(&flag) => {
                out.push(format!("{flag}=<redacted>"))
            }
            None if SECRET_FLAGS.contains(&arg.as_str()) => {
                hide_next = true;
                out.push(arg);
            }
            _ => out.push(arg),
        }
    }
    out
}

/// `VmRSS` and `VmSize` of this process, in bytes (0 where /proc is missing).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("VmRSS:"), kib("VmSize:"))
}

pub async fn vars(State(cx): Cx, query: Query) -> Response {
    let (rss, size) = memory();
    let leading = cx.leadership.is_leader();
    let cron_entries: serde_json::Map<String, Value> = if leading {
        cx.state.read(|s| {
            s.entries()
                .filter(|(_, e)| !e.job.disabled && !e.job.schedule.is_empty())
                .map(|(name, e)| {
                    let tags: Vec<String> = e
                        .job
                        .tags
                        .iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    let text = format!(
                        "Job: {name}, scheduled at: {}, tags:map[{}]",
                        e.job.schedule,
                        tags.join(" ")
                    );
                    (name.clone(), json!(text))
                })
                .collect()
        })
    } else {
        Default::default()
    };
    let body = json!({
        "cmdline": redacted(std::env::args()),
        "memstats": {
            "Alloc": rss, "TotalAlloc": rss, "Sys": size, "HeapAlloc": rss, "HeapSys": size,
            "HeapInuse": rss, "HeapIdle": 0, "HeapReleased": 0, "HeapObjects": 0,
            "Mallocs": 0, "Frees": 0, "Lookups": 0, "StackInuse": 0, "StackSys": 0,
            "NumGC": 0, "PauseTotalNs": 0, "NextGC": 0, "LastGC": 0,
        },
        "node": cx.members.name(),
        "scheduler_started": u8::from(leading),
        "cron_entries": cron_entries,
    });
    ok(&body, &query)
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_on_the_command_line_are_redacted() {
        let args = [
            "dkron",
            "agent",
            "--encrypt=abc",
            "--acl-bootstrap-token",
            "s3cret",
            "--server",
        ]
        .map(String::from);
        assert_eq!(
            super::redacted(args),
            [
                "dkron",
                "agent",
                "--encrypt=<redacted>",
                "--acl-bootstrap-token",
                "<redacted>",
                "--server"
            ]
        );
    }
}
