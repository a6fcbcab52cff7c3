//! Appending: one record into the calling CPU's ring for its current context depth.
//!
//! Contract: [`Log::append_raw`] (and every log call in NMI or crash context, or on any CPU once a
//! crash has begun) only writes the calling CPU's own ring — plain atomic loads and stores, no lock,
//! no read-modify-write, no loop that waits on anyone. [`Log::append`] and [`Log::log_fmt`] then try
//! one normal-context flush if the [`FlushPolicy`](super::FlushPolicy) says so. A call that cannot
//! produce a record (bad CPU, nesting too deep, re-entered, too large) returns an [`AppendError`]
//! and is counted; a ring's recursion guard is held for the whole write and released however the
//! write ends (a `Display` impl may panic), except by a writer a test hook froze.

use core::fmt;

use super::Log;
use crate::fmt::{measure, measure_keeping, Formatted, Measure, LINE_MAX, SHORT_LINE};
use crate::record::{facility, flags as record_flags, Caller, ContextKind, Header, Level};
use crate::ring::{NoHook, PayloadSource, Ring, StepHook, WriteError};
use crate::sync::signal_fence;
use crate::Platform;

/// Why a log call did not produce a record. Every refusal is also counted (see
/// [`CpuCounters`](crate::CpuCounters)); none is silent.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{AppendError, Level, Log};
/// static LOG: Log<OneCpu, 1, 64, 1024> = Log::new(OneCpu);
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
    /// A log sized at boot whose arena is not attached yet ([`Log::attach_arena`]): counted in
    /// [`Log::unregistered_dropped`].
    NotReady,
}

/// ```
/// use nmilog::AppendError;
/// assert_eq!(AppendError::TooLarge.to_string(), "the payload is larger than the ring accepts");
/// let e: &dyn core::error::Error = &AppendError::BadCpu;
/// assert_eq!(e.to_string(), "the CPU number is out of range");
/// ```
impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AppendError::BadCpu => "the CPU number is out of range",
            AppendError::TooDeep => "the context nesting is deeper than the logger tracks",
            AppendError::Reentered => "a log call from inside a log call in the same context",
            AppendError::TooLarge => "the payload is larger than the ring accepts",
            AppendError::Frozen => "a test hook froze the writer",
            AppendError::NotReady => "the log has no memory yet (its arena is not attached)",
        })
    }
}

impl core::error::Error for AppendError {}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Runs `f` with the current CPU's ring for the current depth, holding that ring's recursion guard.
    #[inline(always)]
    fn with_ring<R>(
        &self,
        f: impl FnOnce(usize, ContextKind, usize, &Ring) -> Result<R, AppendError>,
    ) -> Result<R, AppendError> {
        let (cpu, pc) = self.this_cpu()?;
        let (kind, mut depth, reported) = self.context_and_source(pc);
        let clamped = depth >= DEPTH;
        if clamped {
            // The crash context never returns to what it interrupted, so when it lands deeper than
            // the log tracks (a panic from a machine check), it may take the top ring — unless a log
            // call there was interrupted (its guard is set: refused below, as any re-entry).
            if kind != ContextKind::Crash {
                pc.count_overflow();
                return Err(AppendError::TooDeep);
            }
            depth = DEPTH - 1;
        }
        // The kind of this depth's ring, for the accounting records: a bracket noted it already,
        // unless the platform reports the context or a crash took the top ring.
        if reported || clamped {
            pc.note_kind(depth, kind);
        }
        let Some(ring) = pc.ring(depth) else {
            // A log sized at boot, before its arena: nowhere to put it.
            self.add_unregistered(1);
            return Err(AppendError::NotReady);
        };
        // LMM(guard:B): pairs with LMM(guard:A): a call at this depth that interrupted (an
        // untracked interrupt) or re-entered (a `Display` impl that logs) a log call on this ring
        // sees the guard set, and leaves the ring alone. Relaxed: same CPU, program order.
        if ring.guard_set() {
            ring.count_drop();
            return Err(AppendError::Reentered);
        }
        ring.set_guard();
        // LMM(guard:A): signal fence, pairs with LMM(guard:B): the guard is set before the ring is
        // touched, in the order an interrupt on this CPU (and, through the stop handshake
        // LMM(checkin:A/B), the crash drain) sees.
        signal_fence();
        // Clears the guard however `f` leaves (a `Display` impl may panic), except when a test hook
        // froze the writer: a frozen CPU never leaves.
        struct Guard<'a>(&'a Ring, bool);
        impl Drop for Guard<'_> {
            #[inline(always)]
            fn drop(&mut self) {
                if self.1 {
                    // LMM(guard:A), the other half: the ring writes are done before the guard is
                    // cleared (LMM(guard:C), in `clear_guard`, for other CPUs).
                    signal_fence();
                    self.0.clear_guard();
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
    fn write_from<H: StepHook>(
        &self,
        (cpu, kind, depth): (usize, ContextKind, usize),
        ring: &Ring,
        (level, facility, flags): (u8, u8, u8),
        payload: impl PayloadSource,
        hook: &mut H,
    ) -> Result<u64, AppendError> {
        let platform = &self.platform;
        // Linux's caller id: the task in task context (where the platform names one), else the CPU.
        // The platform is asked only in task context (never on the NMI path).
        let task = match kind {
            ContextKind::Task => platform.task_id().filter(|&t| t != 0),
            _ => None,
        };
        let caller = task.map_or(Caller::Cpu(cpu as u32), Caller::Task);
        ring.write_from(
            |seq| Header {
                ts_ns: platform.now_ns(),
                src_seq: seq,
                len: 0,
                cpu: cpu as u16,
                level,
                facility,
                ctx: Header::pack_ctx(kind, depth),
                flags,
                caller: caller.raw(),
                reserved: 0,
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
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
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
            self.write_from(
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
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{AppendError, Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// use nmilog::ring::WriteStep;
    /// // The crash NMI stops this CPU after it reserved its record, before the header is written.
    /// let mut freeze = |s: WriteStep| s != WriteStep::Reserved;
    /// let r = LOG.append_raw_with_hook(Level::Err, 0, 0, b"half", &mut freeze);
    /// assert_eq!(r, Err(AppendError::Frozen));
    /// LOG.crash_enter().unwrap();
    /// let rep = LOG.drain_on_crash(&|_| true, &mut |_, _: &nmilog::RecordBuf| true).unwrap();
    /// assert_eq!(rep.torn, 1); // CPU 0 crashed from above the frozen call: it never completes
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

    /// Appends pre-formatted text; in normal context (task or irq, no crash) then tries to flush. A
    /// trailing newline ends the record and is not stored
    /// ([`flags::NEWLINE`](crate::record::flags::NEWLINE)), unless the payload is
    /// [`flags::RAW`](crate::record::flags::RAW) ([`append_raw`](Self::append_raw) stores bytes as
    /// given).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log, RecordBuf};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
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
        // Text that ends with a newline ends its record there; the newline is not stored.
        let (payload, flags) = match payload {
            [rest @ .., b'\n'] if flags & record_flags::RAW == 0 => {
                (rest, flags | record_flags::NEWLINE)
            }
            _ => (payload, flags),
        };
        let r = self.append_raw(level, facility, flags, payload);
        self.flush_if_normal();
        r
    }

    /// Formats `args` into a record in the current CPU's ring and appends it; in normal context then
    /// tries to flush. A line that keeps up to 128 bytes (most do) is formatted once, onto the
    /// stack, and stored from there; a longer or cut one is measured on that first pass and
    /// formatted again straight into the record's place in the ring, as Linux's `vprintk_store`
    /// formats every line (no [`LINE_MAX`] buffer on the stack). Text longer than [`LINE_MAX`] is
    /// cut with a marker; a trailing newline ends the record and is not stored
    /// ([`flags::NEWLINE`](crate::record::flags::NEWLINE)). A log call made while formatting (a
    /// `Display` impl that logs) is refused and counted as dropped.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log, RecordBuf, LINE_MAX, TRUNCATION_MARKER};
    /// # static LOG: Log<OneCpu, 1, 512, 1024> = Log::new(OneCpu);
    /// use nmilog::record::flags;
    /// LOG.log_fmt(Level::Err, 0, format_args!("{:>1200}", "end")).unwrap(); // too long
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
        let r = self.append_fmt(level, flags, args);
        self.flush_if_normal();
        r
    }

    /// The append half of [`log_fmt`](Self::log_fmt) (a frame of its own: none of it is on the
    /// stack while the flush runs).
    #[inline(never)]
    fn append_fmt(
        &self,
        level: Level,
        flags: u8,
        args: fmt::Arguments<'_>,
    ) -> Result<u64, AppendError> {
        self.with_ring(|cpu, kind, depth, ring| {
            // Measured with the ring's guard held: a log call from a `Display` impl is refused (and
            // counted once: a second pass repeats the first's refusals, which are not counted
            // again).
            let refused = ring.dropped();
            let max = ring.max_payload().min(LINE_MAX);
            let at = (cpu, kind, depth);
            let how = |m: &Measure| (level as u8, facility::KERNEL, flags | m.flags);
            let m = match args.as_str() {
                // Text known in advance that fits: stored as bytes.
                Some(s) => {
                    let m = measure(args, max);
                    if m.flags & record_flags::TRUNCATED == 0 {
                        return self.write_from(
                            at,
                            ring,
                            how(&m),
                            &s.as_bytes()[..m.keep],
                            &mut NoHook,
                        );
                    }
                    m
                }
                // A short line (most are): formatted once, onto the stack, and stored from there.
                None => match measure_keeping(args, max, &mut [0u8; SHORT_LINE]) {
                    (m, Some(kept)) => {
                        return self.write_from(at, ring, how(&m), kept, &mut NoHook);
                    }
                    (m, None) => m,
                },
            };
            // A long or cut line: formatted again, straight into the ring.
            let before = ring.dropped();
            let in_measure = before.wrapping_sub(refused);
            let r = self.write_from(at, ring, how(&m), Formatted { args, m }, &mut NoHook);
            let in_store = ring.dropped().wrapping_sub(before);
            ring.uncount_drops(in_store.min(in_measure));
            r
        })
    }

    #[inline]
    fn flush_if_normal(&self) {
        #[cfg(nmilog_cas)]
        match self.flush_policy() {
            crate::FlushPolicy::Eager => {
                let _ = self.flush();
            }
            crate::FlushPolicy::Batched => {
                let _ = self.flush_if_due();
            }
            crate::FlushPolicy::Deferred => {}
        }
    }
}
