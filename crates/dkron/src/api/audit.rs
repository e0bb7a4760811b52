//! The audit log: one JSON line per write and per refused request in `<data-dir>/audit.log`
//! (time, token accessor and name, remote address, method, path, job, status, duration),
//! rotated by size. It never holds a secret: requests are logged by their route, tokens by
//! accessor and name. Requests append their line to a shared buffer; one writer thread moves
//! it to the file every [`FLUSH_EVERY`] (a thread waking per line cost a tenth of the creates
//! a second on two cores). The buffer is bounded: past [`MAX_PENDING`] bytes a line is dropped,
//! counted and logged, never silently.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

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

/// How often the writer moves buffered lines to the file.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Bytes buffered at most before lines are dropped (a stuck disk).
pub const MAX_PENDING: usize = 8 * 1024 * 1024;

/// Appends lines to the shared buffer (clones share it).
#[derive(Clone)]
pub struct Audit {
    pending: Arc<Mutex<Vec<u8>>>,
    clock: SharedClock,
}

impl Audit {
    /// Starts the writer of `<dir>/audit.log`; it flushes what is left and ends when every
    /// `Audit` is dropped.
    pub fn start(dir: &Path, clock: SharedClock) -> std::io::Result<Audit> {
        std::fs::create_dir_all(dir)?;
        let mut writer = Writer::open(dir.join("audit.log"), ROTATE_BYTES)?;
        let pending: Arc<Mutex<Vec<u8>>> = Arc::default();
        let shared = pending.clone();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    let last = Arc::strong_count(&shared) == 1;
                    let chunk = std::mem::take(&mut *shared.lock().expect("audit buffer lock"));
                    if !chunk.is_empty()
                        && let Err(e) = writer.write_chunk(&chunk).and_then(|()| writer.flush())
                    {
                        tracing::error!(error = %e, "cannot write the audit log: check the data dir's disk");
                    }
                    if last {
                        return;
                    }
                }
            })?;
        Ok(Audit { pending, clock })
    }

    /// Buffers one line (with its newline); false when the buffer is full.
    fn push(&self, line: &Line<'_>) -> bool {
        let mut pending = self.pending.lock().expect("audit buffer lock");
        if pending.len() >= MAX_PENDING {
            return false;
        }
        let ok = serde_json::to_writer(&mut *pending, line).is_ok();
        pending.push(b'\n');
        ok
    }
}

/// One audit line.
#[derive(serde::Serialize)]
struct Line<'a> {
    time: jiff::Timestamp,
    accessor: Option<&'a str>,
    token_name: Option<&'a str>,
    remote: &'a str,
    method: &'a str,
    path: &'a str,
    job: Option<&'a str>,
    status: u16,
    duration_ms: f64,
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
        let mut chunk = Vec::with_capacity(line.len() + 1);
        chunk.extend_from_slice(line.as_bytes());
        chunk.push(b'\n');
        self.write_chunk(&chunk)
    }

    /// Appends whole lines, rotating first when they would pass the limit.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + chunk.len() as u64 > self.limit {
            self.rotate()?;
        }
        self.file.write_all(chunk)?;
        self.size += chunk.len() as u64;
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
    let line = Line {
        time: audit.clock.now(),
        accessor: who.map(|w| w.accessor.as_str()),
        token_name: who.map(|w| w.name.as_str()),
        remote: &remote,
        method: method.as_str(),
        path: &path,
        job,
        status: status.as_u16(),
        duration_ms: crate::clock::since(started).as_secs_f64() * 1000.0,
    };
    if !audit.push(&line) {
        crate::telemetry::metrics::audit_dropped();
        tracing::error!(%path, "an audit line was dropped: the audit log writer is stuck; check the data dir's disk");
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
