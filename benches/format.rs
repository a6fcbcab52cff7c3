//! Formatting cost: `pr_info!` in normal (task) context against the same `write!` into a stack
//! buffer.
//!
//! * `format/pr_info`: `nmilog::pr_info!("x={} y={}", a, b)` through the global logger, in task
//!   context on a registered CPU. Measured as it is used: every call formats its 14 bytes once (onto
//!   its 128-byte stack line), appends them to the CPU's ring *and* tries a flush, which takes flush
//!   ownership (one
//!   compare-exchange), moves the record into the main log and releases ownership. The main log
//!   (64 KiB) fills during warm-up, so the measured calls also pay for overwriting its oldest record.
//! * `format/core_fmt`: the same `write!` into a `heapless::String<256>` on the stack.
//!
//! A second group, `format_parts`, splits `pr_info` into its parts (same run, so the ratios hold):
//! `pr_info_nmi_ctx` (format + ring append; the flush is refused at once in NMI context),
//! `pr_info_deferred` (task context with `FlushPolicy::Deferred`: format + ring append, no flush),
//! `pr_info_batched` (`FlushPolicy::Batched`: format + ring append + the due check; the calls come
//! faster than `FLUSH_AGE_NS`, so every 16th call flushes the 16 pending records),
//! `append_flush` (pre-formatted append + flush of that one record, no formatting) and
//! `flush_empty` (a flush with nothing to move); and a 198-byte line, too long for the stack line
//! (measured, then formatted a second time straight into the ring), against the same `write!`
//! into a `heapless::String<256>`: `pr_info_long_deferred` and `core_fmt_long`.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/tgt/bench cargo bench --bench format -- --warm-up-time 1 --measurement-time 3
//! ```

use core::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use nmilog::host::HostPlatform;
use nmilog::{ContextKind, FlushPolicy, Level, Log};

/// The global logger: 2 CPUs, 8 KiB rings, a 64 KiB main log.
static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));

const A: u32 = 12345;
const B: i64 = -678;
/// Half of a 198-byte line.
const LONG: &str = "rcu: INFO: rcu_sched detected stalls on CPUs/tasks: { 3-... } (detected by 0, t=21002 jiffies)";

fn setup() {
    HostPlatform::register_cpu(0);
    nmilog::set_global!(LOG);
}

fn format(c: &mut Criterion) {
    setup();
    let mut g = c.benchmark_group("format");
    g.bench_function("pr_info", |b| {
        b.iter(|| nmilog::pr_info!("x={} y={}", black_box(A), black_box(B)))
    });
    g.bench_function("core_fmt", |b| {
        b.iter(|| {
            let mut s: heapless::String<256> = heapless::String::new();
            let _ = write!(s, "x={} y={}", black_box(A), black_box(B));
            black_box(&s);
        })
    });
    g.finish();
    let main = LOG.main();
    eprintln!(
        "format: main log holds {} words, {} records written to it (wrapped {} times)",
        main.capacity_words(),
        main.next_seq(),
        main.next_seq() / (main.capacity_words() as u64 / nmilog::ring::span_words(14) as u64)
    );
}

fn format_parts(c: &mut Criterion) {
    setup();
    let line = b"x=12345 y=-678";
    let mut g = c.benchmark_group("format_parts");
    {
        let _nmi = LOG.enter(ContextKind::Nmi);
        g.bench_function("pr_info_nmi_ctx", |b| {
            b.iter(|| nmilog::pr_info!("x={} y={}", black_box(A), black_box(B)))
        });
    }
    LOG.set_flush_policy(FlushPolicy::Deferred);
    g.bench_function("pr_info_deferred", |b| {
        b.iter(|| nmilog::pr_info!("x={} y={}", black_box(A), black_box(B)))
    });
    LOG.set_flush_policy(FlushPolicy::Batched);
    g.bench_function("pr_info_batched", |b| {
        b.iter(|| nmilog::pr_info!("x={} y={}", black_box(A), black_box(B)))
    });
    LOG.set_flush_policy(FlushPolicy::Eager);
    g.bench_function("append_flush", |b| {
        b.iter(|| LOG.append(Level::Info, 0, 0, black_box(line)))
    });
    g.bench_function("flush_empty", |b| b.iter(|| black_box(LOG.flush())));
    LOG.set_flush_policy(FlushPolicy::Deferred);
    g.bench_function("pr_info_long_deferred", |b| {
        b.iter(|| {
            nmilog::pr_info!(
                "{}: x={} {}",
                black_box(LONG),
                black_box(A),
                black_box(LONG)
            )
        })
    });
    LOG.set_flush_policy(FlushPolicy::Eager);
    g.bench_function("core_fmt_long", |b| {
        b.iter(|| {
            let mut s: heapless::String<256> = heapless::String::new();
            let _ = write!(
                s,
                "{}: x={} {}",
                black_box(LONG),
                black_box(A),
                black_box(LONG)
            );
            black_box(&s);
        })
    });
    g.finish();
}

criterion_group!(benches, format, format_parts);
criterion_main!(benches);
