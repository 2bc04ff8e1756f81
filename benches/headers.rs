//! Cost of the request-head work done for every proxied request: hop-by-hop removal,
//! X-Forwarded-For / -Proto, Via (requests and responses), and the framing sniffer's
//! pass over a typical head.
//!
//! Two request shapes: what wrk and most clients send (a handful of headers, no
//! Connection, no forwarding headers) and a browser-like head behind another proxy
//! (Connection naming a header, an existing X-Forwarded-For and Via to join).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use switchyard::proxy::headers::{rewrite_request, rewrite_response};
use switchyard::server::sniff::Sniffer;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    m
}

fn bench(c: &mut Criterion) {
    let client = HeaderValue::from_static("10.1.2.3");
    let proto = HeaderValue::from_static("http");
    let plain = map(&[
        ("host", "shop.example"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
    ]);
    let browser = map(&[
        ("host", "shop.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/140.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("connection", "keep-alive, x-trace"),
        ("x-trace", "abc"),
        ("x-forwarded-for", "203.0.113.9"),
        ("via", "1.1 edge"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
    ]);
    let response = map(&[
        ("content-type", "text/plain"),
        ("content-length", "5"),
        ("date", "Mon, 23 Nov 2026 08:00:00 GMT"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
    ]);

    let mut g = c.benchmark_group("head_rewrite");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("request_plain", |b| {
        b.iter_batched_ref(
            || plain.clone(),
            |h| rewrite_request(black_box(h), &client, &proto),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("request_browser_behind_proxy", |b| {
        b.iter_batched_ref(
            || browser.clone(),
            |h| rewrite_request(black_box(h), &client, &proto),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("response", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |h| rewrite_response(black_box(h)),
            criterion::BatchSize::SmallInput,
        )
    });
    let head = b"GET /index.html?x=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";
    g.bench_function("sniff_plain_head", |b| {
        let mut s = Sniffer::new();
        let mut i = 0u64;
        b.iter(|| {
            s.feed(black_box(head));
            i += 1;
            black_box(s.was_ambiguous(i - 1))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
