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
use crate::{baseline, fadump, irq, rtas, scenario};

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

// The handover region holds any image of the kernel log (nothing is ever left out for lack of room;
// nor from the image the capture stage rebuilds from memory): `klog::ring_words_for` sizes the rings
// at boot so that it does.

/// Crash shutdown on the calling CPU. Never returns.
pub fn crash_shutdown(reason: &str) -> ! {
    irq::disable();
    irq::quiet_decrementer();
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
