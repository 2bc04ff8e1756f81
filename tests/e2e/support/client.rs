//! A raw HTTP/1.1 client over `TcpStream`: exact bytes out, exact framing in.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Resp {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body came chunked.
    pub chunked: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks that this is an answer the balancer made itself: `status`, `Via`, and
    /// the contract's one-line text body (`text/plain`, one line ending in `\n`,
    /// starting with the status and its reason phrase).
    pub fn assert_local_error(&self, status: u16) {
        let text = self.text();
        assert_eq!(self.status, status, "{:?} {text:?}", self.headers);
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{:?}",
            self.headers
        );
        assert!(
            self.header("via").is_some_and(|v| v.contains("switchyard")),
            "no Via: {:?}",
            self.headers
        );
        let reason = http::StatusCode::from_u16(status)
            .expect("status")
            .canonical_reason()
            .expect("reason");
        let line = text.strip_suffix('\n');
        assert!(
            line.is_some_and(|l| l.starts_with(&format!("{status} {reason}")) && !l.contains('\n')),
            "not a one-line text body: {text:?}"
        );
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect to balancer");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// A connection to `addr` from the local address `from` (e.g. 127.0.0.2).
    pub fn open_from(addr: SocketAddr, from: std::net::IpAddr) -> Conn {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .expect("bind the client");
        socket.connect(&addr.into()).expect("connect to balancer");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> &mut Conn {
        self.stream.write_all(bytes).expect("write to balancer");
        self
    }

    /// A GET with `Host: test` on this connection, and its response.
    pub fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read_response()
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) => panic!(
                "read from balancer failed: {e}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    fn take_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(
                self.fill() > 0,
                "connection closed mid-line; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    fn take_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill() > 0,
                "connection closed after {} of {n} body bytes",
                self.buf.len()
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Reads the head only (status line + headers).
    pub fn read_head(&mut self) -> Resp {
        let status_line = self.take_line();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.take_line();
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Resp {
            version,
            status,
            headers,
            body: Vec::new(),
            chunked: false,
        }
    }

    /// Reads one full response to a non-HEAD request.
    pub fn read_response(&mut self) -> Resp {
        self.read_response_for("GET")
    }

    /// Reads one full response, framed as it would be for `method`.
    pub fn read_response_for(&mut self, method: &str) -> Resp {
        let mut r = self.read_head();
        if r.status == 100 {
            return r;
        }
        let no_body = method == "HEAD" || r.status == 204 || r.status == 304 || r.status < 200;
        if no_body {
            return r;
        }
        if r.header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            r.chunked = true;
            loop {
                let size_line = self.take_line();
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                if size == 0 {
                    while !self.take_line().is_empty() {}
                    break;
                }
                let data = self.take_exact(size);
                r.body.extend_from_slice(&data);
                assert_eq!(self.take_line(), "", "chunk not followed by CRLF");
            }
        } else if let Some(cl) = r.header("content-length") {
            let n: usize = cl.parse().expect("content-length");
            r.body = self.take_exact(n);
        } else {
            // Close-delimited.
            while self.fill() > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }

    /// The next response, or `None` if the peer closes (EOF or reset) before sending
    /// a byte of one.
    pub fn read_response_or_close(&mut self) -> Option<Resp> {
        while self.buf.is_empty() {
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read from balancer failed: {e}"),
            }
        }
        Some(self.read_response())
    }

    /// True if the peer closes (EOF or reset) within `within`, with no data first.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        self.stream.set_read_timeout(Some(within)).expect("timeout");
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
            if Instant::now() >= end {
                return false;
            }
        }
    }

    /// Bytes already read from the socket but not consumed by a parse.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Everything the peer sends until it closes.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut b = [0u8; 65536];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read failed: {e}"),
            }
        }
        std::mem::take(&mut self.buf)
    }
}

/// One GET on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    Conn::open(addr).get(path)
}

/// Sends raw bytes on a fresh connection and reads one response.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut c = Conn::open(addr);
    c.send(bytes);
    c.read_response()
}
