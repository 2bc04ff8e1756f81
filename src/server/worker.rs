//! One worker: a current-thread tokio runtime serving its own listening sockets (one
//! per `listen:` entry).
//!
//! The worker owns its [`Proxy`] (strategy state, backend pools) and runs every task
//! on one thread (`LocalSet`), so the request path uses `Rc`/`Cell` and takes no lock.
//! The same code runs in a thread (thread mode) or alone in a forked process.
//!
//! Beside the accept loop run two small tasks: one follows the published
//! [`Snapshot`]s and swaps in a new `Proxy` (each request takes the current one, so
//! in-flight requests finish on the old one and its pools drain with it), and one
//! sweeps idle pooled connections. When the [`RunState`] turns to draining, the
//! worker stops accepting, asks every connection to close after its current response
//! (idle ones close at once), and returns when the last one is gone or the drain
//! deadline passes.
//!
//! Each client connection is a task: its PROXY header when its listener takes them
//! (`proxy_protocol`; only then, and before anything else), TLS (when the listener
//! terminates it), then hyper's HTTP/2 server (ALPN `h2`) or our own HTTP/1 one
//! (`server::h1`), whose idle connections *park*: they hold the socket alone while
//! they wait for a next request (counted in the `switchyard_connections_parked`
//! gauge). A connection keeps the index of the listener that took it: the current
//! `Proxy` answers that listener's options (TLS, PROXY protocol, `redirect_https`).

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::client::{ClientCtx, Connections, Current, Idle, OpenGuard};
use super::conn_io::{ClientStream, ConnState, TimedIo};
use super::{RunState, Snapshot};
use crate::config::Config;
use crate::proxy::{ClientConn, Proxy};
use crate::proxy_protocol::{self, Origin, Refused};
use crate::upstream::LocalExec;

/// How long, once a drain starts, an idle keep-alive connection may still send one
/// more request (answered with `Connection: close`) before it is closed.
pub const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// Runs worker `id` on `listeners` (one per `listen:` entry, in order) until it has
/// drained. Blocks the calling thread.
pub fn run(
    id: usize,
    listeners: Vec<std::net::TcpListener>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    mut state: watch::Receiver<RunState>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listeners = listeners
            .into_iter()
            .map(|l| {
                let l = TcpListener::from_std(l)?;
                let at = l.local_addr()?;
                Ok((l, at))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let next = std::cell::Cell::new(0);
        let first = Arc::clone(&snapshots.borrow());
        let builder = Rc::new(Builders::new(&first.config));
        let current: Current = Rc::new(RefCell::new(Rc::new(Proxy::new(&first, None, id))));
        tokio::task::spawn_local(follow_snapshots(snapshots, Rc::clone(&current), id));
        tokio::task::spawn_local(sweep_pools(Rc::clone(&current)));
        let conns = Rc::new(Connections::default());
        let lot = super::lot::Lot::new(resume);
        tokio::task::spawn_local(Rc::clone(&lot).run(Rc::clone(&conns)));

        tracing::debug!(worker = id, "accepting");
        let ledger = first.health.ledger(id);
        ledger
            .serving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let deadline = loop {
            tokio::select! {
                changed = state.changed() => match *state.borrow_and_update() {
                    RunState::Draining { deadline } => break deadline,
                    RunState::Serving if changed.is_err() => break tokio::time::Instant::now(),
                    RunState::Serving => {}
                },
                accepted = accept(&listeners, &next) => match accepted {
                    Ok((stream, peer, index)) => {
                        let at = Accepted { peer, listen: listeners[index].1, index };
                        serve(stream, at, &current, &builder, &conns, &lot)
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(worker = id, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        };
        drop(listeners);
        ledger
            .serving
            .store(false, std::sync::atomic::Ordering::Relaxed);
        conns.draining.set(true);
        conns.linger_until.set(Some(
            (tokio::time::Instant::now() + DRAIN_LINGER).min(deadline),
        ));
        conns.drain.notify_waiters();
        tracing::debug!(worker = id, open = conns.open.get(), "draining");
        while conns.open.get() > 0 {
            if tokio::time::timeout_at(deadline, conns.empty.notified())
                .await
                .is_err()
            {
                tracing::warn!(
                    worker = id,
                    open = conns.open.get(),
                    "drain timeout: closing the rest"
                );
                break;
            }
        }
        crate::access_log::flush();
        Ok(())
    })
}

/// The next connection on any of `listeners`, and the index of the one it came to.
/// Polling starts after the listener that was ready last (`next`), so a flood on
/// one listener cannot keep the others waiting.
async fn accept(
    listeners: &[(TcpListener, std::net::SocketAddr)],
    next: &std::cell::Cell<usize>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr, usize)> {
    if let [(only, _)] = listeners {
        let (s, peer) = only.accept().await?;
        return Ok((s, peer, 0));
    }
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for k in 0..n {
            let i = (next.get() + k) % n;
            if let std::task::Poll::Ready(r) = listeners[i].0.poll_accept(cx) {
                next.set(i + 1);
                return std::task::Poll::Ready(r.map(|(s, peer)| (s, peer, i)));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Swaps in a new `Proxy` for every published snapshot.
async fn follow_snapshots(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    current: Current,
    worker: usize,
) {
    while snapshots.changed().await.is_ok() {
        let snapshot = Arc::clone(&snapshots.borrow_and_update());
        let next = Proxy::new(&snapshot, Some(&current.borrow()), worker);
        *current.borrow_mut() = Rc::new(next);
    }
}

async fn sweep_pools(current: Current) {
    loop {
        let every = {
            let proxy = current.borrow();
            proxy.sweep_pools();
            (proxy.pool_idle_timeout() / 2).max(Duration::from_millis(100))
        };
        tokio::time::sleep(every).await;
    }
}

/// Concurrent streams an HTTP/2 client connection may open.
pub const H2_STREAMS_PER_CONNECTION: u32 = 100;
/// Response bytes buffered per HTTP/2 stream beyond what the client's window takes.
pub const H2_SEND_BUFFER: usize = 64 * 1024;

/// hyper's HTTP/2 connection settings, made once per worker (limits are restart-only).
struct Builders {
    h2: http2::Builder<LocalExec>,
}

impl Builders {
    fn new(config: &Config) -> Builders {
        let limits = &config.limits;
        let mut h2 = http2::Builder::new(LocalExec);
        // Pings find a client that vanished or stopped reading while streams are open
        // (the idle clock covers connections without streams). HPACK-decoded headers
        // may be as large as the header-section limit, so that our guard answers.
        // (HPACK counts 32 bytes per field where the guard counts 4.)
        let header_list = limits.header_section + limits.request_line + 32 * limits.headers + 1024;
        // What one client connection may hold: hyper's defaults (200 streams, 400 KiB
        // of unsent response per stream) let a client that opens streams and never
        // reads (zero window) pin 80 MB and 200 backend requests per connection; 100
        // streams of 64 KiB bound that to 6.4 MB (a stream's send window is 64 KiB
        // unless the client raises it, so larger buffers only hold what cannot be sent
        // yet). Each stream's backend request counts against `max_connections`.
        h2.timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(crate::upstream::H2_PING_INTERVAL)
            .keep_alive_timeout(crate::upstream::H2_PING_TIMEOUT)
            .max_concurrent_streams(H2_STREAMS_PER_CONNECTION)
            .max_send_buf_size(H2_SEND_BUFFER)
            .max_header_list_size(u32::try_from(header_list).unwrap_or(u32::MAX));
        Builders { h2 }
    }
}

/// The request handler for one client connection: each request runs on the `Proxy`
/// current when it arrives.
fn service(
    current: Current,
    client: Rc<ClientConn>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::proxy::body::ProxyBody>,
    Error = Infallible,
> + Clone {
    service_fn(move |req| {
        let proxy = Rc::clone(&current.borrow());
        let client = Rc::clone(&client);
        async move { Ok::<_, Infallible>(proxy.handle(&client, req).await) }
    })
}

/// Where an accepted connection came from and which listener took it.
struct Accepted {
    peer: std::net::SocketAddr,
    listen: std::net::SocketAddr,
    /// The listener's index in `config.listeners`.
    index: usize,
}

/// A new connection: its PROXY header first when the listener takes them (in a task:
/// the header is awaited), then [`open_client`].
fn serve(
    stream: TcpStream,
    at: Accepted,
    current: &Current,
    builder: &Rc<Builders>,
    conns: &Rc<Connections>,
    lot: &Rc<super::lot::Lot<Idle>>,
) {
    let _ = stream.set_nodelay(true);
    let proxy = Rc::clone(&current.borrow());
    // The real local address only when a backend's PROXY header will say it.
    let local = match proxy.sends_proxy_headers() {
        true => stream.local_addr().unwrap_or(at.listen),
        false => at.listen,
    };
    let (peer, index) = (at.peer, at.index);
    if proxy.proxy_protocol(index).is_none() {
        drop(proxy);
        return open_client(
            stream,
            Origin {
                client: peer,
                local,
            },
            index,
            current,
            builder,
            conns,
            lot,
        );
    }
    let (current, builder, conns, lot) = (
        Rc::clone(current),
        Rc::clone(builder),
        Rc::clone(conns),
        Rc::clone(lot),
    );
    tokio::task::spawn_local(async move {
        let mut stream = stream;
        let trusted = proxy.proxy_protocol(index).unwrap_or_default();
        let t = proxy.timeouts();
        let read =
            proxy_protocol::accept(&mut stream, peer, trusted, t.client_idle, t.client_header);
        match read.await {
            Ok(client) => {
                drop(proxy);
                open_client(
                    stream,
                    Origin { client, local },
                    index,
                    &current,
                    &builder,
                    &conns,
                    &lot,
                );
            }
            Err(Refused::Closed(e)) => {
                tracing::debug!(%peer, error = ?e, "closed before its PROXY header");
            }
            Err(why) => {
                tracing::warn!(%peer, "connection refused: {}", why.as_str());
                let refused = &proxy.global_stats().connections_refused_proxy_protocol;
                refused.fetch_add(1, Relaxed);
            }
        }
    });
}

/// A connection from `origin.client` (after any PROXY header): counted under
/// `connections_per_client`, then TLS, then HTTP/2 or HTTP/1 (parked until it speaks).
fn open_client(
    stream: TcpStream,
    origin: Origin,
    listener: usize,
    current: &Current,
    builder: &Rc<Builders>,
    conns: &Rc<Connections>,
    lot: &Rc<super::lot::Lot<Idle>>,
) {
    let peer = origin.client;
    let (timeouts, acceptor, admit) = {
        let p = current.borrow();
        (
            p.timeouts(),
            p.tls_acceptor(listener),
            p.admit_client(peer.ip()),
        )
    };
    let client_hash = match admit {
        crate::proxy::Admit::Counted(h) => Some(h),
        crate::proxy::Admit::Uncounted => None,
        crate::proxy::Admit::Refused => {
            // Over `limits.connections_per_client`: plain HTTP gets a 429 it can read
            // (if the socket takes it at once), then the close; TLS just the close.
            if acceptor.is_none() {
                let text = b"429 Too Many Requests: too many connections from your address\n";
                let mut out = Vec::with_capacity(256);
                crate::http1::encode::local_response(&mut out, 429, text, true);
                let _ = stream.try_write(&out);
            }
            return;
        }
    };
    conns.open.set(conns.open.get() + 1);
    let (global, ledger) = {
        let p = current.borrow();
        (p.global_stats(), p.ledger())
    };
    global.connections_open.fetch_add(1, Relaxed);
    ledger.conns.fetch_add(1, Relaxed);
    let guard = Rc::new(OpenGuard(Rc::clone(conns), global, ledger, client_hash));
    let ctx = ClientCtx {
        origin,
        https: acceptor.is_some(),
        listener,
        current: Rc::clone(current),
        guard,
        lot: Rc::clone(lot),
    };
    let idle_deadline = tokio::time::Instant::now() + timeouts.client_idle;
    let Some(acceptor) = acceptor else {
        // Plain HTTP/1: straight to the lot until the first byte, no task yet.
        lot.park(
            Idle {
                io: ClientStream::Plain(stream),
                ctx,
            },
            idle_deadline,
        );
        return;
    };
    let builder = Rc::clone(builder);
    tokio::task::spawn_local(async move {
        // TLS first (the handshake is bounded by the head clock); ALPN then says
        // HTTP/2 or HTTP/1.1.
        // Plain HTTP on the TLS port (a request line where a TLS record should start):
        // a 400 it can read, as nginx answers, instead of TLS bytes shown as garbage.
        // One head clock for the first byte and the handshake together.
        let deadline = tokio::time::Instant::now() + timeouts.client_header;
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0].is_ascii_alphabetic() => {
                // Boxed: a rare path that should not make every TLS task larger.
                return Box::pin(plain_http_on_tls(stream, &ctx)).await;
            }
            Ok(Ok(1)) => {}
            _ => return, // closed, failed or silent past the head clock
        }
        // Boxed: the handshake state is large and the task outlives it.
        let handshake = Box::pin(acceptor.accept(stream));
        let (io, h2) = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(tls)) => {
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                (ClientStream::Tls(Box::new(tls)), h2)
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        if h2 {
            if let Err(e) = serve_http2(io, &ctx, &builder).await {
                tracing::debug!(%peer, "client connection ended: {e}");
            }
        } else {
            let lot = Rc::clone(&ctx.lot);
            lot.park(Idle { io, ctx }, idle_deadline);
        }
    });
}

/// Plain HTTP on a TLS port: a 400 it can read, counted, then the lingering close
/// every answer of ours gets (its request is unread).
async fn plain_http_on_tls(stream: TcpStream, ctx: &ClientCtx) {
    let text = b"400 Bad Request: this port speaks HTTPS (TLS); use https://\n";
    let mut out = Vec::with_capacity(256);
    crate::http1::encode::local_response(&mut out, 400, text, true);
    let global = ctx.current.borrow().global_stats();
    global.count_local(crate::metrics::LocalReason::PlainHttpOnTls, 400);
    let mut io = ClientStream::Plain(stream);
    let write = async {
        use tokio::io::AsyncWriteExt;
        io.write_all(&out).await
    };
    if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), write).await {
        super::h1::linger(&mut io).await;
    }
}

/// Serves an HTTP/2 connection until the client closes it, a drain or the idle clock
/// asks for a graceful close (GOAWAY).
async fn serve_http2(io: ClientStream, ctx: &ClientCtx, builder: &Builders) -> hyper::Result<()> {
    let timeouts = ctx.current.borrow().timeouts();
    // HTTP/2 multiplexes: an idle clock while no stream is open.
    let clock = Rc::new(ConnState::new(timeouts.client_idle));
    let client = ClientConn::new(ctx.origin, Rc::clone(&clock), ctx.https, ctx.guard.clone());
    let svc = service(Rc::clone(&ctx.current), Rc::new(client));
    let io = TokioIo::new(TimedIo::new(io, Rc::clone(&clock)));
    // Boxed: HTTP/2 state is large, and keeping it out of line keeps every HTTP/1
    // connection task small.
    let mut conn = Box::pin(builder.h2.serve_connection(io, svc));
    let conns = ctx.conns();
    let ended = match conns.draining.get() {
        true => None,
        false => tokio::select! {
            r = conn.as_mut() => Some(r),
            _ = conns.drain.notified() => None,
            _ = clock.close_due() => None,
        },
    };
    match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Serves a parked HTTP/1 connection that became readable, in a task of its own.
fn resume(idle: Idle, deadline: tokio::time::Instant) {
    tokio::task::spawn_local(super::h1::serve(idle.io, idle.ctx, deadline));
}
