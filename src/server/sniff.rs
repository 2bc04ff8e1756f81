//! Follows the HTTP/1.1 request framing of the client's byte stream, beside hyper.
//!
//! hyper frames a request carrying both Content-Length and Transfer-Encoding by the
//! latter and silently drops the Content-Length (RFC 9112 §6.3 allows that), so the
//! request path cannot see the ambiguity the contract says must be a 400. This sniffer
//! sees every byte hyper reads (it sits in the socket wrapper), finds each request head,
//! notes whether it carried both headers, and skips the body by the same rules hyper
//! uses (Transfer-Encoding, else Content-Length, else none). The proxy asks it, per
//! request in order, whether that request was ambiguous.
//!
//! It does not validate: anything hyper rejects closes the connection anyway. It
//! looks only at the first bytes of each header line, and skips bodies without
//! reading them byte by byte. Where it cannot be sure to read the framing as hyper
//! does (a bare LF inside chunked framing, a Content-Length it cannot read) it stops
//! and reports [`Sniffer::lost_sync`]; the proxy then closes the connection after the
//! current response, so nothing further on it goes unchecked. After an upgrade it
//! must be told to stop.

use std::collections::VecDeque;

const CL: &[u8] = b"content-length:";
const TE: &[u8] = b"transfer-encoding:";
/// Bytes of a header line kept for matching (the longest name we look for).
const KEEP: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Inside a head; `started` once the request line has begun.
    Head { started: bool },
    /// A fixed-length body: bytes left.
    Fixed(u64),
    /// Reading a chunk-size line's digits.
    ChunkSize,
    /// Rest of a chunk-size line after the digits (whitespace, extensions), to its CR.
    ChunkExt,
    /// The LF ending a chunk-size line.
    ChunkSizeLf,
    /// Chunk data: bytes left.
    ChunkData(u64),
    /// The CR after chunk data.
    ChunkDataCr,
    /// The LF after chunk data.
    ChunkDataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer line, up to its CR.
    TrailerLine,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The LF ending the trailer section (and the message).
    TrailersEndLf,
    /// Stopped: framing we cannot follow; nothing more is tracked.
    Off,
    /// Stopped on purpose: the connection became a tunnel.
    Tunnel,
}

/// Per-connection framing follower.
#[derive(Debug)]
pub struct Sniffer {
    state: State,
    line: [u8; KEEP],
    line_len: usize,
    /// The current line was longer than `KEEP`.
    line_truncated: bool,
    /// Whether the current line is empty so far (for head and trailer ends).
    line_empty: bool,
    chunk_size: u64,
    chunk_digits: bool,
    has_cl: bool,
    cl_value: Option<u64>,
    has_te: bool,
    /// Index of the head being read (0-based).
    head_index: u64,
    /// Indices of heads that carried both Content-Length and Transfer-Encoding.
    ambiguous: VecDeque<u64>,
}

impl Default for Sniffer {
    fn default() -> Self {
        Sniffer::new()
    }
}

impl Sniffer {
    pub fn new() -> Sniffer {
        Sniffer {
            state: State::Head { started: false },
            line: [0; KEEP],
            line_len: 0,
            line_truncated: false,
            line_empty: true,
            chunk_size: 0,
            chunk_digits: false,
            has_cl: false,
            cl_value: None,
            has_te: false,
            head_index: 0,
            ambiguous: VecDeque::new(),
        }
    }

    /// True if request `index` (0-based, in arrival order) was ambiguous. Forgets
    /// everything before `index`.
    pub fn was_ambiguous(&mut self, index: u64) -> bool {
        while let Some(&front) = self.ambiguous.front() {
            if front < index {
                self.ambiguous.pop_front();
            } else {
                return front == index;
            }
        }
        false
    }

    /// True once the sniffer could not follow the framing (see the module docs).
    pub fn lost_sync(&self) -> bool {
        self.state == State::Off
    }

    /// True between requests: the last one was read whole (head and body) and nothing of
    /// the next has arrived.
    pub fn between_messages(&self) -> bool {
        self.state == State::Head { started: false }
    }

    /// True while part of a request head has arrived but not its end.
    pub fn head_started(&self) -> bool {
        self.state == State::Head { started: true }
    }

    /// Stops tracking (the connection became a tunnel).
    pub fn stop(&mut self) {
        self.state = State::Tunnel;
    }

    /// Feeds bytes read from the client, in order.
    pub fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            match self.state {
                State::Off | State::Tunnel => return,
                State::Fixed(n) => {
                    let take = (buf.len() as u64).min(n);
                    buf = &buf[take as usize..];
                    self.state = if take == n {
                        self.next_head()
                    } else {
                        State::Fixed(n - take)
                    };
                }
                State::Head { started } => {
                    // A line at a time: find its end, keep only what matters of it.
                    match buf.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            self.take_line_bytes(&buf[..i], started);
                            buf = &buf[i + 1..];
                            let started = self.state == State::Head { started: true };
                            self.end_head_line(started);
                        }
                        None => {
                            self.take_line_bytes(buf, started);
                            buf = &[];
                        }
                    }
                }
                State::ChunkData(n) => {
                    let take = (buf.len() as u64).min(n);
                    buf = &buf[take as usize..];
                    self.state = if take == n {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData(n - take)
                    };
                }
                _ => {
                    let b = buf[0];
                    buf = &buf[1..];
                    self.byte(b);
                }
            }
        }
    }

    /// Adds bytes of the current head line (no LF). Only lines that may be
    /// Content-Length or Transfer-Encoding (they start with c or t) are kept, up to
    /// `KEEP` bytes; the rest only count as "not empty".
    fn take_line_bytes(&mut self, bytes: &[u8], started: bool) {
        let mut any = false;
        for &b in bytes {
            if b == b'\r' {
                continue;
            }
            any = true;
            if self.line_len > 0 && !matches!(self.line[0], b'c' | b't') {
                break;
            }
            if self.line_len < KEEP {
                self.line[self.line_len] = b.to_ascii_lowercase();
                self.line_len += 1;
            } else {
                self.line_truncated = true;
                break;
            }
        }
        if any {
            self.line_empty = false;
            if !started {
                self.state = State::Head { started: true };
            }
        }
    }

    fn next_head(&mut self) -> State {
        self.head_index += 1;
        self.has_cl = false;
        self.has_te = false;
        self.cl_value = None;
        self.reset_line();
        State::Head { started: false }
    }

    fn reset_line(&mut self) {
        self.line_len = 0;
        self.line_truncated = false;
        self.line_empty = true;
    }

    fn byte(&mut self, b: u8) {
        match self.state {
            State::Head { started } => {
                if b == b'\n' {
                    self.end_head_line(started);
                } else if b != b'\r' {
                    if self.line_len < KEEP {
                        self.line[self.line_len] = b.to_ascii_lowercase();
                        self.line_len += 1;
                    } else {
                        self.line_truncated = true;
                    }
                    self.line_empty = false;
                    if !started {
                        self.state = State::Head { started: true };
                    }
                }
            }
            State::ChunkSize => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.chunk_size = self.chunk_size.saturating_mul(16).saturating_add(d);
                    self.chunk_digits = true;
                }
                b'\r' => self.state = State::ChunkSizeLf,
                b';' | b' ' | b'\t' => self.state = State::ChunkExt,
                _ => self.state = State::Off,
            },
            State::ChunkExt => match b {
                b'\r' => self.state = State::ChunkSizeLf,
                b'\n' => self.state = State::Off,
                _ => {}
            },
            State::ChunkSizeLf => {
                if b == b'\n' {
                    self.end_chunk_size();
                } else {
                    self.state = State::Off;
                }
            }
            State::ChunkDataCr => {
                self.state = if b == b'\r' {
                    State::ChunkDataLf
                } else {
                    State::Off
                };
            }
            State::ChunkDataLf => {
                if b == b'\n' {
                    self.start_chunk();
                } else {
                    self.state = State::Off;
                }
            }
            State::TrailerStart => {
                self.state = match b {
                    b'\r' => State::TrailersEndLf,
                    b'\n' => State::Off,
                    _ => State::TrailerLine,
                };
            }
            State::TrailerLine => match b {
                b'\r' => self.state = State::TrailerLf,
                b'\n' => self.state = State::Off,
                _ => {}
            },
            State::TrailerLf => {
                self.state = if b == b'\n' {
                    State::TrailerStart
                } else {
                    State::Off
                };
            }
            State::TrailersEndLf => {
                self.state = if b == b'\n' {
                    self.next_head()
                } else {
                    State::Off
                };
            }
            State::Fixed(_) | State::ChunkData(_) | State::Off | State::Tunnel => {}
        }
    }

    fn end_head_line(&mut self, started: bool) {
        if !started {
            // Empty lines before a request line are skipped (as hyper does).
            self.reset_line();
            return;
        }
        if !self.line_empty {
            let line = &self.line[..self.line_len];
            if line.starts_with(CL) {
                self.has_cl = true;
                if self.cl_value.is_none() {
                    self.cl_value = parse_len(&line[CL.len()..], self.line_truncated);
                }
            } else if line.starts_with(TE) {
                self.has_te = true;
            }
            self.reset_line();
            return;
        }
        // End of the head: decide the body.
        if self.has_cl && self.has_te {
            self.ambiguous.push_back(self.head_index);
        }
        self.state = if self.has_te {
            self.start_chunk();
            self.state
        } else if !self.has_cl {
            self.next_head()
        } else {
            match self.cl_value {
                Some(0) => self.next_head(),
                Some(n) => State::Fixed(n),
                // A Content-Length we could not read (invalid, or longer than the kept
                // line prefix): hyper decides; stop rather than guess.
                None => State::Off,
            }
        };
    }

    fn start_chunk(&mut self) {
        self.chunk_size = 0;
        self.chunk_digits = false;
        self.state = State::ChunkSize;
    }

    fn end_chunk_size(&mut self) {
        if !self.chunk_digits {
            self.state = State::Off; // malformed: hyper rejects it
        } else if self.chunk_size == 0 {
            self.state = State::TrailerStart;
        } else {
            self.state = State::ChunkData(self.chunk_size);
        }
    }
}

/// Parses the start of a Content-Length value (leading spaces, then digits); `None`
/// if there are no digits or they may continue past the kept prefix.
fn parse_len(v: &[u8], truncated: bool) -> Option<u64> {
    let v = v.trim_ascii_start();
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (truncated && digits == v.len()) {
        return None;
    }
    std::str::from_utf8(&v[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parts: &[&[u8]]) -> Sniffer {
        let mut s = Sniffer::new();
        for p in parts {
            s.feed(p);
        }
        s
    }

    #[test]
    fn plain_requests_are_not_ambiguous() {
        let mut s =
            feed_all(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"]);
        assert!(!s.was_ambiguous(0));
        assert!(!s.was_ambiguous(1));
        assert_eq!(s.head_index, 2);
    }

    #[test]
    fn cl_with_te_is_flagged_in_either_order_and_case() {
        let mut s = feed_all(&[
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\ncontent-length:3\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            b"GET /ok HTTP/1.1\r\n\r\n",
        ]);
        assert!(s.was_ambiguous(0));
        assert!(s.was_ambiguous(1));
        assert!(!s.was_ambiguous(2));
    }

    #[test]
    fn bodies_are_skipped_so_later_heads_are_found() {
        // A body that looks like a head must not be read as one.
        let body = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut req =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        req.extend_from_slice(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nab\r\n\r\n0\r\nX-T: 1\r\n\r\n");
        req.extend_from_slice(
            b"GET / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        // Byte by byte and all at once give the same answers.
        for split in [1, req.len()] {
            let mut s = Sniffer::new();
            for piece in req.chunks(split) {
                s.feed(piece);
            }
            assert!(!s.was_ambiguous(0), "split {split}");
            assert!(!s.was_ambiguous(1), "split {split}");
            assert!(s.was_ambiguous(2), "split {split}");
            assert_eq!(s.head_index, 3);
        }
    }

    #[test]
    fn leading_empty_lines_and_bare_lf_heads() {
        let mut s = feed_all(&[
            b"\r\n\r\nPOST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n0\r\n\r\n",
        ]);
        assert!(s.was_ambiguous(0));
        assert!(!s.lost_sync());
    }

    #[test]
    fn bare_lf_in_chunked_framing_loses_sync() {
        let bodies: [&[u8]; 5] = [
            b"0\n\n",
            b"0\r\n\n",
            b"0\r\nX: 1\n\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"3;x\n",
        ];
        for body in bodies {
            let mut s = Sniffer::new();
            s.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
            s.feed(body);
            assert!(s.lost_sync(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn long_content_length_values() {
        let mut s = Sniffer::new();
        let zeros = "0".repeat(60);
        s.feed(format!("POST / HTTP/1.1\r\nContent-Length: {zeros}2\r\n\r\nab").as_bytes());
        assert!(!s.lost_sync());
        assert_eq!(s.head_index, 1);
        let long = "0".repeat(200);
        s.feed(format!("POST / HTTP/1.1\r\nContent-Length: {long}\r\n\r\n").as_bytes());
        assert!(s.lost_sync(), "a value past the kept prefix is not guessed");
    }

    #[test]
    fn head_started_tracks_partial_heads() {
        let mut s = Sniffer::new();
        assert!(!s.head_started());
        s.feed(b"GET / HTTP/1.1\r\nHo");
        assert!(s.head_started());
        s.feed(b"st: a\r\n\r\n");
        assert!(!s.head_started());
    }

    #[test]
    fn stops_on_what_it_cannot_follow() {
        let mut s = feed_all(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]);
        assert!(s.lost_sync());
        s.feed(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(!s.was_ambiguous(1));
    }
}
