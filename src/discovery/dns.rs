//! DNS discovery: `dns: HOST:PORT` (A and AAAA) and `srv: NAME` (SRV records).
//!
//! A source is looked up again when its answer's TTL runs out, clamped to 1 s .. 5 min
//! (a TTL of 0 would otherwise mean a query loop, and a day-long one a stale fleet).
//! The resolver is hickory's, asking `resolver:` when it is set, else the nameservers
//! of /etc/resolv.conf (with its search domains); its cache is off, so each lookup asks
//! the server. SRV: the records of the lowest priority are the set (the others are
//! backups by RFC 2782, unused while any of the first are listed), each target looked
//! up for its addresses, weight from the record (at least 1).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Resolver, TokioResolver};
use tokio::sync::mpsc;

use super::{Entry, Kind, Source, Update, address_of, backoff};

/// Shortest and longest wait between lookups, whatever the TTL says.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(300);

/// Makes the resolver: `nameserver`, or the system's configuration.
pub fn resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let mut builder = match nameserver {
        Some(addr) => {
            let mut config = ResolverConfig::new();
            config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            Resolver::builder_with_config(config, TokioConnectionProvider::default())
        }
        None => Resolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    // A lookup that fails is retried by the source's own backoff.
    opts.timeout = Duration::from_secs(1);
    opts.attempts = 1;
    Ok(builder.build())
}

/// Follows one DNS source forever, reporting on `tx` (until the receiver is gone).
pub async fn watch(
    index: usize,
    source: Source,
    nameserver: Option<SocketAddr>,
    tx: mpsc::UnboundedSender<Update>,
) {
    let resolver = match resolver(nameserver) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Update {
                source: index,
                result: Err(e),
            });
            return;
        }
    };
    let mut failures = 0;
    loop {
        let (result, wait) = match lookup(&resolver, &source).await {
            Ok((entries, ttl)) => {
                failures = 0;
                (Ok(entries), ttl.clamp(MIN_TTL, MAX_TTL))
            }
            Err(e) => {
                failures += 1;
                (Err(e), backoff(failures - 1))
            }
        };
        let update = Update {
            source: index,
            result,
        };
        if tx.send(update).is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// One lookup of `source`: its entries and how long they hold.
pub async fn lookup(r: &TokioResolver, source: &Source) -> Result<(Vec<Entry>, Duration), String> {
    match &source.kind {
        Kind::Dns { host, port } => {
            let (ips, ttl) = lookup_ip(r, host).await?;
            let entries = ips
                .into_iter()
                .map(|ip| {
                    let a = SocketAddr::new(ip, *port);
                    Entry {
                        address: address_of(a),
                        addrs: vec![a],
                        weight: source.weight,
                    }
                })
                .collect();
            Ok((entries, ttl))
        }
        Kind::Srv { name } => lookup_srv(r, name).await,
        Kind::Etcd { .. } => Err("not a DNS source".into()),
    }
}

async fn lookup_ip(
    r: &TokioResolver,
    host: &str,
) -> Result<(Vec<std::net::IpAddr>, Duration), String> {
    let found = r
        .lookup_ip(host)
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    let ttl = ttl_of(found.valid_until());
    let mut ips: Vec<_> = found.iter().collect();
    ips.sort();
    ips.dedup();
    Ok((ips, ttl))
}

async fn lookup_srv(r: &TokioResolver, name: &str) -> Result<(Vec<Entry>, Duration), String> {
    let found = r
        .srv_lookup(name)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let mut ttl = ttl_of(found.as_lookup().valid_until());
    let Some(first) = found.iter().map(|s| s.priority()).min() else {
        return Ok((Vec::new(), ttl));
    };
    let mut entries: Vec<Entry> = Vec::new();
    for srv in found.iter().filter(|s| s.priority() == first) {
        let target = srv.target().to_utf8();
        let (ips, t) = lookup_ip(r, &target).await?;
        ttl = ttl.min(t);
        for ip in ips {
            let a = SocketAddr::new(ip, srv.port());
            let address = address_of(a);
            if entries.iter().any(|e| e.address == address) {
                continue;
            }
            entries.push(Entry {
                address,
                addrs: vec![a],
                weight: u32::from(srv.weight()).max(1),
            });
        }
    }
    Ok((entries, ttl))
}

fn ttl_of(valid_until: std::time::Instant) -> Duration {
    valid_until.saturating_duration_since(std::time::Instant::now())
}
