//! One crash drain over any [`DrainInput`] with any [`DrainMem`]: the snapshot (or a rewind to the
//! last one), the merge, then the accounting records. The live drain ([`Log::drain_on_crash`]) and
//! the offline one ([`crate::recover`]) both run this.
//!
//! Contract: bounded ([`step_bound`]), no lock, no waiting, no allocation; reads the input only;
//! writes only `mem` and the sink.

use super::super::merge::{self, Outcome};
use super::input::DrainInput;
use super::sources::DrainMerge;
use super::state::{snapshot, DrainMem};
use super::{CrashSink, DrainReport, Origin};
use crate::log::CpuCounters;
use crate::record::{facility, Header, Level, RecordBuf};
use crate::ring::span_words;
use crate::sync::Ordering;

#[allow(unused_imports)] // doc links
use super::super::Log;

/// The most steps one drain of `input` can take, whatever state its rings are in: the snapshot's
/// main-log scan (one look per record, plus up to three resynchronisations), per ring its oldest
/// record and the walk past records below its threshold (one look per record, plus three); the
/// merge, per source: up to three looks for the first head, two per record (the one that ends a run
/// and the one that takes it), up to three when it runs dry: within 3 + 4 × records.
pub(crate) fn step_bound<I: DrainInput + ?Sized>(input: &I) -> u64 {
    let per = |cap: usize| (cap / span_words(0)) as u64 + 1;
    let per_main = per(input.main().capacity_words());
    let mut k: u64 = 0;
    let mut ring_records: u64 = 0;
    for c in 0..input.cpus() {
        for d in 0..input.depth() {
            k += 1;
            ring_records = ring_records.saturating_add(per(input.ring(c, d).capacity_words()));
        }
    }
    (per_main + 3)
        .saturating_add(ring_records.saturating_add(k.saturating_mul(6)))
        .saturating_add(k.saturating_add(1).saturating_mul(3))
        .saturating_add(ring_records.saturating_add(per_main).saturating_mul(4))
}

/// An accounting record's text, written straight into a record buffer's payload (cut at its size;
/// these lines are short) without `core::fmt`: the drain needs no second line buffer and no
/// formatter frames on the stack (`tests/stack.rs`).
struct PayloadText<'a> {
    buf: &'a mut RecordBuf,
    len: usize,
}

impl<'a> PayloadText<'a> {
    fn new(buf: &'a mut RecordBuf) -> Self {
        PayloadText { buf, len: 0 }
    }

    fn text(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let room = self.buf.payload.len() - self.len;
        let n = b.len().min(room);
        self.buf.payload[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        self
    }

    /// `n` in decimal.
    fn num(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    /// Makes the buffer an accounting record: `header` (its `len` set here) and the text written.
    fn finish(&mut self, mut header: Header) {
        header.len = self.len as u16;
        self.buf.header = header;
        self.buf.seq = 0;
    }
}

/// Loss counters of source `(cpu, depth)` as of the last drain over `mem` (which must have run).
pub(crate) fn counters_of<I: DrainInput + ?Sized>(
    input: &I,
    mem: DrainMem<'_>,
    cpu: usize,
    depth: usize,
) -> CpuCounters {
    // The drain's snapshot of the flush's count plus its own finds (a flush owner that did not stop
    // may go on counting records the drain already counted).
    let s = mem.source(cpu * input.depth() + depth);
    CpuCounters {
        torn: s.torn() as u64,
        overwritten: s.overwritten() as u64,
        dropped: input.dropped(cpu, depth),
        in_flight: s.in_flight() as u64,
    }
}

/// Whether `cpu` was known to be stopped at the last drain over `mem`.
pub(crate) fn cpu_stopped<I: DrainInput + ?Sized>(
    input: &I,
    mem: DrainMem<'_>,
    cpu: usize,
) -> bool {
    cpu < input.cpus() && mem.source(cpu * input.depth()).stopped()
}

/// Runs one drain of `input` in `mem` into `sink` (see [`Log::drain_on_crash`]); `stopped: None`
/// reuses the last snapshot in `mem` (if there is one). The caller checked that `mem` has a
/// source for each of `input`'s.
///
/// Stack: one record buffer in this frame, shared by the merge and the accounting (each a frame of
/// its own, one after the other: the merge's inlined sources stay off the stack under the
/// accounting); `tests/stack.rs` measures the total.
pub(crate) fn drain<I: DrainInput + ?Sized, S: CrashSink + ?Sized>(
    input: &I,
    mem: DrainMem<'_>,
    stopped: Option<&dyn Fn(usize) -> bool>,
    sink: &mut S,
) -> DrainReport {
    let st = mem.fixed;
    let (ncpu, depth) = (input.cpus(), input.depth());
    let gen = match st.gen.load(Ordering::Relaxed).wrapping_add(1) {
        0 => 1,
        g => g,
    };
    let reuse = stopped.is_none() && st.ran();
    st.gen.store(gen, Ordering::Relaxed);
    let mut rep = DrainReport {
        bound: step_bound(input),
        ..DrainReport::default()
    };
    if reuse {
        mem.rewind(ncpu * depth);
    } else {
        snapshot(input, mem, stopped.unwrap_or(&|_| false), &mut rep.steps);
    }
    // One record buffer for the merge and the accounting, in this frame (`tests/stack.rs`).
    let buf = &mut RecordBuf::new();
    let (out, last_ts) = merge_into(input, mem, sink, gen, buf, &mut rep);
    rep.complete = out == Outcome::Done;
    // Losses, as ordinary records at the end (after the merge: lapping found during it counts).
    if out == Outcome::Done || out == Outcome::Budget {
        let go_on = account(input, mem, sink, gen, last_ts, buf, &mut rep);
        rep.complete &= go_on;
    }
    let me = input.me();
    rep.not_stopped = (0..ncpu)
        .filter(|&c| c != me && !cpu_stopped(input, mem, c))
        .count() as u64;
    rep
}

/// The merge of one drain: every delivered record into `sink`, counted in `rep`. Returns how it
/// ended and the newest timestamp delivered.
///
/// Not inlined into [`drain`]: the merge engine inlines the sources' `head`, `look` and `deliver`
/// here (see [`merge::Merge`]), and their locals in `drain`'s frame would sit under the accounting
/// and its sink call too (the drain's stack was 2096 bytes that way, 1984 with this frame apart).
#[inline(never)]
fn merge_into<I: DrainInput + ?Sized, S: CrashSink + ?Sized>(
    input: &I,
    mem: DrainMem<'_>,
    sink: &mut S,
    gen: usize,
    buf: &mut RecordBuf,
    rep: &mut DrainReport,
) -> (Outcome, u64) {
    let mut m = DrainMerge {
        input,
        mem,
        sink,
        ncpu: input.cpus(),
        gen,
        records: 0,
        from_main: 0,
        last_ts: 0,
        runs: true,
    };
    let out = merge::run(&mut m, mem.heap(), buf, rep.bound, &mut rep.steps);
    rep.records = m.records;
    rep.from_main = m.from_main;
    rep.from_rings = m.records - m.from_main;
    (out, m.last_ts)
}

/// The accounting records of one drain, stamped `ts` (the newest timestamp delivered, not the
/// clock: they sort last, and a drain over a dump of this memory makes the very same records).
/// Returns whether the sink took them all (and no nested drain superseded this one).
#[inline(never)]
fn account<I: DrainInput + ?Sized, S: CrashSink + ?Sized>(
    input: &I,
    mem: DrainMem<'_>,
    sink: &mut S,
    gen: usize,
    ts: u64,
    buf: &mut RecordBuf,
    rep: &mut DrainReport,
) -> bool {
    let st = mem.fixed;
    for c in 0..input.cpus() {
        for d in 0..input.depth() {
            if st.gen.load(Ordering::Relaxed) != gen {
                // A nested drain superseded this one: it reports the losses itself.
                return false;
            }
            let cnt = counters_of(input, mem, c, d);
            rep.torn = rep.torn.wrapping_add(cnt.torn);
            rep.in_flight = rep.in_flight.wrapping_add(cnt.in_flight);
            rep.overwritten = rep.overwritten.wrapping_add(cnt.overwritten);
            if cnt == CpuCounters::default() {
                continue;
            }
            let kind = input.kind_at(c, d);
            let header = Header {
                ts_ns: ts,
                cpu: c as u16,
                level: Level::Warning as u8,
                facility: facility::NMILOG,
                ctx: Header::pack_ctx(kind, d),
                ..Header::default()
            };
            let mut t = PayloadText::new(buf);
            t.text("nmilog: cpu ")
                .num(c as u64)
                .text(" ")
                .text(kind.name());
            t.text(" (depth ")
                .num(d as u64)
                .text("): ")
                .num(cnt.torn)
                .text(" torn, ");
            t.num(cnt.overwritten)
                .text(" overwritten, ")
                .num(cnt.dropped)
                .text(" dropped");
            if cnt.in_flight != 0 {
                t.text(", ")
                    .num(cnt.in_flight)
                    .text(" in flight (CPU not stopped)");
            }
            t.finish(header);
            rep.records += 1;
            rep.accounting_records += 1;
            if !sink.record(Origin::Accounting, buf) {
                return false;
            }
        }
    }
    rep.main_lost = st.main_lost.load(Ordering::Relaxed) as u64;
    let header = Header {
        ts_ns: ts,
        cpu: input.me().min(u16::MAX as usize) as u16,
        level: Level::Warning as u8,
        facility: facility::NMILOG,
        ..Header::default()
    };
    let whole_log: [(u64, &str); 2] = [
        (
            rep.main_lost,
            " main-log records overwritten during the crash drain by a CPU that did not stop",
        ),
        (
            input.unregistered_dropped(),
            " log calls made before the log was registered (lost: no log yet)",
        ),
    ];
    for (n, what) in whole_log {
        if n == 0 {
            continue;
        }
        if st.gen.load(Ordering::Relaxed) != gen {
            return false;
        }
        PayloadText::new(buf)
            .text("nmilog: ")
            .num(n)
            .text(what)
            .finish(header);
        rep.records += 1;
        rep.accounting_records += 1;
        if !sink.record(Origin::Accounting, buf) {
            return false;
        }
    }
    true
}
