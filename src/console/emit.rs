//! The emitter: a fixed set of consoles ([`Consoles`]), each with its own ownership word and its
//! own cursor into the main log, and the [`Console`] trait a device implements.
//!
//! Contract: a record is marked printed on a console only after its `write_atomic` returned `true`,
//! inside the unsafe section that wrote it, so each record reaches each console whole and once —
//! except that a record cut by a handover or a panic takeover is printed again, whole, by the next
//! owner. The emitter never runs in NMI or crash context (except the panic flush on the crashing
//! CPU), never waits beyond its [`Wait`] bound, and prints at most one main log's worth of records
//! per call.

use core::fmt::{self, Write as _};

use super::context::WriteContext;
use super::state::{ConsoleState, Priority, Wait};
use crate::fmt::{LineBuf, LINE_MAX};
use crate::record::flags;
use crate::ring::{span_words, Read};
use crate::sync::{array_of, const_or_loom_fn, AtomicBool, AtomicUsize, Ordering, UnsafeCell};
use crate::{Log, MainReader, Origin, Platform, RecordBuf};

/// An output device fed by [`Consoles`].
///
/// ```
/// use nmilog::console::{Console, WriteContext};
/// struct Uart;
/// impl Console for Uart {
///     fn write_atomic(&self, ctx: &mut WriteContext<'_>, text: &[u8]) -> bool {
///         for chunk in text.chunks(16) {
///             if !ctx.enter_unsafe() { return false; }  // lost or handed over: stop
///             let _ = chunk;                            // write the FIFO here
///             if !ctx.exit_unsafe() { return false; }
///         }
///         true
///     }
/// }
/// ```
pub trait Console: Sync {
    /// Writes one formatted record (`[time] text\n`), with the console owned by `ctx`. Returns
    /// `true` if the whole text was written; `false` if the write stopped (ownership lost or
    /// handed over, device error) — the record is then printed again, whole, by the next owner.
    ///
    /// Called in normal context, or on the crashing CPU at [`Priority::Panic`] with the other CPUs
    /// stopped; never from NMI context. The emitter calls it inside an unsafe section; a driver
    /// may call [`WriteContext::exit_unsafe`]/[`WriteContext::enter_unsafe`] between its own
    /// atomic steps to let a waiting higher priority in earlier.
    ///
    /// A write that returns `false` leaves the record unprinted:
    ///
    /// ```
    /// use core::sync::atomic::{AtomicUsize, Ordering};
    /// use nmilog::console::{Console, Consoles, WriteContext};
    /// use nmilog::{host::HostPlatform, Level, Log};
    /// struct Flaky(AtomicUsize); // its first write hits a FIFO error
    /// impl Console for Flaky {
    ///     fn write_atomic(&self, ctx: &mut WriteContext<'_>, text: &[u8]) -> bool {
    ///         assert!(text.ends_with(b"] eth0: link up\n"));
    ///         self.0.fetch_add(1, Ordering::Relaxed) > 0 && !ctx.lost()
    ///     }
    /// }
    /// static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// static UART: Flaky = Flaky(AtomicUsize::new(0));
    /// static CONSOLES: Consoles<1> = Consoles::new([&UART]);
    /// HostPlatform::register_cpu(0);
    /// LOG.log_fmt(Level::Info, 0, format_args!("eth0: link up")).unwrap();
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0); // failed: not marked printed...
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 1); // ...so the next call prints it
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0); // and only once
    /// assert_eq!(UART.0.load(Ordering::Relaxed), 2);
    /// ```
    fn write_atomic(&self, ctx: &mut WriteContext<'_>, text: &[u8]) -> bool;
}

/// What one emitter call did, summed over its consoles.
///
/// ```
/// use nmilog::console::{Consoles, MemConsole};
/// use nmilog::{host::HostPlatform, Level, Log};
/// static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
/// static MEM: MemConsole<1024> = MemConsole::new();
/// static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
/// HostPlatform::register_cpu(0);
/// LOG.log_fmt(Level::Err, 0, format_args!("ata1: bus error")).unwrap();
/// LOG.log_fmt(Level::Debug, 0, format_args!("ata1: retry")).unwrap();
/// let r = CONSOLES.emit_pending(&LOG);
/// // Debug is not below the default console loglevel (7): filtered, not printed.
/// assert_eq!((r.printed, r.filtered, r.busy), (1, 1, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmitReport {
    /// Records written to a console.
    pub printed: u64,
    /// Records skipped (level filtered or raw).
    pub filtered: u64,
    /// Records a console's cursor missed because the main log wrapped.
    pub missed: u64,
    /// Consoles not written because another context owned them (or the wait timed out).
    pub busy: u64,
    /// Consoles taken over unsafely by this call (panic flush only).
    pub taken_over: u64,
}

struct Slot {
    state: ConsoleState,
    enabled: AtomicBool,
    /// The emitter's cursor into the main log; read and written only by the console's owner,
    /// inside an unsafe section.
    reader: UnsafeCell<MainReader>,
    /// Sequence number of the next main-log record to print (committed after each record, inside
    /// the same unsafe section). Used to rebuild the cursor after an unsafe takeover.
    next_seq: AtomicUsize,
    missed: AtomicUsize,
    /// The last record a panic flush printed (so that a second one does not repeat it).
    panic_last: PanicLast,
}

/// Where a record stands in the crash drain's order: (timestamp, CPU, depth, source sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PanicKey(u64, u16, u8, u64);

impl PanicKey {
    fn of(rec: &RecordBuf) -> Self {
        let h = &rec.header;
        PanicKey(h.ts_ns, h.cpu, h.context().1 as u8, h.src_seq)
    }
}

/// A [`PanicKey`] in pointer-sized atomic words (written only by the crashing CPU, as the console's
/// owner); `valid` 0 means none yet.
struct PanicLast {
    valid: AtomicUsize,
    ts: [AtomicUsize; 2],
    src: AtomicUsize,
    seq: [AtomicUsize; 2],
}

impl PanicLast {
    const_or_loom_fn! {
        fn new() -> Self {
            PanicLast {
                valid: AtomicUsize::new(0),
                ts: array_of!(AtomicUsize::new(0); 2),
                src: AtomicUsize::new(0),
                seq: array_of!(AtomicUsize::new(0); 2),
            }
        }
    }
    fn get(&self) -> Option<PanicKey> {
        if self.valid.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let wide = |w: &[AtomicUsize; 2]| {
            (w[0].load(Ordering::Relaxed) as u64) | ((w[1].load(Ordering::Relaxed) as u64) << 32)
        };
        let src = self.src.load(Ordering::Relaxed);
        Some(PanicKey(
            wide(&self.ts),
            (src >> 8) as u16,
            src as u8,
            wide(&self.seq),
        ))
    }
    fn set(&self, k: PanicKey) {
        let split = |w: &[AtomicUsize; 2], v: u64| {
            w[0].store(v as u32 as usize, Ordering::Relaxed);
            w[1].store((v >> 32) as usize, Ordering::Relaxed);
        };
        split(&self.ts, k.0);
        self.src
            .store(((k.1 as usize) << 8) | k.2 as usize, Ordering::Relaxed);
        split(&self.seq, k.3);
        self.valid.store(1, Ordering::Relaxed);
    }
}

impl Slot {
    const_or_loom_fn! {
        fn new() -> Self {
            Slot {
                state: ConsoleState::new(),
                enabled: AtomicBool::new(true),
                reader: UnsafeCell::new(MainReader::new()),
                next_seq: AtomicUsize::new(0),
                missed: AtomicUsize::new(0),
                panic_last: PanicLast::new(),
            }
        }
    }
}

/// A fixed set of consoles fed from one main log, each with its own cursor and ownership word.
///
/// ```
/// use nmilog::console::{Consoles, MemConsole};
/// static A: MemConsole<256> = MemConsole::new();
/// static B: MemConsole<256> = MemConsole::new();
/// static CONSOLES: Consoles<2> = Consoles::new([&A, &B]);
/// CONSOLES.set_enabled(1, false);
/// assert!(!CONSOLES.is_enabled(1));
/// ```
pub struct Consoles<const N: usize> {
    consoles: [&'static dyn Console; N],
    slots: [Slot; N],
}

// SAFETY: the only non-`Sync` field is each slot's `reader` cell, which is accessed only by the
// context that owns that slot's console (`ConsoleState`), inside an unsafe section: a CAS-verified
// ownership word makes that access exclusive (a direct takeover never happens during an unsafe
// section; a panic takeover requires the owner to be stopped for good, and the panic flush never
// reads the cell: it prints from the crash drain and skips by `next_seq`).
unsafe impl<const N: usize> Sync for Consoles<N> {}

/// Shows each console's slot: enabled, its ownership word, the next record to print and the
/// records it missed (not the cursor, which only the owner may read).
///
/// ```
/// use nmilog::console::{Consoles, MemConsole};
/// static A: MemConsole<64> = MemConsole::new();
/// static CONSOLES: Consoles<1> = Consoles::new([&A]);
/// let s = format!("{CONSOLES:?}");
/// assert!(s.starts_with("Consoles { slots: [Slot { enabled: true, state: ConsoleState {"));
/// assert!(s.ends_with("next_seq: 0, missed: 0 }] }"));
/// ```
impl<const N: usize> fmt::Debug for Consoles<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consoles")
            .field("slots", &self.slots)
            .finish()
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("enabled", &self.enabled.load(Ordering::Relaxed))
            .field("state", &self.state)
            .field("next_seq", &self.next_seq.load(Ordering::Relaxed))
            .field("missed", &self.missed.load(Ordering::Relaxed))
            .finish()
    }
}

impl<const N: usize> Consoles<N> {
    const_or_loom_fn! {
        /// The consoles, all enabled, each starting at the beginning of the main log.
        ///
        /// ```
        /// use nmilog::console::{Consoles, MemConsole};
        /// static UART: MemConsole<256> = MemConsole::new();
        /// static CONSOLES: Consoles<1> = Consoles::new([&UART]);
        /// assert!(CONSOLES.is_enabled(0));
        /// assert!(CONSOLES.state(1).is_none()); // there is only console 0
        /// ```
        pub fn new(consoles: [&'static dyn Console; N]) -> Self {
            Consoles {
                consoles,
                slots: array_of!(Slot::new(); N),
            }
        }
    }

    /// Enables or disables console `i` (a disabled console keeps its cursor and is skipped).
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole};
    /// # use nmilog::{host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// static MEM: MemConsole<1024> = MemConsole::new();
    /// static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// CONSOLES.set_enabled(0, false); // e.g. while the UART is reprogrammed
    /// LOG.log_fmt(Level::Info, 0, format_args!("ttyS0: baud 115200")).unwrap();
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0);
    /// CONSOLES.set_enabled(0, true); // the cursor kept its place: nothing is lost
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 1);
    /// ```
    pub fn set_enabled(&self, i: usize, on: bool) {
        if let Some(s) = self.slots.get(i) {
            s.enabled.store(on, Ordering::Relaxed);
        }
    }

    /// Whether console `i` is enabled.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole};
    /// # static MEM: MemConsole<64> = MemConsole::new();
    /// static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// assert!(CONSOLES.is_enabled(0));
    /// assert!(!CONSOLES.is_enabled(5)); // out of range: no such console
    /// ```
    pub fn is_enabled(&self, i: usize) -> bool {
        self.slots
            .get(i)
            .is_some_and(|s| s.enabled.load(Ordering::Relaxed))
    }

    /// The ownership word of console `i`.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole, Priority};
    /// # static A: MemConsole<64> = MemConsole::new();
    /// # static C: Consoles<1> = Consoles::new([&A]);
    /// assert_eq!(C.state(0).unwrap().view().prio, Priority::None);
    /// ```
    pub fn state(&self, i: usize) -> Option<&ConsoleState> {
        self.slots.get(i).map(|s| &s.state)
    }

    /// Records console `i`'s cursor missed because the main log wrapped before it printed them.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole};
    /// # use nmilog::{host::HostPlatform, Level, Log};
    /// // A main log of only 64 words: a few dozen records wrap it before the console prints.
    /// static LOG: Log<HostPlatform, 1, 1024, 64> = Log::new(HostPlatform::new(1));
    /// static MEM: MemConsole<4096> = MemConsole::new();
    /// static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// for i in 0..40 {
    ///     LOG.log_fmt(Level::Info, 0, format_args!("line {}", i)).unwrap();
    /// }
    /// let r = CONSOLES.emit_pending(&LOG);
    /// assert!(r.missed > 0 && CONSOLES.missed(0) == r.missed);
    /// ```
    pub fn missed(&self, i: usize) -> u64 {
        self.slots
            .get(i)
            .map_or(0, |s| s.missed.load(Ordering::Relaxed) as u64)
    }

    /// Prints pending records at [`Priority::Normal`], without waiting for any console. Does
    /// nothing (records stay in the log) from NMI or crash context, during a crash, or on a bad
    /// CPU id.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, EmitReport, MemConsole};
    /// # use nmilog::{host::HostPlatform, ContextKind, Level, Log};
    /// # static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// # static MEM: MemConsole<1024> = MemConsole::new();
    /// # static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// LOG.log_fmt(Level::Info, 0, format_args!("eth0: link up")).unwrap();
    /// {
    ///     let _nmi = LOG.enter(ContextKind::Nmi); // never prints from NMI context
    ///     assert_eq!(CONSOLES.emit_pending(&LOG), EmitReport::default());
    /// }
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 1);
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0); // each record once
    /// ```
    pub fn emit_pending<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    >(
        &self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    ) -> EmitReport {
        self.emit_normal(log, Priority::Normal, &Wait::none())
    }

    /// Prints pending records at [`Priority::Emergency`], waiting up to `wait` for a
    /// normal-priority owner to hand over. Same context rules as
    /// [`emit_pending`](Self::emit_pending).
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole, Wait};
    /// # use nmilog::{host::HostPlatform, Log, Platform};
    /// # static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// # static MEM: MemConsole<1024> = MemConsole::new();
    /// # static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// LOG.log_fmt(nmilog::Level::Warning, 0, format_args!("WARNING: at foo.rs:1")).unwrap();
    /// let now = || LOG.platform().now_ns();
    /// let deadline = LOG.platform().now_ns() + 1_000_000;
    /// let r = CONSOLES.emit_emergency(&LOG, &Wait::spins(100_000).with_deadline(&now, deadline));
    /// assert_eq!(r.printed, 1);
    /// ```
    pub fn emit_emergency<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    >(
        &self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        wait: &Wait<'_>,
    ) -> EmitReport {
        self.emit_normal(log, Priority::Emergency, wait)
    }

    /// The enabled consoles, each with its slot.
    fn enabled(&self) -> impl Iterator<Item = (&Slot, &'static dyn Console)> {
        self.slots
            .iter()
            .zip(self.consoles)
            .filter(|(slot, _)| slot.enabled.load(Ordering::Relaxed))
    }

    fn emit_normal<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    >(
        &self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        prio: Priority,
        wait: &Wait<'_>,
    ) -> EmitReport {
        let mut rep = EmitReport::default();
        if log.crashing_cpu().is_some() {
            return rep;
        }
        let cpu = log.platform().cpu_id();
        if cpu >= log.platform().cpu_count() {
            return rep;
        }
        let Some(pc) = log.cpu(cpu) else {
            return rep;
        };
        if pc.nmi_safe_only() {
            return rep;
        }
        for (slot, console) in self.enabled() {
            match slot.state.try_acquire(cpu, prio, wait) {
                Ok(mut ctx) => SlotPrinter::new(slot, console, log, &mut ctx, &mut rep).emit(),
                Err(_) => rep.busy += 1,
            }
        }
        rep
    }

    /// The panic flush: on the crashing CPU, prints at [`Priority::Panic`] what each console has not
    /// printed yet, from the crash drain ([`Log::drain_on_crash`](crate::Log::drain_on_crash)):
    /// main-log records past the console's cursor and every record still in a per-CPU ring, in
    /// timestamp order, each once; then the drain's accounting. A console whose owner does not hand
    /// over within `wait` is taken over unsafely (and stays marked so) — but only if that owner is
    /// known to be stopped (`stopped(owner)`; the crashing CPU always is); a console owned by a CPU
    /// that did not stop is left alone (counted in [`EmitReport::busy`]). A second panic flush
    /// prints only what came after the first. Returns an empty report if the calling CPU is not the
    /// crashing CPU.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole, Wait};
    /// # use nmilog::{host::HostPlatform, Log};
    /// # static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// # static MEM: MemConsole<1024> = MemConsole::new();
    /// # static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// LOG.crash_enter().unwrap();
    /// LOG.log_fmt(nmilog::Level::Emerg, 0, format_args!("Kernel panic")).unwrap();
    /// // SAFETY (doc example): there is only one CPU.
    /// let rep = unsafe { CONSOLES.panic_flush(&LOG, &|_| true, &Wait::spins(1000)) };
    /// assert_eq!(rep.printed, 1);
    /// assert!(MEM.contents().contains("Kernel panic"));
    /// ```
    ///
    /// # Safety
    ///
    /// `stopped(cpu)` may say `true` only of a CPU that is stopped for good: a console it owns may be
    /// taken over in the middle of an unsafe section, which its owner must never resume (see
    /// [`ConsoleState::panic_takeover`]).
    pub unsafe fn panic_flush<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    >(
        &self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        stopped: &dyn Fn(usize) -> bool,
        wait: &Wait<'_>,
    ) -> EmitReport {
        let mut rep = EmitReport::default();
        let cpu = log.platform().cpu_id();
        if log.crashing_cpu() != Some(cpu) {
            return rep;
        }
        for (slot, console) in self.enabled() {
            let mut ctx = match slot.state.try_acquire(cpu, Priority::Panic, wait) {
                Ok(ctx) => ctx,
                Err(_) => {
                    let owner = slot.state.view().cpu;
                    if owner != cpu && !stopped(owner) {
                        // Its owner may still be writing: leave it alone.
                        rep.busy += 1;
                        continue;
                    }
                    rep.taken_over += 1;
                    // SAFETY: the owner is stopped for good (the caller's guarantee about
                    // `stopped`), or it is this CPU, which never returns into the interrupted write.
                    unsafe { slot.state.panic_takeover(cpu) }
                }
            };
            SlotPrinter::new(slot, console, log, &mut ctx, &mut rep).panic_emit(stopped);
        }
        rep
    }
}

/// One console's printing while `ctx` owns it: the normal path ([`SlotPrinter::emit`]) and the
/// panic flush ([`SlotPrinter::panic_emit`]) over the same slot, device, log and report.
struct SlotPrinter<
    'a,
    'c,
    P: Platform,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
> {
    slot: &'a Slot,
    console: &'a dyn Console,
    log: &'a Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    ctx: &'a mut WriteContext<'c>,
    rep: &'a mut EmitReport,
    loglevel: u8,
}

impl<
        'a,
        'c,
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > SlotPrinter<'a, 'c, P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    fn new(
        slot: &'a Slot,
        console: &'a dyn Console,
        log: &'a Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        ctx: &'a mut WriteContext<'c>,
        rep: &'a mut EmitReport,
    ) -> Self {
        let loglevel = log.console_loglevel();
        SlotPrinter {
            slot,
            console,
            log,
            ctx,
            rep,
            loglevel,
        }
    }

    /// The panic flush of the console: the crash drain's records it has not printed (see
    /// [`Consoles::panic_flush`]).
    fn panic_emit(self, stopped: &dyn Fn(usize) -> bool) {
        let SlotPrinter {
            slot,
            console,
            log,
            ctx,
            rep,
            loglevel,
        } = self;
        // Main-log records below this were printed by the normal path. LMM(emit:B), as in `emit`.
        let committed = slot.next_seq.load(Ordering::Acquire);
        // The last record a previous panic flush printed: the drain's order is (timestamp, CPU,
        // depth), then the source's sequence number, so everything up to it was printed.
        let last = slot.panic_last.get();
        let _ = log.drain_on_crash(stopped, &mut |origin: Origin, rec: &RecordBuf| {
            let key = PanicKey::of(rec);
            if let Origin::Main { seq } = origin {
                if (seq as usize).wrapping_sub(committed) > usize::MAX / 2 {
                    return true; // printed before the crash
                }
            }
            if last.is_some_and(|l| key <= l) {
                return true; // printed by an earlier panic flush
            }
            if !ctx.enter_unsafe() {
                return false;
            }
            let ok = print_record(console, ctx, rec, loglevel, rep);
            if ok && !ctx.lost() {
                slot.panic_last.set(key);
            } else {
                return false;
            }
            ctx.exit_unsafe()
        });
    }

    /// Prints records from the slot's cursor (bounded by the main log's record capacity).
    fn emit(mut self) {
        let log = self.log;
        let slot = self.slot;
        let bound = log.main().capacity_words() / span_words(0) + 2;
        let mut rec = RecordBuf::new();
        // LMM(emit:B): pairs with LMM(emit:A), the previous owner's store below: an owner that reads a
        // committed `next_seq` sees the cursor cell and device writes that preceded it. Redundant with
        // the ownership hand-off (LMM(console:A)/LMM(console:B)) and, after a panic takeover, with the
        // stop handshake (LMM(checkin:A/B)), and only ever decides what to skip: a second line.
        let committed = slot.next_seq.load(Ordering::Acquire);
        // The cursor cell is read inside the first unsafe section (only the owner may read it).
        let mut reader = MainReader::new();
        let mut have_reader = false;
        for _ in 0..bound {
            if !self.ctx.enter_unsafe() {
                return;
            }
            if !have_reader {
                // SAFETY: inside an unsafe section of the owner (see `Sync for Consoles`).
                reader = slot.reader.with(|r| unsafe { *r });
                have_reader = true;
            }
            let mut next = reader;
            let r = next.read(log, &mut rec);
            let mut done = false;
            let mut ok = true;
            match r {
                Read::Record => {
                    // Unless already printed (the second line of LMM(emit:B)).
                    if (rec.seq as usize).wrapping_sub(committed) <= usize::MAX / 2 {
                        ok = self.print_joined(&mut next, &mut rec);
                    }
                }
                Read::Overwritten { missed } => {
                    self.rep.missed += missed;
                    slot.missed.store(
                        slot.missed.load(Ordering::Relaxed) + missed as usize,
                        Ordering::Relaxed,
                    );
                }
                Read::Empty | Read::InFlight => done = true,
            }
            if ok && !self.ctx.lost() {
                reader = next;
                // SAFETY: still the owner, inside the unsafe section (checked just above; a direct
                // takeover cannot happen during it).
                slot.reader.with_mut(|r| unsafe { *r = reader });
                // LMM(emit:A): pairs with LMM(emit:B) in the next owner's `emit` or panic flush.
                slot.next_seq
                    .store(reader.next_seq() as usize, Ordering::Release);
            } else {
                done = true;
            }
            if !self.ctx.exit_unsafe() || done {
                return;
            }
        }
    }

    /// Prints `rec` as [`print_record`] does, with the `pr_cont!` pieces that follow it in the main log
    /// joined onto its line: records flagged [`flags::CONT`] from the same caller (and context), already
    /// in the log, up to the line's length. `next` (the reader just after `rec`) moves past the pieces
    /// joined. A piece not yet logged when the line is printed starts a line of its own later, as
    /// readers show it. A line ended by a newline ([`flags::NEWLINE`]) takes no piece.
    ///
    /// Look-ahead reads reuse `rec` (the line holds the text), so the stack holds one record buffer.
    fn print_joined(&mut self, next: &mut MainReader, rec: &mut RecordBuf) -> bool {
        let first = rec.header;
        if filtered(rec, self.loglevel, self.rep) {
            return true;
        }
        let mut line = start_line(rec);
        let mut open = first.leaves_line_open();
        for _ in 0..MAX_JOINED {
            if !open || line.truncated() {
                break;
            }
            // A look at the next record's header; its payload is copied only if it joins this line.
            let mut probe = *next;
            let (r, _, taken) = probe.read_if(self.log, rec, |h| h.continues(&first));
            if r != Read::Record || !taken {
                break;
            }
            let _ = line.write_str(rec.text().unwrap_or(NOT_UTF8));
            open = rec.header.leaves_line_open();
            *next = probe;
        }
        end_line(self.console, self.ctx, line, self.rep)
    }
}

/// Pieces a line joins at most (`pr_cont!` records after the first): a bound on the look-ahead.
const MAX_JOINED: usize = 64;

/// What a console shows for a record whose text is not UTF-8.
const NOT_UTF8: &str = "<non-UTF-8 record>";

/// A console line: the record's time stamp and text.
type Line = LineBuf<{ LINE_MAX + 32 }>;

/// Whether `rec` is left off the consoles (raw, or not below `loglevel`); counts it if so.
fn filtered(rec: &RecordBuf, loglevel: u8, rep: &mut EmitReport) -> bool {
    let h = &rec.header;
    let off = h.flags & flags::RAW != 0 || h.level >= loglevel;
    rep.filtered += u64::from(off);
    off
}

/// `[seconds.micros] text` of `rec`.
fn start_line(rec: &RecordBuf) -> Line {
    let h = &rec.header;
    let mut line = Line::new();
    let _ = write!(
        line,
        "[{:>5}.{:06}] ",
        h.ts_ns / 1_000_000_000,
        (h.ts_ns % 1_000_000_000) / 1000
    );
    let _ = line.write_str(rec.text().unwrap_or(NOT_UTF8));
    line
}

/// Ends `line` with its newline and writes it in one `write_atomic` call; counts it printed.
fn end_line(
    console: &dyn Console,
    ctx: &mut WriteContext<'_>,
    mut line: Line,
    rep: &mut EmitReport,
) -> bool {
    let _ = line.write_str("\n");
    let ok = console.write_atomic(ctx, line.finish());
    rep.printed += u64::from(ok);
    ok
}

/// Prints `rec` on `console` as one line, `[seconds.micros] text\n`, in one `write_atomic` call
/// (inside the owner's unsafe section), and counts it printed; or, for a raw record or one not below
/// `loglevel`, only counts it filtered. Returns `false` if the console did not take the line.
fn print_record(
    console: &dyn Console,
    ctx: &mut WriteContext<'_>,
    rec: &RecordBuf,
    loglevel: u8,
    rep: &mut EmitReport,
) -> bool {
    filtered(rec, loglevel, rep) || end_line(console, ctx, start_line(rec), rep)
}
