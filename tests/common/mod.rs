//! Test support shared by the integration tests (`mod common;`) and the handover fuzz target
//! (`#[path]`): a test [`Platform`] whose CPU and clock the test drives, records as owned values
//! (from the main log or from a handover image), the examples' executables, and the stress tests'
//! duration; for the tests only, running the examples ([`examples`], [`bounded`]), test files
//! ([`files`]) and a kernel in memory ([`kernel`]).
#![allow(dead_code)] // each includer uses a different subset

// Test-only concerns: the fuzz target, which includes this file by `#[path]`, is built without
// `cfg(test)` (and without libc).
#[cfg(all(test, target_os = "linux"))]
pub mod bounded;
#[cfg(test)]
pub mod examples;
#[cfg(test)]
pub mod files;
#[cfg(test)]
pub mod kernel;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nmilog::handover::{Image, ImageRecord};
use nmilog::record::facility;
use nmilog::ring::Read;
use nmilog::{CpuCounters, Header, Log, Platform, RecordBuf};

/// A single-threaded test platform: the test sets the current CPU; the clock advances by a tick per
/// read (which the test may change: 0 stops the clock).
pub struct Manual {
    cpu: AtomicUsize,
    clock: AtomicU64,
    tick: AtomicU64,
    cpus: usize,
}

impl Manual {
    /// `cpus` CPUs, CPU 0 current, the clock at 1 ms advancing 1 µs per read.
    pub fn new(cpus: usize) -> Self {
        Manual::with_clock(cpus, 1_000_000, 1_000)
    }
    /// `cpus` CPUs, CPU 0 current, the clock at `start_ns` advancing `tick_ns` per read.
    pub fn with_clock(cpus: usize, start_ns: u64, tick_ns: u64) -> Self {
        Manual {
            cpu: AtomicUsize::new(0),
            clock: AtomicU64::new(start_ns),
            tick: AtomicU64::new(tick_ns),
            cpus,
        }
    }
    /// Makes `c` the current CPU (any number: a bad CPU id too).
    pub fn set_cpu(&self, c: usize) {
        self.cpu.store(c, Ordering::Relaxed);
    }
    /// Stops (`0`) or restarts the clock.
    pub fn set_tick(&self, ns: u64) {
        self.tick.store(ns, Ordering::Relaxed);
    }
}

impl Platform for Manual {
    fn cpu_id(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
    }
    fn now_ns(&self) -> u64 {
        self.clock
            .fetch_add(self.tick.load(Ordering::Relaxed), Ordering::Relaxed)
    }
    fn cpu_count(&self) -> usize {
        self.cpus
    }
}

/// A record as an owned value: its sequence number (main-log or image numbering), header and
/// payload.
pub type Owned = (u64, Header, Vec<u8>);

/// An image's records as owned values.
pub fn owned<'a>(recs: impl Iterator<Item = ImageRecord<'a>>) -> Vec<Owned> {
    recs.map(|r| (r.seq, r.header, r.payload.to_vec()))
        .collect()
}

/// Records with the accounting records' (facility NMILOG) timestamps zeroed. Each crash drain stamps
/// its accounting records with the clock when it makes them, so two drains (or images) of the same
/// state differ there and nowhere else.
pub fn unstamped(recs: Vec<Owned>) -> Vec<Owned> {
    recs.into_iter()
        .map(|(seq, mut h, p)| {
            if h.facility == facility::NMILOG {
                h.ts_ns = 0;
            }
            (seq, h, p)
        })
        .collect()
}

/// The main log's records, as a reader sees them (skipping what it missed).
pub fn main_records<P: Platform, const C: usize, const R: usize, const M: usize, const D: usize>(
    log: &Log<P, C, R, M, D>,
) -> Vec<Owned> {
    let mut r = log.main_reader();
    let mut buf = RecordBuf::new();
    let mut out = Vec::new();
    loop {
        match r.read(log, &mut buf) {
            Read::Record => out.push((buf.seq, buf.header, buf.payload().to_vec())),
            Read::Overwritten { .. } => continue,
            Read::Empty | Read::InFlight => break,
        }
    }
    out
}

/// Touches everything a parsed image offers, in and out of range (none of it may panic); returns
/// how many records its iterator gave (at most its record count), each with a payload of its
/// header's length.
pub fn exercise(image: &Image<'_>) -> usize {
    let mut n = 0;
    for r in image.records() {
        assert_eq!(r.header.len as usize, r.payload.len());
        let _ = r.text();
        n += 1;
    }
    assert!(n <= image.record_count());
    let _ = (
        image.version(),
        image.totals(),
        image.bad_cpu_dropped(),
        image.left_out(),
    );
    for c in 0..image.cpu_count().min(64) + 1 {
        for d in 0..image.depth().min(16) + 1 {
            let _ = image.counters(c, d);
            let _ = image.context_kind(c, d);
            let _ = image.cpu_stopped(c);
        }
    }
    let _ = format!("{image:?}");
    if let Some((e, _)) = image.corruption() {
        let _ = e.to_string();
    }
    n
}

/// `v1`, a version-1 image, holds what `v2`, the version-2 image of the same log, holds, less what
/// version 1 does not record: `v1` reads as version 1, undamaged, with `shape` (CPU count, depth,
/// CPU-id drops, records left out); per CPU and depth the same context kind and the same counters
/// but no in-flight count; every CPU read as stopped. The records are the caller's to compare.
pub fn assert_version_1_of(v1: &Image<'_>, v2: &Image<'_>, shape: (usize, usize, u64, u64)) {
    assert_eq!(v1.version(), 1);
    assert_eq!(v1.corruption(), None);
    let (cpus, depth, _, _) = shape;
    assert_eq!(
        (
            v1.cpu_count(),
            v1.depth(),
            v1.bad_cpu_dropped(),
            v1.left_out()
        ),
        shape
    );
    for c in 0..cpus {
        assert_eq!(v1.cpu_stopped(c), Some(true), "cpu {c}");
        for d in 0..depth {
            let want = CpuCounters {
                in_flight: 0,
                ..v2.counters(c, d).unwrap()
            };
            assert_eq!(v1.counters(c, d), Some(want), "cpu {c} depth {d}");
            assert_eq!(v1.context_kind(c, d), v2.context_kind(c, d));
        }
    }
}

/// Builds the examples `names` with the caller's cargo (same target directory and profile as the
/// test) and returns their executables, in the same order. The build's messages go to a pipe as
/// JSON, so compiler warnings never reach the examples' stderr.
pub fn build_examples<const N: usize>(names: [&str; N]) -> [PathBuf; N] {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "--manifest-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        "--message-format=json",
    ]);
    for n in names {
        cmd.args(["--example", n]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo build --example");
    assert!(out.status.success(), "building the examples failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = "\"executable\":\"";
    names.map(|name| {
        stdout
            .lines()
            .filter(|l| {
                l.contains("\"reason\":\"compiler-artifact\"")
                    && l.contains("\"kind\":[\"example\"]")
                    && l.contains(&format!("\"name\":\"{name}\""))
            })
            .find_map(|l| {
                let at = l.find(key)? + key.len();
                let end = l[at..].find('"')?;
                Some(PathBuf::from(&l[at..at + end]))
            })
            .unwrap_or_else(|| panic!("the {name} example's executable in cargo's messages"))
    })
}

/// How long a stress test runs: `NMILOG_STRESS_SECS`, default 3 s.
pub fn stress_secs() -> f64 {
    std::env::var("NMILOG_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}
