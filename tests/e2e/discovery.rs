//! Discovery against real servers: dnsmasq (A records from a hosts file the test
//! rewrites, SRV records) and etcd (keys put and deleted through its JSON gateway),
//! both from Debian and started here on free ports. A backend added at the source
//! gets traffic within TTL + 1 s, a removed one gets no new request and finishes the
//! one it has, and while the source is down traffic goes on to the last known set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::support::Scratch;
use crate::support::backend::{Recorded, Reply};
use crate::support::balancer::scrape;
use crate::support::client::get;
use crate::support::process::{Proc, serving};
use crate::support::{TestBackend, dead_port, eventually};

/// Answers with its name; `/slow` after 1.5 s.
fn named_on(addr: SocketAddr, name: &'static str) -> TestBackend {
    TestBackend::start_on(addr, move |r: &Recorded| {
        if r.target == "/slow" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            )
            .into_bytes(),
        )
    })
}

/// Which backend answered (`X-Backend`), for `n` requests.
fn answers(lb: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = get(lb, "/");
            assert_eq!(r.status, 200, "{}", r.text());
            r.header("x-backend").unwrap_or("?").to_owned()
        })
        .collect()
}

fn balancer(dir: &Path, admin: SocketAddr, discovery: &str) -> (Proc, SocketAddr) {
    let listen = dead_port();
    let path = dir.join("lb.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {listen}\nadmin: {admin}\nworkers: 2\nmode: process\n\
             health: {{probes: false}}\n{discovery}"
        ),
    )
    .unwrap();
    let p = Proc::with_config(&path);
    assert!(serving(listen) && serving(admin), "{}", p.log());
    (p, listen)
}

struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(port: u16, hosts: &Path, srv: &str) -> Dnsmasq {
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .args(["--no-resolv", "--no-hosts", "--local-ttl=1", "--user=root"])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg(format!("--srv-host={srv}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is needed for this test (Debian: apt-get install dnsmasq-base)");
        Dnsmasq(child)
    }

    fn reread(&self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGHUP) };
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dns_and_srv_records_are_followed() {
    let dir = Scratch::new("dns");
    let port = dead_port().port();
    let b2 = named_on(SocketAddr::from(([127, 0, 0, 2], port)), "b2");
    let b3 = named_on(SocketAddr::from(([127, 0, 0, 3], port)), "b3");
    let _s4 = named_on(SocketAddr::from(([127, 0, 0, 4], port)), "s4");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.2 svc.test\n127.0.0.4 srv.test\n").unwrap();
    let dns_port = dead_port().port();
    let dns = Dnsmasq::start(
        dns_port,
        &hosts,
        &format!("_http._tcp.svc.test,srv.test,{port},0,1"),
    );
    let admin = dead_port();
    let (lb, listen) = balancer(
        &dir,
        admin,
        &format!(
            "discovery:\n  - dns: svc.test:{port}\n  - srv: _http._tcp.svc.test\n\
             resolver: 127.0.0.1:{dns_port}\n"
        ),
    );
    // dnsmasq may still be starting when the balancer looks first: wait for both.
    assert!(
        eventually(Duration::from_secs(10), || {
            let a = answers(listen, 4);
            a.contains(&"b2".into()) && a.contains(&"s4".into())
        }),
        "{}",
        lb.log()
    );
    assert_eq!(b3.request_count(), 0);

    // Added at the source: traffic within TTL (1 s) + 1 s.
    std::fs::write(
        &hosts,
        "127.0.0.2 svc.test\n127.0.0.3 svc.test\n127.0.0.4 srv.test\n",
    )
    .unwrap();
    dns.reread();
    let t0 = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || answers(listen, 3)
            .contains(&"b3".into())),
        "{}",
        lb.log()
    );
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(2) + Duration::from_millis(500),
        "{took:?}"
    );

    // Removed at the source while requests are in flight on it: they finish, and it
    // gets no new one.
    let slow: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get(listen, "/slow")))
        .collect();
    assert!(eventually(Duration::from_secs(2), || b2.count("/slow") > 0));
    std::fs::write(&hosts, "127.0.0.3 svc.test\n127.0.0.4 srv.test\n").unwrap();
    dns.reread();
    let gone = || !scrape_backends(admin).contains(&format!("127.0.0.2:{port}"));
    assert!(eventually(Duration::from_secs(3), gone), "{}", lb.log());
    // /backends is the prober's view; each worker takes the generation from the
    // master a moment apart: wait until new requests stop reaching it.
    let quiet = || !answers(listen, 10).contains(&"b2".into());
    assert!(eventually(Duration::from_secs(3), quiet), "{}", lb.log());
    let before = b2.request_count();
    let after = answers(listen, 20);
    assert!(!after.contains(&"b2".into()), "{after:?}");
    assert_eq!(b2.request_count(), before);
    for s in slow {
        assert_eq!(s.join().unwrap().status, 200);
    }

    // The source goes away: the last known set keeps serving, the error is counted.
    drop(dns);
    let label = format!("dns:svc.test:{port}");
    assert!(
        eventually(Duration::from_secs(10), || {
            let a = answers(listen, 4);
            assert!(a.iter().all(|b| b == "b3" || b == "s4"), "{a:?}");
            scrape(admin).value("switchyard_discovery_errors_total", &[("source", &label)])
                > Some(0.0)
        }),
        "{}",
        lb.log()
    );
    drop(lb);
}

fn scrape_backends(admin: SocketAddr) -> String {
    get(admin, "/backends").text()
}

/// An etcd server on free ports with its data in `dir`; killed on drop.
struct Etcd {
    client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let mut e = Etcd {
            client: dead_port(),
            peer: dead_port(),
            dir: dir.join("etcd"),
            child: None,
        };
        e.restart();
        e
    }

    fn restart(&mut self) {
        let (c, p) = (
            format!("http://{}", self.client),
            format!("http://{}", self.peer),
        );
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args(["--initial-cluster", &format!("default={p}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is needed for this test (Debian: apt-get install etcd-server)");
        self.child = Some(child);
        assert!(
            eventually(Duration::from_secs(20), || self
                .call("/v3/kv/range", r#"{"key":"AA=="}"#)
                .is_some()),
            "etcd did not start"
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn call(&self, path: &str, body: &str) -> Option<u16> {
        let mut c = std::net::TcpStream::connect(self.client).ok()?;
        use std::io::{Read, Write};
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.client,
            body.len()
        );
        c.write_all(req.as_bytes()).ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        out.get(9..12)?.parse().ok().filter(|&s| s == 200)
    }

    fn put(&self, key: &str, value: &str) {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            B64.encode(key),
            B64.encode(value)
        );
        assert_eq!(self.call("/v3/kv/put", &body), Some(200), "put {key}");
    }

    fn delete(&self, key: &str) {
        let body = format!(r#"{{"key":"{}"}}"#, B64.encode(key));
        assert_eq!(self.call("/v3/kv/deleterange", &body), Some(200));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn etcd_keys_are_followed_and_survive_an_outage() {
    let dir = Scratch::new("etcd");
    let b1 = TestBackend::named("e1");
    let b2 = TestBackend::named("e2");
    let b3 = TestBackend::named("e3");
    let mut etcd = Etcd::start(&dir);
    etcd.put("/sy/backends/e1", &b1.addr.to_string());
    etcd.put("/other/e3", &b3.addr.to_string()); // outside the prefix
    let admin = dead_port();
    let (lb, listen) = balancer(
        &dir,
        admin,
        &format!(
            "discovery:\n  - etcd: {{endpoints: ['http://{}'], prefix: /sy/backends/}}\n",
            etcd.client
        ),
    );
    // Read whole at start.
    assert_eq!(answers(listen, 3), ["e1", "e1", "e1"], "{}", lb.log());

    // Watched: a key put shows up within a second, in either value form.
    etcd.put(
        "/sy/backends/e2",
        &format!(r#"{{"address": "{}", "weight": 2}}"#, b2.addr),
    );
    let t0 = Instant::now();
    assert!(eventually(Duration::from_secs(3), || answers(listen, 2)
        .contains(&"e2".into())));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    etcd.delete("/sy/backends/e1");
    let gone = || !scrape_backends(admin).contains(&b1.addr.to_string());
    assert!(eventually(Duration::from_secs(3), gone), "{}", lb.log());
    let before = b1.request_count();
    assert!(answers(listen, 10).iter().all(|b| b == "e2"));
    assert_eq!(b1.request_count(), before);

    // etcd goes away: the last set keeps serving, the loss is counted.
    etcd.kill();
    let label = "etcd:/sy/backends/";
    assert!(
        eventually(Duration::from_secs(10), || {
            assert!(answers(listen, 2).iter().all(|b| b == "e2"));
            scrape(admin).value("switchyard_discovery_errors_total", &[("source", label)])
                > Some(0.0)
        }),
        "{}",
        lb.log()
    );
    assert_eq!(b3.request_count(), 0);

    // Back (same data): the watch resumes and a new key is followed.
    etcd.restart();
    etcd.put("/sy/backends/e1", &b1.addr.to_string());
    assert!(
        eventually(Duration::from_secs(40), || answers(listen, 2)
            .contains(&"e1".into())),
        "{}",
        lb.log()
    );
    drop(lb);
}
