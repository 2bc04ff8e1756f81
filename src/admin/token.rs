//! Who may write through the admin listener.
//!
//! The token itself ([`AdminToken`], `admin_token_file`) is config data, read when
//! the config is built. [`access`] is the one decision for
//! a write: with a token, `Authorization: Bearer TOKEN` (compared in constant time);
//! without one, only an admin listener bound to a loopback address accepts writes.

use std::net::SocketAddr;

pub use crate::config::AdminToken;

/// What an admin write is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// A token is set and the request did not carry it: 401.
    Unauthorized,
    /// No token is set and the admin listener is not on loopback: 403.
    Forbidden,
}

/// Whether a write with `authorization` (the header's bytes, if any) may go ahead on
/// an admin listener bound to `local`.
pub fn access(
    token: Option<&AdminToken>,
    local: SocketAddr,
    authorization: Option<&[u8]>,
) -> Access {
    match token {
        Some(t) => {
            let presented = authorization.and_then(bearer);
            if presented.is_some_and(|p| t.matches(p)) {
                Access::Allowed
            } else {
                Access::Unauthorized
            }
        }
        None if local.ip().to_canonical().is_loopback() => Access::Allowed,
        None => Access::Forbidden,
    }
}

/// The credentials of `Bearer CREDENTIALS` (the scheme is case-insensitive).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    let end = rest.iter().rposition(|&b| b != b' ')? + 1;
    rest.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn with_a_token_only_the_bearer_token_writes() {
        let t = AdminToken::new("s3cret\n").unwrap();
        let any = addr("0.0.0.0:9090");
        let allowed = |h: &[u8]| access(Some(&t), any, Some(h));
        assert_eq!(allowed(b"Bearer s3cret"), Access::Allowed);
        assert_eq!(allowed(b"bearer  s3cret "), Access::Allowed);
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cretx",
            b"Bearer S3CRET",
            b"Basic s3cret",
            b"Bearer",
            b"Bearer ",
            b"s3cret",
            b"",
        ] {
            assert_eq!(allowed(wrong), Access::Unauthorized, "{wrong:?}");
        }
        assert_eq!(access(Some(&t), any, None), Access::Unauthorized);
        // Loopback does not bypass a token.
        let lo = addr("127.0.0.1:9090");
        assert_eq!(access(Some(&t), lo, None), Access::Unauthorized);
    }

    #[test]
    fn without_a_token_only_loopback_listeners_write() {
        for a in [
            "127.0.0.1:9090",
            "127.0.0.2:1",
            "[::1]:9090",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert_eq!(access(None, addr(a), None), Access::Allowed, "{a}");
        }
        for a in [
            "0.0.0.0:9090",
            "10.0.0.1:9090",
            "[::]:9090",
            "[2001:db8::1]:1",
        ] {
            assert_eq!(access(None, addr(a), None), Access::Forbidden, "{a}");
            let h = Some(&b"Bearer anything"[..]);
            assert_eq!(access(None, addr(a), h), Access::Forbidden, "{a}");
        }
    }

    #[test]
    fn a_bad_token_file_is_a_config_error_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("switchyard-tokcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("sy.yaml");
        let text = "backends: [127.0.0.1:9001]\nadmin_token_file: admin.token\n";
        let parse = || crate::config::Config::parse(&cfg, text, &Default::default());
        let e = parse().unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("admin_token_file", Some(2)));
        assert!(e.to_string().contains("cannot read"), "{e}");
        std::fs::write(dir.join("admin.token"), "\n").unwrap();
        assert!(parse().unwrap_err().to_string().contains("empty"));
        // Relative to the config file's directory.
        std::fs::write(dir.join("admin.token"), "tok\n").unwrap();
        let c = parse().unwrap();
        assert_eq!(c.admin_token, Some(AdminToken::new("tok").unwrap()));
        assert!(
            !format!("{c:?}").contains("tok\""),
            "the token is never printed"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn token_files_are_checked_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("switchyard-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "  abc-123_XYZ \n").unwrap();
        let t = AdminToken::read(&good).unwrap();
        assert!(t.matches(b"abc-123_XYZ"));
        assert_eq!(format!("{t:?}"), "AdminToken(redacted)");
        for (name, content) in [
            ("empty", &b" \n"[..]),
            ("inner space", b"two words"),
            ("binary", b"\xff\xfe"),
        ] {
            let p = dir.join("bad");
            std::fs::write(&p, content).unwrap();
            assert!(AdminToken::read(&p).is_err(), "{name}");
        }
        std::fs::write(dir.join("big"), vec![b'a'; 5000]).unwrap();
        assert!(
            AdminToken::read(&dir.join("big"))
                .unwrap_err()
                .contains("over")
        );
        let missing = AdminToken::read(&dir.join("missing")).unwrap_err();
        assert!(missing.contains("cannot read"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
