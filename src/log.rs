//! The logger: per-CPU rings, the main log buffer, flush ownership, and the crash-time drain.
//!
//! # Paths
//!
//! * **NMI path** ([`Log::append_raw`], and every log call in NMI or crash context, or on any CPU once
//!   a crash has begun): append to the ring of the current CPU at the current nesting depth. Plain
//!   atomic loads and stores only; no lock, no read-modify-write, no loop that waits on anyone.
//! * **Normal path** ([`Log::append`], [`Log::log_fmt`] in task or irq context): the same append, then
//!   an opportunistic [`flush`](Log::flush): try once to take flush ownership (one compare-exchange);
//!   if another CPU owns it, leave the work to that owner (and tell it to look again).
//! * **Flush** (owner only): merge the per-CPU rings into the main log in timestamp order (ties: CPU,
//!   then depth), one record at a time, each move journaled so that an owner stopped half-way can be
//!   taken over without losing or duplicating a record.
//! * **Crash drain** ([`Log::drain_on_crash`]): on the crashing CPU, once the other CPUs are stopped
//!   (or declared dead): take flush ownership over without consent, repair the half-done move a stopped
//!   owner may have left, merge everything, count records frozen mid-write as torn, and write the
//!   accounting as ordinary records. Its work is bounded by the ring sizes (see [`DrainReport::bound`]).
//!
//! # Timestamp order across flushes
//!
//! A normal flush only moves records older than every record it cannot see yet: a ring whose next
//! record is in flight bounds the flush at the last timestamp moved from that ring, and records younger
//! than `now - settle` stay in their rings (a writer stores its odd sequence word *before* it reads the
//! clock; the settle window, [`Log::set_flush_settle_ns`], covers the time that store takes to become
//! visible). The crash drain, with every other CPU stopped, has no such limit.

use core::fmt;

use crossbeam_utils::CachePadded;

use crate::fmt::{LineBuf, LINE_MAX};
use crate::percpu::PerCpu;
use crate::record::{facility, flags, ContextKind, Header, Level, RecordBuf};
use crate::ring::{
    before, span_words, Cursor, NoHook, Read, RecordRing, StepHook, WriteError, WriteStep,
};
use crate::sync::{signal_fence, AtomicUsize, Ordering};
use crate::Platform;

/// Why a log call did not produce a record. Every refusal is also counted (see
/// [`CpuCounters`]); none is silent.
///
/// ```
/// # use nmilog::{AppendError, Level, Log, Platform};
/// # struct One;
/// # impl Platform for One {
/// #     fn cpu_id(&self) -> usize { 0 }
/// #     fn now_ns(&self) -> u64 { 7 }
/// #     fn cpu_count(&self) -> usize { 1 }
/// # }
/// static LOG: Log<One, 1, 64, 1024> = Log::new(One);
/// // A 64-word ring takes at most a few hundred bytes of payload.
/// let dump = [0u8; 1024];
/// assert_eq!(LOG.append_raw(Level::Err, 0, 0, &dump), Err(AppendError::TooLarge));
/// assert_eq!(LOG.counters(0, 0).unwrap().dropped, 1); // refused, and counted
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The platform reported a CPU number `>= CPUS` (or `>= cpu_count()`).
    BadCpu,
    /// The context nesting is deeper than the `DEPTH` parameter allows.
    TooDeep,
    /// A log call from inside a log call in the same context (a `Display` impl that logs).
    Reentered,
    /// The payload is larger than the ring accepts.
    TooLarge,
    /// A test hook froze the writer.
    Frozen,
}

/// Why [`Log::crash_enter`] did not make the calling CPU the crashing one.
///
/// ```
/// use nmilog::CrashEnterError;
/// let e = CrashEnterError::OtherCpu { cpu: 3 };
/// assert_eq!(e.to_string(), "CPU 3 is already crashing");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashEnterError {
    /// Another CPU entered the crash path first; the caller should behave as a stopped CPU.
    OtherCpu {
        /// The crashing CPU.
        cpu: usize,
    },
    /// The platform reported a CPU number out of range (counted in [`Log::bad_cpu_dropped`]).
    BadCpu,
}

impl fmt::Display for CrashEnterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashEnterError::OtherCpu { cpu } => write!(f, "CPU {cpu} is already crashing"),
            CrashEnterError::BadCpu => f.write_str("the CPU number is out of range"),
        }
    }
}

impl core::error::Error for CrashEnterError {}

/// What one flush or drain did.
///
/// ```
/// # use nmilog::{FlushPolicy, FlushReport, Level, Log, Platform};
/// # struct One;
/// # impl Platform for One {
/// #     fn cpu_id(&self) -> usize { 0 }
/// #     fn now_ns(&self) -> u64 { 7 }
/// #     fn cpu_count(&self) -> usize { 1 }
/// # }
/// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// LOG.append(Level::Info, 0, 0, b"one").unwrap();
/// LOG.append(Level::Info, 0, 0, b"two").unwrap();
/// let rep: FlushReport = LOG.flush().unwrap();
/// assert_eq!((rep.moved, rep.overwritten, rep.torn), (2, 0, 0));
/// assert!(rep.steps >= 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Records moved from the rings into the main log.
    pub moved: u64,
    /// Records found overwritten in a ring before the flush could read them.
    pub overwritten: u64,
    /// Records found frozen mid-write (crash drain only).
    pub torn: u64,
    /// Bounded steps taken (each a read or a peek of one record).
    pub steps: u64,
}

/// What [`Log::drain_on_crash`] did.
///
/// ```
/// # use nmilog::{DrainReport, Level, Log, Platform};
/// # struct One;
/// # impl Platform for One {
/// #     fn cpu_id(&self) -> usize { 0 }
/// #     fn now_ns(&self) -> u64 { 7 }
/// #     fn cpu_count(&self) -> usize { 1 }
/// # }
/// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
/// LOG.append_raw(Level::Emerg, 0, 0, b"Oops: 0000 [#1] SMP").unwrap();
/// LOG.crash_enter().unwrap();
/// let rep: DrainReport = LOG.drain_on_crash();
/// assert_eq!(rep.flush.moved, 1);
/// assert_eq!(rep.took_over_from, None); // nobody owned the flush
/// assert!(!rep.repaired_move);
/// assert_eq!(rep.accounting_records, 0); // nothing was lost
/// assert!(rep.flush.steps <= rep.bound);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// The merge itself.
    pub flush: FlushReport,
    /// The CPU that held flush ownership when the drain took it over, if another one did.
    pub took_over_from: Option<usize>,
    /// Whether a move into the main log left half-done by a stopped owner was completed (the record
    /// was committed: its ring cursor was advanced) — otherwise such a move is simply redone.
    pub repaired_move: bool,
    /// Accounting records written.
    pub accounting_records: u64,
    /// The most steps this drain could have taken, whatever state the rings were in.
    pub bound: u64,
}

/// Loss counters of one (CPU, depth) ring, as kept by the flush side.
///
/// ```
/// # use nmilog::{CpuCounters, Level, Log, Platform};
/// # struct One;
/// # impl Platform for One {
/// #     fn cpu_id(&self) -> usize { 0 }
/// #     fn now_ns(&self) -> u64 { 7 }
/// #     fn cpu_count(&self) -> usize { 1 }
/// # }
/// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
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
struct Consumer {
    pos: AtomicUsize,
    seq: AtomicUsize,
    last_ts: TsCell,
    overwritten: AtomicUsize,
    torn: AtomicUsize,
    /// `seq + 1` of the in-flight record last counted as torn (so a second drain does not count it
    /// again).
    torn_seq: AtomicUsize,
    reported_torn: AtomicUsize,
    reported_overwritten: AtomicUsize,
    reported_dropped: AtomicUsize,
}

impl Consumer {
    #[cfg(not(nmilog_loom))]
    const fn new() -> Self {
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
    #[cfg(nmilog_loom)]
    fn new() -> Self {
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
    fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos.load(Ordering::Relaxed),
            seq: self.seq.load(Ordering::Relaxed),
        }
    }
    /// Sequence number of the next record this consumer reads.
    #[inline(always)]
    fn seq(&self) -> usize {
        self.seq.load(Ordering::Relaxed)
    }
    fn set_cursor(&self, c: Cursor) {
        // `seq` first: an owner stopped between the two stores leaves (old pos, new seq). For a
        // resync the old position is behind the tail, so the next reader resynchronises again (with
        // nothing missed); for a move the journal still holds the whole new cursor.
        self.seq.store(c.seq, Ordering::Relaxed);
        signal_fence();
        self.pos.store(c.pos, Ordering::Relaxed);
    }
    fn add(counter: &AtomicUsize, n: u64) {
        // Only the flush owner writes these: load + store, no RMW.
        let v = counter.load(Ordering::Relaxed);
        counter.store(v.wrapping_add(n as usize), Ordering::Relaxed);
    }
}

/// A 64-bit timestamp kept in pointer-sized words (only the flush owner reads and writes it).
struct TsCell {
    lo: AtomicUsize,
    #[cfg(not(target_pointer_width = "64"))]
    hi: AtomicUsize,
}

impl TsCell {
    #[cfg(not(nmilog_loom))]
    const fn new() -> Self {
        TsCell {
            lo: AtomicUsize::new(0),
            #[cfg(not(target_pointer_width = "64"))]
            hi: AtomicUsize::new(0),
        }
    }
    #[cfg(nmilog_loom)]
    fn new() -> Self {
        TsCell {
            lo: AtomicUsize::new(0),
            #[cfg(not(target_pointer_width = "64"))]
            hi: AtomicUsize::new(0),
        }
    }
    fn get(&self) -> u64 {
        #[cfg(target_pointer_width = "64")]
        {
            self.lo.load(Ordering::Relaxed) as u64
        }
        #[cfg(not(target_pointer_width = "64"))]
        {
            (self.hi.load(Ordering::Relaxed) as u64) << 32 | self.lo.load(Ordering::Relaxed) as u64
        }
    }
    fn set(&self, v: u64) {
        self.lo.store(v as usize, Ordering::Relaxed);
        #[cfg(not(target_pointer_width = "64"))]
        self.hi.store((v >> 32) as usize, Ordering::Relaxed);
    }
}

const CONSOLE_LOGLEVEL_DEFAULT: usize = Level::Info as usize + 1;

const OWNER_TAKEN_OVER: usize = 1 << (usize::BITS - 1);

/// The main log buffer: a ring written only by the flush owner, the flush-side state of every source
/// ring, and the journal of the move in progress.
struct MainLog<const MAIN_WORDS: usize, const CPUS: usize, const DEPTH: usize> {
    /// 0 when free; `cpu + 1` of the owner, with `OWNER_TAKEN_OVER` set after a crash takeover.
    owner: AtomicUsize,
    /// Set by a CPU that found ownership taken, so the owner looks again before leaving.
    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    pending: AtomicUsize,
    /// Incremented by each crash drain; a drain that finds it changed was interrupted by a nested one
    /// and stops.
    drain_gen: AtomicUsize,
    ring: RecordRing<MAIN_WORDS>,
    /// Journal of the move in progress: main sequence number + 1 (0: none), source index, and the
    /// source cursor and timestamp to store once the main record is committed.
    j_valid: AtomicUsize,
    j_src: AtomicUsize,
    j_pos: AtomicUsize,
    j_seq: AtomicUsize,
    j_ts: TsCell,
    consumers: [[Consumer; DEPTH]; CPUS],
}

/// Steps of one journaled move from a CPU ring into the main log, for [`FlushHook`]s.
///
/// ```
/// # use nmilog::{FlushPolicy, FlushStep, Level, Log, Platform};
/// # struct One;
/// # impl Platform for One {
/// #     fn cpu_id(&self) -> usize { 0 }
/// #     fn now_ns(&self) -> u64 { 7 }
/// #     fn cpu_count(&self) -> usize { 1 }
/// # }
/// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
/// use nmilog::ring::WriteStep;
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// LOG.append(Level::Info, 0, 0, b"hi").unwrap();
/// let mut steps = Vec::new();
/// LOG.flush_with_hook(&mut |s: FlushStep| { steps.push(s); true }).unwrap();
/// assert_eq!(steps.first(), Some(&FlushStep::Journaled));
/// assert!(steps.contains(&FlushStep::Main(WriteStep::Committed)));
/// assert_eq!(steps.last(), Some(&FlushStep::Done));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushStep {
    /// The journal entry is written; the main-log append has not started.
    Journaled,
    /// A step of the append into the main log.
    Main(WriteStep),
    /// The source cursor has been advanced; the journal is still set.
    CursorStored,
    /// The journal entry is cleared.
    Done,
}

/// Called between the steps of a journaled move (test harnesses); `false` stops the flush there, as a
/// CPU frozen at that point would.
///
/// ```
/// # use nmilog::{FlushPolicy, FlushStep, Level, Log, Platform};
/// # struct One;
/// # impl Platform for One {
/// #     fn cpu_id(&self) -> usize { 0 }
/// #     fn now_ns(&self) -> u64 { 7 }
/// #     fn cpu_count(&self) -> usize { 1 }
/// # }
/// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
/// use nmilog::ring::WriteStep;
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// LOG.append(Level::Info, 0, 0, b"moved once").unwrap();
/// // The flush owner is stopped right after the main-log commit, with the journal still set.
/// let mut freeze = |s: FlushStep| s != FlushStep::Main(WriteStep::Committed);
/// LOG.flush_with_hook(&mut freeze);
/// LOG.crash_enter().unwrap();
/// let rep = LOG.drain_on_crash();
/// assert!(rep.repaired_move); // the journal completed the move...
/// assert_eq!(rep.flush.moved, 0); // ...so the record is not moved twice
/// assert_eq!(LOG.main().next_seq(), 1);
/// ```
pub trait FlushHook {
    /// Called after `step`.
    ///
    /// ```
    /// # use nmilog::{FlushPolicy, Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// use nmilog::{FlushHook, FlushStep};
    /// struct CountMoves(usize);
    /// impl FlushHook for CountMoves {
    ///     fn step(&mut self, step: FlushStep) -> bool {
    ///         if step == FlushStep::Done {
    ///             self.0 += 1;
    ///         }
    ///         true // never freeze
    ///     }
    /// }
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.append(Level::Info, 0, 0, b"a").unwrap();
    /// LOG.append(Level::Info, 0, 0, b"b").unwrap();
    /// let mut hook = CountMoves(0);
    /// let rep = LOG.flush_with_hook(&mut hook).unwrap();
    /// assert_eq!((hook.0, rep.moved), (2, 2)); // one journaled move per record
    /// assert_eq!(LOG.main().next_seq(), 2);
    /// ```
    fn step(&mut self, step: FlushStep) -> bool;
}

impl FlushHook for NoHook {
    #[inline(always)]
    fn step(&mut self, _: FlushStep) -> bool {
        true
    }
}

impl<F: FnMut(FlushStep) -> bool> FlushHook for F {
    fn step(&mut self, step: FlushStep) -> bool {
        self(step)
    }
}

struct MainHookAdapter<'a, H: FlushHook>(&'a mut H);
impl<H: FlushHook> StepHook for MainHookAdapter<'_, H> {
    #[inline(always)]
    fn step(&mut self, step: WriteStep) -> bool {
        self.0.step(FlushStep::Main(step))
    }
}

/// The merge's ready sources as a binary min-heap of `(timestamp, source)`, `source = cpu * DEPTH +
/// depth`: the lexicographic order is the merge order (ties go to the lower CPU, then the lower
/// depth). Popping the oldest head and pushing a source back after its run are O(log K) for K
/// sources, so a drain costs O(N log K) for N records, not O(N K) (a 256-CPU machine with four
/// depths has 1024 sources). Fixed capacity, on the stack, no allocation.
struct SourceHeap<const CPUS: usize, const DEPTH: usize> {
    keys: [[(u64, u32); DEPTH]; CPUS],
    len: usize,
}

impl<const CPUS: usize, const DEPTH: usize> SourceHeap<CPUS, DEPTH> {
    fn new() -> Self {
        SourceHeap {
            keys: [[(0, 0); DEPTH]; CPUS],
            len: 0,
        }
    }

    /// The oldest head, without removing it.
    #[inline]
    fn peek(&self) -> Option<(u64, u32)> {
        self.keys.as_flattened()[..self.len].first().copied()
    }

    /// Adds a source's head. Each source is in the heap at most once (the merge pushes a source only
    /// after popping it, or once in its first scan), so the capacity `CPUS * DEPTH` is never exceeded;
    /// a push beyond it is ignored rather than allowed to panic.
    #[inline]
    fn push(&mut self, key: (u64, u32)) {
        let len = self.len;
        let h = self.keys.as_flattened_mut();
        if len >= h.len() {
            return;
        }
        let mut i = len;
        h[i] = key;
        while i > 0 {
            let parent = (i - 1) / 2;
            if h[parent] <= h[i] {
                break;
            }
            h.swap(parent, i);
            i = parent;
        }
        self.len = len + 1;
    }

    /// Removes and returns the oldest head.
    #[inline]
    fn pop(&mut self) -> Option<(u64, u32)> {
        let len = self.len.checked_sub(1)?;
        let h = &mut self.keys.as_flattened_mut()[..=len];
        let top = h[0];
        h.swap(0, len);
        self.len = len;
        let h = &mut h[..len];
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < h.len() && h[l] < h[m] {
                m = l;
            }
            if r < h.len() && h[r] < h[m] {
                m = r;
            }
            if m == i {
                break;
            }
            h.swap(i, m);
            i = m;
        }
        Some(top)
    }
}

/// The logger.
///
/// * `P`: the [`Platform`] (CPU id, clock, CPU count).
/// * `CPUS`: the most CPUs that can log.
/// * `RING_WORDS`: words per ring (a power of two); each CPU has `DEPTH` rings.
/// * `MAIN_WORDS`: words in the main log buffer (a power of two).
/// * `DEPTH`: context nesting levels with their own ring (task, irq, NMI, nested NMI: 4).
///
/// Footprint ([`Log::FOOTPRINT_BYTES`], exact; `W = size_of::<usize>()`, `T = 8 / W`, `pad` = round
/// up to `CachePadded`'s alignment), in bytes:
///
/// ```text
/// CPUS·pad((2 + DEPTH·(7 + RING_WORDS))·W)
///   + pad((13 + T + MAIN_WORDS + CPUS·DEPTH·(8 + T))·W)
///   + pad(size_of::<P>() + 6·W)
/// ```
///
/// ```
/// use nmilog::{Log, Level, Platform};
/// struct One;
/// impl Platform for One {
///     fn cpu_id(&self) -> usize { 0 }
///     fn now_ns(&self) -> u64 { 7 }
///     fn cpu_count(&self) -> usize { 1 }
/// }
/// static LOG: Log<One, 1, 256, 1024> = Log::new(One);
/// LOG.log_fmt(Level::Info, 0, format_args!("x={}", 3));
/// let mut r = LOG.main_reader();
/// let mut buf = nmilog::RecordBuf::new();
/// assert_eq!(r.read(&LOG, &mut buf), nmilog::ring::Read::Record);
/// assert_eq!(buf.text(), Some("x=3"));
/// ```
pub struct Log<
    P: Platform,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize = 4,
> {
    platform: P,
    cpus: [CachePadded<PerCpu<RING_WORDS, DEPTH>>; CPUS],
    main: CachePadded<MainLog<MAIN_WORDS, CPUS, DEPTH>>,
    /// 0, or `cpu + 1` of the crashing CPU.
    crash_cpu: AtomicUsize,
    console_loglevel: AtomicUsize,
    settle_ns: AtomicUsize,
    bad_cpu: AtomicUsize,
    flush_policy: AtomicUsize,
    /// A `fn()` run after each normal-context flush (console output), or null.
    console_hook: portable_atomic::AtomicPtr<()>,
}

/// When normal-context log calls move records into the main log.
///
/// ```
/// # use nmilog::{FlushPolicy, Level, Log, Platform};
/// # struct One;
/// # impl Platform for One {
/// #     fn cpu_id(&self) -> usize { 0 }
/// #     fn now_ns(&self) -> u64 { 7 }
/// #     fn cpu_count(&self) -> usize { 1 }
/// # }
/// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// LOG.append(Level::Info, 0, 0, b"queued").unwrap();
/// assert_eq!(LOG.main().next_seq(), 0); // still in the CPU's ring
/// LOG.flush(); // from a console thread or a timer
/// assert_eq!(LOG.main().next_seq(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every normal-context log call tries to flush (one compare-exchange; if it wins, it merges what
    /// is ready). Records reach the main log (and readers) at once, like the legacy printk.
    Eager,
    /// Log calls only append to their ring; records reach the main log when someone calls
    /// [`Log::flush`] (a console thread, a timer, a reader) or at the crash drain — like printk's
    /// deferred consoles. The cheapest normal-context path.
    Deferred,
}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Static memory taken by this logger, in bytes.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, Log};
    /// type L = Log<HostPlatform, 4, 1024, 8192>;
    /// assert_eq!(L::FOOTPRINT_BYTES, core::mem::size_of::<L>());
    /// // At least the rings: 4 CPUs x 4 depths x 1024 words, plus the 8192-word main log.
    /// assert!(L::FOOTPRINT_BYTES > (4 * 4 * 1024 + 8192) * core::mem::size_of::<usize>());
    /// ```
    pub const FOOTPRINT_BYTES: usize = core::mem::size_of::<Self>();

    /// A logger with empty rings. `const`, so it can be a `static`.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, Level, Log};
    /// // 2 CPUs, 1024-word rings, an 8192-word main log; `const`, so no init code runs at boot.
    /// static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
    /// HostPlatform::register_cpu(0);
    /// assert_eq!(LOG.crashing_cpu(), None);
    /// assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"first"), Ok(0));
    /// ```
    #[cfg(not(nmilog_loom))]
    pub const fn new(platform: P) -> Self {
        Log {
            platform,
            cpus: [const { CachePadded::new(PerCpu::new()) }; CPUS],
            main: CachePadded::new(MainLog {
                owner: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                drain_gen: AtomicUsize::new(0),
                ring: RecordRing::new(),
                j_valid: AtomicUsize::new(0),
                j_src: AtomicUsize::new(0),
                j_pos: AtomicUsize::new(0),
                j_seq: AtomicUsize::new(0),
                j_ts: TsCell::new(),
                consumers: [const { [const { Consumer::new() }; DEPTH] }; CPUS],
            }),
            crash_cpu: AtomicUsize::new(0),
            console_loglevel: AtomicUsize::new(0),
            settle_ns: AtomicUsize::new(0),
            bad_cpu: AtomicUsize::new(0),
            flush_policy: AtomicUsize::new(0),
            console_hook: portable_atomic::AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// A logger with empty rings.
    #[cfg(nmilog_loom)]
    pub fn new(platform: P) -> Self {
        Log {
            platform,
            cpus: core::array::from_fn(|_| CachePadded::new(PerCpu::new())),
            main: CachePadded::new(MainLog {
                owner: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                drain_gen: AtomicUsize::new(0),
                ring: RecordRing::new(),
                j_valid: AtomicUsize::new(0),
                j_src: AtomicUsize::new(0),
                j_pos: AtomicUsize::new(0),
                j_seq: AtomicUsize::new(0),
                j_ts: TsCell::new(),
                consumers: core::array::from_fn(|_| core::array::from_fn(|_| Consumer::new())),
            }),
            crash_cpu: AtomicUsize::new(0),
            console_loglevel: AtomicUsize::new(0),
            settle_ns: AtomicUsize::new(0),
            bad_cpu: AtomicUsize::new(0),
            flush_policy: AtomicUsize::new(0),
            console_hook: portable_atomic::AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The platform.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, Log, Platform};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// assert_eq!(LOG.platform().cpu_count(), 2);
    /// ```
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The per-CPU state of `cpu`.
    ///
    /// ```
    /// # use nmilog::{ContextKind, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.nmi_enter();
    /// assert_eq!(LOG.cpu(0).unwrap().context(), (ContextKind::Nmi, 1));
    /// LOG.nmi_exit();
    /// assert!(LOG.cpu(1).is_none()); // `CPUS` is 1
    /// ```
    pub fn cpu(&self, cpu: usize) -> Option<&PerCpu<RING_WORDS, DEPTH>> {
        self.cpus.get(cpu).map(|c| &**c)
    }

    /// The main log buffer (read it with [`MainReader`]).
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// assert_eq!(LOG.main().next_seq(), 0);
    /// LOG.log_fmt(Level::Info, 0, format_args!("hello")).unwrap(); // flushed at once
    /// assert_eq!(LOG.main().next_seq(), 1);
    /// ```
    pub fn main(&self) -> &RecordRing<MAIN_WORDS> {
        &self.main.ring
    }

    /// Sets every per-CPU ring to use `words` words (a power of two `<= RING_WORDS`), before anything
    /// is logged. Returns the capacity in effect.
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// static LOG: Log<One, 1, 1024, 4096> = Log::new(One);
    /// // A boot parameter asks for smaller rings on this machine.
    /// assert_eq!(LOG.set_ring_capacity_words(256), Ok(256));
    /// assert_eq!(LOG.cpu(0).unwrap().rings[0].capacity_words(), 256);
    /// LOG.append_raw(Level::Info, 0, 0, b"x").unwrap();
    /// assert_eq!(LOG.set_ring_capacity_words(512), Err(256)); // too late: a ring was written
    /// ```
    pub fn set_ring_capacity_words(&self, words: usize) -> Result<usize, usize> {
        let mut got = Ok(words);
        for c in &self.cpus {
            for r in &c.rings {
                got = r.set_capacity_words(words);
                got?;
            }
        }
        got
    }

    /// Records with a level numerically below this go to the consoles (default: 7, i.e. all but
    /// debug).
    ///
    /// ```
    /// # use nmilog::{Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// assert_eq!(LOG.console_loglevel(), 7); // everything but debug
    /// ```
    pub fn console_loglevel(&self) -> u8 {
        // Stored XOR the default, so a fresh `static Log` is all zeros (`.bss`).
        (self.console_loglevel.load(Ordering::Relaxed) ^ CONSOLE_LOGLEVEL_DEFAULT) as u8
    }

    /// Sets the console log level.
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.set_console_loglevel(Level::Err as u8 + 1); // `quiet`: only err and worse
    /// assert_eq!(LOG.console_loglevel(), 4);
    /// ```
    pub fn set_console_loglevel(&self, level: u8) {
        self.console_loglevel
            .store(level as usize ^ CONSOLE_LOGLEVEL_DEFAULT, Ordering::Relaxed);
    }

    /// Sets the flush settle window (nanoseconds; see the module docs). Default 0.
    ///
    /// ```
    /// # use nmilog::{FlushPolicy, Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.set_flush_settle_ns(1_000); // keep records younger than 1 us in their ring
    /// LOG.append(Level::Info, 0, 0, b"fresh").unwrap();
    /// assert_eq!(LOG.flush().unwrap().moved, 0);
    /// LOG.set_flush_settle_ns(0);
    /// assert_eq!(LOG.flush().unwrap().moved, 1);
    /// ```
    pub fn set_flush_settle_ns(&self, ns: u64) {
        self.settle_ns.store(ns as usize, Ordering::Relaxed);
    }

    /// Sets when normal-context log calls flush (default [`FlushPolicy::Eager`]).
    ///
    /// ```
    /// # use nmilog::{FlushPolicy, Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.append(Level::Info, 0, 0, b"eager").unwrap();
    /// assert_eq!(LOG.main().next_seq(), 1); // in the main log at once
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.append(Level::Info, 0, 0, b"deferred").unwrap();
    /// assert_eq!(LOG.main().next_seq(), 1); // waits in the ring for the next flush
    /// ```
    pub fn set_flush_policy(&self, policy: FlushPolicy) {
        self.flush_policy.store(
            (policy == FlushPolicy::Deferred) as usize,
            Ordering::Relaxed,
        );
    }

    /// The flush policy in effect.
    ///
    /// ```
    /// # use nmilog::{FlushPolicy, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// assert_eq!(LOG.flush_policy(), FlushPolicy::Eager);
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// assert_eq!(LOG.flush_policy(), FlushPolicy::Deferred);
    /// ```
    pub fn flush_policy(&self) -> FlushPolicy {
        if self.flush_policy.load(Ordering::Relaxed) == 0 {
            FlushPolicy::Eager
        } else {
            FlushPolicy::Deferred
        }
    }

    /// Registers a function run after every normal-context flush, never from NMI or crash context —
    /// typically `|| CONSOLES.emit_pending(&LOG)` (see [`crate::console`]).
    ///
    /// ```
    /// # use nmilog::{Log, Platform};
    /// # struct One; impl Platform for One { fn cpu_id(&self)->usize{0} fn now_ns(&self)->u64{0} fn cpu_count(&self)->usize{1} }
    /// static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// static RAN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    /// LOG.set_console_hook(|| RAN.store(true, core::sync::atomic::Ordering::Relaxed));
    /// LOG.log_fmt(nmilog::Level::Info, 0, format_args!("hello")).unwrap();
    /// assert!(RAN.load(core::sync::atomic::Ordering::Relaxed));
    /// ```
    pub fn set_console_hook(&self, hook: fn()) {
        self.console_hook
            .store(hook as *mut (), portable_atomic::Ordering::Release);
    }

    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    fn run_console_hook(&self) {
        let p = self.console_hook.load(portable_atomic::Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: the only non-null value ever stored is a `fn()` cast to a pointer
            // (`set_console_hook`); function and data pointers have the same size on every target
            // this crate supports.
            let f: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(p) };
            f();
        }
    }

    /// Log calls dropped because the platform reported a CPU number out of range.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, AppendError, Level, Log};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// // This thread never called `register_cpu`: its CPU id is out of range.
    /// assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"hi"), Err(AppendError::BadCpu));
    /// assert_eq!(LOG.bad_cpu_dropped(), 1);
    /// ```
    pub fn bad_cpu_dropped(&self) -> u64 {
        self.bad_cpu.load(Ordering::Relaxed) as u64
    }

    fn count_bad_cpu(&self) {
        // Many CPUs may get here, so this one counter is shared: a native RMW where the target has
        // one (never portable-atomic's emulation, which the NMI path must not depend on). Without it
        // the count is best effort (a racing increment can be lost); the call is still refused,
        // never UB.
        #[cfg(target_has_atomic = "ptr")]
        self.bad_cpu.fetch_add(1, Ordering::Relaxed);
        #[cfg(not(target_has_atomic = "ptr"))]
        {
            let v = self.bad_cpu.load(Ordering::Relaxed);
            self.bad_cpu.store(v.wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// The calling CPU and its state; a CPU id out of range is counted ([`Self::bad_cpu_dropped`]).
    fn this_cpu(&self) -> Result<(usize, &PerCpu<RING_WORDS, DEPTH>), AppendError> {
        self.cpu_slot().ok_or_else(|| {
            self.count_bad_cpu();
            AppendError::BadCpu
        })
    }

    /// The calling CPU and its state, without counting a bad id (for checks made after a log call
    /// that already counted it).
    #[inline]
    fn cpu_slot(&self) -> Option<(usize, &PerCpu<RING_WORDS, DEPTH>)> {
        let cpu = self.platform.cpu_id();
        if cpu >= self.platform.cpu_count().min(CPUS) {
            return None;
        }
        Some((cpu, &self.cpus[cpu]))
    }

    // ---------------------------------------------------------------- context tracking

    /// Enters a nested context of `kind` on the current CPU; returns a guard that leaves it.
    ///
    /// ```
    /// # use nmilog::{Log, ContextKind, Platform};
    /// # struct One; impl Platform for One { fn cpu_id(&self)->usize{0} fn now_ns(&self)->u64{0} fn cpu_count(&self)->usize{1} }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// {
    ///     let _nmi = LOG.enter(ContextKind::Nmi);
    ///     assert_eq!(LOG.context(), Some((ContextKind::Nmi, 1)));
    /// }
    /// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
    /// ```
    pub fn enter(&self, kind: ContextKind) -> ContextGuard<'_> {
        let pc = self.this_cpu().ok().map(|(_, pc)| {
            pc.enter(kind);
            pc as &dyn ExitContext
        });
        ContextGuard { cpu: pc }
    }

    /// `irq_enter()`: entering an interrupt handler. Pair with [`irq_exit`](Self::irq_exit).
    ///
    /// ```
    /// # use nmilog::{ContextKind, Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.irq_enter();
    /// assert_eq!(LOG.context(), Some((ContextKind::Irq, 1)));
    /// LOG.append_raw(Level::Info, 0, 0, b"irq 5: spurious").unwrap(); // goes to ring 1
    /// LOG.irq_exit();
    /// assert_eq!(LOG.cpu(0).unwrap().rings[1].next_seq(), 1);
    /// ```
    pub fn irq_enter(&self) {
        if let Ok((_, pc)) = self.this_cpu() {
            pc.enter(ContextKind::Irq);
        }
    }
    /// Leaving an interrupt handler.
    ///
    /// ```
    /// # use nmilog::{ContextKind, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.irq_enter();
    /// LOG.irq_exit();
    /// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
    /// ```
    pub fn irq_exit(&self) {
        if let Ok((_, pc)) = self.this_cpu() {
            pc.exit();
        }
    }
    /// `nmi_enter()`: entering an NMI (or machine check) handler. Pair with [`nmi_exit`](Self::nmi_exit).
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.nmi_enter();
    /// LOG.log_fmt(Level::Emerg, 0, format_args!("watchdog: CPU {} stuck", 0)).unwrap();
    /// assert_eq!(LOG.main().next_seq(), 0); // NMI context: ring only, no flush
    /// LOG.nmi_exit();
    /// LOG.flush();
    /// assert_eq!(LOG.main().next_seq(), 1);
    /// ```
    pub fn nmi_enter(&self) {
        if let Ok((_, pc)) = self.this_cpu() {
            pc.enter(ContextKind::Nmi);
        }
    }
    /// Leaving an NMI handler.
    ///
    /// ```
    /// # use nmilog::{ContextKind, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.nmi_enter();
    /// LOG.nmi_exit();
    /// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
    /// ```
    pub fn nmi_exit(&self) {
        if let Ok((_, pc)) = self.this_cpu() {
            pc.exit();
        }
    }

    /// The current CPU's context kind and depth (`None` for a bad CPU id).
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, ContextKind, Log};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// assert_eq!(LOG.context(), None); // this thread is not a CPU yet
    /// HostPlatform::register_cpu(1);
    /// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
    /// ```
    pub fn context(&self) -> Option<(ContextKind, usize)> {
        let cpu = self.platform.cpu_id();
        self.cpus.get(cpu).map(|pc| pc.context())
    }

    /// Crash entry on the current CPU: from now on every log call on every CPU takes the NMI-safe
    /// path, and this CPU is in crash context (one nesting level above what it was running). Returns
    /// this CPU's number, [`CrashEnterError::OtherCpu`] if another CPU is already crashing (a crash on
    /// this CPU again is allowed: a fault inside the crash path), or [`CrashEnterError::BadCpu`] if the
    /// platform reports a CPU number out of range. The crash state is never left.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, ContextKind, CrashEnterError, Log};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// std::thread::spawn(|| {
    ///     HostPlatform::register_cpu(1);
    ///     assert_eq!(LOG.crash_enter(), Ok(1));
    ///     assert_eq!(LOG.context(), Some((ContextKind::Crash, 1)));
    /// }).join().unwrap();
    /// HostPlatform::register_cpu(0);
    /// assert_eq!(LOG.crash_enter(), Err(CrashEnterError::OtherCpu { cpu: 1 })); // already crashing
    /// assert_eq!(LOG.flush(), None); // every CPU is on the NMI-safe path now
    /// ```
    pub fn crash_enter(&self) -> Result<usize, CrashEnterError> {
        let (cpu, pc) = self.this_cpu().map_err(|_| CrashEnterError::BadCpu)?;
        #[cfg(nmilog_cas)]
        let won =
            match self
                .crash_cpu
                .compare_exchange(0, cpu + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => true,
                Err(v) => v == cpu + 1,
            };
        #[cfg(not(nmilog_cas))]
        let won = {
            // Without CAS two CPUs crashing at the same instant are not arbitrated; the last store wins.
            let v = self.crash_cpu.load(Ordering::Acquire);
            if v == 0 {
                self.crash_cpu.store(cpu + 1, Ordering::Release);
            }
            v == 0 || v == cpu + 1
        };
        if !won {
            return Err(CrashEnterError::OtherCpu {
                cpu: self.crash_cpu.load(Ordering::Relaxed).wrapping_sub(1),
            });
        }
        pc.enter(ContextKind::Crash);
        Ok(cpu)
    }

    /// The crashing CPU, if a crash has begun.
    ///
    /// ```
    /// # use nmilog::{Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// assert_eq!(LOG.crashing_cpu(), None);
    /// LOG.crash_enter().unwrap();
    /// assert_eq!(LOG.crashing_cpu(), Some(0));
    /// ```
    pub fn crashing_cpu(&self) -> Option<usize> {
        match self.crash_cpu.load(Ordering::Acquire) {
            0 => None,
            v => Some(v - 1),
        }
    }

    // ---------------------------------------------------------------- appending

    /// Runs `f` with the current CPU's ring for the current depth, holding that ring's recursion guard.
    #[inline]
    fn with_ring<R>(
        &self,
        f: impl FnOnce(usize, ContextKind, usize, &RecordRing<RING_WORDS>) -> Result<R, AppendError>,
    ) -> Result<R, AppendError> {
        let (cpu, pc) = self.this_cpu()?;
        let (kind, depth) = pc.context();
        if depth >= DEPTH {
            pc.count_overflow();
            return Err(AppendError::TooDeep);
        }
        let ring = &pc.rings[depth];
        if ring.active.load(Ordering::Relaxed) != 0 {
            ring.count_drop();
            return Err(AppendError::Reentered);
        }
        ring.active
            .store(crate::ring::ACTIVE_WRITING, Ordering::Relaxed);
        signal_fence();
        // Clears the guard however `f` leaves (a `Display` impl may panic), except when a test hook
        // froze the writer: a frozen CPU never leaves.
        struct Guard<'a, const W: usize>(&'a RecordRing<W>, bool);
        impl<const W: usize> Drop for Guard<'_, W> {
            fn drop(&mut self) {
                if self.1 {
                    signal_fence();
                    self.0.active.store(0, Ordering::Relaxed);
                }
            }
        }
        let mut guard = Guard(ring, true);
        let r = f(cpu, kind, depth, ring);
        if matches!(r, Err(AppendError::Frozen)) {
            guard.1 = false;
        }
        drop(guard);
        r
    }

    #[inline]
    fn write_record<H: StepHook>(
        &self,
        (cpu, kind, depth): (usize, ContextKind, usize),
        ring: &RecordRing<RING_WORDS>,
        (level, facility, flags): (u8, u8, u8),
        payload: &[u8],
        hook: &mut H,
    ) -> Result<u64, AppendError> {
        let platform = &self.platform;
        ring.write(
            |seq| Header {
                ts_ns: platform.now_ns(),
                src_seq: seq,
                len: 0,
                cpu: cpu as u16,
                level,
                facility,
                ctx: Header::pack_ctx(kind, depth),
                flags,
            },
            payload,
            hook,
        )
        .map_err(|e| match e {
            WriteError::TooLarge => {
                ring.count_drop();
                AppendError::TooLarge
            }
            WriteError::Frozen => AppendError::Frozen,
        })
    }

    /// The NMI path: appends pre-formatted bytes to the current CPU's ring and does nothing else.
    /// Wait-free, lock-free, no read-modify-write atomics. Returns the record's number in its ring.
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// use nmilog::record::flags;
    /// LOG.nmi_enter(); // a machine check handler: pre-formatted bytes, nothing else
    /// assert_eq!(LOG.append_raw(Level::Emerg, 0, flags::RAW, b"MCE bank 4"), Ok(0));
    /// assert_eq!(LOG.append_raw(Level::Emerg, 0, flags::RAW, b"status 0xbe00"), Ok(1));
    /// LOG.nmi_exit();
    /// assert_eq!(LOG.main().next_seq(), 0); // the NMI path never flushes
    /// ```
    #[inline]
    pub fn append_raw(
        &self,
        level: Level,
        facility: u8,
        flags: u8,
        payload: &[u8],
    ) -> Result<u64, AppendError> {
        self.append_raw_hooked(level, facility, flags, payload, &mut NoHook)
    }

    /// The body of `append_raw_with_hook` (public with the `steps` feature).
    #[inline]
    pub(crate) fn append_raw_hooked<H: StepHook>(
        &self,
        level: Level,
        facility: u8,
        flags: u8,
        payload: &[u8],
        hook: &mut H,
    ) -> Result<u64, AppendError> {
        self.with_ring(|cpu, kind, depth, ring| {
            self.write_record(
                (cpu, kind, depth),
                ring,
                (level as u8, facility, flags),
                payload,
                hook,
            )
        })
    }

    /// [`append_raw`](Self::append_raw) with a step hook (test harnesses: nested writes and frozen
    /// writers at every step of the protocol).
    ///
    /// ```
    /// # use nmilog::{AppendError, Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// use nmilog::ring::WriteStep;
    /// // The crash NMI stops this CPU after it reserved its record, before the header is written.
    /// let mut freeze = |s: WriteStep| s != WriteStep::Reserved;
    /// let r = LOG.append_raw_with_hook(Level::Err, 0, 0, b"half", &mut freeze);
    /// assert_eq!(r, Err(AppendError::Frozen));
    /// LOG.crash_enter().unwrap();
    /// assert_eq!(LOG.drain_on_crash().flush.torn, 1);
    /// assert_eq!(LOG.counters(0, 0).unwrap().torn, 1);
    /// ```
    #[cfg(feature = "steps")]
    #[inline]
    pub fn append_raw_with_hook<H: StepHook>(
        &self,
        level: Level,
        facility: u8,
        flags: u8,
        payload: &[u8],
        hook: &mut H,
    ) -> Result<u64, AppendError> {
        self.append_raw_hooked(level, facility, flags, payload, hook)
    }

    /// Appends pre-formatted bytes; in normal context (task or irq, no crash) then tries to flush.
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform, RecordBuf};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// use nmilog::{record::facility, ring::Read};
    /// assert_eq!(LOG.append(Level::Warning, facility::KERNEL, 0, b"thermal: throttling"), Ok(0));
    /// let (mut reader, mut rec) = (LOG.main_reader(), RecordBuf::new());
    /// assert_eq!(reader.read(&LOG, &mut rec), Read::Record); // already flushed
    /// assert_eq!(rec.header.level, Level::Warning as u8);
    /// ```
    pub fn append(
        &self,
        level: Level,
        facility: u8,
        flags: u8,
        payload: &[u8],
    ) -> Result<u64, AppendError> {
        let r = self.append_raw(level, facility, flags, payload);
        self.flush_if_normal();
        r
    }

    /// Formats `args` into a [`LINE_MAX`]-byte stack buffer (cut with a marker if longer) and appends
    /// it; in normal context then tries to flush. A log call made while formatting (a `Display` impl
    /// that logs) is refused and counted as dropped.
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform, RecordBuf, LINE_MAX, TRUNCATION_MARKER};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// use nmilog::record::flags;
    /// LOG.log_fmt(Level::Err, 0, format_args!("{:>300}", "end")).unwrap(); // too long
    /// let (mut reader, mut rec) = (LOG.main_reader(), RecordBuf::new());
    /// reader.read(&LOG, &mut rec);
    /// assert_eq!(rec.payload().len(), LINE_MAX);
    /// assert!(rec.text().unwrap().ends_with(TRUNCATION_MARKER));
    /// assert_ne!(rec.header.flags & flags::TRUNCATED, 0);
    /// ```
    pub fn log_fmt(
        &self,
        level: Level,
        flags: u8,
        args: fmt::Arguments<'_>,
    ) -> Result<u64, AppendError> {
        let r = self.with_ring(|cpu, kind, depth, ring| {
            let mut line: LineBuf<LINE_MAX> = LineBuf::new();
            let (text, fl): (&[u8], u8) = match args.as_str() {
                Some(s) if s.len() <= LINE_MAX => (s.as_bytes(), flags),
                _ => {
                    let _ = fmt::write(&mut line, args);
                    let fl = if line.truncated() {
                        flags | flags::TRUNCATED
                    } else {
                        flags
                    };
                    (line.finish(), fl)
                }
            };
            self.write_record(
                (cpu, kind, depth),
                ring,
                (level as u8, facility::KERNEL, fl),
                text,
                &mut NoHook,
            )
        });
        self.flush_if_normal();
        r
    }

    #[inline]
    fn flush_if_normal(&self) {
        #[cfg(nmilog_cas)]
        if self.flush_policy.load(Ordering::Relaxed) == 0 {
            let _ = self.flush();
        }
    }

    // ---------------------------------------------------------------- flush

    /// Whether the calling context may touch the main log and consoles.
    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    fn normal_context(&self) -> Option<usize> {
        if self.crash_cpu.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let (cpu, pc) = self.cpu_slot()?;
        if pc.nmi_safe_only() {
            return None;
        }
        Some(cpu)
    }

    /// Normal-context flush: takes flush ownership if it is free (never waits for it) and merges the
    /// rings into the main log. Returns `None` if called from NMI or crash context, during a crash, or
    /// if another CPU owns the flush (which is then told to look again before it leaves).
    ///
    /// ```
    /// # use nmilog::{FlushPolicy, Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.append(Level::Info, 0, 0, b"a").unwrap();
    /// LOG.append(Level::Info, 0, 0, b"b").unwrap();
    /// assert_eq!(LOG.flush().map(|r| r.moved), Some(2));
    /// assert_eq!(LOG.flush().map(|r| r.moved), Some(0)); // nothing left
    /// LOG.nmi_enter();
    /// assert_eq!(LOG.flush(), None); // never from NMI context
    /// LOG.nmi_exit();
    /// ```
    #[cfg(nmilog_cas)]
    pub fn flush(&self) -> Option<FlushReport> {
        self.flush_hooked(&mut NoHook)
    }

    /// The body of `flush_with_hook` (public with the `steps` feature).
    #[cfg(nmilog_cas)]
    pub(crate) fn flush_hooked<H: FlushHook>(&self, hook: &mut H) -> Option<FlushReport> {
        let cpu = self.normal_context()?;
        let mut total = FlushReport::default();
        let mut owned = false;
        // Bounded: at most four rounds, each one bounded by the ring sizes.
        for _ in 0..4 {
            if !self.try_own_flush(cpu) {
                // LMM(pending:A): SeqCst store, then one more try (SeqCst), pairs with the owner's
                // SeqCst release and `pending` swap (LMM(pending:B)): either the owner sees the flag
                // and looks again, or this CPU sees the owner gone and takes over.
                self.main.pending.store(1, Ordering::SeqCst);
                if !self.try_own_flush(cpu) {
                    break;
                }
                self.main.pending.store(0, Ordering::Relaxed);
            }
            owned = true;
            let (rep, completed) = self.flush_owned(false, hook);
            total.moved += rep.moved;
            total.overwritten = total.overwritten.wrapping_add(rep.overwritten);
            total.torn += rep.torn;
            total.steps += rep.steps;
            if !completed {
                // A hook froze the flush: ownership stays with the "frozen" CPU, as it would.
                return Some(total);
            }
            // LMM(owner:B): pairs with LMM(owner:A); SeqCst with the swap for LMM(pending:B).
            self.main.owner.store(0, Ordering::SeqCst);
            if self.main.pending.swap(0, Ordering::SeqCst) == 0 {
                break;
            }
        }
        if !owned {
            return None;
        }
        self.run_console_hook();
        Some(total)
    }

    /// [`flush`](Self::flush) with a hook between the steps of each move (test harnesses).
    ///
    /// ```
    /// # use nmilog::{FlushPolicy, FlushStep, Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.append(Level::Info, 0, 0, b"x").unwrap();
    /// // Freeze the owner right after it journaled its first move.
    /// let rep = LOG.flush_with_hook(&mut |s: FlushStep| s != FlushStep::Journaled).unwrap();
    /// assert_eq!(rep.moved, 0);
    /// assert_eq!(LOG.flush(), None); // the "frozen" CPU still owns the flush
    /// ```
    #[cfg(all(feature = "steps", nmilog_cas))]
    pub fn flush_with_hook<H: FlushHook>(&self, hook: &mut H) -> Option<FlushReport> {
        self.flush_hooked(hook)
    }

    /// One attempt to take flush ownership for `cpu`. LMM(owner:A): pairs with LMM(owner:B), the
    /// previous owner's release, so this owner sees the consumer cursors and main-log state it left
    /// (SeqCst also for LMM(pending:A)).
    #[cfg(nmilog_cas)]
    fn try_own_flush(&self, cpu: usize) -> bool {
        self.main
            .owner
            .compare_exchange(0, cpu + 1, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Fast path for the common case of a normal flush: nothing committed past the consumer's cursor
    /// and no log call in progress on that ring (two loads, inlined into the merge's first scan).
    /// A stale `next_seq` only delays a record to the next flush: its writer's own flush attempt, or
    /// the `pending` hand-off, comes after the store.
    #[inline(always)]
    fn source_idle(&self, c: usize, d: usize) -> bool {
        let ring = &self.cpus[c].rings[d];
        ring.next_seq() as usize == self.main.consumers[c][d].seq()
            && !ring.writer_inside_unpublished()
    }

    /// Peeks the next record of source `(c, d)`: its timestamp, or `None` (idle, empty, in flight,
    /// torn). The idle check is inlined into the merge; the rest is not.
    #[inline(always)]
    fn peek_source(
        &self,
        c: usize,
        d: usize,
        crash: bool,
        bound: &mut u64,
        rep: &mut FlushReport,
    ) -> Option<u64> {
        if !crash && self.source_idle(c, d) {
            rep.steps += 1;
            return None;
        }
        self.peek_busy_source(c, d, crash, bound, rep)
    }

    /// [`peek_source`](Self::peek_source) past the idle check.
    fn peek_busy_source(
        &self,
        c: usize,
        d: usize,
        crash: bool,
        bound: &mut u64,
        rep: &mut FlushReport,
    ) -> Option<u64> {
        let ring = &self.cpus[c].rings[d];
        let cons = &self.main.consumers[c][d];
        let mut cur = cons.cursor();
        // At most two resynchronisations: each moves the cursor to the ring's tail.
        for _ in 0..3 {
            rep.steps += 1;
            match ring.peek(&mut cur) {
                (Read::Record, h) => return Some(h.ts_ns),
                (Read::Empty, _) => {
                    // A writer stopped inside a log call before its record became visible (guard set,
                    // nothing at the head yet) lost that record too: torn.
                    if crash && ring.writer_inside_unpublished() && ring.writer_state().1 == cur.seq
                    {
                        self.count_torn_once(c, d, cur, rep);
                    }
                    return None;
                }
                (Read::InFlight, _) => {
                    if crash {
                        // Odd sequence word: the writer is stopped for good inside its write of record
                        // `cur.seq`. Torn, counted once however many drains see it.
                        self.count_torn_once(c, d, cur, rep);
                    } else {
                        // Strict: a record with the in-flight record's timestamp could tie with it,
                        // and ties are broken by CPU, which the in-flight record has not had yet.
                        *bound = (*bound).min(cons.last_ts.get().saturating_sub(1));
                    }
                    return None;
                }
                (Read::Overwritten { missed }, _) => {
                    cons.set_cursor(cur);
                    Consumer::add(&cons.overwritten, missed);
                    rep.overwritten = rep.overwritten.wrapping_add(missed);
                }
            }
        }
        // Gave up on a ring the writer keeps lapping: whatever it still holds is no older than the
        // last record moved from it, so nothing newer may be merged before it.
        if !crash {
            *bound = (*bound).min(cons.last_ts.get());
        }
        None
    }

    /// Counts the record `cur.seq` of source `(c, d)` as torn, unless a previous drain already did.
    fn count_torn_once(&self, c: usize, d: usize, cur: Cursor, rep: &mut FlushReport) {
        let cons = &self.main.consumers[c][d];
        let tag = cur.seq.wrapping_add(1);
        if cons.torn_seq.load(Ordering::Relaxed) != tag {
            cons.torn_seq.store(tag, Ordering::Relaxed);
            Consumer::add(&cons.torn, 1);
            rep.torn += 1;
        }
    }

    /// The most steps one flush or drain can take with the current CPU count.
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// for _ in 0..100 {
    ///     LOG.append_raw(Level::Info, 0, 0, b"flood").unwrap(); // wraps the ring
    /// }
    /// let bound = LOG.drain_step_bound();
    /// LOG.crash_enter().unwrap();
    /// let rep = LOG.drain_on_crash();
    /// assert_eq!(rep.bound, bound);
    /// assert!(rep.flush.steps <= bound);
    /// ```
    pub fn drain_step_bound(&self) -> u64 {
        let n = self.platform.cpu_count().min(CPUS) as u64;
        let per_ring = (RING_WORDS / span_words(0)) as u64 + 1;
        // Per source with its writer stopped: up to three peeks for the first look, two looks per
        // record (the one that ends a run and the one that moves it), up to three peeks when it runs
        // dry: 6 + 2 × records, within 3 + 4 × per_ring since per_ring > records. Against a writer
        // that keeps going, the merge stops before a step could pass the bound.
        n * DEPTH as u64 * (3 + per_ring * 4)
    }

    /// The merge (flush owner only). Returns the report and whether it ran to completion (false only
    /// when a hook froze it, or a nested drain superseded it).
    fn flush_owned<H: FlushHook>(&self, crash: bool, hook: &mut H) -> (FlushReport, bool) {
        let ncpu = self.platform.cpu_count().min(CPUS);
        let mut rep = FlushReport::default();
        let mut bound = if crash {
            u64::MAX
        } else {
            self.platform
                .now_ns()
                .saturating_sub(self.settle_ns.load(Ordering::Relaxed) as u64)
        };
        let gen = self.main.drain_gen.load(Ordering::Relaxed);
        let mut heap: SourceHeap<CPUS, DEPTH> = SourceHeap::new();
        for c in 0..ncpu {
            for d in 0..DEPTH {
                if let Some(ts) = self.peek_source(c, d, crash, &mut bound, &mut rep) {
                    heap.push((ts, (c * DEPTH + d) as u32));
                }
            }
        }
        let budget = self.drain_step_bound();
        // Built on first use: an empty flush does not zero a 1 KiB buffer.
        let mut buf: Option<RecordBuf> = None;
        // The oldest head, and the runner-up it has to stay ahead of (ties: CPU, then depth).
        'merge: while let Some((ts, src)) = heap.pop() {
            if ts > bound {
                break;
            }
            let second = heap.peek();
            let (c, d) = (src as usize / DEPTH, src as usize % DEPTH);
            let ring = &self.cpus[c].rings[d];
            let cons = &self.main.consumers[c][d];
            // A run: move records from (c, d) while its head stays older than the runner-up, without
            // rescanning every source per record. One validated look per record: `read_if` copies
            // the payload only of a record the run takes; the record that ends the run is only
            // peeked (header) and stays in its ring, looked at again when its turn comes.
            loop {
                // One read, then up to three peeks in `peek_source`: stop before the bound can be
                // passed.
                if rep.steps + 4 > budget {
                    break 'merge;
                }
                if crash && self.main.drain_gen.load(Ordering::Relaxed) != gen {
                    return (rep, false);
                }
                if !crash && self.crash_cpu.load(Ordering::Relaxed) != 0 {
                    break 'merge;
                }
                let mut cur = cons.cursor();
                rep.steps += 1;
                let buf = buf.get_or_insert_with(RecordBuf::new);
                let in_run =
                    |h: &Header| h.ts_ns <= bound && second.is_none_or(|s| (h.ts_ns, src) < s);
                match ring.read_if(&mut cur, buf, in_run) {
                    (Read::Record, h, false) => {
                        heap.push((h.ts_ns, src));
                        continue 'merge;
                    }
                    (Read::Record, _, true) => {
                        if !self.move_record(c, d, buf, cur, hook) {
                            return (rep, false);
                        }
                        rep.moved += 1;
                    }
                    (Read::Overwritten { missed }, _, _) => {
                        Consumer::add(&cons.overwritten, missed);
                        rep.overwritten = rep.overwritten.wrapping_add(missed);
                        cons.set_cursor(cur);
                        if let Some(t) = self.peek_source(c, d, crash, &mut bound, &mut rep) {
                            heap.push((t, src));
                        }
                        continue 'merge;
                    }
                    (Read::Empty | Read::InFlight, _, _) => {
                        // Torn accounting, the flush bound and lapping are `peek_source`'s job.
                        if let Some(t) = self.peek_source(c, d, crash, &mut bound, &mut rep) {
                            heap.push((t, src));
                        }
                        continue 'merge;
                    }
                }
            }
        }
        (rep, true)
    }

    /// One journaled move of `buf` (read from source `(c, d)`, whose cursor is then `next`) into the
    /// main log. Returns false if a hook froze it.
    fn move_record<H: FlushHook>(
        &self,
        c: usize,
        d: usize,
        buf: &RecordBuf,
        next: Cursor,
        hook: &mut H,
    ) -> bool {
        let m = &*self.main;
        let cons = &m.consumers[c][d];
        let mseq = m.ring.next_seq() as usize;
        m.j_src.store(c * DEPTH + d, Ordering::Relaxed);
        m.j_pos.store(next.pos, Ordering::Relaxed);
        m.j_seq.store(next.seq, Ordering::Relaxed);
        m.j_ts.set(buf.header.ts_ns);
        // LMM(journal:A): the entry's fields before its valid word. Pairs with LMM(journal:B) in the
        // takeover (which is also ordered after this by the NMI check-in handshake).
        m.j_valid.store(mseq.wrapping_add(1), Ordering::Release);
        if !hook.step(FlushStep::Journaled) {
            return false;
        }
        let header = buf.header;
        match m
            .ring
            .write(|_| header, buf.payload(), &mut MainHookAdapter(hook))
        {
            Ok(_) => {}
            Err(WriteError::Frozen) => return false,
            Err(WriteError::TooLarge) => {
                // The main log is smaller than a source ring's largest record: counted, not lost
                // silently.
                Consumer::add(&cons.overwritten, 1);
            }
        }
        cons.set_cursor(next);
        cons.last_ts.set(buf.header.ts_ns);
        if !hook.step(FlushStep::CursorStored) {
            return false;
        }
        m.j_valid.store(0, Ordering::Release);
        hook.step(FlushStep::Done)
    }

    /// Replays the journal after a takeover: if the stopped owner's record made it into the main log,
    /// advance its source cursor; otherwise the record stays in its ring and is moved again.
    fn repair_main(&self) -> bool {
        let m = &*self.main;
        m.ring.complete_abandoned_write();
        // LMM(journal:B): pairs with LMM(journal:A).
        let v = m.j_valid.load(Ordering::Acquire);
        if v == 0 {
            return false;
        }
        let mseq = v.wrapping_sub(1);
        let committed = before(mseq, m.ring.next_seq() as usize);
        let src = m.j_src.load(Ordering::Relaxed);
        let (c, d) = (src / DEPTH, src % DEPTH);
        if committed && c < CPUS {
            let cons = &m.consumers[c][d];
            cons.set_cursor(Cursor {
                pos: m.j_pos.load(Ordering::Relaxed),
                seq: m.j_seq.load(Ordering::Relaxed),
            });
            cons.last_ts.set(m.j_ts.get());
        }
        m.j_valid.store(0, Ordering::Release);
        committed
    }

    /// The crash-time drain. Call it on the crashing CPU (after [`crash_enter`](Self::crash_enter))
    /// once every other CPU is stopped or declared dead.
    ///
    /// **Contract** (as for nbcon's panic takeover): flush ownership is taken without the owner's
    /// consent, so the owner must never run again. A CPU that did not stop and keeps logging only ever
    /// touches its own rings (the crash flag puts it on the NMI path), but a CPU that did not stop *in
    /// the middle of a flush* may still write into the main log; that is outside the contract and
    /// costs at most that flush's records (never memory safety).
    ///
    /// Never spins: a bounded number of steps ([`DrainReport::bound`]), no lock, no waiting. Idempotent
    /// and safe to call again from a nested crash (a fault inside the crash path): a drain interrupted
    /// half-way is repaired through the move journal, and no record is delivered twice. The nested
    /// crash must not *return* into the interrupted drain (crash paths never return): the interrupted
    /// drain's local state is stale by then, and resuming it would rewind the main log.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, Level, Log, RecordBuf, ring::Read};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// std::thread::spawn(|| {
    ///     HostPlatform::register_cpu(1);
    ///     LOG.nmi_enter(); // the crash IPI; CPU 1 never leaves it
    ///     LOG.append_raw(Level::Emerg, 0, 0, b"CPU 1 stopping").unwrap();
    /// }).join().unwrap();
    /// HostPlatform::register_cpu(0);
    /// LOG.crash_enter().unwrap();
    /// assert_eq!(LOG.drain_on_crash().flush.moved, 1);
    /// let (mut reader, mut rec) = (LOG.main_reader(), RecordBuf::new());
    /// assert_eq!(reader.read(&LOG, &mut rec), Read::Record);
    /// assert_eq!((rec.header.cpu, rec.text()), (1, Some("CPU 1 stopping")));
    /// ```
    pub fn drain_on_crash(&self) -> DrainReport {
        self.drain_on_crash_hooked(&mut NoHook)
    }

    /// The body of `drain_on_crash_with_hook` (public with the `steps` feature).
    pub(crate) fn drain_on_crash_hooked<H: FlushHook>(&self, hook: &mut H) -> DrainReport {
        let me = self.platform.cpu_id();
        let m = &*self.main;
        let mut report = DrainReport {
            bound: self.drain_step_bound(),
            ..DrainReport::default()
        };
        // Hostile takeover: a plain store (no CAS: works on every target, and never waits).
        let prev = m.owner.load(Ordering::Acquire);
        m.owner
            .store(me.wrapping_add(1) | OWNER_TAKEN_OVER, Ordering::Release);
        let prev_cpu = (prev & !OWNER_TAKEN_OVER).wrapping_sub(1);
        if prev != 0 && prev_cpu != me {
            report.took_over_from = Some(prev_cpu);
        }
        let gen = m.drain_gen.load(Ordering::Relaxed).wrapping_add(1);
        m.drain_gen.store(gen, Ordering::Relaxed);
        signal_fence();
        report.repaired_move = self.repair_main();
        let (flush, completed) = self.flush_owned(true, hook);
        report.flush = flush;
        if !completed {
            return report;
        }
        report.accounting_records = self.write_accounting();
        report
    }

    /// [`drain_on_crash`](Self::drain_on_crash) with a hook between the steps of each move.
    ///
    /// ```
    /// # use nmilog::{FlushStep, Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.append_raw(Level::Emerg, 0, 0, b"last words").unwrap();
    /// LOG.crash_enter().unwrap();
    /// // A fault inside the drain stops it right after it journaled its first move...
    /// let first = LOG.drain_on_crash_with_hook(&mut |s: FlushStep| s != FlushStep::Journaled);
    /// assert_eq!(first.flush.moved, 0);
    /// // ...and the nested crash's drain finishes the job, exactly once.
    /// assert_eq!(LOG.drain_on_crash().flush.moved, 1);
    /// assert_eq!(LOG.main().next_seq(), 1);
    /// ```
    #[cfg(feature = "steps")]
    pub fn drain_on_crash_with_hook<H: FlushHook>(&self, hook: &mut H) -> DrainReport {
        self.drain_on_crash_hooked(hook)
    }

    /// Loss counters of source `(cpu, depth)`.
    ///
    /// ```
    /// # use nmilog::{FlushPolicy, Level, Log, Platform};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// static LOG: Log<One, 1, 64, 1024> = Log::new(One);
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
    fn write_accounting(&self) -> u64 {
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

    /// A reader of the main log starting at its oldest record.
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform, RecordBuf};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// static LOG: Log<One, 1, 256, 64> = Log::new(One);
    /// use nmilog::ring::Read;
    /// for i in 0..20 {
    ///     LOG.log_fmt(Level::Info, 0, format_args!("line {i:02}")).unwrap(); // the main log wraps
    /// }
    /// let (mut late, mut rec) = (LOG.main_reader(), RecordBuf::new());
    /// assert_eq!(late.read(&LOG, &mut rec), Read::Record); // the oldest record still there
    /// assert_eq!(late.missed(), 0);
    /// assert!(rec.seq > 0);
    /// ```
    pub fn main_reader(&self) -> MainReader {
        MainReader {
            cur: self.main.ring.oldest(),
            missed: 0,
        }
    }
}

trait ExitContext {
    fn exit_context(&self);
}
impl<const R: usize, const D: usize> ExitContext for PerCpu<R, D> {
    fn exit_context(&self) {
        self.exit();
    }
}

/// Leaves a context entered with [`Log::enter`] when dropped.
///
/// ```
/// # use nmilog::{ContextKind, Level, Log, Platform};
/// # struct One;
/// # impl Platform for One {
/// #     fn cpu_id(&self) -> usize { 0 }
/// #     fn now_ns(&self) -> u64 { 7 }
/// #     fn cpu_count(&self) -> usize { 1 }
/// # }
/// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
/// fn nmi_handler(reason: u8) -> Option<u64> {
///     let _nmi = LOG.enter(ContextKind::Nmi);
///     if reason == 0 {
///         return None; // unknown NMI: the guard still leaves the context
///     }
///     LOG.append_raw(Level::Emerg, 0, 0, b"NMI").ok()
/// }
/// assert_eq!(nmi_handler(0), None);
/// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
/// ```
pub struct ContextGuard<'a> {
    cpu: Option<&'a dyn ExitContext>,
}

impl Drop for ContextGuard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.cpu {
            c.exit_context();
        }
    }
}

/// A reader of the main log, like an open `/dev/kmsg`: sees every record once, in order, and is told
/// how many it missed when the log overwrote records it had not read.
///
/// ```
/// # use nmilog::{Level, Log, MainReader, Platform, RecordBuf};
/// # struct One;
/// # impl Platform for One {
/// #     fn cpu_id(&self) -> usize { 0 }
/// #     fn now_ns(&self) -> u64 { 7 }
/// #     fn cpu_count(&self) -> usize { 1 }
/// # }
/// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
/// use nmilog::ring::Read;
/// LOG.append(Level::Info, 0, 0, b"boot").unwrap();
/// let (mut console, mut syslog) = (MainReader::new(), MainReader::new());
/// let mut rec = RecordBuf::new();
/// assert_eq!(console.read(&LOG, &mut rec), Read::Record);
/// assert_eq!(console.read(&LOG, &mut rec), Read::Empty);
/// assert_eq!(syslog.read(&LOG, &mut rec), Read::Record); // readers are independent
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MainReader {
    cur: Cursor,
    missed: u64,
}

impl MainReader {
    /// A reader at the start of a log that was never written.
    ///
    /// ```
    /// # use nmilog::{Log, MainReader, Platform, RecordBuf};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// use nmilog::ring::Read;
    /// const AT_START: MainReader = MainReader::new();
    /// let mut reader = AT_START;
    /// assert_eq!(reader.next_seq(), 0);
    /// assert_eq!(reader.read(&LOG, &mut RecordBuf::new()), Read::Empty);
    /// ```
    pub const fn new() -> Self {
        MainReader {
            cur: Cursor::START,
            missed: 0,
        }
    }

    /// Reads the next record of `log`'s main buffer (see [`Read`]).
    ///
    /// ```
    /// # use nmilog::{Level, Log, MainReader, Platform, RecordBuf};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// use nmilog::ring::Read;
    /// LOG.log_fmt(Level::Info, 0, format_args!("a")).unwrap();
    /// LOG.log_fmt(Level::Info, 0, format_args!("b")).unwrap();
    /// let (mut reader, mut rec) = (MainReader::new(), RecordBuf::new());
    /// let mut lines = Vec::new();
    /// while reader.read(&LOG, &mut rec) == Read::Record {
    ///     lines.push(rec.text().unwrap().to_string());
    /// }
    /// assert_eq!(lines, ["a", "b"]);
    /// ```
    pub fn read<P: Platform, const C: usize, const R: usize, const M: usize, const D: usize>(
        &mut self,
        log: &Log<P, C, R, M, D>,
        out: &mut RecordBuf,
    ) -> Read {
        let r = log.main.ring.read(&mut self.cur, out);
        if let Read::Overwritten { missed } = r {
            self.missed = self.missed.wrapping_add(missed);
        }
        r
    }

    /// Sequence number of the next record.
    ///
    /// ```
    /// # use nmilog::{Level, Log, Platform, RecordBuf};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// # static LOG: Log<One, 1, 256, 1024> = Log::new(One);
    /// LOG.append(Level::Info, 0, 0, b"one").unwrap();
    /// let mut reader = LOG.main_reader();
    /// reader.read(&LOG, &mut RecordBuf::new());
    /// assert_eq!(reader.next_seq(), 1);
    /// ```
    pub fn next_seq(&self) -> u64 {
        self.cur.seq()
    }

    /// Records this reader missed so far.
    ///
    /// ```
    /// # use nmilog::{Level, Log, MainReader, Platform, RecordBuf};
    /// # struct One;
    /// # impl Platform for One {
    /// #     fn cpu_id(&self) -> usize { 0 }
    /// #     fn now_ns(&self) -> u64 { 7 }
    /// #     fn cpu_count(&self) -> usize { 1 }
    /// # }
    /// static LOG: Log<One, 1, 256, 64> = Log::new(One);
    /// use nmilog::ring::Read;
    /// let mut slow = MainReader::new();
    /// for i in 0..20 {
    ///     LOG.log_fmt(Level::Info, 0, format_args!("line {i:02}")).unwrap(); // the main log wraps
    /// }
    /// let mut rec = RecordBuf::new();
    /// let Read::Overwritten { missed } = slow.read(&LOG, &mut rec) else { panic!() };
    /// assert!(missed > 0);
    /// assert_eq!(slow.missed(), missed);
    /// assert_eq!(slow.read(&LOG, &mut rec), Read::Record); // then it goes on from the oldest
    /// ```
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

impl Default for MainReader {
    fn default() -> Self {
        Self::new()
    }
}
