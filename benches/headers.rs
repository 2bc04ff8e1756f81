//! Cost of the head work done for every proxied HTTP/1 request: parsing the client's
//! head once (validation and framing), writing it out edited for the backend
//! (hop-by-hop removal, X-Forwarded-For / -Proto, Via), and the same for the response.
//!
//! Two request shapes: what wrk and most clients send (a handful of headers, no
//! Connection, no forwarding headers) and a browser-like head behind another proxy
//! (Connection naming a header, an existing X-Forwarded-For and Via to join).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::http1::encode::{self, OutFraming, RequestEdits, ResponseEdits};
use switchyard::http1::request::{self, Limits, RequestHead};
use switchyard::http1::response::{self, ResponseHead};
use switchyard::http1::{Framing, Version};

const LIMITS: Limits = Limits {
    request_line: 8192,
    header_section: 65536,
    headers: 100,
};

fn bench(c: &mut Criterion) {
    let plain: &[u8] =
        b"GET /index.html?x=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";
    let browser: &[u8] = b"GET /catalogue/item/42?ref=home HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/140.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-GB,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive, x-trace\r\nX-Trace: abc\r\nX-Forwarded-For: 203.0.113.9\r\nVia: 1.1 edge\r\nCookie: session=0123456789abcdef; theme=dark\r\n\r\n";
    let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nDate: Mon, 23 Nov 2026 08:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";

    let mut g = c.benchmark_group("head");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, bytes) in [
        ("request_plain", plain),
        ("request_browser_behind_proxy", browser),
    ] {
        g.bench_function(name, |b| {
            let mut head = RequestHead::default();
            let mut out = Vec::with_capacity(1024);
            b.iter(|| {
                request::parse(black_box(bytes), 0, &LIMITS, &mut head).expect("parses");
                out.clear();
                let edits = RequestEdits {
                    client: b"10.1.2.3",
                    proto: b"http",
                    default_host: b"backend:80",
                    tunnel: false,
                    framing: Framing::None,
                };
                encode::request_head(&mut out, bytes, &head, &edits);
                black_box(out.len())
            })
        });
    }
    g.bench_function("response", |b| {
        let mut head = ResponseHead::default();
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            response::parse(black_box(resp), 0, false, &mut head).expect("parses");
            out.clear();
            let edits = ResponseEdits {
                framing: OutFraming::AsIs,
                client: Version::Http11,
                close: false,
                set_cookie: None,
                tunnel: false,
            };
            encode::response_head(&mut out, resp, &head, &edits);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
