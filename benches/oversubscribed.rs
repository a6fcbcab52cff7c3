//! Oversubscription: more writers than cores. Four writer threads share the two cores of the bench
//! machine (not pinned: the scheduler shares the cores out and preempts writers in the middle of a
//! call), each registered as its own CPU and making a fixed number of log calls; the time measured
//! is the whole batch, from releasing the writers to the last one's last call.
//!
//! Group `oversubscribed`, one function per mechanism of `benches/common` (the same 8-byte
//! timestamp + 32-byte record): `nmilog` (NMI-context raw append, each writer into its own CPU's
//! ring), `spinlock_global`, `crossbeam_array_queue`, `heapless_mpmc` (one shared 128-record buffer
//! each) and `raw_copy` (a thread-local copy: the limit). A writer preempted while it holds the
//! spinlock, or between the two steps of a queue's slot claim, stalls every writer of that buffer
//! until it runs again; nmilog's writers share nothing.
//!
//! ```text
//! cargo bench --bench oversubscribed -- --warm-up-time 1 --measurement-time 3
//! ```

use std::sync::LazyLock;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nmilog::host::HostPlatform;

mod common;
use common::*;

/// Log calls each writer makes per batch.
const PER_THREAD: usize = 20_000;

fn oversubscribed(c: &mut Criterion) {
    HostPlatform::register_cpu(0); // calibrates the clock
    LazyLock::force(&ARRAY_QUEUE);
    let mut g = c.benchmark_group("oversubscribed");
    g.throughput(Throughput::Elements((OVER_THREADS * PER_THREAD) as u64));
    g.sample_size(20);
    for (name, push) in OVER_MECHANISMS {
        let crew = Crew::start(push, PER_THREAD, None);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| crew.batch()).sum::<Duration>())
        });
    }
    g.finish();
}

criterion_group!(benches, oversubscribed);
criterion_main!(benches);
