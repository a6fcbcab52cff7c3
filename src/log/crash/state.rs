//! The crash drain's own memory, and its snapshot.
//!
//! Contract: the drain writes only this memory (and its sink). For a live log it is the
//! [`DrainState`] in the static `Log`, written only by the crashing CPU (the drain checks it is
//! that CPU); a recovery tool draining a log it found in a dump brings its own
//! ([`RecoveryScratch`](crate::recover::RecoveryScratch)). Its words are atomics accessed
//! `Relaxed`, so a nested crash that runs the drain again on the same CPU is never undefined
//! behaviour. The snapshot (see the parent module's docs) reads the flush cursors (LMM(cursor:B)),
//! the main log and every ring through a [`DrainInput`], and writes only here.

use super::super::merge::{HeapView, Slot, SlotStore};
use super::input::DrainInput;
use crate::ring::{span_words, Cursor, Read};
use crate::sync::{array_of, const_or_loom_fn, AtomicUsize, Ordering};

pub(crate) const STOPPED: usize = 1;
pub(crate) const TORN: usize = 2;

/// The crash drain's working memory for one (CPU, depth) source: where its reading starts, ends and
/// is, what it found lost, and the source's merge-heap slot (15 words on 64-bit targets).
///
/// A live `Log` holds one per source. A tool that rebuilds a log from a memory dump
/// ([`crate::recover`]) brings its own, one per source of the dumped log: a `static` array on a
/// target without allocation, a `Vec` on a host.
///
/// ```
/// use nmilog::recover::DrainSource;
/// static SCRATCH: [DrainSource; 16] = [const { DrainSource::new() }; 16];
/// assert_eq!(SCRATCH.len(), 16);
/// ```
pub struct DrainSource {
    /// Where this drain's reading starts (first record at or past the threshold)...
    pub(crate) start_pos: AtomicUsize,
    pub(crate) start_seq: AtomicUsize,
    /// ...and where it is.
    pub(crate) pos: AtomicUsize,
    pub(crate) seq: AtomicUsize,
    /// One past the last record to deliver: the ring's `next_seq` at the snapshot...
    pub(crate) snap_end: AtomicUsize,
    /// ...and during the merge (cut short where committed records were not visible).
    pub(crate) end: AtomicUsize,
    /// `STOPPED`, `TORN` (snapshot).
    pub(crate) flags: AtomicUsize,
    /// A log call in progress at the snapshot on a CPU not known to be stopped (0 or 1).
    pub(crate) in_flight: AtomicUsize,
    /// Records published before the snapshot but not visible to the merge (a CPU that did not stop).
    pub(crate) late: AtomicUsize,
    /// The flush's overwritten count at the snapshot.
    pub(crate) flush_overwritten: AtomicUsize,
    /// Records the snapshot found overwritten (between the threshold and the oldest record).
    pub(crate) found_overwritten: AtomicUsize,
    /// Records lapped under the merge by a writer that did not stop.
    pub(crate) lapped: AtomicUsize,
    /// The source's merge-heap slot.
    slot: Slot,
}

impl core::fmt::Debug for DrainSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DrainSource")
            .field("end", &self.end())
            .field("torn", &self.torn())
            .field("in_flight", &self.in_flight())
            .field("overwritten", &self.overwritten())
            .finish_non_exhaustive()
    }
}

impl Default for DrainSource {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotStore for [DrainSource] {
    #[inline(always)]
    fn slot_at(&self, i: usize) -> Option<&Slot> {
        self.get(i).map(|s| &s.slot)
    }
    #[inline(always)]
    fn slot_count(&self) -> usize {
        self.len()
    }
}

impl DrainSource {
    const_or_loom_fn! {
        /// Fresh memory (its contents do not matter: every drain sets what it reads).
        pub fn new() -> Self {
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
                slot: Slot::new(),
            }
        }
    }
    #[inline]
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos.load(Ordering::Relaxed),
            seq: self.seq.load(Ordering::Relaxed),
        }
    }
    #[inline]
    pub(crate) fn set_cursor(&self, c: Cursor) {
        self.pos.store(c.pos, Ordering::Relaxed);
        self.seq.store(c.seq, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn end(&self) -> usize {
        self.end.load(Ordering::Relaxed)
    }
    fn flags(&self) -> usize {
        self.flags.load(Ordering::Relaxed)
    }
    pub(crate) fn add(w: &AtomicUsize, n: usize) {
        w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    /// Back to the snapshot's start, for a drain over the same snapshot.
    fn rewind(&self) {
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
    pub(crate) fn torn(&self) -> usize {
        usize::from(self.flags() & TORN != 0)
    }
    /// In-flight records at the last drain.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
            .load(Ordering::Relaxed)
            .wrapping_add(self.late.load(Ordering::Relaxed))
    }
    /// Overwritten records as of the last drain: the flush's and the drain's.
    pub(crate) fn overwritten(&self) -> usize {
        self.flush_overwritten
            .load(Ordering::Relaxed)
            .wrapping_add(self.found_overwritten.load(Ordering::Relaxed))
            .wrapping_add(self.lapped.load(Ordering::Relaxed))
    }
    /// Whether the CPU was known to be stopped at the last drain.
    pub(crate) fn stopped(&self) -> bool {
        self.flags() & STOPPED != 0
    }
}

/// The drain's words that do not depend on the number of sources: its generation, the main window
/// and the merge heap's own words.
pub(crate) struct DrainFixed {
    /// Incremented by each drain; 0: no drain ran yet. A drain that finds it changed was superseded
    /// by a nested one and stops.
    pub(crate) gen: AtomicUsize,
    /// The main window: where reading starts, where it is, and its end.
    pub(crate) main_start_pos: AtomicUsize,
    pub(crate) main_start_seq: AtomicUsize,
    pub(crate) main_pos: AtomicUsize,
    pub(crate) main_seq: AtomicUsize,
    pub(crate) main_end: AtomicUsize,
    /// Main-log records overwritten under the drain.
    pub(crate) main_lost: AtomicUsize,
    /// The merge heap's slot for the main window, and its length.
    heap_extra: Slot,
    heap_len: AtomicUsize,
}

impl core::fmt::Debug for DrainFixed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DrainFixed")
            .field("gen", &self.gen.load(Ordering::Relaxed))
            .field("main_end", &self.main_end.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DrainFixed {
    const_or_loom_fn! {
        pub(crate) fn new() -> Self {
            DrainFixed {
                gen: AtomicUsize::new(0),
                main_start_pos: AtomicUsize::new(0),
                main_start_seq: AtomicUsize::new(0),
                main_pos: AtomicUsize::new(0),
                main_seq: AtomicUsize::new(0),
                main_end: AtomicUsize::new(0),
                main_lost: AtomicUsize::new(0),
                heap_extra: Slot::new(),
                heap_len: AtomicUsize::new(0),
            }
        }
    }

    /// Whether a drain ran.
    pub(crate) fn ran(&self) -> bool {
        self.gen.load(Ordering::Relaxed) != 0
    }

    #[inline]
    pub(crate) fn main_cursor(&self) -> Cursor {
        Cursor {
            pos: self.main_pos.load(Ordering::Relaxed),
            seq: self.main_seq.load(Ordering::Relaxed),
        }
    }
    #[inline]
    pub(crate) fn set_main_cursor(&self, c: Cursor) {
        self.main_pos.store(c.pos, Ordering::Relaxed);
        self.main_seq.store(c.seq, Ordering::Relaxed);
    }
}

/// The crash drain's state in the static `Log`: written only by the crashing CPU (the one that won
/// [`Log::crash_enter`](crate::Log::crash_enter)), read by it and by
/// [`Log::counters`](crate::Log::counters). In the static `Log`, so that the drain's stack use does
/// not grow with the CPU count.
pub(crate) struct DrainState<const CPUS: usize, const DEPTH: usize> {
    pub(crate) fixed: DrainFixed,
    sources: [[DrainSource; DEPTH]; CPUS],
}

impl<const CPUS: usize, const DEPTH: usize> DrainState<CPUS, DEPTH> {
    const_or_loom_fn! {
        pub(crate) fn new() -> Self {
            DrainState {
                fixed: DrainFixed::new(),
                sources: array_of!(array_of!(DrainSource::new(); DEPTH); CPUS),
            }
        }
    }

    /// This memory as the drain uses it.
    pub(crate) fn mem(&self) -> DrainMem<'_> {
        DrainMem {
            fixed: &self.fixed,
            sources: self.sources.as_flattened(),
        }
    }
}

/// The drain's memory, wherever it lives: its fixed words and one [`DrainSource`] per (CPU, depth)
/// of the log it drains (source `cpu * depth + d`; the drain checks there are enough).
#[derive(Clone, Copy)]
pub(crate) struct DrainMem<'a> {
    pub(crate) fixed: &'a DrainFixed,
    pub(crate) sources: &'a [DrainSource],
}

impl<'a> DrainMem<'a> {
    /// The merge heap: a slot in each source, plus the main window's.
    pub(crate) fn heap(&self) -> HeapView<'a, [DrainSource]> {
        HeapView {
            slots: self.sources,
            extra: &self.fixed.heap_extra,
            len: &self.fixed.heap_len,
        }
    }

    /// Source `i` (`cpu * depth + d`). The drain checked `sources.len()` covers every source.
    #[inline(always)]
    pub(crate) fn source(&self, i: usize) -> &DrainSource {
        &self.sources[i]
    }

    /// Puts every cursor back where the last snapshot's reading started, for `n` sources.
    pub(crate) fn rewind(&self, n: usize) {
        let st = self.fixed;
        st.main_pos
            .store(st.main_start_pos.load(Ordering::Relaxed), Ordering::Relaxed);
        st.main_seq
            .store(st.main_start_seq.load(Ordering::Relaxed), Ordering::Relaxed);
        st.main_lost.store(0, Ordering::Relaxed);
        for s in &self.sources[..n] {
            s.rewind();
        }
    }
}

/// The full overwritten count whose low 32 bits are `stamp`, nearest to `base` (a count read from
/// the same consumer at about the same time: the two differ by far less than 2^31).
///
/// ```text
/// widen_stamp(0x1_0000_0005, 7)          == 0x1_0000_0007
/// widen_stamp(0x1_0000_0002, 0xffff_fffe) == 0x0_ffff_fffe   (64-bit)
/// ```
#[inline]
pub(crate) fn widen_stamp(base: usize, stamp: u32) -> usize {
    let delta = stamp.wrapping_sub(base as u32) as i32;
    base.wrapping_add(delta as isize as usize)
}

/// `a < b` for sequence numbers that may wrap (as ring positions do).
#[inline(always)]
pub(crate) fn seq_before(a: usize, b: usize) -> bool {
    crate::ring::before(a, b)
}

/// The snapshot (see the module docs): thresholds, the main window, each ring's end and state.
/// `me` is the crashing CPU (always stopped); `stopped` says which others are.
pub(crate) fn snapshot<I: DrainInput + ?Sized>(
    input: &I,
    mem: DrainMem<'_>,
    stopped: &dyn Fn(usize) -> bool,
    steps: &mut u64,
) {
    let st = mem.fixed;
    let (ncpu, depth, me) = (input.cpus(), input.depth(), input.me());
    // 1. How far the flush got, per source. LMM(cursor:B) in `seq_for_drain`.
    for c in 0..ncpu {
        for d in 0..depth {
            let f = input.flushed(c, d);
            let s = mem.source(c * depth + d);
            s.start_seq.store(f.seq, Ordering::Relaxed);
            // Every record before `f.seq` is in the main log or counted here (an owner stopped
            // in the middle of an update included).
            s.flush_overwritten
                .store(f.overwritten_at_seq(), Ordering::Relaxed);
        }
    }
    // 2. The main window, and the highest source sequence number in it per source.
    let main = input.main();
    let end = main.next_seq() as usize;
    let mut cur = main.oldest();
    let start = cur;
    let mut first = true;
    let per_main = main.capacity_words() / span_words(0) + 1;
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
                    // The window starts at its first record (a resynchronisation before it means
                    // records were overwritten by the main log's own wrapping).
                    st.main_start_pos.store(at.pos, Ordering::Relaxed);
                    st.main_start_seq.store(at.seq, Ordering::Relaxed);
                    first = false;
                }
                // Every record of the main log came from a ring (the drain's own accounting
                // records never go there).
                let (c, d) = (h.cpu as usize, h.context().1);
                if c < ncpu && d < depth {
                    let s = mem.source(c * depth + d);
                    let next = (h.src_seq as usize).wrapping_add(1);
                    if seq_before(s.start_seq.load(Ordering::Relaxed), next) {
                        s.start_seq.store(next, Ordering::Relaxed);
                        // The threshold now comes from this record, so the overwritten count
                        // comes with it: the flush stamped the record with its count when it
                        // moved it. The count read in step 1 may be older (an owner that did not
                        // stop passed overwritten records and moved this one after it): with it,
                        // the records it passed would be neither delivered nor counted.
                        let base = s.flush_overwritten.load(Ordering::Relaxed);
                        s.flush_overwritten
                            .store(widen_stamp(base, h.reserved), Ordering::Relaxed);
                    }
                }
            }
            (Read::Overwritten { .. }, _) => {}
            (Read::Empty | Read::InFlight, _) => break,
        }
    }
    // The window ends where the scan stopped: a record the flush owner committed past it (or that
    // was not visible yet) has a source sequence number at or past its ring's threshold and is
    // delivered from its ring.
    st.main_end.store(cur.seq, Ordering::Relaxed);
    st.main_pos
        .store(st.main_start_pos.load(Ordering::Relaxed), Ordering::Relaxed);
    st.main_seq
        .store(st.main_start_seq.load(Ordering::Relaxed), Ordering::Relaxed);
    // 3. Each ring: its end, the log call in progress, its start at the threshold.
    for c in 0..ncpu {
        let is_stopped = c == me || stopped(c);
        for d in 0..depth {
            let ring = input.ring(c, d);
            let s = mem.source(c * depth + d);
            let threshold = s.start_seq.load(Ordering::Relaxed);
            // The guard first (LMM(guard:D), Acquire): a call seen finished has its `next_seq` and
            // `head` visible below; a call seen in progress names its record's number.
            let call = ring.call_in_progress();
            let (head, ns) = ring.writer_state();
            let mut end = ns;
            let mut flags = if is_stopped { STOPPED } else { 0 };
            let mut in_flight = 0;
            // A call in progress whose record `next_seq` does not count yet (if it does, the record
            // is published: before `end`, delivered, or counted late by the merge if its words are
            // not visible yet).
            if call == Some(ns & (usize::MAX >> 1)) {
                // Committed but not yet counted in `next_seq` (the writer between steps 6 and 7):
                // whole, deliver it. Otherwise it is not complete: torn if the CPU is stopped for
                // good, in flight if it may still complete.
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
            let per_ring = ring.capacity_words() / span_words(0) + 1;
            for _ in 0..per_ring + 3 {
                if !seq_before(cur.seq, stop_at) {
                    break;
                }
                *steps += 1;
                let from = cur.seq;
                match ring.step_over(&mut cur) {
                    (Read::Record, _) => {}
                    (Read::Overwritten { .. }, _) => {
                        // Lapped while walking: what the jump passed beyond the threshold was never
                        // merged.
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
}

#[cfg(test)]
mod tests {
    use super::widen_stamp;

    #[test]
    fn widen_stamp_takes_the_count_nearest_the_base() {
        assert_eq!(widen_stamp(5, 7), 7);
        assert_eq!(widen_stamp(7, 5), 5); // a stamp behind the base (the take-back case)
        assert_eq!(widen_stamp(80, 80), 80);
        assert_eq!(widen_stamp(0, 2), 2);
        assert_eq!(widen_stamp(2, u32::MAX), usize::MAX); // wrapped below 0
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(widen_stamp(0x1_0000_0005, 7), 0x1_0000_0007);
            assert_eq!(widen_stamp(0x1_0000_0002, 0xffff_fffe), 0xffff_fffe);
            assert_eq!(widen_stamp(0x1_ffff_fffe, 3), 0x2_0000_0003);
        }
    }
}
