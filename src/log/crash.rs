//! The crash-time drain: on the crashing CPU, every record still in the main log or in a per-CPU ring
//! goes, in timestamp order and exactly once, into a sink the crashing CPU alone owns (the handover
//! image, a console, a pstore area) — without writing anything another CPU could also write.
//!
//! # Why read-only
//!
//! The crash sequence drains after the check-in wait whether or not every CPU checked in: a CPU deaf
//! to the NMI, a vCPU descheduled past the timeout, a CPU spinning with interrupts hard-off that later
//! recovers. Such a CPU may be in the middle of a flush — writing the main log and the consumer
//! cursors — or of a log call, and may resume at any instruction, during the drain or after it. So
//! the drain takes nothing over: it *reads* the main log and the rings (each record validated by its
//! sequence words, as any reader does) and writes only its own state ([`DrainState`], in the static
//! `Log`, written by the crashing CPU alone) and the caller's sink. This is how Linux's panic path
//! treats its ringbuffer: read, skip what is not finalized, take nothing over.
//!
//! # Exactly once
//!
//! A record can be in two places at once: in the main log (a flush moved it) and still in its ring
//! (records are not erased when moved; the owner may also have been stopped between the main-log
//! commit and the cursor store). Records carry their source: CPU, depth (in `ctx`) and `src_seq`, the
//! record's number in its ring. The drain takes a snapshot, in this order:
//!
//! 1. each consumer's `seq` (how far the flush got), loaded with Acquire — LMM(cursor:B), pairs with
//!    LMM(cursor:A): the main-log records it covers are visible to step 2;
//! 2. a scan of the main log from its oldest record up to its `next_seq` (the **main window**): for
//!    each source, one past the highest `src_seq` found in the window. With step 1 this gives each
//!    source's **threshold**: its records below it were moved (they are in the window, or were
//!    overwritten in the main log by its normal wrapping, like any old dmesg line);
//! 3. each ring's `next_seq` (the **end**: records from the threshold up to it are delivered from the
//!    ring), whether a log call is in progress there, and whether the CPU is known to be stopped (it
//!    checked in, per the caller's `stopped`, or it is the crashing CPU itself).
//!
//! Then the merge engine (`merge.rs`) runs over the window (one source) and every ring from its
//! threshold to its end, and each delivered record goes to the sink. A record the flush commits to
//! the main log after step 2 is past the window and comes from its ring; one committed before is in
//! the window, and its ring copy is below the threshold. Never twice, whatever the flush owner does.
//!
//! # What is counted
//!
//! * **torn**: a log call in progress at the snapshot on a CPU known to be stopped — frozen mid-write,
//!   its record can never complete (a record committed but not yet published is delivered instead);
//! * **in flight**: a log call in progress on a CPU *not* known to be stopped, or records it published
//!   that are not visible yet: it may still complete; the next drain (for instance the one that writes
//!   the handover image) delivers it then;
//! * **overwritten**: records a ring lost before anyone merged them (found by the flush, plus the ones
//!   between a source's threshold and its oldest record, plus any lapped under the drain by a writer
//!   that did not stop);
//! * **main lost**: records overwritten in the main window *during* the drain by a flush owner that
//!   did not stop (they were in the window, so their ring copies were not taken).
//!
//! The drain ends with one accounting record per ring with losses (`nmilog: cpu 2 task (depth 0): 1
//! torn, ...`) and one for main-log losses, in the sink like any other record.
//!
//! # Bounds
//!
//! Every step is one bounded look at one record; the snapshot walks are bounded by the ring sizes and
//! the merge stops before its step count could pass [`DrainReport::bound`], whatever a CPU that did
//! not stop does meanwhile. Nothing waits for anyone. A nested crash on the same CPU (a fault inside
//! the drain) may run the drain again from scratch; the interrupted drain notices (its generation
//! changed) and stops if it is ever resumed.

use core::fmt;

use super::accounting::TsCell;
use super::merge::{self, Key, Look, Merge, MergeHeap, Outcome};
use super::Log;
use crate::fmt::{LineBuf, LINE_MAX};
use crate::record::{facility, Header, Level, RecordBuf};
use crate::ring::{span_words, Cursor, Read, RecordRing};
use crate::sync::{array_of, const_or_loom_fn, AtomicUsize, Ordering};
use crate::Platform;

/// Where a record of the crash drain's output comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The main log, at this main-log sequence number (a console that printed up to some main-log
    /// record skips what it already printed).
    Main {
        /// The record's sequence number in the main log.
        seq: u64,
    },
    /// A per-CPU ring: the record never reached the main log (or its main-log copy was past the
    /// drain's window).
    Ring {
        /// The CPU.
        cpu: usize,
        /// The nesting depth (which of the CPU's rings).
        depth: usize,
    },
    /// An accounting record the drain made (losses of one ring, or of the main log).
    Accounting,
}

/// Where the crash drain puts its output: called once per record, in order. Return `false` to stop
/// the drain (the output is full).
///
/// Closures `FnMut(Origin, &RecordBuf) -> bool` are sinks.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{Level, Log, Origin, RecordBuf};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.append(Level::Info, 0, 0, b"in the main log").unwrap(); // flushed at once
/// LOG.crash_enter().unwrap();
/// LOG.append(Level::Emerg, 0, 0, b"still in its ring").unwrap(); // crash: ring only
/// let mut out = Vec::new();
/// LOG.drain_on_crash(&|_| true, &mut |o: Origin, r: &RecordBuf| {
///     out.push((o, r.text().unwrap().to_string()));
///     true
/// })
/// .unwrap();
/// assert_eq!(out[0], (Origin::Main { seq: 0 }, "in the main log".to_string()));
/// assert_eq!(out[1], (Origin::Ring { cpu: 0, depth: 1 }, "still in its ring".to_string()));
/// ```
pub trait CrashSink {
    /// One record of the crash log, in timestamp order.
    fn record(&mut self, origin: Origin, rec: &RecordBuf) -> bool;
}

impl<F: FnMut(Origin, &RecordBuf) -> bool> CrashSink for F {
    fn record(&mut self, origin: Origin, rec: &RecordBuf) -> bool {
        self(origin, rec)
    }
}

/// Why [`Log::drain_on_crash`] did not run.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{DrainError, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// let r = LOG.drain_on_crash(&|_| true, &mut |_, _: &nmilog::RecordBuf| true);
/// assert_eq!(r, Err(DrainError::NotCrashing));
/// assert_eq!(DrainError::NotCrashing.to_string(), "the calling CPU is not the crashing CPU");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainError {
    /// The calling CPU did not enter the crash path ([`Log::crash_enter`]): only the crashing CPU may
    /// drain (it alone owns the drain's state).
    NotCrashing,
}

impl fmt::Display for DrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainError::NotCrashing => f.write_str("the calling CPU is not the crashing CPU"),
        }
    }
}

impl core::error::Error for DrainError {}

/// What one crash drain did.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{DrainReport, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.append_raw(Level::Emerg, 0, 0, b"Oops: 0000 [#1] SMP").unwrap();
/// LOG.crash_enter().unwrap();
/// let rep: DrainReport = LOG.drain_on_crash(&|_| true, &mut |_, _: &nmilog::RecordBuf| true).unwrap();
/// assert_eq!((rep.records, rep.from_rings, rep.from_main), (1, 1, 0));
/// assert_eq!((rep.torn, rep.in_flight, rep.accounting_records), (0, 0, 0)); // nothing lost
/// assert!(rep.steps <= rep.bound);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Records handed to the sink, accounting records included.
    pub records: u64,
    /// Of those, records from the main log.
    pub from_main: u64,
    /// Of those, records from the per-CPU rings.
    pub from_rings: u64,
    /// Of those, accounting records the drain made.
    pub accounting_records: u64,
    /// Log calls frozen mid-write on CPUs known to be stopped: lost.
    pub torn: u64,
    /// Log calls (or published records not yet visible) on CPUs not known to be stopped: not
    /// delivered by this drain, may still complete.
    pub in_flight: u64,
    /// Records overwritten in the rings before anyone merged them (the flush's finds and this
    /// drain's).
    pub overwritten: u64,
    /// Main-log records overwritten during the drain by a flush on a CPU that did not stop.
    pub main_lost: u64,
    /// CPUs other than the crashing one that were not known to be stopped.
    pub not_stopped: u64,
    /// Whether the drain delivered everything it found (false: the sink refused a record, the step
    /// budget ran out, or a nested drain superseded this one).
    pub complete: bool,
    /// Bounded steps taken (each a read or a peek of one record).
    pub steps: u64,
    /// The most steps this drain could have taken, whatever state the rings were in.
    pub bound: u64,
}

const STOPPED: usize = 1;
const TORN: usize = 2;

/// The drain's view of one (CPU, depth) ring. The snapshot's fields are set by a fresh drain; the
/// merge's (`end`, `late`, `lapped`, the cursor) are reset from them by a drain over the same
/// snapshot.
pub(super) struct DrainSource {
    /// Where this drain's reading starts (first record at or past the threshold)...
    start_pos: AtomicUsize,
    start_seq: AtomicUsize,
    /// ...and where it is.
    pos: AtomicUsize,
    seq: AtomicUsize,
    /// One past the last record to deliver: the ring's `next_seq` at the snapshot...
    snap_end: AtomicUsize,
    /// ...and during the merge (cut short where committed records were not visible).
    end: AtomicUsize,
    /// `STOPPED`, `TORN` (snapshot).
    flags: AtomicUsize,
    /// A log call in progress at the snapshot on a CPU not known to be stopped (0 or 1).
    in_flight: AtomicUsize,
    /// Records published before the snapshot but not visible to the merge (a CPU that did not stop).
    late: AtomicUsize,
    /// The flush's overwritten count at the snapshot.
    flush_overwritten: AtomicUsize,
    /// Records the snapshot found overwritten (between the threshold and the oldest record).
    found_overwritten: AtomicUsize,
    /// Records lapped under the merge by a writer that did not stop.
    lapped: AtomicUsize,
}

impl DrainSource {
    const_or_loom_fn! {
        fn new() -> Self {
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
    fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos.load(Ordering::Relaxed),
            seq: self.seq.load(Ordering::Relaxed),
        }
    }
    fn set_cursor(&self, c: Cursor) {
        self.pos.store(c.pos, Ordering::Relaxed);
        self.seq.store(c.seq, Ordering::Relaxed);
    }
    fn end(&self) -> usize {
        self.end.load(Ordering::Relaxed)
    }
    fn flags(&self) -> usize {
        self.flags.load(Ordering::Relaxed)
    }
    fn add(w: &AtomicUsize, n: usize) {
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
    pub(super) fn torn(&self) -> usize {
        usize::from(self.flags() & TORN != 0)
    }
    /// In-flight records at the last drain.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
            .load(Ordering::Relaxed)
            .wrapping_add(self.late.load(Ordering::Relaxed))
    }
    /// Overwritten records as of the last drain: the flush's and the drain's.
    pub(super) fn overwritten(&self) -> usize {
        self.flush_overwritten
            .load(Ordering::Relaxed)
            .wrapping_add(self.found_overwritten.load(Ordering::Relaxed))
            .wrapping_add(self.lapped.load(Ordering::Relaxed))
    }
    /// Whether the CPU was known to be stopped at the last drain.
    pub(super) fn stopped(&self) -> bool {
        self.flags() & STOPPED != 0
    }
}

/// The crash drain's own state: written only by the crashing CPU (the one that won
/// [`Log::crash_enter`]), read by it and by [`Log::counters`]. In the static `Log`, so that the
/// drain's stack use does not grow with the CPU count.
pub(super) struct DrainState<const CPUS: usize, const DEPTH: usize> {
    /// Incremented by each drain; 0: no drain ran yet. A drain that finds it changed was superseded
    /// by a nested one and stops.
    gen: AtomicUsize,
    sources: [[DrainSource; DEPTH]; CPUS],
    /// The main window: where reading starts, where it is, and its end (main-log `next_seq`).
    main_start_pos: AtomicUsize,
    main_start_seq: AtomicUsize,
    main_pos: AtomicUsize,
    main_seq: AtomicUsize,
    main_end: AtomicUsize,
    /// Main-log records overwritten under the drain.
    main_lost: AtomicUsize,
    /// The snapshot's time (accounting records are stamped no earlier).
    snapshot_ts: TsCell,
    heap: MergeHeap<CPUS, DEPTH>,
}

impl<const CPUS: usize, const DEPTH: usize> DrainState<CPUS, DEPTH> {
    const_or_loom_fn! {
        pub(super) fn new() -> Self {
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
    pub(super) fn source(&self, cpu: usize, depth: usize) -> &DrainSource {
        &self.sources[cpu][depth]
    }

    /// Whether a drain ran.
    pub(super) fn ran(&self) -> bool {
        self.gen.load(Ordering::Relaxed) != 0
    }

    fn main_cursor(&self) -> Cursor {
        Cursor {
            pos: self.main_pos.load(Ordering::Relaxed),
            seq: self.main_seq.load(Ordering::Relaxed),
        }
    }
    fn set_main_cursor(&self, c: Cursor) {
        self.main_pos.store(c.pos, Ordering::Relaxed);
        self.main_seq.store(c.seq, Ordering::Relaxed);
    }
}

/// `a < b` for sequence numbers that may wrap (as ring positions do).
#[inline(always)]
fn seq_before(a: usize, b: usize) -> bool {
    crate::ring::before(a, b)
}

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

/// Makes `buf` an accounting record: `header` (its `len` set here) and `text`.
fn fill(buf: &mut RecordBuf, mut header: Header, text: &[u8]) {
    let n = text.len().min(buf.payload.len());
    buf.payload[..n].copy_from_slice(&text[..n]);
    header.len = n as u16;
    buf.header = header;
    buf.seq = 0;
}

/// The crash drain as a [`Merge`]: every ring from its threshold to its end, and the main window.
struct DrainMerge<
    'a,
    P: Platform,
    S: CrashSink + ?Sized,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
> {
    log: &'a Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    sink: &'a mut S,
    ncpu: usize,
    gen: usize,
    rep: DrainReport,
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

    /// Ties between sources: ring `(c, d)` and main-log records of that ring order by `(c, d)`.
    fn tie_of(h: &Header) -> u32 {
        let d = h.context().1.min(DEPTH);
        ((h.cpu as u32)
            .wrapping_mul(DEPTH as u32)
            .wrapping_add(d as u32))
            << 1
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

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// The crash-time drain: on the crashing CPU (after [`crash_enter`](Self::crash_enter)), hands
    /// every record still in the main log or a per-CPU ring to `sink`, in timestamp order (ties: CPU,
    /// then depth), each exactly once, then one accounting record per ring with losses. `stopped(cpu)`
    /// says whether `cpu` is known to be stopped for good (it checked in after the crash NMI); the
    /// crashing CPU always is. See the [module docs](self) for the design.
    ///
    /// **Contract.** Writes nothing another CPU could write: the main log, the rings, the consumer
    /// cursors and flush ownership are only read, whatever the other CPUs do meanwhile — stopped,
    /// frozen mid-write or mid-flush, or still running because they never saw the NMI. A log call in
    /// progress on a stopped CPU is counted torn; on a CPU not known to be stopped it is counted in
    /// flight, and a later drain delivers it once it completes. Never spins: a bounded number of steps
    /// ([`DrainReport::bound`]), no lock, no waiting. May be called again (each call is a fresh,
    /// complete drain: a CPU that checked in late gets its records in), also from a nested crash on
    /// the same CPU; an interrupted drain that is resumed after a nested one stops.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, Level, Log, Origin, RecordBuf};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// std::thread::spawn(|| {
    ///     HostPlatform::register_cpu(1);
    ///     LOG.nmi_enter(); // the crash IPI; CPU 1 never leaves it
    ///     LOG.append_raw(Level::Emerg, 0, 0, b"CPU 1 stopping").unwrap();
    /// }).join().unwrap();
    /// HostPlatform::register_cpu(0);
    /// LOG.crash_enter().unwrap();
    /// let mut lines = Vec::new();
    /// let rep = LOG.drain_on_crash(&|cpu| cpu == 1, &mut |o: Origin, r: &RecordBuf| {
    ///     lines.push((o, r.text().unwrap().to_string()));
    ///     true
    /// }).unwrap();
    /// assert_eq!(rep.from_rings, 1);
    /// assert_eq!(lines, [(Origin::Ring { cpu: 1, depth: 1 }, "CPU 1 stopping".to_string())]);
    /// ```
    pub fn drain_on_crash<S: CrashSink + ?Sized>(
        &self,
        stopped: &dyn Fn(usize) -> bool,
        sink: &mut S,
    ) -> Result<DrainReport, DrainError> {
        self.drain(Some(stopped), sink)
    }

    /// The drain again over the previous drain's snapshot (same thresholds, ends and torn/in-flight
    /// verdicts; records overwritten since are counted): the handover writer's second pass sees what
    /// its first pass sized.
    pub(crate) fn drain_again<S: CrashSink + ?Sized>(
        &self,
        sink: &mut S,
    ) -> Result<DrainReport, DrainError> {
        self.drain(None, sink)
    }

    /// The main-log sequence number where the last drain's window starts: how many records the main
    /// log had already overwritten by its own wrapping (the handover image numbers its records from
    /// it).
    pub(crate) fn drained_main_start(&self) -> u64 {
        self.crash.main_start_seq.load(Ordering::Relaxed) as u64
    }

    /// The drain's view of `cpu`: whether it was known to be stopped at the last drain.
    pub(crate) fn drained_cpu_stopped(&self, cpu: usize) -> bool {
        cpu < CPUS && self.crash.source(cpu, 0).stopped()
    }

    /// The most steps one crash drain can take with the current CPU count.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log, RecordBuf};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// for _ in 0..100 {
    ///     LOG.append_raw(Level::Info, 0, 0, b"flood").unwrap(); // wraps the ring
    /// }
    /// let bound = LOG.drain_step_bound();
    /// LOG.crash_enter().unwrap();
    /// let rep = LOG.drain_on_crash(&|_| true, &mut |_, _: &RecordBuf| true).unwrap();
    /// assert_eq!(rep.bound, bound);
    /// assert!(rep.steps <= bound);
    /// ```
    pub fn drain_step_bound(&self) -> u64 {
        let k = (self.platform.cpu_count().min(CPUS) * DEPTH) as u64;
        let per_ring = (RING_WORDS / span_words(0)) as u64 + 1;
        let per_main = (MAIN_WORDS / span_words(0)) as u64 + 1;
        // Snapshot: the main-log scan (one look per record, plus up to three resynchronisations),
        // then per ring its oldest record and the walk past records below its threshold (one look per
        // record, plus three). Merge, per source: up to three looks for the first head, two per
        // record (the one that ends a run and the one that takes it), up to three when it runs dry:
        // within 3 + 4 × records.
        (per_main + 3) + k * (per_ring + 6) + (k + 1) * 3 + (k * per_ring + per_main) * 4
    }

    /// The drain; `stopped: None` reuses the last snapshot.
    fn drain<S: CrashSink + ?Sized>(
        &self,
        stopped: Option<&dyn Fn(usize) -> bool>,
        sink: &mut S,
    ) -> Result<DrainReport, DrainError> {
        let me = self.platform.cpu_id();
        if self.crashing_cpu() != Some(me) {
            return Err(DrainError::NotCrashing);
        }
        let st = &self.crash;
        let ncpu = self.platform.cpu_count().min(CPUS);
        let gen = match st.gen.load(Ordering::Relaxed).wrapping_add(1) {
            0 => 1,
            g => g,
        };
        let reuse = stopped.is_none() && st.ran();
        st.gen.store(gen, Ordering::Relaxed);
        let mut rep = DrainReport {
            bound: self.drain_step_bound(),
            ..DrainReport::default()
        };
        let mut steps = 0;
        if reuse {
            self.rewind(ncpu);
        } else {
            self.snapshot(me, ncpu, stopped.unwrap_or(&|_| false), &mut steps);
        }
        let mut m = DrainMerge {
            log: self,
            sink,
            ncpu,
            gen,
            rep: DrainReport::default(),
        };
        let mut buf = None;
        let out = merge::run(&mut m, &st.heap, &mut buf, rep.bound, &mut steps);
        rep.records = m.rep.records;
        rep.from_main = m.rep.from_main;
        rep.from_rings = m.rep.from_rings;
        rep.complete = out == Outcome::Done;
        // Losses, as ordinary records at the end (after the merge: lapping found during it counts).
        if out == Outcome::Done || out == Outcome::Budget {
            let buf = buf.get_or_insert_with(RecordBuf::new);
            let ts = self.platform.now_ns().max(st.snapshot_ts.get());
            for c in 0..ncpu {
                for d in 0..DEPTH {
                    let Some(cnt) = self.counters(c, d) else {
                        continue;
                    };
                    rep.torn += cnt.torn;
                    rep.in_flight += cnt.in_flight;
                    rep.overwritten = rep.overwritten.wrapping_add(cnt.overwritten);
                    if cnt.torn == 0
                        && cnt.in_flight == 0
                        && cnt.overwritten == 0
                        && cnt.dropped == 0
                    {
                        continue;
                    }
                    let kind = self.cpus[c].kind_at(d);
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
                        rep.complete = false;
                        break;
                    }
                }
            }
            rep.main_lost = st.main_lost.load(Ordering::Relaxed) as u64;
            if rep.main_lost != 0 {
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
                    cpu: me as u16,
                    level: Level::Warning as u8,
                    facility: facility::NMILOG,
                    ..Header::default()
                };
                fill(buf, header, line.finish());
                rep.records += 1;
                rep.accounting_records += 1;
                if !m.sink.record(Origin::Accounting, buf) {
                    rep.complete = false;
                }
            }
        }
        rep.not_stopped = (0..ncpu)
            .filter(|&c| c != me && !st.source(c, 0).stopped())
            .count() as u64;
        rep.steps = steps;
        Ok(rep)
    }

    /// Puts every cursor back where the last snapshot's reading started.
    fn rewind(&self, ncpu: usize) {
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
    fn snapshot(&self, me: usize, ncpu: usize, stopped: &dyn Fn(usize) -> bool, steps: &mut u64) {
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
                    let (c, d) = (h.cpu as usize, h.context().1);
                    if c < ncpu && d < DEPTH && h.facility != facility::NMILOG {
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
                let inside = ring.writer_inside_unpublished();
                let (head, ns) = ring.writer_state();
                let mut end = ns;
                let mut flags = if is_stopped { STOPPED } else { 0 };
                let mut in_flight = 0;
                if inside {
                    // A log call in progress. Its record may be committed but not yet counted in
                    // `next_seq` (writer between steps 6 and 7): whole, deliver it. Or counted in
                    // `next_seq` but `head` not yet moved (between the two stores of step 7): whole,
                    // already before `end`. Otherwise it is not complete: torn if the CPU is stopped
                    // for good, in flight if it may still complete.
                    *steps += 2;
                    let committed_next =
                        ring.peek(&mut Cursor { pos: head, seq: ns }).0 == Read::Record;
                    let published_prev = ns != 0
                        && ring
                            .peek(&mut Cursor {
                                pos: head,
                                seq: ns.wrapping_sub(1),
                            })
                            .0
                            == Read::Record;
                    if committed_next {
                        end = ns.wrapping_add(1);
                    } else if published_prev {
                        // Complete.
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
