//! Content-Length and Transfer-Encoding, read once, for both directions.
//!
//! Where a body ends is the one fact both ends of a proxied connection must agree on,
//! so these readings are strict (RFC 9112 6): a Content-Length is digits only, and
//! several of them (lines or list elements) must all say the same number; a
//! Transfer-Encoding is a list of codings across all its lines, and the only coding
//! we relay is a single `chunked` at the end. What each direction does with a
//! reading (400/501 for a request, 502 for a response) is decided by its parser.

use super::{Header, Known};

/// The largest Content-Length accepted (no arithmetic on it can overflow).
pub const MAX_CONTENT_LENGTH: u64 = 1 << 62;

/// Why a message's framing headers cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthError {
    /// Not a plain decimal number (sign, space inside, empty, too large).
    Invalid,
    /// Two Content-Length values that differ.
    Differing,
}

/// The message's Content-Length, if it has one: every line and list element must
/// agree.
pub fn content_length(buf: &[u8], headers: &[Header]) -> Result<Option<u64>, LengthError> {
    let mut found: Option<u64> = None;
    for h in headers.iter().filter(|h| h.known == Known::ContentLength) {
        for element in h.value.of(buf).split(|&b| b == b',') {
            let n = parse_decimal(element.trim_ascii()).ok_or(LengthError::Invalid)?;
            match found {
                Some(m) if m != n => return Err(LengthError::Differing),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    // Leading zeros are allowed, and do not count against the length.
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len() - 1);
    let digits = &digits[first..];
    if digits.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    (n <= MAX_CONTENT_LENGTH).then_some(n)
}

/// What a message's Transfer-Encoding lines say, taken together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// No Transfer-Encoding header.
    Absent,
    /// Exactly one coding, `chunked`.
    Chunked,
    /// `chunked` last, after other codings (`gzip, chunked`): framed, but a coding we
    /// would have to pass on.
    ChunkedAfterOthers,
    /// The final coding is not `chunked` (or `chunked` appears twice, or the list is
    /// empty): the body's end cannot be found.
    NotChunkedLast,
}

/// Reads every Transfer-Encoding line of `headers` as one list.
pub fn transfer_coding(buf: &[u8], headers: &[Header]) -> Coding {
    let mut any_header = false;
    let mut count = 0usize;
    let mut chunked_at: Option<usize> = None;
    let mut chunked_twice = false;
    for h in headers
        .iter()
        .filter(|h| h.known == Known::TransferEncoding)
    {
        any_header = true;
        for element in h.value.of(buf).split(|&b| b == b',') {
            let coding = element.trim_ascii();
            if coding.is_empty() {
                continue;
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked_twice |= chunked_at.is_some();
                chunked_at = Some(count);
            }
            count += 1;
        }
    }
    if !any_header {
        return Coding::Absent;
    }
    match chunked_at {
        Some(at) if !chunked_twice && at + 1 == count => {
            if count == 1 {
                Coding::Chunked
            } else {
                Coding::ChunkedAfterOthers
            }
        }
        _ => Coding::NotChunkedLast,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Span;
    use super::*;

    /// Headers over `buf` = "name: value\n" lines.
    fn parse(text: &str) -> (Vec<u8>, Vec<Header>) {
        let buf = text.as_bytes().to_vec();
        let mut headers = vec![];
        let mut at = 0u32;
        for line in text.split_inclusive('\n') {
            let (name, value) = line.trim_end().split_once(':').unwrap();
            let vstart = at + name.len() as u32 + 1;
            let vtrim = value.len() - value.trim_start().len();
            headers.push(Header {
                name: Span {
                    start: at,
                    end: at + name.len() as u32,
                },
                value: Span {
                    start: vstart + vtrim as u32,
                    end: vstart + value.len() as u32,
                },
                known: Known::of(name.as_bytes()),
                named_by_connection: false,
            });
            at += line.len() as u32;
        }
        (buf, headers)
    }

    #[test]
    fn content_lengths() {
        let cl = |t: &str| {
            let (b, h) = parse(t);
            content_length(&b, &h)
        };
        assert_eq!(cl("x: 1\n"), Ok(None));
        assert_eq!(cl("content-length: 12\n"), Ok(Some(12)));
        assert_eq!(cl("Content-Length: 007\n"), Ok(Some(7)));
        assert_eq!(cl("content-length: 5\ncontent-length: 5\n"), Ok(Some(5)));
        assert_eq!(cl("content-length: 5, 5\n"), Ok(Some(5)));
        assert_eq!(
            cl("content-length: 5\ncontent-length: 6\n"),
            Err(LengthError::Differing)
        );
        for bad in ["+5", "-1", "", "5 5", "0x10", "1e3", "99999999999999999999"] {
            assert_eq!(
                cl(&format!("content-length: {bad}\n")),
                Err(LengthError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(cl("content-length: 5,\n"), Err(LengthError::Invalid));
        let zeros = format!("content-length: {}12\n", "0".repeat(60));
        assert_eq!(cl(&zeros), Ok(Some(12)));
        assert_eq!(cl("content-length: 00\n"), Ok(Some(0)));
    }

    #[test]
    fn codings() {
        let te = |t: &str| {
            let (b, h) = parse(t);
            transfer_coding(&b, &h)
        };
        assert_eq!(te("x: 1\n"), Coding::Absent);
        assert_eq!(te("transfer-encoding: chunked\n"), Coding::Chunked);
        assert_eq!(te("Transfer-Encoding: CHUNKED\n"), Coding::Chunked);
        assert_eq!(te("transfer-encoding: , chunked\n"), Coding::Chunked);
        assert_eq!(
            te("transfer-encoding: gzip, chunked\n"),
            Coding::ChunkedAfterOthers
        );
        assert_eq!(
            te("transfer-encoding: gzip\ntransfer-encoding: chunked\n"),
            Coding::ChunkedAfterOthers
        );
        assert_eq!(
            te("transfer-encoding: chunked, gzip\n"),
            Coding::NotChunkedLast
        );
        assert_eq!(
            te("transfer-encoding: chunked\ntransfer-encoding: chunked\n"),
            Coding::NotChunkedLast
        );
        assert_eq!(te("transfer-encoding: \n"), Coding::NotChunkedLast);
        assert_eq!(
            te("transfer-encoding: chunked;x=1\n"),
            Coding::NotChunkedLast
        );
        assert_eq!(te("transfer-encoding: identity\n"), Coding::NotChunkedLast);
    }
}
