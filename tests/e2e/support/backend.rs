//! A scriptable blocking HTTP/1.1 backend that records what reaches it.
//!
//! Every connection gets its own thread. In the default mode the backend parses each
//! request (Content-Length or chunked body), records it, and answers with whatever the
//! test's handler returns, keeping the connection alive unless told otherwise. In raw
//! mode the test gets the `TcpStream` itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub version: String,
    /// Header lines in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Index of the TCP connection it came on (0-based, in accept order).
    pub conn: usize,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }
}

/// What the backend does with a request.
pub enum Reply {
    /// Write these bytes and keep reading requests.
    Raw(Vec<u8>),
    /// Write these bytes and close the connection.
    RawThenClose(Vec<u8>),
    /// Never answer (until the test ends).
    Hang,
    /// Do anything with the stream; return true to keep reading requests.
    With(Box<dyn FnOnce(&mut TcpStream) -> bool + Send>),
}

impl Reply {
    /// `200 OK` with a Content-Length body.
    pub fn ok(body: &str) -> Reply {
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;
type RawHandler = dyn Fn(TcpStream) + Send + Sync;

#[derive(Default)]
pub struct Stats {
    pub requests: Mutex<Vec<Recorded>>,
    pub connections: AtomicUsize,
    /// Connections the balancer closed (EOF seen by the backend).
    pub closed_by_peer: AtomicUsize,
    pub stop: AtomicBool,
    /// Clones of accepted streams, so `kill` can cut them.
    pub streams: Mutex<Vec<TcpStream>>,
    /// Set once the listening socket is closed.
    pub listener_closed: AtomicBool,
}

pub struct TestBackend {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl TestBackend {
    /// Answers every request through `handler`.
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> TestBackend {
        let handler: Arc<Handler> = Arc::new(handler);
        Self::spawn(move |stream, stats, conn| serve_parsed(stream, &stats, conn, &*handler))
    }

    /// `200 OK` with body `name` and `X-Backend: name` to everything.
    pub fn named(name: &'static str) -> TestBackend {
        TestBackend::start(move |_| {
            Reply::Raw(
                format!(
                    "HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: {}\r\n\r\n{name}",
                    name.len()
                )
                .into_bytes(),
            )
        })
    }

    /// Hands each accepted connection to `f`.
    pub fn raw(f: impl Fn(TcpStream) + Send + Sync + 'static) -> TestBackend {
        let f: Arc<RawHandler> = Arc::new(f);
        Self::spawn(move |stream, _stats, _conn| f(stream))
    }

    fn spawn(
        per_conn: impl Fn(TcpStream, Arc<Stats>, usize) + Send + Sync + 'static,
    ) -> TestBackend {
        Self::spawn_on("127.0.0.1:0".parse().expect("addr"), per_conn)
    }

    /// Like `start`, on a given address (to bring a killed backend back).
    pub fn start_on(
        addr: SocketAddr,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> TestBackend {
        let handler: Arc<Handler> = Arc::new(handler);
        Self::spawn_on(addr, move |stream, stats, conn| {
            serve_parsed(stream, &stats, conn, &*handler)
        })
    }

    /// Kills the backend: the listener closes (new connections are refused) and every
    /// open connection is shut down. Returns once the port refuses connections.
    pub fn kill(&self) {
        self.stats.stop.store(true, SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
        let closed = crate::support::eventually(Duration::from_secs(5), || {
            self.stats.listener_closed.load(SeqCst)
        });
        assert!(closed, "backend listener did not close");
        for s in self.stats.streams.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn spawn_on(
        addr: SocketAddr,
        per_conn: impl Fn(TcpStream, Arc<Stats>, usize) + Send + Sync + 'static,
    ) -> TestBackend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Stats::default());
        let per_conn = Arc::new(per_conn);
        let st = Arc::clone(&stats);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if st.stop.load(SeqCst) {
                    break;
                }
                if let Ok(c) = stream.try_clone() {
                    st.streams.lock().expect("lock").push(c);
                }
                let conn = st.connections.fetch_add(1, SeqCst);
                let st = Arc::clone(&st);
                let per_conn = Arc::clone(&per_conn);
                let end = stream.try_clone();
                std::thread::spawn(move || {
                    per_conn(stream, st, conn);
                    // The clone kept for `kill` would hold the socket open: close it.
                    if let Ok(s) = end {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                });
            }
            drop(listener);
            st.listener_closed.store(true, SeqCst);
        });
        TestBackend { addr, stats }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.stats.requests.lock().expect("lock").clone()
    }

    pub fn request_count(&self) -> usize {
        self.stats.requests.lock().expect("lock").len()
    }

    /// How many requests for `target` arrived (a health probe asks for its path too).
    pub fn count(&self, target: &str) -> usize {
        self.stats
            .requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.target == target)
            .count()
    }

    pub fn connections(&self) -> usize {
        self.stats.connections.load(SeqCst)
    }

    pub fn closed_by_peer(&self) -> usize {
        self.stats.closed_by_peer.load(SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if self.stats.listener_closed.load(SeqCst) {
            return;
        }
        self.stats.stop.store(true, SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn serve_parsed(stream: TcpStream, stats: &Stats, conn: usize, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut stream = stream;
    loop {
        let req = match read_request(&mut reader, conn) {
            Some(r) => r,
            None => {
                stats.closed_by_peer.fetch_add(1, SeqCst);
                return;
            }
        };
        stats.requests.lock().expect("lock").push(req.clone());
        let keep = match handler(&req) {
            Reply::Raw(b) => stream.write_all(&b).is_ok(),
            Reply::RawThenClose(b) => {
                let _ = stream.write_all(&b);
                false
            }
            Reply::Hang => {
                while !stats.stop.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                false
            }
            Reply::With(f) => f(&mut stream),
        };
        if !keep {
            return;
        }
    }
}

/// Reads one request; None on EOF or garbage.
pub fn read_request(r: &mut BufReader<TcpStream>, conn: usize) -> Option<Recorded> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut it = line.trim_end().splitn(3, ' ');
    let (method, target, version) = (
        it.next()?.to_string(),
        it.next()?.to_string(),
        it.next()?.to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut raw = Vec::new();
        if r.read_until(b'\n', &mut raw).ok()? == 0 {
            return None;
        }
        while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            raw.pop();
        }
        if raw.is_empty() {
            break;
        }
        let i = raw.iter().position(|b| *b == b':')?;
        let name = String::from_utf8_lossy(&raw[..i]).into_owned();
        let mut value = raw[i + 1..].to_vec();
        while value.first() == Some(&b' ') {
            value.remove(0);
        }
        headers.push((name, value));
    }
    let mut req = Recorded {
        method,
        target,
        version,
        headers,
        body: Vec::new(),
        conn,
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line).ok()?;
            let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                loop {
                    let mut t = String::new();
                    r.read_line(&mut t).ok()?;
                    if t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut data = vec![0; size];
            r.read_exact(&mut data).ok()?;
            req.body.extend_from_slice(&data);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).ok()?;
        }
    } else if let Some(cl) = req.header("content-length") {
        let n: usize = cl.trim().parse().ok()?;
        let mut data = vec![0; n];
        r.read_exact(&mut data).ok()?;
        req.body = data;
    }
    Some(req)
}
