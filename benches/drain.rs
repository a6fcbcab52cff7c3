//! Crash-drain throughput: `drain_on_crash` of 8 full per-CPU rings into the main log, against a
//! `memcpy` of the same number of bytes.
//!
//! * `drain/nmilog_8cpus`: a fresh `Log<HostPlatform, 8, 1024, 16384>` per iteration (the crash state
//!   is permanent), whose eight task-context rings are each filled to capacity by their own CPU
//!   (113 records of 32 bytes: full, nothing overwritten yet), then `crash_enter` on CPU 0 and the
//!   timed `drain_on_crash`, which merges the 904 records in timestamp order into the 128 KiB main
//!   log. Setup is not timed.
//! * `drain/nmilog_8cpus_interleaved`: the same records, but written by the CPUs taking turns, so
//!   the timestamp merge alternates between the rings on every record (a busy machine's log).
//! * `drain/nmilog_8cpus_runs`, `drain/nmilog_8cpus_interleaved_runs`: the same two drains into a
//!   sink that keeps ring words as they lie (`CrashSink::runs`): each run of one ring's records
//!   is copied straight into the sink's buffer under one validation, not a record at a time through
//!   a `RecordBuf` (in the interleaved log every run is one record long).
//! * `drain/memcpy`: `copy_from_slice` of the same number of bytes between two warm buffers.
//! * `drain/atomic_words`: the same bytes copied as word-sized `Relaxed` atomic loads and stores
//!   between two arrays of `AtomicUsize` — the cheapest copy a seqlock reader may make under Rust's
//!   memory model (the compiler may not merge or vectorise atomic accesses), so the floor for any
//!   drain that reads rings a frozen writer might still be scribbling on.
//!
//! Throughput counts the ring bytes of the drained records: per record one sequence word, the
//! 32-byte header and the 32-byte payload (`span_words(32)` words = 72 bytes), 65 088 bytes in all.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/tgt/bench cargo bench --bench drain -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nmilog::host::HostPlatform;
use nmilog::ring::{span_words, RunRecords};
use nmilog::{CrashSink, Level, Log, Origin, RecordBuf, RunSink};

const CPUS: usize = 8;
const RING_WORDS: usize = 1024;
const MAIN_WORDS: usize = 16384;
const PAYLOAD: usize = 32;
const WORD: usize = core::mem::size_of::<usize>();

type BenchLog = Log<HostPlatform, CPUS, RING_WORDS, MAIN_WORDS>;

/// Records that fill a ring exactly: one more would overwrite the oldest (the record plus its
/// terminator word must fit behind the oldest record).
const PER_RING: usize = (RING_WORDS - 1) / span_words(PAYLOAD);
/// Bytes drained: every record's ring words.
const BYTES: usize = CPUS * PER_RING * span_words(PAYLOAD) * WORD;

/// A fresh logger whose eight task-context rings are full, each written by its own CPU: one CPU
/// after another (`interleaved == false`: the merge moves each ring in one run) or taking turns
/// record by record (every run is one record long, as in a log where all CPUs were busy).
fn full_log(interleaved: bool) -> Box<BenchLog> {
    let log = Box::new(Log::new(HostPlatform::new(CPUS)));
    let mut rec = *b"cpu N: rcu: INFO: rcu_sched stal";
    let mut one = |cpu: usize| {
        HostPlatform::register_cpu(cpu);
        rec[4] = b'0' + cpu as u8;
        log.append_raw(Level::Info, 0, 0, &rec)
            .expect("append to a fresh ring");
    };
    if interleaved {
        for _ in 0..PER_RING {
            (0..CPUS).for_each(&mut one);
        }
    } else {
        for cpu in 0..CPUS {
            (0..PER_RING).for_each(|_| one(cpu));
        }
    }
    HostPlatform::register_cpu(0);
    log.crash_enter().expect("first crash on a fresh log");
    log
}

/// The crash drain into a flat buffer: each record's header and payload bytes, one after the other
/// (the least a crash sink does with a record).
fn drain_into(log: &BenchLog, out: &mut [u8]) -> nmilog::DrainReport {
    let mut at = 0;
    log.drain_on_crash(&|_| true, &mut |_, r: &nmilog::RecordBuf| {
        let h = r.header.to_bytes();
        let p = r.payload();
        if at + h.len() + p.len() <= out.len() {
            out[at..at + h.len()].copy_from_slice(&h);
            out[at + h.len()..at + h.len() + p.len()].copy_from_slice(p);
            at += h.len() + p.len();
        }
        true
    })
    .expect("the crashing CPU")
}

/// A crash sink that keeps ring words as they lie, in a flat buffer: runs go straight into it
/// (`CrashSink::runs`), one validation a run; anything else (none in this bench: checked once,
/// untimed) is counted.
struct WordDump<'a> {
    words: &'a mut [usize],
    used: usize,
    records: u64,
}

impl CrashSink for WordDump<'_> {
    fn record(&mut self, _: Origin, _: &RecordBuf) -> bool {
        self.records += 1;
        true
    }
    fn runs(&mut self) -> Option<&mut dyn RunSink> {
        Some(self)
    }
}

impl RunSink for WordDump<'_> {
    fn run_room(&mut self) -> &mut [usize] {
        &mut self.words[self.used..]
    }
    fn run_taken(&mut self, _: Origin, words: usize, _: usize) -> bool {
        self.used += words;
        true
    }
}

/// The crash drain into a [`WordDump`]: returns the report and how many records came one at a time.
fn drain_words(log: &BenchLog, out: &mut [usize]) -> (nmilog::DrainReport, u64) {
    let mut dump = WordDump {
        words: out,
        used: 0,
        records: 0,
    };
    let rep = log
        .drain_on_crash(&|_| true, &mut dump)
        .expect("the crashing CPU");
    (rep, dump.records)
}

fn drain(c: &mut Criterion) {
    HostPlatform::register_cpu(0);
    // Check once (untimed) that the drain moves every record and nothing was lost.
    for interleaved in [false, true] {
        let log = full_log(interleaved);
        let mut out = vec![0u8; 2 * BYTES];
        let rep = drain_into(&log, &mut out);
        assert_eq!(rep.records as usize, CPUS * PER_RING, "{rep:?}");
        assert_eq!(rep.overwritten + rep.torn + rep.in_flight, 0, "{rep:?}");
        assert_eq!(rep.accounting_records, 0, "{rep:?}");
        // The same records as runs of ring words, every one of them in a run.
        let log = full_log(interleaved);
        let mut words = vec![0usize; 2 * BYTES / WORD];
        let (rep, one_at_a_time) = drain_words(&log, &mut words);
        assert_eq!(rep.records as usize, CPUS * PER_RING, "{rep:?}");
        assert_eq!(one_at_a_time, 0, "{rep:?}");
        assert_eq!(RunRecords::new(&words).count(), CPUS * PER_RING);
    }

    let mut g = c.benchmark_group("drain");
    g.throughput(Throughput::Bytes(BYTES as u64));
    for (name, interleaved) in [("nmilog_8cpus", false), ("nmilog_8cpus_interleaved", true)] {
        g.bench_function(name, |b| {
            let mut out = vec![0u8; 2 * BYTES];
            b.iter_batched(
                || full_log(interleaved),
                |log| {
                    black_box(drain_into(&log, &mut out));
                    log // dropped outside the timed region
                },
                BatchSize::PerIteration,
            )
        });
    }
    for (name, interleaved) in [
        ("nmilog_8cpus_runs", false),
        ("nmilog_8cpus_interleaved_runs", true),
    ] {
        g.bench_function(name, |b| {
            let mut out = vec![0usize; 2 * BYTES / WORD];
            b.iter_batched(
                || full_log(interleaved),
                |log| {
                    black_box(drain_words(&log, &mut out));
                    log // dropped outside the timed region
                },
                BatchSize::PerIteration,
            )
        });
    }
    let src = vec![0x5au8; BYTES];
    let mut dst = vec![0u8; BYTES];
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            black_box(&mut dst[..]).copy_from_slice(black_box(&src[..]));
        })
    });
    let asrc: Vec<AtomicUsize> = (0..BYTES / WORD).map(AtomicUsize::new).collect();
    let adst: Vec<AtomicUsize> = (0..BYTES / WORD).map(|_| AtomicUsize::new(0)).collect();
    g.bench_function("atomic_words", |b| {
        b.iter(|| {
            for (d, s) in black_box(&adst[..]).iter().zip(black_box(&asrc[..])) {
                d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, drain);
criterion_main!(benches);
