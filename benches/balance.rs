//! Cost of one `AnyStrategy::pick` for every strategy at 3, 16 and 256 backends.
//!
//! All backends up, nothing tried, nothing in flight; sticky requests carry a valid
//! cookie id (the middle backend's). Short warm-up and measurement times keep the
//! whole run under a minute; pass `--quick` for an even faster look.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use switchyard::backend::{Backend, BackendId, BackendSet, Scheme};
use switchyard::balance::{AnyStrategy, StrategyKind, Tried, View};
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
            let strategy = AnyStrategy::new(kind, &set);
            let view = View {
                health: &health,
                tried: &tried,
                sticky: (kind == StrategyKind::Sticky).then(|| set.get(n / 2).id),
            };
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &view, |b, view| {
                b.iter(|| strategy.pick(black_box(view)))
            });
        }
    }
    group.finish();
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
    targets = pick
}
criterion_main!(benches);
