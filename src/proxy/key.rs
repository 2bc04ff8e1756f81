//! The key `strategy: consistent-hash` hashes, taken from a request.
//!
//! Both request paths (HTTP/1 heads as bytes and spans, HTTP/2 requests as an
//! `http::Request`) describe the request with a [`KeySource`]; [`hash`] picks out the
//! configured part and hashes it with the fixed-seed hash every instance shares, so the
//! same key picks the same backend everywhere. A request without the part (no such
//! header or cookie) has no key, and the strategy goes round-robin for it.

use crate::balance::HashKey;
use crate::balance::maglev::hash_key;

/// What a request offers to hash.
pub trait KeySource {
    /// The client's IP, as text.
    fn client(&self) -> &[u8];
    /// The request target as sent (origin or absolute form).
    fn target(&self) -> &[u8];
    /// The first value of header `name` (lowercase).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// Every `Cookie` header value, in order.
    fn cookies(&self) -> impl Iterator<Item = &[u8]>;
}

/// The hash of the request's key, or `None` when it has none.
pub fn hash(key: &HashKey, r: &impl KeySource) -> Option<u64> {
    let bytes: &[u8] = match key {
        HashKey::ClientIp => r.client(),
        HashKey::Header(name) => r.header(name)?,
        HashKey::Cookie(name) => r.cookies().find_map(|v| cookie_value(v, name.as_bytes()))?,
        HashKey::Path => {
            let p = path_and_query(r.target());
            match p.iter().position(|&b| b == b'?') {
                Some(q) => &p[..q],
                None => p,
            }
        }
        HashKey::Uri => path_and_query(r.target()),
    };
    Some(hash_key(bytes))
}

/// The value of cookie `name` in one `Cookie` header value.
pub fn cookie_value<'a>(value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    value.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        pair.strip_prefix(name)?
            .strip_prefix(b"=")
            .map(<[u8]>::trim_ascii)
    })
}

/// `/p?q` of an origin-form target; of an absolute-form one, what follows the
/// authority (so `http://h/p` and `/p` hash alike).
fn path_and_query(target: &[u8]) -> &[u8] {
    if target.first() == Some(&b'/') {
        return target;
    }
    let Some(at) = target.windows(3).position(|w| w == b"://") else {
        return target;
    };
    let rest = &target[at + 3..];
    match rest.iter().position(|&b| b == b'/' || b == b'?') {
        Some(i) => &rest[i..],
        None => b"/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R {
        client: &'static [u8],
        target: &'static [u8],
        headers: Vec<(&'static str, &'static [u8])>,
    }

    impl KeySource for R {
        fn client(&self) -> &[u8] {
            self.client
        }
        fn target(&self) -> &[u8] {
            self.target
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers.iter().find(|h| h.0 == name).map(|h| h.1)
        }
        fn cookies(&self) -> impl Iterator<Item = &[u8]> {
            self.headers.iter().filter(|h| h.0 == "cookie").map(|h| h.1)
        }
    }

    #[test]
    fn each_key_form() {
        let r = R {
            client: b"10.1.2.3",
            target: b"/a/b?x=1",
            headers: vec![("x-user", b"alice"), ("cookie", b"a=1; sid=s42 ; b=2")],
        };
        let h = |k: &str| hash(&HashKey::parse(k).unwrap(), &r);
        assert_eq!(h("client_ip"), Some(hash_key(b"10.1.2.3")));
        assert_eq!(h("header:X-User"), Some(hash_key(b"alice")));
        assert_eq!(h("header:x-missing"), None);
        assert_eq!(h("cookie:sid"), Some(hash_key(b"s42")));
        assert_eq!(h("cookie:si"), None);
        assert_eq!(h("path"), Some(hash_key(b"/a/b")));
        assert_eq!(h("uri"), Some(hash_key(b"/a/b?x=1")));
        let abs = R {
            target: b"http://example.com/a/b?x=1",
            ..r
        };
        assert_eq!(hash(&HashKey::Path, &abs), Some(hash_key(b"/a/b")));
        assert!(HashKey::parse("header:").is_none());
        assert!(HashKey::parse("body").is_none());
    }
}
