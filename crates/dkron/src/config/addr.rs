//! Addresses: bind forms (`:8080`, `ip`, `host:port`) and the private address a node bound
//! to every interface advertises.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use anyhow::Context;

/// This host's first private (RFC 1918) IPv4 address, or else its first non-loopback one.
pub fn private_ipv4() -> Option<IpAddr> {
    let addrs: Vec<std::net::Ipv4Addr> = nix::ifaddrs::getifaddrs()
        .map(|all| {
            all.filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
                .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
                .collect()
        })
        .unwrap_or_default();
    addrs
        .iter()
        .find(|ip| ip.is_private())
        .or(addrs.first())
        .map(|ip| IpAddr::V4(*ip))
        .or_else(hosts_file_ipv4)
        .or_else(default_route_ipv4)
}

/// This host's address as `/etc/hosts` maps its hostname (container runtimes write it).
fn hosts_file_ipv4() -> Option<IpAddr> {
    let hostname = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let mut fields = line.split('#').next()?.split_whitespace();
        let ip: std::net::Ipv4Addr = fields.next()?.parse().ok()?;
        (!ip.is_loopback() && fields.any(|name| name == hostname)).then_some(IpAddr::V4(ip))
    })
}

/// The source address the kernel would use for the default route. Connecting a UDP socket
/// sends no packet; it only selects the route. (Interface enumeration is not available in
/// every statically linked build, so this is the fallback.)
fn default_route_ipv4() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // 192.0.2.1 is TEST-NET-1 (documentation only): never a real destination.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Parses `host:port`, `:port`, `ip` or `host` into a socket address.
pub fn parse_bind(raw: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    let with_host = if raw.starts_with(':') {
        format!("0.0.0.0{raw}")
    } else if raw.parse::<IpAddr>().is_ok() || !raw.contains(':') {
        format!("{raw}:{default_port}")
    } else {
        raw.to_string()
    };
    with_host
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {raw:?}"))?
        .next()
        .with_context(|| format!("no address for {raw:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_forms() {
        assert_eq!(parse_bind(":8080", 1).unwrap().to_string(), "0.0.0.0:8080");
        assert_eq!(
            parse_bind("127.0.0.1", 8946).unwrap().to_string(),
            "127.0.0.1:8946"
        );
        assert_eq!(parse_bind("127.0.0.1:0", 1).unwrap().port(), 0);
    }
}
