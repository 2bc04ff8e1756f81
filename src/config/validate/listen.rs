//! `listen:`: one entry or a list, each with its own address, TLS, PROXY protocol
//! and HTTP-to-HTTPS redirect.
//!
//! Kept apart because the entries are checked against each other: two entries on
//! one port cannot both bind, and `redirect_https` needs a TLS entry to point at
//! (the first one in the list; its port goes into the `Location`). Keys are named as
//! written: `listen.address` for the single map, `listen[1].tls` in a list.

use std::net::SocketAddr;

use super::{Ctx, same_port, sections};
use crate::config::file::{ListenFile, ListenList};
use crate::config::{CertificatePaths, ConfigError, ListenTls, Listener, Overrides};

/// The default when `listen:` is absent.
const DEFAULT: ([u8; 4], u16) = ([0, 0, 0, 0], 8080);

/// The listeners the file (and `--listen`, which replaces the first entry's address)
/// configures, in the file's order; at least one.
pub(super) fn listeners(
    cx: &Ctx<'_>,
    file: Option<&ListenList>,
    o: &Overrides,
) -> Result<Vec<Listener>, ConfigError> {
    let empty = ListenList::default();
    let list = file.unwrap_or(&empty);
    if file.is_some() && list.entries.is_empty() {
        let hint = "give at least one address, e.g. `listen: [0.0.0.0:8080]`";
        return Err(cx.err("listen", "the list is empty", hint));
    }
    let mut out: Vec<Listener> = Vec::with_capacity(list.entries.len().max(1));
    let mut https_port = None;
    for (i, entry) in list.entries.iter().enumerate() {
        let prefix = match list.list {
            true => format!("listen[{i}]"),
            false => "listen".to_owned(),
        };
        let mut l = one(cx, &prefix, entry)?;
        if i == 0 {
            l.address = o.listen.unwrap_or(l.address);
        }
        if entry.tls.is_some() && https_port.is_none() {
            https_port = Some(l.address.port());
        }
        let key = address_key(&prefix, entry);
        if let Some(j) = out.iter().position(|p| same_port(p.address, l.address)) {
            let problem = format!(
                "{} clashes with {} ({}): both cannot listen",
                l.address,
                address_key(&format!("listen[{j}]"), &list.entries[j]),
                out[j].address
            );
            return Err(cx.err(&key, problem, "give each entry its own port"));
        }
        out.push(l);
    }
    if out.is_empty() {
        out.push(Listener::plain(
            o.listen.unwrap_or(SocketAddr::from(DEFAULT)),
        ));
    }
    // Redirects point at the first TLS entry.
    for (i, entry) in list.entries.iter().enumerate() {
        if entry.redirect_https != Some(true) {
            continue;
        }
        let prefix = match list.list {
            true => format!("listen[{i}]"),
            false => "listen".to_owned(),
        };
        let key = format!("{prefix}.redirect_https");
        if entry.tls.is_some() {
            let hint = "set it on the plain HTTP entry (e.g. port 80), not on the TLS one";
            return Err(cx.err(&key, "a TLS listener cannot redirect to HTTPS", hint));
        }
        match https_port {
            None => {
                let hint = "add a TLS entry to `listen:`, e.g. \
                            `- {address: 0.0.0.0:443, tls: {certificates: [...]}}`";
                return Err(cx.err(&key, "no listener has TLS to redirect to", hint));
            }
            Some(0) => {
                let hint = "give the TLS listener a fixed port";
                return Err(cx.err(&key, "the TLS listener's port is 0 (any)", hint));
            }
            Some(port) => out[i].redirect_https = Some(port),
        }
    }
    Ok(out)
}

fn address_key(prefix: &str, entry: &ListenFile) -> String {
    match entry.short {
        true => prefix.to_owned(),
        false => format!("{prefix}.address"),
    }
}

/// One entry on its own.
fn one(cx: &Ctx<'_>, prefix: &str, l: &ListenFile) -> Result<Listener, ConfigError> {
    let mut tls = None;
    if let Some(t) = &l.tls {
        let certs = t.certificates.as_deref().unwrap_or_default();
        if certs.is_empty() {
            let hint = "add `certificates: [{cert: server.pem, key: server.key}]`";
            let key = format!("{prefix}.tls.certificates");
            return Err(cx.err(&key, "no certificate given", hint));
        }
        let paths: Vec<_> = certs
            .iter()
            .map(|c| CertificatePaths {
                cert: cx.relative(&c.cert),
                key: cx.relative(&c.key),
            })
            .collect();
        // Offline, the files are not read (and the listener has no TLS).
        if !cx.offline {
            tls = Some(ListenTls::load(paths).map_err(|(i, which, e)| {
                let key = format!("{prefix}.tls.certificates[{i}].{which}");
                let hint = "give PEM files: the certificate chain and its private key";
                cx.err(&key, e, hint)
            })?);
        }
    }
    let Some(addr) = &l.address else {
        let hint = "write `listen: 0.0.0.0:8080` or `listen: {address: 0.0.0.0:8080}`";
        let key = format!("{prefix}.address");
        return Err(cx.err(&key, "the listen address is missing", hint));
    };
    let address = cx.socket(&address_key(prefix, l), addr)?;
    let proxy_protocol = match &l.proxy_protocol {
        Some(pp) => Some(sections::proxy_protocol_trusted(cx, prefix, pp)?),
        None => None,
    };
    Ok(Listener {
        address,
        tls,
        proxy_protocol,
        redirect_https: None,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::{B, assert_err, load, load_with};
    use crate::config::{Listener, Overrides};

    fn addrs(ls: &[Listener]) -> Vec<String> {
        ls.iter().map(|l| l.address.to_string()).collect()
    }

    #[test]
    fn one_entry_a_list_and_the_default() {
        let c = load(B).unwrap();
        assert_eq!(addrs(&c.listeners), ["0.0.0.0:8080"]);
        let c = load(&format!("{B}listen: 127.0.0.1:81\n")).unwrap();
        assert_eq!(addrs(&c.listeners), ["127.0.0.1:81"]);
        let c = load(&format!(
            "{B}listen:\n  - 127.0.0.1:81\n  - address: 127.0.0.1:82\n    proxy_protocol: {{trusted: [10.0.0.0/8]}}\n"
        ))
        .unwrap();
        assert_eq!(addrs(&c.listeners), ["127.0.0.1:81", "127.0.0.1:82"]);
        assert!(c.listeners[0].proxy_protocol.is_none());
        assert_eq!(
            c.listeners[1].proxy_protocol.as_ref().map(Vec::len),
            Some(1)
        );
        // --listen replaces the first entry's address only.
        let o = Overrides {
            listen: Some("127.0.0.1:90".parse().unwrap()),
            ..Overrides::default()
        };
        let c = load_with(&format!("{B}listen: [127.0.0.1:81, 127.0.0.1:82]\n"), &o).unwrap();
        assert_eq!(addrs(&c.listeners), ["127.0.0.1:90", "127.0.0.1:82"]);
    }

    #[test]
    fn entries_are_checked_alone_and_against_each_other() {
        let t = format!("{B}listen: []\n");
        assert_err(&t, "listen", Some(2), "the list is empty");
        let t = format!("{B}listen:\n  - 127.0.0.1:81\n  - address: 0.0.0.0:81\n");
        assert_err(&t, "listen[1].address", Some(4), "clashes with listen[0]");
        let t = format!("{B}listen:\n  - 127.0.0.1:81\n  - nope\n");
        assert_err(&t, "listen[1]", Some(4), "not an ADDR:PORT");
        let t = format!("{B}listen:\n  - 127.0.0.1:81\n  - {{address: 127.0.0.1:82, bogus: 1}}\n");
        assert_err(&t, "listen[1].bogus", Some(4), "unknown");
        let t = format!(
            "{B}listen:\n  - 127.0.0.1:81\n  - address: 127.0.0.1:82\n    proxy_protocol: {{trusted: []}}\n"
        );
        assert_err(
            &t,
            "listen[1].proxy_protocol.trusted",
            Some(5),
            "no trusted network",
        );
    }

    #[test]
    fn redirect_needs_a_tls_entry_to_point_at() {
        let t = format!("{B}listen:\n  - address: 127.0.0.1:81\n    redirect_https: true\n");
        assert_err(
            &t,
            "listen[0].redirect_https",
            Some(4),
            "no listener has TLS",
        );
        let t = format!("{B}listen:\n  address: 127.0.0.1:81\n  redirect_https: true\n");
        assert_err(&t, "listen.redirect_https", Some(4), "no listener has TLS");
        let c = load(&format!(
            "{B}listen:\n  - address: 127.0.0.1:81\n    redirect_https: false\n"
        ))
        .unwrap();
        assert_eq!(c.listeners[0].redirect_https, None);
    }
}
