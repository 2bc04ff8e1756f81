//! Cost of one `AnyStrategy::pick` for every strategy at 3, 16 and 256 backends, of
//! the round-2 strategies at 4, 64 and 1,024, and of building a Maglev table.
//!
//! All backends up, nothing tried, nothing in flight; sticky requests carry a valid
//! cookie id (the middle backend's); consistent-hash requests a different key each
//! time (bounded load on, so the in-flight total is read). Short warm-up and
//! measurement times keep the whole run near a minute; pass `--quick` for an even
//! faster look.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use switchyard::backend::{Backend, BackendId, BackendSet, Scheme};
use switchyard::balance::{AnyStrategy, Options, StrategyKind, Tried, View, maglev};
use switchyard::health::HealthTable;

const KINDS: [StrategyKind; 5] = [
    StrategyKind::RoundRobin,
    StrategyKind::WeightedRoundRobin,
    StrategyKind::Random,
    StrategyKind::Sticky,
    StrategyKind::LeastConnections,
];

/// `n` backends `10.0.x.y:8080` with weights cycling 1..=5.
fn backends(n: usize) -> BackendSet {
    BackendSet::new(
        (0..n)
            .map(|i| {
                let host = format!("10.0.{}.{}", i / 256, i % 256);
                let address = format!("{host}:8080");
                Backend {
                    id: BackendId::of(&address),
                    address,
                    host,
                    port: 8080,
                    scheme: Scheme::Http,
                    addrs: vec![],
                    weight: (i % 5) as u32 + 1,
                    tls: Default::default(),
                    protocol: Default::default(),
                    max_connections: 0,
                    proxy_protocol: None,
                    name: None,
                }
            })
            .collect(),
    )
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [3, 16, 256] {
        let set = backends(n);
        let health = HealthTable::all_up(n);
        let tried = Tried::default();
        for kind in KINDS {
            let strategy = AnyStrategy::new(kind, &set, &Options::default());
            let view = View {
                health: &health,
                tried: &tried,
                sticky: (kind == StrategyKind::Sticky).then(|| set.get(n / 2).id),
                key: None,
                ramp: None,
            };
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &view, |b, view| {
                b.iter(|| strategy.pick(black_box(view)))
            });
        }
    }
    for n in [4, 64, 1024] {
        let set = backends(n);
        let health = HealthTable::all_up(n);
        let tried = Tried::default();
        let kind = StrategyKind::LeastLatency;
        let strategy = AnyStrategy::new(kind, &set, &Options::default());
        for i in 0..n {
            strategy.observe(i, Duration::from_micros(200 + (i as u64 * 37) % 900));
        }
        let view = View {
            health: &health,
            tried: &tried,
            sticky: None,
            key: None,
            ramp: None,
        };
        group.bench_with_input(BenchmarkId::new(kind.name(), n), &view, |b, view| {
            b.iter(|| strategy.pick(black_box(view)))
        });
        let kind = StrategyKind::ConsistentHash;
        let strategy = AnyStrategy::new(kind, &set, &Options::default());
        let mut k = 0u64;
        group.bench_function(BenchmarkId::new(kind.name(), n), |b| {
            b.iter(|| {
                k += 1;
                let view = View {
                    health: &health,
                    tried: &tried,
                    sticky: None,
                    key: Some(maglev::mix(k)),
                    ramp: None,
                };
                strategy.pick(black_box(&view))
            })
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let set = backends(1024);
    let ids: Vec<(u64, u32)> = set.iter().map(|b| (b.id.0, b.weight)).collect();
    c.bench_function("maglev_build/1024 backends, 65537 slots", |b| {
        b.iter(|| maglev::build(black_box(&ids), maglev::DEFAULT_TABLE_SIZE))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(400))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = pick, build
}
criterion_main!(benches);
