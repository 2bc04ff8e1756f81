//! The chunked transfer coding (RFC 9112 7.1), decoded incrementally and strictly.
//!
//! [`Decoder::decode`] takes whatever bytes have arrived and says how many it used and
//! what they held: a run of body data (as a range of the input, so the bytes can be
//! forwarded where they lie), the end of the body, or nothing yet. Framing lines must
//! end in CRLF (a bare LF is refused, as hyper does, because parsers that accept it
//! disagree with those that do not); chunk sizes are at most 16 hex digits; extensions
//! are skipped but bounded per line; trailers must be field lines (a token name, a
//! colon, a value without control bytes: RFC 9112 7.1.2), and are bounded and dropped
//! (the body is re-framed on the way out, and `Trailer` is hop-by-hop).

use std::ops::Range;

/// The largest chunk size accepted.
pub const MAX_CHUNK: u64 = 1 << 62;
/// The longest chunk extension on one size line.
pub const MAX_EXTENSION: usize = 4096;

/// Why a chunked body is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ChunkError {}

/// What a call to [`Decoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes: this range of the input.
    Data(Range<usize>),
    /// The body (trailers included) ended.
    Done,
    /// Every input byte was used; more are needed.
    NeedMore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// Whitespace after the digits, before `;` or CR.
    SizeWs,
    /// A chunk extension, up to CR.
    Ext,
    /// The LF of a size line.
    SizeLf,
    /// Chunk data.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    /// The name of a trailer field, up to its colon.
    TrailerName,
    /// Its value, up to CR.
    TrailerValue,
    TrailerLf,
    /// The LF of the final CRLF.
    EndLf,
    Done,
}

/// The decoding state of one chunked body.
#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
    /// The chunk size being read, then the data bytes left in the chunk.
    size: u64,
    digits: u8,
    ext: usize,
    trailers: usize,
    max_trailers: usize,
}

impl Decoder {
    /// A decoder whose trailer section may be at most `max_trailers` bytes.
    pub fn new(max_trailers: usize) -> Decoder {
        Decoder {
            state: State::Size,
            size: 0,
            digits: 0,
            ext: 0,
            trailers: 0,
            max_trailers,
        }
    }

    /// True once the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True when no chunk is partly read: the last call ended between chunks (so a
    /// body cut here lost no data it had started).
    pub fn at_chunk_boundary(&self) -> bool {
        self.state == State::Size && self.digits == 0
    }

    /// Decodes from `input`: returns the bytes used and what they held.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Step), ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok((i + n, Step::Data(i..i + n)));
            }
            if self.state == State::Done {
                return Ok((i, Step::Done));
            }
            self.byte(input[i])?;
            i += 1;
        }
        if self.state == State::Done {
            return Ok((i, Step::Done));
        }
        Ok((i, Step::NeedMore))
    }

    /// One framing byte.
    fn byte(&mut self, b: u8) -> Result<(), ChunkError> {
        match self.state {
            State::Size => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    self.digits += 1;
                    if self.digits > 16 {
                        return Err(ChunkError("chunk size too large"));
                    }
                    self.size = self.size * 16 + u64::from(d);
                    if self.size > MAX_CHUNK {
                        return Err(ChunkError("chunk size too large"));
                    }
                }
                _ if self.digits == 0 => return Err(ChunkError("invalid chunk size")),
                b' ' | b'\t' => self.state = State::SizeWs,
                b';' => self.state = State::Ext,
                b'\r' => self.state = State::SizeLf,
                _ => return Err(ChunkError("invalid chunk size")),
            },
            State::SizeWs => match b {
                b' ' | b'\t' => {}
                b';' => self.state = State::Ext,
                b'\r' => self.state = State::SizeLf,
                _ => return Err(ChunkError("invalid chunk size line")),
            },
            State::Ext => match b {
                b'\r' => self.state = State::SizeLf,
                b'\n' | 0 => return Err(ChunkError("invalid chunk extension")),
                _ => {
                    self.ext += 1;
                    if self.ext > MAX_EXTENSION {
                        return Err(ChunkError("chunk extension too long"));
                    }
                }
            },
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunk size line not ended by CRLF"));
                }
                self.ext = 0;
                self.digits = 0;
                self.state = if self.size == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                };
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError("chunk data not followed by CRLF"));
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunk data not followed by CRLF"));
                }
                self.state = State::Size;
            }
            State::TrailerStart => match b {
                b'\r' => self.state = State::EndLf,
                _ if is_token(b) => {
                    self.trailer_byte()?;
                    self.state = State::TrailerName;
                }
                _ => return Err(ChunkError("malformed trailer")),
            },
            State::TrailerName => match b {
                b':' => {
                    self.trailer_byte()?;
                    self.state = State::TrailerValue;
                }
                _ if is_token(b) => self.trailer_byte()?,
                _ => return Err(ChunkError("malformed trailer")),
            },
            State::TrailerValue => match b {
                b'\r' => self.state = State::TrailerLf,
                b'\t' | b' '..=b'~' | 0x80..=0xff => self.trailer_byte()?,
                _ => return Err(ChunkError("malformed trailer")),
            },
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkError("malformed trailer"));
                }
                self.trailer_byte()?;
                self.state = State::TrailerStart;
            }
            State::EndLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunked body not ended by CRLF"));
                }
                self.state = State::Done;
            }
            State::Data | State::Done => {}
        }
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailers += 1;
        if self.trailers > self.max_trailers {
            return Err(ChunkError("trailer section too large"));
        }
        Ok(())
    }
}

/// A `tchar` of RFC 9110 5.6.2: what a field name is made of.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Writes the size line of a chunk of `len` bytes (`len` > 0) into `out`.
pub fn size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let d = &digits[at..];
    out[..d.len()].copy_from_slice(d);
    out[d.len()..d.len() + 2].copy_from_slice(b"\r\n");
    &out[..d.len() + 2]
}

/// The end of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes: the body, or the error.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = Decoder::new(1024);
        let mut body = vec![];
        let mut pending: Vec<u8> = vec![];
        let mut used_total = 0;
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                let (used, s) = d.decode(&pending)?;
                if let Step::Data(r) = &s {
                    body.extend_from_slice(&pending[r.clone()]);
                }
                pending.drain(..used);
                used_total += used;
                match s {
                    Step::Done => return Ok((body, used_total)),
                    Step::NeedMore => break,
                    Step::Data(_) => {}
                }
            }
        }
        Err(ChunkError("incomplete"))
    }

    #[test]
    fn decodes_at_any_split() {
        let input =
            b"5\r\nhello\r\n1;ext=\"v\"\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, used) = run(input, step).unwrap();
            assert_eq!(body, b"hello 0123456789abcdef", "step {step}");
            assert_eq!(used, input.len() - 4, "step {step}");
        }
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\nA: b\r\r\n",
            b"fffffffffffffffff\r\n",
            b"5 x\r\n",
            b"-5\r\n",
            b"0x5\r\n",
        ] {
            assert!(run(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_EXTENSION + 1));
        assert!(run(long_ext.as_bytes(), 4096).is_err());
        // Trailers are field lines: not a request line, not obs-fold, no control bytes.
        for bad in [
            &b"0\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
            b"0\r\nnocolon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nA b: c\r\n\r\n",
            b"0\r\nA : c\r\n\r\n",
            b"0\r\nA: b\r\n c\r\n\r\n",
            b"0\r\nA: b\x01\r\n\r\n",
            b"0\r\nA: b\x7f\r\n\r\n",
        ] {
            assert!(run(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let big_trailer = format!("0\r\nA: {}\r\n\r\n", "v".repeat(2000));
        assert!(run(big_trailer.as_bytes(), 4096).is_err());
    }

    #[test]
    fn trailer_fields_are_read_and_dropped() {
        let input = b"1\r\nx\r\n0\r\nX-T: 1\r\nEmpty:\r\nSp:  a\tb \r\nUtf8: caf\xc3\xa9\r\n\r\n";
        assert_eq!(run(input, 1).unwrap(), (b"x".to_vec(), input.len()));
    }

    #[test]
    fn whitespace_before_extension_or_line_end() {
        assert_eq!(run(b"3 ;a\r\nabc\r\n0 \r\n\r\n", 1).unwrap().0, b"abc");
    }

    #[test]
    fn size_lines() {
        let mut buf = [0u8; 18];
        assert_eq!(size_line(1, &mut buf), b"1\r\n");
        assert_eq!(size_line(255, &mut buf), b"ff\r\n");
        assert_eq!(size_line(65536, &mut buf), b"10000\r\n");
    }
}
