//! NMI-path cost: nmilog's NMI-context raw append of a pre-formatted 32-byte record against the
//! physical limit (clock + 32-byte copy) and the designs people would use instead.
//!
//! Groups (names are stable, so results can be compared across versions):
//!
//! * `nmi_path`: one writer.
//! * `nmi_path_contended`: the same, while a second thread pinned to the other core writes
//!   continuously through the same mechanism (nmilog: as CPU 1, into its own rings).
//!
//! Every mechanism stores the same 40 bytes per call: an 8-byte timestamp read from the *same* clock
//! nmilog uses (`HostPlatform`'s `now_ns`, the TSC on x86-64) and the 32-byte record. Every shared
//! buffer holds 128 records and overwrites (or pops) the oldest when full, as a log does; nmilog's
//! ring of 1024 words holds 127 such records. The lock-based baselines read the clock inside the
//! lock, as printk's `log_store` does, so their buffers stay in timestamp order.
//!
//! Each mechanism is one `#[inline(never)]` function, so every one pays the same call and each can be
//! found by name in `objdump -d` or callgrind output.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/tgt/bench cargo bench --bench nmi_path -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::sync::LazyLock;

use criterion::{criterion_group, criterion_main, Criterion};
use nmilog::host::HostPlatform;

mod common;
use common::*;

// ------------------------------------------------------------------------------------- harness

fn setup() {
    HostPlatform::register_cpu(0); // also calibrates the TSC clock, once
    LazyLock::force(&ARRAY_QUEUE);
    MUTEX
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reserve(SLOTS);
    assert!(now() > 0, "clock not running");
}

fn nmi_path(c: &mut Criterion) {
    setup();
    let rec: Rec32 = *b"cpu 0: NMI watchdog: hard LOCKUP";
    let mut g = c.benchmark_group("nmi_path");
    for (name, push) in MECHANISMS {
        as_cpu_in_nmi(0, || {
            g.bench_function(name, |b| b.iter(|| push(black_box(&rec))));
        });
    }
    g.finish();
}

fn nmi_path_contended(c: &mut Criterion) {
    setup();
    let rec: Rec32 = *b"cpu 0: NMI watchdog: hard LOCKUP";
    pin(Some(0));
    let mut g = c.benchmark_group("nmi_path_contended");
    for (name, push) in MECHANISMS {
        let contender = Contender::start(push);
        as_cpu_in_nmi(0, || {
            g.bench_function(name, |b| b.iter(|| push(black_box(&rec))));
        });
        let (calls, took) = contender.stop();
        let secs = took.as_secs_f64();
        eprintln!(
            "nmi_path_contended/{name}: the other core made {calls} calls in {secs:.1} s ({:.1} M/s)",
            calls as f64 / secs / 1e6
        );
    }
    g.finish();
    pin(None);
}

criterion_group!(benches, nmi_path, nmi_path_contended);
criterion_main!(benches);
