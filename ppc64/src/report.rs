//! What the crash sequence reports: how interrupts were masked ([`MaskPath`], [`MaskOutcome`]) and
//! the whole run ([`ShutdownReport`]), which [`crash_shutdown`](crate::crash_shutdown) hands to
//! [`Machine::kexec`](crate::Machine::kexec) with the image.

use nmilog::handover::HandoverError;
use nmilog::DrainReport;

use crate::rtas::CrashAcquire;

/// How interrupts were masked before the switchover.
///
/// ```
/// use nmilog_ppc64::{CrashAcquire, MaskPath};
/// // The path follows from the firmware-lock decision:
/// let path = |d: CrashAcquire| match d {
///     CrashAcquire::TakenOver { .. } => MaskPath::RtasTakeover,
///     d if d.may_call_firmware() => MaskPath::Rtas,
///     _ => MaskPath::Presenter,
/// };
/// assert_eq!(path(CrashAcquire::Acquired), MaskPath::Rtas);
/// assert_eq!(path(CrashAcquire::TakenOver { from: 2 }), MaskPath::RtasTakeover);
/// let inside = CrashAcquire::Unsafe { holder: 2, inside: true, stopped: true };
/// assert_eq!(path(inside), MaskPath::Presenter);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskPath {
    /// Through RTAS `ibm,int-off`; the firmware lock was free (or already the crashing CPU's).
    Rtas,
    /// Through RTAS, after taking the lock over from a CPU frozen outside the firmware call.
    RtasTakeover,
    /// At the interrupt presenter: RTAS could not be called without breaking PAPR.
    Presenter,
    /// Through hypervisor calls that take no firmware lock (XIVE: `H_INT_SET_SOURCE_CONFIG` with
    /// priority 0xff), whoever holds the RTAS lock ([`crate::Machine::masks_through_hypervisor`]).
    Hypervisor,
}

impl MaskPath {
    /// `"rtas"`, `"rtas-takeover"`, `"presenter"` or `"hcall"`.
    ///
    /// ```
    /// use nmilog_ppc64::MaskPath;
    /// assert_eq!(MaskPath::Rtas.name(), "rtas");
    /// assert_eq!(MaskPath::RtasTakeover.name(), "rtas-takeover");
    /// assert_eq!(MaskPath::Presenter.name(), "presenter");
    /// assert_eq!(MaskPath::Hypervisor.name(), "hcall");
    /// // The names are what the crash log's `[mask_path=…]` tag says.
    /// assert_eq!(format!("[mask_path={}]", MaskPath::Presenter.name()), "[mask_path=presenter]");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            MaskPath::Rtas => "rtas",
            MaskPath::RtasTakeover => "rtas-takeover",
            MaskPath::Presenter => "presenter",
            MaskPath::Hypervisor => "hcall",
        }
    }
}

/// What the masking step did.
///
/// ```
/// # use nmilog::{host::HostPlatform, Log};
/// # use nmilog_ppc64::*;
/// # use nmilog_ppc64::doc_support::{crash, start, FakeMachine};
/// # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
/// # static STATE: CrashState<2> = CrashState::new();
/// # start(); // quiet unwinding; this thread is CPU 0
/// // CPU 1 is frozen holding the RTAS lock, but outside the firmware call: taken over.
/// let rtas = RtasLock::new();
/// rtas.lock(1);
/// let (_, report) = crash(&FakeMachine::new(&LOG, &STATE), &rtas, &ShutdownConfig::new());
/// let m: MaskOutcome = report.mask;
/// assert_eq!(m.path, MaskPath::RtasTakeover);
/// assert_eq!(m.decision, CrashAcquire::TakenOver { from: 1 });
/// assert_eq!((m.masked, m.failed), (3, 0)); // all three sources through RTAS
/// assert_eq!(rtas.holder(), None); // released after masking
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskOutcome {
    /// The path taken.
    pub path: MaskPath,
    /// The firmware-lock decision behind it.
    pub decision: CrashAcquire,
    /// Sources masked through firmware.
    pub masked: usize,
    /// Sources whose firmware call failed.
    pub failed: usize,
}

/// What became of one CPU during the crash's stop phase (Linux: `crash_kexec_prepare_cpus()`,
/// then the system reset it asks for).
///
/// ```
/// use nmilog_ppc64::CpuOutcome;
/// assert_eq!(CpuOutcome::AnsweredReset.name(), "answered the system reset");
/// assert!(CpuOutcome::AnsweredIpi.stopped() && CpuOutcome::AnsweredReset.stopped());
/// assert!(!CpuOutcome::NeverAnswered.stopped() && !CpuOutcome::Offline.stopped());
/// assert_eq!(CpuOutcome::from_code(CpuOutcome::Offline as u8), Some(CpuOutcome::Offline));
/// assert_eq!(CpuOutcome::from_code(200), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum CpuOutcome {
    /// Not a CPU of this system (beyond the CPU count).
    #[default]
    Absent = 0,
    /// The crashing CPU itself.
    Crashing = 1,
    /// Checked in after the crash IPI, within the first bounded wait.
    AnsweredIpi = 2,
    /// Did not answer the crash IPI; checked in after the escalation's system reset.
    AnsweredReset = 3,
    /// Checked in neither after the IPI nor after the system reset (or none could be sent).
    NeverAnswered = 4,
    /// Offline when the crash began: not sent anything, not waited for.
    Offline = 5,
}

impl CpuOutcome {
    /// The outcome with encoding `code`, if any.
    pub const fn from_code(code: u8) -> Option<CpuOutcome> {
        Some(match code {
            0 => CpuOutcome::Absent,
            1 => CpuOutcome::Crashing,
            2 => CpuOutcome::AnsweredIpi,
            3 => CpuOutcome::AnsweredReset,
            4 => CpuOutcome::NeverAnswered,
            5 => CpuOutcome::Offline,
            _ => return None,
        })
    }

    /// What it says in a report.
    pub const fn name(self) -> &'static str {
        match self {
            CpuOutcome::Absent => "absent",
            CpuOutcome::Crashing => "crashing CPU",
            CpuOutcome::AnsweredIpi => "answered the crash IPI",
            CpuOutcome::AnsweredReset => "answered the system reset",
            CpuOutcome::NeverAnswered => "never answered",
            CpuOutcome::Offline => "offline",
        }
    }

    /// Whether the CPU is stopped for good (checked in, after the IPI or the reset).
    pub const fn stopped(self) -> bool {
        matches!(self, CpuOutcome::AnsweredIpi | CpuOutcome::AnsweredReset)
    }
}

/// What [`crash_shutdown`](crate::crash_shutdown) did, handed to
/// [`Machine::kexec`](crate::Machine::kexec) with the image.
///
/// ```
/// # use nmilog::{host::HostPlatform, Log};
/// # use nmilog_ppc64::*;
/// # use nmilog_ppc64::doc_support::{crash, start, FakeMachine};
/// # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
/// # static STATE: CrashState<2> = CrashState::new();
/// # start(); // quiet unwinding; this thread is CPU 0
/// // CPU 1 never answers the NMI: the wait ends at the timeout (or the spin bound).
/// let cfg = ShutdownConfig { ack_timeout_ns: 2_000_000, max_wait_spins: 100_000 };
/// let (image, r) = crash(&FakeMachine::deaf(&LOG, &STATE), &RtasLock::new(), &cfg);
/// assert_eq!((r.crash_cpu, r.cpus), (0, 2));
/// assert_eq!((STATE.answered(0), STATE.answered(1)), (true, false));
/// assert_eq!(r.not_answered, 1);
/// assert_eq!(STATE.outcome(0), CpuOutcome::Crashing);
/// assert_eq!(STATE.outcome(1), CpuOutcome::NeverAnswered);
/// assert_eq!((r.escalated, r.offline), (0, 0)); // this machine cannot send a system reset
/// assert!(r.wait_spins <= cfg.max_wait_spins);
/// assert!(r.t_enter_ns <= r.t_ipi_done_ns && r.t_ipi_done_ns <= r.t_masked_ns);
/// assert!(r.t_masked_ns <= r.t_switch_ns);
/// assert_eq!(r.mask.path, MaskPath::Rtas); // the lock was free
/// assert!(r.drains[0].steps <= r.drains[0].bound);
/// assert_eq!((r.image_len, r.image_error), (image.len(), None));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ShutdownReport<const CPUS: usize> {
    /// The crashing CPU.
    pub crash_cpu: usize,
    /// CPUs in the system.
    pub cpus: usize,
    /// Crash entry.
    pub t_enter_ns: u64,
    /// The check-in wait ended.
    pub t_ipi_done_ns: u64,
    /// Interrupts masked.
    pub t_masked_ns: u64,
    /// Image written, about to switch over.
    pub t_switch_ns: u64,
    /// How many CPUs did not check in (after the escalation too; offline CPUs are not counted).
    /// Each CPU's outcome (the IPI, the escalation's system reset, never, offline) and whether it
    /// answered are in the [`CrashState`](crate::CrashState) the sequence ran with
    /// ([`CrashState::outcome`](crate::CrashState::outcome),
    /// [`CrashState::answered`](crate::CrashState::answered)): a report of fixed size whatever
    /// `CPUS`, so that the crashing CPU's stack does not grow with the CPU count.
    pub not_answered: usize,
    /// CPUs a system reset was sent to because they did not answer the crash IPI in time.
    pub escalated: usize,
    /// CPUs offline at the crash (not waited for).
    pub offline: usize,
    /// Iterations of the check-in wait.
    pub wait_spins: u64,
    /// The masking step.
    pub mask: MaskOutcome,
    /// The two crash drains: the first (before the switchover message), and the one that wrote the
    /// handover image.
    pub drains: [DrainReport; 2],
    /// Bytes of handover image written (0 on error).
    pub image_len: usize,
    /// Why the image could not be written, if it could not.
    pub image_error: Option<HandoverError>,
}
