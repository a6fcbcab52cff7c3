//! The crash-shutdown sequence: [`crash_shutdown`] on the crashing CPU, [`on_nmi_stop`] on every
//! other CPU.
//!
//! ```text
//!  crashing CPU                                   every other CPU (NMI handler)
//!  ------------                                   -----------------------------
//!  crash_enter (all log calls → NMI-safe path)
//!  log "crash: CPU n crashing: …"
//!  NMI IPI to all online but self  ────────────▶  nmi_enter
//!                                                 log "CPU m stopped (NMI in … context)"
//!                                                 save registers
//!  wait for check-ins (timeout + spin bound) ◀──  check in (LMM(checkin:A), Release)
//!  log "crash: CPU k did not answer …"            park forever
//!  escalation: system reset to each CPU that
//!  did not answer, a second bounded wait   ────▶  (the same handler)
//!  each CPU's outcome: IPI, reset, never, offline
//!  log "IPI complete"
//!  mask interrupts: RTAS / RTAS takeover / presenter (see crate::rtas),
//!  or hypervisor calls on XIVE (no firmware call)
//!  drain (read-only, bounded), log what it found
//!  log "kexec: Starting switchover sequence."
//!  write the handover image (the final drain)
//!  kexec into the capture stage
//! ```
//!
//! Nothing here takes a lock (the firmware lock is only ever *taken over* or *left alone*, see
//! [`crate::rtas`]) and every wait is bounded by a timeout and an iteration count. Nothing assumes a
//! CPU is stopped unless it checked in: the drain and the image writer are told which CPUs did
//! (`CrashState::checked_in`), read the log without writing what such a CPU could write, and count a
//! log call in progress on a CPU that did not check in as in flight, not torn; the firmware lock is
//! taken over only from a holder that checked in. [`Machine::stage`] is called at each step, and each
//! step leaves a breadcrumb in the machine's flight recorder ([`Machine::flight_recorder`], see
//! [`crate::flight`]): entry, IPI sent, every check-in (by the CPU checking in), the end of each
//! wait, the escalation, each CPU's outcome, the mask path, masked, drain start and end, image start
//! and written, switchover.
//!
//! The 2020 RTAS deadlock, replayed: CPU 1 is frozen *inside* an RTAS call, holding the lock.
//! The sequence does not wait for the lock, and does not call firmware either:
//!
//! ```
//! # use nmilog::{host::HostPlatform, Log};
//! # use nmilog_ppc64::*;
//! # use nmilog_ppc64::doc_support::{crash, start, FakeMachine};
//! # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
//! # static STATE: CrashState<2> = CrashState::new();
//! # start(); // quiet unwinding; this thread is CPU 0
//! let rtas = RtasLock::new();
//! rtas.lock(1);
//! rtas.enter_call(1);
//! let (_, report) = crash(&FakeMachine::new(&LOG, &STATE), &rtas, &ShutdownConfig::new());
//! assert_eq!(report.mask.path, MaskPath::Presenter);
//! assert_eq!(report.mask.masked, 0);
//! assert_eq!(rtas.holder(), Some((1, true))); // left alone
//! ```

use core::fmt;

use nmilog::handover;
use nmilog::{ContextKind, DrainReport, Level, Log, Platform};

pub use crate::crash_state::CrashState;
use crate::flight::{Event, OUTCOME_CRUMBS};
use crate::machine::{CrashStage, DrainStep, Machine, SavedRegs};
pub use crate::report::{CpuOutcome, MaskOutcome, MaskPath, ShutdownReport};
use crate::rtas::{CrashAcquire, RtasLock};

/// Tunables of the sequence.
///
/// ```
/// use nmilog_ppc64::ShutdownConfig;
/// assert_eq!(ShutdownConfig::default(), ShutdownConfig::new());
/// // A short wait, for a simulation where the other CPUs answer in microseconds:
/// let cfg = ShutdownConfig { ack_timeout_ns: 5_000_000, ..ShutdownConfig::new() };
/// assert_eq!(cfg.ack_timeout_ns / 1_000_000, 5);
/// assert_eq!(cfg.max_wait_spins, ShutdownConfig::new().max_wait_spins);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// How long to wait for the other CPUs to check in, from the end of the sending of the crash
    /// IPI (and again from the end of the escalation's system resets) (Linux: 10 s for the crash
    /// IPI; the host simulation uses 1 s).
    pub ack_timeout_ns: u64,
    /// An upper bound on the check-in wait's iterations, so the wait ends even if the clock stops.
    pub max_wait_spins: u64,
}

impl ShutdownConfig {
    /// One second, at most 2^32 iterations.
    ///
    /// ```
    /// use nmilog_ppc64::ShutdownConfig;
    /// const CFG: ShutdownConfig = ShutdownConfig::new();
    /// assert_eq!(CFG.ack_timeout_ns, 1_000_000_000);
    /// assert_eq!(CFG.max_wait_spins, 1 << 32);
    /// ```
    pub const fn new() -> Self {
        ShutdownConfig {
            ack_timeout_ns: 1_000_000_000,
            max_wait_spins: 1 << 32,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The NMI (system reset) handler's crash part, on a CPU that is not the crashing one: enters NMI
/// context, logs `"CPU n stopped (NMI in <ctx> context; <note>)"`, saves `regs`, checks in and parks
/// forever. Returns at once (doing nothing) if no crash is in progress or if called on the crashing
/// CPU, so it can sit at the top of a shared NMI handler.
///
/// ```
/// # use std::panic::{catch_unwind, AssertUnwindSafe};
/// # use nmilog::{host::HostPlatform, Log};
/// # use nmilog_ppc64::*;
/// # use nmilog_ppc64::doc_support::{start, FakeMachine};
/// # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
/// # static STATE: CrashState<2> = CrashState::new();
/// # start(); // quiet unwinding; this thread is CPU 0
/// let m = FakeMachine::new(&LOG, &STATE);
/// let regs = SavedRegs::default();
/// // No crash in progress: returns at once (an ordinary NMI, e.g. a watchdog).
/// on_nmi_stop(&LOG, &m, &STATE, regs, format_args!("x"));
/// LOG.crash_enter().unwrap(); // CPU 0 crashes
/// // On the crashing CPU itself: returns too.
/// on_nmi_stop(&LOG, &m, &STATE, regs, format_args!("x"));
/// assert!(!STATE.checked_in(0));
/// // On CPU 1: logs, checks in and parks (here: unwinds out of `park`).
/// HostPlatform::register_cpu(1);
/// let parked = catch_unwind(AssertUnwindSafe(|| {
///     on_nmi_stop(&LOG, &m, &STATE, regs, format_args!("hello"))
/// }));
/// assert_eq!(*parked.unwrap_err().downcast::<&str>().unwrap(), "parked");
/// assert!(STATE.checked_in(1));
/// ```
pub fn on_nmi_stop<
    P: Platform,
    M: Machine,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
>(
    log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    machine: &M,
    state: &CrashState<CPUS>,
    regs: SavedRegs,
    note: fmt::Arguments<'_>,
) {
    let Some(crasher) = log.crashing_cpu() else {
        return;
    };
    let cpu = log.platform().cpu_id();
    if cpu == crasher {
        return;
    }
    Crash::new(log, machine, state).stop_self(regs, "NMI", note)
}

/// Per-CPU messages of one kind (offline, did not answer) the crash path logs by name; the rest
/// are counted in one line.
pub const CPU_LINES: usize = 4;

/// What every step of the sequence works on.
struct Crash<
    'a,
    P: Platform,
    M: Machine,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
> {
    log: &'a Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    machine: &'a M,
    state: &'a CrashState<CPUS>,
}

impl<
        'a,
        P: Platform,
        M: Machine,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Crash<'a, P, M, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// The sequence on `log`, `machine` and `state` (what both entry points start with).
    fn new(
        log: &'a Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        machine: &'a M,
        state: &'a CrashState<CPUS>,
    ) -> Self {
        Crash {
            log,
            machine,
            state,
        }
    }

    /// Logs one of the sequence's messages at emerg level. Never blocks: the log is in crash mode,
    /// or this CPU is in NMI context (the per-CPU rings, no lock).
    fn emerg(&self, args: fmt::Arguments<'_>) {
        let _ = self.log.log_fmt(Level::Emerg, 0, args);
    }

    /// Logs one CPU's message of a kind (`n`: how many of that kind so far) if it is among the
    /// first [`CPU_LINES`]; [`more_cpus`](Self::more_cpus) sums up the rest in one line. The crash
    /// path's own records stay few whatever the CPU count: a thousand "did not answer" lines would
    /// overwrite the crashing CPU's ring before the drain reads it.
    fn cpu_line(&self, n: &mut usize, args: fmt::Arguments<'_>) {
        if *n < CPU_LINES {
            self.emerg(args);
        }
        *n += 1;
    }

    /// The line for the CPUs of a kind past the first [`CPU_LINES`] (none if there are none).
    fn more_cpus(&self, n: usize, what: &str) {
        if n > CPU_LINES {
            self.emerg(format_args!(
                "crash: and {} more CPU(s) {}",
                n - CPU_LINES,
                what
            ));
        }
    }

    /// Leaves a breadcrumb in the machine's flight recorder, if it has one (no lock, no wait).
    fn crumb(&self, event: Event, cpu: usize, arg: u64) {
        if let Some(fr) = self.machine.flight_recorder() {
            fr.record(event, cpu, self.machine.now_ns(), arg);
        }
    }

    /// Waits until every online CPU but `me` (below `ncpu`) checked in, the timeout counted from
    /// `from_ns` passes or `spins` reaches the bound; then leaves the `done` breadcrumb with how many
    /// are still missing, and returns that count.
    fn wait_check_ins(
        &self,
        me: usize,
        ncpu: usize,
        from_ns: u64,
        cfg: &ShutdownConfig,
        spins: &mut u64,
        done: Event,
    ) -> usize {
        let (machine, state) = (self.machine, self.state);
        let deadline = from_ns.saturating_add(cfg.ack_timeout_ns);
        let missing = loop {
            let missing = (0..ncpu)
                .filter(|&c| c != me && machine.cpu_online(c) && !state.checked_in(c))
                .count();
            if missing == 0 || *spins >= cfg.max_wait_spins || machine.now_ns() >= deadline {
                break missing;
            }
            *spins += 1;
            machine.relax();
        };
        self.crumb(done, me, missing as u64);
        missing
    }

    /// Settles each CPU below `ncpu` still without an answer, in CPU order: one that checked in by
    /// now gets the outcome `answered`; any other is handed to `unanswered` and stays
    /// [`CpuOutcome::NeverAnswered`].
    fn settle(&self, ncpu: usize, answered: CpuOutcome, mut unanswered: impl FnMut(usize)) {
        for c in 0..ncpu {
            if self.state.outcome(c) != CpuOutcome::NeverAnswered {
                continue;
            }
            if self.state.checked_in(c) {
                self.state.set_outcome(c, answered);
            } else {
                unanswered(c);
            }
        }
    }

    /// Stops the calling CPU for good: NMI context, the "stopped" record, the saved registers and
    /// the check-in, then parks.
    fn stop_self(&self, regs: SavedRegs, how: &str, note: fmt::Arguments<'_>) -> ! {
        let (log, machine) = (self.log, self.machine);
        let cpu = log.platform().cpu_id();
        if self.state.checked_in(cpu) {
            // A second stop request (an escalation's system reset that crossed a late check-in):
            // the first check-in's record, registers and breadcrumb stand (Linux's
            // `cpus_state_saved` guard in `crash_ipi_callback`).
            machine.park()
        }
        let (kind, depth) = machine
            .interrupted_context()
            .or_else(|| log.context())
            .unwrap_or((ContextKind::Task, 0));
        log.nmi_enter();
        let ts = machine.now_ns();
        self.emerg(format_args!(
            "CPU {} stopped ({} in {} context; {})",
            cpu,
            how,
            kind.name(),
            note
        ));
        // The breadcrumb before the check-in: the check-in's Release (LMM(checkin:A)) then publishes
        // a whole breadcrumb to the crashing CPU, which stops waiting for this one when it sees it.
        if self.state.claim_checkin_crumb() {
            self.crumb(Event::CheckIn, cpu, self.state.escalating() as u64);
        }
        self.state.check_in(cpu, ts, regs, kind, depth);
        machine.park()
    }

    /// Masks every interrupt source before the switchover without waiting on the firmware lock (see
    /// [`crate::rtas`] for the decision), and says how.
    fn mask_interrupts(&self, rtas: &RtasLock, cpu: usize) -> MaskOutcome {
        let (machine, state) = (self.machine, self.state);
        let decision = rtas.crash_acquire(cpu, |c| state.checked_in(c));
        if machine.masks_through_hypervisor() {
            return self.mask_through_hypervisor(rtas, cpu, decision);
        }
        let mut out = MaskOutcome {
            path: MaskPath::Rtas,
            decision,
            masked: 0,
            failed: 0,
        };
        let path_code = match decision {
            CrashAcquire::TakenOver { .. } => 1,
            d if d.may_call_firmware() => 0,
            _ => 2,
        };
        self.crumb(Event::MaskPath, cpu, path_code);
        match decision {
            CrashAcquire::Acquired | CrashAcquire::AlreadyOwn | CrashAcquire::TakenOver { .. } => {
                // We own the lock and no other CPU is in firmware (nor ever will be): PAPR's
                // serialisation holds. Use our own argument buffer, never the frozen holder's.
                let n = machine.irq_source_count();
                for src in 0..n {
                    rtas.enter_call(cpu);
                    let r = machine.firmware_mask_source(src, &state.rtas_args);
                    rtas.leave_call(cpu);
                    match r {
                        Ok(()) => out.masked += 1,
                        Err(_) => out.failed += 1,
                    }
                }
                rtas.unlock(cpu);
                if let CrashAcquire::TakenOver { from } = decision {
                    out.path = MaskPath::RtasTakeover;
                    self.emerg(format_args!(
                        "kexec: RTAS lock held by CPU {} (stopped outside the firmware call): taken over; masked {} of {} interrupt sources via ibm,int-off [mask_path=rtas-takeover]",
                        from, out.masked, n
                    ));
                } else {
                    self.emerg(format_args!(
                        "kexec: masked {} of {} interrupt sources via RTAS ibm,int-off [mask_path=rtas]",
                        out.masked, n
                    ));
                }
                if out.failed != 0 {
                    self.emerg(format_args!(
                        "kexec: ibm,int-off failed for {} sources",
                        out.failed
                    ));
                }
            }
            CrashAcquire::Unsafe {
                holder,
                inside,
                stopped,
            } => {
                out.path = MaskPath::Presenter;
                machine.mask_at_presenter();
                let why = unsafe_holder(inside, stopped);
                self.emerg(format_args!(
                    "kexec: RTAS lock held by CPU {} ({}): RTAS not called (PAPR: calls are serialised); interrupts masked at the presenter (CPPR=0) [mask_path=presenter]",
                    holder as isize, why
                ));
            }
        }
        out
    }

    /// The masking step on a machine that masks sources through the hypervisor (XIVE): no
    /// firmware call, so the RTAS lock's `decision` only decides what the lock becomes (released
    /// if the crash path took it or took it over; left to a holder it may not take it from) and
    /// goes into the report. A source the hypervisor does not mask leaves the presenter closed too.
    fn mask_through_hypervisor(
        &self,
        rtas: &RtasLock,
        cpu: usize,
        decision: CrashAcquire,
    ) -> MaskOutcome {
        let machine = self.machine;
        self.crumb(Event::MaskPath, cpu, 3);
        let mut out = MaskOutcome {
            path: MaskPath::Hypervisor,
            decision,
            masked: 0,
            failed: 0,
        };
        let n = machine.irq_source_count();
        for src in 0..n {
            match machine.hypervisor_mask_source(src) {
                Ok(()) => out.masked += 1,
                Err(_) => out.failed += 1,
            }
        }
        if decision.may_call_firmware() {
            rtas.unlock(cpu);
        }
        let (holder, how, then) = match decision {
            CrashAcquire::Acquired => (-1, "free", ""),
            CrashAcquire::AlreadyOwn => (-1, "already the crashing CPU's", ": released"),
            // The lock changed hands while the decision was made: no holder to name.
            CrashAcquire::Unsafe { holder, .. } if holder == usize::MAX => {
                (-1, "changed hands", ": left as it is")
            }
            CrashAcquire::TakenOver { from } => (
                from as isize,
                "stopped outside the firmware call",
                ": taken over and released",
            ),
            CrashAcquire::Unsafe {
                holder,
                inside,
                stopped,
            } => (
                holder as isize,
                unsafe_holder(inside, stopped),
                ": left to it",
            ),
        };
        if out.failed != 0 {
            machine.mask_at_presenter();
            self.emerg(format_args!(
                "kexec: H_INT_SET_SOURCE_CONFIG failed for {} sources: the presenter closed too (CPPR=0)",
                out.failed
            ));
        }
        if holder < 0 {
            self.emerg(format_args!(
                "kexec: masked {} of {} interrupt sources via H_INT_SET_SOURCE_CONFIG, no firmware call (RTAS lock {how}{then}) [mask_path=hcall]",
                out.masked, n
            ));
        } else {
            self.emerg(format_args!(
                "kexec: masked {} of {} interrupt sources via H_INT_SET_SOURCE_CONFIG, no firmware call (RTAS lock held by CPU {holder}, {how}{then}) [mask_path=hcall]",
                out.masked, n
            ));
        }
        out
    }
}

/// Why the RTAS lock's holder keeps it (a [`CrashAcquire::Unsafe`] decision), as the crash log
/// says it.
fn unsafe_holder(inside: bool, stopped: bool) -> &'static str {
    match (inside, stopped) {
        (true, _) => "frozen inside the firmware call",
        (false, false) => "did not stop",
        (false, true) => "changed hands",
    }
}

/// The crash-shutdown sequence (see the [module docs](self)): on the crashing CPU, with interrupts
/// off. Writes the handover image into `image` (a region the capture stage can find; its size bounds
/// how much of the log survives, see [`handover::max_image_size`]) and never returns.
///
/// If another CPU is already crashing, the caller behaves as a stopped CPU: it logs, checks in and
/// parks (the NMI the other CPU sends would do the same).
///
/// ```
/// # use std::panic::{catch_unwind, AssertUnwindSafe};
/// # use nmilog::{host::HostPlatform, Log};
/// # use nmilog_ppc64::*;
/// # use nmilog_ppc64::doc_support::{start, FakeMachine};
/// # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
/// # static STATE: CrashState<2> = CrashState::new();
/// # start(); // quiet unwinding; this thread is CPU 0
/// use nmilog::handover;
/// // Log something on each CPU before the crash.
/// LOG.log_fmt(nmilog::Level::Info, 0, format_args!("cpu 0 was here")).unwrap();
/// let rtas = RtasLock::new();
/// let mut image = vec![0u8; handover::max_image_size(2, 4, 1024, 8192)];
/// let cfg = ShutdownConfig { ack_timeout_ns: 10_000_000, ..ShutdownConfig::new() };
/// let m = FakeMachine::new(&LOG, &STATE);
/// // `crash_shutdown` returns `!`: this fake `kexec` unwinds with what it was handed.
/// let switched = catch_unwind(AssertUnwindSafe(|| {
///     crash_shutdown(&LOG, &m, &STATE, &rtas, &mut image, &cfg, format_args!("oops"))
/// }));
/// let payload = switched.unwrap_err();
/// let (bytes, report) = *payload.downcast::<(Vec<u8>, ShutdownReport<2>)>().unwrap();
/// assert_eq!(report.not_answered, 0);
/// assert_eq!(report.mask.path, MaskPath::Rtas);
/// // The capture stage parses the image: every message made it, in order.
/// let img = handover::parse(&bytes).unwrap();
/// let texts: Vec<&str> = img.records().filter_map(|r| r.text()).collect();
/// let at = |s: &str| texts.iter().position(|t| t.starts_with(s)).expect(s);
/// assert!(at("cpu 0 was here") < at("crash: CPU 0 crashing: oops"));
/// assert!(at("CPU 1 stopped (NMI in task context; test)") < at("IPI complete"));
/// assert!(at("IPI complete") < at("kexec: masked 3 of 3 interrupt sources"));
/// assert!(at("kexec: masked") < at("kexec: Starting switchover sequence."));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn crash_shutdown<
    P: Platform,
    M: Machine,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
>(
    log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    machine: &M,
    state: &CrashState<CPUS>,
    rtas: &RtasLock,
    image: &mut [u8],
    cfg: &ShutdownConfig,
    reason: fmt::Arguments<'_>,
) -> ! {
    let crash = Crash::new(log, machine, state);
    let cpu = match log.crash_enter() {
        Ok(c) => c,
        Err(nmilog::CrashEnterError::OtherCpu { cpu: other }) => crash.stop_self(
            SavedRegs::default(),
            "crash",
            format_args!("CPU {} is already crashing", other),
        ),
        // The platform does not know this CPU: no log call can succeed and no other CPU will see a
        // crash in progress. Nothing of the sequence can run; stop here.
        Err(nmilog::CrashEnterError::BadCpu) => machine.park(),
    };
    let ncpu = log.platform().cpu_count().min(CPUS);
    let t_enter = machine.now_ns();
    let mut report = ShutdownReport::<CPUS> {
        crash_cpu: cpu,
        cpus: ncpu,
        t_enter_ns: t_enter,
        t_ipi_done_ns: 0,
        t_masked_ns: 0,
        t_switch_ns: 0,
        not_answered: 0,
        escalated: 0,
        offline: 0,
        wait_spins: 0,
        mask: MaskOutcome {
            path: MaskPath::Presenter,
            decision: CrashAcquire::AlreadyOwn,
            masked: 0,
            failed: 0,
        },
        drains: [DrainReport::default(); 2],
        image_len: 0,
        image_error: None,
    };
    crash.crumb(Event::Entered, cpu, ncpu as u64);
    machine.stage(CrashStage::Entered);
    crash.emerg(format_args!("crash: CPU {} crashing: {}", cpu, reason));
    for c in 0..ncpu {
        state.set_outcome(
            c,
            if c == cpu {
                CpuOutcome::Crashing
            } else if machine.cpu_online(c) {
                CpuOutcome::NeverAnswered // until it checks in
            } else {
                report.offline += 1;
                CpuOutcome::Offline
            },
        );
    }
    let targets = unanswered_mask(state, ncpu);
    crash.emerg(format_args!(
        "crash: sending NMI IPI to {} other CPUs",
        ncpu.saturating_sub(1 + report.offline)
    ));
    let mut n = 0;
    for c in (0..ncpu).filter(|&c| state.outcome(c) == CpuOutcome::Offline) {
        crash.cpu_line(
            &mut n,
            format_args!("crash: CPU {} is offline: not waited for", c),
        );
    }
    crash.more_cpus(n, "offline: not waited for");

    // 1. Stop everybody else (Linux: crash_kexec_prepare_cpus): the crash IPI and a bounded wait
    //    (timeout and iteration count); then a system reset to each CPU that did not answer and a
    //    second bounded wait; then each CPU's outcome.
    // The breadcrumb goes first: the targets may check in before the machine's call returns.
    crash.crumb(Event::IpiSent, cpu, targets);
    machine.nmi_ipi_all_but_self(cpu);
    machine.stage(CrashStage::IpiSent);
    let mut spins = 0u64;
    let ms = cfg.ack_timeout_ns / 1_000_000;
    // The timeout runs from the end of the sending, as Linux's wait after `crash_send_ipi` (and
    // as the escalation's below): a machine that takes long to signal a thousand CPUs one by one
    // (a hypervisor call each) still gives the last one the whole timeout to answer.
    let sent = machine.now_ns();
    let missing = crash.wait_check_ins(cpu, ncpu, sent, cfg, &mut spins, Event::IpiWaitDone);
    let mut n = 0;
    crash.settle(ncpu, CpuOutcome::AnsweredIpi, |c| {
        crash.cpu_line(
            &mut n,
            format_args!(
                "crash: CPU {} did not answer the NMI IPI within {} ms",
                c, ms
            ),
        )
    });
    crash.more_cpus(n, "did not answer the NMI IPI");
    // `missing` may be stale by now (a CPU that checked in during the scan above is AnsweredIpi):
    // escalate only to the CPUs still without an answer.
    let candidates = unanswered_mask(state, ncpu);
    if missing != 0 && (0..ncpu).any(|c| state.outcome(c) == CpuOutcome::NeverAnswered) {
        // From here on a check-in is an answer to the reset (its breadcrumb says so). The
        // breadcrumb names the CPUs about to be reset, before the first reset can be answered.
        state.set_escalating();
        crash.crumb(Event::Escalated, cpu, candidates);
        // A CPU that checked in by now answered the IPI after all, just now: no reset (and
        // `stop_self` would ignore one that crossed its check-in).
        crash.settle(ncpu, CpuOutcome::AnsweredIpi, |c| {
            if machine.system_reset_cpu(c) {
                report.escalated += 1;
            }
        });
    }
    if report.escalated != 0 {
        crash.emerg(format_args!(
            "crash: Activate system reset (dumprestart) to stop other cpu(s): system reset sent to {} CPU(s) that did not answer the IPI",
            report.escalated
        ));
        let from = machine.now_ns();
        crash.wait_check_ins(cpu, ncpu, from, cfg, &mut spins, Event::ResetWaitDone);
        let mut n = 0;
        crash.settle(ncpu, CpuOutcome::AnsweredReset, |c| {
            crash.cpu_line(
                &mut n,
                format_args!(
                    "crash: CPU {} did not answer the system reset within {} ms either",
                    c, ms
                ),
            )
        });
        crash.more_cpus(n, "did not answer the system reset either");
    }
    report.wait_spins = spins;
    // Every CPU's outcome breadcrumb on a machine of up to OUTCOME_CRUMBS CPUs; on a larger one
    // the CPUs that did not answer the IPI, the first OUTCOME_CRUMBS of them (the report has all).
    let every_outcome = ncpu <= OUTCOME_CRUMBS;
    let mut outcome_crumbs = 0;
    for c in 0..ncpu {
        let o = state.outcome(c);
        if o == CpuOutcome::NeverAnswered {
            report.not_answered += 1;
        }
        let unusual = !matches!(o, CpuOutcome::Crashing | CpuOutcome::AnsweredIpi);
        if (every_outcome || unusual) && outcome_crumbs < OUTCOME_CRUMBS {
            outcome_crumbs += 1;
            crash.crumb(Event::Outcome, c, o as u8 as u64);
        }
    }
    report.t_ipi_done_ns = machine.now_ns();
    machine.stage(CrashStage::CheckInsDone);
    // The message that deadlocked on logbuf_lock in 2020: here it only appends to this CPU's ring.
    crash.emerg(format_args!("IPI complete"));

    // 2. Mask interrupts (machine_kexec_mask_interrupts) without waiting on the firmware lock.
    report.mask = crash.mask_interrupts(rtas, cpu);
    report.t_masked_ns = machine.now_ns();
    crash.crumb(Event::Masked, cpu, report.mask.masked as u64);
    machine.stage(CrashStage::Masked);

    // 3. Drain (read-only: a CPU that did not stop may still be writing the main log or its rings),
    //    announce, then write the handover image: the final drain, which also takes in whatever a CPU
    //    that checked in late, or never stopped, committed by then.
    let stopped = |c: usize| state.checked_in(c);
    let mut n = 0;
    crash.crumb(Event::DrainStart, cpu, 0);
    report.drains[0] = log
        .drain_on_crash(&stopped, &mut |_, _: &nmilog::RecordBuf| {
            machine.drain_step(DrainStep::Record(n));
            n += 1;
            true
        })
        .unwrap_or_default();
    crash.crumb(Event::DrainEnd, cpu, n);
    machine.stage(CrashStage::Drained);
    let d = report.drains[0];
    crash.emerg(format_args!(
        "crash: log drained: {} records ({} from the main log, {} from the rings), {} torn, {} in flight on {} CPUs that did not stop, {} overwritten, {} steps (bound {})",
        d.records,
        d.from_main,
        d.from_rings,
        d.torn,
        d.in_flight,
        d.not_stopped,
        d.overwritten,
        d.steps,
        d.bound,
    ));
    crash.emerg(format_args!("kexec: Starting switchover sequence."));
    crash.crumb(Event::ImageStart, cpu, 0);
    machine.stage(CrashStage::ImageStart);
    match handover::write_image_with_hook(log, image, &stopped, &mut |s| {
        machine.drain_step(DrainStep::Image(s))
    }) {
        Ok(r) => {
            report.image_len = r.len;
            report.drains[1] = r.drain;
        }
        Err(e) => report.image_error = Some(e),
    }
    crash.crumb(Event::ImageWritten, cpu, report.image_len as u64);
    machine.stage(CrashStage::ImageWritten);
    report.t_switch_ns = machine.now_ns();
    let len = report.image_len.min(image.len());
    crash.crumb(Event::Switchover, cpu, len as u64);
    machine.kexec(&image[..len], &report)
}

/// The CPUs below `ncpu` still without an answer, as a breadcrumb's bit mask (CPUs 0 to 63).
fn unanswered_mask<const CPUS: usize>(state: &CrashState<CPUS>, ncpu: usize) -> u64 {
    (0..ncpu.min(64))
        .filter(|&c| state.outcome(c) == CpuOutcome::NeverAnswered)
        .fold(0u64, |m, c| m | 1 << c)
}

#[cfg(test)]
mod tests;
