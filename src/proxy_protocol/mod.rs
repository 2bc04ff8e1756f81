//! PROXY protocol (HAProxy's v1 text and v2 binary headers), both ways.
//!
//! Behind an L4 balancer every connection comes from the balancer, so the client's
//! address is lost unless the balancer writes it in front of the stream: then
//! `listen.proxy_protocol.trusted` names the balancer's networks, their connections
//! must start with a header ([`accept`], before TLS and before any HTTP byte), and the
//! address it carries is the client's everywhere (X-Forwarded-For, the access log,
//! rate-limit keys, `connections_per_client`). Going out, a backend with
//! `proxy_protocol: v1 | v2` gets one header at the start of each new connection
//! ([`encode`], written by `upstream::connect`), for backends that want the same.
//!
//! Parsing is the `proxy-header` crate's (no dependencies of its own); this module
//! adds what it leaves to the caller: a cap on v2's declared length, telling "not a
//! header" from "not a header yet" on the first bytes, and encoding into a stack buffer.

mod accept;
mod cidr;

use std::net::SocketAddr;

use proxy_header::{ParseConfig, ProxiedAddress, ProxyHeader};

pub use accept::{Refused, accept};
pub use cidr::{Cidr, any_contains};

/// The 12 bytes a v2 header starts with.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_START: &[u8; 6] = b"PROXY ";

/// The longest v1 header the spec allows, line end included.
pub const V1_MAX: usize = 107;

/// The largest header taken: a v2 header may declare up to 64 KiB of TLVs, but what
/// balancers send (addresses, an endpoint id, a few TLVs) fits far below this.
pub const MAX_HEADER: usize = 2048;

/// A backend's `proxy_protocol:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where a client connection came from (after any PROXY header) and the local
/// address it reached: what a backend's PROXY header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub client: SocketAddr,
    pub local: SocketAddr,
}

/// What the first bytes of a connection hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes; `source` is the client it names, `None` for
    /// v2 LOCAL, v1 UNKNOWN and the UNSPEC and UNIX families (keep the peer's).
    Complete {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// The start of a header: more bytes are needed.
    Partial,
    /// Not a header, or a broken one.
    Invalid,
}

/// Parses a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    // The crate takes any byte after `PROXY`; the spec (and the untrusted-peer
    // check) wants the space.
    if starts_like_header(buf) == Some(false) {
        return Parsed::Invalid;
    }
    let config = ParseConfig {
        include_tlvs: false,
        allow_v1: true,
        allow_v2: true,
    };
    // A v2 header is exactly as long as it says: parsed within that, one whose
    // addresses do not fit is broken, not waiting for more bytes.
    let (buf, whole) = match v2_length(buf) {
        Some(len) if len > MAX_HEADER => return Parsed::Invalid,
        Some(len) if buf.len() >= len => (&buf[..len], true),
        _ => (buf, false),
    };
    match ProxyHeader::parse(buf, config) {
        // The crate lets `PROXY UNKNOWN ...` run past v1's 107 bytes when its end is
        // already in `buf` (found by the fuzz target): the spec's cap holds however
        // the bytes came in.
        Ok((_, len)) if !whole && len > V1_MAX => Parsed::Invalid,
        Ok((h, len)) => Parsed::Complete {
            len,
            source: h.proxied_address().map(|a| a.source),
        },
        Err(proxy_header::Error::BufferTooShort) if !whole => Parsed::Partial,
        Err(_) => Parsed::Invalid,
    }
}

/// The whole length of the v2 header `buf` starts with, once its first 16 bytes are in.
pub fn v2_length(buf: &[u8]) -> Option<usize> {
    match buf.get(14..16) {
        Some(&[hi, lo]) if buf.starts_with(V2_SIGNATURE) => {
            Some(16 + usize::from(u16::from_be_bytes([hi, lo])))
        }
        _ => None,
    }
}

/// The shortest header there is (`PROXY UNKNOWN\r\n`): reading this much from a
/// peer that must send a header can never take a byte past it.
pub const MIN_HEADER: usize = 15;

/// How many more bytes to read for the header `got` (which [`parse`] found
/// [`Parsed::Partial`]) starts, never past its end: what v2 still lacks of its
/// fixed part or its stated length, up to [`MIN_HEADER`] for v1, then one at a time
/// (v1 ends at a line end, wherever that is).
pub fn still_needed(got: &[u8]) -> usize {
    let v2_start = |g: &[u8]| {
        let n = g.len().min(12);
        g[..n] == V2_SIGNATURE[..n]
    };
    match v2_length(got) {
        Some(len) => len.saturating_sub(got.len()),
        None if got.len() < 16 && v2_start(got) => 16 - got.len(),
        None if got.len() < MIN_HEADER => MIN_HEADER - got.len(),
        None => 1,
    }
    .max(1)
}

/// Whether a connection starting with `buf` starts with a PROXY header: `Some(true)`
/// once `PROXY ` or the v2 signature is there, `Some(false)` as soon as the bytes
/// leave both, `None` while they are a prefix of one of them.
pub fn starts_like_header(buf: &[u8]) -> Option<bool> {
    for sig in [&V1_START[..], &V2_SIGNATURE[..]] {
        let n = buf.len().min(sig.len());
        if buf[..n] == sig[..n] {
            return if n == sig.len() { Some(true) } else { None };
        }
    }
    Some(false)
}

/// Room for any header [`encode`] writes (v1 with two IPv6 addresses is 104 bytes).
pub const ENCODED_MAX: usize = 108;

/// Writes the header for a backend connection into `out` and returns its length:
/// `origin`'s addresses, or LOCAL (v2) / UNKNOWN (v1) for a connection of our own
/// (health probes). An IPv4 address beside an IPv6 one is written IPv4-mapped, since
/// a header carries one family.
pub fn encode(version: Version, origin: Option<&Origin>, out: &mut [u8; ENCODED_MAX]) -> usize {
    let header = match origin {
        Some(o) => {
            let (src, dst) = match (o.client, o.local) {
                (a @ SocketAddr::V4(_), b @ SocketAddr::V4(_))
                | (a @ SocketAddr::V6(_), b @ SocketAddr::V6(_)) => (a, b),
                (a, b) => (v6(a), v6(b)),
            };
            ProxyHeader::with_address(ProxiedAddress::stream(src, dst))
        }
        None => ProxyHeader::with_local(),
    };
    let written = match version {
        Version::V1 => header.encode_to_slice_v1(out),
        Version::V2 => header.encode_to_slice_v2(out),
    };
    // Cannot fail: the families match and the buffer holds the longest header.
    written.unwrap_or(0)
}

fn v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests;
