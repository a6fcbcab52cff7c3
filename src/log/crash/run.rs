//! One crash drain over any [`DrainInput`] with any [`DrainMem`]: the snapshot (or a rewind to the
//! last one), the merge, then the accounting records. The live drain ([`Log::drain_on_crash`]) and
//! the offline one ([`crate::recover`]) both run this.
//!
//! Contract: bounded ([`step_bound`]), no lock, no waiting, no allocation; reads the input only;
//! writes only `mem` and the sink.

use core::fmt;

use super::super::merge::{self, Outcome};
use super::input::DrainInput;
use super::sources::DrainMerge;
use super::state::{snapshot, DrainMem};
use super::{CrashSink, DrainReport, Origin};
use crate::fmt::{LineBuf, LINE_MAX};
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

/// Makes `buf` an accounting record: `header` (its `len` set here) and `text`.
fn fill(buf: &mut RecordBuf, mut header: Header, text: &[u8]) {
    let n = text.len().min(buf.payload.len());
    buf.payload[..n].copy_from_slice(&text[..n]);
    header.len = n as u16;
    buf.header = header;
    buf.seq = 0;
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
pub(crate) fn drain<I: DrainInput + ?Sized, S: CrashSink + ?Sized>(
    input: &I,
    mem: DrainMem<'_>,
    stopped: Option<&dyn Fn(usize) -> bool>,
    sink: &mut S,
) -> DrainReport {
    let st = mem.fixed;
    let (ncpu, depth, me) = (input.cpus(), input.depth(), input.me());
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
    let mut steps = 0;
    if reuse {
        mem.rewind(ncpu * depth);
    } else {
        snapshot(input, mem, stopped.unwrap_or(&|_| false), &mut steps);
    }
    let mut m = DrainMerge {
        input,
        mem,
        sink,
        ncpu,
        depth,
        gen,
        rep: DrainReport::default(),
        last_ts: 0,
    };
    let mut buf = None;
    let out = merge::run(&mut m, mem.heap(), &mut buf, rep.bound, &mut steps);
    rep.records = m.rep.records;
    rep.from_main = m.rep.from_main;
    rep.from_rings = m.rep.from_rings;
    rep.complete = out == Outcome::Done;
    // Losses, as ordinary records at the end (after the merge: lapping found during it counts).
    if out == Outcome::Done || out == Outcome::Budget {
        let buf = buf.get_or_insert_with(RecordBuf::new);
        // Stamped with the newest timestamp delivered, not the clock: they sort last, and a drain
        // over a dump of this memory (no clock) makes the very same records.
        let ts = m.last_ts;
        // Whether the sink still takes records and no nested drain superseded this one.
        let mut go_on = true;
        'sources: for c in 0..ncpu {
            for d in 0..depth {
                if st.gen.load(Ordering::Relaxed) != gen {
                    // A nested drain superseded this one: it reports the losses itself.
                    go_on = false;
                    break 'sources;
                }
                let cnt = counters_of(input, mem, c, d);
                rep.torn = rep.torn.wrapping_add(cnt.torn);
                rep.in_flight = rep.in_flight.wrapping_add(cnt.in_flight);
                rep.overwritten = rep.overwritten.wrapping_add(cnt.overwritten);
                if cnt == CpuCounters::default() {
                    continue;
                }
                let kind = input.kind_at(c, d);
                let mut line: LineBuf<LINE_MAX> = LineBuf::new();
                let _ = fmt::Write::write_fmt(
                    &mut line,
                    format_args!(
                        "nmilog: cpu {} {} (depth {}): {} torn, {} overwritten, {} dropped",
                        c,
                        kind.name(),
                        d,
                        cnt.torn,
                        cnt.overwritten,
                        cnt.dropped
                    ),
                );
                if cnt.in_flight != 0 {
                    let _ = fmt::Write::write_fmt(
                        &mut line,
                        format_args!(", {} in flight (CPU not stopped)", cnt.in_flight),
                    );
                }
                let header = Header {
                    ts_ns: ts,
                    cpu: c as u16,
                    level: Level::Warning as u8,
                    facility: facility::NMILOG,
                    ctx: Header::pack_ctx(kind, d),
                    ..Header::default()
                };
                fill(buf, header, line.finish());
                rep.records += 1;
                rep.accounting_records += 1;
                if !m.sink.record(Origin::Accounting, buf) {
                    go_on = false;
                    break 'sources;
                }
            }
        }
        rep.main_lost = st.main_lost.load(Ordering::Relaxed) as u64;
        if rep.main_lost != 0 && go_on && st.gen.load(Ordering::Relaxed) == gen {
            let mut line: LineBuf<LINE_MAX> = LineBuf::new();
            let _ = fmt::Write::write_fmt(
                &mut line,
                format_args!(
                    "nmilog: {} main-log records overwritten during the crash drain by a CPU that did not stop",
                    rep.main_lost
                ),
            );
            let header = Header {
                ts_ns: ts,
                cpu: me.min(u16::MAX as usize) as u16,
                level: Level::Warning as u8,
                facility: facility::NMILOG,
                ..Header::default()
            };
            fill(buf, header, line.finish());
            rep.records += 1;
            rep.accounting_records += 1;
            go_on = m.sink.record(Origin::Accounting, buf);
        }
        rep.complete &= go_on;
    }
    rep.not_stopped = (0..ncpu)
        .filter(|&c| c != me && !cpu_stopped(input, mem, c))
        .count() as u64;
    rep.steps = steps;
    rep
}
