//! The audit log: one JSON line per write and per refused request in `<data-dir>/audit.log`
//! (time, token accessor and name, remote address, method, path, job, status, duration),
//! rotated by size. It never holds a secret: requests are logged by their route, tokens by
//! accessor and name. Lines go through a bounded queue to one writer task, so a slow disk
//! slows requests down rather than losing lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;
use tokio::sync::mpsc;

use crate::clock::SharedClock;

/// The token that made a request (set on the response by the ACL gate).
#[derive(Clone, Debug)]
pub struct Who {
    pub accessor: String,
    pub name: String,
}

/// The job a write concerned when its path does not name it (`POST /v1/jobs`).
#[derive(Clone, Debug)]
pub struct AuditJob(pub String);

/// Size at which `audit.log` is rotated, and rotated files kept (`audit.log.1` newest).
pub const ROTATE_BYTES: u64 = 16 * 1024 * 1024;
pub const KEEP: usize = 5;

/// Sends lines to the writer task (clones share it).
#[derive(Clone)]
pub struct Audit {
    lines: mpsc::Sender<String>,
    clock: SharedClock,
}

impl Audit {
    /// Starts the writer of `<dir>/audit.log`; it ends when every sender is dropped.
    pub fn start(dir: &Path, clock: SharedClock) -> std::io::Result<Audit> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("audit.log");
        let mut writer = Writer::open(path, ROTATE_BYTES)?;
        let (lines, mut incoming) = mpsc::channel::<String>(4096);
        tokio::task::spawn_blocking(move || {
            while let Some(line) = incoming.blocking_recv() {
                // Whatever queued meanwhile goes out in the same write.
                let mut result = writer.write(&line);
                while let Ok(more) = incoming.try_recv() {
                    result = result.and(writer.write(&more));
                }
                if let Err(e) = result.and(writer.flush()) {
                    tracing::error!(error = %e, "cannot write the audit log: check the data dir's disk");
                }
            }
        });
        Ok(Audit { lines, clock })
    }
}

/// Appends lines to a file, moving it to `.1` (and older ones up) when it passes `limit`.
pub struct Writer {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    size: u64,
    limit: u64,
}

impl Writer {
    pub fn open(path: PathBuf, limit: u64) -> std::io::Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path,
            file: std::io::BufWriter::new(file),
            size,
            limit,
        })
    }

    pub fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.limit {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += line.len() as u64 + 1;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        for n in (1..KEEP).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        *self = Writer::open(self.path.clone(), self.limit)?;
        Ok(())
    }
}

/// The job a path names (`/v1/jobs/<job>...`).
fn job_in(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/jobs/")?;
    let job = rest.split('/').next().unwrap_or_default();
    (!job.is_empty()).then_some(job)
}

/// The middleware: writes a line for every request that is not a read, and for every one
/// refused as unauthenticated or forbidden.
pub(super) async fn record(audit: Audit, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let remote = req
        .extensions()
        .get::<ConnectInfo<crate::rpc::PeerAddr>>()
        .map(|c| c.0.0.to_string())
        .unwrap_or_default();
    let started = crate::clock::monotonic();
    let res = next.run(req).await;
    let status = res.status();
    let write = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let refused = matches!(status.as_u16(), 401 | 403);
    if !(write || refused) {
        return res;
    }
    let who = res.extensions().get::<Who>();
    let job = res
        .extensions()
        .get::<AuditJob>()
        .map(|j| j.0.as_str())
        .or_else(|| job_in(&path));
    let line = json!({
        "time": audit.clock.now(),
        "accessor": who.map(|w| w.accessor.as_str()),
        "token_name": who.map(|w| w.name.as_str()),
        "remote": remote,
        "method": method.as_str(),
        "path": path,
        "job": job,
        "status": status.as_u16(),
        "duration_ms": crate::clock::since(started).as_secs_f64() * 1000.0,
    })
    .to_string();
    // Bounded: a writer that cannot keep up slows requests down (for at most a second each)
    // rather than dropping lines silently.
    match tokio::time::timeout(Duration::from_secs(1), audit.lines.send(line)).await {
        Ok(Ok(())) => {}
        _ => {
            crate::telemetry::metrics::audit_dropped();
            tracing::error!(%path, "an audit line was dropped: the audit log writer is stuck; check the data dir's disk");
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_by_size_and_keeps_a_few() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut w = Writer::open(path.clone(), 100).unwrap();
        for i in 0..40 {
            w.write(&format!(
                "{{\"line\":{i:03},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}}"
            ))
            .unwrap();
        }
        w.flush().unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 100, "{}", current.len());
        assert!(current.contains("\"line\":039"));
        let oldest = dir.path().join(format!("audit.log.{KEEP}"));
        assert!(oldest.exists());
        assert!(!dir.path().join(format!("audit.log.{}", KEEP + 1)).exists());
        // Reopening appends to what is there.
        w.flush().unwrap();
        let mut again = Writer::open(path.clone(), 100).unwrap();
        again.write("{}").unwrap();
        again.flush().unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("{}\n"));
        assert_eq!(job_in("/v1/jobs/a/run"), Some("a"));
        assert_eq!(job_in("/v1/jobs"), None);
    }
}
