//! The crash drain's sources as the merge engine (`merge.rs`) sees them: every ring from its threshold
//! to its snapshot end, and the main log's window; and the delivery of each record to the sink.
//!
//! Contract: reads only (the rings and the main log, each record validated by its sequence words) and
//! writes only the drain's own cursors and counters in [`DrainState`](super::DrainState). Lapping by a
//! writer that did not stop is counted (`lapped`, `main_lost`), and records published before the
//! snapshot but not visible here are counted in flight, never waited for.

use super::super::merge::{Key, Look, Merge};
use super::super::Log;
use super::state::{seq_before, DrainSource};
use super::{CrashSink, DrainReport, Origin};
use crate::record::{Header, RecordBuf};
use crate::ring::{Cursor, Read, RecordRing};
use crate::sync::Ordering;
use crate::Platform;

/// One validated look at the record at `cur` in `ring` if it is before `end` (see [`Merge::look`]).
fn look_at<const WORDS: usize>(
    ring: &RecordRing<WORDS>,
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
pub(in crate::log) struct DrainMerge<
    'a,
    P: Platform,
    S: CrashSink + ?Sized,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
> {
    pub(in crate::log) log: &'a Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    pub(in crate::log) sink: &'a mut S,
    pub(in crate::log) ncpu: usize,
    pub(in crate::log) gen: usize,
    pub(in crate::log) rep: DrainReport,
}

impl<
        P: Platform,
        S: CrashSink + ?Sized,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > DrainMerge<'_, P, S, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// The main window's source index (after every ring's).
    fn main_src(&self) -> usize {
        self.ncpu * DEPTH
    }

    /// The main window wins every timestamp tie: its records were moved by earlier flushes, in the
    /// main log's order, and a ring record that ties with one is never older than it in its own ring
    /// (so each ring's records keep their order). Ties between rings go to the lower CPU, then the
    /// lower depth.
    fn tie_of(_: &Header) -> u32 {
        0
    }

    /// Ends ring source `(c, d)` at its cursor: what is left before its end is committed but not
    /// visible here (a writer that did not stop: in flight).
    fn end_ring_here(&self, s: &DrainSource) {
        let cur = s.cursor();
        let end = s.end();
        if seq_before(cur.seq, end) {
            DrainSource::add(&s.late, end.wrapping_sub(cur.seq));
            s.end.store(cur.seq, Ordering::Relaxed);
        }
    }

    /// A lapped ring cursor jumped by `missed`: count what it skipped inside `[.., end)`.
    fn ring_lapped(&self, s: &DrainSource, from: usize, to: Cursor) {
        let end = s.end();
        let upto = if seq_before(to.seq, end) { to.seq } else { end };
        if seq_before(from, upto) {
            DrainSource::add(&s.lapped, upto.wrapping_sub(from));
        }
        s.set_cursor(to);
    }

    fn main_lapped(&self, from: usize, to: Cursor) {
        let st = &self.log.crash;
        let end = st.main_end.load(Ordering::Relaxed);
        let upto = if seq_before(to.seq, end) { to.seq } else { end };
        if seq_before(from, upto) {
            DrainSource::add(&st.main_lost, upto.wrapping_sub(from));
        }
        st.set_main_cursor(to);
    }
}

impl<
        P: Platform,
        S: CrashSink + ?Sized,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Merge for DrainMerge<'_, P, S, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    fn sources(&self) -> usize {
        self.ncpu * DEPTH + 1
    }

    fn bound(&self) -> u64 {
        u64::MAX
    }

    fn stop(&self) -> bool {
        self.log.crash.gen.load(Ordering::Relaxed) != self.gen
    }

    fn head(&mut self, src: usize, steps: &mut u64) -> Option<Key> {
        let st = &self.log.crash;
        if src == self.main_src() {
            let ring = &self.log.main.ring;
            let end = st.main_end.load(Ordering::Relaxed);
            for _ in 0..3 {
                let mut cur = st.main_cursor();
                if !seq_before(cur.seq, end) {
                    return None;
                }
                *steps += 1;
                match ring.peek(&mut cur) {
                    (Read::Record, h) => {
                        return Some(Key {
                            ts: h.ts_ns,
                            tie: Self::tie_of(&h),
                            src: src as u32,
                        })
                    }
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
        let (c, d) = (src / DEPTH, src % DEPTH);
        let ring = &self.log.cpus[c].rings[d];
        let s = st.source(c, d);
        for _ in 0..3 {
            let mut cur = s.cursor();
            if !seq_before(cur.seq, s.end()) {
                return None;
            }
            *steps += 1;
            match ring.peek(&mut cur) {
                (Read::Record, h) => {
                    return Some(Key {
                        ts: h.ts_ns,
                        tie: ((src as u32) << 1) | 1,
                        src: src as u32,
                    })
                }
                (Read::Overwritten { .. }, _) => self.ring_lapped(s, s.cursor().seq, cur),
                (Read::Empty | Read::InFlight, _) => {
                    self.end_ring_here(s);
                    return None;
                }
            }
        }
        None
    }

    fn look(
        &mut self,
        src: usize,
        buf: &mut RecordBuf,
        take: impl FnOnce(Key) -> bool,
        _steps: &mut u64,
    ) -> Look {
        let st = &self.log.crash;
        if src == self.main_src() {
            let end = st.main_end.load(Ordering::Relaxed);
            let key = |h: &Header| Key {
                ts: h.ts_ns,
                tie: Self::tie_of(h),
                src: src as u32,
            };
            return look_at(&self.log.main.ring, st.main_cursor(), end, buf, key, take);
        }
        let (c, d) = (src / DEPTH, src % DEPTH);
        let s = st.source(c, d);
        let key = |h: &Header| Key {
            ts: h.ts_ns,
            tie: ((src as u32) << 1) | 1,
            src: src as u32,
        };
        look_at(
            &self.log.cpus[c].rings[d],
            s.cursor(),
            s.end(),
            buf,
            key,
            take,
        )
    }

    fn deliver(&mut self, src: usize, buf: &RecordBuf, next: Cursor) -> bool {
        let st = &self.log.crash;
        let origin = if src == self.main_src() {
            st.set_main_cursor(next);
            self.rep.from_main += 1;
            Origin::Main { seq: buf.seq }
        } else {
            let (c, d) = (src / DEPTH, src % DEPTH);
            st.source(c, d).set_cursor(next);
            self.rep.from_rings += 1;
            Origin::Ring { cpu: c, depth: d }
        };
        self.rep.records += 1;
        self.sink.record(origin, buf)
    }
}
