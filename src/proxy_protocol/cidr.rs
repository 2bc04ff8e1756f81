//! `listen.proxy_protocol.trusted`: the networks whose connections must start with a
//! PROXY header. A list of CIDRs checked once per accepted connection, so a plain
//! scan over a few prefixes; no trie is worth its code at the sizes people write.

use std::net::IpAddr;
use std::str::FromStr;

/// One network: `10.0.0.0/8`, `fd00::/8`, or a bare address (`/32` or `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` is in this network. An IPv4-mapped IPv6 address (a dual-stack
    /// listener's view of an IPv4 peer) is matched as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u128::from(u32::from(a)), 32, self.prefix) == u128::from(u32::from(n))
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(a), 128, self.prefix) == u128::from(n)
            }
            _ => false,
        }
    }
}

/// `bits` (an address `width` bits wide) with all but the first `prefix` bits cleared.
fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let host = u32::from(width - prefix);
    bits >> host << host
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or network (e.g. 10.0.0.0/8)"))?;
        let width: u8 = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= width => p,
                _ => return Err(format!("'{s}': the prefix length must be 0 to {width}")),
            },
        };
        let bits = match net {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        if masked(bits, width, prefix) != bits {
            let n = masked(bits, width, prefix);
            let net = match net {
                IpAddr::V4(_) => IpAddr::from((n as u32).to_be_bytes()),
                IpAddr::V6(_) => IpAddr::from(n.to_be_bytes()),
            };
            return Err(format!(
                "'{s}' has bits set past its prefix (did you mean {net}/{prefix}?)"
            ));
        }
        Ok(Cidr { net, prefix })
    }
}

/// True when any of `nets` holds `ip`.
pub fn any_contains(nets: &[Cidr], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_v4_v6_and_bare_addresses() {
        let nets: Vec<Cidr> = ["10.0.0.0/8", "127.0.0.1", "fd00::/8", "::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        for yes in [
            "10.1.2.3",
            "10.255.255.255",
            "127.0.0.1",
            "fd12::1",
            "::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(any_contains(&nets, ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "127.0.0.2", "fe80::1", "::2", "9.255.255.255"] {
            assert!(!any_contains(&nets, ip(no)), "{no}");
        }
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")) && !all.contains(ip("2001:db8::1")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        let host: Cidr = "192.0.2.7/32".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.6")));
    }

    #[test]
    fn bad_networks_say_why() {
        for (text, says) in [
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("10.0.0.0/x", "prefix length"),
            ("10.0.0/8", "not an IP address"),
            ("example.com", "not an IP address"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("fd00::1/8", "did you mean fd00::/8"),
        ] {
            let e = text.parse::<Cidr>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
