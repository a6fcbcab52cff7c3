//! The glue that runs the portable crash-shutdown sequence (`nmilog_ppc64::crash_shutdown`) on this
//! image, with the pseries machine (`machine`): the crash entry, and the system-reset handler of the
//! CPUs it stops.
//!
//! Every CPU runs `system_reset` from the 0x100 handler; the stopped CPUs (own NMI stack): it hands the interrupted
//! registers to `nmilog_ppc64::on_nmi_stop`, which enters NMI context, logs "CPU n stopped", saves
//! them into the crash state, checks in (Release; the crashing CPU Acquire-loads it, with a timebase
//! bound) and parks. No console output from NMI or crash context: everything goes to nmilog (the
//! only exceptions are the failure exits' last words before power-off, through the lockless
//! `console::write_bytes`; see `console`).

use nmilog_ppc64::{Machine, ShutdownConfig};

use crate::bootparams::{HANDOVER_BASE, HANDOVER_SIZE};
use crate::crash_state::{CHECKIN_TIMEOUT_NS, STATE};
use crate::klog::LOG;
use crate::machine::MACHINE;
use crate::percpu::SavedRegs;
use crate::{baseline, crash_notes, fadump, irq, rtas, scenario};

/// The system-reset handler. Runs on the CPU's own NMI stack. In order:
/// * the firmware is stopping every CPU (`fadump`): park at once, running nothing of the kernel;
/// * the reset hit the CPU that runs the crash sequence: the crash path was interrupted (it never
///   takes a reset otherwise: every NMI it sends skips itself), so do what firmware-assisted dump
///   does — the capture stage with nothing but memory (`fadump::crash_path_interrupted`);
/// * otherwise this is the crash NMI on a CPU the crash sequence stops: log, check in, park.
pub fn system_reset(cpu: usize, saved: &SavedRegs) -> ! {
    if fadump::firmware_stopping() {
        fadump::stopped_in_place()
    }
    if LOG.crashing_cpu() == Some(cpu) {
        fadump::crash_path_interrupted(cpu, saved)
    }
    // Linux's `crash_save_cpu` in `crash_ipi_callback`: the interrupted registers as this CPU's
    // crash note, before the check-in publishes them (its Release, LMM(checkin:A), orders them too).
    // (A second reset on this CPU finds its note written: the first save wins.)
    if LOG.crashing_cpu().is_some() {
        let note = SavedRegs {
            trap: SYSTEM_RESET_TRAP,
            ..*saved
        };
        crash_notes::save(cpu, &note);
    }
    let regs = nmilog_ppc64::SavedRegs {
        pc: saved.nip as usize,
        sp: saved.gpr[1] as usize,
        msr: saved.msr as usize,
    };
    // Returns only if no crash is in progress (a stray system reset): then just park.
    nmilog_ppc64::on_nmi_stop(
        &LOG,
        &MACHINE,
        &STATE,
        regs,
        format_args!("nip {:#x} lr {:#x}", saved.nip, saved.lr),
    );
    MACHINE.park()
}

/// SRR1[RI] at a machine check: the interrupted state (SRR0/SRR1) was saved, so returning resumes it.
const SRR1_RI: u64 = 1 << 1;

/// The machine-check handler (0x200, `irq::machine_check_rust`), nested one NMI level above
/// whatever it interrupted. It takes no lock and touches nothing shared but the flight recorder
/// (lock-free) and its own CPU's ring (the NMI-safe path):
/// * a breadcrumb in the flight recorder, so the capture stage's timeline shows it even when it
///   comes after the crash drain read this CPU's rings;
/// * a log record (nested NMI context: it goes to this CPU's next ring up; the drain reads it whole,
///   counts it torn, or never sees it if it already passed — never a half record as valid);
/// * recoverable (SRR1[RI] = 1): returns, and the interrupted code — on a stopped CPU, its wait for
///   the crashing CPU's go — resumes; its crash note, saved at the NMI, stays as it was;
/// * not recoverable: on a CPU the crash stopped, it stays stopped (parks, outside the kexec
///   handshake; Linux's die() on a CPU whose crash IPI already came ends the same way); on the
///   crashing CPU, the crash path is dead
///   and the firmware-assisted dump takes over (`fadump`); with no crash in progress it is the
///   crash.
pub fn machine_check(cpu: usize, srr0: u64, srr1: u64) {
    if let Some(fr) = MACHINE.flight_recorder() {
        fr.record(
            nmilog_ppc64::flight::Event::MachineCheck,
            cpu,
            MACHINE.now_ns(),
            srr0,
        );
    }
    let recoverable = srr1 & SRR1_RI != 0;
    nmilog::pr_emerg!(
        "machine check on CPU {cpu}: nip {srr0:#x} srr1 {srr1:#x}{}",
        if recoverable {
            ", recoverable: resuming"
        } else {
            ", not recoverable"
        }
    );
    if recoverable {
        return;
    }
    match LOG.crashing_cpu() {
        // The crash path itself cannot go on: as when a system reset interrupts it, the
        // firmware-assisted dump takes over (the other CPUs stopped in place, the capture stage
        // rebuilds the log from memory).
        Some(c) if c == cpu => {
            let regs = SavedRegs {
                nip: srr0,
                msr: srr1,
                trap: MACHINE_CHECK_TRAP,
                ..SavedRegs::ZERO
            };
            fadump::crash_path_interrupted(cpu, &regs)
        }
        // Its state is gone: it stays stopped here, not handed to the capture stage (which then
        // reports it as never reaching the hold).
        Some(_) => crate::exceptions::park(),
        None => crash_shutdown("unrecoverable machine check"),
    }
}

/// The `trap` of a machine check (its vector).
const MACHINE_CHECK_TRAP: u64 = 0x200;

// The handover region holds any image of the kernel log (nothing is ever left out for lack of room;
// nor from the image the capture stage rebuilds from memory): `klog::ring_words_for` sizes the rings
// at boot so that it does.

/// The `trap` of a note saved by the system-reset handler (its vector).
const SYSTEM_RESET_TRAP: u64 = 0x100;

/// This CPU's registers here (Linux's `ppc_save_regs`): r0..r31, LR, CTR, CR, XER and MSR as they
/// are at the call, NIP = the instruction after the save; `trap` 0 (saved by a call, not an
/// interrupt).
#[inline(never)]
fn current_regs() -> SavedRegs {
    let mut s = SavedRegs::ZERO;
    let p: *mut SavedRegs = &mut s;
    // SAFETY: every store is into `s` (`p` points at it; the offsets are its fields', inside it);
    // `bl 1f` only sets LR, declared clobbered; nothing else changes.
    unsafe {
        core::arch::asm!(
            "std 0, 0({p})", "std 1, 8({p})", "std 2, 16({p})", "std 3, 24({p})",
            "std 4, 32({p})", "std 5, 40({p})", "std 6, 48({p})", "std 7, 56({p})",
            "std 8, 64({p})", "std 9, 72({p})", "std 10, 80({p})", "std 11, 88({p})",
            "std 12, 96({p})", "std 13, 104({p})", "std 14, 112({p})", "std 15, 120({p})",
            "std 16, 128({p})", "std 17, 136({p})", "std 18, 144({p})", "std 19, 152({p})",
            "std 20, 160({p})", "std 21, 168({p})", "std 22, 176({p})", "std 23, 184({p})",
            "std 24, 192({p})", "std 25, 200({p})", "std 26, 208({p})", "std 27, 216({p})",
            "std 28, 224({p})", "std 29, 232({p})", "std 30, 240({p})", "std 31, 248({p})",
            "mflr {t}",
            "std {t}, {lr}({p})",
            "mfctr {t}",
            "std {t}, {ctr}({p})",
            "mfcr {t}",
            "std {t}, {cr}({p})",
            "mfxer {t}",
            "std {t}, {xer}({p})",
            "mfmsr {t}",
            "std {t}, {msr}({p})",
            "bl 1f",
            "1: mflr {t}",
            "std {t}, {nip}({p})",
            p = in(reg_nonzero) p,
            t = out(reg_nonzero) _,
            lr = const core::mem::offset_of!(SavedRegs, lr),
            ctr = const core::mem::offset_of!(SavedRegs, ctr),
            cr = const core::mem::offset_of!(SavedRegs, cr),
            xer = const core::mem::offset_of!(SavedRegs, xer),
            msr = const core::mem::offset_of!(SavedRegs, msr),
            nip = const core::mem::offset_of!(SavedRegs, nip),
            out("lr") _,
            options(nostack),
        );
    }
    s
}

/// Crash shutdown on the calling CPU. Never returns.
pub fn crash_shutdown(reason: &str) -> ! {
    irq::disable();
    irq::quiet_decrementer();
    // The crashing CPU's own crash note (Linux's `crash_save_cpu` in
    // `default_machine_crash_shutdown`), trap 0: saved by a call, not an interrupt.
    crash_notes::save(crate::percpu::this_cpu_index(), &current_regs());
    if scenario::baseline() {
        baseline::crash(reason)
    }
    // SAFETY: HANDOVER_BASE..+HANDOVER_SIZE is RAM reserved for the image (see `bootparams`); nothing
    // else uses it, and only the crashing CPU writes it (no other CPU ever touches the region).
    let region =
        unsafe { core::slice::from_raw_parts_mut(HANDOVER_BASE as *mut u8, HANDOVER_SIZE) };
    let cfg = ShutdownConfig {
        ack_timeout_ns: CHECKIN_TIMEOUT_NS,
        ..ShutdownConfig::new()
    };
    nmilog_ppc64::crash_shutdown(
        &LOG,
        &MACHINE,
        &STATE,
        &rtas::RTAS_LOCK,
        region,
        &cfg,
        format_args!("{reason}"),
    )
}
