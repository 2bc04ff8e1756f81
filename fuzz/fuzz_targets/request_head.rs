//! `request::parse` on arbitrary bytes: never panics; parsing in two reads (the
//! second resuming from the first's `scanned`) gives what one read gives; and a head
//! it accepts is forwarded by `encode::request_head` as a head it accepts again, with
//! the same method and body framing. `redirect_https`'s Location for it never panics,
//! and is `https://` plus visible ASCII only (nothing from the client can end the
//! header or point it at another scheme).
//!
//! The first byte picks the split point and the encoder's options; the rest is the
//! stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::http1::encode::{self, RequestEdits};
use switchyard::http1::request::{self, Limits, RequestHead, Status, Target};

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    request_line: 256,
    header_section: 1024,
    headers: 16,
};

/// Room for the headers the encoder adds, when the forwarded head is read back.
const ROOMY: Limits = Limits {
    request_line: 4096,
    header_section: 16 * 1024,
    headers: 64,
};

fn same(a: &RequestHead, b: &RequestHead) -> bool {
    a.method == b.method
        && a.method_span == b.method_span
        && a.target == b.target
        && a.form == b.form
        && a.version == b.version
        && a.headers == b.headers
        && a.len == b.len
        && a.framing == b.framing
        && a.connection == b.connection
        && a.host == b.host
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let mut whole = RequestHead::default();
    let one_read = request::parse(input, 0, &LIMITS, &mut whole);

    // The same bytes in two reads, split where `pick` says.
    let at = usize::from(pick) * (input.len() + 1) / 256;
    let mut split = RequestHead::default();
    let two_reads = match request::parse(&input[..at], 0, &LIMITS, &mut split) {
        Ok(Status::Partial { scanned }) => {
            assert!(scanned <= at, "scanned {scanned} past the {at} bytes read");
            request::parse(input, scanned, &LIMITS, &mut split)
        }
        // A head complete (or refused) in the first read: the whole must agree.
        first => first,
    };
    assert_eq!(one_read, two_reads, "split at {at}");
    if one_read != Ok(Status::Complete) {
        return;
    }
    assert!(same(&whole, &split), "split at {at}:\n{whole:?}\n{split:?}");
    assert!(whole.len <= input.len());

    let port = if pick & 4 == 0 { 443 } else { 8443 };
    if let Some(Ok(to)) = switchyard::proxy::redirect::location(&whole, input, port) {
        assert!(to.starts_with("https://"), "{to:?}");
        assert!(to.bytes().all(|b| b.is_ascii_graphic()), "{to:?}");
        let authority = &to["https://".len()..];
        let host = authority.split('/').next().unwrap_or("");
        assert!(!host.is_empty() && !host.contains('@'), "{to:?}");
    }

    // Forwarded, it is a head we accept, for the same request.
    let mut out = Vec::new();
    let edits = RequestEdits {
        client: b"192.0.2.7",
        proto: if pick & 1 == 0 { b"http" } else { b"https" },
        default_host: b"backend.internal:8080",
        tunnel: pick & 2 != 0,
        framing: whole.framing,
    };
    encode::request_head(&mut out, input, &whole, &edits);
    let mut again = RequestHead::default();
    let reparsed = request::parse(&out, 0, &ROOMY, &mut again);
    assert_eq!(
        reparsed,
        Ok(Status::Complete),
        "forwarded head refused: {:?}\nfrom {:?}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(input)
    );
    assert_eq!(again.len, out.len(), "one head, nothing after it");
    assert_eq!(again.method, whole.method);
    assert_eq!(again.framing, whole.framing);
    assert!(matches!(
        again.form,
        Target::Origin | Target::Asterisk | Target::Authority
    ));
});
