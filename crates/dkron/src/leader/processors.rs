//! Runs processors on a finished execution's output, on the leader, before the result is
//! stored (as Dkron does). What each one does and its settings: `dkron_core::processor`.
//!
//! A processor never holds up the run: each gets [`PROCESSOR_TIMEOUT`], and one that fails
//! or times out is logged, counted (`dkron_processor_errors_total`) and leaves the output as
//! it was. Chaining, retries and notifications go on regardless.

use std::collections::BTreeMap;
use std::time::Duration;

use dkron_core::job::{Execution, StringMap};
use dkron_core::processor::{Processor, effective};
use tokio::io::AsyncWriteExt;

/// Longest a processor may take.
pub const PROCESSOR_TIMEOUT: Duration = Duration::from_secs(5);

/// What a processor needs to know about the execution.
pub struct Finished<'a> {
    pub execution: &'a Execution,
    pub success: bool,
    /// Name of the node running the processors (the leader), Dkron's `reporting_node`.
    pub reporting_node: &'a str,
}

/// Applies the job's processors (with the node's global ones) to `output` and answers the
/// output to store.
pub async fn apply(
    global: &BTreeMap<String, StringMap>,
    job: &BTreeMap<String, StringMap>,
    finished: &Finished<'_>,
    mut output: String,
) -> String {
    for (name, settings) in effective(global, job) {
        let processor = match Processor::parse_with_env(name, settings, |k| std::env::var(k).ok()) {
            Ok(p) => p,
            Err(e) => {
                // Validation refuses these; a job stored by an older version may have one.
                tracing::warn!(job = %finished.execution.job_name, processor = %name, error = %e, "processor skipped: fix the job's processors");
                continue;
            }
        };
        match tokio::time::timeout(PROCESSOR_TIMEOUT, run(&processor, finished, &output)).await {
            Ok(Ok(marker)) => {
                if !processor.forwards() {
                    output = marker;
                }
            }
            Ok(Err(e)) => failed(finished, name, &format!("{e:#}")),
            Err(_) => failed(
                finished,
                name,
                &format!("no answer within {PROCESSOR_TIMEOUT:?}"),
            ),
        }
    }
    output
}

fn failed(finished: &Finished<'_>, name: &str, error: &str) {
    crate::telemetry::metrics::processor_failed(name);
    tracing::warn!(
        job = %finished.execution.job_name,
        execution = %finished.execution.id,
        processor = %name,
        error = %error,
        "processor failed; the output is stored as it was. Check the processor's settings and its destination"
    );
}

/// Runs one processor; answers the marker that replaces the output when it does not forward.
async fn run(
    processor: &Processor,
    finished: &Finished<'_>,
    output: &str,
) -> anyhow::Result<String> {
    let execution = finished.execution;
    match processor {
        Processor::Log { .. } => {
            let text = format!(
                "----- BEGIN OUTPUT job={} execution={} -----\n{output}\n----- END OUTPUT -----\n",
                execution.job_name, execution.id
            );
            // One write of a small block: no need to leave the async worker.
            use std::io::Write;
            if finished.success {
                std::io::stdout().lock().write_all(text.as_bytes())?;
            } else {
                std::io::stderr().lock().write_all(text.as_bytes())?;
            }
            Ok("Output in dkron log".into())
        }
        Processor::Files { log_dir, .. } => {
            tokio::fs::create_dir_all(log_dir)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create log_dir {log_dir}: {e}"))?;
            // Execution ids are `<nanos>-<node name>`; keep a path separator out regardless.
            let file = std::path::Path::new(log_dir)
                .join(format!("{}.log", execution.id.replace(['/', '\\'], "_")));
            write_file_0644(&file, output.as_bytes())
                .await
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
            Ok(file.display().to_string())
        }
        Processor::Syslog { address, .. } => {
            let address = address.clone();
            let message = format!(
                "job={} execution={} node={} success={} output={}",
                execution.job_name, execution.id, execution.node_name, finished.success, output
            );
            let host = finished.reporting_node.to_string();
            tokio::task::spawn_blocking(move || send_syslog(&address, host, &message)).await??;
            Ok("Output in syslog".into())
        }
        Processor::Fluent {
            host, port, tag, ..
        } => {
            let record = FluentRecord {
                host: &execution.node_name,
                job_name: &execution.job_name,
                message: output,
            };
            let time = execution
                .finished_at
                .map_or(0, |t| t.as_second().max(0) as u64);
            // Named: the record must be a map, not the positional array rmp-serde writes by default.
            let frame = rmp_serde::to_vec_named(&(tag.as_str(), time, &record))?;
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to fluent at {host}:{port}: {e}"))?;
            stream.write_all(&frame).await?;
            stream.shutdown().await?;
            Ok("Output sent to Fluent".into())
        }
    }
}

/// Fluent Bit's record: Dkron sends these three fields.
#[derive(serde::Serialize)]
struct FluentRecord<'a> {
    host: &'a str,
    job_name: &'a str,
    message: &'a str,
}

fn send_syslog(address: &str, hostname: String, message: &str) -> anyhow::Result<()> {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_CRON,
        hostname: Some(hostname),
        process: "dkron".into(),
        pid: std::process::id(),
    };
    let mut logger = if let Some(path) = address.strip_prefix("unix://") {
        syslog::unix_custom(formatter, path)
    } else if let Some(server) = address.strip_prefix("udp://") {
        syslog::udp(formatter, "0.0.0.0:0", server)
    } else if let Some(server) = address.strip_prefix("tcp://") {
        // Bounded connect: the OS default (minutes) would hold a blocking thread per run
        // while the receiver is unreachable.
        connect_bounded(server).map(|socket| {
            syslog::Logger::new(
                syslog::LoggerBackend::Tcp(std::io::BufWriter::new(socket)),
                formatter,
            )
        })
    } else {
        syslog::unix(formatter)
    }
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot reach syslog ({}): {e}",
            if address.is_empty() {
                "/dev/log"
            } else {
                address
            }
        )
    })?;
    logger
        .info(message)
        .map_err(|e| anyhow::anyhow!("syslog refused the message: {e}"))?;
    Ok(())
}

/// Connects to `server` (host:port) within [`SYSLOG_CONNECT`], trying each address it
/// resolves to.
fn connect_bounded(server: &str) -> syslog::Result<std::net::TcpStream> {
    use std::net::ToSocketAddrs;
    let init = |e: std::io::Error| syslog::Error::Initialization(Box::new(e));
    let mut last = None;
    for addr in server.to_socket_addrs().map_err(init)? {
        match std::net::TcpStream::connect_timeout(&addr, SYSLOG_CONNECT) {
            Ok(socket) => {
                socket
                    .set_write_timeout(Some(SYSLOG_CONNECT))
                    .map_err(init)?;
                return Ok(socket);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(init(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
    })))
}

const SYSLOG_CONNECT: std::time::Duration = std::time::Duration::from_secs(3);

/// Writes `bytes` to `path` as a regular file with mode 0644. A symbolic link planted at the
/// path (execution ids are predictable) is refused rather than followed.
async fn write_file_0644(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .await?;
    file.write_all(bytes).await?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .await?;
    file.flush().await
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn syslog_over_tcp_delivers_and_an_unreachable_one_fails_fast() {
        let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("tcp://{}", receiver.local_addr().unwrap());
        send_syslog(&address, "h1".into(), "job=j over tcp").unwrap();
        let (mut conn, _) = receiver.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut line = String::new();
        let _ = conn.read_to_string(&mut line);
        assert!(
            line.starts_with("<78>") && line.contains("job=j over tcp"),
            "{line}"
        );

        // Nothing listens: a clear error, not a hang.
        let port = receiver.local_addr().unwrap().port();
        drop(receiver);
        let err = send_syslog(&format!("tcp://127.0.0.1:{port}"), "h1".into(), "x").unwrap_err();
        assert!(err.to_string().contains("cannot reach syslog"), "{err}");
    }
}
