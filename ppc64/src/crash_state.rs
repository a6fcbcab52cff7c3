//! The state of one crash that the stopped CPUs and the crashing CPU share: each stopped CPU's
//! check-in flag, saved registers and interrupted context ([`CrashState`]), and the crashing CPU's own
//! RTAS argument buffer. Written by [`on_nmi_stop`](crate::on_nmi_stop), read by
//! [`crash_shutdown`](crate::crash_shutdown).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nmilog::{ContextKind, Header};

use crate::machine::{RtasArgs, SavedRegs};
use crate::report::CpuOutcome;

/// Per-CPU stop state shared by the stopped CPUs (writers) and the crashing CPU (reader).
#[derive(Debug)]
struct CpuStop {
    /// 0, or 1 once the CPU is parked in its NMI handler.
    checked_in: AtomicUsize,
    ts_ns: AtomicU64,
    pc: AtomicUsize,
    sp: AtomicUsize,
    msr: AtomicUsize,
    /// `Header::pack_ctx` of the context the NMI interrupted.
    interrupted: AtomicUsize,
    /// The CPU's outcome in the stop phase (`CpuOutcome` code), set by the crashing CPU.
    outcome: AtomicUsize,
}

impl CpuStop {
    const fn new() -> Self {
        CpuStop {
            checked_in: AtomicUsize::new(0),
            ts_ns: AtomicU64::new(0),
            pc: AtomicUsize::new(0),
            sp: AtomicUsize::new(0),
            msr: AtomicUsize::new(0),
            interrupted: AtomicUsize::new(0),
            outcome: AtomicUsize::new(0),
        }
    }
}

/// The state of one crash: the check-in flags and saved registers of the stopped CPUs, and the
/// crashing CPU's own RTAS argument buffer. One `static` per kernel.
///
/// **Check-in handshake.** A stopped CPU writes its "stopped" record, its saved registers and
/// everything it did before the NMI, then stores its check-in flag with Release — LMM(checkin:A).
/// The crashing CPU loads the flag with Acquire — LMM(checkin:B) — before it drains the rings, reads
/// the firmware lock or the saved registers; so everything the stopped CPU wrote is visible to it.
///
/// ```
/// # use std::panic::{catch_unwind, AssertUnwindSafe};
/// # use nmilog::{host::HostPlatform, Log};
/// # use nmilog_ppc64::*;
/// # use nmilog_ppc64::doc_support::{start, FakeMachine};
/// # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
/// # static STATE: CrashState<2> = CrashState::new();
/// # start(); // quiet unwinding; this thread is CPU 0
/// # let m = FakeMachine::new(&LOG, &STATE); // CPU 1 answers the NMI
/// // CPU 0 crashes; CPU 1 takes the NMI while it is handling an interrupt.
/// LOG.crash_enter().unwrap();
/// HostPlatform::register_cpu(1);
/// LOG.irq_enter();
/// let regs = SavedRegs { pc: 0x1234, sp: 0x8000, msr: 0 };
/// let parked = catch_unwind(AssertUnwindSafe(|| {
///     on_nmi_stop(&LOG, &m, &STATE, regs, format_args!("test"))
/// }));
/// assert!(parked.is_err());
/// assert!(STATE.checked_in(1));
/// assert!(!STATE.checked_in(0)); // the crashing CPU does not check in
/// assert_eq!(STATE.saved_regs(1), Some(regs));
/// let (ts, kind, depth) = STATE.stop_info(1).unwrap();
/// assert!(ts > 0);
/// assert_eq!((kind, depth), (Some(nmilog::ContextKind::Irq), 1));
/// ```
#[derive(Debug)]
pub struct CrashState<const CPUS: usize> {
    cpus: [CpuStop; CPUS],
    /// The crashing CPU's own RTAS argument buffer: the global one may be half-filled by a CPU frozen
    /// holding the RTAS lock.
    pub rtas_args: RtasArgs,
    /// 1 once the crashing CPU escalated (system resets to the CPUs that did not answer the IPI);
    /// diagnostics only (a check-in's breadcrumb says which it answered), hence Relaxed.
    escalating: AtomicUsize,
    /// Check-in breadcrumbs claimed so far (see [`claim_checkin_crumb`](Self::claim_checkin_crumb)).
    checkin_crumbs: AtomicUsize,
}

impl<const CPUS: usize> CrashState<CPUS> {
    /// Where a reader of a memory dump finds the check-in flags (for the log's descriptor,
    /// [`nmilog::Log::describe`]): with them, a log rebuilt from memory says which CPUs did not stop.
    /// (Not under the model checker, which builds the core without its dump reader.)
    #[cfg(not(nmilog_loom))]
    pub fn stop_flags(&self) -> nmilog::recover::StopFlags {
        nmilog::recover::StopFlags::new(
            self.cpus.as_ptr() as usize + core::mem::offset_of!(CpuStop, checked_in),
            core::mem::size_of::<CpuStop>(),
        )
    }

    /// Nobody stopped yet.
    ///
    /// ```
    /// use nmilog_ppc64::CrashState;
    /// static STATE: CrashState<4> = CrashState::new(); // `const`: one `static` per kernel
    /// assert!((0..4).all(|cpu| !STATE.checked_in(cpu)));
    /// assert_eq!(STATE.saved_regs(0), Some(Default::default()));
    /// ```
    pub const fn new() -> Self {
        CrashState {
            cpus: [const { CpuStop::new() }; CPUS],
            rtas_args: RtasArgs::new(),
            escalating: AtomicUsize::new(0),
            checkin_crumbs: AtomicUsize::new(0),
        }
    }

    /// Whether `cpu` checked in (is parked in its NMI handler for good).
    ///
    /// ```
    /// # use std::panic::{catch_unwind, AssertUnwindSafe};
    /// # use nmilog::{host::HostPlatform, Log};
    /// # use nmilog_ppc64::*;
    /// # use nmilog_ppc64::doc_support::{start, FakeMachine};
    /// # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
    /// # static STATE: CrashState<2> = CrashState::new();
    /// # start(); // quiet unwinding; this thread is CPU 0
    /// # let m = FakeMachine::new(&LOG, &STATE); // CPU 1 answers the NMI
    /// LOG.crash_enter().unwrap();
    /// assert!(!STATE.checked_in(1));
    /// HostPlatform::register_cpu(1);
    /// let regs = SavedRegs::default();
    /// let _ = catch_unwind(AssertUnwindSafe(|| {
    ///     on_nmi_stop(&LOG, &m, &STATE, regs, format_args!("x"))
    /// }));
    /// assert!(STATE.checked_in(1));
    /// assert!(!STATE.checked_in(7)); // not a CPU of this state: never checked in
    /// ```
    pub fn checked_in(&self, cpu: usize) -> bool {
        // LMM(checkin:B): Acquire pairs with LMM(checkin:A) in `check_in`.
        self.cpus
            .get(cpu)
            .is_some_and(|s| s.checked_in.load(Ordering::Acquire) != 0)
    }

    /// The registers `cpu` saved when it stopped (meaningful once [`checked_in`](Self::checked_in)).
    ///
    /// ```
    /// # use std::panic::{catch_unwind, AssertUnwindSafe};
    /// # use nmilog::{host::HostPlatform, Log};
    /// # use nmilog_ppc64::*;
    /// # use nmilog_ppc64::doc_support::{start, FakeMachine};
    /// # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
    /// # static STATE: CrashState<2> = CrashState::new();
    /// # start(); // quiet unwinding; this thread is CPU 0
    /// # let m = FakeMachine::new(&LOG, &STATE); // CPU 1 answers the NMI
    /// LOG.crash_enter().unwrap();
    /// HostPlatform::register_cpu(1);
    /// let regs = SavedRegs { pc: 0xc0de, sp: 0x7000, msr: 0x1 };
    /// let _ = catch_unwind(AssertUnwindSafe(|| {
    ///     on_nmi_stop(&LOG, &m, &STATE, regs, format_args!("x"))
    /// }));
    /// assert_eq!(STATE.saved_regs(1), Some(regs));
    /// assert_eq!(STATE.saved_regs(0), Some(SavedRegs::default())); // CPU 0 never stopped
    /// assert_eq!(STATE.saved_regs(2), None); // only two CPUs
    /// ```
    pub fn saved_regs(&self, cpu: usize) -> Option<SavedRegs> {
        let s = self.cpus.get(cpu)?;
        Some(SavedRegs {
            pc: s.pc.load(Ordering::Relaxed),
            sp: s.sp.load(Ordering::Relaxed),
            msr: s.msr.load(Ordering::Relaxed),
        })
    }

    /// When `cpu` stopped (clock of [`Machine::now_ns`](crate::Machine::now_ns)) and the context kind
    /// and depth the NMI interrupted.
    ///
    /// ```
    /// # use std::panic::{catch_unwind, AssertUnwindSafe};
    /// # use nmilog::{host::HostPlatform, Log};
    /// # use nmilog_ppc64::*;
    /// # use nmilog_ppc64::doc_support::{start, FakeMachine};
    /// # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
    /// # static STATE: CrashState<2> = CrashState::new();
    /// # start(); // quiet unwinding; this thread is CPU 0
    /// # let m = FakeMachine::new(&LOG, &STATE); // CPU 1 answers the NMI
    /// use nmilog::ContextKind;
    /// LOG.crash_enter().unwrap();
    /// HostPlatform::register_cpu(1); // CPU 1 is running a task when the NMI comes
    /// let before = HostPlatform::clock_ns();
    /// let regs = SavedRegs::default();
    /// let _ = catch_unwind(AssertUnwindSafe(|| {
    ///     on_nmi_stop(&LOG, &m, &STATE, regs, format_args!("x"))
    /// }));
    /// let (ts, kind, depth) = STATE.stop_info(1).unwrap();
    /// assert!(ts >= before);
    /// assert_eq!((kind, depth), (Some(ContextKind::Task), 0));
    /// assert_eq!(STATE.stop_info(2), None);
    /// ```
    pub fn stop_info(&self, cpu: usize) -> Option<(u64, Option<ContextKind>, usize)> {
        let s = self.cpus.get(cpu)?;
        let h = Header {
            ctx: s.interrupted.load(Ordering::Relaxed) as u8,
            ..Header::default()
        };
        let (k, d) = h.context();
        Some((s.ts_ns.load(Ordering::Relaxed), k, d))
    }

    /// The crashing CPU is escalating: a check-in from now on answers the system reset.
    /// CPU `cpu`'s outcome in the crash's stop phase ([`CpuOutcome::Absent`] for a CPU beyond
    /// this state, or before a crash set it). Kept here rather than in the
    /// [`ShutdownReport`](crate::ShutdownReport) so that the crashing CPU's stack does not grow with
    /// the CPU count (a kernel stack is 16 KiB; with the outcomes and answered flags in the report,
    /// copied between frames, the crash sequence took 29 KB of stack at 2048 CPUs: `tests/stack.rs`).
    ///
    /// Written only by the crashing CPU during the sequence and read by it (and, after the
    /// switchover, by whoever reads this state on that CPU): Relaxed.
    ///
    /// ```
    /// use nmilog_ppc64::{CpuOutcome, CrashState};
    /// static STATE: CrashState<2> = CrashState::new();
    /// assert_eq!(STATE.outcome(0), CpuOutcome::Absent); // no crash yet
    /// assert!(!STATE.answered(9)); // not a CPU of this state
    /// ```
    pub fn outcome(&self, cpu: usize) -> CpuOutcome {
        self.cpus
            .get(cpu)
            .and_then(|s| CpuOutcome::from_code(s.outcome.load(Ordering::Relaxed) as u8))
            .unwrap_or(CpuOutcome::Absent)
    }

    /// Whether `cpu` answered the crash (checked in after the IPI or the system reset), or is the
    /// crashing CPU: per [`outcome`](Self::outcome).
    pub fn answered(&self, cpu: usize) -> bool {
        let o = self.outcome(cpu);
        o == CpuOutcome::Crashing || o.stopped()
    }

    /// Sets `cpu`'s outcome (the crashing CPU, during the sequence). A CPU beyond this state is
    /// ignored.
    pub(crate) fn set_outcome(&self, cpu: usize, o: CpuOutcome) {
        if let Some(s) = self.cpus.get(cpu) {
            s.outcome.store(o as u8 as usize, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_escalating(&self) {
        self.escalating.store(1, Ordering::Relaxed);
    }

    /// Whether the crashing CPU escalated (see [`set_escalating`](Self::set_escalating)).
    pub(crate) fn escalating(&self) -> bool {
        self.escalating.load(Ordering::Relaxed) != 0
    }

    /// Whether a checking-in CPU may leave its breadcrumb: the first
    /// [`CHECKIN_CRUMBS`](crate::flight::CHECKIN_CRUMBS) may, so that a thousand check-ins do not
    /// push the crash path's own stages out of the flight recorder. One `fetch_add` (a native
    /// read-modify-write, as the recorder's own slot claim): exact however many CPUs check in at
    /// once, no wait.
    pub(crate) fn claim_checkin_crumb(&self) -> bool {
        self.checkin_crumbs.fetch_add(1, Ordering::Relaxed) < crate::flight::CHECKIN_CRUMBS
    }

    pub(crate) fn check_in(
        &self,
        cpu: usize,
        ts: u64,
        regs: SavedRegs,
        kind: ContextKind,
        depth: usize,
    ) {
        let Some(s) = self.cpus.get(cpu) else { return };
        s.ts_ns.store(ts, Ordering::Relaxed);
        s.pc.store(regs.pc, Ordering::Relaxed);
        s.sp.store(regs.sp, Ordering::Relaxed);
        s.msr.store(regs.msr, Ordering::Relaxed);
        s.interrupted
            .store(Header::pack_ctx(kind, depth) as usize, Ordering::Relaxed);
        // LMM(checkin:A): Release pairs with LMM(checkin:B) in `checked_in`: the "stopped" record,
        // the saved registers and everything this CPU wrote before the NMI (ring words, the RTAS lock
        // word, a half-done flush) are visible to the crashing CPU once it sees the flag. The
        // core's signal fences (LMM(guard:A), LMM(cursor:C)) keep the interrupted code's stores in
        // program order, which is what this store publishes.
        s.checked_in.store(1, Ordering::Release);
    }
}

impl<const CPUS: usize> Default for CrashState<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}
