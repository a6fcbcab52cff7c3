//! The crash drain's sources as the merge engine (`merge.rs`) sees them: every ring from its threshold
//! to its snapshot end, and the main log's window; and the delivery of each record to the sink.
//!
//! Contract: reads only (the rings and the main log, each record validated by its sequence words) and
//! writes only the drain's own cursors and counters (its [`DrainMem`]). Lapping by a
//! writer that did not stop is counted (`lapped`, `main_lost`), and records published before the
//! snapshot but not visible here are counted in flight, never waited for.

use super::super::merge::{run_ts_limit, Key, Look, Merge, RunStep};
use super::input::DrainInput;
use super::state::{seq_before, DrainMem, DrainSource};
use super::{CrashSink, Origin};
use crate::record::{Header, RecordBuf};
use crate::ring::{Cursor, Read, Ring, RunEnd};
use crate::sync::Ordering;

/// One validated look at the record at `cur` in `ring` if it is before `end` (see [`Merge::look`]).
fn look_at(
    ring: &Ring,
    mut cur: Cursor,
    end: usize,
    buf: &mut RecordBuf,
    key: impl Fn(&Header) -> Key,
    take: impl FnOnce(Key) -> bool,
) -> Look {
    if !seq_before(cur.seq, end) {
        return Look::Dry;
    }
    match ring.read_if(&mut cur, buf, |h| take(key(h))) {
        (Read::Record, _, true) => Look::Taken(cur),
        (Read::Record, h, false) => Look::NotTaken(key(&h)),
        // Lapping and in-flight accounting: `head`'s job.
        (Read::Overwritten { .. } | Read::Empty | Read::InFlight, _, _) => Look::Dry,
    }
}

/// The crash drain as a [`Merge`]: every ring from its threshold to its end, and the main window.
pub(super) struct DrainMerge<'a, I: DrainInput + ?Sized, S: CrashSink + ?Sized> {
    pub(super) input: &'a I,
    pub(super) mem: DrainMem<'a>,
    pub(super) sink: &'a mut S,
    pub(super) ncpu: usize,
    pub(super) gen: usize,
    /// Records delivered, and of those from the main window.
    pub(super) records: u64,
    pub(super) from_main: u64,
    /// The newest timestamp delivered.
    pub(super) last_ts: u64,
    /// Whether runs are still taken in one piece (a sink with room for them; no run overwritten
    /// under this drain yet: after one, a record at a time, so a writer that keeps lapping costs
    /// at most one wasted run per drain).
    pub(super) runs: bool,
}

/// The tie-break of ring source `src`'s records (see [`DrainMerge::key`]).
#[inline(always)]
fn ring_tie(src: usize) -> u32 {
    ((src as u32) << 1) | 1
}

impl<I: DrainInput + ?Sized, S: CrashSink + ?Sized> DrainMerge<'_, I, S> {
    /// The main window's source index (after every ring's).
    fn main_src(&self) -> usize {
        self.ncpu * self.depth()
    }

    /// Rings per CPU: the input's (for the live log the constant `DEPTH`, so the source index
    /// arithmetic below compiles to multiplies, not divisions).
    #[inline(always)]
    fn depth(&self) -> usize {
        self.input.depth()
    }

    /// The main window wins every timestamp tie: its records were moved by earlier flushes, in the
    /// main log's order, and a ring record that ties with one is never older than it in its own ring
    /// (so each ring's records keep their order). Ties between rings go to the lower CPU, then the
    /// lower depth.
    fn key(&self, src: usize, h: &Header) -> Key {
        let tie = if src == self.main_src() {
            0
        } else {
            ring_tie(src)
        };
        Key {
            ts: h.ts_ns,
            tie,
            src: src as u32,
        }
    }

    /// Ends a ring source at its cursor: what is left before its end is committed but not visible
    /// here (a writer that did not stop: in flight).
    fn end_ring_here(&self, s: &DrainSource) {
        let cur = s.cursor();
        let end = s.end();
        if seq_before(cur.seq, end) {
            DrainSource::add(&s.late, end.wrapping_sub(cur.seq));
            s.end.store(cur.seq, Ordering::Relaxed);
        }
    }

    /// A lapped ring cursor jumped from `from` to `to`: count what it skipped inside `[.., end)`.
    fn ring_lapped(&self, s: &DrainSource, from: usize, to: Cursor) {
        let end = s.end();
        let upto = if seq_before(to.seq, end) { to.seq } else { end };
        if seq_before(from, upto) {
            DrainSource::add(&s.lapped, upto.wrapping_sub(from));
        }
        s.set_cursor(to);
    }

    fn main_lapped(&self, from: usize, to: Cursor) {
        let st = self.mem.fixed;
        let end = st.main_end.load(Ordering::Relaxed);
        let upto = if seq_before(to.seq, end) { to.seq } else { end };
        if seq_before(from, upto) {
            DrainSource::add(&st.main_lost, upto.wrapping_sub(from));
        }
        st.set_main_cursor(to);
    }

    /// Source `src` as `(cpu, depth)` (two divisions a record were ~8 % of the drain's time
    /// before the live log's depth was a constant here).
    #[inline(always)]
    fn split(&self, src: usize) -> (usize, usize) {
        let depth = self.depth();
        (src / depth, src % depth)
    }

    fn ring_of(&self, src: usize) -> &Ring {
        let (cpu, depth) = self.split(src);
        self.input.ring(cpu, depth)
    }
}

impl<I: DrainInput + ?Sized, S: CrashSink + ?Sized> Merge for DrainMerge<'_, I, S> {
    fn sources(&self) -> usize {
        self.ncpu * self.depth() + 1
    }

    fn bound(&self) -> u64 {
        u64::MAX
    }

    fn stop(&self) -> bool {
        self.mem.fixed.gen.load(Ordering::Relaxed) != self.gen
    }

    #[inline(always)]
    fn head(&mut self, src: usize, steps: &mut u64) -> Option<Key> {
        let st = self.mem.fixed;
        if src == self.main_src() {
            let ring = self.input.main();
            let end = st.main_end.load(Ordering::Relaxed);
            for _ in 0..3 {
                let mut cur = st.main_cursor();
                if !seq_before(cur.seq, end) {
                    return None;
                }
                *steps += 1;
                match ring.peek(&mut cur) {
                    (Read::Record, h) => return Some(self.key(src, &h)),
                    (Read::Overwritten { .. }, _) => self.main_lapped(st.main_cursor().seq, cur),
                    // Published before the snapshot, not visible or overwritten since: a flush that
                    // did not stop rewrote the main log under us.
                    (Read::Empty | Read::InFlight, _) => {
                        self.main_lapped(
                            cur.seq,
                            Cursor {
                                pos: cur.pos,
                                seq: end,
                            },
                        );
                        return None;
                    }
                }
            }
            return None;
        }
        let ring = self.ring_of(src);
        let s = self.mem.source(src);
        for _ in 0..3 {
            let mut cur = s.cursor();
            if !seq_before(cur.seq, s.end()) {
                return None;
            }
            *steps += 1;
            match ring.peek(&mut cur) {
                (Read::Record, h) => return Some(self.key(src, &h)),
                (Read::Overwritten { .. }, _) => self.ring_lapped(s, s.cursor().seq, cur),
                (Read::Empty | Read::InFlight, _) => {
                    self.end_ring_here(s);
                    return None;
                }
            }
        }
        None
    }

    #[inline(always)]
    fn look(
        &mut self,
        src: usize,
        buf: &mut RecordBuf,
        take: impl FnOnce(Key) -> bool,
        _steps: &mut u64,
    ) -> Look {
        let key = |h: &Header| self.key(src, h);
        if src == self.main_src() {
            let st = self.mem.fixed;
            let end = st.main_end.load(Ordering::Relaxed);
            let r = look_at(self.input.main(), st.main_cursor(), end, buf, key, take);
            // The flush's stamp stays in the main log (see `Header::reserved`).
            buf.header.reserved = 0;
            return r;
        }
        let s = self.mem.source(src);
        look_at(self.ring_of(src), s.cursor(), s.end(), buf, key, take)
    }

    #[inline(always)]
    fn deliver(&mut self, src: usize, buf: &RecordBuf, next: Cursor) -> bool {
        let origin = if src == self.main_src() {
            self.mem.fixed.set_main_cursor(next);
            self.from_main += 1;
            Origin::Main { seq: buf.seq }
        } else {
            self.mem.source(src).set_cursor(next);
            let (cpu, depth) = self.split(src);
            Origin::Ring { cpu, depth }
        };
        self.records += 1;
        self.last_ts = self.last_ts.max(buf.header.ts_ns);
        self.sink.record(origin, buf)
    }

    #[inline(always)]
    fn takes_runs(&self) -> bool {
        self.runs
    }

    /// A ring's run straight into the sink's room (`Ring::read_run`: one validation, and one
    /// store of the source's cursor — the drain's journal of how far it got there — for the
    /// whole run).
    #[inline(always)]
    fn take_run(
        &mut self,
        src: usize,
        bound: u64,
        second: Option<Key>,
        limit: u64,
        steps: &mut u64,
    ) -> Option<RunStep> {
        if src == self.main_src() {
            return None;
        }
        self.ring_run(src, bound, second, limit, steps)
    }
}

impl<I: DrainInput + ?Sized, S: CrashSink + ?Sized> DrainMerge<'_, I, S> {
    /// [`Merge::take_run`] of ring source `src`.
    #[inline(always)]
    fn ring_run(
        &mut self,
        src: usize,
        bound: u64,
        second: Option<Key>,
        limit: u64,
        steps: &mut u64,
    ) -> Option<RunStep> {
        let input = self.input;
        let s = self.mem.source(src);
        let (cur, end) = (s.cursor(), s.end());
        if !seq_before(cur.seq, end) {
            return None;
        }
        let max = (end.wrapping_sub(cur.seq) as u64).min(limit) as usize;
        let (cpu, depth) = self.split(src);
        let ring = input.ring(cpu, depth);
        let Some(sink) = self.sink.runs() else {
            self.runs = false;
            return None;
        };
        let key = |ts| Key {
            ts,
            tie: ring_tie(src),
            src: src as u32,
        };
        let newest = run_ts_limit(ring_tie(src), src as u32, bound, second);
        let r = ring.read_run(cur, max, sink.run_room(), |ts| {
            newest.is_some_and(|n| ts <= n)
        });
        *steps += r.looked as u64;
        if r.end == RunEnd::Invalid {
            // A writer that did not stop overwrote the run's first record: the record-at-a-time
            // read resynchronises and counts what it lost.
            self.runs = false;
            return Some(RunStep::Continue);
        }
        if r.records > 0 {
            if self.mem.fixed.gen.load(Ordering::Relaxed) != self.gen {
                // A nested drain superseded this one (`Merge::stop`): the run is not handed on.
                return Some(RunStep::Interrupted);
            }
            s.set_cursor(r.next);
            self.records += r.records as u64;
            self.last_ts = self.last_ts.max(r.last_ts);
            if !sink.run_taken(Origin::Ring { cpu, depth }, r.words, r.records) {
                return Some(RunStep::Refused);
            }
        }
        Some(match r.end {
            RunEnd::NotTaken(ts) => RunStep::NotTaken(key(ts)),
            _ => RunStep::Continue,
        })
    }
}
