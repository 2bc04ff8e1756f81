//! Admin writes (drain, enable, weight) over real TCP: what clients see while a backend
//! is drained under load, who may write, and that the state reaches every worker and
//! holds across a reload (process mode, 2 workers).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use switchyard::admin::AdminToken;
use switchyard::backend::BackendId;
use switchyard::balance::StrategyKind;

use crate::support::client::{Resp, get, raw};
use crate::support::process::{Proc, serving};
use crate::support::{Balancer, Conn, TestBackend, dead_port, eventually};

/// One admin request on a fresh connection (`token`: sent as a Bearer token).
fn admin(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> Resp {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(addr, req.as_bytes())
}

fn id(addr: SocketAddr) -> String {
    BackendId::of(&addr.to_string()).to_string()
}

/// The `/backends` entry of `backend`.
fn shown(admin: SocketAddr, backend: SocketAddr) -> serde_json::Value {
    let list = get(admin, "/backends").json();
    let list = list.as_array().expect("an array").clone();
    list.into_iter()
        .find(|b| b["address"] == backend.to_string())
        .unwrap_or_else(|| panic!("{backend} not in /backends"))
}

/// Asserts a JSON answer with `status`, and returns it parsed.
fn answer(r: &Resp, status: u16) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// `threads` keep-alive clients in a loop until `stop`; each returns (ok, failed).
fn clients(
    addr: SocketAddr,
    threads: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(usize, usize)>> {
    (0..threads)
        .map(|_| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, 0);
                let mut c = Conn::open(addr);
                // Bounded: a broken test never spins for good.
                for _ in 0..200_000 {
                    if stop.load(SeqCst) {
                        break;
                    }
                    match c.get("/").status {
                        200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

#[test]
fn drain_under_load_fails_nothing_and_enable_brings_the_backend_back() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .workers(2)
        .admin()
        .start();
    let adm = lb.admin_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let loops = clients(lb.addr, 4, &stop);
    assert!(eventually(Duration::from_secs(10), || a.request_count()
        > 50
        && b.request_count() > 50));

    let r = admin(
        adm,
        "POST",
        &format!("/backends/{}/drain", id(b.addr)),
        None,
        "",
    );
    let drained = answer(&r, 200);
    assert_eq!(drained["draining"], true, "{drained}");
    assert_eq!(drained["address"], b.addr.to_string());
    let at_answer = b.request_count();
    // At most one request per client was already on its way to b.
    let a0 = a.request_count();
    assert!(eventually(Duration::from_secs(10), || a.request_count() > a0 + 100));
    let settled = b.request_count();
    assert!(settled <= at_answer + 4, "{at_answer} -> {settled}");
    let a1 = a.request_count();
    assert!(eventually(Duration::from_secs(10), || a.request_count() > a1 + 300));
    assert_eq!(
        b.request_count(),
        settled,
        "a drained backend got new requests"
    );
    assert_eq!(shown(adm, b.addr)["draining"], true);
    let drained = |addr: std::net::SocketAddr| {
        let m = crate::support::balancer::scrape(adm);
        m.value(
            "switchyard_backend_drained",
            &[("backend", &addr.to_string())],
        )
    };
    assert_eq!((drained(b.addr), drained(a.addr)), (Some(1.0), Some(0.0)));

    let r = admin(
        adm,
        "POST",
        &format!("/backends/{}/enable", id(b.addr)),
        None,
        "",
    );
    assert_eq!(answer(&r, 200)["draining"], false);
    assert_eq!(drained(b.addr), Some(0.0));
    assert!(
        eventually(Duration::from_secs(10), || b.request_count() > settled + 50),
        "enable did not bring b back"
    );
    stop.store(true, SeqCst);
    let (mut ok, mut failed) = (0, 0);
    for l in loops {
        let (o, f) = l.join().unwrap();
        ok += o;
        failed += f;
    }
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
}

/// Drained means no new requests from fail-open either: with the only other backend
/// dead, requests fail rather than reach the drained one; with every backend drained,
/// clients get a 503 text answer.
#[test]
fn drained_backends_are_not_fail_open_picks_and_all_drained_is_503() {
    let dead = dead_port();
    let b = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(dead)
        .backend(b.addr)
        .admin()
        .start();
    let adm = lb.admin_addr();
    let drain = |addr| {
        admin(
            adm,
            "POST",
            &format!("/backends/{}/drain", id(addr)),
            None,
            "",
        )
    };
    assert_eq!(drain(b.addr).status, 200);
    for _ in 0..10 {
        let r = get(lb.addr, "/");
        assert!(
            r.status == 502 || r.status == 503,
            "{} {}",
            r.status,
            r.text()
        );
    }
    assert_eq!(b.request_count(), 0, "the drained backend was picked");
    assert_eq!(drain(dead).status, 200);
    get(lb.addr, "/").assert_local_error(503);
    assert_eq!(b.request_count(), 0);
    let r = admin(
        adm,
        "POST",
        &format!("/backends/{}/enable", id(b.addr)),
        None,
        "",
    );
    assert_eq!(r.status, 200);
    let r = get(lb.addr, "/");
    assert_eq!((r.status, r.text().as_str()), (200, "b"));
}

#[test]
fn with_a_token_writes_need_it_and_bad_requests_get_json_errors() {
    let a = TestBackend::named("a");
    let lb = Balancer::new()
        .backend(a.addr)
        .admin()
        .with(|c| c.admin_token = Some(AdminToken::new("s3cret").unwrap()))
        .start();
    let adm = lb.admin_addr();
    let drain = format!("/backends/{}/drain", id(a.addr));
    let weight = format!("/backends/{}/weight", id(a.addr));

    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let r = admin(adm, "POST", &drain, token, "");
        let e = answer(&r, 401);
        assert!(e["error"].as_str().unwrap().contains("Bearer"), "{e}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(
        shown(adm, a.addr)["draining"],
        false,
        "a refused write changed nothing"
    );
    // Reads stay open.
    assert_eq!(get(adm, "/backends").status, 200);
    assert_eq!(get(adm, "/metrics").status, 200);

    let t = Some("s3cret");
    // Auth comes before the id: an unauthenticated client learns nothing of ids.
    answer(
        &admin(adm, "POST", "/backends/0000000000000001/drain", None, ""),
        401,
    );
    let e = answer(
        &admin(adm, "POST", "/backends/0000000000000001/drain", t, ""),
        404,
    );
    assert!(
        e["error"].as_str().unwrap().contains("0000000000000001"),
        "{e}"
    );
    answer(&admin(adm, "POST", "/backends/nothex/drain", t, ""), 404);
    answer(
        &admin(
            adm,
            "POST",
            &format!("/backends/{}/reboot", id(a.addr)),
            t,
            "",
        ),
        404,
    );
    let r = admin(adm, "GET", &drain, t, "");
    answer(&r, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = admin(adm, "POST", &weight, t, "3");
    answer(&r, 405);
    assert_eq!(r.header("allow"), Some("PUT, DELETE"));
    for bad in ["0.5", "0", "-1", "abc", "", "4294967296"] {
        let e = answer(&admin(adm, "PUT", &weight, t, bad), 400);
        assert!(e["error"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    answer(&admin(adm, "PUT", &weight, t, &"1".repeat(2000)), 413);
    assert_eq!(
        shown(adm, a.addr)["weight_override"],
        serde_json::Value::Null
    );

    let w = answer(&admin(adm, "PUT", &weight, t, "7\n"), 200);
    assert_eq!(
        (w["weight"].as_u64(), w["weight_override"].as_u64()),
        (Some(1), Some(7))
    );
    assert_eq!(w["effective_weight"].as_f64(), Some(7.0));
    let d = answer(&admin(adm, "POST", &drain, t, ""), 200);
    assert_eq!(
        (d["draining"].as_bool(), d["weight_override"].as_u64()),
        (Some(true), Some(7))
    );
    let c = answer(&admin(adm, "DELETE", &weight, t, ""), 200);
    assert_eq!(c["weight_override"], serde_json::Value::Null);
    assert_eq!(c["draining"], true, "clearing the weight keeps the drain");
}

/// Without a token file, writes are refused on a listener that is not on loopback
/// (0.0.0.0 here) and allowed on one that is (the other tests).
#[test]
fn without_a_token_a_non_loopback_admin_listener_refuses_writes() {
    let a = TestBackend::named("a");
    let port = dead_port().port();
    let lb = Balancer::new()
        .backend(a.addr)
        .with(move |c| c.admin = Some(SocketAddr::from(([0, 0, 0, 0], port))))
        .start();
    let adm = SocketAddr::from(([127, 0, 0, 1], port));
    let r = admin(
        adm,
        "POST",
        &format!("/backends/{}/drain", id(a.addr)),
        None,
        "",
    );
    let e = answer(&r, 403);
    assert!(
        e["error"].as_str().unwrap().contains("admin_token_file"),
        "{e}"
    );
    assert_eq!(shown(adm, a.addr)["draining"], false);
    assert_eq!(get(lb.addr, "/").status, 200);
}

#[test]
fn weight_override_shifts_weighted_round_robin_traffic() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .strategy(StrategyKind::WeightedRoundRobin)
        .admin()
        .start();
    let adm = lb.admin_addr();
    let weight = format!("/backends/{}/weight", id(b.addr));
    assert_eq!(admin(adm, "PUT", &weight, None, "4").status, 200);
    let mut c = Conn::open(lb.addr);
    for _ in 0..50 {
        assert_eq!(c.get("/").status, 200);
    }
    // One worker, smooth weighted round-robin from zero: exactly 1:4.
    assert_eq!((a.request_count(), b.request_count()), (10, 40));
    assert_eq!(admin(adm, "DELETE", &weight, None, "").status, 200);
    for _ in 0..50 {
        assert_eq!(c.get("/").status, 200);
    }
    assert_eq!((a.request_count(), b.request_count()), (35, 65));
}

/// A backend removed by a reload and added back later starts clean.
#[test]
fn a_backend_added_back_by_a_reload_starts_undrained() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .admin()
        .start();
    let adm = lb.admin_addr();
    let r = admin(
        adm,
        "POST",
        &format!("/backends/{}/drain", id(b.addr)),
        None,
        "",
    );
    assert_eq!(r.status, 200);
    let both = lb.config.backends.clone();
    let only_a = switchyard::backend::BackendSet::new(vec![both.get(0).clone()]);
    lb.reload(|c| c.backends = only_a);
    assert!(eventually(Duration::from_secs(5), || get(adm, "/backends")
        .json()
        .as_array()
        .is_some_and(|l| l.len() == 1)));
    // While configured, a reload keeps it drained (checked in process mode below);
    // removed and added back, it is a new backend.
    lb.reload(|c| c.backends = both);
    assert!(
        eventually(Duration::from_secs(5), || shown(adm, b.addr)["draining"]
            == false),
        "{}",
        shown(adm, b.addr)
    );
    assert!(eventually(Duration::from_secs(5), || {
        get(lb.addr, "/");
        b.request_count() > 0
    }));
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Process mode, 2 workers: a drain and a weight set through the prober process's
/// admin listener reach both worker processes, and hold across a SIGHUP reload that
/// changes the config but keeps the backends; the reload also re-reads the token.
#[test]
fn process_mode_admin_state_reaches_every_worker_and_holds_across_a_reload() {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-admin-write-{}-{}",
        std::process::id(),
        N.fetch_add(1, SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b, c, d) = (
        TestBackend::named("a"),
        TestBackend::named("b"),
        TestBackend::named("c"),
        TestBackend::named("d"),
    );
    let (listen, adm) = (dead_port(), dead_port());
    let config = |backends: &[SocketAddr], retries: u32| {
        let mut s = format!(
            "listen: {listen}\nadmin: {adm}\nadmin_token_file: admin.token\nworkers: 2\n\
             mode: process\nstrategy: weighted-round-robin\nretries: {retries}\n\
             health:\n  probes: false\nbackends:\n"
        );
        for b in backends {
            s.push_str(&format!("  - address: {b}\n"));
        }
        s
    };
    let path = dir.join("lb.yaml");
    std::fs::write(dir.join("admin.token"), "first-token\n").unwrap();
    std::fs::write(&path, config(&[a.addr, b.addr, c.addr], 2)).unwrap();
    let p = Proc::with_config(&path);
    assert!(serving(listen) && serving(adm), "{}", p.log());
    assert!(
        eventually(Duration::from_secs(10), || p.workers().len() == 2),
        "{:?}",
        p.children()
    );

    let t = Some("first-token");
    let drain_a = format!("/backends/{}/drain", id(a.addr));
    answer(&admin(adm, "POST", &drain_a, None, ""), 401);
    answer(&admin(adm, "POST", &drain_a, t, ""), 200);
    let weight_b = format!("/backends/{}/weight", id(b.addr));
    answer(&admin(adm, "PUT", &weight_b, t, "3"), 200);

    // Fresh connections: the kernel spreads them over both worker processes.
    let send = |n: usize| {
        for _ in 0..n {
            assert_eq!(get(listen, "/").status, 200);
        }
    };
    send(120);
    let (nb, nc) = (b.request_count(), c.request_count());
    assert_eq!(a.request_count(), 0, "a drained backend got requests");
    assert_eq!(nb + nc, 120);
    // 3:1 per worker, give or take one unfinished round (4 picks) in each.
    assert!(nb.abs_diff(90) <= 8, "b {nb}, c {nc}");

    // Reload: new token, one more backend, another retries value; a, b, c kept.
    std::fs::write(dir.join("admin.token"), "second-token\n").unwrap();
    write(&path, &config(&[a.addr, b.addr, c.addr, d.addr], 1));
    p.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || get(adm, "/backends")
            .json()
            .as_array()
            .is_some_and(|l| l.len() == 4)),
        "{}",
        p.log()
    );
    let shown_a = shown(adm, a.addr);
    assert_eq!(shown_a["draining"], true, "{shown_a}");
    assert_eq!(shown(adm, b.addr)["weight_override"], 3);
    assert!(
        eventually(Duration::from_secs(10), || {
            send(10);
            d.request_count() > 0
        }),
        "the reload never reached a worker"
    );
    let (b0, c0, d0) = (b.request_count(), c.request_count(), d.request_count());
    send(200);
    let (db, dc, dd) = (
        b.request_count() - b0,
        c.request_count() - c0,
        d.request_count() - d0,
    );
    assert_eq!(
        a.request_count(),
        0,
        "the drain did not hold across the reload"
    );
    // b stays at 3 to c's 1, in the new snapshot (b 3, c 1, d 1) as in the old one (a
    // worker that has not switched yet), give or take a round per worker.
    assert!(db.abs_diff(3 * dc) <= 12, "b {db}, c {dc}, d {dd}");

    // The token was re-read.
    answer(
        &admin(
            adm,
            "POST",
            &format!("/backends/{}/enable", id(a.addr)),
            t,
            "",
        ),
        401,
    );
    let t2 = Some("second-token");
    answer(
        &admin(
            adm,
            "POST",
            &format!("/backends/{}/enable", id(a.addr)),
            t2,
            "",
        ),
        200,
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            send(10);
            a.request_count() > 0
        }),
        "enable did not reach the workers"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
