//! An NMI-safe [defmt](https://defmt.ferrous-systems.com) global logger (feature `defmt`).
//!
//! defmt's `Logger` contract lets the implementation define what an "execution context" is. Here it
//! is a **(CPU, context nesting depth)** pair — the same key the core uses to pick a ring. Each pair
//! has its own encoder and its own fixed frame buffer ([`DefmtSlots`]), so a defmt call from an NMI
//! that interrupted a task-context defmt frame gets its own encoder, its own buffer and, on
//! release, its own ring: neither frame is corrupted. (defmt-rtt takes a critical section in
//! `acquire` and panics with "defmt logger taken reentrantly"; masking interrupts does not mask an
//! NMI.)
//!
//! # Plugging in your `Log`
//!
//! `#[defmt::global_logger]` needs a concrete unit struct, so the crate gives you a macro that
//! writes it for your `static` logger (your crate must depend on `defmt`, as every defmt user does):
//!
//! ```ignore
//! static LOG: nmilog::Log<MyPlatform, 4, 1024, 16384> = nmilog::Log::new(MyPlatform);
//! nmilog::defmt_global_logger!(LOG);        // frames of up to 256 encoded bytes
//! // or: nmilog::defmt_global_logger!(LOG, 512);
//!
//! defmt::info!("booted in {=u32} ms", 42);  // anywhere, including NMI handlers
//! ```
//!
//! (This snippet is not run as a doctest: `defmt::info!` interns its format string in the `.defmt`
//! section, which only defmt's linker script provides. `examples/defmt_logger.rs` runs it on the
//! host; the [`crate::defmt_global_logger!`] example defines the logger without logging through it.)
//!
//! Driven by hand (what the generated `Logger` does), a frame from an NMI that lands inside an
//! open task-context frame goes to its own slot and its own record:
//!
//! ```
//! use nmilog::{defmt_logger::DefmtSlots, host::HostPlatform, ring::Read, ContextKind, Log};
//! static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
//! static SLOTS: DefmtSlots<1, 5> = DefmtSlots::new();
//! HostPlatform::register_cpu(0);
//! SLOTS.acquire(&LOG); // a task-context frame is open...
//! {
//!     let _nmi = LOG.enter(ContextKind::Nmi); // ...when an NMI logs
//!     SLOTS.acquire(&LOG);
//!     SLOTS.release(&LOG);
//!     assert!(SLOTS.frame_open(0, 0)); // the task frame is untouched
//! }
//! SLOTS.release(&LOG);
//! LOG.flush();
//! let (mut r, mut rec) = (LOG.main_reader(), nmilog::RecordBuf::new());
//! let n = (0..3).filter(|_| r.read(&LOG, &mut rec) == Read::Record).count();
//! assert_eq!(n, 2); // two whole frames, nothing dropped
//! ```
//!
//! # What ends up in the log
//!
//! * `acquire` picks the slot of the current (CPU, depth), starts a fresh `defmt::Encoder` and
//!   begins the frame; `write` encodes into the slot's buffer; `release` ends the frame and appends
//!   the whole encoded frame as **one raw record**: facility [`facility::DEFMT`], flag
//!   [`flags::RAW`], level [`Level::Info`] (the defmt level is inside the frame and only the decoder
//!   knows it). The append is [`Log::append`]: in normal context it may flush, following the
//!   log's flush policy, as any log call does; in NMI context it only appends to the ring.
//!   Nothing is written anywhere before `release`.
//! * The encoding is defmt's own `Encoder`: **rzCOBS** by default, raw if the final binary enables
//!   defmt's `encoding-raw` feature. With rzCOBS each record's payload is `0x00`, the encoded
//!   frame, `0x00` (a fresh encoder emits a leading separator; the decoder skips empty frames), so
//!   any subset of records concatenated in any order is a valid defmt stream. With `encoding-raw`
//!   frames carry no framing: a lost record desynchronises the decoder, so use rzCOBS with nmilog.
//! * Refusals are counted, never silent: a frame larger than the slot buffer or the ring is dropped
//!   ([`DefmtSlots::dropped`], or the ring's dropped counter); a defmt call inside a defmt call in
//!   the *same* context (a `Format` impl that logs) is discarded and counted instead of panicking;
//!   frames from a bad CPU id or a nesting too deep are counted by the core (`bad_cpu_dropped`,
//!   overflow) exactly as text records are.
//! * `flush` does not wait (a never-blocking logger cannot): records reach the main log through
//!   the core's flush, the crash drain and the handover image.
//!
//! # Decoding
//!
//! Select the records with `facility == facility::DEFMT` (the `RAW` flag is set) from the main log,
//! a crash dump or the handover image, in main-log order, and concatenate their payloads into a
//! file. Then decode with the firmware ELF (the one that contains the `.defmt` section with the
//! interned strings):
//!
//! ```text
//! defmt-print -e target/thumbv7em-none-eabi/release/firmware < defmt-frames.bin
//! ```
//!
//! Record timestamps, CPU and context come from the nmilog header; defmt's own timestamp (if the
//! program defines `defmt::timestamp!`) is inside the frame.
//!
//! # Context rules
//!
//! Like the rest of the crate, the slot is found with the platform's CPU id and the core's context
//! depth ([`Log::context`](crate::Log::context)), so interrupt and NMI entry must be tracked with
//! [`Log::irq_enter`](crate::Log::irq_enter)/[`Log::nmi_enter`](crate::Log::nmi_enter) (an
//! untracked interrupt that logs while a task frame is open finds that slot busy: its frame is
//! dropped and counted, never mixed in). A task-context frame must not migrate to another CPU
//! between `acquire` and `release` (defmt frames are short; call with preemption disabled, as
//! defmt-rtt's critical section does — a host thread registered as a CPU never migrates).

use core::cell::UnsafeCell;

use crate::sync::{array_of, const_or_loom_fn, signal_fence, AtomicUsize, Ordering};

use crate::record::{facility, flags};
use crate::{Level, Log, Platform};

/// The default per-context frame buffer: 256 encoded bytes.
///
/// ```
/// # use nmilog::defmt_logger::DefmtSlots;
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::Log;
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// use nmilog::defmt_logger::DEFAULT_FRAME_BYTES;
/// static SLOTS: DefmtSlots<1, 5> = DefmtSlots::new(); // BUF = DEFAULT_FRAME_BYTES
/// SLOTS.acquire(&LOG);
/// SLOTS.write(&LOG, &[7; DEFAULT_FRAME_BYTES]); // rzCOBS adds overhead: too big
/// SLOTS.release(&LOG);
/// assert_eq!(SLOTS.dropped(0, 0), 1); // counted, not appended
/// ```
pub const DEFAULT_FRAME_BYTES: usize = 256;

struct Frame<const BUF: usize> {
    encoder: defmt::Encoder,
    buf: [u8; BUF],
    len: usize,
    overflow: bool,
}

impl<const BUF: usize> Frame<BUF> {
    /// Runs one encoder step (`start_frame`, `write` or `end_frame`) with the frame's buffer as its
    /// output: bytes that do not fit are dropped and mark the frame overflowed.
    fn encode(&mut self, step: impl FnOnce(&mut defmt::Encoder, &mut dyn FnMut(&[u8]))) {
        let Frame {
            encoder,
            buf,
            len,
            overflow,
        } = self;
        step(encoder, &mut |b| push(buf, len, overflow, b));
    }
}

struct Slot<const BUF: usize> {
    /// 0: idle; 1: a frame is open; n > 1: n - 1 reentrant acquires (discarded) inside it.
    nest: AtomicUsize,
    dropped: AtomicUsize,
    frame: UnsafeCell<Frame<BUF>>,
}

impl<const BUF: usize> Slot<BUF> {
    const_or_loom_fn! {
        fn new() -> Self {
            Slot {
                nest: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
                frame: UnsafeCell::new(Frame {
                    encoder: defmt::Encoder::new(),
                    buf: [0; BUF],
                    len: 0,
                    overflow: false,
                }),
            }
        }
    }

    fn count_drop(&self) {
        // Only this slot's context writes the counter: load + store, no RMW (NMI-safe).
        let v = self.dropped.load(Ordering::Relaxed);
        self.dropped.store(v.wrapping_add(1), Ordering::Relaxed);
    }
}

/// Per-(CPU, depth) defmt encoders and frame buffers: the state behind
/// [`defmt_global_logger!`](crate::defmt_global_logger), usable directly by a test harness or a
/// custom `Logger`.
///
/// `CPUS` and `DEPTH` must match the [`Log`]'s (the macro takes them from the `static`);
/// `BUF` is the largest encoded frame in bytes.
///
/// ```
/// use nmilog::defmt_logger::DefmtSlots;
/// use nmilog::record::facility;
/// # use nmilog::doc_support::OneCpu;
/// use nmilog::{Log, RecordBuf};
/// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// static SLOTS: DefmtSlots<1, 5> = DefmtSlots::new();
///
/// // What defmt's macros do for one log call:
/// SLOTS.acquire(&LOG);
/// SLOTS.write(&LOG, &[1, 0, 42]);   // (a string index and an argument)
/// SLOTS.release(&LOG);
///
/// let mut rec = RecordBuf::new();
/// LOG.main_reader().read(&LOG, &mut rec);
/// assert_eq!(rec.header.facility, facility::DEFMT);
/// assert_eq!(rec.payload().first(), Some(&0)); // rzCOBS: separator, frame, separator
/// assert_eq!(rec.payload().last(), Some(&0));
/// ```
pub struct DefmtSlots<const CPUS: usize, const DEPTH: usize, const BUF: usize = DEFAULT_FRAME_BYTES>
{
    slots: [[Slot<BUF>; DEPTH]; CPUS],
}

// SAFETY: each slot's `frame` cell is only accessed by the execution context that owns the slot:
// the code running on CPU `c` at nesting depth `d` (the Platform contract makes `cpu_id()` unique
// among running contexts; interrupts nest LIFO, so a nested context uses a different depth and
// finishes before depth `d` resumes). The `nest` word is set before the cell is touched and
// cleared after, with signal fences, so a reentrant call in the same context (a `Format` impl that
// logs) sees the slot busy and never touches the cell.
unsafe impl<const CPUS: usize, const DEPTH: usize, const BUF: usize> Sync
    for DefmtSlots<CPUS, DEPTH, BUF>
{
}

/// Shows the shape, the slots with a frame open and the frames dropped in all (not the buffers).
///
/// ```
/// use nmilog::defmt_logger::DefmtSlots;
/// let s: DefmtSlots<2, 5, 64> = DefmtSlots::new();
/// assert_eq!(
///     format!("{s:?}"),
///     "DefmtSlots { cpus: 2, depth: 5, frame_bytes: 64, open: [], dropped: 0 }"
/// );
/// ```
impl<const CPUS: usize, const DEPTH: usize, const BUF: usize> core::fmt::Debug
    for DefmtSlots<CPUS, DEPTH, BUF>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        struct Open<'a, const CPUS: usize, const DEPTH: usize, const BUF: usize>(
            &'a DefmtSlots<CPUS, DEPTH, BUF>,
        );
        impl<const CPUS: usize, const DEPTH: usize, const BUF: usize> core::fmt::Debug
            for Open<'_, CPUS, DEPTH, BUF>
        {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                let open = (0..CPUS)
                    .flat_map(|c| (0..DEPTH).map(move |d| (c, d)))
                    .filter(|&(c, d)| self.0.frame_open(c, d));
                f.debug_list().entries(open).finish()
            }
        }
        let dropped = (0..CPUS)
            .flat_map(|c| (0..DEPTH).map(move |d| (c, d)))
            .fold(0u64, |n, (c, d)| n.saturating_add(self.dropped(c, d)));
        f.debug_struct("DefmtSlots")
            .field("cpus", &CPUS)
            .field("depth", &DEPTH)
            .field("frame_bytes", &BUF)
            .field("open", &Open(self))
            .field("dropped", &dropped)
            .finish()
    }
}

impl<const CPUS: usize, const DEPTH: usize, const BUF: usize> Default
    for DefmtSlots<CPUS, DEPTH, BUF>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize, const DEPTH: usize, const BUF: usize> DefmtSlots<CPUS, DEPTH, BUF> {
    const_or_loom_fn! {
        /// Idle slots. `const`, so it can be a `static`.
        ///
        /// ```
        /// use nmilog::defmt_logger::DefmtSlots;
        /// static SLOTS: DefmtSlots<4, 4, 512> = DefmtSlots::new(); // 512-byte frames
        /// assert!(!SLOTS.frame_open(3, 3));
        /// assert_eq!(SLOTS.dropped(3, 3), 0);
        /// ```
        pub fn new() -> Self {
            DefmtSlots {
                slots: array_of!(array_of!(Slot::new(); DEPTH); CPUS),
            }
        }
    }

    fn slot<P: Platform, const RING_WORDS: usize, const MAIN_WORDS: usize>(
        &self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    ) -> Option<&Slot<BUF>> {
        let (cpu, (_, depth)) = log.cpu_and_context()?;
        self.slots.get(cpu)?.get(depth)
    }

    /// `Logger::acquire`: opens a frame in the current context's slot. A second acquire in the
    /// same context (without a release) opens a discarded nested frame instead of panicking.
    ///
    /// ```
    /// # use nmilog::defmt_logger::DefmtSlots;
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::Log;
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// static SLOTS: DefmtSlots<1, 5> = DefmtSlots::new();
    /// SLOTS.acquire(&LOG);
    /// assert!(SLOTS.frame_open(0, 0)); // CPU 0, task context (depth 0)
    /// SLOTS.acquire(&LOG); // a `Format` impl that logs: same context
    /// SLOTS.release(&LOG); // the nested frame is discarded and counted...
    /// SLOTS.release(&LOG); // ...the outer one is appended
    /// assert_eq!(SLOTS.dropped(0, 0), 1);
    /// assert!(!SLOTS.frame_open(0, 0));
    /// ```
    pub fn acquire<P: Platform, const RING_WORDS: usize, const MAIN_WORDS: usize>(
        &self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    ) {
        let Some(slot) = self.slot(log) else { return };
        // LMM(defmt:C): pairs with LMM(defmt:A)/LMM(defmt:B): a call in this slot's context that
        // interrupted (an untracked interrupt: same CPU, same depth) or re-entered (a `Format` impl
        // that logs) an open frame sees `nest` set and never touches the frame cell. Relaxed: same
        // CPU, program order.
        let n = slot.nest.load(Ordering::Relaxed);
        slot.nest.store(n + 1, Ordering::Relaxed);
        // LMM(defmt:A): signal fence, pairs with LMM(defmt:C): the slot is marked busy before the
        // frame cell is touched.
        signal_fence();
        if n != 0 {
            return;
        }
        // SAFETY: this context owns the slot (see the `Sync` impl) and `nest` was 0: nobody else
        // is inside the cell.
        let f = unsafe { &mut *slot.frame.get() };
        f.encoder = defmt::Encoder::new();
        f.len = 0;
        f.overflow = false;
        f.encode(|e, out| e.start_frame(out));
    }

    /// `Logger::write`: encodes `bytes` into the open frame (ignored inside a discarded nested
    /// frame, or without an open frame).
    ///
    /// ```
    /// # use nmilog::defmt_logger::DefmtSlots;
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::Log;
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// # use nmilog::RecordBuf;
    /// static SLOTS: DefmtSlots<1, 5> = DefmtSlots::new();
    /// SLOTS.write(&LOG, &[1, 2]); // no open frame: ignored
    /// SLOTS.acquire(&LOG);
    /// SLOTS.write(&LOG, &[1, 0, 42]);
    /// SLOTS.release(&LOG);
    /// let mut rec = RecordBuf::new();
    /// LOG.main_reader().read(&LOG, &mut rec);
    /// assert!(rec.payload().contains(&42)); // only the framed write made it
    /// ```
    pub fn write<P: Platform, const RING_WORDS: usize, const MAIN_WORDS: usize>(
        &self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        bytes: &[u8],
    ) {
        let Some(slot) = self.slot(log) else { return };
        if slot.nest.load(Ordering::Relaxed) != 1 {
            return;
        }
        // SAFETY: as in `acquire`: this context's open frame.
        let f = unsafe { &mut *slot.frame.get() };
        f.encode(|e, out| e.write(bytes, out));
    }

    /// `Logger::release`: ends the frame and appends it as one raw record (see the module docs).
    ///
    /// ```
    /// # use nmilog::defmt_logger::DefmtSlots;
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::Log;
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// # use nmilog::{ring::Read, RecordBuf};
    /// use nmilog::record::{facility, flags};
    /// static SLOTS: DefmtSlots<1, 5> = DefmtSlots::new();
    /// SLOTS.acquire(&LOG);
    /// SLOTS.write(&LOG, &[3, 0]);
    /// let mut reader = LOG.main_reader();
    /// let mut rec = RecordBuf::new();
    /// assert_eq!(reader.read(&LOG, &mut rec), Read::Empty); // nothing before release
    /// SLOTS.release(&LOG);
    /// assert_eq!(reader.read(&LOG, &mut rec), Read::Record);
    /// assert!(rec.header.facility == facility::DEFMT && rec.header.flags & flags::RAW != 0);
    /// ```
    pub fn release<P: Platform, const RING_WORDS: usize, const MAIN_WORDS: usize>(
        &self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    ) {
        let Some(slot) = self.slot(log) else {
            // No slot: a bad CPU id or nesting too deep. Let the core refuse and count it exactly
            // as it counts a text record in that situation.
            let _ = log.append_raw(Level::Info, facility::DEFMT, flags::RAW, &[]);
            return;
        };
        let n = slot.nest.load(Ordering::Relaxed);
        if n == 0 {
            return;
        }
        if n > 1 {
            slot.count_drop();
            slot.nest.store(n - 1, Ordering::Relaxed);
            return;
        }
        {
            // SAFETY: as in `acquire`: this context's open frame.
            let f = unsafe { &mut *slot.frame.get() };
            f.encode(|e, out| e.end_frame(out));
            if f.overflow {
                slot.count_drop();
            } else {
                // Refusals (too large for the ring, reentry in the core) are counted by the core.
                let _ = log.append(Level::Info, facility::DEFMT, flags::RAW, &f.buf[..f.len]);
            }
        }
        // LMM(defmt:B): signal fence, pairs with LMM(defmt:C): the frame cell is finished with (and
        // appended) before the slot is marked free.
        signal_fence();
        slot.nest.store(0, Ordering::Relaxed);
    }

    /// `Logger::flush`: does not wait (see the module docs).
    ///
    /// ```
    /// # use nmilog::defmt_logger::DefmtSlots;
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::Log;
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// # use nmilog::{ring::Read, RecordBuf};
    /// static SLOTS: DefmtSlots<1, 5> = DefmtSlots::new();
    /// SLOTS.acquire(&LOG);
    /// SLOTS.release(&LOG);
    /// SLOTS.flush(&LOG); // returns at once; the record already went through the core
    /// let (mut reader, mut rec) = (LOG.main_reader(), RecordBuf::new());
    /// assert_eq!(reader.read(&LOG, &mut rec), Read::Record);
    /// assert_eq!(reader.read(&LOG, &mut rec), Read::Empty);
    /// ```
    pub fn flush<P: Platform, const RING_WORDS: usize, const MAIN_WORDS: usize>(
        &self,
        _log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    ) {
    }

    /// Whether slot `(cpu, depth)` has a frame open (between `acquire` and `release`): a
    /// diagnostic, e.g. for an NMI handler that wants to know what it interrupted.
    ///
    /// ```
    /// let s: nmilog::defmt_logger::DefmtSlots<1, 5> = nmilog::defmt_logger::DefmtSlots::new();
    /// assert!(!s.frame_open(0, 0));
    /// ```
    pub fn frame_open(&self, cpu: usize, depth: usize) -> bool {
        self.slots
            .get(cpu)
            .and_then(|r| r.get(depth))
            .is_some_and(|s| s.nest.load(Ordering::Relaxed) != 0)
    }

    /// Frames dropped by slot `(cpu, depth)`: larger than `BUF`, or a reentrant frame in the same
    /// context.
    ///
    /// ```
    /// let s: nmilog::defmt_logger::DefmtSlots<2, 4> = nmilog::defmt_logger::DefmtSlots::new();
    /// assert_eq!(s.dropped(1, 3), 0);
    /// ```
    pub fn dropped(&self, cpu: usize, depth: usize) -> u64 {
        self.slots
            .get(cpu)
            .and_then(|r| r.get(depth))
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed) as u64)
    }
}

#[inline]
fn push<const BUF: usize>(buf: &mut [u8; BUF], len: &mut usize, ovf: &mut bool, bytes: &[u8]) {
    let room = BUF - *len;
    if bytes.len() > room {
        *ovf = true;
        return;
    }
    buf[*len..*len + bytes.len()].copy_from_slice(bytes);
    *len += bytes.len();
}

/// `(CPUS, DEPTH)` of a [`Log`], in a `const` context (used by
/// [`defmt_global_logger!`](crate::defmt_global_logger) to size the slots).
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::Log;
/// static LOG: Log<OneCpu, 3, 256, 1024, 5> = Log::new(OneCpu);
/// const SHAPE: (usize, usize) = nmilog::defmt_logger::shape_of(&LOG);
/// assert_eq!(SHAPE, (3, 5));
/// ```
pub const fn shape_of<
    P: Platform,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
>(
    _log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
) -> (usize, usize) {
    (CPUS, DEPTH)
}

/// Defines the `#[defmt::global_logger]` for a `static` [`Log`]: `defmt_global_logger!(LOG)` (frames
/// up to [`DEFAULT_FRAME_BYTES`] encoded bytes) or `defmt_global_logger!(LOG, 512)`; add a name,
/// `defmt_global_logger!(LOG, 512, DEFMT_SLOTS)`, to get the [`DefmtSlots`] `static` as an item you
/// can query ([`DefmtSlots::dropped`]). Use it once, in the final binary; the crate must depend on
/// `defmt`. See the [module docs](self) and `examples/defmt_logger.rs`.
///
/// ```
/// use nmilog::{host::HostPlatform, record::facility, Log, RecordBuf};
/// static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
/// nmilog::defmt_global_logger!(LOG, 256, DEFMT_SLOTS);
/// # defmt::timestamp!("{=u8}", 0);
///
/// HostPlatform::register_cpu(0);
/// defmt::println!("booted in {=u32} ms", 42);
/// let mut rec = RecordBuf::new();
/// LOG.main_reader().read(&LOG, &mut rec);
/// assert_eq!(rec.header.facility, facility::DEFMT);
/// assert_eq!(DEFMT_SLOTS.dropped(0, 0), 0);
/// ```
#[macro_export]
macro_rules! defmt_global_logger {
    ($log:path) => {
        $crate::defmt_global_logger!($log, $crate::defmt_logger::DEFAULT_FRAME_BYTES);
    };
    ($log:path, $buf:expr) => {
        const _: () = {
            $crate::defmt_global_logger!($log, $buf, SLOTS);
        };
    };
    ($log:path, $buf:expr, $slots:ident) => {
        static $slots: $crate::defmt_logger::DefmtSlots<
            { $crate::defmt_logger::shape_of(&$log).0 },
            { $crate::defmt_logger::shape_of(&$log).1 },
            { $buf },
        > = $crate::defmt_logger::DefmtSlots::new();

        const _: () = {
            #[::defmt::global_logger]
            struct NmilogDefmtLogger;

            // SAFETY: acquire/release/write are per execution context ((CPU, depth) slots), so a
            // frame is never interleaved with another; nothing blocks or panics.
            unsafe impl ::defmt::Logger for NmilogDefmtLogger {
                fn acquire() {
                    $slots.acquire(&$log)
                }
                unsafe fn flush() {
                    $slots.flush(&$log)
                }
                unsafe fn release() {
                    $slots.release(&$log)
                }
                unsafe fn write(bytes: &[u8]) {
                    $slots.write(&$log, bytes)
                }
            }
        };
    };
}
