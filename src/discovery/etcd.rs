//! etcd discovery: every key under a prefix is a backend (etcd v3).
//!
//! It speaks etcd's JSON gateway (`POST /v3/kv/range`, `POST /v3/watch`, keys in
//! base64) over our HTTP/1.1 client stack (hyper), not gRPC: the v3 API is the same,
//! and a gRPC client would add a large dependency tree for two calls. The set is read
//! whole (range) on start and after every watch restart, then kept up to date by the
//! watch's events from the next revision on; each change reports the whole set. When
//! etcd cannot be reached, or the watch ends, the error is reported (the last known
//! set stays in service) and the range + watch start again after a backoff, trying
//! each endpoint in turn.
//!
//! A key's value is `HOST:PORT[,weight=N]` or `{"address": "HOST:PORT", "weight": N}`;
//! a host name is resolved here (in the loader, never in a worker). A value that does
//! not parse is skipped with a log line.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Entry, Kind, Source, Update, backoff};

/// How long one call (connect + answer head, or a whole range) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The most a range answer or one watch message may hold.
const MAX_MESSAGE: usize = 64 << 20;
/// A watch that sends nothing (not even the progress notifications it asks for,
/// every 10 min by etcd's default) for this long is taken for a dead connection
/// and started again.
const WATCH_SILENCE: Duration = Duration::from_secs(15 * 60);

/// Follows one etcd source forever, reporting on `tx` (until the receiver is gone).
pub async fn watch(index: usize, source: Source, tx: mpsc::UnboundedSender<Update>) {
    let Kind::Etcd { endpoints, prefix } = &source.kind else {
        return;
    };
    let mut failures = 0u32;
    let mut turn = 0usize;
    loop {
        let Some(endpoint) = endpoints.get(turn % endpoints.len().max(1)) else {
            return; // validation never lets an empty list through
        };
        let why = follow(index, endpoint, prefix, source.weight, &tx, &mut failures).await;
        let update = Update {
            source: index,
            result: Err(format!("{endpoint}: {why}")),
        };
        if tx.send(update).is_err() {
            return;
        }
        failures += 1;
        turn += 1;
        tokio::time::sleep(backoff(failures - 1)).await;
    }
}

/// Range + watch on one endpoint until something fails; returns why.
async fn follow(
    index: usize,
    endpoint: &str,
    prefix: &str,
    weight: u32,
    tx: &mpsc::UnboundedSender<Update>,
    failures: &mut u32,
) -> String {
    let range = serde_json::json!({
        "key": B64.encode(prefix),
        "range_end": B64.encode(prefix_end(prefix.as_bytes())),
    });
    let body =
        match tokio::time::timeout(CALL_TIMEOUT, call(endpoint, "/v3/kv/range", &range)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return e,
            Err(_) => return "no answer in time".into(),
        };
    let body = http_body_util::Limited::new(body, MAX_MESSAGE);
    let body = match tokio::time::timeout(CALL_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return e.to_string(),
        Err(_) => return "no answer in time".into(),
    };
    let range: RangeAnswer = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return format!("unexpected range answer: {e}"),
    };
    let mut kvs: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for kv in range.kvs {
        if let (Some(k), Some(v)) = (decode(&kv.key), decode(&kv.value)) {
            kvs.insert(k, v);
        }
    }
    if send_set(index, &kvs, weight, tx).await.is_err() {
        return "stopped".into();
    }
    *failures = 0;
    let revision: i64 = range.header.revision.parse().unwrap_or(0);
    let Some(next) = revision.checked_add(1) else {
        return format!("unexpected revision {revision}");
    };
    let watch = serde_json::json!({
        "create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix.as_bytes())),
            "start_revision": next.to_string(),
            "progress_notify": true,
        }
    });
    let mut body =
        match tokio::time::timeout(CALL_TIMEOUT, call(endpoint, "/v3/watch", &watch)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return e,
            Err(_) => return "no answer in time".into(),
        };
    // The watch answers a stream of JSON objects, one per message.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(WATCH_SILENCE, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => return format!("watch: {e}"),
            Ok(None) => return "the watch ended".into(),
            Err(_) => return format!("the watch was silent for {WATCH_SILENCE:?}"),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        if buf.len() > MAX_MESSAGE {
            return "a watch message over 64 MiB".into();
        }
        let mut consumed = 0;
        let mut changed = false;
        let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<WatchMessage>();
        loop {
            match stream.next() {
                Some(Ok(m)) => {
                    consumed = stream.byte_offset();
                    if let Some(e) = m.error {
                        return format!("watch: {}", e.message.unwrap_or_default());
                    }
                    let Some(r) = m.result else { continue };
                    if r.canceled {
                        return format!(
                            "watch canceled: {}",
                            r.cancel_reason.unwrap_or_else(|| "no reason given".into())
                        );
                    }
                    for ev in r.events {
                        let Some(k) = decode(&ev.kv.key) else {
                            continue;
                        };
                        if ev.kind.as_deref() == Some("DELETE") {
                            changed |= kvs.remove(&k).is_some();
                        } else if let Some(v) = decode(&ev.kv.value) {
                            changed |= kvs.insert(k, v.clone()) != Some(v);
                        }
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return format!("unexpected watch message: {e}"),
                None => break,
            }
        }
        buf.drain(..consumed);
        if changed && send_set(index, &kvs, weight, tx).await.is_err() {
            return "stopped".into();
        }
    }
}

/// Reports the set made of `kvs` (values parsed and resolved).
async fn send_set(
    index: usize,
    kvs: &BTreeMap<Vec<u8>, Vec<u8>>,
    weight: u32,
    tx: &mpsc::UnboundedSender<Update>,
) -> Result<(), ()> {
    let mut entries = Vec::with_capacity(kvs.len());
    for (k, v) in kvs {
        match entry(v, weight).await {
            Ok(e) => entries.push(e),
            Err(why) => tracing::warn!(
                key = %String::from_utf8_lossy(k),
                "etcd discovery: skipping the key: {why}"
            ),
        }
    }
    tx.send(Update {
        source: index,
        result: Ok(entries),
    })
    .map_err(|_| ())
}

/// A key's value as an entry: `HOST:PORT[,weight=N]` or a JSON object.
async fn entry(value: &[u8], default_weight: u32) -> Result<Entry, String> {
    let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_string())?;
    let text = text.trim();
    let (spec, weight) = if text.starts_with('{') {
        #[derive(Deserialize)]
        struct Value {
            address: String,
            weight: Option<u32>,
        }
        let v: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON value: {e}"))?;
        let spec = crate::backend::parse_spec(&v.address)?;
        let w = v.weight.unwrap_or(default_weight);
        (spec, w)
    } else {
        let spec = crate::backend::parse_spec(text)?;
        let w = if text.contains(",weight=") {
            spec.weight
        } else {
            default_weight
        };
        (spec, w)
    };
    if spec.scheme != crate::backend::Scheme::Http {
        return Err("only plain HTTP backends can be discovered".into());
    }
    let host = spec.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> =
        tokio::time::timeout(CALL_TIMEOUT, tokio::net::lookup_host((host, spec.port)))
            .await
            .map_err(|_| format!("resolving '{host}' took too long"))?
            .map_err(|e| format!("cannot resolve '{host}': {e}"))?
            .collect();
    if addrs.is_empty() {
        return Err(format!("'{host}' resolves to no address"));
    }
    Ok(Entry {
        address: spec.normalised(),
        addrs,
        weight: weight.max(1),
    })
}

/// POSTs `body` to `endpoint` + `path`; the answer's body when the status is 200.
async fn call(
    endpoint: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<hyper::body::Incoming, String> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{endpoint}' is not an http:// endpoint"))?
        .trim_end_matches('/');
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("{path} answered {}", resp.status()));
    }
    Ok(resp.into_body())
}

/// The end of the key range that holds every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

#[derive(Deserialize)]
struct RangeAnswer {
    header: Header,
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    revision: String,
}

#[derive(Deserialize)]
struct Kv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct WatchMessage {
    result: Option<WatchResult>,
    error: Option<GatewayError>,
}

#[derive(Deserialize)]
struct GatewayError {
    message: Option<String>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    events: Vec<Event>,
    #[serde(default)]
    canceled: bool,
    cancel_reason: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    /// Absent for PUT (the gateway leaves out enum defaults).
    #[serde(rename = "type")]
    kind: Option<String>,
    kv: Kv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[tokio::test]
    async fn values_in_both_forms() {
        let e = entry(b"127.0.0.1:9000", 2).await.unwrap();
        assert_eq!((e.address.as_str(), e.weight), ("127.0.0.1:9000", 2));
        let e = entry(b"127.0.0.1:9000,weight=5", 2).await.unwrap();
        assert_eq!(e.weight, 5);
        let e = entry(br#"{"address": "127.0.0.1:9001", "weight": 3}"#, 1)
            .await
            .unwrap();
        assert_eq!((e.address.as_str(), e.weight), ("127.0.0.1:9001", 3));
        assert!(entry(b"nonsense", 1).await.is_err());
        assert!(entry(b"https://127.0.0.1:9001", 1).await.is_err());
        assert!(entry(b"{\"weight\": 1}", 1).await.is_err());
    }

    #[test]
    fn watch_messages_parse() {
        let m: WatchMessage = serde_json::from_str(
            r#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"L2Ev","value":"eA=="}},{"type":"DELETE","kv":{"key":"L2Ev"}}]}}"#,
        )
        .unwrap();
        let r = m.result.unwrap();
        assert_eq!(r.events.len(), 2);
        assert_eq!(r.events[1].kind.as_deref(), Some("DELETE"));
    }
}
