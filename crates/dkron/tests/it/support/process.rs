//! The real binary: free ports, a clean `dkron` command, a spawned agent killed on drop, and
//! short commands run to their exit with a bound.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Api;

/// A port that was free a moment ago, for a spawned agent to bind. It is taken below the
/// kernel's ephemeral range: the in-process nodes bind port 0, which the kernel serves from
/// that range, so none of them can take the port before the agent binds it (a port from
/// `bind(0)` once went to another test's node in between). Each port is handed out once.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // Test binaries running at once start apart.
    let base = 10_000 + (std::process::id() % 64) * 150;
    if ephemeral_low > base + 1_000 {
        for _ in 0..1_000 {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let Ok(port) = u16::try_from(base + n % (ephemeral_low - base)) else {
                continue;
            };
            if StdListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free port")
        .port()
}

pub fn dkron_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dkron")
}

/// `dkron` with a clean environment for configuration: no `DKRON_*` variables, and a
/// working directory and `HOME` without config files, so only what the test passes counts.
pub fn dkron_command(home: &Path) -> Command {
    let mut cmd = Command::new(dkron_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DKRON_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home).current_dir(home);
    cmd
}

/// A spawned `dkron agent`, killed (SIGKILL) and reaped when dropped. Its stdout and stderr go
/// to a log file so a failing test can print them.
pub struct Agent {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub api: Api,
}

impl Agent {
    /// Spawns `dkron agent <args>` whose HTTP API will listen on `http`.
    pub fn spawn(mut cmd: Command, http: SocketAddr, log: PathBuf) -> Agent {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening the agent log");
        let err = out.try_clone().expect("cloning the log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawning dkron");
        Agent {
            child: Some(child),
            log,
            api: Api::new(http),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent answers `/v1/isleader` with 200; fails with its log otherwise.
    pub async fn wait_leader(&mut self, timeout: Duration) {
        let deadline = dkron::clock::monotonic() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "dkron exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(r) = self
                .api
                .client
                .get(self.api.url("/v1/isleader"))
                .send()
                .await
                && r.status().as_u16() == 200
            {
                return;
            }
            assert!(
                dkron::clock::monotonic() < deadline,
                "dkron did not become leader within {timeout:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a short-lived `dkron` command (one that should exit by itself) with a time bound. Its
/// output is read while it runs, so an output larger than a pipe's buffer cannot block it.
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning dkron");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = dkron::clock::monotonic() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling dkron") {
            break Some(status);
        }
        if dkron::clock::monotonic() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().expect("reading stdout");
    let stderr = stderr.join().expect("reading stderr");
    match status {
        Some(status) => std::process::Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "dkron did not exit within {timeout:?}; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}
