//! One worker: a current-thread tokio runtime serving its own listener.
//!
//! The worker owns its [`Proxy`] (strategy state, backend pools) and runs every task
//! on one thread (`LocalSet`), so the request path uses `Rc`/`Cell` and takes no lock.
//! The same code runs in a thread (thread mode) or, later, alone in a forked process.
//! It stops accepting when `shutdown` flips; dropping the runtime then closes what is
//! left (graceful draining arrives with the operations issue).

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::conn_io::{ConnState, TimedIo};
use crate::config::Config;
use crate::health::HealthTable;
use crate::proxy::{ClientConn, Proxy};

/// Runs worker `id` until `shutdown` becomes true. Blocks the calling thread.
pub fn run(
    id: usize,
    config: Arc<Config>,
    health: Arc<HealthTable>,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::from_std(listener)?;
        let proxy = Rc::new(Proxy::new(Arc::clone(&config), health));
        let builder = Rc::new(server_builder(&config));

        let sweeper = Rc::clone(&proxy);
        let every = (config.pool.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                sweeper.sweep_pools();
            }
        });

        tracing::debug!(worker = id, "accepting");
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        serve(stream, peer, &proxy, &builder, &config);
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(worker = id, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
        tracing::debug!(worker = id, "stopped accepting");
        Ok(())
    })
}

fn server_builder(config: &Config) -> http1::Builder {
    let mut b = http1::Builder::new();
    let limits = &config.limits;
    b.keep_alive(true)
        .half_close(false)
        .header_read_timeout(None)
        .max_headers(limits.headers)
        // Room for our own limits to be the ones that answer (with a text body).
        .max_buf_size((limits.request_line + limits.header_section + 4096).max(8192));
    // Not `pipeline_flush`: it defers flushing while unread bytes are buffered, which
    // also swallows hyper's automatic 400 for a malformed head.
    b
}

fn serve(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    proxy: &Rc<Proxy>,
    builder: &Rc<http1::Builder>,
    config: &Config,
) {
    let _ = stream.set_nodelay(true);
    let clock = Rc::new(ConnState::new(
        config.timeouts.client_idle,
        config.timeouts.client_header,
    ));
    let conn = Rc::new(ClientConn::new(peer, Rc::clone(&clock)));
    let io = TokioIo::new(TimedIo::new(stream, clock));
    let proxy = Rc::clone(proxy);
    let builder = Rc::clone(builder);
    tokio::task::spawn_local(async move {
        let svc = service_fn(move |req| {
            let proxy = Rc::clone(&proxy);
            let conn = Rc::clone(&conn);
            async move { Ok::<_, Infallible>(proxy.handle(&conn, req).await) }
        });
        if let Err(e) = builder.serve_connection(io, svc).await {
            tracing::debug!(%peer, "client connection ended: {e}");
        }
    });
}
