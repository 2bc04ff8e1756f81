//! `proxy_protocol::parse` over arbitrary bytes: never panics; a header found is no
//! longer than the input or the caps, parses the same without what follows it, and
//! every shorter prefix of it is `Partial` (so reading on is right); reading by
//! `still_needed` from any partial start lands exactly on its end, never past it; a
//! header found starts like one (the untrusted-peer check agrees); and headers we
//! encode for backends (addresses from the input) parse back to their source.

#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use switchyard::proxy_protocol::{
    ENCODED_MAX, MAX_HEADER, Origin, Parsed, Version, encode, parse, starts_like_header,
    still_needed,
};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Complete { len, source } => {
            assert!(len <= data.len() && len <= MAX_HEADER);
            assert_eq!(starts_like_header(data), Some(true));
            let whole = &data[..len];
            assert_eq!(parse(whole), Parsed::Complete { len, source });
            for cut in 0..len {
                assert_eq!(parse(&whole[..cut]), Parsed::Partial, "cut {cut} of {len}");
            }
            // The accept path: a partial start (the first byte says how much came in
            // one segment), then reads of `still_needed` until it parses.
            let first = usize::from(data[0]) % len.max(1);
            let mut got = whole[..first].to_vec();
            loop {
                let need = still_needed(&got);
                assert!(got.len() + need <= len, "read past the header: {need} at {}", got.len());
                got.extend_from_slice(&whole[got.len()..got.len() + need]);
                match parse(&got) {
                    Parsed::Complete { len: l, .. } => {
                        assert_eq!(l, len);
                        break;
                    }
                    Parsed::Partial => {}
                    Parsed::Invalid => panic!("a prefix of a header was invalid"),
                }
            }
        }
        Parsed::Partial => {
            assert!(data.len() < MAX_HEADER);
            assert_ne!(starts_like_header(data), Some(false));
        }
        Parsed::Invalid => {}
    }
    // Encoding: addresses from the first 36 bytes.
    if data.len() >= 37 {
        let ip = |b: &[u8], v6: bool| -> IpAddr {
            if v6 {
                IpAddr::from(<[u8; 16]>::try_from(&b[..16]).unwrap_or_default())
            } else {
                IpAddr::from(<[u8; 4]>::try_from(&b[..4]).unwrap_or_default())
            }
        };
        let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        let flags = data[36];
        let client = SocketAddr::new(ip(&data[0..16], flags & 1 == 1), port(&data[32..34]));
        let local = SocketAddr::new(ip(&data[16..32], flags & 2 == 2), port(&data[34..36]));
        let origin = Origin { client, local };
        let v = if flags & 4 == 4 { Version::V1 } else { Version::V2 };
        let mut out = [0; ENCODED_MAX];
        let n = encode(v, Some(&origin), &mut out);
        match parse(&out[..n]) {
            Parsed::Complete { len, source: Some(s) } => {
                assert_eq!(len, n);
                assert_eq!(s.port(), client.port());
                let same = s.ip() == client.ip()
                    || s.ip().to_canonical() == client.ip().to_canonical();
                assert!(same, "{s} for {client}");
            }
            other => panic!("{origin:?} encoded as {:?}: {other:?}", &out[..n]),
        }
    }
});
