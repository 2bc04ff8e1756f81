//! HTTP/1 client connections on our own codec: one task per connection.
//!
//! A connection alternates between two states, and the difference is memory:
//! - **idle** (after accept, and after [`PARK_AFTER`] without a request): *parked* in
//!   the worker's lot (`server::lot`): an entry holding the socket and its context, no
//!   task; the `switchyard_connections_parked` gauge counts it.
//! - **busy** ([`serve`], a task while bytes come): it owns a read buffer
//!   (1 KiB to start, as nginx's `client_header_buffer_size`, grown only for what
//!   arrives), parses each head once ([`request::parse`]), answers a head it refuses
//!   with the status and one-line text body of [`RequestError`] and closes, and hands
//!   a good head to [`Proxy::serve_h1`], which runs the request inline. Pipelined
//!   bytes stay in the buffer for the next turn.
//!
//! "Between messages" is a plain fact here: the previous response is written and the
//! buffer holds no byte of a next head. The clocks are deadlines in this state, not
//! wrappers around the socket: `client_idle` while between messages, `client_header`
//! from the first byte of a head to its end (then a 408 with a text body), and the
//! request path's own deadlines after that.

use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::client::{ClientCtx, Idle};
use super::conn_io::ClientStream;
use crate::http1::encode;
use crate::http1::request::{self, RequestError, RequestHead};
use crate::proxy::h1::{After, Client};

/// How long a connection between requests keeps its buffers before it parks.
pub const PARK_AFTER: Duration = Duration::from_millis(20);

/// The first read buffer of a busy connection.
const FIRST_BUFFER: usize = 1024;

/// Bytes of empty lines tolerated before a request line.
const MAX_EMPTY_LINES: usize = 64;

/// Why a busy period ended.
enum Turn {
    /// Nothing arrived for [`PARK_AFTER`]: give the buffers back and wait.
    Park,
    /// The client closed, or went silent: close.
    Close,
    /// We answered and close with input possibly unread (a refused head, a body we
    /// did not read, pipelined bytes): close lingering.
    Answered,
}

/// How long a closing connection's unread input is read and dropped (nginx's
/// lingering close), and how much of it: closing with bytes unread makes the kernel
/// send a reset, which can destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Serves an HTTP/1 connection that has bytes to read (or a TLS record's plaintext),
/// until it has been between requests for [`PARK_AFTER`]: then it goes back to the
/// worker's [`Lot`](super::lot) and this task ends. `deadline` is its idle deadline.
pub(super) async fn serve(mut io: ClientStream, ctx: ClientCtx, mut deadline: Instant) {
    match busy(&mut io, &ctx, &mut deadline).await {
        Turn::Park => {
            let lot = Rc::clone(&ctx.lot);
            lot.park(Idle { io, ctx }, deadline);
        }
        Turn::Close => {}
        Turn::Answered => linger(&mut io).await,
    }
}

/// Ends our side (FIN, or TLS close_notify) and drops what the client still sends
/// until it closes, for at most [`LINGER`] and [`LINGER_BYTES`].
pub(super) async fn linger(io: &mut ClientStream) {
    use tokio::io::AsyncWriteExt;
    let drain = async {
        io.shutdown().await?;
        // On the heap: a buffer in the future would make every connection task larger.
        let mut sink = vec![0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Serves requests while they come; returns when the connection has been between
/// messages for [`PARK_AFTER`], or must close.
async fn busy(io: &mut ClientStream, ctx: &ClientCtx, idle_deadline: &mut Instant) -> Turn {
    // Made per busy period, not kept while parked.
    let addr = ctx.origin.client.ip().to_string();
    let open: Rc<dyn std::any::Any> = ctx.guard.clone();
    let (limits, timeouts) = {
        let p = ctx.current.borrow();
        (p.head_limits(), p.timeouts())
    };
    let proto: &'static [u8] = if ctx.https { b"https" } else { b"http" };
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_BUFFER);
    let mut out: Vec<u8> = Vec::new();
    let mut head = RequestHead::default();
    let between = tokio::time::sleep_until(*idle_deadline);
    tokio::pin!(between);
    let request_timer = tokio::time::sleep_until(*idle_deadline);
    tokio::pin!(request_timer);
    loop {
        // Read one head.
        let mut scanned = 0;
        let mut head_deadline = None;
        let mut empty_lines = 0usize;
        loop {
            if head_deadline.is_none() && !buf.is_empty() {
                // Empty lines before a request are ignored (RFC 9112 2.2), in linear
                // time and only so many: they are not a head, so its clock does not
                // start for them.
                let skip = request::leading_empty_lines(&buf);
                if skip > 0 {
                    empty_lines += skip;
                    buf.drain(..skip);
                    if empty_lines > MAX_EMPTY_LINES {
                        let e = RequestError::Bad("too many empty lines before the request");
                        refuse(io, ctx, &mut out, e, timeouts.client_idle).await;
                        return Turn::Answered;
                    }
                }
            }
            if !buf.is_empty() {
                head_deadline.get_or_insert_with(|| Instant::now() + timeouts.client_header);
                match request::parse(&buf, scanned, &limits, &mut head) {
                    Ok(request::Status::Complete) => break,
                    Ok(request::Status::Partial { scanned: s }) => scanned = s,
                    Err(e) => {
                        refuse(io, ctx, &mut out, e, timeouts.client_idle).await;
                        return Turn::Answered;
                    }
                }
            }
            // Draining: an idle connection waits only for the linger (one more request
            // may be on its way), and never parks.
            let linger = ctx.conns().linger_until.get();
            let (until, parking) = match (head_deadline, linger) {
                (Some(d), _) => (d, false),
                (None, Some(l)) => (l.min(*idle_deadline), false),
                (None, None) => {
                    let park = Instant::now() + PARK_AFTER;
                    (park.min(*idle_deadline), park < *idle_deadline)
                }
            };
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(buf.capacity().max(FIRST_BUFFER));
            }
            // One timer for the whole busy period: moving its deadline later is only a
            // store (tokio re-files it when the old deadline comes), where a new timer per
            // request would be filed and removed each time.
            between.as_mut().reset(until);
            let read = tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => Some(r),
                _ = between.as_mut() => None,
                // The drain began: wait again, for the linger only.
                _ = ctx.conns().drain.notified(), if head_deadline.is_none() && linger.is_none() => continue,
            };
            match read {
                Some(Ok(0)) | Some(Err(_)) => return Turn::Close,
                Some(Ok(_)) => {}
                None if parking => return Turn::Park,
                None if head_deadline.is_some() => {
                    let e = crate::proxy::error_response::ProxyError::HeadTimeout;
                    answer(io, ctx, &mut out, &e, timeouts.client_idle).await;
                    return Turn::Close;
                }
                None => return Turn::Close,
            }
        }
        let proxy = Rc::clone(&ctx.current.borrow());
        let mut client = Client {
            io,
            buf: &mut buf,
            out: &mut out,
            addr: addr.as_bytes(),
            origin: &ctx.origin,
            proto,
            listener: ctx.listener,
            closing: ctx.conns().draining.get(),
            open: &open,
            next: usize::MAX,
            timer: request_timer.as_mut(),
        };
        // Boxed: the request's state is large, and a connection reading a head (or
        // a slow one) should not carry room for it.
        let after = Box::pin(proxy.serve_h1(&mut client, &head)).await;
        let next = client.next;
        drop(proxy);
        match after {
            After::Next(_) if next <= buf.len() => {
                buf.drain(..next);
            }
            // Linger only when the client may still be sending (a body we did not
            // read, or bytes after this request): otherwise a close resets nothing.
            _ if next == usize::MAX || next < buf.len() => return Turn::Answered,
            _ => return Turn::Close,
        }
        *idle_deadline = Instant::now() + timeouts.client_idle;
    }
}

/// Answers a head we refuse, then the connection closes.
async fn refuse(
    io: &mut ClientStream,
    ctx: &ClientCtx,
    out: &mut Vec<u8>,
    e: RequestError,
    idle: Duration,
) {
    let err = crate::proxy::error_response::ProxyError::from_head(e);
    answer(io, ctx, out, &err, idle).await;
}

async fn answer(
    io: &mut ClientStream,
    ctx: &ClientCtx,
    out: &mut Vec<u8>,
    err: &crate::proxy::error_response::ProxyError,
    idle: Duration,
) {
    ctx.current.borrow().count_local(err);
    let (status, text, _) = err.text();
    out.clear();
    encode::local_response(out, status, text.as_bytes(), true);
    let write = async {
        use tokio::io::AsyncWriteExt;
        io.write_all(out).await?;
        io.flush().await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(idle, write).await;
}

#[cfg(test)]
mod tests {
    fn size3<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection reading a head holds this much besides its buffer; the request's
    /// own state is boxed apart.
    #[test]
    fn busy_state_stays_small() {
        let busy = size3(super::busy);
        assert!(busy <= 1024, "busy connection future: {busy} bytes");
        // The whole task: busy, or lingering at its close.
        let serve = size3(super::serve);
        assert!(serve <= busy + 400, "connection task: {serve} bytes");
    }
}
