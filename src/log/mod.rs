//! The logger: per-CPU rings, the main log buffer, flush ownership, and the crash-time drain.
//!
//! This file holds the [`Log`] type itself, its constructor and its configuration (console log level,
//! flush settle window, flush policy, console hook, ring capacity); each of the logger's jobs is one
//! `impl Log` block in a file of its own (see [Files](#files)).
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
//!   then depth), a record at a time: append it to the main log, then advance its ring's cursor.
//! * **Crash drain** ([`Log::drain_on_crash`]): on the crashing CPU, hand every record of the main
//!   log and the rings to a sink the crashing CPU alone owns (the handover image, a console), in
//!   timestamp order and exactly once, counting what was lost and why — **reading** shared state
//!   only, so that a CPU that did not stop (deaf to the NMI, or late) can resume anything it was
//!   doing, a flush included, without corrupting the crash log. Its work is bounded by the ring sizes
//!   (see [`DrainReport::bound`]).
//!
//! Both merges run one engine (`merge.rs`); they differ in their sources and their destination.
//!
//! # Timestamp order across flushes
//!
//! A normal flush only moves records older than every record it cannot see yet: a ring whose next
//! record is in flight bounds the flush at the last timestamp moved from that ring, and records younger
//! than `now - settle` stay in their rings (a writer stores its odd sequence word *before* it reads the
//! clock; the settle window, [`Log::set_flush_settle_ns`], covers the time that store takes to become
//! visible). The crash drain, which merges the main log with everything still in the rings, has no
//! such limit.
//!
//! # Files
//!
//! * `context.rs`: context tracking (task, softirq, irq, NMI, crash; the log's brackets or the
//!   platform's report) and the calling CPU's slot;
//! * `append.rs`: appending a record to the calling CPU's ring (the NMI path and the normal path);
//! * `merge.rs`: the merge engine both the flush and the crash drain run: heap, runs, bounds;
//! * `flush.rs`: the normal-context flush: ownership (one compare-exchange), the `pending` hand-off,
//!   and the move of a record into the main log;
//! * `crash/`: the crash-time drain: its snapshot, its sources and its accounting records;
//! * `accounting.rs`: the flush side's per-source state (cursors, loss counters) and
//!   [`Log::counters`];
//! * `reader.rs`: readers of the main log;
//! * `arena.rs`: logs sized at boot, their rings carved from one arena;
//! * `layout.rs`: where a memory-dump reader finds this log's words (the descriptor's source).

use core::fmt;

use crossbeam_utils::CachePadded;

use crate::percpu::PerCpu;
use crate::record::Level;
use crate::record::RecordBuf;
use crate::ring::{RecordRing, Ring};
use crate::sync::{array_of, const_or_loom_fn, AtomicPtr, AtomicUsize, Ordering, UnsafeCell};
use crate::Platform;

mod accounting;
mod append;
mod arena;
mod context;
mod crash;
mod flush;
mod layout;
mod merge;
mod reader;

use self::accounting::Consumer;
pub use self::accounting::CpuCounters;
pub(crate) use self::accounting::FlushState;
pub use self::append::AppendError;
pub use self::arena::ArenaError;
pub(crate) use self::arena::ArenaSlot;
pub use self::context::{ContextGuard, CrashEnterError};
use self::crash::DrainState;
pub(crate) use self::crash::{counters_of, cpu_stopped, drain, DrainFixed, DrainInput, DrainMem};
pub use self::crash::{CrashSink, DrainError, DrainReport, DrainSource, Origin, RunSink};
pub use self::flush::{FlushHook, FlushReport, FlushStep};
use self::merge::MergeHeap;
pub use self::reader::MainReader;

const CONSOLE_LOGLEVEL_DEFAULT: usize = Level::Info as usize + 1;

/// The main log buffer: a ring written only by the flush owner, the flush-side state of every source
/// ring, and the flush's merge heap.
struct MainLog<const MAIN_WORDS: usize, const CPUS: usize, const DEPTH: usize> {
    /// 0 when free; `cpu + 1` of the owner.
    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    owner: AtomicUsize,
    /// Set by a CPU that found ownership taken, so the owner looks again before leaving.
    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    pending: AtomicUsize,
    ring: RecordRing<MAIN_WORDS>,
    /// Where a log sized at boot put its main log (`MAIN_WORDS` 0).
    arena: ArenaSlot,
    consumers: [[Consumer; DEPTH]; CPUS],
    /// The flush's merge heap (flush owner only).
    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    flush_heap: MergeHeap<CPUS, DEPTH>,
    /// The flush's record buffer (flush owner only): here rather than on the stack of every log call
    /// that flushes (a kernel stack is 16 KiB; `tests/stack.rs`).
    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    flush_buf: UnsafeCell<RecordBuf>,
}

// SAFETY: every field but `flush_buf` is an atomic (or made of atomics). `flush_buf` is read and
// written only by the flush owner, inside `flush_owned` (built only with `nmilog_cas`: without
// compare-exchange nothing touches it): ownership is taken with a compare-exchange
// on `owner` (LMM(pending:A/B) hand it over) and never taken from a CPU that holds it, a CPU in NMI
// or crash context never flushes, and the crash drain has buffers of its own. So at most one CPU
// touches it at any time, and a handover (owner released with SeqCst, taken with SeqCst) orders the
// previous owner's accesses before the next one's. (A reader that views the whole `Log` as words —
// a memory dump, the raw-memory tests — reads this buffer too: sound only once no flush can run,
// which a dump of a stopped machine, or a test that joined its flushing threads, guarantees.)
unsafe impl<const MAIN_WORDS: usize, const CPUS: usize, const DEPTH: usize> Sync
    for MainLog<MAIN_WORDS, CPUS, DEPTH>
{
}

/// The logger.
///
/// * `P`: the [`Platform`] (CPU id, clock, CPU count).
/// * `CPUS`: the most CPUs that can log.
/// * `RING_WORDS`: words per ring (a power of two); each CPU has `DEPTH` rings.
/// * `MAIN_WORDS`: words in the main log buffer (a power of two).
/// * `DEPTH`: context nesting levels with their own ring (task, softirq, hardirq, NMI, nested NMI or
///   machine check: 5; a crash deeper than that takes the top ring).
///
/// Footprint ([`Log::FOOTPRINT_BYTES`], exact; `W = size_of::<usize>()`, `T = 8 / W`, `pad` = round
/// up to `CachePadded`'s alignment), in bytes:
///
/// ```text
/// CPUS·pad((2 + DEPTH·(10 + RING_WORDS))·W)
///   + pad((13 + T + MAIN_WORDS + CPUS·DEPTH·(6 + 2·T))·W + size_of::<RecordBuf>())
///   + pad((10 + T + CPUS·DEPTH·(14 + T))·W)
///   + pad(size_of::<P>() + 7·W)
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
    const DEPTH: usize = 5,
> {
    platform: P,
    cpus: [CachePadded<PerCpu<RING_WORDS, DEPTH>>; CPUS],
    main: CachePadded<MainLog<MAIN_WORDS, CPUS, DEPTH>>,
    /// The crash drain's state (crashing CPU only).
    crash: CachePadded<DrainState<CPUS, DEPTH>>,
    /// 0, or `cpu + 1` of the crashing CPU.
    crash_cpu: AtomicUsize,
    console_loglevel: AtomicUsize,
    settle_ns: AtomicUsize,
    bad_cpu: AtomicUsize,
    /// Log calls made through the global macros before this log was registered (handed over by
    /// `set_global!`), and calls refused before a boot-sized log's arena was attached.
    unregistered: AtomicUsize,
    flush_policy: AtomicUsize,
    /// A `fn()` run after each normal-context flush (console output), or null.
    console_hook: AtomicPtr<()>,
}

/// When normal-context log calls move records into the main log.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{FlushPolicy, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
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
    /// Normal-context log calls flush only when their ring is due ([`Log::flush_if_due`]: a batch
    /// of records pending, a quarter of the ring pending, or the first record after a quiet spell):
    /// the flush's cost is shared by a burst, at the price of a bounded console latency (see the
    /// flush module's "Batching").
    Batched,
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

    /// A region this large holds the handover image of this logger whatever the rings and the main
    /// log contain ([`handover::max_image_size`](crate::handover::max_image_size) for these
    /// parameters): [`handover::write_image`](crate::handover::write_image) never leaves a record
    /// out of it.
    ///
    /// ```
    /// use nmilog::{handover, host::HostPlatform, Log};
    /// type L = Log<HostPlatform, 4, 1024, 8192>;
    /// assert_eq!(L::MAX_IMAGE_BYTES, handover::max_image_size(4, 5, 1024, 8192));
    /// static REGION_BYTES: usize = L::MAX_IMAGE_BYTES; // `const`: a static region can use it
    /// assert!(REGION_BYTES > 4 * 4 * 1024 * 8);
    /// ```
    pub const MAX_IMAGE_BYTES: usize =
        crate::handover::max_image_size(CPUS, DEPTH, RING_WORDS, MAIN_WORDS);

    const_or_loom_fn! {
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
        pub fn new(platform: P) -> Self {
            Log {
                platform,
                cpus: array_of!(CachePadded::new(PerCpu::new()); CPUS),
                main: CachePadded::new(MainLog {
                    owner: AtomicUsize::new(0),
                    pending: AtomicUsize::new(0),
                    ring: RecordRing::new(),
                    arena: ArenaSlot::new(),
                    consumers: array_of!(array_of!(Consumer::new(); DEPTH); CPUS),
                    flush_heap: MergeHeap::new(),
                    flush_buf: UnsafeCell::new(RecordBuf::new()),
                }),
                crash: CachePadded::new(DrainState::new()),
                crash_cpu: AtomicUsize::new(0),
                console_loglevel: AtomicUsize::new(0),
                settle_ns: AtomicUsize::new(0),
                bad_cpu: AtomicUsize::new(0),
                unregistered: AtomicUsize::new(0),
                flush_policy: AtomicUsize::new(0),
                console_hook: AtomicPtr::new(core::ptr::null_mut()),
            }
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
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{ContextKind, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
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
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// assert_eq!(LOG.main().next_seq(), 0);
    /// LOG.log_fmt(Level::Info, 0, format_args!("hello")).unwrap(); // flushed at once
    /// assert_eq!(LOG.main().next_seq(), 1);
    /// ```
    pub fn main(&self) -> &Ring {
        self.main_ring()
    }

    /// Sets every per-CPU ring to use `words` words (a power of two `<= RING_WORDS`), before anything
    /// is logged. Returns the capacity in effect.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log};
    /// static LOG: Log<OneCpu, 1, 1024, 4096> = Log::new(OneCpu);
    /// // A boot parameter asks for smaller rings on this machine.
    /// assert_eq!(LOG.set_ring_capacity_words(256), Ok(256));
    /// assert_eq!(LOG.cpu(0).unwrap().rings[0].capacity_words(), 256);
    /// LOG.append_raw(Level::Info, 0, 0, b"x").unwrap();
    /// assert_eq!(LOG.set_ring_capacity_words(512), Err(256)); // too late: a ring was written
    /// ```
    pub fn set_ring_capacity_words(&self, words: usize) -> Result<usize, usize> {
        let mut got = Ok(words);
        for c in &self.cpus {
            for r in (0..DEPTH).filter_map(|d| c.ring(d)) {
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
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::Log;
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// assert_eq!(LOG.console_loglevel(), 7); // everything but debug
    /// ```
    pub fn console_loglevel(&self) -> u8 {
        // Stored XOR the default, so a fresh `static Log` is all zeros (`.bss`).
        (self.console_loglevel.load(Ordering::Relaxed) ^ CONSOLE_LOGLEVEL_DEFAULT) as u8
    }

    /// Sets the console log level.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.set_console_loglevel(Level::Err as u8 + 1); // `quiet`: only err and worse
    /// assert_eq!(LOG.console_loglevel(), 4);
    /// ```
    pub fn set_console_loglevel(&self, level: u8) {
        self.console_loglevel
            .store(level as usize ^ CONSOLE_LOGLEVEL_DEFAULT, Ordering::Relaxed);
    }

    /// Sets the flush settle window (nanoseconds; see the module docs). Default 0. A target with
    /// 32-bit words keeps at most `u32::MAX` ns (4.29 s): a longer window is that one.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{FlushPolicy, Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.set_flush_settle_ns(1_000); // keep records younger than 1 us in their ring
    /// LOG.append(Level::Info, 0, 0, b"fresh").unwrap();
    /// assert_eq!(LOG.flush().unwrap().moved, 0);
    /// LOG.set_flush_settle_ns(0);
    /// assert_eq!(LOG.flush().unwrap().moved, 1);
    /// ```
    pub fn set_flush_settle_ns(&self, ns: u64) {
        let ns = usize::try_from(ns).unwrap_or(usize::MAX);
        self.settle_ns.store(ns, Ordering::Relaxed);
    }

    /// Sets when normal-context log calls flush (default [`FlushPolicy::Eager`]).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{FlushPolicy, Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.append(Level::Info, 0, 0, b"eager").unwrap();
    /// assert_eq!(LOG.main().next_seq(), 1); // in the main log at once
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.append(Level::Info, 0, 0, b"deferred").unwrap();
    /// assert_eq!(LOG.main().next_seq(), 1); // waits in the ring for the next flush
    /// ```
    pub fn set_flush_policy(&self, policy: FlushPolicy) {
        let v = match policy {
            FlushPolicy::Eager => 0,
            FlushPolicy::Deferred => 1,
            FlushPolicy::Batched => 2,
        };
        self.flush_policy.store(v, Ordering::Relaxed);
    }

    /// The flush policy in effect.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{FlushPolicy, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// assert_eq!(LOG.flush_policy(), FlushPolicy::Eager);
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// assert_eq!(LOG.flush_policy(), FlushPolicy::Deferred);
    /// LOG.set_flush_policy(FlushPolicy::Batched);
    /// assert_eq!(LOG.flush_policy(), FlushPolicy::Batched);
    /// ```
    pub fn flush_policy(&self) -> FlushPolicy {
        match self.flush_policy.load(Ordering::Relaxed) {
            0 => FlushPolicy::Eager,
            1 => FlushPolicy::Deferred,
            _ => FlushPolicy::Batched,
        }
    }

    /// Registers a function run after every normal-context flush, never from NMI or crash context —
    /// typically `|| CONSOLES.emit_pending(&LOG)` (see [`crate::console`]).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// use core::sync::atomic::{AtomicBool, Ordering};
    /// use nmilog::{Level, Log};
    /// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// static RAN: AtomicBool = AtomicBool::new(false);
    /// LOG.set_console_hook(|| RAN.store(true, Ordering::Relaxed));
    /// LOG.log_fmt(Level::Info, 0, format_args!("hello")).unwrap();
    /// assert!(RAN.load(Ordering::Relaxed));
    /// ```
    pub fn set_console_hook(&self, hook: fn()) {
        // LMM(hook:A): pairs with LMM(hook:B) in `run_console_hook`: a flush that runs the hook
        // sees what the registering code set up before registering it (the consoles it prints to).
        self.console_hook.store(hook as *mut (), Ordering::Release);
    }

    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    fn run_console_hook(&self) {
        // LMM(hook:B): pairs with LMM(hook:A) in `set_console_hook`.
        let p = self.console_hook.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: the only non-null value ever stored is a `fn()` cast to a pointer
            // (`set_console_hook`); function and data pointers have the same size on every target
            // this crate supports.
            let f: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(p) };
            f();
        }
    }
}

/// Shows the configuration and the loss counters (summed over every ring), not the rings' contents.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// use nmilog::{Level, Log};
/// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.append(Level::Info, 0, 0, b"hi").unwrap();
/// let _ = LOG.append_raw(Level::Info, 0, 0, &[0; 4096]); // too large: dropped
/// let shown = format!("{LOG:?}");
/// assert!(shown.starts_with("Log { cpus: 1, ring_words: 256, main_words: 1024, depth: 5, "));
/// assert!(shown.contains("flush_policy: Eager"));
/// assert!(shown.contains("main_next_seq: 1"));
/// assert!(shown.contains("lost: CpuCounters { torn: 0, overwritten: 0, dropped: 1, in_flight: 0 }"));
/// assert!(shown.len() < 500); // no ring words
/// ```
impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > fmt::Debug for Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lost = CpuCounters::default();
        for cpu in 0..CPUS {
            for depth in 0..DEPTH {
                if let Some(c) = self.counters(cpu, depth) {
                    lost.torn = lost.torn.wrapping_add(c.torn);
                    lost.overwritten = lost.overwritten.wrapping_add(c.overwritten);
                    lost.dropped = lost.dropped.wrapping_add(c.dropped);
                }
            }
        }
        let ring_capacity = self.ring_words();
        f.debug_struct("Log")
            .field("cpus", &CPUS)
            .field("ring_words", &RING_WORDS)
            .field("main_words", &MAIN_WORDS)
            .field("depth", &DEPTH)
            .field("ring_capacity_words", &ring_capacity)
            .field("crashing_cpu", &self.crashing_cpu())
            .field("console_loglevel", &self.console_loglevel())
            .field("flush_policy", &self.flush_policy())
            .field("flush_settle_ns", &self.settle_ns.load(Ordering::Relaxed))
            .field(
                "console_hook",
                &!self.console_hook.load(Ordering::Relaxed).is_null(),
            )
            .field("main_next_seq", &self.main_ring().next_seq())
            .field("bad_cpu_dropped", &self.bad_cpu_dropped())
            .field("unregistered_dropped", &self.unregistered_dropped())
            .field("lost", &lost)
            .finish_non_exhaustive()
    }
}
