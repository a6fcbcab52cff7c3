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
//!  mask interrupts: RTAS / RTAS takeover / presenter (see crate::rtas)
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
use crate::flight::Event;
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
    /// How long to wait for the other CPUs to check in (Linux: 10 s for the crash IPI; the host
    /// simulation uses 1 s).
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
    Crash {
        log,
        machine,
        state,
    }
    .stop_self(regs, "NMI", note)
}

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
        P: Platform,
        M: Machine,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Crash<'_, P, M, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Logs one of the sequence's messages at emerg level. Never blocks: the log is in crash mode,
    /// or this CPU is in NMI context (the per-CPU rings, no lock).
    fn emerg(&self, args: fmt::Arguments<'_>) {
        let _ = self.log.log_fmt(Level::Emerg, 0, args);
    }

    /// Leaves a breadcrumb in the machine's flight recorder, if it has one (no lock, no wait).
    fn crumb(&self, event: Event, cpu: usize, arg: u64) {
        if let Some(fr) = self.machine.flight_recorder() {
            fr.record(event, cpu, self.machine.now_ns(), arg);
        }
    }

    /// Waits until every online CPU but `me` (below `ncpu`) checked in, `deadline` passes or `spins`
    /// reaches the bound. Returns how many are still missing.
    fn wait_check_ins(
        &self,
        me: usize,
        ncpu: usize,
        deadline: u64,
        cfg: &ShutdownConfig,
        spins: &mut u64,
    ) -> usize {
        let (machine, state) = (self.machine, self.state);
        loop {
            let missing = (0..ncpu)
                .filter(|&c| c != me && machine.cpu_online(c) && !state.checked_in(c))
                .count();
            if missing == 0 || *spins >= cfg.max_wait_spins || machine.now_ns() >= deadline {
                return missing;
            }
            *spins += 1;
            machine.relax();
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
        self.crumb(Event::CheckIn, cpu, self.state.escalating() as u64);
        self.state.check_in(cpu, ts, regs, kind, depth);
        machine.park()
    }

    /// Masks every interrupt source before the switchover without waiting on the firmware lock (see
    /// [`crate::rtas`] for the decision), and says how.
    fn mask_interrupts(&self, rtas: &RtasLock, cpu: usize) -> MaskOutcome {
        let (machine, state) = (self.machine, self.state);
        let decision = rtas.crash_acquire(cpu, |c| state.checked_in(c));
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
                let why = match (inside, stopped) {
                    (true, _) => "frozen inside the firmware call",
                    (false, false) => "did not stop",
                    (false, true) => "changed hands",
                };
                self.emerg(format_args!(
                    "kexec: RTAS lock held by CPU {} ({}): RTAS not called (PAPR: calls are serialised); interrupts masked at the presenter (CPPR=0) [mask_path=presenter]",
                    holder as isize, why
                ));
            }
        }
        out
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
    let crash = Crash {
        log,
        machine,
        state,
    };
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
        answered: [false; CPUS],
        not_answered: 0,
        outcome: [CpuOutcome::Absent; CPUS],
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
        report.outcome[c] = if c == cpu {
            CpuOutcome::Crashing
        } else if machine.cpu_online(c) {
            CpuOutcome::NeverAnswered // until it checks in
        } else {
            report.offline += 1;
            CpuOutcome::Offline
        };
    }
    let targets = (0..ncpu.min(64))
        .filter(|&c| report.outcome[c] == CpuOutcome::NeverAnswered)
        .fold(0u64, |m, c| m | 1 << c);
    crash.emerg(format_args!(
        "crash: sending NMI IPI to {} other CPUs",
        ncpu.saturating_sub(1 + report.offline)
    ));
    for c in (0..ncpu).filter(|&c| report.outcome[c] == CpuOutcome::Offline) {
        crash.emerg(format_args!("crash: CPU {} is offline: not waited for", c));
    }

    // 1. Stop everybody else (Linux: crash_kexec_prepare_cpus): the crash IPI and a bounded wait
    //    (timeout and iteration count); then a system reset to each CPU that did not answer and a
    //    second bounded wait; then each CPU's outcome.
    // The breadcrumb goes first: the targets may check in before the machine's call returns.
    crash.crumb(Event::IpiSent, cpu, targets);
    machine.nmi_ipi_all_but_self(cpu);
    machine.stage(CrashStage::IpiSent);
    let mut spins = 0u64;
    let deadline = t_enter.saturating_add(cfg.ack_timeout_ns);
    let missing = crash.wait_check_ins(cpu, ncpu, deadline, cfg, &mut spins);
    crash.crumb(Event::IpiWaitDone, cpu, missing as u64);
    for c in 0..ncpu {
        if report.outcome[c] != CpuOutcome::NeverAnswered {
            continue;
        }
        if state.checked_in(c) {
            report.outcome[c] = CpuOutcome::AnsweredIpi;
            continue;
        }
        crash.emerg(format_args!(
            "crash: CPU {} did not answer the NMI IPI within {} ms",
            c,
            cfg.ack_timeout_ns / 1_000_000
        ));
    }
    // `missing` may be stale by now (a CPU that checked in during the scan above is AnsweredIpi):
    // escalate only to the CPUs still without an answer.
    let candidates = (0..ncpu.min(64))
        .filter(|&c| report.outcome[c] == CpuOutcome::NeverAnswered)
        .fold(0u64, |m, c| m | 1 << c);
    if missing != 0 && (0..ncpu).any(|c| report.outcome[c] == CpuOutcome::NeverAnswered) {
        // From here on a check-in is an answer to the reset (its breadcrumb says so). The
        // breadcrumb names the CPUs about to be reset, before the first reset can be answered.
        state.set_escalating();
        crash.crumb(Event::Escalated, cpu, candidates);
        for c in 0..ncpu {
            if report.outcome[c] != CpuOutcome::NeverAnswered {
                continue;
            }
            if state.checked_in(c) {
                // It answered the IPI after all, just now: no reset (and `stop_self` would ignore
                // one that crossed its check-in).
                report.outcome[c] = CpuOutcome::AnsweredIpi;
                continue;
            }
            if machine.system_reset_cpu(c) {
                report.escalated += 1;
            }
        }
    }
    if report.escalated != 0 {
        crash.emerg(format_args!(
            "crash: Activate system reset (dumprestart) to stop other cpu(s): system reset sent to {} CPU(s) that did not answer the IPI",
            report.escalated
        ));
        let deadline = machine.now_ns().saturating_add(cfg.ack_timeout_ns);
        let still = crash.wait_check_ins(cpu, ncpu, deadline, cfg, &mut spins);
        crash.crumb(Event::ResetWaitDone, cpu, still as u64);
        for c in 0..ncpu {
            if report.outcome[c] != CpuOutcome::NeverAnswered {
                continue;
            }
            if state.checked_in(c) {
                report.outcome[c] = CpuOutcome::AnsweredReset;
            } else {
                crash.emerg(format_args!(
                    "crash: CPU {} did not answer the system reset within {} ms either",
                    c,
                    cfg.ack_timeout_ns / 1_000_000
                ));
            }
        }
    }
    report.wait_spins = spins;
    for c in 0..ncpu {
        let o = report.outcome[c];
        report.answered[c] = o == CpuOutcome::Crashing || o.stopped();
        if o == CpuOutcome::NeverAnswered {
            report.not_answered += 1;
        }
        crash.crumb(Event::Outcome, c, o as u8 as u64);
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

#[cfg(test)]
mod tests {
    //! The whole sequence on one thread: a platform whose CPU number the test switches, and a
    //! machine whose "NMI IPI" runs each responsive CPU's handler right away. `park` and `kexec`
    //! unwind (they must not return), and the test catches the unwinding.
    extern crate std;
    use std::boxed::Box;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::string::{String, ToString};
    use std::vec::Vec;

    use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;
    use crate::machine::RtasArgs;

    static CPU: AtomicUsize = AtomicUsize::new(0);
    static CLOCK: AtomicU64 = AtomicU64::new(1_000);

    struct TestPlatform;
    impl Platform for TestPlatform {
        fn cpu_id(&self) -> usize {
            CPU.load(Ordering::Relaxed)
        }
        fn now_ns(&self) -> u64 {
            CLOCK.fetch_add(10, Ordering::Relaxed)
        }
        fn cpu_count(&self) -> usize {
            4
        }
    }

    type TestLog = Log<TestPlatform, 4, 1024, 8192>;

    struct Parked;
    struct Switched(Vec<u8>, [CpuOutcome; 4], usize);

    struct TestMachine<'a> {
        log: &'a TestLog,
        state: &'a CrashState<4>,
        /// CPUs that take the NMI (the others are deaf).
        responsive: [bool; 4],
        /// CPUs deaf to the NMI that answer the escalation's system reset.
        answers_reset: [bool; 4],
        /// Online CPUs.
        online: [bool; 4],
        firmware_calls: AtomicUsize,
        presenter: AtomicUsize,
        flight: crate::flight::FlightRecorder,
    }

    impl TestMachine<'_> {
        /// CPU `c` takes the NMI (or the reset) now, on this thread, and parks; then back to `me`.
        fn stop(&self, c: usize, me: usize) {
            CPU.store(c, Ordering::Relaxed);
            let r = catch_unwind(AssertUnwindSafe(|| {
                on_nmi_stop(
                    self.log,
                    self,
                    self.state,
                    SavedRegs {
                        pc: 0x100 + c,
                        sp: 0,
                        msr: 0,
                    },
                    format_args!("test"),
                )
            }));
            assert!(r.is_err(), "a stopped CPU must park");
            CPU.store(me, Ordering::Relaxed);
        }
    }

    impl Machine for TestMachine<'_> {
        fn nmi_ipi_all_but_self(&self, me: usize) {
            for c in 0..4 {
                if c != me && self.responsive[c] && self.online[c] {
                    self.stop(c, me);
                }
            }
        }
        fn system_reset_cpu(&self, cpu: usize) -> bool {
            assert!(self.online[cpu], "no reset to an offline CPU");
            if self.answers_reset[cpu] {
                self.stop(cpu, CPU.load(Ordering::Relaxed));
            }
            true
        }
        fn cpu_online(&self, cpu: usize) -> bool {
            self.online[cpu]
        }
        fn flight_recorder(&self) -> Option<&crate::flight::FlightRecorder> {
            Some(&self.flight)
        }
        fn now_ns(&self) -> u64 {
            CLOCK.fetch_add(10, Ordering::Relaxed)
        }
        fn irq_source_count(&self) -> usize {
            3
        }
        fn firmware_mask_source(&self, _src: usize, _args: &RtasArgs) -> Result<(), i32> {
            self.firmware_calls.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn mask_at_presenter(&self) {
            self.presenter.fetch_add(1, Ordering::Relaxed);
        }
        fn park(&self) -> ! {
            std::panic::panic_any(Parked)
        }
        fn kexec<const CPUS: usize>(&self, image: &[u8], report: &ShutdownReport<CPUS>) -> ! {
            assert!(report.image_error.is_none());
            let mut o = [CpuOutcome::Absent; 4];
            o.copy_from_slice(&report.outcome[..4]);
            std::panic::panic_any(Switched(image.to_vec(), o, report.not_answered))
        }
    }

    /// Runs the sequence from CPU 0 and returns the recovered texts and the machine's counters.
    fn crash_once(rtas: &RtasLock, responsive: [bool; 4]) -> (Vec<String>, usize, usize) {
        let r = crash_full(rtas, responsive, [false; 4], [true; 4]);
        (r.texts, r.firmware_calls, r.presenter)
    }

    /// What one run of the sequence left.
    struct Run {
        texts: Vec<String>,
        firmware_calls: usize,
        presenter: usize,
        outcome: [CpuOutcome; 4],
        not_answered: usize,
        /// (event, cpu, arg) of every breadcrumb, oldest first.
        crumbs: Vec<(crate::flight::Event, u32, u64)>,
    }

    fn crash_full(
        rtas: &RtasLock,
        responsive: [bool; 4],
        answers_reset: [bool; 4],
        online: [bool; 4],
    ) -> Run {
        // The tests share the CPU-number switch: one at a time.
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let log: &'static TestLog = Box::leak(Box::new(TestLog::new(TestPlatform)));
        let state: &'static CrashState<4> = Box::leak(Box::new(CrashState::new()));
        for c in 0..4 {
            CPU.store(c, Ordering::Relaxed);
            let _ = log.log_fmt(Level::Info, 0, format_args!("cpu={} n=0", c));
        }
        CPU.store(0, Ordering::Relaxed);
        let m = TestMachine {
            log,
            state,
            responsive,
            answers_reset,
            online,
            firmware_calls: AtomicUsize::new(0),
            presenter: AtomicUsize::new(0),
            flight: crate::flight::FlightRecorder::new(),
        };
        let mut image = std::vec![0u8; 1 << 16];
        let cfg = ShutdownConfig {
            ack_timeout_ns: 1_000,
            max_wait_spins: 1_000,
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            crash_shutdown(log, &m, state, rtas, &mut image, &cfg, format_args!("test"))
        }));
        let Err(payload) = r else {
            panic!("crash_shutdown never returns")
        };
        let Ok(switched) = payload.downcast::<Switched>() else {
            panic!("kexec not reached")
        };
        let Switched(bytes, outcome, not_answered) = *switched;
        let img = handover::parse(&bytes).expect("a valid image");
        let texts = img
            .records()
            .filter_map(|r| r.text().map(|t| t.to_string()))
            .collect();
        let crumbs = m
            .flight
            .iter()
            .map(|b| {
                assert!(b.whole);
                (b.event.expect("a known event"), b.cpu, b.arg)
            })
            .collect();
        Run {
            texts,
            firmware_calls: m.firmware_calls.load(Ordering::Relaxed),
            presenter: m.presenter.load(Ordering::Relaxed),
            outcome,
            not_answered,
            crumbs,
        }
    }

    #[test]
    fn escalation_outcomes_and_flight_recorder() {
        use crate::flight::Event as E;
        use CpuOutcome::*;
        // CPU 1 answers the IPI; CPU 2 only the system reset; CPU 3 neither.
        let r = crash_full(
            &RtasLock::new(),
            [true, true, false, false],
            [false, false, true, false],
            [true; 4],
        );
        assert_eq!(
            r.outcome,
            [Crashing, AnsweredIpi, AnsweredReset, NeverAnswered]
        );
        assert_eq!(r.not_answered, 1);
        let t = &r.texts;
        assert!(has(t, "crash: CPU 2 did not answer the NMI IPI"), "{t:?}");
        assert!(has(t, "Activate system reset (dumprestart)"));
        assert!(has(t, "system reset sent to 2 CPU(s)"));
        assert!(has(t, "crash: CPU 3 did not answer the system reset"));
        assert!(!has(t, "crash: CPU 2 did not answer the system reset"));
        assert!(has(t, "CPU 2 stopped"));
        // The timeline, in order.
        let ev: Vec<_> = r.crumbs.iter().map(|c| c.0).collect();
        let at = |e: E| {
            ev.iter()
                .position(|x| *x == e)
                .unwrap_or_else(|| panic!("no {} breadcrumb", e.name()))
        };
        assert_eq!(r.crumbs[0], (E::Entered, 0, 4));
        assert_eq!(r.crumbs[at(E::IpiSent)], (E::IpiSent, 0, 0b1110));
        assert!(r.crumbs.contains(&(E::CheckIn, 1, 0)));
        assert!(
            r.crumbs.contains(&(E::CheckIn, 2, 1)),
            "after the escalation"
        );
        assert!(!r.crumbs.iter().any(|c| c.0 == E::CheckIn && c.1 == 3));
        assert_eq!(r.crumbs[at(E::IpiWaitDone)].2, 2);
        assert_eq!(r.crumbs[at(E::Escalated)].2, 0b1100);
        assert_eq!(r.crumbs[at(E::ResetWaitDone)].2, 1);
        assert!(r.crumbs.contains(&(E::Outcome, 2, AnsweredReset as u64)));
        assert_eq!(r.crumbs[at(E::MaskPath)].2, 0);
        let order = [
            E::Entered,
            E::IpiSent,
            E::IpiWaitDone,
            E::Escalated,
            E::ResetWaitDone,
            E::Outcome,
            E::MaskPath,
            E::Masked,
            E::DrainStart,
            E::DrainEnd,
            E::ImageStart,
            E::ImageWritten,
            E::Switchover,
        ];
        for w in order.windows(2) {
            assert!(at(w[0]) < at(w[1]), "{:?} before {:?}", w[0], w[1]);
        }
        assert_eq!(*ev.last().unwrap(), E::Switchover);
    }

    #[test]
    fn offline_cpus_are_not_waited_for() {
        use CpuOutcome::*;
        let r = crash_full(
            &RtasLock::new(),
            [true; 4],
            [false; 4],
            [true, true, true, false],
        );
        assert_eq!(r.outcome, [Crashing, AnsweredIpi, AnsweredIpi, Offline]);
        assert_eq!(r.not_answered, 0);
        assert!(has(&r.texts, "crash: CPU 3 is offline: not waited for"));
        assert!(has(&r.texts, "sending NMI IPI to 2 other CPUs"));
        assert!(!has(&r.texts, "did not answer"));
        assert!(!r
            .crumbs
            .iter()
            .any(|c| c.0 == crate::flight::Event::Escalated));
    }

    fn has(texts: &[String], s: &str) -> bool {
        texts.iter().any(|t| t.contains(s))
    }

    #[test]
    fn takeover_from_a_cpu_frozen_outside_the_call() {
        let rtas = RtasLock::new();
        rtas.lock(1);
        let (t, fw, pres) = crash_once(&rtas, [true, true, true, false]);
        for s in [
            "cpu=0 n=0",
            "cpu=3 n=0",
            "CPU 1 stopped (NMI in task context; test)",
            "CPU 2 stopped",
            "crash: CPU 3 did not answer the NMI IPI",
            "IPI complete",
            "[mask_path=rtas-takeover]",
            "kexec: Starting switchover sequence.",
        ] {
            assert!(has(&t, s), "missing {s:?} in {t:?}");
        }
        assert!(!has(&t, "CPU 3 stopped"));
        assert_eq!((fw, pres), (3, 0));
        // Log order: IPI complete before masking before the switchover message.
        let at = |s: &str| t.iter().position(|x| x.contains(s)).unwrap();
        assert!(
            at("IPI complete") < at("[mask_path=") && at("[mask_path=") < at("kexec: Starting")
        );
    }

    #[test]
    fn presenter_when_the_holder_is_inside_the_call() {
        let rtas = RtasLock::new();
        rtas.lock(2);
        rtas.enter_call(2);
        let (t, fw, pres) = crash_once(&rtas, [true; 4]);
        assert!(has(&t, "[mask_path=presenter]"), "{t:?}");
        assert!(has(&t, "frozen inside the firmware call"));
        assert_eq!((fw, pres), (0, 1));
        assert_eq!(rtas.holder(), Some((2, true)), "the lock is left alone");
    }

    #[test]
    fn presenter_when_the_holder_did_not_stop() {
        let rtas = RtasLock::new();
        rtas.lock(3);
        let (t, fw, pres) = crash_once(&rtas, [true, true, true, false]);
        assert!(has(&t, "did not stop"), "{t:?}");
        assert_eq!((fw, pres), (0, 1));
    }

    #[test]
    fn plain_rtas_when_the_lock_is_free() {
        let rtas = RtasLock::new();
        let (t, fw, pres) = crash_once(&rtas, [true; 4]);
        assert!(has(&t, "[mask_path=rtas]"), "{t:?}");
        assert_eq!((fw, pres), (3, 0));
        assert_eq!(rtas.holder(), None);
    }

    #[test]
    fn lock_decisions() {
        let l = RtasLock::new();
        assert_eq!(l.crash_acquire(0, |_| true), CrashAcquire::Acquired);
        let l = RtasLock::new();
        l.lock(0);
        assert_eq!(l.crash_acquire(0, |_| true), CrashAcquire::AlreadyOwn);
        l.enter_call(0);
        assert!(!l.crash_acquire(0, |_| true).may_call_firmware());
        let l = RtasLock::new();
        l.lock(1);
        assert_eq!(
            l.crash_acquire(0, |_| false),
            CrashAcquire::Unsafe {
                holder: 1,
                inside: false,
                stopped: false
            }
        );
        assert_eq!(l.holder(), Some((1, false)));
        l.leave_call(1);
        l.unlock(1);
        assert!(l.try_lock(2));
        assert!(!l.try_lock(3));
    }
}
