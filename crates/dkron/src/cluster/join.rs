//! Joining: `--join` once at start (a failure only warns, as in Dkron), `--retry-join` until
//! an address answers or `--retry-max` runs out. Addresses are resolved on each attempt, so a
//! retry follows DNS changes.

use std::net::SocketAddr;
use std::time::Duration;

use dkron_membership::Membership;
use tracing::{info, warn};

/// Resolves `host[:port]` entries (port 8946 by default), each time it is called, so a
/// retry-join follows DNS changes.
async fn resolve(entries: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for entry in entries {
        let target = if entry
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            entry.clone()
        } else {
            format!("{entry}:8946")
        };
        match tokio::net::lookup_host(&target).await {
            Ok(addrs) => out.extend(addrs.filter(|a| a.is_ipv4())),
            Err(e) => warn!(address = %entry, error = %e, "cannot resolve a join address yet"),
        }
    }
    out
}

const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `--join`: one attempt at each address; failure only warns (Dkron's behaviour).
pub async fn join_once(gossip: &Membership, entries: &[String]) {
    if entries.is_empty() {
        return;
    }
    let addrs = resolve(entries).await;
    match gossip.join(&addrs, JOIN_TIMEOUT).await {
        Ok(n) if n > 0 => info!(joined = n, "joined the cluster"),
        _ => {
            warn!(addresses = ?entries, "could not join any of the --join addresses; check they are reachable and use the same --encrypt key")
        }
    }
}

/// `--retry-join`: tries every `interval` until one address answers. After `max` failed
/// attempts (0 = never) it returns an error that says what to check.
pub async fn retry_join(
    gossip: &Membership,
    entries: &[String],
    interval: Duration,
    max: u32,
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let addrs = resolve(entries).await;
        if !addrs.is_empty()
            && let Ok(n) = gossip.join(&addrs, JOIN_TIMEOUT).await
            && n > 0
        {
            info!(joined = n, attempt, "joined the cluster");
            return Ok(());
        }
        if max > 0 && attempt >= max {
            anyhow::bail!(
                "retry-join gave up after {attempt} attempts: none of {entries:?} answered; check that they are running, reachable on the gossip port (UDP) and use the same --encrypt key"
            );
        }
        warn!(attempt, addresses = ?entries, retry_in_s = interval.as_secs_f64(), "retry-join: no member answered yet");
        tokio::time::sleep(interval).await;
    }
}
