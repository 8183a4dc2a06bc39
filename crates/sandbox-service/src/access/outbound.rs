//! Where sandboxd itself may send requests (execution callbacks today).
//!
//! A caller names the URL, so without a policy the server is a proxy into its own network: a
//! callback to `http://127.0.0.1:8080/v1/sessions/<other>/stop` stopped another session, and
//! on a cloud host the metadata service is one link-local address away. So:
//! - addresses inside the host or its private networks (loopback, private, link-local, CGNAT,
//!   unique-local, multicast, reserved, and v4 addresses embedded in v6 ones) are refused
//!   unless the operator allows them (`--outbound-allow`, hosts or CIDRs);
//! - the check is made on the resolved addresses by the HTTP client's own resolver
//!   ([`PolicyResolver`]), so the connection goes to an address that was checked: a name that
//!   resolves to a public address for the check and to 127.0.0.1 for the connection (DNS
//!   rebinding) gets nowhere;
//! - redirects are not followed and no proxy from the environment is used ([`client`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// What the operator allows beyond public addresses.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    nets: Vec<IpNet>,
    /// Lower-case host names whose every address is allowed.
    hosts: Vec<String>,
}

/// Why a request was not made; recorded as the attempt's error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused by policy: {0}")]
pub struct Refused(String);

impl OutboundPolicy {
    /// From `--outbound-allow` entries: CIDRs (`10.0.0.0/8`), single addresses, or host names.
    pub fn new(entries: &[String]) -> Result<OutboundPolicy, String> {
        let mut policy = OutboundPolicy::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.nets.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if is_host_name(entry) {
                policy.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!("--outbound-allow: {entry:?} is neither a CIDR, an address nor a host name"));
            }
        }
        Ok(policy)
    }

    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.nets.iter().any(|n| n.contains(&ip))
    }

    fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host.trim_end_matches('.')))
    }

    /// Checks a URL before it is accepted: an address written in it must be allowed (names
    /// are checked when they are resolved, at each connection).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.allows(ip) {
            Ok(())
        } else {
            Err(Refused(format!("{ip} is not a public address")))
        }
    }

    /// The allowed addresses among `addrs`, resolved for `host`.
    fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        if self.allows_host(host) {
            return Ok(addrs);
        }
        let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| self.allows(a.ip())).collect();
        if allowed.is_empty() {
            return Err(Refused(format!("{host} has no public address")));
        }
        Ok(allowed)
    }
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Whether `ip` is an ordinary address on the internet, reachable by anyone.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network"
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, where cloud metadata also lives
        || (a == 169 && b == 254) // link-local: the metadata service
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // A v4 address in v6 clothing is judged as the v4 address it reaches.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded_v4 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s[0] {
        // NAT64 (64:ff9b::/96) reaches the v4 address in its last 32 bits.
        0x64 if s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] => is_public_v4(embedded_v4()),
        // 6to4 (2002::/16) embeds a v4 address in bits 16..48.
        0x2002 => is_public_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8)),
        // Only global unicast (2000::/3) is public; within it, documentation (2001:db8::/32)
        // and the IETF block's non-global parts are not.
        0x2001 if s[1] == 0xdb8 || s[1] < 0x200 => false,
        first => (0x2000..0x4000).contains(&first),
    }
}

/// Resolves names for the HTTP client and keeps only the addresses the policy allows, so the
/// address that is connected to is the one that was checked.
struct PolicyResolver(Arc<OutboundPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.0);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = policy.filter(&host, addrs)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client for requests that callers point the server at: the policy's resolver, no
/// redirects, no proxy.
pub fn client(policy: Arc<OutboundPolicy>) -> reqwest::Client {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(PolicyResolver(policy)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        // Building fails only when the TLS backend cannot start; there is none configured.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The policy's refusal behind `e`, if that is why the request was not made.
pub fn refusal(e: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = s.source();
    }
    None
}

/// What a failed request is recorded as: a coarse kind, never the network's own words (those
/// told a closed port from a filtered one, which made the server a port scanner).
pub fn describe(e: &reqwest::Error) -> String {
    if let Some(refused) = refusal(e) {
        refused.to_string()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip(a)), "{a} must not be public");
        }
    }

    #[test]
    fn internet_addresses_are_public() {
        for a in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip(a)), "{a} must be public");
        }
    }

    #[test]
    fn the_operator_allow_list_opens_nets_and_hosts() {
        let p = OutboundPolicy::new(&["10.0.0.0/8".into(), "127.0.0.1".into(), "Hooks.Internal".into()])
            .expect("valid entries");
        assert!(p.allows(ip("10.9.9.9")));
        assert!(p.allows(ip("127.0.0.1")));
        assert!(!p.allows(ip("127.0.0.2")));
        assert!(!p.allows(ip("192.168.0.1")));
        let local = vec![SocketAddr::from(([127, 0, 0, 9], 0))];
        assert!(p.filter("hooks.internal.", local.clone()).is_ok());
        assert!(p.filter("other.internal", local).is_err());
        assert!(OutboundPolicy::new(&["not a host/8".into()]).is_err());
    }

    #[test]
    fn filtering_keeps_only_allowed_addresses() {
        let p = OutboundPolicy::default();
        let mixed = vec![SocketAddr::from(([127, 0, 0, 1], 80)), SocketAddr::from(([8, 8, 8, 8], 80))];
        assert_eq!(p.filter("x", mixed).expect("one is public"), vec![SocketAddr::from(([8, 8, 8, 8], 80))]);
        let err = p.filter("x", vec![SocketAddr::from(([10, 0, 0, 1], 80))]).expect_err("none is public");
        assert_eq!(err.to_string(), "refused by policy: x has no public address");
    }

    #[test]
    fn literal_addresses_in_urls_are_checked() {
        let p = OutboundPolicy::default();
        for u in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "http://0x7f000001/",
            "http://169.254.169.254/",
            "http://[::ffff:7f00:1]/",
        ] {
            let url = reqwest::Url::parse(u).expect("test URL");
            assert!(p.check_url(&url).is_err(), "{u}");
        }
        assert!(p.check_url(&reqwest::Url::parse("http://example.com/").expect("test URL")).is_ok());
    }
}
