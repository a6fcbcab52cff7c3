//! Run-time scenario selection: `-append "scenario=NAME"` puts the string in /chosen `bootargs` (QEMU's
//! sPAPR machine writes the kernel command line there, also under VOF), read at boot through the client
//! interface. `die=POINT` gives the `die-in-drain` scenario its death point (`death_point`).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Kind {
    /// CPU 2 frozen mid-log-write, CPU 3 frozen holding the RTAS lock (outside the call proper).
    Default,
    /// CPU 2 frozen mid-log-write.
    FreezeInLog,
    /// CPU 3 frozen holding the RTAS lock, outside the firmware call proper.
    RtasHeld,
    /// CPU 3 frozen holding the RTAS lock, inside the firmware call proper.
    RtasInCall,
    /// CPU 1 never answers the NMI (it cleared SPRG0, so the 0x100 entry parks it at once, without
    /// logging or checking in): the crashing CPU's bounded wait times out.
    Deaf,
    /// CPU 1 never gets the crash NMI (the IPI to it is lost, as to a vCPU the hypervisor did not
    /// run in time) and keeps logging in task and interrupt context through the crash and after the
    /// image; CPU 2 frozen mid-log-write as in `freeze-in-log`. The crash drain reads what CPU 1 is
    /// still writing.
    DeafLogging,
    /// CPU 2 frozen mid-log-write as in `freeze-in-log`; the crashing CPU dies at the `die=` point of
    /// its crash path (a system reset it never returns from) and the capture stage rebuilds the log
    /// from memory (`death`, `fadump`).
    DieInDrain,
    /// CPU 1 in a hard lockup (spinning with interrupts off) when the crash comes: the crash IPI,
    /// maskable on Linux (`smp_send_nmi_ipi` with `safe = false` sends `PPC_MSG_NMI_IPI`, an external
    /// interrupt), never reaches it — modelled by not sending it that CPU's system reset — so the
    /// bounded wait times out and the crash path escalates to a system reset, which stops it.
    /// CPU 2 frozen mid-log-write as in `freeze-in-log`.
    HardLockup,
    /// CPU 1 takes a machine check during the crash path: after it checked in, once the crashing
    /// CPU has started its drain (`exceptions::inject_machine_check`: QEMU's TCG cannot raise one).
    /// Its handler (`crash::machine_check`) leaves a breadcrumb and a log record on the NMI-safe
    /// path and returns; CPU 1 then goes on to the kexec handshake. CPU 2 frozen mid-log-write as
    /// in `freeze-in-log`.
    MachineCheck,
    /// The 2020 locked design (global log-buffer spinlock, RTAS lock on the mask path), with CPU 2
    /// frozen holding the log-buffer lock and CPU 3 holding the RTAS lock. Must deadlock.
    Baseline,
    /// The 2020 RTAS locking (the mask path waits for the RTAS lock) with CPU 3 frozen holding it,
    /// while every CPU logs through the lock-free path: nothing can hold `logbuf_lock` at the crash,
    /// so the only lock that can hang the crash path is the RTAS lock — deterministically.
    BaselineRtas,
    /// The whole 2020 design (every CPU logs under `logbuf_lock`, the mask path waits for the RTAS
    /// lock) with CPU 3 frozen holding the RTAS lock: the NMI may also stop another CPU inside a
    /// `printk` holding `logbuf_lock`, so the crash path hangs on whichever lock it meets first.
    /// The check accepts either and names the one hit.
    BaselineRace,
}

impl Kind {
    /// Every scenario.
    pub const ALL: [Kind; 12] = [
        Kind::Default,
        Kind::FreezeInLog,
        Kind::RtasHeld,
        Kind::RtasInCall,
        Kind::Deaf,
        Kind::DeafLogging,
        Kind::DieInDrain,
        Kind::HardLockup,
        Kind::MachineCheck,
        Kind::Baseline,
        Kind::BaselineRtas,
        Kind::BaselineRace,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Default => "default",
            Kind::FreezeInLog => "freeze-in-log",
            Kind::RtasHeld => "rtas-held",
            Kind::RtasInCall => "rtas-in-call",
            Kind::Deaf => "deaf",
            Kind::DeafLogging => "deaf-logging",
            Kind::DieInDrain => "die-in-drain",
            Kind::HardLockup => "hard-lockup",
            Kind::MachineCheck => "machine-check",
            Kind::Baseline => "baseline",
            Kind::BaselineRtas => "baseline-rtas",
            Kind::BaselineRace => "baseline-race",
        }
    }

    fn freezes_in_log(self) -> bool {
        matches!(
            self,
            Kind::Default
                | Kind::FreezeInLog
                | Kind::DeafLogging
                | Kind::DieInDrain
                | Kind::HardLockup
                | Kind::MachineCheck
                | Kind::Baseline
        )
    }
    fn holds_rtas(self) -> bool {
        matches!(
            self,
            Kind::Default
                | Kind::RtasHeld
                | Kind::RtasInCall
                | Kind::Baseline
                | Kind::BaselineRtas
                | Kind::BaselineRace
        )
    }
}

const NONE: usize = usize::MAX;

// Written once by the boot CPU before it starts the secondaries (RTAS start-cpu orders the stores
// before their first instruction: the lock's Release/Acquire pair and the hypervisor's synchronisation).
static KIND: AtomicUsize = AtomicUsize::new(0);
static FREEZE_CPU: AtomicUsize = AtomicUsize::new(NONE);
static RTAS_CPU: AtomicUsize = AtomicUsize::new(NONE);
static RTAS_IN_CALL: AtomicBool = AtomicBool::new(false);
static DEAF_CPU: AtomicUsize = AtomicUsize::new(NONE);

/// Finds `scenario=NAME` in the command line. `Err(name)` for an unknown name.
pub fn parse(cmdline: &[u8]) -> Result<Kind, &[u8]> {
    for word in cmdline.split(|&b| b == b' ' || b == b'\t' || b == b'\n') {
        if let Some(name) = word.strip_prefix(b"scenario=") {
            return Kind::ALL
                .into_iter()
                .find(|k| k.name().as_bytes() == name)
                .ok_or(name);
        }
    }
    Ok(Kind::Default)
}

/// The value of `die=` in the command line, if there is one.
pub fn die_arg(cmdline: &[u8]) -> Option<&[u8]> {
    cmdline
        .split(|&b| b == b' ' || b == b'\t' || b == b'\n')
        .find_map(|w| w.strip_prefix(b"die="))
}

/// Sets the scenario for `ncpus` CPUs: the log writer frozen is CPU 2 (CPU 1 with 2 CPUs), the RTAS
/// holder CPU 3 (the last CPU with fewer; none if that is the frozen writer).
pub fn set(kind: Kind, ncpus: usize) {
    KIND.store(kind as usize, Ordering::Relaxed);
    let freeze = if kind.freezes_in_log() && ncpus >= 2 {
        ncpus.min(3) - 1
    } else {
        NONE
    };
    let rtas = if kind.holds_rtas() && ncpus >= 2 {
        ncpus.min(4) - 1
    } else {
        NONE
    };
    FREEZE_CPU.store(freeze, Ordering::Relaxed);
    RTAS_CPU.store(if rtas == freeze { NONE } else { rtas }, Ordering::Relaxed);
    RTAS_IN_CALL.store(kind == Kind::RtasInCall, Ordering::Relaxed);
    DEAF_CPU.store(
        if kind == Kind::Deaf && ncpus >= 2 {
            1
        } else {
            NONE
        },
        Ordering::Relaxed,
    );
}

/// The CPU the crash NMI never reaches, which keeps logging (`deaf-logging`).
pub fn deaf_logging_cpu(ncpus: usize) -> Option<usize> {
    (kind() == Kind::DeafLogging && ncpus >= 3).then_some(1)
}

/// The CPU in a hard lockup (`hard-lockup`): spins with interrupts off; the crash IPI does not
/// reach it, the escalation's system reset does.
pub fn hard_lockup_cpu(ncpus: usize) -> Option<usize> {
    (kind() == Kind::HardLockup && ncpus >= 3).then_some(1)
}

/// The CPU that takes a machine check during the crash path (`machine-check`).
pub fn machine_check_cpu(ncpus: usize) -> Option<usize> {
    (kind() == Kind::MachineCheck && ncpus >= 3).then_some(1)
}

/// The CPU that never answers the NMI.
pub fn deaf_cpu() -> Option<usize> {
    Some(DEAF_CPU.load(Ordering::Relaxed)).filter(|&c| c != NONE)
}

/// The scenario.
pub fn kind() -> Kind {
    Kind::ALL[KIND.load(Ordering::Relaxed)]
}

/// The CPU frozen in the middle of a log write (in the baseline: holding the log-buffer lock).
pub fn freeze_cpu() -> Option<usize> {
    Some(FREEZE_CPU.load(Ordering::Relaxed)).filter(|&c| c != NONE)
}

/// The CPU frozen holding the RTAS lock.
pub fn rtas_cpu() -> Option<usize> {
    Some(RTAS_CPU.load(Ordering::Relaxed)).filter(|&c| c != NONE)
}

/// Whether the RTAS holder is frozen inside the firmware call proper.
pub fn rtas_in_call() -> bool {
    RTAS_IN_CALL.load(Ordering::Relaxed)
}

/// The crash path is the locked 2020 one (its messages under `logbuf_lock`, masking under the RTAS
/// lock).
pub fn baseline() -> bool {
    matches!(
        kind(),
        Kind::Baseline | Kind::BaselineRtas | Kind::BaselineRace
    )
}

/// Task and interrupt context log through the 2020 `printk` (under `logbuf_lock`). Not in
/// `baseline-rtas`, whose CPUs log lock-free so that only the RTAS lock can deadlock it.
pub fn locked_printk() -> bool {
    matches!(kind(), Kind::Baseline | Kind::BaselineRace)
}
