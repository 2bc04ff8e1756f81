//! `response::parse` on arbitrary bytes: never panics; parsing in two reads gives what
//! one read gives; and a head it accepts is relayed by `encode::response_head` as a
//! head it accepts again, with the same status.
//!
//! The first byte picks the split point, HEAD or not, and the encoder's options; the
//! rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::http1::Version;
use switchyard::http1::encode::{self, OutFraming, ResponseEdits};
use switchyard::http1::response::{self, ResponseHead, Status};

fn same(a: &ResponseHead, b: &ResponseHead) -> bool {
    a.status == b.status
        && a.reason == b.reason
        && a.version == b.version
        && a.headers == b.headers
        && a.len == b.len
        && a.framing == b.framing
        && a.connection == b.connection
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let to_head = pick & 1 != 0;
    let mut whole = ResponseHead::default();
    let one_read = response::parse(input, 0, to_head, &mut whole);

    let at = usize::from(pick) * (input.len() + 1) / 256;
    let mut split = ResponseHead::default();
    let two_reads = match response::parse(&input[..at], 0, to_head, &mut split) {
        Ok(Status::Partial { scanned }) => {
            assert!(scanned <= at, "scanned {scanned} past the {at} bytes read");
            response::parse(input, scanned, to_head, &mut split)
        }
        // Refused early (not HTTP) or complete in the first read: the whole must agree.
        first => first,
    };
    // Bytes that are not HTTP are refused as soon as five of them are in; a shorter
    // first read waits, and the second refuses them then.
    assert_eq!(one_read, two_reads, "split at {at}");
    if one_read != Ok(Status::Complete) {
        return;
    }
    assert!(same(&whole, &split), "split at {at}:\n{whole:?}\n{split:?}");
    assert!(whole.len <= input.len());

    let framing = match pick >> 2 & 3 {
        0 | 3 => OutFraming::AsIs,
        1 => OutFraming::Chunked,
        _ => OutFraming::Close,
    };
    let edits = ResponseEdits {
        framing,
        client: if pick & 16 != 0 {
            Version::Http10
        } else {
            Version::Http11
        },
        close: pick & 32 != 0,
        set_cookie: (pick & 64 != 0).then_some(&b"sy=b1; Path=/"[..]),
        tunnel: pick & 128 != 0,
    };
    let mut out = Vec::new();
    encode::response_head(&mut out, input, &whole, &edits);
    // The relayed head gains up to 4 lines (Via, Set-Cookie, framing, Connection): one
    // already at our own parser's line limit is not something we would read back, and a
    // client's limits are its own.
    if whole.headers.len() + 4 > response::MAX_HEADERS {
        return;
    }
    let mut again = ResponseHead::default();
    let reparsed = response::parse(&out, 0, to_head, &mut again);
    assert_eq!(
        reparsed,
        Ok(Status::Complete),
        "relayed head refused: {:?}\nfrom {:?}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(input)
    );
    assert_eq!(again.len, out.len(), "one head, nothing after it");
    assert_eq!(again.status, whole.status);
});
