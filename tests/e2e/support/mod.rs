//! Test support: builders that read like the scenario.
//!
//! `Balancer::new().backend(addr).start()` runs switchyard in this process (thread
//! mode) on 127.0.0.1:0; `TestBackend` is a scriptable blocking HTTP/1.1 backend that
//! records every request and connection it sees; `client` speaks raw HTTP/1.1 over
//! `TcpStream` so tests can send exact bytes and read exact framing.

#![allow(dead_code)]

pub mod backend;
pub mod balancer;
pub mod client;
pub mod tls;

pub use backend::{Reply, TestBackend};
pub use balancer::Balancer;
pub use client::Conn;

use std::time::{Duration, Instant};

/// Polls `cond` every few ms until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A loopback port with nothing listening on it.
pub fn dead_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}
