//! The crash drain's own memory and its snapshot.
//!
//! Contract: [`DrainState`] lives in the static `Log` and is written only by the crashing CPU (the
//! drain checks it is that CPU); its words are atomics accessed `Relaxed`, so a nested crash that runs
//! the drain again on the same CPU is never undefined behaviour. The snapshot (see the parent module's
//! docs) reads the consumers (LMM(cursor:B)), the main log and every ring, and writes only here.

use super::super::accounting::TsCell;
use super::super::merge::MergeHeap;
use super::super::Log;
use crate::ring::{span_words, Cursor, Read};
use crate::sync::{array_of, const_or_loom_fn, AtomicUsize, Ordering};
use crate::Platform;

pub(in crate::log) const STOPPED: usize = 1;
pub(in crate::log) const TORN: usize = 2;

/// The drain's view of one (CPU, depth) ring. The snapshot's fields are set by a fresh drain; the
/// merge's (`end`, `late`, `lapped`, the cursor) are reset from them by a drain over the same
/// snapshot.
pub(in crate::log) struct DrainSource {
    /// Where this drain's reading starts (first record at or past the threshold)...
    pub(in crate::log) start_pos: AtomicUsize,
    pub(in crate::log) start_seq: AtomicUsize,
    /// ...and where it is.
    pub(in crate::log) pos: AtomicUsize,
    pub(in crate::log) seq: AtomicUsize,
    /// One past the last record to deliver: the ring's `next_seq` at the snapshot...
    pub(in crate::log) snap_end: AtomicUsize,
    /// ...and during the merge (cut short where committed records were not visible).
    pub(in crate::log) end: AtomicUsize,
    /// `STOPPED`, `TORN` (snapshot).
    pub(in crate::log) flags: AtomicUsize,
    /// A log call in progress at the snapshot on a CPU not known to be stopped (0 or 1).
    pub(in crate::log) in_flight: AtomicUsize,
    /// Records published before the snapshot but not visible to the merge (a CPU that did not stop).
    pub(in crate::log) late: AtomicUsize,
    /// The flush's overwritten count at the snapshot.
    pub(in crate::log) flush_overwritten: AtomicUsize,
    /// Records the snapshot found overwritten (between the threshold and the oldest record).
    pub(in crate::log) found_overwritten: AtomicUsize,
    /// Records lapped under the merge by a writer that did not stop.
    pub(in crate::log) lapped: AtomicUsize,
}

impl DrainSource {
    const_or_loom_fn! {
        pub(in crate::log) fn new() -> Self {
            DrainSource {
                start_pos: AtomicUsize::new(0),
                start_seq: AtomicUsize::new(0),
                pos: AtomicUsize::new(0),
                seq: AtomicUsize::new(0),
                snap_end: AtomicUsize::new(0),
                end: AtomicUsize::new(0),
                flags: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                late: AtomicUsize::new(0),
                flush_overwritten: AtomicUsize::new(0),
                found_overwritten: AtomicUsize::new(0),
                lapped: AtomicUsize::new(0),
            }
        }
    }
    pub(in crate::log) fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos.load(Ordering::Relaxed),
            seq: self.seq.load(Ordering::Relaxed),
        }
    }
    pub(in crate::log) fn set_cursor(&self, c: Cursor) {
        self.pos.store(c.pos, Ordering::Relaxed);
        self.seq.store(c.seq, Ordering::Relaxed);
    }
    pub(in crate::log) fn end(&self) -> usize {
        self.end.load(Ordering::Relaxed)
    }
    pub(in crate::log) fn flags(&self) -> usize {
        self.flags.load(Ordering::Relaxed)
    }
    pub(in crate::log) fn add(w: &AtomicUsize, n: usize) {
        w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    /// Back to the snapshot's start, for a drain over the same snapshot.
    pub(in crate::log) fn rewind(&self) {
        self.pos
            .store(self.start_pos.load(Ordering::Relaxed), Ordering::Relaxed);
        self.seq
            .store(self.start_seq.load(Ordering::Relaxed), Ordering::Relaxed);
        self.end
            .store(self.snap_end.load(Ordering::Relaxed), Ordering::Relaxed);
        self.late.store(0, Ordering::Relaxed);
        self.lapped.store(0, Ordering::Relaxed);
    }
    /// Torn records at the last drain (0 or 1).
    pub(in crate::log) fn torn(&self) -> usize {
        usize::from(self.flags() & TORN != 0)
    }
    /// In-flight records at the last drain.
    pub(in crate::log) fn in_flight(&self) -> usize {
        self.in_flight
            .load(Ordering::Relaxed)
            .wrapping_add(self.late.load(Ordering::Relaxed))
    }
    /// Overwritten records as of the last drain: the flush's and the drain's.
    pub(in crate::log) fn overwritten(&self) -> usize {
        self.flush_overwritten
            .load(Ordering::Relaxed)
            .wrapping_add(self.found_overwritten.load(Ordering::Relaxed))
            .wrapping_add(self.lapped.load(Ordering::Relaxed))
    }
    /// Whether the CPU was known to be stopped at the last drain.
    pub(in crate::log) fn stopped(&self) -> bool {
        self.flags() & STOPPED != 0
    }
}

/// The crash drain's own state: written only by the crashing CPU (the one that won
/// [`Log::crash_enter`]), read by it and by [`Log::counters`]. In the static `Log`, so that the
/// drain's stack use does not grow with the CPU count.
pub(in crate::log) struct DrainState<const CPUS: usize, const DEPTH: usize> {
    /// Incremented by each drain; 0: no drain ran yet. A drain that finds it changed was superseded
    /// by a nested one and stops.
    pub(in crate::log) gen: AtomicUsize,
    pub(in crate::log) sources: [[DrainSource; DEPTH]; CPUS],
    /// The main window: where reading starts, where it is, and its end (main-log `next_seq`).
    pub(in crate::log) main_start_pos: AtomicUsize,
    pub(in crate::log) main_start_seq: AtomicUsize,
    pub(in crate::log) main_pos: AtomicUsize,
    pub(in crate::log) main_seq: AtomicUsize,
    pub(in crate::log) main_end: AtomicUsize,
    /// Main-log records overwritten under the drain.
    pub(in crate::log) main_lost: AtomicUsize,
    /// The snapshot's time (accounting records are stamped no earlier).
    pub(in crate::log) snapshot_ts: TsCell,
    pub(in crate::log) heap: MergeHeap<CPUS, DEPTH>,
}

impl<const CPUS: usize, const DEPTH: usize> DrainState<CPUS, DEPTH> {
    const_or_loom_fn! {
        pub(in crate::log) fn new() -> Self {
            DrainState {
                gen: AtomicUsize::new(0),
                sources: array_of!(array_of!(DrainSource::new(); DEPTH); CPUS),
                main_start_pos: AtomicUsize::new(0),
                main_start_seq: AtomicUsize::new(0),
                main_pos: AtomicUsize::new(0),
                main_seq: AtomicUsize::new(0),
                main_end: AtomicUsize::new(0),
                main_lost: AtomicUsize::new(0),
                snapshot_ts: TsCell::new(),
                heap: MergeHeap::new(),
            }
        }
    }

    /// The drain's view of source `(cpu, depth)` (both in range: the caller checked).
    pub(in crate::log) fn source(&self, cpu: usize, depth: usize) -> &DrainSource {
        &self.sources[cpu][depth]
    }

    /// Whether a drain ran.
    pub(in crate::log) fn ran(&self) -> bool {
        self.gen.load(Ordering::Relaxed) != 0
    }

    pub(in crate::log) fn main_cursor(&self) -> Cursor {
        Cursor {
            pos: self.main_pos.load(Ordering::Relaxed),
            seq: self.main_seq.load(Ordering::Relaxed),
        }
    }
    pub(in crate::log) fn set_main_cursor(&self, c: Cursor) {
        self.main_pos.store(c.pos, Ordering::Relaxed);
        self.main_seq.store(c.seq, Ordering::Relaxed);
    }
}

/// `a < b` for sequence numbers that may wrap (as ring positions do).
#[inline(always)]
pub(in crate::log) fn seq_before(a: usize, b: usize) -> bool {
    crate::ring::before(a, b)
}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Puts every cursor back where the last snapshot's reading started.
    pub(in crate::log) fn rewind(&self, ncpu: usize) {
        let st = &self.crash;
        st.main_pos
            .store(st.main_start_pos.load(Ordering::Relaxed), Ordering::Relaxed);
        st.main_seq
            .store(st.main_start_seq.load(Ordering::Relaxed), Ordering::Relaxed);
        st.main_lost.store(0, Ordering::Relaxed);
        for c in 0..ncpu {
            for s in &st.sources[c] {
                s.rewind();
            }
        }
    }

    /// The snapshot (see the module docs): thresholds, the main window, each ring's end and state.
    pub(in crate::log) fn snapshot(
        &self,
        me: usize,
        ncpu: usize,
        stopped: &dyn Fn(usize) -> bool,
        steps: &mut u64,
    ) {
        let st = &self.crash;
        st.snapshot_ts.set(self.platform.now_ns());
        // 1. How far the flush got, per source. LMM(cursor:B) in `seq_for_drain`.
        for c in 0..ncpu {
            for d in 0..DEPTH {
                let cons = &self.main.consumers[c][d];
                let s = st.source(c, d);
                s.start_seq.store(cons.seq_for_drain(), Ordering::Relaxed);
                s.flush_overwritten
                    .store(cons.overwritten.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        // 2. The main window, and the highest source sequence number in it per source.
        let main = &self.main.ring;
        let end = main.next_seq() as usize;
        let mut cur = main.oldest();
        let start = cur;
        let mut first = true;
        let per_main = MAIN_WORDS / span_words(0) + 1;
        st.main_end.store(end, Ordering::Relaxed);
        st.main_lost.store(0, Ordering::Relaxed);
        st.main_start_pos.store(start.pos, Ordering::Relaxed);
        st.main_start_seq.store(start.seq, Ordering::Relaxed);
        for _ in 0..per_main + 3 {
            if !seq_before(cur.seq, end) {
                break;
            }
            *steps += 1;
            let at = cur;
            match main.step_over(&mut cur) {
                (Read::Record, h) => {
                    if first {
                        // The window starts at its first record (a resynchronisation before it
                        // means records were overwritten by the main log's own wrapping).
                        st.main_start_pos.store(at.pos, Ordering::Relaxed);
                        st.main_start_seq.store(at.seq, Ordering::Relaxed);
                        first = false;
                    }
                    // Every record of the main log came from a ring (the drain's own accounting
                    // records never go there).
                    let (c, d) = (h.cpu as usize, h.context().1);
                    if c < ncpu && d < DEPTH {
                        let s = st.source(c, d);
                        let next = (h.src_seq as usize).wrapping_add(1);
                        if seq_before(s.start_seq.load(Ordering::Relaxed), next) {
                            s.start_seq.store(next, Ordering::Relaxed);
                        }
                    }
                }
                (Read::Overwritten { .. }, _) => {}
                (Read::Empty | Read::InFlight, _) => break,
            }
        }
        // The window ends where the scan stopped: a record the flush owner committed past it (or
        // that was not visible yet) has a source sequence number at or past its ring's threshold and
        // is delivered from its ring.
        st.main_end.store(cur.seq, Ordering::Relaxed);
        st.main_pos
            .store(st.main_start_pos.load(Ordering::Relaxed), Ordering::Relaxed);
        st.main_seq
            .store(st.main_start_seq.load(Ordering::Relaxed), Ordering::Relaxed);
        // 3. Each ring: its end, the log call in progress, its start at the threshold.
        let per_ring = RING_WORDS / span_words(0) + 1;
        for c in 0..ncpu {
            let is_stopped = c == me || stopped(c);
            for d in 0..DEPTH {
                let ring = &self.cpus[c].rings[d];
                let s = st.source(c, d);
                let threshold = s.start_seq.load(Ordering::Relaxed);
                // The guard first (LMM(guard:D), Acquire): a call seen finished has its `next_seq`
                // and `head` visible below; a call seen in progress names its record's number.
                let call = ring.call_in_progress();
                let (head, ns) = ring.writer_state();
                let mut end = ns;
                let mut flags = if is_stopped { STOPPED } else { 0 };
                let mut in_flight = 0;
                // A call in progress whose record `next_seq` does not count yet (if it does, the
                // record is published: before `end`, delivered, or counted late by the merge if its
                // words are not visible yet).
                if call == Some(ns & (usize::MAX >> 1)) {
                    // Committed but not yet counted in `next_seq` (the writer between steps 6 and
                    // 7): whole, deliver it. Otherwise it is not complete: torn if the CPU is
                    // stopped for good, in flight if it may still complete.
                    *steps += 1;
                    if ring.peek(&mut Cursor { pos: head, seq: ns }).0 == Read::Record {
                        end = ns.wrapping_add(1);
                    } else if is_stopped {
                        flags |= TORN;
                    } else {
                        in_flight = 1;
                    }
                }
                s.snap_end.store(end, Ordering::Relaxed);
                s.end.store(end, Ordering::Relaxed);
                s.flags.store(flags, Ordering::Relaxed);
                s.in_flight.store(in_flight, Ordering::Relaxed);
                s.late.store(0, Ordering::Relaxed);
                s.lapped.store(0, Ordering::Relaxed);
                s.found_overwritten.store(0, Ordering::Relaxed);
                // Start at the oldest record, then walk past what is below the threshold.
                *steps += 1;
                let mut cur = ring.oldest();
                let stop_at = if seq_before(threshold, end) {
                    threshold
                } else {
                    end
                };
                if seq_before(stop_at, cur.seq) {
                    // Overwritten before anyone merged them.
                    let upto = if seq_before(cur.seq, end) {
                        cur.seq
                    } else {
                        end
                    };
                    if seq_before(stop_at, upto) {
                        s.found_overwritten
                            .store(upto.wrapping_sub(stop_at), Ordering::Relaxed);
                    }
                }
                for _ in 0..per_ring + 3 {
                    if !seq_before(cur.seq, stop_at) {
                        break;
                    }
                    *steps += 1;
                    let from = cur.seq;
                    match ring.step_over(&mut cur) {
                        (Read::Record, _) => {}
                        (Read::Overwritten { .. }, _) => {
                            // Lapped while walking: what the jump passed beyond the threshold was
                            // never merged.
                            let lo = if seq_before(from, stop_at) {
                                stop_at
                            } else {
                                from
                            };
                            let hi = if seq_before(cur.seq, end) {
                                cur.seq
                            } else {
                                end
                            };
                            if seq_before(lo, hi) {
                                DrainSource::add(&s.found_overwritten, hi.wrapping_sub(lo));
                            }
                        }
                        (Read::Empty | Read::InFlight, _) => break,
                    }
                }
                s.start_pos.store(cur.pos, Ordering::Relaxed);
                s.start_seq.store(cur.seq, Ordering::Relaxed);
                s.set_cursor(cur);
            }
        }
        // Sources past the CPU count: nothing.
        for c in ncpu..CPUS {
            for s in &st.sources[c] {
                s.snap_end
                    .store(s.start_seq.load(Ordering::Relaxed), Ordering::Relaxed);
                s.end
                    .store(s.start_seq.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }
}
