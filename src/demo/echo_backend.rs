//! The built-in echo backend (`switchyard backend`, and the two backends of `demo`).
//!
//! It answers every request with JSON describing what it received: its own name, the
//! method, the target, the version, every header in order, and the body length. The
//! body is counted as it streams, never held. Every answer carries `X-Backend: NAME`.
//! Tests and benchmarks use it as a real HTTP/1.1 backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// A running echo backend on its own thread; stops when dropped.
pub struct EchoBackend {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoBackend {
    /// Serves on `listener` (already bound) as `name`.
    pub fn start(listener: std::net::TcpListener, name: &str) -> std::io::Result<EchoBackend> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(false);
        let name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                if let Err(e) = run(listener, name, rx) {
                    tracing::error!("echo backend failed: {e}");
                }
            })?;
        Ok(EchoBackend {
            addr,
            shutdown: tx,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks until the backend stops (it only stops when told to).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    listener: std::net::TcpListener,
    name: String,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let name: Rc<str> = Rc::from(name);
        let tag = HeaderValue::from_str(&name).unwrap_or_else(|_| HeaderValue::from_static("echo"));
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let _ = stream.set_nodelay(true);
            let name = Rc::clone(&name);
            let tag = tag.clone();
            tokio::task::spawn_local(async move {
                let svc = service_fn(move |req| {
                    let name = Rc::clone(&name);
                    let tag = tag.clone();
                    async move { Ok::<_, Infallible>(echo(&name, tag, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

async fn echo(name: &str, tag: HeaderValue, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let mut body_length: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_length += d.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    let headers: Vec<(&str, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let json = serde_json::json!({
        "backend": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_length": body_length,
    });
    let mut text = json.to_string();
    text.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-backend", tag);
    resp
}
