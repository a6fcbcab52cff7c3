//! Accounting: the flush side's state of each source ring (its cursor and loss counters) and the
//! accounting records the crash drain writes.
//!
//! Contract: a [`Consumer`] is written only by the flush owner, with plain loads and stores (no
//! read-modify-write), so it costs nothing on CAS-less targets and a takeover by the crash drain
//! finds it in a consistent state (the cursor is stored `seq` first, see [`Consumer::set_cursor`]).
//! Every loss is counted exactly once per ring ([`CpuCounters`], [`Log::counters`]): records
//! overwritten before the flush read them, records frozen mid-write (torn, counted once however many
//! drains see them) and log calls the writer refused. The crash drain writes the losses not yet
//! reported as ordinary records ([`Log::write_accounting`]); a nested crash loses at most one such
//! line, never repeats it.

use super::flush::FlushReport;
use super::Log;
use crate::fmt::{LineBuf, LINE_MAX};
use crate::record::{facility, Header, Level};
use crate::ring::{Cursor, NoHook};
use crate::sync::{const_or_loom_fn, signal_fence, AtomicUsize, Ordering};
use crate::Platform;

/// Loss counters of one (CPU, depth) ring, as kept by the flush side.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{CpuCounters, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.nmi_enter();
/// let _ = LOG.append_raw(Level::Emerg, 0, 0, &[0; 4096]); // too large: refused
/// LOG.nmi_exit();
/// let c: CpuCounters = LOG.counters(0, 1).unwrap(); // CPU 0, depth 1 (the NMI's ring)
/// assert_eq!(c, CpuCounters { torn: 0, overwritten: 0, dropped: 1 });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Records the flush found frozen mid-write.
    pub torn: u64,
    /// Records overwritten before the flush read them.
    pub overwritten: u64,
    /// Log calls refused by the writer (recursion, too large) — and, for depth 0, calls refused for
    /// nesting too deep on this CPU.
    pub dropped: u64,
}

/// Flush-side state of one source ring (written only by the flush owner).
pub(super) struct Consumer {
    pos: AtomicUsize,
    seq: AtomicUsize,
    /// Timestamp of the last record moved from this source (the normal flush's bound).
    pub(super) last_ts: TsCell,
    /// Records overwritten before the flush read them.
    pub(super) overwritten: AtomicUsize,
    /// Records frozen mid-write.
    torn: AtomicUsize,
    /// `seq + 1` of the in-flight record last counted as torn (so a second drain does not count it
    /// again).
    torn_seq: AtomicUsize,
    reported_torn: AtomicUsize,
    reported_overwritten: AtomicUsize,
    reported_dropped: AtomicUsize,
}

impl Consumer {
    const_or_loom_fn! {
        /// A consumer at the start of a ring that was never written, with no losses.
        pub(super) fn new() -> Self {
            Consumer {
                pos: AtomicUsize::new(0),
                seq: AtomicUsize::new(0),
                last_ts: TsCell::new(),
                overwritten: AtomicUsize::new(0),
                torn: AtomicUsize::new(0),
                torn_seq: AtomicUsize::new(0),
                reported_torn: AtomicUsize::new(0),
                reported_overwritten: AtomicUsize::new(0),
                reported_dropped: AtomicUsize::new(0),
            }
        }
    }
    /// The cursor of the next record to read.
    pub(super) fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos.load(Ordering::Relaxed),
            seq: self.seq.load(Ordering::Relaxed),
        }
    }
    /// Sequence number of the next record this consumer reads.
    #[inline(always)]
    pub(super) fn seq(&self) -> usize {
        self.seq.load(Ordering::Relaxed)
    }
    /// Stores the cursor of the next record to read.
    pub(super) fn set_cursor(&self, c: Cursor) {
        // `seq` first: an owner stopped between the two stores leaves (old pos, new seq). For a
        // resync the old position is behind the tail, so the next reader resynchronises again (with
        // nothing missed); for a move the journal still holds the whole new cursor.
        self.seq.store(c.seq, Ordering::Relaxed);
        signal_fence();
        self.pos.store(c.pos, Ordering::Relaxed);
    }
    /// Adds `n` to one of this consumer's counters.
    pub(super) fn add(counter: &AtomicUsize, n: u64) {
        // Only the flush owner writes these: load + store, no RMW.
        let v = counter.load(Ordering::Relaxed);
        counter.store(v.wrapping_add(n as usize), Ordering::Relaxed);
    }
}

/// A 64-bit timestamp kept in pointer-sized words (only the flush owner reads and writes it).
pub(super) struct TsCell {
    lo: AtomicUsize,
    #[cfg(not(target_pointer_width = "64"))]
    hi: AtomicUsize,
}

impl TsCell {
    const_or_loom_fn! {
        /// Timestamp 0.
        pub(super) fn new() -> Self {
            TsCell {
                lo: AtomicUsize::new(0),
                #[cfg(not(target_pointer_width = "64"))]
                hi: AtomicUsize::new(0),
            }
        }
    }
    /// The timestamp.
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
    /// Sets the timestamp (not atomically as a whole on 32-bit targets: only the flush owner uses it).
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
    /// Counts the record `cur.seq` of source `(c, d)` as torn, unless a previous drain already did.
    pub(super) fn count_torn_once(&self, c: usize, d: usize, cur: Cursor, rep: &mut FlushReport) {
        let cons = &self.main.consumers[c][d];
        let tag = cur.seq.wrapping_add(1);
        if cons.torn_seq.load(Ordering::Relaxed) != tag {
            cons.torn_seq.store(tag, Ordering::Relaxed);
            Consumer::add(&cons.torn, 1);
            rep.torn += 1;
        }
    }

    /// Loss counters of source `(cpu, depth)`.
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
        let pc = self.cpus.get(cpu)?;
        let ring = pc.rings.get(depth)?;
        let cons = &self.main.consumers[cpu][depth];
        Some(CpuCounters {
            torn: cons.torn.load(Ordering::Relaxed) as u64,
            overwritten: cons.overwritten.load(Ordering::Relaxed) as u64,
            dropped: ring.dropped() + if depth == 0 { pc.overflow_dropped() } else { 0 },
        })
    }

    /// Writes one accounting record per source with losses not yet reported (drain owner only).
    pub(super) fn write_accounting(&self) -> u64 {
        use core::fmt::Write;
        let m = &*self.main;
        let mut n = 0;
        let ncpu = self.platform.cpu_count().min(CPUS);
        for c in 0..ncpu {
            for d in 0..DEPTH {
                let Some(cnt) = self.counters(c, d) else {
                    continue;
                };
                let cons = &m.consumers[c][d];
                // Counters are words that may wrap on 32-bit targets: differences wrap too.
                let t =
                    (cnt.torn as usize).wrapping_sub(cons.reported_torn.load(Ordering::Relaxed));
                let o = (cnt.overwritten as usize)
                    .wrapping_sub(cons.reported_overwritten.load(Ordering::Relaxed));
                let x = (cnt.dropped as usize)
                    .wrapping_sub(cons.reported_dropped.load(Ordering::Relaxed));
                if t == 0 && o == 0 && x == 0 {
                    continue;
                }
                // Mark reported first: a nested crash here loses at most this line, never repeats it.
                cons.reported_torn
                    .store(cnt.torn as usize, Ordering::Relaxed);
                cons.reported_overwritten
                    .store(cnt.overwritten as usize, Ordering::Relaxed);
                cons.reported_dropped
                    .store(cnt.dropped as usize, Ordering::Relaxed);
                let kind = self.cpus[c].kind_at(d);
                let mut line: LineBuf<LINE_MAX> = LineBuf::new();
                let _ = write!(
                    line,
                    "nmilog: cpu {} {} (depth {}): {} torn, {} overwritten, {} dropped",
                    c,
                    kind.name(),
                    d,
                    t,
                    o,
                    x
                );
                let header = Header {
                    ts_ns: self.platform.now_ns(),
                    src_seq: 0,
                    len: 0,
                    cpu: c as u16,
                    level: Level::Warning as u8,
                    facility: facility::NMILOG,
                    ctx: Header::pack_ctx(kind, d),
                    flags: 0,
                };
                if m.ring.write(|_| header, line.finish(), &mut NoHook).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }
}
