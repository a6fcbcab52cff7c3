//! Accounting: the flush side's state of each source ring (its cursor and the records it found
//! overwritten) and the per-ring loss counters.
//!
//! Contract: a [`Consumer`] is written only by the flush owner, with plain loads and stores (no
//! read-modify-write), so it costs nothing on CAS-less targets. The crash drain only *reads* it (a
//! flush owner that did not stop may still be writing it): its cursor is stored `seq` first, with
//! Release (LMM(cursor:A)), after the record it covers was committed to the main log, so a drain that
//! loads the `seq` with Acquire (LMM(cursor:B)) and then reads the main log finds every record the
//! cursor says was moved (see `crash.rs`).
//!
//! Every loss is counted once per ring ([`CpuCounters`], [`Log::counters`]): records overwritten
//! before anyone merged them (found by the flush, or by the last crash drain), records frozen
//! mid-write on a CPU known to be stopped (torn), records in flight on a CPU *not* known to be stopped
//! at the last crash drain, and log calls the writer refused. The crash drain reports the losses as
//! accounting records at the end of its output.

use super::Log;
use crate::ring::Cursor;
use crate::sync::{const_or_loom_fn, signal_fence, AtomicUsize, Ordering};
use crate::Platform;

/// Loss counters of one (CPU, depth) ring.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{CpuCounters, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.nmi_enter();
/// let _ = LOG.append_raw(Level::Emerg, 0, 0, &[0; 4096]); // too large: refused
/// LOG.nmi_exit();
/// let c: CpuCounters = LOG.counters(0, 1).unwrap(); // CPU 0, depth 1 (the NMI's ring)
/// assert_eq!(c, CpuCounters { dropped: 1, ..CpuCounters::default() });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Records the last crash drain found frozen mid-write on a CPU known to be stopped (or on the
    /// crashing CPU itself, below its crash context).
    pub torn: u64,
    /// Records overwritten in the ring before anyone merged them (found by the flush, and by the last
    /// crash drain).
    pub overwritten: u64,
    /// Log calls refused by the writer (recursion, too large) — and, for depth 0, calls refused for
    /// nesting too deep on this CPU.
    pub dropped: u64,
    /// Records the last crash drain found being written — or committed but not yet published — on a
    /// CPU that was **not** known to be stopped: they may still complete, and a later drain (or the
    /// handover image written after it) then delivers them.
    pub in_flight: u64,
}

/// Flush-side state of one source ring (written only by the flush owner; read by the crash drain).
///
/// Three counts describe how far the flush got: the cursor's `seq` (records passed), `overwritten`
/// (passed because they were overwritten, or too large for the main log) and `moved` (passed into
/// the main log). Once an update is complete, `seq == overwritten + moved` (wrapping). Each update
/// changes two of them, one store at a time, in an order that lets a crash drain tell a half-done
/// update from a done one, whatever store the owner was stopped after ([`FlushState`]):
///
/// * passing overwritten records: `overwritten`, then `seq`;
/// * moving records: the main-log commit, then `seq`, then `moved`.
pub(super) struct Consumer {
    pos: AtomicUsize,
    seq: AtomicUsize,
    /// Timestamp of the last record moved from this source (the normal flush's bound).
    pub(super) last_ts: TsCell,
    /// Records overwritten before the flush read them.
    pub(super) overwritten: AtomicUsize,
    /// Records moved into the main log (a joined line counts each of its pieces).
    moved: AtomicUsize,
}

impl Consumer {
    const_or_loom_fn! {
        pub(super) fn new() -> Self {
            Consumer {
                pos: AtomicUsize::new(0),
                seq: AtomicUsize::new(0),
                last_ts: TsCell::new(),
                overwritten: AtomicUsize::new(0),
                moved: AtomicUsize::new(0),
            }
        }
    }

    /// The cursor (flush owner only: it alone stores it).
    #[inline]
    pub(super) fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos.load(Ordering::Relaxed),
            seq: self.seq.load(Ordering::Relaxed),
        }
    }

    /// Sequence number of the next record this consumer reads (flush owner's view).
    #[inline(always)]
    pub(super) fn seq(&self) -> usize {
        self.seq.load(Ordering::Relaxed)
    }

    /// The crash drain's view of how far the flush got. LMM(cursor:B): Acquire, pairs with
    /// LMM(cursor:A) in [`set_cursor`](Self::set_cursor): every main-log record the flush committed
    /// before storing this `seq` is visible to the drain's scan of the main log that follows.
    pub(super) fn seq_for_drain(&self) -> usize {
        self.seq.load(Ordering::Acquire)
    }

    /// The word [`seq_for_drain`](Self::seq_for_drain) reads (a dump reader reads it there).
    pub(super) fn seq_word(&self) -> &AtomicUsize {
        &self.seq
    }

    /// The `moved` count's word (a dump reader reads it there).
    pub(super) fn moved_word(&self) -> &AtomicUsize {
        &self.moved
    }

    /// The crash drain's view of this consumer. The loads go in the reverse order of the stores
    /// of an update (`moved`, then `seq`, then `overwritten`), so that for an owner that did not
    /// stop either, a later count is never seen without the earlier ones it follows.
    pub(super) fn state_for_drain(&self) -> FlushState {
        // LMM(moved:B): Acquire, pairs with LMM(moved:A) in `add_moved`: a drain that sees a
        // `moved` count sees the cursor `seq` stored before it.
        let moved = self.moved.load(Ordering::Acquire);
        let seq = self.seq_for_drain(); // LMM(cursor:B)
                                        // Relaxed: stored before the `seq` above (Release, LMM(cursor:A)).
        let overwritten = self.overwritten.load(Ordering::Relaxed);
        FlushState {
            seq,
            overwritten,
            moved,
        }
    }

    /// Adds `n` to the `moved` count, after [`set_cursor`](Self::set_cursor) moved `seq` past the
    /// records it counts. LMM(moved:A): Release, pairs with LMM(moved:B) in
    /// [`state_for_drain`](Self::state_for_drain).
    #[inline]
    pub(super) fn add_moved(&self, n: usize) {
        let v = self.moved.load(Ordering::Relaxed);
        self.moved.store(v.wrapping_add(n), Ordering::Release);
    }

    #[inline]
    pub(super) fn set_cursor(&self, c: Cursor) {
        // `seq` first: an owner stopped between the two stores leaves (old pos, new seq); for a
        // resync the old position is behind the tail, so the next reader resynchronises again (with
        // nothing missed). LMM(cursor:A): Release, pairs with LMM(cursor:B) in `seq_for_drain`: the
        // main-log record this store covers (committed just before, LMM(write:D) on the main log) is
        // visible to a crash drain that sees the new `seq`.
        self.seq.store(c.seq, Ordering::Release);
        // LMM(cursor:C): signal fence, pairs with the stop handshake (LMM(checkin:A), the crash
        // NMI's check-in on this CPU): `seq` lands before `pos` in program order, so an owner
        // frozen between them leaves (old pos, new seq), never the reverse. (Release orders only
        // earlier accesses, not this later store.)
        signal_fence();
        self.pos.store(c.pos, Ordering::Relaxed);
    }

    /// Adds to a counter only the flush owner writes: load + store, no RMW.
    pub(super) fn add(counter: &AtomicUsize, n: u64) {
        let v = counter.load(Ordering::Relaxed);
        counter.store(v.wrapping_add(n as usize), Ordering::Relaxed);
    }
}

/// How far the flush got in one source, as a crash drain (or a dump reader) loaded it: the words
/// of a [`Consumer`], possibly in the middle of an update by an owner that was stopped there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlushState {
    /// The cursor's sequence number: the next record the flush would read.
    pub(crate) seq: usize,
    /// Records the flush counted overwritten.
    pub(crate) overwritten: usize,
    /// Records the flush moved into the main log.
    pub(crate) moved: usize,
}

impl FlushState {
    /// The overwritten count that goes with [`seq`](Self::seq): every record before `seq` is then
    /// in the main log or counted here, and none twice.
    ///
    /// An owner stopped after it counted records overwritten but before it moved `seq` past them
    /// leaves `overwritten` ahead of `seq - moved`: the count is taken back (the drain finds those
    /// records overwritten itself, from `seq` on). One stopped after it moved `seq` past a record
    /// it committed to the main log, but before it counted it `moved`, leaves `seq - moved` ahead
    /// of `overwritten`: the count stands (the main log holds the record).
    ///
    /// | state (`seq`, `overwritten`, `moved`)                   | count |
    /// |---------------------------------------------------------|-------|
    /// | (3, 1, 2): steady, 3 passed = 1 overwritten + 2 moved    | 1     |
    /// | (3, 5, 2): 4 more counted, `seq` not moved past them yet | 1     |
    /// | (7, 5, 2): both stored                                   | 5     |
    /// | (8, 5, 2): a record moved, not counted `moved` yet       | 5     |
    ///
    /// (`accounting::tests` checks these.)
    pub(crate) fn overwritten_at_seq(&self) -> usize {
        let passed_unmoved = self.seq.wrapping_sub(self.moved);
        if crate::ring::before(passed_unmoved, self.overwritten) {
            passed_unmoved
        } else {
            self.overwritten
        }
    }
}

/// A 64-bit timestamp kept in pointer-sized words (one writer at a time: the flush owner, or the
/// crashing CPU for the crash drain's state).
pub(super) struct TsCell {
    lo: AtomicUsize,
    #[cfg(not(target_pointer_width = "64"))]
    hi: AtomicUsize,
}

impl TsCell {
    const_or_loom_fn! {
        pub(super) fn new() -> Self {
            TsCell {
                lo: AtomicUsize::new(0),
                #[cfg(not(target_pointer_width = "64"))]
                hi: AtomicUsize::new(0),
            }
        }
    }
    #[inline(always)]
    pub(super) fn get(&self) -> u64 {
        #[cfg(target_pointer_width = "64")]
        {
            self.lo.load(Ordering::Relaxed) as u64
        }
        #[cfg(not(target_pointer_width = "64"))]
        {
            (self.hi.load(Ordering::Relaxed) as u64) << 32 | self.lo.load(Ordering::Relaxed) as u64
        }
    }
    #[inline(always)]
    pub(super) fn set(&self, v: u64) {
        self.lo.store(v as usize, Ordering::Relaxed);
        #[cfg(not(target_pointer_width = "64"))]
        self.hi.store((v >> 32) as usize, Ordering::Relaxed);
    }
}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Loss counters of source `(cpu, depth)`: what the flush found, plus what the last crash drain
    /// found.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{FlushPolicy, Level, Log};
    /// static LOG: Log<OneCpu, 1, 64, 1024> = Log::new(OneCpu);
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// for _ in 0..20 {
    ///     LOG.append(Level::Info, 0, 0, b"spam spam spam").unwrap(); // the 64-word ring wraps
    /// }
    /// LOG.flush();
    /// let c = LOG.counters(0, 0).unwrap();
    /// assert!(c.overwritten > 0);
    /// assert_eq!(LOG.main().next_seq() + c.overwritten, 20); // every record accounted for
    /// assert_eq!(LOG.counters(1, 0), None); // no CPU 1
    /// ```
    pub fn counters(&self, cpu: usize, depth: usize) -> Option<CpuCounters> {
        if cpu >= CPUS || depth >= DEPTH {
            return None;
        }
        if !self.crash.fixed.ran() {
            let cons = &self.main.consumers[cpu][depth];
            return Some(CpuCounters {
                overwritten: cons.overwritten.load(Ordering::Relaxed) as u64,
                dropped: super::crash::DrainInput::dropped(self, cpu, depth),
                ..CpuCounters::default()
            });
        }
        // After a crash drain: what it found.
        Some(super::crash::counters_of(
            self,
            self.crash.mem(),
            cpu,
            depth,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::FlushState;

    fn at(seq: usize, overwritten: usize, moved: usize) -> usize {
        FlushState {
            seq,
            overwritten,
            moved,
        }
        .overwritten_at_seq()
    }

    #[test]
    fn overwritten_at_seq_takes_back_a_count_the_cursor_has_not_passed() {
        assert_eq!(at(3, 1, 2), 1);
        assert_eq!(at(3, 5, 2), 1);
        assert_eq!(at(7, 5, 2), 5);
        assert_eq!(at(8, 5, 2), 5);
        // Counts that wrapped.
        assert_eq!(at(1, usize::MAX, 2), usize::MAX);
        assert_eq!(at(1, 3, usize::MAX), 2);
    }
}
