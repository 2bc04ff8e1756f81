//! Several listeners at once (`listen:` as a list): plain HTTP, HTTPS and a plain
//! port that redirects to HTTPS, served by the built binary in process mode.

use std::process::Command;
use std::time::Duration;

use crate::support::Scratch;
use crate::support::client::{Conn, get};
use crate::support::process::{Proc, serving};
use crate::support::tls::TestCa;
use crate::support::{TestBackend, dead_port, eventually};

/// curl with the test CA; returns (stdout, stderr).
fn curl(ca: &TestCa, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca.pem_path.to_str().unwrap(),
        ])
        .args(args)
        .output()
        .expect("curl is needed for this test");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plain_tls_and_redirecting_listeners_serve_at_once() {
    let dir = Scratch::new("three");
    let ca = TestCa::new(&dir);
    let (cert, key) = ca.server_cert().write(&dir, "lb");
    let be = TestBackend::named("app");
    let (redirect, https, plain, admin) = (dead_port(), dead_port(), dead_port(), dead_port());
    let path = dir.join("lb.yaml");
    std::fs::write(
        &path,
        format!(
            "listen:\n\
             \x20 - address: {redirect}\n\
             \x20   redirect_https: true\n\
             \x20 - address: {https}\n\
             \x20   tls: {{certificates: [{{cert: {}, key: {}}}]}}\n\
             \x20 - {plain}\n\
             admin: {admin}\nworkers: 2\nmode: process\n\
             health: {{probes: false}}\nbackends: [{}]\n",
            cert.display(),
            key.display(),
            be.addr
        ),
    )
    .unwrap();
    let p = Proc::with_config(&path);
    assert!(serving(redirect) && serving(https) && serving(plain) && serving(admin));

    // The plain listener proxies; the TLS one too, over HTTP/1.1 and HTTP/2.
    assert_eq!(get(plain, "/p").text(), "app", "{}", p.log());
    let port = https.port().to_string();
    let url = format!("https://localhost:{port}/t");
    let (out, err) = curl(&ca, &["--http2", "-w", " %{http_version}", &url]);
    assert_eq!(out, "app 2", "{err}");
    let (out, err) = curl(&ca, &["--http1.1", "-w", " %{http_version}", &url]);
    assert_eq!(out, "app 1.1", "{err}");

    // The redirecting listener: 308 to the same host and target on the TLS port,
    // with a text body, and the connection stays open for the next request.
    let mut c = Conn::open(redirect);
    for _ in 0..2 {
        c.send(b"GET /a/b?c=1 HTTP/1.1\r\nHost: site.test:80\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 308, "{}", r.text());
        let to = format!("https://site.test:{port}/a/b?c=1");
        assert_eq!(r.header("location"), Some(to.as_str()));
        assert_eq!(
            r.text(),
            format!("308 Permanent Redirect: this site is served over HTTPS: {to}\n")
        );
        assert_eq!(r.header("connection"), None);
    }
    // A request with a body it did not read: the 308, then the connection closes.
    c.send(b"POST /form HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.read_response();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("connection"), Some("close"));
    // A large body it does not read: the 308 still arrives whole (the close lingers,
    // reading what the client sends, instead of resetting the connection).
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(redirect).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1000000\r\n\r\n")
            .unwrap();
        s.write_all(&vec![b'x'; 200_000]).unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            match s.read(&mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => break Err(e),
            }
        };
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 308 "), "{text}");
        assert!(
            end.is_ok(),
            "the connection was reset, not closed: {end:?} after {text}"
        );
    }
    // No usable Host: a 400 with a text body, nothing proxied.
    let r = crate::support::client::raw(redirect, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "400 Bad Request: no valid Host to redirect to HTTPS\n"
    );
    // ACME HTTP-01 challenges go to the backend.
    let before = be.request_count();
    let r = get(redirect, "/.well-known/acme-challenge/token-1");
    assert_eq!((r.status, r.text().as_str()), (200, "app"));
    assert_eq!(be.count("/.well-known/acme-challenge/token-1"), 1);
    assert_eq!(be.request_count(), before + 1);
    // A client that follows redirects ends up on HTTPS.
    let from = format!("http://localhost:{}/followed", redirect.port());
    let (out, err) = curl(&ca, &["-L", "-w", " %{url_effective}", &from]);
    assert_eq!(
        out,
        format!("app https://localhost:{port}/followed"),
        "{err}"
    );

    // Redirects are counted as local responses.
    let m = crate::support::balancer::scrape(admin);
    let redirects: f64 = m
        .samples("switchyard_local_responses_total")
        .filter(|s| s.label("reason") == Some("redirect_https") && s.label("code") == Some("308"))
        .map(|s| s.value)
        .sum();
    // Two GETs, two POSTs and curl's first request.
    assert_eq!(redirects, 5.0, "redirects counted");
}

/// Turning `redirect_https` on is a reload; changing the addresses is not (one
/// warning, the listeners stay).
#[test]
fn redirect_reloads_in_place_and_addresses_need_a_restart() {
    let dir = Scratch::new("reload");
    let ca = TestCa::new(&dir);
    let (cert, key) = ca.server_cert().write(&dir, "lb");
    let be = TestBackend::named("app");
    let (front, https, other) = (dead_port(), dead_port(), dead_port());
    let write = |redirect: bool, front| {
        let text = format!(
            "listen:\n\
             \x20 - {{address: {front}, redirect_https: {redirect}}}\n\
             \x20 - address: {https}\n\
             \x20   tls: {{certificates: [{{cert: {}, key: {}}}]}}\n\
             workers: 1\nhealth: {{probes: false}}\nbackends: [{}]\n",
            cert.display(),
            key.display(),
            be.addr
        );
        std::fs::write(dir.join("lb.yaml"), text).unwrap();
    };
    write(false, front);
    let p = Proc::start(&["-c", dir.join("lb.yaml").to_str().unwrap()]);
    assert!(serving(front) && serving(https));
    assert_eq!(get(front, "/").status, 200);
    write(true, front);
    p.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || get(front, "/").status == 308),
        "{}",
        p.log()
    );
    write(true, other);
    p.signal(libc::SIGHUP);
    assert!(
        p.wait_log(
            &["listen addresses changed: restart"],
            Duration::from_secs(5)
        )
        .is_some(),
        "{}",
        p.log()
    );
    assert_eq!(get(front, "/").status, 308);
    assert!(std::net::TcpStream::connect(other).is_err());
}
