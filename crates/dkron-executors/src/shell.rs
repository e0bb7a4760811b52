//! The `shell` executor: runs a command as a child process with Dkron's
//! semantics (config keys `command`, `shell`, `env`, `cwd`, `payload`,
//! `timeout`, `mem_limit`, `su`), captures stdout and stderr merged into one
//! bounded tail buffer, and enforces the timeout and memory limit on the
//! child's whole process group, so a job's grandchildren can neither outlive
//! a kill nor hold the run open forever.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine as _;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Group, Pid, User};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::Instant;

use crate::output::{TailBuffer, compose};
use crate::{ExecOutcome, RunContext};
use dkron_core::godur::{format_go_duration, parse_go_duration};

/// Time between SIGTERM and SIGKILL when a job times out, to let it clean up.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// After the main child exits, how long to keep reading output that a
/// still-running grandchild may hold open, before giving up on it.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
/// How often the memory limit is checked (Dkron checks every second).
const MEM_POLL: Duration = Duration::from_secs(1);
/// Page size used to turn /proc statm pages into bytes; 4 KiB on every
/// platform this runs on, and an RSS estimate needs nothing more precise.
const PAGE_SIZE: u64 = 4096;

/// Problems with a shell executor config, found without any IO.
pub fn validate_config(config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if get(config, "command").trim().is_empty() {
        problems.push((
            "command".to_owned(),
            "command is required for the shell executor".to_owned(),
        ));
    }
    let timeout = get(config, "timeout");
    if !timeout.is_empty() && parse_go_duration(timeout).is_err() {
        problems.push((
            "timeout".to_owned(),
            "Error parsing job timeout value".to_owned(),
        ));
    }
    if let Err(detail) = parse_mem_limit(get(config, "mem_limit")) {
        problems.push((
            "mem_limit".to_owned(),
            format!("Error parsing job memory limit value: {detail}"),
        ));
    }
    let payload = get(config, "payload");
    if !payload.is_empty()
        && base64::engine::general_purpose::STANDARD
            .decode(payload)
            .is_err()
    {
        problems.push((
            "payload".to_owned(),
            "payload must be standard base64".to_owned(),
        ));
    }
    let su = get(config, "su");
    if !su.is_empty() {
        let (user, group) = split_su(su);
        if user.is_empty() || group.is_some_and(str::is_empty) {
            problems.push((
                "su".to_owned(),
                "su must be \"user\" or \"user:group\"".to_owned(),
            ));
        }
    }
    problems
}

fn get<'a>(config: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    config.get(key).map_or("", String::as_str)
}

fn failed(output: impl Into<String>, limit: usize) -> ExecOutcome {
    let output = output.into();
    ExecOutcome {
        success: false,
        output: crate::output::tail_str(&output, limit).to_owned(),
    }
}

/// Go's `strconv.ParseBool` true values; anything else (including garbage)
/// is false, as Dkron ignores the parse error.
pub(crate) fn parse_go_bool(s: &str) -> bool {
    matches!(s, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// Parse `mem_limit`: plain bytes or a number with a binary unit
/// (B, BYTES, K, KB, M, MB, G, GB, T, TB; case-insensitive, decimals allowed).
/// Empty means no limit.
pub fn parse_mem_limit(input: &str) -> Result<Option<u64>, String> {
    let s = input.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let num_len = s
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (num, unit) = s.split_at(num_len);
    let unit = unit.trim_start();
    let valid_number = !num.is_empty()
        && !num.starts_with('.')
        && !num.ends_with('.')
        && num.bytes().filter(|b| *b == b'.').count() <= 1;
    if !valid_number {
        return Err(format!("invalid size: '{input}'"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size: '{input}'"))?;
    let multiplier: f64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" | "BYTES" => 1.0,
        "K" | "KB" => 1024.0,
        "M" | "MB" => 1024.0 * 1024.0,
        "G" | "GB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("invalid size: '{input}' (unknown unit \"{unit}\")")),
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("invalid size: '{input}' (too large)"));
    }
    let bytes = bytes as u64;
    if bytes == 0 {
        return Err(format!("invalid size: '{input}' (must be greater than 0)"));
    }
    Ok(Some(bytes))
}

fn split_su(su: &str) -> (&str, Option<&str>) {
    match su.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (su, None),
    }
}

/// Resolve `su` to (uid, gid). Numeric ids are accepted when no such name
/// exists, which helps in containers without a passwd entry.
fn resolve_su(su: &str) -> Result<(u32, u32), String> {
    let (user_name, group_name) = split_su(su);
    let (uid, primary_gid) = match User::from_name(user_name) {
        Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
        Ok(None) => match user_name.parse::<u32>() {
            Ok(id) => (id, id),
            Err(_) => return Err(format!("shell: su: unknown user '{user_name}'")),
        },
        Err(e) => return Err(format!("shell: su: looking up user '{user_name}': {e}")),
    };
    let gid = match group_name {
        None => primary_gid,
        Some(g) => match Group::from_name(g) {
            Ok(Some(grp)) => grp.gid.as_raw(),
            Ok(None) => match g.parse::<u32>() {
                Ok(id) => id,
                Err(_) => return Err(format!("shell: su: unknown group '{g}'")),
            },
            Err(e) => return Err(format!("shell: su: looking up group '{g}': {e}")),
        },
    };
    Ok((uid, gid))
}

/// Everything taken from the config before the process starts, so bad
/// input fails the run before anything is spawned.
struct Plan {
    command: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    payload: Option<Vec<u8>>,
    timeout: Option<Duration>,
    mem_limit: Option<u64>,
    ids: Option<(u32, u32)>,
}

fn plan(config: &BTreeMap<String, String>, ctx: &RunContext) -> Result<Plan, String> {
    let command = get(config, "command");
    if command.trim().is_empty() {
        return Err("shell: Command missing".to_owned());
    }
    let (program, args) = if parse_go_bool(get(config, "shell")) {
        (
            "/bin/sh".to_owned(),
            vec!["-c".to_owned(), command.to_owned()],
        )
    } else {
        let mut words = shell_words::split(command)
            .map_err(|e| format!("shell: error parsing command '{command}': {e}"))?;
        if words.is_empty() {
            return Err("shell: Command missing".to_owned());
        }
        let program = words.remove(0);
        (program, words)
    };

    let mut env: Vec<(String, String)> = get(config, "env")
        .split(',')
        .filter_map(|entry| {
            let entry = entry.trim();
            // Entries without '=' cannot name a variable; Go would pass them
            // through to no effect, so they are skipped.
            let (k, v) = entry.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect();
    // Added after the user's entries so a job cannot spoof its own identity
    // or fencing token.
    env.push(("ENV_JOB_NAME".to_owned(), ctx.job_name.clone()));
    env.push(("DKRON_JOB_NAME".to_owned(), ctx.job_name.clone()));
    env.push((
        "DKRON_SCHEDULED_TIME".to_owned(),
        ctx.scheduled_time.clone(),
    ));
    env.push(("DKRON_EXECUTION_ID".to_owned(), ctx.execution_id.clone()));
    env.push((
        "DKRON_FENCING_TOKEN".to_owned(),
        ctx.fencing_token.to_string(),
    ));

    let cwd = Some(get(config, "cwd"))
        .filter(|c| !c.is_empty())
        .map(str::to_owned);

    let payload_text = get(config, "payload");
    let payload = if payload_text.is_empty() {
        None
    } else {
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(payload_text)
                .map_err(|e| format!("shell: Error decoding payload (base64): {e}"))?,
        )
    };

    let timeout_text = get(config, "timeout");
    let timeout = if timeout_text.is_empty() {
        None
    } else {
        let d = parse_go_duration(timeout_text)
            .map_err(|e| format!("shell: Error parsing job timeout value: {e}"))?;
        // Go treats a zero timeout as "none"; so does Dkron.
        Some(d).filter(|d| !d.is_zero())
    };

    let mem_limit = parse_mem_limit(get(config, "mem_limit"))
        .map_err(|e| format!("shell: Error parsing job memory limit value: {e}"))?;

    let su = get(config, "su");
    let ids = if su.is_empty() {
        None
    } else {
        Some(resolve_su(su)?)
    };

    Ok(Plan {
        command: command.to_owned(),
        program,
        args,
        env,
        cwd,
        payload,
        timeout,
        mem_limit,
        ids,
    })
}

/// Kills the job's process group if the run is abandoned (the `execute`
/// future dropped mid-run), so a cancelled run leaves no processes behind.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already gone) is the expected race; nothing to do.
            let _ = killpg(pgid, sig);
        }
    }
    /// Called once the leader is reaped: its pid may then be reused, so the
    /// group must not be signalled blindly any more.
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Why the executor itself ended the job.
enum Killed {
    Timeout(Duration),
    Memory { used: u64, limit: u64 },
}

pub async fn execute(config: &BTreeMap<String, String>, ctx: &RunContext) -> ExecOutcome {
    let limit = ctx.output_limit;
    let plan = match plan(config, ctx) {
        Ok(p) => p,
        Err(msg) => return failed(msg, limit),
    };

    // One pipe for both stdout and stderr keeps them merged in write order,
    // as Dkron does by giving both the same buffer.
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return failed(format!("shell: creating output pipe: {e}"), limit),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return failed(format!("shell: creating output pipe: {e}"), limit),
    };
    let reader = match tokio::process::ChildStdout::from_std(std::process::ChildStdout::from(
        OwnedFd::from(reader),
    )) {
        Ok(r) => r,
        Err(e) => return failed(format!("shell: creating output pipe: {e}"), limit),
    };

    let mut child = {
        let mut cmd = Command::new(&plan.program);
        cmd.args(&plan.args)
            .envs(plan.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2))
            .stdin(if plan.payload.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            // A group of its own lets timeout and memory kills reach every
            // process the job starts, not just the direct child.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &plan.cwd {
            cmd.current_dir(cwd);
        }
        if let Some((uid, gid)) = plan.ids {
            cmd.uid(uid).gid(gid);
        }
        match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return failed(
                    format!("shell: failed to start '{}': {e}", plan.command),
                    limit,
                );
            }
        }
        // `cmd` is dropped here, closing the parent's copies of the pipe's
        // write end; otherwise the reader would never see end-of-file.
    };
    let mut guard = GroupGuard {
        pgid: child.id().map(|id| Pid::from_raw(id as i32)),
    };
    tracing::debug!(job = %ctx.job_name, pid = ?child.id(), command = %plan.command, "shell job started");

    // Feed the payload from its own task: a job that never reads stdin must
    // not stall output capture or the timeout.
    let stdin_task = match (child.stdin.take(), plan.payload) {
        (Some(mut stdin), Some(payload)) => Some(tokio::spawn(async move {
            // A job may exit without reading; EPIPE is not an error here.
            let _ = stdin.write_all(&payload).await;
            let _ = stdin.shutdown().await;
        })),
        _ => None,
    };

    let mut out = TailBuffer::new(limit);
    let mut reader = reader;
    let mut chunk = vec![0u8; 8192];
    let mut eof = false;
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    let mut killed: Option<Killed> = None;
    let far_future = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let deadline = plan.timeout.map(|d| Instant::now() + d);
    let mut drain_deadline = far_future;
    let mut mem_tick = tokio::time::interval(MEM_POLL);
    mem_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if status.is_some() && eof {
            break;
        }
        tokio::select! {
            r = reader.read(&mut chunk), if !eof => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    out.push(&chunk[..n]);
                    ctx.live.push(&chunk[..n]);
                }
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                drain_deadline = Instant::now() + DRAIN_WAIT;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far_future)),
                if deadline.is_some() && status.is_none() =>
            {
                let Some(timeout) = plan.timeout else { continue };
                tracing::info!(job = %ctx.job_name, "shell job timed out, terminating its process group");
                guard.signal(Signal::SIGTERM);
                let s = match tokio::time::timeout(TERM_GRACE, child.wait()).await {
                    Ok(s) => {
                        // The leader is gone but not its group-mates: take
                        // them too while the group id is still theirs.
                        guard.signal(Signal::SIGKILL);
                        s
                    }
                    Err(_) => {
                        guard.signal(Signal::SIGKILL);
                        child.wait().await
                    }
                };
                status = Some(s);
                killed = Some(Killed::Timeout(timeout));
                drain_deadline = Instant::now() + DRAIN_WAIT;
            }
            _ = mem_tick.tick(), if plan.mem_limit.is_some() && status.is_none() => {
                let (Some(max), Some(pgid)) = (plan.mem_limit, guard.pgid) else { continue };
                let used = group_rss_bytes(pgid.as_raw());
                if used > max {
                    tracing::info!(job = %ctx.job_name, used, max, "shell job over memory limit, killing its process group");
                    guard.signal(Signal::SIGKILL);
                    status = Some(child.wait().await);
                    killed = Some(Killed::Memory { used, limit: max });
                    drain_deadline = Instant::now() + DRAIN_WAIT;
                }
            }
            _ = tokio::time::sleep_until(drain_deadline), if status.is_some() && !eof => {
                // A grandchild (outside our kill, or after a normal exit)
                // still holds the pipe: stop waiting for it.
                break;
            }
        }
    }
    guard.disarm();
    if let Some(task) = stdin_task {
        task.abort();
    }

    let mut prefix = String::new();
    let mut success = false;
    match status {
        Some(Ok(st)) => {
            if let Some(code) = st.code() {
                if code == 0 {
                    success = true;
                } else {
                    prefix = format!("exit status {code}\n");
                }
            } else {
                use std::os::unix::process::ExitStatusExt as _;
                let sig = st.signal().unwrap_or(0);
                prefix = format!("signal: {}\n", signal_name(sig));
            }
        }
        Some(Err(e)) => prefix = format!("shell: waiting for job: {e}\n"),
        None => prefix = "shell: job status unknown\n".to_owned(),
    }

    let mut suffix = String::new();
    if let Some(k) = killed {
        success = false;
        if !out.is_empty() && !out.ends_with_newline() {
            suffix.push('\n');
        }
        match k {
            Killed::Timeout(d) => suffix.push_str(&format!(
                "shell: Job '{}' execution time exceeding defined timeout {}. Job was killed",
                plan.command,
                format_go_duration(d)
            )),
            Killed::Memory { used, limit: max } => suffix.push_str(&format!(
                "shell: Job '{}' memory usage ({used} bytes) exceeding defined limit ({max} bytes). Job was killed",
                plan.command
            )),
        }
    }

    ExecOutcome {
        success,
        output: compose(&prefix, &out, &suffix, limit),
    }
}

/// Go's names for the signals a job most often dies of, so messages read
/// like Dkron's ("signal: killed"); others fall back to the SIG name.
fn signal_name(sig: i32) -> String {
    let Ok(s) = Signal::try_from(sig) else {
        return format!("signal {sig}");
    };
    match s {
        Signal::SIGHUP => "hangup",
        Signal::SIGINT => "interrupt",
        Signal::SIGQUIT => "quit",
        Signal::SIGILL => "illegal instruction",
        Signal::SIGTRAP => "trace/breakpoint trap",
        Signal::SIGABRT => "aborted",
        Signal::SIGBUS => "bus error",
        Signal::SIGFPE => "floating point exception",
        Signal::SIGKILL => "killed",
        Signal::SIGUSR1 => "user defined signal 1",
        Signal::SIGSEGV => "segmentation fault",
        Signal::SIGUSR2 => "user defined signal 2",
        Signal::SIGPIPE => "broken pipe",
        Signal::SIGALRM => "alarm clock",
        Signal::SIGTERM => "terminated",
        other => other.as_str(),
    }
    .to_owned()
}

/// Sum of the resident memory of every process in group `pgid`, from /proc.
/// Processes vanishing mid-scan are simply skipped.
fn group_rss_bytes(pgid: i32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0u64;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_pgrp(&stat) != Some(pgid) {
            continue;
        }
        let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
            continue;
        };
        if let Some(pages) = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u64>().ok())
        {
            total = total.saturating_add(pages.saturating_mul(PAGE_SIZE));
        }
    }
    total
}

/// The pgrp field of /proc/<pid>/stat. The command name in parentheses may
/// contain spaces and ')', so fields are counted after the LAST ')'.
fn stat_pgrp(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')': state, ppid, pgrp.
    rest.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(limit: usize) -> RunContext {
        RunContext {
            job_name: "job1".to_owned(),
            execution_id: "exec-42".to_owned(),
            scheduled_time: "2026-11-27T10:00:00Z".to_owned(),
            fencing_token: 7,
            output_limit: limit,
            live: Default::default(),
            connections: Default::default(),
            plugins: Default::default(),
        }
    }

    use crate::test_support::cfg;

    /// Every test run is bounded, so a hang fails instead of stalling CI.
    async fn run(pairs: &[(&str, &str)], limit: usize) -> ExecOutcome {
        tokio::time::timeout(
            Duration::from_secs(30),
            crate::execute("shell", &cfg(pairs), &ctx(limit)),
        )
        .await
        .expect("shell executor did not return within 30 s")
    }

    #[tokio::test]
    async fn echo_succeeds() {
        let r = run(&[("command", "echo hello"), ("shell", "true")], 1024).await;
        assert!(r.success, "{r:?}");
        assert_eq!(r.output, "hello\n");
    }

    #[tokio::test]
    async fn stderr_is_merged() {
        let r = run(
            &[("command", "echo out; echo err >&2"), ("shell", "true")],
            1024,
        )
        .await;
        assert!(r.success);
        assert_eq!(r.output, "out\nerr\n");
    }

    #[tokio::test]
    async fn exit_code_fails() {
        let r = run(
            &[("command", "echo before; exit 1"), ("shell", "true")],
            1024,
        )
        .await;
        assert!(!r.success);
        assert_eq!(r.output, "exit status 1\nbefore\n");
    }

    #[tokio::test]
    async fn signal_death_is_reported() {
        let r = run(&[("command", "kill -9 $$"), ("shell", "true")], 1024).await;
        assert!(!r.success);
        assert!(r.output.starts_with("signal: killed\n"), "{r:?}");
    }

    #[tokio::test]
    async fn timeout_kills_the_job() {
        let start = std::time::Instant::now();
        let r = run(
            &[
                ("command", "sleep 30"),
                ("shell", "true"),
                ("timeout", "500ms"),
            ],
            1024,
        )
        .await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(!r.success);
        assert!(
            r.output.ends_with(
                "shell: Job 'sleep 30' execution time exceeding defined timeout 500ms. Job was killed"
            ),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn timeout_kills_backgrounded_grandchild() {
        let start = std::time::Instant::now();
        let r = run(
            &[
                ("command", "echo started; sleep 30 & sleep 30"),
                ("shell", "true"),
                ("timeout", "1s"),
            ],
            1024,
        )
        .await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(!r.success);
        assert!(r.output.contains("started\n"), "{r:?}");
        assert!(
            r.output
                .ends_with("execution time exceeding defined timeout 1s. Job was killed"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn timeout_escalates_to_sigkill() {
        let start = std::time::Instant::now();
        let r = run(
            &[
                ("command", "trap '' TERM; sleep 30"),
                ("shell", "true"),
                ("timeout", "300ms"),
            ],
            1024,
        )
        .await;
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(!r.success);
        assert!(r.output.contains("Job was killed"), "{r:?}");
    }

    #[tokio::test]
    async fn lingering_grandchild_after_normal_exit_does_not_hang() {
        let start = std::time::Instant::now();
        // The grandchild keeps stdout open after the shell exits 0; its pid
        // is printed so the test can clean it up.
        let r = run(
            &[
                ("command", "sleep 30 & echo $!; echo done"),
                ("shell", "true"),
            ],
            1024,
        )
        .await;
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(r.success, "{r:?}");
        assert!(r.output.contains("done\n"));
        if let Some(pid) = r.output.lines().next().and_then(|l| l.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    #[tokio::test]
    async fn env_vars_are_set() {
        let r = run(
            &[
                (
                    "command",
                    "echo $FOO $BAR $ENV_JOB_NAME $DKRON_JOB_NAME $DKRON_SCHEDULED_TIME $DKRON_EXECUTION_ID $DKRON_FENCING_TOKEN",
                ),
                ("shell", "true"),
                ("env", "FOO=foo,BAR=b=ar"),
            ],
            1024,
        )
        .await;
        assert!(r.success, "{r:?}");
        assert_eq!(
            r.output,
            "foo b=ar job1 job1 2026-11-27T10:00:00Z exec-42 7\n"
        );
    }

    #[tokio::test]
    async fn cwd_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_str().expect("utf-8 path");
        let r = run(&[("command", "pwd"), ("cwd", path)], 1024).await;
        assert!(r.success, "{r:?}");
        let got = std::fs::canonicalize(r.output.trim()).expect("canonical");
        assert_eq!(got, std::fs::canonicalize(dir.path()).expect("canonical"));
    }

    #[tokio::test]
    async fn payload_goes_to_stdin() {
        let payload = base64::engine::general_purpose::STANDARD.encode("hello payload");
        let r = run(&[("command", "cat"), ("payload", &payload)], 1024).await;
        assert!(r.success, "{r:?}");
        assert_eq!(r.output, "hello payload");
    }

    #[tokio::test]
    async fn no_payload_means_empty_stdin() {
        let r = run(&[("command", "cat")], 1024).await;
        assert!(r.success, "{r:?}");
        assert_eq!(r.output, "");
    }

    #[tokio::test]
    async fn invalid_payload_fails_before_start() {
        let r = run(&[("command", "cat"), ("payload", "not base64!!")], 1024).await;
        assert!(!r.success);
        assert!(r.output.contains("payload"), "{r:?}");
    }

    #[tokio::test]
    async fn non_shell_mode_splits_words() {
        let r = run(&[("command", "printf '%s|' 'a b' c \"d e\"")], 1024).await;
        assert!(r.success, "{r:?}");
        assert_eq!(r.output, "a b|c|d e|");
        // Without a shell, shell syntax is just arguments.
        let r = run(&[("command", "echo $HOME ; x")], 1024).await;
        assert_eq!(r.output, "$HOME ; x\n");
    }

    #[tokio::test]
    async fn missing_binary_fails_with_os_error() {
        let r = run(&[("command", "/nonexistent/binary-xyz")], 1024).await;
        assert!(!r.success);
        assert!(r.output.contains("No such file or directory"), "{r:?}");
    }

    #[tokio::test]
    async fn empty_command_fails() {
        let r = run(&[("command", "")], 1024).await;
        assert!(!r.success);
        assert_eq!(r.output, "shell: Command missing");
        let r = run(&[], 1024).await;
        assert_eq!(r.output, "shell: Command missing");
    }

    #[tokio::test]
    async fn bad_timeout_and_mem_limit_fail() {
        let r = run(&[("command", "true"), ("timeout", "1 hour")], 1024).await;
        assert!(!r.success);
        assert!(r.output.contains("Error parsing job timeout"), "{r:?}");
        let r = run(&[("command", "true"), ("mem_limit", "lots")], 1024).await;
        assert!(!r.success);
        assert!(r.output.contains("memory limit"), "{r:?}");
    }

    #[tokio::test]
    async fn unknown_su_user_fails() {
        let r = run(&[("command", "true"), ("su", "no-such-user-xyz")], 1024).await;
        assert!(!r.success);
        assert!(r.output.contains("unknown user"), "{r:?}");
    }

    #[tokio::test]
    async fn large_output_keeps_the_tail() {
        let r = run(
            &[("command", "seq 1 100000; echo THE-END"), ("shell", "true")],
            100,
        )
        .await;
        assert!(r.success);
        assert!(r.output.len() <= 100, "{}", r.output.len());
        assert!(r.output.ends_with("99999\n100000\nTHE-END\n"), "{r:?}");
    }

    #[tokio::test]
    async fn large_output_with_failure_keeps_status_line() {
        let r = run(
            &[("command", "seq 1 100000; exit 3"), ("shell", "true")],
            50,
        )
        .await;
        assert!(!r.success);
        assert!(r.output.len() <= 50);
        assert!(r.output.starts_with("exit status 3\n"), "{r:?}");
        assert!(r.output.ends_with("100000\n"), "{r:?}");
    }

    #[tokio::test]
    async fn mem_limit_kills_the_job() {
        let start = std::time::Instant::now();
        // The shell holds ~50 MB in a variable, then idles; without the
        // limit it would run for 30 s.
        let r = run(
            &[
                (
                    "command",
                    "x=$(head -c 50000000 /dev/zero | tr '\\0' a); sleep 30",
                ),
                ("shell", "true"),
                ("mem_limit", "10MB"),
                ("timeout", "20s"),
            ],
            1024,
        )
        .await;
        assert!(start.elapsed() < Duration::from_secs(25));
        assert!(!r.success);
        assert!(
            r.output
                .contains("exceeding defined limit (10485760 bytes). Job was killed"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn su_runs_as_other_user() {
        // Only root can switch users; skip quietly elsewhere.
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let Ok(Some(nobody)) = User::from_name("nobody") else {
            return;
        };
        let r = run(&[("command", "id -u"), ("su", "nobody")], 1024).await;
        assert!(r.success, "{r:?}");
        assert_eq!(r.output.trim(), nobody.uid.to_string());
    }

    #[test]
    fn mem_limit_table() {
        let ok: &[(&str, Option<u64>)] = &[
            ("", None),
            ("1024", Some(1024)),
            ("1KB", Some(1024)),
            ("1k", Some(1024)),
            ("1MB", Some(1024 * 1024)),
            ("2GB", Some(2 * 1024 * 1024 * 1024)),
            ("512mb", Some(512 * 1024 * 1024)),
            ("1.5GB", Some(1_610_612_736)),
            ("1TB", Some(1 << 40)),
            ("10B", Some(10)),
            ("10bytes", Some(10)),
            ("10 MB", Some(10 * 1024 * 1024)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_mem_limit(text).as_ref(), Ok(want), "{text}");
        }
        for bad in [
            "100PB", "0", "0MB", "-100MB", "invalid", "MB", "1.2.3MB", ".5MB", "1XB", "1e9",
        ] {
            assert!(parse_mem_limit(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn validate_reports_problems() {
        assert!(validate_config(&cfg(&[("command", "date")])).is_empty());
        let p = validate_config(&cfg(&[
            ("command", ""),
            ("timeout", "1 hour"),
            ("mem_limit", "100PB"),
        ]));
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["command", "timeout", "mem_limit"]);
        assert_eq!(p[0].1, "command is required for the shell executor");
        assert_eq!(p[1].1, "Error parsing job timeout value");
        assert!(p[2].1.starts_with("Error parsing job memory limit value: "));
    }

    #[test]
    fn parses_stat_pgrp_with_odd_names() {
        assert_eq!(stat_pgrp("123 (a) b) S 1 456 456 0"), Some(456));
        assert_eq!(stat_pgrp("garbage"), None);
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(parse_go_bool(t));
        }
        for f in ["", "0", "false", "yes", "tRUE"] {
            assert!(!parse_go_bool(f));
        }
    }
}
